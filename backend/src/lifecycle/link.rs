//! Consent links: minted when a request is held, renewed when an
//! administrator resends one. Only the token's hash is stored; the email
//! worker makes the token again from the nonce its outbox row carries.

use super::jobs::EmailJob;
use crate::config::IdentityServerConfig;
use crate::state::AppState;
use crate::storage::{NewAudit, NewOutbox, StorageError};
use crate::tokens::{self, NONCE_LEN};

/// A fresh consent link: the token in it and the nonce it is made from.
pub struct Link {
    pub token: String,
    pub nonce: [u8; NONCE_LEN],
}

impl Link {
    /// What storage keeps of the token.
    pub fn token_hash(&self) -> Vec<u8> {
        tokens::hash(&self.token)
    }
}

/// A new consent link, made at `now`.
pub fn mint(state: &AppState, now: i64) -> Link {
    let nonce = tokens::nonce(now, state.random_bytes::<32>());
    Link {
        token: state.tokens.mint(&nonce),
        nonce,
    }
}

/// The email outbox row for a request: the nonce the consent token is made
/// from, and the language to write in. `purpose` keeps each email apart
/// (`initial`, one per resend).
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
    EmailJob {
        nonce: nonce.to_vec(),
        language,
        purpose: purpose.to_owned(),
    }
    .outbox(request_id)
}

/// Gives the pending request `request_id` a new consent link and queues its
/// email; the old link stops working. `None` when the request is no longer
/// pending.
pub async fn renew_link(
    state: &AppState,
    is: &IdentityServerConfig,
    request_id: &str,
    purpose: &str,
    audit: &NewAudit,
) -> Result<Option<String>, StorageError> {
    let now = state.now_ms();
    let link = mint(state, now);
    let email = email_outbox(state, is, request_id, &link.nonce, purpose);
    let replaced = state
        .repo
        .replace_token(request_id, &link.token_hash(), now, audit, &[email])
        .await?;
    if !replaced {
        return Ok(None);
    }
    state.outbox_wake.notify_one();
    Ok(Some(link.token))
}
