//! One request: what Assent knows about it, its audit trail as a timeline,
//! its queued emails and relays, and the three actions, each confirmed first.

use super::api::{self, Action, Failure};
use super::{short_time, Session};
use assent_shared::admin::{AuditEntry, OutboxEntry, RequestDetail};
use assent_shared::{Medium, RequestStatus};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// An audit event's kind in words.
fn event_label(kind: &str) -> String {
    match kind {
        "received" => "Request received",
        "owner_proven" => "Unbound by the owner (validation session)",
        "email_sent" => "Consent email sent",
        "email_failed" => "Email attempt failed (will retry)",
        "email_given_up" => "Email given up",
        "email_skipped" => "Email not sent",
        "viewed" => "Consent page loaded",
        "decided" => "Decided",
        "relay_delivered" => "Decision delivered",
        "relay_refused" => "Decision refused by the sink",
        "relay_failed" => "Relay attempt failed (will retry)",
        "relay_given_up" => "Relay given up",
        "admin_resend" => "Email resent by an administrator",
        "admin_retry" => "Re-queued by an administrator",
        "token_replaced" => "Consent link replaced",
        other => return other.replace('_', " "),
    }
    .to_owned()
}

/// The event's details as `key: value` pairs.
fn detail_pairs(detail: &serde_json::Value) -> Vec<(String, String)> {
    match detail.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.replace('_', " "), value)
            })
            .collect(),
        None => Vec::new(),
    }
}

#[component]
pub fn DetailPage(id: String) -> impl IntoView {
    let session = expect_context::<Session>();
    let data = RwSignal::new(None::<Result<RequestDetail, Failure>>);
    let confirming = RwSignal::new(None::<Action>);
    let busy = RwSignal::new(false);
    let message = RwSignal::new(None::<Result<String, String>>);
    let load = {
        let id = id.clone();
        move || {
            let id = id.clone();
            spawn_local(async move {
                data.try_set(Some(session.check(api::detail(&id).await)));
            });
        }
    };
    load();
    let act = {
        let id = id.clone();
        let load = load.clone();
        move |action: Action| {
            let (id, load) = (id.clone(), load.clone());
            busy.set(true);
            spawn_local(async move {
                let result = session.check(api::act(&id, action).await);
                // The page may have gone meanwhile (an ended session).
                busy.try_set(false);
                confirming.try_set(None);
                message.try_set(Some(result.map(|o| o.message).map_err(|f| f.describe())));
                crate::platform::focus_soon("action-outcome");
                load();
            });
        }
    };
    view! {
        <p><a href="/admin">"← All requests"</a></p>
        {move || match data.get() {
            None => view! { <p class="detail" role="status">"Loading…"</p> }.into_any(),
            Some(Err(failure)) => view! {
                <h1>"Request"</h1>
                <p class="problem" role="alert">{failure.describe()}</p>
            }.into_any(),
            Some(Ok(d)) => {
                let act = act.clone();
                view! { <Detail d confirming busy message act /> }.into_any()
            }
        }}
    }
}

#[component]
fn Detail<F>(
    d: RequestDetail,
    confirming: RwSignal<Option<Action>>,
    busy: RwSignal<bool>,
    message: RwSignal<Option<Result<String, String>>>,
    act: F,
) -> impl IntoView
where
    F: Fn(Action) + Clone + Send + Sync + 'static,
{
    let r = d.request.clone();
    let pending = r.status == RequestStatus::Pending;
    let can_resend = pending && r.threepid.medium == Medium::Email;
    // Given-up relays can always go again; an email only while the owner
    // can still decide (the server says the same).
    let can_retry = d
        .outbox
        .iter()
        .any(|o| o.state == "given_up" && (o.kind == "relay" || pending));
    let address = r.threepid.address.clone();
    let question = move |action: Action| {
        match action {
        Action::Resend => format!("Send a new consent link to {address}? The link sent before stops working."),
        Action::Cancel => "Cancel this request? Nothing will be unbound, and the decision is signed and sent to the webhooks. This cannot be undone.".to_owned(),
        Action::Retry => "Queue the given-up emails and relays of this request again, now?".to_owned(),
    }
    };
    let start = move |action: Action| {
        message.set(None);
        confirming.set(Some(action));
        crate::platform::focus_soon("confirm-yes");
    };
    // A tombstone: what is left once its personal data was deleted.
    let deleted = r
        .purged_at_ms
        .map(|at| format!("deleted {}", short_time(at)));
    let facts = vec![
        ("Status", r.status.as_str().to_owned()),
        (
            "Address",
            match &deleted {
                Some(deleted) => format!("{deleted} ({})", r.threepid.medium.as_str()),
                None => format!("{} ({})", r.threepid.address, r.threepid.medium.as_str()),
            },
        ),
        (
            "Matrix ID",
            deleted.clone().unwrap_or_else(|| r.mxid.clone()),
        ),
        (
            "Address as sent",
            d.address_as_sent.clone().map_or_else(
                || "—".to_owned(),
                |sent| format!("{sent} (look-alike characters)"),
            ),
        ),
        ("Repeats while pending", d.repeats.to_string()),
        ("Requesting server", r.requesting_server.clone()),
        (
            "Signed with key",
            d.origin_key_id.clone().unwrap_or_else(|| "—".to_owned()),
        ),
        (
            "Signature checked",
            d.verified_at_ms.map_or_else(|| "—".to_owned(), short_time),
        ),
        ("Identity server", r.identity_server.clone()),
        ("Came in by", r.source.replace('_', " ")),
        ("Initiated by", r.initiator.as_str().to_owned()),
        (
            "Reason given",
            d.reason.clone().unwrap_or_else(|| "—".to_owned()),
        ),
        ("Created", short_time(r.created_at_ms)),
        ("Expires", short_time(r.expires_at_ms)),
        (
            "Decided",
            r.decided_at_ms.map_or_else(|| "—".to_owned(), short_time),
        ),
        (
            "Decision id",
            d.decision_id.clone().unwrap_or_else(|| "—".to_owned()),
        ),
        (
            "Stored intake",
            d.intake.clone().unwrap_or_else(|| "—".to_owned()),
        ),
        ("Request id", r.id.clone()),
    ];
    let act_confirmed = act.clone();
    view! {
        {match &deleted {
            Some(deleted) => view! {
                <h1>"Tombstone of request " <span class="wrap">{r.id.clone()}</span></h1>
                <p class="tombstone-note">"Its personal data was " {deleted.clone()} ": the address, the Matrix ID, the decision document and the audit trail. What is left is below."</p>
            }.into_any(),
            None => view! {
                <h1>"Request for " <span class="wrap">{r.threepid.address.clone()}</span></h1>
            }.into_any(),
        }}
        <dl class="facts admin-facts">
            {facts.into_iter().map(|(label, value)| view! {
                <div class="fact"><dt>{label}</dt><dd>{value}</dd></div>
            }).collect_view()}
        </dl>
        <section class="actions" aria-labelledby="actions-title">
            <h2 id="actions-title">"Actions"</h2>
            <div class="choices">
                <button type="button" class="button secondary" disabled=move || !can_resend || busy.get()
                    on:click=move |_| start(Action::Resend)>"Resend email"</button>
                <button type="button" class="button secondary" disabled=move || !pending || busy.get()
                    on:click=move |_| start(Action::Cancel)>"Cancel request"</button>
                <button type="button" class="button secondary" disabled=move || !can_retry || busy.get()
                    on:click=move |_| start(Action::Retry)>"Retry given-up work"</button>
            </div>
            {move || confirming.get().map(|action| {
                let act = act_confirmed.clone();
                view! {
                    <div class="confirm note" role="group" aria-labelledby="confirm-question">
                        <p id="confirm-question">{question.clone()(action)}</p>
                        <div class="choices">
                            <button id="confirm-yes" type="button" class="button" disabled=move || busy.get()
                                on:click=move |_| act(action)>
                                {match action { Action::Resend => "Yes, resend", Action::Cancel => "Yes, cancel it", Action::Retry => "Yes, retry" }}
                            </button>
                            <button type="button" class="button secondary" on:click=move |_| confirming.set(None)>"Keep as is"</button>
                        </div>
                    </div>
                }
            })}
            <p id="action-outcome" tabindex="-1" role="status" class="outcome">
                {move || message.get().map(|m| match m {
                    Ok(text) => view! { <span class="ok">{text}</span> }.into_any(),
                    Err(text) => view! { <span class="problem">{text}</span> }.into_any(),
                })}
            </p>
        </section>
        <OutboxTable rows=d.outbox />
        <Timeline events=d.audit />
    }
}

#[component]
fn OutboxTable(rows: Vec<OutboxEntry>) -> impl IntoView {
    (!rows.is_empty()).then(|| view! {
        <section aria-labelledby="outbox-title">
            <h2 id="outbox-title">"Emails and relays"</h2>
            <div class="table-wrap">
                <table>
                    <thead>
                        <tr>
                            <th scope="col">"What"</th>
                            <th scope="col">"State"</th>
                            <th scope="col">"Attempts"</th>
                            <th scope="col">"Last error"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {rows.into_iter().map(|o| view! {
                            <tr>
                                <td>{match &o.sink { Some(sink) => format!("relay: {sink}"), None => o.kind.clone() }}</td>
                                <td><span class=format!("badge {}", o.state)>{o.state.replace('_', " ")}</span></td>
                                <td>{o.attempts}</td>
                                <td class="wrap">{o.last_error.clone().unwrap_or_default()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
    })
}

#[component]
fn Timeline(events: Vec<AuditEntry>) -> impl IntoView {
    view! {
        <section aria-labelledby="timeline-title">
            <h2 id="timeline-title">"What happened"</h2>
            <ol class="timeline">
                {events.into_iter().map(|e| {
                    let pairs = detail_pairs(&e.detail);
                    view! {
                        <li class=format!("event {}", e.kind)>
                            <time>{short_time(e.at_ms)}</time>
                            <strong>{event_label(&e.kind)}</strong>
                            {e.actor.map(|actor| view! { <span class="detail">" by " {actor}</span> })}
                            {(!pairs.is_empty()).then(|| view! {
                                <dl class="event-detail">
                                    {pairs.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}
                                </dl>
                            })}
                        </li>
                    }
                }).collect_view()}
            </ol>
        </section>
    }
}
