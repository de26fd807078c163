//! Metrics end to end (issue 9, observability): a report and feed alerts move intake's counters,
//! the latency histogram and the open-incident gauges; escalation counts overdue deadlines and
//! dispatch counts units by type and status; every service exposes its outbox depth and its
//! consumers' lag. Scraped over HTTP from each service's `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use muster_proto::v1 as pb;
use test_support::eventually;

use crate::system::{CHEMICAL_PARK, Service, System, WAIT, report};

async fn scrape(addr: SocketAddr) -> String {
    let response = test_support::http_get(addr, "/metrics")
        .await
        .expect("the metrics endpoint answers");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some(lifecycle::metrics::CONTENT_TYPE)
    );
    response.text()
}

/// The value of the sample whose name and labels are exactly `series` (as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// The sum of every sample of `name` whose labels contain all of `labels` (`k="v"` pieces).
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn metrics_addr(system: &System, service: Service) -> SocketAddr {
    let running = match service {
        Service::Intake => &system.intake,
        Service::Escalation => &system.escalation,
        Service::Dispatch => &system.dispatch,
    };
    running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("service running with metrics")
}

fn fixture(path: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_feed_alerts_move_the_counters_histogram_and_gauges() {
    let mut system = System::empty().await;
    // A compressed clock (one policy minute = 20 ms) so a reporting deadline falls due quickly.
    system.escalation_policy = Some(Arc::new(
        domain::escalation::EscalationPolicy::embedded_default().with_minute_ms(20),
    ));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let intake_metrics = metrics_addr(&system, Service::Intake);

    // Before anything: the families are there at zero.
    let text = scrape(intake_metrics).await;
    assert!(
        text.contains("# TYPE muster_incident_latency_seconds histogram\n"),
        "{text}"
    );
    assert_eq!(
        value(&text, "muster_reports_total{outcome=\"accepted\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "muster_open_incidents{grade=\"II\"}"),
        Some(0.0)
    );

    // An officer's report: grade II, the plan's units booked.
    let mut intake = system.intake().await;
    let incident_id = intake
        .report_incident(report(
            "accident.hazardous_chemicals",
            CHEMICAL_PARK,
            pb::Facts {
                deaths: Some(12),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.responding(&incident_id).await;
    // An invalid one.
    let invalid = intake
        .report_incident(report("no.such.kind", CHEMICAL_PARK, pb::Facts::default()))
        .await;
    assert!(invalid.is_err());

    // A feed alert, its resend, and a refused body.
    let body = fixture("crates/feeds/tests/fixtures/cap/zh-cn-earthquake.xml");
    let (status, answer, _) = system.post_feed("cap", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["outcome"], "created", "{answer}");
    let (status, answer, _) = system.post_feed("cap", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["outcome"], "duplicate", "{answer}");
    let (status, _, _) = system
        .post_feed("cap", b"<!DOCTYPE x><x/>", Some("usgs-quakes"))
        .await;
    assert_eq!(status, 400);

    // Intake: counters by outcome, the latency of the booked incident, open incidents by grade.
    let text = eventually("intake metrics", WAIT, || async {
        let text = scrape(intake_metrics).await;
        let latency = value(&text, "muster_incident_latency_seconds_count").unwrap_or(0.0);
        let graded = sum(&text, "muster_open_incidents", &["grade=\"II\""]);
        (latency >= 1.0 && graded >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        value(&text, "muster_reports_total{outcome=\"accepted\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "muster_reports_total{outcome=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(
        sum(
            &text,
            "muster_feed_alerts_total",
            &["format=\"cap\"", "outcome=\"created\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "muster_feed_alerts_total",
            &["format=\"cap\"", "outcome=\"duplicate\""]
        ),
        1.0
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("muster_feed_alerts_total{feed=\"")),
        "alerts are labelled by feed: {text}"
    );
    assert_eq!(
        value(
            &text,
            "muster_feed_rejected_total{format=\"cap\",code=\"doctype_forbidden\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The histogram: cumulative buckets ending in +Inf = count, and a sum that fits.
    let count = value(&text, "muster_incident_latency_seconds_count").unwrap();
    assert_eq!(
        value(&text, "muster_incident_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(count)
    );
    let mut previous = 0.0;
    for bound in lifecycle::metrics::LATENCY_BUCKETS {
        let series = format!(
            "muster_incident_latency_seconds_bucket{{le=\"{}\"}}",
            lifecycle::metrics::format_value(bound)
        );
        let cumulative = value(&text, &series).unwrap_or_else(|| panic!("{series}\n{text}"));
        assert!(cumulative >= previous, "{series} is cumulative");
        previous = cumulative;
    }
    let latency_sum = value(&text, "muster_incident_latency_seconds_sum").unwrap();
    assert!(
        latency_sum > 0.0 && latency_sum < 60.0 * count,
        "{latency_sum}"
    );
    assert!(sum(&text, "muster_open_incidents", &[]) >= 2.0, "{text}");
    assert!(value(&text, "muster_outbox_depth{service=\"intake\"}").is_some());
    assert!(
        value(
            &text,
            "muster_consumer_pending{service=\"intake\",consumer=\"intake-projection-live\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        value(
            &text,
            "muster_consumer_pending{service=\"intake\",consumer=\"intake-feeds\"}"
        )
        .is_some()
    );

    // Escalation: the first reporting hop (60 policy minutes = 1.2 s) falls due unmet.
    let escalation_metrics = metrics_addr(&system, Service::Escalation);
    let text = eventually("an overdue deadline", WAIT, || async {
        let text = scrape(escalation_metrics).await;
        (value(&text, "muster_overdue_deadlines").unwrap_or(0.0) >= 1.0).then_some(text)
    })
    .await;
    assert!(text.contains("# TYPE muster_overdue_deadlines gauge\n"));
    assert!(value(&text, "muster_outbox_depth{service=\"escalation\"}").is_some());
    assert!(
        value(
            &text,
            "muster_consumer_pending{service=\"escalation\",consumer=\"escalation-grader-live\"}"
        )
        .is_some(),
        "{text}"
    );

    // Dispatch: booked units are dispatched, the rest available, by type.
    let text = scrape(metrics_addr(&system, Service::Dispatch)).await;
    assert!(
        sum(&text, "muster_units", &["status=\"dispatched\""]) >= 1.0,
        "{text}"
    );
    assert!(sum(&text, "muster_units", &["status=\"available\""]) >= 1.0);
    let total = sum(&text, "muster_units", &[]);
    assert_eq!(total as usize, system.region.units.len(), "{text}");
    assert!(value(&text, "muster_outbox_depth{service=\"dispatch\"}").is_some());
    assert!(
        value(
            &text,
            "muster_consumer_pending{service=\"dispatch\",consumer=\"dispatch-assigner-live\"}"
        )
        .is_some()
    );

    // After a restart, intake recounts open incidents from sled.
    system.stop_service(Service::Intake).await;
    system.start_service(Service::Intake).await;
    let text = scrape(metrics_addr(&system, Service::Intake)).await;
    assert!(
        value(&text, "muster_open_incidents{grade=\"II\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(sum(&text, "muster_open_incidents", &[]) >= 2.0, "{text}");
}

/// The Grafana dashboard in deploy/ parses, has a Prometheus datasource variable, and charts
/// every series the services expose.
#[test]
fn the_grafana_dashboard_charts_every_series() {
    let text = String::from_utf8(fixture("deploy/grafana/muster-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .collect();
    for series in [
        "muster_feed_alerts_total",
        "muster_feed_rejected_total",
        "muster_reports_total",
        "muster_incident_latency_seconds_bucket",
        "muster_open_incidents",
        "muster_overdue_deadlines",
        "muster_units",
        "muster_outbox_depth",
        "muster_consumer_pending",
    ] {
        assert!(
            exprs.iter().any(|expr| expr.contains(series)),
            "no panel charts {series}"
        );
    }
    assert!(
        exprs
            .iter()
            .any(|expr| expr.contains("histogram_quantile(0.99"))
    );
}
