//! PostgreSQL: for several replicas sharing one database.

use super::batch::Writer;
use super::sql::sql_repository;
use super::Result;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::time::Duration;

pub struct PgRepository {
    pool: PgPool,
    /// The same pool: PostgreSQL takes concurrent writers.
    writer: PgPool,
}

impl PgRepository {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgRepository {
            writer: pool.clone(),
            pool,
        })
    }

    /// PostgreSQL writes new requests through the pool, as everything else.
    pub fn batch_writer(&self) -> Option<&Writer> {
        None
    }

    /// [`RetentionStore::release_space`](super::RetentionStore::release_space):
    /// vacuums the tables purges change, so that the space of deleted rows
    /// is reused rather than kept.
    pub(crate) async fn release_space_now(&self) -> Result<bool> {
        sqlx::raw_sql("VACUUM requests, audit_events, outbox")
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// PostgreSQL takes concurrent writers: no turns needed.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }
}

/// The database's clock in Unix milliseconds, which every lease is measured
/// by: replicas whose own clocks disagree still agree on who holds a row.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";

// SKIP LOCKED: replicas claiming at the same moment take different rows
// instead of waiting for each other. Due-ness is the claimer's clock ($3);
// the lease is the database's (the statement's start, once for all rows).
sql_repository!(
    PgRepository,
    PgPool,
    PgRow,
    "postgres",
    "UPDATE outbox SET lease_owner = $1, \
     lease_until = (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::bigint + $2, \
     attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind = $4 AND next_attempt_at <= $3 \
     AND (lease_until IS NULL OR lease_until < (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::bigint) \
     ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {cols}",
    " COLLATE \"C\"",
    "",
    "",
    ""
);
