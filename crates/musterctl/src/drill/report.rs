//! The after-action report of a drill, from its record: Markdown, a self-contained HTML page
//! with an SVG timeline, and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::record::{DrillRecord, IncidentMetrics, improvements, metrics};
use super::scenario::format_offset;

#[derive(Serialize)]
struct JsonReport<'a> {
    record: &'a DrillRecord,
    metrics: std::collections::BTreeMap<&'a str, IncidentMetrics>,
    expectations_met: usize,
    expectations_total: usize,
    improvements: Vec<String>,
}

pub fn json(record: &DrillRecord) -> String {
    let report = JsonReport {
        record,
        metrics: record
            .incidents
            .iter()
            .map(|(label, h)| (label.as_str(), metrics(h, record.duration_ms)))
            .collect(),
        expectations_met: record.verdicts.iter().filter(|v| v.met).count(),
        expectations_total: record.verdicts.len(),
        improvements: improvements(record),
    };
    serde_json::to_string_pretty(&report).expect("JSON of plain values")
}

fn opt(ms: Option<i64>) -> String {
    ms.map_or("—".into(), format_offset)
}

pub fn markdown(record: &DrillRecord) -> String {
    let mut md = String::new();
    let met = record.verdicts.iter().filter(|v| v.met).count();
    let _ = writeln!(md, "# After-action report: {}\n", record.scenario_name);
    let _ = writeln!(
        md,
        "Drill `{}` (namespace `{}`), scenario `{}`, {} at speed ×{}. Expectations met: **{met}/{}**.\n",
        record.id,
        record.namespace,
        record.scenario_file,
        format_offset(record.duration_ms),
        record.speed,
        record.verdicts.len()
    );
    if !record.description.is_empty() {
        let _ = writeln!(md, "{}\n", record.description);
    }
    if !record.objectives.is_empty() {
        let _ = writeln!(md, "## Objectives\n");
        for o in &record.objectives {
            let _ = writeln!(md, "- {o}");
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "## Expectations\n\n| | expectation | observed |\n|---|---|---|"
    );
    for v in &record.verdicts {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            if v.met { "✅ met" } else { "❌ failed" },
            v.expectation,
            v.detail
        );
    }
    let _ = writeln!(
        md,
        "\n## Metrics per incident\n\n| incident | id | to acknowledge | to grade | to first unit | to on scene | deadlines met |\n|---|---|---|---|---|---|---|"
    );
    for (label, h) in &record.incidents {
        let m = metrics(h, record.duration_ms);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {}/{} |",
            h.id,
            opt(m.to_acknowledge_ms),
            opt(m.to_grade_ms),
            opt(m.to_first_unit_ms),
            opt(m.to_on_scene_ms),
            m.deadlines_met,
            m.deadlines_total
        );
    }
    let _ = writeln!(
        md,
        "\n## Reporting deadlines\n\n| incident | report | to | due | filed | |\n|---|---|---|---|---|---|"
    );
    for (label, h) in &record.incidents {
        for d in &h.deadlines {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | T+{} | {} | {} |",
                d.kind,
                d.to,
                format_offset(d.due_ms),
                d.sent_ms
                    .map_or("never".into(), |s| format!("T+{}", format_offset(s))),
                d.state(record.duration_ms)
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Timeline\n\n| T+ | incident | what |\n|---|---|---|"
    );
    let mut rows: Vec<(i64, String, String)> = Vec::new();
    for i in &record.injects {
        rows.push((
            i.fired_ms,
            i.incident.clone(),
            format!(
                "inject: {}{}",
                i.what,
                if i.ok {
                    String::new()
                } else {
                    format!(" (FAILED: {})", i.detail)
                }
            ),
        ));
    }
    for (label, h) in &record.incidents {
        for e in &h.events {
            rows.push((
                e.at_ms,
                label.clone(),
                format!("{}: {}", e.event_type, e.description),
            ));
        }
    }
    rows.sort_by_key(|r| r.0);
    for (at, label, what) in rows {
        let _ = writeln!(
            md,
            "| {} | {label} | {} |",
            format_offset(at),
            what.replace('|', "/")
        );
    }
    let items = improvements(record);
    let _ = writeln!(md, "\n## Improvement items\n");
    if items.is_empty() {
        let _ = writeln!(
            md,
            "None: every expectation was met and every report was on time."
        );
    }
    for item in items {
        let _ = writeln!(md, "- {item}");
    }
    if !record.notifications.is_empty() {
        let sinks: std::collections::BTreeSet<&str> = record
            .notifications
            .iter()
            .map(|n| n.sink.as_str())
            .collect();
        let _ = writeln!(
            md,
            "\n{} notification(s), delivered to: {}.",
            record.notifications.len(),
            sinks.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    md
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "dispatched" => "#f0ad4e",
        "enroute" => "#5bc0de",
        "staging" => "#9b59b6",
        "on_scene" => "#5cb85c",
        "out_of_service" => "#d9534f",
        _ => "#cccccc",
    }
}

/// An SVG timeline: one lane per incident with grade, lead, ack, escalation, deadline marks, and
/// one bar per unit coloured by status.
pub fn svg(record: &DrillRecord) -> String {
    let width = 1000.0;
    let left = 170.0;
    let span = record.duration_ms.max(1) as f64;
    let x =
        |ms: i64| left + (ms.clamp(0, record.duration_ms) as f64 / span) * (width - left - 20.0);
    let mut body = String::new();
    let mut y = 30.0;
    // Axis.
    for i in 0..=10 {
        let ms = record.duration_ms * i / 10;
        let anchor = match i {
            0 => "start",
            10 => "end",
            _ => "middle",
        };
        let _ = write!(
            body,
            r##"<line x1="{0:.1}" y1="20" x2="{0:.1}" y2="{{H}}" stroke="#eee"/><text x="{0:.1}" y="14" font-size="10" text-anchor="{anchor}">T+{1}</text>"##,
            x(ms),
            format_offset(ms)
        );
    }
    for (label, h) in &record.incidents {
        let _ = write!(
            body,
            r##"<text x="4" y="{:.1}" font-size="12" font-weight="bold">{}</text>"##,
            y + 12.0,
            esc(label)
        );
        let _ = write!(
            body,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#999"/>"##,
            y + 8.0,
            width - 20.0
        );
        for g in &h.grades {
            let _ = write!(
                body,
                r##"<g class="grade"><rect x="{:.1}" y="{:.1}" width="22" height="14" fill="#c9302c"/><text x="{:.1}" y="{:.1}" font-size="10" fill="white">{}</text><title>graded {} at T+{}</title></g>"##,
                x(g.at_ms),
                y + 1.0,
                x(g.at_ms) + 2.0,
                y + 12.0,
                esc(g.grade.as_deref().unwrap_or("-")),
                esc(g.grade.as_deref().unwrap_or("-")),
                format_offset(g.at_ms)
            );
        }
        y += 18.0;
        let mut marks: Vec<(i64, &str, String)> = Vec::new();
        for l in &h.leads {
            marks.push((l.at_ms, "#337ab7", format!("lead {} ({})", l.level, l.code)));
        }
        for (at, who) in &h.acks {
            marks.push((*at, "#5cb85c", format!("acknowledged by {who}")));
        }
        for e in &h.escalations {
            marks.push((
                e.at_ms,
                "#d9534f",
                format!("escalated to {} ({})", e.to_level, e.to_code),
            ));
        }
        for d in h
            .deadlines
            .iter()
            .filter(|d| d.due_ms <= record.duration_ms)
        {
            let state = d.state(record.duration_ms);
            let colour = if state == "met" { "#5cb85c" } else { "#d9534f" };
            marks.push((
                d.due_ms,
                colour,
                format!("{} report to {} due ({state})", d.kind, d.to),
            ));
        }
        for (at, level) in &h.warnings {
            marks.push((*at, "#f0ad4e", format!("{level} warning")));
        }
        for (at, colour, title) in marks {
            let _ = write!(
                body,
                r##"<g class="mark"><circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}"/><title>{} at T+{}</title></g>"##,
                x(at),
                y + 5.0,
                esc(&title),
                format_offset(at)
            );
        }
        y += 16.0;
        for unit in &h.units {
            let _ = write!(
                body,
                r##"<text x="14" y="{:.1}" font-size="10">{} {}</text>"##,
                y + 9.0,
                esc(&unit.unit_id),
                esc(&unit.unit_type)
            );
            for (i, (status, from)) in unit.spans.iter().enumerate() {
                let to = unit
                    .spans
                    .get(i + 1)
                    .map_or(record.duration_ms, |(_, t)| *t);
                if status == "left" {
                    continue;
                }
                let _ = write!(
                    body,
                    r##"<rect class="unit" x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="{}"><title>{} {} T+{}–T+{}</title></rect>"##,
                    x(*from),
                    y,
                    (x(to) - x(*from)).max(1.0),
                    status_colour(status),
                    esc(&unit.unit_id),
                    status,
                    format_offset(*from),
                    format_offset(to)
                );
            }
            y += 13.0;
        }
        y += 12.0;
    }
    // Legend.
    let legend: [(&str, &str); 9] = [
        ("#c9302c", "grade"),
        ("#337ab7", "lead"),
        ("#5cb85c", "ack / report met / on scene"),
        ("#d9534f", "escalation / report missed / out of service"),
        ("#f0ad4e", "warning / dispatched"),
        ("#5bc0de", "en route"),
        ("#9b59b6", "staging"),
        ("#cccccc", "other"),
        ("#ffffff", ""),
    ];
    let mut lx = 4.0;
    for (colour, text) in legend.iter().filter(|(_, t)| !t.is_empty()) {
        let _ = write!(
            body,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="10">{text}</text>"##,
            y,
            lx + 13.0,
            y + 9.0
        );
        lx += 20.0 + text.len() as f64 * 5.2;
    }
    y += 14.0;
    let height = y + 10.0;
    let body = body.replace("{H}", &format!("{height:.1}"));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" viewBox="0 0 {width} {height:.0}" font-family="sans-serif">{body}</svg>"##
    )
}

pub fn html(record: &DrillRecord) -> String {
    let md = markdown(record);
    // The tables as HTML: a small converter for the Markdown written above.
    let mut out = String::new();
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            if !in_table {
                out.push_str("<table>");
                in_table = true;
            }
            out.push_str("<tr>");
            for cell in line.trim_matches('|').split(" | ") {
                let _ = write!(out, "<td>{}</td>", esc(cell.trim()));
            }
            out.push_str("</tr>\n");
            continue;
        }
        if in_table {
            out.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", esc(h));
            if h == "Timeline" {
                out.push_str(&svg(record));
            }
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", esc(h));
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = writeln!(out, "<li>{}</li>", esc(item));
        } else if !line.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", esc(line).replace("**", ""));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>After-action report: {}</title>\n<style>body{{font-family:sans-serif;max-width:1040px;margin:2em auto}}table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}</style></head>\n<body>\n{out}</body></html>\n",
        esc(&record.scenario_name)
    )
}

#[cfg(test)]
mod tests {
    use super::super::record::*;
    use super::*;

    fn record() -> DrillRecord {
        let mut incidents = std::collections::BTreeMap::new();
        incidents.insert(
            "plant".to_owned(),
            IncidentHistory {
                id: "INC-1".into(),
                reported_ms: Some(0),
                grades: vec![GradeChange {
                    at_ms: 60_000,
                    grade: Some("II".into()),
                    response_level: Some(2),
                }],
                leads: vec![LeadChange {
                    at_ms: 60_000,
                    code: "390000".into(),
                    level: "province".into(),
                }],
                escalations: vec![Escalation {
                    at_ms: 900_000,
                    to_code: "390200".into(),
                    to_level: "city".into(),
                }],
                deadlines: vec![
                    DeadlineLog {
                        kind: "first".into(),
                        to: "county".into(),
                        created_ms: 0,
                        due_ms: 3_600_000,
                        sent_ms: None,
                        status: "late".into(),
                    },
                    DeadlineLog {
                        kind: "final".into(),
                        to: "county".into(),
                        created_ms: 0,
                        due_ms: 90_000_000,
                        sent_ms: None,
                        status: "open".into(),
                    },
                ],
                units: vec![UnitTrack {
                    unit_id: "HZ-1".into(),
                    unit_type: "hazmat".into(),
                    spans: vec![("dispatched".into(), 70_000), ("on_scene".into(), 600_000)],
                }],
                ..Default::default()
            },
        );
        DrillRecord {
            id: "d1".into(),
            namespace: "drill.d1".into(),
            scenario_file: "s.toml".into(),
            scenario_name: "Tank <explosion>".into(),
            description: String::new(),
            objectives: vec!["lead".into()],
            jurisdictions: vec![],
            duration_ms: 7_200_000,
            phases: vec![],
            speed: 600.0,
            started_at_unix_ms: 0,
            finished_at_unix_ms: 12_000,
            injects: vec![],
            incidents,
            verdicts: vec![Verdict {
                expectation: "plant: grade I".into(),
                met: false,
                detail: "never graded I (II)".into(),
            }],
            notifications: vec![],
        }
    }

    #[test]
    fn markdown_names_failures_deadlines_and_improvements() {
        let md = markdown(&record());
        assert!(md.contains("Expectations met: **0/1**"), "{md}");
        assert!(
            md.contains("| ❌ failed | plant: grade I | never graded I (II) |"),
            "{md}"
        );
        assert!(
            md.contains("| plant | INC-1 | — | 1m | 1m10s | 10m | 0/1 |"),
            "{md}"
        );
        // A report due after the drill ended is open, not missed.
        assert!(
            md.contains("| plant | final | county | T+25h00m | never | open |"),
            "{md}"
        );
        assert!(!md.contains("final report"), "{md}");
        assert!(
            md.contains("the first report to county due at T+1h00m was never filed"),
            "{md}"
        );
        assert!(
            md.contains("nobody acknowledged; the chain escalated 1 time(s)"),
            "{md}"
        );
    }

    #[test]
    fn html_is_self_contained_with_an_svg_timeline() {
        let page = html(&record());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script") && !page.contains("src=\"http"));
        assert!(page.contains("Tank &lt;explosion&gt;"));
        let svg_start = page.find("<svg").unwrap();
        assert!(page[svg_start..].contains("</svg>"));
        // One grade box, one bar per unit status span, marks for lead, escalation and deadline.
        assert_eq!(page.matches("class=\"grade\"").count(), 1);
        assert_eq!(page.matches("class=\"unit\"").count(), 2);
        assert_eq!(page.matches("class=\"mark\"").count(), 3);
        assert!(page.contains("escalated to city (390200) at T+15m"));
    }

    #[test]
    fn json_carries_metrics_and_improvements() {
        let value: serde_json::Value = serde_json::from_str(&json(&record())).unwrap();
        assert_eq!(value["metrics"]["plant"]["to_on_scene_ms"], 600_000);
        assert_eq!(value["expectations_met"], 0);
        assert!(value["improvements"].as_array().unwrap().len() >= 3);
        assert_eq!(value["record"]["incidents"]["plant"]["id"], "INC-1");
    }
}
