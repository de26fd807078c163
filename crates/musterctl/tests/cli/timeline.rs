//! The readable timeline of `show` (and the `top` detail view), on a fixture incident with
//! grade and lead changes, an escalation, units, report deadlines and a pending acknowledgement.

use muster_proto::v1 as pb;
use musterctl::time::{days_from_civil, parse_rfc3339_ms, parse_since_ms};
use musterctl::timeline::{
    TimelineRow, event_kind, format_local, format_relative, offset_label, timeline_rows,
    timeline_table,
};
use musterctl::view::{CommandView, DeadlineView, IncidentView};

use crate::{
    NOW, deadline, parse, run_to_string, sample_command, sample_incident, spawn_fake_escalation,
    spawn_intake,
};

/// 2026-11-28T06:27:24.123Z, the fixture's report time.
const REPORTED: i64 = 1_795_847_244_123;

fn entry(offset_ms: i64, event_type: &str, source: &str, description: &str) -> pb::TimelineEntry {
    pb::TimelineEntry {
        at_unix_ms: REPORTED + offset_ms,
        event_type: event_type.to_owned(),
        source_service: source.to_owned(),
        description: description.to_owned(),
        event_id: format!("E-{offset_ms}"),
    }
}

fn fixture() -> IncidentView {
    let mut incident = sample_incident();
    incident.timeline = vec![
        entry(0, "reported", "intake", "reported by Officer Li"),
        entry(
            45_000,
            "graded",
            "escalation",
            "grade III, lead 南京市 (3201)",
        ),
        entry(130_000, "units_assigned", "dispatch", "U-1 hazmat, 3.2 km"),
        entry(
            900_000,
            "escalated",
            "escalation",
            "acknowledgement deadline passed: 江苏省 asked",
        ),
        entry(3_600_000, "updated", "intake", "deaths 12"),
        entry(
            3_601_000,
            "graded",
            "escalation",
            "grade II, lead 江苏省 (32)",
        ),
        entry(
            3_601_000,
            "lead_changed",
            "escalation",
            "3201 → 32 (regrade)",
        ),
    ];
    incident.into()
}

fn deadlines() -> Vec<DeadlineView> {
    let mut on_time = deadline(1, pb::DeadlineStatus::Met, 0);
    on_time.due_at_unix_ms = REPORTED + 3_600_000;
    on_time.sent_at_unix_ms = REPORTED + 1_800_000;
    let mut late = deadline(2, pb::DeadlineStatus::Late, 0);
    late.kind = "follow_up".to_owned();
    late.due_at_unix_ms = REPORTED + 7_200_000;
    let mut open = deadline(3, pb::DeadlineStatus::Open, 0);
    open.kind = "final".to_owned();
    open.due_at_unix_ms = REPORTED + 86_400_000;
    [on_time, late, open].into_iter().map(Into::into).collect()
}

fn pending_ack() -> CommandView {
    let mut command = sample_command("INC-7");
    command.ack_due_at_unix_ms = REPORTED + 5_400_000;
    command.into()
}

#[test]
fn event_types_get_the_kinds_officers_scan_for() {
    for (event_type, kind) in [
        ("graded", "GRADE"),
        ("lead_changed", "LEAD"),
        ("acknowledged", "ACK"),
        ("escalated", "ESCALATED"),
        ("units_assigned", "UNITS"),
        ("mutual_aid_committed", "MUTUAL AID"),
        ("something_new", "SOMETHING_NEW"),
    ] {
        assert_eq!(event_kind(event_type), kind);
    }
}

#[test]
fn local_and_relative_times_are_aligned_and_readable() {
    assert_eq!(format_local(REPORTED, 0), "11-28 06:27:24");
    assert_eq!(format_local(REPORTED, 8 * 3600), "11-28 14:27:24");
    assert_eq!(format_local(REPORTED, -7 * 3600), "11-27 23:27:24");
    assert_eq!(offset_label(8 * 3600), "UTC+08:00");
    assert_eq!(offset_label(-(5 * 3600 + 1800)), "UTC-05:30");
    assert_eq!(offset_label(0), "UTC");
    assert_eq!(format_relative(0), "T+00:00:00");
    assert_eq!(format_relative(252_000), "T+00:04:12");
    assert_eq!(format_relative(93_784_000), "T+1d02:03:04");
    assert_eq!(format_relative(-30_000), "T-00:00:30");
}

#[test]
fn the_timeline_merges_events_deadlines_and_the_pending_ack_in_time_order() {
    let now = REPORTED + 8_000_000;
    let rows = timeline_rows(&fixture(), &deadlines(), Some(&pending_ack()), now);
    let kinds: Vec<&str> = rows.iter().map(|row| row.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "REPORTED",
            "GRADE",
            "UNITS",
            "ESCALATED",
            "REPORT SENT",
            "FACTS",
            "REPORT DUE",
            "GRADE",
            "LEAD",
            "ACK DUE",
            "REPORT DUE",
            "REPORT DUE",
        ]
    );
    let late: Vec<&str> = rows
        .iter()
        .filter(|r| r.late)
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        late,
        ["ACK DUE", "REPORT DUE"],
        "the unsent follow-up and the missed ack"
    );
    let ack = rows.iter().find(|r| r.kind == "ACK DUE").unwrap();
    assert_eq!(
        ack.detail,
        "江苏省 (32, province) must acknowledge: LATE by 43m20s"
    );
    let follow_up = &rows[10];
    assert_eq!(
        follow_up.detail,
        "follow_up report county → city (3201) (obligation 2): NOT SENT, LATE by 13m20s"
    );
    assert_eq!(
        rows[11].detail,
        "final report county → city (3201) (obligation 3): open, due in 21h46m"
    );
    assert_eq!(
        rows[6].detail,
        "first report county → city (3201) (obligation 1): sent on time"
    );
}

#[test]
fn the_timeline_table_aligns_every_column() {
    let rows = timeline_rows(
        &fixture(),
        &deadlines(),
        Some(&pending_ack()),
        REPORTED + 8_000_000,
    );
    let rendered = timeline_table(&rows, REPORTED, 8 * 3600).render();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(
        lines[0],
        "  TIME (UTC+08:00)  T+            KIND         SOURCE      DETAIL"
    );
    assert_eq!(
        lines[1],
        "  11-28 14:27:24    T+00:00:00    REPORTED     intake      reported by Officer Li"
    );
    assert_eq!(
        lines[4],
        "  11-28 14:42:24    T+00:15:00    ESCALATED    escalation  acknowledgement deadline passed: 江苏省 asked"
    );
    // Late rows are marked so they stand out without colour.
    assert!(
        lines[10].starts_with("! 11-28 15:57:24    T+01:30:00    ACK DUE"),
        "{}",
        lines[10]
    );
    // A day after the report the T+ column widens for every row alike.
    assert!(
        lines[12].starts_with("  11-29 14:27:24    T+1d00:00:00  REPORT DUE"),
        "{}",
        lines[12]
    );
    assert!(lines[12].ends_with("open, due in 21h46m"), "{}", lines[12]);
}

#[test]
fn deadlines_of_other_incidents_stay_out() {
    let mut other = deadline(5, pb::DeadlineStatus::Late, 0);
    other.incident_id = "INC-9".to_owned();
    let rows = timeline_rows(&fixture(), &[other.into()], None, NOW);
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|row: &TimelineRow| row.kind != "REPORT DUE" && row.kind != "REPORT SENT")
    );
}

#[test]
fn since_accepts_rfc3339_unix_ms_and_ages() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    assert_eq!(parse_rfc3339_ms("2026-11-28T06:27:24.123Z"), Some(REPORTED));
    assert_eq!(
        parse_rfc3339_ms("2026-11-28T14:27:24.123+08:00"),
        Some(REPORTED)
    );
    assert_eq!(
        parse_rfc3339_ms("2026-11-28 06:27:24.1Z"),
        Some(REPORTED - 23)
    );
    assert_eq!(parse_rfc3339_ms("2026-13-28T06:27:24Z"), None);
    assert_eq!(
        parse_rfc3339_ms("2026-11-28T06:27:24"),
        None,
        "the offset is required"
    );
    assert_eq!(parse_since_ms("1795847244123", 0), Ok(REPORTED));
    assert_eq!(parse_since_ms("30m", REPORTED), Ok(REPORTED - 1_800_000));
    assert_eq!(parse_since_ms("2h", REPORTED), Ok(REPORTED - 7_200_000));
    assert_eq!(parse_since_ms("1d", REPORTED), Ok(REPORTED - 86_400_000));
    assert!(parse_since_ms("soon", REPORTED).is_err());
    assert!(parse_since_ms("-5m", REPORTED).is_err());
}

#[tokio::test]
async fn show_prints_the_timeline_with_deadlines_and_acknowledgement_from_escalation() {
    let (intake, _) = spawn_intake().await;
    let (escalation, _) = spawn_fake_escalation().await;
    let cli = parse(&[
        "show",
        "INC-7",
        "--intake",
        &intake,
        "--escalation",
        &escalation,
        "--utc",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let timeline = &output[output.find("\ntimeline\n").expect("a timeline section")..];
    let lines: Vec<&str> = timeline.lines().skip(2).collect();
    assert!(lines[0].starts_with("  TIME (UTC)"), "{timeline}");
    // The fake's deadlines were due an hour before the report; its ack is due 15 minutes after.
    assert!(lines[1].contains("T-01:00:00  REPORT DUE"), "{timeline}");
    assert!(
        lines.iter().any(|l| l.contains("T+00:00:00  REPORTED")),
        "{timeline}"
    );
    assert!(
        lines.iter().any(|l| l.contains("T+00:15:00  ACK DUE")
            && l.contains("江苏省 (32, province) must acknowledge")),
        "{timeline}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("! ") && l.contains("NOT SENT, LATE by")),
        "the late obligation is marked:\n{timeline}"
    );
    assert!(!timeline.contains("not shown"), "{timeline}");
}
