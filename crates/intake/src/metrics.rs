//! Intake's Prometheus series: feed answers, officers' reports, the end-to-end latency from
//! acceptance to the first booked unit, and open incidents by grade.
//!
//! Open incidents are counted from every change of an incident record that intake announces to
//! its watchers (reports, updates, the feed writer, the projection), so the gauges move with the
//! records. At startup the counts are read from the store's open-incident index
//! ([`crate::record::OPEN_INCIDENTS`]: one small entry per open incident, kept by the commits that
//! write the records), and again whenever the observer falls behind the change channel, so a
//! restart or a lag never leaves them drifted. Reading the index costs O(open incidents), not a
//! pass over every incident record (which paged a million records through sled, 787 MB).
//! Until the read finishes the gauges read 0 (changes meanwhile are applied on top of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lifecycle::metrics::{Counter, Gauge, Histogram, Registry};
use store::Store;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::driver::Change;
use crate::feed::{Answer, Outcome};
use crate::record::{IncidentRecord, IncidentStatus};

pub use crate::record::GRADE_LABELS;

/// Intake's handles into a [`Registry`]; cheap to clone.
#[derive(Clone)]
pub struct IntakeMetrics {
    registry: Registry,
    latency: Histogram,
    open: Arc<Mutex<OpenIncidents>>,
}

struct OpenIncidents {
    /// Open incident id → its grade label.
    grades: HashMap<String, &'static str>,
    gauges: HashMap<&'static str, Gauge>,
}

impl OpenIncidents {
    fn observe(&mut self, record: &IncidentRecord) {
        let now = (record.status != IncidentStatus::Closed).then(|| grade_label(record));
        let before = match now {
            Some(grade) => self.grades.insert(record.id.clone(), grade),
            None => self.grades.remove(&record.id),
        };
        if before != now {
            if let Some(gauge) = before.and_then(|grade| self.gauges.get(grade)) {
                gauge.add(-1);
            }
            if let Some(gauge) = now.and_then(|grade| self.gauges.get(grade)) {
                gauge.add(1);
            }
        }
    }

    /// Replaces every count with `open`: the open incidents and their grade labels.
    fn reset(&mut self, open: HashMap<String, &'static str>) {
        for gauge in self.gauges.values() {
            gauge.set(0);
        }
        for grade in open.values() {
            if let Some(gauge) = self.gauges.get(grade) {
                gauge.add(1);
            }
        }
        self.grades = open;
    }
}

/// The `grade` label of an incident record.
pub fn grade_label(record: &IncidentRecord) -> &'static str {
    crate::record::grade_label_of(record.grading.as_ref().map(|graded| graded.grade))
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Correlated => "correlated",
        Outcome::Duplicate => "duplicate",
        Outcome::Applied => "applied",
        Outcome::Parked => "parked",
        Outcome::Ignored => "ignored",
    }
}

impl IntakeMetrics {
    pub fn new(registry: Registry) -> IntakeMetrics {
        let latency = registry.histogram(
            "muster_incident_latency_seconds",
            "End-to-end latency from intake accepting an incident to dispatch's first units_assigned booking a unit, as seen by intake's projection.",
            &[],
        );
        let gauges = GRADE_LABELS
            .iter()
            .map(|grade| {
                let gauge = registry.gauge(
                    "muster_open_incidents",
                    "Incidents not closed, by grade (none: below every threshold; pending: not graded yet).",
                    &[("grade", grade)],
                );
                (*grade, gauge)
            })
            .collect();
        // Reports show up at 0 before the first one.
        for outcome in ["accepted", "duplicate", "rejected", "unavailable"] {
            report_counter(&registry, outcome);
        }
        IntakeMetrics {
            registry,
            latency,
            open: Arc::new(Mutex::new(OpenIncidents {
                grades: HashMap::new(),
                gauges,
            })),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a feed message's answer: each accepted alert by outcome, or the rejection's code
    /// (`unavailable` for a 503 / nak: nothing stored, retry).
    pub fn feed_answer(&self, format: feeds::Format, feed: Option<&str>, answer: &Answer) {
        match answer {
            Answer::Accepted(results) => {
                for result in results {
                    self.feed_alert(format, feed, result.outcome).inc();
                }
            }
            Answer::Rejected(rejection) => self.feed_rejected(format, rejection.code.as_str()),
            Answer::Unavailable(_) => self.feed_rejected(format, "unavailable"),
        }
    }

    fn feed_alert(&self, format: feeds::Format, feed: Option<&str>, outcome: Outcome) -> Counter {
        self.registry.counter(
            "muster_feed_alerts_total",
            "Feed alerts accepted, by feed, format and outcome (duplicate: a resend deduplicated).",
            &[
                ("feed", feed.unwrap_or("none")),
                ("format", format.as_str()),
                ("outcome", outcome_label(outcome)),
            ],
        )
    }

    fn feed_rejected(&self, format: feeds::Format, code: &str) {
        self.registry
            .counter(
                "muster_feed_rejected_total",
                "Feed messages rejected (4xx, NATS term) or refused for now (code unavailable: 503, NATS nak), by format and code.",
                &[("format", format.as_str()), ("code", code)],
            )
            .inc();
    }

    /// Counts an officer's report: `accepted`, `duplicate` (a retry answered with the first
    /// incident), `rejected` (invalid or another namespace), `unavailable` (anything else).
    pub fn report(&self, outcome: &str) {
        report_counter(&self.registry, outcome).inc();
    }

    /// Records one incident's end-to-end latency.
    pub fn incident_latency(&self, seconds: f64) {
        self.latency.observe(seconds.max(0.0));
    }

    /// Folds an incident record's current state into the open-incident gauges.
    pub fn observe_incident(&self, record: &IncidentRecord) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(record);
    }

    /// Recomputes the open-incident gauges from the store's open-incident index.
    pub fn recount_incidents(&self, store: &Store, namespace: &str) -> Result<(), store::Error> {
        let open = crate::record::open_incidents(store, namespace)?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset(open);
        Ok(())
    }

    /// [`IntakeMetrics::recount_incidents`] on a blocking thread: it reads sled, and thousands of
    /// open incidents must not hold one of the runtime's workers (two on a 2-core machine).
    async fn recount_in_background(&self, store: &Store, namespace: &str) {
        let (metrics, store, namespace) = (self.clone(), store.clone(), namespace.to_string());
        let counted =
            tokio::task::spawn_blocking(move || metrics.recount_incidents(&store, &namespace))
                .await;
        match counted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot count open incidents"),
            Err(error) => tracing::warn!(%error, "open-incident count failed"),
        }
    }

    /// Keeps the open-incident gauges current from intake's change channel until `stop`;
    /// recounts from the index first and whenever it lagged behind the channel.
    pub async fn follow_incidents(
        self,
        store: Store,
        namespace: String,
        mut changes: broadcast::Receiver<Change>,
        stop: CancellationToken,
    ) {
        self.recount_in_background(&store, &namespace).await;
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = changes.recv() => received,
            };
            match received {
                Ok((record, _)) => self.observe_incident(&record),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.recount_in_background(&store, &namespace).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn report_counter(registry: &Registry, outcome: &str) -> Counter {
    registry.counter(
        "muster_reports_total",
        "Officers' ReportIncident calls by outcome.",
        &[("outcome", outcome)],
    )
}
