//! The decision document: what was decided about a request, Matrix-signed
//! (canonical JSON, ed25519) with Assent's key, so that anyone holding the
//! key from `/_assent/v1/keys` can check it.

use crate::state::AppState;
use crate::storage::{Decision, StoredRequest};
use assent_shared::RequestStatus;
use ruma_common::canonical_json::{to_canonical_value, CanonicalJsonValue};
use sha2::{Digest, Sha256};

pub const DOCUMENT_TYPE: &str = "org.assent.decision";
pub const DOCUMENT_VERSION: i64 = 1;

/// The word for a final status in a decision document.
pub fn decision_word(status: RequestStatus) -> Option<&'static str> {
    match status {
        RequestStatus::Approved => Some("approve"),
        RequestStatus::Denied => Some("deny"),
        RequestStatus::Expired => Some("expire"),
        RequestStatus::Cancelled => Some("cancel"),
        RequestStatus::Pending => None,
    }
}

/// Why a decision could not be signed. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("a decision cannot be `pending`")]
    NotADecision,
    #[error("the decision document is not canonical JSON: {0}")]
    Canonical(#[from] ruma_common::canonical_json::CanonicalJsonError),
    #[error("the decision document could not be signed: {0}")]
    Signature(#[from] ruma_signatures::JsonError),
    #[error("the decision document is not an object")]
    NotAnObject,
    #[error("the decision document could not be written: {0}")]
    Write(#[from] serde_json::Error),
}

/// A fresh decision id: `dec_` + creation time + 64 random bits.
pub fn new_decision_id(state: &AppState) -> String {
    format!(
        "dec_{:012x}{}",
        state.now_ms().max(0),
        crate::tokens::hex(&state.random_bytes::<8>())
    )
}

/// Builds and signs the decision `status` on `request`, made at `at`.
pub fn sign(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    at: i64,
) -> Result<Decision, SignError> {
    let word = decision_word(status).ok_or(SignError::NotADecision)?;
    let decision_id = new_decision_id(state);
    let value = serde_json::json!({
        "type": DOCUMENT_TYPE,
        "version": DOCUMENT_VERSION,
        "decision_id": decision_id,
        "request_id": request.id,
        "decision": word,
        "decided_at": at,
        "mxid": request.mxid,
        "threepid": {"medium": request.medium.as_str(), "address": request.address},
        "requesting_server": request.origin,
        "requesting_key_id": request.origin_key_id,
        "identity_server": request.identity_server,
        "intake_sha256": request.raw.as_ref().map(|raw| crate::tokens::hex(&Sha256::digest(&raw.body))),
    });
    let CanonicalJsonValue::Object(mut object) = to_canonical_value(value)? else {
        return Err(SignError::NotAnObject);
    };
    state
        .key
        .sign_json(&state.config.server_name, &mut object)?;
    let document = serde_json::to_string(&object)?;
    Ok(Decision {
        link: None,
        status,
        decision_id,
        document,
        at,
    })
}
