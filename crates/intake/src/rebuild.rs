//! `muster rebuild intake`: intake's incident read model folded back from the stream with the
//! projection's own code, and the incident numbering set above every id the stream names.
//!
//! The `reported` event carries the whole report, so the projection builds each record the way it
//! does for an incident another intake instance accepted; every later event folds in as it did
//! live. Every incident event's message id is recorded as processed, so the `projection` durable
//! consumer skips what it redelivers.

use bus::replay::{Rebuild, RebuildReport, ReplayError, Replayed, StreamEvent, replay_handler};
use bus::subjects;
use store::{Commit, Store};

use crate::driver::Projection;
use crate::record::{IncidentRecord, incident_key, sequence_key};

/// Intake's durable consumers on the event stream, by purpose. The projection IS the rebuild:
/// every incident event is folded and marked processed, whether the lost store had taken it or
/// not.
pub const CONSUMERS: &[&str] = &["projection"];

/// What the stream cannot give back to intake; printed by `muster rebuild intake`.
pub const NOT_REBUILT: &[&str] = &[
    "report idempotency keys (`request/<ns>/<request id>`, `update-request/...`): a client retrying \
     a report or update it sent before the loss gets a new incident or update",
    "feed state: dedup keys (`feed-dedup/...`), alert records (each naming its incident), \
     correlation windows, parked updates and feed heartbeats; a feed resending an old alert opens \
     a new incident, and alert numbers (ALR-...) start again at 1",
    "legal holds (set over gRPC, not announced on the stream)",
    "the audit chain: a new chain starts with the rebuilt store",
];

pub struct IntakeRebuild {
    store: Store,
    namespace: String,
    projection: Projection,
    /// The highest incident number among the ids on the stream (`INC-<date>-<number>`).
    max_sequence: u64,
    events: u64,
    duplicates: u64,
}

impl IntakeRebuild {
    pub fn new(store: Store, namespace: &str) -> IntakeRebuild {
        // Nobody watches a rebuild; the projection's announcements go nowhere.
        let (changes, _) = tokio::sync::broadcast::channel(1);
        IntakeRebuild {
            projection: Projection::new(store.clone(), changes),
            store,
            namespace: namespace.to_string(),
            max_sequence: 0,
            events: 0,
            duplicates: 0,
        }
    }
}

/// The number of an incident id `INC-<yyyymmdd>-<number>`, if it is one.
pub fn incident_sequence(incident_id: &str) -> Option<u64> {
    let rest = incident_id.strip_prefix("INC-")?;
    let (date, number) = rest.split_once('-')?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

impl Rebuild for IntakeRebuild {
    fn apply(&mut self, event: &StreamEvent) -> Result<(), ReplayError> {
        // The projection consumes every incident event of the namespace and nothing else.
        let Some(subjects::IncidentSubject {
            namespace,
            incident_id,
            ..
        }) = subjects::parse_incident_event(&event.delivery.subject)
        else {
            return Ok(());
        };
        if namespace != self.namespace {
            return Ok(());
        }
        if let Some(sequence) = incident_sequence(incident_id) {
            self.max_sequence = self.max_sequence.max(sequence);
        }
        match replay_handler(&self.store, &mut self.projection, event)? {
            Replayed::Applied => self.events += 1,
            Replayed::Duplicate => self.duplicates += 1,
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RebuildReport, ReplayError> {
        if self.max_sequence > 0 {
            // New incidents are numbered after the last one the stream knows.
            let mut commit = Commit::new();
            commit.put(sequence_key(&self.namespace), &self.max_sequence)?;
            self.store.commit(&commit)?;
        }
        let incidents: Vec<(String, IncidentRecord)> =
            self.store.scan_prefix(&incident_key(&self.namespace, ""))?;
        let closed = incidents
            .iter()
            .filter(|(_, r)| r.status == crate::IncidentStatus::Closed)
            .count();
        Ok(RebuildReport {
            counts: vec![
                ("incidents".into(), incidents.len() as u64),
                ("of them closed".into(), closed as u64),
                ("incident events folded".into(), self.events),
                ("duplicate events skipped".into(), self.duplicates),
                ("last incident number".into(), self.max_sequence),
            ],
            processed_ids: self.events + self.duplicates,
            skipped: Vec::new(),
            not_rebuilt: NOT_REBUILT.iter().map(|s| s.to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn incident_numbers_are_read_from_ids() {
        assert_eq!(super::incident_sequence("INC-20261128-000042"), Some(42));
        assert_eq!(
            super::incident_sequence("INC-20261128-1234567"),
            Some(1_234_567)
        );
        assert_eq!(super::incident_sequence("INC-2026-1"), None);
        assert_eq!(super::incident_sequence("ALR-20261128-000001"), None);
    }
}
