//! The retention job: deletes the personal data of requests that ended
//! `retention` ago, leaving tombstones ([`crate::lifecycle::retention`]).

use crate::lifecycle::retention::pass;
use crate::state::AppState;
use std::time::Duration;

/// How many requests one pass purges before it looks again.
const BATCH: i64 = 100;

/// How often the job looks: a minute, or half the retention if shorter.
pub fn every(retention: Duration) -> Duration {
    (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Runs a [`pass`] every [`every`] until the process ends.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every(state.config.retention));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = pass(&state, BATCH).await {
                tracing::warn!(error = %e, "the retention job failed; trying again");
            }
        }
    })
}
