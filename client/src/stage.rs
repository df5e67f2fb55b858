//! The room's stage helpers: telling the SFU how big each remote video is shown (so it forwards the
//! smallest simulcast layer that fills it, nothing for a hidden one), the media statistics panel,
//! and screen capture.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use edgemeet_shared::client_room::ClientRoom;
use edgemeet_shared::media::CAMERA_SIMULCAST;
use edgemeet_shared::protocol::{ClientMessage, Source, TileView};
use js_sys::Reflect;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::MediaStream;

use crate::call::{Call, RemoteStreams};

/// How often tile sizes are measured; a change is sent at most this often (debounce).
const VIEWS_EVERY_MS: i32 = 300;

/// Measures every remote video (`video[data-publisher]`) and sends the list when it changed, or
/// when a new media session is connected (`session()`: the current PeerConnection's number while it
/// is connected; a new SFU session must learn the sizes too). A tile counts as hidden (height 0) when it is not displayed, scrolled out of the viewport,
/// or the page is hidden.
pub fn report_views(send: Rc<dyn Fn(ClientMessage)>, session: Rc<dyn Fn() -> Option<u64>>) {
    let last = Rc::new(RefCell::new(String::new()));
    let tick = Closure::<dyn FnMut()>::new(move || {
        // Only to a connected session: before that the SFU does not know us yet.
        let Some(session) = session() else {
            return;
        };
        let views = measure();
        let key = format!("{session}|{views:?}");
        if *last.borrow() == key {
            return;
        }
        *last.borrow_mut() = key;
        send(ClientMessage::Views { views });
    });
    let _ = window().set_interval_with_callback_and_timeout_and_arguments_0(
        tick.as_ref().unchecked_ref(),
        VIEWS_EVERY_MS,
    );
    tick.forget();
}

fn measure() -> Vec<TileView> {
    let doc = document();
    let hidden_page = doc.hidden();
    let dpr = window().device_pixel_ratio().max(1.0);
    let vh = window()
        .inner_height()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let vw = window()
        .inner_width()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let Ok(list) = doc.query_selector_all("video[data-publisher]") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..list.length() {
        let Some(el) = list
            .item(i)
            .and_then(|n| n.dyn_into::<web_sys::Element>().ok())
        else {
            continue;
        };
        let Some(publisher) = el.get_attribute("data-publisher") else {
            continue;
        };
        let source = match el.get_attribute("data-source").as_deref() {
            Some("screen") => Source::Screen,
            _ => Source::Camera,
        };
        let r = el.get_bounding_client_rect();
        let on_screen = r.bottom() > 0.0 && r.right() > 0.0 && r.top() < vh && r.left() < vw;
        let height = if hidden_page || !on_screen || r.width() < 1.0 {
            0
        } else {
            (r.height() * dpr).round() as u32
        };
        out.push(TileView {
            publisher,
            source,
            height,
        });
    }
    out.sort_by(|a, b| (&a.publisher, a.source as u8).cmp(&(&b.publisher, b.source as u8)));
    out
}

/// One remote video as the statistics panel shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoStats {
    /// Stream id: the publisher, or `{publisher}~screen`.
    pub stream: String,
    pub layer: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub kbps: f64,
}

/// The simulcast layer a received camera picture comes from, by its height.
fn layer_name(height: u32) -> String {
    if height == 0 {
        return "—".into();
    }
    let full = edgemeet_shared::media::CAMERA_CAPTURE_HEIGHT as f64;
    CAMERA_SIMULCAST
        .iter()
        .min_by(|a, b| {
            let da = (full / a.scale_resolution_down_by - height as f64).abs();
            let db = (full / b.scale_resolution_down_by - height as f64).abs();
            da.total_cmp(&db)
        })
        .map(|l| l.rid.to_string())
        .unwrap_or_default()
}

fn num(o: &JsValue, k: &str) -> f64 {
    Reflect::get(o, &k.into())
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

/// Per remote video: layer, resolution, frame rate and bitrate, refreshed every second while open.
#[component]
pub fn StatsPanel(
    call: StoredValue<Option<Call>, LocalStorage>,
    remote: RemoteStreams,
    model: RwSignal<ClientRoom>,
    open: ReadSignal<bool>,
) -> impl IntoView {
    let rows = RwSignal::new(Vec::<VideoStats>::new());
    // (bytes, timestamp ms) per inbound stream id, for the bitrate.
    let prev = StoredValue::new_local(HashMap::<String, (f64, f64)>::new());
    let poll = move || {
        if !open.get_untracked() {
            return;
        }
        let Some(pc) = call.get_value().and_then(|c| c.peer_connection()) else {
            rows.set(Vec::new());
            return;
        };
        // track id → stream id
        let owners: HashMap<String, String> = remote.with_untracked(|m| {
            m.iter()
                .flat_map(|(id, s)| {
                    s.get_tracks()
                        .iter()
                        .filter_map(|t| t.dyn_into::<web_sys::MediaStreamTrack>().ok())
                        .map(|t| (t.id(), id.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        spawn_local(async move {
            let Ok(report) = JsFuture::from(pc.get_stats()).await else {
                return;
            };
            let Ok(values) = Reflect::get(&report, &"values".into())
                .and_then(|f| f.dyn_into::<js_sys::Function>())
            else {
                return;
            };
            let Ok(iter) = values.call0(&report) else {
                return;
            };
            let Ok(Some(iter)) = js_sys::try_iter(&iter) else {
                return;
            };
            let mut out = Vec::new();
            for stat in iter.flatten() {
                let kind = Reflect::get(&stat, &"kind".into())
                    .ok()
                    .and_then(|v| v.as_string());
                let typ = Reflect::get(&stat, &"type".into())
                    .ok()
                    .and_then(|v| v.as_string());
                if typ.as_deref() != Some("inbound-rtp") || kind.as_deref() != Some("video") {
                    continue;
                }
                let track = Reflect::get(&stat, &"trackIdentifier".into())
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default();
                let Some(stream) = owners.get(&track).cloned() else {
                    continue;
                };
                let id = Reflect::get(&stat, &"id".into())
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default();
                let bytes = num(&stat, "bytesReceived");
                let ts = num(&stat, "timestamp");
                let kbps = prev.with_value(|p| match p.get(&id) {
                    Some((b, t)) if ts > *t => (bytes - b) * 8.0 / (ts - t),
                    _ => 0.0,
                });
                prev.update_value(|p| {
                    p.insert(id, (bytes, ts));
                });
                let (width, height) = (
                    num(&stat, "frameWidth") as u32,
                    num(&stat, "frameHeight") as u32,
                );
                let layer = if stream.ends_with("~screen") {
                    "screen".into()
                } else {
                    layer_name(height)
                };
                out.push(VideoStats {
                    stream,
                    layer,
                    width,
                    height,
                    fps: num(&stat, "framesPerSecond"),
                    kbps,
                });
            }
            out.sort_by(|a, b| a.stream.cmp(&b.stream));
            rows.set(out);
        });
    };
    let cb = Closure::<dyn FnMut()>::new(poll);
    let _ = window()
        .set_interval_with_callback_and_timeout_and_arguments_0(cb.as_ref().unchecked_ref(), 1_000);
    cb.forget();
    let name_of = move |stream: &str| {
        let (id, screen) = match stream.strip_suffix("~screen") {
            Some(id) => (id, true),
            None => (stream, false),
        };
        let name = model.with(|m| {
            m.participants
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| id.to_string())
        });
        if screen {
            format!("{name} (screen)")
        } else {
            name
        }
    };
    view! {
        <aside class="panel stats" aria-label="Media statistics" data-testid="stats-panel" hidden=move || !open.get()>
            <h2>"Media statistics"</h2>
            <table>
                <thead><tr><th>"From"</th><th>"Layer"</th><th>"Size"</th><th>"fps"</th><th>"kbps"</th></tr></thead>
                <tbody>
                    <For each=move || rows.get() key=|r| (r.stream.clone(), r.layer.clone(), r.width, r.height, r.fps as u32, r.kbps as u32) let:r>
                        <tr data-testid="stats-row" data-stream=r.stream.clone() data-layer=r.layer.clone()
                            data-width=r.width.to_string() data-height=r.height.to_string()>
                            <td>{name_of(&r.stream)}</td>
                            <td>{r.layer.clone()}</td>
                            <td>{format!("{}×{}", r.width, r.height)}</td>
                            <td>{format!("{:.0}", r.fps)}</td>
                            <td>{format!("{:.0}", r.kbps)}</td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </aside>
    }
}

/// Asks the browser for a screen (window, tab) to share, with its audio when it offers some.
pub async fn capture_screen() -> Result<MediaStream, String> {
    let devices = window()
        .navigator()
        .media_devices()
        .map_err(|_| "This browser cannot share a screen.".to_string())?;
    let constraints = js_sys::Object::new();
    let _ = Reflect::set(&constraints, &"video".into(), &JsValue::TRUE);
    let _ = Reflect::set(&constraints, &"audio".into(), &JsValue::TRUE);
    let get = Reflect::get(devices.as_ref(), &"getDisplayMedia".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("This browser cannot share a screen.")?;
    let p = get
        .call1(devices.as_ref(), &constraints)
        .map_err(|_| "Screen sharing was refused.".to_string())?;
    let stream = JsFuture::from(js_sys::Promise::from(p))
        .await
        .map_err(|_| "Screen sharing was cancelled or refused.".to_string())?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| "Screen sharing gave no stream.".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_by_received_height() {
        assert_eq!(layer_name(180), "q");
        assert_eq!(layer_name(176), "q");
        assert_eq!(layer_name(360), "h");
        assert_eq!(layer_name(720), "f");
        assert_eq!(layer_name(0), "—");
    }
}
