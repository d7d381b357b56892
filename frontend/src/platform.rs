//! What the page asks of the browser: the reader's languages, the theme, the
//! server-rendered page it replaces, and, when embedded, the parent window.

use assent_shared::i18n::Lang;
use std::sync::atomic::{AtomicBool, Ordering};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// The reader's language from `navigator.languages` (then `language`).
pub fn preferred_lang() -> Lang {
    let Some(navigator) = web_sys::window().map(|w| w.navigator()) else {
        return Lang::En;
    };
    let mut tags: Vec<String> = navigator
        .languages()
        .iter()
        .filter_map(|v| v.as_string())
        .collect();
    if let Some(one) = navigator.language() {
        tags.push(one);
    }
    Lang::negotiate(tags.iter().map(String::as_str))
}

fn root() -> Option<web_sys::Element> {
    web_sys::window()?.document()?.document_element()
}

/// Marks the document as written in `lang` (screen readers, hyphenation).
pub fn set_document_lang(lang: Lang) {
    if let Some(root) = root() {
        let _ = root.set_attribute("lang", lang.code());
    }
}

/// `light` or `dark` fixes the theme; anything else follows the system.
pub fn apply_theme(theme: &str) {
    let Some(root) = root() else { return };
    match theme {
        "light" | "dark" => {
            let _ = root.set_attribute("data-theme", theme);
        }
        _ => {
            let _ = root.remove_attribute("data-theme");
        }
    }
}

fn server_page() -> Option<web_sys::Element> {
    web_sys::window()?
        .document()?
        .get_element_by_id("assent-nojs")
}

/// Whether the server-rendered page is still shown.
pub fn has_server_page() -> bool {
    server_page().is_some()
}

/// Whether the server-rendered page is the one a plain visit shows, which
/// the app may replace; not a form's step or a refusal the reader must see.
pub fn server_page_is_resting() -> bool {
    server_page().is_some_and(|page| page.get_attribute("data-resting").as_deref() == Some("true"))
}

/// Removes the server-rendered page (`#assent-nojs`): the app shows the
/// same request now.
pub fn remove_server_page() {
    if let Some(element) = server_page() {
        element.remove();
    }
}

/// Marks the moment the request's page is drawn and its buttons answer, on
/// the Performance timeline (`assent-interactive`), for the benchmark.
pub fn mark_interactive() {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        if performance
            .get_entries_by_name("assent-interactive")
            .length()
            == 0
        {
            let _ = performance.mark("assent-interactive");
        }
    }
}

/// The window that frames this page, reached only at the origins the
/// identity server configured as embedders. A message sent to an origin the
/// parent does not have is dropped by the browser, so sending to each is safe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parent {
    origins: Vec<String>,
}

impl Parent {
    pub fn new(origins: Vec<String>) -> Self {
        Parent { origins }
    }

    fn window() -> Option<web_sys::Window> {
        let own = web_sys::window()?;
        let parent = own.parent().ok()??;
        // Not framed: the parent is the window itself.
        (!js_sys::Object::is(&parent, &own)).then_some(parent)
    }

    /// Once per page: follows the parent's messages, says `assent.ready`,
    /// and keeps the parent told of the page's height.
    pub fn start(&self) {
        static STARTED: AtomicBool = AtomicBool::new(false);
        if STARTED.swap(true, Ordering::Relaxed) {
            return;
        }
        self.listen();
        self.post(&serde_json::json!({"type": "assent.ready"}));
        self.watch_height();
    }

    /// Sends `message` (a JSON object) to the parent.
    pub fn post(&self, message: &serde_json::Value) {
        let Some(parent) = Self::window() else { return };
        let Ok(value) = js_sys::JSON::parse(&message.to_string()) else {
            return;
        };
        for origin in &self.origins {
            let _ = parent.post_message(&value, origin);
        }
    }

    /// Tells the parent the page's height now and whenever it changes: the
    /// body's, which shrinks as well as grows (the document's own height is
    /// never less than the frame's).
    fn watch_height(&self) {
        let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
        else {
            return;
        };
        let parent = self.clone();
        let observed = body.clone();
        let callback = Closure::<dyn FnMut(JsValue)>::new(move |_entries: JsValue| {
            let height = observed.get_bounding_client_rect().height().ceil();
            parent.post(&serde_json::json!({"type": "assent.resize", "height": height}));
        });
        if let Ok(observer) = web_sys::ResizeObserver::new(callback.as_ref().unchecked_ref()) {
            observer.observe(&body);
            // Lives as long as the page.
            callback.forget();
        }
    }

    /// Follows the parent's `assent.theme {theme}` messages. Messages from
    /// any other origin, or of any other shape, are ignored.
    fn listen(&self) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let origins = self.origins.clone();
        let callback = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                if !origins.iter().any(|o| *o == event.origin()) {
                    return;
                }
                // From the framing window itself, not another window that
                // happens to be on a listed origin.
                let from_parent = match (event.source(), Self::window()) {
                    (Some(source), Some(parent)) => js_sys::Object::is(&source, &parent),
                    _ => false,
                };
                if !from_parent {
                    return;
                }
                let data = event.data();
                let field = |name: &str| {
                    js_sys::Reflect::get(&data, &JsValue::from_str(name))
                        .ok()
                        .and_then(|v| v.as_string())
                };
                if field("type").as_deref() == Some("assent.theme") {
                    if let Some(theme) = field("theme") {
                        apply_theme(&theme);
                    }
                }
            },
        );
        let _ =
            window.add_event_listener_with_callback("message", callback.as_ref().unchecked_ref());
        callback.forget();
    }
}

/// Moves keyboard and screen-reader focus to the element `id` once drawn
/// (after the view that holds it has rendered).
pub fn focus_soon(id: &'static str) {
    leptos::prelude::request_animation_frame(move || {
        let element = leptos::prelude::document()
            .get_element_by_id(id)
            .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
        if let Some(element) = element {
            let _ = element.focus();
        }
    });
}
