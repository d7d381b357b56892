//! The admin console's bundle: served at `/admin`, apart from the consent
//! page's, so the people who receive consent emails never download it.

use assent_frontend::console::ConsoleApp;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(ConsoleApp);
}
