//! End-to-end: reports flow intake → escalation → dispatch over a real nats-server and back into
//! intake's read model, visible over gRPC and through musterctl.

mod system;

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
    eventually("reported entry has its event id", WAIT, || {
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
                .iter()
                .all(|e| !e.event_id.is_empty())
                .then_some(())
        }
    })
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
            .info_with_subjects("muster.live.incident.*.graded")
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
