//! The product starts with no config, serves its pages, API and keys, and the
//! demo request opens in a real browser.

use assent_e2e::browser::{console_errors, screenshot, wait_for_text, Browser};
use assent_e2e::{Assent, Options};
use ruma_common::canonical_json::CanonicalJsonObject;
use ruma_common::serde::Base64;
use std::collections::BTreeMap;

#[tokio::test]
async fn with_no_config_it_serves_health_keys_and_the_app() {
    let assent = Assent::start(Options::default()).await;
    println!(
        "startup to first healthy answer: {} ms",
        assent.startup.as_millis()
    );
    let http = reqwest::Client::new();

    let health = http.get(assent.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");

    // A signing key was generated in the data folder, in Synapse's format.
    let key_file = std::fs::read_to_string(assent.data_dir.join("signing.key")).unwrap();
    let words: Vec<&str> = key_file.split_whitespace().collect();
    assert_eq!((words.len(), words[0]), (3, "ed25519"));

    // The published keys verify with the key they publish.
    let keys = http
        .get(assent.url("/_assent/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let doc: CanonicalJsonObject = keys.json().await.unwrap();
    let server = doc["server_name"].as_str().unwrap().to_owned();
    let key_id = format!("ed25519:{}", words[1]);
    let public = doc["verify_keys"].as_object().unwrap()[&key_id]
        .as_object()
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut map = BTreeMap::new();
    map.insert(
        server.clone(),
        BTreeMap::from([(key_id.clone(), Base64::parse(&public).unwrap())]),
    );
    ruma_signatures::verify_json(&map, &doc).expect("the keys document verifies");
    let mut forged = doc.clone();
    forged.insert(
        "valid_until_ts".to_owned(),
        ruma_common::canonical_json::CanonicalJsonValue::Integer(1u32.into()),
    );
    assert!(ruma_signatures::verify_json(&map, &forged).is_err());

    // The app shell: strict CSP, never framable, no referrer. (An unknown
    // link is a 404, with the page that says so.)
    let page = http
        .get(assent.url("/consent/not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        !csp.contains("'unsafe-inline'") && !csp.contains("'unsafe-eval'"),
        "{csp}"
    );
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    let wasm_name = html
        .split(['"', '\'', ' ', '=', '>'])
        .find(|s| s.starts_with('/') && s.ends_with(".wasm"))
        .expect("index.html names the wasm file")
        .to_owned();

    // Hashed assets: right MIME type, compressed, cached for good.
    let wasm = http
        .get(assent.url(&wasm_name))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(wasm.status(), 200);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    assert_eq!(wasm.headers()["content-encoding"], "br");
    assert!(wasm.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));

    // JSON errors and the non-page CSP on API paths.
    let unknown = http
        .get(assent.url("/_assent/v1/consent/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(unknown.headers()["cache-control"], "no-store");
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let nothing = http
        .get(assent.url("/_assent/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);
    assert_eq!(
        nothing.json::<serde_json::Value>().await.unwrap()["errcode"],
        "M_UNRECOGNIZED"
    );
    let admin = http
        .get(assent.url("/_assent/v1/admin/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401);
}

#[tokio::test]
async fn the_demo_request_opens_in_chromium_without_errors() {
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let consent = assent.stdout_line_containing("/consent/").unwrap();
    let admin = assent.stdout_line_containing("/admin#token=").unwrap();
    assert!(consent.starts_with(&assent.base), "{consent}");
    // Tokens are only in the printed links, never in the log.
    let token = consent.rsplit('/').next().unwrap().to_owned();
    assert_eq!(token.len(), 51);
    assert!(
        !assent.stderr_text().contains(&token),
        "the consent token leaked into the log"
    );

    // Its email is a file in the printed folder, carrying the same link.
    let mail_dir = assent.stdout_line_containing("/mail").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let eml = loop {
        let found = std::fs::read_dir(&mail_dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(path) = found {
            break std::fs::read_to_string(path).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no demo email in {mail_dir}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(eml.contains("alice@example.org"));
    assert!(
        eml.replace("=\r\n", "").contains(&token),
        "the email carries the printed link"
    );

    // The embed route is framable only where an identity server allows it;
    // the demo's allows no one.
    let embed = reqwest::get(assent.url(&format!("/embed/consent/{token}")))
        .await
        .unwrap();
    assert!(embed.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .ends_with("frame-ancestors 'none'"));

    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&consent).await.unwrap();
            let text = wait_for_text(&client, "alice@example.org").await;
            for expected in [
                "hs.example.org",
                "@alice:hs.example.org",
                "Example identity server (demo)",
                "Nothing changes unless you approve",
            ] {
                assert!(
                    text.contains(expected),
                    "consent page lacks {expected:?}:\n{text}"
                );
            }
            screenshot(&client, "smoke-consent").await;
            let errors = console_errors(&client).await;
            assert!(
                errors.is_empty(),
                "console errors or CSP violations on the consent page: {errors:#?}"
            );

            // The printed sign-in link signs in at once and shows the demo
            // request; the token leaves the address bar.
            client.goto(&admin).await.unwrap();
            let text = wait_for_text(&client, "alice@example.org").await;
            assert!(text.contains("Pending 1"), "{text}");
            let address = client.current_url().await.unwrap();
            assert!(address.fragment().is_none(), "{address}");
            screenshot(&client, "smoke-admin").await;
            let errors = console_errors(&client).await;
            assert!(
                errors.is_empty(),
                "console errors or CSP violations on the admin page: {errors:#?}"
            );

            client
                .goto(&format!(
                    "{}/consent/{}",
                    consent.rsplit_once("/consent/").unwrap().0,
                    "A".repeat(43)
                ))
                .await
                .unwrap();
            wait_for_text(&client, "This link is not known").await;
            screenshot(&client, "smoke-unknown-link").await;
        })
        .await;

    // The browser fetched the consent JSON and pages with the token in their
    // paths; the log names the requests but never the token or the address.
    let output = assent.output_text();
    assert!(
        output.contains("/consent/…"),
        "requests are logged, with the token cut out:\n{output}"
    );
    let printed_once = output.matches(token.as_str()).count();
    assert_eq!(
        printed_once, 1,
        "the token may appear only in the printed demo link:\n{output}"
    );
    assert!(!output.contains("alice@example.org/"), "{output}");
    let log_lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("INFO") || l.contains("WARN"))
        .collect();
    assert!(
        log_lines.iter().all(|l| !l.contains("alice@example.org")),
        "an address reached the log: {log_lines:#?}"
    );
}

#[tokio::test]
async fn only_the_embed_route_may_be_framed_and_only_by_the_configured_origins() {
    let config = r#"
[[identity_servers]]
name = "matrix.example.org"
display_name = "Example identity server"
operator = "Example Ltd"
upstream = "http://127.0.0.1:9"
frame_ancestors = ["https://embedder.example", "http://127.0.0.1:8765"]
"#;
    let assent = Assent::start(Options {
        demo: true,
        config: Some(config.to_owned()),
        ..Options::default()
    })
    .await;
    let consent = assent.stdout_line_containing("/consent/").unwrap();
    let token = consent.rsplit('/').next().unwrap().to_owned();
    let csp_of = |response: &reqwest::Response| {
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    let embed = reqwest::get(assent.url(&format!("/embed/consent/{token}")))
        .await
        .unwrap();
    assert!(
        csp_of(&embed).ends_with("frame-ancestors https://embedder.example http://127.0.0.1:8765"),
        "{}",
        csp_of(&embed)
    );
    for path in [
        format!("/consent/{token}"),
        "/admin".to_owned(),
        "/".to_owned(),
        "/health".to_owned(),
    ] {
        let response = reqwest::get(assent.url(&path)).await.unwrap();
        assert!(
            csp_of(&response).contains("frame-ancestors 'none'"),
            "{path}: {}",
            csp_of(&response)
        );
    }
    // An unknown token gets no embedders at all.
    let unknown = reqwest::get(assent.url(&format!("/embed/consent/{}", "B".repeat(43))))
        .await
        .unwrap();
    assert!(csp_of(&unknown).ends_with("frame-ancestors 'none'"));
}

#[tokio::test]
async fn guessing_tokens_is_rate_limited_per_client() {
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let admin_token = assent
        .stdout_line_containing("/admin#token=")
        .unwrap()
        .rsplit('=')
        .next()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();

    // Consent lookups: 60 a minute, then 429 with a retry hint, for known and unknown tokens alike.
    let guess = assent.url(&format!("/_assent/v1/consent/{}", "C".repeat(43)));
    for _ in 0..60 {
        assert_eq!(http.get(&guess).send().await.unwrap().status(), 404);
    }
    let limited = http.get(&guess).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_i64().unwrap() > 0);

    // Admin tokens: 10 refusals, then even the right token waits.
    let whoami = assent.url("/_assent/v1/admin/whoami");
    let right = http
        .get(&whoami)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    for i in 0..10 {
        let wrong = http
            .get(&whoami)
            .bearer_auth(format!("wrong-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
    }
    let limited = http
        .get(&whoami)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
}
