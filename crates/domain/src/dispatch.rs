//! The first dispatch recommendation (nearest available units of the types a plan names) and
//! the booking ledger that keeps a unit from being booked to two incidents.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::geo::{GeoPoint, great_circle_km};
use crate::region::{ResourceRequirement, Unit};

/// One recommended unit, with why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub unit_id: String,
    pub call_sign: String,
    pub unit_type: String,
    pub distance_km: f64,
    /// e.g. "nearest available hazmat: 3.2 km (1 of 4)".
    pub reason: String,
}

/// A requirement that could not be filled completely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub unit_type: String,
    pub required: u32,
    pub assigned: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// In requirement order, nearest first within each requirement.
    pub picks: Vec<Pick>,
    pub gaps: Vec<Gap>,
}

impl Recommendation {
    /// True when every requirement was filled.
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// For each requirement, the `count` nearest units of that type by great-circle distance for
/// which `is_available(unit_id)` is true. A unit is never picked twice (even if two requirements
/// name the same type, or `units` lists an id twice). Ties are broken by unit id, so the result
/// is deterministic.
pub fn recommend(
    requirements: &[ResourceRequirement],
    incident_at: GeoPoint,
    units: &[Unit],
    is_available: impl Fn(&str) -> bool,
) -> Recommendation {
    let mut ranked: Vec<(f64, &Unit)> = units
        .iter()
        .map(|unit| (great_circle_km(incident_at, unit.position), unit))
        .collect();
    ranked.sort_by(|(distance_a, unit_a), (distance_b, unit_b)| {
        distance_a
            .total_cmp(distance_b)
            .then_with(|| unit_a.id.cmp(&unit_b.id))
    });

    let mut picked: BTreeSet<&str> = BTreeSet::new();
    let mut recommendation = Recommendation::default();
    for requirement in requirements {
        let unit_type = requirement.unit_type.as_str();
        let mut assigned: u32 = 0;
        let mut known = BTreeSet::new();
        let mut unavailable = BTreeSet::new();
        let mut taken = BTreeSet::new();
        for (distance_km, unit) in &ranked {
            if unit.unit_type != unit_type {
                continue;
            }
            known.insert(unit.id.as_str());
            if assigned == requirement.count {
                continue; // keep counting candidates for a possible gap reason
            }
            if picked.contains(unit.id.as_str()) {
                taken.insert(unit.id.as_str());
                continue;
            }
            if !is_available(&unit.id) {
                unavailable.insert(unit.id.as_str());
                continue;
            }
            picked.insert(unit.id.as_str());
            assigned += 1;
            recommendation.picks.push(Pick {
                unit_id: unit.id.clone(),
                call_sign: unit.call_sign.clone(),
                unit_type: unit.unit_type.clone(),
                distance_km: *distance_km,
                reason: format!(
                    "nearest available {unit_type}: {distance_km:.1} km ({assigned} of {})",
                    requirement.count
                ),
            });
        }
        if assigned < requirement.count {
            let reason = if known.is_empty() {
                format!("no {unit_type} units known in the region; request mutual aid")
            } else {
                format!(
                    "only {assigned} of {} {unit_type} available: {} known, {} unavailable, \
                     {} already picked for another requirement; request mutual aid",
                    requirement.count,
                    known.len(),
                    unavailable.len(),
                    taken.len()
                )
            };
            recommendation.gaps.push(Gap {
                unit_type: unit_type.to_string(),
                required: requirement.count,
                assigned,
                reason,
            });
        }
    }
    recommendation
}

/// A pure ledger of bookings: unit id → incident id. A unit is never booked to two incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingLedger {
    incident_by_unit: BTreeMap<String, String>,
}

impl BookingLedger {
    pub fn new() -> BookingLedger {
        BookingLedger::default()
    }

    /// Books `unit_id` to `incident_id`. Booking again for the same incident is a no-op;
    /// booking a unit held by another incident is refused with [`Error::AlreadyBooked`].
    pub fn book(&mut self, unit_id: &str, incident_id: &str) -> Result<(), Error> {
        match self.incident_by_unit.get(unit_id) {
            Some(holder) if holder == incident_id => Ok(()),
            Some(holder) => Err(Error::AlreadyBooked {
                unit_id: unit_id.to_string(),
                holder_incident_id: holder.clone(),
                requested_incident_id: incident_id.to_string(),
            }),
            None => {
                self.incident_by_unit
                    .insert(unit_id.to_string(), incident_id.to_string());
                Ok(())
            }
        }
    }

    /// Frees `unit_id`, returning the incident that held it (None if it was free).
    pub fn release(&mut self, unit_id: &str) -> Option<String> {
        self.incident_by_unit.remove(unit_id)
    }

    /// Frees every unit booked to `incident_id` (e.g. when it closes), returning their ids.
    pub fn release_incident(&mut self, incident_id: &str) -> Vec<String> {
        let unit_ids = self
            .units_of(incident_id)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        for unit_id in &unit_ids {
            self.incident_by_unit.remove(unit_id);
        }
        unit_ids
    }

    /// The incident `unit_id` is booked to.
    pub fn holder(&self, unit_id: &str) -> Option<&str> {
        self.incident_by_unit.get(unit_id).map(String::as_str)
    }

    /// Units booked to `incident_id`, sorted by id.
    pub fn units_of(&self, incident_id: &str) -> Vec<&str> {
        self.incident_by_unit
            .iter()
            .filter(|(_, holder)| holder.as_str() == incident_id)
            .map(|(unit_id, _)| unit_id.as_str())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.incident_by_unit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incident_by_unit.is_empty()
    }
}
