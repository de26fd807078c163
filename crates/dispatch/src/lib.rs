//! The dispatch service: responder units, plans (预案) and assignments.
//!
//! It keeps the unit registry (`unit/<ns>/<id>`: registry entry, last position, lifecycle state),
//! seeded from the region's units on first start and managed over gRPC. It consumes `graded`
//! events, looks up the plan for the incident's sub-type and grade, recommends the nearest
//! available units by ETA (skipping out-of-service units and stale positions), moves them to
//! Dispatched through the state machine and emits `units_assigned`. A booking is a
//! compare-and-swap on the unit's record in sled, in the same commit as the assignment and the
//! events, so no unit is ever booked to two incidents, even with several dispatchers. Positions
//! arrive over gRPC and on `muster.<ns>.unit.<id>.position`; every unit change is a `UnitEvent`.
//! A dispatched unit must acknowledge within the configured time; a decline or a timeout frees it
//! and books a replacement in the same commit ([`assignment`]). A `closed` incident releases
//! every unit it holds, announced in one `units_assigned` ([`assignment::stage_incident_close`]).
//! Units send lifecycle commands (acknowledge, decline, ...) on `muster.<ns>.unit.<id>.command`
//! ([`UnitCommandHandler`]); a dispatcher can ask for a dry-run recommendation and book a unit by
//! hand over gRPC. Every assignment and shortfall carries machine-readable reason codes
//! ([`domain::dispatch::reason_code`]).

pub mod assignment;
pub mod decision;
mod driver;
mod grpc;
pub mod metrics;
pub mod mutual_aid;
pub mod rebuild;
pub mod registry;

use std::path::PathBuf;
use std::sync::Arc;

use domain::region::Region;
use muster_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use assignment::{AssignmentDesk, AssignmentOutcome, EndedAssignment};
pub use driver::{
    Assigner, AssignmentRecord, IncidentPlace, PositionTracker, Recommended, UnitCommandHandler,
    assignment_key, recommend_units,
};
pub use registry::UnitRecord;

/// The service's name in health checks, logs and event envelopes.
pub const SERVICE_NAME: &str = "dispatch";

/// What dispatch needs to run.
#[derive(Clone)]
pub struct Config {
    pub nats_url: String,
    /// The service's own sled directory.
    pub data_dir: PathBuf,
    /// `live`, or `drill.<id>`.
    pub namespace: String,
    pub region: Arc<Region>,
    /// Token verification key and optional TLS for the gRPC server.
    pub security: lifecycle::grpc::ServerSecurity,
    /// How long a dispatched unit has to acknowledge, in milliseconds; `None` for
    /// [`assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT`].
    pub assignment_ack_timeout_ms: Option<i64>,
    /// How old a reported position may be and still count for recommendations, milliseconds;
    /// `None` for [`registry::STALE_POSITION_AFTER_MS_DEFAULT`] (30 minutes).
    pub stale_position_ms: Option<i64>,
    /// Where dispatch records its Prometheus series (`None`: no metrics). The caller serves it
    /// ([`lifecycle::metrics::serve`]).
    pub metrics: Option<lifecycle::metrics::Registry>,
}

impl Config {
    /// The acknowledgement timeout in effect, or why the configured one is unusable.
    pub fn assignment_ack_timeout_ms(&self) -> Result<i64, Error> {
        let timeout_ms = self
            .assignment_ack_timeout_ms
            .unwrap_or(assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT);
        if timeout_ms <= 0 || timeout_ms > assignment::ASSIGNMENT_ACK_TIMEOUT_MS_MAX {
            return Err(Error::Config(format!(
                "assignment_ack_timeout_ms must be 1-{} (one day), got {timeout_ms}",
                assignment::ASSIGNMENT_ACK_TIMEOUT_MS_MAX
            )));
        }
        Ok(timeout_ms)
    }

    /// The stale-position limit in effect, or why the configured one is unusable.
    pub fn stale_position_ms(&self) -> Result<i64, Error> {
        let stale_ms = self
            .stale_position_ms
            .unwrap_or(registry::STALE_POSITION_AFTER_MS_DEFAULT);
        if stale_ms <= 0 || stale_ms > assignment::ASSIGNMENT_ACK_TIMEOUT_MS_MAX {
            return Err(Error::Config(format!(
                "stale_position_ms must be 1-{} (one day), got {stale_ms}",
                assignment::ASSIGNMENT_ACK_TIMEOUT_MS_MAX
            )));
        }
        Ok(stale_ms)
    }
}

/// Everything that can stop dispatch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::Error),
    #[error("dispatch configuration: {0}")]
    Config(String),
}

/// Runs dispatch until `shutdown`, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let ack_timeout_ms = config.assignment_ack_timeout_ms()?;
    let stale_position_ms = Some(config.stale_position_ms()?);
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    // A store that can no longer write stops the service (and the process, non-zero) as a
    // shutdown would, without stopping whatever else shares `shutdown`.
    let shutdown = shutdown.child_token();
    runtime.stop_on_store_failure(shutdown.clone());
    if let Some(registry) = &config.metrics {
        metrics::register(registry, &runtime, &config.namespace);
    }
    let seeded = registry::seed(
        &runtime.store,
        &config.region,
        &config.namespace,
        lifecycle::unix_ms_now(),
    )?;
    if seeded > 0 {
        runtime.store.flush().await?;
        tracing::info!(seeded, namespace = %config.namespace, "units seeded from the region");
    }
    let assigner = driver::Assigner::new(runtime.store.clone(), config.region.clone())
        .with_ack_timeout_ms(ack_timeout_ms)
        .with_stale_position_ms(stale_position_ms);
    // Gradings and closes on one consumer: a close is handled after every grading before it.
    let filters = vec![
        bus::subjects::incident_event_filter(&config.namespace, bus::subjects::GRADED),
        bus::subjects::incident_event_filter(&config.namespace, bus::subjects::CLOSED),
    ];
    runtime
        .consume("assigner", &config.namespace, filters, assigner)
        .await?;
    let tracker = driver::PositionTracker::new(runtime.store.clone(), config.namespace.clone());
    let filters = vec![bus::subjects::unit_event_filter(
        &config.namespace,
        bus::subjects::UNIT_POSITION,
    )];
    runtime
        .consume("positions", &config.namespace, filters, tracker)
        .await?;

    let desk = assignment::AssignmentDesk::new(config.region.clone(), ack_timeout_ms)
        .with_stale_position_ms(stale_position_ms);
    // Units acknowledge, decline, ... over NATS too: the same desk, one commit per command.
    let commands = driver::UnitCommandHandler::new(
        runtime.store.clone(),
        desk.clone(),
        config.namespace.clone(),
    );
    let filters = vec![bus::subjects::unit_event_filter(
        &config.namespace,
        bus::subjects::UNIT_COMMAND,
    )];
    runtime
        .consume("commands", &config.namespace, filters, commands)
        .await?;

    // The timer task stops after the gRPC server, before the runtime drains the outbox.
    let timers_shutdown = CancellationToken::new();
    let timer_task = tokio::spawn(assignment::run_ack_timers(
        runtime.store.clone(),
        desk.clone(),
        config.namespace.clone(),
        timers_shutdown.clone(),
    ));

    let service = grpc::DispatchGrpc::new(config.clone(), runtime.store.clone(), desk);
    let routes = tonic::service::Routes::new(
        pb::dispatch_service_server::DispatchServiceServer::new(service)
            .max_decoding_message_size(lifecycle::grpc::REQUEST_BYTES_MAX),
    );
    let (reporter, health) = lifecycle::grpc::health();
    let served = lifecycle::grpc::serve(
        "muster.v1.DispatchService",
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
        tracing::error!(%error, "acknowledgement timer task panicked");
    }
    runtime.drain().await?;
    Ok(served?)
}
