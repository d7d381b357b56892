//! The admin API's types: what `/_assent/v1/admin/…` answers and accepts.

use crate::{Initiator, RequestStatus, ThreePid};
use serde::{Deserialize, Serialize};

/// The header every state-changing admin call made with the session cookie
/// must carry (any value). A cross-site form cannot set it, and a
/// cross-origin script cannot send it without a CORS preflight Assent refuses.
pub const CSRF_HEADER: &str = "x-assent-csrf";

/// Counting stops here, so a list costs the same at any table size.
pub const COUNT_CAP: i64 = 10_000;

/// Most requests one page of the admin list holds.
pub const MAX_PAGE: u32 = 200;

/// `POST /_assent/v1/admin/session`: sign in with an admin token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub token: String,
}

/// Who is calling: `GET /_assent/v1/admin/whoami`, and the answer to signing in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Whoami {
    /// The first 8 hex digits of the SHA-256 of the admin token used.
    pub token_id: String,
    /// `token` (bearer header) or `session` (the console's cookie).
    pub via: String,
    /// When the session ends (milliseconds since the Unix epoch).
    pub session_expires_at_ms: Option<i64>,
}

/// A request as the admin list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminRequest {
    pub id: String,
    pub status: RequestStatus,
    /// `gateway`, `integrated`, `demo` or `owner_proven`.
    pub source: String,
    pub identity_server: String,
    /// The homeserver that asked (verified by its signature in gateway mode).
    pub requesting_server: String,
    pub mxid: String,
    pub threepid: ThreePid,
    pub initiator: Initiator,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    /// On a tombstone: when its personal data was deleted (its `mxid` and
    /// `threepid.address` are empty since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at_ms: Option<i64>,
}

/// Requests per status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCounts {
    pub pending: i64,
    pub approved: i64,
    pub denied: i64,
    pub expired: i64,
    pub cancelled: i64,
}

impl StatusCounts {
    pub fn get(&self, status: RequestStatus) -> i64 {
        match status {
            RequestStatus::Pending => self.pending,
            RequestStatus::Approved => self.approved,
            RequestStatus::Denied => self.denied,
            RequestStatus::Expired => self.expired,
            RequestStatus::Cancelled => self.cancelled,
        }
    }

    pub fn add(&mut self, status: RequestStatus, n: i64) {
        let slot = match status {
            RequestStatus::Pending => &mut self.pending,
            RequestStatus::Approved => &mut self.approved,
            RequestStatus::Denied => &mut self.denied,
            RequestStatus::Expired => &mut self.expired,
            RequestStatus::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    pub fn total(&self) -> i64 {
        RequestStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// `GET /_assent/v1/admin/requests`: one page, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestList {
    pub requests: Vec<AdminRequest>,
    /// Pass as `from` for the next page; absent on the last page.
    pub next: Option<String>,
    /// Requests matching the filters and search, per status (the status
    /// filter itself left out, so every tab shows its count). Counting stops
    /// at [`COUNT_CAP`] per status (5 × that in all when searching).
    pub counts: StatusCounts,
    /// False when a count reached the cap: the counts then mean "at least".
    pub counts_complete: bool,
}

/// One event of a request's audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// `received`, `email_sent`, `viewed`, `decided`, `relay_delivered`, `admin_resend`, …
    pub kind: String,
    /// `system`, `owner`, `admin:<token id>`, `email`, `relay`, a server name.
    pub actor: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// An email or relay queued for a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboxEntry {
    pub id: i64,
    /// `email` or `relay`.
    pub kind: String,
    /// For relays: `replay`, `sydent-internal` or `webhook`.
    pub sink: Option<String>,
    /// `pending`, `done` or `given_up`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub requeued_at_ms: Option<i64>,
}

/// `GET /_assent/v1/admin/requests/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestDetail {
    pub request: AdminRequest,
    /// The key that signed the intake (`ed25519:…`).
    pub origin_key_id: Option<String>,
    pub verified_at_ms: Option<i64>,
    pub reason: Option<String>,
    pub callback_url: Option<String>,
    /// The address as the request spelt it, when it used look-alike
    /// characters (it differs from the stored, case-folded address beyond
    /// ASCII case).
    #[serde(default)]
    pub address_as_sent: Option<String>,
    /// Repeats of the request that arrived while it was pending.
    #[serde(default)]
    pub repeats: i64,
    /// The stored intake: method and path (the body is kept for a replay,
    /// not shown; both are deleted once the request has ended and its
    /// relay is done).
    pub intake: Option<String>,
    pub decision_id: Option<String>,
    /// The signed decision document, once decided.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub decision: Option<serde_json::Value>,
    /// Oldest first.
    pub audit: Vec<AuditEntry>,
    pub outbox: Vec<OutboxEntry>,
}

/// `POST /_assent/v1/admin/requests/{id}/retry`: which given-up rows to re-queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// `email` or `relay`; both when absent.
    #[serde(default)]
    pub kind: Option<String>,
}

/// The answer to an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionOutcome {
    pub request_id: String,
    pub status: RequestStatus,
    /// What was done, in words for the console.
    pub message: String,
    /// For `retry`: how many rows were re-queued.
    pub requeued: Option<u64>,
}

/// What is left of a request whose personal data was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tombstone {
    pub id: String,
    pub status: RequestStatus,
    pub identity_server: String,
    pub requesting_server: String,
    /// `email` or `msisdn`.
    pub medium: String,
    pub initiator: Initiator,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub purged_at_ms: i64,
    /// `retention`, or `admin:<token id>` for an administrator's purge.
    pub purged_by: String,
    /// SHA-256 (hex) of the signed decision document, if it had one: a
    /// receipt its owner kept can be matched against it.
    pub decision_sha256: Option<String>,
}

/// Tombstones matching a search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TombstoneList {
    pub tombstones: Vec<Tombstone>,
}

/// `POST /_assent/v1/admin/tombstones/search`: an address (with its
/// medium, `email` when left out) or a Matrix ID, or both. Sent in the body
/// so that it does not end up in access logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TombstoneSearch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mxid: Option<String>,
}

/// One homeserver's requests over the last day and week.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStats {
    pub requesting_server: String,
    pub last_24h: StatusCounts,
    pub last_7d: StatusCounts,
}

/// `GET /_assent/v1/admin/stats/servers`: busiest first (by the last 24 h).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStatsList {
    pub servers: Vec<ServerStats>,
    /// When the figures were taken.
    pub at_ms: i64,
}
