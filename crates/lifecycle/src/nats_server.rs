//! A nats-server child process with JetStream in a given directory, for `muster up` and tests.
//!
//! The server gets a config file with `sync_interval: always` (JetStream fsyncs every write;
//! Jepsen 2025 found acknowledged writes lost with the default lazy fsync) and writes its port to
//! a ports file, which we read back: with port `-1` it picks a free one itself, so tests never race
//! for ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::Error;

/// The nats-server version the project tests with; `scripts/install-nats-server.sh` installs it.
pub const PINNED_VERSION: &str = "2.15.1";

/// How to start the server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// The executable; see [`find_binary`].
    pub binary: PathBuf,
    /// Holds the config file, the ports file and `jetstream/`.
    pub data_dir: PathBuf,
    pub host: String,
    /// `None` lets the server pick a free port.
    pub port: Option<u16>,
    /// Log to this file instead of discarding the server's output.
    pub log_file: Option<PathBuf>,
}

impl NatsServerOptions {
    pub fn new(binary: PathBuf, data_dir: PathBuf) -> NatsServerOptions {
        NatsServerOptions {
            binary,
            data_dir,
            host: "127.0.0.1".into(),
            port: None,
            log_file: None,
        }
    }
}

/// Finds nats-server: `$MUSTER_NATS_SERVER`, then `nats-server` on `PATH`.
pub fn find_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("MUSTER_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NatsServer(format!(
                "MUSTER_NATS_SERVER={} is not a file",
                path.display()
            )))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::NatsServer(format!(
                "nats-server {PINNED_VERSION} is not installed: run scripts/install-nats-server.sh, \
                 set MUSTER_NATS_SERVER, or pass --nats-url to use a running server"
            ))
        })
}

/// A running nats-server; stopped with SIGKILL when dropped, gracefully with [`NatsServerProcess::stop`].
pub struct NatsServerProcess {
    child: tokio::process::Child,
    url: String,
    port: u16,
    options: NatsServerOptions,
}

impl NatsServerProcess {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(options: NatsServerOptions) -> Result<NatsServerProcess, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        let ports_dir = options.data_dir.join("ports");
        std::fs::create_dir_all(&ports_dir)
            .map_err(io(format!("create {}", ports_dir.display())))?;
        for entry in std::fs::read_dir(&ports_dir)
            .map_err(io(format!("read {}", ports_dir.display())))?
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
        let config_path = options.data_dir.join("nats-server.conf");
        std::fs::write(&config_path, config_text(&options, &ports_dir))
            .map_err(io(format!("write {}", config_path.display())))?;
        let mut command = tokio::process::Command::new(&options.binary);
        command
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &options.log_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io(format!("open {}", path.display())))?;
                let copy = file
                    .try_clone()
                    .map_err(io(format!("open {}", path.display())))?;
                command.stdout(file).stderr(copy);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut child = command.spawn().map_err(|e| {
            Error::NatsServer(format!("cannot start {}: {e}", options.binary.display()))
        })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = read_ports_file(&ports_dir) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::NatsServer(format!(
                    "{} exited with {status} before listening; see {}",
                    options.binary.display(),
                    options
                        .log_file
                        .as_ref()
                        .map_or("its output".into(), |p| p.display().to_string())
                )));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(Error::NatsServer(
                    "did not report a port within 20 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let url = format!("nats://{}:{port}", options.host);
        // The ports file is written when the client listener is up; JetStream may need a moment more,
        // which the bus handles by retrying stream creation.
        Ok(NatsServerProcess {
            child,
            url,
            port,
            options,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn options(&self) -> &NatsServerOptions {
        &self.options
    }

    /// SIGKILL, as in a crash; the JetStream data stays for a restart.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts the server again on the same port and data, after [`NatsServerProcess::kill`].
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill().await;
        let mut options = self.options.clone();
        options.port = Some(self.port);
        let restarted = NatsServerProcess::start(options).await?;
        let old = std::mem::replace(self, restarted);
        // The fresh process keeps the original options so a later restart asks for the same port again.
        self.options.port = old.options.port;
        drop(old);
        Ok(())
    }

    /// SIGTERM (lame-duck free, a clean JetStream shutdown), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child's pid has no memory-safety implications.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
            tracing::warn!("nats-server did not stop within {grace:?}; killing it");
        }
        let _ = self.child.kill().await;
    }
}

fn config_text(options: &NatsServerOptions, ports_dir: &Path) -> String {
    let port = options.port.map_or(-1, i32::from);
    format!(
        "# Written by Muster for a local nats-server child; see deploy/nats-server.conf for production.\n\
         host: \"{host}\"\n\
         port: {port}\n\
         max_payload: 1MB\n\
         ports_file_dir: \"{ports}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
        host = options.host,
        ports = ports_dir.display(),
        store = options.data_dir.join("jetstream").display(),
    )
}

fn read_ports_file(dir: &Path) -> Option<u16> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "ports") {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            let url = value.get("nats")?.as_array()?.first()?.as_str()?;
            return url.rsplit(':').next()?.parse().ok();
        }
    }
    None
}
