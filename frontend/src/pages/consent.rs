//! `/consent/:token` and `/embed/consent/:token`: what was asked, by whom.

use crate::api::{self, ApiFailure};
use crate::components::{Fact, Shell};
use crate::format::date_time;
use assent_shared::{ConsentView, Initiator, RequestStatus};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[component]
pub fn ConsentPage() -> impl IntoView {
    view! { <Shell><Consent /></Shell> }
}

#[component]
pub fn EmbedConsentPage() -> impl IntoView {
    view! { <Shell compact=true><Consent /></Shell> }
}

#[component]
fn Consent() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let view = LocalResource::new(move || {
        let token = token();
        async move { api::consent_view(&token).await }
    });
    view! {
        <Suspense fallback=|| view! { <p class="loading" role="status">"Loading the request…"</p> }>
            {move || Suspend::new(async move {
                match view.await {
                    Ok(request) => view! { <Disclosure request /> }.into_any(),
                    Err(failure) => view! { <Failure failure retry=move || view.refetch() /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Disclosure(request: ConsentView) -> impl IntoView {
    let ConsentView {
        status,
        requesting_server,
        server_key_id,
        verified_at_ms,
        mxid,
        threepid,
        identity_server,
        initiator,
        reason,
        created_at_ms,
        expires_at_ms,
        decided_at_ms,
        ..
    } = request;
    let headline = match status {
        RequestStatus::Pending => {
            "A server asks to remove the link between your address and a Matrix account"
        }
        RequestStatus::Approved => "You approved this request",
        RequestStatus::Denied => "You denied this request",
        RequestStatus::Expired => "This request has expired",
        RequestStatus::Cancelled => "This request was cancelled",
    };
    let who = match initiator {
        Initiator::User => "The account's owner removed the address.",
        Initiator::Admin => "An administrator of the homeserver.",
        Initiator::Deactivation => "The account is being deactivated.",
        Initiator::Unknown => "The homeserver gave no reason.",
    };
    let verified = match (server_key_id, verified_at_ms) {
        (Some(key), Some(at)) => format!("signed with key {key}, checked {}", date_time(at)),
        _ => "no server signature".to_owned(),
    };
    let operator = (!identity_server.operator.is_empty())
        .then(|| format!(", run by {}", identity_server.operator));
    view! {
        <h1 class="headline">{headline}</h1>
        <dl class="facts">
            <Fact label="Asked by">
                <strong class="server">{requesting_server}</strong>
                <span class="detail">{verified}</span>
            </Fact>
            <Fact label="Your address"><span class="address">{threepid.address}</span></Fact>
            <Fact label="Matrix account"><span class="mxid">{mxid}</span></Fact>
            <Fact label="Identity server">
                {identity_server.display_name}
                " ("<code>{identity_server.name}</code>")"
                {operator}
                {identity_server.privacy_policy_url.map(|url| view! {
                    " · " <a href=url rel="noreferrer noopener" target="_blank">"privacy policy"</a>
                })}
            </Fact>
            <Fact label="Who started it">
                {who}
                {reason.map(|reason| view! { <span class="detail">"Reason given: " {reason}</span> })}
            </Fact>
            <Fact label="Asked">{date_time(created_at_ms)}</Fact>
            {match decided_at_ms {
                Some(at) => view! { <Fact label="Decided">{date_time(at)}</Fact> }.into_any(),
                None => view! { <Fact label="Expires">{date_time(expires_at_ms)}</Fact> }.into_any(),
            }}
        </dl>
        {(status == RequestStatus::Pending).then(|| view! {
            <p class="note">"Nothing changes unless you approve. If you do nothing, the link stays as it is."</p>
        })}
    }
}

#[component]
fn Failure(failure: ApiFailure, retry: impl Fn() + Send + Sync + 'static) -> impl IntoView {
    let (title, text, can_retry) = match failure {
        ApiFailure::NotFound => (
            "This link is not known",
            "Check that the whole link from the email was copied. Links stop working some days after a decision.".to_owned(),
            false,
        ),
        ApiFailure::Network => (
            "The server could not be reached",
            "Check your connection and try again.".to_owned(),
            true,
        ),
        ApiFailure::RateLimited => ("Too many attempts", "Wait a minute, then try again.".to_owned(), true),
        other => ("Something went wrong", format!("{other:?}"), true),
    };
    view! {
        <h1 class="headline">{title}</h1>
        <p>{text}</p>
        {can_retry.then(|| view! { <button type="button" class="button" on:click=move |_| retry()>"Try again"</button> })}
    }
}
