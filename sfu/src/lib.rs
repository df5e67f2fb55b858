//! edgemeet's regional SFU: the HTTP control API, health, metrics and the heartbeat to the edge.
//! Media forwarding (webrtc-rs) builds on this shell; its decisions live in a pure core.

pub mod codec;
pub mod config;
pub mod control;
pub mod downlink;
pub mod forward;
pub mod heartbeat;
pub mod layers;
pub mod load;
pub mod media;
pub mod metrics;
pub mod offer;
pub mod outbox;
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
            media,
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.draining.set(1);
        self.media.set_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
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
        .route("/v1/rooms/{room}/participants/{id}", delete(control::leave))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    Json(json!({
        "status": if s.is_draining() { "draining" } else { "ok" },
        "id": s.config.id,
        "region": s.config.region,
        "version": env!("CARGO_PKG_VERSION"),
        "participants": s.metrics.participants.get(),
    }))
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
