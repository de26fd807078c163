//! The `muster` server binary: parses the command line, starts tracing and hands over to the
//! subcommand; any error ends the process with one line on stderr and a non-zero exit code.

mod check_region;
mod cli;
mod ops;
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
        Command::Token(command) => token::run(&command),
        Command::Up(args) => {
            pass_stream_replicas(args.common.stream_replicas);
            with_runtime(args.common.log_format, |shutdown| up::run(args, shutdown))
        }
        Command::Serve(args) => {
            pass_stream_replicas(args.common.stream_replicas);
            with_runtime(args.common.log_format, |shutdown| {
                serve::run(args, shutdown)
            })
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

/// Starts tracing and the multi-threaded runtime, and runs `command` with a token that Ctrl-C
/// and SIGTERM cancel.
fn with_runtime<F, Fut>(log_format: cli::LogFormatArg, command: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    lifecycle::telemetry::init(log_format.into(), "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = lifecycle::shutdown::on_signals();
        command(shutdown).await
    })
}
