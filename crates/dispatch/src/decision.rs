//! The inputs of every recommendation dispatch booked for an incident, kept so that the decision
//! can be replayed (`ReplayRecommendations`, `musterctl replay`): the requirements it searched
//! for, the incident's place, grade and lead, the units barred from it, and the board it chose
//! from — the records of every unit of a required type, as they stood — with the units it picked.
//!
//! Stored in the booking's own commit (`decision/<ns>/<incident>/<arrival>`), so a decision and
//! its record are never apart. Only units of the required types are kept: the recommendation
//! never looks at others.

use std::collections::HashSet;

use domain::dispatch::RecommendOptions;
use domain::geo::GeoPoint;
use domain::grade::Grade;
use domain::mutual_aid::MutualAidPolicy;
use domain::region::{Region, ResourceRequirement};
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

use crate::driver::{IncidentPlace, recommend_units};
use crate::registry::UnitRecord;

/// One recommendation as it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub incident_id: String,
    pub at_unix_ms: i64,
    pub plan_id: String,
    pub requirements: Vec<ResourceRequirement>,
    pub location: GeoPoint,
    pub township_code: String,
    pub lead_code: String,
    pub grade: Option<Grade>,
    /// Units that may not be offered to the incident again (declined, timed out), sorted.
    pub excluded: Vec<String>,
    /// Every non-retired unit of a required type, as it stood.
    pub board: Vec<UnitRecord>,
    /// The units it picked (own and by mutual aid), in the order it picked them.
    pub picked: Vec<String>,
}

/// `decision/<ns>/<incident id>/`.
pub fn decisions_prefix(namespace: &str, incident_id: &str) -> String {
    format!("decision/{namespace}/{incident_id}/")
}

/// Adds the decision to the booking's commit.
#[allow(clippy::too_many_arguments)]
pub fn stage(
    commit: &mut Commit,
    store: &Store,
    namespace: &str,
    incident_id: &str,
    plan_id: &str,
    requirements: &[ResourceRequirement],
    place: &IncidentPlace,
    excluded: &HashSet<String>,
    records: &[UnitRecord],
    picked: Vec<String>,
    now_unix_ms: i64,
) -> Result<(), store::Error> {
    let types: HashSet<&str> = requirements.iter().map(|r| r.unit_type.as_str()).collect();
    let mut excluded: Vec<String> = excluded.iter().cloned().collect();
    excluded.sort();
    let record = DecisionRecord {
        incident_id: incident_id.to_string(),
        at_unix_ms: now_unix_ms,
        plan_id: plan_id.to_string(),
        requirements: requirements.to_vec(),
        location: place.location,
        township_code: place.township_code.clone(),
        lead_code: place.lead_code.clone(),
        grade: place.grade,
        excluded,
        board: records
            .iter()
            .filter(|r| !r.is_retired() && types.contains(r.unit.unit_type.as_str()))
            .cloned()
            .collect(),
        picked,
    };
    let arrival = store.generate_id()?;
    commit.put(
        format!("{}{arrival:020}", decisions_prefix(namespace, incident_id)),
        &record,
    )?;
    Ok(())
}

/// A recorded decision next to what the current code and configuration pick from its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub record: DecisionRecord,
    pub picked: Vec<String>,
}

/// Re-runs every recorded decision of the incident, oldest first.
pub fn replay(
    store: &Store,
    region: &Region,
    options: &RecommendOptions,
    policy: &MutualAidPolicy,
    namespace: &str,
    incident_id: &str,
) -> Result<Vec<Replayed>, store::Error> {
    let records: Vec<(String, DecisionRecord)> =
        store.scan_prefix(&decisions_prefix(namespace, incident_id))?;
    Ok(records
        .into_iter()
        .map(|(_, record)| {
            let place = IncidentPlace {
                location: record.location,
                township_code: record.township_code.clone(),
                lead_code: record.lead_code.clone(),
                grade: record.grade,
            };
            let excluded: HashSet<String> = record.excluded.iter().cloned().collect();
            let recommended = recommend_units(
                region,
                options,
                policy,
                &record.board,
                &excluded,
                &record.requirements,
                &place,
                record.at_unix_ms,
            );
            Replayed {
                picked: recommended
                    .assignments
                    .iter()
                    .map(|a| a.unit_id.clone())
                    .collect(),
                record,
            }
        })
        .collect())
}
