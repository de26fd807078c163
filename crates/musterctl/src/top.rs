//! `musterctl top`, the pure half: the dashboard's state, what a key does to it
//! ([`TopState::update`] returns the [`Action`] the runtime must perform), and how a state is
//! drawn ([`render`]). No I/O and no clock reads here, so all of it is tested with ratatui's
//! `TestBackend`; the terminal and the polling live in `commands/top.rs`.

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use crate::time::format_duration_ms;
use crate::timeline::{TimelineRow, format_local, format_relative, offset_label};
use crate::view::{CommandView, DeadlineView, IncidentView, UnitView, or_dash};

/// One open incident as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    pub id: String,
    /// `I` to `IV`; `None` when not (yet) graded.
    pub grade: Option<String>,
    pub kind: String,
    /// The lead jurisdiction's name (or code).
    pub lead: String,
    pub status: String,
    pub reported_at_unix_ms: i64,
    /// When the level asked must acknowledge by; `None` when no chain timer is pending.
    pub ack_due_unix_ms: Option<i64>,
    pub acknowledged: bool,
    /// The earliest report obligation not yet met: due at, and whether escalation already
    /// counts it late.
    pub report_due_unix_ms: Option<i64>,
    pub report_late: bool,
}

impl IncidentRow {
    /// Builds the row from what intake, escalation's command and its deadlines say.
    pub fn new(
        incident: &IncidentView,
        command: Option<&CommandView>,
        deadlines: &[DeadlineView],
    ) -> Self {
        let open_deadline = deadlines
            .iter()
            .filter(|d| d.incident_id == incident.id)
            .filter(|d| matches!(d.status.as_deref(), Some("open") | Some("late")))
            .min_by_key(|d| d.due_at_unix_ms);
        Self {
            id: incident.id.clone(),
            grade: incident.grading.as_ref().and_then(|g| g.grade.clone()),
            kind: incident.kind.clone(),
            lead: incident.lead_label(),
            status: incident.status_label(),
            reported_at_unix_ms: incident.reported_at_unix_ms,
            ack_due_unix_ms: command
                .filter(|c| !c.acknowledged && c.ack_due_at_unix_ms != 0)
                .map(|c| c.ack_due_at_unix_ms),
            acknowledged: command.is_some_and(|c| c.acknowledged),
            report_due_unix_ms: open_deadline.map(|d| d.due_at_unix_ms),
            report_late: open_deadline.is_some_and(DeadlineView::is_late),
        }
    }

    /// Sort key: grade I first, ungraded last; within a grade the newest report first.
    fn order(&self) -> (u8, i64) {
        let rank = match self.grade.as_deref() {
            Some("I") => 0,
            Some("II") => 1,
            Some("III") => 2,
            Some("IV") => 3,
            _ => 4,
        };
        (rank, -self.reported_at_unix_ms)
    }
}

/// A countdown for a table cell, and whether it is late.
pub fn countdown(
    label: &str,
    due_unix_ms: Option<i64>,
    late_already: bool,
    now_ms: i64,
) -> (String, bool) {
    match due_unix_ms {
        None => ("-".to_owned(), false),
        Some(due) if late_already || now_ms >= due => (
            format!("{label} LATE {}", format_duration_ms(now_ms - due)),
            true,
        ),
        Some(due) => (
            format!("{label} {}", format_duration_ms(due - now_ms)),
            false,
        ),
    }
}

/// Units counted by type and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitBoard {
    /// unit type → status → count.
    pub counts: BTreeMap<String, BTreeMap<String, u32>>,
}

/// The statuses the board shows, in duty-cycle order, with their column titles.
pub const UNIT_COLUMNS: [(&str, &str); 7] = [
    ("available", "AVAIL"),
    ("dispatched", "DISP"),
    ("enroute", "ENROUTE"),
    ("staging", "STAGING"),
    ("on_scene", "ON SCENE"),
    ("returning", "RETURN"),
    ("out_of_service", "OOS"),
];

impl UnitBoard {
    pub fn new(units: &[UnitView]) -> Self {
        let mut counts: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        for unit in units {
            *counts
                .entry(unit.unit_type.clone())
                .or_default()
                .entry(or_dash(unit.status.as_deref()))
                .or_default() += 1;
        }
        Self { counts }
    }
}

/// The incident opened with Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub incident_id: String,
    /// `key  value` lines above the timeline; empty while loading.
    pub header: Vec<(String, String)>,
    pub rows: Vec<TimelineRow>,
    pub reported_at_unix_ms: i64,
    /// First timeline row shown.
    pub scroll: usize,
    pub loading: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    List,
    Detail(Detail),
}

/// What the runtime must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// EscalationService.Acknowledge for this incident.
    Acknowledge(String),
    /// Load this incident and its timeline into the detail screen.
    Open(String),
    /// Poll now instead of waiting for the next tick.
    Refresh,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopState {
    pub namespace: String,
    /// Sorted by grade, I first.
    pub incidents: Vec<IncidentRow>,
    pub selected: usize,
    pub units: UnitBoard,
    pub screen: Screen,
    /// The outcome of the last action or poll problem, shown at the bottom.
    pub status_line: String,
    /// Whether `status_line` reports a failure (drawn red).
    pub status_is_error: bool,
    pub now_ms: i64,
    pub offset_seconds: i32,
}

impl TopState {
    pub fn new(namespace: &str, now_ms: i64, offset_seconds: i32) -> Self {
        Self {
            namespace: namespace.to_owned(),
            incidents: Vec::new(),
            selected: 0,
            units: UnitBoard::default(),
            screen: Screen::List,
            status_line: "loading…".to_owned(),
            status_is_error: false,
            now_ms,
            offset_seconds,
        }
    }

    /// Replaces the incident list, keeping the same incident selected when it is still there.
    pub fn set_incidents(&mut self, mut incidents: Vec<IncidentRow>) {
        let selected_id = self.selected_id().map(str::to_owned);
        incidents.sort_by_key(IncidentRow::order);
        self.incidents = incidents;
        self.selected = selected_id
            .and_then(|id| self.incidents.iter().position(|row| row.id == id))
            .unwrap_or(self.selected)
            .min(self.incidents.len().saturating_sub(1));
    }

    pub fn selected_id(&self) -> Option<&str> {
        self.incidents.get(self.selected).map(|row| row.id.as_str())
    }

    pub fn set_status(&mut self, text: impl Into<String>, is_error: bool) {
        self.status_line = text.into();
        self.status_is_error = is_error;
    }

    /// Applies one key and says what the runtime must do, if anything.
    pub fn update(&mut self, key: KeyCode) -> Option<Action> {
        if let Screen::Detail(detail) = &mut self.screen {
            return match key {
                KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => {
                    self.screen = Screen::List;
                    None
                }
                KeyCode::Char('q') => Some(Action::Quit),
                KeyCode::Char('j') | KeyCode::Down => {
                    detail.scroll = (detail.scroll + 1).min(detail.rows.len().saturating_sub(1));
                    None
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    detail.scroll = detail.scroll.saturating_sub(1);
                    None
                }
                KeyCode::Char('a') => {
                    let id = detail.incident_id.clone();
                    self.set_status(format!("acknowledging {id}…"), false);
                    Some(Action::Acknowledge(id))
                }
                _ => None,
            };
        }
        match key {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('j') | KeyCode::Down => {
                if self.selected + 1 < self.incidents.len() {
                    self.selected += 1;
                }
                None
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.selected = self.selected.saturating_sub(1);
                None
            }
            KeyCode::Home | KeyCode::Char('g') => {
                self.selected = 0;
                None
            }
            KeyCode::End | KeyCode::Char('G') => {
                self.selected = self.incidents.len().saturating_sub(1);
                None
            }
            KeyCode::Char('a') => {
                let id = self.selected_id()?.to_owned();
                self.set_status(format!("acknowledging {id}…"), false);
                Some(Action::Acknowledge(id))
            }
            KeyCode::Enter => {
                let id = self.selected_id()?.to_owned();
                self.screen = Screen::Detail(Detail {
                    incident_id: id.clone(),
                    header: Vec::new(),
                    rows: Vec::new(),
                    reported_at_unix_ms: 0,
                    scroll: 0,
                    loading: true,
                });
                Some(Action::Open(id))
            }
            KeyCode::Char('r') => Some(Action::Refresh),
            _ => None,
        }
    }

    /// Fills the detail screen, if it is still showing that incident.
    pub fn set_detail(&mut self, detail: Detail) {
        if let Screen::Detail(current) = &self.screen
            && current.incident_id == detail.incident_id
        {
            self.screen = Screen::Detail(detail);
        }
    }
}

const LATE: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);

fn grade_style(grade: Option<&str>) -> Style {
    // The warning colours agencies use: red for the gravest, then orange, yellow, blue.
    match grade {
        Some("I") => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Some("II") => Style::new().fg(Color::LightRed),
        Some("III") => Style::new().fg(Color::Yellow),
        Some("IV") => Style::new().fg(Color::Blue),
        _ => Style::new(),
    }
}

/// Draws the whole dashboard for `state`.
pub fn render(frame: &mut Frame, state: &TopState) {
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    let open = state.incidents.len();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("muster top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  {}  {} ({})  {open} open incident{}",
                state.namespace,
                format_local(state.now_ms, state.offset_seconds),
                offset_label(state.offset_seconds),
                if open == 1 { "" } else { "s" }
            )),
        ])),
        title,
    );
    match &state.screen {
        Screen::List => render_list(frame, body, state),
        Screen::Detail(detail) => render_detail(frame, body, state, detail),
    }
    let help = match state.screen {
        Screen::List => "j/k select  a acknowledge  Enter timeline  r refresh  q quit",
        Screen::Detail(_) => "j/k scroll  a acknowledge  Esc back  q quit",
    };
    let status_style = if state.status_is_error {
        LATE
    } else {
        Style::new()
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::styled(state.status_line.clone(), status_style),
            Line::styled(help, Style::new().fg(Color::DarkGray)),
        ]),
        status,
    );
}

fn render_list(frame: &mut Frame, area: Rect, state: &TopState) {
    let unit_height = u16::try_from(state.units.counts.len())
        .unwrap_or(u16::MAX)
        .saturating_add(3)
        .min(area.height / 2);
    let [incidents_area, units_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(unit_height)]).areas(area);

    let rows = state.incidents.iter().map(|row| {
        let (ack, ack_late) = if row.acknowledged {
            ("acked".to_owned(), false)
        } else {
            countdown("ack", row.ack_due_unix_ms, false, state.now_ms)
        };
        let (report, report_late) = countdown(
            "report",
            row.report_due_unix_ms,
            row.report_late,
            state.now_ms,
        );
        let late_style = |late: bool| if late { LATE } else { Style::new() };
        Row::new(vec![
            Cell::from(or_dash(row.grade.as_deref())).style(grade_style(row.grade.as_deref())),
            Cell::from(row.id.clone()),
            Cell::from(row.lead.clone()),
            Cell::from(row.status.clone()),
            Cell::from(ack).style(late_style(ack_late)),
            Cell::from(report).style(late_style(report_late)),
            Cell::from(row.kind.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(22),
            Constraint::Length(16),
            Constraint::Length(10),
            Constraint::Length(16),
            Constraint::Length(19),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "GRADE", "INCIDENT", "LEAD", "STATUS", "ACK", "REPORT", "KIND",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::new().borders(Borders::TOP).title("open incidents"))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut table_state =
        TableState::new().with_selected((!state.incidents.is_empty()).then_some(state.selected));
    frame.render_stateful_widget(table, incidents_area, &mut table_state);

    let mut header = vec!["TYPE".to_owned()];
    header.extend(UNIT_COLUMNS.iter().map(|(_, title)| (*title).to_owned()));
    header.push("TOTAL".to_owned());
    let rows = state.units.counts.iter().map(|(unit_type, by_status)| {
        let mut cells = vec![Cell::from(unit_type.clone())];
        for (status, _) in UNIT_COLUMNS {
            let count = by_status.get(status).copied().unwrap_or(0);
            let style = if status == "out_of_service" && count > 0 {
                Style::new().fg(Color::Yellow)
            } else if status == "available" && count == 0 {
                LATE
            } else {
                Style::new()
            };
            cells.push(Cell::from(count.to_string()).style(style));
        }
        cells.push(Cell::from(by_status.values().sum::<u32>().to_string()));
        Row::new(cells)
    });
    let mut widths = vec![Constraint::Length(16)];
    widths.extend(std::iter::repeat_n(
        Constraint::Length(9),
        UNIT_COLUMNS.len() + 1,
    ));
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
            .block(Block::new().borders(Borders::TOP).title("units")),
        units_area,
    );
}

fn render_detail(frame: &mut Frame, area: Rect, state: &TopState, detail: &Detail) {
    let header_height = u16::try_from(detail.header.len())
        .unwrap_or(0)
        .saturating_add(1);
    let [header_area, timeline_area] =
        Layout::vertical([Constraint::Length(header_height), Constraint::Min(3)]).areas(area);
    let mut lines = vec![Line::styled(
        format!("incident {}", detail.incident_id),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    lines.extend(
        detail
            .header
            .iter()
            .map(|(key, value)| Line::raw(format!("{key:<10} {value}"))),
    );
    frame.render_widget(Paragraph::new(lines), header_area);
    if detail.loading {
        frame.render_widget(Paragraph::new("loading…"), timeline_area);
        return;
    }
    let rows = detail.rows.iter().skip(detail.scroll).map(|row| {
        let style = if row.late { LATE } else { Style::new() };
        Row::new(vec![
            Cell::from(format_local(row.at_unix_ms, state.offset_seconds)),
            Cell::from(format_relative(row.at_unix_ms - detail.reported_at_unix_ms)),
            Cell::from(row.kind.clone()),
            Cell::from(row.source.clone()),
            Cell::from(row.detail.clone()),
        ])
        .style(style)
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(14),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Min(20),
            ],
        )
        .header(
            Row::new([
                format!("TIME ({})", offset_label(state.offset_seconds)),
                "T+".to_owned(),
                "KIND".to_owned(),
                "SOURCE".to_owned(),
                "DETAIL".to_owned(),
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title("timeline")),
        timeline_area,
    );
}
