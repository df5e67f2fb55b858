//! The pre-join screen: camera preview, mic/camera toggles, display name (remembered), room name,
//! media-server status, and Join.

use edgemeet_shared::protocol::{
    is_final_close, normalize_display_name, normalize_room_name, reconnect_delay_ms, ClientMessage, JoinRequest, JoinResponse, ServerMessage, WireError,
    PROTOCOL_VERSION,
};
use leptos::html::Video;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::LocalStorage;
use web_sys::{CloseEvent, MediaStream, MessageEvent, WebSocket};

use crate::media;

const NAME_KEY: &str = "edgemeet.display_name";

#[derive(Debug, Clone, Deserialize)]
struct Health {
    live_sfus: usize,
    sfus: Vec<SfuBrief>,
}

#[derive(Debug, Clone, Deserialize)]
struct SfuBrief {
    region: String,
    healthy: bool,
}

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

#[component]
pub fn PreJoin(initial_room: String) -> impl IntoView {
    let (name, set_name) = signal(storage().and_then(|s| s.get_item(NAME_KEY).ok().flatten()).unwrap_or_default());
    let (room, set_room) = signal(initial_room);
    let (form_error, set_form_error) = signal(None::<String>);
    let (media_error, set_media_error) = signal(None::<String>);
    let (cam_on, set_cam_on) = signal(true);
    let (mic_on, set_mic_on) = signal(true);
    let (health, set_health) = signal(None::<Result<Health, String>>);
    let (joined, set_joined) = signal(None::<String>);
    let (joining, set_joining) = signal(false);
    let stream = RwSignal::new_local(None::<MediaStream>);
    let socket = StoredValue::new_local(None::<WebSocket>);
    let meter = StoredValue::new_local(None::<media::LevelMeter>);
    let (level, set_level) = signal(0u32);
    let (cams, set_cams) = signal(Vec::<media::Device>::new());
    let (mics, set_mics) = signal(Vec::<media::Device>::new());
    let (cam_id, set_cam_id) = signal(None::<String>);
    let (mic_id, set_mic_id) = signal(None::<String>);
    let video_ref = NodeRef::<Video>::new();

    // Camera preview, microphone meter and device lists; reopened when a picker changes.
    let open = move |cam: Option<String>, mic: Option<String>| {
        spawn_local(async move {
            // Release the old devices first: some cameras cannot be opened twice.
            meter.set_value(None);
            if let Some(old) = stream.get_untracked() {
                media::stop(&old);
            }
            match media::open_camera_and_mic(cam, mic).await {
                Ok(s) => {
                    set_cam_id.set(media::device_of(&s, "video"));
                    set_mic_id.set(media::device_of(&s, "audio"));
                    meter.set_value(media::LevelMeter::new(&s));
                    stream.set(Some(s));
                    set_media_error.set(None);
                    let (c, m) = media::list_devices().await;
                    set_cams.set(c);
                    set_mics.set(m);
                }
                Err(e) => set_media_error.set(Some(e)),
            }
        });
    };
    open(None, None);
    let _ = set_interval_with_handle(
        move || meter.update_value(|m| set_level.set(m.as_mut().map_or(0, |m| m.level()))),
        std::time::Duration::from_millis(100),
    );
    Effect::new(move |_| {
        if let (Some(v), Some(s)) = (video_ref.get(), stream.get()) {
            v.set_src_object(Some(&s));
        }
    });
    Effect::new(move |_| {
        let (cam, mic) = (cam_on.get(), mic_on.get());
        stream.with(|s| {
            if let Some(s) = s {
                media::set_enabled(s, "video", cam);
                media::set_enabled(s, "audio", mic);
            }
        });
    });

    // Media-server status.
    spawn_local(async move {
        let r = async {
            let res = gloo_net::http::Request::get("/api/health").send().await.map_err(|e| e.to_string())?;
            res.json::<Health>().await.map_err(|e| e.to_string())
        }
        .await;
        set_health.set(Some(r));
    });

    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let display = match normalize_display_name(&name.get_untracked()) {
            Ok(n) => n,
            Err(e) => return set_form_error.set(Some(e)),
        };
        let room_name = match normalize_room_name(&room.get_untracked()) {
            Ok(r) => r,
            Err(e) => return set_form_error.set(Some(e)),
        };
        set_form_error.set(None);
        if let Some(s) = storage() {
            let _ = s.set_item(NAME_KEY, &display);
        }
        if window().location().pathname().ok().as_deref() != Some(&format!("/{room_name}")) {
            if let Ok(h) = window().history() {
                let _ = h.replace_state_with_url(&JsValue::NULL, "", Some(&format!("/{room_name}")));
            }
        }
        set_joining.set(true);
        spawn_local(async move {
            match request_join(&room_name, display).await {
                Ok(j) => {
                    open_socket(j.ws_url, 0, set_joined, set_form_error, socket);
                    leave_on_pagehide(socket);
                }
                Err(e) => set_form_error.set(Some(e)),
            }
            set_joining.set(false);
        });
    };

    let health_view = move || match health.get() {
        None => view! { <span class="dot"></span>"Checking media servers…" }.into_any(),
        Some(Ok(h)) if h.live_sfus > 0 => {
            let regions: Vec<String> = h.sfus.iter().filter(|s| s.healthy).map(|s| s.region.clone()).collect();
            view! { <span class="dot ok"></span>{format!("{} media regions live: {}", h.live_sfus, regions.join(", "))} }.into_any()
        }
        Some(Ok(_)) => view! { <span class="dot bad"></span>"No media server is live right now." }.into_any(),
        Some(Err(e)) => view! { <span class="dot bad"></span>{format!("Cannot reach the server: {e}")} }.into_any(),
    };

    view! {
        <main class="prejoin">
            <div class="preview-col">
            <section class="preview" aria-label="Camera preview">
                <video node_ref=video_ref class="mirrored" autoplay=true muted=true playsinline=true
                    data-testid="preview" aria-label="Your camera preview"
                    style:visibility=move || if cam_on.get() && media_error.get().is_none() { "visible" } else { "hidden" }></video>
                <Show when=move || media_error.get().is_some() || !cam_on.get()>
                    <div class="placeholder" role="status">
                        {move || media_error.get().unwrap_or_else(|| "Camera is off".into())}
                    </div>
                </Show>
                <div class="toggles">
                    <button type="button" class:off=move || !mic_on.get()
                        aria-pressed=move || (!mic_on.get()).to_string()
                        title=move || if mic_on.get() { "Mute microphone" } else { "Unmute microphone" }
                        on:click=move |_| set_mic_on.update(|v| *v = !*v)>
                        {move || if mic_on.get() { "Mute microphone" } else { "Unmute microphone" }}
                    </button>
                    <button type="button" class:off=move || !cam_on.get()
                        aria-pressed=move || (!cam_on.get()).to_string()
                        title=move || if cam_on.get() { "Turn camera off" } else { "Turn camera on" }
                        on:click=move |_| set_cam_on.update(|v| *v = !*v)>
                        {move || if cam_on.get() { "Turn camera off" } else { "Turn camera on" }}
                    </button>
                </div>
            </section>
                <div class="meter" role="meter" aria-label="Microphone level" aria-valuemin="0" aria-valuemax="100"
                    aria-valuenow=move || level.get().to_string() data-testid="mic-level">
                    <div style:width=move || format!("{}%", if mic_on.get() { level.get() } else { 0 })></div>
                </div>
            </div>
            <form class="join" on:submit=join novalidate=true>
                <h1>"Ready to join?"</h1>
                <label>"Your name"
                    <input type="text" name="name" autocomplete="name" maxlength="64" required=true
                        prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev)) />
                </label>
                <label>"Room"
                    <input type="text" name="room" maxlength="64" required=true placeholder="e.g. team-standup"
                        prop:value=room on:input=move |ev| set_room.set(event_target_value(&ev)) />
                </label>
                <div class="field">
                    <label for="camera-select">"Camera"</label>
                    <select id="camera-select" name="camera" prop:value=move || cam_id.get().unwrap_or_default()
                        on:change=move |ev| open(Some(event_target_value(&ev)), mic_id.get_untracked())>
                        <For each=move || cams.get() key=|d| d.id.clone() let:d>
                            <option value=d.id.clone()>{d.label.clone()}</option>
                        </For>
                    </select>
                </div>
                <div class="field">
                    <label for="mic-select">"Microphone"</label>
                    <select id="mic-select" name="microphone" prop:value=move || mic_id.get().unwrap_or_default()
                        on:change=move |ev| open(cam_id.get_untracked(), Some(event_target_value(&ev)))>
                        <For each=move || mics.get() key=|d| d.id.clone() let:d>
                            <option value=d.id.clone()>{d.label.clone()}</option>
                        </For>
                    </select>
                </div>
                <p class="error" role="alert" data-testid="form-error">{move || form_error.get().unwrap_or_default()}</p>
                <button type="submit" class="primary" disabled=move || joining.get() || joined.get().is_some()>
                    {move || if joining.get() { "Joining…" } else { "Join" }}
                </button>
                <p class="status" data-testid="joined" role="status">{move || joined.get().unwrap_or_default()}</p>
                <p class="status" data-testid="health">{health_view}</p>
            </form>
        </main>
    }
}

async fn request_join(room: &str, name: String) -> Result<JoinResponse, String> {
    let res = gloo_net::http::Request::post(&format!("/api/rooms/{room}/join"))
        .json(&JoinRequest { name })
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    if res.ok() {
        res.json().await.map_err(|e| e.to_string())
    } else {
        Err(res.json::<WireError>().await.map(|e| e.message).unwrap_or_else(|_| format!("Join failed ({})", res.status())))
    }
}

/// Opens the room socket (`path` carries the token). When the connection drops, reconnects with
/// backoff using the same token: within the room's grace period the session resumes as it was.
fn open_socket(
    path: String,
    attempt: u32,
    set_joined: WriteSignal<Option<String>>,
    set_error: WriteSignal<Option<String>>,
    socket: StoredValue<Option<WebSocket>, LocalStorage>,
) {
    let loc = window().location();
    let scheme = if loc.protocol().unwrap_or_default() == "https:" { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{path}", loc.host().unwrap_or_default());
    let Ok(ws) = WebSocket::new(&url) else {
        set_error.set(Some("Could not open the room connection.".into()));
        return;
    };
    let hello = serde_json::to_string(&ClientMessage::Hello { version: PROTOCOL_VERSION }).unwrap_or_default();
    let ws2 = ws.clone();
    let onopen = Closure::<dyn FnMut()>::new(move || {
        let _ = ws2.send_with_str(&hello);
    });
    ws.set_onopen(Some(onopen.as_ref().unchecked_ref()));
    onopen.forget();
    let got_snapshot = Rc::new(Cell::new(false));
    let seen = got_snapshot.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else { return };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Snapshot { room, .. }) => {
                seen.set(true);
                set_error.set(None);
                let via = room.sfu.map(|s| format!(" · media via {s}")).unwrap_or_default();
                set_joined.set(Some(format!("Joined {} — {} in the room{via}", room.name, room.participants.len())))
            }
            Ok(ServerMessage::Error { message, .. }) => set_error.set(Some(message)),
            _ => {}
        }
    });
    ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
        if is_final_close(ev.code()) {
            if ev.code() != 1000 {
                set_joined.set(None);
            }
            return;
        }
        // A connection that worked starts its retries afresh.
        let next = if got_snapshot.get() { 0 } else { attempt + 1 };
        set_joined.set(Some("Reconnecting…".into()));
        let path = path.clone();
        set_timeout(
            move || open_socket(path, next, set_joined, set_error, socket),
            Duration::from_millis(reconnect_delay_ms(attempt) as u64),
        );
    });
    ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
    onclose.forget();
    socket.set_value(Some(ws));
}

/// Closing the tab or navigating away is leaving: say so, so the others see it at once.
fn leave_on_pagehide(socket: StoredValue<Option<WebSocket>, LocalStorage>) {
    let leave = serde_json::to_string(&ClientMessage::Leave {}).unwrap_or_default();
    let cb = Closure::<dyn FnMut()>::new(move || {
        socket.with_value(|ws| {
            if let Some(ws) = ws {
                let _ = ws.send_with_str(&leave);
            }
        });
    });
    let _ = window().add_event_listener_with_callback("pagehide", cb.as_ref().unchecked_ref());
    cb.forget();
}
