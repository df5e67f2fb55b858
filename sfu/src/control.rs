//! The signed control API the edge's Room Durable Object calls (thin axum handlers over
//! [`crate::media::Media`]). Every request carries `x-edgemeet-signature` over method, path and
//! body (see `edgemeet_shared::control`); anything unsigned, stale or forged gets 401.
//!
//! - `POST /v1/rooms/{room}/participants/{id}/offer` `{sdp, block?}` → `{sdp}` (our answer; the
//!   new session starts with `block`'s kinds not forwarded)
//! - `POST /v1/rooms/{room}/participants/{id}/answer` `{sdp}` → 204
//! - `POST /v1/rooms/{room}/participants/{id}/block` `{audio, video, screen}` → 204 (a host stopped
//!   them: those tracks are not forwarded)
//! - `DELETE /v1/rooms/{room}/participants/{id}` → 204 (participant left; frees everything)
//! - `POST /v1/probe` `{offers: [sdp, …]}` → `{answers: [sdp, …]}` (a pre-join connection check:
//!   one throwaway session per offer, `edgemeet_shared::netcheck`)
//! - `GET /v1/rooms` → who is in which room, what they publish and receive
//! - `GET /v1/rooms/{room}` → `{known, participants, draining}`

// Handlers return axum `Response`s as their error values; boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgemeet_shared::control as signing;
use edgemeet_shared::netcheck::{check_probe, ProbeAnswers, ProbeRequest};
use edgemeet_shared::protocol::{
    normalize_room_name, valid_recording_id, AnswerBody, BlockBody, ErrorCode, OfferBody,
    RecordBody, ScopesBody, SdpBody, ViewsBody, WireError, MAX_VIEWS,
};

use crate::AppState;

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(WireError {
            code,
            message: message.into(),
        }),
    )
        .into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unsigned, stale or forged → 401 with the reason.
fn verify_signature(
    s: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let sig = headers
        .get(signing::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    signing::verify(
        s.config.control_secret.as_bytes(),
        sig,
        method.as_str(),
        uri.path(),
        body,
        now_ms(),
    )
    .map_err(|e| {
        error(
            ErrorCode::Unauthorized,
            format!("control request refused: {e}"),
        )
    })
}

/// Checks the signature, then the names in the path.
fn check(
    s: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    room: &str,
    id: &str,
) -> Result<(), Response> {
    verify_signature(s, method, uri, headers, body)?;
    if normalize_room_name(room).ok().as_deref() != Some(room) {
        return Err(error(ErrorCode::BadRequest, "bad room name"));
    }
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(error(ErrorCode::BadRequest, "bad participant id"));
    }
    Ok(())
}

pub async fn offer(
    State(s): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &method, &uri, &headers, &body, &room, &id) {
        return r;
    }
    let req: OfferBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!("body must be {{\"sdp\": …, \"block\"?: {{…}}}}: {e}"),
            )
        }
    };
    match s
        .media
        .offer(&room, &id, req.sdp, block_bits(&req.block), req.scope)
        .await
    {
        Ok(sdp) => Json(SdpBody { sdp }).into_response(),
        Err(e) => {
            tracing::info!(room, participant = id, error = %e, "offer refused");
            error(e.code(), e.to_string())
        }
    }
}

/// `POST /v1/probe`: a pre-join connection check's sessions, one per offer (1–3), answered in
/// order; if one cannot be made, none is answered (the ones made close on their own).
pub async fn probe(
    State(s): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = verify_signature(&s, &method, &uri, &headers, &body) {
        return r;
    }
    let req: ProbeRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!("body must be {{\"offers\": [sdp, …]}}: {e}"),
            )
        }
    };
    if let Err(e) = check_probe(&req) {
        return (
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            Json(e),
        )
            .into_response();
    }
    let mut answers = Vec::with_capacity(req.offers.len());
    for sdp in req.offers {
        match s.media.probe(sdp).await {
            Ok(a) => answers.push(a),
            Err(e) => {
                tracing::info!(error = %e, "connection check refused");
                return error(e.code(), e.to_string());
            }
        }
    }
    Json(ProbeAnswers { answers }).into_response()
}

pub async fn answer(
    State(s): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &method, &uri, &headers, &body, &room, &id) {
        return r;
    }
    let req: AnswerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!("body must be {{\"sdp\": …, \"generation\": …}}: {e}"),
            )
        }
    };
    match s.media.answer(&room, &id, req.sdp, req.generation).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            // A refused answer leaves the participant without what that offer added (a new
            // camera, say) until the next renegotiation: worth a line in the log, which is
            // otherwise silent about it (the browser only sees it in its console). One who
            // left while answering is the ordinary race.
            if matches!(e, crate::media::MediaError::UnknownParticipant(_)) {
                tracing::info!(%room, participant = %id, error = %e, "answer from someone gone");
            } else {
                tracing::warn!(%room, participant = %id, code = ?e.code(), error = %e, "answer refused");
            }
            error(e.code(), e.to_string())
        }
    }
}

/// `POST …/participants/{id}/views`: how big the participant shows each remote video.
pub async fn views(
    State(s): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &method, &uri, &headers, &body, &room, &id) {
        return r;
    }
    let req: ViewsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!("body must be {{\"views\": [{{publisher, source, height}}]}}: {e}"),
            )
        }
    };
    if req.views.len() > MAX_VIEWS {
        return error(ErrorCode::BadRequest, format!("at most {MAX_VIEWS} views"));
    }
    match s.media.set_views(&room, &id, req.views).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e.code(), e.to_string()),
    }
}

pub async fn block(
    State(s): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &method, &uri, &headers, &body, &room, &id) {
        return r;
    }
    let req: BlockBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!("body must be {{\"audio\", \"video\", \"screen\"}} (booleans): {e}"),
            )
        }
    };
    match s.media.block(&room, &id, block_bits(&req)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e.code(), e.to_string()),
    }
}

/// A signed call about a whole room: the signature, then the room's name as the edge folds it.
fn room_call(
    s: &AppState,
    room: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    verify_signature(s, method, uri, headers, body)?;
    if normalize_room_name(room).ok().as_deref() != Some(room) {
        return Err(error(ErrorCode::BadRequest, "bad room name"));
    }
    Ok(())
}

/// `POST /v1/rooms/{room}/recording`: whether the room is recorded, and as which recording
/// (whole state with a rising version, see [`RecordBody`]). 204 also for a room not here yet: it
/// is recorded from its first track here.
pub async fn record(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = room_call(&s, &room, &method, &uri, &headers, &body) {
        return r;
    }
    let req: RecordBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!(
                    "body must be {{\"version\": a number, \"recording\": an id or null}}: {e}"
                ),
            )
        }
    };
    if let Some(id) = &req.recording {
        if !valid_recording_id(id) {
            return error(
                ErrorCode::BadRequest,
                "a recording id is 1 to 64 letters, digits, - or _",
            );
        }
    }
    let on = req.recording.clone();
    match s.media.record(&room, req.version, req.recording).await {
        Ok(()) => {
            tracing::info!(room, version = req.version, recording = ?on, "recording");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(e.code(), e.to_string()),
    }
}

/// `POST /v1/rooms/{room}/scopes`: where everyone in the room is now (breakout rooms; whole
/// state with a rising version, see [`ScopesBody`]). 204 also for a room not here yet: each
/// joiner's offer says where they are.
pub async fn scopes(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = room_call(&s, &room, &method, &uri, &headers, &body) {
        return r;
    }
    let req: ScopesBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                ErrorCode::BadRequest,
                format!(
                    "body must be {{\"version\": a number, \"scopes\": {{participant: room number}}}}: {e}"
                ),
            )
        }
    };
    if req.scopes.len() > MAX_SCOPES {
        return error(
            ErrorCode::BadRequest,
            format!("at most {MAX_SCOPES} participants"),
        );
    }
    let moved = req.scopes.len();
    match s
        .media
        .set_scopes(&room, req.version, req.scopes.into_iter().collect())
        .await
    {
        Ok(()) => {
            tracing::info!(
                room,
                version = req.version,
                in_breakout_rooms = moved,
                "breakout scopes"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(e.code(), e.to_string()),
    }
}

/// Most participants one scopes call names.
const MAX_SCOPES: usize = 10_000;

/// A block body as the media layer's bits.
fn block_bits(b: &BlockBody) -> u8 {
    (b.audio as u8 * crate::media::BLOCK_AUDIO)
        | (b.video as u8 * crate::media::BLOCK_VIDEO)
        | (b.screen as u8 * crate::media::BLOCK_SCREEN)
}

pub async fn leave(
    State(s): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &method, &uri, &headers, b"", &room, &id) {
        return r;
    }
    s.media.remove_peer(&room, &id, "left the room").await;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v1/rooms/{room}`: does this SFU carry the room, and is it draining? The room's object asks
/// when a member's media stopped: an SFU that restarted answers `known: false`.
pub async fn room(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = verify_signature(&s, &method, &uri, &headers, b"") {
        return r;
    }
    let participants = s.media.room_participants(&room);
    Json(serde_json::json!({
        "known": participants > 0,
        "participants": participants,
        "draining": s.is_draining(),
    }))
    .into_response()
}

pub async fn rooms(
    State(s): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = verify_signature(&s, &method, &uri, &headers, b"") {
        return r;
    }
    Json(s.media.describe().await).into_response()
}

/// `POST /v1/test/panic` (only with `EDGEMEET_SFU_TEST_PANIC=1`): a task panics holding the room
/// map's lock, as a bug would; the SFU must then report itself failed and drain.
pub async fn test_panic(
    State(s): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = verify_signature(&s, &method, &uri, &headers, b"") {
        return r;
    }
    let state = s.clone();
    tokio::spawn(async move { state.media.panic_holding_rooms_lock() });
    StatusCode::ACCEPTED.into_response()
}
