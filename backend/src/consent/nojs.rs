//! `/consent/{token}` without JavaScript (or WebAssembly): the app shell
//! carries a server-rendered page (askama) with the same disclosure, and
//! plain forms post the decision back to the same URL, through a
//! confirmation step. When the Leptos app starts, it removes that page
//! (`#assent-nojs`) and takes over.
//!
//! The forms need no cookie: the confirming form carries an HMAC of the
//! consent token and the decision under a secret derived from the signing
//! key, and a browser's `Sec-Fetch-Site` must say the post came from this
//! site. (Only someone who holds the link can reach the form at all.)

use super::view::{record_view, request_for_token, stored_for_token};
use crate::email;
use crate::state::AppState;
use crate::storage::StoredRequest;
use askama::Template;
use assent_shared::i18n::{fill, Lang, Texts};
use assent_shared::{OwnerDecision, RequestStatus};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::net::SocketAddr;

/// Which view the page shows.
pub enum NoJsState {
    Unknown,
    Pending,
    /// The confirmation step for `approve` or `deny`.
    Confirm(String),
    /// A decided (or expired, or cancelled) request: its status word.
    Final(String),
    /// The decision was not recorded, and why.
    Problem(String),
    /// Too many pages asked for from here.
    TooMany,
    /// The page could not be shown (the database did not answer, say).
    Failed(String),
    /// The request ended and its data was deleted: what to say, with when.
    Deleted(String),
}

/// A `Retry-After` value in whole seconds, at least one.
fn retry_after(ms: i64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from((ms.max(1).saturating_add(999) / 1000).max(1))
}

/// What the page says; all text, escaped by askama.
pub struct View {
    pub state: NoJsState,
    /// The words, in the reader's language (`Accept-Language`).
    pub t: &'static Texts,
    pub lang: Lang,
    /// `light` or `dark` when the address fixes it (`?theme=`).
    pub theme: Option<&'static str>,
    pub server: String,
    pub server_ascii: Option<String>,
    pub key_id: Option<String>,
    pub verified_at: Option<String>,
    pub mxid: String,
    pub address: String,
    /// The address as the request spelt it, when it used look-alike characters.
    pub address_as_sent: Option<String>,
    pub is_name: String,
    pub is_display: String,
    pub operator: String,
    pub privacy_url: Option<String>,
    /// How long the request's data is kept once it ended, in words.
    pub kept: String,
    pub initiator: &'static str,
    pub reason: Option<String>,
    pub asked_at: String,
    pub expires_at: String,
    pub decided_at: String,
    pub action: String,
    pub receipt: String,
    pub has_receipt: bool,
    pub csrf: String,
}

impl View {
    /// `template` with the request's facts in its holes.
    pub fn f(&self, template: &str) -> String {
        fill(
            template,
            &[
                ("server", self.server.as_str()),
                ("address", self.address.as_str()),
                ("sent", self.address_as_sent.as_deref().unwrap_or("")),
                ("mxid", self.mxid.as_str()),
                ("is", self.is_display.as_str()),
                ("expires", self.expires_at.as_str()),
                ("at", self.decided_at.as_str()),
                ("checked", self.verified_at.as_deref().unwrap_or("")),
                ("key", self.key_id.as_deref().unwrap_or("")),
                ("ascii", self.server_ascii.as_deref().unwrap_or("")),
                ("operator", self.operator.as_str()),
                ("reason", self.reason.as_deref().unwrap_or("")),
            ],
        )
    }

    /// Whether this is the page a plain visit shows (not a step of a form
    /// or a refusal): only then may the app replace it with its own.
    /// How long the request's data is kept, as a sentence.
    pub fn kept_text(&self) -> String {
        self.t.data_kept.replace("{retention}", &self.kept)
    }

    pub fn resting(&self) -> bool {
        matches!(
            self.state,
            NoJsState::Pending | NoJsState::Final(_) | NoJsState::Unknown
        )
    }

    /// The label of the time a request was closed: decided by the owner,
    /// or closed by expiry or an administrator.
    pub fn closed_label(&self) -> &'static str {
        match &self.state {
            NoJsState::Final(status) if status == "approved" || status == "denied" => {
                self.t.decided
            }
            _ => self.t.closed,
        }
    }

    /// Who started the request, in the page's words.
    pub fn why(&self) -> &'static str {
        match self.initiator {
            "admin" => self.t.why_admin,
            "deactivation" => self.t.why_deactivation,
            "user" => self.t.why_user,
            _ => self.t.why_unknown,
        }
    }
}

/// The reader's language, from `Accept-Language`.
fn lang_of(headers: &HeaderMap) -> Lang {
    headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language)
}

#[derive(Template)]
#[template(path = "consent/nojs.html")]
struct Page<'a> {
    v: &'a View,
}

fn view(
    state: &AppState,
    lang: Lang,
    token: &str,
    request: Option<&StoredRequest>,
    shown: NoJsState,
) -> View {
    let base = state.config.public_base();
    // Only something shaped like a token goes back into links.
    let (action, receipt) = if crate::tokens::looks_valid(token) {
        (
            format!("{base}consent/{token}"),
            format!("{base}_assent/v1/consent/{token}/receipt"),
        )
    } else {
        (base.clone(), base.clone())
    };
    let Some(r) = request else {
        return View {
            state: shown,
            t: lang.texts(),
            lang,
            theme: None,
            server: String::new(),
            server_ascii: None,
            key_id: None,
            verified_at: None,
            mxid: String::new(),
            address: String::new(),
            address_as_sent: None,
            is_name: String::new(),
            is_display: String::new(),
            operator: String::new(),
            privacy_url: None,
            kept: String::new(),
            initiator: "unknown",
            reason: None,
            asked_at: String::new(),
            expires_at: String::new(),
            decided_at: String::new(),
            action,
            receipt,
            has_receipt: false,
            csrf: String::new(),
        };
    };
    let is = state.config.identity_server(&r.identity_server);
    let letter = email::Letter::new(r, is, String::new());
    let csrf = match &shown {
        NoJsState::Confirm(decision) => csrf_for(state, token, decision),
        _ => String::new(),
    };
    View {
        state: shown,
        t: lang.texts(),
        lang,
        theme: None,
        server: letter.server,
        server_ascii: letter.server_ascii,
        key_id: if letter.verified { letter.key_id } else { None },
        verified_at: r.verified_at.map(email::utc_minutes),
        mxid: letter.mxid,
        address: letter.address,
        address_as_sent: letter.address_as_sent,
        is_name: letter.is_name,
        is_display: letter.is_display,
        operator: letter.operator,
        privacy_url: letter.privacy_url,
        kept: assent_shared::i18n::duration_words(
            i64::try_from(crate::lifecycle::retention::kept_at_most(&state.config).as_millis())
                .unwrap_or(i64::MAX),
            lang,
        ),
        initiator: letter.initiator,
        reason: letter.reason,
        asked_at: letter.asked_at,
        expires_at: letter.expires_at,
        decided_at: r.decided_at.map(email::utc_minutes).unwrap_or_default(),
        action,
        receipt,
        has_receipt: r.decision_doc.is_some(),
        csrf,
    }
}

/// The confirming form's proof that it came from this page.
pub(crate) fn csrf_for(state: &AppState, token: &str, decision: &str) -> String {
    use hmac::Mac;
    let secret = state.key.derive_secret("consent form");
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret) else {
        unreachable!("HMAC accepts a 32-byte key")
    };
    mac.update(token.as_bytes());
    mac.update(b"\0");
    mac.update(decision.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// How a stored request shows when nobody is deciding right now.
fn resting_state(state: &AppState, request: &StoredRequest) -> NoJsState {
    match request.status {
        RequestStatus::Pending if state.now_ms() >= request.expires_at => {
            NoJsState::Final("expired".to_owned())
        }
        RequestStatus::Pending => NoJsState::Pending,
        other => NoJsState::Final(other.as_str().to_owned()),
    }
}

fn render(state: &AppState, status: StatusCode, view: &View) -> Response {
    let html = Page { v: view }.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the consent page");
        format!("<p class=\"noscript\">{}</p>", view.t.unavailable)
    });
    let root = crate::assets::RootAttributes {
        lang: view.lang.code(),
        theme: view.theme,
    };
    state
        .web
        .page_with_server_html("'none'", &root, status, &html)
}

/// `light` or `dark` from `?theme=`, if the address fixes it.
fn theme_of(query: Option<&str>) -> Option<&'static str> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == "theme")
        .and_then(|(_, value)| match value.as_ref() {
            "light" => Some("light"),
            "dark" => Some("dark"),
            _ => None,
        })
}

/// `GET /consent/{token}`.
#[tracing::instrument(skip_all)]
pub async fn page(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&headers);
    let theme = theme_of(query.as_deref());
    let show = |status: StatusCode, request: Option<&StoredRequest>, shown: NoJsState| {
        let mut page = view(&state, lang, &token, request, shown);
        page.theme = theme;
        render(&state, status, &page)
    };
    if let Err(retry_after_ms) = state.limits.consent.hit(client.ip(), state.now_ms()) {
        // Only reading was refused: nothing about a decision to say.
        let mut response = show(StatusCode::TOO_MANY_REQUESTS, None, NoJsState::TooMany);
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry_after(retry_after_ms));
        return response;
    }
    match stored_for_token(&state, &token).await {
        Ok(request) if request.purged_at.is_some() => {
            let when = crate::email::utc_minutes(request.purged_at.unwrap_or_default());
            let text = lang.texts().deleted_text.replace("{deleted}", &when);
            show(StatusCode::GONE, None, NoJsState::Deleted(text))
        }
        Ok(request) => {
            record_view(&state, &request, "page").await;
            let shown = resting_state(&state, &request);
            show(StatusCode::OK, Some(&request), shown)
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            show(StatusCode::NOT_FOUND, None, NoJsState::Unknown)
        }
        Err(e) => show(e.status, None, NoJsState::Failed(e.error)),
    }
}

/// `POST /consent/{token}`: the form (`decision`, `step`, `csrf`).
#[tracing::instrument(skip_all)]
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = lang_of(&headers);
    let t = lang.texts();
    let problem =
        |state: &AppState, status: StatusCode, request: Option<&StoredRequest>, why: &str| {
            render(
                state,
                status,
                &view(
                    state,
                    lang,
                    &token,
                    request,
                    NoJsState::Problem(why.to_owned()),
                ),
            )
        };
    if let Err(retry_after_ms) = state.limits.consent.hit(client.ip(), state.now_ms()) {
        let mut response = problem(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            t.problem_too_many,
        );
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry_after(retry_after_ms));
        return response;
    }
    // Browsers say where a post came from; another site may not decide.
    // A header that is there but unreadable counts as another site's.
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return problem(&state, StatusCode::FORBIDDEN, None, t.problem_other_site);
        }
    }
    let mut decision = None;
    let mut step = None;
    let mut csrf = None;
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "decision" => decision = Some(value.into_owned()),
            "step" => step = Some(value.into_owned()),
            "csrf" => csrf = Some(value.into_owned()),
            _ => {}
        }
    }
    let request = match request_for_token(&state, &token).await {
        Ok(request) => request,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return render(
                &state,
                StatusCode::NOT_FOUND,
                &view(&state, lang, &token, None, NoJsState::Unknown),
            )
        }
        Err(e) => return problem(&state, e.status, None, &e.error),
    };
    let owner_decision = match decision.as_deref() {
        Some("approve") => OwnerDecision::Approve,
        Some("deny") => OwnerDecision::Deny,
        _ => {
            return problem(
                &state,
                StatusCode::BAD_REQUEST,
                Some(&request),
                t.problem_no_decision,
            )
        }
    };
    let word = owner_decision.as_str();
    match step.as_deref() {
        Some("review") => {
            let shown = match resting_state(&state, &request) {
                NoJsState::Pending => NoJsState::Confirm(word.to_owned()),
                other => other,
            };
            render(
                &state,
                StatusCode::OK,
                &view(&state, lang, &token, Some(&request), shown),
            )
        }
        Some("confirm") => {
            let expected = csrf_for(&state, &token, word);
            let given = csrf.unwrap_or_default();
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                given.as_bytes(),
                expected.as_bytes(),
            )) {
                return problem(
                    &state,
                    StatusCode::FORBIDDEN,
                    Some(&request),
                    t.problem_wrong_form,
                );
            }
            match crate::consent::record(
                &state,
                &token,
                owner_decision,
                crate::lifecycle::Via::Form,
            )
            .await
            {
                Ok(_) => page_after(&state, lang, &token).await,
                Err(e) if e.status == StatusCode::GONE => page_after(&state, lang, &token).await,
                Err(e) => problem(&state, e.status, Some(&request), &e.error),
            }
        }
        _ => problem(
            &state,
            StatusCode::BAD_REQUEST,
            Some(&request),
            t.problem_incomplete,
        ),
    }
}

/// The request as it now stands, after a decision (ours or an earlier one).
async fn page_after(state: &AppState, lang: Lang, token: &str) -> Response {
    match request_for_token(state, token).await {
        Ok(request) => {
            let shown = resting_state(state, &request);
            render(
                state,
                StatusCode::OK,
                &view(state, lang, token, Some(&request), shown),
            )
        }
        Err(e) => render(
            state,
            e.status,
            &view(state, lang, token, None, NoJsState::Problem(e.error)),
        ),
    }
}
