//! `replay INCIDENT`: the incident's recorded inputs through the domain core, compared with the
//! record.

use std::sync::Arc;

use domain::region::{DEFAULT_FILE_NAMES, Region, SourceFile};
use muster_proto::v1 as pb;
use muster_proto::v1::intake_service_client::IntakeServiceClient;
use serde::Serialize;

use super::{Context, Out, write_json};
use crate::drill::record::parse_graded;
use crate::replay::{Outcome, Step, first_divergence, inputs, plan_id, replay as run_replay};
use crate::table::Table;
use crate::{EXIT_FAILURE, EXIT_OK, Error, ReplayArgs};

fn region(dir: Option<&std::path::Path>) -> Result<Arc<Region>, Error> {
    let Some(dir) = dir else {
        return Ok(Arc::new(Region::embedded_default()));
    };
    let paths: Vec<std::path::PathBuf> = DEFAULT_FILE_NAMES.iter().map(|n| dir.join(n)).collect();
    let mut texts = Vec::new();
    for path in &paths {
        texts.push(std::fs::read_to_string(path).map_err(|e| Error::Setting {
            origin: "--region-dir".into(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?);
    }
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let source = |i: usize| SourceFile {
        name: &names[i],
        text: &texts[i],
    };
    Region::from_sources(source(0), source(1), source(2), source(3))
        .map(Arc::new)
        .map_err(|e| Error::Setting {
            origin: "--region-dir".into(),
            problem: e.to_string(),
        })
}

#[derive(Serialize)]
struct ReplayView {
    incident_id: String,
    kind: String,
    steps: Vec<Step>,
    recorded: Vec<Outcome>,
    replayed: Vec<Outcome>,
    recorded_plans: Vec<String>,
    replayed_plans: Vec<String>,
    same: bool,
    first_divergence: Option<String>,
}

pub async fn replay(context: &Context, args: ReplayArgs, out: Out<'_>) -> Result<i32, Error> {
    let region = region(args.region_dir.as_deref())?;
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::GetIncidentRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id.clone(),
    };
    let incident = target
        .call("could not get the incident", client.get_incident(request))
        .await?
        .incident
        .unwrap_or_default();
    let report = incident.report.clone().unwrap_or_default();
    let timeline: Vec<(i64, String, String)> = incident
        .timeline
        .iter()
        .map(|t| (t.at_unix_ms, t.event_type.clone(), t.description.clone()))
        .collect();
    let mut townships = vec![report.township_code.as_str()];
    townships.extend(report.other_township_codes.iter().map(String::as_str));
    let steps =
        run_replay(&region, &report.kind, &townships, &inputs(&timeline)).map_err(|problem| {
            Error::Setting {
                origin: "replay".into(),
                problem,
            }
        })?;
    let replayed: Vec<Outcome> = steps.iter().filter_map(|s| s.replayed.clone()).collect();
    let recorded: Vec<Outcome> = timeline
        .iter()
        .filter(|(_, t, _)| t == "graded")
        .map(|(_, _, d)| {
            let (grade, _, lead) = parse_graded(d);
            Outcome {
                grade: grade.filter(|g| g != "ungraded"),
                lead_code: lead.unwrap_or_default(),
            }
        })
        .collect();
    // Plans, in order of first use.
    let mut recorded_plans: Vec<String> = Vec::new();
    for (_, t, d) in &timeline {
        if t == "units_assigned"
            && let Some(plan) = d
                .split("under plan ")
                .nth(1)
                .and_then(|r| r.split(':').next())
            && !plan.is_empty()
            && !recorded_plans.iter().any(|p| p == plan)
        {
            recorded_plans.push(plan.to_owned());
        }
    }
    let mut replayed_plans: Vec<String> = Vec::new();
    for outcome in &replayed {
        if let Some(plan) = plan_id(&region, &report.kind, outcome.grade.as_deref())
            && !replayed_plans.contains(&plan)
        {
            replayed_plans.push(plan);
        }
    }
    let mut divergence = first_divergence(&recorded, &replayed);
    if divergence.is_none() && !recorded_plans.is_empty() && recorded_plans != replayed_plans {
        divergence = Some(format!(
            "plans: recorded {}, replayed {}",
            recorded_plans.join(" → "),
            replayed_plans.join(" → ")
        ));
    }
    let view = ReplayView {
        incident_id: incident.id.clone(),
        kind: report.kind.clone(),
        same: divergence.is_none(),
        first_divergence: divergence.clone(),
        steps,
        recorded,
        replayed,
        recorded_plans,
        replayed_plans,
    };
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(
            out,
            "Replay of {} ({}) through the domain core:",
            view.incident_id, view.kind
        )?;
        let mut table = Table::new(["#", "INPUT", "REPLAYED"]);
        for (i, step) in view.steps.iter().enumerate() {
            let replayed = step
                .replayed
                .as_ref()
                .map_or("no new grading".to_owned(), |o| {
                    format!(
                        "grade {} lead {}",
                        o.grade.as_deref().unwrap_or("-"),
                        o.lead_code
                    )
                });
            table.row([(i + 1).to_string(), step.input.clone(), replayed]);
        }
        table.write_to(out)?;
        writeln!(
            out,
            "gradings: {} recorded, {} replayed; plans recorded {}, replayed {}",
            view.recorded.len(),
            view.replayed.len(),
            if view.recorded_plans.is_empty() {
                "-".into()
            } else {
                view.recorded_plans.join(" → ")
            },
            if view.replayed_plans.is_empty() {
                "-".into()
            } else {
                view.replayed_plans.join(" → ")
            },
        )?;
        match &divergence {
            None => writeln!(out, "SAME: grades, leads and plans come out as recorded.")?,
            Some(d) => writeln!(out, "DIVERGES at {d}")?,
        }
    }
    Ok(if divergence.is_none() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}
