//! The account page (`/account`): sign in or create an account; once signed in, sign out, the
//! defaults for new meetings, change the password, download one's data, delete the account. The rules (what an email or password
//! must be) are checked by the edge with `edgemeet_shared::account`; the page shows its words.

use edgemeet_shared::account::{
    AccountView, ChangePasswordRequest, DeleteAccountRequest, RegisterRequest, SignInRequest,
    MIN_PASSWORD_CHARS,
};
use edgemeet_shared::protocol::WireError;
use edgemeet_shared::schedule::MeetingDefaults;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Serialize;

/// The signed-in account, if any (`Err`: the server could not be asked).
pub async fn current_account() -> Result<Option<AccountView>, String> {
    let res = gloo_net::http::Request::get("/api/account")
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    match res.status() {
        200 => res.json().await.map(Some).map_err(|e| e.to_string()),
        401 => Ok(None),
        s => Err(failure(res, s).await),
    }
}

async fn failure(res: gloo_net::http::Response, status: u16) -> String {
    res.json::<WireError>()
        .await
        .map(|e| e.message)
        .unwrap_or_else(|_| format!("The server answered {status}."))
}

/// POSTs `body` to `/api/account/{path}`; the answer, or the server's words.
async fn post<T: Serialize>(path: &str, body: &T) -> Result<gloo_net::http::Response, String> {
    let res = gloo_net::http::Request::post(&format!("/api/account/{path}"))
        .json(body)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    if res.ok() {
        Ok(res)
    } else {
        let status = res.status();
        Err(failure(res, status).await)
    }
}

/// A heading that takes the focus when its view replaces another (signed in ⇄ out), so a
/// keyboard or screen-reader user is not left on a button that is gone. Not on the first load.
fn focus_on_mount() -> NodeRef<leptos::html::H1> {
    let heading = NodeRef::<leptos::html::H1>::new();
    Effect::new(move |_| {
        if let Some(h) = heading.get() {
            let active = document().active_element();
            let on_body = active.is_none() || active == document().body().map(Into::into);
            if !on_body || SWAPPED.with(|s| s.get()) {
                let _ = h.focus();
            }
            SWAPPED.with(|s| s.set(true));
        }
    });
    heading
}

thread_local! {
    /// Whether one of the page's two views was shown already (the next one is a swap).
    static SWAPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[component]
pub fn AccountPage() -> impl IntoView {
    // None: asking; Some(None): signed out; Some(Some(a)): signed in as a.
    let me = RwSignal::new(None::<Option<AccountView>>);
    let load_error = RwSignal::new(None::<String>);
    spawn_local(async move {
        match current_account().await {
            Ok(a) => me.set(Some(a)),
            Err(e) => {
                load_error.set(Some(e));
                me.set(Some(None));
            }
        }
    });
    view! {
        <main class="account">
            <nav class="account-nav"><a href="/">"← Back to joining a meeting"</a></nav>
            <p class="error" role="alert">{move || load_error.get().unwrap_or_default()}</p>
            {move || match me.get() {
                None => view! { <p class="status" role="status">"Checking whether you are signed in…"</p> }.into_any(),
                Some(None) => view! { <SignedOut me /> }.into_any(),
                Some(Some(a)) => view! { <SignedIn me account=a /> }.into_any(),
            }}
        </main>
    }
}

#[component]
fn SignedOut(me: RwSignal<Option<Option<AccountView>>>) -> impl IntoView {
    let heading = focus_on_mount();
    let creating = RwSignal::new(false);
    let (name, email, password) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        let (n, e, p) = (
            name.get_untracked(),
            email.get_untracked(),
            password.get_untracked(),
        );
        let create = creating.get_untracked();
        spawn_local(async move {
            let res = if create {
                post(
                    "register",
                    &RegisterRequest {
                        email: e,
                        name: n,
                        password: p,
                    },
                )
                .await
            } else {
                post(
                    "signin",
                    &SignInRequest {
                        email: e,
                        password: p,
                    },
                )
                .await
            };
            busy.set(false);
            match res {
                Ok(r) => match r.json::<AccountView>().await {
                    Ok(a) => {
                        password.set(String::new());
                        me.set(Some(Some(a)));
                    }
                    Err(e) => error.set(Some(e.to_string())),
                },
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <form class="join account-form" on:submit=submit novalidate=true aria-labelledby="account-title">
            <h1 id="account-title" tabindex="-1" node_ref=heading>{move || if creating.get() { "Create an account" } else { "Sign in" }}</h1>
            <p class="hint">"You can join meetings without an account. With one, you can schedule meetings and get their reports."</p>
            <Show when=move || creating.get()>
                <label>"Your name"
                    <input type="text" name="name" autocomplete="name" maxlength="64" required=true
                        prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) />
                </label>
            </Show>
            <label>"Email address"
                <input type="email" name="email" autocomplete="email" maxlength="254" required=true
                    prop:value=email on:input=move |ev| email.set(event_target_value(&ev)) />
            </label>
            <label>"Password"
                <input type="password" name="password" maxlength="128" required=true
                    autocomplete=move || if creating.get() { "new-password" } else { "current-password" }
                    aria-describedby="password-rule"
                    prop:value=password on:input=move |ev| password.set(event_target_value(&ev)) />
            </label>
            <p class="hint" id="password-rule" hidden=move || !creating.get()>
                {format!("At least {MIN_PASSWORD_CHARS} characters. A few words you will remember make a good one.")}
            </p>
            <p class="error" role="alert" data-testid="account-error">{move || error.get().unwrap_or_default()}</p>
            <button type="submit" class="primary" disabled=move || busy.get()>
                {move || match (creating.get(), busy.get()) {
                    (true, false) => "Create account",
                    (true, true) => "Creating your account…",
                    (false, false) => "Sign in",
                    (false, true) => "Signing in…",
                }}
            </button>
            <button type="button" class="link" on:click=move |_| { error.set(None); creating.update(|c| *c = !*c) }>
                {move || if creating.get() { "I already have an account: sign in" } else { "No account yet? Create one" }}
            </button>
        </form>
    }
}

#[component]
fn SignedIn(me: RwSignal<Option<Option<AccountView>>>, account: AccountView) -> impl IntoView {
    let heading = focus_on_mount();
    let notice = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<String>);
    let (current, new) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let delete_pw = RwSignal::new(String::new());
    let del_error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    // Defaults for new meetings, as saved with the account.
    let d = account.meeting_defaults.clone();
    let (d_waiting, d_signed_in) = (
        RwSignal::new(d.waiting_room),
        RwSignal::new(d.only_signed_in),
    );
    let d_duration = RwSignal::new(d.duration_minutes.to_string());
    let d_zone = RwSignal::new(d.time_zone.clone());
    let d_notice = RwSignal::new(None::<String>);
    let d_error = RwSignal::new(None::<String>);
    let save_defaults = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        d_error.set(None);
        d_notice.set(None);
        let Ok(duration_minutes) = d_duration.get_untracked().trim().parse::<u32>() else {
            d_error.set(Some("Give the length in minutes, like 45.".into()));
            return;
        };
        let body = MeetingDefaults {
            waiting_room: d_waiting.get_untracked(),
            only_signed_in: d_signed_in.get_untracked(),
            duration_minutes,
            time_zone: d_zone.get_untracked(),
        };
        busy.set(true);
        spawn_local(async move {
            let res = async {
                let res = gloo_net::http::Request::put("/api/account/defaults")
                    .json(&body)
                    .map_err(|e| e.to_string())?
                    .send()
                    .await
                    .map_err(|e| format!("Cannot reach the server: {e}"))?;
                if res.ok() {
                    res.json::<AccountView>().await.map_err(|e| e.to_string())
                } else {
                    let status = res.status();
                    Err(failure(res, status).await)
                }
            }
            .await;
            busy.set(false);
            match res {
                Ok(v) => {
                    d_zone.set(v.meeting_defaults.time_zone);
                    d_notice.set(Some(
                        "Saved: the meetings you schedule start from these.".into(),
                    ));
                }
                Err(e) => d_error.set(Some(e)),
            }
        });
    };
    let sign_out = move |_| {
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        spawn_local(async move {
            let res = post("signout", &serde_json::json!({})).await;
            busy.set(false);
            match res {
                Ok(_) => me.set(Some(None)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let change = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        notice.set(None);
        let body = ChangePasswordRequest {
            current: current.get_untracked(),
            new: new.get_untracked(),
        };
        spawn_local(async move {
            let res = post("password", &body).await;
            busy.set(false);
            match res {
                Ok(_) => {
                    current.set(String::new());
                    new.set(String::new());
                    notice.set(Some(
                        "Password changed. You were signed out everywhere else.".into(),
                    ));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let delete = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        del_error.set(None);
        let body = DeleteAccountRequest {
            password: delete_pw.get_untracked(),
        };
        spawn_local(async move {
            let res = post("delete", &body).await;
            busy.set(false);
            match res {
                Ok(_) => me.set(Some(None)),
                Err(e) => del_error.set(Some(e)),
            }
        });
    };
    view! {
        <section class="account-card" aria-labelledby="account-title">
            <h1 id="account-title" tabindex="-1" node_ref=heading>"Your account"</h1>
            <p data-testid="signed-in-as">{format!("Signed in as {} ({})", account.name, account.email)}</p>
            <div class="row">
                <button type="button" on:click=sign_out disabled=move || busy.get()>"Sign out"</button>
                <a class="button" href="/meetings">"Your meetings"</a>
                <a class="button" href="/api/account/data" download="edgemeet-my-data.json">"Download my data"</a>
            </div>
            <p class="status" role="status">{move || notice.get().unwrap_or_default()}</p>
        </section>
        <form class="join account-form" on:submit=save_defaults novalidate=true aria-labelledby="defaults-title">
            <h2 id="defaults-title">"Defaults for new meetings"</h2>
            <label class="check">
                <input type="checkbox" name="default-waiting-room" prop:checked=d_waiting
                    on:change=move |ev| d_waiting.set(event_target_checked(&ev)) />
                "Waiting room on"
            </label>
            <label class="check">
                <input type="checkbox" name="default-only-signed-in" prop:checked=d_signed_in
                    on:change=move |ev| d_signed_in.set(event_target_checked(&ev)) />
                "Only signed-in people can join"
            </label>
            <label>"Length (minutes)"
                <input type="number" name="default-duration" min="5" max="1440" step="5"
                    prop:value=d_duration on:input=move |ev| d_duration.set(event_target_value(&ev)) />
            </label>
            <label>"Time zone (empty: this browser's)"
                <input type="text" name="default-time-zone" autocomplete="off" placeholder="for example Europe/Berlin"
                    prop:value=d_zone on:input=move |ev| d_zone.set(event_target_value(&ev)) />
            </label>
            <p class="error" role="alert">{move || d_error.get().unwrap_or_default()}</p>
            <p class="status" role="status">{move || d_notice.get().unwrap_or_default()}</p>
            <button type="submit" class="primary" disabled=move || busy.get()>"Save defaults"</button>
        </form>
        <form class="join account-form" on:submit=change novalidate=true aria-labelledby="pw-title">
            <h2 id="pw-title">"Change password"</h2>
            <label>"Current password"
                <input type="password" name="current-password" autocomplete="current-password" maxlength="128"
                    prop:value=current on:input=move |ev| current.set(event_target_value(&ev)) />
            </label>
            <label>"New password"
                <input type="password" name="new-password" autocomplete="new-password" maxlength="128"
                    prop:value=new on:input=move |ev| new.set(event_target_value(&ev)) />
            </label>
            <p class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            <button type="submit" class="primary" disabled=move || busy.get()>"Change password"</button>
        </form>
        <form class="join account-form danger-zone" on:submit=delete novalidate=true aria-labelledby="del-title">
            <h2 id="del-title">"Delete account"</h2>
            <p class="hint">"This deletes your account and signs you out everywhere. It cannot be undone."</p>
            <label>"Your password, to confirm"
                <input type="password" name="delete-password" autocomplete="current-password" maxlength="128"
                    prop:value=delete_pw on:input=move |ev| delete_pw.set(event_target_value(&ev)) />
            </label>
            <p class="error" role="alert">{move || del_error.get().unwrap_or_default()}</p>
            <button type="submit" class="danger" disabled=move || busy.get()>"Delete my account"</button>
        </form>
    }
}
