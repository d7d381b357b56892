//! Storage: the repository the handlers and workers talk to, with one sqlx
//! implementation per database. Both run the same SQL (SQLite understands
//! `$1` placeholders too) except where the dialects differ, and the same test
//! suite runs against both.

use assent_shared::{Initiator, Medium, RequestStatus};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub mod batch;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

pub use postgres::PgRepository;
pub use sqlite::SqliteRepository;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("the same request kept changing under concurrent updates; try again")]
    Contended,
    #[error("the database writer failed: {0}")]
    Writer(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

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

    fn parse(text: &str) -> Result<Self> {
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
}

/// An event for a request's audit trail.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    pub kind: String,
    /// Who acted: `system`, `owner`, `admin:<token id>`, a server name.
    pub actor: Option<String>,
    pub detail: serde_json::Value,
}

impl NewAudit {
    pub fn new(kind: &str, actor: Option<&str>, detail: serde_json::Value) -> Self {
        NewAudit {
            kind: kind.to_owned(),
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

    fn parse(text: &str) -> Result<Self> {
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

    fn parse(text: &str) -> Result<Self> {
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

/// Everything the handlers and workers need from storage.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// Which database this is, for logs and `/health`.
    fn kind(&self) -> &'static str;

    async fn ping(&self) -> Result<()>;

    /// Stores new pending requests, each with its first audit event and
    /// outbox rows, in one transaction; a request whose twin is already
    /// pending joins it instead. Result `i` answers `batch[i]`.
    async fn insert_requests(&self, batch: &[NewHold]) -> Result<Vec<Inserted>>;

    /// [`Repository::insert_requests`] for one request.
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
    /// [`Repository::insert_requests`]) only when no request for its key
    /// exists and fewer than `limit` requests for its address were created
    /// after `since`; otherwise stores nothing and answers
    /// [`HoldNew::Known`]. SQLite checks and writes in one transaction; this
    /// default looks up first, then inserts (a twin that became pending in
    /// between is still caught by the insert).
    async fn hold_if_new(&self, hold: NewHold, since: i64, limit: i64) -> Result<HoldNew> {
        let lookup = self.intake_lookup(&hold.request.key(), since).await?;
        if lookup.latest.is_some() || lookup.recent_for_address >= limit {
            return Ok(HoldNew::Known);
        }
        match only(self.insert_requests(std::slice::from_ref(&hold)).await?)? {
            Inserted::Created => Ok(HoldNew::Created),
            Inserted::JoinedPending(_) => Ok(HoldNew::Known),
        }
    }

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

    async fn append_audit(&self, request_id: &str, at: i64, event: &NewAudit) -> Result<()>;

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

    async fn audit_trail(&self, request_id: &str) -> Result<Vec<AuditEvent>>;

    async fn outbox_for(&self, request_id: &str) -> Result<Vec<OutboxRow>>;

    /// Leases up to `limit` due rows of `kind` to `owner` until `now + lease_ms`.
    /// A row is leased to one owner at a time, across processes.
    async fn claim_outbox(
        &self,
        kind: OutboxKind,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>>;

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

    /// Stores a new session and forgets sessions that ended before its start.
    async fn create_session(&self, session: &AdminSession) -> Result<()>;

    /// The session whose cookie hashes to `id_hash`, unless it ended by `now`.
    async fn session(&self, id_hash: &[u8], now: i64) -> Result<Option<AdminSession>>;

    /// Ends a session. False when there was none.
    async fn delete_session(&self, id_hash: &[u8]) -> Result<bool>;
}

pub type Repo = Arc<dyn Repository>;

/// The one result of a batch call made for one item.
pub(crate) fn only<T>(mut results: Vec<T>) -> Result<T> {
    match (results.pop(), results.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(StorageError::Corrupt(
            "a call for one item did not give one result".to_owned(),
        )),
    }
}

/// Opens (creating where needed) the database named by `url` and brings its
/// schema up to date.
pub async fn connect(url: &str) -> Result<Repo> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgRepository::connect(url).await?))
    } else {
        let sqlite = Arc::new(SqliteRepository::connect(url).await?);
        Ok(Arc::new(batch::Batched::new(sqlite)?))
    }
}

const REQUEST_COLUMNS: &str = "id, source, identity_server, origin, origin_key_id, verified_at, mxid, medium, address, \
     initiator, reason, callback_url, status, token_hash, created_at, expires_at, decided_at, decision_id, \
     decision_doc, raw_method, raw_path, raw_headers, raw_body, updated_at, address_as_sent, repeats";

/// Deletes a request's raw intake (`$1`: its id); the callers add when.
const RELEASE_RAW: &str = "UPDATE requests SET raw_method = NULL, raw_path = NULL, \
     raw_headers = NULL, raw_body = NULL WHERE id = $1";

/// No relay of request `$1` is still to be sent.
const NO_OPEN_RELAY: &str = "NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = $1 \
     AND outbox.kind = 'relay' AND outbox.state = 'pending')";

/// A search matching at least this many requests is listed by walking the
/// newest-first index instead of sorting its matches.
const WALK_AFTER: i64 = 2_000;

const OUTBOX_COLUMNS: &str =
    "id, request_id, kind, sink, idempotency_key, payload, state, attempts, next_attempt_at, \
     lease_owner, lease_until, last_error, created_at, updated_at, requeued_at";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {e}"))
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// The repository body, the same for every database: `$pool` is the sqlx
/// pool type, `$claim` the dialect's SQL for leasing outbox rows, `$bytes`
/// how to compare text byte by byte (prefix search), and `$walk`,
/// `$by_address`, `$by_expiry` the index hints SQLite needs (it keeps no
/// statistics, and may otherwise pick an index that scans a whole identity
/// server); PostgreSQL's planner has statistics and gets none.
macro_rules! sql_repository {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::Repository for $name {
            fn kind(&self) -> &'static str {
                $kind
            }

            async fn ping(&self) -> $crate::storage::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_requests(
                &self,
                batch: &[$crate::storage::NewHold],
            ) -> $crate::storage::Result<Vec<$crate::storage::Inserted>> {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                'attempt: for _attempt in 0..3 {
                    let _turn = self.write_turn().await;
                    let mut tx = self.writer.begin().await?;
                    let mut insert = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new(
                        "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, mxid, \
                         medium, address, initiator, reason, callback_url, status, token_hash, created_at, expires_at, \
                         raw_method, raw_path, raw_headers, raw_body, updated_at, address_as_sent) ",
                    );
                    insert.push_values(batch, |mut row, hold| {
                        let r = &hold.request;
                        let headers = r
                            .raw
                            .as_ref()
                            .map(|raw| serde_json::to_string(&raw.headers).unwrap_or_else(|_| "[]".to_owned()));
                        row.push_bind(r.id.as_str())
                            .push_bind(r.source.as_str())
                            .push_bind(r.identity_server.as_str())
                            .push_bind(r.origin.as_str())
                            .push_bind(r.origin_key_id.as_deref())
                            .push_bind(r.verified_at)
                            .push_bind(r.mxid.as_str())
                            .push_bind(r.medium.as_str())
                            .push_bind(r.address.as_str())
                            .push_bind(r.initiator.as_str())
                            .push_bind(r.reason.as_deref())
                            .push_bind(r.callback_url.as_deref())
                            .push("'pending'")
                            .push_bind(r.token_hash.as_slice())
                            .push_bind(r.created_at)
                            .push_bind(r.expires_at)
                            .push_bind(r.raw.as_ref().map(|raw| raw.method.as_str()))
                            .push_bind(r.raw.as_ref().map(|raw| raw.path.as_str()))
                            .push_bind(headers)
                            .push_bind(r.raw.as_ref().map(|raw| raw.body.as_slice()))
                            .push_bind(r.created_at)
                            .push_bind(r.address_as_sent.as_deref());
                    });
                    insert.push(
                        " ON CONFLICT (identity_server, origin, mxid, medium, address) WHERE status = 'pending' \
                         DO NOTHING RETURNING id",
                    );
                    let created: std::collections::HashSet<String> = insert
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|row| row.try_get::<String, _>("id"))
                        .collect::<Result<_, _>>()?;
                    let mut results = Vec::with_capacity(batch.len());
                    for hold in batch {
                        let r = &hold.request;
                        if created.contains(&r.id) {
                            results.push($crate::storage::Inserted::Created);
                            continue;
                        }
                        let sql = format!(
                            "SELECT {} FROM requests WHERE identity_server = $1 AND origin = $2 AND mxid = $3 \
                             AND medium = $4 AND address = $5 AND status = 'pending'",
                            $crate::storage::REQUEST_COLUMNS
                        );
                        let existing = sqlx::query(&sql)
                            .bind(&r.identity_server)
                            .bind(&r.origin)
                            .bind(&r.mxid)
                            .bind(r.medium.as_str())
                            .bind(&r.address)
                            .fetch_optional(&mut *tx)
                            .await?;
                        match existing {
                            Some(row) => results.push($crate::storage::Inserted::JoinedPending(Box::new(request_from_row(&row)?))),
                            // Decided between our INSERT and SELECT: try again.
                            None => {
                                tx.rollback().await?;
                                continue 'attempt;
                            }
                        }
                    }
                    let fresh: Vec<&$crate::storage::NewHold> =
                        batch.iter().filter(|hold| created.contains(&hold.request.id)).collect();
                    if !fresh.is_empty() {
                        let mut audit = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new(
                            "INSERT INTO audit_events (request_id, at, kind, actor, detail) ",
                        );
                        audit.push_values(&fresh, |mut row, hold| {
                            row.push_bind(hold.request.id.as_str())
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.audit.kind.as_str())
                                .push_bind(hold.audit.actor.as_deref())
                                .push_bind(hold.audit.detail.to_string());
                        });
                        audit.build().execute(&mut *tx).await?;
                    }
                    let outbox: Vec<(&$crate::storage::NewHold, &$crate::storage::NewOutbox)> = fresh
                        .iter()
                        .flat_map(|hold| hold.outbox.iter().map(move |row| (*hold, row)))
                        .collect();
                    if !outbox.is_empty() {
                        let mut insert = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new(
                            "INSERT INTO outbox (request_id, kind, sink, idempotency_key, payload, state, attempts, \
                             next_attempt_at, created_at, updated_at) ",
                        );
                        insert.push_values(&outbox, |mut row, (hold, out)| {
                            row.push_bind(hold.request.id.as_str())
                                .push_bind(out.kind.as_str())
                                .push_bind(out.sink.as_deref())
                                .push_bind(out.idempotency_key.as_str())
                                .push_bind(out.payload.to_string())
                                .push("'pending'")
                                .push("0")
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.request.created_at);
                        });
                        insert.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    return Ok(results);
                }
                Err($crate::storage::StorageError::Contended)
            }

            async fn overdue(&self, now: i64, limit: i64) -> $crate::storage::Result<Vec<$crate::storage::StoredRequest>> {
                let sql = format!(
                    "SELECT {} FROM requests{} WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
                    $crate::storage::REQUEST_COLUMNS,
                    $by_expiry
                );
                let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(request_from_row).collect()
            }

            async fn request(&self, id: &str) -> $crate::storage::Result<Option<$crate::storage::StoredRequest>> {
                let sql = format!("SELECT {} FROM requests WHERE id = $1", $crate::storage::REQUEST_COLUMNS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(request_from_row).transpose()
            }

            async fn request_by_token_hash(
                &self,
                token_hash: &[u8],
            ) -> $crate::storage::Result<Option<$crate::storage::StoredRequest>> {
                let sql = format!("SELECT {} FROM requests WHERE token_hash = $1", $crate::storage::REQUEST_COLUMNS);
                let row = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
                row.as_ref().map(request_from_row).transpose()
            }

            async fn intake_lookup(
                &self,
                key: &$crate::storage::RequestKey<'_>,
                since: i64,
            ) -> $crate::storage::Result<$crate::storage::IntakeLookup> {
                let columns: Vec<String> = $crate::storage::REQUEST_COLUMNS
                    .split(',')
                    .map(|c| format!("r.{}", c.trim()))
                    .collect();
                let sql = format!(
                    "SELECT {}, a.n AS recent_n, a.oldest AS recent_oldest FROM \
                     (SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM requests \
                      WHERE medium = $4 AND address = $5 AND created_at > $6) AS a \
                     LEFT JOIN requests AS r ON r.id = \
                     (SELECT id FROM requests{by_address} WHERE identity_server = $1 AND origin = $2 AND mxid = $3 \
                      AND medium = $4 AND address = $5 \
                      ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, created_at DESC, id DESC LIMIT 1)",
                    columns.join(", "),
                    // SQLite has no statistics: named, the address index is
                    // used, not one that scans a whole identity server.
                    by_address = $by_address
                );
                let row = sqlx::query(&sql)
                    .bind(key.identity_server)
                    .bind(key.origin)
                    .bind(key.mxid)
                    .bind(key.medium.as_str())
                    .bind(key.address)
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?;
                let latest = match row.try_get::<Option<String>, _>("id")? {
                    Some(_) => Some(request_from_row(&row)?),
                    None => None,
                };
                Ok($crate::storage::IntakeLookup {
                    latest,
                    recent_for_address: row.try_get::<i64, _>("recent_n")?,
                    oldest_recent: row.try_get::<Option<i64>, _>("recent_oldest")?,
                })
            }

            async fn decide(
                &self,
                request_id: &str,
                d: &$crate::storage::Decision,
                audit: &$crate::storage::NewAudit,
                outbox: &[$crate::storage::NewOutbox],
            ) -> $crate::storage::Result<$crate::storage::Decided> {
                if d.status == assent_shared::RequestStatus::Pending {
                    return Err($crate::storage::StorageError::Corrupt("a decision cannot be `pending`".to_owned()));
                }
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE requests SET status = $2, decided_at = $3, decision_id = $4, decision_doc = $5, updated_at = $3 \
                     WHERE id = $1 AND status = 'pending' AND (expires_at > $3 OR $2 IN ('expired', 'cancelled'))",
                )
                .bind(request_id)
                .bind(d.status.as_str())
                .bind(d.at)
                .bind(&d.decision_id)
                .bind(&d.document)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    tx.rollback().await?;
                    let current = self.request(request_id).await?;
                    return Ok($crate::storage::Decided::AlreadyFinal(current.map(Box::new)));
                }
                insert_audit(&mut tx, request_id, d.at, audit).await?;
                for row in outbox {
                    insert_outbox(&mut tx, request_id, d.at, row).await?;
                }
                // With no relay to send, the raw intake goes at once.
                sqlx::query(&format!("{} AND {}", $crate::storage::RELEASE_RAW, $crate::storage::NO_OPEN_RELAY))
                    .bind(request_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::storage::Decided::Now)
            }

            async fn replace_token(
                &self,
                request_id: &str,
                token_hash: &[u8],
                at: i64,
                audit: &$crate::storage::NewAudit,
                outbox: &[$crate::storage::NewOutbox],
            ) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE requests SET token_hash = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
                )
                .bind(request_id)
                .bind(token_hash)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_audit(&mut tx, request_id, at, audit).await?;
                for row in outbox {
                    insert_outbox(&mut tx, request_id, at, row).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn append_audit(
                &self,
                request_id: &str,
                at: i64,
                event: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                insert_audit(&mut tx, request_id, at, event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn count_repeat(&self, request_id: &str) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                sqlx::query("UPDATE requests SET repeats = repeats + 1 WHERE id = $1 AND status = 'pending'")
                    .bind(request_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn record_proven(
                &self,
                r: &$crate::storage::NewRequest,
                audit: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, mxid, \
                     medium, address, initiator, reason, callback_url, status, token_hash, created_at, expires_at, \
                     decided_at, updated_at, address_as_sent) \
                     VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8, NULL, NULL, 'approved', $9, $10, $10, $10, $10, $11)",
                )
                .bind(r.id.as_str())
                .bind(r.source.as_str())
                .bind(r.identity_server.as_str())
                .bind(r.origin.as_str())
                .bind(r.mxid.as_str())
                .bind(r.medium.as_str())
                .bind(r.address.as_str())
                .bind(r.initiator.as_str())
                .bind(r.token_hash.as_slice())
                .bind(r.created_at)
                .bind(r.address_as_sent.as_deref())
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, &r.id, r.created_at, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn release_raw(&self, request_id: &str) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let done = sqlx::query(&format!(
                    "{} AND status <> 'pending' AND raw_method IS NOT NULL AND {}",
                    $crate::storage::RELEASE_RAW,
                    $crate::storage::NO_OPEN_RELAY
                ))
                .bind(request_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn audit_trail(&self, request_id: &str) -> $crate::storage::Result<Vec<$crate::storage::AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, request_id, at, kind, actor, detail FROM audit_events WHERE request_id = $1 ORDER BY id",
                )
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::storage::AuditEvent {
                            id: row.try_get("id")?,
                            request_id: row.try_get("request_id")?,
                            at: row.try_get("at")?,
                            kind: row.try_get("kind")?,
                            actor: row.try_get("actor")?,
                            detail: $crate::storage::parse_json("audit detail", &row.try_get::<String, _>("detail")?)?,
                        })
                    })
                    .collect()
            }

            async fn outbox_for(&self, request_id: &str) -> $crate::storage::Result<Vec<$crate::storage::OutboxRow>> {
                let sql = format!(
                    "SELECT {} FROM outbox WHERE request_id = $1 ORDER BY id",
                    $crate::storage::OUTBOX_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(request_id).fetch_all(&self.pool).await?;
                rows.iter().map(outbox_from_row).collect()
            }

            async fn claim_outbox(
                &self,
                kind: $crate::storage::OutboxKind,
                owner: &str,
                now: i64,
                lease_ms: i64,
                limit: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::OutboxRow>> {
                let _turn = self.write_turn().await;
                let sql = format!($claim, cols = $crate::storage::OUTBOX_COLUMNS);
                let mut rows = sqlx::query(&sql)
                    .bind(owner)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(kind.as_str())
                    .bind(limit)
                    .fetch_all(&self.writer)
                    .await?
                    .iter()
                    .map(outbox_from_row)
                    .collect::<$crate::storage::Result<Vec<_>>>()?;
                rows.sort_by_key(|row| (row.next_attempt_at, row.id));
                Ok(rows)
            }

            async fn finish_outbox(
                &self,
                id: i64,
                owner: &str,
                result: &$crate::storage::AttemptResult,
                now: i64,
                audit: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<bool> {
                use $crate::storage::{AttemptResult, OutboxState};
                let (state, next, error) = match result {
                    AttemptResult::Done => (OutboxState::Done, None, None),
                    AttemptResult::RetryAt { at, error } => (OutboxState::Pending, Some(*at), Some(error.as_str())),
                    AttemptResult::GiveUp { error } => (OutboxState::GivenUp, None, Some(error.as_str())),
                };
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE outbox SET state = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
                     last_error = COALESCE($5, last_error), lease_owner = NULL, lease_until = NULL, updated_at = $6 \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'pending' RETURNING request_id",
                )
                .bind(id)
                .bind(owner)
                .bind(state.as_str())
                .bind(next)
                .bind(error)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = updated else {
                    tx.rollback().await?;
                    return Ok(false);
                };
                let request_id: String = row.try_get("request_id")?;
                insert_audit(&mut tx, &request_id, now, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_requests(
                &self,
                filter: &$crate::storage::ListFilter,
                after: Option<&$crate::storage::ListCursor>,
                limit: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::RequestSummary>> {
                // A search that matches few requests is fastest through the
                // prefixes' indexes, then sorted; one that matches many, by
                // walking the newest-first index until the page is full
                // (`$walk` makes SQLite do that; PostgreSQL has statistics).
                let mut walk = "";
                if !filter.prefixes.is_empty() {
                    let mut probe = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new(
                        "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM requests WHERE 1 = 1",
                    );
                    push_filter(&mut probe, filter, true);
                    probe.push(" LIMIT ").push_bind($crate::storage::WALK_AFTER).push(") AS m");
                    let matches: i64 = probe.build().fetch_one(&self.pool).await?.try_get("n")?;
                    if matches >= $crate::storage::WALK_AFTER {
                        walk = $walk;
                    }
                }
                let mut query = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new(format!(
                    "SELECT id, source, status, identity_server, origin, mxid, medium, address, initiator, \
                     created_at, expires_at, decided_at FROM requests{walk} WHERE 1 = 1"
                ));
                push_filter(&mut query, filter, true);
                if let Some(cursor) = after {
                    // A row value: one range on the index, however deep the page.
                    query
                        .push(" AND (created_at, id) < (")
                        .push_bind(cursor.created_at)
                        .push(", ")
                        .push_bind(cursor.id.clone())
                        .push(")");
                }
                query.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit.clamp(0, 1000));
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        use $crate::storage::corrupt;
                        Ok($crate::storage::RequestSummary {
                            id: row.try_get("id")?,
                            source: $crate::storage::Source::parse(&row.try_get::<String, _>("source")?)?,
                            status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt("status", e))?,
                            identity_server: row.try_get("identity_server")?,
                            origin: row.try_get("origin")?,
                            mxid: row.try_get("mxid")?,
                            medium: assent_shared::Medium::parse(&row.try_get::<String, _>("medium")?)
                                .map_err(|e| corrupt("medium", e))?,
                            address: row.try_get("address")?,
                            initiator: row.try_get::<String, _>("initiator")?.parse().map_err(|e| corrupt("initiator", e))?,
                            created_at: row.try_get("created_at")?,
                            expires_at: row.try_get("expires_at")?,
                            decided_at: row.try_get("decided_at")?,
                        })
                    })
                    .collect()
            }

            async fn count_requests(
                &self,
                filter: &$crate::storage::ListFilter,
                cap: i64,
            ) -> $crate::storage::Result<$crate::storage::Counted> {
                use assent_shared::RequestStatus;
                let mut query = sqlx::QueryBuilder::<<$pool as $crate::storage::PoolDb>::Db>::new("");
                let searching = !filter.prefixes.is_empty();
                if searching {
                    // What the search matches, up to 5 × cap, by status: the
                    // prefixes' indexes find the matches, however few.
                    query.push("SELECT status, COUNT(*) AS n FROM (SELECT status FROM requests WHERE 1 = 1");
                    push_filter(&mut query, filter, false);
                    query.push(" LIMIT ").push_bind(cap.saturating_mul(5)).push(") AS matched GROUP BY status");
                } else {
                    // Each status up to cap, each from a covering index.
                    for (i, status) in RequestStatus::ALL.iter().enumerate() {
                        if i > 0 {
                            query.push(" UNION ALL ");
                        }
                        // The statuses are constants: written into the SQL.
                        query.push(format!(
                            "SELECT '{s}' AS status, COUNT(*) AS n FROM (SELECT 1 AS one FROM requests WHERE status = '{s}'",
                            s = status.as_str()
                        ));
                        push_filter(&mut query, filter, false);
                        query.push(" LIMIT ").push_bind(cap).push(") AS s");
                    }
                }
                let rows = query.build().fetch_all(&self.pool).await?;
                let mut counts = Vec::with_capacity(rows.len());
                for row in &rows {
                    let status: RequestStatus = row
                        .try_get::<String, _>("status")?
                        .parse()
                        .map_err(|e| $crate::storage::corrupt("status", e))?;
                    counts.push((status, row.try_get::<i64, _>("n")?));
                }
                let complete = if searching {
                    counts.iter().map(|(_, n)| n).sum::<i64>() < cap.saturating_mul(5)
                } else {
                    counts.iter().all(|(_, n)| *n < cap)
                };
                Ok($crate::storage::Counted { counts, complete })
            }

            async fn origin_counts(&self, day: i64, week: i64) -> $crate::storage::Result<Vec<$crate::storage::OriginCount>> {
                let rows = sqlx::query(
                    "SELECT origin, status, COUNT(*) AS week, \
                     COALESCE(SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END), 0) AS day \
                     FROM requests WHERE created_at >= $2 GROUP BY origin, status",
                )
                .bind(day)
                .bind(week)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::storage::OriginCount {
                            origin: row.try_get("origin")?,
                            status: row
                                .try_get::<String, _>("status")?
                                .parse()
                                .map_err(|e| $crate::storage::corrupt("status", e))?,
                            day: row.try_get::<i64, _>("day")?,
                            week: row.try_get::<i64, _>("week")?,
                        })
                    })
                    .collect()
            }

            async fn outbox_depth(&self) -> $crate::storage::Result<Vec<$crate::storage::OutboxDepth>> {
                use $crate::storage::{OutboxDepth, OutboxKind};
                let rows = sqlx::query(
                    "SELECT kind, state, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
                     WHERE state IN ('pending', 'given_up') GROUP BY kind, state",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut depth: Vec<OutboxDepth> = [OutboxKind::Email, OutboxKind::Relay]
                    .into_iter()
                    .map(|kind| OutboxDepth { kind, pending: 0, oldest_pending_at: None, given_up: 0 })
                    .collect();
                for row in &rows {
                    let kind = OutboxKind::parse(&row.try_get::<String, _>("kind")?)?;
                    let state: String = row.try_get("state")?;
                    let n: i64 = row.try_get("n")?;
                    if let Some(entry) = depth.iter_mut().find(|d| d.kind == kind) {
                        if state == "pending" {
                            entry.pending = n;
                            entry.oldest_pending_at = row.try_get::<Option<i64>, _>("oldest")?;
                        } else {
                            entry.given_up = n;
                        }
                    }
                }
                Ok(depth)
            }

            async fn requeue_given_up(
                &self,
                request_id: &str,
                kind: Option<$crate::storage::OutboxKind>,
                at: i64,
                audit: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<u64> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, requeued_at = $2, \
                     lease_owner = NULL, lease_until = NULL, updated_at = $2 \
                     WHERE request_id = $1 AND state = 'given_up' AND ($3 IS NULL OR kind = $3) \
                     AND (kind <> 'email' OR id = (SELECT MAX(id) FROM outbox AS latest \
                     WHERE latest.request_id = $1 AND latest.kind = 'email'))",
                )
                .bind(request_id)
                .bind(at)
                .bind(kind.map(|k| k.as_str()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                let mut event = audit.clone();
                event.detail["rows"] = serde_json::json!(updated);
                insert_audit(&mut tx, request_id, at, &event).await?;
                tx.commit().await?;
                Ok(updated)
            }

            async fn create_session(&self, session: &$crate::storage::AdminSession) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
                    .bind(session.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(session.id_hash.as_slice())
                    .bind(&session.token_id)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(&self, id_hash: &[u8], now: i64) -> $crate::storage::Result<Option<$crate::storage::AdminSession>> {
                let row = sqlx::query(
                    "SELECT id_hash, token_id, created_at, expires_at FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2",
                )
                .bind(id_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok($crate::storage::AdminSession {
                        id_hash: row.try_get("id_hash")?,
                        token_id: row.try_get("token_id")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, id_hash: &[u8]) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let deleted = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.writer)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }
        }

        /// The `WHERE` terms of an admin list or count (after `WHERE 1 = 1`).
        fn push_filter(
            query: &mut sqlx::QueryBuilder<'_, <$pool as $crate::storage::PoolDb>::Db>,
            filter: &$crate::storage::ListFilter,
            with_status: bool,
        ) {
            if let (true, Some(status)) = (with_status, filter.status) {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(is) = &filter.identity_server {
                query.push(" AND identity_server = ").push_bind(is.clone());
            }
            if let Some(origin) = &filter.origin {
                query.push(" AND origin = ").push_bind(origin.clone());
            }
            if let Some(from) = filter.created_from {
                query.push(" AND created_at >= ").push_bind(from);
            }
            if let Some(before) = filter.created_before {
                query.push(" AND created_at < ").push_bind(before);
            }
            if !filter.prefixes.is_empty() {
                // A range per column and prefix: each one an index range.
                query.push(" AND (");
                let mut first = true;
                for prefix in &filter.prefixes {
                    let end = format!("{prefix}\u{10FFFF}");
                    for column in ["mxid", "address", "origin"] {
                        if !first {
                            query.push(" OR ");
                        }
                        first = false;
                        query
                            .push(format!("({column}{} >= ", $bytes))
                            .push_bind(prefix.clone())
                            .push(format!(" AND {column}{} < ", $bytes))
                            .push_bind(end.clone())
                            .push(")");
                    }
                }
                query.push(")");
            }
        }

        async fn insert_audit(
            tx: &mut sqlx::Transaction<'_, <$pool as $crate::storage::PoolDb>::Db>,
            request_id: &str,
            at: i64,
            event: &$crate::storage::NewAudit,
        ) -> $crate::storage::Result<()> {
            sqlx::query("INSERT INTO audit_events (request_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(request_id)
                .bind(at)
                .bind(&event.kind)
                .bind(&event.actor)
                .bind(event.detail.to_string())
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn insert_outbox(
            tx: &mut sqlx::Transaction<'_, <$pool as $crate::storage::PoolDb>::Db>,
            request_id: &str,
            at: i64,
            row: &$crate::storage::NewOutbox,
        ) -> $crate::storage::Result<()> {
            sqlx::query(
                "INSERT INTO outbox (request_id, kind, sink, idempotency_key, payload, state, attempts, next_attempt_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
            )
            .bind(request_id)
            .bind(row.kind.as_str())
            .bind(&row.sink)
            .bind(&row.idempotency_key)
            .bind(row.payload.to_string())
            .bind(at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        fn request_from_row(row: &$row) -> $crate::storage::Result<$crate::storage::StoredRequest> {
            use $crate::storage::corrupt;
            let raw = match row.try_get::<Option<String>, _>("raw_method")? {
                Some(method) => Some($crate::storage::RawIntake {
                    method,
                    path: row.try_get::<Option<String>, _>("raw_path")?.unwrap_or_default(),
                    headers: serde_json::from_str(&row.try_get::<Option<String>, _>("raw_headers")?.unwrap_or_else(|| "[]".to_owned()))
                        .map_err(|e| corrupt("raw headers", e))?,
                    body: row.try_get::<Option<Vec<u8>>, _>("raw_body")?.unwrap_or_default(),
                }),
                None => None,
            };
            Ok($crate::storage::StoredRequest {
                id: row.try_get("id")?,
                source: $crate::storage::Source::parse(&row.try_get::<String, _>("source")?)?,
                identity_server: row.try_get("identity_server")?,
                origin: row.try_get("origin")?,
                origin_key_id: row.try_get("origin_key_id")?,
                verified_at: row.try_get("verified_at")?,
                mxid: row.try_get("mxid")?,
                medium: assent_shared::Medium::parse(&row.try_get::<String, _>("medium")?).map_err(|e| corrupt("medium", e))?,
                address: row.try_get("address")?,
                address_as_sent: row.try_get("address_as_sent")?,
                initiator: row.try_get::<String, _>("initiator")?.parse().map_err(|e| corrupt("initiator", e))?,
                reason: row.try_get("reason")?,
                callback_url: row.try_get("callback_url")?,
                status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt("status", e))?,
                token_hash: row.try_get("token_hash")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                decided_at: row.try_get("decided_at")?,
                decision_id: row.try_get("decision_id")?,
                decision_doc: row.try_get("decision_doc")?,
                raw,
                updated_at: row.try_get("updated_at")?,
                repeats: row.try_get("repeats")?,
            })
        }

        fn outbox_from_row(row: &$row) -> $crate::storage::Result<$crate::storage::OutboxRow> {
            Ok($crate::storage::OutboxRow {
                id: row.try_get("id")?,
                request_id: row.try_get("request_id")?,
                kind: $crate::storage::OutboxKind::parse(&row.try_get::<String, _>("kind")?)?,
                sink: row.try_get("sink")?,
                idempotency_key: row.try_get("idempotency_key")?,
                payload: $crate::storage::parse_json("outbox payload", &row.try_get::<String, _>("payload")?)?,
                state: $crate::storage::OutboxState::parse(&row.try_get::<String, _>("state")?)?,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                lease_owner: row.try_get("lease_owner")?,
                lease_until: row.try_get("lease_until")?,
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                requeued_at: row.try_get("requeued_at")?,
            })
        }
    };
}

pub(crate) use sql_repository;

/// Names the database type behind a pool, for the macro above.
pub trait PoolDb {
    type Db: sqlx::Database;
}

impl PoolDb for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
}

impl PoolDb for sqlx::PgPool {
    type Db = sqlx::Postgres;
}
