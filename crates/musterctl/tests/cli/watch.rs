//! `watch` filters: the pure matching, and a filtered watch against a fake stream.

use clap::Parser;
use muster_proto::v1 as pb;
use muster_proto::v1::intake_service_server::{IntakeService, IntakeServiceServer};
use musterctl::view::{JurisdictionView, WatchEventView};
use musterctl::watch_filter::{WatchFilter, subtree};
use musterctl::{Command, WatchArgs};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::{
    DEAD, WatchStream, parse, run_to_string, sample_incident, spawn_fake_escalation, spawn_server,
};

/// An incident of the given id, grade, class, status, lead and township.
fn incident(
    id: &str,
    grade: pb::Grade,
    class: pb::IncidentClass,
    status: pb::IncidentStatus,
    lead: &str,
    township: &str,
) -> pb::Incident {
    let mut incident = sample_incident();
    incident.id = id.to_owned();
    incident.status = status as i32;
    let report = incident.report.as_mut().unwrap();
    report.class = class as i32;
    report.township_code = township.to_owned();
    report.other_township_codes.clear();
    match grade {
        pb::Grade::Unspecified => incident.grading = None,
        grade => {
            let grading = incident.grading.as_mut().unwrap();
            grading.grade = grade as i32;
            grading.lead_jurisdiction_code = lead.to_owned();
        }
    }
    incident
}

/// The changes the fake streams, in order.
fn changes() -> Vec<(&'static str, pb::Incident)> {
    use pb::Grade::{Ii, Iii, Iv, Unspecified};
    use pb::IncidentClass::{Accident, NaturalDisaster, PublicHealth};
    use pb::IncidentStatus::{Closed, Graded, Reported, Responding};
    vec![
        (
            "reported",
            incident("INC-1", Unspecified, Accident, Reported, "", "320102001"),
        ),
        (
            "graded",
            incident("INC-1", Ii, Accident, Graded, "32", "320102001"),
        ),
        (
            "graded",
            incident("INC-2", Iv, NaturalDisaster, Graded, "320201", "320201001"),
        ),
        (
            "escalated",
            incident("INC-2", Iv, NaturalDisaster, Graded, "320201", "320201001"),
        ),
        (
            "units_assigned",
            incident("INC-3", Iii, PublicHealth, Responding, "3201", "320102002"),
        ),
        (
            "closed",
            incident("INC-2", Iv, NaturalDisaster, Closed, "320201", "320201001"),
        ),
    ]
}

#[derive(Clone, Default)]
struct StreamingIntake;

#[tonic::codegen::async_trait]
impl IntakeService for StreamingIntake {
    async fn report_incident(
        &self,
        _request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_incident(
        &self,
        _request: Request<pb::UpdateIncidentRequest>,
    ) -> Result<Response<pb::UpdateIncidentResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_incident(
        &self,
        _request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::GetIncidentResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_incidents(
        &self,
        _request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
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
        let messages: Vec<_> = changes()
            .into_iter()
            .map(|(event_type, incident)| {
                Ok(pb::WatchIncidentsResponse {
                    incident: Some(incident),
                    event_type: event_type.to_owned(),
                })
            })
            .collect();
        // The stream ends after the changes, so an unfiltered watch ends too.
        Ok(Response::new(Box::pin(
            tokio_stream::iter(messages).chain(tokio_stream::empty()),
        )))
    }
}

fn watch_args(args: &[&str]) -> WatchArgs {
    let mut all = vec!["watch"];
    all.extend_from_slice(args);
    match parse(&all).command {
        Command::Watch(args) => args,
        other => panic!("not watch: {other:?}"),
    }
}

fn tree() -> Vec<JurisdictionView> {
    let jurisdiction = |code: &str, parent: Option<&str>| JurisdictionView {
        code: code.to_owned(),
        name: code.to_owned(),
        level: None,
        parent_code: parent.map(str::to_owned),
        density: None,
        centroid: None,
    };
    vec![
        jurisdiction("32", None),
        jurisdiction("3201", Some("32")),
        jurisdiction("320102", Some("3201")),
        jurisdiction("320102001", Some("320102")),
        jurisdiction("3202", Some("32")),
        jurisdiction("320201", Some("3202")),
        jurisdiction("320201001", Some("320201")),
    ]
}

/// The (event, incident) pairs a filter lets through.
fn passing(args: &[&str]) -> Vec<(String, String)> {
    let filter = WatchFilter::new(&watch_args(args), &tree());
    changes()
        .into_iter()
        .map(|(event_type, incident)| {
            WatchEventView::from(pb::WatchIncidentsResponse {
                incident: Some(incident),
                event_type: event_type.to_owned(),
            })
        })
        .filter(|view| filter.matches(view))
        .map(|view| (view.event_type, view.incident.id))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn subtree_follows_parent_links_down() {
    let codes = subtree(&["3201".to_owned()], &tree());
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        ["3201", "320102", "320102001"]
    );
    // An unknown code matches only itself.
    assert_eq!(subtree(&["99".to_owned()], &tree()).len(), 1);
}

#[test]
fn each_filter_narrows_and_repeated_values_widen() {
    assert_eq!(passing(&[]).len(), 6);
    // Ungraded incidents never match a grade filter.
    assert_eq!(passing(&["--grade", "II"]), pairs(&[("graded", "INC-1")]));
    assert_eq!(
        passing(&["--grade", "II", "--grade", "III"]),
        pairs(&[("graded", "INC-1"), ("units_assigned", "INC-3")])
    );
    assert_eq!(
        passing(&["--class", "natural_disaster"]),
        pairs(&[
            ("graded", "INC-2"),
            ("escalated", "INC-2"),
            ("closed", "INC-2")
        ])
    );
    assert_eq!(
        passing(&["--status", "closed"]),
        pairs(&[("closed", "INC-2")])
    );
    assert_eq!(
        passing(&["--incident", "INC-1"]),
        pairs(&[("reported", "INC-1"), ("graded", "INC-1")])
    );
    assert_eq!(
        passing(&["--event", "escalated"]),
        pairs(&[("escalated", "INC-2")])
    );
    // Filters combine with AND.
    assert_eq!(
        passing(&["--class", "natural_disaster", "--event", "graded"]),
        pairs(&[("graded", "INC-2")])
    );
    assert!(passing(&["--grade", "I"]).is_empty());
}

#[test]
fn jurisdiction_matches_incidents_led_or_located_in_its_subtree() {
    // INC-1 is located in 320102001 (under 3201) even while led by the province; INC-3 is led
    // by 3201 itself; INC-2 is in the other city.
    assert_eq!(
        passing(&["--jurisdiction", "3201"]),
        pairs(&[
            ("reported", "INC-1"),
            ("graded", "INC-1"),
            ("units_assigned", "INC-3")
        ])
    );
    assert_eq!(
        passing(&["--jurisdiction", "3202"]),
        pairs(&[
            ("graded", "INC-2"),
            ("escalated", "INC-2"),
            ("closed", "INC-2")
        ])
    );
    // The province covers everything.
    assert_eq!(passing(&["--jurisdiction", "32"]).len(), 6);
    // Only the province leads INC-1's graded change; no township of 320201 is involved.
    assert!(passing(&["--jurisdiction", "320201001", "--incident", "INC-1"]).is_empty());
}

#[test]
fn filter_values_are_checked_when_parsing() {
    for bad in [
        ["watch", "--grade", "V"],
        ["watch", "--class", "weather"],
        ["watch", "--status", "open"],
    ] {
        assert!(
            musterctl::Cli::try_parse_from(std::iter::once("musterctl").chain(bad)).is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_filtered_watch_prints_only_matching_changes() {
    let intake = spawn_server(
        tonic::transport::Server::builder().add_service(IntakeServiceServer::new(StreamingIntake)),
    )
    .await;
    let (escalation, _) = spawn_fake_escalation().await;
    let cli = parse(&[
        "watch",
        "--intake",
        &intake,
        "--escalation",
        &escalation,
        "--jurisdiction",
        "3202",
        "--event",
        "graded",
        "--event",
        "closed",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 2, "{output}");
    assert!(
        lines[0].ends_with("INC-2 graded grade=IV lead=320201 status=graded"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("INC-2 closed grade=IV lead=320201 status=closed"),
        "{}",
        lines[1]
    );

    // --max-events counts printed changes, not received ones.
    let cli = parse(&[
        "watch",
        "--intake",
        &intake,
        "--grade",
        "IV",
        "--max-events",
        "1",
        "--json",
    ]);
    let (result, output) = run_to_string(cli).await;
    assert_eq!(result.unwrap(), 0);
    let json: serde_json::Value = serde_json::from_str(output.trim_end()).unwrap();
    assert_eq!(json["incident"]["id"], "INC-2");
    assert_eq!(json["event_type"], "graded");

    // --jurisdiction needs the tree; without escalation it says so rather than guessing.
    let cli = parse(&[
        "watch",
        "--intake",
        &intake,
        "--escalation",
        DEAD,
        "--jurisdiction",
        "32",
    ]);
    let (result, _) = run_to_string(cli).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .starts_with("cannot reach escalation")
    );
}
