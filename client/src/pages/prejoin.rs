//! The pre-join page: camera preview, microphone level, device pickers, display name (remembered),
//! room name, media-server status, and Join.

use edgemeet_shared::protocol::{
    normalize_display_name, normalize_room_name, ErrorCode, JoinRequest, JoinResponse, WireError,
};
use leptos::html::Video;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::media;
use crate::meeting::use_meeting;
use crate::netcheck;
use crate::pages::room::controls::{CameraButton, MicButton};

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
    let m = use_meeting();
    let (name, set_name) = signal(
        storage()
            .and_then(|s| s.get_item(NAME_KEY).ok().flatten())
            .unwrap_or_default(),
    );
    let (room, set_room) = signal(initial_room);
    // Told before joining: whether the meeting is being recorded (asked again as the room name
    // changes; a name that is not a room yet is not recorded).
    let recorded = LocalResource::new(move || {
        let r = room.get();
        async move {
            let name = edgemeet_shared::protocol::normalize_room_name(&r).ok()?;
            let res = gloo_net::http::Request::get(&format!("/api/rooms/{name}/status"))
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = res.json().await.ok()?;
            v["recording"].as_bool()
        }
    });
    let (password, set_password) = signal(String::new());
    let password_ref = NodeRef::<leptos::html::Input>::new();
    let (form_error, set_form_error) = signal(None::<String>);
    let (media_error, set_media_error) = signal(None::<String>);
    let (health, set_health) = signal(None::<Result<Health, String>>);
    let (joining, set_joining) = signal(false);
    let meter = StoredValue::new_local(None::<media::LevelMeter>);
    let (level, set_level) = signal(0u32);
    let (cams, set_cams) = signal(Vec::<media::Device>::new());
    let (mics, set_mics) = signal(Vec::<media::Device>::new());
    let (cam_id, set_cam_id) = signal(None::<String>);
    let (mic_id, set_mic_id) = signal(None::<String>);
    let (speakers, set_speakers) = signal(Vec::<media::Device>::new());
    let video_ref = NodeRef::<Video>::new();

    // Camera preview, microphone meter and device lists; reopened when a picker changes.
    let open = move |cam: Option<String>, mic: Option<String>| {
        spawn_local(async move {
            // Release the old devices first: some cameras cannot be opened twice.
            meter.set_value(None);
            if let Some(old) = m.stream.get_untracked() {
                media::stop(&old);
            }
            match media::open_camera_and_mic(cam, mic).await {
                Ok(s) => {
                    set_cam_id.set(media::device_of(&s, "video"));
                    set_mic_id.set(media::device_of(&s, "audio"));
                    meter.set_value(media::LevelMeter::new(&s));
                    m.stream.set(Some(s));
                    set_media_error.set(None);
                    let (c, mi, sp) = media::list_devices().await;
                    set_cams.set(c);
                    set_mics.set(mi);
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
    if m.stream.get_untracked().is_none() {
        open(None, None);
    } else {
        // Back from the room: the devices are still open; the meter starts again.
        m.stream.with_untracked(|s| {
            if let Some(s) = s {
                meter.set_value(media::LevelMeter::new(s));
            }
        });
    }
    let meter_timer = set_interval_with_handle(
        move || meter.update_value(|mt| set_level.set(mt.as_mut().map_or(0, |mt| mt.level()))),
        std::time::Duration::from_millis(100),
    );
    on_cleanup(move || {
        if let Ok(t) = meter_timer {
            t.clear();
        }
        meter.set_value(None);
    });
    Effect::new(move |_| {
        if let (Some(v), Some(s)) = (video_ref.get(), m.stream.get()) {
            v.set_src_object(Some(&s));
        }
    });

    // Signed in? (Optional: anyone joins by link.) The account's name fills an empty name box.
    let account = RwSignal::new(None::<edgemeet_shared::account::AccountView>);
    spawn_local(async move {
        if let Ok(Some(a)) = crate::pages::account::current_account().await {
            // (The page may be gone by now: joined already.)
            if name
                .try_get_untracked()
                .is_some_and(|n| n.trim().is_empty())
            {
                set_name.try_set(a.name.clone());
            }
            account.try_set(Some(a));
        }
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

    // The network check: once by itself shortly after the page opens (quiet: one line, no
    // popup), and on "Test my connection". Joining calls a running one off.
    let (check, set_check) = signal(None::<Result<edgemeet_shared::netcheck::Verdict, String>>);
    let (checking, set_checking) = signal(false);
    let cancel = StoredValue::new_local(None::<netcheck::Cancel>);
    let run_check = move |quiet: bool| {
        let Ok(r) = normalize_room_name(&room.get_untracked()) else {
            if !quiet {
                set_check.set(Some(Err(
                    "type a room name first: the check goes to that meeting's media server.".into(),
                )));
            }
            return;
        };
        if checking.get_untracked() {
            return;
        }
        let c = netcheck::Cancel::default();
        cancel.set_value(Some(c.clone()));
        set_checking.set(true);
        spawn_local(async move {
            let out = netcheck::run(&r, true, c.clone()).await;
            if c.is_cancelled() {
                // Join was pressed meanwhile: if the join is refused (a password, say), the
                // page stays and the check may be run again.
                set_checking.try_set(false);
                return;
            }
            if let Ok((observed, _)) = &out {
                // Tests compare what the page says with what was measured.
                if let Ok(js) = serde_wasm_bindgen_value(observed) {
                    let _ = js_sys::Reflect::set(&window(), &"edgemeetNetcheck".into(), &js);
                }
            }
            set_check.try_set(Some(out.map(|(_, v)| v)));
            set_checking.try_set(false);
        });
    };
    let auto = set_timeout_with_handle(
        move || run_check(true),
        std::time::Duration::from_millis(1_500),
    )
    .ok();
    on_cleanup(move || {
        if let Some(t) = auto {
            t.clear();
        }
        if let Some(c) = cancel.get_value() {
            c.cancel();
        }
    });

    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // A check running (or about to) would compete with the call for the network and the
        // CPU: it stops; "Test my connection" runs it again if the join is refused.
        if let Some(t) = auto {
            t.clear();
        }
        if let Some(c) = cancel.get_value() {
            c.cancel();
        }
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
        let pw = Some(password.get_untracked()).filter(|p| !p.is_empty());
        spawn_local(async move {
            match request_join(&room_name, display, pw).await {
                Ok(j) => {
                    set_password.set(String::new());
                    m.set_ice_servers(&j.ice_servers);
                    m.joined(j.ws_url)
                }
                Err((code, e)) => {
                    set_form_error.set(Some(e));
                    if matches!(
                        code,
                        Some(ErrorCode::PasswordRequired | ErrorCode::WrongPassword)
                    ) {
                        if let Some(i) = password_ref.get_untracked() {
                            let _ = i.focus();
                        }
                    }
                }
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
    let error = move || {
        form_error
            .get()
            .or_else(|| m.error.get())
            .unwrap_or_default()
    };

    view! {
        <main class="prejoin">
            <div class="preview-col">
            <section class="preview" aria-label="Camera preview">
                <video node_ref=video_ref class="mirrored" autoplay=true muted=true playsinline=true
                    data-testid="preview" aria-label="Your camera preview"
                    style:visibility=move || if m.cam_on.get() && media_error.get().is_none() { "visible" } else { "hidden" }></video>
                <Show when=move || media_error.get().is_some() || !m.cam_on.get()>
                    <div class="placeholder" role="status">
                        {move || media_error.get().unwrap_or_else(|| "Camera is off".into())}
                    </div>
                </Show>
                <div class="toggles">
                    <MicButton />
                    <CameraButton />
                </div>
            </section>
                <div class="meter" role="meter" aria-label="Microphone level" aria-valuemin="0" aria-valuemax="100"
                    aria-valuenow=move || level.get().to_string() data-testid="mic-level">
                    <div style:width=move || format!("{}%", if m.mic_on.get() { level.get() } else { 0 })></div>
                </div>
            </div>
            <form class="join" on:submit=join novalidate=true>
                <h1>"Ready to join?"</h1>
                <p class="account-line" data-testid="account-line">
                    {move || match account.get() {
                        Some(a) => view! { {format!("Signed in as {}", a.name)} " · " <a href="/account">"Your account"</a> " · " <a href="/meetings">"Your meetings"</a> " · " <a href="/recordings">"Recordings"</a> }.into_any(),
                        None => view! { <a href="/account">"Sign in or create an account"</a> " (not needed to join)" " · " <a href="/recordings">"Recordings"</a> }.into_any(),
                    }}
                </p>
                <label>"Your name"
                    <input type="text" name="name" autocomplete="name" maxlength="64" required=true
                        prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev)) />
                </label>
                <label>"Room"
                    <input type="text" name="room" maxlength="64" required=true placeholder="e.g. team-standup"
                        prop:value=room on:input=move |ev| set_room.set(event_target_value(&ev)) />
                </label>
                <label>"Meeting password (if it has one)"
                    <input type="password" name="password" maxlength="128" autocomplete="off" node_ref=password_ref
                        aria-describedby="password-hint"
                        prop:value=password on:input=move |ev| set_password.set(event_target_value(&ev)) />
                </label>
                <p class="hint" id="password-hint">"A new meeting started with a password keeps it, and has a waiting room."</p>
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
                            on:change=move |ev| m.speaker_out.set(Some(event_target_value(&ev)))>
                            <For each=move || speakers.get() key=|d| d.id.clone() let:d>
                                <option value=d.id.clone()>{d.label.clone()}</option>
                            </For>
                        </select>
                    </div>
                </Show>
                <p class="error" role="alert" data-testid="form-error">{error}</p>
                <p class="rec-notice" role="status" data-testid="recording-notice"
                    hidden=move || recorded.get().flatten() != Some(true)>
                    <span class="rec-indicator"><span class="dot" aria-hidden="true"></span>"Recording"</span>
                    " This meeting is being recorded. By joining you agree to be in the recording."
                </p>
                <button type="submit" class="primary" disabled=move || joining.get()>
                    {move || if joining.get() { "Joining…" } else { "Join" }}
                </button>
                <p class="status" data-testid="joined" role="status">{move || m.notice.get().unwrap_or_default()}</p>
                <p class="status" data-testid="health">{health_view}</p>
                <section class="netcheck" aria-labelledby="netcheck-heading">
                    <div class="netcheck-head">
                        <h2 id="netcheck-heading">"Your connection"</h2>
                    <button type="button" class="secondary" disabled=move || checking.get()
                            on:click=move |_| run_check(false)>
                            {move || if checking.get() { "Testing…" } else { "Test my connection" }}
                        </button>
                    </div>
                    <p role="status" data-testid="netcheck" class=move || match check.get() {
                        Some(Ok(v)) => format!("netcheck-result {}", grade_class(v.grade)),
                        Some(Err(_)) => "netcheck-result fair".to_string(),
                        None => "netcheck-result".to_string(),
                    }>
                        {move || match (checking.get(), check.get()) {
                            (true, _) => "Checking your connection…".to_string(),
                            (false, Some(Ok(v))) => v.headline,
                            (false, Some(Err(e))) => format!("The check did not finish: {e}"),
                            (false, None) => "Not checked yet.".to_string(),
                        }}
                    </p>
                    <Show when=move || matches!(check.get(), Some(Ok(_))) && !checking.get()>
                        <details class="netcheck-details">
                            <summary>"Details"</summary>
                            <ul>
                                {move || match check.get() {
                                    Some(Ok(v)) => v.details.into_iter().map(|d| view! { <li>{d}</li> }).collect_view().into_any(),
                                    _ => ().into_any(),
                                }}
                            </ul>
                        </details>
                    </Show>

                </section>
            </form>
        </main>
    }
}

fn grade_class(g: edgemeet_shared::netcheck::Grade) -> &'static str {
    use edgemeet_shared::netcheck::Grade;
    match g {
        Grade::Good => "good",
        Grade::Fair | Grade::Relayed => "fair",
        Grade::Blocked => "bad",
    }
}

/// A serialisable value as a JavaScript object (through JSON: no extra crate).
fn serde_wasm_bindgen_value(v: &impl serde::Serialize) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&serde_json::to_string(v).map_err(|e| JsValue::from_str(&e.to_string()))?)
}

/// Asks to join; on refusal, the room's code (if it gave one) and its words.
async fn request_join(
    room: &str,
    name: String,
    password: Option<String>,
) -> Result<JoinResponse, (Option<ErrorCode>, String)> {
    let res = gloo_net::http::Request::post(&format!("/api/rooms/{room}/join"))
        .json(&JoinRequest { name, password })
        .map_err(|e| (None, e.to_string()))?
        .send()
        .await
        .map_err(|e| (None, format!("Cannot reach the server: {e}")))?;
    if res.ok() {
        res.json().await.map_err(|e| (None, e.to_string()))
    } else {
        let status = res.status();
        Err(res
            .json::<WireError>()
            .await
            .map(|e| (Some(e.code), e.message))
            .unwrap_or_else(|_| (None, format!("Join failed ({status})"))))
    }
}
