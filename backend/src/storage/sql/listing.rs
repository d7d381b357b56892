//! The admin console's list, counts and per-server figures. The SQL both databases run, as a macro that
//! [`sql_repository`](super::sql_repository) expands for each.

macro_rules! sql_listing {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::ListStore for $name {
            async fn list_requests(
                &self,
                filter: &$crate::storage::ListFilter,
                after: Option<&$crate::storage::ListCursor>,
                limit: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::RequestSummary>> {
                // A search that matches few requests is fastest through the
                // prefixes' indexes, then sorted; one that matches many, by
                // walking the newest-first index until the page is full
                // (`$walk` makes SQLite do that; PostgreSQL has statistics).
                let mut walk = "";
                if !filter.prefixes.is_empty() {
                    let mut probe = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new(
                        "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM requests WHERE 1 = 1",
                    );
                    push_filter(&mut probe, filter, true);
                    probe.push(" LIMIT ").push_bind($crate::storage::sql::WALK_AFTER).push(") AS m");
                    let matches: i64 = probe.build().fetch_one(&self.pool).await?.try_get("n")?;
                    if matches >= $crate::storage::sql::WALK_AFTER {
                        walk = $walk;
                    }
                }
                let mut query = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new(format!(
                    "SELECT id, source, status, identity_server, origin, mxid, medium, address, initiator, \
                     created_at, expires_at, decided_at, purged_at FROM requests{walk} WHERE 1 = 1"
                ));
                push_filter(&mut query, filter, true);
                if let Some(cursor) = after {
                    // A row value: one range on the index, however deep the page.
                    query
                        .push(" AND (created_at, id) < (")
                        .push_bind(cursor.created_at)
                        .push(", ")
                        .push_bind(cursor.id.clone())
                        .push(")");
                }
                query.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit.clamp(0, 1000));
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        use $crate::storage::sql::corrupt;
                        Ok($crate::storage::RequestSummary {
                            id: row.try_get("id")?,
                            source: $crate::storage::Source::parse(&row.try_get::<String, _>("source")?)?,
                            status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt("status", e))?,
                            identity_server: row.try_get("identity_server")?,
                            origin: row.try_get("origin")?,
                            mxid: row.try_get("mxid")?,
                            medium: assent_shared::Medium::parse(&row.try_get::<String, _>("medium")?)
                                .map_err(|e| corrupt("medium", e))?,
                            address: row.try_get("address")?,
                            initiator: row.try_get::<String, _>("initiator")?.parse().map_err(|e| corrupt("initiator", e))?,
                            created_at: row.try_get("created_at")?,
                            expires_at: row.try_get("expires_at")?,
                            decided_at: row.try_get("decided_at")?,
                            purged_at: row.try_get("purged_at")?,
                        })
                    })
                    .collect()
            }

            async fn count_requests(
                &self,
                filter: &$crate::storage::ListFilter,
                cap: i64,
            ) -> $crate::storage::Result<$crate::storage::Counted> {
                use assent_shared::RequestStatus;
                let mut query = sqlx::QueryBuilder::<<$pool as $crate::storage::sql::PoolDb>::Db>::new("");
                let searching = !filter.prefixes.is_empty();
                if searching {
                    // What the search matches, up to 5 × cap, by status: the
                    // prefixes' indexes find the matches, however few.
                    query.push("SELECT status, COUNT(*) AS n FROM (SELECT status FROM requests WHERE 1 = 1");
                    push_filter(&mut query, filter, false);
                    query.push(" LIMIT ").push_bind(cap.saturating_mul(5)).push(") AS matched GROUP BY status");
                } else {
                    // Each status up to cap, each from a covering index.
                    for (i, status) in RequestStatus::ALL.iter().enumerate() {
                        if i > 0 {
                            query.push(" UNION ALL ");
                        }
                        // The statuses are constants: written into the SQL.
                        query.push(format!(
                            "SELECT '{s}' AS status, COUNT(*) AS n FROM (SELECT 1 AS one FROM requests WHERE status = '{s}'",
                            s = status.as_str()
                        ));
                        push_filter(&mut query, filter, false);
                        query.push(" LIMIT ").push_bind(cap).push(") AS s");
                    }
                }
                let rows = query.build().fetch_all(&self.pool).await?;
                let mut counts = Vec::with_capacity(rows.len());
                for row in &rows {
                    let status: RequestStatus = row
                        .try_get::<String, _>("status")?
                        .parse()
                        .map_err(|e| $crate::storage::sql::corrupt("status", e))?;
                    counts.push((status, row.try_get::<i64, _>("n")?));
                }
                let complete = if searching {
                    counts.iter().map(|(_, n)| n).sum::<i64>() < cap.saturating_mul(5)
                } else {
                    counts.iter().all(|(_, n)| *n < cap)
                };
                Ok($crate::storage::Counted { counts, complete })
            }

            async fn origin_counts(&self, day: i64, week: i64) -> $crate::storage::Result<Vec<$crate::storage::OriginCount>> {
                let rows = sqlx::query(
                    "SELECT origin, status, COUNT(*) AS week, \
                     COALESCE(SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END), 0) AS day \
                     FROM requests WHERE created_at >= $2 GROUP BY origin, status",
                )
                .bind(day)
                .bind(week)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::storage::OriginCount {
                            origin: row.try_get("origin")?,
                            status: row
                                .try_get::<String, _>("status")?
                                .parse()
                                .map_err(|e| $crate::storage::sql::corrupt("status", e))?,
                            day: row.try_get::<i64, _>("day")?,
                            week: row.try_get::<i64, _>("week")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use sql_listing;
