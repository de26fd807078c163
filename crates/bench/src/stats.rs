//! Counters, errors and HDR histograms, the watch that closes each end-to-end measurement, and
//! the printed table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use muster_proto::v1 as pb;

use crate::procs::ProcStats;

/// Microseconds, 1 µs .. 10 min, 3 significant digits (±0.1 %).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

pub struct Stats {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Intake acceptance → WatchIncidents event with status RESPONDING.
    e2e: Histogram<u64>,
    /// Due time → answer, per request (gRPC call or feed POST).
    request: Histogram<u64>,
    counts: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    /// Accepted incidents not yet seen RESPONDING.
    pending: HashMap<String, Instant>,
    /// RESPONDING seen before the acceptance was recorded (the answer still on its way to us).
    early: HashMap<String, Instant>,
    responded_with_units: u64,
    responded_shortfall_only: u64,
    accepted_incidents: u64,
    alerts_answered: u64,
    alerts_linked: u64,
    surge_incidents: BTreeSet<String>,
    watch_events: u64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            inner: Mutex::new(Inner {
                e2e: histogram(),
                request: histogram(),
                counts: BTreeMap::new(),
                errors: BTreeMap::new(),
                outcomes: BTreeMap::new(),
                pending: HashMap::new(),
                early: HashMap::new(),
                responded_with_units: 0,
                responded_shortfall_only: 0,
                accepted_incidents: 0,
                alerts_answered: 0,
                alerts_linked: 0,
                surge_incidents: BTreeSet::new(),
                watch_events: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stats lock")
    }

    pub fn request_latency(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).max(1);
        let _ = self.lock().request.record(micros);
    }

    pub fn count(&self, what: &str) {
        *self.lock().counts.entry(what.to_string()).or_default() += 1;
    }

    pub fn error(&self, what: String) {
        *self.lock().errors.entry(what).or_default() += 1;
    }

    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn linked_alerts(&self) -> u64 {
        self.lock().alerts_linked
    }

    pub fn alerts_answered(&self) -> u64 {
        self.lock().alerts_answered
    }

    pub fn surge_incidents(&self) -> Vec<String> {
        self.lock().surge_incidents.iter().cloned().collect()
    }

    /// A new incident accepted at `at`: its end-to-end clock starts.
    pub fn accepted_incident(&self, incident_id: &str, at: Instant) {
        let mut inner = self.lock();
        inner.accepted_incidents += 1;
        if let Some(seen) = inner.early.remove(incident_id) {
            let micros = (seen.saturating_duration_since(at).as_micros() as u64).max(1);
            let _ = inner.e2e.record(micros);
        } else {
            inner.pending.insert(incident_id.to_string(), at);
        }
    }

    /// A 200 answer from the feed listener: per-alert outcomes; `created` starts a clock.
    pub fn feed_answer(&self, body: &[u8], at: Instant) {
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
            self.error("feed answer not JSON".into());
            return;
        };
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        let mut created = Vec::new();
        {
            let mut inner = self.lock();
            for result in &results {
                let outcome = result["outcome"].as_str().unwrap_or("?").to_string();
                inner.alerts_answered += 1;
                if let Some(id) = result["incident_id"].as_str()
                    && (outcome == "created" || outcome == "correlated")
                {
                    inner.alerts_linked += 1;
                    inner.surge_incidents.insert(id.to_string());
                    if outcome == "created" {
                        created.push(id.to_string());
                    }
                }
                *inner.outcomes.entry(outcome).or_default() += 1;
            }
        }
        for id in created {
            self.accepted_incident(&id, at);
        }
    }

    fn responding(&self, incident: &pb::Incident, at: Instant) {
        let mut inner = self.lock();
        inner.watch_events += 1;
        if incident.status != pb::IncidentStatus::Responding as i32 {
            return;
        }
        let with_units = incident
            .units
            .as_ref()
            .is_some_and(|units| !units.assignments.is_empty());
        if let Some(accepted) = inner.pending.remove(&incident.id) {
            let micros = (at.saturating_duration_since(accepted).as_micros() as u64).max(1);
            let _ = inner.e2e.record(micros);
            if with_units {
                inner.responded_with_units += 1;
            } else {
                inner.responded_shortfall_only += 1;
            }
        } else if !inner.early.contains_key(&incident.id) && inner.early.len() < 1_000_000 {
            inner.early.insert(incident.id.clone(), at);
        }
    }

    pub fn results(
        &self,
        options: serde_json::Value,
        load: Duration,
        processes: Vec<ProcStats>,
        surge: serde_json::Value,
    ) -> serde_json::Value {
        let inner = self.lock();
        let secs = load.as_secs_f64().max(1e-9);
        let requests: u64 = inner.counts.values().sum();
        let errors: u64 = inner.errors.values().sum();
        let accepted_alerts: u64 = inner
            .outcomes
            .iter()
            .filter(|(outcome, _)| outcome.as_str() != "ignored")
            .map(|(_, n)| n)
            .sum();
        serde_json::json!({
            "options": options,
            "load_seconds": secs,
            "requests_ok": requests,
            "requests_ok_per_s": requests as f64 / secs,
            "requests_by_kind": inner.counts,
            "feed_alerts_accepted": accepted_alerts,
            "feed_alerts_accepted_per_s": accepted_alerts as f64 / secs,
            "feed_outcomes": inner.outcomes,
            "incidents_accepted": inner.accepted_incidents,
            "incidents_accepted_per_s": inner.accepted_incidents as f64 / secs,
            "incidents_responding_with_units": inner.responded_with_units,
            "incidents_responding_shortfall_only": inner.responded_shortfall_only,
            "incidents_not_responding_in_time": inner.pending.len(),
            "errors_total": errors,
            "errors": inner.errors,
            "watch_events": inner.watch_events,
            "e2e_latency_ms": summary(&inner.e2e),
            "request_latency_ms": summary(&inner.request),
            "surge": surge,
            "processes": processes,
        })
    }
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    serde_json::json!({
        "samples": h.len(),
        "min": ms(if h.is_empty() { 0 } else { h.min() }),
        "mean": h.mean() / 1000.0,
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// Reads the one WatchIncidents stream until the run ends.
pub async fn watch(
    mut stream: tonic::Streaming<pb::WatchIncidentsResponse>,
    stats: std::sync::Arc<Stats>,
) {
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let at = Instant::now();
                if let Some(incident) = message.incident {
                    stats.responding(&incident, at);
                }
            }
            Ok(None) => {
                stats.error("watch stream ended".into());
                break;
            }
            Err(status) => {
                stats.error(format!("watch grpc {:?}", status.code()));
                break;
            }
        }
    }
}

/// The human-readable table.
pub fn table(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let o = &r["options"];
    out.push_str(&format!(
        "muster-bench {} rate={} duration={}s concurrency={} batch={} format={}\n",
        o["mode"].as_str().unwrap_or("?"),
        o["rate"],
        o["duration_s"],
        o["concurrency"],
        o["batch"],
        o["format"].as_str().unwrap_or("?"),
    ));
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "  load            {:.2} s\n  requests ok     {} ({:.0}/s)\n  incidents       {} accepted ({:.0}/s); RESPONDING: {} with units, {} shortfall only; {} not in time\n  feed alerts     {} accepted ({:.0}/s)  outcomes {}\n  errors          {}  {}\n",
        f(&r["load_seconds"]),
        r["requests_ok"], f(&r["requests_ok_per_s"]),
        r["incidents_accepted"], f(&r["incidents_accepted_per_s"]),
        r["incidents_responding_with_units"], r["incidents_responding_shortfall_only"],
        r["incidents_not_responding_in_time"],
        r["feed_alerts_accepted"], f(&r["feed_alerts_accepted_per_s"]), r["feed_outcomes"],
        r["errors_total"], r["errors"],
    ));
    out.push_str("  latency (ms)        samples      p50      p90      p99    p99.9      max\n");
    for (label, key) in [
        ("accept→RESPONDING", "e2e_latency_ms"),
        ("request", "request_latency_ms"),
    ] {
        let h = &r[key];
        out.push_str(&format!(
            "  {label:<18} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            h["samples"],
            f(&h["p50"]),
            f(&h["p90"]),
            f(&h["p99"]),
            f(&h["p99_9"]),
            f(&h["max"]),
        ));
    }
    if !r["surge"].is_null() {
        let s = &r["surge"];
        out.push_str(&format!(
            "  surge           {} alerts into {} incidents: all answered {:.2} s, all linked {:.2} s ({} of {} counted){}\n",
            s["alerts_sent"], s["incidents"], f(&s["all_answered_s"]), f(&s["all_linked_s"]),
            s["alerts_linked_counted"], s["alerts_linked_expected"],
            if s["complete"].as_bool() == Some(true) { "" } else { "  INCOMPLETE" },
        ));
    }
    out.push_str(
        "  process                  pid   cpu s  cpu% avg  cpu% peak  RSS start/end/peak MB\n",
    );
    for p in r["processes"].as_array().into_iter().flatten() {
        let mb = |key: &str| p[key].as_u64().unwrap_or(0) as f64 / 1024.0;
        out.push_str(&format!(
            "  {:<22} {:>6} {:>7.2} {:>9.0} {:>10.0}  {:.0}/{:.0}/{:.0}\n",
            p["name"].as_str().unwrap_or("?"),
            p["pid"],
            f(&p["cpu_seconds"]),
            f(&p["cpu_percent_avg"]),
            f(&p["cpu_percent_peak"]),
            mb("rss_start_kb"),
            mb("rss_end_kb"),
            mb("rss_peak_kb"),
        ));
    }
    out
}
