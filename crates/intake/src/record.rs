//! The incident record intake keeps: the report plus everything later events added.

use domain::event::{EventBody, Graded, IncidentEvent, IncidentReport, UnitsAssigned};
use serde::{Deserialize, Serialize};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentStatus {
    Reported,
    Graded,
    Responding,
}

/// One line of the incident's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_unix_ms: i64,
    pub event_type: String,
    pub source_service: String,
    pub description: String,
    pub event_id: String,
}

/// What [`IncidentRecord::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was already in the timeline; nothing to write.
    AlreadyThere,
    /// Bookkeeping only (an event id filled in): write it, but watchers saw this change already.
    Quietly,
    /// A change watchers should hear about.
    Changed,
}

/// The read model of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub id: String,
    pub namespace: String,
    pub report: IncidentReport,
    pub status: IncidentStatus,
    pub grading: Option<Graded>,
    pub units: Option<UnitsAssigned>,
    pub timeline: Vec<TimelineEntry>,
    pub reported_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    pub request_id: String,
}

/// `incident/<ns>/<id>`.
pub fn incident_key(namespace: &str, incident_id: &str) -> String {
    format!("incident/{namespace}/{incident_id}")
}

/// `request/<ns>/<request id>`: the idempotency key of a report.
pub fn request_key(namespace: &str, request_id: &str) -> String {
    format!("request/{namespace}/{request_id}")
}

/// `update-request/<ns>/<request id>`: the idempotency key of an update (holds the incident id).
pub fn update_request_key(namespace: &str, request_id: &str) -> String {
    format!("update-request/{namespace}/{request_id}")
}

impl IncidentRecord {
    /// Folds an event into the record.
    pub fn apply(&mut self, event: &IncidentEvent) -> Applied {
        if self
            .timeline
            .iter()
            .any(|entry| entry.event_id == event.event_id && !event.event_id.is_empty())
        {
            return Applied::AlreadyThere;
        }
        let entry = TimelineEntry {
            at_unix_ms: event.at_unix_ms,
            event_type: event.body.event_type().to_string(),
            source_service: event.source_service.clone(),
            description: event.describe(),
            event_id: event.event_id.clone(),
        };
        match &event.body {
            EventBody::Reported(_) => {
                // Intake wrote the reported entry when it accepted the report, before the outbox
                // gave the event its id; fill the id in instead of adding a second entry.
                if let Some(existing) = self
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == "reported" && e.event_id.is_empty())
                {
                    existing.event_id = event.event_id.clone();
                    return Applied::Quietly;
                }
            }
            EventBody::Updated(update) => {
                // Intake wrote the entry and the facts with the update; fill the id in, oldest
                // first (the outbox publishes in commit order).
                if let Some(existing) = self
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == "updated" && e.event_id.is_empty())
                {
                    existing.event_id = event.event_id.clone();
                    return Applied::Quietly;
                }
                // Updated through another intake instance: the event carries the merged facts.
                self.report.facts = update.facts.clone();
            }
            EventBody::Graded(graded) => {
                self.grading = Some(graded.clone());
                if self.status == IncidentStatus::Reported {
                    self.status = IncidentStatus::Graded;
                }
            }
            EventBody::UnitsAssigned(units) => {
                match &mut self.units {
                    Some(existing) => {
                        existing.plan_id = units.plan_id.clone();
                        existing
                            .assignments
                            .retain(|a| !units.released_unit_ids.contains(&a.unit_id));
                        existing
                            .assignments
                            .extend(units.assignments.iter().cloned());
                        existing.shortfalls = units.shortfalls.clone();
                    }
                    None => self.units = Some(units.clone()),
                }
                self.status = IncidentStatus::Responding;
            }
            // Acknowledgement and escalation change who is asked to act, not who leads: the
            // timeline records them.
            EventBody::Acknowledged(_) | EventBody::Escalated(_) => {}
            // A proposal changes nothing until an officer confirms it (then `graded` follows).
            EventBody::DowngradeProposed(_) => {}
            EventBody::LeadChanged(change) => {
                if let Some(grading) = &mut self.grading {
                    grading.lead_code = change.to.code.clone();
                    grading.lead_name = change.to.name.clone();
                    grading.lead_level = change.to.level;
                }
            }
        }
        self.updated_at_unix_ms = self.updated_at_unix_ms.max(event.at_unix_ms);
        self.timeline.push(entry);
        Applied::Changed
    }
}
