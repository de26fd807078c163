//! CAP 1.2 (and 1.1) alert messages.
//!
//! The parser streams `quick-xml` events and keeps only what it needs; it never builds a DOM.
//! Before any real work it checks the body against [`Limits`]:
//!
//! * any `<!DOCTYPE …>` is refused outright ([`RejectCode::DoctypeForbidden`]), so no entity is
//!   ever declared or expanded; a reference to an unknown entity (`&lol;`) is
//!   [`RejectCode::Malformed`]. The five predefined entities and numeric character references
//!   are resolved;
//! * nesting deeper than [`Limits::depth_max`] is [`RejectCode::TooDeep`], more than
//!   [`Limits::elements_max`] elements is [`RejectCode::TooManyElements`], a body that is not
//!   UTF-8 is [`RejectCode::Malformed`], and the text of one kept element longer than
//!   [`TEXT_BYTES_MAX`] is [`RejectCode::TooLarge`].
//!
//! The root must be `alert` in the CAP 1.2 namespace (`urn:oasis:names:tc:emergency:cap:1.2`) or
//! the CAP 1.1 one; elements are matched by namespace and local name, so prefixed documents work
//! and elements of other namespaces (an XML-DSig `Signature`) are skipped, as are unknown CAP
//! elements, comments and processing instructions.
//!
//! # Mapping onto [`Alert`]
//!
//! * `identity` = `dedup_key` = `sender,identifier,sent` (each trimmed, as written);
//! * `action`: `Alert` → Raise, `Update` → Update, `Cancel` → Cancel, `Ack`/`Error` → Receipt;
//! * `references`: the whitespace-separated `sender,identifier,sent` triples, as written;
//! * `headline`/`language`: of the preferred `info` block — the first whose language starts
//!   with `zh` (any case), else the first block; the headline falls back to the `event`, the
//!   language to `en-US`. Without any `info` the headline is `CAP <msgType> <identifier>`;
//! * `severity`: the most severe one over all `info` blocks (`None` without `info`);
//! * `area`: all `area`s of all `info` blocks together, exact duplicates dropped (multi-language
//!   messages repeat their areas): `areaDesc`s joined with `"; "`, polygons (closed rings,
//!   consecutive duplicate points dropped, fewer than three distinct points ignored), circles,
//!   geocodes.
//!
//! ## Fields
//!
//! In document order, values trimmed:
//!
//! | name | from |
//! |---|---|
//! | `source`, `code`, `note`, `incidents` | the alert elements of that name |
//! | `language` | per `info` (`en-US` when absent, placed first in the block) |
//! | `category` | per `category` of each `info` |
//! | `event`, `urgency`, `severity`, `certainty` | per `info` (`Very Likely` reads as `Likely`) |
//! | `response_type` | per `responseType` |
//! | `event_code.<valueName>` | per `eventCode`, valueName as written |
//! | `parameter.<valuename>` | per `parameter`, valueName lower-cased |

use std::collections::HashSet;

use domain::geo::GeoPoint;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::{Action, Alert, Area, Circle, Format, Limits, RejectCode, Rejection, Severity, Status};

/// The CAP 1.2 namespace.
pub const CAP_1_2: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// The CAP 1.1 namespace (accepted too: the elements Muster reads are the same).
pub const CAP_1_1: &str = "urn:oasis:names:tc:emergency:cap:1.1";
/// Longest text accepted in one element the parser keeps, in bytes.
pub const TEXT_BYTES_MAX: usize = 64 * 1024;

const STATUSES: &[&str] = &["Actual", "Exercise", "System", "Test", "Draft"];
const MSG_TYPES: &[&str] = &["Alert", "Update", "Cancel", "Ack", "Error"];
const SCOPES: &[&str] = &["Public", "Restricted", "Private"];
const CATEGORIES: &[&str] = &[
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
];
const URGENCIES: &[&str] = &["Immediate", "Expected", "Future", "Past", "Unknown"];
const SEVERITIES: &[&str] = &["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
const CERTAINTIES: &[&str] = &["Observed", "Likely", "Possible", "Unlikely", "Unknown"];

/// Parses one CAP message.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Alert, Rejection> {
    let text = std::str::from_utf8(body).map_err(|error| {
        reject(
            RejectCode::Malformed,
            format!(
                "the body is not UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new(limits);
    parser.run(text)?;
    parser.finish()
}

fn reject(code: RejectCode, reason: impl Into<String>) -> Rejection {
    Rejection::new(code, reason)
}

/// Alert-level elements whose text is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlertText {
    Identifier,
    Sender,
    Sent,
    Status,
    MsgType,
    Source,
    Scope,
    Code,
    Note,
    References,
    Incidents,
}

impl AlertText {
    fn from_name(name: &str) -> Option<AlertText> {
        Some(match name {
            "identifier" => AlertText::Identifier,
            "sender" => AlertText::Sender,
            "sent" => AlertText::Sent,
            "status" => AlertText::Status,
            "msgType" => AlertText::MsgType,
            "source" => AlertText::Source,
            "scope" => AlertText::Scope,
            "code" => AlertText::Code,
            "note" => AlertText::Note,
            "references" => AlertText::References,
            "incidents" => AlertText::Incidents,
            _ => return None,
        })
    }
}

/// `info` elements whose text is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfoText {
    Language,
    Category,
    Event,
    ResponseType,
    Urgency,
    Severity,
    Certainty,
    Effective,
    Onset,
    Expires,
    Headline,
}

impl InfoText {
    fn from_name(name: &str) -> Option<InfoText> {
        Some(match name {
            "language" => InfoText::Language,
            "category" => InfoText::Category,
            "event" => InfoText::Event,
            "responseType" => InfoText::ResponseType,
            "urgency" => InfoText::Urgency,
            "severity" => InfoText::Severity,
            "certainty" => InfoText::Certainty,
            "effective" => InfoText::Effective,
            "onset" => InfoText::Onset,
            "expires" => InfoText::Expires,
            "headline" => InfoText::Headline,
            _ => return None,
        })
    }
}

/// `area` elements whose text is kept (`altitude` and `ceiling` are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AreaText {
    AreaDesc,
    Polygon,
    Circle,
}

/// The `valueName`/`value` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairKind {
    EventCode,
    Parameter,
    Geocode,
}

impl PairKind {
    fn element(self) -> &'static str {
        match self {
            PairKind::EventCode => "eventCode",
            PairKind::Parameter => "parameter",
            PairKind::Geocode => "geocode",
        }
    }
}

/// Where the reader is: one entry per open element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Alert,
    AlertText(AlertText),
    Info,
    InfoText(InfoText),
    Area,
    AreaText(AreaText),
    Pair(PairKind),
    /// `valueName` (false) or `value` (true) of a pair.
    PairText(PairKind, bool),
    /// Anything else (other namespaces, unknown or skipped elements and everything inside).
    Skipped,
}

impl Node {
    fn keeps_text(self) -> bool {
        matches!(
            self,
            Node::AlertText(_) | Node::InfoText(_) | Node::AreaText(_) | Node::PairText(..)
        )
    }

    /// The node a CAP element named `name` opens inside `self`.
    fn child(self, name: &str) -> Node {
        match self {
            Node::Alert => match name {
                "info" => Node::Info,
                _ => AlertText::from_name(name).map_or(Node::Skipped, Node::AlertText),
            },
            Node::Info => match name {
                "eventCode" => Node::Pair(PairKind::EventCode),
                "parameter" => Node::Pair(PairKind::Parameter),
                "area" => Node::Area,
                _ => InfoText::from_name(name).map_or(Node::Skipped, Node::InfoText),
            },
            Node::Area => match name {
                "areaDesc" => Node::AreaText(AreaText::AreaDesc),
                "polygon" => Node::AreaText(AreaText::Polygon),
                "circle" => Node::AreaText(AreaText::Circle),
                "geocode" => Node::Pair(PairKind::Geocode),
                _ => Node::Skipped,
            },
            Node::Pair(kind) => match name {
                "valueName" => Node::PairText(kind, false),
                "value" => Node::PairText(kind, true),
                _ => Node::Skipped,
            },
            _ => Node::Skipped,
        }
    }
}

/// What one finished `info` block contributes to the headline and severity.
struct InfoSummary {
    language: Option<String>,
    headline: Option<String>,
    event: String,
    severity: Severity,
}

/// The `info` block being read.
#[derive(Default)]
struct InfoState {
    /// Index in `fields` of this block's `language` (pushed as `en-US` when the block opens).
    language_field: usize,
    language: Option<String>,
    categories: usize,
    event: Option<String>,
    urgency: bool,
    severity: Option<Severity>,
    certainty: bool,
    headline: Option<String>,
    areas: usize,
}

#[derive(Default)]
struct PairState {
    name: Option<String>,
    value: Option<String>,
}

/// The alert-level values, kept as trimmed text.
#[derive(Default)]
struct Header {
    identifier: Option<String>,
    sender: Option<String>,
    sent: Option<String>,
    status: Option<Status>,
    msg_type: Option<String>,
    scope: bool,
    references: Option<String>,
}

/// The union of all areas, without exact duplicates.
#[derive(Default)]
struct AreaUnion {
    area: Area,
    descriptions: HashSet<String>,
    polygons: HashSet<Vec<(u64, u64)>>,
    circles: HashSet<(u64, u64, u64)>,
    geocodes: HashSet<(String, String)>,
}

impl AreaUnion {
    fn add_description(&mut self, text: String) {
        if !text.is_empty() && self.descriptions.insert(text.clone()) {
            if !self.area.description.is_empty() {
                self.area.description.push_str("; ");
            }
            self.area.description.push_str(&text);
        }
    }

    fn add_polygon(&mut self, ring: Vec<GeoPoint>) {
        let key = ring
            .iter()
            .map(|point| (point.lat.to_bits(), point.lon.to_bits()))
            .collect();
        if self.polygons.insert(key) {
            self.area.polygons.push(ring);
        }
    }

    fn add_circle(&mut self, circle: Circle) {
        let key = (
            circle.center.lat.to_bits(),
            circle.center.lon.to_bits(),
            circle.radius_km.to_bits(),
        );
        if self.circles.insert(key) {
            self.area.circles.push(circle);
        }
    }

    fn add_geocode(&mut self, name: String, value: String) {
        let pair = (name, value);
        if self.geocodes.insert(pair.clone()) {
            self.area.geocodes.push(pair);
        }
    }
}

struct Parser<'l> {
    limits: &'l Limits,
    stack: Vec<Node>,
    elements: usize,
    /// The namespace of the root (CAP 1.2 or 1.1) once seen.
    namespace: Option<&'static str>,
    root_closed: bool,
    text: String,
    header: Header,
    fields: Vec<(String, String)>,
    infos: Vec<InfoSummary>,
    info: InfoState,
    pair: PairState,
    areas: AreaUnion,
}

impl<'l> Parser<'l> {
    fn new(limits: &'l Limits) -> Parser<'l> {
        Parser {
            limits,
            stack: Vec::with_capacity(limits.depth_max.min(64)),
            elements: 0,
            namespace: None,
            root_closed: false,
            text: String::new(),
            header: Header::default(),
            fields: Vec::new(),
            infos: Vec::new(),
            info: InfoState::default(),
            pair: PairState::default(),
            areas: AreaUnion::default(),
        }
    }

    fn run(&mut self, body: &str) -> Result<(), Rejection> {
        let mut reader = NsReader::from_str(body);
        loop {
            let position = reader.buffer_position();
            let (namespace, event) = reader.read_resolved_event().map_err(|error| {
                reject(
                    RejectCode::Malformed,
                    format!("not well-formed XML near byte {position}: {error}"),
                )
            })?;
            match event {
                Event::DocType(_) => {
                    return Err(reject(
                        RejectCode::DoctypeForbidden,
                        "the document has a DOCTYPE; CAP messages must not declare a DTD or entities",
                    ));
                }
                Event::Start(_) | Event::Empty(_) if self.root_closed => {
                    return Err(reject(
                        RejectCode::Malformed,
                        "an element follows the end of the root <alert>",
                    ));
                }
                Event::Start(start) => {
                    let node = self.open(namespace, start.local_name().as_ref())?;
                    self.stack.push(node);
                }
                Event::Empty(start) => {
                    let node = self.open(namespace, start.local_name().as_ref())?;
                    self.stack.push(node);
                    self.close()?;
                }
                Event::End(_) => self.close()?,
                Event::Text(text) => {
                    if self.keeping_text() {
                        let content = text.xml10_content();
                        self.push_text(&content)?;
                    }
                }
                Event::CData(cdata) => {
                    if self.keeping_text() {
                        let content = cdata.xml10_content();
                        self.push_text(&content)?;
                    }
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => ch,
                        Ok(None) => match &*reference {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            other => {
                                return Err(reject(
                                    RejectCode::Malformed,
                                    format!(
                                        "reference to the undeclared entity &{};",
                                        truncate(other, 64)
                                    ),
                                ));
                            }
                        },
                        Err(_) => {
                            return Err(reject(
                                RejectCode::Malformed,
                                format!(
                                    "invalid character reference &{};",
                                    truncate(&reference, 64)
                                ),
                            ));
                        }
                    };
                    if self.keeping_text() {
                        let mut utf8 = [0u8; 4];
                        self.push_text(resolved.encode_utf8(&mut utf8))?;
                    }
                }
                Event::Eof => {
                    if !self.stack.is_empty() {
                        return Err(reject(
                            RejectCode::Malformed,
                            "the document ends before the root <alert> is closed",
                        ));
                    }
                    if self.namespace.is_none() {
                        return Err(reject(
                            RejectCode::Malformed,
                            "the document has no root element",
                        ));
                    }
                    return Ok(());
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            }
        }
    }

    fn keeping_text(&self) -> bool {
        self.stack.last().is_some_and(|node| node.keeps_text())
    }

    fn push_text(&mut self, content: &str) -> Result<(), Rejection> {
        if self.text.len() + content.len() > TEXT_BYTES_MAX {
            return Err(reject(
                RejectCode::TooLarge,
                format!(
                    "the text of <{}> is longer than {TEXT_BYTES_MAX} bytes",
                    self.current_name()
                ),
            ));
        }
        self.text.push_str(content);
        Ok(())
    }

    fn current_name(&self) -> &'static str {
        match self.stack.last() {
            Some(Node::AlertText(field)) => alert_text_name(*field),
            Some(Node::InfoText(field)) => info_text_name(*field),
            Some(Node::AreaText(AreaText::AreaDesc)) => "areaDesc",
            Some(Node::AreaText(AreaText::Polygon)) => "polygon",
            Some(Node::AreaText(AreaText::Circle)) => "circle",
            Some(Node::PairText(_, false)) => "valueName",
            Some(Node::PairText(_, true)) => "value",
            _ => "element",
        }
    }

    /// Checks the limits and works out the node for a new element.
    fn open(&mut self, namespace: ResolveResult<'_>, local: &str) -> Result<Node, Rejection> {
        self.elements += 1;
        if self.elements > self.limits.elements_max {
            return Err(reject(
                RejectCode::TooManyElements,
                format!(
                    "the document has more than {} elements",
                    self.limits.elements_max
                ),
            ));
        }
        if self.stack.len() + 1 > self.limits.depth_max {
            return Err(reject(
                RejectCode::TooDeep,
                format!(
                    "elements are nested more than {} deep",
                    self.limits.depth_max
                ),
            ));
        }
        let namespace = match namespace {
            ResolveResult::Bound(namespace) => Some(namespace.0),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(reject(
                    RejectCode::Malformed,
                    format!(
                        "element <{}:{}> uses an undeclared namespace prefix",
                        truncate(&prefix, 64),
                        truncate(local, 64)
                    ),
                ));
            }
        };
        let Some(parent) = self.stack.last().copied() else {
            return self.open_root(namespace, local);
        };
        if parent == Node::Skipped || namespace != self.namespace {
            return Ok(Node::Skipped);
        }
        let node = parent.child(local);
        match node {
            Node::Info => {
                self.info = InfoState {
                    language_field: self.fields.len(),
                    ..InfoState::default()
                };
                self.fields
                    .push(("language".to_owned(), "en-US".to_owned()));
            }
            Node::Area => self.info.areas += 1,
            Node::Pair(_) => self.pair = PairState::default(),
            _ => {}
        }
        if node.keeps_text() {
            self.text.clear();
        }
        Ok(node)
    }

    fn open_root(&mut self, namespace: Option<&str>, local: &str) -> Result<Node, Rejection> {
        let version = match namespace {
            Some(CAP_1_2) => CAP_1_2,
            Some(CAP_1_1) => CAP_1_1,
            Some(other) => {
                return Err(reject(
                    RejectCode::WrongNamespace,
                    format!(
                        "the root element <{}> is in namespace {:?}, not CAP ({CAP_1_2:?} or {CAP_1_1:?})",
                        truncate(local, 64),
                        truncate(other, 200)
                    ),
                ));
            }
            None => {
                return Err(reject(
                    RejectCode::WrongNamespace,
                    format!(
                        "the root element <{}> has no namespace; CAP requires {CAP_1_2:?}",
                        truncate(local, 64)
                    ),
                ));
            }
        };
        if local != "alert" {
            return Err(reject(
                RejectCode::WrongNamespace,
                format!(
                    "the root element is <{}>, not a CAP <alert>",
                    truncate(local, 64)
                ),
            ));
        }
        self.namespace = Some(version);
        Ok(Node::Alert)
    }

    /// Closes the innermost element, taking what it held.
    fn close(&mut self) -> Result<(), Rejection> {
        let Some(node) = self.stack.pop() else {
            return Err(reject(RejectCode::Malformed, "an end tag closes nothing"));
        };
        match node {
            Node::Alert => self.root_closed = true,
            Node::AlertText(field) => {
                let value = self.take_text();
                self.alert_text(field, value)?;
            }
            Node::Info => self.close_info()?,
            Node::InfoText(field) => {
                let value = self.take_text();
                self.info_text(field, value)?;
            }
            Node::AreaText(field) => {
                let value = self.take_text();
                self.area_text(field, value)?;
            }
            Node::PairText(kind, is_value) => {
                let value = self.take_text();
                let slot = if is_value {
                    &mut self.pair.value
                } else {
                    &mut self.pair.name
                };
                if slot.is_some() {
                    let which = if is_value { "value" } else { "valueName" };
                    return Err(reject(
                        RejectCode::InvalidValue,
                        format!("<{}> has more than one <{which}>", kind.element()),
                    ));
                }
                *slot = Some(value);
            }
            Node::Pair(kind) => self.close_pair(kind),
            Node::Area | Node::Skipped => {}
        }
        Ok(())
    }

    fn take_text(&mut self) -> String {
        let value = self.text.trim().to_owned();
        self.text.clear();
        value
    }

    fn info_label(&self) -> String {
        format!("info[{}]", self.infos.len() + 1)
    }

    fn alert_text(&mut self, field: AlertText, value: String) -> Result<(), Rejection> {
        let name = alert_text_name(field);
        let once = |slot: &mut Option<String>, value: String| -> Result<(), Rejection> {
            if slot.is_some() {
                return Err(duplicate(name));
            }
            *slot = Some(value);
            Ok(())
        };
        match field {
            AlertText::Identifier => once(&mut self.header.identifier, value)?,
            AlertText::Sender => once(&mut self.header.sender, value)?,
            AlertText::Sent => once(&mut self.header.sent, value)?,
            AlertText::MsgType => {
                check_enum(name, &value, MSG_TYPES)?;
                once(&mut self.header.msg_type, value)?;
            }
            AlertText::References => once(&mut self.header.references, value)?,
            AlertText::Status => {
                check_enum(name, &value, STATUSES)?;
                if self.header.status.is_some() {
                    return Err(duplicate(name));
                }
                self.header.status = Some(match value.as_str() {
                    "Actual" => Status::Actual,
                    "Exercise" => Status::Exercise,
                    "System" => Status::System,
                    "Test" => Status::Test,
                    _ => Status::Draft,
                });
            }
            AlertText::Scope => {
                check_enum(name, &value, SCOPES)?;
                if self.header.scope {
                    return Err(duplicate(name));
                }
                self.header.scope = true;
            }
            AlertText::Source | AlertText::Code | AlertText::Note | AlertText::Incidents => {
                if !value.is_empty() {
                    self.fields.push((name.to_owned(), value));
                }
            }
        }
        Ok(())
    }

    fn info_text(&mut self, field: InfoText, value: String) -> Result<(), Rejection> {
        let name = info_text_name(field);
        let label = self.info_label();
        let info = &mut self.info;
        let twice = || {
            Rejection::new(
                RejectCode::InvalidValue,
                format!("{label} has more than one <{name}>"),
            )
        };
        match field {
            InfoText::Language => {
                if info.language.is_some() {
                    return Err(twice());
                }
                if !value.is_empty() {
                    self.fields[info.language_field].1.clone_from(&value);
                    info.language = Some(value);
                }
            }
            InfoText::Category => {
                check_enum_in(&label, name, &value, CATEGORIES)?;
                info.categories += 1;
                self.fields.push(("category".to_owned(), value));
            }
            InfoText::Event => {
                if info.event.is_some() {
                    return Err(twice());
                }
                if !value.is_empty() {
                    self.fields.push(("event".to_owned(), value.clone()));
                    info.event = Some(value);
                }
            }
            InfoText::ResponseType => {
                if !value.is_empty() {
                    self.fields.push(("response_type".to_owned(), value));
                }
            }
            InfoText::Urgency => {
                check_enum_in(&label, name, &value, URGENCIES)?;
                if info.urgency {
                    return Err(twice());
                }
                info.urgency = true;
                self.fields.push(("urgency".to_owned(), value));
            }
            InfoText::Severity => {
                check_enum_in(&label, name, &value, SEVERITIES)?;
                if info.severity.is_some() {
                    return Err(twice());
                }
                info.severity = Some(match value.as_str() {
                    "Extreme" => Severity::Extreme,
                    "Severe" => Severity::Severe,
                    "Moderate" => Severity::Moderate,
                    "Minor" => Severity::Minor,
                    _ => Severity::Unknown,
                });
                self.fields.push(("severity".to_owned(), value));
            }
            InfoText::Certainty => {
                // CAP 1.1 also had "Very Likely"; 1.2 folds it into "Likely".
                let value = if value == "Very Likely" {
                    "Likely".to_owned()
                } else {
                    check_enum_in(&label, name, &value, CERTAINTIES)?;
                    value
                };
                if info.certainty {
                    return Err(twice());
                }
                info.certainty = true;
                self.fields.push(("certainty".to_owned(), value));
            }
            InfoText::Effective | InfoText::Onset | InfoText::Expires => {
                if !value.is_empty() {
                    parse_datetime(&format!("{label} <{name}>"), &value)?;
                }
            }
            InfoText::Headline => {
                if info.headline.is_some() {
                    return Err(twice());
                }
                if !value.is_empty() {
                    info.headline = Some(value);
                }
            }
        }
        Ok(())
    }

    fn close_info(&mut self) -> Result<(), Rejection> {
        let label = self.info_label();
        let info = std::mem::take(&mut self.info);
        let missing = |name: &str| {
            Rejection::new(
                RejectCode::MissingElement,
                format!("{label} has no <{name}>"),
            )
        };
        if info.categories == 0 {
            return Err(missing("category"));
        }
        let Some(event) = info.event else {
            return Err(missing("event"));
        };
        if !info.urgency {
            return Err(missing("urgency"));
        }
        let Some(severity) = info.severity else {
            return Err(missing("severity"));
        };
        if !info.certainty {
            return Err(missing("certainty"));
        }
        self.infos.push(InfoSummary {
            language: info.language,
            headline: info.headline,
            event,
            severity,
        });
        Ok(())
    }

    fn area_text(&mut self, field: AreaText, value: String) -> Result<(), Rejection> {
        match field {
            AreaText::AreaDesc => self.areas.add_description(value),
            AreaText::Polygon => {
                let label = format!("{} area[{}] <polygon>", self.info_label(), self.info.areas);
                if let Some(ring) = parse_polygon(&value).map_err(|reason| {
                    reject(RejectCode::InvalidValue, format!("{label}: {reason}"))
                })? {
                    self.areas.add_polygon(ring);
                }
            }
            AreaText::Circle => {
                let label = format!("{} area[{}] <circle>", self.info_label(), self.info.areas);
                if let Some(circle) = parse_circle(&value).map_err(|reason| {
                    reject(RejectCode::InvalidValue, format!("{label}: {reason}"))
                })? {
                    self.areas.add_circle(circle);
                }
            }
        }
        Ok(())
    }

    fn close_pair(&mut self, kind: PairKind) {
        let pair = std::mem::take(&mut self.pair);
        let (Some(name), value) = (pair.name, pair.value.unwrap_or_default()) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        match kind {
            PairKind::EventCode => self.fields.push((format!("event_code.{name}"), value)),
            PairKind::Parameter => self
                .fields
                .push((format!("parameter.{}", name.to_lowercase()), value)),
            PairKind::Geocode => {
                if !value.is_empty() {
                    self.areas.add_geocode(name, value);
                }
            }
        }
    }

    fn finish(self) -> Result<Alert, Rejection> {
        let header = self.header;
        let required = |value: Option<String>, name: &str| match value {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(reject(
                RejectCode::MissingElement,
                format!("<alert> has no <{name}>"),
            )),
        };
        let identifier = required(header.identifier, "identifier")?;
        let sender = required(header.sender, "sender")?;
        let sent = required(header.sent, "sent")?;
        let status = header
            .status
            .ok_or_else(|| reject(RejectCode::MissingElement, "<alert> has no <status>"))?;
        let msg_type = required(header.msg_type, "msgType")?;
        if !header.scope {
            return Err(reject(RejectCode::MissingElement, "<alert> has no <scope>"));
        }
        let sent_unix_ms = parse_datetime("<sent>", &sent)?;
        let action = match msg_type.as_str() {
            "Alert" => Action::Raise,
            "Update" => Action::Update,
            "Cancel" => Action::Cancel,
            _ => Action::Receipt,
        };
        let references = header
            .references
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let preferred = self
            .infos
            .iter()
            .find(|info| {
                info.language.as_deref().is_some_and(|language| {
                    language
                        .get(..2)
                        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("zh"))
                })
            })
            .or_else(|| self.infos.first());
        let (headline, language) = match preferred {
            Some(info) => (
                info.headline.clone().unwrap_or_else(|| info.event.clone()),
                info.language.clone().unwrap_or_else(|| "en-US".to_owned()),
            ),
            None => (format!("CAP {msg_type} {identifier}"), "en-US".to_owned()),
        };
        let severity = self
            .infos
            .iter()
            .map(|info| info.severity)
            .min_by_key(|severity| severity_rank(*severity));
        let identity = format!("{sender},{identifier},{sent}");
        Ok(Alert {
            format: Format::Cap,
            dedup_key: identity.clone(),
            identity,
            action,
            status,
            references,
            sender,
            sent_unix_ms: Some(sent_unix_ms),
            headline,
            language,
            severity,
            fields: self.fields,
            area: self.areas.area,
        })
    }
}

fn alert_text_name(field: AlertText) -> &'static str {
    match field {
        AlertText::Identifier => "identifier",
        AlertText::Sender => "sender",
        AlertText::Sent => "sent",
        AlertText::Status => "status",
        AlertText::MsgType => "msgType",
        AlertText::Source => "source",
        AlertText::Scope => "scope",
        AlertText::Code => "code",
        AlertText::Note => "note",
        AlertText::References => "references",
        AlertText::Incidents => "incidents",
    }
}

fn info_text_name(field: InfoText) -> &'static str {
    match field {
        InfoText::Language => "language",
        InfoText::Category => "category",
        InfoText::Event => "event",
        InfoText::ResponseType => "responseType",
        InfoText::Urgency => "urgency",
        InfoText::Severity => "severity",
        InfoText::Certainty => "certainty",
        InfoText::Effective => "effective",
        InfoText::Onset => "onset",
        InfoText::Expires => "expires",
        InfoText::Headline => "headline",
    }
}

/// [`crate::parse_datetime`], saying so when the offset CAP requires is missing.
fn parse_datetime(place: &str, value: &str) -> Result<i64, Rejection> {
    crate::parse_datetime(value).map_err(|reason| {
        let has_offset = value
            .get(19..)
            .is_some_and(|rest| rest.ends_with(['Z', 'z']) || rest.contains(['+', '-']));
        let hint = if has_offset {
            ""
        } else {
            " (CAP requires a time-zone offset such as +08:00 or Z)"
        };
        reject(RejectCode::InvalidValue, format!("{place}: {reason}{hint}"))
    })
}

/// 0 is the most severe.
fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Extreme => 0,
        Severity::Severe => 1,
        Severity::Moderate => 2,
        Severity::Minor => 3,
        Severity::Unknown => 4,
    }
}

fn duplicate(name: &str) -> Rejection {
    reject(
        RejectCode::InvalidValue,
        format!("<alert> has more than one <{name}>"),
    )
}

fn check_enum(name: &str, value: &str, allowed: &[&str]) -> Result<(), Rejection> {
    check_enum_in("alert", name, value, allowed)
}

fn check_enum_in(place: &str, name: &str, value: &str, allowed: &[&str]) -> Result<(), Rejection> {
    if allowed.contains(&value) {
        return Ok(());
    }
    if value.is_empty() {
        return Err(reject(
            RejectCode::MissingElement,
            format!(
                "{place} <{name}> is empty; expected one of {}",
                allowed.join(", ")
            ),
        ));
    }
    Err(reject(
        RejectCode::InvalidValue,
        format!(
            "{place} <{name}> is {:?}; expected one of {}",
            truncate(value, 64),
            allowed.join(", ")
        ),
    ))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Splits coordinate text into `lat,lon` tokens: separated by any whitespace, tolerating
/// whitespace next to the comma (`lat, lon`).
fn coordinate_tokens(text: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut glue = false;
    for piece in text.split_whitespace() {
        match tokens.last_mut() {
            Some(last) if glue || piece.starts_with(',') => last.push_str(piece),
            _ => tokens.push(piece.to_owned()),
        }
        glue = piece.ends_with(',');
    }
    tokens
}

fn parse_point(token: &str) -> Result<GeoPoint, String> {
    let shown = truncate(token, 64);
    let (lat, lon) = token
        .split_once(',')
        .ok_or_else(|| format!("{shown:?} is not a \"lat,lon\" pair"))?;
    let number = |part: &str| -> Result<f64, String> {
        part.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| format!("{shown:?} is not a \"lat,lon\" pair of numbers"))
    };
    let point = GeoPoint::new(number(lat)?, number(lon)?);
    if let Some(problem) = point.range_problem() {
        return Err(format!("{shown:?}: {problem}"));
    }
    Ok(point)
}

/// A CAP polygon as a closed ring, or `None` when it is empty or has fewer than three distinct
/// points.
fn parse_polygon(text: &str) -> Result<Option<Vec<GeoPoint>>, String> {
    let mut ring: Vec<GeoPoint> = Vec::new();
    for token in coordinate_tokens(text) {
        let point = parse_point(&token)?;
        if ring.last() != Some(&point) {
            ring.push(point);
        }
    }
    let mut distinct: Vec<GeoPoint> = Vec::with_capacity(3);
    for point in &ring {
        if !distinct.contains(point) {
            distinct.push(*point);
            if distinct.len() == 3 {
                break;
            }
        }
    }
    if distinct.len() < 3 {
        return Ok(None);
    }
    if ring.first() != ring.last() {
        ring.push(ring[0]);
    }
    Ok(Some(ring))
}

/// A CAP circle `lat,lon radius` (radius in km, may be 0), or `None` when empty.
fn parse_circle(text: &str) -> Result<Option<Circle>, String> {
    let tokens = coordinate_tokens(text);
    match tokens.as_slice() {
        [] => Ok(None),
        [center, radius] => {
            let center = parse_point(center)?;
            let radius_km = radius
                .parse::<f64>()
                .ok()
                .filter(|radius| radius.is_finite() && *radius >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "radius {:?} is not a non-negative number of kilometres",
                        truncate(radius, 64)
                    )
                })?;
            Ok(Some(Circle { center, radius_km }))
        }
        _ => Err(format!(
            "{:?} is not \"lat,lon radius\"",
            truncate(text, 64)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygons_are_closed_and_deduplicated() {
        let ring = parse_polygon(" 1,1 2,2\t2,2\n3,1 ").unwrap().unwrap();
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.first(), ring.last());
        assert_eq!(parse_polygon("1,1 2,2 1,1").unwrap(), None);
        assert_eq!(parse_polygon("").unwrap(), None);
        assert!(parse_polygon("1,1 2,2 91,0").is_err());
        assert!(parse_polygon("1,1 2;2 3,3").is_err());
        assert_eq!(parse_polygon("1, 1 2 ,2 3,1").unwrap().unwrap().len(), 4);
    }

    #[test]
    fn circles() {
        let circle = parse_circle("32.9525,-115.5527 0").unwrap().unwrap();
        assert_eq!(circle.radius_km, 0.0);
        assert_eq!(parse_circle("  ").unwrap(), None);
        assert!(parse_circle("1,1").is_err());
        assert!(parse_circle("1,1 -2").is_err());
    }
}
