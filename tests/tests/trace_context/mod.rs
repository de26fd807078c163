//! Trace context across services: a W3C `traceparent` sent with a gRPC call comes back on the
//! answer and travels on every event the report causes (NATS header `traceparent`), through
//! intake, escalation and dispatch, with a new span at each hop.

use std::collections::HashMap;

use futures_util::StreamExt;
use muster_proto::v1 as pb;

use crate::system::{CHEMICAL_PARK, System, report};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// (trace id, span id) of a traceparent header.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    (fields[1].to_string(), fields[2].to_string())
}

/// Collects the traceparent of each event type published for `incident_id` until `types` are
/// all seen.
async fn traceparents(
    messages: &mut async_nats::Subscriber,
    incident_id: &str,
    types: &[&str],
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + crate::system::WAIT;
    while !types.iter().all(|t| seen.contains_key(*t)) {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} of {types:?} within the bound"))
            .expect("subscription open");
        let subject = message.subject.to_string();
        let Some(parsed) = bus::subjects::parse_incident_event(&subject)
            .filter(|parsed| parsed.incident_id == incident_id && parsed.partition.is_some())
        else {
            continue;
        };
        let rest = parsed.event_type;
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("traceparent"))
            .unwrap_or_else(|| panic!("{subject} carries no traceparent"))
            .as_str()
            .to_string();
        seen.insert(rest.to_string(), traceparent);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reports_trace_follows_it_through_all_three_services() {
    let system = System::start().await;
    let nats = async_nats::connect(system.nats.url()).await.unwrap();
    let mut messages = nats.subscribe("muster.live.incident.>").await.unwrap();
    nats.flush().await.unwrap();

    let mut request = tonic::Request::new(report(
        "accident.hazardous_chemicals",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(12),
            ..Default::default()
        },
    ));
    let caller_span = "00f067aa0ba902b7";
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{caller_span}-01").parse().unwrap(),
    );
    let answer = system
        .intake()
        .await
        .report_incident(request)
        .await
        .unwrap();
    let (answer_trace, intake_span) = parts(
        answer
            .metadata()
            .get("traceparent")
            .expect("the answer names the trace")
            .to_str()
            .unwrap(),
    );
    assert_eq!(answer_trace, TRACE_ID);
    assert_ne!(intake_span, caller_span, "intake's own span");
    let incident_id = answer.into_inner().incident_id;

    let seen = traceparents(
        &mut messages,
        &incident_id,
        &["reported", "graded", "units_assigned"],
    )
    .await;
    let (reported_trace, reported_span) = parts(&seen["reported"]);
    let (graded_trace, graded_span) = parts(&seen["graded"]);
    let (assigned_trace, assigned_span) = parts(&seen["units_assigned"]);
    assert_eq!(
        [&reported_trace, &graded_trace, &assigned_trace],
        [TRACE_ID; 3],
        "{seen:?}"
    );
    // reported is sent from intake's span; graded from escalation's, units_assigned from dispatch's.
    assert_eq!(reported_span, intake_span);
    assert_ne!(graded_span, reported_span);
    assert_ne!(assigned_span, graded_span);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_trace_context_starts_a_trace_the_services_carry_on() {
    let system = System::start().await;
    let nats = async_nats::connect(system.nats.url()).await.unwrap();
    let mut messages = nats.subscribe("muster.live.incident.>").await.unwrap();
    nats.flush().await.unwrap();
    let answer = system
        .intake()
        .await
        .report_incident(report(
            "accident.fire",
            CHEMICAL_PARK,
            pb::Facts {
                deaths: Some(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let (trace, _) = parts(
        answer
            .metadata()
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap(),
    );
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, TRACE_ID);
    let incident_id = answer.into_inner().incident_id;
    let seen = traceparents(&mut messages, &incident_id, &["reported", "graded"]).await;
    assert_eq!(parts(&seen["reported"]).0, trace);
    assert_eq!(parts(&seen["graded"]).0, trace);
}
