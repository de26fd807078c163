//! The consumers: the assigner turns a `graded` event into unit bookings (status changes through
//! the state machine) and a `units_assigned` event, and a `closed` event into the release of
//! every unit the incident holds ([`assignment::stage_incident_close`]); the position tracker records the positions
//! units publish on `muster.<ns>.unit.<id>.position`. Every booking arms the unit's
//! acknowledgement timer in the same commit (see [`crate::assignment`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError, subjects};
use domain::dispatch::{RecommendOptions, UnitView, reason_code};
use domain::event::{Assignment, EventBody, IncidentEvent, Shortfall, UnitsAssigned};
use domain::geo::GeoPoint;
use domain::mutual_aid::{AidPlace, MutualAidPolicy, PlannedRequest};
use domain::region::{Region, ResourceRequirement};
use domain::unit::UnitEvent;
use muster_proto::convert_unit::UnitChange;
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

use crate::assignment::{self, EndedAssignment};
use crate::registry::{self, UnitRecord};

/// What dispatch has sent to one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub incident_id: String,
    pub namespace: String,
    pub plan_id: String,
    /// The units currently assigned; a unit that declines, times out or is released leaves this
    /// list for `ended`.
    pub assignments: Vec<Assignment>,
    pub shortfalls: Vec<Shortfall>,
    /// Where the incident is, for replacements. `None` in records stored before it was kept.
    #[serde(default)]
    pub location: Option<GeoPoint>,
    /// Units that left the incident, oldest first, at most
    /// [`assignment::ENDED_ASSIGNMENTS_MAX`].
    #[serde(default)]
    pub ended: Vec<EndedAssignment>,
    /// When the incident was closed (`closed` event): its units were released and nothing is
    /// booked for it again.
    #[serde(default)]
    pub closed_at_unix_ms: Option<i64>,
    /// The incident's township and lead jurisdiction from its latest grading, for the
    /// jurisdiction reasons of later bookings. `None` in records stored before they were kept.
    #[serde(default)]
    pub township_code: Option<String>,
    #[serde(default)]
    pub lead_code: Option<String>,
    /// The sub-type and grade the plan was chosen for (`Recommend` on the incident uses them).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub grade: Option<domain::grade::Grade>,
    /// The last mutual-aid request number used for this incident (request ids are
    /// `<incident>-MA<number>`).
    #[serde(default)]
    pub mutual_aid_seq: u32,
    /// Units that came by mutual aid and are still assigned: unit id → request id.
    #[serde(default)]
    pub aid_request_by_unit: BTreeMap<String, String>,
}

impl AssignmentRecord {
    /// The incident's partition, which its events are published in: the province of its
    /// township (the root's when the record has none, as records stored before townships were
    /// kept).
    pub fn partition<'a>(&self, tree: &'a domain::jurisdiction::JurisdictionTree) -> &'a str {
        tree.partition_of(self.township_code.as_deref().unwrap_or(""))
    }

    /// Units that must not be assigned to this incident again: they declined it or let their
    /// acknowledgement time out.
    /// A record for an incident dispatch has booked nothing for yet.
    pub fn empty(namespace: &str, incident_id: &str) -> AssignmentRecord {
        AssignmentRecord {
            incident_id: incident_id.to_string(),
            namespace: namespace.to_string(),
            plan_id: String::new(),
            assignments: Vec::new(),
            shortfalls: Vec::new(),
            location: None,
            ended: Vec::new(),
            closed_at_unix_ms: None,
            township_code: None,
            lead_code: None,
            kind: None,
            grade: None,
            mutual_aid_seq: 0,
            aid_request_by_unit: BTreeMap::new(),
        }
    }

    /// Where the incident is, for jurisdiction reasons: its township, lead (empty if unknown)
    /// and grade.
    pub fn place(&self, location: GeoPoint) -> IncidentPlace {
        IncidentPlace {
            location,
            township_code: self.township_code.clone().unwrap_or_default(),
            lead_code: self.lead_code.clone().unwrap_or_default(),
            grade: self.grade,
        }
    }

    pub fn excluded_unit_ids(&self) -> HashSet<&str> {
        self.ended
            .iter()
            .filter(|ended| ended.outcome.excludes_the_unit())
            .map(|ended| ended.unit_id.as_str())
            .collect()
    }
}

/// The recommendation options dispatch uses: the region's speeds and the stale limit
/// ([`registry::STALE_POSITION_AFTER_MS_DEFAULT`] unless configured, see
/// [`crate::Config::stale_position_ms`]).
pub fn recommend_options(region: &Region, stale_position_ms: Option<i64>) -> RecommendOptions {
    let mut options = RecommendOptions::for_region(region);
    options.stale_after_ms = stale_position_ms.unwrap_or(registry::STALE_POSITION_AFTER_MS_DEFAULT);
    options
}

/// Where an incident is, for ranking and for jurisdiction reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentPlace {
    pub location: GeoPoint,
    /// The incident's township; its county is cascade depth 0.
    pub township_code: String,
    /// The lead jurisdiction; empty for the township's county.
    pub lead_code: String,
    /// The incident's grade: responders keep no reserve for grade I and II.
    pub grade: Option<domain::grade::Grade>,
}

/// A recommendation as dispatch books it: the lead's own units, then the units committed by
/// mutual aid, the requests made (with their answers) and what is still short.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommended {
    pub assignments: Vec<Assignment>,
    /// For each assignment, the index into `requests` of the request that brought it.
    pub via_request: Vec<Option<usize>>,
    pub requests: Vec<PlannedRequest>,
    pub shortfalls: Vec<Shortfall>,
}

/// The recommendation for `requirements` at `place` among the registry's units (retired ones and
/// `excluded` left out): the lead's own units first, then mutual aid down the cascade
/// ([`domain::mutual_aid::plan_mutual_aid`]), as the assignments it would make, the requests and
/// the shortfalls, with their reason codes. Pure apart from its inputs: used by the assigner,
/// replacements and the dry run alike.
#[allow(clippy::too_many_arguments)]
pub fn recommend_units(
    region: &Region,
    options: &RecommendOptions,
    policy: &MutualAidPolicy,
    records: &[UnitRecord],
    excluded: &HashSet<String>,
    requirements: &[ResourceRequirement],
    place: &IncidentPlace,
    now_unix_ms: i64,
) -> Recommended {
    let views: Vec<UnitView> = records
        .iter()
        .filter(|record| !record.is_retired())
        .map(|record| {
            UnitView::new(
                &record.unit,
                record.state.status,
                record.position_age_basis_unix_ms(now_unix_ms),
            )
        })
        .collect();
    let aid = domain::mutual_aid::plan_mutual_aid(
        &region.tree,
        requirements,
        AidPlace {
            location: place.location,
            township_code: &place.township_code,
            lead_code: &place.lead_code,
            grade: place.grade,
        },
        &views,
        excluded,
        options,
        policy,
        now_unix_ms,
    );
    let mut assignments = Vec::new();
    let mut via_request = Vec::new();
    for (pick, via) in aid.picks() {
        let county = views
            .iter()
            .find(|view| view.unit.id == pick.unit_id)
            .map_or("", |view| view.unit.jurisdiction.as_str());
        let mut assignment = pick.to_assignment(domain::dispatch::jurisdiction_standing(
            &region.tree,
            &aid.lead,
            &place.township_code,
            county,
        ));
        if let Some(index) = via {
            let responder = &aid.requests[index].responding;
            let name = region
                .tree
                .get(responder)
                .map_or(responder.as_str(), |j| j.name.as_str());
            assignment
                .reason_codes
                .push(reason_code::VIA_MUTUAL_AID.into());
            assignment
                .reason_codes
                .push(reason_code::CASCADE_DEPTH.into());
            assignment.reason.push_str(&format!(
                "; via mutual aid from {name} ({responder}), cascade depth {}",
                aid.requests[index].cascade_depth
            ));
        }
        assignments.push(assignment);
        via_request.push(via);
    }
    Recommended {
        assignments,
        via_request,
        shortfalls: aid.gaps.iter().map(|gap| gap.to_shortfall()).collect(),
        requests: aid.requests,
    }
}

/// The shortfall of an incident no plan covers.
pub fn no_plan_shortfall(kind: &str, grade: Option<domain::grade::Grade>) -> Shortfall {
    let grade = grade.map_or("ungraded".to_string(), |g| format!("grade {}", g.roman()));
    Shortfall {
        unit_type: "*".into(),
        required: 0,
        assigned: 0,
        reason: format!("no plan (预案) covers {kind} at {grade}; assign units by hand"),
        reason_codes: vec![
            domain::dispatch::reason_code::NONE_AVAILABLE.into(),
            domain::dispatch::reason_code::NO_PLAN.into(),
        ],
        causes: Vec::new(),
    }
}

/// `assignment/<ns>/<incident id>`.
pub fn assignment_key(namespace: &str, incident_id: &str) -> String {
    format!("assignment/{namespace}/{incident_id}")
}

/// Books units for graded incidents.
pub struct Assigner {
    store: Store,
    region: Arc<Region>,
    options: RecommendOptions,
    policy: MutualAidPolicy,
    assignment_ack_timeout_ms: i64,
    /// The unit records and board logs of the namespaces booked in lately (live, and a few
    /// drills).
    boards: HashMap<String, NamespaceBoard>,
}

/// What the assigner keeps of one namespace between bookings.
#[derive(Default)]
struct NamespaceBoard {
    /// Its unit records, decoded.
    units: registry::UnitBoard,
    /// Its board log, which the decisions' boards are written to.
    log: crate::decision::BoardLog,
}

/// Namespaces whose unit boards the assigner keeps decoded at once.
const BOARDS_MAX: usize = 8;

impl Assigner {
    /// An assigner whose bookings must be acknowledged within
    /// [`assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT`].
    pub fn new(store: Store, region: Arc<Region>) -> Assigner {
        Assigner {
            options: recommend_options(&region, None),
            policy: MutualAidPolicy::default(),
            store,
            region,
            assignment_ack_timeout_ms: assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT,
            boards: HashMap::new(),
        }
    }

    /// The same, with another mutual-aid policy for the responders (reserves).
    pub fn with_mutual_aid_policy(mut self, policy: MutualAidPolicy) -> Assigner {
        self.policy = policy;
        self
    }

    /// The same, with another stale-position limit (milliseconds; `None` for the default).
    pub fn with_stale_position_ms(mut self, stale_position_ms: Option<i64>) -> Assigner {
        self.options = recommend_options(&self.region, stale_position_ms);
        self
    }

    /// The same, with another acknowledgement timeout (milliseconds, positive).
    pub fn with_ack_timeout_ms(mut self, assignment_ack_timeout_ms: i64) -> Assigner {
        self.assignment_ack_timeout_ms = assignment_ack_timeout_ms.max(1);
        self
    }
}

impl Handler for Assigner {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let graded = match &event.body {
            EventBody::Graded(graded) => graded,
            EventBody::Closed(closed) => {
                return assignment::stage_incident_close(
                    &self.store,
                    &self.region.tree,
                    &event.namespace,
                    &event.incident_id,
                    &closed.reason,
                    lifecycle::unix_ms_now(),
                )
                .map_err(|error| match error {
                    assignment::StatusChangeError::Store(e) => HandlerError::Retry(e.to_string()),
                    other => {
                        HandlerError::Poison(format!("incident {}: {other}", event.incident_id))
                    }
                });
            }
            other => {
                return Err(HandlerError::Poison(format!(
                    "expected a graded or closed event, got {}",
                    other.event_type()
                )));
            }
        };
        let namespace = &event.namespace;
        let record_key = assignment_key(namespace, &event.incident_id);
        let existing_raw = self
            .store
            .get_raw(&record_key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        let existing: Option<AssignmentRecord> = existing_raw
            .as_deref()
            .map(|raw| store::decode_value(&record_key, raw))
            .transpose()
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        if existing
            .as_ref()
            .is_some_and(|record| record.closed_at_unix_ms.is_some())
        {
            // A grading that crossed the close on the bus: a closed incident gets no units.
            tracing::info!(incident_id = %event.incident_id, "graded after closed; nothing booked");
            return Ok(Commit::new());
        }
        let excluded: HashSet<String> = existing
            .iter()
            .flat_map(|record| record.excluded_unit_ids())
            .map(str::to_string)
            .collect();
        let report = &graded.report;
        let plan = self.region.plans.plan_for(&report.kind, graded.grade);

        // Send only what the plan asks for beyond what the incident already has (an upgrade
        // sends the difference).
        let mut already: HashMap<String, u32> = HashMap::new();
        for assignment in existing.iter().flat_map(|r| &r.assignments) {
            *already.entry(assignment.unit_type.clone()).or_default() += 1;
        }
        let requirements: Vec<ResourceRequirement> = plan
            .map(|plan| domain::dispatch::plan_difference(&plan.resources, &already))
            .unwrap_or_default();

        let now = lifecycle::unix_ms_now();
        if self.boards.len() >= BOARDS_MAX && !self.boards.contains_key(namespace) {
            self.boards.clear();
        }
        let board = self.boards.entry(namespace.clone()).or_default();
        board
            .units
            .refresh(&self.store, namespace)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        let records = board.units.records();
        let place = IncidentPlace {
            location: report.location,
            township_code: report.township_code.clone(),
            lead_code: graded.lead_code.clone(),
            grade: graded.grade,
        };
        let Recommended {
            assignments: picks,
            via_request,
            requests,
            mut shortfalls,
        } = recommend_units(
            &self.region,
            &self.options,
            &self.policy,
            records,
            &excluded,
            &requirements,
            &place,
            now,
        );

        let mut commit = Commit::new();
        // What this recommendation saw and picked, for replay, in the booking's own commit.
        let board_entry = board
            .log
            .stage(&mut commit, &self.store, namespace, &board.units, now)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        crate::decision::stage(
            &mut commit,
            &self.store,
            namespace,
            &event.incident_id,
            plan.map_or("", |p| p.id.as_str()),
            &requirements,
            &place,
            &excluded,
            board_entry,
            picks.iter().map(|p| p.unit_id.clone()).collect(),
            now,
        )
        .map_err(|e| HandlerError::Retry(e.to_string()))?;
        // The assignment record is read-modify-written with a compare-and-swap too: a decline or
        // a timer firing for the same incident must not be overwritten.
        commit.expect_raw(record_key.clone(), existing_raw);
        let mut assignments = Vec::with_capacity(picks.len());
        for pick in picks {
            // Read again with the raw bytes for the compare-and-swap.
            let (raw, mut record) = registry::load(&self.store, namespace, &pick.unit_id)
                .map_err(|e| HandlerError::Retry(e.to_string()))?
                .ok_or_else(|| HandlerError::Retry(format!("unit {} vanished", pick.unit_id)))?;
            let change = record
                .apply(
                    &UnitEvent::Assign {
                        incident_id: event.incident_id.clone(),
                    },
                    now,
                )
                .map_err(|e| HandlerError::Retry(format!("unit {}: {e}", pick.unit_id)))?;
            assignment::arm_ack_timer(
                &mut commit,
                namespace,
                &event.incident_id,
                &mut record,
                now.saturating_add(self.assignment_ack_timeout_ms),
            )
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
            let key = registry::unit_key(namespace, &pick.unit_id);
            // The compare-and-swap: the booking applies only if the unit record is unchanged since
            // it was read (so still available), even with other writers.
            commit.expect_raw(key.clone(), Some(raw));
            commit
                .put(key, &record)
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
            registry::push_event(
                &mut commit,
                namespace,
                &pick.unit_id,
                UnitChange::StatusChanged {
                    change,
                    cause: "assign".into(),
                },
                now,
            )
            .map_err(|e| HandlerError::Poison(e.to_string()))?;
            assignments.push(pick);
        }
        if plan.is_none() {
            shortfalls.push(no_plan_shortfall(&report.kind, graded.grade));
        }
        let plan_id = plan.map_or(String::new(), |p| p.id.clone());
        let mut record =
            existing.unwrap_or_else(|| AssignmentRecord::empty(namespace, &event.incident_id));
        record.plan_id = plan_id.clone();
        record.location = Some(report.location);
        record.township_code = Some(report.township_code.clone());
        record.lead_code = Some(graded.lead_code.clone());
        record.kind = Some(report.kind.clone());
        record.grade = graded.grade;
        // The mutual-aid requests and their answers, before the `units_assigned` announcing the
        // committed units.
        crate::mutual_aid::stage_requests(
            &mut commit,
            &self.region.tree,
            &mut record,
            &requests,
            &mut assignments,
            &via_request,
            now,
        )
        .map_err(|e| match e {
            crate::mutual_aid::StageError::Store(e) => HandlerError::Retry(e.to_string()),
            crate::mutual_aid::StageError::Invalid(e) => HandlerError::Poison(e),
        })?;
        record.assignments.extend(assignments.iter().cloned());
        record.shortfalls = shortfalls.clone();
        commit
            .put(record_key, &record)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;

        tracing::info!(
            incident_id = %event.incident_id,
            plan = %plan_id,
            assigned = assignments.len(),
            short = shortfalls.len(),
            "units assigned"
        );
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: event.incident_id.clone(),
            namespace: namespace.clone(),
            at_unix_ms: now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::UnitsAssigned(UnitsAssigned {
                plan_id,
                assignments,
                shortfalls,
                released_unit_ids: Vec::new(),
            }),
        };
        let subject = subjects::incident_event(
            namespace,
            record.partition(&self.region.tree),
            &event.incident_id,
            subjects::UNITS_ASSIGNED,
        )
        .map_err(|e| HandlerError::Poison(e.to_string()))?;
        commit.event(subject, muster_proto::convert::encode_event(&out));
        Ok(commit)
    }
}

/// Records positions units publish on `muster.<ns>.unit.<id>.position`.
pub struct PositionTracker {
    store: Store,
    namespace: String,
}

impl PositionTracker {
    pub fn new(store: Store, namespace: String) -> PositionTracker {
        PositionTracker { store, namespace }
    }
}

impl Handler for PositionTracker {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let Some((namespace, subject_unit_id, _)) = subjects::parse_unit_event(&delivery.subject)
        else {
            return Err(HandlerError::Poison(format!(
                "subject {:?} is not muster.<ns>.unit.<id>.position",
                delivery.subject
            )));
        };
        if namespace != self.namespace {
            return Err(HandlerError::Poison(format!(
                "position for namespace {namespace:?} reached the consumer of {:?}",
                self.namespace
            )));
        }
        let report = muster_proto::convert_unit::decode_unit_position(&delivery.payload)
            .map_err(HandlerError::Poison)?;
        if report.unit_id != subject_unit_id {
            return Err(HandlerError::Poison(format!(
                "position names unit {:?} but was published for {subject_unit_id:?}",
                report.unit_id
            )));
        }
        let now = lifecycle::unix_ms_now();
        registry::validate_position(report.position, report.at_unix_ms, now).map_err(
            |problem| HandlerError::Poison(format!("unit {}: {problem}", report.unit_id)),
        )?;
        let (raw, mut record) = registry::load(&self.store, namespace, &report.unit_id)
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .ok_or_else(|| {
                HandlerError::Poison(format!("unit {:?} is not registered", report.unit_id))
            })?;
        if record.is_retired() {
            return Err(HandlerError::Poison(format!(
                "unit {:?} is retired",
                report.unit_id
            )));
        }
        let mut commit = Commit::new();
        if !record.report_position(report.position, report.at_unix_ms) {
            tracing::debug!(unit_id = %report.unit_id, "older position ignored");
            return Ok(commit);
        }
        let key = registry::unit_key(namespace, &report.unit_id);
        commit.expect_raw(key.clone(), Some(raw));
        commit
            .put(key, &record)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        registry::push_event(
            &mut commit,
            namespace,
            &report.unit_id,
            UnitChange::PositionReported {
                position: report.position,
                at_unix_ms: report.at_unix_ms,
            },
            now,
        )
        .map_err(|e| HandlerError::Poison(e.to_string()))?;
        Ok(commit)
    }
}

/// Applies the lifecycle commands units publish on `muster.<ns>.unit.<id>.command`
/// (`UnitStatusCommand`) through the same [`AssignmentDesk`](crate::AssignmentDesk) path as the
/// gRPC status change: one commit (unit, timer, assignment record, replacement, events), then the
/// consumer's flush and JetStream ack. An undecodable, invalid or refused command is terminated
/// with its reason logged; a redelivery or duplicate message id is skipped by the consumer.
pub struct UnitCommandHandler {
    store: Store,
    desk: crate::AssignmentDesk,
    namespace: String,
}

impl UnitCommandHandler {
    pub fn new(store: Store, desk: crate::AssignmentDesk, namespace: String) -> UnitCommandHandler {
        UnitCommandHandler {
            store,
            desk,
            namespace,
        }
    }
}

impl Handler for UnitCommandHandler {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let Some((namespace, unit_id, kind)) = subjects::parse_unit_event(&delivery.subject) else {
            return Err(HandlerError::Poison(format!(
                "subject {:?} is not muster.<ns>.unit.<id>.command",
                delivery.subject
            )));
        };
        if kind != subjects::UNIT_COMMAND || namespace != self.namespace {
            return Err(HandlerError::Poison(format!(
                "subject {:?} is not a command for namespace {:?}",
                delivery.subject, self.namespace
            )));
        }
        let event = muster_proto::convert_unit::decode_unit_command(&delivery.payload)
            .map_err(|problem| HandlerError::Poison(format!("unit {unit_id}: {problem}")))?;
        let now = lifecycle::unix_ms_now();
        match self
            .desk
            .stage_status_change(&self.store, namespace, unit_id, &event, now)
        {
            Ok(staged) => {
                tracing::info!(
                    %unit_id,
                    event = event.name(),
                    status = %staged.unit.state.status,
                    replacement = ?staged.replacement.as_ref().map(|r| r.unit_id.as_str()),
                    "unit command applied"
                );
                Ok(staged.commit)
            }
            // A unit that changed between the read and the re-read: stage again.
            Err(assignment::StatusChangeError::Store(store::Error::Conflict { key })) => Err(
                HandlerError::Retry(format!("unit {unit_id}: {key} changed; try again")),
            ),
            Err(assignment::StatusChangeError::Store(error)) => {
                Err(HandlerError::Retry(error.to_string()))
            }
            Err(refused) => Err(HandlerError::Poison(format!(
                "unit command {} refused: {refused}",
                event.name()
            ))),
        }
    }
}
