//! Scheduled meetings, pure: what a valid schedule is, when its occurrences are (in its time
//! zone, across daylight-saving changes), who may see or change it, the invitation (`.ics`, with
//! the `icalendar` crate) and its text. The edge's worker only moves rows (edge/src/meetings.rs).
//!
//! A meeting is planned in a time zone (an IANA name, e.g. `Europe/Berlin`) at a wall-clock time:
//! a weekly 10:00 stays 10:00 there when the clocks change. Each meeting has an unguessable room
//! (`m-` + 128 random bits): its link is the invitation. The owner is the host whenever they join;
//! co-hosts named by email are co-hosts when they arrive signed in with that email.

#[cfg(feature = "calendar")]
use chrono::{Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
#[cfg(feature = "calendar")]
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[cfg(feature = "calendar")]
use crate::account::normalize_email;
use crate::error::ErrorCode;
use crate::Millis;

/// Longest title (characters).
pub const MAX_TITLE_CHARS: usize = 200;
/// Shortest and longest meeting (minutes).
pub const MIN_DURATION_MINUTES: u32 = 5;
pub const MAX_DURATION_MINUTES: u32 = 24 * 60;
/// Most occurrences of a recurring meeting.
pub const MAX_OCCURRENCES: u32 = 200;
/// Most co-hosts named in advance.
pub const MAX_COHOSTS: usize = 50;
/// Most meetings an account may have scheduled (not cancelled, not over).
pub const MAX_MEETINGS_PER_ACCOUNT: usize = 500;
/// A reminder shows this long before an occurrence starts.
pub const REMINDER_BEFORE_MS: Millis = 10 * 60 * 1000;
/// The room-name prefix of scheduled meetings (an ad-hoc room may not start with it).
pub const ROOM_PREFIX: &str = "m-";

/// How a meeting repeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recurrence {
    #[default]
    None,
    Daily,
    Weekly,
}

#[cfg(feature = "calendar")]
impl Recurrence {
    fn step(self) -> Duration {
        match self {
            Recurrence::None | Recurrence::Daily => Duration::days(1),
            Recurrence::Weekly => Duration::weeks(1),
        }
    }

    /// As the RFC 5545 `FREQ` value.
    fn freq(self) -> Option<&'static str> {
        match self {
            Recurrence::None => None,
            Recurrence::Daily => Some("DAILY"),
            Recurrence::Weekly => Some("WEEKLY"),
        }
    }
}

/// What the owner fills in to schedule or change a meeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingForm {
    pub title: String,
    /// The wall-clock start in `time_zone`: `YYYY-MM-DDTHH:MM` (what `<input type=datetime-local>`
    /// gives).
    pub start: String,
    /// An IANA time zone name (`Europe/Berlin`, `UTC`).
    pub time_zone: String,
    pub duration_minutes: u32,
    #[serde(default)]
    pub recurrence: Recurrence,
    /// How many times a recurring meeting takes place (1 for one that does not recur).
    #[serde(default)]
    pub occurrences: Option<u32>,
    /// A meeting password: `None` keeps the current one (none for a new meeting), `Some("")`
    /// removes it.
    #[serde(default)]
    pub password: Option<String>,
    /// Arrivals wait for a host to let them in (default on).
    #[serde(default = "yes")]
    pub waiting_room: bool,
    /// Only people signed in to an account may join.
    #[serde(default)]
    pub only_signed_in: bool,
    /// Email addresses of co-hosts.
    #[serde(default)]
    pub cohosts: Vec<String>,
}

fn yes() -> bool {
    true
}

fn sixty() -> u32 {
    60
}

/// A person's defaults for the meetings they schedule, saved with their account: the schedule
/// form starts from them (every meeting can still differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingDefaults {
    #[serde(default = "yes")]
    pub waiting_room: bool,
    #[serde(default)]
    pub only_signed_in: bool,
    #[serde(default = "sixty")]
    pub duration_minutes: u32,
    /// An IANA name; empty: the browser's own.
    #[serde(default)]
    pub time_zone: String,
}

impl Default for MeetingDefaults {
    fn default() -> Self {
        MeetingDefaults {
            waiting_room: true,
            only_signed_in: false,
            duration_minutes: 60,
            time_zone: String::new(),
        }
    }
}

/// Checks defaults to save: the duration a meeting may have, a time zone that exists (or none).
#[cfg(feature = "calendar")]
pub fn check_defaults(d: &MeetingDefaults) -> Result<MeetingDefaults, ScheduleError> {
    if !(MIN_DURATION_MINUTES..=MAX_DURATION_MINUTES).contains(&d.duration_minutes) {
        return Err(ScheduleError::BadDuration);
    }
    let time_zone = match d.time_zone.trim() {
        "" => String::new(),
        tz => parse_tz(tz)?.name().to_string(),
    };
    Ok(MeetingDefaults {
        time_zone,
        ..d.clone()
    })
}

/// Why a schedule was refused (each with its wire code and words for people).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error("Give the meeting a title (at most {MAX_TITLE_CHARS} characters).")]
    BadTitle,
    #[error("Give the start as a date and time, like 2026-12-03T10:00.")]
    BadStart,
    #[error(
        "\"{0}\" is not a time zone we know. Use a name like Europe/Berlin or America/New_York."
    )]
    BadTimeZone(String),
    #[error("A meeting lasts {MIN_DURATION_MINUTES} minutes to {} hours.", MAX_DURATION_MINUTES / 60)]
    BadDuration,
    #[error("A recurring meeting takes place 2 to {MAX_OCCURRENCES} times.")]
    BadOccurrences,
    #[error("This meeting would be over before it starts: choose a time in the future.")]
    InThePast,
    #[error("Choose a start within the next five years.")]
    StartOutOfRange,
    #[error("Co-host \"{0}\" is not an email address.")]
    BadCohost(String),
    #[error("At most {MAX_COHOSTS} co-hosts.")]
    TooManyCohosts,
    #[error("A meeting password is at most 128 characters.")]
    PasswordTooLong,
    #[error("You have {MAX_MEETINGS_PER_ACCOUNT} meetings scheduled: cancel some first.")]
    TooManyMeetings,
    #[error("There is no such meeting (or it is not yours to see).")]
    NotFound,
    #[error("Only the meeting's owner can change or cancel it.")]
    NotOwner,
    #[error("This meeting was cancelled.")]
    Cancelled,
}

impl ScheduleError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ScheduleError::NotFound => ErrorCode::NotFound,
            ScheduleError::NotOwner => ErrorCode::Forbidden,
            ScheduleError::Cancelled => ErrorCode::Conflict,
            ScheduleError::TooManyMeetings => ErrorCode::TooManyRequests,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// A checked schedule (what is stored, bar the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub title: String,
    /// `YYYY-MM-DDTHH:MM`, wall clock in `time_zone`.
    pub start: String,
    pub time_zone: String,
    pub duration_minutes: u32,
    pub recurrence: Recurrence,
    /// 1 for a meeting that does not recur.
    pub occurrences: u32,
    pub waiting_room: bool,
    pub only_signed_in: bool,
    /// Normalised emails, sorted, without duplicates.
    pub cohosts: Vec<String>,
}

#[cfg(feature = "calendar")]
fn parse_start(s: &str) -> Result<NaiveDateTime, ScheduleError> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| ScheduleError::BadStart)
}

#[cfg(feature = "calendar")]
fn parse_tz(s: &str) -> Result<Tz, ScheduleError> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::BadTimeZone(s.chars().take(64).collect()))
}

#[cfg(feature = "calendar")]
/// Checks a form at `now`: the schedule to store (and the password, if one is to be set:
/// `Some(None)` removes it, `None` keeps what there is).
#[allow(clippy::type_complexity)]
pub fn check_form(
    form: &MeetingForm,
    now: Millis,
) -> Result<(Schedule, Option<Option<String>>), ScheduleError> {
    let title = form.title.trim();
    if title.is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.chars().any(char::is_control)
    {
        return Err(ScheduleError::BadTitle);
    }
    let start = parse_start(&form.start)?;
    let tz = parse_tz(&form.time_zone)?;
    // From a year ago to five years ahead (a typo of a year is refused, and the arithmetic on
    // occurrences stays far from chrono's limits).
    const YEAR_MS: Millis = 366 * 24 * 3600 * 1000;
    let start_ms = to_utc_ms(tz, start);
    if start_ms.saturating_add(YEAR_MS) < now || start_ms > now.saturating_add(5 * YEAR_MS) {
        return Err(ScheduleError::StartOutOfRange);
    }
    if !(MIN_DURATION_MINUTES..=MAX_DURATION_MINUTES).contains(&form.duration_minutes) {
        return Err(ScheduleError::BadDuration);
    }
    let occurrences = match form.recurrence {
        Recurrence::None => 1,
        _ => match form.occurrences {
            Some(n) if (2..=MAX_OCCURRENCES).contains(&n) => n,
            _ => return Err(ScheduleError::BadOccurrences),
        },
    };
    if form.cohosts.len() > MAX_COHOSTS {
        return Err(ScheduleError::TooManyCohosts);
    }
    let mut cohosts = form
        .cohosts
        .iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            normalize_email(c).map_err(|_| ScheduleError::BadCohost(c.chars().take(64).collect()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    cohosts.sort();
    cohosts.dedup();
    let password = match &form.password {
        None => None,
        Some(p) if p.is_empty() => Some(None),
        Some(p) if p.chars().count() > 128 => return Err(ScheduleError::PasswordTooLong),
        Some(p) => Some(Some(p.clone())),
    };
    let schedule = Schedule {
        title: title.to_string(),
        start: start.format("%Y-%m-%dT%H:%M").to_string(),
        time_zone: tz.name().to_string(),
        duration_minutes: form.duration_minutes,
        recurrence: form.recurrence,
        occurrences,
        waiting_room: form.waiting_room,
        only_signed_in: form.only_signed_in,
        cohosts,
    };
    // The last occurrence must end after now (a meeting wholly in the past is a mistake).
    match schedule.occurrences_iter().last() {
        Some((_, end)) if end > now => {}
        _ => return Err(ScheduleError::InThePast),
    }
    Ok((schedule, password))
}

#[cfg(feature = "calendar")]
/// `local` in `tz` as milliseconds since the epoch. A wall-clock time the clocks skip (spring
/// forward) is taken as the same time after the gap, as calendar programs do (RFC 5545 3.3.5);
/// one that happens twice (fall back) is the first.
fn to_utc_ms(tz: Tz, local: NaiveDateTime) -> Millis {
    let at = |r: LocalResult<chrono::DateTime<Tz>>| match r {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
        LocalResult::None => None,
    };
    let t = at(tz.from_local_datetime(&local))
        .or_else(|| {
            // In a gap: the offset before it, applied to the wall-clock time.
            let before = at(tz.from_local_datetime(&(local - Duration::hours(3))))?;
            let offset = *before.offset();
            Some(
                Utc.from_utc_datetime(&(local - chrono::Offset::fix(&offset)))
                    .with_timezone(&tz),
            )
        })
        .expect("a wall-clock time three hours earlier exists");
    t.timestamp_millis().max(0) as Millis
}

#[cfg(feature = "calendar")]
impl Schedule {
    fn tz(&self) -> Tz {
        parse_tz(&self.time_zone).unwrap_or(Tz::UTC)
    }

    fn start_local(&self) -> NaiveDateTime {
        parse_start(&self.start).unwrap_or_default()
    }

    /// Every occurrence as `(start, end)` in milliseconds since the epoch, in order.
    pub fn occurrences_iter(&self) -> impl Iterator<Item = (Millis, Millis)> + '_ {
        let (tz, first, step) = (self.tz(), self.start_local(), self.recurrence.step());
        let length = self.duration_minutes as Millis * 60_000;
        (0..self.occurrences).map(move |k| {
            let start = to_utc_ms(tz, first + step * k as i32);
            (start, start + length)
        })
    }

    /// The occurrence that is on now or comes next (`None` when all are over).
    pub fn next_occurrence(&self, now: Millis) -> Option<(Millis, Millis)> {
        self.occurrences_iter().find(|&(_, end)| end > now)
    }

    /// When the last occurrence ends.
    pub fn ends_at(&self) -> Millis {
        self.occurrences_iter().last().map_or(0, |(_, e)| e)
    }

    /// A meeting's time in words, in its own time zone: "Thu 3 Dec 2026, 10:00–11:00
    /// (Europe/Berlin), weekly, 10 times".
    pub fn when_in_words(&self) -> String {
        let start = self.start_local();
        let end = start + Duration::minutes(self.duration_minutes as i64);
        let mut s = format!(
            "{}, {}–{} ({})",
            start.format("%a %-d %b %Y"),
            start.format("%H:%M"),
            end.format("%H:%M"),
            self.time_zone
        );
        match self.recurrence {
            Recurrence::None => {}
            Recurrence::Daily => s.push_str(&format!(", daily, {} times", self.occurrences)),
            Recurrence::Weekly => s.push_str(&format!(", weekly, {} times", self.occurrences)),
        }
        s
    }
}

#[cfg(feature = "calendar")]
/// What the invitation says about who organises it and who is invited.
#[derive(Debug, Clone)]
pub struct Invitation<'a> {
    /// The meeting's stable id (the `.ics` UID is `<id>@edgemeet`).
    pub id: &'a str,
    /// Bumped on every change (RFC 5545 `SEQUENCE`).
    pub sequence: u32,
    pub schedule: &'a Schedule,
    /// The meeting's link (absolute URL).
    pub url: &'a str,
    pub organizer_name: &'a str,
    pub organizer_email: &'a str,
    pub has_password: bool,
    pub cancelled: bool,
    /// When the invitation is made (`DTSTAMP`).
    pub now: Millis,
}

#[cfg(feature = "calendar")]
impl Invitation<'_> {
    /// The invitation as a calendar file (`METHOD:REQUEST`, or `METHOD:CANCEL` with
    /// `STATUS:CANCELLED` for a cancelled meeting), one VEVENT with the meeting's UID, its
    /// sequence, the start and end in its time zone (`TZID`), the recurrence rule, organizer and
    /// co-hosts as attendees.
    pub fn ics(&self) -> String {
        use icalendar::{
            Attendee, Calendar, CalendarDateTime, Component, EventLike, EventStatus, Property,
        };
        let s = self.schedule;
        let start = s.start_local();
        let stamp = Utc
            .timestamp_millis_opt(self.now as i64)
            .single()
            .unwrap_or_default();
        let mut event = icalendar::Event::new();
        event
            .uid(&format!("{}@edgemeet", self.id))
            .sequence(self.sequence)
            .timestamp(stamp)
            .summary(&s.title)
            .description(&self.text())
            .url(self.url)
            .location(self.url)
            .starts(CalendarDateTime::WithTimezone {
                date_time: start,
                tzid: s.time_zone.clone(),
            })
            // (A duration, not an end: an occurrence across a clock change lasts what it lasts.)
            .add_property("DURATION", format!("PT{}M", s.duration_minutes))
            .append_property(
                Property::new("ORGANIZER", format!("mailto:{}", self.organizer_email))
                    .add_parameter("CN", &self.organizer_name.replace('"', ""))
                    .done(),
            );
        if let Some(freq) = s.recurrence.freq() {
            event.add_property("RRULE", format!("FREQ={freq};COUNT={}", s.occurrences));
        }
        for c in &s.cohosts {
            event.attendee(Attendee::new(format!("mailto:{c}")));
        }
        if self.cancelled {
            event.status(EventStatus::Cancelled);
        } else {
            event.status(EventStatus::Confirmed);
        }
        // (`Calendar::empty`: exactly one PRODID — ours.)
        let mut cal = Calendar::empty();
        cal.append_property(Property::new("VERSION", "2.0"))
            .append_property(Property::new(
                "PRODID",
                "-//edgemeet//scheduled meetings//EN",
            ))
            .append_property(Property::new("CALSCALE", "GREGORIAN"))
            .append_property(Property::new(
                "METHOD",
                if self.cancelled { "CANCEL" } else { "REQUEST" },
            ))
            .push(event.done());
        cal.done().to_string()
    }

    /// The invitation as text to copy into a message.
    pub fn text(&self) -> String {
        let s = self.schedule;
        let mut t = format!(
            "{} invites you to an edgemeet meeting.\n\n{}\n{}\n\nJoin: {}\n",
            self.organizer_name,
            s.title,
            s.when_in_words(),
            self.url
        );
        if self.has_password {
            t.push_str("This meeting has a password: ask the organiser for it.\n");
        }
        if s.only_signed_in {
            t.push_str("Sign in to an edgemeet account to join.\n");
        }
        if self.cancelled {
            t = format!("CANCELLED: {t}");
        }
        t
    }
}

/// The reminder for an occurrence from `start` to `end` at `now`, in words ("starts in 8
/// minutes", "has started"), from [`REMINDER_BEFORE_MS`] before it until it ends; `None` outside.
pub fn reminder_due(start: Millis, end: Millis, now: Millis) -> Option<String> {
    if now >= end || now + REMINDER_BEFORE_MS < start {
        return None;
    }
    if now >= start {
        return Some("has started.".into());
    }
    let minutes = (start - now).div_ceil(60_000);
    Some(if minutes == 1 {
        "starts in 1 minute.".into()
    } else {
        format!("starts in {minutes} minutes.")
    })
}

/// What the reminder cron does with a meeting at `now`: the occurrence whose reminder is due (its
/// start; due from [`REMINDER_BEFORE_MS`] before it until it ends), and when to look at the
/// meeting again (the next occurrence's reminder time; `None`: no occurrence is left).
#[cfg(feature = "calendar")]
pub fn reminder_step(sched: &Schedule, now: Millis) -> (Option<Millis>, Option<Millis>) {
    let at = |start: Millis| start.saturating_sub(REMINDER_BEFORE_MS);
    // The latest occurrence in its window (back-to-back or overlapping ones: the one coming up,
    // not the one still on), and the first whose window is still ahead.
    let due = sched
        .occurrences_iter()
        .filter(|&(start, end)| at(start) <= now && now < end)
        .last()
        .map(|(start, _)| start);
    let next = sched
        .occurrences_iter()
        .map(|(start, _)| at(start))
        .find(|&a| a > now);
    (due, next)
}

/// What someone may do with a meeting: its owner everything, a co-host or an invitee see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingRole {
    Owner,
    Cohost,
}

/// `who` (an account's id and email) and a meeting owned by `owner`: their role, if any.
pub fn role_of(
    schedule: &Schedule,
    owner: &str,
    who_id: &str,
    who_email: &str,
) -> Option<MeetingRole> {
    if owner == who_id {
        Some(MeetingRole::Owner)
    } else if schedule.cohosts.iter().any(|c| c == who_email) {
        Some(MeetingRole::Cohost)
    } else {
        None
    }
}

/// Only the owner changes or cancels a meeting; others learn nothing of a meeting not theirs.
pub fn may_change(role: Option<MeetingRole>) -> Result<(), ScheduleError> {
    match role {
        Some(MeetingRole::Owner) => Ok(()),
        Some(MeetingRole::Cohost) => Err(ScheduleError::NotOwner),
        None => Err(ScheduleError::NotFound),
    }
}

/// A meeting as its owner and co-hosts see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingView {
    pub id: String,
    /// The room's name: the link is `/<room>`.
    pub room: String,
    #[serde(flatten)]
    pub schedule: Schedule,
    pub has_password: bool,
    pub sequence: u32,
    pub cancelled: bool,
    pub owner_name: String,
    pub role: MeetingRole,
    /// The occurrence on now or next (`None`: all over).
    pub next_start: Option<Millis>,
    pub next_end: Option<Millis>,
    /// The schedule in words ("Thu 3 Dec 2026, 10:00–11:00 (Europe/Berlin), weekly, 4 times").
    pub when: String,
    /// The reminder cron marked the next occurrence's reminder (it starts within ten minutes).
    #[serde(default)]
    pub reminder: bool,
}

#[cfg(all(test, feature = "calendar"))]
mod tests {
    use super::*;

    fn form(start: &str, tz: &str) -> MeetingForm {
        MeetingForm {
            title: " Weekly sync ".into(),
            start: start.into(),
            time_zone: tz.into(),
            duration_minutes: 60,
            recurrence: Recurrence::None,
            occurrences: None,
            password: None,
            waiting_room: true,
            only_signed_in: false,
            cohosts: vec![],
        }
    }

    /// 2026-11-01T00:00Z
    const NOV_2026: Millis = 1_793_491_200_000;

    fn ms(s: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as Millis
    }

    #[test]
    fn a_form_is_checked_and_refused_in_words() {
        let (s, pw) = check_form(&form("2026-12-03T10:00", "Europe/Berlin"), NOV_2026).unwrap();
        assert_eq!(s.title, "Weekly sync");
        assert_eq!(s.occurrences, 1);
        assert_eq!(pw, None);
        assert_eq!(
            s.occurrences_iter().collect::<Vec<_>>(),
            [(ms("2026-12-03T09:00:00Z"), ms("2026-12-03T10:00:00Z"))]
        );
        let bad = |f: MeetingForm| check_form(&f, NOV_2026).unwrap_err();
        assert_eq!(
            bad(MeetingForm {
                title: "  ".into(),
                ..form("2026-12-03T10:00", "UTC")
            }),
            ScheduleError::BadTitle
        );
        assert_eq!(bad(form("3/12/2026 10am", "UTC")), ScheduleError::BadStart);
        let e = bad(form("2026-12-03T10:00", "Mars/Olympus"));
        assert!(e.to_string().contains("Europe/Berlin"), "{e}");
        assert_eq!(
            bad(MeetingForm {
                duration_minutes: 2,
                ..form("2026-12-03T10:00", "UTC")
            }),
            ScheduleError::BadDuration
        );
        assert_eq!(
            bad(MeetingForm {
                recurrence: Recurrence::Weekly,
                occurrences: Some(1),
                ..form("2026-12-03T10:00", "UTC")
            }),
            ScheduleError::BadOccurrences
        );
        assert_eq!(
            bad(form("2026-10-03T10:00", "UTC")),
            ScheduleError::InThePast
        );
        // A recurring meeting that started in the past but has occurrences to come is fine.
        assert!(check_form(
            &MeetingForm {
                recurrence: Recurrence::Weekly,
                occurrences: Some(10),
                ..form("2026-10-01T10:00", "UTC")
            },
            NOV_2026
        )
        .is_ok());
        let e = bad(MeetingForm {
            cohosts: vec!["not an email".into()],
            ..form("2026-12-03T10:00", "UTC")
        });
        assert_eq!(e, ScheduleError::BadCohost("not an email".into()));
        assert_eq!(e.code(), ErrorCode::BadRequest);
        let (s, pw) = check_form(
            &MeetingForm {
                cohosts: vec![
                    "B@x.org".into(),
                    "b@x.org ".into(),
                    "".into(),
                    "a@x.org".into(),
                ],
                password: Some("".into()),
                ..form("2026-12-03T10:00", "UTC")
            },
            NOV_2026,
        )
        .unwrap();
        assert_eq!(s.cohosts, ["a@x.org", "b@x.org"]);
        assert_eq!(pw, Some(None), "an empty password removes it");
        assert!(serde_json::from_str::<MeetingForm>(
            r#"{"title":"a","start":"x","time_zone":"UTC","duration_minutes":5,"owner":"me"}"#
        )
        .is_err());
    }

    #[test]
    fn weekly_meetings_keep_their_wall_clock_time_across_daylight_saving() {
        // Berlin moves its clocks on 29 March 2026: 10:00 stays 10:00 local, so 09:00Z then 08:00Z.
        let f = MeetingForm {
            recurrence: Recurrence::Weekly,
            occurrences: Some(3),
            ..form("2026-03-22T10:00", "Europe/Berlin")
        };
        let (s, _) = check_form(&f, ms("2026-03-01T00:00:00Z")).unwrap();
        let starts: Vec<_> = s.occurrences_iter().map(|o| o.0).collect();
        assert_eq!(
            starts,
            [
                ms("2026-03-22T09:00:00Z"),
                ms("2026-03-29T08:00:00Z"),
                ms("2026-04-05T08:00:00Z")
            ]
        );
        // The next occurrence from a moment during the second one is the second one.
        assert_eq!(
            s.next_occurrence(ms("2026-03-29T08:30:00Z")).map(|o| o.0),
            Some(starts[1])
        );
        assert_eq!(s.next_occurrence(ms("2026-04-06T00:00:00Z")), None);
        assert_eq!(s.ends_at(), ms("2026-04-05T09:00:00Z"));
        // Daily, across New York's change on 1 November 2026 (fall back): 09:00 local throughout.
        let f = MeetingForm {
            recurrence: Recurrence::Daily,
            occurrences: Some(3),
            ..form("2026-10-31T09:00", "America/New_York")
        };
        let (s, _) = check_form(&f, ms("2026-10-01T00:00:00Z")).unwrap();
        let starts: Vec<_> = s.occurrences_iter().map(|o| o.0).collect();
        assert_eq!(
            starts,
            [
                ms("2026-10-31T13:00:00Z"),
                ms("2026-11-01T14:00:00Z"),
                ms("2026-11-02T14:00:00Z")
            ]
        );
    }

    #[test]
    fn times_the_clocks_skip_or_repeat_are_resolved_as_calendars_do() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 02:30 does not exist on 29 March 2026 in Berlin: it is 03:30 CEST (01:30Z).
        let gap = NaiveDateTime::parse_from_str("2026-03-29T02:30", "%Y-%m-%dT%H:%M").unwrap();
        assert_eq!(to_utc_ms(tz, gap), ms("2026-03-29T01:30:00Z"));
        // 02:30 happens twice on 25 October 2026: the first (CEST, 00:30Z).
        let twice = NaiveDateTime::parse_from_str("2026-10-25T02:30", "%Y-%m-%dT%H:%M").unwrap();
        assert_eq!(to_utc_ms(tz, twice), ms("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn the_invitation_parses_back_with_its_uid_sequence_rule_and_time_zone() {
        use icalendar::{Calendar, Component};
        let f = MeetingForm {
            recurrence: Recurrence::Weekly,
            occurrences: Some(4),
            cohosts: vec!["grace@example.org".into()],
            ..form("2026-12-03T10:00", "Europe/Berlin")
        };
        let (s, _) = check_form(&f, NOV_2026).unwrap();
        let inv = Invitation {
            id: "abc123",
            sequence: 2,
            schedule: &s,
            url: "https://meet.example.org/m-0123",
            organizer_name: "Ada Lovelace",
            organizer_email: "ada@example.org",
            has_password: true,
            cancelled: false,
            now: NOV_2026,
        };
        let text = inv.ics();
        assert!(text.contains("METHOD:REQUEST"), "{text}");
        assert!(
            text.contains("DTSTART;TZID=Europe/Berlin:20261203T100000"),
            "{text}"
        );
        assert!(text.contains("RRULE:FREQ=WEEKLY;COUNT=4"), "{text}");
        let cal: Calendar = text.parse().expect("the .ics parses");
        let ev = cal.events().next().expect("one event");
        assert_eq!(ev.get_uid(), Some("abc123@edgemeet"));
        assert_eq!(ev.get_sequence(), Some(2));
        assert_eq!(ev.get_summary(), Some("Weekly sync"));
        assert!(ev.get_description().unwrap().contains("has a password"));
        assert_eq!(text.matches("PRODID").count(), 1, "{text}");
        assert!(text.contains("DURATION:PT60M"), "{text}");
        assert_eq!(ev.get_attendees().len(), 1);
        // Cancelled: METHOD:CANCEL, STATUS:CANCELLED, same UID, a higher sequence.
        let cancel = Invitation {
            cancelled: true,
            sequence: 3,
            ..inv.clone()
        }
        .ics();
        assert!(
            cancel.contains("METHOD:CANCEL") && cancel.contains("STATUS:CANCELLED"),
            "{cancel}"
        );
        assert!(
            cancel.contains("UID:abc123@edgemeet") && cancel.contains("SEQUENCE:3"),
            "{cancel}"
        );
        let words = inv.text();
        assert!(
            words.contains("Thu 3 Dec 2026, 10:00–11:00 (Europe/Berlin), weekly, 4 times"),
            "{words}"
        );
        assert!(
            words.contains("Join: https://meet.example.org/m-0123"),
            "{words}"
        );
    }

    #[test]
    fn a_reminder_shows_ten_minutes_before_until_the_end() {
        let (start, end) = (1_000_000_000, 1_000_000_000 + 3_600_000);
        assert_eq!(reminder_due(start, end, start - 10 * 60_000 - 1), None);
        assert_eq!(
            reminder_due(start, end, start - 10 * 60_000).as_deref(),
            Some("starts in 10 minutes.")
        );
        assert_eq!(
            reminder_due(start, end, start - 30_000).as_deref(),
            Some("starts in 1 minute.")
        );
        assert_eq!(
            reminder_due(start, end, start + 5).as_deref(),
            Some("has started.")
        );
        assert_eq!(reminder_due(start, end, end), None);
    }

    #[test]
    fn defaults_are_checked_like_a_schedule_and_old_rows_read_as_the_usual_ones() {
        let ok = MeetingDefaults {
            waiting_room: false,
            only_signed_in: true,
            duration_minutes: 30,
            time_zone: " Europe/Berlin ".into(),
        };
        assert_eq!(check_defaults(&ok).unwrap().time_zone, "Europe/Berlin");
        let none = MeetingDefaults {
            time_zone: "".into(),
            ..ok.clone()
        };
        assert_eq!(check_defaults(&none).unwrap().time_zone, "");
        for (bad, err) in [
            (
                MeetingDefaults {
                    duration_minutes: 4,
                    ..ok.clone()
                },
                ScheduleError::BadDuration,
            ),
            (
                MeetingDefaults {
                    time_zone: "Mars/Olympus".into(),
                    ..ok.clone()
                },
                ScheduleError::BadTimeZone("Mars/Olympus".into()),
            ),
        ] {
            assert_eq!(check_defaults(&bad), Err(err));
        }
        // An account saved before a field existed gets its usual value.
        let old: MeetingDefaults = serde_json::from_str(r#"{"only_signed_in":true}"#).unwrap();
        assert_eq!(
            old,
            MeetingDefaults {
                only_signed_in: true,
                ..MeetingDefaults::default()
            }
        );
    }

    #[test]
    fn the_reminder_cron_marks_each_occurrence_once_in_its_window_and_sleeps_between() {
        // Daily at 10:00 UTC, one hour, three times from 3 December.
        let (s, _) = check_form(
            &MeetingForm {
                recurrence: Recurrence::Daily,
                occurrences: Some(3),
                ..form("2026-12-03T10:00", "UTC")
            },
            NOV_2026,
        )
        .unwrap();
        let first = ms("2026-12-03T10:00:00Z");
        let day = 86_400_000;
        // Long before: nothing due; look again ten minutes before the first.
        assert_eq!(
            reminder_step(&s, NOV_2026),
            (None, Some(first - REMINDER_BEFORE_MS))
        );
        // In the window (and while it is on): the first is due; next, the second's window.
        let next = Some(first + day - REMINDER_BEFORE_MS);
        assert_eq!(
            reminder_step(&s, first - REMINDER_BEFORE_MS),
            (Some(first), next)
        );
        assert_eq!(reminder_step(&s, first + 59 * 60_000), (Some(first), next));
        // Once it ended, the second is what comes.
        assert_eq!(reminder_step(&s, first + 3_600_000), (None, next));
        // The last one due: nothing to look at after it; all over: nothing at all.
        let last = first + 2 * day;
        assert_eq!(reminder_step(&s, last - 60_000), (Some(last), None));
        assert_eq!(reminder_step(&s, last + 3_600_000), (None, None));
        // Back to back (24 h every day): ten minutes before the second, the second is due —
        // not the first, still on — and the next look is the third's window.
        let (s, _) = check_form(
            &MeetingForm {
                recurrence: Recurrence::Daily,
                occurrences: Some(3),
                duration_minutes: 1440,
                ..form("2026-12-03T10:00", "UTC")
            },
            NOV_2026,
        )
        .unwrap();
        let second = first + day;
        assert_eq!(
            reminder_step(&s, second - 60_000),
            (Some(second), Some(second + day - REMINDER_BEFORE_MS))
        );
        assert_eq!(
            reminder_step(&s, second - REMINDER_BEFORE_MS - 1),
            (Some(first), Some(second - REMINDER_BEFORE_MS))
        );
    }

    #[test]
    fn only_the_owner_changes_a_meeting_and_strangers_learn_nothing() {
        let (s, _) = check_form(
            &MeetingForm {
                cohosts: vec!["co@x.org".into()],
                ..form("2026-12-03T10:00", "UTC")
            },
            NOV_2026,
        )
        .unwrap();
        assert_eq!(role_of(&s, "u1", "u1", "a@x.org"), Some(MeetingRole::Owner));
        assert_eq!(
            role_of(&s, "u1", "u2", "co@x.org"),
            Some(MeetingRole::Cohost)
        );
        assert_eq!(role_of(&s, "u1", "u3", "z@x.org"), None);
        assert!(may_change(Some(MeetingRole::Owner)).is_ok());
        assert_eq!(
            may_change(Some(MeetingRole::Cohost)),
            Err(ScheduleError::NotOwner)
        );
        assert_eq!(may_change(None), Err(ScheduleError::NotFound));
        assert_eq!(ScheduleError::NotFound.code(), ErrorCode::NotFound);
    }
}
