//! Deterministic replay (`musterctl replay`) against the real services: the history intake keeps
//! (`ListIncidentEvents`), escalations on a compressed clock, acknowledgements, a filed report,
//! an upgrade with its lead change, and the first divergence under another policy or rulebook.

use std::path::Path;
use std::sync::Arc;

use muster_proto::v1 as pb;
use tonic::Code;

use crate::system::{CHEMICAL_PARK, Service, System, report};

/// One policy minute lasts this long in these tests: a grade III acknowledgement deadline
/// (15 minutes) is 1.5 s, the first report (60 minutes) is due 6 s after grading.
const MINUTE_MS: i64 = 100;

async fn compressed_system() -> System {
    let mut system = System::empty().await;
    system.escalation_policy = Some(Arc::new(
        domain::escalation::EscalationPolicy::embedded_default().with_minute_ms(MINUTE_MS),
    ));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    system
}

async fn history(system: &System, incident_id: &str, page_size: u32) -> Vec<pb::IncidentEvent> {
    let mut client = system.intake().await;
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_incident_events(pb::ListIncidentEventsRequest {
                incident_id: incident_id.into(),
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= page_size.max(1) as usize || page_size == 0);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn event_type(event: &pb::IncidentEvent) -> &'static str {
    use pb::incident_event::Body;
    match event.body.as_ref() {
        Some(Body::Reported(_)) => "reported",
        Some(Body::Graded(_)) => "graded",
        Some(Body::UnitsAssigned(_)) => "units_assigned",
        Some(Body::Updated(_)) => "updated",
        Some(Body::Acknowledged(_)) => "acknowledged",
        Some(Body::Escalated(_)) => "escalated",
        Some(Body::LeadChanged(_)) => "lead_changed",
        Some(Body::Closed(_)) => "closed",
        Some(_) => "other",
        None => "none",
    }
}

async fn report_chemical(system: &System, deaths: i64) -> String {
    let mut request = report(
        "accident.hazardous_chemicals",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(deaths),
            ..Default::default()
        },
    );
    request.reported_by = "Officer Zhou Min".into();
    system
        .intake()
        .await
        .report_incident(request)
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

async fn update_deaths(system: &System, incident_id: &str, deaths: i64) {
    system
        .intake()
        .await
        .update_incident(pb::UpdateIncidentRequest {
            incident_id: incident_id.into(),
            facts: Some(pb::Facts {
                deaths: Some(deaths),
                ..Default::default()
            }),
            updated_by: "scene".into(),
            request_id: format!("deaths-{deaths}"),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn count(incident: &pb::Incident, event_type: &str) -> usize {
    incident
        .timeline
        .iter()
        .filter(|t| t.event_type == event_type)
        .count()
}

/// `ListIncidentEvents`: every event in delivery order, paged, without the reporter's identity;
/// bad requests are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_holds_every_event_in_order_without_the_reporter() {
    let system = System::start().await;
    let id = report_chemical(&system, 3).await;
    system.responding(&id).await;
    update_deaths(&system, &id, 12).await;
    let incident = system
        .incident_when("regraded and reassigned", &id, |i| {
            count(i, "graded") == 2 && count(i, "units_assigned") >= 2
        })
        .await;

    let all = history(&system, &id, 0).await;
    let types: Vec<&str> = all.iter().map(event_type).collect();
    assert_eq!(types.first(), Some(&"reported"), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "graded").count(),
        2,
        "{types:?}"
    );
    // Causal order: each grading before the assignment it led to, the update before the regrade.
    let position = |wanted: &str, nth: usize| {
        types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == wanted)
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {wanted} #{nth} in {types:?}"))
    };
    assert!(position("graded", 0) < position("units_assigned", 0));
    assert!(position("updated", 0) < position("graded", 1));
    // The same events as the timeline, one for one.
    assert_eq!(all.len(), incident.timeline.len(), "{types:?}");
    for event in &all {
        assert_eq!(event.incident_id, id);
        assert!(!event.event_id.is_empty());
        match event.body.as_ref() {
            Some(pb::incident_event::Body::Reported(report)) => {
                assert_eq!(report.reported_by, "", "the history keeps no reporter")
            }
            Some(pb::incident_event::Body::Graded(graded)) => {
                assert_eq!(graded.report.as_ref().unwrap().reported_by, "")
            }
            _ => {}
        }
    }
    // Pages of two give the same events in the same order.
    let paged = history(&system, &id, 2).await;
    let ids = |events: &[pb::IncidentEvent]| -> Vec<String> {
        events.iter().map(|e| e.event_id.clone()).collect()
    };
    assert_eq!(ids(&paged), ids(&all));

    // Closed, the history is folded into one record (intake's `FoldedHistory`) and reads the
    // same: every event before, then the closing one and whatever came after it, in whole and in
    // pages.
    system
        .intake()
        .await
        .close_incident(pb::CloseIncidentRequest {
            namespace: String::new(),
            incident_id: id.clone(),
            reason: "leak sealed, scene handed over".into(),
        })
        .await
        .unwrap();
    // The close is answered by dispatch releasing the incident's units: wait for that event, the
    // last one the close causes, so the history has settled before it is paged.
    let released_after_close = |events: &[pb::IncidentEvent]| {
        events
            .iter()
            .skip_while(|event| event_type(event) != "closed")
            .any(|event| match event.body.as_ref() {
                Some(pb::incident_event::Body::UnitsAssigned(units)) => {
                    !units.released_unit_ids.is_empty()
                }
                _ => false,
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let closed = loop {
        let now = history(&system, &id, 0).await;
        if released_after_close(&now) {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no closed event and release of units in the history: {:?}",
            now.iter().map(event_type).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        ids(&closed[..all.len()]),
        ids(&all),
        "the events before the close"
    );
    for page_size in [1, 2, 3] {
        // A read in pages equals a whole read taken before and after it. Should an event still
        // arrive in between (the two whole reads differ), the comparison is made again.
        let mut attempts = 0;
        loop {
            let before = history(&system, &id, 0).await;
            let paged = history(&system, &id, page_size).await;
            let after = history(&system, &id, 0).await;
            if ids(&before) == ids(&after) {
                assert_eq!(ids(&paged), ids(&after), "pages of {page_size}");
                assert!(paged.len() >= closed.len());
                break;
            }
            attempts += 1;
            assert!(attempts < 5, "the history kept changing while paged");
        }
    }

    let mut client = system.intake().await;
    let bad_token = client
        .list_incident_events(pb::ListIncidentEventsRequest {
            incident_id: id.clone(),
            page_token: "yesterday".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert!(bad_token.message().contains("page_token"), "{bad_token:?}");
    let unknown = client
        .list_incident_events(pb::ListIncidentEventsRequest {
            incident_id: "INC-19700101-999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let missing = client
        .list_incident_events(pb::ListIncidentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("incident_id"), "{missing:?}");
}

/// On a compressed clock the record holds timer escalations, an acknowledgement, a filed report
/// and an upgrade that moves the lead; the replay reproduces every one of them and the deadlines,
/// and under a stricter policy (shorter minutes) names the first escalation that comes out
/// differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reproduces_escalations_acknowledgements_and_deadlines() {
    let system = compressed_system().await;
    let id = report_chemical(&system, 3).await;
    // Grade III, led by the city; nobody acknowledges for 1.5 s: the chain escalates.
    system
        .incident_when("escalated by its deadline", &id, |i| {
            count(i, "escalated") >= 1
        })
        .await;
    let mut escalation = system.escalation().await;
    escalation
        .acknowledge(pb::AcknowledgeRequest {
            incident_id: id.clone(),
            officer: "Duty officer Liu".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadlines = escalation
        .list_deadlines(pb::ListDeadlinesRequest {
            incident_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deadlines;
    let first = deadlines.first().expect("a first report is owed");
    escalation
        .submit_report(pb::SubmitReportRequest {
            incident_id: id.clone(),
            obligation_id: first.obligation_id,
            ..Default::default()
        })
        .await
        .unwrap();
    // New facts: grade II, the province leads and must acknowledge in 0.5 s.
    update_deaths(&system, &id, 12).await;
    let incident = system
        .incident_when("upgraded, the province escalated", &id, |i| {
            count(i, "graded") == 2
                && count(i, "lead_changed") == 1
                && count(i, "escalated") >= 2
                && count(i, "units_assigned") >= 2
        })
        .await;
    escalation
        .acknowledge(pb::AcknowledgeRequest {
            incident_id: id.clone(),
            officer: "Province duty officer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    system
        .incident_when("acknowledged twice", &id, |i| count(i, "acknowledged") == 2)
        .await;
    assert!(count(&incident, "escalated") >= 2);

    let minute = MINUTE_MS.to_string();
    let (result, out) = system
        .musterctl(&["replay", &id, "--escalation-minute-ms", &minute])
        .await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(out.contains("SAME"), "{out}");
    assert!(out.contains("hazchem-III → hazchem-II"), "{out}");
    assert!(out.contains("(timer) escalated"), "{out}");
    assert!(out.contains("acknowledged by"), "{out}");
    assert!(out.contains("lead 390200 → 390000 (regrade)"), "{out}");
    assert!(
        out.contains(&format!(
            "report for obligation {} filed",
            first.obligation_id
        )),
        "{out}"
    );

    // The JSON says the same, outcome by outcome.
    let (result, json) = system
        .musterctl(&["--json", "replay", &id, "--escalation-minute-ms", &minute])
        .await;
    assert_eq!(result, Ok(0), "{json}");
    let view: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["same"], true);
    let recorded = view["recorded"]["outcomes"].as_array().unwrap().len();
    let replayed = view["replayed"]["outcomes"].as_array().unwrap().len();
    assert!(recorded >= 7, "{json}");
    assert!(replayed >= recorded, "{json}");
    assert_eq!(
        view["replayed"]["deadlines"].as_array().unwrap().len(),
        view["recorded_deadlines"].as_array().unwrap().len(),
        "{json}"
    );

    // A policy whose minutes are half as long: the first escalation comes 0.75 s after grading
    // instead of 1.5 s, and the replay says so.
    let half = (MINUTE_MS / 2).to_string();
    let (result, out) = system
        .musterctl(&[
            "replay",
            &id,
            "--escalation-minute-ms",
            &half,
            "--tolerance-ms",
            "300",
        ])
        .await;
    assert_eq!(result, Ok(1), "{out}");
    assert!(out.contains("DIVERGES at outcome "), "{out}");
    assert!(out.contains("escalated 390200 → 390000"), "{out}");
}

/// A rulebook where 12 deaths are still grade III (the sample province's own override is the
/// rule that applies there): the upgrade, its lead change and its plan do not happen in the
/// replay, and the first divergence names the lead change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_names_the_first_divergence_under_another_rulebook() {
    let system = System::start().await;
    let id = report_chemical(&system, 3).await;
    system.responding(&id).await;
    update_deaths(&system, &id, 12).await;
    system
        .incident_when("regraded and reassigned", &id, |i| {
            count(i, "graded") == 2 && count(i, "units_assigned") >= 2
        })
        .await;

    let (result, out) = system.musterctl(&["replay", &id]).await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(out.contains("SAME"), "{out}");
    // Dispatch re-ran both of its recommendations (grade III, then the difference for II) on
    // the boards it recorded with them, and picked the same units.
    assert!(
        out.contains(
            "recommendations: 2 replayed by dispatch from their recorded boards, 2 pick the same units"
        ),
        "{out}"
    );
    let replayed = system
        .dispatch()
        .await
        .replay_recommendations(pb::ReplayRecommendationsRequest {
            incident_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .recommendations;
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    let assigned = system
        .dispatch()
        .await
        .get_assignments(pb::GetAssignmentsRequest {
            incident_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let booked: Vec<String> = assigned
        .units
        .unwrap_or_default()
        .assignments
        .iter()
        .map(|a| a.unit_id.clone())
        .collect();
    for r in &replayed {
        assert!(r.same, "{r:?}");
        assert_eq!(r.recorded_unit_ids, r.replayed_unit_ids);
        assert!(r.board_units as usize >= r.recorded_unit_ids.len(), "{r:?}");
        for unit in &r.recorded_unit_ids {
            assert!(booked.contains(unit), "{unit} was booked: {booked:?}");
        }
    }
    assert_eq!(replayed[0].plan_id, "hazchem-III");
    assert_eq!(replayed[1].plan_id, "hazchem-II");
    let unknown = system
        .dispatch()
        .await
        .replay_recommendations(pb::ReplayRecommendationsRequest {
            incident_id: "INC-19700101-999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let region = system.dir.path().join("region");
    std::fs::create_dir_all(&region).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/region");
    for name in domain::region::DEFAULT_FILE_NAMES {
        let mut text = std::fs::read_to_string(data.join(name)).unwrap();
        if name == "rulebook.toml" {
            let before = "[[rule.override.threshold]]\ngrade = \"II\"\ndeaths_min = 10\n";
            assert!(text.contains(before));
            text = text.replacen(
                before,
                "[[rule.override.threshold]]\ngrade = \"II\"\ndeaths_min = 20\n",
                1,
            );
        }
        std::fs::write(region.join(name), text).unwrap();
    }
    let (result, out) = system
        .musterctl(&["replay", &id, "--region-dir", region.to_str().unwrap()])
        .await;
    assert_eq!(result, Ok(1), "{out}");
    assert!(out.contains("DIVERGES at outcome 2"), "{out}");
    // The upgrade (its lead change first, then the grading) is where the two part.
    assert!(
        out.contains("recorded lead 390200 → 390000 (regrade)") && out.contains("replayed nothing"),
        "{out}"
    );

    // Bad flags are named.
    let (result, out) = system
        .musterctl(&["replay", &id, "--escalation-minute-ms", "0"])
        .await;
    let error = result.unwrap_err();
    assert!(error.contains("--escalation-minute-ms"), "{error} {out}");
    let (result, _) = system.musterctl(&["replay", "INC-19700101-999"]).await;
    let error = result.unwrap_err();
    assert!(
        error.contains("NOT_FOUND") || error.contains("no incident"),
        "{error}"
    );
}
