//! A fake edge for the SFU under load: verifies the SFU's signed calls, hands its offers to the
//! peer they are for (as the Room Durable Object does), and remembers what dynacast asks of each
//! publisher. Heartbeats, events and drain notices are accepted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use edgemeet_shared::control;
use edgemeet_shared::protocol::{SfuEvent, SfuSignal};
use tokio::sync::{mpsc, watch};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct EdgeState {
    /// Where the SFU's offers for each participant go.
    pub inboxes: Mutex<HashMap<String, mpsc::UnboundedSender<(String, u64)>>>,
    /// Dynacast: the camera layers anyone receives, per publisher (all on until told).
    pub layers: Mutex<HashMap<String, watch::Sender<Vec<bool>>>>,
    /// Calls refused for a bad signature (should stay 0).
    pub bad_signatures: Mutex<u64>,
}

pub struct FakeEdge {
    pub addr: SocketAddr,
    pub state: Arc<EdgeState>,
    secret: Vec<u8>,
}

impl FakeEdge {
    pub async fn start(secret: &str) -> std::io::Result<FakeEdge> {
        let state = Arc::new(EdgeState::default());
        let secret = secret.as_bytes().to_vec();
        let app = Router::new()
            .route("/api/sfu/signal", post(signal))
            .route("/api/sfu/event", post(event))
            .route("/api/sfu/heartbeat", post(ok))
            .route("/api/sfu/draining", post(ok))
            .with_state((state.clone(), Arc::new(secret.clone())));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Ok(FakeEdge {
            addr,
            state,
            secret,
        })
    }

    /// Offers the SFU sends `id` arrive on the returned channel, each with its number (the
    /// answer says which offer it answers, as the edge does).
    pub fn inbox(&self, id: &str) -> mpsc::UnboundedReceiver<(String, u64)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state
            .inboxes
            .lock()
            .unwrap()
            .insert(id.to_string(), tx);
        rx
    }

    /// The layers dynacast wants of publisher `id`.
    pub fn layers(&self, id: &str) -> watch::Receiver<Vec<bool>> {
        let mut map = self.state.layers.lock().unwrap();
        map.entry(id.to_string())
            .or_insert_with(|| watch::channel(vec![true; 3]).0)
            .subscribe()
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

type St = (Arc<EdgeState>, Arc<Vec<u8>>);

fn verified(st: &St, headers: &HeaderMap, path: &str, body: &[u8]) -> bool {
    let sig = headers
        .get(control::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let ok = control::verify(&st.1, sig, "POST", path, body, now_ms()).is_ok();
    if !ok {
        *st.0.bad_signatures.lock().unwrap() += 1;
    }
    ok
}

async fn signal(State(st): State<St>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !verified(&st, &headers, "/api/sfu/signal", &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(s) = serde_json::from_slice::<SfuSignal>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match st.0.inboxes.lock().unwrap().get(&s.participant) {
        Some(tx) if tx.send((s.sdp, s.generation)).is_ok() => StatusCode::NO_CONTENT,
        _ => StatusCode::GONE,
    }
}

async fn event(State(st): State<St>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !verified(&st, &headers, "/api/sfu/event", &body) {
        return StatusCode::UNAUTHORIZED;
    }
    if let Ok(SfuEvent::PublishLayers {
        participant,
        active,
        ..
    }) = serde_json::from_slice::<SfuEvent>(&body)
    {
        let mut map = st.0.layers.lock().unwrap();
        let tx = map
            .entry(participant)
            .or_insert_with(|| watch::channel(vec![true; 3]).0);
        let _ = tx.send(active);
    }
    StatusCode::NO_CONTENT
}

async fn ok() -> StatusCode {
    StatusCode::NO_CONTENT
}
