//! The projection: folds every incident event from the bus into intake's incident records and
//! tells watchers once the change is durable.

use std::collections::HashMap;

use bus::{Delivery, Handler, HandlerError};
use domain::event::EventBody;
use store::{Commit, Store};
use tokio::sync::broadcast;

use crate::record::{
    Applied, IncidentRecord, IncidentStatus, TimelineEntry, append_history, incident_key,
};

/// A change for watchers: the record after the change and the event type that caused it.
pub type Change = (IncidentRecord, String);

pub struct Projection {
    store: Store,
    changes: broadcast::Sender<Change>,
    /// Records committed but not yet durable, keyed by message id, announced in `committed`.
    pending: HashMap<String, Change>,
    metrics: Option<crate::metrics::IntakeMetrics>,
    /// End-to-end latencies (seconds) of deliveries committed but not yet durable.
    pending_latency: HashMap<String, f64>,
    /// In a run (`Handler::begin_run`): the incident records the run's commits write, by key,
    /// read instead of the store's until the run is applied.
    run: Option<HashMap<String, IncidentRecord>>,
    /// In a run: the incidents whose history the run's commits add to.
    run_history: std::collections::HashSet<String>,
}

impl Projection {
    pub fn new(store: Store, changes: broadcast::Sender<Change>) -> Projection {
        Projection {
            store,
            changes,
            pending: HashMap::new(),
            metrics: None,
            pending_latency: HashMap::new(),
            run: None,
            run_history: std::collections::HashSet::new(),
        }
    }

    /// Records the end-to-end latency in `metrics`: from the incident's acceptance
    /// (`reported_at_unix_ms`) to the first `units_assigned` that books a unit (its `at_unix_ms`).
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::IntakeMetrics>) -> Projection {
        self.metrics = metrics;
        self
    }

    /// The commit that folds `delivery`'s event into its incident; `None` in a run when the event
    /// closes an incident whose history the run adds to (folding it reads the history's loose
    /// keys from the store).
    fn project(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let key = incident_key(&event.namespace, &event.incident_id);
        let in_run = self.run.as_ref().and_then(|run| run.get(&key)).cloned();
        // Read with the raw bytes: `UpdateIncident` writes the record too, and the commit below
        // must not overwrite an update it did not see (a conflict re-runs this on fresh state).
        // A record the run writes is the run's: the run's first commit to it holds the
        // expectation (`Commit::absorb` drops this one).
        let (raw, existing) = match in_run {
            Some(record) => (None, Some(record)),
            None => {
                let raw = self
                    .store
                    .get_raw(&key)
                    .map_err(|e| HandlerError::Retry(e.to_string()))?;
                let existing: Option<IncidentRecord> = raw
                    .as_ref()
                    .map(|raw| store::decode_value(&key, raw))
                    .transpose()
                    .map_err(|e| HandlerError::Retry(e.to_string()))?;
                (raw, existing)
            }
        };
        let mut record = match (existing, &event.body) {
            (Some(record), _) => record,
            // Reported by another intake instance: the event carries the whole report.
            (None, EventBody::Reported(report)) => IncidentRecord {
                id: event.incident_id.clone(),
                namespace: event.namespace.clone(),
                report: report.clone(),
                status: IncidentStatus::Reported,
                grading: None,
                units: None,
                timeline: Vec::<TimelineEntry>::new(),
                reported_at_unix_ms: event.at_unix_ms,
                updated_at_unix_ms: event.at_unix_ms,
                request_id: String::new(),
                alert_count: 0,
                open_alert_count: 0,
                recent_alerts: Vec::new(),
                legal_hold: None,
                personal_data_erased_at_unix_ms: None,
            },
            (None, _) => {
                return Err(HandlerError::Poison(format!(
                    "{} event for unknown incident {} in {}",
                    event.body.event_type(),
                    event.incident_id,
                    event.namespace
                )));
            }
        };
        let mut commit = Commit::new();
        // The history keeps every delivered event (redeliveries of a processed one never get
        // here), including the ones the record already reflects, such as intake's own report.
        // It is written below, once the record says whether the incident is closed.
        let arrival = self
            .store
            .generate_id()
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        let first_booking = match &event.body {
            EventBody::UnitsAssigned(units) => {
                !units.assignments.is_empty()
                    && record
                        .units
                        .as_ref()
                        .is_none_or(|held| held.assignments.is_empty())
            }
            _ => false,
        };
        let mut applied = record.apply(&event);
        // The response has ended: the personal data goes with the same commit, unless held.
        if record.personal_data_due_for_erasure() {
            record.erase_personal_data(event.at_unix_ms);
            if applied == Applied::AlreadyThere {
                applied = Applied::Changed;
            }
        }
        if record.status == IncidentStatus::Closed && self.run_history.contains(&key) {
            return Ok(None);
        }
        if first_booking && applied == Applied::Changed && self.metrics.is_some() {
            let latency_ms = event.at_unix_ms - record.reported_at_unix_ms;
            self.pending_latency
                .insert(delivery.msg_id.clone(), latency_ms as f64 / 1000.0);
        }
        // A key per event while the incident is open, one record once it is closed.
        append_history(&self.store, &mut commit, &record, arrival, &event)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        if applied != Applied::AlreadyThere {
            commit.expect_raw(key.clone(), raw);
            commit
                .put(key.clone(), &record)
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        if let Some(run) = &mut self.run {
            self.run_history.insert(key.clone());
            if applied != Applied::AlreadyThere {
                run.insert(key, record.clone());
            }
        }
        if applied == Applied::Changed {
            self.pending.insert(
                delivery.msg_id.clone(),
                (record, event.body.event_type().to_string()),
            );
        }
        Ok(Some(commit))
    }
}

impl Handler for Projection {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        // Outside a run nothing waits for a run to be applied.
        self.end_run();
        self.project(delivery)?
            .ok_or_else(|| HandlerError::Retry("the projection's run was not applied".into()))
    }

    fn begin_run(&mut self) -> bool {
        self.run = Some(HashMap::new());
        self.run_history.clear();
        true
    }

    fn handle_in_run(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        self.project(delivery)
    }

    fn end_run(&mut self) {
        self.run = None;
        self.run_history.clear();
    }

    fn committed(&mut self, delivery: &Delivery) {
        if let Some(seconds) = self.pending_latency.remove(&delivery.msg_id)
            && let Some(metrics) = &self.metrics
        {
            metrics.incident_latency(seconds);
        }
        if let Some(change) = self.pending.remove(&delivery.msg_id) {
            // No watchers is fine; a slow watcher is told it lagged.
            let _ = self.changes.send(change);
        }
    }
}

#[cfg(test)]
mod history_tests;
