//! The expiry job: pending requests past their time are recorded as
//! expired (nothing is unbound), and their webhooks told.

use crate::lifecycle::expire_due;
use crate::state::AppState;
use std::time::Duration;

/// How many requests one pass expires before it looks again.
const BATCH: i64 = 100;

/// Runs [`expire_due`] every `every` until the process ends.
pub fn spawn(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                match expire_due(&state, BATCH).await {
                    Ok(n) if i64::try_from(n).is_ok_and(|n| n >= BATCH) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "the expiry job failed; trying again");
                        break;
                    }
                }
            }
        }
    })
}
