//! Talking to the real identity server behind Assent: forwarding requests
//! unchanged (owner-proven unbinds, unbound addresses, `proxy_all`) and the
//! binding check.

use crate::app::AppState;
use crate::config::{BindingCheck, IdentityServerConfig};
use crate::errors::ApiError;
use assent_shared::ThreePid;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// Largest lookup answer read.
const MAX_LOOKUP_BODY: usize = 64 * 1024;

/// Headers that describe one hop, not the message; never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// `upstream` + the path and query exactly as received.
pub fn upstream_url(is: &IdentityServerConfig, path_and_query: &str) -> String {
    format!(
        "{}{}",
        is.upstream.as_str().trim_end_matches('/'),
        path_and_query
    )
}

/// Sends a request to the upstream unchanged (method, path, query, headers
/// except hop-by-hop ones, body) and returns its answer as it is, streamed.
pub async fn forward(
    state: &AppState,
    is: &IdentityServerConfig,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: reqwest::Body,
) -> Response {
    let url = upstream_url(is, path_and_query);
    let mut outgoing = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            outgoing.append(name.clone(), value.clone());
        }
    }
    let sent = state
        .upstream
        .request(method, &url)
        .headers(outgoing)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(identity_server = %is.name, error = %without_url(&e), "the upstream identity server did not answer");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "the identity server behind this gateway did not answer",
            )
            .into_response();
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(response_headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !is_hop_by_hop(name) {
                response_headers.append(name.clone(), value.clone());
            }
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| {
            ApiError::internal("cannot relay the upstream's answer").into_response()
        })
}

/// reqwest errors name the URL, whose query may hold an address.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<upstream>");
    }
    text
}

/// What the upstream says about the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The address is bound to the mxid in the request.
    Bound,
    /// Not bound, or bound to someone else.
    NotBound,
    /// The check is off for this identity server.
    NotChecked,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Bound => "bound",
            Binding::NotBound => "not_bound",
            Binding::NotChecked => "not_checked",
        }
    }
}

/// The binding check: `GET /_matrix/identity/api/v1/lookup` at the upstream.
pub async fn check_binding(
    state: &AppState,
    is: &IdentityServerConfig,
    mxid: &str,
    threepid: &ThreePid,
) -> Result<Binding, ApiError> {
    if is.binding_check == BindingCheck::None {
        return Ok(Binding::NotChecked);
    }
    let unavailable = |why: String| {
        tracing::warn!(identity_server = %is.name, error = %why, "binding check failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            "cannot confirm the binding with the identity server behind this gateway; try again later",
        )
    };
    let url = upstream_url(is, "/_matrix/identity/api/v1/lookup");
    let mut answer = state
        .upstream
        .get(&url)
        .query(&[
            ("medium", threepid.medium.as_str()),
            ("address", threepid.address.as_str()),
        ])
        .send()
        .await
        .map_err(|e| unavailable(without_url(&e)))?;
    if answer.status() != reqwest::StatusCode::OK {
        return Err(unavailable(format!("lookup answered {}", answer.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| unavailable(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_LOOKUP_BODY {
            return Err(unavailable("lookup answer too large".to_owned()));
        }
        body.extend_from_slice(&chunk);
    }
    let found: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| unavailable(format!("lookup answer is not JSON: {e}")))?;
    Ok(match found.get("mxid").and_then(|m| m.as_str()) {
        Some(bound) if bound == mxid => Binding::Bound,
        _ => Binding::NotBound,
    })
}
