//! Monitoring feeds end to end: real HTTP requests and JetStream messages into intake, through
//! escalation and dispatch, back into the incident read model.

use muster_proto::v1 as pb;
use serde_json::Value;

use crate::system::System;

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
    assert_eq!(report.warning_level(), pb::WarningLevel::Red, "Extreme → red");
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
        ("alertmanager", b"{\"version\": \"3\", \"alerts\": []}".to_vec(), 400, "unsupported"),
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

mod alertmanager;
