//! The recordings page (`/recordings`): the recordings this browser started (and, signed in, those
//! of my scheduled meetings), each with its length and size; a player that plays the meeting back
//! as it looked — every camera in a grid (a shared screen big), every microphone mixed by the
//! browser — on one time line with one seek bar, play/pause and speed; per-track downloads, the
//! manifest, and delete. Where each file sits on the time line is `edgemeet_shared::recording`'s.

use edgemeet_shared::recording::{clock, playback_tracks, Manifest, PlaybackTrack};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::JsCast;

use crate::pages::meetings::{failure, get, local_time};

#[derive(Debug, Clone, Deserialize)]
struct Listing {
    id: String,
    room: String,
    started_at: u64,
    ended_at: Option<u64>,
    by: String,
    duration_ms: u64,
    bytes: u64,
    /// Mine to delete (I started it, or own its meeting); else I was invited to watch it.
    #[serde(default)]
    can_delete: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct List {
    recordings: Vec<Listing>,
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} kB", b.div_ceil(1 << 10)),
    }
}

#[component]
pub fn RecordingsPage() -> impl IntoView {
    let list = RwSignal::new(None::<Vec<Listing>>);
    let error = RwSignal::new(None::<String>);
    let playing = RwSignal::new(None::<Manifest>);
    let reload = move || {
        spawn_local(async move {
            match get::<List>("/api/recordings").await {
                Ok(l) => list.set(Some(l.recordings)),
                Err(e) => error.set(Some(e)),
            }
        })
    };
    reload();
    let play = move |id: String| {
        spawn_local(async move {
            match get::<Manifest>(&format!("/api/recordings/{id}")).await {
                Ok(m) => {
                    error.set(None);
                    playing.set(Some(m));
                }
                Err(e) => error.set(Some(e)),
            }
        })
    };
    let delete = move |id: String, what: String| {
        if !window()
            .confirm_with_message(&format!(
                "Delete the recording of {what}? This cannot be undone."
            ))
            .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            let res = gloo_net::http::Request::delete(&format!("/api/recordings/{id}"))
                .send()
                .await;
            match res {
                Ok(r) if r.ok() => {
                    if playing.with_untracked(|p| p.as_ref().is_some_and(|m| m.recording == id)) {
                        playing.set(None);
                    }
                    reload();
                }
                Ok(r) => error.set(Some(failure(r).await)),
                Err(e) => error.set(Some(format!("Cannot reach the server: {e}"))),
            }
        })
    };
    view! {
        <main class="account meetings recordings">
            <nav class="account-nav"><a href="/">"← Back to joining a meeting"</a>" · "<a href="/meetings">"Your meetings"</a></nav>
            <h1>"Recordings"</h1>
            <p class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            <Show when=move || playing.with(Option::is_some)>
                {move || playing.get().map(|m| view! { <Player manifest=m on_close=Callback::new(move |_| playing.set(None)) /> })}
            </Show>
            <section aria-labelledby="recordings-title">
                <h2 id="recordings-title">"Your recordings"</h2>
                <Show when=move || list.with(|l| l.as_ref().is_some_and(Vec::is_empty))>
                    <p class="hint">"No recordings yet. Hosts start one in a meeting under More → Record."</p>
                </Show>
                <ul class="meeting-list">
                    <For each=move || list.get().unwrap_or_default() key=|r| (r.id.clone(), r.duration_ms) let:r>
                        {
                            let what = format!("{} on {}", r.room, local_time(r.started_at));
                            let (id, id2, what2) = (r.id.clone(), r.id.clone(), what.clone());
                            let state = if r.ended_at.is_none() { " · recording now" } else { "" };
                            let invited = if r.can_delete { "" } else { " · shared with you" };
                            let can_delete = r.can_delete;
                            view! {
                                <li class="meeting" aria-label=what.clone()>
                                    <h3>{what.clone()}</h3>
                                    <p class="hint">{format!("{} · {} · started by {}{state}{invited}", clock(r.duration_ms), size(r.bytes), r.by)}</p>
                                    <div class="row">
                                        <button type="button" class="primary" on:click=move |_| play(id.clone())>"Play"</button>
                                        <a class="button" href=format!("/api/recordings/{}/manifest.json", r.id)
                                            download=format!("recording-{}.json", r.id)>"Download manifest"</a>
                                        <Show when=move || can_delete>
                                            <button type="button" class="danger" on:click={
                                                let (id2, what2) = (id2.clone(), what2.clone());
                                                move |_| delete(id2.clone(), what2.clone())
                                            }>"Delete recording"</button>
                                        </Show>
                                    </div>
                                </li>
                            }
                        }
                    </For>
                </ul>
            </section>
        </main>
    }
}

/// Every media element of the player, with the file it plays.
fn media_elements() -> Vec<(web_sys::HtmlMediaElement, String)> {
    let Ok(nodes) = document().query_selector_all(".player [data-track]") else {
        return Vec::new();
    };
    (0..nodes.length())
        .filter_map(|i| nodes.item(i))
        .filter_map(|n| n.dyn_into::<web_sys::HtmlMediaElement>().ok())
        .map(|e| {
            let url = e.get_attribute("data-track").unwrap_or_default();
            (e, url)
        })
        .collect()
}

/// The meeting played back in sync: one clock (the recording's time line) drives every file.
#[component]
fn Player(manifest: Manifest, #[prop(into)] on_close: Callback<()>) -> impl IntoView {
    let tracks = StoredValue::new(playback_tracks(&manifest));
    let duration = manifest.duration_ms;
    let title = format!("{} on {}", manifest.room, local_time(manifest.started_at));
    // The time line: where it was when last set (and the wall clock then, ms), whether it runs.
    let at_ms = RwSignal::new(0u64);
    let running = RwSignal::new(false);
    let speed = RwSignal::new(1.0f64);
    let base = StoredValue::new((0u64, 0f64));
    let now = js_sys::Date::now;
    let shown = Memo::new(move |_| {
        let t = at_ms.get();
        tracks.with_value(|ts| {
            ts.iter()
                .filter(|k| k.is_video() && k.position(t).is_some())
                .map(|k| k.url.clone())
                .collect::<Vec<_>>()
        })
    });
    // Every element follows the clock: playing where its file is on the time line, paused and
    // hidden where it is not; nudged back when it drifts more than a quarter of a second.
    let sync = move |seek: bool| {
        let t = at_ms.get_untracked();
        let play = running.get_untracked();
        let rate = speed.get_untracked();
        for (el, url) in media_elements() {
            let Some(track) = tracks.with_value(|ts| ts.iter().find(|k| k.url == url).cloned())
            else {
                continue;
            };
            match track.position(t) {
                Some(pos) => {
                    if seek || (el.current_time() - pos).abs() > 0.25 {
                        el.set_current_time(pos);
                    }
                    el.set_playback_rate(rate);
                    if play && el.paused() {
                        let _ = el.play();
                    } else if !play && !el.paused() {
                        let _ = el.pause();
                    }
                }
                None => {
                    if !el.paused() {
                        let _ = el.pause();
                    }
                }
            }
        }
    };
    let tick = move || {
        if running.get_untracked() {
            let (t0, w0) = base.get_value();
            let t = t0 + ((now() - w0) * speed.get_untracked()).max(0.0) as u64;
            if t >= duration {
                running.set(false);
                at_ms.set(duration);
            } else {
                at_ms.set(t);
            }
            sync(false);
        }
    };
    let interval = set_interval_with_handle(tick, std::time::Duration::from_millis(200)).ok();
    on_cleanup(move || {
        if let Some(h) = interval {
            h.clear();
        }
        for (el, _) in media_elements() {
            let _ = el.pause();
        }
    });
    let toggle = move |_| {
        if at_ms.get_untracked() >= duration {
            at_ms.set(0);
        }
        base.set_value((at_ms.get_untracked(), now()));
        running.update(|r| *r = !*r);
        sync(true);
    };
    let seek = move |ev: web_sys::Event| {
        let v: f64 = event_target_value(&ev).parse().unwrap_or(0.0);
        at_ms.set(((v * 1_000.0) as u64).min(duration));
        base.set_value((at_ms.get_untracked(), now()));
        sync(true);
    };
    let set_speed = move |ev: web_sys::Event| {
        speed.set(event_target_value(&ev).parse().unwrap_or(1.0));
        base.set_value((at_ms.get_untracked(), now()));
        sync(false);
    };
    let screen_shown = Memo::new(move |_| {
        shown.with(|s| {
            tracks.with_value(|ts| ts.iter().any(|k| k.kind == "screen" && s.contains(&k.url)))
        })
    });
    view! {
        <section class="player report" aria-label=format!("Playing: {title}")>
            <h3>{format!("Playing: {title}")}</h3>
            <div class="player-stage" class:with-screen=move || screen_shown.get()>
                {tracks.with_value(|ts| ts.iter().map(|k| {
                    let label = format!("{} ({})", k.participant, k.kind);
                    let url = k.url.clone();
                    let url2 = url.clone();
                    if k.is_video() {
                        view! {
                            <video data-track=url.clone() src=url preload="auto" playsinline=true muted=true
                                aria-label=label class:screen=k.kind == "screen"
                                hidden=move || !shown.with(|s| s.contains(&url2))
                                on:loadedmetadata=move |_| sync(true)></video>
                        }.into_any()
                    } else {
                        view! {
                            <audio data-track=url.clone() src=url preload="auto" aria-label=label
                                on:loadedmetadata=move |_| sync(true)></audio>
                        }.into_any()
                    }
                }).collect_view())}
            </div>
            <div class="player-controls row">
                <button type="button" class="primary" on:click=toggle>{move || if running.get() { "Pause" } else { "Play" }}</button>
                <label class="seek">
                    <span>"Position"</span>
                    <input type="range" min="0" max=(duration as f64 / 1_000.0).to_string() step="0.1"
                        prop:value=move || (at_ms.get() as f64 / 1_000.0).to_string() on:input=seek
                        aria-valuetext=move || format!("{} of {}", clock(at_ms.get()), clock(duration)) />
                </label>
                <span class="time" data-testid="player-time">{move || format!("{} / {}", clock(at_ms.get()), clock(duration))}</span>
                <label>"Speed "
                    <select on:change=set_speed>
                        <option value="0.5">"0.5×"</option>
                        <option value="1" selected=true>"1×"</option>
                        <option value="1.5">"1.5×"</option>
                        <option value="2">"2×"</option>
                    </select>
                </label>
                <button type="button" on:click=move |_| on_close.run(())>"Close player"</button>
            </div>
            <details>
                <summary>"Download the files"</summary>
                <ul>
                    {tracks.with_value(|ts| ts.iter().map(|k: &PlaybackTrack| {
                        let name = format!("{}-{}.webm", k.participant, k.kind);
                        view! { <li><a href=k.url.clone() download=name>{format!("{} · {} (WebM)", k.participant, k.kind)}</a></li> }
                    }).collect_view())}
                </ul>
            </details>
        </section>
    }
}
