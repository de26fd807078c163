//! PagerDuty Events API v2 bodies (`POST /v2/enqueue`), validated the way PagerDuty validates
//! them, as one [`Alert`]:
//!
//! | Alert          | from                                                                     |
//! |----------------|--------------------------------------------------------------------------|
//! | `identity`     | `dedup_key` (derived for a trigger without one, see below)               |
//! | `dedup_key`    | `dedup_key/event_action`, plus `/payload.timestamp` when there is one    |
//! | `action`       | `trigger` → [`Action::Raise`], `acknowledge` → [`Action::Acknowledge`], `resolve` → [`Action::Resolve`] |
//! | `status`       | always [`Status::Actual`]                                                 |
//! | `sender`       | `payload.source` (else `client`)                                         |
//! | `sent_unix_ms` | `payload.timestamp` (optional; RFC 3339, or with a `+0000`-style offset as in PagerDuty's examples) |
//! | `headline`     | `payload.summary` (for acknowledge/resolve without one: `"<action> <dedup_key>"`) |
//! | `language`     | `en`                                                                      |
//! | `severity`     | `None`: the `severity` field is left to the mapping file                 |
//!
//! Rules: `routing_key` is required and non-empty (PagerDuty's integration keys are 32
//! characters, but any non-empty key is accepted here, since the key routes nothing in Muster);
//! `event_action` is required and one of `trigger`, `acknowledge`, `resolve`; a trigger needs
//! `payload.summary` (at most 1024 characters), `payload.source` and `payload.severity` (one of
//! `critical`, `error`, `warning`, `info`); acknowledge and resolve need `dedup_key`.
//!
//! **A trigger without `dedup_key`**: PagerDuty would generate a random key and return it to the
//! sender; Muster cannot answer with one, so it derives a deterministic key instead: the FNV-1a
//! 64-bit hash, as 16 lower-case hex digits, of `routing_key`, `payload.summary`,
//! `payload.source` and `payload.timestamp`. An identical resend therefore deduplicates, but no
//! later acknowledge or resolve can name the alert (the sender never learnt the key).
//!
//! Fields, in this order: `severity`, `class`, `component`, `group`, `source` (those present),
//! then `custom.<key>` for every scalar in `payload.custom_details` (strings as they are, numbers
//! and booleans as text; nested objects flattened with dots, `custom.a.b.c`, at most three keys
//! deep; arrays and nulls skipped), sorted by key. A `custom_details` that is itself a scalar
//! (PagerDuty allows a string) becomes the field `custom`.
//!
//! Location: `custom_details` `latitude`/`longitude` or `lat`/`lon` (numbers or numeric text,
//! range-checked) give a point; `township` and `region_code` give `("GB2260", value)` geocodes;
//! `location` gives the description.

use crate::json::{datetime, decode, find_point, fnv1a64, scalar_text};
use crate::{Action, Alert, Area, Format, Limits, RejectCode, Rejection, Status};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    routing_key: Option<String>,
    event_action: Option<String>,
    dedup_key: Option<String>,
    payload: Option<Payload>,
    client: Option<String>,
    #[allow(dead_code)]
    client_url: Option<String>,
    #[allow(dead_code)]
    links: Option<Vec<Value>>,
    #[allow(dead_code)]
    images: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    summary: Option<String>,
    source: Option<String>,
    severity: Option<String>,
    timestamp: Option<String>,
    component: Option<String>,
    group: Option<String>,
    class: Option<String>,
    custom_details: Option<Value>,
}

/// Longest `payload.summary` PagerDuty accepts, in characters.
pub const SUMMARY_MAX_CHARS: usize = 1024;

/// The severities PagerDuty accepts.
pub const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// How many keys deep nested `custom_details` objects are flattened into fields.
const CUSTOM_DEPTH_MAX: usize = 3;

/// Parses one Events API v2 body (see the module documentation).
pub fn parse(body: &[u8], limits: &Limits) -> Result<Alert, Rejection> {
    let event: Event = decode(body, limits)?;
    let missing =
        |path: &str| Rejection::new(RejectCode::MissingElement, format!("{path}: missing"));
    let routing_key =
        non_empty(event.routing_key.as_deref()).ok_or_else(|| missing("routing_key"))?;
    let event_action = non_empty(event.event_action.as_deref())
        .ok_or_else(|| missing("event_action"))?
        .trim();
    let action = match event_action {
        "trigger" => Action::Raise,
        "acknowledge" => Action::Acknowledge,
        "resolve" => Action::Resolve,
        other => {
            return Err(Rejection::new(
                RejectCode::InvalidValue,
                format!("event_action: {other:?} is not trigger, acknowledge or resolve"),
            ));
        }
    };
    let empty = Payload::default();
    let payload = event.payload.as_ref().unwrap_or(&empty);
    let summary = non_empty(payload.summary.as_deref());
    let source = non_empty(payload.source.as_deref());
    let severity = non_empty(payload.severity.as_deref());
    let timestamp = non_empty(payload.timestamp.as_deref()).map(str::trim);

    if action == Action::Raise {
        if event.payload.is_none() {
            return Err(missing("payload"));
        }
        let summary = summary.ok_or_else(|| missing("payload.summary"))?;
        let length = summary.chars().count();
        if length > SUMMARY_MAX_CHARS {
            return Err(Rejection::new(
                RejectCode::InvalidValue,
                format!("payload.summary: {length} characters; the limit is {SUMMARY_MAX_CHARS}"),
            ));
        }
        source.ok_or_else(|| missing("payload.source"))?;
        let severity = severity.ok_or_else(|| missing("payload.severity"))?;
        if !SEVERITIES.contains(&severity) {
            return Err(Rejection::new(
                RejectCode::InvalidValue,
                format!("payload.severity: {severity:?} is not critical, error, warning or info"),
            ));
        }
    }
    let sent_unix_ms = timestamp
        .map(|timestamp| {
            datetime(timestamp).map_err(|reason| {
                Rejection::new(
                    RejectCode::InvalidValue,
                    format!("payload.timestamp: {reason}"),
                )
            })
        })
        .transpose()?;

    let dedup_key = match non_empty(event.dedup_key.as_deref()) {
        Some(key) => key.trim().to_string(),
        None if action == Action::Raise => format!(
            "{:016x}",
            fnv1a64(&[
                routing_key,
                summary.unwrap_or_default(),
                source.unwrap_or_default(),
                timestamp.unwrap_or_default(),
            ])
        ),
        None => return Err(missing("dedup_key")),
    };

    let mut fields = Vec::new();
    for (name, value) in [
        ("severity", &payload.severity),
        ("class", &payload.class),
        ("component", &payload.component),
        ("group", &payload.group),
        ("source", &payload.source),
    ] {
        if let Some(value) = non_empty(value.as_deref()) {
            fields.push((name.to_string(), value.to_string()));
        }
    }
    let mut area = Area::default();
    match &payload.custom_details {
        Some(Value::Object(details)) => {
            let mut custom = Vec::new();
            flatten(details, "custom", 1, &mut custom);
            custom.sort_by(|a, b| a.0.cmp(&b.0));
            fields.extend(custom);
            locate(details, &mut area)?;
        }
        Some(other) => {
            if let Some(text) = scalar_text(other) {
                fields.push(("custom".to_string(), text));
            }
        }
        None => {}
    }

    let headline = match summary {
        Some(summary) => summary.trim().to_string(),
        None => format!("{event_action} {dedup_key}"),
    };
    let mut alert_dedup_key = format!("{dedup_key}/{event_action}");
    if let Some(timestamp) = timestamp {
        alert_dedup_key.push('/');
        alert_dedup_key.push_str(timestamp);
    }
    let sender = source
        .or(non_empty(event.client.as_deref()))
        .unwrap_or_default()
        .trim()
        .to_string();

    Ok(Alert {
        format: Format::Pagerduty,
        identity: dedup_key,
        dedup_key: alert_dedup_key,
        action,
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

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.trim().is_empty())
}

/// Appends `prefix.key` fields for the scalars of `object`, descending into nested objects
/// while `depth` ≤ [`CUSTOM_DEPTH_MAX`].
fn flatten(
    object: &Map<String, Value>,
    prefix: &str,
    depth: usize,
    fields: &mut Vec<(String, String)>,
) {
    for (key, value) in object {
        let name = format!("{prefix}.{key}");
        match value {
            Value::Object(inner) if depth < CUSTOM_DEPTH_MAX => {
                flatten(inner, &name, depth + 1, fields)
            }
            _ => {
                if let Some(text) = scalar_text(value) {
                    fields.push((name, text));
                }
            }
        }
    }
}

fn locate(details: &Map<String, Value>, area: &mut Area) -> Result<(), Rejection> {
    let point = find_point(
        |name| details.get(name).cloned(),
        |name| format!("payload.custom_details.{name}"),
    )?;
    area.points.extend(point);
    for name in ["township", "region_code"] {
        if let Some(code) = details.get(name).and_then(scalar_text) {
            let code = code.trim().to_string();
            if !code.is_empty() && !area.geocodes.iter().any(|(_, v)| *v == code) {
                area.geocodes.push(("GB2260".to_string(), code));
            }
        }
    }
    if let Some(location) = details.get("location").and_then(scalar_text) {
        area.description = location.trim().to_string();
    }
    Ok(())
}
