//! The consent page without JavaScript: Chromium with scripts off, the
//! server-rendered page, and its forms through the confirmation step.

use assent_e2e::browser::{screenshot, Browser};
use assent_e2e::{Assent, Options};
use fantoccini::{Client, Locator};
use std::time::{Duration, Instant};

/// Waits until the page source contains `needle` (no scripts to ask).
async fn wait_for_source(client: &Client, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let source = client.source().await.unwrap_or_default();
        if source.contains(needle) {
            return source;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the page never showed {needle:?}:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click_button(client: &Client, label: &str) {
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
    let view: serde_json::Value = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_javascript_the_owner_reads_confirms_and_approves() {
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let consent = assent.stdout_line_containing("/consent/").unwrap();
    let token = consent.rsplit('/').next().unwrap().to_owned();
    let browser = Browser::start().await;
    let link = consent.clone();
    browser
        .with_session_without_javascript(move |client| async move {
            client.goto(&link).await.unwrap();
            let page = wait_for_source(&client, "Nothing changes unless you approve").await;
            for fact in [
                "hs.example.org",
                "@alice:hs.example.org",
                "alice@example.org",
                "Example identity server (demo)",
                "Example Ltd",
                "ed25519:a_demo",
            ] {
                assert!(page.contains(fact), "no-JS page lacks {fact}");
            }
            screenshot(&client, "nojs-pending").await;
            // Deny first, then think better of it: going back decides nothing.
            click_button(&client, "Deny…").await;
            wait_for_source(&client, "Deny: keep the link?").await;
            client
                .find(Locator::LinkText("Go back without deciding"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for_source(&client, "Approve…").await;
            click_button(&client, "Approve…").await;
            wait_for_source(&client, "Approve: remove the link?").await;
            screenshot(&client, "nojs-confirm").await;
            click_button(&client, "Yes, approve").await;
            let done = wait_for_source(&client, "id=\"outcome\"").await;
            assert!(done.contains("Approved"), "{done}");
            assert!(done.contains("Download the signed receipt"));
            screenshot(&client, "nojs-approved").await;
            // Reloading shows the outcome, and offers no buttons.
            // (The page names the owner: nothing may cache it.)
            client.goto(&link).await.unwrap();
            let again = wait_for_source(&client, "id=\"outcome\"").await;
            assert!(!again.contains("Approve…"));
        })
        .await;
    assert_eq!(status_of(&assent, &token).await, "approved");
    // The receipt's consent record says how: the form without JavaScript.
    let receipt = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}/receipt")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let document = assent_e2e::recipes::verify_decision(&assent.base, &receipt)
        .await
        .unwrap();
    assert_eq!(
        document["consent_record"]["event"]["method"],
        "consent page form without JavaScript"
    );
}

#[tokio::test]
async fn forged_or_cross_site_forms_decide_nothing() {
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let consent = assent.stdout_line_containing("/consent/").unwrap();
    let token = consent.rsplit('/').next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let post = |form: &'static str, site: Option<&'static str>| {
        let mut request = http
            .post(&consent)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    for (form, site, status) in [
        ("decision=approve&step=confirm", None, 403),
        ("decision=approve&step=confirm&csrf=AAAA", None, 403),
        ("decision=approve&step=review", Some("cross-site"), 403),
        ("decision=maybe&step=review", None, 400),
        ("decision=approve", None, 400),
    ] {
        let response = post(form, site).await.unwrap();
        assert_eq!(response.status(), status, "{form} {site:?}");
        let page = response.text().await.unwrap();
        assert!(page.contains("was not recorded"), "{page}");
    }
    // The review step hands out the proof; with it the decision goes through.
    let review = post("decision=deny&step=review", Some("same-origin"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = review.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf: String = review[at..].chars().take_while(|c| *c != '"').collect();
    assert_eq!(status_of(&assent, &token).await, "pending");
    // A proof for deny does not approve.
    let swapped = format!("decision=approve&step=confirm&csrf={csrf}");
    let response = http
        .post(&consent)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(swapped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(status_of(&assent, &token).await, "pending");
    let response = http
        .post(&consent)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=deny&step=confirm&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&assent, &token).await, "denied");
    let page = reqwest::get(&consent).await.unwrap();
    assert_eq!(page.headers()["cache-control"], "no-store, private");
    // Hostile-looking links are not echoed into the page's links (the
    // refusal page offers to start again).
    let odd = http
        .post(assent.url("/consent/..%2F..%2Fadmin"))
        .header("sec-fetch-site", "cross-site")
        .body("decision=approve&step=review")
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 403);
    let odd = odd.text().await.unwrap();
    assert!(odd.contains("Start again"), "{odd}");
    assert!(!odd.contains("../../admin"), "{odd}");
    // An unknown link says so.
    let unknown = reqwest::get(assent.url(&format!("/consent/{}", "A".repeat(51))))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("This link is not known"));
}
