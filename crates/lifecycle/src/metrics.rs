//! Prometheus metrics without the prometheus crate: a small registry of counters, gauges and
//! histograms with labels, gauges computed at scrape time by collectors, the text exposition
//! format 0.0.4, and an HTTP listener answering `GET /metrics`.
//!
//! Handles ([`Counter`], [`Gauge`], [`Histogram`]) are atomics behind an `Arc`: take one once,
//! keep it, and updating it costs one atomic operation. Families and their series live in a
//! `Mutex<BTreeMap>` that is locked only to create a series and to render, so the output is
//! sorted and stable. A [`Registry`] is cheap to clone; clones share everything, so one process
//! (`muster up`) can have several services record into one registry, their series told apart
//! by a `service` label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram bucket upper bounds for latencies in seconds, 1 ms to 10 s (`+Inf` is implicit).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A series' labels, in the order given (names are not re-sorted).
pub type Labels = Vec<(String, String)>;

/// The kind of a metric family: the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistogramCore {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus one for `+Inf`.
    buckets: Vec<AtomicU64>,
    /// The sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
    count: AtomicU64,
}

/// Observations counted into fixed buckets, with their sum and count.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(Arc::new(HistogramCore {
            bounds: bounds.to_vec(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }))
    }

    /// Records one observation. NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let core = &self.0;
        let index = core
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(core.bounds.len());
        core.buckets[index].fetch_add(1, Ordering::Relaxed);
        let mut current = core.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match core.sum_bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        core.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum_bits.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

/// One value a collector reports at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: owned(labels),
            value,
        }
    }
}

/// What a collector returns: the samples it computed, when asked at scrape time.
pub type Collected = Pin<Box<dyn Future<Output = Vec<Sample>> + Send>>;
type Collector = Arc<dyn Fn() -> Collected + Send + Sync>;

#[derive(Default)]
struct Inner {
    families: Mutex<BTreeMap<String, Family>>,
    collectors: Mutex<Vec<Collector>>,
}

/// Metric families and their series; clones share them.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep serving it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The counter `name{labels}`, created (and its family described) on first use.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.series(name, help, Kind::Counter, labels, || {
            Series::Counter(Counter::default())
        }) {
            Series::Counter(counter) => counter,
            _ => panic!("metric {name} is not a counter"),
        }
    }

    /// The gauge `name{labels}`, created on first use.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.series(name, help, Kind::Gauge, labels, || {
            Series::Gauge(Gauge::default())
        }) {
            Series::Gauge(gauge) => gauge,
            _ => panic!("metric {name} is not a gauge"),
        }
    }

    /// The histogram `name{labels}` with [`LATENCY_BUCKETS`], created on first use.
    pub fn histogram(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Histogram {
        self.histogram_with_buckets(name, help, labels, &LATENCY_BUCKETS)
    }

    /// The histogram `name{labels}` with these bucket bounds (ascending), created on first use.
    pub fn histogram_with_buckets(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        match self.series(name, help, Kind::Histogram, labels, || {
            Series::Histogram(Histogram::new(bounds))
        }) {
            Series::Histogram(histogram) => histogram,
            _ => panic!("metric {name} is not a histogram"),
        }
    }

    /// Describes a family whose samples come from a collector (see [`Registry::collect`]).
    pub fn describe(&self, name: &str, help: &str, kind: Kind) {
        let mut families = lock(&self.inner.families);
        families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
    }

    /// Adds a collector: run at every scrape, its samples are rendered with the families they
    /// name (describe those first; an undescribed name is rendered as an untyped gauge).
    pub fn collect<F, Fut>(&self, collector: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Sample>> + Send + 'static,
    {
        lock(&self.inner.collectors).push(Arc::new(move || Box::pin(collector()) as Collected));
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        create: impl FnOnce() -> Series,
    ) -> Series {
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert!(
            labels.iter().all(|(label, _)| valid_name(label)),
            "label names of {name}"
        );
        let mut families = lock(&self.inner.families);
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric {name} registered as two kinds");
        family
            .series
            .entry(owned(labels))
            .or_insert_with(create)
            .clone()
    }

    /// Runs the collectors and renders every family in the text exposition format 0.0.4.
    pub async fn render(&self) -> String {
        let collectors: Vec<Collector> = lock(&self.inner.collectors).clone();
        let mut collected: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for collector in collectors {
            for sample in collector().await {
                collected
                    .entry(sample.name.clone())
                    .or_default()
                    .push(sample);
            }
        }
        self.render_with(collected)
    }

    fn render_with(&self, mut collected: BTreeMap<String, Vec<Sample>>) -> String {
        let families = lock(&self.inner.families);
        let mut out = String::new();
        for (name, family) in families.iter() {
            let samples = collected.remove(name).unwrap_or_default();
            if family.series.is_empty() && samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(counter) => {
                        write_sample(&mut out, name, labels, None, counter.get() as f64)
                    }
                    Series::Gauge(gauge) => {
                        write_sample(&mut out, name, labels, None, gauge.get() as f64)
                    }
                    Series::Histogram(histogram) => {
                        write_histogram(&mut out, name, labels, histogram)
                    }
                }
            }
            for sample in samples {
                write_sample(&mut out, name, &sample.labels, None, sample.value);
            }
        }
        // Samples of families nobody described.
        for (name, samples) in collected {
            let _ = writeln!(out, "# TYPE {name} untyped");
            for sample in samples {
                write_sample(&mut out, &name, &sample.labels, None, sample.value);
            }
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn write_histogram(out: &mut String, name: &str, labels: &Labels, histogram: &Histogram) {
    let core = &histogram.0;
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (index, bound) in core.bounds.iter().enumerate() {
        cumulative += core.buckets[index].load(Ordering::Relaxed);
        let le = format_value(*bound);
        write_sample(out, &bucket, labels, Some(&le), cumulative as f64);
    }
    cumulative += core.buckets[core.bounds.len()].load(Ordering::Relaxed);
    write_sample(out, &bucket, labels, Some("+Inf"), cumulative as f64);
    write_sample(out, &format!("{name}_sum"), labels, None, histogram.sum());
    // The count is the +Inf bucket, so the two agree even while observations race the render.
    write_sample(
        out,
        &format!("{name}_count"),
        labels,
        None,
        cumulative as f64,
    );
}

fn write_sample(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, value: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let pairs = labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(le.map(|le| ("le", le)));
        for (label, value) in pairs {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(label);
            out.push_str("=\"");
            out.push_str(&escape_label_value(value));
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

/// A sample value or `le` bound: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's Display never uses an exponent and prints 10.0 as "10".
        format!("{value}")
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// HELP text escapes backslash and line feed.
pub fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Describes and collects what every service's event plumbing exposes: its outbox depth
/// (`muster_outbox_depth{service}`) and its consumers' lag (`muster_consumer_pending{service,
/// consumer}`: messages not yet delivered plus delivered and not yet acknowledged), both read at
/// scrape time. `consumer_lags` returns `(durable name, pending)`; a consumer it cannot ask is
/// left out of that scrape.
pub fn register_pipeline<O, L, Fut>(
    registry: &Registry,
    service: &str,
    outbox_len: O,
    consumer_lags: L,
) where
    O: Fn() -> usize + Send + Sync + 'static,
    L: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<(String, u64)>> + Send + 'static,
{
    registry.describe(
        "muster_outbox_depth",
        "Events committed to the service's outbox and not yet published to JetStream.",
        Kind::Gauge,
    );
    registry.describe(
        "muster_consumer_pending",
        "JetStream consumer lag: messages not yet delivered plus delivered and unacknowledged.",
        Kind::Gauge,
    );
    let outbox_len = Arc::new(outbox_len);
    let consumer_lags = Arc::new(consumer_lags);
    let service = service.to_string();
    registry.collect(move || {
        let (outbox_len, consumer_lags, service) =
            (outbox_len.clone(), consumer_lags.clone(), service.clone());
        async move {
            let mut samples = vec![Sample::new(
                "muster_outbox_depth",
                &[("service", &service)],
                outbox_len() as f64,
            )];
            for (consumer, pending) in consumer_lags().await {
                samples.push(Sample::new(
                    "muster_consumer_pending",
                    &[("service", &service), ("consumer", &consumer)],
                    pending as f64,
                ));
            }
            samples
        }
    });
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener` until `shutdown`.
pub async fn serve(
    registry: Registry,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    async fn metrics(
        axum::extract::State(registry): axum::extract::State<Registry>,
    ) -> axum::response::Response {
        let body = registry.render().await;
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
    }

    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: GET /metrics\n") })
        .with_state(registry);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listener serving");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_help_type_and_sorted_labels() {
        let registry = Registry::new();
        let created = registry.counter(
            "muster_test_total",
            "Things.",
            &[("feed", "a"), ("outcome", "created")],
        );
        created.inc();
        created.inc_by(2);
        // Same labels, same series.
        registry
            .counter(
                "muster_test_total",
                "Things.",
                &[("feed", "a"), ("outcome", "created")],
            )
            .inc();
        registry
            .counter(
                "muster_test_total",
                "Things.",
                &[("feed", "a"), ("outcome", "applied")],
            )
            .inc();
        let gauge = registry.gauge("muster_level", "A level.", &[]);
        gauge.set(7);
        gauge.add(-2);
        let text = registry.render_with(BTreeMap::new());
        assert_eq!(
            text,
            "# HELP muster_level A level.\n\
             # TYPE muster_level gauge\n\
             muster_level 5\n\
             # HELP muster_test_total Things.\n\
             # TYPE muster_test_total counter\n\
             muster_test_total{feed=\"a\",outcome=\"applied\"} 1\n\
             muster_test_total{feed=\"a\",outcome=\"created\"} 4\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let registry = Registry::new();
        registry
            .counter(
                "muster_odd_total",
                "Back\\slash and\nnewline.",
                &[("code", "a\"b\\c\nd")],
            )
            .inc();
        let text = registry.render_with(BTreeMap::new());
        assert!(
            text.contains("# HELP muster_odd_total Back\\\\slash and\\nnewline.\n"),
            "{text}"
        );
        assert!(
            text.contains("muster_odd_total{code=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert_eq!(escape_label_value("plain"), "plain");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let registry = Registry::new();
        let histogram = registry.histogram("muster_latency_seconds", "Latency.", &[]);
        for value in [0.0005, 0.001, 0.2, 3.0, 42.0, f64::NAN] {
            histogram.observe(value);
        }
        let text = registry.render_with(BTreeMap::new());
        let line = |le: &str| {
            let prefix = format!("muster_latency_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_string()
        };
        assert_eq!(line("0.001"), "2", "le is inclusive");
        assert_eq!(line("0.0025"), "2");
        assert_eq!(line("0.1"), "2");
        assert_eq!(line("0.25"), "3");
        assert_eq!(line("2.5"), "3");
        assert_eq!(line("5"), "4");
        assert_eq!(line("10"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(text.contains("# TYPE muster_latency_seconds histogram\n"));
        assert!(text.contains("muster_latency_seconds_count 5\n"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("muster_latency_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 45.2015).abs() < 1e-9, "{sum}");
        assert_eq!(histogram.count(), 5);
        // Bucket lines come in bound order, +Inf last, then _sum and _count.
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(names.len(), LATENCY_BUCKETS.len() + 3);
        assert!(names[LATENCY_BUCKETS.len()].ends_with("le=\"+Inf\"}"));
        assert_eq!(
            names[LATENCY_BUCKETS.len() + 1],
            "muster_latency_seconds_sum"
        );
    }

    #[test]
    fn labelled_histograms_put_le_last() {
        let registry = Registry::new();
        registry
            .histogram_with_buckets("muster_h", "H.", &[("service", "x")], &[1.0])
            .observe(0.5);
        let text = registry.render_with(BTreeMap::new());
        assert!(
            text.contains("muster_h_bucket{service=\"x\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("muster_h_bucket{service=\"x\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("muster_h_sum{service=\"x\"} 0.5\n"));
        assert!(text.contains("muster_h_count{service=\"x\"} 1\n"));
    }

    #[test]
    fn values_format_for_prometheus() {
        assert_eq!(format_value(10.0), "10");
        assert_eq!(format_value(0.0025), "0.0025");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(-3.0), "-3");
    }

    #[tokio::test]
    async fn collectors_run_at_scrape_under_their_described_family() {
        let registry = Registry::new();
        let depth = Arc::new(AtomicU64::new(3));
        let probe = depth.clone();
        register_pipeline(
            &registry,
            "intake",
            move || probe.load(Ordering::Relaxed) as usize,
            || async { vec![("intake-projection-live".to_string(), 4)] },
        );
        registry.describe("muster_empty", "Nothing yet.", Kind::Gauge);
        registry.collect(|| async { vec![Sample::new("muster_stray", &[], 1.0)] });
        let text = registry.render().await;
        assert!(
            text.contains(
                "# TYPE muster_outbox_depth gauge\nmuster_outbox_depth{service=\"intake\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "muster_consumer_pending{service=\"intake\",consumer=\"intake-projection-live\"} 4\n"
        ));
        assert!(
            !text.contains("muster_empty"),
            "families without samples are left out"
        );
        assert!(text.contains("# TYPE muster_stray untyped\nmuster_stray 1\n"));
        depth.store(0, Ordering::Relaxed);
        assert!(
            registry
                .render()
                .await
                .contains("muster_outbox_depth{service=\"intake\"} 0\n")
        );
    }

    #[tokio::test]
    async fn the_listener_answers_get_metrics() {
        let registry = Registry::new();
        registry
            .counter("muster_served_total", "Served.", &[])
            .inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(registry, listener, shutdown.clone()));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).await.unwrap();
            raw
        };
        let answer = get("/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains(&format!(
            "content-type: {}",
            CONTENT_TYPE.to_ascii_lowercase()
        )));
        assert!(answer.contains("muster_served_total 1\n"), "{answer}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
