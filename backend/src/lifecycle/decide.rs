//! Deciding a pending request: approve or deny (its owner), cancel (an
//! administrator), expire (its time ran out). One signed document, its
//! relay rows and its audit event are written together, guarded so that
//! the first decision wins.

use super::document::{self, decision_word, SignError};
use super::relay_rows::rows_for;
use crate::errors::ApiError;
use crate::state::AppState;
use crate::storage::AuditKind;
use crate::storage::{Decided, Decision, NewAudit, StorageError, StoredRequest};
use assent_shared::RequestStatus;
use serde_json::json;

/// Who decides.
#[derive(Clone, Copy, Debug)]
pub enum By<'a> {
    /// The owner of the address, through the consent page or its API.
    Owner(Via),
    /// An administrator, as the audit trail names them.
    Admin(&'a str),
    /// Assent itself: the request's time ran out.
    Expiry,
}

/// How the owner decided, as the consent record says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The consent page's app.
    Page,
    /// The app inside the identity server's own page.
    Embed,
    /// The server-rendered page's form (no JavaScript).
    Form,
    /// The decision API, by a caller that did not say.
    Api,
}

impl By<'_> {
    /// How the decision was made, for the consent record.
    fn method(&self) -> &'static str {
        match self {
            By::Owner(Via::Page) => "consent page",
            By::Owner(Via::Embed) => "consent page embedded by the identity server",
            By::Owner(Via::Form) => "consent page form without JavaScript",
            By::Owner(Via::Api) => "decision API",
            By::Admin(_) => "administrator",
            By::Expiry => "expiry",
        }
    }

    fn actor(&self) -> &str {
        match self {
            By::Owner(_) => "owner",
            By::Admin(actor) => actor,
            By::Expiry => "system",
        }
    }
}

/// What a call to [`decide`] did.
#[derive(Debug)]
pub enum Outcome {
    /// The decision asked for was recorded now.
    Now(Decision),
    /// The request was final before, or its time had run out and it is now
    /// recorded as expired: the request as stored. Nothing asked for was
    /// done.
    Final(Box<StoredRequest>),
    /// No such request.
    Unknown,
}

/// Why nothing was decided.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Storage(e) => e.into(),
            DecideError::Sign(e) => {
                tracing::error!(error = %e, "cannot sign a decision");
                ApiError::internal("the decision could not be signed; nothing was changed")
            }
        }
    }
}

/// Decides `status` on `request` (as read by the caller), for `by`.
///
/// A request whose time ran out is recorded as expired instead, in this
/// call, and answered as [`Outcome::Final`]. So is a request decided
/// meanwhile (another tab, the expiry job, another replica): the first
/// decision stands.
pub async fn decide(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    by: By<'_>,
) -> Result<Outcome, DecideError> {
    let now = state.now_ms();
    // The owner decides through the link they opened: once a resend has
    // replaced it, it decides nothing, as it no longer shows anything.
    let link = matches!(by, By::Owner(_)).then(|| request.token_hash.clone());
    let mut current = request.clone();
    // Twice at most: a request read as pending may pass its time before
    // the write, which then records its expiry.
    for _ in 0..2 {
        if !current.status.can_become(status) {
            if status == RequestStatus::Pending {
                return Err(SignError::NotADecision.into());
            }
            return Ok(Outcome::Final(Box::new(current)));
        }
        let overdue = now >= current.expires_at && status != RequestStatus::Expired;
        let effective = if overdue {
            RequestStatus::Expired
        } else {
            status
        };
        match record(state, &current, effective, by, now, link.as_deref()).await? {
            Recorded::Now(decision) if !overdue => return Ok(Outcome::Now(decision)),
            Recorded::Now(decision) => {
                return Ok(Outcome::Final(Box::new(decided(current, decision))))
            }
            Recorded::Refused(None) => return Ok(Outcome::Unknown),
            // Still pending and not overdue: the link was replaced.
            Recorded::Refused(Some(stored)) if stored.status == RequestStatus::Pending => {
                return Ok(Outcome::Unknown)
            }
            Recorded::Refused(Some(stored)) => current = *stored,
        }
    }
    Ok(Outcome::Final(Box::new(current)))
}

enum Recorded {
    Now(Decision),
    /// Storage refused it: the request as it is, if it exists.
    Refused(Option<Box<StoredRequest>>),
}

/// Signs and writes one decision; counts it and wakes the relay worker.
async fn record(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    by: By<'_>,
    now: i64,
    link: Option<&[u8]>,
) -> Result<Recorded, DecideError> {
    let method = if status == RequestStatus::Expired {
        By::Expiry.method()
    } else {
        by.method()
    };
    let mut decision = document::sign(state, request, status, now, method)?;
    decision.link = link.map(<[u8]>::to_vec);
    let word = decision_word(status).unwrap_or("none");
    let mut detail = json!({"decision": word, "decision_id": decision.decision_id});
    let actor = if status == RequestStatus::Expired {
        detail["why"] = json!("no answer before expires_at");
        By::Expiry.actor()
    } else {
        by.actor()
    };
    let audit = NewAudit::new(AuditKind::Decided, Some(actor), detail);
    let rows = rows_for(&state.config, &request.identity_server, &decision);
    match state
        .repo
        .decide(&request.id, &decision, &audit, &rows)
        .await?
    {
        Decided::Now => {
            state.metrics.decided(word);
            if !rows.is_empty() {
                state.relay_wake.notify_one();
            }
            tracing::info!(request_id = %request.id, decision = word, by = actor, "decided");
            Ok(Recorded::Now(decision))
        }
        Decided::AlreadyFinal(stored) => Ok(Recorded::Refused(stored)),
    }
}

/// `request` with `decision` recorded on it.
fn decided(mut request: StoredRequest, decision: Decision) -> StoredRequest {
    request.status = decision.status;
    request.decided_at = Some(decision.at);
    request.decision_id = Some(decision.decision_id);
    request.decision_doc = Some(decision.document);
    request
}

/// Records `expire` for pending requests past their time, at most `limit`
/// per call, with their webhook rows; returns how many. Nothing is unbound.
pub async fn expire_due(state: &AppState, limit: i64) -> Result<usize, StorageError> {
    let due = state.repo.overdue(state.now_ms(), limit).await?;
    let mut expired = 0;
    for request in due {
        match decide(state, &request, RequestStatus::Expired, By::Expiry).await {
            Ok(Outcome::Now(_)) => expired += 1,
            Ok(_) => {}
            // One request that cannot be expired does not stop the others.
            Err(e) => {
                tracing::error!(request_id = %request.id, error = %e, "cannot record an expiry; skipped");
            }
        }
    }
    Ok(expired)
}
