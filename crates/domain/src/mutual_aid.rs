//! Mutual aid (互助 / 跨区域增援), after OASIS EDXL-RM: the lead jurisdiction's own units first;
//! what they cannot fill is asked of the neighbours (`RequestResource`), each of which answers by
//! its own policy with the specific units it sends (`CommitResource`) or a reason it sends none
//! (`DeclineResource`), and gets them back when the incident is over (`ReleaseResource`).
//!
//! Choices, written down:
//! - **Own units** are the units whose home county lies inside the lead jurisdiction's subtree.
//!   The lead is escalation's: county for grade IV, city for III, province for II, national for
//!   I. A province-led incident therefore draws on the whole province without asking anyone.
//! - **Neighbours are siblings in the tree**, not a centroid radius: the counties of one city
//!   (the city's mutual-aid agreement), then the cities of one province, and so on up. Each
//!   ring is one cascade depth: 1 for the lead's siblings, 2 for its parent's siblings (their
//!   whole subtrees), ... Within a ring the nearest jurisdiction (centroid to incident) is asked
//!   first, then by code. A jurisdiction with no unit of the type registered at all is not asked.
//!   Radius-based neighbours would cross administrative lines that the duty rosters, and the
//!   command relationship after `lead_changed`, do not cross.
//! - **The responder's policy**: commit the nearest units by ETA among its available units of the
//!   type, keeping a reserve at home ([`MutualAidPolicy`]: by default one of each type, none for
//!   a grade I or II incident); decline with [`DeclineReason::Reserve`] when only the reserve is
//!   left, [`DeclineReason::NoneAvailable`] when nothing could be sent at all.
//!
//! Pure: [`plan_mutual_aid`] ranks and answers from the units' views and `now`; the request's
//! lifecycle ([`MutualAidRequest`]) refuses illegal transitions.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::dispatch::{
    Gap, Pick, RecommendOptions, Recommendation, ShortfallReason, UnitView, recommend_by_eta,
};
use crate::geo::{GeoPoint, great_circle_km};
use crate::grade::Grade;
use crate::jurisdiction::{Jurisdiction, JurisdictionTree};
use crate::region::ResourceRequirement;

/// How responders answer requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutualAidPolicy {
    /// Units of each type a responder keeps at home unless `reserve_by_type` says otherwise.
    pub default_reserve: u32,
    /// Per-type reserves.
    pub reserve_by_type: BTreeMap<String, u32>,
    /// Incidents of this grade or more severe are answered without keeping a reserve (I < II).
    pub waive_reserve_from: Grade,
}

impl Default for MutualAidPolicy {
    fn default() -> MutualAidPolicy {
        MutualAidPolicy {
            default_reserve: 1,
            reserve_by_type: BTreeMap::new(),
            waive_reserve_from: Grade::II,
        }
    }
}

impl MutualAidPolicy {
    /// Units of `unit_type` a responder keeps for an incident of `grade`.
    pub fn reserve(&self, unit_type: &str, grade: Option<Grade>) -> u32 {
        if grade.is_some_and(|grade| grade <= self.waive_reserve_from) {
            return 0;
        }
        self.reserve_by_type
            .get(unit_type)
            .copied()
            .unwrap_or(self.default_reserve)
    }
}

/// True when `code` is `root` or lies below it.
pub fn in_subtree(tree: &JurisdictionTree, root: &str, code: &str) -> bool {
    tree.ancestors_iter(code).any(|item| item.code == root)
}

/// The lead in effect: `lead_code` when the tree knows it, else the county of the incident's
/// township (else the township itself).
pub fn effective_lead<'a>(
    tree: &'a JurisdictionTree,
    lead_code: &'a str,
    incident_township: &'a str,
) -> &'a str {
    if tree.get(lead_code).is_some() {
        return lead_code;
    }
    tree.county_of(incident_township)
        .map(|county| county.code.as_str())
        .unwrap_or(incident_township)
}

/// A jurisdiction mutual aid may be asked of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Responder<'t> {
    pub jurisdiction: &'t Jurisdiction,
    /// 1 for the lead's siblings, 2 for its parent's siblings, ...
    pub depth: u32,
}

/// Every jurisdiction outside `lead`'s subtree that may be asked, in cascade order: the lead's
/// siblings, then its parent's siblings, up to the root's children; within a ring nearest
/// centroid to `incident_at` first (jurisdictions without a centroid last), then by code.
pub fn cascade<'t>(
    tree: &'t JurisdictionTree,
    lead: &str,
    incident_at: GeoPoint,
) -> Vec<Responder<'t>> {
    let mut out = Vec::new();
    let chain = tree.ancestors(lead);
    // chain: lead, parent, grandparent, ... root (see JurisdictionTree::ancestors).
    for (depth, pair) in chain.windows(2).enumerate() {
        let (below, above) = (pair[0], pair[1]);
        let mut ring: Vec<&Jurisdiction> = tree
            .children(&above.code)
            .into_iter()
            .filter(|child| child.code != below.code)
            .collect();
        let distance = |j: &Jurisdiction| {
            j.centroid
                .map_or(f64::INFINITY, |c| great_circle_km(c, incident_at))
        };
        ring.sort_by(|a, b| {
            distance(a)
                .total_cmp(&distance(b))
                .then_with(|| a.code.cmp(&b.code))
        });
        out.extend(ring.into_iter().map(|jurisdiction| Responder {
            jurisdiction,
            depth: depth as u32 + 1,
        }));
    }
    out
}

/// Where a request stands (EDXL-RM: RequestResource → CommitResource | DeclineResource →
/// ReleaseResource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Requested,
    /// Units committed; partial when fewer than requested.
    Committed,
    Declined,
    /// Every committed unit went back.
    Released,
}

impl RequestState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestState::Requested => "requested",
            RequestState::Committed => "committed",
            RequestState::Declined => "declined",
            RequestState::Released => "released",
        }
    }
}

/// Why a responder sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeclineReason {
    /// No unit of the type could be sent: none available, or none with a fresh position.
    NoneAvailable,
    /// Units are available, but only as many as the responder keeps at home.
    Reserve { available: u32, keep: u32 },
}

impl DeclineReason {
    /// The reason code: `none_available` or `reserve`.
    pub fn code(&self) -> &'static str {
        match self {
            DeclineReason::NoneAvailable => "none_available",
            DeclineReason::Reserve { .. } => "reserve",
        }
    }

    pub fn describe(&self, unit_type: &str) -> String {
        match self {
            DeclineReason::NoneAvailable => format!("no {unit_type} available to send"),
            DeclineReason::Reserve { available, keep } => format!(
                "{available} {unit_type} available, all kept in reserve (keeps {keep} at home)"
            ),
        }
    }
}

/// A refused change to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutualAidError {
    #[error("mutual-aid request {request_id}: cannot {action} a request that is {}", from.as_str())]
    IllegalTransition {
        request_id: String,
        from: RequestState,
        action: &'static str,
    },
    #[error(
        "mutual-aid request {request_id}: a commitment names 1 to {quantity} units, got {given}; decline instead of committing nothing"
    )]
    BadCommitment {
        request_id: String,
        quantity: u32,
        given: usize,
    },
    #[error("mutual-aid request {request_id}: unit {unit_id:?} was not committed to it")]
    NotCommitted { request_id: String, unit_id: String },
}

/// One mutual-aid request and its answers, stored by dispatch under
/// `mutual-aid/<ns>/<incident>/<request id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutualAidRequest {
    pub request_id: String,
    pub incident_id: String,
    /// The lead jurisdiction asking.
    pub requesting: String,
    /// The jurisdiction asked.
    pub responding: String,
    pub resource_type: String,
    pub quantity: u32,
    /// The ring the responder is in ([`Responder::depth`]).
    pub cascade_depth: u32,
    pub state: RequestState,
    /// Units committed, in the responder's ETA order.
    pub committed_unit_ids: Vec<String>,
    /// Committed units that went back home so far.
    pub released_unit_ids: Vec<String>,
    pub decline: Option<DeclineReason>,
    pub requested_at_unix_ms: i64,
    pub answered_at_unix_ms: Option<i64>,
    pub released_at_unix_ms: Option<i64>,
}

impl MutualAidRequest {
    /// A new request (state Requested).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: &str,
        incident_id: &str,
        requesting: &str,
        responding: &str,
        resource_type: &str,
        quantity: u32,
        cascade_depth: u32,
        now_unix_ms: i64,
    ) -> MutualAidRequest {
        MutualAidRequest {
            request_id: request_id.to_string(),
            incident_id: incident_id.to_string(),
            requesting: requesting.to_string(),
            responding: responding.to_string(),
            resource_type: resource_type.to_string(),
            quantity,
            cascade_depth,
            state: RequestState::Requested,
            committed_unit_ids: Vec::new(),
            released_unit_ids: Vec::new(),
            decline: None,
            requested_at_unix_ms: now_unix_ms,
            answered_at_unix_ms: None,
            released_at_unix_ms: None,
        }
    }

    fn refuse(&self, action: &'static str) -> MutualAidError {
        MutualAidError::IllegalTransition {
            request_id: self.request_id.clone(),
            from: self.state,
            action,
        }
    }

    /// CommitResource: Requested → Committed with 1..=quantity units.
    pub fn commit(
        &mut self,
        unit_ids: Vec<String>,
        now_unix_ms: i64,
    ) -> Result<(), MutualAidError> {
        if self.state != RequestState::Requested {
            return Err(self.refuse("commit"));
        }
        let distinct: HashSet<&String> = unit_ids.iter().collect();
        if unit_ids.is_empty()
            || unit_ids.len() > self.quantity as usize
            || distinct.len() != unit_ids.len()
        {
            return Err(MutualAidError::BadCommitment {
                request_id: self.request_id.clone(),
                quantity: self.quantity,
                given: unit_ids.len(),
            });
        }
        self.committed_unit_ids = unit_ids;
        self.state = RequestState::Committed;
        self.answered_at_unix_ms = Some(now_unix_ms);
        Ok(())
    }

    /// DeclineResource: Requested → Declined.
    pub fn decline(
        &mut self,
        reason: DeclineReason,
        now_unix_ms: i64,
    ) -> Result<(), MutualAidError> {
        if self.state != RequestState::Requested {
            return Err(self.refuse("decline"));
        }
        self.decline = Some(reason);
        self.state = RequestState::Declined;
        self.answered_at_unix_ms = Some(now_unix_ms);
        Ok(())
    }

    /// ReleaseResource for some committed units; the request becomes Released when the last one
    /// goes back. Releasing a unit already released is a no-op; returns the units released now.
    pub fn release(
        &mut self,
        unit_ids: &[String],
        now_unix_ms: i64,
    ) -> Result<Vec<String>, MutualAidError> {
        if self.state != RequestState::Committed {
            return Err(self.refuse("release"));
        }
        if let Some(stranger) = unit_ids
            .iter()
            .find(|id| !self.committed_unit_ids.contains(id))
        {
            return Err(MutualAidError::NotCommitted {
                request_id: self.request_id.clone(),
                unit_id: stranger.clone(),
            });
        }
        let mut now_released = Vec::new();
        for id in unit_ids {
            if !self.released_unit_ids.contains(id) && !now_released.contains(id) {
                now_released.push(id.clone());
            }
        }
        self.released_unit_ids.extend(now_released.iter().cloned());
        if self.outstanding_unit_ids().is_empty() {
            self.state = RequestState::Released;
            self.released_at_unix_ms = Some(now_unix_ms);
        }
        Ok(now_released)
    }

    /// ReleaseResource for every unit still out.
    pub fn release_all(&mut self, now_unix_ms: i64) -> Result<Vec<String>, MutualAidError> {
        let outstanding = self.outstanding_unit_ids();
        self.release(&outstanding, now_unix_ms)
    }

    /// Committed units not yet released.
    pub fn outstanding_unit_ids(&self) -> Vec<String> {
        self.committed_unit_ids
            .iter()
            .filter(|id| !self.released_unit_ids.contains(id))
            .cloned()
            .collect()
    }

    /// True for a commitment of fewer units than asked.
    pub fn is_partial(&self) -> bool {
        !self.committed_unit_ids.is_empty()
            && self.committed_unit_ids.len() < self.quantity as usize
    }
}

/// A responder's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The units sent, nearest by ETA first (fewer than asked: a partial commitment). `kept` is
    /// the reserve that stayed home.
    Commit {
        picks: Vec<Pick>,
        kept: u32,
    },
    Decline(DeclineReason),
}

/// The responder's policy: among `units` homed in `responder`'s subtree (ids in `taken`, already
/// sent to the incident, left out), the nearest by ETA of `resource_type`, at most `quantity`,
/// keeping the policy's reserve of available units at home. Units in `not_pickable` (they
/// declined this incident before) count as at home but are not sent.
#[allow(clippy::too_many_arguments)]
pub fn answer_request(
    tree: &JurisdictionTree,
    responder: &str,
    resource_type: &str,
    quantity: u32,
    units: &[UnitView],
    taken: &HashSet<String>,
    not_pickable: &HashSet<String>,
    incident_at: GeoPoint,
    options: &RecommendOptions,
    policy: &MutualAidPolicy,
    grade: Option<Grade>,
    now_unix_ms: i64,
) -> Answer {
    let home: Vec<UnitView> = units
        .iter()
        .filter(|view| view.unit.unit_type == resource_type)
        .filter(|view| !taken.contains(&view.unit.id))
        .filter(|view| in_subtree(tree, responder, &view.unit.jurisdiction))
        .copied()
        .collect();
    let available = home
        .iter()
        .filter(|view| view.status.is_assignable())
        .map(|view| view.unit.id.as_str())
        .collect::<HashSet<_>>()
        .len() as u32;
    let keep = policy.reserve(resource_type, grade);
    let spare = available.saturating_sub(keep);
    let wanted = quantity.min(spare);
    let pickable: Vec<UnitView> = home
        .iter()
        .filter(|view| !not_pickable.contains(&view.unit.id))
        .copied()
        .collect();
    let picks = if wanted == 0 {
        Vec::new()
    } else {
        recommend_by_eta(
            &[ResourceRequirement {
                unit_type: resource_type.to_string(),
                count: wanted,
            }],
            incident_at,
            &pickable,
            options,
            now_unix_ms,
        )
        .picks
    };
    if !picks.is_empty() {
        return Answer::Commit {
            kept: keep.min(available),
            picks,
        };
    }
    if spare == 0 && available > 0 {
        Answer::Decline(DeclineReason::Reserve { available, keep })
    } else {
        Answer::Decline(DeclineReason::NoneAvailable)
    }
}

/// A request [`plan_mutual_aid`] made, with the responder's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRequest {
    pub requesting: String,
    pub responding: String,
    pub cascade_depth: u32,
    pub resource_type: String,
    pub quantity: u32,
    pub answer: Answer,
}

impl PlannedRequest {
    /// The units committed (empty for a decline).
    pub fn committed_picks(&self) -> &[Pick] {
        match &self.answer {
            Answer::Commit { picks, .. } => picks,
            Answer::Decline(_) => &[],
        }
    }
}

/// What the lead's units fill and what mutual aid adds.
#[derive(Debug, Clone, PartialEq)]
pub struct AidRecommendation {
    /// The lead in effect ([`effective_lead`]).
    pub lead: String,
    /// The lead's own units, in requirement order.
    pub own: Vec<Pick>,
    /// Requests in the order made; committed picks are in their answers.
    pub requests: Vec<PlannedRequest>,
    /// What is still missing after mutual aid, explained over the whole region.
    pub gaps: Vec<Gap>,
}

impl AidRecommendation {
    /// Every pick: own units first, then committed mutual-aid units with their request's index.
    pub fn picks(&self) -> impl Iterator<Item = (&Pick, Option<usize>)> {
        self.own
            .iter()
            .map(|pick| (pick, None))
            .chain(
                self.requests
                    .iter()
                    .enumerate()
                    .flat_map(|(index, request)| {
                        request
                            .committed_picks()
                            .iter()
                            .map(move |p| (p, Some(index)))
                    }),
            )
    }
}

/// Where the incident is and who leads it, for [`plan_mutual_aid`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AidPlace<'a> {
    pub location: GeoPoint,
    pub township_code: &'a str,
    /// Escalation's lead; empty or unknown means the township's county.
    pub lead_code: &'a str,
    pub grade: Option<Grade>,
}

/// The lead's own units first ([`recommend_by_eta`] among units homed in the lead's subtree);
/// for every requirement left short, requests down the [`cascade`] until it is filled, each
/// answered by the responder's policy ([`answer_request`]). Remaining gaps are explained over
/// every unit in `units`, with the units responders held in reserve. Units in `excluded` (they
/// declined the incident or let it time out) are never picked, but still count as at home for a
/// responder's reserve.
#[allow(clippy::too_many_arguments)]
pub fn plan_mutual_aid(
    tree: &JurisdictionTree,
    requirements: &[ResourceRequirement],
    place: AidPlace,
    units: &[UnitView],
    excluded: &HashSet<String>,
    options: &RecommendOptions,
    policy: &MutualAidPolicy,
    now_unix_ms: i64,
) -> AidRecommendation {
    let lead = effective_lead(tree, place.lead_code, place.township_code).to_string();
    // Every step below looks at units of one required type at a time: the others are left out
    // once, rather than walked past by each step (a roster of thousands, a few types needed).
    let units: Vec<UnitView> = units
        .iter()
        .filter(|view| {
            requirements
                .iter()
                .any(|requirement| requirement.unit_type == view.unit.unit_type)
        })
        .copied()
        .collect();
    let units = units.as_slice();
    // Whether a county is in the lead's subtree, asked once per county rather than per unit.
    let mut own_county: HashMap<&str, bool> = HashMap::new();
    let own_views: Vec<UnitView> = units
        .iter()
        .filter(|view| {
            let county = view.unit.jurisdiction.as_str();
            *own_county
                .entry(county)
                .or_insert_with(|| in_subtree(tree, &lead, county))
        })
        .filter(|view| !excluded.contains(&view.unit.id))
        .copied()
        .collect();
    let Recommendation { picks: own, gaps } = recommend_by_eta(
        requirements,
        place.location,
        &own_views,
        options,
        now_unix_ms,
    );
    let mut taken: HashSet<String> = own.iter().map(|pick| pick.unit_id.clone()).collect();
    let mut requests = Vec::new();
    let mut kept_by_type: HashMap<String, u32> = HashMap::new();
    let responders = if gaps.is_empty() {
        Vec::new()
    } else {
        cascade(tree, &lead, place.location)
    };
    for gap in &gaps {
        let mut missing = gap.required - gap.assigned;
        for responder in &responders {
            if missing == 0 {
                break;
            }
            let code = responder.jurisdiction.code.as_str();
            // Only jurisdictions holding units of the type at all are asked.
            let holds_type = units.iter().any(|view| {
                view.unit.unit_type == gap.unit_type
                    && in_subtree(tree, code, &view.unit.jurisdiction)
            });
            if !holds_type {
                continue;
            }
            let answer = answer_request(
                tree,
                code,
                &gap.unit_type,
                missing,
                units,
                &taken,
                excluded,
                place.location,
                options,
                policy,
                place.grade,
                now_unix_ms,
            );
            match &answer {
                Answer::Commit { picks, kept } => {
                    missing -= picks.len() as u32;
                    taken.extend(picks.iter().map(|pick| pick.unit_id.clone()));
                    *kept_by_type.entry(gap.unit_type.clone()).or_default() += kept;
                }
                Answer::Decline(DeclineReason::Reserve { keep, available }) => {
                    *kept_by_type.entry(gap.unit_type.clone()).or_default() += keep.min(available);
                }
                Answer::Decline(DeclineReason::NoneAvailable) => {}
            }
            requests.push(PlannedRequest {
                requesting: lead.clone(),
                responding: code.to_string(),
                cascade_depth: responder.depth,
                resource_type: gap.unit_type.clone(),
                quantity: missing
                    + match &answer {
                        Answer::Commit { picks, .. } => picks.len() as u32,
                        Answer::Decline(_) => 0,
                    },
                answer,
            });
        }
    }

    // What is still short, explained over the whole region (units that declined the incident
    // left out, as they are no candidates).
    let region_views: Vec<UnitView> = units
        .iter()
        .filter(|view| !excluded.contains(&view.unit.id))
        .copied()
        .collect();
    let mut final_gaps = Vec::new();
    let mut picked_all: HashSet<&str> = taken.iter().map(String::as_str).collect();
    picked_all.extend(own.iter().map(|pick| pick.unit_id.as_str()));
    for gap in &gaps {
        let from_aid: u32 = requests
            .iter()
            .filter(|request| request.resource_type == gap.unit_type)
            .map(|request| match &request.answer {
                Answer::Commit { picks, .. } => picks.len() as u32,
                Answer::Decline(_) => 0,
            })
            .sum();
        let assigned = gap.assigned + from_aid;
        if assigned >= gap.required {
            continue;
        }
        let requirement = ResourceRequirement {
            unit_type: gap.unit_type.clone(),
            count: gap.required,
        };
        let mut region_gap = crate::dispatch::explain_gap(
            &requirement,
            assigned,
            &region_views,
            &picked_all,
            place.location,
            options,
            now_unix_ms,
        );
        let kept = kept_by_type.get(&gap.unit_type).copied().unwrap_or(0);
        if kept > 0 {
            region_gap
                .reasons
                .push(ShortfallReason::HeldInReserve { count: kept });
        }
        let asked: Vec<String> = requests
            .iter()
            .filter(|request| request.resource_type == gap.unit_type)
            .map(|request| match &request.answer {
                Answer::Commit { picks, .. } => {
                    format!("{} sent {}", request.responding, picks.len())
                }
                Answer::Decline(reason) => {
                    format!("{} declined ({})", request.responding, reason.code())
                }
            })
            .collect();
        let base = region_gap
            .reason
            .strip_suffix("; request mutual aid")
            .unwrap_or(&region_gap.reason)
            .to_string();
        region_gap.reason = if asked.is_empty() {
            format!(
                "{base}; no neighbouring jurisdiction holds {}",
                gap.unit_type
            )
        } else {
            format!("{base}; mutual aid: {}", asked.join(", "))
        };
        final_gaps.push(region_gap);
    }
    AidRecommendation {
        lead,
        own,
        requests,
        gaps: final_gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Region, Unit};
    use crate::unit::UnitStatus;

    const QINGXI_TOWN: &str = "390121100";
    const CHEMICAL_PARK: &str = "390202400";

    fn views<'a>(region: &'a Region, busy: &[&str]) -> Vec<UnitView<'a>> {
        region
            .units
            .iter()
            .map(|unit: &Unit| {
                let status = if busy.contains(&unit.id.as_str()) {
                    UnitStatus::Dispatched
                } else {
                    UnitStatus::Available
                };
                UnitView::new(unit, status, 0)
            })
            .collect()
    }

    fn need(unit_type: &str, count: u32) -> Vec<ResourceRequirement> {
        vec![ResourceRequirement {
            unit_type: unit_type.into(),
            count,
        }]
    }

    fn place<'a>(region: &Region, township: &'a str, lead: &'a str, grade: Grade) -> AidPlace<'a> {
        AidPlace {
            location: region.township_centroid(township).unwrap(),
            township_code: township,
            lead_code: lead,
            grade: Some(grade),
        }
    }

    fn plan(
        region: &Region,
        requirements: &[ResourceRequirement],
        place: AidPlace,
        busy: &[&str],
    ) -> AidRecommendation {
        plan_mutual_aid(
            &region.tree,
            requirements,
            place,
            &views(region, busy),
            &HashSet::new(),
            &RecommendOptions::for_region(region),
            &MutualAidPolicy::default(),
            0,
        )
    }

    #[test]
    fn the_cascade_asks_sibling_counties_then_the_parents_siblings_nearest_first() {
        let region = Region::embedded_default();
        let at = region.township_centroid(QINGXI_TOWN).unwrap();
        let order: Vec<(String, u32)> = cascade(&region.tree, "390121", at)
            .into_iter()
            .map(|r| (r.jurisdiction.code.clone(), r.depth))
            .collect();
        assert_eq!(
            order,
            vec![("390102".to_string(), 1), ("390200".to_string(), 2)]
        );
        // A province-led incident has nobody to ask inside the province; a national one none.
        assert!(cascade(&region.tree, "390000", at).is_empty());
        assert!(cascade(&region.tree, "000000", at).is_empty());
    }

    #[test]
    fn own_units_come_first_even_when_a_neighbours_are_nearer() {
        let region = Region::embedded_default();
        // An ambulance at Qingxi town, county-led: Qingxi's own two ambulances, none from
        // Donghu even though the nearest-ETA ranking alone might differ.
        let aid = plan(
            &region,
            &need("ambulance", 2),
            place(&region, QINGXI_TOWN, "390121", Grade::IV),
            &[],
        );
        let ids: Vec<&str> = aid.own.iter().map(|p| p.unit_id.as_str()).collect();
        assert_eq!(ids, vec!["QX-AMB-1", "QX-AMB-2"]);
        assert!(aid.requests.is_empty());
        assert!(aid.gaps.is_empty());
    }

    #[test]
    fn a_county_without_hazmat_asks_its_sibling_county_which_keeps_one_in_reserve() {
        let region = Region::embedded_default();
        // Qingxi has no hazmat; Donghu has two and keeps one: it commits one.
        let aid = plan(
            &region,
            &need("hazmat", 1),
            place(&region, QINGXI_TOWN, "390121", Grade::IV),
            &[],
        );
        assert!(aid.own.is_empty());
        assert_eq!(aid.requests.len(), 1);
        let request = &aid.requests[0];
        assert_eq!(request.requesting, "390121");
        assert_eq!(request.responding, "390102");
        assert_eq!(request.cascade_depth, 1);
        assert_eq!(request.quantity, 1);
        match &request.answer {
            Answer::Commit { picks, kept } => {
                assert_eq!(picks.len(), 1);
                assert!(picks[0].unit_id.starts_with("DH-HAZ-"));
                assert_eq!(*kept, 1);
            }
            other => panic!("expected a commitment, got {other:?}"),
        }
        assert!(aid.gaps.is_empty());
    }

    #[test]
    fn a_partial_commitment_then_the_next_ring_fills_the_rest() {
        let region = Region::embedded_default();
        // Two hazmat for Qingxi at grade IV: Donghu sends 1 (keeps 1), Gangbei city sends 1.
        let aid = plan(
            &region,
            &need("hazmat", 2),
            place(&region, QINGXI_TOWN, "390121", Grade::IV),
            &[],
        );
        assert_eq!(aid.requests.len(), 2);
        let first = &aid.requests[0];
        assert_eq!((first.responding.as_str(), first.quantity), ("390102", 2));
        assert!(matches!(&first.answer, Answer::Commit { picks, .. } if picks.len() == 1));
        let second = &aid.requests[1];
        assert_eq!(
            (
                second.responding.as_str(),
                second.quantity,
                second.cascade_depth
            ),
            ("390200", 1, 2)
        );
        match &second.answer {
            Answer::Commit { picks, .. } => assert!(picks[0].unit_id.starts_with("GB-HAZ-")),
            other => panic!("expected a commitment, got {other:?}"),
        }
        assert!(aid.gaps.is_empty());
        let all: Vec<(&str, Option<usize>)> =
            aid.picks().map(|(p, i)| (p.unit_id.as_str(), i)).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, Some(0));
        assert_eq!(all[1].1, Some(1));
    }

    #[test]
    fn declines_name_the_reserve_or_none_available_and_the_gap_says_so() {
        let region = Region::embedded_default();
        // Donghu's DH-HAZ-2 is busy: its one remaining hazmat is its reserve. Gangbei's three
        // hazmat are all busy: none available. Shitang (same city) holds none and is not asked.
        let busy = ["DH-HAZ-2", "GB-HAZ-1", "GB-HAZ-2", "GB-HAZ-3"];
        let aid = plan(
            &region,
            &need("hazmat", 1),
            place(&region, QINGXI_TOWN, "390121", Grade::IV),
            &busy,
        );
        let answers: Vec<(&str, &Answer)> = aid
            .requests
            .iter()
            .map(|r| (r.responding.as_str(), &r.answer))
            .collect();
        assert_eq!(
            answers,
            vec![
                (
                    "390102",
                    &Answer::Decline(DeclineReason::Reserve {
                        available: 1,
                        keep: 1
                    })
                ),
                ("390200", &Answer::Decline(DeclineReason::NoneAvailable)),
            ]
        );
        assert_eq!(aid.gaps.len(), 1);
        let gap = &aid.gaps[0];
        assert!(
            gap.reasons
                .contains(&ShortfallReason::HeldInReserve { count: 1 })
        );
        assert!(gap.reasons.contains(&ShortfallReason::Busy { count: 4 }));
        assert!(
            gap.reason.contains("390102 declined (reserve)"),
            "{}",
            gap.reason
        );
    }

    #[test]
    fn a_grade_ii_incident_waives_the_reserve() {
        let region = Region::embedded_default();
        // County lead kept at grade II here only to exercise the policy.
        let aid = plan(
            &region,
            &need("hazmat", 2),
            place(&region, QINGXI_TOWN, "390121", Grade::II),
            &[],
        );
        assert_eq!(aid.requests.len(), 1);
        assert!(
            matches!(&aid.requests[0].answer, Answer::Commit { picks, kept: 0 } if picks.len() == 2)
        );
        let policy = MutualAidPolicy {
            reserve_by_type: [("hazmat".to_string(), 2)].into_iter().collect(),
            ..MutualAidPolicy::default()
        };
        assert_eq!(policy.reserve("hazmat", Some(Grade::III)), 2);
        assert_eq!(policy.reserve("ambulance", Some(Grade::IV)), 1);
        assert_eq!(policy.reserve("hazmat", Some(Grade::I)), 0);
        assert_eq!(policy.reserve("hazmat", None), 2);
    }

    #[test]
    fn a_province_led_incident_draws_on_the_whole_province_without_requests() {
        let region = Region::embedded_default();
        // Four hazmat at the chemical park under a province lead: all own units, none asked.
        let aid = plan(
            &region,
            &need("hazmat", 4),
            place(&region, CHEMICAL_PARK, "390000", Grade::II),
            &[],
        );
        assert_eq!(aid.own.len(), 4);
        assert!(aid.requests.is_empty());
        // The same need under the county lead (grade IV): Gangbei county's three, then one
        // asked of its sibling Shitang (holds none: not asked), then the other city.
        let aid = plan(
            &region,
            &need("hazmat", 4),
            place(&region, CHEMICAL_PARK, "390202", Grade::IV),
            &[],
        );
        assert_eq!(aid.own.len(), 3);
        assert_eq!(aid.requests.len(), 1);
        assert_eq!(aid.requests[0].responding, "390100");
        assert_eq!(aid.requests[0].cascade_depth, 2);
        assert_eq!(aid.lead, "390202");
    }

    #[test]
    fn an_unknown_lead_falls_back_to_the_incidents_county() {
        let region = Region::embedded_default();
        assert_eq!(
            effective_lead(&region.tree, "3902", CHEMICAL_PARK),
            "390202"
        );
        assert_eq!(
            effective_lead(&region.tree, "390200", CHEMICAL_PARK),
            "390200"
        );
    }

    #[test]
    fn the_request_state_machine_refuses_illegal_transitions() {
        let mut request =
            MutualAidRequest::new("R1", "INC-1", "390121", "390102", "hazmat", 2, 1, 10);
        assert_eq!(request.state, RequestState::Requested);
        // Nothing to release before a commitment; an empty or oversized commitment is refused.
        assert!(matches!(
            request.release(&[], 11),
            Err(MutualAidError::IllegalTransition {
                from: RequestState::Requested,
                ..
            })
        ));
        assert!(matches!(
            request.commit(vec![], 11),
            Err(MutualAidError::BadCommitment { .. })
        ));
        assert!(matches!(
            request.commit(vec!["A".into(), "B".into(), "C".into()], 11),
            Err(MutualAidError::BadCommitment { .. })
        ));
        request.commit(vec!["A".into()], 12).unwrap();
        assert_eq!(request.state, RequestState::Committed);
        assert!(request.is_partial());
        assert_eq!(request.answered_at_unix_ms, Some(12));
        // Answered once only.
        assert!(request.commit(vec!["B".into()], 13).is_err());
        assert!(matches!(
            request.decline(DeclineReason::NoneAvailable, 13),
            Err(MutualAidError::IllegalTransition {
                from: RequestState::Committed,
                action: "decline",
                ..
            })
        ));
        assert!(matches!(
            request.release(&["Z".into()], 14),
            Err(MutualAidError::NotCommitted { .. })
        ));
        assert_eq!(request.release_all(15).unwrap(), vec!["A".to_string()]);
        assert_eq!(request.state, RequestState::Released);
        assert_eq!(request.released_at_unix_ms, Some(15));
        assert!(request.release_all(16).is_err());
        assert!(request.commit(vec!["A".into()], 16).is_err());

        let mut declined =
            MutualAidRequest::new("R2", "INC-1", "390121", "390102", "hazmat", 1, 1, 10);
        declined
            .decline(
                DeclineReason::Reserve {
                    available: 1,
                    keep: 1,
                },
                11,
            )
            .unwrap();
        assert_eq!(declined.state, RequestState::Declined);
        assert!(declined.commit(vec!["A".into()], 12).is_err());
        assert!(declined.release_all(12).is_err());
        assert!(declined.decline(DeclineReason::NoneAvailable, 12).is_err());
    }

    #[test]
    fn partial_releases_keep_the_request_committed_until_the_last_unit_is_back() {
        let mut request =
            MutualAidRequest::new("R1", "INC-1", "390121", "390200", "hazmat", 2, 2, 0);
        request.commit(vec!["A".into(), "B".into()], 1).unwrap();
        assert!(!request.is_partial());
        assert_eq!(
            request.release(&["A".into()], 2).unwrap(),
            vec!["A".to_string()]
        );
        assert_eq!(request.state, RequestState::Committed);
        assert_eq!(
            request.release(&["A".into()], 3).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(request.outstanding_unit_ids(), vec!["B".to_string()]);
        request.release(&["B".into()], 4).unwrap();
        assert_eq!(request.state, RequestState::Released);
    }
}
