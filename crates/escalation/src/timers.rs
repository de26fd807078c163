//! The durable timer task: every [`TIMER_POLL_INTERVAL`] it fires the timers whose due time has
//! come, each in one commit with its effect.
//!
//! A timer record is removed in the same commit as the machine state and the events its firing
//! produced, so a timer fires once even across kill -9: before that commit nothing happened, after
//! it the record is gone. A firing that the machine finds stale (cancelled by an acknowledgement
//! that won the race) only removes the record.

use std::sync::Arc;
use std::time::Duration;

use domain::escalation::TimerId;
use domain::region::Region;
use store::{Commit, Store};
use tokio_util::sync::CancellationToken;

use crate::command::{TimerRecord, TransitionError, timer_prefix, transition};

/// How often the task looks for due timers.
pub const TIMER_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Most timers fired in one pass (the rest wait for the next pass).
pub const TIMERS_PER_PASS_MAX: usize = 512;

/// Fires due timers until `shutdown`.
pub async fn run_timers(
    store: Store,
    region: Arc<Region>,
    namespace: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TIMER_POLL_INTERVAL) => {}
        }
        let (store, region, namespace) = (store.clone(), region.clone(), namespace.clone());
        let pass = tokio::task::spawn_blocking(move || {
            fire_due(&store, &region, &namespace, lifecycle::unix_ms_now())
        })
        .await;
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(fired)) => tracing::debug!(fired, "timers fired"),
            Ok(Err(error)) => tracing::error!(%error, "timer pass failed; retrying next pass"),
            Err(error) => tracing::error!(%error, "timer pass panicked"),
        }
    }
    tracing::info!("timer task stopped");
}

/// Fires every timer of `namespace` due at or before `now_unix_ms`; returns how many it handled.
pub fn fire_due(
    store: &Store,
    region: &Region,
    namespace: &str,
    now_unix_ms: i64,
) -> Result<usize, TransitionError> {
    // Timer keys sort by due time, so the range up to `now` holds exactly the due ones.
    let prefix = timer_prefix(namespace);
    let until = format!("{prefix}{:020}", now_unix_ms.saturating_add(1).max(0));
    let due: Vec<(String, TimerRecord)> =
        store.scan_range::<TimerRecord>(&prefix, &until, TIMERS_PER_PASS_MAX)?;
    let mut fired = 0;
    for (key, timer) in due {
        let outcome = transition(
            store,
            region,
            namespace,
            &timer.incident_id,
            |commit: &mut Commit| {
                commit.delete(key.clone());
            },
            |record, now| {
                Ok(record
                    .machine
                    .handle_timer(TimerId(timer.timer_id), now.max(timer.due_at_unix_ms)))
            },
        );
        match outcome {
            Ok((handled, _)) => {
                tracing::debug!(incident_id = %timer.incident_id, timer_id = timer.timer_id, ?handled, "timer fired");
                fired += 1;
            }
            Err(TransitionError::NotFound { .. }) => {
                // A timer without its incident: nothing can come of it.
                let mut commit = Commit::new();
                commit.delete(key);
                store.commit(&commit)?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(fired)
}
