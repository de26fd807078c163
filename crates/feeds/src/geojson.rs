//! Earthquake GeoJSON in the shape of the USGS real-time feeds
//! (`earthquake.usgs.gov/earthquakes/feed/v1.0/summary/*.geojson`): a `FeatureCollection`, or a
//! single `Feature` (the USGS `detail` document). Every feature becomes one [`Alert`]:
//!
//! | Alert          | from                                                                     |
//! |----------------|--------------------------------------------------------------------------|
//! | `identity`, `dedup_key` | the feature `id` (required; a string or a number)               |
//! | `action`       | always [`Action::Raise`]                                                  |
//! | `status`       | always [`Status::Actual`]                                                 |
//! | `sender`       | `properties.net`, else `metadata.url`                                    |
//! | `sent_unix_ms` | `properties.time` (milliseconds since the epoch)                          |
//! | `headline`     | `properties.title`, else `M{mag} - {place}`                               |
//! | `language`     | `en`                                                                      |
//! | `severity`     | `None`: magnitude and the PAGER `alert` colour are fields for the mapping |
//! | `area`         | the epicentre from a `Point` geometry (GeoJSON order is `[lon, lat, depth]`), `place` as description |
//!
//! Fields, in this order and only when present (not `null`): `mag`, `mag_type`, `place`, `type`,
//! `alert`, `status`, `tsunami`, `depth_km`, `felt`, `net`, `sig`. Numbers are written as
//! serde_json writes them (`4.5`, `0`).
//!
//! A feature whose geometry is `null` or not a `Point` is kept with an empty area (location
//! unknown). A `Point` whose coordinates are not numbers or are out of range is rejected, as is a
//! `mag` that is not a number and a `time` that is not an integer. More features than
//! [`Limits::alerts_max`] is [`RejectCode::TooManyElements`]. Reasons name the path, e.g.
//! `features[0].geometry.coordinates: latitude 95 is outside [-90, 90]`.

use crate::json::{decode, point, scalar_text};
use crate::{Action, Alert, Area, Format, Limits, RejectCode, Rejection, Status};
use serde::Deserialize;
use serde_json::Value;

/// A FeatureCollection or a Feature: the fields of both, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Document {
    #[serde(rename = "type")]
    kind: Option<String>,
    metadata: Option<Metadata>,
    features: Option<Vec<Feature>>,
    // A single Feature's own fields.
    id: Option<Value>,
    properties: Option<Properties>,
    geometry: Option<Geometry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Feature {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<Value>,
    properties: Option<Properties>,
    geometry: Option<Geometry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Properties {
    mag: Option<Value>,
    place: Option<String>,
    time: Option<Value>,
    felt: Option<Value>,
    alert: Option<String>,
    status: Option<String>,
    tsunami: Option<Value>,
    sig: Option<Value>,
    net: Option<String>,
    #[serde(rename = "magType")]
    mag_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Geometry {
    #[serde(rename = "type")]
    kind: Option<String>,
    coordinates: Option<Value>,
}

/// Parses a FeatureCollection (or one Feature) into one alert per feature (see the module
/// documentation).
pub fn parse(body: &[u8], limits: &Limits) -> Result<Vec<Alert>, Rejection> {
    let document: Document = decode(body, limits)?;
    let metadata_url = document
        .metadata
        .as_ref()
        .and_then(|metadata| non_empty(metadata.url.as_deref()));
    match document.kind.as_deref() {
        Some("FeatureCollection") => {
            let features = document
                .features
                .as_ref()
                .ok_or_else(|| Rejection::new(RejectCode::MissingElement, "features: missing"))?;
            if features.len() > limits.alerts_max {
                return Err(Rejection::new(
                    RejectCode::TooManyElements,
                    format!(
                        "features: {} features; the limit is {}",
                        features.len(),
                        limits.alerts_max
                    ),
                ));
            }
            features
                .iter()
                .enumerate()
                .map(|(index, feature)| {
                    convert(&format!("features[{index}]."), feature, metadata_url)
                })
                .collect()
        }
        Some("Feature") => {
            let feature = Feature {
                kind: document.kind,
                id: document.id,
                properties: document.properties,
                geometry: document.geometry,
            };
            convert("", &feature, metadata_url).map(|alert| vec![alert])
        }
        Some(other) => Err(Rejection::new(
            RejectCode::Unsupported,
            format!("type: {other:?} is not a FeatureCollection or a Feature"),
        )),
        None => Err(Rejection::new(
            RejectCode::MissingElement,
            "type: missing (expected \"FeatureCollection\" or \"Feature\")",
        )),
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.trim().is_empty())
}

/// `path` is the prefix of the feature's fields in rejections: `features[3].`, or empty for a
/// body that is a single Feature.
fn convert(path: &str, feature: &Feature, metadata_url: Option<&str>) -> Result<Alert, Rejection> {
    let invalid = |name: &str, reason: String| {
        Rejection::new(RejectCode::InvalidValue, format!("{path}{name}: {reason}"))
    };
    match feature.kind.as_deref() {
        Some("Feature") => {}
        Some(other) => return Err(invalid("type", format!("{other:?} is not \"Feature\""))),
        None => {
            return Err(Rejection::new(
                RejectCode::MissingElement,
                format!("{path}type: missing"),
            ));
        }
    }
    let id = match &feature.id {
        Some(Value::String(text)) if !text.trim().is_empty() => text.trim().to_string(),
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(Rejection::new(
                RejectCode::MissingElement,
                format!("{path}id: missing"),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "id",
                format!("{other} is not a string or a number"),
            ));
        }
    };
    let empty = Properties::default();
    let properties = feature.properties.as_ref().unwrap_or(&empty);

    let mag = match &properties.mag {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) if number.as_f64().is_some_and(f64::is_finite) => {
            Some(number.to_string())
        }
        Some(other) => {
            return Err(invalid(
                "properties.mag",
                format!("{other} is not a finite number"),
            ));
        }
    };
    let sent_unix_ms = match &properties.time {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => match number.as_i64() {
            Some(ms) => Some(ms),
            None => {
                return Err(invalid(
                    "properties.time",
                    format!("{number} is not whole milliseconds since the epoch"),
                ));
            }
        },
        Some(other) => {
            return Err(invalid(
                "properties.time",
                format!("{other} is not milliseconds since the epoch"),
            ));
        }
    };
    let place = non_empty(properties.place.as_deref()).map(str::trim);

    let mut area = Area::default();
    let mut depth_km = None;
    if let Some(geometry) = &feature.geometry
        && geometry.kind.as_deref() == Some("Point")
    {
        let coordinates_path = "geometry.coordinates";
        let shape = || {
            invalid(
                coordinates_path,
                "expected [longitude, latitude] or [longitude, latitude, depth]".to_string(),
            )
        };
        let Some(Value::Array(coordinates)) = &geometry.coordinates else {
            return Err(shape());
        };
        if !(2..=3).contains(&coordinates.len()) {
            return Err(shape());
        }
        let number = |value: &Value| value.as_f64().filter(|n| n.is_finite());
        let (Some(lon), Some(lat)) = (number(&coordinates[0]), number(&coordinates[1])) else {
            return Err(shape());
        };
        let epicentre = point(lat, lon).map_err(|reason| invalid(coordinates_path, reason))?;
        area.points.push(epicentre);
        if let Some(depth) = coordinates.get(2) {
            if number(depth).is_none() {
                return Err(shape());
            }
            depth_km = scalar_text(depth);
        }
    }
    if let Some(place) = place {
        area.description = place.to_string();
    }

    let headline = match non_empty(properties.title.as_deref()) {
        Some(title) => title.trim().to_string(),
        None => format!(
            "M{} - {}",
            mag.as_deref().unwrap_or("?"),
            place.unwrap_or("unknown place")
        ),
    };
    let sender = non_empty(properties.net.as_deref())
        .or(metadata_url)
        .unwrap_or_default()
        .trim()
        .to_string();

    let text = |value: &Option<String>| non_empty(value.as_deref()).map(|v| v.trim().to_string());
    let loose = |value: &Option<Value>| value.as_ref().and_then(scalar_text);
    let mut fields = Vec::new();
    for (name, value) in [
        ("mag", mag),
        ("mag_type", text(&properties.mag_type)),
        ("place", place.map(str::to_string)),
        ("type", text(&properties.kind)),
        ("alert", text(&properties.alert)),
        ("status", text(&properties.status)),
        ("tsunami", loose(&properties.tsunami)),
        ("depth_km", depth_km),
        ("felt", loose(&properties.felt)),
        ("net", text(&properties.net)),
        ("sig", loose(&properties.sig)),
    ] {
        if let Some(value) = value {
            fields.push((name.to_string(), value));
        }
    }

    Ok(Alert {
        format: Format::Geojson,
        identity: id.clone(),
        dedup_key: id,
        action: Action::Raise,
        status: Status::Actual,
        references: Vec::new(),
        sender,
        sent_unix_ms,
        headline,
        language: "en".to_string(),
        severity: None,
        fields,
        area,
    })
}
