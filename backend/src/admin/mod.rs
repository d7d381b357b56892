//! Admin authentication and sessions. An administrator is let in by a bearer
//! token from `[admin] tokens` (given in the config either as the secret or
//! as `sha256:<hex>` of it, compared in constant time), or by the console's
//! session cookie, which signing in with such a token sets. Only the SHA-256
//! of a session cookie is stored.
//!
//! State-changing calls made with the cookie must carry the
//! [`CSRF_HEADER`](assent_shared::admin::CSRF_HEADER); the cookie is
//! `SameSite=Strict` as well.

pub mod api;
pub mod openapi;
pub mod tombstones;

use crate::bearer::{bearer_token, check_token, configured_ids};
use crate::errors::rate_limited;
use crate::errors::{AdminError, ApiError};
use crate::state::AppState;
use crate::storage::AdminSession;
use assent_shared::admin::{SignIn, Whoami, CSRF_HEADER};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// The console's session cookie. It is only sent to the admin API.
pub const SESSION_COOKIE: &str = "assent_session";
const COOKIE_PATH: &str = "/_assent/v1/admin";

/// An authenticated administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub token_id: String,
    /// Set when let in by the session cookie: when the session ends.
    pub session_expires_at: Option<i64>,
}

impl Admin {
    /// How audit events name this administrator.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.token_id)
    }
}

fn client_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_owned())
}

fn session_hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(presented) = bearer_token(&parts.headers) {
            // Refused tokens count against the caller's address; past the
            // limit, nothing is checked until the window ends.
            let client = client_of(parts);
            let now = state.now_ms();
            if let Some(retry_after_ms) =
                client.and_then(|c| state.limits.admin_failures.is_limited(&c, now))
            {
                return Err(rate_limited(retry_after_ms));
            }
            return match check_token(&state.config.admin.tokens, presented) {
                Some(found) => Ok(Admin {
                    token_id: found.token_id,
                    session_expires_at: None,
                }),
                None => {
                    if let Some(client) = client {
                        let _ = state.limits.admin_failures.hit(client, now);
                    }
                    Err(AdminError::UnknownToken.into_response())
                }
            };
        }
        // Session ids are 256 random bits: not worth rate-limiting, and an
        // expired session must not lock its owner out of signing in again.
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(AdminError::MissingToken.into_response());
        };
        let session = state
            .repo
            .session(&session_hash(&cookie), state.now_ms())
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        let Some(session) = session else {
            return Err(AdminError::SessionEnded.into_response());
        };
        // The token that opened the session may have been removed since:
        // its sessions end with it.
        if !configured_ids(&state.config.admin.tokens).any(|id| id == session.token_id) {
            return Err(AdminError::SessionTokenRemoved.into_response());
        }
        if changes_state(&parts.method) && !parts.headers.contains_key(CSRF_HEADER) {
            return Err(AdminError::CsrfMissing.into_response());
        }
        Ok(Admin {
            token_id: session.token_id,
            session_expires_at: Some(session.expires_at),
        })
    }
}

/// `GET /_assent/v1/admin/whoami`: who the caller is.
#[utoipa::path(get, path = "/_assent/v1/admin/whoami", tag = "session",
    responses((status = 200, body = Whoami), (status = 401, body = assent_shared::ApiError)),
    security(("bearer" = []), ("session" = [])))]
pub async fn whoami(admin: Admin) -> Json<Whoami> {
    Json(whoami_of(&admin))
}

fn whoami_of(admin: &Admin) -> Whoami {
    Whoami {
        token_id: admin.token_id.clone(),
        via: if admin.session_expires_at.is_some() {
            "session"
        } else {
            "token"
        }
        .to_owned(),
        session_expires_at_ms: admin.session_expires_at,
    }
}

/// `POST /_assent/v1/admin/session`: exchanges an admin token for the
/// console's session cookie. Refused tokens are rate-limited per address.
#[utoipa::path(post, path = "/_assent/v1/admin/session", tag = "session",
    request_body = SignIn,
    responses(
        (status = 200, body = Whoami, description = "signed in; the session cookie is set"),
        (status = 401, body = assent_shared::ApiError, description = "no token, or not accepted"),
        (status = 403, body = assent_shared::ApiError, description = "the CSRF header is missing"),
        (status = 429, body = assent_shared::ApiError, description = "too many refused tokens from this address"),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.now_ms();
    if let Some(retry_after_ms) = state.limits.admin_failures.is_limited(&client.ip(), now) {
        return rate_limited(retry_after_ms);
    }
    // No body (or an empty token) is a caller without credentials; a body
    // that is not a sign-in is a mistake worth naming.
    let token = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<SignIn>(&body) {
            Ok(sign_in) => Some(sign_in.token.trim().to_owned()).filter(|t| !t.is_empty()),
            Err(e) => return AdminError::NotASignIn(e.to_string()).into_response(),
        }
    };
    let Some(token) = token else {
        return AdminError::MissingToken.into_response();
    };
    if !headers.contains_key(CSRF_HEADER) {
        return AdminError::CsrfMissing.into_response();
    }
    let Some(found) = check_token(&state.config.admin.tokens, &token) else {
        let _ = state.limits.admin_failures.hit(client.ip(), now);
        tracing::info!(client = %client.ip(), "console sign-in refused");
        return AdminError::UnknownToken.into_response();
    };
    let value = URL_SAFE_NO_PAD.encode(state.random_bytes::<32>());
    let ttl = i64::try_from(state.config.admin.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let session = AdminSession {
        id_hash: session_hash(&value),
        token_id: found.token_id.clone(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
    };
    if let Err(e) = state.repo.create_session(&session).await {
        return ApiError::from(e).into_response();
    }
    tracing::info!(token_id = %found.token_id, "console session started");
    let admin = Admin {
        token_id: found.token_id,
        session_expires_at: Some(session.expires_at),
    };
    let cookie = cookie::Cookie::build((SESSION_COOKIE, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(state.config.secure_cookies())
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::milliseconds(ttl))
        .build();
    with_cookie(Json(whoami_of(&admin)).into_response(), &cookie)
}

/// `DELETE /_assent/v1/admin/session`: signs out (the session ends at once).
#[utoipa::path(delete, path = "/_assent/v1/admin/session", tag = "session",
    responses(
        (status = 204, description = "signed out; the cookie is cleared"),
        (status = 401, body = assent_shared::ApiError),
        (status = 403, body = assent_shared::ApiError, description = "the CSRF header is missing"),
    ),
    security(("session" = [])))]
pub async fn sign_out(
    _admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    if let Some(value) = session_cookie(&headers) {
        if let Err(e) = state.repo.delete_session(&session_hash(&value)).await {
            return ApiError::from(e).into_response();
        }
    }
    let cookie = cookie::Cookie::build((SESSION_COOKIE, ""))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(state.config.secure_cookies())
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    with_cookie(StatusCode::NO_CONTENT.into_response(), &cookie)
}

fn with_cookie(mut response: Response, cookie: &cookie::Cookie<'_>) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
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

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; assent_session=abc_DEF-1; other=x"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc_DEF-1"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("assent_sessionx=1"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}

#[cfg(test)]
mod session_tests {
    use crate::test_support::Harness;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    const TOKEN: &str = "admin-token-for-session-unit-tests-0123456789";

    fn request(method: &str, path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header(assent_shared::admin::CSRF_HEADER, "1")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        if let Some(cookie) = cookie {
            builder = builder.header("cookie", cookie);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    async fn signed_in(h: &Harness) -> String {
        let response = tower::ServiceExt::oneshot(
            h.app.clone(),
            request(
                "POST",
                "/_assent/v1/admin/session",
                None,
                &format!(r#"{{"token":"{TOKEN}"}}"#),
            ),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_session_ends_after_session_ttl_and_with_its_token() {
        let h = Harness::new(|c| {
            c.admin.tokens = vec![TOKEN.to_owned()];
            c.admin.session_ttl = std::time::Duration::from_secs(600);
        })
        .await;
        let cookie = signed_in(&h).await;
        let whoami = |cookie: String| {
            let app = h.app.clone();
            async move {
                tower::ServiceExt::oneshot(
                    app,
                    request("GET", "/_assent/v1/admin/whoami", Some(&cookie), ""),
                )
                .await
                .unwrap()
                .status()
            }
        };
        assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
        h.clock.0.fetch_add(599_000, Ordering::SeqCst);
        assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
        h.clock.0.fetch_add(1_000, Ordering::SeqCst);
        assert_eq!(
            whoami(cookie.clone()).await,
            StatusCode::UNAUTHORIZED,
            "expired"
        );

        // A token taken out of the config takes its sessions with it.
        let h = Harness::new(|c| c.admin.tokens = vec![TOKEN.to_owned()]).await;
        let cookie = signed_in(&h).await;
        let mut config = (*h.state.config).clone();
        config.admin.tokens = vec!["another-admin-token-0123456789abcdef0123".to_owned()];
        let state = crate::state::AppState::from(crate::state::Shared {
            config: std::sync::Arc::new(config),
            ..(*h.state).clone()
        });
        let app = crate::app::router(state);
        let status = tower::ServiceExt::oneshot(
            app,
            request("GET", "/_assent/v1/admin/whoami", Some(&cookie), ""),
        )
        .await
        .unwrap()
        .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
