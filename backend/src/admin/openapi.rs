//! The admin API's routes and their OpenAPI document, built together: a
//! route is added here with its description, so the document served at
//! `/_assent/v1/admin/openapi.json` lists exactly what the router serves.

use super::{api, tombstones, Admin};
use crate::state::AppState;
use axum::extract::Extension;
use axum::Json;
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Assent admin API",
        description = "See and steer the unbind requests Assent holds. Authenticate with \
            `Authorization: Bearer <admin token>` (a token from `[admin] tokens`), or with the \
            console's session cookie; calls that change something with the cookie must carry \
            the `X-Assent-CSRF` header. Errors are `{\"errcode\", \"error\"}`."
    ),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(super::SESSION_COOKIE))),
        );
    }
}

/// `GET /_assent/v1/admin/openapi.json`: this document.
#[utoipa::path(get, path = "/_assent/v1/admin/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, body = assent_shared::ApiError)),
    security(("bearer" = []), ("session" = [])))]
async fn document(_admin: Admin, Extension(doc): Extension<Arc<Document>>) -> Json<Document> {
    Json(doc.as_ref().clone())
}

/// The admin routes and their document.
pub fn router() -> (axum::Router<AppState>, Document) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(super::whoami))
        .routes(routes!(super::sign_in, super::sign_out))
        .routes(routes!(api::list))
        .routes(routes!(api::detail))
        .routes(routes!(api::resend))
        .routes(routes!(api::cancel))
        .routes(routes!(api::retry))
        .routes(routes!(api::server_stats))
        .routes(routes!(tombstones::purge))
        .routes(routes!(tombstones::search))
        .routes(routes!(document))
        .split_for_parts();
    let router = router.layer(Extension(Arc::new(doc.clone())));
    (router, doc)
}
