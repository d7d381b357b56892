//! What storage offers, one trait per concern; [`Repository`] is all of
//! them, as the handlers and workers hold it (`Arc<dyn Repository>`).
//! Bring the trait of a concern into scope to call its methods.

use super::model::*;
use super::{only, Result};
use async_trait::async_trait;

/// Requests: holding them, reading them, deciding them.
#[async_trait]
pub trait RequestStore: Send + Sync + 'static {
    /// Stores new pending requests, each with its first audit event and
    /// outbox rows, in one transaction; a request whose twin is already
    /// pending joins it instead. Result `i` answers `batch[i]`.
    async fn insert_requests(&self, batch: &[NewHold]) -> Result<Vec<Inserted>>;

    /// [`RequestStore::insert_requests`] for one request.
    async fn insert_request(
        &self,
        request: &NewRequest,
        audit: &NewAudit,
        outbox: &[NewOutbox],
    ) -> Result<Inserted> {
        let hold = NewHold {
            request: request.clone(),
            audit: audit.clone(),
            outbox: outbox.to_vec(),
        };
        only(self.insert_requests(std::slice::from_ref(&hold)).await?)
    }

    /// Intake's common case in one step: stores `hold` (as
    /// [`RequestStore::insert_requests`]) only when no request for its key
    /// exists and fewer than `limit` requests for its address were created
    /// after `since`; otherwise stores nothing and answers
    /// [`HoldNew::Known`]. SQLite checks and writes in one transaction;
    /// PostgreSQL looks up first, then inserts (a twin that became pending
    /// in between is still caught by the insert).
    async fn hold_if_new(&self, hold: NewHold, since: i64, limit: i64) -> Result<HoldNew>;

    async fn request(&self, id: &str) -> Result<Option<StoredRequest>>;

    async fn request_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<StoredRequest>>;

    /// The request for (identity server, origin, mxid, 3PID): the pending one
    /// if there is one, else the most recent.
    async fn latest_for(&self, key: &RequestKey<'_>) -> Result<Option<StoredRequest>> {
        Ok(self.intake_lookup(key, i64::MAX).await?.latest)
    }

    /// What intake needs to know before holding, in one query: the latest
    /// request for `key` (as [`Repository::latest_for`]) and how many
    /// requests for its address were created after `since`.
    async fn intake_lookup(&self, key: &RequestKey<'_>, since: i64) -> Result<IntakeLookup>;

    /// Pending requests whose time ran out before `now`, oldest first.
    async fn overdue(&self, now: i64, limit: i64) -> Result<Vec<StoredRequest>>;

    /// Moves a pending request to a final state, atomically: the first
    /// decision wins; later ones change nothing and get the stored request.
    async fn decide(
        &self,
        request_id: &str,
        decision: &Decision,
        audit: &NewAudit,
        outbox: &[NewOutbox],
    ) -> Result<Decided>;

    /// Gives a pending request a new consent token (the old link stops
    /// working). False when the request is not pending.
    async fn replace_token(
        &self,
        request_id: &str,
        token_hash: &[u8],
        at: i64,
        audit: &NewAudit,
        outbox: &[NewOutbox],
    ) -> Result<bool>;

    /// Counts one more repeat of a pending request (a repeat adds no audit
    /// event, so a homeserver that repeats cannot grow the trail).
    async fn count_repeat(&self, request_id: &str) -> Result<()>;

    /// Stores a request that is already over: an unbind the owner proved
    /// with the upstream's validation session and the upstream carried out.
    /// Stored as approved, with no decision document (nothing is signed in
    /// the owner's name), no consent token anyone knows, and its first audit
    /// event.
    async fn record_proven(&self, request: &NewRequest, audit: &NewAudit) -> Result<()>;

    /// Deletes the raw intake (headers, with the homeserver's replayable
    /// `Authorization`, and body) of a request that has ended and has no
    /// relay still to send. True when it was deleted now.
    async fn release_raw(&self, request_id: &str) -> Result<bool>;
}

/// The audit trail of each request.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, request_id: &str, at: i64, event: &NewAudit) -> Result<()>;

    async fn audit_trail(&self, request_id: &str) -> Result<Vec<AuditEvent>>;
}

/// The outbox: the email and relay work queued with each state change, leased to the workers.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    async fn outbox_for(&self, request_id: &str) -> Result<Vec<OutboxRow>>;

    /// Leases up to `limit` rows of `kind` due by `now` (the caller's clock)
    /// to `owner` for `lease_ms`, measured by the database's clock: replicas
    /// whose clocks disagree still agree on when a lease ends. A row is
    /// leased to one owner at a time, across processes.
    async fn claim_outbox(
        &self,
        kind: OutboxKind,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>>;

    /// How many milliseconds are left of `owner`'s lease on row `id`, by the
    /// database's clock (negative once it has run out); `None` when `owner`
    /// no longer holds it. A worker asks before every send, so that one that
    /// was paused past its lease does not send what another now owns.
    async fn lease_left(&self, id: i64, owner: &str) -> Result<Option<i64>>;

    /// Records how an attempt ended. False when the lease was lost meanwhile
    /// (another worker owns the row now) and nothing was written.
    async fn finish_outbox(
        &self,
        id: i64,
        owner: &str,
        result: &AttemptResult,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool>;

    /// Pending and given-up rows per outbox.
    async fn outbox_depth(&self) -> Result<Vec<OutboxDepth>>;

    /// Puts a request's given-up outbox rows (of `kind`, or all) back in the
    /// queue, due now, with their attempts counted from zero, and records
    /// `audit` in the same transaction. Of its emails only the latest counts
    /// (an earlier one carries a link a resend has replaced). Returns how
    /// many; none → no audit.
    async fn requeue_given_up(
        &self,
        request_id: &str,
        kind: Option<OutboxKind>,
        at: i64,
        audit: &NewAudit,
    ) -> Result<u64>;
}

/// The admin console's queries over all requests.
#[async_trait]
pub trait ListStore: Send + Sync + 'static {
    /// Up to `limit` requests matching `filter`, newest first, starting
    /// after `after`. Reads only the page, never the whole table.
    async fn list_requests(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: i64,
    ) -> Result<Vec<RequestSummary>>;

    /// How many requests match `filter` (its status ignored), per status,
    /// counting no further than `cap` per status (`5 × cap` in all when
    /// searching), so that the cost does not grow with the table.
    async fn count_requests(&self, filter: &ListFilter, cap: i64) -> Result<Counted>;

    /// Per requesting server and status: requests created since `day` and since `week`.
    async fn origin_counts(&self, day: i64, week: i64) -> Result<Vec<OriginCount>>;
}

/// The admin console's sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session and forgets sessions that ended before its start.
    async fn create_session(&self, session: &AdminSession) -> Result<()>;

    /// The session whose cookie hashes to `id_hash`, unless it ended by `now`.
    async fn session(&self, id_hash: &[u8], now: i64) -> Result<Option<AdminSession>>;

    /// Ends a session. False when there was none.
    async fn delete_session(&self, id_hash: &[u8]) -> Result<bool>;
}

/// Retention: deleting the personal data of ended requests, and the
/// tombstones left.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Up to `limit` ended requests, not yet purged, that `due` says may be
    /// purged now (nothing still to send for them), oldest decision first.
    async fn purge_due(&self, due: &PurgeDue, limit: i64) -> Result<Vec<StoredRequest>>;

    /// Deletes request `id`'s personal data in one transaction: its Matrix
    /// ID, address, reason, callback, decision document and raw intake are
    /// cleared and `tombstone` written in their place; its audit trail and
    /// outbox rows are deleted. Only an ended request with nothing still to
    /// send is purged (whatever its age: the caller decides when).
    async fn purge(&self, id: &str, tombstone: &Tombstone) -> Result<Purged>;

    /// Tombstones whose keyed hash of an address or of a Matrix ID is one
    /// of these, newest first, at most `limit`.
    async fn tombstones(
        &self,
        address_hmac: Option<&[u8]>,
        mxid_hmac: Option<&[u8]>,
        limit: i64,
    ) -> Result<Vec<StoredRequest>>;

    /// Gives the space of deleted rows back, so that what was deleted is
    /// not left in the database's files: SQLite checkpoints its log, frees
    /// pages (incremental vacuum; deleted content is zeroed as it is
    /// deleted) and empties the log; PostgreSQL vacuums the tables. False
    /// when a reader kept SQLite from emptying its log: ask again later.
    async fn release_space(&self) -> Result<bool>;
}

/// Everything the handlers and workers need from storage.
#[async_trait]
pub trait Repository:
    RequestStore + AuditStore + OutboxStore + ListStore + SessionStore + RetentionStore
{
    /// Which database this is, for logs and `/health`.
    fn kind(&self) -> &'static str;

    async fn ping(&self) -> Result<()>;
}
