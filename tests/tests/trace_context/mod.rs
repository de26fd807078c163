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

mod otlp {
    use std::sync::{Arc, Mutex};

    use muster_proto::opentelemetry::proto::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use muster_proto::opentelemetry::proto::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use muster_proto::opentelemetry::proto::common::v1::any_value;
    use muster_proto::opentelemetry::proto::trace::v1::Span;
    use muster_proto::v1 as pb;

    use super::TRACE_ID;
    use crate::system::{CHEMICAL_PARK, Service, ServiceProcess, System, report};

    /// An OTLP/gRPC receiver on a real socket: (service.name, span) of everything sent to it.
    #[derive(Clone, Default)]
    struct Receiver {
        spans: Arc<Mutex<Vec<(String, Span)>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap();
            for resource_spans in request.into_inner().resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Escalation and dispatch as `muster serve` processes with `--otlp-endpoint`: the spans of
    /// an officer's report reach the receiver from both, under the trace id the officer's call
    /// carried, each the child of the hop before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_services_export_a_reports_spans_over_otlp_under_its_trace_id() {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let mut system = System::empty().await;
        system.start_service(Service::Intake).await;
        let log = system.dir.path().join("services.log");
        let _escalation = ServiceProcess::spawn_with(
            Service::Escalation,
            system.nats.url(),
            &system.data_dir(Service::Escalation),
            &log,
            &["--otlp-endpoint", &endpoint],
        );
        let _dispatch = ServiceProcess::spawn_with(
            Service::Dispatch,
            system.nats.url(),
            &system.data_dir(Service::Dispatch),
            &log,
            &["--otlp-endpoint", &endpoint],
        );

        let mut request = tonic::Request::new(report(
            "accident.hazardous_chemicals",
            CHEMICAL_PARK,
            pb::Facts {
                deaths: Some(12),
                ..Default::default()
            },
        ));
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        let id = system
            .intake()
            .await
            .report_incident(request)
            .await
            .unwrap()
            .into_inner()
            .incident_id;

        // Spans go out within a second of closing.
        let deadline = tokio::time::Instant::now() + crate::system::WAIT;
        let (grading, booking) = loop {
            let spans = receiver.spans.lock().unwrap().clone();
            let ours = |service: &str| {
                spans
                    .iter()
                    .find(|(name, span)| {
                        name == service
                            && span.name == "handle"
                            && hex(&span.trace_id) == TRACE_ID
                            && span.attributes.iter().any(|kv| {
                                kv.key == "incident_id"
                                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                                        == Some(&any_value::Value::StringValue(id.clone()))
                            })
                    })
                    .map(|(_, span)| span.clone())
            };
            if let (Some(grading), Some(booking)) =
                (ours("muster-escalation"), ours("muster-dispatch"))
            {
                break (grading, booking);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no spans of trace {TRACE_ID} from both services: {spans:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        // Consumer spans, each with its own id, whose parent is the hop that published the
        // message: dispatch's booking continues escalation's grading.
        use muster_proto::opentelemetry::proto::trace::v1::span::SpanKind;
        assert_eq!(grading.kind, SpanKind::Consumer as i32);
        assert_eq!(booking.kind, SpanKind::Consumer as i32);
        assert_eq!(grading.span_id.len(), 8);
        assert_eq!(grading.parent_span_id.len(), 8, "{grading:?}");
        assert_eq!(booking.parent_span_id, grading.span_id, "{booking:?}");
        assert!(grading.end_time_unix_nano >= grading.start_time_unix_nano);
        assert!(booking.start_time_unix_nano >= grading.start_time_unix_nano);
    }
}
