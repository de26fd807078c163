//! Monitoring feeds end to end: real HTTP requests and JetStream messages into intake, through
//! escalation and dispatch, back into the incident read model.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1 as pb;
use serde_json::{Value, json};
use test_support::eventually;

use crate::system::{Service, System, WAIT};

fn fixture(path: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn first_result(answer: &Value) -> &Value {
    &answer["results"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zh_cn_cap_earthquake_alert_becomes_a_graded_incident_and_a_resend_is_a_duplicate() {
    let system = System::start().await;
    let body = fixture("crates/feeds/tests/fixtures/cap/zh-cn-earthquake.xml");
    let (status, answer, _) = system.post_feed("cap", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    let result = first_result(&answer);
    assert_eq!(result["outcome"], "created", "{answer}");
    assert_eq!(result["kind"], "natural.earthquake", "{answer}");
    let incident_id = result["incident_id"].as_str().unwrap().to_string();

    let incident = system
        .incident_when("graded", &incident_id, |i| i.grading.is_some())
        .await;
    let report = incident.report.as_ref().unwrap();
    assert_eq!(report.kind, "natural.earthquake");
    assert_eq!(
        report.warning_level(),
        pb::WarningLevel::Red,
        "Extreme → red"
    );
    assert_eq!(report.facts.as_ref().unwrap().magnitude, Some(5.6));
    assert!(report.township_code.starts_with("390202"), "{report:?}");
    assert_eq!(incident.alert_count, 1);
    assert_eq!(incident.open_alert_count, 1);

    // The same message again (a retrying sender): same answer, no second incident or alert.
    let (status, again, _) = system.post_feed("cap", &body, None).await;
    assert_eq!(status, 200);
    assert_eq!(first_result(&again)["outcome"], "duplicate", "{again}");
    assert_eq!(first_result(&again)["incident_id"], incident_id.as_str());
    let incident = system
        .incident_when("still one alert", &incident_id, |_| true)
        .await;
    assert_eq!(incident.alert_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feed_bodies_get_a_reason_and_store_nothing() {
    let system = System::start().await;
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "cap",
            fixture("../shared/fixtures/cap/invalid_xmlns.cap"),
            400,
            "wrong_namespace",
        ),
        (
            "cap",
            fixture("crates/feeds/tests/fixtures/cap/billion-laughs.xml"),
            400,
            "doctype_forbidden",
        ),
        ("cap", vec![b' '; 10 * 1024 * 1024], 413, "too_large"),
        (
            "alertmanager",
            b"{\"version\": \"3\", \"alerts\": []}".to_vec(),
            400,
            "unsupported",
        ),
    ];
    for (format, body, want_status, want_code) in cases {
        let (status, answer, _) = system.post_feed(format, &body, None).await;
        assert_eq!(status, want_status, "{format}: {answer}");
        assert_eq!(answer["status"], "rejected", "{answer}");
        assert_eq!(answer["code"], want_code, "{answer}");
        assert!(!answer["reason"].as_str().unwrap().is_empty());
    }
    let (status, answer, _) = system.post_feed("rss", b"<rss/>", None).await;
    assert_eq!(status, 404, "{answer}");
    let mut intake = system.intake().await;
    let listed = intake
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.incidents.is_empty(), "{listed:?}");
}

// ---- Helpers -----------------------------------------------------------------------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `unix_ms` as an RFC 3339 UTC timestamp with an explicit offset, as CAP requires.
fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = domain::time::civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

const CAP_SENDER: &str = "cap@chem-park.example.cn";

/// A CAP 1.2 message from [`CAP_SENDER`]: `msg_type` Alert/Update/Cancel, `references` the
/// `sender,identifier,sent` triples it names, one `<info>` with `info_extra` inside it (area,
/// parameters).
#[allow(clippy::too_many_arguments)]
fn cap_xml(
    identifier: &str,
    sent: &str,
    status: &str,
    msg_type: &str,
    references: Option<&str>,
    category: &str,
    event: &str,
    severity: &str,
    headline: &str,
    info_extra: &str,
) -> Vec<u8> {
    let references = references
        .map(|r| format!("\n  <references>{r}</references>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{CAP_SENDER}</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{references}
  <info>
    <language>en-US</language>
    <category>{category}</category>
    <event>{event}</event>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Observed</certainty>
    <headline>{headline}</headline>
{info_extra}
  </info>
</alert>
"#
    )
    .into_bytes()
}

/// A 2 km circle on the chemical park (390202400, centroid 30.05 N 121.75 E).
const PARK_AREA: &str = r#"    <area>
      <areaDesc>Langang Chemical Industrial Park</areaDesc>
      <circle>30.05,121.75 2</circle>
    </area>"#;

/// A gas-leak CAP Alert in the chemical park.
fn gas_alert(identifier: &str, sent: &str, severity: &str) -> Vec<u8> {
    cap_xml(
        identifier,
        sent,
        "Actual",
        "Alert",
        None,
        "CBRNE",
        "Chemical gas leak",
        severity,
        "Chlorine leak at tank farm 3",
        PARK_AREA,
    )
}

/// One USGS-style GeoJSON quake feature.
fn quake_feature(id: &str, lat: f64, lon: f64, mag: f64, time_ms: i64) -> Value {
    json!({
        "type": "Feature",
        "id": id,
        "properties": {
            "mag": mag,
            "place": "near Langang",
            "time": time_ms,
            "type": "earthquake",
            "status": "reviewed",
            "net": "test",
            "title": format!("M {mag:.2} - near Langang"),
        },
        "geometry": {"type": "Point", "coordinates": [lon, lat, 10.0]},
    })
}

fn collection(features: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "FeatureCollection", "features": features})).unwrap()
}

fn has_entry(incident: &pb::Incident, event_type: &str) -> bool {
    incident.timeline.iter().any(|t| t.event_type == event_type)
}

fn entry<'a>(incident: &'a pb::Incident, event_type: &str) -> &'a pb::TimelineEntry {
    incident
        .timeline
        .iter()
        .find(|t| t.event_type == event_type)
        .unwrap_or_else(|| panic!("no {event_type} entry: {:#?}", incident.timeline))
}

fn incident_id_of(answer: &Value) -> String {
    first_result(answer)["incident_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no incident id: {answer}"))
        .to_string()
}

/// Posts and expects a 200 accepted answer.
async fn post_ok(system: &System, format: &str, body: &[u8], feed: Option<&str>) -> Value {
    let (status, answer, _) = system.post_feed(format, body, feed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer
}

/// Waits until the live incident list satisfies `done`.
async fn incidents_when(
    system: &System,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[pb::Incident]) -> bool,
) -> Vec<pb::Incident> {
    let done = &done;
    eventually(what, timeout, || async move {
        let incidents = system.incidents().await;
        done(&incidents).then_some(incidents)
    })
    .await
}

// ---- 1. Surge ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_of_ten_thousand_quake_alerts_over_jetstream_is_one_incident() {
    const MESSAGES: usize = 100;
    const PER_MESSAGE: usize = 100;
    const TOTAL: usize = MESSAGES * PER_MESSAGE;
    let system = System::start().await;
    let (_client, jetstream) = system.feed_nats().await;

    // One epicentre in the chemical park, jittered by up to ±0.001° (~100 m), magnitudes 4.0 to
    // 4.999 with a single 5.0, origin times spread over the last minute.
    let base = now_ms() - 60_000;
    let peak = 6_543;
    let bodies: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|m| {
            collection(
                (0..PER_MESSAGE)
                    .map(|f| {
                        let i = m * PER_MESSAGE + f;
                        let jitter = ((i * 7919) % 2001) as f64 / 1_000_000.0 - 0.001;
                        let mag = if i == peak {
                            5.0
                        } else {
                            4.0 + ((i * 31) % 1000) as f64 / 1000.0
                        };
                        quake_feature(
                            &format!("surge{i:05}"),
                            30.05 + jitter,
                            121.75 - jitter,
                            mag,
                            base + (i as i64 * 6) % 60_000,
                        )
                    })
                    .collect(),
            )
        })
        .collect();

    let started = Instant::now();
    // Publish everything before awaiting any JetStream ack: all acks in flight at once.
    let mut acks = Vec::with_capacity(MESSAGES);
    for body in bodies {
        acks.push(
            jetstream
                .publish(bus::feed::feed_subject("geojson"), body.into())
                .await
                .expect("publish")
                .into_future(),
        );
    }
    for ack in futures_util::future::join_all(acks).await {
        ack.expect("JetStream stored the feed message");
    }
    let published = started.elapsed();

    let incidents = incidents_when(
        &system,
        "one incident with all 10,000 alerts",
        Duration::from_secs(120),
        |incidents| incidents.iter().map(|i| i.alert_count).sum::<u64>() >= TOTAL as u64,
    )
    .await;
    let elapsed = started.elapsed();
    println!(
        "surge: {TOTAL} alerts in {MESSAGES} JetStream messages published in {published:?}, \
         all linked after {elapsed:?}"
    );
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let incident = &incidents[0];
    assert_eq!(incident.alert_count, TOTAL as u64);
    assert_eq!(incident.open_alert_count, TOTAL as u64);
    assert!(incident.recent_alerts.len() <= 20);
    let report = incident.report.as_ref().unwrap();
    assert_eq!(report.kind, "natural.earthquake");
    assert_eq!(report.facts.as_ref().unwrap().magnitude, Some(5.0));
    assert!(report.township_code.starts_with("390202"), "{report:?}");

    // Escalation grades it from the raised magnitude; still exactly one incident afterwards.
    let incident = system
        .incident_when("graded with M5.0", &incident.id, |i| {
            i.grading
                .as_ref()
                .and_then(|g| g.facts.as_ref())
                .is_some_and(|f| f.magnitude == Some(5.0))
        })
        .await;
    assert_eq!(incident.alert_count, TOTAL as u64);
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 2. CAP Update before its Alert --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_update_before_its_alert_is_parked_and_applied_when_the_alert_arrives() {
    let system = System::start().await;
    let sent = rfc3339(now_ms() - 120_000);
    let update_sent = rfc3339(now_ms() - 60_000);
    let reference = format!("{CAP_SENDER},MUSTER-GAS-1,{sent}");
    let update = cap_xml(
        "MUSTER-GAS-1-U1",
        &update_sent,
        "Actual",
        "Update",
        Some(&reference),
        "CBRNE",
        "Chemical gas leak",
        "Extreme",
        "Chlorine leak at tank farm 3 spreading; two dead",
        &format!(
            "    <parameter><valueName>deaths</valueName><value>2</value></parameter>\n{PARK_AREA}"
        ),
    );
    let answer = post_ok(&system, "cap", &update, None).await;
    assert_eq!(first_result(&answer)["outcome"], "parked", "{answer}");
    assert!(
        first_result(&answer).get("incident_id").is_none(),
        "{answer}"
    );
    assert!(system.incidents().await.is_empty());

    let answer = post_ok(
        &system,
        "cap",
        &gas_alert("MUSTER-GAS-1", &sent, "Severe"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    assert_eq!(
        first_result(&answer)["kind"],
        "accident.hazardous_chemicals",
        "{answer}"
    );
    let incident_id = incident_id_of(&answer);
    let incident = system
        .incident_when("graded", &incident_id, |i| i.grading.is_some())
        .await;
    assert_eq!(incident.alert_count, 2, "the alert and its update");
    assert_eq!(
        incident.open_alert_count, 1,
        "an update is not an open alert"
    );
    let report = incident.report.as_ref().unwrap();
    assert_eq!(
        report.warning_level(),
        pb::WarningLevel::Red,
        "Extreme → red"
    );
    assert_eq!(report.facts.as_ref().unwrap().deaths, Some(2));
    assert_eq!(report.township_code, crate::system::CHEMICAL_PARK);
    // The update names the alert as intake stored it.
    let alert_id = first_result(&answer)["alert_id"].as_str().unwrap();
    let updated = entry(&incident, "alert_updated");
    assert!(
        updated.description.contains(alert_id) && updated.description.contains("two dead"),
        "{updated:?}"
    );
    assert_eq!(
        incident
            .grading
            .as_ref()
            .unwrap()
            .facts
            .as_ref()
            .unwrap()
            .deaths,
        Some(2),
        "escalation graded the updated facts"
    );
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 3. A parked update whose alert never comes ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_alert_never_arrives_is_surfaced_for_triage() {
    let mut system = System::empty().await;
    system.park_timeout_ms = Some(1000);
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let reference = format!("{CAP_SENDER},NEVER-SENT,{}", rfc3339(now_ms() - 300_000));
    let update = cap_xml(
        "ORPHAN-UPDATE-1",
        &rfc3339(now_ms()),
        "Actual",
        "Update",
        Some(&reference),
        "CBRNE",
        "Chemical gas leak",
        "Severe",
        "Ammonia leak update",
        PARK_AREA,
    );
    let answer = post_ok(&system, "cap", &update, None).await;
    assert_eq!(first_result(&answer)["outcome"], "parked", "{answer}");

    let incidents = incidents_when(&system, "the parked update surfaced", WAIT, |incidents| {
        !incidents.is_empty()
    })
    .await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let report = incidents[0].report.as_ref().unwrap();
    assert_eq!(
        report.class(),
        pb::IncidentClass::Unclassified,
        "{report:?}"
    );
    assert_eq!(report.kind, "unclassified.unmapped");
    assert!(
        report.summary.contains("surfaced for triage") && report.summary.contains("NEVER-SENT"),
        "{}",
        report.summary
    );
    assert_eq!(incidents[0].alert_count, 1);
    // Surfaced once only.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 4. CAP Cancel ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_cancel_of_the_only_alert_closes_the_incident_and_an_unknown_cancel_is_parked() {
    let system = System::start().await;
    let sent = rfc3339(now_ms() - 60_000);
    let answer = post_ok(
        &system,
        "cap",
        &gas_alert("MUSTER-GAS-2", &sent, "Severe"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    let incident_id = incident_id_of(&answer);
    system
        .incident_when("graded", &incident_id, |i| i.grading.is_some())
        .await;

    let cancel = cap_xml(
        "MUSTER-GAS-2-C",
        &rfc3339(now_ms()),
        "Actual",
        "Cancel",
        Some(&format!("{CAP_SENDER},MUSTER-GAS-2,{sent}")),
        "CBRNE",
        "Chemical gas leak",
        "Minor",
        "False alarm: sensor fault",
        PARK_AREA,
    );
    let answer = post_ok(&system, "cap", &cancel, None).await;
    assert_eq!(first_result(&answer)["outcome"], "applied", "{answer}");
    assert_eq!(first_result(&answer)["incident_id"], incident_id.as_str());
    let incident = system
        .incident_when("closed", &incident_id, |i| {
            i.status() == pb::IncidentStatus::Closed
        })
        .await;
    assert!(
        has_entry(&incident, "alert_cancelled"),
        "{:#?}",
        incident.timeline
    );
    assert!(has_entry(&incident, "closed"), "{:#?}", incident.timeline);
    assert_eq!(incident.open_alert_count, 0);
    // Still closed once escalation and dispatch have seen it all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let incident = system
        .incident_when("still closed", &incident_id, |_| true)
        .await;
    assert_eq!(incident.status(), pb::IncidentStatus::Closed);

    let (status, answer, _) = system
        .post_feed(
            "cap",
            &fixture("../shared/fixtures/cap/no_info_tag.cap"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(first_result(&answer)["outcome"], "parked", "{answer}");
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 5. Exercise and Test -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_exercise_goes_to_the_drill_namespace_and_test_creates_nothing() {
    let system = System::start().await;
    let answer = post_ok(
        &system,
        "cap",
        &fixture("crates/feeds/tests/fixtures/cap/status-exercise.xml"),
        None,
    )
    .await;
    let result = first_result(&answer);
    assert_eq!(result["namespace"], "drill.feeds", "{answer}");
    assert_eq!(result["outcome"], "created", "{answer}");
    assert!(result["incident_id"].is_string(), "{answer}");

    let answer = post_ok(
        &system,
        "cap",
        &fixture("crates/feeds/tests/fixtures/cap/status-test.xml"),
        None,
    )
    .await;
    let result = first_result(&answer);
    assert_eq!(result["outcome"], "ignored", "{answer}");
    assert!(result.get("incident_id").is_none(), "{answer}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = system.incidents().await;
    assert!(live.is_empty(), "nothing reaches live: {live:#?}");
}

// ---- 6. Alertmanager ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_resolved_settles_the_alert_not_the_incident_and_watchdog_is_ignored() {
    let system = System::start().await;
    let firing = fixture("crates/feeds/tests/fixtures/alertmanager/firing.json");
    let resolved = fixture("crates/feeds/tests/fixtures/alertmanager/resolved.json");
    let fingerprint = |body: &[u8], i: usize| {
        serde_json::from_slice::<Value>(body).unwrap()["alerts"][i]["fingerprint"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(fingerprint(&firing, 0), fingerprint(&resolved, 0));

    let answer = post_ok(&system, "alertmanager", &firing, None).await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{answer}");
    assert_eq!(results[0]["outcome"], "created", "{answer}");
    assert_eq!(results[0]["kind"], "natural.flood", "{answer}");
    // The third alert of the group is a resolve for an alert never seen here.
    assert_eq!(results[2]["outcome"], "ignored", "{answer}");
    let incident_id = incident_id_of(&answer);
    let before = system
        .incident_when("graded", &incident_id, |i| i.grading.is_some())
        .await;
    assert_eq!(before.open_alert_count, 1);
    assert_eq!(before.alert_count, 1);

    let answer = post_ok(&system, "alertmanager", &resolved, None).await;
    assert_eq!(first_result(&answer)["outcome"], "applied", "{answer}");
    assert_eq!(first_result(&answer)["incident_id"], incident_id.as_str());
    let after = system
        .incident_when("alert resolved", &incident_id, |i| {
            has_entry(i, "alert_resolved")
        })
        .await;
    assert_eq!(after.open_alert_count, 0);
    assert_eq!(after.alert_count, 1);
    assert_ne!(after.status(), pb::IncidentStatus::Closed);
    assert!(!has_entry(&after, "closed"));

    let watchdog = json!({
        "receiver": "chem-park-sensors",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "Watchdog", "severity": "none"},
            "annotations": {"summary": "the alerting pipeline is alive"},
            "startsAt": "2024-07-05T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus-0:9090/graph",
            "fingerprint": "e7a1c0ffee000001",
        }],
        "groupLabels": {},
        "commonLabels": {"alertname": "Watchdog"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-0:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"Watchdog\"}",
        "truncatedAlerts": 0,
    });
    let count = system.incidents().await.len();
    let answer = post_ok(
        &system,
        "alertmanager",
        &serde_json::to_vec(&watchdog).unwrap(),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "ignored", "{answer}");
    assert!(first_result(&answer).get("incident_id").is_none());
    assert_eq!(system.incidents().await.len(), count);
}

// ---- 7. PagerDuty ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_trigger_acknowledge_resolve() {
    let system = System::start().await;
    let answer = post_ok(
        &system,
        "pagerduty",
        &fixture("crates/feeds/tests/fixtures/pagerduty/trigger.json"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    let incident_id = incident_id_of(&answer);

    let answer = post_ok(
        &system,
        "pagerduty",
        &fixture("crates/feeds/tests/fixtures/pagerduty/acknowledge.json"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "applied", "{answer}");
    assert_eq!(first_result(&answer)["incident_id"], incident_id.as_str());
    let incident = system
        .incident_when("acknowledged", &incident_id, |i| {
            has_entry(i, "alert_acknowledged")
        })
        .await;
    assert_eq!(
        incident.open_alert_count, 1,
        "an acknowledgement settles nothing"
    );

    let answer = post_ok(
        &system,
        "pagerduty",
        &fixture("crates/feeds/tests/fixtures/pagerduty/resolve.json"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "applied", "{answer}");
    let incident = system
        .incident_when("resolved", &incident_id, |i| has_entry(i, "alert_resolved"))
        .await;
    assert_eq!(incident.open_alert_count, 0);
    assert_eq!(incident.alert_count, 1);
    assert_ne!(incident.status(), pb::IncidentStatus::Closed);
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 8. Unmapped and out-of-region alerts -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_alerts_are_triaged_by_the_county_and_out_of_region_ones_by_the_province() {
    let system = System::start().await;
    // PagerDuty class "landslide": no rule maps it. Located by its coordinates (29.87 N
    // 121.85 E), within reach of the chemical park in 港北区 (390202).
    let answer = post_ok(
        &system,
        "pagerduty",
        &fixture("crates/feeds/tests/fixtures/pagerduty/trigger_located.json"),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    assert_eq!(first_result(&answer)["kind"], "unclassified.unmapped");
    let unmapped = system
        .incident_when("graded", &incident_id_of(&answer), |i| i.grading.is_some())
        .await;
    let report = unmapped.report.as_ref().unwrap();
    assert_eq!(report.class(), pb::IncidentClass::Unclassified);
    assert!(report.township_code.starts_with("390202"), "{report:?}");
    assert_eq!(
        unmapped.grading.as_ref().unwrap().lead_jurisdiction_code,
        "390202",
        "{:?}",
        unmapped.grading
    );

    // A quake in California: an earthquake, but not here.
    let answer = post_ok(
        &system,
        "geojson",
        &fixture("crates/feeds/tests/fixtures/geojson/all_hour.json"),
        None,
    )
    .await;
    let california = &answer["results"][0];
    assert_eq!(california["outcome"], "created", "{answer}");
    assert_eq!(california["kind"], "unclassified.unmapped", "{answer}");
    let outside = system
        .incident_when("graded", california["incident_id"].as_str().unwrap(), |i| {
            i.grading.is_some()
        })
        .await;
    let report = outside.report.as_ref().unwrap();
    assert_eq!(report.class(), pb::IncidentClass::Unclassified);
    assert_eq!(report.township_code, "390000", "{report:?}");
    assert!(
        report.summary.contains("not in the region"),
        "{}",
        report.summary
    );
    assert_eq!(
        outside.grading.as_ref().unwrap().lead_jurisdiction_code,
        "390000",
        "{:?}",
        outside.grading
    );

    // A CAP earthquake circle in Germany: the same.
    let germany = cap_xml(
        "DE-EQ-1",
        &rfc3339(now_ms()),
        "Actual",
        "Alert",
        None,
        "Geo",
        "Earthquake",
        "Severe",
        "Earthquake near Cologne",
        "    <area><areaDesc>Köln</areaDesc><circle>50.94,6.96 20</circle></area>",
    );
    let answer = post_ok(&system, "cap", &germany, None).await;
    assert_eq!(
        first_result(&answer)["kind"],
        "unclassified.unmapped",
        "{answer}"
    );
    let outside = system
        .incident_when("graded", &incident_id_of(&answer), |i| i.grading.is_some())
        .await;
    assert_eq!(outside.report.as_ref().unwrap().township_code, "390000");
    assert_eq!(
        outside.grading.as_ref().unwrap().lead_jurisdiction_code,
        "390000"
    );
}

async fn next_answer(answers: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(answers))
        .await
        .expect("an answer on the reply subject")
        .unwrap();
    serde_json::from_slice::<Value>(&message.payload).unwrap()
}

// ---- 9. Answers over NATS ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_messages_over_jetstream_are_answered_on_the_reply_subject_and_acked() {
    let system = System::start().await;
    let (client, jetstream) = system.feed_nats().await;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    client.flush().await.unwrap();

    let publish = |body: Vec<u8>| {
        let jetstream = jetstream.clone();
        let inbox = inbox.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(bus::feed::REPLY_HEADER, inbox.as_str());
            jetstream
                .publish_with_headers(bus::feed::feed_subject("cap"), headers, body.into())
                .await
                .unwrap()
                .await
                .expect("JetStream stored it");
        }
    };

    publish(gas_alert("NATS-GAS-1", &rfc3339(now_ms()), "Severe")).await;
    let answer = next_answer(&mut answers).await;
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(answer["cap_msg_type"], "Ack", "{answer}");
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    let incident_id = incident_id_of(&answer);
    system
        .incident_when("listed", &incident_id, |i| i.alert_count == 1)
        .await;

    publish(b"<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"><identifier>".to_vec()).await;
    let answer = next_answer(&mut answers).await;
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert_eq!(answer["cap_msg_type"], "Error", "{answer}");
    assert_eq!(answer["code"], "malformed", "{answer}");
    assert!(!answer["reason"].as_str().unwrap().is_empty());

    // Both were acked: nothing pending, nothing redelivered, no further answer.
    let consumer = eventually("feed messages acked", WAIT, || {
        let jetstream = jetstream.clone();
        async move {
            let stream = jetstream.get_stream(bus::feed::FEEDS_STREAM).await.ok()?;
            let info = stream.consumer_info("intake-feeds").await.ok()?;
            (info.num_ack_pending == 0 && info.delivered.stream_sequence == 2).then_some(info)
        }
    })
    .await;
    assert_eq!(consumer.num_redelivered, 0, "{consumer:?}");
    assert_eq!(consumer.ack_floor.stream_sequence, 2, "{consumer:?}");
    let extra = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::StreamExt::next(&mut answers),
    )
    .await;
    assert!(extra.is_err(), "an unexpected further answer: {extra:?}");
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 10. Dedup across a restart ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_survives_an_intake_restart() {
    let mut system = System::start().await;
    let body = gas_alert("RESTART-GAS-1", &rfc3339(now_ms()), "Severe");
    let answer = post_ok(&system, "cap", &body, None).await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    let incident_id = incident_id_of(&answer);

    system.stop_service(Service::Intake).await;
    system.start_service(Service::Intake).await;

    let again = post_ok(&system, "cap", &body, None).await;
    assert_eq!(first_result(&again)["outcome"], "duplicate", "{again}");
    assert_eq!(first_result(&again)["incident_id"], incident_id.as_str());
    assert_eq!(
        first_result(&again)["alert_id"],
        first_result(&answer)["alert_id"]
    );
    let incident = system
        .incident_when("still one alert", &incident_id, |_| true)
        .await;
    assert_eq!(incident.alert_count, 1);
    assert_eq!(system.incidents().await.len(), 1);
}

// ---- 11. Heartbeats ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_raises_a_dead_man_alarm_that_its_next_alert_closes() {
    let default = feeds::mapping::Mapping::embedded_default_text();
    let rules = default
        .split("\n[[feed]]")
        .next()
        .expect("the default mapping has feeds");
    let text = format!(
        "{rules}\n[[feed]]\nname = \"slope-sensors\"\nformat = \"pagerduty\"\nowner = \"390202\"\n\
         expect_every_seconds = 2\ndescription = \"test feed with a 2 s heartbeat\"\n"
    );
    let mapping = feeds::mapping::Mapping::from_toml("heartbeat.toml", &text).unwrap();
    assert_eq!(mapping.feeds().len(), 1);
    let mut system = System::empty().await;
    system.feed_mapping = Some(Arc::new(mapping));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }

    let silent_at = Instant::now();
    let incidents = incidents_when(&system, "a feed_silent incident", WAIT, |incidents| {
        incidents
            .iter()
            .any(|i| i.report.as_ref().unwrap().kind == "unclassified.feed_silent")
    })
    .await;
    println!("feed_silent after {:?}", silent_at.elapsed());
    let silent = incidents
        .iter()
        .find(|i| i.report.as_ref().unwrap().kind == "unclassified.feed_silent")
        .unwrap();
    let report = silent.report.as_ref().unwrap();
    assert_eq!(report.class(), pb::IncidentClass::Unclassified);
    assert_eq!(report.township_code, "390202", "owned by the feed's owner");
    assert!(
        report.summary.contains("slope-sensors"),
        "{}",
        report.summary
    );
    let silent = system
        .incident_when("silent graded", &silent.id, |i| i.grading.is_some())
        .await;
    assert_eq!(
        silent.grading.as_ref().unwrap().lead_jurisdiction_code,
        "390202",
        "{:?}",
        silent.grading
    );

    let answer = post_ok(
        &system,
        "pagerduty",
        &fixture("crates/feeds/tests/fixtures/pagerduty/trigger.json"),
        Some("slope-sensors"),
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "created", "{answer}");
    let closed = system
        .incident_when("the dead-man alarm closed", &silent.id, |i| {
            i.status() == pb::IncidentStatus::Closed
        })
        .await;
    let closed_entry = entry(&closed, "closed");
    assert!(
        closed_entry.description.contains("slope-sensors"),
        "{closed_entry:?}"
    );
    assert!(
        closed_entry.description.contains("resumed"),
        "{closed_entry:?}"
    );

    let (status, answer, _) = system
        .post_feed(
            "pagerduty",
            &fixture("crates/feeds/tests/fixtures/pagerduty/trigger.json"),
            Some("no-such-feed"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert_eq!(answer["code"], "invalid_value", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("slope-sensors"),
        "{answer}"
    );
}

// ---- 12. Correlation boundary -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quakes_beyond_the_correlation_distance_are_separate_incidents() {
    let system = System::start().await;
    let now = now_ms();
    // The chemical park (30.05 N 121.75 E) and the inland west (29.86 N 119.42 E): ~225 km apart,
    // beyond the 100 km earthquake correlation distance; a third 10 km from the first joins it.
    let answer = post_ok(
        &system,
        "geojson",
        &collection(vec![
            quake_feature("far-east", 30.05, 121.75, 4.5, now - 30_000),
            quake_feature("far-west", 29.86, 119.42, 4.6, now - 20_000),
        ]),
        None,
    )
    .await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["outcome"], "created", "{answer}");
    assert_eq!(results[1]["outcome"], "created", "{answer}");
    assert_eq!(results[0]["kind"], "natural.earthquake", "{answer}");
    assert_eq!(results[1]["kind"], "natural.earthquake", "{answer}");
    assert_ne!(results[0]["incident_id"], results[1]["incident_id"]);

    let answer = post_ok(
        &system,
        "geojson",
        &collection(vec![quake_feature(
            "near-east",
            30.03,
            121.66,
            4.2,
            now - 10_000,
        )]),
        None,
    )
    .await;
    assert_eq!(first_result(&answer)["outcome"], "correlated", "{answer}");
    assert_eq!(
        first_result(&answer)["incident_id"],
        results[0]["incident_id"]
    );

    let incidents = system.incidents().await;
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    let mut counts: Vec<u64> = incidents.iter().map(|i| i.alert_count).collect();
    counts.sort();
    assert_eq!(counts, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_cap_fixture_is_accepted_or_rejected_with_the_right_reason() {
    let system = System::start().await;
    // (file, HTTP status, outcome of the first alert or rejection code)
    let expected = [
        ("v1dot2_appendix_adot1.xml", 200, "created"),
        ("v1dot2_appendix_adot2.xml", 200, "created"),
        // An Update naming a message this intake never saw: kept until it arrives.
        ("v1dot2_appendix_adot3.xml", 200, "parked"),
        ("v1dot2_appendix_adot4.xml", 200, "created"),
        ("nws-5c2cf27b1f56885d61654dc47fa411d5.xml", 200, "created"),
        // Its references name its own identifier only: treated as a new alert.
        ("mo-cap_monsoon.xml", 200, "created"),
        ("dwd-update.xml", 200, "parked"),
        ("polygon-trailing-space.xml", 200, "created"),
        ("tsunami.xml", 200, "created"),
        ("invalid_xmlns.cap", 400, "wrong_namespace"),
        ("no_info_tag.cap", 200, "parked"),
    ];
    for (file, status, what) in expected {
        let body = fixture(&format!("../shared/fixtures/cap/{file}"));
        let (got_status, answer, _) = system.post_feed("cap", &body, None).await;
        assert_eq!(got_status, status, "{file}: {answer}");
        if status == 200 {
            assert_eq!(first_result(&answer)["outcome"], what, "{file}: {answer}");
        } else {
            assert_eq!(answer["code"], what, "{file}: {answer}");
        }
    }
    // Every accepted alert from abroad is visible for triage, none is silently dropped: the
    // created ones are unclassified (outside the region) or mapped, each an incident.
    let mut intake = system.intake().await;
    let listed = intake
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let created = expected.iter().filter(|(_, _, w)| *w == "created").count();
    assert_eq!(listed.incidents.len(), created, "{listed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_whose_source_time_lies_hours_back_still_correlate_across_requests() {
    // A replayed backlog: the quake happened eight hours ago (beyond twice the earthquake
    // window), and its alerts arrive now in separate requests, so separate writer batches.
    let system = System::start().await;
    let eight_hours_ago = now_ms() - 8 * 3_600_000;
    let mut incident_ids = std::collections::BTreeSet::new();
    for n in 0..4 {
        let body = collection(vec![quake_feature(
            &format!("backlog{n}"),
            30.05 + 0.001 * n as f64,
            121.75,
            4.5,
            eight_hours_ago + n * 1000,
        )]);
        let answer = post_ok(&system, "geojson", &body, None).await;
        incident_ids.insert(incident_id_of(&answer));
        let outcome = first_result(&answer)["outcome"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            outcome,
            if n == 0 { "created" } else { "correlated" },
            "{answer}"
        );
    }
    assert_eq!(incident_ids.len(), 1, "{incident_ids:?}");
}

mod alertmanager;
