//! What a drill run leaves behind (`<drill-dir>/<id>/drill.json`): the scenario, the inject log,
//! each incident's history in scenario time, and the verdicts. `drill report` reads only this.
//!
//! Scenario time is milliseconds since the drill started, multiplied by the speed: at `--speed
//! 60` an event one real second after the start happened at T+1m.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scenario::{Check, Expectation, Scenario, format_offset};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    pub id: String,
    pub namespace: String,
    pub scenario_file: String,
    pub scenario_name: String,
    pub description: String,
    pub objectives: Vec<String>,
    pub jurisdictions: Vec<String>,
    pub duration_ms: i64,
    pub phases: Vec<(String, i64)>,
    pub speed: f64,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    pub injects: Vec<InjectLog>,
    /// By the scenario's incident label.
    pub incidents: BTreeMap<String, IncidentHistory>,
    pub verdicts: Vec<Verdict>,
    /// Notifications the drill's escalation produced, and where they went (the drill sink).
    pub notifications: Vec<NotificationLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectLog {
    /// When the scenario said.
    pub planned_ms: i64,
    /// When it went out, scenario time.
    pub fired_ms: i64,
    pub incident: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
    /// `line:col` in the scenario file.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationLog {
    pub incident: String,
    pub recipient: String,
    pub state: String,
    pub sink: String,
}

/// One incident's history, in scenario milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncidentHistory {
    pub id: String,
    pub kind: String,
    pub township: String,
    pub reported_ms: Option<i64>,
    /// The timeline as intake keeps it.
    pub events: Vec<EventLog>,
    pub grades: Vec<GradeChange>,
    pub leads: Vec<LeadChange>,
    pub acks: Vec<(i64, String)>,
    pub escalations: Vec<Escalation>,
    /// Warning level changes as observed.
    pub warnings: Vec<(i64, String)>,
    pub deadlines: Vec<DeadlineLog>,
    pub units: Vec<UnitTrack>,
    pub mutual_aid_committed_ms: Option<i64>,
    pub closed_ms: Option<i64>,
    pub alert_count: u64,
    /// Shortfalls named by dispatch.
    pub shortfalls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventLog {
    pub at_ms: i64,
    pub event_type: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GradeChange {
    pub at_ms: i64,
    pub grade: Option<String>,
    pub response_level: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeadChange {
    pub at_ms: i64,
    pub code: String,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Escalation {
    pub at_ms: i64,
    pub to_code: String,
    pub to_level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadlineLog {
    pub kind: String,
    pub to: String,
    pub created_ms: i64,
    pub due_ms: i64,
    pub sent_ms: Option<i64>,
    pub status: String,
}

impl DeadlineLog {
    pub fn met(&self) -> bool {
        self.sent_ms.is_some_and(|sent| sent <= self.due_ms)
    }

    /// `met`, `late` (filed after its due time), `missed` (unfiled and due before the drill
    /// ended) or `open` (unfiled, due after the drill's end: not judged).
    pub fn state(&self, end_ms: i64) -> &'static str {
        match self.sent_ms {
            Some(sent) if sent <= self.due_ms => "met",
            Some(_) => "late",
            None if self.due_ms <= end_ms => "missed",
            None => "open",
        }
    }
}

/// One unit's statuses while it served this incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitTrack {
    pub unit_id: String,
    pub unit_type: String,
    /// (status, from) in scenario ms; each lasts until the next one.
    pub spans: Vec<(String, i64)>,
}

impl UnitTrack {
    pub fn first(&self, status: &str) -> Option<i64> {
        self.spans
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, at)| *at)
    }

    pub fn assigned_ms(&self) -> Option<i64> {
        self.spans
            .iter()
            .find(|(s, _)| ["dispatched", "enroute", "staging", "on_scene"].contains(&s.as_str()))
            .map(|(_, at)| *at)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub expectation: String,
    pub met: bool,
    pub detail: String,
}

/// Parses the graded timeline description `grade II (…), response level 2; lead NAME (CODE); …`.
pub fn parse_graded(description: &str) -> (Option<String>, Option<u32>, Option<String>) {
    let grade = description
        .strip_prefix("grade ")
        .and_then(|rest| rest.split([' ', ',', ';']).next())
        .map(str::to_owned);
    let response_level = description
        .split("response level ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        });
    let lead = description
        .split("; lead ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(last_code);
    (grade, response_level, lead)
}

/// The code in the last `(…)` of a text: `湖滨 (390102001)` → `390102001`.
pub fn last_code(text: &str) -> Option<String> {
    let open = text.rfind('(')?;
    let close = text[open..].find(')')? + open;
    Some(text[open + 1..close].to_owned())
}

/// The target of `escalated from A (a) to B (b): reason` or `command handed from A (a) to B (b): …`.
pub fn parse_to_code(description: &str) -> Option<String> {
    let after = description.split(") to ").nth(1)?;
    let head = after.split("):").next()?;
    last_code(&format!("{head})"))
}

/// Judges one expectation against the incident's history.
pub fn judge(expectation: &Expectation, history: Option<&IncidentHistory>) -> Verdict {
    let verdict = |met: bool, detail: String| Verdict {
        expectation: expectation.text.clone(),
        met,
        detail,
    };
    let Some(h) = history else {
        return verdict(
            false,
            format!("incident {:?} was never created", expectation.incident),
        );
    };
    let by = expectation.by_ms.unwrap_or(i64::MAX);
    let when = |ms: i64| format!("at T+{}", format_offset(ms));
    match &expectation.check {
        Check::Grade { grade } => {
            match h
                .grades
                .iter()
                .find(|g| g.grade.as_deref() == Some(grade.as_str()))
            {
                Some(g) if g.at_ms <= by => {
                    verdict(true, format!("graded {grade} {}", when(g.at_ms)))
                }
                Some(g) => verdict(false, format!("graded {grade} only {}", when(g.at_ms))),
                None => verdict(false, format!("never graded {grade} ({})", grade_path(h))),
            }
        }
        Check::Lead { level } => {
            let lead = h.leads.iter().rev().find(|l| l.at_ms <= by);
            match lead {
                Some(l) if &l.level == level => verdict(
                    true,
                    format!("{} ({}) leads since {}", l.level, l.code, when(l.at_ms)),
                ),
                Some(l) => verdict(false, format!("{} ({}) leads", l.level, l.code)),
                None => verdict(false, "no lead was named in time".into()),
            }
        }
        Check::Units {
            unit_type,
            at_least,
            status,
        } => {
            let mut times: Vec<i64> = h
                .units
                .iter()
                .filter(|u| unit_type.as_ref().is_none_or(|t| &u.unit_type == t))
                .filter_map(|u| match status.as_str() {
                    "on_scene" => u.first("on_scene"),
                    _ => u.assigned_ms(),
                })
                .collect();
            times.sort_unstable();
            let in_time = times.iter().filter(|t| **t <= by).count();
            let detail = format!(
                "{in_time} in time{}",
                if times.len() > in_time {
                    format!(", {} in all", times.len())
                } else {
                    String::new()
                }
            );
            verdict(in_time >= *at_least as usize, detail)
        }
        Check::FirstReportOnTime { on_time } => {
            let first = h.deadlines.iter().min_by_key(|d| (d.created_ms, d.due_ms));
            match first {
                None => verdict(false, "no statutory report was due".into()),
                Some(d) => {
                    let met = d.met();
                    let detail = match d.sent_ms {
                        Some(sent) => format!(
                            "{} to {} due T+{}, filed T+{}",
                            d.kind,
                            d.to,
                            format_offset(d.due_ms),
                            format_offset(sent)
                        ),
                        None => format!(
                            "{} to {} due T+{}, never filed",
                            d.kind,
                            d.to,
                            format_offset(d.due_ms)
                        ),
                    };
                    verdict(met == *on_time, detail)
                }
            }
        }
        Check::Acknowledged { yes } => {
            let ack = h.acks.iter().find(|(at, _)| *at <= by);
            match ack {
                Some((at, who)) => verdict(*yes, format!("acknowledged by {who} {}", when(*at))),
                None => verdict(!*yes, "no acknowledgement".into()),
            }
        }
        Check::Escalated { yes, to_level } => {
            let hit = h
                .escalations
                .iter()
                .filter(|e| e.at_ms <= by)
                .find(|e| to_level.as_ref().is_none_or(|l| &e.to_level == l));
            match hit {
                Some(e) => verdict(
                    *yes,
                    format!(
                        "escalated to {} ({}) {}",
                        e.to_level,
                        e.to_code,
                        when(e.at_ms)
                    ),
                ),
                None => verdict(
                    !*yes,
                    format!(
                        "{} escalation(s) in time",
                        h.escalations.iter().filter(|e| e.at_ms <= by).count()
                    ),
                ),
            }
        }
        Check::Warning { level } => match h.warnings.iter().find(|(_, l)| l == level) {
            Some((at, _)) if *at <= by => verdict(true, format!("{level} {}", when(*at))),
            Some((at, _)) => verdict(false, format!("{level} only {}", when(*at))),
            None => verdict(
                false,
                format!(
                    "never {level} (seen: {})",
                    h.warnings
                        .iter()
                        .map(|(_, l)| l.as_str())
                        .collect::<Vec<_>>()
                        .join(" → ")
                ),
            ),
        },
        Check::ResponseLevel { level } => {
            match h.grades.iter().find(|g| g.response_level == Some(*level)) {
                Some(g) if g.at_ms <= by => {
                    verdict(true, format!("response level {level} {}", when(g.at_ms)))
                }
                Some(g) => verdict(
                    false,
                    format!("response level {level} only {}", when(g.at_ms)),
                ),
                None => verdict(false, format!("never response level {level}")),
            }
        }
        Check::MutualAid { yes } => match h.mutual_aid_committed_ms {
            Some(at) if at <= by => verdict(*yes, format!("committed {}", when(at))),
            _ => verdict(!*yes, "no mutual aid committed in time".into()),
        },
        Check::Closed { yes } => match h.closed_ms {
            Some(at) if at <= by => verdict(*yes, format!("closed {}", when(at))),
            _ => verdict(!*yes, "not closed in time".into()),
        },
    }
}

fn grade_path(h: &IncidentHistory) -> String {
    if h.grades.is_empty() {
        return "not graded".into();
    }
    h.grades
        .iter()
        .map(|g| g.grade.clone().unwrap_or_else(|| "-".into()))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Judges every expectation of a scenario.
pub fn judge_all(
    scenario: &Scenario,
    incidents: &BTreeMap<String, IncidentHistory>,
) -> Vec<Verdict> {
    scenario
        .expectations
        .iter()
        .map(|e| judge(e, incidents.get(&e.incident)))
        .collect()
}

/// Per-incident response times, scenario ms after the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IncidentMetrics {
    pub to_acknowledge_ms: Option<i64>,
    pub to_grade_ms: Option<i64>,
    pub to_first_unit_ms: Option<i64>,
    pub to_on_scene_ms: Option<i64>,
    /// Of the deadlines that fell due during the drill (or were filed), how many were met.
    pub deadlines_met: usize,
    pub deadlines_total: usize,
}

pub fn metrics(h: &IncidentHistory, end_ms: i64) -> IncidentMetrics {
    let start = h.reported_ms.unwrap_or(0);
    let since = |at: Option<i64>| at.map(|at| (at - start).max(0));
    IncidentMetrics {
        to_acknowledge_ms: since(h.acks.first().map(|(at, _)| *at)),
        to_grade_ms: since(h.grades.iter().find(|g| g.grade.is_some()).map(|g| g.at_ms)),
        to_first_unit_ms: since(h.units.iter().filter_map(UnitTrack::assigned_ms).min()),
        to_on_scene_ms: since(h.units.iter().filter_map(|u| u.first("on_scene")).min()),
        deadlines_met: h.deadlines.iter().filter(|d| d.met()).count(),
        deadlines_total: h
            .deadlines
            .iter()
            .filter(|d| d.state(end_ms) != "open")
            .count(),
    }
}

/// What to improve: failed expectations, missed deadlines, missing acknowledgements, shortfalls.
pub fn improvements(record: &DrillRecord) -> Vec<String> {
    let mut items = Vec::new();
    for verdict in record.verdicts.iter().filter(|v| !v.met) {
        items.push(format!(
            "Expectation failed: {} ({}).",
            verdict.expectation, verdict.detail
        ));
    }
    for (label, h) in &record.incidents {
        for d in &h.deadlines {
            if matches!(d.state(record.duration_ms), "late" | "missed") {
                items.push(format!(
                    "{label}: the {} report to {} due at T+{} was {}.",
                    d.kind,
                    d.to,
                    format_offset(d.due_ms),
                    match d.sent_ms {
                        Some(sent) => format!("filed late, at T+{}", format_offset(sent)),
                        None => "never filed".into(),
                    }
                ));
            }
        }
        if h.acks.is_empty() && !h.escalations.is_empty() {
            items.push(format!(
                "{label}: nobody acknowledged; the chain escalated {} time(s). Check the duty roster and the officers' alerting.",
                h.escalations.len()
            ));
        }
        for shortfall in &h.shortfalls {
            items.push(format!("{label}: dispatch shortfall: {shortfall}. Review the plan's resources or mutual-aid agreements."));
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::super::scenario::parse;
    use super::*;

    #[test]
    fn graded_descriptions_parse() {
        let (grade, level, lead) = parse_graded(
            "grade II (initial judgement), response level 2; lead 澜江省 (390000); rule eq v1: M 6.5",
        );
        assert_eq!(grade.as_deref(), Some("II"));
        assert_eq!(level, Some(2));
        assert_eq!(lead.as_deref(), Some("390000"));
        let (grade, level, lead) = parse_graded("ungraded; lead 港北区 (390202); rule r v1: none");
        assert_eq!(grade, None);
        assert_eq!(level, None);
        assert_eq!(lead.as_deref(), Some("390202"));
        assert_eq!(
            parse_to_code("escalated from 港北区 (390202) to 明港市 (390200): no acknowledgement")
                .as_deref(),
            Some("390200")
        );
    }

    fn history() -> IncidentHistory {
        IncidentHistory {
            id: "INC-1".into(),
            reported_ms: Some(0),
            grades: vec![
                GradeChange {
                    at_ms: 60_000,
                    grade: Some("III".into()),
                    response_level: Some(3),
                },
                GradeChange {
                    at_ms: 600_000,
                    grade: Some("II".into()),
                    response_level: Some(2),
                },
            ],
            leads: vec![
                LeadChange {
                    at_ms: 60_000,
                    code: "390200".into(),
                    level: "city".into(),
                },
                LeadChange {
                    at_ms: 600_000,
                    code: "390000".into(),
                    level: "province".into(),
                },
            ],
            units: vec![
                UnitTrack {
                    unit_id: "u1".into(),
                    unit_type: "hazmat".into(),
                    spans: vec![("dispatched".into(), 70_000), ("on_scene".into(), 900_000)],
                },
                UnitTrack {
                    unit_id: "u2".into(),
                    unit_type: "hazmat".into(),
                    spans: vec![("dispatched".into(), 80_000)],
                },
                UnitTrack {
                    unit_id: "u3".into(),
                    unit_type: "fire".into(),
                    spans: vec![("dispatched".into(), 80_000), ("on_scene".into(), 400_000)],
                },
            ],
            deadlines: vec![DeadlineLog {
                kind: "first".into(),
                to: "county".into(),
                created_ms: 0,
                due_ms: 3_600_000,
                sent_ms: Some(1_200_000),
                status: "met".into(),
            }],
            ..Default::default()
        }
    }

    const SCENARIO: &str = r#"
[drill]
name = "t"
duration = "2h"
[[inject]]
at = "0m"
incident = "a"
report = { kind = "accident.hazardous_chemicals", township = "390202400" }
[[expect]]
incident = "a"
grade = "II"
by = "5m"
[[expect]]
incident = "a"
grade = "II"
by = "15m"
[[expect]]
incident = "a"
lead = "city"
by = "5m"
[[expect]]
incident = "a"
lead = "city"
[[expect]]
incident = "a"
units = { type = "hazmat", at_least = 2 }
by = "2m"
[[expect]]
incident = "a"
units = { type = "hazmat", at_least = 2, status = "on_scene" }
[[expect]]
incident = "a"
first_report_on_time = true
[[expect]]
incident = "a"
acknowledged = false
[[expect]]
incident = "a"
grade = "I"
"#;

    #[test]
    fn verdicts_follow_the_history_in_scenario_time() {
        let scenario = parse("t.toml", SCENARIO).unwrap();
        let mut incidents = BTreeMap::new();
        incidents.insert("a".to_owned(), history());
        let verdicts = judge_all(&scenario, &incidents);
        let met: Vec<bool> = verdicts.iter().map(|v| v.met).collect();
        assert_eq!(
            met,
            [false, true, true, false, true, false, true, true, false],
            "{verdicts:#?}"
        );
        assert_eq!(verdicts[0].detail, "graded II only at T+10m");
        assert_eq!(verdicts[5].detail, "1 in time");
        assert_eq!(verdicts[8].detail, "never graded I (III → II)");
        let none = judge_all(&scenario, &BTreeMap::new());
        assert!(none.iter().all(|v| !v.met));
    }

    #[test]
    fn metrics_are_measured_from_the_report() {
        let mut h = history();
        h.reported_ms = Some(10_000);
        h.acks.push((130_000, "Wang".into()));
        let m = metrics(&h, 7_200_000);
        assert_eq!(m.to_grade_ms, Some(50_000));
        assert_eq!(m.to_acknowledge_ms, Some(120_000));
        assert_eq!(m.to_first_unit_ms, Some(60_000));
        assert_eq!(m.to_on_scene_ms, Some(390_000));
        assert_eq!((m.deadlines_met, m.deadlines_total), (1, 1));
    }
}
