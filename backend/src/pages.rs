//! The page routes that are not the consent page: the app shell at `/`,
//! the admin console's shell, and the front end's files.

use crate::state::AppState;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(app_page))
        .route("/admin", get(console_page))
        .route("/admin/{*rest}", get(console_page))
}

/// `/`: the app shell, never framable.
pub async fn app_page(State(state): State<AppState>) -> Response {
    state.web.page("'none'")
}

/// `/admin…`: the console's shell, never framable. It holds no data: every
/// figure comes from the admin API, which wants credentials.
pub async fn console_page(State(state): State<AppState>) -> Response {
    state.web.console_page()
}

/// Everything else under `/`: the front end's files.
pub async fn static_file(State(state): State<AppState>, request: Request) -> Response {
    state.web.file(request).await
}
