//! Intake: what homeservers and identity servers send.
//!
//! - `gateway`: the two unbind routes, reached under the identity server's name;
//! - `xmatrix`: the homeserver's `X-Matrix` signature (its keys and the
//!   batched checks are in `homeserver_keys`);
//! - `body`: the unbind body;
//! - `upstream`: forwarding to the real identity server and the binding check;
//! - `passthrough`: `proxy_all`;
//! - `integrated`: `POST /_assent/v1/requests` for identity servers that call Assent.

pub mod body;
pub mod gateway;
pub mod integrated;
pub mod passthrough;
#[cfg(test)]
mod tests;
pub mod upstream;
pub mod xmatrix;

use crate::state::AppState;
use crate::storage::IntakeLookup;
use axum::routing::{get, post};
use axum::Router;

/// The unbind routes and integrated mode's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_assent/v1/requests", post(integrated::create))
        .route("/_assent/v1/requests/{id}", get(integrated::get_request))
        .route(passthrough::UNBIND_PATHS[0], post(gateway::unbind))
        .route(passthrough::UNBIND_PATHS[1], post(gateway::unbind))
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
