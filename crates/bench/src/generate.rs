//! What the benchmark sends: officer reports with a mix of kinds over the sample region's
//! townships, and feed alerts (GeoJSON, Alertmanager, CAP) that are either spread out in time
//! (each its own incident) or bunched (correlated into a few incidents).

use anyhow::{Context, Result};
use muster_proto::v1 as pb;
use serde::Deserialize;

/// The sample region, embedded so the tool runs from anywhere.
const JURISDICTIONS: &str = include_str!("../../../data/region/jurisdictions.toml");

/// Spacing of uncorrelated alerts in time: wider than any correlation window the generated kinds
/// use (natural.earthquake 180 min, accident.fire 120 min in data/feeds/mapping.toml).
pub const SPREAD_MS: i64 = 4 * 60 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct Township {
    pub code: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Deserialize)]
struct File {
    jurisdiction: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    code: String,
    level: String,
    centroid: Option<Centroid>,
}

#[derive(Deserialize)]
struct Centroid {
    lat: f64,
    lon: f64,
}

pub fn townships() -> Result<Vec<Township>> {
    let file: File = toml::from_str(JURISDICTIONS).context("parse jurisdictions.toml")?;
    let townships: Vec<Township> = file
        .jurisdiction
        .into_iter()
        .filter(|j| j.level == "township")
        .filter_map(|j| {
            j.centroid.map(|c| Township {
                code: j.code,
                lat: c.lat,
                lon: c.lon,
            })
        })
        .collect();
    anyhow::ensure!(!townships.is_empty(), "no townships in the sample region");
    Ok(townships)
}

/// The sample region's four files with every unit present `copies` times: copy `c` (from 2) of
/// unit `X` is `X-cc`, call sign `<call sign> c`, at the same station, so a benchmark's roster
/// does not run out after a few incidents (T2 then measures real bookings, not the shortfall
/// path). Returns (file name, text) pairs for `muster up --region-dir`.
pub fn scaled_region(copies: u32) -> Result<Vec<(&'static str, String)>> {
    anyhow::ensure!(copies >= 1, "--copies must be at least 1");
    let sources = domain::region::Region::embedded_default_sources();
    let units_toml = sources
        .iter()
        .find(|source| source.name == "units.toml")
        .context("the embedded region has no units.toml")?
        .text;
    let mut blocks = units_toml.split("\n[[unit]]\n");
    let mut units = blocks.next().unwrap_or_default().to_string();
    let blocks: Vec<&str> = blocks.collect();
    anyhow::ensure!(!blocks.is_empty(), "no [[unit]] in the sample units.toml");
    for copy in 1..=copies {
        for block in &blocks {
            units.push_str("\n[[unit]]\n");
            for line in block.split_inclusive('\n') {
                let renamed = if copy == 1 {
                    None
                } else if let Some(id) = quoted_value(line, "id") {
                    Some(format!("id = \"{id}-c{copy}\"\n"))
                } else {
                    quoted_value(line, "call_sign")
                        .map(|sign| format!("call_sign = \"{sign} {copy}\"\n"))
                };
                match renamed {
                    Some(renamed) => units.push_str(&renamed),
                    // The sample's closing totals would be wrong here.
                    None if line.starts_with('#') => {}
                    None => units.push_str(line),
                }
            }
        }
    }
    units.push_str(&format!(
        "\n# muster-bench region: the sample's units, each {copies} times.\n"
    ));
    Ok(sources
        .iter()
        .map(|source| match source.name {
            "units.toml" => (source.name, units.clone()),
            _ => (source.name, source.text.to_string()),
        })
        .collect())
}

/// `value` of a line `key = "value"`.
fn quoted_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    rest.strip_prefix('"')?.strip_suffix('"')
}

/// Officer report number `i`: kinds and facts chosen so that every report is graded (at least
/// grade IV) and so reaches dispatch.
pub fn report(i: u64, run: &str, namespace: &str, towns: &[Township]) -> pb::ReportIncidentRequest {
    let town = &towns[(i as usize) % towns.len()];
    let mut facts = pb::Facts::default();
    let kind = match i % 5 {
        0 => {
            facts.deaths = Some(1 + (i % 3) as i64);
            "accident.fire"
        }
        1 => {
            facts.deaths = Some(1 + (i % 2) as i64);
            "accident.hazardous_chemicals"
        }
        2 => {
            facts.magnitude = Some(5.0 + (i % 5) as f64 * 0.1);
            "natural.earthquake"
        }
        3 => {
            facts.deaths = Some(3);
            "accident.road_traffic"
        }
        _ => {
            facts.deaths = Some(1);
            facts.people_affected = Some(5_000);
            "natural.flood"
        }
    };
    pb::ReportIncidentRequest {
        namespace: namespace.to_string(),
        kind: kind.to_string(),
        township_code: town.code.clone(),
        other_township_codes: Vec::new(),
        lat: None,
        lon: None,
        facts: Some(facts),
        summary: format!("muster-bench report {i}"),
        reported_by: "muster-bench".into(),
        request_id: format!("bench-{run}-r{i}"),
    }
}

pub fn update(i: u64, run: &str, namespace: &str, incident_id: &str) -> pb::UpdateIncidentRequest {
    pb::UpdateIncidentRequest {
        namespace: namespace.to_string(),
        incident_id: incident_id.to_string(),
        facts: Some(pb::Facts {
            serious_injuries: Some((i % 7) as i64),
            ..Default::default()
        }),
        summary: None,
        updated_by: "muster-bench".into(),
        request_id: format!("bench-{run}-u{i}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    Geojson,
    Alertmanager,
    Cap,
    /// Rotate through the three.
    Mix,
}

/// One alert to place: where and when.
#[derive(Debug, Clone, Copy)]
pub struct Spot {
    pub lat: f64,
    pub lon: f64,
    pub time_ms: i64,
}

/// A feed request: the path's format, content type and body.
pub struct FeedRequest {
    pub format: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// `alerts` alerts numbered from `first`, in one message of `format` (CAP carries one alert per
/// message: only the first is used).
pub fn feed_request(
    format: FeedFormat,
    first: u64,
    spots: &[Spot],
    run: &str,
    magnitude: f64,
) -> FeedRequest {
    match format {
        FeedFormat::Geojson | FeedFormat::Mix => {
            let features: Vec<serde_json::Value> = spots
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let id = format!("bench{run}q{}", first + k as u64);
                    serde_json::json!({
                        "type": "Feature",
                        "id": id,
                        "properties": {"mag": magnitude, "place": "muster-bench", "time": s.time_ms,
                            "updated": s.time_ms, "type": "earthquake", "status": "reviewed",
                            "title": format!("M {magnitude:.1} - muster-bench")},
                        "geometry": {"type": "Point", "coordinates": [s.lon, s.lat, 10.0]},
                    })
                })
                .collect();
            let body = serde_json::json!({"type": "FeatureCollection", "features": features});
            FeedRequest {
                format: "geojson",
                content_type: "application/geo+json",
                body: serde_json::to_vec(&body).expect("json"),
            }
        }
        FeedFormat::Alertmanager => {
            let alerts: Vec<serde_json::Value> = spots
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let n = first + k as u64;
                    serde_json::json!({
                        "status": "firing",
                        "labels": {"alertname": "BenchFire", "muster_kind": "accident.fire",
                            "severity": "critical", "instance": format!("bench-{run}-{n}"),
                            "latitude": format!("{:.4}", s.lat), "longitude": format!("{:.4}", s.lon),
                            "deaths": "1"},
                        "annotations": {"summary": format!("muster-bench fire {n}")},
                        "startsAt": rfc3339(s.time_ms),
                        "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": format!("bench{run}f{n}"),
                    })
                })
                .collect();
            let body = serde_json::json!({"receiver": "muster-bench", "status": "firing",
                "alerts": alerts, "version": "4", "groupKey": format!("bench-{run}-{first}")});
            FeedRequest {
                format: "alertmanager",
                content_type: "application/json",
                body: serde_json::to_vec(&body).expect("json"),
            }
        }
        FeedFormat::Cap => {
            let s = spots[0];
            let body = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>BENCH-{run}-{first}</identifier>
  <sender>muster-bench@example.invalid</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Geo</category>
    <event>Earthquake</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>M{magnitude:.1} earthquake (muster-bench)</headline>
    <parameter><valueName>magnitude</valueName><value>{magnitude:.1}</value></parameter>
    <area>
      <areaDesc>muster-bench</areaDesc>
      <circle>{lat:.4},{lon:.4} 5</circle>
    </area>
  </info>
</alert>
"#,
                sent = rfc3339(s.time_ms),
                lat = s.lat,
                lon = s.lon,
            );
            FeedRequest {
                format: "cap",
                content_type: "application/cap+xml",
                body: body.into_bytes(),
            }
        }
    }
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = domain::time::civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A small deterministic jitter in [-1, 1) from `i` (no RNG dependency).
pub fn jitter(i: u64, salt: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_720_160_891_230), "2024-07-05T06:28:11.230Z");
    }

    #[test]
    fn the_sample_region_has_townships() {
        assert_eq!(townships().unwrap().len(), 12);
    }

    #[test]
    fn a_scaled_region_loads_with_every_unit_copied_under_its_own_id_and_call_sign() {
        let load = |copies: u32| {
            let files = scaled_region(copies).unwrap();
            let text = |name: &str| {
                files
                    .iter()
                    .find(|(file, _)| *file == name)
                    .map(|(_, text)| text.as_str())
                    .unwrap()
            };
            let source = |name| domain::region::SourceFile {
                name,
                text: text(name),
            };
            domain::region::Region::from_sources(
                source("jurisdictions.toml"),
                source("units.toml"),
                source("plans.toml"),
                source("rulebook.toml"),
            )
            .unwrap()
        };
        let sample = load(1);
        assert_eq!(sample.units.len(), 49);
        let scaled = load(3);
        assert_eq!(scaled.units.len(), 3 * 49);
        let copy = scaled.units.iter().find(|u| u.id == "ST-ENG-2-c3").unwrap();
        let original = sample.units.iter().find(|u| u.id == "ST-ENG-2").unwrap();
        assert_eq!(copy.call_sign, "Shitang Engineering 2 3");
        assert_eq!(
            (&copy.unit_type, &copy.home_township, copy.position),
            (
                &original.unit_type,
                &original.home_township,
                original.position
            )
        );
        assert!(scaled_region(0).is_err());
    }
}
