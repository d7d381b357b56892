//! The admin console at `/admin`: its own small Leptos app (its own wasm
//! bundle, so the consent page does not carry it). Sign-in exchanges an admin
//! token for an HttpOnly session cookie; the list of requests with filters,
//! search, paging and live counts; a request's detail with its audit trail
//! as a timeline and the three actions. Pages are plain links: the filters
//! live in the address, so back, reload and shared links all work.

pub mod api;
mod detail;
mod list;

use api::Failure;
use assent_shared::admin::Whoami;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Where the console stands with the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Checking,
    /// Not signed in; `expired` when a session ended while in use.
    SignedOut {
        expired: bool,
    },
    SignedIn(Whoami),
}

/// Shared by every console page: the gate, and a way to report a refused call.
#[derive(Clone, Copy)]
pub struct Session {
    pub gate: RwSignal<Gate>,
}

impl Session {
    /// Passes a result through; a refused session flips the console to the
    /// "session ended" view.
    pub fn check<T>(&self, result: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(failure) = &result {
            if failure.is_unauthorized() {
                self.gate.set(Gate::SignedOut { expired: true });
            }
        }
        result
    }
}

/// Which console page a path shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    List,
    Detail(String),
    NotFound,
}

impl Page {
    pub fn parse(path: &str) -> Page {
        let path = path.strip_suffix('/').unwrap_or(path);
        if path == "/admin" {
            Page::List
        } else if let Some(id) = path.strip_prefix("/admin/requests/") {
            if !id.is_empty() && !id.contains('/') {
                Page::Detail(id.to_owned())
            } else {
                Page::NotFound
            }
        } else {
            Page::NotFound
        }
    }
}

/// A sign-in link may carry the token in its fragment (`/admin#token=…`),
/// which browsers never send to the server. It is taken out of the address
/// at once.
fn token_from_fragment() -> Option<String> {
    let window = web_sys::window()?;
    let hash = window.location().hash().ok()?;
    let token = hash.strip_prefix("#token=")?.to_owned();
    if let Ok(history) = window.history() {
        let path = window.location().pathname().unwrap_or_default();
        let search = window.location().search().unwrap_or_default();
        let _ = history.replace_state_with_url(
            &wasm_bindgen::JsValue::NULL,
            "",
            Some(&format!("{path}{search}")),
        );
    }
    (!token.is_empty()).then_some(token)
}

#[component]
pub fn ConsoleApp() -> impl IntoView {
    let session = Session {
        gate: RwSignal::new(Gate::Checking),
    };
    provide_context(session);
    let notice = RwSignal::new(None::<String>);
    spawn_local(async move {
        if let Some(token) = token_from_fragment() {
            match api::sign_in(&token).await {
                Ok(me) => return session.gate.set(Gate::SignedIn(me)),
                Err(failure) => notice.set(Some(failure.describe())),
            }
        }
        match api::whoami().await {
            Ok(me) => session.gate.set(Gate::SignedIn(me)),
            Err(failure) if failure.is_unauthorized() => {
                session.gate.set(Gate::SignedOut { expired: false })
            }
            Err(failure) => {
                notice.set(Some(failure.describe()));
                session.gate.set(Gate::SignedOut { expired: false });
            }
        }
    });
    let page = Page::parse(
        &web_sys::window()
            .and_then(|w| w.location().pathname().ok())
            .unwrap_or_default(),
    );
    view! {
        <div class="console">
            <header class="masthead console-head">
                <a class="brand" href="/admin">"Assent · Administration"</a>
                {move || match session.gate.get() {
                    Gate::SignedIn(me) => view! { <SignOut me /> }.into_any(),
                    _ => ().into_any(),
                }}
            </header>
            <main id="main">
                {move || match session.gate.get() {
                    Gate::Checking => view! { <p class="detail" role="status">"Checking your session…"</p> }.into_any(),
                    Gate::SignedOut { expired } => view! { <SignIn expired notice /> }.into_any(),
                    Gate::SignedIn(_) => match page.clone() {
                        Page::List => view! { <list::ListPage /> }.into_any(),
                        Page::Detail(id) => view! { <detail::DetailPage id /> }.into_any(),
                        Page::NotFound => view! {
                            <h1>"Not found"</h1>
                            <p><a href="/admin">"Back to the requests"</a></p>
                        }.into_any(),
                    },
                }}
            </main>
        </div>
    }
}

#[component]
fn SignOut(me: Whoami) -> impl IntoView {
    let session = expect_context::<Session>();
    let busy = RwSignal::new(false);
    let on_click = move |_| {
        busy.set(true);
        spawn_local(async move {
            let _ = api::sign_out().await;
            busy.try_set(false);
            session.gate.set(Gate::SignedOut { expired: false });
        });
    };
    view! {
        <span class="who">
            <span class="detail">"Token " <code>{me.token_id}</code></span>
            <button type="button" class="button secondary small" on:click=on_click disabled=move || busy.get()>
                "Sign out"
            </button>
        </span>
    }
}

#[component]
fn SignIn(expired: bool, notice: RwSignal<Option<String>>) -> impl IntoView {
    let session = expect_context::<Session>();
    let token = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let presented = token.get_untracked();
        busy.set(true);
        notice.set(None);
        spawn_local(async move {
            match api::sign_in(presented.trim()).await {
                Ok(me) => session.gate.set(Gate::SignedIn(me)),
                Err(failure) => notice.set(Some(match failure.kind {
                    crate::api::ApiFailure::Unauthorized => {
                        "This token is not accepted.".to_owned()
                    }
                    _ => failure.describe(),
                })),
            }
            busy.try_set(false);
        });
    };
    view! {
        {expired.then(|| view! {
            <div class="note expired" role="alert">
                <h1>"Your session has ended"</h1>
                <p>"Sessions end after a while, or when an administrator signs out or the token is removed. Sign in again to go on."</p>
            </div>
        })}
        {(!expired).then(|| view! { <h1>"Sign in"</h1> })}
        <form class="signin" on:submit=on_submit>
            <label for="admin-token">"Admin token"</label>
            <input
                id="admin-token"
                name="token"
                type="password"
                autocomplete="current-password"
                required=true
                prop:value=move || token.get()
                on:input=move |ev| token.set(event_target_value(&ev))
            />
            <button type="submit" class="button" disabled=move || busy.get()>"Sign in"</button>
        </form>
        <p class="detail">"Tokens are listed under [admin] tokens in the server's configuration. Signing in sets a session cookie that only this console's API receives."</p>
        <p role="status" class="outcome">{move || notice.get()}</p>
    }
}

/// A time (ms since the Unix epoch) as `2026-12-02 07:45` in the reader's zone.
pub fn short_time(ms: i64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    let options = js_sys::Object::new();
    for (key, value) in [
        ("year", "numeric"),
        ("month", "2-digit"),
        ("day", "2-digit"),
        ("hour", "2-digit"),
        ("minute", "2-digit"),
        ("second", "2-digit"),
    ] {
        let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
    }
    // Swedish writes dates the ISO way.
    date.to_locale_string("sv-SE", &options).into()
}

#[cfg(test)]
mod tests {
    use super::Page;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn console_paths_choose_their_pages() {
        assert_eq!(Page::parse("/admin"), Page::List);
        assert_eq!(Page::parse("/admin/"), Page::List);
        assert_eq!(
            Page::parse("/admin/requests/req_1"),
            Page::Detail("req_1".into())
        );
        assert_eq!(Page::parse("/admin/requests/"), Page::NotFound);
        assert_eq!(Page::parse("/admin/requests/a/b"), Page::NotFound);
        assert_eq!(Page::parse("/admin/other"), Page::NotFound);
    }
}
