//! A durable pull consumer for work with side effects outside the store (a webhook call): one
//! message at a time, an async handler, and a per-message choice between "done" (commit with the
//! processed id, flush, ack) and "later" (commit the attempt's record, flush, nak with a delay).
//!
//! The rule is the same as [`crate::consumer`]'s: the ack follows the flush, and the processed id
//! is committed with the effect, so a redelivery after a crash is a no-op once the work is done.
//! A "later" commit records progress (attempt counts) without the processed id.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use store::{Commit, Committed, Store};
use tokio_util::sync::CancellationToken;

use crate::Bus;
use crate::consumer::{Delivery, HandlerError};

/// What became of one message.
#[derive(Debug)]
pub enum WorkOutcome {
    /// Finished (successfully or for good): commit with the processed id, then ack.
    Done(Commit),
    /// Try again after `delay`: commit the attempt's record (no processed id), then nak.
    Later { commit: Commit, delay: Duration },
}

/// An async reaction to one message. It may read the store, but must not write it.
pub trait WorkHandler: Send + 'static {
    fn handle(
        &mut self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<WorkOutcome, HandlerError>> + Send;
}

/// Runs `handler` over `consumer` one message at a time until `shutdown`; the message in hand is
/// finished first.
pub async fn run_work_consumer<H: WorkHandler>(
    name: String,
    bus: Bus,
    consumer: PullConsumer,
    store: Store,
    mut handler: H,
    shutdown: CancellationToken,
) {
    let mut groups = crate::consumer::GroupPuller::new(&name, &consumer, 1, shutdown);
    while let Some(group) = groups.next_group().await {
        for message in group {
            let delivery = crate::consumer::delivery_of(&message);
            let context = crate::consumer::trace_of(&message);
            let span = crate::consumer::handler_span(&name, &delivery, &context);
            let settle = tracing::Instrument::instrument(
                store::trace::scope(context, work_one(&name, &store, &mut handler, &delivery)),
                span,
            )
            .await;
            let ack = match settle {
                Settle::Ack => message.ack().await,
                Settle::Term => message.ack_with(AckKind::Term).await,
                Settle::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            };
            if let Err(error) = ack {
                tracing::warn!(consumer = %name, msg_id = %delivery.msg_id, %error, "ack failed");
            }
        }
    }
    bus.flush().await;
    tracing::info!(consumer = %name, "consumer drained");
}

enum Settle {
    Ack,
    Term,
    Nak(Duration),
}

async fn work_one<H: WorkHandler>(
    name: &str,
    store: &Store,
    handler: &mut H,
    delivery: &Delivery,
) -> Settle {
    if store.is_processed(&delivery.msg_id).unwrap_or(false) {
        return Settle::Ack;
    }
    let (commit, ack) = match handler.handle(delivery).await {
        Ok(WorkOutcome::Done(mut commit)) => {
            commit.processed(delivery.msg_id.clone());
            (commit, Settle::Ack)
        }
        Ok(WorkOutcome::Later { commit, delay }) => (commit, Settle::Nak(delay)),
        Err(HandlerError::Poison(reason)) => {
            tracing::error!(consumer = name, msg_id = %delivery.msg_id, subject = %delivery.subject, %reason, "poison message terminated");
            let mut commit = Commit::new();
            commit.processed(delivery.msg_id.clone());
            (commit, Settle::Term)
        }
        Err(HandlerError::Retry(reason)) => {
            tracing::warn!(consumer = name, msg_id = %delivery.msg_id, %reason, "handler asked for a retry");
            return Settle::Nak(Duration::from_secs(1));
        }
    };
    if commit.is_empty() {
        return ack;
    }
    match store.commit(&commit) {
        Ok(Committed::Applied { .. }) | Ok(Committed::AlreadyProcessed) => {}
        Err(error) => {
            tracing::error!(consumer = name, msg_id = %delivery.msg_id, %error, "commit failed");
            return Settle::Nak(Duration::from_secs(1));
        }
    }
    if let Err(error) = store.flush().await {
        tracing::error!(consumer = name, msg_id = %delivery.msg_id, %error, "flush failed");
        return Settle::Nak(Duration::from_secs(1));
    }
    ack
}
