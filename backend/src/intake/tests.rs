//! Intake through the real router, in process: a test homeserver on loopback
//! serves its keys over HTTP and signs requests the way Synapse does, and the
//! requests land in a real SQLite database.

use crate::config::BindingCheck;
use crate::intake::xmatrix::signed_object;
use crate::keys::{encode_unpadded, SigningKey};
use crate::storage::{AuditKind, Decision, NewAudit, OutboxKind, RequestKey};
use crate::test_support::*;
use assent_shared::{Medium, RequestStatus};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[tokio::test]
async fn a_validly_signed_unbind_is_held_with_its_raw_intake_audit_and_email() {
    let h = Harness::new(|_| {}).await;
    let body = h.body_for("alice");
    let request = h.signed(V2, &body, IS_NAME);
    let authorization = request.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, answer) = h.send(request).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({})));

    let stored = h.stored("alice").await.expect("held");
    assert_eq!(stored.status, RequestStatus::Pending);
    assert_eq!(stored.origin, h.hs.name);
    assert_eq!(stored.origin_key_id.as_deref(), Some("ed25519:hs1"));
    assert_eq!(stored.verified_at, Some(START_MS));
    assert_eq!(stored.expires_at, START_MS + 7 * 24 * 3600 * 1000);
    let raw = stored.raw.as_ref().unwrap();
    assert_eq!((raw.method.as_str(), raw.path.as_str()), ("POST", V2));
    assert_eq!(raw.body, body);
    assert!(raw
        .headers
        .contains(&("authorization".to_owned(), authorization)));
    let outbox = h.state.repo.outbox_for(&stored.id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, OutboxKind::Email);
    // The token the email will carry is the one whose hash is stored.
    let nonce = outbox[0].payload["nonce"].as_str().unwrap();
    let nonce =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, nonce).unwrap();
    assert_eq!(nonce.len(), crate::tokens::NONCE_LEN);
    let token = h.state.tokens.token(&nonce).unwrap();
    assert_eq!(token.len(), crate::tokens::TOKEN_LEN);
    assert_eq!(crate::tokens::hash(&token), stored.token_hash);
    let trail = h.state.repo.audit_trail(&stored.id).await.unwrap();
    assert_eq!(trail[0].kind, "received");
    assert_eq!(trail[0].detail["key_source"], "fetched");
    assert_eq!(trail[0].detail["binding_check"], "not_checked");

    // The legacy v1 path works the same way.
    let body = h.body_for("bob");
    let (status, _) = h.send(h.signed(V1, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.stored("bob").await.unwrap().raw.unwrap().path, V1);
}

#[tokio::test]
async fn every_changed_byte_of_body_path_origin_or_destination_is_refused_and_nothing_is_stored() {
    let h = Harness::new(|config| {
        config.limits.unbinds_per_origin_per_minute = 100_000;
        config.limits.failed_unbinds_per_client_per_minute = 100_000;
    })
    .await;
    let body = h.body_for("carol");
    let authorization = h.hs.authorization("POST", V2, IS_NAME, &body);
    let mut tried = 0;
    for i in 0..body.len() {
        for flip in [0x01u8, 0x20] {
            let mut changed = body.clone();
            changed[i] ^= flip;
            let (status, answer) = h
                .send(raw_request(V2, &changed, Some(&authorization)))
                .await;
            assert!(
                status.is_client_error(),
                "byte {i} ^ {flip:#x} of the body: {status} {answer}"
            );
            tried += 1;
        }
    }
    // The path: a query added, a byte changed, the other route.
    for path in [
        format!("{V2}?x=1"),
        V2.replace("unbind", "unbinD"),
        V1.to_owned(),
        format!("{V2}/"),
    ] {
        let (status, _) = h
            .send(raw_request(&path, &body, Some(&authorization)))
            .await;
        assert!(
            status.is_client_error() || status == StatusCode::NOT_FOUND,
            "{path}: {status}"
        );
        tried += 1;
    }
    // The origin in the header.
    let other_origin = authorization.replace(&h.hs.name, "127.0.0.2:1");
    let (status, _) = h.send(raw_request(V2, &body, Some(&other_origin))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Signed for another identity server.
    let (status, answer) = h.send(h.signed(V2, &body, "other-is.test")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let elsewhere =
        h.hs.authorization("POST", V2, "other-is.test", &body)
            .replace(
                "destination=\"other-is.test\"",
                &format!("destination=\"{IS_NAME}\""),
            );
    let (status, _) = h.send(raw_request(V2, &body, Some(&elsewhere))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(tried > 150, "{tried}");
    assert_eq!(h.count("requests").await, 0);
    assert_eq!(h.count("outbox").await, 0);

    // And the unchanged request still goes through.
    let (status, _) = h.send(raw_request(V2, &body, Some(&authorization))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 1);
}

#[tokio::test]
async fn the_signature_covers_the_origin() {
    // The same key pinned under a second name: a request signed as one
    // server and presented as the other must fail on the signature.
    let h = Harness::new(|config| {
        config.keys.pinned.insert(
            "other.test".to_owned(),
            std::collections::BTreeMap::from([(
                "ed25519:hs1".to_owned(),
                SigningKey::from_seed("hs1", &[42; 32])
                    .unwrap()
                    .public_key_base64(),
            )]),
        );
    })
    .await;
    let body = br#"{"mxid":"@carol:other.test","threepid":{"address":"carol@example.org","medium":"email"}}"#;
    let signed_as_hs = h.hs.authorization("POST", V2, IS_NAME, body);
    let presented_as_other = signed_as_hs.replace(&h.hs.name, "other.test");
    let (status, answer) = h
        .send(raw_request(V2, body, Some(&presented_as_other)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(h.count("requests").await, 0);
}

#[tokio::test]
async fn a_pending_request_past_its_time_expires_and_a_repeat_is_held_anew() {
    let h = Harness::new(|_| {}).await;
    let body = h.body_for("olga");
    h.send(h.signed(V2, &body, IS_NAME)).await;
    let first = h.stored("olga").await.unwrap();
    h.clock.0.store(first.expires_at + 1, Ordering::SeqCst);
    let (status, _) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 2);
    assert_eq!(h.count("outbox").await, 2, "the owner is asked again");
    let old = h.state.repo.request(&first.id).await.unwrap().unwrap();
    assert_eq!(old.status, RequestStatus::Expired);
    // The expiry is a signed decision document that verifies under Assent's key.
    let doc: Value = serde_json::from_str(old.decision_doc.as_deref().unwrap()).unwrap();
    assert_eq!(doc["decision"], "expire");
    assert_eq!(doc["request_id"], first.id.as_str());
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
    let mut forged = object.clone();
    forged.insert(
        "decision".to_owned(),
        ruma_common::CanonicalJsonValue::String("approve".to_owned()),
    );
    assert!(ruma_signatures::verify_json(&keys, &forged).is_err());
}

#[tokio::test]
async fn an_owner_proven_unbind_is_recorded_as_proven_by_the_session_with_nothing_signed() {
    let h = Harness::new(|_| {}).await;
    // A held request for the same address stays with its owner: the
    // session proved the address, not the Matrix ID the body names.
    h.send(h.signed(V2, &h.body_for("pia"), IS_NAME)).await;
    let held = h.stored("pia").await.unwrap();
    let is = h.state.config.identity_servers[0].clone();
    let proven = |local: &str, address: &str| {
        super::body::parse(
            json!({
                "mxid": h.hs.mxid(local),
                "threepid": {"medium": "email", "address": address},
                "sid": "1",
                "client_secret": "s3cret",
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    };
    crate::lifecycle::record_owner_proven(
        &h.state,
        &is,
        proven("pia", "Pia@example.org").proven(),
        200,
    )
    .await
    .unwrap();
    let still = h.state.repo.request(&held.id).await.unwrap().unwrap();
    assert_eq!(still.status, RequestStatus::Pending);
    assert_eq!(h.count("requests").await, 2);
    assert_eq!(
        h.count("requests WHERE source = 'owner_proven' AND status = 'approved' AND decision_doc IS NULL AND decision_id IS NULL").await,
        1,
        "approved by the session, with no document signed in the owner's name"
    );
    let trail = h
        .state
        .repo
        .audit_trail(
            &h.state
                .repo
                .list_requests(&Default::default(), None, 10)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.source == crate::storage::Source::OwnerProven)
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].kind, "owner_proven");
    assert_eq!(trail[0].actor, None);
    assert_eq!(trail[0].detail["upstream_status"], 200);
    assert_eq!(trail[0].detail["mxid_verified"], false);
    assert_eq!(h.count("outbox").await, 1, "no email, no relay for it");
}

#[tokio::test]
async fn an_origin_that_does_not_own_the_mxid_is_forbidden() {
    let h = Harness::new(|_| {}).await;
    let body = br#"{"mxid":"@mallory:other.test","threepid":{"address":"m@example.org","medium":"email"}}"#;
    let (status, answer) = h.send(h.signed(V2, body, IS_NAME)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["errcode"], "M_FORBIDDEN");
    assert_eq!(h.count("requests").await, 0);
}

#[tokio::test]
async fn a_key_that_cannot_be_fetched_is_a_clear_error() {
    let h = Harness::new(|_| {}).await;
    // A homeserver on a port nobody listens on.
    let gone = SigningKey::from_seed("gone", &[9; 32]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let body = format!(
        r#"{{"mxid":"@dave:{name}","threepid":{{"address":"dave@example.org","medium":"email"}}}}"#
    );
    let object = signed_object("POST", V2, &name, IS_NAME, body.as_bytes()).unwrap();
    let sig = encode_unpadded(&gone.sign_bytes(&serde_json::to_vec(&object).unwrap()));
    let authorization = format!("X-Matrix origin=\"{name}\",key=\"ed25519:gone\",sig=\"{sig}\"");
    let (status, answer) = h
        .send(raw_request(V2, body.as_bytes(), Some(&authorization)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("cannot get the signing key"), "{error}");
    assert!(error.contains(&name), "{error}");

    // A key id the homeserver does not publish.
    let body = h.body_for("erin");
    let wrong_id =
        h.hs.authorization("POST", V2, IS_NAME, &body)
            .replace("ed25519:hs1", "ed25519:nope");
    let (status, answer) = h.send(raw_request(V2, &body, Some(&wrong_id))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answer["error"].as_str().unwrap().contains("ed25519:nope"),
        "{answer}"
    );
    assert_eq!(h.count("requests").await, 0);

    // A key whose document has expired (it was valid for 31 days of test
    // time): refused, and nothing is stored.
    h.clock.0.fetch_add(32 * 24 * 3600 * 1000, Ordering::SeqCst);
    let (status, answer) = h.send(h.signed(V2, &h.body_for("fay"), IS_NAME)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    assert_eq!(h.count("requests").await, 0);
}

#[tokio::test]
async fn repeats_join_the_pending_request_and_after_a_decision_are_answered_from_it() {
    let h = Harness::new(|c| c.deny_cooldown = std::time::Duration::from_secs(10 * 86_400)).await;
    let body = h.body_for("frank");
    for _ in 0..3 {
        let (status, _) = h.send(h.signed(V2, &body, IS_NAME)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // The same request in other bytes: keys in another order, other case.
    let reordered = format!(
        r#"{{"threepid":{{"medium":"email","address":"FRANK@example.org"}},"mxid":"{}"}}"#,
        h.hs_mxid("frank")
    );
    let (status, _) = h.send(h.signed(V2, reordered.as_bytes(), IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 1);
    assert_eq!(h.count("outbox").await, 1, "one email, not four");
    let stored = h.stored("frank").await.unwrap();
    assert_eq!(stored.repeats, 3, "repeats are counted");
    let trail = h.state.repo.audit_trail(&stored.id).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["received"], "and add no audit event each");

    // Approved: the same request is answered 200, as the unbind was done.
    let decision = Decision {
        link: None,
        status: RequestStatus::Approved,
        decision_id: "dec_1".to_owned(),
        document: "{}".to_owned(),
        at: START_MS + 1000,
    };
    h.state
        .repo
        .decide(
            &stored.id,
            &decision,
            &NewAudit::new(AuditKind::Decided, None, json!({})),
            &[],
        )
        .await
        .unwrap();
    let (status, answer) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(h.count("requests").await, 1);

    // Denied: answered as held, nothing new.
    let body = h.body_for("grace");
    h.send(h.signed(V2, &body, IS_NAME)).await;
    let grace = h.stored("grace").await.unwrap();
    let denial = Decision {
        link: None,
        status: RequestStatus::Denied,
        decision_id: "dec_2".to_owned(),
        ..decision.clone()
    };
    h.state
        .repo
        .decide(
            &grace.id,
            &denial,
            &NewAudit::new(AuditKind::Decided, None, json!({})),
            &[],
        )
        .await
        .unwrap();
    let (status, _) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 2);
    assert_eq!(h.count("outbox").await, 2);
    // However its bytes differ.
    let respelt = format!(
        r#"{{ "threepid" : {{ "address" : "Grace@Example.org", "medium" : "email" }}, "mxid" : "{}" }}"#,
        h.hs_mxid("grace")
    );
    let (status, _) = h.send(h.signed(V2, respelt.as_bytes(), IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 2);
    assert_eq!(h.count("outbox").await, 2);

    // Past the request TTL the approval no longer answers: frank may be
    // asked again. The denial stands for deny_cooldown (10 days here).
    h.clock.0.fetch_add(8 * 24 * 3600 * 1000, Ordering::SeqCst);
    let (status, _) = h.send(h.signed(V2, &h.body_for("frank"), IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 3);
    let (status, _) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 3, "the denial still stands");
    h.clock.0.fetch_add(3 * 24 * 3600 * 1000, Ordering::SeqCst);
    let (status, _) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        h.count("requests").await,
        4,
        "after deny_cooldown, asked anew"
    );
}

#[tokio::test]
async fn rate_limits_per_origin_and_per_address_answer_m_limit_exceeded() {
    let h = Harness::new(|config| {
        config.limits.unbinds_per_origin_per_minute = 3;
        config.limits.holds_per_address_per_hour = 2;
    })
    .await;
    for local in ["a1", "a2", "a3"] {
        let (status, _) = h.send(h.signed(V2, &h.body_for(local), IS_NAME)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, answer) = h.send(h.signed(V2, &h.body_for("a4"), IS_NAME)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
    assert!(answer["retry_after_ms"].as_i64().unwrap() > 0);
    assert_eq!(h.count("requests").await, 3);

    // Per address: new requests for one address from different Matrix IDs.
    let h = Harness::new(|config| {
        config.limits.holds_per_address_per_hour = 2;
    })
    .await;
    for (n, local) in ["u1", "u2", "u3"].into_iter().enumerate() {
        let body = format!(
            r#"{{"mxid":"{}","threepid":{{"address":"shared@example.org","medium":"email"}}}}"#,
            h.hs.mxid(local)
        );
        let (status, answer) = h.send(h.signed(V2, body.as_bytes(), IS_NAME)).await;
        if n < 2 {
            assert_eq!(status, StatusCode::ACCEPTED);
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
            assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
        }
    }
    assert_eq!(h.count("requests").await, 2);

    // A client whose signatures for a server keep failing is stopped
    // before it costs more key fetches for that server...
    let h = Harness::new(|_| {}).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let forged_body = format!(
        r#"{{"mxid":"@v:{nowhere}","threepid":{{"address":"v@example.org","medium":"email"}}}}"#
    );
    let forged = format!("X-Matrix origin=\"{nowhere}\",key=\"ed25519:x\",sig=\"AAAA\"");
    for _ in 0..30 {
        let (status, _) = h
            .send(raw_request(V2, forged_body.as_bytes(), Some(&forged)))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, answer) = h
        .send(raw_request(V2, forged_body.as_bytes(), Some(&forged)))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    // ...while a homeserver that signs correctly, from the same address, is
    // never held up: not by that, and not by forgeries in its own name
    // (its key, once fetched, is cached, so they cost no fetch).
    let body = h.body_for("v1");
    let wrong = h.hs.authorization("POST", V2, IS_NAME, b"{}");
    for _ in 0..40 {
        let (status, _) = h.send(raw_request(V2, &body, Some(&wrong))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, answer) = h.send(h.signed(V2, &body, IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(h.count("requests").await, 1);
}

#[tokio::test]
async fn msisdn_policy_holds_forwards_or_rejects() {
    let body_for = |h: &Harness| {
        format!(
            r#"{{"mxid":"{}","threepid":{{"address":"447700900123","medium":"msisdn"}}}}"#,
            h.hs.mxid("phone")
        )
    };
    let h = Harness::new(|_| {}).await;
    let body = body_for(&h);
    let (status, _) = h.send(h.signed(V2, body.as_bytes(), IS_NAME)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.count("requests").await, 1);
    assert_eq!(h.count("outbox").await, 0, "no email for a phone number");

    let h = Harness::new(|c| c.msisdn_policy = crate::config::MsisdnPolicy::Reject).await;
    let (status, answer) = h.send(h.signed(V2, body_for(&h).as_bytes(), IS_NAME)).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{answer}");
    assert_eq!(h.count("requests").await, 0);

    // Forward: to the upstream, which is down here, so the gateway says so.
    let h = Harness::new(|c| c.msisdn_policy = crate::config::MsisdnPolicy::Forward).await;
    let (status, _) = h.send(h.signed(V2, body_for(&h).as_bytes(), IS_NAME)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(h.count("requests").await, 0);
}

#[tokio::test]
async fn held_response_sets_what_the_homeserver_is_told() {
    for (setting, expected) in [
        (crate::config::HeldResponse::Accepted, StatusCode::ACCEPTED),
        (
            crate::config::HeldResponse::Forbidden,
            StatusCode::FORBIDDEN,
        ),
        (
            crate::config::HeldResponse::NotSupported,
            StatusCode::NOT_IMPLEMENTED,
        ),
    ] {
        let h = Harness::new(|c| c.held_response = setting).await;
        let (status, _) = h.send(h.signed(V2, &h.body_for("held"), IS_NAME)).await;
        assert_eq!(status, expected);
        assert_eq!(h.count("requests").await, 1);
    }
}

#[tokio::test]
async fn the_real_synapse_requests_are_held() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synapse");
    let key: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/synapse_server_key.json")).unwrap(),
    )
    .unwrap();
    let h = Harness::new(|config| {
        let mut pins = std::collections::BTreeMap::new();
        for (id, entry) in key["body"]["verify_keys"].as_object().unwrap() {
            pins.insert(id.clone(), entry["key"].as_str().unwrap().to_owned());
        }
        config.keys.pinned.insert("hs.test".to_owned(), pins);
    })
    .await;
    for file in ["unbind_user_delete.json", "unbind_admin_deactivate.json"] {
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap())
                .unwrap();
        let captured = &fixture["unbind_requests"][0];
        let body = captured["body"].as_str().unwrap().as_bytes();
        let path = captured["path"].as_str().unwrap();
        let mut builder =
            Request::post(path).extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        for header in captured["headers"].as_array().unwrap() {
            builder = builder.header(header[0].as_str().unwrap(), header[1].as_str().unwrap());
        }
        let (status, answer) = h
            .send(builder.body(Body::from(body.to_vec())).unwrap())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{file}: {answer}");
        let stored = h
            .state
            .repo
            .latest_for(&RequestKey {
                identity_server: IS_NAME,
                origin: "hs.test",
                mxid: fixture["mxid"].as_str().unwrap(),
                medium: Medium::Email,
                address: fixture["address"].as_str().unwrap(),
            })
            .await
            .unwrap()
            .expect("held");
        assert_eq!(stored.raw.unwrap().body, body);
        let trail = h.state.repo.audit_trail(&stored.id).await.unwrap();
        assert_eq!(trail[0].detail["key_source"], "pinned");
    }
    assert_eq!(h.count("requests").await, 2);
}

/// Each malformed request gets its Matrix error, and none stores anything.
#[tokio::test]
async fn malformed_requests_get_the_right_matrix_error_and_store_nothing() {
    let h = Harness::new(|config| {
        config.limits.unbinds_per_origin_per_minute = 100_000;
        config.limits.failed_unbinds_per_client_per_minute = 100_000;
    })
    .await;
    let mxid = h.hs.mxid("zoe");
    let ok_threepid = r#"{"address":"zoe@example.org","medium":"email"}"#;
    let with = |mxid: &str, threepid: &str| format!(r#"{{"mxid":{mxid},"threepid":{threepid}}}"#);
    let quoted = |text: &str| serde_json::to_string(text).unwrap();
    let address = |a: &str| {
        with(
            &quoted(&mxid),
            &format!(r#"{{"address":{},"medium":"email"}}"#, quoted(a)),
        )
    };
    let long_local = "a".repeat(300);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let big = format!(
        r#"{{"mxid":{},"threepid":{ok_threepid},"pad":"{}"}}"#,
        quoted(&mxid),
        "x".repeat(17_000)
    );
    let bad = StatusCode::BAD_REQUEST;
    let body_cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty body", b"".to_vec(), bad, "M_NOT_JSON"),
        ("open brace", b"{".to_vec(), bad, "M_NOT_JSON"),
        ("words", b"not json".to_vec(), bad, "M_NOT_JSON"),
        (
            "trailing garbage",
            format!("{} x", with(&quoted(&mxid), ok_threepid)).into_bytes(),
            bad,
            "M_NOT_JSON",
        ),
        (
            "invalid UTF-8",
            b"{\"mxid\":\"\xff\"}".to_vec(),
            bad,
            "M_NOT_JSON",
        ),
        ("nested 200 deep", deep.into_bytes(), bad, "M_NOT_JSON"),
        ("array", b"[]".to_vec(), bad, "M_BAD_JSON"),
        ("string", b"\"unbind\"".to_vec(), bad, "M_BAD_JSON"),
        ("number", b"42".to_vec(), bad, "M_BAD_JSON"),
        ("null", b"null".to_vec(), bad, "M_BAD_JSON"),
        ("true", b"true".to_vec(), bad, "M_BAD_JSON"),
        ("empty object", b"{}".to_vec(), bad, "M_MISSING_PARAMS"),
        (
            "no mxid",
            format!(r#"{{"threepid":{ok_threepid}}}"#).into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "null mxid",
            with("null", ok_threepid).into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "numeric mxid",
            with("1", ok_threepid).into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "array mxid",
            with("[]", ok_threepid).into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "object mxid",
            with("{}", ok_threepid).into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "boolean mxid",
            with("false", ok_threepid).into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "empty mxid",
            with("\"\"", ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid without @",
            with(&quoted(&mxid[1..]), ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid without server",
            with("\"@zoe\"", ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid with empty localpart",
            with(&quoted(&format!("@:{}", h.hs.name)), ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid with empty server",
            with("\"@zoe:\"", ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid with space",
            with(&quoted(&format!("@z oe:{}", h.hs.name)), ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "room alias",
            with(&quoted(&format!("#zoe:{}", h.hs.name)), ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid with bad server",
            with("\"@zoe:bad server\"", ok_threepid).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "mxid over 255 bytes",
            with(
                &quoted(&format!("@{long_local}:{}", h.hs.name)),
                ok_threepid,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "no threepid",
            format!(r#"{{"mxid":{}}}"#, quoted(&mxid)).into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "null threepid",
            with(&quoted(&mxid), "null").into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "string threepid",
            with(&quoted(&mxid), "\"zoe@example.org\"").into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "array threepid",
            with(&quoted(&mxid), "[]").into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "no medium",
            with(&quoted(&mxid), r#"{"address":"zoe@example.org"}"#).into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "numeric medium",
            with(
                &quoted(&mxid),
                r#"{"address":"zoe@example.org","medium":1}"#,
            )
            .into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "unknown medium",
            with(
                &quoted(&mxid),
                r#"{"address":"zoe@example.org","medium":"phone"}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "empty medium",
            with(
                &quoted(&mxid),
                r#"{"address":"zoe@example.org","medium":""}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "upper-case medium",
            with(
                &quoted(&mxid),
                r#"{"address":"zoe@example.org","medium":"EMAIL"}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "no address",
            with(&quoted(&mxid), r#"{"medium":"email"}"#).into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "numeric address",
            with(&quoted(&mxid), r#"{"address":7,"medium":"email"}"#).into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "empty address",
            address("").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address without @",
            address("zoe.example.org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address without local part",
            address("@example.org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address without domain",
            address("zoe@").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address with two @",
            address("zoe@a@b.org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address with space",
            address("zo e@example.org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address with newline",
            address("zoe@example.org\nBcc: x@y.org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address domain with ..",
            address("zoe@example..org").into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "address over 254",
            address(&format!("zoe@{}.org", "d".repeat(260))).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "local part over 64",
            address(&format!("{}@example.org", "z".repeat(65))).into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "msisdn with +",
            with(
                &quoted(&mxid),
                r#"{"address":"+447700900123","medium":"msisdn"}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "msisdn with letters",
            with(
                &quoted(&mxid),
                r#"{"address":"44770abc","medium":"msisdn"}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "msisdn too long",
            with(
                &quoted(&mxid),
                r#"{"address":"1234567890123456","medium":"msisdn"}"#,
            )
            .into_bytes(),
            bad,
            "M_INVALID_PARAM",
        ),
        (
            "sid without client_secret",
            format!(
                r#"{{"mxid":{},"threepid":{ok_threepid},"sid":"1"}}"#,
                quoted(&mxid)
            )
            .into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "client_secret without sid",
            format!(
                r#"{{"mxid":{},"threepid":{ok_threepid},"client_secret":"s"}}"#,
                quoted(&mxid)
            )
            .into_bytes(),
            bad,
            "M_MISSING_PARAMS",
        ),
        (
            "numeric sid",
            format!(
                r#"{{"mxid":{},"threepid":{ok_threepid},"sid":1,"client_secret":"s"}}"#,
                quoted(&mxid)
            )
            .into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "object client_secret",
            format!(
                r#"{{"mxid":{},"threepid":{ok_threepid},"sid":"1","client_secret":{{}}}}"#,
                quoted(&mxid)
            )
            .into_bytes(),
            bad,
            "M_BAD_JSON",
        ),
        (
            "body over 16 KiB",
            big.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
        ),
    ];
    let good = with(&quoted(&mxid), ok_threepid).into_bytes();
    let good_auth = h.hs.authorization("POST", V2, IS_NAME, &good);
    let unauthorized = StatusCode::UNAUTHORIZED;
    let header_cases: Vec<(&str, Option<String>, StatusCode, &str)> = vec![
        ("no Authorization", None, unauthorized, "M_UNAUTHORIZED"),
        (
            "Bearer token",
            Some("Bearer abc".to_owned()),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "empty X-Matrix",
            Some("X-Matrix ".to_owned()),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "no sig",
            Some(format!(
                "X-Matrix origin=\"{}\",key=\"ed25519:hs1\"",
                h.hs.name
            )),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "no origin",
            Some(good_auth.replace(&format!("origin=\"{}\",", h.hs.name), "")),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "no key",
            Some(good_auth.replace("key=\"ed25519:hs1\",", "")),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "sig not base64",
            Some(format!(
                "X-Matrix origin=\"{}\",key=\"ed25519:hs1\",sig=\"!!!\"",
                h.hs.name
            )),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "other algorithm",
            Some(good_auth.replace("ed25519:hs1", "curve25519:hs1")),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "wrong signature",
            Some(h.hs.authorization("POST", V2, IS_NAME, b"{}")),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "signed as GET",
            Some(h.hs.authorization("GET", V2, IS_NAME, &good)),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "destination elsewhere",
            Some(good_auth.replace(
                &format!("destination=\"{IS_NAME}\""),
                "destination=\"elsewhere.test\"",
            )),
            unauthorized,
            "M_UNAUTHORIZED",
        ),
        (
            "origin of someone else",
            Some(good_auth.replace(&h.hs.name, "hs.elsewhere.test")),
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        ),
    ];
    let mut cases = 0;
    for (what, body, status, errcode) in body_cases {
        let (got, answer) = h.send(h.signed(V2, &body, IS_NAME)).await;
        assert_eq!(
            (got, answer["errcode"].as_str()),
            (status, Some(errcode)),
            "{what}: {answer}"
        );
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
        cases += 1;
    }
    for (what, authorization, status, errcode) in header_cases {
        let (got, answer) = h
            .send(raw_request(V2, &good, authorization.as_deref()))
            .await;
        assert_eq!(
            (got, answer["errcode"].as_str()),
            (status, Some(errcode)),
            "{what}: {answer}"
        );
        cases += 1;
    }
    assert!(cases >= 50, "{cases} cases");
    assert_eq!(h.count("requests").await, 0);
    assert_eq!(h.count("outbox").await, 0);
    assert_eq!(h.count("audit_events").await, 0);
}

#[tokio::test]
async fn integrated_mode_holds_and_reports_with_the_identity_servers_token() {
    let h = Harness::new(|config| {
        // No key fetches here; callback URLs must be public.
        config.keys.allow_private_addresses = false;
        let mut second = identity_server("other-is.test");
        second.api_tokens = vec!["other-token-for-tests-0123456789abcdef0".to_owned()];
        config.identity_servers.push(second);
    })
    .await;
    let token = "integrated-token-for-tests-0123456789abcdef";
    let call = |method: &str, path: &str, token: Option<&str>, body: Value| {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40001))));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Body::from(body.to_string())).unwrap()
    };
    let new = json!({
        "mxid": "@ivan:hs.example.org",
        "threepid": {"medium": "email", "address": "Ivan@Example.org"},
        "requesting_server": "hs.example.org",
        "initiator": "deactivation",
        "reason": "Account deactivated by the server admin",
        "callback_url": "https://is.example.org/assent-callback",
    });
    let (status, _) = h
        .send(call("POST", "/_assent/v1/requests", None, new.clone()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .send(call(
            "POST",
            "/_assent/v1/requests",
            Some("wrong-token"),
            new.clone(),
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.count("requests").await, 0);

    let (status, created) = h
        .send(call(
            "POST",
            "/_assent/v1/requests",
            Some(token),
            new.clone(),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["threepid"]["address"], "ivan@example.org");
    assert_eq!(created["initiator"], "deactivation");
    assert_eq!(created["identity_server"], IS_NAME);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(h.count("outbox").await, 1);

    // The same again joins it.
    let (status, again) = h
        .send(call(
            "POST",
            "/_assent/v1/requests",
            Some(token),
            new.clone(),
        ))
        .await;
    assert_eq!(
        (status, again["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    assert_eq!(h.count("requests").await, 1);

    let path = format!("/_assent/v1/requests/{id}");
    let (status, read) = h.send(call("GET", &path, Some(token), Value::Null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["decision"], Value::Null);
    // Another identity server's token does not see it.
    let (status, _) = h
        .send(call(
            "GET",
            &path,
            Some("other-token-for-tests-0123456789abcdef0"),
            Value::Null,
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Once decided, the signed decision is there.
    let decision = Decision {
        link: None,
        status: RequestStatus::Denied,
        decision_id: "dec_9".to_owned(),
        document: r#"{"decision":"deny"}"#.to_owned(),
        at: START_MS + 5,
    };
    h.state
        .repo
        .decide(
            &id,
            &decision,
            &NewAudit::new(AuditKind::Decided, None, json!({})),
            &[],
        )
        .await
        .unwrap();
    let (_, read) = h.send(call("GET", &path, Some(token), Value::Null)).await;
    assert_eq!(read["status"], "denied");
    assert_eq!(read["decision"], json!({"decision": "deny"}));
    assert_eq!(read["decided_at_ms"], START_MS + 5);

    // Bad bodies get named errors.
    for (body, errcode) in [
        (json!({"mxid": "@ivan:hs.example.org"}), "M_BAD_JSON"),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "x"}, "requesting_server": "hs.example.org"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "fax", "address": "1"}, "requesting_server": "hs.example.org"}),
            "M_BAD_JSON",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "initiator": "cat"}),
            "M_BAD_JSON",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "callback_url": "ftp://x"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "reason": "r".repeat(1001)}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "extra": 1}),
            "M_BAD_JSON",
        ),
    ] {
        let (status, answer) = h
            .send(call(
                "POST",
                "/_assent/v1/requests",
                Some(token),
                body.clone(),
            ))
            .await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some(errcode)),
            "{body}: {answer}"
        );
    }
    for (body, errcode) in [
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "callback_url": "http://127.1:6379/"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "callback_url": "http://localhost/"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "hs.example.org", "callback_url": format!("https://is.example.org/{}", "x".repeat(2100))}),
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, answer) = h
            .send(call(
                "POST",
                "/_assent/v1/requests",
                Some(token),
                body.clone(),
            ))
            .await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some(errcode)),
            "{body}: {answer}"
        );
    }
    let other_server = json!({"mxid": "@ivan:hs.example.org", "threepid": {"medium": "email", "address": "i@e.org"}, "requesting_server": "evil.example.org"});
    let (status, _) = h
        .send(call(
            "POST",
            "/_assent/v1/requests",
            Some(token),
            other_server,
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.count("requests").await, 1);
}

/// An identity server on loopback for the session path: its v1 lookup knows
/// `bound` (address → mxid, bound at), and it records each unbind's
/// `Authorization`.
async fn recording_upstream(
    bound: Vec<(String, String, Option<i64>)>,
) -> (url::Url, Arc<std::sync::Mutex<Vec<Option<String>>>>) {
    use axum::extract::Query;
    use axum::routing::{get, post};
    let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/_matrix/identity/api/v1/lookup",
            get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let found = bound
                        .iter()
                        .find(|(address, _, _)| Some(address) == q.get("address"))
                        .map(|(address, mxid, ts)| {
                            json!({"address": address, "mxid": mxid, "ts": ts})
                        });
                    async move { axum::Json(found.unwrap_or_else(|| json!({}))) }
                },
            ),
        )
        .route(
            V2,
            post(move |headers: axum::http::HeaderMap| {
                record.lock().unwrap().push(
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                async { axum::Json(json!({})) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        url::Url::parse(&format!("http://{address}/")).unwrap(),
        seen,
    )
}

#[tokio::test]
async fn a_session_unbind_goes_without_the_signature_only_when_bound_and_within_limits() {
    let mxid = |local: &str| format!("@{local}:hs.session.test");
    let (upstream, seen) = recording_upstream(vec![
        ("pia@example.org".to_owned(), mxid("pia"), None),
        (
            "ron@example.org".to_owned(),
            "@ron:ron.session.test".to_owned(),
            Some(START_MS - 3_600_000),
        ),
        (
            "sam@example.org".to_owned(),
            "@sam:sam.session.test".to_owned(),
            Some(START_MS - 26 * 3_600_000),
        ),
    ])
    .await;
    let h = Harness::new(|c| {
        c.identity_servers[0].upstream = upstream;
        c.identity_servers[0].binding_check = BindingCheck::V1Lookup;
        c.limits.owner_proven_per_server_per_minute = 2;
    })
    .await;
    let session_body = |local: &str, server: &str| {
        json!({
            "mxid": format!("@{local}:{server}"),
            "threepid": {"medium": "email", "address": format!("{local}@example.org")},
            "sid": "1",
            "client_secret": "s3cret",
        })
        .to_string()
        .into_bytes()
    };
    // Bound: forwarded, without the homeserver's signature, and recorded.
    let body = session_body("pia", "hs.session.test");
    let (status, answer) = h
        .send(raw_request(
            V2,
            &body,
            Some("X-Matrix origin=\"hs.session.test\",key=\"ed25519:a\",sig=\"x\""),
        ))
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(
        *seen.lock().unwrap(),
        [None],
        "forwarded without Authorization"
    );
    assert_eq!(h.count("requests WHERE source = 'owner_proven'").await, 1);
    // Not bound: answered here, not forwarded, not recorded.
    let (status, answer) = h
        .send(raw_request(
            V2,
            &session_body("nobody", "hs.session.test"),
            None,
        ))
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(h.count("requests").await, 1);
    // Bound an hour ago: the homeserver that carried the bind may hold the
    // session, which sydent accepts for a day. Refused, not forwarded.
    let (status, answer) = h
        .send(raw_request(
            V2,
            &session_body("ron", "ron.session.test"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("25 hours"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Bound 26 hours ago: any session the homeserver saw has expired; a
    // session now is the owner's own.
    let (status, _) = h
        .send(raw_request(
            V2,
            &session_body("sam", "sam.session.test"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(h.count("requests WHERE source = 'owner_proven'").await, 2);
    // Two a minute per named server and client...
    let (status, answer) = h
        .send(raw_request(
            V2,
            &session_body("nobody", "hs.session.test"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
    // ...and naming ever new servers ends at four times that per client.
    let mut allowed = 0;
    for i in 0..20 {
        let (status, _) = h
            .send(raw_request(
                V2,
                &session_body("nobody", &format!("s{i}.test")),
                None,
            ))
            .await;
        if status == StatusCode::OK {
            allowed += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(allowed, 8 - 4, "the client's first four count too");
    assert_eq!(h.count("requests").await, 2);
}
