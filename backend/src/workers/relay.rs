//! Decisions carried out. A decision writes one relay outbox row per sink of
//! its identity server that applies to it, in the decision's own
//! transaction; this worker leases due rows (replicas never work one row at
//! once) and delivers them:
//!
//! - `replay` (approve only): the homeserver's original request, byte for
//!   byte, to the identity server's `upstream`, which checks the
//!   homeserver's signature itself;
//! - `sydent-internal` (approve only): `POST {url}/_matrix/identity/internal/unbind`;
//! - `webhook` (every outcome): the signed decision document, with the
//!   decision id as `Idempotency-Key`.
//!
//! A 2xx is delivered; a 4xx is a refusal, recorded with the answer and not
//! retried; network errors and 5xx are retried with exponential backoff and
//! jitter, for `relay_give_up_after` from the decision. Every attempt goes into the request's
//! audit trail. Delivery is at least once: a crash between the send and the
//! record resends after the lease, which the idempotency key (and an unbind's
//! own idempotence) makes harmless.

use crate::config::RelaySink;
use crate::lifecycle::jobs::RelayJob;
use crate::state::{AppState, UPSTREAM_TIMEOUT};
use crate::storage::AuditKind;
use crate::storage::{AttemptResult, NewAudit, OutboxKind, OutboxRow};
use serde_json::json;
use std::time::Duration;

/// Rows leased per round.
const BATCH: i64 = 16;
/// How often the worker looks for due rows when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A row's lease: longer than one delivery can take.
const LEASE: Duration = Duration::from_secs(120);
/// What must be left of the lease beyond one request's timeout for a send to start.
const LEASE_MARGIN_MS: i64 = 10_000;
/// Attempts before a delivery is given up whatever the time (a row whose
/// attempts keep crashing the process, say); the time limit is
/// `relay_give_up_after`.
pub const MAX_ATTEMPTS: i64 = 1000;
/// The first retry's delay, doubled each time up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How much of a refusal's body is kept in the audit trail.
const KEPT_BODY: usize = 2048;

/// Runs the worker until the process ends.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let owner = format!(
        "relay-{}-{}",
        std::process::id(),
        crate::tokens::hex(&state.random_bytes::<4>())
    );
    tokio::spawn(run(state, owner))
}

async fn run(state: AppState, owner: String) {
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = state.now_ms();
        let rows = match state
            .repo
            .claim_outbox(OutboxKind::Relay, &owner, now, lease_ms, BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the relay outbox; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if rows.is_empty() {
            let _ = tokio::time::timeout(IDLE_POLL, state.relay_wake.notified()).await;
            continue;
        }
        let mut sends = tokio::task::JoinSet::new();
        for row in rows {
            let (state, owner) = (state.clone(), owner.clone());
            sends.spawn(async move { attempt(&state, &owner, row).await });
        }
        while sends.join_next().await.is_some() {}
    }
}

/// One attempt at one row leased to `owner`, recorded whatever happens.
pub async fn attempt(state: &AppState, owner: &str, row: OutboxRow) {
    let (result, audit) = deliver(state, owner, &row).await;
    let now = state.now_ms();
    match state
        .repo
        .finish_outbox(row.id, owner, &result, now, &audit)
        .await
    {
        Ok(true) => {
            let sink = audit
                .detail
                .get("sink")
                .and_then(|s| s.as_str())
                .or(row.sink.as_deref())
                .unwrap_or("none");
            let outcome = audit
                .kind
                .as_str()
                .strip_prefix("relay_")
                .unwrap_or(audit.kind.as_str());
            state.metrics.relay(sink, outcome);
            tracing::info!(request = %row.request_id, outbox = row.id, attempt = row.attempts, event = audit.kind.as_str(), "relay attempt recorded");
            // The last relay sent or given up: the homeserver's replayable
            // request is no longer kept.
            if let Err(e) = state.repo.release_raw(&row.request_id).await {
                tracing::warn!(request = %row.request_id, error = %e, "cannot delete the raw intake of an ended request");
            }
        }
        Ok(false) => {
            tracing::warn!(request = %row.request_id, outbox = row.id, "lost the lease on a relay row before recording the attempt");
            if let Err(e) = state.repo.append_audit(&row.request_id, now, &audit).await {
                tracing::error!(request = %row.request_id, error = %e, "cannot record a relay attempt");
            }
        }
        Err(e) => {
            tracing::error!(request = %row.request_id, outbox = row.id, error = %e, "cannot record a relay attempt; it is retried when the lease ends");
        }
    }
}

/// One delivery of `row`, and how the row ends.
async fn deliver(state: &AppState, owner: &str, row: &OutboxRow) -> (AttemptResult, NewAudit) {
    let sink_label = row.sink.clone().unwrap_or_default();
    let audit = |kind: AuditKind, detail: serde_json::Value| {
        let mut detail = detail;
        detail["sink"] = json!(sink_label);
        detail["attempt"] = json!(row.attempts);
        NewAudit::new(kind, Some("relay"), detail)
    };
    let give_up = |why: String| {
        (
            AttemptResult::GiveUp { error: why.clone() },
            audit(AuditKind::RelayGivenUp, json!({"error": why})),
        )
    };
    if row.attempts > MAX_ATTEMPTS {
        return give_up("too many attempts".to_owned());
    }
    let Ok(job) = RelayJob::of(row) else {
        return give_up("the outbox row names no valid sink".to_owned());
    };
    let request = match state.repo.request(&row.request_id).await {
        Ok(Some(request)) => request,
        Ok(None) => return give_up("the request does not exist".to_owned()),
        Err(e) => {
            return retry(
                state,
                row,
                None,
                format!("cannot read the request: {e}"),
                &audit,
            )
        }
    };
    // Past the horizon nothing more is sent, whatever ended the last try.
    if horizon_passed(state, row, request.decided_at) {
        return give_up("relay_give_up_after has passed since the decision".to_owned());
    }
    let chain: Vec<&RelaySink> = job.chain().collect();
    let mut refused = None;
    for (position, sink) in chain.iter().copied().enumerate() {
        let sink_audit = |kind: AuditKind, detail: serde_json::Value| {
            let mut event = audit(kind, detail);
            event.detail["sink"] = json!(sink.name());
            if position > 0 {
                event.detail["fallback"] = json!(position);
            }
            event
        };
        if let Err(why) = lease_holds(state, owner, row.id).await {
            return (
                AttemptResult::RetryAt {
                    at: state.now_ms(),
                    error: format!("{why}; continued in a new attempt"),
                },
                sink_audit(AuditKind::RelayFailed, json!({ "error": why })),
            );
        }
        match send(state, &request, sink).await {
            Sent::Delivered(status) => {
                return (
                    AttemptResult::Done,
                    sink_audit(
                        AuditKind::RelayDelivered,
                        json!({"status": status, "decision_id": request.decision_id}),
                    ),
                );
            }
            Sent::Refused(status, body) => {
                let event = sink_audit(
                    AuditKind::RelayRefused,
                    json!({"status": status, "body": redact_sink(sink, &body)}),
                );
                // A refusal with a fallback left: recorded, then the next.
                if position + 1 < chain.len() {
                    if let Err(e) = state
                        .repo
                        .append_audit(&row.request_id, state.now_ms(), &event)
                        .await
                    {
                        tracing::error!(request = %row.request_id, error = %e, "cannot record a refused relay");
                    }
                }
                refused = Some((format!("refused with {status}"), event));
            }
            Sent::Unusable(why) => {
                // This sink can never take this request (nothing stored to
                // replay, say): recorded, then the next one.
                let event = sink_audit(AuditKind::RelayUnusable, json!({"error": why}));
                if position + 1 < chain.len() {
                    if let Err(e) = state
                        .repo
                        .append_audit(&row.request_id, state.now_ms(), &event)
                        .await
                    {
                        tracing::error!(request = %row.request_id, error = %e, "cannot record an unusable relay sink");
                    }
                }
                refused = Some((why, event));
            }
            Sent::Failed(why) => {
                // Tried again later from the first sink: a fallback is for
                // refusals, not for a sink that is down for a while.
                let why = redact_sink(sink, &why);
                return retry(state, row, request.decided_at, why, &sink_audit);
            }
        }
    }
    match refused {
        // The last sink's refusal (or why it could not be used) ends the row.
        Some((why, event)) => (AttemptResult::GiveUp { error: why }, event),
        None => give_up("no sink was tried".to_owned()),
    }
}

/// Whether `owner` may start a send on row `id`: it still holds the row
/// and, by the database's clock, enough of the lease is left for a whole
/// request and a margin, so that no other replica can take the row while
/// the request is under way. A replica that was paused past its lease, or
/// whose own clock runs fast or slow, learns it here, before it sends.
pub(crate) async fn lease_holds(state: &AppState, owner: &str, id: i64) -> Result<(), String> {
    let send_ms = i64::try_from(UPSTREAM_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    match state.repo.lease_left(id, owner).await {
        Ok(Some(left)) if left >= send_ms.saturating_add(LEASE_MARGIN_MS) => Ok(()),
        Ok(Some(_)) => Err("the lease ran short".to_owned()),
        Ok(None) => Err("the lease was lost".to_owned()),
        Err(e) => Err(format!("cannot check the lease: {e}")),
    }
}

/// What one sink made of one delivery.
enum Sent {
    Delivered(u16),
    /// A 4xx, with the answer's first [`KEPT_BODY`] characters.
    Refused(u16, String),
    /// Never deliverable (nothing to replay, say).
    Unusable(String),
    /// Worth another try later (network, 5xx).
    Failed(String),
}

async fn send(state: &AppState, request: &crate::storage::StoredRequest, sink: &RelaySink) -> Sent {
    let Some(document) = request.decision_doc.clone() else {
        return Sent::Unusable("the request has no decision document".to_owned());
    };
    let decision_id = request.decision_id.clone().unwrap_or_default();
    let http = state.upstream.clone();
    let call = match sink {
        RelaySink::Replay => {
            let Some(raw) = &request.raw else {
                return Sent::Unusable("no original request is stored to replay".to_owned());
            };
            let Some(is) = state.config.identity_server(&request.identity_server) else {
                return Sent::Unusable("the identity server is no longer configured".to_owned());
            };
            let Ok(method) = reqwest::Method::from_bytes(raw.method.as_bytes()) else {
                return Sent::Unusable(format!("the stored method {:?} is not valid", raw.method));
            };
            let url = is.upstream_url(&raw.path);
            let mut call = http.request(method, url).body(raw.body.clone());
            for (name, value) in &raw.headers {
                if name == "authorization" || name == "content-type" {
                    call = call.header(name.as_str(), value.as_str());
                }
            }
            call
        }
        RelaySink::SydentInternal { url } => {
            let url = format!(
                "{}/_matrix/identity/internal/unbind",
                url.as_str().trim_end_matches('/')
            );
            http.post(url).json(&json!({
                "medium": request.medium.as_str(),
                "address": request.address,
                "mxid": request.mxid,
            }))
        }
        RelaySink::Webhook { url } => http
            .post(url.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", decision_id.as_str())
            .body(document),
    };
    match call.timeout(UPSTREAM_TIMEOUT).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Sent::Delivered(status.as_u16());
            }
            let kept = first_bytes(response).await;
            match status.as_u16() {
                // Busy or slow, not a refusal: later.
                408 | 425 | 429 => Sent::Failed(format!("answered {status}: {kept}")),
                // Redirects are not followed, and do not go away by waiting.
                300..=499 => Sent::Refused(status.as_u16(), kept),
                _ => Sent::Failed(format!("answered {status}: {kept}")),
            }
        }
        Err(e) => Sent::Failed(without_url(&e)),
    }
}

/// The first [`KEPT_BODY`] bytes of an answer's body, as text; the rest is
/// never read.
async fn first_bytes(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < KEPT_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                kept.extend_from_slice(&chunk[..chunk.len().min(KEPT_BODY - kept.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// `text` without the sink's URL or its query values (a webhook's URL often
/// carries a secret, and error pages like to echo it).
fn redact_sink(sink: &RelaySink, text: &str) -> String {
    let url = match sink {
        RelaySink::Webhook { url } | RelaySink::SydentInternal { url } => url,
        RelaySink::Replay => return text.to_owned(),
    };
    let mut secrets: Vec<String> = vec![url.as_str().to_owned()];
    if let Some(query) = url.query() {
        secrets.push(query.to_owned());
    }
    secrets.extend(
        url.query_pairs()
            .map(|(_, value)| value.into_owned())
            .filter(|v| v.len() >= 4),
    );
    if let Some(password) = url.password() {
        secrets.push(password.to_owned());
    }
    crate::email::redact(text, &secrets)
}

/// Whether `relay_give_up_after` has passed since the decision, or since an
/// administrator re-queued the row, whichever is later.
fn horizon_passed(state: &AppState, row: &OutboxRow, decided_at: Option<i64>) -> bool {
    let horizon = i64::try_from(state.config.relay_give_up_after.as_millis()).unwrap_or(i64::MAX);
    let start = match (decided_at, row.requeued_at) {
        (Some(decided), Some(requeued)) => Some(decided.max(requeued)),
        (decided, requeued) => decided.or(requeued),
    };
    start.is_some_and(|at| state.now_ms() >= at.saturating_add(horizon))
}

/// A failure worth another try: later, or given up once
/// `relay_give_up_after` has passed since the decision (or past
/// [`MAX_ATTEMPTS`]).
fn retry(
    state: &AppState,
    row: &OutboxRow,
    decided_at: Option<i64>,
    error: String,
    audit: &dyn Fn(AuditKind, serde_json::Value) -> NewAudit,
) -> (AttemptResult, NewAudit) {
    if row.attempts >= MAX_ATTEMPTS || horizon_passed(state, row, decided_at) {
        return (
            AttemptResult::GiveUp {
                error: error.clone(),
            },
            audit(AuditKind::RelayGivenUp, json!({"error": error})),
        );
    }
    let at = state
        .now_ms()
        .saturating_add(backoff_ms(state, row.attempts));
    (
        AttemptResult::RetryAt {
            at,
            error: error.clone(),
        },
        audit(
            AuditKind::RelayFailed,
            json!({"error": error, "retry_at": at}),
        ),
    )
}

/// [`RETRY_INITIAL`] doubled per attempt, at most [`RETRY_MAX`], spread by
/// ±20 % so that many failed deliveries do not retry in step.
fn backoff_ms(state: &AppState, attempts: i64) -> i64 {
    let initial = RETRY_INITIAL.as_millis() as f64;
    let max = RETRY_MAX.as_millis() as f64;
    let doublings = attempts.saturating_sub(1).clamp(0, 40) as i32;
    let base = (initial * 2f64.powi(doublings)).min(max);
    let [a, b] = state.random_bytes::<2>();
    let unit = f64::from(u16::from_le_bytes([a, b])) / f64::from(u16::MAX);
    (base * (0.8 + 0.4 * unit)).min(max).round() as i64
}

/// An error without its URL (a webhook's URL may carry a secret).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    format!("the request {kind}")
}

#[cfg(test)]
mod tests;
