//! The NATS JetStream adapter every service reaches the bus through.
//!
//! - [`subjects`]: the subject layout, namespace first (`muster.<ns>.incident.<partition>.<id>.<event>`);
//! - [`Bus`]: connection, streams, publishing with `Nats-Msg-Id`, durable pull consumers;
//! - [`relay`]: moves committed outbox events from a [`store::Store`] to JetStream;
//! - [`consumer`]: runs a durable pull consumer whose effects commit before the ack.

pub mod consumer;
pub mod feed;
pub mod relay;
pub mod replay;
pub mod runtime;
pub mod subjects;
pub mod work;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use bytes::Bytes;

pub use async_nats;
pub use consumer::{Delivery, Handler, HandlerError, run_consumer, run_consumer_owned};
pub use feed::{FeedHandler, FeedMessage, FeedOutcome};
pub use relay::run_relay;
pub use replay::{NamespaceReader, StreamEvent, StreamExtent};
pub use runtime::Runtime;
pub use work::{WorkHandler, WorkOutcome};

/// The stream that holds every incident and unit event, live and drill.
pub const EVENTS_STREAM: &str = "MUSTER_EVENTS";
/// JetStream drops a second publish with the same `Nats-Msg-Id` inside this window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The largest event Muster publishes; nats-server is configured with the same `max_payload`.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Environment variable naming how many copies JetStream keeps of each stream Muster creates
/// (1 on a single nats-server; 3 on a 3-node cluster). Read when a stream is created: an
/// existing stream keeps the replicas it was created with.
pub const STREAM_REPLICAS_ENV: &str = "MUSTER_STREAM_REPLICAS";
/// How long creating a consumer is retried while JetStream is not ready.
pub const CONSUMER_PATIENCE: Duration = Duration::from_secs(15);
/// How long JetStream waits for a delivered event's ack before it delivers it again: what a
/// consumer that died mid-group (kill -9) costs its restarted self. Groups that take longer to
/// handle send progress acks ([`consumer`]).
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long [`Bus::flush`] waits for NATS: a drain must end even when the server is gone.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream allows at most five replicas of a stream.
pub const STREAM_REPLICAS_MAX: usize = 5;

/// Everything that can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publish to {subject}: {message}")]
    Publish { subject: String, message: String },
    #[error("invalid subject token {token:?}: {reason}")]
    Subject { token: String, reason: &'static str },
    #[error("{variable}={value:?}: {reason}")]
    Setting {
        variable: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The stream replica count from `MUSTER_STREAM_REPLICAS` (unset or empty: 1).
pub fn stream_replicas_from_env() -> Result<usize, Error> {
    match std::env::var(STREAM_REPLICAS_ENV) {
        Ok(value) if !value.trim().is_empty() => parse_stream_replicas(&value),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(1),
        Err(std::env::VarError::NotUnicode(value)) => Err(Error::Setting {
            variable: STREAM_REPLICAS_ENV,
            value: value.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".into(),
        }),
    }
}

/// Parses a stream replica count: a whole number from 1 to [`STREAM_REPLICAS_MAX`].
pub fn parse_stream_replicas(value: &str) -> Result<usize, Error> {
    let invalid = |reason: String| Error::Setting {
        variable: STREAM_REPLICAS_ENV,
        value: value.to_string(),
        reason,
    };
    let replicas: usize = value.trim().parse().map_err(|_| {
        invalid(format!(
            "the number of stream replicas must be a whole number from 1 to {STREAM_REPLICAS_MAX}"
        ))
    })?;
    if !(1..=STREAM_REPLICAS_MAX).contains(&replicas) {
        return Err(invalid(format!(
            "the number of stream replicas must be from 1 to {STREAM_REPLICAS_MAX} (JetStream's \
             limit); use 1 on a single nats-server and at most the cluster's size otherwise"
        )));
    }
    Ok(replicas)
}

/// `url` with the password in it, if any, replaced by `***`, for logs and errors.
pub fn redact_password(url: &str) -> String {
    if url.contains(',') {
        return url
            .split(',')
            .map(|one| redact_password(one.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                format!("{scheme}://{user}:***@{host}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The servers of a `--nats-url`: one URL, or several separated by commas (the nodes of a
/// cluster: a service then connects to whichever answers, and fails over).
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, Error> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(|one| {
            one.parse::<async_nats::ServerAddr>()
                .map_err(|error| Error::Connect {
                    url: redact_password(one),
                    message: format!("not a NATS URL: {error}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|addrs| {
            if addrs.is_empty() {
                Err(Error::Connect {
                    url: String::new(),
                    message: "no NATS URL given".into(),
                })
            } else {
                Ok(addrs)
            }
        })
}

/// The server's answer to the commit of an atomic batch: a publish acknowledgement with the
/// batch's size, or an error.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    error: Option<BatchAnswerError>,
    #[serde(default)]
    count: usize,
}

#[derive(serde::Deserialize)]
struct BatchAnswerError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// A connection to NATS with its JetStream context.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Whether the event stream takes atomic batches (`allow_atomic`): set by
    /// [`Bus::ensure_streams`], cleared when the server refuses a batch as disabled.
    atomic_batches: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// One event of an atomic batch ([`Bus::publish_batch`]).
#[derive(Debug, Clone)]
pub struct BatchEvent<'a> {
    pub subject: &'a str,
    pub msg_id: &'a str,
    pub payload: Bytes,
    pub traceparent: Option<&'a str>,
}

/// Why JetStream did not store an atomic batch. Nothing of the batch is stored in any case.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A `Nats-Msg-Id` of the batch is already in the stream (a republish after a crash):
    /// JetStream refuses the whole batch (err_code 10201); publish the events one by one, which
    /// drops the duplicates one by one.
    #[error("the batch holds an event JetStream already has")]
    Duplicate,
    /// The stream does not take atomic batches (err_code 10174: created by an older Muster and
    /// not updated, or a server older than 2.12).
    #[error("the stream does not take atomic batches")]
    Disabled,
    #[error(transparent)]
    Bus(#[from] Error),
}

/// Most events in one atomic batch: nats-server's limit per batch is 1000.
pub const BATCH_LEN_MAX: usize = 1000;
/// How long the commit of an atomic batch may take before it counts as failed.
const BATCH_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// JetStream error codes of atomic batch publishing (nats-server's errors.json).
const JS_ERR_ATOMIC_DISABLED: u64 = 10174;
const JS_ERR_ATOMIC_DUPLICATE_MSG_ID: u64 = 10201;

impl Bus {
    /// Connects, retrying for up to `patience` (a nats-server child may still be starting).
    pub async fn connect(url: &str, client_name: &str, patience: Duration) -> Result<Bus, Error> {
        let deadline = Instant::now() + patience;
        let client = loop {
            let mut options = async_nats::ConnectOptions::new()
                .name(client_name)
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None);
            // async-nats ignores a user and password in the URL; deploy/ puts them there.
            let addrs = server_addrs(url)?;
            if let Some(addr) = addrs.iter().find(|addr| addr.username().is_some()) {
                let user = addr.username().unwrap_or_default();
                let password = addr.password().unwrap_or_default();
                options = options.user_and_password(user.to_string(), password.to_string());
            }
            match options.connect(addrs).await {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, url = %redact_password(url), "NATS not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    return Err(Error::Connect {
                        url: redact_password(url),
                        message: error.to_string(),
                    });
                }
            }
        };
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(1024)
            .build(client.clone());
        Ok(Bus {
            client,
            jetstream,
            atomic_batches: Default::default(),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Creates the event stream if it does not exist: file storage, duplicate window, size limits.
    /// Retries for a few seconds while JetStream is still starting.
    pub async fn ensure_streams(&self) -> Result<(), Error> {
        let config = stream::Config {
            name: EVENTS_STREAM.to_string(),
            description: Some("Muster incident and unit events, live and drill namespaces".into()),
            subjects: vec!["muster.live.>".into(), "muster.drill.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: EVENT_BYTES_MAX as i32,
            allow_atomic_publish: true,
            ..Default::default()
        };
        self.create_stream(config).await?;
        self.enable_atomic_batches(EVENTS_STREAM).await;
        Ok(())
    }

    /// Makes sure `stream` takes atomic batches, updating a stream created without them (by an
    /// earlier Muster). A server or a NATS user that cannot do it leaves the relay publishing
    /// one event at a time, which is correct but slower (every event is its own fsync under
    /// `sync_interval: always`), and says so.
    async fn enable_atomic_batches(&self, stream: &str) {
        use std::sync::atomic::Ordering;
        let info = match self.jetstream.get_stream(stream).await {
            Ok(mut handle) => handle.info().await.map(|info| info.config.clone()),
            Err(error) => {
                tracing::warn!(stream, %error, "cannot read the stream's configuration; publishing events one at a time");
                return;
            }
        };
        let mut config = match info {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(stream, %error, "cannot read the stream's configuration; publishing events one at a time");
                return;
            }
        };
        if !config.allow_atomic_publish {
            config.allow_atomic_publish = true;
            if let Err(error) = self.jetstream.update_stream(config).await {
                tracing::warn!(stream, %error, "cannot allow atomic batches on the stream (needs nats-server 2.12+ and $JS.API.STREAM.UPDATE); publishing events one at a time");
                return;
            }
            tracing::info!(stream, "stream updated to take atomic batches");
        }
        self.atomic_batches.store(true, Ordering::Relaxed);
    }

    /// Whether [`Bus::publish_batch`] is worth trying.
    pub fn atomic_batches(&self) -> bool {
        self.atomic_batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes `events` (at most [`BATCH_LEN_MAX`], all in one stream) as one atomic batch
    /// (ADR-50): JetStream stores all of them or none, and under `sync_interval: always`
    /// nats-server 2.15 syncs the batch to disk once instead of once per event, which is what
    /// makes the outbox relay's throughput (each event fsynced on its own tops out at a few
    /// hundred per second on this class of disk). Every event keeps its `Nats-Msg-Id`, so
    /// consumers' processed ids and later single publishes still dedup against it. Returns once
    /// the server has committed the batch.
    pub async fn publish_batch(&self, events: &[BatchEvent<'_>]) -> Result<(), BatchError> {
        use async_nats::HeaderMap;
        let Some((last, rest)) = events.split_last() else {
            return Ok(());
        };
        if events.len() > BATCH_LEN_MAX {
            return Err(Error::Publish {
                subject: last.subject.to_string(),
                message: format!(
                    "an atomic batch holds at most {BATCH_LEN_MAX} events, not {}",
                    events.len()
                ),
            }
            .into());
        }
        let batch_id = format!(
            "{}{}",
            store::trace::new_span_id(),
            store::trace::new_span_id()
        );
        let headers_of = |sequence: usize, event: &BatchEvent<'_>| {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.msg_id);
            if let Some(traceparent) = event.traceparent {
                headers.insert(consumer::TRACEPARENT_HEADER, traceparent);
            }
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
            headers
        };
        let publish_error = |subject: &str, message: String| Error::Publish {
            subject: subject.to_string(),
            message,
        };
        for (index, event) in rest.iter().enumerate() {
            self.client
                .publish_with_headers(
                    event.subject.to_string(),
                    headers_of(index + 1, event),
                    event.payload.clone(),
                )
                .await
                .map_err(|error| publish_error(event.subject, error.to_string()))?;
        }
        let mut headers = headers_of(events.len(), last);
        headers.insert("Nats-Batch-Commit", "1");
        let reply = tokio::time::timeout(
            BATCH_COMMIT_TIMEOUT,
            self.client.request_with_headers(
                last.subject.to_string(),
                headers,
                last.payload.clone(),
            ),
        )
        .await
        .map_err(|_| {
            publish_error(
                last.subject,
                format!("no answer to the batch commit within {BATCH_COMMIT_TIMEOUT:?}"),
            )
        })?
        .map_err(|error| publish_error(last.subject, error.to_string()))?;
        let answer: BatchAnswer = serde_json::from_slice(&reply.payload).map_err(|error| {
            publish_error(
                last.subject,
                format!("unreadable batch acknowledgement: {error}"),
            )
        })?;
        if let Some(error) = answer.error {
            return Err(match error.err_code {
                JS_ERR_ATOMIC_DUPLICATE_MSG_ID => BatchError::Duplicate,
                JS_ERR_ATOMIC_DISABLED => {
                    self.atomic_batches
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    BatchError::Disabled
                }
                code => publish_error(
                    last.subject,
                    format!("batch refused ({code}): {}", error.description),
                )
                .into(),
            });
        }
        if answer.count != events.len() {
            return Err(publish_error(
                last.subject,
                format!(
                    "the batch acknowledgement counts {} events, {} were sent",
                    answer.count,
                    events.len()
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Creates `config`'s stream unless it exists, retrying for a few seconds while JetStream is
    /// still starting, with the replicas of [`stream_replicas_from_env`].
    pub(crate) async fn create_stream(&self, mut config: stream::Config) -> Result<(), Error> {
        // A replicated stream needs a cluster with at least that many JetStream servers;
        // nats-server refuses it otherwise, which the error below reports after the retries.
        config.num_replicas = stream_replicas_from_env()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.jetstream.get_or_create_stream(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    return Err(Error::Stream {
                        stream: config.name.clone(),
                        message: error.to_string(),
                    });
                }
            }
        }
    }

    /// Publishes with `Nats-Msg-Id` (and the W3C `traceparent` header when given) and returns the
    /// future of the server's ack, so that callers can keep many publishes in flight and await the
    /// acks together.
    pub async fn publish_dedup(
        &self,
        subject: String,
        msg_id: &str,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<jetstream::context::PublishAckFuture, Error> {
        let mut message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        if let Some(traceparent) = traceparent {
            message = message.header(consumer::TRACEPARENT_HEADER, traceparent);
        }
        self.jetstream
            .send_publish(subject.clone(), message)
            .await
            .map_err(|error| Error::Publish {
                subject,
                message: error.to_string(),
            })
    }

    /// A durable pull consumer on the event stream, created on first use, acked explicitly.
    pub async fn durable_consumer(
        &self,
        durable_name: &str,
        filter_subjects: Vec<String>,
    ) -> Result<PullConsumer, Error> {
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(durable_name.to_string()),
            filter_subjects,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 4096,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        self.create_consumer_patiently(EVENTS_STREAM, config).await
    }

    /// Creates (or updates: create-or-update on nats-server 2.10+, so a changed filter is
    /// applied) a durable pull consumer on `stream`, retrying for [`CONSUMER_PATIENCE`] while
    /// the stream or the cluster's leaders are not ready (a node restarting, an election).
    pub(crate) async fn create_consumer_patiently(
        &self,
        stream: &str,
        config: jetstream::consumer::pull::Config,
    ) -> Result<PullConsumer, Error> {
        let durable_name = config.durable_name.clone().unwrap_or_default();
        let deadline = Instant::now() + CONSUMER_PATIENCE;
        loop {
            let attempt = async {
                let handle = self
                    .jetstream
                    .get_stream(stream)
                    .await
                    .map_err(|error| format!("stream {stream}: {error}"))?;
                handle
                    .create_consumer(config.clone())
                    .await
                    .map_err(|error| error.to_string())
            };
            match attempt.await {
                Ok(consumer) => return Ok(consumer),
                Err(message) if Instant::now() < deadline => {
                    tracing::warn!(consumer = %durable_name, %message, "JetStream not ready for the consumer; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(message) => {
                    return Err(Error::Consumer {
                        consumer: durable_name,
                        message,
                    });
                }
            }
        }
    }

    /// A durable consumer's lag: messages not yet delivered (`num_pending`) plus messages
    /// delivered and not yet acknowledged (`num_ack_pending`), from JetStream's consumer info.
    pub async fn consumer_lag(&self, stream: &str, durable_name: &str) -> Result<u64, Error> {
        let consumer_error = |message: String| Error::Consumer {
            consumer: durable_name.to_string(),
            message,
        };
        let stream = self
            .jetstream
            .get_stream(stream)
            .await
            .map_err(|error| Error::Stream {
                stream: stream.to_string(),
                message: error.to_string(),
            })?;
        let info = stream
            .consumer_info(durable_name)
            .await
            .map_err(|error| consumer_error(error.to_string()))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// The partition that owns an incident, read from the subject its `reported` event was
    /// stored under (`STREAM.INFO` with a subject filter: no message is read). `None` when the
    /// stream holds no such report (not yet published, an unknown id, or a subject written
    /// before partitions existed). Used on refusal paths only: one JetStream call each.
    pub async fn incident_partition(
        &self,
        namespace: &str,
        incident_id: &str,
    ) -> Result<Option<String>, Error> {
        use futures_util::TryStreamExt;
        let Ok(filter) = subjects::incident_reported_lookup(namespace, incident_id) else {
            return Ok(None);
        };
        let stream_error = |message: String| Error::Stream {
            stream: EVENTS_STREAM.to_string(),
            message,
        };
        let stream = self
            .jetstream
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        let mut found = stream
            .info_with_subjects(filter)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        while let Some((subject, _count)) = found
            .try_next()
            .await
            .map_err(|error| stream_error(error.to_string()))?
        {
            if let Some(partition) =
                subjects::parse_incident_event(&subject).and_then(|parsed| parsed.partition)
            {
                return Ok(Some(partition.to_string()));
            }
        }
        Ok(None)
    }

    /// Waits until everything this client sent (acks included) reached the server, for at most
    /// [`FLUSH_TIMEOUT`]: with NATS unreachable the client would wait for a reconnection forever,
    /// and a service told to stop must stop. Acks that did not leave are redelivered events,
    /// which consumers recognise as processed.
    pub async fn flush(&self) {
        match tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "NATS flush failed"),
            Err(_) => tracing::warn!(
                timeout = ?FLUSH_TIMEOUT,
                "NATS unreachable; what was not sent (acks) will be redelivered and skipped as processed"
            ),
        }
    }
}
