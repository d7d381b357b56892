//! The admin console in headless Chromium: sign-in, filters, search, paging,
//! a request's detail, each action with its confirmation, an ended session,
//! and sign-out.

use assent_e2e::admin::{self, ADMIN_TOKEN};
use assent_e2e::browser::{console_errors, screenshot, wait_for_text, Browser};
use assent_e2e::smtp::SmtpServer;
use assent_e2e::Assent;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn start(smtp: &SmtpServer) -> Assent {
    admin::start(smtp, "[]").await
}

async fn hold(assent: &Assent, local: &str, server: &str) -> String {
    let extra = json!({"initiator": "deactivation", "reason": "The account was deactivated."});
    admin::hold(assent, local, server, extra).await
}

/// Console errors other than the 401s a signed-out console expects (its
/// session check, a refused token): a CSP violation or a panic shows here.
async fn unexpected_errors(client: &Client) -> Vec<String> {
    console_errors(client)
        .await
        .into_iter()
        .filter(|e| !e.contains("status of 401 (Unauthorized)"))
        .collect()
}

async fn click(client: &Client, label: &str) {
    let xpath = format!("//*[self::button or self::a][normalize-space()='{label}']");
    let started = Instant::now();
    loop {
        if let Ok(element) = client.find(Locator::XPath(&xpath)).await {
            if element.is_enabled().await.unwrap_or(false) {
                element.click().await.unwrap();
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no enabled {label:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(client: &Client, token: &str) {
    let input = client
        .wait()
        .for_element(Locator::Id("admin-token"))
        .await
        .unwrap();
    input.send_keys(token).await.unwrap();
    click(client, "Sign in").await;
}

/// The request ids in the list, in order.
async fn listed(client: &Client) -> Vec<String> {
    let value = client
        .execute(
            "return [...document.querySelectorAll('table.requests tbody a')].map(a => a.getAttribute('href').split('/').pop())",
            vec![],
        )
        .await
        .unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for_rows(client: &Client, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let rows = listed(client).await;
        if rows.len() == n {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} rows, not {n}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(assent: &Assent, id: &str) -> String {
    let detail: Value = reqwest::Client::new()
        .get(assent.url(&format!("/_assent/v1/admin/requests/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    detail["request"]["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_signs_in_filters_searches_pages_and_signs_out() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = start(&smtp).await;
    let mut ids = Vec::new();
    for i in 0..55 {
        let server = if i % 11 == 0 {
            "flood.example.net"
        } else {
            "hs.example.org"
        };
        ids.push(hold(&assent, &format!("user{i:02}"), server).await);
    }
    let browser = Browser::start().await;
    let base = assent.base.clone();
    // Newest first: ids begin with their creation time, and two made in the
    // same millisecond are listed by id, so the list's order is the ids'.
    let mut newest = ids.clone();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    browser
        .with_session(move |client| async move {
            client.goto(&format!("{base}/admin")).await.unwrap();
            wait_for_text(&client, "Sign in").await;
            // A wrong token is refused in words; the right one lets in.
            sign_in(&client, "not-the-token-not-the-token-not-the-token").await;
            wait_for_text(&client, "This token is not accepted.").await;
            client
                .find(Locator::Id("admin-token"))
                .await
                .unwrap()
                .clear()
                .await
                .unwrap();
            sign_in(&client, ADMIN_TOKEN).await;
            wait_for_text(&client, "Requests").await;
            assert_eq!(wait_for_rows(&client, 50).await, newest[..50]);
            let text = wait_for_text(&client, "Pending 55").await;
            assert!(text.contains("All 55"), "{text}");
            screenshot(&client, "admin-list").await;

            // Paging: the older five, then back to the newest.
            click(&client, "Older →").await;
            assert_eq!(wait_for_rows(&client, 5).await, newest[50..]);
            click(&client, "← Newest").await;
            wait_for_rows(&client, 50).await;

            // Filter by requesting server through the form.
            let server = client
                .find(Locator::Css("input[name=requesting_server]"))
                .await
                .unwrap();
            server.send_keys("flood.example.net").await.unwrap();
            click(&client, "Apply").await;
            let flood = wait_for_rows(&client, 5).await;
            let expected: Vec<String> = newest
                .iter()
                .filter(|id| {
                    let i = ids.iter().position(|x| x == *id).unwrap();
                    i % 11 == 0
                })
                .cloned()
                .collect();
            assert_eq!(flood, expected);
            wait_for_text(&client, "All 5").await;
            click(&client, "Clear").await;
            wait_for_rows(&client, 50).await;

            // Search by address, then by a Matrix ID's localpart.
            let search = client.find(Locator::Css("input[name=q]")).await.unwrap();
            search.send_keys("user07@example.org").await.unwrap();
            click(&client, "Apply").await;
            assert_eq!(wait_for_rows(&client, 1).await, [ids[7].clone()]);
            client.goto(&format!("{base}/admin?q=USER1")).await.unwrap();
            assert_eq!(wait_for_rows(&client, 10).await.len(), 10);
            client
                .goto(&format!("{base}/admin?q=nobody"))
                .await
                .unwrap();
            wait_for_text(&client, "No requests match.").await;

            // A status tab.
            client.goto(&format!("{base}/admin")).await.unwrap();
            wait_for_rows(&client, 50).await;
            click(&client, "Cancelled 0").await;
            wait_for_text(&client, "No requests match.").await;

            // The homeservers table names the flooding one.
            client.goto(&format!("{base}/admin")).await.unwrap();
            wait_for_text(&client, "flood.example.net").await;

            assert_eq!(unexpected_errors(&client).await, Vec::<String>::new());
            // Sign out: back to the sign-in form, and the session is gone.
            click(&client, "Sign out").await;
            wait_for_text(&client, "Admin token").await;
            client.refresh().await.unwrap();
            wait_for_text(&client, "Admin token").await;
        })
        .await;
    assert_eq!(assent.count("admin_sessions").await, 0);
}

#[tokio::test]
async fn an_admin_reads_the_timeline_and_retries_resends_and_cancels_with_confirmation() {
    // The first email is refused for good: it is given up, so there is
    // something to retry.
    let smtp = SmtpServer::start(&[550], 0);
    let assent = start(&smtp).await;
    let id = hold(&assent, "dora", "hs.example.org").await;
    let started = Instant::now();
    while assent.count("outbox WHERE state = 'given_up'").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the email was never given up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let browser = Browser::start().await;
    let base = assent.base.clone();
    let request = id.clone();
    browser
        .with_session(move |client| async move {
            // A direct link to a request asks to sign in, then shows it.
            client
                .goto(&format!("{base}/admin/requests/{request}"))
                .await
                .unwrap();
            sign_in(&client, ADMIN_TOKEN).await;
            let text = wait_for_text(&client, "What happened").await;
            for fact in [
                "dora@example.org",
                "@dora:hs.example.org",
                "hs.example.org",
                "deactivation",
                "The account was deactivated.",
                "Request received",
                "Email given up",
            ] {
                assert!(text.contains(fact), "{fact} in:\n{text}");
            }
            screenshot(&client, "admin-detail").await;

            // Retry, confirmed: the email goes out this time.
            click(&client, "Retry given-up work").await;
            wait_for_text(&client, "Queue the given-up emails").await;
            // The dialog takes focus once it is drawn, a frame after its
            // text may already be there.
            let started = Instant::now();
            loop {
                let focused = client
                    .execute("return document.activeElement.id", vec![])
                    .await
                    .unwrap();
                if focused == "confirm-yes" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "focus moves to the confirmation, not to {focused:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            click(&client, "Yes, retry").await;
            wait_for_text(&client, "1 queued again.").await;
            let started = Instant::now();
            loop {
                client.refresh().await.unwrap();
                let text = wait_for_text(&client, "What happened").await;
                if text.contains("Consent email sent") {
                    assert!(text.contains("Re-queued by an administrator"), "{text}");
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "the retried email was never sent:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }

            // Resend: asked first; "Keep as is" changes nothing.
            click(&client, "Resend email").await;
            wait_for_text(&client, "Send a new consent link to dora@example.org?").await;
            click(&client, "Keep as is").await;
            click(&client, "Resend email").await;
            click(&client, "Yes, resend").await;
            wait_for_text(&client, "A new link is on its way").await;
            wait_for_text(&client, "Email resent by an administrator").await;

            // Cancel, confirmed.
            click(&client, "Cancel request").await;
            wait_for_text(&client, "This cannot be undone.").await;
            screenshot(&client, "admin-confirm-cancel").await;
            click(&client, "Yes, cancel it").await;
            wait_for_text(&client, "Cancelled: nothing will be unbound.").await;
            let text = wait_for_text(&client, "cancelled").await;
            assert!(text.contains("Decided"), "{text}");
            // Nothing is left to do on a decided request.
            for label in ["Resend email", "Cancel request"] {
                let button = client
                    .find(Locator::XPath(&format!(
                        "//button[normalize-space()='{label}']"
                    )))
                    .await
                    .unwrap();
                assert!(!button.is_enabled().await.unwrap(), "{label} is disabled");
            }
            assert_eq!(unexpected_errors(&client).await, Vec::<String>::new());
        })
        .await;
    assert_eq!(status_of(&assent, &id).await, "cancelled");
    assert_eq!(
        smtp.wait_for(2, Duration::from_secs(10)).await.len(),
        2,
        "the retried and the resent email"
    );
}

#[tokio::test]
async fn an_ended_session_says_so_and_signing_in_again_goes_on() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = start(&smtp).await;
    let id = hold(&assent, "erin", "hs.example.org").await;
    let browser = Browser::start().await;
    let base = assent.base.clone();
    let db = assent.database_url.clone();
    let data_dir = assent.data_dir.clone();
    browser
        .with_session(move |client| async move {
            client
                .goto(&format!("{base}/admin/requests/{id}"))
                .await
                .unwrap();
            sign_in(&client, ADMIN_TOKEN).await;
            wait_for_text(&client, "What happened").await;
            // The session ends on the server (as when it expires).
            end_sessions(db.as_deref(), &data_dir).await;
            click(&client, "Cancel request").await;
            click(&client, "Yes, cancel it").await;
            wait_for_text(&client, "Your session has ended").await;
            screenshot(&client, "admin-session-ended").await;
            sign_in(&client, ADMIN_TOKEN).await;
            wait_for_text(&client, "What happened").await;
        })
        .await;
    assert_eq!(
        status_of(&assent, &hold_id(&assent).await).await,
        "pending",
        "the refused cancel changed nothing"
    );
}

async fn hold_id(assent: &Assent) -> String {
    let list: Value = reqwest::Client::new()
        .get(assent.url("/_assent/v1/admin/requests"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["requests"][0]["id"].as_str().unwrap().to_owned()
}

async fn end_sessions(database_url: Option<&str>, data_dir: &std::path::Path) {
    match database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query("DELETE FROM admin_sessions")
                .execute(&pool)
                .await
                .unwrap();
        }
        None => {
            let pool =
                sqlx::SqlitePool::connect(&format!("sqlite://{}/assent.db", data_dir.display()))
                    .await
                    .unwrap();
            sqlx::query("DELETE FROM admin_sessions")
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}
