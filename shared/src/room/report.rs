//! A scheduled meeting's report, as the room keeps it (see [`crate::report`] for the rows and what
//! is made of them).
//!
//! The room numbers what happens in a run — arrivals, departures, the totals (chat messages,
//! polls) — as [`ReportRow`]s and keeps them in an **outbox**: each row is also a stored row of the
//! room (so an eviction loses none), and goes to D1 in batches the shell writes
//! ([`Output::WriteReport`], its outcome fed back as [`super::Input::ReportWritten`]). Writing never holds
//! up the meeting: a batch goes out on the room's timer ([`REPORT_BATCH_MS`] after the first row
//! waiting, at most [`REPORT_BATCH_ROWS`] at a time — halved after each failure —), one batch at a
//! time; a failed one (or one unanswered for [`REPORT_WRITE_TIMEOUT_MS`]) is tried again after 1,
//! 2, 4… s (at most [`REPORT_RETRY_MAX_MS`]; the backoff is stored, an eviction keeps it). Rows are
//! idempotent in D1 (keyed by their number; totals only replace older totals), so a batch written
//! twice — its outcome lost with an eviction — changes nothing. The totals are made once per batch
//! (a busy chat marks them changed; the row is built when the batch goes). Bounds: [`MAX_OUTBOX`]
//! rows wait (past that, with D1 down for hours, arrivals and departures are dropped with a
//! warning and the meeting goes on); [`MAX_PEOPLE`] browsers and [`MAX_STINTS`] arrivals per
//! browser are recorded in a run (someone connecting in a loop stops adding rows); a departure is
//! recorded only for a recorded arrival, and the last one out ends the run either way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Output, Room};

/// Whether the run's totals wait for a batch.
fn run_needs_totals(book: &ReportBook) -> bool {
    book.run.as_ref().is_some_and(|r| r.totals_pending)
}
use crate::report::ReportRow;
use crate::Millis;

/// Rows gather this long before a batch goes out.
pub const REPORT_BATCH_MS: Millis = 1_000;
/// The most rows in one batch (D1 takes a batch as one transaction); after failures, half as many
/// each time (down to one: a batch too big for D1's limits gets through).
pub const REPORT_BATCH_ROWS: usize = 100;
/// The longest wait before a failed batch is tried again.
pub const REPORT_RETRY_MAX_MS: Millis = 60_000;
/// A batch with no outcome after this long counts as failed (a write that hangs).
pub const REPORT_WRITE_TIMEOUT_MS: Millis = 20_000;
/// The most rows waiting to be written.
pub const MAX_OUTBOX: usize = 5_000;
/// The most browsers numbered in one run: beyond them, arrivals and departures are not recorded
/// (the numbers are kept with the room's own row).
pub const MAX_PEOPLE: usize = 1_000;
/// The most arrivals recorded for one browser in one run: someone connecting and leaving in a
/// loop stops adding rows there (and cannot push everyone else's out of the report).
pub const MAX_STINTS: u32 = 100;

/// What the room remembers of the run being reported (stored with the room's row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ReportBook {
    run: Option<Run>,
    /// The next row's number (never reused: rows of an older run may still be waiting).
    next_seq: u64,
    /// Failed batches running, and when the next try is due (kept: an eviction does not reset
    /// the backoff).
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    retry_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    meeting: String,
    started: Millis,
    ended: Option<Millis>,
    chat: u32,
    /// Browser identity (or participant id without one) → (number in this run, arrivals recorded).
    people: BTreeMap<String, (u32, u32)>,
    /// Members whose arrival was recorded (their departure is, then).
    #[serde(default)]
    recorded: std::collections::BTreeSet<String>,
    /// The totals changed since the last totals row: one goes with the next batch.
    #[serde(default)]
    totals_pending: bool,
    /// The latest departure's time (one who dropped leaves when their connection did, which may
    /// be before someone who left after them): the run ends no sooner.
    #[serde(default)]
    last_left: Millis,
}

/// Rows waiting for D1, and how writing them goes (the rows are stored; the rest is not: after an
/// eviction, whatever was in flight is written again).
#[derive(Debug, Clone, Default)]
pub(super) struct Outbox {
    pub(super) rows: BTreeMap<u64, ReportRow>,
    /// The batch out now: rows up to this number, and since when.
    in_flight: Option<(u64, Millis)>,
    /// When the next batch goes.
    due: Option<Millis>,
    /// The "full" warning was given (again once it has room).
    warned_full: bool,
}

impl Outbox {
    pub(super) fn deadline(&self) -> Option<Millis> {
        match self.in_flight {
            Some((_, since)) => Some(since + REPORT_WRITE_TIMEOUT_MS),
            None => self.due,
        }
    }
}

/// Who a member is across a run: their browser, or the participant without one.
fn who(m: &super::Member) -> String {
    m.claims
        .bid
        .clone()
        .unwrap_or_else(|| format!("p:{}", m.info.id))
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
        let (who, name) = (who(m), m.info.name.clone());
        if self
            .meta
            .report
            .run
            .as_ref()
            .is_some_and(|r| r.meeting != meeting)
        {
            self.report_end(now); // (a room is one meeting's: not expected)
        }
        let new_run = self.meta.report.run.is_none();
        if new_run {
            self.meta.report.run = Some(Run {
                meeting,
                started: now,
                ended: None,
                chat: 0,
                people: BTreeMap::new(),
                recorded: Default::default(),
                totals_pending: true,
                last_left: 0,
            });
        }
        let run = self.meta.report.run.as_mut().expect("set above");
        if run.ended.take().is_some() {
            run.totals_pending = true; // going on again
        }
        let (next, room_for_more) = (run.people.len() as u32, run.people.len() < MAX_PEOPLE);
        let person = match run.people.get_mut(&who) {
            Some((n, arrivals)) if *arrivals < MAX_STINTS => {
                *arrivals += 1;
                Some(*n)
            }
            Some(_) => None,
            None if room_for_more => {
                run.people.insert(who, (next, 1));
                Some(next)
            }
            None => None,
        };
        if person.is_some() {
            run.recorded.insert(id.to_string());
        }
        self.dirty.meta = true;
        if run_needs_totals(&self.meta.report) {
            self.report_due(now);
        }
        if let Some(person) = person {
            self.report_attendance(now, person, name, true, now);
        }
    }

    /// Member `gone` left at `at` (when their connection dropped, for one who never came back).
    pub(super) fn report_left(&mut self, now: Millis, gone: &super::Member, at: Millis) {
        let Some(run) = self.meta.report.run.as_mut() else {
            return;
        };
        let person = run
            .recorded
            .remove(&gone.info.id)
            .then(|| run.people.get(&who(gone)).map(|(n, _)| *n))
            .flatten();
        run.last_left = run.last_left.max(at);
        if self.members.is_empty() {
            // The last one out ends the run (until someone comes back).
            run.ended = Some(run.last_left.max(run.started));
            run.totals_pending = true;
        }
        self.dirty.meta = true;
        if let Some(person) = person {
            self.report_attendance(now, person, gone.info.name.clone(), false, at);
        }
        if run_needs_totals(&self.meta.report) {
            self.report_due(now);
        }
    }

    /// A chat message went out in the meeting: the count goes with the next batch.
    pub(super) fn report_chat(&mut self, now: Millis) {
        if let Some(run) = self.meta.report.run.as_mut() {
            run.chat = run.chat.saturating_add(1);
            run.totals_pending = true;
            self.report_due(now);
        }
    }

    /// A poll's results changed for good (it ended): they go with the next batch.
    pub(super) fn report_polls(&mut self, now: Millis) {
        if let Some(run) = self.meta.report.run.as_mut() {
            run.totals_pending = true;
            self.dirty.meta = true;
            self.report_due(now);
        }
    }

    /// The meeting ends now (the host ended it, or it starts over): everyone in leaves (one away
    /// left when their connection dropped), the totals are final, and the next person in starts
    /// a new run.
    pub(super) fn report_end(&mut self, now: Millis) {
        let Some(run) = self.meta.report.run.as_ref() else {
            return;
        };
        let leaving: Vec<(u32, String, Millis)> = self
            .members
            .values()
            .filter(|m| run.recorded.contains(&m.info.id))
            .filter_map(|m| {
                let n = run.people.get(&who(m))?.0;
                Some((n, m.info.name.clone(), m.away_since.unwrap_or(now)))
            })
            .collect();
        for (person, name, at) in leaving {
            self.report_attendance(now, person, name, false, at);
        }
        if let Some(run) = self.meta.report.run.as_mut() {
            run.ended.get_or_insert(now);
        }
        self.queue_totals(now);
        self.meta.report.run = None;
        self.dirty.meta = true;
    }

    /// A batch is to go at the latest [`REPORT_BATCH_MS`] from now (or when a retry is due).
    fn report_due(&mut self, now: Millis) {
        if self.outbox.due.is_none() {
            self.outbox.due = Some(
                self.meta
                    .report
                    .retry_at
                    .unwrap_or(0)
                    .max(now + REPORT_BATCH_MS),
            );
        }
    }

    /// The run's totals as a row (it replaces any still waiting).
    fn queue_totals(&mut self, now: Millis) {
        let Some(run) = self.meta.report.run.as_mut() else {
            return;
        };
        run.totals_pending = false;
        let row = ReportRow::Run {
            meeting: run.meeting.clone(),
            started: run.started,
            seq: 0, // numbered in `queue`
            ended: run.ended,
            chat: run.chat,
            polls: self.polls.iter().map(|p| p.summary()).collect(),
        };
        // Older totals of the same run not yet out are superseded.
        let in_flight = self.outbox.in_flight.map(|(upto, _)| upto);
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
            if !self.outbox.warned_full {
                self.outbox.warned_full = true;
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
        self.report_due(now);
    }

    /// The report's timer: a batch goes out if one is due; one out too long counts as failed.
    pub(super) fn report_timeout(&mut self, now: Millis) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some((upto, since)) = self.outbox.in_flight {
            if now < since + REPORT_WRITE_TIMEOUT_MS {
                return out;
            }
            out.extend(self.report_written(now, upto, false));
        }
        if self.outbox.due.is_none_or(|d| now < d) {
            return out;
        }
        self.outbox.due = None;
        if self
            .meta
            .report
            .run
            .as_ref()
            .is_some_and(|r| r.totals_pending)
        {
            self.queue_totals(now);
            self.outbox.due = None;
        }
        let size = (REPORT_BATCH_ROWS >> self.meta.report.failures.min(7)).max(1);
        let rows: Vec<ReportRow> = self.outbox.rows.values().take(size).cloned().collect();
        let Some(upto) = rows.last().map(ReportRow::seq) else {
            return out;
        };
        self.outbox.in_flight = Some((upto, now));
        out.push(Output::WriteReport { upto, rows });
        out
    }

    /// What became of the batch up to `upto`.
    pub(super) fn report_written(&mut self, now: Millis, upto: u64, ok: bool) -> Vec<Output> {
        if self.outbox.in_flight.map(|(u, _)| u) != Some(upto) {
            return Vec::new(); // from before an eviction or a timeout: its rows go again anyway
        }
        self.outbox.in_flight = None;
        self.dirty.meta = true;
        if ok {
            self.meta.report.failures = 0;
            self.meta.report.retry_at = None;
            let done: Vec<u64> = self.outbox.rows.range(..=upto).map(|(s, _)| *s).collect();
            for seq in done {
                self.outbox.rows.remove(&seq);
                self.dirty.report.insert(seq);
            }
            if self.outbox.rows.len() < MAX_OUTBOX {
                self.outbox.warned_full = false;
            }
            // More waiting: the next batch at once (they have gathered already).
            self.outbox.due = (!self.outbox.rows.is_empty())
                .then_some(now)
                .or(self.outbox.due);
            Vec::new()
        } else {
            let report = &mut self.meta.report;
            report.failures = report.failures.saturating_add(1);
            let wait = (1_000u64 << (report.failures - 1).min(6)).min(REPORT_RETRY_MAX_MS);
            report.retry_at = Some(now + wait);
            self.outbox.due = Some(now + wait);
            if report.failures == 3 {
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
    /// arrived), when a retry is due if D1 was failing.
    pub(super) fn report_restored(&mut self, now: Millis) {
        self.outbox.in_flight = None;
        let pending = !self.outbox.rows.is_empty()
            || self
                .meta
                .report
                .run
                .as_ref()
                .is_some_and(|r| r.totals_pending);
        self.outbox.due = pending.then(|| self.meta.report.retry_at.unwrap_or(now).max(now));
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
