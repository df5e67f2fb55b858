//! Meeting reports: what a scheduled meeting's room writes to D1 while it runs, and the report its
//! owner reads afterwards (JSON for the page, CSV to download).
//!
//! A **run** is one meeting from the first person in to its end (the host ended it, or the room
//! stayed empty until it started over). The room core ([`crate::room`]) numbers what happens in a
//! run and hands the rows to its shell to write ([`ReportRow`]): one row per arrival and departure
//! (several per person when they left and came back: a dropped connection that comes back within
//! the reconnect grace is neither), and the run's totals (chat messages, polls), rewritten as they
//! change (the newest by number wins). Who someone is across a run is their browser, numbered per
//! run ([`ReportRow::Attendance::person`]): no browser identity or participant id reaches D1.
//!
//! [`aggregate`] turns the stored rows into a [`MeetingReport`]: per person their stints (a person
//! in two tabs at once is one stint), their time in the meeting, the most people in at once, the
//! run's length. Pure, so it is unit-tested here and the worker only moves rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// A row the room writes for the report (see the module docs). `seq` numbers a room's rows in the
/// order they happened (never reused, also across runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportRow {
    /// A run's totals as of `seq`: a later one replaces an earlier one.
    Run {
        meeting: String,
        started: Millis,
        seq: u64,
        /// When the last person left (`None`: someone is in).
        ended: Option<Millis>,
        chat: u32,
        polls: Vec<PollSummary>,
    },
    /// Someone came in (`joined`) or went out.
    Attendance {
        meeting: String,
        started: Millis,
        seq: u64,
        /// The browser's number in this run.
        person: u32,
        name: String,
        joined: bool,
        at: Millis,
    },
}

impl ReportRow {
    pub fn seq(&self) -> u64 {
        match self {
            ReportRow::Run { seq, .. } | ReportRow::Attendance { seq, .. } => *seq,
        }
    }

    /// The run it belongs to: (meeting id, start).
    pub fn run(&self) -> (&str, Millis) {
        match self {
            ReportRow::Run {
                meeting, started, ..
            }
            | ReportRow::Attendance {
                meeting, started, ..
            } => (meeting, *started),
        }
    }
}

/// A poll as the report shows it: counts only (who voted for what stays in the meeting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollSummary {
    pub question: String,
    pub options: Vec<String>,
    pub counts: Vec<u32>,
    pub voters: u32,
    pub multiple: bool,
    pub anonymous: bool,
    /// Still open when the row was written.
    pub open: bool,
}

/// One stored attendance row, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttendanceEvent {
    pub seq: u64,
    pub person: u32,
    pub name: String,
    pub joined: bool,
    pub at: Millis,
}

/// A run's stored totals, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTotals {
    pub meeting: String,
    pub title: String,
    /// The meeting's IANA time zone (the CSV's times are in it).
    pub time_zone: String,
    pub started: Millis,
    pub ended: Option<Millis>,
    pub chat: u32,
    pub polls: Vec<PollSummary>,
}

/// One time in the meeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stint {
    pub joined: Millis,
    /// `None`: still in (the run has not ended).
    pub left: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attendee {
    /// The name they used last.
    pub name: String,
    pub stints: Vec<Stint>,
    /// Their time in the meeting, all stints together (up to `now` for one still in).
    pub total_ms: Millis,
}

/// What the owner and co-hosts read after (or during) a meeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeetingReport {
    pub meeting: String,
    pub title: String,
    pub time_zone: String,
    pub started_at: Millis,
    /// `None`: the meeting is still going.
    pub ended_at: Option<Millis>,
    pub duration_ms: Millis,
    /// The most people in at once.
    pub peak: u32,
    pub chat_messages: u32,
    /// In order of first arrival.
    pub attendees: Vec<Attendee>,
    pub polls: Vec<PollSummary>,
    /// Only the first rows could be read: who came later is missing.
    #[serde(default)]
    pub truncated: bool,
}

/// A run in the list of reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportListing {
    pub meeting: String,
    pub title: String,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    /// How many people came.
    pub attendees: u32,
}

/// Builds the report of `run` from its attendance rows (any order; duplicates of a number count
/// once). A stint still open is closed at the run's end, or runs until `now` while it goes on.
/// Rows are matched in the room's order, but a departure's time may be earlier than rows numbered
/// before it (one who dropped leaves when their connection did, ten seconds before the room knew):
/// a stint ends at its latest departure, and the most people in at once is counted by time.
/// `truncated`: the rows are only the first of the run's.
pub fn aggregate(
    run: &RunTotals,
    events: &[AttendanceEvent],
    now: Millis,
    truncated: bool,
) -> MeetingReport {
    let mut events: Vec<&AttendanceEvent> = events.iter().collect();
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let end = run.ended.unwrap_or(now.max(run.started));

    struct Person {
        name: String,
        first: u64,
        /// Connections in now (two tabs: two).
        open: u32,
        stints: Vec<Stint>,
        /// The latest departure in the stint going on.
        latest: Millis,
    }
    let mut people: BTreeMap<u32, Person> = BTreeMap::new();
    for e in events {
        let p = people.entry(e.person).or_insert_with(|| Person {
            name: e.name.clone(),
            first: e.seq,
            open: 0,
            stints: Vec::new(),
            latest: 0,
        });
        p.name.clone_from(&e.name);
        if e.joined {
            p.open += 1;
            if p.open == 1 {
                p.stints.push(Stint {
                    joined: e.at,
                    left: None,
                });
                p.latest = 0;
            }
        } else if p.open > 0 {
            p.open -= 1;
            p.latest = p.latest.max(e.at);
            if p.open == 0 {
                if let Some(s) = p.stints.last_mut() {
                    s.left = Some(p.latest.max(s.joined));
                }
            }
        }
    }
    let mut attendees: Vec<(u64, Attendee)> = people
        .into_values()
        .filter(|p| !p.stints.is_empty()) // a departure whose arrival was not recorded
        .map(|mut p| {
            if run.ended.is_some() {
                // The run is over: whoever was still counted in left with it.
                for s in p.stints.iter_mut().filter(|s| s.left.is_none()) {
                    s.left = Some(end.max(s.joined));
                }
            }
            let total_ms = p
                .stints
                .iter()
                .map(|s| s.left.unwrap_or(end).saturating_sub(s.joined))
                .sum();
            (
                p.first,
                Attendee {
                    name: p.name,
                    stints: p.stints,
                    total_ms,
                },
            )
        })
        .collect();
    attendees.sort_by_key(|(first, _)| *first);
    // The most people in at once: every stint's start and end by time, ends first at a tie.
    let mut edges: Vec<(Millis, i32)> = attendees
        .iter()
        .flat_map(|(_, a)| a.stints.iter())
        .flat_map(|s| [(s.joined, 1), (s.left.unwrap_or(Millis::MAX), -1)])
        .collect();
    edges.sort();
    let (mut present, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        present += d;
        peak = peak.max(present);
    }
    MeetingReport {
        meeting: run.meeting.clone(),
        title: run.title.clone(),
        time_zone: run.time_zone.clone(),
        started_at: run.started,
        ended_at: run.ended,
        duration_ms: end.saturating_sub(run.started),
        peak: peak as u32,
        chat_messages: run.chat,
        attendees: attendees.into_iter().map(|(_, a)| a).collect(),
        polls: run.polls.clone(),
        truncated,
    }
}

/// A spreadsheet cell that starts like a formula is made text (`'` before it): a name such as
/// `=HYPERLINK(…)` must not run in whoever opens the CSV.
pub fn cell(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

#[cfg(feature = "calendar")]
impl MeetingReport {
    /// A file name people recognise: the title (safe characters only) and the day it started, in
    /// the meeting's time zone.
    pub fn file_name(&self) -> String {
        use chrono::TimeZone;
        let tz: chrono_tz::Tz = self.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let day = tz
            .timestamp_millis_opt(self.started_at as i64)
            .single()
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let title: String = self
            .title
            .chars()
            .take(60)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{title}-{day}.csv")
    }

    /// The report as CSV: one line per stint (name, joined, left, minutes, the person's total
    /// minutes), times in the meeting's time zone. A stint still open has no "left".
    pub fn csv(&self) -> Result<String, ReportError> {
        use chrono::TimeZone;
        let tz: chrono_tz::Tz = self.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let time = |ms: Millis| -> String {
            match tz.timestamp_millis_opt(ms as i64).single() {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
                None => String::new(),
            }
        };
        let minutes = |ms: Millis| format!("{:.1}", ms as f64 / 60_000.0);
        let mut w = csv::Writer::from_writer(Vec::new());
        let zone = format!("({})", self.time_zone);
        w.write_record([
            "Name",
            &format!("Joined {zone}"),
            &format!("Left {zone}"),
            "Minutes",
            "Total minutes",
        ])?;
        for a in &self.attendees {
            for s in &a.stints {
                let end = s.left.or(self.ended_at);
                w.write_record([
                    cell(&a.name),
                    time(s.joined),
                    s.left.map(time).unwrap_or_default(),
                    end.map(|e| minutes(e.saturating_sub(s.joined)))
                        .unwrap_or_default(),
                    minutes(a.total_ms),
                ])?;
            }
        }
        let bytes = w
            .into_inner()
            .map_err(|e| ReportError::Csv(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| ReportError::Csv(e.to_string()))
    }
}

/// What making a report can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the report could not be written as CSV: {0}")]
    Csv(String),
}

#[cfg(feature = "calendar")]
impl From<csv::Error> for ReportError {
    fn from(e: csv::Error) -> Self {
        ReportError::Csv(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;
    const T0: Millis = 1_780_000_000_000;

    fn run(ended: Option<Millis>) -> RunTotals {
        RunTotals {
            meeting: "m1".into(),
            title: "Stand-up".into(),
            time_zone: "Europe/Berlin".into(),
            started: T0,
            ended,
            chat: 3,
            polls: Vec::new(),
        }
    }

    fn ev(seq: u64, person: u32, name: &str, joined: bool, at: Millis) -> AttendanceEvent {
        AttendanceEvent {
            seq,
            person,
            name: name.into(),
            joined,
            at,
        }
    }

    #[test]
    fn stints_totals_and_peak_from_arrivals_and_departures() {
        let events = [
            ev(1, 0, "Ada", true, T0),
            ev(2, 1, "Grace", true, T0 + 2 * MIN),
            // Grace drops out and comes back: two stints.
            ev(3, 1, "Grace", false, T0 + 10 * MIN),
            ev(4, 2, "Linus", true, T0 + 11 * MIN),
            ev(5, 1, "Grace H.", true, T0 + 12 * MIN),
            ev(6, 0, "Ada", false, T0 + 30 * MIN),
            ev(7, 1, "Grace H.", false, T0 + 31 * MIN),
            ev(8, 2, "Linus", false, T0 + 32 * MIN),
        ];
        // Rows may come back in any order, and a retried batch twice.
        let mut shuffled: Vec<AttendanceEvent> = events.iter().rev().cloned().collect();
        shuffled.push(events[2].clone());
        let r = aggregate(&run(Some(T0 + 32 * MIN)), &shuffled, T0 + 99 * MIN, false);
        assert_eq!(r.duration_ms, 32 * MIN);
        assert_eq!(r.peak, 3);
        assert_eq!(r.chat_messages, 3);
        let names: Vec<&str> = r.attendees.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["Ada", "Grace H.", "Linus"],
            "first arrival first, last name"
        );
        assert_eq!(r.attendees[0].total_ms, 30 * MIN);
        assert_eq!(
            r.attendees[1].stints,
            vec![
                Stint {
                    joined: T0 + 2 * MIN,
                    left: Some(T0 + 10 * MIN)
                },
                Stint {
                    joined: T0 + 12 * MIN,
                    left: Some(T0 + 31 * MIN)
                }
            ]
        );
        assert_eq!(r.attendees[1].total_ms, 27 * MIN);
    }

    #[test]
    fn two_tabs_are_one_stint_and_a_running_meeting_counts_until_now() {
        let events = [
            ev(1, 0, "Ada", true, T0),
            ev(2, 0, "Ada", true, T0 + MIN), // a second tab
            ev(3, 0, "Ada", false, T0 + 5 * MIN),
            ev(4, 1, "Bob", true, T0 + 6 * MIN),
        ];
        let r = aggregate(&run(None), &events, T0 + 10 * MIN, false);
        assert_eq!(r.peak, 2, "Ada twice is one person");
        assert_eq!(r.attendees[0].stints.len(), 1);
        assert_eq!(
            r.attendees[0].stints[0].left, None,
            "her first tab is still in"
        );
        assert_eq!(r.attendees[0].total_ms, 10 * MIN);
        assert_eq!(r.attendees[1].total_ms, 4 * MIN);
        assert_eq!(r.ended_at, None);
        assert_eq!(r.duration_ms, 10 * MIN);
        // Ended: whoever was still counted in left with it.
        let r = aggregate(&run(Some(T0 + 8 * MIN)), &events, T0 + 60 * MIN, false);
        assert_eq!(r.attendees[0].stints[0].left, Some(T0 + 8 * MIN));
        assert_eq!(r.attendees[1].total_ms, 2 * MIN);
    }

    #[test]
    fn a_departure_without_an_arrival_and_an_empty_run_change_nothing() {
        let r = aggregate(&run(Some(T0)), &[ev(1, 4, "Eve", false, T0)], T0, false);
        assert_eq!(r.peak, 0);
        assert!(r.attendees.is_empty(), "nobody came");
        let r = aggregate(&run(Some(T0 + MIN)), &[], T0 + 2 * MIN, false);
        assert!(r.attendees.is_empty());
        assert_eq!(r.duration_ms, MIN);
    }

    #[test]
    fn a_departure_dated_when_the_connection_dropped_ends_the_stint_and_the_peak_by_time() {
        // Two tabs: the first drops at 100 (the room learns it ten seconds later), the second
        // leaves cleanly at 105, numbered before the first's departure.
        let tabs = [
            ev(1, 0, "Ada", true, 0),
            ev(2, 0, "Ada", true, 50),
            ev(3, 0, "Ada", false, 105),
            ev(4, 0, "Ada", false, 100),
        ];
        let r = aggregate(&run(Some(200)), &tabs, 200, false);
        assert_eq!(
            r.attendees[0].stints[0].left,
            Some(105),
            "her latest departure"
        );
        // Bob dropped at 100; Cy came at 105; the room removed Bob after that, dated 100: they
        // were never in together.
        let apart = [
            ev(1, 0, "Bob", true, 0),
            ev(2, 1, "Cy", true, 105),
            ev(3, 0, "Bob", false, 100),
        ];
        assert_eq!(aggregate(&run(Some(200)), &apart, 200, false).peak, 1);
        assert!(aggregate(&run(Some(200)), &apart, 200, true).truncated);
    }

    #[test]
    fn csv_lists_each_stint_in_the_meetings_zone_and_defuses_formulas() {
        let events = [
            ev(1, 0, "=HYPERLINK(\"x\")", true, T0),
            ev(2, 0, "=HYPERLINK(\"x\")", false, T0 + 90_000),
            ev(3, 1, "Bob, Jr.", true, T0 + MIN),
        ];
        let csv = aggregate(&run(Some(T0 + 3 * MIN)), &events, T0, false)
            .csv()
            .unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "Name,Joined (Europe/Berlin),Left (Europe/Berlin),Minutes,Total minutes"
        );
        // 1,780,000,000,000 ms is 2026-05-28 20:26:40 UTC: 22:26:40 in Berlin (summer time).
        assert_eq!(
            lines[1],
            "\"'=HYPERLINK(\"\"x\"\")\",2026-05-28 22:26:40,2026-05-28 22:28:10,1.5,1.5"
        );
        assert_eq!(
            lines[2],
            "\"Bob, Jr.\",2026-05-28 22:27:40,2026-05-28 22:29:40,2.0,2.0"
        );
        assert_eq!(lines.len(), 3);
    }
}
