//! Bearer tokens from the config: the administrators' (`[admin] tokens`)
//! and identity servers' (`api_tokens`). A token is given in the config as
//! the secret or as `sha256:<hex>` of it, compared in constant time, and
//! named in logs and audit events by the first 8 hex digits of its SHA-256.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token that matched, named by a short id of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    pub token_id: String,
}

/// Whether `presented` matches one of `configured`; returns the token id.
pub fn check_token(configured: &[String], presented: &str) -> Option<TokenMatch> {
    let digest = Sha256::digest(presented.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut found = false;
    for entry in configured {
        // Every entry is compared, match or not, so timing tells nothing.
        let matched = match entry.strip_prefix("sha256:") {
            Some(hash) => hash.to_ascii_lowercase().as_bytes().ct_eq(hex.as_bytes()),
            None => Sha256::digest(entry.as_bytes())
                .as_slice()
                .ct_eq(digest.as_slice()),
        };
        found |= bool::from(matched);
    }
    found.then(|| TokenMatch {
        token_id: hex[..8].to_owned(),
    })
}

/// The ids of the configured tokens (the first 8 hex digits of their SHA-256).
pub fn configured_ids(configured: &[String]) -> impl Iterator<Item = String> + '_ {
    configured
        .iter()
        .map(|entry| match entry.strip_prefix("sha256:") {
            Some(hash) => hash.get(..8).unwrap_or(hash).to_ascii_lowercase(),
            None => Sha256::digest(entry.as_bytes())
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
}

/// The token of an `Authorization: Bearer …` header, trimmed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}
