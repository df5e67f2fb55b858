//! Running the meeting: who gets in (waiting room, password, lock, bans), roles (co-hosts),
//! removing someone (a ban), stopping someone's microphone, camera or screen (enforced by the
//! SFU), chat, reactions, raised hands, the room's settings, ending the meeting.
//!
//! Every action is authorised here: a participant sending a host action gets `forbidden` and
//! nothing changes. Nobody can turn anyone else's microphone or camera on: a host may only stop
//! them, or ask.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{error_to, ConnId, Output, Room, SfuCall};
use crate::error::ErrorCode;
use crate::protocol::{
    ChatMessage, ClientMessage, MediaKind, ServerMessage, Waiter, CHAT_HISTORY, CLOSE_ENDED,
    MAX_CHAT_CHARS, PROTOCOL_VERSION, REACTIONS,
};
use crate::token::{Claims, Grants, Role};
use crate::Millis;

/// What a removed person is told (and told again if they try to come back).
pub const REMOVED: &str = "You were removed from this meeting.";
/// What someone turned away from the waiting room is told.
pub const DENIED: &str = "The host did not let you in.";
/// Wrong passwords allowed per client address and room per minute.
pub const WRONG_PASSWORDS_PER_MINUTE: usize = 5;
/// Chat messages a participant may send per second (a burst beyond is refused).
const CHAT_PER_SECOND: usize = 5;
/// Reactions a participant may send per second.
pub(super) const REACTIONS_PER_SECOND: usize = 3;
/// Page ids of a member's own chat messages remembered (to recognise a resend).
const RECENT_CHAT_IDS: usize = 32;

/// What a host stopped for a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stopped {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    /// They may not turn it on again themselves (until a host lets them).
    pub locked: bool,
    /// A host asked them to unmute: they may, whatever the lock or the room's setting says.
    #[serde(default)]
    pub asked: bool,
}

impl Stopped {
    pub(super) fn any(&self) -> bool {
        self.audio || self.video || self.screen
    }

    pub(super) fn get(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
            MediaKind::Screen => self.screen,
        }
    }

    /// What either stopped (another tab of the same browser, say).
    pub(super) fn merge(&mut self, other: &Stopped) {
        self.audio |= other.audio;
        self.video |= other.video;
        self.screen |= other.screen;
        self.locked |= other.locked;
    }

    fn set(&mut self, kind: MediaKind, on: bool) {
        match kind {
            MediaKind::Audio => self.audio = on,
            MediaKind::Video => self.video = on,
            MediaKind::Screen => self.screen = on,
        }
    }
}

/// Someone in the waiting room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Waiting {
    pub id: String,
    pub name: String,
    pub since: Millis,
    /// Their open connection, if any (they wait on a socket).
    pub conn: Option<ConnId>,
    /// Their waiting token's claims: admission re-issues these with grants.
    pub claims: Option<Claims>,
}

/// Sliding-window counters per member (not stored: they cover a second).
#[derive(Debug, Clone, Default)]
pub(super) struct Limits {
    chat: BTreeMap<String, VecDeque<Millis>>,
    reactions: BTreeMap<String, VecDeque<Millis>>,
    /// Frames per socket in the current second.
    frames: BTreeMap<ConnId, FrameWindow>,
}

/// Frames a socket may send in one second; past it they are refused (one error frame a second).
pub const FRAMES_PER_SECOND: u32 = 50;
/// A socket sending this many frames in one second, or over the limit three seconds running, is
/// closed (1008: policy violation).
pub const FRAMES_CLOSE: u32 = 200;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FrameWindow {
    start: Millis,
    count: u32,
    /// Seconds in a row that went over the limit (this one included once it does).
    over_runs: u32,
    /// Told to close: what still arrives from it is dropped quietly.
    closed: bool,
}

/// What to do with one frame from a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameVerdict {
    Take,
    /// Over the limit: dropped; `tell` for the first one this second.
    Refuse {
        tell: bool,
    },
    Close,
}

impl Limits {
    /// Member `id` left: their counters go.
    pub(super) fn forget(&mut self, id: &str) {
        self.chat.remove(id);
        self.reactions.remove(id);
        self.reactions.remove(&format!("hand:{id}"));
        self.reactions.remove(&format!("quality:{id}"));
    }

    /// A socket closed: its frame counter goes.
    pub(super) fn forget_conn(&mut self, conn: &str) {
        self.frames.remove(conn);
    }

    /// Counts one frame from `conn`.
    pub(super) fn frame(&mut self, conn: &str, now: Millis) -> FrameVerdict {
        if self.frames.len() >= 10_000 && !self.frames.contains_key(conn) {
            // Sockets that closed without a word: forget the quiet ones.
            self.frames.retain(|_, w| now < w.start + 60_000);
        }
        let w = self.frames.entry(conn.to_string()).or_default();
        if w.closed {
            return FrameVerdict::Refuse { tell: false };
        }
        if now >= w.start + 1_000 {
            let was_over = w.count > FRAMES_PER_SECOND;
            let consecutive = now < w.start + 2_000;
            *w = FrameWindow {
                start: now,
                count: 0,
                over_runs: if was_over && consecutive {
                    w.over_runs
                } else {
                    0
                },
                closed: false,
            };
        }
        w.count += 1;
        if w.count <= FRAMES_PER_SECOND {
            return FrameVerdict::Take;
        }
        if w.count == FRAMES_PER_SECOND + 1 {
            w.over_runs += 1;
        }
        if w.count >= FRAMES_CLOSE || w.over_runs >= 3 {
            w.closed = true;
            return FrameVerdict::Close;
        }
        FrameVerdict::Refuse {
            tell: w.count == FRAMES_PER_SECOND + 1,
        }
    }
}

/// Chat history a snapshot carries at most (bytes, roughly): it goes in one WebSocket message,
/// which the platform limits to 1 MiB.
pub const SNAPSHOT_CHAT_BYTES: usize = 512 * 1024;
/// People the waiting room holds at most (more are turned away: a script cannot grow it forever).
pub const MAX_WAITING: usize = 100;
/// A meeting nobody has been in for this long starts over for the next person (its host never came
/// back: someone else may use the name).
pub const IDLE_END_MS: Millis = 60 * 60 * 1000;
/// The limit key for wrong passwords from `addr`: the address, or for IPv6 its /64 (one
/// subscriber's network).
pub fn address_key(addr: &str) -> String {
    match addr.parse::<std::net::Ipv6Addr>() {
        Ok(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        Err(_) => addr.to_string(),
    }
}

/// What the room says about someone before their password is checked (checking costs the edge an
/// argon2 run: a refused joiner does not get one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreJoin {
    /// The room's password hash, if it has one.
    pub hash: Option<String>,
    /// A new room: a password given now becomes its password.
    pub fresh: bool,
    /// They will be refused whatever their password.
    pub refused: Option<Admission>,
}

/// Records an event at `now` in `window` for `key` if fewer than `max` happened within `window_ms`;
/// otherwise says when the next is allowed.
fn admit_event(
    window: &mut BTreeMap<String, VecDeque<Millis>>,
    key: &str,
    now: Millis,
    window_ms: Millis,
    max: usize,
) -> Result<(), Millis> {
    let q = window.entry(key.to_string()).or_default();
    while q.front().is_some_and(|&t| now >= t + window_ms) {
        q.pop_front();
    }
    if q.len() >= max {
        return Err(q.front().map_or(window_ms, |&t| t + window_ms - now));
    }
    q.push_back(now);
    Ok(())
}

/// What the edge learned about a joiner's password before asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordCheck {
    /// None was given.
    NotGiven,
    /// It matches the room's hash.
    Correct,
    /// It does not.
    Wrong,
    /// The room has none; this is the hash of the one given (the room takes it if it is new).
    New(String),
}

/// Someone asking to join, before they have a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinAsk {
    pub name: String,
    /// The browser's identity (the edge's cookie).
    pub identity: String,
    /// The client's address (wrong passwords are limited per address and room).
    pub addr: String,
    pub password: PasswordCheck,
    /// A scheduled meeting's room (the edge read the meeting from D1): who this joiner is in it.
    #[serde(default)]
    pub scheduled: Option<ScheduledAsk>,
}

/// What the edge knows of a scheduled meeting and of the person joining it (from D1 and the
/// session cookie). The room decides with it: the owner hosts whenever they come, named co-hosts
/// are co-hosts, nobody else hosts by being first, and others wait for a host when the meeting has
/// its waiting room on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledAsk {
    /// The meeting's id.
    pub meeting: String,
    /// The joiner's part in it (signed in as the owner, or as a co-host named by email).
    pub role: Option<crate::schedule::MeetingRole>,
    /// The joiner is signed in to an account.
    pub signed_in: bool,
    /// Only signed-in people may join.
    pub only_signed_in: bool,
    /// The meeting starts with its waiting room on.
    pub waiting_room: bool,
    /// The meeting has a password (its hash is in D1; `password` says what the edge found).
    pub has_password: bool,
}

/// A scheduled meeting's room: which browsers are its owner's and its co-hosts' (learned as they
/// join signed in), so they get their roles when their socket connects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduledRoom {
    pub meeting: String,
    pub owners: std::collections::BTreeSet<String>,
    pub cohosts: std::collections::BTreeSet<String>,
}

/// Most browsers remembered per role of a scheduled meeting (the oldest go first... any one goes:
/// it is asked again at its next join).
const MAX_SCHEDULED_BROWSERS: usize = 256;

/// The room's answer to [`JoinAsk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Admission {
    /// In, with these grants (the first member hosts when they connect), under the door's current
    /// generation (the token carries it).
    Enter { grants: Grants, door: u32 },
    /// To the waiting room (a waiting token).
    Wait,
    /// Not in: a code and words for the person; `retry_after_ms` for a rate limit.
    Refused {
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<Millis>,
    },
}

impl Room {
    /// Member `id` may start and stop a recording: the host, and co-hosts unless the host said
    /// no (`RoomSettings::cohosts_may_record`).
    pub fn may_record(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| self.meta.settings.may_record(m.info.role))
    }

    /// Host or co-host.
    pub fn is_moderator(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| matches!(m.info.role, Role::Host | Role::Cohost))
    }

    pub(super) fn waiting_list(&self) -> Vec<Waiter> {
        self.meta
            .waiting
            .iter()
            .map(|w| Waiter {
                id: w.id.clone(),
                name: w.name.clone(),
                since: w.since,
            })
            .collect()
    }

    /// The chat member `id` may read: everyone's messages and the private ones to or from them;
    /// the newest that fit in [`SNAPSHOT_CHAT_BYTES`] (a snapshot is one WebSocket message).
    pub(super) fn chat_for(&self, id: &str) -> Vec<ChatMessage> {
        let mut budget = SNAPSHOT_CHAT_BYTES;
        let mut newest_first: Vec<ChatMessage> = self
            .chat
            .iter()
            .rev()
            .filter(|m| self.may_read(id, m))
            .take_while(|m| {
                let size = serde_json::to_vec(m).map_or(SNAPSHOT_CHAT_BYTES, |j| j.len() + 1);
                budget = budget.saturating_sub(size);
                budget > 0
            })
            .cloned()
            .collect();
        newest_first.reverse();
        newest_first
    }

    pub(super) fn waiter_by_conn(&self, conn: &str) -> Option<String> {
        self.meta
            .waiting
            .iter()
            .find(|w| w.conn.as_deref() == Some(conn))
            .map(|w| w.id.clone())
    }

    /// Tells hosts and co-hosts who is waiting.
    fn waiting_changed(&self) -> Vec<Output> {
        let list = self.waiting_list();
        self.members
            .values()
            .filter(|m| matches!(m.info.role, Role::Host | Role::Cohost) && m.away_since.is_none())
            .map(|m| Output::Send {
                conn: m.conn.clone(),
                msg: ServerMessage::WaitingList {
                    waiting: list.clone(),
                },
            })
            .collect()
    }

    /// Decides on someone asking to join.
    pub(super) fn join(&mut self, now: Millis, ask: JoinAsk) -> Vec<Output> {
        let mut out = self.end_if_idle(now);
        let answer = self.admission(now, ask);
        out.push(Output::JoinAnswer(answer));
        out
    }

    /// A meeting nobody has been in for [`IDLE_END_MS`] ends: the next person starts a new one
    /// (its host is not coming back; the name is free again).
    fn end_if_idle(&mut self, now: Millis) -> Vec<Output> {
        if self.is_idle(now) {
            self.end(now)
        } else {
            Vec::new()
        }
    }

    /// Nobody has been in the meeting for [`IDLE_END_MS`]: it ends at the next join.
    fn is_idle(&self, now: Millis) -> bool {
        self.members.is_empty()
            && self
                .meta
                .empty_since
                .is_some_and(|t| now >= t + IDLE_END_MS)
    }

    /// Nobody is in the room, waiting, or has hosted it: the next person starts the meeting.
    fn is_fresh(&self) -> bool {
        self.members.is_empty() && self.meta.waiting.is_empty() && self.meta.host_bid.is_none()
    }

    /// Is `identity` the meeting's host (present or not), or a scheduled meeting's owner?
    pub(super) fn is_host_identity(&self, identity: Option<&str>) -> bool {
        identity.is_some()
            && (identity == self.meta.host_bid.as_deref()
                || self.scheduled_role(identity) == Some(crate::schedule::MeetingRole::Owner))
    }

    /// What the room says before a joiner's password is checked: its hash, whether it is new, and
    /// a refusal that no password would change (ban, lock, too many wrong passwords).
    pub fn pre_join(&self, now: Millis, identity: &str, addr: &str) -> PreJoin {
        if self.is_idle(now) {
            // The join ends the old meeting first: its lock, bans and password are gone then.
            return PreJoin {
                hash: None,
                fresh: true,
                refused: self.too_many_wrong(now, addr),
            };
        }
        PreJoin {
            hash: self.meta.password_hash.clone(),
            fresh: self.is_fresh(),
            refused: self.refusal(now, identity, addr),
        }
    }

    fn refusal(&self, now: Millis, identity: &str, addr: &str) -> Option<Admission> {
        let refuse = |code, message: &str| {
            Some(Admission::Refused {
                code,
                message: message.to_string(),
                retry_after_ms: None,
            })
        };
        if self.meta.bans.contains(identity) {
            return refuse(ErrorCode::Forbidden, REMOVED);
        }
        // Locked: nobody new (the host, back, is not new).
        if self.meta.settings.locked && !self.is_host_identity(Some(identity)) {
            return refuse(ErrorCode::Forbidden, "This meeting is locked.");
        }
        self.too_many_wrong(now, addr)
    }

    /// Refused for the wrong passwords from `addr` in the last minute.
    fn too_many_wrong(&self, now: Millis, addr: &str) -> Option<Admission> {
        let recent: Vec<Millis> = self
            .meta
            .wrong_passwords
            .get(&address_key(addr))
            .map(|q| q.iter().copied().filter(|&t| now < t + 60_000).collect())
            .unwrap_or_default();
        if recent.len() >= WRONG_PASSWORDS_PER_MINUTE {
            let wait = recent.first().map_or(60_000, |&t| t + 60_000 - now);
            return Some(Admission::Refused {
                code: ErrorCode::TooManyRequests,
                message: format!(
                    "Too many wrong passwords. Try again in {} s.",
                    wait.div_ceil(1000)
                ),
                retry_after_ms: Some(wait),
            });
        }
        None
    }

    /// Counts a wrong password from `addr` (and forgets those older than a minute, everywhere).
    fn wrong_password(&mut self, now: Millis, addr: &str) {
        let book = &mut self.meta.wrong_passwords;
        for q in book.values_mut() {
            while q.front().is_some_and(|&t| now >= t + 60_000) {
                q.pop_front();
            }
        }
        book.retain(|_, q| !q.is_empty());
        // Bounded: past this many addresses, the oldest go first.
        while book.len() >= 1_000 {
            let oldest = book
                .iter()
                .min_by_key(|(_, q)| q.back().copied().unwrap_or(0))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => book.remove(&k),
                None => break,
            };
        }
        let q = book.entry(address_key(addr)).or_default();
        q.push_back(now);
        while q.len() > WRONG_PASSWORDS_PER_MINUTE {
            q.pop_front();
        }
        self.dirty.meta = true;
    }

    fn admission(&mut self, now: Millis, ask: JoinAsk) -> Admission {
        if let Some(refused) = self.refusal(now, &ask.identity, &ask.addr) {
            return refused;
        }
        let refuse = |code, message: &str| Admission::Refused {
            code,
            message: message.to_string(),
            retry_after_ms: None,
        };
        let fresh = self.is_fresh();
        let mut skip_waiting = false;
        let scheduled = ask.scheduled.clone();
        let privileged = scheduled.as_ref().is_some_and(|s| s.role.is_some());
        if let Some(s) = &scheduled {
            if s.only_signed_in && !s.signed_in {
                return refuse(
                    ErrorCode::Unauthorized,
                    "Only people signed in to an account can join this meeting. Sign in, then join.",
                );
            }
        }
        // A scheduled meeting's password is in D1 (the edge checked it); its owner and co-hosts
        // need none. An ad-hoc room's is the room's own.
        let has_password = match &scheduled {
            Some(s) => s.has_password && !privileged,
            None => self.meta.password_hash.is_some(),
        };
        match (has_password, ask.password) {
            (true, PasswordCheck::NotGiven) => {
                return refuse(
                    ErrorCode::PasswordRequired,
                    "This meeting needs a password.",
                )
            }
            (true, PasswordCheck::Wrong | PasswordCheck::New(_)) => {
                self.wrong_password(now, &ask.addr);
                return refuse(ErrorCode::WrongPassword, "That password is not right.");
            }
            (true, PasswordCheck::Correct) => {
                skip_waiting = self.meta.settings.password_skips_waiting
            }
            (false, PasswordCheck::New(hash)) if fresh && scheduled.is_none() => {
                // Created with a password: it is the room's, and its waiting room is on.
                self.meta.password_hash = Some(hash);
                self.meta.settings.has_password = true;
                self.meta.settings.waiting_room = true;
                self.dirty.meta = true;
            }
            (false, _) => {}
        }
        if let Some(s) = &scheduled {
            return self.scheduled_admission(s, &ask.identity, fresh, skip_waiting);
        }
        // The first one into a new room hosts it, and the host (by browser) comes back in; others
        // wait if the waiting room is on — also while no host is there to let them in: arriving
        // early is no way past it.
        let host_back = self.is_host_identity(Some(&ask.identity));
        if !fresh && !host_back && self.meta.settings.waiting_room && !skip_waiting {
            if self.meta.waiting.len() >= MAX_WAITING {
                return refuse(
                    ErrorCode::Unavailable,
                    "The waiting room is full. Try again in a while.",
                );
            }
            return Admission::Wait;
        }
        Admission::Enter {
            grants: Grants::max_for(Role::Participant),
            door: self.meta.door,
        }
    }

    /// Admission to a scheduled meeting (its password and sign-in rule checked already): the
    /// owner and co-hosts come in (and the room remembers their browsers for their roles); others
    /// wait while the waiting room is on — also as the first to arrive (being first makes nobody
    /// the host of a scheduled meeting).
    fn scheduled_admission(
        &mut self,
        s: &ScheduledAsk,
        identity: &str,
        fresh: bool,
        skip_waiting: bool,
    ) -> Admission {
        let known = self
            .meta
            .scheduled
            .as_ref()
            .is_some_and(|r| r.meeting == s.meeting);
        if !known {
            self.meta.scheduled = Some(ScheduledRoom {
                meeting: s.meeting.clone(),
                ..Default::default()
            });
        }
        if fresh || !known {
            // A new meeting starts with the schedule's waiting room.
            self.meta.settings.waiting_room = s.waiting_room;
        }
        let room = self.meta.scheduled.as_mut().expect("set above");
        // The browser's role is what this join says now: one signed out, or no longer named,
        // loses the one it had.
        room.owners.remove(identity);
        room.cohosts.remove(identity);
        let set = match s.role {
            Some(crate::schedule::MeetingRole::Owner) => Some(&mut room.owners),
            Some(crate::schedule::MeetingRole::Cohost) => Some(&mut room.cohosts),
            None => None,
        };
        if let Some(set) = set {
            if set.len() >= MAX_SCHEDULED_BROWSERS {
                set.pop_first();
            }
            set.insert(identity.to_string());
        }
        self.dirty.meta = true;
        let host_back = self.is_host_identity(Some(identity));
        if s.role.is_none() && !host_back && self.meta.settings.waiting_room && !skip_waiting {
            if self.meta.waiting.len() >= MAX_WAITING {
                return Admission::Refused {
                    code: ErrorCode::Unavailable,
                    message: "The waiting room is full. Try again in a while.".into(),
                    retry_after_ms: None,
                };
            }
            return Admission::Wait;
        }
        Admission::Enter {
            grants: Grants::max_for(Role::Participant),
            door: self.meta.door,
        }
    }

    /// The scheduled meeting's owner arrived: whoever hosted meanwhile is a co-host again if the
    /// meeting names them, else a participant.
    pub(super) fn host_taken_from(&mut self, previous: &str) -> Vec<Output> {
        let bid = self
            .members
            .get(previous)
            .and_then(|m| m.claims.bid.clone());
        let role = match self.scheduled_role(bid.as_deref()) {
            Some(crate::schedule::MeetingRole::Cohost) => Role::Cohost,
            _ => Role::Participant,
        };
        let Some(m) = self.members.get_mut(previous) else {
            return Vec::new();
        };
        m.info.role = role;
        self.dirty.members.insert(previous.to_string());
        let mut out = vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::RoleChanged {
                id: previous.to_string(),
                role,
            },
        }];
        out.extend(self.polls_to(previous));
        out
    }

    /// Who hosts when the host leaves: the longest-present member (ties: smallest id); in a
    /// scheduled meeting only its owner's other tabs, then named co-hosts — never a guest.
    pub(super) fn successor(&self) -> Option<String> {
        use crate::schedule::MeetingRole;
        let scheduled = self.meta.scheduled.is_some();
        self.members
            .iter()
            .filter_map(|(id, m)| {
                let rank = match self.scheduled_role(m.claims.bid.as_deref()) {
                    Some(MeetingRole::Owner) => 0,
                    Some(MeetingRole::Cohost) => 1,
                    None if scheduled => return None,
                    None => 2,
                };
                Some(((rank, m.joined_at, id.clone()), id))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, id)| id.clone())
    }

    /// A browser's role in the scheduled meeting this room is (none in an ad-hoc room).
    pub(super) fn scheduled_role(&self, bid: Option<&str>) -> Option<crate::schedule::MeetingRole> {
        let (r, bid) = (self.meta.scheduled.as_ref()?, bid?);
        if r.owners.contains(bid) {
            Some(crate::schedule::MeetingRole::Owner)
        } else if r.cohosts.contains(bid) {
            Some(crate::schedule::MeetingRole::Cohost)
        } else {
            None
        }
    }

    /// A waiting-room token connected.
    pub(super) fn wait(&mut self, now: Millis, conn: ConnId, claims: Claims) -> Vec<Output> {
        let id = claims.sub.clone();
        let mut out = Vec::new();
        let known = self.meta.waiting.iter().any(|w| w.id == id);
        if !known && self.meta.waiting.len() >= MAX_WAITING {
            return super::refuse_with(
                conn,
                ErrorCode::Unavailable,
                "The waiting room is full. Try again in a while.",
            );
        }
        match self.meta.waiting.iter_mut().find(|w| w.id == id) {
            Some(w) => {
                if let Some(old) = w.conn.replace(conn.clone()) {
                    out.push(Output::Close {
                        conn: old,
                        code: super::CLOSE_REPLACED,
                        reason: "replaced by a newer connection".into(),
                    });
                }
                w.claims = Some(claims.clone());
            }
            None => self.meta.waiting.push(Waiting {
                id: id.clone(),
                name: claims.name.clone(),
                since: now,
                conn: Some(conn.clone()),
                claims: Some(claims.clone()),
            }),
        }
        self.dirty.meta = true;
        out.push(Output::Send {
            conn,
            msg: ServerMessage::Waiting {
                room: self.meta.name.clone(),
            },
        });
        out.extend(self.waiting_changed());
        out
    }

    /// A frame from someone in the waiting room: they may only say hello, ping and leave.
    pub(super) fn waiting_frame(
        &mut self,
        _now: Millis,
        conn: ConnId,
        id: String,
        text: &str,
    ) -> Vec<Output> {
        match crate::protocol::parse_client_message(text) {
            Ok(ClientMessage::Hello { version }) if version == PROTOCOL_VERSION => Vec::new(),
            Ok(ClientMessage::Ping { nonce }) => vec![Output::Send {
                conn,
                msg: ServerMessage::Pong { nonce },
            }],
            Ok(ClientMessage::Leave {}) => {
                let mut out = self.unwait(&id);
                out.push(Output::Close {
                    conn,
                    code: 1000,
                    reason: "left".into(),
                });
                out
            }
            Ok(_) => error_to(
                conn,
                ErrorCode::Forbidden,
                "You are in the waiting room: a host lets you in.".into(),
            ),
            Err(e) => error_to(conn, e.code, e.message),
        }
    }

    /// Someone left the waiting room (or was let in, or turned away).
    pub(super) fn unwait(&mut self, id: &str) -> Vec<Output> {
        let before = self.meta.waiting.len();
        self.meta.waiting.retain(|w| w.id != id);
        if self.meta.waiting.len() == before {
            return Vec::new();
        }
        self.dirty.meta = true;
        self.waiting_changed()
    }

    /// Their waiting socket closed: they are no longer waiting (a reconnect waits again).
    pub(super) fn waiter_gone(&mut self, conn: &str) -> Option<Vec<Output>> {
        let id = self.waiter_by_conn(conn)?;
        Some(self.unwait(&id))
    }

    /// May member `id` turn `kind` back on? If a host stopped it: only if not locked and the room
    /// lets participants, or a host asked them to unmute (hosts and co-hosts always may).
    pub(super) fn may_turn_on(&self, id: &str, kind: MediaKind) -> Result<(), &'static str> {
        let Some(m) = self.members.get(id) else {
            return Ok(());
        };
        let asked = kind == MediaKind::Audio && m.stopped.asked;
        if !m.stopped.get(kind)
            || self.is_moderator(id)
            || asked
            || (!m.stopped.locked && self.meta.settings.may_unmute)
        {
            return Ok(());
        }
        Err(match kind {
            MediaKind::Audio => "A host muted you; you cannot unmute yourself right now.",
            MediaKind::Video => "A host stopped your camera; you cannot turn it on right now.",
            MediaKind::Screen => {
                "A host stopped your screen share; you cannot share again right now."
            }
        })
    }

    /// Member `id` turns `kind` back on (checked with [`Room::may_turn_on`]): the SFU call that
    /// lifts its block, if a host had stopped it.
    pub(super) fn turn_on(&mut self, id: &str, kind: MediaKind) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if !m.stopped.get(kind) {
            return Vec::new();
        }
        m.stopped.set(kind, false);
        if kind == MediaKind::Audio {
            m.stopped.asked = false;
        }
        if !m.stopped.any() {
            m.stopped.locked = false;
        }
        self.dirty.members.insert(id.to_string());
        self.block_call(id)
    }

    /// Tells member `id`'s page (on `conn`) that `kind` stays off: a host stopped it.
    pub(super) fn still_stopped(&self, id: &str, conn: &ConnId, kind: MediaKind) -> Vec<Output> {
        let Some(m) = self.members.get(id) else {
            return Vec::new();
        };
        if !m.stopped.get(kind) {
            return Vec::new();
        }
        vec![Output::Send {
            conn: conn.clone(),
            msg: ServerMessage::StoppedByHost {
                what: kind,
                by: "The host".into(),
                locked: m.stopped.locked || !self.meta.settings.may_unmute,
            },
        }]
    }

    /// What a host has stopped of member `id`, told to their page as they (re)connect: a stop
    /// made while they were away, or one they had when they left, holds.
    pub(super) fn stops_on_arrival(&self, id: &str, conn: &ConnId) -> Vec<Output> {
        [MediaKind::Audio, MediaKind::Video]
            .into_iter()
            .flat_map(|k| self.still_stopped(id, conn, k))
            .collect()
    }

    /// What of member `id` the SFU must not forward: what a host stopped, and their screen
    /// tracks unless the room let them share (the SFU knows a track's kind only by its place in
    /// the offer, so a page that is not sharing never gets anything through those places).
    pub(super) fn block_of(&self, id: &str) -> crate::protocol::BlockBody {
        let (s, sharing) = self
            .members
            .get(id)
            .map_or((Stopped::default(), false), |m| (m.stopped, m.info.screen));
        crate::protocol::BlockBody {
            audio: s.audio,
            video: s.video,
            screen: s.screen || !sharing,
        }
    }

    /// The SFU call that tells it what of `id` not to forward now.
    pub(super) fn block_call(&self, id: &str) -> Vec<Output> {
        if !self.members.contains_key(id) {
            return Vec::new();
        }
        let b = self.block_of(id);
        self.call_sfu(
            id.to_string(),
            SfuCall::Block {
                audio: b.audio,
                video: b.video,
                screen: b.screen,
            },
        )
    }

    /// The new meeting actions (the frame already parsed, from member `id` on `conn`).
    pub(super) fn meeting(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: String,
        msg: ClientMessage,
    ) -> Vec<Output> {
        let moderator = self.is_moderator(&id);
        let host = self.meta.host.as_deref() == Some(id.as_str());
        let forbidden =
            |what: &str| error_to(conn.clone(), ErrorCode::Forbidden, format!("Only {what}."));
        let bad = |message: &str| error_to(conn.clone(), ErrorCode::BadRequest, message.into());
        match msg {
            ClientMessage::Chat {
                text,
                to,
                client_id,
            } => self.chat(now, conn, id, text, to, client_id),
            msg @ (ClientMessage::CreatePoll { .. }
            | ClientMessage::Vote { .. }
            | ClientMessage::SharePollResults { .. }
            | ClientMessage::EndPoll { .. }) => self.poll_action(now, conn, &id, msg),
            msg @ (ClientMessage::SetBreakouts { .. }
            | ClientMessage::EditBreakouts { .. }
            | ClientMessage::OpenBreakouts { .. }
            | ClientMessage::CloseBreakouts { .. }
            | ClientMessage::JoinBreakout { .. }
            | ClientMessage::BreakoutMessage { .. }) => self.breakout_action(now, conn, &id, msg),
            ClientMessage::SetRecording { on } => self.set_recording(now, conn, &id, on),
            ClientMessage::DeleteChat { id: msg_id } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can delete messages");
                }
                // A private message is theirs: a moderator not in it cannot see it, nor delete it;
                // nor one of another breakout room's chat.
                let Some(i) = self
                    .chat
                    .iter()
                    .position(|m| m.id == msg_id && self.may_read(&id, m))
                else {
                    return bad("There is no such message.");
                };
                let Some(gone) = self.chat.remove(i) else {
                    return Vec::new();
                };
                self.dirty.chat.insert(msg_id);
                let msg = ServerMessage::ChatDeleted { id: msg_id };
                match gone.to {
                    None => self.to_scope(gone.scope, msg),
                    Some(to) => {
                        let mut out = self.to_member(&gone.from, msg.clone());
                        out.extend(self.to_member(&to, msg));
                        out
                    }
                }
            }
            ClientMessage::React { emoji } => {
                if !moderator && !self.meta.settings.may_react {
                    return forbidden("hosts can react in this meeting");
                }
                if !REACTIONS.contains(&emoji.as_str()) {
                    return bad("That reaction is not on offer.");
                }
                if admit_event(
                    &mut self.limits.reactions,
                    &id,
                    now,
                    1_000,
                    REACTIONS_PER_SECOND,
                )
                .is_err()
                {
                    return error_to(
                        conn,
                        ErrorCode::TooManyRequests,
                        "You are sending reactions too fast.".into(),
                    );
                }
                let scope = self.scope_of(&id);
                self.to_scope(scope, ServerMessage::Reaction { id, emoji })
            }
            ClientMessage::Quality { quality } => {
                let Some(m) = self.members.get(&id) else {
                    return Vec::new();
                };
                if m.page_quality == Some(quality) {
                    return Vec::new();
                }
                // A page reports a change at most every few seconds; more is dropped quietly
                // (the next change brings the band up to date).
                if admit_event(
                    &mut self.limits.reactions,
                    &format!("quality:{id}"),
                    now,
                    1_000,
                    1,
                )
                .is_err()
                {
                    return Vec::new();
                }
                let Some(m) = self.members.get_mut(&id) else {
                    return Vec::new();
                };
                // Stored with the member like the rest of it (the room rebuilds from its rows); a
                // page changes it seldom: it holds a band three polls before telling it.
                m.page_quality = Some(quality);
                self.dirty.members.insert(id.clone());
                self.quality_changed(&id)
            }
            ClientMessage::Hand { raised } => {
                if let Some(refused) = self.hand_toggle_limit(now, &id, &conn) {
                    return refused;
                }
                self.hand(now, &id, raised)
            }
            ClientMessage::LowerHand { id: target } => {
                if !moderator && target != id {
                    return forbidden("hosts and co-hosts can lower someone's hand");
                }
                // Lowering one's own hand counts with raising it.
                if target == id {
                    if let Some(refused) = self.hand_toggle_limit(now, &id, &conn) {
                        return refused;
                    }
                }
                if !self.members.contains_key(&target) {
                    return bad("There is no such participant.");
                }
                self.hand(now, &target, false)
            }
            ClientMessage::Admit { id: target } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can let people in");
                }
                if !self.meta.waiting.iter().any(|w| w.id == target) {
                    return bad("Nobody by that id is waiting.");
                }
                self.admit(now, &target)
            }
            ClientMessage::AdmitAll {} => {
                if !moderator {
                    return forbidden("hosts and co-hosts can let people in");
                }
                let ids: Vec<String> = self.meta.waiting.iter().map(|w| w.id.clone()).collect();
                ids.iter().flat_map(|w| self.admit(now, w)).collect()
            }
            ClientMessage::Deny { id: target } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can turn people away");
                }
                let Some(w) = self.meta.waiting.iter().find(|w| w.id == target).cloned() else {
                    return bad("Nobody by that id is waiting.");
                };
                // Their waiting token is spent: a reload does not put them back in the list.
                self.revoke(&target, now);
                let mut out = self.unwait(&target);
                if let Some(c) = w.conn {
                    out.extend(super::refuse(c, DENIED));
                }
                out
            }
            ClientMessage::Remove { id: target } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can remove people");
                }
                if target == id {
                    return bad("You cannot remove yourself; leave instead.");
                }
                let Some(t) = self.members.get(&target) else {
                    return bad("There is no such participant.");
                };
                // A ban takes the whole browser: never the remover's own, nor (unless the host
                // does it) the host's or a co-host's.
                let bid = t.claims.bid.clone();
                let own_bid = self.members.get(&id).and_then(|m| m.claims.bid.clone());
                if bid.is_some() && bid == own_bid {
                    return bad("That is you, in another tab: leave there instead.");
                }
                let of_host = self.meta.host.as_deref() == Some(target.as_str())
                    || self.is_host_identity(bid.as_deref());
                if of_host {
                    return forbidden("nobody can remove the host");
                }
                // The ban takes every tab of the browser: a co-host's other tab (which joined
                // as a participant) is the co-host's.
                let of_cohost = t.info.role == Role::Cohost
                    || bid.is_some()
                        && (self
                            .members
                            .values()
                            .any(|m| m.claims.bid == bid && m.info.role == Role::Cohost)
                            || self.scheduled_role(bid.as_deref())
                                == Some(crate::schedule::MeetingRole::Cohost));
                if of_cohost && !host {
                    return forbidden("only the host can remove a co-host");
                }
                self.remove_for_good(now, &target)
            }
            ClientMessage::Stop {
                id: target,
                what,
                lock,
            } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can stop someone's media");
                }
                if target == id {
                    return bad("Turn your own microphone, camera or screen off with its button.");
                }
                if !self.members.contains_key(&target) {
                    return bad("There is no such participant.");
                }
                let by = self.name_of(&id);
                self.stop(&target, what, lock, &by)
            }
            ClientMessage::MuteAll { lock } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can mute everyone");
                }
                let by = self.name_of(&id);
                let mut out = Vec::new();
                if lock && self.meta.settings.may_unmute {
                    self.meta.settings.may_unmute = false;
                    self.dirty.meta = true;
                    out.push(self.settings_changed());
                }
                let targets: Vec<String> = self
                    .members
                    .keys()
                    .filter(|m| !self.is_moderator(m))
                    .cloned()
                    .collect();
                for t in targets {
                    out.extend(self.stop(&t, MediaKind::Audio, lock, &by));
                }
                out
            }
            ClientMessage::AskUnmute { id: target } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can ask someone to unmute");
                }
                if !self.members.contains_key(&target) || target == id {
                    return bad("There is no such participant.");
                }
                let by = self.name_of(&id);
                // Asked, they may unmute whatever the lock or the room's setting says.
                if let Some(m) = self.members.get_mut(&target) {
                    if m.stopped.any() {
                        m.stopped.asked = true;
                        self.dirty.members.insert(target.clone());
                    }
                }
                self.to_member(&target, ServerMessage::UnmuteRequested { by })
            }
            ClientMessage::SetCohost { id: target, cohost } => {
                if !host {
                    return forbidden("the host can make or unmake co-hosts");
                }
                if target == id {
                    return bad("You are the host.");
                }
                let Some(m) = self.members.get_mut(&target) else {
                    return bad("There is no such participant.");
                };
                let role = if cohost {
                    Role::Cohost
                } else {
                    Role::Participant
                };
                if m.info.role == role {
                    return Vec::new();
                }
                m.info.role = role;
                self.dirty.members.insert(target.clone());
                let mut out = vec![Output::Broadcast {
                    except: None,
                    msg: ServerMessage::RoleChanged {
                        id: target.clone(),
                        role,
                    },
                }];
                if cohost {
                    out.extend(self.to_member(
                        &target,
                        ServerMessage::WaitingList {
                            waiting: self.waiting_list(),
                        },
                    ));
                }
                // Poll results come (or go) with the role.
                out.extend(self.polls_to(&target));
                out
            }
            ClientMessage::UpdateSettings { mut settings } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can change the meeting's settings");
                }
                settings.has_password = self.meta.settings.has_password;
                // Only the host decides whether co-hosts record: a co-host's settings carry the
                // value as it is (a page that had not heard of the host's change yet included).
                if !host {
                    settings.cohosts_may_record = self.meta.settings.cohosts_may_record;
                }
                if settings == self.meta.settings {
                    return Vec::new();
                }
                let mut out = Vec::new();
                // Letting people unmute again lifts every lock.
                if settings.may_unmute && !self.meta.settings.may_unmute {
                    for m in self.members.values_mut() {
                        m.stopped.locked = false;
                    }
                    self.dirty.members.extend(self.members.keys().cloned());
                    // Also those kept for people away, who come back with their browser.
                    self.meta.held.retain(|_, h| {
                        h.locked = false;
                        h.any()
                    });
                }
                let opened = !settings.waiting_room && self.meta.settings.waiting_room;
                // Tightening the door: tokens handed out before bring nobody new in.
                if (settings.locked && !self.meta.settings.locked)
                    || (settings.waiting_room && !self.meta.settings.waiting_room)
                {
                    self.meta.door += 1;
                }
                self.meta.settings = settings;
                self.dirty.meta = true;
                out.push(self.settings_changed());
                // Turning the waiting room off lets everyone waiting in.
                if opened {
                    let ids: Vec<String> = self.meta.waiting.iter().map(|w| w.id.clone()).collect();
                    out.extend(
                        ids.iter()
                            .flat_map(|w| self.admit(now, w))
                            .collect::<Vec<_>>(),
                    );
                }
                out
            }
            ClientMessage::SetPassword { password } => {
                if !moderator {
                    return forbidden("hosts and co-hosts can set the password");
                }
                if self.meta.scheduled.is_some() {
                    return bad("This meeting's password is part of its schedule: its owner changes it on the Meetings page.");
                }
                match password {
                    None => {
                        self.meta.password_hash = None;
                        self.meta.settings.has_password = false;
                        self.dirty.meta = true;
                        vec![self.settings_changed()]
                    }
                    Some(p) if p.is_empty() || p.chars().count() > 128 => {
                        bad("A password is 1 to 128 characters.")
                    }
                    Some(password) => vec![Output::HashPassword { password }],
                }
            }
            ClientMessage::EndMeeting {} => {
                if !host {
                    return forbidden("the host can end the meeting for everyone");
                }
                self.end(now)
            }
            // The rest is handled in `frame`.
            _ => Vec::new(),
        }
    }

    pub(super) fn name_of(&self, id: &str) -> String {
        self.members
            .get(id)
            .map(|m| m.info.name.clone())
            .unwrap_or_default()
    }

    pub(super) fn settings_changed(&self) -> Output {
        Output::Broadcast {
            except: None,
            msg: ServerMessage::Settings {
                settings: self.meta.settings.clone(),
            },
        }
    }

    pub(super) fn password_hashed(&mut self, hash: Option<String>) -> Vec<Output> {
        let Some(hash) = hash else {
            return vec![Output::Warn("could not hash the room password".into())];
        };
        self.meta.password_hash = Some(hash);
        self.meta.settings.has_password = true;
        self.meta.door += 1; // a token from before the password brings nobody new in
        self.dirty.meta = true;
        vec![self.settings_changed()]
    }

    fn hand(&mut self, now: Millis, id: &str, raised: bool) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if m.info.hand.is_some() == raised {
            return Vec::new();
        }
        m.info.hand = raised.then_some(now);
        self.dirty.members.insert(id.to_string());
        vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::HandChanged {
                id: id.to_string(),
                raised_at: m.info.hand,
            },
        }]
    }

    /// Stops `target`'s `what` (the SFU stops forwarding it; their page is told).
    fn stop(&mut self, target: &str, what: MediaKind, lock: bool, by: &str) -> Vec<Output> {
        let Some(m) = self.members.get_mut(target) else {
            return Vec::new();
        };
        m.stopped.set(what, true);
        m.stopped.locked |= lock;
        m.stopped.asked = false;
        let mut out = Vec::new();
        match what {
            MediaKind::Audio | MediaKind::Video => {
                if what == MediaKind::Audio {
                    m.info.audio_muted = true;
                } else {
                    m.info.video_muted = true;
                }
                out.push(Output::Broadcast {
                    except: None,
                    msg: ServerMessage::MediaChanged {
                        id: target.to_string(),
                        audio_muted: m.info.audio_muted,
                        video_muted: m.info.video_muted,
                    },
                });
            }
            MediaKind::Screen => {
                if m.info.screen {
                    m.info.screen = false;
                    out.push(Output::Broadcast {
                        except: None,
                        msg: ServerMessage::ScreenChanged {
                            id: target.to_string(),
                            sharing: false,
                        },
                    });
                }
            }
        }
        let locked = m.stopped.locked || !self.meta.settings.may_unmute;
        self.dirty.members.insert(target.to_string());
        out.extend(self.block_call(target));
        out.extend(self.to_member(
            target,
            ServerMessage::StoppedByHost {
                what,
                by: by.to_string(),
                locked,
            },
        ));
        out
    }

    /// Hand toggles (raise or lower one's own) are limited like reactions: `Some(error)` over it.
    fn hand_toggle_limit(&mut self, now: Millis, id: &str, conn: &ConnId) -> Option<Vec<Output>> {
        let key = format!("hand:{id}");
        admit_event(
            &mut self.limits.reactions,
            &key,
            now,
            1_000,
            REACTIONS_PER_SECOND,
        )
        .err()
        .map(|_| {
            error_to(
                conn.clone(),
                ErrorCode::TooManyRequests,
                "You are raising and lowering your hand too fast.".into(),
            )
        })
    }

    /// Lets `id` in from the waiting room: a token with grants, and they connect again with it
    /// (their waiting socket is closed with "reconnect").
    fn admit(&mut self, now: Millis, id: &str) -> Vec<Output> {
        let Some(w) = self.meta.waiting.iter().find(|w| w.id == id).cloned() else {
            return Vec::new();
        };
        let mut out = self.unwait(id);
        let (Some(conn), Some(mut claims)) = (w.conn, w.claims) else {
            return out; // not connected: they join again
        };
        let life = claims.exp.saturating_sub(claims.iat);
        let secs = now / 1000;
        claims.waiting = false;
        claims.admitted = true;
        claims.door = self.meta.door;
        claims.role = Role::Participant;
        claims.grants = Grants::max_for(Role::Participant);
        claims.jti = format!("{}~in", claims.jti.split('~').next().unwrap_or_default());
        claims.iat = secs;
        claims.nbf = secs;
        claims.exp = secs + life;
        out.push(Output::IssueToken {
            conn: conn.clone(),
            claims,
        });
        out.push(super::reconnect(conn));
        out
    }

    /// Removes `target` for good: their tokens are revoked, their browser banned, their socket
    /// closed with the reason, their SFU session ended.
    fn remove_for_good(&mut self, now: Millis, target: &str) -> Vec<Output> {
        let Some(m) = self.members.get(target) else {
            return Vec::new();
        };
        // Their browser is banned: every tab of it in the meeting goes, and any of it waiting.
        let bid = m.claims.bid.clone();
        let mut targets = vec![target.to_string()];
        if let Some(bid) = &bid {
            self.meta.bans.insert(bid.clone());
            self.dirty.meta = true;
            targets.extend(
                self.members
                    .iter()
                    .filter(|(id, m)| *id != target && m.claims.bid.as_ref() == Some(bid))
                    .map(|(id, _)| id.clone()),
            );
        }
        let mut out = Vec::new();
        for t in targets {
            let Some(m) = self.members.get(&t) else {
                continue;
            };
            let (conn, away) = (m.conn.clone(), m.away_since.is_some());
            self.revoke(&t, now);
            // `revoke` queued its rows already; the rest goes out with this input.
            if !away {
                out.extend(super::refuse(conn, REMOVED));
            }
            out.extend(self.remove(now, &t));
        }
        if let Some(bid) = &bid {
            // (`remove` held their stops for a return that a ban rules out.)
            self.meta.held.remove(bid);
            let waiting: Vec<(String, Option<ConnId>)> = self
                .meta
                .waiting
                .iter()
                .filter(|w| w.claims.as_ref().and_then(|c| c.bid.as_ref()) == Some(bid))
                .map(|w| (w.id.clone(), w.conn.clone()))
                .collect();
            for (w, conn) in waiting {
                self.revoke(&w, now);
                out.extend(self.unwait(&w));
                if let Some(c) = conn {
                    out.extend(super::refuse(c, REMOVED));
                }
            }
        }
        out
    }

    /// A chat message from `id`.
    fn chat(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: String,
        text: String,
        to: Option<String>,
        client_id: String,
    ) -> Vec<Output> {
        if !self.is_moderator(&id) && !self.meta.settings.may_chat {
            return error_to(
                conn,
                ErrorCode::Forbidden,
                "Only hosts can chat in this meeting.".into(),
            );
        }
        let text = text.trim().to_string();
        if text.is_empty() {
            return error_to(conn, ErrorCode::BadRequest, "The message is empty.".into());
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return error_to(
                conn,
                ErrorCode::BadRequest,
                format!("A message is at most {MAX_CHAT_CHARS} characters."),
            );
        }
        if client_id.is_empty() || client_id.len() > 64 {
            return error_to(
                conn,
                ErrorCode::BadMessage,
                "client_id must be 1 to 64 characters".into(),
            );
        }
        if let Some(t) = &to {
            if !self.members.contains_key(t) || *t == id {
                return error_to(
                    conn,
                    ErrorCode::BadRequest,
                    "There is no such participant to message.".into(),
                );
            }
        }
        let Some(m) = self.members.get(&id) else {
            return Vec::new();
        };
        // (The stored history also counts: a member back after the reconnect grace has no
        // recent list, and the page resends for a minute.)
        if m.recent_chat.contains(&client_id)
            || self
                .chat
                .iter()
                .any(|c| c.from == id && c.client_id == client_id)
        {
            // Sent again after a reconnect: it is in already. The sender gets it back (their
            // page may have missed it) and a `duplicate` frame; nothing changes.
            let mut out: Vec<Output> = self
                .chat
                .iter()
                .filter(|c| c.from == id && c.client_id == client_id)
                .map(|c| Output::Send {
                    conn: conn.clone(),
                    msg: ServerMessage::ChatMessage { message: c.clone() },
                })
                .collect();
            out.extend(error_to(
                conn,
                ErrorCode::Duplicate,
                "That message was already sent.".into(),
            ));
            return out;
        }
        if admit_event(&mut self.limits.chat, &id, now, 1_000, CHAT_PER_SECOND).is_err() {
            return error_to(
                conn,
                ErrorCode::TooManyRequests,
                "You are sending messages too fast.".into(),
            );
        }
        let message = ChatMessage {
            id: self.meta.chat_next,
            from: id.clone(),
            name: m.info.name.clone(),
            to: to.clone(),
            text,
            at: now,
            client_id: client_id.clone(),
            scope: m.info.scope,
            notice: false,
        };
        self.meta.chat_next += 1;
        self.dirty.meta = true;
        self.report_chat(now);
        if let Some(m) = self.members.get_mut(&id) {
            m.recent_chat.push_back(client_id);
            if m.recent_chat.len() > RECENT_CHAT_IDS {
                m.recent_chat.pop_front();
            }
            self.dirty.members.insert(id.clone());
        }
        self.chat.push_back(message.clone());
        self.dirty.chat.insert(message.id);
        while self.chat.len() > CHAT_HISTORY {
            if let Some(old) = self.chat.pop_front() {
                self.dirty.chat.insert(old.id);
            }
        }
        let scope = message.scope;
        let msg = ServerMessage::ChatMessage { message };
        match to {
            None => self.to_scope(scope, msg),
            Some(t) => {
                let mut out = self.to_member(&t, msg.clone());
                out.push(Output::Send { conn, msg });
                out
            }
        }
    }

    /// The host ended the meeting: everyone is told and let go, the SFU frees the room, and the
    /// room starts over (a later join to the same name is a new meeting).
    fn end(&mut self, now: Millis) -> Vec<Output> {
        // The report first: everyone in leaves now, and the totals (polls too) are final.
        self.report_end(now);
        // A recording ends with the meeting.
        let mut out = self.stop_recording(now, None);
        out.push(Output::Broadcast {
            except: None,
            msg: ServerMessage::MeetingEnded {},
        });
        let conns: Vec<ConnId> = self
            .members
            .values()
            .map(|m| m.conn.clone())
            .chain(self.meta.waiting.iter().filter_map(|w| w.conn.clone()))
            .collect();
        for m in self.members.keys() {
            out.extend(self.call_sfu(m.clone(), SfuCall::Leave));
        }
        for w in self.meta.waiting.iter().filter_map(|w| w.conn.clone()) {
            out.push(Output::Send {
                conn: w,
                msg: ServerMessage::MeetingEnded {},
            });
        }
        for conn in conns {
            out.push(Output::Close {
                conn,
                code: CLOSE_ENDED,
                reason: "The host ended the meeting.".into(),
            });
        }
        // Everything goes: members, chat, settings, bans, the password.
        let name = self.meta.name.clone();
        let revoked = std::mem::take(&mut self.revoked);
        let old_members: Vec<String> = self.members.keys().cloned().collect();
        let old_chat: Vec<u64> = self.chat.iter().map(|m| m.id).collect();
        let old_polls: Vec<u64> = self.polls.iter().map(|p| p.id).collect();
        let mut fresh = Room::new(name);
        fresh.revoked = revoked; // tokens out there stay refused until they expire
                                 // Tokens of the ended meeting bring nobody into the next one.
        fresh.meta.door = self.meta.door + 1;
        fresh.meta.meeting_door = fresh.meta.door;
        fresh.meta.wrong_passwords = std::mem::take(&mut self.meta.wrong_passwords);
        fresh.meta.media = std::mem::take(&mut self.meta.media);
        fresh.meta.media.emptied(now);
        // The SFU applies only rising versions, and remembers the last for a room that left:
        // the next meeting's breakout rooms and recordings count on from this one's.
        fresh.meta.scopes = std::mem::take(&mut self.meta.scopes);
        fresh.meta.scopes.settle();
        fresh.meta.recording.sync = std::mem::take(&mut self.meta.recording.sync);
        fresh.dirty = std::mem::take(&mut self.dirty);
        fresh.out = std::mem::take(&mut self.out);
        // The report's rows still waiting for D1 go out all the same, numbered on.
        fresh.outbox = std::mem::take(&mut self.outbox);
        fresh.meta.report = std::mem::take(&mut self.meta.report);
        *self = fresh;
        self.dirty.meta = true;
        self.dirty.members.extend(old_members);
        self.dirty.chat.extend(old_chat);
        self.dirty.polls.extend(old_polls);
        out
    }
}
