use crate::components::Shell;
use leptos::prelude::*;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <Shell>
            <h1>"Page not found"</h1>
            <p>"There is no page at this address. If you followed a link from an email, check that it was copied whole."</p>
        </Shell>
    }
}
