//! The Room Durable Object (one per room): owns the room's state and WebSockets.
//!
//! A thin shell over `edgemeet_shared::room::Room`: it verifies the token, accepts the socket with
//! the hibernation API (tagged with a connection id, claims in the attachment), feeds the state
//! machine and performs its effects. The room is persisted after every change, so it survives the
//! object hibernating between events.

use std::cell::RefCell;

use edgemeet_shared::control;
use edgemeet_shared::protocol::{
    ErrorCode, SdpBody, ServerMessage, SfuDraining, SfuEvent, SfuSignal, ViewsBody, WireError,
    MAX_FRAME_BYTES,
};
use edgemeet_shared::region::SfuChoice;
use edgemeet_shared::room::{Effect, Input, Room, SfuCall, CLOSE_TOO_BIG};
use edgemeet_shared::token::Claims;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::registry::{self, ChooseRequest};
use crate::{post_to, random_id, token_key};

pub const BINDING: &str = "ROOMS";
const STORAGE_KEY: &str = "room";

/// What each accepted socket carries through hibernation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    conn: String,
    claims: Claims,
}

#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    room: RefCell<Option<Room>>,
}

impl RoomObject {
    async fn load(&self, name: &str) -> Result<()> {
        if self.room.borrow().is_some() {
            return Ok(());
        }
        let stored: Option<Room> = self.state.storage().get(STORAGE_KEY).await?;
        let mut slot = self.room.borrow_mut();
        if slot.is_none() {
            *slot = Some(stored.unwrap_or_else(|| Room::new(name)));
        }
        Ok(())
    }

    /// Runs one input through the state machine, performs the effects, persists the room. Calls
    /// to the SFU are awaited and their outcome fed back in as the next input.
    async fn step(&self, room_name: &str, input: Input) -> Result<()> {
        self.load(room_name).await?;
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let now = worker::Date::now().as_millis();
            let (effects, snapshot) = {
                let mut slot = self.room.borrow_mut();
                let room = slot.as_mut().expect("loaded above");
                let effects = room.handle(now, input);
                (effects, room.clone())
            };
            let changed = effects.iter().any(|e| !matches!(e, Effect::Send { .. }));
            let wake = effects
                .iter()
                .filter_map(|e| {
                    if let Effect::WakeAt { at } = e {
                        Some(*at)
                    } else {
                        None
                    }
                })
                .min();
            let calls = self.perform(effects);
            if changed {
                self.persist(&snapshot).await?;
            }
            if let Some(at) = wake {
                self.state
                    .storage()
                    .set_alarm(std::time::Duration::from_millis(at.saturating_sub(now)))
                    .await?;
            }
            let sfu = snapshot.sfu().cloned();
            for job in calls {
                match job {
                    Job::Call(participant, call) => {
                        if let Some(next) = self
                            .call_sfu(snapshot.name(), sfu.as_ref(), participant, call)
                            .await
                        {
                            // An SFU that cannot be reached at all may be gone: check it.
                            let gone = matches!(&next, Input::SfuFailed { message, .. } if message.starts_with(UNREACHABLE));
                            queue.push_back(next);
                            if gone {
                                queue.push_back(Input::SfuSuspect);
                            }
                        }
                    }
                    Job::Check(id) => {
                        if let Some(current) = sfu.as_ref().filter(|c| c.id == id) {
                            queue.push_back(self.check_sfu(snapshot.name(), current).await);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Performs one SFU call; returns what to feed back into the room.
    async fn call_sfu(
        &self,
        room: &str,
        sfu: Option<&SfuChoice>,
        participant: String,
        call: SfuCall,
    ) -> Option<Input> {
        let Some(sfu) = sfu else {
            return Some(Input::SfuFailed {
                participant,
                code: ErrorCode::NoMediaServer,
                message: "this room has no media server".into(),
            });
        };
        let secret = match self.env.secret("CONTROL_SECRET") {
            Ok(s) => s.to_string(),
            Err(_) => {
                worker::console_error!("CONTROL_SECRET is not set");
                return Some(Input::SfuFailed {
                    participant,
                    code: ErrorCode::Internal,
                    message: "edge is misconfigured".into(),
                });
            }
        };
        let base = format!("/v1/rooms/{room}/participants/{participant}");
        let (method, path, body) = match &call {
            SfuCall::Offer { sdp, .. } => (
                Method::Post,
                format!("{base}/offer"),
                serde_json::to_string(&SdpBody { sdp: sdp.clone() }).ok()?,
            ),
            SfuCall::Answer { sdp } => (
                Method::Post,
                format!("{base}/answer"),
                serde_json::to_string(&SdpBody { sdp: sdp.clone() }).ok()?,
            ),
            SfuCall::Leave => (Method::Delete, base, String::new()),
            SfuCall::Views { views } => (
                Method::Post,
                format!("{base}/views"),
                serde_json::to_string(&ViewsBody {
                    views: views.clone(),
                })
                .ok()?,
            ),
        };
        let outcome = sfu_request(&secret, &sfu.url, method, &path, body).await;
        match (call, outcome) {
            (SfuCall::Offer { id, .. }, Ok((200, text))) => {
                match serde_json::from_str::<SdpBody>(&text) {
                    Ok(b) => Some(Input::SfuAnswer {
                        participant,
                        sdp: b.sdp,
                        id,
                    }),
                    Err(_) => Some(Input::SfuFailed {
                        participant,
                        code: ErrorCode::MediaServerError,
                        message: "the media server sent an unreadable answer".into(),
                    }),
                }
            }
            (SfuCall::Leave, Ok(_)) => None,
            // Tile sizes are a hint, sent again on the next change: an SFU that does not know
            // the participant yet (a new session still being set up) is no error for anyone.
            (SfuCall::Views { .. }, outcome) => {
                if let Ok((status, _)) = &outcome {
                    if *status >= 300 && *status != 404 {
                        worker::console_warn!("SFU views for {participant}: HTTP {status}");
                    }
                }
                None
            }
            (_, Ok((status, _))) if (200..300).contains(&status) => None,
            (SfuCall::Leave, Err(e)) => {
                worker::console_warn!("SFU leave for {participant} failed: {e}");
                None
            }
            (_, Ok((_, text))) => {
                let e: WireError = serde_json::from_str(&text).unwrap_or(WireError {
                    code: ErrorCode::MediaServerError,
                    message: "the media server refused the request".into(),
                });
                Some(Input::SfuFailed {
                    participant,
                    code: e.code,
                    message: e.message,
                })
            }
            (_, Err(e)) => Some(Input::SfuFailed {
                participant,
                code: ErrorCode::MediaServerError,
                message: format!("{UNREACHABLE}: {e}"),
            }),
        }
    }

    /// Is the room's SFU alive, not draining, and still carrying this room? Gone or draining: the
    /// registry names its replacement. Alive but without the room (it restarted): media is set up
    /// again on it.
    async fn check_sfu(&self, room: &str, sfu: &SfuChoice) -> Input {
        let path = format!("/v1/rooms/{room}");
        let secret = self
            .env
            .secret("CONTROL_SECRET")
            .map(|s| s.to_string())
            .unwrap_or_default();
        let answer = probe(sfu_request(
            &secret,
            &sfu.url,
            Method::Get,
            &path,
            String::new(),
        ))
        .await;
        match answer {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if v["draining"] == serde_json::Value::Bool(true) {
                    worker::console_log!("room {room}: SFU {} is draining", sfu.id);
                } else if v["known"] == serde_json::Value::Bool(false) {
                    worker::console_warn!(
                        "room {room}: SFU {} no longer has this room (restarted)",
                        sfu.id
                    );
                    return Input::SfuRestarted;
                } else {
                    return Input::SfuHealthy;
                }
            }
            Ok((status, _)) => {
                worker::console_warn!("room {room}: SFU {} answered {status}", sfu.id)
            }
            Err(e) => worker::console_warn!("room {room}: SFU {} does not answer: {e}", sfu.id),
        }
        let ask = serde_json::json!({ "room": room, "dead": sfu.id }).to_string();
        let replaced = async {
            let stub = self
                .env
                .durable_object(registry::BINDING)?
                .get_by_name(registry::NAME)?;
            let mut res = post_to(&stub, "https://registry/replace", ask).await?;
            if res.status_code() != 200 {
                return Err(worker::Error::RustError(
                    res.text().await.unwrap_or_default(),
                ));
            }
            res.json::<SfuChoice>().await
        }
        .await;
        match replaced {
            Ok(choice) => {
                worker::console_log!(
                    "room {room}: media moves from {} to {} ({})",
                    sfu.id,
                    choice.id,
                    choice.reason
                );
                Input::SfuReplaced { choice }
            }
            Err(e) => {
                worker::console_warn!(
                    "room {room}: SFU {} is gone and no other is available: {e}",
                    sfu.id
                );
                Input::SfuHealthy
            }
        }
    }

    /// Saves the room; a room nobody is in is forgotten (its next first join starts afresh).
    async fn persist(&self, room: &Room) -> Result<()> {
        if room.is_empty() {
            self.state.storage().delete(STORAGE_KEY).await?;
        } else {
            self.state.storage().put(STORAGE_KEY, room).await?;
        }
        Ok(())
    }

    /// The room's SFU: kept while anyone is in the room; chosen afresh (nearest healthy to this
    /// joiner) when the room is empty, i.e. at its first join.
    async fn assign_sfu(&self, mut req: Request) -> Result<Response> {
        let ask: ChooseRequest = req.json().await?;
        self.load(&ask.room).await?;
        let kept = {
            let slot = self.room.borrow();
            let room = slot.as_ref().expect("loaded above");
            if room.is_empty() {
                None
            } else {
                room.sfu().cloned()
            }
        };
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
        let snapshot = {
            let mut slot = self.room.borrow_mut();
            let room = slot.as_mut().expect("loaded above");
            room.set_sfu(Some(choice.clone()));
            room.clone()
        };
        self.state.storage().put(STORAGE_KEY, &snapshot).await?;
        Response::from_json(&choice)
    }

    /// Performs the effects that need no waiting; returns the SFU calls, which do.
    fn perform(&self, effects: Vec<Effect>) -> Vec<Job> {
        let mut calls = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { conn, msg } => {
                    for ws in self.state.get_websockets_with_tag(&conn) {
                        let _ = ws.send(&msg);
                    }
                }
                Effect::Broadcast { except, msg } => {
                    let Ok(text) = serde_json::to_string(&msg) else {
                        continue;
                    };
                    for ws in self.state.get_websockets() {
                        let skip = except
                            .as_ref()
                            .is_some_and(|e| self.state.get_tags(&ws).iter().any(|t| t == e));
                        if !skip {
                            // A socket that is already closing may refuse; the close event cleans up.
                            let _ = ws.send_with_str(&text);
                        }
                    }
                }
                Effect::Close { conn, code, reason } => {
                    for ws in self.state.get_websockets_with_tag(&conn) {
                        let _ = ws.close(Some(code), Some(&reason));
                    }
                }
                Effect::WakeAt { .. } => {} // set in `step`, which can await
                Effect::Sfu { participant, call } => calls.push(Job::Call(participant, call)),
                Effect::CheckSfu { sfu } => calls.push(Job::Check(sfu)),
            }
        }
        calls
    }

    fn attachment(ws: &WebSocket) -> Option<Attachment> {
        ws.deserialize_attachment().ok().flatten()
    }
}

/// Effects that need awaiting, performed after the others.
enum Job {
    Call(String, SfuCall),
    Check(String),
}

/// Start of the message of a control call that never reached the SFU.
const UNREACHABLE: &str = "media server unreachable";
/// How long a health probe of an SFU may take before it counts as gone.
const PROBE_TIMEOUT_MS: u64 = 1_000;

/// `req` within [`PROBE_TIMEOUT_MS`], or why not.
async fn probe<T>(
    req: impl std::future::Future<Output = std::result::Result<T, String>>,
) -> std::result::Result<T, String> {
    use futures_util::future::{select, Either};
    let timeout = Box::pin(worker::Delay::from(std::time::Duration::from_millis(
        PROBE_TIMEOUT_MS,
    )));
    match select(Box::pin(req), timeout).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(format!("no answer within {PROBE_TIMEOUT_MS} ms")),
    }
}

/// A signed request to an SFU's control API: (status, body text), or why it could not be sent.
async fn sfu_request(
    secret: &str,
    base_url: &str,
    method: Method,
    path: &str,
    body: String,
) -> std::result::Result<(u16, String), String> {
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
        init.with_body(Some(body.into()));
    }
    let req = Request::new_with_init(&format!("{}{path}", base_url.trim_end_matches('/')), &init)
        .map_err(|e| e.to_string())?;
    let mut res = worker::Fetch::Request(req)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let text = res.text().await.unwrap_or_default();
    Ok((res.status_code(), text))
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
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if req.method() == Method::Post && req.path() == "/assign" {
            return self.assign_sfu(req).await;
        }
        if req.method() == Method::Post && req.path() == "/sfu-draining" {
            // The room's SFU is draining: the check finds it so and moves the room.
            let mut req = req;
            let d: SfuDraining = req.json().await?;
            let room = d.rooms.first().cloned().unwrap_or_default();
            self.load(&room).await?;
            let current = self
                .room
                .borrow()
                .as_ref()
                .and_then(|r| r.sfu().map(|c| c.id.clone()));
            if current.as_deref() == Some(d.sfu.as_str()) {
                self.step(&room, Input::SfuSuspect).await?;
            }
            return Response::empty();
        }
        if req.method() == Method::Post && req.path() == "/sfu-event" {
            let mut req = req;
            let event: SfuEvent = req.json().await?;
            let room = event.room().to_string();
            self.step(&room, Input::SfuEvent(event)).await?;
            return Response::empty();
        }
        if req.method() == Method::Post && req.path() == "/sfu-offer" {
            let mut req = req;
            let signal: SfuSignal = req.json().await?;
            self.step(
                &signal.room,
                Input::SfuOffer {
                    participant: signal.participant,
                    sdp: signal.sdp,
                },
            )
            .await?;
            return Response::empty();
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
        let now_secs = worker::Date::now().as_millis() / 1000;
        let claims = match key.verify(&token, &room_name, now_secs, |_| false) {
            Ok(c) => c,
            Err(e) => {
                let close = if e.code() == ErrorCode::Forbidden {
                    4403
                } else {
                    4401
                };
                return refuse(close, e.code(), e.to_string());
            }
        };
        let conn = random_id();
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[conn.as_str()]);
        pair.server.serialize_attachment(Attachment {
            conn: conn.clone(),
            claims: claims.clone(),
        })?;
        self.step(&room_name, Input::Connect { conn, claims })
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
        match message {
            WebSocketIncomingMessage::String(text) if text.len() > MAX_FRAME_BYTES => {
                let _ = ws.close(Some(CLOSE_TOO_BIG), Some("frame over 64 KiB"));
                self.step(
                    &att.claims.room,
                    Input::Disconnect {
                        conn: att.conn,
                        clean: true,
                    },
                )
                .await
            }
            WebSocketIncomingMessage::String(text) => {
                self.step(
                    &att.claims.room,
                    Input::Frame {
                        conn: att.conn,
                        text,
                    },
                )
                .await
            }
            WebSocketIncomingMessage::Binary(b) if b.len() > MAX_FRAME_BYTES => {
                let _ = ws.close(Some(CLOSE_TOO_BIG), Some("frame over 64 KiB"));
                self.step(
                    &att.claims.room,
                    Input::Disconnect {
                        conn: att.conn,
                        clean: true,
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
                &att.claims.room,
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
                &att.claims.room,
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
        // Only a room with state has anyone to time out.
        let stored: Option<Room> = self.state.storage().get(STORAGE_KEY).await?;
        if let Some(room) = stored {
            let name = room.name().to_string();
            if self.room.borrow().is_none() {
                *self.room.borrow_mut() = Some(room);
            }
            self.step(&name, Input::Tick).await?;
        }
        Response::empty()
    }
}
