//! The consent page as the Leptos app, in headless Chromium: the whole
//! journey from a held request to an approve and to a deny, every state the
//! page can be in, keyboard only, in German, without WebAssembly, and
//! embedded in another origin's page.

use assent_e2e::browser::{
    console_errors, emulate_phone, focused, screenshot, take_webassembly_away, wait_for_app,
    wait_for_text, Browser,
};
use assent_e2e::page_server::PageServer;
use assent_e2e::{Assent, Options};
use fantoccini::{Client, Locator};
use serde_json::Value;
use std::time::{Duration, Instant};

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

async fn demo(config: Option<String>) -> (Assent, String, String) {
    let assent = Assent::start(Options {
        demo: true,
        config,
        ..Options::default()
    })
    .await;
    let link = assent.stdout_line_containing("/consent/").unwrap();
    let link = link[link.find("http").unwrap()..].trim().to_owned();
    let token = link.rsplit('/').next().unwrap().to_owned();
    (assent, link, token)
}

async fn click(client: &Client, label: &str) {
    client
        .find(Locator::XPath(&format!(
            "//button[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no button {label:?}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn status_of(assent: &Assent, token: &str) -> String {
    let view: Value = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["status"].as_str().unwrap().to_owned()
}

/// Timings of the page load from the Performance API, in ms.
async fn timings(client: &Client) -> Value {
    client
        .execute(
            "const nav = performance.getEntriesByType('navigation')[0];
             const fcp = performance.getEntriesByName('first-contentful-paint')[0];
             const ready = performance.getEntriesByName('assent-interactive')[0];
             return {
               first_contentful_paint: fcp ? fcp.startTime : null,
               dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
               app_interactive: ready ? ready.startTime : null,
             };",
            vec![],
        )
        .await
        .unwrap()
}

/// Screenshots of the page as it stands in the light and the dark theme
/// (`name-light.png`, `name-dark.png`); the page's own theme is restored.
async fn screenshot_both(client: &Client, name: &str) {
    let before = client
        .execute(
            "return document.documentElement.dataset.theme || ''",
            vec![],
        )
        .await
        .unwrap();
    for theme in ["light", "dark"] {
        client
            .execute(
                "document.documentElement.dataset.theme = arguments[0]; return true",
                vec![Value::from(theme)],
            )
            .await
            .unwrap();
        screenshot(client, &format!("{name}-{theme}")).await;
    }
    client
        .execute(
            "const t = arguments[0]; if (t) document.documentElement.dataset.theme = t; \
             else delete document.documentElement.dataset.theme; return true",
            vec![before],
        )
        .await
        .unwrap();
}

/// Waits until the element `id` has focus (focus moves on the next frame).
async fn wait_for_focus(client: &Client, id: &str) {
    let started = Instant::now();
    loop {
        let (now, _) = focused(client).await;
        if now == id {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "focus stayed on {now:?}, not {id:?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn no_console_errors(errors: Vec<String>) {
    let errors: Vec<String> = errors
        .into_iter()
        // The receipt is fetched by the browser's download manager, and
        // the demo's privacy link is never followed: neither is a page error.
        .filter(|e| !e.contains("favicon"))
        .collect();
    assert!(errors.is_empty(), "console errors (CSP?): {errors:?}");
}

#[tokio::test]
async fn the_owner_reads_confirms_and_approves_in_the_app() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    let session_token = token.clone();
    let downloaded = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = downloaded.clone();
    browser
        .with_session(move |client| async move {
            let token = session_token;
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            let page = wait_for_text(&client, "Approve…").await;
            for fact in [
                "hs.example.org asks to remove the link between alice@example.org and @alice:hs.example.org",
                "ed25519:a_demo",
                "Example identity server (demo)",
                "run by Example Ltd",
                "privacy policy",
                "Nothing changes unless you approve",
                "Do nothing:",
            ] {
                assert!(page.contains(fact), "the page lacks {fact:?}:\n{page}");
            }
            println!("consent page timings (ms): {}", timings(&client).await);
            screenshot_both(&client, "app-pending").await;
            click(&client, "Approve…").await;
            let confirm = wait_for_text(&client, "Approve: remove the link?").await;
            assert!(confirm.contains("cannot be undone"), "{confirm}");
            wait_for_focus(&client, "assent-step").await;
            screenshot_both(&client, "app-confirm-approve").await;
            click(&client, "Yes, approve").await;
            let done = wait_for_text(&client, "You approved on").await;
            assert!(done.contains("Download the signed receipt"), "{done}");
            assert!(
                done.contains("what you decided, when and how, who asked"),
                "the receipt's summary is beside it: {done}"
            );
            wait_for_focus(&client, "outcome").await;
            screenshot_both(&client, "app-approved").await;
            let href = client
                .find(Locator::Css("a.receipt"))
                .await
                .unwrap()
                .attr("href")
                .await
                .unwrap()
                .unwrap();
            assert!(href.ends_with(&format!("{token}/receipt")), "{href}");
            // What the link downloads, fetched by the page as the download is.
            let receipt = client
                .execute(
                    "return fetch(arguments[0]).then(r => r.text())",
                    vec![serde_json::json!(href)],
                )
                .await
                .unwrap();
            *kept.lock().unwrap() = receipt.as_str().unwrap_or_default().to_owned();
            // Reloading shows the outcome, with no buttons.
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            let again = wait_for_text(&client, "Approved").await;
            assert!(!again.contains("Approve…"), "{again}");
            no_console_errors(console_errors(&client).await);
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "approved");
    // The downloaded receipt verifies with the documented recipe, and its
    // consent record says the owner gave consent on the consent page.
    let receipt = downloaded.lock().unwrap().clone();
    let document = assent_e2e::recipes::verify_decision(&assent.base, &receipt)
        .await
        .unwrap_or_else(|e| panic!("the downloaded receipt does not verify: {e}\n{receipt}"));
    assert_eq!(document["decision"], "approve");
    let record = &document["consent_record"];
    assert_eq!(record["event"]["type"], "given", "{record:#}");
    assert_eq!(record["event"]["method"], "consent page");
    assert_eq!(record["controller"]["name"], "Example Ltd");
    assert_eq!(record["pii_principal"]["address"], "alice@example.org");
}

#[tokio::test]
async fn the_owner_goes_back_then_denies_in_dark_mode() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    let dark = format!("{link}?theme=dark");
    browser
        .with_session(move |client| async move {
            client.goto(&dark).await.unwrap();
            wait_for_app(&client).await;
            wait_for_text(&client, "Deny…").await;
            let theme = client
                .execute(
                    "return document.documentElement.dataset.theme || ''",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(theme, "dark");
            screenshot_both(&client, "app-pending-themed").await;
            click(&client, "Deny…").await;
            wait_for_text(&client, "Deny: keep the link?").await;
            screenshot_both(&client, "app-confirm-deny").await;
            click(&client, "Go back without deciding").await;
            wait_for_text(&client, "Approve…").await;
            wait_for_focus(&client, "assent-title").await;
            click(&client, "Deny…").await;
            wait_for_text(&client, "Deny: keep the link?").await;
            click(&client, "Yes, deny").await;
            let done = wait_for_text(&client, "You denied on").await;
            assert!(done.contains("stays"), "{done}");
            screenshot_both(&client, "app-denied").await;
            no_console_errors(console_errors(&client).await);
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "denied");
}

#[tokio::test]
async fn keyboard_alone_approves() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            wait_for_text(&client, "Approve…").await;
            let press = |key: &'static str| {
                let client = client.clone();
                async move {
                    client
                        .active_element()
                        .await
                        .unwrap()
                        .send_keys(key)
                        .await
                        .unwrap();
                }
            };
            let mut tabs = 0;
            while focused(&client).await.1 != "Approve…" {
                press(TAB).await;
                tabs += 1;
                assert!(tabs < 20, "Tab never reached the Approve button");
            }
            // The focused button is drawn with a visible outline.
            let outline = client
                .execute(
                    "return getComputedStyle(document.activeElement).outlineStyle",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(outline, "solid");
            screenshot(&client, "app-keyboard-focus").await;
            press(ENTER).await;
            wait_for_text(&client, "Approve: remove the link?").await;
            let mut tabs = 0;
            while focused(&client).await.1 != "Yes, approve" {
                press(TAB).await;
                tabs += 1;
                assert!(tabs < 10, "Tab never reached the confirm button");
            }
            press(ENTER).await;
            wait_for_text(&client, "You approved on").await;
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "approved");
}

#[tokio::test]
async fn a_decision_made_meanwhile_elsewhere_is_shown_as_the_one_that_counts() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    let decide = assent.url(&format!("/_assent/v1/consent/{token}/decision"));
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            wait_for_text(&client, "Approve…").await;
            // Another tab denies first.
            let other = reqwest::Client::new()
                .post(&decide)
                .json(&serde_json::json!({"decision": "deny"}))
                .send()
                .await
                .unwrap();
            assert_eq!(other.status(), 200);
            click(&client, "Approve…").await;
            click(&client, "Yes, approve").await;
            let shown = wait_for_text(&client, "already been decided").await;
            assert!(shown.contains("Denied"), "{shown}");
            assert!(!shown.contains("Something went wrong"), "{shown}");
            screenshot_both(&client, "app-decided-meanwhile").await;
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "denied");
}

#[tokio::test]
async fn a_lost_connection_is_said_plainly_and_the_decision_can_be_sent_again() {
    let (mut assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            wait_for_text(&client, "Approve…").await;
            click(&client, "Approve…").await;
            wait_for_text(&client, "Approve: remove the link?").await;
            assent.kill();
            click(&client, "Yes, approve").await;
            let shown = wait_for_text(&client, "Your decision was not recorded").await;
            assert!(shown.contains("could not be reached"), "{shown}");
            wait_for_focus(&client, "assent-step").await;
            screenshot_both(&client, "app-network-failure").await;
            assent.restart_keeping_links().await;
            click(&client, "Try again").await;
            wait_for_text(&client, "You approved on").await;
            assert_eq!(status_of(&assent, &token).await, "approved");
        })
        .await;
}

#[tokio::test]
async fn expired_cancelled_and_unknown_requests_each_say_so() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    assent
        .execute("UPDATE requests SET expires_at = 1000")
        .await;
    let unknown = assent.url(&format!("/consent/{}", "B".repeat(43)));
    let mistyped = assent.url("/consent/not-a-token");
    let cancelled_link = link.clone();
    browser
        .with_session(move |client| async move {
            for theme in ["light", "dark"] {
                client.goto(&format!("{link}?theme={theme}")).await.unwrap();
                wait_for_app(&client).await;
                let shown = wait_for_text(&client, "This request has expired").await;
                assert!(shown.contains("nothing was changed"), "{shown}");
                assert!(!shown.contains("Approve…"));
                screenshot(&client, &format!("app-expired-{theme}")).await;
                // An unknown link keeps the server's page (it says the same,
                // and the app has nothing to add).
                for (url, name) in [(&unknown, "unknown"), (&mistyped, "mistyped")] {
                    client.goto(&format!("{url}?theme={theme}")).await.unwrap();
                    let shown = wait_for_text(&client, "This link is not known").await;
                    assert!(shown.contains("whole link"), "{shown}");
                    screenshot(&client, &format!("{name}-{theme}")).await;
                }
                // The embedded page has no server page: the app says it.
                client
                    .goto(&format!(
                        "{}?theme={theme}",
                        unknown.replace("/consent/", "/embed/consent/")
                    ))
                    .await
                    .unwrap();
                wait_for_app(&client).await;
                let shown = wait_for_text(&client, "This link is not known").await;
                assert!(shown.contains("whole link"), "{shown}");
                screenshot(&client, &format!("app-unknown-embed-{theme}")).await;
            }
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "expired");
    assent
        .execute(&format!(
            "UPDATE requests SET status = 'cancelled', decided_at = {}, expires_at = 99999999999999",
            1_800_000_000_000i64
        ))
        .await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            for theme in ["light", "dark"] {
                client
                    .goto(&format!("{cancelled_link}?theme={theme}"))
                    .await
                    .unwrap();
                wait_for_app(&client).await;
                let shown = wait_for_text(&client, "This request was cancelled").await;
                assert!(shown.contains("An administrator withdrew it"), "{shown}");
                screenshot(&client, &format!("app-cancelled-{theme}")).await;
            }
        })
        .await;
}

#[tokio::test]
async fn german_readers_get_german_and_a_browser_without_webassembly_gets_the_server_page() {
    let (_assent, link, _token) = demo(None).await;
    // The server's page, in the real (minified) shell, is German too.
    let page = reqwest::Client::new()
        .get(&link)
        .header("accept-language", "de-CH, de;q=0.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html lang=\"de\">"), "{page}");
    assert!(page.contains("Zustimmen…"), "{page}");
    let browser = Browser::start().await;
    let german = link.clone();
    browser
        .with_session_flags(
            &["--lang=de-DE", "--accept-lang=de-DE,de"],
            move |client| async move {
                client.goto(&german).await.unwrap();
                wait_for_app(&client).await;
                let shown = wait_for_text(&client, "Zustimmen…").await;
                assert!(shown.contains("Ablehnen…"), "{shown}");
                assert!(shown.contains("Nichts ändert sich"), "{shown}");
                let lang = client
                    .execute("return document.documentElement.lang", vec![])
                    .await
                    .unwrap();
                assert_eq!(lang, "de");
                screenshot_both(&client, "app-pending-de").await;
            },
        )
        .await;
    browser
        .with_session(move |client| async move {
            take_webassembly_away(&client).await;
            client.goto(&link).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let has_wasm = client
                .execute("return typeof WebAssembly !== 'undefined'", vec![])
                .await
                .unwrap();
            assert_eq!(has_wasm, false, "the flag did not take WebAssembly away");
            // The server's page stays, and its form works.
            let shown = wait_for_text(&client, "Nothing changes unless you approve").await;
            assert!(shown.contains("Approve…"), "{shown}");
            click(&client, "Approve…").await;
            wait_for_text(&client, "Approve: remove the link?").await;
            click(&client, "Yes, approve").await;
            wait_for_text(&client, "Approved").await;
            screenshot_both(&client, "server-page-without-wasm").await;
        })
        .await;
}

const PARENT: &str = r#"<!doctype html><html><head><title>Identity server</title></head><body>
<script>
window.received = [];
window.addEventListener('message', function (e) {
  window.received.push({origin: e.origin, data: e.data});
  if (e.data && e.data.type === 'assent.resize') {
    document.getElementById('assent').style.height = e.data.height + 'px';
  }
});
</script>
<h1>Your identity server</h1>
<iframe id="assent" title="Assent" src="EMBED" style="width: 100%; height: 300px; border: 0"></iframe>
</body></html>"#;

async fn received(client: &Client) -> Vec<Value> {
    client
        .execute("return window.received || []", vec![])
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_for_message(client: &Client, kind: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(found) = received(client)
            .await
            .into_iter()
            .find(|m| m["data"]["type"] == kind)
        {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the parent never received {kind}: {:?}",
            received(client).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the latest height the frame reported passes `test`.
async fn wait_for_height(client: &Client, test: impl Fn(f64) -> bool) -> f64 {
    let started = Instant::now();
    loop {
        let last = received(client)
            .await
            .into_iter()
            .filter(|m| m["data"]["type"] == "assent.resize")
            .filter_map(|m| m["data"]["height"].as_f64())
            .next_back();
        if let Some(height) = last.filter(|h| test(*h)) {
            return height;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no fitting height reported; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_embedding_identity_server_is_told_ready_height_and_decision() {
    // The parent page lives on another origin (another port); another page
    // on a third origin is not listed.
    let placeholder = PageServer::start(String::new()).await;
    let parent_origin = placeholder.origin();
    let port = placeholder.port;
    drop(placeholder);
    let config = format!(
        "[[identity_servers]]\nname = \"matrix.example.org\"\ndisplay_name = \"Example identity server (demo)\"\n\
         operator = \"Example Ltd\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         frame_ancestors = [\"{parent_origin}\"]\n"
    );
    let (assent, _link, token) = demo(Some(config)).await;
    let embed = assent.url(&format!("/embed/consent/{token}?theme=dark"));
    let parent = PageServer::start_on(port, PARENT.replace("EMBED", &embed)).await;
    let stranger = PageServer::start(PARENT.replace("EMBED", &embed)).await;
    let assent_origin = assent.base.clone();
    let parent_url = format!("{}/", parent.origin());
    let stranger_url = format!("{}/", stranger.origin());
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&parent_url).await.unwrap();
            let ready = wait_for_message(&client, "assent.ready").await;
            assert_eq!(ready["origin"], Value::String(assent_origin.clone()));
            let resize = wait_for_message(&client, "assent.resize").await;
            assert!(resize["data"]["height"].as_f64().unwrap() > 100.0, "{resize}");
            screenshot(&client, "embed-pending-dark").await;
            // Inside the frame: the compact page, then the decision.
            let tall = wait_for_height(&client, |h| h > 300.0).await;
            client.enter_frame(0).await.unwrap();
            wait_for_text(&client, "Approve…").await;
            let theme = client
                .execute("return document.documentElement.dataset.theme || ''", vec![])
                .await
                .unwrap();
            assert_eq!(theme, "dark");
            click(&client, "Approve…").await;
            wait_for_text(&client, "Approve: remove the link?").await;
            // The shorter step is reported as such: the frame can shrink.
            client.enter_parent_frame().await.unwrap();
            wait_for_height(&client, |h| h < tall - 100.0).await;
            client.enter_frame(0).await.unwrap();
            click(&client, "Yes, approve").await;
            wait_for_text(&client, "You approved on").await;
            client.enter_parent_frame().await.unwrap();
            let decision = wait_for_message(&client, "assent.decision").await;
            assert_eq!(decision["origin"], Value::String(assent_origin.clone()));
            assert_eq!(decision["data"]["decision"], "approve");
            assert!(decision["data"]["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("req_")));
            screenshot(&client, "embed-approved-dark").await;
            // The parent can switch the theme; its message is heeded.
            client
                .execute(
                    "document.getElementById('assent').contentWindow.postMessage({type: 'assent.theme', theme: 'light'}, '*'); return true",
                    vec![],
                )
                .await
                .unwrap();
            client.enter_frame(0).await.unwrap();
            let started = Instant::now();
            loop {
                let theme = client
                    .execute("return document.documentElement.dataset.theme || ''", vec![])
                    .await
                    .unwrap();
                if theme == "light" {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(5), "the theme message was not heeded");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client.enter_parent_frame().await.unwrap();
            screenshot(&client, "embed-approved-light").await;

            // A page on an unlisted origin cannot frame it: CSP refuses.
            client.goto(&stranger_url).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                received(&client).await.is_empty(),
                "a stranger's frame talked: {:?}",
                received(&client).await
            );
            let errors = console_errors(&client).await.join("\n");
            assert!(errors.contains("frame-ancestors"), "no CSP refusal logged: {errors}");
        })
        .await;
    drop(parent);
    drop(stranger);
}

#[tokio::test]
async fn the_embedded_page_ignores_messages_from_unlisted_origins() {
    let config = "[[identity_servers]]\nname = \"matrix.example.org\"\ndisplay_name = \"Example identity server (demo)\"\n\
         operator = \"Example Ltd\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         frame_ancestors = [\"https://is.example.org\"]\n"
        .to_owned();
    let (assent, _link, token) = demo(Some(config)).await;
    let embed = assent.url(&format!("/embed/consent/{token}?theme=dark"));
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            // Opened on its own, the page's own origin is not an embedder.
            client.goto(&embed).await.unwrap();
            wait_for_text(&client, "Approve…").await;
            client
                .execute(
                    "window.postMessage({type: 'assent.theme', theme: 'light'}, '*'); return true",
                    vec![],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let theme = client
                .execute(
                    "return document.documentElement.dataset.theme || ''",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(
                theme, "dark",
                "a message from an unlisted origin was heeded"
            );
        })
        .await;
}

/// WCAG contrast ratios of every text element's colour against the
/// background it is drawn on, and the page's width against the window's.
const CHECK_PAGE: &str = r#"
function lum(c) {
  const [r, g, b] = c.match(/[\d.]+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(e) {
  for (; e; e = e.parentElement) {
    const bg = getComputedStyle(e).backgroundColor;
    if (bg && !bg.endsWith(', 0)') && bg !== 'transparent') return bg;
  }
  return getComputedStyle(document.body).backgroundColor;
}
const worst = [];
for (const e of document.querySelectorAll('#main *')) {
  const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const fg = getComputedStyle(e).color, bg = background(e);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  worst.push({ratio: (a + 0.05) / (b + 0.05), tag: e.tagName, text: e.textContent.trim().slice(0, 30), fg, bg});
}
worst.sort((x, y) => x.ratio - y.ratio);
return {
  lowest: worst[0],
  scroll_width: document.documentElement.scrollWidth,
  window_width: window.innerWidth,
};
"#;

#[tokio::test]
async fn every_text_meets_wcag_aa_contrast_in_both_themes_and_fits_a_phone() {
    let (_assent, link, _token) = demo(None).await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            emulate_phone(&client, 320).await;
            for theme in ["light", "dark"] {
                client.goto(&format!("{link}?theme={theme}")).await.unwrap();
                wait_for_app(&client).await;
                wait_for_text(&client, "Approve…").await;
                for step in ["pending", "confirm"] {
                    if step == "confirm" {
                        click(&client, "Approve…").await;
                        wait_for_text(&client, "Approve: remove the link?").await;
                    }
                    let checked = client.execute(CHECK_PAGE, vec![]).await.unwrap();
                    let lowest = checked["lowest"]["ratio"].as_f64().unwrap();
                    assert!(
                        lowest >= 4.5,
                        "{theme} {step}: contrast below WCAG AA: {}",
                        checked["lowest"]
                    );
                    println!("{theme} {step}: lowest text contrast {lowest:.2}:1");
                    let (page, window) = (
                        checked["scroll_width"].as_f64().unwrap(),
                        checked["window_width"].as_f64().unwrap(),
                    );
                    assert_eq!(window, 320.0, "the phone's viewport");
                    assert!(
                        page <= window,
                        "{theme} {step}: the page is {page}px wide in a {window}px window"
                    );
                    screenshot(&client, &format!("phone-{step}-{theme}")).await;
                }
            }
        })
        .await;
}

#[tokio::test]
async fn a_step_of_the_server_page_s_form_is_not_taken_over_by_the_app() {
    let (assent, link, token) = demo(None).await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            // As if the reader pressed the server page's "Approve…" before
            // the app had started: the confirmation step comes back.
            client
                .execute(
                    "const f = document.createElement('form');
                     f.method = 'post'; f.action = location.pathname;
                     for (const [k, v] of [['decision', 'approve'], ['step', 'review']]) {
                       const i = document.createElement('input');
                       i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
                     }
                     document.body.appendChild(f); f.submit(); return true;",
                    vec![],
                )
                .await
                .unwrap();
            wait_for_text(&client, "Approve: remove the link?").await;
            // The app loads on this page too, and leaves the step alone.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let shown = wait_for_text(&client, "Approve: remove the link?").await;
            assert!(
                !shown.contains("Deny…"),
                "the app replaced the step: {shown}"
            );
            click(&client, "Yes, approve").await;
            wait_for_text(&client, "You approved on").await;
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "approved");
}

#[tokio::test]
async fn an_address_spelt_with_look_alikes_is_shown_in_both_spellings_in_the_app() {
    let (assent, link, _) = demo(None).await;
    // As intake stores it when a request spelt the address with a long s.
    assent
        .execute("UPDATE requests SET address_as_sent = 'ALICE@EXAMPLE.ORG\u{17F}' ")
        .await;
    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            let shown = wait_for_text(&client, "look-alike characters").await;
            assert!(shown.contains("ALICE@EXAMPLE.ORG\u{17F}"), "{shown}");
            assert!(shown.contains("alice@example.org"), "{shown}");
            screenshot(&client, "app-look-alike").await;
            assert!(console_errors(&client).await.is_empty());
        })
        .await;
}
