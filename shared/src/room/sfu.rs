//! The room's SFU and its health: which SFU carries the room's media, whether it still does, and
//! moving the room when it does not.
//!
//! ```text
//!            member reports media stopped (not within SETTLE_MS of a move)
//!            or a control call cannot reach the SFU
//!   Steady ───────────────────────────────────────────▶ Probing ──(no answer in PROBE_LOST_MS)──▶ probe again
//!     ▲  ▲                                              │  │  │
//!     │  └──────────── carries the room ────────────────┘  │  │ knows nothing of the room (restarted):
//!     │                                                    │  └─▶ Steady, everyone sets media up again
//!     │          gone (no answer, error) or draining       ▼
//!     │      ┌────────────────────────────────────────▶ Replacing ──(none found / answer lost)──▶ ask again
//!     │      │ drain notice for the current SFU:           │
//!     │      │ always, whatever the phase or settle time   │ a replacement not known bad
//!     └──────┴─────────────────────────────────────────────┘ → Steady on it, everyone moves
//! ```
//!
//! Every SFU the room found gone or draining is remembered for [`BAD_FORGET_MS`] and never chosen
//! again meanwhile; one that failed a call or a probe is also reported to the registry
//! ([`Output::SfuDown`]) so no new room lands there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Output, SfuCall};
use crate::region::SfuChoice;
use crate::Millis;

/// A probe whose answer has not come back by then is sent again (the object may have been evicted
/// while waiting).
pub const PROBE_LOST_MS: Millis = 5_000;
/// No SFU could take the room: ask again after this long (for as long as anyone is in the room).
pub const FIND_RETRY_MS: Millis = 2_000;
/// A search whose answer has not come back by then is started again.
pub const FIND_LOST_MS: Millis = 5_000;
/// After a move (or an SFU restart), reports of stopped media from members are from their old
/// connections for this long: they do not start a check of the new SFU.
pub const SETTLE_MS: Millis = 5_000;
/// How long an SFU the room found gone or draining is kept out of its choices.
pub const BAD_FORGET_MS: Millis = 10_000;
/// An SFU chosen for an empty room is kept this long for the joiner who asked to connect.
pub const ASSIGN_HOLD_MS: Millis = 60_000;

/// How a call to an SFU went, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpReply {
    /// It answered with this status and body.
    Answered { status: u16, body: String },
    /// It could not be reached (connection refused, no answer in time, …).
    Unreachable { reason: String },
}

/// Which [`SfuCall`] a reply is for (without its body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuCallKind {
    /// `block`: what the new session was told not to forward.
    Offer {
        id: u64,
        block: crate::protocol::BlockBody,
        /// The scope it was sent with.
        scope: u32,
    },
    Answer,
    Leave,
    Views,
    Block,
    Scopes {
        version: u64,
    },
    Record {
        version: u64,
    },
}

impl SfuCall {
    pub fn kind(&self) -> SfuCallKind {
        match self {
            SfuCall::Offer {
                id, block, scope, ..
            } => SfuCallKind::Offer {
                id: *id,
                block: *block,
                scope: *scope,
            },
            SfuCall::Answer { .. } => SfuCallKind::Answer,
            SfuCall::Leave => SfuCallKind::Leave,
            SfuCall::Views { .. } => SfuCallKind::Views,
            SfuCall::Block { .. } => SfuCallKind::Block,
            SfuCall::Scopes { version, .. } => SfuCallKind::Scopes { version: *version },
            SfuCall::Record { version, .. } => SfuCallKind::Record { version: *version },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
enum Phase {
    #[default]
    Steady,
    /// Asking the SFU whether it still carries the room.
    Probing { since: Millis },
    /// The SFU `failed` is gone or `draining`: looking for another; ask (again) at `retry_at`.
    Replacing {
        failed: String,
        retry_at: Millis,
        #[serde(default)]
        draining: bool,
    },
}

/// The room's SFU state (persisted with the room's own row).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(super) struct Media {
    current: Option<SfuChoice>,
    /// When `current` was chosen or moved to.
    #[serde(default)]
    since: Millis,
    #[serde(default)]
    phase: Phase,
    /// Member reports from before this time come from connections of before the last move.
    #[serde(default)]
    settle_until: Millis,
    /// SFUs found gone or draining, and when.
    #[serde(default)]
    bad: BTreeMap<String, Millis>,
}

/// What the room must do after a probe or a search came back.
pub(super) enum Verdict {
    Outputs(Vec<Output>),
    /// The room's media is now on `sfu` (another one, or the same one restarted): everyone sets
    /// media up again there. `left`: the draining SFU it left, still up, whose sessions for this
    /// room can be ended at once (so it stops sooner and stops renegotiating them).
    Moved {
        out: Vec<Output>,
        sfu: String,
        reason: String,
        left: Option<SfuChoice>,
    },
}

impl Media {
    pub fn current(&self) -> Option<&SfuChoice> {
        self.current.as_ref()
    }

    /// Neither probing nor replacing.
    pub fn steady(&self) -> bool {
        self.phase == Phase::Steady
    }

    /// Looking for another SFU (the current one is gone or draining).
    pub fn replacing(&self) -> bool {
        matches!(self.phase, Phase::Replacing { .. })
    }

    /// When a probe or a search is overdue.
    pub fn deadline(&self, occupied: bool) -> Option<Millis> {
        if !occupied {
            return None;
        }
        match &self.phase {
            Phase::Steady => None,
            Phase::Probing { since } => Some(since + PROBE_LOST_MS),
            Phase::Replacing { retry_at, .. } => Some(*retry_at),
        }
    }

    fn is_bad(&self, id: &str) -> bool {
        self.bad.contains_key(id)
    }

    pub fn keep_for_join(&self, now: Millis, occupied: bool) -> Option<&SfuChoice> {
        let c = self.current.as_ref()?;
        if occupied {
            // Everyone in a room shares its SFU; if it is failing, the move takes the joiner along.
            return Some(c);
        }
        (now < self.since + ASSIGN_HOLD_MS && !self.is_bad(&c.id)).then_some(c)
    }

    /// Takes the registry's choice for a first joiner, unless the room has kept one meanwhile.
    pub fn choose(&mut self, now: Millis, choice: SfuChoice, occupied: bool) -> bool {
        if self.keep_for_join(now, occupied).is_some() {
            return false;
        }
        self.current = Some(choice);
        self.since = now;
        self.phase = Phase::Steady;
        self.settle_until = 0;
        true
    }

    fn probe(&mut self, now: Millis) -> Vec<Output> {
        let Some(c) = self.current.clone() else {
            return Vec::new();
        };
        self.phase = Phase::Probing { since: now };
        vec![Output::ProbeSfu { sfu: c }]
    }

    fn start_replacing(&mut self, now: Millis, failed: &str, draining: bool) -> Vec<Output> {
        self.phase = Phase::Replacing {
            failed: failed.to_string(),
            retry_at: now + FIND_LOST_MS,
            draining,
        };
        vec![self.find(failed)]
    }

    fn find(&self, failed: &str) -> Output {
        let mut exclude: Vec<String> = self.bad.keys().cloned().collect();
        if !exclude.iter().any(|b| b == failed) {
            exclude.push(failed.to_string());
        }
        Output::FindSfu {
            failed: failed.to_string(),
            exclude,
        }
    }

    /// A member's media stopped: check the SFU, unless a check or a move is under way or the room
    /// only just moved (the report is from the old connection).
    pub fn reported(&mut self, now: Millis, occupied: bool) -> Vec<Output> {
        if !occupied || !self.steady() || now < self.settle_until {
            return Vec::new();
        }
        self.probe(now)
    }

    /// A control call could not reach the room's SFU: check it now (settle time or not — this is
    /// the new SFU's own failure, not an old connection's).
    pub fn unreachable(&mut self, now: Millis, occupied: bool) -> Vec<Output> {
        if !occupied || !self.steady() {
            return Vec::new();
        }
        self.probe(now)
    }

    /// SFU `sfu` is draining: if it carries the room, the room moves, whatever else is going on.
    pub fn draining(&mut self, now: Millis, sfu: &str, occupied: bool) -> Vec<Output> {
        self.bad.insert(sfu.to_string(), now);
        let ours = self.current.as_ref().is_some_and(|c| c.id == sfu);
        if !ours || !occupied || matches!(self.phase, Phase::Replacing { .. }) {
            return Vec::new();
        }
        self.start_replacing(now, sfu, true)
    }

    pub fn probed(&mut self, now: Millis, sfu: &str, reply: super::HttpReply) -> Verdict {
        let ours = self.current.as_ref().is_some_and(|c| c.id == sfu);
        if !ours || !matches!(self.phase, Phase::Probing { .. }) {
            return Verdict::Outputs(Vec::new()); // an answer about an SFU the room has left
        }
        let failure = match reply {
            HttpReply::Answered { status: 200, body } => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if v["draining"] == serde_json::Value::Bool(true) {
                    self.bad.insert(sfu.to_string(), now);
                    return Verdict::Outputs(self.start_replacing(now, sfu, true));
                }
                if v["known"] == serde_json::Value::Bool(false) {
                    self.phase = Phase::Steady;
                    self.settle_until = now + SETTLE_MS;
                    return Verdict::Moved {
                        out: vec![Output::Warn(format!(
                            "SFU {sfu} no longer has this room (it restarted): media is set up again"
                        ))],
                        sfu: sfu.to_string(),
                        reason: "the media server restarted".into(),
                        left: None,
                    };
                }
                self.phase = Phase::Steady;
                return Verdict::Outputs(Vec::new());
            }
            HttpReply::Answered { status, .. } => format!("answered {status}"),
            HttpReply::Unreachable { reason } => reason,
        };
        self.bad.insert(sfu.to_string(), now);
        let mut out = vec![Output::SfuDown {
            sfu: sfu.to_string(),
            reason: failure,
        }];
        out.extend(self.start_replacing(now, sfu, false));
        Verdict::Outputs(out)
    }

    pub fn found(&mut self, now: Millis, result: Result<SfuChoice, String>) -> Verdict {
        let Phase::Replacing {
            failed, draining, ..
        } = &self.phase
        else {
            return Verdict::Outputs(Vec::new()); // a late answer: the room has moved already
        };
        let (failed, draining) = (failed.clone(), *draining);
        match result {
            Ok(choice) if !self.is_bad(&choice.id) && choice.id != failed => {
                let sfu = choice.id.clone();
                let reason = choice.reason.clone();
                let left = if draining { self.current.clone() } else { None };
                self.current = Some(choice);
                self.since = now;
                self.phase = Phase::Steady;
                self.settle_until = now + SETTLE_MS;
                Verdict::Moved {
                    out: vec![Output::Warn(format!(
                        "media moves from {failed} to {sfu} ({reason})"
                    ))],
                    sfu,
                    reason,
                    left,
                }
            }
            Ok(choice) => {
                self.phase = Phase::Replacing {
                    failed,
                    retry_at: now + FIND_RETRY_MS,
                    draining,
                };
                Verdict::Outputs(vec![Output::Warn(format!(
                    "the registry offered {}, which this room found gone or draining; asking again",
                    choice.id
                ))])
            }
            Err(e) => {
                self.phase = Phase::Replacing {
                    failed: failed.clone(),
                    retry_at: now + FIND_RETRY_MS,
                    draining,
                };
                Verdict::Outputs(vec![Output::Warn(format!(
                    "no SFU can take over from {failed} yet ({e}); asking again in {FIND_RETRY_MS} ms"
                ))])
            }
        }
    }

    /// Overdue probes and searches start again; returns whether anything changed.
    pub fn timeout(&mut self, now: Millis, occupied: bool) -> (Vec<Output>, bool) {
        let before = self.bad.len();
        self.bad.retain(|_, since| now < *since + BAD_FORGET_MS);
        let mut changed = self.bad.len() != before;
        if !occupied {
            if !self.steady() {
                self.phase = Phase::Steady;
                changed = true;
            }
            return (Vec::new(), changed);
        }
        let out = match self.phase.clone() {
            Phase::Probing { since } if now >= since + PROBE_LOST_MS => self.probe(now),
            Phase::Replacing {
                failed,
                retry_at,
                draining,
            } if now >= retry_at => {
                self.phase = Phase::Replacing {
                    failed: failed.clone(),
                    retry_at: now + FIND_LOST_MS,
                    draining,
                };
                vec![self.find(&failed)]
            }
            _ => Vec::new(),
        };
        (out.clone(), changed || !out.is_empty())
    }

    /// The last member left: nothing to move any more.
    pub fn emptied(&mut self, _now: Millis) {
        self.phase = Phase::Steady;
    }
}
