//! The breakout rooms panel and banners. Hosts and co-hosts name rooms, put people in them (a
//! picker per person, or "Assign automatically"), let people choose, open the rooms with an
//! optional timer, message every room, visit any room, and close them all with a countdown.
//! Everyone else sees where they are and, when allowed, picks a room. The room core decides all of
//! it (`shared::room::breakout`); every change here is one message — one edit of the plan as the
//! room has it (`BreakoutEdit`), so quick changes in a row all count — and what is shown is what
//! the room sent back.

use edgemeet_shared::protocol::{BreakoutEdit, ClientMessage, MAX_BREAKOUT_NAME_CHARS};
use edgemeet_shared::token::Role;
use leptos::prelude::*;

use crate::meeting::use_meeting;

/// Whether this person hosts or co-hosts.
fn is_moderator() -> Memo<bool> {
    let m = use_meeting();
    Memo::new(move |_| {
        m.model.with(|r| {
            r.participants
                .iter()
                .any(|p| r.is_me(&p.id) && matches!(p.role, Role::Host | Role::Cohost))
        })
    })
}

/// A ticking clock (ms since the epoch), once a second, for the countdowns.
pub fn clock() -> ReadSignal<u64> {
    let (now, set_now) = signal(js_sys::Date::now() as u64);
    let handle = set_interval_with_handle(
        move || {
            let _ = set_now.try_set(js_sys::Date::now() as u64);
        },
        std::time::Duration::from_secs(1),
    );
    if let Ok(h) = handle {
        on_cleanup(move || h.clear());
    }
    now
}

/// "4:05", "0:09".
fn mm_ss(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    format!("{}:{:02}", s / 60, s % 60)
}

/// One change to the plan, sent to the room (which applies it to the plan as it has it).
fn edit(edit: BreakoutEdit) {
    use_meeting().send(&ClientMessage::EditBreakouts { edit });
}

#[component]
pub fn BreakoutsPanel() -> impl IntoView {
    let moderator = is_moderator();
    view! {
        <div class="breakouts">
            <Show when=move || moderator.get() fallback=|| view! { <Attendee /> }>
                <Planner />
            </Show>
        </div>
    }
}

/// What a participant sees: where they are, the rooms and who is in each, and "Join" when they
/// may pick one.
#[component]
fn Attendee() -> impl IntoView {
    let m = use_meeting();
    let b = Memo::new(move |_| m.model.with(|r| r.breakouts.clone()));
    let here = Memo::new(move |_| m.model.with(|r| r.scope()));
    // The room a host gave me, if any.
    let given = Memo::new(move |_| {
        m.model.with(|r| {
            r.me.as_ref()
                .and_then(|me| r.breakouts.assigned.get(me).copied())
        })
    });
    view! {
        <p class="hint">{move || {
            let b = b.get();
            if !b.open {
                "Breakout rooms are not open.".to_string()
            } else if b.let_choose {
                "Breakout rooms are open: pick one, or stay in the main room.".to_string()
            } else {
                "Breakout rooms are open. The host puts people in them.".to_string()
            }
        }}</p>
        <RoomList can_join=Signal::derive(move || b.get().open && b.get().let_choose) />
        <button type="button" hidden=move || !b.get().open || given.get().is_none_or(|n| n == here.get())
            on:click=move |_| if let Some(room) = given.get_untracked() { m.send(&ClientMessage::JoinBreakout { room }) }>
            {move || format!("Back to {}", given.get().map(|n| m.model.with(|r| r.room_name(n))).unwrap_or_default())}
        </button>
        <button type="button" hidden=move || here.get() == 0
            on:click=move |_| m.send(&ClientMessage::JoinBreakout { room: 0 })>"Return to the main room"</button>
    }
}

/// The rooms, who is in each now, and (when `can_join`) a "Join" button per room.
#[component]
fn RoomList(can_join: Signal<bool>) -> impl IntoView {
    let m = use_meeting();
    let rooms = Memo::new(move |_| m.model.with(|r| r.breakouts.rooms.clone()));
    let numbered = move || {
        rooms
            .get()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n))
            .collect::<Vec<_>>()
    };
    view! {
        <ul class="breakout-rooms" aria-label="Breakout rooms">
            <For each=numbered key=|(n, name)| (*n, name.clone()) let:((n, name))>
                {
                    let name = StoredValue::new(name);
                    let people = move || m.model.with(|r| {
                        let names: Vec<String> = r.participants.iter().filter(|p| p.scope == n).map(|p| p.name.clone()).collect();
                        if names.is_empty() { "Nobody yet".to_string() } else { names.join(", ") }
                    });
                    let mine = move || m.model.with(|r| r.scope() == n);
                    view! {
                        <li>
                            <strong>{name.get_value()}</strong>
                            <span class="who">{people}</span>
                            <span class="here" hidden=move || !mine()>"You are here"</span>
                            <button type="button" hidden=move || !can_join.get() || mine()
                                aria-label=move || format!("Join {}", name.get_value())
                                on:click=move |_| m.send(&ClientMessage::JoinBreakout { room: n })>"Join"</button>
                        </li>
                    }
                }
            </For>
        </ul>
    }
}

/// The host's side: plan, open, message, visit, close.
#[component]
fn Planner() -> impl IntoView {
    let m = use_meeting();
    let b = Memo::new(move |_| m.model.with(|r| r.breakouts.clone()));
    let open = Memo::new(move |_| b.get().open);
    let rooms = Memo::new(move |_| b.get().rooms);
    let here = Memo::new(move |_| m.model.with(|r| r.scope()));
    let timer = RwSignal::new(String::new());
    let countdown = RwSignal::new("30".to_string());
    let message = RwSignal::new(String::new());
    let problem = RwSignal::new(None::<String>);
    // People to place: everyone but me, in join order.
    let people = Memo::new(move |_| {
        m.model.with(|r| {
            r.everyone_else()
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect::<Vec<_>>()
        })
    });
    let add_room = move |_| edit(BreakoutEdit::AddRoom);
    let auto = move |_| edit(BreakoutEdit::AssignEvenly);
    let open_rooms = move |_| {
        let t = timer.get_untracked();
        let minutes = match t.trim() {
            "" => None,
            s => match s.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problem.set(Some(
                        "The timer is a whole number of minutes (or leave it empty).".into(),
                    ));
                    return;
                }
            },
        };
        problem.set(None);
        m.send(&ClientMessage::OpenBreakouts { minutes });
    };
    let close_rooms = move |_| {
        let seconds = countdown.get_untracked().parse().unwrap_or(30);
        m.send(&ClientMessage::CloseBreakouts { seconds });
    };
    let send_message = move || {
        let text = message.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        m.send(&ClientMessage::BreakoutMessage { text });
        message.set(String::new());
    };
    let numbered = move || {
        rooms
            .get()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n))
            .collect::<Vec<_>>()
    };
    let room_numbers = move || (1..=rooms.get().len() as u32).collect::<Vec<_>>();
    view! {
        <section aria-labelledby="bo-rooms">
            <h3 id="bo-rooms">"Rooms"</h3>
            <p class="hint" hidden=move || !rooms.get().is_empty()>"Add rooms, put people in them, then open them."</p>
            <ol class="breakout-names">
                <For each=room_numbers key=|n| *n let:n>
                    {
                        let id = format!("bo-name-{n}");
                        // The room's name as the room has it (a refused rename shows it again).
                        let name = Memo::new(move |_| rooms.with(|r| r.get(n as usize - 1).cloned().unwrap_or_default()));
                        view! {
                            <li>
                                <label for=id.clone()>{format!("Room {n} name")}</label>
                                <input id=id.clone() type="text" maxlength=MAX_BREAKOUT_NAME_CHARS.to_string() prop:value=move || name.get()
                                    on:change=move |ev| {
                                        let v = event_target_value(&ev);
                                        if v.trim() != name.get_untracked() {
                                            edit(BreakoutEdit::RenameRoom { room: name.get_untracked(), name: v });
                                        }
                                        // The box shows the room's name: the new one once the room
                                        // takes it, the old one again if it refuses (and says why).
                                        if let Some(input) = ev.target().and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlInputElement>(t).ok()) {
                                            input.set_value(&name.get_untracked());
                                        }
                                    } />
                                <button type="button" hidden=move || open.get()
                                    aria-label=move || format!("Remove room {n}")
                                    on:click=move |_| edit(BreakoutEdit::RemoveRoom { room: name.get_untracked() })>"Remove"</button>
                            </li>
                        }
                    }
                </For>
            </ol>
            <button type="button" on:click=add_room>"Add a room"</button>
        </section>
        <section aria-labelledby="bo-people" hidden=move || rooms.get().is_empty()>
            <h3 id="bo-people">"People"</h3>
            <button type="button" on:click=auto>"Assign automatically"</button>
            <ul class="breakout-people">
                <For each=move || people.get() key=|p| p.clone() let:p>
                    {
                        let (pid, name) = p;
                        let sel = format!("bo-who-{pid}");
                        let pid = StoredValue::new(pid);
                        let chosen = move || pid.with_value(|p| b.with(|b| b.assigned.get(p).copied().unwrap_or(0)));
                        let chosen_now = move || pid.with_value(|p| b.with_untracked(|b| b.assigned.get(p).copied().unwrap_or(0)));
                        // While the rooms are open a choice moves the person: it waits for "Move"
                        // (a keyboard user going through the list with the arrows moves nobody).
                        let pending = RwSignal::new(None::<u32>);
                        // A wish overtaken (rooms closed, the same room given by someone else, its
                        // room removed) is dropped.
                        Effect::new(move |_| {
                            let rooms = b.with(|b| b.rooms.len() as u32);
                            if let Some(p) = pending.get() {
                                if !open.get() || p == chosen() || p > rooms {
                                    pending.set(None);
                                }
                            }
                        });
                        let shown = move || pending.get().unwrap_or_else(chosen).to_string();
                        let apply = move |v: u32| {
                            let p = pid.get_value();
                            pending.set(None);
                            // The room by the name its option shows (a number could be another
                            // room by the time the room reads it).
                            let room = (v > 0).then(|| rooms.with_untracked(|r| r.get(v as usize - 1).cloned())).flatten();
                            if v == 0 || room.is_some() {
                                edit(BreakoutEdit::Assign { participant: p, room });
                            }
                        };
                        let move_name = name.clone();
                        let now_in = move || pid.with_value(|p| m.model.with(|r| {
                            r.participants.iter().find(|x| &x.id == p).map(|x| x.scope).unwrap_or(0)
                        }));
                        view! {
                            <li>
                                <label for=sel.clone()>{name.clone()}</label>
                                <select id=sel aria-label=format!("Room for {name}") prop:value=shown
                                    on:change=move |ev| {
                                        let v: u32 = event_target_value(&ev).parse().unwrap_or(0);
                                        if open.get_untracked() { pending.set(Some(v).filter(|v| *v != chosen_now())) } else { apply(v) }
                                    }>
                                    // (`selected` for the first drawing, before the options exist for
                                    // the select's value; the value for every change after.)
                                    <option value="0" selected=move || shown() == "0">"Not assigned"</option>
                                    {move || numbered().into_iter().map(|(n, r)| view! {
                                        <option value=n.to_string() selected=move || shown() == n.to_string()>{r}</option>
                                    }).collect_view()}
                                </select>
                                <button type="button" class="primary" hidden=move || pending.get().is_none()
                                    aria-label=format!("Move {move_name}")
                                    on:click=move |_| if let Some(v) = pending.get_untracked() { apply(v) }>"Move"</button>
                                <span class="now-in" hidden=move || !open.get() || now_in() == 0>
                                    {move || m.model.with(|r| format!("in {}", r.room_name(now_in())))}
                                </span>
                            </li>
                        }
                    }
                </For>
            </ul>
            <label class="check">
                <input type="checkbox" prop:checked=move || b.get().let_choose
                    on:change=move |ev| edit(BreakoutEdit::LetChoose { on: event_target_checked(&ev) }) />
                "Let participants choose a room"
            </label>
        </section>
        <section aria-labelledby="bo-run" hidden=move || rooms.get().is_empty()>
            <h3 id="bo-run">{move || if open.get() { "Rooms are open" } else { "Open the rooms" }}</h3>
            <div hidden=move || open.get()>
                <label for="bo-timer">"Timer in minutes (optional)"</label>
                <input id="bo-timer" type="number" min="1" inputmode="numeric" prop:value=move || timer.get()
                    on:input=move |ev| timer.set(event_target_value(&ev)) />
                <button type="button" class="primary" on:click=open_rooms>"Open rooms"</button>
            </div>
            <p class="problem" role="alert" hidden=move || problem.get().is_none()>{move || problem.get().unwrap_or_default()}</p>
            <div hidden=move || !open.get()>
                <RoomList can_join=Signal::derive(move || true) />
                <button type="button" hidden=move || here.get() == 0
                    on:click=move |_| m.send(&ClientMessage::JoinBreakout { room: 0 })>"Return to the main room"</button>
                <form aria-label="Message all rooms" on:submit=move |ev| { ev.prevent_default(); send_message() }>
                    <label for="bo-message">"Message all rooms"</label>
                    <textarea id="bo-message" rows="2" prop:value=move || message.get()
                        on:input=move |ev| message.set(event_target_value(&ev))></textarea>
                    <button type="submit">"Send to all rooms"</button>
                </form>
                <label for="bo-countdown">"Close after"</label>
                <select id="bo-countdown" on:change=move |ev| countdown.set(event_target_value(&ev))>
                    <option value="10">"10 seconds"</option>
                    <option value="30" selected=true>"30 seconds"</option>
                    <option value="60">"1 minute"</option>
                    <option value="0">"No countdown"</option>
                </select>
                <button type="button" class="danger" on:click=close_rooms>"Close all rooms"</button>
            </div>
        </section>
    }
}

/// What everyone sees of the breakout rooms over the stage: where they are, the host's message to
/// all rooms, the timer and the closing countdown.
#[component]
pub fn BreakoutBanner(on_open_panel: Callback<()>) -> impl IntoView {
    let m = use_meeting();
    let now = clock();
    let b = Memo::new(move |_| m.model.with(|r| r.breakouts.clone()));
    let here = Memo::new(move |_| m.model.with(|r| r.scope()));
    let place = move || m.model.with(|r| r.room_name(here.get()));
    let time = move || {
        let b = b.get();
        let now = now.get();
        match (b.closing_at, b.ends_at) {
            (Some(at), _) => Some(format!(
                "Breakout rooms close in {}",
                mm_ss(at.saturating_sub(now))
            )),
            (None, Some(at)) => Some(format!("Time left: {}", mm_ss(at.saturating_sub(now)))),
            _ => None,
        }
    };
    let dismissed = RwSignal::new(None::<(String, String)>);
    let announcement = move || {
        let a = b.get().message.map(|n| (n.from, n.text));
        a.filter(|a| dismissed.get().as_ref() != Some(a))
    };
    let choose = move || {
        let b = b.get();
        b.open && b.let_choose && here.get() == 0
    };
    view! {
        <div class="breakout-banner" role="region" aria-label="Breakout rooms"
            hidden=move || !b.get().open>
            <span class="where" data-testid="breakout-where">
                {move || if here.get() == 0 { "You are in the main room".to_string() } else { format!("You are in {}", place()) }}
            </span>
            <span class="countdown" role="timer" hidden=move || time().is_none()>{move || time().unwrap_or_default()}</span>
            <button type="button" hidden=move || !choose() on:click=move |_| on_open_panel.run(())>"Choose a room"</button>
            <div class="announcement" role="status" hidden=move || announcement().is_none()>
                <span>{move || announcement().map(|(from, text)| format!("{from} to all rooms: {text}")).unwrap_or_default()}</span>
                <button type="button" aria-label="Dismiss the message to all rooms"
                    on:click=move |_| dismissed.set(b.get_untracked().message.map(|n| (n.from, n.text)))>"Dismiss"</button>
            </div>
        </div>
    }
}
