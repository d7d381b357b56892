//! What crosses the wire between the server and the web front end.

use crate::{Initiator, RequestStatus, ThreePid};
use serde::{Deserialize, Serialize};

/// The error body on every `/_matrix/…` and `/_assent/…` path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub errcode: String,
    pub error: String,
}

/// The identity server that holds the binding, as its operator describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityServerInfo {
    /// The server name homeservers use for it.
    pub name: String,
    pub display_name: String,
    pub operator: String,
    pub privacy_policy_url: Option<String>,
    /// Origins that may frame its consent pages (`frame_ancestors`); the
    /// embedded page talks to its parent only at these.
    #[serde(default)]
    pub embed_origins: Vec<String>,
}

/// `GET /_assent/v1/consent/{token}`: everything the owner is shown.
/// Only what Assent verified or was configured with; nothing the request body
/// alone could forge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentView {
    pub request_id: String,
    pub status: RequestStatus,
    /// The requesting homeserver, as verified by its signature.
    pub requesting_server: String,
    /// Its ASCII (punycode) form, when that differs from the Unicode form
    /// above: the page shows both, with a warning about lookalike letters.
    #[serde(default)]
    pub requesting_server_ascii: Option<String>,
    /// The key that signed the request (`ed25519:…`), when it was signed.
    pub server_key_id: Option<String>,
    /// When the signature was checked (milliseconds since the Unix epoch).
    pub verified_at_ms: Option<i64>,
    pub mxid: String,
    /// The address, as the identity server normalises it (case-folded).
    pub threepid: ThreePid,
    /// The address as the request spelt it, when that differs from
    /// `threepid.address` beyond ASCII case: the request used look-alike
    /// characters, and the page shows both spellings.
    #[serde(default)]
    pub address_as_sent: Option<String>,
    pub identity_server: IdentityServerInfo,
    pub initiator: Initiator,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    /// The longest the request's personal data is kept once it ends
    /// (milliseconds): the operator's `retention`, or longer while a
    /// decision still answers repeats of its unbind.
    #[serde(default)]
    pub retention_ms: i64,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when every dependency answers.
    pub status: String,
    pub database: String,
}

/// `POST /_assent/v1/requests`: an identity server that integrates natively
/// asks Assent to hold an unbind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    pub mxid: String,
    pub threepid: ThreePid,
    /// The homeserver that asked, as the identity server verified it.
    pub requesting_server: String,
    #[serde(default = "unknown_initiator")]
    pub initiator: Initiator,
    /// Why, in the requester's words (shown to the owner as such).
    #[serde(default)]
    pub reason: Option<String>,
    /// Where to POST the signed decision.
    #[serde(default)]
    pub callback_url: Option<String>,
}

fn unknown_initiator() -> Initiator {
    Initiator::Unknown
}

/// `GET /_assent/v1/requests/{id}` (and the answer to creating one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestState {
    pub id: String,
    pub status: RequestStatus,
    pub identity_server: String,
    pub requesting_server: String,
    pub mxid: String,
    pub threepid: ThreePid,
    pub initiator: Initiator,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    /// The signed decision document, once decided.
    pub decision: Option<serde_json::Value>,
    /// On a tombstone: when its personal data was deleted (its `mxid`,
    /// `threepid.address` and `decision` are empty since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at_ms: Option<i64>,
}

/// What the owner of the address decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerDecision {
    Approve,
    Deny,
}

impl OwnerDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerDecision::Approve => "approve",
            OwnerDecision::Deny => "deny",
        }
    }
}

/// `POST /_assent/v1/consent/{token}/decision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: OwnerDecision,
    /// Where the owner decided: `page` (the consent page) or `embed` (the
    /// page inside the identity server's own), for the consent record; a
    /// caller that says nothing is recorded as the decision API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<DecidedVia>,
}

/// Where the owner's app decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedVia {
    Page,
    Embed,
}

/// The answer to a decision: the request's outcome as stored (also on 409,
/// when it was decided before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionOutcome {
    pub request_id: String,
    pub status: RequestStatus,
    pub decided_at_ms: Option<i64>,
    pub decision_id: Option<String>,
}
