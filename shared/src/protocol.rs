//! The signaling protocol between browser and edge (over the room WebSocket).
//!
//! JSON, internally tagged by `type`, versioned by [`PROTOCOL_VERSION`]: a client says which
//! version it speaks in `hello`; the edge refuses versions it does not know with
//! [`ErrorCode::UnsupportedVersion`]. Adding a message or an optional field is not a version bump;
//! changing the meaning of one is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::error::{ErrorCode, WireError};
use crate::token::Role;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest signaling frame accepted (bytes). Larger frames close the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Messages a browser sends to its room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a socket: which protocol version the client speaks.
    Hello { version: u32 },
    /// Keep-alive; answered with `pong`.
    Ping { nonce: u64 },
    /// Microphone / camera state changed.
    SetMedia {
        audio_muted: bool,
        video_muted: bool,
    },
    /// Leaving on purpose (closing the tab counts too, through the socket closing).
    Leave {},
    /// The browser's SDP offer for its PeerConnection to the room's SFU (first publish, or a new
    /// PeerConnection after the SFU changed). Answered with `answer`.
    Offer {
        sdp: String,
        /// Chosen by the browser, echoed in the `answer`: an answer to an older offer (a
        /// PeerConnection since replaced) is recognised and ignored.
        #[serde(default)]
        id: u64,
    },
    /// The browser's answer to an `offer` the SFU made (tracks came or went), echoing its
    /// `generation` (0 from a page that does not: taken as the answer to the offer held).
    Answer {
        sdp: String,
        #[serde(default)]
        generation: u64,
    },
    /// The browser's media connection to the SFU stopped (ICE disconnected, or nothing arriving):
    /// the room checks its SFU and moves to another if it is gone.
    MediaFailed {},
    /// How big each remote video is shown now (sent debounced, whole list each time): the SFU
    /// forwards each publisher's smallest simulcast layer that fills the tile, and nothing for a
    /// hidden one. Publishers not listed get a default.
    Views { views: Vec<TileView> },
    /// Started or stopped sharing a screen (needs the `screen` grant; at most the room's
    /// `max_screen_sharers` at a time).
    SetScreen { sharing: bool },
    /// Host only: how many people may share a screen at once (1 to 16).
    SetRoomOptions { max_screen_sharers: u32 },
    /// A chat message to everyone, or only to participant `to`. `client_id` is chosen by the page,
    /// one per message: sent again after a reconnect, the message still appears once.
    Chat {
        text: String,
        #[serde(default)]
        to: Option<String>,
        client_id: String,
    },
    /// Host or co-host: delete chat message `id` for everyone.
    DeleteChat { id: u64 },
    /// A reaction shown over your tile on every page for a few seconds (one of [`REACTIONS`]).
    React { emoji: String },
    /// Raise or lower your own hand.
    Hand { raised: bool },
    /// Host or co-host: lower participant `id`'s hand.
    LowerHand { id: String },
    /// Host or co-host: let waiting person `id` in.
    Admit { id: String },
    /// Host or co-host: turn waiting person `id` away.
    Deny { id: String },
    /// Host or co-host: let everyone waiting in.
    AdmitAll {},
    /// Host or co-host: remove participant `id` from the meeting; they cannot come back.
    Remove { id: String },
    /// Host or co-host: stop participant `id`'s microphone, camera or screen share. The SFU stops
    /// forwarding it; they may turn it on again unless `lock`.
    Stop {
        id: String,
        what: MediaKind,
        #[serde(default)]
        lock: bool,
    },
    /// Host or co-host: mute everyone else; with `lock`, nobody may unmute themselves until a host
    /// lets them (turning "may unmute" back on in the settings).
    MuteAll {
        #[serde(default)]
        lock: bool,
    },
    /// Host or co-host: ask participant `id` to unmute (they decide; nobody unmutes anyone).
    AskUnmute { id: String },
    /// Host only: make participant `id` a co-host, or take it back.
    SetCohost { id: String, cohost: bool },
    /// Host or co-host: change the room's settings (`has_password` is ignored: see
    /// `set_password`).
    UpdateSettings { settings: RoomSettings },
    /// Host only: set (`Some`) or clear the room password.
    SetPassword {
        #[serde(default)]
        password: Option<String>,
    },
    /// Host only: end the meeting for everyone.
    EndMeeting {},
    /// Host or co-host: launch a poll (2 to [`MAX_POLL_OPTIONS`] options, at most
    /// [`MAX_POLL_BYTES`] of text in all). Everyone is sent `poll`.
    CreatePoll {
        question: String,
        options: Vec<String>,
        /// More than one option may be chosen.
        #[serde(default)]
        multiple: bool,
        /// Nobody, hosts included, learns who chose what.
        #[serde(default)]
        anonymous: bool,
    },
    /// Vote in open poll `poll`: the chosen options' positions (one for a single-choice poll).
    /// Once per person; a vote cannot be changed.
    Vote { poll: u64, choices: Vec<u32> },
    /// Host or co-host: show poll `poll`'s results to everyone (live while it is open).
    SharePollResults { poll: u64 },
    /// Host or co-host: end poll `poll` (no more votes; its results are kept for the meeting).
    EndPoll { poll: u64 },
    /// Host or co-host: start (`true`) or stop recording the meeting.
    SetRecording { on: bool },
    /// This page's own connection quality as it measures it (sent when it changes): everyone's
    /// tile of this person shows it.
    Quality { quality: crate::health::Quality },
    /// Host or co-host: the breakout rooms (names; room `n` is `rooms[n - 1]`), who goes where
    /// (participant id → room number) and whether people may pick a room themselves. While the
    /// rooms are open, someone whose room changed moves at once; rooms can be added or renamed,
    /// not removed.
    SetBreakouts {
        rooms: Vec<String>,
        #[serde(default)]
        assigned: BTreeMap<String, u32>,
        #[serde(default)]
        let_choose: bool,
    },
    /// Host or co-host: one change to the breakout plan, applied to the plan as the room has it
    /// (so changes made in quick succession, or by two hosts at once, all count: a whole
    /// `SetBreakouts` built from a plan the page had not yet heard back would undo the one
    /// before it). Checked as `SetBreakouts` is; the room sends the new plan to everyone.
    EditBreakouts { edit: BreakoutEdit },
    /// Host or co-host: open the rooms (everyone assigned goes to theirs), for `minutes` if set;
    /// then a closing countdown starts on its own.
    OpenBreakouts {
        #[serde(default)]
        minutes: Option<u32>,
    },
    /// Host or co-host: everyone is back in the main room after `seconds` (shown to everyone as a
    /// countdown; 0: at once).
    CloseBreakouts {
        #[serde(default = "default_close_seconds")]
        seconds: u32,
    },
    /// Go to breakout room `room` (0: the main room). Hosts and co-hosts: any room, any time the
    /// rooms are open; others: back to the main room, or any room when they may choose.
    JoinBreakout { room: u32 },
    /// Host or co-host: a message shown as a banner to everyone, in every room.
    BreakoutMessage { text: String },
}

/// One change to the breakout plan (`ClientMessage::EditBreakouts`). Rooms are named by their
/// name as the page saw it (names are unique), not by position: an edit made before the page heard
/// of another (a room removed, two hosts at once) never lands on the room that moved into a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BreakoutEdit {
    /// A new room at the end, named "Room N": the first N, counting from the number of rooms with
    /// it, that no room has.
    AddRoom,
    /// The room called `room` is now called `name`.
    RenameRoom { room: String, name: String },
    /// The room called `room` goes (only while the rooms are closed); people given a later room
    /// keep theirs, people given this one are no longer assigned. A room already gone: nothing
    /// to do (a second click is not an error).
    RemoveRoom { room: String },
    /// `participant` goes to the room called `room` (`None`: not assigned). While the rooms are
    /// open they move at once.
    Assign {
        participant: String,
        room: Option<String>,
    },
    /// Everyone but the one asking, in the order they joined, spread over the rooms as evenly as
    /// can be (`crate::room::even_split`).
    AssignEvenly,
    /// Whether people may pick a room themselves.
    LetChoose { on: bool },
}

/// Most breakout rooms a meeting has.
pub const MAX_BREAKOUT_ROOMS: usize = 50;
/// Most characters of a breakout room's name.
pub const MAX_BREAKOUT_NAME_CHARS: usize = 64;
/// Longest a breakout timer runs.
pub const MAX_BREAKOUT_MINUTES: u32 = 24 * 60;
/// Longest closing countdown.
pub const MAX_BREAKOUT_CLOSE_SECONDS: u32 = 600;
/// The closing countdown when a host does not say, and when the timer runs out.
pub const BREAKOUT_CLOSE_SECONDS: u32 = 30;

pub fn default_close_seconds() -> u32 {
    BREAKOUT_CLOSE_SECONDS
}

/// The breakout rooms as everyone sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BreakoutView {
    /// Room names: room `n` (its number everywhere else) is `rooms[n - 1]`.
    pub rooms: Vec<String>,
    /// Who goes where when the rooms open (participant id → room number).
    #[serde(default)]
    pub assigned: BTreeMap<String, u32>,
    /// People may pick a room themselves.
    #[serde(default)]
    pub let_choose: bool,
    /// The rooms are open (people are in them).
    #[serde(default)]
    pub open: bool,
    /// The timer: when the closing countdown starts on its own (ms since the epoch).
    #[serde(default)]
    pub ends_at: Option<u64>,
    /// The closing countdown: everyone is back in the main room then (ms since the epoch).
    #[serde(default)]
    pub closing_at: Option<u64>,
    /// A host's latest message to every room (until the rooms close).
    #[serde(default)]
    pub message: Option<BreakoutNote>,
}

/// A host's message to every breakout room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BreakoutNote {
    /// Who sent it (their name).
    pub from: String,
    pub text: String,
}

/// What a host can stop for someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
    Screen,
}

/// The reactions on offer.
pub const REACTIONS: [&str; 6] = ["👍", "👏", "😂", "🎉", "❤️", "✋"];
/// Longest chat message (characters).
pub const MAX_CHAT_CHARS: usize = 2_000;
/// Chat messages the room keeps and a joiner receives.
pub const CHAT_HISTORY: usize = 200;

/// A room's settings (hosts and co-hosts change them; everyone sees them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomSettings {
    /// Joiners wait until a host or co-host lets them in (and wait while none is there).
    pub waiting_room: bool,
    /// Nobody new gets in (people who drop briefly may still come back).
    pub locked: bool,
    /// The room has a password (set with `set_password`; read-only here).
    pub has_password: bool,
    /// A correct password lets a joiner skip the waiting room.
    pub password_skips_waiting: bool,
    /// Participants (not only hosts) may share a screen.
    pub may_share_screen: bool,
    /// Participants may unmute themselves after a host muted them.
    pub may_unmute: bool,
    /// Participants may chat.
    pub may_chat: bool,
    /// Participants may react.
    pub may_react: bool,
    /// Co-hosts (not only the host) may start and stop a recording. Only the host changes it.
    pub cohosts_may_record: bool,
}

impl RoomSettings {
    /// Someone with `role` may start and stop a recording: the host, and co-hosts unless the host
    /// said no. (The room core decides with it; pages show or hide Record by it.)
    pub fn may_record(&self, role: Role) -> bool {
        match role {
            Role::Host => true,
            Role::Cohost => self.cohosts_may_record,
            Role::Participant | Role::Viewer => false,
        }
    }
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            waiting_room: false,
            locked: false,
            has_password: false,
            password_skips_waiting: false,
            may_share_screen: true,
            may_unmute: true,
            may_chat: true,
            may_react: true,
            cohosts_may_record: true,
        }
    }
}

/// One chat message as people see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room's number for it (rising).
    pub id: u64,
    pub from: String,
    /// The sender's name when they sent it.
    pub name: String,
    /// Private to this participant (and the sender), if set.
    #[serde(default)]
    pub to: Option<String>,
    pub text: String,
    /// Milliseconds since the epoch.
    pub at: u64,
    /// The sender's page's id for it (a resend is recognised).
    pub client_id: String,
    /// The breakout room it was sent in (0: the main room): only people there read it (private
    /// messages go wherever their reader is).
    #[serde(default)]
    pub scope: u32,
    /// A notice from the meeting itself (a recording started or stopped), not from a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notice: bool,
}

/// Most polls a meeting keeps.
pub const MAX_POLLS: usize = 128;
/// Most bytes of text (question and options) in one poll.
pub const MAX_POLL_BYTES: usize = 1024;
/// Fewest and most options a poll has.
pub const MIN_POLL_OPTIONS: usize = 2;
pub const MAX_POLL_OPTIONS: usize = 10;

/// One poll as a participant may see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollView {
    /// The room's number for it (rising).
    pub id: u64,
    pub question: String,
    pub options: Vec<String>,
    pub multiple: bool,
    pub anonymous: bool,
    /// Who launched it (their name then).
    pub by: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Still taking votes.
    pub open: bool,
    /// A host showed the results to everyone.
    pub shared: bool,
    /// This person (this browser) has voted.
    pub voted: bool,
    /// What this person chose (named polls only: an anonymous poll keeps no one's choice).
    #[serde(default)]
    pub my_choices: Vec<u32>,
    /// The results, for hosts and co-hosts, and for everyone once shared.
    #[serde(default)]
    pub results: Option<PollResults>,
}

/// A poll's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollResults {
    /// Votes per option, in the options' order.
    pub counts: Vec<u32>,
    /// How many people voted.
    pub voters: u32,
    /// Named polls: who chose each option (names when they voted); empty for anonymous ones.
    #[serde(default)]
    pub names: Vec<Vec<String>>,
}

/// Someone in the waiting room, as hosts see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub id: String,
    pub name: String,
    pub since: u64,
}

/// Which of a participant's tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Camera,
    Screen,
}

/// One remote video as this browser shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TileView {
    pub publisher: String,
    pub source: Source,
    /// Device pixels tall (CSS height × devicePixelRatio); 0 = hidden or off-screen.
    pub height: u32,
}

/// Most entries a `views` message may carry.
pub const MAX_VIEWS: usize = 128;

/// Messages the edge sends to a browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once on connect: who you are and what the room looks like now.
    Snapshot {
        you: String,
        room: RoomSnapshot,
        /// This connection resumes a session the room still had (a reconnect within the grace
        /// period): media already set up stays as it is. `false`: a fresh session; set media up.
        #[serde(default)]
        resumed: bool,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        id: String,
    },
    MediaChanged {
        id: String,
        audio_muted: bool,
        video_muted: bool,
    },
    /// `id`'s connection dropped; they stay in the room for the reconnect grace period.
    ParticipantAway {
        id: String,
    },
    /// `id` reconnected in time: same session, nothing to set up again.
    ParticipantBack {
        id: String,
    },
    /// The host left; `id` hosts the room now.
    HostChanged {
        id: String,
    },
    /// `id`'s connection quality: the worse of what their page measures and what the SFU
    /// judges (none: neither says anything now — a failover dropped the old SFU's judgement).
    QualityChanged {
        id: String,
        #[serde(default)]
        quality: Option<crate::health::Quality>,
    },
    Pong {
        nonce: u64,
    },
    /// The SFU's answer to this client's `offer` number `id`.
    Answer {
        sdp: String,
        #[serde(default)]
        id: u64,
    },
    /// The SFU offers a new session description (tracks to receive came or went); reply `answer`
    /// with the same `generation` (the SFU's number for this offer of this session: an answer
    /// to another, older offer is recognised and not applied to this one).
    Offer {
        sdp: String,
        #[serde(default)]
        generation: u64,
    },
    /// Which of your camera's simulcast layers anyone receives (lowest first): encode only those
    /// (dynacast). The lowest stays on so a newcomer's first frame is never waited for.
    PublishLayers {
        active: Vec<bool>,
    },
    /// `id` started or stopped sharing a screen.
    ScreenChanged {
        id: String,
        sharing: bool,
    },
    /// The host changed the room's options.
    RoomOptions {
        max_screen_sharers: u32,
    },
    /// The participant speaking now (`None`: nobody has spoken yet, or the speaker left).
    ActiveSpeaker {
        id: Option<String>,
    },
    /// The room's media moved to another SFU (the old one failed or is draining): set media up
    /// again (a new PeerConnection and `offer`), keeping mute and camera state.
    SfuChanged {
        sfu: String,
        reason: String,
    },
    /// A fresh room token for this session, sent before the current one expires: use it for every
    /// reconnect from now on (the old one stops working when it expires).
    Token {
        token: String,
        expires_at_ms: u64,
    },
    /// You are in the waiting room of `room`: a host or co-host lets you in (a `snapshot` follows)
    /// or not.
    Waiting {
        room: String,
    },
    /// Hosts and co-hosts: who is waiting now.
    WaitingList {
        waiting: Vec<Waiter>,
    },
    ChatMessage {
        message: ChatMessage,
    },
    ChatDeleted {
        id: u64,
    },
    /// `id` reacted (shown over their tile for a few seconds).
    Reaction {
        id: String,
        emoji: String,
    },
    /// `id` raised (`raised_at` set, ms since the epoch) or lowered their hand.
    HandChanged {
        id: String,
        raised_at: Option<u64>,
    },
    /// `id`'s role changed (co-host given or taken).
    RoleChanged {
        id: String,
        role: Role,
    },
    /// A host or co-host (`by`, a name) stopped your microphone, camera or screen share; `locked`:
    /// you may not turn it on again yourself.
    StoppedByHost {
        what: MediaKind,
        by: String,
        locked: bool,
    },
    /// A host or co-host (`by`, a name) asks you to unmute.
    UnmuteRequested {
        by: String,
    },
    Settings {
        settings: RoomSettings,
    },
    /// The host ended the meeting (the socket closes next).
    MeetingEnded {},
    /// The meeting is being recorded since `recording.started_at` (`None`: not any more).
    Recording {
        recording: Option<RecordingView>,
    },
    /// A poll was launched or changed (a vote, results shared, ended), as you may see it.
    Poll {
        poll: PollView,
    },
    /// The breakout rooms changed (plan, opened, timer, closing countdown, closed).
    Breakouts {
        breakouts: BreakoutView,
    },
    /// `id` moved to breakout room `scope` (0: the main room).
    ParticipantMoved {
        id: String,
        scope: u32,
    },
    /// You moved to breakout room `scope` (0: the main room): its chat and its speaker. Media
    /// follows on the same connection (the SFU sends a new offer).
    Moved {
        scope: u32,
        chat: Vec<ChatMessage>,
        speaker: Option<String>,
    },

    Error {
        code: ErrorCode,
        message: String,
    },
}

/// The room as a newcomer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub name: String,
    pub participants: Vec<ParticipantInfo>,
    /// Id of the SFU that carries this room's media, once one is assigned.
    pub sfu: Option<String>,
    /// Participant id of the host.
    pub host: Option<String>,
    /// Who is speaking (the SFU's active-speaker detection), if anyone has.
    #[serde(default)]
    pub speaker: Option<String>,
    /// How many people may share a screen at once (a host setting).
    #[serde(default = "default_max_screen_sharers")]
    pub max_screen_sharers: u32,
    #[serde(default)]
    pub settings: RoomSettings,
    /// The chat as this participant may see it (everyone's messages and their private ones),
    /// oldest first, at most [`CHAT_HISTORY`].
    #[serde(default)]
    pub chat: Vec<ChatMessage>,
    /// Who is waiting (only hosts and co-hosts are told).
    #[serde(default)]
    pub waiting: Vec<Waiter>,
    /// The meeting's polls as this participant may see them, oldest first.
    #[serde(default)]
    pub polls: Vec<PollView>,
    /// (Boxed: it would make every [`ServerMessage`] as big as a snapshot.)
    #[serde(default)]
    pub breakouts: Box<BreakoutView>,
    /// The meeting is being recorded (everyone sees an indicator while it is). (Boxed, as
    /// `breakouts`.)
    #[serde(default)]
    pub recording: Option<Box<RecordingView>>,
}

/// A recording running in the meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingView {
    /// Milliseconds since the epoch.
    pub started_at: u64,
    /// The name of who started it.
    pub by: String,
}

pub fn default_max_screen_sharers() -> u32 {
    1
}

/// The most a host may allow to share at once.
pub const MAX_SCREEN_SHARERS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub audio_muted: bool,
    pub video_muted: bool,
    /// Connection dropped; may come back within the grace period.
    #[serde(default)]
    pub away: bool,
    /// Sharing a screen.
    #[serde(default)]
    pub screen: bool,
    /// Hand raised at (ms since the epoch), if raised.
    #[serde(default)]
    pub hand: Option<u64>,
    /// The breakout room they are in (0: the main room).
    #[serde(default)]
    pub scope: u32,
    /// Their own connection quality, as their page last reported it.
    #[serde(default)]
    pub quality: Option<crate::health::Quality>,
}

/// Answer of `POST /api/rooms/{room}/join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// In the waiting room: the token allows waiting only, until a host lets them in.
    #[serde(default)]
    pub waiting: bool,
    pub token: String,
    /// Path (same origin) of the room WebSocket, token included.
    pub ws_url: String,
    pub participant_id: String,
    pub expires_at_ms: u64,
    /// The SFU that carries the room's media, and why it was chosen.
    pub sfu: crate::region::SfuChoice,
    /// `RTCConfiguration.iceServers` (TURN with credentials for an hour) for members; none for the
    /// waiting room. Later ones: `GET /api/rooms/{room}/ice-servers` with the room token.
    #[serde(default)]
    pub ice_servers: serde_json::Value,
}

/// Body of `POST /api/rooms/{room}/join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub name: String,
    /// The meeting's password, if it has one (or to give a new meeting one).
    #[serde(default)]
    pub password: Option<String>,
}

/// Body of the SFU control calls that carry a session description
/// (`POST {sfu}/v1/rooms/{room}/participants/{id}/offer|answer`), and of their answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdpBody {
    pub sdp: String,
}

/// Body of `POST {sfu}/v1/rooms/{room}/participants/{id}/answer`: the browser's answer to the
/// SFU's offer number `generation` (0: not numbered — the answer to whatever offer waits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    pub sdp: String,
    /// Left out when 0, so an edge deployed before its SFUs still talks to the ones from before
    /// numbered offers (their `SdpBody` refuses unknown fields; they only send 0). Deploy the
    /// edge first: an edge from before refuses a numbered `SfuSignal`.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub generation: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Body of `POST {sfu}/v1/rooms/{room}/participants/{id}/offer`: the browser's offer, and what of
/// theirs a host has stopped (the new session starts with it blocked: a fresh PeerConnection is no
/// way around a host's mute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferBody {
    pub sdp: String,
    #[serde(default)]
    pub block: BlockBody,
    /// The part of the room the participant is in (0: the main room; a breakout room's number):
    /// the session receives only what people in the same part publish. (Left out when 0: an SFU
    /// from before breakout rooms takes the offer.)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scope: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Body of `POST {sfu}/v1/rooms/{room}/scopes`: where everyone in the room is now (participant
/// id → breakout room number; anyone not named is in the main room). Whole state, not a change:
/// `version` rises with every change, and an SFU applies only a version at least as new as the
/// last it applied (calls may arrive out of order; the same one may be sent again).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesBody {
    pub version: u64,
    #[serde(default)]
    pub scopes: BTreeMap<String, u32>,
}

/// Body of `POST {sfu}/v1/rooms/{room}/recording`: whether the room is recorded, and as which
/// recording (`None`: not recorded). Whole state with a rising `version`, like [`ScopesBody`]: an
/// SFU applies only a version newer than the last it applied, and keeps it for a room that is not
/// there yet (a failover: the new SFU records from the first person who arrives).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    pub version: u64,
    #[serde(default)]
    pub recording: Option<String>,
}

/// A recording's id: 1–64 letters, digits, `-` or `_` (it names a directory and R2 keys).
pub fn valid_recording_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The SFU's callback to the edge (`POST /api/sfu/signal`): a new offer for one participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuSignal {
    pub room: String,
    pub participant: String,
    pub sdp: String,
    /// The SFU sending it: the room ignores offers from an SFU it has moved away from (a draining
    /// SFU renegotiates as its sessions end).
    #[serde(default)]
    pub sfu: Option<String>,
    /// The SFU's number for this offer: its wall clock in µs when the offer was made, strictly
    /// rising over all sessions in the room (no two offers to a room share a number), echoed
    /// with the answer; 0: not numbered (an SFU from before counted each session's offers from
    /// 1). Left out when 0.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub generation: u64,
}

/// The SFU's other callbacks to the edge (`POST /api/sfu/event`), for one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown fields are ignored (not refused): an SFU newer than the edge may say more.
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuEvent {
    /// Which camera layers of `participant` anyone receives (see `ServerMessage::PublishLayers`).
    PublishLayers {
        room: String,
        participant: String,
        active: Vec<bool>,
        /// The SFU sending it (events from an SFU the room left are ignored).
        #[serde(default)]
        sfu: Option<String>,
        /// Rises with every event this SFU sends (µs of its wall clock, strictly increasing):
        /// the SFU sends an event again until the edge took it, so one may arrive twice or after
        /// a newer one; the room applies an event only if it is newer than the last it applied
        /// of the same kind (and publisher) from that SFU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// The active speaker of one part of the room changed.
    ActiveSpeaker {
        room: String,
        participant: Option<String>,
        /// Which part: 0 the main room, or a breakout room's number (each has its own speaker).
        #[serde(default)]
        scope: u32,
        #[serde(default)]
        sfu: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// How the SFU judges `participant`'s connection (its uplink's and downlink's loss, whether
    /// its media session answers): the room shows the worse of this and the page's own report.
    Quality {
        room: String,
        participant: String,
        quality: crate::health::Quality,
        #[serde(default)]
        sfu: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
}

impl SfuEvent {
    pub fn room(&self) -> &str {
        match self {
            SfuEvent::PublishLayers { room, .. }
            | SfuEvent::ActiveSpeaker { room, .. }
            | SfuEvent::Quality { room, .. } => room,
        }
    }

    /// Its version (see [`SfuEvent::PublishLayers`]), if it has one.
    pub fn version(&self) -> Option<u64> {
        match self {
            SfuEvent::PublishLayers { version, .. }
            | SfuEvent::ActiveSpeaker { version, .. }
            | SfuEvent::Quality { version, .. } => *version,
        }
    }

    pub fn set_version(&mut self, v: u64) {
        match self {
            SfuEvent::PublishLayers { version, .. }
            | SfuEvent::ActiveSpeaker { version, .. }
            | SfuEvent::Quality { version, .. } => *version = Some(v),
        }
    }

    /// What it is about: a newer event with the same key supersedes it.
    pub fn key(&self) -> String {
        match self {
            SfuEvent::PublishLayers {
                room, participant, ..
            } => format!("{room}/layers/{participant}"),
            SfuEvent::ActiveSpeaker { room, scope, .. } => format!("{room}/speaker/{scope}"),
            SfuEvent::Quality {
                room, participant, ..
            } => format!("{room}/quality/{participant}"),
        }
    }

    /// The SFU that sent it, if it said.
    pub fn sfu(&self) -> Option<&str> {
        match self {
            SfuEvent::PublishLayers { sfu, .. }
            | SfuEvent::ActiveSpeaker { sfu, .. }
            | SfuEvent::Quality { sfu, .. } => sfu.as_deref(),
        }
    }
}

/// Body of `POST {sfu}/v1/rooms/{room}/participants/{id}/block`: which of the participant's
/// published tracks the SFU must not forward (a host stopped them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// Body of `POST {sfu}/v1/rooms/{room}/participants/{id}/views`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsBody {
    pub views: Vec<TileView>,
}

/// An SFU told to stop (`POST /api/sfu/draining`): it takes no new rooms, and these rooms should
/// move elsewhere before it exits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuDraining {
    pub sfu: String,
    pub rooms: Vec<String>,
}

/// A quick sanity check on a session description from a peer, before anyone spends work on it.
pub fn check_sdp(sdp: &str) -> Result<(), WireError> {
    if !sdp.starts_with("v=0") || !sdp.contains("\nm=") {
        return Err(WireError {
            code: ErrorCode::BadSdp,
            message:
                "not a session description (expected SDP starting with v=0 and with media sections)"
                    .into(),
        });
    }
    Ok(())
}

/// Close code for the meeting having been ended by its host.
pub const CLOSE_ENDED: u16 = 4410;

/// Close codes after which a client must not reconnect: closed on purpose (1000), frame too big
/// (1009), replaced by a newer connection (4000), refused (4401 bad or expired token, 4403 not
/// allowed in this room: removed, turned away), the meeting ended (4410). Any other close is a
/// drop: reconnect with the same token.
pub fn is_final_close(code: u16) -> bool {
    matches!(code, 1000 | 1009 | 4000 | 4401 | 4403 | CLOSE_ENDED)
}

/// Delay before reconnect attempt `n` (0-based): 250 ms doubling, at most 4 s, so a client that
/// dropped comes back well inside the room's 10 s grace period.
pub fn reconnect_delay_ms(attempt: u32) -> u32 {
    250u32.saturating_mul(1 << attempt.min(4))
}

/// Parses a client frame; a malformed or unknown frame becomes a wire error, never a panic.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, WireError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(WireError {
            code: ErrorCode::BadMessage,
            message: format!(
                "frame of {} bytes is over the {} byte limit",
                text.len(),
                MAX_FRAME_BYTES
            ),
        });
    }
    serde_json::from_str(text).map_err(|e| WireError {
        code: ErrorCode::BadMessage,
        message: format!("not a valid signaling message: {e}"),
    })
}

/// Paths of the app's own pages (`/account`, …): no room may take them.
pub const RESERVED_ROOM_NAMES: &[&str] = &["account", "api", "meetings", "recordings"];

/// Room names: 1–64 characters of `a-z`, `0-9`, `-`, `_`, not one of [`RESERVED_ROOM_NAMES`];
/// case is folded. Anything else is refused with a message a person can act on.
pub fn normalize_room_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err("Room name is empty.".into());
    }
    if name.len() > 64 {
        return Err("Room name is longer than 64 characters.".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "Room name has '{c}': use letters, digits, '-' and '_' only."
        ));
    }
    if RESERVED_ROOM_NAMES.contains(&name.as_str()) {
        return Err(format!(
            "\"{name}\" is the name of a page of edgemeet, not a room: choose another name."
        ));
    }
    Ok(name)
}

/// Display names: trimmed, 1–64 characters, no control characters.
pub fn normalize_display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("Display name is empty.".into());
    }
    if name.chars().count() > 64 {
        return Err("Display name is longer than 64 characters.".into());
    }
    if name.chars().any(char::is_control) {
        return Err("Display name has control characters.".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_answer_not_numbered_reads_as_before_numbered_answers_and_offers() {
        // Not numbered: exactly the body an SFU from before numbered offers takes (`SdpBody`,
        // which refuses unknown fields).
        let plain = serde_json::to_string(&AnswerBody {
            sdp: "s".into(),
            generation: 0,
        })
        .unwrap();
        assert_eq!(plain, r#"{"sdp":"s"}"#);
        assert!(serde_json::from_str::<SdpBody>(&plain).is_ok());
        let numbered = serde_json::to_string(&AnswerBody {
            sdp: "s".into(),
            generation: 4,
        })
        .unwrap();
        assert_eq!(
            serde_json::from_str::<AnswerBody>(&numbered)
                .unwrap()
                .generation,
            4
        );
        // A page from before echoes nothing: 0.
        let old: ClientMessage = serde_json::from_str(r#"{"type":"answer","sdp":"s"}"#).unwrap();
        assert_eq!(
            old,
            ClientMessage::Answer {
                sdp: "s".into(),
                generation: 0
            }
        );
    }
    use super::*;

    #[test]
    fn client_messages_round_trip_with_type_tag() {
        let m = ClientMessage::SetMedia {
            audio_muted: true,
            video_muted: false,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#
        );
        assert_eq!(parse_client_message(&s).unwrap(), m);
    }

    #[test]
    fn malformed_and_unknown_frames_are_wire_errors() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"leave","x":1}"#,
        ] {
            let e = parse_client_message(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadMessage, "{bad}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let big = format!(
            r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        let e = parse_client_message(&big).unwrap_err();
        assert!(e.message.contains("limit"));
    }

    #[test]
    fn room_names_are_validated_and_folded() {
        assert_eq!(
            normalize_room_name("  Team-Sync_1 ").unwrap(),
            "team-sync_1"
        );
        assert!(normalize_room_name("").is_err());
        assert!(normalize_room_name("a b").unwrap_err().contains("' '"));
        assert!(normalize_room_name(&"a".repeat(65)).is_err());
        assert!(normalize_room_name("../etc").is_err());
        assert!(normalize_room_name("Account")
            .unwrap_err()
            .contains("page of edgemeet"));
    }

    #[test]
    fn display_names_are_validated() {
        assert_eq!(normalize_display_name(" Ada ").unwrap(), "Ada");
        assert!(normalize_display_name("  ").is_err());
        assert!(normalize_display_name("a\u{0007}b").is_err());
        assert!(normalize_display_name(&"é".repeat(64)).is_ok());
        assert!(normalize_display_name(&"é".repeat(65)).is_err());
    }

    #[test]
    fn reconnect_policy() {
        let v: Vec<u32> = (0..7).map(reconnect_delay_ms).collect();
        assert_eq!(v, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert!(
            v.iter().take(4).sum::<u32>() < 10_000,
            "four tries fit in the grace period"
        );
        for c in [1000, 1009, 4000, 4401, 4403] {
            assert!(is_final_close(c), "{c}");
        }
        for c in [1001, 1006, 1011, 1012] {
            assert!(!is_final_close(c), "{c}");
        }
    }

    #[test]
    fn error_codes_map_to_http_statuses() {
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::NoMediaServer.http_status(), 503);
        let e = WireError {
            code: ErrorCode::NotFound,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"not_found","message":"x"}"#
        );
    }
}
