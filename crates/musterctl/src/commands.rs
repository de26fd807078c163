//! The commands: each calls one service, converts the answer to view models and prints them as
//! a table or readable text for people, or as JSON with `--json`.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;
use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::connect::{Target, Transport};
use crate::settings::Settings;
use crate::table::Table;
use crate::timeline::{local_offset_seconds, timeline_rows, timeline_table};
use crate::view::{
    CommandView, DeadlineView, IncidentView, JurisdictionView, PositionReportView, ReportView,
    ServiceStatusView, StatusView, UnitView, UpdateView, or_dash,
};
use crate::{
    AckArgs, AssignArgs, Cli, CloseArgs, Command, CommandArgs, ConfirmDowngradeArgs, DeadlinesArgs,
    EXIT_FAILURE, EXIT_OK, Error, EscalateArgs, HoldArgs, IncidentsArgs, JurisdictionsArgs,
    LevelArg, RecommendArgs, ReportArgs, ReportFiledArgs, ShowArgs, SkipReportArgs,
    TakeCommandArgs, UnitAssignmentArgs, UnitDeclineArgs, UnitEventArg, UnitPositionArgs,
    UnitStatusArgs, UnitsArgs, UpdateArgs,
};
use crate::{ConfigCommand, Environment};

mod audit;
mod completions;
mod drill;
mod mutual_aid;
mod notifications;
mod replay;
mod top;
mod watch;

type Out<'a> = &'a mut (dyn Write + Send);

/// What every command needs from the global settings.
#[derive(Clone)]
pub(crate) struct Context {
    intake: Target,
    escalation: Target,
    dispatch: Target,
    namespace: String,
    json: bool,
}

pub async fn execute(
    cli: Cli,
    environment: &Environment,
    out: Out<'_>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<i32, Error> {
    // Completions need no settings: a broken config file must not stop a shell from starting.
    if let Command::Completions(args) = &cli.command {
        completions::write(args.shell, out)?;
        out.flush()?;
        return Ok(EXIT_OK);
    }
    let settings = Settings::resolve(&cli, environment)?;
    if let Command::Config(ConfigCommand::Show) = &cli.command {
        config_show(&settings, out)?;
        out.flush()?;
        return Ok(EXIT_OK);
    }
    if let Command::Drill(command) = &cli.command {
        let code = drill::execute(command.clone(), &cli, &settings, environment, out).await?;
        out.flush()?;
        return Ok(code);
    }
    let transport = Transport::from_settings(&settings)?;
    let context = Context {
        intake: Target::new("intake", &settings.intake.value, &transport),
        escalation: Target::new("escalation", &settings.escalation.value, &transport),
        dispatch: Target::new("dispatch", &settings.dispatch.value, &transport),
        namespace: settings.namespace.value.clone(),
        json: settings.json(),
    };
    let exit_code = match cli.command {
        Command::Completions(_) | Command::Config(_) | Command::Drill(_) => EXIT_OK,
        Command::Audit(args) => audit::audit(&context, args, out).await?,
        Command::Top(args) => top::run(&context, args).await?,
        Command::Replay(args) => replay::replay(&context, args, out).await?,
        Command::Status => status(&context, out).await?,
        Command::Jurisdictions(args) => jurisdictions(&context, args, out).await?,
        Command::Units(args) => units(&context, args, out).await?,
        Command::Report(args) => report(&context, args, out).await?,
        Command::Update(args) => update(&context, args, out).await?,
        Command::Incidents(args) => incidents(&context, args, out).await?,
        Command::Show(args) => show(&context, args, out).await?,
        Command::Watch(args) => watch::watch(&context, args, out, shutdown).await?,
        Command::Ack(args) => ack(&context, args, out).await?,
        Command::Close(args) => close(&context, args, out).await?,
        Command::Hold(args) => hold(&context, args, out).await?,
        Command::Escalate(args) => escalate(&context, args, out).await?,
        Command::ConfirmDowngrade(args) => confirm_downgrade(&context, args, out).await?,
        Command::TakeCommand(args) => take_command(&context, args, out).await?,
        Command::CommandState(args) => command_state(&context, args, out).await?,
        Command::Deadlines(args) => deadlines(&context, args, out).await?,
        Command::Notifications(args) => notifications::notifications(&context, args, out).await?,
        Command::MutualAid(args) => mutual_aid::mutual_aid(&context, args, out).await?,
        Command::ReportFiled(args) => report_filed(&context, args, out).await?,
        Command::SkipReport(args) => skip_report(&context, args, out).await?,
        Command::UnitStatus(args) => unit_status(&context, args, out).await?,
        Command::UnitPosition(args) => unit_position(&context, args, out).await?,
        Command::Recommend(args) => recommend(&context, args, out).await?,
        Command::Assign(args) => assign(&context, args, out).await?,
        Command::UnitAck(args) => unit_ack(&context, args, out).await?,
        Command::UnitDecline(args) => unit_decline(&context, args, out).await?,
        Command::UnitRelease(args) => unit_release(&context, args, out).await?,
    };
    out.flush()?;
    Ok(exit_code)
}

/// `config show`: one row per setting with its value and source.
fn config_show(settings: &Settings, out: Out<'_>) -> Result<(), Error> {
    let rows = settings.describe();
    if settings.json() {
        let object: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(name, value, source)| {
                (
                    name.to_owned(),
                    serde_json::json!({ "value": value, "source": source }),
                )
            })
            .collect();
        write_json(out, &object)?;
        return Ok(());
    }
    let mut table = Table::new(["SETTING", "VALUE", "SOURCE"]);
    for (name, value, source) in rows {
        table.row([name.to_owned(), value, source]);
    }
    table.write_to(out)?;
    Ok(())
}

fn write_json(out: Out<'_>, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn status(context: &Context, out: Out<'_>) -> Result<i32, Error> {
    let (intake, escalation, dispatch) = tokio::join!(
        check_health(&context.intake),
        check_health(&context.escalation),
        check_health(&context.dispatch),
    );
    let services = vec![intake, escalation, dispatch];
    let view = StatusView {
        all_serving: services.iter().all(ServiceStatusView::is_serving),
        services,
    };
    if context.json {
        write_json(out, &view)?;
    } else {
        let mut table = Table::new(["SERVICE", "ENDPOINT", "STATUS", "DETAIL"]);
        for service in &view.services {
            table.row([
                service.service.clone(),
                service.endpoint.clone(),
                service.status.clone(),
                service.detail.clone().unwrap_or_default(),
            ]);
        }
        table.write_to(out)?;
    }
    Ok(if view.all_serving {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

/// Asks `grpc.health.v1.Health/Check` for the whole server (service ""); never fails, because an
/// unreachable service is an answer `status` prints.
async fn check_health(target: &Target) -> ServiceStatusView {
    let (status, detail) = match target.connect().await {
        Err(Error::Unreachable { reason, .. }) => ("UNREACHABLE".to_owned(), Some(reason)),
        Err(error) => ("ERROR".to_owned(), Some(error.to_string())),
        Ok(channel) => {
            let mut client = HealthClient::new(channel);
            let request = HealthCheckRequest {
                service: String::new(),
            };
            match target
                .call("health check failed", client.check(request))
                .await
            {
                Ok(response) => {
                    let status = ServingStatus::try_from(response.status)
                        .map(|s| s.as_str_name().to_owned())
                        .unwrap_or_else(|_| format!("UNKNOWN({})", response.status));
                    (status, None)
                }
                Err(Error::Timeout { timeout_ms, .. }) => (
                    "UNREACHABLE".to_owned(),
                    Some(format!("no answer within {timeout_ms} ms")),
                ),
                Err(Error::Rpc { code, message, .. }) => (
                    "ERROR".to_owned(),
                    Some(format!("{message} ({})", crate::code_name(code))),
                ),
                Err(error) => ("ERROR".to_owned(), Some(error.to_string())),
            }
        }
    };
    ServiceStatusView {
        service: target.service.to_owned(),
        endpoint: target.endpoint.clone(),
        status,
        detail,
    }
}

async fn jurisdictions(
    context: &Context,
    args: JurisdictionsArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.escalation;
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let level = match args.level {
        None => pb::JurisdictionLevel::Unspecified,
        Some(LevelArg::National) => pb::JurisdictionLevel::National,
        Some(LevelArg::Province) => pb::JurisdictionLevel::Province,
        Some(LevelArg::City) => pb::JurisdictionLevel::City,
        Some(LevelArg::County) => pb::JurisdictionLevel::County,
        Some(LevelArg::Township) => pb::JurisdictionLevel::Township,
    };
    let request = pb::ListJurisdictionsRequest {
        level: level as i32,
    };
    let response = target
        .call(
            "could not list jurisdictions",
            client.list_jurisdictions(request),
        )
        .await?;
    let views: Vec<JurisdictionView> = response.jurisdictions.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(["CODE", "NAME", "LEVEL", "PARENT", "DENSITY", "CENTROID"]);
    for view in &views {
        table.row([
            view.code.clone(),
            view.name.clone(),
            or_dash(view.level.as_deref()),
            or_dash(view.parent_code.as_deref()),
            or_dash(view.density.as_deref()),
            view.centroid
                .map(|c| c.describe())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}

async fn units(context: &Context, args: UnitsArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.dispatch;
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let request = pb::ListUnitsRequest {
        namespace: context.namespace.clone(),
        unit_type: args.unit_type.unwrap_or_default(),
    };
    let response = target
        .call("could not list units", client.list_units(request))
        .await?;
    let views: Vec<UnitView> = response.units.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new([
        "ID",
        "CALL SIGN",
        "TYPE",
        "HOME TOWNSHIP",
        "JURISDICTION",
        "STATUS",
        "SINCE",
        "INCIDENT",
        "ETA",
        "POSITION AGE",
    ]);
    for view in &views {
        table.row([
            view.id.clone(),
            view.call_sign.clone(),
            view.unit_type.clone(),
            or_dash(Some(&view.home_township_code)),
            or_dash(Some(&view.jurisdiction_code)),
            view.status_label(),
            or_dash(view.status_since.as_deref()),
            or_dash(view.incident_id.as_deref()),
            crate::view::eta_label(view.eta_minutes),
            view.position_age_label(),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}

/// A request id unique to this call: time, process and a per-process sequence, in hex. It is made
/// once per invocation, so a retry by the caller with `--request-id` stays idempotent.
fn generate_request_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("musterctl-{nanos:x}-{:x}-{sequence:x}", std::process::id())
}

/// The officer's name: the flag, else $USER, else `musterctl`.
fn officer_name(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("USER").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "musterctl".to_owned())
}

async fn report(context: &Context, args: ReportArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let request_id = args.request_id.unwrap_or_else(generate_request_id);
    let reported_by = officer_name(args.reported_by);
    let request = pb::ReportIncidentRequest {
        namespace: context.namespace.clone(),
        kind: args.kind,
        township_code: args.township,
        other_township_codes: args.also,
        lat: args.lat,
        lon: args.lon,
        facts: Some(pb::Facts {
            deaths: args.deaths,
            missing: args.missing,
            serious_injuries: args.injured,
            direct_loss_cny: args.loss_cny,
            magnitude: args.magnitude,
            people_affected: args.people_affected,
            people_evacuated: args.people_evacuated,
        }),
        summary: args.summary.unwrap_or_default(),
        reported_by,
        request_id: request_id.clone(),
    };
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let response = target
        .call("rejected the report", client.report_incident(request))
        .await?;
    let view = ReportView {
        incident_id: response.incident_id,
        duplicate: response.duplicate,
        request_id,
    };
    if context.json {
        write_json(out, &view)?;
    } else if view.duplicate {
        writeln!(
            out,
            "reported {} (already reported with request id {})",
            view.incident_id, view.request_id
        )?;
    } else {
        writeln!(out, "reported {}", view.incident_id)?;
    }
    Ok(EXIT_OK)
}

async fn update(context: &Context, args: UpdateArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let request_id = args.request_id.unwrap_or_else(generate_request_id);
    let updated_by = officer_name(args.updated_by);
    let request = pb::UpdateIncidentRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        facts: Some(pb::Facts {
            deaths: args.deaths,
            missing: args.missing,
            serious_injuries: args.injured,
            direct_loss_cny: args.loss_cny,
            magnitude: args.magnitude,
            people_affected: args.people_affected,
            people_evacuated: args.people_evacuated,
        }),
        summary: args.summary,
        updated_by,
        request_id: request_id.clone(),
    };
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let response = target
        .call("rejected the update", client.update_incident(request))
        .await?;
    let view = UpdateView {
        incident_id: response.incident_id,
        duplicate: response.duplicate,
        request_id,
        facts: response.facts.unwrap_or_default().into(),
    };
    if context.json {
        write_json(out, &view)?;
    } else if view.duplicate {
        writeln!(
            out,
            "updated {} (already updated with request id {}): {}",
            view.incident_id,
            view.request_id,
            view.facts.describe()
        )?;
    } else {
        writeln!(
            out,
            "updated {}: {}",
            view.incident_id,
            view.facts.describe()
        )?;
    }
    Ok(EXIT_OK)
}

async fn incidents(context: &Context, args: IncidentsArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::ListIncidentsRequest {
        namespace: context.namespace.clone(),
        limit: args.limit.unwrap_or(0),
    };
    let response = target
        .call("could not list incidents", client.list_incidents(request))
        .await?;
    let views: Vec<IncidentView> = response.incidents.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new([
        "ID",
        "KIND",
        "TOWNSHIP",
        "GRADE",
        "LEAD",
        "STATUS",
        "UNITS",
        "REPORTED AT",
    ]);
    for view in &views {
        table.row([
            view.id.clone(),
            view.kind.clone(),
            view.township_code.clone(),
            view.grade_label(),
            view.lead_label(),
            view.status_label(),
            view.units_label(),
            view.reported_at.clone(),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}

async fn show(context: &Context, args: ShowArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::GetIncidentRequest {
        namespace: context.namespace.clone(),
        incident_id: args.id.clone(),
    };
    let response = target
        .call("could not get the incident", client.get_incident(request))
        .await?;
    let view: IncidentView = response.incident.unwrap_or_default().into();
    if context.json {
        write_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    let escalation = escalation_state(context, &args.id).await;
    let now_ms = now_unix_ms();
    let offset_seconds = if args.utc {
        0
    } else {
        local_offset_seconds(now_ms)
    };
    write_incident(out, &view, &escalation, now_ms, offset_seconds)?;
    Ok(EXIT_OK)
}

/// What escalation knows about one incident beyond intake's timeline: its report deadlines and
/// its acknowledgement chain. Asked for on a best-effort basis: without it the timeline is still
/// worth showing, with a note saying what is missing.
#[derive(Debug, Default)]
pub(crate) struct EscalationState {
    pub deadlines: Vec<DeadlineView>,
    pub command: Option<CommandView>,
    /// Why deadlines or acknowledgement are missing, when they are.
    pub note: Option<String>,
}

pub(crate) async fn escalation_state(context: &Context, incident_id: &str) -> EscalationState {
    let target = &context.escalation;
    let mut client = match target.connect().await {
        Ok(channel) => EscalationServiceClient::new(channel),
        Err(error) => {
            return EscalationState {
                note: Some(format!("deadlines and acknowledgement not shown: {error}")),
                ..EscalationState::default()
            };
        }
    };
    let deadlines_request = pb::ListDeadlinesRequest {
        namespace: context.namespace.clone(),
        incident_id: incident_id.to_owned(),
    };
    let command_request = pb::GetCommandRequest {
        namespace: context.namespace.clone(),
        incident_id: incident_id.to_owned(),
    };
    let mut command_client = client.clone();
    let (deadlines, command) = tokio::join!(
        target.call(
            "could not list deadlines",
            client.list_deadlines(deadlines_request)
        ),
        target.call(
            "could not get the command",
            command_client.get_command(command_request)
        ),
    );
    let mut state = EscalationState::default();
    match deadlines {
        Ok(response) => {
            state.deadlines = response.deadlines.into_iter().map(Into::into).collect();
        }
        Err(error) => state.note = Some(format!("deadlines not shown: {error}")),
    }
    match command {
        Ok(response) => state.command = response.command.map(Into::into),
        // Not graded yet: there is no chain to show, and nothing is wrong.
        Err(Error::Rpc {
            code: tonic::Code::NotFound,
            ..
        }) => {}
        Err(error) if state.note.is_none() => {
            state.note = Some(format!("acknowledgement not shown: {error}"));
        }
        Err(_) => {}
    }
    state
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// The readable `show` view: header, grading, assignments with shortfalls, then the timeline
/// with report deadlines and the pending acknowledgement.
pub(crate) fn write_incident(
    out: Out<'_>,
    view: &IncidentView,
    escalation: &EscalationState,
    now_ms: i64,
    offset_seconds: i32,
) -> std::io::Result<()> {
    let kind = match &view.class {
        Some(class) => format!("{} ({class})", view.kind),
        None => view.kind.clone(),
    };
    let township = if view.other_township_codes.is_empty() {
        view.township_code.clone()
    } else {
        format!(
            "{} (also {})",
            view.township_code,
            view.other_township_codes.join(", ")
        )
    };
    let location = match view.location {
        None => "-".to_owned(),
        Some(point) if view.location_reported => format!("{} (reported)", point.describe()),
        Some(point) => format!("{} (township centroid)", point.describe()),
    };
    let mut header = Table::new(["incident", view.id.as_str()]);
    header.row(["namespace", view.namespace.as_str()]);
    header.row(["kind", kind.as_str()]);
    header.row(["township", township.as_str()]);
    header.row(["location", location.as_str()]);
    header.row(["facts".to_owned(), view.facts.describe()]);
    header.row(["warning".to_owned(), or_dash(view.warning_level.as_deref())]);
    header.row(["summary".to_owned(), or_dash(Some(&view.summary))]);
    header.row(["status".to_owned(), view.status_label()]);
    header.row([
        "reported".to_owned(),
        format!(
            "{} by {}",
            view.reported_at,
            or_dash(Some(&view.reported_by))
        ),
    ]);
    header.row(["updated", view.updated_at.as_str()]);
    if view.alert_count > 0 {
        header.row([
            "alerts".to_owned(),
            format!(
                "{} linked, {} open at their source",
                view.alert_count, view.open_alert_count
            ),
        ]);
    }
    header.write_to(out)?;
    if !view.recent_alerts.is_empty() {
        writeln!(
            out,
            "
recent alerts (newest last)"
        )?;
        let mut table = Table::new(["alert", "format", "state", "received", "headline"]);
        for alert in &view.recent_alerts {
            table.row([
                alert.alert_id.as_str(),
                alert.format.as_str(),
                alert.state.as_str(),
                alert.received_at.as_str(),
                alert.headline.as_str(),
            ]);
        }
        table.write_to(out)?;
    }

    writeln!(out, "\ngrading")?;
    match &view.grading {
        None => writeln!(out, "  not graded yet")?,
        Some(grading) => {
            let mut grade = match &grading.grade {
                Some(grade) => format!("{grade}, response level {}", grading.response_level),
                None if grading.response_level > 0 => format!(
                    "none (no grade by law), response level {}",
                    grading.response_level
                ),
                None => "none".to_owned(),
            };
            if grading.initial_judgement {
                grade.push_str(" (initial judgement)");
            }
            let lead = format!(
                "{} ({}, {})",
                grading.lead_label(),
                or_dash(Some(&grading.lead_jurisdiction_code)),
                or_dash(grading.lead_level.as_deref())
            );
            let rule = format!(
                "{} v{}",
                or_dash(Some(&grading.rule_id)),
                grading.rule_version
            );
            let mut table = Table::new(["  grade", grade.as_str()]);
            table.row(["  lead", lead.as_str()]);
            table.row(["  rule", rule.as_str()]);
            table.row(["  reason".to_owned(), or_dash(Some(&grading.reason))]);
            table.write_to(out)?;
        }
    }

    match &view.units {
        None => writeln!(out, "\nassignments\n  none yet")?,
        Some(units) => {
            writeln!(
                out,
                "\nassignments (plan {})",
                or_dash(Some(&units.plan_id))
            )?;
            if units.assignments.is_empty() {
                writeln!(out, "  no units assigned")?;
            } else {
                let mut table =
                    Table::new(["  UNIT", "CALL SIGN", "TYPE", "DISTANCE KM", "REASON"]);
                for assignment in &units.assignments {
                    table.row([
                        format!("  {}", assignment.unit_id),
                        assignment.call_sign.clone(),
                        assignment.unit_type.clone(),
                        format!("{:.1}", assignment.distance_km),
                        assignment.reason.clone(),
                    ]);
                }
                table.write_to(out)?;
            }
            if !units.shortfalls.is_empty() {
                writeln!(out, "\nshortfalls")?;
                for shortfall in &units.shortfalls {
                    writeln!(
                        out,
                        "  {}: {} of {} assigned — {}",
                        shortfall.unit_type,
                        shortfall.assigned,
                        shortfall.required,
                        or_dash(Some(&shortfall.reason))
                    )?;
                }
            }
        }
    }

    writeln!(out, "\ntimeline")?;
    let rows = timeline_rows(
        view,
        &escalation.deadlines,
        escalation.command.as_ref(),
        now_ms,
    );
    if rows.is_empty() {
        writeln!(out, "  no events")?;
    } else {
        timeline_table(&rows, view.reported_at_unix_ms, offset_seconds).write_to(out)?;
    }
    if let Some(note) = &escalation.note {
        writeln!(out, "  ({note})")?;
    }
    Ok(())
}

/// Prints a command state as `key  value` lines, as `show` prints its header.
fn write_command(out: Out<'_>, view: &CommandView) -> std::io::Result<()> {
    let lead = match &view.lead_since {
        Some(since) => format!("{} since {since}", view.lead_label()),
        None => view.lead_label(),
    };
    let mut table = Table::new(["incident", view.incident_id.as_str()]);
    table.row(["grade".to_owned(), or_dash(view.grade.as_deref())]);
    table.row(["lead".to_owned(), lead]);
    table.row(["asked".to_owned(), view.escalation_label()]);
    table.row(["acknowledgement".to_owned(), view.acknowledgement_label()]);
    table.row(["escalations".to_owned(), view.escalation_count.to_string()]);
    if let Some(grade) = &view.pending_downgrade {
        table.row(["pending downgrade".to_owned(), format!("to {grade}")]);
    }
    if let Some(commander) = &view.commander_name {
        table.row(["commander", commander.as_str()]);
    }
    table.write_to(out)
}

async fn close(context: &Context, args: CloseArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::CloseIncidentRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        reason: args.reason,
    };
    let response = target
        .call(
            "refused to close the incident",
            client.close_incident(request),
        )
        .await?;
    let incident = response.incident.unwrap_or_default();
    if context.json {
        write_json(out, &IncidentView::from(incident))?;
        return Ok(EXIT_OK);
    }
    let data = if incident.personal_data_erased_at_unix_ms > 0 {
        "personal data erased"
    } else {
        "personal data kept (legal hold)"
    };
    writeln!(out, "closed {}; units released; {data}", incident.id)?;
    Ok(EXIT_OK)
}

async fn hold(context: &Context, args: HoldArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::SetLegalHoldRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        hold: !args.release,
        reason: args.reason,
    };
    let response = target
        .call(
            "refused the legal hold change",
            client.set_legal_hold(request),
        )
        .await?;
    let incident = response.incident.unwrap_or_default();
    if context.json {
        write_json(out, &IncidentView::from(incident))?;
        return Ok(EXIT_OK);
    }
    match &incident.legal_hold {
        Some(hold) => writeln!(
            out,
            "{} is on legal hold (by {}: {}); its personal data is kept after the response",
            incident.id, hold.by, hold.reason
        )?,
        None if incident.personal_data_erased_at_unix_ms > 0 => writeln!(
            out,
            "{}: hold released; the response had ended, its personal data is erased",
            incident.id
        )?,
        None => writeln!(out, "{}: hold released", incident.id)?,
    }
    Ok(EXIT_OK)
}

async fn ack(context: &Context, args: AckArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.escalation;
    let officer = officer_name(args.officer);
    let request = pb::AcknowledgeRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        officer: officer.clone(),
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the acknowledgement", client.acknowledge(request))
        .await?;
    let view = CommandView::from(response.command.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(
            out,
            "acknowledged {} as {officer}; escalation chain stopped",
            view.incident_id
        )?;
        write_command(out, &view)?;
    }
    Ok(EXIT_OK)
}

async fn escalate(context: &Context, args: EscalateArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::EscalateRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        reason: args.reason,
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the escalation", client.escalate(request))
        .await?;
    let view = CommandView::from(response.command.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(
            out,
            "escalated {} to {}",
            view.incident_id,
            view.escalation_label()
        )?;
        write_command(out, &view)?;
    }
    Ok(EXIT_OK)
}

async fn confirm_downgrade(
    context: &Context,
    args: ConfirmDowngradeArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.escalation;
    let officer = officer_name(args.officer);
    let request = pb::ConfirmDowngradeRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        officer: officer.clone(),
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the downgrade", client.confirm_downgrade(request))
        .await?;
    let view = CommandView::from(response.command.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(
            out,
            "downgraded {} to grade {} as {officer}",
            view.incident_id,
            or_dash(view.grade.as_deref())
        )?;
        write_command(out, &view)?;
    }
    Ok(EXIT_OK)
}

async fn take_command(
    context: &Context,
    args: TakeCommandArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::TakeCommandRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        jurisdiction_code: args.jurisdiction,
        commander_name: args.commander.unwrap_or_default(),
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the handover", client.take_command(request))
        .await?;
    let view = CommandView::from(response.command.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(out, "{} now leads {}", view.lead_label(), view.incident_id)?;
        write_command(out, &view)?;
    }
    Ok(EXIT_OK)
}

async fn command_state(context: &Context, args: CommandArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::GetCommandRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("could not get the command", client.get_command(request))
        .await?;
    let view = CommandView::from(response.command.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        write_command(out, &view)?;
    }
    Ok(EXIT_OK)
}

async fn deadlines(context: &Context, args: DeadlinesArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::ListDeadlinesRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id.unwrap_or_default(),
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("could not list deadlines", client.list_deadlines(request))
        .await?;
    let views: Vec<DeadlineView> = response.deadlines.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new([
        "INCIDENT",
        "OBLIGATION",
        "KIND",
        "FROM → TO",
        "DUE AT",
        "SENT AT",
        "STATUS",
        "LATE BY",
    ]);
    for view in &views {
        table.row([
            view.incident_id.clone(),
            view.obligation_id.to_string(),
            or_dash(Some(&view.kind)),
            view.route_label(),
            view.due_at.clone(),
            or_dash(view.sent_at.as_deref()),
            view.status_label(),
            view.late_by_label(),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}

async fn skip_report(context: &Context, args: SkipReportArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::SkipLevelReportRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        from_jurisdiction: args.from,
        to_jurisdiction: args.to,
        officer: args.officer,
        reason: args.reason,
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "refused the skip-level report",
            client.skip_level_report(request),
        )
        .await?;
    let skipped = response.skipped_jurisdiction_codes;
    let view = DeadlineView::from(response.deadline.unwrap_or_default());
    if context.json {
        #[derive(Serialize)]
        struct SkipReportView {
            #[serde(flatten)]
            deadline: DeadlineView,
            skipped_jurisdiction_codes: Vec<String>,
        }
        write_json(
            out,
            &SkipReportView {
                deadline: view,
                skipped_jurisdiction_codes: skipped,
            },
        )?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "skip-level report recorded for {} as obligation {} ({}, to {}), past {}",
        view.incident_id,
        view.obligation_id,
        view.route_label(),
        or_dash(view.to_jurisdiction_code.as_deref()),
        skipped.join(", "),
    )?;
    Ok(EXIT_OK)
}

async fn report_filed(
    context: &Context,
    args: ReportFiledArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::SubmitReportRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        obligation_id: args.obligation_id,
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the report", client.submit_report(request))
        .await?;
    let view = DeadlineView::from(response.deadline.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    let timeliness = if view.late_by_ms > 0 {
        format!("LATE by {}", view.late_by_label())
    } else {
        "on time".to_owned()
    };
    writeln!(
        out,
        "obligation {} of {} ({} report, {}) met at {}: {timeliness}",
        view.obligation_id,
        view.incident_id,
        or_dash(Some(&view.kind)),
        view.route_label(),
        or_dash(view.sent_at.as_deref()),
    )?;
    Ok(EXIT_OK)
}

fn unit_status_event(event: UnitEventArg) -> pb::UnitStatusEvent {
    match event {
        UnitEventArg::Acknowledge => pb::UnitStatusEvent::Acknowledge,
        UnitEventArg::Decline => pb::UnitStatusEvent::Decline,
        UnitEventArg::Stage => pb::UnitStatusEvent::Stage,
        UnitEventArg::Arrive => pb::UnitStatusEvent::Arrive,
        UnitEventArg::Release => pb::UnitStatusEvent::Release,
        UnitEventArg::Clear => pb::UnitStatusEvent::Clear,
        UnitEventArg::OutOfService => pb::UnitStatusEvent::GoOutOfService,
        UnitEventArg::ReturnToService => pb::UnitStatusEvent::ReturnToService,
    }
}

/// One line naming a unit and where it stands: `U-1 (Haz 1) is now enroute for INC-7`.
fn write_unit_line(out: Out<'_>, prefix: &str, view: &UnitView) -> std::io::Result<()> {
    let name = if view.call_sign.is_empty() {
        view.id.clone()
    } else {
        format!("{} ({})", view.id, view.call_sign)
    };
    write!(out, "{prefix}{name} is {}", view.status_label())?;
    if let Some(incident) = &view.incident_id {
        write!(out, " for {incident}")?;
    }
    writeln!(out)
}

async fn unit_status(context: &Context, args: UnitStatusArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::UpdateUnitStatusRequest {
        namespace: context.namespace.clone(),
        unit_id: args.unit_id,
        event: unit_status_event(args.event) as i32,
        incident_id: args.incident_id.unwrap_or_default(),
        reason: args.reason.unwrap_or_default(),
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "refused the status change",
            client.update_unit_status(request),
        )
        .await?;
    let view = UnitView::from(response.unit.unwrap_or_default());
    if context.json {
        write_json(out, &view)?;
    } else {
        write_unit_line(out, "unit ", &view)?;
    }
    Ok(EXIT_OK)
}

async fn unit_position(
    context: &Context,
    args: UnitPositionArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::ReportPositionRequest {
        namespace: context.namespace.clone(),
        unit_id: args.unit_id,
        lat: args.lat,
        lon: args.lon,
        at_unix_ms: args.at_ms.unwrap_or(0),
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the position", client.report_position(request))
        .await?;
    let view = PositionReportView::from(response);
    if context.json {
        write_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    let unit = &view.unit;
    let position = unit
        .position
        .map(|point| point.describe())
        .unwrap_or_else(|| "-".to_owned());
    let taken = or_dash(unit.position_at.as_deref());
    if view.applied {
        writeln!(
            out,
            "position of {} recorded: {position} at {taken}",
            unit.id
        )?;
    } else {
        writeln!(
            out,
            "position of {} ignored: the stored fix is newer ({position} at {taken})",
            unit.id
        )?;
    }
    Ok(EXIT_OK)
}

/// One recommended unit or assignment, for `recommend --json` and `assign --json`.
#[derive(Debug, Serialize)]
struct CandidateView {
    unit_id: String,
    call_sign: String,
    unit_type: String,
    eta_minutes: f64,
    distance_km: f64,
    cascade_depth: u32,
    reason_codes: Vec<String>,
    reason: String,
}

impl From<&pb::Assignment> for CandidateView {
    fn from(a: &pb::Assignment) -> Self {
        CandidateView {
            unit_id: a.unit_id.clone(),
            call_sign: a.call_sign.clone(),
            unit_type: a.unit_type.clone(),
            eta_minutes: a.eta_minutes,
            distance_km: a.distance_km,
            cascade_depth: a.cascade_depth,
            reason_codes: a.reason_codes.clone(),
            reason: a.reason.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ShortfallView {
    unit_type: String,
    required: u32,
    assigned: u32,
    reason_codes: Vec<String>,
    /// Units excluded per cause, e.g. `busy: 3`.
    causes: Vec<(String, u32)>,
    reason: String,
}

#[derive(Debug, Serialize)]
struct RecommendationView {
    plan_id: String,
    candidates: Vec<CandidateView>,
    shortfalls: Vec<ShortfallView>,
}

/// `--grade` (clap admits only I, II, III and IV).
fn grade_arg(grade: Option<&str>) -> pb::Grade {
    match grade {
        Some("I") => pb::Grade::I,
        Some("II") => pb::Grade::Ii,
        Some("III") => pb::Grade::Iii,
        Some("IV") => pb::Grade::Iv,
        _ => pb::Grade::Unspecified,
    }
}

async fn recommend(context: &Context, args: RecommendArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::RecommendRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id.unwrap_or_default(),
        kind: args.kind.unwrap_or_default(),
        township_code: args.township.unwrap_or_default(),
        grade: grade_arg(args.grade.as_deref()) as i32,
        lead_code: args.lead.unwrap_or_default(),
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call("could not recommend", client.recommend(request))
        .await?;
    let view = RecommendationView {
        plan_id: response.plan_id.clone(),
        candidates: response
            .candidates
            .iter()
            .map(CandidateView::from)
            .collect(),
        shortfalls: response
            .shortfalls
            .iter()
            .map(|s| ShortfallView {
                unit_type: s.unit_type.clone(),
                required: s.required,
                assigned: s.assigned,
                reason_codes: s.reason_codes.clone(),
                causes: s.causes.iter().map(|c| (c.code.clone(), c.count)).collect(),
                reason: s.reason.clone(),
            })
            .collect(),
    };
    if context.json {
        write_json(out, &view)?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "plan {} (dry run, nothing booked)",
        or_dash(Some(&view.plan_id))
    )?;
    if view.candidates.is_empty() {
        writeln!(out, "no units to recommend")?;
    } else {
        let mut table = Table::new(["UNIT", "CALL SIGN", "TYPE", "ETA", "DISTANCE", "REASONS"]);
        for candidate in &view.candidates {
            let mut reasons = candidate.reason_codes.join(", ");
            if candidate.cascade_depth > 0 {
                reasons.push_str(&format!(", cascade depth {}", candidate.cascade_depth));
            }
            table.row([
                candidate.unit_id.clone(),
                candidate.call_sign.clone(),
                candidate.unit_type.clone(),
                format!("{:.1} min", candidate.eta_minutes),
                format!("{:.1} km", candidate.distance_km),
                reasons,
            ]);
        }
        table.write_to(out)?;
    }
    for shortfall in &view.shortfalls {
        let causes: Vec<String> = shortfall
            .causes
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        writeln!(
            out,
            "short {} of {} {}: {}{}",
            shortfall.required.saturating_sub(shortfall.assigned),
            shortfall.required,
            shortfall.unit_type,
            shortfall.reason_codes.first().map_or("-", String::as_str),
            if causes.is_empty() {
                String::new()
            } else {
                format!(" ({})", causes.join(", "))
            }
        )?;
    }
    Ok(EXIT_OK)
}

async fn assign(context: &Context, args: AssignArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::AssignRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
        unit_id: args.unit_id,
        by: officer_name(args.by),
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the assignment", client.assign(request))
        .await?;
    let unit = UnitView::from(response.unit.unwrap_or_default());
    let assignment = response.assignment.as_ref().map(CandidateView::from);
    if context.json {
        #[derive(Serialize)]
        struct AssignView {
            unit: UnitView,
            assignment: Option<CandidateView>,
        }
        write_json(out, &AssignView { unit, assignment })?;
        return Ok(EXIT_OK);
    }
    write_unit_line(out, "unit ", &unit)?;
    if let Some(assignment) = assignment {
        writeln!(
            out,
            "  ETA {:.1} min, {:.1} km: {}",
            assignment.eta_minutes, assignment.distance_km, assignment.reason
        )?;
    }
    Ok(EXIT_OK)
}

async fn unit_ack(context: &Context, args: UnitAssignmentArgs, out: Out<'_>) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::AcknowledgeAssignmentRequest {
        namespace: context.namespace.clone(),
        unit_id: args.unit_id,
        incident_id: args.incident_id,
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "refused the acknowledgement",
            client.acknowledge_assignment(request),
        )
        .await?;
    write_unit_response(context, out, response.unit.unwrap_or_default())
}

async fn unit_decline(
    context: &Context,
    args: UnitDeclineArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::DeclineAssignmentRequest {
        namespace: context.namespace.clone(),
        unit_id: args.unit_id,
        incident_id: args.incident_id,
        reason: args.reason,
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the decline", client.decline_assignment(request))
        .await?;
    write_unit_response(context, out, response.unit.unwrap_or_default())
}

async fn unit_release(
    context: &Context,
    args: UnitAssignmentArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::ReleaseUnitRequest {
        namespace: context.namespace.clone(),
        unit_id: args.unit_id,
        incident_id: args.incident_id,
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call("refused the release", client.release_unit(request))
        .await?;
    write_unit_response(context, out, response.unit.unwrap_or_default())
}

fn write_unit_response(context: &Context, out: Out<'_>, unit: pb::Unit) -> Result<i32, Error> {
    let view = UnitView::from(unit);
    if context.json {
        write_json(out, &view)?;
    } else {
        write_unit_line(out, "unit ", &view)?;
    }
    Ok(EXIT_OK)
}
