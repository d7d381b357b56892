//! The email outbox worker. Rows are written in the same transaction as the
//! request that calls for them; this worker leases due rows (so replicas
//! never work on the same row at once), sends them, and records every
//! attempt in the request's audit trail together with the row's new state.
//!
//! Delivery is at least once: a crash after the SMTP server accepted a
//! message but before the row was marked sent resends it once the lease runs
//! out, with the same `Message-ID`. Request handlers never wait for any of it.

use crate::email::transport::{Mailer, SendError};
use crate::email::{self, Language, Letter};
use crate::lifecycle::jobs::EmailJob;
use crate::state::AppState;
use crate::storage::AuditKind;
use crate::storage::{AttemptResult, NewAudit, OutboxKind, OutboxRow};
use crate::tokens;
use assent_shared::{Medium, RequestStatus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Rows leased per round.
const BATCH: i64 = 8;
/// How often the worker looks for due rows when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Most SMTP steps (connect, greeting, EHLO, STARTTLS, EHLO, AUTH in two,
/// MAIL, RCPT, DATA, the message, a pool check) one send can take, each
/// bounded by `email.timeout`.
const SMTP_STEPS: u32 = 12;

/// The lease on a row: time to prepare the message, then a whole send.
pub fn lease(config: &crate::config::EmailConfig) -> Duration {
    config
        .timeout
        .saturating_mul(SMTP_STEPS + 4)
        .clamp(Duration::from_secs(4), Duration::from_secs(4 * 3600))
}

/// The longest one send can take: what must be left of the lease, by the
/// database's clock, for a send to start.
fn longest_send(config: &crate::config::EmailConfig) -> i64 {
    i64::try_from(config.timeout.saturating_mul(SMTP_STEPS).as_millis()).unwrap_or(i64::MAX)
}

/// Runs the worker until the process ends.
pub fn spawn(state: AppState, mailer: Mailer) -> tokio::task::JoinHandle<()> {
    let owner = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        crate::tokens::hex(&state.random_bytes::<4>())
    );
    tokio::spawn(run(state, Arc::new(mailer), owner))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "assent".to_owned())
}

async fn run(state: AppState, mailer: Arc<Mailer>, owner: String) {
    let lease = lease(&state.config.email);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = state.now_ms();
        let rows = match state
            .repo
            .claim_outbox(OutboxKind::Email, &owner, now, lease_ms, BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the email outbox; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if rows.is_empty() {
            let _ = tokio::time::timeout(IDLE_POLL, state.outbox_wake.notified()).await;
            continue;
        }
        let mut sends = tokio::task::JoinSet::new();
        for row in rows {
            let (state, mailer, owner) = (state.clone(), mailer.clone(), owner.clone());
            sends.spawn(async move { attempt(&state, &mailer, &owner, row).await });
        }
        while sends.join_next().await.is_some() {}
    }
}

/// One attempt at one row, recorded whatever happens.
async fn attempt(state: &AppState, mailer: &Mailer, owner: &str, row: OutboxRow) {
    let (result, audit) = match prepare(state, &row).await {
        Err((result, audit)) => (result, audit),
        Ok(prepared) => {
            // Every send must be over before the lease ends, by the
            // database's clock, so that no other worker can take the row
            // meanwhile; the send itself ends by itself (every step has a
            // timeout).
            let sent = match state.repo.lease_left(row.id, owner).await {
                Ok(Some(left)) if left >= longest_send(&state.config.email) => {
                    mailer.send(prepared.message, &prepared.stem).await
                }
                Ok(Some(_)) => Err(SendError::Temporary(
                    "not sent: the lease ran short".to_owned(),
                )),
                Ok(None) => Err(SendError::Temporary(
                    "not sent: the lease was lost".to_owned(),
                )),
                Err(e) => Err(SendError::Temporary(format!(
                    "not sent: cannot check the lease: {e}"
                ))),
            };
            outcome(state, &row, sent, &prepared.secrets, &prepared.message_id)
        }
    };
    let now = state.now_ms();
    let recorded = state
        .repo
        .finish_outbox(row.id, owner, &result, now, &audit)
        .await;
    if let Ok(true) = recorded {
        let outcome = match audit.kind {
            AuditKind::EmailSent => "sent",
            AuditKind::EmailFailed => "retried",
            AuditKind::EmailGivenUp => "failed",
            _ => "skipped",
        };
        state.metrics.email(outcome);
    }
    match recorded {
        Ok(true) => match &result {
            AttemptResult::Done => {
                tracing::info!(request = %row.request_id, outbox = row.id, attempt = row.attempts, event = %audit.kind, "email outbox row done")
            }
            AttemptResult::RetryAt { at, error } => {
                tracing::warn!(request = %row.request_id, outbox = row.id, attempt = row.attempts, retry_in_ms = at - now, error = %error, "email not sent; will retry")
            }
            AttemptResult::GiveUp { error } => {
                tracing::error!(request = %row.request_id, outbox = row.id, attempt = row.attempts, error = %error, "email given up")
            }
        },
        Ok(false) => {
            // Another worker has the row now; the attempt still belongs in
            // the audit trail.
            tracing::warn!(request = %row.request_id, outbox = row.id, "lost the lease on an email row before recording the attempt");
            if let Err(e) = state.repo.append_audit(&row.request_id, now, &audit).await {
                tracing::error!(request = %row.request_id, error = %e, "cannot record an email attempt");
            }
        }
        Err(e) => {
            tracing::error!(request = %row.request_id, outbox = row.id, error = %e, "cannot record an email attempt; it will be retried when the lease ends");
        }
    }
}

struct Prepared {
    message: lettre::Message,
    /// Names the file for the file transport.
    stem: String,
    message_id: String,
    /// What must never reach a log or an error record: the address, the
    /// token, the link.
    secrets: Vec<String>,
}

/// The message for `row`, or how the row ends without one.
async fn prepare(state: &AppState, row: &OutboxRow) -> Result<Prepared, (AttemptResult, NewAudit)> {
    let give_up = |why: &str| {
        (
            AttemptResult::GiveUp {
                error: why.to_owned(),
            },
            NewAudit::new(
                AuditKind::EmailGivenUp,
                Some("email"),
                json!({"attempt": row.attempts, "error": why}),
            ),
        )
    };
    let skip = |why: &str| {
        (
            AttemptResult::Done,
            NewAudit::new(AuditKind::EmailSkipped, Some("email"), json!({"why": why})),
        )
    };
    // Attempts that never got recorded (crashes, a database gone at the
    // wrong moment) must not turn into endless resends.
    if row.attempts > i64::from(state.config.email.max_attempts) {
        return Err(give_up("too many attempts"));
    }
    let request = match state.repo.request(&row.request_id).await {
        Ok(Some(request)) => request,
        Ok(None) => return Err(give_up("the request does not exist")),
        Err(e) => {
            let error = format!("cannot read the request: {e}");
            return Err((
                AttemptResult::RetryAt {
                    at: state.now_ms() + 5_000,
                    error: error.clone(),
                },
                NewAudit::new(
                    AuditKind::EmailFailed,
                    Some("email"),
                    json!({"attempt": row.attempts, "error": error}),
                ),
            ));
        }
    };
    if request.status != RequestStatus::Pending {
        return Err(skip(&format!(
            "the request is already {}",
            request.status.as_str()
        )));
    }
    if request.expires_at <= state.now_ms() {
        return Err(skip("the request has expired"));
    }
    if request.medium != Medium::Email {
        return Err(give_up("only email addresses can be written to"));
    }
    let Ok(job) = EmailJob::of(row) else {
        return Err(give_up("the outbox row is not an email"));
    };
    let Some(token) = state.tokens.token(&job.nonce) else {
        return Err(give_up("the outbox row has no valid nonce"));
    };
    if tokens::hash(&token) != request.token_hash {
        return Err(skip("a newer link replaced this one"));
    }
    let language = Language::from_code(&job.language);
    let is = state.config.identity_server(&request.identity_server);
    let link = state.config.consent_link(&token);
    let letter = Letter::new(&request, is, link.clone())
        .kept_for(crate::lifecycle::retention::kept_at_most(&state.config));
    let from = state
        .config
        .email
        .from
        .parse()
        .map_err(|_| give_up("email.from is not a mailbox"))?;
    let message_id = email::message_id(&row.idempotency_key, &from);
    let message = email::compose(
        &state.config,
        &letter,
        language,
        message_id.clone(),
        state.now_ms(),
    )
    .map_err(|e| give_up(&e.to_string()))?;
    let stem = format!(
        "{}.{}",
        message_id
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or(&request.id),
        row.attempts
    );
    Ok(Prepared {
        message,
        stem,
        message_id,
        secrets: vec![request.address, link, token],
    })
}

/// What a send's result means for the row.
fn outcome(
    state: &AppState,
    row: &OutboxRow,
    sent: Result<(), SendError>,
    secrets: &[String],
    message_id: &str,
) -> (AttemptResult, NewAudit) {
    let config = &state.config.email;
    match sent {
        Ok(()) => (
            AttemptResult::Done,
            NewAudit::new(
                AuditKind::EmailSent,
                Some("email"),
                json!({"attempt": row.attempts, "message_id": message_id}),
            ),
        ),
        Err(SendError::Permanent(error)) => {
            let error = email::redact(&error, secrets);
            (
                AttemptResult::GiveUp {
                    error: error.clone(),
                },
                NewAudit::new(
                    AuditKind::EmailGivenUp,
                    Some("email"),
                    json!({"attempt": row.attempts, "error": error, "permanent": true}),
                ),
            )
        }
        Err(SendError::Temporary(error)) => {
            let error = email::redact(&error, secrets);
            if row.attempts >= i64::from(config.max_attempts) {
                let error = format!("{error} (gave up after {} attempts)", row.attempts);
                return (
                    AttemptResult::GiveUp {
                        error: error.clone(),
                    },
                    NewAudit::new(
                        AuditKind::EmailGivenUp,
                        Some("email"),
                        json!({"attempt": row.attempts, "error": error, "permanent": false}),
                    ),
                );
            }
            let at = state
                .now_ms()
                .saturating_add(backoff_ms(state, config, row.attempts));
            (
                AttemptResult::RetryAt {
                    at,
                    error: error.clone(),
                },
                NewAudit::new(
                    AuditKind::EmailFailed,
                    Some("email"),
                    json!({"attempt": row.attempts, "error": error, "retry_at": at}),
                ),
            )
        }
    }
}

/// `retry_initial` doubled for each attempt after the first, at most
/// `retry_max`, then spread by ±20 % so that failures do not retry in step.
fn backoff_ms(state: &AppState, config: &crate::config::EmailConfig, attempts: i64) -> i64 {
    let initial = config.retry_initial.as_millis() as f64;
    let max = config.retry_max.as_millis() as f64;
    let doublings = attempts.saturating_sub(1).clamp(0, 40) as i32;
    let base = (initial * 2f64.powi(doublings)).min(max);
    let [a, b] = state.random_bytes::<2>();
    let unit = f64::from(u16::from_le_bytes([a, b])) / f64::from(u16::MAX);
    (base * (0.8 + 0.4 * unit)).min(max).round() as i64
}

/// Sends every email that is due once, as the worker does (for tests that
/// want the mail files of the `file` transport).
#[cfg(test)]
pub(crate) async fn send_due(state: &AppState) {
    let mailer = Mailer::new(&state.config.email, &state.config.data_dir).unwrap();
    let lease_ms = i64::try_from(lease(&state.config.email).as_millis()).unwrap();
    let rows = state
        .repo
        .claim_outbox(OutboxKind::Email, "test", state.now_ms(), lease_ms, 100)
        .await
        .unwrap();
    for row in rows {
        attempt(state, &mailer, "test", row).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmailConfig;

    /// A fresh lease leaves room for a whole send (with time to prepare
    /// it) at every timeout the configuration allows (up to 10 minutes);
    /// past the lease's cap no send could finish, and none starts.
    #[test]
    fn a_fresh_lease_leaves_room_for_a_whole_send() {
        let mut config = EmailConfig::default();
        for seconds in [1, 30, 600, u64::MAX / 1000] {
            config.timeout = Duration::from_secs(seconds);
            let lease_ms = i64::try_from(lease(&config).as_millis()).unwrap();
            let send = longest_send(&config);
            if seconds <= 600 {
                assert!(send < lease_ms, "{seconds}: {send} >= {lease_ms}");
            } else {
                assert!(
                    send >= lease_ms,
                    "{seconds}: a send cannot fit the capped lease"
                );
            }
        }
    }

    /// An email queued before tokens began with their time carries a
    /// 32-byte nonce: it still gets its (43-character) link, and a row whose
    /// nonce is neither kind is given up with a clear reason.
    #[tokio::test]
    async fn an_email_queued_with_an_old_nonce_still_gets_its_link() {
        let h = crate::test_support::Harness::new(|_| {}).await;
        let (id, token) = h.hold("olaf").await;
        let row = h.state.repo.outbox_for(&id).await.unwrap().remove(0);
        let prepared = prepare(&h.state, &row).await.ok().unwrap();
        assert!(prepared.secrets.contains(&token));

        let is = h
            .state
            .config
            .identity_server(crate::test_support::IS_NAME)
            .unwrap();
        let legacy = h.state.tokens.token(&[4; 32]).unwrap();
        let email = crate::lifecycle::email_outbox(&h.state, is, &id, &[4; 32], "old");
        let audit = NewAudit::new(AuditKind::TokenReplaced, Some("test"), json!({}));
        assert!(h
            .state
            .repo
            .replace_token(&id, &tokens::hash(&legacy), 1, &audit, &[email])
            .await
            .unwrap());
        let rows = h.state.repo.outbox_for(&id).await.unwrap();
        let old = rows
            .iter()
            .find(|r| r.idempotency_key.ends_with(":old"))
            .unwrap();
        let prepared = prepare(&h.state, old).await.ok().unwrap();
        assert_eq!(legacy.len(), tokens::LEGACY_TOKEN_LEN);
        assert!(prepared.secrets.contains(&legacy));
        assert!(prepared
            .secrets
            .iter()
            .any(|s| s.ends_with(&format!("/consent/{legacy}"))));
        // The first row's link was replaced: skipped, not sent.
        assert!(matches!(
            prepare(&h.state, &rows[0]).await.err().unwrap().0,
            AttemptResult::Done
        ));

        let mut bad = old.clone();
        bad.payload["nonce"] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [4; 33]
        ));
        match prepare(&h.state, &bad).await.err().unwrap().0 {
            AttemptResult::GiveUp { error } => assert!(error.contains("nonce"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
