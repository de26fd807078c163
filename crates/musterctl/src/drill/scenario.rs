//! Drill scenario files (TOML): metadata, phases, a timeline of injects at offsets, and the
//! expectations the run is judged against. A mistake is reported as `file:line:col: problem`.
//!
//! ```toml
//! [drill]
//! name = "Chlorine tank explosion"
//! objectives = ["province takes the lead within 5 minutes"]
//! jurisdictions = ["390202", "390200", "390000"]
//! duration = "60m"
//!
//! [[phase]]
//! name = "alarm"
//! at = "0m"
//!
//! [[inject]]
//! at = "0m"
//! incident = "plant"
//! report = { kind = "accident.hazardous_chemicals", township = "390202400", deaths = 2 }
//!
//! [[expect]]
//! incident = "plant"
//! grade = "II"
//! by = "5m"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A parsed and checked scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub objectives: Vec<String>,
    pub jurisdictions: Vec<String>,
    /// Scenario length in scenario milliseconds.
    pub duration_ms: i64,
    pub phases: Vec<Phase>,
    /// Sorted by offset (stable: file order within one offset).
    pub injects: Vec<Inject>,
    pub expectations: Vec<Expectation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inject {
    pub at_ms: i64,
    /// The scenario's label of the incident this inject concerns.
    pub incident: String,
    pub action: Action,
    /// Where in the file it was written (`line:col`), for the inject log.
    pub source: String,
}

/// What an inject does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    /// An officer's report through IntakeService.ReportIncident.
    Report(ReportInject),
    /// New facts through IntakeService.UpdateIncident (casualties rising).
    Update(FactsInject),
    /// A CAP 1.2 message to intake's feed endpoint; status is always Exercise.
    Cap(CapInject),
    /// GeoJSON quake features to intake's feed endpoint.
    Geojson(GeojsonInject),
    /// Alertmanager webhook alerts to intake's feed endpoint.
    Alertmanager(AlertmanagerInject),
    /// A unit event for units of a type on the incident (arrive, decline, out of service, ...).
    Unit(UnitInject),
    /// An officer acknowledges (EscalationService.Acknowledge).
    Ack(AckInject),
    /// An officer files the earliest open statutory report (EscalationService.SubmitReport).
    FileReport(FileReportInject),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FactsInject {
    pub deaths: Option<i64>,
    pub missing: Option<i64>,
    pub serious_injuries: Option<i64>,
    pub direct_loss_cny: Option<i64>,
    pub magnitude: Option<f64>,
    pub people_affected: Option<i64>,
    pub summary: Option<String>,
    pub officer: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportInject {
    pub kind: String,
    pub township: String,
    #[serde(default)]
    pub deaths: Option<i64>,
    #[serde(default)]
    pub missing: Option<i64>,
    #[serde(default)]
    pub serious_injuries: Option<i64>,
    #[serde(default)]
    pub direct_loss_cny: Option<i64>,
    #[serde(default)]
    pub magnitude: Option<f64>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub officer: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapInject {
    /// Alert, Update or Cancel. An Update or Cancel references the incident's previous CAP
    /// message.
    #[serde(default = "default_msg_type")]
    pub msg_type: String,
    pub category: String,
    pub event: String,
    /// Extreme, Severe, Moderate or Minor (red, orange, yellow, blue).
    pub severity: String,
    pub headline: String,
    /// Centre of the affected area.
    pub lat: f64,
    pub lon: f64,
    #[serde(default = "default_radius")]
    pub radius_km: f64,
}

fn default_msg_type() -> String {
    "Alert".to_owned()
}

fn default_radius() -> f64 {
    5.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeojsonInject {
    /// How many features (a surge is split into HTTP posts of at most `batch`).
    pub count: u32,
    pub magnitude: f64,
    pub lat: f64,
    pub lon: f64,
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default)]
    pub place: Option<String>,
}

fn default_batch() -> u32 {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerInject {
    pub alertname: String,
    /// critical, major, warning, minor (the mapping's label.severity table).
    pub severity: String,
    #[serde(default = "default_firing")]
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub count: u32,
}

fn default_firing() -> String {
    "firing".to_owned()
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnitInject {
    /// no_ack (the crews of the next `count` units dispatched never acknowledge: dispatch times
    /// them out and books replacements; every other crew acknowledges at once), acknowledge,
    /// arrive (acknowledges first when needed), decline, out_of_service, return_to_service (units
    /// of this incident that went out of service), release.
    pub event: String,
    /// Only units of this type (default: any type).
    #[serde(default)]
    pub unit_type: Option<String>,
    /// At most this many units (default: all that qualify).
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AckInject {
    pub officer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FileReportInject {}

/// One expectation; `by` is a scenario offset (absent: by the end of the drill).
#[derive(Debug, Clone, Serialize)]
pub struct Expectation {
    pub incident: String,
    pub by_ms: Option<i64>,
    pub check: Check,
    /// The line as written, for the verdict table: `grade II by T+5m`.
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Check {
    /// The incident was graded exactly this (I..IV) at some point.
    Grade {
        grade: String,
    },
    /// The lead's level (county, city, province, national) at `by` (or at the end).
    Lead {
        level: String,
    },
    /// At least `at_least` units (of a type) reached `status` (assigned or on_scene).
    Units {
        unit_type: Option<String>,
        at_least: u32,
        status: String,
    },
    /// The first statutory report was (true) or was not (false) filed before its deadline.
    FirstReportOnTime {
        on_time: bool,
    },
    Acknowledged {
        yes: bool,
    },
    /// Escalated at least once (optionally to a level).
    Escalated {
        yes: bool,
        to_level: Option<String>,
    },
    /// The warning level (red/orange/yellow/blue) was reached.
    Warning {
        level: String,
    },
    /// The response level (1..4) was reached.
    ResponseLevel {
        level: u32,
    },
    /// Mutual aid committed units.
    MutualAid {
        yes: bool,
    },
    Closed {
        yes: bool,
    },
}

// ---- the file as written ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    drill: Spanned<Meta>,
    #[serde(default)]
    phase: Vec<Spanned<PhaseEntry>>,
    #[serde(default)]
    inject: Vec<Spanned<InjectEntry>>,
    #[serde(default)]
    expect: Vec<Spanned<ExpectEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    objectives: Vec<String>,
    #[serde(default)]
    jurisdictions: Vec<String>,
    duration: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseEntry {
    name: String,
    at: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectEntry {
    at: Spanned<String>,
    incident: Spanned<String>,
    report: Option<ReportInject>,
    update: Option<FactsInject>,
    cap: Option<Spanned<CapInject>>,
    geojson: Option<Spanned<GeojsonInject>>,
    alertmanager: Option<AlertmanagerInject>,
    unit: Option<Spanned<UnitInject>>,
    ack: Option<AckInject>,
    file_report: Option<FileReportInject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectEntry {
    incident: Spanned<String>,
    by: Option<Spanned<String>>,
    grade: Option<Spanned<String>>,
    lead: Option<Spanned<String>>,
    units: Option<Spanned<UnitsEntry>>,
    first_report_on_time: Option<bool>,
    acknowledged: Option<bool>,
    escalated: Option<bool>,
    escalated_to: Option<Spanned<String>>,
    warning: Option<Spanned<String>>,
    response_level: Option<Spanned<u32>>,
    mutual_aid: Option<bool>,
    closed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsEntry {
    #[serde(rename = "type")]
    unit_type: Option<String>,
    at_least: u32,
    #[serde(default = "default_units_status")]
    status: String,
}

fn default_units_status() -> String {
    "assigned".to_owned()
}

/// A problem in a scenario file, shown as `file:line:col: problem`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub problem: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.problem
        )
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|error| ScenarioError {
        file: path.display().to_string(),
        line: 1,
        col: 1,
        problem: format!("cannot read the scenario: {error}"),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses a scenario given its text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let at = |span: Range<usize>, problem: String| {
        let (line, col) = line_col(text, span.start);
        ScenarioError {
            file: file.to_owned(),
            line,
            col,
            problem,
        }
    };
    let raw: File = toml::from_str(text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        at(span, error.message().trim().to_owned())
    })?;
    let offset = |value: &Spanned<String>| {
        parse_offset(value.get_ref()).map_err(|problem| at(value.span(), problem))
    };

    let meta = raw.drill.get_ref();
    if meta.name.trim().is_empty() {
        return Err(at(raw.drill.span(), "[drill] name is empty".into()));
    }
    let duration_ms = offset(&meta.duration)?;
    if duration_ms <= 0 {
        return Err(at(
            meta.duration.span(),
            "duration must be longer than 0".into(),
        ));
    }
    for code in &meta.jurisdictions {
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(at(
                raw.drill.span(),
                format!("jurisdiction {code:?} is not a jurisdiction code (digits)"),
            ));
        }
    }
    let within = |value: &Spanned<String>, ms: i64| {
        if ms > duration_ms {
            Err(at(
                value.span(),
                format!(
                    "{} is past the end of the drill (duration {})",
                    value.get_ref(),
                    format_offset(duration_ms)
                ),
            ))
        } else {
            Ok(ms)
        }
    };

    let mut phases = Vec::new();
    for entry in &raw.phase {
        let phase = entry.get_ref();
        let at_ms = within(&phase.at, offset(&phase.at)?)?;
        phases.push(Phase {
            name: phase.name.clone(),
            at_ms,
        });
    }
    phases.sort_by_key(|p| p.at_ms);

    let mut injects = Vec::new();
    let mut labels: BTreeMap<String, i64> = BTreeMap::new();
    let mut timed = Vec::new();
    for entry in &raw.inject {
        let inject = entry.get_ref();
        timed.push((within(&inject.at, offset(&inject.at)?)?, entry));
    }
    // Labels are checked in time order (stable within one offset), not file order.
    timed.sort_by_key(|(at_ms, _)| *at_ms);
    for (at_ms, entry) in timed {
        let inject = entry.get_ref();
        let mut actions = Vec::new();
        if let Some(report) = &inject.report {
            actions.push(Action::Report(report.clone()));
        }
        if let Some(update) = &inject.update {
            actions.push(Action::Update(update.clone()));
        }
        if let Some(cap) = &inject.cap {
            let msg_type = cap.get_ref().msg_type.as_str();
            if !["Alert", "Update", "Cancel"].contains(&msg_type) {
                return Err(at(
                    cap.span(),
                    format!("cap msg_type {msg_type:?} is not Alert, Update or Cancel"),
                ));
            }
            let severity = cap.get_ref().severity.as_str();
            if !["Extreme", "Severe", "Moderate", "Minor", "Unknown"].contains(&severity) {
                return Err(at(
                    cap.span(),
                    format!(
                        "cap severity {severity:?} is not Extreme, Severe, Moderate, Minor or Unknown"
                    ),
                ));
            }
            actions.push(Action::Cap(cap.get_ref().clone()));
        }
        if let Some(geojson) = &inject.geojson {
            let g = geojson.get_ref();
            if g.count == 0 || g.batch == 0 {
                return Err(at(
                    geojson.span(),
                    "geojson count and batch must be at least 1".into(),
                ));
            }
            actions.push(Action::Geojson(g.clone()));
        }
        if let Some(alertmanager) = &inject.alertmanager {
            actions.push(Action::Alertmanager(alertmanager.clone()));
        }
        if let Some(unit) = &inject.unit {
            const EVENTS: [&str; 7] = [
                "no_ack",
                "acknowledge",
                "arrive",
                "decline",
                "out_of_service",
                "return_to_service",
                "release",
            ];
            if !EVENTS.contains(&unit.get_ref().event.as_str()) {
                return Err(at(
                    unit.span(),
                    format!(
                        "unit event {:?} is not one of {}",
                        unit.get_ref().event,
                        EVENTS.join(", ")
                    ),
                ));
            }
            actions.push(Action::Unit(unit.get_ref().clone()));
        }
        if let Some(ack) = &inject.ack {
            actions.push(Action::Ack(ack.clone()));
        }
        if let Some(file_report) = &inject.file_report {
            actions.push(Action::FileReport(file_report.clone()));
        }
        let action = match actions.len() {
            1 => actions.remove(0),
            n => {
                return Err(at(
                    entry.span(),
                    format!(
                        "an inject does exactly one thing (report, update, cap, geojson, \
                         alertmanager, unit, ack or file_report); this one has {n}"
                    ),
                ));
            }
        };
        let label = inject.incident.get_ref().clone();
        let creates = matches!(
            action,
            Action::Report(_)
                | Action::Geojson(_)
                | Action::Alertmanager(_)
                | Action::Cap(CapInject { .. })
        ) && !matches!(&action, Action::Cap(c) if c.msg_type != "Alert");
        match labels.get(&label) {
            Some(first) if matches!(action, Action::Report(_)) => {
                return Err(at(
                    inject.incident.span(),
                    format!(
                        "incident {label:?} is already created at {}; a report creates a new one",
                        format_offset(*first)
                    ),
                ));
            }
            Some(first) if *first > at_ms => {
                return Err(at(
                    inject.incident.span(),
                    format!(
                        "incident {label:?} is used at {} before it is created at {}",
                        format_offset(at_ms),
                        format_offset(*first)
                    ),
                ));
            }
            Some(_) => {}
            None if creates => {
                labels.insert(label.clone(), at_ms);
            }
            None => {
                return Err(at(
                    inject.incident.span(),
                    format!(
                        "incident {label:?} is not created by any earlier inject (a report, or a \
                         feed alert)"
                    ),
                ));
            }
        }
        let (line, col) = line_col(text, entry.span().start);
        injects.push(Inject {
            at_ms,
            incident: label,
            action,
            source: format!("{line}:{col}"),
        });
    }
    injects.sort_by_key(|i| i.at_ms);

    let mut expectations = Vec::new();
    for entry in &raw.expect {
        let e = entry.get_ref();
        let label = e.incident.get_ref();
        if !labels.contains_key(label) {
            return Err(at(
                e.incident.span(),
                format!("incident {label:?} is not created by any inject"),
            ));
        }
        let by_ms = match &e.by {
            Some(by) => Some(within(by, offset(by)?)?),
            None => None,
        };
        let mut checks = Vec::new();
        if let Some(grade) = &e.grade {
            if !["I", "II", "III", "IV"].contains(&grade.get_ref().as_str()) {
                return Err(at(
                    grade.span(),
                    format!("grade {:?} is not I, II, III or IV", grade.get_ref()),
                ));
            }
            checks.push(Check::Grade {
                grade: grade.get_ref().clone(),
            });
        }
        let level = |value: &Spanned<String>| {
            let level = value.get_ref();
            if ["township", "county", "city", "province", "national"].contains(&level.as_str()) {
                Ok(level.clone())
            } else {
                Err(at(
                    value.span(),
                    format!(
                        "{level:?} is not a level (township, county, city, province, national)"
                    ),
                ))
            }
        };
        if let Some(lead) = &e.lead {
            checks.push(Check::Lead {
                level: level(lead)?,
            });
        }
        if let Some(units) = &e.units {
            let u = units.get_ref();
            if !["assigned", "on_scene"].contains(&u.status.as_str()) {
                return Err(at(
                    units.span(),
                    format!("units status {:?} is not assigned or on_scene", u.status),
                ));
            }
            checks.push(Check::Units {
                unit_type: u.unit_type.clone(),
                at_least: u.at_least,
                status: u.status.clone(),
            });
        }
        if let Some(on_time) = e.first_report_on_time {
            checks.push(Check::FirstReportOnTime { on_time });
        }
        if let Some(yes) = e.acknowledged {
            checks.push(Check::Acknowledged { yes });
        }
        match (&e.escalated, &e.escalated_to) {
            (Some(yes), to) => checks.push(Check::Escalated {
                yes: *yes,
                to_level: to.as_ref().map(level).transpose()?,
            }),
            (None, Some(to)) => checks.push(Check::Escalated {
                yes: true,
                to_level: Some(level(to)?),
            }),
            (None, None) => {}
        }
        if let Some(warning) = &e.warning {
            if !["red", "orange", "yellow", "blue"].contains(&warning.get_ref().as_str()) {
                return Err(at(
                    warning.span(),
                    format!(
                        "warning {:?} is not red, orange, yellow or blue",
                        warning.get_ref()
                    ),
                ));
            }
            checks.push(Check::Warning {
                level: warning.get_ref().clone(),
            });
        }
        if let Some(level) = &e.response_level {
            if !(1..=4).contains(level.get_ref()) {
                return Err(at(level.span(), "response_level is 1 to 4".into()));
            }
            checks.push(Check::ResponseLevel {
                level: *level.get_ref(),
            });
        }
        if let Some(yes) = e.mutual_aid {
            checks.push(Check::MutualAid { yes });
        }
        if let Some(yes) = e.closed {
            checks.push(Check::Closed { yes });
        }
        let check = match checks.len() {
            1 => checks.remove(0),
            n => {
                return Err(at(
                    entry.span(),
                    format!(
                        "an expectation checks exactly one thing (grade, lead, units, \
                         first_report_on_time, acknowledged, escalated, warning, response_level, \
                         mutual_aid or closed); this one has {n}"
                    ),
                ));
            }
        };
        let text = describe_check(label, &check, by_ms);
        expectations.push(Expectation {
            incident: label.clone(),
            by_ms,
            check,
            text,
        });
    }
    if injects.is_empty() {
        return Err(at(0..0, "a scenario needs at least one [[inject]]".into()));
    }
    Ok(Scenario {
        name: meta.name.clone(),
        description: meta.description.clone(),
        objectives: meta.objectives.clone(),
        jurisdictions: meta.jurisdictions.clone(),
        duration_ms,
        phases,
        injects,
        expectations,
    })
}

/// `plant: grade II by T+5m`.
pub fn describe_check(label: &str, check: &Check, by_ms: Option<i64>) -> String {
    let what = match check {
        Check::Grade { grade } => format!("grade {grade}"),
        Check::Lead { level } => format!("{level} leads"),
        Check::Units {
            unit_type,
            at_least,
            status,
        } => format!(
            "≥{at_least} {}units {}",
            unit_type
                .as_ref()
                .map_or(String::new(), |t| format!("{t} ")),
            status.replace('_', " ")
        ),
        Check::FirstReportOnTime { on_time: true } => {
            "first report filed before its deadline".into()
        }
        Check::FirstReportOnTime { on_time: false } => "first report missed its deadline".into(),
        Check::Acknowledged { yes: true } => "acknowledged".into(),
        Check::Acknowledged { yes: false } => "never acknowledged".into(),
        Check::Escalated {
            yes: true,
            to_level,
        } => match to_level {
            Some(level) => format!("escalated to {level}"),
            None => "escalated".into(),
        },
        Check::Escalated { yes: false, .. } => "not escalated".into(),
        Check::Warning { level } => format!("{level} warning"),
        Check::ResponseLevel { level } => format!("response level {level}"),
        Check::MutualAid { yes: true } => "mutual aid committed".into(),
        Check::MutualAid { yes: false } => "no mutual aid".into(),
        Check::Closed { yes: true } => "closed".into(),
        Check::Closed { yes: false } => "still open".into(),
    };
    match by_ms {
        Some(ms) => format!("{label}: {what} by T+{}", format_offset(ms)),
        None => format!("{label}: {what}"),
    }
}

/// `90s`, `5m`, `1h30m`, `2h`, `500ms`, or plain minutes `12`.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let trimmed = text.trim().trim_start_matches("T+");
    if trimmed.is_empty() {
        return Err("an empty offset (write 5m, 90s, 1h30m)".into());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<i64>()
            .map(|m| m * 60_000)
            .map_err(|e| format!("offset {text:?}: {e}"));
    }
    let mut total = 0i64;
    let mut number = String::new();
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'h' => "h",
                'm' => "m",
                's' => "s",
                _ => {
                    return Err(format!(
                        "offset {text:?}: unknown unit {c:?} (use h, m, s or ms, as in 1h30m)"
                    ));
                }
            }
        };
        if number.is_empty() {
            return Err(format!("offset {text:?}: a unit without a number"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("offset {text:?}: {number:?} is not a number"))?;
        number.clear();
        let factor = match unit {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            _ => 1.0,
        };
        total += (value * factor).round() as i64;
    }
    if !number.is_empty() {
        return Err(format!(
            "offset {text:?}: {number:?} has no unit (h, m, s or ms)"
        ));
    }
    Ok(total)
}

/// Scenario milliseconds as `1h05m`, `5m`, `30s`.
pub fn format_offset(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.abs();
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{sign}{s}s"),
        (0, m, 0) => format!("{sign}{m}m"),
        (0, m, s) => format!("{sign}{m}m{s:02}s"),
        (h, m, 0) => format!("{sign}{h}h{m:02}m"),
        (h, m, s) => format!("{sign}{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[drill]
name = "Tank explosion"
objectives = ["province leads"]
jurisdictions = ["390202"]
duration = "1h"

[[phase]]
name = "response"
at = "5m"

[[phase]]
name = "alarm"
at = "0m"

[[inject]]
at = "10m"
incident = "plant"
update = { deaths = 12 }

[[inject]]
at = "0m"
incident = "plant"
report = { kind = "accident.hazardous_chemicals", township = "390202400", deaths = 2 }

[[expect]]
incident = "plant"
grade = "II"
by = "15m"

[[expect]]
incident = "plant"
units = { type = "hazmat", at_least = 4, status = "on_scene" }
"#;

    #[test]
    fn a_good_file_parses_sorted_with_offsets_in_ms() {
        let s = parse("good.toml", GOOD).unwrap();
        assert_eq!(s.duration_ms, 3_600_000);
        assert_eq!(s.phases[0].name, "alarm");
        assert_eq!(s.injects[0].at_ms, 0);
        assert!(matches!(s.injects[0].action, Action::Report(_)));
        assert_eq!(s.injects[1].at_ms, 600_000);
        assert_eq!(s.expectations[0].by_ms, Some(900_000));
        assert_eq!(s.expectations[0].text, "plant: grade II by T+15m");
        assert_eq!(
            s.expectations[1].check,
            Check::Units {
                unit_type: Some("hazmat".into()),
                at_least: 4,
                status: "on_scene".into()
            }
        );
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_offset("T+5m").unwrap(), 300_000);
        assert_eq!(parse_offset("90s").unwrap(), 90_000);
        assert_eq!(parse_offset("250ms").unwrap(), 250);
        assert_eq!(parse_offset("7").unwrap(), 420_000);
        assert_eq!(parse_offset("1.5m").unwrap(), 90_000);
        assert!(parse_offset("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_offset("5m3").unwrap_err().contains("has no unit"));
        assert_eq!(format_offset(5_400_000), "1h30m");
        assert_eq!(format_offset(330_000), "5m30s");
    }

    fn error(text: &str) -> String {
        parse("s.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_point_at_file_line_col() {
        let bad_offset = GOOD.replace("at = \"10m\"", "at = \"10q\"");
        assert_eq!(
            error(&bad_offset),
            "s.toml:17:6: offset \"10q\": unknown unit 'q' (use h, m, s or ms, as in 1h30m)"
        );
        let unknown_label = GOOD.replace(
            "incident = \"plant\"\nupdate",
            "incident = \"plnt\"\nupdate",
        );
        let message = error(&unknown_label);
        assert!(
            message.starts_with("s.toml:18:12: incident \"plnt\" is not created"),
            "{message}"
        );
        let late = GOOD.replace("by = \"15m\"", "by = \"2h\"");
        assert!(
            error(&late).starts_with("s.toml:29:6: 2h is past the end"),
            "{}",
            error(&late)
        );
        let grade = GOOD.replace("grade = \"II\"", "grade = \"V\"");
        assert!(
            error(&grade).starts_with("s.toml:28:9: grade \"V\""),
            "{}",
            error(&grade)
        );
        let unknown_field = GOOD.replace("grade = \"II\"", "grde = \"II\"");
        let message = error(&unknown_field);
        assert!(
            message.starts_with("s.toml:28:1: unknown field `grde`"),
            "{message}"
        );
        let syntax = GOOD.replace("name = \"alarm\"", "name = alarm");
        assert!(
            error(&syntax).starts_with("s.toml:13:8:"),
            "{}",
            error(&syntax)
        );
        let two = GOOD.replace(
            "update = { deaths = 12 }",
            "update = { deaths = 12 }\nack = { officer = \"W\" }",
        );
        assert!(error(&two).contains("exactly one thing"), "{}", error(&two));
    }

    #[test]
    fn an_update_before_the_report_is_refused() {
        let early = GOOD.replace("at = \"10m\"", "at = \"0m\"").replace(
            "at = \"0m\"\nincident = \"plant\"\nreport",
            "at = \"1m\"\nincident = \"plant\"\nreport",
        );
        let message = error(&early);
        assert!(
            message.contains("is not created by any earlier inject")
                || message.contains("before it is created"),
            "{message}"
        );
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let scenario = load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!scenario.expectations.is_empty(), "{}", path.display());
                count += 1;
            }
        }
        assert!(
            count >= 3,
            "at least three shipped scenarios, found {count}"
        );
    }
}
