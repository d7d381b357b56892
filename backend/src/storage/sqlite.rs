//! SQLite (WAL): the default, one file in the data folder.

use super::{sql_repository, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteRepository {
    pool: SqlitePool,
}

impl SqliteRepository {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteRepository { pool })
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
