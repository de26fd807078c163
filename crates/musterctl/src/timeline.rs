//! An incident's readable timeline, as `show` and the `top` detail view print it: intake's
//! events, the report deadlines and the pending acknowledgement from escalation, in time order,
//! each with its local time, its offset from the report (T+) and a kind an officer scans for.
//!
//! Pure: the clock (`now_ms`) and the local UTC offset are parameters.

use crate::table::Table;
use crate::time::{civil_from_days, format_duration_ms};
use crate::view::{CommandView, DeadlineView, IncidentView, or_dash};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRow {
    pub at_unix_ms: i64,
    /// What happened, in capitals: GRADE, LEAD, ACK, ESCALATED, UNITS, REPORT DUE, ...
    pub kind: String,
    /// The service that recorded it.
    pub source: String,
    pub detail: String,
    /// A deadline passed without the report or acknowledgement: shown as LATE (red in `top`).
    pub late: bool,
}

/// The kind shown for an intake timeline event type.
pub fn event_kind(event_type: &str) -> String {
    match event_type {
        "reported" => "REPORTED".to_owned(),
        "updated" => "FACTS".to_owned(),
        "graded" => "GRADE".to_owned(),
        "downgrade_proposed" => "DOWNGRADE?".to_owned(),
        "lead_changed" => "LEAD".to_owned(),
        "acknowledged" => "ACK".to_owned(),
        "escalated" => "ESCALATED".to_owned(),
        "units_assigned" => "UNITS".to_owned(),
        "skip_level_reported" => "SKIP-LEVEL".to_owned(),
        "closed" => "CLOSED".to_owned(),
        other if other.starts_with("mutual_aid") => "MUTUAL AID".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

/// The rows of one incident's timeline, oldest first (rows at the same time keep their order).
pub fn timeline_rows(
    incident: &IncidentView,
    deadlines: &[DeadlineView],
    command: Option<&CommandView>,
    now_ms: i64,
) -> Vec<TimelineRow> {
    let mut rows: Vec<TimelineRow> = incident
        .timeline
        .iter()
        .map(|entry| TimelineRow {
            at_unix_ms: entry.at_unix_ms,
            kind: event_kind(&entry.event_type),
            source: entry.source_service.clone(),
            detail: entry.description.clone(),
            late: false,
        })
        .collect();
    for deadline in deadlines
        .iter()
        .filter(|d| d.incident_id == incident.id || d.incident_id.is_empty())
    {
        let what = format!(
            "{} report {} (obligation {})",
            or_dash(Some(&deadline.kind)),
            deadline.route_label(),
            deadline.obligation_id
        );
        let status = match deadline.status.as_deref() {
            Some("met") if deadline.late_by_ms > 0 => {
                format!("sent LATE by {}", format_duration_ms(deadline.late_by_ms))
            }
            Some("met") => "sent on time".to_owned(),
            Some("late") => format!(
                "NOT SENT, LATE by {}",
                format_duration_ms(now_ms - deadline.due_at_unix_ms)
            ),
            Some("waived") => "waived (incident closed)".to_owned(),
            _ => format!(
                "open, due in {}",
                format_duration_ms(deadline.due_at_unix_ms - now_ms)
            ),
        };
        rows.push(TimelineRow {
            at_unix_ms: deadline.due_at_unix_ms,
            kind: "REPORT DUE".to_owned(),
            source: "escalation".to_owned(),
            detail: format!("{what}: {status}"),
            late: deadline.is_late() || (deadline.is_met() && deadline.late_by_ms > 0),
        });
        if deadline.sent_at_unix_ms != 0 {
            rows.push(TimelineRow {
                at_unix_ms: deadline.sent_at_unix_ms,
                kind: "REPORT SENT".to_owned(),
                source: "escalation".to_owned(),
                detail: what,
                late: deadline.late_by_ms > 0,
            });
        }
    }
    if let Some(command) = command
        && !command.acknowledged
        && command.ack_due_at_unix_ms != 0
    {
        let late = now_ms > command.ack_due_at_unix_ms;
        let when = if late {
            format!(
                "LATE by {}",
                format_duration_ms(now_ms - command.ack_due_at_unix_ms)
            )
        } else {
            format!(
                "due in {}",
                format_duration_ms(command.ack_due_at_unix_ms - now_ms)
            )
        };
        rows.push(TimelineRow {
            at_unix_ms: command.ack_due_at_unix_ms,
            kind: "ACK DUE".to_owned(),
            source: "escalation".to_owned(),
            detail: format!("{} must acknowledge: {when}", command.escalation_label()),
            late,
        });
    }
    rows.sort_by_key(|row| row.at_unix_ms);
    rows
}

/// `UTC+08:00`, `UTC-05:30`, `UTC`.
pub fn offset_label(offset_seconds: i32) -> String {
    if offset_seconds == 0 {
        return "UTC".to_owned();
    }
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let minutes = offset_seconds.unsigned_abs() / 60;
    format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `11-28 14:27:24` at the given offset from UTC.
pub fn format_local(unix_ms: i64, offset_seconds: i32) -> String {
    let local_ms = unix_ms + i64::from(offset_seconds) * 1000;
    let (_, month, day) = civil_from_days(local_ms.div_euclid(86_400_000));
    let second_of_day = local_ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// `T+00:04:12`, `T+1d02:00:00`, `T-00:00:30` (before the report, e.g. the first feed alert).
pub fn format_relative(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let seconds = ms.unsigned_abs() / 1000;
    let (days, hours, minutes, seconds) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if days > 0 {
        format!("T{sign}{days}d{hours:02}:{minutes:02}:{seconds:02}")
    } else {
        format!("T{sign}{hours:02}:{minutes:02}:{seconds:02}")
    }
}

/// The timeline as an aligned table: local time, T+ from `origin_ms` (the report), kind,
/// source and detail; LATE rows are marked `!` in the first column so they show without colour.
pub fn timeline_table(rows: &[TimelineRow], origin_ms: i64, offset_seconds: i32) -> Table {
    let mut table = Table::new([
        format!("  TIME ({})", offset_label(offset_seconds)),
        "T+".to_owned(),
        "KIND".to_owned(),
        "SOURCE".to_owned(),
        "DETAIL".to_owned(),
    ]);
    for row in rows {
        table.row([
            format!(
                "{} {}",
                if row.late { '!' } else { ' ' },
                format_local(row.at_unix_ms, offset_seconds)
            ),
            format_relative(row.at_unix_ms - origin_ms),
            row.kind.clone(),
            row.source.clone(),
            row.detail.clone(),
        ]);
    }
    table
}

/// The local time zone's offset from UTC at `unix_ms`, from the C library (which reads TZ and
/// /etc/localtime); 0 if it cannot tell.
pub fn local_offset_seconds(unix_ms: i64) -> i32 {
    let seconds: libc::time_t = (unix_ms / 1000) as libc::time_t;
    // SAFETY: `localtime_r` writes only into the `tm` we own and reads the time we pass; it is
    // the thread-safe variant, so concurrent calls do not share a static buffer.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&seconds, &mut tm).is_null() {
            0
        } else {
            i32::try_from(tm.tm_gmtoff).unwrap_or(0)
        }
    }
}
