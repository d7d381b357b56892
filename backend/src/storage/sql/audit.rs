//! The audit trail. The SQL both databases run, as a macro that
//! [`sql_repository`](super::sql_repository) expands for each.

macro_rules! sql_audit {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::AuditStore for $name {
            async fn append_audit(
                &self,
                request_id: &str,
                at: i64,
                event: &$crate::storage::NewAudit,
            ) -> $crate::storage::Result<()> {
                // Not onto a tombstone: a late event (a worker that lost its
                // lease) could carry the personal data the purge deleted.
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO audit_events (request_id, at, kind, actor, detail) \
                     SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
                     (SELECT 1 FROM requests WHERE id = $1 AND purged_at IS NOT NULL)",
                )
                .bind(request_id)
                .bind(at)
                .bind(event.kind.as_str())
                .bind(&event.actor)
                .bind(event.detail.to_string())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn audit_trail(&self, request_id: &str) -> $crate::storage::Result<Vec<$crate::storage::AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, request_id, at, kind, actor, detail FROM audit_events WHERE request_id = $1 ORDER BY id",
                )
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::storage::AuditEvent {
                            id: row.try_get("id")?,
                            request_id: row.try_get("request_id")?,
                            at: row.try_get("at")?,
                            kind: row.try_get("kind")?,
                            actor: row.try_get("actor")?,
                            detail: $crate::storage::sql::parse_json("audit detail", &row.try_get::<String, _>("detail")?)?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use sql_audit;
