//! Retention in the admin API: purging one ended request at once, and
//! finding tombstones by an address or a Matrix ID (their keyed hashes).

use super::Admin;
use crate::errors::{AdminError, ApiError};
use crate::lifecycle::retention::{address_hmac, mxid_hmac, purge_now};
use crate::state::AppState;
use crate::storage::{Purged, StoredRequest};
use assent_shared::admin::{ActionOutcome, Tombstone, TombstoneList, TombstoneSearch};
use assent_shared::{ApiError as ErrorBody, Medium, ThreePid};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;

/// `POST …/purge`'s optional body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// Purge although the decision still answers repeats of its unbind.
    #[serde(default)]
    force: bool,
}

/// Most tombstones one search answers.
const MAX_TOMBSTONES: i64 = 100;

fn invalid(error: impl Into<String>) -> ApiError {
    AdminError::InvalidParam(error.into()).into()
}

/// `POST /_assent/v1/admin/requests/{id}/purge`: deletes an ended request's
/// personal data now, whatever the retention period, leaving its
/// tombstone, which records the administrator's token id.
#[utoipa::path(post, path = "/_assent/v1/admin/requests/{id}/purge", tag = "actions",
    params(("id" = String, Path, description = "the request's id")),
    request_body(content = String, description = "optional: `{\"force\": true}` purges a request whose decision still answers repeats of its unbind (the homeserver may then ask the owner again)"),
    responses(
        (status = 200, body = ActionOutcome, description = "its personal data is deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the CSRF header is missing"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "still pending or relaying, its decision still answers repeats, or purged before"),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn purge(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ActionOutcome>, ApiError> {
    let force = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        serde_json::from_slice::<PurgeBody>(&body)
            .map_err(|e| {
                invalid(format!(
                    "the body must be empty or {{\"force\": true}}: {e}"
                ))
            })?
            .force
    };
    let outcome = match purge_now(&state, &id, &admin.actor(), force).await? {
        Ok(outcome) => outcome,
        Err(crate::lifecycle::retention::TooSoon::StillAnswering(until)) => {
            return Err(AdminError::StillAnswering(crate::email::utc_minutes(until)).into())
        }
    };
    match outcome {
        Purged::Now => {
            tracing::info!(request_id = %id, token_id = %admin.token_id, "an administrator deleted a request's personal data");
            let status = state
                .repo
                .request(&id)
                .await?
                .map(|r| r.status)
                .ok_or_else(|| ApiError::from(AdminError::NoSuchRequest))?;
            Ok(Json(ActionOutcome {
                request_id: id,
                status,
                message: "Its personal data is deleted; a tombstone is left.".to_owned(),
                requeued: None,
            }))
        }
        Purged::Already => Err(AdminError::AlreadyPurged.into()),
        Purged::NotEnded => Err(AdminError::NotEnded.into()),
        Purged::Unknown => Err(AdminError::NoSuchRequest.into()),
    }
}

/// `POST /_assent/v1/admin/tombstones/search`: the tombstones of purged
/// requests for an address or a Matrix ID ("did we ever act on this
/// address?"), found by their keyed hashes. Live requests are in the list.
#[utoipa::path(post, path = "/_assent/v1/admin/tombstones/search", tag = "requests",
    request_body(content = TombstoneSearch, description = "`{\"address\": \"…\"}` (with `\"medium\": \"msisdn\"` for a phone number), `{\"mxid\": \"…\"}`, or both"),
    responses(
        (status = 200, body = TombstoneList, description = "newest first, at most 100"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the CSRF header is missing"),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn search(
    _admin: Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TombstoneList>, ApiError> {
    let query: TombstoneSearch = serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "the body must be {{\"address\": \"…\"}} or {{\"mxid\": \"…\"}}: {e}"
        ))
    })?;
    let medium = match query.medium.as_deref() {
        None => Medium::Email,
        Some(medium) => Medium::parse(medium).map_err(|e| invalid(e.to_string()))?,
    };
    let address = match query.address.as_deref() {
        Some(address) => {
            let threepid = ThreePid::new(medium, address.trim())
                .map_err(|e| invalid(format!("address: {e}")))?;
            Some(address_hmac(&state, medium, &threepid.address))
        }
        None => None,
    };
    let mxid = query.mxid.as_deref().map(|m| mxid_hmac(&state, m.trim()));
    if address.is_none() && mxid.is_none() {
        return Err(invalid("name an address or a Matrix ID"));
    }
    let found = state
        .repo
        .tombstones(address.as_deref(), mxid.as_deref(), MAX_TOMBSTONES)
        .await?;
    Ok(Json(TombstoneList {
        tombstones: found.iter().filter_map(tombstone_of).collect(),
    }))
}

fn tombstone_of(r: &StoredRequest) -> Option<Tombstone> {
    Some(Tombstone {
        id: r.id.clone(),
        status: r.status,
        identity_server: r.identity_server.clone(),
        requesting_server: r.origin.clone(),
        medium: r.medium.as_str().to_owned(),
        initiator: r.initiator,
        created_at_ms: r.created_at,
        decided_at_ms: r.decided_at,
        purged_at_ms: r.purged_at?,
        purged_by: r.purged_by.clone().unwrap_or_default(),
        decision_sha256: r.decision_sha256.as_deref().map(crate::tokens::hex),
    })
}
