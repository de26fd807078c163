//! The gRPC face of dispatch: `muster.v1.DispatchService`. Wire types stop here.
//!
//! Every unit change is read-modify-written with a compare-and-swap on the unit record, together
//! with its `UnitEvent` in the outbox, flushed before the answer; a conflict with the assigner or
//! another request re-reads and tries again. Lifecycle events go through
//! [`AssignmentDesk`]: acknowledging cancels the acknowledgement timer, declining books a
//! replacement, releasing takes the unit off the incident's assignments, each in one commit.

use domain::geo::GeoPoint;
use domain::region::Unit;
use lifecycle::access::Caller;
use muster_proto::convert;
use muster_proto::convert_unit::{self, UnitChange};
use muster_proto::v1 as pb;
use store::{Commit, Store};
use tonic::{Request, Response, Status};

use crate::Config;
use crate::assignment::{AssignmentDesk, StatusChangeError};
use crate::driver::{
    AssignmentRecord, IncidentPlace, assignment_key, no_plan_shortfall, recommend_units,
};
use crate::registry::{self, Retirement, UnitRecord};
use domain::unit::UnitEvent;
use std::collections::HashSet;

/// How often a unit change is retried after a compare-and-swap conflict.
const CONFLICT_ATTEMPTS_MAX: usize = 5;

pub struct DispatchGrpc {
    config: Config,
    store: Store,
    desk: AssignmentDesk,
}

impl DispatchGrpc {
    pub fn new(config: Config, store: Store, desk: AssignmentDesk) -> DispatchGrpc {
        DispatchGrpc {
            config,
            store,
            desk,
        }
    }

    /// The lead and township of an incident dispatch knows, for scope checks.
    fn incident_scope(&self, namespace: &str, incident_id: &str) -> Option<(String, String)> {
        if incident_id.is_empty() {
            return None;
        }
        let record: AssignmentRecord = self
            .store
            .get(&assignment_key(namespace, incident_id))
            .ok()
            .flatten()?;
        Some((
            record.lead_code.unwrap_or_default(),
            record.township_code.unwrap_or_default(),
        ))
    }

    /// Names the incident on the audit note and refuses it outside the caller's scope. An
    /// incident dispatch has no record of passes here; the handler answers NOT_FOUND.
    fn require_incident(
        &self,
        caller: &Caller,
        namespace: &str,
        incident_id: &str,
    ) -> Result<(), Status> {
        caller.note.incident(incident_id);
        match self.incident_scope(namespace, incident_id) {
            Some((lead, township)) => caller.require_incident(
                &self.config.region.tree,
                incident_id,
                &lead,
                &[township.as_str()],
            ),
            None => Ok(()),
        }
    }

    /// Whether the caller may see and move `record`: stationed in its scope, or serving an
    /// incident in its scope.
    fn unit_in_scope(&self, caller: &Caller, namespace: &str, record: &UnitRecord) -> bool {
        let tree = &self.config.region.tree;
        if caller.principal.covers(tree, &record.unit.home_township) {
            return true;
        }
        record
            .state
            .incident_id
            .as_deref()
            .and_then(|incident| self.incident_scope(namespace, incident))
            .is_some_and(|(lead, township)| caller.sees_incident(tree, &lead, &[township.as_str()]))
    }

    /// Names the unit on the audit note and refuses it outside the caller's scope. An unknown
    /// unit passes here; the handler answers NOT_FOUND.
    fn require_unit(&self, caller: &Caller, namespace: &str, unit_id: &str) -> Result<(), Status> {
        caller.note.unit(unit_id);
        let record: Option<UnitRecord> = self
            .store
            .get(&registry::unit_key(namespace, unit_id))
            .map_err(storage)?;
        match record {
            Some(record) if !self.unit_in_scope(caller, namespace, &record) => {
                Err(Status::permission_denied(
                    caller.principal.out_of_scope(&format!("unit {unit_id}")),
                ))
            }
            _ => Ok(()),
        }
    }

    fn namespace<'a>(&'a self, requested: &str) -> Result<&'a str, Status> {
        lifecycle::grpc::served_namespace(crate::SERVICE_NAME, &self.config.namespace, requested)
    }

    /// Reads the unit, lets `change` modify it and name its events, commits record + events with
    /// a compare-and-swap (retrying on conflict), flushes, and returns the stored record.
    async fn change_unit(
        &self,
        namespace: &str,
        unit_id: &str,
        mut change: impl FnMut(&mut UnitRecord, i64) -> Result<Vec<UnitChange>, Status>,
    ) -> Result<UnitRecord, Status> {
        validate_unit_id(unit_id)?;
        for _attempt in 0..CONFLICT_ATTEMPTS_MAX {
            let (raw, mut record) = registry::load(&self.store, namespace, unit_id)
                .map_err(storage)?
                .ok_or_else(|| unknown_unit(namespace, unit_id))?;
            if let Some(retired) = &record.retired {
                let refused = Status::failed_precondition(format!(
                    "unit {unit_id:?} is retired ({})",
                    retired.reason
                ));
                return self.durable_refusal(Err(refused)).await;
            }
            let now = lifecycle::unix_ms_now();
            let changes = self.durable_refusal(change(&mut record, now)).await?;
            if changes.is_empty() {
                // Nothing to change: the record may be a retry's own change whose flush failed,
                // so the answer waits for it to be durable.
                self.store.flush().await.map_err(storage)?;
                return Ok(record);
            }
            let key = registry::unit_key(namespace, unit_id);
            let mut commit = Commit::new();
            commit.expect_raw(key.clone(), Some(raw));
            commit.put(key, &record).map_err(storage)?;
            for change in changes {
                registry::push_event(&mut commit, namespace, unit_id, change, now)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            match self.store.commit(&commit) {
                Ok(_) => {
                    self.store.flush().await.map_err(storage)?;
                    return Ok(record);
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(storage(error)),
            }
        }
        Err(Status::aborted(format!(
            "unit {unit_id:?} kept changing under this request; try again"
        )))
    }

    /// A refusal read from stored state is given only once the store is durable
    /// (`lifecycle::grpc::durable_refusal`).
    async fn durable_refusal<T>(&self, result: Result<T, Status>) -> Result<T, Status> {
        lifecycle::grpc::durable_refusal(crate::SERVICE_NAME, &self.store, result).await
    }

    /// The stale-position limit in effect.
    fn stale_position_ms(&self) -> i64 {
        self.config
            .stale_position_ms
            .unwrap_or(registry::STALE_POSITION_AFTER_MS_DEFAULT)
    }

    /// The ETA of a committed unit's booking, from its incident's assignment record (0 if none).
    fn eta_of(
        &self,
        namespace: &str,
        record: &UnitRecord,
        cache: &mut std::collections::HashMap<String, Option<AssignmentRecord>>,
    ) -> f64 {
        let Some(incident_id) = record.state.incident_id.as_deref() else {
            return 0.0;
        };
        let assignments = cache.entry(incident_id.to_string()).or_insert_with(|| {
            self.store
                .get::<AssignmentRecord>(&assignment_key(namespace, incident_id))
                .ok()
                .flatten()
        });
        assignments
            .as_ref()
            .and_then(|assignments| {
                assignments
                    .assignments
                    .iter()
                    .find(|assignment| assignment.unit_id == record.unit.id)
            })
            .map_or(0.0, |assignment| assignment.eta_minutes)
    }

    fn unit_to_wire(&self, record: &UnitRecord, now_unix_ms: i64, eta_minutes: f64) -> pb::Unit {
        let unit = &record.unit;
        let position_age_ms = now_unix_ms
            .saturating_sub(record.position_at_unix_ms)
            .max(0);
        pb::Unit {
            id: unit.id.clone(),
            call_sign: unit.call_sign.clone(),
            unit_type: unit.unit_type.clone(),
            home_township_code: unit.home_township.clone(),
            jurisdiction_code: unit.jurisdiction.clone(),
            position: Some(convert::point_to_wire(unit.position)),
            status: convert_unit::status_to_wire(record.state.status) as i32,
            incident_id: record.state.incident_id.clone().unwrap_or_default(),
            capabilities: unit.capabilities.clone(),
            crew_size: unit.crew_size,
            position_at_unix_ms: record.position_at_unix_ms,
            position_age_ms,
            position_stale: now_unix_ms
                .saturating_sub(record.position_age_basis_unix_ms(now_unix_ms))
                > self.stale_position_ms(),
            status_since_unix_ms: record.state.since_unix_ms,
            out_of_service_reason: record
                .state
                .out_of_service_reason
                .clone()
                .unwrap_or_default(),
            eta_minutes,
        }
    }

    fn respond(&self, record: &UnitRecord) -> Response<pb::UnitResponse> {
        Response::new(pb::UnitResponse {
            unit: Some(self.wire_unit(record)),
        })
    }

    /// The unit on the wire now, with its booking's ETA.
    fn wire_unit(&self, record: &UnitRecord) -> pb::Unit {
        let eta = self.eta_of(
            &self.config.namespace,
            record,
            &mut std::collections::HashMap::new(),
        );
        self.unit_to_wire(record, lifecycle::unix_ms_now(), eta)
    }

    /// Applies a lifecycle event through the assignment desk (one commit with its bookkeeping and
    /// any replacement), flushes, and returns the unit as stored.
    async fn apply_status(
        &self,
        namespace: &str,
        unit_id: &str,
        event: &UnitEvent,
    ) -> Result<UnitRecord, Status> {
        validate_unit_id(unit_id)?;
        let staged = self
            .desk
            .change_status(
                &self.store,
                namespace,
                unit_id,
                event,
                lifecycle::unix_ms_now(),
            )
            .map_err(change_refused);
        let staged = self.durable_refusal(staged).await?;
        self.store.flush().await.map_err(storage)?;
        tracing::info!(
            %unit_id,
            event = event.name(),
            status = %staged.unit.state.status,
            left = ?staged.ended.as_ref().map(|ended| ended.outcome),
            replacement = ?staged.replacement.as_ref().map(|r| r.unit_id.as_str()),
            "unit status changed"
        );
        Ok(staged.unit)
    }
}

fn storage(error: store::Error) -> Status {
    lifecycle::grpc::storage_status(crate::SERVICE_NAME, error)
}

fn unknown_unit(namespace: &str, unit_id: &str) -> Status {
    Status::not_found(format!(
        "no unit {unit_id:?} is registered in namespace {namespace}"
    ))
}

fn validate_unit_id(unit_id: &str) -> Result<(), Status> {
    bus::subjects::validate_token(unit_id).map_err(|_| {
        Status::invalid_argument(format!(
            "unit id {unit_id:?} must be 1-64 of A-Z, a-z, 0-9, `-` and `_`"
        ))
    })
}

fn invalid(problem: String) -> Status {
    Status::invalid_argument(problem)
}

/// A refused status change or booking as a gRPC status.
fn change_refused(error: StatusChangeError) -> Status {
    match error {
        StatusChangeError::UnknownUnit { .. } | StatusChangeError::UnknownIncident { .. } => {
            Status::not_found(error.to_string())
        }
        StatusChangeError::Retired { .. }
        | StatusChangeError::Refused { .. }
        | StatusChangeError::NotAvailable { .. }
        | StatusChangeError::IncidentClosed { .. } => {
            Status::failed_precondition(error.to_string())
        }
        StatusChangeError::Contended { .. } => Status::aborted(error.to_string()),
        StatusChangeError::Subject(problem) => invalid(problem),
        StatusChangeError::Store(error) => storage(error),
    }
}

/// An incident id: required, 1-64 of A-Z, a-z, 0-9, `-`, `_` (it is a subject token).
fn validate_incident_id(incident_id: &str) -> Result<(), Status> {
    if incident_id.is_empty() {
        return Err(invalid("incident_id is required".into()));
    }
    bus::subjects::validate_token(incident_id).map_err(|_| {
        invalid(format!(
            "incident_id {:?} must be 1-64 of A-Z, a-z, 0-9, `-` and `_`",
            truncated(incident_id)
        ))
    })
}

/// At most 64 characters of `text`, for quoting untrusted input in messages.
fn truncated(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Longest sub-type code, township or lead code, and `by`, in bytes / characters.
const FIELD_BYTES_MAX: usize = 64;

/// A decline reason: required, at most [`registry::REASON_CHARS_MAX`] characters.
fn validate_reason(reason: &str) -> Result<(), Status> {
    if reason.trim().is_empty() || reason.chars().count() > registry::REASON_CHARS_MAX {
        return Err(invalid(format!(
            "reason is required, at most {} characters",
            registry::REASON_CHARS_MAX
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::dispatch_service_server::DispatchService for DispatchGrpc {
    async fn list_units(
        &self,
        request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        if request.unit_type.len() > registry::NAME_BYTES_MAX {
            return Err(invalid(format!(
                "unit_type is longer than {} bytes",
                registry::NAME_BYTES_MAX
            )));
        }
        let now = lifecycle::unix_ms_now();
        let mut etas = std::collections::HashMap::new();
        let units = registry::load_all(&self.store, namespace)
            .map_err(storage)?
            .iter()
            .filter(|record| !record.is_retired())
            .filter(|record| {
                request.unit_type.is_empty() || record.unit.unit_type == request.unit_type
            })
            .filter(|record| self.unit_in_scope(&caller, namespace, record))
            .map(|record| {
                let eta = self.eta_of(namespace, record, &mut etas);
                self.unit_to_wire(record, now, eta)
            })
            .collect();
        Ok(Response::new(pb::ListUnitsResponse { units }))
    }

    async fn replay_recommendations(
        &self,
        request: Request<pb::ReplayRecommendationsRequest>,
    ) -> Result<Response<pb::ReplayRecommendationsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        self.require_incident(&caller, namespace, &request.incident_id)?;
        if self
            .store
            .get_raw(&assignment_key(namespace, &request.incident_id))
            .map_err(storage)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "dispatch has booked nothing for {:?} in namespace {namespace}",
                request.incident_id
            )));
        }
        let replayed = crate::decision::replay(
            &self.store,
            self.desk.region(),
            self.desk.options(),
            self.desk.policy(),
            namespace,
            &request.incident_id,
        )
        .map_err(storage)?;
        Ok(Response::new(pb::ReplayRecommendationsResponse {
            recommendations: replayed
                .into_iter()
                .map(|r| pb::ReplayedRecommendation {
                    at_unix_ms: r.record.at_unix_ms,
                    plan_id: r.record.plan_id.clone(),
                    requirements: r
                        .record
                        .requirements
                        .iter()
                        .map(|q| pb::ResourceRequirement {
                            unit_type: q.unit_type.clone(),
                            count: q.count,
                        })
                        .collect(),
                    grade: convert::grade_to_wire(r.record.grade) as i32,
                    lead_code: r.record.lead_code.clone(),
                    board_units: r.board_len as u32,
                    same: r.picked == r.record.picked,
                    recorded_unit_ids: r.record.picked,
                    replayed_unit_ids: r.picked,
                })
                .collect(),
        }))
    }

    async fn get_assignments(
        &self,
        request: Request<pb::GetAssignmentsRequest>,
    ) -> Result<Response<pb::GetAssignmentsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_incident(&caller, namespace, &request.incident_id)?;
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let record: AssignmentRecord = self
            .store
            .get(&assignment_key(namespace, &request.incident_id))
            .map_err(storage)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "dispatch has assigned nothing to {:?} in namespace {namespace}",
                    request.incident_id
                ))
            })?;
        let ended = record
            .ended
            .iter()
            .map(|ended| pb::EndedAssignment {
                unit_id: ended.unit_id.clone(),
                call_sign: ended.call_sign.clone(),
                unit_type: ended.unit_type.clone(),
                outcome: ended.outcome.as_str().to_string(),
                reason: ended.reason.clone(),
                at_unix_ms: ended.at_unix_ms,
            })
            .collect();
        let units = domain::event::UnitsAssigned {
            plan_id: record.plan_id,
            assignments: record.assignments,
            shortfalls: record.shortfalls,
            released_unit_ids: Vec::new(),
        };
        Ok(Response::new(pb::GetAssignmentsResponse {
            units: Some(convert::units_to_wire(&units)),
            ended,
        }))
    }

    async fn register_unit(
        &self,
        request: Request<pb::RegisterUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        caller.note.unit(&request.id);
        caller.require_code(
            &self.config.region.tree,
            &request.home_township_code,
            &format!("a unit stationed in {}", request.home_township_code),
        )?;
        validate_unit_id(&request.id)?;
        registry::validate_call_sign(&request.call_sign).map_err(invalid)?;
        registry::validate_name("unit_type", &request.unit_type).map_err(invalid)?;
        registry::validate_capabilities(&request.capabilities).map_err(invalid)?;
        registry::validate_crew_size(request.crew_size).map_err(invalid)?;
        let jurisdiction =
            registry::county_of_township(&self.config.region, &request.home_township_code)
                .map_err(invalid)?;
        let position = match &request.position {
            Some(point) => {
                let point = convert::point_from_wire(Some(point));
                if let Some(problem) = point.range_problem() {
                    return Err(invalid(format!("position: {problem}")));
                }
                point
            }
            None => self
                .config
                .region
                .tree
                .get(&request.home_township_code)
                .and_then(|township| township.centroid)
                .ok_or_else(|| {
                    invalid(format!(
                        "township {:?} has no centroid; give a position",
                        request.home_township_code
                    ))
                })?,
        };
        let now = lifecycle::unix_ms_now();
        let unit = Unit {
            id: request.id.clone(),
            call_sign: request.call_sign.trim().to_string(),
            unit_type: request.unit_type.clone(),
            home_township: request.home_township_code.clone(),
            jurisdiction,
            position,
            capabilities: request.capabilities.clone(),
            crew_size: request.crew_size,
        };
        let record = UnitRecord::new(unit.clone(), now, now);
        let key = registry::unit_key(namespace, &request.id);
        let mut commit = Commit::new();
        commit.expect_raw(key.clone(), None);
        commit.put(key, &record).map_err(storage)?;
        registry::push_event(
            &mut commit,
            namespace,
            &request.id,
            UnitChange::Registered {
                unit,
                position_at_unix_ms: now,
            },
            now,
        )
        .map_err(|e| invalid(e.to_string()))?;
        match self.store.commit(&commit) {
            Ok(_) => {}
            Err(store::Error::Conflict { .. }) => {
                return Err(Status::already_exists(format!(
                    "unit id {:?} is taken in namespace {namespace} (retired ids are not reused)",
                    request.id
                )));
            }
            Err(error) => return Err(storage(error)),
        }
        self.store.flush().await.map_err(storage)?;
        tracing::info!(unit_id = %request.id, "unit registered");
        Ok(self.respond(&record))
    }

    async fn update_unit(
        &self,
        request: Request<pb::UpdateUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        if let Some(township) = &request.home_township_code {
            caller.require_code(
                &self.config.region.tree,
                township,
                &format!("moving a unit to {township}"),
            )?;
        }
        if let Some(call_sign) = &request.call_sign {
            registry::validate_call_sign(call_sign).map_err(invalid)?;
        }
        if let Some(capabilities) = &request.capabilities {
            registry::validate_capabilities(&capabilities.values).map_err(invalid)?;
        }
        if let Some(crew_size) = request.crew_size {
            registry::validate_crew_size(crew_size).map_err(invalid)?;
        }
        let jurisdiction = match &request.home_township_code {
            Some(code) => {
                Some(registry::county_of_township(&self.config.region, code).map_err(invalid)?)
            }
            None => None,
        };
        let record = self
            .change_unit(namespace, &request.unit_id, |record, _now| {
                let before = record.unit.clone();
                let unit = &mut record.unit;
                if let Some(call_sign) = &request.call_sign {
                    unit.call_sign = call_sign.trim().to_string();
                }
                if let Some(capabilities) = &request.capabilities {
                    unit.capabilities = capabilities.values.clone();
                }
                if let Some(crew_size) = request.crew_size {
                    unit.crew_size = crew_size;
                }
                if let (Some(code), Some(county)) = (&request.home_township_code, &jurisdiction) {
                    unit.home_township = code.clone();
                    unit.jurisdiction = county.clone();
                }
                if record.unit == before {
                    return Ok(Vec::new());
                }
                Ok(vec![UnitChange::Updated {
                    unit: record.unit.clone(),
                    position_at_unix_ms: record.position_at_unix_ms,
                }])
            })
            .await?;
        Ok(self.respond(&record))
    }

    async fn retire_unit(
        &self,
        request: Request<pb::RetireUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        let reason = request.reason.trim().to_string();
        if reason.is_empty() || reason.chars().count() > registry::REASON_CHARS_MAX {
            return Err(invalid(format!(
                "reason is required, at most {} characters",
                registry::REASON_CHARS_MAX
            )));
        }
        let record = self
            .change_unit(namespace, &request.unit_id, |record, now| {
                let status = record.state.status;
                if status.is_committed() || status == domain::unit::UnitStatus::Returning {
                    return Err(Status::failed_precondition(format!(
                        "unit {:?} is {status}{}; release it and let it clear before retiring it",
                        record.unit.id,
                        record
                            .state
                            .incident_id
                            .as_deref()
                            .map(|id| format!(" on incident {id}"))
                            .unwrap_or_default()
                    )));
                }
                record.retired = Some(Retirement {
                    reason: reason.clone(),
                    at_unix_ms: now,
                });
                Ok(vec![UnitChange::Retired {
                    reason: reason.clone(),
                }])
            })
            .await?;
        tracing::info!(unit_id = %request.unit_id, %reason, "unit retired");
        Ok(self.respond(&record))
    }

    async fn update_unit_status(
        &self,
        request: Request<pb::UpdateUnitStatusRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        let event = convert_unit::unit_event_from_wire(
            request.event,
            &request.incident_id,
            &request.reason,
        )
        .map_err(invalid)?;
        let record = self
            .apply_status(namespace, &request.unit_id, &event)
            .await?;
        Ok(self.respond(&record))
    }

    async fn report_position(
        &self,
        request: Request<pb::ReportPositionRequest>,
    ) -> Result<Response<pb::ReportPositionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        let now = lifecycle::unix_ms_now();
        let at_unix_ms = if request.at_unix_ms == 0 {
            now
        } else {
            request.at_unix_ms
        };
        let position = GeoPoint {
            lat: request.lat,
            lon: request.lon,
        };
        registry::validate_position(position, at_unix_ms, now).map_err(invalid)?;
        let mut applied = false;
        let record = self
            .change_unit(namespace, &request.unit_id, |record, _now| {
                applied = record.report_position(position, at_unix_ms);
                Ok(if applied {
                    vec![UnitChange::PositionReported {
                        position,
                        at_unix_ms,
                    }]
                } else {
                    Vec::new()
                })
            })
            .await?;
        Ok(Response::new(pb::ReportPositionResponse {
            applied,
            unit: Some(self.wire_unit(&record)),
        }))
    }

    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        if request.incident_id.is_empty() {
            caller.require_code(
                &self.config.region.tree,
                &request.township_code,
                &format!("township {}", request.township_code),
            )?;
        } else {
            self.require_incident(&caller, namespace, &request.incident_id)?;
        }
        let region = self.desk.region();
        for (field, value) in [
            ("kind", &request.kind),
            ("township_code", &request.township_code),
            ("lead_code", &request.lead_code),
        ] {
            if value.len() > FIELD_BYTES_MAX {
                return Err(invalid(format!(
                    "{field} is longer than {FIELD_BYTES_MAX} bytes"
                )));
            }
        }
        let grade = pb::Grade::try_from(request.grade)
            .map_err(|_| invalid(format!("grade {} is not a known Grade", request.grade)))?;
        let grade = convert::grade_from_wire(grade);
        let now = lifecycle::unix_ms_now();
        let (plan_id, requirements, place, excluded, kind) = if !request.incident_id.is_empty() {
            validate_incident_id(&request.incident_id)?;
            if !request.kind.is_empty()
                || !request.township_code.is_empty()
                || !request.lead_code.is_empty()
                || grade.is_some()
            {
                return Err(invalid(
                    "give either incident_id, or kind + township_code + grade, not both".into(),
                ));
            }
            let record: AssignmentRecord = self
                .store
                .get(&assignment_key(namespace, &request.incident_id))
                .map_err(storage)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "dispatch has no record of incident {:?} in namespace {namespace} (not graded yet?)",
                        request.incident_id
                    ))
                })?;
            if record.closed_at_unix_ms.is_some() {
                return Err(Status::failed_precondition(format!(
                    "incident {:?} is closed; nothing is recommended for it",
                    request.incident_id
                )));
            }
            let location = record.location.ok_or_else(|| {
                Status::failed_precondition(format!(
                    "dispatch does not know where incident {:?} is (recorded before locations were kept)",
                    request.incident_id
                ))
            })?;
            let kind = record.kind.clone().unwrap_or_default();
            let plan = region
                .plans
                .all()
                .iter()
                .find(|plan| plan.id == record.plan_id);
            let mut already = std::collections::HashMap::new();
            for assignment in &record.assignments {
                *already.entry(assignment.unit_type.clone()).or_insert(0u32) += 1;
            }
            let requirements = plan
                .map(|plan| domain::dispatch::plan_difference(&plan.resources, &already))
                .unwrap_or_default();
            let excluded: HashSet<String> = record
                .excluded_unit_ids()
                .into_iter()
                .map(str::to_string)
                .collect();
            (
                plan.map(|plan| plan.id.clone()),
                requirements,
                record.place(location),
                excluded,
                (kind, record.grade),
            )
        } else {
            if request.kind.trim().is_empty() || request.township_code.is_empty() {
                return Err(invalid(
                    "give an incident_id, or a kind (e.g. accident.hazardous_chemicals), a township_code and a grade"
                        .into(),
                ));
            }
            let township = region
                .tree
                .get(&request.township_code)
                .filter(|township| township.level == domain::jurisdiction::Level::Township)
                .ok_or_else(|| {
                    invalid(format!(
                        "township_code {:?} is not a township of the region",
                        truncated(&request.township_code)
                    ))
                })?;
            let location = township.centroid.ok_or_else(|| {
                invalid(format!(
                    "township {:?} has no centroid to place the incident at",
                    township.code
                ))
            })?;
            if !request.lead_code.is_empty() && region.tree.get(&request.lead_code).is_none() {
                return Err(invalid(format!(
                    "lead_code {:?} is not a jurisdiction of the region",
                    truncated(&request.lead_code)
                )));
            }
            let plan = region.plans.plan_for(request.kind.trim(), grade);
            (
                plan.map(|plan| plan.id.clone()),
                plan.map(|plan| plan.resources.clone()).unwrap_or_default(),
                IncidentPlace {
                    location,
                    township_code: township.code.clone(),
                    lead_code: request.lead_code.clone(),
                    grade,
                },
                HashSet::new(),
                (request.kind.trim().to_string(), grade),
            )
        };
        let records = registry::load_all(&self.store, namespace).map_err(storage)?;
        // A dry run: the mutual-aid requests it would make are not stored; the candidates they
        // would bring carry `via_mutual_aid`.
        let recommended = recommend_units(
            region,
            self.desk.options(),
            self.desk.policy(),
            &records,
            &excluded,
            &requirements,
            &place,
            now,
        );
        let candidates = recommended.assignments;
        let mut shortfalls = recommended.shortfalls;
        if plan_id.is_none() {
            shortfalls.push(no_plan_shortfall(&kind.0, kind.1));
        }
        Ok(Response::new(pb::RecommendResponse {
            plan_id: plan_id.unwrap_or_default(),
            requirements: requirements
                .iter()
                .map(|requirement| pb::ResourceRequirement {
                    unit_type: requirement.unit_type.clone(),
                    count: requirement.count,
                })
                .collect(),
            candidates: candidates.iter().map(convert::assignment_to_wire).collect(),
            shortfalls: shortfalls.iter().map(convert::shortfall_to_wire).collect(),
        }))
    }

    async fn assign(
        &self,
        request: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_incident(&caller, namespace, &request.incident_id)?;
        caller.note.unit(&request.unit_id);
        validate_incident_id(&request.incident_id)?;
        validate_unit_id(&request.unit_id)?;
        let by = request.by.trim();
        if by.chars().count() > FIELD_BYTES_MAX {
            return Err(invalid(format!(
                "by is longer than {FIELD_BYTES_MAX} characters"
            )));
        }
        let by = if by.is_empty() { "a dispatcher" } else { by };
        let staged = self
            .desk
            .assign(
                &self.store,
                namespace,
                &request.incident_id,
                &request.unit_id,
                by,
                lifecycle::unix_ms_now(),
            )
            .map_err(change_refused);
        let staged = self.durable_refusal(staged).await?;
        self.store.flush().await.map_err(storage)?;
        tracing::info!(incident_id = %request.incident_id, unit_id = %request.unit_id, %by, "unit assigned by hand");
        Ok(Response::new(pb::AssignResponse {
            unit: Some(self.wire_unit(&staged.unit)),
            assignment: staged.replacement.as_ref().map(convert::assignment_to_wire),
        }))
    }

    async fn acknowledge_assignment(
        &self,
        request: Request<pb::AcknowledgeAssignmentRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        validate_incident_id(&request.incident_id)?;
        let event = UnitEvent::Acknowledge {
            incident_id: request.incident_id,
        };
        let record = self
            .apply_status(namespace, &request.unit_id, &event)
            .await?;
        Ok(self.respond(&record))
    }

    async fn decline_assignment(
        &self,
        request: Request<pb::DeclineAssignmentRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        validate_incident_id(&request.incident_id)?;
        validate_reason(&request.reason)?;
        let event = UnitEvent::Decline {
            incident_id: request.incident_id,
            reason: request.reason.trim().to_string(),
        };
        let record = self
            .apply_status(namespace, &request.unit_id, &event)
            .await?;
        Ok(self.respond(&record))
    }

    async fn release_unit(
        &self,
        request: Request<pb::ReleaseUnitRequest>,
    ) -> Result<Response<pb::UnitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_unit(&caller, namespace, &request.unit_id)?;
        validate_incident_id(&request.incident_id)?;
        let event = UnitEvent::Release {
            incident_id: request.incident_id,
        };
        let record = self
            .apply_status(namespace, &request.unit_id, &event)
            .await?;
        Ok(self.respond(&record))
    }

    async fn list_mutual_aid(
        &self,
        request: Request<pb::ListMutualAidRequest>,
    ) -> Result<Response<pb::ListMutualAidResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        caller.note.namespace(namespace);
        self.require_incident(&caller, namespace, &request.incident_id)?;
        validate_incident_id(&request.incident_id)?;
        let known = self
            .store
            .get_raw(&assignment_key(namespace, &request.incident_id))
            .map_err(storage)?
            .is_some();
        if !known {
            return Err(Status::not_found(format!(
                "dispatch has no record of incident {:?} in namespace {namespace}",
                request.incident_id
            )));
        }
        let tree = &self.desk.region().tree;
        let requests =
            crate::mutual_aid::load_requests(&self.store, namespace, &request.incident_id)
                .map_err(storage)?
                .into_iter()
                .map(|r| pb::MutualAidRequest {
                    from: Some(convert::jurisdiction_ref_to_wire(
                        &crate::mutual_aid::jurisdiction_ref(tree, &r.requesting),
                    )),
                    to: Some(convert::jurisdiction_ref_to_wire(
                        &crate::mutual_aid::jurisdiction_ref(tree, &r.responding),
                    )),
                    partial: r.is_partial(),
                    state: r.state.as_str().to_string(),
                    decline_code: r
                        .decline
                        .as_ref()
                        .map_or(String::new(), |d| d.code().into()),
                    decline_reason: r
                        .decline
                        .as_ref()
                        .map_or(String::new(), |d| d.describe(&r.resource_type)),
                    request_id: r.request_id,
                    incident_id: r.incident_id,
                    resource_type: r.resource_type,
                    quantity: r.quantity,
                    committed_unit_ids: r.committed_unit_ids,
                    released_unit_ids: r.released_unit_ids,
                    cascade_depth: r.cascade_depth,
                    requested_at_unix_ms: r.requested_at_unix_ms,
                    answered_at_unix_ms: r.answered_at_unix_ms.unwrap_or(0),
                    released_at_unix_ms: r.released_at_unix_ms.unwrap_or(0),
                })
                .collect();
        Ok(Response::new(pb::ListMutualAidResponse { requests }))
    }
}
