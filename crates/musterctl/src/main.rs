//! The `musterctl` binary: parses the command line, runs it against stdout, and prints any error
//! as one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use musterctl::{Cli, Error};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match musterctl::run(cli, &mut stdout).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // A closed pipe (`musterctl watch | head`) is the reader being done, not a failure.
        Err(Error::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
