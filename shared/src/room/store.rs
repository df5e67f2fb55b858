//! What the room persists, and how it comes back.
//!
//! The room is five kinds of rows: its own (settings, host, SFU and its health), one per member
//! (including an SFU offer held for a member who is away, and their token's lifetime), one per
//! revoked token, one per chat message, one per poll. Every change marks what it touched; after each input the core hands the shell
//! exactly those rows ([`Changes`]: JSON to upsert, or a delete), and [`Room::restore`] rebuilds the
//! room from whatever rows are stored. The shell never decides what to save.

use std::collections::BTreeMap;

use thiserror::Error;

use super::{IdSet, Member, Meta, Room};

/// Rows touched since the last [`Changes`].
#[derive(Debug, Clone, Default)]
pub(super) struct Dirty {
    pub meta: bool,
    pub members: IdSet,
    pub revoked: IdSet,
    pub chat: std::collections::BTreeSet<u64>,
    pub polls: std::collections::BTreeSet<u64>,
    pub report: std::collections::BTreeSet<u64>,
}

/// Rows to write after one input. JSON values are opaque to the shell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// The room's own row, if it changed.
    pub meta: Option<String>,
    /// Member rows: `Some(json)` to write, `None` to delete (they left).
    pub members: Vec<(String, Option<String>)>,
    /// Revoked token ids: `Some(until_secs)` to write, `None` to delete (expired).
    pub revoked: Vec<(String, Option<u64>)>,
    /// Chat rows by number: `Some(json)` to write, `None` to delete (deleted or too old).
    pub chat: Vec<(u64, Option<String>)>,
    /// Poll rows by number: `Some(json)` to write, `None` to delete (the meeting ended).
    pub polls: Vec<(u64, Option<String>)>,
    /// Report rows waiting for D1, by number: `Some(json)` to write, `None` to delete (written, or
    /// superseded). Read back with [`Room::restore_report_outbox`].
    pub report: Vec<(u64, Option<String>)>,
}

#[derive(Debug, Error, PartialEq)]
pub enum RestoreError {
    #[error("stored room row is unreadable: {0}")]
    Meta(String),
    #[error("stored member row {id} is unreadable: {error}")]
    Member { id: String, error: String },
    #[error("a stored chat row is unreadable: {0}")]
    Chat(String),
    #[error("a stored poll row is unreadable: {0}")]
    Poll(String),
    #[error("a stored report row is unreadable: {0}")]
    Report(String),
}

impl Room {
    /// The rows changed since the last call, if any.
    pub(super) fn take_changes(&mut self) -> Option<Changes> {
        let dirty = std::mem::take(&mut self.dirty);
        if !dirty.meta
            && dirty.members.is_empty()
            && dirty.revoked.is_empty()
            && dirty.chat.is_empty()
            && dirty.polls.is_empty()
            && dirty.report.is_empty()
        {
            return None;
        }
        let meta = dirty
            .meta
            .then(|| serde_json::to_string(&self.meta).expect("room row serialises"));
        let members = dirty
            .members
            .into_iter()
            .map(|id| {
                let row = self
                    .members
                    .get(&id)
                    .map(|m| serde_json::to_string(m).expect("member row serialises"));
                (id, row)
            })
            .collect();
        let revoked = dirty
            .revoked
            .into_iter()
            .map(|id| {
                let until = self.revoked.get(&id).copied();
                (id, until)
            })
            .collect();
        let chat = dirty
            .chat
            .into_iter()
            .map(|n| {
                let row = self
                    .chat
                    .iter()
                    .find(|m| m.id == n)
                    .map(|m| serde_json::to_string(m).expect("chat row serialises"));
                (n, row)
            })
            .collect();
        let polls = dirty
            .polls
            .into_iter()
            .map(|n| {
                let row = self
                    .polls
                    .iter()
                    .find(|p| p.id == n)
                    .map(|p| serde_json::to_string(p).expect("poll row serialises"));
                (n, row)
            })
            .collect();
        let report = dirty
            .report
            .into_iter()
            .map(|n| {
                let row = self
                    .outbox
                    .rows
                    .get(&n)
                    .map(|r| serde_json::to_string(r).expect("report row serialises"));
                (n, row)
            })
            .collect();
        Some(Changes {
            meta,
            members,
            revoked,
            chat,
            polls,
            report,
        })
    }

    /// Rebuilds a room from its stored rows (`meta`: the room's own row, absent for a room never
    /// stored). Unreadable member rows are errors the shell logs; the rest of the room comes back.
    pub fn restore<'a>(
        name: &str,
        meta: Option<&str>,
        members: impl IntoIterator<Item = (&'a str, &'a str)>,
        revoked: impl IntoIterator<Item = (&'a str, u64)>,
        chat: impl IntoIterator<Item = &'a str>,
        polls: impl IntoIterator<Item = &'a str>,
    ) -> (Room, Vec<RestoreError>) {
        let mut errors = Vec::new();
        let mut rows = BTreeMap::new();
        for (id, json) in members {
            match serde_json::from_str::<Member>(json) {
                Ok(m) => {
                    rows.insert(id.to_string(), m);
                }
                Err(e) => errors.push(RestoreError::Member {
                    id: id.to_string(),
                    error: e.to_string(),
                }),
            }
        }
        // The shell may not know the room's name (an alarm): the members' tokens say it.
        let name = match name {
            "" => rows
                .values()
                .next()
                .map(|m| m.claims.room.clone())
                .unwrap_or_default(),
            n => n.to_string(),
        };
        let mut room = Room::new(name);
        if let Some(json) = meta {
            match serde_json::from_str::<Meta>(json) {
                Ok(m) => room.meta = m,
                Err(e) => {
                    // Start the row afresh (written back below, if the room's name is known);
                    // members keep their places. Its bans and password are lost with it, so the
                    // door shuts: locked, with the waiting room on, until a host opens it.
                    errors.push(RestoreError::Meta(e.to_string()));
                    room.meta.settings.locked = true;
                    room.meta.settings.waiting_room = true;
                    room.meta.door = 1;
                    room.dirty.meta = !room.meta.name.is_empty();
                }
            }
        }
        room.members = rows;
        room.revoked = revoked
            .into_iter()
            .map(|(id, until)| (id.to_string(), until))
            .collect();
        let mut messages: Vec<crate::protocol::ChatMessage> = chat
            .into_iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(m) => Some(m),
                Err(e) => {
                    errors.push(RestoreError::Chat(e.to_string()));
                    None
                }
            })
            .collect();
        messages.sort_by_key(|m| m.id);
        room.chat = messages.into();
        let mut polls: Vec<super::polls::Poll> = polls
            .into_iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(RestoreError::Poll(e.to_string()));
                    None
                }
            })
            .collect();
        polls.sort_by_key(|p| p.id);
        for p in &mut polls {
            p.repair();
        }
        // A poll's number is never given twice (a room row older than its polls).
        if let Some(last) = polls.last() {
            if room.meta.poll_next <= last.id {
                room.meta.poll_next = last.id + 1;
            }
        }
        room.polls = polls;
        // A host who is no longer stored (an unreadable row, or the room row itself) hands over
        // like one who left. (A scheduled meeting may be without a host: until its owner comes.)
        let hostless = room
            .meta
            .host
            .as_ref()
            .is_none_or(|h| !room.members.contains_key(h));
        let may_be_hostless = room.meta.scheduled.is_some() && room.meta.host.is_none();
        if hostless && !may_be_hostless && !room.members.is_empty() {
            // (In a scheduled meeting: its owner or a co-host, else nobody.)
            room.meta.host = room.successor();
            if let Some(m) = room
                .meta
                .host
                .clone()
                .and_then(|h| room.members.get_mut(&h))
            {
                m.info.role = crate::token::Role::Host;
                if room.meta.scheduled.is_none() {
                    room.meta.host_bid = m.claims.bid.clone();
                }
                room.dirty.members.insert(m.info.id.clone());
            }
            room.dirty.meta = !room.meta.name.is_empty();
        }
        (room, errors)
    }
}
