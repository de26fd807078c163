//! The outbox relay: publishes committed outbox events to JetStream with `Nats-Msg-Id` equal to
//! their outbox id, then removes them. A crash between publish and removal republishes the same
//! id, which JetStream drops inside its duplicate window and consumers skip after it.

use std::time::Duration;

use store::Store;
use tokio_util::sync::CancellationToken;

use crate::Bus;

/// Events published per round; their acks are awaited together (pipelining).
pub const RELAY_BATCH_LEN_MAX: usize = 512;
/// How long shutdown waits for the outbox to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `shutdown`, then drains what it can within [`DRAIN_TIMEOUT`].
pub async fn run_relay(store: Store, bus: Bus, shutdown: CancellationToken) {
    let signal = store.outbox_signal();
    let mut backoff = Duration::from_millis(100);
    let mut drain_deadline = None;
    loop {
        if shutdown.is_cancelled() && drain_deadline.is_none() {
            drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
        }
        match relay_once(&store, &bus).await {
            Ok(0) => {
                if drain_deadline.is_some() {
                    tracing::info!("outbox drained");
                    return;
                }
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = signal.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(published) => {
                tracing::trace!(published, "relayed outbox events");
                backoff = Duration::from_millis(100);
            }
            Err(error) => {
                tracing::warn!(%error, pending = store.outbox_len(), "outbox relay failed; retrying");
                if let Some(deadline) = drain_deadline
                    && tokio::time::Instant::now() >= deadline
                {
                    tracing::warn!(
                        pending = store.outbox_len(),
                        "outbox not drained before shutdown; it is kept for the next start"
                    );
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled(), if drain_deadline.is_none() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes one batch; returns how many events left the outbox.
pub async fn relay_once(store: &Store, bus: &Bus) -> Result<usize, crate::Error> {
    let pending = store.outbox_pending(RELAY_BATCH_LEN_MAX)?;
    if pending.is_empty() {
        return Ok(0);
    }
    // Only durable commits may leave the process: an event published before its state is on disk
    // could describe an incident that a crash then forgets.
    store.flush().await?;
    let mut acks = Vec::with_capacity(pending.len());
    for event in &pending {
        let ack = bus
            .publish_dedup(
                event.subject.clone(),
                &event.msg_id,
                event.payload.clone().into(),
                event.traceparent.as_deref(),
            )
            .await?;
        acks.push(ack);
    }
    let mut done = Vec::with_capacity(pending.len());
    let mut first_error = None;
    for (event, ack) in pending.iter().zip(acks) {
        match ack.await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(msg_id = %event.msg_id, "JetStream already had this event");
                }
                done.push(event.key);
            }
            Err(error) => {
                first_error.get_or_insert_with(|| crate::Error::Publish {
                    subject: event.subject.clone(),
                    message: error.to_string(),
                });
            }
        }
    }
    store.outbox_remove(&done)?;
    match first_error {
        Some(error) => Err(error),
        None => Ok(done.len()),
    }
}
