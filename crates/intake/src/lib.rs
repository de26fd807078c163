//! The intake service: the front door for incident reports and the incident read model.
//!
//! `ReportIncident` validates a report, stores the incident and its `reported` event in one commit
//! and answers once that commit is durable; the outbox relay publishes the event. A projection
//! consumer folds every incident event (graded, units_assigned, ...) back into the incident record,
//! so `GetIncident`, `ListIncidents` and `WatchIncidents` show the whole story in one place.

mod driver;
mod grpc;
mod record;
mod validate;

use domain::region::Region;
use muster_proto::v1 as pb;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use record::{IncidentRecord, IncidentStatus, TimelineEntry};

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

/// Runs intake until `shutdown`, then drains: the projection finishes its group, the relay
/// publishes what is committed, in-flight gRPC calls complete.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    let (changes, _) = tokio::sync::broadcast::channel(WATCH_BUFFER_LEN);
    let projection = driver::Projection::new(runtime.store.clone(), changes.clone());
    let filters = vec![bus::subjects::all_incident_events_filter(&config.namespace)];
    runtime
        .consume("projection", &config.namespace, filters, projection)
        .await?;

    let service = grpc::IntakeGrpc::new(
        config.clone(),
        runtime.store.clone(),
        changes,
        shutdown.clone(),
    );
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
    )
    .await;
    runtime.drain().await?;
    Ok(served?)
}
