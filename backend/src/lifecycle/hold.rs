//! Holding a request: one transaction stores the pending request, its first
//! audit event and, for an email address, the email outbox row.

use super::link::{email_outbox, mint};
use crate::config::IdentityServerConfig;
use crate::state::AppState;
use crate::storage::AuditKind;
use crate::storage::{
    Inserted, NewAudit, NewHold, NewRequest, RawIntake, Source, StorageError, StoredRequest,
};
use assent_shared::{Initiator, Medium, ThreePid};

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
    format!(
        "req_{:012x}{}",
        now.max(0),
        crate::tokens::hex(&state.random_bytes::<8>())
    )
}

/// A request ready to store: the rows, and what its caller answers with.
pub struct Prepared {
    pub hold: NewHold,
    /// The consent token the email will carry.
    pub token: String,
    pub id: String,
    pub expires_at: i64,
}

/// The rows that hold `input`: a fresh id and consent token (only its hash
/// is kept), the first audit event and, for an email address, its email.
pub fn prepare(state: &AppState, input: ToHold<'_>) -> Prepared {
    let now = state.now_ms();
    let ttl = i64::try_from(state.config.request_ttl.as_millis()).unwrap_or(i64::MAX);
    let id = new_request_id(state, now);
    let link = mint(state, now);
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
        token_hash: link.token_hash(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        raw: input.raw,
    };
    let audit = NewAudit::new(AuditKind::Received, input.actor.as_deref(), input.audit);
    // Phone numbers have no channel to ask the owner: held for admins only.
    let outbox = match request.medium {
        Medium::Email => vec![email_outbox(
            state,
            input.identity_server,
            &id,
            &link.nonce,
            "initial",
        )],
        Medium::Msisdn => Vec::new(),
    };
    Prepared {
        token: link.token,
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
pub async fn hold(state: &AppState, input: ToHold<'_>) -> Result<Held, StorageError> {
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

/// An unbind the owner proved to the identity server.
pub struct Proven {
    pub mxid: String,
    /// The server part of `mxid`.
    pub mxid_server: String,
    pub threepid: ThreePid,
    /// The address as the request spelt it, when that differs from the
    /// normalised one beyond ASCII case.
    pub address_as_sent: Option<String>,
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
    proven: Proven,
    upstream_status: u16,
) -> Result<(), StorageError> {
    let now = state.now_ms();
    let id = new_request_id(state, now);
    // A token no one is ever sent: the column wants one.
    let token_hash = mint(state, now).token_hash();
    let request = NewRequest {
        id,
        source: Source::OwnerProven,
        identity_server: is.name.to_ascii_lowercase(),
        origin: proven.mxid_server.to_ascii_lowercase(),
        origin_key_id: None,
        verified_at: None,
        mxid: proven.mxid,
        medium: proven.threepid.medium,
        address: proven.threepid.address,
        address_as_sent: proven.address_as_sent,
        initiator: Initiator::User,
        reason: None,
        callback_url: None,
        token_hash,
        created_at: now,
        expires_at: now,
        raw: None,
    };
    let audit = NewAudit::new(
        AuditKind::OwnerProven,
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
