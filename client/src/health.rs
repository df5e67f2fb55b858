//! The call's health as this page sees it: per remote video, how old its picture is when it shows
//! (glass to glass, from `getSynchronizationSources()`), its frame rate and size, and a
//! connection-quality band; and the band of this page's own connection. The decisions —
//! latency, its median, the score — are `edgemeet_shared::health`'s; this only reads the
//! browser's numbers (every 250 ms for latency, every second for the rest) while in a room.

use std::collections::HashMap;

use edgemeet_shared::health::{
    glass_to_glass_ms, layers_short, score, worst, LatencyWindow, LinkStats, Quality,
};
use edgemeet_shared::media::layer_for_height;
use edgemeet_shared::media::layer_for_tile;
use edgemeet_shared::protocol::ClientMessage;
use js_sys::{Array, Reflect};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::meeting::Meeting;

/// This page's own connection, in [`Health`]'s map.
pub const ME: &str = "";

/// What the page knows of one remote video (publisher id, or `{id}~screen`), or of itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamHealth {
    /// Median glass-to-glass latency over the last 5 s (None: not measured).
    pub latency_ms: Option<f64>,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub layer: String,
    pub quality: Option<Quality>,
}

impl StreamHealth {
    /// What the quality badge's tooltip says.
    pub fn details(&self) -> String {
        let latency = match self.latency_ms {
            Some(ms) => format!("latency {ms:.0} ms"),
            None => "latency not measured".into(),
        };
        if self.width == 0 {
            return latency;
        }
        format!(
            "{latency} · {:.0} fps · {}×{} · layer {}",
            self.fps, self.width, self.height, self.layer
        )
    }
}

pub type Health = RwSignal<HashMap<String, StreamHealth>>;

fn num(o: &JsValue, k: &str) -> Option<f64> {
    Reflect::get(o, &k.into()).ok().and_then(|v| v.as_f64())
}

fn text(o: &JsValue, k: &str) -> Option<String> {
    Reflect::get(o, &k.into()).ok().and_then(|v| v.as_string())
}

/// Track id → stream id of the remote streams now shown.
pub fn owners(m: Meeting) -> HashMap<String, String> {
    m.remote.with_untracked(|r| {
        r.iter()
            .flat_map(|(id, s)| {
                s.get_tracks()
                    .iter()
                    .filter_map(|t| t.dyn_into::<web_sys::MediaStreamTrack>().ok())
                    .map(|t| (t.id(), id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// Counters of one inbound video at one poll.
#[derive(Clone, Copy, Default)]
struct Seen {
    at_ms: f64,
    lost: f64,
    received: f64,
    frozen_s: f64,
    /// The tallest picture of it seen so far (its camera's top layer).
    top: u32,
}

/// Loss and freezes are judged over this long (a browser counts a freeze when it ends: over one
/// poll a short one would read as a frozen second).
const JUDGE_OVER_MS: f64 = 5_000.0;

/// Starts the polls (call once per room page); they stop with it.
pub fn watch(m: Meeting) {
    let windows = StoredValue::new_local(HashMap::<String, LatencyWindow>::new());
    // This page's own band over the last polls (it is told to the room once it held for three).
    let mine_seen = StoredValue::new_local(Vec::<Quality>::new());
    // The band this page last told the room.
    let told = StoredValue::new_local(None::<(String, Quality)>);
    let seen = StoredValue::new_local(HashMap::<String, std::collections::VecDeque<Seen>>::new());
    let sample = move || {
        let Some(pc) = m.call.get_value().and_then(|c| c.peer_connection()) else {
            return;
        };
        let owners = owners(m);
        for r in pc.get_receivers().iter() {
            let Ok(r) = r.dyn_into::<web_sys::RtcRtpReceiver>() else {
                continue;
            };
            let track = r.track();
            if track.kind() != "video" {
                continue;
            }
            let Some(stream) = owners.get(&track.id()) else {
                continue;
            };
            let Some(sources) = Reflect::get(&r, &"getSynchronizationSources".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&r).ok())
                .and_then(|a| a.dyn_into::<Array>().ok())
            else {
                continue;
            };
            let s = sources.get(0);
            let (Some(at), Some(capture)) = (num(&s, "timestamp"), num(&s, "captureTimestamp"))
            else {
                continue;
            };
            let offset = num(&s, "senderCaptureTimeOffset").unwrap_or(0.0);
            if let Some(ms) = glass_to_glass_ms(at, capture, offset) {
                windows.try_update_value(|w| w.entry(stream.clone()).or_default().push(at, ms));
            }
        }
    };
    let poll = move || {
        let Some(pc) = m.call.get_value().and_then(|c| c.peer_connection()) else {
            m.health.set(HashMap::new());
            return;
        };
        let owners = owners(m);
        spawn_local(async move {
            let Ok(report) = JsFuture::from(pc.get_stats()).await else {
                return;
            };
            let Some(iter) = Reflect::get(&report, &"values".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&report).ok())
                .and_then(|i| js_sys::try_iter(&i).ok().flatten())
            else {
                return;
            };
            let now = js_sys::Date::now();
            let (mut rtt_ms, mut me) = (0.0, LinkStats::default());
            let mut inbound = Vec::new();
            for stat in iter.flatten() {
                match text(&stat, "type").as_deref() {
                    Some("candidate-pair")
                        if text(&stat, "state").as_deref() == Some("succeeded")
                            && Reflect::get(&stat, &"nominated".into())
                                .ok()
                                .and_then(|v| v.as_bool())
                                .unwrap_or(false) =>
                    {
                        rtt_ms = num(&stat, "currentRoundTripTime").unwrap_or(0.0) * 1000.0;
                    }
                    Some("remote-inbound-rtp")
                        if text(&stat, "kind").as_deref() == Some("video") =>
                    {
                        // What the SFU says of what this page sends.
                        me.loss = me.loss.max(num(&stat, "fractionLost").unwrap_or(0.0));
                        me.jitter_ms = me
                            .jitter_ms
                            .max(num(&stat, "jitter").unwrap_or(0.0) * 1000.0);
                    }
                    Some("outbound-rtp") if text(&stat, "kind").as_deref() == Some("video") => {
                        let why = text(&stat, "qualityLimitationReason").unwrap_or_default();
                        me.limited |= why == "bandwidth" || why == "cpu";
                    }
                    Some("inbound-rtp") if text(&stat, "kind").as_deref() == Some("video") => {
                        inbound.push(stat);
                    }
                    _ => {}
                }
            }
            let mut out = HashMap::new();
            for stat in inbound {
                let track = text(&stat, "trackIdentifier").unwrap_or_default();
                let Some(stream) = owners.get(&track).cloned() else {
                    continue;
                };
                let height = num(&stat, "frameHeight").unwrap_or(0.0) as u32;
                let mut now_seen = Seen {
                    at_ms: now,
                    lost: num(&stat, "packetsLost").unwrap_or(0.0),
                    received: num(&stat, "packetsReceived").unwrap_or(0.0),
                    frozen_s: num(&stat, "totalFreezesDuration").unwrap_or(0.0),
                    top: height,
                };
                // The oldest poll of the last few seconds (the page may have left the room while
                // the stats were gathered: then nothing).
                let Some(before) = seen.try_update_value(|s| {
                    let h = s.entry(stream.clone()).or_default();
                    now_seen.top = h.back().map_or(height, |b| b.top.max(height));
                    h.push_back(now_seen);
                    while h.len() > 2 && h.front().is_some_and(|f| now - f.at_ms > JUDGE_OVER_MS) {
                        h.pop_front();
                    }
                    h.front().copied().filter(|f| f.at_ms < now)
                }) else {
                    return;
                };
                let latency_ms = windows
                    .try_with_value(|w| w.get(&stream).and_then(|w| w.p50(now)))
                    .flatten();
                // The layer this camera's tile asks for (as `views.rs` measures it: nothing while
                // the page is hidden) against the one that arrives.
                let wanted = (!stream.ends_with("~screen"))
                    .then(|| {
                        let doc = web_sys::window()?.document()?;
                        if doc.hidden() {
                            return None;
                        }
                        let sel =
                            format!("video[data-publisher=\"{stream}\"][data-source=\"camera\"]");
                        let el = doc.query_selector(&sel).ok()??;
                        let dpr = web_sys::window()?.device_pixel_ratio();
                        layer_for_tile(el.client_height().max(0) as u32, dpr)
                    })
                    .flatten();
                let link = before.map(|b| {
                    let lost = (now_seen.lost - b.lost).max(0.0);
                    let got = (now_seen.received - b.received).max(0.0);
                    LinkStats {
                        loss: if lost + got > 0.0 {
                            lost / (lost + got)
                        } else {
                            0.0
                        },
                        jitter_ms: num(&stat, "jitter").unwrap_or(0.0) * 1000.0,
                        rtt_ms,
                        latency_ms: latency_ms.unwrap_or(0.0),
                        frozen: (now_seen.frozen_s - b.frozen_s) * 1000.0
                            / (now_seen.at_ms - b.at_ms).max(1.0),
                        layers_short: layers_short(wanted, height, now_seen.top),
                        limited: false,
                        // A video with no packets is as often a camera turned off or a tile the
                        // SFU pauses as a lost link: a lost link shows as the person "away".
                        silent_ms: 0.0,
                    }
                });
                out.insert(
                    stream.clone(),
                    StreamHealth {
                        latency_ms,
                        fps: num(&stat, "framesPerSecond").unwrap_or(0.0),
                        width: num(&stat, "frameWidth").unwrap_or(0.0) as u32,
                        height,
                        layer: if stream.ends_with("~screen") {
                            "screen".into()
                        } else {
                            layer_for_height(height).unwrap_or("—").to_string()
                        },
                        quality: link.map(|l| score(&l).1),
                    },
                );
            }
            me.rtt_ms = rtt_ms;
            let mine = score(&me).1;
            out.insert(
                ME.to_string(),
                StreamHealth {
                    quality: Some(mine),
                    ..Default::default()
                },
            );
            m.health.set(out);
            // Everyone's tile of me shows my band: the room hears of it when it changed and has
            // held for three polls (no flapping at a band's edge).
            let Some(held) = mine_seen.try_update_value(|v| {
                v.push(mine);
                if v.len() > 3 {
                    v.remove(0);
                }
                v.len() == 3 && v.iter().all(|q| *q == mine)
            }) else {
                return;
            };
            let known = m.model.with_untracked(|r| {
                r.participants
                    .iter()
                    .find(|p| r.is_me(&p.id))
                    .map(|p| p.quality)
            });
            // The room shows the worse of this and the SFU's judgement, so what it has may stay
            // unlike this page's band: each change is told once (again if it could not go).
            // Told per participant id (a rejoin is a new member), and again to a room with no
            // band for me (a member made again under the same id; the room ignores repeats).
            let me_id = m.model.with_untracked(|r| r.me.clone());
            if held
                && known.is_some()
                && (told.get_value() != me_id.clone().map(|id| (id, mine)) || known == Some(None))
                && m.try_send(&ClientMessage::Quality { quality: mine })
            {
                told.set_value(me_id.map(|id| (id, mine)));
            }
        });
    };
    let fast = set_interval_with_handle(sample, std::time::Duration::from_millis(250));
    let slow = set_interval_with_handle(poll, std::time::Duration::from_secs(1));
    on_cleanup(move || {
        for t in [fast, slow].into_iter().flatten() {
            t.clear();
        }
    });
}

/// A tile's quality badge: an icon of bars and, for screen readers, "Grace: good connection";
/// its tooltip the details. Nothing until there is a band.
#[component]
pub fn QualityBadge(
    /// The stream (publisher id, `{id}~screen`) or [`ME`].
    stream: String,
    /// Whose: the name the label starts with.
    #[prop(into)]
    who: Signal<String>,
) -> impl IntoView {
    let m = crate::meeting::use_meeting();
    let key = StoredValue::new(stream);
    let h = move || key.with_value(|k| m.health.with(|h| h.get(k).cloned()));
    // What the publisher's page says of its own connection (not for my own tile: that is mine).
    let theirs = move || {
        key.with_value(|k| {
            let id = k.strip_suffix("~screen").unwrap_or(k);
            m.model.with(|r| {
                r.participants
                    .iter()
                    .find(|p| p.id == id && !r.is_me(&p.id))
                    .and_then(|p| p.quality)
            })
        })
    };
    // Someone whose connection dropped (the room says "away") is lost, whatever came before.
    let away = move || {
        key.with_value(|k| {
            let id = k.strip_suffix("~screen").unwrap_or(k);
            m.model
                .with(|r| r.participants.iter().any(|p| p.id == id && p.away))
        })
    };
    let q = move || {
        let q = worst(h().and_then(|h| h.quality), theirs());
        if away() {
            q.map(|_| Quality::Lost)
        } else {
            q
        }
    };
    view! {
        <span class="quality" role="img" data-testid="quality"
            data-quality=move || q().map(|q| format!("{q:?}").to_lowercase()).unwrap_or_default()
            hidden=move || q().is_none()
            aria-label=move || q().map(|q| format!("{}: {}", who.get(), q.words())).unwrap_or_default()
            title=move || {
                let q = q().map(|q| q.words()).unwrap_or("");
                match h() {
                    Some(h) if key.with_value(|k| k != ME) => format!("{q} · {}", h.details()),
                    _ => q.to_string(),
                }
            }>
            <span class="bar b1" aria-hidden="true"></span>
            <span class="bar b2" aria-hidden="true"></span>
            <span class="bar b3" aria-hidden="true"></span>
        </span>
    }
}
