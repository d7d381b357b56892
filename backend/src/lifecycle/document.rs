//! The decision document: what was decided about a request, Matrix-signed
//! (canonical JSON, ed25519) with Assent's key, so that anyone holding the
//! key from `/_assent/v1/keys` can check it.

use crate::state::AppState;
use crate::storage::{Decision, StoredRequest};
use assent_shared::RequestStatus;
use ruma_common::canonical_json::{to_canonical_value, CanonicalJsonValue};
use sha2::{Digest, Sha256};

pub const DOCUMENT_TYPE: &str = "org.assent.decision";
/// 2: with `consent_record`.
pub const DOCUMENT_VERSION: i64 = 2;

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

/// A duration as ISO 8601 (`P90D`, `PT36H`, `PT5M`).
fn iso_duration(duration: std::time::Duration) -> String {
    let minutes = duration.as_secs() / 60;
    if minutes > 0 && minutes.is_multiple_of(24 * 60) {
        format!("P{}D", minutes / (24 * 60))
    } else if minutes > 0 && minutes.is_multiple_of(60) {
        format!("PT{}H", minutes / 60)
    } else {
        format!("PT{}M", minutes.max(1))
    }
}

/// The consent record in the shape of ISO/IEC TS 27560 (its predecessor is
/// Kantara's consent receipt), mapped onto what Assent knows: the
/// controller (the identity server's operator and privacy policy), the
/// person it is about (the address), the purpose and who asked for it, the
/// personal data concerned, the notice, and the event: what was decided,
/// when, and how (`method`).
fn consent_record(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    at: i64,
    decision_id: &str,
    method: &str,
) -> serde_json::Value {
    let is = state.config.identity_server(&request.identity_server);
    let event = match status {
        RequestStatus::Approved => "given",
        RequestStatus::Denied => "refused",
        RequestStatus::Expired => "expired without an answer",
        RequestStatus::Cancelled => "withdrawn by the controller",
        RequestStatus::Pending => "none",
    };
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0)),
    )
    .to_string();
    serde_json::json!({
        "schema": "ISO/IEC TS 27560:2023 consent record, as mapped by Assent",
        "record_id": decision_id,
        "controller": {
            "name": is.map_or_else(|| request.identity_server.clone(), |is| is.operator.clone()),
            "service": is.map_or_else(|| request.identity_server.clone(), |is| is.display_name.clone()),
            "identity_server": request.identity_server,
            "privacy_policy": is.and_then(|is| is.privacy_policy_url.as_ref()).map(|u| u.to_string()),
        },
        "pii_principal": {"medium": request.medium.as_str(), "address": request.address},
        "purpose": {
            "description": format!(
                "Remove the link between {} and the Matrix ID {} at the identity server {}",
                request.address, request.mxid, request.identity_server
            ),
            "requested_by": request.origin,
            "requested_by_key": request.origin_key_id,
            "initiator": request.initiator.as_str(),
        },
        "personal_data": [request.medium.as_str(), "matrix_id"],
        "notice": {
            "retention": iso_duration(state.config.retention),
            "presented_at": request.created_at,
        },
        "event": {"type": event, "time": time, "time_ms": at, "method": method},
    })
}

/// Builds and signs the decision `status` on `request`, made at `at`
/// through `method` (`consent page`, `administrator`, …).
pub fn sign(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    at: i64,
    method: &str,
) -> Result<Decision, SignError> {
    let word = decision_word(status).ok_or(SignError::NotADecision)?;
    let decision_id = new_decision_id(state);
    let record = consent_record(state, request, status, at, &decision_id, method);
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
        "consent_record": record,
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
