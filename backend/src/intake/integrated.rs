//! Integrated mode: an identity server that knows about Assent asks it to hold
//! an unbind (`POST /_assent/v1/requests`) and reads the outcome
//! (`GET /_assent/v1/requests/{id}`), authenticated by one of its
//! `api_tokens`.

use crate::bearer::{bearer_token, check_token};
use crate::config::IdentityServerConfig;
use crate::errors::{rate_limited, ApiError, IntakeError};
use crate::lifecycle::{self, hold, By, Held, ToHold};
use crate::state::AppState;
use crate::storage::{Source, StoredRequest};
use assent_shared::{mxid_server_name, NewRequestBody, RequestState, RequestStatus, ThreePid};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::net::SocketAddr;

/// Longest `reason` accepted.
pub const MAX_REASON: usize = 1000;
/// Longest `callback_url` accepted.
pub const MAX_CALLBACK_URL: usize = 2048;

/// An identity server calling with one of its `api_tokens`.
pub struct IsCaller {
    pub identity_server: String,
    pub token_id: String,
}

impl IsCaller {
    pub fn config<'a>(&self, state: &'a AppState) -> Option<&'a IdentityServerConfig> {
        state.config.identity_server(&self.identity_server)
    }
}

impl FromRequestParts<AppState> for IsCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let now = state.now_ms();
        if let Some(client) = client {
            if let Some(retry) = state.limits.admin_failures.is_limited(&client, now) {
                return Err(rate_limited(retry));
            }
        }
        let Some(presented) = bearer_token(&parts.headers) else {
            return Err(IntakeError::MissingToken.into_response());
        };
        // Every identity server's tokens are checked, so timing tells nothing.
        let mut caller = None;
        for is in &state.config.identity_servers {
            if let Some(found) = check_token(&is.api_tokens, presented) {
                caller.get_or_insert(IsCaller {
                    identity_server: is.name.clone(),
                    token_id: found.token_id,
                });
            }
        }
        caller.ok_or_else(|| {
            if let Some(client) = client {
                let _ = state.limits.admin_failures.hit(client, now);
            }
            IntakeError::UnknownToken.into_response()
        })
    }
}

fn invalid(error: impl Into<String>) -> ApiError {
    IntakeError::InvalidParam(error.into()).into()
}

fn state_of(request: &StoredRequest) -> RequestState {
    RequestState {
        id: request.id.clone(),
        status: request.status,
        identity_server: request.identity_server.clone(),
        requesting_server: request.origin.clone(),
        mxid: request.mxid.clone(),
        threepid: ThreePid {
            medium: request.medium,
            address: request.address.clone(),
        },
        initiator: request.initiator,
        created_at_ms: request.created_at,
        expires_at_ms: request.expires_at,
        decided_at_ms: request.decided_at,
        decision: request
            .decision_doc
            .as_deref()
            .and_then(|doc| serde_json::from_str(doc).ok()),
        purged_at_ms: request.purged_at,
    }
}

/// `POST /_assent/v1/requests`
pub async fn create(
    caller: IsCaller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is = caller
        .config(&state)
        .ok_or_else(|| ApiError::internal("the caller's identity server vanished"))?;
    let body: NewRequestBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(if e.is_syntax() || e.is_eof() {
            IntakeError::NotJson(e.to_string())
        } else {
            IntakeError::BadJson(e.to_string())
        })
    })?;
    let mxid_server = mxid_server_name(&body.mxid).map_err(|e| invalid(format!("`mxid`: {e}")))?;
    let requesting_server = body.requesting_server.to_ascii_lowercase();
    if ruma_common::ServerName::parse(&requesting_server).is_err() {
        return Err(invalid("`requesting_server` is not a Matrix server name"));
    }
    if !mxid_server.eq_ignore_ascii_case(&requesting_server) {
        return Err(IntakeError::Forbidden(
            "`requesting_server` cannot unbind a Matrix ID on another server".to_owned(),
        )
        .into());
    }
    let threepid = ThreePid::new(body.threepid.medium, &body.threepid.address)
        .map_err(|e| invalid(format!("`threepid.address`: {e}")))?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(invalid(format!(
            "`reason` is longer than {MAX_REASON} characters"
        )));
    }
    if let Some(url) = &body.callback_url {
        if url.len() > MAX_CALLBACK_URL {
            return Err(invalid(format!(
                "`callback_url` is longer than {MAX_CALLBACK_URL} bytes"
            )));
        }
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("`callback_url`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(invalid("`callback_url` must be an http(s) URL"));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        let private_literal =
            literal.is_some_and(|ip| !crate::homeserver_keys::key_fetch::is_public(ip));
        let local_name = parsed
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost") || h.ends_with(".localhost"));
        if (private_literal || local_name) && !state.config.keys.allow_private_addresses {
            return Err(invalid(
                "`callback_url` must be on a public address (keys.allow_private_addresses allows others)",
            ));
        }
    }
    if threepid.medium == assent_shared::Medium::Msisdn
        && state.config.msisdn_policy != crate::config::MsisdnPolicy::Hold
    {
        return Err(invalid(
            "phone numbers are not held here (msisdn_policy is not `hold`)",
        ));
    }
    let now = state.now_ms();
    let held = {
        let lookup = state
            .repo
            .intake_lookup(
                &crate::storage::RequestKey {
                    identity_server: &is.name.to_ascii_lowercase(),
                    origin: &requesting_server,
                    mxid: &body.mxid,
                    medium: threepid.medium,
                    address: &threepid.address,
                },
                now - super::ADDRESS_WINDOW_MS,
            )
            .await?;
        if let Some(overdue) = lookup
            .latest
            .as_ref()
            .filter(|r| r.status == RequestStatus::Pending && r.expires_at <= now)
        {
            lifecycle::decide(&state, overdue, RequestStatus::Expired, By::Expiry).await?;
        }
        match lookup.latest {
            Some(pending)
                if pending.status == RequestStatus::Pending && pending.expires_at > now =>
            {
                Held::Joined(Box::new(pending))
            }
            _ => {
                if let Some(retry) = super::address_retry_after(&state, &lookup, now) {
                    return Ok(rate_limited(retry));
                }
                hold(
                    &state,
                    ToHold {
                        source: Source::Integrated,
                        identity_server: is,
                        origin: requesting_server,
                        origin_key_id: None,
                        verified_at: None,
                        mxid: body.mxid,
                        address_as_sent: threepid
                            .is_look_alike(&body.threepid.address)
                            .then(|| body.threepid.address.clone()),
                        threepid,
                        initiator: body.initiator,
                        reason: body.reason,
                        callback_url: body.callback_url,
                        raw: None,
                        audit: json!({"source": "integrated"}),
                        actor: Some(format!("is-token:{}", caller.token_id)),
                    },
                )
                .await?
            }
        }
    };
    let (status, id) = match held {
        Held::Created { id, .. } => (StatusCode::CREATED, id),
        Held::Joined(stored) => (StatusCode::OK, stored.id),
    };
    let stored = state
        .repo
        .request(&id)
        .await?
        .ok_or_else(|| ApiError::internal("the request just stored cannot be read back"))?;
    tracing::info!(request_id = %id, identity_server = %is.name, created = status == StatusCode::CREATED, "integrated request");
    state.metrics.intake(if status == StatusCode::CREATED {
        "held"
    } else {
        "joined_pending"
    });
    let mut response = (status, Json(state_of(&stored))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/_assent/v1/requests/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /_assent/v1/requests/{id}`: only the calling identity server's own.
pub async fn get_request(
    caller: IsCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RequestState>, ApiError> {
    let not_found = || ApiError::from(IntakeError::NoSuchRequest);
    if id.len() > 64 {
        return Err(not_found());
    }
    let stored = state.repo.request(&id).await?.ok_or_else(not_found)?;
    if !stored
        .identity_server
        .eq_ignore_ascii_case(&caller.identity_server)
    {
        return Err(not_found());
    }
    let mut view = state_of(&stored);
    // A pending request past its time has expired, whether or not the
    // expiry job has recorded it yet.
    if view.status == RequestStatus::Pending && stored.expires_at <= state.now_ms() {
        view.status = RequestStatus::Expired;
    }
    Ok(Json(view))
}
