//! The web front end's files: the app shell for every page route with a
//! strict Content-Security-Policy, and the hashed assets with long caching.
//! The routes that serve them are in `pages` (and `consent` for the
//! consent pages).
//!
//! The front end is embedded in the binary when it is built (see
//! `build.rs`): every file compressed once with brotli and gzip, chosen by
//! `Accept-Encoding`, with an `ETag`. `dist_dir` replaces it with a folder
//! read at start, for people who change the front end.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path as FsPath;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// One file of the front end as `build.rs` embedded it.
pub struct EmbeddedFile {
    /// `/index.html`, `/console/app-….wasm`, …
    pub route: &'static str,
    pub raw: &'static [u8],
    /// The compressed forms, when compressing made the file smaller.
    pub br: Option<&'static [u8]>,
    pub gzip: Option<&'static [u8]>,
    /// A strong validator of the raw bytes (`"…"`, quotes included).
    pub etag: &'static str,
}

/// The front end built into this binary (empty when it was built without
/// one).
pub static EMBEDDED: &[EmbeddedFile] = include!(concat!(env!("OUT_DIR"), "/embedded_front_end.rs"));

/// Where the files come from.
enum Files {
    Embedded(&'static [EmbeddedFile]),
    Dir(ServeDir),
}

/// The front end, read once at start.
pub struct WebAssets {
    /// `index.html`, or `None` when there is no front end.
    index: Option<String>,
    /// `'sha256-…'` sources for each inline script in it (Trunk's loader).
    script_hashes: Vec<String>,
    /// The admin console's shell, `console/index.html`, and its hashes.
    console: Option<String>,
    console_hashes: Vec<String>,
    files: Files,
}

impl WebAssets {
    /// The front end embedded in the binary.
    pub fn embedded() -> Self {
        Self::from_files(EMBEDDED)
    }

    /// `files` as the front end (the embedded ones, or a test's own).
    pub fn from_files(files: &'static [EmbeddedFile]) -> Self {
        let read = |route: &str| {
            let html = files
                .iter()
                .find(|file| file.route == route)
                .and_then(|file| std::str::from_utf8(file.raw).ok())
                .map(str::to_owned);
            let hashes = html
                .as_deref()
                .map(inline_script_hashes)
                .unwrap_or_default();
            (html, hashes)
        };
        let (index, script_hashes) = read("/index.html");
        let (console, console_hashes) = read("/console/index.html");
        WebAssets {
            index,
            script_hashes,
            console,
            console_hashes,
            files: Files::Embedded(files),
        }
    }

    /// The front end in `dist_dir`, in place of the embedded one.
    pub fn load(dist_dir: &FsPath) -> Self {
        let read = |path: &FsPath| {
            let html = std::fs::read_to_string(path).ok();
            let hashes = html
                .as_deref()
                .map(inline_script_hashes)
                .unwrap_or_default();
            (html, hashes)
        };
        let (index, script_hashes) = read(&dist_dir.join("index.html"));
        let (console, console_hashes) = read(&dist_dir.join("console").join("index.html"));
        let dir = ServeDir::new(dist_dir)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(false);
        WebAssets {
            index,
            script_hashes,
            console,
            console_hashes,
            files: Files::Dir(dir),
        }
    }

    /// `/admin…`: the console's shell, never framable.
    pub fn console_page(&self) -> Response {
        shell_page(self.console.as_deref(), &self.console_hashes, "'none'")
    }

    /// A file of the front end, with its caching: hashed assets for a
    /// year, the rest revalidated.
    pub async fn file(&self, request: Request) -> Response {
        let immutable = is_hashed_asset(request.uri().path());
        let mut response = match &self.files {
            Files::Embedded(files) => embedded_file(files, &request),
            Files::Dir(dir) => match dir.clone().oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
        };
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            let cache = if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        }
        response
    }

    pub fn is_built(&self) -> bool {
        self.index.is_some()
    }

    /// The policy for an app page; `frame_ancestors` is `'none'` except on
    /// the embed route of an identity server that lists its embedders.
    pub fn csp(&self, frame_ancestors: &str) -> String {
        csp(&self.script_hashes, frame_ancestors)
    }

    /// The app shell with a server-rendered page `html` as the body's first
    /// content, in place of the shell's `<noscript>` notice: what a browser
    /// shows before the app starts, and for good when scripts or WebAssembly
    /// are off. The app removes it when it takes over.
    pub fn page_with_server_html(
        &self,
        frame_ancestors: &str,
        root: &RootAttributes,
        status: StatusCode,
        html: &str,
    ) -> Response {
        let mut response = self.page(frame_ancestors);
        let Some(index) = &self.index else {
            return response;
        };
        let replaced = with_server_html(index, root, html);
        *response.body_mut() = Body::from(replaced);
        *response.status_mut() = status;
        // It names the owner now: no cache may keep it.
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, private"),
        );
        response
    }

    /// The app shell, framable by `frame_ancestors` (`'none'` for no one).
    pub fn page(&self, frame_ancestors: &str) -> Response {
        shell_page(self.index.as_deref(), &self.script_hashes, frame_ancestors)
    }
}

fn csp(script_hashes: &[String], frame_ancestors: &str) -> String {
    let mut scripts = String::from("'self' 'wasm-unsafe-eval'");
    for hash in script_hashes {
        scripts.push(' ');
        scripts.push_str(hash);
    }
    format!(
        "default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; font-src 'self'; \
         connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}"
    )
}

/// A shell as it is served: no caching without revalidation, a strict CSP.
fn shell_page(html: Option<&str>, script_hashes: &[String], frame_ancestors: &str) -> Response {
    let Some(html) = html else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This Assent was built without its web front end. Build it with `cargo xtask build` (or \
             `cargo xtask run`), or set `dist_dir` to a folder that holds a built index.html.\n",
        )
            .into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html.to_owned(),
    )
        .into_response();
    if let Ok(csp) = HeaderValue::from_str(&csp(script_hashes, frame_ancestors)) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// What the server-rendered page sets on `<html>`.
pub struct RootAttributes<'a> {
    /// The page's language (`en`, `de`).
    pub lang: &'a str,
    /// `light` or `dark` when the page's address fixes it.
    pub theme: Option<&'a str>,
}

/// `index` (the app shell as Trunk built it, minified or not) with its
/// `<noscript>` notice replaced by `html` at the start of the body, and its
/// `<html>` tag written anew with `root`'s attributes.
fn with_server_html(index: &str, root: &RootAttributes, html: &str) -> String {
    let mut page = match (index.find("<noscript>"), index.find("</noscript>")) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{}", &index[..start], &index[end + "</noscript>".len()..])
        }
        _ => index.to_owned(),
    };
    let theme = match root.theme {
        Some(theme @ ("light" | "dark")) => format!(" data-theme=\"{theme}\""),
        _ => String::new(),
    };
    let lang = if root
        .lang
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'-')
    {
        root.lang
    } else {
        "en"
    };
    let tag = format!("<html lang=\"{lang}\"{theme}>");
    match page
        .find("<html")
        .and_then(|start| Some((start, start + page[start..].find('>')?)))
    {
        Some((start, end)) => page.replace_range(start..=end, &tag),
        None => page.insert_str(0, &tag),
    }
    // Right after `<body>` (with or without attributes), else before
    // `</body>`, else at the end: the page is never dropped.
    let at = page
        .find("<body")
        .and_then(|start| Some(start + page[start..].find('>')? + 1))
        .or_else(|| page.find("</body>"))
        .unwrap_or(page.len());
    page.insert_str(at, html);
    page
}

/// Finds each `<script>` without `src` and hashes its text for the CSP.
fn inline_script_hashes(html: &str) -> Vec<String> {
    let mut hashes = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let open_tag = &after[..open_end];
        let body_and_rest = &after[open_end + 1..];
        let Some(close) = body_and_rest.find("</script>") else {
            break;
        };
        if !open_tag.contains(" src=") {
            let digest = Sha256::digest(&body_and_rest.as_bytes()[..close]);
            hashes.push(format!("'sha256-{}'", STANDARD.encode(digest)));
        }
        rest = &body_and_rest[close..];
    }
    hashes
}

/// An embedded file in the encoding the client prefers: brotli, else gzip,
/// else as built; 304 when the client's copy is current.
fn embedded_file(files: &[EmbeddedFile], request: &Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = request.uri().path();
    // `/index.html` is only the shell behind `/`, served with its policy.
    let Some(file) = files
        .iter()
        .find(|file| file.route == path && !file.route.ends_with("/index.html"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let accepted = request.headers();
    let (bytes, encoding) = match (file.br, file.gzip) {
        (Some(br), _) if accepts(accepted, "br") => (br, Some("br")),
        (_, Some(gzip)) if accepts(accepted, "gzip") => (gzip, Some("gzip")),
        _ => (file.raw, None),
    };
    // One tag per representation: a cache must not answer a gzip client
    // with the brotli bytes it validated.
    let etag = match encoding {
        Some(encoding) => format!("{}-{encoding}\"", file.etag.trim_end_matches('"')),
        None => file.etag.to_owned(),
    };
    let mut headers = HeaderMap::new();
    let mime = mime_guess::from_path(file.route).first_or_octet_stream();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    if matches_etag(accepted, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, Body::from(bytes)).into_response()
}

/// Whether `Accept-Encoding` allows `coding` (named, or by `*`, and not
/// with `q=0`).
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    let mut named = None;
    let mut star = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let allowed = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .all(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
            if name.eq_ignore_ascii_case(coding) {
                named = Some(allowed);
            } else if name == "*" {
                star = Some(allowed);
            }
        }
    }
    named.or(star).unwrap_or(false)
}

/// Whether `If-None-Match` names `etag` (or `*`); weak comparison, as
/// RFC 9110 asks for this header.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// Trunk names built assets `name-<16 hex digits>.ext`; those never change.
fn is_hashed_asset(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    let stem = file.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    match stem.rsplit_once('-') {
        Some((_, hash)) => hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_hashed_and_external_ones_are_not() {
        let html = r#"<head><script type="module">import init from '/a.js';init();</script>
            <script src="/b.js"></script><script>x()</script></head>"#;
        let hashes = inline_script_hashes(html);
        assert_eq!(hashes.len(), 2);
        let expected = STANDARD.encode(Sha256::digest(b"import init from '/a.js';init();"));
        assert_eq!(hashes[0], format!("'sha256-{expected}'"));
    }

    #[test]
    fn the_server_page_goes_into_minified_and_plain_shells_alike() {
        let root = RootAttributes {
            lang: "de",
            theme: Some("dark"),
        };
        for shell in [
            "<!doctype html><html lang=en><meta charset=utf-8><title>A</title><body>\n<noscript>needs JS</noscript>",
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head></head>\n<body>\n<noscript><p>needs JS</p></noscript>\n</body>\n</html>",
        ] {
            let page = with_server_html(shell, &root, "<div id=\"assent-nojs\">page</div>");
            assert!(page.contains("<html lang=\"de\" data-theme=\"dark\">"), "{page}");
            assert!(!page.contains("lang=en") && !page.contains("needs JS"), "{page}");
            let body = page.find("<body>").unwrap();
            assert_eq!(page.find("<div id=\"assent-nojs\">"), Some(body + "<body>".len()), "{page}");
        }
        // No body tag at all (a minifier may drop it): the page still goes in.
        let page = with_server_html("<html><title>A</title>", &root, "<p>page</p>");
        assert!(page.ends_with("<p>page</p>"), "{page}");
        // Only a known theme and a tag-shaped language are written.
        let odd = RootAttributes {
            lang: "\"><script>",
            theme: Some("\"><script>"),
        };
        let page = with_server_html("<html lang=en><body>", &odd, "");
        assert!(page.starts_with("<html lang=\"en\"><body>"), "{page}");
    }

    #[test]
    fn only_trunk_hashed_names_are_cached_forever() {
        assert!(is_hashed_asset("/assent-frontend-8d6a0f1e2b3c4d5e.js"));
        assert!(is_hashed_asset("/assent-frontend-8d6a0f1e2b3c4d5e_bg.wasm"));
        assert!(is_hashed_asset("/main-0123456789abcdef.css"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/favicon.ico"));
        assert!(!is_hashed_asset("/some-name.js"));
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn codings_are_taken_only_when_accepted_with_a_weight_above_zero() {
        let accept = |value| headers(&[(header::ACCEPT_ENCODING, value)]);
        assert!(accepts(&accept("gzip, deflate, br"), "br"));
        assert!(accepts(&accept("GZIP;q=0.5"), "gzip"));
        assert!(accepts(&accept("*"), "br"));
        assert!(!accepts(&accept("*, br;q=0"), "br"));
        assert!(!accepts(&accept("br;q=0.000"), "br"));
        assert!(!accepts(&accept("br;q=nonsense"), "br"));
        assert!(!accepts(&accept("identity"), "gzip"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let given = |value| headers(&[(header::IF_NONE_MATCH, value)]);
        assert!(matches_etag(&given("\"a\""), "\"a\""));
        assert!(matches_etag(&given("W/\"a\""), "\"a\""));
        assert!(matches_etag(&given("\"b\", \"a\""), "\"a\""));
        assert!(matches_etag(&given("*"), "\"a\""));
        assert!(!matches_etag(&given("\"a-br\""), "\"a\""));
        assert!(!matches_etag(&HeaderMap::new(), "\"a\""));
    }

    static FILES: &[EmbeddedFile] = &[
        EmbeddedFile {
            route: "/index.html",
            raw: b"<html><script>go()</script><body><noscript>x</noscript></body></html>",
            br: None,
            gzip: None,
            etag: "\"i\"",
        },
        EmbeddedFile {
            route: "/app-0123456789abcdef.js",
            raw: b"raw bytes",
            br: Some(b"br"),
            gzip: None,
            etag: "\"j\"",
        },
    ];

    #[test]
    fn an_embedded_file_falls_back_to_what_was_compressed_and_the_shell_needs_its_route() {
        let web = WebAssets::from_files(FILES);
        assert!(web.is_built());
        assert_eq!(web.script_hashes.len(), 1);
        let get = |path: &str, accept: &'static str| {
            let request = Request::builder()
                .uri(path)
                .header(header::ACCEPT_ENCODING, accept)
                .body(Body::empty())
                .unwrap();
            embedded_file(FILES, &request)
        };
        // No gzip form: a gzip-only client gets the raw bytes, tagged as such.
        let raw = get("/app-0123456789abcdef.js", "gzip");
        assert_eq!(raw.status(), StatusCode::OK);
        assert!(raw.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(raw.headers()[header::ETAG], "\"j\"");
        assert_eq!(raw.headers()[header::CONTENT_TYPE], "text/javascript");
        let br = get("/app-0123456789abcdef.js", "br");
        assert_eq!(br.headers()[header::ETAG], "\"j-br\"");
        // The shell is served only behind `/`, with its policy.
        assert_eq!(get("/index.html", "br").status(), StatusCode::NOT_FOUND);
        let post = Request::builder()
            .method(Method::POST)
            .uri("/app-0123456789abcdef.js")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            embedded_file(FILES, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_policy_allows_no_inline_script_without_a_hash() {
        let assets = WebAssets {
            index: Some(String::new()),
            script_hashes: vec!["'sha256-abc'".to_owned()],
            console: None,
            console_hashes: Vec::new(),
            files: Files::Embedded(&[]),
        };
        let csp = assets.csp("'none'");
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-abc';"));
        assert!(csp.ends_with("frame-ancestors 'none'"));
    }
}
