//! The incident events that flow between services, in domain terms. Their wire form is
//! `muster.v1.IncidentEvent` (events.proto); `muster-proto`'s `convert` maps between the two.

use serde::{Deserialize, Serialize};

use crate::class::IncidentClass;
use crate::geo::GeoPoint;
use crate::grade::{Facts, Grade};
use crate::jurisdiction::Level;

/// What was reported, as accepted by intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    /// Sub-type code, e.g. `accident.hazardous_chemicals`.
    pub kind: String,
    pub class: IncidentClass,
    pub township_code: String,
    pub other_township_codes: Vec<String>,
    pub location: GeoPoint,
    /// False when `location` is the township centroid.
    pub location_reported: bool,
    pub facts: Facts,
    pub summary: String,
    pub reported_by: String,
}

impl IncidentReport {
    /// Every township the incident touches, the primary one first.
    pub fn township_codes(&self) -> Vec<&str> {
        std::iter::once(self.township_code.as_str())
            .chain(self.other_township_codes.iter().map(String::as_str))
            .collect()
    }
}

/// Escalation's grading decision, with the report it graded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graded {
    pub grade: Option<Grade>,
    pub response_level: Option<u8>,
    pub lead_code: String,
    pub lead_name: String,
    pub lead_level: Level,
    pub rule_id: String,
    pub rule_version: u32,
    pub reason: String,
    pub initial_judgement: bool,
    pub facts: Facts,
    pub report: IncidentReport,
}

/// One unit booked to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub unit_id: String,
    pub call_sign: String,
    pub unit_type: String,
    pub distance_km: f64,
    pub reason: String,
}

/// A plan requirement that could not be met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub unit_type: String,
    pub required: u32,
    pub assigned: u32,
    pub reason: String,
}

/// Dispatch's answer to a graded incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsAssigned {
    /// Empty when no plan matched (then `shortfalls` says so).
    pub plan_id: String,
    pub assignments: Vec<Assignment>,
    pub shortfalls: Vec<Shortfall>,
}

/// A jurisdiction named in an event: code, name and level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JurisdictionRef {
    pub code: String,
    pub name: String,
    pub level: Level,
}

/// The level asked to acknowledge did so; its escalation chain stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub by: String,
    pub jurisdiction: JurisdictionRef,
}

/// The next level up is now asked to acknowledge (command does not move).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalated {
    pub from: JurisdictionRef,
    pub to: JurisdictionRef,
    pub reason: String,
    /// True for an officer's `Escalate`, false when a deadline passed.
    pub manual: bool,
}

/// Command moved: the handover names both parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadChanged {
    pub from: JurisdictionRef,
    pub to: JurisdictionRef,
    /// `regrade` or `take_command`.
    pub reason: String,
}

/// The body of an incident event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    Reported(IncidentReport),
    Graded(Graded),
    UnitsAssigned(UnitsAssigned),
    Acknowledged(Acknowledged),
    Escalated(Escalated),
    LeadChanged(LeadChanged),
}

impl EventBody {
    /// The last token of the event's subject.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventBody::Reported(_) => "reported",
            EventBody::Graded(_) => "graded",
            EventBody::UnitsAssigned(_) => "units_assigned",
            EventBody::Acknowledged(_) => "acknowledged",
            EventBody::Escalated(_) => "escalated",
            EventBody::LeadChanged(_) => "lead_changed",
        }
    }
}

/// An incident event: the envelope every service publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// Equal to the `Nats-Msg-Id` it was published with; empty before the outbox assigns it.
    pub event_id: String,
    pub incident_id: String,
    pub namespace: String,
    pub at_unix_ms: i64,
    pub source_service: String,
    pub body: EventBody,
}

impl IncidentEvent {
    /// A readable one-line description for timelines.
    pub fn describe(&self) -> String {
        match &self.body {
            EventBody::Reported(report) => {
                let mut facts = Vec::new();
                let f = &report.facts;
                if let Some(n) = f.deaths {
                    facts.push(format!("{n} dead"));
                }
                if let Some(n) = f.missing {
                    facts.push(format!("{n} missing"));
                }
                if let Some(n) = f.serious_injuries {
                    facts.push(format!("{n} seriously injured"));
                }
                if let Some(n) = f.direct_loss_cny {
                    facts.push(format!("loss {n} CNY"));
                }
                if let Some(m) = f.magnitude {
                    facts.push(format!("M{m:.1}"));
                }
                let facts = if facts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", facts.join(", "))
                };
                format!(
                    "{} reported in {} by {}{facts}",
                    report.kind, report.township_code, report.reported_by
                )
            }
            EventBody::Graded(graded) => {
                let grade = graded
                    .grade
                    .map_or("ungraded".to_string(), |g| format!("grade {}", g.roman()));
                let level = graded
                    .response_level
                    .map_or(String::new(), |l| format!(", response level {l}"));
                let initial = if graded.initial_judgement {
                    " (initial judgement)"
                } else {
                    ""
                };
                format!(
                    "{grade}{initial}{level}; lead {} ({}); rule {} v{}: {}",
                    graded.lead_name,
                    graded.lead_code,
                    graded.rule_id,
                    graded.rule_version,
                    graded.reason
                )
            }
            EventBody::UnitsAssigned(units) => {
                let ids: Vec<&str> = units
                    .assignments
                    .iter()
                    .map(|a| a.unit_id.as_str())
                    .collect();
                let mut text = format!(
                    "{} units assigned under plan {}: {}",
                    ids.len(),
                    units.plan_id,
                    ids.join(", ")
                );
                for gap in &units.shortfalls {
                    text.push_str(&format!(
                        "; short {} of {} {} ({})",
                        gap.required - gap.assigned,
                        gap.required,
                        gap.unit_type,
                        gap.reason
                    ));
                }
                text
            }
            EventBody::Acknowledged(ack) => format!(
                "acknowledged by {} for {} ({}, {})",
                ack.by,
                ack.jurisdiction.name,
                ack.jurisdiction.code,
                ack.jurisdiction.level.as_str()
            ),
            EventBody::Escalated(escalated) => format!(
                "escalated from {} ({}) to {} ({}): {}{}",
                escalated.from.name,
                escalated.from.code,
                escalated.to.name,
                escalated.to.code,
                escalated.reason,
                if escalated.manual { " (by hand)" } else { "" }
            ),
            EventBody::LeadChanged(change) => format!(
                "command handed from {} ({}) to {} ({}): {}",
                change.from.name, change.from.code, change.to.name, change.to.code, change.reason
            ),
        }
    }
}
