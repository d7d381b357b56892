//! Admin sessions. The SQL both databases run, as a macro that
//! [`sql_repository`](super::sql_repository) expands for each.

macro_rules! sql_sessions {
    ($name:ident, $pool:ty, $row:ty, $kind:literal, $claim:literal, $bytes:literal, $walk:literal,
     $by_address:literal, $by_expiry:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::SessionStore for $name {
            async fn create_session(&self, session: &$crate::storage::AdminSession) -> $crate::storage::Result<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
                    .bind(session.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(session.id_hash.as_slice())
                    .bind(&session.token_id)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(&self, id_hash: &[u8], now: i64) -> $crate::storage::Result<Option<$crate::storage::AdminSession>> {
                let row = sqlx::query(
                    "SELECT id_hash, token_id, created_at, expires_at FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2",
                )
                .bind(id_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok($crate::storage::AdminSession {
                        id_hash: row.try_get("id_hash")?,
                        token_id: row.try_get("token_id")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, id_hash: &[u8]) -> $crate::storage::Result<bool> {
                let _turn = self.write_turn().await;
                let deleted = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.writer)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use sql_sessions;
