//! The chat panel: the conversation so far (the room sends its history to every joiner), a box to
//! write in, and whom to send to (everyone, or one person privately). Messages are shown as text
//! — never as HTML — with web addresses as links that open in a new tab.

use edgemeet_shared::protocol::{ChatMessage, ClientMessage, MAX_CHAT_CHARS};
use edgemeet_shared::session::SessionInput;
use edgemeet_shared::token::Role;
use leptos::prelude::*;

use crate::meeting::use_meeting;

/// A chat message's text: plain text, with `http(s)://` addresses as links.
fn text_with_links(text: &str) -> impl IntoView {
    let mut parts = Vec::new();
    let mut rest = String::new();
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            rest.push(' ');
        }
        let url = (word.starts_with("https://") || word.starts_with("http://")) && word.len() > 8;
        if url {
            parts.push(view! { <span>{std::mem::take(&mut rest)}</span> }.into_any());
            parts.push(
                view! { <a href=word.to_string() target="_blank" rel="noopener noreferrer">{word.to_string()}</a> }
                    .into_any(),
            );
        } else {
            rest.push_str(word);
        }
    }
    parts.push(view! { <span>{rest}</span> }.into_any());
    parts
}

fn time_of(ms: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    format!("{:02}:{:02}", d.get_hours(), d.get_minutes())
}

#[component]
pub fn ChatPanel() -> impl IntoView {
    let m = use_meeting();
    let (text, set_text) = signal(String::new());
    let (to, set_to) = signal(String::new());
    let box_ref = NodeRef::<leptos::html::Textarea>::new();
    // Open: everything here is seen.
    Effect::new(move |_| {
        let newest = m.model.with(|r| r.chat.last().map(|c| c.id).unwrap_or(0));
        if newest > m.chat_seen.get_untracked() {
            m.chat_seen.set(newest);
        }
    });
    let moderator = move || {
        m.model.with(|r| {
            r.participants
                .iter()
                .any(|p| r.is_me(&p.id) && matches!(p.role, Role::Host | Role::Cohost))
        })
    };
    let name_of = move |id: &str| {
        m.model.with(|r| {
            r.participants
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| "someone who left".into())
        })
    };
    let send = move || {
        let t = text.get_untracked();
        if t.trim().is_empty() {
            return;
        }
        let client_id = format!(
            "{:x}{:x}",
            js_sys::Date::now() as u64,
            (js_sys::Math::random() * 1e12) as u64
        );
        let to = Some(to.get_untracked()).filter(|t| !t.is_empty());
        // Through the session: kept until the room has it, sent again after a reconnect.
        m.feed(SessionInput::Chat {
            text: t,
            to,
            client_id,
        });
        set_text.set(String::new());
        if let Some(b) = box_ref.get_untracked() {
            let _ = b.focus();
        }
    };
    let line = move |c: ChatMessage| {
        if c.notice {
            // From the meeting itself (a recording started or stopped): no sender, no delete.
            return view! {
                <li class="chat-line notice" data-testid="chat-message">
                    <span class="meta"><time>{time_of(c.at)}</time></span>
                    <span class="text">{c.text.clone()}</span>
                </li>
            }
            .into_any();
        }
        let mine = m.model.with_untracked(|r| r.is_me(&c.from));
        let private = c.to.as_ref().map(|t| {
            if mine {
                format!(" (privately to {})", name_of(t))
            } else {
                " (privately to you)".to_string()
            }
        });
        let id = c.id;
        let from = c.name.clone();
        let is_private = private.is_some();
        view! {
            <li class="chat-line" class:private=is_private data-testid="chat-message">
                <span class="meta">
                    <span class="from">{if mine { "You".to_string() } else { c.name.clone() }}</span>
                    {private.unwrap_or_default()}
                    <time>{time_of(c.at)}</time>
                </span>
                <span class="text">{text_with_links(&c.text)}</span>
                <button type="button" class="link" hidden=move || !moderator()
                    aria-label=format!("Delete the message from {from}")
                    on:click=move |_| m.send(&ClientMessage::DeleteChat { id })>"Delete"</button>
            </li>
        }
        .into_any()
    };
    // The newest message in view: the conversation scrolls to its end whenever it grows.
    let log_ref = NodeRef::<leptos::html::Ol>::new();
    Effect::new(move |_| {
        m.model.with(|r| r.chat.len());
        if let Some(log) = log_ref.get() {
            log.set_scroll_top(log.scroll_height());
        }
    });
    view! {
        <div class="chat">
            <ol class="chat-log" node_ref=log_ref role="log" aria-live="polite" aria-label="Messages">
                <For each=move || m.model.with(|r| r.chat.clone()) key=|c| c.id let:c>
                    {line(c)}
                </For>
            </ol>
            <p class="hint" hidden=move || !m.model.with(|r| r.chat.is_empty())>"No messages yet."</p>
            <form class="chat-form" on:submit=move |ev| { ev.prevent_default(); send() }>
                <label>"To"
                    <select prop:value=to on:change=move |ev| set_to.set(event_target_value(&ev))>
                        <option value="">"Everyone"</option>
                        <For each=move || m.model.with(|r| r.everyone_else()) key=|p| p.id.clone() let:p>
                            <option value=p.id.clone()>{format!("{} (privately)", p.name)}</option>
                        </For>
                    </select>
                </label>
                <label>"Message"
                    <textarea node_ref=box_ref rows="2" maxlength=MAX_CHAT_CHARS.to_string()
                        prop:value=text on:input=move |ev| set_text.set(event_target_value(&ev))
                        on:keydown=move |ev| if ev.key() == "Enter" && !ev.shift_key() {
                            ev.prevent_default();
                            send();
                        }></textarea>
                </label>
                <button type="submit" class="primary">"Send"</button>
            </form>
        </div>
    }
}
