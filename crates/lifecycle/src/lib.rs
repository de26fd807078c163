//! Process plumbing shared by every Muster service: tracing, signals, gRPC serving, nats-server.

pub mod access;
pub mod audit_service;
pub mod grpc;
pub mod metrics;
pub mod nats_server;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Wall-clock time in Unix milliseconds: the one place services read the clock for event stamps.
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Everything that can go wrong in process plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gRPC server for {service}: {source}")]
    Serve {
        service: String,
        source: tonic::transport::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("nats-server: {0}")]
    NatsServer(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}
