//! The media shell: webrtc-rs PeerConnections, one per participant, and the per-track forwarding
//! loop. What is decided about rooms (who receives what at which layer, dynacast, the speaker,
//! downlink estimates) comes from the pure [`SfuCore`]: this module feeds it inputs, performs its
//! outputs per room in order (a room's effect task), and runs its timers. Per-packet decisions
//! (layer switches, header rewriting, keyframe pacing) come from the pure cores in
//! [`crate::fanout`], [`crate::forward`] and [`crate::codec`].
//!
//! # Lifetimes and the close cascade
//! - A **room** exists while it has a participant; the last one leaving removes it.
//! - A **participant** (`Peer`) is created by its first offer and lives until the edge says it left
//!   (`DELETE …/participants/{id}`), or its PeerConnection fails or closes (ICE consent lost: no
//!   answer to keep-alives for [`ICE_FAILED_AFTER`]), or the SFU shuts down.
//! - Removing a participant: (1) it leaves the room map, so nobody subscribes to it again; (2) the
//!   core's `Leave` decides: each track it published comes off every subscriber (`Unsubscribe`,
//!   then `Renegotiate` for each of them), its own receptions come off the publishers' fan-out;
//!   (3) its tracks and receptions stop being forwarded at once and its PeerConnection is closed,
//!   which ends the remote tracks, which ends their forwarding loops; (4) the room's effect task
//!   performs the core's outputs (transceivers removed, new offers sent).
//!
//! # Hot path
//! One task per published track reads its packets and writes each to every subscriber's local track.
//! Per packet and subscriber: one uncontended mutex (the subscriber's rewriter), no allocation in our
//! code (the payload is shared, the header has no extensions) except a VP8 payload copy for a
//! subscriber that has switched layers (its picture numbers are rewritten), no log line. The fan-out list is
//! copy-on-write (`RwLock<Arc<Vec<_>>>`, cloned once per packet, never held across a send).
//! webrtc-rs's own `write_rtp` adds a channel hop into the subscriber's PeerConnection driver; see
//! ARCHITECTURE.md for the plan to drive `rtc` directly once that shows in the load figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use edgemeet_shared::protocol::{ErrorCode, SfuEvent, TileView};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use thiserror::Error;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;
use webrtc::runtime::Runtime;

use crate::codec::{starts_keyframe, vp8_ids, vp8_set_ids, VideoCodec};
use crate::downlink::nacked_seqs;
use crate::edge_link::EdgeLink;
use crate::fanout::{KeyframePacer, PacketIn, SubForward};
use crate::forward::Negotiated;
use crate::layers::LAYERS;
use crate::metrics::Metrics;
use crate::offer::{OfferLayout, TrackKind};
use crate::rtcp_up::RtcpToApplication;
use crate::sfu_core::{block_bit, AnswerFit, CoreError, Input, Output, SfuCore, SubId, TrackId};
pub use crate::sfu_core::{BLOCK_AUDIO, BLOCK_SCREEN, BLOCK_VIDEO};

/// Locks a mutex also after a panic poisoned it. A panic takes the SFU out of service (see
/// `main.rs`): it then only drains — its sessions are removed and closed as the edge moves its
/// rooms, and audio keeps flowing meanwhile — so a lock a panic left poisoned must not turn every
/// later call into another panic (a poisoned room map once made each leave fail and the drain last
/// its full time limit).
trait LockAnyway<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> LockAnyway<T> for Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The same for the fan-out lists' read-write locks.
trait RwAnyway<T> {
    fn read_anyway(&self) -> std::sync::RwLockReadGuard<'_, T>;
    fn write_anyway(&self) -> std::sync::RwLockWriteGuard<'_, T>;
}

impl<T> RwAnyway<T> for RwLock<T> {
    fn read_anyway(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn write_anyway(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// ICE consent: a PeerConnection whose peer stops answering is "disconnected" after this…
pub const ICE_DISCONNECTED_AFTER: Duration = Duration::from_secs(5);
/// …and failed (freed) after this.
pub const ICE_FAILED_AFTER: Duration = Duration::from_secs(15);
/// Longest wait for our own ICE candidates before answering without them.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Payload types this SFU offers to subscribers (what Chrome uses by default, too).
const PT_OPUS: u8 = 111;
const PT_VP8: u8 = 96;
const PT_H264: u8 = 102;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("the session description could not be used: {0}")]
    BadSdp(String),
    #[error("no offer from this SFU is waiting for an answer")]
    NoOfferPending,
    #[error("participant {0} has no media session on this SFU")]
    UnknownParticipant(String),
    #[error("this SFU is draining and takes no new rooms")]
    Draining,
    #[error("this SFU is full ({0} participants)")]
    Full(u32),
    #[error("no UDP port free in {0}-{1}")]
    NoPort(u16, u16),
    #[error("webrtc: {0}")]
    Webrtc(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Busy(String),
}

impl MediaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MediaError::BadSdp(_) | MediaError::NoOfferPending => ErrorCode::BadSdp,
            MediaError::UnknownParticipant(_) => ErrorCode::NotFound,
            MediaError::Draining | MediaError::Full(_) | MediaError::NoPort(..) => {
                ErrorCode::NoMediaServer
            }
            MediaError::Webrtc(_) => ErrorCode::MediaServerError,
            MediaError::Unsupported(_) => ErrorCode::BadRequest,
            MediaError::Busy(_) => ErrorCode::TooManyRequests,
        }
    }
}

/// Whether a shell applies `participant`'s answer numbered `generation`, from the core's
/// [`AnswerFit`]: `Ok(true)` apply it; `Ok(false)` leave it (logged; an answer to an older
/// offer would pair the wrong descriptions, and nothing went wrong for the person); an error
/// when no offer of ours waits. Both engines answer through it.
pub(crate) fn apply_answer(
    fit: AnswerFit,
    room: &str,
    participant: &str,
    generation: u64,
) -> Result<bool, MediaError> {
    match fit {
        AnswerFit::Apply => Ok(true),
        AnswerFit::NoneAwaited => Err(MediaError::NoOfferPending),
        AnswerFit::Stale => {
            tracing::info!(
                room,
                participant,
                generation,
                "answer to an older offer ignored"
            );
            Ok(false)
        }
    }
}

fn webrtc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Webrtc(e.to_string())
}

/// What the media shell needs from the SFU's configuration.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub media_ip: std::net::IpAddr,
    pub udp_ports: (u16, u16),
    pub capacity: u32,
    pub edge_url: Option<String>,
    pub control_secret: String,
    /// This SFU's id, named in offers and events so a room can tell them from another SFU's.
    pub id: String,
    /// Where recordings are written (the sans engine records; see `record`).
    pub record_dir: std::path::PathBuf,
}

pub struct Media {
    cfg: MediaConfig,
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    /// The webrtc-rs side of each room. Lock order: `core`, then `rooms`, then a room's maps.
    rooms: Mutex<HashMap<String, Arc<RoomMedia>>>,
    /// Every room's media decisions (pure: [`SfuCore`]); its outputs are performed per room, in
    /// order, by each room's effect task.
    core: Mutex<SfuCore>,
    core_running: AtomicBool,
    core_wake: Arc<tokio::sync::Notify>,
    next_port: AtomicU32,
    next_session: std::sync::atomic::AtomicU64,
    draining: AtomicBool,
    epoch: Instant,
    me: Weak<Media>,
    /// Offers and events to the edge.
    edge: Arc<EdgeLink>,
}

impl Drop for Media {
    fn drop(&mut self) {
        // The core's timer waits on this: woken, it finds the SFU gone and ends.
        self.core_wake.notify_one();
    }
}

/// The webrtc-rs objects of one room (what is decided about them lives in the core).
struct RoomMedia {
    name: String,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Published tracks, by the core's id.
    tracks: Mutex<HashMap<TrackId, Arc<Published>>>,
    /// Receptions, by the core's id.
    subs: Mutex<HashMap<SubId, Arc<SubTrack>>>,
    /// The core's outputs for this room, performed in order by [`Media::perform_effects`].
    effects: tokio::sync::mpsc::UnboundedSender<Output>,
}

struct Peer {
    /// Distinguishes this session from an earlier one of the same participant.
    session: u64,
    /// DTLS is up: media sent to it now arrives.
    connected: Arc<AtomicBool>,
    id: String,
    room: String,
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    /// Serialises what changes its session description (our answer to its offer, our offers, its
    /// answers): held across those webrtc-rs calls. Whether an offer is due is the core's call.
    pc_ops: tokio::sync::Mutex<()>,
    /// Our newest offer to it (generation, SDP), kept for a resend the core asks for.
    offer: Mutex<Option<(u64, String)>>,
    closed: AtomicBool,
    /// What its offer said about its tracks.
    layout: OfferLayout,
    /// What a host stopped ([`BLOCK_AUDIO`] | [`BLOCK_VIDEO`] | [`BLOCK_SCREEN`]): not forwarded.
    /// Shared with its published tracks' forwarding loops (one atomic load per packet).
    blocked: Arc<AtomicU8>,
    /// Bytes forwarded to it so far (for the downlink estimate).
    sent: Arc<std::sync::atomic::AtomicU64>,
    /// Packets forwarded to it so far (the share it NACKs is its loss before repair).
    sent_packets: Arc<std::sync::atomic::AtomicU64>,
}

struct Published {
    id: TrackId,
    publisher: String,
    /// The publisher's session it came in.
    session: u64,
    room: String,
    track: TrackKind,
    kind: &'static str,
    /// Sent as simulcast (rids): packets are told apart by SSRC → layer.
    simulcast: bool,
    /// SSRC of each simulcast layer once seen (for keyframe requests).
    layer_ssrcs: Mutex<[Option<u32>; LAYERS]>,
    /// Microphone: where its RFC 6464 audio level is, for the active speaker.
    audio_level_id: Option<u8>,
    codec: RTCRtpCodec,
    video: Option<VideoCodec>,
    media_ssrc: u32,
    subscribers: RwLock<Arc<Vec<Arc<SubTrack>>>>,
    keyframe_wanted: AtomicBool,
    /// The publisher's blocked bits, and which of them stops this track.
    blocked: Arc<AtomicU8>,
    block_bit: u8,
}

struct SubTrack {
    id: SubId,
    subscriber: String,
    /// The subscriber's session, and its PeerConnection (where the transceiver was added).
    session: u64,
    pc: Arc<dyn PeerConnection>,
    /// The subscriber's forwarded-bytes counter.
    sent: Arc<std::sync::atomic::AtomicU64>,
    /// The subscriber's forwarded-packets counter.
    sent_packets: Arc<std::sync::atomic::AtomicU64>,
    /// The subscriber's PeerConnection is connected.
    connected: Arc<AtomicBool>,
    /// This subscriber needs a keyframe of the layer it receives (its decoder cannot go on).
    keyframe_wanted: AtomicBool,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// What is decided per packet for it (pure: [`SubForward`]).
    state: Mutex<SubForward>,
}

fn kind_name(kind: RtpCodecKind) -> &'static str {
    match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    }
}

pub(crate) fn offered_pt(mime: &str) -> Option<u8> {
    let m = mime.to_ascii_lowercase();
    if m == MIME_TYPE_OPUS.to_ascii_lowercase() {
        Some(PT_OPUS)
    } else if m == MIME_TYPE_VP8.to_ascii_lowercase() {
        Some(PT_VP8)
    } else if m == MIME_TYPE_H264.to_ascii_lowercase() {
        Some(PT_H264)
    } else {
        None
    }
}

/// `track`'s first RTP packet (waited for until the track ends) and its codec: the packet's
/// payload type as our current answer to `pc` names it (parsed by rtc's SDP crate), as this SFU
/// registered that codec (`media_engine`). The packet is handed back to be forwarded: for video
/// it starts a keyframe.
async fn codec_of_first_packet(
    pc: &Arc<dyn PeerConnection>,
    track: &Arc<dyn TrackRemote>,
) -> Option<(RTCRtpCodec, rtp::Packet)> {
    let first = loop {
        match track.poll().await? {
            TrackRemoteEvent::OnRtpPacket(p) => break p,
            TrackRemoteEvent::OnEnded => return None,
            _ => continue,
        }
    };
    let answer = pc.current_local_description().await?.unmarshal().ok()?;
    let named = answer
        .get_codec_for_payload_type(first.header.payload_type)
        .ok()?;
    Some((registered_codec(&named.name)?, first))
}

/// The codec this SFU registered (`media_engine`) by its name in an SDP (`VP8`, `opus`).
fn registered_codec(name: &str) -> Option<RTCRtpCodec> {
    codec_table()
        .into_iter()
        .map(|(c, _)| c.rtp_codec)
        .find(|c| {
            c.mime_type
                .rsplit('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
}

/// The codecs this SFU registers (`media_engine`), with their kinds.
fn codec_table() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let video_fb = || {
        vec![
            RTCPFeedback {
                typ: "goog-remb".into(),
                parameter: "".into(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "".into(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
        ]
    };
    let codecs = [
        (
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            PT_OPUS,
            RtpCodecKind::Audio,
            vec![],
        ),
        (
            MIME_TYPE_VP8,
            90_000,
            0,
            "",
            PT_VP8,
            RtpCodecKind::Video,
            video_fb(),
        ),
        (
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            PT_H264,
            RtpCodecKind::Video,
            video_fb(),
        ),
    ];
    codecs
        .into_iter()
        .map(|(mime, clock_rate, channels, fmtp, pt, kind, fb)| {
            (
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: mime.to_string(),
                        clock_rate,
                        channels,
                        sdp_fmtp_line: fmtp.to_string(),
                        rtcp_feedback: fb,
                    },
                    payload_type: pt,
                },
                kind,
            )
        })
        .collect()
}

pub(crate) fn media_engine() -> Result<MediaEngine, MediaError> {
    let mut me = MediaEngine::default();
    for (codec, kind) in codec_table() {
        me.register_codec(codec, kind).map_err(webrtc_err)?;
    }
    // Audio levels (RFC 6464) for the active speaker: webrtc-rs does not negotiate it by default.
    me.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )
    .map_err(webrtc_err)?;
    // (After audio levels: their id stays what it was.) Absolute capture time, forwarded as it came (receivers show how old a frame is).
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: crate::offer::ABS_CAPTURE_TIME_URI.to_owned(),
            },
            kind,
            None,
        )
        .map_err(webrtc_err)?;
    }
    Ok(me)
}

struct PeerHandler {
    media: Weak<Media>,
    room: String,
    peer: String,
    session: u64,
    gathered: watch::Sender<bool>,
    connected: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(room = %self.room, participant = %self.peer, %state, "connection state");
        if state == RTCPeerConnectionState::Connected
            && !self.connected.swap(true, Ordering::SeqCst)
        {
            // Packets sent before DTLS completes are dropped: only now can a keyframe reach it.
            if let Some(media) = self.media.upgrade() {
                media.request_keyframes_for(&self.room, &self.peer);
            }
        }
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            if let Some(media) = self.media.upgrade() {
                // Not from the driver loop (see `on_track`): ending a session touches other
                // participants' PeerConnections.
                let (room, peer, session) = (self.room.clone(), self.peer.clone(), self.session);
                tokio::spawn(async move {
                    media
                        .end_session(&room, &peer, session, &format!("PeerConnection {state}"))
                        .await
                });
            }
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // webrtc-rs calls this from the PeerConnection's driver loop, which handles nothing else
        // meanwhile — not even this participant's outgoing packets, on which other forwarding
        // loops wait. Subscribing others calls into *their* PeerConnections: do it elsewhere.
        if let Some(media) = self.media.upgrade() {
            let (room, peer, session) = (self.room.clone(), self.peer.clone(), self.session);
            tokio::spawn(async move { media.on_track(&room, &peer, session, track).await });
        }
    }
}

impl Media {
    pub fn new(cfg: MediaConfig, metrics: Arc<Metrics>) -> Arc<Media> {
        let runtime =
            webrtc::runtime::default_runtime().expect("webrtc built with its tokio runtime");
        let epoch = Instant::now();
        let edge = EdgeLink::new(
            cfg.edge_url.clone(),
            cfg.control_secret.clone(),
            cfg.id.clone(),
        );
        Arc::new_cyclic(|me| Media {
            next_port: AtomicU32::new(cfg.udp_ports.0 as u32),
            next_session: std::sync::atomic::AtomicU64::new(1),
            core: Mutex::new(SfuCore::new(
                epoch,
                crate::record::wall_us(),
                cfg.id.clone(),
            )),
            core_running: AtomicBool::new(false),
            core_wake: Arc::new(tokio::sync::Notify::new()),
            cfg,
            metrics,
            runtime,
            rooms: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            epoch,
            me: me.clone(),
            edge,
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn room(&self, name: &str) -> Option<Arc<RoomMedia>> {
        self.rooms.locked().get(name).cloned()
    }

    fn peer(&self, room: &str, id: &str) -> Option<Arc<Peer>> {
        self.room(room)?.peers.locked().get(id).cloned()
    }

    /// Participants with a media session in `room`.
    pub fn room_participants(&self, room: &str) -> usize {
        self.room(room).map(|r| r.peers.locked().len()).unwrap_or(0)
    }

    /// Names of the rooms with media here (also after a panic poisoned the lock).
    pub fn room_names(&self) -> Vec<String> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Also after a panic poisoned the locks (a failed SFU still drains).
    pub fn participant_count(&self) -> usize {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|r| {
                r.peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// For the panic test only (see `control::test_panic`).
    pub fn panic_holding_rooms_lock(&self) {
        let _rooms = self.rooms.lock();
        panic!("test panic while holding the room map");
    }

    fn update_gauges(&self) {
        let rooms = self.rooms.locked();
        self.metrics.rooms.set(rooms.len() as i64);
        self.metrics
            .participants
            .set(rooms.values().map(|r| r.peers.locked().len() as i64).sum());
    }

    /// Rooms and who is in them (for `/v1/rooms`, tests and operators).
    pub fn describe(&self) -> serde_json::Value {
        self.core.locked().describe()
    }

    /// Feeds the core, then hands what it decided to the rooms' effect tasks (under the core's
    /// lock, so effects keep the order in which they were decided).
    fn apply(&self, input: Input) -> Result<(), CoreError> {
        let mut core = self.core.locked();
        let before = core.poll_timeout();
        let result = core.handle_input(Instant::now(), input);
        self.dispatch(&mut core);
        let after = core.poll_timeout();
        drop(core);
        self.wake_core_if_sooner(before, after);
        result
    }

    /// Wakes the core's timer task when an input made its next deadline sooner.
    fn wake_core_if_sooner(&self, before: Option<Instant>, after: Option<Instant>) {
        if after.is_some_and(|a| before.is_none_or(|b| a < b)) {
            self.wake_core();
        }
    }

    fn dispatch(&self, core: &mut SfuCore) {
        while let Some(out) = core.poll_output() {
            let room = match &out {
                Output::Event(event) => {
                    match event {
                        SfuEvent::PublishLayers { .. } => {
                            self.metrics.dynacast_updates.inc();
                        }
                        SfuEvent::ActiveSpeaker {
                            room, participant, ..
                        } => tracing::debug!(room, speaker = ?participant, "active speaker"),
                        // (This engine feeds no uplink counts: it judges by the downlink.)
                        SfuEvent::Quality { .. } => {}
                    }
                    self.edge.push_event(event.clone());
                    continue;
                }
                Output::RoomGone { room } => {
                    // Nothing more to tell the edge about it.
                    self.edge.forget_room(room);
                    continue;
                }
                // This engine records nothing (it is never asked: see `MediaHandle::record`).
                Output::RecordTrack { .. }
                | Output::RecordTrackEnd { .. }
                | Output::RecordingEnd { .. } => continue,
                Output::SetWant { room, sub, want } => {
                    // At once (no PeerConnection call): a reception whose transceiver is still
                    // being added reads its wish under this same lock when it is inserted.
                    let s = self
                        .room(room)
                        .and_then(|r| r.subs.locked().get(sub).cloned());
                    if let Some(s) = s {
                        s.state.locked().set_want(*want);
                    }
                    continue;
                }
                Output::Keyframe { room, track } | Output::SubKeyframe { room, track, .. } => {
                    if let Some(p) = self
                        .room(room)
                        .and_then(|r| r.tracks.locked().get(track).cloned())
                    {
                        p.keyframe_wanted.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                Output::SendOffer {
                    room,
                    peer,
                    session,
                    generation,
                    unanswered,
                } => {
                    if *unanswered > 0 {
                        tracing::warn!(
                            room,
                            participant = peer,
                            generation,
                            copy = unanswered,
                            "no answer to our offer: sending it again"
                        );
                    }
                    let p = self
                        .peer(room, peer)
                        .filter(|p| p.session == *session && !p.closed.load(Ordering::SeqCst));
                    let Some(p) = p else { continue }; // its session is ending
                    let sdp = p
                        .offer
                        .locked()
                        .as_ref()
                        .filter(|(g, _)| g == generation)
                        .map(|(_, sdp)| sdp.clone());
                    match sdp {
                        Some(sdp) => self.spawn_send_offer(p, *generation, sdp),
                        // Not the offer kept (cannot happen while both change under this lock):
                        // give it up rather than leave the session waiting for it forever.
                        None => {
                            let _ = core.handle_input(
                                Instant::now(),
                                Input::OfferNotDelivered {
                                    room: room.clone(),
                                    peer: peer.clone(),
                                    session: *session,
                                    generation: *generation,
                                    worth_retrying: false,
                                },
                            );
                        }
                    }
                    continue;
                }
                Output::Subscribe { room, .. }
                | Output::Unsubscribe { room, .. }
                | Output::Renegotiate { room, .. } => room,
            };
            // A room already gone from here has no session left to act on.
            if let Some(r) = self.room(room) {
                let _ = r.effects.send(out);
            }
        }
    }

    /// Runs the core's timers (speaker ticks, dynacast warm-ups) for as long as the SFU runs.
    fn wake_core(&self) {
        if !self.core_running.swap(true, Ordering::SeqCst) {
            tokio::spawn(Self::drive_core(self.me.clone(), self.core_wake.clone()));
        }
        self.core_wake.notify_one();
    }

    async fn drive_core(me: Weak<Media>, wake: Arc<tokio::sync::Notify>) {
        loop {
            let next = {
                let Some(media) = me.upgrade() else { return };
                let mut core = media.core.locked();
                let now = Instant::now();
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    core.handle_timeout(now);
                    media.dispatch(&mut core);
                }
                core.poll_timeout()
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = wake.notified() => {}
                    }
                }
                None => wake.notified().await,
            }
        }
    }

    /// A room's effect task: performs the core's outputs for it one after another (a transceiver
    /// added before the offer that announces it, taken off after). Ends with the room.
    async fn perform_effects(
        me: Weak<Media>,
        room: Weak<RoomMedia>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Output>,
    ) {
        while let Some(out) = rx.recv().await {
            let (Some(media), Some(room)) = (me.upgrade(), room.upgrade()) else {
                continue;
            };
            media.perform(&room, out).await;
        }
    }

    async fn perform(&self, room: &Arc<RoomMedia>, out: Output) {
        match out {
            Output::Subscribe {
                sub,
                subscriber,
                session,
                track,
                ..
            } => self.subscribe(room, sub, &subscriber, session, track).await,
            Output::Unsubscribe {
                sub,
                track,
                remove_track,
                ..
            } => {
                let s = room.subs.locked().remove(&sub);
                let published = room.tracks.locked().get(&track).cloned();
                if let Some(p) = published {
                    let mut list = p.subscribers.write_anyway();
                    let next: Vec<Arc<SubTrack>> =
                        list.iter().filter(|s| s.id != sub).cloned().collect();
                    *list = Arc::new(next);
                }
                // Off the PeerConnection it was added to (that session's, whatever came since).
                if let (true, Some(s)) = (remove_track, s) {
                    let _ = slow("remove_track", s.pc.remove_track(&s.sender)).await;
                }
            }
            Output::Renegotiate { peer, session, .. } => {
                let peer = room.peers.locked().get(&peer).cloned();
                if let Some(peer) = peer.filter(|p| p.session == session) {
                    self.spawn_renegotiate(peer);
                }
            }
            // Done in `dispatch`.
            Output::SendOffer { .. }
            | Output::SetWant { .. }
            | Output::Keyframe { .. }
            | Output::SubKeyframe { .. }
            | Output::Event(_)
            | Output::RoomGone { .. }
            | Output::RecordTrack { .. }
            | Output::RecordTrackEnd { .. }
            | Output::RecordingEnd { .. } => {}
        }
    }

    async fn build_pc(
        &self,
        room: &str,
        peer: &str,
        session: u64,
    ) -> Result<
        (
            Arc<dyn PeerConnection>,
            watch::Receiver<bool>,
            Arc<AtomicBool>,
        ),
        MediaError,
    > {
        let (lo, hi) = self.cfg.udp_ports;
        let span = (hi - lo) as u32 + 1;
        let mut last_err = None;
        for _ in 0..span.min(64) {
            let port =
                lo as u32 + (self.next_port.fetch_add(1, Ordering::Relaxed) - lo as u32) % span;
            let mut me = media_engine()?;
            let registry =
                register_default_interceptors(Registry::new(), &mut me).map_err(webrtc_err)?;
            // Subscribers' keyframe requests, receiver reports and NACKs come up to us.
            let registry = registry.with(Slot::from(14_000), RtcpToApplication::feedback());
            let settings = SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                // No mDNS: a browser that hides its address behind a `.local` name still reaches
                // us (its checks make it a peer-reflexive candidate), and a server has no LAN to
                // ask. With it on, every session opened a multicast socket, which fails outright
                // where there is no multicast route (a network namespace with only loopback).
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                // The browser starts DTLS once *its* ICE side is ready; as client we would send a
                // ClientHello it may drop and wait ~200 ms for the retransmission.
                .with_answering_dtls_role(RTCDtlsRole::Server)
                .with_ice_timeouts(
                    Some(ICE_DISCONNECTED_AFTER),
                    Some(ICE_FAILED_AFTER),
                    Some(Duration::from_secs(2)),
                )
                .build();
            let (tx, rx) = watch::channel(false);
            let connected = Arc::new(AtomicBool::new(false));
            let handler = Arc::new(PeerHandler {
                media: self.me.clone(),
                room: room.into(),
                peer: peer.into(),
                session,
                gathered: tx,
                connected: connected.clone(),
            });
            let built = PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(me)
                .with_setting_engine(settings)
                .with_interceptor_registry(registry)
                .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
                .with_runtime(self.runtime.clone())
                .with_udp_addrs(vec![std::net::SocketAddr::new(
                    self.cfg.media_ip,
                    port as u16,
                )])
                .build()
                .await;
            match built {
                Ok(pc) => return Ok((Arc::new(pc), rx, connected)),
                Err(e) => last_err = Some(e.to_string()),
            }
        }
        tracing::warn!(error = ?last_err, "no UDP port could be bound");
        Err(MediaError::NoPort(lo, hi))
    }

    /// Our local description once ICE gathering finished (or after [`GATHER_TIMEOUT`]).
    async fn local_sdp(
        peer_pc: &Arc<dyn PeerConnection>,
        gathered: &watch::Receiver<bool>,
    ) -> Result<String, MediaError> {
        let mut g = gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, g.wait_for(|done| *done)).await;
        peer_pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Webrtc("no local description".into()))
    }

    /// A participant's offer starts a new media session (a browser offers once per PeerConnection;
    /// later renegotiations are ours). A session it had before is replaced. Returns our answer.
    /// `blocked`: what a host has stopped of theirs (not forwarded from the first packet).
    pub async fn offer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        blocked: u8,
        scope: u32,
    ) -> Result<String, MediaError> {
        let layout = crate::offer::parse(&sdp);
        let desc =
            RTCSessionDescription::offer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let new_room = self.room(room).is_none();
        if new_room && self.draining.load(Ordering::SeqCst) {
            return Err(MediaError::Draining);
        }
        if self.participant_count() as u32 >= self.cfg.capacity {
            return Err(MediaError::Full(self.cfg.capacity));
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (pc, gathered, connected) = self.build_pc(room, id, session).await?;
        let peer = Arc::new(Peer {
            session,
            connected,
            id: id.into(),
            room: room.into(),
            pc: pc.clone(),
            gathered,
            pc_ops: tokio::sync::Mutex::new(()),
            offer: Mutex::new(None),
            closed: AtomicBool::new(false),
            layout,
            blocked: Arc::new(AtomicU8::new(blocked)),
            sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            sent_packets: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        });
        // Hold its session description from before anyone can see this peer until our answer is
        // read.
        let ops = peer.pc_ops.lock().await;
        // Into the room's map and the core in one step (core, then rooms: the lock order), so
        // both agree on which session is current whatever else is under way.
        let placed = {
            let mut core = self.core.locked();
            let before = core.poll_timeout();
            let placed = {
                let mut rooms = self.rooms.locked();
                let r = rooms
                    .entry(room.to_string())
                    .or_insert_with(|| {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        let r = Arc::new(RoomMedia {
                            name: room.into(),
                            peers: Mutex::new(HashMap::new()),
                            tracks: Mutex::new(HashMap::new()),
                            subs: Mutex::new(HashMap::new()),
                            effects: tx,
                        });
                        tokio::spawn(Self::perform_effects(
                            self.me.clone(),
                            Arc::downgrade(&r),
                            rx,
                        ));
                        r
                    })
                    .clone();
                let mut peers = r.peers.locked();
                match peers.get(id) {
                    // A later offer of the same participant got here first: this one lost.
                    Some(newer) if newer.session > session => None,
                    _ => Some((peers.insert(id.to_string(), peer.clone()), r.clone())),
                }
            };
            if placed.is_some() {
                // The core ends the earlier session itself (its tracks leave everyone).
                let _ = core.handle_input(
                    Instant::now(),
                    Input::Join {
                        room: room.into(),
                        peer: id.into(),
                        session,
                        blocked,
                        scope,
                    },
                );
                self.dispatch(&mut core);
            }
            let after = core.poll_timeout();
            drop(core);
            self.wake_core_if_sooner(before, after);
            placed
        };
        let Some((old, r)) = placed else {
            drop(ops);
            let _ = pc.close().await;
            return Err(MediaError::Webrtc(
                "replaced by a newer offer from the same participant".into(),
            ));
        };
        if let Some(old) = old {
            self.close_peer(&r, old).await;
        }
        self.update_gauges();
        let result = async {
            pc.set_remote_description(desc)
                .await
                .map_err(|e| MediaError::BadSdp(e.to_string()))?;
            let answer = pc.create_answer(None).await.map_err(webrtc_err)?;
            pc.set_local_description(answer).await.map_err(webrtc_err)?;
            Self::local_sdp(&pc, &peer.gathered).await
        }
        .await;
        drop(ops);
        match result {
            Ok(answer) => {
                tracing::info!(room, participant = id, "media session started");
                // Everything already published in the room: subscribed and offered.
                let _ = self.apply(Input::AnswerSent {
                    room: room.into(),
                    peer: id.into(),
                    session,
                });
                Ok(answer)
            }
            Err(e) => {
                self.end_session(room, id, session, "its offer could not be answered")
                    .await;
                Err(e)
            }
        }
    }

    pub async fn answer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        generation: u64,
    ) -> Result<(), MediaError> {
        let peer = self
            .peer(room, id)
            .ok_or_else(|| MediaError::UnknownParticipant(id.into()))?;
        let desc =
            RTCSessionDescription::answer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        {
            let _ops = slow("pc_ops lock (answer)", peer.pc_ops.lock()).await;
            let fit = self
                .core
                .locked()
                .answer_fit(room, id, peer.session, generation);
            if !apply_answer(fit, room, id, generation)? {
                return Ok(());
            }
            let applied = slow("set_remote(answer)", peer.pc.set_remote_description(desc)).await;
            if applied.is_ok() {
                tracing::info!(room, participant = id, "answer applied");
                // Before the next offer may start (it waits for this lock and the core).
                self.mark_ready(&peer).await;
            }
            // Either way no offer waits any more: a change queued meanwhile gets a new one.
            let _ = self.apply(Input::Answered {
                room: room.into(),
                peer: id.into(),
                session: peer.session,
                ok: applied.is_ok(),
            });
            applied.map_err(|e| MediaError::BadSdp(e.to_string()))?;
        }
        Ok(())
    }

    /// After a negotiation: subscriptions not yet flowing learn their payload type and start (at
    /// the next keyframe, which we ask for).
    async fn mark_ready(&self, peer: &Arc<Peer>) {
        let Some(room) = self.room(&peer.room) else {
            return;
        };
        let subs: Vec<Arc<SubTrack>> = room
            .subs
            .locked()
            .values()
            .filter(|s| s.subscriber == peer.id && s.session == peer.session)
            .cloned()
            .collect();
        for sub in subs {
            if sub.state.locked().ready {
                continue;
            }
            let Ok(params) = slow("get_parameters", sub.sender.get_parameters()).await else {
                continue;
            };
            let codec = slow("codec", sub.local.codec(sub.ssrc)).await;
            let Some(codec) = codec else { continue };
            let Some(pt) = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
                .map(|c| c.payload_type)
            else {
                tracing::warn!(subscriber = %sub.subscriber, mime = %codec.mime_type, "codec not negotiated with subscriber");
                continue;
            };
            let mut st = sub.state.locked();
            st.rewriter
                .set_negotiated(Negotiated::new().map_all_payload_types_to(pt));
            st.ready = true;
        }
        self.request_keyframes_for(&peer.room, &peer.id);
    }

    /// Asks for a keyframe from every publisher whose track `subscriber` can now take: negotiated
    /// and connected (a keyframe asked for earlier would be dropped, and the next request is
    /// rate-limited, which once cost joins ~500 ms).
    fn request_keyframes_for(&self, room: &str, subscriber: &str) {
        let Some(room) = self.room(room) else { return };
        let tracks: Vec<Arc<Published>> = room.tracks.locked().values().cloned().collect();
        for p in tracks {
            if p.video.is_none() {
                continue;
            }
            let takes = p.subscribers.read_anyway().iter().any(|s| {
                s.subscriber == subscriber
                    && s.connected.load(Ordering::Relaxed)
                    && s.state.locked().ready
            });
            if takes {
                p.keyframe_wanted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Performs the core's `Subscribe`: adds the track to the subscriber's PeerConnection as a
    /// new send-only transceiver and into the track's fan-out.
    async fn subscribe(
        &self,
        room: &Arc<RoomMedia>,
        id: SubId,
        subscriber: &str,
        session: u64,
        track: TrackId,
    ) {
        let peer = room
            .peers
            .locked()
            .get(subscriber)
            .filter(|p| p.session == session && !p.closed.load(Ordering::SeqCst))
            .cloned();
        let published = room.tracks.locked().get(&track).cloned();
        let (Some(peer), Some(published)) = (peer, published) else {
            // Gone (or replaced) meanwhile: the core hears it, or already did and ignores this.
            let _ = self.apply(Input::SubscribeFailed {
                room: room.name.clone(),
                sub: id,
            });
            return;
        };
        let ssrc: u32 = rand_ssrc();
        let kind = if published.track.is_audio() {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let encoding = RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: published.codec.clone(),
            ..Default::default()
        };
        let stream = published.track.stream_id(&published.publisher);
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.clone(),
            format!("{}-{}", published.publisher, published.kind),
            format!("{} {}", published.publisher, published.kind),
            kind,
            vec![encoding.clone()],
        )));
        // Always a new sendonly transceiver: `add_track` would reuse the participant's own
        // publishing transceiver of the same kind, which its browser never receives on.
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream],
            send_encodings: vec![encoding],
        };
        let sender = peer
            .pc
            .add_transceiver_from_track(local.clone() as Arc<dyn TrackLocal>, Some(init));
        let sender = match slow("add_transceiver", sender).await {
            Ok(t) => match slow("sender", t.sender()).await {
                Ok(Some(s)) => Some(s),
                _ => {
                    tracing::warn!(subscriber = %peer.id, "new transceiver has no sender");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(subscriber = %peer.id, error = %e, "add_transceiver_from_track failed");
                None
            }
        };
        let Some(sender) = sender else {
            let _ = self.apply(Input::SubscribeFailed {
                room: room.name.clone(),
                sub: id,
            });
            return;
        };
        let sub = Arc::new(SubTrack {
            id,
            subscriber: peer.id.clone(),
            session,
            pc: peer.pc.clone(),
            sent: peer.sent.clone(),
            sent_packets: peer.sent_packets.clone(),
            connected: peer.connected.clone(),
            keyframe_wanted: AtomicBool::new(false),
            local: local.clone(),
            sender,
            ssrc,
            state: Mutex::new(SubForward::new(
                None,
                published.simulcast,
                published.video.is_some(),
                ssrc,
                published.codec.clock_rate,
            )),
        });
        // The layer wanted now, read and put in place under the core's lock (a `SetWant`
        // decided meanwhile is applied under it too). None: the reception ended while the
        // transceiver was being added, and the transceiver goes again.
        let placed = match self.core.locked().sub_want(&room.name, id) {
            Some(want) => {
                sub.state.locked().set_want(want);
                room.subs.locked().insert(id, sub.clone());
                true
            }
            None => false,
        };
        if !placed {
            let _ = slow("remove_track", peer.pc.remove_track(&sub.sender)).await;
            return;
        }
        {
            let mut list = published.subscribers.write_anyway();
            let mut next: Vec<Arc<SubTrack>> = list.as_ref().clone();
            next.push(sub.clone());
            *list = Arc::new(next);
        }
        // Keyframe requests from this subscriber go to the publisher; its receiver reports and
        // NACKs feed its downlink estimate (in the core).
        let p = Arc::downgrade(&published);
        let media = self.me.clone();
        let (room, subscriber) = (room.name.clone(), peer.id.clone());
        let epoch = self.epoch;
        let this = Arc::downgrade(&sub);
        self.runtime.spawn(Box::pin(async move {
            while let Some(evt) = local.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = evt else {
                    continue;
                };
                let (Some(p), Some(this), Some(media)) =
                    (p.upgrade(), this.upgrade(), media.upgrade())
                else {
                    break;
                };
                // Back after an outage? The core asks for keyframes (`SubKeyframe`). Video RTCP
                // only: a viewer getting no video sends only audio reports, seconds apart.
                if p.video.is_some() {
                    let _ = media.apply(Input::Heard {
                        room: room.clone(),
                        peer: subscriber.clone(),
                        session,
                    });
                }
                // Loss over all the streams the report covers (their mean).
                let (mut lost, mut blocks) = (0u32, 0u32);
                for pkt in &packets {
                    let any = pkt.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        p.keyframe_wanted.store(true, Ordering::Relaxed);
                    } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                        for block in &rr.reports {
                            lost += block.fraction_lost as u32;
                            blocks += 1;
                        }
                    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        // Only numbers forwarded to it: a gap the publisher's own loss left is
                        // asked for too, and is not this downlink's loss.
                        let pairs = nack.nacks.iter().map(|n| (n.packet_id, n.lost_packets));
                        let now_ms = epoch.elapsed().as_millis() as u64;
                        let (seqs, stale): (Vec<u16>, bool) = {
                            let st = this.state.locked();
                            let seqs: Vec<u16> = nacked_seqs(pairs)
                                .filter(|q| st.forwarded.contains(*q))
                                .collect();
                            let stale = st.forwarded.stale_nack(seqs.iter().copied(), now_ms);
                            (seqs, stale)
                        };
                        if stale {
                            // Its retransmission comes too late to help: a keyframe of the layer
                            // it receives does (the other subscribers' layers are left alone).
                            this.keyframe_wanted.store(true, Ordering::Relaxed);
                        }
                        let _ = media.apply(Input::Nacked {
                            room: room.clone(),
                            peer: subscriber.clone(),
                            session,
                            ssrc: nack.media_ssrc,
                            seqs,
                        });
                    }
                }
                if let Some(mean) = lost.checked_div(blocks) {
                    let before = media.core.locked().downlink(&room, &subscriber);
                    let _ = media.apply(Input::ReceiverReport {
                        room: room.clone(),
                        peer: subscriber.clone(),
                        session,
                        fraction_lost: mean as u8,
                        bytes_sent: this.sent.load(Ordering::Relaxed),
                        packets_sent: this.sent_packets.load(Ordering::Relaxed),
                    });
                    let after = media.core.locked().downlink(&room, &subscriber);
                    if let (Some((b, _)), Some((a, loss))) = (before, after) {
                        if a < b - 1.0 {
                            let loss_pct = (loss * 100.0).round();
                            tracing::info!(room = %room, participant = %subscriber, loss_pct, estimate_bps = a as u64, "downlink estimate lowered");
                        }
                    }
                }
            }
        }));
    }

    fn spawn_renegotiate(&self, peer: Arc<Peer>) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move { me.make_offer(peer).await });
    }

    /// Performs the core's `Renegotiate`: makes an offer (our local description, with its
    /// candidates) and sends it through the edge.
    async fn make_offer(&self, peer: Arc<Peer>) {
        let made = async {
            let _ops = peer.pc_ops.lock().await;
            if peer.closed.load(Ordering::SeqCst) {
                return Err(None);
            }
            let offer = slow("create_offer", peer.pc.create_offer(None))
                .await
                .map_err(|e| Some(format!("create_offer: {e}")))?;
            slow("set_local(offer)", peer.pc.set_local_description(offer))
                .await
                .map_err(|e| Some(format!("set_local_description(offer): {e}")))?;
            Self::local_sdp(&peer.pc, &peer.gathered)
                .await
                .map_err(|e| Some(format!("no local offer: {e}")))
        }
        .await;
        let sdp = match made {
            Ok(sdp) => sdp,
            Err(e) => {
                // None: the session is closing (nothing worth a warning).
                if let Some(e) = e {
                    tracing::warn!(room = %peer.room, participant = %peer.id, error = %e, "could not make an offer");
                }
                let _ = self.apply(Input::OfferNotMade {
                    room: peer.room.clone(),
                    peer: peer.id.clone(),
                    session: peer.session,
                });
                return;
            }
        };
        let generation = {
            let mut core = self.core.locked();
            match core.offer_made(Instant::now(), &peer.room, &peer.id, peer.session) {
                // Kept under the core's lock, so a resend the core asks for finds this one.
                Ok(g) => {
                    *peer.offer.locked() = Some((g, sdp.clone()));
                    g
                }
                Err(_) => return, // replaced or gone meanwhile: nothing to send
            }
        };
        // As the sans engine logs it: with "answer applied", which half of a renegotiation
        // never came.
        let m_lines = sdp.matches("\r\nm=").count();
        tracing::info!(room = %peer.room, participant = %peer.id, generation, m_lines, "offer sent");
        self.spawn_send_offer(peer, generation, sdp);
    }

    /// Posts offer `generation` to the edge and tells the core how it went (it asks for a resend
    /// with backoff while the failure may pass: see `negotiation.rs`).
    fn spawn_send_offer(&self, peer: Arc<Peer>, generation: u64, sdp: String) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let input = match me
                .edge
                .send_offer(&peer.room, &peer.id, sdp, generation)
                .await
            {
                Ok(()) => Input::OfferDelivered {
                    room: peer.room.clone(),
                    peer: peer.id.clone(),
                    session: peer.session,
                    generation,
                },
                Err(failure) => {
                    let again = failure.worth_retrying() && !peer.closed.load(Ordering::SeqCst);
                    tracing::warn!(room = %peer.room, participant = %peer.id, error = %failure, again, "could not deliver offer through the edge");
                    Input::OfferNotDelivered {
                        room: peer.room.clone(),
                        peer: peer.id.clone(),
                        session: peer.session,
                        generation,
                        worth_retrying: again,
                    }
                }
            };
            let _ = me.apply(input);
        });
    }

    /// A track arrived from `publisher`'s session `session`: the core fans it out to everyone else
    /// in the room, and its forwarding loop starts.
    async fn on_track(
        &self,
        room: &str,
        publisher: &str,
        session: u64,
        track: Arc<dyn TrackRemote>,
    ) {
        let Some(peer) = self.peer(room, publisher).filter(|p| p.session == session) else {
            return; // a session replaced meanwhile
        };
        let audio = kind_name(track.kind().await) == "audio";
        let kind = peer.layout.kind_of(&track.track_id().await, audio);
        let Some(&media_ssrc) = track.ssrcs().await.first() else {
            tracing::warn!(room, publisher, "ignoring a track with no SSRC");
            return;
        };
        let (codec, first) = match track.codec(media_ssrc).await {
            Some(codec) => (codec, None),
            // webrtc-rs's driver copies a new track's codings once, when it handles the track's
            // opening; a renegotiation applied in between (someone else's track offered to this
            // publisher as its first packets came) can leave that copy without a codec. The
            // packets still come: the first one's payload type, in our answer to it, says.
            None => match codec_of_first_packet(&peer.pc, &track).await {
                Some((codec, first)) => {
                    tracing::info!(room, publisher, media_ssrc, mime = %codec.mime_type, "codec taken from the track's first packet");
                    (codec, Some(first))
                }
                None => {
                    tracing::warn!(
                        room,
                        publisher,
                        media_ssrc,
                        "ignoring a track whose codec is not known"
                    );
                    return;
                }
            },
        };
        if first.is_some()
            && self
                .peer(room, publisher)
                .is_none_or(|p| p.session != session)
        {
            return; // replaced while its first packet was awaited
        }
        if offered_pt(&codec.mime_type).is_none() {
            tracing::warn!(room, publisher, mime = %codec.mime_type, "ignoring a track in a codec this SFU does not forward");
            return;
        }
        let simulcast = !audio && track.rid(media_ssrc).await.is_some();
        let published = {
            let mut core = self.core.locked();
            // One track of each kind per participant: anything else it sends is not forwarded.
            let id = match core.publish(room, publisher, session, kind) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(room, publisher, kind = kind.name(), error = %e, "ignoring a track");
                    self.metrics.dropped_packets.inc();
                    return;
                }
            };
            let Some(room_media) = self.room(room) else {
                return;
            };
            let published = Arc::new(Published {
                id,
                publisher: publisher.into(),
                session,
                room: room.into(),
                track: kind,
                kind: kind.name(),
                simulcast,
                layer_ssrcs: Mutex::new([None; LAYERS]),
                audio_level_id: (kind == TrackKind::Mic)
                    .then_some(peer.layout.audio_level_id)
                    .flatten(),
                video: VideoCodec::from_mime(&codec.mime_type),
                codec,
                media_ssrc,
                subscribers: RwLock::new(Arc::new(Vec::new())),
                keyframe_wanted: AtomicBool::new(false),
                blocked: peer.blocked.clone(),
                block_bit: block_bit(kind),
            });
            // In the room's map before the core's `Subscribe`s for it can be performed.
            room_media.tracks.locked().insert(id, published.clone());
            let before = core.poll_timeout();
            let _ = core.handle_input(
                Instant::now(),
                Input::Published {
                    room: room.into(),
                    peer: publisher.into(),
                    session,
                    track: id,
                    kind,
                    simulcast,
                    video: published.video.is_some(),
                },
            );
            self.dispatch(&mut core);
            let after = core.poll_timeout();
            drop(core);
            self.wake_core_if_sooner(before, after);
            published
        };
        tracing::info!(room, publisher, kind = kind.name(), simulcast, mime = %published.codec.mime_type, "track published");
        let metrics = self.metrics.clone();
        let epoch = self.epoch;
        tokio::spawn(forward_loop(
            track,
            first,
            published,
            metrics,
            epoch,
            self.me.clone(),
        ));
    }

    /// A host stopped (or let back on) some of `id`'s media: their packets of those kinds are
    /// no longer forwarded. Video let back on starts at a keyframe (asked for at once).
    pub fn block(&self, room: &str, id: &str, bits: u8) -> Result<(), MediaError> {
        // The packet path's bits and the core's change together (under the core's lock).
        let before = {
            let mut core = self.core.locked();
            let peer = self
                .peer(room, id)
                .ok_or_else(|| MediaError::UnknownParticipant(id.into()))?;
            let before = peer.blocked.swap(bits, Ordering::Relaxed);
            let _ = core.handle_input(
                Instant::now(),
                Input::Block {
                    room: room.into(),
                    peer: id.into(),
                    bits,
                },
            );
            self.dispatch(&mut core);
            before
        };
        if before != bits {
            tracing::info!(
                room,
                participant = id,
                blocked = bits,
                "media blocked by a host"
            );
        }
        Ok(())
    }

    /// A participant's browser says how big it shows each remote video: each subscription's layer
    /// follows (hidden: nothing), and the publishers learn which layers anyone still needs.
    pub fn set_views(&self, room: &str, id: &str, views: Vec<TileView>) -> Result<(), MediaError> {
        self.apply(Input::Views {
            room: room.into(),
            peer: id.into(),
            views,
        })
        .map_err(|_| MediaError::UnknownParticipant(id.into()))
    }

    /// Where everyone in the room is now (breakout rooms): each receives what people in the same
    /// room publish, and only that.
    pub fn set_scopes(&self, room: &str, version: u64, scopes: Vec<(String, u32)>) {
        let _ = self.apply(Input::Scopes {
            room: room.into(),
            version,
            scopes,
        });
    }

    /// Frees a participant (see the module docs for the cascade). Idempotent.
    pub async fn remove_peer(&self, room: &str, id: &str, why: &str) {
        self.remove_where(room, id, None, why).await
    }

    /// Frees one session of a participant, if it is still the current one.
    async fn end_session(&self, room: &str, id: &str, session: u64, why: &str) {
        self.remove_where(room, id, Some(session), why).await
    }

    async fn remove_where(&self, room: &str, id: &str, session: Option<u64>, why: &str) {
        // Out of the room's map and the core in one step (core, then rooms: the lock order).
        let (peer, r) = {
            let mut core = self.core.locked();
            let (peer, r) = {
                let mut rooms = self.rooms.locked();
                let Some(r) = rooms.get(room).cloned() else {
                    return;
                };
                let peer = {
                    let mut peers = r.peers.locked();
                    match peers.get(id) {
                        Some(p) if session.is_none_or(|s| s == p.session) => peers.remove(id),
                        _ => None,
                    }
                };
                if r.peers.locked().is_empty() {
                    rooms.remove(room);
                }
                (peer, r)
            };
            if let Some(p) = &peer {
                // The core takes its tracks off everyone (new offers) and its receptions off
                // the publishers.
                let _ = core.handle_input(
                    Instant::now(),
                    Input::Leave {
                        room: room.into(),
                        peer: id.into(),
                        session: Some(p.session),
                    },
                );
                self.dispatch(&mut core);
            }
            (peer, r)
        };
        if let Some(peer) = peer {
            tracing::info!(room, participant = id, why, "media session ended");
            self.close_peer(&r, peer).await;
        }
        self.update_gauges();
    }

    /// Closes a session's PeerConnection; its tracks and receptions stop being forwarded at once
    /// (the core's `Unsubscribe`s, performed after, take them off the other sessions).
    async fn close_peer(&self, room: &Arc<RoomMedia>, peer: Arc<Peer>) {
        if peer.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let tracks: Vec<Arc<Published>> = {
            let mut map = room.tracks.locked();
            let mine: Vec<TrackId> = map
                .values()
                .filter(|p| p.publisher == peer.id && p.session == peer.session)
                .map(|p| p.id)
                .collect();
            for id in &mine {
                if let Some(p) = map.remove(id) {
                    *p.subscribers.write_anyway() = Arc::new(Vec::new());
                }
            }
            map.values().cloned().collect()
        };
        for p in tracks {
            let mut list = p.subscribers.write_anyway();
            if list.iter().any(|s| s.subscriber == peer.id) {
                let next: Vec<Arc<SubTrack>> = list
                    .iter()
                    .filter(|s| s.subscriber != peer.id)
                    .cloned()
                    .collect();
                *list = Arc::new(next);
            }
        }
        let _ = peer.pc.close().await;
    }

    /// Closes every session (SFU shutdown).
    pub async fn close_all(&self) {
        let all: Vec<(String, String)> = self
            .rooms
            .locked()
            .values()
            .flat_map(|r| {
                r.peers
                    .locked()
                    .keys()
                    .map(|k| (r.name.clone(), k.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (room, id) in all {
            self.remove_peer(&room, &id, "SFU shutting down").await;
        }
    }
}

/// Awaits `f`, logging when it takes longer than 300 ms (and when it finally finishes): a control
/// call into webrtc-rs that hangs shows up in the log with its name. Not for the packet path.
async fn slow<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match tokio::time::timeout(Duration::from_millis(300), &mut f).await {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(what, "slow webrtc call (> 300 ms)");
            let v = f.await;
            tracing::warn!(what, "slow webrtc call finished");
            v
        }
    }
}

pub(crate) fn rand_ssrc() -> u32 {
    // Any non-zero value unique within the subscriber's session will do; mix time and a counter.
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ n.wrapping_mul(0x9E37_79B9)).max(1)
}

/// The forwarding loop of one published track: every packet to every ready subscriber, at the
/// simulcast layer each one's selector picks.
async fn forward_loop(
    track: Arc<dyn TrackRemote>,
    // A packet read already (`codec_of_first_packet`), forwarded first.
    mut first: Option<rtp::Packet>,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    epoch: Instant,
    media: Weak<Media>,
) {
    // Keyframe requests to this track, paced per layer (pure: `fanout::KeyframePacer`).
    let mut pacer = KeyframePacer::default();
    // SSRC → simulcast layer (None: not a layer we forward), learned on each SSRC's first packet.
    let mut layer_of: HashMap<u32, Option<usize>> = HashMap::new();
    let mut unknown = 0u32;
    let rids = edgemeet_shared::media::CAMERA_SIMULCAST.map(|l| l.rid);
    loop {
        let evt = match first.take() {
            Some(p) => TrackRemoteEvent::OnRtpPacket(p),
            None => match track.poll().await {
                Some(evt) => evt,
                None => break,
            },
        };
        let pkt = match evt {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            TrackRemoteEvent::OnOpen(init) if published.simulcast => {
                // Each simulcast layer opens with its SSRC and rid.
                let l = init
                    .rid
                    .as_deref()
                    .and_then(|r| rids.iter().position(|x| *x == r));
                if let Some(l) = l {
                    published.layer_ssrcs.locked()[l] = Some(init.ssrc);
                    layer_of.insert(init.ssrc, Some(l));
                }
                continue;
            }
            _ => continue,
        };
        // Padding-only (a bandwidth probe): not forwarded, but its sequence number is skipped.
        // Stopped by a host: not forwarded (a modified page cannot talk through it). Skipped like
        // a padding probe, so subscribers see no sequence gap.
        let blocked = published.blocked.load(Ordering::Relaxed) & published.block_bit != 0;
        let padding = pkt.payload.is_empty() || blocked;
        let ssrc = pkt.header.ssrc;
        let layer = if published.simulcast {
            let l = match layer_of.get(&ssrc) {
                Some(l) => *l,
                None => {
                    let rid = track.rid(ssrc).await;
                    let l = rid.and_then(|r| rids.iter().position(|x| *x == r.as_str()));
                    if let Some(l) = l {
                        published.layer_ssrcs.locked()[l] = Some(ssrc);
                        layer_of.insert(ssrc, Some(l));
                    } else {
                        // Not (yet) known as a layer: asked again next time, up to a point.
                        unknown += 1;
                        if unknown > 1_000 {
                            layer_of.insert(ssrc, None);
                        }
                    }
                    l
                }
            };
            match l {
                Some(l) => l,
                None => {
                    metrics.dropped_packets.inc();
                    continue;
                }
            }
        } else if ssrc != published.media_ssrc {
            // Not the track's announced media stream (e.g. an SSRC the publisher never signalled).
            metrics.dropped_packets.inc();
            continue;
        } else {
            0
        };
        let now = Instant::now();
        let now_us = now.duration_since(epoch).as_micros() as u64;
        let now_ms = now_us / 1000;
        if let (false, Some(id)) = (blocked, published.audio_level_id) {
            if let (Some(level), Some(media)) = (
                pkt.header
                    .get_extension(id)
                    .and_then(|b| b.first().copied()),
                media.upgrade(),
            ) {
                let _ = media.core.locked().handle_audio_level(
                    now,
                    &published.room,
                    &published.publisher,
                    level,
                );
            }
        }
        let keyframe = !padding
            && published
                .video
                .map(|c| starts_keyframe(c, &pkt.payload))
                .unwrap_or(true);
        // VP8 picture numbering, renumbered per subscriber after a layer switch.
        let vp8 =
            (!padding && published.video == Some(VideoCodec::Vp8)).then(|| vp8_ids(&pkt.payload));
        let subs = published.subscribers.read_anyway().clone();
        // Layers to ask a keyframe of (bit per layer).
        let mut want_keyframe: u8 = 0;
        let asked = published.keyframe_wanted.swap(false, Ordering::Relaxed);
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
        for sub in subs.iter() {
            let step = {
                let mut st = sub.state.locked();
                let connected = sub.connected.load(Ordering::Relaxed);
                // A keyframe this subscriber asked for (a stale NACK), or one asked for everyone;
                // its own wish waits while it cannot receive.
                let mine = connected
                    && st.ready
                    && sub.keyframe_wanted.load(Ordering::Relaxed)
                    && sub.keyframe_wanted.swap(false, Ordering::Relaxed);
                st.on_packet(&pin, connected, asked || mine, now_us)
            };
            want_keyframe |= step.keyframe_layers;
            if step.switched && published.simulcast {
                metrics.layer_switches.inc();
                tracing::debug!(subscriber = %sub.subscriber, publisher = %published.publisher, layer, "layer switch");
            }
            if step.dropped {
                metrics.dropped_packets.inc();
            }
            let Some((m, renumbered)) = step.send else {
                continue;
            };
            let payload = match renumbered {
                // Renumbered (this subscriber has switched layers): its own copy. The only
                // allocation of ours on this path.
                Some(to) => {
                    let mut p = pkt.payload.to_vec();
                    vp8_set_ids(&mut p, &to);
                    p.into()
                }
                None => pkt.payload.clone(),
            };
            let out = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: pkt.header.marker,
                    payload_type: m.payload_type,
                    sequence_number: m.seq,
                    timestamp: m.timestamp,
                    ssrc: m.ssrc,
                    ..Default::default()
                },
                payload,
            };
            if sub.local.write_rtp(out).await.is_ok() {
                sub.sent
                    .fetch_add(pkt.payload.len() as u64 + 12, Ordering::Relaxed);
                if published.video.is_some() {
                    // What a NACK can name (see the downlink estimate).
                    sub.sent_packets.fetch_add(1, Ordering::Relaxed);
                }
                metrics.forwarded_packets.inc();
                metrics
                    .forwarded_bytes
                    .inc_by(pkt.payload.len() as u64 + 12);
            } else {
                metrics.dropped_packets.inc();
            }
        }
        if published.video.is_none() || (want_keyframe == 0 && pacer.idle()) {
            continue;
        }
        let ssrcs = if published.simulcast {
            *published.layer_ssrcs.locked()
        } else {
            [None; LAYERS]
        };
        let ssrc_of = |l: usize| {
            if published.simulcast {
                ssrcs[l]
            } else {
                (l == 0).then_some(published.media_ssrc)
            }
        };
        let ask = pacer.on_packet(want_keyframe, |l| ssrc_of(l).is_some(), now_ms);
        for l in (0..LAYERS).filter(|l| ask & (1 << l) != 0) {
            let Some(media_ssrc) = ssrc_of(l) else {
                continue;
            };
            metrics.keyframe_requests.inc();
            // At most two a second per layer (paced): not a per-packet log line.
            tracing::debug!(publisher = %published.publisher, layer = l, "keyframe asked");
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
        }
    }
    tracing::debug!(publisher = %published.publisher, kind = published.kind, "forwarding loop ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_named_in_our_answer_is_the_one_this_sfu_registered() {
        let vp8 = registered_codec("VP8").unwrap();
        assert_eq!(
            (vp8.mime_type.as_str(), vp8.clock_rate),
            (MIME_TYPE_VP8, 90_000)
        );
        let opus = registered_codec("opus").unwrap();
        assert_eq!(
            (opus.mime_type.as_str(), opus.channels),
            (MIME_TYPE_OPUS, 2)
        );
        let h264 = registered_codec("H264").unwrap();
        assert!(h264.sdp_fmtp_line.contains("packetization-mode=1"));
        assert!(registered_codec("AV1").is_none());
    }
}
