//! Acknowledged assignments: every booking must be acknowledged in time, and a unit that declines
//! or lets its acknowledgement time out is replaced at once.
//!
//! Keys (in dispatch's own sled):
//! - `timer/<ns>/<due_at_unix_ms, 20 digits>/<incident>/<unit>`: one [`AckTimerRecord`] per
//!   dispatched unit that has not acknowledged yet, so that a range scan up to `now` meets exactly
//!   the overdue ones. The unit record remembers the due time ([`UnitRecord::ack_due_at_unix_ms`]),
//!   so every change that takes the unit out of Dispatched deletes the timer in its own commit.
//!
//! [`AssignmentDesk::stage_status_change`] builds the one commit of a unit status change: the unit
//! record (compare-and-swap), its unit event, the acknowledgement timer going away, and, when the
//! unit leaves an incident, the incident's assignment record (compare-and-swap) with the unit moved
//! to its `ended` history. A decline or a timeout also books the nearest available unit of the same
//! type (never one that declined or timed out on this incident), arms its timer and emits
//! `units_assigned` for it, all in that same commit. The timer task fires overdue timers through
//! the same path, the timer record deleted in the commit of its effect, so a timer fires once even
//! across restarts; a timer whose unit has moved on only disappears.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bus::subjects;
use domain::dispatch::{RecommendOptions, reason_code};
use domain::event::{Assignment, EventBody, IncidentEvent, Shortfall, UnitsAssigned};
use domain::mutual_aid::MutualAidPolicy;
use domain::region::{Region, ResourceRequirement};
use domain::unit::{TransitionError, UnitEvent, UnitStatus};
use muster_proto::convert_unit::UnitChange;
use serde::{Deserialize, Serialize};
use store::{Commit, Store};
use tokio_util::sync::CancellationToken;

use crate::driver::{AssignmentRecord, assignment_key, recommend_options};
use crate::registry::{self, UnitRecord};

/// How long a dispatched unit has to acknowledge unless configured: 90 seconds.
pub const ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT: i64 = 90 * 1000;
/// The longest acknowledgement timeout that can be configured: one day.
pub const ASSIGNMENT_ACK_TIMEOUT_MS_MAX: i64 = 24 * 60 * 60 * 1000;
/// Most ended assignments kept per incident; the oldest go first.
pub const ENDED_ASSIGNMENTS_MAX: usize = 512;
/// How often the timer task looks for overdue acknowledgements.
pub const ACK_TIMER_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Most acknowledgement timers fired in one pass (the rest wait for the next pass).
pub const ACK_TIMERS_PER_PASS_MAX: usize = 512;
/// How often a status change is retried after losing a compare-and-swap race.
const CHANGE_ATTEMPTS_MAX: usize = 8;

/// How a unit left an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentOutcome {
    Declined,
    AcknowledgementTimedOut,
    Released,
    OutOfService,
}

impl AssignmentOutcome {
    /// The outcome a lifecycle event leads to when it takes a unit off its incident.
    pub fn of(event: &UnitEvent) -> Option<AssignmentOutcome> {
        match event {
            UnitEvent::Decline { .. } => Some(AssignmentOutcome::Declined),
            UnitEvent::AcknowledgementTimedOut { .. } => {
                Some(AssignmentOutcome::AcknowledgementTimedOut)
            }
            UnitEvent::Release { .. } => Some(AssignmentOutcome::Released),
            UnitEvent::GoOutOfService { .. } => Some(AssignmentOutcome::OutOfService),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AssignmentOutcome::Declined => "declined",
            AssignmentOutcome::AcknowledgementTimedOut => "acknowledgement_timed_out",
            AssignmentOutcome::Released => "released",
            AssignmentOutcome::OutOfService => "out_of_service",
        }
    }

    /// True when the unit is not assigned to the same incident again (it declined or did not
    /// answer), and a replacement is booked at once.
    pub fn excludes_the_unit(&self) -> bool {
        matches!(
            self,
            AssignmentOutcome::Declined | AssignmentOutcome::AcknowledgementTimedOut
        )
    }

    /// True when the incident still needs the unit's place filled: it declined, did not answer,
    /// or went out of service while committed. A released unit is not replaced.
    pub fn is_replaced(&self) -> bool {
        self.excludes_the_unit() || *self == AssignmentOutcome::OutOfService
    }

    pub(crate) fn default_reason(&self) -> &'static str {
        match self {
            AssignmentOutcome::Declined => "declined",
            AssignmentOutcome::AcknowledgementTimedOut => "no acknowledgement by the deadline",
            AssignmentOutcome::Released => "released by the incident",
            AssignmentOutcome::OutOfService => "went out of service",
        }
    }
}

/// A unit that was assigned to an incident and left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndedAssignment {
    pub unit_id: String,
    pub call_sign: String,
    pub unit_type: String,
    pub outcome: AssignmentOutcome,
    /// The decline or out-of-service reason, or what happened.
    pub reason: String,
    pub at_unix_ms: i64,
}

/// One pending acknowledgement, stored under [`ack_timer_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckTimerRecord {
    pub incident_id: String,
    pub unit_id: String,
    pub due_at_unix_ms: i64,
}

/// `timer/<ns>/`: every pending acknowledgement, earliest due first.
pub fn ack_timer_prefix(namespace: &str) -> String {
    format!("timer/{namespace}/")
}

/// `timer/<ns>/<due_at_unix_ms:020>/<incident>/<unit>`.
pub fn ack_timer_key(
    namespace: &str,
    due_at_unix_ms: i64,
    incident_id: &str,
    unit_id: &str,
) -> String {
    format!(
        "timer/{namespace}/{:020}/{incident_id}/{unit_id}",
        due_at_unix_ms.max(0)
    )
}

/// Adds the acknowledgement timer of a unit just dispatched to `incident_id` to `commit`, and
/// remembers its due time in the unit record (which the caller writes in the same commit).
pub fn arm_ack_timer(
    commit: &mut Commit,
    namespace: &str,
    incident_id: &str,
    unit: &mut UnitRecord,
    due_at_unix_ms: i64,
) -> Result<(), store::Error> {
    unit.ack_due_at_unix_ms = Some(due_at_unix_ms);
    commit.put(
        ack_timer_key(namespace, due_at_unix_ms, incident_id, &unit.unit.id),
        &AckTimerRecord {
            incident_id: incident_id.to_string(),
            unit_id: unit.unit.id.clone(),
            due_at_unix_ms,
        },
    )?;
    Ok(())
}

/// Why a status change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StatusChangeError {
    #[error("no unit {unit_id:?} is registered in namespace {namespace}")]
    UnknownUnit { unit_id: String, namespace: String },
    #[error("unit {unit_id:?} is retired ({reason})")]
    Retired { unit_id: String, reason: String },
    #[error("unit {unit_id:?}: {event} refused: {refusal}")]
    Refused {
        unit_id: String,
        event: &'static str,
        refusal: TransitionError,
    },
    #[error(
        "unit {unit_id:?} kept changing under this request ({CHANGE_ATTEMPTS_MAX} attempts); try again"
    )]
    Contended { unit_id: String },
    #[error("unit {unit_id:?} is {status}{}, not Available; it cannot be assigned", incident_id.as_deref().map(|id| format!(" on incident {id}")).unwrap_or_default())]
    NotAvailable {
        unit_id: String,
        status: UnitStatus,
        incident_id: Option<String>,
    },
    #[error(
        "dispatch has no record of incident {incident_id:?} in namespace {namespace} (not graded yet?)"
    )]
    UnknownIncident {
        incident_id: String,
        namespace: String,
    },
    #[error("incident {incident_id:?} is closed; nothing is assigned to it any more")]
    IncidentClosed { incident_id: String },
    #[error("{0}")]
    Subject(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// One staged status change: the commit to apply and what it does.
#[derive(Debug)]
pub struct StagedChange {
    pub commit: Commit,
    /// The unit record as the commit writes it.
    pub unit: UnitRecord,
    /// The incident the unit left, and how.
    pub ended: Option<EndedAssignment>,
    /// The unit booked in its place (or, for a booking by hand, the booking itself).
    pub replacement: Option<Assignment>,
}

/// Status changes with their assignment bookkeeping, for the gRPC service and the timer task.
#[derive(Clone)]
pub struct AssignmentDesk {
    region: Arc<Region>,
    options: RecommendOptions,
    policy: MutualAidPolicy,
    assignment_ack_timeout_ms: i64,
}

impl AssignmentDesk {
    /// A desk whose replacements must acknowledge within `assignment_ack_timeout_ms` (at least 1).
    pub fn new(region: Arc<Region>, assignment_ack_timeout_ms: i64) -> AssignmentDesk {
        AssignmentDesk {
            options: recommend_options(&region, None),
            policy: MutualAidPolicy::default(),
            region,
            assignment_ack_timeout_ms: assignment_ack_timeout_ms.max(1),
        }
    }

    /// The same, with another mutual-aid policy for the responders (reserves).
    pub fn with_mutual_aid_policy(mut self, policy: MutualAidPolicy) -> AssignmentDesk {
        self.policy = policy;
        self
    }

    /// The mutual-aid policy in effect.
    pub fn policy(&self) -> &MutualAidPolicy {
        &self.policy
    }

    /// The same, with another stale-position limit (milliseconds; `None` for the default).
    pub fn with_stale_position_ms(mut self, stale_position_ms: Option<i64>) -> AssignmentDesk {
        self.options = recommend_options(&self.region, stale_position_ms);
        self
    }

    /// The recommendation options in effect (speeds, stale limit).
    pub fn options(&self) -> &RecommendOptions {
        &self.options
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Builds the one commit of applying `event` to the unit at `now_unix_ms` (see the module
    /// documentation). Nothing is written; a conflict on commit means: stage again.
    pub fn stage_status_change(
        &self,
        store: &Store,
        namespace: &str,
        unit_id: &str,
        event: &UnitEvent,
        now_unix_ms: i64,
    ) -> Result<StagedChange, StatusChangeError> {
        let (raw, mut unit) = registry::load(store, namespace, unit_id)?.ok_or_else(|| {
            StatusChangeError::UnknownUnit {
                unit_id: unit_id.to_string(),
                namespace: namespace.to_string(),
            }
        })?;
        if let Some(retired) = &unit.retired {
            return Err(StatusChangeError::Retired {
                unit_id: unit_id.to_string(),
                reason: retired.reason.clone(),
            });
        }
        let before = unit.state.clone();
        let change =
            unit.apply(event, now_unix_ms)
                .map_err(|refusal| StatusChangeError::Refused {
                    unit_id: unit_id.to_string(),
                    event: event.name(),
                    refusal,
                })?;
        let mut commit = Commit::new();
        let unit_key = registry::unit_key(namespace, unit_id);
        commit.expect_raw(unit_key.clone(), Some(raw));
        // Leaving Dispatched by any event (acknowledge, decline, timeout, release, out of
        // service) disarms the acknowledgement timer in this same commit.
        if unit.state.status != UnitStatus::Dispatched
            && let Some(due_at_unix_ms) = unit.ack_due_at_unix_ms.take()
            && let Some(incident_id) = before.incident_id.as_deref()
        {
            commit.delete(ack_timer_key(
                namespace,
                due_at_unix_ms,
                incident_id,
                unit_id,
            ));
        }
        commit.put(unit_key, &unit)?;
        registry::push_event(
            &mut commit,
            namespace,
            unit_id,
            UnitChange::StatusChanged {
                change: change.clone(),
                cause: event.name().to_string(),
            },
            now_unix_ms,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
        let mut staged = StagedChange {
            commit,
            unit,
            ended: None,
            replacement: None,
        };

        // Did the unit leave its incident?
        let (Some(incident_id), None) = (
            before.incident_id.as_deref(),
            staged.unit.state.incident_id.as_deref(),
        ) else {
            return Ok(staged);
        };
        let Some(outcome) = AssignmentOutcome::of(event) else {
            return Ok(staged);
        };
        let record_key = assignment_key(namespace, incident_id);
        let Some(record_raw) = store.get_raw(&record_key)? else {
            return Ok(staged);
        };
        let mut record: AssignmentRecord = store::decode_value(&record_key, &record_raw)?;
        staged
            .commit
            .expect_raw(record_key.clone(), Some(record_raw));
        let Some(index) = record
            .assignments
            .iter()
            .position(|assignment| assignment.unit_id == unit_id)
        else {
            return Ok(staged);
        };
        let left = record.assignments.remove(index);
        let ended = EndedAssignment {
            unit_id: unit_id.to_string(),
            call_sign: left.call_sign.clone(),
            unit_type: left.unit_type.clone(),
            outcome,
            reason: change
                .reason
                .clone()
                .unwrap_or_else(|| outcome.default_reason().to_string()),
            at_unix_ms: now_unix_ms,
        };
        record.ended.push(ended.clone());
        if record.ended.len() > ENDED_ASSIGNMENTS_MAX {
            let excess = record.ended.len() - ENDED_ASSIGNMENTS_MAX;
            record.ended.drain(..excess);
        }
        // A unit that came by mutual aid goes back to its jurisdiction (ReleaseResource).
        crate::mutual_aid::stage_release(
            store,
            &mut staged.commit,
            &self.region.tree,
            &mut record,
            &[unit_id.to_string()],
            &format!("{} {}", unit_id, ended.reason),
            now_unix_ms,
        )
        .map_err(stage_error)?;
        // Every unit that leaves is announced, so intake's incident drops it; a unit that declined,
        // did not acknowledge or went out of service is replaced in the same commit.
        let replacement = if outcome.is_replaced() && record.closed_at_unix_ms.is_none() {
            self.book_replacement(
                store,
                &mut staged.commit,
                &mut record,
                &left,
                &staged.unit,
                outcome,
                now_unix_ms,
            )?
        } else {
            None
        };
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: namespace.to_string(),
            at_unix_ms: now_unix_ms,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::UnitsAssigned(UnitsAssigned {
                plan_id: record.plan_id.clone(),
                assignments: replacement.iter().cloned().collect(),
                shortfalls: record.shortfalls.clone(),
                released_unit_ids: vec![unit_id.to_string()],
            }),
        };
        let subject = subjects::incident_event(
            namespace,
            record.partition(&self.region.tree),
            incident_id,
            subjects::UNITS_ASSIGNED,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
        staged
            .commit
            .event(subject, muster_proto::convert::encode_event(&out));
        staged.replacement = replacement;
        staged.commit.put(record_key, &record)?;
        staged.ended = Some(ended);
        Ok(staged)
    }

    /// Books the nearest available unit of `left`'s type for the record's incident, excluding
    /// every unit that declined or timed out on it, into `commit`; or records the shortfall.
    #[allow(clippy::too_many_arguments)]
    fn book_replacement(
        &self,
        store: &Store,
        commit: &mut Commit,
        record: &mut AssignmentRecord,
        left: &Assignment,
        leaving: &UnitRecord,
        outcome: AssignmentOutcome,
        now_unix_ms: i64,
    ) -> Result<Option<Assignment>, StatusChangeError> {
        let namespace = record.namespace.clone();
        let incident_id = record.incident_id.clone();
        let Some(location) = record.location else {
            record_shortfall(
                record,
                &left.unit_type,
                format!(
                    "no replacement for {} ({}): the incident's location is not on record; assign one by hand",
                    left.call_sign,
                    outcome.as_str()
                ),
            );
            if let Some(shortfall) = record
                .shortfalls
                .iter_mut()
                .find(|shortfall| shortfall.unit_type == left.unit_type)
            {
                shortfall.reason_codes = vec![
                    reason_code::NONE_AVAILABLE.into(),
                    reason_code::NO_LOCATION.into(),
                ];
                shortfall.causes.clear();
            }
            return Ok(None);
        };
        let excluded: HashSet<String> = record
            .excluded_unit_ids()
            .into_iter()
            .chain([left.unit_id.as_str()])
            .map(str::to_string)
            .collect();
        let mut records = registry::load_all(store, &namespace)?;
        // The leaving unit as this commit writes it (back home, or out of service), so that a
        // responder's reserve counts it where it will be.
        if let Some(stored) = records.iter_mut().find(|r| r.unit.id == leaving.unit.id) {
            *stored = leaving.clone();
        }
        let requirement = ResourceRequirement {
            unit_type: left.unit_type.clone(),
            count: 1,
        };
        let recommended = crate::driver::recommend_units(
            &self.region,
            &self.options,
            &self.policy,
            &records,
            &excluded,
            std::slice::from_ref(&requirement),
            &record.place(location),
            now_unix_ms,
        );
        let mut picks = recommended.assignments;
        // A replacement may come by mutual aid: its request (and any declines before it) is
        // staged with the booking.
        crate::mutual_aid::stage_requests(
            commit,
            &self.region.tree,
            record,
            &recommended.requests,
            &mut picks,
            &recommended.via_request,
            now_unix_ms,
        )
        .map_err(stage_error)?;
        let Some(pick) = picks.into_iter().next() else {
            let gap = recommended.shortfalls.into_iter().next();
            let why = gap
                .as_ref()
                .map_or("none available", |gap| gap.reason.as_str())
                .to_string();
            record_shortfall(
                record,
                &left.unit_type,
                format!(
                    "no replacement for {} ({}): {why}",
                    left.call_sign,
                    outcome.as_str()
                ),
            );
            if let Some(gap) = gap
                && let Some(shortfall) = record
                    .shortfalls
                    .iter_mut()
                    .find(|shortfall| shortfall.unit_type == left.unit_type)
            {
                shortfall.reason_codes = gap.reason_codes;
                shortfall.causes = gap.causes;
            }
            return Ok(None);
        };
        let key = registry::unit_key(&namespace, &pick.unit_id);
        // Read again with the raw bytes for the compare-and-swap; a unit that changed since the
        // scan is a conflict, and the whole change is staged again on fresh state.
        let conflict = || StatusChangeError::Store(store::Error::Conflict { key: key.clone() });
        let (raw, mut unit) =
            registry::load(store, &namespace, &pick.unit_id)?.ok_or_else(conflict)?;
        let change = unit
            .apply(
                &UnitEvent::Assign {
                    incident_id: incident_id.clone(),
                },
                now_unix_ms,
            )
            .map_err(|_| conflict())?;
        arm_ack_timer(
            commit,
            &namespace,
            &incident_id,
            &mut unit,
            now_unix_ms.saturating_add(self.assignment_ack_timeout_ms),
        )?;
        commit.expect_raw(key.clone(), Some(raw));
        commit.put(key, &unit)?;
        registry::push_event(
            commit,
            &namespace,
            &pick.unit_id,
            UnitChange::StatusChanged {
                change,
                cause: "assign".into(),
            },
            now_unix_ms,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
        let mut assignment = pick;
        assignment.reason = format!(
            "replaces {} ({}): {}",
            left.call_sign,
            outcome.as_str(),
            assignment.reason
        );
        assignment
            .reason_codes
            .push(reason_code::REPLACEMENT.into());
        record.assignments.push(assignment.clone());
        Ok(Some(assignment))
    }

    /// Builds the one commit of a dispatcher booking `unit_id` to `incident_id` by hand: the unit
    /// (compare-and-swap, Available → Dispatched, acknowledgement timer armed), its unit event,
    /// the incident's assignment record (compare-and-swap; a shortfall of the type shrinks) and
    /// `units_assigned` announcing the booking. Refused unless the unit is available and the
    /// incident is graded and open.
    pub fn stage_assignment(
        &self,
        store: &Store,
        namespace: &str,
        incident_id: &str,
        unit_id: &str,
        by: &str,
        now_unix_ms: i64,
    ) -> Result<StagedChange, StatusChangeError> {
        let record_key = assignment_key(namespace, incident_id);
        let record_raw =
            store
                .get_raw(&record_key)?
                .ok_or_else(|| StatusChangeError::UnknownIncident {
                    incident_id: incident_id.to_string(),
                    namespace: namespace.to_string(),
                })?;
        let mut record: AssignmentRecord = store::decode_value(&record_key, &record_raw)?;
        if record.closed_at_unix_ms.is_some() {
            return Err(StatusChangeError::IncidentClosed {
                incident_id: incident_id.to_string(),
            });
        }
        let (raw, mut unit) = registry::load(store, namespace, unit_id)?.ok_or_else(|| {
            StatusChangeError::UnknownUnit {
                unit_id: unit_id.to_string(),
                namespace: namespace.to_string(),
            }
        })?;
        if let Some(retired) = &unit.retired {
            return Err(StatusChangeError::Retired {
                unit_id: unit_id.to_string(),
                reason: retired.reason.clone(),
            });
        }
        if !unit.state.status.is_assignable() {
            return Err(StatusChangeError::NotAvailable {
                unit_id: unit_id.to_string(),
                status: unit.state.status,
                incident_id: unit.state.incident_id.clone(),
            });
        }
        let event = UnitEvent::Assign {
            incident_id: incident_id.to_string(),
        };
        let change =
            unit.apply(&event, now_unix_ms)
                .map_err(|refusal| StatusChangeError::Refused {
                    unit_id: unit_id.to_string(),
                    event: event.name(),
                    refusal,
                })?;
        let mut commit = Commit::new();
        arm_ack_timer(
            &mut commit,
            namespace,
            incident_id,
            &mut unit,
            now_unix_ms.saturating_add(self.assignment_ack_timeout_ms),
        )?;
        let unit_key = registry::unit_key(namespace, unit_id);
        commit.expect_raw(unit_key.clone(), Some(raw));
        commit.put(unit_key, &unit)?;
        registry::push_event(
            &mut commit,
            namespace,
            unit_id,
            UnitChange::StatusChanged {
                change,
                cause: "assign".into(),
            },
            now_unix_ms,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;

        let (distance_km, eta_minutes) = record.location.map_or((0.0, 0.0), |location| {
            let distance_km = domain::geo::great_circle_km(location, unit.unit.position);
            (
                distance_km,
                self.options.eta_min(&unit.unit.unit_type, distance_km),
            )
        });
        let standing = domain::dispatch::jurisdiction_standing(
            &self.region.tree,
            record.lead_code.as_deref().unwrap_or(""),
            record.township_code.as_deref().unwrap_or(""),
            &unit.unit.jurisdiction,
        );
        let mut reason_codes = vec![reason_code::DISPATCHER_ASSIGNED.to_string()];
        reason_codes.push(if standing.in_jurisdiction {
            reason_code::IN_JURISDICTION.into()
        } else {
            reason_code::OUTSIDE_JURISDICTION.into()
        });
        let assignment = Assignment {
            unit_id: unit_id.to_string(),
            call_sign: unit.unit.call_sign.clone(),
            unit_type: unit.unit.unit_type.clone(),
            distance_km,
            reason: format!(
                "assigned by {by}: {distance_km:.1} km, ETA {eta_minutes:.1} min{}",
                if standing.in_jurisdiction {
                    ""
                } else {
                    "; outside the lead jurisdiction"
                }
            ),
            reason_codes,
            eta_minutes,
            cascade_depth: standing.cascade_depth,
        };
        record.assignments.push(assignment.clone());
        // A booking by hand fills a shortfall of its type.
        if let Some(index) = record
            .shortfalls
            .iter()
            .position(|shortfall| shortfall.unit_type == assignment.unit_type)
        {
            let shortfall = &mut record.shortfalls[index];
            shortfall.assigned += 1;
            if shortfall.assigned >= shortfall.required {
                record.shortfalls.remove(index);
            }
        }
        commit.expect_raw(record_key.clone(), Some(record_raw));
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: namespace.to_string(),
            at_unix_ms: now_unix_ms,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::UnitsAssigned(UnitsAssigned {
                plan_id: record.plan_id.clone(),
                assignments: vec![assignment.clone()],
                shortfalls: record.shortfalls.clone(),
                released_unit_ids: Vec::new(),
            }),
        };
        let subject = subjects::incident_event(
            namespace,
            record.partition(&self.region.tree),
            incident_id,
            subjects::UNITS_ASSIGNED,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
        commit.event(subject, muster_proto::convert::encode_event(&out));
        commit.put(record_key, &record)?;
        Ok(StagedChange {
            commit,
            unit,
            ended: None,
            replacement: Some(assignment),
        })
    }

    /// Stages and commits a booking by hand ([`Self::stage_assignment`]), staging again after a
    /// compare-and-swap conflict. The caller flushes.
    pub fn assign(
        &self,
        store: &Store,
        namespace: &str,
        incident_id: &str,
        unit_id: &str,
        by: &str,
        now_unix_ms: i64,
    ) -> Result<StagedChange, StatusChangeError> {
        for _attempt in 0..CHANGE_ATTEMPTS_MAX {
            let staged =
                self.stage_assignment(store, namespace, incident_id, unit_id, by, now_unix_ms)?;
            match store.commit(&staged.commit) {
                Ok(_) => return Ok(staged),
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StatusChangeError::Contended {
            unit_id: unit_id.to_string(),
        })
    }

    /// Stages and commits `event` for the unit, staging again after a compare-and-swap conflict.
    /// The caller flushes.
    pub fn change_status(
        &self,
        store: &Store,
        namespace: &str,
        unit_id: &str,
        event: &UnitEvent,
        now_unix_ms: i64,
    ) -> Result<StagedChange, StatusChangeError> {
        for _attempt in 0..CHANGE_ATTEMPTS_MAX {
            let staged =
                match self.stage_status_change(store, namespace, unit_id, event, now_unix_ms) {
                    Ok(staged) => staged,
                    Err(StatusChangeError::Store(store::Error::Conflict { .. })) => continue,
                    Err(error) => return Err(error),
                };
            match store.commit(&staged.commit) {
                Ok(_) => return Ok(staged),
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StatusChangeError::Contended {
            unit_id: unit_id.to_string(),
        })
    }

    /// Fires every acknowledgement timer of `namespace` due at or before `now_unix_ms`, one commit
    /// each; returns how many timed a unit out (stale timers are only removed).
    pub fn fire_due(
        &self,
        store: &Store,
        namespace: &str,
        now_unix_ms: i64,
    ) -> Result<usize, StatusChangeError> {
        // Timer keys sort by due time, so the range up to `now` holds exactly the due ones.
        let prefix = ack_timer_prefix(namespace);
        let until = format!("{prefix}{:020}", now_unix_ms.saturating_add(1).max(0));
        let due: Vec<(String, AckTimerRecord)> =
            store.scan_range(&prefix, &until, ACK_TIMERS_PER_PASS_MAX)?;
        let mut fired = 0;
        for (key, timer) in due {
            if self.fire_one(store, namespace, &key, &timer, now_unix_ms)? {
                fired += 1;
            }
        }
        Ok(fired)
    }

    /// Times the timer's unit out (with its replacement) and deletes the timer in one commit, or
    /// only deletes it when the unit is no longer waiting for this acknowledgement.
    fn fire_one(
        &self,
        store: &Store,
        namespace: &str,
        key: &str,
        timer: &AckTimerRecord,
        now_unix_ms: i64,
    ) -> Result<bool, StatusChangeError> {
        let event = UnitEvent::AcknowledgementTimedOut {
            incident_id: timer.incident_id.clone(),
        };
        for _attempt in 0..CHANGE_ATTEMPTS_MAX {
            let waiting =
                registry::load(store, namespace, &timer.unit_id)?.is_some_and(|(_, unit)| {
                    !unit.is_retired()
                        && unit.state.status == UnitStatus::Dispatched
                        && unit.state.incident_id.as_deref() == Some(timer.incident_id.as_str())
                        && unit.ack_due_at_unix_ms == Some(timer.due_at_unix_ms)
                });
            let mut commit = if waiting {
                match self.stage_status_change(
                    store,
                    namespace,
                    &timer.unit_id,
                    &event,
                    now_unix_ms,
                ) {
                    Ok(staged) => {
                        if let Some(replacement) = &staged.replacement {
                            tracing::info!(incident_id = %timer.incident_id, unit_id = %timer.unit_id, replacement = %replacement.unit_id, "acknowledgement timed out; unit replaced");
                        } else {
                            tracing::warn!(incident_id = %timer.incident_id, unit_id = %timer.unit_id, "acknowledgement timed out; no replacement available");
                        }
                        staged.commit
                    }
                    Err(StatusChangeError::Store(store::Error::Conflict { .. })) => continue,
                    Err(error) => return Err(error),
                }
            } else {
                Commit::new()
            };
            commit.delete(key.to_string());
            match store.commit(&commit) {
                Ok(_) => return Ok(waiting),
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StatusChangeError::Contended {
            unit_id: timer.unit_id.clone(),
        })
    }
}

/// The incident is closed: releases every unit it holds, in one commit for the consumer to make.
///
/// Each unit goes through the lifecycle's `Release` (Dispatched → Available, its acknowledgement
/// timer deleted; Enroute, Staging or OnScene → Returning) with a compare-and-swap on its record
/// and its unit event; each leaves the assignment record for `ended` (`released`, "incident
/// closed: <reason>"). The record is marked closed (so a `graded` arriving later books nothing)
/// and its shortfalls cleared; one `units_assigned` with `released_unit_ids` announces the units
/// that left, so intake's incident drops them. An incident already closed (a redelivered or
/// re-published `closed`) gets an empty commit; one dispatch never booked is only marked closed.
pub fn stage_incident_close(
    store: &Store,
    tree: &domain::jurisdiction::JurisdictionTree,
    namespace: &str,
    incident_id: &str,
    reason: &str,
    now_unix_ms: i64,
) -> Result<Commit, StatusChangeError> {
    let record_key = assignment_key(namespace, incident_id);
    let record_raw = store.get_raw(&record_key)?;
    let mut record: AssignmentRecord = match record_raw.as_deref() {
        Some(raw) => store::decode_value(&record_key, raw)?,
        None => AssignmentRecord::empty(namespace, incident_id),
    };
    let mut commit = Commit::new();
    if record.closed_at_unix_ms.is_some() {
        return Ok(commit);
    }
    commit.expect_raw(record_key.clone(), record_raw);
    let release = UnitEvent::Release {
        incident_id: incident_id.to_string(),
    };
    let mut released = Vec::with_capacity(record.assignments.len());
    for left in std::mem::take(&mut record.assignments) {
        let unit_id = left.unit_id.clone();
        match registry::load(store, namespace, &unit_id)? {
            Some((raw, mut unit))
                if !unit.is_retired() && unit.state.incident_id.as_deref() == Some(incident_id) =>
            {
                let change = unit.apply(&release, now_unix_ms).map_err(|refusal| {
                    StatusChangeError::Refused {
                        unit_id: unit_id.clone(),
                        event: release.name(),
                        refusal,
                    }
                })?;
                let unit_key = registry::unit_key(namespace, &unit_id);
                commit.expect_raw(unit_key.clone(), Some(raw));
                if unit.state.status != UnitStatus::Dispatched
                    && let Some(due_at_unix_ms) = unit.ack_due_at_unix_ms.take()
                {
                    commit.delete(ack_timer_key(
                        namespace,
                        due_at_unix_ms,
                        incident_id,
                        &unit_id,
                    ));
                }
                commit.put(unit_key, &unit)?;
                registry::push_event(
                    &mut commit,
                    namespace,
                    &unit_id,
                    UnitChange::StatusChanged {
                        change,
                        cause: release.name().to_string(),
                    },
                    now_unix_ms,
                )
                .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
            }
            // The unit record no longer names this incident (or is gone): only the assignment
            // ends, and intake is told it left all the same.
            _ => {
                tracing::warn!(%incident_id, %unit_id, "assigned unit not held by the closed incident; assignment ended only");
            }
        }
        record.ended.push(EndedAssignment {
            unit_id: unit_id.clone(),
            call_sign: left.call_sign,
            unit_type: left.unit_type,
            outcome: AssignmentOutcome::Released,
            reason: format!("incident closed: {reason}"),
            at_unix_ms: now_unix_ms,
        });
        released.push(unit_id);
    }
    if record.ended.len() > ENDED_ASSIGNMENTS_MAX {
        let excess = record.ended.len() - ENDED_ASSIGNMENTS_MAX;
        record.ended.drain(..excess);
    }
    // Units that came by mutual aid go back to their jurisdictions (ReleaseResource).
    crate::mutual_aid::stage_release(
        store,
        &mut commit,
        tree,
        &mut record,
        &released,
        &format!("incident closed: {reason}"),
        now_unix_ms,
    )
    .map_err(stage_error)?;
    // A closed incident needs nothing more.
    record.shortfalls.clear();
    record.closed_at_unix_ms = Some(now_unix_ms);
    commit.put(record_key, &record)?;
    tracing::info!(%incident_id, released = released.len(), "incident closed; units released");
    if !released.is_empty() {
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: namespace.to_string(),
            at_unix_ms: now_unix_ms,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::UnitsAssigned(UnitsAssigned {
                plan_id: record.plan_id.clone(),
                assignments: Vec::new(),
                shortfalls: Vec::new(),
                released_unit_ids: released,
            }),
        };
        let subject = subjects::incident_event(
            namespace,
            record.partition(tree),
            incident_id,
            subjects::UNITS_ASSIGNED,
        )
        .map_err(|e| StatusChangeError::Subject(e.to_string()))?;
        commit.event(subject, muster_proto::convert::encode_event(&out));
    }
    Ok(commit)
}

fn stage_error(error: crate::mutual_aid::StageError) -> StatusChangeError {
    match error {
        crate::mutual_aid::StageError::Store(e) => StatusChangeError::Store(e),
        crate::mutual_aid::StageError::Invalid(e) => StatusChangeError::Subject(e),
    }
}

/// Notes that a unit of `unit_type` is missing from the record's incident.
fn record_shortfall(record: &mut AssignmentRecord, unit_type: &str, reason: String) {
    let assigned = record
        .assignments
        .iter()
        .filter(|assignment| assignment.unit_type == unit_type)
        .count() as u32;
    match record
        .shortfalls
        .iter_mut()
        .find(|shortfall| shortfall.unit_type == unit_type)
    {
        Some(shortfall) => {
            shortfall.assigned = assigned;
            shortfall.required = shortfall.required.max(assigned + 1);
            shortfall.reason = reason;
        }
        None => record.shortfalls.push(Shortfall {
            unit_type: unit_type.to_string(),
            required: assigned + 1,
            assigned,
            reason,
            reason_codes: vec![reason_code::NONE_AVAILABLE.into()],
            causes: Vec::new(),
        }),
    }
}

/// Fires overdue acknowledgements every [`ACK_TIMER_POLL_INTERVAL`] until `shutdown`.
pub async fn run_ack_timers(
    store: Store,
    desk: AssignmentDesk,
    namespace: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(ACK_TIMER_POLL_INTERVAL) => {}
        }
        let (store, desk, namespace) = (store.clone(), desk.clone(), namespace.clone());
        let pass = tokio::task::spawn_blocking(move || {
            desk.fire_due(&store, &namespace, lifecycle::unix_ms_now())
        })
        .await;
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(fired)) => tracing::debug!(fired, "acknowledgement timers fired"),
            Ok(Err(error)) => {
                tracing::error!(%error, "acknowledgement timer pass failed; retrying next pass")
            }
            Err(error) => tracing::error!(%error, "acknowledgement timer pass panicked"),
        }
    }
    tracing::info!("acknowledgement timer task stopped");
}
