//! edgemeet's browser app (Leptos CSR). Components only move bytes: the session's decisions are
//! `edgemeet_shared::session`, the room model `edgemeet_shared::client_room`, tile geometry
//! `edgemeet_shared::layout` — all unit-tested natively.
//!
//! - `meeting`: the meeting's shared state (context) and the shell around the session core
//! - `pages::prejoin`, `pages::room` (stage, controls, panels): the two screens; `pages::account`
//!   (`/account`): sign in, create an account, manage it; `pages::meetings` (`/meetings`):
//!   schedule, list, change, cancel meetings; `pages::recordings` (`/recordings`): list, play back,
//!   download and delete recordings
//! - `call`: the RTCPeerConnection; `media`: capture; `views`: tile sizes for the SFU

mod call;
mod health;
mod media;
mod meeting;
mod netcheck;
mod pages;
mod views;

use leptos::prelude::*;

use meeting::{Meeting, Screen};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// One URL per meeting (`/<room>`), as in other meeting apps: the pre-join page and the room are
/// two screens of it, switched by the session (joined, left, refused), not by the address.
#[component]
fn App() -> impl IntoView {
    let path = window().location().pathname().unwrap_or_default();
    let room = path
        .trim_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    // `/account` is the account page ("account" is not a room name: see normalize_room_name).
    if room == "account" {
        return view! { <pages::account::AccountPage /> }.into_any();
    }
    if room == "meetings" {
        return view! { <pages::meetings::MeetingsPage /> }.into_any();
    }
    if room == "recordings" {
        return view! { <pages::recordings::RecordingsPage /> }.into_any();
    }
    let meeting = Meeting::new();
    provide_context(meeting);
    let screen = Memo::new(move |_| meeting.screen.get());
    (move || match screen.get() {
        Screen::Room => view! { <pages::room::RoomPage /> }.into_any(),
        Screen::Waiting => view! { <pages::waiting::WaitingPage /> }.into_any(),
        Screen::PreJoin => {
            view! { <pages::prejoin::PreJoin initial_room=room.clone() /> }.into_any()
        }
    })
    .into_any()
}
