//! The intake service: the front door for incident reports and the incident read model.
//!
//! `ReportIncident` validates a report, stores the incident and its `reported` event in one commit
//! and answers once that commit is durable; the outbox relay publishes the event. A projection
//! consumer folds every incident event (graded, units_assigned, ...) back into the incident record,
//! so `GetIncident`, `ListIncidents` and `WatchIncidents` show the whole story in one place.

mod driver;
pub mod feed;
mod grpc;
pub mod metrics;
pub mod rebuild;
mod record;
mod validate;

use domain::region::Region;
use muster_proto::v1 as pb;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use driver::Projection;
pub use record::{
    IncidentRecord, IncidentStatus, OPEN_INCIDENTS, TimelineEntry, incident_id_for, open_incidents,
    register_open_incidents, request_key, sequence_key,
};
pub use validate::{ValidReport, validate_report};

/// The service's name in health checks, logs and event envelopes.
pub const SERVICE_NAME: &str = "intake";
/// Changes buffered per watcher before it is told it fell behind.
pub const WATCH_BUFFER_LEN: usize = 1024;

/// What intake needs to run.
#[derive(Clone)]
pub struct Config {
    pub nats_url: String,
    /// The service's own sled directory.
    pub data_dir: PathBuf,
    /// `live`, or `drill.<id>`.
    pub namespace: String,
    pub region: Arc<Region>,
    /// Shared secrets feeds may post with instead of a token (`None`: tokens only).
    pub feed_secrets: Option<Arc<auth::feed_secrets::FeedSecrets>>,
    /// Token verification key and optional TLS for the gRPC server.
    pub security: lifecycle::grpc::ServerSecurity,
    /// Feed mapping rules; `None` uses the shipped defaults.
    pub mapping: Option<Arc<feeds::mapping::Mapping>>,
    /// How often feed heartbeats and parked updates are checked (default 1 s).
    pub feed_tick: Option<std::time::Duration>,
    /// How long an update for an unknown alert waits before it is surfaced (default 10 min).
    pub park_timeout_ms: Option<i64>,
    /// Where intake records its Prometheus series (`None`: no metrics). The caller serves it
    /// ([`lifecycle::metrics::serve`]).
    pub metrics: Option<lifecycle::metrics::Registry>,
}

/// Everything that can stop intake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::Error),
}

/// Runs intake (gRPC only, feeds over NATS) until `shutdown`; see [`run_with_feeds`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_feeds(config, listener, None, shutdown).await
}

/// Runs intake until `shutdown`, then drains: the feed listener and the gRPC server stop taking
/// requests and finish those in flight, the consumers finish their group, the feed writer
/// commits what is queued, the relay publishes what is committed.
pub async fn run_with_feeds(
    config: Config,
    listener: TcpListener,
    feeds_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    // A store that can no longer write stops the service (and the process, non-zero) as a
    // shutdown would, without stopping whatever else shares `shutdown`.
    let shutdown = shutdown.child_token();
    runtime.stop_on_store_failure(shutdown.clone());
    // Before anything writes an incident record: every commit from here on keeps the index.
    // Instant unless the store has no index yet (then one pass over the records, once, before
    // intake serves anything).
    record::register_open_incidents(&runtime.store)?;
    let (changes, _) = tokio::sync::broadcast::channel(WATCH_BUFFER_LEN);
    let metrics = config.metrics.clone().map(metrics::IntakeMetrics::new);
    if let Some(metrics) = &metrics {
        let store = runtime.store.clone();
        let probe = runtime.lag_probe();
        lifecycle::metrics::register_pipeline(
            metrics.registry(),
            SERVICE_NAME,
            move || store.outbox_len(),
            move || {
                let probe = probe.clone();
                async move { probe.lags().await }
            },
        );
        // Subscribed before anything can change a record; recounts from sled first.
        let follower = metrics.clone().follow_incidents(
            runtime.store.clone(),
            config.namespace.clone(),
            changes.subscribe(),
            shutdown.clone(),
        );
        runtime.spawn_background(move |_| follower);
    }
    let projection = driver::Projection::new(runtime.store.clone(), changes.clone())
        .with_metrics(metrics.clone());
    let filters = vec![bus::subjects::all_incident_events_filter(&config.namespace)];
    runtime
        .consume("projection", &config.namespace, filters, projection)
        .await?;

    let numbering = record::Numbering::default();

    // Feeds: one writer, fed by the HTTP listener and the NATS feed consumer.
    let mapping = config
        .mapping
        .clone()
        .unwrap_or_else(|| Arc::new(feeds::mapping::Mapping::embedded_default()));
    let writer = feed::FeedWriter::open(
        runtime.store.clone(),
        feed::WriterConfig {
            namespace: config.namespace.clone(),
            region: config.region.clone(),
            mapping: mapping.clone(),
            park_timeout_ms: config.park_timeout_ms.unwrap_or(10 * 60 * 1000),
            tick: config
                .feed_tick
                .unwrap_or(std::time::Duration::from_secs(1)),
        },
        numbering.clone(),
        changes.clone(),
        lifecycle::unix_ms_now(),
    )?;
    let (queue, queued) = tokio::sync::mpsc::channel(feed::QUEUE_LEN);
    // The writer ends when every sender is gone (listener and consumer stopped), so what they
    // queued is still committed and answered.
    runtime.spawn_background(move |_| writer.run(queued));
    let feed_intake = feed::FeedIntake::new(
        queue,
        runtime.store.clone(),
        mapping,
        feeds::Limits::default(),
    )
    .with_metrics(metrics.clone());
    runtime
        .consume_feeds(feed::nats::NatsFeeds::new(feed_intake.clone()))
        .await?;
    let feed_access = feed::http::FeedAccess {
        verifier: config.security.verifier.clone(),
        secrets: config.feed_secrets.clone().unwrap_or_default(),
        store: runtime.store.clone(),
        namespace: config.namespace.clone(),
    };
    let http = feeds_listener.map(|listener| {
        tokio::spawn(feed::http::serve(
            feed_intake,
            feed_access,
            listener,
            shutdown.clone(),
        ))
    });
    let service = grpc::IntakeGrpc::new(
        config.clone(),
        runtime.store.clone(),
        changes,
        shutdown.clone(),
        numbering,
    )
    .with_metrics(metrics);
    let routes = tonic::service::Routes::new(
        pb::intake_service_server::IntakeServiceServer::new(service)
            .max_decoding_message_size(lifecycle::grpc::REQUEST_BYTES_MAX),
    );
    let (reporter, health) = lifecycle::grpc::health();
    let served = lifecycle::grpc::serve(
        "muster.v1.IntakeService",
        routes,
        reporter,
        health,
        listener,
        shutdown,
        config.security.for_service(
            SERVICE_NAME,
            &config.namespace,
            runtime.store.clone(),
            &config.region.tree,
        ),
    )
    .await;
    if let Some(http) = http {
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "feed listener failed"),
            Err(error) => tracing::error!(%error, "feed listener panicked"),
        }
    }
    runtime.drain().await?;
    Ok(served?)
}
