//! Scheduled meetings on D1 (`meetings`, `meeting_cohosts`): schedule, list the upcoming ones,
//! read, change, cancel, and the invitation (`.ics` and text). The rules — what a valid schedule
//! is, its occurrences, who may do what, the invitation — are `edgemeet_shared::schedule`'s.
//!
//! Routes (signed in; JSON):
//! - `POST /api/meetings` a `MeetingForm` → 201 the meeting
//! - `GET  /api/meetings` → `{meetings}`: mine and those I co-host, not over and not cancelled,
//!   soonest first
//! - `GET  /api/meetings/{id}` → the meeting and its invitation text (owner and co-hosts)
//! - `PUT  /api/meetings/{id}` a `MeetingForm` → the meeting (owner; the invitation's sequence goes up)
//! - `POST /api/meetings/{id}/cancel` → 204 (owner; sequence up, `METHOD:CANCEL` from then on)
//! - `GET  /api/meetings/{id}/invitation.ics` → `text/calendar` (owner and co-hosts)
//!
//! A meeting's link is its room, `/m-<32 hex>`: anyone with it may ask to join (the waiting room,
//! the password and "only signed-in people" decide the rest — `join_info` tells the join).

use edgemeet_shared::room::ScheduledAsk;
use edgemeet_shared::schedule::{
    self, check_form, may_change, role_of, Invitation, MeetingForm, MeetingRole, MeetingView,
    Schedule, ScheduleError,
};
use edgemeet_shared::Millis;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Env, Method, Request, Response};

use crate::accounts::{self, body, n, s, signed_in, stmt, Ctx, UserRow};
use crate::error::{EdgeError, EdgeResult};
use crate::password;

/// A meeting row (D1 numbers arrive as f64).
#[derive(Debug, Deserialize)]
struct MeetingRow {
    id: String,
    owner_id: String,
    room: String,
    schedule: String,
    password_hash: Option<String>,
    sequence: f64,
    cancelled: f64,
    owner_name: String,
    owner_email: String,
}

impl MeetingRow {
    fn schedule(&self) -> EdgeResult<Schedule> {
        serde_json::from_str(&self.schedule)
            .map_err(|e| EdgeError::Config(format!("meeting {}: stored schedule: {e}", self.id)))
    }

    fn view(&self, role: MeetingRole, now: Millis) -> EdgeResult<MeetingView> {
        let sched = self.schedule()?;
        let next = sched.next_occurrence(now);
        Ok(MeetingView {
            id: self.id.clone(),
            room: self.room.clone(),
            when: sched.when_in_words(),
            schedule: sched,
            has_password: self.password_hash.is_some(),
            sequence: self.sequence as u32,
            cancelled: self.cancelled != 0.0,
            owner_name: self.owner_name.clone(),
            role,
            next_start: next.map(|o| o.0),
            next_end: next.map(|o| o.1),
            reminder: false,
        })
    }
}

const SELECT: &str = "SELECT m.id, m.owner_id, m.room, m.schedule, m.password_hash, m.sequence, \
     m.cancelled, u.name AS owner_name, u.email AS owner_email \
     FROM meetings m JOIN users u ON u.id = m.owner_id";

pub async fn route(req: Request, env: &Env, rest: &[&str]) -> EdgeResult<Response> {
    let mut ctx = accounts::context(&req, env)?;
    accounts::same_origin_only(&req)?;
    let res = async {
        let user = signed_in(&ctx).await?;
        match (req.method(), rest) {
            (Method::Post, []) => create(req, env, &mut ctx, &user).await,
            (Method::Get, []) => upcoming(&ctx, &user).await,
            (Method::Get, [id]) => one(&req, &ctx, &user, id).await,
            (Method::Put, [id]) => {
                let id = id.to_string();
                update(req, &mut ctx, &user, &id).await
            }
            (Method::Post, [id, "cancel"]) => cancel(&mut ctx, &user, id).await,
            (Method::Get, [id, "invitation.ics"]) => ics(&req, &ctx, &user, id).await,
            (m, _) => Err(EdgeError::NotFound(format!(
                "no meetings route {m} /api/meetings/{}",
                rest.join("/")
            ))),
        }
    }
    .await;
    accounts::with_bookmark(res.unwrap_or_else(EdgeError::into_response), &ctx)
}

/// The meeting `id` and the caller's role in it (a stranger gets "not found": nothing leaks).
async fn load(ctx: &Ctx, user: &UserRow, id: &str) -> EdgeResult<(MeetingRow, MeetingRole)> {
    let row = stmt(ctx, &format!("{SELECT} WHERE m.id = ?1"), &[s(id)])?
        .first::<MeetingRow>(None)
        .await?
        .ok_or(ScheduleError::NotFound)?;
    let role = role_of(&row.schedule()?, &row.owner_id, &user.id, &user.email)
        .ok_or(ScheduleError::NotFound)?;
    Ok((row, role))
}

fn origin(req: &Request) -> EdgeResult<String> {
    Ok(req.url()?.origin().ascii_serialization())
}

async fn create(req: Request, env: &Env, ctx: &mut Ctx, user: &UserRow) -> EdgeResult<Response> {
    accounts::address_limit(env, ctx, "schedule").await?;
    let form: MeetingForm = body(req).await?;
    let (sched, password) = check_form(&form, ctx.now)?;
    let count = stmt(
        ctx,
        "SELECT COUNT(*) AS n FROM meetings WHERE owner_id = ?1 AND cancelled = 0 AND ends_at > ?2",
        &[s(&user.id), n(ctx.now)],
    )?
    .first::<f64>(Some("n"))
    .await?
    .unwrap_or(0.0);
    if count as usize >= schedule::MAX_MEETINGS_PER_ACCOUNT {
        return Err(ScheduleError::TooManyMeetings.into());
    }
    let hash = match password.flatten() {
        Some(p) => Some(password::hash(&p).map_err(EdgeError::Config)?),
        None => None,
    };
    let id = crate::random_id();
    let room = format!("{}{}", schedule::ROOM_PREFIX, crate::random_id());
    let json = serde_json::to_string(&sched).map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut batch = vec![stmt(
        ctx,
        "INSERT INTO meetings (id, owner_id, room, schedule, password_hash, sequence, cancelled, ends_at, created_at, updated_at, remind_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, ?7, 0)",
        &[
            s(&id),
            s(&user.id),
            s(&room),
            s(&json),
            hash.as_deref().map_or(JsValue::NULL, s),
            n(sched.ends_at()),
            n(ctx.now),
        ],
    )?];
    for c in &sched.cohosts {
        batch.push(stmt(
            ctx,
            "INSERT INTO meeting_cohosts (meeting_id, email) VALUES (?1, ?2)",
            &[s(&id), s(c)],
        )?);
    }
    ctx.db.batch(batch).await?;
    let (row, role) = load(ctx, user, &id).await?;
    Ok(Response::from_json(&row.view(role, ctx.now)?)?.with_status(201))
}

async fn upcoming(ctx: &Ctx, user: &UserRow) -> EdgeResult<Response> {
    let rows: Vec<MeetingRow> = stmt(
        ctx,
        &format!(
            "{SELECT} WHERE m.cancelled = 0 AND m.ends_at > ?2 AND (m.owner_id = ?1 OR m.id IN \
             (SELECT meeting_id FROM meeting_cohosts WHERE email = ?3)) LIMIT 1000"
        ),
        &[s(&user.id), n(ctx.now), s(&user.email)],
    )?
    .all()
    .await?
    .results()?;
    let mut views = Vec::with_capacity(rows.len());
    for r in &rows {
        let sched = r.schedule()?;
        if let Some(role) = role_of(&sched, &r.owner_id, &user.id, &user.email) {
            views.push(r.view(role, ctx.now)?);
        }
    }
    // The reminders the cron marked: the page shows a meeting's when its next occurrence has one.
    #[derive(Deserialize)]
    struct Marked {
        meeting_id: String,
        starts_at: f64,
    }
    let marked: Vec<Marked> = stmt(
        ctx,
        "SELECT r.meeting_id, r.starts_at FROM reminders r JOIN meetings m ON m.id = r.meeting_id \
         WHERE m.cancelled = 0 AND r.starts_at > ?2 - 86400000 AND (m.owner_id = ?1 OR m.id IN \
         (SELECT meeting_id FROM meeting_cohosts WHERE email = ?3))",
        &[s(&user.id), n(ctx.now), s(&user.email)],
    )?
    .all()
    .await?
    .results()?;
    for v in &mut views {
        v.reminder = marked
            .iter()
            .any(|r| r.meeting_id == v.id && Some(r.starts_at as Millis) == v.next_start);
    }
    views.sort_by_key(|v| v.next_start);
    Ok(Response::from_json(
        &serde_json::json!({ "meetings": views }),
    )?)
}

async fn one(req: &Request, ctx: &Ctx, user: &UserRow, id: &str) -> EdgeResult<Response> {
    let (row, role) = load(ctx, user, id).await?;
    let view = row.view(role, ctx.now)?;
    let url = format!("{}/{}", origin(req)?, row.room);
    let sched = row.schedule()?;
    let text = invitation(&row, &sched, &url, ctx.now).text();
    Ok(Response::from_json(&serde_json::json!({
        "meeting": view,
        "invitation": text,
        "link": url,
    }))?)
}

fn invitation<'a>(
    row: &'a MeetingRow,
    sched: &'a Schedule,
    url: &'a str,
    now: Millis,
) -> Invitation<'a> {
    Invitation {
        id: &row.id,
        sequence: row.sequence as u32,
        schedule: sched,
        url,
        organizer_name: &row.owner_name,
        organizer_email: &row.owner_email,
        has_password: row.password_hash.is_some(),
        cancelled: row.cancelled != 0.0,
        now,
    }
}

async fn update(req: Request, ctx: &mut Ctx, user: &UserRow, id: &str) -> EdgeResult<Response> {
    let (row, role) = load(ctx, user, id).await?;
    may_change(Some(role))?;
    if row.cancelled != 0.0 {
        return Err(ScheduleError::Cancelled.into());
    }
    let form: MeetingForm = body(req).await?;
    let (sched, password) = check_form(&form, ctx.now)?;
    let hash = match password {
        None => row.password_hash.clone(),
        Some(None) => None,
        Some(Some(p)) => Some(password::hash(&p).map_err(EdgeError::Config)?),
    };
    let json = serde_json::to_string(&sched).map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut batch = vec![
        // (Two edits at once: the last one wins, each with its own sequence number.)
        stmt(
            ctx,
            "UPDATE meetings SET schedule = ?2, password_hash = ?3, sequence = sequence + 1, ends_at = ?4, updated_at = ?5, remind_at = 0 \
             WHERE id = ?1",
            &[
                s(&row.id),
                s(&json),
                hash.as_deref().map_or(JsValue::NULL, s),
                n(sched.ends_at()),
                n(ctx.now),
            ],
        )?,
        stmt(ctx, "DELETE FROM meeting_cohosts WHERE meeting_id = ?1", &[s(&row.id)])?,
    ];
    for c in &sched.cohosts {
        batch.push(stmt(
            ctx,
            "INSERT INTO meeting_cohosts (meeting_id, email) VALUES (?1, ?2)",
            &[s(&row.id), s(c)],
        )?);
    }
    ctx.db.batch(batch).await?;
    let (row, role) = load(ctx, user, id).await?;
    Ok(Response::from_json(&row.view(role, ctx.now)?)?)
}

async fn cancel(ctx: &mut Ctx, user: &UserRow, id: &str) -> EdgeResult<Response> {
    let (row, role) = load(ctx, user, id).await?;
    may_change(Some(role))?;
    if row.cancelled == 0.0 {
        stmt(
            ctx,
            "UPDATE meetings SET cancelled = 1, sequence = sequence + 1, updated_at = ?2, remind_at = NULL WHERE id = ?1",
            &[s(&row.id), n(ctx.now)],
        )?
        .run()
        .await?;
    }
    Ok(Response::empty()?.with_status(204))
}

async fn ics(req: &Request, ctx: &Ctx, user: &UserRow, id: &str) -> EdgeResult<Response> {
    let (row, _) = load(ctx, user, id).await?;
    let sched = row.schedule()?;
    let url = format!("{}/{}", origin(req)?, row.room);
    let text = invitation(&row, &sched, &url, ctx.now).ics();
    let res = Response::ok(text)?;
    res.headers()
        .set("content-type", "text/calendar; charset=utf-8")?;
    res.headers().set(
        "content-disposition",
        "attachment; filename=\"edgemeet-invitation.ics\"",
    )?;
    Ok(res)
}

/// For a join of `room`: nothing for an ad-hoc room; for a scheduled meeting's room, what the
/// room needs to decide (`ScheduledAsk`: the joiner's role from their session, the sign-in rule,
/// the waiting room) and the meeting's password hash. A room named like a scheduled meeting that
/// does not exist, or was cancelled, is refused here.
pub async fn join_info(
    req: &Request,
    env: &Env,
    room: &str,
) -> EdgeResult<Option<(ScheduledAsk, Option<String>)>> {
    if !room.starts_with(schedule::ROOM_PREFIX) {
        return Ok(None);
    }
    // (Over plain HTTP off loopback there are no accounts: joins go on signed out.)
    let ctx = match accounts::context(req, env) {
        Ok(c) => c,
        Err(EdgeError::Account(_)) => accounts::context_signed_out(req, env)?,
        Err(e) => return Err(e),
    };
    let row = stmt(&ctx, &format!("{SELECT} WHERE m.room = ?1"), &[s(room)])?
        .first::<MeetingRow>(None)
        .await?
        .ok_or_else(|| {
            EdgeError::NotFound("There is no such meeting. Check the link you were given.".into())
        })?;
    if row.cancelled != 0.0 {
        return Err(EdgeError::Refused {
            code: edgemeet_shared::protocol::ErrorCode::NotFound,
            message: "This meeting was cancelled by its organiser.".into(),
            retry_after_secs: None,
        });
    }
    let sched = row.schedule()?;
    let user = signed_in(&ctx).await.ok();
    let role = user
        .as_ref()
        .and_then(|u| role_of(&sched, &row.owner_id, &u.id, &u.email));
    Ok(Some((
        ScheduledAsk {
            meeting: row.id.clone(),
            role,
            signed_in: user.is_some(),
            only_signed_in: sched.only_signed_in,
            waiting_room: sched.waiting_room,
            has_password: row.password_hash.is_some(),
        },
        row.password_hash,
    )))
}
