//! The pre-join screen: camera preview, mic/camera toggles, display name (remembered), room name,
//! media-server status, and Join.

use edgemeet_shared::client_room::{initials, ClientRoom};
use edgemeet_shared::protocol::{
    is_final_close, normalize_display_name, normalize_room_name, reconnect_delay_ms, ClientMessage,
    JoinRequest, JoinResponse, ServerMessage, WireError, PROTOCOL_VERSION,
};
use leptos::html::Video;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;

use leptos::prelude::LocalStorage;
use web_sys::{CloseEvent, MediaStream, MessageEvent, WebSocket};

use crate::call::{Call, RemoteStreams};
use crate::media;
use crate::stage;

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
    let (name, set_name) = signal(
        storage()
            .and_then(|s| s.get_item(NAME_KEY).ok().flatten())
            .unwrap_or_default(),
    );
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
    let (speakers, set_speakers) = signal(Vec::<media::Device>::new());
    let (speaker_id, set_speaker_id) = signal(None::<String>);
    let video_ref = NodeRef::<Video>::new();
    let room_video = NodeRef::<Video>::new();
    let model = RwSignal::new(ClientRoom::default());
    let (in_room, set_in_room) = signal(false);
    let toasts = RwSignal::new(Vec::<(u64, String)>::new());
    let (panel_open, set_panel_open) = signal(false);
    let (reconnecting, set_reconnecting) = signal(false);
    let remote: RemoteStreams = RwSignal::new_local(std::collections::HashMap::new());
    let (media_state, set_media_state) = signal(String::new());
    let call = StoredValue::new_local(None::<Call>);
    let (sharing, set_sharing) = signal(false);
    let ctx = Ctx {
        set_joined,
        set_error: set_form_error,
        socket,
        model,
        set_in_room,
        set_reconnecting,
        toasts,
        mic_on,
        cam_on,
        sharing,
        call,
        stream,
    };
    call.set_value(Some(Call::new(
        move |m| ctx.send(&m),
        remote,
        move |st| set_media_state.set(st),
    )));
    stage::report_views(
        Rc::new(move |m| ctx.send(&m)),
        Rc::new(move || {
            call.with_value(|c| {
                let c = c.as_ref()?;
                let pc = c.peer_connection()?;
                (pc.connection_state() == web_sys::RtcPeerConnectionState::Connected)
                    .then(|| c.generation())
            })
        }),
    );
    let (focus, set_focus) = signal(false);
    let (stats_open, set_stats_open) = signal(false);
    let screen = StoredValue::new_local(None::<MediaStream>);
    let connecting_since = StoredValue::new(0u64);
    // A media connection that stops: tell the room (which checks its SFU and moves to another if
    // it is gone); one that failed outright starts over with a new PeerConnection.
    Effect::new(move |_| {
        let st = media_state.get();
        if !in_room.get_untracked() {
            return;
        }
        if st == "disconnected" || st == "failed" {
            ctx.send(&ClientMessage::MediaFailed {});
        }
        if st == "failed" {
            set_timeout(move || ctx.start_media(), Duration::from_millis(500));
        }
        // Watchdog: a new media connection that is not up within 5 s (a lost answer, an SFU that
        // died mid-setup) is reported and started over.
        if st == "connecting" {
            let generation = connecting_since.get_value() + 1;
            connecting_since.set_value(generation);
            set_timeout(
                move || {
                    let stuck = connecting_since.get_value() == generation
                        && in_room.get_untracked()
                        && !matches!(media_state.get_untracked().as_str(), "connected" | "closed");
                    if stuck {
                        ctx.send(&ClientMessage::MediaFailed {});
                        ctx.start_media();
                    }
                },
                Duration::from_secs(5),
            );
        } else {
            connecting_since.update_value(|g| *g += 1);
        }
    });
    // Faster than ICE's own timers: remote media that stops arriving for a second is reported too
    // (at most every 2 s). A false alarm costs the room one health probe of its SFU.
    let last_inbound = StoredValue::new((0.0f64, 0.0f64, 0.0f64)); // (packets, since, last report)
    let _ = set_interval_with_handle(
        move || {
            if !in_room.get_untracked() {
                return;
            }
            let Some(c) = call.get_value() else { return };
            spawn_local(async move {
                let Some(now_packets) = c.inbound_packets().await else {
                    return;
                };
                let now = js_sys::Date::now();
                let (packets, since, reported) = last_inbound.get_value();
                if now_packets != packets {
                    last_inbound.set_value((now_packets, now, reported));
                } else if now_packets > 0.0 && now - since > 1_000.0 && now - reported > 2_000.0 {
                    last_inbound.set_value((packets, since, now));
                    ctx.send(&ClientMessage::MediaFailed {});
                }
            });
        },
        Duration::from_millis(250),
    );

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
                    let (c, m, sp) = media::list_devices().await;
                    set_cams.set(c);
                    set_mics.set(m);
                    set_speakers.set(if media::can_choose_speaker() {
                        sp
                    } else {
                        Vec::new()
                    });
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
    // While the person looks at the preview, get the media session ready: joining then only sends
    // the offer.
    // TURN servers (time-limited credentials) before the first PeerConnection is made.
    let (ice_ready, set_ice_ready) = signal(false);
    spawn_local(async move {
        let servers = async {
            let res = gloo_net::http::Request::get("/api/ice-servers")
                .send()
                .await
                .ok()?;
            let text = res.text().await.ok()?;
            let v = js_sys::JSON::parse(&text).ok()?;
            js_sys::Reflect::get(&v, &"ice_servers".into()).ok()
        }
        .await;
        if let (Some(servers), Some(c)) = (servers, call.get_value()) {
            c.set_ice_servers(servers);
        }
        set_ice_ready.set(true);
    });
    Effect::new(move |_| {
        let s = stream.get();
        if !ice_ready.get() {
            return;
        }
        if let (Some(local), true) = (s.as_ref(), in_room.get_untracked()) {
            // Already in the room (the camera answered after Join, or a device changed).
            if let Some(c) = call.get_value() {
                c.replace_tracks(local);
            }
            return;
        }
        if s.is_some() {
            if let Some(c) = call.get_value() {
                spawn_local(async move {
                    if let Err(e) = c.prepare(s).await {
                        web_sys::console::warn_1(&format!("media: {e}").into());
                    }
                });
            }
        }
    });
    Effect::new(move |_| {
        if let (Some(v), Some(s), true) = (room_video.get(), stream.get(), in_room.get()) {
            v.set_src_object(Some(&s));
        }
    });
    // Mute and camera-off reach everyone (the tracks themselves are disabled just below).
    Effect::new(move |_| {
        let (cam, mic) = (cam_on.get(), mic_on.get());
        if in_room.get_untracked() {
            ctx.send(&ClientMessage::SetMedia {
                audio_muted: !mic,
                video_muted: !cam,
            });
        }
    });
    // Shortcuts: Ctrl+D microphone, Ctrl+E camera (as in other meeting apps).
    let _keys = window_event_listener(leptos::ev::keydown, move |ev| {
        if !ev.ctrl_key() || ev.alt_key() || ev.meta_key() {
            return;
        }
        match ev.key().to_ascii_lowercase().as_str() {
            "d" => {
                ev.prevent_default();
                set_mic_on.update(|v| *v = !*v);
            }
            "e" => {
                ev.prevent_default();
                set_cam_on.update(|v| *v = !*v);
            }
            _ => {}
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
        // Off means off on the wire too: the encoder stops (no bitrate spent on black or silence).
        call.with_value(|c| {
            if let Some(c) = c {
                c.set_sending("video", cam);
                c.set_sending("audio", mic);
            }
        });
    });

    // Media-server status.
    spawn_local(async move {
        let r = async {
            let res = gloo_net::http::Request::get("/api/health")
                .send()
                .await
                .map_err(|e| e.to_string())?;
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
                let _ =
                    h.replace_state_with_url(&JsValue::NULL, "", Some(&format!("/{room_name}")));
            }
        }
        set_joining.set(true);
        spawn_local(async move {
            match request_join(&room_name, display).await {
                Ok(j) => {
                    open_socket(j.ws_url, 0, ctx);
                    leave_on_pagehide(ctx);
                }
                Err(e) => set_form_error.set(Some(e)),
            }
            set_joining.set(false);
        });
    };

    let health_view = move || match health.get() {
        None => view! { <span class="dot"></span>"Checking media servers…" }.into_any(),
        Some(Ok(h)) if h.live_sfus > 0 => {
            let regions: Vec<String> = h
                .sfus
                .iter()
                .filter(|s| s.healthy)
                .map(|s| s.region.clone())
                .collect();
            view! { <span class="dot ok"></span>{format!("{} media regions live: {}", h.live_sfus, regions.join(", "))} }.into_any()
        }
        Some(Ok(_)) => {
            view! { <span class="dot bad"></span>"No media server is live right now." }.into_any()
        }
        Some(Err(e)) => {
            view! { <span class="dot bad"></span>{format!("Cannot reach the server: {e}")} }
                .into_any()
        }
    };

    let leave = move |_| {
        ctx.send(&ClientMessage::Leave {});
        call.with_value(|c| {
            if let Some(c) = c {
                c.stop()
            }
        });
        set_in_room.set(false);
        set_joined.set(Some("You left the meeting.".into()));
    };
    let others = move || model.with(|m| m.others());
    // Remote screens being shown: (publisher id, their name).
    let screens = move || {
        let live: Vec<String> = remote.with(|m| {
            m.keys()
                .filter_map(|k| k.strip_suffix("~screen").map(String::from))
                .collect()
        });
        model.with(|m| {
            m.others()
                .into_iter()
                .filter(|p| p.screen && live.contains(&p.id))
                .map(|p| (p.id, p.name))
                .collect::<Vec<_>>()
        })
    };
    // The tile shown big: a shared screen (presenter layout), else in speaker view the active
    // speaker (or the first other participant).
    let featured = move || -> Option<String> {
        if let Some((id, _)) = screens().into_iter().next() {
            return Some(format!("{id}~screen"));
        }
        if !focus.get() {
            return None;
        }
        model.with(|m| {
            let others = m.others();
            m.speaker
                .clone()
                .filter(|s| others.iter().any(|p| &p.id == s))
                .or_else(|| others.first().map(|p| p.id.clone()))
        })
    };
    let stop_sharing = move || {
        if let Some(s) = screen.get_value() {
            for t in s.get_tracks().iter() {
                if let Ok(t) = t.dyn_into::<web_sys::MediaStreamTrack>() {
                    t.stop();
                }
            }
        }
        screen.set_value(None);
        call.with_value(|c| {
            if let Some(c) = c {
                c.share_screen(None)
            }
        });
        set_sharing.set(false);
        ctx.send(&ClientMessage::SetScreen { sharing: false });
    };
    let toggle_share = move |_| {
        if sharing.get_untracked() {
            stop_sharing();
            return;
        }
        spawn_local(async move {
            match stage::capture_screen().await {
                Ok(s) => {
                    // The browser's own "Stop sharing" ends the track.
                    if let Some(t) = s
                        .get_video_tracks()
                        .get(0)
                        .dyn_into::<web_sys::MediaStreamTrack>()
                        .ok()
                    {
                        let cb = Closure::<dyn FnMut()>::new(move || {
                            if sharing.get_untracked() {
                                stop_sharing()
                            }
                        });
                        t.set_onended(Some(cb.as_ref().unchecked_ref()));
                        cb.forget();
                    }
                    screen.set_value(Some(s.clone()));
                    call.with_value(|c| {
                        if let Some(c) = c {
                            c.share_screen(Some(s.clone()))
                        }
                    });
                    set_sharing.set(true);
                    ctx.send(&ClientMessage::SetScreen { sharing: true });
                }
                Err(e) => ctx.toast(e),
            }
        });
    };
    let is_host = move || model.with(|m| m.me.is_some() && m.host == m.me);
    let me_name = move || {
        model.with(|m| {
            m.participants
                .iter()
                .find(|p| m.is_me(&p.id))
                .map(|p| p.name.clone())
                .unwrap_or_default()
        })
    };

    view! {
        <main class="prejoin" hidden=move || in_room.get()>
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
                    <MicButton on=mic_on set_on=set_mic_on />
                    <CameraButton on=cam_on set_on=set_cam_on />
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
                <Show when=move || !speakers.get().is_empty()>
                    <div class="field">
                        <label for="speaker-select">"Speaker"</label>
                        <select id="speaker-select" name="speaker"
                            on:change=move |ev| set_speaker_id.set(Some(event_target_value(&ev)))>
                            <For each=move || speakers.get() key=|d| d.id.clone() let:d>
                                <option value=d.id.clone()>{d.label.clone()}</option>
                            </For>
                        </select>
                    </div>
                </Show>
                <p class="error" role="alert" data-testid="form-error">{move || form_error.get().unwrap_or_default()}</p>
                <button type="submit" class="primary" disabled=move || joining.get() || in_room.get()>
                    {move || if joining.get() { "Joining…" } else { "Join" }}
                </button>
                <p class="status" data-testid="joined" role="status">{move || joined.get().unwrap_or_default()}</p>
                <p class="status" data-testid="health">{health_view}</p>
            </form>
        </main>
        <main class="room" hidden=move || !in_room.get()>
            <header class="room-bar">
                <h1>{move || model.with(|m| m.name.clone())}</h1>
                <span class="status" role="status" data-testid="room-status">
                    {move || model.with(|m| {
                        let via = m.sfu.as_ref().map(|s| format!(" · media via {s}")).unwrap_or_default();
                        format!("{} in the room{via}", m.participants.len())
                    })}
                    {move || if reconnecting.get() { " · Reconnecting…" } else { "" }}
                    <span data-testid="media-state">{move || match media_state.get().as_str() {
                        "connected" => "",
                        "" | "new" | "connecting" => " · Connecting media…",
                        "disconnected" | "failed" => " · Media reconnecting…",
                        _ => "",
                    }}</span>
                </span>
            </header>
            <div class="stage">
                <section class="grid" class:focus=move || featured().is_some() aria-label="Participants">
                    <For each=screens key=|s| s.0.clone() let:s>
                        {
                            let sid = format!("{}~screen", s.0);
                            let key = StoredValue::new(sid.clone());
                            let video = NodeRef::<Video>::new();
                            Effect::new(move |_| {
                                let st = key.with_value(|k| remote.with(|m| m.get(k).cloned()));
                                if let (Some(v), Some(st)) = (video.get(), st) {
                                    if v.src_object().map(|o| o.id()) != Some(st.id()) {
                                        v.set_src_object(Some(&st));
                                    }
                                }
                            });
                            view! {
                                <div class="tile screen" role="group" data-testid="screen-tile" data-participant=s.0.clone()
                                    aria-label=format!("{}'s screen", s.1)
                                    class:featured=move || key.with_value(|k| featured().as_ref() == Some(k))>
                                    <video node_ref=video autoplay=true playsinline=true data-testid="screen-video"
                                        data-publisher=s.0.clone() data-source="screen" aria-hidden="true"></video>
                                    <span class="name">{format!("{}'s screen", s.1)}</span>
                                </div>
                            }
                        }
                    </For>
                    <div class="tile me" role="group" aria-label=move || format!("{} (you)", me_name())>
                        <video node_ref=room_video class="mirrored" autoplay=true muted=true playsinline=true
                            hidden=move || !cam_on.get()></video>
                        <div class="avatar" hidden=move || cam_on.get()>{move || initials(&me_name())}</div>
                        <span class="name">{move || format!("{} (you)", me_name())}</span>
                        <span class="badge" hidden=move || mic_on.get()>"Muted"</span>
                    </div>
                    <For each=others key=|p| p.id.clone() let:p>
                        {
                            let id = StoredValue::new(p.id.clone());
                            let info = move || id.with_value(|id| model.with(|m| m.participants.iter().find(|x| &x.id == id).cloned()));
                            let flag = move |f: fn(&edgemeet_shared::protocol::ParticipantInfo) -> bool| info().is_some_and(|i| f(&i));
                            let video = NodeRef::<Video>::new();
                            let has_media = move || id.with_value(|id| remote.with(|m| m.contains_key(id)));
                            Effect::new(move |_| {
                                let s = id.with_value(|id| remote.with(|m| m.get(id).cloned()));
                                if let (Some(v), Some(s)) = (video.get(), s) {
                                    if v.src_object().map(|o| o.id()) != Some(s.id()) {
                                        v.set_src_object(Some(&s));
                                    }
                                    if let Some(out) = speaker_id.get() {
                                        media::set_speaker(&v, &out);
                                    }
                                }
                            });
                            view! {
                                <div class="tile" role="group" data-testid="tile" data-participant=p.id.clone()
                                    aria-label=p.name.clone() class:away=move || flag(|i| i.away)
                                    class:speaking=move || id.with_value(|id| model.with(|m| m.speaker.as_ref() == Some(id)))
                                    class:featured=move || id.with_value(|id| featured().as_ref() == Some(id))>
                                    <video node_ref=video autoplay=true playsinline=true data-testid="remote-video"
                                        data-publisher=p.id.clone() data-source="camera"
                                        aria-hidden="true" hidden=move || !has_media() || flag(|i| i.video_muted)></video>
                                    <div class="avatar" hidden=move || has_media() && !flag(|i| i.video_muted)>{initials(&p.name)}</div>
                                    <span class="name">{p.name.clone()}</span>
                                    <span class="badge" data-testid="muted" hidden=move || !flag(|i| i.audio_muted)>"Muted"</span>
                                    <span class="badge" data-testid="camera-off" hidden=move || !flag(|i| i.video_muted)>"Camera off"</span>
                                    <span class="badge" hidden=move || !flag(|i| i.role == edgemeet_shared::token::Role::Host)>"Host"</span>
                                    <span class="badge" hidden=move || !flag(|i| i.away)>"Reconnecting…"</span>
                                </div>
                            }
                        }
                    </For>
                </section>
                <aside class="panel" aria-label="Participants list" hidden=move || !panel_open.get()>
                    <h2>"Participants"</h2>
                    <ul>
                        <For each=move || model.with(|m| m.participants.clone())
                            key=|p| (p.id.clone(), p.audio_muted, p.video_muted, p.role, p.away) let:p>
                            <li>
                                {p.name.clone()}
                                {if p.role == edgemeet_shared::token::Role::Host { " · host" } else { "" }}
                                {if p.audio_muted { " · muted" } else { "" }}
                                {if p.video_muted { " · camera off" } else { "" }}
                            </li>
                        </For>
                    </ul>
                    <label hidden=move || !is_host() title="How many people may share a screen at once">
                        <input type="checkbox" data-testid="many-sharers"
                            prop:checked=move || model.with(|m| m.max_screen_sharers > 1)
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                ctx.send(&ClientMessage::SetRoomOptions { max_screen_sharers: if on { 4 } else { 1 } });
                            } />
                        " Let up to 4 people share screens at once"
                    </label>
                </aside>
                <stage::StatsPanel call remote model open=stats_open />
            </div>
            <nav class="controls" aria-label="Call controls">
                <MicButton on=mic_on set_on=set_mic_on />
                <CameraButton on=cam_on set_on=set_cam_on />
                <button type="button" aria-pressed=move || sharing.get().to_string() title="Share a screen, window or tab"
                    on:click=toggle_share>{move || if sharing.get() { "Stop sharing" } else { "Share screen" }}</button>
                <button type="button" aria-pressed=move || focus.get().to_string() title="Show the active speaker big, or everyone the same size"
                    on:click=move |_| set_focus.update(|v| *v = !*v)>{move || if focus.get() { "Grid view" } else { "Speaker view" }}</button>
                <button type="button" aria-expanded=move || stats_open.get().to_string() title="Show or hide media statistics"
                    on:click=move |_| set_stats_open.update(|v| *v = !*v)>"Stats"</button>
                <button type="button" aria-expanded=move || panel_open.get().to_string() title="Show or hide the participants list"
                    on:click=move |_| set_panel_open.update(|v| *v = !*v)>"Participants"</button>
                <button type="button" class="leave" title="Leave the meeting" on:click=leave>"Leave"</button>
            </nav>
            <div class="toasts" role="log" aria-live="polite" data-testid="toasts">
                <For each=move || toasts.get() key=|t| t.0 let:t>
                    <div class="toast">{t.1}</div>
                </For>
            </div>
        </main>
    }
}

/// An on/off media control: its label says what a press does; `aria-pressed` says it is off.
#[component]
fn ToggleButton(
    on: ReadSignal<bool>,
    set_on: WriteSignal<bool>,
    when_on: &'static str,
    when_off: &'static str,
    shortcut: &'static str,
) -> impl IntoView {
    let label = move || if on.get() { when_on } else { when_off };
    view! {
        <button type="button" class:off=move || !on.get() aria-pressed=move || (!on.get()).to_string()
            title=move || format!("{} ({})", label(), shortcut.replace("Control", "Ctrl"))
            aria-keyshortcuts=shortcut on:click=move |_| set_on.update(|v| *v = !*v)>
            {label}
        </button>
    }
}

#[component]
fn MicButton(on: ReadSignal<bool>, set_on: WriteSignal<bool>) -> impl IntoView {
    view! { <ToggleButton on set_on when_on="Mute microphone" when_off="Unmute microphone" shortcut="Control+D" /> }
}

#[component]
fn CameraButton(on: ReadSignal<bool>, set_on: WriteSignal<bool>) -> impl IntoView {
    view! { <ToggleButton on set_on when_on="Turn camera off" when_off="Turn camera on" shortcut="Control+E" /> }
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
        Err(res
            .json::<WireError>()
            .await
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("Join failed ({})", res.status())))
    }
}

/// What the room socket's handlers update.
#[derive(Clone, Copy)]
struct Ctx {
    set_joined: WriteSignal<Option<String>>,
    set_error: WriteSignal<Option<String>>,
    socket: StoredValue<Option<WebSocket>, LocalStorage>,
    model: RwSignal<ClientRoom>,
    set_in_room: WriteSignal<bool>,
    set_reconnecting: WriteSignal<bool>,
    toasts: RwSignal<Vec<(u64, String)>>,
    mic_on: ReadSignal<bool>,
    cam_on: ReadSignal<bool>,
    /// Sharing a screen (a fresh session must say so again).
    sharing: ReadSignal<bool>,
    call: StoredValue<Option<Call>, LocalStorage>,
    stream: RwSignal<Option<MediaStream>, LocalStorage>,
}

impl Ctx {
    fn send(&self, msg: &ClientMessage) {
        let Ok(text) = serde_json::to_string(msg) else {
            return;
        };
        self.socket.with_value(|ws| {
            if let Some(ws) = ws.as_ref().filter(|ws| ws.ready_state() == WebSocket::OPEN) {
                let _ = ws.send_with_str(&text);
            }
        });
    }

    /// Starts the media session (a new PeerConnection that publishes our camera and microphone).
    fn start_media(&self) {
        let Some(call) = self.call.get_value() else {
            return;
        };
        let local = self.stream.get_untracked();
        let (mic, cam) = (self.mic_on.get_untracked(), self.cam_on.get_untracked());
        spawn_local(async move {
            if let Err(e) = call.start(local).await {
                web_sys::console::error_1(&format!("media: {e}").into());
            }
            call.set_sending("audio", mic);
            call.set_sending("video", cam);
        });
    }

    /// Shows `text` for 4 s.
    fn toast(&self, text: String) {
        let id = js_sys::Date::now() as u64 ^ (js_sys::Math::random() * 1e9) as u64;
        self.toasts.update(|t| t.push((id, text)));
        let toasts = self.toasts;
        set_timeout(
            move || toasts.update(|t| t.retain(|(i, _)| *i != id)),
            Duration::from_secs(4),
        );
    }
}

/// Opens the room socket (`path` carries the token). When the connection drops, reconnects with
/// backoff using the same token: within the room's grace period the session resumes as it was.
fn open_socket(path: String, attempt: u32, ctx: Ctx) {
    let loc = window().location();
    let scheme = if loc.protocol().unwrap_or_default() == "https:" {
        "wss"
    } else {
        "ws"
    };
    let url = format!("{scheme}://{}{path}", loc.host().unwrap_or_default());
    let Ok(ws) = WebSocket::new(&url) else {
        ctx.set_error
            .set(Some("Could not open the room connection.".into()));
        return;
    };
    let hello = serde_json::to_string(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap_or_default();
    let ws2 = ws.clone();
    let onopen = Closure::<dyn FnMut()>::new(move || {
        let _ = ws2.send_with_str(&hello);
    });
    ws.set_onopen(Some(onopen.as_ref().unchecked_ref()));
    onopen.forget();
    let got_snapshot = Rc::new(Cell::new(false));
    let path_now = Rc::new(std::cell::RefCell::new(path.clone()));
    let path_later = path_now.clone();
    let seen = got_snapshot.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else {
            return;
        };
        let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) else {
            return;
        };
        if let ServerMessage::Error { message, .. } = &msg {
            ctx.set_error.set(Some(message.clone()));
        }
        if let ServerMessage::Token { token, .. } = &msg {
            // Reconnects from now on use the fresh token (the old one is about to expire).
            let fresh = match path_now.borrow().split_once("?token=") {
                Some((base, _)) => format!("{base}?token={token}"),
                None => return,
            };
            *path_now.borrow_mut() = fresh;
            return;
        }
        if let ServerMessage::ParticipantLeft { id } = &msg {
            ctx.call.with_value(|c| {
                if let Some(c) = c {
                    c.forget(id)
                }
            });
        }
        if let ServerMessage::PublishLayers { active } = &msg {
            ctx.call.with_value(|c| {
                if let Some(c) = c {
                    c.set_publish_layers(active.clone())
                }
            });
            return;
        }
        if let ServerMessage::SfuChanged { .. } = &msg {
            // The room's media moved: a new PeerConnection to the new SFU (mute state is kept:
            // `start_media` applies it).
            ctx.start_media();
        }
        if matches!(
            msg,
            ServerMessage::Answer { .. } | ServerMessage::Offer { .. }
        ) {
            ctx.call.with_value(|c| {
                if let Some(c) = c {
                    c.signal(msg.clone())
                }
            });
            return;
        }
        let mut notice = None;
        ctx.model.update(|r| notice = r.apply(&msg));
        if let Some(n) = notice {
            ctx.toast(n);
        }
        if let ServerMessage::Snapshot { room, resumed, .. } = &msg {
            seen.set(true);
            ctx.set_error.set(None);
            let via = room
                .sfu
                .as_ref()
                .map(|s| format!(" · media via {s}"))
                .unwrap_or_default();
            ctx.set_joined.set(Some(format!(
                "Joined {} — {} in the room{via}",
                room.name,
                room.participants.len()
            )));
            ctx.set_in_room.set(true);
            ctx.set_reconnecting.set(false);
            // Tell the room how we arrive (muted in pre-join stays muted).
            let (mic, cam) = (ctx.mic_on.get_untracked(), ctx.cam_on.get_untracked());
            if !(mic && cam) {
                ctx.send(&ClientMessage::SetMedia {
                    audio_muted: !mic,
                    video_muted: !cam,
                });
            }
            if ctx.sharing.get_untracked() && !*resumed {
                ctx.send(&ClientMessage::SetScreen { sharing: true });
            }
            // Media: a resumed session keeps its PeerConnection (nothing to publish again); a fresh
            // one (first join, or back after the grace period) sets it up anew.
            let live = ctx.call.with_value(|c| {
                c.as_ref()
                    .and_then(|c| c.peer_connection())
                    .is_some_and(|pc| {
                        !matches!(
                            pc.connection_state(),
                            web_sys::RtcPeerConnectionState::Failed
                                | web_sys::RtcPeerConnectionState::Closed
                        )
                    })
            });
            if !(*resumed && live) {
                ctx.start_media();
            }
        }
    });
    ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
        if is_final_close(ev.code()) {
            ctx.set_in_room.set(false);
            ctx.set_reconnecting.set(false);
            if ev.code() != 1000 {
                ctx.set_joined.set(None);
            }
            return;
        }
        // A connection that worked starts its retries afresh.
        let next = if got_snapshot.get() { 0 } else { attempt + 1 };
        ctx.set_joined.set(Some("Reconnecting…".into()));
        ctx.set_reconnecting.set(true);
        let path = path_later.borrow().clone();
        set_timeout(
            move || open_socket(path, next, ctx),
            Duration::from_millis(reconnect_delay_ms(attempt) as u64),
        );
    });
    ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
    onclose.forget();
    // Tests read (and drop) it.
    let _ = js_sys::Reflect::set(&window(), &"edgemeetWs".into(), &ws);
    ctx.socket.set_value(Some(ws));
}

/// Closing the tab or navigating away is leaving: say so, so the others see it at once.
fn leave_on_pagehide(ctx: Ctx) {
    let cb = Closure::<dyn FnMut()>::new(move || ctx.send(&ClientMessage::Leave {}));
    let _ = window().add_event_listener_with_callback("pagehide", cb.as_ref().unchecked_ref());
    cb.forget();
}
