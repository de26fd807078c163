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
use domain::region::{Region, ResourceRequirement, Unit};
use domain::unit::{UnitState, UnitStatus};
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
    /// Every non-retired unit of a required type, as it stood, in the records written before
    /// [`BoardUnit`]: whole unit records. Empty in newer records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub board: Vec<UnitRecord>,
    /// Every non-retired unit of a required type, as it stood: what the recommendation reads of
    /// it. A booking against a roster of thousands writes one per unit of a required type, so
    /// this is kept short.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<BoardUnit>,
    /// The units it picked (own and by mutual aid), in the order it picked them.
    pub picked: Vec<String>,
}

/// What the recommendation reads of a unit: its id, call sign, type, home township and county,
/// position (and whether it was reported, and when) and status. Not its capabilities, crew,
/// incident or timers. Short keys: a decision holds one per unit of a required type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardUnit {
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "c")]
    pub call_sign: String,
    #[serde(rename = "t")]
    pub unit_type: String,
    #[serde(rename = "h")]
    pub home_township: String,
    #[serde(rename = "j")]
    pub jurisdiction: String,
    /// Latitude and longitude.
    #[serde(rename = "p")]
    pub position: [f64; 2],
    /// When the position was taken (Unix ms); see [`UnitRecord::position_at_unix_ms`].
    #[serde(rename = "a")]
    pub position_at_unix_ms: i64,
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub position_reported: bool,
    #[serde(rename = "s")]
    pub status: UnitStatus,
}

impl BoardUnit {
    pub fn of(record: &UnitRecord) -> BoardUnit {
        let out = BoardUnitOut::of(record);
        BoardUnit {
            id: out.id.to_string(),
            call_sign: out.call_sign.to_string(),
            unit_type: out.unit_type.to_string(),
            home_township: out.home_township.to_string(),
            jurisdiction: out.jurisdiction.to_string(),
            position: out.position,
            position_at_unix_ms: out.position_at_unix_ms,
            position_reported: out.position_reported,
            status: out.status,
        }
    }

    /// A unit record the recommendation sees exactly as it saw the unit (the fields it does not
    /// read are left empty).
    pub fn to_record(&self) -> UnitRecord {
        let mut state = UnitState::new(self.id.clone(), self.position_at_unix_ms);
        state.status = self.status;
        UnitRecord {
            unit: Unit {
                id: self.id.clone(),
                call_sign: self.call_sign.clone(),
                unit_type: self.unit_type.clone(),
                home_township: self.home_township.clone(),
                jurisdiction: self.jurisdiction.clone(),
                position: GeoPoint {
                    lat: self.position[0],
                    lon: self.position[1],
                },
                capabilities: Vec::new(),
                crew_size: 0,
            },
            position_at_unix_ms: self.position_at_unix_ms,
            position_reported: self.position_reported,
            state,
            retired: None,
            ack_due_at_unix_ms: None,
        }
    }
}

/// [`DecisionRecord`] as [`stage`] writes it, borrowing: the same fields, names and order (the
/// old `board` form is never written), so it reads back as a `DecisionRecord`.
#[derive(Serialize)]
struct DecisionRecordOut<'a> {
    incident_id: &'a str,
    at_unix_ms: i64,
    plan_id: &'a str,
    requirements: &'a [ResourceRequirement],
    location: GeoPoint,
    township_code: &'a str,
    lead_code: &'a str,
    grade: Option<Grade>,
    excluded: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    units: Vec<BoardUnitOut<'a>>,
    picked: Vec<String>,
}

/// [`BoardUnit`] borrowing from the unit record: the same short keys. What a board holds of a
/// unit is decided here ([`BoardUnitOut::of`]); `BoardUnit::of` copies it.
#[derive(Serialize)]
struct BoardUnitOut<'a> {
    #[serde(rename = "i")]
    id: &'a str,
    #[serde(rename = "c")]
    call_sign: &'a str,
    #[serde(rename = "t")]
    unit_type: &'a str,
    #[serde(rename = "h")]
    home_township: &'a str,
    #[serde(rename = "j")]
    jurisdiction: &'a str,
    #[serde(rename = "p")]
    position: [f64; 2],
    #[serde(rename = "a")]
    position_at_unix_ms: i64,
    #[serde(rename = "r", skip_serializing_if = "std::ops::Not::not")]
    position_reported: bool,
    #[serde(rename = "s")]
    status: UnitStatus,
}

impl<'a> BoardUnitOut<'a> {
    fn of(record: &'a UnitRecord) -> BoardUnitOut<'a> {
        BoardUnitOut {
            id: &record.unit.id,
            call_sign: &record.unit.call_sign,
            unit_type: &record.unit.unit_type,
            home_township: &record.unit.home_township,
            jurisdiction: &record.unit.jurisdiction,
            position: [record.unit.position.lat, record.unit.position.lon],
            position_at_unix_ms: record.position_at_unix_ms,
            position_reported: record.position_reported,
            status: record.state.status,
        }
    }
}

impl DecisionRecord {
    /// How many units the recommendation chose from.
    pub fn board_len(&self) -> usize {
        self.board.len() + self.units.len()
    }

    /// The board as unit records, whichever form the record holds.
    pub fn board_records(&self) -> Vec<UnitRecord> {
        self.board
            .iter()
            .cloned()
            .chain(self.units.iter().map(BoardUnit::to_record))
            .collect()
    }
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
    let mut excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
    excluded.sort();
    // Written from borrowed fields: the board of a roster of thousands is thousands of units,
    // and copying each one's strings into a `BoardUnit` first was 5-6 % of the booking's CPU.
    let record = DecisionRecordOut {
        incident_id,
        at_unix_ms: now_unix_ms,
        plan_id,
        requirements,
        location: place.location,
        township_code: &place.township_code,
        lead_code: &place.lead_code,
        grade: place.grade,
        excluded,
        units: records
            .iter()
            .filter(|r| !r.is_retired() && types.contains(r.unit.unit_type.as_str()))
            .map(BoardUnitOut::of)
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
                &record.board_records(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::recommend_options;

    const NOW: i64 = 1_795_000_000_000;

    /// The sample roster with some units busy, some moved by a live report (one of them long
    /// ago, so stale) and one retired: every field the recommendation reads varies.
    fn roster(region: &Region) -> Vec<UnitRecord> {
        region
            .units
            .iter()
            .enumerate()
            .map(|(i, unit)| {
                let mut record = UnitRecord::new(unit.clone(), NOW - 60_000, NOW - 60_000);
                match i % 5 {
                    1 => record.state.status = UnitStatus::OnScene,
                    2 => {
                        record.position_reported = true;
                        record.unit.position.lat += 0.05;
                        record.position_at_unix_ms = NOW - 30_000;
                    }
                    3 if i % 2 == 0 => {
                        record.position_reported = true;
                        record.position_at_unix_ms = NOW - 24 * 3_600_000;
                    }
                    4 if i == 9 => {
                        record.retired = Some(crate::registry::Retirement {
                            reason: "sold".into(),
                            at_unix_ms: NOW - 1,
                        })
                    }
                    _ => {}
                }
                record
            })
            .collect()
    }

    #[test]
    fn a_decision_replays_the_same_picks_from_its_short_board_as_from_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let region = Region::embedded_default();
        let options = recommend_options(&region, None);
        let policy = MutualAidPolicy::default();
        let records = roster(&region);
        let first = &region.units[0];
        let place = IncidentPlace {
            location: first.position,
            township_code: first.home_township.clone(),
            lead_code: first.jurisdiction.clone(),
            grade: Some(Grade::III),
        };
        let requirements = vec![
            ResourceRequirement {
                unit_type: "fire_engine".into(),
                count: 6,
            },
            ResourceRequirement {
                unit_type: "ambulance".into(),
                count: 3,
            },
        ];
        let excluded: HashSet<String> = [region.units[3].id.clone()].into();
        let recommended = recommend_units(
            &region,
            &options,
            &policy,
            &records,
            &excluded,
            &requirements,
            &place,
            NOW,
        );
        let picked: Vec<String> = recommended
            .assignments
            .iter()
            .map(|a| a.unit_id.clone())
            .collect();
        assert!(picked.len() >= 4, "{picked:?}");

        let mut commit = Commit::new();
        stage(
            &mut commit,
            &store,
            "live",
            "INC-1",
            "plan",
            &requirements,
            &place,
            &excluded,
            &records,
            picked.clone(),
            NOW,
        )
        .unwrap();
        store.commit(&commit).unwrap();
        let replayed = replay(&store, &region, &options, &policy, "live", "INC-1").unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].picked, picked);
        let types = ["fire_engine", "ambulance"];
        let on_board = records
            .iter()
            .filter(|r| !r.is_retired() && types.contains(&r.unit.unit_type.as_str()))
            .count();
        assert_eq!(replayed[0].record.board_len(), on_board);
        assert!(replayed[0].record.board.is_empty());
        // Written from borrowed fields, it reads back as the owned record would have been.
        let expected = DecisionRecord {
            incident_id: "INC-1".into(),
            at_unix_ms: NOW,
            plan_id: "plan".into(),
            requirements: requirements.clone(),
            location: place.location,
            township_code: place.township_code.clone(),
            lead_code: place.lead_code.clone(),
            grade: place.grade,
            excluded: vec![region.units[3].id.clone()],
            board: Vec::new(),
            units: records
                .iter()
                .filter(|r| !r.is_retired() && types.contains(&r.unit.unit_type.as_str()))
                .map(BoardUnit::of)
                .collect(),
            picked: picked.clone(),
        };
        assert_eq!(replayed[0].record, expected);
        assert!(expected.units.iter().any(|unit| unit.position_reported));
        assert!(expected.units.iter().any(|unit| !unit.position_reported));

        // A record written before the short board (whole unit records) replays as it did.
        let mut old = replayed[0].record.clone();
        old.board = records
            .iter()
            .filter(|r| !r.is_retired() && types.contains(&r.unit.unit_type.as_str()))
            .cloned()
            .collect();
        old.units.clear();
        let old_key = format!("{}{:020}", decisions_prefix("live", "INC-2"), 1);
        let mut commit = Commit::new();
        commit.put(old_key.clone(), &old).unwrap();
        store.commit(&commit).unwrap();
        let replayed_old = replay(&store, &region, &options, &policy, "live", "INC-2").unwrap();
        assert_eq!(replayed_old[0].picked, picked);
        assert_eq!(replayed_old[0].record.board_len(), on_board);

        // And the short board is a fraction of the whole records' size.
        let old_json = store.get_raw(&old_key).unwrap().unwrap();
        let mut new_json = Vec::new();
        store
            .visit_prefix_stored(&decisions_prefix("live", "INC-1"), |_, value| {
                new_json = value.as_bytes().to_vec();
                Ok(())
            })
            .unwrap();
        assert!(
            new_json.len() * 5 < old_json.len() * 2,
            "{} bytes short, {} bytes whole",
            new_json.len(),
            old_json.len()
        );
    }
}
