//! `proxy_all = true`: Assent fronts the whole identity server. Every request
//! addressed to that identity server's name, other than the two unbind
//! routes, goes to its `upstream` unchanged: method, path, query, headers and
//! a streamed body, and the answer comes back the same way.

use super::upstream;
use crate::app::AppState;
use crate::config::IdentityServerConfig;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

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

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
