//! Decisions carried out, end to end: the real binary in front of a real
//! sydent, requests signed the way Synapse signs them, the owner's link read
//! from the email Assent wrote, and sydent's own lookup as the judge.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::sydent::Sydent;
use assent_e2e::{Assent, Options};
use std::path::Path;
use std::time::{Duration, Instant};

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";

/// The consent token in the email Assent wrote to `address`.
async fn token_mailed_to(mail_dir: &Path, address: &str) -> String {
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(mail_dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.replace("=\r\n", ""))
                .find(|text| text.contains(&format!("To: {address}")))
        });
        if let Some(text) = found {
            let at = text.find("/consent/").expect("a consent link") + "/consent/".len();
            return text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no email to {address} in {}",
            mail_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hold(assent: &Assent, hs: &Homeserver, local: &str, address: &str) {
    let body = hs.unbind_body(local, address);
    let authorization = hs.authorization("POST", V2, IS_NAME, &body);
    let response = reqwest::Client::new()
        .post(assent.url(V2))
        .header("host", IS_NAME)
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{address} is held");
}

async fn decide(assent: &Assent, token: &str, word: &str) {
    let response = reqwest::Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
        .json(&serde_json::json!({ "decision": word }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{word}");
}

#[tokio::test]
async fn with_the_sydent_internal_sink_approve_unbinds_at_sydent_and_deny_does_not() {
    let sydent = Sydent::start(IS_NAME).await;
    let hs = Homeserver::new("hs.test", 4);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\n\
         relay = [{{ kind = \"sydent-internal\", url = \"{}\" }}]\n",
        hs.pinned_toml(),
        sydent.base,
        sydent.internal
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let mail = assent.data_dir.join("mail");
    for (local, address) in [
        ("alice", "alice@example.org"),
        ("carol", "carol@example.org"),
    ] {
        sydent.bind(address, &hs.mxid(local)).await;
        hold(&assent, &hs, local, address).await;
        // Held: the binding is still there until the owner decides.
        assert_eq!(sydent.lookup(address).await, Some(hs.mxid(local)));
    }

    let alice = token_mailed_to(&mail, "alice@example.org").await;
    let carol = token_mailed_to(&mail, "carol@example.org").await;
    decide(&assent, &carol, "deny").await;
    decide(&assent, &alice, "approve").await;

    // The approval reaches sydent: its own lookup no longer finds alice.
    let started = Instant::now();
    while sydent.lookup("alice@example.org").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the approved unbind never reached sydent:\n{}",
            assent.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The denial changed nothing there, also after the relay had its time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sydent.lookup("carol@example.org").await,
        Some(hs.mxid("carol"))
    );
    assert_eq!(assent.count("outbox WHERE kind = 'relay'").await, 1);
    assert_eq!(
        assent
            .count("audit_events WHERE kind = 'relay_delivered'")
            .await,
        1
    );
}
