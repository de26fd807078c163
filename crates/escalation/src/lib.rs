//! The escalation service: graded responsibility (分级负责) under unified command (统一领导).
//!
//! It consumes `reported` and `updated` events, grades each incident with the rulebook, names the single lead
//! jurisdiction (territorial first, lifted to the level the grade requires), stores the decision
//! and emits `graded` in the same commit. The same commit starts the incident's escalation
//! machine (acknowledgement chain, reporting obligations) and stores its timers; a timer task
//! fires them, and gRPC acknowledges, escalates, records reports, confirms downgrades and hands
//! command over, each in one commit. New facts (`updated`) re-grade: an upgrade applies at once,
//! a downgrade waits for an officer's confirmation. A `closed` incident's machine stops: its
//! timers are cancelled, its open reports waived, and nothing moves it again.

pub mod command;
mod driver;
mod grpc;
pub mod metrics;
pub mod notifier;
pub mod notify;
pub mod rebuild;
pub mod timers;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use domain::escalation::EscalationPolicy;
use domain::region::Region;
use muster_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use driver::{Grader, GradingRecord, grade_incident, grading_key};

/// The service's name in health checks, logs and event envelopes.
pub const SERVICE_NAME: &str = "escalation";

/// What escalation needs to run.
#[derive(Clone)]
pub struct Config {
    pub nats_url: String,
    /// The service's own sled directory.
    pub data_dir: PathBuf,
    /// `live`, or `drill.<id>`.
    pub namespace: String,
    pub region: Arc<Region>,
    /// The partitions this instance serves (province codes, or the region root's for incidents
    /// in no province); empty: every partition. Its consumers see only these partitions'
    /// subjects, and its gRPC handlers refuse other partitions' incidents.
    pub partitions: Vec<String>,
    /// Token verification key and optional TLS for the gRPC server.
    pub security: lifecycle::grpc::ServerSecurity,
    /// The escalation policy; `None` means the shipped default
    /// ([`EscalationPolicy::embedded_default`]). Tests pass one on a compressed clock.
    pub policy: Option<Arc<EscalationPolicy>>,
    /// Where the notifier POSTs live notifications (`http://` only); `None`: they are recorded
    /// failed with "no notify webhook is configured".
    pub notify_webhook_url: Option<String>,
    /// Where drill notifications go; `None`: the drill sink (recorded, no network call).
    pub notify_drill_webhook_url: Option<String>,
    /// Where escalation records its Prometheus series (`None`: no metrics). The caller serves it
    /// ([`lifecycle::metrics::serve`]).
    pub metrics: Option<lifecycle::metrics::Registry>,
}

/// Everything that can stop escalation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::Error),
    #[error("notifier: {0}")]
    Notifier(String),
    #[error("{0}")]
    Partition(String),
}

/// A consumer's name part for an instance serving `partitions`: `<purpose>` for every
/// partition, `<purpose>-p<code>[-<code>...]` otherwise, so each instance has its own durable
/// consumers (two instances sharing one would split its messages between their stores).
pub fn consumer_purpose(purpose: &str, partitions: &[String]) -> String {
    if partitions.is_empty() {
        purpose.to_string()
    } else {
        format!("{purpose}-p{}", partitions.join("-"))
    }
}

/// Runs escalation until `shutdown`, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let mut config = config;
    config.partitions.sort();
    config.partitions.dedup();
    config
        .region
        .tree
        .check_partitions(&config.partitions)
        .map_err(Error::Partition)?;
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    // A store that can no longer write stops the service (and the process, non-zero) as a
    // shutdown would, without stopping whatever else shares `shutdown`.
    let shutdown = shutdown.child_token();
    runtime.stop_on_store_failure(shutdown.clone());
    if let Some(registry) = &config.metrics {
        metrics::register(registry, &runtime, &config.namespace);
    }
    let policy = config
        .policy
        .clone()
        .unwrap_or_else(|| Arc::new(EscalationPolicy::embedded_default()));
    let grader = driver::Grader::new(runtime.store.clone(), config.region.clone(), policy);
    // Reports, updates and closes on one consumer, so an incident's update or close never
    // overtakes its report (nor a close an update).
    // Only this instance's partitions (every partition when it names none).
    let filters = [
        bus::subjects::REPORTED,
        bus::subjects::UPDATED,
        bus::subjects::CLOSED,
    ]
    .iter()
    .flat_map(|event_type| {
        bus::subjects::incident_event_filters(&config.namespace, &config.partitions, event_type)
    })
    .collect();
    runtime
        .consume(
            &consumer_purpose("grader", &config.partitions),
            &config.namespace,
            filters,
            grader,
        )
        .await?;

    // Duty-roster notifications: who is told (graded, escalated, lead_changed), and the webhook.
    let rosters = match domain::roster::Rosters::embedded_default(&config.region.tree) {
        Ok(rosters) => rosters,
        Err(error) => {
            tracing::warn!(%error, "the shipped duty rosters do not fit this region; no notifications");
            domain::roster::Rosters::default()
        }
    };
    let options = notifier::NotifierOptions {
        webhook_url: config.notify_webhook_url.clone(),
        drill_webhook_url: config.notify_drill_webhook_url.clone(),
        ..notifier::NotifierOptions::default()
    };
    start_notifications(
        &runtime,
        &config.namespace,
        &config.partitions,
        Arc::new(rosters),
        options,
    )
    .await?;

    // The timer task stops after the gRPC server, before the runtime drains the outbox.
    let timers_shutdown = CancellationToken::new();
    let timer_task = tokio::spawn(timers::run_timers(
        runtime.store.clone(),
        config.region.clone(),
        config.namespace.clone(),
        timers_shutdown.clone(),
    ));

    let service =
        grpc::EscalationGrpc::new(config.clone(), runtime.store.clone(), runtime.bus.clone());
    let routes = tonic::service::Routes::new(
        pb::escalation_service_server::EscalationServiceServer::new(service)
            .max_decoding_message_size(lifecycle::grpc::REQUEST_BYTES_MAX),
    );
    let (reporter, health) = lifecycle::grpc::health();
    let served = lifecycle::grpc::serve(
        "muster.v1.EscalationService",
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
    timers_shutdown.cancel();
    if let Err(error) = timer_task.await {
        tracing::error!(%error, "timer task panicked");
    }
    runtime.drain().await?;
    Ok(served?)
}

/// Starts the notification consumers on `runtime`: the requester (`graded`, `escalated`,
/// `lead_changed` → `notification.requested` for the on-duty roster) and the webhook notifier,
/// both on `partitions`' subjects only (every partition when empty).
pub async fn start_notifications(
    runtime: &bus::Runtime,
    namespace: &str,
    partitions: &[String],
    rosters: Arc<domain::roster::Rosters>,
    options: notifier::NotifierOptions,
) -> Result<(), Error> {
    let notifier = notifier::Notifier::new(runtime.store.clone(), namespace.to_string(), options)
        .map_err(Error::Notifier)?;
    runtime
        .consume(
            &consumer_purpose("notify", partitions),
            namespace,
            notify::NotifyRequester::filters(namespace, partitions),
            notify::NotifyRequester::new(namespace.to_string(), rosters),
        )
        .await?;
    runtime
        .consume_work(
            &consumer_purpose("notifier", partitions),
            namespace,
            notifier::Notifier::filters(namespace, partitions),
            notifier,
        )
        .await?;
    Ok(())
}
