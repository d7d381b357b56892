//! The decision API through the real router, on requests held by a signed
//! unbind (the intake test harness: test homeserver, test clock, SQLite).

use crate::storage::AuditKind;
use crate::test_support::Harness;
use assent_shared::RequestStatus;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

fn post(token: &str, body: &str) -> Request<Body> {
    Request::post(format!("/_assent/v1/consent/{token}/decision"))
        .header("content-type", "application/json")
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41000))))
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41000))))
        .body(Body::empty())
        .unwrap()
}

/// Status, Content-Disposition and body text.
async fn raw(h: &Harness, request: Request<Body>) -> (StatusCode, String, String) {
    use tower::ServiceExt;
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let disposition = response
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        disposition,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn decision(word: &str) -> String {
    json!({ "decision": word }).to_string()
}

#[tokio::test]
async fn the_first_decision_wins_and_later_ones_see_it() {
    let h = Harness::new(|_| {}).await;
    let (id, token) = h.hold("alice").await;

    // Looking never decides.
    let (status, view) = h.send(get(&format!("/_assent/v1/consent/{token}"))).await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );

    let (status, outcome) = h.send(post(&token, &decision("approve"))).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["request_id"], id.as_str());
    assert_eq!(outcome["status"], "approved");
    let decision_id = outcome["decision_id"].as_str().unwrap().to_owned();

    for word in ["approve", "deny"] {
        let (status, again) = h.send(post(&token, &decision(word))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            again["status"], "approved",
            "the stored outcome, not an error"
        );
        assert_eq!(again["decision_id"], decision_id.as_str());
    }
    let stored = h.stored("alice").await.unwrap();
    assert_eq!(stored.status, RequestStatus::Approved);
    let trail = h.state.repo.audit_trail(&id).await.unwrap();
    let decided: Vec<_> = trail.iter().filter(|e| e.is(AuditKind::Decided)).collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].actor.as_deref(), Some("owner"));

    // The receipt is the signed decision document.
    let response = raw(&h, get(&format!("/_assent/v1/consent/{token}/receipt"))).await;
    assert_eq!(response.0, StatusCode::OK);
    assert!(response.1.contains("attachment"), "{}", response.1);
    let document: Value = serde_json::from_str(&response.2).unwrap();
    assert_eq!(document["decision"], "approve");
    assert_eq!(document["request_id"], id.as_str());
    assert_eq!(document["decision_id"], decision_id.as_str());
    let server = h.state.config.server_name.as_str();
    assert!(document["signatures"][server].is_object(), "{document}");
}

#[tokio::test]
async fn deny_is_recorded_and_a_race_has_one_winner() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("bob").await;
    let (status, outcome) = h.send(post(&token, &decision("deny"))).await;
    assert_eq!(
        (status, outcome["status"].as_str()),
        (StatusCode::OK, Some("denied"))
    );

    let (_, token) = h.hold("carol").await;
    let (a, b) = tokio::join!(
        h.send(post(&token, &decision("approve"))),
        h.send(post(&token, &decision("deny")))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let winner = if a.0 == StatusCode::OK { &a.1 } else { &b.1 };
    let loser = if a.0 == StatusCode::OK { &b.1 } else { &a.1 };
    assert_eq!(
        winner["status"], loser["status"],
        "the loser sees the winner"
    );
}

#[tokio::test]
async fn past_its_time_a_request_answers_410_and_stays_expired() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("dave").await;
    let stored = h.stored("dave").await.unwrap();
    h.clock.0.store(stored.expires_at, Ordering::SeqCst);
    let (status, error) = h.send(post(&token, &decision("approve"))).await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (StatusCode::GONE, Some("M_EXPIRED"))
    );
    assert_eq!(
        h.stored("dave").await.unwrap().status,
        RequestStatus::Expired
    );
    // Recorded as expired, it stays 410.
    let (status, again) = h.send(post(&token, &decision("approve"))).await;
    assert_eq!(
        (status, again["errcode"].as_str()),
        (StatusCode::GONE, Some("M_EXPIRED"))
    );
}

#[tokio::test]
async fn bad_decisions_and_unknown_links_change_nothing() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("erin").await;
    for (body, status) in [
        ("", StatusCode::BAD_REQUEST),
        ("{}", StatusCode::BAD_REQUEST),
        (r#"{"decision":"maybe"}"#, StatusCode::BAD_REQUEST),
        (r#"{"decision":"Approve"}"#, StatusCode::BAD_REQUEST),
        (
            r#"{"decision":"approve","extra":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("[\"approve\"]", StatusCode::BAD_REQUEST),
        (&"x".repeat(2048), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (got, error) = h.send(post(&token, body)).await;
        assert_eq!(got, status, "{body:.40}: {error}");
    }
    let mut wrong = token.clone();
    wrong.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    for bad in [
        wrong.as_str(),
        "short",
        "not-a-token-at-all-but-43-characters-long!",
    ] {
        let (status, error) = h.send(post(bad, &decision("approve"))).await;
        assert_eq!(
            (status, error["errcode"].as_str()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
        );
    }
    let (status, _) = h
        .send(get(&format!("/_assent/v1/consent/{wrong}/receipt")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .send(get(&format!("/_assent/v1/consent/{token}/receipt")))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no receipt before a decision"
    );
    assert_eq!(
        h.stored("erin").await.unwrap().status,
        RequestStatus::Pending
    );
}

/// Holds a request through integrated mode, with the requester's own words.
async fn held_with_reason(h: &Harness, reason: &str) -> String {
    let request = Request::post("/_assent/v1/requests")
        .header("content-type", "application/json")
        .header(
            "authorization",
            "Bearer integrated-token-for-tests-0123456789abcdef",
        )
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41001))))
        .body(Body::from(
            json!({
                "mxid": "@mallory:hs.example.org",
                "threepid": {"medium": "email", "address": "m@example.org"},
                "requesting_server": "hs.example.org",
                "initiator": "admin",
                "reason": reason,
            })
            .to_string(),
        ))
        .unwrap();
    let (status, created) = h.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    h.token_of(&id).await
}

#[tokio::test]
async fn a_hostile_reason_is_shown_as_text_on_the_server_page() {
    let h = Harness::new(|_| {}).await;
    let token = held_with_reason(&h, "<script>alert(1)</script><b onclick=x>\"bold\"</b>").await;
    let (status, _, page) = raw(&h, get(&format!("/consent/{token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#60;b onclick=x&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(!page.contains("<b onclick"), "{page}");
    // The shell's own script stays; the notice for browsers without
    // scripts gives way to the page itself.
    assert!(page.contains("<script type=\"module\">init()</script>"));
    assert!(!page.contains("This page needs JavaScript"));
    assert!(page.contains("id=\"assent-nojs\""));
}

#[tokio::test]
async fn the_server_page_speaks_the_reader_s_language() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("gerda").await;
    let german = Request::get(format!("/consent/{token}"))
        .header("accept-language", "de-DE,de;q=0.9,en;q=0.5")
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41000))))
        .body(Body::empty())
        .unwrap();
    let (status, _, page) = raw(&h, german).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<html lang=\"de\">"), "{page}");
    assert!(page.contains("Zustimmen…"), "{page}");
    assert!(page.contains("Nichts ändert sich"), "{page}");
    // How long the data is kept (the default 90 days), in its language.
    assert!(
        page.contains("spätestens 90 Tage nach dem Ende dieser Anfrage gelöscht"),
        "{page}"
    );
    let (_, _, english) = raw(&h, get(&format!("/consent/{token}"))).await;
    assert!(english.contains("<html lang=\"en\">"));
    assert!(english.contains("Approve…"));
    assert!(
        english.contains("deleted at most 90 days after this request ends"),
        "{english}"
    );
    let (_, view) = h.send(get(&format!("/_assent/v1/consent/{token}"))).await;
    assert_eq!(view["retention_ms"], 90 * 24 * 3_600_000_i64);
}

#[tokio::test]
async fn a_pending_request_past_its_time_shows_as_expired_on_the_server_page() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("olga").await;
    let ttl = i64::try_from(h.state.config.request_ttl.as_millis()).unwrap();
    h.clock.0.fetch_add(ttl + 1, Ordering::SeqCst);
    let (status, _, page) = raw(&h, get(&format!("/consent/{token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("This request has expired"), "{page}");
    assert!(!page.contains("Approve…"), "{page}");
    // Looking decided nothing: the stored request is still pending until
    // someone acts on it.
    let (_, view) = h.send(get(&format!("/_assent/v1/consent/{token}"))).await;
    assert_eq!(view["status"], "expired");
}

#[tokio::test]
async fn too_many_page_views_are_told_apart_from_a_failed_decision() {
    let h = Harness::new(|_| {}).await;
    let (_, token) = h.hold("rita").await;
    let mut last = None;
    // 60 lookups a minute per client address.
    for _ in 0..61 {
        use tower::ServiceExt;
        last = Some(
            h.app
                .clone()
                .oneshot(get(&format!("/consent/{token}")))
                .await
                .unwrap(),
        );
    }
    let response = last.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let page = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains("Too many attempts"), "{page}");
    assert!(!page.contains("was not recorded"), "{page}");
}

/// A link mailed before tokens began with their time: 43 characters, stored
/// as its SHA-256 alone, as an upgraded database holds it. It still opens
/// its request and decides it.
#[tokio::test]
async fn a_link_from_before_the_time_prefix_still_works() {
    let h = Harness::new(|_| {}).await;
    let (id, token) = h.hold("linus").await;
    let legacy = h.state.tokens.token(&[3; 32]).unwrap();
    assert_eq!(legacy.len(), crate::tokens::LEGACY_TOKEN_LEN);
    let audit = crate::storage::NewAudit::new(AuditKind::TokenReplaced, Some("test"), json!({}));
    assert!(h
        .state
        .repo
        .replace_token(&id, &crate::tokens::hash(&legacy), 1, &audit, &[])
        .await
        .unwrap());
    let (status, _) = h.send(get(&format!("/_assent/v1/consent/{token}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the replaced link is dead");
    let (status, view) = h.send(get(&format!("/_assent/v1/consent/{legacy}"))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["request_id"], id.as_str());
    let (status, _) = h.send(post(&legacy, &decision("deny"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.state.repo.request(&id).await.unwrap().unwrap().status,
        RequestStatus::Denied
    );
}

#[tokio::test]
async fn look_alike_characters_are_shown_beside_the_folded_address() {
    let h = Harness::new(|_| {}).await;
    // Signed by the test homeserver: `pia` spelt with a long s and a
    // Kelvin sign, which fold to the address the identity server acts on.
    let body = json!({
        "mxid": h.hs_mxid("pia"),
        "threepid": {"medium": "email", "address": "PIA.\u{17F}\u{212A}@example.org"},
    })
    .to_string();
    let (status, _) = h
        .send(h.signed(
            "/_matrix/identity/v2/3pid/unbind",
            body.as_bytes(),
            "is.test",
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = h
        .state
        .repo
        .list_requests(&Default::default(), None, 1)
        .await
        .unwrap()[0]
        .id
        .clone();
    let token = h.token_of(&id).await;
    let (_, view) = h.send(get(&format!("/_assent/v1/consent/{token}"))).await;
    assert_eq!(view["threepid"]["address"], "pia.sk@example.org");
    assert_eq!(view["address_as_sent"], "PIA.\u{17F}\u{212A}@example.org");
    let (status, _, page) = raw(&h, get(&format!("/consent/{token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("pia.sk@example.org"), "{page}");
    assert!(page.contains("PIA.\u{17F}\u{212A}@example.org"), "{page}");
    assert!(page.contains("look-alike characters"), "{page}");

    // A plain address in other ASCII case is no look-alike: one spelling.
    let (_, plain) = h.hold("quinn").await;
    let (_, view) = h.send(get(&format!("/_assent/v1/consent/{plain}"))).await;
    assert_eq!(view["address_as_sent"], Value::Null);
    let (_, _, page) = raw(&h, get(&format!("/consent/{plain}"))).await;
    assert!(!page.contains("look-alike"), "{page}");
}

/// A resend replaces the link; an owner who opened the old one just before
/// cannot decide through it after, even in the same moment: the decision
/// is guarded on the link it came through.
#[tokio::test]
async fn a_link_replaced_between_reading_and_deciding_decides_nothing() {
    let h = Harness::new(|_| {}).await;
    let (id, token) = h.hold("raced").await;
    let read = crate::consent::request_for_token(&h.state, &token)
        .await
        .unwrap();
    let is = h.state.config.identity_servers[0].clone();
    let audit =
        crate::storage::NewAudit::new(AuditKind::AdminResend, Some("admin:test"), json!({}));
    let new_token = crate::lifecycle::renew_link(&h.state, &is, &id, "resend-1", &audit)
        .await
        .unwrap()
        .unwrap();
    let outcome = crate::lifecycle::decide(
        &h.state,
        &read,
        RequestStatus::Approved,
        crate::lifecycle::By::Owner(crate::lifecycle::Via::Page),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, crate::lifecycle::Outcome::Unknown),
        "{outcome:?}"
    );
    let stored = h.state.repo.request(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Pending);
    assert_eq!(h.count("outbox WHERE kind = 'relay'").await, 0);
    // The new link decides.
    let read = crate::consent::request_for_token(&h.state, &new_token)
        .await
        .unwrap();
    let outcome = crate::lifecycle::decide(
        &h.state,
        &read,
        RequestStatus::Approved,
        crate::lifecycle::By::Owner(crate::lifecycle::Via::Page),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, crate::lifecycle::Outcome::Now(_)),
        "{outcome:?}"
    );
}

/// The receipt carries a consent record in the shape of ISO/IEC TS 27560:
/// the controller and its privacy policy, whom it is about, the purpose and
/// who asked, the retention, and how and when the decision was given:
/// the app on its page or embedded, the form without JavaScript, the
/// decision API.
#[tokio::test]
async fn the_receipt_records_who_decided_what_when_and_how() {
    let h = Harness::new(|c| {
        c.identity_servers[0].privacy_policy_url =
            Some(url::Url::parse("https://is.example/privacy").unwrap());
    })
    .await;
    let record_of = |token: String| {
        let h = &h;
        async move {
            let (status, _, body) =
                raw(h, get(&format!("/_assent/v1/consent/{token}/receipt"))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let document: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(document["version"], 2);
            document["consent_record"].clone()
        }
    };
    let cases = [
        (
            "pia",
            r#"{"decision": "approve", "via": "page"}"#,
            "consent page",
            "given",
        ),
        (
            "emil",
            r#"{"decision": "deny", "via": "embed"}"#,
            "consent page embedded by the identity server",
            "refused",
        ),
        ("abe", r#"{"decision": "approve"}"#, "decision API", "given"),
    ];
    for (local, body, method, event) in cases {
        let (id, token) = h.hold(local).await;
        let (status, outcome) = h.send(post(&token, body)).await;
        assert_eq!(status, StatusCode::OK, "{outcome}");
        let record = record_of(token).await;
        assert_eq!(record["event"]["method"], method, "{record:#}");
        assert_eq!(record["event"]["type"], event);
        assert_eq!(record["record_id"], outcome["decision_id"]);
        assert_eq!(record["event"]["time_ms"], outcome["decided_at_ms"]);
        assert_eq!(record["controller"]["name"], "Test operator");
        assert_eq!(
            record["controller"]["privacy_policy"],
            "https://is.example/privacy"
        );
        assert_eq!(
            record["pii_principal"]["address"],
            format!("{local}@example.org")
        );
        assert_eq!(record["purpose"]["requested_by"], h.hs.name.as_str());
        assert_eq!(record["notice"]["retention"], "P90D");
        assert!(
            record["purpose"]["description"]
                .as_str()
                .unwrap()
                .contains(&h.hs_mxid(local)),
            "{record:#}"
        );
        let _ = id;
    }
    // A via that is not one of the two is not a decision.
    let (_, token) = h.hold("vera").await;
    let (status, _) = h
        .send(post(&token, r#"{"decision": "approve", "via": "email"}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
