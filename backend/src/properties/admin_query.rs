//! The admin list's query string. Any query is answered with a page or with
//! `M_INVALID_PARAM`, never a server error; and following `next` from the
//! first page visits every matching request exactly once, newest first.

use super::{check, near, runtime};
use crate::test_support::{Harness, IS_NAME};
use assent_shared::admin::RequestList;
use assent_shared::RequestStatus;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

const TOKEN: &str = "admin-token-for-property-tests-0123456789";
const NAMES: [&str; 8] = [
    "status",
    "q",
    "from",
    "limit",
    "identity_server",
    "requesting_server",
    "created_from",
    "created_before",
];

async fn list(h: &Harness, query: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("/_assent/v1/admin/requests?{query}"))
        .header("host", IS_NAME)
        .header("authorization", format!("Bearer {TOKEN}"))
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(h.app.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Thirty requests: pairs held in the same millisecond (so that paging
/// must order by id as well as time), some approved, some denied.
async fn seeded() -> Harness {
    let h = Harness::new(|c| c.admin.tokens = vec![TOKEN.to_owned()]).await;
    for n in 0..30 {
        if n % 2 == 0 {
            h.clock.0.fetch_add(1_000, Ordering::SeqCst);
        }
        let (_, token) = h.hold(&format!("user{n}")).await;
        if n % 5 == 0 {
            let decision = if n % 10 == 0 { "approve" } else { "deny" };
            crate::consent::record(
                &h.state,
                &token,
                if decision == "approve" {
                    assent_shared::OwnerDecision::Approve
                } else {
                    assent_shared::OwnerDecision::Deny
                },
                crate::lifecycle::Via::Api,
            )
            .await
            .unwrap();
        }
    }
    h
}

/// Query strings: the list's own parameters with near-miss names and
/// values, form-encoded, or characters as anything may send them.
fn any_query(hs_name: String) -> impl Strategy<Value = String> {
    let value = prop_oneof![
        near(&[
            "pending",
            "approved",
            "denied",
            "expired",
            "cancelled",
            "all"
        ]),
        Just(hs_name),
        Just(IS_NAME.to_owned()),
        "-?[0-9]{1,20}",
        "[A-Za-z0-9_-]{0,40}",
        any::<String>(),
    ];
    let name = prop_oneof![6 => near(&NAMES), 1 => "[a-z_]{1,10}"];
    let encoded = proptest::collection::vec((name, value), 0..5).prop_map(|pairs| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    });
    prop_oneof![4 => encoded, 1 => "[a-z0-9=&%+;._~-]{0,60}"]
}

#[test]
fn any_query_is_a_page_or_an_invalid_param() {
    let rt = runtime();
    let h = rt.block_on(seeded());
    check(any_query(h.hs.name.clone()), |query| {
        rt.block_on(async {
            let (status, answer) = list(&h, &query).await;
            match status {
                StatusCode::OK => {
                    let page = serde_json::from_value::<RequestList>(answer.clone());
                    prop_assert!(page.is_ok(), "?{query} answered {answer}");
                }
                StatusCode::BAD_REQUEST => {
                    prop_assert_eq!(answer["errcode"].as_str(), Some("M_INVALID_PARAM"));
                }
                other => prop_assert!(false, "?{query} answered {other} {answer}"),
            }
            Ok(())
        })
    });
}

#[test]
fn paging_visits_every_match_once_newest_first() {
    let rt = runtime();
    let h = rt.block_on(seeded());
    let filters = (
        prop::sample::select(vec![
            None,
            Some("pending"),
            Some("approved"),
            Some("denied"),
        ]),
        prop::sample::select(vec![
            None,
            Some("user1"),
            Some("USER2"),
            Some("@user"),
            Some("user2@example.org"),
            Some("nobody"),
        ]),
        1..8u32,
    );
    check(filters, |(status, q, limit)| {
        rt.block_on(async {
            let mut filter = url::form_urlencoded::Serializer::new(String::new());
            if let Some(status) = status {
                filter.append_pair("status", status);
            }
            if let Some(q) = q {
                filter.append_pair("q", q);
            }
            let filter = filter.finish();
            let (status_code, whole) = list(&h, &format!("{filter}&limit=200")).await;
            prop_assert_eq!(status_code, StatusCode::OK);
            let whole: RequestList = serde_json::from_value(whole).unwrap();
            prop_assert!(whole.next.is_none());
            // What the filters must find, worked out from how `seeded`
            // made the thirty requests.
            let mut expected: Vec<u32> = (0..30u32)
                .filter(|n| match status {
                    None => true,
                    Some("approved") => n % 10 == 0,
                    Some("denied") => n % 5 == 0 && n % 10 != 0,
                    Some(_) => n % 5 != 0,
                })
                .filter(|n| match q {
                    None | Some("@user") => true,
                    Some("user1") => *n == 1 || (10..20).contains(n),
                    Some("USER2") => *n == 2 || (20..30).contains(n),
                    Some("user2@example.org") => *n == 2,
                    Some(_) => false,
                })
                .collect();
            expected.sort_unstable();
            let mut found: Vec<u32> = whole
                .requests
                .iter()
                .filter_map(|r| {
                    r.mxid
                        .strip_prefix("@user")?
                        .split(':')
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
            found.sort_unstable();
            prop_assert_eq!(found, expected, "?{} found other requests", filter);
            let mut seen = Vec::new();
            let mut from: Option<String> = None;
            for _ in 0..=whole.requests.len() {
                let mut query = format!("{filter}&limit={limit}");
                if let Some(from) = &from {
                    query.push_str(&format!(
                        "&from={}",
                        url::form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>()
                    ));
                }
                let (status_code, page) = list(&h, &query).await;
                prop_assert_eq!(status_code, StatusCode::OK);
                let page: RequestList = serde_json::from_value(page).unwrap();
                prop_assert!(page.requests.len() <= limit as usize);
                seen.extend(page.requests);
                from = page.next;
                if from.is_none() {
                    break;
                }
            }
            prop_assert!(from.is_none(), "paging did not end");
            let ids: Vec<&str> = seen.iter().map(|r| r.id.as_str()).collect();
            let unique: HashSet<&str> = ids.iter().copied().collect();
            prop_assert_eq!(unique.len(), ids.len(), "a request on two pages");
            let all: Vec<&str> = whole.requests.iter().map(|r| r.id.as_str()).collect();
            prop_assert_eq!(&ids, &all, "pages and one long page disagree");
            prop_assert!(seen
                .windows(2)
                .all(|w| w[0].created_at_ms >= w[1].created_at_ms));
            if let Some(status) = status {
                let status: RequestStatus = status.parse().unwrap();
                prop_assert!(seen.iter().all(|r| r.status == status));
                prop_assert_eq!(whole.counts.get(status), seen.len() as i64);
            }
            Ok(())
        })
    });
}
