//! End-to-end: reports flow intake → escalation → dispatch over a real nats-server and back into
//! intake's read model, visible over gRPC and through musterctl.

mod access;
mod dispatch_e2e;
mod drill;
mod escalation_e2e;
mod feeds;
mod metrics;
mod personal_data;
mod rebuild;
mod replay;
mod scale_out;
mod system;
mod trace_context;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use muster_proto::v1 as pb;
use system::{CHEMICAL_PARK, DENSE_TOWNSHIP, Service, ServiceProcess, System, WAIT, report};
use test_support::eventually;

fn facts_deaths(deaths: i64) -> pb::Facts {
    pb::Facts {
        deaths: Some(deaths),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chemical_plant_explosion_with_12_deaths_is_grade_ii_led_by_the_province_with_the_plan_units()
 {
    let system = System::start().await;
    let mut intake = system.intake().await;
    let mut request = report(
        "accident.hazardous_chemicals",
        CHEMICAL_PARK,
        facts_deaths(12),
    );
    request.summary = "Explosion at a chemical plant in the Langang park".into();
    let incident_id = intake
        .report_incident(request)
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    assert!(incident_id.starts_with("INC-"), "{incident_id}");

    let incident = system.responding(&incident_id).await;
    let grading = incident.grading.as_ref().expect("graded");
    assert_eq!(grading.grade(), pb::Grade::Ii);
    assert_eq!(grading.response_level, 2);
    assert_eq!(grading.lead_level(), pb::JurisdictionLevel::Province);
    assert_eq!(grading.lead_jurisdiction_code, "390000");
    assert_eq!(grading.rule_id, "production_safety");
    assert!(
        grading.reason.contains("12"),
        "the reason names the fact: {}",
        grading.reason
    );

    // The plan's units, every one of them, each booked once.
    let region = &system.region;
    let plan = region
        .plans
        .plan_for(
            "accident.hazardous_chemicals",
            Some(domain::grade::Grade::II),
        )
        .expect("a plan");
    let units = incident.units.as_ref().expect("units answer");
    assert_eq!(units.plan_id, plan.id);
    assert!(
        units.shortfalls.is_empty(),
        "shortfalls: {:?}",
        units.shortfalls
    );
    let mut by_type: HashMap<&str, u32> = HashMap::new();
    for assignment in &units.assignments {
        *by_type.entry(assignment.unit_type.as_str()).or_default() += 1;
    }
    for requirement in &plan.resources {
        assert_eq!(
            by_type.get(requirement.unit_type.as_str()).copied(),
            Some(requirement.count),
            "{}",
            requirement.unit_type
        );
    }
    let ids: HashSet<&str> = units
        .assignments
        .iter()
        .map(|a| a.unit_id.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        units.assignments.len(),
        "a unit was booked twice"
    );
    // Nearest first within a type: the park's own hazmat units come before any from elsewhere.
    let hazmat: Vec<f64> = units
        .assignments
        .iter()
        .filter(|a| a.unit_type == "hazmat")
        .map(|a| a.distance_km)
        .collect();
    assert!(
        hazmat.windows(2).all(|w| w[0] <= w[1]),
        "hazmat not nearest first: {hazmat:?}"
    );

    // The timeline shows the three steps, each with its bus event id.
    let steps: Vec<&str> = incident
        .timeline
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(steps, ["reported", "graded", "units_assigned"]);
    system
        .incident_when(
            "every timeline entry has its event id",
            &incident_id,
            |incident| incident.timeline.iter().all(|e| !e.event_id.is_empty()),
        )
        .await;

    // Escalation and dispatch answer for the same incident over their own gRPC.
    let grading_there = system
        .escalation()
        .await
        .get_grading(pb::GetGradingRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .grading
        .unwrap();
    assert_eq!(grading_there.grade(), pb::Grade::Ii);
    let board = system
        .dispatch()
        .await
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units;
    let dispatched: HashSet<&str> = board
        .iter()
        .filter(|u| u.status() == pb::UnitStatus::Dispatched && u.incident_id == incident_id)
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(
        dispatched, ids,
        "the unit board disagrees with the incident"
    );

    // And through musterctl, for people and for scripts.
    let (code, out) = system.musterctl(&["status"]).await;
    assert_eq!(code, Ok(0), "{out}");
    let (code, out) = system.musterctl(&["show", &incident_id]).await;
    assert_eq!(code, Ok(0));
    assert!(
        out.contains("II") && out.contains("390000") && out.contains("production_safety"),
        "show output:\n{out}"
    );
    for unit in &ids {
        assert!(out.contains(unit), "show output lacks {unit}:\n{out}");
    }
    let (code, out) = system.musterctl(&["--json", "incidents"]).await;
    assert_eq!(code, Ok(0));
    assert!(out.contains(&incident_id), "{out}");
    let (code, out) = system.musterctl(&["units", "--type", "hazmat"]).await;
    assert_eq!(code, Ok(0));
    assert!(out.contains(&incident_id), "{out}");
    let (code, out) = system
        .musterctl(&["jurisdictions", "--level", "county"])
        .await;
    assert_eq!(code, Ok(0));
    assert!(out.contains("390202"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_m6_2_earthquake_in_a_dense_township_gets_initial_grade_i_led_nationally() {
    let system = System::start().await;
    let mut intake = system.intake().await;
    let facts = pb::Facts {
        magnitude: Some(6.2),
        ..Default::default()
    };
    let incident_id = intake
        .report_incident(report("natural.earthquake", DENSE_TOWNSHIP, facts))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let incident = system.responding(&incident_id).await;
    let grading = incident.grading.unwrap();
    assert_eq!(grading.grade(), pb::Grade::I);
    assert!(
        grading.initial_judgement,
        "M6.2 without casualty figures is an initial judgement"
    );
    assert_eq!(grading.lead_level(), pb::JurisdictionLevel::National);
    assert_eq!(grading.rule_id, "earthquake");
    // Grade I plans exceed a 49-unit region: the shortfall is reported, not hidden.
    let units = incident.units.unwrap();
    assert!(!units.assignments.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_get_invalid_argument_saying_what_to_fix_and_store_nothing() {
    let system = System::start().await;
    let mut intake = system.intake().await;
    let cases: Vec<(pb::ReportIncidentRequest, &str)> = vec![
        (
            report("accident.hazardous_chemicals", "999999999", facts_deaths(1)),
            "not a township",
        ),
        (
            report("accident.hazardous_chemicals", "390202", facts_deaths(1)),
            "not a township",
        ),
        (
            report(
                "accident.hazardous_chemicals",
                CHEMICAL_PARK,
                facts_deaths(-1),
            ),
            "facts.deaths is -1",
        ),
        (
            report("", CHEMICAL_PARK, facts_deaths(1)),
            "kind is required",
        ),
        (
            report("accident.volcano", CHEMICAL_PARK, facts_deaths(1)),
            "not a known sub-type",
        ),
        (
            report(
                "natural.earthquake",
                CHEMICAL_PARK,
                pb::Facts {
                    magnitude: Some(f64::NAN),
                    ..Default::default()
                },
            ),
            "magnitude",
        ),
        (
            pb::ReportIncidentRequest {
                lat: Some(30.0),
                ..report("accident.fire", CHEMICAL_PARK, facts_deaths(0))
            },
            "lat and lon go together",
        ),
        (
            pb::ReportIncidentRequest {
                summary: "x".repeat(5000),
                ..report("accident.fire", CHEMICAL_PARK, facts_deaths(0))
            },
            "summary",
        ),
        (
            pb::ReportIncidentRequest {
                namespace: "LIVE".into(),
                ..report("accident.fire", CHEMICAL_PARK, facts_deaths(0))
            },
            "namespace",
        ),
    ];
    for (request, expected) in cases {
        let status = intake
            .report_incident(request.clone())
            .await
            .expect_err(&format!("accepted {request:?}"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(expected),
            "{:?} lacks {expected:?}",
            status.message()
        );
    }
    // Several problems at once are all named.
    let status = intake
        .report_incident(report("", "nowhere", facts_deaths(-5)))
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("3 problems:"),
        "{}",
        status.message()
    );

    // musterctl shows the server's message as one line with the code.
    let (result, _) = system
        .musterctl(&["report", "--kind", "accident.fire", "--township", "nowhere"])
        .await;
    let line = result.expect_err("musterctl accepted a bad township");
    assert!(
        line.contains("INVALID_ARGUMENT") && line.contains("nowhere") && !line.contains('\n'),
        "{line}"
    );

    let listed = intake
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .incidents;
    assert!(
        listed.is_empty(),
        "a rejected report was stored: {listed:?}"
    );
    let bus = bus::Bus::connect(system.nats.url(), "check", Duration::from_secs(5))
        .await
        .unwrap();
    let mut stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "a rejected report reached the bus"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_report_with_the_same_request_id_creates_one_incident() {
    let system = System::start().await;
    let mut intake = system.intake().await;
    let mut request = report("accident.fire", CHEMICAL_PARK, facts_deaths(1));
    request.request_id = "officer-li-0001".into();
    let first = intake
        .report_incident(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = intake.report_incident(request).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.incident_id, second.incident_id);
    system.responding(&first.incident_id).await;
    let listed = intake
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .incidents;
    assert_eq!(listed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_each_change_of_an_incident() {
    let system = System::start().await;
    let mut intake = system.intake().await;
    let mut watch = intake
        .watch_incidents(pb::WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let incident_id = intake
        .report_incident(report(
            "accident.road_traffic",
            CHEMICAL_PARK,
            facts_deaths(3),
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let change = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("watch went quiet")
            .unwrap()
            .expect("watch ended");
        assert_eq!(change.incident.as_ref().unwrap().id, incident_id);
        seen.push(change.event_type);
    }
    assert_eq!(seen[0], "reported");
    assert!(
        seen.contains(&"graded".to_string()) && seen.contains(&"units_assigned".to_string()),
        "{seen:?}"
    );
}

/// Kills escalation with SIGKILL while reports are flowing, several times, and restarts it on the
/// same sled directory: every incident must end graded exactly once and answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_escalation_mid_stream_loses_nothing_and_duplicates_nothing() {
    let mut system = System::empty().await;
    system.start_service(Service::Intake).await;
    system.start_service(Service::Dispatch).await;
    let escalation_dir = system.data_dir(Service::Escalation);
    let log = system.dir.path().join("escalation.log");
    let mut escalation = Some(ServiceProcess::spawn(
        Service::Escalation,
        system.nats.url(),
        &escalation_dir,
        &log,
    ));

    let mut intake = system.intake().await;
    let total = 60;
    let mut ids = Vec::new();
    for i in 0..total {
        // Fires with few deaths: grade IV, small plans, so the 49 units are not the limit.
        let request = pb::ReportIncidentRequest {
            request_id: format!("restart-{i}"),
            ..report("accident.fire", CHEMICAL_PARK, facts_deaths(0))
        };
        ids.push(
            intake
                .report_incident(request)
                .await
                .unwrap()
                .into_inner()
                .incident_id,
        );
        if i == 30 {
            // A clean restart of dispatch in the middle too: it drains, then resumes.
            system.stop_service(Service::Dispatch).await;
            system.start_service(Service::Dispatch).await;
        }
        if i % 15 == 7 {
            // Crash mid-stream, then come back on the same data.
            escalation.take().unwrap().kill();
            escalation = Some(ServiceProcess::spawn(
                Service::Escalation,
                system.nats.url(),
                &escalation_dir,
                &log,
            ));
        }
    }

    let graded_events = || async {
        let bus = bus::Bus::connect(system.nats.url(), "check", Duration::from_secs(5))
            .await
            .unwrap();
        let stream = bus
            .jetstream()
            .get_stream(bus::EVENTS_STREAM)
            .await
            .unwrap();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut info = stream
            .info_with_subjects("muster.live.incident.*.*.graded")
            .await
            .unwrap();
        use futures_util::TryStreamExt;
        while let Some((subject, count)) = info.try_next().await.unwrap() {
            counts.insert(subject, count);
        }
        counts
    };
    eventually("every incident graded", Duration::from_secs(60), || async {
        (graded_events().await.len() == total).then_some(())
    })
    .await;
    let mut intake_client = intake.clone();
    for id in &ids {
        let incident = system.responding(id).await;
        let graded = incident
            .timeline
            .iter()
            .filter(|e| e.event_type == "graded")
            .count();
        let answered = incident
            .timeline
            .iter()
            .filter(|e| e.event_type == "units_assigned")
            .count();
        assert_eq!(
            (graded, answered),
            (1, 1),
            "{id}: timeline {:?}",
            incident.timeline
        );
    }
    for (subject, count) in graded_events().await {
        assert_eq!(count, 1, "{subject} published {count} times");
    }
    let listed = intake_client
        .list_incidents(pb::ListIncidentsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incidents;
    assert_eq!(listed.len(), total);
    drop(escalation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_spanning_two_counties_is_led_by_their_common_city() {
    let system = System::start().await;
    let mut intake = system.intake().await;
    // 港北区 and 石塘县 are both counties of 明港市 (390200); a grade IV fire would be county-led.
    let request = pb::ReportIncidentRequest {
        other_township_codes: vec!["390223100".into()],
        ..report("accident.fire", "390202001", facts_deaths(1))
    };
    let incident_id = intake
        .report_incident(request)
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let grading = system.responding(&incident_id).await.grading.unwrap();
    assert_eq!(grading.grade(), pb::Grade::Iv);
    assert_eq!(
        (
            grading.lead_jurisdiction_code.as_str(),
            grading.lead_level()
        ),
        ("390200", pb::JurisdictionLevel::City)
    );
}

/// grpcurl 1.8 and Python's grpcio-reflection speak v1alpha, newer tools v1: both must list every
/// service, health included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_both_reflection_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let system = System::start().await;
    for (service, expected) in [
        (Service::Intake, "muster.v1.IntakeService"),
        (Service::Escalation, "muster.v1.EscalationService"),
        (Service::Dispatch, "muster.v1.DispatchService"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(system.url(service))
            .unwrap()
            .connect()
            .await
            .unwrap();

        let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("v1 reflection did not list services")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == expected), "{names:?}");
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );

        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    expected.into(),
                ),
            ),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap().message_response;
        assert!(
            matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "v1alpha reflection has no descriptor for {expected}: {response:?}"
        );

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: expected.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
}

/// Many incidents at once compete for 49 units: no unit may end up on two incidents, and every
/// requirement a unit could not fill is reported as a shortfall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_incidents_never_share_a_unit() {
    let system = System::start().await;
    let intake = system.intake().await;
    let townships = [
        "390202400",
        "390202001",
        "390102001",
        "390121100",
        "390223100",
        "390102002",
    ];
    let reports = (0..24).map(|i| {
        let mut intake = intake.clone();
        let township = townships[i % townships.len()];
        async move {
            // 5 deaths: grade III, plans of several units each, so the region runs out.
            intake
                .report_incident(report(
                    "accident.hazardous_chemicals",
                    township,
                    facts_deaths(5),
                ))
                .await
                .unwrap()
                .into_inner()
                .incident_id
        }
    });
    let ids = futures_util::future::join_all(reports).await;
    let mut holder: HashMap<String, String> = HashMap::new();
    let mut short = 0;
    for id in &ids {
        let units = system.responding(id).await.units.unwrap();
        short += units.shortfalls.len();
        for assignment in units.assignments {
            if let Some(other) = holder.insert(assignment.unit_id.clone(), id.clone()) {
                panic!("{} booked to both {other} and {id}", assignment.unit_id);
            }
        }
    }
    assert!(
        short > 0,
        "24 grade III incidents should exhaust a 49-unit region"
    );
    let board = system
        .dispatch()
        .await
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units;
    for unit in board {
        assert_eq!(
            holder.get(&unit.id).cloned().unwrap_or_default(),
            unit.incident_id,
            "unit board disagrees for {}",
            unit.id
        );
    }
}

/// Incident numbers stay dense across a restart of intake (sled's id generator would jump by a
/// million), and the records survive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_numbers_stay_dense_across_an_intake_restart() {
    let mut system = System::start().await;
    let first = system
        .intake()
        .await
        .report_incident(report("accident.fire", CHEMICAL_PARK, facts_deaths(0)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.stop_service(Service::Intake).await;
    system.start_service(Service::Intake).await;
    let second = system
        .intake()
        .await
        .report_incident(report("accident.fire", CHEMICAL_PARK, facts_deaths(0)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    assert!(first.ends_with("-000001"), "{first}");
    assert!(second.ends_with("-000002"), "{second}");
    system.responding(&first).await;
    system.responding(&second).await;
}

// ---------------------------------------------------------------------------------------------
// Unit registry and lifecycle (dispatch, issue 5).
// ---------------------------------------------------------------------------------------------

mod unit_registry {
    use std::time::Duration;

    use muster_proto::v1 as pb;
    use test_support::eventually;
    use tonic::Code;

    use super::system::{CHEMICAL_PARK, System, WAIT, report};

    fn deaths(deaths: i64) -> pb::Facts {
        pb::Facts {
            deaths: Some(deaths),
            ..Default::default()
        }
    }

    fn status_request(
        unit_id: &str,
        event: pb::UnitStatusEvent,
        incident_id: &str,
        reason: &str,
    ) -> pb::UpdateUnitStatusRequest {
        pb::UpdateUnitStatusRequest {
            namespace: String::new(),
            unit_id: unit_id.into(),
            event: event as i32,
            incident_id: incident_id.into(),
            reason: reason.into(),
        }
    }

    async fn board(system: &System) -> Vec<pb::Unit> {
        system
            .dispatch()
            .await
            .list_units(pb::ListUnitsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .units
    }

    /// Of the five hazmat units, two are out of service and one is retired: a grade III chemical
    /// accident (two hazmat, led by the city) gets its city's one usable hazmat; the other city,
    /// asked for mutual aid, keeps its last available hazmat home as its reserve (grade III) and
    /// declines, so the second stays short. A dispatched unit cannot be retired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_service_and_retired_units_are_never_recommended() {
        let system = System::start().await;
        let mut dispatch = system.dispatch().await;
        for unit_id in ["DH-HAZ-1", "GB-HAZ-1"] {
            let unit = dispatch
                .update_unit_status(status_request(
                    unit_id,
                    pb::UnitStatusEvent::GoOutOfService,
                    "",
                    "suits at the cleaner's",
                ))
                .await
                .unwrap()
                .into_inner()
                .unit
                .unwrap();
            assert_eq!(unit.status(), pb::UnitStatus::OutOfService);
            assert_eq!(unit.out_of_service_reason, "suits at the cleaner's");
        }
        dispatch
            .retire_unit(pb::RetireUnitRequest {
                namespace: String::new(),
                unit_id: "GB-HAZ-2".into(),
                reason: "decommissioned".into(),
            })
            .await
            .unwrap();
        assert!(
            board(&system).await.iter().all(|u| u.id != "GB-HAZ-2"),
            "a retired unit is still on the board"
        );

        let incident_id = system
            .intake()
            .await
            .report_incident(report(
                "accident.hazardous_chemicals",
                CHEMICAL_PARK,
                deaths(5),
            ))
            .await
            .unwrap()
            .into_inner()
            .incident_id;
        let units = system.responding(&incident_id).await.units.unwrap();
        let mut hazmat: Vec<&str> = units
            .assignments
            .iter()
            .filter(|a| a.unit_type == "hazmat")
            .map(|a| a.unit_id.as_str())
            .collect();
        hazmat.sort();
        assert_eq!(hazmat, ["GB-HAZ-3"], "{units:?}");
        let short = units
            .shortfalls
            .iter()
            .find(|s| s.unit_type == "hazmat")
            .expect("a hazmat shortfall");
        assert!(
            short.reason_codes.iter().any(|c| c == "held_in_reserve")
                && short.reason_codes.iter().any(|c| c == "out_of_service"),
            "{short:?}"
        );
        let on_board = board(&system).await;
        let reserve = on_board.iter().find(|u| u.id == "DH-HAZ-2").unwrap();
        assert_eq!(reserve.status(), pb::UnitStatus::Available);

        let on_board = board(&system).await;
        let dispatched = on_board.iter().find(|u| u.id == "GB-HAZ-3").unwrap();
        assert_eq!(dispatched.status(), pb::UnitStatus::Dispatched);
        assert_eq!(dispatched.incident_id, incident_id);
        let refused = dispatch
            .retire_unit(pb::RetireUnitRequest {
                namespace: String::new(),
                unit_id: "GB-HAZ-3".into(),
                reason: "decommissioned".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("Dispatched"), "{refused:?}");

        // The lifecycle goes on legally: acknowledge, arrive, release, clear.
        for (event, expected) in [
            (pb::UnitStatusEvent::Acknowledge, pb::UnitStatus::Enroute),
            (pb::UnitStatusEvent::Arrive, pb::UnitStatus::OnScene),
            (pb::UnitStatusEvent::Release, pb::UnitStatus::Returning),
            (pb::UnitStatusEvent::Clear, pb::UnitStatus::Available),
        ] {
            let unit = dispatch
                .update_unit_status(status_request("GB-HAZ-3", event, &incident_id, ""))
                .await
                .unwrap()
                .into_inner()
                .unit
                .unwrap();
            assert_eq!(unit.status(), expected, "after {event:?}");
        }
    }

    /// An illegal move is FAILED_PRECONDITION naming both states; legal ones are unit events on
    /// `muster.live.unit.<id>.status`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_illegal_transition_is_refused_naming_the_states() {
        let system = System::start().await;
        let mut dispatch = system.dispatch().await;
        let refused = dispatch
            .update_unit_status(status_request(
                "DH-HAZ-1",
                pb::UnitStatusEvent::Arrive,
                "INC-20260101-000001",
                "",
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().contains("Available") && refused.message().contains("OnScene"),
            "{refused:?}"
        );
        let missing_reason = dispatch
            .update_unit_status(status_request(
                "DH-HAZ-1",
                pb::UnitStatusEvent::GoOutOfService,
                "",
                " ",
            ))
            .await
            .unwrap_err();
        assert_eq!(missing_reason.code(), Code::FailedPrecondition);
        assert!(
            missing_reason.message().contains("reason"),
            "{missing_reason:?}"
        );
        let unknown = dispatch
            .update_unit_status(status_request("NOPE", pb::UnitStatusEvent::Clear, "", ""))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        dispatch
            .update_unit_status(status_request(
                "DH-HAZ-1",
                pb::UnitStatusEvent::GoOutOfService,
                "",
                "engine service",
            ))
            .await
            .unwrap();
        let bus = bus::Bus::connect(system.nats.url(), "check", Duration::from_secs(5))
            .await
            .unwrap();
        let stream = bus
            .jetstream()
            .get_stream(bus::EVENTS_STREAM)
            .await
            .unwrap();
        let message = eventually("the unit event on the bus", WAIT, || {
            let stream = stream.clone();
            async move {
                stream
                    .get_last_raw_message_by_subject("muster.live.unit.DH-HAZ-1.status")
                    .await
                    .ok()
            }
        })
        .await;
        let event = muster_proto::convert_unit::decode_unit_event(&message.payload).unwrap();
        match event.change {
            muster_proto::convert_unit::UnitChange::StatusChanged { change, cause } => {
                assert_eq!(cause, "go_out_of_service");
                assert_eq!(change.to, domain::unit::UnitStatus::OutOfService);
                assert_eq!(change.reason.as_deref(), Some("engine service"));
            }
            other => panic!("unexpected unit event {other:?}"),
        }
    }

    /// A position published on NATS reaches the unit board; a bad one over gRPC is
    /// INVALID_ARGUMENT, and an older one is ignored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_position_published_on_nats_shows_up_on_the_unit_board() {
        let system = System::start().await;
        let at_unix_ms = lifecycle_now() + 1_000;
        let payload = muster_proto::convert_unit::encode_unit_position(
            &muster_proto::convert_unit::PositionReport {
                unit_id: "DH-HAZ-2".into(),
                position: domain::geo::GeoPoint::new(30.3, 120.2),
                at_unix_ms,
            },
        );
        let bus = bus::Bus::connect(system.nats.url(), "avl", Duration::from_secs(5))
            .await
            .unwrap();
        bus.publish_dedup(
            "muster.live.unit.DH-HAZ-2.position".into(),
            "avl-DH-HAZ-2-1",
            payload.into(),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let unit = eventually("the position on the board", WAIT, || async {
            let unit = board(&system)
                .await
                .into_iter()
                .find(|u| u.id == "DH-HAZ-2")?;
            (unit.position_at_unix_ms == at_unix_ms).then_some(unit)
        })
        .await;
        let position = unit.position.unwrap();
        assert_eq!((position.lat, position.lon), (30.3, 120.2));
        assert!(!unit.position_stale);

        let mut dispatch = system.dispatch().await;
        let invalid = dispatch
            .report_position(pb::ReportPositionRequest {
                namespace: String::new(),
                unit_id: "DH-HAZ-2".into(),
                lat: 91.0,
                lon: 120.0,
                at_unix_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(invalid.message().contains("latitude"), "{invalid:?}");
        let older = dispatch
            .report_position(pb::ReportPositionRequest {
                namespace: String::new(),
                unit_id: "DH-HAZ-2".into(),
                lat: 30.0,
                lon: 120.0,
                at_unix_ms: at_unix_ms - 60_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!older.applied);
        assert_eq!(older.unit.unwrap().position_at_unix_ms, at_unix_ms);
    }

    fn lifecycle_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }
}

// ---- Escalation chains and reporting clocks (issue 4) ---------------------------------------

/// A system whose escalation runs the shipped policy on a compressed clock: one policy minute
/// lasts `minute_ms` milliseconds.
async fn system_with_minute_ms(minute_ms: i64) -> System {
    let mut system = System::empty().await;
    system.escalation_policy = Some(std::sync::Arc::new(
        domain::escalation::EscalationPolicy::embedded_default().with_minute_ms(minute_ms),
    ));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    system
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn report_one(system: &System, kind: &str, deaths: i64) -> String {
    system
        .intake()
        .await
        .report_incident(report(kind, CHEMICAL_PARK, facts_deaths(deaths)))
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

/// Escalation's command state, once the incident is graded.
async fn command_when_graded(system: &System, incident_id: &str) -> pb::Command {
    let escalation = system.escalation().await;
    eventually(&format!("{incident_id} graded"), WAIT, || {
        let mut escalation = escalation.clone();
        let id = incident_id.to_string();
        async move {
            escalation
                .get_command(pb::GetCommandRequest {
                    namespace: String::new(),
                    incident_id: id,
                })
                .await
                .ok()?
                .into_inner()
                .command
        }
    })
    .await
}

async fn get_command(system: &System, incident_id: &str) -> pb::Command {
    system
        .escalation()
        .await
        .get_command(pb::GetCommandRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap()
}

async fn timeline_types(system: &System, incident_id: &str) -> Vec<String> {
    system
        .intake()
        .await
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
        .timeline
        .into_iter()
        .map(|entry| entry.event_type)
        .collect()
}

/// Grade IV is led by the county (grade III is led by the city already, so the county → city
/// climb of the issue is grade IV's in this ladder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_county_led_incident_climbs_to_the_city_when_its_deadline_passes() {
    // Grade IV acks within 30 policy minutes: 1.5 s here.
    let system = system_with_minute_ms(50).await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 1).await;
    let command = command_when_graded(&system, &incident_id).await;
    assert_eq!(command.grade(), pb::Grade::Iv);
    assert_eq!(command.lead_level(), pb::JurisdictionLevel::County);
    assert_eq!(command.escalation_jurisdiction_code, "390202");
    assert!(!command.acknowledged);
    assert!(command.ack_due_at_unix_ms > 0);

    // The deadline passes: intake's timeline shows the escalation, escalation's state the city.
    let mut intake = system.intake().await;
    let entry = eventually("escalated in the timeline", WAIT, || {
        let mut intake = intake.clone();
        let id = incident_id.clone();
        async move {
            let incident = intake
                .get_incident(pb::GetIncidentRequest {
                    namespace: String::new(),
                    incident_id: id,
                })
                .await
                .ok()?
                .into_inner()
                .incident?;
            incident
                .timeline
                .into_iter()
                .find(|entry| entry.event_type == "escalated")
        }
    })
    .await;
    assert!(
        entry.description.contains("390202") && entry.description.contains("390200"),
        "county → city: {}",
        entry.description
    );
    assert!(
        entry.description.contains("deadline"),
        "{}",
        entry.description
    );
    assert_eq!(entry.source_service, "escalation");
    let command = get_command(&system, &incident_id).await;
    assert!(command.escalation_count >= 1);
    assert_ne!(command.escalation_level(), pb::JurisdictionLevel::County);
    // Escalation asks the next level to acknowledge; command stays with the county.
    assert_eq!(command.lead_jurisdiction_code, "390202");
    let incident = intake
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(incident.grading.unwrap().lead_jurisdiction_code, "390202");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_incident_never_escalates_afterwards() {
    // Grade IV acks within 30 policy minutes: 2.4 s here.
    let system = system_with_minute_ms(80).await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 1).await;
    let before = command_when_graded(&system, &incident_id).await;
    let mut escalation = system.escalation().await;
    let acked = escalation
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            officer: "duty officer Wang".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert!(acked.acknowledged);
    assert_eq!(acked.acknowledged_by, "duty officer Wang");
    assert_eq!(acked.ack_due_at_unix_ms, 0, "no chain timer left");
    assert_eq!(
        acked.escalation_count, 0,
        "acknowledged before the deadline"
    );

    let again = escalation
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            officer: "someone else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("duty officer Wang"), "{again:?}");

    // Let the old deadline pass (bounded: at most 3 s), then nothing has escalated.
    let wait_ms = (before.ack_due_at_unix_ms + 500 - unix_ms_now()).clamp(0, 3_000) as u64;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let after = get_command(&system, &incident_id).await;
    assert_eq!(after.escalation_count, 0);
    assert_eq!(after.escalation_level(), pb::JurisdictionLevel::County);
    let types = eventually("acknowledged in the timeline", WAIT, || {
        let system = &system;
        let id = incident_id.clone();
        async move {
            let types = timeline_types(system, &id).await;
            types.iter().any(|t| t == "acknowledged").then_some(types)
        }
    })
    .await;
    assert!(!types.iter().any(|t| t == "escalated"), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grade_ii_production_safety_accident_owes_reports_up_to_national_and_one_can_be_filed() {
    let system = System::start().await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 12).await;
    let command = command_when_graded(&system, &incident_id).await;
    assert_eq!(command.grade(), pb::Grade::Ii);
    assert_eq!(command.lead_level(), pb::JurisdictionLevel::Province);
    assert!(command.lead_since_unix_ms > 0);

    let mut escalation = system.escalation().await;
    let deadlines = escalation
        .list_deadlines(pb::ListDeadlinesRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .deadlines;
    // Besides the first reports, the schedule owes follow-ups (续报) and a final report (终报)
    // along the same hops.
    let kinds: std::collections::BTreeSet<&str> =
        deadlines.iter().map(|d| d.kind.as_str()).collect();
    assert!(kinds.contains("first"), "{kinds:?}");
    assert!(
        kinds.len() >= 2,
        "follow-up / final reports missing: {kinds:?}"
    );
    let deadlines: Vec<pb::Deadline> = deadlines
        .into_iter()
        .filter(|d| d.kind == "first")
        .collect();
    // Decree 493: unit → county in 1 h, then 2 h per hop, grade II up to national.
    let hops: Vec<(&str, &str)> = deadlines
        .iter()
        .map(|d| (d.from_tier.as_str(), d.to_tier.as_str()))
        .collect();
    assert_eq!(
        hops,
        [
            ("unit", "county"),
            ("county", "city"),
            ("city", "province"),
            ("province", "national")
        ]
    );
    for deadline in &deadlines {
        assert_eq!(deadline.rule_id, "production_safety");
        assert_eq!(deadline.kind, "first");
        assert_eq!(deadline.status(), pb::DeadlineStatus::Open);
        assert_eq!(deadline.sent_at_unix_ms, 0);
        assert_eq!(deadline.incident_id, incident_id);
    }
    let first = &deadlines[0];
    assert_eq!(first.to_jurisdiction_code, "390202");
    assert_eq!(first.due_at_unix_ms - first.created_at_unix_ms, 3_600_000);
    assert_eq!(
        deadlines[1].due_at_unix_ms - first.due_at_unix_ms,
        2 * 3_600_000
    );

    // The unit files its report to the county: met, on time.
    let met = escalation
        .submit_report(pb::SubmitReportRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            obligation_id: first.obligation_id,
        })
        .await
        .unwrap()
        .into_inner()
        .deadline
        .unwrap();
    assert_eq!(met.status(), pb::DeadlineStatus::Met);
    assert!(met.sent_at_unix_ms > 0);
    assert_eq!(met.late_by_ms, 0);
    let all = escalation
        .list_deadlines(pb::ListDeadlinesRequest {
            namespace: String::new(),
            incident_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .deadlines;
    let statuses: Vec<pb::DeadlineStatus> = all
        .iter()
        .filter(|d| d.incident_id == incident_id && d.kind == "first")
        .map(|d| d.status())
        .collect();
    assert_eq!(
        statuses,
        [
            pb::DeadlineStatus::Met,
            pb::DeadlineStatus::Open,
            pb::DeadlineStatus::Open,
            pb::DeadlineStatus::Open
        ]
    );

    // Readable refusals.
    let twice = escalation
        .submit_report(pb::SubmitReportRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            obligation_id: first.obligation_id,
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
    let unknown = escalation
        .submit_report(pb::SubmitReportRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            obligation_id: 999,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let nowhere = escalation
        .get_command(pb::GetCommandRequest {
            namespace: String::new(),
            incident_id: "INC-19700101-000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), tonic::Code::NotFound, "{nowhere:?}");
    assert!(nowhere.message().contains("not been graded"), "{nowhere:?}");
}

/// The duty officer's escalation commands through musterctl against the real services: the
/// deadline list of a grade II accident, an acknowledgement, and the command state after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn musterctl_acknowledges_and_shows_command_and_deadlines() {
    let system = System::start().await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 12).await;
    system.responding(&incident_id).await;
    command_when_graded(&system, &incident_id).await;

    let (code, out) = system.musterctl(&["deadlines", &incident_id]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(
        out.contains(&incident_id) && out.contains("000000"),
        "deadlines reach the national level:\n{out}"
    );

    let (code, out) = system
        .musterctl(&["ack", &incident_id, "--officer", "duty officer Wang"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let (code, out) = system.musterctl(&["--json", "command", &incident_id]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(
        out.contains("duty officer Wang"),
        "the acknowledgement is recorded:\n{out}"
    );

    // A second acknowledgement is refused as one readable line with the code.
    let (result, _) = system.musterctl(&["ack", &incident_id]).await;
    let line = result.expect_err("a second ack was accepted");
    assert!(
        line.contains("FAILED_PRECONDITION") && !line.contains('\n'),
        "{line}"
    );

    // A unit status the lifecycle forbids is refused the same way: an available water-rescue
    // unit (not in this plan) cannot arrive on scene without being dispatched.
    let (result, _) = system
        .musterctl(&[
            "unit-status",
            "DH-WR-1",
            "arrive",
            "--incident",
            &incident_id,
        ])
        .await;
    let line = result.expect_err("an illegal transition was accepted");
    assert!(line.contains("FAILED_PRECONDITION"), "{line}");
}

// ---- Acknowledged assignments (issue 5) ------------------------------------------------------

async fn assignments_of(system: &System, incident_id: &str) -> pb::GetAssignmentsResponse {
    system
        .dispatch()
        .await
        .get_assignments(pb::GetAssignmentsRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn acknowledge_unit(system: &System, unit_id: &str, incident_id: &str) -> pb::Unit {
    system
        .dispatch()
        .await
        .update_unit_status(pb::UpdateUnitStatusRequest {
            namespace: String::new(),
            unit_id: unit_id.into(),
            event: pb::UnitStatusEvent::Acknowledge as i32,
            incident_id: incident_id.into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap()
}

/// With a 4 s acknowledgement timeout, a dispatched hazmat unit that stays silent goes back to
/// available and the next nearest hazmat unit replaces it (in dispatch's assignments and in
/// intake's timeline), while the units that acknowledged in time stay en route on the incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_does_not_acknowledge_is_replaced_and_one_that_does_stays() {
    let mut system = System::empty().await;
    system.dispatch_ack_timeout_ms = Some(4_000);
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    // 5 deaths: grade III, two hazmat units among the plan's.
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 5).await;
    system.responding(&incident_id).await;
    let booked = assignments_of(&system, &incident_id)
        .await
        .units
        .unwrap()
        .assignments;
    let silent = booked
        .iter()
        .find(|a| a.unit_type == "hazmat")
        .expect("a hazmat unit")
        .unit_id
        .clone();
    let acknowledged: Vec<String> = booked
        .iter()
        .map(|a| a.unit_id.clone())
        .filter(|id| *id != silent)
        .collect();
    for unit_id in &acknowledged {
        let unit = acknowledge_unit(&system, unit_id, &incident_id).await;
        assert_eq!(unit.status(), pb::UnitStatus::Enroute, "{unit_id}");
    }

    let replacement = eventually("the silent unit replaced", WAIT, || {
        let (system, incident_id, silent) = (&system, &incident_id, &silent);
        async move {
            let answer = assignments_of(system, incident_id).await;
            let current = answer.units?.assignments;
            if current.iter().any(|a| a.unit_id == *silent) {
                return None;
            }
            let ended = answer.ended.iter().find(|e| e.unit_id == *silent)?;
            assert_eq!(ended.outcome, "acknowledgement_timed_out");
            current
                .into_iter()
                .find(|a| a.unit_type == "hazmat" && a.reason.contains("replaces"))
        }
    })
    .await;
    assert!(booked.iter().all(|a| a.unit_id != replacement.unit_id));
    acknowledge_unit(&system, &replacement.unit_id, &incident_id).await;

    // The acknowledged units' deadlines have passed too: they stayed.
    let current: HashSet<String> = assignments_of(&system, &incident_id)
        .await
        .units
        .unwrap()
        .assignments
        .into_iter()
        .map(|a| a.unit_id)
        .collect();
    for unit_id in acknowledged.iter().chain([&replacement.unit_id]) {
        assert!(current.contains(unit_id), "{unit_id} left the incident");
    }
    let board: HashMap<String, pb::Unit> = system
        .dispatch()
        .await
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units
        .into_iter()
        .map(|unit| (unit.id.clone(), unit))
        .collect();
    assert_eq!(board[&silent].status(), pb::UnitStatus::Available);
    assert_eq!(board[&silent].incident_id, "");
    for unit_id in acknowledged.iter().chain([&replacement.unit_id]) {
        assert_eq!(
            board[unit_id].status(),
            pb::UnitStatus::Enroute,
            "{unit_id}"
        );
        assert_eq!(board[unit_id].incident_id, incident_id);
    }

    // Intake's read model hears of the replacement as a second units_assigned, and drops the
    // unit that never acknowledged.
    let replacement_id = replacement.unit_id.clone();
    eventually("intake shows the replacement", WAIT, || {
        let (system, incident_id, replacement_id, silent) =
            (&system, &incident_id, &replacement_id, &silent);
        async move {
            let incident = system.responding(incident_id).await;
            let units = incident.units?;
            let shown = units
                .assignments
                .iter()
                .any(|a| a.unit_id == *replacement_id)
                && units.assignments.iter().all(|a| a.unit_id != *silent);
            let types = timeline_types(system, incident_id).await;
            let assigned = types.iter().filter(|t| *t == "units_assigned").count();
            (shown && assigned == 2).then_some(())
        }
    })
    .await;
}

// ---- Regrading on new facts and unified command (issue 4) ----------------------------------

fn update_request(incident_id: &str, facts: pb::Facts) -> pb::UpdateIncidentRequest {
    pb::UpdateIncidentRequest {
        namespace: String::new(),
        incident_id: incident_id.into(),
        facts: Some(facts),
        summary: Some("more casualties found".into()),
        updated_by: "duty officer Zhao".into(),
        request_id: String::new(),
    }
}

async fn get_incident(system: &System, incident_id: &str) -> pb::Incident {
    system
        .intake()
        .await
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
}

/// Waits until escalation's command state satisfies `done`.
async fn command_when(
    system: &System,
    what: &str,
    incident_id: &str,
    done: impl Fn(&pb::Command) -> bool,
) -> pb::Command {
    let escalation = system.escalation().await;
    let done = &done;
    eventually(what, WAIT, || {
        let mut escalation = escalation.clone();
        let id = incident_id.to_string();
        async move {
            let command = escalation
                .get_command(pb::GetCommandRequest {
                    namespace: String::new(),
                    incident_id: id,
                })
                .await
                .ok()?
                .into_inner()
                .command?;
            done(&command).then_some(command)
        }
    })
    .await
}

fn units_by_type(incident: &pb::Incident) -> HashMap<String, u32> {
    let mut by_type = HashMap::new();
    for assignment in incident.units.iter().flat_map(|u| &u.assignments) {
        *by_type.entry(assignment.unit_type.clone()).or_default() += 1;
    }
    by_type
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_deaths_reported_later_upgrade_a_grade_iii_accident_to_ii_led_by_the_province_with_more_units()
 {
    let system = System::start().await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 3).await;
    let before = system.responding(&incident_id).await;
    let grading = before.grading.as_ref().expect("graded");
    assert_eq!(grading.grade(), pb::Grade::Iii);
    assert_eq!(grading.lead_level(), pb::JurisdictionLevel::City);
    let units_before = before.units.as_ref().unwrap().assignments.len();

    let mut request = update_request(&incident_id, facts_deaths(12));
    request.request_id = "update-12".into();
    let answer = system
        .intake()
        .await
        .update_incident(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.duplicate);
    assert_eq!(answer.facts.unwrap().deaths, Some(12));
    // A retry changes nothing more.
    let again = system
        .intake()
        .await
        .update_incident(request)
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.incident_id, incident_id);

    // The upgrade applies at once: grade II, the province leads.
    let command = command_when(&system, "grade II", &incident_id, |c| {
        c.grade() == pb::Grade::Ii
    })
    .await;
    assert_eq!(command.lead_level(), pb::JurisdictionLevel::Province);
    assert_eq!(command.lead_jurisdiction_code, "390000");
    assert_eq!(command.pending_downgrade(), pb::Grade::Unspecified);

    // Dispatch sends the plan difference: the incident ends with the grade II plan's units.
    let plan = system
        .region
        .plans
        .plan_for(
            "accident.hazardous_chemicals",
            Some(domain::grade::Grade::II),
        )
        .expect("a plan");
    let incident = system
        .incident_when("grade II plan units", &incident_id, |incident| {
            let by_type = units_by_type(incident);
            incident
                .grading
                .as_ref()
                .is_some_and(|g| g.grade() == pb::Grade::Ii)
                && plan
                    .resources
                    .iter()
                    .all(|r| by_type.get(&r.unit_type).copied() == Some(r.count))
        })
        .await;
    assert!(
        incident.units.as_ref().unwrap().assignments.len() > units_before,
        "more units after the upgrade"
    );
    let ids: HashSet<&str> = incident
        .units
        .as_ref()
        .unwrap()
        .assignments
        .iter()
        .map(|a| a.unit_id.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        incident.units.as_ref().unwrap().assignments.len(),
        "no unit booked twice"
    );
    let grading = incident.grading.as_ref().unwrap();
    assert_eq!(grading.lead_jurisdiction_code, "390000");
    assert_eq!(
        incident.report.as_ref().unwrap().facts.unwrap().deaths,
        Some(12)
    );

    // The timeline: the update, the handover naming both parties, the new grading.
    let incident = system
        .incident_when("lead_changed in the timeline", &incident_id, |i| {
            i.timeline.iter().any(|e| e.event_type == "lead_changed")
        })
        .await;
    let types: Vec<&str> = incident
        .timeline
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "updated").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "graded").count(),
        2,
        "{types:?}"
    );
    let updated = incident
        .timeline
        .iter()
        .find(|e| e.event_type == "updated")
        .unwrap();
    assert!(
        updated.description.contains("12 dead"),
        "{}",
        updated.description
    );
    assert!(!updated.event_id.is_empty(), "the outbox id is filled in");
    let handover = incident
        .timeline
        .iter()
        .find(|e| e.event_type == "lead_changed")
        .unwrap();
    assert!(
        handover.description.contains("390200") && handover.description.contains("390000"),
        "city → province: {}",
        handover.description
    );
    assert!(
        handover.description.contains("regrade"),
        "{}",
        handover.description
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_deaths_only_propose_a_downgrade_until_an_officer_confirms_it() {
    let system = System::start().await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 12).await;
    let command = command_when_graded(&system, &incident_id).await;
    assert_eq!(command.grade(), pb::Grade::Ii);
    let mut escalation = system.escalation().await;

    // Nothing to confirm yet.
    let refused = escalation
        .confirm_downgrade(pb::ConfirmDowngradeRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            officer: "duty officer Zhao".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("no pending downgrade"),
        "{}",
        refused.message()
    );

    system
        .intake()
        .await
        .update_incident(update_request(&incident_id, facts_deaths(3)))
        .await
        .unwrap();
    let command = command_when(&system, "downgrade proposed", &incident_id, |c| {
        c.pending_downgrade() == pb::Grade::Iii
    })
    .await;
    // Proposed only: the grade and the lead stand.
    assert_eq!(command.grade(), pb::Grade::Ii);
    assert_eq!(command.lead_jurisdiction_code, "390000");
    let incident = system
        .incident_when("downgrade_proposed in the timeline", &incident_id, |i| {
            i.timeline
                .iter()
                .any(|e| e.event_type == "downgrade_proposed")
        })
        .await;
    assert_eq!(incident.grading.as_ref().unwrap().grade(), pb::Grade::Ii);
    assert_eq!(
        incident.report.as_ref().unwrap().facts.unwrap().deaths,
        Some(3)
    );

    let confirmed = escalation
        .confirm_downgrade(pb::ConfirmDowngradeRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            officer: "duty officer Zhao".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert_eq!(confirmed.grade(), pb::Grade::Iii);
    assert_eq!(confirmed.pending_downgrade(), pb::Grade::Unspecified);
    let incident = system
        .incident_when("grade III in intake", &incident_id, |i| {
            i.grading
                .as_ref()
                .is_some_and(|g| g.grade() == pb::Grade::Iii)
        })
        .await;
    let grading = incident.grading.unwrap();
    assert!(
        grading.reason.contains("confirmed by duty officer Zhao"),
        "{}",
        grading.reason
    );
    // Confirming twice is refused.
    let again = escalation
        .confirm_downgrade(pb::ConfirmDowngradeRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            officer: "duty officer Zhao".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_province_takes_command_of_a_county_led_incident_and_sideways_or_lower_levels_cannot() {
    let system = System::start().await;
    // Grade IV: the county leads.
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 1).await;
    let command = command_when_graded(&system, &incident_id).await;
    assert_eq!(command.lead_jurisdiction_code, "390202");
    let mut escalation = system.escalation().await;
    let take = |code: &str| pb::TakeCommandRequest {
        namespace: String::new(),
        incident_id: incident_id.clone(),
        jurisdiction_code: code.into(),
        commander_name: "Commander Sun".into(),
    };

    // A neighbouring county is not above the lead.
    let sideways = escalation.take_command(take("390223")).await.unwrap_err();
    assert_eq!(sideways.code(), tonic::Code::FailedPrecondition);
    assert!(
        sideways.message().contains("ancestor") && sideways.message().contains("390202"),
        "{}",
        sideways.message()
    );
    // Nor is a township under it.
    let lower = escalation
        .take_command(take(CHEMICAL_PARK))
        .await
        .unwrap_err();
    assert_eq!(lower.code(), tonic::Code::FailedPrecondition);
    // Nor a code the region does not know.
    let unknown = escalation.take_command(take("123")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);

    let before = unix_ms_now();
    let command = escalation
        .take_command(take("390000"))
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert_eq!(command.lead_jurisdiction_code, "390000");
    assert_eq!(command.lead_level(), pb::JurisdictionLevel::Province);
    assert_eq!(command.commander_name, "Commander Sun");
    assert!(command.lead_since_unix_ms >= before, "since the handover");
    let shown = get_command(&system, &incident_id).await;
    assert_eq!(shown.commander_name, "Commander Sun");
    assert_eq!(shown.lead_since_unix_ms, command.lead_since_unix_ms);

    // Now the county is below the lead: it cannot take command back.
    let back = escalation.take_command(take("390202")).await.unwrap_err();
    assert_eq!(back.code(), tonic::Code::FailedPrecondition);

    let incident = system
        .incident_when("lead_changed in the timeline", &incident_id, |i| {
            i.timeline.iter().any(|e| e.event_type == "lead_changed")
        })
        .await;
    assert_eq!(incident.grading.unwrap().lead_jurisdiction_code, "390000");
    let handover = incident
        .timeline
        .iter()
        .find(|e| e.event_type == "lead_changed")
        .unwrap();
    assert!(
        handover.description.contains("390202")
            && handover.description.contains("390000")
            && handover.description.contains("take_command"),
        "{}",
        handover.description
    );
    let types = timeline_types(&system, &incident_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "lead_changed").count(),
        1,
        "{types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_get_invalid_argument_and_unknown_incidents_not_found() {
    let system = System::start().await;
    let incident_id = report_one(&system, "accident.hazardous_chemicals", 3).await;
    let mut intake = system.intake().await;

    let negative = intake
        .update_incident(update_request(&incident_id, facts_deaths(-2)))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
    assert!(
        negative.message().contains("facts.deaths"),
        "{}",
        negative.message()
    );

    let empty = intake
        .update_incident(update_request(&incident_id, pb::Facts::default()))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("facts"), "{}", empty.message());

    let unknown = intake
        .update_incident(update_request("INC-19700101-999999", facts_deaths(4)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("INC-19700101-999999"),
        "{}",
        unknown.message()
    );

    // Nothing was stored: the facts stand and the timeline has no update.
    let incident = get_incident(&system, &incident_id).await;
    assert_eq!(incident.report.unwrap().facts.unwrap().deaths, Some(3));
    assert!(
        !incident.timeline.iter().any(|e| e.event_type == "updated"),
        "{:?}",
        incident.timeline
    );
}
