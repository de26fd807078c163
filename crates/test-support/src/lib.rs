//! Dev-only helpers for tests: a real nats-server on a random port, temp dirs, bounded waiting.
//!
//! A missing nats-server is a test failure with instructions, never a silent skip.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use lifecycle::nats_server::{NatsServerOptions, NatsServerProcess, find_binary};

/// A nats-server with JetStream in a temporary directory, on a port it picked itself.
pub struct TestNats {
    process: NatsServerProcess,
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts the server; panics with an install hint if nats-server cannot be found.
    pub async fn start() -> TestNats {
        let binary = find_binary().unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::Builder::new()
            .prefix("muster-nats-")
            .tempdir()
            .expect("temp dir for nats-server");
        let mut options = NatsServerOptions::new(binary, dir.path().to_path_buf());
        options.log_file = Some(dir.path().join("nats-server.log"));
        let process = NatsServerProcess::start(options)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        TestNats { process, dir }
    }

    pub fn url(&self) -> &str {
        self.process.url()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL the server and start it again on the same port with the same JetStream data.
    pub async fn crash_and_restart(&mut self) {
        self.process
            .restart()
            .await
            .unwrap_or_else(|error| panic!("restart nats-server: {error}"));
    }
}

/// A temporary directory for a sled database.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// Polls `check` until it returns `Some`, at most `timeout`; panics naming `what` otherwise.
/// Tests wait for conditions with this instead of sleeping.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
