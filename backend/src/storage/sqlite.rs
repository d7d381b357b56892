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
        // A file on this machine does not drop connections: no ping before
        // each use (it costs a round trip to the connection's thread).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(pool.clone()));
        Ok(SqliteRepository { pool, writer })
    }
}

/// Past this many frames (about 32 MiB of 4 KiB pages) the log is restarted.
const WAL_RESTART_FRAMES: i64 = 8192;

/// Copies the write-ahead log into the database file every half second, off
/// the writer's path (a passive checkpoint waits for no one). Under sustained
/// writes a passive checkpoint never catches up with the last frame, so the
/// log would never start over and would grow without bound; once it is past
/// [`WAL_RESTART_FRAMES`] a RESTART checkpoint makes the writer wait for the
/// few frames left, so the next commit writes from the start of the file
/// again. Ends when the pool closes.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let result = checkpoint(&pool, WAL_RESTART_FRAMES).await;
        if let Err(e) = result {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "SQLite checkpoint failed; will try again");
        }
    }
}

/// One passive checkpoint, then a RESTART one if the log had more than
/// `restart_after` frames. Returns the log's frame count before.
async fn checkpoint(
    pool: &SqlitePool,
    restart_after: i64,
) -> std::result::Result<i64, sqlx::Error> {
    let frames: i64 = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?
        .try_get(1)?;
    if frames > restart_after {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(pool)
            .await?;
    }
    Ok(frames)
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
     RETURNING {cols}",
    "",
    " INDEXED BY requests_by_created",
    " INDEXED BY requests_by_address_created",
    " INDEXED BY requests_pending_expiry"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames in the log after one small commit on `repo`'s writer.
    async fn frames_after_a_write(repo: &SqliteRepository, n: i64) -> i64 {
        sqlx::query("INSERT INTO audit_events (request_id, at, kind) VALUES ('r', ?, 'probe')")
            .bind(n)
            .execute(&repo.writer)
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&repo.pool)
            .await
            .unwrap()
            .get(1)
    }

    /// Ends `reader`'s snapshot, if any, and starts one at the newest commit.
    async fn renew_snapshot(reader: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>, open: bool) {
        if open {
            sqlx::query("COMMIT").execute(&mut **reader).await.unwrap();
        }
        sqlx::query("BEGIN").execute(&mut **reader).await.unwrap();
        sqlx::query("SELECT count(*) FROM audit_events")
            .fetch_one(&mut **reader)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_long_log_starts_over_under_steady_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let repo = SqliteRepository::connect(&url).await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&repo.writer)
            .await
            .unwrap();
        // A reader that is always inside a snapshot a commit old keeps
        // passive checkpoints from ever reaching the last frame, as on a busy
        // server, so the log never starts over by itself.
        let mut reader = repo.pool.acquire().await.unwrap();
        let mut frames = 0;
        for n in 0..50 {
            renew_snapshot(&mut reader, n > 0).await;
            frames = frames_after_a_write(&repo, n).await;
            assert!(checkpoint(&repo.pool, i64::MAX).await.unwrap() >= frames);
        }
        assert!(frames >= 50, "the log grows commit by commit: {frames}");
        // Past the threshold, the restart waits for the reader to finish
        // its snapshot, then the next commit writes from the start again.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
            reader
        });
        assert!(checkpoint(&repo.pool, 10).await.unwrap() >= 50);
        let mut reader = release.await.unwrap();
        renew_snapshot(&mut reader, false).await;
        let after = frames_after_a_write(&repo, 50).await;
        assert!(after < 10, "the log started over: {after} frames");
    }
}
