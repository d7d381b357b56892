//! Components rendered in a real browser (wasm-bindgen-test in headless Chromium).

use assent_frontend::components::{Fact, Shell};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn container() -> web_sys::HtmlElement {
    let document = web_sys::window().unwrap().document().unwrap();
    let div = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&div).unwrap();
    div.unchecked_into()
}

#[wasm_bindgen_test]
fn a_fact_shows_its_label_and_value_as_a_definition() {
    let parent = container();
    let _handle = leptos::mount::mount_to(
        parent.clone(),
        || view! { <dl><Fact label="Asked by">"hs.example.org"</Fact></dl> },
    );
    let dt = parent.query_selector("dt").unwrap().unwrap();
    let dd = parent.query_selector("dd").unwrap().unwrap();
    assert_eq!(dt.text_content().unwrap(), "Asked by");
    assert_eq!(dd.text_content().unwrap(), "hs.example.org");
}

#[wasm_bindgen_test]
fn the_compact_shell_drops_the_masthead() {
    let full = container();
    let _a = leptos::mount::mount_to(full.clone(), || view! { <Shell>"content"</Shell> });
    assert!(full.query_selector(".masthead").unwrap().is_some());
    let compact = container();
    let _b = leptos::mount::mount_to(
        compact.clone(),
        || view! { <Shell compact=true>"content"</Shell> },
    );
    assert!(compact.query_selector(".masthead").unwrap().is_none());
    assert_eq!(
        compact
            .query_selector("main")
            .unwrap()
            .unwrap()
            .text_content()
            .unwrap(),
        "content"
    );
}
