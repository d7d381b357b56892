//! The types storage takes and gives: requests, audit events, outbox rows,
//! admin sessions and the admin list's filters and figures.

use super::{Result, StorageError};
use assent_shared::{Initiator, Medium, RequestStatus};
use serde::{Deserialize, Serialize};

/// How a request reached Assent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Gateway,
    Integrated,
    Demo,
    /// The owner unbound it themselves through a validation session at the
    /// identity server; recorded, nothing to ask.
    OwnerProven,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gateway => "gateway",
            Source::Integrated => "integrated",
            Source::Demo => "demo",
            Source::OwnerProven => "owner_proven",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "gateway" => Ok(Source::Gateway),
            "integrated" => Ok(Source::Integrated),
            "demo" => Ok(Source::Demo),
            "owner_proven" => Ok(Source::OwnerProven),
            other => Err(StorageError::Corrupt(format!("unknown source `{other}`"))),
        }
    }
}

/// The homeserver's original request, kept byte for byte for a later replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIntake {
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    /// The headers that matter for a replay (`Authorization`, `Content-Type`, …).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A request about to be stored.
#[derive(Clone, Debug)]
pub struct NewRequest {
    pub id: String,
    pub source: Source,
    pub identity_server: String,
    pub origin: String,
    pub origin_key_id: Option<String>,
    pub verified_at: Option<i64>,
    pub mxid: String,
    pub medium: Medium,
    pub address: String,
    /// The address as the request spelt it, when that differs from
    /// `address` beyond ASCII case (look-alike characters).
    pub address_as_sent: Option<String>,
    pub initiator: Initiator,
    pub reason: Option<String>,
    pub callback_url: Option<String>,
    /// SHA-256 of the consent token; the token itself is never stored.
    pub token_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub raw: Option<RawIntake>,
}

impl NewRequest {
    /// What makes another request the same one.
    pub fn key(&self) -> RequestKey<'_> {
        RequestKey {
            identity_server: &self.identity_server,
            origin: &self.origin,
            mxid: &self.mxid,
            medium: self.medium,
            address: &self.address,
        }
    }
}

/// A request to hold, with what is written in the same transaction.
#[derive(Clone, Debug)]
pub struct NewHold {
    pub request: NewRequest,
    pub audit: NewAudit,
    pub outbox: Vec<NewOutbox>,
}

/// See [`Repository::intake_lookup`].
#[derive(Clone, Debug, PartialEq)]
pub struct IntakeLookup {
    pub latest: Option<StoredRequest>,
    /// Requests for the same address created after `since`.
    pub recent_for_address: i64,
    /// When the oldest of those was created.
    pub oldest_recent: Option<i64>,
}

/// What [`Repository::hold_if_new`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldNew {
    /// Stored, with its audit event and outbox rows.
    Created,
    /// Nothing was stored: a request for the same key exists (pending or
    /// decided), or its address used its allowance. The caller looks it up
    /// and answers as a repeat or a limit.
    Known,
}

/// What makes two requests the same request.
#[derive(Clone, Copy, Debug)]
pub struct RequestKey<'a> {
    pub identity_server: &'a str,
    pub origin: &'a str,
    pub mxid: &'a str,
    pub medium: Medium,
    pub address: &'a str,
}

/// A request as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRequest {
    pub id: String,
    pub source: Source,
    pub identity_server: String,
    pub origin: String,
    pub origin_key_id: Option<String>,
    pub verified_at: Option<i64>,
    pub mxid: String,
    pub medium: Medium,
    pub address: String,
    pub address_as_sent: Option<String>,
    pub initiator: Initiator,
    pub reason: Option<String>,
    pub callback_url: Option<String>,
    pub status: RequestStatus,
    pub token_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decision_id: Option<String>,
    pub decision_doc: Option<String>,
    pub raw: Option<RawIntake>,
    pub updated_at: i64,
    /// Repeats of this request that arrived while it was pending.
    pub repeats: i64,
    /// When its personal data was deleted (it is a tombstone since): the
    /// Matrix ID, address and decision document are gone, their keyed
    /// hashes kept.
    pub purged_at: Option<i64>,
    /// Who deleted it: `retention`, or `admin:<token id>`.
    pub purged_by: Option<String>,
    /// The SHA-256 of the decision document it had, once purged.
    pub decision_sha256: Option<Vec<u8>>,
}

/// What an audit event records. Stored as its name (`received`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditKind {
    /// A request was held.
    Received,
    /// The owner opened the consent page (once per visit).
    Viewed,
    /// The request was decided: approve, deny, cancel or expire.
    Decided,
    /// An unbind the owner proved with a validation session was carried out.
    OwnerProven,
    /// The consent link was replaced (the old one stops working).
    TokenReplaced,
    /// An administrator sent a new consent link.
    AdminResend,
    /// An administrator re-queued given-up work.
    AdminRetry,
    /// An email was handed to the mail server, not yet confirmed.
    EmailAttempt,
    /// The mail server took the email.
    EmailSent,
    /// Sending failed; it is tried again.
    EmailFailed,
    /// Sending was given up.
    EmailGivenUp,
    /// The email was not sent: the request ended or its link was replaced.
    EmailSkipped,
    /// A receiver took the decision.
    RelayDelivered,
    /// A receiver refused the decision.
    RelayRefused,
    /// Delivery failed; it is tried again.
    RelayFailed,
    /// Delivery was given up.
    RelayGivenUp,
    /// A sink could not be used (its URL, its answer).
    RelayUnusable,
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AuditKind {
    pub const ALL: [AuditKind; 17] = [
        AuditKind::Received,
        AuditKind::Viewed,
        AuditKind::Decided,
        AuditKind::OwnerProven,
        AuditKind::TokenReplaced,
        AuditKind::AdminResend,
        AuditKind::AdminRetry,
        AuditKind::EmailAttempt,
        AuditKind::EmailSent,
        AuditKind::EmailFailed,
        AuditKind::EmailGivenUp,
        AuditKind::EmailSkipped,
        AuditKind::RelayDelivered,
        AuditKind::RelayRefused,
        AuditKind::RelayFailed,
        AuditKind::RelayGivenUp,
        AuditKind::RelayUnusable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Received => "received",
            AuditKind::Viewed => "viewed",
            AuditKind::Decided => "decided",
            AuditKind::OwnerProven => "owner_proven",
            AuditKind::TokenReplaced => "token_replaced",
            AuditKind::AdminResend => "admin_resend",
            AuditKind::AdminRetry => "admin_retry",
            AuditKind::EmailAttempt => "email_attempt",
            AuditKind::EmailSent => "email_sent",
            AuditKind::EmailFailed => "email_failed",
            AuditKind::EmailGivenUp => "email_given_up",
            AuditKind::EmailSkipped => "email_skipped",
            AuditKind::RelayDelivered => "relay_delivered",
            AuditKind::RelayRefused => "relay_refused",
            AuditKind::RelayFailed => "relay_failed",
            AuditKind::RelayGivenUp => "relay_given_up",
            AuditKind::RelayUnusable => "relay_unusable",
        }
    }
}

/// An event for a request's audit trail.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    pub kind: AuditKind,
    /// Who acted: `system`, `owner`, `admin:<token id>`, a server name.
    pub actor: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn is(&self, kind: AuditKind) -> bool {
        self.kind == kind.as_str()
    }
}

impl NewAudit {
    pub fn new(kind: AuditKind, actor: Option<&str>, detail: serde_json::Value) -> Self {
        NewAudit {
            kind,
            actor: actor.map(str::to_owned),
            detail,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub request_id: String,
    pub at: i64,
    /// An [`AuditKind`]'s name.
    pub kind: String,
    pub actor: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    Email,
    Relay,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Email => "email",
            OutboxKind::Relay => "relay",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "email" => Ok(OutboxKind::Email),
            "relay" => Ok(OutboxKind::Relay),
            other => Err(StorageError::Corrupt(format!(
                "unknown outbox kind `{other}`"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Done,
    GivenUp,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Done => "done",
            OutboxState::GivenUp => "given_up",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(OutboxState::Pending),
            "done" => Ok(OutboxState::Done),
            "given_up" => Ok(OutboxState::GivenUp),
            other => Err(StorageError::Corrupt(format!(
                "unknown outbox state `{other}`"
            ))),
        }
    }
}

/// A side effect to carry out later, written in the same transaction as the
/// state change that calls for it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOutbox {
    pub kind: OutboxKind,
    pub sink: Option<String>,
    /// Unique: the same effect is never queued twice.
    pub idempotency_key: String,
    pub payload: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub request_id: String,
    pub kind: OutboxKind,
    pub sink: Option<String>,
    pub idempotency_key: String,
    pub payload: serde_json::Value,
    pub state: OutboxState,
    /// Attempts started so far, this one included once claimed.
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When an administrator last re-queued it after it was given up.
    pub requeued_at: Option<i64>,
}

/// How an outbox attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptResult {
    Done,
    RetryAt { at: i64, error: String },
    GiveUp { error: String },
}

/// What storing a new request did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    Created,
    /// A request for the same (identity server, origin, mxid, 3PID) was
    /// already pending; nothing new was stored.
    JoinedPending(Box<StoredRequest>),
}

/// The decision to record on a pending request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: RequestStatus,
    pub decision_id: String,
    pub document: String,
    pub at: i64,
    /// The hash of the consent link the decision came through, if one did:
    /// then it is recorded only while that link is the request's own, not
    /// after a resend replaced it.
    pub link: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decided {
    Now,
    /// The request was already decided (or never existed): nothing changed.
    AlreadyFinal(Option<Box<StoredRequest>>),
}

/// Which requests the admin list shows. Every field narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<RequestStatus>,
    pub identity_server: Option<String>,
    /// The requesting homeserver.
    pub origin: Option<String>,
    /// Created at or after (ms).
    pub created_from: Option<i64>,
    /// Created before (ms).
    pub created_before: Option<i64>,
    /// Prefixes: a request matches when its mxid, address or requesting
    /// server starts with one of them.
    pub prefixes: Vec<String>,
}

/// Where a page of the admin list starts: after this request, in the
/// newest-first order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: i64,
    pub id: String,
}

/// A request as the admin list shows it: no token hash, no stored intake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSummary {
    pub id: String,
    pub source: Source,
    pub status: RequestStatus,
    pub identity_server: String,
    pub origin: String,
    pub mxid: String,
    pub medium: Medium,
    pub address: String,
    pub initiator: Initiator,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    /// Set on a tombstone: when its personal data was deleted.
    pub purged_at: Option<i64>,
}

/// Requests per status, and whether every count is exact (else some reached
/// the cap and mean "at least").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub counts: Vec<(RequestStatus, i64)>,
    pub complete: bool,
}

/// Requests from one homeserver with one status: how many were created
/// since the day's start and since the week's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginCount {
    pub origin: String,
    pub status: RequestStatus,
    pub day: i64,
    pub week: i64,
}

/// The open part of one outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxDepth {
    pub kind: OutboxKind,
    pub pending: i64,
    /// When the oldest pending row was queued.
    pub oldest_pending_at: Option<i64>,
    pub given_up: i64,
}

/// A signed-in admin console session. Only the hash of its cookie is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSession {
    pub id_hash: Vec<u8>,
    pub token_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// When an ended request's personal data is due for deletion: each bound is
/// a time (ms); a request qualifies when all that apply to it have passed.
#[derive(Clone, Copy, Debug)]
pub struct PurgeDue {
    /// Ended (decided, and its last relay or email done) before this.
    pub ended_before: i64,
    /// A denial: decided before this (its `deny_cooldown` is over).
    pub denied_before: i64,
    /// An approval or cancellation: decided before this (its `request_ttl`
    /// of answering repeats is over).
    pub answered_before: i64,
    /// Made before this: it no longer counts against its address's hourly
    /// allowance of new holds.
    pub created_before: i64,
}

/// What is left of a request once its personal data is deleted, beside the
/// request id, servers, outcome and times.
#[derive(Clone, Debug)]
pub struct Tombstone {
    pub purged_at: i64,
    /// `retention`, or `admin:<token id>`.
    pub purged_by: String,
    /// Keyed hash of the medium and folded address.
    pub address_hmac: Vec<u8>,
    /// Keyed hash of the Matrix ID.
    pub mxid_hmac: Vec<u8>,
    /// SHA-256 of the decision document, if it had one.
    pub decision_sha256: Option<Vec<u8>>,
}

/// How a purge of one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purged {
    /// Its personal data is gone now.
    Now,
    /// It was purged before.
    Already,
    /// It is still pending, or a relay or email of it is still to be sent.
    NotEnded,
    /// No request has this id.
    Unknown,
}
