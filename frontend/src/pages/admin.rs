//! `/admin`: the administrators' sign-in.

use crate::api::{self, ApiFailure};
use crate::components::Shell;
use leptos::prelude::*;

/// A sign-in link may carry the token in its fragment (`/admin#token=…`),
/// which browsers never send to the server.
fn token_from_fragment() -> String {
    let hash = web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default();
    hash.strip_prefix("#token=").unwrap_or_default().to_owned()
}

#[component]
pub fn AdminPage() -> impl IntoView {
    let token = RwSignal::new(token_from_fragment());
    let sign_in = Action::new_local(|token: &String| {
        let token = token.clone();
        async move { api::admin_whoami(&token).await }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        sign_in.dispatch_local(token.get_untracked());
    };
    view! {
        <Shell>
            <h1>"Administration"</h1>
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
                <button type="submit" class="button" disabled=move || sign_in.pending().get()>"Sign in"</button>
            </form>
            <p class="detail">"Tokens are listed under [admin] tokens in the server's configuration."</p>
            <div role="status" class="outcome">
                {move || sign_in.value().get().map(|result| match result {
                    Ok(admin) => format!("Signed in with token {}.", admin.token_id),
                    Err(ApiFailure::Unauthorized) => "This token is not accepted.".to_owned(),
                    Err(ApiFailure::Network) => "The server could not be reached. Try again.".to_owned(),
                    Err(other) => format!("Sign-in failed: {other:?}"),
                })}
            </div>
        </Shell>
    }
}
