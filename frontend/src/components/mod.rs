//! Small building blocks shared by the pages.

use leptos::prelude::*;

/// One labelled fact in a disclosure list.
#[component]
pub fn Fact(#[prop(into)] label: String, children: Children) -> impl IntoView {
    view! {
        <div class="fact">
            <dt>{label}</dt>
            <dd>{children()}</dd>
        </div>
    }
}

/// The page frame: header with the product name, then the content.
#[component]
pub fn Shell(#[prop(optional)] compact: bool, children: Children) -> impl IntoView {
    view! {
        <div class=if compact { "shell compact" } else { "shell" }>
            {(!compact).then(|| view! { <header class="masthead"><span class="brand">"Assent"</span></header> })}
            <main id="main">{children()}</main>
        </div>
    }
}
