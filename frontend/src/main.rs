//! Assent's web front end: the consent page, its embeddable form, and the
//! admin console, as one Leptos app that the backend serves.

use assent_frontend::App;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
