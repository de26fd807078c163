//! The end of a response: CloseIncident closes the incident for every service and erases the
//! personal data intake holds (the reporter's identity), unless the incident is on legal hold
//! (2024 Emergency Response Law, Art. 85).

use auth::Role;
use muster_proto::v1 as pb;
use tonic::Code;

use crate::system::{CHEMICAL_PARK, System, report};

const REPORTER: &str = "citizen Zhang Wei, 13800138000";
const ERASED: &str = "[erased: personal data, Art. 85]";

async fn reported(system: &System) -> String {
    let mut request = report(
        "accident.hazardous_chemicals",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(3),
            ..Default::default()
        },
    );
    request.reported_by = REPORTER.into();
    let id = system
        .intake()
        .await
        .report_incident(request)
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.responding(&id).await;
    id
}

fn mentions_reporter(incident: &pb::Incident) -> bool {
    let report = incident.report.as_ref().unwrap();
    report.reported_by.contains("Zhang")
        || incident
            .grading
            .as_ref()
            .and_then(|g| g.report.as_ref())
            .is_some_and(|r| r.reported_by.contains("Zhang"))
        || incident
            .timeline
            .iter()
            .any(|entry| entry.description.contains("Zhang"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_response_everywhere_and_erases_the_reporter_unless_held() {
    let system = System::start().await;
    let commander = system.auth.token("Li", "390000", Role::Commander);
    let officer = system.auth.token("Zhao", "390202", Role::Officer);
    let first = reported(&system).await;
    let close = |incident_id: &str, token: &str| {
        let (system, incident_id, token) = (&system, incident_id.to_string(), token.to_string());
        async move {
            system
                .intake_as(&token)
                .await
                .close_incident(pb::CloseIncidentRequest {
                    namespace: String::new(),
                    incident_id,
                    reason: "fire out, scene handed over".into(),
                })
                .await
        }
    };

    // Closing is a commander's decision.
    let status = close(&first, &officer).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = system
        .intake_as(&commander)
        .await
        .close_incident(pb::CloseIncidentRequest {
            namespace: String::new(),
            incident_id: first.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let before = system.responding(&first).await;
    assert!(mentions_reporter(&before));
    let closed = close(&first, &commander)
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(closed.status(), pb::IncidentStatus::Closed);
    assert!(closed.personal_data_erased_at_unix_ms > 0);
    assert_eq!(closed.report.as_ref().unwrap().reported_by, ERASED);
    assert!(!mentions_reporter(&closed), "{closed:#?}");
    assert!(
        closed
            .timeline
            .iter()
            .any(|e| e.event_type == "closed" && e.description.contains("Li")),
        "the closing officer is on the timeline"
    );
    let status = close(&first, &commander).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // The other services end the response: dispatch releases the units, escalation stops.
    let units_back = test_support::eventually("the units released", crate::system::WAIT, || {
        let system = &system;
        let first = first.clone();
        async move {
            let units = system
                .dispatch()
                .await
                .list_units(pb::ListUnitsRequest::default())
                .await
                .ok()?
                .into_inner()
                .units;
            units
                .iter()
                .all(|unit| unit.incident_id != first)
                .then_some(())
        }
    });
    units_back.await;
    // The projection folds the published `closed` event too; the data stays erased.
    let later = system
        .incident_when("closed event folded in", &first, |incident| {
            incident
                .timeline
                .iter()
                .any(|e| e.event_type == "closed" && !e.event_id.is_empty())
        })
        .await;
    assert!(!mentions_reporter(&later), "{later:#?}");
    // A hold cannot bring erased data back.
    let status = system
        .intake_as(&commander)
        .await
        .set_legal_hold(pb::SetLegalHoldRequest {
            namespace: String::new(),
            incident_id: first.clone(),
            hold: true,
            reason: "court order 2026-17".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A held incident keeps its personal data past the end of the response, until released.
    let second = reported(&system).await;
    let held = system
        .intake_as(&commander)
        .await
        .set_legal_hold(pb::SetLegalHoldRequest {
            namespace: String::new(),
            incident_id: second.clone(),
            hold: true,
            reason: "investigation 2026-17".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(held.legal_hold.as_ref().unwrap().by, "Li");
    let closed = close(&second, &commander)
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(closed.personal_data_erased_at_unix_ms, 0);
    assert_eq!(closed.report.as_ref().unwrap().reported_by, REPORTER);
    let still = system
        .incident_when("closed event folded in", &second, |incident| {
            incident
                .timeline
                .iter()
                .any(|e| e.event_type == "closed" && !e.event_id.is_empty())
        })
        .await;
    assert!(
        mentions_reporter(&still),
        "held: kept after the projection saw the close"
    );
    let released = system
        .intake_as(&commander)
        .await
        .set_legal_hold(pb::SetLegalHoldRequest {
            namespace: String::new(),
            incident_id: second.clone(),
            hold: false,
            reason: "investigation closed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(released.legal_hold.is_none());
    assert!(released.personal_data_erased_at_unix_ms > 0);
    assert!(!mentions_reporter(&released), "{released:#?}");

    // The same through musterctl (the admin token of the test system).
    let third = reported(&system).await;
    let (result, out) = system
        .musterctl(&["hold", &third, "--reason", "insurance claim"])
        .await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(out.contains("on legal hold"), "{out}");
    let (result, out) = system
        .musterctl(&["close", &third, "--reason", "scene cleared"])
        .await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(out.contains("personal data kept"), "{out}");
    let (result, out) = system
        .musterctl(&["hold", &third, "--release", "--reason", "claim settled"])
        .await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(out.contains("personal data is erased"), "{out}");
}
