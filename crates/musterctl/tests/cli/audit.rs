//! `audit` and `audit verify` against three fake AuditService servers on real sockets, and the
//! bearer token every call carries.

use std::sync::{Arc, Mutex};

use muster_proto::v1 as pb;
use muster_proto::v1::audit_service_server::{AuditService, AuditServiceServer};
use tonic::{Request, Response, Status};

use crate::{DEAD, clean_environment, parse, run_in_environment, run_to_string, spawn_server};

/// One service's audit trail and chain state, with every request and token it saw.
#[derive(Clone, Default)]
pub(crate) struct FakeAudit {
    pub(crate) service: &'static str,
    pub(crate) entries: Vec<pb::AuditEntry>,
    pub(crate) truncated: bool,
    /// `None`: the chain verifies; `Some((seq, problem))`: it breaks there.
    pub(crate) broken_at: Option<(u64, &'static str)>,
    /// Answer UNAUTHENTICATED unless this bearer token comes with the call.
    pub(crate) required_token: Option<&'static str>,
    pub(crate) requests: Arc<Mutex<Vec<pb::ListAuditRequest>>>,
    pub(crate) authorizations: Arc<Mutex<Vec<String>>>,
}

impl FakeAudit {
    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.authorizations.lock().unwrap().push(header.clone());
        match self.required_token {
            Some(token) if header != format!("Bearer {token}") => {
                Err(Status::unauthenticated("missing or unknown token"))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::codegen::async_trait]
impl AuditService for FakeAudit {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.check_token(&request)?;
        let request = request.into_inner();
        self.requests.lock().unwrap().push(request.clone());
        let entries = self
            .entries
            .iter()
            .filter(|e| !request.refused_only || e.result != "ok")
            .filter(|e| request.incident_id.is_empty() || e.incident_id == request.incident_id)
            .filter(|e| e.at_unix_ms >= request.since_unix_ms)
            .cloned()
            .collect();
        Ok(Response::new(pb::ListAuditResponse {
            entries,
            truncated: self.truncated,
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.check_token(&request)?;
        let head = self.entries.last();
        Ok(Response::new(match self.broken_at {
            None => pb::VerifyAuditResponse {
                service: self.service.to_owned(),
                ok: true,
                entries: self.entries.len() as u64,
                head_seq: head.map_or(0, |e| e.seq),
                head_hash: head.map_or(String::new(), |e| e.hash.clone()),
                first_bad_seq: 0,
                problem: String::new(),
            },
            Some((seq, problem)) => pb::VerifyAuditResponse {
                service: self.service.to_owned(),
                ok: false,
                entries: seq,
                head_seq: head.map_or(0, |e| e.seq),
                head_hash: head.map_or(String::new(), |e| e.hash.clone()),
                first_bad_seq: seq,
                problem: problem.to_owned(),
            },
        }))
    }
}

const T0: i64 = 1_795_847_244_000;

fn entry(
    service: &str,
    seq: u64,
    at_unix_ms: i64,
    officer: &str,
    action: &str,
    result: &str,
    detail: &str,
) -> pb::AuditEntry {
    pb::AuditEntry {
        seq,
        at_unix_ms,
        service: service.to_owned(),
        officer: officer.to_owned(),
        role: "officer".to_owned(),
        jurisdiction_code: "3201".to_owned(),
        token_id: "tok-1".to_owned(),
        peer: "127.0.0.1:5000".to_owned(),
        action: action.to_owned(),
        incident_id: "INC-7".to_owned(),
        unit_id: String::new(),
        result: result.to_owned(),
        detail: detail.to_owned(),
        namespace: "live".to_owned(),
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064x}"),
    }
}

async fn spawn_audit(fake: FakeAudit) -> String {
    spawn_server(tonic::transport::Server::builder().add_service(AuditServiceServer::new(fake)))
        .await
}

/// Three services whose entries interleave in time.
pub(crate) fn three_fakes() -> [FakeAudit; 3] {
    let intake = FakeAudit {
        service: "intake",
        entries: vec![
            entry(
                "intake",
                1,
                T0,
                "Li",
                "/muster.v1.IntakeService/ReportIncident",
                "ok",
                "kind accident.fire",
            ),
            entry(
                "intake",
                2,
                T0 + 3_000,
                "Li",
                "/muster.v1.IntakeService/UpdateIncident",
                "ok",
                "deaths 3",
            ),
        ],
        ..FakeAudit::default()
    };
    let escalation = FakeAudit {
        service: "escalation",
        entries: vec![entry(
            "escalation",
            1,
            T0 + 2_000,
            "Wang",
            "/muster.v1.EscalationService/Acknowledge",
            "permission_denied",
            "3202 is outside the token's scope 3201",
        )],
        ..FakeAudit::default()
    };
    let dispatch = FakeAudit {
        service: "dispatch",
        entries: vec![entry(
            "dispatch",
            7,
            T0 + 1_000,
            "Zhao",
            "/muster.v1.DispatchService/Assign",
            "ok",
            "U-1",
        )],
        truncated: true,
        ..FakeAudit::default()
    };
    [intake, escalation, dispatch]
}

async fn spawn_three(fakes: [FakeAudit; 3]) -> [String; 3] {
    let [a, b, c] = fakes;
    [
        spawn_audit(a).await,
        spawn_audit(b).await,
        spawn_audit(c).await,
    ]
}

fn endpoints<'a>(urls: &'a [String; 3], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--intake",
        &urls[0],
        "--escalation",
        &urls[1],
        "--dispatch",
        &urls[2],
    ]);
    all
}

#[tokio::test]
async fn audit_merges_the_three_trails_by_time_into_one_table() {
    let fakes = three_fakes();
    let requests = fakes.clone().map(|fake| fake.requests);
    let urls = spawn_three(fakes).await;
    let (result, output) = run_to_string(parse(&endpoints(&urls, &["audit"]))).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{output}");
    for header in [
        "SERVICE", "OFFICER", "ROLE", "ACTION", "INCIDENT", "RESULT", "DETAIL",
    ] {
        assert!(lines[0].contains(header), "{header} missing: {}", lines[0]);
    }
    let services: Vec<&str> = lines[1..5]
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        services,
        ["intake", "dispatch", "escalation", "intake"],
        "{output}"
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        first,
        [
            "2026-11-28T06:27:24.000Z",
            "intake",
            "Li",
            "officer",
            "IntakeService/ReportIncident",
            "INC-7",
            "ok",
            "kind",
            "accident.fire"
        ]
    );
    assert!(
        lines[2].contains("DispatchService/Assign"),
        "package prefix dropped: {}",
        lines[2]
    );
    assert!(!output.contains("/muster.v1."), "{output}");
    assert!(
        lines[3].contains("permission_denied")
            && lines[3].contains("3202 is outside the token's scope 3201"),
        "{}",
        lines[3]
    );
    assert!(
        output.contains("note: dispatch had more matching entries than the limit"),
        "{output}"
    );
    // Every service was asked, without filters.
    for requests in &requests {
        let sent = requests.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0], pb::ListAuditRequest::default());
    }
}

#[tokio::test]
async fn audit_sends_the_filters_and_applies_the_limit_to_the_merged_list() {
    let fakes = three_fakes();
    let requests = fakes.clone().map(|fake| fake.requests);
    let urls = spawn_three(fakes).await;
    let args = endpoints(
        &urls,
        &[
            "audit",
            "--incident",
            "INC-7",
            "--officer",
            "Li",
            "--since",
            "2026-11-28T06:27:24.500Z",
            "--limit",
            "2",
            "--json",
        ],
    );
    let (result, output) = run_to_string(parse(&args)).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let sent = requests[1].lock().unwrap()[0].clone();
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.officer, "Li");
    assert_eq!(sent.since_unix_ms, T0 + 500);
    assert_eq!(sent.limit, 2);
    assert!(!sent.refused_only);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    let entries = json["entries"].as_array().unwrap();
    // Three entries are after --since; the newest two are kept, oldest first.
    let seen: Vec<(&str, u64)> = entries
        .iter()
        .map(|e| (e["service"].as_str().unwrap(), e["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [("escalation", 1), ("intake", 2)]);
    assert_eq!(entries[0]["at"], "2026-11-28T06:27:26.000Z");
    assert_eq!(json["truncated"], serde_json::json!(["dispatch"]));
    assert_eq!(json["errors"], serde_json::json!([]));

    let args = endpoints(&urls, &["audit", "--refused"]);
    let (result, output) = run_to_string(parse(&args)).await;
    assert_eq!(result.unwrap(), 0);
    assert!(requests[0].lock().unwrap()[1].refused_only);
    assert_eq!(
        output.lines().filter(|l| l.contains("INC-7")).count(),
        1,
        "{output}"
    );

    let args = endpoints(&urls, &["audit", "--since", "yesterday-ish"]);
    let (result, _) = run_to_string(parse(&args)).await;
    let line = result.unwrap_err().to_string();
    assert!(
        line.starts_with("--since: \"yesterday-ish\" is not a time"),
        "{line}"
    );
}

#[tokio::test]
async fn audit_prints_what_it_has_when_one_service_is_unreachable_and_exits_one() {
    let [intake, escalation, _] = three_fakes();
    let urls = [
        spawn_audit(intake).await,
        spawn_audit(escalation).await,
        DEAD.to_owned(),
    ];
    let (result, output) = run_to_string(parse(&endpoints(&urls, &["audit"]))).await;
    assert_eq!(result.unwrap(), 1, "{output}");
    assert_eq!(
        output.lines().filter(|l| l.contains("INC-7")).count(),
        3,
        "{output}"
    );
    assert!(
        output.contains("error: cannot reach dispatch at http://127.0.0.1:1"),
        "{output}"
    );

    // None answering is a plain error.
    let all_dead = [DEAD.to_owned(), DEAD.to_owned(), DEAD.to_owned()];
    let (result, _) = run_to_string(parse(&endpoints(&all_dead, &["audit"]))).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .starts_with("cannot reach intake")
    );
}

#[tokio::test]
async fn audit_verify_reports_each_chain_and_fails_on_a_broken_one() {
    let urls = spawn_three(three_fakes()).await;
    let (result, output) = run_to_string(parse(&endpoints(&urls, &["audit", "verify"]))).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let intake_line = output.lines().find(|l| l.starts_with("intake")).unwrap();
    let cells: Vec<&str> = intake_line.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["intake", "ok", "2", "seq", "2"],
        "{intake_line}"
    );
    assert!(
        intake_line.contains(&format!("{:064x}", 2)),
        "{intake_line}"
    );

    let [intake, mut escalation, dispatch] = three_fakes();
    escalation.broken_at = Some((41, "prev_hash does not link to seq 40"));
    let urls = [
        spawn_audit(intake).await,
        spawn_audit(escalation).await,
        DEAD.to_owned(),
    ];
    let _ = dispatch;
    let (result, output) = run_to_string(parse(&endpoints(&urls, &["audit", "verify"]))).await;
    assert_eq!(result.unwrap(), 1, "{output}");
    let broken = output
        .lines()
        .find(|l| l.starts_with("escalation"))
        .unwrap();
    assert!(broken.contains("BROKEN"), "{broken}");
    assert!(broken.contains("first bad seq 41"), "{broken}");
    assert!(
        broken.contains("prev_hash does not link to seq 40"),
        "{broken}"
    );
    let unreachable = output.lines().find(|l| l.starts_with("dispatch")).unwrap();
    assert!(unreachable.contains("UNREACHABLE"), "{unreachable}");

    let args = endpoints(&urls, &["audit", "verify", "--json"]);
    let (result, output) = run_to_string(parse(&args)).await;
    assert_eq!(result.unwrap(), 1);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json[1]["ok"], false);
    assert_eq!(json[1]["first_bad_seq"], 41);
    assert_eq!(json[2]["state"], "UNREACHABLE");
}

#[tokio::test]
async fn every_call_carries_the_bearer_token_and_a_refusal_says_what_to_do() {
    let fakes = three_fakes().map(|fake| FakeAudit {
        required_token: Some("mst1.duty"),
        ..fake
    });
    let seen = fakes.clone().map(|fake| fake.authorizations);
    let urls = spawn_three(fakes).await;

    let environment = clean_environment().with_var("MUSTER_TOKEN", "mst1.duty");
    let (result, output) =
        run_in_environment(parse(&endpoints(&urls, &["audit", "verify"])), &environment).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    for seen in &seen {
        assert_eq!(*seen.lock().unwrap(), ["Bearer mst1.duty"]);
    }

    // Without a token the server's UNAUTHENTICATED comes back with the way out.
    let (result, _) = run_to_string(parse(&endpoints(&urls, &["audit"]))).await;
    let line = result.unwrap_err().to_string();
    assert!(line.contains("(UNAUTHENTICATED)"), "{line}");
    assert!(
        line.contains("no valid token: pass --token, set MUSTER_TOKEN, or put token/token_file in the config file; `muster up` writes one to .muster/admin.token"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    assert_eq!(seen[0].lock().unwrap().last().unwrap(), "");
}
