//! Breakout rooms: a host or co-host plans rooms (names, who goes where, whether people may pick
//! one), opens them (with an optional timer), sends a message to every room, and closes them all
//! with a countdown everyone sees, after which everyone is back in the main room.
//!
//! A breakout room is a *scope* of this room, not a room of its own: the same Durable Object, the
//! same WebSocket, the same SFU session. Each member is in one scope (0: the main room; `n`: room
//! `n`); the SFU forwards media only within a scope, and chat, reactions and the active speaker
//! stay inside it. Moving is one message to the page and one control call to the SFU (which sends
//! the page a new offer): no new connection, no new camera prompt. See ARCHITECTURE.md.
//!
//! The plan lives in the room's own row ([`super::Meta`]), each member's scope in their row: both
//! survive an eviction. The timer and the countdown are deadlines of [`Room::poll_timeout`] (the
//! DO's alarm). People who join while the rooms are open land in the main room; a host can move
//! them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{error_to, ConnId, Output, Room, SfuCall};
use crate::error::ErrorCode;
use crate::protocol::{
    BreakoutEdit, BreakoutNote, BreakoutView, ChatMessage, ClientMessage, ServerMessage,
    BREAKOUT_CLOSE_SECONDS, MAX_BREAKOUT_CLOSE_SECONDS, MAX_BREAKOUT_MINUTES,
    MAX_BREAKOUT_NAME_CHARS, MAX_BREAKOUT_ROOMS, MAX_CHAT_CHARS,
};
use crate::Millis;

/// Most assignments a plan holds.
const MAX_ASSIGNED: usize = 1_000;
/// A scopes call the SFU did not take is sent again after this long.
pub const SCOPES_RETRY_MS: Millis = 1_000;

/// A whole state the SFU must learn — where everyone is, or the recording — with its version
/// (stored in the room's row: an eviction between a change and its call does not lose the call).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(super) struct ScopeSync {
    /// Rises with every change of anyone's scope.
    version: u64,
    /// The newest version the SFU took.
    acked: u64,
    /// A call failed: send the latest state again then.
    retry_at: Option<Millis>,
    /// Since when the calls for the latest state fail (none taken since).
    #[serde(default)]
    failing_since: Option<Millis>,
}

impl ScopeSync {
    pub(super) fn acked(&mut self, version: u64) {
        self.acked = self.acked.max(version);
        if self.acked >= self.version {
            self.retry_at = None;
            self.failing_since = None;
        }
    }

    pub(super) fn failed(&mut self, now: Millis, version: u64) {
        if version >= self.version && self.acked < self.version {
            self.retry_at = Some(now + SCOPES_RETRY_MS);
            self.failing_since.get_or_insert(now);
        }
    }

    /// Since when the calls for the latest state fail.
    pub(super) fn failing_since(&self) -> Option<Millis> {
        self.failing_since
    }

    /// Nothing more to send (nobody is left, or the SFU refused it for good).
    pub(super) fn settle(&mut self) {
        self.acked = self.version;
        self.retry_at = None;
        self.failing_since = None;
    }

    pub(super) fn retry_at(&self) -> Option<Millis> {
        self.retry_at.filter(|_| self.acked < self.version)
    }

    /// A new state to send (the recording's uses this too).
    pub(super) fn bump(&mut self) {
        self.version += 1;
        self.retry_at = None;
        self.failing_since = None;
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }

    pub(super) fn clear_retry(&mut self) {
        self.retry_at = None;
    }

    /// The SFU has not taken the latest state.
    pub(super) fn unacked(&self) -> bool {
        self.acked < self.version
    }
}

/// What a breakout action was refused for. Each has a wire code and words for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BreakoutError {
    #[error("Only hosts and co-hosts can {0}.")]
    Forbidden(&'static str),
    #[error("A meeting has at most {MAX_BREAKOUT_ROOMS} breakout rooms.")]
    TooManyRooms,
    #[error("Add at least one breakout room first.")]
    NoRooms,
    #[error("Every breakout room needs a name.")]
    EmptyName,
    #[error("A room's name is at most {MAX_BREAKOUT_NAME_CHARS} characters.")]
    NameTooLong,
    #[error("Two rooms are called \"{0}\".")]
    SameName(String),
    #[error("There is no such breakout room.")]
    NoSuchRoom,
    #[error("Too many people assigned.")]
    TooManyAssigned,
    #[error("That person is no longer in the meeting.")]
    NotHere,
    #[error("The breakout rooms are not open.")]
    NotOpen,
    #[error("Close the rooms before removing one.")]
    RemoveWhileOpen,
    #[error("A timer runs 1 to {MAX_BREAKOUT_MINUTES} minutes.")]
    Timer,
    #[error("A closing countdown is at most {MAX_BREAKOUT_CLOSE_SECONDS} seconds.")]
    Countdown,
    #[error("The host assigns the breakout rooms in this meeting.")]
    MayNotChoose,
    #[error("The message is empty.")]
    EmptyMessage,
    #[error("A message is at most {MAX_CHAT_CHARS} characters.")]
    MessageTooLong,
}

impl BreakoutError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BreakoutError::Forbidden(_) | BreakoutError::MayNotChoose => ErrorCode::Forbidden,
            BreakoutError::NoSuchRoom | BreakoutError::NotHere => ErrorCode::NotFound,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// "Assign automatically": `people` (in the order given) spread over `rooms` rooms as evenly as
/// can be (sizes differ by one at most), room 1 first.
pub fn even_split(people: &[String], rooms: u32) -> BTreeMap<String, u32> {
    if rooms == 0 {
        return BTreeMap::new();
    }
    people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as u32 % rooms + 1))
        .collect()
}

/// A name for a new room that no room has yet: "Room N", the first N from the number of rooms
/// after adding it.
pub fn new_room_name(rooms: &[String]) -> String {
    (rooms.len() + 1..)
        .map(|n| format!("Room {n}"))
        .find(|n| !rooms.iter().any(|r| r.eq_ignore_ascii_case(n)))
        .unwrap_or_default()
}

impl Room {
    /// A breakout action from member `id` on `conn` (the frame already parsed).
    pub(super) fn breakout_action(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: &str,
        msg: ClientMessage,
    ) -> Vec<Output> {
        let done = match msg {
            ClientMessage::SetBreakouts {
                rooms,
                assigned,
                let_choose,
            } => self.set_breakouts(id, rooms, assigned, let_choose),
            ClientMessage::EditBreakouts { edit } => self.edit_breakouts(id, edit),
            ClientMessage::OpenBreakouts { minutes } => self.open_breakouts(now, id, minutes),
            ClientMessage::CloseBreakouts { seconds } => self.close_breakouts(now, id, seconds),
            ClientMessage::JoinBreakout { room } => self.join_breakout(id, room),
            ClientMessage::BreakoutMessage { text } => self.breakout_message(id, text),
            _ => Ok(Vec::new()),
        };
        done.unwrap_or_else(|e| error_to(conn, e.code(), e.to_string()))
    }

    /// Where everyone is, to the SFU, as it is now (whole state, this version).
    pub(super) fn scopes_call(&self) -> Vec<Output> {
        let scopes = self
            .members
            .iter()
            .filter(|(_, m)| m.info.scope != 0)
            .map(|(id, m)| (id.clone(), m.info.scope))
            .collect();
        self.call_sfu(
            String::new(),
            SfuCall::Scopes {
                version: self.meta.scopes.version,
                scopes,
            },
        )
    }

    /// Someone's scope changed: a new version for the SFU.
    pub(super) fn scopes_changed(&mut self) -> Vec<Output> {
        self.meta.scopes.version += 1;
        self.meta.scopes.retry_at = None;
        self.dirty.meta = true;
        self.scopes_call()
    }

    /// A failed scopes call's retry is due.
    pub(super) fn scopes_retry(&mut self, now: Millis) -> Vec<Output> {
        match self.meta.scopes.retry_at() {
            Some(at) if now >= at => {
                self.meta.scopes.retry_at = None;
                self.dirty.meta = true;
                self.scopes_call()
            }
            _ => Vec::new(),
        }
    }

    /// The latest state again if the SFU has not taken it (after an eviction: the call may have
    /// been lost with the object).
    pub(super) fn scopes_unsent(&self) -> Vec<Output> {
        if self.meta.scopes.acked < self.meta.scopes.version {
            self.scopes_call()
        } else {
            Vec::new()
        }
    }

    /// The scope (breakout room, 0: main) member `id` is in.
    pub(super) fn scope_of(&self, id: &str) -> u32 {
        self.members.get(id).map_or(0, |m| m.info.scope)
    }

    /// `msg` to every connected member in `scope` (one broadcast when that is everyone).
    pub(super) fn to_scope(&self, scope: u32, msg: ServerMessage) -> Vec<Output> {
        if self.members.values().all(|m| m.info.scope == scope) {
            return vec![Output::Broadcast { except: None, msg }];
        }
        self.members
            .values()
            .filter(|m| m.info.scope == scope)
            .flat_map(|m| self.to_member(&m.info.id, msg.clone()))
            .collect()
    }

    /// When the timer or the closing countdown is due, if either runs.
    pub(super) fn breakout_deadline(&self) -> Option<Millis> {
        let b = &self.meta.breakouts;
        if !b.open {
            return None;
        }
        // Whichever comes first: the timer's end starts a countdown even while a host's later
        // one runs (it may be sooner).
        b.closing_at.into_iter().chain(b.ends_at).min()
    }

    /// The timer ran out (the countdown starts) or the countdown did (everyone comes back).
    pub(super) fn breakout_timeout(&mut self, now: Millis) -> Vec<Output> {
        let b = &mut self.meta.breakouts;
        if !b.open {
            return Vec::new();
        }
        if b.closing_at.is_some_and(|at| now >= at) {
            return self.close_now();
        }
        if b.ends_at.is_some_and(|at| now >= at) {
            b.ends_at = None;
            // The timer's countdown, unless a host's sooner one runs already.
            let at = now + BREAKOUT_CLOSE_SECONDS as Millis * 1000;
            if b.closing_at.is_none_or(|c| c > at) {
                b.closing_at = Some(at);
            }
            self.dirty.meta = true;
            return vec![self.breakouts_changed()];
        }
        Vec::new()
    }

    fn breakouts_changed(&self) -> Output {
        Output::Broadcast {
            except: None,
            msg: ServerMessage::Breakouts {
                breakouts: self.meta.breakouts.clone(),
            },
        }
    }

    fn set_breakouts(
        &mut self,
        id: &str,
        rooms: Vec<String>,
        assigned: BTreeMap<String, u32>,
        let_choose: bool,
    ) -> Result<Vec<Output>, BreakoutError> {
        if !self.is_moderator(id) {
            return Err(BreakoutError::Forbidden("plan breakout rooms"));
        }
        if rooms.len() > MAX_BREAKOUT_ROOMS {
            return Err(BreakoutError::TooManyRooms);
        }
        let rooms: Vec<String> = rooms.iter().map(|r| r.trim().to_string()).collect();
        for (i, r) in rooms.iter().enumerate() {
            if r.is_empty() {
                return Err(BreakoutError::EmptyName);
            }
            if r.chars().count() > MAX_BREAKOUT_NAME_CHARS {
                return Err(BreakoutError::NameTooLong);
            }
            if rooms[..i]
                .iter()
                .any(|o| o.to_lowercase() == r.to_lowercase())
            {
                return Err(BreakoutError::SameName(r.clone()));
            }
        }
        // Only people here: ids are per join, so someone who left will not come back as them.
        let assigned: BTreeMap<String, u32> = assigned
            .into_iter()
            .filter(|(p, _)| self.members.contains_key(p))
            .collect();
        if assigned.len() > MAX_ASSIGNED {
            return Err(BreakoutError::TooManyAssigned);
        }
        if assigned
            .values()
            .any(|&n| n == 0 || n as usize > rooms.len())
        {
            return Err(BreakoutError::NoSuchRoom);
        }
        let b = &self.meta.breakouts;
        if b.open && rooms.len() < b.rooms.len() {
            return Err(BreakoutError::RemoveWhileOpen);
        }
        // While open, whoever present got another room goes there now.
        let moves: Vec<(String, u32)> = if b.open {
            self.members
                .keys()
                .filter(|m| assigned.get(*m) != b.assigned.get(*m))
                .map(|m| (m.clone(), assigned.get(m).copied().unwrap_or(0)))
                .collect()
        } else {
            Vec::new()
        };
        let b = &mut self.meta.breakouts;
        b.rooms = rooms;
        b.assigned = assigned;
        b.let_choose = let_choose;
        self.dirty.meta = true;
        let mut out = vec![self.breakouts_changed()];
        out.extend(self.move_all(moves));
        Ok(out)
    }

    /// One change applied to the plan as it is now, then checked and applied as a whole plan.
    fn edit_breakouts(
        &mut self,
        id: &str,
        edit: BreakoutEdit,
    ) -> Result<Vec<Output>, BreakoutError> {
        if !self.is_moderator(id) {
            return Err(BreakoutError::Forbidden("plan breakout rooms"));
        }
        let b = &self.meta.breakouts;
        let (mut rooms, mut assigned, mut let_choose) =
            (b.rooms.clone(), b.assigned.clone(), b.let_choose);
        // The room called `name` now: its number (1-based).
        fn number_of(rooms: &[String], name: &str) -> Option<u32> {
            rooms.iter().position(|r| r == name).map(|i| i as u32 + 1)
        }
        match edit {
            BreakoutEdit::AddRoom => {
                let name = new_room_name(&rooms);
                rooms.push(name);
            }
            BreakoutEdit::RenameRoom { room, name } => {
                let n = number_of(&rooms, &room).ok_or(BreakoutError::NoSuchRoom)?;
                rooms[n as usize - 1] = name;
            }
            BreakoutEdit::RemoveRoom { room } => {
                let Some(n) = number_of(&rooms, &room) else {
                    return Ok(Vec::new());
                };
                if b.open {
                    return Err(BreakoutError::RemoveWhileOpen);
                }
                rooms.remove(n as usize - 1);
                assigned = assigned
                    .into_iter()
                    .filter(|(_, r)| *r != n)
                    .map(|(p, r)| (p, if r > n { r - 1 } else { r }))
                    .collect();
            }
            BreakoutEdit::Assign { participant, room } => {
                if !self.members.contains_key(&participant) {
                    return Err(BreakoutError::NotHere);
                }
                match room {
                    None => {
                        assigned.remove(&participant);
                    }
                    Some(room) => {
                        let n = number_of(&rooms, &room).ok_or(BreakoutError::NoSuchRoom)?;
                        assigned.insert(participant, n);
                    }
                }
            }
            BreakoutEdit::AssignEvenly => {
                if rooms.is_empty() {
                    return Err(BreakoutError::NoRooms);
                }
                let mut people: Vec<(&Millis, &String)> = self
                    .members
                    .iter()
                    .filter(|(m, _)| m.as_str() != id)
                    .map(|(m, member)| (&member.joined_at, m))
                    .collect();
                people.sort();
                let people: Vec<String> = people.into_iter().map(|(_, m)| m.clone()).collect();
                assigned = even_split(&people, rooms.len() as u32);
            }
            BreakoutEdit::LetChoose { on } => let_choose = on,
        }
        self.set_breakouts(id, rooms, assigned, let_choose)
    }

    /// Moves these members; the SFU hears of all of them at once.
    fn move_all(&mut self, moves: Vec<(String, u32)>) -> Vec<Output> {
        let mut out = Vec::new();
        let mut moved = false;
        for (m, scope) in moves {
            let o = self.move_to(&m, scope);
            moved |= !o.is_empty();
            out.extend(o);
        }
        if moved {
            out.extend(self.scopes_changed());
        }
        out
    }

    fn open_breakouts(
        &mut self,
        now: Millis,
        id: &str,
        minutes: Option<u32>,
    ) -> Result<Vec<Output>, BreakoutError> {
        if !self.is_moderator(id) {
            return Err(BreakoutError::Forbidden("open breakout rooms"));
        }
        if self.meta.breakouts.rooms.is_empty() {
            return Err(BreakoutError::NoRooms);
        }
        if minutes.is_some_and(|m| !(1..=MAX_BREAKOUT_MINUTES).contains(&m)) {
            return Err(BreakoutError::Timer);
        }
        let b = &mut self.meta.breakouts;
        // Opening again (rooms open) restarts the timer and calls off a countdown.
        b.open = true;
        b.ends_at = minutes.map(|m| now + m as Millis * 60_000);
        b.closing_at = None;
        self.dirty.meta = true;
        let moves: Vec<(String, u32)> = self
            .members
            .keys()
            .filter_map(|m| Some((m.clone(), *self.meta.breakouts.assigned.get(m)?)))
            .collect();
        let mut out = vec![self.breakouts_changed()];
        out.extend(self.move_all(moves));
        Ok(out)
    }

    fn close_breakouts(
        &mut self,
        now: Millis,
        id: &str,
        seconds: u32,
    ) -> Result<Vec<Output>, BreakoutError> {
        if !self.is_moderator(id) {
            return Err(BreakoutError::Forbidden("close breakout rooms"));
        }
        if !self.meta.breakouts.open {
            return Err(BreakoutError::NotOpen);
        }
        if seconds > MAX_BREAKOUT_CLOSE_SECONDS {
            return Err(BreakoutError::Countdown);
        }
        if seconds == 0 {
            return Ok(self.close_now());
        }
        let at = now + seconds as Millis * 1000;
        let b = &mut self.meta.breakouts;
        // A sooner countdown replaces a later one, never the other way round.
        if b.closing_at.is_some_and(|c| c <= at) {
            return Ok(Vec::new());
        }
        b.closing_at = Some(at);
        self.dirty.meta = true;
        Ok(vec![self.breakouts_changed()])
    }

    /// Everyone back in the main room; the plan stays for opening again. The rooms' chats go
    /// (the next people in a room of that number must not read this group's conversation).
    fn close_now(&mut self) -> Vec<Output> {
        let b = &mut self.meta.breakouts;
        b.open = false;
        b.ends_at = None;
        b.closing_at = None;
        b.message = None;
        self.dirty.meta = true;
        let gone: Vec<u64> = self
            .chat
            .iter()
            .filter(|c| c.to.is_none() && c.scope != 0)
            .map(|c| c.id)
            .collect();
        self.chat.retain(|c| !(c.to.is_none() && c.scope != 0));
        self.dirty.chat.extend(gone);
        let mut out = vec![self.breakouts_changed()];
        let away: Vec<(String, u32)> = self
            .members
            .values()
            .filter(|m| m.info.scope != 0)
            .map(|m| (m.info.id.clone(), 0))
            .collect();
        out.extend(self.move_all(away));
        out
    }

    fn join_breakout(&mut self, id: &str, room: u32) -> Result<Vec<Output>, BreakoutError> {
        let b = &self.meta.breakouts;
        if room as usize > b.rooms.len() {
            return Err(BreakoutError::NoSuchRoom);
        }
        if room != 0 && !b.open {
            return Err(BreakoutError::NotOpen);
        }
        // Anyone may go back to the main room, and to the room they were given; another room of
        // their choice only if hosts allow it.
        let theirs = b.assigned.get(id) == Some(&room);
        if room != 0 && !theirs && !b.let_choose && !self.is_moderator(id) {
            return Err(BreakoutError::MayNotChoose);
        }
        Ok(self.move_all(vec![(id.to_string(), room)]))
    }

    fn breakout_message(&mut self, id: &str, text: String) -> Result<Vec<Output>, BreakoutError> {
        if !self.is_moderator(id) {
            return Err(BreakoutError::Forbidden("message every room"));
        }
        if !self.meta.breakouts.open {
            return Err(BreakoutError::NotOpen);
        }
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(BreakoutError::EmptyMessage);
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return Err(BreakoutError::MessageTooLong);
        }
        self.meta.breakouts.message = Some(BreakoutNote {
            from: self.name_of(id),
            text,
        });
        self.dirty.meta = true;
        Ok(vec![self.breakouts_changed()])
    }

    /// Member `id` moves to `scope`: everyone learns where they are, they get that scope's chat
    /// and speaker, and (they were its speaker) the room they left has none now. The caller tells
    /// the SFU ([`Room::move_all`]), which forwards them that scope's media (a new offer follows).
    fn move_to(&mut self, id: &str, scope: u32) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if m.info.scope == scope {
            return Vec::new();
        }
        let old = std::mem::replace(&mut m.info.scope, scope);
        self.dirty.members.insert(id.to_string());
        let mut out = Vec::new();
        if self.meta.speakers.get(&old).is_some_and(|s| s == id) {
            self.meta.speakers.remove(&old);
            self.dirty.meta = true;
            out.extend(self.to_scope(old, ServerMessage::ActiveSpeaker { id: None }));
        }
        out.push(Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantMoved {
                id: id.to_string(),
                scope,
            },
        });
        out.extend(self.to_member(
            id,
            ServerMessage::Moved {
                scope,
                chat: self.chat_for(id),
                speaker: self.meta.speakers.get(&scope).cloned(),
            },
        ));
        out
    }

    /// Whether member `reader` may read chat message `m` (public ones of their scope, private
    /// ones to or from them wherever they are).
    pub(super) fn may_read(&self, reader: &str, m: &ChatMessage) -> bool {
        match &m.to {
            None => m.scope == self.scope_of(reader),
            Some(to) => m.from == reader || to == reader,
        }
    }

    /// The plan as everyone sees it.
    pub(super) fn breakout_view(&self) -> BreakoutView {
        self.meta.breakouts.clone()
    }
}
