//! `proxy_all = true`: Assent fronts the whole identity server. Every request
//! addressed to that identity server's name, other than the two unbind
//! routes, goes to its `upstream` unchanged: method, path, query, headers and
//! a streamed body, and the answer comes back the same way.
//!
//! Whatever the host, a path that spells an unbind any other way than the
//! two routes as written (percent-encoded, with dot segments, doubled or
//! trailing slashes, …) is refused here, so that nothing an identity server
//! might take for an unbind goes past the intake.

use super::upstream;
use crate::config::IdentityServerConfig;
use crate::errors::IntakeError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub const UNBIND_PATHS: [&str; 2] = [
    "/_matrix/identity/v2/3pid/unbind",
    "/_matrix/identity/api/v1/3pid/unbind",
];

/// The `proxy_all` identity server this request is addressed to, if any.
fn proxied<'a>(state: &'a AppState, request: &Request) -> Option<&'a IdentityServerConfig> {
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let config = &state.config;
    let is = config
        .identity_servers
        .iter()
        .filter(|is| is.proxy_all)
        .find(|is| {
            is.name.eq_ignore_ascii_case(host)
                || host
                    .rsplit_once(':')
                    .is_some_and(|(name, _)| is.name.eq_ignore_ascii_case(name))
        })?;
    let path = request.uri().path();
    // The unbind routes are never passed through: written as they are they
    // reach the intake; any other spelling is refused by `layer`.
    if UNBIND_PATHS.contains(&path) {
        return None;
    }
    // Sharing a host name with Assent's own pages: only the Matrix API is the
    // identity server's.
    let ours = config
        .public_url
        .host_str()
        .is_some_and(|own| is.name.eq_ignore_ascii_case(own) || host.eq_ignore_ascii_case(own));
    if ours && !path.starts_with("/_matrix/") {
        return None;
    }
    Some(is)
}

/// Whether the upstream identity server could read `path` as one of its
/// unbind routes. sydent's Twisted drops the path's first byte, splits the
/// rest on `/` and percent-decodes each segment after splitting
/// (`/_matrix/identity/v2/%33pid/unbind` is its unbind); other servers also
/// merge `//`, ignore a trailing `/`, resolve dot segments, decode `%2F`
/// and `\`, strip `;parameters` or ignore letter case. Every one of those
/// spellings counts, so that none is passed through.
pub fn looks_like_unbind(path: &str) -> bool {
    // Every request passes here: most are plainly something else, told
    // without decoding or allocating.
    let plain = !path.bytes().any(|b| matches!(b, b'%' | b';' | b'\\'));
    if plain
        && !path
            .as_bytes()
            .windows(b"unbind".len())
            .any(|w| w.eq_ignore_ascii_case(b"unbind"))
    {
        return false;
    }
    let mut decoded = path.to_owned();
    // Some decode more than once: `%2533pid` is `%33pid` and then `3pid`.
    for _ in 0..3 {
        let once = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if once == decoded {
            break;
        }
        decoded = once;
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment.to_ascii_lowercase()),
        }
    }
    UNBIND_PATHS.iter().any(|unbind| {
        unbind
            .split('/')
            .filter(|s| !s.is_empty())
            .eq(segments.iter().map(String::as_str))
    })
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !UNBIND_PATHS.contains(&path) && looks_like_unbind(path) {
        return IntakeError::UnbindMisspelt.into_response();
    }
    let Some(is) = proxied(&state, &request) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let client = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    upstream::forward(
        &state,
        is,
        client,
        parts.method,
        &path_and_query,
        &parts.headers,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::looks_like_unbind;

    #[test]
    fn every_spelling_an_identity_server_might_route_to_the_unbind_is_caught() {
        for path in [
            "/_matrix/identity/v2/3pid/unbind",
            "/_matrix/identity/api/v1/3pid/unbind",
            // What sydent (Twisted) itself routes to its unbind.
            "/_matrix/identity/v2/%33pid/unbind",
            "/_matrix/identity/v2/3pid/%75nbind",
            "/%5Fmatrix/identity/v2/3pid/unbind",
            "/_matrix/identity/v%32/3pid/unbind",
            "/_matrix/identity/api/v1/3pid/unbin%64",
            // What other servers may normalise into it.
            "/_matrix/identity/v2/3pid/unbind/",
            "//_matrix/identity/v2/3pid/unbind",
            "/_matrix//identity/v2/3pid/unbind",
            "/_matrix/identity/v2/3pid%2Funbind",
            "/_matrix/identity/v2/3pid%2funbind",
            "/_matrix/identity/v2/./3pid/unbind",
            "/_matrix/identity/v2/x/../3pid/unbind",
            "/_matrix/identity/v2/3pid/unbind;jsessionid=1",
            "/_matrix/identity/v2/3PID/Unbind",
            "/_matrix\\identity\\v2\\3pid\\unbind",
            "/_matrix/identity/v2/%2533pid/unbind",
        ] {
            assert!(looks_like_unbind(path), "{path}");
        }
        for path in [
            "/_matrix/identity/v2/3pid/bind",
            "/_matrix/identity/v2/3pid/unbind/x",
            "/_matrix/identity/v2/3pid/unbind/..",
            "/_matrix/identity/v2/3pid",
            "/_matrix/identity/v3/3pid/unbind",
            "/_matrix/identity/v2/3pid/unbindx",
            "/",
            "",
        ] {
            assert!(!looks_like_unbind(path), "{path}");
        }
    }
}
