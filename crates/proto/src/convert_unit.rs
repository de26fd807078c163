//! Wire ⇄ domain conversions for unit messages: statuses, lifecycle events, position reports and
//! the `UnitEvent` envelope that dispatch writes to its outbox.

use domain::geo::GeoPoint;
use domain::region::Unit;
use domain::unit::{StatusChange, UnitEvent, UnitStatus};
use prost::Message;

use crate::convert::{point_from_wire, point_to_wire};
use crate::v1 as pb;

/// Longest decline or out-of-service reason accepted, in characters.
pub const REASON_CHARS_MAX: usize = 200;
/// Longest incident id accepted in a lifecycle event, in bytes.
pub const INCIDENT_ID_BYTES_MAX: usize = 64;

pub fn status_to_wire(status: UnitStatus) -> pb::UnitStatus {
    match status {
        UnitStatus::Available => pb::UnitStatus::Available,
        UnitStatus::Dispatched => pb::UnitStatus::Dispatched,
        UnitStatus::Enroute => pb::UnitStatus::Enroute,
        UnitStatus::OnScene => pb::UnitStatus::OnScene,
        UnitStatus::Staging => pb::UnitStatus::Staging,
        UnitStatus::Returning => pb::UnitStatus::Returning,
        UnitStatus::OutOfService => pb::UnitStatus::OutOfService,
    }
}

pub fn status_from_wire(status: pb::UnitStatus) -> Option<UnitStatus> {
    match status {
        pb::UnitStatus::Unspecified => None,
        pb::UnitStatus::Available => Some(UnitStatus::Available),
        pb::UnitStatus::Dispatched => Some(UnitStatus::Dispatched),
        pb::UnitStatus::Enroute => Some(UnitStatus::Enroute),
        pb::UnitStatus::OnScene => Some(UnitStatus::OnScene),
        pb::UnitStatus::Staging => Some(UnitStatus::Staging),
        pb::UnitStatus::Returning => Some(UnitStatus::Returning),
        pb::UnitStatus::OutOfService => Some(UnitStatus::OutOfService),
    }
}

/// The lifecycle event an `UpdateUnitStatus` request asks for, or a sentence saying what is wrong.
pub fn unit_event_from_wire(
    event: i32,
    incident_id: &str,
    reason: &str,
) -> Result<UnitEvent, String> {
    let kind = pb::UnitStatusEvent::try_from(event)
        .map_err(|_| format!("event {event} is not a known UnitStatusEvent"))?;
    let incident_id = incident_id.trim().to_string();
    if incident_id.len() > INCIDENT_ID_BYTES_MAX {
        return Err(format!(
            "incident_id is {} bytes; at most {INCIDENT_ID_BYTES_MAX}",
            incident_id.len()
        ));
    }
    if reason.chars().count() > REASON_CHARS_MAX {
        return Err(format!(
            "reason is longer than {REASON_CHARS_MAX} characters"
        ));
    }
    let reason = reason.trim().to_string();
    let need_incident = |name: &str| -> Result<String, String> {
        if incident_id.is_empty() {
            Err(format!("{name} needs the incident_id it concerns"))
        } else {
            Ok(incident_id.clone())
        }
    };
    Ok(match kind {
        pb::UnitStatusEvent::Unspecified => {
            return Err("event is required (acknowledge, decline, stage, arrive, release, clear, go_out_of_service or return_to_service)".into());
        }
        pb::UnitStatusEvent::Acknowledge => UnitEvent::Acknowledge {
            incident_id: need_incident("acknowledge")?,
        },
        pb::UnitStatusEvent::Decline => UnitEvent::Decline {
            incident_id: need_incident("decline")?,
            reason,
        },
        pb::UnitStatusEvent::Stage => UnitEvent::Stage {
            incident_id: need_incident("stage")?,
        },
        pb::UnitStatusEvent::Arrive => UnitEvent::Arrive {
            incident_id: need_incident("arrive")?,
        },
        pb::UnitStatusEvent::Release => UnitEvent::Release {
            incident_id: need_incident("release")?,
        },
        pb::UnitStatusEvent::Clear => UnitEvent::Clear,
        pb::UnitStatusEvent::GoOutOfService => UnitEvent::GoOutOfService { reason },
        pb::UnitStatusEvent::ReturnToService => UnitEvent::ReturnToService,
    })
}

/// A position report as it came off the wire (ranges not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct PositionReport {
    pub unit_id: String,
    pub position: GeoPoint,
    pub at_unix_ms: i64,
}

/// Decodes a `UnitPosition` published on `muster.<ns>.unit.<id>.position`.
pub fn decode_unit_position(bytes: &[u8]) -> Result<PositionReport, String> {
    let wire = pb::UnitPosition::decode(bytes)
        .map_err(|e| format!("not a muster.v1.UnitPosition: {e}"))?;
    Ok(PositionReport {
        unit_id: wire.unit_id,
        position: GeoPoint {
            lat: wire.lat,
            lon: wire.lon,
        },
        at_unix_ms: wire.at_unix_ms,
    })
}

/// Encodes a `UnitPosition`, as a unit or AVL gateway would publish it.
pub fn encode_unit_position(report: &PositionReport) -> Vec<u8> {
    pb::UnitPosition {
        unit_id: report.unit_id.clone(),
        lat: report.position.lat,
        lon: report.position.lon,
        at_unix_ms: report.at_unix_ms,
    }
    .encode_to_vec()
}

/// Decodes and validates a `UnitStatusCommand` published on `muster.<ns>.unit.<id>.command`
/// into the lifecycle event it asks for (validated like `UpdateUnitStatus`).
pub fn decode_unit_command(bytes: &[u8]) -> Result<UnitEvent, String> {
    let wire = pb::UnitStatusCommand::decode(bytes)
        .map_err(|e| format!("not a muster.v1.UnitStatusCommand: {e}"))?;
    unit_event_from_wire(wire.event, &wire.incident_id, &wire.reason)
}

/// Encodes a `UnitStatusCommand`, as a unit's terminal would publish it.
pub fn encode_unit_command(
    event: pb::UnitStatusEvent,
    incident_id: &str,
    reason: &str,
    at_unix_ms: i64,
) -> Vec<u8> {
    pb::UnitStatusCommand {
        event: event as i32,
        incident_id: incident_id.to_string(),
        reason: reason.to_string(),
        at_unix_ms,
    }
    .encode_to_vec()
}

/// What changed about a unit, for its `UnitEvent`.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitChange {
    /// The registry entry as registered; its position was taken at `position_at_unix_ms`.
    Registered {
        unit: Unit,
        position_at_unix_ms: i64,
    },
    /// The registry entry after an update.
    Updated {
        unit: Unit,
        position_at_unix_ms: i64,
    },
    Retired {
        reason: String,
    },
    /// A status change and the lifecycle event that caused it.
    StatusChanged {
        change: StatusChange,
        cause: String,
    },
    PositionReported {
        position: GeoPoint,
        at_unix_ms: i64,
    },
}

/// A decoded `UnitEvent`.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitEventRecord {
    pub unit_id: String,
    pub namespace: String,
    pub at_unix_ms: i64,
    pub source_service: String,
    pub change: UnitChange,
}

fn details_to_wire(unit: &Unit, position_at_unix_ms: i64) -> pb::UnitDetails {
    pb::UnitDetails {
        call_sign: unit.call_sign.clone(),
        unit_type: unit.unit_type.clone(),
        capabilities: unit.capabilities.clone(),
        crew_size: unit.crew_size,
        home_township_code: unit.home_township.clone(),
        jurisdiction_code: unit.jurisdiction.clone(),
        position: Some(point_to_wire(unit.position)),
        position_at_unix_ms,
    }
}

fn details_from_wire(unit_id: &str, details: &pb::UnitDetails) -> (Unit, i64) {
    (
        Unit {
            id: unit_id.to_string(),
            call_sign: details.call_sign.clone(),
            unit_type: details.unit_type.clone(),
            home_township: details.home_township_code.clone(),
            jurisdiction: details.jurisdiction_code.clone(),
            position: point_from_wire(details.position.as_ref()),
            capabilities: details.capabilities.clone(),
            crew_size: details.crew_size,
        },
        details.position_at_unix_ms,
    )
}

/// Encodes a unit event for the outbox.
pub fn encode_unit_event(event: &UnitEventRecord) -> Vec<u8> {
    use pb::unit_event::Body;
    let body = match &event.change {
        UnitChange::Registered {
            unit,
            position_at_unix_ms,
        } => Body::Registered(details_to_wire(unit, *position_at_unix_ms)),
        UnitChange::Updated {
            unit,
            position_at_unix_ms,
        } => Body::Updated(details_to_wire(unit, *position_at_unix_ms)),
        UnitChange::Retired { reason } => Body::Retired(pb::UnitRetired {
            reason: reason.clone(),
        }),
        UnitChange::StatusChanged { change, cause } => Body::StatusChanged(pb::UnitStatusChanged {
            from: status_to_wire(change.from) as i32,
            to: status_to_wire(change.to) as i32,
            cause: cause.clone(),
            incident_id: change.incident_id.clone().unwrap_or_default(),
            reason: change.reason.clone().unwrap_or_default(),
        }),
        UnitChange::PositionReported {
            position,
            at_unix_ms,
        } => Body::PositionReported(pb::UnitPosition {
            unit_id: event.unit_id.clone(),
            lat: position.lat,
            lon: position.lon,
            at_unix_ms: *at_unix_ms,
        }),
    };
    pb::UnitEvent {
        unit_id: event.unit_id.clone(),
        namespace: event.namespace.clone(),
        at_unix_ms: event.at_unix_ms,
        source_service: event.source_service.clone(),
        body: Some(body),
    }
    .encode_to_vec()
}

/// Decodes a unit event from the bus.
pub fn decode_unit_event(bytes: &[u8]) -> Result<UnitEventRecord, String> {
    use pb::unit_event::Body;
    let wire =
        pb::UnitEvent::decode(bytes).map_err(|e| format!("not a muster.v1.UnitEvent: {e}"))?;
    let status = |value: i32, field: &str| {
        pb::UnitStatus::try_from(value)
            .ok()
            .and_then(status_from_wire)
            .ok_or_else(|| format!("status_changed.{field}: {value} is not a unit status"))
    };
    let change = match wire.body.as_ref().ok_or("unit event without a body")? {
        Body::Registered(details) => {
            let (unit, position_at_unix_ms) = details_from_wire(&wire.unit_id, details);
            UnitChange::Registered {
                unit,
                position_at_unix_ms,
            }
        }
        Body::Updated(details) => {
            let (unit, position_at_unix_ms) = details_from_wire(&wire.unit_id, details);
            UnitChange::Updated {
                unit,
                position_at_unix_ms,
            }
        }
        Body::Retired(retired) => UnitChange::Retired {
            reason: retired.reason.clone(),
        },
        Body::StatusChanged(changed) => UnitChange::StatusChanged {
            change: StatusChange {
                unit_id: wire.unit_id.clone(),
                from: status(changed.from, "from")?,
                to: status(changed.to, "to")?,
                incident_id: Some(changed.incident_id.clone()).filter(|s| !s.is_empty()),
                reason: Some(changed.reason.clone()).filter(|s| !s.is_empty()),
                at_unix_ms: wire.at_unix_ms,
            },
            cause: changed.cause.clone(),
        },
        Body::PositionReported(position) => UnitChange::PositionReported {
            position: GeoPoint {
                lat: position.lat,
                lon: position.lon,
            },
            at_unix_ms: position.at_unix_ms,
        },
    };
    Ok(UnitEventRecord {
        unit_id: wire.unit_id,
        namespace: wire.namespace,
        at_unix_ms: wire.at_unix_ms,
        source_service: wire.source_service,
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips() {
        for status in UnitStatus::ALL {
            assert_eq!(status_from_wire(status_to_wire(status)), Some(status));
        }
    }

    #[test]
    fn a_status_change_event_round_trips() {
        let event = UnitEventRecord {
            unit_id: "HZ-1".into(),
            namespace: "live".into(),
            at_unix_ms: 42,
            source_service: "dispatch".into(),
            change: UnitChange::StatusChanged {
                change: StatusChange {
                    unit_id: "HZ-1".into(),
                    from: UnitStatus::Available,
                    to: UnitStatus::OutOfService,
                    incident_id: None,
                    reason: Some("pump broken".into()),
                    at_unix_ms: 42,
                },
                cause: "go_out_of_service".into(),
            },
        };
        assert_eq!(decode_unit_event(&encode_unit_event(&event)), Ok(event));
    }

    #[test]
    fn incident_scoped_events_need_the_incident() {
        let problem =
            unit_event_from_wire(pb::UnitStatusEvent::Acknowledge as i32, "", "").unwrap_err();
        assert!(problem.contains("incident_id"), "{problem}");
        assert!(unit_event_from_wire(99, "INC-1", "").is_err());
        assert_eq!(
            unit_event_from_wire(pb::UnitStatusEvent::Clear as i32, "", ""),
            Ok(UnitEvent::Clear)
        );
    }
}
