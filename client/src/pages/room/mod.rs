//! The room page, by region: the header (room name and status), the stage (tiles), the side panel
//! (participants, statistics; beside the stage on wide screens, a sheet over it on narrow ones),
//! the control bar, and notices.

mod breakouts;
mod chat;
pub mod controls;
mod panels;
mod polls;
mod settings;
mod stage;

use edgemeet_shared::session::PcState;
use leptos::prelude::*;

use crate::meeting::use_meeting;

/// The side panels (one open at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Participants,
    Chat,
    Settings,
    Stats,
    Polls,
    Breakouts,
}

impl Panel {
    pub fn title(self) -> &'static str {
        match self {
            Panel::Participants => "Participants",
            Panel::Chat => "Chat",
            Panel::Settings => "Meeting settings",
            Panel::Stats => "Media statistics",
            Panel::Polls => "Polls",
            Panel::Breakouts => "Breakout rooms",
        }
    }
}

/// The room page's own state (how the person arranged their view).
#[derive(Clone, Copy)]
pub struct RoomUi {
    pub panel: RwSignal<Option<Panel>>,
    /// The active speaker big, the others in a filmstrip.
    pub speaker_view: RwSignal<bool>,
    /// Grid page shown when not everyone fits.
    pub page: RwSignal<u32>,
    /// The newest poll this person has seen in the polls panel or set aside ("Not now"): the
    /// banner offers only newer ones.
    pub poll_seen: RwSignal<u64>,
    /// The control that opened the panel: focus goes back to it when the panel closes.
    opener: StoredValue<Option<web_sys::HtmlElement>, LocalStorage>,
}

impl RoomUi {
    /// Opens panel `p` (focus moves to its heading), or closes it if it is the one open.
    pub fn toggle_panel(&self, p: Panel, opener: Option<web_sys::HtmlElement>) {
        if self.panel.get_untracked() == Some(p) {
            self.close_panel();
            return;
        }
        if opener.is_some() {
            self.opener.set_value(opener);
        }
        self.panel.set(Some(p));
        request_animation_frame(|| {
            if let Some(h) = document()
                .get_element_by_id("panel-title")
                .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok())
            {
                let _ = h.focus();
            }
        });
    }

    /// Closes the panel; focus goes back to the control that opened it, if it is still shown.
    pub fn close_panel(&self) {
        self.panel.set(None);
        if let Some(el) = self.opener.get_value() {
            if el.offset_parent().is_some() {
                let _ = el.focus();
            }
        }
        self.opener.set_value(None);
    }
}

#[component]
pub fn RoomPage() -> impl IntoView {
    let m = use_meeting();
    crate::health::watch(m);
    let ui = RoomUi {
        panel: RwSignal::new(None),
        speaker_view: RwSignal::new(false),
        page: RwSignal::new(0),
        poll_seen: RwSignal::new(0),
        opener: StoredValue::new_local(None),
    };
    // The polls panel open: every poll in it is seen.
    Effect::new(move |_| {
        if ui.panel.get() == Some(Panel::Polls) {
            let newest = m.model.with(|r| r.polls.last().map_or(0, |p| p.id));
            if newest > ui.poll_seen.get_untracked() {
                ui.poll_seen.set(newest);
            }
        }
    });
    // A poll to answer that this person has not seen yet: offered in a banner.
    let new_poll = Memo::new(move |_| {
        let seen = ui.poll_seen.get();
        m.model.with(|r| {
            r.polls
                .iter()
                .rev()
                .find(|p| p.open && !p.voted && p.id > seen)
                .map(|p| (p.id, format!("{} started a poll: {}", p.by, p.question)))
        })
    });
    let status = move || {
        m.model.with(|r| {
            let via = r
                .sfu
                .as_ref()
                .map(|s| format!(" · media via {s}"))
                .unwrap_or_default();
            // In a breakout room: how many are in it, and how many in the meeting.
            match r.scope() {
                0 if r.breakouts.open => format!(
                    "Main room: {} of {}{via}",
                    r.others().len() + 1,
                    r.participants.len()
                ),
                0 => format!("{} in the room{via}", r.participants.len()),
                n => format!(
                    "{}: {} of {}{via}",
                    r.room_name(n),
                    r.others().len() + 1,
                    r.participants.len()
                ),
            }
        })
    };
    // Problems first: on a phone the end of the line is cut off.
    let media = move || match m.media_state.get() {
        Some(PcState::Connected) | None | Some(PcState::Closed) => "",
        Some(PcState::New | PcState::Connecting) => "Connecting media… · ",
        Some(PcState::Disconnected | PcState::Failed) => "Media reconnecting… · ",
    };
    view! {
        <main class="room" class:panel-open=move || ui.panel.get().is_some()>
            <header class="room-bar">
                <h1>{move || m.model.with(|r| r.name.clone())}</h1>
                // A recording is of the main room: in a breakout room, the badge says so.
                <span class="rec-indicator" role="status"
                    title=move || if m.model.with(|r| r.scope()) == 0 { "This meeting is being recorded" } else { "The main room is being recorded; this breakout room is not" }
                    hidden=move || m.model.with(|r| r.recording.is_none())>
                    <span class="dot" aria-hidden="true"></span>
                    {move || if m.model.with(|r| r.scope()) == 0 { "Recording" } else { "Recording the main room" }}
                </span>
                <span class="status" role="status" data-testid="room-status">
                    {move || if m.reconnecting.get() { "Reconnecting… · " } else { "" }}
                    <span data-testid="media-state">{media}</span>
                    {status}
                </span>
            </header>
            <div class="room-body">
                <stage::Stage ui />
                <panels::SidePanel ui />
            </div>
            <div class="ask-unmute" role="alertdialog" aria-labelledby="ask-unmute-text"
                hidden=move || m.unmute_request.get().is_none()>
                <span id="ask-unmute-text">{move || m.unmute_request.get().map(|by| format!("{by} asks you to unmute")).unwrap_or_default()}</span>
                <button type="button" class="primary" on:click=move |_| { m.unmute_request.set(None); m.mic_on.set(true) }>"Unmute"</button>
                <button type="button" on:click=move |_| m.unmute_request.set(None)>"Not now"</button>
            </div>
            <breakouts::BreakoutBanner on_open_panel=Callback::new(move |_| {
                let more = document()
                    .query_selector(".more-button")
                    .ok()
                    .flatten()
                    .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok());
                if ui.panel.get_untracked() != Some(Panel::Breakouts) {
                    ui.toggle_panel(Panel::Breakouts, more)
                }
            }) />
            <div class="poll-banner" role="region" aria-label="New poll"
                hidden=move || new_poll.get().is_none() || ui.panel.get() == Some(Panel::Polls)>
                <span>{move || new_poll.get().map(|p| p.1).unwrap_or_default()}</span>
                <button type="button" class="primary"
                    on:click=move |_| {
                        // Focus returns to "More" (where "Polls" lives) when the panel closes.
                        let more = document()
                            .query_selector(".more-button")
                            .ok()
                            .flatten()
                            .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok());
                        ui.toggle_panel(Panel::Polls, more)
                    }>"Answer the poll"</button>
                <button type="button" on:click=move |_| {
                    if let Some((id, _)) = new_poll.get_untracked() { ui.poll_seen.set(id) }
                }>"Not now"</button>
            </div>
            <controls::ControlBar ui />
            <div class="toasts" role="log" aria-live="polite" data-testid="toasts">
                // The three latest: notices must not bury the stage.
                <For each=move || { let t = m.toasts.get(); t[t.len().saturating_sub(3)..].to_vec() } key=|t| t.0 let:t>
                    <div class="toast">{t.1}</div>
                </For>
            </div>
        </main>
    }
}
