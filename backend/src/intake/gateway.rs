//! The two unbind routes, reached under the identity server's own name:
//! `POST /_matrix/identity/v2/3pid/unbind` and the legacy
//! `POST /_matrix/identity/api/v1/3pid/unbind`.
//!
//! In order: pick the identity server, read and check the body, pass
//! owner-proven unbinds through (without the homeserver's credentials),
//! apply the phone-number policy, verify the homeserver's signature, apply
//! rate limits, join or answer repeats, check the binding, then hold.
//!
//! The one rule: a homeserver-signed unbind without a validation session
//! reaches the upstream only as the replay of the owner's approval (or under
//! `msisdn_policy = "forward"`). An address that is not bound is answered
//! here, as sydent answers an unbind of nothing.

use super::body::{self, UnbindBody};
use super::upstream::{self, Binding};
use super::xmatrix::{self, XMatrixError};
use crate::config::{BindingCheck, HeldResponse, IdentityServerConfig, MsisdnPolicy};
use crate::errors::{rate_limited, ApiError, IntakeError};
use crate::homeserver_keys::key_fetch::KeySource;
use crate::lifecycle::{self, hold, By, Held, Prepared, ToHold};
use crate::state::AppState;
use crate::storage::{HoldNew, RawIntake, RequestKey, Source, StoredRequest};
use assent_shared::{Initiator, Medium, RequestStatus};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// How long after a bind a validation session stops being one the
/// homeserver that carried the bind could hold: sydent's session lifetime
/// (24 hours from validation, which comes before the bind) and an hour.
const SESSION_TRUSTED_AFTER_MS: i64 = 25 * 3_600_000;

/// Headers kept with a held request, for the record and for a replay.
const KEPT_HEADERS: [header::HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::HOST,
    header::USER_AGENT,
];

/// The identity server a request is for: the one the `X-Matrix` header's
/// `destination` names, else the one whose name is the `Host`, else the only
/// one configured. The signature check decides whether the choice was right.
pub fn identity_server_for<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    destination: Option<&str>,
) -> Option<&'a IdentityServerConfig> {
    let config = &state.config;
    if let Some(is) = destination.and_then(|d| config.identity_server(d)) {
        return Some(is);
    }
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        if let Some(is) = config.identity_server(host) {
            return Some(is);
        }
        let without_port = host.rsplit_once(':').map_or(host, |(name, _)| name);
        if let Some(is) = config.identity_server(without_port) {
            return Some(is);
        }
    }
    match config.identity_servers.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}

fn unauthorized(error: impl Into<String>) -> ApiError {
    IntakeError::Unauthorized(error.into()).into()
}

fn from_xmatrix(e: XMatrixError) -> ApiError {
    match e {
        XMatrixError::BadBody(_) => IntakeError::NotJson(e.to_string()).into(),
        XMatrixError::Missing | XMatrixError::Malformed(_) => unauthorized(format!(
            "{e}; a homeserver must sign unbinds (Authorization: X-Matrix origin=…,key=…,sig=…)"
        )),
        XMatrixError::WrongDestination(_)
        | XMatrixError::UnsupportedAlgorithm(_)
        | XMatrixError::BadSignature => unauthorized(e.to_string()),
    }
}

/// What a homeserver is told while its request is held.
pub fn held_answer(held_response: HeldResponse) -> Response {
    match held_response {
        HeldResponse::Accepted => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        HeldResponse::Forbidden => IntakeError::Forbidden(
            "the owner of this address must approve the unbind; they have been asked".to_owned(),
        )
        .into_response(),
        HeldResponse::NotSupported => IntakeError::NotSupported(
            "unbinds need the address owner's consent here; they have been asked".to_owned(),
        )
        .into_response(),
    }
}

/// The answer to a repeat of a request that was already decided.
fn decided_answer(state: &AppState, stored: &StoredRequest) -> Response {
    match stored.status {
        RequestStatus::Approved => nothing_to_unbind(),
        _ => held_answer(state.config.held_response),
    }
}

/// What sydent answers an unbind of an address that is not bound: `200 {}`.
fn nothing_to_unbind() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

/// The answer a decision still gives to a repeat of its request, whatever
/// the repeat's bytes: an approval or an administrator's cancel for
/// `request_ttl` after it, a denial for `deny_cooldown`. An expiry is no
/// one's answer: a repeat after it is a new request (within the address's
/// hourly allowance).
fn standing_decision(state: &AppState, stored: &StoredRequest, now: i64) -> Option<Response> {
    let decided_at = stored.decided_at?;
    let stands_for = match stored.status {
        RequestStatus::Approved | RequestStatus::Cancelled => state.config.request_ttl,
        RequestStatus::Denied => state.config.deny_cooldown,
        RequestStatus::Expired | RequestStatus::Pending => return None,
    };
    let stands_ms = i64::try_from(stands_for.as_millis()).unwrap_or(i64::MAX);
    (now < decided_at.saturating_add(stands_ms)).then(|| decided_answer(state, stored))
}

pub async fn unbind(State(state): State<AppState>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(response) => response,
        Err(e) => {
            state.metrics.intake(if e.status.is_server_error() {
                "error"
            } else {
                "refused"
            });
            e.into_response()
        }
    }
}

async fn handle(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, incoming) = request.into_parts();
    let client = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed_header = xmatrix::parse_header(authorization.as_deref());
    let destination = parsed_header
        .as_ref()
        .ok()
        .and_then(|h| h.destination.as_ref().map(|d| d.as_str().to_owned()));
    let is = identity_server_for(state, &parts.headers, destination.as_deref())
        .ok_or_else(|| ApiError::from(IntakeError::NoSuchIdentityServer))?;

    let bytes: Bytes = axum::body::to_bytes(incoming, body::MAX_BODY)
        .await
        .map_err(|_| body::too_large())?;
    let unbind = body::parse(&bytes)?;
    if unbind.session.is_some() {
        // Nothing about it is verified before the upstream checks the
        // session, so it is limited per claimed server and client, and per
        // client whatever server it names.
        let now = state.now_ms();
        let key = (unbind.mxid_server.to_ascii_lowercase(), client);
        if let Err(retry) = state
            .limits
            .owner_proven
            .hit(key, now)
            .and_then(|()| state.limits.owner_proven_clients.hit(client, now))
        {
            tracing::info!(identity_server = %is.name, outcome = "owner_proven_rate_limited", "unbind with a validation session refused: too many");
            state.metrics.intake("owner_proven_rate_limited");
            return Ok(rate_limited(retry));
        }
        // Nothing to unbind: answered here, as for a signed unbind, and not
        // recorded, so that a reusable session cannot fill the database.
        let binding = upstream::check_binding(state, is, &unbind.mxid, &unbind.threepid).await?;
        if binding == Binding::NotBound {
            tracing::info!(identity_server = %is.name, outcome = "not_bound", "unbind with a validation session for an address not bound: answered here");
            state.metrics.intake("not_bound");
            return Ok(nothing_to_unbind());
        }
        // A homeserver that carried the owner's bind saw its session, which
        // sydent accepts for a day after validation: until that day has
        // passed since the bind, the session proves nothing against it.
        if let Binding::Bound { at: Some(at) } = binding {
            if now < at.saturating_add(SESSION_TRUSTED_AFTER_MS) {
                tracing::info!(identity_server = %is.name, outcome = "session_too_recent", "unbind with a validation session refused: the binding is newer than a session lives");
                state.metrics.intake("session_too_recent");
                return Err(IntakeError::Forbidden(
                    "this address was bound less than 25 hours ago, so the server that carried \
                     the bind may hold this validation session too; ask your homeserver to \
                     unbind it, and its owner will be asked by email"
                        .to_owned(),
                )
                .into());
            }
        }
        // The session is the only proof the upstream may act on: a
        // homeserver's signature travelling with it would let the upstream
        // take the signed path instead.
        let mut headers = parts.headers.clone();
        headers.remove(header::AUTHORIZATION);
        let response = forward(
            state,
            is,
            client,
            &parts.method,
            &path_and_query,
            &headers,
            bytes,
        )
        .await;
        let status = response.status().as_u16();
        tracing::info!(identity_server = %is.name, status, outcome = "owner_proven", "unbind with a validation session forwarded");
        state.metrics.intake("owner_proven");
        if response.status().is_success() {
            // The unbind is done at the upstream: its answer goes back even
            // if the record fails.
            if let Err(e) = lifecycle::record_owner_proven(state, is, unbind.proven(), status).await
            {
                tracing::error!(error = %e, "an owner-proven unbind was not recorded");
            }
        }
        return Ok(response);
    }
    if unbind.threepid.medium == Medium::Msisdn {
        match state.config.msisdn_policy {
            MsisdnPolicy::Hold => {}
            MsisdnPolicy::Forward => {
                tracing::info!(identity_server = %is.name, outcome = "msisdn_forwarded", "phone-number unbind forwarded by policy");
                state.metrics.intake("msisdn_forwarded");
                return Ok(forward(
                    state,
                    is,
                    client,
                    &parts.method,
                    &path_and_query,
                    &parts.headers,
                    bytes,
                )
                .await);
            }
            MsisdnPolicy::Reject => {
                return Err(IntakeError::NotSupported(
                    "this identity server does not unbind phone numbers on a homeserver's request"
                        .to_owned(),
                )
                .into())
            }
        }
    }

    // A client whose signatures for one server keep failing is stopped
    // before it costs more key fetches. Only a request that needs a fetch
    // can be stopped, and only by failures of its own client and claimed
    // server: a homeserver whose key is pinned or cached is never held up,
    // whoever shares its address and whatever they send.
    let now = state.now_ms();
    let failure_key = parsed_header
        .as_ref()
        .ok()
        .map(|h| (h.origin.as_str().to_ascii_lowercase(), client));
    if let (Ok(header), Some(key)) = (&parsed_header, &failure_key) {
        if !state
            .server_keys
            .has_key(header.origin.as_str(), header.key.as_ref(), now)
        {
            if let Some(retry) = state.limits.unbind_failures.is_limited(key, now) {
                return Ok(rate_limited(retry));
            }
        }
    }
    let verified = verify_signature(
        state,
        &parts,
        &path_and_query,
        is,
        &unbind,
        parsed_header,
        &bytes,
        now,
    )
    .await;
    let (origin, key_id, key_source) = match verified {
        Ok(verified) => verified,
        Err(refusal) => {
            if let (Some(key), true) = (failure_key, refusal.is_err()) {
                let _ = state.limits.unbind_failures.hit(key, now);
            }
            return refusal;
        }
    };
    let UnbindBody {
        mxid,
        threepid,
        address_as_sent,
        ..
    } = unbind;
    let address_as_sent = threepid
        .is_look_alike(&address_as_sent)
        .then_some(address_as_sent);
    let key = RequestKey {
        identity_server: &is.name.to_ascii_lowercase(),
        origin: &origin,
        mxid: &mxid,
        medium: threepid.medium,
        address: &threepid.address,
    };
    let to_hold = |binding: Binding| ToHold {
        source: Source::Gateway,
        identity_server: is,
        origin: origin.clone(),
        origin_key_id: Some(key_id.clone()),
        verified_at: Some(now),
        mxid: mxid.clone(),
        threepid: threepid.clone(),
        address_as_sent: address_as_sent.clone(),
        initiator: Initiator::Unknown,
        reason: None,
        callback_url: None,
        raw: Some(RawIntake {
            method: parts.method.as_str().to_owned(),
            path: path_and_query.clone(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(name)?.to_str().ok()?;
                    Some((name.as_str().to_owned(), value.to_owned()))
                })
                .collect(),
            body: bytes.to_vec(),
        }),
        audit: json!({
            "source": "gateway",
            "path": parts.uri.path(),
            "key_id": key_id,
            "key_source": key_source.as_str(),
            "binding_check": binding.as_str(),
        }),
        actor: Some(origin.clone()),
    };
    let since = now - super::ADDRESS_WINDOW_MS;
    if is.binding_check == BindingCheck::None {
        // The common case in one step: nothing is stored for this request
        // and its address is under its allowance, so it is held at once.
        // Otherwise nothing was stored, and it goes the long way below.
        let Prepared {
            hold: rows,
            id,
            expires_at,
            ..
        } = lifecycle::prepare(state, to_hold(Binding::NotChecked));
        let email = !rows.outbox.is_empty();
        let limit = i64::from(state.config.limits.holds_per_address_per_hour);
        if state.repo.hold_if_new(rows, since, limit).await? == HoldNew::Created {
            let created = lifecycle::created(state, id, expires_at, email);
            return Ok(held(state, is, &origin, created));
        }
    }
    let lookup = state.repo.intake_lookup(&key, since).await?;
    if let Some(stored) = lookup
        .latest
        .as_ref()
        .filter(|s| s.status == RequestStatus::Pending && s.expires_at <= now)
    {
        // Past its time with no answer: it expires now, and this repeat is a
        // new request.
        lifecycle::decide(state, stored, RequestStatus::Expired, By::Expiry).await?;
    } else if let Some(stored) = &lookup.latest {
        if stored.status == RequestStatus::Pending {
            state.repo.count_repeat(&stored.id).await?;
            tracing::info!(request_id = %stored.id, outcome = "joined_pending", "repeat of a held unbind");
            state.metrics.intake("joined_pending");
            return Ok(held_answer(state.config.held_response));
        }
        if let Some(answer) = standing_decision(state, stored, now) {
            tracing::info!(request_id = %stored.id, status = %stored.status, outcome = "answered_from_decision", "repeat of a decided unbind");
            state.metrics.intake("answered_from_decision");
            return Ok(answer);
        }
    }

    if let Some(retry) = super::address_retry_after(state, &lookup, now) {
        tracing::info!(identity_server = %is.name, outcome = "address_rate_limited", "unbind refused: too many for one address");
        state.metrics.intake("address_rate_limited");
        return Ok(rate_limited(retry));
    }
    let binding = upstream::check_binding(state, is, &mxid, &threepid).await?;
    if binding == Binding::NotBound {
        tracing::info!(identity_server = %is.name, %origin, outcome = "not_bound", "address not bound to that Matrix ID: answered here, nothing forwarded");
        state.metrics.intake("not_bound");
        return Ok(nothing_to_unbind());
    }

    let held = hold(state, to_hold(binding)).await?;
    Ok(self::held(state, is, &origin, held))
}

/// Logs and counts a hold, and gives the homeserver its answer.
fn held(state: &AppState, is: &IdentityServerConfig, origin: &str, held: Held) -> Response {
    match held {
        Held::Created { id, .. } => {
            tracing::info!(request_id = %id, %origin, identity_server = %is.name, outcome = "held", "unbind held for the owner's consent");
            state.metrics.intake("held");
        }
        Held::Joined(stored) => {
            tracing::info!(request_id = %stored.id, outcome = "joined_pending", "repeat of a held unbind");
            state.metrics.intake("joined_pending");
        }
    }
    held_answer(state.config.held_response)
}

/// The homeserver's signature, checked: the verified origin, key id and where
/// the key came from. `Err(Ok(_))` is an answer that is not a refusal of the
/// signature (a rate limit); `Err(Err(_))` is a refusal.
#[allow(clippy::too_many_arguments)]
async fn verify_signature(
    state: &AppState,
    parts: &axum::http::request::Parts,
    path_and_query: &str,
    is: &IdentityServerConfig,
    unbind: &UnbindBody,
    parsed_header: Result<xmatrix::XMatrix, XMatrixError>,
    bytes: &[u8],
    now: i64,
) -> Result<(String, String, KeySource), Result<Response, ApiError>> {
    let header = parsed_header.map_err(|e| Err(from_xmatrix(e)))?;
    let origin = header.origin.as_str().to_ascii_lowercase();
    if !unbind.mxid_server.eq_ignore_ascii_case(&origin) {
        return Err(Err(IntakeError::Forbidden(format!(
            "`{origin}` cannot unbind a Matrix ID on another server"
        ))
        .into()));
    }
    if let Some(retry) = state.limits.origin.is_limited(&origin, now) {
        return Err(Ok(rate_limited(retry)));
    }
    let key_id = header.key.to_string();
    let (public_key, key_source) =
        state
            .server_keys
            .key(&origin, &key_id, now)
            .await
            .map_err(|e| {
                tracing::warn!(%origin, error = %e, "homeserver key unavailable");
                Err(unauthorized(format!(
                    "cannot get the signing key: {}",
                    e.public_message(&origin)
                )))
            })?;
    let signed = xmatrix::signed_message(
        &header,
        parts.method.as_str(),
        path_and_query,
        &is.name,
        bytes,
    )
    .map_err(|e| Err(from_xmatrix(e)))?;
    if !state
        .signature_checks
        .check(public_key, signed.message, signed.signature)
        .await
    {
        return Err(Err(from_xmatrix(XMatrixError::BadSignature)));
    }
    if let Err(retry) = state.limits.origin.hit(origin.clone(), now) {
        return Err(Ok(rate_limited(retry)));
    }
    Ok((origin, key_id, key_source))
}

async fn forward(
    state: &AppState,
    is: &IdentityServerConfig,
    client: Option<std::net::IpAddr>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Response {
    upstream::forward(
        state,
        is,
        client,
        method.clone(),
        path_and_query,
        headers,
        reqwest::Body::from(bytes),
    )
    .await
}
