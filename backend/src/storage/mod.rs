//! Storage: the repository the handlers and workers talk to, SQLite or
//! PostgreSQL through sqlx.
//!
//! - `model`: the types stored and read back;
//! - `repository`: one trait per concern (requests, audit, outbox, the
//!   admin list, sessions) and [`Repository`], all of them;
//! - `sql/`: the SQL of each concern, shared by both databases;
//! - `sqlite`, `postgres`: connecting, migrating, and what differs;
//! - `batch`: SQLite's group commit for new requests.

use std::sync::Arc;

pub mod batch;
mod model;
mod postgres;
mod repository;
pub(crate) mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::{retention::everything_stored, test_db, TestDb};

pub use model::*;
pub use postgres::PgRepository;
pub use repository::{
    AuditStore, ListStore, OutboxStore, Repository, RequestStore, RetentionStore, SessionStore,
};
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
        Ok(Arc::new(
            SqliteRepository::connect(url).await?.with_batch_writer()?,
        ))
    }
}
