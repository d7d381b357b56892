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
