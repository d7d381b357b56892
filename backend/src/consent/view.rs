//! What the owner is shown: the request a consent token opens, as the
//! app's JSON (`GET /_assent/v1/consent/{token}`), and the visit noted in
//! its audit trail.

use crate::errors::{rate_limited, ApiError, ConsentError};
use crate::state::AppState;
use crate::storage::AuditKind;
use crate::storage::StoredRequest;
use crate::tokens;
use assent_shared::{ConsentView, IdentityServerInfo, RequestStatus, ThreePid};
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;

/// Finds the request a consent token belongs to, a tombstone included.
pub async fn stored_for_token(state: &AppState, token: &str) -> Result<StoredRequest, ApiError> {
    let unknown = || ApiError::from(ConsentError::UnknownLink);
    if !tokens::looks_valid(token) {
        return Err(unknown());
    }
    state
        .repo
        .request_by_token_hash(&tokens::hash(token))
        .await?
        .ok_or_else(unknown)
}

/// Finds the request a consent token belongs to; a tombstone's link
/// answers that its data was deleted, and when.
pub async fn request_for_token(state: &AppState, token: &str) -> Result<StoredRequest, ApiError> {
    let request = stored_for_token(state, token).await?;
    match request.purged_at {
        Some(at) => Err(ConsentError::DataDeleted(crate::email::utc_minutes(at)).into()),
        None => Ok(request),
    }
}

/// `GET /_assent/v1/consent/{token}`: what the owner is shown. Changes
/// nothing but the audit trail, which notes the visit.
#[tracing::instrument(skip_all)]
pub async fn consent_view(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    if let Err(retry_after_ms) = state.limits.consent.hit(client.ip(), state.now_ms()) {
        return rate_limited(retry_after_ms);
    }
    match request_for_token(&state, &token).await {
        Ok(request) => {
            record_view(&state, &request, "app").await;
            Json(view_of(&state, &request)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// A view within this long of the last one is the same visit (the
/// server-rendered page, then the app's own fetch; a reload).
const SAME_VISIT_MS: i64 = 60_000;

/// Puts a visit to a pending request's consent page into its audit trail
/// (`via`: `page` or `app`), once per visit. A failure to record it does not
/// stop the page.
pub async fn record_view(state: &AppState, request: &StoredRequest, via: &str) {
    if request.status != RequestStatus::Pending {
        return;
    }
    let now = state.now_ms();
    match state.repo.audit_trail(&request.id).await {
        Ok(trail) => {
            if trail
                .iter()
                .rev()
                .find(|e| e.is(AuditKind::Viewed))
                .is_some_and(|e| now - e.at < SAME_VISIT_MS)
            {
                return;
            }
        }
        Err(e) => {
            tracing::warn!(request_id = %request.id, error = %e, "cannot read the audit trail");
            return;
        }
    }
    let event = crate::storage::NewAudit::new(
        AuditKind::Viewed,
        Some("owner"),
        serde_json::json!({"via": via}),
    );
    if let Err(e) = state
        .repo
        .append_audit(&request.id, state.now_ms(), &event)
        .await
    {
        tracing::warn!(request_id = %request.id, error = %e, "cannot record a view of the consent page");
    }
}

pub fn view_of(state: &AppState, r: &StoredRequest) -> ConsentView {
    // Past its expiry a pending request is expired, whether or not the
    // expiry job has recorded that yet.
    let status = if r.status == RequestStatus::Pending && state.now_ms() >= r.expires_at {
        RequestStatus::Expired
    } else {
        r.status
    };
    let identity_server = match state.config.identity_server(&r.identity_server) {
        Some(is) => IdentityServerInfo {
            name: is.name.clone(),
            display_name: is.display_name.clone(),
            operator: is.operator.clone(),
            privacy_policy_url: is.privacy_policy_url.as_ref().map(|u| u.to_string()),
            embed_origins: is.frame_ancestors.clone(),
        },
        // Removed from the config since: show what is known.
        None => IdentityServerInfo {
            name: r.identity_server.clone(),
            display_name: r.identity_server.clone(),
            operator: String::new(),
            privacy_policy_url: None,
            embed_origins: Vec::new(),
        },
    };
    let (requesting_server, requesting_server_ascii) = crate::email::server_names(&r.origin);
    ConsentView {
        request_id: r.id.clone(),
        status,
        requesting_server,
        requesting_server_ascii,
        server_key_id: r.origin_key_id.clone(),
        verified_at_ms: r.verified_at,
        mxid: r.mxid.clone(),
        threepid: ThreePid {
            medium: r.medium,
            address: r.address.clone(),
        },
        address_as_sent: r.address_as_sent.clone(),
        identity_server,
        initiator: r.initiator,
        reason: r.reason.clone(),
        created_at_ms: r.created_at,
        expires_at_ms: r.expires_at,
        decided_at_ms: r.decided_at,
        retention_ms: i64::try_from(
            crate::lifecycle::retention::kept_at_most(&state.config).as_millis(),
        )
        .unwrap_or(i64::MAX),
    }
}
