//! The outbox and its leases. The SQL both databases run, as a macro that
//! [`sql_repository`](super::sql_repository) expands for each.

macro_rules! sql_outbox {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::OutboxStore for $name {
            async fn outbox_for(&self, request_id: &str) -> $crate::storage::Result<Vec<$crate::storage::OutboxRow>> {
                let sql = format!(
                    "SELECT {} FROM outbox WHERE request_id = $1 ORDER BY id",
                    $crate::storage::sql::OUTBOX_COLUMNS
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
                let sql = format!($claim, cols = $crate::storage::sql::OUTBOX_COLUMNS);
                let mut rows = sqlx::query(&sql)
                    .bind(owner)
                    .bind(lease_ms)
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

            async fn lease_left(&self, id: i64, owner: &str) -> $crate::storage::Result<Option<i64>> {
                let sql = format!(
                    "SELECT lease_until - {now} AS left_ms FROM outbox \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
                    now = DB_NOW_MS
                );
                let row = sqlx::query(&sql).bind(id).bind(owner).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Ok(row.try_get::<Option<i64>, _>("left_ms")?),
                    None => Ok(None),
                }
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
        }
    };
}

pub(crate) use sql_outbox;
