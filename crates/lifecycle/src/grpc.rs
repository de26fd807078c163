//! Serves a service's gRPC routes together with `grpc.health.v1` and server reflection (v1 and
//! v1alpha: grpcurl 1.8 and Python's grpcio-reflection only speak v1alpha).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;

/// The largest request any Muster gRPC server accepts.
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// A health reporter plus the service it reports for.
pub fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// Serves `routes` plus health (already built, so the caller can flip its status) and reflection on
/// `listener` until `shutdown` is cancelled, then lets in-flight calls finish.
pub async fn serve(
    service_name: &str,
    routes: Routes,
    health_reporter: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status(service_name, ServingStatus::Serving)
        .await;
    let local = listener.local_addr().ok();
    tracing::info!(service = service_name, addr = ?local, "gRPC serving");
    let stopping = shutdown.clone();
    let reporter = health_reporter.clone();
    let name = service_name.to_string();
    let signal = async move {
        stopping.cancelled().await;
        // Tell load balancers and `musterctl status` first, then stop accepting.
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    };
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
        .map_err(|source| Error::Serve {
            service: service_name.to_string(),
            source,
        })
}

/// The namespace a request names (empty means `live`), if this instance serves it; otherwise
/// `FAILED_PRECONDITION` naming both. Every service instance serves exactly one namespace.
pub fn served_namespace<'a>(
    service: &str,
    served: &'a str,
    requested: &str,
) -> Result<&'a str, tonic::Status> {
    let requested = if requested.is_empty() {
        "live"
    } else {
        requested
    };
    if requested == served {
        Ok(served)
    } else {
        Err(tonic::Status::failed_precondition(format!(
            "this {service} serves namespace {served:?}, not {requested:?}"
        )))
    }
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("cannot listen on {addr}"),
        source,
    })
}
