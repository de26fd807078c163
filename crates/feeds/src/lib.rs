//! Monitoring feeds, sans-IO: parsers for the formats monitoring systems already send, and the
//! mapping of what they say onto Muster's domain (class, sub-type, facts, warning level, township).
//!
//! Every parser turns one request body into zero or more [`Alert`]s (a GeoJSON FeatureCollection or
//! an Alertmanager webhook carries many) or one [`Rejection`] with a reason a human can act on.
//! Parsers never allocate in proportion to hostile input before they have checked it against
//! [`Limits`]: a body that is too large, too deep or has too many elements is rejected early.
//!
//! Nothing here does I/O or reads the clock; intake owns storage, dedup and correlation.

pub mod alertmanager;
pub mod cap;
pub mod geojson;
mod json;
pub mod locate;
pub mod mapping;
pub mod pagerduty;

use domain::geo::GeoPoint;
use serde::{Deserialize, Serialize};

/// The feed formats intake speaks. The lower-case name is the HTTP path segment
/// (`/v1/feeds/<name>`) and the NATS subject token (`muster.feed.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Cap,
    Alertmanager,
    Pagerduty,
    Geojson,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Cap,
        Format::Alertmanager,
        Format::Pagerduty,
        Format::Geojson,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Cap => "cap",
            Format::Alertmanager => "alertmanager",
            Format::Pagerduty => "pagerduty",
            Format::Geojson => "geojson",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// What an alert asks of Muster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Something happened: CAP `Alert`, Alertmanager `firing`, PagerDuty `trigger`, a GeoJSON
    /// feature.
    Raise,
    /// New information about the alerts named in [`Alert::references`] (CAP `Update`).
    Update,
    /// The alerts named in [`Alert::references`] are withdrawn (CAP `Cancel`).
    Cancel,
    /// The condition is over: Alertmanager `resolved`, PagerDuty `resolve`. Closes the alert
    /// (the one with the same [`Alert::identity`]), not the incident.
    Resolve,
    /// Someone at the source acknowledged it (PagerDuty `acknowledge`): recorded, nothing else.
    Acknowledge,
    /// CAP `Ack` / `Error` messages: acknowledged, recorded, create nothing.
    Receipt,
}

/// CAP `status`; every other format is `Actual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Real: creates and updates incidents.
    Actual,
    /// A drill: goes to the drill namespace.
    Exercise,
    /// Acknowledged, creates no incident.
    System,
    /// Acknowledged, creates no incident.
    Test,
    /// Acknowledged, creates no incident.
    Draft,
}

/// CAP `severity` (also the target of Alertmanager / PagerDuty severities in the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Extreme,
    Severe,
    Moderate,
    Minor,
    Unknown,
}

impl Severity {
    /// The warning colour this severity stands for (red↔Extreme … blue↔Minor).
    pub fn warning_level(&self) -> Option<domain::grade::WarningLevel> {
        use domain::grade::WarningLevel;
        match self {
            Severity::Extreme => Some(WarningLevel::Red),
            Severity::Severe => Some(WarningLevel::Orange),
            Severity::Moderate => Some(WarningLevel::Yellow),
            Severity::Minor => Some(WarningLevel::Blue),
            Severity::Unknown => None,
        }
    }
}

/// A circle: centre and radius in kilometres (CAP `lat,lon radius`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Circle {
    pub center: GeoPoint,
    pub radius_km: f64,
}

/// Where an alert says it applies. All parts are optional and may be combined; an alert with
/// none of them has an unknown location.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Area {
    /// Free text (`areaDesc`, a GeoJSON `place`).
    pub description: String,
    /// Exact positions (a GeoJSON epicentre; a label giving lat/lon).
    pub points: Vec<GeoPoint>,
    /// Closed rings (first point = last point after parsing; at least 4 points).
    pub polygons: Vec<Vec<GeoPoint>>,
    pub circles: Vec<Circle>,
    /// `(valueName, value)` pairs such as `("GB2260", "390202")` or `("SAME", "006109")`.
    pub geocodes: Vec<(String, String)>,
}

impl Area {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
            && self.polygons.is_empty()
            && self.circles.is_empty()
            && self.geocodes.is_empty()
    }
}

/// One alert, in the feed-neutral shape intake works with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub format: Format,
    /// What names this alert at its source, so that later messages can refer to it:
    /// CAP `sender,identifier,sent`; Alertmanager fingerprint; PagerDuty `dedup_key`; GeoJSON
    /// feature id. Never empty.
    pub identity: String,
    /// The exact-dedup key: a second message with the same key is the same message (CAP
    /// `sender,identifier,sent`; Alertmanager `fingerprint` + status + startsAt/endsAt;
    /// PagerDuty `dedup_key` + action; GeoJSON feature id). Never empty.
    pub dedup_key: String,
    pub action: Action,
    pub status: Status,
    /// Identities of earlier alerts this one updates or cancels (CAP `references`).
    pub references: Vec<String>,
    /// Who sent it (CAP `sender`, Alertmanager `receiver`/`externalURL`, PagerDuty `source`,
    /// GeoJSON `net`/metadata url).
    pub sender: String,
    /// When the source says it was sent or began, if it says (Unix ms, offset applied).
    pub sent_unix_ms: Option<i64>,
    /// A one-line summary for the incident (CAP headline or event, Alertmanager `summary`
    /// annotation or alertname, PagerDuty `summary`, GeoJSON `title`).
    pub headline: String,
    /// The language of `headline` (CAP `language`, default `en-US`).
    pub language: String,
    pub severity: Option<Severity>,
    /// Everything the mapping rules may look at, as `(name, value)` pairs, in document order.
    /// Names are lower-case and stable per format (documented in each parser module), e.g.
    /// `category`, `event`, `event_code.SAME`, `parameter.magnitude`, `label.alertname`,
    /// `annotation.summary`, `severity`, `class`, `component`, `custom.deaths`, `mag`, `type`.
    /// A name may repeat (one CAP `category` per info block and language).
    pub fields: Vec<(String, String)>,
    pub area: Area,
}

impl Alert {
    /// All values of field `name`, in document order.
    pub fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of field `name`.
    pub fn field<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.field_values(name).next()
    }
}

/// Bounds every parser enforces before doing real work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub body_bytes_max: usize,
    /// Deepest element / JSON nesting accepted.
    pub depth_max: usize,
    /// Most XML elements (or JSON values) accepted in one body.
    pub elements_max: usize,
    /// Most alerts one body may carry (Alertmanager `alerts`, GeoJSON `features`).
    pub alerts_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes_max: 1024 * 1024,
            depth_max: 32,
            elements_max: 20_000,
            alerts_max: 1_000,
        }
    }
}

/// Why a body was refused. `code` is stable and machine-readable; `reason` is for a human and
/// names the element, field or value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {reason}")]
pub struct Rejection {
    pub code: RejectCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

/// The kinds of rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Body larger than [`Limits::body_bytes_max`] (HTTP 413).
    TooLarge,
    /// Nesting deeper than [`Limits::depth_max`].
    TooDeep,
    /// More elements / values / alerts than the limits allow.
    TooManyElements,
    /// A DOCTYPE / DTD: refused outright so that no entity is ever expanded.
    DoctypeForbidden,
    /// Not well-formed XML / JSON, or not UTF-8.
    Malformed,
    /// The root element is not a CAP 1.2 (or 1.1) `alert`.
    WrongNamespace,
    /// A required element or field is missing or empty.
    MissingElement,
    /// An element or field has a value outside its enumeration or syntax (dates, coordinates).
    InvalidValue,
    /// The body is well-formed but not something this endpoint takes (e.g. an unsupported
    /// Alertmanager webhook version).
    Unsupported,
}

impl RejectCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::TooDeep => "too_deep",
            RejectCode::TooManyElements => "too_many_elements",
            RejectCode::DoctypeForbidden => "doctype_forbidden",
            RejectCode::Malformed => "malformed",
            RejectCode::WrongNamespace => "wrong_namespace",
            RejectCode::MissingElement => "missing_element",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses one request body of `format` into its alerts.
pub fn parse(format: Format, body: &[u8], limits: &Limits) -> Result<Vec<Alert>, Rejection> {
    if body.len() > limits.body_bytes_max {
        return Err(Rejection::new(
            RejectCode::TooLarge,
            format!(
                "body is {} bytes; the limit is {} bytes",
                body.len(),
                limits.body_bytes_max
            ),
        ));
    }
    match format {
        Format::Cap => cap::parse(body, limits).map(|alert| vec![alert]),
        Format::Alertmanager => alertmanager::parse(body, limits),
        Format::Pagerduty => pagerduty::parse(body, limits).map(|alert| vec![alert]),
        Format::Geojson => geojson::parse(body, limits),
    }
}

/// Parses an RFC 3339 / ISO 8601 date-time with a mandatory offset (`2003-04-02T14:39:01-05:00`,
/// `...Z`, optional fraction) into Unix milliseconds. CAP requires the offset; JSON feeds use the
/// same syntax. Returns a reason when it is not one.
pub fn parse_datetime(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let bad = || format!("{text:?} is not a date-time like 2003-04-02T14:39:01-05:00");
    if bytes.len() < 20 {
        return Err(bad());
    }
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if bytes[4] != b'-' || bytes[7] != b'-' || (bytes[10] != b'T' && bytes[10] != b't') {
        return Err(bad());
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!(
            "{text:?} is not a valid date-time (a field is out of range)"
        ));
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return Err(bad());
        }
        let mut scaled = 0i64;
        for (index, digit) in fraction[..end].bytes().take(3).enumerate() {
            scaled += i64::from(digit - b'0') * 10i64.pow(2 - index as u32);
        }
        millis = scaled;
        rest = &fraction[end..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => {
                    return Err(format!(
                        "{text:?} has no time-zone offset (expected Z or ±hh:mm)"
                    ));
                }
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return Err(bad());
            }
            let hours: i64 = offset[0..2].parse().map_err(|_| bad())?;
            let minutes: i64 = offset[3..5].parse().map_err(|_| bad())?;
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            sign * (hours * 60 + minutes)
        }
    };
    let days = domain::time::days_from_civil(year, month as u32, day as u32);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_with_offsets() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T08:00:00+08:00"), Ok(0));
        assert_eq!(
            parse_datetime("2003-04-02T14:39:01-05:00"),
            Ok(1_049_312_341_000)
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00.250Z"),
            Ok(1_709_164_800_250)
        );
        assert!(parse_datetime("2003-04-02T14:39:01").is_err());
        assert!(parse_datetime("2003-02-30T14:39:01Z").is_err());
        assert!(parse_datetime("2003-04-02 14:39:01Z").is_err());
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("２００３-04-02T14:39:01Z").is_err());
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let limits = Limits {
            body_bytes_max: 10,
            ..Limits::default()
        };
        let error = parse(Format::Cap, &[b'x'; 11], &limits).unwrap_err();
        assert_eq!(error.code, RejectCode::TooLarge);
    }
}
