//! The unit registry in dispatch's sled: one record per unit under `unit/<ns>/<id>` holding the
//! registry entry, the last position and the lifecycle state. Every change goes through
//! [`UnitRecord`]'s methods, is written with a compare-and-swap on the record's raw bytes and
//! carries its `UnitEvent` in the same commit.

use domain::geo::GeoPoint;
use domain::region::{Region, Unit};
use domain::unit::{StatusChange, TransitionError, UnitEvent, UnitState};
use muster_proto::convert_unit::{UnitChange, UnitEventRecord, encode_unit_event};
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

/// Positions older than this are not used for recommendations: 30 minutes.
pub const STALE_POSITION_AFTER_MS_DEFAULT: i64 = 30 * 60 * 1000;
/// How far in the future a position fix may claim to be (clock skew): 5 minutes.
pub const POSITION_FUTURE_SKEW_MS_MAX: i64 = 5 * 60 * 1000;
/// Longest call sign, in characters.
pub const CALL_SIGN_CHARS_MAX: usize = 32;
/// Most capabilities per unit.
pub const CAPABILITIES_LEN_MAX: usize = 16;
/// Longest capability or unit type name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Largest crew.
pub const CREW_SIZE_MAX: u32 = 100;
/// Longest retirement reason, in characters.
pub const REASON_CHARS_MAX: usize = 200;

/// Why a unit left the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retirement {
    pub reason: String,
    pub at_unix_ms: i64,
}

/// One unit as dispatch stores it. `unit.position` is the last known position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: Unit,
    pub position_at_unix_ms: i64,
    /// False while the position is the unit's station from the registry: a parked unit without a
    /// tracker does not go stale. True once a live position has been reported.
    #[serde(default)]
    pub position_reported: bool,
    pub state: UnitState,
    /// Set once retired; the record stays so that the id is not seeded or registered again.
    #[serde(default)]
    pub retired: Option<Retirement>,
    /// While dispatched: when the unit must acknowledge by. Its timer record is
    /// [`crate::assignment::ack_timer_key`] of this time, the incident and the unit.
    #[serde(default)]
    pub ack_due_at_unix_ms: Option<i64>,
}

/// `unit/<ns>/<unit id>`.
pub fn unit_key(namespace: &str, unit_id: &str) -> String {
    format!("unit/{namespace}/{unit_id}")
}

impl UnitRecord {
    /// A new, available unit whose position was taken at `position_at_unix_ms`.
    pub fn new(unit: Unit, position_at_unix_ms: i64, now_unix_ms: i64) -> UnitRecord {
        UnitRecord {
            state: UnitState::new(unit.id.clone(), now_unix_ms),
            unit,
            position_at_unix_ms,
            position_reported: false,
            retired: None,
            ack_due_at_unix_ms: None,
        }
    }

    /// The time the position counts as taken at for staleness: `now` for a station position that
    /// was never replaced by a live report, else the report's time.
    pub fn position_age_basis_unix_ms(&self, now_unix_ms: i64) -> i64 {
        if self.position_reported {
            self.position_at_unix_ms
        } else {
            now_unix_ms
        }
    }

    /// Applies a lifecycle event through the domain state machine.
    pub fn apply(
        &mut self,
        event: &UnitEvent,
        now_unix_ms: i64,
    ) -> Result<StatusChange, TransitionError> {
        self.state.apply(event, now_unix_ms)
    }

    /// Takes a newer position; returns false (and changes nothing) for an older or equal one.
    pub fn report_position(&mut self, position: GeoPoint, at_unix_ms: i64) -> bool {
        if at_unix_ms <= self.position_at_unix_ms {
            return false;
        }
        self.unit.position = position;
        self.position_at_unix_ms = at_unix_ms;
        self.position_reported = true;
        true
    }

    pub fn is_retired(&self) -> bool {
        self.retired.is_some()
    }
}

/// Checks a position report: coordinates in range and a time not far in the future.
pub fn validate_position(
    position: GeoPoint,
    at_unix_ms: i64,
    now_unix_ms: i64,
) -> Result<(), String> {
    if let Some(problem) = position.range_problem() {
        return Err(problem);
    }
    if at_unix_ms <= 0 {
        return Err(format!(
            "at_unix_ms {at_unix_ms} is not a time; give the fix time in Unix milliseconds"
        ));
    }
    if at_unix_ms > now_unix_ms.saturating_add(POSITION_FUTURE_SKEW_MS_MAX) {
        return Err(format!(
            "at_unix_ms {at_unix_ms} is more than {} minutes in the future; check the unit's clock",
            POSITION_FUTURE_SKEW_MS_MAX / 60_000
        ));
    }
    Ok(())
}

/// Checks a unit type or capability name: 1-64 of a-z, 0-9, `_`, `-`.
pub fn validate_name(field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {name:?} must be 1-{NAME_BYTES_MAX} of a-z, 0-9, `_` and `-`"
        ))
    }
}

pub fn validate_call_sign(call_sign: &str) -> Result<(), String> {
    let length = call_sign.trim().chars().count();
    if length == 0 || length > CALL_SIGN_CHARS_MAX {
        return Err(format!(
            "call_sign must be 1-{CALL_SIGN_CHARS_MAX} characters, got {length}"
        ));
    }
    if call_sign.chars().any(char::is_control) {
        return Err("call_sign must not contain control characters".into());
    }
    Ok(())
}

pub fn validate_capabilities(capabilities: &[String]) -> Result<(), String> {
    if capabilities.len() > CAPABILITIES_LEN_MAX {
        return Err(format!(
            "at most {CAPABILITIES_LEN_MAX} capabilities, got {}",
            capabilities.len()
        ));
    }
    capabilities
        .iter()
        .try_for_each(|capability| validate_name("capability", capability))
}

pub fn validate_crew_size(crew_size: u32) -> Result<(), String> {
    if crew_size == 0 || crew_size > CREW_SIZE_MAX {
        return Err(format!(
            "crew_size must be 1-{CREW_SIZE_MAX}, got {crew_size}"
        ));
    }
    Ok(())
}

/// The county of `township_code`, or a sentence saying the code is not a township of the region.
pub fn county_of_township(region: &Region, township_code: &str) -> Result<String, String> {
    let township = region.tree.get(township_code).ok_or_else(|| {
        format!("home_township_code {township_code:?} is not a jurisdiction of the region")
    })?;
    if township.level != domain::jurisdiction::Level::Township {
        return Err(format!(
            "home_township_code {township_code:?} is a {}, not a township",
            township.level.as_str()
        ));
    }
    region
        .tree
        .county_of(township_code)
        .map(|county| county.code.clone())
        .ok_or_else(|| format!("township {township_code:?} has no county above it"))
}

/// Reads one unit record with its raw bytes (for the compare-and-swap).
pub fn load(
    store: &Store,
    namespace: &str,
    unit_id: &str,
) -> Result<Option<(Vec<u8>, UnitRecord)>, store::Error> {
    let key = unit_key(namespace, unit_id);
    match store.get_raw(&key)? {
        Some(raw) => {
            let record = store::decode_value(&key, &raw)?;
            Ok(Some((raw, record)))
        }
        None => Ok(None),
    }
}

/// Every unit record of the namespace, retired ones included, in id order.
pub fn load_all(store: &Store, namespace: &str) -> Result<Vec<UnitRecord>, store::Error> {
    Ok(store
        .scan_prefix::<UnitRecord>(&unit_key(namespace, ""))?
        .into_iter()
        .map(|(_, record)| record)
        .collect())
}

/// Every unit record of one namespace, kept decoded between bookings.
///
/// [`UnitBoard::refresh`] reads again only the unit records written since the last refresh, as
/// the store's [`store::WriteWatch`] names them (every commit, by key), and decodes those whose
/// bytes changed. The first refresh, and any after a write the watch cannot itemise (a drill
/// namespace's retention, an index build, a commit sled failed), walks every stored unit record
/// instead, and decodes only those whose bytes changed since the last walk (an unchanged value
/// is usually the same allocation in sled's cache, so most are not even compared). Either way
/// the board holds what the store holds, whoever wrote the units (the gRPC front door, unit
/// commands, positions, timers), as of the last commit applied before the refresh: the
/// assigner refreshes inside its commit session, where no commit is in flight. A booking
/// against a roster of thousands reads the few units that moved rather than all of them.
///
/// One board may serve any namespace (a refresh for another namespace starts over with a walk
/// and a new watch). The assigner keeps one per namespace so that live and drill bookings do
/// not read each other's rosters.
#[derive(Default)]
pub struct UnitBoard {
    /// Key and stored value of each record in `records`, in the same (key) order.
    stored: Vec<(String, store::StoredValue)>,
    records: Vec<UnitRecord>,
    /// For each record in `records`, the generation of the refresh that last decoded it.
    changed_at: Vec<u64>,
    /// The current refresh's generation: one more with every refresh.
    generation: u64,
    /// The last generation in which a record left the board (or one may have).
    removed_at: u64,
    /// The writes to the namespace's unit records since the last refresh.
    watch: Option<store::WriteWatch>,
}

impl std::fmt::Debug for UnitBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitBoard")
            .field("records", &self.records.len())
            .finish()
    }
}

impl UnitBoard {
    /// Every unit record of `namespace`, retired ones included, in id order, as stored now.
    pub fn refresh(
        &mut self,
        store: &Store,
        namespace: &str,
    ) -> Result<&[UnitRecord], store::Error> {
        let prefix = unit_key(namespace, "");
        if self
            .watch
            .as_ref()
            .is_none_or(|watch| watch.prefix() != prefix)
        {
            // Watching before reading: a write from here on is either read below or named later.
            self.watch = Some(store.watch_writes(&prefix));
        }
        let written = self.watch.as_ref().and_then(store::WriteWatch::take);
        self.generation += 1;
        let outcome = match written {
            Some(keys) => self.read_keys(store, keys),
            None => self.walk(store, &prefix),
        };
        if let Err(error) = outcome {
            // Half read: the next refresh walks everything, and what the board held is in
            // doubt.
            self.watch = None;
            self.removed_at = self.generation;
            return Err(error);
        }
        Ok(&self.records)
    }

    /// The records as of the last refresh, retired ones included, in id order.
    pub fn records(&self) -> &[UnitRecord] {
        &self.records
    }

    /// The generation of the last refresh: a record decoded after generation `g` has
    /// [`UnitBoard::changed_since`]`(g)`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The records decoded by refreshes after generation `since` (new, or stored again with
    /// other bytes), in id order, and whether any record may have left the board since then (a
    /// record deleted, a namespace switch, a failed refresh): then only a comparison with every
    /// record tells which.
    pub fn changed_since(&self, since: u64) -> (impl Iterator<Item = &UnitRecord>, bool) {
        let changed = self
            .records
            .iter()
            .zip(&self.changed_at)
            .filter(move |(_, at)| **at > since)
            .map(|(record, _)| record);
        (changed, self.removed_at > since)
    }

    /// Reads again the records of `keys` (written since the last refresh).
    fn read_keys(
        &mut self,
        store: &Store,
        keys: std::collections::BTreeSet<String>,
    ) -> Result<(), store::Error> {
        for key in keys {
            let at = self
                .stored
                .binary_search_by(|(known, _)| known.as_str().cmp(key.as_str()));
            match (store.get_stored(&key)?, at) {
                (Some(value), Ok(index)) => {
                    if !self.stored[index].1.same_bytes(&value) {
                        self.records[index] = store::decode_value(&key, value.as_bytes())?;
                        self.stored[index].1 = value;
                        self.changed_at[index] = self.generation;
                    }
                }
                (Some(value), Err(index)) => {
                    let record = store::decode_value(&key, value.as_bytes())?;
                    self.stored.insert(index, (key, value));
                    self.records.insert(index, record);
                    self.changed_at.insert(index, self.generation);
                }
                (None, Ok(index)) => {
                    self.stored.remove(index);
                    self.records.remove(index);
                    self.changed_at.remove(index);
                    self.removed_at = self.generation;
                }
                (None, Err(_)) => {}
            }
        }
        Ok(())
    }

    /// Walks every stored record under `prefix`, decoding those whose bytes changed.
    fn walk(&mut self, store: &Store, prefix: &str) -> Result<(), store::Error> {
        // Room for the roster as it was: pushing thousands of records one at a time regrew (and
        // copied) both vectors about a dozen times per booking.
        let known = self.records.len();
        let mut before = std::mem::replace(&mut self.stored, Vec::with_capacity(known))
            .into_iter()
            .zip(std::mem::replace(
                &mut self.records,
                Vec::with_capacity(known),
            ))
            .zip(std::mem::replace(
                &mut self.changed_at,
                Vec::with_capacity(known),
            ))
            .peekable();
        let generation = self.generation;
        let mut removed = false;
        let (stored, records, changed_at) =
            (&mut self.stored, &mut self.records, &mut self.changed_at);
        store.visit_prefix_stored(prefix, |key, value| {
            // Both walks are in key order: what sorts before `key` is gone from the store (or
            // another namespace's); what is left after the walk is dropped with `before`.
            while before
                .peek()
                .is_some_and(|(((known, _), _), _)| known.as_str() < key)
            {
                before.next();
                removed = true;
            }
            if before
                .peek()
                .is_some_and(|(((known, _), _), _)| known == key)
            {
                let ((entry, record), at) = before.next().expect("peeked");
                if entry.1.same_bytes(&value) {
                    stored.push(entry);
                    records.push(record);
                    changed_at.push(at);
                    return Ok(());
                }
            }
            records.push(store::decode_value(key, value.as_bytes())?);
            stored.push((key.to_string(), value));
            changed_at.push(generation);
            Ok(())
        })?;
        if removed || before.peek().is_some() {
            self.removed_at = generation;
        }
        Ok(())
    }
}

/// Adds the unit event for `change` to `commit`, on `muster.<ns>.unit.<id>.status`.
pub fn push_event(
    commit: &mut Commit,
    namespace: &str,
    unit_id: &str,
    change: UnitChange,
    now_unix_ms: i64,
) -> Result<(), bus::Error> {
    let subject = bus::subjects::unit_event(namespace, unit_id, bus::subjects::UNIT_STATUS)?;
    let payload = encode_unit_event(&UnitEventRecord {
        unit_id: unit_id.to_string(),
        namespace: namespace.to_string(),
        at_unix_ms: now_unix_ms,
        source_service: crate::SERVICE_NAME.into(),
        change,
    });
    commit.event(subject, payload);
    Ok(())
}

/// Stores every region unit that is not stored yet, available, its position taken now. Returns how
/// many were added. Loading the shipped data is not a change a dispatcher made, so it publishes no
/// unit event (and an idle system's stream stays empty); `RegisterUnit` does.
pub fn seed(
    store: &Store,
    region: &Region,
    namespace: &str,
    now_unix_ms: i64,
) -> Result<usize, crate::Error> {
    let mut commit = Commit::new();
    let mut added = 0;
    for unit in &region.units {
        let key = unit_key(namespace, &unit.id);
        if store.get_raw(&key)?.is_some() {
            continue;
        }
        let record = UnitRecord::new(unit.clone(), now_unix_ms, now_unix_ms);
        commit.expect_raw(key.clone(), None);
        commit.put(key, &record)?;
        added += 1;
    }
    if added > 0 {
        store.commit(&commit)?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_board_follows_every_write_in_each_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let region = Region::embedded_default();
        seed(&store, &region, "live", 1_000).unwrap();
        seed(&store, &region, "drill.a", 1_000).unwrap();
        let mut board = UnitBoard::default();
        assert_eq!(
            board.refresh(&store, "live").unwrap(),
            load_all(&store, "live").unwrap().as_slice()
        );

        // Another writer books one unit and moves another; a third is removed outright.
        let units = load_all(&store, "live").unwrap();
        let mut booked = units[4].clone();
        booked
            .apply(
                &UnitEvent::Assign {
                    incident_id: "INC-1".into(),
                },
                2_000,
            )
            .unwrap();
        let mut moved = units[7].clone();
        assert!(moved.report_position(
            GeoPoint {
                lat: 30.3,
                lon: 120.2
            },
            2_000
        ));
        let mut commit = Commit::new();
        commit
            .put(unit_key("live", &booked.unit.id), &booked)
            .unwrap();
        commit
            .put(unit_key("live", &moved.unit.id), &moved)
            .unwrap();
        commit.delete(unit_key("live", &units[0].unit.id));
        store.commit(&commit).unwrap();

        let stored = load_all(&store, "live").unwrap();
        let seen = board.refresh(&store, "live").unwrap();
        assert_eq!(seen, stored.as_slice());
        assert_eq!(seen.len(), units.len() - 1);
        assert!(seen.contains(&booked) && seen.contains(&moved));
        // The unchanged records were kept, not decoded again: the kept bytes are the stored ones.
        assert!(
            board
                .stored
                .iter()
                .zip(&board.records)
                .all(|((key, kept), record)| {
                    store.get_raw(key).unwrap().as_deref() == Some(kept.as_bytes())
                        && unit_key("live", &record.unit.id) == *key
                })
        );

        // Walked for another namespace, the same board holds exactly that namespace's units.
        assert_eq!(
            board.refresh(&store, "drill.a").unwrap(),
            load_all(&store, "drill.a").unwrap().as_slice()
        );
        assert_eq!(board.refresh(&store, "drill.a").unwrap().len(), units.len());

        // Back in live after a write there: the board walks again and has it.
        let mut commit = Commit::new();
        commit.delete(unit_key("live", &units[1].unit.id));
        store.commit(&commit).unwrap();
        assert_eq!(
            board.refresh(&store, "live").unwrap(),
            load_all(&store, "live").unwrap().as_slice()
        );
        // A unit registered anew, and one written again with the same bytes (no event).
        let mut commit = Commit::new();
        commit
            .put(unit_key("live", "ZZZ-NEW"), &{
                let mut record = units[2].clone();
                record.unit.id = "ZZZ-NEW".into();
                record
            })
            .unwrap();
        commit
            .put(unit_key("live", &units[3].unit.id), &units[3])
            .unwrap();
        store.commit(&commit).unwrap();
        let seen = board.refresh(&store, "live").unwrap();
        assert_eq!(seen, load_all(&store, "live").unwrap().as_slice());
        assert_eq!(seen.last().unwrap().unit.id, "ZZZ-NEW");

        // The retention of a drill namespace is one batch the watch cannot itemise: walked.
        assert_eq!(board.refresh(&store, "drill.a").unwrap().len(), units.len());
        store.delete_drill_namespace("drill.a").unwrap();
        assert!(board.refresh(&store, "drill.a").unwrap().is_empty());
    }

    #[test]
    fn older_positions_are_ignored() {
        let region = Region::embedded_default();
        let mut record = UnitRecord::new(region.units[0].clone(), 1_000, 1_000);
        assert!(!record.report_position(GeoPoint::new(30.0, 120.0), 999));
        assert!(!record.report_position(GeoPoint::new(30.0, 120.0), 1_000));
        assert!(record.report_position(GeoPoint::new(30.0, 120.0), 1_001));
        assert_eq!(record.unit.position, GeoPoint::new(30.0, 120.0));
    }

    #[test]
    fn positions_out_of_range_or_time_are_refused_with_a_sentence() {
        let now = 1_000_000_000;
        assert!(validate_position(GeoPoint::new(91.0, 0.0), now, now).is_err());
        assert!(validate_position(GeoPoint::new(0.0, 181.0), now, now).is_err());
        assert!(validate_position(GeoPoint::new(0.0, 0.0), 0, now).is_err());
        let future = validate_position(GeoPoint::new(0.0, 0.0), now + 3_600_000, now).unwrap_err();
        assert!(future.contains("future"), "{future}");
        assert!(validate_position(GeoPoint::new(0.0, 0.0), now, now).is_ok());
    }
}
