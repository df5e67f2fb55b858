//! A scheduled meeting's report, as the room keeps it (see [`crate::report`] for the rows and what
//! is made of them).
//!
//! The room numbers what happens in a run — arrivals, departures, the totals (chat messages,
//! polls) — as [`ReportRow`]s and keeps them in an **outbox**: each row is also a stored row of the
//! room (so an eviction loses none), and goes to D1 in batches the shell writes
//! ([`Output::WriteReport`], its outcome fed back as [`Input::ReportWritten`]). Writing never holds
//! up the meeting: a batch goes out on the room's timer ([`REPORT_BATCH_MS`] after the first row
//! waiting, at most [`REPORT_BATCH_ROWS`] at a time), one batch at a time; a failed one is tried
//! again after 1, 2, 4… s (at most [`REPORT_RETRY_MAX_MS`]). Rows are idempotent in D1 (keyed by
//! their number; totals only replace older totals), so a batch written twice — its outcome lost
//! with an eviction — changes nothing. Totals waiting to go out are replaced by newer ones rather
//! than queued (a busy chat writes its count once per batch). At most [`MAX_OUTBOX`] rows wait:
//! past that (D1 down for hours), new arrivals and departures are dropped with a warning and the
//! meeting goes on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Output, Room};
use crate::report::{PollSummary, ReportRow};
use crate::Millis;

/// Rows gather this long before a batch goes out.
pub const REPORT_BATCH_MS: Millis = 1_000;
/// The most rows in one batch (D1 takes a batch as one transaction).
pub const REPORT_BATCH_ROWS: usize = 100;
/// The longest wait before a failed batch is tried again.
pub const REPORT_RETRY_MAX_MS: Millis = 60_000;
/// The most rows waiting to be written.
pub const MAX_OUTBOX: usize = 5_000;
/// The most browsers numbered in one run (the rest share the last number).
const MAX_PEOPLE: usize = 10_000;

/// What the room remembers of the run being reported (stored with the room's row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ReportBook {
    run: Option<Run>,
    /// The next row's number (never reused: rows of an older run may still be waiting).
    next_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    meeting: String,
    started: Millis,
    ended: Option<Millis>,
    chat: u32,
    /// Browser identity (or participant id without one) → number in this run.
    people: BTreeMap<String, u32>,
}

/// Rows waiting for D1, and how writing them goes (the rows are stored; the rest is not: after an
/// eviction, whatever was in flight is written again).
#[derive(Debug, Clone, Default)]
pub(super) struct Outbox {
    pub(super) rows: BTreeMap<u64, ReportRow>,
    /// The batch out now: rows up to this number.
    in_flight: Option<u64>,
    /// When the next batch goes.
    due: Option<Millis>,
    failures: u32,
}

impl Outbox {
    pub(super) fn deadline(&self) -> Option<Millis> {
        self.in_flight.is_none().then_some(self.due).flatten()
    }
}

impl Room {
    /// Member `id` is in (a new member, not a reconnect): in a scheduled meeting, a report row.
    pub(super) fn report_arrived(&mut self, now: Millis, id: &str) {
        let Some(meeting) = self.meta.scheduled.as_ref().map(|s| s.meeting.clone()) else {
            return;
        };
        let Some(m) = self.members.get(id) else {
            return;
        };
        let who = m.claims.bid.clone().unwrap_or_else(|| format!("p:{id}"));
        let name = m.info.name.clone();
        let new_run = self
            .meta
            .report
            .run
            .as_ref()
            .is_none_or(|r| r.meeting != meeting);
        if new_run {
            self.meta.report.run = Some(Run {
                meeting,
                started: now,
                ended: None,
                chat: 0,
                people: BTreeMap::new(),
            });
        }
        let run = self.meta.report.run.as_mut().expect("set above");
        let reopened = run.ended.take().is_some();
        let next = run.people.len() as u32;
        let person = match run.people.get(&who) {
            Some(n) => *n,
            None if run.people.len() < MAX_PEOPLE => {
                run.people.insert(who, next);
                next
            }
            None => next.saturating_sub(1),
        };
        self.dirty.meta = true;
        if new_run || reopened {
            self.report_totals(now);
        }
        self.report_attendance(now, person, name, true, now);
    }

    /// Member `gone` left at `at` (when their connection dropped, for one who never came back).
    pub(super) fn report_left(&mut self, now: Millis, gone: &super::Member, at: Millis) {
        let Some(run) = self.meta.report.run.as_ref() else {
            return;
        };
        let who = gone
            .claims
            .bid
            .clone()
            .unwrap_or_else(|| format!("p:{}", gone.info.id));
        let Some(person) = run.people.get(&who).copied() else {
            return;
        };
        self.report_attendance(now, person, gone.info.name.clone(), false, at);
        if self.members.is_empty() {
            if let Some(run) = self.meta.report.run.as_mut() {
                run.ended = Some(now);
            }
            self.report_totals(now);
        }
    }

    /// A chat message went out in the meeting.
    pub(super) fn report_chat(&mut self, now: Millis) {
        if let Some(run) = self.meta.report.run.as_mut() {
            run.chat = run.chat.saturating_add(1);
            self.report_totals(now);
        }
    }

    /// The meeting ends now (the host ended it, or it starts over): everyone in leaves, the totals
    /// are final, and the next person in starts a new run.
    pub(super) fn report_end(&mut self, now: Millis) {
        if self.meta.report.run.is_none() {
            return;
        }
        let members: Vec<super::Member> = self.members.values().cloned().collect();
        for m in &members {
            let who = m
                .claims
                .bid
                .clone()
                .unwrap_or_else(|| format!("p:{}", m.info.id));
            let person = self
                .meta
                .report
                .run
                .as_ref()
                .and_then(|r| r.people.get(&who).copied());
            if let Some(person) = person {
                self.report_attendance(now, person, m.info.name.clone(), false, now);
            }
        }
        if let Some(run) = self.meta.report.run.as_mut() {
            run.ended.get_or_insert(now);
        }
        self.report_totals(now);
        self.meta.report.run = None;
        self.dirty.meta = true;
    }

    /// The run's totals changed (or its polls did): a totals row replaces any still waiting.
    pub(super) fn report_totals(&mut self, now: Millis) {
        let Some(run) = self.meta.report.run.as_ref() else {
            return;
        };
        let polls: Vec<PollSummary> = self.polls.iter().map(|p| p.summary()).collect();
        let row = ReportRow::Run {
            meeting: run.meeting.clone(),
            started: run.started,
            seq: 0, // numbered in `queue`
            ended: run.ended,
            chat: run.chat,
            polls,
        };
        // Older totals of the same run not yet out are superseded.
        let in_flight = self.outbox.in_flight;
        let stale: Vec<u64> = self
            .outbox
            .rows
            .iter()
            .filter(|(seq, r)| {
                in_flight.is_none_or(|f| **seq > f)
                    && matches!(r, ReportRow::Run { .. })
                    && r.run() == row.run()
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in stale {
            self.outbox.rows.remove(&seq);
            self.dirty.report.insert(seq);
        }
        self.queue(now, row);
    }

    fn report_attendance(
        &mut self,
        now: Millis,
        person: u32,
        name: String,
        joined: bool,
        at: Millis,
    ) {
        let Some(run) = self.meta.report.run.as_ref() else {
            return;
        };
        let row = ReportRow::Attendance {
            meeting: run.meeting.clone(),
            started: run.started,
            seq: 0,
            person,
            name,
            joined,
            at,
        };
        self.queue(now, row);
    }

    /// Numbers `row` and puts it in the outbox (and in storage).
    fn queue(&mut self, now: Millis, mut row: ReportRow) {
        let is_totals = matches!(row, ReportRow::Run { .. });
        if self.outbox.rows.len() >= MAX_OUTBOX && !is_totals {
            if self.outbox.rows.len() == MAX_OUTBOX {
                self.out.push_back(Output::Warn(format!(
                    "the meeting report's outbox is full ({MAX_OUTBOX} rows): arrivals and departures are not recorded until D1 takes some"
                )));
            }
            return;
        }
        let seq = self.meta.report.next_seq;
        self.meta.report.next_seq += 1;
        match &mut row {
            ReportRow::Run { seq: s, .. } | ReportRow::Attendance { seq: s, .. } => *s = seq,
        }
        self.outbox.rows.insert(seq, row);
        self.dirty.report.insert(seq);
        self.dirty.meta = true;
        if self.outbox.due.is_none() && self.outbox.failures == 0 {
            self.outbox.due = Some(now + REPORT_BATCH_MS);
        }
    }

    /// The report's timer: a batch goes out if one is due.
    pub(super) fn report_timeout(&mut self, now: Millis) -> Vec<Output> {
        if self.outbox.in_flight.is_some() || self.outbox.due.is_none_or(|d| now < d) {
            return Vec::new();
        }
        self.outbox.due = None;
        let rows: Vec<ReportRow> = self
            .outbox
            .rows
            .values()
            .take(REPORT_BATCH_ROWS)
            .cloned()
            .collect();
        let Some(upto) = rows.last().map(ReportRow::seq) else {
            return Vec::new();
        };
        self.outbox.in_flight = Some(upto);
        vec![Output::WriteReport { upto, rows }]
    }

    /// What became of the batch up to `upto`.
    pub(super) fn report_written(&mut self, now: Millis, upto: u64, ok: bool) -> Vec<Output> {
        if self.outbox.in_flight != Some(upto) {
            return Vec::new(); // from before an eviction: its rows go again anyway
        }
        self.outbox.in_flight = None;
        if ok {
            self.outbox.failures = 0;
            let done: Vec<u64> = self.outbox.rows.range(..=upto).map(|(s, _)| *s).collect();
            for seq in done {
                self.outbox.rows.remove(&seq);
                self.dirty.report.insert(seq);
            }
            // More waiting: the next batch at once (they have gathered already).
            self.outbox.due = (!self.outbox.rows.is_empty()).then_some(now);
            Vec::new()
        } else {
            self.outbox.failures = self.outbox.failures.saturating_add(1);
            let wait = (1_000u64 << (self.outbox.failures - 1).min(6)).min(REPORT_RETRY_MAX_MS);
            self.outbox.due = Some(now + wait);
            if self.outbox.failures == 3 {
                vec![Output::Warn(format!(
                    "the meeting report could not be written three times running; trying every {} s at most",
                    REPORT_RETRY_MAX_MS / 1000
                ))]
            } else {
                Vec::new()
            }
        }
    }

    /// After a restore: rows stored in the outbox go out again (what was in flight may not have
    /// arrived).
    pub(super) fn report_restored(&mut self, now: Millis) {
        self.outbox.in_flight = None;
        self.outbox.failures = 0;
        self.outbox.due = (!self.outbox.rows.is_empty()).then_some(now);
    }

    /// Puts back the outbox's stored rows (JSON, as [`super::Changes::report`] wrote them).
    pub fn restore_report_outbox<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a str>,
    ) -> Vec<super::RestoreError> {
        let mut errors = Vec::new();
        for json in rows {
            match serde_json::from_str::<ReportRow>(json) {
                Ok(r) => {
                    if r.seq() >= self.meta.report.next_seq {
                        self.meta.report.next_seq = r.seq() + 1;
                    }
                    self.outbox.rows.insert(r.seq(), r);
                }
                Err(e) => errors.push(super::RestoreError::Report(e.to_string())),
            }
        }
        errors
    }

    /// The report rows waiting for D1 (tests and the fuzzer check them).
    pub fn report_outbox(&self) -> impl Iterator<Item = &ReportRow> {
        self.outbox.rows.values()
    }
}
