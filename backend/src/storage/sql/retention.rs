//! Retention: purging ended requests down to tombstones. The SQL both
//! databases run, as a macro that [`sql_repository`](super::sql_repository)
//! expands for each; freeing the space is each database's own
//! (`release_space_now`).

macro_rules! sql_retention {
    ($name:ident) => {
        #[async_trait::async_trait]
        impl $crate::storage::RetentionStore for $name {
            async fn purge_due(
                &self,
                due: &$crate::storage::PurgeDue,
                limit: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::StoredRequest>> {
                let sql = format!(
                    "SELECT {} FROM requests WHERE purged_at IS NULL AND status <> 'pending' \
                     AND decided_at <= $1 \
                     AND (status <> 'denied' OR decided_at <= $2) \
                     AND (status NOT IN ('approved', 'cancelled') OR decided_at <= $3) \
                     AND created_at <= $5 \
                     AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = requests.id \
                     AND (outbox.state = 'pending' OR outbox.updated_at > $1)) \
                     ORDER BY decided_at LIMIT $4",
                    $crate::storage::sql::REQUEST_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(due.ended_before)
                    .bind(due.denied_before)
                    .bind(due.answered_before)
                    .bind(limit)
                    .bind(due.created_before)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(request_from_row).collect()
            }

            async fn purge(
                &self,
                id: &str,
                tombstone: &$crate::storage::Tombstone,
            ) -> $crate::storage::Result<$crate::storage::Purged> {
                use $crate::storage::Purged;
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE requests SET mxid = '', address = '', address_as_sent = NULL, reason = NULL, \
                     callback_url = NULL, decision_doc = NULL, raw_method = NULL, raw_path = NULL, \
                     raw_headers = NULL, raw_body = NULL, purged_at = $2, purged_by = $3, \
                     address_hmac = $4, mxid_hmac = $5, decision_sha256 = $6, updated_at = $2 \
                     WHERE id = $1 AND purged_at IS NULL AND status <> 'pending' \
                     AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = $1 \
                     AND outbox.state = 'pending')",
                )
                .bind(id)
                .bind(tombstone.purged_at)
                .bind(&tombstone.purged_by)
                .bind(&tombstone.address_hmac)
                .bind(&tombstone.mxid_hmac)
                .bind(&tombstone.decision_sha256)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    let row = sqlx::query("SELECT purged_at, status FROM requests WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return Ok(match row {
                        None => Purged::Unknown,
                        Some(row) if row.try_get::<Option<i64>, _>("purged_at")?.is_some() => {
                            Purged::Already
                        }
                        Some(_) => Purged::NotEnded,
                    });
                }
                sqlx::query("DELETE FROM audit_events WHERE request_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM outbox WHERE request_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Purged::Now)
            }

            async fn tombstones(
                &self,
                address_hmac: Option<&[u8]>,
                mxid_hmac: Option<&[u8]>,
                limit: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::StoredRequest>> {
                let mut found: Vec<$crate::storage::StoredRequest> = Vec::new();
                for (column, hash) in [("address_hmac", address_hmac), ("mxid_hmac", mxid_hmac)] {
                    let Some(hash) = hash else { continue };
                    let sql = format!(
                        "SELECT {} FROM requests WHERE {column} = $1 AND {column} IS NOT NULL \
                         ORDER BY created_at DESC LIMIT $2",
                        $crate::storage::sql::REQUEST_COLUMNS
                    );
                    for row in sqlx::query(&sql).bind(hash).bind(limit).fetch_all(&self.pool).await? {
                        let request = request_from_row(&row)?;
                        if !found.iter().any(|r| r.id == request.id) {
                            found.push(request);
                        }
                    }
                }
                found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
                found.truncate(usize::try_from(limit).unwrap_or(0));
                Ok(found)
            }

            async fn release_space(&self) -> $crate::storage::Result<bool> {
                self.release_space_now().await
            }
        }
    };
}

pub(crate) use sql_retention;
