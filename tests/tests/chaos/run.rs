//! One fault run: start nats-server (or a 3-node cluster) and the three services as processes,
//! run the workload, inject the seeded faults, let the system settle, check, and print a summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::chaos::checker;
use crate::chaos::client;
use crate::chaos::harness::{NatsNode, START_WAIT, Service, ServiceProcess, SmallDisk, free_port};
use crate::chaos::rng::Rng;
use crate::chaos::workload::{self, Ledger, Targets};

/// One policy minute lasts this long: grade deadlines of 100 minutes pass in 2 s, so escalation
/// timers fire many times during a run.
const MINUTE_MS: u64 = 20;

/// notify → wait for the deadline → escalate, once (no repeat), plus two reporting hops whose
/// overdue reports escalate: every escalation has its own (from, to, reason), so a repeated one
/// can only be a timer that fired twice.
const POLICY_TOML: &str = r#"version = 1

[ack_deadline_minutes]
default = { I = 100, II = 100, III = 100, IV = 100, ungraded = 100 }

[escalation]
num_loops = 0

[[escalation.step]]
action = "notify"

[[escalation.step]]
action = "wait_ack_deadline"

[[escalation.step]]
action = "escalate"

[[obligation]]
id = "chaos_reports"
version = 1
source = "chaos suite"
class = "accident"
reach = { I = "city", II = "city", III = "city", IV = "city" }

[[obligation.hop]]
from = "unit"
to = "county"
minutes = 150

[[obligation.hop]]
from = "county"
to = "city"
minutes = 150
"#;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Mode {
    pub name: &'static str,
    /// How long faults are injected while the workload runs.
    pub duration: Duration,
    pub kills_per_service: usize,
    pub nats_kills: usize,
    /// SIGSTOP of one consumer service (escalation or dispatch, chosen by the seed) this long.
    pub stop: Duration,
    /// Fill intake's data disk (a small tmpfs) for this long.
    pub disk_full: Option<Duration>,
    /// Three nats-server nodes, streams R3, one node killed mid-run (and back later).
    pub cluster: bool,
    pub rate_per_s: f64,
    pub concurrency: usize,
}

impl Mode {
    /// CI: seconds. Three kills per service, one nats-server kill, a 2 s SIGSTOP.
    pub fn smoke() -> Mode {
        Mode {
            name: "smoke",
            duration: Duration::from_secs(10),
            kills_per_service: 3,
            nats_kills: 1,
            stop: Duration::from_secs(2),
            disk_full: None,
            cluster: false,
            rate_per_s: 10.0,
            concurrency: 8,
        }
    }

    /// The full single-node run: ≥ 20 kills per service, nats-server kills, 30 s SIGSTOP, disk full.
    pub fn full() -> Mode {
        Mode {
            name: "full",
            duration: Duration::from_secs(240),
            kills_per_service: 24,
            nats_kills: 4,
            stop: Duration::from_secs(30),
            disk_full: Some(Duration::from_secs(15)),
            cluster: false,
            rate_per_s: 4.0,
            concurrency: 8,
        }
    }

    /// Only the disk: intake's disk fills, intake is killed while it is full, the space is
    /// freed; a few kills beside. About a minute.
    pub fn disk() -> Mode {
        Mode {
            name: "disk-full",
            duration: Duration::from_secs(30),
            kills_per_service: 2,
            nats_kills: 0,
            stop: Duration::from_secs(1),
            disk_full: Some(Duration::from_secs(12)),
            cluster: false,
            rate_per_s: 6.0,
            concurrency: 8,
        }
    }

    /// CI: the 3-node cluster with R3 streams, one node killed mid-run, two kills per service.
    pub fn cluster_smoke() -> Mode {
        Mode {
            name: "cluster-r3-smoke",
            duration: Duration::from_secs(15),
            kills_per_service: 2,
            nats_kills: 0,
            stop: Duration::from_secs(2),
            disk_full: None,
            cluster: true,
            rate_per_s: 6.0,
            concurrency: 8,
        }
    }

    /// `ci` as it is, or `full` when `MUSTER_CHAOS_SCALE=full`: the same test, run for minutes
    /// (the figures in docs/RELIABILITY.md).
    pub fn scaled(ci: Mode, full: Mode) -> Mode {
        if std::env::var("MUSTER_CHAOS_SCALE").is_ok_and(|v| v.trim() == "full") {
            full
        } else {
            ci
        }
    }

    /// The 3-node cluster with replicated streams; one node killed mid-run.
    pub fn cluster() -> Mode {
        Mode {
            name: "cluster-r3",
            duration: Duration::from_secs(120),
            kills_per_service: 6,
            nats_kills: 0,
            stop: Duration::from_secs(5),
            disk_full: None,
            cluster: true,
            rate_per_s: 4.0,
            concurrency: 8,
        }
    }

    /// Environment overrides: `MUSTER_CHAOS_DURATION_S`, `MUSTER_CHAOS_KILLS`, and
    /// `MUSTER_CHAOS_DISK_FULL=0` to leave the disk out (while the sled snapshot bug in
    /// docs/RELIABILITY.md stands, a full disk ends every run that has one).
    pub fn with_env(mut self) -> Mode {
        if std::env::var("MUSTER_CHAOS_DISK_FULL").is_ok_and(|v| v.trim() == "0") {
            self.disk_full = None;
        }
        if let Some(seconds) = env_u64("MUSTER_CHAOS_DURATION_S") {
            self.duration = Duration::from_secs(seconds);
        }
        if let Some(kills) = env_u64("MUSTER_CHAOS_KILLS") {
            self.kills_per_service = kills as usize;
        }
        self
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

/// The seed: `MUSTER_CHAOS_SEED`, or one from the clock (printed either way).
pub fn seed() -> u64 {
    env_u64("MUSTER_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
            % 1_000_000_000
    })
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(Service),
    KillNats,
    Stop(Service),
    DiskFull,
    KillClusterNode(usize),
}

#[derive(Debug, Clone, Copy)]
struct Scheduled {
    at: Duration,
    fault: Fault,
    /// How long the victim stays down before its restart.
    down_for: Duration,
}

fn schedule(mode: &Mode, rng: &mut Rng) -> Vec<Scheduled> {
    let span = mode.duration.as_secs_f64();
    let at = |from: f64, to: f64, rng: &mut Rng| {
        Duration::from_secs_f64(span * (from + (to - from) * rng.unit()))
    };
    let mut faults = Vec::new();
    for service in Service::ALL {
        for _ in 0..mode.kills_per_service {
            faults.push(Scheduled {
                at: at(0.02, 0.95, rng),
                fault: Fault::Kill(service),
                down_for: Duration::from_millis(rng.below(400)),
            });
        }
    }
    for _ in 0..mode.nats_kills {
        faults.push(Scheduled {
            at: at(0.05, 0.9, rng),
            fault: Fault::KillNats,
            down_for: Duration::from_millis(200 + rng.below(1500)),
        });
    }
    let stopped = if rng.below(2) == 0 {
        Service::Escalation
    } else {
        Service::Dispatch
    };
    faults.push(Scheduled {
        at: at(0.1, 0.5, rng),
        fault: Fault::Stop(stopped),
        down_for: mode.stop,
    });
    if let Some(full_for) = mode.disk_full {
        faults.push(Scheduled {
            at: at(0.55, 0.75, rng),
            fault: Fault::DiskFull,
            down_for: full_for,
        });
    }
    if mode.cluster {
        faults.push(Scheduled {
            at: at(0.25, 0.35, rng),
            fault: Fault::KillClusterNode(1 + rng.below(2) as usize),
            down_for: mode.duration / 3,
        });
    }
    faults.sort_by_key(|f| f.at);
    faults
}

/// The processes, shared by the fault task and the watchdog.
struct Processes {
    services: BTreeMap<Service, ServiceProcess>,
    nats: Vec<NatsNode>,
}

/// What happened, for the summary.
#[derive(Default, Debug)]
struct Tally {
    kills: BTreeMap<&'static str, usize>,
    /// Processes that ended without being killed, by service and last log line: how often, and
    /// the first and last time (seconds into the run).
    unexpected_exits: BTreeMap<(&'static str, String), (usize, f64, f64)>,
    stops: Vec<String>,
    disk: Vec<String>,
    /// Violations seen while faults ran (a service that did not come back).
    violations: Vec<String>,
    cluster: Vec<String>,
}

struct Run {
    mode: Mode,
    seed: u64,
    dir: PathBuf,
    processes: Arc<Mutex<Processes>>,
    tally: Arc<Mutex<Tally>>,
    disk: Option<Arc<SmallDisk>>,
    started: Instant,
}

/// Runs `mode` and panics with every violation found.
pub async fn run(mode: Mode) {
    let mode = mode.with_env();
    let seed = seed();
    println!(
        "chaos {}: seed {seed} (replay with MUSTER_CHAOS_SEED={seed}); {mode:?}",
        mode.name
    );
    domain::escalation::EscalationPolicy::from_toml("chaos-policy.toml", POLICY_TOML)
        .expect("the chaos escalation policy is valid");
    let dir = tempfile::Builder::new()
        .prefix(&format!("muster-chaos-{}-", mode.name))
        .tempdir()
        .expect("run dir")
        .keep();
    let policy = dir.join("escalation-policy.toml");
    std::fs::write(&policy, POLICY_TOML).expect("write the policy");

    // nats-server: one node, or three clustered on loopback.
    let nats: Vec<NatsNode> = if mode.cluster {
        let route_ports = [free_port(), free_port(), free_port()];
        (0..3)
            .map(|i| {
                NatsNode::new(
                    &dir,
                    &format!("n{}", i + 1),
                    Some((route_ports[i], &route_ports)),
                )
            })
            .collect()
    } else {
        vec![NatsNode::new(&dir, "n1", None)]
    };
    let nats_url = nats.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    let mut processes = Processes {
        services: BTreeMap::new(),
        nats,
    };
    for node in &mut processes.nats {
        node.spawn();
    }
    for node in &processes.nats {
        node.wait_ready().await;
    }
    // A cluster elects its JetStream meta leader after the nodes find each other; the services
    // give stream creation only a few seconds, so wait for it here.
    checker::wait_jetstream(&nats_url, START_WAIT).await;

    let mut notes = Vec::new();
    let disk = match mode.disk_full {
        Some(_) => match SmallDisk::mount(&dir.join("intake-disk"), 192) {
            Ok(disk) => Some(Arc::new(disk)),
            Err(error) => {
                notes.push(format!("disk full not tested: {error}"));
                None
            }
        },
        None => None,
    };
    let env: Vec<(String, String)> = if mode.cluster {
        vec![(bus::STREAM_REPLICAS_ENV.to_string(), "3".to_string())]
    } else {
        vec![]
    };
    for (index, service) in Service::ALL.into_iter().enumerate() {
        // `muster serve --nats-url` takes one server; in the cluster each service starts on its
        // own node (intake n1, escalation n2, dispatch n3) and learns the others from the
        // server's INFO, so killing a node moves its service's connection elsewhere.
        let service_nats_url = processes.nats[index % processes.nats.len()].url();
        let data_dir = match (&disk, service) {
            (Some(disk), Service::Intake) => disk.mount_point.join("db"),
            _ => dir.join(service.name()),
        };
        let extra = if service == Service::Escalation {
            vec![
                "--escalation-policy".to_string(),
                policy.display().to_string(),
                "--escalation-minute-ms".to_string(),
                MINUTE_MS.to_string(),
            ]
        } else {
            vec![]
        };
        let mut process = ServiceProcess::new(
            service,
            &dir,
            data_dir,
            service_nats_url,
            extra,
            env.clone(),
        );
        process.spawn();
        processes.services.insert(service, process);
    }
    let targets = Targets {
        intake: processes.services[&Service::Intake].grpc_addr(),
        feeds: processes.services[&Service::Intake]
            .feeds_addr()
            .expect("intake has a feed listener"),
        escalation: processes.services[&Service::Escalation].grpc_addr(),
        dispatch: processes.services[&Service::Dispatch].grpc_addr(),
    };
    let addrs: Vec<_> = processes
        .services
        .values()
        .map(|p| (p.service, p.grpc_addr(), p.log.clone()))
        .collect();
    for (service, addr, log) in addrs {
        wait_serving(service, addr, &log).await;
    }
    println!("chaos {}: run directory {}", mode.name, dir.display());

    let run = Run {
        mode: mode.clone(),
        seed,
        dir: dir.clone(),
        processes: Arc::new(Mutex::new(processes)),
        tally: Arc::new(Mutex::new(Tally::default())),
        disk,
        started: Instant::now(),
    };
    run.go(targets, &nats_url, notes).await;
}

pub async fn wait_serving(service: Service, addr: std::net::SocketAddr, log: &std::path::Path) {
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if client::serving(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} did not serve on {addr} within {START_WAIT:?}; log {}",
        service.name(),
        log.display()
    );
}

impl Run {
    async fn go(self, targets: Targets, nats_url: &str, mut notes: Vec<String>) {
        let mut rng = Rng::new(self.seed);
        let inputs_count = (self.mode.rate_per_s * self.mode.duration.as_secs_f64()) as usize;
        let inputs = Arc::new(workload::generate(
            &mut rng,
            &self.seed.to_string(),
            inputs_count,
        ));
        let faults = schedule(&self.mode, &mut rng);
        let plan: Vec<String> = faults
            .iter()
            .map(|f| {
                format!(
                    "{:.1}s {:?} down {:.1}s",
                    f.at.as_secs_f64(),
                    f.fault,
                    f.down_for.as_secs_f64()
                )
            })
            .collect();
        std::fs::write(self.dir.join("schedule.txt"), plan.join("\n")).expect("write the schedule");
        println!(
            "chaos {}: {} faults from {:.1} s to {:.1} s (schedule.txt in the run directory)",
            self.mode.name,
            faults.len(),
            faults.first().map_or(0.0, |f| f.at.as_secs_f64()),
            faults.last().map_or(0.0, |f| f.at.as_secs_f64())
        );
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let give_up = CancellationToken::new();
        let stop_side_tasks = CancellationToken::new();

        let workload_task = tokio::spawn(workload::run(
            targets,
            inputs.clone(),
            ledger.clone(),
            self.mode.rate_per_s,
            self.mode.concurrency,
            give_up.clone(),
        ));
        let churn_task = tokio::spawn(workload::churn_units(
            targets,
            self.seed,
            stop_side_tasks.clone(),
        ));
        let acknowledge_task = tokio::spawn(workload::acknowledge_incidents(
            targets,
            ledger.clone(),
            self.seed,
            stop_side_tasks.clone(),
        ));
        // The watchdog runs until the checks are done: a service that ends on its own is
        // restarted like a supervisor would (systemd `Restart=always`).
        let stop_watchdog = CancellationToken::new();
        let watchdog_task = tokio::spawn(watchdog(
            self.processes.clone(),
            self.tally.clone(),
            self.started,
            stop_watchdog.clone(),
        ));

        // The faults, in schedule order; stops, disk fills and cluster-node outages run beside.
        let mut side = Vec::new();
        for fault in &faults {
            tokio::time::sleep_until((self.started + fault.at).into()).await;
            match fault.fault {
                Fault::Kill(service) => self.kill_and_restart(service, fault.down_for).await,
                Fault::KillNats => self.kill_nats(fault.down_for).await,
                Fault::Stop(service) => side.push(tokio::spawn(stop_for(
                    self.processes.clone(),
                    self.tally.clone(),
                    service,
                    fault.down_for,
                ))),
                Fault::DiskFull => {
                    if let Some(disk) = &self.disk {
                        side.push(tokio::spawn(disk_full_for(
                            disk.clone(),
                            ledger.clone(),
                            self.processes.clone(),
                            self.tally.clone(),
                            fault.down_for,
                        )));
                    }
                }
                Fault::KillClusterNode(index) => side.push(tokio::spawn(cluster_node_down(
                    self.processes.clone(),
                    self.tally.clone(),
                    index,
                    fault.down_for,
                ))),
            }
        }
        for task in side {
            task.await.expect("fault task");
        }
        let faults_done = self.started.elapsed();
        println!(
            "chaos {}: faults done after {:.1} s; waiting for the clients",
            self.mode.name,
            faults_done.as_secs_f64()
        );

        // Everything back up; the clients finish their retries (bounded).
        {
            let mut processes = self.processes.lock().unwrap();
            for process in processes.services.values_mut() {
                if process.paused {
                    process.sigcont();
                }
                if !process.is_running() {
                    process.spawn();
                }
            }
        }
        let workload_bound = Duration::from_secs(90);
        let mut workload_task = workload_task;
        if tokio::time::timeout(workload_bound, &mut workload_task)
            .await
            .is_err()
        {
            give_up.cancel();
            let _ = workload_task.await;
            notes.push(format!(
                "the clients gave up {workload_bound:?} after the faults stopped"
            ));
        }
        let all_sent = self.started.elapsed();
        stop_side_tasks.cancel();
        let (unit_changes, unit_refusals) = churn_task.await.expect("churn task");
        let (acknowledgements, acknowledgements_refused) =
            acknowledge_task.await.expect("acknowledge task");

        // Every service must serve again; one that cannot is a violation, and the checks that
        // need it are skipped (the stream is still checked).
        let mut down = std::collections::BTreeSet::new();
        for (service, addr) in [
            (Service::Intake, targets.intake),
            (Service::Escalation, targets.escalation),
            (Service::Dispatch, targets.dispatch),
        ] {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !client::serving(addr).await && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !client::serving(addr).await {
                let last_line = self.processes.lock().unwrap().services[&service].log_tail(1);
                self.tally.lock().unwrap().violations.push(format!(
                    "{} does not serve 60 s after the faults stopped (restarted by the watchdog meanwhile); last log line: {last_line}",
                    service.name()
                ));
                down.insert(service);
            }
        }

        // Quiet twice: once for the pipeline (messages a killed consumer held come back after
        // JetStream's 30 s ack wait), once more after the last acknowledgement timers are
        // cancelled, so the final state does not move while it is read.
        let settle_bound = if down.is_empty() {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(10)
        };
        let mut settled = Duration::ZERO;
        for round in 0..2 {
            if round == 1 {
                let acknowledged = workload::acknowledge_all_dispatched(targets).await;
                println!(
                    "chaos {}: acknowledged the {acknowledged} units still dispatched",
                    self.mode.name
                );
            }
            match checker::settle(nats_url, Duration::from_secs(3), settle_bound).await {
                Some(took) => settled += took,
                None => notes.push(format!(
                    "the event stream did not settle within {settle_bound:?}"
                )),
            }
        }
        println!(
            "chaos {}: settled in {:.1} s",
            self.mode.name,
            settled.as_secs_f64()
        );
        let events = checker::read_stream(nats_url).await;
        let ledger = Arc::try_unwrap(ledger)
            .ok()
            .expect("the workload has finished")
            .into_inner()
            .unwrap();
        let mut findings = checker::check(
            targets,
            &inputs,
            &ledger,
            &events,
            !down.contains(&Service::Intake),
            !down.contains(&Service::Dispatch),
        )
        .await;
        stop_watchdog.cancel();
        watchdog_task.await.expect("watchdog");
        findings
            .violations
            .splice(0..0, self.tally.lock().unwrap().violations.drain(..));
        let total = self.started.elapsed();

        // The summary.
        let tally = self.tally.lock().unwrap();
        let reports = inputs.iter().filter(|i| i.is_report()).count();
        let distinct: std::collections::BTreeSet<&str> = inputs.iter().map(|i| i.key()).collect();
        let mut lines = vec![
            format!("chaos {} summary (seed {})", self.mode.name, self.seed),
            format!(
                "  duration: faults {:.0} s, all inputs acknowledged at {:.0} s, total {:.0} s",
                faults_done.as_secs_f64(),
                all_sent.as_secs_f64(),
                total.as_secs_f64()
            ),
            format!(
                "  inputs: {} ({} reports, {} alerts; {} distinct keys, {} resends); attempts {}; acknowledged {}; retried {}; unacknowledged {}",
                inputs.len(),
                reports,
                inputs.len() - reports,
                distinct.len(),
                inputs.len() - distinct.len(),
                ledger.attempts,
                ledger.acks.len(),
                ledger.retried_inputs,
                ledger.unacknowledged.len()
            ),
            format!("  kills: {:?}", tally.kills),
            format!(
                "  incidents: {} on the stream ({} from reports, {} from feed alerts)",
                findings.incidents, findings.report_incidents, findings.feed_incidents
            ),
            format!(
                "  stream: {} messages (replicas {}); unit bookings {}, releases {}; escalations {} ({} for overdue reports)",
                events.messages,
                events.replicas,
                findings.bookings,
                findings.releases,
                findings.escalations,
                findings.overdue_escalations
            ),
            format!("  unit churn by the clients: {unit_changes} changes, {unit_refusals} refused"),
            format!(
                "  officers' acknowledgements: {acknowledgements} accepted, {acknowledgements_refused} refused; acknowledged events on the stream {}",
                findings.acknowledgements
            ),
        ];
        for stop in &tally.stops {
            lines.push(format!("  stop: {stop}"));
        }
        for disk in &tally.disk {
            lines.push(format!("  disk: {disk}"));
        }
        for cluster in &tally.cluster {
            lines.push(format!("  cluster: {cluster}"));
        }
        for ((service, last_line), (count, first, last)) in &tally.unexpected_exits {
            lines.push(format!(
                "  unexpected exit: {service} x{count} between {first:.1} s and {last:.1} s (restarted each time), last log line: {last_line}"
            ));
        }
        let mut errors: Vec<(&String, &u64)> = ledger.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1));
        for (error, count) in errors.iter().take(8) {
            lines.push(format!("  client error x{count}: {error}"));
        }
        for note in notes.iter().chain(&findings.notes) {
            lines.push(format!("  note: {note}"));
        }
        lines.push(format!("  violations: {}", findings.violations.len()));
        for violation in findings.violations.iter().take(60) {
            lines.push(format!("    VIOLATION: {violation}"));
        }
        let summary = lines.join("\n");
        println!("{summary}");
        std::fs::write(self.dir.join("summary.txt"), &summary).expect("write the summary");
        drop(tally);
        assert!(
            findings.escalations > 0 && findings.bookings > 0,
            "the run exercised no timers or no bookings; the checks would be vacuous\n{summary}"
        );
        assert!(
            findings.violations.is_empty(),
            "{} violations (seed {}; logs in {})\n{summary}",
            findings.violations.len(),
            self.seed,
            self.dir.display()
        );
        // Passed: stop everything, then remove the run directory (kept on failure for the logs,
        // and with MUSTER_CHAOS_KEEP=1).
        drop(self.processes);
        drop(self.disk);
        if std::env::var_os("MUSTER_CHAOS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn kill_and_restart(&self, service: Service, down_for: Duration) {
        // A SIGSTOPped process is left to its stop; the kill waits for the SIGCONT.
        loop {
            let killed = {
                let mut processes = self.processes.lock().unwrap();
                let process = processes.services.get_mut(&service).expect("service");
                (!process.paused).then(|| process.kill9())
            };
            match killed {
                Some(true) => {
                    *self
                        .tally
                        .lock()
                        .unwrap()
                        .kills
                        .entry(service.name())
                        .or_default() += 1;
                    break;
                }
                Some(false) => break,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tokio::time::sleep(down_for).await;
        let mut processes = self.processes.lock().unwrap();
        let process = processes.services.get_mut(&service).expect("service");
        if !process.is_running() {
            process.spawn();
        }
    }

    async fn kill_nats(&self, down_for: Duration) {
        self.processes.lock().unwrap().nats[0].kill9();
        *self
            .tally
            .lock()
            .unwrap()
            .kills
            .entry("nats-server")
            .or_default() += 1;
        tokio::time::sleep(down_for).await;
        self.processes.lock().unwrap().nats[0].spawn();
    }
}

/// Restarts a service that ended on its own (not killed by the suite) and records it.
async fn watchdog(
    processes: Arc<Mutex<Processes>>,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => break,
        }
        let mut processes = processes.lock().unwrap();
        for process in processes.services.values_mut() {
            if let Some(status) = process.exited() {
                let at = started.elapsed().as_secs_f64();
                let key = (
                    process.service.name(),
                    format!("{status}: {}", process.log_tail(1)),
                );
                let mut tally = tally.lock().unwrap();
                let entry = tally.unexpected_exits.entry(key).or_insert((0, at, at));
                entry.0 += 1;
                entry.2 = at;
                process.spawn();
            }
        }
    }
}

async fn stop_for(
    processes: Arc<Mutex<Processes>>,
    tally: Arc<Mutex<Tally>>,
    service: Service,
    stopped_for: Duration,
) {
    processes
        .lock()
        .unwrap()
        .services
        .get_mut(&service)
        .expect("service")
        .sigstop();
    tokio::time::sleep(stopped_for).await;
    processes
        .lock()
        .unwrap()
        .services
        .get_mut(&service)
        .expect("service")
        .sigcont();
    tally.lock().unwrap().stops.push(format!(
        "{} SIGSTOP for {:.0} s, then SIGCONT",
        service.name(),
        stopped_for.as_secs_f64()
    ));
}

/// Fills intake's disk, keeps it full while the clients go on, then frees it. What the clients
/// were told meanwhile goes into the summary; that nothing acknowledged was lost is the
/// checker's job.
async fn disk_full_for(
    disk: Arc<SmallDisk>,
    ledger: Arc<Mutex<Ledger>>,
    processes: Arc<Mutex<Processes>>,
    tally: Arc<Mutex<Tally>>,
    full_for: Duration,
) {
    let before = ledger.lock().unwrap().errors.clone();
    let acks_before = ledger.lock().unwrap().acks.len();
    let filled = disk.fill();
    let available = disk.available_bytes();
    // Refusals first; then a crash while the disk is full, and restarts (the watchdog's) that
    // must open the store on a full disk.
    tokio::time::sleep(full_for / 3).await;
    processes
        .lock()
        .unwrap()
        .services
        .get_mut(&Service::Intake)
        .expect("intake")
        .kill9();
    *tally
        .lock()
        .unwrap()
        .kills
        .entry("intake (disk full)")
        .or_default() += 1;
    processes
        .lock()
        .unwrap()
        .services
        .get_mut(&Service::Intake)
        .expect("intake")
        .spawn();
    tokio::time::sleep(full_for - full_for / 3).await;
    let acks_during = ledger.lock().unwrap().acks.len() - acks_before;
    let after = ledger.lock().unwrap().errors.clone();
    disk.free();
    let freed_at = Instant::now();
    let intake_addr = processes.lock().unwrap().services[&Service::Intake].grpc_addr();
    let recovery_bound = Duration::from_secs(30);
    let mut recovered = None;
    while freed_at.elapsed() < recovery_bound {
        if client::serving(intake_addr).await {
            recovered = Some(freed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let intake_log = processes.lock().unwrap().services[&Service::Intake]
        .log
        .clone();
    let mut tally = tally.lock().unwrap();
    match recovered {
        Some(took) => tally.disk.push(format!(
            "intake (killed while the disk was full) served again {:.1} s after the space was freed",
            took.as_secs_f64()
        )),
        None => {
            let last_line = crate::chaos::harness::strip_ansi(
                &std::fs::read_to_string(&intake_log).unwrap_or_default(),
            )
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
            tally.violations.push(format!(
                "intake, killed while its disk was full, does not serve {recovery_bound:?} after the space was freed; last log line: {last_line}"
            ));
        }
    }
    tally.disk.push(format!(
        "intake's tmpfs filled with {} MiB ({available} bytes left) for {:.0} s; {acks_during} inputs acknowledged meanwhile",
        filled / (1024 * 1024),
        full_for.as_secs_f64()
    ));
    for (error, count) in &after {
        let new = count - before.get(error).copied().unwrap_or(0);
        if new > 0 {
            tally
                .disk
                .push(format!("  while full, clients were told x{new}: {error}"));
        }
    }
    let log = crate::chaos::harness::strip_ansi(
        &std::fs::read_to_string(&intake_log).unwrap_or_default(),
    );
    let space_lines: Vec<&str> = log
        .lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("no space") || lower.contains("enospc") || lower.contains("os error 28")
        })
        .collect();
    tally.disk.push(format!(
        "intake log lines naming the full disk: {}{}",
        space_lines.len(),
        space_lines
            .first()
            .map_or(String::new(), |line| format!("; first: {line}"))
    ));
}

async fn cluster_node_down(
    processes: Arc<Mutex<Processes>>,
    tally: Arc<Mutex<Tally>>,
    index: usize,
    down_for: Duration,
) {
    let name = {
        let mut processes = processes.lock().unwrap();
        let node = &mut processes.nats[index];
        node.kill9();
        node.name.clone()
    };
    tokio::time::sleep(down_for).await;
    processes.lock().unwrap().nats[index].spawn();
    tally.lock().unwrap().cluster.push(format!(
        "node {name} kill -9, down {:.0} s, restarted",
        down_for.as_secs_f64()
    ));
}
