//! The no-JavaScript consent form. Whatever a browser, a mail scanner or
//! another site posts to `/consent/{token}`, a request is decided only by a
//! confirming post that carries the proof the page minted for exactly that
//! decision; anything else leaves it pending and shows a page that says why.

use super::{check, client, near, runtime};
use crate::consent::nojs::csrf_for;
use crate::test_support::{Harness, IS_NAME};
use assent_shared::RequestStatus;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where a drawn value stands for the proof minted for one decision (known
/// only once the case's request is held).
const PROOF_FOR_APPROVE: &str = "\u{1}proof:approve";
const PROOF_FOR_DENY: &str = "\u{1}proof:deny";

#[derive(Debug, Clone)]
enum Form {
    /// Fields as a browser encodes them, in order.
    Fields(Vec<(String, String)>),
    /// Bytes as anything may send them.
    Raw(Vec<u8>),
}

fn form() -> impl Strategy<Value = Form> {
    let value = prop_oneof![
        4 => near(&["approve", "deny", "review", "confirm"]),
        2 => Just(PROOF_FOR_APPROVE.to_owned()),
        2 => Just(PROOF_FOR_DENY.to_owned()),
        1 => "[A-Za-z0-9_-]{43}",
        1 => any::<String>(),
    ];
    let name = prop_oneof![
        6 => near(&["decision", "step", "csrf"]),
        1 => "[a-z]{1,6}",
    ];
    // Half the time a complete confirming form, perhaps with more fields.
    let complete = (
        prop::sample::select(vec!["approve", "deny"]),
        any::<bool>(),
        proptest::collection::vec((name.clone(), value.clone()), 0..3),
    )
        .prop_map(|(decision, right_proof, mut more)| {
            let proof = match (decision, right_proof) {
                ("approve", true) | ("deny", false) => PROOF_FOR_APPROVE,
                _ => PROOF_FOR_DENY,
            };
            let mut fields = vec![
                ("decision".to_owned(), decision.to_owned()),
                ("step".to_owned(), "confirm".to_owned()),
                ("csrf".to_owned(), proof.to_owned()),
            ];
            fields.append(&mut more);
            Form::Fields(fields)
        });
    prop_oneof![
        3 => complete,
        3 => proptest::collection::vec((name, value), 0..6).prop_map(Form::Fields),
        1 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Form::Raw),
    ]
}

/// What `Sec-Fetch-Site` a browser sends with the post, if any.
fn site() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        near(&["same-origin", "none", "same-site", "cross-site"])
            .prop_map(|site| Some(super::header_text(&site))),
    ]
}

#[test]
fn only_the_confirming_post_with_its_own_proof_decides() {
    let rt = runtime();
    let h = rt.block_on(Harness::new(|_| {}));
    let case = AtomicU32::new(0);
    check((form(), site()), |(form, site)| {
        rt.block_on(async {
            let n = case.fetch_add(1, Ordering::SeqCst);
            h.clock.0.fetch_add(60_000, Ordering::SeqCst);
            let (id, token) = h.hold(&format!("owner{n}")).await;
            let proof = |value: &str| match value {
                PROOF_FOR_APPROVE => csrf_for(&h.state, &token, "approve"),
                PROOF_FOR_DENY => csrf_for(&h.state, &token, "deny"),
                other => other.to_owned(),
            };
            let (bytes, expected) = match &form {
                Form::Raw(bytes) => (bytes.clone(), None),
                Form::Fields(fields) => {
                    let fields: Vec<(String, String)> = fields
                        .iter()
                        .map(|(name, value)| (name.clone(), proof(value)))
                        .collect();
                    let last = |name: &str| {
                        fields
                            .iter()
                            .rev()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.as_str())
                    };
                    // The one way to decide: a confirming post whose proof
                    // is the page's own for the decision it carries.
                    let expected = match (last("decision"), last("step"), last("csrf")) {
                        (Some(decision @ ("approve" | "deny")), Some("confirm"), Some(given))
                            if given == csrf_for(&h.state, &token, decision) =>
                        {
                            Some(if decision == "approve" {
                                "approve"
                            } else {
                                "deny"
                            })
                        }
                        _ => None,
                    };
                    let encoded = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&fields)
                        .finish();
                    (encoded.into_bytes(), expected)
                }
            };
            let same_site = site
                .as_deref()
                .is_none_or(|s| s == "same-origin" || s == "none");
            let expected = expected.filter(|_| same_site);
            let mut request = Request::post(format!("/consent/{token}"))
                .header("host", IS_NAME)
                .header("content-type", "application/x-www-form-urlencoded")
                .extension(ConnectInfo(client(n)));
            if let Some(site) = &site {
                let value = axum::http::HeaderValue::from_bytes(site.as_bytes()).unwrap();
                request = request.header("sec-fetch-site", value);
            }
            let response =
                tower::ServiceExt::oneshot(h.app.clone(), request.body(Body::from(bytes)).unwrap())
                    .await
                    .unwrap();
            let status = response.status();
            let stored = h.state.repo.request(&id).await.unwrap().unwrap();
            match expected {
                Some(decision) => {
                    prop_assert_eq!(status, StatusCode::OK);
                    let wanted = if decision == "approve" {
                        RequestStatus::Approved
                    } else {
                        RequestStatus::Denied
                    };
                    prop_assert_eq!(stored.status, wanted);
                }
                None => {
                    prop_assert!(
                        [
                            StatusCode::OK,
                            StatusCode::BAD_REQUEST,
                            StatusCode::FORBIDDEN
                        ]
                        .contains(&status),
                        "the form was answered {status}"
                    );
                    prop_assert_eq!(
                        stored.status,
                        RequestStatus::Pending,
                        "decided without its proof"
                    );
                }
            }
            let content_type = response.headers().get("content-type");
            prop_assert!(
                content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/html")),
                "the form was answered with {content_type:?}, not a page"
            );
            Ok(())
        })
    });
}
