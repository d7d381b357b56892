//! The binary carries its front end: copied alone into an empty folder and
//! started from another, it serves the consent page, the WebAssembly app
//! takes over in Chromium, and the assets come compressed by
//! `Accept-Encoding` with an `ETag` that answers 304.

use assent_e2e::browser::{console_errors, wait_for_app, wait_for_text, Browser};
use assent_e2e::{assent_binary, Assent, Options};
use reqwest::header;

/// `/name-<hash>_bg.wasm` and the other files the shell names.
fn assets_named_in(shell: &str) -> Vec<String> {
    let mut found = Vec::new();
    for piece in shell.split(['\'', '"', ' ', '>']) {
        let piece = piece.trim_start_matches("href=");
        if piece.starts_with('/')
            && [".wasm", ".js", ".css", ".svg"]
                .iter()
                .any(|ext| piece.ends_with(ext))
            && !found.iter().any(|f| f == piece)
        {
            found.push(piece.to_owned());
        }
    }
    found
}

#[tokio::test]
async fn a_lone_copy_of_the_binary_serves_the_app_compressed_and_tagged() {
    // This file holds one test: the variable is set before any server starts.
    let alone = tempfile::tempdir().unwrap();
    let binary = alone.path().join("assent");
    std::fs::copy(assent_binary(), &binary).unwrap();
    std::env::set_var("E2E_ASSENT_BIN", &binary);
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let link = assent.stdout_line_containing("/consent/").unwrap();
    let link = link[link.find("http").unwrap()..].trim().to_owned();
    // Only the binary is in its folder; the server's own folder has no dist/.
    assert_eq!(std::fs::read_dir(alone.path()).unwrap().count(), 1);
    let workdir = assent.data_dir.parent().unwrap();
    assert!(!workdir.join("dist").exists());

    let http = reqwest::Client::new();
    let shell = http
        .get(assent.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let assets = assets_named_in(&shell);
    let wasm = assets
        .iter()
        .find(|a| a.ends_with("_bg.wasm"))
        .unwrap_or_else(|| panic!("no wasm named in the shell:\n{shell}"));
    assert!(assets.len() >= 4, "{assets:?}");

    let get = |path: &str, accept: &str, etag: Option<&str>| {
        let mut request = http
            .get(assent.url(path))
            .header(header::ACCEPT_ENCODING, accept);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        request.send()
    };
    let mut sizes = Vec::new();
    let mut tags = Vec::new();
    for (accept, encoding) in [
        ("gzip, deflate, br", Some("br")),
        ("gzip", Some("gzip")),
        ("br;q=0, gzip;q=0.5", Some("gzip")),
        ("identity", None),
        ("br;q=0, gzip;q=0", None),
    ] {
        let response = get(wasm, accept, None).await.unwrap();
        assert_eq!(response.status(), 200, "{accept}");
        let headers = response.headers().clone();
        assert_eq!(
            headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            encoding,
            "{accept}"
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/wasm");
        assert_eq!(headers[header::VARY], "accept-encoding");
        assert!(headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let body = response.bytes().await.unwrap();
        sizes.push(body.len());
        // The client's copy is current: 304, no body.
        let again = get(wasm, accept, Some(&etag)).await.unwrap();
        assert_eq!(again.status(), 304, "{accept}");
        assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        tags.push(etag);
    }
    let (br, gzip, raw) = (sizes[0], sizes[1], sizes[3]);
    println!("wasm: {raw} bytes raw, {gzip} gzip, {br} brotli");
    assert!(br < gzip && gzip < raw / 2, "{sizes:?}");
    assert_eq!(raw, sizes[4]);
    // One tag per representation; the same bytes, the same tag.
    assert!(tags[0] != tags[1] && tags[1] != tags[3], "{tags:?}");
    assert_eq!((&tags[1], &tags[3]), (&tags[2], &tags[4]));
    // Another representation's tag does not validate this one.
    let stale = get(wasm, "gzip", Some(&tags[0])).await.unwrap();
    assert_eq!(stale.status(), 200);
    // Every file the shell names is there; an unknown one is not.
    for asset in &assets {
        let response = get(asset, "br", None).await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
    let missing = get("/no-such-file-0123456789abcdef.js", "br", None)
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let browser = Browser::start().await;
    browser
        .with_session(move |client| async move {
            client.goto(&link).await.unwrap();
            wait_for_app(&client).await;
            let page = wait_for_text(&client, "Approve…").await;
            assert!(page.contains("alice@example.org"), "{page}");
            let errors = console_errors(&client).await;
            assert!(errors.is_empty(), "console errors: {errors:?}");
        })
        .await;
}
