//! The mapping of a feed-neutral [`Alert`] onto Muster's domain terms: sub-type (and so class),
//! facts, warning level, township and correlation window. The rules are data (`mapping.toml`, the
//! default ships in `data/feeds/mapping.toml`), so a province adds a feed without a code change.
//!
//! [`Mapping::map`] decides in this order:
//!
//! 1. **Escape hatch**: a field `label.muster_kind` or `custom.muster_kind` whose value is a
//!    sub-type code of a statutory class (`accident.fire`) names the sub-type directly. Sources we
//!    configure ourselves can so say exactly what they mean. `unclassified.*` codes are refused
//!    (a feed may not raise `unclassified.feed_silent` for another).
//! 2. **Rules**, in file order, first match wins. A rule matches when its optional `format` equals
//!    the alert's and every `when` condition holds: some value of the field (field names compared
//!    ignoring ASCII case) matches some pattern. A pattern `"text"` matches a value equal to it
//!    ignoring ASCII case and surrounding white space; `"~text"` matches a value containing it,
//!    ignoring ASCII case. A rule may deliberately leave alerts unmapped
//!    (`kind = "unclassified.unmapped"`), so that later, broader rules do not catch them.
//! 3. Otherwise the alert is `unclassified.unmapped` (visible triage, never a silent drop), with
//!    a reason listing what the rules look at and what the alert said.
//!
//! The warning level is the rule's fixed `warning` if it has one, else the CAP severity
//! ([`crate::Severity::warning_level`]), else the first `[warning]` table entry that matches a
//! field value. The rule comes first because a fixed level is a deliberate local decision about
//! one kind of alert from one kind of source (a gas leak in the chemical park is red whatever the
//! sensor calls it); CAP severity is the standard signal of everyone else; the table translates
//! the home-grown severities of Alertmanager, PagerDuty and USGS PAGER.

use std::collections::BTreeMap;

use domain::Error;
use domain::class::{IncidentClass, SubType, sub_type, sub_types};
use domain::grade::{Facts, WarningLevel};
use domain::region::Region;
use domain::source::{error_at, parse_toml};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::locate::{LocateOptions, Located, locate};
use crate::{Alert, Format};

const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../data/feeds/mapping.toml");

/// Fields whose value, if it is a sub-type code, maps an alert directly (before any rule).
pub const KIND_FIELDS: [&str; 2] = ["label.muster_kind", "custom.muster_kind"];

/// The `rule_id` reported when a [`KIND_FIELDS`] value decided the sub-type; reserved, so no rule
/// in the file may use it.
pub const KIND_FIELD_RULE_ID: &str = "muster_kind";

/// Default drill namespace for CAP `status = Exercise`.
const DEFAULT_EXERCISE_NAMESPACE: &str = "drill.feeds";
/// Bounds that keep a typo from creating absurd windows.
const DISTANCE_KM_MAX: f64 = 2_000.0;
const WINDOW_MINUTES_MAX: i64 = 7 * 24 * 60;
const OTHER_TOWNSHIPS_MAX: usize = 1_000;
/// Largest magnitude believed (the largest ever recorded is 9.5).
const MAGNITUDE_MAX: f64 = 10.0;
/// Longest field value quoted in a reason.
const REASON_VALUE_CHARS: usize = 60;

/// How close in space and time two alerts of a kind must be to belong to the same incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorrelationWindow {
    pub distance_km: f64,
    pub window_ms: i64,
}

/// A monitoring feed Muster expects to hear from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedSpec {
    /// Identifier (`[a-z0-9_-]`, at most 64), unique in the file.
    pub name: String,
    /// The format the feed speaks; `None`: any.
    pub format: Option<Format>,
    /// Matches [`Alert::sender`] exactly when set.
    pub sender: Option<String>,
    /// The jurisdiction that owns the feed (and gets its dead-man alarm).
    pub owner_code: String,
    /// Heartbeat: silent longer than this → dead-man alarm (`unclassified.feed_silent`).
    pub expect_every_ms: Option<i64>,
    pub description: String,
}

impl FeedSpec {
    /// Whether `alert` comes from this feed.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.format.is_none_or(|format| format == alert.format)
            && self
                .sender
                .as_deref()
                .is_none_or(|sender| sender == alert.sender)
    }

    fn specificity(&self) -> u8 {
        u8::from(self.sender.is_some()) * 2 + u8::from(self.format.is_some())
    }
}

/// One pattern of a `when` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// `"text"`: the value equals the text, ignoring ASCII case and surrounding white space.
    Equals(String),
    /// `"~text"`: the value contains the text, ignoring ASCII case.
    Contains(String),
}

impl Pattern {
    fn parse(text: &str) -> Option<Pattern> {
        match text.strip_prefix('~') {
            Some(needle) if !needle.is_empty() => Some(Pattern::Contains(needle.to_string())),
            Some(_) => None,
            None if text.trim().is_empty() => None,
            None => Some(Pattern::Equals(text.trim().to_string())),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Equals(text) => value.trim().eq_ignore_ascii_case(text),
            Pattern::Contains(needle) => contains_ignore_ascii_case(value, needle),
        }
    }
}

/// Substring search ignoring ASCII case, without allocating. Byte-wise comparison is sound for
/// UTF-8: a match of a whole valid needle can only start at a character boundary.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// "Some value of `field` matches one of `patterns`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    pub patterns: Vec<Pattern>,
}

impl Condition {
    /// The first value of the field that matches, if any.
    fn matching_value<'a>(&'a self, alert: &'a Alert) -> Option<&'a str> {
        field_values(alert, &self.field)
            .find(|value| self.patterns.iter().any(|pattern| pattern.matches(value)))
    }
}

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: String,
    pub format: Option<Format>,
    pub sub_type: &'static SubType,
    /// A fixed warning level; wins over CAP severity and the `[warning]` table.
    pub warning: Option<WarningLevel>,
    /// Free text for readers; quoted in the reason of rules that leave alerts unmapped.
    pub note: Option<String>,
    /// All must hold; never empty.
    pub when: Vec<Condition>,
}

/// One `[warning]` entry: values of `field` and the warning levels they stand for.
#[derive(Debug, Clone, PartialEq)]
struct WarningTable {
    field: String,
    values: Vec<(String, WarningLevel)>,
}

/// Field names per fact, tried in order.
#[derive(Debug, Clone, Default, PartialEq)]
struct FactFields {
    magnitude: Vec<String>,
    deaths: Vec<String>,
    missing: Vec<String>,
    serious_injuries: Vec<String>,
    direct_loss_cny: Vec<String>,
}

/// A position in the mapping file, for errors found after loading ([`Mapping::check_against`]).
#[derive(Debug, Clone, PartialEq)]
struct FilePosition {
    line: usize,
    column: usize,
}

/// What [`Mapping::map`] made of an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mapped {
    pub sub_type: &'static SubType,
    /// The rule that decided ([`KIND_FIELD_RULE_ID`] for the escape hatch); `None` when no rule
    /// matched and the alert is `unclassified.unmapped`. A rule may also deliberately leave an
    /// alert unmapped: then `sub_type` is `unclassified.unmapped` and this names the rule.
    pub rule_id: Option<String>,
    /// Which rule and which field values matched (or why none did), and where the warning came
    /// from.
    pub reason: String,
    pub facts: Facts,
    pub warning: Option<WarningLevel>,
    pub located: Located,
    pub correlation: CorrelationWindow,
}

/// The mapping rules, loaded from TOML.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    file_name: String,
    exercise_namespace: String,
    locate: LocateOptions,
    correlation_default: CorrelationWindow,
    /// Exact sub-type codes or class wildcards (`natural.*`), in file order.
    correlation_by_kind: Vec<(String, CorrelationWindow)>,
    facts: FactFields,
    warning_tables: Vec<WarningTable>,
    rules: Vec<Rule>,
    feeds: Vec<FeedSpec>,
    /// Where each feed's `owner` is written, parallel to `feeds`.
    feed_owner_at: Vec<FilePosition>,
    /// Every field some rule looks at, in first-use order (for the "no rule matched" reason).
    rule_fields: Vec<String>,
}

// ---- The file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    exercise_namespace: Option<Spanned<String>>,
    locate: Option<LocateFile>,
    correlation: Option<CorrelationFile>,
    facts: Option<FactsFile>,
    #[serde(default)]
    warning: BTreeMap<Spanned<String>, Spanned<WarningTableFile>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleFile>>,
    #[serde(default)]
    feed: Vec<Spanned<FeedFile>>,
}

/// One `[warning]` entry: field value → warning level name.
type WarningTableFile = BTreeMap<Spanned<String>, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocateFile {
    max_km: Option<Spanned<f64>>,
    geocode_names: Option<Vec<Spanned<String>>>,
    other_townships_max: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelationFile {
    distance_km: Option<Spanned<f64>>,
    window_minutes: Option<Spanned<i64>>,
    #[serde(default)]
    kind: Vec<Spanned<CorrelationKindFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelationKindFile {
    kind: Spanned<String>,
    distance_km: Option<Spanned<f64>>,
    window_minutes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactsFile {
    #[serde(default)]
    magnitude: Vec<Spanned<String>>,
    #[serde(default)]
    deaths: Vec<Spanned<String>>,
    #[serde(default)]
    missing: Vec<Spanned<String>>,
    #[serde(default)]
    serious_injuries: Vec<Spanned<String>>,
    #[serde(default)]
    direct_loss_cny: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: Spanned<String>,
    format: Option<Spanned<String>>,
    kind: Spanned<String>,
    warning: Option<Spanned<String>>,
    note: Option<String>,
    when: Option<Spanned<BTreeMap<Spanned<String>, Spanned<PatternsFile>>>>,
}

/// A `when` value: one pattern string or an array of them.
struct PatternsFile(Vec<String>);

impl<'de> Deserialize<'de> for PatternsFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PatternsFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a pattern string or an array of pattern strings")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<PatternsFile, E> {
                Ok(PatternsFile(vec![value.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PatternsFile, A::Error> {
                let mut patterns = Vec::new();
                while let Some(pattern) = seq.next_element::<String>()? {
                    patterns.push(pattern);
                }
                Ok(PatternsFile(patterns))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedFile {
    name: Spanned<String>,
    format: Option<Spanned<String>>,
    sender: Option<Spanned<String>>,
    owner: Spanned<String>,
    expect_every_minutes: Option<Spanned<i64>>,
    expect_every_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    description: String,
}

// ---- Loading ---------------------------------------------------------------------------------

/// Entries of a TOML table in file order (a `BTreeMap` sorts them by key).
fn in_file_order<K, V>(map: &BTreeMap<Spanned<K>, V>) -> Vec<(&Spanned<K>, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn parse_format(text: &str) -> Result<Format, String> {
    Format::parse(text.trim()).ok_or_else(|| {
        let known: Vec<&str> = Format::ALL.iter().map(Format::as_str).collect();
        format!(
            "unknown format {text:?}; known formats: {}",
            known.join(", ")
        )
    })
}

fn parse_warning(text: &str) -> Result<WarningLevel, String> {
    WarningLevel::parse(text)
        .ok_or_else(|| format!("unknown warning level {text:?}; use red, orange, yellow or blue"))
}

/// "unknown sub-type code ...; known codes: natural.(flood, ...), accident.(...)".
fn unknown_kind(code: &str) -> String {
    let mut groups: Vec<String> = Vec::new();
    for class in IncidentClass::ALL {
        let names: Vec<&str> = sub_types()
            .iter()
            .filter(|entry| entry.class == class)
            .filter_map(|entry| entry.code.split_once('.').map(|(_, name)| name))
            .collect();
        groups.push(format!("{}.{{{}}}", class.prefix(), names.join(", ")));
    }
    format!(
        "unknown sub-type code {code:?}; known codes: {}",
        groups.join("; ")
    )
}

fn check_distance(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 && value <= DISTANCE_KM_MAX {
        Ok(value)
    } else {
        Err(format!(
            "distance_km must be above 0 and at most {DISTANCE_KM_MAX} km, not {value}"
        ))
    }
}

fn check_window_minutes(value: i64) -> Result<i64, String> {
    if (1..=WINDOW_MINUTES_MAX).contains(&value) {
        Ok(value * 60_000)
    } else {
        Err(format!(
            "window_minutes must be 1 to {WINDOW_MINUTES_MAX} (7 days), not {value}"
        ))
    }
}

fn check_field_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        Err(format!(
            "field name {name:?} must be non-empty and contain no white space"
        ))
    } else {
        Ok(name.to_string())
    }
}

impl Mapping {
    pub const DEFAULT_FILE_NAME: &str = "mapping.toml";

    /// Loads and validates a mapping file. Every problem is reported as `file:line:column: problem`.
    pub fn from_toml(file_name: &str, text: &str) -> Result<Mapping, Error> {
        let file: MappingFile = parse_toml(file_name, text)?;
        let at = |offset: usize, problem: String| error_at(file_name, text, offset, problem);

        // exercise_namespace
        let exercise_namespace = match &file.exercise_namespace {
            None => DEFAULT_EXERCISE_NAMESPACE.to_string(),
            Some(spanned) => {
                let namespace = spanned.get_ref().trim();
                let valid = namespace.strip_prefix("drill.").is_some_and(is_identifier);
                if !valid {
                    return Err(at(
                        spanned.span().start,
                        format!(
                            "exercise_namespace {namespace:?} must look like drill.<id>, the id \
                             1-64 of a-z, 0-9, `-` and `_`"
                        ),
                    ));
                }
                namespace.to_string()
            }
        };

        // [locate]
        let mut locate = LocateOptions::default();
        if let Some(section) = &file.locate {
            if let Some(max_km) = &section.max_km {
                let value = *max_km.get_ref();
                if !(value.is_finite() && (0.0..=DISTANCE_KM_MAX).contains(&value)) {
                    return Err(at(
                        max_km.span().start,
                        format!("max_km must be 0 to {DISTANCE_KM_MAX} km, not {value}"),
                    ));
                }
                locate.max_km = value;
            }
            if let Some(names) = &section.geocode_names {
                locate.geocode_names.clear();
                for name in names {
                    let value = name.get_ref().trim();
                    if value.is_empty() {
                        return Err(at(name.span().start, "geocode name is empty".into()));
                    }
                    locate.geocode_names.push(value.to_string());
                }
            }
            if let Some(max) = &section.other_townships_max {
                let value = *max.get_ref();
                match usize::try_from(value) {
                    Ok(value) if value <= OTHER_TOWNSHIPS_MAX => locate.other_townships_max = value,
                    _ => {
                        return Err(at(
                            max.span().start,
                            format!(
                                "other_townships_max must be 0 to {OTHER_TOWNSHIPS_MAX}, not {value}"
                            ),
                        ));
                    }
                }
            }
        }

        // [correlation]
        let mut correlation_default = CorrelationWindow {
            distance_km: 20.0,
            window_ms: 60 * 60_000,
        };
        let mut correlation_by_kind: Vec<(String, CorrelationWindow)> = Vec::new();
        if let Some(section) = &file.correlation {
            if let Some(distance) = &section.distance_km {
                correlation_default.distance_km = check_distance(*distance.get_ref())
                    .map_err(|problem| at(distance.span().start, problem))?;
            }
            if let Some(window) = &section.window_minutes {
                correlation_default.window_ms = check_window_minutes(*window.get_ref())
                    .map_err(|problem| at(window.span().start, problem))?;
            }
            for spanned in &section.kind {
                let entry = spanned.get_ref();
                let kind = entry.kind.get_ref().trim();
                let kind_offset = entry.kind.span().start;
                let valid = match kind.strip_suffix(".*") {
                    Some(prefix) => IncidentClass::from_prefix(prefix).is_some(),
                    None => sub_type(kind).is_some(),
                };
                if !valid {
                    return Err(at(kind_offset, unknown_kind(kind)));
                }
                if correlation_by_kind.iter().any(|(code, _)| code == kind) {
                    return Err(at(
                        kind_offset,
                        format!("duplicate correlation kind {kind:?}"),
                    ));
                }
                if entry.distance_km.is_none() && entry.window_minutes.is_none() {
                    return Err(at(
                        spanned.span().start,
                        format!(
                            "correlation kind {kind:?} sets neither distance_km nor window_minutes"
                        ),
                    ));
                }
                let mut window = correlation_default;
                if let Some(distance) = &entry.distance_km {
                    window.distance_km = check_distance(*distance.get_ref())
                        .map_err(|problem| at(distance.span().start, problem))?;
                }
                if let Some(minutes) = &entry.window_minutes {
                    window.window_ms = check_window_minutes(*minutes.get_ref())
                        .map_err(|problem| at(minutes.span().start, problem))?;
                }
                correlation_by_kind.push((kind.to_string(), window));
            }
        }

        // [facts]
        let mut facts = FactFields::default();
        if let Some(section) = &file.facts {
            let lists = [
                (&section.magnitude, &mut facts.magnitude),
                (&section.deaths, &mut facts.deaths),
                (&section.missing, &mut facts.missing),
                (&section.serious_injuries, &mut facts.serious_injuries),
                (&section.direct_loss_cny, &mut facts.direct_loss_cny),
            ];
            for (names, target) in lists {
                for name in names {
                    let field = check_field_name(name.get_ref())
                        .map_err(|problem| at(name.span().start, problem))?;
                    target.push(field);
                }
            }
        }

        // [warning]
        let mut warning_tables = Vec::with_capacity(file.warning.len());
        for (field, values) in in_file_order(&file.warning) {
            let field_name = check_field_name(field.get_ref())
                .map_err(|problem| at(field.span().start, problem))?;
            if values.get_ref().is_empty() {
                return Err(at(
                    values.span().start,
                    format!("warning table for {field_name:?} is empty"),
                ));
            }
            let mut table = WarningTable {
                field: field_name,
                values: Vec::with_capacity(values.get_ref().len()),
            };
            for (value, level) in in_file_order(values.get_ref()) {
                let level_value = parse_warning(level.get_ref())
                    .map_err(|problem| at(level.span().start, problem))?;
                let value_text = value.get_ref().trim();
                if value_text.is_empty() {
                    return Err(at(value.span().start, "warning value is empty".into()));
                }
                if table
                    .values
                    .iter()
                    .any(|(seen, _)| seen.eq_ignore_ascii_case(value_text))
                {
                    return Err(at(
                        value.span().start,
                        format!(
                            "value {value_text:?} of warning table {:?} is listed twice \
                             (values compare ignoring case)",
                            table.field
                        ),
                    ));
                }
                table.values.push((value_text.to_string(), level_value));
            }
            warning_tables.push(table);
        }

        // [[rule]]
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        let mut rule_fields: Vec<String> = Vec::new();
        for spanned in &file.rule {
            let rule = spanned.get_ref();
            let id = rule.id.get_ref().trim();
            let id_offset = rule.id.span().start;
            if id.is_empty() || id.chars().any(char::is_whitespace) {
                return Err(at(
                    id_offset,
                    format!("rule id {id:?} must be non-empty and contain no white space"),
                ));
            }
            if id == KIND_FIELD_RULE_ID {
                return Err(at(
                    id_offset,
                    format!("rule id {id:?} is reserved for the label.muster_kind escape hatch"),
                ));
            }
            if rules.iter().any(|earlier| earlier.id == id) {
                return Err(at(id_offset, format!("duplicate rule id {id:?}")));
            }
            let format = match &rule.format {
                None => None,
                Some(format) => Some(parse_format(format.get_ref()).map_err(|problem| {
                    at(format.span().start, format!("rule {id:?}: {problem}"))
                })?),
            };
            let kind = rule.kind.get_ref().trim();
            let Some(entry) = sub_type(kind) else {
                return Err(at(
                    rule.kind.span().start,
                    format!("rule {id:?}: {}", unknown_kind(kind)),
                ));
            };
            if entry.code == "unclassified.feed_silent" {
                return Err(at(
                    rule.kind.span().start,
                    format!(
                        "rule {id:?}: unclassified.feed_silent is raised by the heartbeat timer, \
                         never by a rule"
                    ),
                ));
            }
            let warning = match &rule.warning {
                None => None,
                Some(level) => Some(parse_warning(level.get_ref()).map_err(|problem| {
                    at(level.span().start, format!("rule {id:?}: {problem}"))
                })?),
            };
            let Some(when) = rule.when.as_ref().filter(|when| !when.get_ref().is_empty()) else {
                let offset = rule
                    .when
                    .as_ref()
                    .map_or(spanned.span().start, |when| when.span().start);
                return Err(at(
                    offset,
                    format!(
                        "rule {id:?} has no conditions: add a non-empty [rule.when] table, e.g. \
                         when = {{ category = \"Geo\", event = [\"~earthquake\"] }}"
                    ),
                ));
            };
            let mut conditions = Vec::with_capacity(when.get_ref().len());
            for (field, patterns) in in_file_order(when.get_ref()) {
                let field_name = check_field_name(field.get_ref())
                    .map_err(|problem| at(field.span().start, format!("rule {id:?}: {problem}")))?;
                if patterns.get_ref().0.is_empty() {
                    return Err(at(
                        patterns.span().start,
                        format!("rule {id:?}: condition on {field_name:?} lists no patterns"),
                    ));
                }
                let mut parsed = Vec::with_capacity(patterns.get_ref().0.len());
                for text in &patterns.get_ref().0 {
                    let Some(pattern) = Pattern::parse(text) else {
                        return Err(at(
                            patterns.span().start,
                            format!(
                                "rule {id:?}: empty pattern {text:?} for {field_name:?} \
                                 (use \"text\" for equality or \"~text\" for contains)"
                            ),
                        ));
                    };
                    parsed.push(pattern);
                }
                if !rule_fields
                    .iter()
                    .any(|seen| seen.eq_ignore_ascii_case(&field_name))
                {
                    rule_fields.push(field_name.clone());
                }
                conditions.push(Condition {
                    field: field_name,
                    patterns: parsed,
                });
            }
            rules.push(Rule {
                id: id.to_string(),
                format,
                sub_type: entry,
                warning,
                note: rule.note.as_ref().map(|note| note.trim().to_string()),
                when: conditions,
            });
        }

        // [[feed]]
        let mut feeds: Vec<FeedSpec> = Vec::with_capacity(file.feed.len());
        let mut feed_owner_at = Vec::with_capacity(file.feed.len());
        for spanned in &file.feed {
            let feed = spanned.get_ref();
            let name = feed.name.get_ref().trim();
            if !is_identifier(name) {
                return Err(at(
                    feed.name.span().start,
                    format!("feed name {name:?} must be 1-64 of a-z, 0-9, `-` and `_`"),
                ));
            }
            if feeds.iter().any(|earlier| earlier.name == name) {
                return Err(at(
                    feed.name.span().start,
                    format!("duplicate feed name {name:?}"),
                ));
            }
            let format = match &feed.format {
                None => None,
                Some(format) => Some(parse_format(format.get_ref()).map_err(|problem| {
                    at(format.span().start, format!("feed {name:?}: {problem}"))
                })?),
            };
            let sender = match &feed.sender {
                None => None,
                Some(sender) if sender.get_ref().is_empty() => {
                    return Err(at(
                        sender.span().start,
                        format!(
                            "feed {name:?}: sender is empty (leave it out to match any sender)"
                        ),
                    ));
                }
                Some(sender) => Some(sender.get_ref().clone()),
            };
            if format.is_none() && sender.is_none() {
                return Err(at(
                    spanned.span().start,
                    format!("feed {name:?} needs a format or a sender to recognise its alerts by"),
                ));
            }
            if let Some(twin) = feeds
                .iter()
                .find(|earlier| earlier.format == format && earlier.sender == sender)
            {
                return Err(at(
                    spanned.span().start,
                    format!(
                        "feed {name:?} has the same format and sender as feed {:?}; alerts could \
                         not tell them apart",
                        twin.name
                    ),
                ));
            }
            let owner = feed.owner.get_ref().trim();
            if owner.is_empty() {
                return Err(at(
                    feed.owner.span().start,
                    format!("feed {name:?}: owner is empty"),
                ));
            }
            let expect_every_ms = match (&feed.expect_every_minutes, &feed.expect_every_seconds) {
                (Some(_), Some(seconds)) => {
                    return Err(at(
                        seconds.span().start,
                        format!(
                            "feed {name:?}: give expect_every_minutes or expect_every_seconds, \
                             not both"
                        ),
                    ));
                }
                (None, None) => None,
                (Some(minutes), None) => {
                    Some(check_window_minutes(*minutes.get_ref()).map_err(|_| {
                        at(
                            minutes.span().start,
                            format!(
                                "feed {name:?}: expect_every_minutes must be 1 to \
                                 {WINDOW_MINUTES_MAX} (7 days), not {}",
                                minutes.get_ref()
                            ),
                        )
                    })?)
                }
                (None, Some(seconds)) => {
                    let value = *seconds.get_ref();
                    if !(1..=WINDOW_MINUTES_MAX * 60).contains(&value) {
                        return Err(at(
                            seconds.span().start,
                            format!(
                                "feed {name:?}: expect_every_seconds must be 1 to {} (7 days), \
                                 not {value}",
                                WINDOW_MINUTES_MAX * 60
                            ),
                        ));
                    }
                    Some(value * 1000)
                }
            };
            let (line, column) = domain::source::line_column(text, feed.owner.span().start);
            feed_owner_at.push(FilePosition { line, column });
            feeds.push(FeedSpec {
                name: name.to_string(),
                format,
                sender,
                owner_code: owner.to_string(),
                expect_every_ms,
                description: feed.description.trim().to_string(),
            });
        }

        Ok(Mapping {
            file_name: file_name.to_string(),
            exercise_namespace,
            locate,
            correlation_default,
            correlation_by_kind,
            facts,
            warning_tables,
            rules,
            feeds,
            feed_owner_at,
            rule_fields,
        })
    }

    /// The mapping shipped in `data/feeds/mapping.toml`.
    pub fn embedded_default() -> Mapping {
        match Mapping::from_toml(Mapping::DEFAULT_FILE_NAME, EMBEDDED_DEFAULT_TOML) {
            Ok(mapping) => mapping,
            // A test loads the shipped file, so this only fires if that test was ignored.
            Err(error) => panic!("the embedded default feed mapping is broken: {error}"),
        }
    }

    /// The embedded text of the default mapping (for tools that write it out as a starting point).
    pub fn embedded_default_text() -> &'static str {
        EMBEDDED_DEFAULT_TOML
    }

    /// Cross-checks the mapping against a region: every feed's owner is a jurisdiction of it, and
    /// the region has townships to locate alerts in.
    pub fn check_against(&self, region: &Region) -> Result<(), Error> {
        for (feed, position) in self.feeds.iter().zip(&self.feed_owner_at) {
            if region.tree.get(&feed.owner_code).is_none() {
                return Err(Error::Source {
                    file: self.file_name.clone(),
                    line: position.line,
                    column: position.column,
                    problem: format!(
                        "feed {:?}: owner {:?} is not a jurisdiction of the region",
                        feed.name, feed.owner_code
                    ),
                });
            }
        }
        let has_townships = region
            .tree
            .all()
            .any(|item| item.level == domain::jurisdiction::Level::Township);
        if !has_townships {
            return Err(Error::Source {
                file: self.file_name.clone(),
                line: 1,
                column: 1,
                problem: "the region has no townships, so no alert could be located".into(),
            });
        }
        Ok(())
    }

    /// Maps one alert: sub-type, facts, warning level, township and correlation window.
    pub fn map(&self, alert: &Alert, region: &Region) -> Mapped {
        let located = locate(region, &alert.area, &self.locate);
        let facts = self.facts(alert);

        let mut ignored_kind: Option<String> = None;
        let mut decision: Option<(&'static SubType, String, Option<&Rule>, String)> = None;
        'hatch: for name in KIND_FIELDS {
            for value in field_values(alert, name) {
                let code = value.trim();
                match sub_type(code) {
                    Some(entry) if entry.class != IncidentClass::Unclassified => {
                        decision = Some((
                            entry,
                            KIND_FIELD_RULE_ID.to_string(),
                            None,
                            format!("{name}={code} names the sub-type directly"),
                        ));
                        break 'hatch;
                    }
                    _ => {
                        ignored_kind.get_or_insert_with(|| {
                            format!(
                                "{name}={:?} ignored: not a sub-type code of a statutory class",
                                shorten(code)
                            )
                        });
                    }
                }
            }
        }
        if decision.is_none() {
            decision = self.rules.iter().find_map(|rule| {
                let reason = self.rule_match(rule, alert)?;
                Some((rule.sub_type, rule.id.clone(), Some(rule), reason))
            });
        }

        let (sub_type_entry, rule_id, rule, mut reason) = match decision {
            Some((entry, id, rule, reason)) => (entry, Some(id), rule, reason),
            None => (
                sub_type("unclassified.unmapped").expect("the catalogue has unclassified.unmapped"),
                None,
                None,
                self.unmapped_reason(alert),
            ),
        };
        if let Some(note) = ignored_kind {
            reason.push_str("; ");
            reason.push_str(&note);
        }

        let warning = self.warning(alert, rule, &mut reason);
        Mapped {
            sub_type: sub_type_entry,
            rule_id,
            reason,
            facts,
            warning,
            located,
            correlation: self.correlation_for(sub_type_entry.code),
        }
    }

    /// The reason if `rule` matches `alert`.
    fn rule_match(&self, rule: &Rule, alert: &Alert) -> Option<String> {
        if rule.format.is_some_and(|format| format != alert.format) {
            return None;
        }
        let mut matched = String::new();
        for condition in &rule.when {
            let value = condition.matching_value(alert)?;
            if !matched.is_empty() {
                matched.push_str(", ");
            }
            matched.push_str(&condition.field);
            matched.push('=');
            matched.push_str(&shorten(value.trim()));
        }
        Some(if rule.sub_type.class == IncidentClass::Unclassified {
            match &rule.note {
                Some(note) if !note.is_empty() => format!(
                    "rule {} leaves it unmapped by design ({matched}): {note}",
                    rule.id
                ),
                _ => format!("rule {} leaves it unmapped by design ({matched})", rule.id),
            }
        } else {
            format!("rule {}: {matched}", rule.id)
        })
    }

    fn unmapped_reason(&self, alert: &Alert) -> String {
        let mut seen: Vec<String> = Vec::new();
        for field in &self.rule_fields {
            if let Some(value) = field_values(alert, field).next() {
                seen.push(format!("{field}={}", shorten(value.trim())));
                if seen.len() == 6 {
                    break;
                }
            }
        }
        let format = alert.format.as_str();
        if seen.is_empty() {
            format!(
                "no rule matched: format {format}, and it has none of the fields the rules test"
            )
        } else {
            format!("no rule matched: format {format}, {}", seen.join(", "))
        }
    }

    /// Rule override, then CAP severity, then the `[warning]` table; appends where it came from.
    fn warning(
        &self,
        alert: &Alert,
        rule: Option<&Rule>,
        reason: &mut String,
    ) -> Option<WarningLevel> {
        if let Some(level) = rule.and_then(|rule| rule.warning) {
            reason.push_str(&format!("; warning {} fixed by the rule", level.as_str()));
            return Some(level);
        }
        if let Some(severity) = alert.severity
            && let Some(level) = severity.warning_level()
        {
            reason.push_str(&format!(
                "; warning {} from severity {severity:?}",
                level.as_str()
            ));
            return Some(level);
        }
        for table in &self.warning_tables {
            for value in field_values(alert, &table.field) {
                let value = value.trim();
                if let Some((_, level)) = table
                    .values
                    .iter()
                    .find(|(known, _)| known.eq_ignore_ascii_case(value))
                {
                    reason.push_str(&format!(
                        "; warning {} from {}={}",
                        level.as_str(),
                        table.field,
                        shorten(value)
                    ));
                    return Some(*level);
                }
            }
        }
        None
    }

    fn facts(&self, alert: &Alert) -> Facts {
        let first = |names: &[String], parse: &dyn Fn(&str) -> Option<f64>| {
            names
                .iter()
                .find_map(|name| field_values(alert, name).find_map(parse))
        };
        let count = |names: &[String], max: f64| {
            first(names, &|value| {
                parse_count(value).filter(|number| *number <= max)
            })
        };
        Facts {
            deaths: count(&self.facts.deaths, f64::from(u32::MAX)).map(|n| n as u32),
            missing: count(&self.facts.missing, f64::from(u32::MAX)).map(|n| n as u32),
            serious_injuries: count(&self.facts.serious_injuries, f64::from(u32::MAX))
                .map(|n| n as u32),
            direct_loss_cny: count(&self.facts.direct_loss_cny, 9.0e15).map(|n| n as u64),
            magnitude: first(&self.facts.magnitude, &parse_magnitude),
            ..Facts::default()
        }
    }

    /// The correlation window for a sub-type: its own entry, else its class's (`natural.*`), else
    /// the default.
    pub fn correlation_for(&self, sub_type_code: &str) -> CorrelationWindow {
        let exact = self
            .correlation_by_kind
            .iter()
            .find(|(kind, _)| kind == sub_type_code);
        if let Some((_, window)) = exact {
            return *window;
        }
        let class = sub_type_code.split_once('.').map(|(prefix, _)| prefix);
        self.correlation_by_kind
            .iter()
            .find(|(kind, _)| {
                kind.strip_suffix(".*")
                    .is_some_and(|prefix| Some(prefix) == class)
            })
            .map_or(self.correlation_default, |(_, window)| *window)
    }

    pub fn feeds(&self) -> &[FeedSpec] {
        &self.feeds
    }

    /// The feed `alert` comes from: of the feeds it matches, the most specific (sender and
    /// format, then sender, then format), the first in file order among equals.
    pub fn feed_for(&self, alert: &Alert) -> Option<&FeedSpec> {
        let mut best: Option<&FeedSpec> = None;
        for feed in self.feeds.iter().filter(|feed| feed.matches(alert)) {
            if best.is_none_or(|best| feed.specificity() > best.specificity()) {
                best = Some(feed);
            }
        }
        best
    }

    /// Where CAP `status = Exercise` alerts go (`drill.<id>`).
    pub fn exercise_namespace(&self) -> &str {
        &self.exercise_namespace
    }

    pub fn locate_options(&self) -> &LocateOptions {
        &self.locate
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Values of a field, the name compared ignoring ASCII case.
fn field_values<'a>(alert: &'a Alert, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    alert
        .fields
        .iter()
        .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(REASON_VALUE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A magnitude written leniently: "5.8", " M5.8 ", "Mw 6.1", "5.8级". Negative, non-finite and
/// implausible (above 10) values are ignored.
fn parse_magnitude(text: &str) -> Option<f64> {
    let text = text.trim();
    let text = text
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .trim_start();
    let text = text.trim_end_matches(|c: char| !c.is_ascii_digit());
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && (0.0..=MAGNITUDE_MAX).contains(&value)).then_some(value)
}

/// A non-negative whole number written leniently: "12", "12人", "1,200", "12.0", "3500万元",
/// "1.2亿". Returned as f64 for the caller's range check; fractions and negatives are ignored.
fn parse_count(text: &str) -> Option<f64> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '_')
        .collect();
    let head = cleaned.trim_end_matches(|c: char| !c.is_ascii_digit() && c != '万' && c != '亿');
    let (digits, factor) = if let Some(rest) = head.strip_suffix('亿') {
        (rest, 1.0e8)
    } else if let Some(rest) = head.strip_suffix('万') {
        (rest, 1.0e4)
    } else {
        (head, 1.0)
    };
    let digits = digits.trim();
    if digits.starts_with('-') {
        return None;
    }
    let value = match digits.parse::<u64>() {
        Ok(whole) => whole as f64 * factor,
        Err(_) => digits.parse::<f64>().ok()? * factor,
    };
    (value.is_finite() && value >= 0.0 && value.fract() == 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("Geo").unwrap().matches(" geo "));
        assert!(!Pattern::parse("Geo").unwrap().matches("Geology"));
        assert!(
            Pattern::parse("~quake")
                .unwrap()
                .matches("Earthquake Warning")
        );
        assert!(Pattern::parse("~QUAKE").unwrap().matches("earthquake"));
        assert!(Pattern::parse("~地震").unwrap().matches("地震预警"));
        assert!(!Pattern::parse("~地震").unwrap().matches("台风"));
        assert_eq!(Pattern::parse("~"), None);
        assert_eq!(Pattern::parse("  "), None);
    }

    #[test]
    fn lenient_magnitudes() {
        assert_eq!(parse_magnitude("5.8"), Some(5.8));
        assert_eq!(parse_magnitude(" M5.8 "), Some(5.8));
        assert_eq!(parse_magnitude("m 6"), Some(6.0));
        assert_eq!(parse_magnitude("Mw6.1"), Some(6.1));
        assert_eq!(parse_magnitude("5.8级"), Some(5.8));
        assert_eq!(parse_magnitude("-0.5"), None);
        assert_eq!(parse_magnitude("NaN"), None);
        assert_eq!(parse_magnitude("inf"), None);
        assert_eq!(parse_magnitude("42"), None);
        assert_eq!(parse_magnitude("strong"), None);
        assert_eq!(parse_magnitude(""), None);
    }

    #[test]
    fn lenient_counts() {
        assert_eq!(parse_count("12"), Some(12.0));
        assert_eq!(parse_count(" 12人 "), Some(12.0));
        assert_eq!(parse_count("1,200"), Some(1200.0));
        assert_eq!(parse_count("12.0"), Some(12.0));
        assert_eq!(parse_count("3500万元"), Some(35_000_000.0));
        assert_eq!(parse_count("1.2亿"), Some(120_000_000.0));
        assert_eq!(parse_count("-3"), None);
        assert_eq!(parse_count("2.5"), None);
        assert_eq!(parse_count("many"), None);
    }

    #[test]
    fn contains_ignoring_ascii_case() {
        assert!(contains_ignore_ascii_case("GasLeakHigh", "gasleak"));
        assert!(contains_ignore_ascii_case("水庫洩洪通知", "洩洪"));
        assert!(!contains_ignore_ascii_case("ab", "abc"));
    }
}
