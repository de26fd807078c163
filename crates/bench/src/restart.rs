//! `muster-bench restart`: how long a filled data directory takes to serve again, and how much
//! memory each service holds (issue 8, T4/T5).
//!
//! It starts a nats-server on the data directory's JetStream store (`<data-dir>/nats`, as `muster
//! up` left it, `sync_interval: always`) and then the three services as separate `muster serve`
//! processes at the same moment, each on its own store under `<data-dir>`. Per service it
//! records the time from spawning the process until gRPC health answers SERVING for the service,
//! and until the first real request is answered (intake `ListIncidents`, escalation `GetGrading`,
//! dispatch `ListUnits`), then RSS (VmRSS) right after, after `--reads` random reads of the
//! filled incidents (GetIncident / GetGrading / GetAssignments), and after `--count` reports
//! flowed through all three; VmHWM is the peak. Finally SIGTERM and the time to exit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use muster_proto::v1 as pb;
use tonic::transport::Channel;

use crate::Bearer;

pub struct RestartOptions {
    pub data_dir: PathBuf,
    pub muster: PathBuf,
    pub nats_server: PathBuf,
    pub token: String,
    pub namespace: String,
    /// Random reads per service after the start.
    pub reads: u64,
    /// Reports through the whole pipeline after the reads.
    pub reports: u64,
    pub concurrency: usize,
    /// Also serve `/metrics` (intake then counts open incidents at startup).
    pub metrics: bool,
    /// The first and last incident id of the fill (reads pick ids between them).
    pub first_incident_id: String,
    pub last_incident_id: String,
}

const SERVICES: [(&str, &str); 3] = [
    ("intake", "muster.v1.IntakeService"),
    ("escalation", "muster.v1.EscalationService"),
    ("dispatch", "muster.v1.DispatchService"),
];

struct Running {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    url: String,
    spawned: Instant,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ServiceFigures {
    pub service: String,
    pub serving_ms: f64,
    pub first_answer_ms: f64,
    pub rss_mb_started: f64,
    pub rss_mb_after_reads: f64,
    pub rss_mb_after_reports: f64,
    pub rss_mb_peak: f64,
    pub cpu_s_to_serving: f64,
    pub reads: u64,
    pub read_errors: u64,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
    pub exit_ms: f64,
}

pub async fn run(options: &RestartOptions) -> Result<serde_json::Value> {
    let bearer = Bearer(
        format!("Bearer {}", options.token)
            .parse()
            .context("the token is not ASCII")?,
    );
    let verify_key = options.data_dir.join("auth").join("verify.pub");
    anyhow::ensure!(
        verify_key.exists(),
        "{} is missing: run `muster up --data-dir {}` once (and stop it) before filling",
        verify_key.display(),
        options.data_dir.display()
    );
    let (mut nats, nats_url) = start_nats(&options.nats_server, &options.data_dir).await?;
    let result = measure(options, &bearer, &verify_key, &nats_url).await;
    let _ = nats.kill().await;
    result
}

async fn measure(
    options: &RestartOptions,
    bearer: &Bearer,
    verify_key: &Path,
    nats_url: &str,
) -> Result<serde_json::Value> {
    let mut running = Vec::new();
    for (name, _) in SERVICES {
        let port = free_port()?;
        let mut command = tokio::process::Command::new(&options.muster);
        command
            .arg("serve")
            .arg(name)
            .arg("--data-dir")
            .arg(options.data_dir.join(name))
            .arg("--nats-url")
            .arg(nats_url)
            .arg("--verify-key")
            .arg(verify_key)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--namespace")
            .arg(&options.namespace);
        if name == "intake" {
            command
                .arg("--feeds-listen")
                .arg(format!("127.0.0.1:{}", free_port()?));
        }
        if options.metrics {
            command
                .arg("--metrics-listen")
                .arg(format!("127.0.0.1:{}", free_port()?));
        }
        let log = std::fs::File::create(options.data_dir.join(format!("restart-{name}.log")))?;
        command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("spawn {}", options.muster.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        running.push(Running {
            name,
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            spawned,
        });
    }
    let mut figures: Vec<ServiceFigures> = Vec::new();
    let mut channels = Vec::new();
    // Started together; waited for together, so no service's time includes another's wait.
    let waits = running
        .iter()
        .zip(SERVICES)
        .map(|(service, (_, health_name))| {
            let bearer = bearer.clone();
            let namespace = options.namespace.clone();
            let incident_id = options.last_incident_id.clone();
            let url = service.url.clone();
            let spawned = service.spawned;
            let name = service.name;
            let pid = service.pid;
            async move {
                let channel = wait_serving(&url, health_name, Duration::from_secs(120)).await?;
                let serving = spawned.elapsed();
                let cpu_s = cpu_seconds(pid);
                first_request(name, channel.clone(), &bearer, &namespace, &incident_id).await?;
                let first = spawned.elapsed();
                anyhow::Ok((serving, first, cpu_s, channel))
            }
        });
    let outcomes = futures_util::future::join_all(waits).await;
    for (service, outcome) in running.iter().zip(outcomes) {
        let (serving, first, cpu_s, channel) =
            outcome.with_context(|| format!("{} did not start", service.name))?;
        figures.push(ServiceFigures {
            service: service.name.to_string(),
            serving_ms: serving.as_secs_f64() * 1000.0,
            first_answer_ms: first.as_secs_f64() * 1000.0,
            cpu_s_to_serving: cpu_s,
            ..Default::default()
        });
        channels.push(channel);
    }
    // Whatever the services do in the background just after the start (metrics recounts, timers)
    // counts too: RSS two seconds later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (service, figure) in running.iter().zip(figures.iter_mut()) {
        figure.rss_mb_started = rss_mb(service.pid, "VmRSS");
    }
    let ids = IdRange::parse(&options.first_incident_id, &options.last_incident_id)?;
    for (index, service) in running.iter().enumerate() {
        let (count, errors, p50, p99) = random_reads(
            service.name,
            channels[index].clone(),
            bearer,
            &options.namespace,
            &ids,
            options.reads,
            options.concurrency,
        )
        .await;
        figures[index].reads = count;
        figures[index].read_errors = errors;
        figures[index].read_p50_ms = p50;
        figures[index].read_p99_ms = p99;
        figures[index].rss_mb_after_reads = rss_mb(service.pid, "VmRSS");
    }
    let reported = reports(
        channels[0].clone(),
        bearer,
        &options.namespace,
        options.reports,
        options.concurrency,
    )
    .await?;
    // Let grading, booking and the projection finish with them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (service, figure) in running.iter().zip(figures.iter_mut()) {
        figure.rss_mb_after_reports = rss_mb(service.pid, "VmRSS");
        figure.rss_mb_peak = rss_mb(service.pid, "VmHWM");
    }
    for (service, figure) in running.iter_mut().zip(figures.iter_mut()) {
        let stopping = Instant::now();
        // SAFETY: kill(2) on a pid of a child this function spawned and still holds.
        unsafe {
            libc::kill(service.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), service.child.wait()).await {
            Ok(_) => figure.exit_ms = stopping.elapsed().as_secs_f64() * 1000.0,
            Err(_) => {
                let _ = service.child.kill().await;
                figure.exit_ms = f64::NAN;
            }
        }
    }
    Ok(serde_json::json!({
        "data_dir": options.data_dir,
        "store_mb": SERVICES.iter().map(|(name, _)| {
            (name.to_string(), crate::fill::dir_bytes(&options.data_dir.join(name)) as f64 / 1e6)
        }).collect::<std::collections::BTreeMap<_, _>>(),
        "metrics": options.metrics,
        "reports": reported,
        "services": figures,
    }))
}

/// A nats-server on the data directory's JetStream store, as `muster up` configures it.
async fn start_nats(binary: &Path, data_dir: &Path) -> Result<(tokio::process::Child, String)> {
    let port = free_port()?;
    let store_dir = data_dir.join("nats");
    std::fs::create_dir_all(&store_dir)?;
    let config = data_dir.join("restart-nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            store_dir.display().to_string()
        ),
    )?;
    let log = std::fs::File::create(data_dir.join("restart-nats.log"))?;
    let child = tokio::process::Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nats-server did not listen on {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls gRPC health every 5 ms until the service answers SERVING.
async fn wait_serving(url: &str, health_name: &str, patience: Duration) -> Result<Channel> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + patience;
    loop {
        if Instant::now() > deadline {
            bail!("{url} not SERVING within {patience:?}");
        }
        let channel = match Channel::from_shared(url.to_string())?
            .connect_timeout(Duration::from_millis(200))
            .connect()
            .await
        {
            Ok(channel) => channel,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let mut health = HealthClient::new(channel.clone());
        loop {
            match health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: health_name.to_string(),
                })
                .await
            {
                Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                    return Ok(channel);
                }
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => bail!("{url} not SERVING within {patience:?}"),
            }
        }
    }
}

async fn first_request(
    name: &str,
    channel: Channel,
    bearer: &Bearer,
    namespace: &str,
    incident_id: &str,
) -> Result<()> {
    let namespace = namespace.to_string();
    match name {
        "intake" => {
            let mut client = pb::intake_service_client::IntakeServiceClient::with_interceptor(
                channel,
                bearer.clone(),
            )
            .max_decoding_message_size(64 * 1024 * 1024);
            client
                .list_incidents(pb::ListIncidentsRequest {
                    namespace,
                    limit: 20,
                })
                .await?;
        }
        "escalation" => {
            let mut client =
                pb::escalation_service_client::EscalationServiceClient::with_interceptor(
                    channel,
                    bearer.clone(),
                );
            client
                .get_grading(pb::GetGradingRequest {
                    namespace,
                    incident_id: incident_id.to_string(),
                })
                .await?;
        }
        _ => {
            let mut client = pb::dispatch_service_client::DispatchServiceClient::with_interceptor(
                channel,
                bearer.clone(),
            );
            client
                .list_units(pb::ListUnitsRequest {
                    namespace,
                    unit_type: String::new(),
                })
                .await?;
        }
    }
    Ok(())
}

/// The fill's incident ids: `INC-<date>-<sequence>`, the sequences between first and last.
#[derive(Clone)]
struct IdRange {
    prefix: String,
    first: u64,
    last: u64,
}

impl IdRange {
    fn parse(first: &str, last: &str) -> Result<IdRange> {
        let split = |id: &str| -> Result<(String, u64)> {
            let (prefix, sequence) = id
                .rsplit_once('-')
                .ok_or_else(|| anyhow!("{id:?} is not INC-<date>-<n>"))?;
            Ok((prefix.to_string(), sequence.parse()?))
        };
        let (prefix, first) = split(first)?;
        let (_, last) = split(last)?;
        Ok(IdRange {
            prefix,
            first,
            last: last.max(first),
        })
    }

    /// A pseudo-random id of the range (ids of a fill that crossed midnight may not exist).
    fn pick(&self, i: u64) -> String {
        let span = self.last - self.first + 1;
        let sequence = self.first + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % span;
        format!("{}-{sequence:06}", self.prefix)
    }
}

/// `reads` random reads of the service's own record for an incident; (done, errors, p50, p99).
async fn random_reads(
    name: &'static str,
    channel: Channel,
    bearer: &Bearer,
    namespace: &str,
    ids: &IdRange,
    reads: u64,
    concurrency: usize,
) -> (u64, u64, f64, f64) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (channel, bearer, next, ids) =
            (channel.clone(), bearer.clone(), next.clone(), ids.clone());
        let namespace = namespace.to_string();
        workers.push(tokio::spawn(async move {
            let mut latencies_ms = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= reads {
                    break;
                }
                let incident_id = ids.pick(i);
                let started = Instant::now();
                if read_one(name, channel.clone(), &bearer, &namespace, incident_id)
                    .await
                    .is_err()
                {
                    errors += 1;
                }
                latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            (latencies_ms, errors)
        }));
    }
    let mut latencies_ms = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((mut done, failed)) = worker.await {
            latencies_ms.append(&mut done);
            errors += failed;
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        if latencies_ms.is_empty() {
            return 0.0;
        }
        let index = ((latencies_ms.len() as f64 * q).ceil() as usize).clamp(1, latencies_ms.len());
        latencies_ms[index - 1]
    };
    (
        latencies_ms.len() as u64,
        errors,
        quantile(0.5),
        quantile(0.99),
    )
}

/// One read; NOT_FOUND counts as answered (a fill that crossed midnight has gaps in its ids).
async fn read_one(
    name: &str,
    channel: Channel,
    bearer: &Bearer,
    namespace: &str,
    incident_id: String,
) -> Result<()> {
    let namespace = namespace.to_string();
    let answer = match name {
        "intake" => pb::intake_service_client::IntakeServiceClient::with_interceptor(
            channel,
            bearer.clone(),
        )
        .max_decoding_message_size(64 * 1024 * 1024)
        .get_incident(pb::GetIncidentRequest {
            namespace,
            incident_id,
        })
        .await
        .map(|_| ()),
        "escalation" => pb::escalation_service_client::EscalationServiceClient::with_interceptor(
            channel,
            bearer.clone(),
        )
        .get_grading(pb::GetGradingRequest {
            namespace,
            incident_id,
        })
        .await
        .map(|_| ()),
        _ => pb::dispatch_service_client::DispatchServiceClient::with_interceptor(
            channel,
            bearer.clone(),
        )
        .get_assignments(pb::GetAssignmentsRequest {
            namespace,
            incident_id,
        })
        .await
        .map(|_| ()),
    };
    match answer {
        Ok(()) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(anyhow!("{status}")),
    }
}

/// `count` officer reports through intake (and on through the pipeline); how many were accepted.
async fn reports(
    channel: Channel,
    bearer: &Bearer,
    namespace: &str,
    count: u64,
    concurrency: usize,
) -> Result<u64> {
    let towns = Arc::new(crate::generate::townships()?);
    let run = format!("restart{}", std::process::id());
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (channel, bearer, next, towns) =
            (channel.clone(), bearer.clone(), next.clone(), towns.clone());
        let (namespace, run) = (namespace.to_string(), run.clone());
        workers.push(tokio::spawn(async move {
            let mut client =
                pb::intake_service_client::IntakeServiceClient::with_interceptor(channel, bearer);
            let mut accepted = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let request = crate::generate::report(i, &run, &namespace, &towns);
                if client.report_incident(request).await.is_ok() {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for worker in workers {
        accepted += worker.await.unwrap_or(0);
    }
    Ok(accepted)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / crate::procs::clock_ticks_per_second()
}

/// A `/proc/<pid>/status` memory line (VmRSS, VmHWM) in MB.
fn rss_mb(pid: u32, field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
