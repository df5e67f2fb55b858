//! Cheap subscribers: webrtc-rs's sans-IO `rtc` PeerConnections, all driven by one thread over
//! one UDP socket (no tokio task, channel or socket per PeerConnection). Datagrams are told apart by
//! the sender's address: each SFU session sends from a port of its own, named in its answer's
//! candidates. Everything a browser subscriber does on the wire happens here too — ICE, DTLS,
//! SRTP, receiver reports and NACKs from the default interceptors — but nothing else: packets are
//! counted ([`TrackStats`]), never decoded.
//!
//! Signaling stays async (the SFU's control API over HTTP): a [`SubPeer`] sends the thread commands
//! (make a PeerConnection and its offer, apply the SFU's answer and wait until connected, answer a
//! renegotiation) and awaits the reply.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgemeet_shared::protocol::AnswerBody;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::oneshot;

use crate::edge::FakeEdge;
use crate::peer::{codec, control_call, post_offer, Ctx, TrackStats, Tracks};
use crate::LoadError;

/// Payload type of Opus in the default media engine (everything else a subscriber gets is video).
const PT_OPUS: u8 = 111;
/// How often the thread looks at its sessions' timers, and (with [`Receive::Wake`]) how long a
/// read waits for a datagram before it looks at its timers and commands again.
const TICK: Duration = Duration::from_millis(1);
/// How long the thread sleeps once its socket is empty, unless it waits in the read
/// ([`Receive::Wake`]).
const POLL: Duration = Duration::from_micros(200);

/// How the subscribers' thread waits for datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// Drain the socket without blocking, then sleep [`POLL`] on the thread's own timer. Nobody
    /// waits on the socket, so the SFU's sends never wake this thread: on loopback the sender
    /// pays for waking a sleeping receiver (taking the socket's wait-queue lock with interrupts
    /// off, the scheduler, an inter-processor interrupt — 14 % of the SFU's CPU at 1x100 in
    /// `perf`), which a network card never charges the sender for. The cost: a packet may wait
    /// ~0.25 ms here (more when this core is busy) before it is counted — not in the latency
    /// column, which ends at the kernel's receive stamp. The thread wakes ~4,000 times a second
    /// even when idle, which the tool's own CPU column includes.
    Poll,
    /// Wait in a blocking read (up to [`TICK`]): every datagram may wake the thread, and the
    /// SFU is charged for it (`--wake-receivers`, to compare).
    Wake,
}

/// The subscriber socket's receive buffer (about 0.2 s of the largest point's traffic).
const RECEIVE_BUFFER: libc::c_int = 16 << 20;

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Cmd {
    /// A new PeerConnection offering a microphone it never sends on (a browser that joined muted
    /// without a camera); replies with its index and offer.
    Create {
        id: String,
        ssrc: u32,
        srtp: Vec<SrtpProtectionProfile>,
        reply: Reply<(usize, String, Arc<AtomicBool>)>,
    },
    /// The SFU's answer to our offer; replies once ICE and DTLS are up.
    Answer {
        idx: usize,
        sdp: String,
        reply: Reply<()>,
    },
    /// An offer from the SFU (a track added or removed); replies with our answer.
    Offer {
        idx: usize,
        sdp: String,
        reply: Reply<String>,
    },
    /// Close every PeerConnection and end the thread.
    Stop,
}

/// The thread and its socket.
pub struct Host {
    cmds: mpsc::Sender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One subscriber driven by the [`Host`].
pub struct SubPeer {
    pub id: String,
    pub failed: Arc<AtomicBool>,
}

struct Session {
    pc: RTCPeerConnection,
    /// The earliest time its timers want to run (kept so the thread need not ask every session
    /// on every turn).
    next: Option<Instant>,
    tracks: HashMap<String, Arc<Mutex<TrackStats>>>,
    connected_at: Option<Instant>,
    on_connected: Option<Reply<()>>,
    failed: Arc<AtomicBool>,
}

impl Host {
    /// Binds the socket on 127.0.0.1 and starts the thread. `tracks` receives one entry per track
    /// any subscriber receives.
    pub fn start(tracks: Tracks, receive: Receive) -> Result<Host, LoadError> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .map_err(|e| LoadError::Io("subscriber socket".into(), e))?;
        match receive {
            Receive::Poll => socket.set_nonblocking(true),
            Receive::Wake => socket.set_read_timeout(Some(TICK)),
        }
        .map_err(|e| LoadError::Io("subscriber socket".into(), e))?;
        // Every subscriber's packets land in this one socket: a receive buffer of the default size
        // (~200 KB) overflows under the SFU's bursts and would count as the SFU's loss.
        grow_receive_buffer(&socket, RECEIVE_BUFFER);
        enable_gro(&socket);
        // Each datagram's latency ends when the kernel received it, not when this thread got to
        // it: the thread's sleep between reads and its own work on the datagrams before are the
        // tool's, not the SFU's (they put ~5 ms into the p99 at 1x50).
        if let Err(e) = stamp_arrivals(&socket) {
            eprintln!(
                "the kernel does not stamp arrivals ({e}): the latency column includes this \
                 tool's own wait and work"
            );
        }
        let (cmds, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sans-io-subscribers".into())
            .spawn(move || run(socket, rx, tracks, receive))
            .map_err(|e| LoadError::Io("subscriber thread".into(), e))?;
        Ok(Host {
            cmds,
            thread: Some(thread),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, LoadError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .map_err(|_| LoadError::Peer("the subscriber thread has ended".into()))?;
        rx.await
            .map_err(|_| LoadError::Peer("the subscriber thread has ended".into()))?
            .map_err(LoadError::Peer)
    }

    /// Joins `id` as a subscriber: offer through the SFU's control API, its answer applied, ICE
    /// and DTLS up (within 20 s); the SFU's later offers are answered as the browser does.
    pub async fn join(
        self: &Arc<Self>,
        ctx: &Ctx,
        edge: &FakeEdge,
        id: &str,
        n: u32,
    ) -> Result<SubPeer, LoadError> {
        let ssrc = 0x1000_0000 + n * 16;
        let (idx, offer, failed) = self
            .call(|reply| Cmd::Create {
                id: id.into(),
                ssrc,
                srtp: ctx.srtp.clone(),
                reply,
            })
            .await?;
        let inbox = edge.inbox(id);
        let answer = post_offer(ctx, id, offer).await?;
        let connected = self.call(|reply| Cmd::Answer {
            idx,
            sdp: answer.sdp,
            reply,
        });
        tokio::time::timeout(Duration::from_secs(20), connected)
            .await
            .map_err(|_| LoadError::Peer(format!("{id}: ICE + DTLS did not connect in 20 s")))??;
        self.answer_offers(ctx, id, idx, inbox);
        Ok(SubPeer {
            id: id.into(),
            failed,
        })
    }

    /// Answers every offer the SFU sends `id`, in order.
    fn answer_offers(
        self: &Arc<Self>,
        ctx: &Ctx,
        id: &str,
        idx: usize,
        mut inbox: tokio::sync::mpsc::UnboundedReceiver<(String, u64)>,
    ) {
        let (me, ctx, id) = (self.clone(), ctx.clone(), id.to_string());
        tokio::spawn(async move {
            while let Some((sdp, generation)) = inbox.recv().await {
                let answer = match me.call(|reply| Cmd::Offer { idx, sdp, reply }).await {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("{id}: the SFU's offer was refused: {e}");
                        continue;
                    }
                };
                let body = serde_json::to_string(&AnswerBody {
                    sdp: answer,
                    generation,
                })
                .unwrap_or_default();
                let path = format!("/v1/rooms/{}/participants/{id}/answer", ctx.room);
                match control_call(&ctx, "POST", &path, body).await {
                    Ok((204, _)) => {}
                    Ok((s, t)) => eprintln!("{id}: answer refused: {s} {t}"),
                    Err(e) => eprintln!("{id}: {e}"),
                }
            }
        });
    }

    /// Closes every session and ends the thread.
    pub fn stop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks for a receive buffer of `bytes`: past the system's limit where allowed (root), else up
/// to it.
fn grow_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        if crate::floor::set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, opt, bytes).is_ok() {
            return;
        }
    }
}

/// Lets the kernel hand this socket a sender's segmented datagrams (UDP GSO) whole, as one read
/// ([`recv_gro`] says the segment size): on loopback the receiving end's kernel path runs in
/// the *sender's* context, so without this the SFU would be charged for splitting each of its
/// segmented sends back into datagrams and queueing them one by one here — work a real network
/// never bills the sender for.
fn enable_gro(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let _ = crate::floor::set_int_opt(socket.as_raw_fd(), libc::SOL_UDP, crate::floor::UDP_GRO, 1);
}

/// Asks the kernel to stamp each datagram with the time it was received (`SO_TIMESTAMPNS`, the
/// realtime clock), which [`recv_gro`] reads back.
fn stamp_arrivals(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    crate::floor::set_int_opt(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        1,
    )
}

/// One read: bytes, sender, the segment size (`n` itself for a single datagram) and when the
/// kernel received it ([`stamp_arrivals`]; with GRO, the first segment).
fn recv_gro(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, usize, Option<Duration>)> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero sockaddr_storage, msghdr and control space are valid empty values; the
    // pointers set below point into locals and `buf`, which outlive the call.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` is fully set up above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    let mut seg = n;
    let mut arrived = None;
    // SAFETY: walking the control messages the kernel wrote within `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == crate::floor::UDP_GRO {
                let s = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int).max(0)
                    as usize;
                if s > 0 {
                    seg = s;
                }
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let t = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                arrived = Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let a = unsafe { *(&addr as *const _ as *const libc::sockaddr_in) };
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let a = unsafe { *(&addr as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => return Err(std::io::Error::other("unknown address family")),
    };
    Ok((n, from, seg, arrived))
}

/// The `ip:port` of every candidate in `sdp`.
fn candidate_addrs(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            // foundation component transport priority address port typ …
            let f: Vec<&str> = c.split_whitespace().collect();
            let (ip, port) = (f.get(4)?, f.get(5)?);
            format!("{ip}:{port}").parse().ok()
        })
        .collect()
}

fn new_session(
    id: &str,
    ssrc: u32,
    srtp: Vec<SrtpProtectionProfile>,
    local: SocketAddr,
    now: Instant,
) -> Result<(RTCPeerConnection, String), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let mut me = MediaEngine::default();
    me.register_default_codecs().map_err(e)?;
    let registry = register_default_interceptors(Registry::new(), &mut me).map_err(e)?;
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_srtp_protection_profiles(srtp)
                .with_include_loopback_candidate(true)
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .build(),
        )
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(e)?;
    pc.add_track(MediaStreamTrack::new(
        format!("{id}-stream"),
        format!("{id}-mic"),
        id.into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(RtpCodecKind::Audio),
            ..Default::default()
        }],
    ))
    .map_err(e)?;
    let offer = pc.create_offer(None).map_err(e)?;
    pc.set_local_description(now, offer).map_err(e)?;
    edgemeet_sfu::engine::add_host_candidate(&mut pc, local).map_err(e)?;
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    Ok((pc, sdp))
}

/// The thread: commands, datagrams, timers, in turn.
fn run(socket: UdpSocket, cmds: mpsc::Receiver<Cmd>, tracks: Tracks, receive: Receive) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut sessions: Vec<Session> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut next_sweep = Instant::now();
    loop {
        // Commands.
        loop {
            let cmd = match cmds.try_recv() {
                Ok(c) => c,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            };
            let now = Instant::now();
            match cmd {
                Cmd::Create {
                    id,
                    ssrc,
                    srtp,
                    reply,
                } => {
                    let made = new_session(&id, ssrc, srtp, local, now).map(|(pc, sdp)| {
                        let failed = Arc::new(AtomicBool::new(false));
                        sessions.push(Session {
                            pc,
                            next: Some(now),
                            tracks: HashMap::new(),
                            connected_at: None,
                            on_connected: None,
                            failed: failed.clone(),
                        });
                        (sessions.len() - 1, sdp, failed)
                    });
                    let _ = reply.send(made);
                }
                Cmd::Answer { idx, sdp, reply } => {
                    let Some(s) = sessions.get_mut(idx) else {
                        let _ = reply.send(Err("no such session".into()));
                        continue;
                    };
                    for a in candidate_addrs(&sdp) {
                        by_addr.insert(a, idx);
                    }
                    let applied = RTCSessionDescription::answer(sdp)
                        .and_then(|d| s.pc.set_remote_description(now, d));
                    match applied {
                        Ok(()) => s.on_connected = Some(reply),
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                    s.next = Some(now);
                }
                Cmd::Offer { idx, sdp, reply } => {
                    let Some(s) = sessions.get_mut(idx) else {
                        let _ = reply.send(Err("no such session".into()));
                        continue;
                    };
                    let answered = (|| {
                        s.pc.set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
                        let answer = s.pc.create_answer(None)?;
                        s.pc.set_local_description(now, answer)?;
                        Ok::<_, rtc::shared::error::Error>(
                            s.pc.local_description().map(|d| d.sdp).unwrap_or_default(),
                        )
                    })();
                    let _ = reply.send(answered.map_err(|e| e.to_string()));
                    s.next = Some(now);
                    drain(s, &socket, &tracks, None);
                }
                Cmd::Stop => {
                    for s in &mut sessions {
                        let _ = s.pc.close();
                        drain(s, &socket, &tracks, None);
                    }
                    return;
                }
            }
        }
        // Datagrams (up to a batch, then the timers get a turn). With UDP GRO on, one read may
        // bring several datagrams of one sender, `seg` bytes each (the last may be shorter).
        let mut read = 0;
        for _ in 0..256 {
            match recv_gro(&socket, &mut buf) {
                Ok((n, from, seg, arrived)) => {
                    read += 1;
                    crate::floor::READS.count(n, seg);
                    let Some(s) = by_addr.get(&from).and_then(|i| sessions.get_mut(*i)) else {
                        continue;
                    };
                    for d in buf[..n].chunks(seg.max(1)) {
                        let _ = s.pc.handle_read(TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr: local,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: BytesMut::from(d),
                        });
                        drain(s, &socket, &tracks, arrived);
                    }
                }
                // Nothing (within a tick, when blocking) or an ICMP error: on to the timers.
                Err(_) => break,
            }
        }
        // Timers.
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + TICK;
            for s in &mut sessions {
                if s.next.is_some_and(|t| t <= now) {
                    let _ = s.pc.handle_timeout(now);
                    drain(s, &socket, &tracks, None);
                }
            }
        }
        if receive == Receive::Poll && read == 0 {
            std::thread::sleep(POLL);
        }
    }
}

/// Everything a session has for us after an input: media (counted, as arrived at `arrived` —
/// the datagram just read — or now), events, datagrams to send.
fn drain(s: &mut Session, socket: &UdpSocket, tracks: &Tracks, arrived: Option<Duration>) {
    while let Some(ev) = s.pc.poll_event() {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected => {
                    s.connected_at = Some(Instant::now());
                    if let Some(r) = s.on_connected.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    s.failed.store(true, Ordering::Relaxed);
                    if let Some(r) = s.on_connected.take() {
                        let _ = r.send(Err(format!("connection {state}")));
                    }
                }
                _ => {}
            },
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => {}
            _ => {}
        }
    }
    while let Some(msg) = s.pc.poll_read() {
        if let RTCMessage::RtpPacket(track, p) = msg.message {
            let stats = s.tracks.entry(track).or_insert_with(|| {
                let t = Arc::new(Mutex::new(TrackStats::new(
                    p.header.payload_type != PT_OPUS,
                )));
                tracks.lock().unwrap().push(t.clone());
                t
            });
            let connected_at = s.connected_at.unwrap_or_else(Instant::now);
            let arrived = arrived.unwrap_or_else(crate::peer::realtime);
            stats.lock().unwrap().on_packet(&p, arrived, connected_at);
        }
    }
    while let Some(out) = s.pc.poll_write() {
        let _ = socket.send_to(&out.message, out.transport.peer_addr);
    }
    s.next = s.pc.poll_timeout();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_brings_the_time_the_kernel_received_the_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stamp_arrivals(&rx).unwrap();
        enable_gro(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = crate::peer::realtime();
        tx.send_to(b"stamped", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from, seg, arrived) = recv_gro(&rx, &mut buf).unwrap();
        let after = crate::peer::realtime();
        assert_eq!(
            (&buf[..n], from, seg),
            (&b"stamped"[..], tx.local_addr().unwrap(), 7)
        );
        let at = arrived.expect("the kernel stamped the datagram");
        assert!(
            before <= at && at <= after,
            "{before:?} <= {at:?} <= {after:?}"
        );
    }

    #[test]
    fn candidates_are_read_from_the_answer() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\na=candidate:2 1 udp 2130706431 10.0.0.5 40001 typ host\r\na=mid:0\r\n";
        assert_eq!(
            candidate_addrs(sdp),
            vec![
                "127.0.0.1:40001".parse::<SocketAddr>().unwrap(),
                "10.0.0.5:40001".parse().unwrap()
            ]
        );
        assert!(candidate_addrs("a=candidate:junk\r\n").is_empty());
    }
}
