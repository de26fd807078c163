//! The three services behind one enum: their names, default addresses, and one way to run any of them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::ValueEnum;
use domain::region::Region;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One of Muster's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Intake,
    Escalation,
    Dispatch,
}

impl Service {
    /// In pipeline order, which is also the order `up` binds and prints them.
    pub const ALL: [Service; 3] = [Service::Intake, Service::Escalation, Service::Dispatch];

    pub fn name(self) -> &'static str {
        match self {
            Service::Intake => intake::SERVICE_NAME,
            Service::Escalation => escalation::SERVICE_NAME,
            Service::Dispatch => dispatch::SERVICE_NAME,
        }
    }

    /// The address musterctl connects to by default.
    pub const fn default_addr(self) -> SocketAddr {
        let port = match self {
            Service::Intake => 50051,
            Service::Escalation => 50052,
            Service::Dispatch => 50053,
        };
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    /// The flag of `muster up` that sets this service's address, for error hints.
    pub fn addr_flag(self) -> &'static str {
        match self {
            Service::Intake => "--intake-addr",
            Service::Escalation => "--escalation-addr",
            Service::Dispatch => "--dispatch-addr",
        }
    }

    /// The flag of `musterctl` that points it at this service.
    pub fn musterctl_flag(self) -> &'static str {
        match self {
            Service::Intake => "--intake",
            Service::Escalation => "--escalation",
            Service::Dispatch => "--dispatch",
        }
    }
}

/// Where intake's feed listener listens unless told otherwise.
pub const FEEDS_DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50080);

/// What every service's `Config` holds; [`run`] turns it into the right one.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_url: String,
    pub data_dir: PathBuf,
    pub namespace: String,
    /// Escalation's partitions (empty: every partition).
    pub partitions: Vec<String>,
    pub region: Arc<Region>,
    /// Intake's feed mapping rules (`None`: the shipped defaults).
    pub mapping: Option<Arc<feeds::mapping::Mapping>>,
    /// Escalation's notifier webhooks (live, drill).
    pub notify_webhook_url: Option<String>,
    pub notify_drill_webhook_url: Option<String>,
    /// Escalation's policy (`None`: the shipped default).
    pub escalation_policy: Option<Arc<domain::escalation::EscalationPolicy>>,
    /// Dispatch's assignment acknowledgement timeout (`None`: the default).
    pub dispatch_ack_timeout_ms: Option<i64>,
    /// Where the service records its Prometheus series (`None`: no metrics).
    pub metrics: Option<lifecycle::metrics::Registry>,
    /// Token verification and TLS for the gRPC server.
    pub security: lifecycle::grpc::ServerSecurity,
    /// Intake's feed secrets (`None`: tokens only).
    pub feed_secrets: Option<Arc<auth::feed_secrets::FeedSecrets>>,
}

/// The TLS files and feed secrets the common flags name, loaded and checked now so that a bad
/// file stops the start with its name.
pub fn load_security(
    common: &crate::cli::CommonArgs,
    verifier: auth::VerifyingKey,
) -> anyhow::Result<(
    lifecycle::grpc::ServerSecurity,
    Option<Arc<auth::feed_secrets::FeedSecrets>>,
)> {
    let tls = match (&common.tls_cert, &common.tls_key) {
        (Some(cert), Some(key)) => Some(lifecycle::grpc::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: common.client_ca.clone(),
        }),
        _ => None,
    };
    if let Some(files) = &tls {
        lifecycle::grpc::server_tls(files).map_err(|e| anyhow!("{e}"))?;
    }
    let feed_secrets = common
        .feed_secrets
        .as_deref()
        .map(auth::feed_secrets::FeedSecrets::load)
        .transpose()
        .map_err(|e| anyhow!("--feed-secrets {e}"))?
        .map(Arc::new);
    Ok((
        lifecycle::grpc::ServerSecurity { verifier, tls },
        feed_secrets,
    ))
}

/// Runs `service` on `listener` until `shutdown` is cancelled and it has drained.
pub async fn run(
    service: Service,
    settings: Settings,
    listener: TcpListener,
    feeds_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Settings {
        nats_url,
        data_dir,
        namespace,
        partitions,
        region,
        mapping,
        notify_webhook_url,
        notify_drill_webhook_url,
        escalation_policy,
        dispatch_ack_timeout_ms,
        metrics,
        security,
        feed_secrets,
    } = settings;
    // The services' error types differ; their Display is all we need, prefixed with the service.
    match service {
        Service::Intake => {
            let config = intake::Config {
                nats_url,
                data_dir,
                namespace,
                region,
                mapping,
                feed_tick: None,
                park_timeout_ms: None,
                metrics,
                security,
                feed_secrets,
            };
            intake::run_with_feeds(config, listener, feeds_listener, shutdown)
                .await
                .map_err(|e| anyhow!("{}: {e}", service.name()))
        }
        Service::Escalation => {
            let config = escalation::Config {
                nats_url,
                data_dir,
                namespace,
                region,
                partitions,
                policy: escalation_policy,
                notify_webhook_url,
                notify_drill_webhook_url,
                metrics,
                security,
            };
            escalation::run(config, listener, shutdown)
                .await
                .map_err(|e| anyhow!("{}: {e}", service.name()))
        }
        Service::Dispatch => {
            let config = dispatch::Config {
                nats_url,
                data_dir,
                namespace,
                region,
                assignment_ack_timeout_ms: dispatch_ack_timeout_ms,
                stale_position_ms: None,
                metrics,
                security,
            };
            dispatch::run(config, listener, shutdown)
                .await
                .map_err(|e| anyhow!("{}: {e}", service.name()))
        }
    }
}

/// After a drained stop, once nothing holds the service's store (the metrics registry included):
/// has sled write a fresh snapshot, so the next start does not replay everything this run wrote
/// ([`store::checkpoint`]). Off with `MUSTER_SLED_CHECKPOINT_ON_EXIT=0`. A failure costs the
/// next start time, not data, so it is logged, not returned.
pub async fn checkpoint_store(service: Service, store_dir: std::path::PathBuf) {
    if !store::checkpoint_on_exit() {
        return;
    }
    match tokio::task::spawn_blocking(move || store::checkpoint(&store_dir)).await {
        Ok(Ok(took)) => tracing::info!(
            service = service.name(),
            seconds = took.as_secs_f64(),
            "store checkpointed for the next start"
        ),
        Ok(Err(error)) => tracing::warn!(
            service = service.name(),
            %error,
            "cannot checkpoint the store; the next start replays this run's log"
        ),
        Err(error) => tracing::warn!(service = service.name(), %error, "store checkpoint failed"),
    }
}

/// Binds a service's gRPC listener; the error names the address and the flag that changes it.
pub async fn bind(service: Service, addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    lifecycle::grpc::bind(addr).await.map_err(|error| {
        anyhow!(
            "{} gRPC: {error} (is another Muster running? choose another address with {flag})",
            service.name()
        )
    })
}

/// Binds intake's feed listener; the error names the address and the flag that changes it.
pub async fn bind_feeds(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        anyhow!(
            "intake feed listener on {addr}: {error} (is another Muster running? choose another address with {flag})"
        )
    })
}

/// Binds the Prometheus endpoint; the error names the address and the flag that changes it.
pub async fn bind_metrics(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        anyhow!(
            "metrics listener on {addr}: {error} (is another Muster running? choose another address with {flag})"
        )
    })
}

/// Serves `GET /metrics` from `registry` on `listener` in the background until `shutdown`.
pub fn spawn_metrics(
    listener: TcpListener,
    registry: lifecycle::metrics::Registry,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = lifecycle::metrics::serve(registry, listener, shutdown).await {
            tracing::error!(%error, "metrics listener failed");
        }
    })
}

/// Loads feed mapping rules from `path` and checks them against the region; `None` without a path.
pub fn load_mapping(
    path: Option<&std::path::Path>,
    region: &Region,
) -> anyhow::Result<Option<Arc<feeds::mapping::Mapping>>> {
    let mapping = match path {
        None => feeds::mapping::Mapping::embedded_default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
            feeds::mapping::Mapping::from_toml(&path.display().to_string(), &text)
                .map_err(|e| anyhow!("{e}"))?
        }
    };
    mapping.check_against(region).map_err(|e| anyhow!("{e}"))?;
    Ok(path.map(|_| Arc::new(mapping)))
}

/// Loads `--escalation-policy` (problems as `file:line:col: problem`) and applies
/// `--escalation-minute-ms`. `None` when neither is given: the service uses the shipped default.
pub fn load_escalation_policy(
    path: Option<&std::path::Path>,
    minute_ms: Option<i64>,
) -> anyhow::Result<Option<Arc<domain::escalation::EscalationPolicy>>> {
    use domain::escalation::EscalationPolicy;
    if path.is_none() && minute_ms.is_none() {
        return Ok(None);
    }
    let policy = match path {
        None => EscalationPolicy::embedded_default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
            EscalationPolicy::from_toml(&path.display().to_string(), &text)
                .map_err(|e| anyhow!("{e}"))?
        }
    };
    let policy = match minute_ms {
        Some(minute_ms) => policy.with_minute_ms(minute_ms),
        None => policy,
    };
    Ok(Some(Arc::new(policy)))
}

/// The URL a client on this machine uses for `addr`: a wildcard bind is reached over loopback.
pub fn client_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// The URL of a gRPC server, `https://` when it serves TLS.
pub fn grpc_url(addr: SocketAddr, tls: bool) -> String {
    let url = client_url(addr);
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

/// `--partition` codes, checked: trimmed, empty ones dropped, sorted; only escalation runs
/// partitioned, and every code must be one of the region's partitions. Empty: every partition.
pub fn partitions(
    service: Service,
    codes: &[String],
    region: &domain::region::Region,
) -> anyhow::Result<Vec<String>> {
    let mut partitions: Vec<String> = codes
        .iter()
        .map(|code| code.trim().to_string())
        .filter(|code| !code.is_empty())
        .collect();
    if partitions.is_empty() {
        return Ok(partitions);
    }
    if service != Service::Escalation {
        anyhow::bail!(
            "--partition: only escalation runs partitioned; {} serves every partition \
             (see deploy/README.md, \"How to scale\")",
            service.name()
        );
    }
    region
        .tree
        .check_partitions(&partitions)
        .map_err(|problem| anyhow::anyhow!("--partition {problem}"))?;
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}
