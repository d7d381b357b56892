//! Group commit for new requests. SQLite has one writer at a time: rather
//! than many transactions queueing for the lock (and sleeping in its busy
//! handler), one task writes every request that arrived meanwhile in a single
//! transaction. Callers still get one answer each, only after the commit.

use super::{
    AdminSession, AttemptResult, AuditEvent, Counted, Decided, Decision, Inserted, IntakeLookup,
    ListCursor, ListFilter, NewAudit, NewHold, NewOutbox, OriginCount, OutboxDepth, OutboxKind,
    OutboxRow, Repo, RequestKey, RequestSummary, Result, StorageError, StoredRequest,
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 256;

type Job = (NewHold, oneshot::Sender<Result<Inserted>>);

pub struct Batched {
    inner: Repo,
    queue: mpsc::Sender<Job>,
    /// Batches written so far.
    batches: Arc<AtomicU64>,
}

impl Batched {
    /// Wraps `inner`. The writer runs on a thread of its own, so that its
    /// turns are not queued behind request handlers on the shared runtime:
    /// every request waits for it, so its latency is everyone's.
    pub fn new(inner: Repo) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let repo = inner.clone();
        let batches = Arc::new(AtomicU64::new(0));
        let counter = batches.clone();
        std::thread::Builder::new()
            .name("assent-db-writer".to_owned())
            .spawn(move || runtime.block_on(writer(repo, jobs, counter)))?;
        Ok(Batched {
            inner,
            queue,
            batches,
        })
    }

    /// How many batches the writer has taken so far (for metrics and tests).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

async fn writer(inner: Repo, mut jobs: mpsc::Receiver<Job>, batches: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        batches.fetch_add(1, Ordering::Relaxed);
        let (holds, replies): (Vec<NewHold>, Vec<_>) =
            std::mem::take(&mut batch).into_iter().unzip();
        // Run as a task, so that a panic fails this batch, not the writer.
        let repo = inner.clone();
        let written = tokio::spawn(async move {
            let result = repo.insert_requests(&holds).await;
            (holds, result)
        })
        .await;
        let (holds, result) = match written {
            Ok(done) => done,
            Err(panic) => {
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Writer(format!("panicked: {panic}"))));
                }
                continue;
            }
        };
        match result {
            Ok(results) if results.len() == holds.len() => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            // A row the database refused (a constraint): write each alone, so
            // that one bad request does not fail the others.
            Err(StorageError::Database(sqlx::Error::Database(_))) if holds.len() > 1 => {
                for (hold, reply) in holds.iter().zip(replies) {
                    let result = inner
                        .insert_requests(std::slice::from_ref(hold))
                        .await
                        .and_then(super::only);
                    let _ = reply.send(result);
                }
            }
            // Anything else (the database unreachable, a timeout) would fail
            // each alone too: answer everyone at once.
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, size = holds.len(), "a batch of new requests was not written");
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Writer(why.clone())));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Corrupt(
                        "the database answered a batch with the wrong number of results".to_owned(),
                    )));
                }
            }
        }
    }
}

#[async_trait]
impl super::Repository for Batched {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> Result<()> {
        if self.queue.is_closed() {
            return Err(StorageError::Writer(
                "the writer thread has stopped".to_owned(),
            ));
        }
        self.inner.ping().await
    }

    async fn insert_requests(&self, batch: &[NewHold]) -> Result<Vec<Inserted>> {
        let mut waiting = Vec::with_capacity(batch.len());
        for hold in batch {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send((hold.clone(), reply))
                .await
                .map_err(|_| StorageError::Corrupt("the database writer has stopped".to_owned()))?;
            waiting.push(answer);
        }
        let mut results = Vec::with_capacity(waiting.len());
        for answer in waiting {
            results.push(answer.await.map_err(|_| {
                StorageError::Corrupt("the database writer has stopped".to_owned())
            })??);
        }
        Ok(results)
    }

    async fn request(&self, id: &str) -> Result<Option<StoredRequest>> {
        self.inner.request(id).await
    }

    async fn request_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<StoredRequest>> {
        self.inner.request_by_token_hash(token_hash).await
    }

    async fn intake_lookup(&self, key: &RequestKey<'_>, since: i64) -> Result<IntakeLookup> {
        self.inner.intake_lookup(key, since).await
    }

    async fn overdue(&self, now: i64, limit: i64) -> Result<Vec<StoredRequest>> {
        self.inner.overdue(now, limit).await
    }

    async fn decide(
        &self,
        request_id: &str,
        decision: &Decision,
        audit: &NewAudit,
        outbox: &[super::NewOutbox],
    ) -> Result<Decided> {
        self.inner.decide(request_id, decision, audit, outbox).await
    }

    async fn replace_token(
        &self,
        request_id: &str,
        token_hash: &[u8],
        at: i64,
        audit: &NewAudit,
        outbox: &[NewOutbox],
    ) -> Result<bool> {
        self.inner
            .replace_token(request_id, token_hash, at, audit, outbox)
            .await
    }

    async fn append_audit(&self, request_id: &str, at: i64, event: &NewAudit) -> Result<()> {
        self.inner.append_audit(request_id, at, event).await
    }

    async fn audit_trail(&self, request_id: &str) -> Result<Vec<AuditEvent>> {
        self.inner.audit_trail(request_id).await
    }

    async fn outbox_for(&self, request_id: &str) -> Result<Vec<OutboxRow>> {
        self.inner.outbox_for(request_id).await
    }

    async fn claim_outbox(
        &self,
        kind: OutboxKind,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        self.inner
            .claim_outbox(kind, owner, now, lease_ms, limit)
            .await
    }

    async fn finish_outbox(
        &self,
        id: i64,
        owner: &str,
        result: &AttemptResult,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        self.inner
            .finish_outbox(id, owner, result, now, audit)
            .await
    }
    async fn list_requests(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: i64,
    ) -> Result<Vec<RequestSummary>> {
        self.inner.list_requests(filter, after, limit).await
    }

    async fn count_requests(&self, filter: &ListFilter, cap: i64) -> Result<Counted> {
        self.inner.count_requests(filter, cap).await
    }

    async fn origin_counts(&self, day: i64, week: i64) -> Result<Vec<OriginCount>> {
        self.inner.origin_counts(day, week).await
    }

    async fn outbox_depth(&self) -> Result<Vec<OutboxDepth>> {
        self.inner.outbox_depth().await
    }

    async fn requeue_given_up(
        &self,
        request_id: &str,
        kind: Option<OutboxKind>,
        at: i64,
        audit: &NewAudit,
    ) -> Result<u64> {
        self.inner
            .requeue_given_up(request_id, kind, at, audit)
            .await
    }

    async fn create_session(&self, session: &AdminSession) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn session(&self, id_hash: &[u8], now: i64) -> Result<Option<AdminSession>> {
        self.inner.session(id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &[u8]) -> Result<bool> {
        self.inner.delete_session(id_hash).await
    }
}
