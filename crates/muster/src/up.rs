//! `muster up`: a whole Muster on one machine. Starts a nats-server child (unless `--nats-url`),
//! binds the three gRPC listeners, runs intake, escalation and dispatch in this process, and on
//! Ctrl-C/SIGTERM lets them drain before stopping the nats-server.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use lifecycle::nats_server::{NatsServerOptions, NatsServerProcess};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;
use crate::service::{self, Service, Settings};

/// How long the services get to drain after shutdown starts before they are aborted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nats-server child gets to exit on SIGTERM before SIGKILL.
const NATS_STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let region = crate::region::load(args.common.region_dir.as_deref())?;
    let data_dir = prepare_data_dir(&args.data_dir)?;
    let admin = admin_token(&data_dir, &region)?;
    let (security, feed_secrets) = service::load_security(&args.common, admin.verifier.clone())?;

    // Listeners first: a busy port fails fast, before a nats-server child exists to clean up.
    let addrs = [args.intake_addr, args.escalation_addr, args.dispatch_addr];
    let mut listeners = Vec::with_capacity(addrs.len());
    for (service, addr) in Service::ALL.into_iter().zip(addrs) {
        listeners.push((
            service,
            service::bind(service, addr, service.addr_flag()).await?,
        ));
    }

    let feeds_listener = service::bind_feeds(args.feeds_addr, "--feeds-addr").await?;
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(service::bind_metrics(addr, "--metrics-addr").await?),
        None => None,
    };
    let mapping = service::load_mapping(args.common.feed_mapping.as_deref(), &region)?;
    let escalation_policy = service::load_escalation_policy(
        args.common.escalation_policy.as_deref(),
        args.common.escalation_minute_ms,
    )?;

    let nats = match &args.nats_url {
        Some(_) => None,
        None => Some(start_nats_server(&data_dir, args.nats_port).await?),
    };
    let nats_url = match (&args.nats_url, &nats) {
        (Some(url), _) => url.clone(),
        (None, Some(process)) => process.url().to_string(),
        (None, None) => unreachable!("a nats-server is started when no URL is given"),
    };

    let loaded = Loaded {
        admin,
        security,
        feed_secrets,
        region,
        mapping,
        escalation_policy,
        listeners,
        feeds_listener,
        metrics_listener,
    };
    let result = run_services(&args, &data_dir, &nats_url, nats.as_ref(), loaded, shutdown).await;
    if let Some(process) = nats {
        tracing::info!("stopping nats-server");
        process.stop(NATS_STOP_GRACE).await;
    }
    if result.is_ok() {
        // Every service has drained and dropped its store (and the metrics registry with them).
        let checkpoints: Vec<_> = Service::ALL
            .into_iter()
            .map(|service| {
                tokio::spawn(service::checkpoint_store(
                    service,
                    data_dir.join(service.name()),
                ))
            })
            .collect();
        for checkpoint in checkpoints {
            let _ = checkpoint.await;
        }
        tracing::info!("Muster stopped");
    }
    result
}

/// Creates the data directory and returns it absolute, so what we print is unambiguous.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve data directory {}", dir.display()))?;
    for sub in ["nats", "intake", "escalation", "dispatch"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(dir)
}

async fn start_nats_server(data_dir: &Path, port: u16) -> anyhow::Result<NatsServerProcess> {
    let nats_dir = data_dir.join("nats");
    let mut options = NatsServerOptions::new(PathBuf::new(), nats_dir.clone());
    // nats-server's own message for a busy port only reaches its log file; check first and say
    // what to do. (A race with another process taking the port in between still fails, via the log.)
    if port != 0 {
        ensure_port_free(&options.host, port).await?;
        options.port = Some(port);
    }
    options.binary = lifecycle::nats_server::find_binary()?;
    let log_file = nats_dir.join("nats-server.log");
    options.log_file = Some(log_file.clone());
    tracing::info!(binary = %options.binary.display(), port, "starting nats-server");
    NatsServerProcess::start(options)
        .await
        .with_context(|| format!("starting nats-server (log: {})", log_file.display()))
}

async fn ensure_port_free(host: &str, port: u16) -> anyhow::Result<()> {
    match TcpListener::bind((host, port)).await {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "NATS port {host}:{port} is already in use (another nats-server or Muster?): \
             pass --nats-port with a free port (0 picks one), or --nats-url nats://{host}:{port} \
             to use the server that is running there"
        ),
        Err(error) => Err(anyhow!("cannot check NATS port {host}:{port}: {error}")),
    }
}

/// The local user's admin token: `muster up` needs no ceremony, and musterctl finds the token in
/// `<data-dir>/admin.token`.
struct AdminToken {
    verifier: auth::VerifyingKey,
    officer: String,
    path: PathBuf,
    token: String,
    expires_at_ms: i64,
}

/// How long the token `up` issues for the local user is valid.
const ADMIN_TOKEN_TTL_MS: i64 = 30 * 86_400_000;

/// Loads (or on first start creates) `<data-dir>/auth`, and issues a fresh admin token for the
/// local user, scoped to the whole region, into `<data-dir>/admin.token` (mode 0600).
fn admin_token(data_dir: &Path, region: &domain::region::Region) -> anyhow::Result<AdminToken> {
    let keys = auth::KeyDir::new(data_dir.join("auth"));
    let (signing, created) = keys
        .load_or_create()
        .map_err(|e| anyhow!("auth key: {e}"))?;
    if created {
        tracing::info!(dir = %keys.dir.display(), "created the token signing key");
    }
    let officer = std::env::var("USER")
        .ok()
        .filter(|user| !user.trim().is_empty())
        .unwrap_or_else(|| "local-admin".to_string());
    let (claims, token) = signing
        .issue(
            &officer,
            &region.tree.root().code,
            auth::Role::Admin,
            lifecycle::unix_ms_now(),
            ADMIN_TOKEN_TTL_MS,
        )
        .map_err(|e| anyhow!("issuing the admin token: {e}"))?;
    let path = data_dir.join("admin.token");
    auth::token::write_private(&path, format!("{token}\n").as_bytes())
        .map_err(|e| anyhow!("writing the admin token: {e}"))?;
    Ok(AdminToken {
        verifier: signing.verifying_key(),
        officer,
        path,
        token,
        expires_at_ms: claims.expires_at_ms,
    })
}

/// What `up` has loaded and bound before the services start.
struct Loaded {
    admin: AdminToken,
    security: lifecycle::grpc::ServerSecurity,
    feed_secrets: Option<std::sync::Arc<auth::feed_secrets::FeedSecrets>>,
    region: std::sync::Arc<domain::region::Region>,
    mapping: Option<std::sync::Arc<feeds::mapping::Mapping>>,
    escalation_policy: Option<std::sync::Arc<domain::escalation::EscalationPolicy>>,
    listeners: Vec<(Service, TcpListener)>,
    feeds_listener: TcpListener,
    /// `--metrics-addr`: one endpoint for the three services.
    metrics_listener: Option<TcpListener>,
}

/// Prints the endpoints, runs the services until shutdown or the first failure, and waits for
/// them to drain.
async fn run_services(
    args: &UpArgs,
    data_dir: &Path,
    nats_url: &str,
    nats: Option<&NatsServerProcess>,
    loaded: Loaded,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Loaded {
        admin,
        security,
        feed_secrets,
        region,
        mapping,
        escalation_policy,
        listeners,
        feeds_listener,
        metrics_listener,
    } = loaded;
    let bound: Vec<(Service, SocketAddr)> = listeners
        .iter()
        .map(|(service, listener)| Ok((*service, listener.local_addr()?)))
        .collect::<std::io::Result<_>>()
        .context("reading the bound gRPC addresses")?;
    let feeds_addr = feeds_listener
        .local_addr()
        .context("reading the bound feed address")?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("reading the bound metrics address")?;
    let tls = security.tls.is_some();
    print_endpoints(
        data_dir,
        nats_url,
        nats,
        &bound,
        feeds_addr,
        metrics_addr,
        &admin,
        tls,
    );
    let mut feeds_listener = Some(feeds_listener);
    // One registry for the process: the three services record into it.
    let metrics = metrics_listener.map(|listener| {
        let registry = lifecycle::metrics::Registry::new();
        service::spawn_metrics(listener, registry.clone(), shutdown.clone());
        registry
    });

    let mut tasks = JoinSet::new();
    let mut names = HashMap::new();
    for (service, listener) in listeners {
        let settings = Settings {
            nats_url: nats_url.to_string(),
            data_dir: data_dir.join(service.name()),
            namespace: args.common.namespace.clone(),
            partitions: Vec::new(),
            region: region.clone(),
            mapping: mapping.clone(),
            notify_webhook_url: args.common.notify_webhook.clone(),
            notify_drill_webhook_url: args.common.notify_drill_webhook.clone(),
            escalation_policy: escalation_policy.clone(),
            dispatch_ack_timeout_ms: args.common.dispatch_ack_timeout_ms,
            metrics: metrics.clone(),
            security: security.clone(),
            feed_secrets: feed_secrets.clone(),
        };
        let feeds = if service == Service::Intake {
            feeds_listener.take()
        } else {
            None
        };
        let handle = tasks.spawn(service::run(
            service,
            settings,
            listener,
            feeds,
            shutdown.clone(),
        ));
        names.insert(handle.id(), service.name());
    }

    let mut first_failure: Option<anyhow::Error> = None;
    let mut record_failure = |error: anyhow::Error| {
        tracing::error!(
            error = format!("{error:#}"),
            "service failed; shutting Muster down"
        );
        first_failure.get_or_insert(error);
    };
    // Armed once shutdown starts: a service that does not drain in time must not keep us up forever.
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::pin!(drain_deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let (name, result) = match joined {
                    None => break,
                    Some(Ok((id, result))) => (names.remove(&id).unwrap_or("a service"), result),
                    Some(Err(error)) => {
                        let name = names.remove(&error.id()).unwrap_or("a service");
                        (name, Err(anyhow!("{name}: {error}")))
                    }
                };
                match result {
                    Ok(()) if shutdown.is_cancelled() => tracing::info!(service = name, "service stopped"),
                    Ok(()) => {
                        record_failure(anyhow!("{name} stopped without being asked to"));
                        shutdown.cancel();
                    }
                    Err(error) => {
                        // `service::run` already puts the service's name in front.
                        record_failure(error);
                        shutdown.cancel();
                    }
                }
            }
            () = &mut drain_deadline => {
                // What is left in `names` has not finished.
                let waiting: Vec<&str> = names.values().copied().collect();
                record_failure(anyhow!("services did not drain within {DRAIN_TIMEOUT:?}; aborted ({})", waiting.join(", ")));
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    match first_failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn print_endpoints(
    data_dir: &Path,
    nats_url: &str,
    nats: Option<&NatsServerProcess>,
    bound: &[(Service, SocketAddr)],
    feeds_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    admin: &AdminToken,
    tls: bool,
) {
    let mut text = String::from("Muster is up.\n");
    match nats {
        Some(process) => {
            let pid = process
                .pid()
                .map_or_else(|| "?".to_string(), |pid| pid.to_string());
            let log = process
                .options()
                .log_file
                .as_ref()
                .map_or_else(String::new, |p| format!(", log {}", p.display()));
            text.push_str(&format!(
                "  NATS        {nats_url}  (local nats-server, pid {pid}{log})\n"
            ));
        }
        None => text.push_str(&format!(
            "  NATS        {}  (external)\n",
            bus::redact_password(nats_url)
        )),
    }
    for (service, addr) in bound {
        text.push_str(&format!(
            "  {:<11} {}  (gRPC{})\n",
            service.name(),
            service::grpc_url(*addr, tls),
            if tls { ", TLS" } else { "" }
        ));
    }
    text.push_str(&format!(
        "  feeds       {}/v1/feeds/{{cap,alertmanager,pagerduty,geojson}}  (HTTP; NATS: muster.feed.<format>)\n",
        service::client_url(feeds_addr)
    ));
    if let Some(addr) = metrics_addr {
        text.push_str(&format!(
            "  metrics     {}/metrics  (Prometheus)\n",
            service::client_url(addr)
        ));
    }
    text.push_str(&format!("  data dir    {}\n", data_dir.display()));
    text.push_str(&format!(
        "  admin token {}  (for {}, whole region, valid {} days; musterctl reads it from ./.muster/admin.token)\n",
        admin.path.display(),
        admin.officer,
        // Rounded to the nearest day: "30", not "29" a millisecond after issuing.
        (admin.expires_at_ms - lifecycle::unix_ms_now() + 43_200_000) / 86_400_000,
    ));
    text.push_str(&format!("    {}\n", admin.token));
    let token_flag = if default_token_path().as_deref() == Some(admin.path.as_path()) {
        None
    } else {
        Some(admin.path.as_path())
    };
    text.push_str(&format!(
        "Check it with:  {}\n",
        musterctl_hint(bound, token_flag, tls)
    ));
    text.push_str("Stop with Ctrl-C (or SIGTERM); the services drain before exiting.\n");
    let mut stdout = std::io::stdout().lock();
    // Stdout may be a closed pipe; the services still run, so a failed print is not fatal.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `./.muster/admin.token`, where musterctl looks when given no token, made absolute.
fn default_token_path() -> Option<PathBuf> {
    std::env::current_dir()
        .ok()?
        .join(".muster")
        .canonicalize()
        .ok()
        .map(|dir| dir.join("admin.token"))
}

/// `musterctl status`, with `--intake URL` etc. for each service not on its default address
/// (or served over TLS), and `--token-file` when musterctl would not find the token itself.
fn musterctl_hint(bound: &[(Service, SocketAddr)], token_file: Option<&Path>, tls: bool) -> String {
    let mut hint = String::from("musterctl");
    if let Some(path) = token_file {
        hint.push_str(&format!(" --token-file {}", path.display()));
    }
    for (service, addr) in bound {
        let default = service.default_addr();
        let same_as_default = addr.port() == default.port()
            && (addr.ip() == default.ip()
                || addr.ip() == std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if !same_as_default || tls {
            hint.push_str(&format!(
                " {} {}",
                service.musterctl_flag(),
                service::grpc_url(*addr, tls)
            ));
        }
    }
    hint.push_str(" status");
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_names_only_addresses_off_their_defaults() {
        let defaults: Vec<_> = Service::ALL
            .iter()
            .map(|s| (*s, s.default_addr()))
            .collect();
        assert_eq!(musterctl_hint(&defaults, None, false), "musterctl status");
        let moved = vec![
            (Service::Intake, "127.0.0.1:6001".parse().unwrap()),
            (Service::Escalation, "0.0.0.0:50052".parse().unwrap()),
            (Service::Dispatch, Service::Dispatch.default_addr()),
        ];
        assert_eq!(
            musterctl_hint(&moved, None, false),
            "musterctl --intake http://127.0.0.1:6001 status"
        );
        assert_eq!(
            musterctl_hint(&moved, Some(Path::new("/d/admin.token")), false),
            "musterctl --token-file /d/admin.token --intake http://127.0.0.1:6001 status"
        );
    }
}
