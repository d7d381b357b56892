use crate::components::Shell;
use leptos::prelude::*;

/// `/`: what this server is, for someone who lands here without a link.
#[component]
pub fn Home() -> impl IntoView {
    view! {
        <Shell>
            <h1>"Assent"</h1>
            <p>
                "This server asks people before the link between their email address and their Matrix account is removed. "
                "If you received an email from it, open the link in that email."
            </p>
            <p><a href="/admin">"Administrators: sign in"</a></p>
        </Shell>
    }
}
