//! Validation of incident reports: every problem is named with the field and what to do about it,
//! and all problems are reported at once so an officer fixes them in one go.

use domain::event::IncidentReport;
use domain::geo::GeoPoint;
use domain::grade::Facts;
use domain::jurisdiction::Level;
use domain::region::Region;
use muster_proto::convert;
use muster_proto::v1::{ReportIncidentRequest, UpdateIncidentRequest};

/// Longest summary accepted, in bytes.
pub const SUMMARY_BYTES_MAX: usize = 4096;
/// Longest reporter name or request id, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Most townships one incident may span.
pub const TOWNSHIPS_MAX: usize = 32;

/// A valid report, ready to store.
pub struct ValidReport {
    pub report: IncidentReport,
    pub request_id: String,
}

/// Checks `request` against the region; returns all problems when there are any.
pub fn validate_report(
    request: &ReportIncidentRequest,
    region: &Region,
) -> Result<ValidReport, Vec<String>> {
    let mut problems = Vec::new();

    let kind = request.kind.trim();
    let sub_type = if kind.is_empty() {
        problems.push(format!(
            "kind is required: a sub-type code such as {}",
            example_kinds()
        ));
        None
    } else {
        let found = domain::class::sub_type(kind);
        if found.is_none() {
            problems.push(format!(
                "kind {kind:?} is not a known sub-type; known kinds: {}",
                all_kinds()
            ));
        }
        found
    };

    let township_code = request.township_code.trim();
    if township_code.is_empty() {
        problems.push("township_code is required: the code of the township where it happened (musterctl jurisdictions --level township)".into());
    } else {
        check_township("township_code", township_code, region, &mut problems);
    }
    if request.other_township_codes.len() > TOWNSHIPS_MAX {
        problems.push(format!(
            "other_township_codes has {} entries; at most {TOWNSHIPS_MAX}",
            request.other_township_codes.len()
        ));
    } else {
        for (index, code) in request.other_township_codes.iter().enumerate() {
            let code = code.trim();
            if code == township_code
                || request.other_township_codes[..index]
                    .iter()
                    .any(|c| c.trim() == code)
            {
                problems.push(format!(
                    "other_township_codes[{index}] {code:?} is listed twice"
                ));
            } else {
                check_township(
                    &format!("other_township_codes[{index}]"),
                    code,
                    region,
                    &mut problems,
                );
            }
        }
    }

    let location = match (request.lat, request.lon) {
        (Some(lat), Some(lon)) => {
            let point = GeoPoint { lat, lon };
            if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                problems.push(format!(
                    "lat is {lat}: latitude must be between -90 and 90 degrees"
                ));
            }
            if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                problems.push(format!(
                    "lon is {lon}: longitude must be between -180 and 180 degrees"
                ));
            }
            Some(point)
        }
        (None, None) => None,
        _ => {
            problems.push("lat and lon go together: give both or neither".into());
            None
        }
    };

    let facts = match convert::facts_from_wire(request.facts.as_ref()) {
        Ok(facts) => facts,
        Err(fact_problems) => {
            problems.extend(fact_problems);
            Default::default()
        }
    };

    if request.summary.len() > SUMMARY_BYTES_MAX {
        problems.push(format!(
            "summary is {} bytes; at most {SUMMARY_BYTES_MAX}",
            request.summary.len()
        ));
    }
    if request.reported_by.len() > NAME_BYTES_MAX {
        problems.push(format!(
            "reported_by is {} bytes; at most {NAME_BYTES_MAX}",
            request.reported_by.len()
        ));
    }
    let request_id = request.request_id.trim();
    if request_id.len() > NAME_BYTES_MAX || request_id.chars().any(|c| c.is_control()) {
        problems.push(format!(
            "request_id must be at most {NAME_BYTES_MAX} bytes without control characters"
        ));
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let sub_type = sub_type.expect("checked above");
    let (location, location_reported) = match location {
        Some(point) => (point, true),
        None => (
            region
                .township_centroid(township_code)
                .expect("checked above"),
            false,
        ),
    };
    let reported_by = request.reported_by.trim();
    Ok(ValidReport {
        report: IncidentReport {
            kind: sub_type.code.to_string(),
            class: sub_type.class,
            township_code: township_code.to_string(),
            other_township_codes: request
                .other_township_codes
                .iter()
                .map(|c| c.trim().to_string())
                .collect(),
            location,
            location_reported,
            facts,
            summary: request.summary.clone(),
            reported_by: if reported_by.is_empty() {
                "unknown officer".into()
            } else {
                reported_by.to_string()
            },
            warning: None,
        },
        request_id: request_id.to_string(),
    })
}

/// A valid update, ready to merge into the stored facts.
pub struct ValidUpdate {
    pub incident_id: String,
    /// Only the fields the update gave; the rest are `None` and keep their stored value.
    pub facts: Facts,
    pub summary: String,
    pub updated_by: String,
    pub request_id: String,
}

/// Checks an update; returns all problems when there are any.
pub fn validate_update(request: &UpdateIncidentRequest) -> Result<ValidUpdate, Vec<String>> {
    let mut problems = Vec::new();
    let incident_id = request.incident_id.trim();
    if incident_id.is_empty() {
        problems.push("incident_id is required: the id ReportIncident answered with".into());
    } else if incident_id.len() > NAME_BYTES_MAX || incident_id.chars().any(|c| c.is_control()) {
        problems.push(format!(
            "incident_id must be at most {NAME_BYTES_MAX} bytes without control characters"
        ));
    }
    let facts = match request.facts.as_ref() {
        None => {
            problems.push("facts is required: give at least one new fact".into());
            Facts::default()
        }
        Some(wire) => match convert::facts_from_wire(Some(wire)) {
            Ok(facts) if facts == Facts::default() => {
                problems.push("facts has no field set: give at least one new fact".into());
                facts
            }
            Ok(facts) => facts,
            Err(fact_problems) => {
                problems.extend(fact_problems);
                Facts::default()
            }
        },
    };
    let summary = request.summary.clone().unwrap_or_default();
    if summary.len() > SUMMARY_BYTES_MAX {
        problems.push(format!(
            "summary is {} bytes; at most {SUMMARY_BYTES_MAX}",
            summary.len()
        ));
    }
    if request.updated_by.len() > NAME_BYTES_MAX {
        problems.push(format!(
            "updated_by is {} bytes; at most {NAME_BYTES_MAX}",
            request.updated_by.len()
        ));
    }
    let request_id = request.request_id.trim();
    if request_id.len() > NAME_BYTES_MAX || request_id.chars().any(|c| c.is_control()) {
        problems.push(format!(
            "request_id must be at most {NAME_BYTES_MAX} bytes without control characters"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let updated_by = request.updated_by.trim();
    Ok(ValidUpdate {
        incident_id: incident_id.to_string(),
        facts,
        summary,
        updated_by: if updated_by.is_empty() {
            "unknown officer".into()
        } else {
            updated_by.to_string()
        },
        request_id: request_id.to_string(),
    })
}

/// The stored facts with every field `update` gives replaced.
pub fn merge_facts(stored: &Facts, update: &Facts) -> Facts {
    Facts {
        deaths: update.deaths.or(stored.deaths),
        missing: update.missing.or(stored.missing),
        serious_injuries: update.serious_injuries.or(stored.serious_injuries),
        direct_loss_cny: update.direct_loss_cny.or(stored.direct_loss_cny),
        magnitude: update.magnitude.or(stored.magnitude),
        people_affected: update.people_affected.or(stored.people_affected),
        people_evacuated: update.people_evacuated.or(stored.people_evacuated),
    }
}

fn check_township(field: &str, code: &str, region: &Region, problems: &mut Vec<String>) {
    match region.tree.get(code) {
        Some(j) if j.level == Level::Township => {}
        Some(j) => problems.push(format!(
            "{field} {code:?} is {} {} ({}), not a township: give the township where it happened (musterctl jurisdictions --level township)",
            article(j.level.as_str()),
            j.level.as_str(),
            j.name
        )),
        None => problems.push(format!(
            "{field} {code:?} is not a township of this region (list them with: musterctl jurisdictions --level township)"
        )),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn example_kinds() -> &'static str {
    "accident.hazardous_chemicals, natural.earthquake or public_health.epidemic"
}

fn all_kinds() -> String {
    domain::class::sub_types()
        .iter()
        .map(|s| s.code)
        .collect::<Vec<_>>()
        .join(", ")
}
