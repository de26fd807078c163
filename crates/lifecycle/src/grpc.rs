//! Serves a service's gRPC routes together with `grpc.health.v1`, server reflection (v1 and
//! v1alpha: grpcurl 1.8 and Python's grpcio-reflection only speak v1alpha) and the service's
//! `AuditService`, behind the access layer (`access.rs`) and, when configured, TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;
use crate::access::{Access, AccessLayer};

/// TLS for a gRPC server: its certificate chain and key (PEM), and for mutual TLS the CA whose
/// client certificates it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Who may call a server and how the connection is protected.
#[derive(Debug, Clone)]
pub struct Security {
    pub access: Access,
    pub tls: Option<TlsFiles>,
}

/// What a service's `Config` carries for its gRPC server: the key that verifies tokens and,
/// optionally, TLS.
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    pub verifier: auth::VerifyingKey,
    pub tls: Option<TlsFiles>,
}

impl ServerSecurity {
    /// The server's [`Security`]: access checks against `tree`, audit trail in `store`.
    pub fn for_service(
        &self,
        service: &'static str,
        namespace: &str,
        store: store::Store,
        tree: &domain::jurisdiction::JurisdictionTree,
    ) -> Security {
        Security {
            access: Access {
                service,
                namespace: namespace.to_string(),
                verifier: self.verifier.clone(),
                verified: Default::default(),
                store,
                tree: std::sync::Arc::new(tree.clone()),
            },
            tls: self.tls.clone(),
        }
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        context: format!("cannot read the {what} {}", path.display()),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Tls(format!(
            "{}: the {what} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Loads `files` into tonic's server TLS configuration, naming the file in every error.
pub fn server_tls(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig, Error> {
    let cert = read_pem(&files.cert, "TLS certificate (--tls-cert)")?;
    let key = read_pem(&files.key, "TLS key (--tls-key)")?;
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        let ca = read_pem(ca, "client CA (--client-ca)")?;
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    Ok(config)
}

/// The largest request any Muster gRPC server accepts.
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// A health reporter plus the service it reports for.
pub fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// Serves `routes` plus health (already built, so the caller can flip its status), reflection and
/// the audit trail on `listener` until `shutdown` is cancelled, then lets in-flight calls finish.
/// Every call but health and reflection passes `security.access` first.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    service_name: &str,
    routes: Routes,
    health_reporter: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    shutdown: CancellationToken,
    security: Security,
) -> Result<(), Error> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let audit = crate::audit_service::AuditServer::new(
        security.access.service,
        security.access.store.clone(),
        security.access.tree.clone(),
    );
    let routes = routes
        .add_service(audit.into_service())
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
    tracing::info!(
        service = service_name,
        addr = ?local,
        tls = security.tls.is_some(),
        mutual_tls = security.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
        "gRPC serving"
    );
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
    let audit_store = security.access.store.clone();
    let audit_stop = shutdown.clone();
    let audit_flusher = tokio::spawn(async move {
        audit_store
            .run_audit_flusher(audit_stop.cancelled_owned())
            .await;
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = &security.tls {
        builder = builder
            .tls_config(server_tls(files)?)
            .map_err(|error| Error::Tls(format!("TLS configuration: {error}")))?;
    }
    builder
        .timeout(Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .layer(AccessLayer::new(security.access))
        .add_routes(routes)
        .serve_with_incoming_shutdown(nodelay(TcpListenerStream::new(listener)), signal)
        .await
        .map_err(|source| Error::Serve {
            service: service_name.to_string(),
            source,
        })?;
    // The last audit entries (of calls that finished while draining) are flushed.
    let _ = audit_flusher.await;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off. tonic sets TCP_NODELAY only on listeners it
/// binds itself, not on an incoming stream it is handed; without it a small answer written after
/// another (HTTP/2 HEADERS, DATA, trailers) waited for the client's delayed ACK, and unary calls
/// took 40 ms (seen in `muster-bench restart`'s reads: p50 44 ms).
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(incoming, |accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        })
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

/// Seconds a client is told to wait (`retry-after`) before retrying on a full disk.
pub const DISK_FULL_RETRY_AFTER_SECONDS: u64 = 1;

/// The answer to a storage error in `service`: a full disk is `UNAVAILABLE` with `retry-after`
/// (the request is not acknowledged and may be retried as it was: what was kept after all is
/// answered as a duplicate), anything else `INTERNAL`. Both are logged.
pub fn storage_status(service: &str, error: store::Error) -> tonic::Status {
    if error.is_out_of_space() {
        tracing::error!(%error, "disk full: refusing work until space is freed");
        let mut status = tonic::Status::unavailable(format!(
            "{service}'s disk is full ({error}); not acknowledged: retry with the same request \
             in {DISK_FULL_RETRY_AFTER_SECONDS} s (what was kept after all is answered as a \
             duplicate)"
        ));
        status.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from(DISK_FULL_RETRY_AFTER_SECONDS),
        );
        return status;
    }
    tracing::error!(%error, "internal error");
    tonic::Status::internal(format!("{service} storage error: {error}"))
}

/// `result`, except that a refusal read from stored state (`FAILED_PRECONDITION`: "already
/// acknowledged", "not available") is given only once the store is durable: it may rest on a
/// change still only in memory (its own flush failed, a full disk), which a retry now finds and
/// would be told had happened. If the store cannot be made durable, the storage error is the
/// answer. Anything else passes as it is.
pub async fn durable_refusal<T>(
    service: &str,
    store: &store::Store,
    result: Result<T, tonic::Status>,
) -> Result<T, tonic::Status> {
    match result {
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            match store.flush().await {
                Ok(()) => Err(status),
                Err(error) => Err(storage_status(service, error)),
            }
        }
        other => other,
    }
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("cannot listen on {addr}"),
        source,
    })
}
