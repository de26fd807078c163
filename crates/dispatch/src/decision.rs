//! The inputs of every recommendation dispatch booked for an incident, kept so that the decision
//! can be replayed (`ReplayRecommendations`, `musterctl replay`): the requirements it searched
//! for, the incident's place, grade and lead, the units barred from it, and the board it chose
//! from — the records of every unit of a required type, as they stood — with the units it picked.
//!
//! Stored in the booking's own commit (`decision/<ns>/<incident>/<arrival>`), so a decision and
//! its record are never apart.
//!
//! The board is not copied into each decision: a roster of thousands made every booking write
//! thousands of units. The assigner keeps a [`BoardLog`] per namespace, a chain of board entries
//! (`board/<ns>/<seq>`): now and then a snapshot of every non-retired unit, and between them
//! deltas of the units that changed since the entry before. A decision names the entry that
//! holds its board ([`DecisionRecord::board_entry`]), written in the same commit when the
//! board changed since the last one; replay rebuilds the board from the chain
//! ([`load_board`]) and keeps the units of the required types, as the recommendation did.

use std::collections::{BTreeMap, HashSet};

use domain::dispatch::RecommendOptions;
use domain::geo::GeoPoint;
use domain::grade::Grade;
use domain::mutual_aid::MutualAidPolicy;
use domain::region::{Region, ResourceRequirement, Unit};
use domain::unit::{UnitState, UnitStatus};
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

use crate::driver::{IncidentPlace, recommend_units};
use crate::registry::{UnitBoard, UnitRecord};

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
    /// it, in the records written before the board log. Empty in newer records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<BoardUnit>,
    /// The board entry (`board/<ns>/<seq>`) holding the board the recommendation chose from:
    /// every non-retired unit of the namespace, of which replay keeps the required types.
    /// `None` in records written before the board log (they hold `units` or `board`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_entry: Option<u64>,
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
    /// What the recommendation reads of `record`.
    pub fn of(record: &UnitRecord) -> BoardUnit {
        BoardUnit {
            id: record.unit.id.clone(),
            call_sign: record.unit.call_sign.clone(),
            unit_type: record.unit.unit_type.clone(),
            home_township: record.unit.home_township.clone(),
            jurisdiction: record.unit.jurisdiction.clone(),
            position: [record.unit.position.lat, record.unit.position.lon],
            position_at_unix_ms: record.position_at_unix_ms,
            position_reported: record.position_reported,
            status: record.state.status,
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
/// older board forms are never written), so it reads back as a `DecisionRecord`.
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
    board_entry: u64,
    picked: Vec<String>,
}

impl DecisionRecord {
    /// The board the recommendation chose from, as unit records, whichever form the record
    /// holds: read from the board log for a record that names an entry.
    pub fn board_records(
        &self,
        store: &Store,
        namespace: &str,
    ) -> Result<Vec<UnitRecord>, store::Error> {
        let mut records: Vec<UnitRecord> = self
            .board
            .iter()
            .cloned()
            .chain(self.units.iter().map(BoardUnit::to_record))
            .collect();
        if let Some(seq) = self.board_entry {
            let types: HashSet<&str> = self
                .requirements
                .iter()
                .map(|r| r.unit_type.as_str())
                .collect();
            records.extend(
                load_board(store, namespace, seq)?
                    .iter()
                    .filter(|unit| types.contains(unit.unit_type.as_str()))
                    .map(BoardUnit::to_record),
            );
        }
        Ok(records)
    }
}

/// `board/<ns>/<seq, 20 digits>`: one entry of a namespace's board log.
pub fn board_key(namespace: &str, seq: u64) -> String {
    format!("board/{namespace}/{seq:020}")
}

/// One entry of a board log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BoardEntry {
    /// Every non-retired unit of the namespace, in id order: a chain starts here.
    Snapshot {
        at_unix_ms: i64,
        units: Vec<BoardUnit>,
    },
    /// The units that changed since entry `prev` of the chain that starts at snapshot `base`.
    Delta {
        at_unix_ms: i64,
        base: u64,
        prev: u64,
        /// Units new to the board or read differently, as they stand now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<BoardUnit>,
        /// Units that left the board (retired, or their record deleted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
    },
}

/// The fewest units written in deltas after which the next entry is a snapshot again (or the
/// board's size, if larger): replay reads at most about twice the board, and the log stores
/// at most about twice the units that changed.
pub const BOARD_SNAPSHOT_AFTER_MIN: usize = 64;

/// The board as of entry `seq` of `namespace`'s log: every non-retired unit, in id order.
pub fn load_board(
    store: &Store,
    namespace: &str,
    seq: u64,
) -> Result<Vec<BoardUnit>, store::Error> {
    let key = board_key(namespace, seq);
    let missing = |key: String| store::Error::Corrupt {
        key,
        problem: "a decision names this board entry, but it is not stored".into(),
    };
    let base = match store.get::<BoardEntry>(&key)? {
        None => return Err(missing(key)),
        Some(BoardEntry::Snapshot { units, .. }) => return Ok(units),
        Some(BoardEntry::Delta { base, .. }) => base,
    };
    let base_key = board_key(namespace, base);
    let mut units: BTreeMap<String, BoardUnit> = match store.get::<BoardEntry>(&base_key)? {
        None => return Err(missing(base_key)),
        Some(BoardEntry::Snapshot { units, .. }) => units
            .into_iter()
            .map(|unit| (unit.id.clone(), unit))
            .collect(),
        Some(BoardEntry::Delta { .. }) => {
            return Err(store::Error::Corrupt {
                key: base_key,
                problem: "a board chain must start at a snapshot, and this entry is a delta".into(),
            });
        }
    };
    let mut last = base;
    let entries: Vec<(String, BoardEntry)> = store.scan_range(
        &board_key(namespace, base + 1),
        &board_key(namespace, seq.saturating_add(1)),
        usize::MAX,
    )?;
    for (key, entry) in entries {
        // Only this chain's deltas: a chain ends where the next snapshot starts one.
        let BoardEntry::Delta {
            base: of_chain,
            prev,
            changed,
            removed,
            ..
        } = entry
        else {
            continue;
        };
        if of_chain != base {
            continue;
        }
        if prev != last {
            return Err(store::Error::Corrupt {
                key,
                problem: format!(
                    "this board delta follows entry {prev}, but its chain's entry before it is                      {last}"
                ),
            });
        }
        for id in removed {
            units.remove(&id);
        }
        for unit in changed {
            units.insert(unit.id.clone(), unit);
        }
        last = key
            .rsplit('/')
            .next()
            .and_then(|seq| seq.parse().ok())
            .unwrap_or(last);
    }
    if last != seq {
        return Err(store::Error::Corrupt {
            key,
            problem: format!("its board chain from snapshot {base} stops at entry {last}"),
        });
    }
    Ok(units.into_values().collect())
}

/// The board log of one namespace, as its one writer (the assigner) keeps it: the last
/// committed entry, the board as of it, and the entry staged in a commit not known to be
/// committed yet.
///
/// Whether a staged entry was committed is read from the store at the next booking (a commit
/// that conflicted or failed leaves no entry), so the log never gets ahead of what is stored;
/// the changes of an entry that was not committed go into the next one. A log starts (and,
/// after its last entry vanished with a drill's retention, starts again) with a snapshot.
#[derive(Debug, Default)]
pub struct BoardLog {
    committed: Option<Chain>,
    staged: Option<Staged>,
}

#[derive(Debug)]
struct Chain {
    /// The last entry and the snapshot its chain starts at.
    seq: u64,
    base: u64,
    /// The unit board's generation the last entry was taken at.
    generation: u64,
    /// The board as of `seq`.
    units: BTreeMap<String, BoardUnit>,
    /// Units written in deltas since the snapshot.
    since_snapshot: usize,
}

#[derive(Debug)]
struct Staged {
    seq: u64,
    generation: u64,
    /// `Some(units)` for a snapshot; otherwise the delta's changes.
    snapshot: Option<Vec<BoardUnit>>,
    changed: Vec<BoardUnit>,
    removed: Vec<String>,
}

impl BoardLog {
    /// The entry holding `board` as it stands (refreshed for this booking): the last one, when
    /// nothing the recommendation reads changed since it was taken, or a new one staged in
    /// `commit`.
    pub fn stage(
        &mut self,
        commit: &mut Commit,
        store: &Store,
        namespace: &str,
        board: &UnitBoard,
        now_unix_ms: i64,
    ) -> Result<u64, store::Error> {
        self.settle(store, namespace)?;
        let generation = board.generation();
        let records = board.records();
        let chain = match self.committed.as_mut() {
            Some(chain)
                if chain.since_snapshot < chain.units.len().max(BOARD_SNAPSHOT_AFTER_MIN) =>
            {
                chain
            }
            _ => {
                let units: Vec<BoardUnit> = records
                    .iter()
                    .filter(|record| !record.is_retired())
                    .map(BoardUnit::of)
                    .collect();
                let seq = store.generate_id()?;
                commit.put(
                    board_key(namespace, seq),
                    &BoardEntry::Snapshot {
                        at_unix_ms: now_unix_ms,
                        units: units.clone(),
                    },
                )?;
                self.staged = Some(Staged {
                    seq,
                    generation,
                    snapshot: Some(units),
                    changed: Vec::new(),
                    removed: Vec::new(),
                });
                return Ok(seq);
            }
        };
        let (candidates, maybe_removed) = board.changed_since(chain.generation);
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for record in candidates {
            if record.is_retired() {
                if chain.units.contains_key(&record.unit.id) {
                    removed.push(record.unit.id.clone());
                }
                continue;
            }
            // Only what the recommendation reads counts: a record stored again with a new
            // acknowledgement deadline, say, is no change to the board.
            let unit = BoardUnit::of(record);
            if chain.units.get(&unit.id) != Some(&unit) {
                changed.push(unit);
            }
        }
        if maybe_removed {
            // Records are in id order: whatever the chain holds that is not among them left.
            for id in chain.units.keys() {
                let stored = records
                    .binary_search_by(|record| record.unit.id.as_str().cmp(id))
                    .is_ok();
                if !stored && !removed.contains(id) {
                    removed.push(id.clone());
                }
            }
        }
        if changed.is_empty() && removed.is_empty() {
            chain.generation = generation;
            return Ok(chain.seq);
        }
        let seq = store.generate_id()?;
        commit.put(
            board_key(namespace, seq),
            &BoardEntry::Delta {
                at_unix_ms: now_unix_ms,
                base: chain.base,
                prev: chain.seq,
                changed: changed.clone(),
                removed: removed.clone(),
            },
        )?;
        self.staged = Some(Staged {
            seq,
            generation,
            snapshot: None,
            changed,
            removed,
        });
        Ok(seq)
    }

    /// Takes in the staged entry if its commit stored it, and forgets the chain if its last
    /// entry is no longer stored.
    fn settle(&mut self, store: &Store, namespace: &str) -> Result<(), store::Error> {
        if let Some(staged) = self.staged.take()
            && store.contains_key(&board_key(namespace, staged.seq))?
        {
            self.take_in(staged);
            return Ok(());
        }
        // Nothing staged, or its commit conflicted or failed (what it held goes into the next
        // entry). The chain's last entry may have gone meanwhile, with a drill's retention.
        if let Some(chain) = &self.committed
            && !store.contains_key(&board_key(namespace, chain.seq))?
        {
            self.committed = None;
        }
        Ok(())
    }

    fn take_in(&mut self, staged: Staged) {
        match (staged.snapshot, self.committed.as_mut()) {
            (Some(units), _) => {
                self.committed = Some(Chain {
                    seq: staged.seq,
                    base: staged.seq,
                    generation: staged.generation,
                    units: units
                        .into_iter()
                        .map(|unit| (unit.id.clone(), unit))
                        .collect(),
                    since_snapshot: 0,
                });
            }
            (None, Some(chain)) => {
                chain.since_snapshot += staged.changed.len() + staged.removed.len();
                for id in staged.removed {
                    chain.units.remove(&id);
                }
                for unit in staged.changed {
                    chain.units.insert(unit.id.clone(), unit);
                }
                chain.seq = staged.seq;
                chain.generation = staged.generation;
            }
            (None, None) => {}
        }
    }
}

/// `decision/<ns>/<incident id>/`.
pub fn decisions_prefix(namespace: &str, incident_id: &str) -> String {
    format!("decision/{namespace}/{incident_id}/")
}

/// Adds the decision to the booking's commit; `board_entry` is the board log's entry for the
/// board it chose from ([`BoardLog::stage`]).
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
    board_entry: u64,
    picked: Vec<String>,
    now_unix_ms: i64,
) -> Result<(), store::Error> {
    let mut excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
    excluded.sort();
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
        board_entry,
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
    /// How many units the recommendation chose from.
    pub board_len: usize,
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
    records
        .into_iter()
        .map(|(_, record)| {
            let board = record.board_records(store, namespace)?;
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
                &board,
                &excluded,
                &record.requirements,
                &place,
                record.at_unix_ms,
            );
            Ok(Replayed {
                board_len: board.len(),
                picked: recommended
                    .assignments
                    .iter()
                    .map(|a| a.unit_id.clone())
                    .collect(),
                record,
            })
        })
        .collect()
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

    /// Stores `records` as the namespace's unit records.
    fn store_units(store: &Store, records: &[UnitRecord]) {
        let mut commit = Commit::new();
        for record in records {
            commit
                .put(crate::registry::unit_key("live", &record.unit.id), record)
                .unwrap();
        }
        store.commit(&commit).unwrap();
    }

    /// What a decision taken now must replay from: every non-retired unit, as stored.
    fn expected_board(store: &Store) -> Vec<BoardUnit> {
        crate::registry::load_all(store, "live")
            .unwrap()
            .iter()
            .filter(|record| !record.is_retired())
            .map(BoardUnit::of)
            .collect()
    }

    #[test]
    fn a_decision_replays_the_same_picks_from_its_board_entry_as_from_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let region = Region::embedded_default();
        let options = recommend_options(&region, None);
        let policy = MutualAidPolicy::default();
        let records = roster(&region);
        store_units(&store, &records);
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

        let mut board = UnitBoard::default();
        board.refresh(&store, "live").unwrap();
        let mut log = BoardLog::default();
        let mut commit = Commit::new();
        let entry = log.stage(&mut commit, &store, "live", &board, NOW).unwrap();
        stage(
            &mut commit,
            &store,
            "live",
            "INC-1",
            "plan",
            &requirements,
            &place,
            &excluded,
            entry,
            picked.clone(),
            NOW,
        )
        .unwrap();
        store.commit(&commit).unwrap();
        let replayed = replay(&store, &region, &options, &policy, "live", "INC-1").unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].picked, picked);
        let types = ["fire_engine", "ambulance"];
        let on_board = || {
            records
                .iter()
                .filter(|r| !r.is_retired() && types.contains(&r.unit.unit_type.as_str()))
        };
        assert_eq!(replayed[0].board_len, on_board().count());
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
            units: Vec::new(),
            board_entry: Some(entry),
            picked: picked.clone(),
        };
        assert_eq!(replayed[0].record, expected);
        // The board it replays from is what the recommendation read of each unit.
        let from_log: Vec<BoardUnit> = replayed[0]
            .record
            .board_records(&store, "live")
            .unwrap()
            .iter()
            .map(BoardUnit::of)
            .collect();
        // In id order, as the unit board holds them (the roster here is in the region's order).
        let mut whole: Vec<BoardUnit> = on_board().map(BoardUnit::of).collect();
        whole.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(from_log, whole);
        assert!(from_log.iter().any(|unit| unit.position_reported));
        assert!(from_log.iter().any(|unit| !unit.position_reported));

        // Records written before the board log replay as they did: the board inline, in short
        // form or as whole unit records.
        for (incident, inline) in [("INC-2", true), ("INC-3", false)] {
            let mut old = expected.clone();
            old.board_entry = None;
            if inline {
                old.units = on_board().map(BoardUnit::of).collect();
            } else {
                old.board = on_board().cloned().collect();
            }
            let mut commit = Commit::new();
            commit
                .put(
                    format!("{}{:020}", decisions_prefix("live", incident), 1),
                    &old,
                )
                .unwrap();
            store.commit(&commit).unwrap();
            let replayed_old =
                replay(&store, &region, &options, &policy, "live", incident).unwrap();
            assert_eq!(replayed_old[0].picked, picked, "{incident}");
            assert_eq!(replayed_old[0].board_len, on_board().count(), "{incident}");
        }
    }

    /// A small deterministic generator for the board log's test.
    struct Steps(u64);

    impl Steps {
        fn next(&mut self, below: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % below
        }
    }

    #[test]
    fn a_board_log_gives_back_each_entry_s_board_across_changes_lost_commits_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let region = Region::embedded_default();
        store_units(&store, &roster(&region));
        let mut board = UnitBoard::default();
        let mut log = BoardLog::default();
        let mut steps = Steps(7);
        // Each committed entry, with the board it must give back.
        let mut kept: Vec<(u64, Vec<BoardUnit>)> = Vec::new();
        let mut unchanged_bookings = 0;
        let mut lost = 0;
        for step in 0..400 {
            // Between bookings units move, change status, join, retire and (rarely) vanish.
            let mut records = crate::registry::load_all(&store, "live").unwrap();
            let mut commit = Commit::new();
            for _ in 0..steps.next(4) {
                let at = steps.next(records.len());
                let record = &mut records[at];
                let key = crate::registry::unit_key("live", &record.unit.id);
                match steps.next(20) {
                    0..=7 => {
                        record.state.status = if record.state.status == UnitStatus::Available {
                            UnitStatus::Dispatched
                        } else {
                            UnitStatus::Available
                        };
                    }
                    8..=14 => {
                        record.unit.position.lon += 0.001;
                        record.position_reported = true;
                        record.position_at_unix_ms = NOW + step;
                    }
                    15 => {
                        // Stored again with no change the recommendation reads.
                        record.state.since_unix_ms += 1;
                    }
                    16 => {
                        record.retired = Some(crate::registry::Retirement {
                            reason: "worn out".into(),
                            at_unix_ms: NOW + step,
                        });
                    }
                    17 => {
                        record.retired = None;
                    }
                    18 => {
                        let mut unit = record.unit.clone();
                        unit.id = format!("NEW-{step}");
                        let new = UnitRecord::new(unit, NOW, NOW);
                        commit
                            .put(crate::registry::unit_key("live", &new.unit.id), &new)
                            .unwrap();
                        continue;
                    }
                    _ => {
                        commit.delete(key);
                        continue;
                    }
                }
                commit.put(key, &*record).unwrap();
            }
            store.commit(&commit).unwrap();

            board.refresh(&store, "live").unwrap();
            let mut booking = Commit::new();
            let before = store
                .scan_prefix::<BoardEntry>("board/live/")
                .unwrap()
                .len();
            let entry = log
                .stage(&mut booking, &store, "live", &board, NOW + step)
                .unwrap();
            if steps.next(8) == 0 {
                // A booking whose commit conflicted: its entry is never stored.
                lost += 1;
                continue;
            }
            store.commit(&booking).unwrap();
            let after = store
                .scan_prefix::<BoardEntry>("board/live/")
                .unwrap()
                .len();
            if kept.last().is_some_and(|(last, _)| *last == entry) {
                unchanged_bookings += 1;
                assert_eq!(before, after, "step {step}: no change, no entry");
            }
            kept.push((entry, expected_board(&store)));
        }
        for (entry, expected) in &kept {
            assert_eq!(
                &load_board(&store, "live", *entry).unwrap(),
                expected,
                "entry {entry}"
            );
        }
        let entries: Vec<(String, BoardEntry)> = store.scan_prefix("board/live/").unwrap();
        let snapshots = entries
            .iter()
            .filter(|(_, entry)| matches!(entry, BoardEntry::Snapshot { .. }))
            .count();
        assert!(
            snapshots >= 3,
            "{snapshots} snapshots in {} entries",
            entries.len()
        );
        assert!(entries.len() > snapshots * 10, "{} entries", entries.len());
        assert!(
            unchanged_bookings > 0 && lost > 10,
            "{unchanged_bookings} {lost}"
        );
        // A delta holds the units that changed, not the board.
        let delta_units: usize = entries
            .iter()
            .map(|(_, entry)| match entry {
                BoardEntry::Delta { changed, .. } => changed.len(),
                BoardEntry::Snapshot { .. } => 0,
            })
            .max()
            .unwrap();
        assert!(delta_units <= 8, "{delta_units}");

        // The log gone (a drill's retention deletes every key of the namespace): the next
        // booking starts a chain again, from a snapshot.
        let mut commit = Commit::new();
        for (key, _) in &entries {
            commit.delete(key.clone());
        }
        store.commit(&commit).unwrap();
        board.refresh(&store, "live").unwrap();
        let mut booking = Commit::new();
        let entry = log
            .stage(&mut booking, &store, "live", &board, NOW + 1_000)
            .unwrap();
        store.commit(&booking).unwrap();
        assert!(matches!(
            store.get::<BoardEntry>(&board_key("live", entry)).unwrap(),
            Some(BoardEntry::Snapshot { .. })
        ));
        assert_eq!(
            load_board(&store, "live", entry).unwrap(),
            expected_board(&store)
        );

        // An entry the chain cannot reach is a clear error, not a wrong board.
        let mut commit = Commit::new();
        commit
            .put(
                board_key("live", entry + 10),
                &BoardEntry::Delta {
                    at_unix_ms: NOW,
                    base: entry,
                    prev: entry + 5,
                    changed: Vec::new(),
                    removed: vec!["X".into()],
                },
            )
            .unwrap();
        store.commit(&commit).unwrap();
        let error = load_board(&store, "live", entry + 10)
            .unwrap_err()
            .to_string();
        assert!(error.contains("follows entry"), "{error}");
        let error = load_board(&store, "live", entry + 11)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not stored"), "{error}");
    }
}
