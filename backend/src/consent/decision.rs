//! The owner's decision: `POST /_assent/v1/consent/{token}/decision` and the
//! signed receipt at `GET /_assent/v1/consent/{token}/receipt`.
//!
//! The first decision wins, atomically (the storage layer only decides a
//! request that is still pending); a second one is answered 409 with the
//! stored outcome, so a decision made meanwhile in another tab shows as what
//! it is rather than as an error. A request past its time is recorded as
//! expired and answered 410. Tokens are looked up by hash and the whole
//! route is rate-limited per client address, like the view.

use super::view::request_for_token;
use crate::errors::{rate_limited, ApiError, ConsentError};
use crate::lifecycle::{self, By, Outcome, Via};
use crate::state::AppState;
use crate::storage::StoredRequest;
use assent_shared::{DecidedVia, DecisionOutcome, DecisionRequest, OwnerDecision, RequestStatus};
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

/// What the owner asked for (and where, if the app said), or why the body
/// is not a decision.
pub fn parse_decision(body: &[u8]) -> Result<(OwnerDecision, Via), ApiError> {
    if body.len() > MAX_BODY {
        return Err(ConsentError::TooLarge.into());
    }
    // An object only: serde would also take a struct written as an array.
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(serde_json::Value::is_object)
        .and_then(|value| serde_json::from_value::<DecisionRequest>(value).ok())
        .map(|d| {
            let via = match d.via {
                Some(DecidedVia::Page) => Via::Page,
                Some(DecidedVia::Embed) => Via::Embed,
                None => Via::Api,
            };
            (d.decision, via)
        })
        .ok_or_else(|| ConsentError::NotADecision.into())
}

/// Records `decision` on the request `token` opens. The answer's status:
/// 200 decided now, 409 decided before (body: the stored outcome), 410
/// expired, 404 unknown link.
pub async fn record(
    state: &AppState,
    token: &str,
    decision: OwnerDecision,
    via: Via,
) -> Result<(StatusCode, DecisionOutcome), ApiError> {
    let request = request_for_token(state, token).await?;
    let status = match decision {
        OwnerDecision::Approve => RequestStatus::Approved,
        OwnerDecision::Deny => RequestStatus::Denied,
    };
    match lifecycle::decide(state, &request, status, By::Owner(via)).await? {
        Outcome::Now(decided) => Ok((
            StatusCode::OK,
            DecisionOutcome {
                request_id: request.id,
                status,
                decided_at_ms: Some(decided.at),
                decision_id: Some(decided.decision_id),
            },
        )),
        Outcome::Final(stored) if stored.status == RequestStatus::Expired => {
            Err(ConsentError::Expired.into())
        }
        // Another tab, or an administrator, got there first: that outcome
        // stands.
        Outcome::Final(stored) => Ok((StatusCode::CONFLICT, outcome_of(&stored))),
        Outcome::Unknown => Err(ConsentError::UnknownLink.into()),
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
    let (decision, via) = match parse_decision(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    match record(&state, &token, decision, via).await {
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
        None => ConsentError::NoDecisionYet.into_response(),
    }
}
