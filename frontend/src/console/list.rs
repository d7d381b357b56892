//! The list of requests: status tabs with live counts, filters and search
//! (a plain GET form, so the address holds them), newest first, in pages.

use super::api::{self, encode, Failure};
use super::{short_time, Session};
use assent_shared::admin::{AdminRequest, RequestList, ServerStatsList, COUNT_CAP};
use assent_shared::RequestStatus;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::time::Duration;

/// How often the list and its counts are fetched again while shown.
const REFRESH: Duration = Duration::from_secs(10);

/// The console's own query parameters, as the address holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub status: String,
    pub q: String,
    pub requesting_server: String,
    pub identity_server: String,
    /// `YYYY-MM-DD`, the reader's days.
    pub created_from: String,
    pub created_until: String,
    pub from: String,
}

const KEYS: [&str; 7] = [
    "status",
    "q",
    "requesting_server",
    "identity_server",
    "created_from",
    "created_until",
    "from",
];

impl Filters {
    fn from_address() -> Self {
        let search = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .unwrap_or_default();
        let params = web_sys::UrlSearchParams::new_with_str(&search).ok();
        let get = |key: &str| {
            params
                .as_ref()
                .and_then(|p| p.get(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        Filters {
            status: get("status"),
            q: get("q"),
            requesting_server: get("requesting_server"),
            identity_server: get("identity_server"),
            created_from: get("created_from"),
            created_until: get("created_until"),
            from: get("from"),
        }
    }

    fn values(&self) -> [&str; 7] {
        [
            &self.status,
            &self.q,
            &self.requesting_server,
            &self.identity_server,
            &self.created_from,
            &self.created_until,
            &self.from,
        ]
    }

    /// The console address showing these filters.
    pub fn link(&self) -> String {
        let pairs: Vec<String> = KEYS
            .iter()
            .zip(self.values())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if pairs.is_empty() {
            "/admin".to_owned()
        } else {
            format!("/admin?{}", pairs.join("&"))
        }
    }

    /// The admin API's query for these filters (days become milliseconds;
    /// "until" includes its day).
    pub fn api_query(&self) -> String {
        let mut pairs = vec!["limit=50".to_owned()];
        let mut push = |key: &str, value: &str| {
            if !value.is_empty() {
                pairs.push(format!("{key}={}", encode(value)));
            }
        };
        push("status", &self.status);
        push("q", &self.q);
        push("requesting_server", &self.requesting_server);
        push("identity_server", &self.identity_server);
        push("from", &self.from);
        if let Some(ms) = day_start(&self.created_from, 0) {
            pairs.push(format!("created_from={ms}"));
        }
        // Until the start of the next day (not 24 h: a day may have 23 or 25).
        if let Some(ms) = day_start(&self.created_until, 1) {
            pairs.push(format!("created_before={ms}"));
        }
        pairs.join("&")
    }

    fn narrowed(&self) -> bool {
        !(self.q.is_empty()
            && self.requesting_server.is_empty()
            && self.identity_server.is_empty()
            && self.created_from.is_empty()
            && self.created_until.is_empty())
    }
}

/// Midnight at the start of `YYYY-MM-DD` plus `later` days, in the
/// reader's zone, in ms.
fn day_start(day: &str, later: i32) -> Option<i64> {
    let mut parts = day.split('-').map(|p| p.parse::<u32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let date = js_sys::Date::new_with_year_month_day(y, m as i32 - 1, d as i32 + later);
    let ms = date.get_time();
    ms.is_finite().then_some(ms as i64)
}

fn status_label(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Pending => "Pending",
        RequestStatus::Approved => "Approved",
        RequestStatus::Denied => "Denied",
        RequestStatus::Expired => "Expired",
        RequestStatus::Cancelled => "Cancelled",
    }
}

#[component]
pub fn ListPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let filters = Filters::from_address();
    let data = RwSignal::new(None::<Result<RequestList, Failure>>);
    let stats = RwSignal::new(None::<ServerStatsList>);
    let query = filters.api_query();
    let load = move || {
        let query = query.clone();
        spawn_local(async move {
            let result = session.check(api::list(&query).await);
            // A failed refresh keeps what is shown, unless nothing is. (The
            // page may have gone meanwhile: `try_…` does nothing then.)
            if result.is_ok()
                || data
                    .try_get_untracked()
                    .flatten()
                    .is_none_or(|d| d.is_err())
            {
                data.try_set(Some(result));
            }
        });
    };
    load();
    spawn_local(async move {
        if let Ok(list) = session.check(api::server_stats().await) {
            stats.try_set(Some(list));
        }
    });
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let hidden = web_sys::window()
                .and_then(|w| w.document())
                .is_some_and(|d| d.hidden());
            if !hidden {
                load();
            }
        },
        REFRESH,
    ) {
        on_cleanup(move || handle.clear());
    }

    let searching = !filters.q.is_empty();
    let tab = {
        let filters = filters.clone();
        move |status: Option<RequestStatus>| {
            let target = Filters {
                status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                from: String::new(),
                ..filters.clone()
            };
            let current = filters.status == target.status;
            let label = status.map_or("All", status_label);
            view! {
                <a href=target.link() aria-current=current.then_some("page") class="tab">
                    {label} " "
                    <span class="count">
                        {move || data.get().and_then(|d| d.ok()).map(|d| {
                            let n = match status {
                                Some(s) => d.counts.get(s),
                                None => d.counts.total(),
                            };
                            // Counting stops at a cap: there, "at least". Per
                            // status when listing; all counts when searching.
                            let capped = !d.counts_complete
                                && (searching || status.is_none() || n >= COUNT_CAP);
                            if capped { format!("{n}+") } else { n.to_string() }
                        })}
                    </span>
                </a>
            }
        }
    };
    let tabs: Vec<_> = std::iter::once(None)
        .chain(RequestStatus::ALL.into_iter().map(Some))
        .map(tab)
        .collect();
    let older = {
        let filters = filters.clone();
        move |next: String| {
            Filters {
                from: next,
                ..filters.clone()
            }
            .link()
        }
    };
    let first_page = Filters {
        from: String::new(),
        ..filters.clone()
    }
    .link();
    let paged = !filters.from.is_empty();
    let narrowed = filters.narrowed();
    view! {
        <h1>"Requests"</h1>
        <nav class="tabs" aria-label="Status">{tabs}</nav>
        <form class="filters" method="get" action="/admin" role="search">
            <input type="hidden" name="status" value=filters.status.clone() />
            <label class="wide">"Search"
                <input type="search" name="q" value=filters.q.clone() placeholder="Matrix ID, address or server (the start of it)" />
            </label>
            <label>"Requesting server"
                <input type="text" name="requesting_server" value=filters.requesting_server.clone() placeholder="hs.example.org" />
            </label>
            <label>"Identity server"
                <input type="text" name="identity_server" value=filters.identity_server.clone() />
            </label>
            <label>"Created from"
                <input type="date" name="created_from" value=filters.created_from.clone() />
            </label>
            <label>"Created until"
                <input type="date" name="created_until" value=filters.created_until.clone() />
            </label>
            <div class="filter-buttons">
                <button type="submit" class="button">"Apply"</button>
                {narrowed.then(|| view! { <a class="button secondary" href="/admin">"Clear"</a> })}
            </div>
        </form>
        {move || match data.get() {
            None => view! { <p class="detail" role="status">"Loading…"</p> }.into_any(),
            Some(Err(failure)) => view! { <p class="problem" role="alert">{failure.describe()}</p> }.into_any(),
            Some(Ok(list)) => {
                let next = list.next.clone().map(older.clone());
                let shown = list.requests.len();
                view! {
                    <p class="detail" role="status">
                        {if shown == 0 { "No requests match.".to_owned() } else { format!("{shown} shown, newest first.") }}
                    </p>
                    {(shown > 0).then(|| view! { <RequestTable rows=list.requests /> })}
                    <nav class="pager" aria-label="Pages">
                        {paged.then(|| view! { <a href=first_page.clone()>"← Newest"</a> })}
                        {next.map(|href| view! { <a href=href rel="next">"Older →"</a> })}
                    </nav>
                }.into_any()
            }
        }}
        <ServerStatsView stats />
    }
}

#[component]
fn RequestTable(rows: Vec<AdminRequest>) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="requests">
                <thead>
                    <tr>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Address"</th>
                        <th scope="col">"Matrix ID"</th>
                        <th scope="col">"Requesting server"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows.into_iter().map(|r| {
                        let href = format!("/admin/requests/{}", encode(&r.id));
                        // A tombstone: its personal data was deleted.
                        let (address, mxid) = match r.purged_at_ms {
                            Some(at) => (format!("deleted {}", short_time(at)), "—".to_owned()),
                            None => (r.threepid.address, r.mxid),
                        };
                        let row_class = r.purged_at_ms.map(|_| "tombstone");
                        view! {
                            <tr class=row_class>
                                <td><a href=href>{short_time(r.created_at_ms)}</a></td>
                                <td><span class=format!("badge {}", r.status.as_str())>{status_label(r.status)}</span></td>
                                <td class="wrap">{address}</td>
                                <td class="wrap">{mxid}</td>
                                <td class="wrap">{r.requesting_server}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn ServerStatsView(stats: RwSignal<Option<ServerStatsList>>) -> impl IntoView {
    view! {
        {move || stats.get().filter(|s| !s.servers.is_empty()).map(|s| view! {
            <section class="stats" aria-labelledby="stats-title">
                <h2 id="stats-title">"Requesting servers"</h2>
                <p class="detail">"Requests per homeserver, busiest in the last 24 hours first: a server that floods unbinds stands out here."</p>
                <div class="table-wrap">
                    <table>
                        <thead>
                            <tr>
                                <th scope="col">"Server"</th>
                                <th scope="col">"24 h"</th>
                                <th scope="col">"24 h pending / approved / denied"</th>
                                <th scope="col">"7 days"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {s.servers.into_iter().take(10).map(|server| {
                                let href = Filters { requesting_server: server.requesting_server.clone(), ..Filters::default() }.link();
                                let day = &server.last_24h;
                                view! {
                                    <tr>
                                        <td class="wrap"><a href=href>{server.requesting_server.clone()}</a></td>
                                        <td>{day.total()}</td>
                                        <td>{format!("{} / {} / {}", day.pending, day.approved, day.denied)}</td>
                                        <td>{server.last_7d.total()}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            </section>
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::Filters;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn filters_make_console_links_and_api_queries() {
        assert_eq!(Filters::default().link(), "/admin");
        let filters = Filters {
            status: "pending".into(),
            q: "alice@example.org".into(),
            requesting_server: "hs.example.org".into(),
            created_from: "2026-03-29".into(),
            created_until: "2026-03-29".into(),
            ..Filters::default()
        };
        assert_eq!(
            filters.link(),
            "/admin?status=pending&q=alice%40example.org&requesting_server=hs.example.org&created_from=2026-03-29&created_until=2026-03-29"
        );
        let query = filters.api_query();
        assert!(
            query.starts_with(
                "limit=50&status=pending&q=alice%40example.org&requesting_server=hs.example.org"
            ),
            "{query}"
        );
        let ms = |key: &str| -> i64 {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {query}"))
        };
        // One whole day in the reader's zone (23 h where clocks go forward).
        let day = ms("created_before=") - ms("created_from=");
        assert!(
            (23 * 3600 * 1000..=25 * 3600 * 1000).contains(&day),
            "{day}"
        );
        // A day that is not a day is left out, not sent.
        let odd = Filters {
            created_from: "2026-13-40".into(),
            ..Filters::default()
        };
        assert_eq!(odd.api_query(), "limit=50");
    }
}
