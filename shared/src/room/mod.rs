//! The room core: one object that owns all of a room's state and makes every decision about it.
//!
//! Sans-IO, in the str0m / quinn-proto shape. The Room Durable Object (the shell) feeds it
//! [`Input`]s with the current time ([`Room::handle_input`]), drains what it must do
//! ([`Room::poll_output`]: send a frame, call the SFU, probe it, look for another one, persist these
//! rows, issue a token) and sets its alarm to [`Room::poll_timeout`] after every step, feeding
//! [`Input::Timeout`] when it rings. The core never reads a clock, touches a socket or storage, so
//! whole sequences (join, drop, failover, drain, eviction, token refresh) are unit tests in
//! simulated time (`tests.rs`).
//!
//! What the core decides, so the shell does not:
//! - membership: join, leave, a dropped socket is *away* for [`RECONNECT_GRACE_MS`], hand-over of
//!   the host role, who is authorised to do what (grants, host actions, revoked tokens);
//! - media signaling: offers/answers relayed to the SFU, an SFU offer held for a member who is away;
//! - the room's SFU ([`sfu`]): which one a first joiner gets, whether it is healthy (probe results and
//!   call outcomes come in as typed inputs), when it is replaced, retried until a replacement exists;
//! - what changed ([`Output::Persist`]): exactly the rows to write, so nothing the room needs is
//!   lost if the object hibernates or is evicted ([`Room::restore`] brings it back);
//! - token refresh: members get a fresh room token over their socket before theirs expires.

mod breakout;
mod meeting;
mod polls;
mod recording;
mod report;
mod sfu;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::protocol::{
    check_sdp, parse_client_message, ChatMessage, ClientMessage, MediaKind, ParticipantInfo,
    RoomSnapshot, ServerMessage, SfuEvent, TileView, MAX_SCREEN_SHARERS, MAX_VIEWS,
    PROTOCOL_VERSION,
};
use crate::region::SfuChoice;
use crate::token::{Claims, Grants, Role, LEEWAY_SECS, MAX_TOKEN_TTL_SECS};
use crate::Millis;

pub use breakout::{even_split, BreakoutError};
pub use meeting::{
    address_key, Admission, JoinAsk, PasswordCheck, PreJoin, ScheduledAsk, ScheduledRoom,
    IDLE_END_MS, MAX_WAITING, WRONG_PASSWORDS_PER_MINUTE,
};
pub use recording::{RecordingError, RecordingRow};
pub use report::{
    MAX_OUTBOX, MAX_PEOPLE, MAX_STINTS, REPORT_BATCH_MS, REPORT_BATCH_ROWS, REPORT_RETRY_MAX_MS,
    REPORT_WRITE_TIMEOUT_MS,
};
pub use sfu::{HttpReply, SfuCallKind, FIND_RETRY_MS, PROBE_LOST_MS, SETTLE_MS};
pub use store::{Changes, RestoreError};

/// Identifies one WebSocket connection (the DO makes these up and tags sockets with them).
pub type ConnId = String;

/// Close code for a connection replaced by a newer one of the same participant.
pub const CLOSE_REPLACED: u16 = 4000;
/// Close code for a client that sent a frame over the size limit (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a connection the room refuses (revoked token, removed, turned away).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code for a socket flooding the room with frames (RFC 6455 "policy violation"): the
/// page may come back, slower.
pub const CLOSE_FLOOD: u16 = 1008;
/// The tag the shell gives sockets of people in the waiting room (from their token): broadcasts
/// skip them.
pub const WAITING_TAG: &str = "waiting";
/// A participant whose connection dropped (not closed cleanly) stays in the room this long, so a
/// reconnect resumes the session without anyone seeing them leave and join again.
pub const RECONNECT_GRACE_MS: Millis = 10_000;

/// An SFU numbers its offers by its wall clock in µs (rising over all sessions of a room while
/// its clock does not go back): an offer older than the member's newest by less than this is a
/// late post and dropped; older by more, the SFU's clock was set back (a restart) and the offer
/// is taken. A member's new PeerConnection (`ClientMessage::Offer`) forgets the numbers, so a
/// clock set back by less stalls nobody: everyone re-offers to a restarted SFU.
pub const LATE_OFFER_WINDOW_US: u64 = 10 * 60 * 1_000_000;

/// Offer numbers from here up are an SFU's clock in µs (2001 on): an SFU from before numbered
/// each session's offers from 1, and those are never compared across sessions (the rule above
/// would drop a new session's 1 after an old session's 4).
pub const CLOCK_NUMBERED_FROM: u64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A participant whose token verified (signature, time, room) opened connection `conn`.
    Connect { conn: ConnId, claims: Claims },
    /// A text frame arrived on `conn`.
    Frame { conn: ConnId, text: String },
    /// `conn` closed. `clean`: closed on purpose (1000 normal, 1001 going away: tab closed or
    /// navigated away) — the participant leaves now. Otherwise the connection dropped: they stay
    /// for [`RECONNECT_GRACE_MS`] in case they come back.
    Disconnect { conn: ConnId, clean: bool },
    /// The object was just rebuilt from storage (after eviction or a restart); these connections
    /// are still open. Members on any other connection are away from now on.
    Restored { open: Vec<ConnId> },
    /// The time [`Room::poll_timeout`] asked for has come (the DO's alarm).
    Timeout,
    /// The outcome of [`Output::WriteReport`] for the batch up to `upto`.
    ReportWritten { upto: u64, ok: bool },
    /// The registry's choice of SFU for a first joiner (asked for because
    /// [`Room::sfu_for_join`] said none is kept).
    SfuChosen { choice: SfuChoice },
    /// The outcome of an [`Output::Sfu`] call to SFU `sfu`.
    SfuReply {
        sfu: String,
        participant: String,
        call: SfuCallKind,
        reply: HttpReply,
    },
    /// SFU `sfu` (if it said) offers `participant` a new session description (tracks came or
    /// went). Offers from an SFU the room has left are ignored.
    SfuOffer {
        participant: String,
        sdp: String,
        sfu: Option<String>,
        /// The SFU's number for it (`SfuSignal::generation`).
        generation: u64,
    },
    /// The SFU reported something about the room (dynacast layers, active speaker).
    SfuEvent(SfuEvent),
    /// SFU `sfu` is stopping and asked for its rooms to move: not a report to second-guess — the
    /// room moves (and keeps trying until it has).
    SfuDraining { sfu: String },
    /// The outcome of an [`Output::ProbeSfu`].
    Probed { sfu: String, reply: HttpReply },
    /// The registry's answer to [`Output::FindSfu`]: a replacement, or why there is none.
    SfuFound { result: Result<SfuChoice, String> },
    /// Someone asks to join (before they have a token); answered with [`Output::JoinAnswer`].
    Join(JoinAsk),
    /// The hash of the password a host set ([`Output::HashPassword`]); `None` if it failed.
    PasswordHashed { hash: Option<String> },
    /// The id made for the recording a host asked for ([`Output::MintRecordingId`]).
    RecordingMinted { id: String },
}

/// What the DO must ask the room's SFU, on behalf of one participant.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuCall {
    /// Answer this offer (creates the participant's PeerConnection on first use), with what a
    /// host has stopped blocked from the start.
    Offer {
        sdp: String,
        id: u64,
        block: crate::protocol::BlockBody,
        /// The breakout room they are in (0: the main room).
        scope: u32,
    },
    /// Here is the answer to the SFU's offer number `generation` (0: not numbered).
    Answer { sdp: String, generation: u64 },
    /// The participant left: free their PeerConnection and tracks.
    Leave,
    /// How big the participant shows each remote video now (fire and forget).
    Views { views: Vec<TileView> },
    /// Which of the participant's tracks the SFU must not forward (a host stopped them).
    Block {
        audio: bool,
        video: bool,
        screen: bool,
    },
    /// Where everyone is now (breakout rooms; not a call for one participant: the shell ignores
    /// the participant it names): member id → room number, the main room left out. Whole state
    /// with a rising `version`: the SFU applies only a version at least as new as its last.
    Scopes {
        version: u64,
        scopes: BTreeMap<String, u32>,
    },
    /// Whether the room is recorded, as which recording (not a call for one participant either).
    /// Whole state with a rising `version`, like `Scopes`.
    Record {
        version: u64,
        recording: Option<String>,
    },
}

/// What the shell must do. Everything that needs an answer is fed back as an [`Input`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send {
        conn: ConnId,
        msg: ServerMessage,
    },
    /// To every member's open connection except `except` (never to people in the waiting room:
    /// the shell tags their sockets [`WAITING_TAG`]).
    Broadcast {
        except: Option<ConnId>,
        msg: ServerMessage,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Call `sfu` for `participant`; feed the outcome back as [`Input::SfuReply`].
    Sfu {
        sfu: SfuChoice,
        participant: String,
        call: SfuCall,
    },
    /// Ask `sfu` about this room (signed `GET /v1/rooms/{room}`, 1 s limit); feed back
    /// [`Input::Probed`].
    ProbeSfu {
        sfu: SfuChoice,
    },
    /// Ask the registry for an SFU to take the room over from `failed`, never one in `exclude`;
    /// feed back [`Input::SfuFound`].
    FindSfu {
        failed: String,
        exclude: Vec<String>,
    },
    /// Tell the registry `sfu` failed a call or a probe: no new room should land there until it is
    /// heard from again.
    SfuDown {
        sfu: String,
        reason: String,
    },
    /// Sign these claims and send the token to `conn` as [`ServerMessage::Token`].
    IssueToken {
        conn: ConnId,
        claims: Claims,
    },
    /// Write exactly these rows (see [`Changes`]).
    Persist(Changes),
    /// The answer to [`Input::Join`].
    JoinAnswer(Admission),
    /// Hash this password (the host set it); feed back [`Input::PasswordHashed`].
    HashPassword {
        password: String,
    },
    /// Write these report rows to D1 (one batch, in order); feed back [`Input::ReportWritten`].
    WriteReport {
        upto: u64,
        rows: Vec<crate::report::ReportRow>,
    },
    /// Make a new recording's id (128 random bits, hex); feed back [`Input::RecordingMinted`].
    MintRecordingId,
    /// A recording started: write down who may watch it.
    RecordingStarted(RecordingRow),
    /// The recording `id` ended at `ended_at`; `names`: who was in it (participant id → name:
    /// its files are named by participant ids).
    RecordingStopped {
        /// What [`Output::RecordingStarted`] wrote (again: that write may have failed).
        row: RecordingRow,
        ended_at: Millis,
        names: BTreeMap<String, String>,
    },
    /// Something an operator should see in the logs.
    Warn(String),
}

/// What a member's current room token says about its lifetime (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    info: ParticipantInfo,
    conn: ConnId,
    joined_at: Millis,
    /// Since when the connection is gone (dropped, not closed), if it is.
    #[serde(default)]
    away_since: Option<Millis>,
    #[serde(default)]
    grants: Grants,
    /// The SFU's latest offer not yet answered, kept to hand over again after a reconnect.
    #[serde(default)]
    pending_offer: Option<String>,
    /// Its generation (the SFU's number for it; 0: not numbered); once it is answered, still the
    /// newest number this SFU gave the member: an older offer from it is a late post, dropped
    /// (see [`LATE_OFFER_WINDOW_US`]). Back to 0 with the member's next PeerConnection
    /// (`ClientMessage::Offer`) and when the room moves to another SFU.
    #[serde(default)]
    pending_generation: u64,
    /// The claims of the member's latest token (the one they connected with, or the last one the
    /// room issued them): a refresh re-issues these with a new lifetime.
    claims: Claims,
    /// How many tokens the room has issued this member (numbers the refreshed tokens' ids).
    #[serde(default)]
    refreshes: u32,
    /// What a host stopped (the SFU does not forward it) and whether they may turn it on again.
    #[serde(default)]
    stopped: meeting::Stopped,
    /// The page ids of this member's latest chat messages: a resend is recognised.
    #[serde(default)]
    recent_chat: VecDeque<String>,
    /// Its connection's band as its page reports it (`ClientMessage::Quality`)…
    #[serde(default)]
    page_quality: Option<crate::health::Quality>,
    /// …and as the SFU judges it (`SfuEvent::Quality`): everyone sees the worse
    /// (`info.quality`).
    #[serde(default)]
    sfu_quality: Option<crate::health::Quality>,
}

impl Member {
    /// When this member should get a fresh token: with a third of its lifetime left. `None` for a
    /// token without a lifetime.
    fn refresh_at(&self) -> Option<Millis> {
        let c = &self.claims;
        (c.exp > c.iat).then(|| (c.iat + (c.exp - c.iat) * 2 / 3) * 1000)
    }
}

/// The room's own settings and state besides its members (one persisted row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meta {
    name: String,
    /// The first member to join hosts; when the host leaves, the longest-present member does.
    host: Option<String>,
    /// Who the SFU last said is speaking, in each scope (0: the main room; a breakout room).
    #[serde(default)]
    speakers: BTreeMap<u32, String>,
    /// The breakout rooms (see [`breakout`]).
    #[serde(default)]
    breakouts: crate::protocol::BreakoutView,
    /// Where everyone is, as the SFU must learn it: the version of the latest state, the latest
    /// one the SFU took, and when to send it again after a failed call.
    #[serde(default)]
    scopes: breakout::ScopeSync,
    /// The version of the last event applied, by `"{sfu}|{event key}"` (see
    /// [`SfuEvent::key`]): a repeated or overtaken event is ignored.
    #[serde(default)]
    event_versions: BTreeMap<String, u64>,
    /// Host setting: how many may share a screen at once.
    #[serde(default = "crate::protocol::default_max_screen_sharers")]
    max_screen_sharers: u32,
    /// The room's SFU and its health (see [`sfu`]).
    #[serde(default)]
    media: sfu::Media,
    #[serde(default)]
    settings: crate::protocol::RoomSettings,
    /// The password's hash (PHC string, made by the shell), if the room has one.
    #[serde(default)]
    password_hash: Option<String>,
    /// The waiting room, in arrival order.
    #[serde(default)]
    waiting: Vec<meeting::Waiting>,
    /// Browser identities removed from this meeting: they cannot join again.
    #[serde(default)]
    bans: BTreeSet<String>,
    /// The next chat message's number.
    #[serde(default)]
    chat_next: u64,
    /// The next poll's number.
    #[serde(default)]
    poll_next: u64,
    /// The door's generation: it goes up whenever the host tightens who gets in (lock, waiting
    /// room, password) and when the meeting ends. A token let in under an older one brings nobody
    /// new in (members resume whatever their token says).
    #[serde(default)]
    door: u32,
    /// The door's generation when this meeting started (tokens from before are from an ended one).
    #[serde(default)]
    meeting_door: u32,
    /// The browser identity of the host (the last one, if they left): with nobody in the room,
    /// they are who gets in past the waiting room and hosts again.
    #[serde(default)]
    host_bid: Option<String>,
    /// What hosts had stopped of people who left, by browser identity: coming back does not undo
    /// a host's mute.
    #[serde(default)]
    held: BTreeMap<String, meeting::Stopped>,
    /// Since when nobody has been in the room (a meeting left empty long enough starts over).
    #[serde(default)]
    empty_since: Option<Millis>,
    /// Wrong passwords by client address (per minute; stored, so an eviction does not reset it).
    #[serde(default)]
    wrong_passwords: BTreeMap<String, VecDeque<Millis>>,
    /// A scheduled meeting's room: its owner's and co-hosts' browsers.
    #[serde(default)]
    scheduled: Option<meeting::ScheduledRoom>,
    /// The run of a scheduled meeting being reported.
    #[serde(default)]
    report: report::ReportBook,
    /// The recording, if one runs, and the SFU's copy of it.
    #[serde(default)]
    recording: recording::RecordingState,
}

/// The room. See the module docs.
#[derive(Debug, Clone)]
pub struct Room {
    meta: Meta,
    members: BTreeMap<String, Member>,
    /// Revoked token ids (and participant ids), with when the revocation can be forgotten (seconds:
    /// the token has expired by then).
    revoked: BTreeMap<String, u64>,
    /// The chat, oldest first (at most [`CHAT_HISTORY`]); one stored row per message.
    chat: VecDeque<ChatMessage>,
    /// The meeting's polls, oldest first (at most [`crate::protocol::MAX_POLLS`]); a row each.
    polls: Vec<polls::Poll>,
    /// Rate limits and wrong passwords (not stored: a restart forgets them).
    limits: meeting::Limits,
    /// Report rows waiting for D1 (a stored row each).
    outbox: report::Outbox,
    out: VecDeque<Output>,
    dirty: store::Dirty,
}

impl PartialEq for Room {
    /// Equal state (pending outputs and dirty marks aside).
    fn eq(&self, other: &Room) -> bool {
        self.meta == other.meta
            && self.members == other.members
            && self.revoked == other.revoked
            && self.chat == other.chat
            && self.polls == other.polls
            && self.outbox.rows == other.outbox.rows
    }
}

impl Room {
    pub fn new(name: impl Into<String>) -> Room {
        Room {
            meta: Meta {
                name: name.into(),
                host: None,
                speakers: BTreeMap::new(),
                breakouts: Default::default(),
                scopes: Default::default(),
                event_versions: BTreeMap::new(),
                max_screen_sharers: crate::protocol::default_max_screen_sharers(),
                media: sfu::Media::default(),
                settings: crate::protocol::RoomSettings::default(),
                password_hash: None,
                waiting: Vec::new(),
                bans: BTreeSet::new(),
                chat_next: 1,
                poll_next: 1,
                door: 0,
                meeting_door: 0,
                host_bid: None,
                held: BTreeMap::new(),
                empty_since: None,
                wrong_passwords: BTreeMap::new(),
                scheduled: None,
                report: Default::default(),
                recording: Default::default(),
            },
            members: BTreeMap::new(),
            revoked: BTreeMap::new(),
            chat: VecDeque::new(),
            polls: Vec::new(),
            limits: meeting::Limits::default(),
            outbox: Default::default(),
            out: VecDeque::new(),
            dirty: store::Dirty::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The SFU carrying this room's media, and why it was chosen.
    pub fn sfu(&self) -> Option<&SfuChoice> {
        self.meta.media.current()
    }

    pub fn host(&self) -> Option<&str> {
        self.meta.host.as_deref()
    }

    /// The role of a member, if present.
    pub fn role_of(&self, id: &str) -> Option<Role> {
        self.members.get(id).map(|m| m.info.role)
    }

    /// The room password's hash, if it has one (the edge checks joiners' passwords against it).
    pub fn password_hash(&self) -> Option<&str> {
        self.meta.password_hash.as_deref()
    }

    /// Is this token id (or participant id) revoked?
    /// May the holder of this (signature-checked) token get a media relay (TURN credentials)? Not
    /// a waiting pass, not removed (token, participant or browser), not from an ended meeting.
    pub fn may_relay(&self, claims: &Claims) -> bool {
        !claims.waiting
            && claims.room == self.meta.name
            && !self.is_revoked(&claims.jti)
            && !self.is_revoked(&claims.sub)
            && !claims
                .bid
                .as_ref()
                .is_some_and(|b| self.meta.bans.contains(b))
            && claims.door >= self.meta.meeting_door
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// The room as everyone may see it (no chat, no waiting list).
    pub fn snapshot(&self) -> RoomSnapshot {
        let mut participants: Vec<ParticipantInfo> =
            self.members.values().map(|m| m.info.clone()).collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        RoomSnapshot {
            name: self.meta.name.clone(),
            participants,
            sfu: self.sfu().map(|c| c.id.clone()),
            host: self.meta.host.clone(),
            speaker: self.meta.speakers.get(&0).cloned(),
            max_screen_sharers: self.meta.max_screen_sharers,
            settings: self.meta.settings.clone(),
            chat: Vec::new(),
            waiting: Vec::new(),
            polls: Vec::new(),
            breakouts: Box::new(self.breakout_view()),
            recording: self.recording().map(Box::new),
        }
    }

    /// The room as member `id` sees it: with the chat they may read and, for hosts and co-hosts,
    /// who is waiting.
    pub fn snapshot_for(&self, id: &str) -> RoomSnapshot {
        let mut s = self.snapshot();
        s.chat = self.chat_for(id);
        s.polls = self.polls_for(id);
        s.speaker = self.meta.speakers.get(&self.scope_of(id)).cloned();
        if self.is_moderator(id) {
            s.waiting = self.waiting_list();
        }
        s
    }

    /// Feeds one input at time `now`; what to do about it comes out of [`Room::poll_output`].
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        let out = self.handle(now, input);
        self.out.extend(out);
        if let Some(changes) = self.take_changes() {
            self.out.push_back(Output::Persist(changes));
        }
    }

    /// The next thing the shell must do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the room next needs [`Input::Timeout`]: a member's grace period ends, a probe or a
    /// search for an SFU is overdue, a member's token needs refreshing. `None`: nothing is waiting.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let away = self
            .members
            .values()
            .filter_map(|m| m.away_since)
            .map(|t| t + RECONNECT_GRACE_MS);
        let refresh = self
            .members
            .values()
            .filter(|m| m.away_since.is_none())
            .filter_map(Member::refresh_at);
        away.chain(refresh)
            .chain(self.meta.media.deadline(!self.members.is_empty()))
            .chain(self.breakout_deadline())
            .chain(self.meta.scopes.retry_at())
            .chain(self.record_retry_at())
            .chain(self.outbox.deadline())
            .min()
    }

    /// The SFU a joiner should be sent to, if the room keeps one: the room's SFU while anyone is in
    /// it (or one was chosen moments ago for a joiner still connecting). `None`: ask the registry
    /// for the nearest healthy one and feed it in as [`Input::SfuChosen`].
    pub fn sfu_for_join(&self, now: Millis) -> Option<SfuChoice> {
        self.meta
            .media
            .keep_for_join(now, !self.members.is_empty())
            .cloned()
    }

    fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        self.forget_expired(now);
        match input {
            Input::Connect { conn, claims } => self.connect(now, conn, claims),
            Input::Frame { conn, text } => self.frame(now, conn, &text),
            Input::Disconnect { conn, clean } => {
                self.limits.forget_conn(&conn);
                match self.member_by_conn(&conn).cloned() {
                    Some(id) if clean => self.remove(now, &id),
                    Some(id) => self.mark_away(now, &id, Some(conn)),
                    None => self.waiter_gone(&conn).unwrap_or_default(),
                }
            }
            Input::Join(ask) => self.join(now, ask),
            Input::PasswordHashed { hash } => self.password_hashed(hash),
            Input::RecordingMinted { id } => self.recording_minted(now, id),
            Input::Restored { open } => {
                let gone: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.away_since.is_none() && !open.contains(&m.conn))
                    .map(|(id, _)| id.clone())
                    .collect();
                let mut out: Vec<Output> = gone
                    .iter()
                    .flat_map(|id| self.mark_away(now, id, None))
                    .collect();
                // People waiting on sockets that are gone wait no more (a reconnect waits again).
                let lost: Vec<String> = self
                    .meta
                    .waiting
                    .iter()
                    .filter(|w| w.conn.as_ref().is_some_and(|c| !open.contains(c)))
                    .map(|w| w.id.clone())
                    .collect();
                for w in lost {
                    out.extend(self.unwait(&w));
                }
                // Where everyone is may not have reached the SFU before the object went; nor
                // whether it records.
                out.extend(self.scopes_unsent());
                out.extend(self.record_unsent());
                // Report rows that may not have reached D1 go again.
                self.report_restored(now);
                // Sockets that survived but belong to nobody stored: they reconnect.
                out.extend(
                    open.into_iter()
                        .filter(|c| {
                            self.member_by_conn(c).is_none() && self.waiter_by_conn(c).is_none()
                        })
                        .map(reconnect),
                );
                out
            }
            Input::Timeout => self.timeout(now),
            Input::ReportWritten { upto, ok } => self.report_written(now, upto, ok),
            Input::SfuChosen { choice } => {
                let occupied = !self.members.is_empty();
                if self.meta.media.choose(now, choice, occupied) {
                    self.dirty.meta = true;
                }
                Vec::new()
            }
            Input::SfuReply {
                sfu,
                participant,
                call,
                reply,
            } => self.sfu_reply(now, sfu, participant, call, reply),
            Input::SfuOffer {
                participant,
                sdp,
                sfu,
                generation,
            } => {
                if !self.is_current_sfu(sfu.as_deref()) {
                    return vec![Output::Warn(format!(
                        "ignored an offer for {participant} from {}, which no longer carries the room",
                        sfu.unwrap_or_default()
                    ))];
                }
                let Some(m) = self.members.get_mut(&participant) else {
                    return Vec::new();
                };
                if generation >= CLOCK_NUMBERED_FROM
                    && generation < m.pending_generation
                    && m.pending_generation - generation < LATE_OFFER_WINDOW_US
                {
                    // A late post of an offer older than one held or answered already (the
                    // SFU's posts crossed): handing it over would take the page back to an
                    // older description.
                    return vec![Output::Warn(format!(
                        "ignored offer {generation} for {participant}: {} is newer",
                        m.pending_generation
                    ))];
                }
                m.pending_offer = Some(sdp.clone());
                m.pending_generation = generation;
                self.dirty.members.insert(participant);
                if m.away_since.is_some() {
                    Vec::new() // handed over when they are back
                } else {
                    vec![Output::Send {
                        conn: m.conn.clone(),
                        msg: ServerMessage::Offer { sdp, generation },
                    }]
                }
            }
            Input::SfuEvent(event) if !self.is_current_sfu(event.sfu()) => Vec::new(),
            Input::SfuEvent(event) if !self.newer_event(&event) => Vec::new(),
            Input::SfuEvent(SfuEvent::PublishLayers {
                participant,
                active,
                ..
            }) => {
                if active.len() > 8 {
                    return Vec::new();
                }
                self.to_member(&participant, ServerMessage::PublishLayers { active })
            }
            Input::SfuEvent(SfuEvent::ActiveSpeaker {
                participant, scope, ..
            }) => {
                // Only someone present, in that scope (a late event about someone who moved on
                // changes nothing).
                let known = participant
                    .as_ref()
                    .is_none_or(|p| self.members.get(p).is_some_and(|m| m.info.scope == scope));
                if !known || self.meta.speakers.get(&scope) == participant.as_ref() {
                    return Vec::new();
                }
                match &participant {
                    Some(p) => self.meta.speakers.insert(scope, p.clone()),
                    None => self.meta.speakers.remove(&scope),
                };
                self.dirty.meta = true;
                self.to_scope(scope, ServerMessage::ActiveSpeaker { id: participant })
            }
            Input::SfuEvent(SfuEvent::Quality {
                participant,
                quality,
                ..
            }) => {
                let Some(m) = self.members.get_mut(&participant) else {
                    return Vec::new();
                };
                m.sfu_quality = Some(quality);
                self.dirty.members.insert(participant.clone());
                self.quality_changed(&participant)
            }
            Input::SfuDraining { sfu } => {
                let occupied = !self.members.is_empty();
                let out = self.meta.media.draining(now, &sfu, occupied);
                self.dirty.meta = true;
                out
            }
            Input::Probed { sfu, reply } => {
                let verdict = self.meta.media.probed(now, &sfu, reply);
                self.dirty.meta = true;
                self.media_verdict(verdict)
            }
            Input::SfuFound { result } => {
                let verdict = self.meta.media.found(now, result);
                self.dirty.meta = true;
                self.media_verdict(verdict)
            }
        }
    }

    /// `id`'s band for everyone: the worse of its page's report and the SFU's judgement, told
    /// when it changed.
    pub(crate) fn quality_changed(&mut self, id: &str) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        let shown = crate::health::worst(m.page_quality, m.sfu_quality);
        if shown == m.info.quality {
            return Vec::new();
        }
        m.info.quality = shown;
        self.dirty.members.insert(id.to_string());
        vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::QualityChanged {
                id: id.to_string(),
                quality: shown,
            },
        }]
    }

    /// Is `event` newer than the last one applied about the same thing from its SFU (which it
    /// then becomes)? The SFU sends each event until the edge took it, so a repeat, or an older
    /// one arriving after a newer, must change nothing. Events without a version (or SFU) apply.
    fn newer_event(&mut self, event: &SfuEvent) -> bool {
        let (Some(sfu), Some(version)) = (event.sfu(), event.version()) else {
            return true;
        };
        let key = format!("{sfu}|{}", event.key());
        if self
            .meta
            .event_versions
            .get(&key)
            .is_some_and(|&last| last >= version)
        {
            return false;
        }
        // Only the current SFU's, and only about people present: the map stays small.
        let prefix = format!("{sfu}|");
        let members = &self.members;
        self.meta.event_versions.retain(|k, _| {
            k.starts_with(&prefix)
                && k.split_once("/layers/")
                    .or_else(|| k.split_once("/quality/"))
                    .is_none_or(|(_, p)| members.contains_key(p))
        });
        self.meta.event_versions.insert(key, version);
        self.dirty.meta = true;
        true
    }

    /// Is `sfu` (when said) the SFU carrying the room now?
    fn is_current_sfu(&self, sfu: Option<&str>) -> bool {
        sfu.is_none_or(|s| self.sfu().is_some_and(|c| c.id == s))
    }

    fn member_by_conn(&self, conn: &str) -> Option<&String> {
        self.members
            .iter()
            .find(|(_, m)| m.conn == conn)
            .map(|(id, _)| id)
    }

    fn mark_away(&mut self, now: Millis, id: &str, except: Option<ConnId>) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if m.away_since.is_some() {
            return Vec::new();
        }
        m.away_since = Some(now);
        m.info.away = true;
        self.dirty.members.insert(id.to_string());
        vec![Output::Broadcast {
            except,
            msg: ServerMessage::ParticipantAway { id: id.to_string() },
        }]
    }

    fn timeout(&mut self, now: Millis) -> Vec<Output> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.away_since.is_some_and(|t| now >= t + RECONNECT_GRACE_MS))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<Output> = gone.iter().flat_map(|id| self.remove(now, id)).collect();
        out.extend(self.breakout_timeout(now));
        out.extend(self.scopes_retry(now));
        out.extend(self.record_retry(now));
        out.extend(self.report_timeout(now));
        // Fresh tokens for connected members whose token is a third from its end.
        let due: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.away_since.is_none() && m.refresh_at().is_some_and(|t| now >= t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let m = self.members.get_mut(&id).expect("listed above");
            let claims = refresh(m, now);
            out.push(Output::IssueToken {
                conn: m.conn.clone(),
                claims,
            });
            self.dirty.members.insert(id);
        }
        let occupied = !self.members.is_empty();
        let (media_out, changed) = self.meta.media.timeout(now, occupied);
        if changed {
            self.dirty.meta = true;
        }
        out.extend(media_out);
        out
    }

    fn connect(&mut self, now: Millis, conn: ConnId, claims: Claims) -> Vec<Output> {
        if claims.room != self.meta.name {
            return refuse(conn, "This token is for another meeting.");
        }
        let banned = claims
            .bid
            .as_ref()
            .is_some_and(|b| self.meta.bans.contains(b));
        if self.is_revoked(&claims.jti) || self.is_revoked(&claims.sub) || banned {
            return refuse(conn, meeting::REMOVED);
        }
        // (A waiting token grants nothing: it may wait in whatever meeting this is now.)
        if !claims.waiting && claims.door < self.meta.meeting_door {
            return ended(conn);
        }
        let resumed = self.members.contains_key(&claims.sub);
        if !resumed && !claims.waiting && !self.is_host_identity(claims.bid.as_deref()) {
            // Someone new: the door as it is now, not as it was when their token was made.
            // (Someone a host let in from the waiting room is let in, lock or not.)
            if self.meta.settings.locked && !claims.admitted {
                return refuse(conn, "This meeting is locked.");
            }
            if claims.door != self.meta.door {
                return refuse(
                    conn,
                    "Who may join this meeting changed since you asked. Join again.",
                );
            }
        }
        if claims.waiting {
            if self.members.contains_key(&claims.sub) {
                // Let in already (with a newer token): the old pass does not put them back.
                return refuse(conn, "You are already in this meeting.");
            }
            return self.wait(now, conn, claims);
        }
        let mut out = Vec::new();
        // In now: no longer waiting (their waiting socket, if any, goes).
        if let Some(w) = self
            .meta
            .waiting
            .iter()
            .find(|w| w.id == claims.sub)
            .cloned()
        {
            out.extend(self.unwait(&w.id));
            if let Some(c) = w.conn.filter(|c| *c != conn) {
                out.push(Output::Close {
                    conn: c,
                    code: CLOSE_REPLACED,
                    reason: "replaced by a newer connection".into(),
                });
            }
        }
        let mut reissue = None;
        self.dirty.members.insert(claims.sub.clone());
        if let Some(m) = self.members.get_mut(&claims.sub) {
            // Same participant again (reconnect, or a second tab): the new connection takes over and
            // the session resumes; nobody else sees a leave or a join.
            let old = std::mem::replace(&mut m.conn, conn.clone());
            m.grants = claims.grants;
            // A reconnect with an older token than the room last issued this member means the
            // fresh one never arrived (the socket dropped as it was sent): issue another now, or
            // the next drop would find their token expired.
            if claims.exp >= m.claims.exp {
                m.claims = claims.clone();
            } else {
                reissue = Some(refresh(m, now));
            }
            if let Some(sdp) = m.pending_offer.clone() {
                // The SFU's offer may have been lost with the old connection: hand it over again
                // (after the snapshot, below).
                out.push(Output::Send {
                    conn: conn.clone(),
                    msg: ServerMessage::Offer {
                        sdp,
                        generation: m.pending_generation,
                    },
                });
            }
            if m.away_since.take().is_some() {
                m.info.away = false;
                out.push(Output::Broadcast {
                    except: Some(conn.clone()),
                    msg: ServerMessage::ParticipantBack {
                        id: claims.sub.clone(),
                    },
                });
            } else {
                out.push(Output::Close {
                    conn: old,
                    code: CLOSE_REPLACED,
                    reason: "replaced by a newer connection".into(),
                });
            }
        } else {
            // Who hosts: in a scheduled meeting its owner, whenever they come (taking over from
            // whoever hosts meanwhile), and nobody else by arriving first; in an ad-hoc room the
            // first one in.
            let scheduled_role = self.scheduled_role(claims.bid.as_deref());
            // (The owner's second tab does not take the host from their first.)
            let host_is_this_browser = self
                .meta
                .host
                .as_ref()
                .and_then(|h| self.members.get(h))
                .is_some_and(|m| m.claims.bid.is_some() && m.claims.bid == claims.bid);
            let becomes_host = match (&self.meta.scheduled, scheduled_role) {
                (Some(_), Some(crate::schedule::MeetingRole::Owner)) => !host_is_this_browser,
                (Some(_), _) => false,
                (None, _) => self.meta.host.is_none(),
            };
            let took_over = becomes_host && self.meta.host.is_some();
            if becomes_host {
                if let Some(previous) = self.meta.host.take() {
                    out.extend(self.host_taken_from(&previous));
                }
                self.meta.host = Some(claims.sub.clone());
                self.meta.host_bid = claims.bid.clone();
            }
            self.meta.empty_since = None;
            self.dirty.meta = true;
            // The room decides who hosts: a token claiming it makes nobody a second host.
            let role = match (becomes_host, scheduled_role, claims.role) {
                (true, _, _) => Role::Host,
                (false, Some(crate::schedule::MeetingRole::Cohost), _) => Role::Cohost,
                (false, _, Role::Host) => Role::Participant,
                (false, _, r) => r,
            };
            // What a host stopped of this browser before it left holds; in a meeting where
            // participants may not unmute themselves, they arrive muted.
            let mut stopped = claims
                .bid
                .as_ref()
                .and_then(|b| self.meta.held.remove(b))
                .unwrap_or_default();
            // … and so does what a host stopped of its other tabs in the meeting now.
            if let Some(b) = &claims.bid {
                for m in self.members.values() {
                    if m.claims.bid.as_ref() == Some(b) {
                        stopped.merge(&m.stopped);
                    }
                }
            }
            if role == Role::Participant && !self.meta.settings.may_unmute {
                stopped.audio = true;
            }
            let info = ParticipantInfo {
                scope: 0, // joining while breakout rooms are open: the main room
                id: claims.sub.clone(),
                name: claims.name.clone(),
                role,
                audio_muted: stopped.audio,
                video_muted: stopped.video,
                away: false,
                screen: false,
                hand: None,
                quality: None,
            };
            // To everyone else: the newcomer learns about itself from the snapshot.
            out.push(Output::Broadcast {
                except: Some(conn.clone()),
                msg: ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
            });
            // A recording names who is in its files.
            self.recording_named(&info.id, &info.name);
            self.members.insert(
                claims.sub.clone(),
                Member {
                    info,
                    conn: conn.clone(),
                    joined_at: now,
                    away_since: None,
                    grants: claims.grants,
                    pending_offer: None,
                    pending_generation: 0,
                    claims: claims.clone(),
                    refreshes: 0,
                    stopped,
                    recent_chat: VecDeque::new(),
                    page_quality: None,
                    sfu_quality: None,
                },
            );
            self.report_arrived(now, &claims.sub);
            if took_over {
                // (The newcomer learns it from the snapshot.)
                out.push(Output::Broadcast {
                    except: Some(conn.clone()),
                    msg: ServerMessage::HostChanged {
                        id: claims.sub.clone(),
                    },
                });
            }
        }
        // After the snapshot: what a host has stopped of theirs stays off on their page too.
        out.extend(self.stops_on_arrival(&claims.sub, &conn));
        // The snapshot goes first to the newcomer: anything queued for them above follows it.
        let pos = out
            .iter()
            .position(|e| matches!(e, Output::Send { .. }))
            .unwrap_or(out.len());
        out.insert(
            pos,
            Output::Send {
                conn: conn.clone(),
                msg: ServerMessage::Snapshot {
                    room: self.snapshot_for(&claims.sub),
                    you: claims.sub,
                    resumed,
                },
            },
        );
        if let Some(claims) = reissue {
            out.push(Output::IssueToken { conn, claims });
        }
        out
    }

    fn frame(&mut self, now: Millis, conn: ConnId, text: &str) -> Vec<Output> {
        match self.limits.frame(&conn, now) {
            meeting::FrameVerdict::Take => {}
            meeting::FrameVerdict::Refuse { tell: false } => return Vec::new(),
            meeting::FrameVerdict::Refuse { tell: true } => {
                return error_to(
                    conn,
                    ErrorCode::TooManyRequests,
                    format!(
                        "Too many messages: at most {} a second. Slow down.",
                        meeting::FRAMES_PER_SECOND
                    ),
                )
            }
            meeting::FrameVerdict::Close => {
                return vec![
                    Output::Send {
                        conn: conn.clone(),
                        msg: ServerMessage::Error {
                            code: ErrorCode::TooManyRequests,
                            message: "Too many messages: this connection was closed.".into(),
                        },
                    },
                    Output::Close {
                        conn,
                        code: CLOSE_FLOOD,
                        reason: "too many messages".into(),
                    },
                ];
            }
        }
        if let Some(waiter) = self.waiter_by_conn(&conn) {
            return self.waiting_frame(now, conn, waiter, text);
        }
        let Some(id) = self.member_by_conn(&conn).cloned() else {
            // An open socket the room has no member for (its join was never stored): have it
            // reconnect, which joins (or is refused) properly.
            return vec![reconnect(conn)];
        };
        let msg = match parse_client_message(text) {
            Ok(m) => m,
            Err(e) => return error_to(conn, e.code, e.message),
        };
        match msg {
            ClientMessage::Hello { version } if version != PROTOCOL_VERSION => error_to(
                conn,
                ErrorCode::UnsupportedVersion,
                format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}"),
            ),
            ClientMessage::Hello { .. } => Vec::new(),
            ClientMessage::Ping { nonce } => vec![Output::Send {
                conn,
                msg: ServerMessage::Pong { nonce },
            }],
            ClientMessage::SetMedia {
                audio_muted,
                video_muted,
            } => {
                let m = self.members.get(&id).expect("member found above");
                if (m.info.audio_muted, m.info.video_muted) == (audio_muted, video_muted) {
                    return Vec::new();
                }
                // Turning on what a host stopped: only if the room lets them. Refused, nothing
                // changes and the page is told again what stays off (it may show it on).
                let turning_on = [
                    (MediaKind::Audio, m.info.audio_muted && !audio_muted),
                    (MediaKind::Video, m.info.video_muted && !video_muted),
                ];
                for (kind, on) in turning_on {
                    if let (true, Err(message)) = (on, self.may_turn_on(&id, kind)) {
                        let mut out = error_to(conn.clone(), ErrorCode::Forbidden, message.into());
                        out.extend(self.still_stopped(&id, &conn, kind));
                        return out;
                    }
                }
                let mut out = Vec::new();
                for (kind, on) in turning_on {
                    if on {
                        out.extend(self.turn_on(&id, kind));
                    }
                }
                let m = self.members.get_mut(&id).expect("member found above");
                m.info.audio_muted = audio_muted;
                m.info.video_muted = video_muted;
                self.dirty.members.insert(id.clone());
                out.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::MediaChanged {
                        id,
                        audio_muted,
                        video_muted,
                    },
                });
                out
            }
            ClientMessage::Offer { .. } | ClientMessage::Answer { .. } if self.sfu().is_none() => {
                error_to(
                    conn,
                    ErrorCode::NoMediaServer,
                    "This room has no media server yet.".into(),
                )
            }
            ClientMessage::Offer { sdp, id: offer_id } => {
                let m = self.members.get(&id).expect("member found above");
                if !m.grants.publish && !m.grants.subscribe {
                    return error_to(
                        conn,
                        ErrorCode::Forbidden,
                        "Your token allows neither sending nor receiving media.".into(),
                    );
                }
                if let Err(e) = check_sdp(&sdp) {
                    return error_to(conn, e.code, e.message);
                }
                // A new PeerConnection: an offer held for the one before means nothing to it, nor
                // do the numbers (a restarted SFU's clock may be behind).
                let m = self.members.get_mut(&id).expect("member found above");
                if m.pending_offer.take().is_some() || m.pending_generation != 0 {
                    m.pending_generation = 0;
                    self.dirty.members.insert(id.clone());
                }
                // A new session starts with what a host stopped still blocked, in the member's
                // breakout room.
                let block = self.block_of(&id);
                let scope = self.scope_of(&id);
                self.call_sfu(
                    id,
                    SfuCall::Offer {
                        sdp,
                        id: offer_id,
                        block,
                        scope,
                    },
                )
            }
            ClientMessage::Answer { sdp, generation } => {
                if let Err(e) = check_sdp(&sdp) {
                    return error_to(conn, e.code, e.message);
                }
                let m = self.members.get_mut(&id).expect("member found above");
                if generation != 0
                    && (m.pending_offer.is_none() || generation != m.pending_generation)
                {
                    // The answer to an offer answered already (the SFU sent a copy of one that
                    // went unanswered, and both copies reached the page) or to an older one than
                    // the offer held (which the page answers next): nothing to pass on, nothing
                    // to tell the person.
                    return Vec::new();
                }
                let generation = if generation != 0 {
                    generation
                } else {
                    m.pending_generation
                };
                if m.pending_offer.take().is_none() {
                    return error_to(
                        conn,
                        ErrorCode::BadMessage,
                        "no offer is waiting for an answer".into(),
                    );
                }
                self.dirty.members.insert(id.clone());
                self.call_sfu(id, SfuCall::Answer { sdp, generation })
            }
            ClientMessage::MediaFailed {} => {
                let occupied = !self.members.is_empty();
                let out = self.meta.media.reported(now, occupied);
                if !out.is_empty() {
                    self.dirty.meta = true;
                }
                out
            }
            ClientMessage::Views { views } => {
                let m = self.members.get(&id).expect("member found above");
                if views.len() > MAX_VIEWS {
                    return error_to(
                        conn,
                        ErrorCode::BadMessage,
                        format!("at most {MAX_VIEWS} views"),
                    );
                }
                // Tile sizes are a hint: none while the SFU is being replaced (it may be gone).
                if !m.grants.subscribe || !self.meta.media.steady() {
                    return Vec::new();
                }
                self.call_sfu(id, SfuCall::Views { views })
            }
            ClientMessage::SetScreen { sharing } => {
                let m = self.members.get(&id).expect("member found above");
                if m.info.screen == sharing {
                    return Vec::new();
                }
                if sharing && !m.grants.screen {
                    return error_to(
                        conn,
                        ErrorCode::Forbidden,
                        "Your token does not allow screen sharing.".into(),
                    );
                }
                if sharing && !self.meta.settings.may_share_screen && !self.is_moderator(&id) {
                    return error_to(
                        conn,
                        ErrorCode::Forbidden,
                        "Only hosts can share a screen in this meeting.".into(),
                    );
                }
                if sharing {
                    if let Err(message) = self.may_turn_on(&id, MediaKind::Screen) {
                        return error_to(conn, ErrorCode::Forbidden, message.into());
                    }
                }
                // Sharers in the same room (each breakout room has its own screen).
                let scope = m.info.scope;
                let sharers = self
                    .members
                    .values()
                    .filter(|m| m.info.screen && m.info.scope == scope)
                    .count() as u32;
                if sharing && sharers >= self.meta.max_screen_sharers {
                    return error_to(
                        conn,
                        ErrorCode::Forbidden,
                        format!(
                            "{} already sharing; the host allows {} at a time.",
                            if sharers == 1 {
                                "Someone is"
                            } else {
                                "Others are"
                            },
                            self.meta.max_screen_sharers
                        ),
                    );
                }
                // Every check passed: now lift a host's stop, if any.
                let mut calls = if sharing {
                    self.turn_on(&id, MediaKind::Screen)
                } else {
                    Vec::new()
                };
                self.members.get_mut(&id).expect("found above").info.screen = sharing;
                self.dirty.members.insert(id.clone());
                // The SFU forwards screen tracks only while the room says they share.
                calls.extend(self.block_call(&id));
                calls.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::ScreenChanged { id, sharing },
                });
                calls
            }
            ClientMessage::SetRoomOptions { max_screen_sharers } => {
                if !self.is_moderator(&id) {
                    return error_to(
                        conn,
                        ErrorCode::Forbidden,
                        "Only hosts and co-hosts can change the room's settings.".into(),
                    );
                }
                if !(1..=MAX_SCREEN_SHARERS).contains(&max_screen_sharers) {
                    return error_to(
                        conn,
                        ErrorCode::BadRequest,
                        format!("Screen sharers must be 1 to {MAX_SCREEN_SHARERS}."),
                    );
                }
                self.meta.max_screen_sharers = max_screen_sharers;
                self.dirty.meta = true;
                vec![Output::Broadcast {
                    except: None,
                    msg: ServerMessage::RoomOptions { max_screen_sharers },
                }]
            }
            ClientMessage::Leave {} => {
                let mut out = self.remove(now, &id);
                out.push(Output::Close {
                    conn,
                    code: 1000,
                    reason: "left".into(),
                });
                out
            }
            other => self.meeting(now, conn, id, other),
        }
    }

    /// A call to the room's SFU for `participant` (there is one: callers checked).
    fn call_sfu(&self, participant: String, call: SfuCall) -> Vec<Output> {
        match self.sfu() {
            Some(sfu) => vec![Output::Sfu {
                sfu: sfu.clone(),
                participant,
                call,
            }],
            None => Vec::new(),
        }
    }

    fn sfu_reply(
        &mut self,
        now: Millis,
        sfu: String,
        participant: String,
        call: SfuCallKind,
        reply: HttpReply,
    ) -> Vec<Output> {
        let current = self.sfu().is_some_and(|c| c.id == sfu);
        let mut out = Vec::new();
        match (&call, &reply) {
            (
                SfuCallKind::Offer { id, block, scope },
                HttpReply::Answered { status: 200, body },
            ) => {
                match serde_json::from_str::<crate::protocol::SdpBody>(body) {
                    Ok(b) if current => {
                        out.extend(self.to_member(
                            &participant,
                            ServerMessage::Answer {
                                sdp: b.sdp,
                                id: *id,
                            },
                        ));
                        // A host's stop (or a share) while the offer was on its way reached no
                        // session: tell the new one.
                        if self.block_of(&participant) != *block {
                            out.extend(self.block_call(&participant));
                        }
                        // So does a move to another breakout room (the latest state again, as a
                        // new version: tracked until the SFU takes it).
                        let now_in = self.scope_of(&participant);
                        if now_in != *scope && self.members.contains_key(&participant) {
                            out.extend(self.scopes_changed());
                        }
                    }
                    Ok(_) => {} // an answer from the SFU the room has since left
                    Err(_) => out.extend(self.to_member(
                        &participant,
                        ServerMessage::Error {
                            code: ErrorCode::MediaServerError,
                            message: "The media server sent an answer that cannot be read.".into(),
                        },
                    )),
                }
            }
            (SfuCallKind::Record { version }, HttpReply::Answered { status, .. })
                if (200..300).contains(status) =>
            {
                self.meta.recording.sync.acked(*version);
                self.dirty.meta = true;
            }
            (SfuCallKind::Record { version }, HttpReply::Answered { status, body }) => {
                // Refused for good only counts for the latest state, from the room's SFU: an
                // old call's (or the old SFU's) refusal must not stop the newer one's retries.
                if (400..500).contains(status)
                    && !matches!(status, 408 | 429)
                    && current
                    && *version == self.meta.recording.sync.version()
                {
                    self.meta.recording.sync.settle();
                } else {
                    self.meta.recording.sync.failed(now, *version);
                }
                self.dirty.meta = true;
                out.push(Output::Warn(format!(
                    "SFU {sfu}: recording answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            (SfuCallKind::Scopes { version }, HttpReply::Answered { status, .. })
                if (200..300).contains(status) =>
            {
                self.meta.scopes.acked(*version);
                self.dirty.meta = true;
            }
            // Not taken: sent again shortly — unless the SFU refused it for good (a 4xx other than
            // a timeout or "too many": an SFU without breakout rooms; each offer still carries
            // its member's room).
            (SfuCallKind::Scopes { version }, HttpReply::Answered { status, body }) => {
                if (400..500).contains(status) && !matches!(status, 408 | 429) {
                    self.meta.scopes.settle();
                } else {
                    self.meta.scopes.failed(now, *version);
                }
                self.dirty.meta = true;
                out.push(Output::Warn(format!(
                    "SFU {sfu}: breakout scopes answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            (_, HttpReply::Answered { status, .. }) if (200..300).contains(status) => {}
            // Tile sizes are a hint, sent again on the next change: an SFU that does not know the
            // participant yet (a new session still being set up) is no error for anyone.
            (SfuCallKind::Views, HttpReply::Answered { status: 404, .. }) => {}
            // A block for someone with no media session yet: their offer will carry it.
            (SfuCallKind::Block, HttpReply::Answered { status: 404, .. }) => {}
            (SfuCallKind::Views | SfuCallKind::Leave, HttpReply::Answered { status, body }) => {
                out.push(Output::Warn(format!(
                    "SFU {sfu}: {call:?} for {participant} answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            (_, HttpReply::Answered { status, body }) if current => {
                let e: crate::error::WireError =
                    serde_json::from_str(body).unwrap_or(crate::error::WireError {
                        code: ErrorCode::MediaServerError,
                        message: format!("The media server refused the request ({status})."),
                    });
                out.extend(self.to_member(
                    &participant,
                    ServerMessage::Error {
                        code: e.code,
                        message: e.message,
                    },
                ));
            }
            (_, HttpReply::Answered { .. }) => {}
            (_, HttpReply::Unreachable { reason }) => {
                if let SfuCallKind::Scopes { version } = call {
                    self.meta.scopes.failed(now, version);
                    self.dirty.meta = true;
                }
                if let SfuCallKind::Record { version } = call {
                    self.meta.recording.sync.failed(now, version);
                    self.dirty.meta = true;
                }
                out.push(Output::Warn(format!(
                    "SFU {sfu}: {call:?} for {participant} did not reach it: {reason}"
                )));
                // A control call that cannot reach the SFU: no new room goes there, and the
                // room checks it (moving if it is gone).
                out.push(Output::SfuDown {
                    sfu: sfu.clone(),
                    reason: reason.clone(),
                });
                if current {
                    let occupied = !self.members.is_empty();
                    let checks = self.meta.media.unreachable(now, occupied);
                    if !checks.is_empty() {
                        self.dirty.meta = true;
                    }
                    out.extend(checks);
                }
            }
        }
        out
    }

    /// Carries out what the SFU health machine concluded.
    fn media_verdict(&mut self, verdict: sfu::Verdict) -> Vec<Output> {
        match verdict {
            sfu::Verdict::Outputs(out) => out,
            sfu::Verdict::Moved {
                out,
                sfu,
                reason,
                left,
            } => {
                // Offers from the old SFU (or the old session) mean nothing now, nor do its
                // numbers (the new SFU numbers its offers by its own clock).
                for (id, m) in &mut self.members {
                    if m.pending_offer.take().is_some() || m.pending_generation != 0 {
                        m.pending_generation = 0;
                        self.dirty.members.insert(id.clone());
                    }
                }
                let mut all = out;
                // The old SFU's judgements of everyone's connection mean nothing now (the new
                // one judges them within seconds of their media arriving).
                let judged: Vec<String> = self
                    .members
                    .iter_mut()
                    .filter_map(|(id, m)| m.sfu_quality.take().map(|_| id.clone()))
                    .collect();
                for id in judged {
                    self.dirty.members.insert(id.clone());
                    all.extend(self.quality_changed(&id));
                }
                // A draining SFU that is still up: end this room's sessions there now, so it
                // can stop (it waits for them) and stops renegotiating them.
                if let Some(old) = left {
                    all.extend(self.members.keys().map(|id| Output::Sfu {
                        sfu: old.clone(),
                        participant: id.clone(),
                        call: SfuCall::Leave,
                    }));
                }
                all.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::SfuChanged { sfu, reason },
                });
                // A recording goes on there (a new segment).
                all.extend(self.record_moved());
                all
            }
        }
    }

    fn remove(&mut self, now: Millis, id: &str) -> Vec<Output> {
        let Some(gone) = self.members.remove(id) else {
            return Vec::new();
        };
        self.dirty.members.insert(id.to_string());
        self.limits.forget(id);
        // (One who dropped and never came back left when they dropped.)
        self.report_left(now, &gone, gone.away_since.unwrap_or(now));
        // Leaving does not undo a host's stop: it waits for the same browser to come back.
        if let Some(bid) = gone.claims.bid.clone() {
            let mut held = gone.stopped;
            held.asked = false;
            if held.any() || held.locked {
                if self.meta.held.len() < 1_000 || self.meta.held.contains_key(&bid) {
                    self.meta.held.insert(bid, held);
                }
                self.dirty.meta = true;
            }
        }
        if self.meta.speakers.values().any(|s| s == id) {
            self.meta.speakers.retain(|_, s| s != id); // everyone drops the leaver's tile anyway
            self.dirty.meta = true;
        }
        let mut out = vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantLeft { id: id.to_string() },
        }];
        // While the room checks its SFU too: a check that finds it well moves nobody, so a
        // session left there (someone removed, whose page keeps its connection) would go on.
        if !self.meta.media.replacing() {
            out.extend(self.call_sfu(id.to_string(), SfuCall::Leave));
        }
        if self.meta.host.as_deref() == Some(id) {
            // Hand over to the longest-present member (ties: smallest id) — in a scheduled
            // meeting only to its owner's other tabs or a named co-host —, or to nobody.
            self.meta.host = self.successor();
            self.dirty.meta = true;
            if let Some(new) = self.meta.host.clone() {
                let scheduled = self.meta.scheduled.is_some();
                if let Some(m) = self.members.get_mut(&new) {
                    m.info.role = Role::Host;
                    // (A co-host standing in for a scheduled meeting's owner does not become
                    // the browser the room lets back in as host.)
                    if !scheduled {
                        self.meta.host_bid = m.claims.bid.clone();
                    }
                    self.dirty.members.insert(new.clone());
                }
                out.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::HostChanged { id: new.clone() },
                });
                // The new host runs the door now: they see who is waiting.
                if !self.meta.waiting.is_empty() {
                    out.extend(self.to_member(
                        &new,
                        ServerMessage::WaitingList {
                            waiting: self.waiting_list(),
                        },
                    ));
                }
                // And the polls' results.
                out.extend(self.polls_to(&new));
            }
        }
        if self.members.is_empty() {
            // Nobody to record: the recording ends with the meeting.
            out.extend(self.stop_recording(now, None));
            // Nobody left to move: the next first joiner gets a room's SFU afresh (and tells it
            // where they are with their offer).
            self.meta.media.emptied(now);
            self.meta.scopes.settle();
            self.meta.empty_since = Some(now);
            self.dirty.meta = true;
        }
        out
    }

    /// Revokes `participant`'s tokens — the one they hold and every one the room refreshed for
    /// them — until they would have expired: a later connection with one of them is refused. For
    /// someone no longer in the room, until any token issued before `now` has expired
    /// ([`MAX_TOKEN_TTL_SECS`]). The rows go out with the next [`Room::poll_output`]. Used by
    /// "remove" (next issue), which also ends their connection.
    pub fn revoke(&mut self, participant: &str, now: Millis) {
        let secs = now / 1000;
        let until = match self.members.get(participant) {
            // Tokens issued before the newest one expire no later than it does.
            Some(m) => m.claims.exp.max(secs),
            None => secs + MAX_TOKEN_TTL_SECS,
        } + LEEWAY_SECS;
        let mut ids = vec![participant.to_string()];
        if let Some(m) = self.members.get(participant) {
            let root = m.claims.jti.split('~').next().unwrap_or_default();
            ids.push(root.to_string());
            ids.extend((1..=m.refreshes).map(|n| format!("{root}~{n}")));
        }
        for id in ids {
            self.revoked.insert(id.clone(), until);
            self.dirty.revoked.insert(id);
        }
        if let Some(changes) = self.take_changes() {
            self.out.push_back(Output::Persist(changes));
        }
    }

    /// Forgets revocations of tokens that have expired anyway.
    fn forget_expired(&mut self, now: Millis) {
        let secs = now / 1000;
        let old: Vec<String> = self
            .revoked
            .iter()
            .filter(|(_, until)| **until < secs)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.revoked.remove(&id);
            self.dirty.revoked.insert(id);
        }
    }

    fn to_member(&self, id: &str, msg: ServerMessage) -> Vec<Output> {
        match self.members.get(id) {
            Some(m) if m.away_since.is_none() => vec![Output::Send {
                conn: m.conn.clone(),
                msg,
            }],
            _ => Vec::new(),
        }
    }
}

/// New claims for `m`: same lifetime from `now`, the next token id. The member keeps them.
fn refresh(m: &mut Member, now: Millis) -> Claims {
    let life = m.claims.exp.saturating_sub(m.claims.iat);
    let secs = now / 1000;
    m.refreshes += 1;
    let root = m
        .claims
        .jti
        .split('~')
        .next()
        .unwrap_or_default()
        .to_string();
    m.claims.jti = format!("{root}~{}", m.refreshes);
    m.claims.iat = secs;
    m.claims.nbf = secs;
    m.claims.exp = secs + life;
    m.claims.clone()
}

fn error_to(conn: ConnId, code: ErrorCode, message: String) -> Vec<Output> {
    vec![Output::Send {
        conn,
        msg: ServerMessage::Error { code, message },
    }]
}

/// Close code asking the client to reconnect (RFC 6455 1012, "service restart").
pub const CLOSE_RECONNECT: u16 = 1012;

fn reconnect(conn: ConnId) -> Output {
    Output::Close {
        conn,
        code: CLOSE_RECONNECT,
        reason: "please reconnect".into(),
    }
}

/// The meeting this token was for has ended: told so, and a final close.
fn ended(conn: ConnId) -> Vec<Output> {
    vec![
        Output::Send {
            conn: conn.clone(),
            msg: ServerMessage::MeetingEnded {},
        },
        Output::Close {
            conn,
            code: crate::protocol::CLOSE_ENDED,
            reason: "The host ended the meeting.".into(),
        },
    ]
}

/// An error frame and a final close (the client does not reconnect).
fn refuse(conn: ConnId, message: &str) -> Vec<Output> {
    refuse_with(conn, ErrorCode::Forbidden, message)
}

/// Refuses a connection with `code` and says why; the socket is closed for good.
fn refuse_with(conn: ConnId, code: ErrorCode, message: &str) -> Vec<Output> {
    vec![
        Output::Send {
            conn: conn.clone(),
            msg: ServerMessage::Error {
                code,
                message: message.to_string(),
            },
        },
        Output::Close {
            conn,
            code: CLOSE_FORBIDDEN,
            reason: message.to_string(),
        },
    ]
}

/// Which members are dirty is tracked by id; this keeps the set type in one place.
type IdSet = BTreeSet<String>;
