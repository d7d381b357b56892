//! What the admin API and console tests share: an `assent serve` with an
//! admin token, an identity server taking integrated-mode requests, and a
//! real SMTP server behind it; and a way to hold requests.

use crate::smtp::SmtpServer;
use crate::{Assent, Options};
use serde_json::{json, Value};

/// The admin token the instance accepts.
pub const ADMIN_TOKEN: &str = "admin-token-for-the-admin-tests-0123456789";
/// The identity server's integrated-mode token.
pub const IS_TOKEN: &str = "integrated-token-for-the-admin-tests-0123456789";

/// Starts Assent sending mail to `smtp` (one attempt per message, so a
/// refused message is given up at once) with `relay` as the identity
/// server's relay list (TOML, e.g. `[{ kind = "webhook", url = "…" }]`).
pub async fn start(smtp: &SmtpServer, relay: &str) -> Assent {
    let config = format!(
        r#"
[email]
transport = "smtp"
smtp_url = "{smtp_url}"
timeout = "1s"
retry_initial = "300ms"
retry_max = "1s"
max_attempts = 1

[admin]
tokens = ["{ADMIN_TOKEN}"]

[[identity_servers]]
name = "matrix.example.org"
display_name = "Example identity server"
operator = "Example Ltd"
upstream = "http://127.0.0.1:9/"
binding_check = "none"
api_tokens = ["{IS_TOKEN}"]
relay = {relay}
"#,
        smtp_url = smtp.url()
    );
    Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await
}

/// Holds a request for `@local:server` / `local@example.org` through
/// integrated intake, with `extra` fields merged in; returns its id.
pub async fn hold(assent: &Assent, local: &str, server: &str, extra: Value) -> String {
    let mut body = json!({
        "mxid": format!("@{local}:{server}"),
        "threepid": {"medium": "email", "address": format!("{local}@example.org")},
        "requesting_server": server,
        "initiator": "admin",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let response = reqwest::Client::new()
        .post(assent.url("/_assent/v1/requests"))
        .bearer_auth(IS_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("integrated intake answers");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("a JSON answer");
    body["id"].as_str().expect("an id").to_owned()
}
