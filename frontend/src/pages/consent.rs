//! `/consent/:token` and `/embed/consent/:token`: what was asked, by whom,
//! and the owner's answer, through a confirmation step.

use crate::api::{self, ApiFailure, Decided};
use crate::components::{Fact, Shell};
use crate::format::date_time;
use crate::platform::{self, Parent};
use assent_shared::i18n::{fill, Lang, Texts};
use assent_shared::{ConsentView, DecisionOutcome, Initiator, OwnerDecision, RequestStatus};
use leptos::prelude::*;
use leptos::task::spawn_local;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Page,
    Embed,
}

#[component]
pub fn ConsentPage(token: String) -> impl IntoView {
    view! { <Shell><Consent token mode=Mode::Page /></Shell> }
}

#[component]
pub fn EmbedConsentPage(token: String) -> impl IntoView {
    view! { <Shell compact=true><Consent token mode=Mode::Embed /></Shell> }
}

/// Where the page is in the owner's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Choose,
    Confirm(OwnerDecision),
    Sending(OwnerDecision),
    NotSent(OwnerDecision, ApiFailure),
    Final {
        status: RequestStatus,
        decided_at: Option<i64>,
        /// Decided before this page's answer arrived (another tab).
        meanwhile: bool,
    },
}

#[component]
fn Consent(token: String, mode: Mode) -> impl IntoView {
    let lang = platform::preferred_lang();
    platform::set_document_lang(lang);
    let t = lang.texts();
    platform::apply_theme(&crate::query_param("theme").unwrap_or_default());
    let fetch_token = token.clone();
    let view = LocalResource::new(move || {
        let token = fetch_token.clone();
        async move { api::consent_view(&token).await }
    });
    // The server's page shows the request while this one loads. It stays
    // when it is a form's step or a refusal (the reader must see that), and
    // when the request cannot be loaded here (it says the same, and its
    // forms work).
    let fallback = move || {
        (!platform::has_server_page())
            .then(|| view! { <p class="loading" role="status">{t.loading}</p> })
    };
    view! {
        <Suspense fallback=fallback>
            {move || {
                let token = token.clone();
                Suspend::new(async move {
                    let loaded = view.await;
                    let server_page = platform::has_server_page();
                    match loaded {
                        Ok(request) if !server_page || platform::server_page_is_resting() => {
                            platform::remove_server_page();
                            view! { <Request request token lang mode /> }.into_any()
                        }
                        Err(failure) if !server_page => view! {
                            <Failure failure t retry=move || view.refetch() />
                        }
                        .into_any(),
                        _ => ().into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

/// The request's facts, as the page words them.
#[derive(Clone)]
struct Facts {
    server: String,
    server_ascii: Option<String>,
    signature: String,
    mxid: String,
    address: String,
    address_as_sent: Option<String>,
    is_display: String,
    is_name: String,
    operator: Option<String>,
    privacy_url: Option<String>,
    why: String,
    reason: Option<String>,
    asked_at: String,
    expires_at: String,
    /// How long the request's data is kept once it ended, as a sentence.
    kept: String,
}

impl Facts {
    fn new(r: &ConsentView, lang: Lang) -> Self {
        let t = lang.texts();
        let server = r.requesting_server.clone();
        let is_display = r.identity_server.display_name.clone();
        let signature = match (&r.server_key_id, r.verified_at_ms) {
            (Some(key), Some(at)) => fill(
                t.signature_checked,
                &[("checked", &date_time(at, lang)), ("key", key)],
            ),
            _ => fill(t.named_by, &[("is", &is_display)]),
        };
        let why = match r.initiator {
            Initiator::Admin => t.why_admin,
            Initiator::Deactivation => t.why_deactivation,
            Initiator::User => t.why_user,
            Initiator::Unknown => t.why_unknown,
        };
        Facts {
            why: fill(why, &[("server", &server)]),
            reason: r
                .reason
                .as_ref()
                .map(|reason| fill(t.reason_given, &[("reason", reason)])),
            server_ascii: r.requesting_server_ascii.clone(),
            server,
            signature,
            mxid: r.mxid.clone(),
            address: r.threepid.address.clone(),
            address_as_sent: r.address_as_sent.clone(),
            is_name: r.identity_server.name.clone(),
            operator: (!r.identity_server.operator.is_empty())
                .then(|| fill(t.run_by, &[("operator", &r.identity_server.operator)])),
            privacy_url: r.identity_server.privacy_policy_url.clone(),
            is_display,
            asked_at: date_time(r.created_at_ms, lang),
            expires_at: date_time(r.expires_at_ms, lang),
            kept: fill(
                t.data_kept,
                &[(
                    "retention",
                    &assent_shared::i18n::duration_words(r.retention_ms, lang),
                )],
            ),
        }
    }

    /// The holes every text may have.
    fn fill(&self, template: &str, at: Option<&str>) -> String {
        fill(
            template,
            &[
                ("server", self.server.as_str()),
                ("address", self.address.as_str()),
                ("mxid", self.mxid.as_str()),
                ("is", self.is_display.as_str()),
                ("expires", self.expires_at.as_str()),
                ("at", at.unwrap_or("")),
            ],
        )
    }
}

#[component]
fn FactList(
    facts: Facts,
    t: &'static Texts,
    /// When it was closed, with the label that says how.
    decided: Option<(&'static str, String)>,
) -> impl IntoView {
    let Facts {
        server,
        server_ascii,
        signature,
        mxid,
        address,
        address_as_sent,
        is_display,
        is_name,
        operator,
        privacy_url,
        why,
        reason,
        asked_at,
        expires_at,
        kept,
    } = facts;
    view! {
        <dl class="facts">
            <Fact label=t.asked_by>
                <strong class="server">{server}</strong>
                {server_ascii.clone().map(|ascii| view! { " (" <code>{ascii}</code> ")" })}
                <span class="detail">{signature}</span>
                {server_ascii.map(|ascii| view! {
                    <span class="warning" role="note">{fill(t.idn_warning, &[("ascii", &ascii)])}</span>
                })}
            </Fact>
            <Fact label=t.matrix_id><span class="mxid">{mxid}</span></Fact>
            <Fact label=t.your_address>
                <span class="address">{address.clone()}</span>
                {address_as_sent.map(|sent| view! {
                    <span class="warning" role="note">
                        {fill(t.look_alike_warning, &[("sent", &sent), ("address", &address)])}
                    </span>
                })}
            </Fact>
            <Fact label=t.identity_server>
                {is_display} " (" <code>{is_name}</code> ")"
                {operator.map(|o| view! { ", " {o} })}
                {privacy_url.map(|url| view! {
                    " · " <a href=url rel="noreferrer noopener" target="_blank">{t.privacy_policy}</a>
                })}
            </Fact>
            <Fact label=t.why>
                {why}
                {reason.map(|reason| view! { <span class="detail reason">{reason}</span> })}
            </Fact>
            <Fact label=t.asked_at>{asked_at}</Fact>
            {match decided {
                Some((label, at)) => view! { <Fact label=label>{at}</Fact> }.into_any(),
                None => view! { <Fact label=t.expires>{expires_at}</Fact> }.into_any(),
            }}
            <Fact label=t.your_data>{kept}</Fact>
        </dl>
    }
}

/// What a decision is called in `assent.decision` messages.
fn decision_word(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Approved => "approve",
        RequestStatus::Denied => "deny",
        RequestStatus::Expired => "expire",
        RequestStatus::Cancelled => "cancel",
        RequestStatus::Pending => "pending",
    }
}

#[component]
fn Request(request: ConsentView, token: String, lang: Lang, mode: Mode) -> impl IntoView {
    let t = lang.texts();
    let parent = Parent::new(match mode {
        Mode::Embed => request.identity_server.embed_origins.clone(),
        Mode::Page => Vec::new(),
    });
    if mode == Mode::Embed {
        parent.start();
    }
    let facts = Facts::new(&request, lang);
    let request_id = request.request_id.clone();
    let stage = RwSignal::new(match request.status {
        RequestStatus::Pending => Stage::Choose,
        status => Stage::Final {
            status,
            decided_at: request.decided_at_ms,
            meanwhile: false,
        },
    });
    let send = {
        let token = token.clone();
        move |decision: OwnerDecision| {
            stage.set(Stage::Sending(decision));
            // The pressed button is redrawn disabled: focus stays on the step.
            platform::focus_soon("assent-step");
            let token = token.clone();
            let parent = parent.clone();
            let request_id = request_id.clone();
            spawn_local(async move {
                let settle = |outcome: DecisionOutcome, before: bool| {
                    parent.post(&serde_json::json!({
                        "type": "assent.decision",
                        "request_id": request_id,
                        "decision": decision_word(outcome.status),
                    }));
                    Stage::Final {
                        status: outcome.status,
                        decided_at: outcome.decided_at_ms,
                        // "Decided elsewhere" only for an owner's decision;
                        // an expiry or a cancellation says so itself.
                        meanwhile: before
                            && matches!(
                                outcome.status,
                                RequestStatus::Approved | RequestStatus::Denied
                            ),
                    }
                };
                let via = match mode {
                    Mode::Embed => assent_shared::DecidedVia::Embed,
                    Mode::Page => assent_shared::DecidedVia::Page,
                };
                let next = match api::decide(&token, decision, via).await {
                    Ok(Decided::Now(outcome)) => settle(outcome, false),
                    Ok(Decided::Before(outcome)) => settle(outcome, true),
                    Err(ApiFailure::Gone) => {
                        parent.post(&serde_json::json!({
                            "type": "assent.decision",
                            "request_id": request_id,
                            "decision": "expire",
                        }));
                        Stage::Final {
                            status: RequestStatus::Expired,
                            decided_at: None,
                            meanwhile: false,
                        }
                    }
                    Err(failure) => Stage::NotSent(decision, failure),
                };
                let focus = if matches!(next, Stage::Final { .. }) {
                    "outcome"
                } else {
                    "assent-step"
                };
                stage.set(next);
                platform::focus_soon(focus);
            });
        }
    };
    let choose = move |decision: OwnerDecision| {
        stage.set(Stage::Confirm(decision));
        platform::focus_soon("assent-step");
    };
    let back = move || {
        stage.set(Stage::Choose);
        platform::focus_soon("assent-title");
    };
    request_animation_frame(platform::mark_interactive);
    move || {
        let facts = facts.clone();
        let send = send.clone();
        match stage.get() {
            Stage::Choose => view! {
                <h1 class="headline" id="assent-title" tabindex="-1">{facts.fill(t.pending_title, None)}</h1>
                <p class="note">{t.nothing_changes}</p>
                <FactList facts=facts.clone() t decided=None />
                <ul class="effects">
                    <li><strong>{t.approve_label}</strong> " " {facts.fill(t.approve_effect, None)}</li>
                    <li><strong>{t.deny_label}</strong> " " {facts.fill(t.deny_effect, None)}</li>
                    <li><strong>{t.nothing_label}</strong> " " {facts.fill(t.nothing_effect, None)}</li>
                </ul>
                <div class="choices">
                    <button type="button" class="button" on:click=move |_| choose(OwnerDecision::Approve)>
                        {t.approve_button}
                    </button>
                    <button type="button" class="button" on:click=move |_| choose(OwnerDecision::Deny)>
                        {t.deny_button}
                    </button>
                </div>
            }
            .into_any(),
            Stage::Confirm(decision) | Stage::Sending(decision) => {
                let sending = matches!(stage.get_untracked(), Stage::Sending(_));
                let (title, text, yes) = match decision {
                    OwnerDecision::Approve => (t.confirm_approve_title, t.confirm_approve_text, t.yes_approve),
                    OwnerDecision::Deny => (t.confirm_deny_title, t.confirm_deny_text, t.yes_deny),
                };
                view! {
                    <h1 class="headline" id="assent-step" tabindex="-1">{title}</h1>
                    <p>{facts.fill(text, None)}</p>
                    <div class="choices">
                        <button type="button" class="button" disabled=sending
                            on:click=move |_| send(decision)>{yes}</button>
                        <button type="button" class="button secondary" disabled=sending
                            on:click=move |_| back()>{t.go_back}</button>
                    </div>
                    {sending.then(|| view! { <p class="loading" role="status">{t.sending}</p> })}
                }
                .into_any()
            }
            Stage::NotSent(decision, failure) => {
                let text = match failure {
                    ApiFailure::Network => t.not_sent_text,
                    ApiFailure::RateLimited => t.rate_limited_text,
                    ApiFailure::NotFound => t.unknown_text,
                    _ => t.error_text,
                };
                view! {
                    <h1 class="headline" id="assent-step" tabindex="-1">{t.not_sent_title}</h1>
                    <p role="alert">{text}</p>
                    <div class="choices">
                        <button type="button" class="button" on:click=move |_| send(decision)>{t.retry}</button>
                        <button type="button" class="button secondary" on:click=move |_| back()>{t.go_back}</button>
                    </div>
                }
                .into_any()
            }
            Stage::Final { status, decided_at, meanwhile } => {
                let at = decided_at.map(|ms| date_time(ms, lang));
                let closed_label = match status {
                    RequestStatus::Approved | RequestStatus::Denied => t.decided,
                    _ => t.closed,
                };
                let (title, text) = match status {
                    RequestStatus::Approved => (t.approved_title, t.approved_text),
                    RequestStatus::Denied => (t.denied_title, t.denied_text),
                    RequestStatus::Cancelled => (t.cancelled_title, t.cancelled_text),
                    RequestStatus::Expired | RequestStatus::Pending => (t.expired_title, t.expired_text),
                };
                view! {
                    <h1 class="headline" id="outcome" tabindex="-1">{title}</h1>
                    {meanwhile.then(|| view! { <p class="note">{t.decided_meanwhile}</p> })}
                    <p>{facts.fill(text, at.as_deref())}</p>
                    {decided_at.is_some().then(|| view! {
                        <p>
                            <a class="receipt" href=api::receipt_url(&token) download>{t.receipt}</a>
                            " " <span class="detail receipt-summary">{t.receipt_summary}</span>
                        </p>
                    })}
                    <FactList facts=facts.clone() t decided=at.clone().map(|at| (closed_label, at)) />
                }
                .into_any()
            }
        }
    }
}

#[component]
fn Failure(
    failure: ApiFailure,
    t: &'static Texts,
    retry: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    let (title, text, can_retry) = match failure {
        ApiFailure::NotFound => (t.unknown_title, t.unknown_text, false),
        ApiFailure::Network => (t.network_title, t.network_text, true),
        ApiFailure::RateLimited => (t.rate_limited_title, t.rate_limited_text, true),
        _ => (t.error_title, t.error_text, true),
    };
    view! {
        <h1 class="headline" id="assent-title">{title}</h1>
        <p>{text}</p>
        {can_retry.then(|| view! {
            <button type="button" class="button" on:click=move |_| retry()>{t.retry}</button>
        })}
    }
}
