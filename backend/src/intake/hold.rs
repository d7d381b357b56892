//! Holding a request: one transaction stores the pending request, its first
//! audit event and, for an email address, the email outbox row.

use crate::app::AppState;
use crate::config::IdentityServerConfig;
use crate::errors::ApiError;
use crate::storage::{
    Inserted, IntakeLookup, NewAudit, NewHold, NewOutbox, NewRequest, OutboxKind, RawIntake,
    Source, StoredRequest,
};
use crate::tokens;
use assent_shared::{Initiator, Medium, ThreePid};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What is known about a request that is about to be held.
pub struct ToHold<'a> {
    pub source: Source,
    pub identity_server: &'a IdentityServerConfig,
    pub origin: String,
    pub origin_key_id: Option<String>,
    pub verified_at: Option<i64>,
    pub mxid: String,
    pub threepid: ThreePid,
    /// The address as the request spelt it, when that differs from the
    /// normalised one beyond ASCII case.
    pub address_as_sent: Option<String>,
    pub initiator: Initiator,
    pub reason: Option<String>,
    pub callback_url: Option<String>,
    pub raw: Option<RawIntake>,
    /// Extra facts for the first audit event.
    pub audit: serde_json::Value,
    pub actor: Option<String>,
}

pub enum Held {
    Created {
        id: String,
        expires_at: i64,
    },
    /// The same request was already pending: nothing new was stored.
    Joined(Box<StoredRequest>),
}

/// `req_` + the creation time `now` in milliseconds (12 hex digits) + 64
/// random bits. Ids sort by creation time, so new rows land at the end of
/// the indexes that contain them instead of all over them; with the row's
/// own `created_at` as `now`, the admin list's order (newest first, then by
/// id) is the ids' order.
pub fn new_request_id(state: &AppState, now: i64) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(32);
    let _ = write!(id, "req_{:012x}", now.max(0));
    for b in state.random_bytes::<8>() {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The window of `limits.holds_per_address_per_hour`.
pub const ADDRESS_WINDOW_MS: i64 = 3_600_000;

/// `Some(retry_after_ms)` when the address already has its allowance of new
/// requests this hour. Counted in the database, so it holds across restarts
/// and replicas; requests racing for one address may pass it by a few.
pub fn address_retry_after(state: &AppState, lookup: &IntakeLookup, now: i64) -> Option<i64> {
    let limit = i64::from(state.config.limits.holds_per_address_per_hour);
    (lookup.recent_for_address >= limit)
        .then(|| (lookup.oldest_recent.unwrap_or(now) + ADDRESS_WINDOW_MS - now).max(1))
}

/// The email outbox row for a request: the nonce the consent token is made
/// from, and the language to write in.
pub fn email_outbox(
    state: &AppState,
    is: &IdentityServerConfig,
    request_id: &str,
    nonce: &[u8],
    purpose: &str,
) -> NewOutbox {
    let language = is
        .language
        .clone()
        .unwrap_or_else(|| state.config.email.language.clone());
    NewOutbox {
        kind: OutboxKind::Email,
        sink: None,
        idempotency_key: format!("email:{request_id}:{purpose}"),
        payload: serde_json::json!({
            "nonce": URL_SAFE_NO_PAD.encode(nonce),
            "language": language,
            "purpose": purpose,
        }),
    }
}

/// Records that a pending request past its time has expired (nothing is
/// unbound), so that a new request for the same address can be held. If it
/// was decided meanwhile, that decision stands.
pub async fn expire_overdue(state: &AppState, request: &StoredRequest) -> Result<(), ApiError> {
    let now = state.now_ms();
    let decision =
        crate::decision::decide(state, request, assent_shared::RequestStatus::Expired, now)
            .map_err(|e| ApiError::internal(format!("cannot sign the expiry: {e}")))?;
    let audit = NewAudit::new(
        "decided",
        Some("system"),
        serde_json::json!({"decision": "expire", "decision_id": decision.decision_id, "why": "no answer before expires_at"}),
    );
    let relay = crate::relay::rows_for(state, &request.identity_server, &decision);
    if let crate::storage::Decided::Now = state
        .repo
        .decide(&request.id, &decision, &audit, &relay)
        .await?
    {
        state.metrics.decided("expire");
    }
    state.relay_wake.notify_one();
    tracing::info!(request_id = %request.id, "request expired on a repeat after its time");
    Ok(())
}

/// A request ready to store: the rows, and what its caller answers with.
pub struct Prepared {
    pub hold: NewHold,
    pub id: String,
    pub expires_at: i64,
}

/// The rows that hold `input`: a fresh id and consent token (only its hash
/// is kept), the first audit event and, for an email address, its email.
pub fn prepare(state: &AppState, input: ToHold<'_>) -> Prepared {
    let now = state.now_ms();
    let ttl = i64::try_from(state.config.request_ttl.as_millis()).unwrap_or(i64::MAX);
    let id = new_request_id(state, now);
    let nonce = tokens::nonce(now, state.random_bytes::<32>());
    let token = state.tokens.mint(&nonce);
    let request = NewRequest {
        id: id.clone(),
        source: input.source,
        identity_server: input.identity_server.name.to_ascii_lowercase(),
        origin: input.origin,
        origin_key_id: input.origin_key_id,
        verified_at: input.verified_at,
        mxid: input.mxid,
        medium: input.threepid.medium,
        address: input.threepid.address,
        address_as_sent: input.address_as_sent,
        initiator: input.initiator,
        reason: input.reason,
        callback_url: input.callback_url,
        token_hash: tokens::hash(&token),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        raw: input.raw,
    };
    let audit = NewAudit::new("received", input.actor.as_deref(), input.audit);
    // Phone numbers have no channel to ask the owner: held for admins only.
    let outbox = match request.medium {
        Medium::Email => vec![email_outbox(
            state,
            input.identity_server,
            &id,
            &nonce,
            "initial",
        )],
        Medium::Msisdn => Vec::new(),
    };
    Prepared {
        expires_at: request.expires_at,
        hold: NewHold {
            request,
            audit,
            outbox,
        },
        id,
    }
}

/// After a request was stored: its email, if any, goes out.
pub fn created(state: &AppState, id: String, expires_at: i64, email: bool) -> Held {
    if email {
        state.outbox_wake.notify_one();
    }
    Held::Created { id, expires_at }
}

/// Stores the request as pending (or joins the pending one), with its email.
pub async fn hold(state: &AppState, input: ToHold<'_>) -> Result<Held, ApiError> {
    let prepared = prepare(state, input);
    let inserted = state
        .repo
        .insert_requests(std::slice::from_ref(&prepared.hold))
        .await
        .and_then(crate::storage::only)?;
    match inserted {
        Inserted::Created => Ok(created(
            state,
            prepared.id,
            prepared.expires_at,
            !prepared.hold.outbox.is_empty(),
        )),
        Inserted::JoinedPending(existing) => Ok(Held::Joined(existing)),
    }
}

/// Records an unbind the owner proved with the upstream's validation session
/// (`sid` + `client_secret`) and the upstream carried out. The upstream
/// checked the session, not Assent, and no one verified the Matrix ID the
/// body names: so it is stored as proven by that session, already approved,
/// and nothing is signed in the owner's name. A request for the same address
/// still pending is left to its owner.
pub async fn record_owner_proven(
    state: &AppState,
    is: &IdentityServerConfig,
    unbind: &crate::intake::body::UnbindBody,
    upstream_status: u16,
) -> Result<(), ApiError> {
    let now = state.now_ms();
    let id = new_request_id(state, now);
    // A token no one is ever sent: the column wants one.
    let token = state
        .tokens
        .mint(&tokens::nonce(now, state.random_bytes::<32>()));
    let threepid = &unbind.threepid;
    let request = NewRequest {
        id,
        source: Source::OwnerProven,
        identity_server: is.name.to_ascii_lowercase(),
        origin: unbind.mxid_server.to_ascii_lowercase(),
        origin_key_id: None,
        verified_at: None,
        mxid: unbind.mxid.clone(),
        medium: threepid.medium,
        address: threepid.address.clone(),
        address_as_sent: threepid
            .is_look_alike(&unbind.address_as_sent)
            .then(|| unbind.address_as_sent.clone()),
        initiator: Initiator::User,
        reason: None,
        callback_url: None,
        token_hash: tokens::hash(&token),
        created_at: now,
        expires_at: now,
        raw: None,
    };
    let audit = NewAudit::new(
        "owner_proven",
        None,
        serde_json::json!({
            "proof": "validation session at the identity server",
            "upstream_status": upstream_status,
            "mxid_verified": false,
        }),
    );
    state.repo.record_proven(&request, &audit).await?;
    Ok(())
}
