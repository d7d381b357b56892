//! The decision document: what was decided about a request, Matrix-signed
//! (canonical JSON, ed25519) with Assent's key, so that anyone holding the
//! key from `/_assent/v1/keys` can check it.

use crate::app::AppState;
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh decision id: `dec_` + creation time + 64 random bits.
pub fn new_decision_id(state: &AppState) -> String {
    use std::fmt::Write;
    let mut id = format!("dec_{:012x}", state.now_ms().max(0));
    for b in state.random_bytes::<8>() {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// Builds and signs the decision `status` on `request`, made at `at`.
pub fn decide(
    state: &AppState,
    request: &StoredRequest,
    status: RequestStatus,
    at: i64,
) -> Result<Decision, String> {
    let word = decision_word(status).ok_or("a decision cannot be `pending`")?;
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
        "intake_sha256": request.raw.as_ref().map(|raw| hex(&Sha256::digest(&raw.body))),
    });
    let CanonicalJsonValue::Object(mut object) =
        to_canonical_value(value).map_err(|e| e.to_string())?
    else {
        return Err("the decision document is not an object".to_owned());
    };
    state
        .key
        .sign_json(&state.config.server_name, &mut object)
        .map_err(|e| e.to_string())?;
    let document = serde_json::to_string(&object).map_err(|e| e.to_string())?;
    Ok(Decision {
        status,
        decision_id,
        document,
        at,
    })
}
