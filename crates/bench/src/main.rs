//! muster-bench: drives a running Muster over gRPC and the feed endpoint and measures it.
//!
//! Modes: `report` (officer reports), `feeds` (feed alerts), `surge` (N alerts as fast as
//! possible, correlated into K incidents) and `mixed` (reports, feed alerts and updates).
//! End-to-end latency is from intake's acceptance (the moment ReportIncident answers, or the feed
//! answer that created the incident) to the WatchIncidents event showing the incident
//! RESPONDING (dispatch's `units_assigned`), as an HDR histogram. See docs/BENCHMARKS.md.

mod fill;
mod generate;
mod http;
mod procs;
mod restart;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use muster_proto::v1 as pb;
use muster_proto::v1::intake_service_client::IntakeServiceClient;
use tonic::transport::Channel;

use generate::{FeedFormat, Spot, Township};
use stats::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Officer reports (ReportIncident) with a mix of kinds and townships.
    Report,
    /// Feed alerts over HTTP, each its own incident unless --correlated.
    Feeds,
    /// --count alerts as fast as possible around --epicentres epicentres; time until all linked.
    Surge,
    /// Officer reports, feed alerts and UpdateIncident together (5:3:2).
    Mixed,
    /// No Muster: alerts POSTed flat out to a Prometheus Alertmanager's own API
    /// (`/api/v2/alerts`, --batch alerts per request) at --alertmanager, for the comparison in
    /// docs/BENCHMARKS.md.
    AlertmanagerApi,
    /// No running Muster: put --count incidents into the stores under --data-dir (a stopped
    /// `muster up` directory) through the services' own handlers, the last --open left open.
    Fill,
    /// No Muster: write the sample region with every unit present --copies times into
    /// --region-out, for `muster up --region-dir` (a roster that does not run out in `report`).
    Region,
    /// No running Muster: start nats-server and the three services (`muster serve`) on a filled
    /// --data-dir and measure time to SERVING, to the first answer, and RSS (after --reads
    /// random reads and --reports reports).
    Restart,
    /// No running Muster: count the records and bytes of each stopped store under --data-dir
    /// (intake/, escalation/, dispatch/) by key prefix, beside the directory's size on disk.
    Census,
}

/// Load generator for a running Muster (`muster up`): latency, throughput, errors, CPU and RSS.
#[derive(Debug, Parser)]
#[command(name = "muster-bench", version, about)]
struct Cli {
    #[arg(value_enum)]
    mode: Mode,
    /// Offered rate in requests per second (0: flat out, --concurrency requests in flight).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to offer load, in seconds (not for surge).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight at most (one feed connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Surge: how many alerts.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Surge: how many epicentres (incidents) the alerts correlate into.
    #[arg(long, default_value_t = 4)]
    epicentres: u64,
    /// Feeds and surge: alerts per request (GeoJSON features / Alertmanager alerts; CAP is 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Feeds: format of the alerts.
    #[arg(long, value_enum, default_value_t = FeedFormat::Mix)]
    format: FeedFormat,
    /// Feeds: send alerts that correlate (same time window) instead of distinct incidents.
    #[arg(long)]
    correlated: bool,
    /// Intake's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    intake: String,
    /// Intake's feed listener.
    #[arg(long, default_value = "http://127.0.0.1:50080")]
    feeds: String,
    /// Bearer token for every call (default: $MUSTER_TOKEN, else the file --token-file names).
    #[arg(long, env = "MUSTER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token (`muster up` writes an admin token to <data-dir>/admin.token).
    #[arg(long, default_value = ".muster/admin.token")]
    token_file: std::path::PathBuf,
    /// alertmanager-api: the Alertmanager to post to.
    #[arg(long, default_value = "http://127.0.0.1:9093")]
    alertmanager: String,
    /// gRPC connections to spread requests over (HTTP/2, multiplexed).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Namespace for reports and the watch (`live` or `drill.<id>`).
    #[arg(long, default_value = "live")]
    namespace: String,
    /// After the load, wait up to this many seconds for accepted incidents to reach RESPONDING.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Processes to measure (comma-separated pids). Default: `muster` and `nats-server`
    /// processes found in /proc (preferring a muster whose command line names the intake port).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// fill, restart and census: the `muster up` data directory (its intake/, escalation/ and
    /// dispatch/ stores).
    #[arg(long, default_value = ".muster")]
    data_dir: std::path::PathBuf,
    /// fill: how many of the incidents (the newest) stay open; the rest are closed.
    #[arg(long, default_value_t = 1_000)]
    open: u64,
    /// fill: closed incidents that go through the services' handlers; the other closed ones
    /// are copies of their records under new ids (a million through the handlers takes hours).
    #[arg(long, default_value_t = 2_000)]
    templates: u64,
    /// restart: the muster binary (default: `muster` beside this one).
    #[arg(long)]
    muster: Option<std::path::PathBuf>,
    /// restart: the nats-server binary.
    #[arg(long, default_value = "nats-server")]
    nats_server: std::path::PathBuf,
    /// restart: random reads per service after the start.
    #[arg(long, default_value_t = 20_000)]
    reads: u64,
    /// restart: reports through the pipeline after the reads.
    #[arg(long, default_value_t = 2_000)]
    reports: u64,
    /// region: how many times each of the sample's 49 units is present.
    #[arg(long, default_value_t = 20)]
    copies: u32,
    /// region: the directory to write the four region files into.
    #[arg(long, default_value = "bench-region")]
    region_out: std::path::PathBuf,
    /// restart: serve /metrics too (intake then counts open incidents at startup).
    #[arg(long)]
    metrics: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.mode == Mode::AlertmanagerApi {
        let results = alertmanager_api(&cli).await?;
        return print_json(&results, cli.json.as_deref());
    }
    if cli.mode == Mode::Fill {
        let report = fill::run(&fill::FillOptions {
            data_dir: cli.data_dir.clone(),
            count: cli.count,
            open: cli.open,
            templates: cli.templates,
            namespace: cli.namespace.clone(),
        })
        .await?;
        // `restart` reads the incident ids from here.
        std::fs::write(
            cli.data_dir.join("fill.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        return print_json(&report, cli.json.as_deref());
    }
    if cli.mode == Mode::Region {
        std::fs::create_dir_all(&cli.region_out)
            .with_context(|| format!("create {}", cli.region_out.display()))?;
        for (name, text) in generate::scaled_region(cli.copies)? {
            let path = cli.region_out.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
        println!(
            "{}: the sample region with each unit present {} times",
            cli.region_out.display(),
            cli.copies
        );
        return Ok(());
    }
    if cli.mode == Mode::Census {
        let results = census(&cli.data_dir)?;
        return print_json(&results, cli.json.as_deref());
    }
    if cli.mode == Mode::Restart {
        let results = restart_mode(&cli).await?;
        return print_json(&results, cli.json.as_deref());
    }
    let results = run(cli.clone_for_json(), &cli).await?;
    print!("{}", stats::table(&results));
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Prints a mode's results as JSON, and writes them to `--json` when given.
fn print_json(results: &impl serde::Serialize, json: Option<&std::path::Path>) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(results)?);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(results)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `census`: per service, the rows of [`store::Store::census`] and their totals beside the
/// directory's size on disk (the difference is sled's own overhead and not yet reclaimed space).
fn census(data_dir: &std::path::Path) -> Result<serde_json::Value> {
    let mut services = serde_json::Map::new();
    for service in ["intake", "escalation", "dispatch"] {
        let path = data_dir.join(service);
        if !path.is_dir() {
            continue;
        }
        let on_disk = fill::dir_bytes(&path);
        let store =
            store::Store::open(&path).with_context(|| format!("open {}", path.display()))?;
        let rows = store.census()?;
        let (keys, values) = rows.iter().fold((0, 0), |(k, v), row| {
            (k + row.key_bytes, v + row.value_bytes)
        });
        services.insert(
            service.to_string(),
            serde_json::json!({
                "bytes_on_disk": on_disk,
                "key_bytes": keys,
                "value_bytes": values,
                "rows": rows,
            }),
        );
    }
    if services.is_empty() {
        anyhow::bail!(
            "{} holds none of intake/, escalation/, dispatch/",
            data_dir.display()
        );
    }
    Ok(serde_json::Value::Object(services))
}

/// `restart`: the fill's ids from `<data-dir>/fill.json`, the token from `<data-dir>/admin.token`.
async fn restart_mode(cli: &Cli) -> Result<serde_json::Value> {
    let fill_json = cli.data_dir.join("fill.json");
    let fill: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&fill_json)
            .with_context(|| format!("read {} (run `fill` first)", fill_json.display()))?,
    )?;
    let id = |field: &str| -> Result<String> {
        fill[field]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{} has no {field}", fill_json.display()))
    };
    let token = match &cli.token {
        Some(token) => token.clone(),
        None => std::fs::read_to_string(cli.data_dir.join("admin.token"))
            .context("read <data-dir>/admin.token")?,
    };
    let muster = match &cli.muster {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("muster"),
    };
    restart::run(&restart::RestartOptions {
        data_dir: cli.data_dir.clone(),
        muster,
        nats_server: cli.nats_server.clone(),
        token: token.trim().to_string(),
        namespace: cli.namespace.clone(),
        reads: cli.reads,
        reports: cli.reports,
        concurrency: cli.concurrency,
        metrics: cli.metrics,
        first_incident_id: id("first_incident_id")?,
        last_incident_id: id("last_incident_id")?,
    })
    .await
}

/// Posts alerts to Alertmanager's API flat out with --concurrency connections for --duration
/// seconds: alerts accepted per second, errors, and request latency percentiles.
async fn alertmanager_api(cli: &Cli) -> Result<serde_json::Value> {
    anyhow::ensure!(cli.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(cli.batch > 0, "--batch must be at least 1");
    let endpoint = http::Endpoint::parse(&cli.alertmanager)?;
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cli.duration);
    let run = format!("{:x}", std::process::id());
    let mut workers = Vec::new();
    for _ in 0..cli.concurrency {
        let (endpoint, accepted, errors, next, latencies, run) = (
            endpoint.clone(),
            accepted.clone(),
            errors.clone(),
            next.clone(),
            latencies.clone(),
            run.clone(),
        );
        let batch = cli.batch;
        workers.push(tokio::spawn(async move {
            let mut client = http::Client::new(endpoint);
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // Distinct label sets, so Alertmanager stores every alert (no dedup by fingerprint).
                let alerts: Vec<serde_json::Value> = (0..batch as u64)
                    .map(|k| {
                        serde_json::json!({
                            "labels": {"alertname": "GasLeak", "site": "chem-park",
                                       "bench": run, "n": format!("{}", i * batch as u64 + k)},
                            "annotations": {"summary": "H2S over limit"},
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&alerts).expect("json");
                let sent = Instant::now();
                match client
                    .post("/api/v2/alerts", "application/json", &body)
                    .await
                {
                    Ok(response) if response.status == 200 => {
                        accepted.fetch_add(batch as u64, Ordering::Relaxed);
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        let _ = latencies.lock().expect("histogram").record(micros);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let histogram = latencies.lock().expect("histogram");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "mode": "alertmanager-api",
        "alertmanager": cli.alertmanager,
        "concurrency": cli.concurrency,
        "batch": cli.batch,
        "elapsed_s": elapsed,
        "alerts_accepted": accepted.load(Ordering::Relaxed),
        "alerts_per_s": accepted.load(Ordering::Relaxed) as f64 / elapsed,
        "request_errors": errors.load(Ordering::Relaxed),
        "request_latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": histogram.max() as f64 / 1000.0},
    }))
}

impl Cli {
    fn clone_for_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode, "rate": self.rate, "duration_s": self.duration,
            "concurrency": self.concurrency, "count": self.count, "epicentres": self.epicentres,
            "batch": self.batch, "format": self.format, "correlated": self.correlated,
            "intake": self.intake, "feeds": self.feeds, "connections": self.connections,
            "namespace": self.namespace,
        })
    }
}

/// Puts `authorization: Bearer <token>` on every gRPC call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Intake = IntakeServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// What every worker shares.
struct Ctx {
    bearer: Bearer,
    cli_rate: f64,
    end: Option<Instant>,
    count: Option<u64>,
    start: Instant,
    next: AtomicU64,
    channels: Vec<Channel>,
    feeds: http::Endpoint,
    towns: Vec<Township>,
    run: String,
    namespace: String,
    now_ms: i64,
    stats: Arc<Stats>,
    /// Incidents reported so far, for UpdateIncident in mixed mode.
    reported: std::sync::Mutex<Vec<String>>,
}

async fn run(options: serde_json::Value, cli: &Cli) -> Result<serde_json::Value> {
    anyhow::ensure!(cli.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(cli.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(cli.epicentres > 0, "--epicentres must be at least 1");
    let towns = generate::townships()?;
    let token = match &cli.token {
        Some(token) => token.trim().to_string(),
        None => std::fs::read_to_string(&cli.token_file)
            .with_context(|| {
                format!(
                    "no token: pass --token, set MUSTER_TOKEN, or point --token-file at the admin.token `muster up` wrote ({} is not readable)",
                    cli.token_file.display()
                )
            })?
            .trim()
            .to_string(),
    };
    let bearer = Bearer(
        format!("Bearer {token}")
            .parse()
            .context("the token is not ASCII")?,
    );
    let feeds = http::Endpoint::parse(&cli.feeds)?.with_authorization(format!("Bearer {token}"));
    let mut channels = Vec::new();
    for _ in 0..cli.connections.max(1) {
        let channel = Channel::from_shared(cli.intake.clone())
            .context("--intake is not a URL")?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connect to intake at {}", cli.intake))?;
        channels.push(channel);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let run = format!("{:x}{:x}", std::process::id(), now_ms % 0xFFFF_FFFF);
    let stats = Arc::new(Stats::new());

    // One watch for the whole run, opened before any load so no change is missed.
    let watch = {
        let mut client = IntakeServiceClient::with_interceptor(channels[0].clone(), bearer.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let stream = client
            .watch_incidents(pb::WatchIncidentsRequest {
                namespace: cli.namespace.clone(),
            })
            .await
            .context("WatchIncidents")?
            .into_inner();
        let stats = stats.clone();
        tokio::spawn(stats::watch(stream, stats))
    };

    let watched = if cli.pids.is_empty() {
        let port = cli
            .intake
            .rsplit(':')
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        procs::discover(&format!(":{port}"))
    } else {
        procs::from_pids(&cli.pids)
    };
    let sampler = procs::Sampler::start(watched);

    let start = Instant::now();
    let surge = cli.mode == Mode::Surge;
    let ctx = Arc::new(Ctx {
        bearer,
        cli_rate: cli.rate,
        end: (!surge).then(|| start + Duration::from_secs_f64(cli.duration)),
        count: surge.then(|| cli.count.div_ceil(cli.batch as u64)),
        start,
        next: AtomicU64::new(0),
        channels,
        feeds,
        towns,
        run,
        namespace: cli.namespace.clone(),
        now_ms,
        stats: stats.clone(),
        reported: std::sync::Mutex::new(Vec::new()),
    });
    let mut workers = Vec::new();
    for _ in 0..cli.concurrency {
        let ctx = ctx.clone();
        let mode = cli.mode;
        let format = cli.format;
        let batch = cli.batch;
        let correlated = cli.correlated;
        let epicentres = cli.epicentres;
        let total = cli.count;
        workers.push(tokio::spawn(async move {
            worker(ctx, mode, format, batch, correlated, epicentres, total).await
        }));
    }
    for w in workers {
        w.await.context("worker panicked")?;
    }
    let load_elapsed = start.elapsed();

    // Surge: poll the incidents the alerts went to until their alert counts add up.
    let mut surge_result = serde_json::Value::Null;
    if surge {
        surge_result = wait_linked(&ctx, start, cli.drain.max(30.0)).await?;
    }
    // Let the incidents accepted last reach RESPONDING.
    let drain_until = Instant::now() + Duration::from_secs_f64(cli.drain);
    while stats.pending() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let processes = sampler.finish().await;
    watch.abort();
    Ok(stats.results(options, load_elapsed, processes, surge_result))
}

/// Takes request slots until the duration or count runs out; with --rate, slot `i` is due at
/// start + i/rate and its latency counts from then (no coordinated omission).
async fn worker(
    ctx: Arc<Ctx>,
    mode: Mode,
    format: FeedFormat,
    batch: usize,
    correlated: bool,
    epicentres: u64,
    total: u64,
) {
    let mut feed_client = http::Client::new(ctx.feeds.clone());
    loop {
        let i = ctx.next.fetch_add(1, Ordering::Relaxed);
        if ctx.count.is_some_and(|count| i >= count) {
            break;
        }
        let due = if ctx.cli_rate > 0.0 {
            ctx.start + Duration::from_secs_f64(i as f64 / ctx.cli_rate)
        } else {
            Instant::now()
        };
        if ctx.end.is_some_and(|end| due >= end) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let channel = ctx.channels[(i as usize) % ctx.channels.len()].clone();
        let mut client = IntakeServiceClient::with_interceptor(channel, ctx.bearer.clone());
        match mode {
            Mode::Report => report(&ctx, &mut client, i, due).await,
            Mode::Feeds => {
                let spots = feed_spots(&ctx, i, batch, correlated);
                let format = rotate(format, i);
                feed(
                    &ctx,
                    &mut feed_client,
                    format,
                    i * batch as u64,
                    &spots,
                    due,
                )
                .await;
            }
            Mode::Surge => {
                let first = i * batch as u64;
                let n = (total - first).min(batch as u64);
                let spots: Vec<Spot> = (first..first + n)
                    .map(|k| surge_spot(&ctx, k, epicentres))
                    .collect();
                feed(
                    &ctx,
                    &mut feed_client,
                    FeedFormat::Geojson,
                    first,
                    &spots,
                    due,
                )
                .await;
            }
            Mode::Mixed => match i % 10 {
                0..=4 => report(&ctx, &mut client, i, due).await,
                5..=7 => {
                    let spots = feed_spots(&ctx, i, 1, false);
                    let format = rotate(FeedFormat::Mix, i / 10);
                    feed(&ctx, &mut feed_client, format, i, &spots, due).await;
                }
                _ => {
                    let target = {
                        let reported = ctx.reported.lock().expect("lock");
                        (!reported.is_empty())
                            .then(|| reported[(i as usize / 10) % reported.len()].clone())
                    };
                    match target {
                        Some(id) => update(&ctx, &mut client, i, &id, due).await,
                        None => report(&ctx, &mut client, i, due).await,
                    }
                }
            },
            // Handled by `alertmanager_api` before any Muster connection is made.
            Mode::AlertmanagerApi => unreachable!("alertmanager-api does not drive Muster"),
            Mode::Fill | Mode::Restart | Mode::Region | Mode::Census => {
                unreachable!("fill, restart, region and census run without a workload")
            }
        }
    }
}

fn rotate(format: FeedFormat, i: u64) -> FeedFormat {
    match format {
        FeedFormat::Mix => match i % 3 {
            0 => FeedFormat::Geojson,
            1 => FeedFormat::Alertmanager,
            _ => FeedFormat::Cap,
        },
        other => other,
    }
}

/// Alerts `i*batch ..`: at township centroids (jittered), each in its own 4-hour slot unless
/// correlated (then all now).
fn feed_spots(ctx: &Ctx, i: u64, batch: usize, correlated: bool) -> Vec<Spot> {
    (0..batch as u64)
        .map(|k| {
            let n = i * batch as u64 + k;
            let town = &ctx.towns[(n as usize) % ctx.towns.len()];
            let time_ms = if correlated {
                ctx.now_ms
            } else {
                ctx.now_ms - (n as i64 + 1) * generate::SPREAD_MS
            };
            Spot {
                lat: town.lat + 0.01 * generate::jitter(n, 1),
                lon: town.lon + 0.01 * generate::jitter(n, 2),
                time_ms,
            }
        })
        .collect()
}

/// Surge alert `k`: near epicentre k % K; epicentres are 4 hours apart so they never merge.
fn surge_spot(ctx: &Ctx, k: u64, epicentres: u64) -> Spot {
    let e = k % epicentres;
    let town = &ctx.towns[(e as usize) % ctx.towns.len()];
    Spot {
        lat: town.lat + 0.02 * generate::jitter(k, 3),
        lon: town.lon + 0.02 * generate::jitter(k, 4),
        time_ms: ctx.now_ms - e as i64 * generate::SPREAD_MS
            + (generate::jitter(k, 5) * 60_000.0) as i64,
    }
}

async fn report(ctx: &Ctx, client: &mut Intake, i: u64, due: Instant) {
    let request = generate::report(i, &ctx.run, &ctx.namespace, &ctx.towns);
    match client.report_incident(request).await {
        Ok(answer) => {
            let accepted = Instant::now();
            ctx.stats.request_latency(accepted - due);
            let answer = answer.into_inner();
            ctx.stats.count("report");
            if !answer.duplicate {
                ctx.stats.accepted_incident(&answer.incident_id, accepted);
                ctx.reported.lock().expect("lock").push(answer.incident_id);
            }
        }
        Err(status) => ctx.stats.error(format!("grpc {:?}", status.code())),
    }
}

async fn update(ctx: &Ctx, client: &mut Intake, i: u64, incident_id: &str, due: Instant) {
    match client
        .update_incident(generate::update(i, &ctx.run, &ctx.namespace, incident_id))
        .await
    {
        Ok(_) => {
            ctx.stats.request_latency(due.elapsed());
            ctx.stats.count("update");
        }
        Err(status) => ctx.stats.error(format!("grpc {:?}", status.code())),
    }
}

async fn feed(
    ctx: &Ctx,
    client: &mut http::Client,
    format: FeedFormat,
    first: u64,
    spots: &[Spot],
    due: Instant,
) {
    let magnitude = 5.0;
    let request = generate::feed_request(format, first, spots, &ctx.run, magnitude);
    let path = format!("/v1/feeds/{}", request.format);
    match client
        .post(&path, request.content_type, &request.body)
        .await
    {
        Ok(response) => {
            let accepted = Instant::now();
            ctx.stats.request_latency(accepted - due);
            if response.status != 200 {
                ctx.stats.error(format!("http {}", response.status));
                return;
            }
            ctx.stats.count(&format!("feed_request_{}", request.format));
            ctx.stats.feed_answer(&response.body, accepted);
        }
        Err(e) => ctx.stats.error(format!("io {}", short(&e.to_string()))),
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// Surge: until the alert counts of the incidents the alerts went to add up to the alerts
/// accepted (created + correlated), polling GetIncident every 100 ms.
async fn wait_linked(ctx: &Ctx, start: Instant, limit_s: f64) -> Result<serde_json::Value> {
    let sent_at = start.elapsed();
    let expected = ctx.stats.linked_alerts();
    let ids = ctx.stats.surge_incidents();
    let mut client =
        IntakeServiceClient::with_interceptor(ctx.channels[0].clone(), ctx.bearer.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(limit_s);
    let mut counted;
    loop {
        counted = 0u64;
        for id in &ids {
            let answer = client
                .get_incident(pb::GetIncidentRequest {
                    namespace: ctx.namespace.clone(),
                    incident_id: id.clone(),
                })
                .await
                .with_context(|| format!("GetIncident {id}"))?;
            counted += answer
                .into_inner()
                .incident
                .map(|incident| incident.alert_count)
                .unwrap_or(0);
        }
        if counted >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let linked_at = start.elapsed();
    Ok(serde_json::json!({
        "alerts_sent": ctx.stats.alerts_answered(),
        "alerts_linked_expected": expected,
        "alerts_linked_counted": counted,
        "incidents": ids.len(),
        "all_answered_s": sent_at.as_secs_f64(),
        "all_linked_s": linked_at.as_secs_f64(),
        "complete": counted >= expected,
    }))
}
