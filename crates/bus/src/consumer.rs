//! Runs a durable pull consumer with the rule "commit, flush, then ack".
//!
//! Messages are taken in groups: the first one is awaited, then whatever else is already buffered
//! (up to [`CONSUMER_BATCH_LEN_MAX`]). Each message becomes one [`store::Commit`] that also records
//! its `Nats-Msg-Id` as processed; after the whole group is committed the store is flushed once and
//! only then are the messages acknowledged. A crash anywhere before the ack means redelivery, and
//! the processed id makes the redelivered message a no-op. A handler that can read back what its
//! own commits wrote ([`Handler::begin_run`]) has a session's commits applied as one transaction.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use store::{Commit, Committed, Store};
use tokio_util::sync::CancellationToken;

use crate::Bus;

/// How long a consumer holds the store's writer gate for a run of its group's commits
/// ([`store::Store::session`]); every other writer and flush in the process waits that long.
pub const SESSION_WINDOW: std::time::Duration = std::time::Duration::from_millis(3);

/// Most messages handled per group commit.
pub const CONSUMER_BATCH_LEN_MAX: usize = 256;

/// One message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    /// `Nats-Msg-Id`, or `<stream>-<sequence>` when a publisher gave none.
    pub msg_id: String,
    pub payload: Bytes,
    /// How many times the server has delivered it (1 the first time).
    pub delivered: i64,
}

/// Why a message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// It can never succeed (undecodable, references nothing known): it is recorded as processed,
    /// logged with the reason, and terminated so it is not redelivered forever.
    #[error("poison message: {0}")]
    Poison(String),
    /// It may succeed later (storage trouble): it is left unacknowledged for redelivery.
    #[error("retry later: {0}")]
    Retry(String),
}

/// A service's reaction to one kind of bus message.
pub trait Handler: Send + 'static {
    /// Turns a message into the commit that records its effect. Reads the store as needed but must
    /// not write it: the consumer commits. The consumer adds the processed id itself.
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError>;

    /// Called for each applied message after its group is durable, in order (to wake watchers).
    fn committed(&mut self, _delivery: &Delivery) {}

    /// The consumer is about to hand over a run of messages ([`Handler::handle_in_run`]) whose
    /// commits it will apply together, in one transaction, after the last of them. A handler
    /// that returns true is in a run until [`Handler::end_run`]. The default is false: each
    /// message is handled with [`Handler::handle`] and committed on its own.
    ///
    /// sled 0.34 writes and syncs two log buffers of its own for every transaction, whatever
    /// it holds: for a handler that sees many small messages (intake's projection folds ~12
    /// events per incident) those writes were most of the service's I/O.
    fn begin_run(&mut self) -> bool {
        false
    }

    /// [`Handler::handle`] for a message of a run: the run's earlier commits are not in the store
    /// yet, so the handler must keep what they write and read that instead of the store, for
    /// every key it reads that an earlier commit of the run wrote (the run's commits are joined
    /// with [`store::Commit::absorb`]). `None` when it cannot (it would have to scan what the
    /// run wrote): the consumer then applies the run and hands the message over again.
    fn handle_in_run(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        self.handle(delivery).map(Some)
    }

    /// The run's commits are applied, or were not (they will be handled again one by one): from
    /// here on read the store.
    fn end_run(&mut self) {}
}

/// [`run_consumer`] with an owned name, for spawning.
pub async fn run_consumer_owned<H: Handler>(
    name: String,
    bus: Bus,
    consumer: PullConsumer,
    store: Store,
    handler: H,
    shutdown: CancellationToken,
) {
    run_consumer(&name, bus, consumer, store, handler, shutdown).await
}

/// Runs `handler` over `consumer` until `shutdown`, finishing the group in hand before returning.
pub async fn run_consumer<H: Handler>(
    name: &str,
    bus: Bus,
    consumer: PullConsumer,
    store: Store,
    mut handler: H,
    shutdown: CancellationToken,
) {
    let mut groups = GroupPuller::new(name, &consumer, CONSUMER_BATCH_LEN_MAX, shutdown);
    while let Some(group) = groups.next_group().await {
        if let Err(error) = handle_group(name, &store, &mut handler, group).await {
            tracing::error!(consumer = name, %error, "group not committed; it will be redelivered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Acks are fire-and-forget publishes: make sure the last ones left before we go.
    bus.flush().await;
    tracing::info!(consumer = name, "consumer drained");
}

/// Pulls a durable consumer in groups: the first message is awaited, then whatever else is
/// already buffered, up to `group_max`. Restarts the pull stream when it fails or ends (with
/// backoff), and ends (`None`) once `shutdown` is cancelled. Every consumer loop in `bus` runs on it.
pub(crate) struct GroupPuller<'a> {
    name: &'a str,
    consumer: &'a PullConsumer,
    group_max: usize,
    shutdown: CancellationToken,
    messages: Option<async_nats::jetstream::consumer::pull::Stream>,
    backoff: Duration,
}

impl<'a> GroupPuller<'a> {
    pub(crate) fn new(
        name: &'a str,
        consumer: &'a PullConsumer,
        group_max: usize,
        shutdown: CancellationToken,
    ) -> GroupPuller<'a> {
        GroupPuller {
            name,
            consumer,
            group_max: group_max.max(1),
            shutdown,
            messages: None,
            backoff: Duration::from_millis(100),
        }
    }

    pub(crate) async fn next_group(&mut self) -> Option<Vec<Message>> {
        let name = self.name;
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            let Some(messages) = self.messages.as_mut() else {
                let stream = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.group_max)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await;
                match stream {
                    Ok(messages) => {
                        self.messages = Some(messages);
                        self.backoff = Duration::from_millis(100);
                    }
                    Err(error) => {
                        tracing::warn!(consumer = name, %error, "cannot start pulling; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(self.backoff) => {}
                            _ = self.shutdown.cancelled() => return None,
                        }
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            let first = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                next = messages.next() => next,
            };
            let mut group = Vec::new();
            match first {
                Some(Ok(message)) => group.push(message),
                Some(Err(error)) => {
                    tracing::warn!(consumer = name, %error, "pull error");
                    continue;
                }
                None => {
                    tracing::warn!(consumer = name, "message stream ended; restarting it");
                    self.messages = None;
                    continue;
                }
            }
            while group.len() < self.group_max {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => group.push(message),
                    Some(Some(Err(error))) => tracing::warn!(consumer = name, %error, "pull error"),
                    _ => break,
                }
            }
            return Some(group);
        }
    }
}

async fn handle_group<H: Handler>(
    name: &str,
    store: &Store,
    handler: &mut H,
    group: Vec<Message>,
) -> Result<(), store::Error> {
    let started = std::time::Instant::now();
    // Only for the debug line below: parsing the reply subject per group costs nothing worth
    // paying when nobody reads it.
    let waited_ms = if tracing::enabled!(target: "muster_pipeline", tracing::Level::DEBUG) {
        stream_wait_ms(&group)
    } else {
        -1
    };
    let mut outcomes = Vec::with_capacity(group.len());
    let mut progress_sent = std::time::Instant::now();
    while outcomes.len() < group.len() {
        // A long group tells JetStream it is still being worked on, so nothing is redelivered
        // while it is handled (ack_wait is short so that a crashed consumer's group is not).
        if progress_sent.elapsed() > crate::ACK_WAIT / 3 {
            for held in &group {
                if let Err(error) = held.ack_with(AckKind::Progress).await {
                    tracing::debug!(consumer = name, %error, "progress ack failed");
                }
            }
            progress_sent = std::time::Instant::now();
        }
        // The group's commits run in sessions of a few milliseconds: no flush lands between
        // them, where one per commit would make each wait out an fsync.
        let session = store.session();
        let window = std::time::Instant::now();
        if handler.begin_run() {
            commit_run(name, &session, handler, &group, &mut outcomes, window);
            handler.end_run();
        }
        while outcomes.len() < group.len() && window.elapsed() < SESSION_WINDOW {
            let message = &group[outcomes.len()];
            let delivery = delivery_of(message);
            let outcome = commit_traced(name, &session, handler, message, &delivery);
            outcomes.push((delivery, outcome));
        }
        drop(session);
    }
    let handled = started.elapsed();
    store.flush().await?;
    let flushed = started.elapsed();
    for ((delivery, outcome), message) in outcomes.iter().zip(&group) {
        let ack = match outcome {
            Outcome::Applied => {
                handler.committed(delivery);
                message.ack().await
            }
            Outcome::Duplicate => message.ack().await,
            Outcome::Poisoned => message.ack_with(AckKind::Term).await,
            Outcome::Retry => {
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            }
        };
        if let Err(error) = ack {
            // The effect is committed; a redelivery will be recognised as processed.
            tracing::warn!(consumer = name, msg_id = %delivery.msg_id, %error, "ack failed");
        }
    }
    tracing::debug!(target: "muster_pipeline", consumer = name, group = group.len(), waited_ms,
        handle_us = handled.as_micros() as u64,
        flush_us = (flushed - handled).as_micros() as u64,
        ack_us = (started.elapsed() - flushed).as_micros() as u64, "group");
    Ok(())
}

/// How long the group's first message waited in the stream, in milliseconds (-1: unknown).
fn stream_wait_ms(group: &[Message]) -> i64 {
    group
        .first()
        .and_then(|message| message.info().ok())
        .map(|info| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            ((now - info.published.unix_timestamp_nanos()) / 1_000_000) as i64
        })
        .unwrap_or(-1)
}

enum Outcome {
    Applied,
    Duplicate,
    Poisoned,
    Retry,
}

/// Hands the group's next messages to a handler in a run until the session's window closes, and
/// applies their commits as one ([`Handler::begin_run`]). If that commit does not apply (a
/// conflict, a message processed meanwhile, a storage error), nothing of it is in the store, and
/// the run's messages are handled again one by one, each with its own commit.
fn commit_run<H: Handler>(
    name: &str,
    session: &store::CommitSession<'_>,
    handler: &mut H,
    group: &[Message],
    outcomes: &mut Vec<(Delivery, Outcome)>,
    window: std::time::Instant,
) {
    let store = session.store();
    let mut run = Commit::new();
    let mut handled: Vec<(Delivery, Outcome)> = Vec::new();
    // A message delivered twice in one group is in the run once: its processed id is not in the
    // store until the run is.
    let mut in_run = std::collections::HashSet::new();
    while outcomes.len() + handled.len() < group.len() && window.elapsed() < SESSION_WINDOW {
        let message = &group[outcomes.len() + handled.len()];
        let delivery = delivery_of(message);
        if !in_run.insert(delivery.msg_id.clone())
            || store.is_processed(&delivery.msg_id).unwrap_or(false)
        {
            handled.push((delivery, Outcome::Duplicate));
            continue;
        }
        let context = trace_of(message);
        let span = handler_span(name, &delivery, &context);
        let result = span
            .in_scope(|| store::trace::sync_scope(context, || handler.handle_in_run(&delivery)));
        let outcome = match result {
            Ok(Some(mut commit)) => {
                commit.processed(delivery.msg_id.clone());
                run.absorb(commit);
                Outcome::Applied
            }
            Err(HandlerError::Poison(reason)) => {
                tracing::error!(consumer = name, msg_id = %delivery.msg_id, subject = %delivery.subject, %reason, "poison message terminated");
                let mut commit = Commit::new();
                commit.processed(delivery.msg_id.clone());
                run.absorb(commit);
                Outcome::Poisoned
            }
            Err(HandlerError::Retry(reason)) => {
                tracing::warn!(consumer = name, msg_id = %delivery.msg_id, %reason, "handler asked for a retry");
                Outcome::Retry
            }
            // Handled again in the next run (or on its own, if the run has nothing yet).
            Ok(None) if handled.is_empty() => {
                handler.end_run();
                let outcome = commit_traced(name, session, handler, message, &delivery);
                outcomes.push((delivery, outcome));
                return;
            }
            Ok(None) => break,
        };
        handled.push((delivery, outcome));
    }
    if run.is_empty() {
        outcomes.extend(handled);
        return;
    }
    match session.commit(&run) {
        Ok(Committed::Applied { .. }) => outcomes.extend(handled),
        other => {
            match other {
                Err(store::Error::Conflict { key }) => {
                    tracing::debug!(consumer = name, %key, "compare-and-swap conflict in a run; handling its messages one by one");
                }
                Err(error) => {
                    tracing::warn!(consumer = name, %error, "a run's commit failed; handling its messages one by one");
                }
                Ok(_) => {}
            }
            handler.end_run();
            // `handled` holds the group's messages from `outcomes.len()` on, in order.
            let start = outcomes.len();
            for (index, (delivery, _)) in handled.into_iter().enumerate() {
                let outcome =
                    commit_traced(name, session, handler, &group[start + index], &delivery);
                outcomes.push((delivery, outcome));
            }
        }
    }
}

/// [`commit_one`] in the message's span, continuing the sender's trace: the handler's events
/// carry it on (`store::trace`).
fn commit_traced<H: Handler>(
    name: &str,
    session: &store::CommitSession<'_>,
    handler: &mut H,
    message: &Message,
    delivery: &Delivery,
) -> Outcome {
    let context = trace_of(message);
    let span = handler_span(name, delivery, &context);
    span.in_scope(|| {
        store::trace::sync_scope(context, || commit_one(name, session, handler, delivery))
    })
}

fn commit_one<H: Handler>(
    name: &str,
    session: &store::CommitSession<'_>,
    handler: &mut H,
    delivery: &Delivery,
) -> Outcome {
    let store = session.store();
    // Cheap early exit for redeliveries; the commit re-checks inside its transaction.
    if store.is_processed(&delivery.msg_id).unwrap_or(false) {
        return Outcome::Duplicate;
    }
    // A compare-and-swap conflict means another writer got there first: handle again on fresh state.
    for _attempt in 0..3 {
        let mut commit = match handler.handle(delivery) {
            Ok(commit) => commit,
            Err(HandlerError::Poison(reason)) => {
                tracing::error!(consumer = name, msg_id = %delivery.msg_id, subject = %delivery.subject, %reason, "poison message terminated");
                let mut commit = Commit::new();
                commit.processed(delivery.msg_id.clone());
                return match session.commit(&commit) {
                    Ok(_) => Outcome::Poisoned,
                    Err(_) => Outcome::Retry,
                };
            }
            Err(HandlerError::Retry(reason)) => {
                tracing::warn!(consumer = name, msg_id = %delivery.msg_id, %reason, "handler asked for a retry");
                return Outcome::Retry;
            }
        };
        commit.processed(delivery.msg_id.clone());
        match session.commit(&commit) {
            Ok(Committed::Applied { .. }) => return Outcome::Applied,
            Ok(Committed::AlreadyProcessed) => return Outcome::Duplicate,
            Err(store::Error::Conflict { key }) => {
                tracing::debug!(consumer = name, %key, "compare-and-swap conflict; handling again");
            }
            Err(error) => {
                tracing::error!(consumer = name, msg_id = %delivery.msg_id, %error, "commit failed");
                return Outcome::Retry;
            }
        }
    }
    Outcome::Retry
}

/// The W3C trace context header on bus messages.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The message's trace continued with a new span, or a new trace when it carries none.
pub(crate) fn trace_of(message: &Message) -> store::trace::TraceContext {
    let header = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(TRACEPARENT_HEADER))
        .map(|value| value.as_str());
    store::trace::TraceContext::continue_or_new(header)
}

/// The span a handler runs in: every log line of it names the trace, the message and the subject
/// (which names the incident).
pub(crate) fn handler_span(
    consumer: &str,
    delivery: &Delivery,
    context: &store::trace::TraceContext,
) -> tracing::Span {
    let incident_id = crate::subjects::parse_incident_event(&delivery.subject)
        .map_or("", |parsed| parsed.incident_id);
    tracing::info_span!(
        "handle",
        consumer,
        incident_id,
        subject = %delivery.subject,
        msg_id = %delivery.msg_id,
        trace_id = %context.trace_id,
        span_id = %context.span_id,
        parent_span_id = context.parent_span_id.as_deref().unwrap_or(""),
    )
}

pub(crate) fn delivery_of(message: &Message) -> Delivery {
    let info = message.info().ok();
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|value| value.as_str().to_string())
        .or_else(|| {
            info.as_ref()
                .map(|info| format!("{}-{}", info.stream, info.stream_sequence))
        })
        .unwrap_or_default();
    Delivery {
        subject: message.subject.to_string(),
        msg_id,
        payload: message.payload.clone(),
        delivered: info.map_or(1, |info| info.delivered),
    }
}
