//! The outbox relay: publishes committed outbox events to JetStream with `Nats-Msg-Id` equal to
//! their outbox id, then removes them. A crash between publish and removal republishes the same
//! id, which JetStream drops inside its duplicate window and consumers skip after it.

use std::time::Duration;

use store::Store;
use tokio_util::sync::CancellationToken;

use crate::{BatchError, BatchEvent, Bus};

/// Events published per round; their acks are awaited together (pipelining).
pub const RELAY_BATCH_LEN_MAX: usize = 512;
/// How long the relay waits for the committers' own flush before it flushes itself (for commits
/// nobody else flushes, such as timers firing).
pub const FLUSH_PATIENCE: Duration = Duration::from_millis(25);
/// The fewest events a round publishes as one atomic batch; a smaller round goes out one event
/// at a time with every ack in flight. nats-server 2.15 answers an atomic batch's commit after
/// a fixed ~4–5 ms on this class of machine, whatever its size, while single publishes with
/// their acks in flight cost ~0.25 ms each under `sync_interval: always`
/// (docs/bench/jetstream_batch.py): the two meet at 14–16 events. Below it a batch only added
/// latency: an incident's `units_assigned` round (2–14 events) took 6–9 ms to publish as one.
pub const ATOMIC_BATCH_MIN: usize = 16;
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
                // A store that failed to write cannot make what is left durable in this
                // process, so nothing of it may leave: it is kept for the next start.
                if drain_deadline.is_some() && store.failure().is_some() {
                    tracing::warn!(
                        pending = store.outbox_len(),
                        "the store failed: the outbox is kept for the next start"
                    );
                    return;
                }
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

/// Publishes one round of the outbox; returns how many events left it.
///
/// A round of [`ATOMIC_BATCH_MIN`] events or more goes out as one atomic batch
/// ([`Bus::publish_batch`]): one fsync in nats-server for the round instead of one per event; a
/// smaller round one event at a time, acks in flight. A batch refused because it holds an
/// event JetStream already has (a republish after a crash between publish and removal), or
/// because the stream takes no batches, is published again one event at a time, with the acks
/// awaited together; JetStream drops the duplicates one by one.
pub async fn relay_once(store: &Store, bus: &Bus) -> Result<usize, crate::Error> {
    let mut pending = store.outbox_pending(RELAY_BATCH_LEN_MAX)?;
    if pending.is_empty() {
        return Ok(0);
    }
    // Each payload moves into a shared buffer once; the batch and a fallback share it.
    let payloads: Vec<bytes::Bytes> = pending
        .iter_mut()
        .map(|event| std::mem::take(&mut event.payload).into())
        .collect();
    let started = std::time::Instant::now();
    // Only durable commits may leave the process: an event published before its state is on disk
    // could describe an incident that a crash then forgets. Whoever committed the events flushes
    // anyway; the relay joins that flush rather than stalling their next commits with its own.
    store.flush_committed(FLUSH_PATIENCE).await?;
    let flushed = started.elapsed();
    let mut batched = false;
    let (done, first_error) = if pending.len() >= ATOMIC_BATCH_MIN && bus.atomic_batches() {
        let events: Vec<BatchEvent<'_>> = pending
            .iter()
            .zip(&payloads)
            .map(|(event, payload)| BatchEvent {
                subject: &event.subject,
                msg_id: &event.msg_id,
                payload: payload.clone(),
                traceparent: event.traceparent.as_deref(),
            })
            .collect();
        match bus.publish_batch(&events).await {
            Ok(()) => {
                batched = true;
                (pending.iter().map(|event| event.key).collect(), None)
            }
            Err(error @ (BatchError::Duplicate | BatchError::Disabled)) => {
                tracing::debug!(%error, events = pending.len(), "publishing the round one event at a time");
                publish_each(bus, &pending, &payloads).await?
            }
            Err(BatchError::Bus(error)) => return Err(error),
        }
    } else {
        publish_each(bus, &pending, &payloads).await?
    };
    let published = started.elapsed();
    store.outbox_remove(&done)?;
    tracing::debug!(target: "muster_pipeline", events = pending.len(), batched,
        flush_us = flushed.as_micros() as u64,
        publish_us = (published - flushed).as_micros() as u64,
        remove_us = (started.elapsed() - published).as_micros() as u64, "relay");
    match first_error {
        Some(error) => Err(error),
        None => Ok(done.len()),
    }
}

/// Publishes each event with its own ack, many in flight; returns the keys of the events
/// JetStream acknowledged and the first failure.
async fn publish_each(
    bus: &Bus,
    pending: &[store::OutboxEvent],
    payloads: &[bytes::Bytes],
) -> Result<(Vec<[u8; 8]>, Option<crate::Error>), crate::Error> {
    let mut acks = Vec::with_capacity(pending.len());
    for (event, payload) in pending.iter().zip(payloads) {
        let ack = bus
            .publish_dedup(
                event.subject.clone(),
                &event.msg_id,
                payload.clone(),
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
    Ok((done, first_error))
}
