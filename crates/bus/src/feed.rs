//! Monitoring feeds over NATS: the `MUSTER_FEEDS` stream on `muster.feed.<format>` and a durable
//! pull consumer that hands whole groups to an async handler, answers each message on the
//! subject its publisher named, and acks only once the handler says the effect is durable.
//!
//! Publishers that want the answer (a CAP-style Ack/Error as JSON) put an inbox subject in the
//! [`REPLY_HEADER`] header: the NATS reply subject of a JetStream publish already carries
//! JetStream's own PubAck, so the answer needs a subject of its own.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, stream};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::{Bus, DUPLICATE_WINDOW, Error};

/// The stream feed messages land in.
pub const FEEDS_STREAM: &str = "MUSTER_FEEDS";
/// Feed subjects: `muster.feed.<format>`.
pub const FEED_SUBJECT_PREFIX: &str = "muster.feed.";
/// The largest feed message the stream takes (the HTTP endpoints use the same limit).
pub const FEED_BYTES_MAX: usize = 1024 * 1024;
/// Header naming the subject the answer goes to.
pub const REPLY_HEADER: &str = "Muster-Reply-To";
/// Header naming the configured feed a message comes from (for heartbeats), like `?feed=`.
pub const FEED_NAME_HEADER: &str = "Muster-Feed";
/// Most messages handed to the handler at once.
pub const FEED_GROUP_LEN_MAX: usize = 512;

/// `muster.feed.<format>`.
pub fn feed_subject(format: &str) -> String {
    format!("{FEED_SUBJECT_PREFIX}{format}")
}

/// One feed message as the handler sees it.
#[derive(Debug, Clone)]
pub struct FeedMessage {
    /// The last subject token: `cap`, `alertmanager`, ...
    pub format: String,
    pub payload: Bytes,
    /// The feed name from [`FEED_NAME_HEADER`], if given.
    pub feed_name: Option<String>,
    /// How many times the server has delivered it.
    pub delivered: i64,
}

/// What became of one message.
#[derive(Debug, Clone)]
pub enum FeedOutcome {
    /// Handled (accepted durably, or rejected for good): answer it and ack it.
    Done { answer: Bytes },
    /// Not now (intake is saturated or storage failed): redeliver after `delay`.
    Later { delay: Duration },
}

/// Intake's reaction to a group of feed messages; one outcome per message, in order.
pub trait FeedHandler: Send + 'static {
    fn handle(&mut self, group: Vec<FeedMessage>) -> impl Future<Output = Vec<FeedOutcome>> + Send;
}

impl Bus {
    /// Creates the feeds stream if it does not exist (file storage, 2-minute duplicate window).
    pub async fn ensure_feed_stream(&self) -> Result<(), Error> {
        let config = stream::Config {
            name: FEEDS_STREAM.to_string(),
            description: Some("Muster monitoring-feed messages (CAP, Alertmanager, ...)".into()),
            subjects: vec![format!("{FEED_SUBJECT_PREFIX}>")],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW.min(Duration::from_secs(120)),
            max_message_size: FEED_BYTES_MAX as i32,
            ..Default::default()
        };
        self.create_stream(config).await
    }

    /// The durable pull consumer on the feeds stream.
    pub async fn feed_consumer(&self, durable_name: &str) -> Result<PullConsumer, Error> {
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(durable_name.to_string()),
            filter_subject: format!("{FEED_SUBJECT_PREFIX}>"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 8192,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        self.create_consumer_patiently(FEEDS_STREAM, config).await
    }

    /// Publishes a feed message into the stream and waits for JetStream's ack (used by tests and
    /// tools; real feeds publish with any NATS client). `reply_to` asks for intake's answer.
    pub async fn publish_feed(
        &self,
        format: &str,
        payload: Bytes,
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        let subject = feed_subject(format);
        let mut headers = HeaderMap::new();
        if let Some(reply_to) = reply_to {
            headers.insert(REPLY_HEADER, reply_to);
        }
        let publish_error = |message: String| Error::Publish {
            subject: subject.clone(),
            message,
        };
        self.jetstream()
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| publish_error(e.to_string()))?
            .await
            .map_err(|e| publish_error(e.to_string()))?;
        Ok(())
    }
}

/// Runs `handler` over the feed consumer until `shutdown`, finishing the group in hand.
pub async fn run_feed_consumer<H: FeedHandler>(
    name: String,
    bus: Bus,
    consumer: PullConsumer,
    mut handler: H,
    shutdown: CancellationToken,
) {
    let mut groups =
        crate::consumer::GroupPuller::new(&name, &consumer, FEED_GROUP_LEN_MAX, shutdown);
    while let Some(group) = groups.next_group().await {
        let inputs = group
            .iter()
            .map(|message| FeedMessage {
                format: message
                    .subject
                    .as_str()
                    .strip_prefix(FEED_SUBJECT_PREFIX)
                    .unwrap_or("")
                    .to_string(),
                payload: message.payload.clone(),
                feed_name: header(message.headers.as_ref(), FEED_NAME_HEADER),
                delivered: message.info().map_or(1, |info| info.delivered),
            })
            .collect();
        let outcomes = handler.handle(inputs).await;
        for (message, outcome) in group.iter().zip(outcomes) {
            let acked = match outcome {
                FeedOutcome::Done { answer } => {
                    if let Some(reply_to) = header(message.headers.as_ref(), REPLY_HEADER)
                        && let Err(error) = bus.client().publish(reply_to, answer).await
                    {
                        tracing::warn!(consumer = %name, %error, "answer not sent");
                    }
                    message.ack().await
                }
                FeedOutcome::Later { delay } => message.ack_with(AckKind::Nak(Some(delay))).await,
            };
            if let Err(error) = acked {
                tracing::warn!(consumer = %name, %error, "ack failed; the message will be redelivered and deduplicated");
            }
        }
    }
    bus.flush().await;
    tracing::info!(consumer = %name, "feed consumer drained");
}

fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|value| value.as_str().trim().to_string())
        .filter(|value| !value.is_empty())
}
