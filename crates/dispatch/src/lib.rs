//! The dispatch service: responder units, plans (预案) and assignments.
//!
//! It consumes `graded` events, looks up the plan for the incident's sub-type and grade, books the
//! nearest available units of the types the plan names and emits `units_assigned`. A booking is a
//! compare-and-swap on the unit's key in sled, in the same commit as the assignment and the event,
//! so no unit is ever booked to two incidents, even with several dispatchers.

mod driver;
mod grpc;

use std::path::PathBuf;
use std::sync::Arc;

use domain::region::Region;
use muster_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use driver::{AssignmentRecord, Booking};

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
}

/// Runs dispatch until `shutdown`, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    let assigner = driver::Assigner::new(runtime.store.clone(), config.region.clone());
    let filters = vec![bus::subjects::incident_event_filter(
        &config.namespace,
        bus::subjects::GRADED,
    )];
    runtime
        .consume("assigner", &config.namespace, filters, assigner)
        .await?;

    let service = grpc::DispatchGrpc::new(config.clone(), runtime.store.clone());
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
    )
    .await;
    runtime.drain().await?;
    Ok(served?)
}
