//! The admin API against the real binary, on SQLite and (in the PostgreSQL
//! pass of `cargo xtask test`) on PostgreSQL: authentication, the list, a
//! request's story, the three actions, purging and tombstones, stats,
//! metrics and health.

use assent_e2e::admin::{self, ADMIN_TOKEN};
use assent_e2e::smtp::SmtpServer;
use assent_e2e::Assent;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CSRF: &str = "x-assent-csrf";

async fn start(smtp: &SmtpServer) -> Assent {
    admin::start(
        smtp,
        r#"[{ kind = "webhook", url = "http://127.0.0.1:9/hook" }]"#,
    )
    .await
}

async fn hold(assent: &Assent, local: &str, server: &str) -> String {
    admin::hold(assent, local, server, json!({})).await
}

async fn admin(
    assent: &Assent,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method, assent.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(assent: &Assent, path: &str) -> Value {
    let (status, body) = admin(assent, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// Waits until the request's audit trail has an event of `kind` (`n` of them).
async fn wait_for_event(assent: &Assent, id: &str, kind: &str, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let detail = get(assent, &format!("/_assent/v1/admin/requests/{id}")).await;
        let seen = detail["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .count();
        if seen >= n {
            return detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no {kind} ×{n} in {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Every (method, path) the admin API serves.
const ADMIN_ROUTES: [(&str, &str); 12] = [
    ("get", "/_assent/v1/admin/whoami"),
    ("post", "/_assent/v1/admin/session"),
    ("delete", "/_assent/v1/admin/session"),
    ("get", "/_assent/v1/admin/requests"),
    ("get", "/_assent/v1/admin/requests/{id}"),
    ("post", "/_assent/v1/admin/requests/{id}/resend"),
    ("post", "/_assent/v1/admin/requests/{id}/cancel"),
    ("post", "/_assent/v1/admin/requests/{id}/retry"),
    ("post", "/_assent/v1/admin/requests/{id}/purge"),
    ("post", "/_assent/v1/admin/tombstones/search"),
    ("get", "/_assent/v1/admin/stats/servers"),
    ("get", "/_assent/v1/admin/openapi.json"),
];

#[tokio::test]
async fn the_document_lists_every_admin_route_and_each_refuses_a_caller_without_credentials() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = start(&smtp).await;
    let id = hold(&assent, "alice", "hs.example.org").await;
    let doc = get(&assent, "/_assent/v1/admin/openapi.json").await;
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ADMIN_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    for schema in [
        "RequestList",
        "RequestDetail",
        "ActionOutcome",
        "ServerStatsList",
        "Whoami",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is described"
        );
    }

    let client = Client::new();
    for (method, path) in ADMIN_ROUTES {
        let url = assent.url(&path.replace("{id}", &id));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        // Nothing at all; a session cookie nobody issued (with the CSRF header).
        let bare = client.request(method.clone(), &url).send().await.unwrap();
        let forged = client
            .request(method.clone(), &url)
            .header(
                "cookie",
                "assent_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )
            .header(CSRF, "1")
            .send()
            .await
            .unwrap();
        for response in [bare, forged] {
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            assert_eq!(response.headers()["cache-control"], "no-store");
            let body: Value = response.json().await.unwrap();
            assert!(
                ["M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"].contains(&body["errcode"].as_str().unwrap()),
                "{method} {path}: {body}"
            );
        }
    }
    // A wrong bearer token is refused too (and counted: see the sign-in test).
    let wrong = client
        .get(assent.url("/_assent/v1/admin/requests"))
        .bearer_auth("not-the-admin-token-0123456789abcdef0123")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Paths the document does not list are not served.
    let (status, _) = admin(&assent, Method::GET, "/_assent/v1/admin/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was changed by the refused calls.
    assert_eq!(
        get(&assent, &format!("/_assent/v1/admin/requests/{id}")).await["request"]["status"],
        "pending"
    );
    // The console's page is never framable.
    let page = client.get(assent.url("/admin")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[tokio::test]
async fn a_sign_in_gives_a_strict_cookie_that_signing_out_ends() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = start(&smtp).await;
    let id = hold(&assent, "bob", "hs.example.org").await;
    let client = Client::new();
    let sign_in = |token: &str, csrf: bool| {
        let mut request = client
            .post(assent.url("/_assent/v1/admin/session"))
            .json(&json!({"token": token}));
        if csrf {
            request = request.header(CSRF, "1");
        }
        request.send()
    };
    // A body that is not a sign-in is named as such.
    let garbled = client
        .post(assent.url("/_assent/v1/admin/session"))
        .header(CSRF, "1")
        .body("token=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
    // Without the CSRF header a sign-in is refused before the token is checked.
    assert_eq!(
        sign_in(ADMIN_TOKEN, false).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let response = sign_in(ADMIN_TOKEN, true).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "assent_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/_assent/v1/admin",
        "Max-Age=43200",
    ] {
        assert!(set_cookie.contains(part), "{part} in {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: not Secure ({set_cookie})"
    );
    let whoami: Value = response.json().await.unwrap();
    assert_eq!(whoami["via"], "session");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let with_cookie = |method: Method, path: &str, csrf: bool| {
        let mut request = client
            .request(method, assent.url(path))
            .header("cookie", &cookie);
        if csrf {
            request = request.header(CSRF, "1");
        }
        request.send()
    };
    let me: Value = with_cookie(Method::GET, "/_assent/v1/admin/whoami", false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["via"].as_str(), me["token_id"].as_str()),
        (Some("session"), whoami["token_id"].as_str())
    );
    assert!(me["session_expires_at_ms"].as_i64().unwrap() > 0);
    // Reading needs no CSRF header; changing does.
    let list = with_cookie(Method::GET, "/_assent/v1/admin/requests", false)
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let cancel = format!("/_assent/v1/admin/requests/{id}/cancel");
    let refused = with_cookie(Method::POST, &cancel, false).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        get(&assent, &format!("/_assent/v1/admin/requests/{id}")).await["request"]["status"],
        "pending"
    );

    // Signing out ends the session on the server, not only in the browser.
    // Only the cookie's hash is stored (32 bytes), on either database.
    assert_eq!(
        assent
            .count("admin_sessions WHERE length(id_hash) = 32")
            .await,
        1
    );
    // Signing out changes something: it too needs the CSRF header.
    let refused = with_cookie(Method::DELETE, "/_assent/v1/admin/session", false)
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = with_cookie(Method::DELETE, "/_assent/v1/admin/session", true)
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = with_cookie(Method::GET, "/_assent/v1/admin/whoami", false)
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(assent.count("admin_sessions").await, 0);

    // Refused sign-ins are limited per address: 10 a minute.
    for _ in 0..10 {
        assert_eq!(
            sign_in("wrong-token-wrong-token-wrong-token", true)
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = sign_in(ADMIN_TOKEN, true).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_i64().unwrap() > 0);
    // The session's cookie value is not stored: only its hash.
    let value = cookie.trim_start_matches("assent_session=");
    for file in std::fs::read_dir(&assent.data_dir).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()));
    }
}

#[tokio::test]
async fn the_list_filters_searches_and_pages_through_every_request() {
    let smtp = SmtpServer::start(&[], 0);
    let assent = start(&smtp).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let server = if i % 5 == 0 {
            "flood.example.net"
        } else {
            "hs.example.org"
        };
        ids.push(hold(&assent, &format!("user{i:02}"), server).await);
    }
    let (status, _) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{}/cancel", ids[3]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Paging: 25 requests in pages of 10, newest first, none twice.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &next {
            Some(from) => format!("/_assent/v1/admin/requests?limit=10&from={from}"),
            None => "/_assent/v1/admin/requests?limit=10".to_owned(),
        };
        let page = get(&assent, &path).await;
        pages += 1;
        assert_eq!(page["counts"]["pending"], 24);
        assert_eq!(page["counts"]["cancelled"], 1);
        seen.extend(
            page["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(from) => next = Some(from.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    // Ids begin with their creation time; two made in the same millisecond
    // are listed by id.
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first);

    let count_of = |page: &Value| page["requests"].as_array().unwrap().len();
    let cancelled = get(&assent, "/_assent/v1/admin/requests?status=cancelled").await;
    assert_eq!(count_of(&cancelled), 1);
    assert_eq!(cancelled["requests"][0]["id"], ids[3].as_str());
    let flood = get(
        &assent,
        "/_assent/v1/admin/requests?requesting_server=flood.example.net",
    )
    .await;
    assert_eq!(count_of(&flood), 5);
    assert_eq!(flood["counts"]["pending"], 5);
    // Search: an address, a Matrix ID's localpart (any case), a server name.
    let by_address = get(&assent, "/_assent/v1/admin/requests?q=user07%40example.org").await;
    assert_eq!(by_address["requests"][0]["id"], ids[7].as_str());
    assert_eq!(count_of(&by_address), 1);
    let by_localpart = get(&assent, "/_assent/v1/admin/requests?q=USER1").await;
    assert_eq!(count_of(&by_localpart), 10, "user10..user19");
    let by_server = get(&assent, "/_assent/v1/admin/requests?q=flood.").await;
    assert_eq!(count_of(&by_server), 5);
    let none = get(&assent, "/_assent/v1/admin/requests?q=nobody").await;
    assert_eq!(
        (
            count_of(&none),
            &none["next"],
            none["counts"]["pending"].as_i64()
        ),
        (0, &Value::Null, Some(0))
    );
    let all = get(&assent, "/_assent/v1/admin/requests?limit=200").await;
    let created: Vec<i64> = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["created_at_ms"].as_i64().unwrap())
        .collect();
    let window = get(
        &assent,
        &format!(
            "/_assent/v1/admin/requests?created_from={}&created_before={}",
            created[19], created[9]
        ),
    )
    .await;
    assert_eq!(
        count_of(&window),
        created
            .iter()
            .filter(|c| **c >= created[19] && **c < created[9])
            .count()
    );

    for bad in [
        "status=maybe",
        "limit=0",
        "limit=500",
        "from=garbage",
        "colour=red",
    ] {
        let (status, body) = admin(
            &assent,
            Method::GET,
            &format!("/_assent/v1/admin/requests?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{bad}"
        );
    }

    let stats = get(&assent, "/_assent/v1/admin/stats/servers").await;
    let servers = stats["servers"].as_array().unwrap();
    assert_eq!(
        servers[0]["requesting_server"], "hs.example.org",
        "busiest first"
    );
    assert_eq!(servers[0]["last_24h"]["pending"], 19);
    assert_eq!(servers[0]["last_24h"]["cancelled"], 1);
    assert_eq!(servers[1]["requesting_server"], "flood.example.net");
    assert_eq!(servers[1]["last_7d"]["pending"], 5);
}

#[tokio::test]
async fn an_admin_sees_the_whole_story_and_resends_retries_and_cancels() {
    // The first message is refused for good: the email is given up.
    let smtp = SmtpServer::start(&[550], 0);
    let assent = start(&smtp).await;
    let id = hold(&assent, "carol", "hs.example.org").await;
    let detail = wait_for_event(&assent, &id, "email_given_up", 1).await;
    assert_eq!(
        detail["request"]["threepid"]["address"],
        "carol@example.org"
    );
    assert_eq!(detail["request"]["requesting_server"], "hs.example.org");
    assert_eq!(detail["outbox"][0]["state"], "given_up");
    assert_eq!(kinds(&detail)[0], "received");

    // Retry: the email is queued again and this time delivered.
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/retry"),
        Some(json!({"kind": "email"})),
    )
    .await;
    assert_eq!(
        (status, body["requeued"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let detail = wait_for_event(&assent, &id, "email_sent", 1).await;
    let retry = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "admin_retry")
        .unwrap();
    let whoami = get(&assent, "/_assent/v1/admin/whoami").await;
    assert_eq!(
        retry["actor"],
        format!("admin:{}", whoami["token_id"].as_str().unwrap())
    );
    assert!(detail["outbox"][0]["requeued_at_ms"].is_i64());
    let messages = smtp.wait_for(1, Duration::from_secs(10)).await;
    let first_link = link_in(&messages[0]);
    // Nothing left to retry.
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_NOTHING_TO_RETRY"))
    );

    // The owner opened the link: the view is in the trail.
    let token = first_link.rsplit('/').next().unwrap();
    let view = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .await
        .unwrap();
    assert_eq!(view.status(), StatusCode::OK);

    // Resend: a new link; the old one is dead.
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/resend"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = smtp.wait_for(2, Duration::from_secs(10)).await;
    let second_link = link_in(&messages[1]);
    assert_ne!(first_link, second_link);
    let old = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::NOT_FOUND);
    let new_token = second_link.rsplit('/').next().unwrap();
    let new = reqwest::get(assent.url(&format!("/_assent/v1/consent/{new_token}")))
        .await
        .unwrap();
    assert_eq!(new.status(), StatusCode::OK);
    // At most three resends an hour per request.
    for _ in 0..2 {
        let (status, _) = admin(
            &assent,
            Method::POST,
            &format!("/_assent/v1/admin/requests/{id}/resend"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/resend"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("M_LIMIT_EXCEEDED"))
    );

    // Cancel: decided, signed, and queued for the webhook.
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{body}"
    );
    let detail = get(&assent, &format!("/_assent/v1/admin/requests/{id}")).await;
    assert_eq!(detail["request"]["status"], "cancelled");
    assert_eq!(detail["decision"]["decision"], "cancel");
    assert!(detail["decision"]["signatures"].is_object());
    assert!(detail["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "relay" && o["sink"] == "webhook"));
    let trail = kinds(&detail);
    for kind in [
        "received",
        "email_given_up",
        "admin_retry",
        "email_sent",
        "viewed",
        "admin_resend",
        "decided",
    ] {
        assert!(trail.contains(&kind.to_owned()), "{kind} in {trail:?}");
    }
    let decided = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "decided")
        .unwrap();
    assert!(decided["actor"].as_str().unwrap().starts_with("admin:"));
    // A decided request cannot be cancelled or resent again; an unknown one is 404.
    for action in ["cancel", "resend"] {
        let (status, body) = admin(
            &assent,
            Method::POST,
            &format!("/_assent/v1/admin/requests/{id}/{action}"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::CONFLICT, Some("M_NOT_PENDING")),
            "{action}"
        );
    }
    let (status, _) = admin(
        &assent,
        Method::POST,
        "/_assent/v1/admin/requests/req_nope/cancel",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A decided request's email is not needed any more.
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/retry"),
        Some(json!({"kind": "email"})),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_NOT_PENDING"))
    );
    let (status, body) = admin(
        &assent,
        Method::POST,
        &format!("/_assent/v1/admin/requests/{id}/retry"),
        Some(json!({"kind": "fax"})),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );

    // Metrics saw all of it; health answers.
    let metrics = reqwest::get(assent.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "assent_intake_total{outcome=\"held\"} 1",
        "assent_emails_total{outcome=\"failed\"} 1",
        "assent_decisions_total{decision=\"cancel\"} 1",
        "assent_outbox_pending{outbox=\"relay\"} 1",
        "assent_outbox_oldest_pending_age_seconds{outbox=\"email\"}",
        "assent_http_request_duration_seconds_bucket{",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!metrics.contains("carol"), "no address in metrics");
    let health: Value = reqwest::get(assent.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    // No address or token in the logs.
    let logs = assent.output_text();
    assert!(!logs.contains("carol@example.org"));
    assert!(!logs.contains(ADMIN_TOKEN));
    assert!(!logs.contains(new_token));
}

/// The consent link in a message.
fn link_in(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("=\r\n", "");
    let start = text.find("/consent/").expect("a consent link");
    let tail = &text[start..];
    let end = tail
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .unwrap_or(tail.len());
    tail[..end].to_owned()
}

/// An administrator deletes an ended request's personal data at once; the
/// tombstone is found by the address (however it is cased), records who
/// purged it, and its consent link says the data was deleted.
#[tokio::test]
async fn an_admin_purges_an_ended_request_and_finds_its_tombstone_by_address() {
    let smtp = SmtpServer::start(&[], 0);
    let hook = assent_e2e::chaos::Receiver::slow(5, 0, Duration::ZERO).await;
    let assent = admin::start(
        &smtp,
        &format!(r#"[{{ kind = "webhook", url = "{}/hook" }}]"#, hook.url),
    )
    .await;
    let id = hold(&assent, "dora", "hs.example.org").await;
    let pending = hold(&assent, "pete", "hs.example.org").await;
    let messages = smtp.wait_for(2, Duration::from_secs(10)).await;
    let link = messages
        .iter()
        .map(|m| link_in(m))
        .find(|l| {
            messages.iter().any(|m| {
                String::from_utf8_lossy(m).contains("To: dora@example.org") && link_in(m) == *l
            })
        })
        .unwrap();
    let token = link.rsplit('/').next().unwrap().to_owned();
    let decided = Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
        .json(&json!({"decision": "deny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);
    let purge_with = |id: &str, force: bool| {
        let path = format!("/_assent/v1/admin/requests/{id}/purge");
        let assent = &assent;
        async move {
            let mut request = Client::new()
                .post(assent.url(&path))
                .bearer_auth(ADMIN_TOKEN)
                .header(CSRF, "1");
            if force {
                request = request.json(&json!({"force": true}));
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let purge = |id: &str| purge_with(id, true);
    // A denial answers repeats for deny_cooldown: purging it would let the
    // homeserver ask again, so it takes "force" (the owner asked for erasure).
    let (status, body) = purge_with(&id, false).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_STILL_ANSWERING")),
        "{body}"
    );
    // Not while its webhook is still to be told; then at once.
    let started = Instant::now();
    loop {
        let (status, body) = purge(&id).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::CONFLICT, Some("M_NOT_ENDED")),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(15), "never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hook.deliveries().len(), 1, "told before it was purged");
    let (status, body) = purge(&id).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_ALREADY_PURGED"))
    );
    let (status, body) = purge(&pending).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_NOT_ENDED")),
        "a pending request is never purged"
    );
    let (status, _) = purge("req_nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What is left: the outcome and times, no address, no Matrix ID, no trail.
    let detail = get(&assent, &format!("/_assent/v1/admin/requests/{id}")).await;
    assert_eq!(detail["request"]["status"], "denied");
    assert_eq!(detail["request"]["mxid"], "");
    assert_eq!(detail["request"]["threepid"]["address"], "");
    assert!(detail["request"]["purged_at_ms"].is_i64(), "{detail:#}");
    assert_eq!(detail["audit"].as_array().map(Vec::len), Some(0));
    let listed = get(&assent, "/_assent/v1/admin/requests").await;
    let row = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(row["purged_at_ms"].is_i64(), "{row}");
    // The identity server that asked (integrated mode) sees a tombstone too.
    let integrated: Value = Client::new()
        .get(assent.url(&format!("/_assent/v1/requests/{id}")))
        .bearer_auth(admin::IS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(integrated["purged_at_ms"].is_i64(), "{integrated}");
    assert_eq!(integrated["threepid"]["address"], "", "{integrated}");
    assert_eq!(integrated["decision"], Value::Null, "{integrated}");

    // "Did we ever act on this address?"
    let search = |body: Value| {
        admin(
            &assent,
            Method::POST,
            "/_assent/v1/admin/tombstones/search",
            Some(body),
        )
    };
    let (status, found) = search(json!({"address": "Dora@Example.ORG"})).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let tombstones = found["tombstones"].as_array().unwrap();
    assert_eq!(tombstones.len(), 1, "{found}");
    let whoami = get(&assent, "/_assent/v1/admin/whoami").await;
    assert_eq!(tombstones[0]["id"], id.as_str());
    assert_eq!(tombstones[0]["status"], "denied");
    assert_eq!(
        tombstones[0]["purged_by"],
        format!("admin:{}", whoami["token_id"].as_str().unwrap())
    );
    assert_eq!(
        tombstones[0]["decision_sha256"].as_str().map(str::len),
        Some(64)
    );
    let (_, by_mxid) = search(json!({"mxid": "@dora:hs.example.org"})).await;
    assert_eq!(by_mxid["tombstones"].as_array().map(Vec::len), Some(1));
    let (_, none) = search(json!({"address": "pete@example.org"})).await;
    assert_eq!(
        none["tombstones"].as_array().map(Vec::len),
        Some(0),
        "pending: no tombstone"
    );
    let (status, body) = search(json!({})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let (status, _) = search(json!({"address": "not an address"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The link says what happened, on the page and to the app.
    let page = Client::new()
        .get(assent.url(&format!("/consent/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    let text = page.text().await.unwrap();
    assert!(text.contains("deleted on"), "{text}");
    assert!(!text.contains("dora@example.org"));
    let api = Client::new()
        .get(assent.url(&format!("/_assent/v1/consent/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::GONE);
    // No address or token in the logs.
    let logs = assent.output_text();
    assert!(!logs.contains("dora@example.org") && !logs.contains("Dora@Example.ORG"));
    assert!(!logs.contains(&token));
}
