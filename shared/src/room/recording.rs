//! Recording, decided here: hosts and co-hosts start and stop it (the core checks the role), the
//! room tells everyone (an indicator for as long as it runs, a notice in the chat, and joiners
//! learn it before they are in), and the room's SFU learns it as whole state with a rising
//! version — sent again after a failed call, after an eviction, and to the SFU the room moves to
//! (a failover records on as a new segment there).
//!
//! A recording's id is 128 random bits the shell makes ([`Output::MintRecordingId`] →
//! [`Input::RecordingMinted`]): it names the files in R2, so it must not be guessable. The
//! recording ends when a host stops it, when the meeting ends, and when the last person leaves.
//!
//! [`Input::RecordingMinted`]: super::Input::RecordingMinted

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::breakout::ScopeSync;
use super::{error_to, ConnId, Output, Room, SfuCall};
use crate::error::ErrorCode;
use crate::protocol::{ChatMessage, RecordingView, ServerMessage};
use crate::Millis;

/// The room's recording state (part of the stored meta row).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(super) struct RecordingState {
    /// The recording running now.
    #[serde(default)]
    current: Option<Current>,
    /// A start waiting for its id: who asked, and when (an id that never comes is given up on
    /// after [`MINT_WAIT_MS`], so a later click works).
    #[serde(default)]
    pending: Option<(String, Millis)>,
    /// The SFU's copy: the version of the latest state, the latest it took, when to retry.
    #[serde(default)]
    pub(super) sync: ScopeSync,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Current {
    id: String,
    started_at: Millis,
    /// Who started it: their name, participant id and browser identity.
    by: String,
    by_id: String,
    #[serde(default)]
    by_bid: Option<String>,
    /// Everyone who was in the meeting while it recorded (participant id → name), at most
    /// [`MAX_NAMES`].
    #[serde(default)]
    names: BTreeMap<String, String>,
}

/// How long a start waits for its id.
pub const MINT_WAIT_MS: Millis = 10_000;
/// How long a room everyone left goes on telling an unreachable SFU that its recording stopped:
/// the SFU keeps a gone room's recording for its next arrival only this long (its
/// `RECORD_KEPT_FOR`), so later calls would change nothing there.
pub const EMPTY_RECORD_RETRY_MS: Millis = 60_000;

/// The most names a recording keeps.
pub const MAX_NAMES: usize = 2_000;

/// What a recording action was refused for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordingError {
    #[error("Only the host, and co-hosts if the host allows it, can start or stop a recording.")]
    Forbidden,
    #[error("A recording id is 1 to 64 letters, digits, - or _.")]
    BadId,
}

impl RecordingError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RecordingError::Forbidden => ErrorCode::Forbidden,
            RecordingError::BadId => ErrorCode::BadRequest,
        }
    }
}

/// What the shell writes down about a recording (D1: who may watch it, when it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingRow {
    pub id: String,
    pub room: String,
    /// The scheduled meeting it belongs to (its owner and co-hosts may watch it too).
    pub meeting: Option<String>,
    pub started_at: Millis,
    pub by: String,
    /// The browser that started it (its identity cookie): it may watch it.
    pub by_bid: Option<String>,
}

impl Room {
    /// Whether the room is being recorded now, and since when by whom.
    pub fn recording(&self) -> Option<RecordingView> {
        self.meta.recording.current.as_ref().map(|c| RecordingView {
            started_at: c.started_at,
            by: c.by.clone(),
        })
    }

    fn row_of(&self, c: &Current) -> RecordingRow {
        RecordingRow {
            id: c.id.clone(),
            room: self.meta.name.clone(),
            meeting: self.meta.scheduled.as_ref().map(|s| s.meeting.clone()),
            started_at: c.started_at,
            by: c.by.clone(),
            by_bid: c.by_bid.clone(),
        }
    }

    /// Someone joined: if a recording runs, it names them.
    pub(super) fn recording_named(&mut self, id: &str, name: &str) {
        if let Some(c) = self.meta.recording.current.as_mut() {
            if c.names.len() < MAX_NAMES || c.names.contains_key(id) {
                c.names.insert(id.to_string(), name.to_string());
                self.dirty.meta = true;
            }
        }
    }

    /// `ClientMessage::SetRecording` from member `id`.
    pub(super) fn set_recording(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: &str,
        on: bool,
    ) -> Vec<Output> {
        if !self.may_record(id) {
            let e = RecordingError::Forbidden;
            return error_to(conn, e.code(), e.to_string());
        }
        match (on, self.meta.recording.current.is_some()) {
            (true, true) | (false, false) => {
                // Already so (a second host's click crossed the first's): nothing changes; the
                // asker gets the state again (their page may have missed it). A start still
                // waiting for its id is called off (stored: the room rebuilds from its rows).
                if self.meta.recording.pending.take().is_some() {
                    self.dirty.meta = true;
                }
                vec![Output::Send {
                    conn,
                    msg: ServerMessage::Recording {
                        recording: self.recording(),
                    },
                }]
            }
            (true, false) => {
                let first = self
                    .meta
                    .recording
                    .pending
                    .as_ref()
                    .is_none_or(|(_, at)| now >= at + MINT_WAIT_MS);
                if !first {
                    return Vec::new(); // one id is on its way already
                }
                self.meta.recording.pending = Some((id.to_string(), now));
                self.dirty.meta = true;
                vec![Output::MintRecordingId]
            }
            (false, true) => {
                let name = self.members.get(id).map(|m| m.info.name.clone());
                self.stop_recording(now, name)
            }
        }
    }

    /// The shell made the id of the recording asked for: it starts (if its asker may still).
    pub(super) fn recording_minted(&mut self, now: Millis, rec_id: String) -> Vec<Output> {
        let Some((asker, _)) = self.meta.recording.pending.take() else {
            return Vec::new();
        };
        self.dirty.meta = true;
        if self.meta.recording.current.is_some() || !self.may_record(&asker) {
            return Vec::new();
        }
        if !crate::protocol::valid_recording_id(&rec_id) {
            return vec![Output::Warn(RecordingError::BadId.to_string())];
        }
        let Some(m) = self.members.get(&asker) else {
            return Vec::new();
        };
        let current = Current {
            id: rec_id.clone(),
            started_at: now,
            by: m.info.name.clone(),
            by_id: asker.clone(),
            by_bid: m.claims.bid.clone(),
            names: self
                .members
                .values()
                .take(MAX_NAMES)
                .map(|m| (m.info.id.clone(), m.info.name.clone()))
                .collect(),
        };
        let row = self.row_of(&current);
        let notice = format!("{} started recording the meeting.", current.by);
        self.meta.recording.current = Some(current);
        let mut out = vec![Output::RecordingStarted(row)];
        out.extend(self.recording_changed(now, notice));
        out
    }

    /// The recording stops (`by`: who stopped it; `None`: the meeting ended or emptied).
    pub(super) fn stop_recording(&mut self, now: Millis, by: Option<String>) -> Vec<Output> {
        if self.meta.recording.pending.take().is_some() {
            self.dirty.meta = true;
        }
        let Some(c) = self.meta.recording.current.take() else {
            return Vec::new();
        };
        self.dirty.meta = true;
        let notice = match by {
            Some(name) => format!("{name} stopped the recording."),
            None => "The recording stopped.".to_string(),
        };
        let mut out = vec![Output::RecordingStopped {
            row: self.row_of(&c),
            ended_at: now,
            names: c.names,
        }];
        out.extend(self.recording_changed(now, notice));
        out
    }

    /// Everyone sees the new state and a notice in the chat; the SFU gets a new version.
    fn recording_changed(&mut self, now: Millis, notice: String) -> Vec<Output> {
        let mut out = vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::Recording {
                recording: self.recording(),
            },
        }];
        if !self.members.is_empty() {
            let message = self.post_notice(now, notice);
            out.push(Output::Broadcast {
                except: None,
                msg: ServerMessage::ChatMessage { message },
            });
        }
        self.meta.recording.sync.bump();
        self.dirty.meta = true;
        out.extend(self.record_call());
        out
    }

    /// A notice from the meeting itself in the chat (everyone's, whatever room they are in).
    fn post_notice(&mut self, now: Millis, text: String) -> ChatMessage {
        let message = ChatMessage {
            id: self.meta.chat_next,
            from: String::new(),
            name: String::new(),
            to: None,
            text,
            at: now,
            client_id: format!("notice-{}", self.meta.chat_next),
            scope: 0,
            notice: true,
        };
        self.meta.chat_next += 1;
        self.chat.push_back(message.clone());
        self.dirty.chat.insert(message.id);
        while self.chat.len() > crate::protocol::CHAT_HISTORY {
            if let Some(old) = self.chat.pop_front() {
                self.dirty.chat.insert(old.id);
            }
        }
        message
    }

    /// The recording state, to the SFU, as it is now (this version).
    pub(super) fn record_call(&self) -> Vec<Output> {
        self.call_sfu(
            String::new(),
            SfuCall::Record {
                version: self.meta.recording.sync.version(),
                recording: self.meta.recording.current.as_ref().map(|c| c.id.clone()),
            },
        )
    }

    /// A failed recording call's retry is due. In a room nobody is in (everyone left, or the
    /// meeting ended), only for [`EMPTY_RECORD_RETRY_MS`] after the first failure: the SFU
    /// forgets a gone room's recording by then, and an SFU that stays unreachable would
    /// otherwise be called every second for as long as the room stays empty.
    pub(super) fn record_retry(&mut self, now: Millis) -> Vec<Output> {
        match self.meta.recording.sync.retry_at() {
            Some(at)
                if now >= at
                    && self.members.is_empty()
                    && self
                        .meta
                        .recording
                        .sync
                        .failing_since()
                        .is_some_and(|f| now >= f + EMPTY_RECORD_RETRY_MS) =>
            {
                self.meta.recording.sync.settle();
                self.dirty.meta = true;
                Vec::new()
            }
            Some(at) if now >= at => {
                self.meta.recording.sync.clear_retry();
                self.dirty.meta = true;
                self.record_call()
            }
            _ => Vec::new(),
        }
    }

    /// The latest state again if the SFU has not taken it (after an eviction).
    pub(super) fn record_unsent(&self) -> Vec<Output> {
        if self.meta.recording.sync.unacked() {
            self.record_call()
        } else {
            Vec::new()
        }
    }

    /// The room's media moved to another SFU: it records from now on (a new segment).
    pub(super) fn record_moved(&mut self) -> Vec<Output> {
        if self.meta.recording.current.is_none() {
            return Vec::new();
        }
        self.meta.recording.sync.bump();
        self.dirty.meta = true;
        self.record_call()
    }

    pub(super) fn record_retry_at(&self) -> Option<Millis> {
        self.meta.recording.sync.retry_at()
    }
}
