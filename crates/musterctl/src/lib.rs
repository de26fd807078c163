//! musterctl, the duty officer's command-line client: the `Cli` definition and `run`, which
//! executes one command against the Muster services and writes its output to a given writer.
//!
//! `main.rs` only parses, calls [`run`] with stdout and prints an error line; end-to-end tests
//! call [`run`] in-process with a buffer.

mod commands;
mod connect;
pub mod drill;
mod error;
pub mod settings;
pub mod table;
pub mod time;
pub mod timeline;
pub mod top;
pub mod view;
pub mod watch_filter;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use error::{Error, code_name};
pub use settings::{Environment, Settings};

/// The name the brief and older callers use for [`Error`].
pub type CliError = Error;

/// Exit code of a command that did what was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code of `status` when a service is not serving (or not reachable), and of any error.
pub const EXIT_FAILURE: i32 = 1;

/// Muster's duty officer CLI: service status, incident reports, incidents, units, audit and a
/// live dashboard.
///
/// Settings come from flags, then MUSTER_* environment variables, then the config file
/// (--config, MUSTER_CONFIG, else $XDG_CONFIG_HOME/muster/musterctl.toml), then built-in
/// defaults; `musterctl config show` prints the effective ones and where each came from.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "musterctl",
    version,
    about,
    next_help_heading = "Global options"
)]
pub struct Cli {
    /// Config file (TOML) [env: MUSTER_CONFIG] [default: $XDG_CONFIG_HOME/muster/musterctl.toml,
    /// else ~/.config/muster/musterctl.toml; a missing default file is fine].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Intake service URL [env: MUSTER_INTAKE_URL] [config: intake] [default:
    /// http://127.0.0.1:50051].
    #[arg(long = "intake", global = true, value_name = "URL")]
    pub intake_url: Option<String>,

    /// Escalation service URL [env: MUSTER_ESCALATION_URL] [config: escalation] [default:
    /// http://127.0.0.1:50052].
    #[arg(long = "escalation", global = true, value_name = "URL")]
    pub escalation_url: Option<String>,

    /// Dispatch service URL [env: MUSTER_DISPATCH_URL] [config: dispatch] [default:
    /// http://127.0.0.1:50053].
    #[arg(long = "dispatch", global = true, value_name = "URL")]
    pub dispatch_url: Option<String>,

    /// `live`, or `drill.<id>` for an exercise [env: MUSTER_NAMESPACE] [config: namespace]
    /// [default: live].
    #[arg(long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// Machine output: JSON instead of tables (one object per line for `watch`); the same as
    /// `--output json`.
    #[arg(long, global = true)]
    pub json: bool,

    /// Output format [env: MUSTER_OUTPUT] [config: output] [default: table].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputArg>,

    /// Connect timeout, and the timeout of each call (not of the `watch` stream once open)
    /// [env: MUSTER_TIMEOUT_MS] [config: timeout_ms] [default: 5000].
    #[arg(long, global = true, value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Bearer token sent with every call [env: MUSTER_TOKEN] [config: token]. Visible to other
    /// users in the process list: prefer --token-file or MUSTER_TOKEN. Without any, musterctl
    /// uses ./.muster/admin.token when it exists (written by `muster up`).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<TokenArg>,

    /// File holding the bearer token [env: MUSTER_TOKEN_FILE] [config: token_file].
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate the services' certificates must chain to; implies TLS
    /// [env: MUSTER_CA_CERT] [config: ca_cert].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS, with --tls-key [env: MUSTER_TLS_CERT]
    /// [config: tls_cert].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert [env: MUSTER_TLS_KEY] [config: tls_key].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Server name to check the services' certificates against, instead of the endpoint's host
    /// [env: MUSTER_TLS_DOMAIN] [config: tls_domain].
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_domain: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

// The enum is built once per process, so boxing `ReportArgs` would buy nothing but noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Health of intake, escalation and dispatch; exits 0 only if all three are serving.
    Status,
    /// The jurisdiction tree (EscalationService.ListJurisdictions).
    Jurisdictions(JurisdictionsArgs),
    /// The unit board (DispatchService.ListUnits).
    Units(UnitsArgs),
    /// Report an incident (IntakeService.ReportIncident).
    Report(ReportArgs),
    /// Give an incident new facts; absent flags keep their stored value
    /// (IntakeService.UpdateIncident).
    Update(UpdateArgs),
    /// Incidents, newest first (IntakeService.ListIncidents).
    Incidents(IncidentsArgs),
    /// One incident: report, grading, assignments and timeline (IntakeService.GetIncident).
    Show(ShowArgs),
    /// Follow incident changes live until Ctrl-C (IntakeService.WatchIncidents).
    Watch(WatchArgs),
    /// Acknowledge an incident for the level asked, stopping its escalation chain
    /// (EscalationService.Acknowledge).
    Ack(AckArgs),
    /// Escalate an incident by hand to the next level up (EscalationService.Escalate).
    Escalate(EscalateArgs),
    /// Confirm the downgrade new facts proposed for an incident
    /// (EscalationService.ConfirmDowngrade).
    ConfirmDowngrade(ConfirmDowngradeArgs),
    /// Hand an incident's command to a higher jurisdiction (EscalationService.TakeCommand).
    TakeCommand(TakeCommandArgs),
    /// Who leads an incident and where its acknowledgement chain stands
    /// (EscalationService.GetCommand).
    #[command(name = "command")]
    CommandState(CommandArgs),
    /// Statutory reporting obligations: due at, sent at, late by (EscalationService.ListDeadlines).
    Deadlines(DeadlinesArgs),
    /// The duty-roster notifications of an incident and their delivery
    /// (EscalationService.ListNotifications).
    Notifications(NotificationsArgs),
    /// The mutual-aid requests of an incident: who asked whom for what, the answer and the
    /// units (DispatchService.ListMutualAid).
    MutualAid(MutualAidArgs),
    /// Mark a reporting obligation met: the report was filed (EscalationService.SubmitReport).
    ReportFiled(ReportFiledArgs),
    /// Record a report made past the parent level, 越级上报; the step is audited on the timeline
    /// (EscalationService.SkipLevelReport).
    SkipReport(SkipReportArgs),
    /// Apply a lifecycle event to a unit (DispatchService.UpdateUnitStatus).
    UnitStatus(UnitStatusArgs),
    /// Record a unit's position (DispatchService.ReportPosition).
    UnitPosition(UnitPositionArgs),
    /// Dry-run recommendation with reasons and shortfalls; books nothing
    /// (DispatchService.Recommend).
    Recommend(RecommendArgs),
    /// Book an available unit to an incident by hand (DispatchService.Assign).
    Assign(AssignArgs),
    /// A dispatched unit accepts its assignment (DispatchService.AcknowledgeAssignment).
    UnitAck(UnitAssignmentArgs),
    /// A dispatched unit refuses its assignment; a replacement is booked
    /// (DispatchService.DeclineAssignment).
    UnitDecline(UnitDeclineArgs),
    /// The incident lets a unit go (DispatchService.ReleaseUnit).
    UnitRelease(UnitAssignmentArgs),
    /// End the response to an incident: every service closes it, and the reporter's personal
    /// data is erased unless it is on legal hold (IntakeService.CloseIncident; commanders).
    Close(CloseArgs),
    /// Put an incident on legal hold, so its personal data outlives the response, or release
    /// the hold with --release (IntakeService.SetLegalHold; commanders).
    Hold(HoldArgs),
    /// The audit trail of all three services, merged by time (AuditService.ListAudit);
    /// `audit verify` checks each service's hash chain (AuditService.VerifyAudit).
    Audit(AuditArgs),
    /// A live dashboard: open incidents by grade, deadline countdowns, the unit board;
    /// j/k to select, a to acknowledge, Enter for the timeline, q to quit.
    Top(TopArgs),
    /// Drills (演练): play a scenario through the real services in a drill namespace, and the
    /// after-action report.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Re-run an incident's recorded inputs (report, fact updates) through the domain core and
    /// check that grades, leads and plans come out as recorded, or print the first divergence;
    /// with --region-dir, against another rulebook.
    Replay(ReplayArgs),
    /// musterctl's own settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `musterctl completions bash >
    /// ~/.local/share/bash-completion/completions/musterctl`.
    Completions(CompletionsArgs),
}

/// A token given with `--token`. `Debug` shows only its first 8 characters, so a printed `Cli`
/// (a test failure, a debug log) never carries the whole token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenArg(pub String);

impl std::str::FromStr for TokenArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix: String = self.0.chars().take(8).collect();
        write!(f, "TokenArg({prefix:?}…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Table,
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// The effective settings and where each came from (flag, env, config file, default).
    /// The token itself is never printed, only its source and first 8 characters.
    Show,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub verify: Option<AuditCommand>,
    /// Only entries about this incident.
    #[arg(long = "incident", value_name = "ID")]
    pub incident_id: Option<String>,
    /// Only entries by this officer (exact name, as in the token).
    #[arg(long, value_name = "NAME")]
    pub officer: Option<String>,
    /// Only entries at or after this time: RFC 3339 (2026-11-28T06:00:00Z), Unix milliseconds,
    /// or an age such as 30m, 2h, 1d.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only refused commands (result other than ok).
    #[arg(long)]
    pub refused: bool,
    /// At most this many entries in all, the newest kept (each service is asked for as many;
    /// server default 100, max 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Recompute each service's hash chain; exits non-zero if any chain is broken or any
    /// service cannot be asked.
    Verify,
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// How often to poll the services, milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub refresh_ms: u64,
    /// The acknowledging officer for `a` (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub officer: Option<String>,
}

/// An incident id, or a hypothetical incident given by --kind, --township and --grade.
#[derive(Debug, Clone, Args)]
pub struct RecommendArgs {
    /// An incident dispatch has graded.
    #[arg(required_unless_present = "kind", conflicts_with_all = ["kind", "township", "grade", "lead"])]
    pub incident_id: Option<String>,
    /// Sub-type code of a hypothetical incident, e.g. accident.hazardous_chemicals.
    #[arg(long, requires = "township", value_name = "KIND")]
    pub kind: Option<String>,
    /// Its township code.
    #[arg(long, value_name = "CODE")]
    pub township: Option<String>,
    /// Its grade: I, II, III or IV (absent: ungraded).
    #[arg(long, value_name = "GRADE", value_parser = ["I", "II", "III", "IV"])]
    pub grade: Option<String>,
    /// The lead jurisdiction code (default: the township's county).
    #[arg(long, value_name = "CODE")]
    pub lead: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AssignArgs {
    /// The incident id.
    pub incident_id: String,
    /// The unit id.
    pub unit_id: String,
    /// The dispatcher's name.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UnitAssignmentArgs {
    /// The unit id.
    pub unit_id: String,
    /// The incident the unit is on.
    #[arg(long = "incident", value_name = "ID")]
    pub incident_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct UnitDeclineArgs {
    /// The unit id.
    pub unit_id: String,
    /// The incident the unit was dispatched to.
    #[arg(long = "incident", value_name = "ID")]
    pub incident_id: String,
    /// Why (required, at most 200 characters).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    National,
    Province,
    City,
    County,
    Township,
}

#[derive(Debug, Clone, Args)]
pub struct JurisdictionsArgs {
    /// Only jurisdictions of this level.
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
}

#[derive(Debug, Clone, Args)]
pub struct UnitsArgs {
    /// Only units of this type, e.g. fire_engine, hazmat, ambulance.
    #[arg(long = "type", value_name = "TYPE")]
    pub unit_type: Option<String>,
}

/// Numbers are signed and unchecked here on purpose: the server owns validation, so a bad value
/// reaches it and its message is what the officer sees.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Sub-type code, e.g. accident.hazardous_chemicals or natural.earthquake.
    #[arg(long)]
    pub kind: String,
    /// Township code where the incident is.
    #[arg(long, value_name = "CODE")]
    pub township: String,
    /// A further township the incident spans (repeatable).
    #[arg(long = "also", value_name = "CODE")]
    pub also: Vec<String>,
    /// Latitude in WGS84 degrees (give with --lon).
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub lat: Option<f64>,
    /// Longitude in WGS84 degrees (give with --lat).
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub lon: Option<f64>,
    /// Confirmed deaths.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub deaths: Option<i64>,
    /// Missing persons.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub missing: Option<i64>,
    /// Serious injuries, acute industrial poisoning included.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub injured: Option<i64>,
    /// Direct economic loss in CNY.
    #[arg(long = "loss", allow_negative_numbers = true, value_name = "CNY")]
    pub loss_cny: Option<i64>,
    /// Earthquake magnitude.
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub magnitude: Option<f64>,
    /// People affected (受灾人数); for public-health events, the cases.
    #[arg(long = "affected", allow_negative_numbers = true, value_name = "N")]
    pub people_affected: Option<i64>,
    /// People evacuated or relocated (紧急转移安置).
    #[arg(long = "evacuated", allow_negative_numbers = true, value_name = "N")]
    pub people_evacuated: Option<i64>,
    /// Free-text summary.
    #[arg(long, value_name = "TEXT")]
    pub summary: Option<String>,
    /// The reporting officer (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub reported_by: Option<String>,
    /// Idempotency key; a retry with the same id returns the same incident (default: generated).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
}

/// Numbers are signed and unchecked here on purpose, as for `report`: the server owns validation.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// The incident id.
    pub incident_id: String,
    /// Confirmed deaths.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub deaths: Option<i64>,
    /// Missing persons.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub missing: Option<i64>,
    /// Serious injuries, acute industrial poisoning included.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub injured: Option<i64>,
    /// Direct economic loss in CNY.
    #[arg(long = "loss", allow_negative_numbers = true, value_name = "CNY")]
    pub loss_cny: Option<i64>,
    /// Earthquake magnitude.
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub magnitude: Option<f64>,
    /// People affected (受灾人数); for public-health events, the cases.
    #[arg(long = "affected", allow_negative_numbers = true, value_name = "N")]
    pub people_affected: Option<i64>,
    /// People evacuated or relocated (紧急转移安置).
    #[arg(long = "evacuated", allow_negative_numbers = true, value_name = "N")]
    pub people_evacuated: Option<i64>,
    /// What changed, free text (default: the stored summary is kept).
    #[arg(long, value_name = "TEXT")]
    pub summary: Option<String>,
    /// Who gives the new facts (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub updated_by: Option<String>,
    /// Idempotency key; a retry with the same id changes nothing again (default: generated).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct IncidentsArgs {
    /// At most this many (server default 100, max 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The incident id.
    pub id: String,
    /// Print timeline times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

/// Filters combine with AND; a repeated filter matches any of its values.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Stop after this many printed messages (after filtering).
    #[arg(long, value_name = "N")]
    pub max_events: Option<u64>,
    /// Only incidents of this grade: I, II, III or IV (repeatable). Ungraded incidents never match.
    #[arg(long, value_name = "GRADE", value_parser = ["I", "II", "III", "IV"])]
    pub grade: Vec<String>,
    /// Only incidents of this class: natural_disaster, accident, public_health,
    /// social_safety or unclassified (repeatable).
    #[arg(long, value_name = "CLASS", value_parser = ["natural_disaster", "accident", "public_health", "social_safety", "unclassified"])]
    pub class: Vec<String>,
    /// Only incidents led by, or located in, this jurisdiction or any jurisdiction below it
    /// (repeatable; the tree is read from escalation once at start).
    #[arg(long, value_name = "CODE")]
    pub jurisdiction: Vec<String>,
    /// Only incidents in this status: reported, graded, responding or closed (repeatable).
    #[arg(long, value_name = "STATUS", value_parser = ["reported", "graded", "responding", "closed"])]
    pub status: Vec<String>,
    /// Only this incident (repeatable).
    #[arg(long = "incident", value_name = "ID")]
    pub incident: Vec<String>,
    /// Only changes caused by this event type, e.g. graded, escalated, acknowledged,
    /// units_assigned (repeatable).
    #[arg(long = "event", value_name = "TYPE")]
    pub event: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CloseArgs {
    /// The incident id.
    pub incident_id: String,
    /// Why the response ends; it goes into the timeline and the audit trail.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// The incident id.
    pub incident_id: String,
    /// Why (the case or the order).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Release the hold instead (a closed incident's personal data is erased then).
    #[arg(long)]
    pub release: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    /// The incident id.
    pub incident_id: String,
    /// The acknowledging officer (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub officer: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct EscalateArgs {
    /// The incident id.
    pub incident_id: String,
    /// Why the incident is escalated; it goes into the timeline.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct ConfirmDowngradeArgs {
    /// The incident id.
    pub incident_id: String,
    /// The confirming officer (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub officer: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TakeCommandArgs {
    /// The incident id.
    pub incident_id: String,
    /// The jurisdiction taking over: an ancestor of the current lead.
    #[arg(long, value_name = "CODE")]
    pub jurisdiction: String,
    /// The commander's name.
    #[arg(long, value_name = "NAME")]
    pub commander: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// The incident id.
    pub incident_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct MutualAidArgs {
    /// The incident id.
    pub incident_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct NotificationsArgs {
    /// The incident id.
    pub incident_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct DeadlinesArgs {
    /// Only this incident's obligations (default: every graded incident of the namespace).
    pub incident_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportFiledArgs {
    /// The incident id.
    pub incident_id: String,
    /// The obligation the report fulfils, as `deadlines` lists it.
    pub obligation_id: u32,
}

#[derive(Debug, Clone, Args)]
pub struct SkipReportArgs {
    /// The incident id.
    pub incident_id: String,
    /// The reporting jurisdiction: the lead or a level on the incident's chain.
    #[arg(long, value_name = "CODE")]
    pub from: String,
    /// The jurisdiction reported to: an ancestor above the parent of --from.
    #[arg(long, value_name = "CODE")]
    pub to: String,
    /// The reporting officer's name.
    #[arg(long, value_name = "NAME")]
    pub officer: String,
    /// Why the parent level was skipped (at most 500 characters).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// A unit lifecycle event, as `unit-status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnitEventArg {
    /// Dispatched → enroute; needs --incident.
    Acknowledge,
    /// Dispatched → available; needs --incident and --reason.
    Decline,
    /// Enroute → staging; needs --incident.
    Stage,
    /// Enroute or staging → on scene; needs --incident.
    Arrive,
    /// Dispatched → available, or enroute/staging/on scene → returning; needs --incident.
    Release,
    /// Returning → available.
    Clear,
    /// Any in-service status → out of service; needs --reason.
    #[value(alias = "go-out-of-service")]
    OutOfService,
    /// Out of service → available.
    ReturnToService,
}

#[derive(Debug, Clone, Args)]
pub struct UnitStatusArgs {
    /// The unit id.
    pub unit_id: String,
    /// The lifecycle event.
    #[arg(value_enum)]
    pub event: UnitEventArg,
    /// The incident the unit is on (required for incident-scoped events).
    #[arg(long = "incident", value_name = "ID")]
    pub incident_id: Option<String>,
    /// Why (required for decline and out-of-service).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Coordinates are unchecked here: the server owns validation and its message is what is shown.
#[derive(Debug, Clone, Args)]
pub struct UnitPositionArgs {
    /// The unit id.
    pub unit_id: String,
    /// Latitude in WGS84 degrees.
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub lat: f64,
    /// Longitude in WGS84 degrees.
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub lon: f64,
    /// When the fix was taken, Unix milliseconds (default: now, as the server receives it).
    #[arg(long = "at-ms", allow_negative_numbers = true, value_name = "N")]
    pub at_ms: Option<i64>,
}

/// Runs one command in the process's environment, writing its output to `out`, and returns the
/// process exit code: [`EXIT_OK`], or [`EXIT_FAILURE`] when `status` finds a service not serving
/// or `audit verify` a broken chain. `watch` stops on Ctrl-C, at the end of the stream, or after
/// `--max-events`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<i32, Error> {
    run_until(cli, out, ctrl_c()).await
}

async fn ctrl_c() {
    // If no signal handler can be installed, wait forever rather than stopping at once.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`run`], with `shutdown` instead of Ctrl-C ending a `watch`; other commands ignore it.
pub async fn run_until(
    cli: Cli,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<i32, Error> {
    run_in(cli, &Environment::from_process(), out, shutdown).await
}

/// [`run_until`] in a given environment (variables, working directory) instead of the
/// process's: how tests keep the developer's own config file and token out of the way.
pub async fn run_in(
    cli: Cli,
    environment: &Environment,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<i32, Error> {
    commands::execute(cli, environment, out, shutdown).await
}

#[derive(Debug, Clone, Subcommand)]
pub enum DrillCommand {
    /// Play a scenario file: start the drill's own services (`muster up --namespace
    /// drill.<id>` on the given NATS), fire its injects on a compressed clock, and judge its
    /// expectations. Exits 0 only when every expectation is met.
    Run(DrillRunArgs),
    /// The after-action report of a drill that ran: Markdown, HTML with an SVG timeline, or JSON.
    Report(DrillReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DrillRunArgs {
    /// The scenario (TOML), e.g. scenarios/chemical-explosion.toml.
    pub file: PathBuf,
    /// Time compression: 60 plays a 2-hour scenario in 2 minutes; the drill services' clocks
    /// run as fast.
    #[arg(long, default_value_t = 1.0, value_name = "N")]
    pub speed: f64,
    /// The drill id (namespace drill.<id>; a-z, 0-9, - and _) [default: from the scenario name
    /// and the time].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The NATS the drill's services use (the live one is fine: drill subjects are their own)
    /// [env: MUSTER_NATS_URL] [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The `muster` binary [default: next to musterctl, else on PATH].
    #[arg(long, value_name = "FILE")]
    pub muster_bin: Option<PathBuf>,
    /// Where drills keep their services' data and their records [default: ./.muster/drills].
    #[arg(long, value_name = "DIR")]
    pub drills_dir: Option<PathBuf>,
    /// Use drill services that already run instead of starting them: intake's feed listener
    /// (http://host:port); the gRPC endpoints and token come from the global options, and
    /// --id must name their namespace.
    #[arg(long, value_name = "URL")]
    pub feeds: Option<String>,
    /// No progress bar on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DrillReportArgs {
    /// The drill id.
    pub id: String,
    /// Where drills keep their records [default: ./.muster/drills].
    #[arg(long, value_name = "DIR")]
    pub drills_dir: Option<PathBuf>,
    /// md, html or json.
    #[arg(long, default_value = "md", value_name = "FORMAT")]
    pub format: String,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The incident, `INC-…`.
    pub incident_id: String,
    /// Replay against the region files (jurisdictions, units, plans, rulebook) in DIR instead of
    /// the sample built in: how a rulebook change is tested against history.
    #[arg(long, value_name = "DIR")]
    pub region_dir: Option<PathBuf>,
    /// Replay with the escalation policy in FILE (the server's `--escalation-policy`) instead of
    /// the one built in.
    #[arg(long, value_name = "FILE")]
    pub escalation_policy: Option<PathBuf>,
    /// The length of a policy minute in milliseconds, as the escalation server ran with it
    /// (`--escalation-minute-ms`; drills run compressed: 60000 / speed).
    #[arg(long, value_name = "MS")]
    pub escalation_minute_ms: Option<i64>,
    /// How far apart in time a recorded and a replayed outcome may be and still be the same
    /// (timers fire a little after they are due).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub tolerance_ms: i64,
}
