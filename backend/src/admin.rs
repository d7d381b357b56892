//! Admin authentication: bearer tokens from `[admin] tokens`, given in the
//! config either as the secret or as `sha256:<hex>` of it, compared in
//! constant time.

use crate::app::AppState;
use crate::errors::rate_limited;
use crate::errors::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// An authenticated administrator, named by a short id of their token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    pub token_id: String,
}

/// Whether `presented` matches one of `configured`; returns the token id.
pub fn check_token(configured: &[String], presented: &str) -> Option<Admin> {
    let digest = Sha256::digest(presented.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut found = false;
    for entry in configured {
        // Every entry is compared, match or not, so timing tells nothing.
        let matched = match entry.strip_prefix("sha256:") {
            Some(hash) => hash.to_ascii_lowercase().as_bytes().ct_eq(hex.as_bytes()),
            None => Sha256::digest(entry.as_bytes())
                .as_slice()
                .ct_eq(digest.as_slice()),
        };
        found |= bool::from(matched);
    }
    found.then(|| Admin {
        token_id: hex[..8].to_owned(),
    })
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AdminRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Refused tokens count against the caller's address; past the limit,
        // nothing is checked until the window ends.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(client) = client {
            if let Some(retry_after_ms) = state
                .limits
                .admin_failures
                .is_limited(&client, state.now_ms())
            {
                return Err(AdminRejection::Limited(retry_after_ms));
            }
        }
        let result = Admin::check(parts, state);
        if let (Err(_), Some(client)) = (&result, client) {
            let _ = state.limits.admin_failures.hit(client, state.now_ms());
        }
        result.map_err(AdminRejection::Refused)
    }
}

/// Why a caller is not let in.
pub enum AdminRejection {
    Refused(ApiError),
    Limited(i64),
}

impl IntoResponse for AdminRejection {
    fn into_response(self) -> Response {
        match self {
            AdminRejection::Refused(error) => error.into_response(),
            AdminRejection::Limited(retry_after_ms) => rate_limited(retry_after_ms),
        }
    }
}

impl Admin {
    fn check(parts: &Parts, state: &AppState) -> Result<Admin, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "M_MISSING_TOKEN",
                    "an admin token is required",
                )
            })?;
        check_token(&state.config.admin.tokens, presented.trim()).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "this admin token is not accepted",
            )
        })
    }
}

/// `GET /_assent/v1/admin/whoami`: checks a token.
pub async fn whoami(admin: Admin, State(_): State<AppState>) -> Json<Admin> {
    Json(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens_are_accepted_and_others_are_not() {
        let secret = "s3cret-token-with-enough-length-0123456789";
        let hashed: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let plain = vec![secret.to_owned()];
        let as_hash = vec![format!("sha256:{}", hashed.to_uppercase())];
        let admin = check_token(&plain, secret).unwrap();
        assert_eq!(admin.token_id, hashed[..8]);
        assert_eq!(check_token(&as_hash, secret), Some(admin));
        assert_eq!(
            check_token(&plain, "s3cret-token-with-enough-length-012345678"),
            None
        );
        assert_eq!(
            check_token(&as_hash, &hashed),
            None,
            "the hash itself is not a token"
        );
        assert_eq!(check_token(&[], secret), None);
    }
}
