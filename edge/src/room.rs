//! The Room Durable Object (one per room): the shell around `edgemeet_shared::room::Room`.
//!
//! It only performs effects. Each event (a socket opened, a frame, a close, an SFU callback, the
//! alarm) becomes an [`Input`]; the core's [`Output`]s are carried out in order: frames sent, rows
//! written to the object's SQLite storage (exactly the rows the core names), SFU calls, probes and
//! registry questions made, their outcomes fed back as inputs. After every step the alarm is set to
//! the core's [`Room::poll_timeout`]. Sockets use the hibernation API (tag = connection id,
//! attachment = claims), so the object can be evicted between events: it is rebuilt from storage
//! ([`Room::restore`]) and told which sockets are still open.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use edgemeet_shared::control;
use edgemeet_shared::error::{ErrorCode, WireError};
use edgemeet_shared::protocol::{
    AnswerBody, BlockBody, OfferBody, RecordBody, ScopesBody, ServerMessage, SfuDraining, SfuEvent,
    SfuSignal, ViewsBody, MAX_FRAME_BYTES,
};
use edgemeet_shared::region::SfuChoice;
use edgemeet_shared::report::ReportRow;
use edgemeet_shared::room::{
    Admission, Changes, HttpReply, Input, JoinAsk, Output, Room, SfuCall, CLOSE_TOO_BIG,
    WAITING_TAG,
};
use edgemeet_shared::token::Claims;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::error::EdgeError;
use crate::registry::{self, ChooseRequest, ReplaceRequest, SuspendRequest};
use crate::{post_to, random_id, token_key};

pub const BINDING: &str = "ROOMS";

/// How long a batch of report rows may take to write before the room moves on (and tries again).
const REPORT_WRITE_LIMIT_MS: u64 = 10_000;

/// The room's tables: its own row, one row per member, one per revoked token, chat message, poll,
/// and per report row waiting for D1.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chat (n INTEGER PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS polls (n INTEGER PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS report (n INTEGER PRIMARY KEY, v TEXT NOT NULL);";

/// What each accepted socket carries through hibernation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    conn: String,
    claims: Claims,
}

#[derive(Deserialize)]
struct ValueRow {
    v: String,
}

#[derive(Deserialize)]
struct MemberRow {
    id: String,
    v: String,
}

#[derive(Deserialize)]
struct RevokedRow {
    jti: String,
    until: f64,
}

/// Body of the dev-only `/dev-evict`.
#[derive(Debug, Deserialize)]
pub struct EvictRequest {
    /// `memory`: forget the in-memory room (as after hibernation: sockets stay open);
    /// `restart`: reset the whole object (its sockets drop too), as a runtime restart would.
    pub mode: String,
}

#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    room: RefCell<Option<Room>>,
    /// The room's answer to the join being handled (`Output::JoinAnswer`).
    answer: RefCell<Option<Admission>>,
    /// The alarm as last set by this instance (`Some(None)`: none), to skip redundant writes.
    alarm: Cell<Option<Option<u64>>>,
    schema: Cell<bool>,
}

/// Outputs that need awaiting; their outcome comes back as the next input.
enum Job {
    Sfu {
        sfu: SfuChoice,
        participant: String,
        call: SfuCall,
    },
    Probe(SfuChoice),
    Find {
        failed: String,
        exclude: Vec<String>,
    },
    Down {
        sfu: String,
        reason: String,
    },
    Hash(String),
    Report {
        upto: u64,
        rows: Vec<ReportRow>,
    },
    /// A new recording's id (128 random bits).
    MintRecordingId,
    RecordingStarted(edgemeet_shared::room::RecordingRow),
    RecordingStopped {
        row: edgemeet_shared::room::RecordingRow,
        ended_at: u64,
        names: std::collections::BTreeMap<String, String>,
    },
}

impl RoomObject {
    fn sql_exec(&self, query: &str, bindings: Vec<worker::SqlStorageValue>) -> Result<()> {
        // Iterating the cursor runs the statement to completion.
        let _: Vec<serde_json::Value> = self
            .state
            .storage()
            .sql()
            .exec(query, bindings)?
            .to_array()?;
        Ok(())
    }

    fn ensure_schema(&self) -> Result<()> {
        if !self.schema.get() {
            for stmt in SCHEMA.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                self.sql_exec(stmt, Vec::new())?;
            }
            self.schema.set(true);
        }
        Ok(())
    }

    /// Brings the room into memory. `name`: the room's name (for a room never stored); `None`
    /// loads only a stored room. Returns [`Input::Restored`] when the room came from storage, to be
    /// fed before anything else.
    fn load(&self, name: Option<&str>) -> Result<Option<Input>> {
        if self.room.borrow().is_some() {
            return Ok(None);
        }
        self.ensure_schema()?;
        let sql = self.state.storage().sql();
        let meta: Vec<ValueRow> = sql
            .exec("SELECT v FROM meta WHERE k = 'room'", None)?
            .to_array()?;
        let Some(meta) = meta.into_iter().next() else {
            let Some(name) = name else {
                return Ok(None);
            };
            *self.room.borrow_mut() = Some(Room::new(name));
            return Ok(None);
        };
        let members: Vec<MemberRow> = sql.exec("SELECT id, v FROM members", None)?.to_array()?;
        let revoked: Vec<RevokedRow> = sql
            .exec("SELECT jti, until FROM revoked", None)?
            .to_array()?;
        let chat: Vec<ValueRow> = sql
            .exec("SELECT v FROM chat ORDER BY n", None)?
            .to_array()?;
        let polls: Vec<ValueRow> = sql
            .exec("SELECT v FROM polls ORDER BY n", None)?
            .to_array()?;
        let report: Vec<ValueRow> = sql
            .exec("SELECT v FROM report ORDER BY n", None)?
            .to_array()?;
        let (mut room, mut errors) = Room::restore(
            name.unwrap_or_default(),
            Some(&meta.v),
            members.iter().map(|m| (m.id.as_str(), m.v.as_str())),
            revoked.iter().map(|r| (r.jti.as_str(), r.until as u64)),
            chat.iter().map(|c| c.v.as_str()),
            polls.iter().map(|p| p.v.as_str()),
        );
        errors.extend(room.restore_report_outbox(report.iter().map(|r| r.v.as_str())));
        for e in errors {
            worker::console_error!("room {}: {e}", room.name());
        }
        let open = self
            .state
            .get_websockets()
            .iter()
            .filter_map(Self::attachment)
            .map(|a| a.conn)
            .collect();
        *self.room.borrow_mut() = Some(room);
        self.alarm.set(None); // unknown: set it again after the next step
        Ok(Some(Input::Restored { open }))
    }

    /// Writes exactly the rows the core says changed.
    fn persist(&self, c: Changes) -> Result<()> {
        if let Some(meta) = c.meta {
            self.sql_exec(
                "INSERT OR REPLACE INTO meta (k, v) VALUES ('room', ?)",
                vec![meta.into()],
            )?;
        }
        for (id, row) in c.members {
            match row {
                Some(v) => self.sql_exec(
                    "INSERT OR REPLACE INTO members (id, v) VALUES (?, ?)",
                    vec![id.into(), v.into()],
                )?,
                None => self.sql_exec("DELETE FROM members WHERE id = ?", vec![id.into()])?,
            }
        }
        for (n, row) in c.chat {
            match row {
                Some(v) => self.sql_exec(
                    "INSERT OR REPLACE INTO chat (n, v) VALUES (?, ?)",
                    vec![(n as i64).into(), v.into()],
                )?,
                None => self.sql_exec("DELETE FROM chat WHERE n = ?", vec![(n as i64).into()])?,
            }
        }
        for (n, row) in c.polls {
            match row {
                Some(v) => self.sql_exec(
                    "INSERT OR REPLACE INTO polls (n, v) VALUES (?, ?)",
                    vec![(n as i64).into(), v.into()],
                )?,
                None => self.sql_exec("DELETE FROM polls WHERE n = ?", vec![(n as i64).into()])?,
            }
        }
        for (n, row) in c.report {
            match row {
                Some(v) => self.sql_exec(
                    "INSERT OR REPLACE INTO report (n, v) VALUES (?, ?)",
                    vec![(n as i64).into(), v.into()],
                )?,
                None => self.sql_exec("DELETE FROM report WHERE n = ?", vec![(n as i64).into()])?,
            }
        }
        for (jti, until) in c.revoked {
            match until {
                Some(u) => self.sql_exec(
                    "INSERT OR REPLACE INTO revoked (jti, until) VALUES (?, ?)",
                    vec![jti.into(), (u as i64).into()],
                )?,
                None => self.sql_exec("DELETE FROM revoked WHERE jti = ?", vec![jti.into()])?,
            }
        }
        Ok(())
    }

    /// Runs one input through the core and performs everything it asks for, feeding the outcomes
    /// of calls back in; then sets the alarm to the core's next deadline.
    async fn step(&self, name: Option<&str>, input: Input) -> Result<()> {
        let mut queue = VecDeque::from([input]);
        let mut write_failed = false;
        while let Some(mut input) = queue.pop_front() {
            // (Re)load before every input: the room may have been dropped from memory while this
            // step awaited a call (the dev evict hook, a failed write). Rebuilt from storage, the
            // room first learns which sockets survived.
            if let Some(restored) = self.load(name)? {
                queue.push_front(input);
                input = restored;
            }
            let now = worker::Date::now().as_millis();
            let outputs: Vec<Output> = {
                let mut slot = self.room.borrow_mut();
                let Some(room) = slot.as_mut() else {
                    return Ok(()); // an alarm or callback for a room that was never stored
                };
                room.handle_input(now, input);
                std::iter::from_fn(|| room.poll_output()).collect()
            };
            let mut jobs = Vec::new();
            for output in outputs {
                match output {
                    Output::Send { conn, msg } => {
                        for ws in self.state.get_websockets_with_tag(&conn) {
                            let _ = ws.send(&msg);
                        }
                    }
                    Output::Broadcast { except, msg } => self.broadcast(except.as_deref(), &msg),
                    Output::Close { conn, code, reason } => {
                        for ws in self.state.get_websockets_with_tag(&conn) {
                            let _ = ws.close(Some(code), Some(&reason));
                        }
                    }
                    Output::JoinAnswer(answer) => *self.answer.borrow_mut() = Some(answer),
                    Output::HashPassword { password } => jobs.push(Job::Hash(password)),
                    Output::Persist(changes) => {
                        if let Err(e) = self.persist(changes) {
                            // Memory and storage disagree now: forget the room in memory (the next
                            // input rebuilds it from what was stored) and carry on with the rest.
                            worker::console_error!("room {}: cannot store: {e}", self.name());
                            *self.room.borrow_mut() = None;
                            write_failed = true;
                        }
                    }
                    Output::Warn(w) => worker::console_warn!("room {}: {w}", self.name()),
                    Output::IssueToken { conn, claims } => self.issue_token(&conn, &claims),
                    Output::Sfu {
                        sfu,
                        participant,
                        call,
                    } => jobs.push(Job::Sfu {
                        sfu,
                        participant,
                        call,
                    }),
                    Output::ProbeSfu { sfu } => jobs.push(Job::Probe(sfu)),
                    Output::FindSfu { failed, exclude } => jobs.push(Job::Find { failed, exclude }),
                    Output::SfuDown { sfu, reason } => jobs.push(Job::Down { sfu, reason }),
                    Output::WriteReport { upto, rows } => jobs.push(Job::Report { upto, rows }),
                    Output::MintRecordingId => jobs.push(Job::MintRecordingId),
                    Output::RecordingStarted(row) => jobs.push(Job::RecordingStarted(row)),
                    Output::RecordingStopped {
                        row,
                        ended_at,
                        names,
                    } => jobs.push(Job::RecordingStopped {
                        row,
                        ended_at,
                        names,
                    }),
                }
            }
            for job in jobs {
                if let Some(next) = self.perform(job).await {
                    queue.push_back(next);
                }
            }
        }
        if write_failed && self.room.borrow().is_none() {
            // Nothing left to set the alarm from: fail, so an alarm is retried by the platform.
            return Err(worker::Error::RustError(
                "the room's storage refused a write".into(),
            ));
        }
        self.sync_alarm().await
    }

    fn name(&self) -> String {
        self.room
            .borrow()
            .as_ref()
            .map(|r| r.name().to_string())
            .unwrap_or_default()
    }

    /// To every member's socket (never a waiting-room socket) except `except`.
    fn broadcast(&self, except: Option<&str>, msg: &ServerMessage) {
        let Ok(text) = serde_json::to_string(msg) else {
            return;
        };
        for ws in self.state.get_websockets() {
            let tags = self.state.get_tags(&ws);
            let skip = tags
                .iter()
                .any(|t| t == WAITING_TAG || Some(t.as_str()) == except);
            if !skip {
                // A socket that is already closing may refuse; its close event cleans up.
                let _ = ws.send_with_str(&text);
            }
        }
    }

    fn issue_token(&self, conn: &str, claims: &Claims) {
        let signed = token_key(&self.env)
            .map_err(|e| e.to_string())
            .and_then(|k| k.sign(claims).map_err(|e| e.to_string()));
        match signed {
            Ok(token) => {
                let msg = ServerMessage::Token {
                    token,
                    expires_at_ms: claims.exp * 1000,
                };
                for ws in self.state.get_websockets_with_tag(conn) {
                    let _ = ws.send(&msg);
                }
            }
            Err(e) => worker::console_error!("cannot sign a fresh room token: {e}"),
        }
    }

    /// Sets the alarm to the core's next deadline (or removes it).
    async fn sync_alarm(&self) -> Result<()> {
        let Some(want) = self.room.borrow().as_ref().map(Room::poll_timeout) else {
            return Ok(()); // not in memory: set again after the next load
        };
        if self.alarm.get() == Some(want) {
            return Ok(());
        }
        let set = match want {
            // An absolute time (an `i64` would be taken as an offset from now).
            Some(at) => {
                let when = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at as f64));
                self.state
                    .storage()
                    .set_alarm(worker::ScheduledTime::new(when))
                    .await
            }
            None => self.state.storage().delete_alarm().await,
        };
        if set.is_ok() {
            self.alarm.set(Some(want));
        }
        set
    }

    /// Performs one awaited output; returns the input that reports its outcome.
    async fn perform(&self, job: Job) -> Option<Input> {
        let room = self.name();
        match job {
            Job::Sfu {
                sfu,
                participant,
                call,
            } => {
                let kind = call.kind();
                let reply = self.call_sfu(&room, &sfu, &participant, call).await;
                Some(Input::SfuReply {
                    sfu: sfu.id,
                    participant,
                    call: kind,
                    reply,
                })
            }
            Job::Probe(sfu) => {
                let path = format!("/v1/rooms/{room}");
                let reply = match self.control_secret() {
                    Ok(secret) => {
                        with_timeout(
                            PROBE_TIMEOUT_MS,
                            sfu_request(&secret, &sfu.url, Method::Get, &path, String::new()),
                        )
                        .await
                    }
                    Err(reply) => reply,
                };
                Some(Input::Probed { sfu: sfu.id, reply })
            }
            Job::Find { failed, exclude } => {
                let ask = ReplaceRequest {
                    room: room.clone(),
                    dead: failed,
                    exclude,
                };
                let result = async {
                    let stub = self
                        .env
                        .durable_object(registry::BINDING)?
                        .get_by_name(registry::NAME)?;
                    let mut res = post_to(
                        &stub,
                        "https://registry/replace",
                        serde_json::to_string(&ask)?,
                    )
                    .await?;
                    if res.status_code() != 200 {
                        let e: WireError = res.json().await?;
                        return Ok(Err(e.message));
                    }
                    Ok::<_, worker::Error>(Ok(res.json::<SfuChoice>().await?))
                }
                .await
                .unwrap_or_else(|e: worker::Error| Err(e.to_string()));
                Some(Input::SfuFound { result })
            }
            Job::MintRecordingId => Some(Input::RecordingMinted {
                id: crate::random_id(),
            }),
            // Who may watch it: written before the SFU has anything to upload (tried three times;
            // a recording D1 never heard of is refused by the upload and dropped by the SFU).
            Job::RecordingStarted(row) => {
                for attempt in 1..=3 {
                    match crate::recordings::started(&self.env, &row).await {
                        Ok(()) => break,
                        Err(e) => worker::console_error!(
                            "room {room}: recording {} not written down (attempt {attempt}): {e}",
                            row.id
                        ),
                    }
                }
                None
            }
            Job::RecordingStopped {
                row,
                ended_at,
                names,
            } => {
                // The start's row again (its write may have failed, or not landed yet), then its end.
                let id = row.id.clone();
                let _ = crate::recordings::started(&self.env, &row).await;
                if let Err(e) = crate::recordings::stopped(&self.env, &id, ended_at, &names).await {
                    worker::console_error!("room {room}: recording {id}'s end not written: {e}");
                }
                None
            }
            Job::Report { upto, rows } => {
                // Bounded (the core also counts a batch unanswered for long as failed): the room's
                // step, and its alarm, wait for it.
                let write = Box::pin(crate::reports::write(&self.env, &rows));
                let limit = Box::pin(worker::Delay::from(std::time::Duration::from_millis(
                    REPORT_WRITE_LIMIT_MS,
                )));
                let ok = match futures_util::future::select(write, limit).await {
                    futures_util::future::Either::Left((Ok(()), _)) => true,
                    futures_util::future::Either::Left((Err(e), _)) => {
                        worker::console_warn!("room {room}: report rows not written yet: {e}");
                        false
                    }
                    futures_util::future::Either::Right(_) => {
                        worker::console_warn!(
                            "room {room}: D1 took over {REPORT_WRITE_LIMIT_MS} ms to write report rows"
                        );
                        false
                    }
                };
                Some(Input::ReportWritten { upto, ok })
            }
            Job::Hash(password) => Some(Input::PasswordHashed {
                hash: crate::password::hash(&password)
                    .map_err(|e| worker::console_error!("password hash: {e}"))
                    .ok(),
            }),
            Job::Down { sfu, reason } => {
                worker::console_warn!("room {room}: SFU {sfu} failing ({reason}): no new rooms");
                let body = serde_json::to_string(&SuspendRequest {
                    sfu,
                    draining: false,
                })
                .ok()?;
                let stub = self
                    .env
                    .durable_object(registry::BINDING)
                    .ok()?
                    .get_by_name(registry::NAME)
                    .ok()?;
                if let Err(e) = post_to(&stub, "https://registry/suspend", body).await {
                    worker::console_warn!("registry suspend: {e}");
                }
                None
            }
        }
    }

    fn control_secret(&self) -> std::result::Result<String, HttpReply> {
        self.env
            .secret("CONTROL_SECRET")
            .map(|s| s.to_string())
            .map_err(|_| {
                worker::console_error!("CONTROL_SECRET is not set");
                HttpReply::Answered {
                    status: 500,
                    body: serde_json::to_string(&WireError {
                        code: ErrorCode::Internal,
                        message: "The server is misconfigured (no control secret).".into(),
                    })
                    .unwrap_or_default(),
                }
            })
    }

    /// Performs one SFU control call.
    async fn call_sfu(
        &self,
        room: &str,
        sfu: &SfuChoice,
        participant: &str,
        call: SfuCall,
    ) -> HttpReply {
        let secret = match self.control_secret() {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        let base = format!("/v1/rooms/{room}/participants/{participant}");
        let (method, path, body) = match call {
            SfuCall::Offer {
                sdp, block, scope, ..
            } => (
                Method::Post,
                format!("{base}/offer"),
                to_json(&OfferBody { sdp, block, scope }),
            ),
            // About the whole room, not one participant.
            SfuCall::Scopes { version, scopes } => (
                Method::Post,
                format!("/v1/rooms/{room}/scopes"),
                to_json(&ScopesBody { version, scopes }),
            ),
            SfuCall::Record { version, recording } => (
                Method::Post,
                format!("/v1/rooms/{room}/recording"),
                to_json(&RecordBody { version, recording }),
            ),
            SfuCall::Answer { sdp, generation } => (
                Method::Post,
                format!("{base}/answer"),
                to_json(&AnswerBody { sdp, generation }),
            ),
            SfuCall::Leave => (Method::Delete, base, String::new()),
            SfuCall::Views { views } => (
                Method::Post,
                format!("{base}/views"),
                to_json(&ViewsBody { views }),
            ),
            SfuCall::Block {
                audio,
                video,
                screen,
            } => (
                Method::Post,
                format!("{base}/block"),
                to_json(&BlockBody {
                    audio,
                    video,
                    screen,
                }),
            ),
        };
        with_timeout(
            CALL_TIMEOUT_MS,
            sfu_request(&secret, &sfu.url, method, &path, body),
        )
        .await
    }

    /// The room's SFU for a joiner: the one it keeps, or the registry's choice for a first join.
    async fn assign_sfu(&self, mut req: Request) -> Result<Response> {
        let ask: ChooseRequest = req.json().await?;
        if let Some(restored) = self.load(Some(&ask.room))? {
            self.step(Some(&ask.room), restored).await?;
        }
        let now = worker::Date::now().as_millis();
        let kept = self
            .room
            .borrow()
            .as_ref()
            .and_then(|r| r.sfu_for_join(now));
        if let Some(choice) = kept {
            return Response::from_json(&choice);
        }
        let stub = self
            .env
            .durable_object(registry::BINDING)?
            .get_by_name(registry::NAME)?;
        let mut res = post_to(
            &stub,
            "https://registry/choose",
            serde_json::to_string(&ask)?,
        )
        .await?;
        if res.status_code() != 200 {
            return Ok(res); // "no media server available", passed on as is
        }
        let choice: SfuChoice = res.json().await?;
        self.step(Some(&ask.room), Input::SfuChosen { choice })
            .await?;
        let kept = self.room.borrow().as_ref().and_then(|r| r.sfu().cloned());
        match kept {
            Some(c) => Response::from_json(&c),
            None => Response::error("no media server", 503),
        }
    }

    /// Dev/test only (the worker routes here only when its dev override var is set): the object
    /// forgets everything it holds in memory, so the next event rebuilds the room from storage, as
    /// after an eviction. `restart` also drops every socket (code 1012, "service restart"), as a
    /// runtime restart would. (The runtime's own `ctx.abort()` cannot be used from Rust: it throws
    /// through the wasm instance, which then refuses every later call.)
    fn evict(&self, mode: &str) -> Result<Response> {
        *self.room.borrow_mut() = None;
        self.alarm.set(None);
        if mode == "restart" {
            for ws in self.state.get_websockets() {
                let _ = ws.close(Some(1012), Some("restarting"));
            }
        }
        Response::empty()
    }

    fn attachment(ws: &WebSocket) -> Option<Attachment> {
        ws.deserialize_attachment().ok().flatten()
    }
}

/// A request body (plain structs, which always serialise).
fn to_json(body: &impl Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

/// How long a probe of an SFU may take before it counts as unreachable.
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// How long any other control call may take (an answer to an offer takes well under a second): a
/// hung SFU must not hold up the rest of the room's work.
const CALL_TIMEOUT_MS: u64 = 5_000;

/// `req` within `ms`, or unreachable.
pub(crate) async fn with_timeout(
    ms: u64,
    req: impl std::future::Future<Output = HttpReply>,
) -> HttpReply {
    use futures_util::future::{select, Either};
    let timeout = Box::pin(worker::Delay::from(std::time::Duration::from_millis(ms)));
    match select(Box::pin(req), timeout).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => HttpReply::Unreachable {
            reason: format!("no answer within {ms} ms"),
        },
    }
}

/// A signed request to an SFU's control API.
pub(crate) async fn sfu_request(
    secret: &str,
    base_url: &str,
    method: Method,
    path: &str,
    body: String,
) -> HttpReply {
    let sent = async {
        let now = worker::Date::now().as_millis();
        let sig = control::sign(
            secret.as_bytes(),
            method.as_ref(),
            path,
            body.as_bytes(),
            now,
        )
        .map_err(|e| e.to_string())?;
        let headers = worker::Headers::new();
        headers
            .set(control::SIGNATURE_HEADER, &sig)
            .map_err(|e| e.to_string())?;
        headers
            .set("content-type", "application/json")
            .map_err(|e| e.to_string())?;
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if !body.is_empty() {
            init.with_body(Some(body.clone().into()));
        }
        let req =
            Request::new_with_init(&format!("{}{path}", base_url.trim_end_matches('/')), &init)
                .map_err(|e| e.to_string())?;
        let mut res = worker::Fetch::Request(req)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = res.text().await.unwrap_or_default();
        Ok::<_, String>((res.status_code(), text))
    }
    .await;
    match sent {
        Ok((status, body)) => HttpReply::Answered { status, body },
        Err(reason) => HttpReply::Unreachable { reason },
    }
}

/// The room's name, from the `room` query parameter the worker adds to its internal calls.
fn ask_room(req: &Request) -> Result<String> {
    req.url()?
        .query_pairs()
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| worker::Error::RustError("internal call without ?room=".into()))
}

/// Accepts a socket only to tell the client why it is refused, then closes it.
fn refuse(code: u16, err: ErrorCode, message: String) -> Result<Response> {
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    pair.server.send(&ServerMessage::Error {
        code: err,
        message: message.clone(),
    })?;
    let reason: String = message.chars().take(100).collect();
    pair.server.close(Some(code), Some(reason))?;
    Response::from_websocket(pair.client)
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        RoomObject {
            state,
            env,
            room: RefCell::new(None),
            answer: RefCell::new(None),
            alarm: Cell::new(None),
            schema: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.method() == Method::Get && req.path() == "/relay" {
            // May this token's holder get TURN credentials (the room knows who was removed)?
            let name = ask_room(&req)?;
            let token = req
                .url()?
                .query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if let Some(restored) = self.load(Some(&name))? {
                self.step(Some(&name), restored).await?;
            }
            let key = match token_key(&self.env) {
                Ok(k) => k,
                Err(e) => return Ok(e.into_response()),
            };
            let now_secs = worker::Date::now().as_millis() / 1000;
            let verdict = {
                let slot = self.room.borrow();
                let Some(room) = slot.as_ref() else {
                    return Response::error("the room did not load", 503);
                };
                key.verify(&token, &name, now_secs, |id| room.is_revoked(id))
                    .map(|c| room.may_relay(&c).then_some(c))
            };
            return match verdict {
                Ok(Some(claims)) => Response::from_json(&claims),
                Ok(None) => Ok(EdgeError::Refused {
                    code: ErrorCode::Forbidden,
                    message: "You are not in this meeting: no media relay.".into(),
                    retry_after_secs: None,
                }
                .into_response()),
                Err(e) => Ok(EdgeError::from(e).into_response()),
            };
        }
        if req.method() == Method::Get && req.path() == "/probe-sfu" {
            // A pre-join connection check goes where a join would: the SFU the room keeps
            // (null: none, the registry's choice then). Nothing changes here.
            let name = ask_room(&req)?;
            if let Some(restored) = self.load(Some(&name))? {
                self.step(Some(&name), restored).await?;
            }
            let now = worker::Date::now().as_millis();
            let kept = self
                .room
                .borrow()
                .as_ref()
                .and_then(|r| r.sfu_for_join(now));
            return Response::from_json(&kept);
        }
        if req.method() == Method::Get && req.path() == "/status" {
            // What the pre-join page tells someone before they join: whether it records.
            let name = ask_room(&req)?;
            if let Some(restored) = self.load(Some(&name))? {
                self.step(Some(&name), restored).await?;
            }
            let recording = self
                .room
                .borrow()
                .as_ref()
                .is_some_and(|r| r.recording().is_some());
            return Response::from_json(&serde_json::json!({ "recording": recording }));
        }
        if req.method() == Method::Get && req.path() == "/password" {
            // Before the worker checks a joiner's password against the stored hash (not here:
            // hashing would stall the room's only thread): the hash, and a refusal no password
            // would change (so a banned or rate-limited joiner costs no hashing).
            let name = ask_room(&req)?;
            let url = req.url()?;
            let param = |k: &str| {
                url.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            // Rebuilt from storage, the room first learns which sockets survived.
            if let Some(restored) = self.load(Some(&name))? {
                self.step(Some(&name), restored).await?;
            }
            let now = worker::Date::now().as_millis();
            let pre = self
                .room
                .borrow()
                .as_ref()
                .map(|r| r.pre_join(now, &param("identity"), &param("addr")));
            return Response::from_json(&pre);
        }
        if req.method() == Method::Post {
            match req.path().as_str() {
                "/assign" => return self.assign_sfu(req).await,
                "/sfu-draining" => {
                    let d: SfuDraining = req.json().await?;
                    let room = d.rooms.first().cloned().unwrap_or_default();
                    self.step(Some(&room), Input::SfuDraining { sfu: d.sfu })
                        .await?;
                    return Response::empty();
                }
                "/sfu-event" => {
                    let event: SfuEvent = req.json().await?;
                    let room = event.room().to_string();
                    self.step(Some(&room), Input::SfuEvent(event)).await?;
                    return Response::empty();
                }
                "/sfu-offer" => {
                    let signal: SfuSignal = req.json().await?;
                    self.step(
                        Some(&signal.room),
                        Input::SfuOffer {
                            participant: signal.participant,
                            sdp: signal.sdp,
                            sfu: signal.sfu,
                            generation: signal.generation,
                        },
                    )
                    .await?;
                    return Response::empty();
                }
                "/join" => {
                    let ask: JoinAsk = req.json().await?;
                    let name = ask_room(&req)?;
                    self.answer.borrow_mut().take();
                    self.step(Some(&name), Input::Join(ask)).await?;
                    return match self.answer.borrow_mut().take() {
                        Some(a) => Response::from_json(&a),
                        None => Response::error("the room did not answer", 500),
                    };
                }
                "/dev-evict" => {
                    let ask: EvictRequest = req.json().await?;
                    return self.evict(&ask.mode);
                }
                _ => {}
            }
        }
        let url = req.url()?;
        // /api/rooms/{room}/ws — the worker already validated the name; fold it the same way.
        let raw = url
            .path_segments()
            .and_then(|mut s| s.nth(2))
            .unwrap_or_default()
            .to_string();
        let room_name = edgemeet_shared::protocol::normalize_room_name(&raw).unwrap_or(raw);
        let token = url
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let key = match token_key(&self.env) {
            Ok(k) => k,
            Err(e) => return Ok(e.into_response()),
        };
        let restored = self.load(Some(&room_name))?;
        let now_secs = worker::Date::now().as_millis() / 1000;
        let verified = {
            let slot = self.room.borrow();
            let room = slot.as_ref().expect("loaded above");
            key.verify(&token, &room_name, now_secs, |jti| room.is_revoked(jti))
        };
        let claims = match verified {
            Ok(c) => c,
            Err(e) => {
                let close = if e.code() == ErrorCode::Forbidden {
                    4403
                } else {
                    4401
                };
                if let Some(restored) = restored {
                    self.step(Some(&room_name), restored).await?;
                }
                return refuse(close, e.code(), e.to_string());
            }
        };
        let conn = random_id();
        let pair = WebSocketPair::new()?;
        // Waiting-room sockets carry a tag of their own: broadcasts skip them.
        let tags: Vec<&str> = if claims.waiting {
            vec![conn.as_str(), WAITING_TAG]
        } else {
            vec![conn.as_str()]
        };
        self.state.accept_websocket_with_tags(&pair.server, &tags);
        pair.server.serialize_attachment(Attachment {
            conn: conn.clone(),
            claims: claims.clone(),
        })?;
        if let Some(restored) = restored {
            self.step(Some(&room_name), restored).await?;
        }
        self.step(Some(&room_name), Input::Connect { conn, claims })
            .await?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(att) = Self::attachment(&ws) else {
            let _ = ws.close(Some(4500), Some("lost session"));
            return Ok(());
        };
        let room = att.claims.room.clone();
        let too_big = match &message {
            WebSocketIncomingMessage::String(t) => t.len() > MAX_FRAME_BYTES,
            WebSocketIncomingMessage::Binary(b) => b.len() > MAX_FRAME_BYTES,
        };
        if too_big {
            let _ = ws.close(Some(CLOSE_TOO_BIG), Some("frame over 64 KiB"));
            return self
                .step(
                    Some(&room),
                    Input::Disconnect {
                        conn: att.conn,
                        clean: true,
                    },
                )
                .await;
        }
        match message {
            WebSocketIncomingMessage::String(text) => {
                self.step(
                    Some(&room),
                    Input::Frame {
                        conn: att.conn,
                        text,
                    },
                )
                .await
            }
            WebSocketIncomingMessage::Binary(_) => {
                let _ = ws.send(&ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    message: "binary frames are not part of the signaling protocol".into(),
                });
                Ok(())
            }
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        // Complete the closing handshake (older compatibility dates do not reply automatically),
        // echoing the client's code: the browser reports the code of the frame it receives, and a
        // 1000 here would make a client that dropped its socket think it was closed for good.
        let echo = match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
            _ => 1000,
        };
        let _ = ws.close(Some(echo), Some("closed"));
        if let Some(att) = Self::attachment(&ws) {
            // 1000 normal, 1001 going away (tab closed, navigated), 1005 closed without a code: on
            // purpose. Anything else (1006: the connection dropped) may come back.
            let clean = matches!(code, 1000 | 1001 | 1005);
            self.step(
                Some(&att.claims.room),
                Input::Disconnect {
                    conn: att.conn,
                    clean,
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        if let Some(att) = Self::attachment(&ws) {
            self.step(
                Some(&att.claims.room),
                Input::Disconnect {
                    conn: att.conn,
                    clean: false,
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        // The alarm fired, so this alarm is no longer set.
        self.alarm.set(None);
        self.step(None, Input::Timeout).await?;
        Response::empty()
    }
}
