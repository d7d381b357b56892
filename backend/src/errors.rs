//! Errors as HTTP answers: a status and a Matrix-style `{errcode, error}`
//! body. Each area names its refusals in an enum here, and this file alone
//! maps them to a status and a Matrix error code.

use assent_shared::admin::CSRF_HEADER;
use assent_shared::{ApiError as Body, RequestStatus};
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
    fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
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

/// The codes Assent answers with, beyond the Matrix spec's own where the
/// spec has none (`M_EXPIRED`, `M_NOT_PENDING`, …).
impl ApiError {
    fn of(status: StatusCode, errcode: &'static str, error: &impl std::fmt::Display) -> Self {
        ApiError::new(status, errcode, error.to_string())
    }
}

/// Refusals of a request as a whole, before any area reads it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the body is too large")]
    TooLarge,
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("the server hit a bug")]
    Bug,
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        let (status, code) = match e {
            HttpError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            HttpError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
            HttpError::NoSuchEndpoint => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            HttpError::Bug => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        };
        ApiError::of(status, code, &e)
    }
}

/// Intake: unbinds from homeservers, and integrated mode's calls.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{0}")]
    NotJson(String),
    #[error("{0}")]
    BadJson(String),
    #[error("`{0}` is missing")]
    MissingParam(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    InvalidParam(String),
    /// The `X-Matrix` signature is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// What this identity server does not do (a held unbind under
    /// `held_response = "not-supported"`, phone numbers under
    /// `msisdn_policy = "reject"`).
    #[error("{0}")]
    NotSupported(String),
    #[error("no identity server by this name is configured here")]
    NoSuchIdentityServer,
    #[error(
        "this path spells an unbind in a way Assent does not take; \
         send unbinds to /_matrix/identity/v2/3pid/unbind, written as it is"
    )]
    UnbindMisspelt,
    #[error("no such request")]
    NoSuchRequest,
    #[error("an identity server's API token is required")]
    MissingToken,
    #[error("this API token is not accepted")]
    UnknownToken,
    #[error("the identity server behind this gateway did not answer")]
    UpstreamDown,
    #[error(
        "cannot confirm the binding with the identity server behind this gateway; try again later"
    )]
    BindingUnknown,
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        let (status, code) = match e {
            IntakeError::NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            IntakeError::BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            IntakeError::MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAMS"),
            IntakeError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            IntakeError::InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            IntakeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            IntakeError::Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            IntakeError::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, "M_UNRECOGNIZED"),
            IntakeError::UnbindMisspelt => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            IntakeError::NoSuchIdentityServer | IntakeError::NoSuchRequest => {
                (StatusCode::NOT_FOUND, "M_NOT_FOUND")
            }
            IntakeError::MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            IntakeError::UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            IntakeError::UpstreamDown | IntakeError::BindingUnknown => {
                (StatusCode::BAD_GATEWAY, "M_UNKNOWN")
            }
        };
        ApiError::of(status, code, &e)
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The owner's side: the consent page, its API and the receipt.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("this link is not known; check that it was copied whole")]
    UnknownLink,
    #[error("this request has expired; nothing was changed")]
    Expired,
    #[error("the decision is too large")]
    TooLarge,
    #[error(r#"send {{"decision": "approve"}} or {{"decision": "deny"}}"#)]
    NotADecision,
    #[error("there is no decision yet")]
    NoDecisionYet,
    /// A tombstone's link: the request ended, and its personal data was
    /// deleted after the retention period (or by an administrator).
    #[error("this request has ended, and its data was deleted on {0}")]
    DataDeleted(String),
}

impl From<ConsentError> for ApiError {
    fn from(e: ConsentError) -> Self {
        let (status, code) = match e {
            ConsentError::UnknownLink | ConsentError::NoDecisionYet => {
                (StatusCode::NOT_FOUND, "M_NOT_FOUND")
            }
            ConsentError::Expired => (StatusCode::GONE, "M_EXPIRED"),
            ConsentError::DataDeleted(_) => (StatusCode::GONE, "ASSENT_DATA_DELETED"),
            ConsentError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            ConsentError::NotADecision => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        };
        ApiError::of(status, code, &e)
    }
}

/// The admin API and console sign-in.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an admin token or a console session is required")]
    MissingToken,
    #[error("this admin token is not accepted")]
    UnknownToken,
    #[error("this console session has ended; sign in again")]
    SessionEnded,
    #[error("the admin token this session was opened with is no longer accepted")]
    SessionTokenRemoved,
    #[error("calls that change something must carry the {CSRF_HEADER} header")]
    CsrfMissing,
    #[error("the body must be {{\"token\": \"…\"}}: {0}")]
    NotASignIn(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("no request has this id")]
    NoSuchRequest,
    #[error("this request is {status}; only a pending request can be {action}")]
    NotPending {
        status: RequestStatus,
        action: &'static str,
    },
    #[error("this request is {0}; its email is no longer needed")]
    EmailNotNeeded(RequestStatus),
    #[error("phone numbers have no channel to ask the owner; cancel the request or let it expire")]
    NoChannel,
    #[error("this request's identity server is no longer configured")]
    NotConfigured,
    #[error("nothing of this request was given up; there is nothing to retry")]
    NothingToRetry,
    #[error("this request's personal data was deleted before")]
    AlreadyPurged,
    #[error(
        "this request has not ended: it is pending, or a relay or email of it is still to be sent"
    )]
    NotEnded,
    #[error("this request's decision answers repeats of its unbind until {0}; purging it before would let the homeserver ask the owner again (send {{\"force\": true}} to purge anyway)")]
    StillAnswering(String),
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let (status, code) = match e {
            AdminError::MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            AdminError::UnknownToken
            | AdminError::SessionEnded
            | AdminError::SessionTokenRemoved => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            AdminError::CsrfMissing => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            AdminError::NotASignIn(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            AdminError::InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            AdminError::NoSuchRequest => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            AdminError::NotPending { .. } | AdminError::EmailNotNeeded(_) => {
                (StatusCode::CONFLICT, "M_NOT_PENDING")
            }
            AdminError::NoChannel => (StatusCode::CONFLICT, "M_NO_CHANNEL"),
            AdminError::NotConfigured => (StatusCode::CONFLICT, "M_NOT_CONFIGURED"),
            AdminError::NothingToRetry => (StatusCode::CONFLICT, "M_NOTHING_TO_RETRY"),
            AdminError::AlreadyPurged => (StatusCode::CONFLICT, "M_ALREADY_PURGED"),
            AdminError::NotEnded => (StatusCode::CONFLICT, "M_NOT_ENDED"),
            AdminError::StillAnswering(_) => (StatusCode::CONFLICT, "M_STILL_ANSWERING"),
        };
        ApiError::of(status, code, &e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl IntoResponse for ConsentError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
