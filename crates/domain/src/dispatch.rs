//! Dispatch recommendation: the nearest capable available units by ETA, each pick with its
//! reasons and each unfilled requirement with its shortfall reasons; the plan difference sent on
//! a regrade; and the booking ledger that keeps a unit from being booked to two incidents.
//!
//! The recommendation is a pure function of the units' views (status, last position and its age),
//! the options and `now_unix_ms`; it reads no clock, so a stored recommendation can be replayed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::geo::{GeoPoint, great_circle_km};
use crate::region::{Region, ResourceRequirement, Unit};
use crate::unit::UnitStatus;

/// One recommended unit, with why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub unit_id: String,
    pub call_sign: String,
    pub unit_type: String,
    /// Great-circle distance from the unit's last position to the incident.
    pub distance_km: f64,
    /// e.g. "nearest available hazmat: 3.2 km, ETA 5.0 min (1 of 4)".
    pub reason: String,
    /// Estimated travel time; `None` in recommendations stored before ETAs existed.
    #[serde(default)]
    pub eta_min: Option<f64>,
    /// The structured form of `reason`.
    #[serde(default)]
    pub reasons: Vec<PickReason>,
}

/// Why a unit was picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PickReason {
    /// The `rank`-th pick (1-based) for its requirement, in ETA order.
    ClosestByEta { eta_min: f64, rank: u32 },
    /// The unit belongs to the home (lead) jurisdiction.
    InJurisdiction { jurisdiction: String },
    /// The unit belongs to another jurisdiction: a mutual-aid candidate, to be requested from it.
    OutsideJurisdiction {
        jurisdiction: String,
        home_jurisdiction: String,
    },
    /// 0 for the home jurisdiction, 1 for units beyond it (searched only after the home ones).
    CascadeDepth { depth: u32 },
    /// The unit type has no configured speed, so the ETA uses the fallback speed.
    AssumedSpeed { speed_kmh: f64 },
}

/// A requirement that could not be filled completely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub unit_type: String,
    pub required: u32,
    pub assigned: u32,
    pub reason: String,
    /// The structured form of `reason`: each cause with the number of units it excluded.
    #[serde(default)]
    pub reasons: Vec<ShortfallReason>,
}

/// Why a requirement could not be filled. The counts are distinct units of the requirement's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShortfallReason {
    /// The region has no unit of this type at all.
    NoneInRegion,
    /// Units of this type exist, but none could be picked.
    NoneAvailable,
    /// The region has fewer units of this type than the requirement asks for.
    FewerInRegionThanRequired {
        in_region: u32,
    },
    /// Committed to other incidents or returning from one.
    Busy {
        count: u32,
    },
    OutOfService {
        count: u32,
    },
    /// Last position older than `stale_after_ms`, so the ETA cannot be trusted.
    StalePosition {
        count: u32,
    },
    /// Farther than `max_radius_km` from the incident.
    OutsideRadius {
        count: u32,
    },
    /// Already picked for an earlier requirement of the same recommendation.
    PickedForAnotherRequirement {
        count: u32,
    },
    /// Available, but kept at home by the jurisdictions asked for mutual aid (their reserve).
    HeldInReserve {
        count: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// In requirement order, best first within each requirement.
    pub picks: Vec<Pick>,
    pub gaps: Vec<Gap>,
}

impl Recommendation {
    /// True when every requirement was filled.
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// What the recommendation knows about one unit right now: the registry entry, its lifecycle
/// status and its last reported position with the time of that report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitView<'a> {
    pub unit: &'a Unit,
    pub status: UnitStatus,
    pub position: GeoPoint,
    pub position_at_unix_ms: i64,
}

impl<'a> UnitView<'a> {
    /// A view at the unit's registered position, reported at `position_at_unix_ms`.
    pub fn new(unit: &'a Unit, status: UnitStatus, position_at_unix_ms: i64) -> UnitView<'a> {
        UnitView {
            unit,
            status,
            position: unit.position,
            position_at_unix_ms,
        }
    }
}

/// Speeds used when neither the options nor the region name one, in km/h.
pub const DEFAULT_SPEED_KMH_BY_TYPE: [(&str, f64); 8] = [
    ("fire_engine", 50.0),
    ("ambulance", 60.0),
    ("police", 70.0),
    ("hazmat", 45.0),
    ("rescue", 50.0),
    ("water_rescue", 45.0),
    ("engineering", 35.0),
    ("medical_team", 55.0),
];

/// How [`recommend_by_eta`] ranks and filters.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendOptions {
    /// Average road speed per unit type. Missing, non-finite or non-positive entries fall back
    /// to `fallback_speed_kmh` (and the pick says so).
    pub speed_kmh_by_type: HashMap<String, f64>,
    pub fallback_speed_kmh: f64,
    /// Roads are longer than the great circle: ETA = great-circle km × road_factor / speed.
    pub road_factor: f64,
    /// A position reported longer ago than this is stale and the unit is not recommended.
    pub stale_after_ms: i64,
    /// Units farther than this (great circle) are not recommended.
    pub max_radius_km: Option<f64>,
    /// The lead jurisdiction, matched against a unit's county (`Unit::jurisdiction`) or home
    /// township. When set, its units are picked first and units beyond it only to fill the rest,
    /// marked as mutual-aid candidates.
    pub home_jurisdiction: Option<String>,
}

impl Default for RecommendOptions {
    fn default() -> RecommendOptions {
        RecommendOptions {
            speed_kmh_by_type: DEFAULT_SPEED_KMH_BY_TYPE
                .iter()
                .map(|(unit_type, speed_kmh)| (unit_type.to_string(), *speed_kmh))
                .collect(),
            fallback_speed_kmh: 40.0,
            road_factor: 1.3,
            stale_after_ms: 30 * 60 * 1000,
            max_radius_km: None,
            home_jurisdiction: None,
        }
    }
}

impl RecommendOptions {
    /// The defaults, with the region's own per-type speeds (`[speed_kmh]` in units.toml) on top.
    pub fn for_region(region: &Region) -> RecommendOptions {
        let mut options = RecommendOptions::default();
        for (unit_type, speed_kmh) in &region.speed_kmh_by_type {
            options
                .speed_kmh_by_type
                .insert(unit_type.clone(), *speed_kmh);
        }
        options
    }

    /// The speed used for `unit_type`, and whether it is the fallback.
    fn speed_kmh(&self, unit_type: &str) -> (f64, bool) {
        match self.speed_kmh_by_type.get(unit_type) {
            Some(speed_kmh) if speed_kmh.is_finite() && *speed_kmh > 0.0 => (*speed_kmh, false),
            _ => (self.fallback_speed_kmh, true),
        }
    }

    /// The ETA in minutes over `distance_km` great-circle kilometres for a unit of `unit_type`.
    pub fn eta_min(&self, unit_type: &str, distance_km: f64) -> f64 {
        distance_km * self.road_factor / self.speed_kmh(unit_type).0 * 60.0
    }

    fn in_home_jurisdiction(&self, unit: &Unit) -> Option<bool> {
        self.home_jurisdiction
            .as_deref()
            .map(|home| unit.jurisdiction == home || unit.home_township == home)
    }
}

/// Why a unit is not a candidate at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exclusion {
    OutOfService,
    Busy,
    StalePosition,
    OutsideRadius,
}

/// The unit's great-circle distance to the incident, or why it cannot be recommended. Status is
/// checked first, then position age (a stale position makes the distance meaningless), then radius.
fn classify(
    view: &UnitView,
    incident_at: GeoPoint,
    options: &RecommendOptions,
    now_unix_ms: i64,
) -> Result<f64, Exclusion> {
    match view.status {
        UnitStatus::OutOfService => return Err(Exclusion::OutOfService),
        status if !status.is_assignable() => return Err(Exclusion::Busy),
        _ => {}
    }
    // A report from the future (clock skew) counts as fresh.
    if now_unix_ms.saturating_sub(view.position_at_unix_ms) > options.stale_after_ms {
        return Err(Exclusion::StalePosition);
    }
    let distance_km = great_circle_km(incident_at, view.position);
    if options
        .max_radius_km
        .is_some_and(|max_radius_km| distance_km > max_radius_km)
    {
        return Err(Exclusion::OutsideRadius);
    }
    Ok(distance_km)
}

struct Candidate<'v, 'u> {
    view: &'v UnitView<'u>,
    distance_km: f64,
    eta_min: f64,
    speed_kmh: f64,
    speed_assumed: bool,
    /// None without a home jurisdiction; otherwise whether the unit is in it.
    in_home: Option<bool>,
}

impl Candidate<'_, '_> {
    fn depth(&self) -> u32 {
        u32::from(self.in_home == Some(false))
    }
}

/// For each requirement, the `count` best candidates of that type: available units with a fresh
/// position inside the radius, home-jurisdiction units before others when a home jurisdiction is
/// set, then by ETA (great-circle km × road factor / type speed), then distance, then unit id, so
/// the result is deterministic. A unit id is never picked twice, even if two requirements name
/// the same type or `units` lists an id twice.
pub fn recommend_by_eta(
    requirements: &[ResourceRequirement],
    incident_at: GeoPoint,
    units: &[UnitView],
    options: &RecommendOptions,
    now_unix_ms: i64,
) -> Recommendation {
    let mut candidates: Vec<Candidate> = units
        .iter()
        .filter_map(|view| {
            let distance_km = classify(view, incident_at, options, now_unix_ms).ok()?;
            let (speed_kmh, speed_assumed) = options.speed_kmh(&view.unit.unit_type);
            Some(Candidate {
                view,
                distance_km,
                eta_min: distance_km * options.road_factor / speed_kmh * 60.0,
                speed_kmh,
                speed_assumed,
                in_home: options.in_home_jurisdiction(view.unit),
            })
        })
        .collect();
    candidates.sort_by(|a, b| {
        a.depth()
            .cmp(&b.depth())
            .then_with(|| a.eta_min.total_cmp(&b.eta_min))
            .then_with(|| a.distance_km.total_cmp(&b.distance_km))
            .then_with(|| a.view.unit.id.cmp(&b.view.unit.id))
    });

    let mut picked: HashSet<&str> = HashSet::new();
    let mut recommendation = Recommendation::default();
    for requirement in requirements {
        let unit_type = requirement.unit_type.as_str();
        let mut assigned: u32 = 0;
        for candidate in &candidates {
            if assigned == requirement.count {
                break;
            }
            let unit = candidate.view.unit;
            if unit.unit_type != unit_type || !picked.insert(unit.id.as_str()) {
                continue;
            }
            assigned += 1;
            recommendation
                .picks
                .push(pick(candidate, assigned, requirement, options));
        }
        if assigned < requirement.count {
            recommendation.gaps.push(explain_gap(
                requirement,
                assigned,
                units,
                &picked,
                incident_at,
                options,
                now_unix_ms,
            ));
        }
    }
    recommendation
}

fn pick(
    candidate: &Candidate,
    rank: u32,
    requirement: &ResourceRequirement,
    options: &RecommendOptions,
) -> Pick {
    let unit = candidate.view.unit;
    let unit_type = unit.unit_type.as_str();
    let eta_min = candidate.eta_min;
    let mut reason = format!(
        "nearest available {unit_type}: {:.1} km, ETA {eta_min:.1} min ({rank} of {})",
        candidate.distance_km, requirement.count
    );
    let mut reasons = vec![PickReason::ClosestByEta { eta_min, rank }];
    if let (Some(in_home), Some(home)) = (candidate.in_home, &options.home_jurisdiction) {
        if in_home {
            reason.push_str(&format!("; in jurisdiction {}", unit.jurisdiction));
            reasons.push(PickReason::InJurisdiction {
                jurisdiction: unit.jurisdiction.clone(),
            });
        } else {
            reason.push_str(&format!(
                "; from {} outside home jurisdiction {home}: mutual-aid candidate",
                unit.jurisdiction
            ));
            reasons.push(PickReason::OutsideJurisdiction {
                jurisdiction: unit.jurisdiction.clone(),
                home_jurisdiction: home.clone(),
            });
        }
        reasons.push(PickReason::CascadeDepth {
            depth: candidate.depth(),
        });
    }
    if candidate.speed_assumed {
        reason.push_str(&format!(
            "; no speed configured for {unit_type}, assumed {} km/h",
            candidate.speed_kmh
        ));
        reasons.push(PickReason::AssumedSpeed {
            speed_kmh: candidate.speed_kmh,
        });
    }
    Pick {
        unit_id: unit.id.clone(),
        call_sign: unit.call_sign.clone(),
        unit_type: unit.unit_type.clone(),
        distance_km: candidate.distance_km,
        reason,
        eta_min: Some(eta_min),
        reasons,
    }
}

/// Explains a shortfall by classifying every unit of the requirement's type (distinct ids):
/// `assigned` units were found, `picked` holds every unit picked by the recommendation.
pub fn explain_gap(
    requirement: &ResourceRequirement,
    assigned: u32,
    units: &[UnitView],
    picked: &HashSet<&str>,
    incident_at: GeoPoint,
    options: &RecommendOptions,
    now_unix_ms: i64,
) -> Gap {
    let unit_type = requirement.unit_type.as_str();
    let mut known: BTreeSet<&str> = BTreeSet::new();
    let mut excluded: BTreeMap<&str, Exclusion> = BTreeMap::new();
    for view in units.iter().filter(|view| view.unit.unit_type == unit_type) {
        let id = view.unit.id.as_str();
        if !known.insert(id) {
            continue; // a duplicate id: the first view decides
        }
        if let Err(exclusion) = classify(view, incident_at, options, now_unix_ms) {
            excluded.insert(id, exclusion);
        }
    }
    let count = |wanted: Exclusion| excluded.values().filter(|e| **e == wanted).count() as u32;
    let busy = count(Exclusion::Busy);
    let out_of_service = count(Exclusion::OutOfService);
    let stale = count(Exclusion::StalePosition);
    let outside_radius = count(Exclusion::OutsideRadius);
    // Candidates of this type that are picked but not by this requirement went to an earlier one.
    let picked_elsewhere = known
        .iter()
        .filter(|id| !excluded.contains_key(*id) && picked.contains(*id))
        .count() as u32;
    let picked_elsewhere = picked_elsewhere.saturating_sub(assigned);
    let in_region = known.len() as u32;

    let mut reasons = Vec::new();
    let reason = if known.is_empty() {
        reasons.push(ShortfallReason::NoneInRegion);
        format!("no {unit_type} units known in the region; request mutual aid")
    } else {
        if assigned == 0 {
            reasons.push(ShortfallReason::NoneAvailable);
        }
        if in_region < requirement.count {
            reasons.push(ShortfallReason::FewerInRegionThanRequired { in_region });
        }
        let mut text = format!(
            "only {assigned} of {} {unit_type} available: {in_region} known",
            requirement.count
        );
        let stale_after_min = options.stale_after_ms / 60_000;
        let radius_km = options.max_radius_km.unwrap_or(f64::INFINITY);
        let parts: [(u32, ShortfallReason, String); 5] = [
            (
                busy,
                ShortfallReason::Busy { count: busy },
                format!("{busy} unavailable (committed elsewhere or returning)"),
            ),
            (
                out_of_service,
                ShortfallReason::OutOfService {
                    count: out_of_service,
                },
                format!("{out_of_service} out of service"),
            ),
            (
                stale,
                ShortfallReason::StalePosition { count: stale },
                format!("{stale} with a position older than {stale_after_min} min"),
            ),
            (
                outside_radius,
                ShortfallReason::OutsideRadius {
                    count: outside_radius,
                },
                format!("{outside_radius} beyond the {radius_km} km radius"),
            ),
            (
                picked_elsewhere,
                ShortfallReason::PickedForAnotherRequirement {
                    count: picked_elsewhere,
                },
                format!("{picked_elsewhere} already picked for another requirement"),
            ),
        ];
        for (n, structured, words) in parts {
            if n > 0 {
                reasons.push(structured);
                text.push_str(", ");
                text.push_str(&words);
            }
        }
        text.push_str("; request mutual aid");
        text
    };
    Gap {
        unit_type: unit_type.to_string(),
        required: requirement.count,
        assigned,
        reason,
        reasons,
    }
}

/// The first dispatch recommendation, kept for callers that only know which units are free:
/// units for which `is_available(unit_id)` is false count as busy, every position is the
/// registered one and never stale, default speeds, no radius and no home jurisdiction. Within a
/// type, ETA order is distance order, so this picks the nearest units, ties broken by unit id.
pub fn recommend(
    requirements: &[ResourceRequirement],
    incident_at: GeoPoint,
    units: &[Unit],
    is_available: impl Fn(&str) -> bool,
) -> Recommendation {
    let views: Vec<UnitView> = units
        .iter()
        .map(|unit| {
            let status = if is_available(&unit.id) {
                UnitStatus::Available
            } else {
                UnitStatus::Dispatched
            };
            UnitView::new(unit, status, 0)
        })
        .collect();
    let options = RecommendOptions {
        stale_after_ms: i64::MAX,
        ..RecommendOptions::default()
    };
    recommend_by_eta(requirements, incident_at, &views, &options, 0)
}

/// What to send on a regrade: for each requirement of the new plan, the count beyond what is
/// already assigned (by unit type), in plan order, dropping requirements already met. An upgrade
/// from grade III to II thus sends only the difference.
pub fn plan_difference(
    plan: &[ResourceRequirement],
    already_assigned: &HashMap<String, u32>,
) -> Vec<ResourceRequirement> {
    plan.iter()
        .filter_map(|requirement| {
            let already = already_assigned
                .get(&requirement.unit_type)
                .copied()
                .unwrap_or(0);
            let count = requirement.count.saturating_sub(already);
            (count > 0).then(|| ResourceRequirement {
                unit_type: requirement.unit_type.clone(),
                count,
            })
        })
        .collect()
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

/// The machine-readable reason codes stored with assignments and shortfalls
/// ([`crate::event::Assignment::reason_codes`], [`crate::event::Shortfall::reason_codes`]).
pub mod reason_code {
    /// The pick ranked first by ETA among the candidates left for its requirement.
    pub const CLOSEST_BY_ETA: &str = "closest_by_eta";
    /// The unit's county is inside the incident's lead jurisdiction (its subtree).
    pub const IN_JURISDICTION: &str = "in_jurisdiction";
    /// The unit's county is outside the lead jurisdiction: a mutual-aid resource.
    pub const OUTSIDE_JURISDICTION: &str = "outside_jurisdiction";
    /// The unit type has no configured speed; the ETA uses the fallback speed.
    pub const ASSUMED_SPEED: &str = "assumed_speed";
    /// Booked in place of a unit that declined, timed out or went out of service.
    pub const REPLACEMENT: &str = "replacement";
    /// Booked by a dispatcher by hand (`Assign`), not by the plan.
    pub const DISPATCHER_ASSIGNED: &str = "dispatcher_assigned";

    /// Always on a shortfall: no candidate was left for the rest of the requirement.
    pub const NONE_AVAILABLE: &str = "none_available";
    pub const NONE_IN_REGION: &str = "none_in_region";
    pub const FEWER_IN_REGION_THAN_REQUIRED: &str = "fewer_in_region_than_required";
    pub const BUSY: &str = "busy";
    pub const OUT_OF_SERVICE: &str = "out_of_service";
    pub const STALE_POSITION: &str = "stale_position";
    pub const OUTSIDE_RADIUS: &str = "outside_radius";
    pub const PICKED_FOR_ANOTHER_REQUIREMENT: &str = "picked_for_another_requirement";
    /// Available units the jurisdictions asked for mutual aid kept at home (their reserve).
    pub const HELD_IN_RESERVE: &str = "held_in_reserve";
    /// Committed by another jurisdiction in answer to a mutual-aid request.
    pub const VIA_MUTUAL_AID: &str = "via_mutual_aid";
    /// Reached through the mutual-aid cascade; the assignment's `cascade_depth` says how far.
    pub const CASCADE_DEPTH: &str = "cascade_depth";
    /// No plan covers the incident's sub-type and grade.
    pub const NO_PLAN: &str = "no_plan";
    /// The incident's location is not known, so nothing can be ranked.
    pub const NO_LOCATION: &str = "no_location";
}

/// Where a unit stands relative to an incident's jurisdictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JurisdictionStanding {
    /// The unit's county is the lead jurisdiction or inside it.
    pub in_jurisdiction: bool,
    /// Levels from the incident's county up to the lowest jurisdiction holding both it and the
    /// unit's county: 0 the same county, 1 the same city, 2 the same province, 3 national.
    pub cascade_depth: u32,
}

/// The standing of a unit whose county is `unit_county` for an incident in `incident_township`
/// led by `lead_code`. An empty or unknown lead falls back to the incident's county; unknown
/// codes give the conservative answer (outside, depth 0 when nothing is known).
pub fn jurisdiction_standing(
    tree: &crate::jurisdiction::JurisdictionTree,
    lead_code: &str,
    incident_township: &str,
    unit_county: &str,
) -> JurisdictionStanding {
    let incident_county = tree
        .county_of(incident_township)
        .map(|county| county.code.as_str())
        .unwrap_or(incident_township);
    let lead = if tree.get(lead_code).is_some() {
        lead_code
    } else {
        incident_county
    };
    let unit_chain = tree.ancestors(unit_county);
    let in_jurisdiction = unit_chain.iter().any(|item| item.code == lead);
    let incident_chain = tree.ancestors(incident_county);
    let cascade_depth = incident_chain
        .iter()
        .position(|item| unit_chain.iter().any(|u| u.code == item.code))
        .unwrap_or(0) as u32;
    JurisdictionStanding {
        in_jurisdiction,
        cascade_depth,
    }
}

impl Pick {
    /// The assignment this pick becomes, with its reason codes. `standing` is the unit's
    /// [`jurisdiction_standing`] for the incident.
    pub fn to_assignment(&self, standing: JurisdictionStanding) -> crate::event::Assignment {
        let mut reason_codes = vec![reason_code::CLOSEST_BY_ETA.to_string()];
        let mut reason = self.reason.clone();
        if standing.in_jurisdiction {
            reason_codes.push(reason_code::IN_JURISDICTION.into());
        } else {
            reason_codes.push(reason_code::OUTSIDE_JURISDICTION.into());
            reason.push_str("; outside the lead jurisdiction");
        }
        if standing.cascade_depth > 0 {
            reason.push_str(&format!("; cascade depth {}", standing.cascade_depth));
        }
        if self
            .reasons
            .iter()
            .any(|r| matches!(r, PickReason::AssumedSpeed { .. }))
        {
            reason_codes.push(reason_code::ASSUMED_SPEED.into());
        }
        crate::event::Assignment {
            unit_id: self.unit_id.clone(),
            call_sign: self.call_sign.clone(),
            unit_type: self.unit_type.clone(),
            distance_km: self.distance_km,
            reason,
            reason_codes,
            eta_minutes: self.eta_min.unwrap_or(0.0),
            cascade_depth: standing.cascade_depth,
        }
    }
}

impl Gap {
    /// The shortfall this gap becomes: `none_available` first, then one code per cause, each
    /// exclusion with its count.
    pub fn to_shortfall(&self) -> crate::event::Shortfall {
        use crate::event::ShortfallCause;
        let mut reason_codes = vec![reason_code::NONE_AVAILABLE.to_string()];
        let mut causes = Vec::new();
        for reason in &self.reasons {
            let (code, count) = match reason {
                ShortfallReason::NoneAvailable => continue,
                ShortfallReason::NoneInRegion => (reason_code::NONE_IN_REGION, None),
                ShortfallReason::FewerInRegionThanRequired { in_region } => {
                    (reason_code::FEWER_IN_REGION_THAN_REQUIRED, Some(*in_region))
                }
                ShortfallReason::Busy { count } => (reason_code::BUSY, Some(*count)),
                ShortfallReason::OutOfService { count } => {
                    (reason_code::OUT_OF_SERVICE, Some(*count))
                }
                ShortfallReason::StalePosition { count } => {
                    (reason_code::STALE_POSITION, Some(*count))
                }
                ShortfallReason::OutsideRadius { count } => {
                    (reason_code::OUTSIDE_RADIUS, Some(*count))
                }
                ShortfallReason::PickedForAnotherRequirement { count } => {
                    (reason_code::PICKED_FOR_ANOTHER_REQUIREMENT, Some(*count))
                }
                ShortfallReason::HeldInReserve { count } => {
                    (reason_code::HELD_IN_RESERVE, Some(*count))
                }
            };
            reason_codes.push(code.to_string());
            if let Some(count) = count {
                causes.push(ShortfallCause {
                    code: code.to_string(),
                    count,
                });
            }
        }
        crate::event::Shortfall {
            unit_type: self.unit_type.clone(),
            required: self.required,
            assigned: self.assigned,
            reason: self.reason.clone(),
            reason_codes,
            causes,
        }
    }
}
