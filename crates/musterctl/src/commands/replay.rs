//! `replay INCIDENT`: the incident's recorded history (`ListIncidentEvents`, and the reports
//! filed from `ListDeadlines`) through the domain core (`domain::replay`), compared with what the
//! services recorded: gradings, downgrade proposals, acknowledgements, escalations, lead changes,
//! plans and reporting deadlines. `--region-dir` and `--escalation-policy` replay it under other
//! rules: how a rule change is tested against history.

use std::sync::Arc;

use domain::escalation::EscalationPolicy;
use domain::event::IncidentEvent;
use domain::region::{DEFAULT_FILE_NAMES, Region, SourceFile};
use domain::replay::{Deadline, Divergence, Filed, Recorded, Replayed};
use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;
use serde::Serialize;

use super::{Context, Out, write_json};
use crate::table::Table;
use crate::timeline::format_relative;
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

fn policy(args: &ReplayArgs) -> Result<EscalationPolicy, Error> {
    let policy = match &args.escalation_policy {
        None => EscalationPolicy::embedded_default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Setting {
                origin: "--escalation-policy".into(),
                problem: format!("cannot read {}: {e}", path.display()),
            })?;
            EscalationPolicy::from_toml(&path.display().to_string(), &text).map_err(|e| {
                Error::Setting {
                    origin: "--escalation-policy".into(),
                    problem: e.to_string(),
                }
            })?
        }
    };
    Ok(match args.escalation_minute_ms {
        Some(ms) if ms > 0 => policy.with_minute_ms(ms),
        Some(ms) => {
            return Err(Error::Setting {
                origin: "--escalation-minute-ms".into(),
                problem: format!("{ms} is not a length of time; give milliseconds above 0"),
            });
        }
        None => policy,
    })
}

/// Every event of the incident, page by page.
async fn history(context: &Context, incident_id: &str) -> Result<Vec<IncidentEvent>, Error> {
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListIncidentEventsRequest {
            namespace: context.namespace.clone(),
            incident_id: incident_id.to_string(),
            page_size: 0,
            page_token: page_token.clone(),
        };
        let page = target
            .call(
                "could not read the incident's history",
                client.list_incident_events(request),
            )
            .await?;
        for wire in page.events {
            let id = wire.event_id.clone();
            events.push(
                muster_proto::convert::event_from_wire(wire, &id).map_err(|problem| {
                    Error::Setting {
                        origin: "intake".into(),
                        problem: format!("event {id} of the history is unreadable: {problem}"),
                    }
                })?,
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        page_token = page.next_page_token;
    }
}

/// The reports filed (officers' inputs) and the deadlines escalation recorded.
async fn deadlines(
    context: &Context,
    incident_id: &str,
) -> Result<(Vec<Filed>, Vec<Deadline>), Error> {
    let target = &context.escalation;
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let request = pb::ListDeadlinesRequest {
        namespace: context.namespace.clone(),
        incident_id: incident_id.to_string(),
    };
    let answer = match target
        .call(
            "could not read the incident's deadlines",
            client.list_deadlines(request),
        )
        .await
    {
        Ok(answer) => answer,
        // Never graded (or graded before escalation kept records): nothing was due.
        Err(Error::Rpc {
            code: tonic::Code::NotFound,
            ..
        }) => return Ok(Default::default()),
        Err(other) => return Err(other),
    };
    let filed = answer
        .deadlines
        .iter()
        .filter(|d| d.sent_at_unix_ms > 0 && d.kind != "skip_level")
        .map(|d| Filed {
            obligation_id: d.obligation_id,
            at_unix_ms: d.sent_at_unix_ms,
        })
        .collect();
    let recorded = answer
        .deadlines
        .iter()
        .map(|d| Deadline {
            obligation_id: d.obligation_id,
            kind: d.kind.clone(),
            to_tier: d.to_tier.clone(),
            due_at_unix_ms: d.due_at_unix_ms,
        })
        .collect();
    Ok((filed, recorded))
}

/// One of dispatch's recommendations, replayed there from its recorded board.
#[derive(Serialize)]
struct Recommendation {
    at_unix_ms: i64,
    plan_id: String,
    board_units: u32,
    recorded_unit_ids: Vec<String>,
    replayed_unit_ids: Vec<String>,
    same: bool,
}

/// Dispatch's replay of its recommendations; `None` with the reason when it could not be asked.
async fn recommendations(
    context: &Context,
    incident_id: &str,
) -> Result<Result<Vec<Recommendation>, String>, Error> {
    let target = &context.dispatch;
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let request = pb::ReplayRecommendationsRequest {
        namespace: context.namespace.clone(),
        incident_id: incident_id.to_string(),
    };
    match target
        .call(
            "could not replay the recommendations",
            client.replay_recommendations(request),
        )
        .await
    {
        Ok(answer) => Ok(Ok(answer
            .recommendations
            .into_iter()
            .map(|r| Recommendation {
                at_unix_ms: r.at_unix_ms,
                plan_id: r.plan_id,
                board_units: r.board_units,
                same: r.same,
                recorded_unit_ids: r.recorded_unit_ids,
                replayed_unit_ids: r.replayed_unit_ids,
            })
            .collect())),
        Err(Error::Rpc {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(Ok(Vec::new())),
        Err(Error::Rpc {
            code: tonic::Code::PermissionDenied,
            message,
            ..
        }) => Ok(Err(format!(
            "not replayed: dispatch refused this token ({message}); a dispatcher's or commander's token can"
        ))),
        Err(other) => Err(other),
    }
}

#[derive(Serialize)]
struct ReplayView {
    incident_id: String,
    kind: String,
    events_read: usize,
    horizon_unix_ms: i64,
    replayed: Replayed,
    recorded: Recorded,
    recorded_deadlines: Vec<Deadline>,
    recommendations: Vec<Recommendation>,
    /// Why the recommendations were not replayed, when they were not.
    recommendations_not_replayed: Option<String>,
    same: bool,
    first_divergence: Option<Divergence>,
}

pub async fn replay(context: &Context, args: ReplayArgs, out: Out<'_>) -> Result<i32, Error> {
    let region = region(args.region_dir.as_deref())?;
    let policy = policy(&args)?;
    if args.tolerance_ms < 0 {
        return Err(Error::Setting {
            origin: "--tolerance-ms".into(),
            problem: format!(
                "{} is negative; give milliseconds, 0 or more",
                args.tolerance_ms
            ),
        });
    }
    let events = history(context, &args.incident_id).await?;
    let Some(report) = events.iter().find_map(|e| match &e.body {
        domain::event::EventBody::Reported(report) => Some(report.clone()),
        _ => None,
    }) else {
        return Err(Error::Setting {
            origin: "replay".into(),
            problem: format!(
                "incident {} has no recorded history to replay (it was reported before intake \
                 kept incident events)",
                args.incident_id
            ),
        });
    };
    let (filed, recorded_deadlines) = deadlines(context, &args.incident_id).await?;
    // Timers fire up to the moment the history was read; the comparison allows those due in
    // the last `tolerance` to be still on their way.
    let horizon = super::now_unix_ms();
    let replayed =
        domain::replay::replay(&region, &policy, &events, &filed, horizon).map_err(|problem| {
            Error::Setting {
                origin: "replay".into(),
                problem: format!("the replay cannot run this incident: {problem}"),
            }
        })?;
    let recorded = domain::replay::recorded(&events);
    let (recommendations, not_replayed) = match recommendations(context, &args.incident_id).await? {
        Ok(list) => (list, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let divergence = domain::replay::first_divergence(
        &recorded,
        &replayed,
        &recorded_deadlines,
        horizon,
        args.tolerance_ms,
    )
    .or_else(|| {
        recommendations
            .iter()
            .enumerate()
            .find(|(_, r)| !r.same)
            .map(|(i, r)| Divergence {
                at: format!("recommendation {} (plan {})", i + 1, r.plan_id),
                recorded: format!("units {}", r.recorded_unit_ids.join(", ")),
                replayed: format!("units {}", r.replayed_unit_ids.join(", ")),
            })
    });
    let origin = events.first().map_or(0, |e| e.at_unix_ms);
    let view = ReplayView {
        incident_id: args.incident_id.clone(),
        kind: report.kind.clone(),
        events_read: events.len(),
        horizon_unix_ms: horizon,
        same: divergence.is_none(),
        first_divergence: divergence.clone(),
        replayed,
        recorded,
        recorded_deadlines,
        recommendations,
        recommendations_not_replayed: not_replayed,
    };
    if context.json {
        write_json(out, &view)?;
    } else {
        writeln!(
            out,
            "Replay of {} ({}): {} recorded events through the domain core",
            view.incident_id, view.kind, view.events_read
        )?;
        let mut table = Table::new(["T+", "INPUT", "REPLAYED"]);
        for step in &view.replayed.steps {
            let produced = if step.produced.is_empty() {
                "-".to_string()
            } else {
                step.produced.join("; ")
            };
            table.row([
                format_relative(step.at_unix_ms - origin),
                step.input.clone(),
                produced,
            ]);
        }
        table.write_to(out)?;
        let plans = |plans: &[String]| {
            if plans.is_empty() {
                "-".to_string()
            } else {
                plans.join(" → ")
            }
        };
        writeln!(
            out,
            "outcomes: {} recorded, {} replayed; plans recorded {}, replayed {}; deadlines: {} recorded, {} replayed",
            view.recorded.outcomes.len(),
            view.replayed.outcomes.len(),
            plans(&view.recorded.plans),
            plans(&view.replayed.plans),
            view.recorded_deadlines.len(),
            view.replayed.deadlines.len(),
        )?;
        match &view.recommendations_not_replayed {
            Some(why) => writeln!(out, "recommendations: {why}")?,
            None => {
                let same = view.recommendations.iter().filter(|r| r.same).count();
                writeln!(
                    out,
                    "recommendations: {} replayed by dispatch from their recorded boards, {same} pick the same units",
                    view.recommendations.len()
                )?;
                for (i, r) in view.recommendations.iter().enumerate() {
                    writeln!(
                        out,
                        "  {} {} plan {}: {} of {} units on the board: {}{}",
                        i + 1,
                        format_relative(r.at_unix_ms - origin),
                        if r.plan_id.is_empty() {
                            "-"
                        } else {
                            &r.plan_id
                        },
                        r.recorded_unit_ids.len(),
                        r.board_units,
                        r.recorded_unit_ids.join(", "),
                        if r.same {
                            String::new()
                        } else {
                            format!(" (replayed: {})", r.replayed_unit_ids.join(", "))
                        }
                    )?;
                }
            }
        }
        match &divergence {
            None => writeln!(
                out,
                "SAME: gradings, escalations, acknowledgements, lead changes, plans, deadlines and unit recommendations come out as recorded."
            )?,
            Some(d) => writeln!(out, "DIVERGES at {d}")?,
        }
    }
    Ok(if divergence.is_none() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}
