//! A real Alertmanager (Debian's prometheus-alertmanager, with amtool) sends its webhook to intake.
//!
//! The binaries come from `scripts/install-alertmanager.sh` (run by `scripts/test.sh`); a missing
//! one is a test failure saying so, never a silent skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_proto::v1 as pb;
use test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::system::{CHEMICAL_PARK, System, WAIT};

/// 澜港化工园区 (Langang Chemical Industrial Park), township 390202400: its centroid in
/// data/region/jurisdictions.toml.
const CHEMICAL_PARK_LAT: &str = "30.050";
const CHEMICAL_PARK_LON: &str = "121.750";

/// The feed in data/feeds/mapping.toml for the park's gas detectors.
const FEED: &str = "chem-park-gas";

/// `name` on PATH, else in /usr/bin (where Debian puts it); a failure telling how to install it.
fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (not on PATH, not in /usr/bin): run \
                 `sudo bash scripts/install-alertmanager.sh` (Debian's prometheus-alertmanager \
                 package, with amtool); scripts/test.sh does this"
            )
        })
}

/// A port nobody listened on a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An Alertmanager child process; killed when dropped, its log printed if the test is failing.
struct Alertmanager {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl Alertmanager {
    /// Writes the configuration into `dir` and starts Alertmanager with it on a random port,
    /// clustering off; returns once `/-/ready` answers 200. The webhook authenticates with
    /// `token` the way an operator would configure it (`http_config.authorization`).
    async fn start(dir: &Path, feeds_addr: SocketAddr, token: &str) -> Alertmanager {
        let binary = tool("prometheus-alertmanager");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n\
                 \x20 receiver: muster\n\
                 \x20 group_by: ['alertname']\n\
                 \x20 group_wait: 1s\n\
                 \x20 group_interval: 1s\n\
                 \x20 repeat_interval: 1h\n\
                 receivers:\n\
                 \x20 - name: muster\n\
                 \x20   webhook_configs:\n\
                 \x20     - url: 'http://{feeds_addr}/v1/feeds/alertmanager?feed={FEED}'\n\
                 \x20       send_resolved: true\n\
                 \x20       http_config:\n\
                 \x20         authorization:\n\
                 \x20           type: Bearer\n\
                 \x20           credentials: '{token}'\n"
            ),
        )
        .unwrap();
        let storage = dir.join("data");
        std::fs::create_dir_all(&storage).unwrap();
        let log = dir.join("alertmanager.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut alertmanager = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = alertmanager.child.try_wait() {
                panic!("alertmanager exited: {status} (its log follows)");
            }
            if http_get_status(addr, "/-/ready").await == Some(200) {
                break;
            }
            if started.elapsed() > WAIT {
                panic!(
                    "alertmanager at {} not ready after {WAIT:?} (its log follows)",
                    alertmanager.url
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        alertmanager
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "---- alertmanager log ({}) ----\n{text}",
            self.log.display()
        )
    }

    /// `amtool alert add` against this Alertmanager; fails the test if amtool does (the drop
    /// then prints Alertmanager's log).
    async fn amtool_alert_add(&self, args: &[String]) {
        let output = tokio::process::Command::new(tool("amtool"))
            .arg(format!("--alertmanager.url={}", self.url))
            .args(["alert", "add"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run amtool");
        assert!(
            output.status.success(),
            "amtool alert add {args:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
        let _ = self.child.start_kill();
    }
}

/// The status code of `GET path`, or `None` if nothing (valid) answers.
async fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&raw);
    head.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_raises_a_graded_gas_leak_incident_and_its_resolve_settles_the_alert() {
    // Before anything starts: a missing binary fails here, with the install hint.
    tool("prometheus-alertmanager");
    tool("amtool");
    let system = System::start().await;
    let feeds_addr = system
        .intake
        .as_ref()
        .and_then(|intake| intake.feeds_addr)
        .expect("intake running with a feed listener");
    let dir = test_support::temp_dir("muster-alertmanager-");
    let token = system.auth.token(
        "alertmanager",
        test_support::auth::NATIONAL,
        auth::Role::Feed,
    );
    let alertmanager = Alertmanager::start(dir.path(), feeds_addr, &token).await;

    // Rule am-gas maps alertname ~GasLeak / ~H2S to accident.hazardous_chemicals; severity
    // critical is red; latitude/longitude labels put it in the chemical park.
    let starts_at = musterctl::time::format_rfc3339_ms(now_unix_ms());
    let alert = |extra: &[String]| -> Vec<String> {
        let mut args: Vec<String> = [
            "alertname=GasLeakH2S",
            "severity=critical",
            &format!("latitude={CHEMICAL_PARK_LAT}"),
            &format!("longitude={CHEMICAL_PARK_LON}"),
            "instance=sensor-17",
            "--annotation=summary=H2S over limit at tank farm 3",
            &format!("--start={starts_at}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        args
    };
    alertmanager.amtool_alert_add(&alert(&[])).await;

    let intake = system.intake().await;
    let incident_id = eventually("an incident from the Alertmanager webhook", WAIT, || {
        let mut intake = intake.clone();
        async move {
            let listed = intake
                .list_incidents(pb::ListIncidentsRequest::default())
                .await
                .ok()?
                .into_inner();
            listed
                .incidents
                .into_iter()
                .find(|incident| {
                    incident
                        .recent_alerts
                        .iter()
                        .any(|alert| alert.format == "alertmanager")
                })
                .map(|incident| incident.id)
        }
    })
    .await;

    let incident = system
        .incident_when("graded", &incident_id, |i| i.grading.is_some())
        .await;
    let report = incident.report.as_ref().expect("report");
    assert_eq!(report.kind, "accident.hazardous_chemicals", "{incident:?}");
    assert!(
        report.township_code == CHEMICAL_PARK || report.township_code.starts_with("390202"),
        "township {}: {incident:?}",
        report.township_code
    );
    assert_eq!(
        report.warning_level(),
        pb::WarningLevel::Red,
        "severity=critical → red: {incident:?}"
    );
    assert!(incident.alert_count >= 1, "{incident:?}");
    assert_eq!(incident.open_alert_count, 1, "{incident:?}");
    let linked = &incident.recent_alerts[0];
    assert_eq!(linked.format, "alertmanager", "{incident:?}");
    assert_eq!(
        linked.headline, "H2S over limit at tank farm 3",
        "{incident:?}"
    );
    assert_eq!(linked.state, "open", "{incident:?}");

    // Resolve: the same alert (same labels, so the same fingerprint) with an end in the past.
    // With send_resolved, Alertmanager sends a `resolved` webhook at the next group interval.
    let ends_at = musterctl::time::format_rfc3339_ms(now_unix_ms());
    alertmanager
        .amtool_alert_add(&alert(&[format!("--end={ends_at}")]))
        .await;
    let incident = system
        .incident_when("the alert resolved", &incident_id, |i| {
            i.open_alert_count == 0 && i.timeline.iter().any(|e| e.event_type == "alert_resolved")
        })
        .await;
    assert_ne!(
        incident.status(),
        pb::IncidentStatus::Closed,
        "a resolved alert does not close the incident: {incident:?}"
    );
    assert!(incident.alert_count >= 1, "{incident:?}");
    assert!(
        incident
            .recent_alerts
            .iter()
            .any(|alert| alert.format == "alertmanager" && alert.state == "resolved"),
        "{incident:?}"
    );
    drop(alertmanager);
}
