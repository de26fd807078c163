//! musterctl's tests: formatting helpers, argument parsing, unreachable services, and every
//! command against small in-process fake services (no Muster servers needed). The newer areas
//! live in modules under `tests/cli/`, still one test binary.

mod cli {
    pub mod audit;
    pub mod settings;
    pub mod timeline;
    pub mod tls;
    pub mod top;
    pub mod watch;
}

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use clap::Parser;
use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_server::{DispatchService, DispatchServiceServer};
use muster_proto::v1::escalation_service_server::{EscalationService, EscalationServiceServer};
use muster_proto::v1::intake_service_server::{IntakeService, IntakeServiceServer};
use musterctl::table::{Table, display_width};
use musterctl::time::{
    civil_from_days, format_duration_ms, format_rfc3339_ms, format_time_of_day_ms,
};
use musterctl::{Cli, Command, Environment, Error, LevelArg, UnitEventArg, code_name};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

/// An address where nothing listens, so connecting is refused at once.
const DEAD: &str = "http://127.0.0.1:1";

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("musterctl").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{args:?} should parse: {error}"))
}

/// An environment with no variables and a working directory without `.muster/`, so neither the
/// developer's config file nor a local admin token reaches the tests.
fn clean_environment() -> Environment {
    Environment::empty("/nonexistent/musterctl-tests")
}

async fn run_to_string(cli: Cli) -> (Result<i32, Error>, String) {
    run_in_environment(cli, &clean_environment()).await
}

async fn run_in_environment(cli: Cli, environment: &Environment) -> (Result<i32, Error>, String) {
    let mut buffer = Vec::new();
    let result = musterctl::run_in(cli, environment, &mut buffer, std::future::pending()).await;
    (result, String::from_utf8(buffer).expect("output is UTF-8"))
}

// ---- formatting -------------------------------------------------------------------------------

#[test]
fn display_width_counts_cjk_as_two_columns() {
    assert_eq!(display_width("abc"), 3);
    assert_eq!(display_width("南京市"), 6);
    assert_eq!(display_width("서울"), 4);
    assert_eq!(display_width("ＡＢ"), 4);
    assert_eq!(display_width("化工厂 fire"), 11);
}

#[test]
fn table_aligns_columns_with_cjk_text() {
    let mut table = Table::new(["CODE", "NAME", "LEVEL"]);
    table.row(["32", "江苏省", "province"]);
    table.row(["3201", "南京市", "city"]);
    table.row(["320102001", "梅园新村街道", "township"]);
    let rendered = table.render();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(
        lines,
        [
            "CODE       NAME          LEVEL",
            "32         江苏省        province",
            "3201       南京市        city",
            "320102001  梅园新村街道  township",
        ]
    );
    // Every LEVEL cell starts at the same display column.
    let columns: Vec<usize> = lines
        .iter()
        .map(|line| {
            let level_start = line.rfind("  ").unwrap() + 2;
            display_width(&line[..level_start])
        })
        .collect();
    assert!(
        columns.iter().all(|&column| column == columns[0]),
        "{columns:?}"
    );
}

#[test]
fn table_does_not_pad_the_last_column_and_tolerates_short_rows() {
    let mut table = Table::new(["A", "B"]);
    table.row(["long value"]);
    assert_eq!(table.render(), "A           B\nlong value\n");
}

#[test]
fn rfc3339_formatter_handles_epoch_known_dates_and_negatives() {
    assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        format_rfc3339_ms(1_795_847_244_123),
        "2026-11-28T06:27:24.123Z"
    );
    assert_eq!(
        format_rfc3339_ms(1_709_251_199_999),
        "2024-02-29T23:59:59.999Z"
    );
    assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(format_time_of_day_ms(1_795_847_244_123), "06:27:24.123");
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}

#[test]
fn status_codes_are_named_in_upper_snake_case() {
    assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    assert_eq!(code_name(Code::Ok), "OK");
}

#[test]
fn a_status_becomes_one_readable_line() {
    let status = Status::invalid_argument("unknown township \"999\"");
    let error = Error::from_status("intake", "rejected the report", &status);
    assert_eq!(
        error.to_string(),
        "intake rejected the report: unknown township \"999\" (INVALID_ARGUMENT)"
    );
    assert_eq!(error.grpc_code(), Some(Code::InvalidArgument));
}

#[test]
fn refusals_for_missing_rights_say_what_to_do() {
    let status = Status::permission_denied("3202 is outside the token's scope 3201");
    let line = Error::from_status("escalation", "refused the acknowledgement", &status).to_string();
    assert!(
        line.starts_with("escalation refused the acknowledgement: 3202 is outside the token's scope 3201 (PERMISSION_DENIED) — "),
        "{line}"
    );
    assert!(line.contains("use a token issued for it"), "{line}");
    let status = Status::unauthenticated("token expired");
    let line = Error::from_status("intake", "rejected the report", &status).to_string();
    assert!(
        line.contains("(UNAUTHENTICATED) — no valid token: pass --token"),
        "{line}"
    );
    // Other refusals need no advice beyond the server's message.
    let status = Status::not_found("no incident INC-9");
    let line = Error::from_status("intake", "could not get the incident", &status).to_string();
    assert_eq!(
        line,
        "intake could not get the incident: no incident INC-9 (NOT_FOUND)"
    );
}

// ---- argument parsing -------------------------------------------------------------------------

#[test]
fn report_accepts_negative_numbers_so_the_server_can_reject_them() {
    let cli = parse(&[
        "report",
        "--kind",
        "natural.earthquake",
        "--township",
        "320102001",
        "--deaths",
        "-1",
        "--missing=-2",
        "--injured",
        "-3",
        "--loss",
        "-4",
        "--magnitude",
        "-0.5",
        "--lat",
        "-33.86",
        "--lon",
        "-151.2",
        "--also",
        "320102002",
        "--also",
        "320102003",
    ]);
    let Command::Report(report) = cli.command else {
        panic!("not a report: {:?}", cli.command);
    };
    assert_eq!(report.deaths, Some(-1));
    assert_eq!(report.missing, Some(-2));
    assert_eq!(report.injured, Some(-3));
    assert_eq!(report.loss_cny, Some(-4));
    assert_eq!(report.magnitude, Some(-0.5));
    assert_eq!(report.lat, Some(-33.86));
    assert_eq!(report.lon, Some(-151.2));
    assert_eq!(report.also, ["320102002", "320102003"]);
    assert_eq!(report.request_id, None);
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cli = parse(&[
        "jurisdictions",
        "--level",
        "township",
        "--json",
        "--escalation",
        "http://10.0.0.1:9",
        "--namespace",
        "drill.7",
        "--timeout-ms",
        "250",
    ]);
    assert!(cli.json);
    assert_eq!(cli.escalation_url.as_deref(), Some("http://10.0.0.1:9"));
    assert_eq!(cli.namespace.as_deref(), Some("drill.7"));
    assert_eq!(cli.timeout_ms, Some(250));
    let Command::Jurisdictions(args) = cli.command else {
        panic!("not jurisdictions");
    };
    assert_eq!(args.level, Some(LevelArg::Township));
}

#[test]
fn bad_arguments_are_usage_errors() {
    assert!(Cli::try_parse_from(["musterctl", "jurisdictions", "--level", "planet"]).is_err());
    assert!(Cli::try_parse_from(["musterctl", "report", "--township", "1"]).is_err());
    assert!(Cli::try_parse_from(["musterctl", "show"]).is_err());
}

#[test]
fn run_is_send_so_tests_can_spawn_it() {
    fn assert_send<T: Send>(_: &T) {}
    let mut buffer = Vec::new();
    let future = musterctl::run(parse(&["status"]), &mut buffer);
    assert_send(&future);
}

// ---- unreachable services ---------------------------------------------------------------------

#[tokio::test]
async fn a_command_against_an_unreachable_service_names_the_endpoint() {
    let (result, output) = run_to_string(parse(&["show", "INC-1", "--intake", DEAD])).await;
    let error = result.expect_err("nothing listens on port 1");
    let line = error.to_string();
    assert!(
        line.contains("cannot reach intake at http://127.0.0.1:1"),
        "{line}"
    );
    assert!(line.contains("connection refused"), "{line}");
    assert!(line.contains("muster up"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert_eq!(error.grpc_code(), Some(Code::Unavailable));
    assert_eq!(output, "");
}

#[tokio::test]
async fn an_endpoint_without_a_scheme_gets_http() {
    let (result, _) = run_to_string(parse(&["units", "--dispatch", "127.0.0.1:1"])).await;
    let line = result.unwrap_err().to_string();
    assert!(
        line.starts_with("cannot reach dispatch at http://127.0.0.1:1:"),
        "{line}"
    );
}

#[tokio::test]
async fn status_prints_unreachable_services_and_exits_one() {
    let cli = parse(&[
        "status",
        "--intake",
        DEAD,
        "--escalation",
        DEAD,
        "--dispatch",
        DEAD,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.expect("status does not fail"), 1);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 4, "{output}");
    assert!(lines[0].starts_with("SERVICE"), "{output}");
    for (line, service) in lines[1..].iter().zip(["intake", "escalation", "dispatch"]) {
        assert!(line.starts_with(service), "{line}");
        assert!(line.contains("UNREACHABLE"), "{line}");
        assert!(line.contains("connection refused"), "{line}");
    }
}

// ---- fake services ----------------------------------------------------------------------------

async fn spawn_server(router: tonic::transport::server::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    format!("http://{address}")
}

async fn spawn_health(serving: bool) -> String {
    let (reporter, service) = tonic_health::server::health_reporter();
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    spawn_server(tonic::transport::Server::builder().add_service(service)).await
}

fn sample_incident() -> pb::Incident {
    let at = 1_795_847_244_123;
    pb::Incident {
        id: "INC-7".to_owned(),
        namespace: "live".to_owned(),
        report: Some(pb::IncidentReport {
            kind: "accident.hazardous_chemicals".to_owned(),
            class: pb::IncidentClass::Accident as i32,
            township_code: "320102001".to_owned(),
            other_township_codes: vec!["320102002".to_owned()],
            location: Some(pb::GeoPoint {
                lat: 32.06,
                lon: 118.79,
            }),
            location_reported: true,
            facts: Some(pb::Facts {
                deaths: Some(3),
                serious_injuries: Some(12),
                ..Default::default()
            }),
            summary: "tank fire at 化工厂".to_owned(),
            reported_by: "Officer Li".to_owned(),
            warning_level: pb::WarningLevel::Orange as i32,
        }),
        status: pb::IncidentStatus::Responding as i32,
        grading: Some(pb::Graded {
            grade: pb::Grade::Iii as i32,
            response_level: 3,
            lead_jurisdiction_code: "3201".to_owned(),
            lead_jurisdiction_name: "南京市".to_owned(),
            lead_level: pb::JurisdictionLevel::City as i32,
            rule_id: "accident.deaths".to_owned(),
            rule_version: 2,
            reason: "3 deaths in [3, 10)".to_owned(),
            initial_judgement: false,
            facts: None,
            report: None,
        }),
        units: Some(pb::UnitsAssigned {
            plan_id: "plan.hazchem".to_owned(),
            assignments: vec![pb::Assignment {
                unit_id: "U-1".to_owned(),
                call_sign: "玄武消防1".to_owned(),
                unit_type: "hazmat".to_owned(),
                distance_km: 3.24,
                reason: "nearest available hazmat (3.2 km)".to_owned(),
                reason_codes: vec!["closest_by_eta".to_owned()],
                eta_minutes: 4.3,
                cascade_depth: 0,
            }],
            shortfalls: vec![pb::Shortfall {
                unit_type: "ambulance".to_owned(),
                required: 2,
                assigned: 0,
                reason: "none available".to_owned(),
                reason_codes: vec!["none_available".to_owned()],
                causes: vec![],
            }],
            released_unit_ids: vec![],
        }),
        timeline: vec![pb::TimelineEntry {
            at_unix_ms: at,
            event_type: "reported".to_owned(),
            source_service: "intake".to_owned(),
            description: "reported by Officer Li".to_owned(),
            event_id: "E-1".to_owned(),
        }],
        reported_at_unix_ms: at,
        updated_at_unix_ms: at,
        alert_count: 2,
        open_alert_count: 1,
        recent_alerts: vec![
            pb::LinkedAlert {
                alert_id: "ALR-20261128-000001".to_owned(),
                format: "cap".to_owned(),
                identity: "cenc@cea.gov.cn,EQ-1,2026-11-28T06:20:00+08:00".to_owned(),
                headline: "M5.6 地震".to_owned(),
                state: "open".to_owned(),
                received_at_unix_ms: at,
            },
            pb::LinkedAlert {
                alert_id: "ALR-20261128-000002".to_owned(),
                format: "alertmanager".to_owned(),
                identity: "c0ffee".to_owned(),
                headline: "H2S over limit".to_owned(),
                state: "resolved".to_owned(),
                received_at_unix_ms: at,
            },
        ],
        legal_hold: None,
        personal_data_erased_at_unix_ms: 0,
    }
}

#[derive(Default, Clone)]
struct FakeIntake {
    last_report: Arc<Mutex<Option<pb::ReportIncidentRequest>>>,
    last_update: Arc<Mutex<Option<pb::UpdateIncidentRequest>>>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchIncidentsResponse, Status>> + Send>>;

#[tonic::codegen::async_trait]
impl IntakeService for FakeIntake {
    async fn update_incident(
        &self,
        request: Request<pb::UpdateIncidentRequest>,
    ) -> Result<Response<pb::UpdateIncidentResponse>, Status> {
        let request = request.into_inner();
        *self.last_update.lock().unwrap() = Some(request.clone());
        let facts = request.facts.unwrap_or_default();
        if facts.deaths.is_some_and(|deaths| deaths < 0) {
            return Err(Status::invalid_argument("deaths must not be negative"));
        }
        // The stored facts: 4 serious injuries, merged with the new ones.
        let merged = pb::Facts {
            serious_injuries: facts.serious_injuries.or(Some(4)),
            ..facts
        };
        Ok(Response::new(pb::UpdateIncidentResponse {
            incident_id: request.incident_id,
            duplicate: request.request_id == "seen-before",
            facts: Some(merged),
        }))
    }

    async fn report_incident(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        let request = request.into_inner();
        *self.last_report.lock().unwrap() = Some(request.clone());
        if request.township_code == "999" {
            return Err(Status::invalid_argument("unknown township \"999\""));
        }
        Ok(Response::new(pb::ReportIncidentResponse {
            incident_id: "INC-7".to_owned(),
            duplicate: request.request_id == "seen-before",
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::GetIncidentResponse>, Status> {
        let request = request.into_inner();
        if request.incident_id != "INC-7" {
            return Err(Status::not_found(format!(
                "no incident {}",
                request.incident_id
            )));
        }
        Ok(Response::new(pb::GetIncidentResponse {
            incident: Some(sample_incident()),
        }))
    }

    async fn list_incidents(
        &self,
        _request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let mut ungraded = sample_incident();
        ungraded.id = "INC-8".to_owned();
        ungraded.grading = None;
        ungraded.units = None;
        ungraded.status = pb::IncidentStatus::Reported as i32;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: vec![ungraded, sample_incident()],
        }))
    }

    async fn close_incident(
        &self,
        _request: Request<pb::CloseIncidentRequest>,
    ) -> Result<Response<pb::CloseIncidentResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn set_legal_hold(
        &self,
        _request: Request<pb::SetLegalHoldRequest>,
    ) -> Result<Response<pb::SetLegalHoldResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_incident_events(
        &self,
        _request: Request<pb::ListIncidentEventsRequest>,
    ) -> Result<Response<pb::ListIncidentEventsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    type WatchIncidentsStream = WatchStream;

    async fn watch_incidents(
        &self,
        _request: Request<pb::WatchIncidentsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let events = ["reported", "graded"].map(|event_type| {
            Ok(pb::WatchIncidentsResponse {
                incident: Some(sample_incident()),
                event_type: event_type.to_owned(),
            })
        });
        // Two changes, then a stream that stays open like a real watch.
        let stream = tokio_stream::iter(events).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn spawn_intake() -> (String, Arc<Mutex<Option<pb::ReportIncidentRequest>>>) {
    let (url, intake) = spawn_fake_intake().await;
    (url, intake.last_report)
}

/// The fake intake, with every request it captures.
async fn spawn_fake_intake() -> (String, FakeIntake) {
    let intake = FakeIntake::default();
    let url = spawn_server(
        tonic::transport::Server::builder().add_service(IntakeServiceServer::new(intake.clone())),
    )
    .await;
    (url, intake)
}

#[tokio::test]
async fn status_exits_zero_only_when_all_three_serve() {
    let (intake, escalation, dispatch) = (
        spawn_health(true).await,
        spawn_health(true).await,
        spawn_health(false).await,
    );
    let args = ["status", "--intake", &intake, "--escalation", &escalation];
    let mut all = args.to_vec();
    all.extend(["--dispatch", intake.as_str()]);
    let (result, output) = run_to_string(parse(&all)).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    assert_eq!(output.matches("SERVING").count(), 3, "{output}");

    let mut one_down = args.to_vec();
    one_down.extend(["--dispatch", dispatch.as_str(), "--json"]);
    let (result, output) = run_to_string(parse(&one_down)).await;
    assert_eq!(result.unwrap(), 1);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["all_serving"], false);
    assert_eq!(json["services"][2]["status"], "NOT_SERVING");
    assert_eq!(json["services"][0]["status"], "SERVING");
}

#[tokio::test]
async fn report_sends_the_facts_and_prints_the_incident_id() {
    let (url, last_report) = spawn_intake().await;
    let cli = parse(&[
        "report",
        "--intake",
        &url,
        "--namespace",
        "drill.1",
        "--kind",
        "natural.earthquake",
        "--township",
        "320102001",
        "--injured",
        "4",
        "--magnitude",
        "6.1",
        "--reported-by",
        "Wang",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(output, "reported INC-7\n");
    let sent = last_report.lock().unwrap().clone().unwrap();
    assert_eq!(sent.namespace, "drill.1");
    assert_eq!(sent.reported_by, "Wang");
    assert!(!sent.request_id.is_empty() && sent.request_id.len() <= 128);
    let facts = sent.facts.unwrap();
    assert_eq!(facts.serious_injuries, Some(4));
    assert_eq!(facts.magnitude, Some(6.1));
    assert_eq!(facts.deaths, None);
    assert_eq!((sent.lat, sent.lon), (None, None));

    let cli = parse(&[
        "report",
        "--intake",
        &url,
        "--kind",
        "k",
        "--township",
        "1",
        "--request-id",
        "seen-before",
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["incident_id"], "INC-7");
    assert_eq!(json["duplicate"], true);
    assert_eq!(json["request_id"], "seen-before");
}

#[tokio::test]
async fn a_rejected_report_shows_the_servers_message_and_code() {
    let (url, _) = spawn_intake().await;
    let cli = parse(&[
        "report",
        "--intake",
        &url,
        "--kind",
        "k",
        "--township",
        "999",
    ]);
    let (result, _) = run_to_string(cli).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "intake rejected the report: unknown township \"999\" (INVALID_ARGUMENT)"
    );
    let (result, _) = run_to_string(parse(&["show", "INC-404", "--intake", &url])).await;
    let error = result.unwrap_err();
    assert_eq!(error.grpc_code(), Some(Code::NotFound));
    assert!(
        error
            .to_string()
            .ends_with("no incident INC-404 (NOT_FOUND)"),
        "{error}"
    );
}

#[tokio::test]
async fn show_prints_header_grading_assignments_and_timeline() {
    let (url, _) = spawn_intake().await;
    let cli = parse(&[
        "show",
        "INC-7",
        "--intake",
        &url,
        "--escalation",
        DEAD,
        "--utc",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    for expected in [
        "incident   INC-7",
        "kind       accident.hazardous_chemicals (accident)",
        "township   320102001 (also 320102002)",
        "location   32.0600,118.7900 (reported)",
        "facts      deaths 3, serious injuries 12",
        "status     responding",
        "warning    orange",
        "alerts     2 linked, 1 open at their source",
        "recent alerts (newest last)",
        "ALR-20261128-000002",
        "reported   2026-11-28T06:27:24.123Z by Officer Li",
        "grade   III, response level 3",
        "lead    南京市 (3201, city)",
        "rule    accident.deaths v2",
        "assignments (plan plan.hazchem)",
        "3.2",
        "ambulance: 0 of 2 assigned — none available",
        "TIME (UTC)",
        "11-28 06:27:24  T+00:00:00  REPORTED  intake  reported by Officer Li",
        // Without escalation the timeline says what it lacks instead of failing.
        "(deadlines and acknowledgement not shown: cannot reach escalation",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in\n{output}"
        );
    }

    let cli = parse(&["show", "INC-7", "--intake", &url, "--json"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["grading"]["grade"], "III");
    assert_eq!(json["grading"]["lead_level"], "city");
    assert_eq!(json["status"], "responding");
    assert_eq!(json["class"], "accident");
    assert_eq!(json["facts"]["missing"], serde_json::Value::Null);
    assert_eq!(json["timeline"][0]["at"], "2026-11-28T06:27:24.123Z");
    assert_eq!(json["warning_level"], "orange");
    assert_eq!(json["alert_count"], 2);
    assert_eq!(json["recent_alerts"][1]["state"], "resolved");
}

#[tokio::test]
async fn incidents_prints_one_row_per_incident() {
    let (url, _) = spawn_intake().await;
    let (result, output) = run_to_string(parse(&["incidents", "--intake", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert!(lines[0].starts_with("ID "), "{output}");
    let ungraded: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        ungraded[..6],
        [
            "INC-8",
            "accident.hazardous_chemicals",
            "320102001",
            "-",
            "-",
            "reported"
        ]
    );
    let graded: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        graded[3..],
        [
            "III",
            "南京市",
            "responding",
            "1",
            "(-2)",
            "2026-11-28T06:27:24.123Z"
        ]
    );
}

#[tokio::test]
async fn watch_prints_a_line_per_change_and_stops_after_max_events() {
    let (url, _) = spawn_intake().await;
    let cli = parse(&["watch", "--intake", &url, "--max-events", "2"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(
        output,
        "2026-11-28T06:27:24.123Z INC-7 reported grade=III lead=3201 status=responding\n\
         2026-11-28T06:27:24.123Z INC-7 graded grade=III lead=3201 status=responding\n"
    );

    let cli = parse(&["watch", "--intake", &url, "--json", "--max-events", "1"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(output.lines().count(), 1);
    let json: serde_json::Value = serde_json::from_str(output.trim_end()).unwrap();
    assert_eq!(json["event_type"], "reported");
    assert_eq!(json["incident"]["id"], "INC-7");
}

#[tokio::test]
async fn watch_stops_on_shutdown() {
    let (url, _) = spawn_intake().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut buffer = Vec::new();
        let cli = parse(&["watch", "--intake", &url]);
        let result = musterctl::run_in(cli, &clean_environment(), &mut buffer, async {
            let _ = stopped.await;
        })
        .await;
        (result, buffer)
    });
    stop.send(()).unwrap();
    let (result, _) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("watch stopped within 10 s")
        .unwrap();
    assert_eq!(result.unwrap(), 0);
}

// ---- escalation and dispatch commands ---------------------------------------------------------

#[test]
fn durations_are_compact() {
    assert_eq!(format_duration_ms(850), "850ms");
    assert_eq!(format_duration_ms(45_000), "45s");
    assert_eq!(format_duration_ms(725_000), "12m05s");
    assert_eq!(format_duration_ms(3_900_000), "1h05m");
    assert_eq!(format_duration_ms(183_600_000), "2d03h");
    assert_eq!(format_duration_ms(-45_000), "-45s");
}

#[test]
fn unit_status_events_parse_by_name() {
    for (name, expected) in [
        ("acknowledge", UnitEventArg::Acknowledge),
        ("decline", UnitEventArg::Decline),
        ("arrive", UnitEventArg::Arrive),
        ("stage", UnitEventArg::Stage),
        ("release", UnitEventArg::Release),
        ("clear", UnitEventArg::Clear),
        ("out-of-service", UnitEventArg::OutOfService),
        ("go-out-of-service", UnitEventArg::OutOfService),
        ("return-to-service", UnitEventArg::ReturnToService),
    ] {
        let cli = parse(&["unit-status", "U-1", name]);
        let Command::UnitStatus(args) = cli.command else {
            panic!("not unit-status");
        };
        assert_eq!(args.event, expected, "{name}");
    }
    assert!(Cli::try_parse_from(["musterctl", "unit-status", "U-1", "teleport"]).is_err());
    assert!(Cli::try_parse_from(["musterctl", "escalate", "INC-7"]).is_err());
    assert!(Cli::try_parse_from(["musterctl", "unit-position", "U-1", "--lat", "1"]).is_err());
    let cli = parse(&["unit-position", "U-1", "--lat", "-33.5", "--lon", "-70.6"]);
    let Command::UnitPosition(args) = cli.command else {
        panic!("not unit-position");
    };
    assert_eq!((args.lat, args.lon, args.at_ms), (-33.5, -70.6, None));
}

const NOW: i64 = 1_795_847_244_123;

fn sample_command(incident_id: &str) -> pb::Command {
    pb::Command {
        incident_id: incident_id.to_owned(),
        grade: pb::Grade::Iii as i32,
        lead_jurisdiction_code: "3201".to_owned(),
        lead_jurisdiction_name: "南京市".to_owned(),
        lead_level: pb::JurisdictionLevel::City as i32,
        lead_since_unix_ms: NOW,
        escalation_jurisdiction_code: "32".to_owned(),
        escalation_jurisdiction_name: "江苏省".to_owned(),
        escalation_level: pb::JurisdictionLevel::Province as i32,
        acknowledged: false,
        acknowledged_by: String::new(),
        acknowledged_at_unix_ms: 0,
        ack_due_at_unix_ms: NOW + 900_000,
        escalation_count: 1,
        pending_downgrade: pb::Grade::Unspecified as i32,
        commander_name: String::new(),
    }
}

fn deadline(obligation_id: u32, status: pb::DeadlineStatus, late_by_ms: i64) -> pb::Deadline {
    pb::Deadline {
        incident_id: "INC-7".to_owned(),
        obligation_id,
        rule_id: "production_safety".to_owned(),
        kind: "first".to_owned(),
        from_tier: "county".to_owned(),
        to_tier: "city".to_owned(),
        to_jurisdiction_code: "3201".to_owned(),
        created_at_unix_ms: NOW - 7_200_000,
        due_at_unix_ms: NOW - 3_600_000,
        sent_at_unix_ms: if status == pb::DeadlineStatus::Met {
            NOW - 3_600_000 + late_by_ms
        } else {
            0
        },
        late_by_ms,
        status: status as i32,
    }
}

#[derive(Default, Clone)]
struct FakeEscalation {
    last_ack: Arc<Mutex<Option<pb::AcknowledgeRequest>>>,
    last_downgrade: Captured<pb::ConfirmDowngradeRequest>,
    last_take_command: Captured<pb::TakeCommandRequest>,
    last_skip_report: Captured<pb::SkipLevelReportRequest>,
}

#[tonic::codegen::async_trait]
impl EscalationService for FakeEscalation {
    async fn confirm_downgrade(
        &self,
        request: Request<pb::ConfirmDowngradeRequest>,
    ) -> Result<Response<pb::ConfirmDowngradeResponse>, Status> {
        let request = request.into_inner();
        *self.last_downgrade.lock().unwrap() = Some(request.clone());
        if request.incident_id == "INC-NONE" {
            return Err(Status::failed_precondition(
                "INC-NONE has no pending downgrade",
            ));
        }
        let mut command = sample_command(&request.incident_id);
        command.grade = pb::Grade::Iv as i32;
        Ok(Response::new(pb::ConfirmDowngradeResponse {
            command: Some(command),
        }))
    }

    async fn take_command(
        &self,
        request: Request<pb::TakeCommandRequest>,
    ) -> Result<Response<pb::TakeCommandResponse>, Status> {
        let request = request.into_inner();
        *self.last_take_command.lock().unwrap() = Some(request.clone());
        if request.jurisdiction_code != "32" {
            return Err(Status::failed_precondition(format!(
                "{} is not above the current lead 3201",
                request.jurisdiction_code
            )));
        }
        let mut command = sample_command(&request.incident_id);
        command.lead_jurisdiction_code = "32".to_owned();
        command.lead_jurisdiction_name = "江苏省".to_owned();
        command.lead_level = pb::JurisdictionLevel::Province as i32;
        command.commander_name = request.commander_name;
        Ok(Response::new(pb::TakeCommandResponse {
            command: Some(command),
        }))
    }

    async fn list_jurisdictions(
        &self,
        _request: Request<pb::ListJurisdictionsRequest>,
    ) -> Result<Response<pb::ListJurisdictionsResponse>, Status> {
        // Two cities of one province, each with a county and townships.
        let jurisdiction = |code: &str, parent: &str| pb::Jurisdiction {
            code: code.to_owned(),
            name: format!("J{code}"),
            level: pb::JurisdictionLevel::Unspecified as i32,
            parent_code: parent.to_owned(),
            centroid: None,
            density: pb::DensityClass::Unspecified as i32,
        };
        Ok(Response::new(pb::ListJurisdictionsResponse {
            jurisdictions: vec![
                jurisdiction("32", ""),
                jurisdiction("3201", "32"),
                jurisdiction("320102", "3201"),
                jurisdiction("320102001", "320102"),
                jurisdiction("320102002", "320102"),
                jurisdiction("3202", "32"),
                jurisdiction("320201", "3202"),
                jurisdiction("320201001", "320201"),
            ],
        }))
    }

    async fn get_grading(
        &self,
        _request: Request<pb::GetGradingRequest>,
    ) -> Result<Response<pb::GetGradingResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        let request = request.into_inner();
        *self.last_ack.lock().unwrap() = Some(request.clone());
        if request.incident_id == "INC-ACKED" {
            return Err(Status::failed_precondition(
                "INC-ACKED is already acknowledged",
            ));
        }
        let mut command = sample_command(&request.incident_id);
        command.acknowledged = true;
        command.acknowledged_by = request.officer;
        command.acknowledged_at_unix_ms = NOW;
        command.ack_due_at_unix_ms = 0;
        Ok(Response::new(pb::AcknowledgeResponse {
            command: Some(command),
        }))
    }

    async fn escalate(
        &self,
        request: Request<pb::EscalateRequest>,
    ) -> Result<Response<pb::EscalateResponse>, Status> {
        let request = request.into_inner();
        if request.reason.is_empty() {
            return Err(Status::invalid_argument("reason is required"));
        }
        Ok(Response::new(pb::EscalateResponse {
            command: Some(sample_command(&request.incident_id)),
        }))
    }

    async fn list_deadlines(
        &self,
        _request: Request<pb::ListDeadlinesRequest>,
    ) -> Result<Response<pb::ListDeadlinesResponse>, Status> {
        Ok(Response::new(pb::ListDeadlinesResponse {
            deadlines: vec![
                deadline(1, pb::DeadlineStatus::Met, 0),
                deadline(2, pb::DeadlineStatus::Late, 3_900_000),
                deadline(3, pb::DeadlineStatus::Met, 725_000),
                deadline(4, pb::DeadlineStatus::Open, 0),
            ],
        }))
    }

    async fn submit_report(
        &self,
        request: Request<pb::SubmitReportRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let request = request.into_inner();
        let mut met = deadline(request.obligation_id, pb::DeadlineStatus::Met, 725_000);
        met.incident_id = request.incident_id;
        Ok(Response::new(pb::SubmitReportResponse {
            deadline: Some(met),
        }))
    }

    async fn get_command(
        &self,
        request: Request<pb::GetCommandRequest>,
    ) -> Result<Response<pb::GetCommandResponse>, Status> {
        Ok(Response::new(pb::GetCommandResponse {
            command: Some(sample_command(&request.into_inner().incident_id)),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let incident_id = request.into_inner().incident_id;
        let notification =
            |recipient: &str, state: &str, status: u32, error: &str| pb::Notification {
                request: Some(pb::NotificationRequested {
                    notification_id: format!("NTF-{recipient}"),
                    namespace: "live".into(),
                    incident_id: incident_id.clone(),
                    jurisdiction_code: "390202".into(),
                    recipient_name: recipient.into(),
                    role: "duty_officer".into(),
                    channel: "webhook".into(),
                    address: "duty-390202".into(),
                    message: "INC-7 graded".into(),
                    reason: "graded".into(),
                    drill: false,
                    requested_at_unix_ms: 1_795_843_644_123,
                    source_event_id: "e-1".into(),
                }),
                state: state.into(),
                attempts: 1,
                last_status_code: status,
                last_error: error.into(),
                finished_at_unix_ms: 1_795_843_645_000,
                sink: "webhook".into(),
            };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: vec![
                notification("Zhou", "delivered", 204, ""),
                notification("Wu", "failed", 500, "the webhook answered 500"),
            ],
        }))
    }

    async fn skip_level_report(
        &self,
        request: Request<pb::SkipLevelReportRequest>,
    ) -> Result<Response<pb::SkipLevelReportResponse>, Status> {
        let request = request.into_inner();
        *self.last_skip_report.lock().unwrap() = Some(request.clone());
        if request.to_jurisdiction != "32" {
            return Err(Status::failed_precondition(format!(
                "{} is not above the parent 3201 of {}",
                request.to_jurisdiction, request.from_jurisdiction
            )));
        }
        let mut met = deadline(9, pb::DeadlineStatus::Met, 0);
        met.incident_id = request.incident_id;
        met.kind = "skip_level".to_owned();
        met.to_tier = "province".to_owned();
        met.to_jurisdiction_code = "32".to_owned();
        met.due_at_unix_ms = NOW;
        met.sent_at_unix_ms = NOW;
        Ok(Response::new(pb::SkipLevelReportResponse {
            deadline: Some(met),
            skipped_jurisdiction_codes: vec!["3201".to_owned()],
        }))
    }
}

async fn spawn_escalation() -> (String, Arc<Mutex<Option<pb::AcknowledgeRequest>>>) {
    let (url, escalation) = spawn_fake_escalation().await;
    (url, escalation.last_ack)
}

/// The fake escalation service, with every request it captures.
async fn spawn_fake_escalation() -> (String, FakeEscalation) {
    let escalation = FakeEscalation::default();
    let url = spawn_server(
        tonic::transport::Server::builder()
            .add_service(EscalationServiceServer::new(escalation.clone())),
    )
    .await;
    (url, escalation)
}

fn sample_unit(id: &str, status: pb::UnitStatus) -> pb::Unit {
    pb::Unit {
        id: id.to_owned(),
        call_sign: "Haz 1".to_owned(),
        unit_type: "hazmat".to_owned(),
        home_township_code: "320102001".to_owned(),
        jurisdiction_code: "320102".to_owned(),
        position: Some(pb::GeoPoint {
            lat: 32.06,
            lon: 118.79,
        }),
        status: status as i32,
        incident_id: "INC-7".to_owned(),
        capabilities: vec!["hazmat_level_a".to_owned()],
        crew_size: 4,
        position_at_unix_ms: NOW,
        position_age_ms: 192_000,
        position_stale: false,
        status_since_unix_ms: NOW,
        out_of_service_reason: String::new(),
        eta_minutes: 6.3,
    }
}

#[derive(Default)]
struct FakeDispatch {
    last_status: Arc<Mutex<Option<pb::UpdateUnitStatusRequest>>>,
    last_position: Arc<Mutex<Option<pb::ReportPositionRequest>>>,
}

#[tonic::codegen::async_trait]
impl DispatchService for FakeDispatch {
    async fn list_units(
        &self,
        _request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let mut stale = sample_unit("U-2", pb::UnitStatus::OutOfService);
        stale.incident_id = String::new();
        stale.out_of_service_reason = "pump repair".to_owned();
        stale.position_age_ms = 7_500_000;
        stale.position_stale = true;
        stale.eta_minutes = 0.0;
        Ok(Response::new(pb::ListUnitsResponse {
            units: vec![sample_unit("U-1", pb::UnitStatus::OnScene), stale],
        }))
    }

    async fn get_assignments(
        &self,
        _request: Request<pb::GetAssignmentsRequest>,
    ) -> Result<Response<pb::GetAssignmentsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn register_unit(
        &self,
        _request: Request<pb::RegisterUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_unit(
        &self,
        _request: Request<pb::UpdateUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn retire_unit(
        &self,
        _request: Request<pb::RetireUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_unit_status(
        &self,
        request: Request<pb::UpdateUnitStatusRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let request = request.into_inner();
        *self.last_status.lock().unwrap() = Some(request.clone());
        if request.event == pb::UnitStatusEvent::Clear as i32 {
            return Err(Status::failed_precondition(
                "cannot clear U-1: on_scene → available is not a transition (release first)",
            ));
        }
        Ok(Response::new(pb::UnitResponse {
            unit: Some(sample_unit(&request.unit_id, pb::UnitStatus::Enroute)),
        }))
    }

    async fn report_position(
        &self,
        request: Request<pb::ReportPositionRequest>,
    ) -> Result<Response<pb::ReportPositionResponse>, Status> {
        let request = request.into_inner();
        *self.last_position.lock().unwrap() = Some(request.clone());
        let mut unit = sample_unit(&request.unit_id, pb::UnitStatus::Enroute);
        let applied = request.at_unix_ms >= NOW;
        if applied {
            unit.position = Some(pb::GeoPoint {
                lat: request.lat,
                lon: request.lon,
            });
            unit.position_at_unix_ms = request.at_unix_ms;
        }
        Ok(Response::new(pb::ReportPositionResponse {
            applied,
            unit: Some(unit),
        }))
    }

    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let request = request.into_inner();
        if request.incident_id != "INC-7" {
            return Err(Status::not_found("dispatch has no record of incident"));
        }
        Ok(Response::new(pb::RecommendResponse {
            plan_id: "hazchem-II".to_owned(),
            requirements: vec![],
            candidates: vec![pb::Assignment {
                unit_id: "GB-HAZ-1".to_owned(),
                call_sign: "Gangbei Hazmat 1".to_owned(),
                unit_type: "hazmat".to_owned(),
                distance_km: 0.53,
                reason: "nearest available hazmat".to_owned(),
                reason_codes: vec![
                    "closest_by_eta".to_owned(),
                    "outside_jurisdiction".to_owned(),
                ],
                eta_minutes: 0.92,
                cascade_depth: 1,
            }],
            shortfalls: vec![pb::Shortfall {
                unit_type: "hazmat".to_owned(),
                required: 4,
                assigned: 1,
                reason: "only 1 of 4".to_owned(),
                reason_codes: vec!["none_available".to_owned(), "busy".to_owned()],
                causes: vec![pb::ShortfallCause {
                    code: "busy".to_owned(),
                    count: 3,
                }],
            }],
        }))
    }

    async fn assign(
        &self,
        request: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        let request = request.into_inner();
        if request.unit_id == "U-BUSY" {
            return Err(Status::failed_precondition(
                "unit \"U-BUSY\" is Dispatched on incident INC-1, not Available; it cannot be assigned",
            ));
        }
        Ok(Response::new(pb::AssignResponse {
            unit: Some(sample_unit(&request.unit_id, pb::UnitStatus::Dispatched)),
            assignment: None,
        }))
    }

    async fn acknowledge_assignment(
        &self,
        request: Request<pb::AcknowledgeAssignmentRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(pb::UnitResponse {
            unit: Some(sample_unit(&request.unit_id, pb::UnitStatus::Enroute)),
        }))
    }

    async fn decline_assignment(
        &self,
        _request: Request<pb::DeclineAssignmentRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn release_unit(
        &self,
        _request: Request<pb::ReleaseUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn replay_recommendations(
        &self,
        _request: Request<pb::ReplayRecommendationsRequest>,
    ) -> Result<Response<pb::ReplayRecommendationsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_mutual_aid(
        &self,
        request: Request<pb::ListMutualAidRequest>,
    ) -> Result<Response<pb::ListMutualAidResponse>, Status> {
        let incident_id = request.into_inner().incident_id;
        let jurisdiction = |code: &str, name: &str| pb::JurisdictionRef {
            code: code.into(),
            name: name.into(),
            level: pb::JurisdictionLevel::County as i32,
        };
        Ok(Response::new(pb::ListMutualAidResponse {
            requests: vec![
                pb::MutualAidRequest {
                    request_id: format!("{incident_id}-MA001"),
                    incident_id: incident_id.clone(),
                    from: Some(jurisdiction("390121", "Qingxi")),
                    to: Some(jurisdiction("390102", "Donghu")),
                    resource_type: "hazmat".into(),
                    quantity: 2,
                    state: "committed".into(),
                    partial: true,
                    committed_unit_ids: vec!["DH-HAZ-1".into()],
                    cascade_depth: 1,
                    ..Default::default()
                },
                pb::MutualAidRequest {
                    request_id: format!("{incident_id}-MA002"),
                    incident_id,
                    from: Some(jurisdiction("390121", "Qingxi")),
                    to: Some(jurisdiction("390200", "Gangbei")),
                    resource_type: "hazmat".into(),
                    quantity: 1,
                    state: "declined".into(),
                    decline_code: "reserve".into(),
                    decline_reason: "1 hazmat available, all kept in reserve".into(),
                    cascade_depth: 2,
                    ..Default::default()
                },
            ],
        }))
    }
}

type Captured<T> = Arc<Mutex<Option<T>>>;

async fn spawn_dispatch() -> (
    String,
    Captured<pb::UpdateUnitStatusRequest>,
    Captured<pb::ReportPositionRequest>,
) {
    let dispatch = FakeDispatch::default();
    let (last_status, last_position) =
        (dispatch.last_status.clone(), dispatch.last_position.clone());
    let url = spawn_server(
        tonic::transport::Server::builder().add_service(DispatchServiceServer::new(dispatch)),
    )
    .await;
    (url, last_status, last_position)
}

#[tokio::test]
async fn ack_sends_the_officer_and_prints_the_command_state() {
    let (url, last_ack) = spawn_escalation().await;
    let cli = parse(&[
        "ack",
        "INC-7",
        "--officer",
        "Wang",
        "--escalation",
        &url,
        "--namespace",
        "drill.3",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let sent = last_ack.lock().unwrap().clone().unwrap();
    assert_eq!(sent.namespace, "drill.3");
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.officer, "Wang");
    for expected in [
        "acknowledged INC-7 as Wang; escalation chain stopped",
        "grade            III",
        "lead             南京市 (3201, city) since 2026-11-28T06:27:24.123Z",
        "asked            江苏省 (32, province)",
        "acknowledgement  acknowledged by Wang at 2026-11-28T06:27:24.123Z",
        "escalations      1",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in\n{output}"
        );
    }

    // Without --officer the name is not empty (it is $USER, or a fallback).
    let (result, _) = run_to_string(parse(&["ack", "INC-7", "--escalation", &url])).await;
    assert_eq!(result.unwrap(), 0);
    assert!(!last_ack.lock().unwrap().clone().unwrap().officer.is_empty());

    let cli = parse(&[
        "ack",
        "INC-ACKED",
        "--officer",
        "Wang",
        "--escalation",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "escalation refused the acknowledgement: INC-ACKED is already acknowledged \
         (FAILED_PRECONDITION)"
    );
    assert_eq!(output, "");
}

#[tokio::test]
async fn command_and_escalate_show_who_must_acknowledge_by_when() {
    let (url, _) = spawn_escalation().await;
    let (result, output) = run_to_string(parse(&["command", "INC-7", "--escalation", &url])).await;
    assert_eq!(result.unwrap(), 0);
    assert!(
        output.contains("江苏省 (32, province) must acknowledge by 2026-11-28T06:42:24.123Z"),
        "{output}"
    );

    let cli = parse(&[
        "escalate",
        "INC-7",
        "--reason",
        "fire spreading",
        "--escalation",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert!(
        output.starts_with("escalated INC-7 to 江苏省 (32, province)\n"),
        "{output}"
    );

    let cli = parse(&["command", "INC-7", "--escalation", &url, "--json"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["incident_id"], "INC-7");
    assert_eq!(json["grade"], "III");
    assert_eq!(json["lead_level"], "city");
    assert_eq!(json["escalation_jurisdiction_code"], "32");
    assert_eq!(json["acknowledged"], false);
    assert_eq!(json["acknowledged_by"], serde_json::Value::Null);
    assert_eq!(json["ack_due_at"], "2026-11-28T06:42:24.123Z");
    assert_eq!(json["escalation_count"], 1);
}

#[tokio::test]
async fn deadlines_table_shows_late_obligations_clearly() {
    let (url, _) = spawn_escalation().await;
    let (result, output) = run_to_string(parse(&["deadlines", "--escalation", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 5, "{output}");
    assert!(
        lines[0].starts_with("INCIDENT  OBLIGATION  KIND"),
        "{output}"
    );
    assert!(lines[0].contains("FROM → TO"), "{output}");
    assert!(lines[0].ends_with("LATE BY"), "{output}");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let on_time = cells(lines[1]);
    assert_eq!(
        on_time,
        [
            "INC-7",
            "1",
            "first",
            "county",
            "→",
            "city",
            "(3201)",
            "2026-11-28T05:27:24.123Z",
            "2026-11-28T05:27:24.123Z",
            "met",
            "-"
        ]
    );
    let late = cells(lines[2]);
    assert_eq!(late[8..], ["-", "LATE", "1h05m", "so", "far"], "{output}");
    let met_late = cells(lines[3]);
    assert_eq!(met_late[9..], ["met", "LATE", "12m05s"], "{output}");
    let open = cells(lines[4]);
    assert_eq!(open[8..], ["-", "open", "-"], "{output}");

    let cli = parse(&["deadlines", "INC-7", "--escalation", &url, "--json"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json[1]["status"], "late");
    assert_eq!(json[1]["late_by_ms"], 3_900_000);
    assert_eq!(json[1]["sent_at"], serde_json::Value::Null);
    assert_eq!(json[0]["to_jurisdiction_code"], "3201");
}

#[tokio::test]
async fn report_filed_says_how_late_the_report_was() {
    let (url, _) = spawn_escalation().await;
    let cli = parse(&["report-filed", "INC-7", "3", "--escalation", &url]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(
        output,
        "obligation 3 of INC-7 (first report, county → city (3201)) met at \
         2026-11-28T05:39:29.123Z: LATE by 12m05s\n"
    );
}

#[tokio::test]
async fn skip_report_sends_both_levels_officer_and_reason_and_names_the_skipped_levels() {
    let (url, escalation) = spawn_fake_escalation().await;
    let cli = parse(&[
        "skip-report",
        "INC-7",
        "--from",
        "320102",
        "--to",
        "32",
        "--officer",
        "王芳",
        "--reason",
        "city line down",
        "--escalation",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(
        output,
        "skip-level report recorded for INC-7 as obligation 9 (county → province (32), to 32), past 3201\n"
    );
    let sent = escalation.last_skip_report.lock().unwrap().clone().unwrap();
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.from_jurisdiction, "320102");
    assert_eq!(sent.to_jurisdiction, "32");
    assert_eq!(sent.officer, "王芳");
    assert_eq!(sent.reason, "city line down");
    assert_eq!(sent.namespace, "live");

    // --json carries the obligation and the skipped levels.
    let cli = parse(&[
        "skip-report",
        "INC-7",
        "--from",
        "320102",
        "--to",
        "32",
        "--officer",
        "王芳",
        "--reason",
        "city line down",
        "--escalation",
        &url,
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["kind"], "skip_level");
    assert_eq!(json["skipped_jurisdiction_codes"][0], "3201");

    // A refusal is the server's sentence; a missing flag is a usage error.
    let cli = parse(&[
        "skip-report",
        "INC-7",
        "--from",
        "320102",
        "--to",
        "3201",
        "--officer",
        "王芳",
        "--reason",
        "x",
        "--escalation",
        &url,
    ]);
    let (result, _) = run_to_string(cli).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("not above the parent 3201"), "{error}");
    assert!(Cli::try_parse_from(["musterctl", "skip-report", "INC-7", "--from", "1"]).is_err());
}

#[tokio::test]
async fn unit_status_sends_the_event_and_a_refusal_is_one_line_with_the_code() {
    let (url, last_status, _) = spawn_dispatch().await;
    let cli = parse(&[
        "unit-status",
        "U-1",
        "acknowledge",
        "--incident",
        "INC-7",
        "--dispatch",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(output, "unit U-1 (Haz 1) is enroute for INC-7\n");
    let sent = last_status.lock().unwrap().clone().unwrap();
    assert_eq!(sent.unit_id, "U-1");
    assert_eq!(sent.event, pb::UnitStatusEvent::Acknowledge as i32);
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.namespace, "live");

    let cli = parse(&[
        "unit-status",
        "U-1",
        "out-of-service",
        "--reason",
        "pump repair",
        "--dispatch",
        &url,
    ]);
    let (result, _) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let sent = last_status.lock().unwrap().clone().unwrap();
    assert_eq!(sent.event, pb::UnitStatusEvent::GoOutOfService as i32);
    assert_eq!(sent.reason, "pump repair");
    assert_eq!(sent.incident_id, "");

    let (result, output) =
        run_to_string(parse(&["unit-status", "U-1", "clear", "--dispatch", &url])).await;
    let error = result.unwrap_err();
    assert_eq!(error.grpc_code(), Some(Code::FailedPrecondition));
    let line = error.to_string();
    assert_eq!(
        line,
        "dispatch refused the status change: cannot clear U-1: on_scene → available is not a \
         transition (release first) (FAILED_PRECONDITION)"
    );
    assert!(!line.contains('\n'));
    assert_eq!(output, "");
}

#[tokio::test]
async fn unit_position_sends_the_fix_and_reports_whether_it_was_applied() {
    let (url, _, last_position) = spawn_dispatch().await;
    let at = (NOW + 1_000).to_string();
    let cli = parse(&[
        "unit-position",
        "U-1",
        "--lat",
        "32.1",
        "--lon",
        "118.8",
        "--at-ms",
        &at,
        "--dispatch",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(
        output,
        "position of U-1 recorded: 32.1000,118.8000 at 2026-11-28T06:27:25.123Z\n"
    );
    let sent = last_position.lock().unwrap().clone().unwrap();
    assert_eq!(
        (sent.lat, sent.lon, sent.at_unix_ms),
        (32.1, 118.8, NOW + 1_000)
    );

    let cli = parse(&[
        "unit-position",
        "U-1",
        "--lat",
        "32.1",
        "--lon",
        "118.8",
        "--at-ms",
        "5",
        "--dispatch",
        &url,
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["applied"], false);
    assert_eq!(json["unit"]["position"]["lat"], 32.06);
}

#[tokio::test]
async fn units_shows_all_states_position_age_and_stale_flag() {
    let (url, _, _) = spawn_dispatch().await;
    let (result, output) = run_to_string(parse(&["units", "--dispatch", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert!(lines[0].ends_with("POSITION AGE"), "{output}");
    assert!(lines[1].contains("on_scene"), "{output}");
    assert!(lines[0].contains("INCIDENT  ETA"), "{output}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(
        cells.ends_with(&["INC-7", "6.3", "min", "3m12s"]),
        "the board shows incident, ETA and position age: {output}"
    );
    assert!(
        lines[2].contains("out_of_service (pump repair)"),
        "{output}"
    );
    assert!(lines[2].ends_with("2h05m STALE"), "{output}");

    let (result, output) = run_to_string(parse(&["units", "--dispatch", &url, "--json"])).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json[0]["status"], "on_scene");
    assert_eq!(json[0]["position_age_ms"], 192_000);
    assert_eq!(json[1]["position_stale"], true);
    assert_eq!(json[1]["incident_id"], serde_json::Value::Null);
    assert_eq!(json[1]["out_of_service_reason"], "pump repair");
}

#[tokio::test]
async fn update_sends_the_new_facts_and_prints_them() {
    let (url, intake) = spawn_fake_intake().await;
    let cli = parse(&[
        "update",
        "INC-7",
        "--intake",
        &url,
        "--namespace",
        "drill.2",
        "--deaths",
        "2",
        "--loss",
        "1500000",
        "--summary",
        "roof collapsed",
        "--updated-by",
        "Li",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    assert_eq!(
        output,
        "updated INC-7: deaths 2, serious injuries 4, direct loss 1500000 CNY\n"
    );
    let sent = intake.last_update.lock().unwrap().clone().unwrap();
    assert_eq!(sent.namespace, "drill.2");
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.updated_by, "Li");
    assert_eq!(sent.summary.as_deref(), Some("roof collapsed"));
    assert!(!sent.request_id.is_empty() && sent.request_id.len() <= 128);
    let facts = sent.facts.unwrap();
    assert_eq!(facts.deaths, Some(2));
    assert_eq!(facts.direct_loss_cny, Some(1_500_000));
    assert_eq!((facts.missing, facts.serious_injuries), (None, None));
    assert_eq!(facts.magnitude, None);

    // Defaults: no summary sent, an updater name, a generated id; --json with a retry id.
    let cli = parse(&[
        "update",
        "INC-7",
        "--intake",
        &url,
        "--magnitude",
        "5.2",
        "--request-id",
        "seen-before",
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let sent = intake.last_update.lock().unwrap().clone().unwrap();
    assert_eq!(sent.summary, None);
    assert!(!sent.updated_by.is_empty());
    assert_eq!(sent.request_id, "seen-before");
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["incident_id"], "INC-7");
    assert_eq!(json["duplicate"], true);
    assert_eq!(json["request_id"], "seen-before");
    assert_eq!(json["facts"]["magnitude"], 5.2);
    assert_eq!(json["facts"]["serious_injuries"], 4);

    // A negative number parses, so the server's validation message is what shows.
    let cli = parse(&["update", "INC-7", "--intake", &url, "--deaths", "-1"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "intake rejected the update: deaths must not be negative (INVALID_ARGUMENT)"
    );
    assert_eq!(output, "");
}

#[tokio::test]
async fn confirm_downgrade_sends_the_officer_and_prints_the_new_grade() {
    let (url, escalation) = spawn_fake_escalation().await;
    let cli = parse(&[
        "confirm-downgrade",
        "INC-7",
        "--officer",
        "Zhao",
        "--escalation",
        &url,
        "--namespace",
        "drill.4",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let sent = escalation.last_downgrade.lock().unwrap().clone().unwrap();
    assert_eq!(sent.namespace, "drill.4");
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.officer, "Zhao");
    assert!(
        output.starts_with("downgraded INC-7 to grade IV as Zhao\n"),
        "{output}"
    );
    assert!(output.contains("grade            IV"), "{output}");

    let cli = parse(&["confirm-downgrade", "INC-7", "--escalation", &url, "--json"]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    assert!(
        !escalation
            .last_downgrade
            .lock()
            .unwrap()
            .clone()
            .unwrap()
            .officer
            .is_empty()
    );
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["grade"], "IV");
    assert_eq!(json["pending_downgrade"], serde_json::Value::Null);

    let cli = parse(&["confirm-downgrade", "INC-NONE", "--escalation", &url]);
    let (result, _) = run_to_string(cli).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "escalation refused the downgrade: INC-NONE has no pending downgrade \
         (FAILED_PRECONDITION)"
    );
}

#[tokio::test]
async fn take_command_sends_the_jurisdiction_and_commander_and_prints_the_new_lead() {
    let (url, escalation) = spawn_fake_escalation().await;
    let cli = parse(&[
        "take-command",
        "INC-7",
        "--jurisdiction",
        "32",
        "--commander",
        "Chen",
        "--escalation",
        &url,
        "--namespace",
        "drill.5",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let sent = escalation
        .last_take_command
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(sent.namespace, "drill.5");
    assert_eq!(sent.incident_id, "INC-7");
    assert_eq!(sent.jurisdiction_code, "32");
    assert_eq!(sent.commander_name, "Chen");
    assert!(
        output.starts_with("江苏省 (32, province) now leads INC-7\n"),
        "{output}"
    );
    assert!(output.contains("commander        Chen"), "{output}");

    let cli = parse(&[
        "take-command",
        "INC-7",
        "--jurisdiction",
        "32",
        "--escalation",
        &url,
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let sent = escalation
        .last_take_command
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(sent.commander_name, "");
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["lead_jurisdiction_code"], "32");
    assert_eq!(json["lead_level"], "province");
    assert_eq!(json["commander_name"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_refused_take_command_is_one_line_with_the_code() {
    let (url, _) = spawn_fake_escalation().await;
    let cli = parse(&[
        "take-command",
        "INC-7",
        "--jurisdiction",
        "320102",
        "--escalation",
        &url,
    ]);
    let (result, output) = run_to_string(cli).await;
    let error = result.unwrap_err();
    assert_eq!(error.grpc_code(), Some(Code::FailedPrecondition));
    assert_eq!(
        error.to_string(),
        "escalation refused the handover: 320102 is not above the current lead 3201 \
         (FAILED_PRECONDITION)"
    );
    assert!(!error.to_string().contains('\n'));
    assert_eq!(output, "");

    // --jurisdiction is required.
    assert!(Cli::try_parse_from(["musterctl", "take-command", "INC-7"]).is_err());
}

#[tokio::test]
async fn recommend_shows_ranked_units_with_reasons_and_shortfalls() {
    let (url, _, _) = spawn_dispatch().await;
    let (result, output) = run_to_string(parse(&["recommend", "INC-7", "--dispatch", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines[0], "plan hazchem-II (dry run, nothing booked)",
        "{output}"
    );
    assert!(
        lines[1].starts_with("UNIT") && lines[1].ends_with("REASONS"),
        "{output}"
    );
    assert!(lines[2].contains("GB-HAZ-1"), "{output}");
    assert!(
        lines[2].contains("0.9 min") && lines[2].contains("0.5 km"),
        "{output}"
    );
    assert!(
        lines[2].ends_with("closest_by_eta, outside_jurisdiction, cascade depth 1"),
        "{output}"
    );
    assert_eq!(
        lines[3], "short 3 of 4 hazmat: none_available (busy 3)",
        "{output}"
    );

    let (result, output) =
        run_to_string(parse(&["recommend", "INC-7", "--json", "--dispatch", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(
        json["candidates"][0]["reason_codes"][1],
        "outside_jurisdiction"
    );
    assert_eq!(json["shortfalls"][0]["causes"][0][1], 3);

    // A grade the CLI does not know is a usage error before any call.
    assert!(
        Cli::try_parse_from([
            "musterctl",
            "recommend",
            "--kind",
            "k",
            "--township",
            "1",
            "--grade",
            "V"
        ])
        .is_err()
    );
}

#[tokio::test]
async fn assign_books_a_unit_and_a_busy_one_is_refused_in_one_line() {
    let (url, _, _) = spawn_dispatch().await;
    let (result, output) = run_to_string(parse(&[
        "assign",
        "INC-7",
        "U-1",
        "--by",
        "Li",
        "--dispatch",
        &url,
    ]))
    .await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(output, "unit U-1 (Haz 1) is dispatched for INC-7\n");
    let (result, output) =
        run_to_string(parse(&["assign", "INC-7", "U-BUSY", "--dispatch", &url])).await;
    let error = result.unwrap_err();
    assert_eq!(error.grpc_code(), Some(Code::FailedPrecondition));
    assert!(error.to_string().contains("Dispatched"), "{error}");
    assert_eq!(output, "");

    let (result, output) = run_to_string(parse(&[
        "unit-ack",
        "U-1",
        "--incident",
        "INC-7",
        "--dispatch",
        &url,
    ]))
    .await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(output, "unit U-1 (Haz 1) is enroute for INC-7\n");
}

#[tokio::test]
async fn mutual_aid_lists_requests_with_their_answers_and_units() {
    let (url, _, _) = spawn_dispatch().await;
    let (result, output) = run_to_string(parse(&["mutual-aid", "INC-7", "--dispatch", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    for header in ["REQUEST", "FROM", "TO", "TYPE", "QTY", "STATE", "UNITS"] {
        assert!(lines[0].contains(header), "{output}");
    }
    assert!(
        lines[1].contains("INC-7-MA001")
            && lines[1].contains("390121 Qingxi")
            && lines[1].contains("390102 Donghu")
            && lines[1].contains("committed (partial)")
            && lines[1].contains("DH-HAZ-1"),
        "{output}"
    );
    assert!(lines[2].contains("declined: reserve"), "{output}");

    let (result, output) = run_to_string(parse(&[
        "mutual-aid",
        "INC-7",
        "--dispatch",
        &url,
        "--json",
    ]))
    .await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json[0]["committed_unit_ids"][0], "DH-HAZ-1");
    assert_eq!(json[1]["decline_code"], "reserve");
}

#[tokio::test]
async fn notifications_lists_recipients_and_delivery_state() {
    let (url, _) = spawn_escalation().await;
    let (result, output) =
        run_to_string(parse(&["notifications", "INC-7", "--escalation", &url])).await;
    assert_eq!(result.unwrap(), 0);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert!(lines[0].starts_with("REQUESTED"), "{output}");
    assert!(
        lines[1].contains("Zhou")
            && lines[1].contains("delivered")
            && lines[1].contains("webhook 204"),
        "{output}"
    );
    assert!(
        lines[2].contains("failed") && lines[2].contains("the webhook answered 500"),
        "{output}"
    );

    let (result, output) = run_to_string(parse(&[
        "notifications",
        "INC-7",
        "--escalation",
        &url,
        "--json",
    ]))
    .await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json[0]["recipient"], "Zhou");
    assert_eq!(json[1]["state"], "failed");
    assert_eq!(json[1]["last_status_code"], 500);
}
