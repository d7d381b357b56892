//! What operators run Assent with: a metrics listener of its own.

use assent_e2e::{free_port, Assent, Options};

#[tokio::test]
async fn with_metrics_listen_metrics_are_served_there_and_not_publicly() {
    let port = free_port();
    let assent = Assent::start(Options {
        config: Some(format!("metrics_listen = \"127.0.0.1:{port}\"\n")),
        ..Options::default()
    })
    .await;
    let public = reqwest::get(assent.url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");
    let private = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    let text = private.text().await.unwrap();
    assert!(text.contains("assent_outbox_pending"), "{text}");
    // Nothing else is served there.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 404);

    // Without it, /metrics is on the public listener as before.
    let plain = Assent::start(Options::default()).await;
    let metrics = reqwest::get(plain.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn with_log_format_json_every_log_line_is_a_json_object() {
    let assent = Assent::start(Options {
        config: Some("log_format = \"json\"\n".to_owned()),
        ..Options::default()
    })
    .await;
    // A refusal logs a line at info.
    let refused = reqwest::Client::new()
        .post(assent.url("/_matrix/identity/v2/3pid/unbind"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = assent.stderr_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("Assent is listening")),
        "{log}"
    );
}
