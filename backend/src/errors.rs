//! Errors as HTTP answers: a status and a Matrix-style `{errcode, error}` body.

use assent_shared::ApiError as Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            errcode,
            error: error.into(),
        }
    }

    pub fn not_found(errcode: &'static str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, errcode, error)
    }

    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", error)
    }

    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", error)
    }
}

/// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`, as the Matrix APIs answer.
pub fn rate_limited(retry_after_ms: i64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(serde_json::json!({
            "errcode": "M_LIMIT_EXCEEDED",
            "error": "too many attempts; try again later",
            "retry_after_ms": retry_after_ms,
        })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(Body {
                errcode: self.errcode.to_owned(),
                error: self.error,
            }),
        )
            .into_response()
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!(error = %e, "storage failed");
        ApiError::unavailable("the database is not answering; try again shortly")
    }
}
