//! The app's routes, pages and API client; `main.rs` mounts it.

pub mod api;
pub mod components;
pub mod console;
pub mod format;
pub mod pages;
pub mod platform;

use leptos::prelude::*;

/// The page a path shows. Every page is its own document (links between
/// them are plain links), so the path is read once, at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Home,
    Consent(String),
    EmbedConsent(String),
    NotFound,
}

impl Route {
    pub fn parse(path: &str) -> Route {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let single =
            |rest: &str| (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned());
        if path == "/" {
            Route::Home
        } else if let Some(token) = path.strip_prefix("/consent/").and_then(single) {
            Route::Consent(token)
        } else if let Some(token) = path.strip_prefix("/embed/consent/").and_then(single) {
            Route::EmbedConsent(token)
        } else {
            Route::NotFound
        }
    }
}

/// One query parameter of the page's address (`?theme=dark`).
pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

#[component]
pub fn App() -> impl IntoView {
    let path = web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_default();
    match Route::parse(&path) {
        Route::Home => view! { <pages::home::Home /> }.into_any(),
        Route::Consent(token) => view! { <pages::consent::ConsentPage token /> }.into_any(),
        Route::EmbedConsent(token) => {
            view! { <pages::consent::EmbedConsentPage token /> }.into_any()
        }
        Route::NotFound => view! { <pages::not_found::NotFound /> }.into_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::Route;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn paths_choose_their_pages() {
        assert_eq!(Route::parse("/"), Route::Home);
        assert_eq!(
            Route::parse("/admin"),
            Route::NotFound,
            "the console is its own bundle"
        );
        assert_eq!(Route::parse("/consent/abc"), Route::Consent("abc".into()));
        assert_eq!(Route::parse("/consent/abc/"), Route::Consent("abc".into()));
        assert_eq!(
            Route::parse("/embed/consent/abc"),
            Route::EmbedConsent("abc".into())
        );
        assert_eq!(Route::parse("/consent/"), Route::NotFound);
        assert_eq!(Route::parse("/consent/a/b"), Route::NotFound);
        assert_eq!(Route::parse("/elsewhere"), Route::NotFound);
    }
}
