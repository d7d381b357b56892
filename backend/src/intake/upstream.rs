//! Talking to the real identity server behind Assent: forwarding requests
//! unchanged (owner-proven unbinds, unbound addresses, `proxy_all`) and the
//! binding check.

use crate::config::{BindingCheck, IdentityServerConfig};
use crate::errors::{ApiError, IntakeError};
use crate::state::AppState;
use assent_shared::ThreePid;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method};
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
    )
}

/// Headers a `Connection` header names, which describe this hop too.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// What is forwarded of `headers`: everything but hop-by-hop headers.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named = connection_tokens(headers);
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !is_hop_by_hop(name) && !named.iter().any(|t| t == name.as_str()) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Sends a request to the upstream unchanged (method, path, query, `Host`
/// and the other end-to-end headers, body) and returns its answer as it is,
/// streamed. `X-Forwarded-For` is replaced by the connecting address, so the
/// upstream's own per-client limits see clients, and none can claim to be
/// another.
pub async fn forward(
    state: &AppState,
    is: &IdentityServerConfig,
    client: Option<std::net::IpAddr>,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: reqwest::Body,
) -> Response {
    let url = is.upstream_url(path_and_query);
    let mut outgoing = end_to_end(headers);
    outgoing.remove("x-forwarded-for");
    outgoing.remove("forwarded");
    if let Some(value) =
        client.and_then(|ip| axum::http::HeaderValue::from_str(&ip.to_string()).ok())
    {
        outgoing.insert("x-forwarded-for", value);
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
            return IntakeError::UpstreamDown.into_response();
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(response_headers) = response.headers_mut() {
        *response_headers = end_to_end(answer.headers());
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
    /// The address is bound to the mxid in the request, since `at` (ms)
    /// when the upstream says (sydent's association `ts`).
    Bound { at: Option<i64> },
    /// Not bound, or bound to someone else.
    NotBound,
    /// The check is off for this identity server.
    NotChecked,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Bound { .. } => "bound",
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
        ApiError::from(IntakeError::BindingUnknown)
    };
    let url = is.upstream_url("/_matrix/identity/api/v1/lookup");
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
        Some(bound) if bound == mxid => Binding::Bound {
            at: found.get("ts").and_then(serde_json::Value::as_i64),
        },
        _ => Binding::NotBound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped_and_host_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "is.example.org".parse().unwrap());
        headers.insert("connection", "keep-alive, X-Secret-Hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("authorization", "X-Matrix origin=a".parse().unwrap());
        let kept = end_to_end(&headers);
        assert_eq!(kept.get("host").unwrap(), "is.example.org");
        assert_eq!(kept.get("authorization").unwrap(), "X-Matrix origin=a");
        for gone in ["connection", "x-secret-hop", "transfer-encoding"] {
            assert!(kept.get(gone).is_none(), "{gone}");
        }
    }
}
