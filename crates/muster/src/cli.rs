//! The command line: `muster up`, `muster serve <service>`, `muster check-region`, and the
//! operations on a stopped service's store: `backup`, `restore`, `retention`, `rebuild`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::service::Service;

/// Muster, emergency-response coordination: intake, escalation and dispatch over NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "muster", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all three services in one process, with a local nats-server unless --nats-url is given.
    Up(UpArgs),
    /// Run one service against an existing NATS server.
    Serve(ServeArgs),
    /// Load the region files and print what they hold, or the first problem as file:line:col.
    CheckRegion(CheckRegionArgs),
    /// Write a consistent snapshot of one stopped service's store (its --data-dir) to a file.
    Backup(BackupArgs),
    /// Restore a snapshot written by `backup` into a service's data directory.
    Restore(RestoreArgs),
    /// Delete old drill data (`<kind>/drill.<id>/...` keys) from one stopped service's store.
    Retention(RetentionArgs),
    /// Rebuild one stopped service's store from the JetStream stream MUSTER_EVENTS, when its disk
    /// is lost and there is no backup (see deploy/README.md for what cannot be rebuilt).
    Rebuild(RebuildArgs),
    /// Create the token signing key, or issue a bearer token for an officer, feed or auditor.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an auth directory: signing.pk8 (private, keep it with whoever issues tokens) and
    /// verify.pub (give it to every service with --verify-key). Does nothing if one exists.
    Init {
        /// The auth directory (`muster up` uses <data-dir>/auth).
        #[arg(
            long,
            env = "MUSTER_AUTH_DIR",
            default_value = ".muster/auth",
            value_name = "DIR"
        )]
        auth_dir: PathBuf,
    },
    /// Issue a token and print it on stdout (its claims go to stderr).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The auth directory holding signing.pk8.
    #[arg(
        long,
        env = "MUSTER_AUTH_DIR",
        default_value = ".muster/auth",
        value_name = "DIR"
    )]
    pub auth_dir: PathBuf,

    /// Who the token is for (an officer's name, or a feed's name for --role feed).
    #[arg(long, value_name = "NAME")]
    pub officer: String,

    /// The jurisdiction code the token is scoped to: it sees and acts on incidents led in or
    /// located in this jurisdiction and below (000000: everything).
    #[arg(long, value_name = "CODE")]
    pub jurisdiction: String,

    /// officer, commander, dispatcher, auditor, feed or admin.
    #[arg(long, value_name = "ROLE")]
    pub role: String,

    /// How long the token is valid: 90s, 30m, 12h, 7d (at most 366d).
    #[arg(long, default_value = "12h", value_name = "TTL")]
    pub ttl: String,

    /// Region files to check the jurisdiction against (default: the built-in sample region).
    #[arg(long, env = "MUSTER_REGION_DIR", value_name = "DIR")]
    pub region_dir: Option<PathBuf>,
}

/// Options `up` and `serve` share.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Directory with jurisdictions.toml, units.toml, plans.toml and rulebook.toml
    /// (default: the sample region built into the binary).
    #[arg(long, env = "MUSTER_REGION_DIR", value_name = "DIR")]
    pub region_dir: Option<PathBuf>,

    /// Feed mapping rules (TOML; default: the rules built into the binary, data/feeds/mapping.toml).
    #[arg(long, env = "MUSTER_FEED_MAPPING", value_name = "FILE")]
    pub feed_mapping: Option<PathBuf>,

    /// `live`, or `drill.<id>` for an exercise.
    #[arg(
        long,
        env = "MUSTER_NAMESPACE",
        default_value = "live",
        value_name = "NS"
    )]
    pub namespace: String,

    /// Where escalation's notifier POSTs duty-roster notifications (JSON; `http://` only, put a
    /// TLS-terminating relay in front of an https endpoint). Unset: notifications are recorded
    /// as failed.
    #[arg(
        long = "notify-webhook",
        env = "MUSTER_NOTIFY_WEBHOOK",
        value_name = "URL"
    )]
    pub notify_webhook: Option<String>,

    /// Where drill-namespace notifications go. Unset: they are recorded as delivered to the
    /// drill sink without any network call. Drill notifications never use `--notify-webhook`.
    #[arg(
        long = "notify-drill-webhook",
        env = "MUSTER_NOTIFY_DRILL_WEBHOOK",
        value_name = "URL"
    )]
    pub notify_drill_webhook: Option<String>,

    /// Escalation policy: ack deadlines, the escalation chain and reporting obligations (TOML, the
    /// format of data/region/escalation.toml; default: the policy built into the binary).
    #[arg(long, env = "MUSTER_ESCALATION_POLICY", value_name = "FILE")]
    pub escalation_policy: Option<PathBuf>,

    /// Compressed clock for tests and exercises: one policy minute lasts this many milliseconds
    /// (default 60000). Not for production.
    #[arg(
        long,
        env = "MUSTER_ESCALATION_MINUTE_MS",
        value_name = "MS",
        hide = true,
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    pub escalation_minute_ms: Option<i64>,

    /// How long a dispatched unit has to acknowledge, in milliseconds (default 90000). Drills
    /// compress it with their clock. Not for production.
    #[arg(
        long,
        env = "MUSTER_DISPATCH_ACK_TIMEOUT_MS",
        value_name = "MS",
        hide = true,
        value_parser = clap::value_parser!(i64).range(1..=86_400_000)
    )]
    pub dispatch_ack_timeout_ms: Option<i64>,

    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        env = "MUSTER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "MUSTER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: accept only clients whose certificate this CA (PEM) signed. Needs --tls-cert.
    #[arg(
        long,
        env = "MUSTER_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,

    /// Shared secrets feeds may post with instead of a token (TOML: [[feed]] name,
    /// secret_sha256). Unset: feeds need a token with the feed role.
    #[arg(long, env = "MUSTER_FEED_SECRETS", value_name = "FILE")]
    pub feed_secrets: Option<PathBuf>,

    /// Replicas of the JetStream streams Muster creates when they are missing (1 to 5; 3 on a
    /// 3-node cluster). An existing stream keeps its replicas.
    #[arg(
        long,
        env = "MUSTER_STREAM_REPLICAS",
        value_name = "N",
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub stream_replicas: Option<u8>,

    /// Log lines as human-readable text or as JSON objects (on stderr).
    #[arg(long, env = "MUSTER_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,

    /// Export the spans of every trace (the officer's call, the grading, the booking, with the
    /// ids `traceparent` carries) over OTLP/gRPC to this receiver, e.g. http://127.0.0.1:4317
    /// (an OpenTelemetry Collector, Jaeger, Tempo). Built with the `otlp` feature (default).
    #[cfg(feature = "otlp")]
    #[arg(long, env = "MUSTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Holds nats/ (the local nats-server's store and log), intake/, escalation/ and dispatch/.
    #[arg(
        long,
        env = "MUSTER_DATA_DIR",
        default_value = ".muster",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Use this NATS server instead of starting a local one.
    #[arg(long, env = "MUSTER_NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,

    /// Client port of the local nats-server (0: any free port). Ignored with --nats-url.
    #[arg(long, default_value_t = 4222, value_name = "PORT")]
    pub nats_port: u16,

    /// gRPC address of the intake service.
    #[arg(long, default_value_t = Service::Intake.default_addr(), value_name = "ADDR")]
    pub intake_addr: SocketAddr,

    /// gRPC address of the escalation service.
    #[arg(long, default_value_t = Service::Escalation.default_addr(), value_name = "ADDR")]
    pub escalation_addr: SocketAddr,

    /// gRPC address of the dispatch service.
    #[arg(long, default_value_t = Service::Dispatch.default_addr(), value_name = "ADDR")]
    pub dispatch_addr: SocketAddr,

    /// HTTP address of intake's feed listener (POST /v1/feeds/<format>).
    #[arg(long, default_value_t = crate::service::FEEDS_DEFAULT_ADDR, value_name = "ADDR")]
    pub feeds_addr: SocketAddr,

    /// HTTP address of the Prometheus endpoint (GET /metrics) for all three services: one
    /// endpoint for the process, series told apart by `service` where they could clash.
    /// Unset: no metrics endpoint.
    #[arg(long, env = "MUSTER_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: Service,

    /// The NATS server, e.g. nats://127.0.0.1:4222, or the nodes of a cluster separated by
    /// commas (nats://n1:4222,nats://n2:4222,nats://n3:4222): the service fails over between them.
    #[arg(long, env = "MUSTER_NATS_URL", value_name = "URL")]
    pub nats_url: String,

    /// The service's own state directory (default: .muster/<service>).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The public key that verifies bearer tokens: verify.pub from `muster token init`.
    #[arg(long, env = "MUSTER_VERIFY_KEY", value_name = "FILE")]
    pub verify_key: PathBuf,

    /// gRPC address (default: 127.0.0.1:50051 intake, :50052 escalation, :50053 dispatch).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Intake only: HTTP address of the feed listener (default 127.0.0.1:50080).
    #[arg(long, value_name = "ADDR")]
    pub feeds_listen: Option<SocketAddr>,

    /// HTTP address of the service's Prometheus endpoint (GET /metrics). Unset: no endpoint.
    #[arg(long, env = "MUSTER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Escalation only: serve these partitions (province codes, or the region root's code for
    /// incidents in no province), separated by commas. The instance consumes only their
    /// subjects and refuses other partitions' incidents. Unset: every partition.
    #[arg(
        long = "partition",
        env = "MUSTER_PARTITION",
        value_name = "CODE",
        value_delimiter = ','
    )]
    pub partitions: Vec<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CheckRegionArgs {
    /// Directory with the four region files (default: the sample region built into the binary).
    #[arg(long, env = "MUSTER_REGION_DIR", value_name = "DIR")]
    pub region_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The service's data directory, e.g. .muster/intake (the service must be stopped: sled lets
    /// one process at a time open it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The snapshot file to write (written as FILE.partial, renamed when complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file written by `muster backup`.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,

    /// The data directory to restore into; it must be missing or empty unless --force.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Delete what the data directory holds (after the snapshot has been verified) and restore.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The service's data directory (the service must be stopped).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Delete every drill namespace whose last write is more than DAYS days old.
    #[arg(long, value_name = "DAYS")]
    pub drill_older_than: u32,

    /// Only list what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Which service's store to rebuild.
    #[arg(value_enum)]
    pub service: Service,

    /// The service's data directory, e.g. .muster/intake (the service must be stopped). Missing
    /// or empty, unless --force.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The NATS server holding the stream MUSTER_EVENTS, as for `muster serve`.
    #[arg(long, env = "MUSTER_NATS_URL", value_name = "URL")]
    pub nats_url: String,

    /// The namespace the service serves: `live`, or `drill.<id>`.
    #[arg(
        long,
        env = "MUSTER_NAMESPACE",
        default_value = "live",
        value_name = "NS"
    )]
    pub namespace: String,

    /// Escalation only: the partitions the instance serves (its `--partition`), separated by
    /// commas; the rebuild reads only their subjects and where that instance's consumers stood.
    /// Unset: every partition.
    #[arg(long = "partition", value_name = "CODE", value_delimiter = ',')]
    pub partitions: Vec<String>,

    /// The region files the service runs with (dispatch: the units it seeds; escalation: the
    /// ladders). Default: the sample region built into the binary.
    #[arg(long, env = "MUSTER_REGION_DIR", value_name = "DIR")]
    pub region_dir: Option<PathBuf>,

    /// Escalation: the policy the service runs with (as for `muster serve`).
    #[arg(long, env = "MUSTER_ESCALATION_POLICY", value_name = "FILE")]
    pub escalation_policy: Option<PathBuf>,

    /// Escalation: the compressed test clock the service runs with, if any.
    #[arg(
        long,
        env = "MUSTER_ESCALATION_MINUTE_MS",
        value_name = "MS",
        hide = true,
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    pub escalation_minute_ms: Option<i64>,

    /// Dispatch: the acknowledgement timeout the service runs with, if not the default.
    #[arg(
        long,
        env = "MUSTER_DISPATCH_ACK_TIMEOUT_MS",
        value_name = "MS",
        hide = true,
        value_parser = clap::value_parser!(i64).range(1..=86_400_000)
    )]
    pub dispatch_ack_timeout_ms: Option<i64>,

    /// Rebuild although the data directory holds something: it is moved aside to
    /// DIR.before-rebuild-<time> (never deleted) once the rebuild has succeeded.
    #[arg(long)]
    pub force: bool,

    /// Skip events the service cannot fold (recorded as processed, as its consumer did with
    /// poison messages) instead of stopping at the first; each one is listed.
    #[arg(long)]
    pub skip_bad_events: bool,
}

/// `--log-format`; a clap enum so `--help` lists the choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for lifecycle::telemetry::LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => lifecycle::telemetry::LogFormat::Text,
            LogFormatArg::Json => lifecycle::telemetry::LogFormat::Json,
        }
    }
}
