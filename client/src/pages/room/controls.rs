//! The control bar: microphone, camera, leave, and the secondary actions (share screen, speaker
//! view, participants, statistics). On narrow screens the secondary actions move into a "More" menu
//! so the bar always fits.
//!
//! Every control is a real button whose accessible name is the action it performs; on narrow
//! screens the visible label is a shorter part of that same name.

use leptos::prelude::*;

use super::{Panel, RoomUi};
use crate::meeting::use_meeting;

/// A button labelled by what pressing it does. `short` is the part of `label` still shown on
/// narrow screens (the rest is hidden there; the accessible name stays whole).
#[component]
fn ActionButton(
    #[prop(into)] label: Signal<&'static str>,
    #[prop(into)] short: Signal<&'static str>,
    #[prop(optional, into)] pressed: Option<Signal<bool>>,
    #[prop(optional, into)] expanded: Option<Signal<bool>>,
    #[prop(optional)] class: &'static str,
    #[prop(optional)] shortcut: &'static str,
    #[prop(optional)] testid: &'static str,
    // A callback, not a generic closure: one copy of this component in the bundle, not one per use.
    #[prop(into)] on_press: Callback<()>,
) -> impl IntoView {
    let parts = move || {
        let (l, s) = (label.get(), short.get());
        match l.to_lowercase().find(&s.to_lowercase()) {
            Some(i) => (&l[..i], &l[i..i + s.len()], &l[i + s.len()..]),
            None => ("", l, ""),
        }
    };
    view! {
        <button type="button" class=class aria-label=move || label.get()
            aria-pressed=move || pressed.map(|p| p.get().to_string())
            aria-expanded=move || expanded.map(|e| e.get().to_string())
            aria-keyshortcuts=(!shortcut.is_empty()).then_some(shortcut)
            title=move || if shortcut.is_empty() { label.get().to_string() } else {
                format!("{} ({})", label.get(), shortcut.replace("Control", "Ctrl"))
            }
            data-testid=(!testid.is_empty()).then_some(testid)
            on:click=move |_| on_press.run(())>
            <span class="long">{move || parts().0}</span>
            <span class="short">{move || parts().1}</span>
            <span class="long">{move || parts().2}</span>
        </button>
    }
}

#[component]
pub fn MicButton() -> impl IntoView {
    let m = use_meeting();
    let on = m.mic_on;
    view! {
        <ActionButton class="toggle" pressed=Signal::derive(move || !on.get())
            label=Signal::derive(move || if on.get() { "Mute microphone" } else { "Unmute microphone" })
            short=Signal::derive(move || if on.get() { "Mute" } else { "Unmute" })
            shortcut="Control+D" on_press=move || on.update(|v| *v = !*v) />
    }
}

#[component]
pub fn CameraButton() -> impl IntoView {
    let m = use_meeting();
    let on = m.cam_on;
    view! {
        <ActionButton class="toggle" pressed=Signal::derive(move || !on.get())
            label=Signal::derive(move || if on.get() { "Turn camera off" } else { "Turn camera on" })
            short=Signal::derive(move || if on.get() { "Camera off" } else { "Camera on" })
            shortcut="Control+E" on_press=move || on.update(|v| *v = !*v) />
    }
}

/// The call's control bar.
#[component]
pub fn ControlBar(ui: RoomUi) -> impl IntoView {
    let m = use_meeting();
    let (more_open, set_more_open) = signal(false);
    let share_label = Signal::derive(move || {
        if m.sharing.get() {
            "Stop sharing"
        } else {
            "Share screen"
        }
    });
    let view_label = Signal::derive(move || {
        if ui.speaker_view.get() {
            "Grid view"
        } else {
            "Speaker view"
        }
    });
    let toggle_share = move || {
        if m.sharing.get_untracked() {
            m.stop_sharing()
        } else {
            m.start_sharing()
        }
    };
    let toggle_view = move || ui.speaker_view.update(|v| *v = !*v);
    let toggle_panel = move |p: Panel| {
        ui.panel
            .update(|open| *open = if *open == Some(p) { None } else { Some(p) })
    };
    let is_open = move |p: Panel| Signal::derive(move || ui.panel.get() == Some(p));
    // The menu closes after a choice, on Escape, and when focus leaves it.
    let choose = move |f: Box<dyn Fn()>| {
        move |_| {
            f();
            set_more_open.set(false);
        }
    };
    view! {
        <nav class="controls" aria-label="Call controls">
            <MicButton />
            <CameraButton />
            <ActionButton class="secondary" label=share_label short=share_label
                pressed=Signal::derive(move || m.sharing.get()) on_press=toggle_share />
            <ActionButton class="secondary" label=view_label short=view_label on_press=toggle_view />
            <ActionButton class="secondary" label="Participants" short="Participants"
                expanded=is_open(Panel::Participants) on_press=move || toggle_panel(Panel::Participants) />
            <ActionButton class="secondary" label="Stats" short="Stats"
                expanded=is_open(Panel::Stats) on_press=move || toggle_panel(Panel::Stats) />
            <div class="more" on:keydown=move |ev| if ev.key() == "Escape" { set_more_open.set(false) }>
                <button type="button" class="more-button" aria-haspopup="menu" aria-controls="more-menu"
                    aria-expanded=move || more_open.get().to_string()
                    on:click=move |_| set_more_open.update(|v| *v = !*v)>"More"</button>
                <div id="more-menu" role="menu" aria-label="More actions" class="menu" hidden=move || !more_open.get()>
                    <button type="button" role="menuitem" on:click=choose(Box::new(toggle_share))>{share_label}</button>
                    <button type="button" role="menuitem" on:click=choose(Box::new(toggle_view))>{view_label}</button>
                    <button type="button" role="menuitem" on:click=choose(Box::new(move || toggle_panel(Panel::Participants)))>"Participants"</button>
                    <button type="button" role="menuitem" on:click=choose(Box::new(move || toggle_panel(Panel::Stats)))>"Stats"</button>
                </div>
            </div>
            <ActionButton class="leave" label="Leave" short="Leave" on_press=move || m.leave() />
        </nav>
    }
}
