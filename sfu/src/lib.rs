//! edgemeet's regional SFU: the HTTP control API, health, metrics and the heartbeat to the edge.
//! Media forwarding (webrtc-rs) builds on this shell; its decisions live in a pure core.

pub mod aes_ctr;
pub mod codec;
pub mod config;
pub mod control;
pub mod downlink;
pub mod edge_link;
pub mod engine;
pub mod fanout;
pub mod forward;
pub mod heartbeat;
pub mod hmac_x16;
pub mod layers;
pub mod load;
pub mod media;
pub mod metrics;
pub mod negotiation;
pub mod offer;
pub mod outbox;
pub mod quality;
pub mod record;
pub mod rtcp_up;
pub mod rtp_out;
pub mod sfu_core;
pub mod speaker;
pub mod srtp_out;
pub mod udp_batch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use edgemeet_shared::protocol::{ErrorCode, WireError};
use serde_json::json;

pub struct AppState {
    pub config: config::Config,
    pub metrics: Arc<metrics::Metrics>,
    pub draining: AtomicBool,
    /// A task panicked: whatever it held may be broken (poisoned locks, half-made state), so this
    /// SFU reports itself failed, drains and exits (see `main.rs`).
    pub failed: AtomicBool,
    /// Asks `main` to drain and stop (a panic).
    pub stop: tokio::sync::Notify,
    pub media: MediaHandle,
}

/// The media engine this SFU runs (see `config::EngineKind`), behind one set of calls.
pub enum MediaHandle {
    Async(Arc<media::Media>),
    Sans(Arc<engine::Engine>),
}

impl MediaHandle {
    pub fn set_draining(&self) {
        match self {
            MediaHandle::Async(m) => m.set_draining(),
            MediaHandle::Sans(e) => e.set_draining(),
        }
    }

    pub async fn offer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        blocked: u8,
        scope: u32,
    ) -> Result<String, media::MediaError> {
        match self {
            MediaHandle::Async(m) => m.offer(room, id, sdp, blocked, scope).await,
            MediaHandle::Sans(e) => e.offer(room, id, sdp, blocked, scope).await,
        }
    }

    /// A pre-join connection check's throwaway session (the sans-IO engine only).
    pub async fn probe(&self, sdp: String) -> Result<String, media::MediaError> {
        match self {
            MediaHandle::Async(_) => Err(media::MediaError::Unsupported(
                "this media server's engine runs no connection checks".into(),
            )),
            MediaHandle::Sans(e) => e.probe(sdp).await,
        }
    }

    pub async fn set_scopes(
        &self,
        room: &str,
        version: u64,
        scopes: Vec<(String, u32)>,
    ) -> Result<(), media::MediaError> {
        match self {
            MediaHandle::Async(m) => {
                m.set_scopes(room, version, scopes);
                Ok(())
            }
            MediaHandle::Sans(e) => e.set_scopes(room, version, scopes).await,
        }
    }

    /// Whether (and as which recording) the room is recorded: see `RecordBody`.
    pub async fn record(
        &self,
        room: &str,
        version: u64,
        recording: Option<String>,
    ) -> Result<(), media::MediaError> {
        match self {
            // A 4xx: the room does not ask again every second.
            MediaHandle::Async(_) => Err(media::MediaError::Unsupported(
                "this SFU runs the async engine, which cannot record (run --engine sans)".into(),
            )),
            MediaHandle::Sans(e) => e.record(room, version, recording).await,
        }
    }

    /// `generation`: the number of the offer it answers (0: not numbered, the one waiting).
    pub async fn answer(
        &self,
        room: &str,
        id: &str,
        sdp: String,
        generation: u64,
    ) -> Result<(), media::MediaError> {
        match self {
            MediaHandle::Async(m) => m.answer(room, id, sdp, generation).await,
            MediaHandle::Sans(e) => e.answer(room, id, sdp, generation).await,
        }
    }

    pub async fn set_views(
        &self,
        room: &str,
        id: &str,
        views: Vec<edgemeet_shared::protocol::TileView>,
    ) -> Result<(), media::MediaError> {
        match self {
            MediaHandle::Async(m) => m.set_views(room, id, views),
            MediaHandle::Sans(e) => e.set_views(room, id, views).await,
        }
    }

    pub async fn block(&self, room: &str, id: &str, bits: u8) -> Result<(), media::MediaError> {
        match self {
            MediaHandle::Async(m) => m.block(room, id, bits),
            MediaHandle::Sans(e) => e.block(room, id, bits).await,
        }
    }

    pub async fn remove_peer(&self, room: &str, id: &str, why: &str) {
        match self {
            MediaHandle::Async(m) => m.remove_peer(room, id, why).await,
            MediaHandle::Sans(e) => e.remove_peer(room, id, why).await,
        }
    }

    pub async fn describe(&self) -> serde_json::Value {
        match self {
            MediaHandle::Async(m) => m.describe(),
            MediaHandle::Sans(e) => e.describe().await,
        }
    }

    pub fn room_participants(&self, room: &str) -> usize {
        match self {
            MediaHandle::Async(m) => m.room_participants(room),
            MediaHandle::Sans(e) => e.room_participants(room),
        }
    }

    pub fn room_names(&self) -> Vec<String> {
        match self {
            MediaHandle::Async(m) => m.room_names(),
            MediaHandle::Sans(e) => e.room_names(),
        }
    }

    pub fn participant_count(&self) -> usize {
        match self {
            MediaHandle::Async(m) => m.participant_count(),
            MediaHandle::Sans(e) => e.participant_count(),
        }
    }

    pub async fn close_all(&self) {
        match self {
            MediaHandle::Async(m) => m.close_all().await,
            MediaHandle::Sans(e) => e.close_all().await,
        }
    }

    /// For the panic test only (see `control::test_panic`).
    pub fn panic_holding_rooms_lock(&self) {
        match self {
            MediaHandle::Async(m) => m.panic_holding_rooms_lock(),
            MediaHandle::Sans(e) => e.panic_holding_rooms_lock(),
        }
    }
}

impl AppState {
    pub fn new(config: config::Config) -> Arc<AppState> {
        let metrics = Arc::new(metrics::Metrics::new(&config));
        let cfg = media::MediaConfig {
            media_ip: config.media_ip,
            udp_ports: config.udp_ports,
            capacity: config.capacity,
            edge_url: config.edge_url.clone(),
            control_secret: config.control_secret.clone(),
            id: config.id.clone(),
            record_dir: config.record_dir.clone(),
        };
        let media = match config.engine {
            config::EngineKind::Async => {
                MediaHandle::Async(media::Media::new(cfg, metrics.clone()))
            }
            config::EngineKind::Sans => MediaHandle::Sans(
                engine::Engine::new(cfg, metrics.clone())
                    .expect("the media engine's thread and poller start"),
            ),
        };
        Arc::new(AppState {
            config,
            metrics,
            draining: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            media,
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.draining.set(1);
        self.media.set_draining();
    }

    /// A task panicked: out of the registry (draining, `/healthz` 503), then stop.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.set_draining();
        self.stop.notify_one();
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/rooms", get(control::rooms))
        .route("/v1/probe", post(control::probe))
        .route("/v1/rooms/{room}", get(control::room))
        .route(
            "/v1/rooms/{room}/participants/{id}/offer",
            post(control::offer),
        )
        .route(
            "/v1/rooms/{room}/participants/{id}/answer",
            post(control::answer),
        )
        .route(
            "/v1/rooms/{room}/participants/{id}/views",
            post(control::views),
        )
        .route(
            "/v1/rooms/{room}/participants/{id}/block",
            post(control::block),
        )
        .route("/v1/rooms/{room}/scopes", post(control::scopes))
        .route("/v1/rooms/{room}/recording", post(control::record))
        .route("/v1/rooms/{room}/participants/{id}", delete(control::leave));
    // Tests only (the variable is never set in a deployment): a signed request makes a task
    // panic while it holds the room map's lock, as a bug would.
    let router = if std::env::var("EDGEMEET_SFU_TEST_PANIC").as_deref() == Ok("1") {
        router.route("/v1/test/panic", post(control::test_panic))
    } else {
        router
    };
    router.fallback(not_found).with_state(state)
}

async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let (code, status) = if s.is_failed() {
        (StatusCode::SERVICE_UNAVAILABLE, "failed")
    } else if s.is_draining() {
        (StatusCode::OK, "draining")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        Json(json!({
            "status": status,
            "id": s.config.id,
            "region": s.config.region,
            "version": env!("CARGO_PKG_VERSION"),
            "participants": s.metrics.participants.get(),
        })),
    )
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(WireError {
            code: ErrorCode::NotFound,
            message: "no such route on this SFU".into(),
        }),
    )
}
