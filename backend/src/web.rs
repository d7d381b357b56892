//! Serving the web front end that Trunk builds into `dist/`: the app shell for
//! every page route with a strict Content-Security-Policy, and the hashed
//! assets with long caching and precompressed variants.

use crate::api::request_for_token;
use crate::app::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path as FsPath;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// The built front end, read once at start.
pub struct WebAssets {
    /// `dist/index.html`, or `None` when the front end has not been built.
    index: Option<String>,
    /// `'sha256-…'` sources for each inline script in it (Trunk's loader).
    script_hashes: Vec<String>,
    /// The admin console's shell, `dist/console/index.html`, and its hashes.
    console: Option<String>,
    console_hashes: Vec<String>,
    dir: ServeDir,
}

impl WebAssets {
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
            dir,
        }
    }

    /// `/admin…`: the console's shell, never framable.
    pub fn console_page(&self) -> Response {
        shell_page(self.console.as_deref(), &self.console_hashes, "'none'")
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

    fn page(&self, frame_ancestors: &str) -> Response {
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
            "The web front end has not been built. Run `cargo xtask build` (or `cargo xtask run`) in the \
             Assent checkout, or set `dist_dir` to the folder that holds the built index.html.\n",
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

/// `/`: the app shell, never framable.
pub async fn app_page(State(state): State<AppState>) -> Response {
    state.web.page("'none'")
}

/// `/admin…`: the console's shell, never framable. It holds no data: every
/// figure comes from the admin API, which wants credentials.
pub async fn console_page(State(state): State<AppState>) -> Response {
    state.web.console_page()
}

/// `/embed/consent/{token}`: framable only by the origins configured for the
/// identity server that holds this request's binding.
pub async fn embed_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let ancestors = match request_for_token(&state, &token).await {
        Ok(request) => state
            .config
            .identity_server(&request.identity_server)
            .map(|is| is.frame_ancestors.join(" "))
            .filter(|list| !list.is_empty()),
        Err(_) => None,
    };
    state.web.page(ancestors.as_deref().unwrap_or("'none'"))
}

/// Everything else under `/`: files from `dist/`.
pub async fn static_file(State(state): State<AppState>, request: Request) -> Response {
    let immutable = is_hashed_asset(request.uri().path());
    let mut response = match state.web.dir.clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
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

    #[test]
    fn the_policy_allows_no_inline_script_without_a_hash() {
        let assets = WebAssets {
            index: Some(String::new()),
            script_hashes: vec!["'sha256-abc'".to_owned()],
            console: None,
            console_hashes: Vec::new(),
            dir: ServeDir::new("."),
        };
        let csp = assets.csp("'none'");
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-abc';"));
        assert!(csp.ends_with("frame-ancestors 'none'"));
    }
}
