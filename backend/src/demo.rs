//! `assent serve --demo`: one pending request to look at straight away.

use crate::app::AppState;
use crate::config::{BindingCheck, Config, IdentityServerConfig, RelaySink};
use crate::intake::hold::email_outbox;
use crate::storage::{Inserted, NewAudit, NewRequest, Source, StorageError};
use crate::tokens;
use assent_shared::{Initiator, Medium};
use serde_json::json;

pub const DEMO_IDENTITY_SERVER: &str = "matrix.example.org";
pub const DEMO_HOMESERVER: &str = "hs.example.org";
pub const DEMO_MXID: &str = "@alice:hs.example.org";
pub const DEMO_ADDRESS: &str = "alice@example.org";

/// Makes sure the demo request's identity server is described, so the page
/// can say who holds the binding, when the config names none.
pub fn prepare_config(config: &mut Config) {
    if config.identity_server(DEMO_IDENTITY_SERVER).is_none() {
        config.identity_servers.push(IdentityServerConfig {
            name: DEMO_IDENTITY_SERVER.to_owned(),
            display_name: "Example identity server (demo)".to_owned(),
            operator: "Example Ltd".to_owned(),
            privacy_policy_url: url::Url::parse("https://example.org/privacy").ok(),
            // Nothing is relayed in the demo: the upstream is a closed port.
            upstream: url::Url::parse("http://127.0.0.1:9/").unwrap_or_else(|_| unreachable!()),
            proxy_all: false,
            binding_check: BindingCheck::None,
            frame_ancestors: Vec::new(),
            api_tokens: Vec::new(),
            api_tokens_file: None,
            language: None,
            relay: vec![RelaySink::Replay],
        });
    }
}

/// Seeds the demo request, or gives the one seeded by an earlier run a fresh
/// link, and returns the consent link.
pub async fn seed(state: &AppState) -> Result<String, StorageError> {
    let now = state.now_ms();
    let nonce = tokens::nonce(now, state.random_bytes::<32>());
    let token = state.tokens.mint(&nonce);
    let ttl = i64::try_from(state.config.request_ttl.as_millis()).unwrap_or(i64::MAX);
    let id = crate::intake::hold::new_request_id(state, now);
    let request = NewRequest {
        id,
        source: Source::Demo,
        identity_server: DEMO_IDENTITY_SERVER.to_owned(),
        origin: DEMO_HOMESERVER.to_owned(),
        origin_key_id: Some("ed25519:a_demo".to_owned()),
        verified_at: Some(now),
        mxid: DEMO_MXID.to_owned(),
        medium: Medium::Email,
        address: DEMO_ADDRESS.to_owned(),
        address_as_sent: None,
        initiator: Initiator::Admin,
        reason: Some("Demo request: an administrator of hs.example.org removed this address from the account.".to_owned()),
        callback_url: None,
        token_hash: tokens::hash(&token),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        raw: None,
    };
    let audit = NewAudit::new("received", Some("demo"), json!({"source": "demo"}));
    let is = state
        .config
        .identity_server(DEMO_IDENTITY_SERVER)
        .ok_or_else(|| {
            StorageError::Corrupt("the demo identity server is not configured".to_owned())
        })?;
    let email = email_outbox(state, is, &request.id, &nonce, "initial");
    match state
        .repo
        .insert_request(&request, &audit, &[email])
        .await?
    {
        Inserted::Created => {}
        Inserted::JoinedPending(existing) => {
            let audit = NewAudit::new(
                "token_replaced",
                Some("demo"),
                json!({"why": "demo restarted"}),
            );
            state
                .repo
                .replace_token(
                    &existing.id,
                    &request.token_hash,
                    now,
                    &audit,
                    &[email_outbox(
                        state,
                        is,
                        &existing.id,
                        &nonce,
                        &format!("demo-{now}"),
                    )],
                )
                .await?;
        }
    }
    Ok(state.config.consent_link(&token))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
