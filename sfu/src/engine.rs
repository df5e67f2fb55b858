//! The sans-IO media engine (steps 2–4 of the engine in ARCHITECTURE.md): every PeerConnection is
//! a webrtc-rs `rtc::RTCPeerConnection` driven by a worker thread, which also owns an
//! [`SfuCore`] for its rooms and every published track's fan-out. No tokio task, channel hop,
//! lock or async driver per packet: a publisher's datagram is read, unprotected by its session,
//! and queued for each subscriber's session in the same turn of the loop.
//!
//! - **Workers:** one per core (at most 8); a room lives on the worker its name hashes to
//!   ([`worker_of`]), so its fan-out never crosses a thread. The SFU's capacity and room counts
//!   are summed over the workers ([`Shared`]).
//!
//! - **Sockets:** one UDP socket per session (a port from the configured range, as the async
//!   engine), all registered with the worker's `mio::Poll`; one socket per thread comes
//!   next (step 2b: datagrams told apart by STUN USERNAME, then by address).
//! - **Control:** the HTTP handlers call [`Engine`]'s async methods, which send the thread a
//!   command and await its reply; the thread wakes on a `mio::Waker`. What goes to the edge
//!   (offers, events) leaves the thread through a channel to one tokio task ([`EdgeLink`]); how
//!   an offer went comes back as a command.
//! - **Per packet:** [`SubForward`] decides per subscriber (layer, rewrite, keyframe wait); the
//!   engine builds the packet (header — with the capture-time extension when it has one — + the shared payload) straight into the
//!   subscriber session's send queue (one buffer that keeps its capacity), protects it there
//!   with the session's own outbound SRTP keys ([`SrtpOut`], from rtc's `local_srtp_keys`,
//!   vendor/rtc patch 4; the rollover counter beside the stream) and sends it to the session's
//!   selected ICE address — rtc's sender pipeline is not on the path. Each session's queue
//!   goes out at the end of the turn's reads in one `sendmmsg`, equal-sized runs as one UDP GSO
//!   message each (`udp_batch`). What rtc's interceptors did for those packets the engine does
//!   itself: a ring of the last [`SENT_RING`] packets per video reception answers NACKs, and
//!   each session's one-second tick sends a sender report per stream, all of them in one
//!   compound RTCP packet (so rtc's sender-report interceptor and NACK responder are left out
//!   of the registry).
//!
//! The default engine (`--engine sans`, `EDGEMEET_SFU_ENGINE`); `--engine async` runs the one
//! before it (`media.rs`, webrtc-rs's async PeerConnections), kept while this one proves itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgemeet_shared::protocol::{SfuEvent, TileView};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::CandidateConfig;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use crate::codec::{starts_keyframe, vp8_ids, vp8_set_ids, VideoCodec, Vp8Ids};
use crate::downlink::nacked_seqs;
use crate::edge_link::EdgeLink;
use crate::fanout::{KeyframePacer, PacketIn, SubForward};
use crate::forward::Negotiated;
use crate::layers::LAYERS;
use crate::media::{
    media_engine, offered_pt, rand_ssrc, MediaConfig, MediaError, ICE_DISCONNECTED_AFTER,
    ICE_FAILED_AFTER,
};
use crate::metrics::{LocalCounts, LocalHistogram, Metrics};
use crate::offer::{OfferLayout, TrackKind};
use crate::quality::SeqCount;
use crate::record::track::{RecCodec, RecPacket};
use crate::record::{RecMsg, RecorderHandle};
use crate::rtcp_up::RtcpToApplication;
use crate::rtp_out::{write_header, CaptureExt};
use crate::sfu_core::{block_bit, Input, Output, SfuCore, SubId, TrackId};
use crate::srtp_out::{fill_tags_across, Edit, PendingTag, Roc, SrtpOut};
use crate::udp_batch;

const WAKER: Token = Token(usize::MAX);
/// The worker's `waiting` poller, watched by its main one while armed ([`Worker::waiting_armed`]).
const WAITING: Token = Token(usize::MAX - 1);
/// The largest datagram read (longer ones would be cut and fail SRTP/DTLS).
const MTU: usize = 2048;
/// Datagrams read from one socket per turn of the loop: a flooded port must not keep the thread
/// from everyone else (the rest is read next turn).
const READ_BUDGET: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, MediaError>>;

/// A connection check's session lives this long at most (`netcheck::PROBE_LIFETIME_SECS`).
const PROBE_LIFETIME: Duration =
    Duration::from_secs(edgemeet_shared::netcheck::PROBE_LIFETIME_SECS);
/// Connection checks' sessions one worker holds at once (three per check).
const PROBES_PER_WORKER: usize = 60;
/// What a check's session may send us: 3 s of video at the check's 4 Mbit/s cap is 1.5 MB, and
/// the browser's bandwidth probes add some.
const PROBE_MAX_BYTES: u64 = 4_000_000;

/// How long a stopping SFU waits for its recordings to reach the edge.
const UPLOAD_AT_STOP: Duration = Duration::from_secs(20);

enum Cmd {
    Offer {
        room: String,
        peer: String,
        sdp: String,
        blocked: u8,
        scope: u32,
        reply: Reply<String>,
    },
    Answer {
        room: String,
        peer: String,
        sdp: String,
        generation: u64,
        reply: Reply<()>,
    },
    Views {
        room: String,
        peer: String,
        views: Vec<TileView>,
        reply: Reply<()>,
    },
    Block {
        room: String,
        peer: String,
        bits: u8,
        reply: Reply<()>,
    },
    Scopes {
        room: String,
        version: u64,
        scopes: Vec<(String, u32)>,
        reply: Reply<()>,
    },
    Record {
        room: String,
        version: u64,
        recording: Option<String>,
        reply: Reply<()>,
    },
    /// The recorder needs a keyframe of this recorded track.
    RecordKeyframe {
        track: TrackId,
    },
    Leave {
        room: String,
        peer: String,
        why: String,
        reply: oneshot::Sender<()>,
    },
    Describe {
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// A pre-join connection check: a throwaway session (`netcheck`).
    Probe {
        sdp: String,
        reply: Reply<String>,
    },
    /// How an offer's delivery went (from the edge task).
    Core(Input),
    Stop,
}

/// What leaves the thread for the edge.
enum Outward {
    Offer {
        room: String,
        peer: String,
        session: u64,
        generation: u64,
        sdp: String,
    },
    Event(SfuEvent),
    RoomGone(String),
}

/// Read by the HTTP side without asking the threads (heartbeat, drain), and by each worker for
/// the SFU's capacity.
struct Shared {
    /// Participants per room, per worker.
    rooms: Vec<Mutex<HashMap<String, usize>>>,
    /// Participants admitted on every worker: a place is taken here before a session is made,
    /// so two workers cannot both take the last one.
    admitted: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn worker(&self, k: usize) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.rooms[k]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for a new participant, if the SFU has one left.
    fn admit(&self, capacity: usize) -> bool {
        self.admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    fn participants(&self) -> usize {
        (0..self.rooms.len())
            .map(|k| self.worker(k).values().sum::<usize>())
            .sum()
    }
}

/// One worker thread, as the HTTP side reaches it.
struct WorkerHandle {
    cmds: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The handle the HTTP side holds: the worker threads (a room lives on one of them, chosen by
/// its name, so its fan-out never crosses a thread).
pub struct Engine {
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    /// Recording segments on their way to the edge.
    uploads: crate::record::upload::Uploads,
    /// Spreads connection checks over the workers.
    next_probe: std::sync::atomic::AtomicUsize,
}

/// How many worker threads: one per core, at most 8.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8))
}

/// The worker `room` lives on, of `n` (FNV-1a of its name: stable across runs).
pub fn worker_of(room: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

impl Engine {
    /// Starts one worker thread per core and the edge task (needs a tokio runtime).
    pub fn new(cfg: MediaConfig, metrics: Arc<Metrics>) -> std::io::Result<Arc<Engine>> {
        Engine::with_workers(cfg, metrics, worker_count())
    }

    /// Starts `n` worker threads and the edge task.
    pub fn with_workers(
        cfg: MediaConfig,
        metrics: Arc<Metrics>,
        n: usize,
    ) -> std::io::Result<Arc<Engine>> {
        let n = n.max(1);
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            rooms: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            admitted: std::sync::atomic::AtomicUsize::new(0),
        });
        let draining = Arc::new(AtomicBool::new(false));
        let edge = EdgeLink::new(
            cfg.edge_url.clone(),
            cfg.control_secret.clone(),
            cfg.id.clone(),
        );
        // Finished recording segments go to the edge from here (and what an earlier run left).
        let uploads = crate::record::upload::spawn(
            cfg.edge_url.clone(),
            cfg.control_secret.clone(),
            cfg.record_dir.clone(),
            crate::record::upload::UploadCounters {
                bytes: metrics.record_uploaded_bytes.clone(),
                ms: metrics.record_upload_ms.clone(),
            },
        );
        let mut workers = Vec::with_capacity(n);
        for k in 0..n {
            let poll = Poll::new()?;
            let waiting = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (cmds, rx) = mpsc::channel();
            let mut worker = Worker::new(
                k,
                n,
                poll,
                waiting,
                cfg.clone(),
                metrics.clone(),
                out_tx.clone(),
                shared.clone(),
                draining.clone(),
            );
            worker.to_self = Some((cmds.clone(), waker.clone()));
            worker.uploads = Some(uploads.clone());
            let thread = std::thread::Builder::new()
                .name(format!("sfu-engine-{k}"))
                .spawn(move || worker.run(rx))?;
            workers.push(WorkerHandle {
                cmds,
                waker,
                thread: Mutex::new(Some(thread)),
            });
        }
        let engine = Arc::new(Engine {
            workers,
            shared,
            draining,
            uploads,
            next_probe: std::sync::atomic::AtomicUsize::new(0),
        });
        tokio::spawn(edge_task(Arc::downgrade(&engine), edge, out_rx));
        Ok(engine)
    }

    fn to_room(&self, room: &str, cmd: Cmd) -> bool {
        self.to_worker(worker_of(room, self.workers.len()), cmd)
    }

    fn to_worker(&self, k: usize, cmd: Cmd) -> bool {
        let w = &self.workers[k];
        w.cmds.send(cmd).is_ok() && w.waker.wake().is_ok()
    }

    async fn call<T>(
        &self,
        room: &str,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        if !self.to_room(room, make(tx)) {
            return Err(MediaError::Webrtc("the media engine has stopped".into()));
        }
        rx.await
            .map_err(|_| MediaError::Webrtc("the media engine has stopped".into()))?
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub async fn offer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        blocked: u8,
        scope: u32,
    ) -> Result<String, MediaError> {
        self.call(room, |reply| Cmd::Offer {
            room: room.into(),
            peer: id.into(),
            sdp,
            blocked,
            scope,
            reply,
        })
        .await
    }

    /// A connection check's throwaway session for `sdp` (no room, nothing forwarded, closed
    /// after [`PROBE_LIFETIME`]): our answer.
    pub async fn probe(&self, sdp: String) -> Result<String, MediaError> {
        let k = self.next_probe.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (tx, rx) = oneshot::channel();
        if !self.to_worker(k, Cmd::Probe { sdp, reply: tx }) {
            return Err(MediaError::Webrtc("the media engine has stopped".into()));
        }
        rx.await
            .map_err(|_| MediaError::Webrtc("the media engine has stopped".into()))?
    }

    pub async fn answer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        generation: u64,
    ) -> Result<(), MediaError> {
        self.call(room, |reply| Cmd::Answer {
            room: room.into(),
            peer: id.into(),
            sdp,
            generation,
            reply,
        })
        .await
    }

    pub async fn set_views(
        &self,
        room: &str,
        id: &str,
        views: Vec<TileView>,
    ) -> Result<(), MediaError> {
        self.call(room, |reply| Cmd::Views {
            room: room.into(),
            peer: id.into(),
            views,
            reply,
        })
        .await
    }

    pub async fn set_scopes(
        &self,
        room: &str,
        version: u64,
        scopes: Vec<(String, u32)>,
    ) -> Result<(), MediaError> {
        self.call(room, |reply| Cmd::Scopes {
            room: room.into(),
            version,
            scopes,
            reply,
        })
        .await
    }

    pub async fn record(
        &self,
        room: &str,
        version: u64,
        recording: Option<String>,
    ) -> Result<(), MediaError> {
        self.call(room, |reply| Cmd::Record {
            room: room.into(),
            version,
            recording,
            reply,
        })
        .await
    }

    pub async fn block(&self, room: &str, id: &str, bits: u8) -> Result<(), MediaError> {
        self.call(room, |reply| Cmd::Block {
            room: room.into(),
            peer: id.into(),
            bits,
            reply,
        })
        .await
    }

    pub async fn remove_peer(&self, room: &str, id: &str, why: &str) {
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Leave {
            room: room.into(),
            peer: id.into(),
            why: why.into(),
            reply: tx,
        };
        if self.to_room(room, cmd) {
            let _ = rx.await;
        }
    }

    /// Every worker's rooms, as one object (room → members).
    pub async fn describe(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for k in 0..self.workers.len() {
            let (tx, rx) = oneshot::channel();
            if !self.to_worker(k, Cmd::Describe { reply: tx }) {
                continue;
            }
            if let Ok(serde_json::Value::Object(rooms)) = rx.await {
                out.extend(rooms);
            }
        }
        serde_json::Value::Object(out)
    }

    pub fn room_participants(&self, room: &str) -> usize {
        let k = worker_of(room, self.workers.len());
        self.shared.worker(k).get(room).copied().unwrap_or(0)
    }

    pub fn room_names(&self) -> Vec<String> {
        (0..self.workers.len())
            .flat_map(|k| self.shared.worker(k).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn participant_count(&self) -> usize {
        self.shared.participants()
    }

    /// For the panic test only (see `control::test_panic`): panics holding the room counts' lock.
    pub fn panic_holding_rooms_lock(&self) {
        let _rooms = self.shared.rooms[0].lock();
        panic!("test panic while holding the room counts");
    }

    /// Closes every session and ends the threads.
    pub async fn close_all(&self) {
        for k in 0..self.workers.len() {
            self.to_worker(k, Cmd::Stop);
        }
        for w in &self.workers {
            let t = w
                .thread
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(t) = t {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        // The workers finished every recording's files: they go to the edge before the SFU
        // exits (what does not make it is sent by its next start).
        if !self.uploads.flushed(UPLOAD_AT_STOP).await {
            tracing::warn!("recordings still uploading at stop: sent when this SFU starts again");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.cmds.send(Cmd::Stop);
            let _ = w.waker.wake();
        }
    }
}

/// Sends the thread's offers and events to the edge; how an offer went goes back to the thread.
async fn edge_task(
    engine: std::sync::Weak<Engine>,
    edge: Arc<EdgeLink>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Outward>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outward::Event(e) => edge.push_event(e),
            Outward::RoomGone(room) => edge.forget_room(&room),
            Outward::Offer {
                room,
                peer,
                session,
                generation,
                sdp,
            } => {
                let (edge, engine) = (edge.clone(), engine.clone());
                tokio::spawn(async move {
                    let target = room.clone();
                    let input = match edge.send_offer(&room, &peer, sdp, generation).await {
                        Ok(()) => Input::OfferDelivered {
                            room,
                            peer,
                            session,
                            generation,
                        },
                        Err(failure) => {
                            let again = failure.worth_retrying();
                            tracing::warn!(room, participant = peer, error = %failure, again, "could not deliver offer through the edge");
                            Input::OfferNotDelivered {
                                room,
                                peer,
                                session,
                                generation,
                                worth_retrying: again,
                            }
                        }
                    };
                    if let Some(engine) = engine.upgrade() {
                        engine.to_room(&target, Cmd::Core(input));
                    }
                });
            }
        }
    }
}

/// One participant's session.
struct Session {
    /// The core's session number.
    id: u64,
    room: String,
    peer: String,
    pc: RTCPeerConnection,
    socket: Sockets,
    local: SocketAddr,
    /// When its timers want to run.
    next: Option<Instant>,
    connected: bool,
    /// Where its media goes: the remote address of ICE's selected pair (looked up when it
    /// connects and with every [`TICK`]).
    remote: Option<SocketAddr>,
    /// Its next tick: sender reports, the selected pair looked up again.
    tick_at: Instant,
    layout: OfferLayout,
    /// The absolute-capture-time extension ids (audio, video) its answers accepted: what the
    /// packets sent to it carry.
    capture_out: [Option<u8>; 2],
    /// What a host stopped of its media.
    blocked: u8,
    /// Forwarded to it so far (for the downlink estimate).
    sent_bytes: u64,
    sent_packets: u64,
    /// Our newest offer to it (generation, SDP), kept for a resend.
    offer: Option<(u64, String)>,
    /// Media protected this turn, waiting for one batched send ([`flush_queue`]).
    queue: OutQueue,
    /// Its outbound SRTP keys, derived when the first packet goes to it after DTLS.
    srtp: Option<SrtpOut>,
    /// A connection check's session (no room, no member, nothing forwarded).
    probe: Option<Probe>,
    /// Its keys were refused (said once in the log).
    srtp_refused: bool,
    /// Queued media the socket refused, not yet counted in the metrics.
    refused: u64,
    /// Its remote tracks (by rtc's track id) → what they were published as.
    published: HashMap<String, TrackId>,
    /// Our local tracks on it (by track id) → the reception each carries.
    sending: HashMap<String, SubId>,
    /// Its socket is on the worker's `waiting` poller ([`may_wait`]), not on `poll`.
    waits: bool,
    /// Read at once (never from the `waiting` poller) until then: [`AWAKE_FOR`] after it
    /// connected (a publisher's first packets) and after each repair it asked for (a NACK, a
    /// picture loss, a full intra request).
    awake_until: Option<Instant>,
    /// Its socket could not be moved between the pollers once (said in the log).
    unmoved: bool,
}

/// A session's port ([`udp_batch::bind_split`]): `rx`, on the worker's poller, receives; `tx`,
/// on no poller, sends (so freeing each sent skb wakes no poller); without `tx`, `rx` sends.
struct Sockets {
    // Declared (so dropped) first: while `rx` lives, nothing reaches `tx`.
    tx: Option<std::net::UdpSocket>,
    rx: UdpSocket,
}

impl Sockets {
    fn send_fd(&self) -> std::os::fd::RawFd {
        self.tx
            .as_ref()
            .map_or_else(|| self.rx.as_raw_fd(), |t| t.as_raw_fd())
    }

    fn send_to(&self, data: &[u8], to: SocketAddr) {
        let _ = match &self.tx {
            Some(t) => t.send_to(data, to),
            None => self.rx.send_to(data, to),
        };
    }
}

/// A connection check's session's limits.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// It ends then, whatever happens.
    until: Instant,
    /// Not connected by then: it ends (a check gives a path 6 s).
    connect_by: Instant,
    /// Bytes it sent us (ended over [`PROBE_MAX_BYTES`]).
    bytes: u64,
}

impl Probe {
    fn due(&self, connected: bool) -> Instant {
        if connected {
            self.until
        } else {
            self.until.min(self.connect_by)
        }
    }
}

/// A published track and its fan-out.
struct Published {
    kind: TrackKind,
    room: String,
    publisher: String,
    slot: usize,
    simulcast: bool,
    codec: RTCRtpCodec,
    video: Option<VideoCodec>,
    media_ssrc: u32,
    receiver: RTCRtpReceiverId,
    layer_ssrcs: [Option<u32>; LAYERS],
    /// SSRC → layer (None: not a layer we forward), learned from each layer's rid.
    layer_of: HashMap<u32, Option<usize>>,
    audio_level_id: Option<u8>,
    /// The publisher's absolute-capture-time extension id for this track's kind.
    capture_id: Option<u8>,
    block_bit: u8,
    subs: Vec<SubId>,
    keyframe_wanted: bool,
    pacer: KeyframePacer,
    /// Recorded: its packets also go to the recorder thread (boxed: most tracks never are).
    rec: Option<Box<RecTap>>,
    /// Video: its last packets' payloads, which its subscribers' [`SentRing`]s name (NACKs).
    payloads: Option<PayloadRing>,
    /// Packets expected and received per layer (the publisher's uplink loss, for the SFU's
    /// judgement of its connection: [`crate::quality`]).
    rx: [SeqCount; LAYERS],
    /// Per layer: keyframes received (their first packets) and the last one's time (µs of the
    /// worker's clock), keyframe requests sent to the publisher (for the room description).
    keyframes_in: [u32; LAYERS],
    last_keyframe_us: [Option<u64>; LAYERS],
    keyframes_asked: [u32; LAYERS],
    /// Per layer, when its last packet with media arrived (µs of the worker's clock; padding
    /// and packets a host holds back do not count).
    last_in_us: [Option<u64>; LAYERS],
}

/// A recorded track's own reception, as a subscriber's: the top layer it gets (switching down
/// and back as the publisher's layers come and go), numbered as one continuous stream.
struct RecTap {
    fwd: SubForward,
    keyframe_wanted: bool,
    /// Packets were held back (a host stopped the track): the recorder learns of the gap
    /// before the next one it gets (what follows refers to frames it never saw).
    gap: bool,
    /// The SSRC it last took a packet of and what its forwarder adds to that SSRC's RTP
    /// timestamps: a sender report of that SSRC is passed on in the recorder's time line.
    report_map: Option<(u32, u32)>,
    /// Counts the changes of `report_map` (the recorder maps RTP time per source).
    source: u32,
    /// When it last passed a sender report on (µs, the worker's clock): at most one per
    /// [`REPORT_EVERY_US`].
    last_report_us: Option<u64>,
}

/// A recorded track's sender reports go to the recorder at most this often (browsers send one
/// a second or less; a flood is not passed on).
const REPORT_EVERY_US: u64 = 250_000;

/// One reception: a published track sent to one subscriber's session.
struct Sub {
    slot: usize,
    session: u64,
    track: TrackId,
    sender: RTCRtpSenderId,
    transceiver: RTCRtpTransceiverId,
    /// The subscriber asked for a keyframe of what it receives (a stale NACK).
    keyframe_wanted: bool,
    fwd: SubForward,
    /// What was sent to it lately (video: NACKs are answered from here).
    sent: Option<SentRing>,
    /// For its sender reports.
    report: SendReport,
    /// Its SRTP rollover counter.
    roc: Roc,
    /// What happened to it, for the control API's room description.
    stats: SubStats,
}

/// One reception's running counts (read only by [`Worker::describe`]): what a failing
/// end-to-end test prints when a page gets no video.
#[derive(Debug, Default)]
struct SubStats {
    /// Packets sent to the subscriber, and when the last one went (µs of the worker's clock).
    forwarded: u64,
    last_forwarded_us: Option<u64>,
    /// New starts: a layer switch, or the first keyframe after the tile was shown.
    switches: u32,
    /// Picture loss indications and full intra requests from the subscriber.
    plis: u32,
    /// Packets after which a keyframe of the publisher was wished on its behalf (its own
    /// forwarding's, or a request for the whole track merged in: another subscriber's PLI).
    keyframe_wishes: u32,
    /// Packets it could not place (stale, unnegotiated payload type) or the socket refused.
    dropped: u32,
    /// When it last (re)started (µs of the worker's clock): negotiated, its subscriber
    /// (re)connected, or its tile shown again — each a wait for a keyframe just asked for.
    since_us: Option<u64>,
    /// A stall ([`crate::fanout::stalled`]) was said in the log (once, until it flows again).
    stall_logged: bool,
}

/// How many packets a video reception keeps for retransmission (~3.2 s of a 720p layer; the
/// payloads themselves are its track's [`PayloadRing`]'s, which may hold them for less).
const SENT_RING: usize = 512;

/// The payloads of a video track's last packets, each under a number that only grows, so that
/// its subscribers' rings name a payload by number rather than each holding a reference to it:
/// a reference-counted clone per copy and a drop of a cold one as each ring slot was reused
/// were ~2.5 % of the SFU's CPU at 1x100 (`cargo xtask load`).
struct PayloadRing {
    slots: Vec<Option<(u64, bytes::Bytes)>>,
    next: u64,
}

impl PayloadRing {
    fn new(len: usize) -> PayloadRing {
        PayloadRing {
            slots: vec![None; len],
            next: 0,
        }
    }

    /// Keeps `payload` (shared, not copied) in place of the oldest; its number.
    fn put(&mut self, payload: &bytes::Bytes) -> u64 {
        let id = self.next;
        self.next += 1;
        let n = self.slots.len() as u64;
        self.slots[(id % n) as usize] = Some((id, payload.clone()));
        id
    }

    /// Payload number `id`, unless a later one took its place.
    fn get(&self, id: u64) -> Option<&bytes::Bytes> {
        let n = self.slots.len() as u64;
        self.slots[(id % n) as usize]
            .as_ref()
            .filter(|(i, _)| *i == id)
            .map(|(_, b)| b)
    }
}

/// A [`SentPacket`]'s `source` when its track keeps no payloads (audio); never a ring's number.
const NO_PAYLOAD: u64 = u64::MAX;

/// One packet sent to a subscriber, as it was sent (before SRTP); its payload is number
/// `source` in its track's [`PayloadRing`].
#[derive(Clone)]
struct SentPacket {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    source: u64,
    /// VP8 picture numbers written over the payload's as it is copied into the send queue (a
    /// subscriber that switched layers), so the shared payload is never copied for it.
    vp8: Option<Vp8Ids>,
    /// The absolute-capture-time extension as the publisher sent it, and the subscriber's id
    /// for it: written into the header (the only extension forwarded).
    capture: Option<(u8, CaptureExt)>,
}

/// The last [`SENT_RING`] packets sent to one subscriber stream, by sequence number.
struct SentRing {
    slots: Vec<Option<SentPacket>>,
}

impl SentRing {
    fn new() -> SentRing {
        SentRing {
            slots: vec![None; SENT_RING],
        }
    }

    fn put(&mut self, p: SentPacket) {
        let i = p.seq as usize % SENT_RING;
        self.slots[i] = Some(p);
    }

    fn get(&self, seq: u16) -> Option<&SentPacket> {
        self.slots[seq as usize % SENT_RING]
            .as_ref()
            .filter(|p| p.seq == seq)
    }
}

/// What a sender report says about one subscriber stream.
#[derive(Default)]
struct SendReport {
    packets: u32,
    octets: u32,
    /// The last packet's timestamp and when it was sent.
    last: Option<(u32, Instant)>,
}

/// Sender reports (28 bytes each, no report blocks) in one compound RTCP packet at most: 896
/// bytes, so a session receiving 50 cameras and microphones still gets whole datagrams.
const REPORTS_PER_PACKET: usize = 32;

/// Sessions tick this often: a sender report per stream sent to it, the selected pair checked.
const TICK: Duration = Duration::from_secs(1);

/// How late a connected session's own timers may run (its ICE agent's 200 ms tick, the 1 s
/// sender reports, the NACK generator's and TWCC feedback's 100 ms): at most this much, so that
/// they run in a turn that happens anyway — media arrives every 20 ms while a microphone is on —
/// instead of each waking the thread. A wake-up costs more than most of these timers' own work
/// (on this project's test VM a thread woken from `epoll_wait` pays ~20 µs: `perf bench sched
/// pipe`), and at 1x100 a quarter of the turns were timers alone.
const TIMER_SLACK: Duration = Duration::from_millis(20);

/// When to wake for timers due at `deadlines`, each with how late it may run: the earliest
/// time by which one of them would be later than it may be. Timers due before then run in
/// whatever turn comes first (every turn runs every due timer), and those whose slack has run
/// out wake the thread together.
fn wake_at(deadlines: impl Iterator<Item = (Instant, Duration)>) -> Option<Instant> {
    deadlines.map(|(t, slack)| t + slack).min()
}

/// How long a waiting session's datagrams ([`may_wait`]) wait at most for a turn, while the
/// waiting sockets are busy ([`waiting_is_busy`]).
const WAIT_AT_MOST: Duration = Duration::from_millis(20);

/// How long a session stays read at once after it connected or asked for a repair
/// ([`Session::awake_until`]).
const AWAKE_FOR: Duration = Duration::from_secs(2);

/// Whether a session's datagrams may wait for a turn that happens anyway (every turn asks the
/// waiting sockets without blocking) instead of waking the thread each: a connected viewer's
/// receiver reports and ICE consent checks (~3 a second each; at 1x100 they were most of the
/// turns that forwarded nothing, and a wake-up costs more than their own work). Never a session
/// that publishes (its media is what turns are for), one still connecting (how fast a join
/// completes), a connection check, or one in its [`AWAKE_FOR`] after connecting or answering
/// ICE again (a publisher's first packets come then) or after asking for a repair (a viewer
/// losing packets has its retransmissions at once). What may wait, up to [`WAIT_AT_MOST`] and
/// only while the waiting sockets are busy ([`waiting_is_busy`]): the first NACK, picture loss
/// or full intra request after a quiet spell, and the first packets of a viewer that starts
/// publishing later (it moves once its track is known).
fn may_wait(
    connected: bool,
    publishes: bool,
    probe: bool,
    awake_until: Option<Instant>,
    now: Instant,
) -> bool {
    connected && !publishes && !probe && awake_until.is_none_or(|t| now >= t)
}

/// Whether the waiting sockets bring so many datagrams (`per_second`) that asking them every
/// [`WAIT_AT_MOST`] — in the turns media makes, else in a turn of its own — wakes the thread
/// less than each datagram would: then they are asked so. Otherwise the first datagram wakes
/// it, as before (a few viewers' reports: a turn each, never a turn every 20 ms for nothing).
fn waiting_is_busy(per_second: u32) -> bool {
    per_second > WAITS_PER_SECOND
}

/// Turns a second that asking the waiting sockets every [`WAIT_AT_MOST`] takes at most.
const WAITS_PER_SECOND: u32 = 50;

/// The datagrams a worker's waiting sockets bring, judged busy or not ([`waiting_is_busy`])
/// about once a second, over the time since the last judgement.
struct WaitLoad {
    reads: u64,
    since: Instant,
    busy: bool,
}

impl WaitLoad {
    fn new(now: Instant) -> WaitLoad {
        WaitLoad {
            reads: 0,
            since: now,
            busy: false,
        }
    }

    /// `n` datagrams read from waiting sockets.
    fn read(&mut self, n: u64) {
        self.reads += n;
    }

    /// Whether they are busy as of `now`; with nobody `waiting`, not (and counted afresh).
    fn judge(&mut self, now: Instant, waiting: bool) -> bool {
        let judged = now.saturating_duration_since(self.since);
        if !waiting {
            *self = WaitLoad::new(now);
        } else if judged >= Duration::from_secs(1) {
            let per_second = std::mem::take(&mut self.reads) as f64 / judged.as_secs_f64();
            self.busy = waiting_is_busy(per_second as u32);
            self.since = now;
        }
        self.busy
    }
}

/// Builds the RTP header (12 bytes, no CSRC; with the absolute-capture-time extension when the
/// packet has one for this subscriber) and payload into `buf`, protects it
/// with `dst`'s SRTP context and queues it for `dst`'s selected remote address (sent with the
/// rest of the turn's packets to it: [`flush_queue`]). `dirty` gets `slot` when its queue starts.
/// The packet, for the forwarding delay metric, reached the SFU at `rx` (realtime clock).
#[allow(clippy::too_many_arguments)]
fn send_rtp(
    dst: &mut Session,
    slot: usize,
    dirty: &mut Vec<usize>,
    roc: &mut Roc,
    p: &SentPacket,
    payload: &[u8],
    ssrc: u32,
    rx: Duration,
    delay: &mut LocalHistogram,
) -> bool {
    if dst.remote.is_none() && dst.connected {
        dst.remote = selected_remote(&mut dst.pc);
    }
    if dst.remote.is_none() {
        return false;
    }
    if dst.srtp.is_none() {
        match dst.pc.local_srtp_keys().map(SrtpOut::new) {
            Some(Ok(out)) => dst.srtp = Some(out),
            Some(Err(e)) if !dst.srtp_refused => {
                dst.srtp_refused = true;
                tracing::warn!(room = %dst.room, participant = %dst.peer, error = %e, "no media can be sent to this session");
            }
            _ => {}
        }
    }
    let Some(srtp) = dst.srtp.as_ref() else {
        return false;
    };
    let q = &mut dst.queue;
    let start = q.data.len();
    write_header(
        &mut q.data,
        p.seq,
        p.timestamp,
        p.marker,
        p.payload_type,
        ssrc,
        p.capture.as_ref(),
    );
    // The payload goes into the queue encrypted (no plain copy first where the keystream
    // allows it), the subscriber's VP8 picture numbers written over the publisher's.
    let vp8 = p
        .vp8
        .as_ref()
        .map(|ids| move |d: &mut [u8]| vp8_set_ids(d, ids));
    let edit = vp8.as_ref().map(|f| f as Edit<'_>);
    if let Some(t) = srtp.encrypt_append(&mut q.data, start, payload, edit, roc.for_seq(p.seq)) {
        q.tags.push(t);
    }
    if q.spans.is_empty() {
        dirty.push(slot);
        q.oldest = rx;
    }
    q.spans.push((start, q.data.len()));
    if q.spans.len() >= udp_batch::MAX_BATCH {
        flush_queue(dst, delay);
    }
    true
}

/// `refs` — (authenticated length, session slot, tag index) — into `out` ordered by the number
/// of SHA-1 blocks their HMAC takes (what a lane of `hmac_x16` costs), in one counting pass:
/// a turn's packets have few distinct lengths, and the comparison sort of a fan-out's hundreds
/// of tags this replaces was ~1.3 % of the SFU's CPU at 1x100 in `perf`.
fn by_sha1_blocks(refs: &[(usize, usize, usize)], out: &mut Vec<(usize, usize, usize)>) {
    const BUCKETS: usize = 64;
    // The message is the packet and the 4-byte rollover counter, then SHA-1's padding (at
    // least 9 bytes); longer than the last bucket (4 kB) all share it.
    let bucket = |len: usize| ((len + 4 + 9).div_ceil(64)).min(BUCKETS - 1);
    let mut at = [0usize; BUCKETS];
    for r in refs {
        at[bucket(r.0)] += 1;
    }
    let mut sum = 0;
    for a in &mut at {
        (*a, sum) = (sum, sum + *a);
    }
    out.clear();
    out.resize(refs.len(), (0, 0, 0));
    for r in refs {
        let b = bucket(r.0);
        out[at[b]] = *r;
        at[b] += 1;
    }
}

/// A session's protected media waiting for its batched send: the datagrams one after another
/// in one buffer that keeps its capacity, so queueing allocates nothing once warm.
#[derive(Default)]
struct OutQueue {
    data: Vec<u8>,
    /// Each datagram's range in `data`.
    spans: Vec<(usize, usize)>,
    /// The SRTP tags (AES-CM profiles) still to be written into `data`: computed together
    /// across sessions at the end of the turn (`Engine::flush_media`), or for this session
    /// alone when it is sent before then (`flush_queue`).
    tags: Vec<PendingTag>,
    /// When the first of them reached the SFU (realtime clock).
    oldest: Duration,
}

impl OutQueue {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        self.tags.clear();
    }
}

/// Sends a session's queued media in one `sendmmsg` (equal-sized runs segmented by the kernel).
/// What the socket refused (a full buffer: NACKs bring it back from the ring) is counted in
/// `dst.refused`.
///
/// Observes in `delay` how long the oldest of them took from the SFU's socket to here: the
/// forwarding delay as this subscriber sees it (once per batch, not per packet).
fn flush_queue(dst: &mut Session, delay: &mut LocalHistogram) {
    if dst.queue.is_empty() {
        return;
    }
    let Some(remote) = dst.remote else {
        dst.refused += dst.queue.len() as u64;
        dst.queue.clear();
        return;
    };
    if !dst.queue.tags.is_empty() {
        if let Some(srtp) = dst.srtp.as_ref() {
            srtp.fill_tags(&mut dst.queue.data, &dst.queue.tags);
        }
        dst.queue.tags.clear();
    }
    let mut refs: [&[u8]; udp_batch::MAX_BATCH] = [&[]; udp_batch::MAX_BATCH];
    let n = dst.queue.len().min(udp_batch::MAX_BATCH);
    for (r, &(a, b)) in refs.iter_mut().zip(&dst.queue.spans) {
        *r = &dst.queue.data[a..b];
    }
    let sent = udp_batch::send_batch(dst.socket.send_fd(), remote, &refs[..n]);
    delay.observe(
        udp_batch::realtime_now()
            .saturating_sub(dst.queue.oldest)
            .as_secs_f64(),
    );
    dst.queue.clear();
    dst.refused += (n - sent) as u64;
}

/// The remote address of the session's selected ICE pair. Under BUNDLE every sender and
/// receiver shares one transport: the first associated one (with a mid) answers. Nothing is
/// collected or formatted (each session's tick asks; at 1x100 the lists and the address
/// formatted and parsed again were ~1 % of the SFU's CPU).
fn selected_remote(pc: &mut RTCPeerConnection) -> Option<SocketAddr> {
    let mut pair = None;
    for i in 0.. {
        let Some(id) = pc.get_receivers().nth(i) else {
            break;
        };
        pair = pc.rtp_receiver(id).and_then(|r| {
            r.transport()
                .and_then(|t| t.ice_transport().get_selected_candidate_pair())
        });
        if pair.is_some() {
            break;
        }
    }
    if pair.is_none() {
        for i in 0.. {
            let Some(id) = pc.get_senders().nth(i) else {
                break;
            };
            pair = pc.rtp_sender(id).and_then(|r| {
                r.transport()
                    .and_then(|t| t.ice_transport().get_selected_candidate_pair())
            });
            if pair.is_some() {
                break;
            }
        }
    }
    let pair = pair?;
    let r = pair.remote();
    let ip: std::net::IpAddr = r.address.parse().ok()?;
    Some(SocketAddr::new(ip, r.port))
}

/// Gives a sans-IO session its one candidate, the UDP socket it reads (`local`), and says there
/// are no more (no gathering: the address is known). Used by the load tool's subscribers too.
pub fn add_host_candidate(
    pc: &mut RTCPeerConnection,
    local: SocketAddr,
) -> Result<(), rtc::shared::error::Error> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    let init: RTCIceCandidateInit = RTCIceCandidate::from(&host).to_json()?;
    pc.add_local_candidate(init)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())
}

/// `t` as a 64-bit NTP timestamp.
fn ntp(t: std::time::SystemTime) -> u64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A 64-bit NTP timestamp as µs since 1900.
fn ntp_us(t: u64) -> u64 {
    (t >> 32) * 1_000_000 + (((t & 0xffff_ffff) * 1_000_000) >> 32)
}

struct Worker {
    /// Which of the engine's workers this is.
    index: usize,
    poll: Poll,
    /// Sockets whose datagrams may wait for a turn that happens anyway ([`may_wait`]): asked
    /// without blocking in every turn. While they are busy ([`waiting_is_busy`]) a turn comes
    /// at least every [`WAIT_AT_MOST`]; otherwise `poll` watches this poller (`waiting_armed`),
    /// so that their first datagram wakes the thread and an idle worker sleeps.
    waiting: Poll,
    /// How many sessions' sockets are on `waiting`.
    waiting_count: usize,
    /// When `waiting` was last asked.
    waiting_asked: Instant,
    /// `poll` watches `waiting` for one event ([`udp_batch::arm_oneshot`]); `waiting_added`:
    /// it was added to `poll` once (re-armed after).
    waiting_armed: bool,
    waiting_added: bool,
    /// How many datagrams `waiting`'s sockets bring ([`WaitLoad`]).
    waiting_load: WaitLoad,
    /// Datagrams read from every socket (a running count).
    datagrams_read: u64,
    cfg: MediaConfig,
    metrics: Arc<Metrics>,
    epoch: Instant,
    core: SfuCore,
    /// By slot (the socket's token); a freed slot is reused.
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    /// (room, participant) → slot of its current session.
    members: HashMap<(String, String), usize>,
    /// Keyed by the core's own sequential numbers (nothing a peer chooses), so hashed with
    /// FxHash: SipHash per copy (each subscriber's `Sub` looked up in the fan-out) was more
    /// than the lookup itself.
    tracks: FxHashMap<TrackId, Published>,
    subs: FxHashMap<SubId, Sub>,
    out: tokio::sync::mpsc::UnboundedSender<Outward>,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    next_port: u32,
    next_session: u64,
    buf: Vec<u8>,
    /// Sockets left readable when their turn's budget ran out (mio is edge-triggered).
    backlog: Vec<usize>,
    /// What this thread counted this turn, added to the shared metrics at its end.
    counts: LocalCounts,
    /// When the datagram being handled reached its socket (realtime clock, the kernel's stamp):
    /// what it makes the engine send carries it, for the forwarding delay metric.
    rx_at: Duration,
    /// The core's next deadline, kept after each input (asking walks every room).
    core_next: Option<Instant>,
    /// Shutting down: nobody is offered anything any more, the edge is told nothing.
    stopping: bool,
    /// Sessions with queued media (sent at the end of the turn).
    dirty: Vec<usize>,
    /// (length covered, slot, index in its queue's pending tags) of every SRTP tag computed at
    /// the end of the turn, across sessions (kept for its capacity).
    tag_refs: Vec<(usize, usize, usize)>,
    /// The same, grouped by how many SHA-1 blocks each takes (`by_sha1_blocks`).
    tag_order: Vec<(usize, usize, usize)>,
    /// This worker's recorder thread, started with its first recorded track.
    recorder: Option<RecorderHandle>,
    /// The wall clock (µs since the Unix epoch) at `epoch`: recorded packets' arrival times.
    wall_epoch_us: u64,
    /// How the recorder thread reaches this worker (its keyframe requests).
    to_self: Option<(mpsc::Sender<Cmd>, Arc<Waker>)>,
    /// The uploader: each segment written goes to the edge.
    uploads: Option<crate::record::upload::Uploads>,
    /// Connection checks' sessions open on this worker.
    probes: usize,
}

fn webrtc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Webrtc(e.to_string())
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: usize,
        of: usize,
        poll: Poll,
        waiting: Poll,
        cfg: MediaConfig,
        metrics: Arc<Metrics>,
        out: tokio::sync::mpsc::UnboundedSender<Outward>,
        shared: Arc<Shared>,
        draining: Arc<AtomicBool>,
    ) -> Worker {
        let epoch = Instant::now();
        let wall_epoch_us = crate::record::wall_us();
        // Workers start at different places in the port range (a port taken is skipped anyway).
        let (lo, hi) = cfg.udp_ports;
        let span = (hi - lo) as u32 + 1;
        Worker {
            index,
            poll,
            waiting,
            waiting_count: 0,
            waiting_asked: epoch,
            waiting_armed: false,
            waiting_added: false,
            waiting_load: WaitLoad::new(epoch),
            datagrams_read: 0,
            core: SfuCore::new(epoch, wall_epoch_us, cfg.id.clone()),
            next_port: lo as u32 + span * index as u32 / of.max(1) as u32,
            cfg,
            metrics,
            epoch,
            sessions: Vec::new(),
            free: Vec::new(),
            members: HashMap::new(),
            tracks: FxHashMap::default(),
            subs: FxHashMap::default(),
            out,
            shared,
            draining,
            // Session numbers need only rise per participant, and a participant stays on its
            // room's worker.
            next_session: 1,
            buf: vec![0u8; MTU],
            backlog: Vec::new(),
            rx_at: udp_batch::realtime_now(),
            counts: LocalCounts::default(),
            core_next: None,
            stopping: false,
            dirty: Vec::new(),
            tag_refs: Vec::new(),
            tag_order: Vec::new(),
            recorder: None,
            wall_epoch_us,
            to_self: None,
            uploads: None,
            probes: 0,
        }
    }

    fn run(mut self, cmds: mpsc::Receiver<Cmd>) {
        let mut events = Events::with_capacity(256);
        let mut waited = Events::with_capacity(256);
        loop {
            let timeout = if self.backlog.is_empty() {
                let ask_waiting = (self.waiting_count > 0 && !self.waiting_armed)
                    .then(|| self.waiting_asked + WAIT_AT_MOST);
                (self.next_deadline().into_iter().chain(ask_waiting).min()).map(|t| {
                    t.saturating_duration_since(Instant::now())
                        .max(Duration::from_micros(100))
                })
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // Nothing can be forwarded any more: fail like a panic does (out of the
                    // registry, drained, exit), not a healthy-looking SFU that forwards nothing.
                    self.stop();
                    panic!("the media engine's poll failed: {e}");
                }
            }
            let mut ready: Vec<usize> = std::mem::take(&mut self.backlog);
            for ev in events.iter() {
                if ev.token() == WAITING {
                    self.waiting_armed = false; // spent: asked below
                } else if ev.token() != WAKER && !ready.contains(&ev.token().0) {
                    ready.push(ev.token().0);
                }
            }
            for slot in ready {
                if self.readable(slot) {
                    self.backlog.push(slot);
                }
            }
            // What the datagrams read brought goes out now, not after the waiting sockets, the
            // commands and the timers.
            self.flush_media();
            if self.waiting_count > 0 {
                self.waiting_asked = Instant::now();
                if let Err(e) = self.waiting.poll(&mut waited, Some(Duration::ZERO)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        self.stop();
                        panic!("the media engine's poll failed: {e}");
                    }
                }
                for ev in waited.iter() {
                    let slot = ev.token().0;
                    let before = self.datagrams_read;
                    let more = self.readable(slot);
                    self.waiting_load.read(self.datagrams_read - before);
                    if more && !self.backlog.contains(&slot) {
                        self.backlog.push(slot);
                    }
                }
            }
            loop {
                match cmds.try_recv() {
                    Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.stop();
                        return;
                    }
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.timers();
            self.flush_media();
            self.counts.turns += 1;
            self.metrics.add(&mut self.counts);
            self.watch_waiting();
        }
    }

    /// Sends every session's queued media (one batched send per session), after writing all
    /// their SRTP tags together (sixteen at a time: a fan-out's copies side by side).
    fn flush_media(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // A session whose queue was sent mid-turn and started again is listed twice.
        dirty.sort_unstable();
        dirty.dedup();
        let mut all = std::mem::take(&mut self.tag_refs);
        all.clear();
        for &slot in &dirty {
            if let Some(s) = self.sessions.get(slot).and_then(|s| s.as_ref()) {
                all.extend(
                    (s.queue.tags.iter().enumerate()).map(|(k, t)| (t.end - t.start, slot, k)),
                );
            }
        }
        // Equal block counts side by side: a group of sixteen lanes takes as long as its longest.
        let mut refs = std::mem::take(&mut self.tag_order);
        by_sha1_blocks(&all, &mut refs);
        self.tag_refs = all;
        fill_tags_across(
            refs.len(),
            &mut self.sessions,
            |ss, i| {
                let (_, slot, k) = refs[i];
                let s = ss.get(slot)?.as_ref()?;
                Some((
                    s.srtp.as_ref()?.hmac_key()?,
                    &s.queue.data[..],
                    s.queue.tags[k],
                ))
            },
            |ss, i| Some(&mut ss.get_mut(refs[i].1)?.as_mut()?.queue.data[..]),
        );
        self.tag_order = refs;
        for slot in dirty.drain(..) {
            if let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) {
                // All written above: `flush_queue` has none left to do alone.
                s.queue.tags.clear();
                flush_queue(s, &mut self.counts.forward_delay);
                self.counts.dropped_packets += std::mem::take(&mut s.refused);
            }
        }
        self.dirty = dirty;
    }

    /// At the end of a turn: unless the waiting sockets are busy ([`waiting_is_busy`], judged
    /// on each full second), the main poller watches the waiting one, so that the first
    /// datagram there wakes the thread; while they are busy it does not, and they are asked in
    /// the turns that come anyway, or after [`WAIT_AT_MOST`].
    fn watch_waiting(&mut self) {
        let busy = self
            .waiting_load
            .judge(Instant::now(), self.waiting_count > 0);
        if self.waiting_count == 0 || self.waiting_armed || busy {
            return;
        }
        match udp_batch::arm_oneshot(
            self.poll.as_raw_fd(),
            self.waiting.as_raw_fd(),
            WAITING.0 as u64,
            !self.waiting_added,
        ) {
            Ok(()) => {
                self.waiting_added = true;
                self.waiting_armed = true;
            }
            // Not watched: asked every WAIT_AT_MOST instead.
            Err(e) => tracing::debug!(error = %e, "waiting sockets not watched"),
        }
    }

    /// Puts a session's socket on the poller [`may_wait`] chooses for it (a socket moved is
    /// reported at once if it holds datagrams already: registering polls it).
    fn place(&mut self, slot: usize, now: Instant) {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        let wait = may_wait(
            s.connected,
            !s.published.is_empty(),
            s.probe.is_some(),
            s.awake_until,
            now,
        );
        if wait == s.waits {
            return;
        }
        let (from, to) = if wait {
            (&self.poll, &self.waiting)
        } else {
            (&self.waiting, &self.poll)
        };
        let _ = from.registry().deregister(&mut s.socket.rx);
        if let Err(e) = to
            .registry()
            .register(&mut s.socket.rx, Token(slot), Interest::READABLE)
        {
            // Where it was, then: it is read either way.
            let _ = from
                .registry()
                .register(&mut s.socket.rx, Token(slot), Interest::READABLE);
            if !std::mem::replace(&mut s.unmoved, true) {
                tracing::warn!(room = %s.room, participant = %s.peer, error = %e, "socket not moved to the other poller (said once)");
            }
            return;
        }
        s.waits = wait;
        if wait {
            self.waiting_count += 1;
        } else {
            self.waiting_count -= 1;
        }
    }

    /// When the poll has to wake at the latest: the earliest timer, a connected session's own
    /// timers given [`TIMER_SLACK`] ([`wake_at`]).
    fn next_deadline(&self) -> Option<Instant> {
        wake_at(
            self.sessions
                .iter()
                .flatten()
                .flat_map(|s| {
                    // rtc's timers (ICE keepalives and checks, DTLS retransmissions, the NACK
                    // generator, TWCC feedback, receiver reports) and the sender-report tick.
                    // Until connected they decide how fast a join completes, and a connection
                    // check's measure its path: no slack.
                    let own = s.next.into_iter().chain([s.tick_at]);
                    let slack = if s.connected && s.probe.is_none() {
                        TIMER_SLACK
                    } else {
                        Duration::ZERO
                    };
                    own.map(move |t| (t, slack))
                        .chain(s.probe.map(|p| (p.due(s.connected), Duration::ZERO)))
                })
                .chain(self.core_next.map(|t| (t, Duration::ZERO))),
        )
    }

    fn timers(&mut self) {
        let now = Instant::now();
        // What timers send (a NACK answered late, say) is measured from now.
        self.rx_at = udp_batch::realtime_now();
        if self.core_next.is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.perform();
        }
        for slot in 0..self.sessions.len() {
            if self.sessions[slot]
                .as_ref()
                .is_some_and(|s| s.probe.is_some_and(|p| p.due(s.connected) <= now))
            {
                self.close_probe(slot);
                continue;
            }
            if self.sessions[slot]
                .as_ref()
                .is_some_and(|s| s.tick_at <= now)
            {
                self.tick(slot, now);
            }
            let due = self.sessions[slot]
                .as_ref()
                .is_some_and(|s| s.next.is_some_and(|t| t <= now));
            if due {
                if let Some(s) = self.sessions[slot].as_mut() {
                    if let Err(e) = s.pc.handle_timeout(now) {
                        tracing::debug!(room = %s.room, participant = %s.peer, error = %e, "session timer failed");
                    }
                }
                self.drain(slot);
                // A timer that failed before the later handlers ran leaves its deadline in the
                // past: look again shortly rather than spin.
                if let Some(s) = self.sessions[slot].as_mut() {
                    if s.next.is_some_and(|t| t <= now) {
                        s.next = Some(now + Duration::from_millis(5));
                    }
                }
            }
        }
    }

    /// A session's tick: the selected pair looked up again (ICE may have moved), a sender
    /// report for every stream sent to it (lip sync, round-trip time).
    fn tick(&mut self, slot: usize, now: Instant) {
        // A repair asked for long enough ago: waiting again.
        self.place(slot, now);
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        s.tick_at = now + TICK;
        if !s.connected {
            return;
        }
        if s.probe.is_none() {
            // What its published streams brought since the last tick: its uplink's loss.
            let (mut expected, mut received) = (0, 0);
            for id in s.published.values() {
                if let Some(p) = self.tracks.get_mut(id) {
                    for c in p.rx.iter_mut() {
                        let (e, r) = c.take();
                        expected += e;
                        received += r;
                    }
                }
            }
            if expected > 0 {
                let (room, peer, session) = (s.room.clone(), s.peer.clone(), s.id);
                let _ = self.core.handle_input(
                    now,
                    Input::Uplink {
                        room,
                        peer,
                        session,
                        expected,
                        received,
                    },
                );
            }
        }
        self.watch_stalls(slot, now);
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        s.remote = selected_remote(&mut s.pc).or(s.remote);
        // The report counts what is queued: that goes first.
        flush_queue(s, &mut self.counts.forward_delay);
        let wall = std::time::SystemTime::now();
        // Every stream's report in one compound RTCP packet (one datagram; at most
        // [`REPORTS_PER_PACKET`] each, well under the MTU), sent through the first sender's
        // track: one per stream was a datagram, a syscall and an skb each.
        let mut reports: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        let mut via = None;
        for sub in s.sending.values().filter_map(|id| self.subs.get(id)) {
            let Some((ts, at)) = sub.report.last else {
                continue;
            };
            let clock = self
                .tracks
                .get(&sub.track)
                .map_or(90_000, |p| p.codec.clock_rate) as u64;
            let elapsed = now.saturating_duration_since(at);
            let rtp_time = ts.wrapping_add((elapsed.as_micros() as u64 * clock / 1_000_000) as u32);
            let sr = SenderReport {
                ssrc: sub.fwd.rewriter.out_ssrc(),
                ntp_time: ntp(wall),
                rtp_time,
                packet_count: sub.report.packets,
                octet_count: sub.report.octets,
                reports: vec![],
                profile_extensions: bytes::Bytes::new(),
            };
            let via = *via.get_or_insert(sub.sender);
            reports.push(Box::new(sr));
            if reports.len() == REPORTS_PER_PACKET {
                if let Some(mut sender) = s.pc.rtp_sender(via) {
                    let _ = sender.write_rtcp(now, std::mem::take(&mut reports));
                }
            }
        }
        if let (Some(via), false) = (via, reports.is_empty()) {
            if let Some(mut sender) = s.pc.rtp_sender(via) {
                let _ = sender.write_rtcp(now, reports);
            }
        }
        self.flush(slot);
    }

    /// Says in the log when one of the session's video receptions stalls
    /// ([`crate::fanout::stalled`]: nothing sent to it for 4 s while it should get video), with
    /// what its forwarding holds, and when it flows again: what a failing end-to-end test's
    /// missing video looked like from the SFU, also when the test could not ask.
    fn watch_stalls(&mut self, slot: usize, now: Instant) {
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        let now_us = now.duration_since(self.epoch).as_micros() as u64;
        for id in s.sending.values() {
            let Some(sub) = self.subs.get_mut(id) else {
                continue;
            };
            let Some(p) = self.tracks.get(&sub.track).filter(|p| p.video.is_some()) else {
                continue;
            };
            let Some(since) = sub.stats.since_us else {
                continue;
            };
            // The layers it may get (at most the one it wants) are what must flow.
            let top = sub.fwd.want().unwrap_or(0).min(LAYERS - 1);
            let track_last = p.last_in_us[..=top].iter().flatten().copied().max();
            let stalled = crate::fanout::stalled(
                &sub.fwd,
                s.connected,
                since,
                sub.stats.last_forwarded_us,
                track_last,
                now_us,
            );
            if stalled && !sub.stats.stall_logged {
                sub.stats.stall_logged = true;
                tracing::warn!(
                    room = %s.room,
                    subscriber = %s.peer,
                    publisher = %p.publisher,
                    forward = %sub.fwd.describe(now_us),
                    forwarded = sub.stats.forwarded,
                    plis = sub.stats.plis,
                    keyframe_wishes = sub.stats.keyframe_wishes,
                    keyframes_in = ?p.keyframes_in,
                    keyframes_asked = ?p.keyframes_asked,
                    "a video reception gets nothing while its track flows"
                );
            } else if sub.stats.stall_logged && !stalled {
                sub.stats.stall_logged = false;
                let flows = sub
                    .stats
                    .last_forwarded_us
                    .is_some_and(|t| now_us.saturating_sub(t) < 1_000_000);
                tracing::info!(
                    room = %s.room,
                    subscriber = %s.peer,
                    publisher = %p.publisher,
                    flows,
                    "the stalled video reception is no longer stalled (flows: it gets video again; else its tile was hidden, its track went quiet or its subscriber away)"
                );
            }
        }
    }

    fn stop(&mut self) {
        self.stopping = true;
        let members: Vec<(String, String)> = self.members.keys().cloned().collect();
        for (room, peer) in members {
            self.end(&room, &peer, None, "the SFU is shutting down");
        }
        for slot in 0..self.sessions.len() {
            self.close_slot(slot);
        }
        self.rooms_changed();
        self.metrics.add(&mut self.counts);
        if let Some(r) = self.recorder.take() {
            r.stop(); // every file finished and every segment written before the SFU exits
        }
    }

    // ---- datagrams ----

    /// Reads a session's socket, up to [`READ_BUDGET`] datagrams. Returns whether it may have
    /// more (its turn ran out).
    fn readable(&mut self, slot: usize) -> bool {
        let mut errors = 0;
        for _ in 0..READ_BUDGET {
            let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
                return false;
            };
            let (n, from, rx_at) = match udp_batch::recv_timed(
                s.socket.rx.as_raw_fd(),
                &mut self.buf,
            ) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // An ICMP error for an earlier send clears once read; one that repeats
                    // waits for the next turn.
                    errors += 1;
                    if errors > 4 {
                        tracing::debug!(room = %s.room, participant = %s.peer, error = %e, "socket errors");
                        return true;
                    }
                    continue;
                }
            };
            if let Some(p) = s.probe.as_mut() {
                p.bytes += n as u64;
                if p.bytes > PROBE_MAX_BYTES {
                    // More than an upload check sends: not a check any more.
                    self.close_probe(slot);
                    return false;
                }
            }
            self.datagrams_read += 1;
            let moved = s.connected && s.remote != Some(from);
            let msg = TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: s.local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&self.buf[..n]),
            };
            if let Err(e) = s.pc.handle_read(msg) {
                tracing::trace!(error = %e, "datagram refused");
            }
            if moved {
                // From another address than media goes to: ICE may have moved to another pair
                // (after this datagram), and media follows at once.
                if let Some(r) = selected_remote(&mut s.pc) {
                    s.remote = Some(r);
                }
            }
            self.rx_at = rx_at.unwrap_or_else(udp_batch::realtime_now);
            // The queues go out at the end of the turn, not sooner: measured at 1x100 and
            // 4x50, flushing once media had waited 100–300 µs made both the CPU per packet
            // (+25 %) and the forwarding delay (p50 0.64 → 1.2 ms) worse, since every early
            // flush is more syscalls ahead of the rest of the fan-out.
            self.drain(slot);
        }
        true
    }

    /// Sends what a session has to send.
    fn flush(&mut self, slot: usize) {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        while let Some(out) = s.pc.poll_write() {
            s.socket.send_to(&out.message, out.transport.peer_addr);
        }
    }

    /// Everything a session has for us after an input: events, media, datagrams, its next timer.
    fn drain(&mut self, slot: usize) {
        loop {
            let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
                return;
            };
            if let Some(ev) = s.pc.poll_event() {
                self.event(slot, ev);
                continue;
            }
            if let Some(msg) = s.pc.poll_read() {
                if s.probe.is_some() {
                    // A connection check's video only feeds the congestion feedback rtc's
                    // interceptor sends back; it goes nowhere.
                    continue;
                }
                match msg.message {
                    RTCMessage::RtpPacket(track, p) => self.forward(slot, &track, p),
                    RTCMessage::RtcpPacket(track, packets) => self.feedback(slot, &track, packets),
                    _ => {}
                }
                continue;
            }
            break;
        }
        self.flush(slot);
        if let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) {
            s.next = s.pc.poll_timeout();
        }
    }

    fn event(&mut self, slot: usize, ev: RTCPeerConnectionEvent) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(s) = self.sessions[slot].as_mut() else {
                    return;
                };
                tracing::debug!(room = %s.room, participant = %s.peer, %state, "connection state");
                match state {
                    RTCPeerConnectionState::Connected if s.connected && s.probe.is_none() => {
                        // Answering ICE again after a silence: read at once for a while (a
                        // tick after that may put it back on the waiting poller).
                        s.awake_until = Some(Instant::now() + AWAKE_FOR);
                        let (room, peer, session) = (s.room.clone(), s.peer.clone(), s.id);
                        let _ = self.core.handle_input(
                            Instant::now(),
                            Input::Link {
                                room,
                                peer,
                                session,
                                up: true,
                            },
                        );
                        // Off the waiting poller now, not at its next tick.
                        self.place(slot, Instant::now());
                    }
                    RTCPeerConnectionState::Connected if !s.connected => {
                        s.connected = true;
                        // Read at once for a while: a publisher's first packets come now (the
                        // tick puts it on the waiting poller after, if it publishes nothing).
                        s.awake_until = Some(Instant::now() + AWAKE_FOR);
                        if s.probe.is_none() {
                            // Its connection is judged from now on.
                            let _ = self.core.handle_input(
                                Instant::now(),
                                Input::Link {
                                    room: s.room.clone(),
                                    peer: s.peer.clone(),
                                    session: s.id,
                                    up: true,
                                },
                            );
                        }
                        let Some(s) = self.sessions[slot].as_mut() else {
                            return;
                        };
                        s.remote = selected_remote(&mut s.pc);
                        // Packets sent before DTLS completes are dropped: only now can a keyframe
                        // reach it.
                        self.keyframes_for(slot);
                    }
                    // A check the page closed (or lost) ends at the first silence: it is
                    // only ever useful while the page is looking.
                    RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Disconnected
                        if s.probe.is_some() =>
                    {
                        self.close_probe(slot);
                    }
                    RTCPeerConnectionState::Disconnected => {
                        // Not answering ICE (for 5 s): lost, until it answers again or fails.
                        let (room, peer, session) = (s.room.clone(), s.peer.clone(), s.id);
                        let _ = self.core.handle_input(
                            Instant::now(),
                            Input::Link {
                                room,
                                peer,
                                session,
                                up: false,
                            },
                        );
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        let (room, peer, id) = (s.room.clone(), s.peer.clone(), s.id);
                        self.end(&room, &peer, Some(id), &format!("PeerConnection {state}"));
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
                if self.sessions[slot]
                    .as_ref()
                    .is_some_and(|s| s.probe.is_none()) =>
            {
                self.track_open(slot, init)
            }
            _ => {}
        }
    }

    /// Asks for a keyframe of every video the session at `slot` receives and can now take.
    fn keyframes_for(&mut self, slot: usize) {
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        let now_us = self.epoch.elapsed().as_micros() as u64;
        for id in s.sending.values() {
            let Some(sub) = self.subs.get_mut(id) else {
                continue;
            };
            if !sub.fwd.ready {
                continue;
            }
            // A restart (negotiated, or its subscriber back): its wait starts now.
            sub.stats.since_us = Some(now_us);
            if let Some(p) = self.tracks.get_mut(&sub.track) {
                if p.video.is_some() {
                    p.keyframe_wanted = true;
                }
            }
        }
    }

    /// A remote track (or a simulcast layer of one) opened: published through the core.
    fn track_open(&mut self, slot: usize, init: RTCTrackEventInit) {
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        let track_id = init.track_id.clone();
        let rids = edgemeet_shared::media::CAMERA_SIMULCAST.map(|l| l.rid);
        let layer = init
            .rid
            .as_deref()
            .and_then(|r| rids.iter().position(|x| *x == r));
        if let Some(&id) = s.published.get(&track_id) {
            // Another layer of a simulcast track.
            if let (Some(p), Some(l)) = (self.tracks.get_mut(&id), layer) {
                p.layer_ssrcs[l] = Some(init.ssrc);
                p.layer_of.insert(init.ssrc, Some(l));
            }
            return;
        }
        let (audio, codec) = {
            let Some(receiver) = s.pc.rtp_receiver(init.receiver_id) else {
                return;
            };
            let track = receiver.track();
            (
                track.kind() == RtpCodecKind::Audio,
                track.codec(init.ssrc).cloned(),
            )
        };
        let Some(codec) = codec else {
            tracing::warn!(room = %s.room, publisher = %s.peer, ssrc = init.ssrc, "ignoring a track whose codec is not known");
            return;
        };
        let (room, publisher, session) = (s.room.clone(), s.peer.clone(), s.id);
        if offered_pt(&codec.mime_type).is_none() {
            tracing::warn!(room, publisher, mime = %codec.mime_type, "ignoring a track in a codec this SFU does not forward");
            return;
        }
        let kind = s.layout.kind_of(&track_id, audio);
        let simulcast = !audio && init.rid.is_some();
        let id = match self.core.publish(&room, &publisher, session, kind) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(room, publisher, kind = kind.name(), error = %e, "ignoring a track");
                self.counts.dropped_packets += 1;
                return;
            }
        };
        s.published.insert(track_id, id);
        let mut layer_ssrcs = [None; LAYERS];
        let mut layer_of = HashMap::new();
        if let (true, Some(l)) = (simulcast, layer) {
            layer_ssrcs[l] = Some(init.ssrc);
            layer_of.insert(init.ssrc, Some(l));
        }
        let video = VideoCodec::from_mime(&codec.mime_type);
        self.tracks.insert(
            id,
            Published {
                kind,
                room: room.clone(),
                publisher: publisher.clone(),
                slot,
                simulcast,
                video,
                media_ssrc: init.ssrc,
                receiver: init.receiver_id,
                layer_ssrcs,
                layer_of,
                audio_level_id: (kind == TrackKind::Mic)
                    .then_some(s.layout.audio_level_id)
                    .flatten(),
                capture_id: s.layout.capture_ids[usize::from(video.is_some())],
                block_bit: block_bit(kind),
                subs: Vec::new(),
                keyframe_wanted: false,
                pacer: KeyframePacer::default(),
                codec,
                rec: None,
                payloads: video.map(|_| {
                    // A subscriber's ring holds one layer's packets; this one every layer's:
                    // ~4 s of all three, so a low layer's NACKs are answered for ~4 s rather
                    // than its own 512 packets' ~20 s (a NACK over 1 s old asks for a
                    // keyframe anyway: `stale_nack`).
                    PayloadRing::new(if simulcast { 2 * SENT_RING } else { SENT_RING })
                }),
                rx: [SeqCount::default(); LAYERS],
                keyframes_in: [0; LAYERS],
                last_keyframe_us: [None; LAYERS],
                keyframes_asked: [0; LAYERS],
                last_in_us: [None; LAYERS],
            },
        );
        tracing::info!(
            room,
            publisher,
            kind = kind.name(),
            simulcast,
            "track published"
        );
        let _ = self.core.handle_input(
            Instant::now(),
            Input::Published {
                room,
                peer: publisher,
                session,
                track: id,
                kind,
                simulcast,
                video: video.is_some(),
            },
        );
        self.perform();
        self.place(slot, Instant::now());
    }

    // ---- the packet path ----

    /// One packet of a published track, to every subscriber.
    fn forward(&mut self, slot: usize, track: &str, pkt: rtp::Packet) {
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        let Some(&id) = s.published.get(track) else {
            self.counts.dropped_packets += 1;
            return;
        };
        let blocked_bits = s.blocked;
        let Some(p) = self.tracks.get_mut(&id) else {
            return;
        };
        let blocked = blocked_bits & p.block_bit != 0;
        let padding = pkt.payload.is_empty() || blocked;
        let ssrc = pkt.header.ssrc;
        let layer = if p.simulcast {
            match p.layer_of.get(&ssrc).copied().flatten() {
                Some(l) => l,
                None => {
                    self.counts.dropped_packets += 1;
                    return;
                }
            }
        } else if ssrc != p.media_ssrc {
            self.counts.dropped_packets += 1;
            return;
        } else {
            0
        };
        p.rx[layer].on_packet(ssrc, pkt.header.sequence_number);
        let now = Instant::now();
        let now_us = now.duration_since(self.epoch).as_micros() as u64;
        if let (false, Some(ext)) = (blocked, p.audio_level_id) {
            if let Some(level) = pkt
                .header
                .get_extension(ext)
                .and_then(|b| b.first().copied())
            {
                // Levels only feed the speaker's next tick: nothing to perform now.
                let _ = self
                    .core
                    .handle_audio_level(now, &p.room, &p.publisher, level);
            }
        }
        let keyframe = !padding
            && p.video
                .map(|c| starts_keyframe(c, &pkt.payload))
                .unwrap_or(true);
        let vp8 = (!padding && p.video == Some(VideoCodec::Vp8)).then(|| vp8_ids(&pkt.payload));
        if !padding {
            p.last_in_us[layer] = Some(now_us);
        }
        if keyframe && p.video.is_some() {
            p.keyframes_in[layer] = p.keyframes_in[layer].wrapping_add(1);
            p.last_keyframe_us[layer] = Some(now_us);
        }
        let asked = std::mem::take(&mut p.keyframe_wanted);
        let pin = PacketIn {
            layer,
            ssrc,
            seq: pkt.header.sequence_number,
            timestamp: pkt.header.timestamp,
            payload_type: pkt.header.payload_type,
            keyframe,
            padding,
            vp8,
        };
        let mut want_keyframe: u8 = 0;
        if let (Some(tap), Some(rec)) = (p.rec.as_mut(), self.recorder.as_ref()) {
            let asked = std::mem::take(&mut tap.keyframe_wanted);
            let step = tap.fwd.on_packet(&pin, true, asked, now_us);
            want_keyframe |= step.keyframe_layers;
            if blocked && p.video.is_some() {
                tap.gap = true;
            }
            if let Some((m, _)) = step.send {
                if std::mem::take(&mut tap.gap) {
                    rec.send(RecMsg::Gap { key: id });
                }
                let map = (ssrc, m.timestamp.wrapping_sub(pkt.header.timestamp));
                if tap.report_map != Some(map) {
                    tap.report_map = Some(map);
                    tap.source = tap.source.wrapping_add(1);
                    rec.send(RecMsg::Source {
                        key: id,
                        source: tap.source,
                    });
                }
                let pkt = RecPacket {
                    seq: m.seq,
                    timestamp: m.timestamp,
                    marker: pkt.header.marker,
                    payload: pkt.payload.clone(),
                };
                if rec.packet(id, self.wall_epoch_us + now_us, pkt) {
                    self.counts.recorded_packets += 1;
                } else {
                    self.counts.record_dropped += 1;
                }
            }
        }
        let capture = p
            .capture_id
            .and_then(|id| pkt.header.get_extension(id))
            .and_then(|b| CaptureExt::new(&b));
        let kind = usize::from(p.video.is_some());
        // Video: kept once for retransmissions, which each subscriber's ring names by number.
        // Padding and held-back packets are never forwarded: they take no slot.
        let source = match p.payloads.as_mut() {
            Some(r) if !padding => r.put(&pkt.payload),
            _ => NO_PAYLOAD,
        };
        for i in 0..p.subs.len() {
            let Some(sub) = self.subs.get_mut(&p.subs[i]) else {
                continue;
            };
            let Some(dst) = self.sessions[sub.slot]
                .as_mut()
                .filter(|d| d.id == sub.session)
            else {
                continue;
            };
            let connected = dst.connected;
            let mine = connected && sub.fwd.ready && std::mem::take(&mut sub.keyframe_wanted);
            let step = sub.fwd.on_packet(&pin, connected, asked || mine, now_us);
            want_keyframe |= step.keyframe_layers;
            if step.keyframe_layers != 0 {
                sub.stats.keyframe_wishes = sub.stats.keyframe_wishes.wrapping_add(1);
            }
            if step.switched {
                sub.stats.switches = sub.stats.switches.wrapping_add(1);
                if p.simulcast {
                    self.counts.layer_switches += 1;
                }
            }
            if step.dropped {
                sub.stats.dropped = sub.stats.dropped.wrapping_add(1);
                self.counts.dropped_packets += 1;
            }
            let Some((m, renumbered)) = step.send else {
                continue;
            };
            let sent = SentPacket {
                seq: m.seq,
                timestamp: m.timestamp,
                marker: pkt.header.marker,
                payload_type: m.payload_type,
                source,
                vp8: renumbered,
                capture: capture.and_then(|c| Some((dst.capture_out[kind]?, c))),
            };
            let len = pkt.payload.len() as u64 + 12;
            let ok = send_rtp(
                dst,
                sub.slot,
                &mut self.dirty,
                &mut sub.roc,
                &sent,
                &pkt.payload,
                m.ssrc,
                self.rx_at,
                &mut self.counts.forward_delay,
            );
            // Numbered and remembered as forwarded either way: one the socket refused is
            // asked for again (NACK) and sent from the ring.
            if let Some(ring) = sub.sent.as_mut() {
                ring.put(sent);
            }
            if ok {
                dst.sent_bytes += len;
                if p.video.is_some() {
                    // Video only: the NACKed share of the downlink estimate is taken of what a
                    // NACK can name (audio is never NACKed; counting it halved a 640 px
                    // viewer's measured loss and let the "link's own loss" finding lapse).
                    dst.sent_packets += 1;
                }
                sub.report.packets = sub.report.packets.wrapping_add(1);
                sub.report.octets = sub.report.octets.wrapping_add(pkt.payload.len() as u32);
                sub.report.last = Some((m.timestamp, now));
                sub.stats.forwarded += 1;
                sub.stats.last_forwarded_us = Some(now_us);
                self.counts.forwarded_packets += 1;
                self.counts.forwarded_bytes += len;
            } else {
                sub.stats.dropped = sub.stats.dropped.wrapping_add(1);
                self.counts.dropped_packets += 1;
            }
        }
        if p.video.is_none() || (want_keyframe == 0 && p.pacer.idle()) {
            return;
        }
        let (simulcast, ssrcs, media_ssrc) = (p.simulcast, p.layer_ssrcs, p.media_ssrc);
        let ssrc_of = |l: usize| {
            if simulcast {
                ssrcs[l]
            } else {
                (l == 0).then_some(media_ssrc)
            }
        };
        let ask = p
            .pacer
            .on_packet(want_keyframe, |l| ssrc_of(l).is_some(), now_us / 1000);
        if ask == 0 {
            return;
        }
        for l in (0..LAYERS).filter(|l| ask & (1 << l) != 0) {
            p.keyframes_asked[l] = p.keyframes_asked[l].wrapping_add(1);
        }
        let (receiver, pub_slot) = (p.receiver, p.slot);
        let plis: Vec<Box<dyn rtc::rtcp::Packet>> = (0..LAYERS)
            .filter(|l| ask & (1 << l) != 0)
            .filter_map(ssrc_of)
            .map(|media_ssrc| {
                self.metrics.keyframe_requests.inc();
                Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                }) as Box<dyn rtc::rtcp::Packet>
            })
            .collect();
        if let Some(s) = self.sessions[pub_slot].as_mut() {
            if let Some(mut r) = s.pc.rtp_receiver(receiver) {
                let _ = r.write_rtcp(now, plis);
            }
        }
        // Sent when the publisher's session is drained (we are inside it, or flush it now).
        self.flush(pub_slot);
    }

    /// A publisher's sender report (it names the SSRC it is about, whatever track webrtc-rs
    /// routed it to): to the recorder, when that SSRC is what a recording of its track takes.
    fn sender_report(&mut self, slot: usize, sr: &SenderReport) {
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        let Some(rec) = self.recorder.as_ref() else {
            return;
        };
        let now_us = self.epoch.elapsed().as_micros() as u64;
        for &id in s.published.values() {
            let Some(tap) = self.tracks.get_mut(&id).and_then(|p| p.rec.as_mut()) else {
                continue;
            };
            let Some((ssrc, add)) = tap.report_map else {
                continue;
            };
            if ssrc != sr.ssrc
                || tap
                    .last_report_us
                    .is_some_and(|t| now_us.saturating_sub(t) < REPORT_EVERY_US)
            {
                continue;
            }
            tap.last_report_us = Some(now_us);
            rec.send(RecMsg::SenderReport {
                key: id,
                at_us: self.wall_epoch_us + now_us,
                ntp_us: ntp_us(sr.ntp_time),
                rtp_ts: sr.rtp_time.wrapping_add(add),
                source: tap.source,
            });
        }
    }

    /// RTCP from a subscriber about one of our local tracks: keyframe requests to the publisher,
    /// receiver reports and NACKs into the core.
    fn feedback(&mut self, slot: usize, track: &str, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
        if self.recorder.is_some() {
            for sr in packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
            {
                self.sender_report(slot, sr);
            }
        }
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        let Some(&sub_id) = s.sending.get(track) else {
            return;
        };
        let (room, peer, session) = (s.room.clone(), s.peer.clone(), s.id);
        let (sent_bytes, sent_packets) = (s.sent_bytes, s.sent_packets);
        let now = Instant::now();
        // Back after an outage? The core asks for keyframes (`SubKeyframe`). Video RTCP only: a
        // viewer getting no video (tiles hidden, cameras off) sends only audio reports, seconds
        // apart, which would read as an outage each time.
        let video = self
            .subs
            .get(&sub_id)
            .and_then(|s| self.tracks.get(&s.track))
            .is_some_and(|p| p.video.is_some());
        if video {
            let _ = self.core.handle_input(
                now,
                Input::Heard {
                    room: room.clone(),
                    peer: peer.clone(),
                    session,
                },
            );
        }
        let mut repair = false;
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let (mut lost, mut blocks) = (0u32, 0u32);
        for pkt in &packets {
            let any = pkt.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                repair = true;
                if let Some(s) = self.subs.get_mut(&sub_id) {
                    s.stats.plis = s.stats.plis.wrapping_add(1);
                }
                let track = self.subs.get(&sub_id).map(|s| s.track);
                if let Some(p) = track.and_then(|t| self.tracks.get_mut(&t)) {
                    p.keyframe_wanted = true;
                }
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                for block in &rr.reports {
                    lost += block.fraction_lost as u32;
                    blocks += 1;
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                repair = true;
                let Some(sub) = self.subs.get_mut(&sub_id) else {
                    continue;
                };
                if nack.media_ssrc != sub.fwd.rewriter.out_ssrc() {
                    continue;
                }
                let pairs = nack.nacks.iter().map(|n| (n.packet_id, n.lost_packets));
                let seqs: Vec<u16> = nacked_seqs(pairs)
                    .filter(|q| sub.fwd.forwarded.contains(*q))
                    .collect();
                if sub.fwd.forwarded.stale_nack(seqs.iter().copied(), now_ms) {
                    sub.keyframe_wanted = true;
                }
                // Sent again from the ring, as first sent (same number: no RTX negotiated),
                // with the payload its track still keeps.
                if let (Some(ring), Some(dst), Some(payloads)) = (
                    sub.sent.as_ref(),
                    self.sessions[sub.slot]
                        .as_mut()
                        .filter(|d| d.id == sub.session),
                    self.tracks
                        .get(&sub.track)
                        .and_then(|t| t.payloads.as_ref()),
                ) {
                    let ssrc = sub.fwd.rewriter.out_ssrc();
                    for q in &seqs {
                        // Nothing from before a keyframe sent since (see `worth_resending`).
                        if !sub.fwd.forwarded.worth_resending(*q) {
                            continue;
                        }
                        let Some((p, payload)) = ring
                            .get(*q)
                            .and_then(|p| Some((p, payloads.get(p.source)?)))
                        else {
                            continue;
                        };
                        if send_rtp(
                            dst,
                            sub.slot,
                            &mut self.dirty,
                            &mut sub.roc,
                            p,
                            payload,
                            ssrc,
                            self.rx_at,
                            &mut self.counts.forward_delay,
                        ) {
                            self.counts.retransmitted_packets += 1;
                        }
                    }
                }
                let _ = self.core.handle_input(
                    now,
                    Input::Nacked {
                        room: room.clone(),
                        peer: peer.clone(),
                        session,
                        ssrc: nack.media_ssrc,
                        seqs,
                    },
                );
            }
        }
        if repair {
            // Its next ones are answered at once ([`may_wait`]).
            if let Some(s) = self.sessions[slot].as_mut() {
                s.awake_until = Some(now + AWAKE_FOR);
            }
            self.place(slot, now);
        }
        if let Some(mean) = lost.checked_div(blocks) {
            let before = self.core.downlink(&room, &peer);
            let _ = self.core.handle_input(
                now,
                Input::ReceiverReport {
                    room: room.clone(),
                    peer: peer.clone(),
                    session,
                    fraction_lost: mean as u8,
                    bytes_sent: sent_bytes,
                    packets_sent: sent_packets,
                },
            );
            if let (Some((b, _)), Some((a, loss))) = (before, self.core.downlink(&room, &peer)) {
                if a < b - 1.0 {
                    let loss_pct = (loss * 100.0).round();
                    tracing::info!(
                        room,
                        participant = peer,
                        loss_pct,
                        estimate_bps = a as u64,
                        "downlink estimate lowered"
                    );
                }
            }
        }
        self.perform();
    }

    // ---- the core's outputs ----

    /// Starts recording a published track (the recorder thread with the first one).
    fn record_track(&mut self, room: String, track: TrackId, recording: String) {
        let Some(p) = self.tracks.get(&track) else {
            return;
        };
        let codec = match (p.kind.is_audio(), p.video) {
            (true, _) => RecCodec::Opus,
            (false, Some(VideoCodec::Vp8)) => RecCodec::Vp8,
            (false, _) => {
                tracing::warn!(room, participant = %p.publisher, codec = %p.codec.mime_type,
                    "a track in a codec the recorder does not write is not recorded");
                return;
            }
        };
        if self.recorder.is_none() {
            let Some((cmds, waker)) = self.to_self.clone() else {
                return;
            };
            let keyframe = Box::new(move |track: u64| {
                if cmds.send(Cmd::RecordKeyframe { track }).is_ok() {
                    let _ = waker.wake();
                }
            });
            let uploads = self.uploads.clone();
            let done = Box::new(
                move |path: &std::path::Path, _: &crate::record::SegmentSummary| {
                    if let Some(u) = &uploads {
                        u.send(path.to_path_buf());
                    }
                },
            );
            match crate::record::spawn(
                self.cfg.record_dir.clone(),
                self.cfg.id.clone(),
                (self.epoch, self.wall_epoch_us),
                keyframe,
                done,
            ) {
                Ok(r) => self.recorder = Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "the recorder thread did not start");
                    return;
                }
            }
        }
        let Some(p) = self.tracks.get_mut(&track) else {
            return;
        };
        let top = if p.simulcast { LAYERS - 1 } else { 0 };
        let mut fwd = SubForward::new(
            Some(top),
            p.simulcast,
            p.video.is_some(),
            0,
            codec.clock_rate(),
        );
        fwd.ready = true;
        fwd.rewriter
            .set_negotiated(Negotiated::new().map_all_payload_types_to(0)); // the recorder reads none
        p.rec = Some(Box::new(RecTap {
            fwd,
            keyframe_wanted: false,
            gap: false,
            report_map: None,
            source: 0,
            last_report_us: None,
        }));
        let msg = RecMsg::Track {
            key: track,
            recording,
            room,
            participant: p.publisher.clone(),
            kind: p.kind.name(),
            codec,
        };
        if let Some(r) = &self.recorder {
            r.send(msg);
        }
    }

    /// The core's rooms ([`SfuCore::describe`]) with this worker's forwarding state added: per
    /// member its session (connected, sent), per reception its [`SubForward`] and counts, per
    /// published video its keyframes in and asked for, per layer. For the control API
    /// (`GET /v1/rooms`), which failing end-to-end tests print.
    fn describe(&self) -> serde_json::Value {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let ago = |t: Option<u64>| t.map(|t| now_us.saturating_sub(t) / 1000);
        let mut rooms = self.core.describe();
        let Some(rooms_map) = rooms.as_object_mut() else {
            return rooms;
        };
        for (room, members) in rooms_map.iter_mut() {
            for m in members.as_array_mut().into_iter().flatten() {
                let peer = m["id"].as_str().unwrap_or_default().to_string();
                let session = self
                    .members
                    .get(&(room.clone(), peer))
                    .and_then(|&slot| self.sessions[slot].as_ref());
                if let Some(d) = session {
                    m["session"] = serde_json::json!({
                        "connected": d.connected,
                        "remote": d.remote.map(|a| a.to_string()),
                        "srtp": d.srtp.is_some(),
                        "sent_video_packets": d.sent_packets,
                        "sent_bytes": d.sent_bytes,
                    });
                }
                for sub in m["subs"].as_array_mut().into_iter().flatten() {
                    let Some(x) = sub["id"].as_u64().and_then(|id| self.subs.get(&id)) else {
                        continue;
                    };
                    sub["forward"] = x.fwd.describe(now_us);
                    sub["stats"] = serde_json::json!({
                        "since_ms_ago": ago(x.stats.since_us),
                        "forwarded": x.stats.forwarded,
                        "last_forwarded_ms_ago": ago(x.stats.last_forwarded_us),
                        "switches": x.stats.switches,
                        "plis": x.stats.plis,
                        "keyframe_wishes": x.stats.keyframe_wishes,
                        "dropped": x.stats.dropped,
                    });
                }
                for t in m["tracks"].as_array_mut().into_iter().flatten() {
                    let Some(p) = t["id"].as_u64().and_then(|id| self.tracks.get(&id)) else {
                        continue;
                    };
                    t["simulcast"] = p.simulcast.into();
                    t["layer_ssrcs"] = serde_json::json!(p.layer_ssrcs);
                    t["keyframes_in"] = serde_json::json!(p.keyframes_in);
                    t["last_keyframe_ms_ago"] = serde_json::json!(p.last_keyframe_us.map(ago));
                    t["keyframes_asked"] = serde_json::json!(p.keyframes_asked);
                }
            }
        }
        rooms
    }

    fn perform(&mut self) {
        self.perform_outputs();
        self.core_next = self.core.poll_timeout();
    }

    fn perform_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            if self.stopping
                && matches!(
                    out,
                    Output::Renegotiate { .. } | Output::SendOffer { .. } | Output::Event(_)
                )
            {
                continue;
            }
            match out {
                Output::Event(event) => {
                    if matches!(event, SfuEvent::PublishLayers { .. }) {
                        self.metrics.dynacast_updates.inc();
                    }
                    let _ = self.out.send(Outward::Event(event));
                }
                Output::RoomGone { room } => {
                    let _ = self.out.send(Outward::RoomGone(room));
                }
                Output::RecordTrack {
                    room,
                    track,
                    recording,
                } => self.record_track(room, track, recording),
                Output::RecordTrackEnd { track, .. } => {
                    if let Some(p) = self.tracks.get_mut(&track) {
                        if p.rec.take().is_some() {
                            if let Some(r) = &self.recorder {
                                r.send(RecMsg::EndTrack { key: track });
                            }
                        }
                    }
                }
                Output::RecordingEnd { room, recording } => {
                    if let Some(r) = &self.recorder {
                        r.send(RecMsg::End { recording, room });
                    }
                }
                Output::SetWant { sub, want, .. } => {
                    if let Some(s) = self.subs.get_mut(&sub) {
                        if s.fwd.want().is_none() && want.is_some() {
                            // Shown again: it waits for a keyframe from now.
                            s.stats.since_us = Some(self.epoch.elapsed().as_micros() as u64);
                        }
                        s.fwd.set_want(want);
                    }
                }
                Output::Keyframe { track, .. } => {
                    if let Some(p) = self.tracks.get_mut(&track) {
                        p.keyframe_wanted = true;
                    }
                }
                Output::SubKeyframe { sub, .. } => {
                    if let Some(s) = self.subs.get_mut(&sub) {
                        s.keyframe_wanted = true;
                    }
                }
                Output::Subscribe {
                    room,
                    sub,
                    subscriber,
                    session,
                    track,
                    want,
                } => self.subscribe(room, sub, &subscriber, session, track, want),
                Output::Unsubscribe {
                    sub,
                    track,
                    remove_track,
                    ..
                } => {
                    if let Some(p) = self.tracks.get_mut(&track) {
                        p.subs.retain(|s| *s != sub);
                    }
                    if let Some(s) = self.subs.remove(&sub) {
                        if let Some(d) =
                            self.sessions[s.slot].as_mut().filter(|d| d.id == s.session)
                        {
                            d.sending.retain(|_, v| *v != sub);
                            if remove_track {
                                let _ = d.pc.remove_track(s.sender);
                            }
                        }
                    }
                }
                Output::Renegotiate {
                    room,
                    peer,
                    session,
                } => self.renegotiate(&room, &peer, session),
                Output::SendOffer {
                    room,
                    peer,
                    session,
                    generation,
                    unanswered,
                } => {
                    if unanswered > 0 {
                        tracing::warn!(
                            room,
                            participant = peer,
                            generation,
                            copy = unanswered,
                            "no answer to our offer: sending it again"
                        );
                    }
                    let sdp = self
                        .session_of(&room, &peer, session)
                        .and_then(|s| s.offer.as_ref())
                        .filter(|(g, _)| *g == generation)
                        .map(|(_, sdp)| sdp.clone());
                    match sdp {
                        Some(sdp) => {
                            let _ = self.out.send(Outward::Offer {
                                room,
                                peer,
                                session,
                                generation,
                                sdp,
                            });
                        }
                        None => {
                            let _ = self.core.handle_input(
                                Instant::now(),
                                Input::OfferNotDelivered {
                                    room,
                                    peer,
                                    session,
                                    generation,
                                    worth_retrying: false,
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    fn session_of(&mut self, room: &str, peer: &str, session: u64) -> Option<&mut Session> {
        let slot = *self.members.get(&(room.to_string(), peer.to_string()))?;
        self.sessions[slot].as_mut().filter(|s| s.id == session)
    }

    fn subscribe(
        &mut self,
        room: String,
        sub: SubId,
        subscriber: &str,
        session: u64,
        track: TrackId,
        want: Option<usize>,
    ) {
        let slot = self
            .members
            .get(&(room.clone(), subscriber.to_string()))
            .copied();
        let (Some(slot), Some(p)) = (slot, self.tracks.get(&track)) else {
            let _ = self
                .core
                .handle_input(Instant::now(), Input::SubscribeFailed { room, sub });
            return;
        };
        let Some(d) = self.sessions[slot].as_mut().filter(|d| d.id == session) else {
            let _ = self
                .core
                .handle_input(Instant::now(), Input::SubscribeFailed { room, sub });
            return;
        };
        let ssrc = rand_ssrc();
        let kind = p.kind;
        let encoding = RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: p.codec.clone(),
            ..Default::default()
        };
        let stream = kind.stream_id(&p.publisher);
        let track_id = format!("{}-{}", p.publisher, kind.name());
        let local = MediaStreamTrack::new(
            stream.clone(),
            track_id.clone(),
            format!("{} {}", p.publisher, kind.name()),
            if kind.is_audio() {
                RtpCodecKind::Audio
            } else {
                RtpCodecKind::Video
            },
            vec![encoding.clone()],
        );
        // Always a new sendonly transceiver: `add_track` would reuse the participant's own
        // publishing transceiver of the same kind, which its browser never receives on.
        let added = d.pc.add_transceiver_from_track(
            local,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![stream],
                send_encodings: vec![encoding],
            }),
        );
        let t = match added {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(subscriber, error = %e, "add_transceiver_from_track failed");
                let _ = self
                    .core
                    .handle_input(Instant::now(), Input::SubscribeFailed { room, sub });
                return;
            }
        };
        d.sending.insert(track_id, sub);
        let video = p.video.is_some();
        let fwd = SubForward::new(want, p.simulcast, video, ssrc, p.codec.clock_rate);
        self.subs.insert(
            sub,
            Sub {
                slot,
                session,
                track,
                sender: RTCRtpSenderId::from(t),
                transceiver: t,
                keyframe_wanted: false,
                sent: video.then(SentRing::new),
                report: SendReport::default(),
                roc: Roc::default(),
                fwd,
                stats: SubStats::default(),
            },
        );
        if let Some(p) = self.tracks.get_mut(&track) {
            p.subs.push(sub);
        }
    }

    /// Makes an offer for a session and sends it through the edge.
    fn renegotiate(&mut self, room: &str, peer: &str, session: u64) {
        let now = Instant::now();
        let made = match self.session_of(room, peer, session) {
            None => return,
            Some(s) => (|| {
                let offer = s.pc.create_offer(None)?;
                s.pc.set_local_description(now, offer)?;
                Ok::<_, rtc::shared::error::Error>(
                    s.pc.local_description().map(|d| d.sdp).unwrap_or_default(),
                )
            })(),
        };
        let sdp = match made {
            Ok(sdp) => sdp,
            Err(e) => {
                tracing::warn!(room, participant = peer, error = %e, "could not make an offer");
                let _ = self.core.handle_input(
                    now,
                    Input::OfferNotMade {
                        room: room.into(),
                        peer: peer.into(),
                        session,
                    },
                );
                return;
            }
        };
        let Ok(generation) = self.core.offer_made(now, room, peer, session) else {
            return;
        };
        if let Some(s) = self.session_of(room, peer, session) {
            s.offer = Some((generation, sdp.clone()));
        }
        // One line per renegotiation (not per packet): with "answer applied" below, a
        // participant left without a new track shows which half never came.
        let m_lines = sdp.matches("\r\nm=").count();
        tracing::info!(room, participant = peer, generation, m_lines, "offer sent");
        let _ = self.out.send(Outward::Offer {
            room: room.into(),
            peer: peer.into(),
            session,
            generation,
            sdp,
        });
    }

    // ---- commands ----

    fn command(&mut self, cmd: Cmd) {
        self.rx_at = udp_batch::realtime_now();
        match cmd {
            Cmd::Offer {
                room,
                peer,
                sdp,
                blocked,
                scope,
                reply,
            } => {
                let r = self.offer(&room, &peer, sdp, blocked, scope);
                let _ = reply.send(r);
            }
            Cmd::Probe { sdp, reply } => {
                let r = self.probe(sdp);
                let _ = reply.send(r);
            }
            Cmd::Answer {
                room,
                peer,
                sdp,
                generation,
                reply,
            } => {
                let r = self.answer(&room, &peer, sdp, generation);
                let _ = reply.send(r);
            }
            Cmd::Views {
                room,
                peer,
                views,
                reply,
            } => {
                let r = self
                    .core
                    .handle_input(
                        Instant::now(),
                        Input::Views {
                            room,
                            peer: peer.clone(),
                            views,
                        },
                    )
                    .map_err(|_| MediaError::UnknownParticipant(peer));
                self.perform();
                let _ = reply.send(r);
            }
            Cmd::Record {
                room,
                version,
                recording,
                reply,
            } => {
                let _ = self.core.handle_input(
                    Instant::now(),
                    Input::Record {
                        room,
                        version,
                        recording,
                    },
                );
                self.perform();
                let _ = reply.send(Ok(()));
            }
            Cmd::RecordKeyframe { track } => {
                if let Some(tap) = self.tracks.get_mut(&track).and_then(|p| p.rec.as_mut()) {
                    tap.keyframe_wanted = true;
                }
            }
            Cmd::Scopes {
                room,
                version,
                scopes,
                reply,
            } => {
                let _ = self.core.handle_input(
                    Instant::now(),
                    Input::Scopes {
                        room,
                        version,
                        scopes,
                    },
                );
                self.perform();
                let _ = reply.send(Ok(()));
            }
            Cmd::Block {
                room,
                peer,
                bits,
                reply,
            } => {
                let slot = self.members.get(&(room.clone(), peer.clone())).copied();
                let Some(s) = slot.and_then(|slot| self.sessions[slot].as_mut()) else {
                    let _ = reply.send(Err(MediaError::UnknownParticipant(peer)));
                    return;
                };
                if s.blocked != bits {
                    tracing::info!(
                        room,
                        participant = peer,
                        blocked = bits,
                        "media blocked by a host"
                    );
                }
                s.blocked = bits;
                let _ = self
                    .core
                    .handle_input(Instant::now(), Input::Block { room, peer, bits });
                self.perform();
                let _ = reply.send(Ok(()));
            }
            Cmd::Leave {
                room,
                peer,
                why,
                reply,
            } => {
                self.end(&room, &peer, None, &why);
                let _ = reply.send(());
            }
            Cmd::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Cmd::Core(input) => {
                let _ = self.core.handle_input(Instant::now(), input);
                self.perform();
            }
            Cmd::Stop => {}
        }
    }

    fn bind(&mut self) -> Result<(Sockets, SocketAddr), MediaError> {
        let (lo, hi) = self.cfg.udp_ports;
        let span = (hi - lo) as u32 + 1;
        for _ in 0..span.min(64) {
            let port = lo as u32 + (self.next_port - lo as u32) % span;
            self.next_port = self.next_port.wrapping_add(1);
            let addr = SocketAddr::new(self.cfg.media_ip, port as u16);
            if let Ok((rx, tx)) = udp_batch::bind_split(addr) {
                // For the forwarding delay metric; without it the delay starts at the read.
                let _ = udp_batch::enable_rx_timestamps(rx.as_raw_fd());
                let rx = UdpSocket::from_std(rx);
                return Ok((Sockets { rx, tx }, addr));
            }
        }
        Err(MediaError::NoPort(lo, hi))
    }

    fn build_pc(&self, local: SocketAddr, now: Instant) -> Result<RTCPeerConnection, MediaError> {
        let mut me = media_engine()?;
        // rtc's defaults without the sender-report interceptor and the NACK responder: what is
        // forwarded never goes through rtc's sender pipeline, so its reports would name no
        // packets (the engine sends its own, [`Worker::tick`]) and the responder's send buffers
        // (1,024 packets, ~115 KB, per outgoing video stream: over 1 MB per participant in a
        // room of ten) would stay empty — NACKs from subscribers are answered from
        // [`SentRing`]. NACK feedback is offered for video by `media_engine` already; the
        // generator NACKs what publishers lose.
        let registry =
            Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
        configure_simulcast_extension_headers(&mut me).map_err(webrtc_err)?;
        let registry = configure_twcc_receiver_only(registry, &mut me).map_err(webrtc_err)?;
        let registry = registry
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(Slot::from(14_000), RtcpToApplication::feedback());
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED_AFTER),
                Some(ICE_FAILED_AFTER),
                Some(Duration::from_secs(2)),
            )
            .build();
        let _ = local;
        RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(webrtc_err)
    }

    /// A socket from the port range and a PeerConnection that answered `desc` (closed again if it
    /// could not): what a participant's session and a connection check's both start with.
    fn answer_offer(
        &mut self,
        desc: RTCSessionDescription,
        now: Instant,
    ) -> Result<(Sockets, SocketAddr, RTCPeerConnection, String), MediaError> {
        let (socket, local) = self.bind()?;
        let mut pc = self.build_pc(local, now)?;
        let answer = (|| {
            pc.set_remote_description(now, desc)
                .map_err(|e| MediaError::BadSdp(e.to_string()))?;
            let answer = pc.create_answer(None).map_err(webrtc_err)?;
            pc.set_local_description(now, answer).map_err(webrtc_err)?;
            add_host_candidate(&mut pc, local).map_err(webrtc_err)?;
            pc.local_description()
                .map(|d| d.sdp)
                .ok_or_else(|| MediaError::Webrtc("no local description".into()))
        })();
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close();
                return Err(e);
            }
        };
        Ok((socket, local, pc, answer))
    }

    fn offer(
        &mut self,
        room: &str,
        peer: &str,
        sdp: String,
        blocked: u8,
        scope: u32,
    ) -> Result<String, MediaError> {
        let layout = crate::offer::parse(&sdp);
        let desc =
            RTCSessionDescription::offer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let key = (room.to_string(), peer.to_string());
        if !self.shared_has_room(room) && self.draining.load(Ordering::SeqCst) {
            return Err(MediaError::Draining);
        }
        // Capacity is the SFU's, over every worker.
        let count = self.shared.admitted.load(Ordering::SeqCst);
        if count as u32 >= self.cfg.capacity && !self.members.contains_key(&key) {
            return Err(MediaError::Full(self.cfg.capacity));
        }
        let now = Instant::now();
        let (socket, local, mut pc, answer) = self.answer_offer(desc, now)?;
        // A new participant takes its place now (the check above is only the early answer).
        let new_member = !self.members.contains_key(&key);
        if new_member && !self.shared.admit(self.cfg.capacity as usize) {
            let _ = pc.close();
            return Err(MediaError::Full(self.cfg.capacity));
        }
        let session = self.next_session;
        self.next_session += 1;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        let mut socket = socket;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket.rx, Token(slot), Interest::READABLE)
        {
            // Nothing changed: a session it had goes on.
            self.free.push(slot);
            if new_member {
                self.shared.release();
            }
            let _ = pc.close();
            return Err(webrtc_err(e));
        }
        // A session it had before ends (the core replaces it on `Join`).
        if let Some(old) = self.members.get(&key).copied() {
            self.close_slot(old);
        }
        self.sessions[slot] = Some(Session {
            id: session,
            room: room.into(),
            peer: peer.into(),
            pc,
            socket,
            local,
            next: Some(now),
            connected: false,
            remote: None,
            tick_at: now + TICK,
            // Nothing is sent to it before it answers one of our offers.
            capture_out: [None; 2],
            layout,
            blocked,
            sent_bytes: 0,
            sent_packets: 0,
            offer: None,
            queue: OutQueue::default(),
            srtp: None,
            probe: None,
            srtp_refused: false,
            refused: 0,
            published: HashMap::new(),
            waits: false,
            awake_until: None,
            unmoved: false,
            sending: HashMap::new(),
        });
        self.members.insert(key, slot);
        self.rooms_changed();
        let _ = self.core.handle_input(
            now,
            Input::Join {
                room: room.into(),
                peer: peer.into(),
                session,
                blocked,
                scope,
            },
        );
        self.perform();
        tracing::info!(room, participant = peer, "media session started");
        let _ = self.core.handle_input(
            now,
            Input::AnswerSent {
                room: room.into(),
                peer: peer.into(),
                session,
            },
        );
        self.perform();
        self.drain(slot);
        Ok(answer)
    }

    /// A connection check's session: ICE, DTLS and rtc's receive pipeline (its congestion
    /// feedback is what the page's upload estimate comes from), nothing else — no member, no room,
    /// no track published, nothing forwarded; closed after [`PROBE_LIFETIME`], or once ICE
    /// consent lapses (the page closed it or went away: 5 s). At most [`PROBES_PER_WORKER`] at once; none on a draining SFU.
    fn probe(&mut self, sdp: String) -> Result<String, MediaError> {
        if self.draining.load(Ordering::SeqCst) || self.stopping {
            return Err(MediaError::Draining);
        }
        if self.probes >= PROBES_PER_WORKER {
            return Err(MediaError::Busy(
                "too many connection checks at once on this media server; try again in a few seconds".into(),
            ));
        }
        let desc =
            RTCSessionDescription::offer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let now = Instant::now();
        let (mut socket, local, mut pc, answer) = self.answer_offer(desc, now)?;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket.rx, Token(slot), Interest::READABLE)
        {
            self.free.push(slot);
            let _ = pc.close();
            return Err(webrtc_err(e));
        }
        let id = self.next_session;
        self.next_session += 1;
        self.sessions[slot] = Some(Session {
            id,
            room: String::new(),
            peer: format!("probe-{id}"),
            pc,
            socket,
            local,
            next: Some(now),
            connected: false,
            remote: None,
            tick_at: now + TICK,
            capture_out: [None; 2],
            layout: crate::offer::OfferLayout::default(),
            blocked: 0,
            sent_bytes: 0,
            sent_packets: 0,
            offer: None,
            queue: OutQueue::default(),
            srtp: None,
            probe: Some(Probe {
                until: now + PROBE_LIFETIME,
                connect_by: now
                    + Duration::from_millis(
                        edgemeet_shared::netcheck::PATH_TIMEOUT_MS as u64 + 2_000,
                    ),
                bytes: 0,
            }),
            srtp_refused: false,
            refused: 0,
            published: HashMap::new(),
            waits: false,
            awake_until: None,
            unmoved: false,
            sending: HashMap::new(),
        });
        self.probes += 1;
        self.metrics.probes.inc();
        self.metrics.probe_sessions.inc();
        self.drain(slot);
        Ok(answer)
    }

    /// A connection check's session ends.
    fn close_probe(&mut self, slot: usize) {
        if self.sessions[slot]
            .as_ref()
            .is_some_and(|s| s.probe.is_some())
        {
            self.close_slot(slot);
            self.probes = self.probes.saturating_sub(1);
            self.metrics.probe_sessions.dec();
        }
    }

    fn shared_has_room(&self, room: &str) -> bool {
        self.members.keys().any(|(r, _)| r == room)
    }

    fn answer(
        &mut self,
        room: &str,
        peer: &str,
        sdp: String,
        generation: u64,
    ) -> Result<(), MediaError> {
        let slot = self
            .members
            .get(&(room.to_string(), peer.to_string()))
            .copied()
            .ok_or_else(|| MediaError::UnknownParticipant(peer.into()))?;
        let capture_out = crate::offer::parse(&sdp).capture_ids;
        let desc =
            RTCSessionDescription::answer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let Some(s) = self.sessions[slot].as_mut() else {
            return Err(MediaError::UnknownParticipant(peer.into()));
        };
        let session = s.id;
        let fit = self.core.answer_fit(room, peer, session, generation);
        if !crate::media::apply_answer(fit, room, peer, generation)? {
            return Ok(());
        }
        let applied = s.pc.set_remote_description(Instant::now(), desc);
        if applied.is_ok() {
            s.capture_out = capture_out;
            tracing::info!(room, participant = peer, "answer applied");
            self.mark_ready(slot);
        }
        let _ = self.core.handle_input(
            Instant::now(),
            Input::Answered {
                room: room.into(),
                peer: peer.into(),
                session,
                ok: applied.is_ok(),
            },
        );
        self.perform();
        self.drain(slot);
        applied.map_err(|e| MediaError::BadSdp(e.to_string()))
    }

    /// After a negotiation: receptions not yet flowing learn their payload type and start (at
    /// the next keyframe, asked for).
    fn mark_ready(&mut self, slot: usize) {
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        let connected = s.connected;
        for id in s.sending.values() {
            let Some(sub) = self.subs.get_mut(id) else {
                continue;
            };
            if sub.fwd.ready {
                continue;
            }
            // Not in a description the browser has answered yet (added while our offer was out):
            // it starts with the next answer.
            let negotiated =
                s.pc.rtp_transceiver(sub.transceiver)
                    .is_some_and(|t| t.mid().is_some());
            if !negotiated {
                continue;
            }
            let Some(p) = self.tracks.get(&sub.track) else {
                continue;
            };
            let Some(mut sender) = s.pc.rtp_sender(sub.sender) else {
                continue;
            };
            let pt = sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec
                        .mime_type
                        .eq_ignore_ascii_case(&p.codec.mime_type)
                })
                .map(|c| c.payload_type);
            let Some(pt) = pt else {
                tracing::warn!(subscriber = %s.peer, mime = %p.codec.mime_type, "codec not negotiated with subscriber");
                continue;
            };
            sub.fwd
                .rewriter
                .set_negotiated(Negotiated::new().map_all_payload_types_to(pt));
            sub.fwd.ready = true;
        }
        if connected {
            self.keyframes_for(slot);
        }
    }

    /// Ends a participant's session (`session`: only if it is still that one).
    fn end(&mut self, room: &str, peer: &str, session: Option<u64>, why: &str) {
        let key = (room.to_string(), peer.to_string());
        let Some(&slot) = self.members.get(&key) else {
            return;
        };
        let current = self.sessions[slot]
            .as_ref()
            .filter(|s| s.room == room && s.peer == peer)
            .map(|s| s.id);
        let Some(id) = current else {
            // Its slot holds no session of its (cannot happen: a member's slot is freed only
            // with it); forget it all the same.
            self.members.remove(&key);
            self.shared.release();
            let _ = self.core.handle_input(
                Instant::now(),
                Input::Leave {
                    room: room.into(),
                    peer: peer.into(),
                    session: None,
                },
            );
            self.rooms_changed();
            self.perform();
            return;
        };
        if session.is_some_and(|s| s != id) {
            return;
        }
        self.members.remove(&key);
        self.shared.release();
        let _ = self.core.handle_input(
            Instant::now(),
            Input::Leave {
                room: room.into(),
                peer: peer.into(),
                session: Some(id),
            },
        );
        self.close_slot(slot);
        self.rooms_changed();
        tracing::info!(room, participant = peer, why, "media session ended");
        self.perform();
    }

    /// Closes the session in `slot` and forgets its tracks (the core was told, or is told next).
    fn close_slot(&mut self, slot: usize) {
        let Some(mut s) = self.sessions[slot].take() else {
            return;
        };
        // Counted as forwarded when queued, never sent: dropped.
        self.counts.dropped_packets += s.refused + s.queue.len() as u64;
        let _ = s.pc.close();
        while let Some(out) = s.pc.poll_write() {
            s.socket.send_to(&out.message, out.transport.peer_addr);
        }
        if s.waits {
            self.waiting_count -= 1;
            let _ = self.waiting.registry().deregister(&mut s.socket.rx);
        } else {
            let _ = self.poll.registry().deregister(&mut s.socket.rx);
        }
        for id in s.published.values() {
            // A recorded track's file ends with it (the core's RecordTrackEnd for it comes after
            // the track is gone from here).
            if self.tracks.remove(id).is_some_and(|p| p.rec.is_some()) {
                if let Some(r) = &self.recorder {
                    r.send(RecMsg::EndTrack { key: *id });
                }
            }
        }
        self.free.push(slot);
    }

    fn rooms_changed(&self) {
        let mut rooms: HashMap<String, usize> = HashMap::new();
        for (room, _) in self.members.keys() {
            *rooms.entry(room.clone()).or_default() += 1;
        }
        *self.shared.worker(self.index) = rooms;
        // The gauges count every worker's.
        let all_rooms: usize = (0..self.shared.rooms.len())
            .map(|k| self.shared.worker(k).len())
            .sum();
        self.metrics.rooms.set(all_rooms as i64);
        self.metrics
            .participants
            .set(self.shared.participants() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connected_viewer_with_nothing_to_repair_waits_for_a_turn() {
        let now = Instant::now() + Duration::from_secs(60);
        // A viewer: connected, publishing nothing, no repair asked.
        assert!(may_wait(true, false, false, None, now));
        // Still connecting: the join goes at full speed.
        assert!(!may_wait(false, false, false, None, now));
        // Publishing: its media is what turns are for.
        assert!(!may_wait(true, true, false, None, now));
        // A connection check.
        assert!(!may_wait(true, false, true, None, now));
        // Just connected, or a NACK or picture loss a moment ago (awake for AWAKE_FOR from
        // then): read at once until that has passed.
        let asked = now - Duration::from_millis(300);
        assert!(!may_wait(true, false, false, Some(asked + AWAKE_FOR), now));
        let asked = now - AWAKE_FOR + Duration::from_millis(1);
        assert!(!may_wait(true, false, false, Some(asked + AWAKE_FOR), now));
        let asked = now - AWAKE_FOR;
        assert!(may_wait(true, false, false, Some(asked + AWAKE_FOR), now));
    }

    #[test]
    fn waiting_sockets_are_judged_busy_by_their_datagrams_a_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut load = WaitLoad::new(t0);
        // 30 in the first second: not busy (and not judged before a second has passed).
        load.read(30);
        assert!(!load.judge(t0 + ms(500), true));
        assert!(!load.judge(t0 + ms(1_000), true));
        // 80 in the next 1.5 s: 53 a second, busy.
        load.read(80);
        assert!(!load.judge(t0 + ms(1_500), true), "judged once a second");
        assert!(load.judge(t0 + ms(2_500), true));
        // Stays busy until judged again; then 40 in 2 s (20 a second): not.
        load.read(40);
        assert!(load.judge(t0 + ms(3_000), true));
        assert!(!load.judge(t0 + ms(4_500), true));
        // Busy again, then nobody waits: not busy, and what was counted is forgotten.
        load.read(200);
        assert!(load.judge(t0 + ms(5_500), true));
        load.read(500);
        assert!(!load.judge(t0 + ms(5_600), false));
        assert!(!load.judge(t0 + ms(6_600), true));
    }

    #[test]
    fn waiting_sockets_are_asked_on_a_clock_only_when_that_wakes_the_thread_less() {
        // A turn every 20 ms is 50 a second: fewer datagrams than that wake it one by one.
        assert!(!waiting_is_busy(0));
        assert!(!waiting_is_busy(9)); // six viewers' reports and consent checks
        assert!(!waiting_is_busy(50));
        assert!(waiting_is_busy(51));
        assert!(waiting_is_busy(350)); // a hundred viewers'
    }

    #[test]
    fn timers_with_slack_wake_the_thread_only_once_it_runs_out_and_together() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Nothing to wait for: no wake-up.
        assert_eq!(wake_at(std::iter::empty()), None);
        // A connected session's tick due at 5 ms waits for a turn until 25 ms.
        assert_eq!(
            wake_at([(t0 + ms(5), TIMER_SLACK)].into_iter()),
            Some(t0 + ms(25))
        );
        // One without slack (a join's ICE check, the core's timers) due before then wakes the
        // thread at its own time; the tick then runs in that turn.
        assert_eq!(
            wake_at([(t0 + ms(5), TIMER_SLACK), (t0 + ms(12), Duration::ZERO)].into_iter()),
            Some(t0 + ms(12))
        );
        // Lazy timers due at 5, 9 and 24 ms: one wake-up at 25 ms runs the first two (and the
        // third if due by then); not three.
        assert_eq!(
            wake_at(
                [
                    (t0 + ms(24), TIMER_SLACK),
                    (t0 + ms(9), TIMER_SLACK),
                    (t0 + ms(5), TIMER_SLACK)
                ]
                .into_iter()
            ),
            Some(t0 + ms(25))
        );
        // One overdue already wakes at once at most its slack late.
        assert_eq!(
            wake_at([(t0, TIMER_SLACK)].into_iter()),
            Some(t0 + TIMER_SLACK)
        );
    }

    #[test]
    fn a_room_always_lives_on_the_same_worker_and_rooms_spread() {
        assert_eq!(worker_of("standup", 2), worker_of("standup", 2));
        assert_eq!(worker_of("anything", 1), 0);
        let on_first = (0..1000)
            .filter(|i| worker_of(&format!("room-{i}"), 2) == 0)
            .count();
        assert!(
            (400..600).contains(&on_first),
            "{on_first} of 1000 on worker 0"
        );
        assert!((0..1000).all(|i| worker_of(&format!("r{i}"), 3) < 3));
    }

    #[test]
    fn tags_are_grouped_by_sha1_blocks_keeping_every_one() {
        // A fan-out's copies: per session a frame's full packets and its shorter last one,
        // an audio packet, and one far longer than any bucket.
        let mut refs = Vec::new();
        for slot in 0..40 {
            for (k, len) in [1_200, 1_200, 1_200, 433, 160].into_iter().enumerate() {
                refs.push((len + slot % 3, slot, k));
            }
        }
        refs.push((9_000, 99, 0));
        let mut out = vec![(7, 7, 7)];
        by_sha1_blocks(&refs, &mut out);
        let blocks = |len: usize| (len + 13).div_ceil(64);
        assert_eq!(out.len(), refs.len());
        assert!(
            out.windows(2).all(|w| blocks(w[0].0) <= blocks(w[1].0)),
            "ordered by block count"
        );
        let (mut a, mut b) = (refs.clone(), out.clone());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "the same tags, each once");
        assert_eq!(out.last(), Some(&(9_000, 99, 0)));
        // Equal lengths end up side by side: a group of sixteen lanes of 1,200-byte packets
        // holds nothing shorter.
        let full: Vec<_> = out.iter().filter(|r| r.0 >= 1_200).collect();
        assert_eq!(full.len(), 121);
        assert!(out[out.len() - 121..].iter().all(|r| r.0 >= 1_200));
    }

    #[test]
    fn a_payload_is_found_by_its_number_until_a_later_one_takes_its_place() {
        let mut ring = PayloadRing::new(4);
        let ids: Vec<u64> = (0..6u8)
            .map(|i| ring.put(&bytes::Bytes::from(vec![i; 3])))
            .collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5], "numbers only grow");
        assert_eq!(ring.get(5).map(|b| &b[..]), Some(&[5u8; 3][..]));
        assert_eq!(ring.get(2).map(|b| &b[..]), Some(&[2u8; 3][..]));
        // 0 and 1 were replaced by 4 and 5, which share their slots.
        assert!(ring.get(0).is_none() && ring.get(1).is_none());
        assert!(ring.get(6).is_none(), "not put yet");
    }

    #[test]
    fn a_sent_packet_is_found_by_its_number_until_a_later_one_takes_its_place() {
        let mut ring = SentRing::new();
        let p = |seq| SentPacket {
            seq,
            timestamp: 0,
            marker: false,
            payload_type: 96,
            source: 0,
            vp8: None,
            capture: None,
        };
        ring.put(p(65_535));
        ring.put(p(0));
        assert!(ring.get(65_535).is_some() && ring.get(0).is_some());
        assert!(ring.get(1).is_none());
        ring.put(p((65_535u32 + SENT_RING as u32) as u16));
        assert!(
            ring.get(65_535).is_none(),
            "overwritten by a number a ring later"
        );
    }

    #[test]
    fn the_last_place_goes_to_one_worker_only() {
        let shared = Arc::new(Shared {
            rooms: vec![Mutex::new(HashMap::new()), Mutex::new(HashMap::new())],
            admitted: std::sync::atomic::AtomicUsize::new(0),
        });
        // Two threads race for 100 places of 1,000 asked.
        let taken: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let shared = shared.clone();
                    s.spawn(move || (0..500).filter(|_| shared.admit(100)).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100);
        shared.release();
        assert!(shared.admit(100), "a place freed is taken again");
        assert!(!shared.admit(100));
        for _ in 0..200 {
            shared.release(); // never below zero
        }
        assert_eq!(shared.admitted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn ntp_time_counts_from_1900() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_500);
        let n = ntp(t);
        assert_eq!(n >> 32, 2_208_988_801);
        assert_eq!(n & 0xffff_ffff, 1 << 31);
    }
}
