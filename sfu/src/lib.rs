//! edgemeet's regional SFU: the HTTP control API, health, metrics and the heartbeat to the edge.
//! Media forwarding (webrtc-rs) builds on this shell; its decisions live in a pure core.

pub mod codec;
pub mod config;
pub mod control;
pub mod downlink;
pub mod edge_link;
pub mod fanout;
pub mod forward;
pub mod heartbeat;
pub mod layers;
pub mod load;
pub mod media;
pub mod metrics;
pub mod negotiation;
pub mod offer;
pub mod outbox;
pub mod rtcp_up;
pub mod sfu_core;
pub mod speaker;

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
    pub media: Arc<media::Media>,
}

impl AppState {
    pub fn new(config: config::Config) -> Arc<AppState> {
        let metrics = Arc::new(metrics::Metrics::new(&config));
        let media = media::Media::new(
            media::MediaConfig {
                media_ip: config.media_ip,
                udp_ports: config.udp_ports,
                capacity: config.capacity,
                edge_url: config.edge_url.clone(),
                control_secret: config.control_secret.clone(),
                id: config.id.clone(),
            },
            metrics.clone(),
        );
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
