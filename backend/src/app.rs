//! The router, assembled from the routers each area exports, and the
//! layers every response passes through: the headers it carries, the
//! access log, the body deadline.

use crate::errors::{ApiError, HttpError};
use crate::intake::passthrough;
use crate::state::AppState;
use crate::{admin, api, consent, intake, pages};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    let (admin_api, _) = admin::openapi::router();
    let admin_api = admin_api.layer(axum::extract::DefaultBodyLimit::max(4096));
    Router::new()
        .merge(api::router(&state.config))
        .merge(intake::router())
        .merge(consent::router())
        .merge(admin_api)
        .merge(pages::router())
        .route("/_assent/{*rest}", axum::routing::any(not_found))
        .route("/_matrix/{*rest}", axum::routing::any(not_found))
        .fallback(pages::static_file)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ))
        // API answers carry addresses and Matrix IDs: never stored by caches.
        // Pages and assets set their own caching.
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        // Outside the header layers: what is proxied stays as the upstream sent it.
        .layer(axum::middleware::from_fn_with_state(state.clone(), passthrough::layer))
        // Before anything reads the client's address.
        .layer(axum::middleware::from_fn_with_state(state, crate::client::layer))
        .layer(CatchPanicLayer::custom(|_| ApiError::from(HttpError::Bug).into_response()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::info_span!("http", method = %request.method(), path = %redact_path(request.uri().path()))
                })
                .on_response(AccessLog),
        )
}

/// The access log line of a request. Refusals (4xx) are worth an operator's
/// eye, at `info`; a line for every success is not (each unbind held logs a
/// line of its own), and it cost a few per cent of intake's throughput, so
/// those are at `debug` under their own target
/// (`RUST_LOG=info,sqlx=warn,assent::access=debug` shows them). Server errors are
/// logged by the trace layer's `on_failure`, at `error`.
#[derive(Clone, Copy)]
struct AccessLog;

impl<B> tower_http::trace::OnResponse<B> for AccessLog {
    fn on_response(
        self,
        response: &axum::http::Response<B>,
        latency: std::time::Duration,
        _: &tracing::Span,
    ) {
        let status = response.status().as_u16();
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if response.status().is_client_error() {
            tracing::info!(status, latency_us, "finished processing request");
        } else {
            tracing::debug!(target: "assent::access", status, latency_us, "finished processing request");
        }
    }
}

/// The path with consent tokens cut out, for logs. Query strings are never logged.
pub fn redact_path(path: &str) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for segment in path.split('/') {
        if hide_next && !segment.is_empty() {
            out.push("…");
            hide_next = false;
            continue;
        }
        hide_next = segment == "consent";
        out.push(segment);
    }
    out.join("/")
}

/// Largest body Assent's own routes read (each has its own limit too, the
/// largest 16 KiB), so that `http.max_connections` slow bodies cannot hold
/// much memory; proxied requests stream and are not held to it.
const MAX_OWN_BODY: usize = 64 * 1024;

/// A request body for Assent itself must arrive whole within
/// `http.body_read_timeout` (408 otherwise), whatever pace it trickles in
/// at: read here at once, so no handler waits on a slow client.
async fn body_deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        state.config.http.body_read_timeout,
        axum::body::to_bytes(body, MAX_OWN_BODY),
    )
    .await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::from(HttpError::TooLarge).into_response(),
        Err(_) => ApiError::from(HttpError::BodyTimeout).into_response(),
    }
}

async fn not_found() -> ApiError {
    HttpError::NoSuchEndpoint.into()
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn tokens_never_reach_the_logs() {
        assert_eq!(redact_path("/consent/abcDEF123"), "/consent/…");
        assert_eq!(redact_path("/embed/consent/abcDEF123"), "/embed/consent/…");
        assert_eq!(
            redact_path("/_assent/v1/consent/abc/decision"),
            "/_assent/v1/consent/…/decision"
        );
        assert_eq!(redact_path("/_assent/v1/keys"), "/_assent/v1/keys");
        assert_eq!(redact_path("/consent/"), "/consent/");
    }
}
