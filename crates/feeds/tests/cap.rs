//! CAP parser: the shared real-world fixtures, hostile inputs and property tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use domain::geo::GeoPoint;
use feeds::{Action, Alert, Format, Limits, RejectCode, Rejection, Severity, Status, cap};
use proptest::prelude::*;

fn shared_fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/cap")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn own_fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cap")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn parse(body: &[u8]) -> Result<Alert, Rejection> {
    cap::parse(body, &Limits::default())
}

fn ok(body: &[u8]) -> Alert {
    parse(body).unwrap_or_else(|rejection| panic!("rejected: {rejection}"))
}

fn rejected(body: &[u8]) -> Rejection {
    match parse(body) {
        Ok(alert) => panic!("accepted: {alert:#?}"),
        Err(rejection) => rejection,
    }
}

fn fields<'a>(alert: &'a Alert, name: &'a str) -> Vec<&'a str> {
    alert.field_values(name).collect()
}

fn assert_closed_ring(ring: &[GeoPoint]) {
    assert!(ring.len() >= 4, "ring too short: {ring:?}");
    assert_eq!(ring.first(), ring.last());
    for pair in ring.windows(2) {
        assert_ne!(pair[0], pair[1], "consecutive duplicate in {ring:?}");
    }
}

/// A minimal valid alert with `extra` spliced in before `</alert>`.
fn minimal(extra: &str) -> String {
    format!(
        r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>X-1</identifier><sender>s@example.com</sender><sent>2024-01-01T00:00:00Z</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>{extra}</alert>"#
    )
}

const INFO_OPEN: &str = "<info><category>Met</category><event>Rain</event><urgency>Expected</urgency><severity>Minor</severity><certainty>Likely</certainty>";

// ---------------------------------------------------------------------------------------------
// Shared fixtures: every file has a pinned outcome.

#[test]
fn appendix_a1_homeland_security() {
    let alert = ok(&shared_fixture("v1dot2_appendix_adot1.xml"));
    assert_eq!(alert.format, Format::Cap);
    assert_eq!(
        alert.identity,
        "hsas@dhs.gov,43b080713727,2003-04-02T14:39:01-05:00"
    );
    assert_eq!(alert.dedup_key, alert.identity);
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(alert.status, Status::Actual);
    assert_eq!(alert.sender, "hsas@dhs.gov");
    assert_eq!(alert.sent_unix_ms, Some(1_049_312_341_000));
    assert_eq!(alert.headline, "Homeland Security Sets Code ORANGE");
    assert_eq!(alert.language, "en-US");
    assert_eq!(alert.severity, Some(Severity::Severe));
    assert!(alert.references.is_empty());
    assert_eq!(fields(&alert, "category"), ["Security"]);
    assert_eq!(fields(&alert, "language"), ["en-US"]);
    assert_eq!(alert.field("parameter.hsas"), Some("ORANGE"));
    assert_eq!(
        alert.area.description,
        "U.S. nationwide and interests worldwide"
    );
    assert!(alert.area.is_empty());
    // The default language is placed first in its block, in document order.
    let names: Vec<&str> = alert.fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "language",
            "category",
            "event",
            "urgency",
            "severity",
            "certainty",
            "parameter.hsas"
        ]
    );
}

#[test]
fn appendix_a2_thunderstorm() {
    let alert = ok(&shared_fixture("v1dot2_appendix_adot2.xml"));
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(alert.headline, "SEVERE THUNDERSTORM WARNING");
    assert_eq!(alert.severity, Some(Severity::Severe));
    assert_eq!(alert.field("event_code.SAME"), Some("SVR"));
    assert_eq!(alert.field("response_type"), Some("Shelter"));
    assert_eq!(alert.area.polygons.len(), 1);
    let ring = &alert.area.polygons[0];
    assert_closed_ring(ring);
    assert_eq!(ring.len(), 5);
    assert_eq!(ring[0], GeoPoint::new(38.47, -120.14));
    let codes: Vec<&str> = alert
        .area
        .geocodes
        .iter()
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(codes, ["006109", "006009", "006003"]);
    assert!(
        alert.area.description.starts_with(
            "EXTREME NORTH CENTRAL TUOLUMNE COUNTY IN CALIFORNIA, EXTREME NORTHEASTERN"
        )
    );
}

#[test]
fn appendix_a3_earthquake_update_with_circle() {
    let alert = ok(&shared_fixture("v1dot2_appendix_adot3.xml"));
    assert_eq!(alert.action, Action::Update);
    assert_eq!(
        alert.references,
        ["trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00"]
    );
    assert_eq!(alert.headline, "EQ 3.4 Imperial County CA");
    assert_eq!(alert.severity, Some(Severity::Minor));
    assert_eq!(alert.field("parameter.magnitude"), Some("3.4 Ml"));
    assert_eq!(alert.field("parameter.eventid"), Some("13970876"));
    assert_eq!(alert.area.circles.len(), 1);
    let circle = alert.area.circles[0];
    assert_eq!(circle.center, GeoPoint::new(32.9525, -115.5527));
    assert_eq!(circle.radius_km, 0.0);
}

#[test]
fn appendix_a4_two_languages() {
    let alert = ok(&shared_fixture("v1dot2_appendix_adot4.xml"));
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(fields(&alert, "language"), ["en-US", "es-US"]);
    assert_eq!(
        fields(&alert, "event"),
        ["Child Abduction", "Abducción de Niño"]
    );
    assert_eq!(fields(&alert, "category"), ["Rescue", "Rescue"]);
    assert_eq!(alert.headline, "Amber Alert in Los Angeles County");
    assert_eq!(alert.language, "en-US");
    assert_eq!(alert.field("source"), Some("SW"));
    assert_eq!(
        alert.area.description,
        "Los Angeles County; condado de Los Ángeles"
    );
    // The same geocode in both languages is kept once.
    assert_eq!(
        alert.area.geocodes,
        [("SAME".to_owned(), "006037".to_owned())]
    );
}

#[test]
fn nws_cap_1_1_blizzard() {
    let alert = ok(&shared_fixture("nws-5c2cf27b1f56885d61654dc47fa411d5.xml"));
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(alert.severity, Some(Severity::Severe));
    assert!(
        alert
            .headline
            .starts_with("Blizzard Warning issued December 27")
    );
    assert_eq!(alert.field("event_code.SAME"), Some("BZW"));
    assert_eq!(alert.field("parameter.wmoheader"), Some(""));
    assert_eq!(alert.field("parameter.ugc"), Some("MNZ020-021"));
    assert!(
        alert
            .field("note")
            .unwrap()
            .starts_with("Alert for Southern Cook")
    );
    // The empty <polygon></polygon> is ignored.
    assert!(alert.area.polygons.is_empty());
    assert_eq!(alert.area.geocodes.len(), 4);
    assert_eq!(alert.sent_unix_ms, Some(1_640_621_280_000));
}

#[test]
fn macao_monsoon_prefers_chinese() {
    let alert = ok(&shared_fixture("mo-cap_monsoon.xml"));
    assert_eq!(alert.action, Action::Update);
    assert_eq!(alert.language, "zh-mo");
    assert_eq!(
        alert.headline,
        "強烈季候風(即黑球)信號於 2025年04月13日06時00分 取消。"
    );
    assert_eq!(fields(&alert, "language"), ["zh-mo", "pt-PT", "en-US"]);
    assert_eq!(fields(&alert, "urgency").len(), 3);
    assert_eq!(fields(&alert, "response_type"), ["AllClear"; 3]);
    assert_eq!(alert.severity, Some(Severity::Moderate));
    // Its references name itself; kept as written.
    assert_eq!(
        alert.references,
        ["meteo@smg.gov.mo,SMG-Weather_MS_2025_006_03,2025-04-13T05:52:12+08:00"]
    );
    // Three identical polygons (one per language) are one; tabs/newlines separate points.
    assert_eq!(alert.area.polygons.len(), 1);
    let ring = &alert.area.polygons[0];
    assert_closed_ring(ring);
    assert_eq!(ring[0], GeoPoint::new(22.0766, 113.5709));
    // 63 points in the text, one consecutive duplicate (22.2167,113.5465).
    assert_eq!(ring.len(), 62);
    assert!(
        alert
            .area
            .description
            .starts_with("澳門特別行政區行政區域圖; ")
    );
}

#[test]
fn dwd_update_unescapes_and_skips_degenerate_polygon() {
    let alert = ok(&shared_fixture("dwd-update.xml"));
    assert_eq!(alert.action, Action::Update);
    assert_eq!(alert.language, "de-DE");
    assert_eq!(alert.headline, "Amtliche WARNUNG vor STARKEM GEWITTER");
    assert_eq!(alert.references.len(), 1);
    assert_eq!(alert.field("parameter.gusts"), Some("<60 [km/h]"));
    assert_eq!(
        alert.field("parameter.precipitation"),
        Some("<25 [l/m² in 1h]")
    );
    assert_eq!(
        fields(&alert, "event_code.GROUP"),
        ["THUNDERSTORM", "RAIN", "WIND", "HAIL"]
    );
    assert_eq!(alert.field("event_code.AREA_COLOR"), Some("251 140 0"));
    assert!(
        alert
            .field("code")
            .unwrap()
            .starts_with("id:2.49.0.0.276.0.DWD")
    );
    assert!(alert.area.polygons.is_empty(), "{:?}", alert.area.polygons);
    assert_eq!(
        alert.area.geocodes,
        [("WARNCELLID".to_owned(), "814626190".to_owned())]
    );
    assert_eq!(
        alert.area.description,
        "polygonal event area; Gemeinde Hohendubrau"
    );
}

#[test]
fn inmet_polygon_with_trailing_space_and_repeats() {
    let alert = ok(&shared_fixture("polygon-trailing-space.xml"));
    assert_eq!(alert.language, "pt-BR");
    assert_eq!(alert.area.polygons.len(), 1);
    let ring = &alert.area.polygons[0];
    assert_closed_ring(ring);
    assert_eq!(
        ring,
        &[
            GeoPoint::new(-5.233187, -35.661621),
            GeoPoint::new(-5.233187, -36.101074),
            GeoPoint::new(-5.090944, -35.266113),
            GeoPoint::new(-5.233187, -35.661621),
        ]
    );
    assert_eq!(alert.field("parameter.colorrisk"), Some("#FFFE00"));
}

#[test]
fn tsunami_with_signature() {
    let alert = ok(&shared_fixture("tsunami.xml"));
    assert_eq!(alert.action, Action::Raise);
    assert_eq!(alert.headline, "This is a Tsunami Information Statement.");
    assert_eq!(alert.severity, Some(Severity::Minor));
    assert_eq!(alert.field("incidents"), Some("rfwv11"));
    assert_eq!(alert.field("code"), Some("IPAWSv1.0"));
    assert_eq!(
        alert.field("parameter.eventpreliminarymagnitude"),
        Some("5.2")
    );
    assert_eq!(alert.area.circles.len(), 1);
    assert_eq!(alert.area.circles[0].radius_km, 1.0);
    assert_eq!(alert.sent_unix_ms, Some(1_659_314_448_000));
    // Nothing from the Signature leaks into fields.
    assert!(
        alert
            .fields
            .iter()
            .all(|(_, value)| !value.contains("SignedInfo"))
    );
}

#[test]
fn invalid_namespace_is_refused() {
    let rejection = rejected(&shared_fixture("invalid_xmlns.cap"));
    assert_eq!(rejection.code, RejectCode::WrongNamespace);
    assert!(
        rejection
            .reason
            .contains("urn:oasis:names:tc:emergency:alerts:1.2"),
        "{rejection}"
    );
}

#[test]
fn cancel_without_info() {
    let alert = ok(&shared_fixture("no_info_tag.cap"));
    assert_eq!(alert.action, Action::Cancel);
    assert_eq!(alert.status, Status::Actual);
    assert_eq!(
        alert.references,
        ["AtHoc,1017033100951096-517189320160225203219800,2016-02-25T12:32:19-08:00"]
    );
    assert_eq!(alert.severity, None);
    assert_eq!(alert.language, "en-US");
    assert!(!alert.headline.is_empty());
    assert!(alert.area.is_empty());
    assert!(alert.field("category").is_none());
    assert_eq!(alert.field("code"), Some("IPAWSv1.0"));
}

// ---------------------------------------------------------------------------------------------
// Our own fixtures.

#[test]
fn chinese_earthquake_multi_language() {
    let alert = ok(&own_fixture("zh-cn-earthquake.xml"));
    assert_eq!(alert.language, "zh-CN");
    assert_eq!(alert.headline, "内蒙古包头市发生5.6级地震");
    // The most severe across blocks.
    assert_eq!(alert.severity, Some(Severity::Extreme));
    assert_eq!(fields(&alert, "parameter.magnitude"), ["5.6", "5.6"]);
    assert_eq!(alert.field("event_code.CN-EVENT"), Some("11B01"));
    assert_eq!(
        alert.area.geocodes,
        [("GB2260".to_owned(), "390202".to_owned())]
    );
    assert_eq!(alert.area.circles.len(), 1);
    assert_eq!(alert.area.circles[0].radius_km, 50.0);
    assert_eq!(
        alert.area.description,
        "Baotou, Inner Mongolia; 内蒙古自治区包头市"
    );
}

#[test]
fn update_before_its_alert_parses() {
    let alert = ok(&own_fixture("update-before-alert.xml"));
    assert_eq!(alert.action, Action::Update);
    assert_eq!(alert.references.len(), 2);
    assert_eq!(
        alert.references[0],
        "ops@example.gov.cn,MUSTER-TEST-0001,2024-06-01T10:00:00+08:00"
    );
    assert_eq!(alert.headline, "暴雨");
    assert_eq!(alert.area.polygons[0].len(), 4);
}

#[test]
fn billion_laughs_is_refused_fast() {
    let body = own_fixture("billion-laughs.xml");
    let started = Instant::now();
    let rejection = rejected(&body);
    assert_eq!(rejection.code, RejectCode::DoctypeForbidden);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn external_entity_is_refused() {
    let rejection = rejected(&own_fixture("xxe.xml"));
    assert_eq!(rejection.code, RejectCode::DoctypeForbidden);
    assert!(!rejection.reason.contains("root:"));
}

#[test]
fn date_without_offset_is_invalid() {
    let rejection = rejected(&own_fixture("date-without-offset.xml"));
    assert_eq!(rejection.code, RejectCode::InvalidValue);
    assert!(rejection.reason.contains("sent"), "{rejection}");
    assert!(rejection.reason.contains("offset"), "{rejection}");
}

#[test]
fn bad_enum_value_is_named() {
    let rejection = rejected(&own_fixture("bad-enum.xml"));
    assert_eq!(rejection.code, RejectCode::InvalidValue);
    assert!(rejection.reason.contains("severity"), "{rejection}");
    assert!(rejection.reason.contains("Catastrophic"), "{rejection}");
    assert!(rejection.reason.contains("Extreme, Severe"), "{rejection}");
}

#[test]
fn missing_identifier_is_named() {
    let rejection = rejected(&own_fixture("missing-identifier.xml"));
    assert_eq!(rejection.code, RejectCode::MissingElement);
    assert!(rejection.reason.contains("identifier"), "{rejection}");
}

#[test]
fn exercise_and_test_statuses() {
    let exercise = ok(&own_fixture("status-exercise.xml"));
    assert_eq!(exercise.status, Status::Exercise);
    assert_eq!(exercise.action, Action::Raise);
    assert_eq!(exercise.headline, "火灾演练");
    let test = ok(&own_fixture("status-test.xml"));
    assert_eq!(test.status, Status::Test);
    assert_eq!(test.field("note"), Some("Test message, not a real event"));
}

#[test]
fn prefixed_namespace_document() {
    let alert = ok(&own_fixture("prefixed.xml"));
    assert_eq!(
        alert.identity,
        "ops@example.gov.cn,PREFIXED-1,2024-06-01T10:00:00Z"
    );
    assert_eq!(alert.headline, "Gas leak <Main St> & 2nd Ave");
    assert_eq!(alert.severity, Some(Severity::Moderate));
}

// ---------------------------------------------------------------------------------------------
// Limits and hostile input.

#[test]
fn deep_nesting_is_refused() {
    let mut body = String::from(r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">"#);
    body.push_str(&"<a>".repeat(1000));
    body.push_str(&"</a>".repeat(1000));
    body.push_str("</alert>");
    let started = Instant::now();
    assert_eq!(rejected(body.as_bytes()).code, RejectCode::TooDeep);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn too_many_elements_are_refused() {
    let body = minimal(&"<x/>".repeat(100_000));
    assert!(body.len() <= Limits::default().body_bytes_max);
    let started = Instant::now();
    assert_eq!(rejected(body.as_bytes()).code, RejectCode::TooManyElements);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn ten_megabytes_are_too_large() {
    let mut body = minimal("").into_bytes();
    body.resize(10 * 1024 * 1024, b' ');
    let rejection = feeds::parse(Format::Cap, &body, &Limits::default()).unwrap_err();
    assert_eq!(rejection.code, RejectCode::TooLarge);
}

#[test]
fn long_text_is_too_large() {
    let body = minimal(&format!("<note>{}</note>", "n".repeat(70_000)));
    let rejection = rejected(body.as_bytes());
    assert_eq!(rejection.code, RejectCode::TooLarge);
    assert!(rejection.reason.contains("note"), "{rejection}");
    // Long text in elements the parser skips costs nothing and is fine.
    let body = minimal(&format!(
        "<restriction>{}</restriction>",
        "n".repeat(70_000)
    ));
    ok(body.as_bytes());
}

#[test]
fn unknown_entity_is_malformed() {
    let body = minimal("<note>&lol;</note>");
    assert_eq!(rejected(body.as_bytes()).code, RejectCode::Malformed);
}

#[test]
fn predefined_entities_and_char_refs_are_resolved() {
    let body = minimal("<note>a &lt;b&gt; &amp; &quot;c&apos; &#13;&#x4e2d;</note>");
    let alert = ok(body.as_bytes());
    assert_eq!(alert.field("note"), Some("a <b> & \"c' \r中"));
}

#[test]
fn non_utf8_is_malformed() {
    let mut body = minimal("<note>x</note>").into_bytes();
    let at = body.iter().position(|&b| b == b'x').unwrap();
    body[at] = 0xff;
    assert_eq!(rejected(&body).code, RejectCode::Malformed);
}

#[test]
fn structural_errors_are_malformed() {
    for body in [
        String::new(),
        "   ".to_owned(),
        r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</identifier>"#
            .to_owned(),
        minimal("<note>x</nope>"),
        format!("{}<alert/>", minimal("")),
        minimal("<p:note>x</p:note>"),
        minimal("<note>a & b</note>"),
    ] {
        let rejection = rejected(body.as_bytes());
        assert_eq!(
            rejection.code,
            RejectCode::Malformed,
            "{body:?}: {rejection}"
        );
    }
}

#[test]
fn root_must_be_a_cap_alert() {
    for body in [
        "<alert><identifier>x</identifier></alert>",
        r#"<feed xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>"#,
        r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.0"/>"#,
    ] {
        assert_eq!(
            rejected(body.as_bytes()).code,
            RejectCode::WrongNamespace,
            "{body}"
        );
    }
    // CAP 1.1 is accepted.
    let body = minimal("").replace("cap:1.2", "cap:1.1");
    assert_eq!(ok(body.as_bytes()).status, Status::Actual);
}

#[test]
fn info_requirements_and_enums() {
    let cases = [
        (
            "<info><event>E</event><urgency>Past</urgency><severity>Minor</severity><certainty>Likely</certainty></info>",
            RejectCode::MissingElement,
            "category",
        ),
        (
            "<info><category>Met</category><urgency>Past</urgency><severity>Minor</severity><certainty>Likely</certainty></info>",
            RejectCode::MissingElement,
            "event",
        ),
        (
            "<info><category>Met</category><event>E</event><severity>Minor</severity><certainty>Likely</certainty></info>",
            RejectCode::MissingElement,
            "urgency",
        ),
        (
            "<info><category>Met</category><event>E</event><urgency>Past</urgency><certainty>Likely</certainty></info>",
            RejectCode::MissingElement,
            "severity",
        ),
        (
            "<info><category>Met</category><event>E</event><urgency>Past</urgency><severity>Minor</severity></info>",
            RejectCode::MissingElement,
            "certainty",
        ),
        (
            "<info><category>Weather</category><event>E</event><urgency>Past</urgency><severity>Minor</severity><certainty>Likely</certainty></info>",
            RejectCode::InvalidValue,
            "Weather",
        ),
        (
            "<info><category>Met</category><event>E</event><urgency>Soon</urgency><severity>Minor</severity><certainty>Likely</certainty></info>",
            RejectCode::InvalidValue,
            "Soon",
        ),
        (
            "<info><category>Met</category><event>E</event><urgency>Past</urgency><severity>Minor</severity><certainty>Sure</certainty></info>",
            RejectCode::InvalidValue,
            "Sure",
        ),
    ];
    for (extra, code, needle) in cases {
        let rejection = rejected(minimal(extra).as_bytes());
        assert_eq!(rejection.code, code, "{extra}: {rejection}");
        assert!(rejection.reason.contains(needle), "{extra}: {rejection}");
    }
    // CAP 1.1 "Very Likely" reads as Likely.
    let body = minimal(
        "<info><category>Met</category><event>E</event><urgency>Past</urgency><severity>Minor</severity><certainty>Very Likely</certainty></info>",
    );
    assert_eq!(ok(body.as_bytes()).field("certainty"), Some("Likely"));
    for (from, to) in [("Actual", "Draft"), ("Alert", "Ack"), ("Public", "Private")] {
        let body = minimal("").replace(&format!(">{from}<"), &format!(">{to}<"));
        ok(body.as_bytes());
    }
    let body = minimal("").replace(">Alert<", ">Error<");
    assert_eq!(ok(body.as_bytes()).action, Action::Receipt);
    for (from, to) in [
        ("Actual", "Real"),
        ("Alert", "Notice"),
        ("Public", "Everyone"),
    ] {
        let body = minimal("").replace(&format!(">{from}<"), &format!(">{to}<"));
        let rejection = rejected(body.as_bytes());
        assert_eq!(rejection.code, RejectCode::InvalidValue);
        assert!(rejection.reason.contains(to), "{rejection}");
    }
}

#[test]
fn bad_geometry_is_named() {
    for (area, needle) in [
        ("<polygon>1,1 2,2 3,x 1,1</polygon>", "polygon"),
        ("<polygon>1,1 2,2 95,3 1,1</polygon>", "latitude"),
        ("<circle>1,1</circle>", "circle"),
        ("<circle>1,1 -5</circle>", "radius"),
    ] {
        let body = minimal(&format!(
            "{INFO_OPEN}<area><areaDesc>A</areaDesc>{area}</area></info>"
        ));
        let rejection = rejected(body.as_bytes());
        assert_eq!(rejection.code, RejectCode::InvalidValue, "{area}");
        assert!(rejection.reason.contains(needle), "{area}: {rejection}");
    }
    let body = minimal(&format!(
        "{INFO_OPEN}<area><areaDesc>A</areaDesc><polygon/><circle></circle><altitude>x</altitude><ceiling>7</ceiling></area></info>"
    ));
    assert!(ok(body.as_bytes()).area.is_empty());
}

#[test]
fn bad_info_dates_are_invalid() {
    let body = minimal(&format!("{INFO_OPEN}<expires>tomorrow</expires></info>"));
    let rejection = rejected(body.as_bytes());
    assert_eq!(rejection.code, RejectCode::InvalidValue);
    assert!(rejection.reason.contains("expires"), "{rejection}");
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn xml_escape(text: &str, numeric: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ if numeric && !ch.is_ascii() => out.push_str(&format!("&#x{:x};", ch as u32)),
            _ => out.push(ch),
        }
    }
    out
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Printable text (no control characters), including XML specials and CJK.
    "[a-zA-Z0-9<>&\"' .,:@_\\-中文地震]{0,4}[a-zA-Z0-9<>&\"'@中文]{1,12}[a-zA-Z0-9<>&\"' .中]{0,4}"
}

const STATUS_CHOICES: [(&str, Status); 5] = [
    ("Actual", Status::Actual),
    ("Exercise", Status::Exercise),
    ("System", Status::System),
    ("Test", Status::Test),
    ("Draft", Status::Draft),
];
const MSG_TYPE_CHOICES: [(&str, Action); 5] = [
    ("Alert", Action::Raise),
    ("Update", Action::Update),
    ("Cancel", Action::Cancel),
    ("Ack", Action::Receipt),
    ("Error", Action::Receipt),
];
const SEVERITY_CHOICES: [(&str, Severity); 5] = [
    ("Extreme", Severity::Extreme),
    ("Severe", Severity::Severe),
    ("Moderate", Severity::Moderate),
    ("Minor", Severity::Minor),
    ("Unknown", Severity::Unknown),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&body);
    }

    #[test]
    fn never_panics_on_xmlish_text(body in "[<>/&;#a-z:=\"' \n!\\[\\]?-]{0,400}") {
        let _ = parse(body.as_bytes());
        let wrapped = minimal(&body);
        let _ = parse(wrapped.as_bytes());
    }

    #[test]
    fn never_panics_on_mutated_fixtures(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let name = [
            "v1dot2_appendix_adot2.xml",
            "dwd-update.xml",
            "tsunami.xml",
            "no_info_tag.cap",
        ][which];
        let mut body = shared_fixture(name);
        for (index, byte, kind) in edits {
            let at = index.index(body.len());
            match kind {
                0 => body[at] = byte,
                1 => body.insert(at, byte),
                _ => {
                    body.remove(at);
                }
            }
            if body.is_empty() {
                break;
            }
        }
        if let Some(cut) = cut.filter(|_| !body.is_empty()) {
            body.truncate(cut.index(body.len()));
        }
        let _ = parse(&body);
    }

    #[test]
    fn generated_alerts_round_trip(
        identifier in text_strategy(),
        sender in text_strategy(),
        headline in text_strategy(),
        numeric in any::<bool>(),
        status in 0usize..5,
        msg_type in 0usize..5,
        severities in proptest::collection::vec(0usize..5, 0..3),
        grid in proptest::collection::btree_set((-89i32..89, -179i32..179), 3..8),
        fraction in 0u32..10_000,
        padding in "[ \t\n]{0,3}",
    ) {
        let points: Vec<GeoPoint> = grid
            .iter()
            .map(|&(lat, lon)| {
                let frac = f64::from(fraction) / 10_000.0;
                GeoPoint::new(f64::from(lat) + frac, f64::from(lon) + frac)
            })
            .collect();
        let polygon: Vec<String> = points.iter().map(|p| format!("{},{}", p.lat, p.lon)).collect();
        let polygon = format!("{padding}{}{padding}", polygon.join(&format!(" {padding}")));
        let mut infos = String::new();
        for (index, severity) in severities.iter().enumerate() {
            infos.push_str(&format!(
                "<info><language>{}</language><category>Geo</category><event>E{index}</event>\
                 <urgency>Unknown</urgency><severity>{}</severity><certainty>Observed</certainty>\
                 <headline>{}</headline><area><areaDesc>A</areaDesc><polygon>{polygon}</polygon></area></info>",
                if index == 1 { "zh-CN" } else { "en-US" },
                SEVERITY_CHOICES[*severity].0,
                xml_escape(&format!("{headline}{index}"), numeric),
            ));
        }
        let sent = "2024-02-29T23:59:59+08:00";
        let body = format!(
            r#"<?xml version="1.0"?><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{padding}{}</identifier><sender>{}</sender><sent>{sent}</sent><status>{}</status><msgType>{}</msgType><scope>Public</scope>{infos}</alert>"#,
            xml_escape(&identifier, numeric),
            xml_escape(&sender, numeric),
            STATUS_CHOICES[status].0,
            MSG_TYPE_CHOICES[msg_type].0,
        );
        let (identifier, sender) = (identifier.trim(), sender.trim());
        prop_assume!(!identifier.is_empty() && !sender.is_empty());
        let alert = parse(body.as_bytes()).map_err(|r| TestCaseError::fail(format!("{r}\n{body}")))?;
        prop_assert_eq!(&alert.identity, &format!("{sender},{identifier},{sent}"));
        prop_assert_eq!(&alert.dedup_key, &alert.identity);
        prop_assert_eq!(&alert.sender, sender);
        prop_assert_eq!(alert.status, STATUS_CHOICES[status].1);
        prop_assert_eq!(alert.action, MSG_TYPE_CHOICES[msg_type].1);
        prop_assert_eq!(alert.sent_unix_ms, Some(1_709_222_399_000));
        let most_severe = severities
            .iter()
            .min()
            .map(|&index| SEVERITY_CHOICES[index].1);
        prop_assert_eq!(alert.severity, most_severe);
        if severities.is_empty() {
            prop_assert!(alert.area.polygons.is_empty());
        } else {
            let preferred = if severities.len() > 1 { 1 } else { 0 };
            let expected = format!("{headline}{preferred}");
            prop_assert_eq!(alert.headline.as_str(), expected.trim());
            prop_assert_eq!(&alert.language, if preferred == 1 { "zh-CN" } else { "en-US" });
            let mut ring = points.clone();
            ring.push(points[0]);
            prop_assert_eq!(&alert.area.polygons, &vec![ring]);
            prop_assert_eq!(alert.field_values("event").count(), severities.len());
        }
    }
}
