//! edgemeet's browser app (Leptos CSR). Components only move bytes; protocol and validation come
//! from `edgemeet_shared`.

mod call;
mod media;
mod prejoin;
mod stage;

use leptos::prelude::*;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// `/` and `/<room>` both open the pre-join screen; the path names the room.
#[component]
fn App() -> impl IntoView {
    let path = window().location().pathname().unwrap_or_default();
    let room = path
        .trim_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    view! { <prejoin::PreJoin initial_room=room /> }
}
