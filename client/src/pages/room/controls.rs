//! The control bar: microphone, camera, leave, and the secondary actions (share screen, speaker
//! view, participants, statistics). On narrow screens the secondary actions move under "More" (a
//! disclosure: a button that shows a list of buttons) so the bar always fits.
//!
//! Every control is a real button whose accessible name is the action it performs (a toggle's name
//! changes rather than the button being marked pressed); on narrow screens the visible label is a
//! shorter part of that same name.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::{Panel, RoomUi};
use crate::meeting::use_meeting;

/// A button labelled by what pressing it does. `short` is the part of `label` still shown on
/// narrow screens (the rest is hidden there; the accessible name stays whole).
#[component]
fn ActionButton(
    #[prop(into)] label: Signal<&'static str>,
    #[prop(into)] short: Signal<&'static str>,
    /// Drawn as "off" (a muted microphone, a camera turned off).
    #[prop(optional, into)]
    off: Option<Signal<bool>>,
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
            class:off=move || off.is_some_and(|o| o.get())
            aria-expanded=move || expanded.map(|e| e.get().to_string())
            aria-controls=expanded.map(|_| "side-panel")
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
        <ActionButton class="toggle" off=Signal::derive(move || !on.get())
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
        <ActionButton class="toggle" off=Signal::derive(move || !on.get())
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
    let more_button = NodeRef::<leptos::html::Button>::new();
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
    let is_open = move |p: Panel| Signal::derive(move || ui.panel.get() == Some(p));
    // Closing the list returns focus to "More" (the button chosen in it is hidden with it).
    let close_more = move |refocus: bool| {
        set_more_open.set(false);
        if refocus {
            if let Some(b) = more_button.get_untracked() {
                let _ = b.focus();
            }
        }
    };
    // A panel opened from the list gives focus back to "More" when it closes.
    let panel_from_more = move |p: Panel| {
        set_more_open.set(false);
        let opener = more_button
            .get_untracked()
            .map(|b| -> web_sys::HtmlElement { b.into() });
        ui.toggle_panel(p, opener);
    };
    view! {
        <nav class="controls" aria-label="Call controls">
            <MicButton />
            <CameraButton />
            <ActionButton class="secondary" label=share_label short=share_label on_press=toggle_share />
            <ActionButton class="secondary" label=view_label short=view_label on_press=toggle_view />
            <ActionButton class="secondary" label="Participants" short="Participants"
                expanded=is_open(Panel::Participants) on_press=move || ui.toggle_panel(Panel::Participants, focused()) />
            <ActionButton class="secondary" label="Stats" short="Stats"
                expanded=is_open(Panel::Stats) on_press=move || ui.toggle_panel(Panel::Stats, focused()) />
            <div class="more"
                on:keydown=move |ev| if ev.key() == "Escape" && more_open.get_untracked() { close_more(true) }
                on:focusout=move |ev| {
                    // Focus left both the list and its button: close it.
                    let node = |t: Option<web_sys::EventTarget>| t.and_then(|t| t.dyn_into::<web_sys::Node>().ok());
                    let inside = node(ev.related_target())
                        .zip(node(ev.current_target()))
                        .is_some_and(|(t, me)| me.contains(Some(&t)));
                    if !inside { close_more(false) }
                }>
                <button type="button" class="more-button" node_ref=more_button aria-controls="more-actions"
                    aria-expanded=move || more_open.get().to_string()
                    on:click=move |_| set_more_open.update(|v| *v = !*v)>"More"</button>
                <div id="more-actions" class="menu" hidden=move || !more_open.get()>
                    <button type="button" on:click=move |_| { close_more(true); toggle_share() }>{share_label}</button>
                    <button type="button" on:click=move |_| { close_more(true); toggle_view() }>{view_label}</button>
                    <button type="button" aria-expanded=move || is_open(Panel::Participants).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Participants)>"Participants"</button>
                    <button type="button" aria-expanded=move || is_open(Panel::Stats).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Stats)>"Stats"</button>
                </div>
            </div>
            <ActionButton class="leave" label="Leave" short="Leave" on_press=move || m.leave() />
        </nav>
    }
}

/// The element that has focus (the control opening something), to give focus back to later.
fn focused() -> Option<web_sys::HtmlElement> {
    document()
        .active_element()
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
}
