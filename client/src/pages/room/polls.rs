//! The polls panel. Hosts and co-hosts write a poll (a question, 2 to 10 options, single or
//! multiple choice, anonymous or named) and launch it; everyone votes once; hosts and co-hosts see
//! the results as they come in and may share them with everyone and end the poll. The room decides
//! all of it (`shared::room::polls`); this page only shows what it is told and sends the choices.

use edgemeet_shared::protocol::{
    ClientMessage, PollView, MAX_POLL_BYTES, MAX_POLL_OPTIONS, MIN_POLL_OPTIONS,
};
use edgemeet_shared::token::Role;
use leptos::prelude::*;

use crate::meeting::use_meeting;

/// Whether this person hosts or co-hosts (memoised: the model changes often, this rarely).
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

/// Open polls this person has not answered yet (what the "Polls" control and the banner count).
pub fn unanswered(polls: &[PollView]) -> usize {
    polls.iter().filter(|p| p.open && !p.voted).count()
}

#[component]
pub fn PollsPanel() -> impl IntoView {
    let m = use_meeting();
    let moderator = is_moderator();
    // Newest first.
    let ids = move || {
        m.model
            .with(|r| r.polls.iter().rev().map(|p| p.id).collect::<Vec<_>>())
    };
    // The form is open while there is no poll yet; after that, behind "New poll" (so the polls
    // and their results come first), and closed again by a launch.
    let writing = RwSignal::new(false);
    let any = Memo::new(move |_| m.model.with(|r| !r.polls.is_empty()));
    view! {
        <div class="polls">
            <Show when=move || moderator.get() && (writing.get() || !any.get())>
                <NewPoll on_launch=Callback::new(move |_| writing.set(false))
                    can_cancel=Signal::derive(move || any.get()) />
            </Show>
            <button type="button"
                hidden=move || !moderator.get() || writing.get() || !any.get()
                on:click=move |_| {
                    writing.set(true);
                    request_animation_frame(|| {
                        if let Some(el) = document()
                            .get_element_by_id("new-poll-question")
                            .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok())
                        {
                            let _ = el.focus();
                        }
                    });
                }>"New poll"</button>
            <p class="hint" hidden=move || m.model.with(|r| !r.polls.is_empty())>
                {move || if moderator.get() { "No polls yet." } else { "No polls yet. When a host starts one, it appears here." }}
            </p>
            <ul class="poll-list" aria-label="Polls">
                <For each=ids key=|id| *id let:id>
                    <PollCard id />
                </For>
            </ul>
        </div>
    }
}

/// The form a host writes a poll in.
#[component]
fn NewPoll(
    /// Called after a launch, and on "Cancel".
    on_launch: Callback<()>,
    /// "Cancel" is offered (there are polls to go back to).
    can_cancel: Signal<bool>,
) -> impl IntoView {
    let m = use_meeting();
    let question = RwSignal::new(String::new());
    // Options with keys of their own, so removing one keeps the others' boxes.
    let next_key = StoredValue::new(2u32);
    let fresh_options = move || {
        let k = next_key.get_value();
        next_key.set_value(k + 2);
        vec![(k, String::new()), (k + 1, String::new())]
    };
    let options = RwSignal::new(vec![(0u32, String::new()), (1u32, String::new())]);
    let multiple = RwSignal::new(false);
    let anonymous = RwSignal::new(false);
    let bytes = move || {
        question.with(|q| q.trim().len())
            + options.with(|o| o.iter().map(|(_, t)| t.trim().len()).sum::<usize>())
    };
    // A problem is named once something is written, or a launch was tried.
    let tried = RwSignal::new(false);
    let problem = move || {
        if question.with(|q| q.trim().is_empty()) {
            Some("Write a question.".to_string())
        } else if options.with(|o| o.iter().any(|(_, t)| t.trim().is_empty())) {
            Some("Every option needs some text.".to_string())
        } else if bytes() > MAX_POLL_BYTES {
            Some(format!(
                "The question and options are too long together (at most {MAX_POLL_BYTES} bytes)."
            ))
        } else {
            options.with(|o| {
                o.iter().enumerate().find_map(|(i, (_, t))| {
                    let t = t.trim().to_lowercase();
                    o[..i]
                        .iter()
                        .any(|(_, u)| u.trim().to_lowercase() == t)
                        .then(|| "Two options say the same.".to_string())
                })
            })
        }
    };
    // Launched: the form is cleared (and closed) once the room sends the new poll back; refused
    // (the room's words appear as a notice), the draft stays. Sent but never answered (the
    // connection dropped), or refused, the button works again after 3 s.
    let pending = RwSignal::new(None::<u64>);
    Effect::new(move |_| {
        let Some(after) = pending.get() else { return };
        // This poll (another host's new one leaves the draft alone).
        let q = question.get_untracked();
        if m.model.with(|r| {
            r.polls
                .iter()
                .any(|p| p.id > after && p.question == q.trim())
        }) {
            pending.set(None);
            question.set(String::new());
            options.set(fresh_options());
            multiple.set(false);
            anonymous.set(false);
            tried.set(false);
            on_launch.run(());
        }
    });
    let shown_problem = move || {
        let started = tried.get()
            || question.with(|q| !q.trim().is_empty())
            || options.with(|o| o.iter().any(|(_, t)| !t.trim().is_empty()));
        if started {
            problem()
        } else {
            None
        }
    };
    let launch = move || {
        if problem().is_some() {
            tried.set(true);
            return;
        }
        if pending.get_untracked().is_some() {
            return;
        }
        let newest = m
            .model
            .with_untracked(|r| r.polls.last().map_or(0, |p| p.id));
        pending.set(Some(newest));
        set_timeout(
            move || {
                let _ = pending.try_set(None);
            },
            std::time::Duration::from_secs(3),
        );
        m.send(&ClientMessage::CreatePoll {
            question: question.get_untracked(),
            options: options
                .get_untracked()
                .into_iter()
                .map(|(_, t)| t)
                .collect(),
            multiple: multiple.get_untracked(),
            anonymous: anonymous.get_untracked(),
        });
    };
    let add = move |_| {
        let k = next_key.get_value();
        next_key.set_value(k + 1);
        options.update(|o| o.push((k, String::new())));
        // Focus the new option's box.
        request_animation_frame(move || {
            if let Some(el) = document()
                .get_element_by_id(&format!("poll-option-{k}"))
                .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok())
            {
                let _ = el.focus();
            }
        });
    };
    let rows = move || {
        options.with(|o| {
            o.iter()
                .enumerate()
                .map(|(i, (k, _))| (i, *k))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <form class="new-poll" aria-labelledby="new-poll-heading"
            on:submit=move |ev| { ev.prevent_default(); launch() }>
            <h3 id="new-poll-heading">"New poll"</h3>
            <label>"Question"
                <input type="text" id="new-poll-question" maxlength=MAX_POLL_BYTES.to_string() prop:value=question
                    on:input=move |ev| question.set(event_target_value(&ev)) />
            </label>
            <For each=rows key=|r| *r let:row>
                {
                    let (i, k) = row;
                    let text = move || options.with(|o| o.iter().find(|(kk, _)| *kk == k).map(|(_, t)| t.clone()).unwrap_or_default());
                    view! {
                        <div class="poll-option-row">
                            <label>{format!("Option {}", i + 1)}
                                <input type="text" id=format!("poll-option-{k}") maxlength=MAX_POLL_BYTES.to_string()
                                    prop:value=text
                                    on:input=move |ev| {
                                        let v = event_target_value(&ev);
                                        options.update(|o| if let Some(x) = o.iter_mut().find(|(kk, _)| *kk == k) { x.1 = v });
                                    } />
                            </label>
                            <button type="button" class="link" aria-label=format!("Remove option {}", i + 1)
                                hidden=move || options.with(|o| o.len() <= MIN_POLL_OPTIONS)
                                on:click=move |_| options.update(|o| o.retain(|(kk, _)| *kk != k))>"Remove"</button>
                        </div>
                    }
                }
            </For>
            <button type="button" on:click=add
                disabled=move || options.with(|o| o.len() >= MAX_POLL_OPTIONS)>"Add option"</button>
            <label class="check">
                <input type="checkbox" prop:checked=multiple on:change=move |ev| multiple.set(event_target_checked(&ev)) />
                "People may choose more than one"
            </label>
            <label class="check">
                <input type="checkbox" prop:checked=anonymous on:change=move |ev| anonymous.set(event_target_checked(&ev)) />
                "Anonymous: nobody sees who chose what"
            </label>
            <p class="hint" id="new-poll-problem" aria-live="polite">{move || shown_problem().unwrap_or_default()}</p>
            <div class="row">
                <button type="button" hidden=move || !can_cancel.get()
                    on:click=move |_| on_launch.run(())>"Cancel"</button>
                <button type="submit" class="primary" aria-describedby="new-poll-problem"
                    aria-disabled=move || (problem().is_some() || pending.get().is_some()).to_string()>"Launch poll"</button>
            </div>
        </form>
    }
}

/// One poll: the question, a ballot while it is open and unanswered, the results when this person
/// may see them, and the host's actions. Each part is drawn from a memo of its own: a vote by
/// someone else changes the results, never the ballot someone is filling in (or its focus).
#[component]
fn PollCard(id: u64) -> impl IntoView {
    let m = use_meeting();
    let moderator = is_moderator();
    let part = move |f: fn(&PollView) -> Option<PollView>| {
        Memo::new(move |_| {
            m.model
                .with(|r| r.polls.iter().find(|p| p.id == id).and_then(f))
        })
    };
    // What each part shows, the rest blanked so a change elsewhere leaves it alone.
    let head = part(|p| {
        Some(PollView {
            results: None,
            voted: false,
            my_choices: Vec::new(),
            shared: false,
            ..p.clone()
        })
    });
    let ballot = part(|p| {
        (p.open && !p.voted).then(|| PollView {
            results: None,
            shared: false,
            ..p.clone()
        })
    });
    let mine = part(|p| {
        p.voted.then(|| PollView {
            results: None,
            shared: false,
            ..p.clone()
        })
    });
    let results = part(|p| p.results.is_some().then(|| p.clone()));
    let admin = part(|p| {
        Some(PollView {
            results: None,
            voted: false,
            my_choices: Vec::new(),
            ..p.clone()
        })
    });
    // The choices being made, and a vote on its way (the room's answer clears it; if none comes —
    // the socket was down, the frame refused — the button works again after a few seconds).
    let chosen = RwSignal::new(Vec::<u32>::new());
    let sent = RwSignal::new(false);
    let heading = format!("poll-{id}-question");
    let head_view = move || {
        head.get().map(|p| {
            let state = format!(
                "By {} · {}{}{}",
                p.by,
                if p.open { "open" } else { "ended" },
                if p.anonymous { " · anonymous" } else { "" },
                if p.multiple { " · choose any" } else { "" }
            );
            view! {
                <h3 id=format!("poll-{id}-question")>{p.question.clone()}</h3>
                <p class="meta">{state}</p>
            }
        })
    };
    let ballot_view = move || {
        ballot.get().map(|p| {
            let kind = if p.multiple { "checkbox" } else { "radio" };
            let name = format!("poll-{id}-choice");
            let multiple = p.multiple;
            let q = p.question.clone();
            let vote = move || {
                let choices = chosen.get_untracked();
                if choices.is_empty() || sent.get_untracked() {
                    return;
                }
                sent.set(true);
                m.send(&ClientMessage::Vote { poll: id, choices });
                set_timeout(
                    move || {
                        let _ = sent.try_set(false);
                    },
                    std::time::Duration::from_secs(3),
                );
            };
            view! {
                <form class="ballot" on:submit=move |ev| { ev.prevent_default(); vote() }>
                    <fieldset>
                        <legend>{if multiple { "Choose one or more" } else { "Choose one" }}</legend>
                        {p.options.iter().enumerate().map(|(i, o)| {
                            let i = i as u32;
                            view! {
                                <label class="check">
                                    <input type=kind name=name.clone()
                                        prop:checked=move || chosen.with(|c| c.contains(&i))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            chosen.update(|c| {
                                                if !multiple { c.clear(); }
                                                c.retain(|x| *x != i);
                                                if on { c.push(i); }
                                            });
                                        } />
                                    {o.clone()}
                                </label>
                            }
                        }).collect_view()}
                    </fieldset>
                    <button type="submit" class="primary" aria-label=format!("Vote: {q}")
                        aria-disabled=move || (chosen.with(Vec::is_empty) || sent.get()).to_string()>"Vote"</button>
                </form>
            }
        })
    };
    let mine_view = move || {
        mine.get().map(|p| {
            let picked: Vec<String> = p
                .my_choices
                .iter()
                .filter_map(|&c| p.options.get(c as usize).cloned())
                .collect();
            let text = if picked.is_empty() {
                "You voted.".to_string()
            } else {
                format!("You voted: {}.", picked.join(", "))
            };
            view! { <p class="voted">{text}</p> }
        })
    };
    let results_view = move || {
        results.get().and_then(|p| {
            let res = p.results.clone()?;
            // Shares of the people who voted (several choices each in a multiple-choice poll).
            let voters = res.voters;
            let rows = p.options.iter().enumerate().map(|(i, o)| {
                let n = res.counts.get(i).copied().unwrap_or(0);
                let pct = (n * 100 + voters / 2).checked_div(voters).unwrap_or(0);
                let names = res.names.get(i).filter(|n| !n.is_empty()).map(|n| n.join(", "));
                let votes = if n == 1 { "1 vote".to_string() } else { format!("{n} votes") };
                view! {
                    <li data-testid="poll-result">
                        <span class="option">{o.clone()}</span>
                        <span class="count">{format!("{votes} · {pct}%")}</span>
                        <span class="bar" aria-hidden="true"><span style=format!("width: {pct}%")></span></span>
                        {names.map(|n| view! { <span class="names">{n}</span> })}
                    </li>
                }
            }).collect_view();
            let who = match voters {
                1 => "1 person voted".to_string(),
                n => format!("{n} people voted"),
            };
            let seen = if p.shared { "Everyone sees these results." } else { "Only hosts and co-hosts see these results." };
            Some(view! {
                <ol class="results" aria-label=format!("Results: {}", p.question)>{rows}</ol>
                <p class="hint">{format!("{who}. {seen}")}</p>
            })
        })
    };
    let admin_view = move || {
        let p = admin.get()?;
        if !moderator.get() || (p.shared && !p.open) {
            return None;
        }
        let q = p.question.clone();
        Some(view! {
            <div class="row poll-actions">
                <button type="button" hidden=p.shared aria-label=format!("Share results: {q}")
                    on:click=move |_| m.send(&ClientMessage::SharePollResults { poll: id })>"Share results"</button>
                <button type="button" hidden=!p.open aria-label=format!("End poll: {}", p.question)
                    on:click=move |_| m.send(&ClientMessage::EndPoll { poll: id })>"End poll"</button>
            </div>
        })
    };
    view! {
        <li class="poll" data-testid="poll" aria-labelledby=heading>
            {head_view}
            {ballot_view}
            {mine_view}
            {results_view}
            {admin_view}
        </li>
    }
}
