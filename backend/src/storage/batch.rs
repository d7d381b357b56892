//! Group commit for new requests on SQLite. SQLite has one writer at a
//! time: rather than many transactions queueing for the lock, one thread
//! writes every request that arrived meanwhile in a single transaction.
//! Callers still get one answer each, only after the commit.
//!
//! The thread has its own connection (rusqlite, on the same libsqlite3 as
//! sqlx) and runs its statements, prepared once, in place: through sqlx,
//! each statement was a round trip to the connection's worker thread, and
//! those hops cost more than the writing. Intake's check for an earlier
//! request runs in the same transaction ([`RequestStore::hold_if_new`](super::RequestStore::hold_if_new)), so a
//! new unbind costs one hand-off in all. The other writes (decisions, the
//! outbox, sessions) stay on sqlx's writer connection; the two take turns
//! through the repository's [`WriteGate`].

use super::sqlite::{SqliteRepository, WriteGate};
use super::{HoldNew, NewAudit, NewHold, NewOutbox, NewRequest, Result, StorageError};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 256;

/// While the last batch had company, a batch smaller than this waits
/// [`LINGER`] for more. On the benchmark's two cores, 100 µs took the
/// server's CPU time per held request from about 225 to 200 µs.
const LINGER_BELOW: usize = 8;
const LINGER: std::time::Duration = std::time::Duration::from_micros(100);

enum Job {
    /// [`RequestStore::hold_if_new`](super::RequestStore::hold_if_new).
    HoldIfNew { rows: Rows, since: i64, limit: i64 },
    /// [`RequestStore::insert_requests`](super::RequestStore::insert_requests), one request.
    Insert(Rows),
}

/// A hold's rows with their JSON already written out: that is done by the
/// caller, so that the writer, whom every request waits for, only writes.
struct Rows {
    request: NewRequest,
    raw_headers: Option<String>,
    audit: NewAudit,
    audit_detail: String,
    /// Each row with its payload.
    outbox: Vec<(NewOutbox, String)>,
}

impl From<NewHold> for Rows {
    fn from(hold: NewHold) -> Self {
        Rows {
            raw_headers: hold
                .request
                .raw
                .as_ref()
                .map(|raw| serde_json::to_string(&raw.headers).unwrap_or_else(|_| "[]".to_owned())),
            request: hold.request,
            audit_detail: hold.audit.detail.to_string(),
            audit: hold.audit,
            outbox: hold
                .outbox
                .into_iter()
                .map(|row| {
                    let payload = row.payload.to_string();
                    (row, payload)
                })
                .collect(),
        }
    }
}

/// What the writer did with one job.
#[derive(Debug)]
enum Outcome {
    Created,
    /// A twin is pending: this id.
    Pending(String),
    Known,
}

type Reply = oneshot::Sender<Result<Outcome>>;

/// What the writer did with a new request.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    /// A twin was already pending, committed before this batch began (so
    /// readers see it): its id.
    Pending(String),
}

/// The handle of the writer thread.
pub struct Writer {
    queue: mpsc::Sender<(Job, Reply)>,
    /// Batches written so far.
    batches: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread for `sqlite`, on a connection of its own.
    pub fn start(sqlite: &SqliteRepository) -> Result<Self> {
        let conn = sqlite.open_writer()?;
        let gate = sqlite.gate();
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let batches = Arc::new(AtomicU64::new(0));
        let counter = batches.clone();
        std::thread::Builder::new()
            .name("assent-db-writer".to_owned())
            .spawn(move || writer(conn, gate, jobs, counter))
            .map_err(|e| StorageError::Writer(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { queue, batches })
    }

    /// How many batches the writer has taken so far (for tests).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Whether the thread has stopped (after a failure it could not undo).
    pub fn is_stopped(&self) -> bool {
        self.queue.is_closed()
    }

    /// Writes `holds`, each as [`RequestStore::insert_requests`] does:
    /// all are queued first, so they can share a commit.
    ///
    /// [`RequestStore::insert_requests`]: super::RequestStore::insert_requests
    pub async fn insert(&self, holds: &[NewHold]) -> Result<Vec<Written>> {
        let mut waiting = Vec::with_capacity(holds.len());
        for hold in holds {
            waiting.push(self.submit(Job::Insert(hold.clone().into())).await?);
        }
        let mut results = Vec::with_capacity(waiting.len());
        for answer in waiting {
            results.push(match outcome(answer).await? {
                Outcome::Created => Written::Created,
                Outcome::Pending(id) => Written::Pending(id),
                other => return Err(unexpected(&other)),
            });
        }
        Ok(results)
    }

    /// [`RequestStore::hold_if_new`], checked and written in one transaction.
    ///
    /// [`RequestStore::hold_if_new`]: super::RequestStore::hold_if_new
    pub async fn hold_if_new(&self, hold: NewHold, since: i64, limit: i64) -> Result<HoldNew> {
        let answer = self
            .submit(Job::HoldIfNew {
                rows: hold.into(),
                since,
                limit,
            })
            .await?;
        match outcome(answer).await? {
            Outcome::Created => Ok(HoldNew::Created),
            Outcome::Known => Ok(HoldNew::Known),
            other => Err(unexpected(&other)),
        }
    }

    async fn submit(&self, job: Job) -> Result<oneshot::Receiver<Result<Outcome>>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((job, reply)).await.map_err(|_| stopped())?;
        Ok(answer)
    }
}

pub(crate) fn stopped() -> StorageError {
    StorageError::Writer("the database writer has stopped".to_owned())
}

async fn outcome(answer: oneshot::Receiver<Result<Outcome>>) -> Result<Outcome> {
    answer.await.map_err(|_| {
        StorageError::Writer("the database writer failed while writing this request".to_owned())
    })?
}

/// The writer thread: a batch is every job waiting when it takes its turn.
/// Ends when every sender is gone.
fn writer(
    mut conn: Connection,
    gate: WriteGate,
    mut jobs: mpsc::Receiver<(Job, Reply)>,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut busy = false;
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        take_waiting(&mut jobs, &mut batch);
        // Under concurrent load, a moment's wait for the requests already
        // on their way makes the batch, and so each commit, go further (as
        // PostgreSQL's `commit_delay`): every page a batch touches is
        // written to the log once per commit, so a batch of 4 wrote about
        // twice the log per request of a batch of 16. Alone, nobody waits.
        if busy && batch.len() < LINGER_BELOW {
            std::thread::sleep(LINGER);
            take_waiting(&mut jobs, &mut batch);
        }
        busy = batch.len() > 1;
        batches.fetch_add(1, Ordering::Relaxed);
        let turn = gate.blocking_lock();
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_batch(&mut conn, &batch, false)
        }));
        if !conn.is_autocommit() {
            // After a panic, or a rollback that failed: nothing of it stays.
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Still inside a transaction, the connection would keep SQLite's
        // write lock and fail every later batch: the writer stops instead
        // (closing the connection releases the lock), so that `/health`
        // fails and every caller gets an error at once.
        let stuck = !conn.is_autocommit();
        drop(turn);
        match written {
            Ok(Ok(outcomes)) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                tracing::error!(error = %why, size = batch.len(), "a batch of new requests was not written");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StorageError::Writer(why.clone())));
                }
            }
            Err(_) => {
                tracing::error!(
                    size = batch.len(),
                    "the writer panicked; its batch was not written"
                );
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StorageError::Writer(
                        "the writer failed on this batch; nothing was stored".to_owned(),
                    )));
                }
            }
        }
        if stuck {
            tracing::error!(
                "the SQLite writer cannot end its transaction and stops; restart Assent"
            );
            return;
        }
    }
}

/// Moves the jobs already queued into `batch`, up to [`MAX_BATCH`].
fn take_waiting(jobs: &mut mpsc::Receiver<(Job, Reply)>, batch: &mut Vec<(Job, Reply)>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// One transaction for the whole batch. `Err` when the transaction as a
/// whole failed: nothing of it was stored. A job the database refuses (a
/// constraint) must fail alone: then the batch is rolled back and written
/// again with a savepoint around each job (`savepoints`). Not every time,
/// because a savepoint copies each page a job touches first.
fn write_batch(
    conn: &mut Connection,
    batch: &[(Job, Reply)],
    savepoints: bool,
) -> rusqlite::Result<Vec<Result<Outcome>>> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        if savepoints {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        }
        match write_one(conn, job) {
            Ok(outcome) => outcomes.push(Ok(outcome)),
            Err(e) if savepoints => {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                outcomes.push(Err(StorageError::Sqlite(e)));
            }
            // Part of the job may be written: none of it may stay.
            Err(_) => {
                conn.prepare_cached("ROLLBACK")?.execute([])?;
                return write_batch(conn, batch, true);
            }
        }
        if savepoints {
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
    }
    commit(conn, outcomes)
}

fn commit(
    conn: &mut Connection,
    outcomes: Vec<Result<Outcome>>,
) -> rusqlite::Result<Vec<Result<Outcome>>> {
    match conn.prepare_cached("COMMIT")?.execute([]) {
        Ok(_) => Ok(outcomes),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// How many requests for the address since `?6`, and whether any request
/// has the same key. Both walk the address index (named: SQLite keeps no
/// statistics and might pick one that scans a whole identity server).
const KNOWN: &str = "SELECT \
     (SELECT COUNT(*) FROM requests INDEXED BY requests_by_address_created \
      WHERE address = ?5 AND medium = ?4 AND created_at > ?6), \
     EXISTS (SELECT 1 FROM requests INDEXED BY requests_by_address_created \
      WHERE address = ?5 AND identity_server = ?1 AND origin = ?2 AND mxid = ?3 AND medium = ?4)";

const PENDING: &str = "SELECT id FROM requests WHERE identity_server = ?1 AND origin = ?2 \
     AND mxid = ?3 AND medium = ?4 AND address = ?5 AND status = 'pending'";

const INSERT_REQUEST: &str = "INSERT INTO requests (id, source, identity_server, origin, \
     origin_key_id, verified_at, mxid, medium, address, initiator, reason, callback_url, status, \
     token_hash, created_at, expires_at, raw_method, raw_path, raw_headers, raw_body, updated_at, \
     address_as_sent) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?14, ?20)";

const INSERT_AUDIT: &str =
    "INSERT INTO audit_events (request_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)";

const INSERT_OUTBOX: &str = "INSERT INTO outbox (request_id, kind, sink, idempotency_key, \
     payload, state, attempts, next_attempt_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)";

fn write_one(conn: &Connection, job: &Job) -> rusqlite::Result<Outcome> {
    let rows = match job {
        Job::HoldIfNew { rows, since, limit } => {
            let r = &rows.request;
            let (recent, known): (i64, bool) = conn.prepare_cached(KNOWN)?.query_row(
                params![
                    r.identity_server,
                    r.origin,
                    r.mxid,
                    r.medium.as_str(),
                    r.address,
                    since
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            if known || recent >= *limit {
                return Ok(Outcome::Known);
            }
            rows
        }
        Job::Insert(rows) => {
            let r = &rows.request;
            let pending: Option<String> = conn
                .prepare_cached(PENDING)?
                .query_row(
                    params![
                        r.identity_server,
                        r.origin,
                        r.mxid,
                        r.medium.as_str(),
                        r.address
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(id) = pending {
                return Ok(Outcome::Pending(id));
            }
            rows
        }
    };
    let r = &rows.request;
    let raw = r.raw.as_ref();
    conn.prepare_cached(INSERT_REQUEST)?.execute(params![
        r.id,
        r.source.as_str(),
        r.identity_server,
        r.origin,
        r.origin_key_id,
        r.verified_at,
        r.mxid,
        r.medium.as_str(),
        r.address,
        r.initiator.as_str(),
        r.reason,
        r.callback_url,
        r.token_hash,
        r.created_at,
        r.expires_at,
        raw.map(|raw| raw.method.as_str()),
        raw.map(|raw| raw.path.as_str()),
        rows.raw_headers,
        raw.map(|raw| raw.body.as_slice()),
        r.address_as_sent,
    ])?;
    conn.prepare_cached(INSERT_AUDIT)?.execute(params![
        r.id,
        r.created_at,
        rows.audit.kind.as_str(),
        rows.audit.actor,
        rows.audit_detail,
    ])?;
    for (out, payload) in &rows.outbox {
        conn.prepare_cached(INSERT_OUTBOX)?.execute(params![
            r.id,
            out.kind.as_str(),
            out.sink,
            out.idempotency_key,
            payload,
            r.created_at,
        ])?;
    }
    Ok(Outcome::Created)
}

fn unexpected(outcome: &Outcome) -> StorageError {
    StorageError::Corrupt(format!("the writer answered {outcome:?} to this job"))
}
