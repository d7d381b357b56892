//! Requests: holding, reading, deciding, new links. The SQL both databases run, as a macro that
//! [`sql_repository`](super::sql_repository) expands for each.

macro_rules! sql_requests {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::RequestStore for $name {
            async fn insert_requests(
                &self,
                batch: &[$crate::storage::NewHold],
            ) -> $crate::storage::Result<Vec<$crate::storage::Inserted>> {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some(writer) = self.batch_writer() {
                    let mut results = Vec::with_capacity(batch.len());
                    for written in writer.insert(batch).await? {
                        results.push(match written {
                            $crate::storage::batch::Written::Created => $crate::storage::Inserted::Created,
                            $crate::storage::batch::Written::Pending(id) => match self.request(&id).await? {
                                Some(existing) => $crate::storage::Inserted::JoinedPending(Box::new(existing)),
                                None => {
                                    return Err($crate::storage::StorageError::Corrupt(format!(
                                        "pending request {id} cannot be read back"
                                    )))
                                }
                            },
                        });
                    }
                    return Ok(results);
                }
                'attempt: for _attempt in 0..3 {
                    let _turn = self.write_turn().await;
                    let mut tx = self.writer.begin().await?;
                    let mut insert = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new(
                        "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, mxid, \
                         medium, address, initiator, reason, callback_url, status, token_hash, created_at, expires_at, \
                         raw_method, raw_path, raw_headers, raw_body, updated_at, address_as_sent) ",
                    );
                    insert.push_values(batch, |mut row, hold| {
                        let r = &hold.request;
                        let headers = r
                            .raw
                            .as_ref()
                            .map(|raw| serde_json::to_string(&raw.headers).unwrap_or_else(|_| "[]".to_owned()));
                        row.push_bind(r.id.as_str())
                            .push_bind(r.source.as_str())
                            .push_bind(r.identity_server.as_str())
                            .push_bind(r.origin.as_str())
                            .push_bind(r.origin_key_id.as_deref())
                            .push_bind(r.verified_at)
                            .push_bind(r.mxid.as_str())
                            .push_bind(r.medium.as_str())
                            .push_bind(r.address.as_str())
                            .push_bind(r.initiator.as_str())
                            .push_bind(r.reason.as_deref())
                            .push_bind(r.callback_url.as_deref())
                            .push("'pending'")
                            .push_bind(r.token_hash.as_slice())
                            .push_bind(r.created_at)
                            .push_bind(r.expires_at)
                            .push_bind(r.raw.as_ref().map(|raw| raw.method.as_str()))
                            .push_bind(r.raw.as_ref().map(|raw| raw.path.as_str()))
                            .push_bind(headers)
                            .push_bind(r.raw.as_ref().map(|raw| raw.body.as_slice()))
                            .push_bind(r.created_at)
                            .push_bind(r.address_as_sent.as_deref());
                    });
                    insert.push(
                        " ON CONFLICT (identity_server, origin, mxid, medium, address) WHERE status = 'pending' \
                         DO NOTHING RETURNING id",
                    );
                    let created: std::collections::HashSet<String> = insert
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|row| row.try_get::<String, _>("id"))
                        .collect::<Result<_, _>>()?;
                    let mut results = Vec::with_capacity(batch.len());
                    for hold in batch {
                        let r = &hold.request;
                        if created.contains(&r.id) {
                            results.push($crate::storage::Inserted::Created);
                            continue;
                        }
                        let sql = format!(
                            "SELECT {} FROM requests WHERE identity_server = $1 AND origin = $2 AND mxid = $3 \
                             AND medium = $4 AND address = $5 AND status = 'pending'",
                            $crate::storage::sql::REQUEST_COLUMNS
                        );
                        let existing = sqlx::query(&sql)
                            .bind(&r.identity_server)
                            .bind(&r.origin)
                            .bind(&r.mxid)
                            .bind(r.medium.as_str())
                            .bind(&r.address)
                            .fetch_optional(&mut *tx)
                            .await?;
                        match existing {
                            Some(row) => results.push($crate::storage::Inserted::JoinedPending(Box::new(request_from_row(&row)?))),
                            // Decided between our INSERT and SELECT: try again.
                            None => {
                                tx.rollback().await?;
                                continue 'attempt;
                            }
                        }
                    }
                    let fresh: Vec<&$crate::storage::NewHold> =
                        batch.iter().filter(|hold| created.contains(&hold.request.id)).collect();
                    if !fresh.is_empty() {
                        let mut audit = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new(
                            "INSERT INTO audit_events (request_id, at, kind, actor, detail) ",
                        );
                        audit.push_values(&fresh, |mut row, hold| {
                            row.push_bind(hold.request.id.as_str())
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.audit.kind.as_str())
                                .push_bind(hold.audit.actor.as_deref())
                                .push_bind(hold.audit.detail.to_string());
                        });
                        audit.build().execute(&mut *tx).await?;
                    }
                    let outbox: Vec<(&$crate::storage::NewHold, &$crate::storage::NewOutbox)> = fresh
                        .iter()
                        .flat_map(|hold| hold.outbox.iter().map(move |row| (*hold, row)))
                        .collect();
                    if !outbox.is_empty() {
                        let mut insert = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new(
                            "INSERT INTO outbox (request_id, kind, sink, idempotency_key, payload, state, attempts, \
                             next_attempt_at, created_at, updated_at) ",
                        );
                        insert.push_values(&outbox, |mut row, (hold, out)| {
                            row.push_bind(hold.request.id.as_str())
                                .push_bind(out.kind.as_str())
                                .push_bind(out.sink.as_deref())
                                .push_bind(out.idempotency_key.as_str())
                                .push_bind(out.payload.to_string())
                                .push("'pending'")
                                .push("0")
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.request.created_at)
                                .push_bind(hold.request.created_at);
                        });
                        insert.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    return Ok(results);
                }
                Err($crate::storage::StorageError::Contended)
            }

            async fn overdue(&self, now: i64, limit: i64) -> $crate::storage::Result<Vec<$crate::storage::StoredRequest>> {
                let sql = format!(
                    "SELECT {} FROM requests{} WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
                    $crate::storage::sql::REQUEST_COLUMNS,
                    $by_expiry
                );
                let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(request_from_row).collect()
            }

            async fn request(&self, id: &str) -> $crate::storage::Result<Option<$crate::storage::StoredRequest>> {
                let sql = format!("SELECT {} FROM requests WHERE id = $1", $crate::storage::sql::REQUEST_COLUMNS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(request_from_row).transpose()
            }

            async fn request_by_token_hash(
                &self,
                token_hash: &[u8],
            ) -> $crate::storage::Result<Option<$crate::storage::StoredRequest>> {
                let sql = format!("SELECT {} FROM requests WHERE token_hash = $1", $crate::storage::sql::REQUEST_COLUMNS);
                let row = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
                row.as_ref().map(request_from_row).transpose()
            }

            async fn intake_lookup(
                &self,
                key: &$crate::storage::RequestKey<'_>,
                since: i64,
            ) -> $crate::storage::Result<$crate::storage::IntakeLookup> {
                let columns: Vec<String> = $crate::storage::sql::REQUEST_COLUMNS
                    .split(',')
                    .map(|c| format!("r.{}", c.trim()))
                    .collect();
                let sql = format!(
                    "SELECT {}, a.n AS recent_n, a.oldest AS recent_oldest FROM \
                     (SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM requests \
                      WHERE medium = $4 AND address = $5 AND created_at > $6) AS a \
                     LEFT JOIN requests AS r ON r.id = \
                     (SELECT id FROM requests{by_address} WHERE identity_server = $1 AND origin = $2 AND mxid = $3 \
                      AND medium = $4 AND address = $5 \
                      ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, created_at DESC, id DESC LIMIT 1)",
                    columns.join(", "),
                    // SQLite has no statistics: named, the address index is
                    // used, not one that scans a whole identity server.
                    by_address = $by_address
                );
                let row = sqlx::query(&sql)
                    .bind(key.identity_server)
                    .bind(key.origin)
                    .bind(key.mxid)
                    .bind(key.medium.as_str())
                    .bind(key.address)
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?;
                let latest = match row.try_get::<Option<String>, _>("id")? {
                    Some(_) => Some(request_from_row(&row)?),
                    None => None,
                };
                Ok($crate::storage::IntakeLookup {
                    latest,
                    recent_for_address: row.try_get::<i64, _>("recent_n")?,
                    oldest_recent: row.try_get::<Option<i64>, _>("recent_oldest")?,
                })
            }

            async fn decide(
                &self,
                request_id: &str,
                d: &$crate::storage::Decision,
                audit: &$crate::storage::NewAudit,
                outbox: &[$crate::storage::NewOutbox],
            ) -> $crate::storage::Result<$crate::storage::Decided> {
                if d.status == assent_shared::RequestStatus::Pending {
                    return Err($crate::storage::StorageError::Corrupt("a decision cannot be `pending`".to_owned()));
                }
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE requests SET status = $2, decided_at = $3, decision_id = $4, decision_doc = $5, updated_at = $3 \
                     WHERE id = $1 AND status = 'pending' AND (expires_at > $3 OR $2 IN ('expired', 'cancelled')) \
                     AND ($6 IS NULL OR token_hash = $6)",
                )
                .bind(request_id)
                .bind(d.status.as_str())
                .bind(d.at)
                .bind(&d.decision_id)
                .bind(&d.document)
                .bind(d.link.as_deref())
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    tx.rollback().await?;
                    let current = self.request(request_id).await?;
                    return Ok($crate::storage::Decided::AlreadyFinal(current.map(Box::new)));
                }
                insert_audit(&mut tx, request_id, d.at, audit).await?;
                for row in outbox {
                    insert_outbox(&mut tx, request_id, d.at, row).await?;
                }
                // With no relay to send, the raw intake goes at once.
                sqlx::query(&format!("{} AND {}", $crate::storage::sql::RELEASE_RAW, $crate::storage::sql::NO_OPEN_RELAY))
                    .bind(request_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::storage::Decided::Now)
            }

            async fn replace_token(
                &self,
                request_id: &str,
                token_hash: &[u8],
                at: i64,
                audit: &$crate::storage::NewAudit,
                outbox: &[$crate::storage::NewOutbox],
            ) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                let updated = sqlx::query(
                    "UPDATE requests SET token_hash = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
                )
                .bind(request_id)
                .bind(token_hash)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_audit(&mut tx, request_id, at, audit).await?;
                for row in outbox {
                    insert_outbox(&mut tx, request_id, at, row).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn count_repeat(&self, request_id: &str) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                sqlx::query("UPDATE requests SET repeats = repeats + 1 WHERE id = $1 AND status = 'pending'")
                    .bind(request_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn record_proven(
                &self,
                r: &$crate::storage::NewRequest,
                audit: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, mxid, \
                     medium, address, initiator, reason, callback_url, status, token_hash, created_at, expires_at, \
                     decided_at, updated_at, address_as_sent) \
                     VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8, NULL, NULL, 'approved', $9, $10, $10, $10, $10, $11)",
                )
                .bind(r.id.as_str())
                .bind(r.source.as_str())
                .bind(r.identity_server.as_str())
                .bind(r.origin.as_str())
                .bind(r.mxid.as_str())
                .bind(r.medium.as_str())
                .bind(r.address.as_str())
                .bind(r.initiator.as_str())
                .bind(r.token_hash.as_slice())
                .bind(r.created_at)
                .bind(r.address_as_sent.as_deref())
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, &r.id, r.created_at, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn release_raw(&self, request_id: &str) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let done = sqlx::query(&format!(
                    "{} AND status <> 'pending' AND raw_method IS NOT NULL AND {}",
                    $crate::storage::sql::RELEASE_RAW,
                    $crate::storage::sql::NO_OPEN_RELAY
                ))
                .bind(request_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn hold_if_new(
                &self,
                hold: $crate::storage::NewHold,
                since: i64,
                limit: i64,
            ) -> $crate::storage::Result<$crate::storage::HoldNew> {
                match self.batch_writer() {
                    Some(writer) => writer.hold_if_new(hold, since, limit).await,
                    None => $crate::storage::sql::hold_if_new(self, hold, since, limit).await,
                }
            }
        }
    };
}

pub(crate) use sql_requests;
