//! The admin API, as the console calls it: the session cookie goes along by
//! itself (same origin); calls that change something carry the CSRF header.

use crate::api::ApiFailure;
use assent_shared::admin::{
    ActionOutcome, RequestDetail, RequestList, RetryBody, ServerStatsList, SignIn, Whoami,
    CSRF_HEADER,
};
use assent_shared::ApiError;
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;

const BASE: &str = "/_assent/v1/admin";

/// A failure, with the server's `retry_after_ms` on 429.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: ApiFailure,
    pub message: Option<String>,
    pub retry_after_ms: Option<i64>,
}

impl Failure {
    fn network() -> Self {
        Failure {
            kind: ApiFailure::Network,
            message: None,
            retry_after_ms: None,
        }
    }

    /// The session is gone (or was never there): the console asks to sign in.
    pub fn is_unauthorized(&self) -> bool {
        self.kind == ApiFailure::Unauthorized && self.message.as_deref() != Some(CSRF_REFUSED)
    }

    /// In words for the console.
    pub fn describe(&self) -> String {
        match (&self.kind, &self.message) {
            (ApiFailure::Network, _) => "The server could not be reached. Try again.".to_owned(),
            (ApiFailure::RateLimited, _) => match self.retry_after_ms {
                Some(ms) => format!("Too many attempts. Try again in {} s.", (ms + 999) / 1000),
                None => "Too many attempts. Try again later.".to_owned(),
            },
            (_, Some(message)) => capitalised(message),
            (ApiFailure::NotFound, None) => "Not found.".to_owned(),
            (other, None) => format!("The server refused: {other:?}."),
        }
    }
}

const CSRF_REFUSED: &str = "csrf";

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => {
            let rest: String = chars.collect();
            let end = if rest.ends_with('.') { "" } else { "." };
            format!("{}{rest}{end}", first.to_uppercase())
        }
        None => String::new(),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(flatten)]
    error: ApiError,
    retry_after_ms: Option<i64>,
}

async fn read<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let status = response.status();
    if response.ok() {
        return response.json::<T>().await.map_err(|e| Failure {
            kind: ApiFailure::Server {
                status,
                message: e.to_string(),
            },
            message: Some(format!("unreadable answer: {e}")),
            retry_after_ms: None,
        });
    }
    let body = response.json::<ErrorBody>().await.ok();
    let retry_after_ms = body.as_ref().and_then(|b| b.retry_after_ms);
    let message = body.as_ref().map(|b| {
        if b.error.errcode == "M_FORBIDDEN" && status == 403 {
            CSRF_REFUSED.to_owned()
        } else {
            b.error.error.clone()
        }
    });
    Err(Failure {
        kind: ApiFailure::from_status(status, body.map(|b| b.error)),
        message,
        retry_after_ms,
    })
}

async fn send<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Failure> {
    let response = request.send().await.map_err(|_| Failure::network())?;
    read(response).await
}

/// `GET …/whoami` with the session cookie.
pub async fn whoami() -> Result<Whoami, Failure> {
    send(Request::get(&format!("{BASE}/whoami"))).await
}

/// `POST …/session`: signs in; the answer sets the cookie.
pub async fn sign_in(token: &str) -> Result<Whoami, Failure> {
    let request = Request::post(&format!("{BASE}/session"))
        .header(CSRF_HEADER, "1")
        .json(&SignIn {
            token: token.to_owned(),
        })
        .map_err(|_| Failure::network())?;
    let response = request.send().await.map_err(|_| Failure::network())?;
    read(response).await
}

/// `DELETE …/session`.
pub async fn sign_out() -> Result<(), Failure> {
    let response = Request::delete(&format!("{BASE}/session"))
        .header(CSRF_HEADER, "1")
        .send()
        .await
        .map_err(|_| Failure::network())?;
    if response.ok() {
        Ok(())
    } else {
        read::<serde_json::Value>(response).await.map(|_| ())
    }
}

/// `GET …/requests?{query}` (`query` already encoded).
pub async fn list(query: &str) -> Result<RequestList, Failure> {
    send(Request::get(&format!("{BASE}/requests?{query}"))).await
}

/// `GET …/requests/{id}`.
pub async fn detail(id: &str) -> Result<RequestDetail, Failure> {
    send(Request::get(&format!("{BASE}/requests/{}", encode(id)))).await
}

/// `GET …/stats/servers`.
pub async fn server_stats() -> Result<ServerStatsList, Failure> {
    send(Request::get(&format!("{BASE}/stats/servers"))).await
}

/// The three actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Resend,
    Cancel,
    Retry,
}

impl Action {
    pub fn path(self) -> &'static str {
        match self {
            Action::Resend => "resend",
            Action::Cancel => "cancel",
            Action::Retry => "retry",
        }
    }
}

/// `POST …/requests/{id}/{action}`.
pub async fn act(id: &str, action: Action) -> Result<ActionOutcome, Failure> {
    let request = Request::post(&format!("{BASE}/requests/{}/{}", encode(id), action.path()))
        .header(CSRF_HEADER, "1")
        .json(&RetryBody::default())
        .map_err(|_| Failure::network())?;
    let response = request.send().await.map_err(|_| Failure::network())?;
    read(response).await
}

/// Percent-encodes a query value or path segment.
pub fn encode(value: &str) -> String {
    String::from(js_sys::encode_uri_component(value))
}
