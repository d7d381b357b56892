//! Which relay jobs a decision makes.

use super::jobs::RelayJob;
use crate::config::{Config, RelaySink};
use crate::storage::{Decision, NewOutbox};

/// The relay rows for `decision` on a request held for `identity_server`:
/// one per webhook, and one for the unbinding sinks (`replay`,
/// `sydent-internal`) together: the first as configured, the others as its
/// fallbacks in order, tried when the one before refuses. Each row carries
/// its sinks as configured now, so a later config change does not redirect
/// a decision already made.
pub fn rows_for(config: &Config, identity_server: &str, decision: &Decision) -> Vec<NewOutbox> {
    let Some(is) = config.identity_server(identity_server) else {
        return Vec::new();
    };
    let applying: Vec<(usize, &RelaySink)> = is
        .relay
        .iter()
        .enumerate()
        .filter(|(_, sink)| sink.applies(decision.status))
        .collect();
    let is_webhook = |sink: &RelaySink| matches!(sink, RelaySink::Webhook { .. });
    let job = |sink: &RelaySink, fallbacks: Vec<RelaySink>| RelayJob {
        sink: sink.clone(),
        fallbacks,
        decision_id: decision.decision_id.clone(),
    };
    let mut rows: Vec<NewOutbox> = applying
        .iter()
        .filter(|(_, sink)| is_webhook(sink))
        .map(|(i, sink)| job(sink, Vec::new()).outbox(*i))
        .collect();
    let mut unbinding = applying.iter().filter(|(_, sink)| !is_webhook(sink));
    if let Some((first_index, first)) = unbinding.next() {
        let fallbacks = unbinding.map(|(_, sink)| (*sink).clone()).collect();
        rows.push(job(first, fallbacks).outbox(*first_index));
    }
    rows
}
