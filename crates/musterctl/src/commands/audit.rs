//! `musterctl audit`: the audit trails of intake, escalation and dispatch merged by time, and
//! `audit verify`, which has each service recompute its hash chain.

use muster_proto::v1 as pb;
use muster_proto::v1::audit_service_client::AuditServiceClient;
use serde::Serialize;

use super::{Context, Out, now_unix_ms, write_json};
use crate::connect::Target;
use crate::table::Table;
use crate::time::{format_rfc3339_ms, parse_since_ms};
use crate::view::or_dash;
use crate::{AuditArgs, AuditCommand, EXIT_FAILURE, EXIT_OK, Error};

/// One audit entry for the table and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntryView {
    pub at: String,
    #[serde(skip)]
    pub at_unix_ms: i64,
    pub service: String,
    pub seq: u64,
    pub officer: String,
    pub role: String,
    pub jurisdiction_code: String,
    pub token_id: String,
    pub peer: String,
    pub action: String,
    pub incident_id: String,
    pub unit_id: String,
    pub result: String,
    pub detail: String,
    pub namespace: String,
    pub hash: String,
}

impl From<pb::AuditEntry> for AuditEntryView {
    fn from(entry: pb::AuditEntry) -> Self {
        Self {
            at: format_rfc3339_ms(entry.at_unix_ms),
            at_unix_ms: entry.at_unix_ms,
            service: entry.service,
            seq: entry.seq,
            officer: entry.officer,
            role: entry.role,
            jurisdiction_code: entry.jurisdiction_code,
            token_id: entry.token_id,
            peer: entry.peer,
            action: entry.action,
            incident_id: entry.incident_id,
            unit_id: entry.unit_id,
            result: entry.result,
            detail: entry.detail,
            namespace: entry.namespace,
            hash: entry.hash,
        }
    }
}

/// `/muster.v1.EscalationService/Acknowledge` → `EscalationService/Acknowledge`: the package
/// is the same on every line and only costs width.
fn short_action(action: &str) -> &str {
    action.strip_prefix("/muster.v1.").unwrap_or(action)
}

/// A service that could not be asked, for the report after the table.
#[derive(Debug, Clone, Serialize)]
struct ServiceError {
    service: &'static str,
    error: String,
}

#[derive(Debug, Serialize)]
struct AuditListView {
    entries: Vec<AuditEntryView>,
    /// Services whose answer was cut at the limit (their oldest matching entries left out).
    truncated: Vec<&'static str>,
    errors: Vec<ServiceError>,
}

pub(super) async fn audit(context: &Context, args: AuditArgs, out: Out<'_>) -> Result<i32, Error> {
    match args.verify {
        Some(AuditCommand::Verify) => verify(context, out).await,
        None => list(context, args, out).await,
    }
}

fn targets(context: &Context) -> [&Target; 3] {
    [&context.intake, &context.escalation, &context.dispatch]
}

async fn list_one(
    target: &Target,
    request: pb::ListAuditRequest,
) -> Result<pb::ListAuditResponse, Error> {
    let mut client = AuditServiceClient::new(target.connect().await?);
    target
        .call("could not list its audit trail", client.list_audit(request))
        .await
}

async fn list(context: &Context, args: AuditArgs, out: Out<'_>) -> Result<i32, Error> {
    let since_unix_ms = match &args.since {
        None => 0,
        Some(text) => parse_since_ms(text, now_unix_ms()).map_err(|problem| Error::Setting {
            origin: "--since".to_owned(),
            problem,
        })?,
    };
    let request = pb::ListAuditRequest {
        incident_id: args.incident_id.unwrap_or_default(),
        officer: args.officer.unwrap_or_default(),
        since_unix_ms,
        limit: args.limit.unwrap_or(0),
        refused_only: args.refused,
    };
    let [intake, escalation, dispatch] = targets(context);
    let answers = tokio::join!(
        list_one(intake, request.clone()),
        list_one(escalation, request.clone()),
        list_one(dispatch, request),
    );
    let mut view = AuditListView {
        entries: Vec::new(),
        truncated: Vec::new(),
        errors: Vec::new(),
    };
    let mut first_error = None;
    for (target, answer) in targets(context)
        .into_iter()
        .zip([answers.0, answers.1, answers.2])
    {
        match answer {
            Ok(response) => {
                if response.truncated {
                    view.truncated.push(target.service);
                }
                view.entries
                    .extend(response.entries.into_iter().map(AuditEntryView::from));
            }
            Err(error) => {
                view.errors.push(ServiceError {
                    service: target.service,
                    error: error.to_string(),
                });
                first_error.get_or_insert(error);
            }
        }
    }
    // Nothing answered: one error line is clearer than an empty table.
    if view.errors.len() == 3
        && let Some(error) = first_error
    {
        return Err(error);
    }
    // Merged by time; the service and its own sequence break ties so the order is stable.
    view.entries
        .sort_by(|a, b| (a.at_unix_ms, &a.service, a.seq).cmp(&(b.at_unix_ms, &b.service, b.seq)));
    if let Some(limit) = args.limit {
        let excess = view.entries.len().saturating_sub(limit as usize);
        view.entries.drain(..excess);
    }
    let exit_code = if view.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    };
    if context.json {
        write_json(out, &view)?;
        return Ok(exit_code);
    }
    if view.entries.is_empty() {
        writeln!(out, "no audit entries match")?;
    } else {
        let mut table = Table::new([
            "TIME", "SERVICE", "OFFICER", "ROLE", "ACTION", "INCIDENT", "RESULT", "DETAIL",
        ]);
        for entry in &view.entries {
            table.row([
                entry.at.clone(),
                entry.service.clone(),
                or_dash(Some(&entry.officer)),
                or_dash(Some(&entry.role)),
                short_action(&entry.action).to_owned(),
                or_dash(Some(&entry.incident_id)),
                entry.result.clone(),
                entry.detail.clone(),
            ]);
        }
        table.write_to(out)?;
    }
    for service in &view.truncated {
        writeln!(
            out,
            "note: {service} had more matching entries than the limit; its oldest were left out"
        )?;
    }
    for error in &view.errors {
        writeln!(out, "error: {}", error.error)?;
    }
    Ok(exit_code)
}

#[derive(Debug, Serialize)]
struct VerifyView {
    service: &'static str,
    /// `ok`, `BROKEN` or `UNREACHABLE`.
    state: &'static str,
    ok: bool,
    entries: u64,
    head_seq: u64,
    head_hash: String,
    first_bad_seq: u64,
    problem: String,
}

async fn verify_one(target: &Target) -> VerifyView {
    let answer = async {
        let mut client = AuditServiceClient::new(target.connect().await?);
        target
            .call(
                "could not verify its audit trail",
                client.verify_audit(pb::VerifyAuditRequest {}),
            )
            .await
    }
    .await;
    match answer {
        Ok(response) => VerifyView {
            service: target.service,
            state: if response.ok { "ok" } else { "BROKEN" },
            ok: response.ok,
            entries: response.entries,
            head_seq: response.head_seq,
            head_hash: response.head_hash,
            first_bad_seq: response.first_bad_seq,
            problem: response.problem,
        },
        Err(error) => VerifyView {
            service: target.service,
            state: "UNREACHABLE",
            ok: false,
            entries: 0,
            head_seq: 0,
            head_hash: String::new(),
            first_bad_seq: 0,
            problem: error.to_string(),
        },
    }
}

async fn verify(context: &Context, out: Out<'_>) -> Result<i32, Error> {
    let [intake, escalation, dispatch] = targets(context);
    let (a, b, c) = tokio::join!(
        verify_one(intake),
        verify_one(escalation),
        verify_one(dispatch)
    );
    let views = [a, b, c];
    let exit_code = if views.iter().all(|view| view.ok) {
        EXIT_OK
    } else {
        EXIT_FAILURE
    };
    if context.json {
        write_json(out, &views)?;
        return Ok(exit_code);
    }
    let mut table = Table::new(["SERVICE", "OK", "ENTRIES", "HEAD / FIRST BAD", "PROBLEM"]);
    for view in &views {
        let position = match view.state {
            "ok" => format!("seq {} {}", view.head_seq, or_dash(Some(&view.head_hash))),
            "BROKEN" => format!("first bad seq {}", view.first_bad_seq),
            _ => "-".to_owned(),
        };
        table.row([
            view.service.to_owned(),
            view.state.to_owned(),
            view.entries.to_string(),
            position,
            or_dash(Some(&view.problem)),
        ]);
    }
    table.write_to(out)?;
    Ok(exit_code)
}
