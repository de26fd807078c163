//! The `muster` server binary: parses the command line, starts tracing and hands over to the
//! subcommand; any error ends the process with one line on stderr and a non-zero exit code.

mod check_region;
mod cli;
mod ops;
mod rebuild;
mod region;
mod serve;
mod service;
mod token;
mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc instead of glibc's malloc: under a feed surge the feed writer and sled spent about
/// 40 % of their CPU in glibc's malloc and free (perf, issue 8 T3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Checking files needs neither a runtime nor logging.
        Command::CheckRegion(args) => check_region::run(&args),
        // Store operations are synchronous and offline.
        Command::Backup(args) => ops::backup(&args),
        Command::Restore(args) => ops::restore(&args),
        Command::Retention(args) => ops::retention(&args),
        // Offline like the store operations, but it reads the stream: a runtime, quiet logs.
        Command::Rebuild(args) => rebuild::run(&args),
        Command::Token(command) => token::run(&command),
        Command::Up(args) => {
            pass_stream_replicas(args.common.stream_replicas);
            let tracing = Tracing::of(&args.common, "muster");
            with_runtime(tracing, |shutdown| up::run(args, shutdown))
        }
        Command::Serve(args) => {
            pass_stream_replicas(args.common.stream_replicas);
            let tracing = Tracing::of(&args.common, &format!("muster-{}", args.service.name()));
            with_runtime(tracing, |shutdown| serve::run(args, shutdown))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` puts the whole context chain on one line: "cannot read X: No such file".
            eprintln!("muster: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hands `--stream-replicas` to the bus, which reads `MUSTER_STREAM_REPLICAS` where it creates
/// the streams.
fn pass_stream_replicas(replicas: Option<u8>) {
    if let Some(replicas) = replicas {
        // SAFETY: called from main before the runtime or any other thread exists.
        unsafe { std::env::set_var(bus::STREAM_REPLICAS_ENV, replicas.to_string()) };
    }
}

/// How the process logs, and where it exports spans.
struct Tracing {
    log_format: cli::LogFormatArg,
    #[cfg(feature = "otlp")]
    otlp: Option<lifecycle::otlp::OtlpConfig>,
}

impl Tracing {
    #[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
    fn of(common: &cli::CommonArgs, service_name: &str) -> Tracing {
        Tracing {
            log_format: common.log_format,
            #[cfg(feature = "otlp")]
            otlp: common
                .otlp_endpoint
                .as_ref()
                .map(|endpoint| lifecycle::otlp::OtlpConfig {
                    endpoint: endpoint.clone(),
                    service_name: service_name.to_string(),
                }),
        }
    }
}

/// Starts tracing and the multi-threaded runtime, and runs `command` with a token that Ctrl-C
/// and SIGTERM cancel.
fn with_runtime<F, Fut>(tracing: Tracing, command: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    #[cfg(feature = "otlp")]
    let otlp =
        lifecycle::telemetry::init_with_otlp(tracing.log_format.into(), "info", tracing.otlp)
            .map_err(|problem| anyhow::anyhow!("--otlp-endpoint: {problem}"))?;
    #[cfg(not(feature = "otlp"))]
    lifecycle::telemetry::init(tracing.log_format.into(), "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let shutdown = lifecycle::shutdown::on_signals();
        command(shutdown).await
    });
    // The spans of the last moments go out before the process ends.
    #[cfg(feature = "otlp")]
    if let Some(otlp) = otlp {
        otlp.flush(std::time::Duration::from_secs(3));
    }
    result
}
