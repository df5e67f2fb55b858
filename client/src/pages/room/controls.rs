//! The control bar: microphone, camera, leave, and the secondary actions (share screen, speaker
//! view, participants, statistics). On narrow screens the secondary actions move under "More" (a
//! disclosure: a button that shows a list of buttons) so the bar always fits.
//!
//! Every control is a real button whose accessible name is the action it performs (a toggle's name
//! changes rather than the button being marked pressed); on narrow screens the visible label is a
//! shorter part of that same name.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use edgemeet_shared::protocol::{ClientMessage, REACTIONS};
use edgemeet_shared::token::Role;

use super::{Panel, RoomUi};
use crate::meeting::use_meeting;

/// A button labelled by what pressing it does. `short` is the part of `label` still shown on
/// narrow screens (the rest is hidden there; the accessible name stays whole).
#[component]
fn ActionButton(
    #[prop(into)] label: Signal<String>,
    #[prop(into)] short: Signal<String>,
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
            Some(i) if l.is_char_boundary(i) && l.is_char_boundary(i + s.len()) => (
                l[..i].to_string(),
                l[i..i + s.len()].to_string(),
                l[i + s.len()..].to_string(),
            ),
            _ => (String::new(), l, String::new()),
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
            label=Signal::derive(move || if on.get() { "Mute microphone" } else { "Unmute microphone" }.to_string())
            short=Signal::derive(move || if on.get() { "Mute" } else { "Unmute" }.to_string())
            shortcut="Control+D" on_press=move || on.update(|v| *v = !*v) />
    }
}

#[component]
pub fn CameraButton() -> impl IntoView {
    let m = use_meeting();
    let on = m.cam_on;
    view! {
        <ActionButton class="toggle" off=Signal::derive(move || !on.get())
            label=Signal::derive(move || if on.get() { "Turn camera off" } else { "Turn camera on" }.to_string())
            short=Signal::derive(move || if on.get() { "Camera off" } else { "Camera on" }.to_string())
            shortcut="Control+E" on_press=move || on.update(|v| *v = !*v) />
    }
}

/// The call's control bar. Always in it: microphone, camera, More and Leave. On wide screens also
/// share screen, raise hand, react, chat and participants; the rest (speaker view, statistics,
/// the meeting's settings for hosts) is under "More", and on narrow screens so is everything else.
#[component]
pub fn ControlBar(ui: RoomUi) -> impl IntoView {
    let m = use_meeting();
    let (more_open, set_more_open) = signal(false);
    let (react_open, set_react_open) = signal(false);
    let more_button = NodeRef::<leptos::html::Button>::new();
    let share_label = Signal::derive(move || {
        if m.sharing.get() {
            "Stop sharing"
        } else {
            "Share screen"
        }
        .to_string()
    });
    let view_label = Signal::derive(move || {
        if ui.speaker_view.get() {
            "Grid view"
        } else {
            "Speaker view"
        }
        .to_string()
    });
    let my_hand = Signal::derive(move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .any(|p| r.is_me(&p.id) && p.hand.is_some())
        })
    });
    let hand_label = Signal::derive(move || {
        if my_hand.get() {
            "Lower hand"
        } else {
            "Raise hand"
        }
        .to_string()
    });
    let breakouts_open = Memo::new(move |_| m.model.with(|r| r.breakouts.open));
    let recording = Memo::new(move |_| m.model.with(|r| r.recording.is_some()));
    let may_record = Memo::new(move |_| m.model.with(|r| r.may_record()));
    let moderator = Signal::derive(move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .any(|p| r.is_me(&p.id) && matches!(p.role, Role::Host | Role::Cohost))
        })
    });
    let unread = Signal::derive(move || {
        let seen = m.chat_seen.get();
        m.model.with(|r| {
            r.chat
                .iter()
                .filter(|c| c.id > seen && !r.is_me(&c.from))
                .count()
        })
    });
    let chat_label = Signal::derive(move || match unread.get() {
        0 => "Chat".to_string(),
        n => format!("Chat ({n} new)"),
    });
    let polls_label =
        Signal::derive(
            move || match m.model.with(|r| super::polls::unanswered(&r.polls)) {
                0 => "Polls".to_string(),
                n => format!("Polls ({n} to answer)"),
            },
        );
    let waiting = Signal::derive(move || m.model.with(|r| r.waiting.len()));
    let people_label = Signal::derive(move || match (moderator.get(), waiting.get()) {
        (true, n) if n > 0 => format!("Participants ({n} waiting)"),
        _ => "Participants".to_string(),
    });
    let toggle_share = move || {
        if m.sharing.get_untracked() {
            m.stop_sharing()
        } else {
            m.start_sharing()
        }
    };
    let toggle_view = move || ui.speaker_view.update(|v| *v = !*v);
    let toggle_hand = move || {
        m.send(&ClientMessage::Hand {
            raised: !my_hand.get_untracked(),
        })
    };
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
    let react = move |emoji: &'static str| {
        m.send(&ClientMessage::React {
            emoji: emoji.to_string(),
        });
        set_react_open.set(false);
    };
    view! {
        <nav class="controls" aria-label="Call controls">
            <MicButton />
            <CameraButton />
            <ActionButton class="secondary" label=share_label short=share_label on_press=toggle_share />
            <ActionButton class="secondary" label=hand_label short=hand_label on_press=toggle_hand />
            <div class="react secondary"
                on:keydown=move |ev| if ev.key() == "Escape" { set_react_open.set(false) }>
                <button type="button" aria-controls="reactions" aria-expanded=move || react_open.get().to_string()
                    on:click=move |_| set_react_open.update(|v| *v = !*v)>"React"</button>
                <div id="reactions" class="menu reactions" hidden=move || !react_open.get()>
                    {REACTIONS.iter().map(|e| view! {
                        <button type="button" aria-label=format!("React {e}") on:click=move |_| react(e)>{*e}</button>
                    }).collect_view()}
                </div>
            </div>
            <ActionButton class="secondary" label=chat_label short=chat_label
                expanded=is_open(Panel::Chat) on_press=move || ui.toggle_panel(Panel::Chat, focused()) />
            <ActionButton class="secondary" label=people_label short=people_label
                expanded=is_open(Panel::Participants) on_press=move || ui.toggle_panel(Panel::Participants, focused()) />
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
                    <button type="button" class="narrow-only" on:click=move |_| { close_more(true); toggle_share() }>{share_label}</button>
                    <button type="button" class="narrow-only" on:click=move |_| { close_more(true); toggle_hand() }>{hand_label}</button>
                    <button type="button" class="narrow-only" aria-expanded=move || is_open(Panel::Chat).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Chat)>{chat_label}</button>
                    <button type="button" class="narrow-only" aria-expanded=move || is_open(Panel::Participants).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Participants)>{people_label}</button>
                    <div class="narrow-only reaction-row" role="group" aria-label="Reactions">
                        {REACTIONS.iter().map(|e| view! {
                            <button type="button" aria-label=format!("React {e}") on:click=move |_| { close_more(true); react(e) }>{*e}</button>
                        }).collect_view()}
                    </div>
                    <button type="button" aria-expanded=move || is_open(Panel::Polls).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Polls)>{polls_label}</button>
                    <button type="button" hidden=move || !moderator.get() && !breakouts_open.get()
                        aria-expanded=move || is_open(Panel::Breakouts).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Breakouts)>"Breakout rooms"</button>
                    <button type="button" hidden=move || !may_record.get()
                        on:click=move |_| {
                            close_more(true);
                            m.send(&ClientMessage::SetRecording { on: !recording.get_untracked() })
                        }>{move || if recording.get() { "Stop recording" } else { "Record" }}</button>
                    <button type="button" on:click=move |_| { close_more(true); toggle_view() }>{view_label}</button>
                    <button type="button" aria-expanded=move || is_open(Panel::Stats).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Stats)>"Stats"</button>
                    <button type="button" hidden=move || !moderator.get() aria-expanded=move || is_open(Panel::Settings).get().to_string()
                        on:click=move |_| panel_from_more(Panel::Settings)>"Meeting settings"</button>
                </div>
            </div>
            <ActionButton class="leave" label="Leave".to_string() short="Leave".to_string() on_press=move || m.leave() />
        </nav>
    }
}

/// The element that has focus (the control opening something), to give focus back to later.
fn focused() -> Option<web_sys::HtmlElement> {
    document()
        .active_element()
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
}
