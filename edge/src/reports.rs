//! Meeting reports on D1 (`meeting_runs`, `attendance`): the room writes them, the meeting's owner
//! reads them. What a report says is `edgemeet_shared::report::aggregate`'s; this only moves rows.
//!
//! Routes (signed in, the meeting's owner; JSON unless said):
//! - `GET /api/reports` → `{reports}`: the runs of my meetings, newest first (at most 100)
//! - `GET /api/reports/{meeting}/{started}` → the report (`MeetingReport`)
//! - `GET /api/reports/{meeting}/{started}/report.csv` → `text/csv`, one line per stint
//!
//! Only the owner reads a report: co-hosts are named by an email address nobody has verified, and a
//! report lists everyone who came.

use edgemeet_shared::report::{
    aggregate, AttendanceEvent, MeetingReport, PollSummary, ReportListing, ReportRow, RunTotals,
};
use edgemeet_shared::schedule::Schedule;
use edgemeet_shared::Millis;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Env, Method, Request, Response};

use crate::accounts::{self, n, s, signed_in, stmt, Ctx, UserRow};
use crate::error::{EdgeError, EdgeResult};

/// The most runs listed.
const LIST_LIMIT: u32 = 100;
/// The most attendance rows read for one report (500 people coming and going ten times each).
const MAX_ROWS: u32 = 20_000;

/// Writes the room's report rows, in order, as one D1 batch (a transaction). Idempotent: an
/// attendance row is written once by its number, totals only replace older totals; rows of a
/// meeting deleted meanwhile (its owner's account went) are skipped.
pub async fn write(env: &Env, rows: &[ReportRow]) -> worker::Result<()> {
    let db = env.d1(accounts::BINDING)?;
    let mut batch = Vec::with_capacity(rows.len());
    for row in rows {
        let st = match row {
            ReportRow::Run {
                meeting,
                started,
                seq,
                ended,
                chat,
                polls,
            } => db
                .prepare(
                    "INSERT INTO meeting_runs (meeting_id, started_at, seq, ended_at, chat_messages, polls) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM meetings WHERE id = ?1) \
                     ON CONFLICT (meeting_id, started_at) DO UPDATE SET seq = excluded.seq, \
                     ended_at = excluded.ended_at, chat_messages = excluded.chat_messages, \
                     polls = excluded.polls WHERE excluded.seq > meeting_runs.seq",
                )
                .bind(&[
                    s(meeting),
                    n(*started),
                    n(*seq),
                    ended.map_or(JsValue::NULL, n),
                    n(Millis::from(*chat)),
                    s(&serde_json::to_string(polls).unwrap_or_else(|_| "[]".into())),
                ])?,
            ReportRow::Attendance {
                meeting,
                started,
                seq,
                person,
                name,
                joined,
                at,
            } => db
                .prepare(
                    "INSERT OR IGNORE INTO attendance (meeting_id, started_at, seq, person, name, joined, at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM meetings WHERE id = ?1)",
                )
                .bind(&[
                    s(meeting),
                    n(*started),
                    n(*seq),
                    n(Millis::from(*person)),
                    s(name),
                    n(Millis::from(*joined)),
                    n(*at),
                ])?,
        };
        batch.push(st);
    }
    if batch.is_empty() {
        return Ok(());
    }
    db.batch(batch).await?;
    Ok(())
}

pub async fn route(req: Request, env: &Env, rest: &[&str]) -> EdgeResult<Response> {
    let ctx = accounts::context(&req, env)?;
    accounts::same_origin_only(&req)?;
    let res = async {
        let user = signed_in(&ctx).await?;
        match (req.method(), rest) {
            (Method::Get, []) => list(&ctx, &user).await,
            (Method::Get, [meeting, started]) => {
                let report = one(&ctx, &user, meeting, started).await?;
                Ok(Response::from_json(&report)?)
            }
            (Method::Get, [meeting, started, "report.csv"]) => {
                let report = one(&ctx, &user, meeting, started).await?;
                csv(&report)
            }
            (m, _) => Err(EdgeError::NotFound(format!(
                "no reports route {m} /api/reports/{}",
                rest.join("/")
            ))),
        }
    }
    .await;
    accounts::with_bookmark(res.unwrap_or_else(EdgeError::into_response), &ctx)
}

#[derive(Deserialize)]
struct ListRow {
    meeting_id: String,
    started_at: f64,
    ended_at: Option<f64>,
    schedule: String,
    attendees: f64,
}

async fn list(ctx: &Ctx, user: &UserRow) -> EdgeResult<Response> {
    let rows: Vec<ListRow> = stmt(
        ctx,
        "SELECT r.meeting_id, r.started_at, r.ended_at, m.schedule, \
         (SELECT COUNT(DISTINCT a.person) FROM attendance a WHERE a.joined = 1 AND \
          a.meeting_id = r.meeting_id AND a.started_at = r.started_at) AS attendees \
         FROM meeting_runs r JOIN meetings m ON m.id = r.meeting_id \
         WHERE m.owner_id = ?1 ORDER BY r.started_at DESC LIMIT ?2",
        &[s(&user.id), n(Millis::from(LIST_LIMIT))],
    )?
    .all()
    .await?
    .results()?;
    let reports: Vec<ReportListing> = rows
        .into_iter()
        .map(|r| ReportListing {
            title: schedule_of(&r.meeting_id, &r.schedule)
                .map(|s| s.title)
                .unwrap_or_default(),
            meeting: r.meeting_id,
            started_at: r.started_at as Millis,
            ended_at: r.ended_at.map(|e| e as Millis),
            attendees: r.attendees as u32,
        })
        .collect();
    Ok(Response::from_json(
        &serde_json::json!({ "reports": reports }),
    )?)
}

#[derive(Deserialize)]
struct RunRow {
    ended_at: Option<f64>,
    chat_messages: f64,
    polls: String,
    schedule: String,
}

#[derive(Deserialize)]
struct EventRow {
    seq: f64,
    person: f64,
    name: String,
    joined: f64,
    at: f64,
}

fn schedule_of(meeting: &str, json: &str) -> EdgeResult<Schedule> {
    serde_json::from_str(json)
        .map_err(|e| EdgeError::Config(format!("meeting {meeting}: stored schedule: {e}")))
}

/// The report of `meeting`'s run that started at `started`, for its owner (anyone else: "not
/// found", as for a report that does not exist).
async fn one(ctx: &Ctx, user: &UserRow, meeting: &str, started: &str) -> EdgeResult<MeetingReport> {
    let not_found = || EdgeError::NotFound("There is no such report.".into());
    let started: Millis = started.parse().map_err(|_| not_found())?;
    let run = stmt(
        ctx,
        "SELECT r.ended_at, r.chat_messages, r.polls, m.schedule \
         FROM meeting_runs r JOIN meetings m ON m.id = r.meeting_id \
         WHERE r.meeting_id = ?1 AND r.started_at = ?2 AND m.owner_id = ?3",
        &[s(meeting), n(started), s(&user.id)],
    )?
    .first::<RunRow>(None)
    .await?
    .ok_or_else(not_found)?;
    let events: Vec<EventRow> = stmt(
        ctx,
        "SELECT seq, person, name, joined, at FROM attendance \
         WHERE meeting_id = ?1 AND started_at = ?2 ORDER BY seq LIMIT ?3",
        &[s(meeting), n(started), n(Millis::from(MAX_ROWS) + 1)],
    )?
    .all()
    .await?
    .results()?;
    let sched = schedule_of(meeting, &run.schedule)?;
    let polls: Vec<PollSummary> = serde_json::from_str(&run.polls).unwrap_or_default();
    let totals = RunTotals {
        meeting: meeting.to_string(),
        title: sched.title,
        time_zone: sched.time_zone,
        started,
        ended: run.ended_at.map(|e| e as Millis),
        chat: run.chat_messages as u32,
        polls,
    };
    let truncated = events.len() > MAX_ROWS as usize;
    let events: Vec<AttendanceEvent> = events
        .into_iter()
        .take(MAX_ROWS as usize)
        .map(|e| AttendanceEvent {
            seq: e.seq as u64,
            person: e.person as u32,
            name: e.name,
            joined: e.joined != 0.0,
            at: e.at as Millis,
        })
        .collect();
    Ok(aggregate(&totals, &events, ctx.now, truncated))
}

fn csv(report: &MeetingReport) -> EdgeResult<Response> {
    let body = report.csv().map_err(|e| EdgeError::Config(e.to_string()))?;
    let res = Response::ok(body)?;
    res.headers()
        .set("content-type", "text/csv; charset=utf-8")?;
    res.headers().set(
        "content-disposition",
        &format!("attachment; filename=\"{}\"", report.file_name()),
    )?;
    Ok(res)
}
