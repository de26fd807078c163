//! The unit status lifecycle (Available → Dispatched → Enroute → OnScene → Returning → Available,
//! with Staging and OutOfService), enforced as a state machine that refuses illegal moves with a
//! reason a dispatcher can act on.
//!
//! Two layers: [`transition`] says which status pairs are legal at all, and [`UnitState::apply`]
//! takes the events a unit or dispatcher sends (assign, acknowledge, decline, …), checks that they
//! concern the incident the unit is actually on, and reports the change to record as a unit event.
//! Time is a parameter, as everywhere in the domain crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a unit is in its duty cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    /// In service and free to be assigned.
    Available,
    /// Assigned to an incident, acknowledgement pending.
    Dispatched,
    /// Acknowledged and on the way.
    Enroute,
    /// Working at the incident.
    OnScene,
    /// Waiting at a staging area near the incident, committed but not yet working.
    Staging,
    /// Released by the incident and on the way back; not yet free.
    Returning,
    /// Not usable (maintenance, crew shortage, …) until returned to service.
    OutOfService,
}

impl UnitStatus {
    pub const ALL: [UnitStatus; 7] = [
        UnitStatus::Available,
        UnitStatus::Dispatched,
        UnitStatus::Enroute,
        UnitStatus::OnScene,
        UnitStatus::Staging,
        UnitStatus::Returning,
        UnitStatus::OutOfService,
    ];

    /// The wire / data spelling, e.g. `out_of_service`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitStatus::Available => "available",
            UnitStatus::Dispatched => "dispatched",
            UnitStatus::Enroute => "enroute",
            UnitStatus::OnScene => "on_scene",
            UnitStatus::Staging => "staging",
            UnitStatus::Returning => "returning",
            UnitStatus::OutOfService => "out_of_service",
        }
    }

    /// The display spelling, e.g. `OutOfService`.
    pub fn name(&self) -> &'static str {
        match self {
            UnitStatus::Available => "Available",
            UnitStatus::Dispatched => "Dispatched",
            UnitStatus::Enroute => "Enroute",
            UnitStatus::OnScene => "OnScene",
            UnitStatus::Staging => "Staging",
            UnitStatus::Returning => "Returning",
            UnitStatus::OutOfService => "OutOfService",
        }
    }

    /// True when the unit may be assigned to an incident now (only [`UnitStatus::Available`]).
    pub fn is_assignable(&self) -> bool {
        *self == UnitStatus::Available
    }

    /// True while the unit belongs to an incident (dispatched up to on scene or staging).
    pub fn is_committed(&self) -> bool {
        matches!(
            self,
            UnitStatus::Dispatched
                | UnitStatus::Enroute
                | UnitStatus::OnScene
                | UnitStatus::Staging
        )
    }
}

impl fmt::Display for UnitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A refused status change: `from → to`, and why, in words a dispatcher can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{from} → {to}: {reason}")]
pub struct TransitionError {
    pub from: UnitStatus,
    /// The status the move would have led to.
    pub to: UnitStatus,
    pub reason: String,
}

/// Why `from → to` is illegal, or `None` when it is legal.
fn refusal(from: UnitStatus, to: UnitStatus) -> Option<String> {
    use UnitStatus::*;
    let reason = match (from, to) {
        // The legal moves.
        (Available, Dispatched | OutOfService)
        | (Dispatched, Enroute | Available | OutOfService)
        | (Enroute, OnScene | Staging | Returning | OutOfService)
        | (Staging, OnScene | Returning | OutOfService)
        | (OnScene, Returning | OutOfService)
        | (Returning, Available | OutOfService)
        | (OutOfService, Available) => return None,

        (from, to) if from == to => {
            return Some(format!(
                "the unit is already {from}; nothing to change (a duplicate message?)"
            ));
        }

        (OutOfService, Dispatched) => {
            "an out-of-service unit cannot be dispatched; return it to service first"
        }
        (Enroute | OnScene | Staging, Dispatched) => {
            "the unit is already committed to an incident; release it first"
        }
        (Returning, Dispatched) => {
            "a returning unit must clear (report available) before it is dispatched again"
        }

        (Available | Returning, Enroute) => {
            "only a dispatched unit can acknowledge and go en route; assign it first"
        }
        (OutOfService, Enroute) => {
            "an out-of-service unit cannot respond; return it to service and assign it first"
        }
        (OnScene | Staging, Enroute) => "the unit has already reached the incident",

        (Available | Returning | OutOfService, OnScene) => {
            "only a unit en route to an incident can arrive on scene; assign it first"
        }
        (Dispatched, OnScene) => {
            "the unit must acknowledge the assignment (go en route) before it arrives"
        }

        (Available | Returning | OutOfService, Staging) => {
            "only a unit en route to an incident can stage; assign it first"
        }
        (Dispatched, Staging) => {
            "the unit must acknowledge the assignment (go en route) before it stages"
        }
        (OnScene, Staging) => "a unit on scene cannot go back to staging; release it instead",

        (Available, Returning) => "an available unit has no incident to return from",
        (Dispatched, Returning) => {
            "a dispatched unit that has not acknowledged has not left; release it to available instead"
        }
        (OutOfService, Returning) => {
            "an out-of-service unit is not returning from an incident; return it to service instead"
        }

        (Enroute | Staging | OnScene, Available) => {
            "a committed unit must be released (returning) before it is available again"
        }

        // Every pair is covered above; this arm keeps the match total if a status is added.
        _ => "this status change is not part of the unit lifecycle",
    };
    Some(reason.to_string())
}

/// Checks one status change against the lifecycle.
pub fn transition(from: UnitStatus, to: UnitStatus) -> Result<(), TransitionError> {
    match refusal(from, to) {
        None => Ok(()),
        Some(reason) => Err(TransitionError { from, to, reason }),
    }
}

/// Something a dispatcher, the unit or a timer says about a unit. Incident-scoped events name
/// the incident, so a stale or misrouted message about an earlier assignment is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UnitEvent {
    /// Available → Dispatched.
    Assign { incident_id: String },
    /// Dispatched → Enroute.
    Acknowledge { incident_id: String },
    /// Dispatched → Available; the reason is required.
    Decline { incident_id: String, reason: String },
    /// Dispatched → Available, when no acknowledgement arrived in time.
    AcknowledgementTimedOut { incident_id: String },
    /// Enroute → Staging.
    Stage { incident_id: String },
    /// Enroute or Staging → OnScene.
    Arrive { incident_id: String },
    /// The incident lets the unit go: Dispatched → Available, Enroute/Staging/OnScene → Returning.
    Release { incident_id: String },
    /// Returning → Available (back in quarters or available on the radio).
    Clear,
    /// Any in-service status → OutOfService; the reason is required.
    GoOutOfService { reason: String },
    /// OutOfService → Available.
    ReturnToService,
}

impl UnitEvent {
    pub fn name(&self) -> &'static str {
        match self {
            UnitEvent::Assign { .. } => "assign",
            UnitEvent::Acknowledge { .. } => "acknowledge",
            UnitEvent::Decline { .. } => "decline",
            UnitEvent::AcknowledgementTimedOut { .. } => "acknowledgement_timed_out",
            UnitEvent::Stage { .. } => "stage",
            UnitEvent::Arrive { .. } => "arrive",
            UnitEvent::Release { .. } => "release",
            UnitEvent::Clear => "clear",
            UnitEvent::GoOutOfService { .. } => "go_out_of_service",
            UnitEvent::ReturnToService => "return_to_service",
        }
    }

    /// The incident the event is about, if it is incident-scoped.
    pub fn incident_id(&self) -> Option<&str> {
        match self {
            UnitEvent::Assign { incident_id }
            | UnitEvent::Acknowledge { incident_id }
            | UnitEvent::Decline { incident_id, .. }
            | UnitEvent::AcknowledgementTimedOut { incident_id }
            | UnitEvent::Stage { incident_id }
            | UnitEvent::Arrive { incident_id }
            | UnitEvent::Release { incident_id } => Some(incident_id),
            UnitEvent::Clear | UnitEvent::GoOutOfService { .. } | UnitEvent::ReturnToService => {
                None
            }
        }
    }

    /// The status this event leads to from `from` (whether or not the move is legal).
    pub fn target(&self, from: UnitStatus) -> UnitStatus {
        match self {
            UnitEvent::Assign { .. } => UnitStatus::Dispatched,
            UnitEvent::Acknowledge { .. } => UnitStatus::Enroute,
            UnitEvent::Decline { .. } | UnitEvent::AcknowledgementTimedOut { .. } => {
                UnitStatus::Available
            }
            UnitEvent::Stage { .. } => UnitStatus::Staging,
            UnitEvent::Arrive { .. } => UnitStatus::OnScene,
            UnitEvent::Release { .. } => match from {
                UnitStatus::Dispatched => UnitStatus::Available,
                _ => UnitStatus::Returning,
            },
            UnitEvent::Clear | UnitEvent::ReturnToService => UnitStatus::Available,
            UnitEvent::GoOutOfService { .. } => UnitStatus::OutOfService,
        }
    }
}

/// One accepted status change: what to record as a unit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub unit_id: String,
    pub from: UnitStatus,
    pub to: UnitStatus,
    /// The incident the change concerns (the one assigned, declined, released, …).
    pub incident_id: Option<String>,
    /// The decline or out-of-service reason.
    pub reason: Option<String>,
    pub at_unix_ms: i64,
}

/// One unit's lifecycle state. Invariant: `incident_id` is `Some` exactly while the status is
/// committed ([`UnitStatus::is_committed`]), and `out_of_service_reason` is `Some` exactly while
/// the unit is out of service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    pub unit_id: String,
    pub status: UnitStatus,
    pub incident_id: Option<String>,
    pub out_of_service_reason: Option<String>,
    /// When the current status began.
    pub since_unix_ms: i64,
}

impl UnitState {
    /// A unit entering service, available.
    pub fn new(unit_id: impl Into<String>, now_unix_ms: i64) -> UnitState {
        UnitState {
            unit_id: unit_id.into(),
            status: UnitStatus::Available,
            incident_id: None,
            out_of_service_reason: None,
            since_unix_ms: now_unix_ms,
        }
    }

    /// Applies `event`, or refuses it and leaves the state unchanged.
    pub fn apply(
        &mut self,
        event: &UnitEvent,
        now_unix_ms: i64,
    ) -> Result<StatusChange, TransitionError> {
        let from = self.status;
        let to = event.target(from);
        let refuse = |reason: String| TransitionError { from, to, reason };
        transition(from, to)?;

        // The pair is legal; now check that this event is the one that makes it.
        let event_fits = match event {
            UnitEvent::Assign { .. } => from == UnitStatus::Available,
            UnitEvent::Acknowledge { .. }
            | UnitEvent::Decline { .. }
            | UnitEvent::AcknowledgementTimedOut { .. } => from == UnitStatus::Dispatched,
            UnitEvent::Stage { .. } => from == UnitStatus::Enroute,
            UnitEvent::Arrive { .. } => {
                matches!(from, UnitStatus::Enroute | UnitStatus::Staging)
            }
            UnitEvent::Release { .. } => from.is_committed(),
            UnitEvent::Clear => from == UnitStatus::Returning,
            UnitEvent::GoOutOfService { .. } => from != UnitStatus::OutOfService,
            UnitEvent::ReturnToService => from == UnitStatus::OutOfService,
        };
        if !event_fits {
            let hint = match event {
                UnitEvent::Decline { .. } | UnitEvent::AcknowledgementTimedOut { .. } => {
                    "only a dispatched unit that has not yet acknowledged can decline or time out"
                }
                UnitEvent::Clear => "only a returning unit can clear",
                UnitEvent::ReturnToService => "only an out-of-service unit can return to service",
                _ => "this event does not apply in the unit's current status",
            };
            return Err(refuse(format!("{}: {hint}", event.name())));
        }

        // Incident-scoped events must concern the incident the unit is on.
        if let (Some(event_incident), Some(current)) = (event.incident_id(), &self.incident_id)
            && event_incident != current
        {
            return Err(refuse(format!(
                "{}: the unit is on incident {current:?}, not {event_incident:?} (a stale or misrouted message?)",
                event.name()
            )));
        }

        let reason = match event {
            UnitEvent::Decline { reason, .. } | UnitEvent::GoOutOfService { reason } => {
                if reason.trim().is_empty() {
                    return Err(refuse(format!("{}: a reason is required", event.name())));
                }
                Some(reason.trim().to_string())
            }
            _ => None,
        };

        let incident_id = event
            .incident_id()
            .map(str::to_string)
            .or_else(|| self.incident_id.clone());
        self.status = to;
        self.incident_id = if to.is_committed() {
            incident_id.clone()
        } else {
            None
        };
        self.out_of_service_reason = if to == UnitStatus::OutOfService {
            reason.clone()
        } else {
            None
        };
        self.since_unix_ms = now_unix_ms;
        Ok(StatusChange {
            unit_id: self.unit_id.clone(),
            from,
            to,
            incident_id,
            reason,
            at_unix_ms: now_unix_ms,
        })
    }
}
