//! The owner's side: the consent page (the app, its embed and the
//! no-JavaScript form), what it shows, and the owner's decision.
//!
//! - `view`: the request a token opens, and the visit in the audit trail;
//! - `decision`: `POST …/decision` and the signed receipt;
//! - `nojs`: the server-rendered page and its form.
//!
//! Every route is rate-limited per client address; tokens are looked up by
//! their hash.

mod decision;
pub mod nojs;
#[cfg(test)]
mod tests;
mod view;

pub use decision::{parse_decision, record};
pub use view::{record_view, request_for_token, view_of};

use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

/// Largest form or decision body read.
const MAX_BODY: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_assent/v1/consent/{token}", get(view::consent_view))
        .route(
            "/_assent/v1/consent/{token}/decision",
            post(decision::decide).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route(
            "/_assent/v1/consent/{token}/receipt",
            get(decision::receipt),
        )
        .route(
            "/consent/{token}",
            get(nojs::page)
                .post(nojs::submit)
                .layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/embed/consent/{token}", get(embed_page))
}

/// `/embed/consent/{token}`: framable only by the origins configured for the
/// identity server that holds this request's binding.
pub async fn embed_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let ancestors = match request_for_token(&state, &token).await {
        Ok(request) => state
            .config
            .identity_server(&request.identity_server)
            .map(|is| is.frame_ancestors.join(" "))
            .filter(|list| !list.is_empty()),
        Err(_) => None,
    };
    state.web.page(ancestors.as_deref().unwrap_or("'none'"))
}
