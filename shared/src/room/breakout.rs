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

use thiserror::Error;

use super::{error_to, ConnId, Output, Room, SfuCall};
use crate::error::ErrorCode;
use crate::protocol::{
    BreakoutView, ChatMessage, ClientMessage, ServerMessage, BREAKOUT_CLOSE_SECONDS,
    MAX_BREAKOUT_CLOSE_SECONDS, MAX_BREAKOUT_MINUTES, MAX_BREAKOUT_NAME_CHARS, MAX_BREAKOUT_ROOMS,
    MAX_CHAT_CHARS,
};
use crate::Millis;

/// Most assignments a plan holds (people who left stay assigned, in case they come back).
const MAX_ASSIGNED: usize = 1_000;

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
            BreakoutError::NoSuchRoom => ErrorCode::NotFound,
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
            ClientMessage::OpenBreakouts { minutes } => self.open_breakouts(now, id, minutes),
            ClientMessage::CloseBreakouts { seconds } => self.close_breakouts(now, id, seconds),
            ClientMessage::JoinBreakout { room } => self.join_breakout(id, room),
            ClientMessage::BreakoutMessage { text } => self.breakout_message(id, text),
            _ => Ok(Vec::new()),
        };
        done.unwrap_or_else(|e| error_to(conn, e.code(), e.to_string()))
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
        b.closing_at.or(b.ends_at)
    }

    /// The timer ran out (the countdown starts) or the countdown did (everyone comes back).
    pub(super) fn breakout_timeout(&mut self, now: Millis) -> Vec<Output> {
        let b = &mut self.meta.breakouts;
        if !b.open {
            return Vec::new();
        }
        match (b.closing_at, b.ends_at) {
            (Some(at), _) if now >= at => self.close_now(),
            (None, Some(at)) if now >= at => {
                b.ends_at = None;
                b.closing_at = Some(now + BREAKOUT_CLOSE_SECONDS as Millis * 1000);
                self.dirty.meta = true;
                vec![self.breakouts_changed()]
            }
            _ => Vec::new(),
        }
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
        for (m, scope) in moves {
            out.extend(self.move_to(&m, scope));
        }
        Ok(out)
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
        for (m, scope) in moves {
            out.extend(self.move_to(&m, scope));
        }
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

    /// Everyone back in the main room; the plan stays for opening again.
    fn close_now(&mut self) -> Vec<Output> {
        let b = &mut self.meta.breakouts;
        b.open = false;
        b.ends_at = None;
        b.closing_at = None;
        self.dirty.meta = true;
        let mut out = vec![self.breakouts_changed()];
        let away: Vec<String> = self
            .members
            .values()
            .filter(|m| m.info.scope != 0)
            .map(|m| m.info.id.clone())
            .collect();
        for m in away {
            out.extend(self.move_to(&m, 0));
        }
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
        // Anyone may go back to the main room; a room of one's choice only if hosts allow it.
        if room != 0 && !b.let_choose && !self.is_moderator(id) {
            return Err(BreakoutError::MayNotChoose);
        }
        Ok(self.move_to(id, room))
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
        Ok(vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::BreakoutBroadcast {
                from: self.name_of(id),
                text,
            },
        }])
    }

    /// Member `id` moves to `scope`: everyone learns where they are, they get that scope's chat
    /// and speaker, and the SFU forwards them that scope's media (a new offer follows).
    pub(super) fn move_to(&mut self, id: &str, scope: u32) -> Vec<Output> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if m.info.scope == scope {
            return Vec::new();
        }
        m.info.scope = scope;
        self.dirty.members.insert(id.to_string());
        let mut out = vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantMoved {
                id: id.to_string(),
                scope,
            },
        }];
        out.extend(self.to_member(
            id,
            ServerMessage::Moved {
                scope,
                chat: self.chat_for(id),
                speaker: self.meta.speakers.get(&scope).cloned(),
            },
        ));
        // (Whatever the SFU's health: a session it has follows now, and one set up later is
        // told its scope with its offer.)
        out.extend(self.call_sfu(id.to_string(), SfuCall::Scope { scope }));
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
