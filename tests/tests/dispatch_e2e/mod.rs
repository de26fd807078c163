//! End-to-end dispatch (issue 5): scarce hazmat units shared by simultaneous incidents, unit
//! commands over NATS, the dry-run recommendation and bookings by hand over gRPC.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use muster_proto::v1 as pb;
use test_support::eventually;
use tonic::Code;

use crate::system::{CHEMICAL_PARK, System, WAIT, report};

fn facts_deaths(deaths: i64) -> pb::Facts {
    pb::Facts {
        deaths: Some(deaths),
        ..Default::default()
    }
}

async fn report_at(system: &System, township: &str, deaths: i64) -> String {
    system
        .intake()
        .await
        .report_incident(report(
            "accident.hazardous_chemicals",
            township,
            facts_deaths(deaths),
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

async fn assignments(system: &System, incident_id: &str) -> pb::GetAssignmentsResponse {
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

/// Three grade II chemical accidents at once, at the chemical park and its neighbours, each
/// plan asking for 4 hazmat units of the region's 5: no unit is booked to two incidents, at
/// most 5 hazmat bookings exist, and the unmet hazmat is a shortfall naming `none_available`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_simultaneous_incidents_share_the_scarce_hazmat_units_without_double_booking() {
    let system = System::start().await;
    let hazmat_in_region = system
        .region
        .units
        .iter()
        .filter(|unit| unit.unit_type == "hazmat")
        .count();
    assert_eq!(hazmat_in_region, 5);
    let townships = [CHEMICAL_PARK, "390202001", "390202002"];
    // 12 deaths: grade II, whose plan asks for 4 hazmat units.
    let ids = futures_util::future::join_all(
        townships
            .iter()
            .map(|township| report_at(&system, township, 12)),
    )
    .await;

    let mut holder: HashMap<String, String> = HashMap::new();
    let mut hazmat_booked = 0;
    let mut hazmat_short = 0;
    for id in &ids {
        // Intake's read model and dispatch's own record must both show no double booking.
        let incident = system.responding(id).await;
        let read_model = incident.units.unwrap();
        assert!(
            read_model
                .assignments
                .iter()
                .all(|a| !a.reason_codes.is_empty()),
            "reason codes reach intake's read model: {read_model:?}"
        );
        let record = assignments(&system, id).await.units.unwrap();
        assert_eq!(record.plan_id, "hazchem-II", "{id}");
        let in_read_model: HashSet<&str> = read_model
            .assignments
            .iter()
            .map(|a| a.unit_id.as_str())
            .collect();
        for assignment in &record.assignments {
            assert!(
                in_read_model.contains(assignment.unit_id.as_str()),
                "{} on {id} in dispatch but not in intake",
                assignment.unit_id
            );
            if let Some(other) = holder.insert(assignment.unit_id.clone(), id.clone()) {
                panic!("{} booked to both {other} and {id}", assignment.unit_id);
            }
            assert_eq!(assignment.reason_codes[0], "closest_by_eta");
            assert!(assignment.eta_minutes > 0.0, "{assignment:?}");
            if assignment.unit_type == "hazmat" {
                hazmat_booked += 1;
            }
        }
        if let Some(short) = record.shortfalls.iter().find(|s| s.unit_type == "hazmat") {
            assert!(
                short.reason_codes.iter().any(|c| c == "none_available"),
                "{short:?}"
            );
            hazmat_short += short.required - short.assigned;
        }
    }
    assert!(
        hazmat_booked <= hazmat_in_region,
        "{hazmat_booked} hazmat bookings"
    );
    assert_eq!(
        hazmat_booked, hazmat_in_region,
        "every hazmat unit is in use"
    );
    assert_eq!(
        hazmat_short as usize,
        3 * 4 - hazmat_booked,
        "the unmet hazmat is reported as shortfalls"
    );
    // Dispatch's unit records agree: each unit names the one incident holding it.
    for unit in board(&system).await {
        assert_eq!(
            holder.get(&unit.id).cloned().unwrap_or_default(),
            unit.incident_id,
            "unit board disagrees for {}",
            unit.id
        );
        if !unit.incident_id.is_empty() {
            assert!(unit.eta_minutes > 0.0, "the board shows the ETA: {unit:?}");
        }
    }
}

async fn publish_command(
    system: &System,
    unit_id: &str,
    event: pb::UnitStatusEvent,
    incident_id: &str,
    reason: &str,
    msg_id: &str,
) {
    let bus = bus::Bus::connect(system.nats.url(), "terminal", Duration::from_secs(5))
        .await
        .unwrap();
    let subject = bus::subjects::unit_event("live", unit_id, bus::subjects::UNIT_COMMAND).unwrap();
    bus.publish_dedup(
        subject,
        msg_id,
        muster_proto::convert_unit::encode_unit_command(event, incident_id, reason, 0).into(),
        None,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Units acknowledge and decline from their terminals over NATS; a decline books a replacement,
/// a duplicate message changes nothing, and an invalid command changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_acknowledge_and_decline_over_nats() {
    let system = System::start().await;
    // 5 deaths: grade III, two hazmat units.
    let incident_id = report_at(&system, CHEMICAL_PARK, 5).await;
    system.responding(&incident_id).await;
    let hazmat: Vec<String> = assignments(&system, &incident_id)
        .await
        .units
        .unwrap()
        .assignments
        .into_iter()
        .filter(|a| a.unit_type == "hazmat")
        .map(|a| a.unit_id)
        .collect();
    assert_eq!(hazmat.len(), 2);

    publish_command(
        &system,
        &hazmat[0],
        pb::UnitStatusEvent::Acknowledge,
        &incident_id,
        "",
        "terminal-ack-1",
    )
    .await;
    // Invalid: a decline without a reason is terminated and changes nothing.
    publish_command(
        &system,
        &hazmat[1],
        pb::UnitStatusEvent::Decline,
        &incident_id,
        "",
        "terminal-bad-1",
    )
    .await;
    publish_command(
        &system,
        &hazmat[1],
        pb::UnitStatusEvent::Decline,
        &incident_id,
        "crew short",
        "terminal-decline-1",
    )
    .await;
    // The same message again: JetStream and the consumer drop it.
    publish_command(
        &system,
        &hazmat[1],
        pb::UnitStatusEvent::Decline,
        &incident_id,
        "crew short",
        "terminal-decline-1",
    )
    .await;
    let record = eventually("the decline applied", WAIT, || async {
        let record = assignments(&system, &incident_id).await;
        record
            .ended
            .iter()
            .any(|e| e.unit_id == hazmat[1] && e.outcome == "declined")
            .then_some(record)
    })
    .await;
    let declined: Vec<_> = record
        .ended
        .iter()
        .filter(|e| e.unit_id == hazmat[1])
        .collect();
    assert_eq!(declined.len(), 1, "one decline: {:?}", record.ended);
    assert_eq!(declined[0].reason, "crew short");
    let units = record.units.unwrap();
    let replacement = units
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat" && a.reason_codes.iter().any(|c| c == "replacement"))
        .expect("a replacement hazmat unit");
    assert!(!hazmat.contains(&replacement.unit_id));
    let on_board = eventually("the acknowledgement applied", WAIT, || async {
        let board = board(&system).await;
        let unit = board.iter().find(|u| u.id == hazmat[0])?;
        (unit.status == pb::UnitStatus::Enroute as i32).then(|| board.clone())
    })
    .await;
    let declined_unit = on_board.iter().find(|u| u.id == hazmat[1]).unwrap();
    assert_eq!(declined_unit.status, pb::UnitStatus::Available as i32);
    assert!(declined_unit.incident_id.is_empty());
}

/// Recommend is a dry run with reasons; Assign books an available unit and refuses a busy one
/// with FAILED_PRECONDITION naming its state; bad requests are INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_is_a_dry_run_and_assign_books_only_available_units() {
    let system = System::start().await;
    let mut dispatch = system.dispatch().await;
    let dry = dispatch
        .recommend(pb::RecommendRequest {
            kind: "accident.hazardous_chemicals".into(),
            township_code: CHEMICAL_PARK.into(),
            grade: pb::Grade::I as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.plan_id, "hazchem-I");
    let hazmat: Vec<_> = dry
        .candidates
        .iter()
        .filter(|c| c.unit_type == "hazmat")
        .collect();
    assert_eq!(hazmat.len(), 5, "all five hazmat units ranked");
    assert!(
        hazmat
            .windows(2)
            .all(|w| w[0].eta_minutes <= w[1].eta_minutes)
    );
    assert!(
        hazmat[0]
            .reason_codes
            .iter()
            .any(|c| c == "in_jurisdiction")
    );
    assert_eq!(hazmat[0].cascade_depth, 0);
    assert!(
        hazmat.iter().any(
            |c| c.reason_codes.iter().any(|r| r == "outside_jurisdiction") && c.cascade_depth >= 1
        ),
        "units from elsewhere say so: {hazmat:?}"
    );
    let short = dry
        .shortfalls
        .iter()
        .find(|s| s.unit_type == "hazmat")
        .unwrap();
    assert_eq!((short.required, short.assigned), (8, 5));
    assert_eq!(short.reason_codes[0], "none_available");
    // Nothing was booked.
    assert!(
        board(&system)
            .await
            .iter()
            .all(|u| u.incident_id.is_empty())
    );

    let incident_id = report_at(&system, CHEMICAL_PARK, 5).await;
    system.responding(&incident_id).await;
    let booked = assignments(&system, &incident_id).await.units.unwrap();
    let busy = booked
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat")
        .unwrap()
        .unit_id
        .clone();
    // For the incident: the plan is met, nothing more to recommend.
    let for_incident = dispatch
        .recommend(pb::RecommendRequest {
            incident_id: incident_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_incident.plan_id, "hazchem-III");
    assert!(for_incident.candidates.is_empty(), "{for_incident:?}");

    let refused = dispatch
        .assign(pb::AssignRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            unit_id: busy.clone(),
            by: "dispatcher Li".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("Dispatched"), "{refused:?}");

    let free = board(&system)
        .await
        .into_iter()
        .find(|u| u.unit_type == "hazmat" && u.status == pb::UnitStatus::Available as i32)
        .unwrap();
    let assigned = dispatch
        .assign(pb::AssignRequest {
            namespace: String::new(),
            incident_id: incident_id.clone(),
            unit_id: free.id.clone(),
            by: "dispatcher Li".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        assigned.unit.unwrap().status,
        pb::UnitStatus::Dispatched as i32
    );
    assert_eq!(
        assigned.assignment.unwrap().reason_codes[0],
        "dispatcher_assigned"
    );
    // Intake hears of it.
    system
        .incident_when("the booking by hand in intake", &incident_id, |incident| {
            incident
                .units
                .as_ref()
                .is_some_and(|u| u.assignments.iter().any(|a| a.unit_id == free.id))
        })
        .await;
    // The thin lifecycle RPCs.
    let acked = dispatch
        .acknowledge_assignment(pb::AcknowledgeAssignmentRequest {
            namespace: String::new(),
            unit_id: free.id.clone(),
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.unit.unwrap().status, pb::UnitStatus::Enroute as i32);
    let released = dispatch
        .release_unit(pb::ReleaseUnitRequest {
            namespace: String::new(),
            unit_id: free.id.clone(),
            incident_id: incident_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        released.unit.unwrap().status,
        pb::UnitStatus::Returning as i32
    );
    let no_reason = dispatch
        .decline_assignment(pb::DeclineAssignmentRequest {
            namespace: String::new(),
            unit_id: busy.clone(),
            incident_id: incident_id.clone(),
            reason: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(no_reason.message().contains("reason"), "{no_reason:?}");

    for (request, words) in [
        (pb::RecommendRequest::default(), "incident_id"),
        (
            pb::RecommendRequest {
                kind: "accident.hazardous_chemicals".into(),
                township_code: "999".into(),
                ..Default::default()
            },
            "township",
        ),
        (
            pb::RecommendRequest {
                incident_id: "bad id!".into(),
                ..Default::default()
            },
            "incident_id",
        ),
        (
            pb::RecommendRequest {
                kind: "x".repeat(10_000),
                township_code: CHEMICAL_PARK.into(),
                ..Default::default()
            },
            "longer than",
        ),
    ] {
        let error = dispatch.recommend(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert!(error.message().contains(words), "{error:?}");
    }
}
