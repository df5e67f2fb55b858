//! What the SFU sends the edge on its own initiative: renegotiation offers for a participant's
//! browser (`SIGNAL_PATH`) and events about rooms — dynacast, the active speaker — (`EVENT_PATH`),
//! both as signed POSTs. Events go through the [`Outbox`] (per key in order, sent again until the
//! edge took them, superseded by a newer one about the same thing); offers are sent once per call
//! and the caller's core decides about resending (see `negotiation.rs`). Shared by both media
//! engines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use edgemeet_shared::protocol::{SfuEvent, SfuSignal};

use crate::heartbeat::EdgeCallError;
use crate::outbox::{Outbox, Outcome};

pub const SIGNAL_PATH: &str = "/api/sfu/signal";
pub const EVENT_PATH: &str = "/api/sfu/event";

pub struct EdgeLink {
    edge_url: Option<String>,
    control_secret: String,
    /// This SFU's id, named in offers so a room can tell them from another SFU's.
    id: String,
    http: reqwest::Client,
    outbox: Mutex<Outbox>,
    running: AtomicBool,
    wake: Arc<tokio::sync::Notify>,
    me: Weak<EdgeLink>,
}

impl Drop for EdgeLink {
    fn drop(&mut self) {
        // The event sender waits on this: woken, it finds the link gone and ends.
        self.wake.notify_one();
    }
}

fn outbox(o: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    // A panic elsewhere must not stop the events of a draining SFU.
    o.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EdgeLink {
    pub fn new(edge_url: Option<String>, control_secret: String, id: String) -> Arc<EdgeLink> {
        Arc::new_cyclic(|me| EdgeLink {
            edge_url,
            control_secret,
            id,
            http: reqwest::Client::new(),
            outbox: Mutex::new(Outbox::default()),
            running: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            me: me.clone(),
        })
    }

    /// Queues `event` for the edge (see [`crate::outbox`]). Needs a tokio runtime.
    pub fn push_event(&self, event: SfuEvent) {
        if self.edge_url.is_none() {
            return;
        }
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        outbox(&self.outbox).push(unix_us, event);
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(Self::send_events(self.me.clone(), self.wake.clone()));
        }
        self.wake.notify_one();
    }

    /// Nothing more to tell the edge about `room` (it is gone from here).
    pub fn forget_room(&self, room: &str) {
        outbox(&self.outbox).forget_room(room);
    }

    /// Posts the outbox's events to the edge for as long as the link lives (it holds the link
    /// only while it works).
    async fn send_events(me: Weak<EdgeLink>, wake: Arc<tokio::sync::Notify>) {
        loop {
            let timeout = {
                let Some(link) = me.upgrade() else { return };
                let (batch, timeout) = {
                    let mut o = outbox(&link.outbox);
                    let now = Instant::now();
                    let batch: Vec<SfuEvent> = std::iter::from_fn(|| o.poll_send(now)).collect();
                    (batch, o.poll_timeout(now))
                };
                for event in batch {
                    let link = link.clone();
                    tokio::spawn(async move {
                        let outcome = link.post_event(&event).await;
                        outbox(&link.outbox).sent(Instant::now(), &event, outcome);
                        link.wake.notify_one();
                    });
                }
                timeout
            };
            match timeout {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = wake.notified() => {}
                    }
                }
                None => wake.notified().await,
            }
        }
    }

    async fn post_event(&self, event: &SfuEvent) -> Outcome {
        let (Some(edge), Ok(body)) = (self.edge_url.as_deref(), serde_json::to_vec(event)) else {
            return Outcome::Refused;
        };
        match crate::heartbeat::post_signed(
            &self.http,
            edge,
            &self.control_secret,
            EVENT_PATH,
            body,
        )
        .await
        {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                let again = e.worth_retrying();
                tracing::warn!(room = event.room(), error = %e, again, "could not deliver an event to the edge");
                if again {
                    Outcome::Failed
                } else {
                    Outcome::Refused
                }
            }
        }
    }

    /// Posts an offer for `participant`'s browser in `room` through the edge.
    pub async fn send_offer(
        &self,
        room: &str,
        participant: &str,
        sdp: String,
        generation: u64,
    ) -> Result<(), EdgeCallError> {
        let edge = self
            .edge_url
            .as_deref()
            .ok_or_else(|| EdgeCallError::Request("no edge_url configured".into()))?;
        let body = serde_json::to_vec(&SfuSignal {
            room: room.into(),
            participant: participant.into(),
            sdp,
            sfu: Some(self.id.clone()),
            generation,
        })
        .map_err(|e| EdgeCallError::Request(e.to_string()))?;
        crate::heartbeat::post_signed(&self.http, edge, &self.control_secret, SIGNAL_PATH, body)
            .await
    }
}
