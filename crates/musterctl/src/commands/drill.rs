//! `drill run` and `drill report`.

use std::path::{Path, PathBuf};

use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;

use super::Out;
use crate::connect::{Target, Transport};
use crate::drill::player::{self, Clients, DrillServices, Endpoints, Options, drill_error};
use crate::drill::record::DrillRecord;
use crate::drill::{default_id, drill_dir, report, scenario, valid_id};
use crate::settings::Settings;
use crate::{
    Cli, DrillCommand, DrillReportArgs, DrillRunArgs, EXIT_FAILURE, EXIT_OK, Environment, Error,
    TokenArg,
};

pub async fn execute(
    command: DrillCommand,
    cli: &Cli,
    settings: &Settings,
    environment: &Environment,
    out: Out<'_>,
) -> Result<i32, Error> {
    match command {
        DrillCommand::Run(args) => run(args, cli, settings, environment, out).await,
        DrillCommand::Report(args) => report_command(args, environment, out),
    }
}

fn drills_dir(given: Option<&PathBuf>, environment: &Environment) -> PathBuf {
    match given {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => environment.current_dir().join(dir),
        None => environment.current_dir().join(".muster").join("drills"),
    }
}

fn muster_binary(given: Option<&PathBuf>) -> PathBuf {
    if let Some(path) = given {
        return path.clone();
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let beside = dir.join("muster");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("muster")
}

async fn clients(settings: &Settings, feeds: String, namespace: String) -> Result<Clients, Error> {
    let transport = Transport::from_settings(settings)?;
    let token = settings
        .token
        .as_ref()
        .map(|t| t.token.clone())
        .unwrap_or_default();
    let intake = Target::new("intake", &settings.intake.value, &transport)
        .connect()
        .await?;
    let escalation = Target::new("escalation", &settings.escalation.value, &transport)
        .connect()
        .await?;
    let dispatch = Target::new("dispatch", &settings.dispatch.value, &transport)
        .connect()
        .await?;
    Ok(Clients {
        intake: IntakeServiceClient::new(intake).max_decoding_message_size(64 << 20),
        escalation: EscalationServiceClient::new(escalation),
        dispatch: DispatchServiceClient::new(dispatch),
        feeds,
        token,
        namespace,
    })
}

async fn run(
    args: DrillRunArgs,
    cli: &Cli,
    settings: &Settings,
    environment: &Environment,
    out: Out<'_>,
) -> Result<i32, Error> {
    let file = if args.file.is_absolute() {
        args.file.clone()
    } else {
        environment.current_dir().join(&args.file)
    };
    let scenario = scenario::load(&file).map_err(|e| drill_error(e.to_string()))?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(drill_error(format!(
            "--speed {} must be above 0",
            args.speed
        )));
    }
    let id = match &args.id {
        Some(id) => id.clone(),
        None => default_id(&scenario.name, lifecycle_now_ms()),
    };
    if !valid_id(&id) {
        return Err(drill_error(format!(
            "drill id {id:?}: 1-64 of a-z, 0-9, - and _"
        )));
    }
    let namespace = format!("drill.{id}");
    let dir = drill_dir(&drills_dir(args.drills_dir.as_ref(), environment), &id);
    std::fs::create_dir_all(&dir)?;

    let mut services = None;
    let clients = match &args.feeds {
        Some(feeds) => clients(settings, feeds.clone(), namespace.clone()).await?,
        None => {
            let nats_url = args
                .nats_url
                .clone()
                .or_else(|| environment.var("MUSTER_NATS_URL").map(str::to_owned))
                .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
            let muster = muster_binary(args.muster_bin.as_ref());
            let started = tokio::task::block_in_place(|| {
                DrillServices::start(&muster, &nats_url, &namespace, args.speed, &dir)
            })?;
            let Endpoints {
                intake,
                escalation,
                dispatch,
                feeds,
            } = started.endpoints.clone();
            let mut drill_cli = cli.clone();
            drill_cli.intake_url = Some(intake);
            drill_cli.escalation_url = Some(escalation);
            drill_cli.dispatch_url = Some(dispatch);
            drill_cli.namespace = Some(namespace.clone());
            drill_cli.token = None::<TokenArg>;
            drill_cli.token_file = Some(started.token_file.clone());
            let drill_settings = Settings::resolve(&drill_cli, environment)?;
            services = Some(started);
            clients(&drill_settings, feeds, namespace.clone()).await?
        }
    };
    let options = Options {
        speed: args.speed,
        progress: !args.quiet,
        id: id.clone(),
        scenario_file: args.file.display().to_string(),
    };
    let wall = std::time::Instant::now();
    let record = player::play(&scenario, clients, &options).await;
    if let Some(services) = services {
        tokio::task::block_in_place(|| services.stop());
    }
    write_record(&dir, &record)?;

    let met = record.verdicts.iter().filter(|v| v.met).count();
    writeln!(
        out,
        "Drill {id} ({}) ran {} of scenario time in {:.1}s (×{}).",
        scenario.name,
        scenario::format_offset(scenario.duration_ms),
        wall.elapsed().as_secs_f64(),
        args.speed
    )?;
    for (label, h) in &record.incidents {
        writeln!(out, "  incident {label}: {} ({})", h.id, h.kind)?;
    }
    let failed_injects = record.injects.iter().filter(|i| !i.ok).count();
    if failed_injects > 0 {
        writeln!(out, "  {failed_injects} inject(s) failed:")?;
        for i in record.injects.iter().filter(|i| !i.ok) {
            writeln!(
                out,
                "    T+{} {} ({}): {}",
                scenario::format_offset(i.planned_ms),
                i.what,
                i.source,
                i.detail
            )?;
        }
    }
    for v in &record.verdicts {
        writeln!(
            out,
            "  {}  {}  — {}",
            if v.met { "MET   " } else { "FAILED" },
            v.expectation,
            v.detail
        )?;
    }
    writeln!(
        out,
        "{met}/{} expectations met. Report: musterctl drill report {id} (files in {})",
        record.verdicts.len(),
        dir.display()
    )?;
    Ok(if met == record.verdicts.len() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

fn lifecycle_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `drill.json` plus the three report forms beside it.
fn write_record(dir: &Path, record: &DrillRecord) -> Result<(), Error> {
    std::fs::write(dir.join("drill.json"), serde_json::to_vec_pretty(record)?)?;
    std::fs::write(dir.join("report.md"), report::markdown(record))?;
    std::fs::write(dir.join("report.html"), report::html(record))?;
    std::fs::write(dir.join("report.json"), report::json(record))?;
    Ok(())
}

fn report_command(
    args: DrillReportArgs,
    environment: &Environment,
    out: Out<'_>,
) -> Result<i32, Error> {
    let dir = drill_dir(&drills_dir(args.drills_dir.as_ref(), environment), &args.id);
    let path = dir.join("drill.json");
    let text = std::fs::read(&path).map_err(|e| {
        drill_error(format!(
            "no drill record at {}: {e} (run `musterctl drill run` first)",
            path.display()
        ))
    })?;
    let record: DrillRecord = serde_json::from_slice(&text)
        .map_err(|e| drill_error(format!("{}: {e}", path.display())))?;
    let text = match args.format.as_str() {
        "md" | "markdown" => report::markdown(&record),
        "html" => report::html(&record),
        "json" => report::json(&record),
        other => {
            return Err(drill_error(format!(
                "report format {other:?}: md, html or json"
            )));
        }
    };
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(EXIT_OK)
}
