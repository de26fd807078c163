//! `muster rebuild dispatch`: the unit records and assignment records folded back from the stream.
//!
//! Dispatch's decisions are not re-run (a recommendation depends on where every unit was at that
//! moment); their results are on the stream and are folded instead:
//! - unit records: the region's units seeded as at first start, then every `UnitEvent` on
//!   `muster.<ns>.unit.<id>.status` (registered, updated, retired, status changes, positions);
//!   a unit still dispatched gets its acknowledgement deadline and timer record back;
//! - assignment records: the incident's place from `graded`, the units and shortfalls from each
//!   `units_assigned` (released units leave for `ended`, with the outcome and reason of the unit's
//!   status change in the same commit), `closed`, and the mutual-aid numbering.
//!
//! The message ids of everything dispatch's durable consumers take (`graded` and `closed` for
//! the assigner, unit positions, unit commands) are recorded as processed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bus::replay::{ConsumerFloors, Rebuild, RebuildReport, ReplayError, StreamEvent};
use bus::subjects;
use domain::event::{Assignment, EventBody, IncidentEvent};
use domain::region::Region;
use domain::unit::{UnitEvent, UnitStatus};
use muster_proto::convert_unit::UnitChange;
use store::{Commit, Store};

use crate::assignment::{AssignmentOutcome, ENDED_ASSIGNMENTS_MAX, EndedAssignment};
use crate::driver::{AssignmentRecord, assignment_key};
use crate::registry::{Retirement, UnitRecord, unit_key};

/// Dispatch's durable consumers, by purpose: the inputs they took before the loss are marked
/// processed, the rest are left to them.
pub const CONSUMERS: &[&str] = &["assigner", "positions", "commands"];

/// What the stream cannot give back to dispatch; printed by `muster rebuild dispatch`.
pub const NOT_REBUILT: &[&str] = &[
    "mutual-aid request records (`mutual-aid/<ns>/<incident>/<request>`): ListMutualAid shows \
     only requests made after the rebuild; the units they brought stay assigned, and the \
     request numbering continues after the highest number on the stream",
    "when the region's units were first seeded: units no event ever changed show the rebuild's \
     time as their status and position time",
    "the recorded inputs of past recommendations (`decision/<ns>/<incident>/...` and the \
     board log `board/<ns>/...`): ReplayRecommendations (musterctl replay) covers only \
     bookings made after the rebuild",
    "the audit chain: a new chain starts with the rebuilt store",
];

/// How a status change's cause names the way a unit left its incident.
fn outcome_of_cause(cause: &str) -> Option<AssignmentOutcome> {
    let incident_id = String::new();
    let event = match cause {
        "decline" => UnitEvent::Decline {
            incident_id,
            reason: String::new(),
        },
        "acknowledgement_timed_out" => UnitEvent::AcknowledgementTimedOut { incident_id },
        "release" => UnitEvent::Release { incident_id },
        "go_out_of_service" => UnitEvent::GoOutOfService {
            reason: String::new(),
        },
        _ => return None,
    };
    AssignmentOutcome::of(&event)
}

/// How a unit left an incident, from its status change, until the `units_assigned` that
/// announces it.
struct Leaving {
    outcome: AssignmentOutcome,
    reason: Option<String>,
}

pub struct DispatchRebuild {
    store: Store,
    namespace: String,
    ack_timeout_ms: i64,
    floors: ConsumerFloors,
    units: BTreeMap<String, UnitRecord>,
    assignments: BTreeMap<String, AssignmentRecord>,
    /// `(incident, unit)` → how it left, from the unit's status change.
    leaving: HashMap<(String, String), Leaving>,
    /// Incidents whose `closed` was seen: the reason, for the releases that follow.
    closing: HashMap<String, String>,
    /// Message ids dispatch's consumers take.
    processed: Vec<String>,
    unit_events: u64,
    incident_events: u64,
}

impl DispatchRebuild {
    /// `ack_timeout_ms`: the acknowledgement timeout dispatch runs with, for the deadlines of
    /// units still dispatched; `floors`: how far its consumers got. The region's units are
    /// seeded at `now_unix_ms`.
    pub fn new(
        store: Store,
        region: Arc<Region>,
        namespace: &str,
        ack_timeout_ms: i64,
        floors: ConsumerFloors,
        now_unix_ms: i64,
    ) -> DispatchRebuild {
        let units = region
            .units
            .iter()
            .map(|unit| {
                (
                    unit.id.clone(),
                    UnitRecord::new(unit.clone(), now_unix_ms, now_unix_ms),
                )
            })
            .collect();
        DispatchRebuild {
            store,
            namespace: namespace.to_string(),
            ack_timeout_ms,
            floors,
            units,
            assignments: BTreeMap::new(),
            leaving: HashMap::new(),
            closing: HashMap::new(),
            processed: Vec::new(),
            unit_events: 0,
            incident_events: 0,
        }
    }

    fn unit_event(&mut self, event: &StreamEvent) -> Result<(), ReplayError> {
        let record = muster_proto::convert_unit::decode_unit_event(&event.delivery.payload)
            .map_err(|problem| ReplayError::bad(event, problem))?;
        let at = record.at_unix_ms;
        let unit_id = record.unit_id.clone();
        self.unit_events += 1;
        match record.change {
            UnitChange::Registered {
                unit,
                position_at_unix_ms,
            } => {
                self.units
                    .insert(unit_id, UnitRecord::new(unit, position_at_unix_ms, at));
            }
            change => {
                let Some(unit) = self.units.get_mut(&unit_id) else {
                    return Err(ReplayError::bad(
                        event,
                        format!("unit {unit_id:?} is neither in the region nor registered before"),
                    ));
                };
                match change {
                    UnitChange::Registered { .. } => unreachable!("handled above"),
                    UnitChange::Updated {
                        unit: updated,
                        position_at_unix_ms,
                    } => {
                        unit.unit = updated;
                        unit.position_at_unix_ms = position_at_unix_ms;
                    }
                    UnitChange::Retired { reason } => {
                        unit.retired = Some(Retirement {
                            reason,
                            at_unix_ms: at,
                        });
                    }
                    UnitChange::PositionReported {
                        position,
                        at_unix_ms,
                    } => {
                        unit.report_position(position, at_unix_ms);
                    }
                    UnitChange::StatusChanged { change, cause } => {
                        // The state the domain machine reached, as the event records it.
                        let state = &mut unit.state;
                        state.status = change.to;
                        state.incident_id = if change.to.is_committed() {
                            change.incident_id.clone()
                        } else {
                            None
                        };
                        state.out_of_service_reason = if change.to == UnitStatus::OutOfService {
                            change.reason.clone()
                        } else {
                            None
                        };
                        state.since_unix_ms = change.at_unix_ms;
                        unit.ack_due_at_unix_ms = (change.to == UnitStatus::Dispatched)
                            .then(|| change.at_unix_ms.saturating_add(self.ack_timeout_ms));
                        if change.from.is_committed()
                            && let (Some(incident_id), Some(outcome)) =
                                (&change.incident_id, outcome_of_cause(&cause))
                        {
                            self.leaving.insert(
                                (incident_id.clone(), unit_id.clone()),
                                Leaving {
                                    outcome,
                                    reason: change.reason.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn incident_event(&mut self, event: &StreamEvent) -> Result<(), ReplayError> {
        let delivery = &event.delivery;
        let incident: IncidentEvent =
            muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
                .map_err(|problem| ReplayError::bad(event, problem))?;
        let namespace = self.namespace.clone();
        let record = |assignments: &mut BTreeMap<String, AssignmentRecord>| -> AssignmentRecord {
            assignments
                .remove(&incident.incident_id)
                .unwrap_or_else(|| AssignmentRecord::empty(&namespace, &incident.incident_id))
        };
        match &incident.body {
            EventBody::Graded(graded) => {
                if self.floors.handled("assigner", event.stream_sequence) {
                    self.processed.push(delivery.msg_id.clone());
                }
                let mut record = record(&mut self.assignments);
                // What the assigner notes before it books (a closed incident gets nothing).
                if record.closed_at_unix_ms.is_none() {
                    let report = &graded.report;
                    record.location = Some(report.location);
                    record.township_code = Some(report.township_code.clone());
                    record.lead_code = Some(graded.lead_code.clone());
                    record.kind = Some(report.kind.clone());
                    record.grade = graded.grade;
                }
                self.assignments
                    .insert(incident.incident_id.clone(), record);
            }
            EventBody::Closed(_) if !self.floors.handled("assigner", event.stream_sequence) => {
                // The assigner has not released the incident's units yet: it will.
                return Ok(());
            }
            EventBody::Closed(closed) => {
                self.processed.push(delivery.msg_id.clone());
                let mut record = record(&mut self.assignments);
                if record.closed_at_unix_ms.is_none() {
                    // Dispatch's own time of the close is on its `units_assigned`, if it
                    // released any unit; the close's time stands in otherwise.
                    record.closed_at_unix_ms = Some(incident.at_unix_ms);
                    record.shortfalls.clear();
                    self.closing
                        .insert(incident.incident_id.clone(), closed.reason.clone());
                }
                self.assignments
                    .insert(incident.incident_id.clone(), record);
            }
            EventBody::UnitsAssigned(units) => {
                let mut record = record(&mut self.assignments);
                record.plan_id = units.plan_id.clone();
                let closing = self.closing.get(&incident.incident_id).cloned();
                for unit_id in &units.released_unit_ids {
                    let Some(index) = record
                        .assignments
                        .iter()
                        .position(|a| &a.unit_id == unit_id)
                    else {
                        continue;
                    };
                    let left: Assignment = record.assignments.remove(index);
                    let leaving = self
                        .leaving
                        .remove(&(incident.incident_id.clone(), unit_id.clone()));
                    let (outcome, reason) = match (&closing, leaving) {
                        (Some(reason), _) => (
                            AssignmentOutcome::Released,
                            format!("incident closed: {reason}"),
                        ),
                        (None, Some(leaving)) => (
                            leaving.outcome,
                            leaving
                                .reason
                                .unwrap_or_else(|| leaving.outcome.default_reason().to_string()),
                        ),
                        (None, None) => (
                            AssignmentOutcome::Released,
                            AssignmentOutcome::Released.default_reason().to_string(),
                        ),
                    };
                    record.aid_request_by_unit.remove(unit_id);
                    record.ended.push(EndedAssignment {
                        unit_id: unit_id.clone(),
                        call_sign: left.call_sign,
                        unit_type: left.unit_type,
                        outcome,
                        reason,
                        at_unix_ms: incident.at_unix_ms,
                    });
                }
                if record.ended.len() > ENDED_ASSIGNMENTS_MAX {
                    let excess = record.ended.len() - ENDED_ASSIGNMENTS_MAX;
                    record.ended.drain(..excess);
                }
                record.assignments.extend(units.assignments.iter().cloned());
                if closing.is_some() {
                    record.closed_at_unix_ms = Some(incident.at_unix_ms);
                    record.shortfalls.clear();
                    self.closing.remove(&incident.incident_id);
                } else {
                    record.shortfalls = units.shortfalls.clone();
                }
                self.assignments
                    .insert(incident.incident_id.clone(), record);
            }
            EventBody::MutualAidRequested(aid)
            | EventBody::MutualAidCommitted(aid)
            | EventBody::MutualAidDeclined(aid)
            | EventBody::MutualAidReleased(aid) => {
                let mut record = record(&mut self.assignments);
                if let Some(number) = aid
                    .request_id
                    .rsplit_once("-MA")
                    .and_then(|(_, n)| n.parse::<u32>().ok())
                {
                    record.mutual_aid_seq = record.mutual_aid_seq.max(number);
                }
                if let EventBody::MutualAidCommitted(_) = &incident.body {
                    for unit_id in &aid.unit_ids {
                        record
                            .aid_request_by_unit
                            .insert(unit_id.clone(), aid.request_id.clone());
                    }
                }
                self.assignments
                    .insert(incident.incident_id.clone(), record);
            }
            // Intake's and escalation's other events change nothing dispatch keeps.
            _ => return Ok(()),
        }
        self.incident_events += 1;
        Ok(())
    }
}

impl Rebuild for DispatchRebuild {
    fn apply(&mut self, event: &StreamEvent) -> Result<(), ReplayError> {
        let subject = &event.delivery.subject;
        if let Some((namespace, _, kind)) = subjects::parse_unit_event(subject) {
            if namespace != self.namespace {
                return Ok(());
            }
            return match kind {
                subjects::UNIT_STATUS => self.unit_event(event),
                // Inputs: their effects are the status events folded above.
                subjects::UNIT_POSITION | subjects::UNIT_COMMAND => {
                    let purpose = if kind == subjects::UNIT_POSITION {
                        "positions"
                    } else {
                        "commands"
                    };
                    if self.floors.handled(purpose, event.stream_sequence) {
                        self.processed.push(event.delivery.msg_id.clone());
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
        }
        if let Some(parsed) = subjects::parse_incident_event(subject) {
            if parsed.namespace != self.namespace {
                return Ok(());
            }
            return self.incident_event(event);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RebuildReport, ReplayError> {
        let namespace = &self.namespace;
        let mut commit = Commit::new();
        let mut dispatched = 0u64;
        for (unit_id, mut unit) in self.units.clone() {
            if unit.state.status == UnitStatus::Dispatched
                && let (Some(due), Some(incident_id)) =
                    (unit.ack_due_at_unix_ms, unit.state.incident_id.clone())
            {
                crate::assignment::arm_ack_timer(
                    &mut commit,
                    namespace,
                    &incident_id,
                    &mut unit,
                    due,
                )?;
                dispatched += 1;
            }
            commit.put(unit_key(namespace, &unit_id), &unit)?;
        }
        for (incident_id, record) in &self.assignments {
            commit.put(assignment_key(namespace, incident_id), record)?;
        }
        self.store.commit(&commit)?;
        let processed = self
            .store
            .mark_processed(self.processed.iter().map(String::as_str))?;
        let busy = self
            .units
            .values()
            .filter(|unit| unit.state.status.is_committed())
            .count();
        let retired = self.units.values().filter(|unit| unit.is_retired()).count();
        Ok(RebuildReport {
            counts: vec![
                ("units".into(), self.units.len() as u64),
                ("of them committed".into(), busy as u64),
                ("of them retired".into(), retired as u64),
                ("awaiting acknowledgement".into(), dispatched),
                ("assignment records".into(), self.assignments.len() as u64),
                ("unit events folded".into(), self.unit_events),
                ("incident events folded".into(), self.incident_events),
            ],
            processed_ids: processed as u64,
            skipped: Vec::new(),
            not_rebuilt: NOT_REBUILT.iter().map(|s| s.to_string()).collect(),
        })
    }
}
