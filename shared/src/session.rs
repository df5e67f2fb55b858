//! The browser's session with its room, as a pure core: the room socket's life (open, hello,
//! reconnect with backoff on the latest token, stop on a final close), when to set media up (a fresh
//! session, the room moving to another SFU, a media connection that failed or never came up), and
//! the watchdogs that notice media stopping. The page feeds it [`SessionInput`]s with the time and
//! performs its [`Action`]s; [`Session::poll_timeout`] says when to feed [`SessionInput::Timeout`].
//! No clock, socket or browser API in here, so every sequence is a native unit test.

use std::collections::VecDeque;

use crate::client_room::ClientRoom;
use crate::error::ErrorCode;
use crate::protocol::{
    is_final_close, reconnect_delay_ms, ClientMessage, MediaKind, ServerMessage, CLOSE_ENDED,
    PROTOCOL_VERSION,
};
use crate::Millis;

/// A new media connection that is not connected this long after it started is started over.
pub const CONNECT_TIMEOUT_MS: Millis = 5_000;
/// A media connection that failed is started over after this pause.
pub const RESTART_AFTER_FAILURE_MS: Millis = 500;
/// Remote media that stops arriving for this long is reported to the room.
pub const STALL_MS: Millis = 1_000;
/// At most one stall report this often.
pub const STALL_REPORT_EVERY_MS: Millis = 2_000;

/// `RTCPeerConnection.connectionState`, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

impl PcState {
    /// From the browser's string (unknown values count as `New`).
    pub fn parse(s: &str) -> PcState {
        match s {
            "connecting" => PcState::Connecting,
            "connected" => PcState::Connected,
            "disconnected" => PcState::Disconnected,
            "failed" => PcState::Failed,
            "closed" => PcState::Closed,
            _ => PcState::New,
        }
    }
}

/// What the page tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionInput {
    /// The person joined; `ws_path` is the room socket's path (with the token) from the join answer.
    Joined {
        ws_path: String,
    },
    /// Socket number `socket` (from [`Action::OpenSocket`]) opened.
    SocketOpened {
        socket: u64,
    },
    SocketMessage {
        socket: u64,
        msg: ServerMessage,
    },
    SocketClosed {
        socket: u64,
        code: u16,
    },
    /// The current media connection's state changed.
    MediaState(PcState),
    /// RTP packets received so far on the current media connection (sampled a few times a second).
    InboundPackets(f64),
    /// Microphone / camera switched on or off.
    Local {
        mic: bool,
        cam: bool,
    },
    /// Started or stopped sharing a screen.
    Sharing(bool),
    /// The person sent a chat message (`client_id`: the page's own id for it). The session keeps
    /// it until the room has it, and sends it again after a reconnect (the room recognises the id:
    /// it appears once).
    Chat {
        text: String,
        to: Option<String>,
        client_id: String,
    },
    /// The person pressed Leave.
    Leave,
    /// The time [`Session::poll_timeout`] asked for has come.
    Timeout,
}

/// What the page must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open the room socket at `path`; report its events with this number.
    OpenSocket {
        socket: u64,
        path: String,
    },
    Send(ClientMessage),
    /// Set media up anew: a new PeerConnection publishing the local tracks (with the microphone
    /// and camera on or off as given), and its offer.
    StartMedia {
        mic: bool,
        cam: bool,
    },
    /// Stop media (the PeerConnection closes).
    StopMedia,
    /// An answer or offer for the current PeerConnection, in order.
    Signal(ServerMessage),
    /// Dynacast: which camera layers to encode.
    PublishLayers(Vec<bool>),
    /// A participant left: drop their remote streams.
    Forget {
        id: String,
    },
    /// A short notice for people.
    Toast(String),
    /// An error to show (`None`: clear it).
    Error(Option<String>),
    /// The session is over (left, or refused for good): back to the pre-join screen with `message`.
    Ended {
        message: String,
    },
    /// `id` reacted: show `emoji` over their tile for a few seconds.
    Reaction {
        id: String,
        emoji: String,
    },
    /// A host stopped this browser's microphone, camera or screen share: turn it off here too.
    Stopped {
        what: MediaKind,
    },
    /// A host asks this person to unmute: offer them the choice.
    UnmuteRequested {
        by: String,
    },
    /// The room sent a fresh token: fetch fresh TURN credentials with it from `ice_path`.
    NewToken {
        token: String,
        ice_path: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Socket {
    Idle,
    Open {
        got_snapshot: bool,
    },
    /// Waiting to reconnect at `at`.
    Waiting {
        at: Millis,
    },
}

#[derive(Debug, Clone, Default)]
struct MediaWatch {
    started: bool,
    /// The SFU the room named when this media session was set up.
    sfu: Option<String>,
    state: Option<PcState>,
    /// When the current state began (for the connect watchdog).
    since: Millis,
    /// A restart after a failure, due at this time.
    restart_at: Option<Millis>,
    packets: f64,
    packets_since: Millis,
    last_report: Option<Millis>,
}

/// The session. See the module docs.
#[derive(Debug, Clone)]
pub struct Session {
    room: ClientRoom,
    path: Option<String>,
    socket_no: u64,
    socket: Socket,
    attempt: u32,
    in_room: bool,
    /// In the waiting room (the socket is open; no room, no media until let in).
    waiting: bool,
    /// The room's latest error message (a refusal's reason comes just before its close).
    last_error: Option<String>,
    reconnecting: bool,
    mic: bool,
    cam: bool,
    sharing: bool,
    media: MediaWatch,
    /// Chat messages sent and not yet seen back from the room, with when they were written.
    unconfirmed: Vec<(Millis, ClientMessage)>,
    out: VecDeque<Action>,
}

/// A chat message not confirmed within this long is not sent again (it is old news).
pub const CHAT_RESEND_MS: Millis = 60_000;

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            room: ClientRoom::default(),
            path: None,
            socket_no: 0,
            socket: Socket::Idle,
            attempt: 0,
            in_room: false,
            waiting: false,
            last_error: None,
            reconnecting: false,
            mic: true,
            cam: true,
            sharing: false,
            media: MediaWatch::default(),
            unconfirmed: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// The room as this browser knows it.
    pub fn room(&self) -> &ClientRoom {
        &self.room
    }

    /// In the room (after the first snapshot, until leaving or a final close).
    pub fn in_room(&self) -> bool {
        self.in_room
    }

    /// In the waiting room: joined, not let in yet.
    pub fn waiting(&self) -> bool {
        self.waiting
    }

    /// The socket dropped and is being reopened.
    pub fn reconnecting(&self) -> bool {
        self.reconnecting
    }

    /// The current media connection's state (`None` before media is set up).
    pub fn media_state(&self) -> Option<PcState> {
        self.media.state
    }

    /// The socket path a reconnect would use now (the latest token).
    pub fn socket_path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When to feed [`SessionInput::Timeout`] next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let reconnect = match self.socket {
            Socket::Waiting { at } => Some(at),
            _ => None,
        };
        let connect = match self.media.state {
            Some(PcState::New | PcState::Connecting) if self.media.started && self.in_room => {
                Some(self.media.since + CONNECT_TIMEOUT_MS)
            }
            _ => None,
        };
        [reconnect, connect, self.media.restart_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_input(&mut self, now: Millis, input: SessionInput) {
        match input {
            SessionInput::Joined { ws_path } => {
                self.path = Some(ws_path);
                self.attempt = 0;
                self.open_socket();
            }
            SessionInput::SocketOpened { socket } if socket == self.socket_no => {
                self.socket = Socket::Open {
                    got_snapshot: false,
                };
                self.out.push_back(Action::Send(ClientMessage::Hello {
                    version: PROTOCOL_VERSION,
                }));
            }
            SessionInput::SocketMessage { socket, msg } if socket == self.socket_no => {
                self.message(now, msg)
            }
            SessionInput::SocketClosed { socket, code } if socket == self.socket_no => {
                self.closed(now, code)
            }
            SessionInput::SocketOpened { .. }
            | SessionInput::SocketMessage { .. }
            | SessionInput::SocketClosed { .. } => {} // an older socket's late event
            SessionInput::MediaState(state) => self.media_state_changed(now, state),
            SessionInput::InboundPackets(total) => self.packets(now, total),
            SessionInput::Local { mic, cam } => {
                if (mic, cam) != (self.mic, self.cam) {
                    self.mic = mic;
                    self.cam = cam;
                    if self.connected() {
                        self.out.push_back(Action::Send(ClientMessage::SetMedia {
                            audio_muted: !mic,
                            video_muted: !cam,
                        }));
                    }
                }
            }
            SessionInput::Sharing(on) => {
                if on != self.sharing {
                    self.sharing = on;
                    if self.connected() {
                        self.out
                            .push_back(Action::Send(ClientMessage::SetScreen { sharing: on }));
                    }
                }
            }
            SessionInput::Chat {
                text,
                to,
                client_id,
            } => {
                let msg = ClientMessage::Chat {
                    text,
                    to,
                    client_id,
                };
                self.unconfirmed.retain(|(at, _)| now < at + CHAT_RESEND_MS);
                if self.connected() && self.in_room && !self.waiting {
                    self.out.push_back(Action::Send(msg.clone()));
                }
                self.unconfirmed.push((now, msg));
            }
            SessionInput::Leave => {
                if self.connected() {
                    self.out.push_back(Action::Send(ClientMessage::Leave {}));
                }
                self.end("You left the meeting.".into());
            }
            SessionInput::Timeout => self.timeout(now),
        }
    }

    fn connected(&self) -> bool {
        self.socket == Socket::Open { got_snapshot: true }
    }

    fn open_socket(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.socket_no += 1;
        self.socket = Socket::Idle;
        self.out.push_back(Action::OpenSocket {
            socket: self.socket_no,
            path,
        });
    }

    fn start_media(&mut self, now: Millis) {
        if !self.connected() {
            // The offer could not be sent: set media up once the room is back (the snapshot
            // finds no live session).
            self.media = MediaWatch {
                last_report: self.media.last_report,
                ..MediaWatch::default()
            };
            return;
        }
        self.media = MediaWatch {
            started: true,
            sfu: self.room.sfu.clone(),
            state: Some(PcState::New),
            since: now,
            restart_at: None,
            packets: 0.0,
            packets_since: now,
            last_report: self.media.last_report,
        };
        self.out.push_back(Action::StartMedia {
            mic: self.mic,
            cam: self.cam,
        });
    }

    fn report_media_failed(&mut self) {
        if self.connected() {
            self.out
                .push_back(Action::Send(ClientMessage::MediaFailed {}));
        }
    }

    fn end(&mut self, message: String) {
        self.in_room = false;
        self.waiting = false;
        self.reconnecting = false;
        self.socket = Socket::Idle;
        self.socket_no += 1; // events of the old socket are ignored from now on
        self.path = None;
        self.media = MediaWatch::default();
        self.out.push_back(Action::StopMedia);
        self.out.push_back(Action::Ended { message });
    }

    fn message(&mut self, now: Millis, msg: ServerMessage) {
        match &msg {
            // A chat message sent again after a reconnect that the room already had: fine.
            ServerMessage::Error {
                code: ErrorCode::Duplicate,
                ..
            } => return,
            ServerMessage::Error { message, .. } => {
                self.last_error = Some(message.clone());
                self.out.push_back(Action::Error(Some(message.clone())));
            }
            ServerMessage::ChatMessage { message } => {
                self.unconfirmed.retain(|(_, m)| {
                    !matches!(m, ClientMessage::Chat { client_id, .. } if *client_id == message.client_id && self.room.is_me(&message.from))
                });
            }
            ServerMessage::Waiting { .. } => {
                self.waiting = true;
                self.attempt = 0;
                self.reconnecting = false;
                self.socket = Socket::Open { got_snapshot: true };
            }
            ServerMessage::Reaction { id, emoji } => {
                self.out.push_back(Action::Reaction {
                    id: id.clone(),
                    emoji: emoji.clone(),
                });
                return;
            }
            ServerMessage::StoppedByHost { what, .. } => {
                let was_on = match what {
                    MediaKind::Audio => std::mem::replace(&mut self.mic, false),
                    MediaKind::Video => std::mem::replace(&mut self.cam, false),
                    MediaKind::Screen => std::mem::replace(&mut self.sharing, false),
                };
                // Already off here (told again on a reconnect): nothing to stop, nothing to say.
                if !was_on {
                    return;
                }
                self.out.push_back(Action::Stopped { what: *what });
            }
            ServerMessage::UnmuteRequested { by } => {
                self.out
                    .push_back(Action::UnmuteRequested { by: by.clone() });
            }
            ServerMessage::Token { token, .. } => {
                let base = self
                    .path
                    .as_deref()
                    .and_then(|p| p.split_once("?token="))
                    .map(|(base, _)| base.to_string());
                if let Some(base) = base {
                    self.path = Some(format!("{base}?token={token}"));
                    if let Some(room) = base.strip_suffix("/ws") {
                        self.out.push_back(Action::NewToken {
                            token: token.clone(),
                            ice_path: format!("{room}/ice-servers"),
                        });
                    }
                }
                // In the waiting room, a token is the host letting us in: go in with it now
                // (the room closes the waiting socket too, but its close can be slow to arrive).
                if self.waiting {
                    self.open_socket();
                }
                return;
            }
            ServerMessage::Answer { .. } | ServerMessage::Offer { .. } => {
                self.out.push_back(Action::Signal(msg));
                return;
            }
            ServerMessage::PublishLayers { active } => {
                self.out.push_back(Action::PublishLayers(active.clone()));
                return;
            }
            ServerMessage::ParticipantLeft { id } => {
                self.out.push_back(Action::Forget { id: id.clone() });
            }
            _ => {}
        }
        if let Some(notice) = self.room.apply(&msg) {
            self.out.push_back(Action::Toast(notice));
        }
        // Breakout rooms: the streams of people who left my room stay until the SFU's next offer
        // takes their tracks off (they show nowhere: tiles are of my room's people). Forgetting
        // them here would drop a room-mate whose move is announced a moment after mine: we keep
        // receiving each other across the move, on the same track.
        if let ServerMessage::Moved { .. } = msg {
            // Nothing new arrives until the new offer is answered: no stall meanwhile.
            self.media.packets_since = now;
        }
        if let ServerMessage::SfuChanged { .. } = msg {
            // The room's media moved: a new PeerConnection to the new SFU (mute state kept).
            self.start_media(now);
        }
        if let ServerMessage::Snapshot { resumed, .. } = msg {
            self.waiting = false;
            self.last_error = None;
            self.socket = Socket::Open { got_snapshot: true };
            self.attempt = 0;
            self.in_room = true;
            self.reconnecting = false;
            self.out.push_back(Action::Error(None));
            // Tell the room how we arrive (muted in pre-join stays muted).
            if !(self.mic && self.cam) {
                self.out.push_back(Action::Send(ClientMessage::SetMedia {
                    audio_muted: !self.mic,
                    video_muted: !self.cam,
                }));
            }
            if self.sharing && !resumed {
                self.out
                    .push_back(Action::Send(ClientMessage::SetScreen { sharing: true }));
            }
            // Chat written while the socket was away, or sent and not seen back: again (the
            // room keeps one of each).
            self.unconfirmed.retain(|(at, _)| now < at + CHAT_RESEND_MS);
            for (_, m) in &self.unconfirmed {
                self.out.push_back(Action::Send(m.clone()));
            }
            // A resumed session keeps its PeerConnection (nothing to publish again) if it is up
            // and on the room's SFU; a fresh one (first join, or back after the grace period), a
            // media connection that is down or was never answered, or a room that moved to another
            // SFU while the socket was away, sets media up anew.
            let live = self.media.started
                && matches!(
                    self.media.state,
                    Some(PcState::Connected | PcState::Disconnected)
                )
                // (A snapshot naming no SFU — the room lost its row — is no reason to drop
                // working media.)
                && (self.room.sfu.is_none() || self.media.sfu == self.room.sfu);
            if !(resumed && live) {
                self.start_media(now);
            }
        }
    }

    fn closed(&mut self, now: Millis, code: u16) {
        if is_final_close(code) {
            // A refusal comes with its reason first (removed, turned away): that is what to show.
            let said = self.last_error.take();
            let message = match code {
                1000 => "You left the meeting.".to_string(),
                4000 => "This meeting was opened in another tab or window.".to_string(),
                4401 => "Your access to this meeting expired. Join again.".to_string(),
                4403 => said.unwrap_or_else(|| "You are not allowed in this meeting.".into()),
                CLOSE_ENDED => "The host ended the meeting.".to_string(),
                _ => "The meeting connection was closed.".to_string(),
            };
            self.end(message);
            return;
        }
        // A connection that worked starts its retries afresh.
        let worked = matches!(self.socket, Socket::Open { got_snapshot: true });
        let delay = reconnect_delay_ms(if worked { 0 } else { self.attempt }) as Millis;
        self.attempt = if worked { 1 } else { self.attempt + 1 };
        self.reconnecting = true;
        self.socket = Socket::Waiting { at: now + delay };
    }

    fn media_state_changed(&mut self, now: Millis, state: PcState) {
        if !self.media.started || self.media.state == Some(state) {
            return;
        }
        self.media.state = Some(state);
        self.media.since = now;
        if !self.in_room {
            return;
        }
        match state {
            PcState::Disconnected => self.report_media_failed(),
            PcState::Failed => {
                self.report_media_failed();
                self.media.restart_at = Some(now + RESTART_AFTER_FAILURE_MS);
            }
            _ => {}
        }
    }

    fn packets(&mut self, now: Millis, total: f64) {
        if !self.in_room || !self.media.started {
            return;
        }
        // Alone in a breakout room (or the main room): nothing is expected to arrive.
        let alone = self.room.others().is_empty();
        let m = &mut self.media;
        if total != m.packets || alone {
            m.packets = total;
            m.packets_since = now;
            return;
        }
        let stalled = total > 0.0 && now.saturating_sub(m.packets_since) > STALL_MS;
        let may_report = m
            .last_report
            .is_none_or(|t| now.saturating_sub(t) > STALL_REPORT_EVERY_MS);
        if stalled && may_report {
            m.last_report = Some(now);
            self.report_media_failed();
        }
    }

    fn timeout(&mut self, now: Millis) {
        if let Socket::Waiting { at } = self.socket {
            if now >= at {
                self.open_socket();
            }
        }
        if self.media.restart_at.is_some_and(|t| now >= t) {
            self.media.restart_at = None;
            if self.in_room {
                self.start_media(now);
            }
        }
        let stuck = self.in_room
            && self.media.started
            && matches!(self.media.state, Some(PcState::New | PcState::Connecting))
            && now >= self.media.since + CONNECT_TIMEOUT_MS;
        if stuck {
            // A lost answer, an SFU that died mid-setup: report it and start over.
            self.report_media_failed();
            self.start_media(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ParticipantInfo, RoomSnapshot};
    use crate::token::Role;

    fn snapshot(resumed: bool) -> ServerMessage {
        ServerMessage::Snapshot {
            you: "me".into(),
            room: RoomSnapshot {
                name: "r".into(),
                participants: vec![ParticipantInfo {
                    id: "me".into(),
                    name: "Me".into(),
                    role: Role::Host,
                    audio_muted: false,
                    video_muted: false,
                    away: false,
                    screen: false,
                    hand: None,
                    scope: 0,
                    quality: None,
                }],
                sfu: Some("us-east".into()),
                host: Some("me".into()),
                speaker: None,
                max_screen_sharers: 1,
                settings: Default::default(),
                chat: Vec::new(),
                waiting: Vec::new(),
                polls: Vec::new(),
                breakouts: Default::default(),
                recording: None,
            },
            resumed,
        }
    }

    fn drain(s: &mut Session) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn run(s: &mut Session, now: Millis, input: SessionInput) -> Vec<Action> {
        s.handle_input(now, input);
        drain(s)
    }

    /// A session that joined and got its first snapshot on socket 1 at t=0.
    fn joined() -> Session {
        let mut s = Session::new();
        run(
            &mut s,
            0,
            SessionInput::Joined {
                ws_path: "/api/rooms/r/ws?token=t1".into(),
            },
        );
        run(&mut s, 0, SessionInput::SocketOpened { socket: 1 });
        run(
            &mut s,
            0,
            SessionInput::SocketMessage {
                socket: 1,
                msg: snapshot(false),
            },
        );
        s
    }

    fn starts_media(a: &[Action]) -> bool {
        a.iter().any(|a| matches!(a, Action::StartMedia { .. }))
    }

    fn reports(a: &[Action]) -> usize {
        a.iter()
            .filter(|a| matches!(a, Action::Send(ClientMessage::MediaFailed {})))
            .count()
    }

    #[test]
    fn joining_opens_the_socket_says_hello_and_a_fresh_session_starts_media() {
        let mut s = Session::new();
        let a = run(
            &mut s,
            0,
            SessionInput::Joined {
                ws_path: "/p?token=t".into(),
            },
        );
        assert_eq!(
            a,
            vec![Action::OpenSocket {
                socket: 1,
                path: "/p?token=t".into()
            }]
        );
        let a = run(&mut s, 5, SessionInput::SocketOpened { socket: 1 });
        assert_eq!(
            a,
            vec![Action::Send(ClientMessage::Hello {
                version: PROTOCOL_VERSION
            })]
        );
        let a = run(
            &mut s,
            10,
            SessionInput::SocketMessage {
                socket: 1,
                msg: snapshot(false),
            },
        );
        assert!(starts_media(&a), "{a:?}");
        assert!(s.in_room());
        assert_eq!(s.room().participants.len(), 1);
    }

    #[test]
    fn muted_in_pre_join_stays_muted_and_sharing_is_said_again_on_a_fresh_session() {
        let mut s = Session::new();
        run(
            &mut s,
            0,
            SessionInput::Local {
                mic: false,
                cam: true,
            },
        );
        run(&mut s, 0, SessionInput::Sharing(true));
        run(
            &mut s,
            0,
            SessionInput::Joined {
                ws_path: "/p?token=t".into(),
            },
        );
        run(&mut s, 0, SessionInput::SocketOpened { socket: 1 });
        let a = run(
            &mut s,
            1,
            SessionInput::SocketMessage {
                socket: 1,
                msg: snapshot(false),
            },
        );
        assert!(a.contains(&Action::Send(ClientMessage::SetMedia {
            audio_muted: true,
            video_muted: false
        })));
        assert!(a.contains(&Action::Send(ClientMessage::SetScreen { sharing: true })));
        assert!(a.contains(&Action::StartMedia {
            mic: false,
            cam: true
        }));
        // In the room, a change goes out at once.
        let a = run(
            &mut s,
            2,
            SessionInput::Local {
                mic: true,
                cam: true,
            },
        );
        assert_eq!(
            a,
            vec![Action::Send(ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false
            })]
        );
    }

    #[test]
    fn a_dropped_socket_reconnects_with_backoff_on_the_latest_token_and_resumes() {
        let mut s = joined();
        run(&mut s, 100, SessionInput::MediaState(PcState::Connecting));
        run(&mut s, 200, SessionInput::MediaState(PcState::Connected));
        // The room refreshes the token.
        run(
            &mut s,
            300,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::Token {
                    token: "t2".into(),
                    expires_at_ms: 9,
                },
            },
        );
        let a = run(
            &mut s,
            1_000,
            SessionInput::SocketClosed {
                socket: 1,
                code: 1006,
            },
        );
        assert_eq!(a, vec![]);
        assert!(s.reconnecting() && s.in_room());
        assert_eq!(s.poll_timeout(), Some(1_250));
        let a = run(&mut s, 1_250, SessionInput::Timeout);
        assert_eq!(
            a,
            vec![Action::OpenSocket {
                socket: 2,
                path: "/api/rooms/r/ws?token=t2".into()
            }]
        );
        // This attempt fails too: the next waits longer.
        run(
            &mut s,
            1_300,
            SessionInput::SocketClosed {
                socket: 2,
                code: 1006,
            },
        );
        assert_eq!(s.poll_timeout(), Some(1_300 + 500));
        run(&mut s, 1_800, SessionInput::Timeout);
        run(&mut s, 1_810, SessionInput::SocketOpened { socket: 3 });
        // A late event of an old socket changes nothing.
        assert_eq!(
            run(
                &mut s,
                1_815,
                SessionInput::SocketClosed {
                    socket: 2,
                    code: 1006
                }
            ),
            vec![]
        );
        let a = run(
            &mut s,
            1_820,
            SessionInput::SocketMessage {
                socket: 3,
                msg: snapshot(true),
            },
        );
        assert!(
            !starts_media(&a),
            "a resumed session keeps its media: {a:?}"
        );
        assert!(!s.reconnecting());
    }

    #[test]
    fn a_resumed_session_whose_media_failed_sets_it_up_again() {
        let mut s = joined();
        run(&mut s, 100, SessionInput::MediaState(PcState::Failed));
        run(
            &mut s,
            110,
            SessionInput::SocketClosed {
                socket: 1,
                code: 1006,
            },
        );
        run(&mut s, 360, SessionInput::Timeout);
        run(&mut s, 370, SessionInput::SocketOpened { socket: 2 });
        let a = run(
            &mut s,
            380,
            SessionInput::SocketMessage {
                socket: 2,
                msg: snapshot(true),
            },
        );
        assert!(starts_media(&a));
    }

    #[test]
    fn a_final_close_ends_the_session_in_plain_words() {
        for (code, words) in [
            (4401, "expired"),
            (4403, "not allowed"),
            (4000, "another tab"),
        ] {
            let mut s = joined();
            let a = run(&mut s, 10, SessionInput::SocketClosed { socket: 1, code });
            assert!(
                matches!(a.last(), Some(Action::Ended { message }) if message.contains(words)),
                "{code}: {a:?}"
            );
            assert!(a.contains(&Action::StopMedia));
            assert!(!s.in_room());
            assert_eq!(s.poll_timeout(), None);
        }
    }

    #[test]
    fn leaving_says_so_and_ends() {
        let mut s = joined();
        let a = run(&mut s, 10, SessionInput::Leave);
        assert_eq!(a[0], Action::Send(ClientMessage::Leave {}));
        assert!(matches!(a.last(), Some(Action::Ended { .. })));
        // The server's close of that socket is no reconnect.
        assert_eq!(
            run(
                &mut s,
                20,
                SessionInput::SocketClosed {
                    socket: 1,
                    code: 1000
                }
            ),
            vec![]
        );
    }

    #[test]
    fn media_that_never_connects_is_reported_and_started_over() {
        let mut s = joined();
        run(&mut s, 100, SessionInput::MediaState(PcState::Connecting));
        assert_eq!(s.poll_timeout(), Some(100 + CONNECT_TIMEOUT_MS));
        assert_eq!(run(&mut s, 4_000, SessionInput::Timeout), vec![]);
        let a = run(&mut s, 100 + CONNECT_TIMEOUT_MS, SessionInput::Timeout);
        assert_eq!(reports(&a), 1);
        assert!(starts_media(&a));
        // Connected in time: no watchdog.
        run(&mut s, 5_200, SessionInput::MediaState(PcState::Connected));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn failed_media_is_reported_and_restarted_after_a_pause_disconnected_only_reported() {
        let mut s = joined();
        run(&mut s, 100, SessionInput::MediaState(PcState::Connected));
        let a = run(&mut s, 200, SessionInput::MediaState(PcState::Disconnected));
        assert_eq!((reports(&a), starts_media(&a)), (1, false));
        let a = run(&mut s, 300, SessionInput::MediaState(PcState::Failed));
        assert_eq!((reports(&a), starts_media(&a)), (1, false));
        assert_eq!(s.poll_timeout(), Some(300 + RESTART_AFTER_FAILURE_MS));
        let a = run(&mut s, 800, SessionInput::Timeout);
        assert!(starts_media(&a));
    }

    #[test]
    fn remote_media_that_stops_arriving_is_reported_at_most_every_two_seconds() {
        let mut s = joined();
        let ann = |msg| SessionInput::SocketMessage { socket: 1, msg };
        let mut info = match snapshot(false) {
            ServerMessage::Snapshot { room, .. } => room.participants[0].clone(),
            _ => unreachable!(),
        };
        info.id = "ann".into();
        info.role = Role::Participant;
        run(
            &mut s,
            0,
            ann(ServerMessage::ParticipantJoined { participant: info }),
        );
        run(&mut s, 0, SessionInput::MediaState(PcState::Connected));
        let mut reported = Vec::new();
        let mut now = 0;
        // Packets rise for a second, then stop for six.
        for i in 0..=28u64 {
            now = i * 250;
            let total = (i.min(4) * 100) as f64;
            if reports(&run(&mut s, now, SessionInput::InboundPackets(total))) > 0 {
                reported.push(now);
            }
        }
        assert_eq!(now, 7_000);
        // Stalled from t=1000: first report once > 1 s passed (t=2250), then every > 2 s.
        assert_eq!(reported, vec![2_250, 4_500, 6_750]);
        // Ann goes to a breakout room: her stream stays until the SFU takes her tracks off (she
        // may be a room-mate moving with me); with nobody left to hear from,
        // silence is no stall.
        let a = run(
            &mut s,
            7_000,
            ann(ServerMessage::ParticipantMoved {
                id: "ann".into(),
                scope: 1,
            }),
        );
        assert!(!a.iter().any(|a| matches!(a, Action::Forget { .. })));
        for i in 1..=20u64 {
            let a = run(&mut s, 7_000 + i * 250, SessionInput::InboundPackets(400.0));
            assert_eq!(reports(&a), 0);
        }
    }

    #[test]
    fn the_room_moving_sets_media_up_again_and_signals_go_to_the_call_in_order() {
        let mut s = joined();
        let a = run(
            &mut s,
            10,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::SfuChanged {
                    sfu: "eu-west".into(),
                    reason: "x".into(),
                },
            },
        );
        assert!(starts_media(&a));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Toast(t) if t.contains("eu-west"))));
        let offer = ServerMessage::Offer {
            sdp: "o".into(),
            generation: 1,
        };
        assert_eq!(
            run(
                &mut s,
                20,
                SessionInput::SocketMessage {
                    socket: 1,
                    msg: offer.clone()
                }
            ),
            vec![Action::Signal(offer)]
        );
    }

    fn snapshot_on(sfu: &str, resumed: bool) -> ServerMessage {
        let mut s = snapshot(resumed);
        if let ServerMessage::Snapshot { room, .. } = &mut s {
            room.sfu = Some(sfu.into());
        }
        s
    }

    #[test]
    fn a_restart_due_while_the_socket_is_down_happens_when_the_room_is_back() {
        let mut s = joined();
        run(&mut s, 100, SessionInput::MediaState(PcState::Connected));
        run(&mut s, 200, SessionInput::MediaState(PcState::Failed));
        run(
            &mut s,
            210,
            SessionInput::SocketClosed {
                socket: 1,
                code: 1006,
            },
        );
        // The restart falls due while the socket is down: an offer now would be lost.
        let a = run(&mut s, 700, SessionInput::Timeout);
        assert!(!starts_media(&a), "{a:?}");
        run(&mut s, 710, SessionInput::SocketOpened { socket: 2 });
        let a = run(
            &mut s,
            720,
            SessionInput::SocketMessage {
                socket: 2,
                msg: snapshot(true),
            },
        );
        assert!(starts_media(&a), "{a:?}");
    }

    #[test]
    fn a_move_missed_while_the_socket_was_down_sets_media_up_on_the_new_sfu() {
        let mut s = joined(); // media set up on us-east
        run(&mut s, 100, SessionInput::MediaState(PcState::Connected));
        run(
            &mut s,
            200,
            SessionInput::SocketClosed {
                socket: 1,
                code: 1006,
            },
        );
        run(&mut s, 450, SessionInput::Timeout);
        run(&mut s, 460, SessionInput::SocketOpened { socket: 2 });
        let a = run(
            &mut s,
            470,
            SessionInput::SocketMessage {
                socket: 2,
                msg: snapshot_on("eu-west", true),
            },
        );
        assert!(starts_media(&a), "the room is on eu-west now: {a:?}");
        // Resumed on the same SFU with media up: nothing to do.
        run(&mut s, 500, SessionInput::MediaState(PcState::Connected));
        run(
            &mut s,
            600,
            SessionInput::SocketClosed {
                socket: 2,
                code: 1006,
            },
        );
        run(&mut s, 850, SessionInput::Timeout);
        run(&mut s, 860, SessionInput::SocketOpened { socket: 3 });
        let a = run(
            &mut s,
            870,
            SessionInput::SocketMessage {
                socket: 3,
                msg: snapshot_on("eu-west", true),
            },
        );
        assert!(!starts_media(&a), "{a:?}");
    }

    #[test]
    fn the_waiting_room_then_admission_reconnects_on_the_fresh_token_into_the_room() {
        let mut s = Session::new();
        run(
            &mut s,
            0,
            SessionInput::Joined {
                ws_path: "/api/rooms/r/ws?token=w".into(),
            },
        );
        run(&mut s, 5, SessionInput::SocketOpened { socket: 1 });
        let a = run(
            &mut s,
            10,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::Waiting { room: "r".into() },
            },
        );
        assert!(s.waiting() && !s.in_room());
        assert!(!starts_media(&a), "no media while waiting");
        // Let in: a fresh token, and at once a socket with it (the old socket's close is moot).
        let a = run(
            &mut s,
            20,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::Token {
                    token: "t2".into(),
                    expires_at_ms: 9,
                },
            },
        );
        assert_eq!(
            a,
            vec![
                // TURN credentials, which a waiting pass does not get.
                Action::NewToken {
                    token: "t2".into(),
                    ice_path: "/api/rooms/r/ice-servers".into()
                },
                Action::OpenSocket {
                    socket: 2,
                    path: "/api/rooms/r/ws?token=t2".into()
                }
            ]
        );
        assert_eq!(
            run(
                &mut s,
                21,
                SessionInput::SocketClosed {
                    socket: 1,
                    code: 1012
                }
            ),
            vec![]
        );
        run(&mut s, 280, SessionInput::SocketOpened { socket: 2 });
        let a = run(
            &mut s,
            290,
            SessionInput::SocketMessage {
                socket: 2,
                msg: snapshot(false),
            },
        );
        assert!(starts_media(&a));
        assert!(s.in_room() && !s.waiting());
    }

    #[test]
    fn a_removal_ends_the_session_with_its_reason_and_a_host_stop_turns_the_mic_off_here() {
        let mut s = joined();
        let a = run(
            &mut s,
            10,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::StoppedByHost {
                    what: MediaKind::Audio,
                    by: "Ann".into(),
                    locked: false,
                },
            },
        );
        assert!(a.contains(&Action::Stopped {
            what: MediaKind::Audio
        }));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Toast(t) if t == "Ann muted you")));
        // The page turning its mic off sends nothing new (the room knows).
        assert_eq!(
            run(
                &mut s,
                11,
                SessionInput::Local {
                    mic: false,
                    cam: true
                }
            ),
            vec![]
        );
        run(
            &mut s,
            20,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::Error {
                    code: crate::error::ErrorCode::Forbidden,
                    message: "You were removed from this meeting.".into(),
                },
            },
        );
        let a = run(
            &mut s,
            21,
            SessionInput::SocketClosed {
                socket: 1,
                code: 4403,
            },
        );
        assert!(
            matches!(a.last(), Some(Action::Ended { message }) if message == "You were removed from this meeting."),
            "{a:?}"
        );
        let mut s = joined();
        let a = run(
            &mut s,
            30,
            SessionInput::SocketClosed {
                socket: 1,
                code: CLOSE_ENDED,
            },
        );
        assert!(
            matches!(a.last(), Some(Action::Ended { message }) if message == "The host ended the meeting."),
            "{a:?}"
        );
    }

    #[test]
    fn chat_written_or_unconfirmed_while_the_socket_was_away_is_sent_again_once_back() {
        let mut s = joined();
        let chat = |id: &str| SessionInput::Chat {
            text: format!("text {id}"),
            to: None,
            client_id: id.into(),
        };
        let sent = |a: &[Action]| -> Vec<String> {
            a.iter()
                .filter_map(|a| match a {
                    Action::Send(ClientMessage::Chat { client_id, .. }) => Some(client_id.clone()),
                    _ => None,
                })
                .collect()
        };
        // Sent and confirmed (the room echoed it): done.
        assert_eq!(sent(&run(&mut s, 10, chat("m1"))), vec!["m1"]);
        let echo = |id: &str| SessionInput::SocketMessage {
            socket: 1,
            msg: ServerMessage::ChatMessage {
                message: crate::protocol::ChatMessage {
                    id: 1,
                    from: "me".into(),
                    name: "Me".into(),
                    to: None,
                    text: "x".into(),
                    at: 0,
                    client_id: id.into(),
                    scope: 0,
                    notice: false,
                },
            },
        };
        run(&mut s, 20, echo("m1"));
        // Sent, and the socket drops before the echo; another written while it is down.
        assert_eq!(sent(&run(&mut s, 30, chat("m2"))), vec!["m2"]);
        run(
            &mut s,
            40,
            SessionInput::SocketClosed {
                socket: 1,
                code: 1006,
            },
        );
        assert!(
            sent(&run(&mut s, 50, chat("m3"))).is_empty(),
            "not while away"
        );
        run(&mut s, 300, SessionInput::Timeout);
        run(&mut s, 310, SessionInput::SocketOpened { socket: 2 });
        let a = run(
            &mut s,
            320,
            SessionInput::SocketMessage {
                socket: 2,
                msg: snapshot(true),
            },
        );
        assert_eq!(sent(&a), vec!["m2", "m3"], "{a:?}");
        // The room already had m2: its duplicate frame is no error for the person.
        let a = run(
            &mut s,
            330,
            SessionInput::SocketMessage {
                socket: 2,
                msg: ServerMessage::Error {
                    code: ErrorCode::Duplicate,
                    message: "That message was already sent.".into(),
                },
            },
        );
        assert!(a.is_empty(), "{a:?}");
        run(
            &mut s,
            340,
            SessionInput::SocketMessage {
                socket: 2,
                msg: match echo("m2") {
                    SessionInput::SocketMessage { msg, .. } => msg,
                    _ => unreachable!(),
                },
            },
        );
        run(
            &mut s,
            341,
            SessionInput::SocketMessage {
                socket: 2,
                msg: match echo("m3") {
                    SessionInput::SocketMessage { msg, .. } => msg,
                    _ => unreachable!(),
                },
            },
        );
        // Confirmed: a later reconnect sends nothing again; nor a message older than a minute.
        run(&mut s, 400, chat("m4"));
        run(
            &mut s,
            410,
            SessionInput::SocketClosed {
                socket: 2,
                code: 1006,
            },
        );
        run(&mut s, 410 + CHAT_RESEND_MS, SessionInput::Timeout);
        let open = run(&mut s, 420 + CHAT_RESEND_MS, SessionInput::Timeout);
        let no = open
            .iter()
            .find_map(|a| match a {
                Action::OpenSocket { socket, .. } => Some(*socket),
                _ => None,
            })
            .unwrap_or(3);
        run(
            &mut s,
            430 + CHAT_RESEND_MS,
            SessionInput::SocketOpened { socket: no },
        );
        let a = run(
            &mut s,
            440 + CHAT_RESEND_MS,
            SessionInput::SocketMessage {
                socket: no,
                msg: snapshot(true),
            },
        );
        assert!(sent(&a).is_empty(), "{a:?}");
    }

    #[test]
    fn a_stop_repeated_for_what_is_already_off_says_nothing() {
        let mut s = joined();
        run(
            &mut s,
            10,
            SessionInput::Local {
                mic: false,
                cam: true,
            },
        );
        let a = run(
            &mut s,
            20,
            SessionInput::SocketMessage {
                socket: 1,
                msg: ServerMessage::StoppedByHost {
                    what: MediaKind::Audio,
                    by: "The host".into(),
                    locked: false,
                },
            },
        );
        assert!(a.is_empty(), "{a:?}");
    }
}
