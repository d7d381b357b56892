//! The application state and the router: which path goes where, and the
//! headers every response carries.

use crate::config::Config;
use crate::intake::key_fetch::KeyFetcher;
use crate::intake::passthrough;
use crate::keys::SigningKey;
use crate::storage::Repo;
use crate::tokens::TokenMinter;
use crate::web::WebAssets;
use crate::{admin, api, errors::ApiError, intake, web};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use rand::RngCore;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The time, injected so that tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Randomness, injected so that tests can predict tokens and ids.
pub type SharedRng = Arc<Mutex<dyn RngCore + Send>>;

pub fn os_rng() -> SharedRng {
    Arc::new(Mutex::new(rand::rngs::OsRng))
}

/// What handlers and workers share, as [`AppState`]: behind one `Arc`, so
/// that the clones every request makes (each extractor and middleware takes
/// one) cost one reference count, not one per field; a dozen counters
/// bounced between the cores on every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub repo: Repo,
    pub clock: Arc<dyn Clock>,
    pub rng: SharedRng,
    pub key: Arc<SigningKey>,
    pub web: Arc<WebAssets>,
    pub limits: Arc<crate::ratelimit::Limits>,
    /// Fetches and caches homeservers' signing keys.
    pub server_keys: Arc<KeyFetcher>,
    /// Checks the signatures of concurrent unbinds together.
    pub signature_checks: Arc<crate::intake::signature_batch::SignatureChecks>,
    /// Talks to the configured upstream identity servers (trusted addresses).
    pub upstream: reqwest::Client,
    pub tokens: Arc<TokenMinter>,
    /// Wakes the email worker when a new message is queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Wakes the relay worker when a decision is recorded.
    pub relay_wake: Arc<tokio::sync::Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Longest wait for an upstream identity server's answer.
pub const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl AppState {
    pub fn new(
        config: Config,
        repo: Repo,
        clock: Arc<dyn Clock>,
        rng: SharedRng,
        key: SigningKey,
        web: WebAssets,
    ) -> Result<Self, crate::intake::key_fetch::SetupError> {
        let server_keys = KeyFetcher::new(&config.keys)?;
        Self::with_key_fetcher(config, repo, clock, rng, key, web, server_keys)
    }

    pub fn with_key_fetcher(
        config: Config,
        repo: Repo,
        clock: Arc<dyn Clock>,
        rng: SharedRng,
        key: SigningKey,
        web: WebAssets,
        server_keys: KeyFetcher,
    ) -> Result<Self, crate::intake::key_fetch::SetupError> {
        let upstream = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(UPSTREAM_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        let tokens = TokenMinter::new(key.derive_secret("consent tokens"));
        Ok(AppState::from(Shared {
            limits: Arc::new(crate::ratelimit::Limits::new(&config.limits)),
            config: Arc::new(config),
            repo,
            clock,
            rng,
            key: Arc::new(key),
            web: Arc::new(web),
            server_keys: Arc::new(server_keys),
            signature_checks: Arc::default(),
            upstream,
            tokens: Arc::new(tokens),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            relay_wake: Arc::new(tokio::sync::Notify::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// `n` random bytes from the injected generator.
    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        match self.rng.lock() {
            Ok(mut rng) => rng.fill_bytes(&mut bytes),
            // A panic elsewhere while holding the lock leaves the generator
            // usable: its state is just bytes.
            Err(poisoned) => poisoned.into_inner().fill_bytes(&mut bytes),
        }
        bytes
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/_assent/v1/keys", get(api::keys))
        .route("/_assent/v1/consent/{token}", get(api::consent_view))
        .route(
            "/_assent/v1/consent/{token}/decision",
            post(crate::consent::decide).layer(axum::extract::DefaultBodyLimit::max(4096)),
        )
        .route(
            "/_assent/v1/consent/{token}/receipt",
            get(crate::consent::receipt),
        )
        .route("/_assent/v1/requests", post(intake::integrated::create))
        .route(
            "/_assent/v1/requests/{id}",
            get(intake::integrated::get_request),
        )
        .route(passthrough::UNBIND_PATHS[0], post(intake::gateway::unbind))
        .route(passthrough::UNBIND_PATHS[1], post(intake::gateway::unbind))
        .route("/health", get(api::health));
    // With a listener of its own, /metrics is not on the public one.
    let api = match state.config.metrics_listen {
        None => api.route("/metrics", get(crate::metrics::metrics)),
        Some(_) => api,
    };
    let (admin_api, _) = admin::openapi::router();
    let admin_api = admin_api.layer(axum::extract::DefaultBodyLimit::max(4096));

    let pages = Router::new()
        .route(
            "/consent/{token}",
            get(crate::consent::nojs::page)
                .post(crate::consent::nojs::submit)
                .layer(axum::extract::DefaultBodyLimit::max(4096)),
        )
        .route("/embed/consent/{token}", get(web::embed_page))
        .route("/", get(web::app_page))
        .route("/admin", get(web::console_page))
        .route("/admin/{*rest}", get(web::console_page));

    Router::new()
        .merge(api)
        .merge(admin_api)
        .merge(pages)
        .route("/_assent/{*rest}", axum::routing::any(not_found))
        .route("/_matrix/{*rest}", axum::routing::any(not_found))
        .fallback(web::static_file)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
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
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("the server hit a bug").into_response()))
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
        Ok(Err(_)) => ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "the body is too large",
        )
        .into_response(),
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "M_UNKNOWN",
            "the body did not arrive in time",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("M_UNRECOGNIZED", "no such endpoint")
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
