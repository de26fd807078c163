//! The feed mapping: the shipped default, located errors in bad files, and mapping of hand-built
//! alerts (independent of the parsers).

use domain::class::{IncidentClass, sub_type};
use domain::geo::GeoPoint;
use domain::grade::WarningLevel;
use domain::region::Region;
use feeds::locate::LocateMethod;
use feeds::mapping::{KIND_FIELD_RULE_ID, Mapping};
use feeds::{Action, Alert, Area, Circle, Format, Severity, Status};

fn region() -> Region {
    Region::embedded_default()
}

fn mapping() -> Mapping {
    Mapping::embedded_default()
}

fn alert(format: Format, fields: &[(&str, &str)]) -> Alert {
    Alert {
        format,
        identity: "test-1".into(),
        dedup_key: "test-1".into(),
        action: Action::Raise,
        status: Status::Actual,
        references: Vec::new(),
        sender: "test".into(),
        sent_unix_ms: Some(1_700_000_000_000),
        headline: "test alert".into(),
        language: "en-US".into(),
        severity: None,
        fields: fields
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        area: Area::default(),
    }
}

fn square(lat: f64, lon: f64, half: f64) -> Vec<GeoPoint> {
    vec![
        GeoPoint::new(lat - half, lon - half),
        GeoPoint::new(lat - half, lon + half),
        GeoPoint::new(lat + half, lon + half),
        GeoPoint::new(lat + half, lon - half),
        GeoPoint::new(lat - half, lon - half),
    ]
}

/// The error text of loading `text`, which must fail.
fn load_error(text: &str) -> String {
    Mapping::from_toml("bad.toml", text)
        .expect_err("the file should be rejected")
        .to_string()
}

// ---- The shipped default ----------------------------------------------------------------------

#[test]
fn embedded_default_loads_and_fits_the_sample_region() {
    let mapping = mapping();
    mapping
        .check_against(&region())
        .expect("default mapping fits the sample region");
    assert_eq!(mapping.exercise_namespace(), "drill.feeds");
    assert_eq!(mapping.locate_options().max_km, 30.0);
    assert_eq!(mapping.locate_options().other_townships_max, 20);
    assert!(
        mapping
            .locate_options()
            .geocode_names
            .iter()
            .any(|name| name == "GB2260")
    );
    assert!(mapping.rules().len() >= 40, "{}", mapping.rules().len());
}

#[test]
fn every_default_rule_has_a_valid_kind_and_conditions() {
    let mapping = mapping();
    let mut ids = std::collections::BTreeSet::new();
    for rule in mapping.rules() {
        assert!(ids.insert(rule.id.clone()), "duplicate id {}", rule.id);
        assert_eq!(
            sub_type(rule.sub_type.code),
            Some(rule.sub_type),
            "{}",
            rule.id
        );
        assert_ne!(
            rule.sub_type.code, "unclassified.feed_silent",
            "{}",
            rule.id
        );
        assert!(!rule.when.is_empty(), "{}", rule.id);
        if rule.sub_type.class == IncidentClass::Unclassified {
            assert!(
                rule.note.is_some(),
                "unmapped-by-design rule {} says why",
                rule.id
            );
        }
    }
    // The statutory classes are all reachable.
    for class in [
        IncidentClass::NaturalDisaster,
        IncidentClass::Accident,
        IncidentClass::PublicHealth,
        IncidentClass::SocialSafety,
    ] {
        assert!(
            mapping
                .rules()
                .iter()
                .any(|rule| rule.sub_type.class == class),
            "{class:?}"
        );
    }
}

#[test]
fn default_feeds_with_heartbeats() {
    let mapping = mapping();
    let feeds = mapping.feeds();
    assert_eq!(feeds.len(), 2);
    let quakes = feeds
        .iter()
        .find(|f| f.format == Some(Format::Geojson))
        .unwrap();
    assert_eq!(quakes.owner_code, "390000");
    assert_eq!(quakes.expect_every_ms, Some(10 * 60_000));
    assert_eq!(quakes.sender, None);
    let gas = feeds
        .iter()
        .find(|f| f.format == Some(Format::Alertmanager))
        .unwrap();
    assert_eq!(gas.owner_code, "390202");
    assert_eq!(gas.sender.as_deref(), Some("chem-park-sensors"));
    assert_eq!(gas.expect_every_ms, Some(5 * 60_000));

    let mut from_park = alert(Format::Alertmanager, &[("label.alertname", "GasLeak")]);
    from_park.sender = "chem-park-sensors".into();
    assert_eq!(
        mapping.feed_for(&from_park).map(|f| f.name.as_str()),
        Some(gas.name.as_str())
    );
    let elsewhere = alert(Format::Alertmanager, &[("label.alertname", "GasLeak")]);
    assert!(mapping.feed_for(&elsewhere).is_none());
    let quake = alert(Format::Geojson, &[("type", "earthquake")]);
    assert_eq!(
        mapping.feed_for(&quake).map(|f| f.name.as_str()),
        Some(quakes.name.as_str())
    );
}

#[test]
fn feed_heartbeat_in_seconds() {
    let text = "[[feed]]\nname = \"fast\"\nformat = \"cap\"\nowner = \"390202\"\nexpect_every_seconds = 2\n";
    let mapping = Mapping::from_toml("m.toml", text).unwrap();
    assert_eq!(mapping.feeds()[0].expect_every_ms, Some(2_000));

    let both = load_error(
        "[[feed]]\nname = \"fast\"\nformat = \"cap\"\nowner = \"390202\"\nexpect_every_minutes = 1\nexpect_every_seconds = 2\n",
    );
    assert!(both.starts_with("bad.toml:6:24: "), "{both}");
    assert!(both.contains("not both"), "{both}");

    for bad in ["0", "-5", "604801"] {
        let error = load_error(&format!(
            "[[feed]]\nname = \"fast\"\nformat = \"cap\"\nowner = \"390202\"\nexpect_every_seconds = {bad}\n"
        ));
        assert!(error.starts_with("bad.toml:5:24: "), "{error}");
        assert!(
            error.contains("expect_every_seconds must be 1 to 604800"),
            "{error}"
        );
    }
}

#[test]
fn feed_owner_outside_the_region_is_a_located_error() {
    let text = "\n[[feed]]\nname = \"x\"\nformat = \"cap\"\nowner = \"110000\"\n";
    let mapping = Mapping::from_toml("m.toml", text).unwrap();
    let error = mapping.check_against(&region()).unwrap_err().to_string();
    assert!(error.starts_with("m.toml:5:9: "), "{error}");
    assert!(error.contains("110000"), "{error}");
}

// ---- Located errors --------------------------------------------------------------------------

#[test]
fn unknown_kind_is_located_and_lists_known_codes() {
    let error = load_error(
        "[[rule]]\nid = \"r1\"\nkind = \"natural.volcano\"\n[rule.when]\nevent = \"x\"\n",
    );
    assert!(error.starts_with("bad.toml:3:8: "), "{error}");
    assert!(error.contains("natural.volcano"), "{error}");
    assert!(error.contains("natural.{flood"), "{error}");
    assert!(error.contains("accident.{"), "{error}");
}

#[test]
fn rule_without_when_is_located() {
    let error = load_error(
        "exercise_namespace = \"drill.x\"\n\n[[rule]]\nid = \"r1\"\nkind = \"accident.fire\"\n",
    );
    assert!(error.starts_with("bad.toml:3:"), "{error}");
    assert!(error.contains("no conditions"), "{error}");

    let error = load_error("[[rule]]\nid = \"r1\"\nkind = \"accident.fire\"\nwhen = {}\n");
    assert!(error.starts_with("bad.toml:4:"), "{error}");
    assert!(error.contains("no conditions"), "{error}");
}

#[test]
fn bad_warning_is_located() {
    let error = load_error(
        "[[rule]]\nid = \"r1\"\nkind = \"accident.fire\"\nwarning = \"purple\"\n[rule.when]\nevent = \"x\"\n",
    );
    assert!(error.starts_with("bad.toml:4:11: "), "{error}");
    assert!(error.contains("purple"), "{error}");

    let error = load_error("[warning]\n\"label.severity\" = { critical = \"crimson\" }\n");
    assert!(error.starts_with("bad.toml:2:"), "{error}");
    assert!(error.contains("crimson"), "{error}");
}

#[test]
fn duplicate_rule_id_is_located() {
    let rule = "[[rule]]\nid = \"same\"\nkind = \"accident.fire\"\n[rule.when]\nevent = \"x\"\n";
    let error = load_error(&format!("{rule}{rule}"));
    assert!(error.starts_with("bad.toml:7:6: "), "{error}");
    assert!(error.contains("duplicate rule id \"same\""), "{error}");
}

#[test]
fn other_bad_files_are_located() {
    // Unknown key.
    let error = load_error(
        "[[rule]]\nid = \"r\"\nkind = \"accident.fire\"\ncolour = \"red\"\n[rule.when]\nevent = \"x\"\n",
    );
    assert!(error.starts_with("bad.toml:4:"), "{error}");
    assert!(error.contains("colour"), "{error}");
    // Unknown format.
    let error = load_error(
        "[[rule]]\nid = \"r\"\nformat = \"xml\"\nkind = \"accident.fire\"\n[rule.when]\nevent = \"x\"\n",
    );
    assert!(error.starts_with("bad.toml:3:"), "{error}");
    assert!(error.contains("cap, alertmanager"), "{error}");
    // Empty pattern.
    let error = load_error(
        "[[rule]]\nid = \"r\"\nkind = \"accident.fire\"\n[rule.when]\nevent = [\"~\"]\n",
    );
    assert!(error.starts_with("bad.toml:5:"), "{error}");
    // A namespace that is not a drill.
    let error = load_error("exercise_namespace = \"live\"\n");
    assert!(error.starts_with("bad.toml:1:"), "{error}");
    assert!(error.contains("drill.<id>"), "{error}");
    // Unknown correlation kind.
    let error = load_error("[[correlation.kind]]\nkind = \"natural.nope\"\ndistance_km = 1.0\n");
    assert!(error.starts_with("bad.toml:2:"), "{error}");
    // Syntax error.
    let error = load_error("[locate\n");
    assert!(error.starts_with("bad.toml:1:"), "{error}");
    // The reserved escape-hatch id.
    let error = load_error(&format!(
        "[[rule]]\nid = \"{KIND_FIELD_RULE_ID}\"\nkind = \"accident.fire\"\n[rule.when]\nevent = \"x\"\n"
    ));
    assert!(error.contains("reserved"), "{error}");
    // A feed nobody could recognise.
    let error = load_error("[[feed]]\nname = \"f\"\nowner = \"390000\"\n");
    assert!(error.contains("format or a sender"), "{error}");
}

// ---- Mapping alerts --------------------------------------------------------------------------

#[test]
fn cap_earthquake_in_chinese_with_magnitude_and_polygon() {
    let mut quake = alert(
        Format::Cap,
        &[
            ("category", "Geo"),
            ("event", "地震"),
            ("parameter.magnitude", "6.1"),
        ],
    );
    quake.language = "zh-CN".into();
    quake.severity = Some(Severity::Severe);
    // Around 港北区: 港城街道, 滨海街道 and the chemical park.
    quake.area.polygons = vec![square(30.02, 121.67, 0.1)];
    let mapped = mapping().map(&quake, &region());
    assert_eq!(mapped.sub_type.code, "natural.earthquake");
    assert_eq!(mapped.rule_id.as_deref(), Some("cap-geo-earthquake"));
    assert!(mapped.reason.contains("event=地震"), "{}", mapped.reason);
    assert!(mapped.reason.contains("category=Geo"), "{}", mapped.reason);
    assert_eq!(mapped.facts.magnitude, Some(6.1));
    assert_eq!(mapped.facts.deaths, None);
    assert_eq!(mapped.warning, Some(WarningLevel::Orange));
    assert!(mapped.reason.contains("severity"), "{}", mapped.reason);
    assert_eq!(mapped.located.method, LocateMethod::PointInPolygon);
    assert_eq!(mapped.located.township_code.as_deref(), Some("390202002"));
    assert_eq!(mapped.located.other_township_codes.len(), 2);
    assert_eq!(mapped.correlation.distance_km, 100.0);
    assert_eq!(mapped.correlation.window_ms, 180 * 60_000);
}

#[test]
fn alertmanager_gas_leak_near_the_chemical_park() {
    let mut leak = alert(
        Format::Alertmanager,
        &[
            ("label.alertname", "GasLeakHigh"),
            ("label.severity", "critical"),
            ("label.sensor", "H-17"),
            ("annotation.summary", "H2S 40 ppm at tank farm 3"),
        ],
    );
    leak.sender = "chem-park-sensors".into();
    leak.area.points = vec![GeoPoint::new(30.045, 121.752)];
    let mapped = mapping().map(&leak, &region());
    assert_eq!(mapped.sub_type.code, "accident.hazardous_chemicals");
    assert_eq!(mapped.rule_id.as_deref(), Some("am-gas"));
    assert_eq!(mapped.warning, Some(WarningLevel::Red));
    assert!(
        mapped.reason.contains("label.severity=critical"),
        "{}",
        mapped.reason
    );
    assert_eq!(mapped.located.method, LocateMethod::NearestCentroid);
    assert_eq!(mapped.located.township_code.as_deref(), Some("390202400"));
    assert_eq!(mapped.correlation.distance_km, 5.0);
}

#[test]
fn rule_warning_wins_over_cap_severity() {
    let text = r#"
[[rule]]
id = "fixed"
kind = "accident.fire"
warning = "red"
[rule.when]
event = "~fire"
"#;
    let mapping = Mapping::from_toml("m.toml", text).unwrap();
    let mut fire = alert(Format::Cap, &[("event", "Structure Fire")]);
    fire.severity = Some(Severity::Minor);
    let mapped = mapping.map(&fire, &region());
    assert_eq!(mapped.warning, Some(WarningLevel::Red));
    assert!(
        mapped.reason.contains("fixed by the rule"),
        "{}",
        mapped.reason
    );
}

#[test]
fn muster_kind_escape_hatch() {
    let mut sensor = alert(
        Format::Alertmanager,
        &[
            ("label.alertname", "Something"),
            ("label.muster_kind", "accident.special_equipment"),
            ("label.severity", "warning"),
        ],
    );
    sensor.area.points = vec![GeoPoint::new(30.26, 120.17)];
    let mapped = mapping().map(&sensor, &region());
    assert_eq!(mapped.sub_type.code, "accident.special_equipment");
    assert_eq!(mapped.rule_id.as_deref(), Some(KIND_FIELD_RULE_ID));
    assert!(
        mapped.reason.contains("label.muster_kind"),
        "{}",
        mapped.reason
    );
    assert_eq!(mapped.warning, Some(WarningLevel::Yellow));
    assert_eq!(mapped.located.township_code.as_deref(), Some("390102001"));

    // PagerDuty custom details work the same; the hatch comes before the rules.
    let pd = alert(
        Format::Pagerduty,
        &[
            ("class", "gas leak"),
            ("custom.muster_kind", " accident.fire "),
        ],
    );
    assert_eq!(mapping().map(&pd, &region()).sub_type.code, "accident.fire");

    // Unknown and unclassified codes are ignored (and said so); the rules still apply.
    let spoof = alert(
        Format::Alertmanager,
        &[
            ("label.alertname", "ToxicGasAlarm"),
            ("label.muster_kind", "unclassified.feed_silent"),
        ],
    );
    let mapped = mapping().map(&spoof, &region());
    assert_eq!(mapped.sub_type.code, "accident.hazardous_chemicals");
    assert!(mapped.reason.contains("ignored"), "{}", mapped.reason);
}

#[test]
fn unmapped_alert_says_what_was_seen() {
    let disk = alert(
        Format::Alertmanager,
        &[("label.alertname", "DiskFull"), ("label.instance", "db-1")],
    );
    let mapped = mapping().map(&disk, &region());
    assert_eq!(mapped.sub_type.code, "unclassified.unmapped");
    assert_eq!(mapped.rule_id, None);
    assert!(
        mapped.reason.starts_with("no rule matched"),
        "{}",
        mapped.reason
    );
    assert!(mapped.reason.contains("alertmanager"), "{}", mapped.reason);
    assert!(
        mapped.reason.contains("label.alertname=DiskFull"),
        "{}",
        mapped.reason
    );
    assert_eq!(mapped.warning, None);
    assert_eq!(mapped.located.method, LocateMethod::Unknown);
    assert_eq!(mapped.located.reason, "the alert names no location");

    let bare = alert(Format::Pagerduty, &[]);
    let mapped = mapping().map(&bare, &region());
    assert_eq!(mapped.sub_type.code, "unclassified.unmapped");
    assert!(
        mapped.reason.contains("none of the fields"),
        "{}",
        mapped.reason
    );
}

#[test]
fn rescue_and_quarry_blasts_are_unmapped_by_design() {
    let amber = alert(
        Format::Cap,
        &[
            ("category", "Rescue"),
            ("event", "Child Abduction Emergency"),
        ],
    );
    let mapped = mapping().map(&amber, &region());
    assert_eq!(mapped.sub_type.code, "unclassified.unmapped");
    assert_eq!(mapped.rule_id.as_deref(), Some("cap-rescue"));
    assert!(mapped.reason.contains("by design"), "{}", mapped.reason);
    assert!(mapped.reason.contains("police"), "{}", mapped.reason);

    let blast = alert(Format::Geojson, &[("type", "quarry blast"), ("mag", "1.9")]);
    let mapped = mapping().map(&blast, &region());
    assert_eq!(mapped.sub_type.code, "unclassified.unmapped");
    assert_eq!(mapped.rule_id.as_deref(), Some("geojson-not-earthquake"));
}

#[test]
fn california_quake_is_located_unknown() {
    let mut quake = alert(
        Format::Geojson,
        &[("type", "earthquake"), ("mag", "4.4"), ("alert", "green")],
    );
    quake.area.points = vec![GeoPoint::new(35.77, -117.60)];
    let mapped = mapping().map(&quake, &region());
    assert_eq!(mapped.sub_type.code, "natural.earthquake");
    assert_eq!(mapped.facts.magnitude, Some(4.4));
    assert_eq!(mapped.warning, Some(WarningLevel::Blue));
    assert_eq!(mapped.located.method, LocateMethod::Unknown);
    assert_eq!(mapped.located.township_code, None);
    assert!(
        mapped.located.reason.contains("beyond 30 km"),
        "{}",
        mapped.located.reason
    );
}

#[test]
fn geocode_of_a_county_locates_a_township_in_it() {
    let mut flood = alert(
        Format::Cap,
        &[("category", "Met"), ("event", "Flash Flood Warning")],
    );
    flood.severity = Some(Severity::Extreme);
    flood.area.geocodes = vec![("GB2260".into(), "390121".into())];
    let mapped = mapping().map(&flood, &region());
    assert_eq!(mapped.sub_type.code, "natural.flood");
    assert_eq!(mapped.warning, Some(WarningLevel::Red));
    assert_eq!(mapped.located.method, LocateMethod::Geocode);
    let township = mapped.located.township_code.as_deref().unwrap();
    let tree = &region().tree;
    assert_eq!(tree.county_of(township).unwrap().code, "390121");
    // 青溪镇 is nearest the county centroid.
    assert_eq!(township, "390121100");
}

#[test]
fn circle_area_and_facts_from_chinese_values() {
    let mut report = alert(
        Format::Cap,
        &[
            ("category", "Other"),
            ("event", "危化品泄漏"),
            ("parameter.deaths", "3人"),
            ("parameter.serious_injuries", "not known"),
            ("custom.serious_injuries", "12"),
            ("parameter.direct_loss_cny", "3500万元"),
            ("parameter.missing", "-1"),
        ],
    );
    report.area.circles = vec![Circle {
        center: GeoPoint::new(30.05, 121.75),
        radius_km: 3.0,
    }];
    let mapped = mapping().map(&report, &region());
    assert_eq!(mapped.sub_type.code, "accident.hazardous_chemicals");
    assert_eq!(mapped.rule_id.as_deref(), Some("zh-hazchem"));
    assert_eq!(mapped.facts.deaths, Some(3));
    assert_eq!(mapped.facts.serious_injuries, Some(12));
    assert_eq!(mapped.facts.direct_loss_cny, Some(35_000_000));
    assert_eq!(mapped.facts.missing, None);
    assert_eq!(mapped.located.method, LocateMethod::PointInPolygon);
    assert_eq!(mapped.located.township_code.as_deref(), Some("390202400"));
}

/// Format, fields, expected sub-type code.
type Case = (
    Format,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn default_rules_cover_the_common_cases() {
    let cases: &[Case] = &[
        (
            Format::Cap,
            &[("category", "Geo"), ("event", "Tsunami Warning")],
            "natural.marine",
        ),
        (
            Format::Cap,
            &[("category", "Met"), ("event", "Typhoon Signal No. 8")],
            "natural.meteorological",
        ),
        (
            Format::Cap,
            &[("category", "Met"), ("event", "Blizzard Warning")],
            "natural.meteorological",
        ),
        (
            Format::Cap,
            &[("category", "Met"), ("event", "Monsoon")],
            "natural.meteorological",
        ),
        (
            Format::Cap,
            &[("category", "Met"), ("event", "暴雨橙色预警")],
            "natural.meteorological",
        ),
        (
            Format::Cap,
            &[("category", "Fire"), ("event", "Wildfire")],
            "natural.forest_fire",
        ),
        (
            Format::Cap,
            &[("category", "Fire"), ("event", "Structure Fire")],
            "accident.fire",
        ),
        (
            Format::Cap,
            &[("category", "CBRNE"), ("event", "Chemical release")],
            "accident.hazardous_chemicals",
        ),
        (
            Format::Cap,
            &[("category", "Health"), ("event", "Cholera outbreak")],
            "public_health.epidemic",
        ),
        (
            Format::Cap,
            &[("category", "Env"), ("event", "River pollution")],
            "accident.environmental_pollution",
        ),
        (
            Format::Cap,
            &[("category", "Transport"), ("event", "Train derailment")],
            "accident.rail",
        ),
        (
            Format::Cap,
            &[("category", "Transport"), ("event", "Aircraft accident")],
            "accident.aviation",
        ),
        (
            Format::Cap,
            &[("category", "Transport"), ("event", "Highway pile-up")],
            "accident.road_traffic",
        ),
        (
            Format::Cap,
            &[("category", "Infra"), ("event", "水庫洩洪")],
            "natural.flood",
        ),
        (
            Format::Cap,
            &[("category", "Infra"), ("event", "Power outage")],
            "accident.public_facilities",
        ),
        (
            Format::Cap,
            &[("category", "Security"), ("event", "Terror attack")],
            "social_safety.terrorism",
        ),
        (
            Format::Cap,
            &[("category", "Other"), ("event", "台风蓝色预警")],
            "natural.meteorological",
        ),
        (
            Format::Cap,
            &[("category", "Other"), ("event", "洪水")],
            "natural.flood",
        ),
        (
            Format::Cap,
            &[("category", "Other"), ("event", "森林火灾")],
            "natural.forest_fire",
        ),
        (
            Format::Cap,
            &[("category", "Other"), ("event", "居民楼火灾")],
            "accident.fire",
        ),
        (
            Format::Cap,
            &[("category", "Other"), ("event", "化工厂爆炸")],
            "accident.hazardous_chemicals",
        ),
        (
            Format::Alertmanager,
            &[("label.alertname", "SeismicPGAHigh")],
            "natural.earthquake",
        ),
        (
            Format::Alertmanager,
            &[("label.alertname", "RiverWaterLevelHigh")],
            "natural.flood",
        ),
        (
            Format::Alertmanager,
            &[("label.alertname", "FireAlarmZone3")],
            "accident.fire",
        ),
        (
            Format::Pagerduty,
            &[("class", "gas leak"), ("severity", "critical")],
            "accident.hazardous_chemicals",
        ),
        (
            Format::Pagerduty,
            &[("component", "seismometer-07")],
            "natural.earthquake",
        ),
        (
            Format::Pagerduty,
            &[("class", "firewall")],
            "unclassified.unmapped",
        ),
        (
            Format::Geojson,
            &[("type", "earthquake")],
            "natural.earthquake",
        ),
        (
            Format::Geojson,
            &[("type", "explosion")],
            "unclassified.unmapped",
        ),
        (
            Format::Cap,
            &[("category", "Geo"), ("event", "Volcano")],
            "unclassified.unmapped",
        ),
    ];
    let mapping = mapping();
    let region = region();
    for (format, fields, expected) in cases {
        let mapped = mapping.map(&alert(*format, fields), &region);
        assert_eq!(
            mapped.sub_type.code, *expected,
            "{fields:?}: {}",
            mapped.reason
        );
    }
}

#[test]
fn pagerduty_and_pager_warning_tables() {
    let pd = alert(
        Format::Pagerduty,
        &[("class", "smoke"), ("severity", "error")],
    );
    assert_eq!(
        mapping().map(&pd, &region()).warning,
        Some(WarningLevel::Orange)
    );
    let usgs = alert(Format::Geojson, &[("type", "earthquake"), ("alert", "RED")]);
    assert_eq!(
        mapping().map(&usgs, &region()).warning,
        Some(WarningLevel::Red)
    );
}

#[test]
fn correlation_windows_per_kind() {
    let mapping = mapping();
    let quake = mapping.correlation_for("natural.earthquake");
    assert_eq!((quake.distance_km, quake.window_ms), (100.0, 180 * 60_000));
    let gas = mapping.correlation_for("accident.hazardous_chemicals");
    assert_eq!((gas.distance_km, gas.window_ms), (5.0, 120 * 60_000));
    // A natural sub-type without its own entry uses the class wildcard.
    let drought = mapping.correlation_for("natural.drought");
    assert_eq!(
        (drought.distance_km, drought.window_ms),
        (50.0, 360 * 60_000)
    );
    // Everything else uses the default.
    let crime = mapping.correlation_for("social_safety.major_crime");
    assert_eq!((crime.distance_km, crime.window_ms), (20.0, 60 * 60_000));
    let bogus = mapping.correlation_for("nope");
    assert_eq!((bogus.distance_km, bogus.window_ms), (20.0, 60 * 60_000));

    // An empty file falls back to the built-in defaults.
    let empty = Mapping::from_toml("empty.toml", "").unwrap();
    let window = empty.correlation_for("natural.earthquake");
    assert_eq!((window.distance_km, window.window_ms), (20.0, 60 * 60_000));
    assert_eq!(empty.exercise_namespace(), "drill.feeds");
}
