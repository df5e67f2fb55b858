//! The side panel: participants (with the room's settings for the host) or media statistics. On
//! wide screens it sits beside the stage and the stage shrinks; on narrow ones it is a sheet over
//! the stage (header and controls stay in view). Either way it has a close button.

use std::collections::HashMap;

use edgemeet_shared::media::layer_for_height;
use edgemeet_shared::protocol::ClientMessage;
use edgemeet_shared::token::Role;
use js_sys::Reflect;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};

use super::{Panel, RoomUi};
use crate::meeting::use_meeting;

#[component]
pub fn SidePanel(ui: RoomUi) -> impl IntoView {
    let open = move |p: Panel| Signal::derive(move || ui.panel.get() == Some(p));
    let title = move || ui.panel.get().map(Panel::title).unwrap_or_default();
    view! {
        <aside class="panel" id="side-panel" aria-labelledby="panel-title" hidden=move || ui.panel.get().is_none()
            data-testid="side-panel"
            on:keydown=move |ev| if ev.key() == "Escape" { ui.close_panel() }>
            <header class="panel-head">
                <h2 id="panel-title" tabindex="-1">{title}</h2>
                <button type="button" class="close" aria-label=move || format!("Close {}", title().to_lowercase())
                    on:click=move |_| ui.close_panel()>"Close"</button>
            </header>
            <div class="panel-body">
                <Show when=move || open(Panel::Participants).get()>
                    <ParticipantsPanel />
                </Show>
                <StatsPanel open=open(Panel::Stats) />
            </div>
        </aside>
    }
}

#[component]
fn ParticipantsPanel() -> impl IntoView {
    let m = use_meeting();
    let is_host = move || m.model.with(|r| r.me.is_some() && r.host == r.me);
    view! {
        <ul class="people" aria-label="People in the room">
            <For each=move || m.model.with(|r| r.participants.clone())
                key=|p| (p.id.clone(), p.audio_muted, p.video_muted, p.role, p.away) let:p>
                <li>
                    <span class="who">{p.name.clone()}{if m.model.with_untracked(|r| r.is_me(&p.id)) { " (you)" } else { "" }}</span>
                    <span class="what">
                        {if p.role == Role::Host { "Host" } else { "" }}
                        {if p.audio_muted { " · Muted" } else { "" }}
                        {if p.video_muted { " · Camera off" } else { "" }}
                        {if p.away { " · Reconnecting" } else { "" }}
                    </span>
                </li>
            </For>
        </ul>
        <fieldset class="setting">
            <legend>"Screen sharing"</legend>
            <label class="check">
                <input type="checkbox" data-testid="many-sharers" disabled=move || !is_host()
                    prop:checked=move || m.model.with(|r| r.max_screen_sharers > 1)
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        m.send(&ClientMessage::SetRoomOptions { max_screen_sharers: if on { 4 } else { 1 } });
                    } />
                "Up to 4 people may share a screen at once"
            </label>
            <p class="hint" hidden=is_host>"Only the host can change this."</p>
        </fieldset>
    }
}

/// One remote video as the statistics panel shows it.
#[derive(Debug, Clone, PartialEq)]
struct VideoStats {
    /// Stream id: the publisher, or `{publisher}~screen`.
    stream: String,
    layer: String,
    width: u32,
    height: u32,
    fps: f64,
    kbps: f64,
}

fn num(o: &JsValue, k: &str) -> f64 {
    Reflect::get(o, &k.into())
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

/// Per remote video: layer, resolution, frame rate and bitrate, refreshed every second while open.
#[component]
fn StatsPanel(open: Signal<bool>) -> impl IntoView {
    let m = use_meeting();
    let rows = RwSignal::new(Vec::<VideoStats>::new());
    // (bytes, timestamp ms) per inbound stream id, for the bitrate.
    let prev = StoredValue::new_local(HashMap::<String, (f64, f64)>::new());
    let poll = move || {
        if !open.get_untracked() {
            return;
        }
        let Some(pc) = m.call.get_value().and_then(|c| c.peer_connection()) else {
            rows.set(Vec::new());
            return;
        };
        // track id → stream id
        let owners: HashMap<String, String> = m.remote.with_untracked(|r| {
            r.iter()
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
                let text = |k: &str| {
                    Reflect::get(&stat, &k.into())
                        .ok()
                        .and_then(|v| v.as_string())
                };
                if text("type").as_deref() != Some("inbound-rtp")
                    || text("kind").as_deref() != Some("video")
                {
                    continue;
                }
                let track = text("trackIdentifier").unwrap_or_default();
                let Some(stream) = owners.get(&track).cloned() else {
                    continue;
                };
                let id = text("id").unwrap_or_default();
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
                    layer_for_height(height).unwrap_or("—").to_string()
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
    let timer = set_interval_with_handle(poll, std::time::Duration::from_secs(1));
    on_cleanup(move || {
        if let Ok(t) = timer {
            t.clear()
        }
    });
    let name_of = move |stream: &str| {
        let (id, screen) = match stream.strip_suffix("~screen") {
            Some(id) => (id, true),
            None => (stream, false),
        };
        let name = m.model.with(|r| {
            r.participants
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
        <div class="stats" data-testid="stats-panel" hidden=move || !open.get()>
            <p class="hint" hidden=move || !rows.with(Vec::is_empty)>"No video is arriving yet."</p>
            <table hidden=move || rows.with(Vec::is_empty)>
                <thead><tr><th scope="col">"From"</th><th scope="col">"Layer"</th><th scope="col">"Size"</th><th scope="col">"fps"</th><th scope="col">"kbps"</th></tr></thead>
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
        </div>
    }
}
