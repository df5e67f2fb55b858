//! The machine's floor for a forwarded packet: what one UDP datagram of a forwarded video
//! packet's size costs to send on 127.0.0.1 — with `sendmsg` one at a time (one syscall each),
//! and with `sendmmsg` batches (one syscall per batch) — from one socket to many receivers, as an
//! SFU fans out. On loopback the kernel delivers each datagram to its receiver inside the send,
//! so the sender pays for both ends of the kernel's path (as the SFU does in `cargo xtask load`).
//! Receivers are drained by a thread on another core. Bounded: a fixed number of datagrams.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the local above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Linux's UDP generic segmentation offload (`UDP_SEGMENT`, since 4.18).
const UDP_SEGMENT: libc::c_int = 103;

/// Linux's `UDP_GRO` socket option and control message (since 5.0).
pub const UDP_GRO: libc::c_int = 104;

/// CPU µs per datagram for `count` datagrams of `size` bytes to `receivers` sockets, sent in
/// batches of `batch` messages (1 = one syscall per message), each message carrying `gso`
/// datagrams to one receiver (more than 1: one buffer the kernel cuts into `size`-byte datagrams,
/// as a frame's packets to one subscriber could go).
fn measure(
    receivers: usize,
    size: usize,
    batch: usize,
    gso: usize,
    count: usize,
    cores: (usize, usize),
) -> std::io::Result<(f64, f64)> {
    // The sender on one core (the SFU's, in `cargo xtask load`), the receivers' drain on another.
    pin(cores.0);
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    if gso > 1 {
        set_int_opt(
            tx.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            size as libc::c_int,
        )?;
    }
    let mut rx = Vec::new();
    for _ in 0..receivers {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        rx.push(s);
    }
    let addrs: Vec<libc::sockaddr_in> =
        rx.iter().map(sockaddr_v4).collect::<std::io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(cores.1);
            let mut buf = [0u8; 2048];
            let mut got = 0u64;
            let mut drained_after_stop = false;
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                for s in &rx {
                    while let Ok(n) = s.recv(&mut buf) {
                        // One datagram as sent (GSO cuts the buffer back into them).
                        if n == size {
                            got += 1;
                        }
                    }
                }
                if stopping {
                    if drained_after_stop {
                        break;
                    }
                    drained_after_stop = true;
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::yield_now();
            }
            got
        })
    };
    let payload = vec![0xabu8; size * gso];
    let fd = tx.as_raw_fd();
    let mut iov: Vec<libc::iovec> = (0..batch)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: size * gso,
        })
        .collect();
    let mut dests = addrs.clone();
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            unsafe { std::mem::zeroed() }
        })
        .collect();
    let start = thread_cpu();
    let wall = Instant::now();
    let mut sent = 0usize;
    let mut next = 0usize;
    while sent < count {
        let n = batch.min(count - sent);
        for (i, m) in msgs.iter_mut().take(n).enumerate() {
            let d = &mut dests[(next + i) % receivers];
            m.msg_hdr.msg_name = d as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at live buffers and addresses for the duration of the call.
        let r = unsafe { send_or_wait(fd, &mut msgs[..n]) };
        if wall.elapsed() > Duration::from_secs(20) {
            break;
        }
        let r = match r {
            Ok(0) => continue,
            Ok(r) => r,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = drain.join();
                return Err(e);
            }
        };
        sent += r * gso;
        next = (next + r) % receivers;
    }
    let cpu = thread_cpu() - start;
    stop.store(true, Ordering::Relaxed);
    let got = drain.join().unwrap_or(0);
    Ok((
        cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
        100.0 * got as f64 / sent.max(1) as f64,
    ))
}

/// The IPv4 address `socket` is bound to, as the kernel takes it.
fn sockaddr_v4(socket: &UdpSocket) -> std::io::Result<libc::sockaddr_in> {
    let std::net::SocketAddr::V4(a) = socket.local_addr()? else {
        return Err(std::io::Error::other("bound to IPv6"));
    };
    Ok(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    })
}

/// One `sendmmsg` of `msgs`: how many went; 0 after a short wait when the socket buffer was
/// full (the drain catches up); an error for anything else.
///
/// # Safety
/// Every header in `msgs` points at live buffers, addresses and control space.
unsafe fn send_or_wait(
    fd: std::os::fd::RawFd,
    msgs: &mut [libc::mmsghdr],
) -> std::io::Result<usize> {
    // SAFETY: the caller's promise.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    if r > 0 {
        return Ok(r as usize);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::ENOBUFS) {
        return Err(e);
    }
    std::thread::sleep(Duration::from_micros(50));
    Ok(0)
}

/// Pins the calling thread to `core` (best effort: the figures say where it ran anyway).
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it; 0 = the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Prints the floor for a forwarded packet's send on this machine: the sender on `core` (the
/// SFU's), the receivers drained on another.
pub fn run(core: usize) -> std::io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other = if cores > 1 { (core + 1) % cores } else { core };
    println!("UDP send floor on 127.0.0.1 (1,200-byte datagrams, one socket → 100 receivers; CPU of the sending thread, which on loopback includes the receiving end's kernel path):");
    for (batch, gso, what) in [
        (1, 1, "one datagram per syscall"),
        (8, 1, "sendmmsg, batches of 8"),
        (32, 1, "sendmmsg, batches of 32"),
        (1, 6, "GSO: 6 datagrams to one receiver per syscall"),
        (8, 6, "GSO 6 × sendmmsg 8"),
    ] {
        let (us, delivered) =
            std::thread::spawn(move || measure(100, 1_200, batch, gso, 240_000, (core, other)))
                .join()
                .map_err(|_| std::io::Error::other("the measuring thread panicked"))??;
        println!("  {what:<46} {us:>5.2} µs per datagram ({delivered:.1} % delivered)");
    }
    Ok(())
}

/// Sets an int socket option.
pub fn set_int_opt(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a plain setsockopt with an int option value of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The subscribers' socket's reads over a point's window: with UDP GRO on, every read is one of
/// the SFU's sends as the kernel carried it (one skb): a lone datagram, or a segmented send of
/// `k` datagrams of one size (UDP GSO). [`mix_floor`] replays the same sends to price them.
pub static READS: ReadMix = ReadMix::new();

/// Longest segmented send counted by its own length (the kernel's limit is 64 segments).
const MAX_RUN: usize = 64;

pub struct ReadMix {
    lone: AtomicU64,
    lone_bytes: AtomicU64,
    runs: [AtomicU64; MAX_RUN + 1],
    /// Bytes of the runs of each length (each replays at its own datagram size).
    run_bytes: [AtomicU64; MAX_RUN + 1],
}

impl ReadMix {
    const fn new() -> ReadMix {
        ReadMix {
            lone: AtomicU64::new(0),
            lone_bytes: AtomicU64::new(0),
            runs: [const { AtomicU64::new(0) }; MAX_RUN + 1],
            run_bytes: [const { AtomicU64::new(0) }; MAX_RUN + 1],
        }
    }

    /// One read of `bytes` in datagrams of `seg` bytes (the last may be shorter).
    pub fn count(&self, bytes: usize, seg: usize) {
        let k = bytes.div_ceil(seg.max(1)).clamp(1, MAX_RUN);
        if k == 1 {
            self.lone.fetch_add(1, Ordering::Relaxed);
            self.lone_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.runs[k].fetch_add(1, Ordering::Relaxed);
            self.run_bytes[k].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Mix {
        let load = |a: &[AtomicU64; MAX_RUN + 1]| {
            let mut v = [0u64; MAX_RUN + 1];
            for (r, a) in v.iter_mut().zip(a) {
                *r = a.load(Ordering::Relaxed);
            }
            v
        };
        let runs = load(&self.runs);
        Mix {
            lone: self.lone.load(Ordering::Relaxed),
            lone_bytes: self.lone_bytes.load(Ordering::Relaxed),
            runs,
            run_bytes: load(&self.run_bytes),
        }
    }
}

/// Counts of [`ReadMix`] (a snapshot, or the difference of two).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub lone: u64,
    pub lone_bytes: u64,
    /// Segmented sends by their number of datagrams.
    pub runs: [u64; MAX_RUN + 1],
    pub run_bytes: [u64; MAX_RUN + 1],
}

impl Mix {
    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &Mix) -> Mix {
        let minus = |a: &[u64; MAX_RUN + 1], b: &[u64; MAX_RUN + 1]| {
            let mut v = [0u64; MAX_RUN + 1];
            for ((r, a), b) in v.iter_mut().zip(a).zip(b) {
                *r = a.saturating_sub(*b);
            }
            v
        };
        let runs = minus(&self.runs, &earlier.runs);
        Mix {
            lone: self.lone.saturating_sub(earlier.lone),
            lone_bytes: self.lone_bytes.saturating_sub(earlier.lone_bytes),
            runs,
            run_bytes: minus(&self.run_bytes, &earlier.run_bytes),
        }
    }

    /// Sends (skbs) and datagrams.
    pub fn sends(&self) -> u64 {
        self.lone + self.runs.iter().sum::<u64>()
    }

    pub fn datagrams(&self) -> u64 {
        self.lone
            + self
                .runs
                .iter()
                .enumerate()
                .map(|(k, n)| k as u64 * n)
                .sum::<u64>()
    }

    /// The sends of this mix, as (datagrams, datagram size) each, in an order
    /// that spreads every kind evenly (as a fan-out interleaves audio and video).
    fn shapes(&self) -> Vec<(usize, usize)> {
        let lone_size = (self.lone_bytes / self.lone.max(1)).max(1) as usize;
        let mut all: Vec<(f64, (usize, usize))> = Vec::new();
        let mut add = |n: u64, shape: (usize, usize)| {
            for i in 0..n {
                all.push(((i as f64 + 0.5) / n as f64, shape));
            }
        };
        add(self.lone, (1, lone_size));
        for (k, &n) in self.runs.iter().enumerate().skip(2) {
            let size = (self.run_bytes[k] / (k as u64 * n).max(1)).max(1) as usize;
            add(n, (k, size));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().map(|(_, s)| s).collect()
    }
}

/// The kernel's CPU for exactly the sends of a point's window (its [`Mix`], all of it: no
/// rounding of rare kinds such as keyframe runs) sent from one socket on `core` to one socket on another core with
/// UDP GRO on (as the load tool's subscribers read), segmented sends as UDP GSO, eight
/// messages a `sendmmsg` — a floor: the SFU sends each session's queue from its own socket.
/// Returns the sending thread's CPU in µs and the share delivered (%).
pub fn mix_floor(mix: &Mix, core: usize) -> std::io::Result<(f64, f64)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other = if cores > 1 { (core + 1) % cores } else { core };
    let shapes = mix.shapes();
    std::thread::spawn(move || replay(&shapes, (core, other)))
        .join()
        .map_err(|_| std::io::Error::other("the replaying thread panicked"))?
}

fn replay(shapes: &[(usize, usize)], cores: (usize, usize)) -> std::io::Result<(f64, f64)> {
    const BATCH: usize = 8;
    pin(cores.0);
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    rx.set_nonblocking(true)?;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        if set_int_opt(rx.as_raw_fd(), libc::SOL_SOCKET, opt, 16 << 20).is_ok() {
            break;
        }
    }
    set_int_opt(rx.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1)?;
    let mut dest = sockaddr_v4(&rx)?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(cores.1);
            let mut buf = vec![0u8; 65_536];
            let mut got = 0usize;
            let mut idle_after_stop = 0;
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        continue;
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        idle_after_stop += 1;
                        if idle_after_stop > 20 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::yield_now(),
                }
            }
            got
        })
    };
    let largest = shapes.iter().map(|s| s.0 * s.1).max().unwrap_or(1);
    let payload = vec![0xabu8; largest];
    let mut iov = [libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: 0,
    }; BATCH];
    let mut cmsgs = [[0u64; 4]; BATCH];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let fd = tx.as_raw_fd();
    let wall = Instant::now();
    let start = thread_cpu();
    let mut i = 0;
    while i < shapes.len() && wall.elapsed() < Duration::from_secs(20) {
        let n = BATCH.min(shapes.len() - i);
        for j in 0..n {
            let (k, size) = shapes[i + j];
            iov[j].iov_len = k * size;
            let m = &mut msgs[j].msg_hdr;
            m.msg_name = &mut dest as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_iov = &mut iov[j];
            m.msg_iovlen = 1;
            if k > 1 {
                let c = cmsgs[j].as_mut_ptr() as *mut u8;
                m.msg_control = c as *mut libc::c_void;
                // SAFETY: 32 aligned bytes hold CMSG_SPACE of a u16.
                unsafe {
                    m.msg_controllen = libc::CMSG_SPACE(2) as _;
                    let h = libc::CMSG_FIRSTHDR(m);
                    (*h).cmsg_level = libc::SOL_UDP;
                    (*h).cmsg_type = UDP_SEGMENT;
                    (*h).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(h) as *mut u16, size as u16);
                }
            } else {
                m.msg_control = std::ptr::null_mut();
                m.msg_controllen = 0;
            }
        }
        // SAFETY: `msgs[..n]` point at live buffers, control space and the address.
        match unsafe { send_or_wait(fd, &mut msgs[..n]) } {
            Ok(r) => i += r,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = drain.join();
                return Err(e);
            }
        }
    }
    let cpu = thread_cpu() - start;
    stop.store(true, Ordering::Relaxed);
    let got = drain.join().unwrap_or(0);
    Ok((
        cpu.as_secs_f64() * 1e6,
        100.0 * got as f64 / shapes.len().max(1) as f64,
    ))
}

/// A thread pinned to a core at `SCHED_IDLE` that spins until dropped: the core never halts,
/// and any other thread woken there preempts it at once (`--busy-core`). Its CPU is its own
/// (this tool's), not the SFU's.
pub struct BusyCore {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

impl BusyCore {
    pub fn start(core: usize) -> BusyCore {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("busy-core".into())
                .spawn(move || {
                    pin(core);
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: 0 = the calling thread; a valid policy and parameter.
                    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                        eprintln!(
                            "  --busy-core: SCHED_IDLE refused ({}): not spinning",
                            std::io::Error::last_os_error()
                        );
                        return Duration::ZERO;
                    }
                    // No `spin_loop` (PAUSE): a hypervisor takes a vCPU that keeps pausing as
                    // one waiting on a lock and deschedules it (pause-loop exiting), which is
                    // just what this is here to prevent.
                    let start = thread_cpu();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                    thread_cpu() - start
                })
                .ok()
        };
        BusyCore { stop, thread }
    }
}

impl BusyCore {
    /// Stops spinning; returns the CPU the spinning took (this tool's, to leave out of its own).
    pub fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_counts_sends_and_replays_them_evenly_spread() {
        let reads = ReadMix::new();
        // Two lone audio packets, one 5-packet frame (last shorter), one 2-packet frame.
        reads.count(120, 120);
        reads.count(100, 100);
        reads.count(4 * 1_200 + 700, 1_200);
        reads.count(2 * 1_000, 1_000);
        let start = Mix {
            lone: 0,
            lone_bytes: 0,
            runs: [0; MAX_RUN + 1],
            run_bytes: [0; MAX_RUN + 1],
        };
        let mix = reads.snapshot().since(&start);
        assert_eq!((mix.lone, mix.lone_bytes), (2, 220));
        assert_eq!((mix.runs[5], mix.runs[2]), (1, 1));
        assert_eq!((mix.sends(), mix.datagrams()), (4, 9));
        let shapes = mix.shapes();
        assert_eq!(shapes.len(), 4);
        // Averages: lone 110 bytes; each run length at its own size (5,500 / 5, 2,000 / 2).
        assert_eq!(shapes.iter().filter(|s| **s == (1, 110)).count(), 2);
        assert_eq!(shapes.iter().filter(|s| **s == (5, 1_100)).count(), 1);
        assert_eq!(shapes.iter().filter(|s| **s == (2, 1_000)).count(), 1);
        // Spread, not grouped: the lone sends are not all first.
        assert_ne!(&shapes[..2], &[(1, 110); 2]);
    }
}
