//! The waiting room: joined, not let in yet. No media, no participant list, no chat — only the
//! words and a way out. A host letting them in moves them to the room without a reload.

use leptos::prelude::*;

use crate::meeting::use_meeting;

#[component]
pub fn WaitingPage() -> impl IntoView {
    let m = use_meeting();
    let room = move || m.model.with(|r| r.waiting_in.clone().unwrap_or_default());
    view! {
        <main class="waiting">
            <section class="waiting-card" aria-labelledby="waiting-title">
                <h1 id="waiting-title">"Waiting for the host to let you in"</h1>
                <p class="status" role="status" data-testid="waiting-status">
                    {move || format!("You asked to join {}. A host or co-host will let you in.", room())}
                    {move || if m.reconnecting.get() { " Reconnecting…" } else { "" }}
                </p>
                <button type="button" class="leave" on:click=move |_| m.leave()>"Leave"</button>
            </section>
        </main>
    }
}
