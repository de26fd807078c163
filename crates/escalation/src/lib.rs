//! The escalation service: graded responsibility (分级负责) under unified command (统一领导).
//!
//! It consumes `reported` events, grades each incident with the rulebook, names the single lead
//! jurisdiction (territorial first, lifted to the level the grade requires), stores the decision
//! and emits `graded` in the same commit.

mod driver;
mod grpc;

use std::path::PathBuf;
use std::sync::Arc;

use domain::region::Region;
use muster_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use driver::{GradingRecord, grade_incident};

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
}

/// Runs escalation until `shutdown`, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    bus::subjects::validate_namespace(&config.namespace)?;
    let runtime = bus::Runtime::start(SERVICE_NAME, &config.nats_url, &config.data_dir).await?;
    let grader = driver::Grader::new(runtime.store.clone(), config.region.clone());
    let filters = vec![bus::subjects::incident_event_filter(
        &config.namespace,
        bus::subjects::REPORTED,
    )];
    runtime
        .consume("grader", &config.namespace, filters, grader)
        .await?;

    let service = grpc::EscalationGrpc::new(config.clone(), runtime.store.clone());
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
    )
    .await;
    runtime.drain().await?;
    Ok(served?)
}
