//! Reading a namespace's history back from the event stream, for `muster rebuild`: an ordered
//! consumer (ephemeral, no acks, recreated by the client on a gap) over `muster.<ns>.>` from the
//! first message, up to the stream's last sequence when the read began. It leaves no trace on the
//! server: the services' durable consumers and their positions are untouched.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures_util::StreamExt;

use crate::consumer::{Delivery, delivery_of};
use crate::{Bus, EVENTS_STREAM, Error};

/// How long the reader waits for the next message before it gives up: the messages it waits for
/// are stored already, so a long silence means the server or the connection is in trouble.
pub const REPLAY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One stored event as a rebuild sees it.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Its sequence in the stream, for error messages and the summary.
    pub stream_sequence: u64,
    /// Subject, message id (`Nats-Msg-Id`, or `<stream>-<sequence>`), payload, as a consumer
    /// would have been handed it.
    pub delivery: Delivery,
}

/// The stream as it stood when the read began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamExtent {
    /// The first sequence still stored (1 unless messages were purged or aged out).
    pub first_sequence: u64,
    /// The last sequence the read goes up to; later messages are left for the services.
    pub last_sequence: u64,
    /// How many messages of the namespace there are up to `last_sequence`, as the server counted
    /// them when the consumer was created.
    pub namespace_messages: u64,
}

/// Reads one namespace's events in stream order; see the module docs.
pub struct NamespaceReader {
    extent: StreamExtent,
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
    last_seen: u64,
    /// The ordered consumer's name (the client names a recreated one `<name>_<n>`), to delete it
    /// when done rather than leave it to the server's 30-second inactivity limit.
    consumer_name: String,
    stream: Option<async_nats::jetstream::stream::Stream>,
}

impl Bus {
    /// Opens a reader over every event of `namespace` in [`EVENTS_STREAM`]: from the first,
    /// up to the last sequence the stream has now.
    pub async fn read_namespace(&self, namespace: &str) -> Result<NamespaceReader, Error> {
        crate::subjects::validate_namespace(namespace)?;
        let stream_error = |message: String| Error::Stream {
            stream: EVENTS_STREAM.to_string(),
            message,
        };
        let mut stream = self
            .jetstream
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        let state = stream
            .info()
            .await
            .map_err(|error| stream_error(error.to_string()))?
            .state
            .clone();
        let mut extent = StreamExtent {
            first_sequence: state.first_sequence,
            last_sequence: state.last_sequence,
            namespace_messages: 0,
        };
        let consumer_name = format!(
            "muster_rebuild_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        if state.messages == 0 {
            return Ok(NamespaceReader {
                extent,
                messages: None,
                last_seen: 0,
                consumer_name,
                stream: None,
            });
        }
        let config = OrderedConfig {
            name: Some(consumer_name.clone()),
            description: Some(format!("muster rebuild: reads {namespace}")),
            filter_subject: crate::subjects::namespace_filter(namespace),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|error| Error::Consumer {
                consumer: "rebuild (ordered)".into(),
                message: error.to_string(),
            })?;
        extent.namespace_messages = consumer.cached_info().num_pending;
        let messages = if extent.namespace_messages == 0 {
            None
        } else {
            Some(consumer.messages().await.map_err(|error| Error::Consumer {
                consumer: "rebuild (ordered)".into(),
                message: error.to_string(),
            })?)
        };
        Ok(NamespaceReader {
            extent,
            messages,
            last_seen: 0,
            consumer_name,
            stream: Some(stream),
        })
    }
}

impl NamespaceReader {
    pub fn extent(&self) -> &StreamExtent {
        &self.extent
    }

    /// The stream sequence of the last event handed out (0 before the first).
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// Stops reading and deletes the ordered consumer on the server (best effort: one left
    /// behind goes away after 30 s without a reader).
    pub async fn close(mut self) {
        self.messages = None;
        let Some(stream) = self.stream.take() else {
            return;
        };
        let names: Vec<String> = {
            use futures_util::TryStreamExt;
            match stream.consumer_names().try_collect().await {
                Ok(names) => names,
                Err(_) => return,
            }
        };
        for name in names
            .iter()
            .filter(|name| name.starts_with(&self.consumer_name))
        {
            let _ = stream.delete_consumer(name).await;
        }
    }

    /// The next event, `Ok(None)` once every event up to the extent's last sequence was read.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, Error> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let consumer_error = |message: String| Error::Consumer {
            consumer: "rebuild (ordered)".into(),
            message,
        };
        let message = match tokio::time::timeout(REPLAY_IDLE_TIMEOUT, messages.next()).await {
            Err(_) => {
                return Err(consumer_error(format!(
                    "no message for {}s after stream sequence {} although the stream holds more \
                     of the namespace up to {}; is the server overloaded or the connection down?",
                    REPLAY_IDLE_TIMEOUT.as_secs(),
                    self.last_seen,
                    self.extent.last_sequence
                )));
            }
            Ok(None) => {
                return Err(consumer_error(format!(
                    "the stream of messages ended after sequence {}",
                    self.last_seen
                )));
            }
            Ok(Some(Err(error))) => return Err(consumer_error(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|error| {
            consumer_error(format!("a message without JetStream info: {error}"))
        })?;
        let (stream_sequence, pending) = (info.stream_sequence, info.pending);
        if stream_sequence > self.extent.last_sequence {
            // Published after the read began: the services' own consumers will take it.
            self.messages = None;
            return Ok(None);
        }
        self.last_seen = stream_sequence;
        if pending == 0 || stream_sequence == self.extent.last_sequence {
            self.messages = None;
        }
        Ok(Some(StreamEvent {
            stream_sequence,
            delivery: delivery_of(&message),
        }))
    }
}

/// Why a rebuild stopped at one stored event.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The event cannot be folded: undecodable, or naming something the rebuilt state does not
    /// hold. The sequence lets an operator look at it (`nats stream get MUSTER_EVENTS <seq>`).
    #[error("stream sequence {stream_sequence} ({subject}): {problem}")]
    BadEvent {
        stream_sequence: u64,
        subject: String,
        problem: String,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl ReplayError {
    pub fn bad(event: &StreamEvent, problem: impl Into<String>) -> ReplayError {
        ReplayError::BadEvent {
            stream_sequence: event.stream_sequence,
            subject: event.delivery.subject.clone(),
            problem: problem.into(),
        }
    }
}

/// What a rebuild did, for the command's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// `(what, how many)`: "incidents", "units", "gradings", ...
    pub counts: Vec<(String, u64)>,
    /// Events the service's consumers take that the rebuild recorded as processed.
    pub processed_ids: u64,
    /// Bad events skipped (`--skip-bad-events`), with why.
    pub skipped: Vec<String>,
    /// Sentences naming the state the stream cannot give back.
    pub not_rebuilt: Vec<String>,
}

/// One service's rebuild: fed every event of the namespace in stream order, then finished.
pub trait Rebuild {
    /// Folds one event (or ignores it, when the service does not consume its subject).
    fn apply(&mut self, event: &StreamEvent) -> Result<(), ReplayError>;
    /// Writes what is left (counters, timers), and reports.
    fn finish(self: Box<Self>) -> Result<RebuildReport, ReplayError>;
}

/// Whether [`replay_handler`] changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    Applied,
    /// The message id was processed already (the same event stored twice, after the duplicate
    /// window).
    Duplicate,
}

/// Runs a service's own consumer handler on a stored event and commits its effect the way the
/// consumer would (with the message id as processed), minus the outbox events: those are on the
/// stream already, and publishing them again would be a second copy for every consumer.
pub fn replay_handler<H: crate::Handler>(
    store: &store::Store,
    handler: &mut H,
    event: &StreamEvent,
) -> Result<Replayed, ReplayError> {
    let delivery = &event.delivery;
    if store.is_processed(&delivery.msg_id)? {
        return Ok(Replayed::Duplicate);
    }
    let mut commit = match handler.handle(delivery) {
        Ok(commit) => commit,
        Err(crate::HandlerError::Poison(problem) | crate::HandlerError::Retry(problem)) => {
            return Err(ReplayError::bad(event, problem));
        }
    };
    commit.drop_events();
    commit.processed(delivery.msg_id.clone());
    match store.commit(&commit)? {
        store::Committed::Applied { .. } => {
            handler.committed(delivery);
            Ok(Replayed::Applied)
        }
        store::Committed::AlreadyProcessed => Ok(Replayed::Duplicate),
    }
}

/// How far a service's durable consumers got, by purpose (`projection`, `grader`, `assigner`,
/// ...): every message of a consumer's filter at or below its ack floor was handled and
/// acknowledged by the lost store, so its effect is on the stream (unless the store died with
/// it in its outbox). A message above the floor is left to the service: it is not marked
/// processed, and JetStream delivers it again. A consumer the server does not have (`None`)
/// starts over from the first message when the service starts, so every input counts as handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerFloors {
    pub floors: std::collections::BTreeMap<String, Option<u64>>,
}

impl ConsumerFloors {
    /// Whether the consumer for `purpose` handled the message at `stream_sequence`.
    pub fn handled(&self, purpose: &str, stream_sequence: u64) -> bool {
        match self.floors.get(purpose) {
            Some(Some(floor)) => stream_sequence <= *floor,
            Some(None) | None => true,
        }
    }
    /// Files the floor read under consumer purpose `from` under `to`: a partitioned instance's
    /// consumers carry their partitions in their names (`grader-p390000`), the rebuild asks by
    /// purpose (`grader`).
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(floor) = self.floors.remove(from) {
            self.floors.insert(to.to_string(), floor);
        }
    }
}

impl Bus {
    /// The ack floors of `service`'s durable consumers for `purposes` in `namespace` (named
    /// `<service>-<purpose>-<namespace>` by [`crate::Runtime::consume`]).
    pub async fn consumer_floors(
        &self,
        service: &str,
        namespace: &str,
        purposes: &[&str],
    ) -> Result<ConsumerFloors, Error> {
        let stream_error = |message: String| Error::Stream {
            stream: EVENTS_STREAM.to_string(),
            message,
        };
        let stream = self
            .jetstream
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        let names: Vec<String> = {
            use futures_util::TryStreamExt;
            stream
                .consumer_names()
                .try_collect()
                .await
                .map_err(|error| stream_error(error.to_string()))?
        };
        let mut floors = ConsumerFloors::default();
        for purpose in purposes {
            let durable = crate::runtime::durable_name(service, purpose, namespace);
            let floor = if names.contains(&durable) {
                let info =
                    stream
                        .consumer_info(&durable)
                        .await
                        .map_err(|error| Error::Consumer {
                            consumer: durable.clone(),
                            message: error.to_string(),
                        })?;
                Some(info.ack_floor.stream_sequence)
            } else {
                None
            };
            floors.floors.insert(purpose.to_string(), floor);
        }
        Ok(floors)
    }
}
