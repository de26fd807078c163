//! View models: the serde shapes behind both the tables and `--json`, converted from the proto types.
//!
//! The prost types do not implement `Serialize`, and their enums are bare integers on the wire, so
//! each view spells enum values as readable strings ("II", "province", "responding") and times as
//! RFC 3339. An unspecified enum value becomes `None` (JSON `null`, table `-`).

use muster_proto::v1 as pb;
use serde::Serialize;

use crate::time::{format_duration_ms, format_rfc3339_ms};

/// Names an enum value by its proto name without the type prefix, e.g. `JURISDICTION_LEVEL_CITY`
/// becomes `city`. A value this build does not know prints as `unknown(<n>)`.
macro_rules! enum_namer {
    ($fn_name:ident, $proto:ty, $prefix:literal, $unspecified:path) => {
        pub fn $fn_name(value: i32) -> Option<String> {
            match <$proto>::try_from(value) {
                Ok($unspecified) => None,
                Ok(known) => Some(
                    known
                        .as_str_name()
                        .trim_start_matches($prefix)
                        .to_ascii_lowercase(),
                ),
                Err(_) => Some(format!("unknown({value})")),
            }
        }
    };
}

enum_namer!(
    class_name,
    pb::IncidentClass,
    "INCIDENT_CLASS_",
    pb::IncidentClass::Unspecified
);
enum_namer!(
    level_name,
    pb::JurisdictionLevel,
    "JURISDICTION_LEVEL_",
    pb::JurisdictionLevel::Unspecified
);
enum_namer!(
    density_name,
    pb::DensityClass,
    "DENSITY_CLASS_",
    pb::DensityClass::Unspecified
);
enum_namer!(
    incident_status_name,
    pb::IncidentStatus,
    "INCIDENT_STATUS_",
    pb::IncidentStatus::Unspecified
);
enum_namer!(
    warning_level_name,
    pb::WarningLevel,
    "WARNING_LEVEL_",
    pb::WarningLevel::Unspecified
);
enum_namer!(
    unit_status_name,
    pb::UnitStatus,
    "UNIT_STATUS_",
    pb::UnitStatus::Unspecified
);

enum_namer!(
    deadline_status_name,
    pb::DeadlineStatus,
    "DEADLINE_STATUS_",
    pb::DeadlineStatus::Unspecified
);

/// The grade in Roman numerals, `I` most severe; `None` when not graded.
pub fn grade_name(value: i32) -> Option<String> {
    match pb::Grade::try_from(value) {
        Ok(pb::Grade::Unspecified) => None,
        Ok(grade) => Some(grade.as_str_name().trim_start_matches("GRADE_").to_owned()),
        Err(_) => Some(format!("unknown({value})")),
    }
}

/// The text a table shows for an optional value.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => "-".to_owned(),
    }
}

fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

/// RFC 3339 for a timestamp, `None` for 0 ("not set" in the protos).
fn time_if_set(unix_ms: i64) -> Option<String> {
    (unix_ms != 0).then(|| format_rfc3339_ms(unix_ms))
}

/// A jurisdiction for a table cell: `name (code, level)`, or what of it is known.
fn jurisdiction_label(name: &str, code: &str, level: Option<&str>) -> String {
    let label = if name.is_empty() {
        or_dash(Some(code))
    } else {
        name.to_owned()
    };
    match (code.is_empty() || name.is_empty(), level) {
        (false, Some(level)) => format!("{label} ({code}, {level})"),
        (false, None) => format!("{label} ({code})"),
        (true, Some(level)) => format!("{label} ({level})"),
        (true, None) => label,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PointView {
    pub lat: f64,
    pub lon: f64,
}

impl PointView {
    pub fn describe(&self) -> String {
        format!("{:.4},{:.4}", self.lat, self.lon)
    }
}

impl From<pb::GeoPoint> for PointView {
    fn from(point: pb::GeoPoint) -> Self {
        Self {
            lat: point.lat,
            lon: point.lon,
        }
    }
}

/// Known facts; `None` means "not known yet", which differs from zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FactsView {
    pub deaths: Option<i64>,
    pub missing: Option<i64>,
    pub serious_injuries: Option<i64>,
    pub direct_loss_cny: Option<i64>,
    pub magnitude: Option<f64>,
}

impl FactsView {
    /// One line such as `deaths 3, serious injuries 12, magnitude 6.5`, or `none known`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(deaths) = self.deaths {
            parts.push(format!("deaths {deaths}"));
        }
        if let Some(missing) = self.missing {
            parts.push(format!("missing {missing}"));
        }
        if let Some(injuries) = self.serious_injuries {
            parts.push(format!("serious injuries {injuries}"));
        }
        if let Some(loss) = self.direct_loss_cny {
            parts.push(format!("direct loss {loss} CNY"));
        }
        if let Some(magnitude) = self.magnitude {
            parts.push(format!("magnitude {magnitude}"));
        }
        if parts.is_empty() {
            "none known".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl From<pb::Facts> for FactsView {
    fn from(facts: pb::Facts) -> Self {
        Self {
            deaths: facts.deaths,
            missing: facts.missing,
            serious_injuries: facts.serious_injuries,
            direct_loss_cny: facts.direct_loss_cny,
            magnitude: facts.magnitude,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradingView {
    /// `I` to `IV`; `None` for a social-safety event, which by law has no grade.
    pub grade: Option<String>,
    /// 1 (highest) to 4; 0 when none applies.
    pub response_level: u32,
    pub lead_jurisdiction_code: String,
    pub lead_jurisdiction_name: String,
    pub lead_level: Option<String>,
    pub rule_id: String,
    pub rule_version: u32,
    pub reason: String,
    pub initial_judgement: bool,
    pub facts: FactsView,
}

impl GradingView {
    /// The lead for a table cell: the name, or the code when the name is missing.
    pub fn lead_label(&self) -> String {
        if self.lead_jurisdiction_name.is_empty() {
            or_dash(Some(&self.lead_jurisdiction_code))
        } else {
            self.lead_jurisdiction_name.clone()
        }
    }
}

impl From<pb::Graded> for GradingView {
    fn from(graded: pb::Graded) -> Self {
        Self {
            grade: grade_name(graded.grade),
            response_level: graded.response_level,
            lead_jurisdiction_code: graded.lead_jurisdiction_code,
            lead_jurisdiction_name: graded.lead_jurisdiction_name,
            lead_level: level_name(graded.lead_level),
            rule_id: graded.rule_id,
            rule_version: graded.rule_version,
            reason: graded.reason,
            initial_judgement: graded.initial_judgement,
            facts: graded.facts.unwrap_or_default().into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssignmentView {
    pub unit_id: String,
    pub call_sign: String,
    pub unit_type: String,
    pub distance_km: f64,
    pub reason: String,
}

impl From<pb::Assignment> for AssignmentView {
    fn from(assignment: pb::Assignment) -> Self {
        Self {
            unit_id: assignment.unit_id,
            call_sign: assignment.call_sign,
            unit_type: assignment.unit_type,
            distance_km: assignment.distance_km,
            reason: assignment.reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShortfallView {
    pub unit_type: String,
    pub required: u32,
    pub assigned: u32,
    pub reason: String,
}

impl From<pb::Shortfall> for ShortfallView {
    fn from(shortfall: pb::Shortfall) -> Self {
        Self {
            unit_type: shortfall.unit_type,
            required: shortfall.required,
            assigned: shortfall.assigned,
            reason: shortfall.reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitsAssignedView {
    pub plan_id: String,
    pub assignments: Vec<AssignmentView>,
    pub shortfalls: Vec<ShortfallView>,
}

impl From<pb::UnitsAssigned> for UnitsAssignedView {
    fn from(units: pb::UnitsAssigned) -> Self {
        Self {
            plan_id: units.plan_id,
            assignments: units.assignments.into_iter().map(Into::into).collect(),
            shortfalls: units.shortfalls.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntryView {
    /// RFC 3339 UTC.
    pub at: String,
    /// Kept for the `HH:MM:SS.mmm` column; the JSON carries `at`.
    #[serde(skip)]
    pub at_unix_ms: i64,
    pub event_type: String,
    pub source_service: String,
    pub description: String,
    pub event_id: String,
}

impl From<pb::TimelineEntry> for TimelineEntryView {
    fn from(entry: pb::TimelineEntry) -> Self {
        Self {
            at: format_rfc3339_ms(entry.at_unix_ms),
            at_unix_ms: entry.at_unix_ms,
            event_type: entry.event_type,
            source_service: entry.source_service,
            description: entry.description,
            event_id: entry.event_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    pub id: String,
    pub namespace: String,
    pub kind: String,
    /// `natural_disaster`, `accident`, `public_health` or `social_safety`.
    pub class: Option<String>,
    pub township_code: String,
    pub other_township_codes: Vec<String>,
    pub location: Option<PointView>,
    /// False when `location` is the township centroid.
    pub location_reported: bool,
    pub facts: FactsView,
    pub summary: String,
    pub reported_by: String,
    /// `red`, `orange`, `yellow` or `blue`, when the source gave a warning level.
    pub warning_level: Option<String>,
    /// `reported`, `graded`, `responding` or `closed`.
    pub status: Option<String>,
    pub grading: Option<GradingView>,
    pub units: Option<UnitsAssignedView>,
    pub timeline: Vec<TimelineEntryView>,
    pub reported_at: String,
    pub updated_at: String,
    /// Kept for T+ offsets and sorting; the JSON carries `reported_at` and `updated_at`.
    #[serde(skip)]
    pub reported_at_unix_ms: i64,
    #[serde(skip)]
    pub updated_at_unix_ms: i64,
    /// Monitoring-feed alerts linked to the incident, and how many are still open.
    pub alert_count: u64,
    pub open_alert_count: u64,
    pub recent_alerts: Vec<LinkedAlertView>,
}

/// A feed alert linked to an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkedAlertView {
    pub alert_id: String,
    pub format: String,
    pub identity: String,
    pub headline: String,
    pub state: String,
    pub received_at: String,
}

impl From<pb::LinkedAlert> for LinkedAlertView {
    fn from(alert: pb::LinkedAlert) -> Self {
        Self {
            alert_id: alert.alert_id,
            format: alert.format,
            identity: alert.identity,
            headline: alert.headline,
            state: alert.state,
            received_at: format_rfc3339_ms(alert.received_at_unix_ms),
        }
    }
}

impl IncidentView {
    /// The grade for a table cell.
    pub fn grade_label(&self) -> String {
        or_dash(self.grading.as_ref().and_then(|g| g.grade.as_deref()))
    }

    /// The lead jurisdiction for a table cell.
    pub fn lead_label(&self) -> String {
        self.grading
            .as_ref()
            .map(GradingView::lead_label)
            .unwrap_or_else(|| "-".to_owned())
    }

    /// The lead jurisdiction code, for one-word output such as `watch`.
    pub fn lead_code(&self) -> String {
        or_dash(
            self.grading
                .as_ref()
                .map(|g| g.lead_jurisdiction_code.as_str()),
        )
    }

    pub fn status_label(&self) -> String {
        or_dash(self.status.as_deref())
    }

    /// Assigned units, with the missing ones when the plan could not be met: `3 (-1)`.
    pub fn units_label(&self) -> String {
        match &self.units {
            None => "-".to_owned(),
            Some(units) => {
                let missing: u32 = units
                    .shortfalls
                    .iter()
                    .map(|s| s.required.saturating_sub(s.assigned))
                    .sum();
                if missing == 0 {
                    units.assignments.len().to_string()
                } else {
                    format!("{} (-{missing})", units.assignments.len())
                }
            }
        }
    }
}

impl From<pb::Incident> for IncidentView {
    fn from(incident: pb::Incident) -> Self {
        let report = incident.report.unwrap_or_default();
        Self {
            id: incident.id,
            namespace: incident.namespace,
            kind: report.kind,
            class: class_name(report.class),
            township_code: report.township_code,
            other_township_codes: report.other_township_codes,
            location: report.location.map(Into::into),
            location_reported: report.location_reported,
            facts: report.facts.unwrap_or_default().into(),
            summary: report.summary,
            reported_by: report.reported_by,
            warning_level: warning_level_name(report.warning_level),
            status: incident_status_name(incident.status),
            grading: incident.grading.map(Into::into),
            units: incident.units.map(Into::into),
            timeline: incident.timeline.into_iter().map(Into::into).collect(),
            reported_at: format_rfc3339_ms(incident.reported_at_unix_ms),
            updated_at: format_rfc3339_ms(incident.updated_at_unix_ms),
            reported_at_unix_ms: incident.reported_at_unix_ms,
            updated_at_unix_ms: incident.updated_at_unix_ms,
            alert_count: incident.alert_count,
            open_alert_count: incident.open_alert_count,
            recent_alerts: incident.recent_alerts.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JurisdictionView {
    pub code: String,
    pub name: String,
    pub level: Option<String>,
    /// `None` for the national root.
    pub parent_code: Option<String>,
    pub density: Option<String>,
    pub centroid: Option<PointView>,
}

impl From<pb::Jurisdiction> for JurisdictionView {
    fn from(jurisdiction: pb::Jurisdiction) -> Self {
        Self {
            code: jurisdiction.code,
            name: jurisdiction.name,
            level: level_name(jurisdiction.level),
            parent_code: non_empty(jurisdiction.parent_code),
            density: density_name(jurisdiction.density),
            centroid: jurisdiction.centroid.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitView {
    pub id: String,
    pub call_sign: String,
    pub unit_type: String,
    pub home_township_code: String,
    pub jurisdiction_code: String,
    pub position: Option<PointView>,
    /// `available`, `dispatched`, `enroute`, `staging`, `on_scene`, `returning` or
    /// `out_of_service`.
    pub status: Option<String>,
    /// When the current status began, RFC 3339; `None` when unknown.
    pub status_since: Option<String>,
    /// Why the unit is out of service, while it is.
    pub out_of_service_reason: Option<String>,
    /// The incident the unit is committed to (dispatched, en route, staging or on scene).
    pub incident_id: Option<String>,
    pub capabilities: Vec<String>,
    pub crew_size: u32,
    /// When `position` was taken, RFC 3339; `None` when unknown.
    pub position_at: Option<String>,
    /// How old `position` was when dispatch answered; `None` when its time is unknown.
    pub position_age_ms: Option<i64>,
    /// True when the position is too old for recommendations.
    pub position_stale: bool,
    /// While committed: the ETA to its incident estimated at booking, minutes.
    pub eta_minutes: Option<f64>,
}

impl UnitView {
    /// The status for a table cell, with the out-of-service reason: `out_of_service (pump)`.
    pub fn status_label(&self) -> String {
        match (&self.status, &self.out_of_service_reason) {
            (Some(status), Some(reason)) => format!("{status} ({reason})"),
            (status, _) => or_dash(status.as_deref()),
        }
    }

    /// The position age for a table cell: `3m12s`, `2h05m STALE`, or `-`.
    pub fn position_age_label(&self) -> String {
        let age = self
            .position_age_ms
            .map(format_duration_ms)
            .unwrap_or_else(|| "-".to_owned());
        if self.position_stale {
            format!("{age} STALE")
        } else {
            age
        }
    }
}

impl From<pb::Unit> for UnitView {
    fn from(unit: pb::Unit) -> Self {
        Self {
            id: unit.id,
            call_sign: unit.call_sign,
            unit_type: unit.unit_type,
            home_township_code: unit.home_township_code,
            jurisdiction_code: unit.jurisdiction_code,
            position: unit.position.map(Into::into),
            status: unit_status_name(unit.status),
            status_since: time_if_set(unit.status_since_unix_ms),
            out_of_service_reason: non_empty(unit.out_of_service_reason),
            incident_id: non_empty(unit.incident_id),
            capabilities: unit.capabilities,
            crew_size: unit.crew_size,
            position_at: time_if_set(unit.position_at_unix_ms),
            position_age_ms: (unit.position_at_unix_ms != 0).then_some(unit.position_age_ms),
            position_stale: unit.position_stale,
            eta_minutes: (unit.eta_minutes > 0.0).then_some(unit.eta_minutes),
        }
    }
}

/// An ETA for a table cell: `4.2 min`, or `-`.
pub fn eta_label(eta_minutes: Option<f64>) -> String {
    eta_minutes.map_or_else(|| "-".to_owned(), |eta| format!("{eta:.1} min"))
}

/// The answer to `unit-position`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionReportView {
    /// False when the stored position was newer and the report was ignored.
    pub applied: bool,
    pub unit: UnitView,
}

impl From<pb::ReportPositionResponse> for PositionReportView {
    fn from(response: pb::ReportPositionResponse) -> Self {
        Self {
            applied: response.applied,
            unit: response.unit.unwrap_or_default().into(),
        }
    }
}

/// Where an incident's command and acknowledgement chain stand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandView {
    pub incident_id: String,
    /// `I` to `IV`; `None` when not graded (or not gradable).
    pub grade: Option<String>,
    pub lead_jurisdiction_code: String,
    pub lead_jurisdiction_name: String,
    pub lead_level: Option<String>,
    /// RFC 3339: grading, or the last handover.
    pub lead_since: Option<String>,
    /// The level currently asked to acknowledge.
    pub escalation_jurisdiction_code: String,
    pub escalation_jurisdiction_name: String,
    pub escalation_level: Option<String>,
    pub acknowledged: bool,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
    /// When the level asked must acknowledge by; `None` when no chain timer is pending.
    pub ack_due_at: Option<String>,
    pub escalation_count: u32,
    /// A downgrade new facts proposed and no officer confirmed yet.
    pub pending_downgrade: Option<String>,
    /// The commander named when the lead took command.
    pub commander_name: Option<String>,
    /// Kept for countdowns and the timeline; the JSON carries `ack_due_at`/`acknowledged_at`.
    #[serde(skip)]
    pub ack_due_at_unix_ms: i64,
    #[serde(skip)]
    pub acknowledged_at_unix_ms: i64,
}

impl CommandView {
    pub fn lead_label(&self) -> String {
        jurisdiction_label(
            &self.lead_jurisdiction_name,
            &self.lead_jurisdiction_code,
            self.lead_level.as_deref(),
        )
    }

    pub fn escalation_label(&self) -> String {
        jurisdiction_label(
            &self.escalation_jurisdiction_name,
            &self.escalation_jurisdiction_code,
            self.escalation_level.as_deref(),
        )
    }

    /// One phrase for where acknowledgement stands.
    pub fn acknowledgement_label(&self) -> String {
        if self.acknowledged {
            format!(
                "acknowledged by {} at {}",
                or_dash(self.acknowledged_by.as_deref()),
                or_dash(self.acknowledged_at.as_deref())
            )
        } else {
            match &self.ack_due_at {
                Some(due) => format!("{} must acknowledge by {due}", self.escalation_label()),
                None => format!(
                    "{} asked; no deadline pending (chain ran out)",
                    self.escalation_label()
                ),
            }
        }
    }
}

impl From<pb::Command> for CommandView {
    fn from(command: pb::Command) -> Self {
        Self {
            incident_id: command.incident_id,
            grade: grade_name(command.grade),
            lead_jurisdiction_code: command.lead_jurisdiction_code,
            lead_jurisdiction_name: command.lead_jurisdiction_name,
            lead_level: level_name(command.lead_level),
            lead_since: time_if_set(command.lead_since_unix_ms),
            escalation_jurisdiction_code: command.escalation_jurisdiction_code,
            escalation_jurisdiction_name: command.escalation_jurisdiction_name,
            escalation_level: level_name(command.escalation_level),
            acknowledged: command.acknowledged,
            acknowledged_by: non_empty(command.acknowledged_by),
            acknowledged_at: time_if_set(command.acknowledged_at_unix_ms),
            ack_due_at: time_if_set(command.ack_due_at_unix_ms),
            escalation_count: command.escalation_count,
            pending_downgrade: grade_name(command.pending_downgrade),
            commander_name: non_empty(command.commander_name),
            ack_due_at_unix_ms: command.ack_due_at_unix_ms,
            acknowledged_at_unix_ms: command.acknowledged_at_unix_ms,
        }
    }
}

/// One statutory reporting obligation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadlineView {
    pub incident_id: String,
    pub obligation_id: u32,
    pub rule_id: String,
    /// `first`, `follow_up`, `final` or `skip_level`.
    pub kind: String,
    pub from_tier: String,
    pub to_tier: String,
    pub to_jurisdiction_code: Option<String>,
    pub created_at: String,
    pub due_at: String,
    /// `None` while not sent.
    pub sent_at: Option<String>,
    /// Met: sent minus due (0 if on time); late: now minus due; open: 0.
    pub late_by_ms: i64,
    /// `open`, `late`, `met` or `waived`.
    pub status: Option<String>,
    /// Kept for countdowns and the timeline; the JSON carries `due_at` and `sent_at`.
    #[serde(skip)]
    pub due_at_unix_ms: i64,
    #[serde(skip)]
    pub sent_at_unix_ms: i64,
}

impl DeadlineView {
    pub fn is_met(&self) -> bool {
        self.status.as_deref() == Some("met")
    }

    /// Past due and still not sent.
    pub fn is_late(&self) -> bool {
        self.status.as_deref() == Some("late")
    }

    /// `from → to`, with the receiving jurisdiction when known.
    pub fn route_label(&self) -> String {
        match &self.to_jurisdiction_code {
            Some(code) => format!("{} → {} ({code})", self.from_tier, self.to_tier),
            None => format!("{} → {}", self.from_tier, self.to_tier),
        }
    }

    /// The status for a table cell, with lateness in capitals: `open`, `LATE`, `met`, `met LATE`.
    pub fn status_label(&self) -> String {
        if self.is_late() {
            "LATE".to_owned()
        } else if self.is_met() && self.late_by_ms > 0 {
            "met LATE".to_owned()
        } else {
            or_dash(self.status.as_deref())
        }
    }

    /// How late, for a table cell: `1h05m so far` while unsent, `12m00s` once sent late, `-`.
    pub fn late_by_label(&self) -> String {
        if self.late_by_ms <= 0 {
            "-".to_owned()
        } else if self.is_late() {
            format!("{} so far", format_duration_ms(self.late_by_ms))
        } else {
            format_duration_ms(self.late_by_ms)
        }
    }
}

impl From<pb::Deadline> for DeadlineView {
    fn from(deadline: pb::Deadline) -> Self {
        Self {
            incident_id: deadline.incident_id,
            obligation_id: deadline.obligation_id,
            rule_id: deadline.rule_id,
            kind: deadline.kind,
            from_tier: deadline.from_tier,
            to_tier: deadline.to_tier,
            to_jurisdiction_code: non_empty(deadline.to_jurisdiction_code),
            created_at: format_rfc3339_ms(deadline.created_at_unix_ms),
            due_at: format_rfc3339_ms(deadline.due_at_unix_ms),
            sent_at: time_if_set(deadline.sent_at_unix_ms),
            late_by_ms: deadline.late_by_ms,
            status: deadline_status_name(deadline.status),
            due_at_unix_ms: deadline.due_at_unix_ms,
            sent_at_unix_ms: deadline.sent_at_unix_ms,
        }
    }
}

/// The health of one service, as `status` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatusView {
    pub service: String,
    pub endpoint: String,
    /// `SERVING`, `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`, `UNREACHABLE` or `ERROR`.
    pub status: String,
    /// Why it is not serving, when known.
    pub detail: Option<String>,
}

impl ServiceStatusView {
    pub fn is_serving(&self) -> bool {
        self.status == "SERVING"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub all_serving: bool,
    pub services: Vec<ServiceStatusView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportView {
    pub incident_id: String,
    /// True when intake had seen this request id and returned the original incident.
    pub duplicate: bool,
    /// The idempotency key sent, so a script can retry with it.
    pub request_id: String,
}

/// The answer to `update`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateView {
    pub incident_id: String,
    /// True when intake had seen this request id: nothing was changed again.
    pub duplicate: bool,
    /// The idempotency key sent, so a script can retry with it.
    pub request_id: String,
    /// The incident's facts after the update.
    pub facts: FactsView,
}

/// One `watch` message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEventView {
    pub event_type: String,
    pub incident: IncidentView,
}

impl From<pb::WatchIncidentsResponse> for WatchEventView {
    fn from(response: pb::WatchIncidentsResponse) -> Self {
        Self {
            event_type: response.event_type,
            incident: response.incident.unwrap_or_default().into(),
        }
    }
}
