//! The app's routes, pages and API client; `main.rs` mounts it.

pub mod api;
pub mod components;
pub mod format;
pub mod pages;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

#[component]
pub fn App() -> impl IntoView {
    view! {
        <Router>
            <Routes fallback=pages::not_found::NotFound>
                <Route path=path!("/") view=pages::home::Home />
                <Route path=path!("/consent/:token") view=pages::consent::ConsentPage />
                <Route path=path!("/embed/consent/:token") view=pages::consent::EmbedConsentPage />
                <Route path=path!("/admin") view=pages::admin::AdminPage />
            </Routes>
        </Router>
    }
}
