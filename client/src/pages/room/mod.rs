//! The room page, by region: the header (room name and status), the stage (tiles), the side panel
//! (participants, statistics; beside the stage on wide screens, a sheet over it on narrow ones),
//! the control bar, and notices.

pub mod controls;
mod panels;
mod stage;

use edgemeet_shared::session::PcState;
use leptos::prelude::*;

use crate::meeting::use_meeting;

/// The side panels (one open at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Participants,
    Stats,
}

impl Panel {
    pub fn title(self) -> &'static str {
        match self {
            Panel::Participants => "Participants",
            Panel::Stats => "Media statistics",
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
}

#[component]
pub fn RoomPage() -> impl IntoView {
    let m = use_meeting();
    let ui = RoomUi {
        panel: RwSignal::new(None),
        speaker_view: RwSignal::new(false),
        page: RwSignal::new(0),
    };
    let status = move || {
        m.model.with(|r| {
            let via = r
                .sfu
                .as_ref()
                .map(|s| format!(" · media via {s}"))
                .unwrap_or_default();
            format!("{} in the room{via}", r.participants.len())
        })
    };
    let media = move || match m.media_state.get() {
        Some(PcState::Connected) | None | Some(PcState::Closed) => "",
        Some(PcState::New | PcState::Connecting) => " · Connecting media…",
        Some(PcState::Disconnected | PcState::Failed) => " · Media reconnecting…",
    };
    view! {
        <main class="room" class:panel-open=move || ui.panel.get().is_some()>
            <header class="room-bar">
                <h1>{move || m.model.with(|r| r.name.clone())}</h1>
                <span class="status" role="status" data-testid="room-status">
                    {status}
                    {move || if m.reconnecting.get() { " · Reconnecting…" } else { "" }}
                    <span data-testid="media-state">{media}</span>
                </span>
            </header>
            <div class="room-body">
                <stage::Stage ui />
                <panels::SidePanel ui />
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
