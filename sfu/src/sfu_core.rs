//! The SFU's media decisions for every room (sans-IO, like str0m's `Rtc` and quinn-proto's
//! `Connection`): who is in which room, what each one publishes, who receives what and at which
//! layer, dynacast, the active speaker and the downlink estimates. The shell (`media.rs`) feeds it
//! [`Input`]s with the time, performs the [`Output`]s it polls (add a transceiver, send an offer, post
//! an event) and wakes it at [`SfuCore::poll_timeout`]. No clock reads, locks, sockets or tokio in here.
//!
//! It also holds each session's renegotiation state ([`crate::negotiation`]): when to make an offer,
//! when to send one again the edge did not take, what an answer or a failure means.
//!
//! What it does not own yet: the per-packet state of each subscription (layer selector, rewriter,
//! keyframe wish: [`crate::fanout`]), pure too but kept beside the webrtc-rs objects it acts on
//! until the worker threads of the new engine own it with the rest (ARCHITECTURE.md, "SFU engine").

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use edgemeet_shared::media::layer_for_tile;
use edgemeet_shared::protocol::{SfuEvent, Source, TileView};
use thiserror::Error;

use crate::downlink::{camera_cap, DownlinkEstimator};
use crate::layers::LAYERS;
use crate::negotiation::{AfterFailure, Begin, Negotiation, Resend};
use crate::offer::TrackKind;
use crate::quality::QualityWatch;
use crate::speaker::SpeakerDetector;

/// How often each room's active speaker is re-evaluated.
pub const SPEAKER_TICK: Duration = Duration::from_millis(200);
/// Camera layer a subscriber gets before its browser said how big it shows the tile.
pub const DEFAULT_CAMERA_LAYER: usize = 1;
/// Dynacast leaves a new camera's layers all on this long: the browser's bandwidth estimate ramps
/// up on real traffic, so a layer turned on later (a tile made big) starts within a second or two
/// instead of waiting for the estimate to climb from the few hundred kbit/s of the lowest layer.
pub const DYNACAST_WARMUP: Duration = Duration::from_secs(6);

/// A published track, named by the core.
pub type TrackId = u64;
/// One participant's reception of one track, named by the core.
pub type SubId = u64;

/// A host stopped the microphone.
pub const BLOCK_AUDIO: u8 = 1;
/// A host stopped the camera.
pub const BLOCK_VIDEO: u8 = 2;
/// A host stopped the screen share (and its audio).
pub const BLOCK_SCREEN: u8 = 4;

/// Which blocked bit stops a track of this kind.
pub fn block_bit(kind: TrackKind) -> u8 {
    match kind {
        TrackKind::Mic => BLOCK_AUDIO,
        TrackKind::Camera => BLOCK_VIDEO,
        TrackKind::Screen | TrackKind::ScreenAudio => BLOCK_SCREEN,
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("participant {0} has no media session here")]
    UnknownParticipant(String),
    #[error("this session of the participant has been replaced")]
    StaleSession,
    #[error("participant {0} already publishes a {1} track")]
    ExtraTrack(String, &'static str),
}

/// What the shell tells the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A participant's offer started session `session` (replacing any earlier one, which the shell
    /// closes; its tracks and receptions end here, the room stays). Sessions are numbered in the
    /// order they were made: one older than the current is refused.
    Join {
        room: String,
        peer: String,
        session: u64,
        blocked: u8,
        /// The part of the room it is in (0: the main room; a breakout room's number): it
        /// receives only the tracks of people in the same scope.
        scope: u32,
    },
    /// Where everyone in the room is now ([`Input::Join`]'s `scope`; anyone not named: 0), as of
    /// `version` (an older version than the last applied changes nothing). For everyone who moved,
    /// what they received from people they left ends, what people they joined publish starts;
    /// each member touched gets one new offer.
    Scopes {
        room: String,
        version: u64,
        scopes: Vec<(String, u32)>,
    },
    /// The room is recorded as `recording` (`None`: not recorded), as of `version` (an older or
    /// repeated version changes nothing; for a room not here yet it is kept for when it comes).
    /// Every published track is recorded while it is on (a simulcast camera at its top layer,
    /// which dynacast then keeps on); another id ends the recording before and starts a new one.
    Record {
        room: String,
        version: u64,
        recording: Option<String>,
    },
    /// Our answer to that offer is out: it can now receive what the room publishes.
    AnswerSent {
        room: String,
        peer: String,
        session: u64,
    },
    /// The session ended (the edge says it left, its connection failed, the SFU stops). A
    /// `session` that is no longer the current one changes nothing.
    Leave {
        room: String,
        peer: String,
        session: Option<u64>,
    },
    /// A track arrived from `peer`'s session `session` (see [`SfuCore::publish`] for the id).
    Published {
        room: String,
        peer: String,
        session: u64,
        track: TrackId,
        kind: TrackKind,
        simulcast: bool,
        video: bool,
    },
    /// The shell could not add `sub`'s track to the subscriber's session.
    SubscribeFailed { room: String, sub: SubId },
    /// The offer asked for with [`Output::Renegotiate`] could not be made (see
    /// [`SfuCore::offer_made`] for one that was).
    OfferNotMade {
        room: String,
        peer: String,
        session: u64,
    },
    /// The edge took offer `generation` for the participant.
    OfferDelivered {
        room: String,
        peer: String,
        session: u64,
        generation: u64,
    },
    /// The edge did not take it; `worth_retrying`: the failure may pass.
    OfferNotDelivered {
        room: String,
        peer: String,
        session: u64,
        generation: u64,
        worth_retrying: bool,
    },
    /// RTCP about a video it receives came from `peer`'s session (the shell leaves audio's out:
    /// a viewer receiving no video reports only on audio, seconds apart). After a silence of
    /// [`crate::downlink::OUTAGE_MS`] it is back from an outage: its decoders lost their
    /// reference chain and may have asked for a keyframe while nothing got through, so each
    /// video it receives gets one ([`Output::SubKeyframe`]).
    Heard {
        room: String,
        peer: String,
        session: u64,
    },
    /// The participant's answer to our offer was applied (`ok`), or could not be.
    Answered {
        room: String,
        peer: String,
        session: u64,
        ok: bool,
    },
    /// How big `peer` shows each remote video (device pixels; 0 = hidden).
    Views {
        room: String,
        peer: String,
        views: Vec<TileView>,
    },
    /// What a host stopped of `peer`'s (`BLOCK_*` bits).
    Block {
        room: String,
        peer: String,
        bits: u8,
    },
    /// A receiver report from `peer`'s session `session`: the loss it saw, and what was forwarded
    /// to that session so far.
    ReceiverReport {
        room: String,
        peer: String,
        session: u64,
        fraction_lost: u8,
        bytes_sent: u64,
        packets_sent: u64,
    },
    /// Sequence numbers `peer`'s session `session` NACKed that were forwarded to it.
    Nacked {
        room: String,
        peer: String,
        session: u64,
        ssrc: u32,
        seqs: Vec<u16>,
    },
    /// What `peer`'s published streams brought since the last time (packets expected by their
    /// sequence numbers, and received): its uplink's loss ([`crate::quality`]).
    Uplink {
        room: String,
        peer: String,
        session: u64,
        expected: u64,
        received: u64,
    },
    /// `peer`'s media session stopped answering ICE (`up: false`), or answers again.
    Link {
        room: String,
        peer: String,
        session: u64,
        up: bool,
    },
}

/// What to do with a participant's answer ([`SfuCore::answer_fit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFit {
    /// It answers the offer waited on: apply it.
    Apply,
    /// A numbered answer to an offer that is not the one waited on — an older one, one answered
    /// already (the page answered two copies of it), or a number this session never gave: not
    /// applied (it would pair the wrong descriptions), and no error (nothing went wrong for the
    /// person).
    Stale,
    /// No offer of ours waits for an answer: refused.
    NoneAwaited,
}

/// What the core asks the shell to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Add `track` to `subscriber`'s session (a new send-only transceiver) as `sub`, forwarding at
    /// layer `want` (`None`: nothing until it is shown).
    Subscribe {
        room: String,
        sub: SubId,
        subscriber: String,
        /// The subscriber's session it is for (a session that replaced it gets its own).
        session: u64,
        track: TrackId,
        want: Option<usize>,
    },
    /// `sub` ends. `remove_track`: take the track off the subscriber's session (false when that
    /// session itself is ending).
    Unsubscribe {
        room: String,
        sub: SubId,
        subscriber: String,
        session: u64,
        track: TrackId,
        remove_track: bool,
    },
    /// Make an offer for `peer`'s session `session` (its received tracks changed) and report it
    /// with [`SfuCore::offer_made`] or [`Input::OfferNotMade`]. Never asked again before that.
    Renegotiate {
        room: String,
        peer: String,
        session: u64,
    },
    /// Send (again) offer `generation` of that session to the edge, and report how it went.
    /// `unanswered`: 0, a delivery that failed is retried; else the number of this copy of an
    /// offer the edge took and nobody answered.
    SendOffer {
        room: String,
        peer: String,
        session: u64,
        generation: u64,
        unanswered: u32,
    },
    /// `sub` is wanted at another layer now (`None`: hidden).
    SetWant {
        room: String,
        sub: SubId,
        want: Option<usize>,
    },
    /// Ask `track`'s publisher for a keyframe (a host let it back on).
    Keyframe { room: String, track: TrackId },
    /// Reception `sub` (of `track`) needs a keyframe of the layer it gets: its subscriber is back
    /// from an outage.
    SubKeyframe {
        room: String,
        sub: SubId,
        track: TrackId,
    },
    /// For the edge (dynacast, active speaker).
    Event(SfuEvent),
    /// The room has no one left.
    RoomGone { room: String },
    /// Record `track` (its packets go to the recorder) as part of `recording`.
    RecordTrack {
        room: String,
        track: TrackId,
        recording: String,
    },
    /// `track` is recorded no more (its publisher left, or the recording stopped): its file ends.
    RecordTrackEnd { room: String, track: TrackId },
    /// The room's part of `recording` on this SFU ends (its tracks' ends came first).
    RecordingEnd { room: String, recording: String },
}

#[derive(Debug)]
struct Member {
    session: u64,
    /// The part of the room it is in (see [`Input::Join`]).
    scope: u32,
    /// Our answer is out: it takes part in subscriptions.
    answered: bool,
    blocked: u8,
    /// (publisher, source) → rendered height; absent: not said yet.
    views: HashMap<(String, Source), u32>,
    downlink: DownlinkEstimator,
    published: Vec<TrackId>,
    /// What it receives: (track → sub).
    receiving: BTreeMap<TrackId, SubId>,
    /// When RTCP last came from it (ms of the core's clock).
    heard_ms: Option<u64>,
    /// Its connection as the SFU judges it (told to the room on change).
    quality: QualityWatch,
    /// Our offers to it.
    neg: Negotiation,
}

#[derive(Debug)]
struct Track {
    publisher: String,
    kind: TrackKind,
    simulcast: bool,
    video: bool,
    published_at: Instant,
    /// Dynacast waits for the warm-up to pass.
    warm: bool,
    /// Dynacast: the layers last asked of the publisher.
    active_layers: Option<Vec<bool>>,
    subs: BTreeSet<SubId>,
    /// Its packets go to the recorder.
    recorded: bool,
}

#[derive(Debug)]
struct Sub {
    subscriber: String,
    session: u64,
    track: TrackId,
    want: Option<usize>,
}

#[derive(Debug)]
struct RoomState {
    members: BTreeMap<String, Member>,
    tracks: BTreeMap<TrackId, Track>,
    subs: HashMap<SubId, Sub>,
    /// One active speaker per scope (a breakout room has its own).
    speakers: BTreeMap<u32, SpeakerDetector>,
    next_speaker_tick: Instant,
    /// The version of the last [`Input::Scopes`] applied.
    scope_version: u64,
    /// What [`Input::Record`] last said, and its version.
    recording: Option<String>,
    record_version: u64,
}

impl RoomState {
    /// Whether `subscriber` should receive `track` (someone else's, in the same scope).
    fn shares_scope(&self, subscriber: &str, track: &Track) -> bool {
        track.publisher != subscriber
            && match (
                self.members.get(subscriber),
                self.members.get(&track.publisher),
            ) {
                (Some(a), Some(b)) => a.scope == b.scope,
                _ => false,
            }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct SfuCore {
    /// Time zero of the millisecond clocks inside (speaker, downlink).
    epoch: Instant,
    sfu_id: String,
    rooms: BTreeMap<String, RoomState>,
    /// The last scopes version of rooms not here (yet, or any more): a late older call for a
    /// room that comes back must not undo a newer one (bounded: see [`MAX_GONE_VERSIONS`]).
    gone_versions: HashMap<String, u64>,
    /// Likewise the last [`Input::Record`] of rooms not here: a room recorded when everyone here
    /// left (an outage, a failover) is recorded again when someone comes back.
    gone_records: HashMap<String, (u64, Option<String>, Instant)>,
    next_id: u64,
    /// The wall clock at `epoch`, µs since the Unix epoch: offers are numbered from it.
    wall_epoch_us: u64,
    /// The number of the last offer made here, to anyone ([`SfuCore::offer_made`]).
    last_generation: u64,
    out: VecDeque<Output>,
    /// When everyone's connection is judged next ([`crate::quality::EVERY_MS`]).
    next_quality: Instant,
}

/// How long a room not here stays recorded for its next arrival: a failover's joiners come within
/// seconds. Later, only the version is kept: a room that left this SFU for another and comes back
/// days later must not be recorded by an old state nobody sees (the room sends it again anyway
/// when it moves here).
pub const RECORD_KEPT_FOR: Duration = Duration::from_secs(60);

/// Most rooms whose scopes version is remembered while they are not here.
const MAX_GONE_VERSIONS: usize = 10_000;

impl SfuCore {
    /// `sfu_id` is named in the events this SFU sends; `wall_epoch_us` is the wall clock (µs since
    /// the Unix epoch) at `epoch`, read by the shell: offers are numbered by it (see
    /// [`SfuCore::offer_made`]).
    pub fn new(epoch: Instant, wall_epoch_us: u64, sfu_id: impl Into<String>) -> SfuCore {
        SfuCore {
            epoch,
            sfu_id: sfu_id.into(),
            rooms: BTreeMap::new(),
            gone_versions: HashMap::new(),
            gone_records: HashMap::new(),
            next_id: 1,
            wall_epoch_us,
            last_generation: 0,
            out: VecDeque::new(),
            next_quality: epoch,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// An id for a track about to be reported with [`Input::Published`], or why it is not
    /// forwarded (one track of each kind per participant).
    pub fn publish(
        &mut self,
        room: &str,
        peer: &str,
        session: u64,
        kind: TrackKind,
    ) -> Result<TrackId, CoreError> {
        let member = self
            .rooms
            .get(room)
            .and_then(|r| r.members.get(peer))
            .ok_or_else(|| CoreError::UnknownParticipant(peer.into()))?;
        if member.session != session {
            return Err(CoreError::StaleSession);
        }
        let taken = member.published.iter().any(|t| {
            self.rooms[room]
                .tracks
                .get(t)
                .is_some_and(|t| t.kind == kind)
        });
        if taken {
            return Err(CoreError::ExtraTrack(peer.into(), kind.name()));
        }
        Ok(self.id())
    }

    /// Feeds one input. An input about someone unknown (already gone) is refused and changes
    /// nothing.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), CoreError> {
        match input {
            Input::Join {
                room,
                peer,
                session,
                blocked,
                scope,
            } => {
                match self.rooms.get(&room).and_then(|r| r.members.get(&peer)) {
                    Some(m) if m.session > session => return Err(CoreError::StaleSession),
                    Some(_) => self.leave(now, &room, &peer, true),
                    None => {}
                }
                let next_tick = self.next_tick(now);
                let scope_version = self.gone_versions.remove(&room).unwrap_or(0);
                let (record_version, recording) = match self.gone_records.remove(&room) {
                    Some((v, rec, at)) if now.saturating_duration_since(at) <= RECORD_KEPT_FOR => {
                        (v, rec)
                    }
                    Some((v, _, _)) => (v, None),
                    None => (0, None),
                };
                let r = self.rooms.entry(room).or_insert_with(|| RoomState {
                    members: BTreeMap::new(),
                    tracks: BTreeMap::new(),
                    subs: HashMap::new(),
                    speakers: BTreeMap::new(),
                    next_speaker_tick: next_tick,
                    scope_version,
                    recording,
                    record_version,
                });
                r.members.insert(
                    peer,
                    Member {
                        session,
                        scope,
                        answered: false,
                        blocked,
                        views: HashMap::new(),
                        downlink: DownlinkEstimator::new(),
                        published: Vec::new(),
                        receiving: BTreeMap::new(),
                        heard_ms: None,
                        quality: QualityWatch::default(),
                        neg: Negotiation::default(),
                    },
                );
                Ok(())
            }
            Input::AnswerSent {
                room,
                peer,
                session,
            } => {
                let m = self.member_mut(&room, &peer)?;
                if m.session != session {
                    return Err(CoreError::StaleSession);
                }
                m.answered = true;
                let r = &self.rooms[&room];
                let tracks: Vec<TrackId> = r
                    .tracks
                    .iter()
                    .filter(|(_, t)| r.shares_scope(&peer, t))
                    .map(|(id, _)| *id)
                    .collect();
                let mut added = false;
                for t in tracks {
                    added |= self.subscribe(&room, &peer, t);
                }
                if added {
                    self.renegotiate(&room, &peer);
                    self.update_dynacast(now, &room);
                }
                Ok(())
            }
            Input::Leave {
                room,
                peer,
                session,
            } => {
                let current = self
                    .rooms
                    .get(&room)
                    .and_then(|r| r.members.get(&peer))
                    .ok_or_else(|| CoreError::UnknownParticipant(peer.clone()))?;
                if session.is_some_and(|s| s != current.session) {
                    return Err(CoreError::StaleSession);
                }
                self.leave(now, &room, &peer, false);
                Ok(())
            }
            Input::Published {
                room,
                peer,
                session,
                track,
                kind,
                simulcast,
                video,
            } => {
                let m = self.member_mut(&room, &peer)?;
                if m.session != session {
                    return Err(CoreError::StaleSession);
                }
                m.published.push(track);
                // A recording is of the main room: not of breakout rooms.
                let in_main = m.scope == 0;
                let r = self.rooms.get_mut(&room).expect("member's room");
                r.tracks.insert(
                    track,
                    Track {
                        publisher: peer.clone(),
                        kind,
                        simulcast,
                        video,
                        published_at: now,
                        warm: !simulcast,
                        active_layers: None,
                        subs: BTreeSet::new(),
                        recorded: r.recording.is_some() && in_main,
                    },
                );
                if let Some(recording) = r.recording.clone().filter(|_| in_main) {
                    self.out.push_back(Output::RecordTrack {
                        room: room.clone(),
                        track,
                        recording,
                    });
                }
                let r = self.rooms.get_mut(&room).expect("member's room");
                let scope = r.members[&peer].scope;
                let others: Vec<(String, u64)> = r
                    .members
                    .iter()
                    .filter(|(id, m)| **id != peer && m.answered && m.scope == scope)
                    .map(|(id, m)| (id.clone(), m.session))
                    .collect();
                for (other, _) in others {
                    if self.subscribe(&room, &other, track) {
                        self.renegotiate(&room, &other);
                    }
                }
                Ok(())
            }
            Input::SubscribeFailed { room, sub } => {
                let r = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| CoreError::UnknownParticipant(String::new()))?;
                if let Some(s) = r.subs.remove(&sub) {
                    if let Some(t) = r.tracks.get_mut(&s.track) {
                        t.subs.remove(&sub);
                    }
                    if let Some(m) = r.members.get_mut(&s.subscriber) {
                        m.receiving.remove(&s.track);
                    }
                    // Its wish may have been what kept an upper layer on.
                    self.update_dynacast(now, &room);
                }
                Ok(())
            }
            Input::OfferNotMade {
                room,
                peer,
                session,
            } => {
                if self.current(&room, &peer, session)?.neg.offer_failed() {
                    // What changed while it was being made still needs an offer.
                    self.renegotiate(&room, &peer);
                }
                Ok(())
            }
            Input::OfferDelivered {
                room,
                peer,
                session,
                generation,
            } => {
                self.current(&room, &peer, session)?
                    .neg
                    .delivered(now, generation);
                Ok(())
            }
            Input::OfferNotDelivered {
                room,
                peer,
                session,
                generation,
                worth_retrying,
            } => {
                let m = self.current(&room, &peer, session)?;
                // Retry: `poll_timeout` says when (the shell is asked with `SendOffer`).
                if let AfterFailure::GiveUp { start_queued: true } =
                    m.neg.delivery_failed(now, generation, worth_retrying)
                {
                    // Tracks changed meanwhile: they still need an offer of their own.
                    self.renegotiate(&room, &peer);
                }
                Ok(())
            }
            Input::Answered {
                room,
                peer,
                session,
                ok,
            } => {
                let m = self.current(&room, &peer, session)?;
                let again = if ok {
                    m.neg.answer_applied()
                } else {
                    m.neg.answer_failed()
                };
                if again {
                    self.renegotiate(&room, &peer);
                }
                Ok(())
            }
            Input::Heard {
                room,
                peer,
                session,
            } => {
                let ms = self.ms(now);
                let m = self.current(&room, &peer, session)?;
                let back = m
                    .heard_ms
                    .is_some_and(|h| ms >= h + crate::downlink::OUTAGE_MS);
                m.heard_ms = Some(ms);
                if back {
                    let r = &self.rooms[&room];
                    let videos: Vec<(SubId, TrackId)> = r.members[&peer]
                        .receiving
                        .iter()
                        .filter(|(t, _)| r.tracks.get(t).is_some_and(|t| t.video))
                        .map(|(t, s)| (*s, *t))
                        .collect();
                    for (sub, track) in videos {
                        self.out.push_back(Output::SubKeyframe {
                            room: room.clone(),
                            sub,
                            track,
                        });
                    }
                }
                Ok(())
            }
            Input::Scopes {
                room,
                version,
                scopes,
            } => {
                // A room nobody has joined here yet: each joiner's offer says where they are (its
                // version is kept, so an older call arriving later is still ignored).
                let Some(r) = self.rooms.get_mut(&room) else {
                    self.remember_version(room, version);
                    return Ok(());
                };
                if version < r.scope_version {
                    return Ok(()); // overtaken by a newer one
                }
                r.scope_version = version;
                let named: HashMap<String, u32> = scopes.into_iter().collect();
                let moves: Vec<(String, u32)> = r
                    .members
                    .iter()
                    .filter_map(|(id, m)| {
                        let to = named.get(id).copied().unwrap_or(0);
                        (to != m.scope).then(|| (id.clone(), to))
                    })
                    .collect();
                self.move_scopes(now, &room, moves);
                Ok(())
            }
            Input::Record {
                room,
                version,
                recording,
            } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    let newer = self
                        .gone_records
                        .get(&room)
                        .is_none_or(|(v, _, _)| version > *v);
                    if newer {
                        self.remember_record(now, room, version, recording);
                    }
                    return Ok(());
                };
                if version <= r.record_version {
                    return Ok(()); // repeated, or overtaken by a newer one
                }
                r.record_version = version;
                if r.recording == recording {
                    return Ok(());
                }
                let before = std::mem::replace(&mut r.recording, recording.clone());
                let mut tracks: Vec<TrackId> = Vec::new();
                let main: BTreeSet<String> = r
                    .members
                    .iter()
                    .filter(|(_, m)| m.scope == 0)
                    .map(|(id, _)| id.clone())
                    .collect();
                for (id, t) in r.tracks.iter_mut() {
                    if t.recorded {
                        self.out.push_back(Output::RecordTrackEnd {
                            room: room.clone(),
                            track: *id,
                        });
                    }
                    // A recording is of the main room: not of breakout rooms.
                    t.recorded = recording.is_some() && main.contains(&t.publisher);
                    if t.recorded {
                        tracks.push(*id);
                    }
                }
                if let Some(before) = before {
                    self.out.push_back(Output::RecordingEnd {
                        room: room.clone(),
                        recording: before,
                    });
                }
                if let Some(recording) = recording {
                    for track in tracks {
                        self.out.push_back(Output::RecordTrack {
                            room: room.clone(),
                            track,
                            recording: recording.clone(),
                        });
                    }
                }
                self.update_dynacast(now, &room);
                Ok(())
            }
            Input::Views { room, peer, views } => {
                self.member_mut(&room, &peer)?.views = views
                    .into_iter()
                    .map(|v| ((v.publisher, v.source), v.height))
                    .collect();
                self.apply_wants(now, &room, &peer);
                Ok(())
            }
            Input::Block { room, peer, bits } => {
                let m = self.member_mut(&room, &peer)?;
                let lifted = m.blocked & !bits;
                m.blocked = bits;
                let published = m.published.clone();
                let r = &self.rooms[&room];
                for t in published {
                    if r.tracks
                        .get(&t)
                        .is_some_and(|tr| tr.video && lifted & block_bit(tr.kind) != 0)
                    {
                        self.out.push_back(Output::Keyframe {
                            room: room.clone(),
                            track: t,
                        });
                    }
                }
                Ok(())
            }
            Input::ReceiverReport {
                room,
                peer,
                session,
                fraction_lost,
                bytes_sent,
                packets_sent,
            } => {
                let ms = self.ms(now);
                let m = self.member_mut(&room, &peer)?;
                if m.session != session {
                    return Err(CoreError::StaleSession);
                }
                let d = &mut m.downlink;
                let before = d.estimate_bps();
                let after = d.on_report(fraction_lost, bytes_sent, packets_sent, ms);
                if (after - before).abs() > 1.0 {
                    self.apply_wants(now, &room, &peer);
                }
                Ok(())
            }
            Input::Nacked {
                room,
                peer,
                session,
                ssrc,
                seqs,
            } => {
                let m = self.member_mut(&room, &peer)?;
                if m.session != session {
                    return Err(CoreError::StaleSession);
                }
                m.downlink.on_nacked_seqs(ssrc, seqs);
                Ok(())
            }
            Input::Uplink {
                room,
                peer,
                session,
                expected,
                received,
            } => {
                self.current(&room, &peer, session)?
                    .quality
                    .on_uplink(expected, received);
                Ok(())
            }
            Input::Link {
                room,
                peer,
                session,
                up,
            } => {
                self.current(&room, &peer, session)?.quality.on_link(up);
                Ok(())
            }
        }
    }

    /// One audio packet's RFC 6464 level from `peer`'s microphone (per packet: takes names by
    /// reference and allocates nothing).
    pub fn handle_audio_level(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        level: u8,
    ) -> Result<(), CoreError> {
        let ms = self.ms(now);
        let r = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| CoreError::UnknownParticipant(peer.into()))?;
        let scope = r
            .members
            .get(peer)
            .ok_or_else(|| CoreError::UnknownParticipant(peer.into()))?
            .scope;
        if let Some(d) = r.speakers.get_mut(&scope) {
            d.observe(peer, level & 0x7f, ms);
        } else {
            // First level heard in this scope (not per packet: once per scope).
            let mut d = SpeakerDetector::new();
            d.observe(peer, level & 0x7f, ms);
            r.speakers.insert(scope, d);
        }
        Ok(())
    }

    /// The next thing to do, in the order decided.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`SfuCore::handle_timeout`] is due next (`None`: no room, nothing to wake for).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rooms
            .values()
            .flat_map(|r| {
                let warmups = r
                    .tracks
                    .values()
                    .filter(|t| !t.warm)
                    .map(|t| t.published_at + DYNACAST_WARMUP);
                let resends = r.members.values().filter_map(|m| m.neg.poll_timeout());
                std::iter::once(r.next_speaker_tick)
                    .chain(warmups)
                    .chain(resends)
            })
            .min()
    }

    /// Speaker ticks and dynacast warm-ups that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ms = self.ms(now);
        let next_tick = self.next_tick(now);
        // Connections are judged on the speaker ticks' grid (no wake-up of their own: every room
        // ticks every 200 ms), once a second.
        if now >= self.next_quality {
            self.next_quality =
                now + Duration::from_millis(crate::quality::EVERY_MS) - SPEAKER_TICK / 2;
            self.judge_connections(ms);
        }
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let r = self.rooms.get_mut(&name).expect("listed");
            if now >= r.next_speaker_tick {
                // Every room ticks on one grid (one wake-up for all of them); a shell that woke
                // late catches up with one tick, not many.
                r.next_speaker_tick = next_tick;
                for (scope, d) in r.speakers.iter_mut() {
                    if let Some(id) = d.tick(ms) {
                        self.out.push_back(Output::Event(SfuEvent::ActiveSpeaker {
                            room: name.clone(),
                            participant: Some(id),
                            scope: *scope,
                            sfu: Some(self.sfu_id.clone()),
                            version: None, // given by the outbox
                        }));
                    }
                }
            }
            let r = self.rooms.get_mut(&name).expect("listed");
            for (id, m) in r.members.iter_mut() {
                if let Some(resend) = m.neg.handle_timeout(now) {
                    let (generation, unanswered) = match resend {
                        Resend::Delivery(g) => (g, 0),
                        Resend::Unanswered { generation, copy } => (generation, copy),
                    };
                    self.out.push_back(Output::SendOffer {
                        room: name.clone(),
                        peer: id.clone(),
                        session: m.session,
                        generation,
                        unanswered,
                    });
                }
            }
            let mut warmed = false;
            for t in r.tracks.values_mut() {
                if !t.warm && now >= t.published_at + DYNACAST_WARMUP {
                    t.warm = true;
                    warmed = true;
                }
            }
            if warmed {
                self.update_dynacast(now, &name);
            }
        }
    }

    /// The offer asked for with [`Output::Renegotiate`] is made (our local description): returns
    /// its generation, to send now and to report on.
    ///
    /// Generations are this SFU's wall clock in µs when the offer was made, strictly rising over
    /// every session of this core (a room stays on one worker's core): no two offers to a room
    /// share a number, so an answer from a PeerConnection since replaced (the same person's
    /// earlier session) never fits the new session's offer, and a restarted SFU goes on above
    /// its numbers from before while its clock does not go back (the room drops a late post of
    /// an offer older than one it holds from the same SFU, for the same PeerConnection).
    pub fn offer_made(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        session: u64,
    ) -> Result<u64, CoreError> {
        let since = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let generation = self
            .wall_epoch_us
            .saturating_add(since)
            .max(self.last_generation + 1);
        self.current(room, peer, session)?
            .neg
            .offer_ready(now, generation);
        self.last_generation = generation;
        Ok(generation)
    }

    /// What to do with `peer`'s answer to our offer number `generation` (0: not numbered — the
    /// answer to whichever offer waits).
    pub fn answer_fit(&self, room: &str, peer: &str, session: u64, generation: u64) -> AnswerFit {
        let Some(m) = self
            .rooms
            .get(room)
            .and_then(|r| r.members.get(peer))
            .filter(|m| m.session == session)
        else {
            return AnswerFit::NoneAwaited;
        };
        if m.neg.answers_given_up(generation) {
            // The offer whose delivery we gave up reached the page after all.
            return AnswerFit::Apply;
        }
        match (m.neg.awaiting_answer(), generation) {
            (true, 0) => AnswerFit::Apply,
            (true, g) if g == m.neg.generation() => AnswerFit::Apply,
            (false, 0) => AnswerFit::NoneAwaited,
            // Answered already (a copy's second answer), an older offer's, or not this
            // session's numbering (a stray from a PeerConnection since replaced).
            _ => AnswerFit::Stale,
        }
    }

    /// Whether an offer of ours waits for `peer`'s answer (one that does not is refused).
    pub fn awaiting_answer(&self, room: &str, peer: &str, session: u64) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.members.get(peer))
            .is_some_and(|m| m.session == session && m.neg.awaiting_answer())
    }

    /// `peer`'s received tracks changed: an offer now, or after the one in flight is answered.
    fn renegotiate(&mut self, room: &str, peer: &str) {
        let Some(m) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.members.get_mut(peer))
        else {
            return;
        };
        if m.neg.begin() == Begin::Offer {
            self.out.push_back(Output::Renegotiate {
                room: room.into(),
                peer: peer.into(),
                session: m.session,
            });
        }
    }

    fn remember_version(&mut self, room: String, version: u64) {
        if version == 0 {
            return;
        }
        if self.gone_versions.len() >= MAX_GONE_VERSIONS && !self.gone_versions.contains_key(&room)
        {
            self.gone_versions.clear(); // forgetting only weakens the ordering of late calls
        }
        let v = self.gone_versions.entry(room).or_insert(0);
        *v = (*v).max(version);
    }

    fn remember_record(
        &mut self,
        now: Instant,
        room: String,
        version: u64,
        recording: Option<String>,
    ) {
        if version == 0 {
            return;
        }
        if self.gone_records.len() >= MAX_GONE_VERSIONS && !self.gone_records.contains_key(&room) {
            self.gone_records.clear();
        }
        self.gone_records.insert(room, (version, recording, now));
    }

    /// `peer` if `session` is its current one.
    fn current(&mut self, room: &str, peer: &str, session: u64) -> Result<&mut Member, CoreError> {
        let m = self.member_mut(room, peer)?;
        if m.session != session {
            return Err(CoreError::StaleSession);
        }
        Ok(m)
    }

    /// Everyone's connection judged (once a second): a band that held is told to the room.
    fn judge_connections(&mut self, ms: u64) {
        for (name, r) in self.rooms.iter_mut() {
            for (id, m) in r.members.iter_mut().filter(|(_, m)| m.answered) {
                let down = m.downlink.recent_window(ms, crate::quality::DOWN_STALE_MS);
                if let Some(quality) = m.quality.evaluate(down) {
                    self.out.push_back(Output::Event(SfuEvent::Quality {
                        room: name.clone(),
                        participant: id.clone(),
                        quality,
                        sfu: Some(self.sfu_id.clone()),
                        version: None, // given by the outbox
                    }));
                }
            }
        }
    }

    /// The first speaker tick after `now` on the grid every room shares.
    fn next_tick(&self, now: Instant) -> Instant {
        let tick = SPEAKER_TICK.as_micros() as u64;
        let since = now.saturating_duration_since(self.epoch).as_micros() as u64;
        self.epoch + Duration::from_micros((since / tick + 1) * tick)
    }

    fn member_mut(&mut self, room: &str, peer: &str) -> Result<&mut Member, CoreError> {
        self.rooms
            .get_mut(room)
            .and_then(|r| r.members.get_mut(peer))
            .ok_or_else(|| CoreError::UnknownParticipant(peer.into()))
    }

    /// The layer `publisher`'s `kind` track should reach `m` at (`None`: nothing).
    fn want(m: &Member, publisher: &str, kind: TrackKind) -> Option<usize> {
        match kind {
            TrackKind::Mic | TrackKind::ScreenAudio => Some(0),
            TrackKind::Camera => {
                let tile = match m.views.get(&(publisher.to_string(), Source::Camera)) {
                    Some(&h) => layer_for_tile(h, 1.0),
                    None => Some(DEFAULT_CAMERA_LAYER),
                };
                // The downlink's share for each shown camera, after the shown screens.
                let shown = |s: Source| {
                    m.views
                        .iter()
                        .filter(|((_, src), h)| *src == s && **h > 0)
                        .count()
                };
                let cap = camera_cap(
                    m.downlink.estimate_bps(),
                    shown(Source::Screen),
                    shown(Source::Camera).max(1),
                );
                tile.map(|l| l.min(cap))
            }
            TrackKind::Screen => match m.views.get(&(publisher.to_string(), Source::Screen)) {
                Some(0) => None,
                _ => Some(0),
            },
        }
    }

    /// `subscriber` receives `track` from now on. False if it already did.
    fn subscribe(&mut self, room: &str, subscriber: &str, track: TrackId) -> bool {
        let sub = self.id();
        let r = self.rooms.get_mut(room).expect("caller checked the room");
        let Some(t) = r.tracks.get_mut(&track) else {
            return false;
        };
        let Some(m) = r.members.get_mut(subscriber) else {
            return false;
        };
        if m.receiving.contains_key(&track) {
            return false;
        }
        let want = Self::want(m, &t.publisher, t.kind);
        let session = m.session;
        m.receiving.insert(track, sub);
        t.subs.insert(sub);
        r.subs.insert(
            sub,
            Sub {
                subscriber: subscriber.into(),
                session,
                track,
                want,
            },
        );
        self.out.push_back(Output::Subscribe {
            room: room.into(),
            sub,
            subscriber: subscriber.into(),
            session,
            track,
            want,
        });
        true
    }

    /// `peer`'s session ends. `replacing`: a new session of it joins at once (the room stays even
    /// when it was the only one in it, and so does what the speaker detector knows of it).
    fn leave(&mut self, now: Instant, room: &str, peer: &str, replacing: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.remove(peer) else {
            return;
        };
        if !replacing {
            if let Some(d) = r.speakers.get_mut(&m.scope) {
                d.remove(peer);
            }
        }
        // Its tracks leave every subscriber, who get a new offer.
        let mut touched = BTreeMap::new();
        for t in &m.published {
            let Some(track) = r.tracks.remove(t) else {
                continue;
            };
            if track.recorded {
                self.out.push_back(Output::RecordTrackEnd {
                    room: room.into(),
                    track: *t,
                });
            }
            for sub in track.subs {
                let Some(s) = r.subs.remove(&sub) else {
                    continue;
                };
                if let Some(other) = r.members.get_mut(&s.subscriber) {
                    other.receiving.remove(t);
                }
                self.out.push_back(Output::Unsubscribe {
                    room: room.into(),
                    sub,
                    subscriber: s.subscriber.clone(),
                    session: s.session,
                    track: *t,
                    remove_track: true,
                });
                touched.insert(s.subscriber, s.session);
            }
        }
        // Its receptions leave the publishers' fan-out (its session closes with it).
        for (track, sub) in m.receiving {
            r.subs.remove(&sub);
            if let Some(t) = r.tracks.get_mut(&track) {
                t.subs.remove(&sub);
            }
            self.out.push_back(Output::Unsubscribe {
                room: room.into(),
                sub,
                subscriber: peer.into(),
                session: m.session,
                track,
                remove_track: false,
            });
        }
        if r.members.is_empty() && !replacing {
            if let Some(gone) = self.rooms.remove(room) {
                self.remember_version(room.to_string(), gone.scope_version);
                if let Some(recording) = gone.recording.clone() {
                    self.out.push_back(Output::RecordingEnd {
                        room: room.into(),
                        recording,
                    });
                }
                self.remember_record(now, room.to_string(), gone.record_version, gone.recording);
            }
            self.out.push_back(Output::RoomGone { room: room.into() });
        } else {
            for who in touched.into_keys() {
                self.renegotiate(room, &who);
            }
            self.update_dynacast(now, room);
        }
    }

    /// Members move (all at once: room-mates who move together keep receiving each other
    /// without a gap): receptions that now cross scopes end (both ways), receptions within the
    /// new scopes start (both ways), everyone touched gets one new offer, and a mover who was the
    /// speaker of the scope they left is no longer (that scope is told).
    fn move_scopes(&mut self, now: Instant, room: &str, moves: Vec<(String, u32)>) {
        if moves.is_empty() {
            return;
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        for (peer, scope) in &moves {
            let Some(m) = r.members.get_mut(peer) else {
                continue;
            };
            let old = std::mem::replace(&mut m.scope, *scope);
            // A recording is of the main room: a publisher's tracks leave it with them, and
            // come back (new files) when they do.
            if let Some(recording) = r.recording.clone() {
                let main = *scope == 0;
                for (id, t) in r.tracks.iter_mut().filter(|(_, t)| &t.publisher == peer) {
                    if t.recorded == main {
                        continue;
                    }
                    t.recorded = main;
                    self.out.push_back(if main {
                        Output::RecordTrack {
                            room: room.into(),
                            track: *id,
                            recording: recording.clone(),
                        }
                    } else {
                        Output::RecordTrackEnd {
                            room: room.into(),
                            track: *id,
                        }
                    });
                }
            }
            if let Some(Some(None)) = r.speakers.get_mut(&old).map(|d| d.remove(peer)) {
                self.out.push_back(Output::Event(SfuEvent::ActiveSpeaker {
                    room: room.into(),
                    participant: None,
                    scope: old,
                    sfu: Some(self.sfu_id.clone()),
                    version: None, // given by the outbox
                }));
            }
        }
        let crossing: Vec<SubId> = r
            .subs
            .iter()
            .filter(|(_, s)| {
                r.tracks
                    .get(&s.track)
                    .is_some_and(|t| !r.shares_scope(&s.subscriber, t))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for sub in crossing {
            let Some(s) = r.subs.remove(&sub) else {
                continue;
            };
            if let Some(t) = r.tracks.get_mut(&s.track) {
                t.subs.remove(&sub);
            }
            if let Some(other) = r.members.get_mut(&s.subscriber) {
                other.receiving.remove(&s.track);
            }
            self.out.push_back(Output::Unsubscribe {
                room: room.into(),
                sub,
                subscriber: s.subscriber.clone(),
                session: s.session,
                track: s.track,
                remove_track: true,
            });
            touched.insert(s.subscriber);
        }
        // Receptions within the new scopes start (subscribe skips what is received already).
        let r = &self.rooms[room];
        let wanted: Vec<(String, TrackId)> = r
            .members
            .iter()
            .filter(|(_, m)| m.answered)
            .flat_map(|(id, _)| {
                r.tracks
                    .iter()
                    .filter(|(_, t)| r.shares_scope(id, t))
                    .map(|(tid, _)| (id.clone(), *tid))
            })
            .collect();
        for (who, track) in wanted {
            if self.subscribe(room, &who, track) {
                touched.insert(who);
            }
        }
        for who in touched {
            self.renegotiate(room, &who);
        }
        self.update_dynacast(now, room);
    }

    /// Re-derives the layer of each of `peer`'s video receptions (tile size, downlink), then the
    /// publishers' dynacast.
    fn apply_wants(&mut self, now: Instant, room: &str, peer: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.get(peer) else {
            return;
        };
        for (track, sub) in &m.receiving {
            let (Some(t), Some(s)) = (r.tracks.get(track), r.subs.get_mut(sub)) else {
                continue;
            };
            if !t.video {
                continue;
            }
            let want = Self::want(m, &t.publisher, t.kind);
            if s.want != want {
                s.want = want;
                self.out.push_back(Output::SetWant {
                    room: room.into(),
                    sub: *sub,
                    want,
                });
            }
        }
        self.update_dynacast(now, room);
    }

    /// Dynacast: for each warmed-up simulcast camera, the layers any subscriber wants; a change goes
    /// to the publisher, whose browser stops (or restarts) encoding the others. The lowest layer
    /// always stays on, so a newcomer's first frame never waits for an encoder to start.
    fn update_dynacast(&mut self, _now: Instant, room: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        for t in r.tracks.values_mut() {
            if !t.simulcast || !t.warm {
                continue;
            }
            // A recording takes the best picture there is.
            let recorded = t.recorded.then_some(LAYERS - 1);
            let top = t
                .subs
                .iter()
                .filter_map(|s| r.subs.get(s)?.want)
                .chain(recorded)
                .max()
                .unwrap_or(0);
            let active: Vec<bool> = (0..LAYERS).map(|l| l <= top).collect();
            if t.active_layers.as_ref() == Some(&active) {
                continue;
            }
            t.active_layers = Some(active.clone());
            self.out.push_back(Output::Event(SfuEvent::PublishLayers {
                room: room.into(),
                participant: t.publisher.clone(),
                active,
                sfu: Some(self.sfu_id.clone()),
                version: None, // given by the outbox
            }));
        }
    }

    // ----- reads for the shell, `/v1/rooms` and tests -----

    /// Whether `sub` is still a reception (the shell adds a transceiver after an await: one made
    /// for a reception that ended meanwhile is taken off again).
    pub fn has_sub(&self, room: &str, sub: SubId) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.subs.contains_key(&sub))
    }

    /// The current session of `peer`, if it has one here.
    pub fn session(&self, room: &str, peer: &str) -> Option<u64> {
        Some(self.rooms.get(room)?.members.get(peer)?.session)
    }

    /// The layer `sub` is wanted at now.
    pub fn sub_want(&self, room: &str, sub: SubId) -> Option<Option<usize>> {
        Some(self.rooms.get(room)?.subs.get(&sub)?.want)
    }

    /// `peer`'s downlink estimate (bit/s) and the loss of its last window (0–1).
    pub fn downlink(&self, room: &str, peer: &str) -> Option<(f64, f64)> {
        let d = &self.rooms.get(room)?.members.get(peer)?.downlink;
        Some((d.estimate_bps(), d.last_loss()))
    }

    /// The active speaker of the main room.
    pub fn speaker(&self, room: &str) -> Option<&str> {
        self.scope_speaker(room, 0)
    }

    /// The active speaker of one scope of the room (a breakout room's number; 0: the main room).
    pub fn scope_speaker(&self, room: &str, scope: u32) -> Option<&str> {
        self.rooms.get(room)?.speakers.get(&scope)?.current()
    }

    /// The scope `peer` is in.
    pub fn scope(&self, room: &str, peer: &str) -> Option<u32> {
        Some(self.rooms.get(room)?.members.get(peer)?.scope)
    }

    /// Rooms and who is in them: what each publishes, receives and its downlink estimate.
    pub fn describe(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, r) in &self.rooms {
            let list: Vec<serde_json::Value> = r
                .members
                .iter()
                .map(|(id, m)| {
                    let published: Vec<&str> = m
                        .published
                        .iter()
                        .filter_map(|t| Some(r.tracks.get(t)?.kind.name()))
                        .collect();
                    let receiving: Vec<String> = m
                        .receiving
                        .keys()
                        .filter_map(|t| {
                            let t = r.tracks.get(t)?;
                            Some(format!("{}/{}", t.publisher, t.kind.name()))
                        })
                        .collect();
                    // What a failing end-to-end test prints (why a page gets no video): each
                    // reception's wish, the tiles the page said it shows, the layers dynacast
                    // asked of each published video. The engine adds its forwarding state
                    // under each reception's and track's `id`.
                    let subs: Vec<serde_json::Value> = m
                        .receiving
                        .iter()
                        .filter_map(|(t, sub)| {
                            let t = r.tracks.get(t)?;
                            Some(serde_json::json!({
                                "id": sub,
                                "track": format!("{}/{}", t.publisher, t.kind.name()),
                                "want": r.subs.get(sub).and_then(|s| s.want),
                            }))
                        })
                        .collect();
                    let tracks: Vec<serde_json::Value> = m
                        .published
                        .iter()
                        .filter_map(|id| {
                            let t = r.tracks.get(id)?;
                            Some(serde_json::json!({
                                "id": id,
                                "kind": t.kind.name(),
                                "active_layers": t.active_layers,
                                "subscribers": t.subs.len(),
                            }))
                        })
                        .collect();
                    let views: serde_json::Map<String, serde_json::Value> = m
                        .views
                        .iter()
                        .map(|((publisher, source), h)| {
                            (format!("{publisher}/{source:?}"), (*h).into())
                        })
                        .collect();
                    serde_json::json!({
                        "id": id,
                        "scope": m.scope,
                        "answered": m.answered,
                        "awaiting_answer": m.neg.awaiting_answer(),
                        "published": published,
                        "receiving": receiving,
                        "downlink_bps": m.downlink.estimate_bps() as u64,
                        "views": views,
                        "subs": subs,
                        "tracks": tracks,
                    })
                })
                .collect();
            out.insert(name.clone(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiation::{ANSWER_WAIT, ANSWER_WAIT_MAX, OFFER_GIVE_UP_AFTER};

    const R: &str = "room";

    struct Sim {
        core: SfuCore,
        now: Instant,
        session: u64,
        sessions: HashMap<String, u64>,
    }

    impl Sim {
        fn new() -> Sim {
            let now = Instant::now();
            Sim {
                core: SfuCore::new(now, 1_764_000_000_000_000, "sfu-test"),
                now,
                session: 0,
                sessions: HashMap::new(),
            }
        }

        fn input(&mut self, i: Input) {
            self.core.handle_input(self.now, i).unwrap();
        }

        /// Everything the core asked for, with every offer made, delivered and answered at once
        /// (a fast shell and browser); an offer queued meanwhile follows in the same call.
        fn outputs(&mut self) -> Vec<Output> {
            let mut all = Vec::new();
            while let Some(o) = self.core.poll_output() {
                if let Output::Renegotiate {
                    room,
                    peer,
                    session,
                } = &o
                {
                    let (room, peer, session) = (room.clone(), peer.clone(), *session);
                    // Gone since (as a shell may find): nothing to make.
                    let Ok(generation) = self.core.offer_made(self.now, &room, &peer, session)
                    else {
                        all.push(o);
                        continue;
                    };
                    self.input(Input::OfferDelivered {
                        room: room.clone(),
                        peer: peer.clone(),
                        session,
                        generation,
                    });
                    self.input(Input::Answered {
                        room,
                        peer,
                        session,
                        ok: true,
                    });
                }
                all.push(o);
            }
            all
        }

        /// The outputs as they come, no offer made or answered.
        fn raw_outputs(&mut self) -> Vec<Output> {
            std::iter::from_fn(|| self.core.poll_output()).collect()
        }

        /// A new session of `peer` in `room`, joined but not answered yet.
        fn join_only(&mut self, room: &str, peer: &str) -> u64 {
            self.session += 1;
            let session = self.session;
            self.sessions.insert(peer.into(), session);
            self.input(Input::Join {
                room: room.into(),
                peer: peer.into(),
                session,
                blocked: 0,
                scope: 0,
            });
            session
        }

        fn answer(&mut self, room: &str, peer: &str) {
            let session = self.sessions[peer];
            self.input(Input::AnswerSent {
                room: room.into(),
                peer: peer.into(),
                session,
            });
        }

        /// Joins and answers `peer` in `room`; returns its session.
        fn join_in(&mut self, room: &str, peer: &str) -> u64 {
            let session = self.join_only(room, peer);
            self.answer(room, peer);
            session
        }

        fn join(&mut self, peer: &str) -> u64 {
            self.join_in(R, peer)
        }

        fn publish_in(
            &mut self,
            room: &str,
            peer: &str,
            kind: TrackKind,
            simulcast: bool,
        ) -> TrackId {
            let session = self.sessions[peer];
            let track = self.core.publish(room, peer, session, kind).unwrap();
            self.input(Input::Published {
                room: room.into(),
                peer: peer.into(),
                session,
                track,
                kind,
                simulcast,
                video: !kind.is_audio(),
            });
            track
        }

        fn publish(&mut self, peer: &str, kind: TrackKind, simulcast: bool) -> TrackId {
            self.publish_in(R, peer, kind, simulcast)
        }

        fn views(&mut self, peer: &str, views: Vec<TileView>) {
            self.input(Input::Views {
                room: R.into(),
                peer: peer.into(),
                views,
            });
        }

        /// Runs the clock forward, waking at every timeout on the way (as the shell does).
        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(t) = self.core.poll_timeout().filter(|t| *t <= end) {
                self.now = t.max(self.now);
                self.core.handle_timeout(self.now);
            }
            self.now = end;
        }

        /// The reception of `track` by `subscriber`, from the outputs so far.
        fn sub_of(out: &[Output], subscriber: &str, track: TrackId) -> SubId {
            out.iter()
                .find_map(|o| match o {
                    Output::Subscribe {
                        sub,
                        subscriber: s,
                        track: t,
                        ..
                    } if s == subscriber && *t == track => Some(*sub),
                    _ => None,
                })
                .expect("subscribed")
        }

        fn subscribes(out: &[Output]) -> Vec<(String, TrackId, Option<usize>)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::Subscribe {
                        subscriber,
                        track,
                        want,
                        ..
                    } => Some((subscriber.clone(), *track, *want)),
                    _ => None,
                })
                .collect()
        }

        fn renegotiated(out: &[Output]) -> Vec<(String, u64)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::Renegotiate { peer, session, .. } => Some((peer.clone(), *session)),
                    _ => None,
                })
                .collect()
        }

        fn layers(out: &[Output]) -> Vec<(String, Vec<bool>)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::Event(SfuEvent::PublishLayers {
                        participant,
                        active,
                        ..
                    }) => Some((participant.clone(), active.clone())),
                    _ => None,
                })
                .collect()
        }

        fn wants(out: &[Output]) -> Vec<(SubId, Option<usize>)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::SetWant { sub, want, .. } => Some((*sub, *want)),
                    _ => None,
                })
                .collect()
        }
    }

    fn view(publisher: &str, source: Source, height: u32) -> TileView {
        TileView {
            publisher: publisher.into(),
            source,
            height,
        }
    }

    #[test]
    fn a_track_reaches_everyone_answered_and_a_late_joiner_after_its_answer() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        let cam = s.publish("ada", TrackKind::Camera, false);
        let out = s.outputs();
        assert_eq!(
            Sim::subscribes(&out),
            vec![("bob".into(), cam, Some(DEFAULT_CAMERA_LAYER))]
        );
        assert_eq!(Sim::renegotiated(&out), vec![("bob".into(), bob)]);
        // Joined but not answered: nothing yet (a transceiver added before our answer would be
        // matched against its own offer).
        let cy = s.join_only(R, "cy");
        let mic = s.publish("bob", TrackKind::Mic, false);
        let out = s.outputs();
        assert_eq!(Sim::subscribes(&out), vec![("ada".into(), mic, Some(0))]);
        s.answer(R, "cy");
        let out = s.outputs();
        let mut got = Sim::subscribes(&out);
        got.sort_by_key(|(_, t, _)| *t);
        assert_eq!(
            got,
            vec![
                ("cy".into(), cam, Some(DEFAULT_CAMERA_LAYER)),
                ("cy".into(), mic, Some(0))
            ]
        );
        assert_eq!(
            Sim::renegotiated(&out),
            vec![("cy".into(), cy)],
            "one offer for both tracks, for its session"
        );
    }

    #[test]
    fn a_second_track_of_a_kind_is_refused_and_an_unknown_sender_too() {
        let mut s = Sim::new();
        let ada = s.join("ada");
        s.publish("ada", TrackKind::Camera, false);
        assert_eq!(
            s.core.publish(R, "ada", ada, TrackKind::Camera),
            Err(CoreError::ExtraTrack("ada".into(), "video"))
        );
        assert!(s.core.publish(R, "ada", ada, TrackKind::Screen).is_ok());
        assert_eq!(
            s.core.publish(R, "zed", 1, TrackKind::Mic),
            Err(CoreError::UnknownParticipant("zed".into()))
        );
        assert!(s.core.handle_audio_level(s.now, R, "zed", 3).is_err());
    }

    #[test]
    fn leaving_takes_its_tracks_off_everyone_and_its_receptions_off_the_publishers() {
        let mut s = Sim::new();
        let ada = s.join("ada");
        let bob = s.join("bob");
        let cy = s.join("cy");
        let a_cam = s.publish("ada", TrackKind::Camera, false);
        s.publish("ada", TrackKind::Mic, false);
        let b_mic = s.publish("bob", TrackKind::Mic, false);
        s.outputs();
        s.input(Input::Leave {
            room: R.into(),
            peer: "ada".into(),
            session: Some(ada),
        });
        let out = s.outputs();
        let offs: Vec<(String, u64, TrackId, bool)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Unsubscribe {
                    subscriber,
                    session,
                    track,
                    remove_track,
                    ..
                } if *track == a_cam || *track == b_mic => {
                    Some((subscriber.clone(), *session, *track, *remove_track))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            offs,
            vec![
                ("bob".into(), bob, a_cam, true),
                ("cy".into(), cy, a_cam, true),
                ("ada".into(), ada, b_mic, false)
            ]
        );
        assert_eq!(
            Sim::renegotiated(&out),
            vec![("bob".into(), bob), ("cy".into(), cy)],
            "one offer each for both of its tracks"
        );
        let d = s.core.describe();
        assert_eq!(d[R].as_array().unwrap().len(), 2);
        assert_eq!(d[R][0]["receiving"], serde_json::json!([]));
        assert_eq!(d[R][1]["receiving"], serde_json::json!(["bob/audio"]));
        // The last one out ends the room.
        for p in ["bob", "cy"] {
            s.input(Input::Leave {
                room: R.into(),
                peer: p.into(),
                session: None,
            });
        }
        assert!(s.outputs().contains(&Output::RoomGone { room: R.into() }));
        assert_eq!(s.core.poll_timeout(), None);
    }

    #[test]
    fn a_replaced_session_leaves_once_keeps_the_room_and_stale_inputs_change_nothing() {
        let mut s = Sim::new();
        let old = s.join("ada");
        let cam = s.publish("ada", TrackKind::Camera, false);
        s.outputs();
        // Ada alone reloads: a new offer, a new session. The room stays.
        let new = s.join("ada");
        let out = s.outputs();
        assert!(!out.contains(&Output::RoomGone { room: R.into() }));
        assert_eq!(s.core.session(R, "ada"), Some(new));
        s.join("bob");
        let out = s.outputs();
        assert!(
            Sim::subscribes(&out).is_empty(),
            "the old camera went with its session"
        );
        let stale = |s: &mut Sim, i: Input| {
            assert_eq!(s.core.handle_input(s.now, i), Err(CoreError::StaleSession));
        };
        stale(
            &mut s,
            Input::Leave {
                room: R.into(),
                peer: "ada".into(),
                session: Some(old),
            },
        );
        stale(
            &mut s,
            Input::AnswerSent {
                room: R.into(),
                peer: "ada".into(),
                session: old,
            },
        );
        stale(
            &mut s,
            Input::Published {
                room: R.into(),
                peer: "ada".into(),
                session: old,
                track: cam + 100,
                kind: TrackKind::Camera,
                simulcast: false,
                video: true,
            },
        );
        stale(
            &mut s,
            Input::ReceiverReport {
                room: R.into(),
                peer: "ada".into(),
                session: old,
                fraction_lost: 255,
                bytes_sent: 1,
                packets_sent: 1,
            },
        );
        // An offer that lost the race to a newer one joins nothing.
        stale(
            &mut s,
            Input::Join {
                room: R.into(),
                peer: "ada".into(),
                session: old,
                blocked: 0,
                scope: 0,
            },
        );
        assert_eq!(
            s.core.publish(R, "ada", old, TrackKind::Camera),
            Err(CoreError::StaleSession)
        );
        assert!(s.outputs().is_empty());
        assert_eq!(s.core.session(R, "ada"), Some(new));
        // The new session's camera is its own, not refused as an extra track.
        let cam2 = s.publish("ada", TrackKind::Camera, false);
        assert_eq!(
            Sim::subscribes(&s.outputs()),
            vec![("bob".into(), cam2, Some(DEFAULT_CAMERA_LAYER))]
        );
    }

    fn records(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::RecordTrack {
                    track, recording, ..
                } => Some(format!("+{track:?} {recording}")),
                Output::RecordTrackEnd { track, .. } => Some(format!("-{track:?}")),
                Output::RecordingEnd { recording, .. } => Some(format!("end {recording}")),
                _ => None,
            })
            .collect()
    }

    fn record(s: &mut Sim, room: &str, version: u64, recording: Option<&str>) {
        s.input(Input::Record {
            room: room.into(),
            version,
            recording: recording.map(Into::into),
        });
    }

    #[test]
    fn a_recording_is_of_the_main_room_people_in_breakout_rooms_are_not_recorded_there() {
        let mut s = Sim::new();
        s.join("ada");
        s.join("bob");
        let ada_mic = s.publish("ada", TrackKind::Mic, false);
        let bob_mic = s.publish("bob", TrackKind::Mic, false);
        s.outputs();
        let scopes = |s: &mut Sim, version: u64, to: &[(&str, u32)]| {
            s.input(Input::Scopes {
                room: R.into(),
                version,
                scopes: to.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
            });
        };
        // Bob is in a breakout room when the recording starts: only Ada is recorded.
        scopes(&mut s, 1, &[("bob", 1)]);
        s.outputs();
        record(&mut s, R, 1, Some("rec-1"));
        assert_eq!(records(&s.outputs()), vec![format!("+{ada_mic:?} rec-1")]);
        // What Bob publishes there is not recorded either.
        let bob_cam = s.publish("bob", TrackKind::Camera, false);
        assert!(records(&s.outputs()).is_empty());
        // Back in the main room: his tracks are (new files); Ada off to a breakout: hers end.
        scopes(&mut s, 2, &[("ada", 2)]);
        assert_eq!(
            records(&s.outputs()),
            vec![
                format!("-{ada_mic:?}"),
                format!("+{bob_mic:?} rec-1"),
                format!("+{bob_cam:?} rec-1")
            ]
        );
        // The same scopes again change nothing; stopping ends what is recorded.
        scopes(&mut s, 3, &[("ada", 2)]);
        assert!(records(&s.outputs()).is_empty());
        record(&mut s, R, 2, None);
        assert_eq!(
            records(&s.outputs()),
            vec![
                format!("-{bob_mic:?}"),
                format!("-{bob_cam:?}"),
                "end rec-1".into()
            ]
        );
    }

    #[test]
    fn a_recording_takes_every_track_at_the_top_layer_follows_joins_and_leaves_and_versions() {
        let mut s = Sim::new();
        s.join("ada");
        s.join("bob");
        let mic = s.publish("ada", TrackKind::Mic, false);
        let cam = s.publish("ada", TrackKind::Camera, true);
        let out = s.outputs();
        let bob_sub = Sim::sub_of(&out, "bob", cam);
        s.views("bob", vec![view("ada", Source::Camera, 180)]);
        s.advance(DYNACAST_WARMUP);
        let out = s.outputs();
        assert_eq!(Sim::wants(&out), vec![(bob_sub, Some(0))]);
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, false, false])]
        );
        assert!(records(&out).is_empty());
        // The room description says why Bob gets what he gets: his tile, his reception's wish,
        // the layers Ada was asked for.
        let d = s.core.describe();
        let member = |id: &str| {
            d[R].as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == id)
                .unwrap()
                .clone()
        };
        let bob = member("bob");
        assert_eq!(bob["views"]["ada/Camera"], 180, "{bob}");
        let cam_sub = bob["subs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == bob_sub)
            .unwrap();
        assert_eq!(cam_sub["track"], "ada/video", "{bob}");
        assert_eq!(cam_sub["want"], 0, "{bob}");
        let ada = member("ada");
        let cam_json = ada["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == cam)
            .unwrap()
            .clone();
        assert_eq!(
            cam_json["active_layers"],
            serde_json::json!([true, false, false]),
            "{ada}"
        );

        // Recording starts: both tracks, and the camera's top layer back on although Bob's tile
        // is small.
        record(&mut s, R, 1, Some("rec-1"));
        let out = s.outputs();
        assert_eq!(
            records(&out),
            vec![format!("+{mic:?} rec-1"), format!("+{cam:?} rec-1")]
        );
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, true, true])]
        );
        // The same call again, or an older one, changes nothing.
        record(&mut s, R, 1, Some("rec-1"));
        record(&mut s, R, 0, None);
        assert!(s.outputs().is_empty());

        // A track published while recording is recorded; one whose publisher leaves ends.
        let bob_mic = s.publish("bob", TrackKind::Mic, false);
        assert_eq!(records(&s.outputs()), vec![format!("+{bob_mic:?} rec-1")]);
        s.input(Input::Leave {
            room: R.into(),
            peer: "bob".into(),
            session: None,
        });
        let out = s.outputs();
        assert_eq!(records(&out), vec![format!("-{bob_mic:?}")]);
        // Nobody watches the camera any more: only the recording holds its layers on.
        assert!(Sim::layers(&out).is_empty());

        // Stopped: every file ends, then the recording; dynacast drops to what viewers want.
        record(&mut s, R, 2, None);
        let out = s.outputs();
        assert_eq!(
            records(&out),
            vec![format!("-{mic:?}"), format!("-{cam:?}"), "end rec-1".into()]
        );
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, false, false])]
        );

        // Another recording: the last one left started again.
        record(&mut s, R, 3, Some("rec-2"));
        assert_eq!(
            records(&s.outputs()),
            vec![format!("+{mic:?} rec-2"), format!("+{cam:?} rec-2")]
        );
        record(&mut s, R, 4, Some("rec-3"));
        assert_eq!(
            records(&s.outputs()),
            vec![
                format!("-{mic:?}"),
                format!("-{cam:?}"),
                "end rec-2".into(),
                format!("+{mic:?} rec-3"),
                format!("+{cam:?} rec-3")
            ]
        );
    }

    #[test]
    fn a_room_recorded_before_anyone_is_here_or_after_all_left_is_recorded_when_they_come() {
        let mut s = Sim::new();
        // Told before the first join (a failover: the edge sends the room's state again).
        record(&mut s, "later", 5, Some("rec-a"));
        record(&mut s, "later", 4, None); // older: ignored
        s.join_in("later", "ada");
        let mic = s.publish_in("later", "ada", TrackKind::Mic, false);
        assert_eq!(records(&s.outputs()), vec![format!("+{mic:?} rec-a")]);
        // Everyone leaves: the file and this SFU's part end; back again, it records again.
        s.input(Input::Leave {
            room: "later".into(),
            peer: "ada".into(),
            session: None,
        });
        assert_eq!(
            records(&s.outputs()),
            vec![format!("-{mic:?}"), "end rec-a".into()]
        );
        s.join_in("later", "ada");
        let mic2 = s.publish_in("later", "ada", TrackKind::Mic, false);
        assert_eq!(records(&s.outputs()), vec![format!("+{mic2:?} rec-a")]);
        // Back after more than a minute: that old state records nothing any more (the room sends
        // it again when it moves here), but its version still orders later calls.
        s.input(Input::Leave {
            room: "later".into(),
            peer: "ada".into(),
            session: None,
        });
        s.outputs();
        s.advance(RECORD_KEPT_FOR + Duration::from_secs(1));
        s.join_in("later", "ada");
        s.publish_in("later", "ada", TrackKind::Mic, false);
        assert!(records(&s.outputs()).is_empty());
        record(&mut s, "later", 5, Some("rec-old"));
        assert!(records(&s.outputs()).is_empty(), "an old version");
        // A stop for a room not here is kept too: it does not record on return.
        record(&mut s, "other", 2, Some("rec-b"));
        record(&mut s, "other", 3, None);
        s.join_in("other", "bob");
        s.publish_in("other", "bob", TrackKind::Mic, false);
        assert!(records(&s.outputs()).is_empty());
    }

    #[test]
    fn views_and_downlink_pick_each_layer_and_dynacast_follows_after_the_warmup() {
        let mut s = Sim::new();
        s.join("ada");
        s.join("bob");
        s.join("cy");
        let cam = s.publish("ada", TrackKind::Camera, true);
        let out = s.outputs();
        let (bob_sub, cy_sub) = (Sim::sub_of(&out, "bob", cam), Sim::sub_of(&out, "cy", cam));
        // Bob shows Ada big, Cy small: layers 2 and 0. No dynacast during the warm-up.
        s.views("bob", vec![view("ada", Source::Camera, 720)]);
        s.views("cy", vec![view("ada", Source::Camera, 180)]);
        let out = s.outputs();
        assert_eq!(
            Sim::wants(&out),
            vec![(bob_sub, Some(2)), (cy_sub, Some(0))]
        );
        assert!(Sim::layers(&out).is_empty(), "warming up");
        s.advance(DYNACAST_WARMUP);
        let out = s.outputs();
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, true, true])]
        );
        // Bob hides the tile: only layer 0 is still needed.
        s.views("bob", vec![view("ada", Source::Camera, 0)]);
        let out = s.outputs();
        assert_eq!(Sim::wants(&out), vec![(bob_sub, None)]);
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, false, false])]
        );
        // Cy makes Ada big: 720p for it, dynacast turns everything on again.
        s.views("cy", vec![view("ada", Source::Camera, 720)]);
        let out = s.outputs();
        assert_eq!(Sim::wants(&out), vec![(cy_sub, Some(2))]);
        assert_eq!(
            Sim::layers(&out),
            vec![("ada".into(), vec![true, true, true])]
        );
        // Then Cy's downlink collapses under loss: the estimate falls, its layer with it, and the
        // upper layers nobody can take any more are switched off.
        let cy = s.sessions["cy"];
        let before = s.core.downlink(R, "cy").unwrap().0;
        let mut all = Vec::new();
        for i in 0..20u64 {
            s.now += Duration::from_millis(1_000);
            s.input(Input::ReceiverReport {
                room: R.into(),
                peer: "cy".into(),
                session: cy,
                fraction_lost: 128,
                bytes_sent: i * 50_000,
                packets_sent: i * 60,
            });
            all.extend(s.outputs());
        }
        let after = s.core.downlink(R, "cy").unwrap().0;
        assert!(after < before / 4.0, "{before} → {after}");
        assert_eq!(s.core.sub_want(R, cy_sub), Some(Some(0)));
        assert_eq!(Sim::wants(&all).last(), Some(&(cy_sub, Some(0))));
        assert_eq!(
            Sim::layers(&all).last(),
            Some(&("ada".to_string(), vec![true, false, false]))
        );
        assert_eq!(
            s.core.describe()[R][2]["downlink_bps"],
            serde_json::json!(after as u64)
        );
    }

    #[test]
    fn the_sfu_judges_each_connection_by_its_loss_and_tells_the_room_on_change() {
        use edgemeet_shared::health::Quality;
        let mut s = Sim::new();
        let ada = s.join("ada");
        let bob = s.join("bob");
        s.publish("ada", TrackKind::Camera, true);
        s.outputs();
        let told = |out: &[Output]| -> Vec<(String, Quality)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::Event(SfuEvent::Quality {
                        participant,
                        quality,
                        sfu,
                        ..
                    }) => {
                        assert_eq!(sfu.as_deref(), Some("sfu-test"));
                        Some((participant.clone(), *quality))
                    }
                    _ => None,
                })
                .collect()
        };
        // Nothing is judged before a session connects.
        s.advance(Duration::from_millis(5_000));
        assert!(told(&s.outputs()).is_empty());
        for (peer, session) in [("ada", ada), ("bob", bob)] {
            s.input(Input::Link {
                room: R.into(),
                peer: peer.into(),
                session,
                up: true,
            });
        }
        // Each second: what Ada's camera brought (`up` of 100 packets expected), and Bob's
        // receiver report and NACKs (`down` of the 100 video packets forwarded to him that
        // second; his reports' own loss figure says 10 % all along — what a lossy publisher's
        // gaps would make it say — and is not his link's).
        let second = |s: &mut Sim, i: u64, up: u64, down: u16| {
            s.input(Input::Uplink {
                room: R.into(),
                peer: "ada".into(),
                session: ada,
                expected: 100,
                received: up,
            });
            s.input(Input::Nacked {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
                ssrc: 1,
                seqs: (0..down).map(|k| (i * 100) as u16 + k).collect(),
            });
            s.input(Input::ReceiverReport {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
                fraction_lost: 26,
                bytes_sent: i * 60_000,
                packets_sent: i * 100,
            });
            s.advance(Duration::from_millis(1_000));
            told(&s.outputs())
        };
        let mut i = 1;
        let mut run = |s: &mut Sim, n: usize, up: u64, down: u16| {
            let mut all = Vec::new();
            for _ in 0..n {
                all.extend(second(s, i, up, down));
                i += 1;
            }
            all
        };
        // Clean: both excellent once they held three judgements, told once.
        let out = run(&mut s, 5, 100, 0);
        assert_eq!(
            out,
            vec![
                ("ada".to_string(), Quality::Excellent),
                ("bob".to_string(), Quality::Excellent)
            ]
        );
        // Bob's downlink loses 10 %: poor (100 − 600 × 0.1 = 40), after the hold.
        let out = run(&mut s, 5, 100, 10);
        assert_eq!(out, vec![("bob".to_string(), Quality::Poor)]);
        // A one-second burst on Ada's uplink is not a bad connection; 5 % for long is good.
        assert!(run(&mut s, 1, 60, 10).is_empty());
        let out = run(&mut s, 5, 95, 10);
        assert_eq!(out, vec![("ada".to_string(), Quality::Good)]);
        // Bob stops answering ICE: lost; he answers again and his link is clean: excellent.
        s.input(Input::Link {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            up: false,
        });
        let out = run(&mut s, 4, 95, 10);
        assert_eq!(out, vec![("bob".to_string(), Quality::Lost)]);
        s.input(Input::Link {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            up: true,
        });
        let out = run(&mut s, 5, 100, 0);
        assert_eq!(
            out,
            vec![
                ("ada".to_string(), Quality::Excellent),
                ("bob".to_string(), Quality::Excellent)
            ]
        );
        // A stale session's counts change nothing.
        assert!(s
            .core
            .handle_input(
                s.now,
                Input::Uplink {
                    room: R.into(),
                    peer: "ada".into(),
                    session: ada + 100,
                    expected: 100,
                    received: 0,
                }
            )
            .is_err());
    }

    #[test]
    fn a_failed_subscription_no_longer_holds_a_layer_on() {
        let mut s = Sim::new();
        s.join("ada");
        s.join("bob");
        let cam = s.publish("ada", TrackKind::Camera, true);
        let out = s.outputs();
        let sub = Sim::sub_of(&out, "bob", cam);
        s.views("bob", vec![view("ada", Source::Camera, 720)]);
        s.advance(DYNACAST_WARMUP);
        assert_eq!(
            Sim::layers(&s.outputs()),
            vec![("ada".into(), vec![true, true, true])]
        );
        s.input(Input::SubscribeFailed {
            room: R.into(),
            sub,
        });
        assert!(!s.core.has_sub(R, sub));
        assert_eq!(
            Sim::layers(&s.outputs()),
            vec![("ada".into(), vec![true, false, false])]
        );
    }

    #[test]
    fn the_loudest_becomes_speaker_after_the_switch_delay_on_one_tick_grid() {
        let mut s = Sim::new();
        s.join("ada");
        s.join("bob");
        s.join_in("other", "cy");
        s.publish("ada", TrackKind::Mic, false);
        s.publish("bob", TrackKind::Mic, false);
        s.outputs();
        let mut speakers = Vec::new();
        let mut wakes = 0;
        for _ in 0..100 {
            // 20 ms audio frames: Bob loud, Ada near silence.
            s.now += Duration::from_millis(20);
            s.core.handle_audio_level(s.now, R, "bob", 20).unwrap();
            s.core.handle_audio_level(s.now, R, "ada", 120).unwrap();
            if s.core.poll_timeout().is_some_and(|t| t <= s.now) {
                wakes += 1;
                s.core.handle_timeout(s.now);
            }
            for o in s.outputs() {
                if let Output::Event(SfuEvent::ActiveSpeaker { participant, .. }) = o {
                    speakers.push(participant);
                }
            }
        }
        assert_eq!(
            speakers,
            vec![Some("bob".to_string())],
            "one change, no flapping"
        );
        assert_eq!(s.core.speaker(R), Some("bob"));
        // Two rooms, one grid: 2 s of 200 ms ticks is 10 wake-ups, not 20.
        assert_eq!(wakes, 10);
        // Late by a second: one tick, and the next one is on the grid again.
        s.now += Duration::from_millis(1_050);
        s.core.handle_timeout(s.now);
        let next = s.core.poll_timeout().unwrap();
        assert!(next > s.now && next <= s.now + SPEAKER_TICK);
    }

    #[test]
    fn breakout_scopes_carry_only_their_own_media_and_speaker_and_moving_back_restores_all() {
        let mut s = Sim::new();
        for p in ["ada", "bob", "cy", "dee"] {
            s.join(p);
            s.publish(p, TrackKind::Camera, false);
        }
        let everyone = s.outputs();
        assert_eq!(
            Sim::subscribes(&everyone).len(),
            12,
            "all see all in the main room"
        );
        let receives = |s: &Sim, p: &str| -> BTreeSet<String> {
            let r = &s.core.rooms[R];
            r.members[p]
                .receiving
                .keys()
                .map(|t| r.tracks[t].publisher.clone())
                .collect()
        };
        let scopes = |s: &mut Sim, version: u64, to: &[(&str, u32)]| {
            s.input(Input::Scopes {
                room: R.into(),
                version,
                scopes: to.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
            });
        };
        // Ada and Bob to room 1, Cy and Dee to room 2, all at once.
        scopes(&mut s, 1, &[("ada", 1), ("bob", 1), ("cy", 2), ("dee", 2)]);
        let moved = s.outputs();
        assert_eq!(receives(&s, "ada"), BTreeSet::from(["bob".to_string()]));
        assert_eq!(receives(&s, "bob"), BTreeSet::from(["ada".to_string()]));
        assert_eq!(receives(&s, "cy"), BTreeSet::from(["dee".to_string()]));
        assert_eq!(receives(&s, "dee"), BTreeSet::from(["cy".to_string()]));
        // Room-mates who moved together keep what they had (no gap): only the receptions across
        // rooms end, each taking its track off the session; nothing is subscribed again.
        let removed = moved
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Unsubscribe {
                        remove_track: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(removed, 8);
        assert!(Sim::subscribes(&moved).is_empty(), "{moved:?}");
        let mut touched: Vec<String> = Sim::renegotiated(&moved)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        touched.sort();
        assert_eq!(touched, ["ada", "bob", "cy", "dee"], "one offer each");
        // An older version arriving late, or the same one again, changes nothing.
        scopes(&mut s, 0, &[]);
        scopes(&mut s, 1, &[("ada", 1), ("bob", 1), ("cy", 2), ("dee", 2)]);
        assert!(s.outputs().is_empty());
        assert_eq!(s.core.scope(R, "ada"), Some(1));
        // Someone who joins while rooms are open starts where their offer says; the next
        // version places them.
        s.join("eve");
        assert_eq!(s.core.scope(R, "eve"), Some(0));
        scopes(
            &mut s,
            2,
            &[("ada", 1), ("bob", 1), ("cy", 2), ("dee", 2), ("eve", 2)],
        );
        s.outputs();
        s.publish("eve", TrackKind::Mic, false);
        let out = s.outputs();
        let mut to: Vec<String> = Sim::subscribes(&out)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        to.sort();
        assert_eq!(
            to,
            ["cy", "dee"],
            "a track published in room 2 reaches room 2 only"
        );
        // Each room has its own speaker.
        s.publish("ada", TrackKind::Mic, false);
        s.outputs();
        let mut speakers = BTreeMap::new();
        for _ in 0..100 {
            s.now += Duration::from_millis(20);
            s.core.handle_audio_level(s.now, R, "ada", 20).unwrap();
            s.core.handle_audio_level(s.now, R, "eve", 25).unwrap();
            if s.core.poll_timeout().is_some_and(|t| t <= s.now) {
                s.core.handle_timeout(s.now);
            }
            for o in s.outputs() {
                if let Output::Event(SfuEvent::ActiveSpeaker {
                    participant, scope, ..
                }) = o
                {
                    speakers.insert(scope, participant);
                }
            }
        }
        assert_eq!(
            speakers,
            BTreeMap::from([(1, Some("ada".to_string())), (2, Some("eve".to_string()))])
        );
        assert_eq!(s.core.scope_speaker(R, 1), Some("ada"));
        assert_eq!(
            s.core.speaker(R),
            None,
            "nobody speaks in the empty main room"
        );
        // Everyone back: everyone receives everyone again; the speakers who left their room are
        // no longer its speakers, and each room is told.
        scopes(&mut s, 3, &[]);
        let back = s.outputs();
        let cleared: BTreeSet<u32> = back
            .iter()
            .filter_map(|o| match o {
                Output::Event(SfuEvent::ActiveSpeaker {
                    participant: None,
                    scope,
                    ..
                }) => Some(*scope),
                _ => None,
            })
            .collect();
        assert_eq!(cleared, BTreeSet::from([1, 2]));
        assert_eq!(s.core.scope_speaker(R, 1), None);
        for p in ["ada", "bob", "cy", "dee", "eve"] {
            let expected: BTreeSet<String> = ["ada", "bob", "cy", "dee", "eve"]
                .into_iter()
                .filter(|o| *o != p)
                .map(String::from)
                .collect();
            assert_eq!(receives(&s, p), expected, "{p}");
        }
        // (Ada's mic and camera both: a publisher's tracks all follow it.)
        assert_eq!(s.core.rooms[R].members["bob"].receiving.len(), 5);
        // Scopes for a room nobody joined here: nothing to do now, but its version is kept: an
        // older call arriving after someone joined changes nothing.
        s.input(Input::Scopes {
            room: "later".into(),
            version: 9,
            scopes: vec![("x".into(), 1)],
        });
        assert!(s.outputs().is_empty());
        s.join_in("later", "x");
        s.input(Input::Scopes {
            room: "later".into(),
            version: 8,
            scopes: vec![("x".into(), 2)],
        });
        assert_eq!(s.core.scope("later", "x"), Some(0), "older than 9: ignored");
    }

    #[test]
    fn a_subscriber_heard_again_after_an_outage_gets_a_keyframe_of_each_video() {
        let mut s = Sim::new();
        s.join("ada");
        let cam = s.publish("ada", TrackKind::Camera, true);
        s.publish("ada", TrackKind::Mic, false);
        let bob = s.join("bob");
        let out = s.outputs();
        let cam_sub = Sim::sub_of(&out, "bob", cam);
        let heard = |s: &mut Sim| {
            s.input(Input::Heard {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
            });
            s.outputs()
                .into_iter()
                .filter(|o| matches!(o, Output::SubKeyframe { .. }))
                .collect::<Vec<_>>()
        };
        // RTCP every second or so: nothing to do.
        for _ in 0..5 {
            assert!(heard(&mut s).is_empty());
            s.advance(Duration::from_millis(1_500));
        }
        // Nothing for 3 s (the link was down), then RTCP again: a keyframe of the camera only.
        s.advance(Duration::from_millis(1_500));
        assert_eq!(
            heard(&mut s),
            vec![Output::SubKeyframe {
                room: R.into(),
                sub: cam_sub,
                track: cam
            }]
        );
        assert!(heard(&mut s).is_empty(), "once per return");
        // A stale session's RTCP changes nothing.
        let err = s.core.handle_input(
            s.now,
            Input::Heard {
                room: R.into(),
                peer: "bob".into(),
                session: bob + 100,
            },
        );
        assert_eq!(err, Err(CoreError::StaleSession));
    }

    #[test]
    fn lifting_a_block_asks_for_a_keyframe_of_that_video_only() {
        let mut s = Sim::new();
        s.join("ada");
        let cam = s.publish("ada", TrackKind::Camera, false);
        s.publish("ada", TrackKind::Mic, false);
        let screen = s.publish("ada", TrackKind::Screen, false);
        s.outputs();
        let block = |s: &mut Sim, bits: u8| {
            s.input(Input::Block {
                room: R.into(),
                peer: "ada".into(),
                bits,
            });
            s.outputs()
        };
        assert!(block(&mut s, BLOCK_VIDEO | BLOCK_AUDIO | BLOCK_SCREEN).is_empty());
        // The microphone back: audio needs no keyframe.
        assert!(block(&mut s, BLOCK_VIDEO | BLOCK_SCREEN).is_empty());
        assert_eq!(
            block(&mut s, BLOCK_SCREEN),
            vec![Output::Keyframe {
                room: R.into(),
                track: cam
            }]
        );
        assert_eq!(
            block(&mut s, 0),
            vec![Output::Keyframe {
                room: R.into(),
                track: screen
            }]
        );
    }

    #[test]
    fn rooms_are_separate_and_a_failed_subscription_is_forgotten() {
        let mut s = Sim::new();
        s.join_in("one", "ada");
        s.join_in("one", "bob");
        s.join_in("two", "cy");
        s.join_in("two", "dee");
        let a = s.publish_in("one", "ada", TrackKind::Camera, false);
        let c = s.publish_in("two", "cy", TrackKind::Camera, false);
        let out = s.outputs();
        assert_eq!(
            Sim::subscribes(&out),
            vec![
                ("bob".into(), a, Some(DEFAULT_CAMERA_LAYER)),
                ("dee".into(), c, Some(DEFAULT_CAMERA_LAYER))
            ]
        );
        let sub = Sim::sub_of(&out, "dee", c);
        s.input(Input::SubscribeFailed {
            room: "two".into(),
            sub,
        });
        assert!(!s.core.has_sub("two", sub));
        assert_eq!(
            s.core.describe()["two"][1]["receiving"],
            serde_json::json!([])
        );
        assert_eq!(
            s.core.describe()["one"][1]["receiving"],
            serde_json::json!(["ada/video"])
        );
        // Everyone leaves room one: room two goes on, speaker ticks and all.
        for p in ["ada", "bob"] {
            s.input(Input::Leave {
                room: "one".into(),
                peer: p.into(),
                session: None,
            });
        }
        assert!(s
            .outputs()
            .contains(&Output::RoomGone { room: "one".into() }));
        assert!(s.core.poll_timeout().is_some());
        assert_eq!(s.core.describe().as_object().unwrap().len(), 1);
    }

    #[test]
    fn one_offer_at_a_time_per_session_and_an_offer_the_edge_missed_goes_again() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        // Ada publishes her camera: Bob gets an offer to make. Her microphone meanwhile waits.
        s.publish("ada", TrackKind::Camera, false);
        let out = s.raw_outputs();
        assert_eq!(Sim::renegotiated(&out), vec![("bob".into(), bob)]);
        s.publish("ada", TrackKind::Mic, false);
        assert!(
            Sim::renegotiated(&s.raw_outputs()).is_empty(),
            "one is being made"
        );
        let g1 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        assert!(s.core.awaiting_answer(R, "bob", bob));
        // The edge is briefly unreachable: the same offer goes again after the backoff.
        s.input(Input::OfferNotDelivered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g1,
            worth_retrying: true,
        });
        assert!(s.raw_outputs().is_empty());
        s.advance(Duration::from_millis(100));
        let again: Vec<Output> = s
            .raw_outputs()
            .into_iter()
            .filter(|o| matches!(o, Output::SendOffer { .. }))
            .collect();
        assert_eq!(
            again,
            vec![Output::SendOffer {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
                generation: g1,
                unanswered: 0,
            }]
        );
        s.input(Input::OfferDelivered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g1,
        });
        s.advance(Duration::from_secs(1));
        assert!(
            !s.raw_outputs()
                .iter()
                .any(|o| matches!(o, Output::SendOffer { .. })),
            "taken: not sent again"
        );
        // Bob answers: the change queued meanwhile (the microphone) gets its offer now.
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        assert!(!s.core.awaiting_answer(R, "bob", bob));
        // That offer cannot be made: stable again, the next change asks afresh.
        s.input(Input::OfferNotMade {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
        });
        s.publish("ada", TrackKind::Screen, false);
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
    }

    #[test]
    fn offers_are_numbered_by_the_wall_clock_and_no_two_share_a_number() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.publish("ada", TrackKind::Camera, false);
        s.raw_outputs();
        let g1 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        assert_eq!(
            g1, 1_764_000_000_000_000,
            "the wall clock at the offer, in µs"
        );
        // Bob's page reconnects with a new PeerConnection (a new session, at the same µs): its
        // first offer is not numbered like the old session's, so an answer the old
        // PeerConnection sends late never fits it.
        let bob2 = s.join("bob");
        s.publish("ada", TrackKind::Mic, false);
        s.raw_outputs();
        let g2 = s.core.offer_made(s.now, R, "bob", bob2).unwrap();
        assert!(
            g2 > g1,
            "strictly rising over every session: {g2} after {g1}"
        );
        assert_eq!(s.core.answer_fit(R, "bob", bob2, g1), AnswerFit::Stale);
        assert_eq!(s.core.answer_fit(R, "bob", bob2, g2), AnswerFit::Apply);
        // A restarted SFU (a new core, a second later by the wall clock) goes on above.
        let later = s.now + Duration::from_secs(1);
        let mut restarted = SfuCore::new(later, 1_764_000_001_000_000, "sfu-test");
        restarted
            .handle_input(
                later,
                Input::Join {
                    room: R.into(),
                    peer: "bob".into(),
                    session: 1,
                    blocked: 0,
                    scope: 0,
                },
            )
            .unwrap();
        let g3 = restarted.offer_made(later, R, "bob", 1).unwrap();
        assert!(g3 > g2);
    }

    #[test]
    fn an_answer_is_applied_only_to_the_offer_it_answers() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, 0),
            AnswerFit::NoneAwaited,
            "no offer out"
        );
        s.publish("ada", TrackKind::Camera, false);
        s.raw_outputs();
        let g1 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        s.publish("ada", TrackKind::Mic, false);
        s.raw_outputs();
        let g2 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        assert!(g2 > g1);
        // A second answer to the first offer (the page answered it twice) arrives now: it must
        // not be taken for the answer to the second.
        assert_eq!(s.core.answer_fit(R, "bob", bob, g1), AnswerFit::Stale);
        assert_eq!(s.core.answer_fit(R, "bob", bob, g2), AnswerFit::Apply);
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, 0),
            AnswerFit::Apply,
            "not numbered: the one waiting"
        );
        assert_eq!(
            s.core.answer_fit(R, "bob", bob + 1, g2),
            AnswerFit::NoneAwaited,
            "another session's"
        );
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, g2),
            AnswerFit::Stale,
            "a second answer to an offer answered already"
        );
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, 0),
            AnswerFit::NoneAwaited,
            "not numbered, nothing waits: refused as before"
        );
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, g2 + 5),
            AnswerFit::Stale,
            "a number this session never gave"
        );
    }

    #[test]
    fn an_answer_to_an_offer_given_up_on_is_applied_if_no_newer_offer_was_made() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        s.publish("ada", TrackKind::Camera, false);
        s.raw_outputs();
        let g1 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        let failed = |s: &mut Sim| {
            s.input(Input::OfferNotDelivered {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
                generation: g1,
                worth_retrying: true,
            })
        };
        // The edge's replies time out for longer than the SFU retries: it gives up.
        failed(&mut s);
        s.advance(OFFER_GIVE_UP_AFTER);
        s.raw_outputs();
        failed(&mut s);
        assert!(!s.core.awaiting_answer(R, "bob", bob));
        // But the edge had taken it, and Bob's page answers: applied, not left as stale (the
        // session would stay in have-local-offer, Ada's camera never forwarded to Bob).
        assert_eq!(s.core.answer_fit(R, "bob", bob, g1), AnswerFit::Apply);
        assert_eq!(s.core.answer_fit(R, "bob", bob, 0), AnswerFit::Apply);
        assert_eq!(s.core.answer_fit(R, "bob", bob, g1 - 1), AnswerFit::Stale);
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        assert_eq!(
            s.core.answer_fit(R, "bob", bob, g1),
            AnswerFit::Stale,
            "applied: a second answer to it is not"
        );
        // A newer offer replaces a given-up one: its answer no longer fits.
        s.publish("ada", TrackKind::Mic, false);
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        let g2 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        s.input(Input::OfferNotDelivered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g2,
            worth_retrying: false,
        });
        assert_eq!(s.core.answer_fit(R, "bob", bob, g2), AnswerFit::Apply);
        s.publish("ada", TrackKind::Screen, false);
        s.raw_outputs();
        let g3 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        assert_eq!(s.core.answer_fit(R, "bob", bob, g2), AnswerFit::Stale);
        assert_eq!(s.core.answer_fit(R, "bob", bob, g3), AnswerFit::Apply);
    }

    #[test]
    fn an_offer_the_edge_took_but_nobody_answered_goes_again_until_answered() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        s.publish("ada", TrackKind::Camera, false);
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        let g = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        let delivered = |s: &mut Sim| {
            s.input(Input::OfferDelivered {
                room: R.into(),
                peer: "bob".into(),
                session: bob,
                generation: g,
            })
        };
        let resends = |s: &mut Sim| -> Vec<Output> {
            s.raw_outputs()
                .into_iter()
                .filter(|o| matches!(o, Output::SendOffer { .. }))
                .collect()
        };
        let copy = |unanswered| Output::SendOffer {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g,
            unanswered,
        };
        delivered(&mut s);
        // Bob's page never had it (or its answer was lost): nothing came after 8 s.
        s.advance(ANSWER_WAIT - Duration::from_millis(10));
        assert_eq!(resends(&mut s), vec![], "an answer is not late yet");
        s.advance(Duration::from_millis(10));
        assert_eq!(resends(&mut s), vec![copy(1)], "the same offer again");
        delivered(&mut s);
        s.advance(ANSWER_WAIT);
        assert_eq!(resends(&mut s), vec![], "the next wait is longer");
        s.advance(ANSWER_WAIT);
        assert_eq!(resends(&mut s), vec![copy(2)]);
        delivered(&mut s);
        // His microphone meanwhile waits for the answer, which comes now (to either copy).
        s.publish("ada", TrackKind::Mic, false);
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        s.advance(ANSWER_WAIT_MAX * 2);
        assert_eq!(resends(&mut s), vec![], "answered: never sent again");
    }

    #[test]
    fn an_offer_given_up_on_starts_the_queued_one_and_a_bad_answer_does_not_block() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        s.publish("ada", TrackKind::Camera, false);
        s.raw_outputs();
        let g = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        s.publish("ada", TrackKind::Mic, false); // queued
        s.raw_outputs();
        s.input(Input::OfferNotDelivered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g,
            worth_retrying: false,
        });
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        let g2 = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        assert!(g2 > g);
        s.publish("ada", TrackKind::Screen, false); // queued behind g2
        s.raw_outputs();
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: false,
        });
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)],
            "a bad answer leaves nothing waiting forever"
        );
    }

    #[test]
    fn a_change_made_while_an_offer_could_not_be_made_gets_its_own() {
        let mut s = Sim::new();
        s.join("ada");
        let bob = s.join("bob");
        s.outputs();
        s.publish("ada", TrackKind::Camera, false);
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)]
        );
        s.publish("ada", TrackKind::Mic, false); // while it is being made
        assert!(Sim::renegotiated(&s.raw_outputs()).is_empty());
        s.input(Input::OfferNotMade {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
        });
        assert_eq!(
            Sim::renegotiated(&s.raw_outputs()),
            vec![("bob".into(), bob)],
            "the microphone is not left unoffered"
        );
        // Made and answered, nothing more is due.
        let g = s.core.offer_made(s.now, R, "bob", bob).unwrap();
        s.input(Input::OfferDelivered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            generation: g,
        });
        s.input(Input::Answered {
            room: R.into(),
            peer: "bob".into(),
            session: bob,
            ok: true,
        });
        assert!(Sim::renegotiated(&s.raw_outputs()).is_empty());
    }
}
