//! The relay worker against real HTTP receivers on loopback: an upstream
//! that records the replayed unbind, a webhook that fails before it accepts,
//! and the expiry job, on requests held by signed unbinds (the intake test
//! harness: test homeserver, test clock, SQLite).

use super::*;
use crate::config::RelaySink;
use crate::lifecycle::expire_due;
use crate::storage::AuditKind;
use crate::storage::OutboxState;
use crate::test_support::Harness;
use assent_shared::RequestStatus;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a receiver saw: method, path and query, headers, body.
type Seen = Arc<Mutex<Vec<(String, String, HeaderMap, Bytes)>>>;

/// An HTTP server that records every request and answers the first
/// `failures` with 503, then `status`.
async fn receiver(failures: usize, status: u16) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(
        move |State((seen, count)): State<(Seen, Arc<AtomicUsize>)>, request: Request<Body>| async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map_or_else(String::new, |pq| pq.as_str().to_owned());
            seen.lock()
                .unwrap()
                .push((parts.method.to_string(), path, parts.headers, bytes));
            let n = count.fetch_add(1, Ordering::SeqCst);
            let code = if n < failures { 503 } else { status };
            (StatusCode::from_u16(code).unwrap(), "{\"errcode\":\"X\"}")
        },
    );
    let app = app.with_state((seen.clone(), count));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn decide(h: &Harness, token: &str, word: &str) -> StatusCode {
    let request = Request::post(format!("/_assent/v1/consent/{token}/decision"))
        .header("content-type", "application/json")
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41000))))
        .body(Body::from(json!({ "decision": word }).to_string()))
        .unwrap();
    h.send(request).await.0
}

/// Works the relay outbox as the worker would, moving the test clock past
/// each retry, until nothing is due any more; returns the rounds taken.
async fn relay_all(h: &Harness) -> usize {
    for round in 1..=20 {
        let now = h.state.now_ms();
        let rows = h
            .state
            .repo
            .claim_outbox(OutboxKind::Relay, "test", now, 60_000, 16)
            .await
            .unwrap();
        if rows.is_empty() {
            return round;
        }
        for row in rows {
            attempt(&h.state, "test", row).await;
        }
        h.clock.0.fetch_add(2 * 3_600_000, Ordering::SeqCst);
    }
    panic!("the relay outbox never emptied");
}

fn relays(rows: &[crate::storage::OutboxRow]) -> Vec<&crate::storage::OutboxRow> {
    rows.iter()
        .filter(|r| r.kind == OutboxKind::Relay)
        .collect()
}

#[tokio::test]
async fn an_approval_is_replayed_byte_for_byte_and_the_webhook_gets_it_once_after_failures() {
    let (upstream, replayed) = receiver(0, 200).await;
    let (hook, hooked) = receiver(2, 200).await;
    let h = Harness::new(|c| {
        let is = &mut c.identity_servers[0];
        is.upstream = url::Url::parse(&upstream).unwrap();
        is.relay = vec![
            RelaySink::Replay,
            RelaySink::Webhook {
                url: url::Url::parse(&format!("{hook}/assent-hook?secret=s3")).unwrap(),
            },
        ];
    })
    .await;
    let (id, token) = h.hold("alice").await;
    let stored = h.state.repo.request(&id).await.unwrap().unwrap();
    assert!(
        replayed.lock().unwrap().is_empty(),
        "nothing goes out before a decision"
    );
    assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
    relay_all(&h).await;

    // The upstream got the homeserver's own request, once.
    let replays = replayed.lock().unwrap().clone();
    assert_eq!(replays.len(), 1);
    let raw = stored.raw.unwrap();
    let (method, path, headers, body) = &replays[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", raw.path.as_str())
    );
    assert_eq!(
        body.as_ref(),
        raw.body.as_slice(),
        "the body, byte for byte"
    );
    let authorization = raw
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(headers["authorization"], authorization.as_str());
    assert_eq!(headers["content-type"], "application/json");

    // The webhook failed twice, then took the signed document, once.
    let hooks = hooked.lock().unwrap().clone();
    assert_eq!(hooks.len(), 3);
    let decided = h.state.repo.request(&id).await.unwrap().unwrap();
    let decision_id = decided.decision_id.clone().unwrap();
    for (_, path, headers, body) in &hooks {
        assert_eq!(path, "/assent-hook?secret=s3");
        assert_eq!(headers["idempotency-key"], decision_id.as_str());
        assert_eq!(
            body.as_ref(),
            decided.decision_doc.as_deref().unwrap().as_bytes()
        );
    }
    let doc: Value = serde_json::from_slice(&hooks[2].3).unwrap();
    assert_eq!(doc["decision"], "approve");
    let object: ruma_common::CanonicalJsonObject = serde_json::from_value(doc).unwrap();
    let mut keys = ruma_signatures::PublicKeyMap::new();
    keys.insert(
        h.state.config.server_name.clone(),
        std::collections::BTreeMap::from([(
            h.state.key.key_id().to_owned(),
            ruma_common::serde::Base64::parse(h.state.key.public_key_base64()).unwrap(),
        )]),
    );
    ruma_signatures::verify_json(&keys, &object).unwrap();

    // Both rows are done, and every attempt is in the audit trail.
    let rows = h.state.repo.outbox_for(&id).await.unwrap();
    assert!(
        relays(&rows).iter().all(|r| r.state == OutboxState::Done),
        "{rows:?}"
    );
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    let kinds: Vec<&str> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "relay_failed").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "relay_delivered").count(),
        2,
        "{kinds:?}"
    );
    // A webhook URL's query (a secret, often) is not in the trail.
    let all = serde_json::to_string(&trail.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("s3"), "{all}");
}

#[tokio::test]
async fn a_denial_unbinds_nothing_and_a_refusal_is_recorded_not_retried() {
    let (upstream, replayed) = receiver(0, 200).await;
    let (hook, hooked) = receiver(0, 400).await;
    let h = Harness::new(|c| {
        let is = &mut c.identity_servers[0];
        is.upstream = url::Url::parse(&upstream).unwrap();
        is.relay = vec![
            RelaySink::Replay,
            RelaySink::Webhook {
                url: url::Url::parse(&hook).unwrap(),
            },
        ];
    })
    .await;
    let (id, token) = h.hold("bob").await;
    assert_eq!(decide(&h, &token, "deny").await, StatusCode::OK);
    relay_all(&h).await;
    assert!(
        replayed.lock().unwrap().is_empty(),
        "a denial is never replayed"
    );
    assert_eq!(hooked.lock().unwrap().len(), 1, "a 4xx is not retried");
    let rows = h.state.repo.outbox_for(&id).await.unwrap();
    let relay_rows = relays(&rows);
    assert_eq!(relay_rows.len(), 1, "only the webhook applies to a denial");
    assert_eq!(relay_rows[0].state, OutboxState::GivenUp);
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    let refused = trail
        .iter()
        .find(|e| e.is(AuditKind::RelayRefused))
        .unwrap();
    assert_eq!(refused.detail["status"], 400);
    assert_eq!(refused.detail["body"], "{\"errcode\":\"X\"}");
}

#[tokio::test]
async fn the_expiry_job_expires_overdue_requests_and_tells_webhooks_only() {
    let (upstream, replayed) = receiver(0, 200).await;
    let (hook, hooked) = receiver(0, 200).await;
    let h = Harness::new(|c| {
        let is = &mut c.identity_servers[0];
        is.upstream = url::Url::parse(&upstream).unwrap();
        is.relay = vec![
            RelaySink::Replay,
            RelaySink::Webhook {
                url: url::Url::parse(&hook).unwrap(),
            },
        ];
    })
    .await;
    let (old, _) = h.hold("carol").await;
    assert_eq!(
        expire_due(&h.state, 100).await.unwrap(),
        0,
        "nothing is due yet"
    );
    let ttl = i64::try_from(h.state.config.request_ttl.as_millis()).unwrap();
    h.clock.0.fetch_add(ttl - 1000, Ordering::SeqCst);
    let (young, _) = h.hold("dave").await;
    h.clock.0.fetch_add(2000, Ordering::SeqCst);
    assert_eq!(expire_due(&h.state, 100).await.unwrap(), 1);
    assert_eq!(expire_due(&h.state, 100).await.unwrap(), 0, "once only");
    let expired = h.state.repo.request(&old).await.unwrap().unwrap();
    assert_eq!(expired.status, RequestStatus::Expired);
    let still = h.state.repo.request(&young).await.unwrap().unwrap();
    assert_eq!(still.status, RequestStatus::Pending);
    relay_all(&h).await;
    assert!(
        replayed.lock().unwrap().is_empty(),
        "an expiry unbinds nothing"
    );
    let hooks = hooked.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1);
    let doc: Value = serde_json::from_slice(&hooks[0].3).unwrap();
    assert_eq!(doc["decision"], "expire");
    assert_eq!(doc["request_id"], old.as_str());
}

#[tokio::test]
async fn a_refused_replay_falls_back_to_the_next_unbinding_sink_and_a_delivered_one_does_not() {
    let (upstream, replayed) = receiver(0, 403).await;
    let (internal, unbound) = receiver(0, 200).await;
    let h = Harness::new(|c| {
        let is = &mut c.identity_servers[0];
        is.upstream = url::Url::parse(&upstream).unwrap();
        is.relay = vec![
            RelaySink::Replay,
            RelaySink::SydentInternal {
                url: url::Url::parse(&internal).unwrap(),
            },
        ];
    })
    .await;
    let (id, token) = h.hold("frank").await;
    assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
    relay_all(&h).await;
    assert_eq!(
        replayed.lock().unwrap().len(),
        1,
        "the replay was tried once"
    );
    let calls = unbound.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "then the fallback, once");
    let (_, path, _, body) = &calls[0];
    assert_eq!(path, "/_matrix/identity/internal/unbind");
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["medium"], "email");
    assert_eq!(body["mxid"], h.hs_mxid("frank"));
    let rows = h.state.repo.outbox_for(&id).await.unwrap();
    let relay_rows = relays(&rows);
    assert_eq!(relay_rows.len(), 1, "one row for the unbinding sinks");
    assert_eq!(relay_rows[0].state, OutboxState::Done);
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    let refused = trail
        .iter()
        .find(|e| e.is(AuditKind::RelayRefused))
        .unwrap();
    assert_eq!(refused.detail["sink"], "replay");
    assert_eq!(refused.detail["status"], 403);
    let delivered = trail
        .iter()
        .find(|e| e.is(AuditKind::RelayDelivered))
        .unwrap();
    assert_eq!(delivered.detail["sink"], "sydent-internal");
    assert_eq!(delivered.detail["fallback"], 1);

    // When the first unbinding sink delivers, the fallback is left alone.
    let (upstream, replayed) = receiver(0, 200).await;
    let (internal, unbound) = receiver(0, 200).await;
    let h = Harness::new(|c| {
        let is = &mut c.identity_servers[0];
        is.upstream = url::Url::parse(&upstream).unwrap();
        is.relay = vec![
            RelaySink::Replay,
            RelaySink::SydentInternal {
                url: url::Url::parse(&internal).unwrap(),
            },
        ];
    })
    .await;
    let (_, token) = h.hold("gina").await;
    assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
    relay_all(&h).await;
    assert_eq!(replayed.lock().unwrap().len(), 1);
    assert!(unbound.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_sink_that_keeps_failing_is_given_up_after_the_configured_horizon() {
    let (hook, hooked) = receiver(usize::MAX, 200).await;
    let h = Harness::new(|c| {
        c.relay_give_up_after = std::time::Duration::from_secs(3 * 3600);
        c.identity_servers[0].relay = vec![RelaySink::Webhook {
            url: url::Url::parse(&hook).unwrap(),
        }];
    })
    .await;
    let (id, token) = h.hold("kim").await;
    assert_eq!(decide(&h, &token, "deny").await, StatusCode::OK);
    // Each round moves the clock two hours: tried at 0 h and 2 h, and at
    // 4 h, past the three hours configured, given up without another send.
    relay_all(&h).await;
    assert_eq!(hooked.lock().unwrap().len(), 2);
    let rows = h.state.repo.outbox_for(&id).await.unwrap();
    assert_eq!(relays(&rows)[0].state, OutboxState::GivenUp);
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    let kinds: Vec<&str> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "relay_failed").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "relay_given_up").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_request_with_nothing_to_replay_falls_back_and_busy_answers_are_retried() {
    let (internal, unbound) = receiver(0, 200).await;
    let (hook, hooked) = receiver(0, 429).await;
    let h = Harness::new(|c| {
        c.identity_servers[0].relay = vec![
            RelaySink::Replay,
            RelaySink::SydentInternal {
                url: url::Url::parse(&internal).unwrap(),
            },
            RelaySink::Webhook {
                url: url::Url::parse(&format!("{hook}/?key=sekrit")).unwrap(),
            },
        ];
    })
    .await;
    // Integrated mode: the identity server asked, so there is no original
    // homeserver request to replay.
    let request = Request::post("/_assent/v1/requests")
        .header("content-type", "application/json")
        .header(
            "authorization",
            "Bearer integrated-token-for-tests-0123456789abcdef",
        )
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41002))))
        .body(Body::from(
            json!({
                "mxid": "@lena:hs.example.org",
                "threepid": {"medium": "email", "address": "lena@example.org"},
                "requesting_server": "hs.example.org",
            })
            .to_string(),
        ))
        .unwrap();
    let (status, created) = h.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = h.token_of(&id).await;
    assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
    let now = h.state.now_ms();
    let claimed = h
        .state
        .repo
        .claim_outbox(OutboxKind::Relay, "test", now, 60_000, 16)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        2,
        "the unbinding sinks' row and the webhook's"
    );
    for row in claimed {
        attempt(&h.state, "test", row).await;
    }
    assert_eq!(
        unbound.lock().unwrap().len(),
        1,
        "replay unusable: sydent-internal instead"
    );
    assert_eq!(hooked.lock().unwrap().len(), 1);
    let rows = h.state.repo.outbox_for(&id).await.unwrap();
    let hook_row = relays(&rows)
        .into_iter()
        .find(|r| r.sink.as_deref() == Some("webhook"))
        .unwrap();
    assert_eq!(hook_row.state, OutboxState::Pending, "429 is retried later");
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    assert!(trail.iter().any(|e| e.is(AuditKind::RelayUnusable)));
    let delivered = trail
        .iter()
        .find(|e| e.is(AuditKind::RelayDelivered))
        .unwrap();
    assert_eq!(delivered.detail["sink"], "sydent-internal");
    let all = serde_json::to_string(&trail.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("sekrit"), "{all}");
}
