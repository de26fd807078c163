//! The processes of a fault run: nats-server nodes (one, or a 3-node cluster on loopback) and the
//! three services as separate `muster serve` processes on fixed ports, so that a client finds a
//! restarted service where the killed one was. Signals (SIGKILL, SIGSTOP, SIGCONT) go to one pid
//! each, never by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a (re)started process has to answer.
pub const START_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash)]
pub enum Service {
    Intake,
    Escalation,
    Dispatch,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Intake, Service::Escalation, Service::Dispatch];

    pub fn name(self) -> &'static str {
        match self {
            Service::Intake => "intake",
            Service::Escalation => "escalation",
            Service::Dispatch => "dispatch",
        }
    }
}

/// A port that was free a moment ago. The suite needs fixed ports (a restarted process must
/// come back where clients look for it); the window between this probe and the bind is small.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The `muster` binary, built by `cargo test --workspace` (or `cargo build -p muster`) next to
/// this test binary.
pub fn muster_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = target_dir.join("muster");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (`cargo build -p muster`, or run `cargo test --workspace`)",
        binary.display()
    );
    binary
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this harness spawned and has not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

/// Appends a marker line to a process log so the log shows where each kill happened.
pub fn mark_log(path: &Path, line: &str) {
    use std::io::Write;
    let _ = writeln!(append_log(path), "===== chaos: {line} =====");
}

/// Polls a TCP connect until it succeeds or `timeout` passes.
pub async fn wait_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// One nats-server with JetStream (`sync_interval: always`, like the production configs), alone or
/// as one node of a cluster.
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub log: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    /// `cluster`: this node's route port and every node's route port, for a cluster member.
    pub fn new(run_dir: &Path, name: &str, cluster: Option<(u16, &[u16])>) -> NatsNode {
        let dir = run_dir.join(format!("nats-{name}"));
        std::fs::create_dir_all(&dir).expect("nats dir");
        let client_port = free_port();
        let mut conf_text = format!(
            "server_name: {name}\nhost: 127.0.0.1\nport: {client_port}\nmax_payload: 1MB\n\
             jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
            store = dir.join("jetstream").display()
        );
        if let Some((route_port, all_route_ports)) = cluster {
            let routes: Vec<String> = all_route_ports
                .iter()
                .filter(|port| **port != route_port)
                .map(|port| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            conf_text.push_str(&format!(
                "cluster {{\n  name: muster-chaos\n  host: 127.0.0.1\n  port: {route_port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let conf = dir.join("nats-server.conf");
        std::fs::write(&conf, conf_text).expect("write nats-server.conf");
        NatsNode {
            name: name.to_string(),
            client_port,
            log: dir.join("nats-server.log"),
            conf,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats {} already running", self.name);
        let binary =
            lifecycle::nats_server::find_binary().unwrap_or_else(|error| panic!("{error}"));
        let log = append_log(&self.log);
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    pub async fn wait_ready(&self) {
        assert!(
            wait_tcp(self.addr(), START_WAIT).await,
            "nats {} did not listen on {} within {START_WAIT:?}; see {}",
            self.name,
            self.client_port,
            self.log.display()
        );
    }

    /// SIGKILL: JetStream gets no chance to sync or step down.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            mark_log(&self.log, "kill -9");
            send_signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One service as a `muster serve` process on fixed ports.
pub struct ServiceProcess {
    pub service: Service,
    pub grpc_port: u16,
    /// Intake's feed listener.
    pub feeds_port: Option<u16>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    nats_url: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// SIGSTOPped: the watchdog leaves it alone and a kill waits for the SIGCONT.
    pub paused: bool,
}

impl ServiceProcess {
    pub fn new(
        service: Service,
        run_dir: &Path,
        data_dir: PathBuf,
        nats_url: String,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> ServiceProcess {
        ServiceProcess {
            service,
            grpc_port: free_port(),
            feeds_port: (service == Service::Intake).then(free_port),
            data_dir,
            log: run_dir.join(format!("{}.log", service.name())),
            nats_url,
            extra_args,
            env,
            child: None,
            paused: false,
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.grpc_port))
    }

    pub fn feeds_addr(&self) -> Option<SocketAddr> {
        self.feeds_port
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{} already running",
            self.service.name()
        );
        let log = append_log(&self.log);
        let mut command = Command::new(muster_binary());
        command
            .args(["serve", self.service.name(), "--nats-url", &self.nats_url])
            .arg("--listen")
            .arg(self.grpc_addr().to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--verify-key")
            .arg(super::client::verify_key_path())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(addr) = self.feeds_addr() {
            command.arg("--feeds-listen").arg(addr.to_string());
        }
        self.child = Some(command.spawn().expect("spawn muster serve"));
    }

    /// SIGKILL: no drain, no flush, no ack. Returns false when it was not running.
    pub fn kill9(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => {
                send_signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
                mark_log(&self.log, "kill -9");
                self.paused = false;
                true
            }
            None => false,
        }
    }

    pub fn sigstop(&mut self) {
        if let Some(child) = &self.child {
            send_signal(child.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn sigcont(&mut self) {
        if let Some(child) = &self.child {
            send_signal(child.id(), libc::SIGCONT);
        }
        self.paused = false;
    }

    /// The exit status if the process ended on its own (reaped), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `lines` lines of its log without terminal colours, for the summary.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A size-limited tmpfs for one service's data directory, so the suite can fill the disk under it.
/// Unmounted when dropped.
pub struct SmallDisk {
    pub mount_point: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_mb` MiB at `mount_point` (needs root, or CAP_SYS_ADMIN); the error
    /// says why not otherwise.
    pub fn mount(mount_point: &Path, size_mb: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(mount_point).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(mount_point)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            mount_point: mount_point.to_path_buf(),
            filler: mount_point.join("filler"),
        })
    }

    /// Writes a filler file until the disk refuses (ENOSPC); returns the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(&self.filler).expect("create the filler file");
        let chunk = vec![0xA5u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        // The last partial page too: single bytes until even those are refused.
        while let Ok(1) = file.write(&chunk[..1]) {
            written += 1;
        }
        written
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }

    /// Available bytes, from statvfs.
    pub fn available_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.mount_point.to_str().expect("UTF-8 path"))
            .expect("no NUL in the path");
        // SAFETY: statvfs fills the zeroed struct we own; the path is a valid C string.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
                return 0;
            }
            stat.f_bavail as u64 * stat.f_frsize as u64
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
