//! What the JSON feeds share: a pre-scan that bounds a body's shape before serde_json builds
//! anything from it, decoding with rejections that name the place at fault, and small helpers
//! for the loosely-typed corners of the formats (coordinates given as strings or numbers,
//! free-form scalars stringified into fields).
//!
//! Order of checks in [`decode`]: size, UTF-8, shape ([`check_shape`]), that the body is an
//! object, then serde_json. Only a body that passed the first three is ever turned into values,
//! so the allocation serde_json does is bounded by [`Limits::elements_max`] and its recursion by [`Limits::depth_max`] (serde_json's
//! own recursion limit of 128 stays a second line of defence).

use crate::{Limits, RejectCode, Rejection};
use domain::geo::GeoPoint;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Walks `body` once, without allocating, and rejects it if it nests `{`/`[` deeper than
/// [`Limits::depth_max`] ([`RejectCode::TooDeep`]) or holds more than [`Limits::elements_max`]
/// values ([`RejectCode::TooManyElements`]; every object, array, string, number, `true`, `false`
/// and `null` counts once, object keys do not).
///
/// It is not a validator: it tracks only whether it is inside a string (and after a backslash),
/// the current nesting depth and a running value count, and leaves well-formedness to serde_json.
/// Keys are not counted by counting every string and literal and subtracting one per `:`; for a
/// well-formed body the running count never exceeds the final one, so the early exit is exact.
pub(crate) fn check_shape(body: &[u8], limits: &Limits) -> Result<(), Rejection> {
    let mut depth = 0usize;
    // Values seen so far, plus keys not yet matched by their `:` (at most one at a time in a
    // well-formed body). Signed so that a stray `:` in a malformed body cannot underflow.
    let mut elements = 0i64;
    let elements_max = i64::try_from(limits.elements_max).unwrap_or(i64::MAX);
    let mut in_string = false;
    let mut escaped = false;
    let mut in_literal = false;
    for (offset, &byte) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        let literal_byte = !matches!(
            byte,
            b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
        );
        if literal_byte {
            if !in_literal {
                in_literal = true;
                elements += 1;
            }
        } else {
            in_literal = false;
            match byte {
                b'{' | b'[' => {
                    depth += 1;
                    if depth > limits.depth_max {
                        let (line, column) = line_column(body, offset);
                        return Err(Rejection::new(
                            RejectCode::TooDeep,
                            format!(
                                "line {line}, column {column}: nesting deeper than {} levels",
                                limits.depth_max
                            ),
                        ));
                    }
                    elements += 1;
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b'"' => {
                    in_string = true;
                    elements += 1;
                }
                b':' => elements -= 1,
                _ => {}
            }
        }
        if elements > elements_max {
            let (line, column) = line_column(body, offset);
            return Err(Rejection::new(
                RejectCode::TooManyElements,
                format!(
                    "line {line}, column {column}: more than {} JSON values",
                    limits.elements_max
                ),
            ));
        }
    }
    Ok(())
}

/// Decodes a whole JSON body into `T` after the size, UTF-8 and shape checks (see the module
/// documentation). Syntax errors become [`RejectCode::Malformed`] with line and column; a value
/// of the wrong type becomes [`RejectCode::InvalidValue`] naming its path (`alerts[0].labels`).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8], limits: &Limits) -> Result<T, Rejection> {
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
    let text = utf8(body)?;
    check_shape(body, limits)?;
    // Every JSON feed body is an object. Say so here: derived structs would also take an array
    // (as a sequence of their fields) and complain about its first element instead.
    let found = match text.trim_start().as_bytes().first() {
        None | Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        Some(_) => None,
    };
    if let Some(found) = found {
        return Err(Rejection::new(
            RejectCode::InvalidValue,
            format!("body: expected a JSON object, found {found}"),
        ));
    }
    serde_json::from_str(text).map_err(|error| serde_rejection(body, &error))
}

/// The body as text, or a [`RejectCode::Malformed`] rejection saying where it stops being UTF-8.
pub(crate) fn utf8(body: &[u8]) -> Result<&str, Rejection> {
    std::str::from_utf8(body).map_err(|error| {
        let offset = error.valid_up_to();
        let (line, column) = line_column(body, offset);
        Rejection::new(
            RejectCode::Malformed,
            format!(
                "body is not UTF-8: invalid byte 0x{:02x} at byte offset {offset} (line {line}, column {column})",
                body[offset]
            ),
        )
    })
}

/// Turns a serde_json error into a rejection: syntax and end-of-input errors are
/// [`RejectCode::Malformed`] (`line 3, column 7: expected ...`); data errors (a string where an
/// object belongs) are [`RejectCode::InvalidValue`] prefixed with the path of the value at fault.
pub(crate) fn serde_rejection(body: &[u8], error: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    let (line, column) = (error.line(), error.column());
    // serde_json appends " at line L column C" to its Display; keep only the message.
    let full = error.to_string();
    let message = match full.rfind(" at line ") {
        Some(index) => full[..index].to_string(),
        None => full,
    };
    match error.classify() {
        Category::Data => {
            let path = path_at(body, offset_of(body, line, column));
            let path = if path.is_empty() {
                "body".to_string()
            } else {
                path
            };
            Rejection::new(
                RejectCode::InvalidValue,
                format!("{path}: {message} (line {line}, column {column})"),
            )
        }
        Category::Syntax | Category::Eof | Category::Io => Rejection::new(
            RejectCode::Malformed,
            format!("line {line}, column {column}: {message}"),
        ),
    }
}

/// 1-based line and column (in bytes, as serde_json counts) of byte `offset`.
fn line_column(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |index| index + 1);
    (line, offset.min(body.len()) - line_start + 1)
}

/// The byte offset serde_json means by `line`/`column` (column = bytes consumed on that line).
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let mut line_start = 0;
    if line > 1 {
        let mut seen = 1;
        for (index, &byte) in body.iter().enumerate() {
            if byte == b'\n' {
                seen += 1;
                if seen == line {
                    line_start = index + 1;
                    break;
                }
            }
        }
    }
    (line_start + column).min(body.len())
}

enum Frame {
    /// An object and the key of the member being read, if its key has been read.
    Object(Option<String>),
    /// An array and the index of the element being read.
    Array(usize),
}

/// The path (`alerts[2].labels.severity`) of the value being read at byte `offset` of a body
/// that has passed [`check_shape`] (so the frame stack is bounded). Used only to explain errors.
fn path_at(body: &[u8], offset: usize) -> String {
    let mut frames: Vec<Frame> = Vec::new();
    // Whether the next string inside the innermost object is a key.
    let mut expect_key = false;
    let mut index = 0;
    let end = offset.min(body.len());
    while index < end {
        let byte = body[index];
        match byte {
            b'"' => {
                let start = index + 1;
                let mut cursor = start;
                let mut escaped = false;
                while cursor < body.len() {
                    let b = body[cursor];
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        break;
                    }
                    cursor += 1;
                }
                if expect_key {
                    let raw = &body[start..cursor.min(body.len())];
                    let key: String = match serde_json::from_slice::<String>(
                        &body[index..(cursor + 1).min(body.len())],
                    ) {
                        Ok(key) => key,
                        Err(_) => String::from_utf8_lossy(raw).into_owned(),
                    };
                    if let Some(Frame::Object(slot)) = frames.last_mut() {
                        *slot = Some(key);
                    }
                    expect_key = false;
                }
                index = cursor + 1;
                continue;
            }
            b'{' => {
                frames.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => frames.push(Frame::Array(0)),
            b'}' | b']' => {
                frames.pop();
                expect_key = false;
            }
            b',' => match frames.last_mut() {
                Some(Frame::Array(position)) => *position += 1,
                Some(Frame::Object(slot)) => {
                    *slot = None;
                    expect_key = true;
                }
                None => {}
            },
            _ => {}
        }
        index += 1;
    }
    let mut path = String::new();
    for frame in &frames {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(position) => path.push_str(&format!("[{position}]")),
        }
    }
    path
}

/// A scalar JSON value as field text: strings as they are, numbers as serde_json writes them,
/// booleans as `true`/`false`. `null`, arrays and objects have no field text.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A coordinate given as a JSON number or as text (`"29.98"`), or why it is not one.
pub(crate) fn coordinate(value: &Value) -> Result<f64, String> {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(number) if number.is_finite() => Ok(number),
        _ => Err(format!("{value} is not a number")),
    }
}

/// Builds a point from a latitude and a longitude, range-checked; the error is the reason only
/// (`latitude 95 is outside [-90, 90]`), the caller adds the path.
pub(crate) fn point(lat: f64, lon: f64) -> Result<GeoPoint, String> {
    let point = GeoPoint::new(lat, lon);
    match point.range_problem() {
        Some(problem) => Err(problem),
        None => Ok(point),
    }
}

/// Finds a latitude/longitude pair among `(name, value)` candidates, by the names `latitude` /
/// `longitude` or `lat` / `lon` (the first spelling present wins). `path` turns a name into the
/// path a rejection names. `Ok(None)` when neither coordinate is given; a lone coordinate, a
/// non-number or an out-of-range value is an [`RejectCode::InvalidValue`].
pub(crate) fn find_point(
    lookup: impl Fn(&str) -> Option<Value>,
    path: impl Fn(&str) -> String,
) -> Result<Option<GeoPoint>, Rejection> {
    let invalid = |name: &str, reason: String| {
        Rejection::new(
            RejectCode::InvalidValue,
            format!("{}: {reason}", path(name)),
        )
    };
    for (lat_name, lon_name) in [("latitude", "longitude"), ("lat", "lon")] {
        match (lookup(lat_name), lookup(lon_name)) {
            (None, None) => continue,
            (Some(_), None) => {
                return Err(invalid(lat_name, format!("given without {lon_name}")));
            }
            (None, Some(_)) => {
                return Err(invalid(lon_name, format!("given without {lat_name}")));
            }
            (Some(lat), Some(lon)) => {
                let lat_value = coordinate(&lat).map_err(|reason| invalid(lat_name, reason))?;
                let lon_value = coordinate(&lon).map_err(|reason| invalid(lon_name, reason))?;
                if let Some(problem) = GeoPoint::new(lat_value, 0.0).range_problem() {
                    return Err(invalid(lat_name, problem));
                }
                return point(lat_value, lon_value)
                    .map(Some)
                    .map_err(|reason| invalid(lon_name, reason));
            }
        }
    }
    Ok(None)
}

/// [`crate::parse_datetime`], also taking the ISO 8601 basic offset `±hhmm`
/// (`2015-07-17T08:42:58.315+0000`, as in PagerDuty's own examples) for `±hh:mm`.
pub(crate) fn datetime(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let bytes = trimmed.as_bytes();
    let length = bytes.len();
    if length >= 24
        && matches!(bytes[length - 5], b'+' | b'-')
        && bytes[length - 4..].iter().all(u8::is_ascii_digit)
    {
        let (head, offset) = trimmed.split_at(length - 2);
        return crate::parse_datetime(&format!("{head}:{offset}"))
            .map_err(|_| format!("{trimmed:?} is not a date-time like 2003-04-02T14:39:01-05:00"));
    }
    crate::parse_datetime(trimmed)
}

/// 64-bit FNV-1a over `parts`, each followed by a 0x1f (unit separator) byte so that
/// `("ab", "c")` and `("a", "bc")` differ. Stable across platforms and releases.
pub(crate) fn fnv1a64(parts: &[&str]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(std::iter::once(&0x1f)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(depth_max: usize, elements_max: usize) -> Limits {
        Limits {
            depth_max,
            elements_max,
            ..Limits::default()
        }
    }

    /// Depth of a parsed value, counted the way [`check_shape`] counts it.
    fn value_depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
            Value::Object(members) => 1 + members.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn value_count(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(value_count).sum::<usize>(),
            Value::Object(members) => 1 + members.values().map(value_count).sum::<usize>(),
            _ => 1,
        }
    }

    /// The smallest depth_max / elements_max check_shape accepts for `body`.
    fn measured(body: &[u8]) -> (usize, usize) {
        let depth = (0..=200)
            .find(|&d| check_shape(body, &limits(d, usize::MAX)).is_ok())
            .unwrap();
        let elements = (0..=10_000)
            .find(|&e| check_shape(body, &limits(usize::MAX, e)).is_ok())
            .unwrap();
        (depth, elements)
    }

    #[test]
    fn counts_values_not_keys_and_ignores_brackets_in_strings() {
        let body = br#"{"a": [1, true, null, "x[{"], "b\"{": {"c": -2.5e3}}"#;
        assert_eq!(measured(body), (2, 8));
        assert_eq!(measured(b"  42  "), (0, 1));
        assert_eq!(measured(b"[]"), (1, 1));
    }

    #[test]
    fn rejections_name_line_and_column() {
        let error = check_shape(b"[\n [[1]]]", &limits(2, 100)).unwrap_err();
        assert_eq!(error.code, RejectCode::TooDeep);
        assert!(error.reason.starts_with("line 2, column 3:"), "{error}");
        let error = check_shape(b"[1,2,3]", &limits(10, 3)).unwrap_err();
        assert_eq!(error.code, RejectCode::TooManyElements);
    }

    #[test]
    fn data_errors_name_the_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let body = b"{\"items\": [{\"n\": 1}, {\"n\": \"two\"}]}";
        let error = decode::<Outer>(body, &Limits::default()).unwrap_err();
        assert_eq!(error.code, RejectCode::InvalidValue);
        assert!(
            error.reason.starts_with("items[1].n: invalid type"),
            "{error}"
        );
        let error = decode::<Outer>(b"{\"items\": [}", &Limits::default()).unwrap_err();
        assert_eq!(error.code, RejectCode::Malformed);
        assert!(error.reason.starts_with("line 1, column 12:"), "{error}");
    }

    #[test]
    fn basic_offsets_are_taken() {
        assert_eq!(
            datetime("2015-07-17T08:42:58.315+0000"),
            Ok(1_437_122_578_315)
        );
        assert_eq!(datetime("1970-01-01T08:00:00+0800"), Ok(0));
        assert_eq!(datetime("1970-01-01T00:00:00-00:30"), Ok(1_800_000));
        assert!(datetime("1970-01-01T00:00:00+08").is_err());
        assert!(datetime("1970-01-01T00:00:00+9999").is_err());
    }

    #[test]
    fn fnv_is_the_published_function() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; ours appends 0x1f per part.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in [b'a', 0x1f] {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fnv1a64(&["a"]), hash);
        assert_ne!(fnv1a64(&["ab", "c"]), fnv1a64(&["a", "bc"]));
    }

    fn nested() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z\\[\\]{}\":,\\\\ ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\[{\":]{0,4}", inner, 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn depth_of_nested_arrays_agrees_with_serde_json(depth in 0usize..120, max in 0usize..120) {
            let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let parsed: Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(value_depth(&parsed), depth);
            let verdict = check_shape(body.as_bytes(), &limits(max, usize::MAX));
            prop_assert_eq!(verdict.is_ok(), depth <= max);
            if let Err(rejection) = verdict {
                prop_assert_eq!(rejection.code, RejectCode::TooDeep);
            }
        }

        #[test]
        fn shape_of_any_value_agrees_with_serde_json(value in nested(), pretty in any::<bool>()) {
            let body = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            prop_assert_eq!(measured(body.as_bytes()), (value_depth(&value), value_count(&value)));
        }

        #[test]
        fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = check_shape(&body, &limits(4, 16));
            let _ = decode::<Value>(&body, &limits(4, 16));
            let _ = path_at(&body, body.len());
        }
    }
}
