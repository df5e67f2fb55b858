//! The machine's floor for a forwarded packet: what one UDP datagram of a forwarded video
//! packet's size costs to send on 127.0.0.1 — with `sendmsg` one at a time (one syscall each),
//! and with `sendmmsg` batches (one syscall per batch) — from one socket to many receivers, as an
//! SFU fans out. On loopback the kernel delivers each datagram to its receiver inside the send,
//! so the sender pays for both ends of the kernel's path (as the SFU does in `cargo xtask load`).
//! Receivers are drained by a thread on another core. Bounded: a fixed number of datagrams.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let addrs: Vec<libc::sockaddr_in> = rx
        .iter()
        .map(|s| {
            let a = s.local_addr().expect("bound");
            let std::net::SocketAddr::V4(a) = a else {
                unreachable!("bound to IPv4")
            };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }
        })
        .collect();
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
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if wall.elapsed() > Duration::from_secs(20) {
            break;
        }
        if r <= 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::ENOBUFS)
            {
                stop.store(true, Ordering::Relaxed);
                let _ = drain.join();
                return Err(e);
            }
            // A full socket buffer: let the drain catch up.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        sent += r as usize * gso;
        next = (next + r as usize) % receivers;
    }
    let cpu = thread_cpu() - start;
    stop.store(true, Ordering::Relaxed);
    let got = drain.join().unwrap_or(0);
    Ok((
        cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
        100.0 * got as f64 / sent.max(1) as f64,
    ))
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
