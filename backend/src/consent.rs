//! The owner's decision: `POST /_assent/v1/consent/{token}/decision` and the
//! signed receipt at `GET /_assent/v1/consent/{token}/receipt`.
//!
//! The first decision wins, atomically (the storage layer only decides a
//! request that is still pending); a second one is answered 409 with the
//! stored outcome, so a decision made meanwhile in another tab shows as what
//! it is rather than as an error. A request past its time is recorded as
//! expired and answered 410. Tokens are looked up by hash and the whole
//! route is rate-limited per client address, like the view.

use crate::api::request_for_token;
use crate::app::AppState;
use crate::errors::{rate_limited, ApiError};
use crate::storage::{Decided, NewAudit, StoredRequest};
use assent_shared::{DecisionOutcome, DecisionRequest, OwnerDecision, RequestStatus};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;

/// Largest decision body accepted.
const MAX_BODY: usize = 1024;

fn outcome_of(request: &StoredRequest) -> DecisionOutcome {
    DecisionOutcome {
        request_id: request.id.clone(),
        status: request.status,
        decided_at_ms: request.decided_at,
        decision_id: request.decision_id.clone(),
    }
}

/// What the owner asked for, or why the body is not a decision.
pub fn parse_decision(body: &[u8]) -> Result<OwnerDecision, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "the decision is too large",
        ));
    }
    // An object only: serde would also take a struct written as an array.
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(serde_json::Value::is_object)
        .and_then(|value| serde_json::from_value::<DecisionRequest>(value).ok())
        .map(|d| d.decision)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                r#"send {"decision": "approve"} or {"decision": "deny"}"#,
            )
        })
}

/// Records `decision` on the request `token` opens. The answer's status:
/// 200 decided now, 409 decided before (body: the stored outcome), 410
/// expired, 404 unknown link.
pub async fn record(
    state: &AppState,
    token: &str,
    decision: OwnerDecision,
) -> Result<(StatusCode, DecisionOutcome), ApiError> {
    let expired = || {
        ApiError::new(
            StatusCode::GONE,
            "M_EXPIRED",
            "this request has expired; nothing was changed",
        )
    };
    let mut request = request_for_token(state, token).await?;
    let now = state.now_ms();
    if request.status == RequestStatus::Pending && now >= request.expires_at {
        crate::intake::hold::expire_overdue(state, &request).await?;
        // A decision may have landed just before the expiry: what is stored
        // is the answer.
        request = request_for_token(state, token).await?;
    }
    match request.status {
        RequestStatus::Pending => {}
        RequestStatus::Expired => return Err(expired()),
        _ => return Ok((StatusCode::CONFLICT, outcome_of(&request))),
    }
    let status = match decision {
        OwnerDecision::Approve => RequestStatus::Approved,
        OwnerDecision::Deny => RequestStatus::Denied,
    };
    let signed = crate::decision::decide(state, &request, status, now).map_err(|e| {
        tracing::error!(request_id = %request.id, error = %e, "cannot sign a decision");
        ApiError::internal("the decision could not be signed; nothing was changed")
    })?;
    let audit = NewAudit::new(
        "decided",
        Some("owner"),
        serde_json::json!({
            "decision": decision.as_str(),
            "decision_id": signed.decision_id,
        }),
    );
    let relay = crate::relay::rows_for(state, &request.identity_server, &signed);
    match state
        .repo
        .decide(&request.id, &signed, &audit, &relay)
        .await?
    {
        Decided::Now => {
            state.metrics.decided(decision.as_str());
            if !relay.is_empty() {
                state.relay_wake.notify_one();
            }
            tracing::info!(request_id = %request.id, decision = decision.as_str(), "the owner decided");
            Ok((
                StatusCode::OK,
                DecisionOutcome {
                    request_id: request.id,
                    status,
                    decided_at_ms: Some(now),
                    decision_id: Some(signed.decision_id),
                },
            ))
        }
        // Another tab, or the expiry, got there first: that outcome stands.
        Decided::AlreadyFinal(Some(stored)) => Ok((StatusCode::CONFLICT, outcome_of(&stored))),
        Decided::AlreadyFinal(None) => Err(ApiError::not_found(
            "M_NOT_FOUND",
            "this link is not known; check that it was copied whole",
        )),
    }
}

/// `POST /_assent/v1/consent/{token}/decision`.
#[tracing::instrument(skip_all)]
pub async fn decide(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(retry_after_ms) = state.limits.consent.hit(client.ip(), state.now_ms()) {
        return rate_limited(retry_after_ms);
    }
    let decision = match parse_decision(&body) {
        Ok(decision) => decision,
        Err(e) => return e.into_response(),
    };
    match record(&state, &token, decision).await {
        Ok((status, outcome)) => (status, Json(outcome)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /_assent/v1/consent/{token}/receipt`: the signed decision document,
/// as a download.
#[tracing::instrument(skip_all)]
pub async fn receipt(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    if let Err(retry_after_ms) = state.limits.consent.hit(client.ip(), state.now_ms()) {
        return rate_limited(retry_after_ms);
    }
    let request = match request_for_token(&state, &token).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    match request.decision_doc {
        Some(document) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"assent-receipt-{}.json\"",
                        request.id
                    ),
                ),
            ],
            document,
        )
            .into_response(),
        None => ApiError::not_found("M_NOT_FOUND", "there is no decision yet").into_response(),
    }
}

pub mod nojs;

#[cfg(test)]
mod tests;
