//! Sending many datagrams to one address in few syscalls: `sendmmsg`, and Linux's UDP generic
//! segmentation offload (`UDP_SEGMENT`) for runs of equal-sized datagrams — a video frame's
//! packets to one subscriber are mostly that (a packetizer cuts a frame into equal parts, the last
//! one shorter, or into parts that differ by one byte). [`gso_runs`] (pure) groups the datagrams;
//! [`send_batch`] sends them, one message per run.
//!
//! What this saves on this machine's loopback (`cargo xtask load --floor`): one `sendmsg` per
//! datagram 3.3 µs, `sendmmsg` ×32 2.6, GSO runs of 6 in `sendmmsg` ×8 1.06.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Most datagrams in one call (and in one GSO run: the kernel's `UDP_MAX_SEGMENTS` is 64).
pub const MAX_BATCH: usize = 64;
/// Most bytes in one GSO message (an IP datagram's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;

/// Linux's `UDP_SEGMENT` socket option / control message (since 4.18).
const UDP_SEGMENT: libc::c_int = 103;

/// Off once the kernel refused a segmented send: from then on each datagram is its own message.
static GSO_OK: AtomicBool = AtomicBool::new(true);

/// Groups datagrams of lengths `lens` (in order) into runs a segmented send can carry: equal
/// lengths, and one shorter at the end of a run. Writes `(start, count)` per run into `runs` and
/// returns how many.
pub fn gso_runs(lens: &[usize], runs: &mut [(usize, usize); MAX_BATCH]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < lens.len() && n < MAX_BATCH {
        let seg = lens[i];
        let mut j = i + 1;
        let mut bytes = seg;
        while j < lens.len() && j - i < MAX_BATCH && bytes + lens[j] <= MAX_GSO_BYTES {
            if lens[j] == seg {
                bytes += seg;
                j += 1;
            } else {
                if lens[j] < seg && lens[j] > 0 {
                    j += 1; // a shorter one ends the run
                }
                break;
            }
        }
        runs[n] = (i, j - i);
        n += 1;
        i = j;
    }
    n
}

/// The address as the kernel takes it.
fn sockaddr(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the casts below write within it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { *(&mut storage as *mut _ as *mut libc::sockaddr_in) = sin };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { *(&mut storage as *mut _ as *mut libc::sockaddr_in6) = sin6 };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Space for one `UDP_SEGMENT` control message (a u16), aligned as cmsghdr wants.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 32]);

/// Sends `packets` (at most [`MAX_BATCH`]) to `to` on the UDP socket `fd`: equal-sized runs as
/// one segmented message each (where the kernel can), all messages in one `sendmmsg` (again from
/// where it stopped, if it stops early). Returns how many datagrams the kernel took; the rest were
/// refused (a full socket buffer).
pub fn send_batch(fd: RawFd, to: SocketAddr, packets: &[&[u8]]) -> usize {
    send(fd, to, packets, GSO_OK.load(Ordering::Relaxed))
}

fn send(fd: RawFd, to: SocketAddr, packets: &[&[u8]], gso: bool) -> usize {
    let packets = &packets[..packets.len().min(MAX_BATCH)];
    if packets.is_empty() {
        return 0;
    }
    let (mut addr, addr_len) = sockaddr(to);
    let mut lens = [0usize; MAX_BATCH];
    for (l, p) in lens.iter_mut().zip(packets) {
        *l = p.len();
    }
    let mut runs = [(0usize, 0usize); MAX_BATCH];
    let n_runs = if gso {
        gso_runs(&lens[..packets.len()], &mut runs)
    } else {
        for (i, r) in runs.iter_mut().enumerate().take(packets.len()) {
            *r = (i, 1);
        }
        packets.len()
    };
    // Only the entries this call uses are written (zeroing all 64 of each array was ~7 KB of
    // memset per session per turn); every pointer set below points into locals that outlive
    // the sendmmsg calls.
    let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    for (v, p) in iov.iter_mut().zip(packets) {
        v.write(libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
    }
    let mut cmsgs = [const { MaybeUninit::<Cmsg>::uninit() }; MAX_BATCH];
    let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for k in 0..n_runs {
        let (start, count) = runs[k];
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let m = &mut msgs[k].write(unsafe { std::mem::zeroed() }).msg_hdr;
        m.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        m.msg_namelen = addr_len;
        // SAFETY: `start + count <= packets.len() <= MAX_BATCH`: within `iov`, whose first
        // `packets.len()` entries were written above.
        m.msg_iov = unsafe { iov.as_mut_ptr().add(start).cast::<libc::iovec>() };
        m.msg_iovlen = count as _;
        if count > 1 {
            let cmsg = cmsgs[k].write(Cmsg([0; 32]));
            // SAFETY: the control buffer is 32 bytes, enough for CMSG_SPACE(2), and aligned.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                m.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
                m.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(m);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, lens[start] as u16);
            }
        }
    }
    let mut k = 0;
    let mut delivered = 0;
    while k < n_runs {
        // SAFETY: `msgs[k..n_runs]` were written above and point at live iovecs, addresses and
        // control buffers.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr().add(k).cast::<libc::mmsghdr>(),
                (n_runs - k) as u32,
                0,
            )
        };
        if r > 0 {
            delivered += runs[k..k + r as usize]
                .iter()
                .map(|(_, c)| c)
                .sum::<usize>();
            k += r as usize;
            continue;
        }
        // Message `k` failed (a later one's error is reported when the call is made again from
        // it, so this is always the failing one).
        let e = std::io::Error::last_os_error();
        let (start, count) = runs[k];
        let segmentation = count > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL));
        if !segmentation {
            break; // a full buffer (or worse): the rest waits for a NACK or is lost
        }
        if e.raw_os_error() == Some(libc::EIO) && GSO_OK.swap(false, Ordering::Relaxed) {
            // No segmentation offload on this machine: each datagram on its own from now on.
            tracing::info!(error = %e, "UDP segmentation offload refused: sending datagrams one by one");
        }
        // This run one datagram at a time (EINVAL: too long a segment for this route), then on.
        delivered += send(fd, to, &packets[start..start + count], false);
        k += 1;
    }
    delivered
}

/// A session's port as two sockets on it: `rx`, bound first and alone (a port another session
/// holds is refused, as before), receives every datagram sent to the port; `tx`, bound to the
/// same port after it (`SO_REUSEPORT`, with a classic BPF program on the pair that always picks
/// the group's first socket, `rx`), sends. Only `rx` is registered with the poller: Linux wakes
/// the waiters on a socket's wait queue every time one of its sent skbs is freed (`sock_wfree`,
/// write space), and on a socket the poller watches that was epoll's entry for every skb sent —
/// ~0.2 µs each on this machine's loopback, ~3 % of the SFU's CPU at 1x100 in `perf`. Both are
/// non-blocking. `tx` is `None` where the kernel refuses the pair (then `rx` sends too).
pub fn bind_split(
    addr: SocketAddr,
) -> std::io::Result<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
    let rx = std::net::UdpSocket::bind(addr)?;
    rx.set_nonblocking(true)?;
    match sender_beside(&rx) {
        Ok(tx) => {
            let _ = dont_fragment(&tx);
            Ok((rx, Some(tx)))
        }
        Err(e) => {
            let _ = dont_fragment(&rx);
            // Nothing may join this port later.
            let _ = socket2::SockRef::from(&rx).set_reuse_port(false);
            if SPLIT_OK.swap(false, Ordering::Relaxed) {
                tracing::info!(error = %e, "no separate sending socket per session: each session sends on the socket it receives on");
            }
            Ok((rx, None))
        }
    }
}

/// Makes `socket`'s IPv4 datagrams never fragmentable (`IP_PMTUDISC_PROBE`). Nothing changes on
/// the wire: under the default (`IP_PMTUDISC_WANT`) a datagram that fits the path already
/// carries DF, but stays marked as one the kernel may fragment, so each gets a fresh IP
/// identification from a keyed hash (`__ip_select_ident` with SipHash: ~2.5 % of the engine
/// thread at 1x100 in `perf`, unconnected sockets having no counter of their own); a datagram
/// that may never be fragmented carries ID 0. What is given up: after an ICMP "fragmentation
/// needed" the kernel no longer shrinks and fragments what it sends on that path, so a datagram
/// larger than the path's MTU is dropped there. Everything the SFU sends stays under ~1,250
/// bytes (forwarded RTP is never larger than what came in; rtc's DTLS fragments its flights at
/// 1,200 and SCTP at 1,191), which every IPv4 path carrying WebRTC takes. IPv6 has no such
/// field: nothing to do.
pub fn dont_fragment(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    if !socket.local_addr()?.is_ipv4() {
        return Ok(());
    }
    set_int_opt(
        socket.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// Sets an int-valued socket option.
fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket option with an int argument of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    zero_or_os_error(r)
}

/// A libc call's result: 0 is success, anything else the OS error it left.
fn zero_or_os_error(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Watches `inner` (an epoll instance: the media worker's poller of sockets whose datagrams may
/// wait) from `outer` for one readiness event with `token`, then no more until armed again
/// (`EPOLLONESHOT`; `first`: added, else re-armed). mio has no one-shot interest; it keeps no
/// state of its own per registration on Linux, so a registration made here beside its own is
/// reported by its `poll` like any other. If `inner` is ready already, the event is there at once.
pub fn arm_oneshot(outer: RawFd, inner: RawFd, token: u64, first: bool) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: token,
    };
    let op = if first {
        libc::EPOLL_CTL_ADD
    } else {
        libc::EPOLL_CTL_MOD
    };
    // SAFETY: two open descriptors and a valid event for the call's duration.
    let r = unsafe { libc::epoll_ctl(outer, op, inner, &mut ev) };
    zero_or_os_error(r)
}

/// Said once: the kernel refused a sending socket beside a session's receiving one.
static SPLIT_OK: AtomicBool = AtomicBool::new(true);

fn sender_beside(rx: &std::net::UdpSocket) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, SockRef, Socket, Type};
    let local = rx.local_addr()?;
    SockRef::from(rx).set_reuse_port(true)?;
    let tx = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    tx.set_reuse_port(true)?;
    tx.set_nonblocking(true)?;
    // It reads nothing (but what reaches it before the program below is attached): the smallest
    // receive buffer the kernel allows.
    let _ = tx.set_recv_buffer_size(0);
    tx.bind(&local.into())?;
    // `return 0`: every datagram to the port goes to the group's socket 0, `rx`.
    let code = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `code`, both alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tx.into())
}

/// Asks the kernel to stamp each datagram the socket receives with the time it arrived
/// (`SO_TIMESTAMPNS`, the realtime clock), read back by [`recv_timed`].
pub fn enable_rx_timestamps(fd: RawFd) -> std::io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// The realtime clock now, as [`recv_timed`] stamps datagrams.
pub fn realtime_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Receives one datagram into `buf`: its length, sender and, where the socket has
/// [`enable_rx_timestamps`], when the kernel received it (since the Unix epoch, realtime clock).
pub fn recv_timed(
    fd: RawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<std::time::Duration>)> {
    // SAFETY: zeroed sockaddr_storage and msghdr are valid; every pointer set below outlives
    // the call, and the control buffer is aligned for cmsghdr.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = Cmsg([0; 32]);
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: msg describes valid buffers (above).
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let addr = socket_addr(&from).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "sender is not IPv4 or IPv6",
        )
    })?;
    let mut at = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                at = Some(std::time::Duration::new(
                    ts.tv_sec as u64,
                    ts.tv_nsec as u32,
                ));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, addr, at))
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_poller_wakes_its_watcher_once_until_armed_again() {
        use mio::{Events, Interest, Poll, Token};
        use std::os::fd::AsRawFd;
        use std::time::Duration;
        let outer = Poll::new().unwrap();
        let inner = Poll::new().unwrap();
        let mut socket = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        inner
            .registry()
            .register(&mut socket, Token(7), Interest::READABLE)
            .unwrap();
        let to = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut events = Events::with_capacity(8);
        let wait = Some(Duration::from_millis(200));
        let tokens = |e: &Events| e.iter().map(|e| e.token().0).collect::<Vec<_>>();

        arm_oneshot(outer.as_raw_fd(), inner.as_raw_fd(), 99, true).unwrap();
        // Nothing there: no event.
        let mut outer = outer;
        outer.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        // A datagram on a watched socket: one event with the token.
        sender.send_to(b"a", to).unwrap();
        outer.poll(&mut events, wait).unwrap();
        assert_eq!(tokens(&events), vec![99]);
        // Spent: more datagrams wake nobody, though the inner poller has them.
        sender.send_to(b"b", to).unwrap();
        outer
            .poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(events.is_empty(), "one-shot: {:?}", tokens(&events));
        // Armed again while the inner poller is ready (nothing was read): the event is there
        // at once, none lost in between.
        arm_oneshot(outer.as_raw_fd(), inner.as_raw_fd(), 99, false).unwrap();
        outer.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(tokens(&events), vec![99]);
        // The inner poller reports the socket itself.
        let mut inner = inner;
        inner.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(tokens(&events), vec![7]);
    }

    #[test]
    fn a_datagram_comes_with_when_the_kernel_received_it() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 64];
        // Without the option: no time.
        tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        let (n, from, at) = recv_timed(rx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from, at),
            (&b"one"[..], tx.local_addr().unwrap(), None)
        );
        enable_rx_timestamps(rx.as_raw_fd()).unwrap();
        let before = realtime_now();
        tx.send_to(b"two", rx.local_addr().unwrap()).unwrap();
        let (n, _, at) = recv_timed(rx.as_raw_fd(), &mut buf).unwrap();
        let after = realtime_now();
        assert_eq!(&buf[..n], b"two");
        let at = at.expect("a receive time");
        assert!(
            before <= at && at <= after,
            "{before:?} <= {at:?} <= {after:?}"
        );
    }

    fn runs_of(lens: &[usize]) -> Vec<(usize, usize)> {
        let mut r = [(0, 0); MAX_BATCH];
        let n = gso_runs(lens, &mut r);
        r[..n].to_vec()
    }

    #[test]
    fn equal_lengths_make_one_run_and_a_shorter_one_ends_it() {
        assert_eq!(runs_of(&[1200, 1200, 1200, 700]), vec![(0, 4)]);
        // A balanced packetizer: sizes differing by a byte.
        assert_eq!(
            runs_of(&[1101, 1101, 1100, 1100, 1100]),
            vec![(0, 3), (3, 2)]
        );
        // A longer one starts a new run.
        assert_eq!(runs_of(&[500, 1200, 1200]), vec![(0, 1), (1, 2)]);
        assert_eq!(runs_of(&[100]), vec![(0, 1)]);
        assert!(runs_of(&[]).is_empty());
    }

    #[test]
    fn a_run_stays_within_the_kernels_limits() {
        let lens = vec![1200; 100];
        let r = runs_of(&lens[..MAX_BATCH]);
        assert!(r.iter().all(|(_, c)| c * 1200 <= MAX_GSO_BYTES), "{r:?}");
        assert_eq!(r.iter().map(|(_, c)| c).sum::<usize>(), MAX_BATCH);
    }

    #[test]
    fn a_batch_arrives_as_the_datagrams_it_was_made_of() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let packets: Vec<Vec<u8>> = [1200, 1200, 1200, 800, 1100, 1100, 90]
            .iter()
            .enumerate()
            .map(|(i, n)| vec![i as u8; *n])
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let sent = send_batch(tx.as_raw_fd(), rx.local_addr().unwrap(), &refs);
        assert_eq!(sent, packets.len());
        let mut buf = [0u8; 2048];
        for p in &packets {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], p.as_slice());
        }
    }

    #[test]
    fn a_split_port_receives_on_one_socket_and_sends_from_the_same_port_on_the_other() {
        let (rx, tx) = bind_split("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = tx.expect("this kernel takes a sending socket beside the receiving one");
        let port = rx.local_addr().unwrap();
        assert_eq!(tx.local_addr().unwrap(), port);
        // A port a session holds is still refused to anyone else binding it.
        assert!(std::net::UdpSocket::bind(port).is_err());
        // From many source ports (the reuseport group would spread them by hash): all to `rx`.
        let wait = Some(std::time::Duration::from_secs(5));
        let peers: Vec<_> = (0..40)
            .map(|_| {
                let p = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                p.set_read_timeout(wait).unwrap();
                p
            })
            .collect();
        for (i, p) in peers.iter().enumerate() {
            p.send_to(&[i as u8], port).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(wait).unwrap();
        while got.len() < 40 {
            let (n, from) = rx
                .recv_from(&mut buf)
                .expect("all 40 on the receiving socket");
            assert_eq!(n, 1);
            assert_eq!(from, peers[buf[0] as usize].local_addr().unwrap());
            got.push(buf[0]);
        }
        got.sort_unstable();
        assert_eq!(got, (0..40).collect::<Vec<u8>>());
        assert!(
            tx.recv_from(&mut buf).is_err(),
            "the sending socket got a datagram"
        );
        // It sends with DF and no path-MTU bookkeeping ([`dont_fragment`]).
        let mut mode: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized option read into an int of that size.
        let r = unsafe {
            libc::getsockopt(
                tx.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &mut mode as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!((r, mode), (0, libc::IP_PMTUDISC_PROBE));
        // What `tx` sends comes from the session's port, batched or not.
        let to = peers[0].local_addr().unwrap();
        assert_eq!(send_batch(tx.as_raw_fd(), to, &[b"a", b"bb"]), 2);
        for want in [&b"a"[..], &b"bb"[..]] {
            let (n, from) = peers[0].recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (want, port));
        }
    }
}
