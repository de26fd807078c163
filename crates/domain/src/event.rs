//! The incident events that flow between services, in domain terms. Their wire form is
//! `muster.v1.IncidentEvent` (events.proto); `muster-proto`'s `convert` maps between the two.

use serde::{Deserialize, Serialize};

use crate::class::IncidentClass;
use crate::geo::GeoPoint;
use crate::grade::{Facts, Grade, WarningLevel};
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
    /// Warning level 预警级别, where the source gave one (CAP severity, a feed's severity label).
    #[serde(default)]
    pub warning: Option<WarningLevel>,
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
    /// Machine-readable reasons, see [`crate::dispatch::reason_code`]: `closest_by_eta`,
    /// `in_jurisdiction` or `outside_jurisdiction`, and where they apply `assumed_speed`,
    /// `replacement`, `dispatcher_assigned`. Empty in records stored before codes existed.
    #[serde(default)]
    pub reason_codes: Vec<String>,
    /// Estimated travel time when booked, minutes (0 when unknown).
    #[serde(default)]
    pub eta_minutes: f64,
    /// How many jurisdiction levels up from the incident's county the unit came from: 0 the same
    /// county, 1 another county of the same city, 2 another city of the same province, ...
    #[serde(default)]
    pub cascade_depth: u32,
}

/// One cause of a shortfall and the number of candidate units it excluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortfallCause {
    /// e.g. `busy`, `stale_position`, `outside_radius`, `out_of_service`.
    pub code: String,
    pub count: u32,
}

/// A plan requirement that could not be met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub unit_type: String,
    pub required: u32,
    pub assigned: u32,
    pub reason: String,
    /// Machine-readable reasons: always `none_available` (no candidate was left), then the codes
    /// of `causes` and, where they apply, `none_in_region`, `fewer_in_region_than_required`,
    /// `no_plan`, `no_location`. Empty in records stored before codes existed.
    #[serde(default)]
    pub reason_codes: Vec<String>,
    /// Units of the type excluded, per cause.
    #[serde(default)]
    pub causes: Vec<ShortfallCause>,
}

/// Dispatch's answer to a graded incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsAssigned {
    /// Empty when no plan matched (then `shortfalls` says so).
    pub plan_id: String,
    pub assignments: Vec<Assignment>,
    pub shortfalls: Vec<Shortfall>,
    /// Units that left the incident with this event (declined, timed out, released).
    #[serde(default)]
    pub released_unit_ids: Vec<String>,
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

/// New facts about an incident, accepted by intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdated {
    /// The incident's facts after the update (the stored ones with the given fields replaced).
    pub facts: Facts,
    pub updated_by: String,
    /// What changed, in the reporter's words; may be empty.
    pub summary: String,
    /// The incident's warning level after the update (unchanged ones repeat the stored level).
    #[serde(default)]
    pub warning: Option<WarningLevel>,
}

/// The incident is over for Muster: its source withdrew or cleared it (a feed that resumed, a
/// cancelled alert). Escalation stops its clocks; dispatch releases its units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentClosed {
    pub by: String,
    pub reason: String,
}

/// New facts call for a lower grade; it applies only once an officer confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowngradeProposed {
    pub from: Option<Grade>,
    pub to: Option<Grade>,
    /// The rule's reason for the proposed grade.
    pub reason: String,
}

/// 越级上报: a lower level reported past its parent. Audited on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipLevelReported {
    /// The officer who made the report.
    pub officer: String,
    pub from: JurisdictionRef,
    pub to: JurisdictionRef,
    /// The levels passed over, lowest first (never empty).
    pub skipped: Vec<JurisdictionRef>,
    pub reason: String,
    /// The met report obligation recording it (`ListDeadlines`).
    pub obligation_id: u32,
}

/// One step of a mutual-aid request (EDXL-RM): requested, committed, declined or released.
/// `from` is the requesting (lead) jurisdiction, `to` the one asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutualAid {
    pub request_id: String,
    pub from: JurisdictionRef,
    pub to: JurisdictionRef,
    pub resource_type: String,
    /// Units asked for (requested, declined), sent (committed) or returned (released).
    pub quantity: u32,
    /// The units committed or released; empty for requested and declined.
    pub unit_ids: Vec<String>,
    /// A decline's reason code (`none_available`, `reserve`), `partial` for a commitment of fewer
    /// units than asked; empty otherwise.
    pub reason_code: String,
    /// In words.
    pub reason: String,
    /// 1 for a sibling of the lead, 2 for a sibling of its parent, ...
    pub cascade_depth: u32,
}

/// The body of an incident event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    Reported(IncidentReport),
    Graded(Graded),
    UnitsAssigned(UnitsAssigned),
    Updated(IncidentUpdated),
    Acknowledged(Acknowledged),
    Escalated(Escalated),
    LeadChanged(LeadChanged),
    DowngradeProposed(DowngradeProposed),
    Closed(IncidentClosed),
    SkipLevelReported(SkipLevelReported),
    MutualAidRequested(MutualAid),
    MutualAidCommitted(MutualAid),
    MutualAidDeclined(MutualAid),
    MutualAidReleased(MutualAid),
}

impl EventBody {
    /// The last token of the event's subject.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventBody::Reported(_) => "reported",
            EventBody::Graded(_) => "graded",
            EventBody::UnitsAssigned(_) => "units_assigned",
            EventBody::Updated(_) => "updated",
            EventBody::Acknowledged(_) => "acknowledged",
            EventBody::Escalated(_) => "escalated",
            EventBody::LeadChanged(_) => "lead_changed",
            EventBody::DowngradeProposed(_) => "downgrade_proposed",
            EventBody::Closed(_) => "closed",
            EventBody::SkipLevelReported(_) => "skip_level_reported",
            EventBody::MutualAidRequested(_) => "mutual_aid_requested",
            EventBody::MutualAidCommitted(_) => "mutual_aid_committed",
            EventBody::MutualAidDeclined(_) => "mutual_aid_declined",
            EventBody::MutualAidReleased(_) => "mutual_aid_released",
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
                let facts = describe_facts(&report.facts);
                let facts = if facts.is_empty() {
                    String::new()
                } else {
                    format!(" ({facts})")
                };
                let place = if report.township_code.is_empty() {
                    "an unknown location"
                } else {
                    &report.township_code
                };
                let warning = report
                    .warning
                    .map_or(String::new(), |w| format!(", {} warning", w.as_str()));
                format!(
                    "{} reported in {place} by {}{facts}{warning}",
                    report.kind, report.reported_by
                )
            }
            EventBody::Updated(update) => {
                let facts = describe_facts(&update.facts);
                let mut text = format!(
                    "facts updated by {}: {}",
                    update.updated_by,
                    if facts.is_empty() {
                        "none known"
                    } else {
                        &facts
                    }
                );
                if !update.summary.is_empty() {
                    text.push_str(&format!(" ({})", update.summary));
                }
                text
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
                if !units.released_unit_ids.is_empty() {
                    text = format!(
                        "{} left ({}); {text}",
                        units.released_unit_ids.len(),
                        units.released_unit_ids.join(", ")
                    );
                }
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
            EventBody::Closed(closed) => format!("closed by {}: {}", closed.by, closed.reason),
            EventBody::SkipLevelReported(skip) => format!(
                "skip-level report by {} from {} ({}) to {} ({}), past {}: {}",
                skip.officer,
                skip.from.name,
                skip.from.code,
                skip.to.name,
                skip.to.code,
                skip.skipped
                    .iter()
                    .map(|j| format!("{} ({})", j.name, j.code))
                    .collect::<Vec<_>>()
                    .join(", "),
                skip.reason
            ),
            EventBody::MutualAidRequested(aid) => format!(
                "mutual aid {}: {} ({}) asks {} ({}) for {} {} (cascade depth {})",
                aid.request_id,
                aid.from.name,
                aid.from.code,
                aid.to.name,
                aid.to.code,
                aid.quantity,
                aid.resource_type,
                aid.cascade_depth
            ),
            EventBody::MutualAidCommitted(aid) => format!(
                "mutual aid {}: {} ({}) commits {} {} to {}: {}{}",
                aid.request_id,
                aid.to.name,
                aid.to.code,
                aid.quantity,
                aid.resource_type,
                aid.from.name,
                aid.unit_ids.join(", "),
                if aid.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", aid.reason)
                }
            ),
            EventBody::MutualAidDeclined(aid) => format!(
                "mutual aid {}: {} ({}) declines {} {}: {}",
                aid.request_id,
                aid.to.name,
                aid.to.code,
                aid.quantity,
                aid.resource_type,
                aid.reason
            ),
            EventBody::MutualAidReleased(aid) => format!(
                "mutual aid {}: {} {} released back to {} ({}): {}",
                aid.request_id,
                aid.quantity,
                aid.resource_type,
                aid.to.name,
                aid.to.code,
                aid.unit_ids.join(", ")
            ),
            EventBody::DowngradeProposed(proposal) => format!(
                "downgrade from {} to {} proposed, awaiting an officer's confirmation: {}",
                grade_text(proposal.from),
                grade_text(proposal.to),
                proposal.reason
            ),
        }
    }
}

/// `3 dead, 1 missing` (empty when nothing is known).
pub fn describe_facts(f: &Facts) -> String {
    let mut facts = Vec::new();
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
    facts.join(", ")
}

fn grade_text(grade: Option<Grade>) -> String {
    grade.map_or("ungraded".to_string(), |g| format!("grade {}", g.roman()))
}
