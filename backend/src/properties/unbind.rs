//! The unbind as a homeserver sends it: the `X-Matrix` header and the body.
//! Whatever the bytes, the answer is a Matrix error with its own code and
//! nothing is stored, or the unbind is held once however often it repeats.

use super::{check, client, near, runtime};
use crate::intake::xmatrix;
use crate::storage::RequestKey;
use crate::test_support::{Harness, IS_NAME, V1, V2};
use assent_shared::Medium;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};

/// What a refused unbind may answer: a client error and a Matrix code.
const REFUSALS: [(u16, &str); 9] = [
    (400, "M_NOT_JSON"),
    (400, "M_BAD_JSON"),
    (400, "M_MISSING_PARAMS"),
    (400, "M_INVALID_PARAM"),
    (401, "M_UNAUTHORIZED"),
    (403, "M_FORBIDDEN"),
    (404, "M_NOT_FOUND"),
    (413, "M_TOO_LARGE"),
    (429, "M_LIMIT_EXCEEDED"),
];

fn post(path: &str, body: &[u8], authorization: Option<&str>, from: u32) -> Request<Body> {
    let mut builder = Request::post(path)
        .header("host", IS_NAME)
        .header("content-type", "application/json")
        .extension(ConnectInfo(client(from)));
    if let Some(authorization) = authorization {
        let value = axum::http::HeaderValue::from_bytes(authorization.as_bytes()).unwrap();
        builder = builder.header("authorization", value);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

/// Rows that a held unbind writes.
async fn stored_rows(h: &Harness) -> (i64, i64) {
    (h.count("requests").await, h.count("outbox").await)
}

fn refusal(status: StatusCode, answer: &Value) -> Result<(), TestCaseError> {
    let code = answer["errcode"].as_str().unwrap_or("");
    prop_assert!(
        REFUSALS.contains(&(status.as_u16(), code)),
        "an unbind was answered {status} {answer}"
    );
    prop_assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a refusal without words: {answer}"
    );
    Ok(())
}

/// Text that cannot be a server name, so that no header drawn here makes
/// Assent look a name up in DNS.
fn not_a_server_name() -> impl Strategy<Value = String> {
    "[^.:a-zA-Z0-9\\[\\]]{0,12}"
}

/// An `Authorization` header that is not the homeserver's signature:
/// nothing, anything, or `X-Matrix` parameters with names and values
/// that are nearly right.
fn forged_header(hs_name: String) -> impl Strategy<Value = Option<String>> {
    let value = prop_oneof![
        Just(hs_name),
        // Refuses connections at once: a key fetch that fails fast.
        Just("127.0.0.1:1".to_owned()),
        Just("ed25519:hs1".to_owned()),
        Just(IS_NAME.to_owned()),
        "[A-Za-z0-9+/]{0,90}",
        not_a_server_name(),
    ];
    let param = (
        near(&["origin", "key", "sig", "destination"]),
        value,
        any::<bool>(),
    )
        .prop_map(|(name, value, quoted)| {
            if quoted {
                format!("{name}=\"{value}\"")
            } else {
                format!("{name}={value}")
            }
        });
    let structured = (near(&["X-Matrix"]), proptest::collection::vec(param, 0..6))
        .prop_map(|(scheme, params)| Some(format!("{scheme} {}", params.join(","))));
    prop_oneof![
        1 => Just(None),
        1 => any::<String>().prop_map(Some),
        6 => structured,
    ]
    .prop_map(|header| header.map(|h| super::header_text(&h)))
}

/// A Synapse-shaped body for `@local:server`, with `address` at `medium`.
fn body(mxid: &str, medium: &str, address: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "mxid": mxid,
        "threepid": {"medium": medium, "address": address},
    }))
    .unwrap()
}

/// Bodies a homeserver might sign: well formed for the test homeserver,
/// nearly so, or anything.
fn any_body(hs_name: String) -> impl Strategy<Value = Vec<u8>> {
    let mxid = prop_oneof![
        4 => "[a-z0-9._=/+-]{1,16}".prop_map({
            let hs_name = hs_name.clone();
            move |local| format!("@{local}:{hs_name}")
        }),
        1 => "[a-z0-9]{1,8}".prop_map(|local| format!("@{local}:other.example")),
        1 => any::<String>(),
    ];
    let address = prop_oneof![
        4 => "[A-Za-z0-9._%+-]{1,16}@[A-Za-z0-9-]{1,10}\\.[A-Za-z]{2,5}",
        2 => "\\PC{1,8}@\\PC{1,8}\\.[a-z]{2}",
        1 => "\\+?[0-9]{5,16}",
        1 => any::<String>(),
    ];
    let shaped = (mxid, near(&["email", "msisdn"]), address)
        .prop_map(|(mxid, medium, address)| body(&mxid, &medium, &address));
    let json_noise =
        proptest::collection::vec(("[a-z_]{1,10}", any::<String>()), 0..4).prop_map(|fields| {
            let object: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(key, value)| (key, Value::String(value)))
                .collect();
            serde_json::to_vec(&object).unwrap()
        });
    prop_oneof![
        6 => shaped,
        1 => json_noise,
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

/// An unbind that does not carry the homeserver's own signature (none, a
/// forged one, one for other bytes) is refused with a Matrix error, and
/// stores nothing: no request, no email.
#[test]
fn an_unbind_without_its_signature_is_refused_and_stores_nothing() {
    let rt = runtime();
    let h = rt.block_on(Harness::new(|_| {}));
    let case = AtomicU32::new(0);
    let strategy = (
        prop::sample::select(vec![V2, V1]),
        forged_header(h.hs.name.clone()),
        any_body(h.hs.name.clone()),
    );
    check(strategy, |(path, header, body)| {
        rt.block_on(async {
            let n = case.fetch_add(1, Ordering::SeqCst);
            let before = stored_rows(&h).await;
            let (status, answer) = h.send(post(path, &body, header.as_deref(), n)).await;
            refusal(status, &answer)?;
            prop_assert_eq!(
                stored_rows(&h).await,
                before,
                "a refused unbind stored rows"
            );
            Ok(())
        })
    });
}

/// The homeserver's signature covers every byte: the body, the path and
/// the identity server it names. One byte changed, and the signed unbind
/// is refused and stores nothing.
#[test]
fn a_signature_covers_every_byte_of_the_body() {
    let rt = runtime();
    let h = rt.block_on(Harness::new(|_| {}));
    let case = AtomicU32::new(0);
    let strategy = (
        "[a-z0-9]{1,12}",
        "[a-z0-9]{1,12}@example\\.org",
        any::<prop::sample::Index>(),
        any::<u8>(),
    );
    check(strategy, |(local, address, at, byte)| {
        rt.block_on(async {
            let n = case.fetch_add(1, Ordering::SeqCst);
            h.clock.0.fetch_add(1_000, Ordering::SeqCst);
            // One address per case: the per-address limit never decides.
            let address = address.replace('@', &format!(".{n}@"));
            let signed = body(&h.hs_mxid(&local), "email", &address);
            let authorization = h.hs.authorization("POST", V2, IS_NAME, &signed);
            let mut altered = signed.clone();
            let at = at.index(altered.len());
            prop_assume!(altered[at] != byte);
            altered[at] = byte;
            let before = stored_rows(&h).await;
            let (status, answer) = h.send(post(V2, &altered, Some(&authorization), n)).await;
            refusal(status, &answer)?;
            prop_assert_eq!(stored_rows(&h).await, before);
            // The same bytes signed for another path or identity server.
            for (path, destination_is) in [(V1, IS_NAME), (V2, "other.is.example")] {
                let authorization = h.hs.authorization("POST", path, destination_is, &signed);
                let (status, answer) = h.send(post(V2, &signed, Some(&authorization), n)).await;
                refusal(status, &answer)?;
            }
            prop_assert_eq!(stored_rows(&h).await, before);
            // And the bytes as signed are held: the refusals above were
            // the signature's doing, not a key that could not be had.
            let (status, _) = h.send(post(V2, &signed, Some(&authorization), n)).await;
            prop_assert_eq!(status, StatusCode::ACCEPTED);
            Ok(())
        })
    });
}

/// A signed body is held, or refused with a Matrix error and nothing
/// stored. A held one is stored under the address as sydent folds it
/// (Python's `str.casefold`), and its repeat, however often, is the same
/// request: no second row, no second email.
#[test]
fn a_signed_unbind_is_held_once_or_refused_with_nothing_stored() {
    let rt = runtime();
    let h = rt.block_on(Harness::new(|_| {}));
    let case = AtomicU32::new(0);
    let held_cases = AtomicU32::new(0);
    check(any_body(h.hs.name.clone()), |bytes| {
        rt.block_on(async {
            let n = case.fetch_add(1, Ordering::SeqCst);
            // A second per case: the per-server limit (600 a minute) never
            // decides, and the homeserver's key (30 days) stays valid.
            h.clock.0.fetch_add(1_000, Ordering::SeqCst);
            let authorization = h.hs.authorization("POST", V2, IS_NAME, &bytes);
            let before = stored_rows(&h).await;
            let (status, answer) = h.send(post(V2, &bytes, Some(&authorization), n)).await;
            if status != StatusCode::ACCEPTED {
                refusal(status, &answer)?;
                prop_assert_eq!(stored_rows(&h).await, before);
                return Ok(());
            }
            let sent: Value = serde_json::from_slice(&bytes).unwrap();
            let mxid = sent["mxid"].as_str().unwrap();
            let medium = Medium::parse(sent["threepid"]["medium"].as_str().unwrap()).unwrap();
            let as_sent = sent["threepid"]["address"].as_str().unwrap();
            let address = match medium {
                Medium::Email => assent_shared::case_fold(as_sent),
                Medium::Msisdn => as_sent.to_owned(),
            };
            let key = RequestKey {
                identity_server: IS_NAME,
                origin: &h.hs.name,
                mxid,
                medium,
                address: &address,
            };
            let held = h.state.repo.latest_for(&key).await.unwrap();
            prop_assert!(held.is_some(), "202 but nothing held under {address:?}");
            held_cases.fetch_add(1, Ordering::SeqCst);
            let held = held.unwrap();
            let after = stored_rows(&h).await;
            prop_assert!(
                after.0 - before.0 <= 1,
                "one unbind stored {} requests",
                after.0 - before.0
            );
            for _ in 0..2 {
                let (status, _) = h.send(post(V2, &bytes, Some(&authorization), n)).await;
                prop_assert_eq!(status, StatusCode::ACCEPTED);
            }
            prop_assert_eq!(stored_rows(&h).await, after, "a repeat stored rows");
            let again = h.state.repo.latest_for(&key).await.unwrap().map(|r| r.id);
            prop_assert_eq!(again, Some(held.id));
            Ok(())
        })
    });
    // Well-formed bodies are a good share of the draw: were none held,
    // the property would have checked refusals only.
    let (cases, held) = (case.into_inner(), held_cases.into_inner());
    assert!(
        held * 16 >= cases,
        "only {held} of {cases} signed unbinds were held"
    );
}

/// The header round trip: whatever the order, spacing and quoting Synapse
/// or sydent would accept, the parameters read back as written.
#[test]
fn x_matrix_parameters_read_back_as_written() {
    let strategy = (
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}(:[1-9][0-9]{0,3})?",
        "[a-zA-Z0-9_]{1,8}",
        proptest::collection::vec(any::<u8>(), 64),
        any::<bool>(),
        Just([0usize, 1, 2, 3]).prop_shuffle(),
        "[ ]{0,2}",
    );
    check(strategy, |(origin, version, sig, quoted, order, space)| {
        let key = format!("ed25519:{version}");
        let encoded = crate::keys::encode_unpadded(&sig);
        let values = [
            ("origin", origin.as_str()),
            ("key", key.as_str()),
            ("sig", encoded.as_str()),
            ("destination", IS_NAME),
        ];
        let params: Vec<String> = order
            .iter()
            .map(|&i| {
                let (name, value) = values[i];
                if quoted {
                    format!("{name}=\"{value}\"")
                } else {
                    format!("{name}={value}")
                }
            })
            .collect();
        let header = format!("X-Matrix {}", params.join(&format!(",{space}")));
        let parsed = xmatrix::parse_header(Some(&header));
        prop_assert!(parsed.is_ok(), "{header}: {parsed:?}");
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.origin.as_str(), origin.as_str());
        prop_assert_eq!(parsed.key.as_str(), key.as_str());
        prop_assert_eq!(parsed.sig.as_bytes(), sig.as_slice());
        prop_assert_eq!(
            parsed.destination.map(|d| d.to_string()),
            Some(IS_NAME.to_owned())
        );
        Ok(())
    });
}
