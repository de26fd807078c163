//! Byte layouts of stored values: `[format version][crc32 of body, LE][body]`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

const VALUE_FORMAT_JSON: u8 = 1;
const OUTBOX_FORMAT: u8 = 2;
/// Outbox records from before trace context.
const OUTBOX_FORMAT_V1: u8 = 1;

/// Encodes a state value as versioned, checksummed JSON.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(value)?;
    Ok(frame(VALUE_FORMAT_JSON, &body))
}

/// Decodes a value written by [`encode_value`], checking version and checksum.
pub fn decode_value<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    let corrupt = |problem: String| Error::Corrupt {
        key: key.to_string(),
        problem,
    };
    let body = unframe(VALUE_FORMAT_JSON, bytes).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|error| corrupt(format!("undecodable JSON: {error}")))
}

fn frame(format: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(format);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn unframe(format: u8, bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 5 {
        return Err(format!(
            "{} bytes is shorter than the 5-byte header",
            bytes.len()
        ));
    }
    if bytes[0] != format {
        return Err(format!("format {} where {format} was expected", bytes[0]));
    }
    let expected = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let body = &bytes[5..];
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(format!(
            "checksum {actual:08x} does not match stored {expected:08x}"
        ));
    }
    Ok(body)
}

/// Outbox record body, format 2: `[u16 msg id len][msg id][u16 subject len][subject]
/// [u16 traceparent len][traceparent][payload]` (an empty traceparent: none). Format 1 records
/// (before trace context) have no traceparent field and are still read.
pub(crate) fn encode_outbox(
    msg_id: &str,
    subject: &str,
    traceparent: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let traceparent = traceparent.unwrap_or("");
    let mut body =
        Vec::with_capacity(6 + msg_id.len() + subject.len() + traceparent.len() + payload.len());
    for field in [
        msg_id.as_bytes(),
        subject.as_bytes(),
        traceparent.as_bytes(),
    ] {
        body.extend_from_slice(&(field.len() as u16).to_le_bytes());
        body.extend_from_slice(field);
    }
    body.extend_from_slice(payload);
    frame(OUTBOX_FORMAT, &body)
}

/// (msg id, subject, traceparent, payload) of an outbox record of format 1 or 2.
pub(crate) fn decode_outbox(
    bytes: &[u8],
) -> Result<(String, String, Option<String>, Vec<u8>), String> {
    let format = match bytes.first() {
        Some(&OUTBOX_FORMAT_V1) => OUTBOX_FORMAT_V1,
        _ => OUTBOX_FORMAT,
    };
    let mut rest = unframe(format, bytes)?;
    let mut take_str = || -> Result<String, String> {
        if rest.len() < 2 {
            return Err("truncated length".into());
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + len {
            return Err("truncated field".into());
        }
        let field = String::from_utf8(rest[2..2 + len].to_vec()).map_err(|e| e.to_string())?;
        rest = &rest[2 + len..];
        Ok(field)
    };
    let msg_id = take_str()?;
    let subject = take_str()?;
    let traceparent = if format == OUTBOX_FORMAT_V1 {
        None
    } else {
        Some(take_str()?).filter(|tp| !tp.is_empty())
    };
    Ok((msg_id, subject, traceparent, rest.to_vec()))
}

/// A 64-bit random id in hex, from the standard library's randomly keyed hasher.
pub(crate) fn random_hex_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_records_round_trip_with_and_without_trace_and_format_1_still_reads() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let record = encode_outbox("i-1", "muster.live.incident.X.reported", Some(tp), b"{}");
        assert_eq!(
            decode_outbox(&record).unwrap(),
            (
                "i-1".to_string(),
                "muster.live.incident.X.reported".to_string(),
                Some(tp.to_string()),
                b"{}".to_vec()
            )
        );
        let record = encode_outbox("i-2", "s", None, b"p");
        assert_eq!(decode_outbox(&record).unwrap().2, None);
        // A record written before trace context existed.
        let mut body = Vec::new();
        for field in [&b"i-3"[..], &b"s"[..]] {
            body.extend_from_slice(&(field.len() as u16).to_le_bytes());
            body.extend_from_slice(field);
        }
        body.extend_from_slice(b"payload");
        let old = frame(OUTBOX_FORMAT_V1, &body);
        assert_eq!(
            decode_outbox(&old).unwrap(),
            ("i-3".into(), "s".into(), None, b"payload".to_vec())
        );
    }
}
