//! The one place that talks to the server: typed requests over the shared
//! types, and the failures a page can show.

use assent_shared::{
    ApiError, ConsentView, DecidedVia, DecisionOutcome, DecisionRequest, OwnerDecision,
};
use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;

/// What can go wrong, in the terms a page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiFailure {
    /// The link or object is not known (404).
    NotFound,
    /// Credentials missing or refused (401/403).
    Unauthorized,
    /// Already decided (409).
    Conflict,
    /// Expired (410).
    Gone,
    /// Too many attempts (429).
    RateLimited,
    /// The server could not be reached.
    Network,
    /// Anything else, with the server's words when it gave some.
    Server { status: u16, message: String },
}

impl ApiFailure {
    /// Maps an HTTP status (and the error body, if any) to a failure.
    pub fn from_status(status: u16, body: Option<ApiError>) -> Self {
        match status {
            404 => ApiFailure::NotFound,
            401 | 403 => ApiFailure::Unauthorized,
            409 => ApiFailure::Conflict,
            410 => ApiFailure::Gone,
            429 => ApiFailure::RateLimited,
            _ => ApiFailure::Server {
                status,
                message: body
                    .map(|b| b.error)
                    .unwrap_or_else(|| "the server did not say why".to_owned()),
            },
        }
    }
}

async fn read<T: DeserializeOwned>(response: Response) -> Result<T, ApiFailure> {
    if response.ok() {
        return response.json::<T>().await.map_err(|e| ApiFailure::Server {
            status: response.status(),
            message: format!("unreadable answer: {e}"),
        });
    }
    let body = response.json::<ApiError>().await.ok();
    Err(ApiFailure::from_status(response.status(), body))
}

/// Tokens are 51 URL-safe characters (43 in links made before tokens began
/// with their time); anything else is not sent at all.
pub fn is_token(token: &str) -> bool {
    (token.len() == 51 || token.len() == 43)
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /_assent/v1/consent/{token}`
pub async fn consent_view(token: &str) -> Result<ConsentView, ApiFailure> {
    if !is_token(token) {
        return Err(ApiFailure::NotFound);
    }
    let response = Request::get(&format!("/_assent/v1/consent/{token}"))
        .send()
        .await
        .map_err(|_| ApiFailure::Network)?;
    read(response).await
}

/// What became of a decision the owner sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// This decision was recorded.
    Now(DecisionOutcome),
    /// The request had been decided before (another tab, another device):
    /// the stored outcome, which is the one that counts.
    Before(DecisionOutcome),
}

/// `POST /_assent/v1/consent/{token}/decision`
pub async fn decide(
    token: &str,
    decision: OwnerDecision,
    via: DecidedVia,
) -> Result<Decided, ApiFailure> {
    if !is_token(token) {
        return Err(ApiFailure::NotFound);
    }
    let response = Request::post(&format!("/_assent/v1/consent/{token}/decision"))
        .json(&DecisionRequest {
            decision,
            via: Some(via),
        })
        .map_err(|_| ApiFailure::Network)?
        .send()
        .await
        .map_err(|_| ApiFailure::Network)?;
    if response.status() == 409 {
        if let Ok(outcome) = response.json::<DecisionOutcome>().await {
            return Ok(Decided::Before(outcome));
        }
        return Err(ApiFailure::Conflict);
    }
    read(response).await.map(Decided::Now)
}

/// Where the signed decision document is downloaded.
pub fn receipt_url(token: &str) -> String {
    format!("/_assent/v1/consent/{token}/receipt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn statuses_become_the_failures_pages_show() {
        assert_eq!(ApiFailure::from_status(404, None), ApiFailure::NotFound);
        assert_eq!(ApiFailure::from_status(401, None), ApiFailure::Unauthorized);
        assert_eq!(ApiFailure::from_status(409, None), ApiFailure::Conflict);
        assert_eq!(ApiFailure::from_status(410, None), ApiFailure::Gone);
        let body = ApiError {
            errcode: "M_UNKNOWN".into(),
            error: "database down".into(),
        };
        assert_eq!(
            ApiFailure::from_status(503, Some(body)),
            ApiFailure::Server {
                status: 503,
                message: "database down".into()
            }
        );
    }

    #[wasm_bindgen_test]
    fn only_well_formed_tokens_are_sent() {
        assert!(is_token(&"a".repeat(51)));
        assert!(is_token(&"a".repeat(43)));
        assert!(!is_token("short"));
        for len in [42, 44, 50, 52] {
            assert!(!is_token(&"a".repeat(len)), "{len}");
        }
        assert!(!is_token(&format!("{}/", "a".repeat(42))));
    }
}
