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

/// A connection to NATS with its JetStream context.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

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
        Ok(Bus { client, jetstream })
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
            ..Default::default()
        };
        self.create_stream(config).await
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
            ack_wait: Duration::from_secs(30),
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

    /// Waits until everything this client sent (acks included) reached the server.
    pub async fn flush(&self) {
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "NATS flush failed");
        }
    }
}
