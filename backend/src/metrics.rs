//! Prometheus metrics at `/metrics`: what intake, email, decisions and relays
//! did since the process started, how deep the outboxes are, and how long
//! HTTP answers took. No label ever holds an address, a Matrix ID or a token.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabels {
    sink: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboxLabel {
    outbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route's pattern (`/consent/{token}`), never the path itself.
    route: String,
    status: String,
}

pub struct Metrics {
    registry: Registry,
    intake: Family<Outcome, Counter>,
    emails: Family<Outcome, Counter>,
    decisions: Family<DecisionLabel, Counter>,
    relays: Family<RelayLabels, Counter>,
    outbox_pending: Family<OutboxLabel, Gauge>,
    outbox_given_up: Family<OutboxLabel, Gauge>,
    outbox_oldest: Family<OutboxLabel, Gauge<f64, AtomicU64>>,
    http: Family<HttpLabels, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("assent");
        let m = Metrics {
            intake: Family::default(),
            emails: Family::default(),
            decisions: Family::default(),
            relays: Family::default(),
            outbox_pending: Family::default(),
            outbox_given_up: Family::default(),
            outbox_oldest: Family::default(),
            http: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "intake",
            "Unbind requests received, by outcome",
            m.intake.clone(),
        );
        registry.register(
            "emails",
            "Consent emails: sent, retried, failed (given up), skipped",
            m.emails.clone(),
        );
        registry.register(
            "decisions",
            "Decisions recorded, by kind",
            m.decisions.clone(),
        );
        registry.register(
            "relays",
            "Relay attempts, by sink and outcome",
            m.relays.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows waiting to be carried out",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_given_up",
            "Outbox rows given up (an administrator may retry them)",
            m.outbox_given_up.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest waiting outbox row",
            m.outbox_oldest.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            m.http.clone(),
        );
        Metrics { registry, ..m }
    }

    /// An unbind request ended in `outcome` (`held`, `joined_pending`, `refused`, …).
    pub fn intake(&self, outcome: &str) {
        self.intake
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A consent email attempt ended in `outcome` (`sent`, `retried`, `failed`, `skipped`).
    pub fn email(&self, outcome: &str) {
        self.emails
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A decision was recorded (`approve`, `deny`, `expire`, `cancel`).
    pub fn decided(&self, decision: &str) {
        self.decisions
            .get_or_create(&DecisionLabel {
                decision: decision.to_owned(),
            })
            .inc();
    }

    /// A relay attempt to `sink` ended in `outcome` (`delivered`, `refused`, `failed`, `given_up`).
    pub fn relay(&self, sink: &str, outcome: &str) {
        self.relays
            .get_or_create(&RelayLabels {
                sink: sink.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the outbox gauges taken from `depth` now.
    pub fn render(
        &self,
        depth: &[crate::storage::OutboxDepth],
        now_ms: i64,
    ) -> Result<String, std::fmt::Error> {
        for d in depth {
            let label = OutboxLabel {
                outbox: d.kind.as_str().to_owned(),
            };
            self.outbox_pending.get_or_create(&label).set(d.pending);
            self.outbox_given_up.get_or_create(&label).set(d.given_up);
            let age = d
                .oldest_pending_at
                .map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0);
            self.outbox_oldest.get_or_create(&label).set(age);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Times every routed request into the latency histogram.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only the standard methods: a client must not mint label values.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route,
        status: format!("{}xx", response.status().as_u16() / 100),
    };
    metrics
        .http
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{OutboxDepth, OutboxKind};

    #[test]
    fn the_exposition_names_every_family() {
        let metrics = Metrics::new();
        metrics.intake("held");
        metrics.email("sent");
        metrics.decided("approve");
        metrics.relay("webhook", "delivered");
        let depth = [OutboxDepth {
            kind: OutboxKind::Relay,
            pending: 3,
            oldest_pending_at: Some(1_000),
            given_up: 1,
        }];
        let text = metrics.render(&depth, 11_000).unwrap();
        for line in [
            "assent_intake_total{outcome=\"held\"} 1",
            "assent_emails_total{outcome=\"sent\"} 1",
            "assent_decisions_total{decision=\"approve\"} 1",
            "assent_relays_total{sink=\"webhook\",outcome=\"delivered\"} 1",
            "assent_outbox_pending{outbox=\"relay\"} 3",
            "assent_outbox_given_up{outbox=\"relay\"} 1",
            "assent_outbox_oldest_pending_age_seconds{outbox=\"relay\"} 10.0",
            "# TYPE assent_http_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
