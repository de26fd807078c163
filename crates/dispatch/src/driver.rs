//! The assigner: turns a `graded` event into unit bookings and a `units_assigned` event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError, subjects};
use domain::event::{Assignment, EventBody, IncidentEvent, Shortfall, UnitsAssigned};
use domain::region::{Region, ResourceRequirement};
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

/// A unit's booking: which incident holds it, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub incident_id: String,
    pub since_unix_ms: i64,
}

/// What dispatch has sent to one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub incident_id: String,
    pub namespace: String,
    pub plan_id: String,
    pub assignments: Vec<Assignment>,
    pub shortfalls: Vec<Shortfall>,
}

/// `booking/<ns>/<unit id>`.
pub fn booking_key(namespace: &str, unit_id: &str) -> String {
    format!("booking/{namespace}/{unit_id}")
}

/// `assignment/<ns>/<incident id>`.
pub fn assignment_key(namespace: &str, incident_id: &str) -> String {
    format!("assignment/{namespace}/{incident_id}")
}

pub struct Assigner {
    store: Store,
    region: Arc<Region>,
}

impl Assigner {
    pub fn new(store: Store, region: Arc<Region>) -> Assigner {
        Assigner { store, region }
    }

    fn booked_units(&self, namespace: &str) -> Result<HashSet<String>, HandlerError> {
        let prefix = booking_key(namespace, "");
        let bookings: Vec<(String, Booking)> = self
            .store
            .scan_prefix(&prefix)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(bookings
            .into_iter()
            .map(|(key, _)| key[prefix.len()..].to_string())
            .collect())
    }
}

impl Handler for Assigner {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let EventBody::Graded(graded) = &event.body else {
            return Err(HandlerError::Poison(format!(
                "expected a graded event, got {}",
                event.body.event_type()
            )));
        };
        let namespace = &event.namespace;
        let record_key = assignment_key(namespace, &event.incident_id);
        let existing: Option<AssignmentRecord> = self
            .store
            .get(&record_key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        let report = &graded.report;
        let plan = self.region.plans.plan_for(&report.kind, graded.grade);

        // Send only what the plan asks for beyond what the incident already has.
        let mut already: HashMap<&str, u32> = HashMap::new();
        for assignment in existing.iter().flat_map(|r| &r.assignments) {
            *already.entry(assignment.unit_type.as_str()).or_default() += 1;
        }
        let requirements: Vec<ResourceRequirement> = plan
            .map(|plan| {
                plan.resources
                    .iter()
                    .map(|r| ResourceRequirement {
                        unit_type: r.unit_type.clone(),
                        count: r.count.saturating_sub(
                            already.get(r.unit_type.as_str()).copied().unwrap_or(0),
                        ),
                    })
                    .filter(|r| r.count > 0)
                    .collect()
            })
            .unwrap_or_default();

        let booked = self.booked_units(namespace)?;
        let recommendation = domain::dispatch::recommend(
            &requirements,
            report.location,
            &self.region.units,
            |unit_id| !booked.contains(unit_id),
        );

        let now = lifecycle::unix_ms_now();
        let mut commit = Commit::new();
        let mut assignments = Vec::with_capacity(recommendation.picks.len());
        for pick in recommendation.picks {
            let key = booking_key(namespace, &pick.unit_id);
            // The compare-and-swap: the booking applies only if the unit is still free.
            commit.expect_raw(key.clone(), None);
            commit
                .put(
                    key,
                    &Booking {
                        incident_id: event.incident_id.clone(),
                        since_unix_ms: now,
                    },
                )
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
            assignments.push(Assignment {
                unit_id: pick.unit_id,
                call_sign: pick.call_sign,
                unit_type: pick.unit_type,
                distance_km: pick.distance_km,
                reason: pick.reason,
            });
        }
        let mut shortfalls: Vec<Shortfall> = recommendation
            .gaps
            .into_iter()
            .map(|gap| Shortfall {
                unit_type: gap.unit_type,
                required: gap.required,
                assigned: gap.assigned,
                reason: gap.reason,
            })
            .collect();
        if plan.is_none() {
            let grade = graded
                .grade
                .map_or("ungraded".to_string(), |g| format!("grade {}", g.roman()));
            shortfalls.push(Shortfall {
                unit_type: "*".into(),
                required: 0,
                assigned: 0,
                reason: format!(
                    "no plan (预案) covers {} at {grade}; assign units by hand",
                    report.kind
                ),
            });
        }
        let plan_id = plan.map_or(String::new(), |p| p.id.clone());
        let mut record = existing.unwrap_or_else(|| AssignmentRecord {
            incident_id: event.incident_id.clone(),
            namespace: namespace.clone(),
            plan_id: plan_id.clone(),
            assignments: Vec::new(),
            shortfalls: Vec::new(),
        });
        record.plan_id = plan_id.clone();
        record.assignments.extend(assignments.iter().cloned());
        record.shortfalls = shortfalls.clone();
        commit
            .put(record_key, &record)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;

        tracing::info!(
            incident_id = %event.incident_id,
            plan = %plan_id,
            assigned = assignments.len(),
            short = shortfalls.len(),
            "units assigned"
        );
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: event.incident_id.clone(),
            namespace: namespace.clone(),
            at_unix_ms: now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::UnitsAssigned(UnitsAssigned {
                plan_id,
                assignments,
                shortfalls,
            }),
        };
        let subject =
            subjects::incident_event(namespace, &event.incident_id, subjects::UNITS_ASSIGNED)
                .map_err(|e| HandlerError::Poison(e.to_string()))?;
        commit.event(subject, muster_proto::convert::encode_event(&out));
        Ok(commit)
    }
}
