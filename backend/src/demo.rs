//! `assent serve --demo`: one pending request to look at straight away.

use crate::config::{BindingCheck, Config, IdentityServerConfig, RelaySink};
use crate::lifecycle::{self, ToHold};
use crate::state::AppState;
use crate::storage::AuditKind;
use crate::storage::{Inserted, NewAudit, Source, StorageError};
use assent_shared::{Initiator, Medium, ThreePid};
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
    let is = state
        .config
        .identity_server(DEMO_IDENTITY_SERVER)
        .ok_or_else(|| {
            StorageError::Corrupt("the demo identity server is not configured".to_owned())
        })?;
    let now = state.now_ms();
    let prepared = lifecycle::prepare(
        state,
        ToHold {
            source: Source::Demo,
            identity_server: is,
            origin: DEMO_HOMESERVER.to_owned(),
            origin_key_id: Some("ed25519:a_demo".to_owned()),
            verified_at: Some(now),
            mxid: DEMO_MXID.to_owned(),
            threepid: ThreePid {
                medium: Medium::Email,
                address: DEMO_ADDRESS.to_owned(),
            },
            address_as_sent: None,
            initiator: Initiator::Admin,
            reason: Some("Demo request: an administrator of hs.example.org removed this address from the account.".to_owned()),
            callback_url: None,
            raw: None,
            audit: json!({"source": "demo"}),
            actor: Some("demo".to_owned()),
        },
    );
    let inserted = state
        .repo
        .insert_requests(std::slice::from_ref(&prepared.hold))
        .await
        .and_then(crate::storage::only)?;
    let existing = match inserted {
        Inserted::Created => return Ok(state.config.consent_link(&prepared.token)),
        Inserted::JoinedPending(existing) => existing,
    };
    let audit = NewAudit::new(
        AuditKind::TokenReplaced,
        Some("demo"),
        json!({"why": "demo restarted"}),
    );
    let token = lifecycle::renew_link(state, is, &existing.id, &format!("demo-{now}"), &audit)
        .await?
        .ok_or_else(|| StorageError::Corrupt("the demo request is no longer pending".to_owned()))?;
    Ok(state.config.consent_link(&token))
}
