//! Polls: hosts and co-hosts launch them, everyone votes once, hosts and co-hosts see the results
//! live, everyone sees them once a host shares them, and a host ends them. Ended polls stay (with
//! their results) for the rest of the meeting, for the meeting's report.
//!
//! "Once" is per browser (its identity cookie, or the participant id without one): leaving and
//! joining again, or a second tab, does not give a second vote. An anonymous poll keeps only who
//! voted and the counts, never who chose what: no view and no stored row pairs a voter with a
//! choice. What that does not hide (as in Jitsi): a host watching the live count move as one
//! person votes, or someone comparing successive versions of the stored row, can pair them.
//!
//! Each poll is one stored row; everything here is decided by the room core and authorised here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{error_to, ConnId, Member, Output, Room};
use crate::error::ErrorCode;
use crate::protocol::{
    ClientMessage, PollResults, PollView, ServerMessage, MAX_POLLS, MAX_POLL_BYTES,
    MAX_POLL_OPTIONS, MIN_POLL_OPTIONS,
};
use crate::Millis;

/// The most poll text a snapshot carries (newest polls first; older ones beyond it are left out).
const SNAPSHOT_POLL_BYTES: usize = 256 * 1024;

/// One poll as the room keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Poll {
    pub(super) id: u64,
    question: String,
    options: Vec<String>,
    multiple: bool,
    anonymous: bool,
    /// The name of who launched it.
    by: String,
    created_at: Millis,
    #[serde(default)]
    ended_at: Option<Millis>,
    #[serde(default)]
    shared: bool,
    /// Votes per option.
    counts: Vec<u32>,
    /// Who voted ([`voter`]): each once.
    voters: BTreeSet<String>,
    /// Named polls only: each voter's name and choices.
    #[serde(default)]
    ballots: BTreeMap<String, Ballot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ballot {
    name: String,
    choices: Vec<u32>,
}

/// What a poll action was refused for. Each has a wire code and words for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PollError {
    #[error("Only hosts and co-hosts can {0}.")]
    Forbidden(&'static str),
    #[error("Write a question.")]
    NoQuestion,
    #[error("A poll has {MIN_POLL_OPTIONS} to {MAX_POLL_OPTIONS} options.")]
    OptionCount,
    #[error("Every option needs some text.")]
    EmptyOption,
    #[error("Two options say the same: \"{0}\".")]
    SameOption(String),
    #[error("A poll's question and options are at most {MAX_POLL_BYTES} bytes together.")]
    TooLong,
    #[error("This meeting has {MAX_POLLS} polls, the most it can keep.")]
    TooMany,
    #[error("There is no such poll.")]
    NotFound,
    #[error("This poll has ended.")]
    Ended,
    #[error("You have already voted in this poll.")]
    AlreadyVoted,
    #[error("Choose one option.")]
    ChooseOne,
    #[error("Choose at least one option.")]
    ChooseSome,
    #[error("That option is not in the poll.")]
    NoSuchOption,
}

impl PollError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PollError::Forbidden(_) => ErrorCode::Forbidden,
            PollError::NotFound => ErrorCode::NotFound,
            PollError::AlreadyVoted => ErrorCode::AlreadyVoted,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// Who a vote counts for: the browser (its identity), or the participant without one.
fn voter(m: &Member) -> String {
    match &m.claims.bid {
        Some(b) => format!("b:{b}"),
        None => format!("p:{}", m.info.id),
    }
}

impl Poll {
    fn is_open(&self) -> bool {
        self.ended_at.is_none()
    }

    /// What the meeting's report keeps of it: the counts (never who chose what).
    pub(super) fn summary(&self) -> crate::report::PollSummary {
        crate::report::PollSummary {
            question: self.question.clone(),
            options: self.options.clone(),
            counts: self.counts.clone(),
            voters: self.voters.len() as u32,
            multiple: self.multiple,
            anonymous: self.anonymous,
            open: self.is_open(),
        }
    }

    /// A stored row whose counts do not match its options (damaged storage) gets one count per
    /// option, so nothing indexes past them.
    pub(super) fn repair(&mut self) {
        self.counts.resize(self.options.len(), 0);
    }
}

impl Room {
    /// A poll action from member `id` on `conn` (the frame already parsed).
    pub(super) fn poll_action(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: &str,
        msg: ClientMessage,
    ) -> Vec<Output> {
        let done = match msg {
            ClientMessage::CreatePoll {
                question,
                options,
                multiple,
                anonymous,
            } => self.create_poll(now, id, question, options, multiple, anonymous),
            ClientMessage::Vote { poll, choices } => self.vote(id, poll, choices),
            ClientMessage::SharePollResults { poll } => self.share_poll(id, poll),
            ClientMessage::EndPoll { poll } => self.end_poll(now, id, poll),
            _ => Ok(Vec::new()),
        };
        done.unwrap_or_else(|e| error_to(conn, e.code(), e.to_string()))
    }

    fn create_poll(
        &mut self,
        now: Millis,
        id: &str,
        question: String,
        options: Vec<String>,
        multiple: bool,
        anonymous: bool,
    ) -> Result<Vec<Output>, PollError> {
        if !self.is_moderator(id) {
            return Err(PollError::Forbidden("launch a poll"));
        }
        let question = question.trim().to_string();
        if question.is_empty() {
            return Err(PollError::NoQuestion);
        }
        if !(MIN_POLL_OPTIONS..=MAX_POLL_OPTIONS).contains(&options.len()) {
            return Err(PollError::OptionCount);
        }
        let options: Vec<String> = options.iter().map(|o| o.trim().to_string()).collect();
        if options.iter().any(String::is_empty) {
            return Err(PollError::EmptyOption);
        }
        if question.len() + options.iter().map(String::len).sum::<usize>() > MAX_POLL_BYTES {
            return Err(PollError::TooLong);
        }
        for (i, o) in options.iter().enumerate() {
            if options[..i]
                .iter()
                .any(|p| p.to_lowercase() == o.to_lowercase())
            {
                return Err(PollError::SameOption(o.clone()));
            }
        }
        if self.polls.len() >= MAX_POLLS {
            return Err(PollError::TooMany);
        }
        let poll = Poll {
            id: self.meta.poll_next.max(1),
            counts: vec![0; options.len()],
            question,
            options,
            multiple,
            anonymous,
            by: self.name_of(id),
            created_at: now,
            ended_at: None,
            shared: false,
            voters: BTreeSet::new(),
            ballots: BTreeMap::new(),
        };
        self.meta.poll_next = poll.id + 1;
        self.dirty.meta = true;
        self.dirty.polls.insert(poll.id);
        let n = poll.id;
        self.polls.push(poll);
        Ok(self.poll_to(n, |_, _| true))
    }

    fn vote(&mut self, id: &str, n: u64, mut choices: Vec<u32>) -> Result<Vec<Output>, PollError> {
        let Some(m) = self.members.get(id) else {
            return Ok(Vec::new());
        };
        let (key, name) = (voter(m), m.info.name.clone());
        let poll = self
            .polls
            .iter_mut()
            .find(|p| p.id == n)
            .ok_or(PollError::NotFound)?;
        if !poll.is_open() {
            return Err(PollError::Ended);
        }
        if poll.voters.contains(&key) {
            return Err(PollError::AlreadyVoted);
        }
        choices.sort_unstable();
        choices.dedup();
        match (choices.len(), poll.multiple) {
            (0, false) => return Err(PollError::ChooseOne),
            (0, true) => return Err(PollError::ChooseSome),
            (2.., false) => return Err(PollError::ChooseOne),
            _ => {}
        }
        if choices.iter().any(|&c| c as usize >= poll.options.len()) {
            return Err(PollError::NoSuchOption);
        }
        for &c in &choices {
            if let Some(n) = poll.counts.get_mut(c as usize) {
                *n += 1;
            }
        }
        poll.voters.insert(key.clone());
        if !poll.anonymous {
            poll.ballots.insert(key.clone(), Ballot { name, choices });
        }
        self.dirty.polls.insert(n);
        // The voter's pages (their voted mark) and whoever sees the results.
        Ok(self.poll_to(n, |room, m| {
            voter(m) == key || room.sees_results(&m.info.id, n)
        }))
    }

    fn share_poll(&mut self, id: &str, n: u64) -> Result<Vec<Output>, PollError> {
        if !self.is_moderator(id) {
            return Err(PollError::Forbidden("share a poll's results"));
        }
        let poll = self.poll_mut(n)?;
        if poll.shared {
            return Ok(Vec::new());
        }
        poll.shared = true;
        self.dirty.polls.insert(n);
        Ok(self.poll_to(n, |_, _| true))
    }

    fn end_poll(&mut self, now: Millis, id: &str, n: u64) -> Result<Vec<Output>, PollError> {
        if !self.is_moderator(id) {
            return Err(PollError::Forbidden("end a poll"));
        }
        let poll = self.poll_mut(n)?;
        if !poll.is_open() {
            return Ok(Vec::new());
        }
        poll.ended_at = Some(now);
        self.dirty.polls.insert(n);
        // Its results are final: into the meeting's report.
        self.report_polls(now);
        Ok(self.poll_to(n, |_, _| true))
    }

    fn poll_mut(&mut self, n: u64) -> Result<&mut Poll, PollError> {
        self.polls
            .iter_mut()
            .find(|p| p.id == n)
            .ok_or(PollError::NotFound)
    }

    fn sees_results(&self, id: &str, n: u64) -> bool {
        self.is_moderator(id) || self.polls.iter().any(|p| p.id == n && p.shared)
    }

    /// Poll `n` as member `id` may see it.
    fn poll_view(&self, p: &Poll, id: &str) -> PollView {
        let key = self.members.get(id).map(voter);
        let voted = key.as_ref().is_some_and(|k| p.voters.contains(k));
        let my_choices = key
            .and_then(|k| p.ballots.get(&k))
            .map(|b| b.choices.clone())
            .unwrap_or_default();
        let results = (p.shared || self.is_moderator(id)).then(|| PollResults {
            counts: p.counts.clone(),
            voters: p.voters.len() as u32,
            names: if p.anonymous {
                Vec::new()
            } else {
                (0..p.options.len() as u32)
                    .map(|i| {
                        p.ballots
                            .values()
                            .filter(|b| b.choices.contains(&i))
                            .map(|b| b.name.clone())
                            .collect()
                    })
                    .collect()
            },
        });
        PollView {
            id: p.id,
            question: p.question.clone(),
            options: p.options.clone(),
            multiple: p.multiple,
            anonymous: p.anonymous,
            by: p.by.clone(),
            created_at: p.created_at,
            open: p.is_open(),
            shared: p.shared,
            voted,
            my_choices,
            results,
        }
    }

    /// Poll `n`, as each of them may see it, to the members `to` picks.
    fn poll_to(&self, n: u64, to: impl Fn(&Room, &Member) -> bool) -> Vec<Output> {
        let Some(p) = self.polls.iter().find(|p| p.id == n) else {
            return Vec::new();
        };
        self.members
            .values()
            .filter(|m| to(self, m))
            .flat_map(|m| {
                self.to_member(
                    &m.info.id,
                    ServerMessage::Poll {
                        poll: self.poll_view(p, &m.info.id),
                    },
                )
            })
            .collect()
    }

    /// Every poll again to member `id` (their role changed: results appear or go).
    pub(super) fn polls_to(&self, id: &str) -> Vec<Output> {
        self.polls
            .iter()
            .flat_map(|p| {
                self.to_member(
                    id,
                    ServerMessage::Poll {
                        poll: self.poll_view(p, id),
                    },
                )
            })
            .collect()
    }

    /// The polls as member `id` sees them, oldest first: every open one (there is a ballot to
    /// show), then the newest ended ones that fit a snapshot.
    pub(super) fn polls_for(&self, id: &str) -> Vec<PollView> {
        let size = |v: &PollView| serde_json::to_string(v).map_or(0, |s| s.len());
        let mut budget = SNAPSHOT_POLL_BYTES;
        let mut views: Vec<PollView> = self
            .polls
            .iter()
            .filter(|p| p.is_open())
            .map(|p| self.poll_view(p, id))
            .collect();
        budget = budget.saturating_sub(views.iter().map(size).sum());
        for p in self.polls.iter().rev().filter(|p| !p.is_open()) {
            let v = self.poll_view(p, id);
            let n = size(&v);
            if n > budget {
                break;
            }
            budget -= n;
            views.push(v);
        }
        views.sort_by_key(|v| v.id);
        views
    }
}
