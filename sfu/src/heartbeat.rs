//! The heartbeat to the edge: every [`HEARTBEAT_INTERVAL_MS`], a signed POST of this SFU's identity,
//! location and load to `{edge}/api/sfu/heartbeat`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgemeet_shared::control;
use edgemeet_shared::region::{SfuHeartbeat, SfuLoad, HEARTBEAT_INTERVAL_MS};

use crate::load::CpuSampler;
use crate::metrics::ResultLabel;
use crate::AppState;

pub const HEARTBEAT_PATH: &str = "/api/sfu/heartbeat";

/// What this SFU reports about itself now.
pub fn heartbeat(state: &AppState, cpu: f64) -> SfuHeartbeat {
    let c = &state.config;
    SfuHeartbeat {
        id: c.id.clone(),
        region: c.region.clone(),
        url: c.public_url.clone(),
        location: c.location,
        capacity: c.capacity,
        load: SfuLoad {
            participants: state.metrics.participants.get().max(0) as u32,
            forwarded_bitrate_bps: 0,
            cpu,
        },
        draining: state.is_draining(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a call to the edge did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeCallError {
    #[error("could not make the request: {0}")]
    Request(String),
    #[error("edge unreachable: {0}")]
    Unreachable(String),
    #[error("edge answered {status}: {body}")]
    Answered { status: u16, body: String },
}

impl EdgeCallError {
    /// Would the same call, sent again later, have a chance? Not for an answer that refuses it
    /// for what it is (a 4xx other than 408 and 429), nor for a request that cannot be made.
    pub fn worth_retrying(&self) -> bool {
        match self {
            EdgeCallError::Request(_) => false,
            EdgeCallError::Unreachable(_) => true,
            EdgeCallError::Answered { status, .. } => {
                !(400..500).contains(status) || *status == 408 || *status == 429
            }
        }
    }
}

/// A signed POST of `body` to the edge at `path`.
pub async fn post_signed(
    client: &reqwest::Client,
    edge: &str,
    secret: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(), EdgeCallError> {
    let sig = control::sign(secret.as_bytes(), "POST", path, &body, now_ms())
        .map_err(|e| EdgeCallError::Request(e.to_string()))?;
    let res = client
        .post(format!("{edge}{path}"))
        .header(control::SIGNATURE_HEADER, sig)
        .header("content-type", "application/json")
        .timeout(std::time::Duration::from_secs(5))
        .body(body)
        .send()
        .await
        .map_err(|e| EdgeCallError::Unreachable(e.to_string()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(EdgeCallError::Answered {
            status: res.status().as_u16(),
            body: res.text().await.unwrap_or_default(),
        })
    }
}

/// Sends one heartbeat.
pub async fn send(
    client: &reqwest::Client,
    edge: &str,
    state: &AppState,
    cpu: f64,
) -> Result<(), EdgeCallError> {
    let body = serde_json::to_vec(&heartbeat(state, cpu))
        .map_err(|e| EdgeCallError::Request(e.to_string()))?;
    post_signed(
        client,
        edge,
        &state.config.control_secret,
        HEARTBEAT_PATH,
        body,
    )
    .await
}

pub const DRAINING_PATH: &str = "/api/sfu/draining";

/// Tells the edge this SFU is stopping and which rooms must move.
pub async fn announce_draining(
    client: &reqwest::Client,
    edge: &str,
    state: &AppState,
) -> Result<(), EdgeCallError> {
    let body = serde_json::to_vec(&edgemeet_shared::protocol::SfuDraining {
        sfu: state.config.id.clone(),
        rooms: state.media.room_names(),
    })
    .map_err(|e| EdgeCallError::Request(e.to_string()))?;
    post_signed(
        client,
        edge,
        &state.config.control_secret,
        DRAINING_PATH,
        body,
    )
    .await
}

/// Heartbeats forever. Logs only when the outcome changes, not on every beat.
pub async fn run(state: Arc<AppState>) {
    let Some(edge) = state.config.edge_url.clone() else {
        tracing::info!("no edge_url configured: running standalone, no heartbeats");
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(HEARTBEAT_INTERVAL_MS * 3 / 4))
        .build()
        .expect("reqwest client builds with static settings");
    let mut cpu = CpuSampler::new();
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok: Option<bool> = None;
    loop {
        tick.tick().await;
        let result = send(&client, &edge, &state, cpu.sample()).await;
        let ok = result.is_ok();
        state
            .metrics
            .heartbeats
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        if last_ok != Some(ok) {
            match &result {
                Ok(()) => tracing::info!(%edge, "heartbeats reaching the edge"),
                Err(e) => {
                    tracing::warn!(%edge, error = %e, "heartbeat failed (will keep trying every {HEARTBEAT_INTERVAL_MS} ms)")
                }
            }
            last_ok = Some(ok);
        }
    }
}
