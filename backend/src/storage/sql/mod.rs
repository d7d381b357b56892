//! The SQL behind both databases. Each concern's file holds a macro that
//! implements its trait; [`sql_repository`] expands them all for one
//! database, with the few places where the dialects differ given as
//! arguments. Both run the same SQL otherwise (SQLite understands `$1`
//! placeholders too), and the same test suite runs against both.

use super::{only, HoldNew, Inserted, NewHold, RequestStore, Result, StorageError};

pub mod audit;
pub mod listing;
pub mod outbox;
pub mod requests;
pub mod retention;
pub mod sessions;

pub const REQUEST_COLUMNS: &str = "id, source, identity_server, origin, origin_key_id, verified_at, mxid, medium, address, \
     initiator, reason, callback_url, status, token_hash, created_at, expires_at, decided_at, decision_id, \
     decision_doc, raw_method, raw_path, raw_headers, raw_body, updated_at, address_as_sent, repeats, \
     purged_at, purged_by, decision_sha256";

/// Deletes a request's raw intake (`$1`: its id); the callers add when.
pub const RELEASE_RAW: &str = "UPDATE requests SET raw_method = NULL, raw_path = NULL, \
     raw_headers = NULL, raw_body = NULL WHERE id = $1";

/// No relay of request `$1` is still to be sent.
pub const NO_OPEN_RELAY: &str = "NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = $1 \
     AND outbox.kind = 'relay' AND outbox.state = 'pending')";

/// A search matching at least this many requests is listed by walking the
/// newest-first index instead of sorting its matches.
pub const WALK_AFTER: i64 = 2_000;

pub const OUTBOX_COLUMNS: &str =
    "id, request_id, kind, sink, idempotency_key, payload, state, attempts, next_attempt_at, \
     lease_owner, lease_until, last_error, created_at, updated_at, requeued_at";

pub fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {e}"))
}

pub fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

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

/// The repository body, the same for every database: `$pool` is the sqlx
/// pool type, `$claim` the dialect's SQL for leasing outbox rows, `$bytes`
/// how to compare text byte by byte (prefix search), and `$walk`,
/// `$by_address`, `$by_expiry` the index hints SQLite needs (it keeps no
/// statistics, and may otherwise pick an index that scans a whole identity
/// server); PostgreSQL's planner has statistics and gets none.
/// [`RequestStore::hold_if_new`] without a group-commit writer: looks up
/// first, then inserts (a twin that became pending in between is still
/// caught by the insert).
pub async fn hold_if_new(
    store: &(impl RequestStore + ?Sized),
    hold: NewHold,
    since: i64,
    limit: i64,
) -> Result<HoldNew> {
    let lookup = store.intake_lookup(&hold.request.key(), since).await?;
    if lookup.latest.is_some() || lookup.recent_for_address >= limit {
        return Ok(HoldNew::Known);
    }
    match only(store.insert_requests(std::slice::from_ref(&hold)).await?)? {
        Inserted::Created => Ok(HoldNew::Created),
        Inserted::JoinedPending(_) => Ok(HoldNew::Known),
    }
}

macro_rules! sql_repository {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::Repository for $name {
            fn kind(&self) -> &'static str {
                $kind
            }

            async fn ping(&self) -> $crate::storage::Result<()> {
                if self.batch_writer().is_some_and($crate::storage::batch::Writer::is_stopped) {
                    return Err($crate::storage::batch::stopped());
                }
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        $crate::storage::sql::requests::sql_requests!($name, $pool, $row, $kind, $claim, $bytes, $walk, $by_address, $by_expiry);
        $crate::storage::sql::audit::sql_audit!($name, $pool, $row, $kind, $claim, $bytes, $walk, $by_address, $by_expiry);
        $crate::storage::sql::outbox::sql_outbox!($name, $pool, $row, $kind, $claim, $bytes, $walk, $by_address, $by_expiry);
        $crate::storage::sql::listing::sql_listing!($name, $pool, $row, $kind, $claim, $bytes, $walk, $by_address, $by_expiry);
        $crate::storage::sql::sessions::sql_sessions!($name, $pool, $row, $kind, $claim, $bytes, $walk, $by_address, $by_expiry);
        $crate::storage::sql::retention::sql_retention!($name);

        /// The `WHERE` terms of an admin list or count (after `WHERE 1 = 1`).
        fn push_filter(
            query: &mut sqlx::QueryBuilder<'_, <$pool as $crate::storage::sql::PoolDb>::Db>,
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
            tx: &mut sqlx::Transaction<'_, <$pool as $crate::storage::sql::PoolDb>::Db>,
            request_id: &str,
            at: i64,
            event: &$crate::storage::NewAudit,
        ) -> $crate::storage::Result<()> {
            sqlx::query("INSERT INTO audit_events (request_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(request_id)
                .bind(at)
                .bind(event.kind.as_str())
                .bind(&event.actor)
                .bind(event.detail.to_string())
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn insert_outbox(
            tx: &mut sqlx::Transaction<'_, <$pool as $crate::storage::sql::PoolDb>::Db>,
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
            use $crate::storage::sql::corrupt;
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
                purged_at: row.try_get("purged_at")?,
                purged_by: row.try_get("purged_by")?,
                decision_sha256: row.try_get("decision_sha256")?,
            })
        }

        fn outbox_from_row(row: &$row) -> $crate::storage::Result<$crate::storage::OutboxRow> {
            Ok($crate::storage::OutboxRow {
                id: row.try_get("id")?,
                request_id: row.try_get("request_id")?,
                kind: $crate::storage::OutboxKind::parse(&row.try_get::<String, _>("kind")?)?,
                sink: row.try_get("sink")?,
                idempotency_key: row.try_get("idempotency_key")?,
                payload: $crate::storage::sql::parse_json("outbox payload", &row.try_get::<String, _>("payload")?)?,
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
