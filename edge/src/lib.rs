//! edgemeet's edge worker: the HTTP API, auth and the entry to each room's Durable Object.
//!
//! Routes (everything else is served from the client's static assets by the Workers runtime):
//! - `GET  /api/health`               — the edge and the SFUs it knows (registry)
//! - `GET  /api/rooms/{room}/ice-servers` — a member's TURN credentials (room token as Bearer)
//! - `POST /api/sfu/heartbeat`        — signed SFU heartbeats (control plane)
//! - `POST /api/sfu/signal`           — signed SFU offers for a participant, relayed to its room
//! - `POST /api/sfu/event`            — signed SFU events for a room (dynacast layers, active speaker)
//! - `POST /api/sfu/draining`         — a signed notice from a stopping SFU: its rooms move
//! - `POST /api/rooms/{room}/join`    — a room token and the room WebSocket URL
//! - `GET  /api/rooms/{room}/ws`      — the room's signaling WebSocket (token in the query)
//! - `POST /api/rooms/{room}/probe`   — a pre-join connection check: throwaway sessions on the SFU a
//!   join would get, and short-lived TURN credentials (`netcheck`)
//! - `/api/account/…`                 — accounts on D1: register, sign in/out, password, delete,
//!   download my data (`accounts.rs`)
//! - `/api/meetings/…`                — scheduled meetings on D1: schedule, upcoming, change,
//!   cancel, invitation `.ics` (`meetings.rs`)
//! - `/api/reports/…`                 — meeting reports on D1: the owner's list, one report (JSON),
//!   its CSV (`reports.rs`)
//! - `POST /api/dev/rooms/{room}/evict` — dev/test only (var `DEV_OVERRIDES`): reset the room's
//!   object, as an eviction or a runtime restart would

mod accounts;
mod error;
mod meetings;
mod password;
mod recordings;
mod registry;
mod reminders;
mod reports;
mod room;

use edgemeet_shared::control;
use edgemeet_shared::protocol::{
    normalize_display_name, normalize_room_name, ErrorCode, JoinRequest, JoinResponse, SfuDraining,
    SfuEvent, SfuSignal,
};
use edgemeet_shared::region::{
    client_location, GeoPoint, SfuChoice, SfuStatus, DEV_LOCATION_HEADER,
};
use edgemeet_shared::room::{address_key, Admission, JoinAsk};
use edgemeet_shared::token::{Claims, Grants, Role, TokenKey};
use edgemeet_shared::turn;
use serde_json::json;
use worker::{
    event, Context, Env, Method, Request, RequestInit, Response, ScheduleContext, ScheduledEvent,
    Stub, Url,
};

use error::{EdgeError, EdgeResult};
pub use registry::SfuRegistry;
pub use room::RoomObject;

/// How long a room token is valid. Members get a fresh one over their socket before it expires.
const TOKEN_TTL_SECS: u64 = edgemeet_shared::token::MAX_TOKEN_TTL_SECS;
/// Dev/test only: a join may ask for a shorter token lifetime (header, seconds), so a test can see a
/// call outlive its first token.
const DEV_TOKEN_TTL_HEADER: &str = "x-edgemeet-dev-token-ttl";
/// Dev/test only: the client address the edge takes this request to come from (tests stand in for
/// many people on one machine; a flood test stands in for one).
const DEV_ADDR_HEADER: &str = "x-edgemeet-dev-addr";
/// The Workers rate-limiting binding for joins: per client address (IPv6: its /64), 20 per 10 s
/// (wrangler.toml). A flood of 200 a second gets ≥ 97 % refused; a family behind one address
/// joining a few meetings is never near it.
const JOIN_LIMITER: &str = "JOIN_LIMITER";
const JOIN_LIMIT_PERIOD_SECS: u64 = 10;

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    Ok(route(req, env)
        .await
        .unwrap_or_else(EdgeError::into_response))
}

/// The cron trigger (every minute): scheduled meetings' reminders (`reminders.rs`).
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let now = worker::Date::now().as_millis();
    match reminders::run(&env, now).await {
        Ok(0) => {}
        Ok(n) => worker::console_log!("reminders: {n} marked"),
        Err(e) => worker::console_error!("reminders: {e}"),
    }
}

async fn route(req: Request, env: Env) -> EdgeResult<Response> {
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["api", "health"]) => health(&env).await,
        (Method::Post, ["api", "sfu", "heartbeat"]) => heartbeat(req, &env).await,
        (Method::Post, ["api", "sfu", "signal"]) => sfu_signal(req, &env).await,
        (Method::Post, ["api", "sfu", "event"]) => sfu_event(req, &env).await,
        (Method::Post, ["api", "sfu", "draining"]) => sfu_draining(req, &env).await,
        (Method::Get, ["api", "rooms", room, "ice-servers"]) => {
            let room = normalize_room_name(room).map_err(EdgeError::BadRequest)?;
            room_ice_servers(&req, &env, &room).await
        }
        (Method::Get, ["api", "rooms", room, "status"]) => {
            let room = normalize_room_name(room).map_err(EdgeError::BadRequest)?;
            let stub = env.durable_object(room::BINDING)?.get_by_name(&room)?;
            let url = format!("https://room/status?room={room}");
            Ok(stub.fetch_with_str(&url).await?)
        }
        (Method::Post, ["api", "rooms", room, "probe"]) => {
            let room = normalize_room_name(room).map_err(EdgeError::BadRequest)?;
            probe(req, &env, &room).await
        }
        (Method::Post, ["api", "rooms", room, "join"]) => {
            let room = normalize_room_name(room).map_err(EdgeError::BadRequest)?;
            join(req, &env, &room).await
        }
        (Method::Post, ["api", "dev", "rooms", room, "evict"]) if dev_overrides(&env) => {
            let room = normalize_room_name(room).map_err(EdgeError::BadRequest)?;
            let mut req = req;
            let body = req.text().await?;
            let stub = env.durable_object(room::BINDING)?.get_by_name(&room)?;
            Ok(post_to(&stub, "https://room/dev-evict", body).await?)
        }
        (Method::Get, ["api", "rooms", room, "ws"]) => {
            if !req
                .headers()
                .get("Upgrade")?
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            {
                return Err(EdgeError::BadRequest(
                    "this endpoint takes a WebSocket upgrade".into(),
                ));
            }
            let stub = env
                .durable_object(room::BINDING)?
                .get_by_name(&normalize_room_name(room).map_err(EdgeError::BadRequest)?)?;
            Ok(stub.fetch_with_request(req).await?)
        }
        (_, ["api", "account", rest @ ..]) => accounts::route(req, &env, rest).await,
        (_, ["api", "meetings", rest @ ..]) => meetings::route(req, &env, rest).await,
        (_, ["api", "reports", rest @ ..]) => reports::route(req, &env, rest).await,
        (_, ["api", "recordings", rest @ ..]) => recordings::route(req, &env, rest).await,
        (_, ["api", "sfu", "recordings", rest @ ..]) => {
            recordings::sfu_route(req, &env, rest).await
        }
        (_, ["api", ..]) => Err(EdgeError::NotFound(format!(
            "no API route {} {path}",
            req.method()
        ))),
        _ => Ok(env.assets("ASSETS")?.fetch_request(req).await?),
    }
}

pub(crate) fn secret(env: &Env, name: &str) -> EdgeResult<String> {
    env.secret(name).map(|s| s.to_string()).map_err(|_| {
        EdgeError::Config(format!(
            "secret {name} is not set (wrangler secret put {name}, or .dev.vars)"
        ))
    })
}

pub(crate) fn token_key(env: &Env) -> EdgeResult<TokenKey> {
    Ok(TokenKey::hs256(
        secret(env, "ROOM_TOKEN_SECRET")?.as_bytes(),
    )?)
}

/// 128 random bits, hex.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("crypto.getRandomValues is available in Workers");
    hex::encode(b)
}

async fn registry_status(env: &Env) -> EdgeResult<Vec<SfuStatus>> {
    let stub = env
        .durable_object(registry::BINDING)?
        .get_by_name(registry::NAME)?;
    let mut res = stub.fetch_with_str("https://registry/status").await?;
    Ok(res.json().await?)
}

async fn health(env: &Env) -> EdgeResult<Response> {
    let sfus = registry_status(env).await?;
    let live = sfus.iter().filter(|s| s.healthy).count();
    Ok(Response::from_json(&json!({
        "status": if live > 0 { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "live_sfus": live,
        "sfus": sfus,
        "wasm_memory_bytes": wasm_memory_bytes(),
    }))?)
}

/// The linear memory of this isolate's WebAssembly instance (the edge and its Durable Objects'
/// Rust state): it only grows, so its size is the high-water mark of what our code holds.
fn wasm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) as u64 * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// The body of a POST from an SFU to `path`, once its control signature checks out.
async fn signed_body(req: &mut Request, env: &Env, path: &str) -> EdgeResult<Vec<u8>> {
    let body = req.bytes().await?;
    let sig = req.headers().get(control::SIGNATURE_HEADER)?;
    let now = worker::Date::now().as_millis();
    control::verify(
        secret(env, "CONTROL_SECRET")?.as_bytes(),
        sig.as_deref(),
        "POST",
        path,
        &body,
        now,
    )?;
    Ok(body)
}

async fn heartbeat(mut req: Request, env: &Env) -> EdgeResult<Response> {
    let body = signed_body(&mut req, env, "/api/sfu/heartbeat").await?;
    let stub = env
        .durable_object(registry::BINDING)?
        .get_by_name(registry::NAME)?;
    Ok(post_to(
        &stub,
        "https://registry/heartbeat",
        String::from_utf8_lossy(&body).into_owned(),
    )
    .await?)
}

/// TURN servers for participant `who`'s PeerConnection: `TURN_URLS` (a var) with credentials
/// made from `TURN_SECRET` (a secret shared with coturn), valid for an hour. Empty when TURN is not
/// set up.
fn turn_servers(env: &Env, who: &str) -> Vec<turn::IceServer> {
    turn_servers_for(env, who, turn::MAX_TTL_SECS)
}

/// TURN servers for `who`, valid for `ttl_secs` (at most an hour).
fn turn_servers_for(env: &Env, who: &str, ttl_secs: u64) -> Vec<turn::IceServer> {
    let urls = env
        .var("TURN_URLS")
        .map(|v| turn::parse_urls(&v.to_string()))
        .unwrap_or_default();
    match (urls.is_empty(), env.secret("TURN_SECRET")) {
        (false, Ok(secret)) => {
            let now = worker::Date::now().as_millis() / 1000;
            vec![turn::credentials(
                secret.to_string().as_bytes(),
                urls,
                who,
                now,
                ttl_secs,
            )]
        }
        _ => Vec::new(),
    }
}

/// `GET /api/rooms/{room}/ice-servers` with `Authorization: Bearer <room token>`: fresh TURN
/// credentials for a member of the room (the page asks again with each fresh token). Nobody else
/// gets a relay: no token, another room's, an expired one or a waiting-room pass → 401/403.
async fn room_ice_servers(req: &Request, env: &Env, room: &str) -> EdgeResult<Response> {
    let token = req
        .headers()
        .get("authorization")?
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_string))
        .ok_or_else(|| {
            EdgeError::Token(edgemeet_shared::token::TokenError::Malformed(
                "TURN credentials need the room token (Authorization: Bearer …)".into(),
            ))
        })?;
    let now = worker::Date::now().as_millis() / 1000;
    // The signature here (a forged token costs no Durable Object call), then the room: removed,
    // banned, waiting or from an ended meeting → no relay.
    token_key(env)?.verify(&token, room, now, |_| false)?;
    let url = Url::parse_with_params("https://room/relay", &[("room", room), ("token", &token)])
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let stub = env.durable_object(room::BINDING)?.get_by_name(room)?;
    let mut res = stub.fetch_with_str(url.as_str()).await?;
    if res.status_code() != 200 {
        let err: edgemeet_shared::protocol::WireError = res.json().await?;
        return Err(EdgeError::Upstream(err));
    }
    let claims: Claims = res.json().await?;
    Ok(Response::from_json(&json!({
        "ice_servers": turn_servers(env, &claims.sub),
        "ttl_secs": turn::MAX_TTL_SECS,
    }))?)
}

/// An SFU's offer for one participant (tracks came or went), relayed through the room's object.
async fn sfu_signal(mut req: Request, env: &Env) -> EdgeResult<Response> {
    let body = signed_body(&mut req, env, "/api/sfu/signal").await?;
    let signal: SfuSignal = serde_json::from_slice(&body)
        .map_err(|e| EdgeError::BadRequest(format!("signal body: {e}")))?;
    let room = normalize_room_name(&signal.room).map_err(EdgeError::BadRequest)?;
    let stub = env.durable_object(room::BINDING)?.get_by_name(&room)?;
    let res = post_to(
        &stub,
        "https://room/sfu-offer",
        String::from_utf8_lossy(&body).into_owned(),
    )
    .await?;
    if res.status_code() >= 300 {
        return Ok(res);
    }
    Ok(Response::empty()?.with_status(204))
}

/// An SFU's event for one room (dynacast layers for a publisher, the active speaker).
async fn sfu_event(mut req: Request, env: &Env) -> EdgeResult<Response> {
    let body = signed_body(&mut req, env, "/api/sfu/event").await?;
    let event: SfuEvent = serde_json::from_slice(&body)
        .map_err(|e| EdgeError::BadRequest(format!("event body: {e}")))?;
    let room = normalize_room_name(event.room()).map_err(EdgeError::BadRequest)?;
    let stub = env.durable_object(room::BINDING)?.get_by_name(&room)?;
    let res = post_to(
        &stub,
        "https://room/sfu-event",
        String::from_utf8_lossy(&body).into_owned(),
    )
    .await?;
    if res.status_code() >= 300 {
        return Ok(res);
    }
    Ok(Response::empty()?.with_status(204))
}

/// A draining SFU names its rooms: no new room goes there, and each room's object moves its media
/// away. A room that could not be told answers 503, so the SFU asks again.
async fn sfu_draining(mut req: Request, env: &Env) -> EdgeResult<Response> {
    let body = signed_body(&mut req, env, "/api/sfu/draining").await?;
    let d: SfuDraining = serde_json::from_slice(&body)
        .map_err(|e| EdgeError::BadRequest(format!("draining body: {e}")))?;
    let registry = env
        .durable_object(registry::BINDING)?
        .get_by_name(registry::NAME)?;
    let suspend = serde_json::to_string(&registry::SuspendRequest {
        sfu: d.sfu.clone(),
        draining: true,
    })
    .map_err(|e| EdgeError::Config(e.to_string()))?;
    post_to(&registry, "https://registry/suspend", suspend).await?;
    let mut failed = Vec::new();
    for raw in &d.rooms {
        let Ok(room) = normalize_room_name(raw) else {
            continue;
        };
        let stub = env.durable_object(room::BINDING)?.get_by_name(&room)?;
        let one = SfuDraining {
            sfu: d.sfu.clone(),
            rooms: vec![room],
        };
        let body = serde_json::to_string(&one).map_err(|e| EdgeError::Config(e.to_string()))?;
        match post_to(&stub, "https://room/sfu-draining", body).await {
            Ok(res) if res.status_code() < 300 => {}
            Ok(res) => failed.push(format!("{raw}: HTTP {}", res.status_code())),
            Err(e) => failed.push(format!("{raw}: {e}")),
        }
    }
    if !failed.is_empty() {
        worker::console_warn!("draining {}: rooms not told: {}", d.sfu, failed.join("; "));
        return Err(EdgeError::Unavailable(format!(
            "{} of {} rooms could not be told to move; ask again",
            failed.len(),
            d.rooms.len()
        )));
    }
    Ok(Response::empty()?.with_status(204))
}

/// The client's location from `request.cf` (read defensively: worker's own getter unwraps).
fn cf_location(req: &Request) -> Option<GeoPoint> {
    let cf = js_sys::Reflect::get(req.inner(), &"cf".into()).ok()?;
    let num = |k: &str| {
        let v = js_sys::Reflect::get(&cf, &k.into()).ok()?;
        v.as_string()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_f64())
    };
    Some(GeoPoint {
        lat: num("latitude")?,
        lon: num("longitude")?,
    })
}

/// The client's address: the platform's `cf-connecting-ip` (on the dev stack, a test may say).
pub(crate) fn client_addr(req: &Request, env: &Env) -> EdgeResult<String> {
    if dev_overrides(env) {
        if let Some(a) = req.headers().get(DEV_ADDR_HEADER)? {
            return Ok(a);
        }
    }
    Ok(req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".into()))
}

/// Refuses a join over the per-address limit with 429 and `Retry-After`. Without the binding (a
/// misconfigured deployment) joins go on, and the log says so.
async fn join_limit(env: &Env, addr: &str) -> EdgeResult<()> {
    let limiter = match env.rate_limiter(JOIN_LIMITER) {
        Ok(l) => l,
        Err(e) => {
            worker::console_warn!("no {JOIN_LIMITER} binding, joins are not rate-limited: {e}");
            return Ok(());
        }
    };
    let outcome = limiter.limit(format!("join:{}", address_key(addr))).await?;
    if outcome.success {
        return Ok(());
    }
    Err(EdgeError::Refused {
        code: ErrorCode::TooManyRequests,
        message: format!(
            "Too many joins from your network. Try again in {JOIN_LIMIT_PERIOD_SECS} s."
        ),
        retry_after_secs: Some(JOIN_LIMIT_PERIOD_SECS),
    })
}

/// The Workers rate-limiting binding for connection checks: per client address, 30 a minute (an
/// office behind one address opens many pre-join pages at the hour)
/// (wrangler.toml) — a pre-join page runs one by itself and on each "Test my connection".
const PROBE_LIMITER: &str = "PROBE_LIMITER";

/// `POST /api/rooms/{room}/probe` `{offers}`: a pre-join connection check (`netcheck`). The SFU a
/// join would get now (the one the room keeps, else the registry's nearest) makes a throwaway
/// session per offer; the page gets the answers, that SFU's region and TURN credentials for
/// [`netcheck::PROBE_TURN_TTL_SECS`] — no room token is needed (nobody has one before joining;
/// the relay still reaches only the SFUs' media address). Limited per client address.
async fn probe(mut req: Request, env: &Env, room: &str) -> EdgeResult<Response> {
    use edgemeet_shared::netcheck::{self, ProbeAnswers, ProbeReply, ProbeRequest};
    // A JSON body only: a form or text/plain POST from another site (no CORS preflight) cannot
    // spend its visitors' checks.
    if !req
        .headers()
        .get("content-type")?
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(EdgeError::BadRequest(
            "a connection check is a JSON request (content-type: application/json)".into(),
        ));
    }
    let addr = client_addr(&req, env)?;
    match env.rate_limiter(PROBE_LIMITER) {
        Ok(limiter) => {
            if !limiter
                .limit(format!("probe:{}", address_key(&addr)))
                .await?
                .success
            {
                return Err(EdgeError::Refused {
                    code: ErrorCode::TooManyRequests,
                    message: "Too many connection checks from your network. Try again in a minute."
                        .into(),
                    retry_after_secs: Some(60),
                });
            }
        }
        Err(e) => {
            worker::console_warn!("no {PROBE_LIMITER} binding, checks are not rate-limited: {e}")
        }
    }
    let body: ProbeRequest = req.json().await.map_err(|e| {
        EdgeError::BadRequest(format!(
            "a connection check's body is {{\"offers\": [sdp, …]}}: {e}"
        ))
    })?;
    netcheck::check_probe(&body).map_err(EdgeError::Upstream)?;
    let location = client_location(
        cf_location(&req),
        req.headers().get(DEV_LOCATION_HEADER)?.as_deref(),
        dev_overrides(env),
    );
    // The room's SFU while it has one, else the registry's choice for this location.
    let stub = env.durable_object(room::BINDING)?.get_by_name(room)?;
    let kept: Option<SfuChoice> = stub
        .fetch_with_str(&format!("https://room/probe-sfu?room={room}"))
        .await?
        .json()
        .await?;
    let sfu = match kept {
        Some(c) => c,
        None => {
            let registry = env
                .durable_object(registry::BINDING)?
                .get_by_name(registry::NAME)?;
            let ask = serde_json::to_string(&registry::ChooseRequest {
                room: room.to_string(),
                location,
            })
            .map_err(|e| EdgeError::Config(e.to_string()))?;
            let mut res = post_to(&registry, "https://registry/choose", ask).await?;
            if res.status_code() != 200 {
                return Err(EdgeError::Upstream(res.json().await?));
            }
            res.json().await?
        }
    };
    let secret = secret(env, "CONTROL_SECRET")?;
    let sent = serde_json::to_string(&body).map_err(|e| EdgeError::Config(e.to_string()))?;
    let reply = room::with_timeout(
        5_000,
        room::sfu_request(&secret, &sfu.url, Method::Post, "/v1/probe", sent),
    )
    .await;
    let answers = match reply {
        edgemeet_shared::room::HttpReply::Answered { status: 200, body } => {
            serde_json::from_str::<ProbeAnswers>(&body)
                .map_err(|e| EdgeError::Config(format!("the media server's probe answer: {e}")))?
                .answers
        }
        edgemeet_shared::room::HttpReply::Answered { status, body } => {
            let err = serde_json::from_str::<edgemeet_shared::protocol::WireError>(&body)
                .unwrap_or_else(|_| edgemeet_shared::protocol::WireError {
                    code: ErrorCode::MediaServerError,
                    message: format!("the media server answered {status}"),
                });
            return Err(EdgeError::Upstream(err));
        }
        edgemeet_shared::room::HttpReply::Unreachable { reason } => {
            worker::console_warn!("connection check: {} unreachable: {reason}", sfu.id);
            return Err(EdgeError::Upstream(edgemeet_shared::protocol::WireError {
                code: ErrorCode::NoMediaServer,
                message: "The media server did not answer. Try again in a moment.".into(),
            }));
        }
    };
    let ice_servers = turn_servers_for(env, "probe", netcheck::PROBE_TURN_TTL_SECS);
    Ok(Response::from_json(&ProbeReply {
        answers,
        ice_servers: serde_json::to_value(ice_servers)
            .map_err(|e| EdgeError::Config(e.to_string()))?,
        region: sfu.region,
    })?)
}

/// Only the local dev/test stack sets DEV_OVERRIDES (`wrangler dev --var`); a deployed worker never
/// has it, so the dev-only hooks (fake location, short tokens, evicting a room) do not exist there.
fn dev_overrides(env: &Env) -> bool {
    env.var("DEV_OVERRIDES")
        .map(|v| v.to_string() == "true")
        .unwrap_or(false)
}

/// Asks the room's Durable Object for its SFU (chosen at first join from the joiner's location).
async fn room_sfu(env: &Env, room: &str, location: Option<GeoPoint>) -> EdgeResult<SfuChoice> {
    let stub = env.durable_object(room::BINDING)?.get_by_name(room)?;
    let body = serde_json::to_string(&registry::ChooseRequest {
        room: room.to_string(),
        location,
    })
    .map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut res = post_to(&stub, "https://room/assign", body).await?;
    if res.status_code() == 200 {
        return Ok(res.json().await?);
    }
    // Pass the object's own error on (503 no_media_server when no SFU is healthy).
    Err(EdgeError::Upstream(res.json().await?))
}

/// POSTs `body` to a Durable Object.
pub(crate) async fn post_to(stub: &Stub, url: &str, body: String) -> worker::Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    stub.fetch_with_request(Request::new_with_init(url, &init)?)
        .await
}

/// The cookie holding the browser's identity (a removed person's browser cannot come back).
const IDENTITY_COOKIE: &str = "edgemeet-id";

/// The browser's identity from its cookie, if it has one.
pub(crate) fn known_identity(req: &Request) -> EdgeResult<Option<String>> {
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    Ok(cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == IDENTITY_COOKIE && v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| v.to_string())
    }))
}

/// The browser's identity from its cookie, or a new one (and the `Set-Cookie` that keeps it).
fn identity(req: &Request) -> EdgeResult<(String, Option<String>)> {
    if let Some(id) = known_identity(req)? {
        return Ok((id, None));
    }
    let id = random_id();
    let secure = req.url()?.scheme() == "https";
    let cookie = format!(
        "{IDENTITY_COOKIE}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    Ok((id, Some(cookie)))
}

async fn join(mut req: Request, env: &Env, room: &str) -> EdgeResult<Response> {
    let location = client_location(
        cf_location(&req),
        req.headers().get(DEV_LOCATION_HEADER)?.as_deref(),
        dev_overrides(env),
    );
    let (identity, set_cookie) = identity(&req)?;
    let addr = client_addr(&req, env)?;
    join_limit(env, &addr).await?;
    let body: JoinRequest = req.json().await.map_err(|e| {
        EdgeError::BadRequest(format!("join body must be {{\"name\": \"…\"}}: {e}"))
    })?;
    let name = normalize_display_name(&body.name).map_err(EdgeError::BadRequest)?;
    let ttl = match req.headers().get(DEV_TOKEN_TTL_HEADER)? {
        Some(v) if dev_overrides(env) => v
            .parse::<u64>()
            .ok()
            .filter(|t| (5..=TOKEN_TTL_SECS).contains(t))
            .ok_or_else(|| {
                EdgeError::BadRequest(format!(
                    "{DEV_TOKEN_TTL_HEADER}: 5 to {TOKEN_TTL_SECS} seconds"
                ))
            })?,
        _ => TOKEN_TTL_SECS,
    };
    let stub = env.durable_object(room::BINDING)?.get_by_name(room)?;
    // A scheduled meeting's room: D1 says whose it is, and the joiner's session who they are.
    let scheduled = meetings::join_info(&req, env, room).await?;
    let password = password::check(
        &stub,
        room,
        &identity,
        &addr,
        body.password,
        scheduled.as_ref().map(|(_, hash)| hash.clone()),
    )
    .await?;
    let ask = JoinAsk {
        name: name.clone(),
        identity: identity.clone(),
        addr,
        password,
        scheduled: scheduled.map(|(ask, _)| ask),
    };
    let ask = serde_json::to_string(&ask).map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut res = post_to(&stub, &format!("https://room/join?room={room}"), ask).await?;
    if res.status_code() != 200 {
        return Err(EdgeError::Upstream(res.json().await?));
    }
    let (waiting, grants, door) = match res.json::<Admission>().await? {
        Admission::Enter { grants, door } => (false, grants, door),
        Admission::Wait => (true, Grants::default(), 0),
        Admission::Refused {
            code,
            message,
            retry_after_ms,
        } => {
            return Err(EdgeError::Refused {
                code,
                message,
                retry_after_secs: retry_after_ms.map(|ms| ms.div_ceil(1000)),
            })
        }
    };
    let sfu = room_sfu(env, room, location).await?;
    let now = worker::Date::now().as_millis() / 1000;
    let participant_id = random_id();
    let role = Role::Participant;
    let claims = Claims {
        sub: participant_id.clone(),
        name,
        room: room.to_string(),
        role,
        grants,
        sfu: Some(sfu.id.clone()),
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: random_id(),
        waiting,
        bid: Some(identity),
        door,
        admitted: false,
    };
    let token = token_key(env)?.sign(&claims)?;
    // A member's TURN credentials come with the join (no round trip before media starts).
    let ice_servers = if waiting {
        serde_json::Value::Null
    } else {
        serde_json::to_value(turn_servers(env, &participant_id))
            .map_err(|e| EdgeError::Config(e.to_string()))?
    };
    let res = Response::from_json(&JoinResponse {
        waiting,
        ice_servers,
        ws_url: format!("/api/rooms/{room}/ws?token={token}"),
        token,
        participant_id,
        expires_at_ms: claims.exp * 1000,
        sfu,
    })?;
    if let Some(cookie) = set_cookie {
        res.headers().set("set-cookie", &cookie)?;
    }
    Ok(res)
}
