//! The consent email, end to end: `assent serve` sending to a real SMTP
//! server (aiosmtpd) on loopback.

use assent_e2e::smtp::SmtpServer;
use assent_e2e::{Assent, Options};
use mail_parser::MessageParser;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const TOKEN: &str = "integrated-token-for-email-tests-0123456789";

fn config(smtp_url: &str, extra_email: &str) -> String {
    format!(
        r#"
[email]
transport = "smtp"
smtp_url = "{smtp_url}"
from = "Identitätsdienst Beispiel <noreply@is.example.org>"
language = "de"
timeout = "1s"
retry_initial = "300ms"
retry_max = "1s"
{extra_email}

[[identity_servers]]
name = "matrix.example.org"
display_name = "Beispiel-Identitätsserver"
operator = "Beispiel GmbH"
upstream = "http://127.0.0.1:9/"
binding_check = "none"
api_tokens = ["{TOKEN}"]
"#
    )
}

/// Holds a request for `address` through integrated intake; returns its id.
async fn hold(assent: &Assent, local: &str) -> String {
    let response = reqwest::Client::new()
        .post(assent.url("/_assent/v1/requests"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "mxid": format!("@{local}:hs.example.org"),
            "threepid": {"medium": "email", "address": format!("{local}@example.org")},
            "requesting_server": "hs.example.org",
            "initiator": "admin",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn audit_kinds(assent: &Assent, request_id: &str) -> Vec<String> {
    let url = match &assent.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}/assent.db", assent.data_dir.display()),
    };
    let sql = "SELECT kind FROM audit_events WHERE request_id = $1 ORDER BY id";
    match &assent.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    }
}

/// The audit trail's details (JSON text) for one request, joined.
async fn audit_details(assent: &Assent, request_id: &str) -> String {
    let sql = "SELECT detail FROM audit_events WHERE request_id = $1 ORDER BY id";
    let rows: Vec<String> = match &assent.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        None => {
            let url = format!("sqlite://{}/assent.db", assent.data_dir.display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    rows.join("\n")
}

async fn wait_for_audit(assent: &Assent, request_id: &str, kind: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let kinds = audit_kinds(assent, request_id).await;
        if kinds.iter().any(|k| k == kind) {
            return kinds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} for {request_id}: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_owner_gets_one_readable_message_whose_link_opens_their_request() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = Assent::start(Options {
        config: Some(config(&smtp.url(), "")),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "erika").await;
    let raw = smtp.wait_for(1, Duration::from_secs(20)).await.remove(0);
    let message = MessageParser::default().parse(&raw).unwrap();

    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Identitätsdienst Beispiel"));
    assert_eq!(from.address(), Some("noreply@is.example.org"));
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("erika@example.org")
    );
    assert_eq!(
        message.subject(),
        Some("hs.example.org möchte Ihre Adresse von @erika:hs.example.org trennen")
    );
    let message_id = message.message_id().unwrap().to_owned();
    assert!(message_id.ends_with("@is.example.org"), "{message_id}");
    assert!(message_id.contains(&id));
    assert!(message.date().is_some());
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert!(message.header_raw("List-Id").is_none());

    let text = message.body_text(0).unwrap().into_owned();
    let html = message.body_html(0).unwrap().into_owned();
    for part in [&text, &html] {
        for fact in [
            "Beispiel-Identitätsserver",
            "Beispiel GmbH",
            "@erika:hs.example.org",
            "erika@example.org",
            "hs.example.org",
            "Nichts ändert sich, solange Sie nicht zustimmen.",
        ] {
            assert!(part.contains(fact), "{fact} missing from:\n{part}");
        }
    }
    assert!(!html.contains("<img") && !html.contains("src="));

    // The link in the text is the one in the HTML, and it opens this request.
    let start = text.find(&format!("{}/consent/", assent.base)).unwrap();
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(html.contains(&link));
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 200);
    let token = link.rsplit('/').next().unwrap();
    let view: serde_json::Value = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["request_id"], id.as_str());
    // And the owner can decide through it; the first decision stands.
    let decide = |word: &'static str| {
        reqwest::Client::new()
            .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
            .json(&json!({ "decision": word }))
            .send()
    };
    let first = decide("deny").await.unwrap();
    assert_eq!(first.status(), 200);
    let second = decide("approve").await.unwrap();
    assert_eq!(second.status(), 409);
    let outcome: serde_json::Value = second.json().await.unwrap();
    assert_eq!(outcome["status"], "denied");

    let kinds = wait_for_audit(&assent, &id, "email_sent").await;
    assert_eq!(kinds.iter().filter(|k| *k == "email_sent").count(), 1);
    // Nothing names the owner or carries the link in the log.
    let log = assent.output_text();
    assert!(!log.contains("erika@example.org"), "address in the log");
    assert!(!log.contains(token), "token in the log");
    // And nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.log().len(), 1);
}

#[tokio::test]
async fn a_temporary_refusal_is_retried_and_delivered_once() {
    let smtp = SmtpServer::start(&[451], 0);
    let assent = Assent::start(Options {
        config: Some(config(&smtp.url(), "")),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "tim").await;
    smtp.wait_for(1, Duration::from_secs(20)).await;
    let kinds = wait_for_audit(&assent, &id, "email_sent").await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.starts_with("email_"))
            .collect::<Vec<_>>(),
        ["email_failed", "email_sent"]
    );
    let log = smtp.log();
    assert_eq!(log.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [451, 250]);
    assert_eq!(log[0].1, log[1].1, "the retry carries the same Message-ID");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.messages().len(), 1, "delivered once");
}

#[tokio::test]
async fn a_permanent_refusal_is_given_up_and_shows_in_the_audit_trail() {
    let smtp = SmtpServer::start(&[550], 0);
    let assent = Assent::start(Options {
        config: Some(config(&smtp.url(), "")),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "nobody").await;
    let kinds = wait_for_audit(&assent, &id, "email_given_up").await;
    assert!(!kinds.iter().any(|k| k == "email_sent"));
    // Why is recorded, without the address the server quoted.
    let details = audit_details(&assent, &id).await;
    assert!(details.contains("550"), "{details}");
    assert!(details.contains("<redacted>"), "{details}");
    assert!(!details.contains("nobody@example.org"), "{details}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.log().len(), 1, "not tried again");
    let log = assent.output_text();
    assert!(log.contains("email given up"));
    assert!(
        !log.contains("nobody@example.org"),
        "the server's error quoted the address; it must not reach the log"
    );
}

#[tokio::test]
async fn mail_waits_for_an_smtp_server_that_is_down_at_first() {
    let port = assent_e2e::free_port();
    let assent = Assent::start(Options {
        config: Some(config(&format!("smtp://127.0.0.1:{port}"), "")),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "late").await;
    wait_for_audit(&assent, &id, "email_failed").await;
    let smtp = SmtpServer::start_on(port, &[], 0);
    smtp.wait_for(1, Duration::from_secs(20)).await;
    wait_for_audit(&assent, &id, "email_sent").await;
}

/// SIGKILL while messages are in flight: after a restart every message
/// arrives, and only those in flight at the kill may arrive twice (with the
/// same Message-ID).
#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let smtp = SmtpServer::start(&[], 400);
    let mut assent = Assent::start(Options {
        config: Some(config(&smtp.url(), "")),
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(hold(&assent, &format!("k{n}")).await);
    }
    // Some, not all, delivered: then the process dies without warning.
    smtp.wait_for(2, Duration::from_secs(20)).await;
    assent.kill();
    // Messages whose DATA the server was reading at the kill still land
    // (it answers after 400 ms, to no one): they were in flight too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let accepted_at_kill: Vec<String> = smtp.log().into_iter().map(|(_, id)| id).collect();
    let at_kill = accepted_at_kill.len();
    assert!(
        at_kill < 12,
        "all were sent before the kill; the test proves nothing"
    );
    assent.restart().await;
    smtp.wait_for(12, Duration::from_secs(60)).await;
    for id in &ids {
        wait_for_audit(&assent, id, "email_sent").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for (code, message_id) in smtp.log() {
        assert_eq!(code, 250);
        *per_id.entry(message_id).or_default() += 1;
    }
    assert_eq!(per_id.len(), 12, "every request's message arrived");
    assert!(per_id.values().all(|n| *n <= 2), "{per_id:?}");
    // Only a message in flight at the kill (accepted, its row not yet
    // marked) may come again; none first sent after the restart does.
    for (message_id, n) in &per_id {
        if *n > 1 {
            assert!(
                accepted_at_kill.contains(message_id),
                "{message_id} was sent twice though first sent after the restart"
            );
        }
    }
}

#[tokio::test]
async fn file_mail_is_one_eml_per_message_named_by_request_and_attempt() {
    let assent = Assent::start(Options {
        config: Some(
            config("smtp://127.0.0.1:9", "")
                .replace("transport = \"smtp\"", "transport = \"file\""),
        ),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "filed").await;
    wait_for_audit(&assent, &id, "email_sent").await;
    let name = format!("email.{id}.initial.1.eml");
    let raw = std::fs::read(assent.data_dir.join("mail").join(&name)).unwrap();
    let message = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("filed@example.org")
    );
    assert!(message.body_text(0).unwrap().contains("/consent/"));
}

#[tokio::test]
async fn a_process_with_send_off_only_queues() {
    let assent = Assent::start(Options {
        config: Some(
            config("smtp://127.0.0.1:9", "send = false")
                .replace("transport = \"smtp\"", "transport = \"file\""),
        ),
        ..Options::default()
    })
    .await;
    let id = hold(&assent, "queued").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !assent.data_dir.join("mail").exists(),
        "nothing was written"
    );
    let kinds = audit_kinds(&assent, &id).await;
    assert!(!kinds.iter().any(|k| k.starts_with("email_")), "{kinds:?}");
    assert_eq!(
        assent.count("outbox").await,
        1,
        "the row waits for a sender"
    );
}
