//! Assent's own small endpoints: its keys, health and metrics.

use crate::config::Config;
use crate::errors::ApiError;
use crate::state::AppState;
use assent_shared::Health;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The routes; `/metrics` only when it has no listener of its own.
pub fn router(config: &Config) -> Router<AppState> {
    let router = Router::new()
        .route("/_assent/v1/keys", get(keys))
        .route("/health", get(health));
    match config.metrics_listen {
        None => router.route("/metrics", get(metrics)),
        Some(_) => router,
    }
}

/// `GET /_assent/v1/keys`: Assent's verify key as a self-signed Matrix
/// server-keys document.
#[tracing::instrument(skip_all)]
pub async fn keys(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let doc = state
        .key
        .server_keys_document(&state.config.server_name, state.now_ms())
        .map_err(|e| ApiError::internal(format!("cannot sign the key document: {e}")))?;
    serde_json::to_value(doc)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /health`: 200 when the database answers, 503 when it does not.
#[tracing::instrument(skip_all)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.repo.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".to_owned(),
                database: state.repo.kind().to_owned(),
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".to_owned(),
                    database: format!("{} unreachable", state.repo.kind()),
                }),
            )
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let depth = match state.repo.outbox_depth().await {
        Ok(depth) => depth,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the outbox depth");
            Vec::new()
        }
    };
    match state.metrics.render(&depth, state.now_ms()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
