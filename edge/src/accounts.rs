//! Accounts on D1: register, sign in and out, the signed-in person, change password, delete the
//! account, download one's data. The rules (what a valid email or password is, CSRF, the
//! per-account throttle, cookies) are `edgemeet_shared::account`'s; this shell moves rows.
//!
//! Routes (all JSON):
//! - `POST /api/account/register` `{email, name, password}` → 201 the account, a session cookie
//! - `POST /api/account/signin`   `{email, password}` → 200 the account, a new session cookie
//! - `POST /api/account/signout`  → 204, the session ended and its cookie cleared
//! - `GET  /api/account`          → 200 the signed-in account, or 401
//! - `POST /api/account/password` `{current, new}` → 204; every other session ends
//! - `POST /api/account/delete`   `{password}` → 204; the account and its sessions are gone
//! - `GET  /api/account/data`     → everything stored about the person, as a JSON download
//!
//! **Read-your-writes.** Every request opens a D1 session (the Sessions API) from the bookmark
//! the browser sent back (cookie [`BOOKMARK_COOKIE`], or header [`BOOKMARK_HEADER`]); without
//! one, reads may go to any replica (`first-unconstrained`) and writes to the primary. Every
//! answer carries the session's latest bookmark back (cookie and header), so the next request —
//! wherever it lands — sees at least what this one wrote.

use edgemeet_shared::account::{
    self, check_given_password, check_new_password, check_registration, check_same_origin,
    normalize_email, AccountError, AccountView, ChangePasswordRequest, DeleteAccountRequest,
    LoginThrottle, RegisterRequest, RequestSite, SignInRequest, BOOKMARK_COOKIE, BOOKMARK_HEADER,
    SESSION_TTL_MS,
};
use edgemeet_shared::protocol::ErrorCode;
use edgemeet_shared::schedule::{check_defaults, MeetingDefaults};
use edgemeet_shared::Millis;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{
    D1DatabaseSession, D1PreparedStatement, D1SessionConstraint, Env, Method, Request, Response,
};

use crate::error::{EdgeError, EdgeResult};
use crate::password;

/// The D1 binding (wrangler.toml).
pub const BINDING: &str = "DB";
/// Sign-in and registration attempts per client address (wrangler.toml): 20 a minute.
const SIGNIN_LIMITER: &str = "SIGNIN_LIMITER";
const SIGNIN_LIMIT_PERIOD_SECS: u64 = 60;

/// What one request brings: where it was sent, its session token and bookmark.
pub(crate) struct Ctx {
    pub token: Option<String>,
    /// The bookmark the request came with (valid-looking only).
    pub bookmark: Option<String>,
    pub db: D1DatabaseSession,
    pub now: Millis,
    pub addr: String,
    pub user_agent: String,
}

/// The user row (the hash stays here, in the edge, for checking).
#[derive(Debug, Deserialize)]
pub(crate) struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    password_hash: String,
    created_at: f64,
    #[serde(default)]
    failed_logins: Option<f64>,
    #[serde(default)]
    failed_since: Option<f64>,
    /// JSON of `MeetingDefaults` (NULL: the usual ones).
    #[serde(default)]
    meeting_defaults: Option<String>,
}

impl UserRow {
    fn view(&self) -> AccountView {
        AccountView {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            created_at: self.created_at as Millis,
            meeting_defaults: self
                .meeting_defaults
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default(),
        }
    }

    fn throttle(&self) -> LoginThrottle {
        LoginThrottle {
            failures: self.failed_logins.unwrap_or(0.0) as u32,
            since: self.failed_since.map(|s| s as Millis),
        }
    }
}

/// A session as "Download my data" shows it.
#[derive(Debug, Serialize, Deserialize)]
struct SessionRow {
    key: String,
    created_at: f64,
    expires_at: f64,
    user_agent: String,
}

/// Refuses a state-changing request from another site (CSRF), or without a JSON body.
pub(crate) fn same_origin_only(req: &Request) -> EdgeResult<()> {
    let method = req.method();
    if method != Method::Get {
        let headers = req.headers();
        let fetch_site = headers.get("sec-fetch-site")?;
        let origin = headers.get("origin")?;
        let content_type = headers.get("content-type")?;
        let url = req.url()?;
        let own_origin = url.origin().ascii_serialization();
        check_same_origin(RequestSite {
            method: method.as_ref(),
            fetch_site: fetch_site.as_deref(),
            origin: origin.as_deref(),
            own_origin: &own_origin,
            content_type: content_type.as_deref(),
        })?;
    }
    Ok(())
}

pub async fn route(req: Request, env: &Env, rest: &[&str]) -> EdgeResult<Response> {
    let mut ctx = context(&req, env)?;
    same_origin_only(&req)?;
    let res = match (req.method(), rest) {
        (Method::Post, ["register"]) => register(req, env, &mut ctx).await,
        (Method::Post, ["signin"]) => sign_in(req, env, &mut ctx).await,
        (Method::Post, ["signout"]) => sign_out(&mut ctx).await,
        (Method::Get, []) => match signed_in(&ctx).await {
            Ok(user) => Response::from_json(&user.view()).map_err(EdgeError::from),
            Err(e) => Err(e),
        },
        (Method::Post, ["password"]) => change_password(req, env, &mut ctx).await,
        (Method::Post, ["delete"]) => delete(req, env, &mut ctx).await,
        (Method::Get, ["data"]) => my_data(&ctx).await,
        (Method::Put, ["defaults"]) => save_defaults(req, &ctx).await,
        (m, _) => Err(EdgeError::NotFound(format!(
            "no account route {m} /api/account/{}",
            rest.join("/")
        ))),
    };
    // A refusal may follow a write (a wrong password counts): it carries the bookmark too.
    with_bookmark(res.unwrap_or_else(EdgeError::into_response), &ctx)
}

pub(crate) fn context(req: &Request, env: &Env) -> EdgeResult<Ctx> {
    context_with(req, env, true)
}

/// A context without the session (where accounts cannot be: plain HTTP off loopback).
pub(crate) fn context_signed_out(req: &Request, env: &Env) -> EdgeResult<Ctx> {
    context_with(req, env, false)
}

fn context_with(req: &Request, env: &Env, accounts_here: bool) -> EdgeResult<Ctx> {
    let url = req.url()?;
    let headers = req.headers();
    let cookies = headers.get("cookie")?.unwrap_or_default();
    let scheme = url.scheme().to_string();
    let host = url.host_str().unwrap_or_default().to_string();
    if accounts_here {
        account::check_transport(&scheme, &host)?;
    }
    let token = account::cookie(&cookies, account::SESSION_COOKIE)
        .filter(|t| accounts_here && account::is_session_token(t))
        .map(str::to_string);
    let bookmark = headers
        .get(BOOKMARK_HEADER)?
        .or_else(|| account::cookie(&cookies, BOOKMARK_COOKIE).map(str::to_string))
        .filter(|b| account::is_bookmark(b));
    let d1 = env.d1(BINDING)?;
    // Anything that changes state starts at the primary: the throttle's count, a session just
    // ended by a sign-out or a password change, are read there, never from a lagging replica
    // (whatever bookmark — or none — the caller sends). A read starts from the browser's
    // bookmark: at least as new as its last write; without one, any replica.
    let db = match (req.method(), &bookmark) {
        (Method::Get, Some(b)) => d1.with_session(Some(b))?,
        (Method::Get, None) => {
            d1.with_session_constraint(D1SessionConstraint::FirstUnconstrained)?
        }
        _ => d1.with_session_constraint(D1SessionConstraint::FirstPrimary)?,
    };
    Ok(Ctx {
        token,
        db,
        bookmark,
        now: worker::Date::now().as_millis(),
        addr: crate::client_addr(req, env)?,
        user_agent: headers
            .get("user-agent")?
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect(),
    })
}

/// The answer with the D1 session's latest bookmark (cookie and header) when it moved on from
/// the one the request brought (a bookmark D1 does not know is not echoed back for ever: its
/// cookie expires in [`account::BOOKMARK_TTL_SECS`]).
pub(crate) fn with_bookmark(res: Response, ctx: &Ctx) -> EdgeResult<Response> {
    let latest = ctx
        .db
        .get_bookmark()?
        .filter(|b| account::is_bookmark(b.as_str()));
    if let Some(b) = latest.filter(|b| Some(b) != ctx.bookmark.as_ref()) {
        res.headers().set(BOOKMARK_HEADER, &b)?;
        res.headers()
            .append("set-cookie", &account::bookmark_cookie(&b))?;
    }
    Ok(res)
}

/// Most bytes an account request's body may have.
const MAX_BODY: usize = 16 * 1024;

pub(crate) async fn body<T: DeserializeOwned>(mut req: Request) -> EdgeResult<T> {
    let too_large = || EdgeError::BadRequest("The request is too large.".into());
    let declared = req.headers().get("content-length")?;
    if declared
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > MAX_BODY)
    {
        return Err(too_large());
    }
    let text = req.text().await?;
    if text.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_str(&text).map_err(|e| EdgeError::BadRequest(format!("request body: {e}")))
}

pub(crate) fn stmt(ctx: &Ctx, sql: &str, args: &[JsValue]) -> EdgeResult<D1PreparedStatement> {
    Ok(ctx.db.prepare(sql).bind(args)?)
}

pub(crate) fn n(v: Millis) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub(crate) fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

/// Per client address, every sign-in and registration attempt counts (the binding; without it —
/// a misconfigured deployment — attempts go on, and the log says so).
pub(crate) async fn address_limit(env: &Env, ctx: &Ctx, what: &str) -> EdgeResult<()> {
    let limiter = match env.rate_limiter(SIGNIN_LIMITER) {
        Ok(l) => l,
        Err(e) => {
            worker::console_warn!(
                "no {SIGNIN_LIMITER} binding, sign-ins are not rate-limited: {e}"
            );
            return Ok(());
        }
    };
    let key = format!("{what}:{}", edgemeet_shared::room::address_key(&ctx.addr));
    if limiter.limit(key).await?.success {
        return Ok(());
    }
    Err(EdgeError::Refused {
        code: ErrorCode::TooManyRequests,
        message: "Too many sign-in attempts from your network. Try again in a minute.".to_string(),
        retry_after_secs: Some(SIGNIN_LIMIT_PERIOD_SECS),
    })
}

/// A new session for `user`: the token for the cookie, and the row to insert.
fn new_session(ctx: &Ctx, user: &str) -> EdgeResult<(String, D1PreparedStatement)> {
    let token = format!("{}{}", crate::random_id(), crate::random_id());
    let row = stmt(
        ctx,
        "INSERT INTO sessions (key, user_id, created_at, expires_at, user_agent) VALUES (?1, ?2, ?3, ?4, ?5)",
        &[
            s(&account::session_key(&token)),
            s(user),
            n(ctx.now),
            n(ctx.now + SESSION_TTL_MS),
            s(&ctx.user_agent),
        ],
    )?;
    Ok((token, row))
}

fn set_session_cookie(res: &Response, token: Option<&str>) -> EdgeResult<()> {
    res.headers()
        .append("set-cookie", &account::session_cookie(token))?;
    Ok(())
}

async fn user_by_email(ctx: &Ctx, email: &str) -> EdgeResult<Option<UserRow>> {
    Ok(stmt(
        ctx,
        &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
        &[s(email)],
    )?
    .first::<UserRow>(None)
    .await?)
}

/// The columns of a [`UserRow`].
const USER_COLUMNS: &str =
    "id, email, name, password_hash, created_at, failed_logins, failed_since, meeting_defaults";

/// Ends the session whose cookie holds `token`.
fn end_session(ctx: &Ctx, token: &str) -> EdgeResult<D1PreparedStatement> {
    stmt(
        ctx,
        "DELETE FROM sessions WHERE key = ?1",
        &[s(&account::session_key(token))],
    )
}

/// The signed-in person, from the session cookie (expired or unknown → signed out).
pub(crate) async fn signed_in(ctx: &Ctx) -> EdgeResult<UserRow> {
    let Some(token) = &ctx.token else {
        return Err(AccountError::SignedOut.into());
    };
    stmt(
        ctx,
        "SELECT u.id, u.email, u.name, u.password_hash, u.created_at, u.failed_logins, u.failed_since, u.meeting_defaults \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.key = ?1 AND s.expires_at > ?2",
        &[s(&account::session_key(token)), n(ctx.now)],
    )?
    .first::<UserRow>(None)
    .await?
    .ok_or_else(|| AccountError::SignedOut.into())
}

/// How often [`reserve_attempt`] tries its compare-and-set before giving up.
const MAX_ATTEMPT_ROUNDS: usize = 16;

/// Counts a password attempt for `user` before its hash is checked (the throttle's rules,
/// `LoginThrottle::attempt`), stored with a compare-and-set on the row so attempts sent in
/// parallel each count; refused while the account is locked.
async fn reserve_attempt(ctx: &Ctx, user: &UserRow) -> EdgeResult<()> {
    let mut seen = user.throttle();
    // Each round at least one of the attempts racing on the row wins, so N at once need up to N
    // rounds; past that many, the attempt is refused unchecked (never let through).
    for _ in 0..MAX_ATTEMPT_ROUNDS {
        let next = seen.attempt(ctx.now)?;
        let since_was = seen.since.map_or(JsValue::NULL, n);
        let done = stmt(
            ctx,
            "UPDATE users SET failed_logins = ?2, failed_since = ?3 \
             WHERE id = ?1 AND failed_logins = ?4 AND failed_since IS ?5",
            &[
                s(&user.id),
                n(next.failures as Millis),
                next.since.map_or(JsValue::NULL, n),
                n(seen.failures as Millis),
                since_was,
            ],
        )?
        .run()
        .await?;
        if done.meta()?.and_then(|m| m.changes) == Some(1) {
            return Ok(());
        }
        // Someone else's attempt came first: count on top of theirs.
        let Some(now) = stmt(
            ctx,
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            &[s(&user.id)],
        )?
        .first::<UserRow>(None)
        .await?
        else {
            return Err(AccountError::WrongCredentials.into());
        };
        seen = now.throttle();
    }
    Err(EdgeError::Unavailable(
        "Too many sign-ins for this account at once. Try again.".into(),
    ))
}

/// The right password: the count starts again.
fn attempts_cleared(ctx: &Ctx, user: &str) -> EdgeResult<D1PreparedStatement> {
    stmt(
        ctx,
        "UPDATE users SET failed_logins = 0, failed_since = NULL WHERE id = ?1",
        &[s(user)],
    )
}

/// A signed-in person proving it is them again (password change, deletion): limited per address
/// and per account like a sign-in. `Ok(false)`: wrong (and counted).
async fn reauthenticate(env: &Env, ctx: &Ctx, user: &UserRow, password: &str) -> EdgeResult<bool> {
    address_limit(env, ctx, "reauth").await?;
    if check_given_password(password).is_err() {
        return Ok(false);
    }
    reserve_attempt(ctx, user).await?;
    Ok(password::verify(password, &user.password_hash))
}

thread_local! {
    /// A hash to check passwords against when the email has no account, so that answering
    /// "wrong" takes as long as for a real account (no telling which emails have one).
    static DECOY: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
}

fn decoy_check(password: &str) {
    let hash = DECOY.with(|d| {
        d.get_or_init(|| password::hash("decoy").unwrap_or_default())
            .clone()
    });
    let _ = password::verify(password, &hash);
}

async fn register(req: Request, env: &Env, ctx: &mut Ctx) -> EdgeResult<Response> {
    address_limit(env, ctx, "register").await?;
    let r: RegisterRequest = body(req).await?;
    let (email, name) = check_registration(&r)?;
    let hash = password::hash(&r.password).map_err(EdgeError::Config)?;
    let id = crate::random_id();
    let user = stmt(
        ctx,
        "INSERT INTO users (id, email, name, password_hash, created_at, password_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        &[s(&id), s(&email), s(&name), s(&hash), n(ctx.now)],
    )?;
    let (token, session) = new_session(ctx, &id)?;
    let mut batch = vec![user, session];
    // A session this browser had (another account's) ends: one browser, one session.
    if let Some(old) = &ctx.token {
        batch.push(end_session(ctx, old)?);
    }
    // One batch: all rows or none. A taken email fails on the UNIQUE index (no race between
    // a lookup and the insert).
    if let Err(e) = ctx.db.batch(batch).await {
        if e.to_string()
            .contains("UNIQUE constraint failed: users.email")
        {
            return Err(AccountError::EmailTaken.into());
        }
        return Err(e.into());
    }
    let view = AccountView {
        id,
        email,
        name,
        created_at: ctx.now,
        meeting_defaults: Default::default(),
    };
    let res = Response::from_json(&view)?.with_status(201);
    set_session_cookie(&res, Some(&token))?;
    Ok(res)
}

async fn sign_in(req: Request, env: &Env, ctx: &mut Ctx) -> EdgeResult<Response> {
    address_limit(env, ctx, "signin").await?;
    let r: SignInRequest = body(req).await?;
    let email = normalize_email(&r.email)?;
    check_given_password(&r.password)?;
    let Some(user) = user_by_email(ctx, &email).await? else {
        decoy_check(&r.password);
        return Err(AccountError::WrongCredentials.into());
    };
    reserve_attempt(ctx, &user).await?;
    if !password::verify(&r.password, &user.password_hash) {
        return Err(AccountError::WrongCredentials.into());
    }
    // Right: a new session (the one this browser had, if any, ends: rotation at sign-in).
    let (token, session) = new_session(ctx, &user.id)?;
    let mut batch = vec![
        session,
        attempts_cleared(ctx, &user.id)?,
        // Expired sessions of this account go (nothing else would delete them).
        stmt(
            ctx,
            "DELETE FROM sessions WHERE user_id = ?1 AND expires_at <= ?2",
            &[s(&user.id), n(ctx.now)],
        )?,
    ];
    if let Some(old) = &ctx.token {
        batch.push(end_session(ctx, old)?);
    }
    ctx.db.batch(batch).await?;
    let res = Response::from_json(&user.view())?;
    set_session_cookie(&res, Some(&token))?;
    Ok(res)
}

async fn sign_out(ctx: &mut Ctx) -> EdgeResult<Response> {
    if let Some(token) = &ctx.token {
        end_session(ctx, token)?.run().await?;
    }
    let res = Response::empty()?.with_status(204);
    set_session_cookie(&res, None)?;
    Ok(res)
}

async fn change_password(req: Request, env: &Env, ctx: &mut Ctx) -> EdgeResult<Response> {
    let user = signed_in(ctx).await?;
    let r: ChangePasswordRequest = body(req).await?;
    check_new_password(&r.new, &user.email)?;
    if !reauthenticate(env, ctx, &user, &r.current).await? {
        return Err(AccountError::WrongPassword.into());
    }
    let hash = password::hash(&r.new).map_err(EdgeError::Config)?;
    // Every session ends (a thief's too), and this browser gets a new one.
    let (token, session) = new_session(ctx, &user.id)?;
    ctx.db
        .batch(vec![
            stmt(
                ctx,
                "UPDATE users SET password_hash = ?2, password_at = ?3, failed_logins = 0, failed_since = NULL WHERE id = ?1",
                &[s(&user.id), s(&hash), n(ctx.now)],
            )?,
            stmt(
                ctx,
                "DELETE FROM sessions WHERE user_id = ?1",
                &[s(&user.id)],
            )?,
            session,
        ])
        .await?;
    let res = Response::empty()?.with_status(204);
    set_session_cookie(&res, Some(&token))?;
    Ok(res)
}

async fn delete(req: Request, env: &Env, ctx: &mut Ctx) -> EdgeResult<Response> {
    let user = signed_in(ctx).await?;
    let r: DeleteAccountRequest = body(req).await?;
    if !reauthenticate(env, ctx, &user, &r.password).await? {
        return Err(AccountError::WrongPassword.into());
    }
    ctx.db
        .batch(vec![
            stmt(
                ctx,
                "DELETE FROM sessions WHERE user_id = ?1",
                &[s(&user.id)],
            )?,
            stmt(ctx, "DELETE FROM users WHERE id = ?1", &[s(&user.id)])?,
        ])
        .await?;
    let res = Response::empty()?.with_status(204);
    set_session_cookie(&res, None)?;
    Ok(res)
}

/// `PUT /api/account/defaults` a `MeetingDefaults` → the account, with them saved.
async fn save_defaults(req: Request, ctx: &Ctx) -> EdgeResult<Response> {
    let user = signed_in(ctx).await?;
    let asked: MeetingDefaults = body(req).await?;
    let defaults = check_defaults(&asked)?;
    let json = serde_json::to_string(&defaults).map_err(|e| EdgeError::Config(e.to_string()))?;
    stmt(
        ctx,
        "UPDATE users SET meeting_defaults = ?2 WHERE id = ?1",
        &[s(&user.id), s(&json)],
    )?
    .run()
    .await?;
    let mut view = user.view();
    view.meeting_defaults = defaults;
    Ok(Response::from_json(&view)?)
}

/// Everything stored about the signed-in person (not the password hash: it is not theirs to
/// read back, and says nothing about them).
async fn my_data(ctx: &Ctx) -> EdgeResult<Response> {
    let user = signed_in(ctx).await?;
    let sessions: Vec<SessionRow> = stmt(
        ctx,
        "SELECT key, created_at, expires_at, user_agent FROM sessions WHERE user_id = ?1 ORDER BY created_at",
        &[s(&user.id)],
    )?
    .all()
    .await?
    .results()?;
    let current = ctx.token.as_deref().map(account::session_key);
    let sessions: Vec<serde_json::Value> = sessions
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "created_at": r.created_at as Millis,
                "expires_at": r.expires_at as Millis,
                "user_agent": r.user_agent,
                "this_browser": current.as_deref() == Some(r.key.as_str()),
            })
        })
        .collect();
    // The meetings they scheduled (with the schedule as stored) and the runs their reports cover.
    let mut meetings: Vec<serde_json::Value> = stmt(
        ctx,
        "SELECT id, room, schedule, cancelled, created_at, updated_at FROM meetings WHERE owner_id = ?1 ORDER BY created_at",
        &[s(&user.id)],
    )?
    .all()
    .await?
    .results()?;
    for m in &mut meetings {
        if let Some(text) = m
            .get("schedule")
            .and_then(|v| v.as_str())
            .map(str::to_string)
        {
            m["schedule"] = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        }
    }
    let runs: Vec<serde_json::Value> = stmt(
        ctx,
        "SELECT r.meeting_id, r.started_at, r.ended_at, r.chat_messages, \
         (SELECT COUNT(DISTINCT a.person) FROM attendance a \
          WHERE a.joined = 1 AND a.meeting_id = r.meeting_id AND a.started_at = r.started_at) AS attendees \
         FROM meeting_runs r JOIN meetings m ON m.id = r.meeting_id WHERE m.owner_id = ?1 ORDER BY r.started_at",
        &[s(&user.id)],
    )?
    .all()
    .await?
    .results()?;
    let data = serde_json::json!({
        "exported_at": ctx.now,
        "account": user.view(),
        "meetings": meetings,
        "meeting_reports": runs,
        "sign_in": {
            "failed_logins": user.failed_logins.unwrap_or(0.0) as u64,
            "failed_since": user.failed_since.map(|s| s as Millis),
        },
        "sessions": sessions,
    });
    let res = Response::from_json(&data)?;
    res.headers().set(
        "content-disposition",
        "attachment; filename=\"edgemeet-my-data.json\"",
    )?;
    Ok(res)
}
