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
}

impl Projection {
    pub fn new(store: Store, changes: broadcast::Sender<Change>) -> Projection {
        Projection {
            store,
            changes,
            pending: HashMap::new(),
            metrics: None,
            pending_latency: HashMap::new(),
        }
    }

    /// Records the end-to-end latency in `metrics`: from the incident's acceptance
    /// (`reported_at_unix_ms`) to the first `units_assigned` that books a unit (its `at_unix_ms`).
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::IntakeMetrics>) -> Projection {
        self.metrics = metrics;
        self
    }
}

impl Handler for Projection {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let key = incident_key(&event.namespace, &event.incident_id);
        // Read with the raw bytes: `UpdateIncident` writes the record too, and the commit below
        // must not overwrite an update it did not see (a conflict re-runs this on fresh state).
        let raw = self
            .store
            .get_raw(&key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        let existing: Option<IncidentRecord> = raw
            .as_ref()
            .map(|raw| store::decode_value(&key, raw))
            .transpose()
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
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
                .put(key, &record)
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        if applied == Applied::Changed {
            self.pending.insert(
                delivery.msg_id.clone(),
                (record, event.body.event_type().to_string()),
            );
        }
        Ok(commit)
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
