//! The meetings page (`/meetings`): schedule a meeting, see the upcoming ones (mine and those I
//! co-host), copy or download an invitation, change or cancel one. The rules are the edge's
//! (`edgemeet_shared::schedule`); the page shows its words.

use edgemeet_shared::protocol::WireError;
use edgemeet_shared::report::{MeetingReport, ReportListing};
use edgemeet_shared::schedule::{
    MeetingDefaults, MeetingForm, MeetingRole, MeetingView, Recurrence,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;

use crate::pages::account::current_account;

#[derive(Debug, Clone, Deserialize)]
struct Upcoming {
    meetings: Vec<MeetingView>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reports {
    reports: Vec<ReportListing>,
}

#[derive(Debug, Clone, Deserialize)]
struct OneMeeting {
    invitation: String,
}

pub(crate) async fn failure(res: gloo_net::http::Response) -> String {
    let status = res.status();
    res.json::<WireError>()
        .await
        .map(|e| e.message)
        .unwrap_or_else(|_| format!("The server answered {status}."))
}

async fn load() -> Result<Vec<MeetingView>, String> {
    let res = gloo_net::http::Request::get("/api/meetings")
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    if !res.ok() {
        return Err(failure(res).await);
    }
    res.json::<Upcoming>()
        .await
        .map(|u| u.meetings)
        .map_err(|e| e.to_string())
}

/// GET `url` as JSON, the server's words on failure.
pub(crate) async fn get<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let res = gloo_net::http::Request::get(url)
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    if !res.ok() {
        return Err(failure(res).await);
    }
    res.json::<T>().await.map_err(|e| e.to_string())
}

/// A length of time in words: "45 min", "1 h 05 min", "under a minute".
fn duration(ms: u64) -> String {
    let min = ms / 60_000;
    match min {
        0 => "under a minute".into(),
        m if m < 60 => format!("{m} min"),
        m => format!("{} h {:02} min", m / 60, m % 60),
    }
}

/// The browser's time zone (IANA name), for a new meeting's default.
fn browser_time_zone() -> String {
    let dtf = js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new());
    js_sys::Reflect::get(&dtf.resolved_options(), &"timeZone".into())
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "UTC".into())
}

/// A time (ms since the epoch) in the browser's own words and zone.
pub(crate) fn local_time(ms: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(d.to_locale_string("default", &js_sys::Object::new()))
}

/// The form's fields, as the person types them.
#[derive(Clone, Copy)]
struct Fields {
    title: RwSignal<String>,
    start: RwSignal<String>,
    time_zone: RwSignal<String>,
    duration: RwSignal<String>,
    recurrence: RwSignal<String>,
    occurrences: RwSignal<String>,
    password: RwSignal<String>,
    waiting_room: RwSignal<bool>,
    only_signed_in: RwSignal<bool>,
    cohosts: RwSignal<String>,
    /// The account's defaults a new meeting starts from.
    defaults: RwSignal<MeetingDefaults>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            title: RwSignal::new(String::new()),
            start: RwSignal::new(String::new()),
            time_zone: RwSignal::new(browser_time_zone()),
            duration: RwSignal::new("60".into()),
            recurrence: RwSignal::new("none".into()),
            occurrences: RwSignal::new("4".into()),
            password: RwSignal::new(String::new()),
            waiting_room: RwSignal::new(true),
            only_signed_in: RwSignal::new(false),
            cohosts: RwSignal::new(String::new()),
            defaults: RwSignal::new(MeetingDefaults::default()),
        }
    }

    /// The account's defaults arrived: an empty form starts from them.
    fn use_defaults(&self, d: MeetingDefaults) {
        // (The page may be gone by the time the account arrives: then nothing.)
        if self.defaults.try_set(d).is_some() {
            return;
        }
        if self.title.try_get_untracked().is_some_and(|t| t.is_empty()) {
            self.clear();
        }
    }

    fn fill(&self, m: &MeetingView) {
        let s = &m.schedule;
        self.title.set(s.title.clone());
        self.start.set(s.start.clone());
        self.time_zone.set(s.time_zone.clone());
        self.duration.set(s.duration_minutes.to_string());
        self.recurrence.set(
            match s.recurrence {
                Recurrence::None => "none",
                Recurrence::Daily => "daily",
                Recurrence::Weekly => "weekly",
            }
            .into(),
        );
        self.occurrences.set(s.occurrences.max(2).to_string());
        self.password.set(String::new());
        self.waiting_room.set(s.waiting_room);
        self.only_signed_in.set(s.only_signed_in);
        self.cohosts.set(s.cohosts.join(", "));
    }

    fn clear(&self) {
        let d = self.defaults.get_untracked();
        self.title.set(String::new());
        self.start.set(String::new());
        self.time_zone.set(if d.time_zone.is_empty() {
            browser_time_zone()
        } else {
            d.time_zone.clone()
        });
        self.duration.set(d.duration_minutes.to_string());
        self.recurrence.set("none".into());
        self.occurrences.set("4".into());
        self.password.set(String::new());
        self.waiting_room.set(d.waiting_room);
        self.only_signed_in.set(d.only_signed_in);
        self.cohosts.set(String::new());
    }

    /// The form to send (`editing`: an empty password box keeps the current password).
    fn form(&self, editing: bool) -> MeetingForm {
        let recurrence = match self.recurrence.get_untracked().as_str() {
            "daily" => Recurrence::Daily,
            "weekly" => Recurrence::Weekly,
            _ => Recurrence::None,
        };
        let password = self.password.get_untracked();
        MeetingForm {
            title: self.title.get_untracked(),
            start: self.start.get_untracked(),
            time_zone: self.time_zone.get_untracked(),
            duration_minutes: self.duration.get_untracked().trim().parse().unwrap_or(0),
            recurrence,
            occurrences: (recurrence != Recurrence::None)
                .then(|| self.occurrences.get_untracked().trim().parse().unwrap_or(0)),
            password: if password.is_empty() && editing {
                None
            } else {
                Some(password)
            },
            waiting_room: self.waiting_room.get_untracked(),
            only_signed_in: self.only_signed_in.get_untracked(),
            cohosts: self
                .cohosts
                .get_untracked()
                .split([',', ';', '\n'])
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

#[component]
pub fn MeetingsPage() -> impl IntoView {
    // None: asking; Some(false): signed out; Some(true): signed in.
    let signed_in = RwSignal::new(None::<bool>);
    let meetings = RwSignal::new(Vec::<MeetingView>::new());
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let reports = RwSignal::new(Vec::<ReportListing>::new());
    // The report open below the list, if any.
    let report = RwSignal::new(None::<MeetingReport>);
    let report_heading = NodeRef::<leptos::html::H3>::new();
    let refresh = move || {
        spawn_local(async move {
            match load().await {
                Ok(m) => meetings.set(m),
                Err(e) => error.set(Some(e)),
            }
            match get::<Reports>("/api/reports").await {
                Ok(r) => reports.set(r.reports),
                Err(e) => error.set(Some(e)),
            }
        })
    };
    let open_report = move |meeting: String, started: u64| {
        error.set(None);
        spawn_local(async move {
            match get::<MeetingReport>(&format!("/api/reports/{meeting}/{started}")).await {
                Ok(r) => {
                    report.set(Some(r));
                    // The report shows below the list: focus (and so the view) goes there.
                    if let Some(h) = report_heading.get_untracked() {
                        let _ = h.focus();
                    }
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let fields = Fields::new();
    spawn_local(async move {
        match current_account().await {
            Ok(Some(a)) => {
                fields.use_defaults(a.meeting_defaults);
                signed_in.set(Some(true));
                refresh();
            }
            Ok(None) => signed_in.set(Some(false)),
            Err(e) => {
                error.set(Some(e));
                signed_in.set(Some(false));
            }
        }
    });
    let editing = RwSignal::new(None::<String>);
    let form_heading = NodeRef::<leptos::html::H2>::new();
    let busy = RwSignal::new(false);
    let form_error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        form_error.set(None);
        error.set(None);
        notice.set(None);
        let id = editing.get_untracked();
        let form = fields.form(id.is_some());
        spawn_local(async move {
            let req = match &id {
                Some(id) => gloo_net::http::Request::put(&format!("/api/meetings/{id}")),
                None => gloo_net::http::Request::post("/api/meetings"),
            };
            let res = async {
                let res = req
                    .json(&form)
                    .map_err(|e| e.to_string())?
                    .send()
                    .await
                    .map_err(|e| format!("Cannot reach the server: {e}"))?;
                if res.ok() {
                    res.json::<MeetingView>().await.map_err(|e| e.to_string())
                } else {
                    Err(failure(res).await)
                }
            }
            .await;
            busy.set(false);
            match res {
                Ok(m) => {
                    notice.set(Some(if id.is_some() {
                        format!(
                            "\"{}\" is changed. Send the new invitation to the people you invited.",
                            m.schedule.title
                        )
                    } else {
                        format!(
                            "\"{}\" is scheduled. Copy or download its invitation below.",
                            m.schedule.title
                        )
                    }));
                    editing.set(None);
                    fields.clear();
                    refresh();
                }
                Err(e) => form_error.set(Some(e)),
            }
        });
    };
    let copy = move |id: String| {
        error.set(None);
        spawn_local(async move {
            let res = async {
                let res = gloo_net::http::Request::get(&format!("/api/meetings/{id}"))
                    .send()
                    .await
                    .map_err(|e| format!("Cannot reach the server: {e}"))?;
                if !res.ok() {
                    return Err(failure(res).await);
                }
                let one: OneMeeting = res.json().await.map_err(|e| e.to_string())?;
                let clip = window().navigator().clipboard();
                wasm_bindgen_futures::JsFuture::from(clip.write_text(&one.invitation))
                    .await
                    .map_err(|_| {
                        "The browser did not let the page copy. Download the invitation instead."
                            .to_string()
                    })?;
                Ok(())
            }
            .await;
            match res {
                Ok(()) => notice.set(Some("Invitation copied: paste it into a message.".into())),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let cancel = move |id: String, title: String| {
        let sure = window()
            .confirm_with_message(&format!(
                "Cancel \"{title}\" for everyone? Its link will stop working."
            ))
            .unwrap_or(false);
        if !sure {
            return;
        }
        error.set(None);
        spawn_local(async move {
            let res = gloo_net::http::Request::post(&format!("/api/meetings/{id}/cancel"))
                .json(&serde_json::json!({}))
                .map_err(|e| e.to_string());
            let res = match res {
                Ok(r) => r
                    .send()
                    .await
                    .map_err(|e| format!("Cannot reach the server: {e}")),
                Err(e) => Err(e),
            };
            match res {
                Ok(r) if r.ok() => {
                    notice.set(Some(format!("\"{title}\" is cancelled. Download its cancellation to send to the people you invited.")));
                    refresh();
                }
                Ok(r) => error.set(Some(failure(r).await)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let repeats = move || fields.recurrence.get() != "none";
    // Reminders: a meeting whose reminder the server's cron marked (it starts within ten
    // minutes, or is on now) is said at the top, with Join; the clock is looked at every 15 s,
    // the list asked again every minute.
    let now = RwSignal::new(js_sys::Date::now() as u64);
    let tick = set_interval_with_handle(
        move || now.set(js_sys::Date::now() as u64),
        std::time::Duration::from_secs(15),
    );
    let reload = set_interval_with_handle(
        move || {
            if signed_in.get_untracked() == Some(true) {
                spawn_local(async move {
                    if let Ok(m) = load().await {
                        let _ = meetings.try_set(m);
                    }
                });
            }
        },
        std::time::Duration::from_secs(60),
    );
    on_cleanup(move || {
        for t in [tick, reload].into_iter().flatten() {
            t.clear();
        }
    });
    let soon = move || {
        let t = now.get();
        meetings.with(|ms| {
            ms.iter()
                .filter(|m| m.reminder)
                .filter_map(|m| {
                    let (start, end) = (m.next_start?, m.next_end?);
                    let due = edgemeet_shared::schedule::reminder_due(start, end, t)?;
                    Some((m.schedule.title.clone(), m.room.clone(), due))
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        <main class="account meetings">
            <nav class="account-nav"><a href="/">"← Back to joining a meeting"</a>" · "<a href="/account">"Your account"</a>" · "<a href="/recordings">"Recordings"</a></nav>
            <h1>"Your meetings"</h1>
            <For each=soon key=|(t, r, d)| (t.clone(), r.clone(), d.clone()) let:due>
                <p class="reminder" role="status">
                    {format!("{} {} ", due.0, due.2)}
                    <a class="button" href=format!("/{}", due.1)>"Join now"</a>
                </p>
            </For>
            <p class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            <p class="status" role="status" data-testid="meetings-notice">{move || notice.get().unwrap_or_default()}</p>
            <Show when=move || signed_in.get() == Some(false)>
                <p>"Sign in to schedule meetings: " <a href="/account">"Sign in or create an account"</a></p>
            </Show>
            <Show when=move || signed_in.get() == Some(true)>
                <section aria-labelledby="upcoming-title">
                    <h2 id="upcoming-title">"Upcoming"</h2>
                    <Show when=move || meetings.with(Vec::is_empty)>
                        <p class="hint">"Nothing scheduled yet."</p>
                    </Show>
                    <ul class="meeting-list">
                        <For each=move || meetings.get() key=|m| (m.id.clone(), m.sequence) let:m>
                            {
                                let (id, title, room) = (m.id.clone(), m.schedule.title.clone(), m.room.clone());
                                let owner = m.role == MeetingRole::Owner;
                                let next = m.next_start.map(|t| format!("Next: {}", local_time(t))).unwrap_or_default();
                                let (id2, id3, title2) = (id.clone(), id.clone(), title.clone());
                                let edit_m = m.clone();
                                view! {
                                    <li class="meeting" aria-labelledby=format!("meeting-{id}")>
                                        <h3 id=format!("meeting-{id}")>{title.clone()}</h3>
                                        <p class="when">{m.when.clone()}</p>
                                        <p class="hint">{next}{if owner { String::new() } else { format!(" · {} hosts; you co-host", m.owner_name) }}</p>
                                        <div class="row">
                                            <a class="button" href=format!("/{room}")>"Join"</a>
                                            <button type="button" on:click=move |_| copy(id2.clone())>"Copy invitation"</button>
                                            <a class="button" href=format!("/api/meetings/{id}/invitation.ics") download="edgemeet-invitation.ics">"Download invitation (.ics)"</a>
                                            <Show when=move || owner>
                                                <button type="button" on:click={
                                                    let edit_m = edit_m.clone();
                                                    move |_| {
                                                        fields.fill(&edit_m);
                                                        editing.set(Some(edit_m.id.clone()));
                                                        // The form is further down: focus (and so the view) goes there.
                                                        if let Some(h) = form_heading.get_untracked() { let _ = h.focus(); }
                                                    }
                                                }>"Edit"</button>
                                                <button type="button" class="danger" on:click={
                                                    let (id3, title2) = (id3.clone(), title2.clone());
                                                    move |_| cancel(id3.clone(), title2.clone())
                                                }>"Cancel meeting"</button>
                                            </Show>
                                        </div>
                                    </li>
                                }
                            }
                        </For>
                    </ul>
                </section>
                <section aria-labelledby="reports-title">
                    <h2 id="reports-title">"Meeting reports"</h2>
                    <Show when=move || reports.with(Vec::is_empty)>
                        <p class="hint">"After a meeting you scheduled, its report is here: who came, when, and for how long."</p>
                    </Show>
                    <ul class="meeting-list">
                        <For each=move || reports.get() key=|r| (r.meeting.clone(), r.started_at, r.ended_at, r.attendees) let:r>
                            {
                                let (meeting, started) = (r.meeting.clone(), r.started_at);
                                let (label, label_id) = (format!("report-{meeting}-{started}"), format!("report-{meeting}-{started}"));
                                let people = match r.attendees { 1 => "1 person".to_string(), n => format!("{n} people") };
                                let state = match r.ended_at {
                                    Some(e) => duration(e.saturating_sub(started)),
                                    None => "going on now".into(),
                                };
                                view! {
                                    <li class="meeting" aria-labelledby=label>
                                        <h3 id=label_id>{r.title.clone()}</h3>
                                        <p class="when">{format!("{} · {state} · {people}", local_time(started))}</p>
                                        <div class="row">
                                            <button type="button" on:click={
                                                let meeting = meeting.clone();
                                                move |_| open_report(meeting.clone(), started)
                                            }>"View report"</button>
                                            <a class="button" href=format!("/api/reports/{meeting}/{started}/report.csv") download="">"Download report (CSV)"</a>
                                        </div>
                                    </li>
                                }
                            }
                        </For>
                    </ul>
                    <section class="report" aria-labelledby="report-heading" hidden=move || report.with(Option::is_none)>
                        <h3 id="report-heading" tabindex="-1" node_ref=report_heading>
                            {move || report.with(|r| r.as_ref().map(|r| format!("Report: {}", r.title)).unwrap_or_default())}
                        </h3>
                        {move || report.get().map(|r| {
                            let ended = match r.ended_at {
                                Some(e) => format!("ended {}", local_time(e)),
                                None => "still going on".into(),
                            };
                            let polls = r.polls.clone();
                            view! {
                                <p>{format!("Started {}, {ended}; {} long.", local_time(r.started_at), duration(r.duration_ms))}</p>
                                <p>{format!("{} attended, at most {} at once; {} chat messages.", r.attendees.len(), r.peak, r.chat_messages)}</p>
                                <Show when=move || r.truncated>
                                    <p class="error">"This meeting had too many comings and goings to show them all: who came last may be missing."</p>
                                </Show>
                                <div class="table-scroll">
                                    <table class="report-table">
                                        <caption>"Who attended"</caption>
                                        <thead><tr><th scope="col">"Name"</th><th scope="col">"Joined"</th><th scope="col">"Left"</th><th scope="col">"In the meeting"</th></tr></thead>
                                        <tbody>
                                            {r.attendees.iter().flat_map(|a| {
                                                let total = duration(a.total_ms);
                                                a.stints.iter().enumerate().map(move |(i, s)| view! {
                                                    <tr>
                                                        <th scope="row">{a.name.clone()}</th>
                                                        <td>{local_time(s.joined)}</td>
                                                        <td>{s.left.map(local_time).unwrap_or_else(|| "still in".into())}</td>
                                                        <td>{if i == 0 { total.clone() } else { String::new() }}</td>
                                                    </tr>
                                                }).collect::<Vec<_>>()
                                            }).collect::<Vec<_>>()}
                                        </tbody>
                                    </table>
                                </div>
                                <Show when={ let n = polls.len(); move || n > 0 }>
                                    <h4>"Polls"</h4>
                                </Show>
                                <ul class="report-polls">
                                    {polls.iter().map(|p| {
                                        let results: Vec<String> = p.options.iter().zip(&p.counts).map(|(o, c)| format!("{o}: {c}")).collect();
                                        let voters = match p.voters { 1 => "1 voter".to_string(), n => format!("{n} voters") };
                                        view! { <li><strong>{p.question.clone()}</strong>{format!(" — {} ({voters}{})", results.join(", "), if p.open { ", still open at the end" } else { "" })}</li> }
                                    }).collect::<Vec<_>>()}
                                </ul>
                            }
                        })}
                        <button type="button" on:click=move |_| report.set(None)>"Close report"</button>
                    </section>
                </section>
                <form class="join account-form" on:submit=submit novalidate=true aria-labelledby="schedule-title">
                    <h2 id="schedule-title" tabindex="-1" node_ref=form_heading>{move || if editing.get().is_some() { "Change the meeting" } else { "Schedule a meeting" }}</h2>
                    <label>"Title"
                        <input type="text" name="title" maxlength="200" required=true
                            prop:value=fields.title on:input=move |ev| fields.title.set(event_target_value(&ev)) />
                    </label>
                    <label>"Starts"
                        <input type="datetime-local" name="start" required=true
                            prop:value=fields.start on:input=move |ev| fields.start.set(event_target_value(&ev)) />
                    </label>
                    <label>"Time zone"
                        <input type="text" name="time-zone" required=true aria-describedby="tz-hint"
                            prop:value=fields.time_zone on:input=move |ev| fields.time_zone.set(event_target_value(&ev)) />
                    </label>
                    <p class="hint" id="tz-hint">"A name like Europe/Berlin: the meeting keeps its time there when the clocks change."</p>
                    <label>"Duration (minutes)"
                        <input type="number" name="duration" min="5" max="1440" step="5" required=true
                            prop:value=fields.duration on:input=move |ev| fields.duration.set(event_target_value(&ev)) />
                    </label>
                    <label>"Repeats"
                        <select name="recurrence" prop:value=fields.recurrence
                            on:change=move |ev| fields.recurrence.set(event_target_value(&ev))>
                            <option value="none">"Does not repeat"</option>
                            <option value="daily">"Every day"</option>
                            <option value="weekly">"Every week"</option>
                        </select>
                    </label>
                    <label hidden=move || !repeats()>"How many times"
                        <input type="number" name="occurrences" min="2" max="200"
                            prop:value=fields.occurrences on:input=move |ev| fields.occurrences.set(event_target_value(&ev)) />
                    </label>
                    <label>{move || if editing.get().is_some() { "New meeting password (empty: keep it)" } else { "Meeting password (optional)" }}
                        <input type="password" name="meeting-password" maxlength="128" autocomplete="new-password"
                            prop:value=fields.password on:input=move |ev| fields.password.set(event_target_value(&ev)) />
                    </label>
                    <label class="check">
                        <input type="checkbox" name="waiting-room" prop:checked=fields.waiting_room
                            on:change=move |ev| fields.waiting_room.set(event_target_checked(&ev)) />
                        "Waiting room: people wait until a host lets them in"
                    </label>
                    <label class="check">
                        <input type="checkbox" name="only-signed-in" prop:checked=fields.only_signed_in
                            on:change=move |ev| fields.only_signed_in.set(event_target_checked(&ev)) />
                        "Only signed-in people can join"
                    </label>
                    <label>"Co-hosts (email addresses, separated by commas)"
                        <input type="text" name="cohosts" autocomplete="off"
                            prop:value=fields.cohosts on:input=move |ev| fields.cohosts.set(event_target_value(&ev)) />
                    </label>
                    <p class="error" role="alert" data-testid="schedule-error">{move || form_error.get().unwrap_or_default()}</p>
                    <button type="submit" class="primary" disabled=move || busy.get()>
                        {move || if editing.get().is_some() { "Save changes" } else { "Schedule" }}
                    </button>
                    <Show when=move || editing.get().is_some()>
                        <button type="button" class="link" on:click=move |_| { editing.set(None); fields.clear(); }>"Stop changing it"</button>
                    </Show>
                </form>
            </Show>
        </main>
    }
}
