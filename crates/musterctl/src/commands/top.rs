//! `musterctl top`, the I/O half: the terminal (raw mode and alternate screen, restored on exit
//! and on panic), the key reader, the poller and the actions. State and drawing are in
//! `crate::top`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use tokio::sync::mpsc;

use super::{Context, escalation_state, now_unix_ms, officer_name};
use crate::timeline::{local_offset_seconds, timeline_rows};
use crate::top::{Action, Detail, IncidentRow, TopState, UnitBoard, render};
use crate::view::{CommandView, DeadlineView, IncidentView, UnitView, or_dash};
use crate::{EXIT_OK, Error, TopArgs};

/// At most this many open incidents get their acknowledgement state polled each round.
const COMMAND_POLL_LEN_MAX: usize = 64;
/// Bound of every channel between the tasks.
const CHANNEL_LEN_MAX: usize = 64;

/// One round of polling: the incident rows, the unit board and any service that failed.
struct Snapshot {
    incidents: Option<Vec<IncidentRow>>,
    units: Option<UnitBoard>,
    errors: Vec<String>,
}

enum Outcome {
    Acknowledged(Box<Result<CommandView, Error>>),
    Opened(Box<Detail>),
}

pub(super) async fn run(context: &Context, args: TopArgs) -> Result<i32, Error> {
    if !std::io::stdout().is_terminal() {
        return Err(Error::Terminal(
            "top draws a live dashboard and needs a terminal; for scripts use `incidents --json`, `deadlines --json` or `watch --json`".to_owned(),
        ));
    }
    let officer = officer_name(args.officer);
    let _restore = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|error| Error::Terminal(error.to_string()))?;

    let now = now_unix_ms();
    let mut state = TopState::new(&context.namespace, now, local_offset_seconds(now));
    let (key_tx, mut key_rx) = mpsc::channel(CHANNEL_LEN_MAX);
    let keys = KeyReader::spawn(key_tx);
    let (snapshot_tx, mut snapshot_rx) = mpsc::channel(1);
    let (refresh_tx, refresh_rx) = mpsc::channel(1);
    let poller = tokio::spawn(poll(
        context.clone(),
        Duration::from_millis(args.refresh_ms.max(200)),
        snapshot_tx,
        refresh_rx,
    ));
    let (outcome_tx, mut outcome_rx) = mpsc::channel(CHANNEL_LEN_MAX);
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    let result = loop {
        if let Err(error) = terminal.draw(|frame| render(frame, &state)) {
            break Err(Error::Terminal(error.to_string()));
        }
        tokio::select! {
            key = key_rx.recv() => {
                let Some(key) = key else { break Ok(EXIT_OK) };
                match state.update(key) {
                    None => {}
                    Some(Action::Quit) => break Ok(EXIT_OK),
                    Some(Action::Refresh) => {
                        let _ = refresh_tx.try_send(());
                    }
                    Some(Action::Acknowledge(id)) => {
                        let (context, officer, tx) = (context.clone(), officer.clone(), outcome_tx.clone());
                        tokio::spawn(async move {
                            let outcome = acknowledge(&context, &id, &officer).await;
                            let _ = tx.send(Outcome::Acknowledged(Box::new(outcome))).await;
                        });
                    }
                    Some(Action::Open(id)) => {
                        let (context, tx) = (context.clone(), outcome_tx.clone());
                        tokio::spawn(async move {
                            let detail = open(&context, &id).await;
                            let _ = tx.send(Outcome::Opened(Box::new(detail))).await;
                        });
                    }
                }
            }
            Some(snapshot) = snapshot_rx.recv() => {
                if let Some(incidents) = snapshot.incidents {
                    state.set_incidents(incidents);
                }
                if let Some(units) = snapshot.units {
                    state.units = units;
                }
                if snapshot.errors.is_empty() {
                    if state.status_is_error || state.status_line == "loading…" {
                        state.set_status("", false);
                    }
                } else {
                    state.set_status(snapshot.errors.join("; "), true);
                }
            }
            Some(outcome) = outcome_rx.recv() => match outcome {
                Outcome::Acknowledged(acknowledged) => match *acknowledged {
                Ok(command) => {
                    state.set_status(
                        format!("acknowledged {} as {officer}; escalation chain stopped", command.incident_id),
                        false,
                    );
                    let _ = refresh_tx.try_send(());
                }
                Err(error) => state.set_status(error.to_string(), true),
                },
                Outcome::Opened(detail) => state.set_detail(*detail),
            },
            _ = tick.tick() => {
                state.now_ms = now_unix_ms();
            }
        }
    };
    poller.abort();
    keys.stop();
    result
}

/// Polls the services every `every`, or at once when asked through `refresh`, until the
/// receiver of the snapshots is gone.
async fn poll(
    context: Context,
    every: Duration,
    snapshots: mpsc::Sender<Snapshot>,
    mut refresh: mpsc::Receiver<()>,
) {
    loop {
        let snapshot = fetch(&context).await;
        if snapshots.send(snapshot).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = refresh.recv() => {}
        }
    }
}

async fn fetch(context: &Context) -> Snapshot {
    let mut errors = Vec::new();
    let (incidents, deadlines, units) = tokio::join!(
        list_incidents(context),
        list_deadlines(context),
        list_units(context)
    );
    let deadlines = deadlines.unwrap_or_else(|error| {
        errors.push(error.to_string());
        Vec::new()
    });
    let incidents = match incidents {
        Ok(incidents) => {
            let open: Vec<IncidentView> = incidents
                .into_iter()
                .filter(|incident| incident.status.as_deref() != Some("closed"))
                .collect();
            let commands = commands(context, &open).await;
            Some(
                open.iter()
                    .map(|incident| {
                        let command = commands.iter().find(|c| c.incident_id == incident.id);
                        IncidentRow::new(incident, command, &deadlines)
                    })
                    .collect(),
            )
        }
        Err(error) => {
            errors.push(error.to_string());
            None
        }
    };
    let units = match units {
        Ok(units) => Some(UnitBoard::new(&units)),
        Err(error) => {
            errors.push(error.to_string());
            None
        }
    };
    Snapshot {
        incidents,
        units,
        errors,
    }
}

async fn list_incidents(context: &Context) -> Result<Vec<IncidentView>, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::ListIncidentsRequest {
        namespace: context.namespace.clone(),
        limit: 1000,
    };
    let response = target
        .call("could not list incidents", client.list_incidents(request))
        .await?;
    Ok(response.incidents.into_iter().map(Into::into).collect())
}

async fn list_deadlines(context: &Context) -> Result<Vec<DeadlineView>, Error> {
    let target = &context.escalation;
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let request = pb::ListDeadlinesRequest {
        namespace: context.namespace.clone(),
        incident_id: String::new(),
    };
    let response = target
        .call("could not list deadlines", client.list_deadlines(request))
        .await?;
    Ok(response.deadlines.into_iter().map(Into::into).collect())
}

async fn list_units(context: &Context) -> Result<Vec<UnitView>, Error> {
    let target = &context.dispatch;
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let request = pb::ListUnitsRequest {
        namespace: context.namespace.clone(),
        unit_type: String::new(),
    };
    let response = target
        .call("could not list units", client.list_units(request))
        .await?;
    Ok(response.units.into_iter().map(Into::into).collect())
}

/// The acknowledgement state of the graded open incidents, asked concurrently on one channel.
/// An incident escalation cannot answer for is simply shown without an ack countdown.
async fn commands(context: &Context, open: &[IncidentView]) -> Vec<CommandView> {
    let target = &context.escalation;
    let Ok(channel) = target.connect().await else {
        return Vec::new();
    };
    let mut tasks = tokio::task::JoinSet::new();
    for incident in open
        .iter()
        .filter(|incident| incident.grading.is_some())
        .take(COMMAND_POLL_LEN_MAX)
    {
        let mut client = EscalationServiceClient::new(channel.clone());
        let target = target.clone();
        let request = pb::GetCommandRequest {
            namespace: context.namespace.clone(),
            incident_id: incident.id.clone(),
        };
        tasks.spawn(async move {
            target
                .call("could not get the command", client.get_command(request))
                .await
        });
    }
    let mut commands = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Ok(response)) = joined
            && let Some(command) = response.command
        {
            commands.push(CommandView::from(command));
        }
    }
    commands
}

async fn acknowledge(
    context: &Context,
    incident_id: &str,
    officer: &str,
) -> Result<CommandView, Error> {
    let target = &context.escalation;
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let request = pb::AcknowledgeRequest {
        namespace: context.namespace.clone(),
        incident_id: incident_id.to_owned(),
        officer: officer.to_owned(),
    };
    let response = target
        .call("refused the acknowledgement", client.acknowledge(request))
        .await?;
    Ok(response.command.unwrap_or_default().into())
}

/// The detail screen for one incident; a failure shows as the screen's only header line.
async fn open(context: &Context, incident_id: &str) -> Detail {
    let target = &context.intake;
    let incident = async {
        let mut client = IntakeServiceClient::new(target.connect().await?);
        let request = pb::GetIncidentRequest {
            namespace: context.namespace.clone(),
            incident_id: incident_id.to_owned(),
        };
        target
            .call("could not get the incident", client.get_incident(request))
            .await
    }
    .await;
    let incident: IncidentView = match incident {
        Ok(response) => response.incident.unwrap_or_default().into(),
        Err(error) => {
            return Detail {
                incident_id: incident_id.to_owned(),
                header: vec![("error".to_owned(), error.to_string())],
                rows: Vec::new(),
                reported_at_unix_ms: 0,
                scroll: 0,
                loading: false,
            };
        }
    };
    let escalation = escalation_state(context, incident_id).await;
    let mut header = vec![
        (
            "kind".to_owned(),
            match &incident.class {
                Some(class) => format!("{} ({class})", incident.kind),
                None => incident.kind.clone(),
            },
        ),
        ("grade".to_owned(), incident.grade_label()),
        ("lead".to_owned(), incident.lead_label()),
        ("status".to_owned(), incident.status_label()),
        ("facts".to_owned(), incident.facts.describe()),
        ("summary".to_owned(), or_dash(Some(&incident.summary))),
    ];
    if let Some(command) = &escalation.command {
        header.push(("ack".to_owned(), command.acknowledgement_label()));
    }
    if let Some(note) = &escalation.note {
        header.push(("note".to_owned(), note.clone()));
    }
    Detail {
        incident_id: incident.id.clone(),
        rows: timeline_rows(
            &incident,
            &escalation.deadlines,
            escalation.command.as_ref(),
            now_unix_ms(),
        ),
        header,
        reported_at_unix_ms: incident.reported_at_unix_ms,
        scroll: 0,
        loading: false,
    }
}

/// Puts the terminal into raw mode on the alternate screen, and back on drop and on panic, so an
/// officer is never left with a broken shell.
struct TerminalGuard;

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

impl TerminalGuard {
    fn enter() -> Result<Self, Error> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        enable_raw_mode().map_err(|error| Error::Terminal(error.to_string()))?;
        // The alternate screen is cleared here rather than with `Terminal::clear`, which asks
        // the terminal for the cursor position and fails on terminals that do not answer.
        if let Err(error) = execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            Clear(ClearType::All),
            ratatui::crossterm::cursor::Hide
        ) {
            restore_terminal();
            return Err(Error::Terminal(error.to_string()));
        }
        Ok(Self)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Reads keys on a thread of its own (crossterm's reads block), polling a stop flag every
/// 100 ms so it ends with the dashboard.
struct KeyReader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl KeyReader {
    fn spawn(keys: mpsc::Sender<KeyCode>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => return,
                }
                let Ok(Event::Key(key)) = event::read() else {
                    continue;
                };
                if key.kind == KeyEventKind::Release {
                    continue;
                }
                // Raw mode swallows Ctrl-C's signal; treat it as quitting.
                let code = if key.modifiers.contains(KeyModifiers::CONTROL)
                    && key.code == KeyCode::Char('c')
                {
                    KeyCode::Char('q')
                } else {
                    key.code
                };
                if keys.blocking_send(code).is_err() {
                    return;
                }
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
