//! SQLite (WAL): the default, one file in the data folder.

use super::{sql_repository, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteRepository {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection that writes, so a write never queues behind
    /// readers for a connection nor sleeps in SQLite's busy handler.
    writer: SqlitePool,
}

impl SqliteRepository {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Statement journals and sorts in memory, not in temporary files.
            .pragma("temp_store", "memory")
            // Checkpoints run in the background (below), not inside the
            // commit that happens to cross the threshold.
            .pragma("wal_autocheckpoint", "0")
            // Readers map the file instead of copying pages their caches lost
            // to the writer's commits.
            .pragma("mmap_size", "67108864");
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(pool.clone()));
        Ok(SqliteRepository { pool, writer })
    }
}

/// Copies the write-ahead log into the database file every half second, off
/// the writer's path (a passive checkpoint waits for no one), so the log stays
/// small. Ends when the pool closes.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "SQLite checkpoint failed; will try again");
        }
    }
}

// SQLite has one writer at a time, so a plain UPDATE … RETURNING is already
// exclusive across processes.
sql_repository!(
    SqliteRepository,
    SqlitePool,
    SqliteRow,
    "sqlite",
    "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind = $4 AND next_attempt_at <= $3 \
     AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at, id LIMIT $5) \
     RETURNING {cols}"
);
