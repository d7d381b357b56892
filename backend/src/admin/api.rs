//! The admin API: the list of requests, a request's whole story, the three
//! actions (resend, cancel, retry) and per-homeserver figures.

use super::Admin;
use crate::errors::{rate_limited, AdminError, ApiError};
use crate::lifecycle::{self, By, Outcome};
use crate::state::AppState;
use crate::storage::{
    AuditEvent, AuditKind, ListCursor, ListFilter, NewAudit, OutboxKind, OutboxRow, RequestSummary,
    StoredRequest,
};
use assent_shared::admin::{
    ActionOutcome, AdminRequest, AuditEntry, OutboxEntry, RequestDetail, RequestList, RetryBody,
    ServerStats, ServerStatsList, StatusCounts, COUNT_CAP, MAX_PAGE,
};
use assent_shared::{ApiError as ErrorBody, Medium, RequestStatus, ThreePid};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

const DEFAULT_PAGE: u32 = 50;
/// Resends an administrator may make per request per hour.
const RESENDS_PER_HOUR: usize = 3;
const RESEND_WINDOW_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Most homeservers the stats list.
const MAX_SERVERS: usize = 500;

fn invalid(error: impl Into<String>) -> ApiError {
    AdminError::InvalidParam(error.into()).into()
}

fn no_such_request() -> ApiError {
    AdminError::NoSuchRequest.into()
}

/// The list's query parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`; all when absent.
    status: Option<String>,
    /// The identity server's name, exactly.
    identity_server: Option<String>,
    /// The requesting homeserver, exactly.
    requesting_server: Option<String>,
    /// Created at or after (milliseconds since the Unix epoch).
    created_from: Option<i64>,
    /// Created before (milliseconds since the Unix epoch).
    created_before: Option<i64>,
    /// Search: the start of a Matrix ID (with or without `@`), an address or
    /// a server name. Case does not matter.
    q: Option<String>,
    /// The `next` of the previous page.
    from: Option<String>,
    /// Requests per page: 1 to 200, default 50.
    limit: Option<u32>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// No parameter may hold control characters (PostgreSQL refuses NUL in text).
fn printable(params: &ListParams) -> Result<(), ApiError> {
    let texts = [
        &params.status,
        &params.identity_server,
        &params.requesting_server,
        &params.q,
        &params.from,
    ];
    if texts
        .iter()
        .filter_map(|t| t.as_deref())
        .any(|t| t.chars().any(char::is_control))
    {
        return Err(invalid("parameters may not contain control characters"));
    }
    Ok(())
}

/// What a search term matches: its prefixes, as typed, in lower case, case
/// folded as addresses are stored (`Straße` finds `strasse`), and as a
/// Matrix ID's localpart.
pub fn search_prefixes(q: &str) -> Vec<String> {
    let q = q.trim();
    let lower = q.to_lowercase();
    let mut prefixes = Vec::new();
    for prefix in [q.to_owned(), lower.clone(), assent_shared::case_fold(q)] {
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    if !lower.starts_with('@') {
        prefixes.push(format!("@{lower}"));
    }
    prefixes
}

fn encode_cursor(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

fn decode_cursor(text: &str) -> Option<ListCursor> {
    let raw = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (at, id) = raw.split_once(':')?;
    if id.chars().any(char::is_control) {
        return None;
    }
    Some(ListCursor {
        created_at: at.parse().ok()?,
        id: id.to_owned(),
    })
}

fn parse_list(query: Option<&str>) -> Result<(ListFilter, Option<ListCursor>, u32), ApiError> {
    let params: ListParams = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| invalid(format!("the query is not understood: {e}")))?;
    printable(&params)?;
    let status = match non_empty(params.status) {
        None => None,
        Some(s) if s == "all" => None,
        Some(s) => Some(s.parse::<RequestStatus>().map_err(|_| {
            invalid("status must be pending, approved, denied, expired or cancelled")
        })?),
    };
    let q = non_empty(params.q);
    if q.as_ref().is_some_and(|q| q.chars().count() > 320) {
        return Err(invalid("q is longer than 320 characters"));
    }
    let from = match non_empty(params.from) {
        None => None,
        Some(text) => Some(decode_cursor(&text).ok_or_else(|| {
            invalid("from is not a cursor this server gave; start from the first page")
        })?),
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    if let (Some(a), Some(b)) = (params.created_from, params.created_before) {
        if a >= b {
            return Err(invalid("created_from must be before created_before"));
        }
    }
    let filter = ListFilter {
        status,
        identity_server: non_empty(params.identity_server),
        origin: non_empty(params.requesting_server).map(|s| s.to_lowercase()),
        created_from: params.created_from,
        created_before: params.created_before,
        prefixes: q.as_deref().map(search_prefixes).unwrap_or_default(),
    };
    Ok((filter, from, limit))
}

fn admin_request(r: &RequestSummary) -> AdminRequest {
    AdminRequest {
        id: r.id.clone(),
        status: r.status,
        source: r.source.as_str().to_owned(),
        identity_server: r.identity_server.clone(),
        requesting_server: r.origin.clone(),
        mxid: r.mxid.clone(),
        threepid: ThreePid {
            medium: r.medium,
            address: r.address.clone(),
        },
        initiator: r.initiator,
        created_at_ms: r.created_at,
        expires_at_ms: r.expires_at,
        decided_at_ms: r.decided_at,
        purged_at_ms: r.purged_at,
    }
}

fn summary_of(r: &StoredRequest) -> RequestSummary {
    RequestSummary {
        id: r.id.clone(),
        source: r.source,
        status: r.status,
        identity_server: r.identity_server.clone(),
        origin: r.origin.clone(),
        mxid: r.mxid.clone(),
        medium: r.medium,
        address: r.address.clone(),
        initiator: r.initiator,
        created_at: r.created_at,
        expires_at: r.expires_at,
        decided_at: r.decided_at,
        purged_at: r.purged_at,
    }
}

/// `GET /_assent/v1/admin/requests`: one page of requests, newest first,
/// with counts per status for the same filters.
#[utoipa::path(get, path = "/_assent/v1/admin/requests", tag = "requests",
    params(ListParams),
    responses(
        (status = 200, body = RequestList),
        (status = 400, body = ErrorBody, description = "a parameter is not understood"),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn list(
    _admin: Admin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<RequestList>, ApiError> {
    let (filter, from, limit) = parse_list(query.as_deref())?;
    // One more than asked says whether there is a next page.
    let (rows, counted) = tokio::join!(
        state
            .repo
            .list_requests(&filter, from.as_ref(), i64::from(limit) + 1),
        state.repo.count_requests(&filter, COUNT_CAP),
    );
    let mut rows = rows?;
    let next = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last()
            .map(|last| encode_cursor(last.created_at, &last.id))
    });
    let counted = counted?;
    let mut counts = StatusCounts::default();
    for (status, n) in counted.counts {
        counts.add(status, n);
    }
    Ok(Json(RequestList {
        requests: rows.iter().map(admin_request).collect(),
        next: next.flatten(),
        counts,
        counts_complete: counted.complete,
    }))
}

fn audit_entry(e: &AuditEvent) -> AuditEntry {
    AuditEntry {
        id: e.id,
        at_ms: e.at,
        kind: e.kind.clone(),
        actor: e.actor.clone(),
        detail: e.detail.clone(),
    }
}

fn outbox_entry(row: &OutboxRow) -> OutboxEntry {
    OutboxEntry {
        id: row.id,
        kind: row.kind.as_str().to_owned(),
        sink: row.sink.clone(),
        state: row.state.as_str().to_owned(),
        attempts: row.attempts,
        next_attempt_at_ms: row.next_attempt_at,
        last_error: row.last_error.clone(),
        created_at_ms: row.created_at,
        updated_at_ms: row.updated_at,
        requeued_at_ms: row.requeued_at,
    }
}

async fn load(state: &AppState, id: &str) -> Result<StoredRequest, ApiError> {
    state.repo.request(id).await?.ok_or_else(no_such_request)
}

/// `GET /_assent/v1/admin/requests/{id}`: a request with its whole audit
/// trail and its queued emails and relays.
#[utoipa::path(get, path = "/_assent/v1/admin/requests/{id}", tag = "requests",
    params(("id" = String, Path, description = "the request's id (`req_…`)")),
    responses(
        (status = 200, body = RequestDetail),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn detail(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RequestDetail>, ApiError> {
    let request = load(&state, &id).await?;
    let (audit, outbox) = tokio::join!(state.repo.audit_trail(&id), state.repo.outbox_for(&id));
    Ok(Json(RequestDetail {
        request: admin_request(&summary_of(&request)),
        origin_key_id: request.origin_key_id.clone(),
        verified_at_ms: request.verified_at,
        reason: request.reason.clone(),
        callback_url: request.callback_url.clone(),
        address_as_sent: request.address_as_sent.clone(),
        repeats: request.repeats,
        intake: request
            .raw
            .as_ref()
            .map(|raw| format!("{} {} ({} bytes)", raw.method, raw.path, raw.body.len())),
        decision_id: request.decision_id.clone(),
        decision: request
            .decision_doc
            .as_deref()
            .and_then(|doc| serde_json::from_str(doc).ok()),
        audit: audit?.iter().map(audit_entry).collect(),
        outbox: outbox?.iter().map(outbox_entry).collect(),
    }))
}

fn not_pending(request: &StoredRequest, action: &'static str) -> ApiError {
    AdminError::NotPending {
        status: request.status,
        action,
    }
    .into()
}

fn outcome(
    request: &StoredRequest,
    status: RequestStatus,
    message: impl Into<String>,
    requeued: Option<u64>,
) -> Json<ActionOutcome> {
    Json(ActionOutcome {
        request_id: request.id.clone(),
        status,
        message: message.into(),
        requeued,
    })
}

/// `POST /_assent/v1/admin/requests/{id}/resend`: a new consent link by
/// email; the old link stops working. At most 3 per request per hour.
#[utoipa::path(post, path = "/_assent/v1/admin/requests/{id}/resend", tag = "actions",
    params(("id" = String, Path, description = "the request's id")),
    responses(
        (status = 200, body = ActionOutcome, description = "a new email is queued"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the CSRF header is missing"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not pending, or no email address"),
        (status = 429, body = ErrorBody, description = "resent too often"),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn resend(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = load(&state, &id).await?;
    let now = state.now_ms();
    if request.status != RequestStatus::Pending || now >= request.expires_at {
        return Err(not_pending(&request, "resent"));
    }
    if request.medium != Medium::Email {
        return Err(AdminError::NoChannel.into());
    }
    let Some(is) = state.config.identity_server(&request.identity_server) else {
        return Err(AdminError::NotConfigured.into());
    };
    // Counted in the audit trail, so the limit holds across restarts and
    // replicas, and a resend that failed used up nothing.
    let trail = state.repo.audit_trail(&request.id).await?;
    let recent: Vec<i64> = trail
        .iter()
        .filter(|e| e.is(AuditKind::AdminResend) && e.at > now - RESEND_WINDOW_MS)
        .map(|e| e.at)
        .collect();
    if recent.len() >= RESENDS_PER_HOUR {
        let oldest = recent.iter().min().copied().unwrap_or(now);
        return Ok(rate_limited((oldest + RESEND_WINDOW_MS - now).max(1)));
    }
    let audit = NewAudit::new(
        AuditKind::AdminResend,
        Some(&admin.actor()),
        json!({"old_link": "dead"}),
    );
    let renewed =
        lifecycle::renew_link(&state, is, &request.id, &format!("resend-{now}"), &audit).await?;
    if renewed.is_none() {
        let current = load(&state, &id).await?;
        return Err(not_pending(&current, "resent"));
    }
    tracing::info!(request_id = %request.id, token_id = %admin.token_id, "an administrator resent the consent email");
    Ok(outcome(
        &request,
        RequestStatus::Pending,
        "A new link is on its way; the old link no longer works.",
        None,
    )
    .into_response())
}

/// `POST /_assent/v1/admin/requests/{id}/cancel`: decides `cancel` (nothing
/// is unbound); the signed decision goes to the webhooks.
#[utoipa::path(post, path = "/_assent/v1/admin/requests/{id}/cancel", tag = "actions",
    params(("id" = String, Path, description = "the request's id")),
    responses(
        (status = 200, body = ActionOutcome, description = "cancelled"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the CSRF header is missing"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already decided"),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn cancel(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ActionOutcome>, ApiError> {
    let request = load(&state, &id).await?;
    let actor = admin.actor();
    // A request whose time ran out is recorded as expired, not cancelled.
    match lifecycle::decide(
        &state,
        &request,
        RequestStatus::Cancelled,
        By::Admin(&actor),
    )
    .await?
    {
        Outcome::Now(_) => {
            tracing::info!(request_id = %request.id, token_id = %admin.token_id, "an administrator cancelled a request");
            Ok(outcome(
                &request,
                RequestStatus::Cancelled,
                "Cancelled: nothing will be unbound.",
                None,
            ))
        }
        Outcome::Final(current) => Err(not_pending(&current, "cancelled")),
        Outcome::Unknown => Err(no_such_request()),
    }
}

/// `POST /_assent/v1/admin/requests/{id}/retry`: puts the request's
/// given-up relays and emails (or only `kind`) back in the queue, due now,
/// with a fresh `relay_give_up_after`.
#[utoipa::path(post, path = "/_assent/v1/admin/requests/{id}/retry", tag = "actions",
    params(("id" = String, Path, description = "the request's id")),
    request_body(content = RetryBody, description = "optional: `{\"kind\": \"relay\"}` or `{\"kind\": \"email\"}`"),
    responses(
        (status = 200, body = ActionOutcome, description = "re-queued"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "the CSRF header is missing"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "nothing was given up"),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn retry(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ActionOutcome>, ApiError> {
    let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("the body is not understood: {e}")))?
    };
    let kind = match body.kind.as_deref() {
        None => None,
        Some("email") => Some(OutboxKind::Email),
        Some("relay") => Some(OutboxKind::Relay),
        Some(_) => return Err(invalid("kind must be email or relay")),
    };
    let request = load(&state, &id).await?;
    let now = state.now_ms();
    // An email is worth sending only while the owner can still decide.
    let open = request.status == RequestStatus::Pending && now < request.expires_at;
    let kind = match (kind, open) {
        (Some(OutboxKind::Email), false) => {
            return Err(AdminError::EmailNotNeeded(request.status).into())
        }
        (None, false) => Some(OutboxKind::Relay),
        (kind, _) => kind,
    };
    let audit = NewAudit::new(
        AuditKind::AdminRetry,
        Some(&admin.actor()),
        json!({"kind": kind.map_or("all", OutboxKind::as_str)}),
    );
    let requeued = state
        .repo
        .requeue_given_up(&request.id, kind, now, &audit)
        .await?;
    if requeued == 0 {
        return Err(AdminError::NothingToRetry.into());
    }
    state.outbox_wake.notify_one();
    state.relay_wake.notify_one();
    tracing::info!(request_id = %request.id, token_id = %admin.token_id, requeued, "an administrator re-queued given-up work");
    Ok(outcome(
        &request,
        request.status,
        format!("{requeued} queued again."),
        Some(requeued),
    ))
}

/// `GET /_assent/v1/admin/stats/servers`: per requesting homeserver, requests
/// by outcome over the last 24 hours and 7 days, busiest first.
#[utoipa::path(get, path = "/_assent/v1/admin/stats/servers", tag = "stats",
    responses((status = 200, body = ServerStatsList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn server_stats(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<ServerStatsList>, ApiError> {
    let now = state.now_ms();
    let rows = state
        .repo
        .origin_counts(now - DAY_MS, now - 7 * DAY_MS)
        .await?;
    let mut by_server: std::collections::BTreeMap<String, ServerStats> =
        std::collections::BTreeMap::new();
    for row in rows {
        let entry = by_server
            .entry(row.origin.clone())
            .or_insert_with(|| ServerStats {
                requesting_server: row.origin.clone(),
                last_24h: StatusCounts::default(),
                last_7d: StatusCounts::default(),
            });
        entry.last_24h.add(row.status, row.day);
        entry.last_7d.add(row.status, row.week);
    }
    let mut servers: Vec<ServerStats> = by_server.into_values().collect();
    servers.sort_by(|a, b| {
        (b.last_24h.total(), b.last_7d.total(), &a.requesting_server).cmp(&(
            a.last_24h.total(),
            a.last_7d.total(),
            &b.requesting_server,
        ))
    });
    servers.truncate(MAX_SERVERS);
    Ok(Json(ServerStatsList {
        servers,
        at_ms: now,
    }))
}

#[cfg(test)]
mod tests;
