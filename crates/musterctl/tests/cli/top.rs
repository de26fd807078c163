//! The `top` dashboard's pure model and rendering, drawn on ratatui's `TestBackend`.

use muster_proto::v1 as pb;
use musterctl::top::{Action, Detail, IncidentRow, Screen, TopState, UnitBoard, countdown, render};
use musterctl::view::{CommandView, DeadlineView, IncidentView, UnitView};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;

use musterctl::table::display_width;

use crate::{deadline, sample_command, sample_incident, sample_unit};

const NOW: i64 = 1_795_847_244_000;

fn row(id: &str, grade: Option<&str>, lead: &str, reported_ago_ms: i64) -> IncidentRow {
    IncidentRow {
        id: id.to_owned(),
        grade: grade.map(str::to_owned),
        kind: "accident.fire".to_owned(),
        lead: lead.to_owned(),
        status: "graded".to_owned(),
        reported_at_unix_ms: NOW - reported_ago_ms,
        ack_due_unix_ms: None,
        acknowledged: false,
        report_due_unix_ms: None,
        report_late: false,
    }
}

/// Incidents of every grade, given out of order; INC-II's acknowledgement is 2m05s overdue and
/// INC-III's report is due in 41 minutes.
fn state() -> TopState {
    let mut state = TopState::new("live", NOW, 0);
    let mut overdue = row("INC-II", Some("II"), "江苏省", 60_000);
    overdue.ack_due_unix_ms = Some(NOW - 125_000);
    let mut reporting = row("INC-III", Some("III"), "南京市", 30_000);
    reporting.report_due_unix_ms = Some(NOW + 2_460_000);
    let mut acked = row("INC-I", Some("I"), "国家", 10_000);
    acked.acknowledged = true;
    let mut ack_pending = row("INC-IV", Some("IV"), "玄武区", 5_000);
    ack_pending.ack_due_unix_ms = Some(NOW + 600_000);
    state.set_incidents(vec![
        row("INC-NEW", None, "-", 1_000),
        reporting,
        ack_pending,
        overdue,
        acked,
    ]);
    let units = [
        ("U-1", pb::UnitStatus::Available, "hazmat"),
        ("U-2", pb::UnitStatus::Enroute, "hazmat"),
        ("U-3", pb::UnitStatus::OnScene, "ambulance"),
        ("U-4", pb::UnitStatus::OutOfService, "ambulance"),
        ("U-5", pb::UnitStatus::OnScene, "ambulance"),
    ]
    .map(|(id, status, unit_type)| {
        let mut unit = sample_unit(id, status);
        unit.unit_type = unit_type.to_owned();
        UnitView::from(unit)
    });
    state.units = UnitBoard::new(&units);
    state.set_status("acknowledged INC-I as Wang", false);
    state
}

fn draw(state: &TopState, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| render(frame, state)).unwrap();
    terminal.backend().buffer().clone()
}

/// The visible cells of one line: (column, symbol), leaving out the cells a wide character
/// (CJK) covers.
fn visible_cells(buffer: &Buffer, y: u16) -> Vec<(u16, String)> {
    let mut cells = Vec::new();
    let mut x = 0;
    while x < buffer.area.width {
        let symbol = buffer[(x, y)].symbol().to_owned();
        let width = display_width(&symbol).max(1);
        cells.push((x, symbol));
        x += u16::try_from(width).unwrap();
    }
    cells
}

/// The buffer's text, one string per line.
fn lines(buffer: &Buffer) -> Vec<String> {
    (0..buffer.area.height)
        .map(|y| {
            visible_cells(buffer, y)
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        })
        .collect()
}

/// Where `needle` starts in the buffer: (column, row) in cells.
fn find(buffer: &Buffer, needle: &str) -> (u16, u16) {
    for y in 0..buffer.area.height {
        let cells = visible_cells(buffer, y);
        for start in 0..cells.len() {
            let rest: String = cells[start..].iter().map(|(_, s)| s.as_str()).collect();
            if rest.starts_with(needle) {
                return (cells[start].0, y);
            }
        }
    }
    panic!("{needle:?} not on screen:\n{}", lines(buffer).join("\n"));
}

#[test]
fn incidents_are_listed_grade_i_first_with_lead_and_countdowns() {
    let buffer = draw(&state(), 120, 30);
    let screen = lines(&buffer);
    let order: Vec<&str> = ["INC-I ", "INC-II ", "INC-III", "INC-IV", "INC-NEW"]
        .into_iter()
        .collect();
    let rows: Vec<u16> = order.iter().map(|id| find(&buffer, id).1).collect();
    assert!(
        rows.windows(2).all(|pair| pair[0] < pair[1]),
        "grade order {rows:?}:\n{}",
        screen.join("\n")
    );

    let line = |id: &str| screen[find(&buffer, id).1 as usize].clone();
    let overdue = line("INC-II ");
    assert!(overdue.contains("江苏省"), "{overdue}");
    assert!(overdue.contains("ack LATE 2m05s"), "{overdue}");
    assert!(
        line("INC-III").contains("report 41m00s"),
        "{}",
        line("INC-III")
    );
    assert!(line("INC-IV").contains("ack 10m00s"), "{}", line("INC-IV"));
    assert!(line("INC-I ").contains("acked"), "{}", line("INC-I "));
    assert!(line("INC-I ").contains("国家"), "{}", line("INC-I "));
    // The header and the selection marker on the first (grade I) row.
    assert!(
        screen
            .iter()
            .any(|l| l.contains("GRADE") && l.contains("LEAD") && l.contains("ACK"))
    );
    assert!(line("INC-I ").starts_with("> I"), "{}", line("INC-I "));
    assert!(screen.join("\n").contains("5 open incidents"));
    assert!(screen.join("\n").contains("acknowledged INC-I as Wang"));
}

#[test]
fn the_overdue_countdown_is_red_and_the_others_are_not() {
    let buffer = draw(&state(), 120, 30);
    let (x, y) = find(&buffer, "ack LATE 2m05s");
    for offset in 0.."ack LATE 2m05s".len() as u16 {
        assert_eq!(
            buffer[(x + offset, y)].fg,
            Color::Red,
            "cell {} of the countdown",
            offset
        );
    }
    let (x, y) = find(&buffer, "ack 10m00s");
    assert_ne!(buffer[(x, y)].fg, Color::Red);
    let (x, y) = find(&buffer, "report 41m00s");
    assert_ne!(buffer[(x, y)].fg, Color::Red);
}

#[test]
fn countdowns_turn_late_at_the_deadline_or_when_escalation_says_so() {
    assert_eq!(countdown("ack", None, false, NOW), ("-".to_owned(), false));
    assert_eq!(
        countdown("ack", Some(NOW + 61_000), false, NOW),
        ("ack 1m01s".to_owned(), false)
    );
    assert_eq!(
        countdown("ack", Some(NOW), false, NOW),
        ("ack LATE 0ms".to_owned(), true)
    );
    assert_eq!(
        countdown("report", Some(NOW + 5_000), true, NOW),
        ("report LATE -5s".to_owned(), true),
        "escalation's word wins over a skewed local clock"
    );
}

#[test]
fn the_unit_board_counts_by_type_and_status() {
    let buffer = draw(&state(), 120, 30);
    let screen = lines(&buffer);
    let header = &screen[find(&buffer, "TYPE").1 as usize];
    for column in ["AVAIL", "ENROUTE", "ON SCENE", "OOS", "TOTAL"] {
        assert!(header.contains(column), "{header}");
    }
    let cells = |unit_type: &str| -> Vec<String> {
        screen[find(&buffer, unit_type).1 as usize]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // TYPE AVAIL DISP ENROUTE STAGING ON_SCENE RETURN OOS TOTAL
    assert_eq!(
        cells("ambulance"),
        ["ambulance", "0", "0", "0", "0", "2", "0", "1", "3"]
    );
    assert_eq!(
        cells("hazmat "),
        ["hazmat", "1", "0", "1", "0", "0", "0", "0", "2"]
    );
    // No ambulance free is a warning: the AVAIL cell, the first after the type, is red.
    let (x, y) = find(&buffer, "ambulance");
    let avail = (x + 9..buffer.area.width)
        .find(|&column| buffer[(column, y)].symbol() != " ")
        .unwrap();
    assert_eq!(buffer[(avail, y)].symbol(), "0");
    assert_eq!(buffer[(avail, y)].fg, Color::Red);
    let (x, y) = find(&buffer, "hazmat ");
    let avail = (x + 6..buffer.area.width)
        .find(|&column| buffer[(column, y)].symbol() != " ")
        .unwrap();
    assert_eq!(buffer[(avail, y)].symbol(), "1");
    assert_ne!(buffer[(avail, y)].fg, Color::Red);
}

#[test]
fn keys_move_the_selection_acknowledge_and_open() {
    let mut state = state();
    assert_eq!(state.selected_id(), Some("INC-I"));
    assert_eq!(state.update(KeyCode::Char('j')), None);
    assert_eq!(state.update(KeyCode::Down), None);
    assert_eq!(state.selected_id(), Some("INC-III"));
    assert_eq!(state.update(KeyCode::Char('k')), None);
    assert_eq!(state.selected_id(), Some("INC-II"));
    assert_eq!(
        state.update(KeyCode::Char('a')),
        Some(Action::Acknowledge("INC-II".to_owned()))
    );
    assert_eq!(state.status_line, "acknowledging INC-II…");
    // The selection stops at both ends.
    for _ in 0..10 {
        state.update(KeyCode::Up);
    }
    assert_eq!(state.selected_id(), Some("INC-I"));
    for _ in 0..10 {
        state.update(KeyCode::Char('j'));
    }
    assert_eq!(state.selected_id(), Some("INC-NEW"));

    assert_eq!(
        state.update(KeyCode::Enter),
        Some(Action::Open("INC-NEW".to_owned()))
    );
    assert!(
        matches!(&state.screen, Screen::Detail(detail) if detail.loading && detail.incident_id == "INC-NEW")
    );
    // In the detail screen j/k scroll, Esc goes back, q still quits.
    assert_eq!(state.update(KeyCode::Char('j')), None);
    assert_eq!(state.update(KeyCode::Esc), None);
    assert_eq!(state.screen, Screen::List);
    assert_eq!(state.selected_id(), Some("INC-NEW"));
    assert_eq!(state.update(KeyCode::Char('r')), Some(Action::Refresh));
    assert_eq!(state.update(KeyCode::Char('q')), Some(Action::Quit));
}

#[test]
fn a_refresh_keeps_the_selected_incident_selected() {
    let mut state = state();
    state.update(KeyCode::Char('j'));
    state.update(KeyCode::Char('j'));
    assert_eq!(state.selected_id(), Some("INC-III"));
    // A new grade I incident arrives above it.
    let mut incidents = state.incidents.clone();
    incidents.push(row("INC-I2", Some("I"), "国家", 0));
    state.set_incidents(incidents);
    assert_eq!(state.selected_id(), Some("INC-III"));
    // And when it is gone, the selection stays in range.
    let incidents: Vec<IncidentRow> = state.incidents.iter().take(2).cloned().collect();
    state.set_incidents(incidents);
    assert_eq!(state.selected, 1);
    state.set_incidents(Vec::new());
    assert_eq!(state.selected_id(), None);
    assert_eq!(
        state.update(KeyCode::Char('a')),
        None,
        "nothing to acknowledge"
    );
    assert_eq!(state.update(KeyCode::Enter), None);
}

#[test]
fn rows_take_ack_and_the_earliest_open_report_from_escalation() {
    let incident: IncidentView = sample_incident().into();
    let command: CommandView = sample_command("INC-7").into();
    let mut met = deadline(1, pb::DeadlineStatus::Met, 0);
    met.due_at_unix_ms = NOW - 10_000_000;
    let mut open_later = deadline(2, pb::DeadlineStatus::Open, 0);
    open_later.due_at_unix_ms = NOW + 7_200_000;
    let mut late_first = deadline(3, pb::DeadlineStatus::Late, 0);
    late_first.due_at_unix_ms = NOW - 60_000;
    let deadlines: Vec<DeadlineView> = [met, open_later, late_first].map(Into::into).to_vec();
    let row = IncidentRow::new(&incident, Some(&command), &deadlines);
    assert_eq!(row.grade.as_deref(), Some("III"));
    assert_eq!(row.lead, "南京市");
    assert_eq!(row.ack_due_unix_ms, Some(command.ack_due_at_unix_ms));
    assert_eq!(row.report_due_unix_ms, Some(NOW - 60_000));
    assert!(row.report_late);

    let mut acknowledged = command.clone();
    acknowledged.acknowledged = true;
    let row = IncidentRow::new(&incident, Some(&acknowledged), &[]);
    assert!(row.acknowledged);
    assert_eq!(row.ack_due_unix_ms, None);
    assert_eq!(row.report_due_unix_ms, None);
}

#[test]
fn the_detail_screen_shows_the_timeline_with_late_rows_in_red() {
    let mut state = state();
    state.update(KeyCode::Char('j'));
    assert_eq!(
        state.update(KeyCode::Enter),
        Some(Action::Open("INC-II".to_owned()))
    );
    let loading = lines(&draw(&state, 100, 20)).join("\n");
    assert!(
        loading.contains("incident INC-II") && loading.contains("loading…"),
        "{loading}"
    );

    let incident: IncidentView = sample_incident().into();
    let command: CommandView = {
        let mut command = sample_command("INC-II");
        command.ack_due_at_unix_ms = NOW - 125_000;
        command.into()
    };
    let mut rows = musterctl::timeline::timeline_rows(&incident, &[], Some(&command), NOW);
    assert_eq!(rows.len(), 2);
    rows[0].detail = "reported by Officer Li".to_owned();
    state.set_detail(Detail {
        incident_id: "INC-II".to_owned(),
        header: vec![("grade".to_owned(), "II".to_owned())],
        rows,
        reported_at_unix_ms: incident.reported_at_unix_ms,
        scroll: 0,
        loading: false,
    });
    // A detail for another incident (a slow answer after Esc and Enter elsewhere) is ignored.
    state.set_detail(Detail {
        incident_id: "INC-OTHER".to_owned(),
        header: Vec::new(),
        rows: Vec::new(),
        reported_at_unix_ms: 0,
        scroll: 0,
        loading: false,
    });
    let buffer = draw(&state, 120, 20);
    let screen = lines(&buffer).join("\n");
    assert!(screen.contains("timeline"), "{screen}");
    assert!(
        screen.contains("REPORTED") && screen.contains("reported by Officer Li"),
        "{screen}"
    );
    assert!(screen.contains("T+00:00:00"), "{screen}");
    assert!(screen.contains("Esc back"), "{screen}");
    let (x, y) = find(&buffer, "ACK DUE");
    assert_eq!(
        buffer[(x, y)].fg,
        Color::Red,
        "the overdue acknowledgement row is red"
    );
    let (x, y) = find(&buffer, "REPORTED");
    assert_ne!(buffer[(x, y)].fg, Color::Red);
    assert_eq!(
        state.update(KeyCode::Char('a')),
        Some(Action::Acknowledge("INC-II".to_owned())),
        "a acknowledges the open incident from its detail too"
    );
}

#[test]
fn small_terminals_still_show_the_gravest_incident_first_and_never_panic() {
    let state = state();
    let buffer = draw(&state, 80, 24);
    let screen = lines(&buffer);
    let first_incident = screen
        .iter()
        .find(|line| line.contains("INC-"))
        .expect("an incident row");
    assert!(first_incident.contains("INC-I "), "{first_incident}");
    // Tiny and empty screens draw without panicking.
    draw(&state, 20, 5);
    draw(&state, 1, 1);
    draw(&TopState::new("drill.1", NOW, 0), 80, 24);
}
