//! Prometheus Alertmanager webhook payloads (`webhook_config`, payload version `"4"`).
//!
//! One webhook carries a notification group; every entry of `alerts` becomes one [`Alert`]:
//!
//! | Alert          | from                                                                     |
//! |----------------|--------------------------------------------------------------------------|
//! | `identity`     | `fingerprint` (required, non-empty)                                       |
//! | `dedup_key`    | `fingerprint/status/startsAt`: a `repeat_interval` resend of a firing alert is a duplicate, its resolve is not |
//! | `action`       | `firing` → [`Action::Raise`], `resolved` → [`Action::Resolve`]           |
//! | `status`       | always [`Status::Actual`]                                                 |
//! | `sender`       | `receiver`, else `externalURL`                                           |
//! | `sent_unix_ms` | `startsAt` (required; RFC 3339)                                           |
//! | `headline`     | annotation `summary`, else annotation `description`, else label `alertname`, else the fingerprint |
//! | `language`     | `en`                                                                      |
//! | `severity`     | `None`: the `label.severity` field is left to the mapping file           |
//!
//! `endsAt` is checked when present; Alertmanager's `0001-01-01T00:00:00Z` ("not set") is
//! accepted.
//!
//! Fields, in this order: `label.<name>` for every label (sorted by name), `annotation.<name>` for
//! every annotation (sorted by name), then `status`, `receiver`, `group_key`. Label and annotation
//! names are kept as Alertmanager spells them.
//!
//! Location: labels (then annotations) `latitude`/`longitude` or `lat`/`lon` give a point (a
//! number as text, range-checked); labels `township`, `geocode` and `region_code` give
//! `("GB2260", value)` geocodes; annotation `area` (else `location`) gives the description.
//!
//! Rejections: `version` other than `"4"` is [`RejectCode::Unsupported`]; more entries in `alerts`
//! than [`Limits::alerts_max`] is [`RejectCode::TooManyElements`]; a missing `fingerprint`,
//! `status` or `startsAt` is [`RejectCode::MissingElement`]; an unknown `status`, a bad date or
//! coordinate is [`RejectCode::InvalidValue`]. Each reason names the path, e.g.
//! `alerts[2].fingerprint: missing`. A webhook with no alerts parses to no alerts.

use crate::json::{decode, find_point};
use crate::{Action, Alert, Area, Format, Limits, RejectCode, Rejection, Status, parse_datetime};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The webhook body. Unknown fields are ignored; absent ones take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Webhook {
    /// A string in every version seen so far; kept loose so that `4` (a number) gets an
    /// `Unsupported` naming it rather than a type error.
    version: Option<Value>,
    group_key: Option<String>,
    #[allow(dead_code)]
    truncated_alerts: Option<u64>,
    #[allow(dead_code)]
    status: Option<String>,
    receiver: Option<String>,
    #[allow(dead_code)]
    group_labels: BTreeMap<String, String>,
    #[allow(dead_code)]
    common_labels: BTreeMap<String, String>,
    #[allow(dead_code)]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: Option<String>,
    alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WebhookAlert {
    status: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    #[allow(dead_code)]
    generator_url: Option<String>,
    fingerprint: Option<String>,
}

/// The only payload version this parser speaks.
pub const VERSION: &str = "4";

/// Labels whose value is a GB/T 2260 township or region code.
const GEOCODE_LABELS: [&str; 3] = ["township", "geocode", "region_code"];

/// Parses one Alertmanager webhook body into one alert per entry of `alerts` (see the module
/// documentation).
pub fn parse(body: &[u8], limits: &Limits) -> Result<Vec<Alert>, Rejection> {
    let webhook: Webhook = decode(body, limits)?;
    match &webhook.version {
        Some(Value::String(version)) if version == VERSION => {}
        Some(Value::String(version)) => {
            return Err(Rejection::new(
                RejectCode::Unsupported,
                format!("version: webhook version {version:?} is not supported (only \"4\")"),
            ));
        }
        Some(Value::Null) | None => {
            return Err(Rejection::new(
                RejectCode::MissingElement,
                "version: missing (expected \"4\")",
            ));
        }
        Some(other) => {
            return Err(Rejection::new(
                RejectCode::Unsupported,
                format!("version: webhook version {other} is not supported (only \"4\")"),
            ));
        }
    }
    if webhook.alerts.len() > limits.alerts_max {
        return Err(Rejection::new(
            RejectCode::TooManyElements,
            format!(
                "alerts: {} alerts; the limit is {}",
                webhook.alerts.len(),
                limits.alerts_max
            ),
        ));
    }
    let receiver = non_empty(webhook.receiver.as_deref());
    let external_url = non_empty(webhook.external_url.as_deref());
    let sender = receiver.or(external_url).unwrap_or_default().to_string();
    webhook
        .alerts
        .iter()
        .enumerate()
        .map(|(index, alert)| {
            convert(
                index,
                alert,
                &sender,
                receiver.unwrap_or_default(),
                webhook.group_key.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.trim().is_empty())
}

fn convert(
    index: usize,
    alert: &WebhookAlert,
    sender: &str,
    receiver: &str,
    group_key: &str,
) -> Result<Alert, Rejection> {
    let path = |name: &str| format!("alerts[{index}].{name}");
    let missing = |name: &str| {
        Rejection::new(
            RejectCode::MissingElement,
            format!("{}: missing", path(name)),
        )
    };
    let fingerprint = non_empty(alert.fingerprint.as_deref())
        .ok_or_else(|| missing("fingerprint"))?
        .trim();
    let status = non_empty(alert.status.as_deref())
        .ok_or_else(|| missing("status"))?
        .trim();
    let action = match status {
        "firing" => Action::Raise,
        "resolved" => Action::Resolve,
        other => {
            return Err(Rejection::new(
                RejectCode::InvalidValue,
                format!("{}: {other:?} is not firing or resolved", path("status")),
            ));
        }
    };
    let starts_at = non_empty(alert.starts_at.as_deref())
        .ok_or_else(|| missing("startsAt"))?
        .trim();
    let sent_unix_ms = parse_datetime(starts_at).map_err(|reason| {
        Rejection::new(
            RejectCode::InvalidValue,
            format!("{}: {reason}", path("startsAt")),
        )
    })?;
    if let Some(ends_at) = non_empty(alert.ends_at.as_deref()) {
        // "0001-01-01T00:00:00Z" (Go's zero time, "not set") parses like any other date.
        parse_datetime(ends_at).map_err(|reason| {
            Rejection::new(
                RejectCode::InvalidValue,
                format!("{}: {reason}", path("endsAt")),
            )
        })?;
    }

    let headline = [
        alert.annotations.get("summary"),
        alert.annotations.get("description"),
        alert.labels.get("alertname"),
    ]
    .into_iter()
    .flatten()
    .map(|text| text.trim())
    .find(|text| !text.is_empty())
    .unwrap_or(fingerprint)
    .to_string();

    let mut area = Area::default();
    let from_labels = find_point(
        |name| alert.labels.get(name).map(|v| Value::String(v.clone())),
        |name| path(&format!("labels.{name}")),
    )?;
    let point = match from_labels {
        Some(point) => Some(point),
        None => find_point(
            |name| {
                alert
                    .annotations
                    .get(name)
                    .map(|v| Value::String(v.clone()))
            },
            |name| path(&format!("annotations.{name}")),
        )?,
    };
    area.points.extend(point);
    for name in GEOCODE_LABELS {
        if let Some(code) = non_empty(alert.labels.get(name).map(String::as_str)) {
            let geocode = ("GB2260".to_string(), code.trim().to_string());
            if !area.geocodes.contains(&geocode) {
                area.geocodes.push(geocode);
            }
        }
    }
    if let Some(description) = ["area", "location"]
        .into_iter()
        .find_map(|name| non_empty(alert.annotations.get(name).map(String::as_str)))
    {
        area.description = description.trim().to_string();
    }

    let mut fields = Vec::with_capacity(alert.labels.len() + alert.annotations.len() + 3);
    for (name, value) in &alert.labels {
        fields.push((format!("label.{name}"), value.clone()));
    }
    for (name, value) in &alert.annotations {
        fields.push((format!("annotation.{name}"), value.clone()));
    }
    fields.push(("status".to_string(), status.to_string()));
    fields.push(("receiver".to_string(), receiver.to_string()));
    fields.push(("group_key".to_string(), group_key.to_string()));

    Ok(Alert {
        format: Format::Alertmanager,
        identity: fingerprint.to_string(),
        dedup_key: format!("{fingerprint}/{status}/{starts_at}"),
        action,
        status: Status::Actual,
        references: Vec::new(),
        sender: sender.to_string(),
        sent_unix_ms: Some(sent_unix_ms),
        headline,
        language: "en".to_string(),
        severity: None,
        fields,
        area,
    })
}
