//! SQLite (WAL): the default, one file in the data folder.

use super::batch::Writer;
use super::sql::sql_repository;
use super::Result;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Turns at SQLite's one write lock for this process's two writers (sqlx's
/// writer connection, and the new-request writer in [`super::batch`]), so
/// that neither sleeps in SQLite's busy handler waiting for the other: a
/// waiter here wakes the moment the lock is free, in arrival order.
pub type WriteGate = Arc<tokio::sync::Mutex<()>>;

pub struct SqliteRepository {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one sqlx connection that writes, so a write never queues behind
    /// readers for a connection.
    writer: SqlitePool,
    gate: WriteGate,
    file: PathBuf,
    /// The group-commit writer for new requests, once started.
    batch: Option<Writer>,
}

impl SqliteRepository {
    /// Opens the database, with its checkpoints running in the background.
    pub async fn connect(url: &str) -> Result<Self> {
        let repo = Self::open(url).await?;
        let dir = match repo.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        tokio::spawn(checkpoints(repo.pool.clone(), repo.gate.clone(), dir));
        Ok(repo)
    }

    /// Opens the database (creating it, and bringing its schema up to date).
    async fn open(url: &str) -> Result<Self> {
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
            .pragma("mmap_size", "67108864")
            // Deleted content is overwritten with zeros, and freed pages can
            // be given back to the file system (`release_space`): purged
            // personal data is not left in the file's bytes.
            .pragma("secure_delete", "on")
            .auto_vacuum(SqliteAutoVacuum::Incremental);
        let file = options.get_filename().to_owned();
        if file.to_string_lossy().starts_with("file:") || file.as_os_str() == ":memory:" {
            // New requests are written on a second connection, which would
            // see a database of its own.
            return Err(sqlx::Error::Configuration(
                format!("SQLite must be a file, not `{url}`: name one, as sqlite://<path>").into(),
            )
            .into());
        }
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
        incremental_vacuum_on(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(SqliteRepository {
            pool,
            writer,
            gate: WriteGate::default(),
            file,
            batch: None,
        })
    }

    /// New requests go through a writer thread that commits them in groups
    /// (see [`super::batch`]).
    pub fn with_batch_writer(mut self) -> Result<Self> {
        self.batch = Some(Writer::start(&self)?);
        Ok(self)
    }

    /// The group-commit writer, if started.
    pub fn batch_writer(&self) -> Option<&Writer> {
        self.batch.as_ref()
    }

    /// This process's turn at the write lock, held until dropped.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.gate.lock().await)
    }

    pub fn gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// A new connection to the same file, set up as sqlx's are, for
    /// writing outside sqlx (see [`super::batch`]).
    pub fn open_writer(&self) -> Result<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Another process holding the lock (a checkpoint, the command line):
        // ask again every 100 µs, rather than SQLite's default of sleeping
        // longer and longer; after 50,000 tries (at least 5 s of sleeping,
        // about 10 s by the clock) the batch fails.
        conn.busy_handler(Some(|attempt| {
            std::thread::sleep(Duration::from_micros(100));
            attempt < 50_000
        }))?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(super::StorageError::Corrupt(format!(
                "the database is in journal mode `{mode}`, not WAL"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA mmap_size = 67108864; \
             PRAGMA secure_delete = ON;",
        )?;
        Ok(conn)
    }
}

/// Turns on incremental vacuum in a database made before it was the
/// default (SQLite takes it only with a full `VACUUM`, once).
async fn incremental_vacuum_on(writer: &SqlitePool) -> Result<()> {
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(writer)
        .await?;
    if mode != 2 {
        tracing::info!("rewriting the database once so that freed pages can be given back (auto_vacuum = incremental)");
        sqlx::raw_sql("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .execute(writer)
            .await?;
    }
    Ok(())
}

impl SqliteRepository {
    /// [`RetentionStore::release_space`](super::RetentionStore::release_space):
    /// copies the log into the file and empties it, gives freed pages back,
    /// and empties the log again (the vacuum wrote to it).
    pub(crate) async fn release_space_now(&self) -> Result<bool> {
        let _turn = self.write_turn().await;
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await?;
        sqlx::raw_sql("PRAGMA incremental_vacuum")
            .execute(&self.writer)
            .await?;
        // The last checkpoint says whether it emptied the log (`busy` 0):
        // a reader in the way leaves old pages in it, so the caller asks
        // again later.
        let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.writer)
            .await?;
        Ok(busy == 0)
    }
}

/// Past this many frames (about 32 MiB of 4 KiB pages) the log is restarted.
const WAL_RESTART_FRAMES: i64 = 8192;

/// Copies the write-ahead log into the database file every quarter second,
/// off the writer's path (a passive checkpoint waits for no one), and writes
/// what it copied out to the disk there too ([`flush`]). Under sustained
/// writes a passive checkpoint never catches up with the last frame, so the
/// log would never start over and would grow without bound; once it is past
/// [`WAL_RESTART_FRAMES`], passive checkpoints run again until the writer
/// has added only a few frames meanwhile, and a RESTART checkpoint, which
/// makes writers wait, copies those few, so the next commit writes from the
/// start of the file again. Ends when the pool closes.
async fn checkpoints(pool: SqlitePool, gate: WriteGate, dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = 0;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let result = checkpoint(&pool, &gate, &dir, WAL_RESTART_FRAMES, previous).await;
        match result {
            Ok(frames) => previous = frames,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "SQLite checkpoint failed; will try again");
            }
        }
    }
}

/// Passive checkpoints to give writers a short wait: at most this many more
/// while the writer keeps adding more than [`CATCH_UP_FRAMES`] during one.
const CATCH_UP_PASSES: u32 = 8;
const CATCH_UP_FRAMES: i64 = 512;
/// A log shorter than this (4 MiB) is not worth a [`flush`].
const FLUSH_AFTER_FRAMES: i64 = 1024;

/// One passive checkpoint; if the log had more than `restart_after` frames,
/// more until they catch up with the writer, then a RESTART one. Returns the
/// log's frame count before. `previous` is what the last call returned.
async fn checkpoint(
    pool: &SqlitePool,
    gate: &WriteGate,
    dir: &std::path::Path,
    restart_after: i64,
    previous: i64,
) -> std::result::Result<i64, sqlx::Error> {
    let frames = passive(pool).await?;
    // Under light writes the RESTART below never comes, and there is
    // nothing worth writing out early; nor when nothing was written since.
    if frames > FLUSH_AFTER_FRAMES && frames != previous {
        flush(dir).await;
    }
    if frames <= restart_after {
        return Ok(frames);
    }
    // Each pass copies what the writer added during the one before, so
    // the RESTART below, which holds writers off, is left only a few
    // frames to copy and sync.
    let mut log = frames;
    let mut passes = 1;
    let mut grew = i64::MAX;
    while grew > CATCH_UP_FRAMES && passes <= CATCH_UP_PASSES {
        let before = log;
        log = passive(pool).await?;
        grew = log - before;
        passes += 1;
    }
    flush(dir).await;
    // It holds off writers until it is done: they wait for their turn
    // here, not in SQLite's busy handler.
    let _turn = gate.lock().await;
    let started = std::time::Instant::now();
    sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(pool)
        .await?;
    let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(
        frames,
        passes,
        waited_ms,
        "SQLite log started over; writers waited"
    );
    if waited_ms >= 100 {
        tracing::warn!(
            frames,
            waited_ms,
            "SQLite log start-over was slow (writers waited): is the disk busy?"
        );
    }
    Ok(frames)
}

/// A passive checkpoint: the frames in the log when it began.
async fn passive(pool: &SqlitePool) -> std::result::Result<i64, sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?
        .try_get(1)
}

/// Writes the file system's changed pages to the disk (Linux's `syncfs`,
/// on a blocking thread), so that the pages the passive checkpoints copied
/// into the database file reach the disk beside the writers. SQLite syncs the
/// database file only when a checkpoint has copied the whole log, which
/// under steady writes is the RESTART one: with every page since the last
/// RESTART to write, writers waited 30–40 ms for it under the benchmark,
/// 2–24 ms with this (p99 15–18 → 9–10 ms, single runs, a quiet host). The database
/// file itself is not opened for this: closing a second descriptor of it
/// would drop the POSIX locks SQLite holds on it. Elsewhere than Linux,
/// nothing: the RESTART checkpoint syncs it all.
async fn flush(dir: &std::path::Path) {
    #[cfg(target_os = "linux")]
    {
        let dir = dir.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            if let Ok(handle) = std::fs::File::open(&dir) {
                // SAFETY: `syncfs` takes any open descriptor on the file
                // system; this one stays open for the call.
                unsafe { libc::syncfs(handle.as_raw_fd()) };
            }
        })
        .await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

/// The database's clock in Unix milliseconds, which every lease is measured
/// by (on SQLite the host's, which every process on the file shares).
/// `'now'` is fixed for the length of one statement.
const DB_NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

// SQLite has one writer at a time, so a plain UPDATE … RETURNING is already
// exclusive across processes. Due-ness is the claimer's clock ($3); the
// lease is the database's.
sql_repository!(
    SqliteRepository,
    SqlitePool,
    SqliteRow,
    "sqlite",
    "UPDATE outbox SET lease_owner = $1, lease_until = CAST(unixepoch('subsec') * 1000 AS INTEGER) + $2, \
     attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind = $4 AND next_attempt_at <= $3 \
     AND (lease_until IS NULL OR lease_until < CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
     ORDER BY next_attempt_at, id LIMIT $5) \
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

    /// Migration 0003: the newest-first indexes are ascending (cheaper to
    /// insert into), and SQLite still picks the indexes the admin console's
    /// queries were measured with.
    #[tokio::test]
    async fn newest_first_indexes_are_ascending_and_still_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let repo = SqliteRepository::open(&url).await.unwrap();
        for index in [
            "requests_by_status_created",
            "requests_by_created",
            "requests_by_is_created",
            "requests_by_origin",
        ] {
            let descending: Vec<i64> = sqlx::query(&format!("PRAGMA index_xinfo({index})"))
                .fetch_all(&repo.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get("desc").unwrap())
                .collect();
            assert!(!descending.is_empty(), "{index} exists");
            assert!(descending.iter().all(|d| *d == 0), "{index} is ascending");
        }
        let plan = |sql: &'static str| {
            let pool = repo.pool.clone();
            async move {
                sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.try_get::<String, _>("detail").unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        // A search counted by status: the server-name range through the
        // index that has the status (the other one counted 5 times slower).
        let search = plan(
            "SELECT status FROM requests WHERE (mxid >= 'hs1' AND mxid < 'hs2') \
             OR (address >= 'hs1' AND address < 'hs2') OR (origin >= 'hs1' AND origin < 'hs2')",
        )
        .await;
        assert!(search.contains("requests_by_origin_status"), "{search}");
        // A count by identity server and requesting server: through the
        // requesting server's rows, not all of the identity server's.
        let both = plan(
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM requests WHERE status = 'approved' \
             AND identity_server = 'is.example' AND origin = 'hs.example' LIMIT 10000)",
        )
        .await;
        assert!(both.contains("requests_by_origin_status"), "{both}");
        // Newest first, read backwards, with no sort.
        let list = plan("SELECT id FROM requests ORDER BY created_at DESC, id DESC LIMIT 50").await;
        assert!(list.contains("requests_by_created"), "{list}");
        assert!(!list.contains("TEMP B-TREE"), "{list}");
        let pending = plan(
            "SELECT id FROM requests WHERE status = 'pending' ORDER BY created_at DESC, id DESC LIMIT 50",
        )
        .await;
        assert!(pending.contains("requests_by_status_created"), "{pending}");
        assert!(!pending.contains("TEMP B-TREE"), "{pending}");
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_a_clear_error() {
        let Err(e) = SqliteRepository::connect("sqlite::memory:").await else {
            panic!("an in-memory database was accepted");
        };
        assert!(
            e.to_string()
                .contains("SQLite must be a file, not `sqlite::memory:`"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_long_log_starts_over_under_steady_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        // Without the background checkpoints: one that ran while the reader
        // was between snapshots would start the log over.
        let repo = SqliteRepository::open(&url).await.unwrap();
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
            assert!(
                checkpoint(&repo.pool, &repo.gate, dir.path(), i64::MAX, 0)
                    .await
                    .unwrap()
                    >= frames
            );
        }
        assert!(frames >= 50, "the log grows commit by commit: {frames}");
        // Past the threshold, the restart waits for the reader to finish
        // its snapshot, then the next commit writes from the start again.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
            reader
        });
        assert!(
            checkpoint(&repo.pool, &repo.gate, dir.path(), 10, 0)
                .await
                .unwrap()
                >= 50
        );
        let mut reader = release.await.unwrap();
        renew_snapshot(&mut reader, false).await;
        let after = frames_after_a_write(&repo, 50).await;
        assert!(after < 10, "the log started over: {after} frames");
    }
}
