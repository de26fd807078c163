//! The JSON feeds: Alertmanager webhooks, PagerDuty Events v2, USGS earthquake GeoJSON.
//! Fixtures under `tests/fixtures/{alertmanager,pagerduty,geojson}/` copy real-world shapes.

use domain::geo::GeoPoint;
use feeds::{Action, Alert, Format, Limits, RejectCode, Rejection, Status, parse_datetime};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

fn parse(format: Format, body: &[u8]) -> Result<Vec<Alert>, Rejection> {
    feeds::parse(format, body, &Limits::default())
}

fn parse_ok(format: Format, body: &[u8]) -> Vec<Alert> {
    parse(format, body).unwrap_or_else(|rejection| panic!("rejected: {rejection}"))
}

fn rejected(format: Format, body: &[u8]) -> Rejection {
    match parse(format, body) {
        Ok(alerts) => panic!("accepted: {alerts:#?}"),
        Err(rejection) => rejection,
    }
}

fn expect(format: Format, body: &[u8], code: RejectCode, reason_prefix: &str) -> Rejection {
    let rejection = rejected(format, body);
    assert_eq!(rejection.code, code, "{rejection}");
    assert!(
        rejection.reason.starts_with(reason_prefix),
        "reason {:?} does not start with {reason_prefix:?}",
        rejection.reason
    );
    rejection
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap()
}

/// An edit of a valid body, the code it must be rejected with and the reason's start.
type Case = (fn(&mut Value), RejectCode, &'static str);

fn names(alert: &Alert) -> Vec<&str> {
    alert.fields.iter().map(|(name, _)| name.as_str()).collect()
}

// ------------------------------------------------------------------------------------------------
// Alertmanager

fn alertmanager_fixture() -> Value {
    serde_json::from_slice(&fixture("alertmanager/firing.json")).unwrap()
}

#[test]
fn alertmanager_firing_group_becomes_one_alert_per_entry() {
    let alerts = parse_ok(Format::Alertmanager, &fixture("alertmanager/firing.json"));
    assert_eq!(alerts.len(), 3);

    let first = &alerts[0];
    assert_eq!(first.format, Format::Alertmanager);
    assert_eq!(first.identity, "c2a5e4c0b4c7f3f1");
    assert_eq!(
        first.dedup_key,
        "c2a5e4c0b4c7f3f1/firing/2024-07-05T06:12:31.123456789Z"
    );
    assert_eq!(first.action, Action::Raise);
    assert_eq!(first.status, Status::Actual);
    assert!(first.references.is_empty());
    assert_eq!(first.sender, "muster-ningbo");
    assert_eq!(
        first.sent_unix_ms,
        Some(parse_datetime("2024-07-05T06:12:31.123Z").unwrap())
    );
    assert_eq!(
        first.headline,
        "Yongjiang river level above warning line at YJ-07"
    );
    assert_eq!(first.language, "en");
    assert_eq!(first.severity, None);
    assert_eq!(first.field("label.severity"), Some("critical"));
    assert_eq!(first.field("label.alertname"), Some("RiverLevelHigh"));
    assert_eq!(
        first.field("annotation.runbook_url"),
        Some("https://runbooks.example.cn/hydrology/river-level-high")
    );
    assert_eq!(first.field("status"), Some("firing"));
    assert_eq!(first.field("receiver"), Some("muster-ningbo"));
    assert_eq!(
        first.field("group_key"),
        Some("{}/{job=\"hydrology\"}:{alertname=\"RiverLevelHigh\"}")
    );
    assert_eq!(
        names(first),
        [
            "label.alertname",
            "label.instance",
            "label.job",
            "label.latitude",
            "label.longitude",
            "label.severity",
            "label.station",
            "label.township",
            "annotation.description",
            "annotation.runbook_url",
            "annotation.summary",
            "status",
            "receiver",
            "group_key",
        ]
    );
    assert_eq!(first.area.points, [GeoPoint::new(29.9612, 121.6021)]);
    assert_eq!(
        first.area.geocodes,
        [("GB2260".to_string(), "330206".to_string())]
    );
    assert_eq!(first.area.description, "");

    let second = &alerts[1];
    assert_eq!(second.identity, "0f3d9a7b21e4c855");
    // No summary: the description is the headline.
    assert!(second.headline.starts_with("Water level at YAO-02"));
    assert!(second.area.points.is_empty());
    assert_eq!(
        second.area.geocodes,
        [("GB2260".to_string(), "330281".to_string())]
    );
    assert_eq!(second.area.description, "Yaojiang, Yuyao");
    assert_eq!(second.sent_unix_ms.map(|ms| ms % 1000), Some(500));

    let third = &alerts[2];
    assert_eq!(third.action, Action::Resolve);
    // No annotations at all: the alert name is the headline.
    assert_eq!(third.headline, "RiverLevelHigh");
    assert!(third.area.is_empty());
    assert_eq!(third.field("status"), Some("resolved"));
}

#[test]
fn alertmanager_resend_is_a_duplicate_and_resolve_is_not() {
    let firing = parse_ok(Format::Alertmanager, &fixture("alertmanager/firing.json"));
    // repeat_interval: Alertmanager sends the same group again, unchanged.
    let resent = parse_ok(Format::Alertmanager, &fixture("alertmanager/firing.json"));
    assert_eq!(firing[0].dedup_key, resent[0].dedup_key);
    let resolved = parse_ok(Format::Alertmanager, &fixture("alertmanager/resolved.json"));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].action, Action::Resolve);
    assert_eq!(resolved[0].identity, firing[0].identity);
    assert_ne!(resolved[0].dedup_key, firing[0].dedup_key);
    assert_eq!(
        resolved[0].dedup_key,
        "c2a5e4c0b4c7f3f1/resolved/2024-07-05T06:12:31.123456789Z"
    );
}

#[test]
fn alertmanager_sender_falls_back_to_external_url() {
    let mut body = alertmanager_fixture();
    body["receiver"] = json!("");
    let alerts = parse_ok(Format::Alertmanager, &json_bytes(&body));
    assert_eq!(alerts[0].sender, "http://alertmanager-0:9093");
}

#[test]
fn alertmanager_location_from_annotations_and_lat_lon_spelling() {
    let mut body = alertmanager_fixture();
    body["alerts"][1]["annotations"]["lat"] = json!("30.1");
    body["alerts"][1]["annotations"]["lon"] = json!("121.2");
    let alerts = parse_ok(Format::Alertmanager, &json_bytes(&body));
    assert_eq!(alerts[1].area.points, [GeoPoint::new(30.1, 121.2)]);
}

#[test]
fn alertmanager_empty_group_is_no_alerts() {
    let mut body = alertmanager_fixture();
    body["alerts"] = json!([]);
    assert_eq!(
        parse_ok(Format::Alertmanager, &json_bytes(&body)),
        Vec::<Alert>::new()
    );
}

#[test]
fn alertmanager_other_versions_are_unsupported() {
    let mut body = alertmanager_fixture();
    body["version"] = json!("3");
    let rejection = expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::Unsupported,
        "version:",
    );
    assert!(rejection.reason.contains("\"3\""), "{rejection}");
    body["version"] = json!(4);
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::Unsupported,
        "version: webhook version 4 ",
    );
    body.as_object_mut().unwrap().remove("version");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::MissingElement,
        "version: missing",
    );
}

#[test]
fn alertmanager_entry_errors_name_the_entry() {
    let mut body = alertmanager_fixture();
    body["alerts"][2]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::MissingElement,
        "alerts[2].fingerprint: missing",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][1]["fingerprint"] = json!("");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::MissingElement,
        "alerts[1].fingerprint: missing",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][0]["startsAt"] = json!("2024-07-05 06:12:31");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[0].startsAt:",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][2]["endsAt"] = json!("soon");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[2].endsAt:",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][0]["status"] = json!("pending");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[0].status: \"pending\"",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][0]["labels"]["latitude"] = json!("95");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[0].labels.latitude: latitude 95 is outside [-90, 90]",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][0]["labels"]["longitude"] = json!("east");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[0].labels.longitude: \"east\" is not a number",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][0]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("longitude");
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[0].labels.latitude: given without longitude",
    );

    let mut body = alertmanager_fixture();
    body["alerts"][1]["labels"] = json!(["not", "a", "map"]);
    expect(
        Format::Alertmanager,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "alerts[1].labels",
    );
}

#[test]
fn alertmanager_too_many_alerts() {
    let mut body = alertmanager_fixture();
    let entry = body["alerts"][0].clone();
    body["alerts"] = Value::Array(vec![entry; 4]);
    let limits = Limits {
        alerts_max: 3,
        ..Limits::default()
    };
    let rejection = feeds::parse(Format::Alertmanager, &json_bytes(&body), &limits).unwrap_err();
    assert_eq!(rejection.code, RejectCode::TooManyElements);
    assert!(
        rejection.reason.starts_with("alerts: 4 alerts"),
        "{rejection}"
    );
}

// ------------------------------------------------------------------------------------------------
// PagerDuty

fn pagerduty_fixture() -> Value {
    serde_json::from_slice(&fixture("pagerduty/trigger.json")).unwrap()
}

fn pagerduty_one(body: &[u8]) -> Alert {
    let mut alerts = parse_ok(Format::Pagerduty, body);
    assert_eq!(alerts.len(), 1);
    alerts.remove(0)
}

#[test]
fn pagerduty_trigger_from_the_documentation() {
    let alert = pagerduty_one(&fixture("pagerduty/trigger.json"));
    assert_eq!(alert.format, Format::Pagerduty);
    assert_eq!(alert.identity, "samplekeyhere");
    assert_eq!(
        alert.dedup_key,
        "samplekeyhere/trigger/2015-07-17T08:42:58.315+0000"
    );
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(alert.status, Status::Actual);
    assert_eq!(
        alert.sender,
        "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003"
    );
    assert_eq!(alert.sent_unix_ms, Some(1_437_122_578_315));
    assert_eq!(alert.headline, "Example alert on host1.example.com");
    assert_eq!(alert.language, "en");
    assert_eq!(alert.severity, None);
    assert_eq!(
        names(&alert),
        [
            "severity",
            "class",
            "component",
            "group",
            "source",
            "custom.load avg",
            "custom.ping time"
        ]
    );
    assert_eq!(alert.field("severity"), Some("info"));
    assert_eq!(alert.field("class"), Some("deploy"));
    assert_eq!(alert.field("custom.load avg"), Some("0.75"));
    assert_eq!(alert.field("custom.ping time"), Some("1500ms"));
    assert!(alert.area.is_empty());
}

#[test]
fn pagerduty_acknowledge_and_resolve() {
    let trigger = pagerduty_one(&fixture("pagerduty/trigger.json"));
    let acknowledge = pagerduty_one(&fixture("pagerduty/acknowledge.json"));
    assert_eq!(acknowledge.action, Action::Acknowledge);
    assert_eq!(acknowledge.identity, trigger.identity);
    assert_eq!(acknowledge.dedup_key, "samplekeyhere/acknowledge");
    assert_eq!(acknowledge.sent_unix_ms, None);
    assert!(acknowledge.fields.is_empty());
    let resolve = pagerduty_one(&fixture("pagerduty/resolve.json"));
    assert_eq!(resolve.action, Action::Resolve);
    assert_eq!(resolve.identity, trigger.identity);
    assert_eq!(resolve.dedup_key, "samplekeyhere/resolve");
    assert!(!resolve.headline.is_empty());
}

#[test]
fn pagerduty_custom_details_locate_and_flatten() {
    let alert = pagerduty_one(&fixture("pagerduty/trigger_located.json"));
    assert_eq!(alert.identity, "landslide/beilun/xiapu-07");
    assert_eq!(
        alert.sent_unix_ms,
        Some(parse_datetime("2024-07-05T06:20:05Z").unwrap())
    );
    assert_eq!(alert.area.points, [GeoPoint::new(29.8731, 121.8452)]);
    assert_eq!(
        alert.area.geocodes,
        [("GB2260".to_string(), "330206".to_string())]
    );
    assert_eq!(alert.area.description, "Xiapu, Beilun District");
    assert_eq!(alert.field("custom.displacement_mm_per_h"), Some("38"));
    assert_eq!(alert.field("custom.rain_24h_mm"), Some("126.5"));
    assert_eq!(alert.field("custom.evacuated"), Some("false"));
    assert_eq!(alert.field("custom.sensor.model"), Some("IN-3D"));
    assert_eq!(alert.field("custom.sensor.battery.percent"), Some("71"));
    // Three keys deep at most; arrays and nulls are not scalars.
    assert_eq!(alert.field("custom.sensor.battery.detail.cells"), None);
    assert_eq!(alert.field("custom.history"), None);
    assert_eq!(alert.field("custom.operator"), None);
    let custom: Vec<&str> = names(&alert)
        .into_iter()
        .filter(|name| name.starts_with("custom."))
        .collect();
    let mut sorted = custom.clone();
    sorted.sort();
    assert_eq!(custom, sorted);
}

#[test]
fn pagerduty_trigger_without_dedup_key_gets_a_stable_derived_one() {
    let mut body = pagerduty_fixture();
    body.as_object_mut().unwrap().remove("dedup_key");
    let first = pagerduty_one(&json_bytes(&body));
    let again = pagerduty_one(&json_bytes(&body));
    assert_eq!(first.identity.len(), 16);
    assert!(first.identity.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(first.identity, again.identity);
    assert_eq!(first.dedup_key, again.dedup_key);
    body["payload"]["summary"] = json!("Another alert on host1.example.com");
    let other = pagerduty_one(&json_bytes(&body));
    assert_ne!(other.identity, first.identity);
}

#[test]
fn pagerduty_rules() {
    let cases: Vec<Case> = vec![
        (
            |b| {
                b["payload"].as_object_mut().unwrap().remove("summary");
            },
            RejectCode::MissingElement,
            "payload.summary: missing",
        ),
        (
            |b| b["payload"]["summary"] = json!("x".repeat(1025)),
            RejectCode::InvalidValue,
            "payload.summary: 1025 characters",
        ),
        (
            |b| {
                b["payload"].as_object_mut().unwrap().remove("source");
            },
            RejectCode::MissingElement,
            "payload.source: missing",
        ),
        (
            |b| b["payload"]["severity"] = json!("fatal"),
            RejectCode::InvalidValue,
            "payload.severity: \"fatal\"",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("payload");
            },
            RejectCode::MissingElement,
            "payload: missing",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("routing_key");
            },
            RejectCode::MissingElement,
            "routing_key: missing",
        ),
        (
            |b| b["event_action"] = json!("escalate"),
            RejectCode::InvalidValue,
            "event_action: \"escalate\"",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("event_action");
            },
            RejectCode::MissingElement,
            "event_action: missing",
        ),
        (
            |b| b["payload"]["timestamp"] = json!("17/07/2015 08:42"),
            RejectCode::InvalidValue,
            "payload.timestamp:",
        ),
        (
            |b| b["payload"]["custom_details"]["lat"] = json!(-91),
            RejectCode::InvalidValue,
            "payload.custom_details.lat: given without lon",
        ),
        (
            |b| b["payload"]["summary"] = json!(42),
            RejectCode::InvalidValue,
            "payload.summary: invalid type",
        ),
    ];
    for (edit, code, prefix) in cases {
        let mut body = pagerduty_fixture();
        edit(&mut body);
        expect(Format::Pagerduty, &json_bytes(&body), code, prefix);
    }
    // Exactly 1024 characters (not bytes) is fine.
    let mut body = pagerduty_fixture();
    body["payload"]["summary"] = json!("警".repeat(1024));
    pagerduty_one(&json_bytes(&body));
}

#[test]
fn pagerduty_resolve_and_acknowledge_need_a_dedup_key() {
    for action in ["resolve", "acknowledge"] {
        let body = json!({"routing_key": "samplekeyhere", "event_action": action});
        expect(
            Format::Pagerduty,
            &json_bytes(&body),
            RejectCode::MissingElement,
            "dedup_key: missing",
        );
    }
}

#[test]
fn pagerduty_location_out_of_range() {
    let mut body: Value =
        serde_json::from_slice(&fixture("pagerduty/trigger_located.json")).unwrap();
    body["payload"]["custom_details"]["latitude"] = json!(95);
    expect(
        Format::Pagerduty,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "payload.custom_details.latitude: latitude 95 is outside [-90, 90]",
    );
}

// ------------------------------------------------------------------------------------------------
// GeoJSON

fn geojson_fixture() -> Value {
    serde_json::from_slice(&fixture("geojson/all_hour.json")).unwrap()
}

#[test]
fn geojson_all_hour_feed() {
    let alerts = parse_ok(Format::Geojson, &fixture("geojson/all_hour.json"));
    assert_eq!(alerts.len(), 3);
    let ids: Vec<&str> = alerts.iter().map(|a| a.identity.as_str()).collect();
    assert_eq!(ids, ["nc75012345", "us7000mxyz", "ak024abcdef"]);

    let ningbo = &alerts[1];
    assert_eq!(ningbo.format, Format::Geojson);
    assert_eq!(ningbo.dedup_key, "us7000mxyz");
    assert_eq!(ningbo.action, Action::Raise);
    assert_eq!(ningbo.status, Status::Actual);
    assert_eq!(ningbo.sender, "us");
    assert_eq!(ningbo.sent_unix_ms, Some(1_720_160_402_310));
    assert_eq!(ningbo.headline, "M 4.6 - 浙江省宁波市北仑区附近海域");
    assert_eq!(ningbo.language, "en");
    assert_eq!(ningbo.severity, None);
    // GeoJSON is [lon, lat]; the point is (lat, lon).
    assert_eq!(ningbo.area.points, [GeoPoint::new(29.98, 121.55)]);
    assert_eq!(ningbo.area.description, "浙江省宁波市北仑区附近海域");
    assert_eq!(
        ningbo.fields,
        [
            ("mag", "4.6"),
            ("mag_type", "mb"),
            ("place", "浙江省宁波市北仑区附近海域"),
            ("type", "earthquake"),
            ("alert", "green"),
            ("status", "reviewed"),
            ("tsunami", "0"),
            ("depth_km", "10"),
            ("felt", "12"),
            ("net", "us"),
            ("sig", "332"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );

    let geysers = &alerts[0];
    assert_eq!(geysers.area.points, [GeoPoint::new(38.8207, -122.8245)]);
    assert_eq!(geysers.field("alert"), None);
    assert_eq!(geysers.field("felt"), None);
    assert_eq!(geysers.field("mag"), Some("1.21"));
    assert_eq!(geysers.field("depth_km"), Some("2.15"));
}

#[test]
fn geojson_single_feature_and_fallbacks() {
    let alerts = parse_ok(Format::Geojson, &fixture("geojson/detail_feature.json"));
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.identity, "us7000abcd");
    // No title: "M{mag} - {place}".
    assert_eq!(alert.headline, "M5.0 - Taiwan region");
    assert_eq!(alert.area.points, [GeoPoint::new(24.1, 121.7)]);
    assert_eq!(alert.field("tsunami"), Some("1"));
    assert_eq!(alert.field("alert"), Some("yellow"));

    let mut body = geojson_fixture();
    body["features"][0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("net");
    let alerts = parse_ok(Format::Geojson, &json_bytes(&body));
    assert_eq!(
        alerts[0].sender,
        "https://earthquake.usgs.gov/earthquakes/feed/v1.0/summary/all_hour.geojson"
    );
}

#[test]
fn geojson_unknown_location_is_kept() {
    let mut body = geojson_fixture();
    body["features"][0]["geometry"] = Value::Null;
    body["features"][1]["geometry"] = json!({"type": "Polygon", "coordinates": [[[121.0, 29.0], [122.0, 29.0], [122.0, 30.0], [121.0, 29.0]]]});
    let alerts = parse_ok(Format::Geojson, &json_bytes(&body));
    assert_eq!(alerts.len(), 3);
    assert!(alerts[0].area.points.is_empty());
    assert!(alerts[1].area.points.is_empty());
    assert_eq!(alerts[1].area.description, "浙江省宁波市北仑区附近海域");
    assert_eq!(alerts[0].field("depth_km"), None);
}

#[test]
fn geojson_rejections_name_the_feature() {
    let cases: Vec<Case> = vec![
        (
            |b| b["features"][0]["geometry"]["coordinates"] = json!([121.55, 95.0, 10.0]),
            RejectCode::InvalidValue,
            "features[0].geometry.coordinates: latitude 95 is outside [-90, 90]",
        ),
        (
            |b| b["features"][2]["geometry"]["coordinates"] = json!([190.0, 29.0]),
            RejectCode::InvalidValue,
            "features[2].geometry.coordinates: longitude 190 is outside [-180, 180]",
        ),
        (
            |b| b["features"][1]["geometry"]["coordinates"] = json!(["121.55", 29.98]),
            RejectCode::InvalidValue,
            "features[1].geometry.coordinates: expected [longitude, latitude]",
        ),
        (
            |b| b["features"][1]["properties"]["mag"] = json!("4.6"),
            RejectCode::InvalidValue,
            "features[1].properties.mag: \"4.6\" is not a finite number",
        ),
        (
            |b| b["features"][1]["properties"]["time"] = json!("yesterday"),
            RejectCode::InvalidValue,
            "features[1].properties.time:",
        ),
        (
            |b| {
                b["features"][2].as_object_mut().unwrap().remove("id");
            },
            RejectCode::MissingElement,
            "features[2].id: missing",
        ),
        (
            |b| b["features"][0]["type"] = json!("Point"),
            RejectCode::InvalidValue,
            "features[0].type:",
        ),
        (
            |b| b["type"] = json!("GeometryCollection"),
            RejectCode::Unsupported,
            "type: \"GeometryCollection\"",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("type");
            },
            RejectCode::MissingElement,
            "type: missing",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("features");
            },
            RejectCode::MissingElement,
            "features: missing",
        ),
    ];
    for (edit, code, prefix) in cases {
        let mut body = geojson_fixture();
        edit(&mut body);
        expect(Format::Geojson, &json_bytes(&body), code, prefix);
    }
}

#[test]
fn geojson_single_feature_paths_have_no_prefix() {
    let mut body: Value = serde_json::from_slice(&fixture("geojson/detail_feature.json")).unwrap();
    body["geometry"]["coordinates"] = json!([121.7, -90.5]);
    expect(
        Format::Geojson,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "geometry.coordinates: latitude -90.5 is outside [-90, 90]",
    );
    body["geometry"]["coordinates"] = json!([121.7, 24.1]);
    body["properties"]["title"] = json!(5);
    expect(
        Format::Geojson,
        &json_bytes(&body),
        RejectCode::InvalidValue,
        "properties.title: invalid type: integer `5`, expected a string",
    );
}

#[test]
fn geojson_too_many_features() {
    let mut body = geojson_fixture();
    let feature = body["features"][0].clone();
    body["features"] = Value::Array(vec![feature; 11]);
    let limits = Limits {
        alerts_max: 10,
        ..Limits::default()
    };
    let rejection = feeds::parse(Format::Geojson, &json_bytes(&body), &limits).unwrap_err();
    assert_eq!(rejection.code, RejectCode::TooManyElements);
    assert!(
        rejection.reason.starts_with("features: 11 features"),
        "{rejection}"
    );
}

// ------------------------------------------------------------------------------------------------
// Shape, syntax and encoding, for every JSON format

const JSON_FORMATS: [Format; 3] = [Format::Alertmanager, Format::Pagerduty, Format::Geojson];

#[test]
fn thousand_deep_nesting_is_too_deep_and_fast() {
    for open in ["[", "{\"a\":"] {
        let body = format!("{}1{}", open.repeat(1000), "]".repeat(1000));
        for format in JSON_FORMATS {
            let started = Instant::now();
            let rejection = rejected(format, body.as_bytes());
            let elapsed = started.elapsed();
            assert_eq!(rejection.code, RejectCode::TooDeep, "{rejection}");
            assert!(
                rejection.reason.contains("deeper than 32 levels"),
                "{rejection}"
            );
            assert!(elapsed < Duration::from_millis(250), "took {elapsed:?}");
        }
    }
    // Deep but unbalanced garbage (never closed) is refused the same way.
    let body = "[".repeat(100_000);
    assert_eq!(
        rejected(Format::Geojson, body.as_bytes()).code,
        RejectCode::TooDeep
    );
}

#[test]
fn huge_element_counts_are_refused_before_parsing() {
    let many = vec!["0"; 30_000].join(",");
    let bodies = [
        (
            Format::Alertmanager,
            format!(r#"{{"version":"4","alerts":[{many}]}}"#),
        ),
        (
            Format::Pagerduty,
            format!(r#"{{"routing_key":"k","event_action":"trigger","links":[{many}]}}"#),
        ),
        (
            Format::Geojson,
            format!(r#"{{"type":"FeatureCollection","features":[],"bbox":[{many}]}}"#),
        ),
    ];
    for (format, body) in bodies {
        let started = Instant::now();
        let rejection = rejected(format, body.as_bytes());
        assert_eq!(rejection.code, RejectCode::TooManyElements, "{rejection}");
        assert!(rejection.reason.contains("more than 20000 JSON values"));
        assert!(started.elapsed() < Duration::from_millis(250));
    }
    // Strings count too, object keys do not: this body holds five values.
    let body = br#"{"routing_key":"k","event_action":"resolve","dedup_key":"d","a":"b"}"#;
    let at = |elements_max| Limits {
        elements_max,
        ..Limits::default()
    };
    assert!(feeds::parse(Format::Pagerduty, body, &at(5)).is_ok());
    assert_eq!(
        feeds::parse(Format::Pagerduty, body, &at(4))
            .unwrap_err()
            .code,
        RejectCode::TooManyElements
    );
}

#[test]
fn malformed_json_names_line_and_column() {
    let body = b"{\n  \"version\": \"4\",\n  \"alerts\": [\n}\n";
    for format in JSON_FORMATS {
        let rejection = rejected(format, body);
        assert_eq!(rejection.code, RejectCode::Malformed, "{rejection}");
        assert!(
            rejection.reason.starts_with("line 4, column 1:"),
            "{rejection}"
        );
    }
    let rejection = rejected(Format::Pagerduty, b"{\"routing_key\": \"k\"");
    assert_eq!(rejection.code, RejectCode::Malformed);
    assert!(
        rejection.reason.starts_with("line 1, column"),
        "{rejection}"
    );
    assert_eq!(rejected(Format::Geojson, b"").code, RejectCode::Malformed);
}

#[test]
fn bodies_must_be_objects() {
    for (body, found) in [
        ("[1, 2]", "an array"),
        (" \"4\"", "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        for format in JSON_FORMATS {
            let rejection = expect(
                format,
                body.as_bytes(),
                RejectCode::InvalidValue,
                "body: expected a JSON object",
            );
            assert!(rejection.reason.ends_with(found), "{rejection}");
        }
    }
}

#[test]
fn invalid_utf8_is_malformed() {
    let mut body = fixture("geojson/all_hour.json");
    // Cut a three-byte character of the Chinese place name in half.
    let at = body
        .windows("浙".len())
        .position(|w| w == "浙".as_bytes())
        .unwrap();
    body[at + 1] = b'"';
    for format in JSON_FORMATS {
        let rejection = rejected(format, &body);
        assert_eq!(rejection.code, RejectCode::Malformed, "{rejection}");
        assert!(
            rejection.reason.starts_with("body is not UTF-8"),
            "{rejection}"
        );
        assert!(rejection.reason.contains(&format!("offset {at}")));
    }
    assert_eq!(
        rejected(Format::Pagerduty, b"{\"routing_key\": \"\xff\"}").code,
        RejectCode::Malformed
    );
}

#[test]
fn oversized_bodies_are_too_large() {
    let limits = Limits {
        body_bytes_max: 100,
        ..Limits::default()
    };
    for format in JSON_FORMATS {
        let body = fixture("geojson/all_hour.json");
        let rejection = feeds::parse(format, &body, &limits).unwrap_err();
        assert_eq!(rejection.code, RejectCode::TooLarge);
        // The module entry points check too.
        assert_eq!(
            feeds::geojson::parse(&body, &limits).unwrap_err().code,
            RejectCode::TooLarge
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Properties

fn all_fixtures() -> Vec<(Format, Vec<u8>)> {
    [
        (Format::Alertmanager, "alertmanager/firing.json"),
        (Format::Alertmanager, "alertmanager/resolved.json"),
        (Format::Pagerduty, "pagerduty/trigger.json"),
        (Format::Pagerduty, "pagerduty/acknowledge.json"),
        (Format::Pagerduty, "pagerduty/trigger_located.json"),
        (Format::Geojson, "geojson/all_hour.json"),
        (Format::Geojson, "geojson/detail_feature.json"),
    ]
    .into_iter()
    .map(|(format, path)| (format, fixture(path)))
    .collect()
}

fn small_limits() -> Limits {
    Limits {
        body_bytes_max: 64 * 1024,
        depth_max: 8,
        elements_max: 500,
        alerts_max: 4,
    }
}

/// A date-time string and the Unix milliseconds it stands for.
fn datetime() -> impl Strategy<Value = String> {
    (
        1970i32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        0u32..1000,
        prop_oneof![
            Just("Z".to_string()),
            Just("+08:00".to_string()),
            Just("-05:30".to_string()),
            Just("+0000".to_string())
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, ms, offset)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{offset}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in JSON_FORMATS {
            let _ = feeds::parse(format, &body, &small_limits());
        }
    }

    #[test]
    fn parsers_never_panic_on_json_ish_text(
        body in "[\\[\\]{}\",:0-9a-zA-Z .\\-\\\\eE+]{0,300}",
        prefix in prop_oneof![
            Just(""),
            Just("{\"version\":\"4\",\"alerts\":[{\"fingerprint\":"),
            Just("{\"type\":\"FeatureCollection\",\"features\":[{\"type\":\"Feature\",\"id\":"),
            Just("{\"routing_key\":\"k\",\"event_action\":\"trigger\",\"payload\":{\"custom_details\":"),
        ],
    ) {
        let body = format!("{prefix}{body}");
        for format in JSON_FORMATS {
            let _ = feeds::parse(format, body.as_bytes(), &small_limits());
        }
    }

    #[test]
    fn parsers_never_panic_on_mutated_fixtures(
        which in 0usize..7,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (format, mut body) = all_fixtures().swap_remove(which);
        for (index, byte) in edits {
            let at = index.index(body.len());
            body[at] = byte;
        }
        for format in [format, Format::Alertmanager, Format::Pagerduty, Format::Geojson] {
            let _ = feeds::parse(format, &body, &Limits::default());
        }
    }

    #[test]
    fn depth_check_agrees_with_serde_json(depth in 1usize..120, max in 1usize..120) {
        let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        // serde_json itself takes it (its own recursion limit is 128) ...
        prop_assert!(serde_json::from_str::<Value>(&body).is_ok());
        let limits = Limits { depth_max: max, ..Limits::default() };
        for format in JSON_FORMATS {
            // ... and the pre-scan refuses it exactly when it nests deeper than depth_max.
            let too_deep = matches!(
                feeds::parse(format, body.as_bytes(), &limits),
                Err(Rejection { code: RejectCode::TooDeep, .. })
            );
            prop_assert_eq!(too_deep, depth > max);
        }
    }

    #[test]
    fn pagerduty_fields_round_trip(
        routing_key in "[A-Za-z0-9]{1,32}",
        action in prop_oneof![Just("trigger"), Just("acknowledge"), Just("resolve")],
        dedup_key in "[a-z0-9/._-]{1,40}",
        summary in "\\PC{1,200}",
        source in "[a-z0-9.:-]{1,40}",
        severity in prop_oneof![Just("critical"), Just("error"), Just("warning"), Just("info")],
        timestamp in proptest::option::of(datetime()),
        component in proptest::option::of("[a-z]{1,10}"),
        custom in prop::collection::btree_map("k_[a-z_]{1,6}", prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ], 0..5),
    ) {
        prop_assume!(!summary.trim().is_empty());
        let mut payload = json!({
            "summary": summary,
            "source": source,
            "severity": severity,
            "custom_details": custom,
        });
        if let Some(timestamp) = &timestamp {
            payload["timestamp"] = json!(timestamp);
        }
        if let Some(component) = &component {
            payload["component"] = json!(component);
        }
        let body = json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
            "payload": payload,
        });
        let alerts = feeds::parse(Format::Pagerduty, &json_bytes(&body), &Limits::default())
            .map_err(|rejection| TestCaseError::fail(rejection.to_string()))?;
        prop_assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        prop_assert_eq!(&alert.identity, &dedup_key);
        let mut expected_key = format!("{dedup_key}/{action}");
        if let Some(timestamp) = &timestamp {
            expected_key = format!("{expected_key}/{timestamp}");
        }
        prop_assert_eq!(&alert.dedup_key, &expected_key);
        let expected_action = match action {
            "trigger" => Action::Raise,
            "acknowledge" => Action::Acknowledge,
            _ => Action::Resolve,
        };
        prop_assert_eq!(alert.action, expected_action);
        prop_assert_eq!(&alert.headline, summary.trim());
        prop_assert_eq!(&alert.sender, &source);
        prop_assert_eq!(alert.field("severity"), Some(severity));
        prop_assert_eq!(alert.field("source"), Some(source.as_str()));
        prop_assert_eq!(alert.field("component"), component.as_deref());
        let normalised = timestamp.as_ref().map(|t| t.replace("+0000", "+00:00"));
        prop_assert_eq!(
            alert.sent_unix_ms,
            normalised.map(|t| parse_datetime(&t).unwrap())
        );
        for (key, value) in &custom {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let name = format!("custom.{key}");
            prop_assert_eq!(alert.field(&name), Some(text.as_str()));
        }
    }

    #[test]
    fn geojson_fields_round_trip(
        quakes in prop::collection::vec((
            "[a-z]{2}[0-9a-z]{6,10}",
            -90.0f64..=90.0,
            -180.0f64..=180.0,
            0.0f64..700.0,
            proptest::option::of(-1.0f64..9.5),
            "[\\p{L}\\p{N}][\\p{L}\\p{N} ,]{0,58}[\\p{L}\\p{N}]",
            0i64..4_102_444_800_000,
            proptest::option::of(prop_oneof![Just("green"), Just("yellow"), Just("orange"), Just("red")]),
        ), 0..4),
    ) {
        let features: Vec<Value> = quakes
            .iter()
            .map(|(id, lat, lon, depth, mag, place, time, alert)| json!({
                "type": "Feature",
                "id": id,
                "properties": {
                    "mag": mag, "place": place, "time": time, "alert": alert,
                    "net": "us", "type": "earthquake", "magType": "mb", "tsunami": 0,
                },
                "geometry": {"type": "Point", "coordinates": [lon, lat, depth]},
            }))
            .collect();
        let body = json!({
            "type": "FeatureCollection",
            "metadata": {"url": "https://earthquake.usgs.gov/x.geojson", "count": features.len()},
            "features": features,
        });
        let alerts = feeds::parse(Format::Geojson, &json_bytes(&body), &Limits::default())
            .map_err(|rejection| TestCaseError::fail(rejection.to_string()))?;
        prop_assert_eq!(alerts.len(), quakes.len());
        for (alert, (id, lat, lon, depth, mag, place, time, colour)) in alerts.iter().zip(&quakes) {
            prop_assert_eq!(&alert.identity, id);
            prop_assert_eq!(&alert.dedup_key, id);
            prop_assert_eq!(alert.sent_unix_ms, Some(*time));
            prop_assert_eq!(alert.area.points.len(), 1);
            let point = alert.area.points[0];
            prop_assert!((point.lat - lat).abs() < 1e-9 && (point.lon - lon).abs() < 1e-9);
            prop_assert_eq!(&alert.area.description, place.trim());
            prop_assert_eq!(alert.field("place"), Some(place.trim()));
            prop_assert_eq!(alert.field("alert"), *colour);
            let depth_back: f64 = alert.field("depth_km").unwrap().parse().unwrap();
            prop_assert!((depth_back - depth).abs() < 1e-9);
            match mag {
                Some(mag) => {
                    let back: f64 = alert.field("mag").unwrap().parse().unwrap();
                    prop_assert!((back - mag).abs() < 1e-9);
                    prop_assert!(alert.headline.starts_with('M'));
                }
                None => prop_assert_eq!(alert.field("mag"), None),
            }
            prop_assert_eq!(&alert.sender, "us");
        }
    }
}
