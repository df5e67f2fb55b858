//! The meeting's settings, for hosts and co-hosts: who gets in (waiting room, lock, password), what
//! participants may do (share a screen, unmute themselves, chat, react), muting everyone, and —
//! for the host — whether co-hosts may record, and ending the meeting for all.

use edgemeet_shared::protocol::{ClientMessage, RoomSettings};
use edgemeet_shared::token::Role;
use leptos::prelude::*;

use crate::meeting::use_meeting;

#[component]
pub fn SettingsPanel() -> impl IntoView {
    let m = use_meeting();
    let host = move || m.model.with(|r| r.me.is_some() && r.host == r.me);
    let moderator = move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .any(|p| r.is_me(&p.id) && matches!(p.role, Role::Host | Role::Cohost))
        })
    };
    let settings = move || m.model.with(|r| r.settings.clone());
    let change = move |f: fn(&mut RoomSettings, bool)| {
        move |ev: leptos::ev::Event| {
            let mut s = settings();
            f(&mut s, event_target_checked(&ev));
            m.send(&ClientMessage::UpdateSettings { settings: s });
        }
    };
    let (password, set_password) = signal(String::new());
    let (lock_mute, set_lock_mute) = signal(false);
    let check =
        |label: &'static str, get: fn(&RoomSettings) -> bool, set: fn(&mut RoomSettings, bool)| {
            view! {
                <label class="check">
                    <input type="checkbox" disabled=move || !moderator()
                        prop:checked=move || get(&settings()) on:change=change(set) />
                    {label}
                </label>
            }
        };
    let end = move |_| {
        let ok = window()
            .confirm_with_message(
                "End the meeting for everyone? Everyone leaves, and the chat is gone.",
            )
            .unwrap_or(false);
        if ok {
            m.send(&ClientMessage::EndMeeting {});
        }
    };
    view! {
        <p class="hint" hidden=moderator>"Only hosts and co-hosts can change these."</p>
        <fieldset class="setting">
            <legend>"Who gets in"</legend>
            {check("Waiting room: a host lets each person in", |s| s.waiting_room, |s, v| s.waiting_room = v)}
            {check("Lock the meeting: nobody new gets in", |s| s.locked, |s, v| s.locked = v)}
            {check("The right password skips the waiting room", |s| s.password_skips_waiting, |s, v| s.password_skips_waiting = v)}
            <div class="password" hidden=move || !moderator()>
                <label>{move || if settings().has_password { "New password" } else { "Password" }}
                    <input type="password" autocomplete="new-password" maxlength="128"
                        prop:value=password on:input=move |ev| set_password.set(event_target_value(&ev)) />
                </label>
                <div class="row">
                    <button type="button" disabled=move || password.get().is_empty()
                        on:click=move |_| {
                            m.send(&ClientMessage::SetPassword { password: Some(password.get_untracked()) });
                            set_password.set(String::new());
                        }>"Set password"</button>
                    <button type="button" hidden=move || !settings().has_password
                        on:click=move |_| m.send(&ClientMessage::SetPassword { password: None })>"Remove password"</button>
                </div>
                <p class="hint">{move || if settings().has_password { "This meeting has a password." } else { "This meeting has no password." }}</p>
            </div>
        </fieldset>
        <fieldset class="setting">
            <legend>"Participants may"</legend>
            {check("Share their screen", |s| s.may_share_screen, |s, v| s.may_share_screen = v)}
            {check("Unmute themselves", |s| s.may_unmute, |s, v| s.may_unmute = v)}
            {check("Chat", |s| s.may_chat, |s, v| s.may_chat = v)}
            {check("React", |s| s.may_react, |s, v| s.may_react = v)}
            <label class="check">
                <input type="checkbox" data-testid="many-sharers" disabled=move || !moderator()
                    prop:checked=move || m.model.with(|r| r.max_screen_sharers > 1)
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        m.send(&ClientMessage::SetRoomOptions { max_screen_sharers: if on { 4 } else { 1 } });
                    } />
                "Up to 4 people may share a screen at once"
            </label>
        </fieldset>
        <fieldset class="setting" disabled=move || !moderator()>
            <legend>"Everyone's microphones"</legend>
            <label class="check">
                <input type="checkbox" prop:checked=lock_mute on:change=move |ev| set_lock_mute.set(event_target_checked(&ev)) />
                "and don't let them unmute themselves"
            </label>
            <button type="button" on:click=move |_| m.send(&ClientMessage::MuteAll { lock: lock_mute.get_untracked() })>"Mute everyone"</button>
        </fieldset>
        <fieldset class="setting">
            <legend>"Recording"</legend>
            <label class="check">
                <input type="checkbox" disabled=move || !host()
                    prop:checked=move || settings().cohosts_may_record
                    on:change=change(|s, v| s.cohosts_may_record = v) />
                "Co-hosts may start and stop a recording"
            </label>
            <p class="hint" hidden=host>"Only the host changes this."</p>
        </fieldset>
        <fieldset class="setting" hidden=move || !host()>
            <legend>"End the meeting"</legend>
            <button type="button" class="danger" on:click=end>"End meeting for all"</button>
        </fieldset>
    }
}
