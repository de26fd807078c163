//! The feed messages a drill sends: CAP 1.2 (always status Exercise), GeoJSON quake features and
//! Alertmanager webhooks, built from a scenario's injects.

use serde_json::json;

use super::scenario::{AlertmanagerInject, CapInject, GeojsonInject};
use crate::time::civil_from_days;

pub const CAP_SENDER: &str = "drill@musterctl";

/// `2026-11-28T12:00:00+00:00`: CAP 1.2 wants an explicit offset and no fraction.
pub fn cap_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A CAP 1.2 alert with status Exercise: a drill's CAP never claims to be real.
/// `references` are earlier `sender,identifier,sent` triples (for Update and Cancel).
pub fn cap_xml(cap: &CapInject, identifier: &str, sent: &str, references: &[String]) -> String {
    let references = if references.is_empty() || cap.msg_type == "Alert" {
        String::new()
    } else {
        format!("\n  <references>{}</references>", references.join(" "))
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{CAP_SENDER}</sender>
  <sent>{sent}</sent>
  <status>Exercise</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{references}
  <note>Drill message (演练). Not a real emergency.</note>
  <info>
    <language>zh-CN</language>
    <category>{category}</category>
    <event>{event}</event>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Observed</certainty>
    <headline>{headline}</headline>
    <area>
      <areaDesc>drill area</areaDesc>
      <circle>{lat},{lon} {radius}</circle>
    </area>
  </info>
</alert>
"#,
        msg_type = cap.msg_type,
        category = xml_escape(&cap.category),
        event = xml_escape(&cap.event),
        severity = cap.severity,
        headline = xml_escape(&cap.headline),
        lat = cap.lat,
        lon = cap.lon,
        radius = cap.radius_km,
    )
}

/// Features `first..first+n` of a GeoJSON surge: distinct ids, slightly spread positions.
pub fn geojson_batch(
    g: &GeojsonInject,
    id_prefix: &str,
    first: u32,
    n: u32,
    now_ms: i64,
) -> Vec<u8> {
    let features: Vec<_> = (first..first + n)
        .map(|i| {
            // Spread within ~2 km so they correlate as one quake.
            let dlat = f64::from(i % 40) * 0.0005 - 0.01;
            let dlon = f64::from(i / 40 % 40) * 0.0005 - 0.01;
            json!({
                "type": "Feature",
                "id": format!("{id_prefix}-{i}"),
                "properties": {
                    "mag": g.magnitude,
                    "place": g.place.clone().unwrap_or_else(|| "drill epicentre".into()),
                    "time": now_ms,
                    "type": "earthquake",
                    "status": "automatic",
                    "net": "drill",
                    "title": format!("M {:.1} - drill (演练)", g.magnitude),
                },
                "geometry": {"type": "Point", "coordinates": [g.lon + dlon, g.lat + dlat, 10.0]},
            })
        })
        .collect();
    serde_json::to_vec(&json!({"type": "FeatureCollection", "features": features}))
        .expect("JSON of plain values")
}

/// An Alertmanager (version 4) webhook with `count` alerts.
pub fn alertmanager_body(a: &AlertmanagerInject, id_prefix: &str, now: &str) -> Vec<u8> {
    let alerts: Vec<_> = (0..a.count)
        .map(|i| {
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), a.alertname.clone().into());
            labels.insert("severity".into(), a.severity.clone().into());
            labels.insert("drill".into(), "true".into());
            for (k, v) in &a.labels {
                labels.insert(k.clone(), v.clone().into());
            }
            json!({
                "status": a.status,
                "labels": labels,
                "annotations": {"summary": format!("{} (drill)", a.alertname)},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": format!("{id_prefix}-{i}"),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "version": "4",
        "receiver": "drill",
        "status": a.status,
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", a.alertname),
        "groupLabels": {"alertname": a.alertname},
        "commonLabels": {"alertname": a.alertname},
        "commonAnnotations": {},
        "alerts": alerts,
    }))
    .expect("JSON of plain values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(msg_type: &str) -> CapInject {
        CapInject {
            msg_type: msg_type.into(),
            category: "Met".into(),
            event: "Flood warning".into(),
            severity: "Severe".into(),
            headline: "River <rising> & more".into(),
            lat: 29.9,
            lon: 119.3,
            radius_km: 5.0,
        }
    }

    #[test]
    fn a_drill_cap_message_is_an_exercise_and_parses() {
        let refs = vec![format!("{CAP_SENDER},d-1,{}", cap_time(0))];
        let xml = cap_xml(&cap("Update"), "d-2", &cap_time(1_700_000_000_000), &refs);
        assert!(xml.contains("<status>Exercise</status>"));
        assert!(xml.contains("&lt;rising&gt; &amp; more"));
        assert!(
            xml.contains("<references>drill@musterctl,d-1,1970-01-01T00:00:00+00:00</references>")
        );
        assert_eq!(cap_time(1_700_000_000_123), "2023-11-14T22:13:20+00:00");
        let alert = cap_xml(&cap("Alert"), "d-1", &cap_time(0), &refs);
        assert!(!alert.contains("<references>"));
    }

    #[test]
    fn a_surge_has_distinct_ids() {
        let g = GeojsonInject {
            count: 5000,
            magnitude: 6.5,
            lat: 29.78,
            lon: 119.3,
            batch: 1000,
            place: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&geojson_batch(&g, "x", 10, 3, 5)).unwrap();
        let ids: Vec<_> = body["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["x-10", "x-11", "x-12"]);
        assert_eq!(body["features"][0]["properties"]["mag"], 6.5);
    }
}
