//! The one place that knows both the wire types (`muster.v1`) and the domain types.
//!
//! Wire to domain conversions that can fail return the problems as readable sentences naming the
//! field, so a gRPC edge can answer `INVALID_ARGUMENT` with something a person can act on.

use domain::class::IncidentClass;
use domain::event::{
    Acknowledged, Assignment, DowngradeProposed, Escalated, EventBody, Graded, IncidentClosed,
    IncidentEvent, IncidentReport, IncidentUpdated, JurisdictionRef, LeadChanged, MutualAid,
    Shortfall, ShortfallCause, SkipLevelReported, UnitsAssigned,
};
use domain::geo::GeoPoint;
use domain::grade::{DensityClass, Facts, Grade, WarningLevel};
use domain::jurisdiction::{Jurisdiction, Level};
use prost::Message;

use crate::v1 as pb;

/// Largest count (deaths, missing, injuries) accepted from a report.
pub const COUNT_MAX: i64 = 10_000_000;
/// Largest direct loss accepted, in CNY (10 trillion).
pub const LOSS_CNY_MAX: i64 = 10_000_000_000_000;

pub fn class_to_wire(class: IncidentClass) -> pb::IncidentClass {
    match class {
        IncidentClass::NaturalDisaster => pb::IncidentClass::NaturalDisaster,
        IncidentClass::Accident => pb::IncidentClass::Accident,
        IncidentClass::PublicHealth => pb::IncidentClass::PublicHealth,
        IncidentClass::SocialSafety => pb::IncidentClass::SocialSafety,
        IncidentClass::Unclassified => pb::IncidentClass::Unclassified,
    }
}

pub fn warning_to_wire(warning: Option<WarningLevel>) -> pb::WarningLevel {
    match warning {
        None => pb::WarningLevel::Unspecified,
        Some(WarningLevel::Red) => pb::WarningLevel::Red,
        Some(WarningLevel::Orange) => pb::WarningLevel::Orange,
        Some(WarningLevel::Yellow) => pb::WarningLevel::Yellow,
        Some(WarningLevel::Blue) => pb::WarningLevel::Blue,
    }
}

pub fn warning_from_wire(warning: pb::WarningLevel) -> Option<WarningLevel> {
    match warning {
        pb::WarningLevel::Unspecified => None,
        pb::WarningLevel::Red => Some(WarningLevel::Red),
        pb::WarningLevel::Orange => Some(WarningLevel::Orange),
        pb::WarningLevel::Yellow => Some(WarningLevel::Yellow),
        pb::WarningLevel::Blue => Some(WarningLevel::Blue),
    }
}

pub fn class_from_wire(class: pb::IncidentClass) -> Option<IncidentClass> {
    match class {
        pb::IncidentClass::Unspecified => None,
        pb::IncidentClass::NaturalDisaster => Some(IncidentClass::NaturalDisaster),
        pb::IncidentClass::Accident => Some(IncidentClass::Accident),
        pb::IncidentClass::PublicHealth => Some(IncidentClass::PublicHealth),
        pb::IncidentClass::SocialSafety => Some(IncidentClass::SocialSafety),
        pb::IncidentClass::Unclassified => Some(IncidentClass::Unclassified),
    }
}

pub fn grade_to_wire(grade: Option<Grade>) -> pb::Grade {
    match grade {
        None => pb::Grade::Unspecified,
        Some(Grade::I) => pb::Grade::I,
        Some(Grade::II) => pb::Grade::Ii,
        Some(Grade::III) => pb::Grade::Iii,
        Some(Grade::IV) => pb::Grade::Iv,
    }
}

pub fn grade_from_wire(grade: pb::Grade) -> Option<Grade> {
    match grade {
        pb::Grade::Unspecified => None,
        pb::Grade::I => Some(Grade::I),
        pb::Grade::Ii => Some(Grade::II),
        pb::Grade::Iii => Some(Grade::III),
        pb::Grade::Iv => Some(Grade::IV),
    }
}

pub fn level_to_wire(level: Level) -> pb::JurisdictionLevel {
    match level {
        Level::National => pb::JurisdictionLevel::National,
        Level::Province => pb::JurisdictionLevel::Province,
        Level::City => pb::JurisdictionLevel::City,
        Level::County => pb::JurisdictionLevel::County,
        Level::Township => pb::JurisdictionLevel::Township,
    }
}

pub fn level_from_wire(level: pb::JurisdictionLevel) -> Option<Level> {
    match level {
        pb::JurisdictionLevel::Unspecified => None,
        pb::JurisdictionLevel::National => Some(Level::National),
        pb::JurisdictionLevel::Province => Some(Level::Province),
        pb::JurisdictionLevel::City => Some(Level::City),
        pb::JurisdictionLevel::County => Some(Level::County),
        pb::JurisdictionLevel::Township => Some(Level::Township),
    }
}

pub fn density_to_wire(density: Option<DensityClass>) -> pb::DensityClass {
    match density {
        None => pb::DensityClass::Unspecified,
        Some(DensityClass::Sparse) => pb::DensityClass::Sparse,
        Some(DensityClass::FairlyDense) => pb::DensityClass::FairlyDense,
        Some(DensityClass::Dense) => pb::DensityClass::Dense,
    }
}

pub fn point_to_wire(point: GeoPoint) -> pb::GeoPoint {
    pb::GeoPoint {
        lat: point.lat,
        lon: point.lon,
    }
}

pub fn point_from_wire(point: Option<&pb::GeoPoint>) -> GeoPoint {
    point.map_or(GeoPoint { lat: 0.0, lon: 0.0 }, |p| GeoPoint {
        lat: p.lat,
        lon: p.lon,
    })
}

pub fn facts_to_wire(facts: &Facts) -> pb::Facts {
    pb::Facts {
        deaths: facts.deaths.map(i64::from),
        missing: facts.missing.map(i64::from),
        serious_injuries: facts.serious_injuries.map(i64::from),
        direct_loss_cny: facts.direct_loss_cny.map(|v| v as i64),
        magnitude: facts.magnitude,
        people_affected: facts.people_affected.map(i64::from),
        people_evacuated: facts.people_evacuated.map(i64::from),
    }
}

/// Checks and converts reported facts; each problem names the field and says what is allowed.
pub fn facts_from_wire(facts: Option<&pb::Facts>) -> Result<Facts, Vec<String>> {
    let Some(facts) = facts else {
        return Ok(Facts::default());
    };
    let mut problems = Vec::new();
    let mut count = |field: &str, value: Option<i64>| -> Option<u32> {
        let value = value?;
        if !(0..=COUNT_MAX).contains(&value) {
            problems.push(format!(
                "facts.{field} is {value}: a count must be between 0 and {COUNT_MAX}"
            ));
            return None;
        }
        Some(value as u32)
    };
    let deaths = count("deaths", facts.deaths);
    let missing = count("missing", facts.missing);
    let serious_injuries = count("serious_injuries", facts.serious_injuries);
    let people_affected = count("people_affected", facts.people_affected);
    let people_evacuated = count("people_evacuated", facts.people_evacuated);
    let direct_loss_cny = match facts.direct_loss_cny {
        Some(value) if !(0..=LOSS_CNY_MAX).contains(&value) => {
            problems.push(format!(
                "facts.direct_loss_cny is {value}: a loss must be between 0 and {LOSS_CNY_MAX} CNY"
            ));
            None
        }
        other => other.map(|v| v as u64),
    };
    let magnitude = match facts.magnitude {
        Some(m) if !m.is_finite() || !(0.0..=10.0).contains(&m) => {
            problems.push(format!(
                "facts.magnitude is {m}: a magnitude must be between 0.0 and 10.0"
            ));
            None
        }
        other => other,
    };
    if problems.is_empty() {
        Ok(Facts {
            deaths,
            missing,
            serious_injuries,
            direct_loss_cny,
            magnitude,
            people_affected,
            people_evacuated,
        })
    } else {
        Err(problems)
    }
}

pub fn report_to_wire(report: &IncidentReport) -> pb::IncidentReport {
    pb::IncidentReport {
        kind: report.kind.clone(),
        class: class_to_wire(report.class) as i32,
        township_code: report.township_code.clone(),
        other_township_codes: report.other_township_codes.clone(),
        location: Some(point_to_wire(report.location)),
        location_reported: report.location_reported,
        facts: Some(facts_to_wire(&report.facts)),
        summary: report.summary.clone(),
        reported_by: report.reported_by.clone(),
        warning_level: warning_to_wire(report.warning) as i32,
    }
}

fn report_from_wire(report: &pb::IncidentReport) -> Result<IncidentReport, String> {
    let class = class_from_wire(report.class())
        .or_else(|| domain::class::sub_type(&report.kind).map(|s| s.class))
        .ok_or_else(|| format!("report of unknown kind {:?} has no class", report.kind))?;
    Ok(IncidentReport {
        kind: report.kind.clone(),
        class,
        township_code: report.township_code.clone(),
        other_township_codes: report.other_township_codes.clone(),
        location: point_from_wire(report.location.as_ref()),
        location_reported: report.location_reported,
        facts: facts_from_wire(report.facts.as_ref()).map_err(|p| p.join("; "))?,
        summary: report.summary.clone(),
        reported_by: report.reported_by.clone(),
        warning: warning_from_wire(report.warning_level()),
    })
}

pub fn graded_to_wire(graded: &Graded) -> pb::Graded {
    pb::Graded {
        grade: grade_to_wire(graded.grade) as i32,
        response_level: graded.response_level.map_or(0, u32::from),
        lead_jurisdiction_code: graded.lead_code.clone(),
        lead_jurisdiction_name: graded.lead_name.clone(),
        lead_level: level_to_wire(graded.lead_level) as i32,
        rule_id: graded.rule_id.clone(),
        rule_version: graded.rule_version,
        reason: graded.reason.clone(),
        initial_judgement: graded.initial_judgement,
        facts: Some(facts_to_wire(&graded.facts)),
        report: Some(report_to_wire(&graded.report)),
    }
}

fn graded_from_wire(graded: &pb::Graded) -> Result<Graded, String> {
    let report = graded
        .report
        .as_ref()
        .ok_or("graded event without its report")?;
    Ok(Graded {
        grade: grade_from_wire(graded.grade()),
        response_level: u8::try_from(graded.response_level)
            .ok()
            .filter(|l| (1..=4).contains(l)),
        lead_code: graded.lead_jurisdiction_code.clone(),
        lead_name: graded.lead_jurisdiction_name.clone(),
        lead_level: level_from_wire(graded.lead_level())
            .ok_or("graded event without a lead level")?,
        rule_id: graded.rule_id.clone(),
        rule_version: graded.rule_version,
        reason: graded.reason.clone(),
        initial_judgement: graded.initial_judgement,
        facts: facts_from_wire(graded.facts.as_ref()).map_err(|p| p.join("; "))?,
        report: report_from_wire(report)?,
    })
}

pub fn assignment_to_wire(a: &Assignment) -> pb::Assignment {
    pb::Assignment {
        unit_id: a.unit_id.clone(),
        call_sign: a.call_sign.clone(),
        unit_type: a.unit_type.clone(),
        distance_km: a.distance_km,
        reason: a.reason.clone(),
        reason_codes: a.reason_codes.clone(),
        eta_minutes: a.eta_minutes,
        cascade_depth: a.cascade_depth,
    }
}

pub fn shortfall_to_wire(s: &Shortfall) -> pb::Shortfall {
    pb::Shortfall {
        unit_type: s.unit_type.clone(),
        required: s.required,
        assigned: s.assigned,
        reason: s.reason.clone(),
        reason_codes: s.reason_codes.clone(),
        causes: s
            .causes
            .iter()
            .map(|c| pb::ShortfallCause {
                code: c.code.clone(),
                count: c.count,
            })
            .collect(),
    }
}

pub fn units_to_wire(units: &UnitsAssigned) -> pb::UnitsAssigned {
    pb::UnitsAssigned {
        plan_id: units.plan_id.clone(),
        assignments: units.assignments.iter().map(assignment_to_wire).collect(),
        shortfalls: units.shortfalls.iter().map(shortfall_to_wire).collect(),
        released_unit_ids: units.released_unit_ids.clone(),
    }
}

fn units_from_wire(units: &pb::UnitsAssigned) -> UnitsAssigned {
    UnitsAssigned {
        plan_id: units.plan_id.clone(),
        assignments: units
            .assignments
            .iter()
            .map(|a| Assignment {
                unit_id: a.unit_id.clone(),
                call_sign: a.call_sign.clone(),
                unit_type: a.unit_type.clone(),
                distance_km: a.distance_km,
                reason: a.reason.clone(),
                reason_codes: a.reason_codes.clone(),
                eta_minutes: a.eta_minutes,
                cascade_depth: a.cascade_depth,
            })
            .collect(),
        shortfalls: units
            .shortfalls
            .iter()
            .map(|s| Shortfall {
                unit_type: s.unit_type.clone(),
                required: s.required,
                assigned: s.assigned,
                reason: s.reason.clone(),
                reason_codes: s.reason_codes.clone(),
                causes: s
                    .causes
                    .iter()
                    .map(|c| ShortfallCause {
                        code: c.code.clone(),
                        count: c.count,
                    })
                    .collect(),
            })
            .collect(),
        released_unit_ids: units.released_unit_ids.clone(),
    }
}

fn jurisdiction_ref_from_wire(
    field: &str,
    code: &str,
    name: &str,
    level: i32,
) -> Result<JurisdictionRef, String> {
    let level = pb::JurisdictionLevel::try_from(level)
        .ok()
        .and_then(level_from_wire)
        .ok_or_else(|| format!("{field}: the jurisdiction level is missing or unknown"))?;
    Ok(JurisdictionRef {
        code: code.to_string(),
        name: name.to_string(),
        level,
    })
}

pub fn acknowledged_to_wire(ack: &Acknowledged) -> pb::Acknowledged {
    pb::Acknowledged {
        by: ack.by.clone(),
        jurisdiction_code: ack.jurisdiction.code.clone(),
        jurisdiction_name: ack.jurisdiction.name.clone(),
        jurisdiction_level: level_to_wire(ack.jurisdiction.level) as i32,
    }
}

fn acknowledged_from_wire(ack: &pb::Acknowledged) -> Result<Acknowledged, String> {
    Ok(Acknowledged {
        by: ack.by.clone(),
        jurisdiction: jurisdiction_ref_from_wire(
            "acknowledged",
            &ack.jurisdiction_code,
            &ack.jurisdiction_name,
            ack.jurisdiction_level,
        )?,
    })
}

pub fn escalated_to_wire(escalated: &Escalated) -> pb::Escalated {
    pb::Escalated {
        from_jurisdiction_code: escalated.from.code.clone(),
        from_jurisdiction_name: escalated.from.name.clone(),
        from_level: level_to_wire(escalated.from.level) as i32,
        to_jurisdiction_code: escalated.to.code.clone(),
        to_jurisdiction_name: escalated.to.name.clone(),
        to_level: level_to_wire(escalated.to.level) as i32,
        reason: escalated.reason.clone(),
        manual: escalated.manual,
    }
}

fn escalated_from_wire(escalated: &pb::Escalated) -> Result<Escalated, String> {
    Ok(Escalated {
        from: jurisdiction_ref_from_wire(
            "escalated.from",
            &escalated.from_jurisdiction_code,
            &escalated.from_jurisdiction_name,
            escalated.from_level,
        )?,
        to: jurisdiction_ref_from_wire(
            "escalated.to",
            &escalated.to_jurisdiction_code,
            &escalated.to_jurisdiction_name,
            escalated.to_level,
        )?,
        reason: escalated.reason.clone(),
        manual: escalated.manual,
    })
}

pub fn jurisdiction_ref_to_wire(j: &JurisdictionRef) -> pb::JurisdictionRef {
    pb::JurisdictionRef {
        code: j.code.clone(),
        name: j.name.clone(),
        level: level_to_wire(j.level) as i32,
    }
}

fn jurisdiction_ref_message_from_wire(
    field: &str,
    j: Option<&pb::JurisdictionRef>,
) -> Result<JurisdictionRef, String> {
    let j = j.ok_or_else(|| format!("{field} is missing"))?;
    jurisdiction_ref_from_wire(field, &j.code, &j.name, j.level)
}

pub fn skip_level_reported_to_wire(skip: &SkipLevelReported) -> pb::SkipLevelReported {
    pb::SkipLevelReported {
        officer: skip.officer.clone(),
        from: Some(jurisdiction_ref_to_wire(&skip.from)),
        to: Some(jurisdiction_ref_to_wire(&skip.to)),
        skipped: skip.skipped.iter().map(jurisdiction_ref_to_wire).collect(),
        reason: skip.reason.clone(),
        obligation_id: skip.obligation_id,
    }
}

fn skip_level_reported_from_wire(
    skip: &pb::SkipLevelReported,
) -> Result<SkipLevelReported, String> {
    Ok(SkipLevelReported {
        officer: skip.officer.clone(),
        from: jurisdiction_ref_message_from_wire("skip_level_reported.from", skip.from.as_ref())?,
        to: jurisdiction_ref_message_from_wire("skip_level_reported.to", skip.to.as_ref())?,
        skipped: skip
            .skipped
            .iter()
            .map(|j| jurisdiction_ref_message_from_wire("skip_level_reported.skipped", Some(j)))
            .collect::<Result<_, _>>()?,
        reason: skip.reason.clone(),
        obligation_id: skip.obligation_id,
    })
}

pub fn mutual_aid_to_wire(aid: &MutualAid) -> pb::MutualAid {
    pb::MutualAid {
        request_id: aid.request_id.clone(),
        from: Some(jurisdiction_ref_to_wire(&aid.from)),
        to: Some(jurisdiction_ref_to_wire(&aid.to)),
        resource_type: aid.resource_type.clone(),
        quantity: aid.quantity,
        unit_ids: aid.unit_ids.clone(),
        reason_code: aid.reason_code.clone(),
        reason: aid.reason.clone(),
        cascade_depth: aid.cascade_depth,
    }
}

fn mutual_aid_from_wire(field: &str, aid: &pb::MutualAid) -> Result<MutualAid, String> {
    if aid.request_id.is_empty() {
        return Err(format!("{field}.request_id is empty"));
    }
    Ok(MutualAid {
        request_id: aid.request_id.clone(),
        from: jurisdiction_ref_message_from_wire(&format!("{field}.from"), aid.from.as_ref())?,
        to: jurisdiction_ref_message_from_wire(&format!("{field}.to"), aid.to.as_ref())?,
        resource_type: aid.resource_type.clone(),
        quantity: aid.quantity,
        unit_ids: aid.unit_ids.clone(),
        reason_code: aid.reason_code.clone(),
        reason: aid.reason.clone(),
        cascade_depth: aid.cascade_depth,
    })
}

pub fn lead_changed_to_wire(change: &LeadChanged) -> pb::LeadChanged {
    pb::LeadChanged {
        from_jurisdiction_code: change.from.code.clone(),
        from_jurisdiction_name: change.from.name.clone(),
        from_level: level_to_wire(change.from.level) as i32,
        to_jurisdiction_code: change.to.code.clone(),
        to_jurisdiction_name: change.to.name.clone(),
        to_level: level_to_wire(change.to.level) as i32,
        reason: change.reason.clone(),
    }
}

fn lead_changed_from_wire(change: &pb::LeadChanged) -> Result<LeadChanged, String> {
    Ok(LeadChanged {
        from: jurisdiction_ref_from_wire(
            "lead_changed.from",
            &change.from_jurisdiction_code,
            &change.from_jurisdiction_name,
            change.from_level,
        )?,
        to: jurisdiction_ref_from_wire(
            "lead_changed.to",
            &change.to_jurisdiction_code,
            &change.to_jurisdiction_name,
            change.to_level,
        )?,
        reason: change.reason.clone(),
    })
}

pub fn updated_to_wire(update: &IncidentUpdated) -> pb::IncidentUpdated {
    pb::IncidentUpdated {
        facts: Some(facts_to_wire(&update.facts)),
        updated_by: update.updated_by.clone(),
        summary: update.summary.clone(),
        warning_level: warning_to_wire(update.warning) as i32,
    }
}

fn updated_from_wire(update: &pb::IncidentUpdated) -> Result<IncidentUpdated, String> {
    Ok(IncidentUpdated {
        facts: facts_from_wire(update.facts.as_ref())
            .map_err(|problems| format!("updated: {}", problems.join("; ")))?,
        updated_by: update.updated_by.clone(),
        summary: update.summary.clone(),
        warning: warning_from_wire(update.warning_level()),
    })
}

pub fn downgrade_proposed_to_wire(proposal: &DowngradeProposed) -> pb::DowngradeProposed {
    pb::DowngradeProposed {
        from: grade_to_wire(proposal.from) as i32,
        to: grade_to_wire(proposal.to) as i32,
        reason: proposal.reason.clone(),
    }
}

fn downgrade_proposed_from_wire(proposal: &pb::DowngradeProposed) -> DowngradeProposed {
    DowngradeProposed {
        from: grade_from_wire(proposal.from()),
        to: grade_from_wire(proposal.to()),
        reason: proposal.reason.clone(),
    }
}

/// Encodes an event for the bus.
pub fn encode_event(event: &IncidentEvent) -> Vec<u8> {
    event_to_wire(event).encode_to_vec()
}

/// An event as its wire message (`ListIncidentEvents` answers with these).
pub fn event_to_wire(event: &IncidentEvent) -> pb::IncidentEvent {
    let body = match &event.body {
        EventBody::Reported(report) => pb::incident_event::Body::Reported(report_to_wire(report)),
        EventBody::Graded(graded) => pb::incident_event::Body::Graded(graded_to_wire(graded)),
        EventBody::UnitsAssigned(units) => {
            pb::incident_event::Body::UnitsAssigned(units_to_wire(units))
        }
        EventBody::Updated(update) => pb::incident_event::Body::Updated(updated_to_wire(update)),
        EventBody::Acknowledged(ack) => {
            pb::incident_event::Body::Acknowledged(acknowledged_to_wire(ack))
        }
        EventBody::Escalated(escalated) => {
            pb::incident_event::Body::Escalated(escalated_to_wire(escalated))
        }
        EventBody::LeadChanged(change) => {
            pb::incident_event::Body::LeadChanged(lead_changed_to_wire(change))
        }
        EventBody::DowngradeProposed(proposal) => {
            pb::incident_event::Body::DowngradeProposed(downgrade_proposed_to_wire(proposal))
        }
        EventBody::Closed(closed) => pb::incident_event::Body::Closed(pb::IncidentClosed {
            by: closed.by.clone(),
            reason: closed.reason.clone(),
        }),
        EventBody::SkipLevelReported(skip) => {
            pb::incident_event::Body::SkipLevelReported(skip_level_reported_to_wire(skip))
        }
        EventBody::MutualAidRequested(aid) => {
            pb::incident_event::Body::MutualAidRequested(mutual_aid_to_wire(aid))
        }
        EventBody::MutualAidCommitted(aid) => {
            pb::incident_event::Body::MutualAidCommitted(mutual_aid_to_wire(aid))
        }
        EventBody::MutualAidDeclined(aid) => {
            pb::incident_event::Body::MutualAidDeclined(mutual_aid_to_wire(aid))
        }
        EventBody::MutualAidReleased(aid) => {
            pb::incident_event::Body::MutualAidReleased(mutual_aid_to_wire(aid))
        }
    };
    pb::IncidentEvent {
        event_id: event.event_id.clone(),
        incident_id: event.incident_id.clone(),
        namespace: event.namespace.clone(),
        at_unix_ms: event.at_unix_ms,
        source_service: event.source_service.clone(),
        body: Some(body),
    }
}

/// Decodes an event from the bus; `msg_id` (the `Nats-Msg-Id`) becomes its event id.
pub fn decode_event(bytes: &[u8], msg_id: &str) -> Result<IncidentEvent, String> {
    let wire = pb::IncidentEvent::decode(bytes)
        .map_err(|e| format!("not a muster.v1.IncidentEvent: {e}"))?;
    event_from_wire(wire, msg_id)
}

/// An event from its wire message; `msg_id` becomes its event id when the message has none.
pub fn event_from_wire(wire: pb::IncidentEvent, msg_id: &str) -> Result<IncidentEvent, String> {
    let body = match wire.body.as_ref().ok_or("event without a body")? {
        pb::incident_event::Body::Reported(report) => {
            EventBody::Reported(report_from_wire(report)?)
        }
        pb::incident_event::Body::Graded(graded) => EventBody::Graded(graded_from_wire(graded)?),
        pb::incident_event::Body::UnitsAssigned(units) => {
            EventBody::UnitsAssigned(units_from_wire(units))
        }
        pb::incident_event::Body::Updated(update) => EventBody::Updated(updated_from_wire(update)?),
        pb::incident_event::Body::Acknowledged(ack) => {
            EventBody::Acknowledged(acknowledged_from_wire(ack)?)
        }
        pb::incident_event::Body::Escalated(escalated) => {
            EventBody::Escalated(escalated_from_wire(escalated)?)
        }
        pb::incident_event::Body::LeadChanged(change) => {
            EventBody::LeadChanged(lead_changed_from_wire(change)?)
        }
        pb::incident_event::Body::Closed(closed) => EventBody::Closed(IncidentClosed {
            by: closed.by.clone(),
            reason: closed.reason.clone(),
        }),
        pb::incident_event::Body::DowngradeProposed(proposal) => {
            EventBody::DowngradeProposed(downgrade_proposed_from_wire(proposal))
        }
        pb::incident_event::Body::SkipLevelReported(skip) => {
            EventBody::SkipLevelReported(skip_level_reported_from_wire(skip)?)
        }
        pb::incident_event::Body::MutualAidRequested(aid) => {
            EventBody::MutualAidRequested(mutual_aid_from_wire("mutual_aid_requested", aid)?)
        }
        pb::incident_event::Body::MutualAidCommitted(aid) => {
            EventBody::MutualAidCommitted(mutual_aid_from_wire("mutual_aid_committed", aid)?)
        }
        pb::incident_event::Body::MutualAidDeclined(aid) => {
            EventBody::MutualAidDeclined(mutual_aid_from_wire("mutual_aid_declined", aid)?)
        }
        pb::incident_event::Body::MutualAidReleased(aid) => {
            EventBody::MutualAidReleased(mutual_aid_from_wire("mutual_aid_released", aid)?)
        }
    };
    Ok(IncidentEvent {
        event_id: if wire.event_id.is_empty() {
            msg_id.to_string()
        } else {
            wire.event_id
        },
        incident_id: wire.incident_id,
        namespace: wire.namespace,
        at_unix_ms: wire.at_unix_ms,
        source_service: wire.source_service,
        body,
    })
}

pub fn jurisdiction_to_wire(j: &Jurisdiction) -> pb::Jurisdiction {
    pb::Jurisdiction {
        code: j.code.clone(),
        name: j.name.clone(),
        level: level_to_wire(j.level) as i32,
        parent_code: j.parent.clone().unwrap_or_default(),
        centroid: j.centroid.map(point_to_wire),
        density: density_to_wire(j.density) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> IncidentReport {
        IncidentReport {
            kind: "accident.hazardous_chemicals".into(),
            class: IncidentClass::Accident,
            township_code: "t1".into(),
            other_township_codes: vec!["t2".into()],
            location: GeoPoint {
                lat: 30.1,
                lon: 120.2,
            },
            location_reported: true,
            facts: Facts {
                deaths: Some(12),
                missing: None,
                serious_injuries: Some(3),
                direct_loss_cny: None,
                magnitude: None,
                people_affected: Some(40),
                people_evacuated: Some(1_200),
            },
            summary: "explosion".into(),
            reported_by: "officer".into(),
            warning: None,
        }
    }

    #[test]
    fn every_event_body_round_trips() {
        let report = sample_report();
        let graded = Graded {
            grade: Some(Grade::II),
            response_level: Some(2),
            lead_code: "330000".into(),
            lead_name: "Province".into(),
            lead_level: Level::Province,
            rule_id: "production_safety".into(),
            rule_version: 1,
            reason: "deaths 12 ≥ 10".into(),
            initial_judgement: false,
            facts: report.facts.clone(),
            report: report.clone(),
        };
        let units = UnitsAssigned {
            plan_id: "p".into(),
            assignments: vec![Assignment {
                unit_id: "U1".into(),
                call_sign: "C".into(),
                unit_type: "hazmat".into(),
                distance_km: 1.5,
                reason: "r".into(),
                reason_codes: vec!["closest_by_eta".into(), "in_jurisdiction".into()],
                eta_minutes: 2.5,
                cascade_depth: 1,
            }],
            shortfalls: vec![Shortfall {
                unit_type: "ambulance".into(),
                required: 3,
                assigned: 1,
                reason: "none".into(),
                reason_codes: vec!["none_available".into(), "busy".into()],
                causes: vec![ShortfallCause {
                    code: "busy".into(),
                    count: 2,
                }],
            }],
            released_unit_ids: vec!["U0".into()],
        };
        let county = JurisdictionRef {
            code: "390202".into(),
            name: "County".into(),
            level: Level::County,
        };
        let city = JurisdictionRef {
            code: "390200".into(),
            name: "City".into(),
            level: Level::City,
        };
        for body in [
            EventBody::Reported(report),
            EventBody::Graded(graded),
            EventBody::UnitsAssigned(units),
            EventBody::Acknowledged(Acknowledged {
                by: "officer Wang".into(),
                jurisdiction: county.clone(),
            }),
            EventBody::Escalated(Escalated {
                from: county.clone(),
                to: city.clone(),
                reason: "acknowledgement deadline passed".into(),
                manual: false,
            }),
            EventBody::LeadChanged(LeadChanged {
                from: county,
                to: city,
                reason: "take_command".into(),
            }),
            EventBody::Updated(IncidentUpdated {
                facts: Facts {
                    deaths: Some(12),
                    ..Default::default()
                },
                updated_by: "officer Li".into(),
                summary: "more found".into(),
                warning: Some(domain::grade::WarningLevel::Red),
            }),
            EventBody::Closed(IncidentClosed {
                by: "feed usgs".into(),
                reason: "feed resumed".into(),
            }),
            EventBody::DowngradeProposed(DowngradeProposed {
                from: Some(Grade::II),
                to: Some(Grade::III),
                reason: "deaths 3 ≥ 3".into(),
            }),
        ] {
            let event = IncidentEvent {
                event_id: "id-1".into(),
                incident_id: "INC-1".into(),
                namespace: "live".into(),
                at_unix_ms: 1_700_000_000_000,
                source_service: "test".into(),
                body,
            };
            assert_eq!(decode_event(&encode_event(&event), "id-1").unwrap(), event);
        }
    }

    #[test]
    fn bad_facts_are_named() {
        let facts = pb::Facts {
            deaths: Some(-1),
            magnitude: Some(11.0),
            ..Default::default()
        };
        let problems = facts_from_wire(Some(&facts)).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("facts.deaths is -1"), "{problems:?}");
        assert!(problems[1].contains("facts.magnitude"), "{problems:?}");
    }

    #[test]
    fn garbage_is_not_an_event() {
        assert!(decode_event(b"\xff\xff\xff", "x").is_err());
    }
}
