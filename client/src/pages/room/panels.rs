//! The side panel: participants (with the waiting list and per-person actions for hosts and
//! co-hosts), chat, the meeting's settings, or media statistics. On
//! wide screens it sits beside the stage and the stage shrinks; on narrow ones it is a sheet over
//! the stage (header and controls stay in view). Either way it has a close button.

use std::collections::HashMap;

use edgemeet_shared::media::layer_for_height;
use edgemeet_shared::protocol::{ClientMessage, MediaKind};
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
                <Show when=move || open(Panel::Chat).get()>
                    <super::chat::ChatPanel />
                </Show>
                <Show when=move || open(Panel::Polls).get()>
                    <super::polls::PollsPanel />
                </Show>
                <Show when=move || open(Panel::Breakouts).get()>
                    <super::breakouts::BreakoutsPanel />
                </Show>
                <Show when=move || open(Panel::Settings).get()>
                    <super::settings::SettingsPanel />
                </Show>
                <StatsPanel open=open(Panel::Stats) />
            </div>
        </aside>
    }
}

#[component]
fn ParticipantsPanel() -> impl IntoView {
    let m = use_meeting();
    let me = move || m.model.with(|r| r.me.clone().unwrap_or_default());
    let my_role = move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .find(|p| r.is_me(&p.id))
                .map(|p| p.role)
        })
    };
    let moderator = move || matches!(my_role(), Some(Role::Host | Role::Cohost));
    let host = move || my_role() == Some(Role::Host);
    // Raised hands first, in the order they were raised; then everyone else in join order.
    let people = move || {
        let mut list = m.model.with(|r| r.participants.clone());
        list.sort_by_key(|p| p.hand.unwrap_or(u64::MAX));
        list
    };
    let send = move |msg: ClientMessage| m.send(&msg);
    view! {
        <section class="waiting-list" aria-labelledby="waiting-heading"
            hidden=move || !moderator() || m.model.with(|r| r.waiting.is_empty())>
            <div class="row">
                <h3 id="waiting-heading">{move || format!("Waiting ({})", m.model.with(|r| r.waiting.len()))}</h3>
                <button type="button" on:click=move |_| send(ClientMessage::AdmitAll {})>"Admit all"</button>
            </div>
            <ul>
                <For each=move || m.model.with(|r| r.waiting.clone()) key=|w| w.id.clone() let:w>
                    {
                        let (id1, id2) = (w.id.clone(), w.id.clone());
                        view! {
                            <li>
                                <span class="who">{w.name.clone()}</span>
                                <span class="actions">
                                    <button type="button" aria-label=format!("Admit {}", w.name)
                                        on:click=move |_| send(ClientMessage::Admit { id: id1.clone() })>"Admit"</button>
                                    <button type="button" aria-label=format!("Deny {}", w.name)
                                        on:click=move |_| send(ClientMessage::Deny { id: id2.clone() })>"Deny"</button>
                                </span>
                            </li>
                        }
                    }
                </For>
            </ul>
        </section>
        <ul class="people" aria-label="People in the room">
            <For each=people
                key=|p| (p.id.clone(), p.audio_muted, p.video_muted, p.role, p.away, p.hand, p.screen, p.scope) let:p>
                {
                    let is_me = p.id == me();
                    let role = p.role;
                    let name = p.name.clone();
                    let id = StoredValue::new(p.id.clone());
                    let act = move |f: fn(String) -> ClientMessage| move |_| send(f(id.get_value()));
                    let remove = {
                        let name = name.clone();
                        move |_| {
                            let ok = window()
                                .confirm_with_message(&format!("Remove {name} from the meeting? They cannot come back."))
                                .unwrap_or(false);
                            if ok {
                                send(ClientMessage::Remove { id: id.get_value() });
                            }
                        }
                    };
                    view! {
                        <li data-testid="person" data-participant=p.id.clone()>
                            <span class="who">
                                {if p.hand.is_some() { "✋ " } else { "" }}
                                {name.clone()}{if is_me { " (you)" } else { "" }}
                            </span>
                            <span class="what">
                                {match p.role { Role::Host => "Host", Role::Cohost => "Co-host", _ => "" }}
                                {if p.hand.is_some() { " · Hand raised" } else { "" }}
                                {if p.audio_muted { " · Muted" } else { "" }}
                                {if p.video_muted { " · Camera off" } else { "" }}
                                {if p.screen { " · Sharing" } else { "" }}
                                {if p.away { " · Reconnecting" } else { "" }}
                                {(p.scope != 0).then(|| format!(" · In {}", m.model.with_untracked(|r| r.room_name(p.scope))))}
                            </span>
                            <span class="actions" hidden=move || is_me || !moderator()>
                                <button type="button" hidden=p.audio_muted aria-label=format!("Mute {name}")
                                    on:click=act(|id| ClientMessage::Stop { id, what: MediaKind::Audio, lock: false })>"Mute"</button>
                                <button type="button" hidden=!p.audio_muted aria-label=format!("Ask {name} to unmute")
                                    on:click=act(|id| ClientMessage::AskUnmute { id })>"Ask to unmute"</button>
                                <button type="button" hidden=p.video_muted aria-label=format!("Stop {name}'s camera")
                                    on:click=act(|id| ClientMessage::Stop { id, what: MediaKind::Video, lock: false })>"Stop camera"</button>
                                <button type="button" hidden=!p.screen aria-label=format!("Stop {name}'s screen share")
                                    on:click=act(|id| ClientMessage::Stop { id, what: MediaKind::Screen, lock: false })>"Stop share"</button>
                                <button type="button" hidden=p.hand.is_none() aria-label=format!("Lower {name}'s hand")
                                    on:click=act(|id| ClientMessage::LowerHand { id })>"Lower hand"</button>
                                <button type="button" hidden=move || !host() || p.role == Role::Host
                                    aria-label=if p.role == Role::Cohost { format!("Remove co-host role from {name}") } else { format!("Make {name} a co-host") }
                                    on:click=move |_| send(ClientMessage::SetCohost { id: id.get_value(), cohost: p.role != Role::Cohost })>
                                    {if p.role == Role::Cohost { "Remove co-host" } else { "Make co-host" }}</button>
                                <button type="button" class="danger" hidden=move || role == Role::Host || (role == Role::Cohost && !host()) aria-label=format!("Remove {name}")
                                    on:click=remove>"Remove"</button>
                            </span>
                        </li>
                    }
                }
            </For>
        </ul>
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
        let owners = crate::health::owners(m);
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
                <thead><tr><th scope="col">"From"</th><th scope="col">"Layer"</th><th scope="col">"Size"</th><th scope="col">"fps"</th><th scope="col">"kbps"</th><th scope="col">"Latency"</th></tr></thead>
                <tbody>
                    <For each=move || rows.get() key=|r| (r.stream.clone(), r.layer.clone(), r.width, r.height, r.fps as u32, r.kbps as u32) let:r>
                        <tr data-testid="stats-row" data-stream=r.stream.clone() data-layer=r.layer.clone()
                            data-width=r.width.to_string() data-height=r.height.to_string()>
                            <td>{name_of(&r.stream)}</td>
                            <td>{r.layer.clone()}</td>
                            <td>{format!("{}×{}", r.width, r.height)}</td>
                            <td>{format!("{:.0}", r.fps)}</td>
                            <td>{format!("{:.0}", r.kbps)}</td>
                            <td data-testid="latency">{
                                let stream = r.stream.clone();
                                move || match m.health.with(|h| h.get(&stream).and_then(|x| x.latency_ms)) {
                                    Some(ms) => format!("{ms:.0} ms"),
                                    None => "not measured".to_string(),
                                }
                            }</td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </div>
    }
}
