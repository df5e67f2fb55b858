//! The stage: every tile (shared screens, me, everyone else) placed by `shared::layout::arrange`
//! on the area the stage has right now (it follows the window and the side panel): the biggest
//! grid that fits, paged when tiles would get too small, or one tile big (a shared screen, or the
//! active speaker in speaker view) with a filmstrip.

use crate::health::QualityBadge;
use edgemeet_shared::client_room::initials;
use edgemeet_shared::layout::{arrange, Arrangement, Rect};
use edgemeet_shared::protocol::ParticipantInfo;
use edgemeet_shared::token::Role;
use leptos::html::{Section, Video};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use super::RoomUi;
use crate::meeting::{use_meeting, Meeting};

/// Space between tiles (CSS pixels).
const GAP: f64 = 8.0;

/// One tile on the stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tile {
    /// A participant's shared screen.
    Screen(String),
    Me,
    Person(String),
}

/// The stage's size, kept up to date by a `ResizeObserver`.
fn observe_size(el: NodeRef<Section>) -> RwSignal<(f64, f64)> {
    let size = RwSignal::new((0.0, 0.0));
    Effect::new(move |_| {
        let Some(div) = el.get() else { return };
        let d: web_sys::HtmlElement = div.clone();
        let measure = move || (d.client_width() as f64, d.client_height() as f64);
        size.set(measure());
        let cb = Closure::<dyn FnMut()>::new(move || {
            // The observer outlives the room page by one last call (its element going away):
            // the size is gone by then.
            let Some(before) = size.try_get_untracked() else {
                return;
            };
            let now = measure();
            if before != now {
                let _ = size.try_set(now);
            }
        });
        if let Ok(ro) = web_sys::ResizeObserver::new(cb.as_ref().unchecked_ref()) {
            ro.observe(&div);
            std::mem::forget(ro); // lives as long as the stage
        }
        cb.forget();
    });
    size
}

#[component]
pub fn Stage(ui: RoomUi) -> impl IntoView {
    let m = use_meeting();
    let stage = NodeRef::<Section>::new();
    let size = observe_size(stage);
    // Remote screens being shown: publishers whose screen stream arrived and who say they share.
    let screens = Memo::new(move |_| {
        let live: Vec<String> = m.remote.with(|r| {
            r.keys()
                .filter_map(|k| k.strip_suffix("~screen").map(String::from))
                .collect()
        });
        m.model.with(|r| {
            r.others()
                .into_iter()
                .filter(|p| p.screen && live.contains(&p.id))
                .map(|p| p.id)
                .collect::<Vec<_>>()
        })
    });
    let tiles = Memo::new(move |_| {
        let mut t: Vec<Tile> = screens.get().into_iter().map(Tile::Screen).collect();
        t.push(Tile::Me);
        t.extend(
            m.model
                .with(|r| r.others())
                .into_iter()
                .map(|p| Tile::Person(p.id)),
        );
        t
    });
    // The big tile: a shared screen (presenter layout), else in speaker view the active speaker
    // (or the first other participant).
    let featured = Memo::new(move |_| -> Option<Tile> {
        if let Some(id) = screens.get().into_iter().next() {
            return Some(Tile::Screen(id));
        }
        if !ui.speaker_view.get() {
            return None;
        }
        m.model.with(|r| {
            let others = r.others();
            r.speaker
                .clone()
                .filter(|s| others.iter().any(|p| &p.id == s))
                .or_else(|| others.first().map(|p| p.id.clone()))
                .map(Tile::Person)
        })
    });
    let arrangement = Memo::new(move |_| {
        let (w, h) = size.get();
        let list = tiles.get();
        let f = featured
            .get()
            .and_then(|f| list.iter().position(|t| *t == f));
        arrange(list.len(), f, w, h, GAP, ui.page.get())
    });
    let rect_of = move |tile: &Tile| -> Option<Rect> {
        let i = tiles.with(|t| t.iter().position(|x| x == tile))?;
        arrangement.with(|a| a.rects.get(i).copied().flatten())
    };
    let pages = move || arrangement.with(|a: &Arrangement| a.pages);
    let page = move || arrangement.with(|a: &Arrangement| a.page);
    view! {
        // Under a sheet (a panel on a narrow screen) the stage is out of reach for the keyboard too.
        <section class="stage" node_ref=stage aria-label="Video tiles" class:paged={move || pages() > 1}
            inert=move || (ui.panel.get().is_some() && narrow(size.get().0)).then_some("")>
            <For each=move || tiles.get() key=|t| t.clone() let:tile>
                {
                    let key = StoredValue::new(tile.clone());
                    let rect = Signal::derive(move || key.with_value(|k| rect_of(k)));
                    let is_featured = Signal::derive(move || key.with_value(|k| featured.get().as_ref() == Some(k)));
                    match tile {
                        Tile::Me => view! { <MeTile rect /> }.into_any(),
                        Tile::Person(id) => view! { <PersonTile id rect featured=is_featured /> }.into_any(),
                        Tile::Screen(id) => view! { <ScreenTile id rect featured=is_featured /> }.into_any(),
                    }
                }
            </For>
            {move || arrangement.with(|a| a.more.map(|r| (r, a.hidden_in_strip))).map(|(r, n)| view! {
                <div class="tile more-tile" style=place(Some(r)) role="note"
                    aria-label=format!("{n} more not shown")>{format!("+{n}")}</div>
            })}
            <nav class="pager" aria-label="Pages" hidden={move || pages() <= 1}>
                // aria-disabled, not disabled: the button keeps focus on the first or last page.
                <button type="button" aria-disabled=move || (page() == 0).to_string()
                    on:click=move |_| ui.page.set(page().saturating_sub(1))>"Previous page"</button>
                <span>{move || format!("Page {} of {}", page() + 1, pages())}</span>
                <button type="button" aria-disabled={move || (page() + 1 >= pages()).to_string()}
                    on:click=move |_| if page() + 1 < pages() { ui.page.set(page() + 1) }>"Next page"</button>
            </nav>
        </section>
    }
}

/// The page's narrow layout (panels as sheets over the stage; see the style sheet's 700 px query).
/// `stage_w` only makes callers re-check when the stage is resized.
fn narrow(stage_w: f64) -> bool {
    let _ = stage_w;
    window()
        .match_media("(max-width: 700px)")
        .ok()
        .flatten()
        .is_some_and(|q| q.matches())
}

/// Inline placement of a tile (`None`: not shown).
fn place(r: Option<Rect>) -> String {
    match r {
        Some(r) => format!(
            "left:{:.1}px;top:{:.1}px;width:{:.1}px;height:{:.1}px",
            r.x, r.y, r.w, r.h
        ),
        None => String::new(),
    }
}

#[component]
fn MeTile(rect: Signal<Option<Rect>>) -> impl IntoView {
    let m = use_meeting();
    let video = NodeRef::<Video>::new();
    Effect::new(move |_| {
        if let (Some(v), Some(s)) = (video.get(), m.stream.get()) {
            v.set_src_object(Some(&s));
        }
    });
    let me_name = move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .find(|p| r.is_me(&p.id))
                .map(|p| p.name.clone())
                .unwrap_or_default()
        })
    };
    let mine = move |f: fn(&ParticipantInfo) -> bool| {
        m.model
            .with(|r| r.participants.iter().any(|p| r.is_me(&p.id) && f(p)))
    };
    let me_id = StoredValue::new(m.model.with_untracked(|r| r.me.clone().unwrap_or_default()));
    view! {
        <div class="tile me" role="group" aria-label=move || format!("{} (you)", me_name())
            style=move || place(rect.get()) hidden=move || rect.get().is_none()>
            <video node_ref=video class="mirrored" autoplay=true muted=true playsinline=true
                hidden=move || !m.cam_on.get()></video>
            <div class="avatar" hidden=move || m.cam_on.get()>{move || initials(&me_name())}</div>
            <span class="name">{move || format!("{} (you)", me_name())}</span>
            <span class="badges">
                <QualityBadge stream=crate::health::ME.to_string() who=Signal::derive(move || format!("{} (you)", me_name())) />
                <span class="badge" hidden=move || m.mic_on.get()>"Muted"</span>
                <span class="badge hand" hidden=move || !mine(|p| p.hand.is_some())>"✋ Hand raised"</span>
            </span>
            <Reaction of=me_id />
        </div>
    }
}

/// The latest reaction of participant `of`, over their tile for a few seconds.
#[component]
fn Reaction(of: StoredValue<String>) -> impl IntoView {
    let m = use_meeting();
    let latest = move || {
        of.with_value(|id| {
            m.reactions.with(|r| {
                r.iter()
                    .rev()
                    .find(|(_, who, _)| who == id)
                    .map(|(_, _, e)| e.clone())
            })
        })
    };
    view! {
        <span class="reaction" data-testid="reaction" role="img" hidden=move || latest().is_none()
            aria-label=move || latest().map(|e| format!("reacted {e}")).unwrap_or_default()>{latest}</span>
    }
}

/// Attaches the remote stream `key` to `video` whenever it arrives or changes.
fn follow_stream(m: Meeting, key: StoredValue<String>, video: NodeRef<Video>, audio_out: bool) {
    Effect::new(move |_| {
        let s = key.with_value(|k| m.remote.with(|r| r.get(k).cloned()));
        if let (Some(v), Some(s)) = (video.get(), s) {
            // The same stream object (a stream that came back has the same id, not the same
            // object).
            if v.src_object().map(JsValue::from) != Some(JsValue::from(s.clone())) {
                v.set_src_object(Some(&s));
            }
            if audio_out {
                if let Some(out) = m.speaker_out.get() {
                    crate::media::set_speaker(&v, &out);
                }
            }
        }
    });
}

#[component]
fn PersonTile(id: String, rect: Signal<Option<Rect>>, featured: Signal<bool>) -> impl IntoView {
    let m = use_meeting();
    let key = StoredValue::new(id.clone());
    let info = move || -> Option<ParticipantInfo> {
        key.with_value(|id| {
            m.model
                .with(|r| r.participants.iter().find(|x| &x.id == id).cloned())
        })
    };
    let flag = move |f: fn(&ParticipantInfo) -> bool| info().is_some_and(|i| f(&i));
    let name = move || info().map(|i| i.name).unwrap_or_default();
    let video = NodeRef::<Video>::new();
    let has_media = move || key.with_value(|id| m.remote.with(|r| r.contains_key(id)));
    follow_stream(m, key, video, true);
    view! {
        <div class="tile" role="group" data-testid="tile" data-participant=id.clone()
            aria-label=name class:away=move || flag(|i| i.away)
            class:speaking=move || key.with_value(|id| m.model.with(|r| r.speaker.as_ref() == Some(id)))
            class:featured=move || featured.get()
            style=move || place(rect.get()) hidden=move || rect.get().is_none()>
            <video node_ref=video autoplay=true playsinline=true data-testid="remote-video"
                data-publisher=id.clone() data-source="camera"
                aria-hidden="true" hidden=move || !has_media() || flag(|i| i.video_muted)></video>
            <div class="avatar" hidden=move || has_media() && !flag(|i| i.video_muted)>{move || initials(&name())}</div>
            <span class="name">{name}</span>
            <span class="badges">
                <QualityBadge stream=id.clone() who=Signal::derive(name) />
                <span class="badge" data-testid="muted" hidden=move || !flag(|i| i.audio_muted)>"Muted"</span>
                <span class="badge" data-testid="camera-off" hidden=move || !flag(|i| i.video_muted)>"Camera off"</span>
                <span class="badge host" hidden=move || !flag(|i| i.role == Role::Host)>"Host"</span>
                <span class="badge host" hidden=move || !flag(|i| i.role == Role::Cohost)>"Co-host"</span>
                <span class="badge hand" data-testid="hand" hidden=move || !flag(|i| i.hand.is_some())>"✋ Hand raised"</span>
                <span class="badge" hidden=move || !flag(|i| i.away)>"Reconnecting…"</span>
            </span>
            <Reaction of=key />
        </div>
    }
}

#[component]
fn ScreenTile(id: String, rect: Signal<Option<Rect>>, featured: Signal<bool>) -> impl IntoView {
    let m = use_meeting();
    let key = StoredValue::new(format!("{id}~screen"));
    let pid = StoredValue::new(id.clone());
    let name = move || {
        pid.with_value(|id| {
            m.model.with(|r| {
                r.participants
                    .iter()
                    .find(|p| &p.id == id)
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            })
        })
    };
    let video = NodeRef::<Video>::new();
    follow_stream(m, key, video, true);
    view! {
        <div class="tile screen" role="group" data-testid="screen-tile" data-participant=id.clone()
            aria-label=move || format!("{}'s screen", name()) class:featured=move || featured.get()
            style=move || place(rect.get()) hidden=move || rect.get().is_none()>
            <video node_ref=video autoplay=true playsinline=true data-testid="screen-video"
                data-publisher=id.clone() data-source="screen" aria-hidden="true"></video>
            <span class="name">{move || format!("{}'s screen", name())}</span>
            <span class="badges">
                <QualityBadge stream=format!("{id}~screen") who=Signal::derive(move || format!("{}'s screen", name())) />
            </span>
        </div>
    }
}
