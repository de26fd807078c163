//! Mutual aid in dispatch: the requests a recommendation made ([`domain::mutual_aid`]) become
//! stored records `mutual-aid/<ns>/<incident>/<request id>` and events, in the commit that books
//! the committed units.
//!
//! Every jurisdiction's units live in this one dispatch instance, so a request is answered at once
//! by the responder's policy, in the same commit as the request: `mutual_aid_requested`, then
//! `mutual_aid_committed` or `mutual_aid_declined`, each its own event (in that order in the
//! outbox), then `units_assigned` announcing the committed units beside the lead's own. One commit
//! keeps the answer and the bookings it promises together: a committed unit is booked with the same
//! compare-and-swap as any other, or the whole commit (request included) is staged again.
//!
//! When a committed unit leaves the incident (released, declined, timed out, out of service, or
//! the incident closed), the request releases it (ReleaseResource) in the commit of its leaving and
//! `mutual_aid_released` names it; the request is `released` once its last unit is back. Request
//! records are changed only in commits that also compare-and-swap the incident's assignment
//! record, so two writers never answer or release the same request.

use domain::event::{Assignment, EventBody, IncidentEvent, JurisdictionRef, MutualAid};
use domain::jurisdiction::{JurisdictionTree, Level};
use domain::mutual_aid::{Answer, MutualAidRequest, PlannedRequest, RequestState};
use store::{Commit, Store};

use crate::driver::AssignmentRecord;

/// `mutual-aid/<ns>/<incident>/`.
pub fn mutual_aid_prefix(namespace: &str, incident_id: &str) -> String {
    format!("mutual-aid/{namespace}/{incident_id}/")
}

/// `mutual-aid/<ns>/<incident>/<request id>`.
pub fn mutual_aid_key(namespace: &str, incident_id: &str, request_id: &str) -> String {
    format!("{}{request_id}", mutual_aid_prefix(namespace, incident_id))
}

/// Every request of an incident, oldest first.
pub fn load_requests(
    store: &Store,
    namespace: &str,
    incident_id: &str,
) -> Result<Vec<MutualAidRequest>, store::Error> {
    Ok(store
        .scan_prefix::<MutualAidRequest>(&mutual_aid_prefix(namespace, incident_id))?
        .into_iter()
        .map(|(_, request)| request)
        .collect())
}

/// The jurisdiction `code` as events name it.
pub fn jurisdiction_ref(tree: &JurisdictionTree, code: &str) -> JurisdictionRef {
    match tree.get(code) {
        Some(j) => JurisdictionRef {
            code: j.code.clone(),
            name: j.name.clone(),
            level: j.level,
        },
        None => JurisdictionRef {
            code: code.to_string(),
            name: code.to_string(),
            level: Level::County,
        },
    }
}

fn event_body(
    tree: &JurisdictionTree,
    request: &MutualAidRequest,
    quantity: u32,
    unit_ids: Vec<String>,
    reason_code: &str,
    reason: String,
) -> MutualAid {
    MutualAid {
        request_id: request.request_id.clone(),
        from: jurisdiction_ref(tree, &request.requesting),
        to: jurisdiction_ref(tree, &request.responding),
        resource_type: request.resource_type.clone(),
        quantity,
        unit_ids,
        reason_code: reason_code.to_string(),
        reason,
        cascade_depth: request.cascade_depth,
    }
}

/// Adds an incident event from dispatch to `commit`.
pub(crate) fn push_incident_event(
    commit: &mut Commit,
    namespace: &str,
    partition: &str,
    incident_id: &str,
    body: EventBody,
    now_unix_ms: i64,
) -> Result<(), String> {
    let subject =
        bus::subjects::incident_event(namespace, partition, incident_id, body.event_type())
            .map_err(|e| e.to_string())?;
    let event = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.to_string(),
        namespace: namespace.to_string(),
        at_unix_ms: now_unix_ms,
        source_service: crate::SERVICE_NAME.into(),
        body,
    };
    commit.event(subject, muster_proto::convert::encode_event(&event));
    Ok(())
}

/// Why staging mutual aid failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Stores the recommendation's `requests` for the record's incident, each answered as planned,
/// with their events, into `commit` (whose caller books the committed units and compare-and-swaps
/// the assignment record). `assignments` are the bookings of this commit: each committed one is
/// tied to its request (`AssignmentRecord::aid_request_by_unit`) and its reason names the request.
/// `via_request[i]` is the index into `requests` of `assignments[i]`, if it came by mutual aid.
#[allow(clippy::too_many_arguments)]
pub fn stage_requests(
    commit: &mut Commit,
    tree: &JurisdictionTree,
    record: &mut AssignmentRecord,
    requests: &[PlannedRequest],
    assignments: &mut [Assignment],
    via_request: &[Option<usize>],
    now_unix_ms: i64,
) -> Result<Vec<MutualAidRequest>, StageError> {
    let namespace = record.namespace.clone();
    let incident_id = record.incident_id.clone();
    let partition = record.partition(tree).to_string();
    let mut stored = Vec::with_capacity(requests.len());
    for (index, planned) in requests.iter().enumerate() {
        record.mutual_aid_seq += 1;
        let request_id = format!("{incident_id}-MA{:03}", record.mutual_aid_seq);
        let mut request = MutualAidRequest::new(
            &request_id,
            &incident_id,
            &planned.requesting,
            &planned.responding,
            &planned.resource_type,
            planned.quantity,
            planned.cascade_depth,
            now_unix_ms,
        );
        let requested = event_body(
            tree,
            &request,
            planned.quantity,
            Vec::new(),
            "",
            format!(
                "the lead's own {} cannot fill the plan",
                planned.resource_type
            ),
        );
        push_incident_event(
            commit,
            &namespace,
            &partition,
            &incident_id,
            EventBody::MutualAidRequested(requested),
            now_unix_ms,
        )
        .map_err(StageError::Invalid)?;
        let answer = match &planned.answer {
            Answer::Commit { picks, kept } => {
                let unit_ids: Vec<String> = picks.iter().map(|p| p.unit_id.clone()).collect();
                request
                    .commit(unit_ids.clone(), now_unix_ms)
                    .map_err(|e| StageError::Invalid(e.to_string()))?;
                for (assignment, via) in assignments.iter_mut().zip(via_request) {
                    if *via == Some(index) {
                        record
                            .aid_request_by_unit
                            .insert(assignment.unit_id.clone(), request_id.clone());
                        assignment
                            .reason
                            .push_str(&format!(" (request {request_id})"));
                    }
                }
                let (code, reason) = if request.is_partial() {
                    (
                        "partial",
                        format!(
                            "partial: {} of {} (keeps {kept} at home)",
                            unit_ids.len(),
                            planned.quantity
                        ),
                    )
                } else {
                    ("", String::new())
                };
                EventBody::MutualAidCommitted(event_body(
                    tree,
                    &request,
                    unit_ids.len() as u32,
                    unit_ids,
                    code,
                    reason,
                ))
            }
            Answer::Decline(reason) => {
                request
                    .decline(reason.clone(), now_unix_ms)
                    .map_err(|e| StageError::Invalid(e.to_string()))?;
                EventBody::MutualAidDeclined(event_body(
                    tree,
                    &request,
                    planned.quantity,
                    Vec::new(),
                    reason.code(),
                    reason.describe(&planned.resource_type),
                ))
            }
        };
        push_incident_event(
            commit,
            &namespace,
            &partition,
            &incident_id,
            answer,
            now_unix_ms,
        )
        .map_err(StageError::Invalid)?;
        commit.put(
            mutual_aid_key(&namespace, &incident_id, &request_id),
            &request,
        )?;
        stored.push(request);
    }
    Ok(stored)
}

/// ReleaseResource for `unit_ids` that came to the record's incident by mutual aid (others are
/// ignored): each request releases its units, is stored, and `mutual_aid_released` names them.
/// Returns the request ids touched.
pub fn stage_release(
    store: &Store,
    commit: &mut Commit,
    tree: &JurisdictionTree,
    record: &mut AssignmentRecord,
    unit_ids: &[String],
    why: &str,
    now_unix_ms: i64,
) -> Result<Vec<String>, StageError> {
    let namespace = record.namespace.clone();
    let incident_id = record.incident_id.clone();
    let partition = record.partition(tree).to_string();
    // Group by request, in request order.
    let mut by_request: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for unit_id in unit_ids {
        if let Some(request_id) = record.aid_request_by_unit.remove(unit_id) {
            by_request
                .entry(request_id)
                .or_default()
                .push(unit_id.clone());
        }
    }
    let mut touched = Vec::new();
    for (request_id, units) in by_request {
        let key = mutual_aid_key(&namespace, &incident_id, &request_id);
        let Some(raw) = store.get_raw(&key)? else {
            tracing::warn!(%incident_id, %request_id, "mutual-aid request record missing; units released without it");
            continue;
        };
        let mut request: MutualAidRequest = store::decode_value(&key, &raw)?;
        if request.state != RequestState::Committed {
            continue;
        }
        let released = request
            .release(&units, now_unix_ms)
            .map_err(|e| StageError::Invalid(e.to_string()))?;
        if released.is_empty() {
            continue;
        }
        commit.expect_raw(key.clone(), Some(raw));
        commit.put(key, &request)?;
        let body = event_body(
            tree,
            &request,
            released.len() as u32,
            released,
            if request.state == RequestState::Released {
                "released"
            } else {
                "partial"
            },
            why.to_string(),
        );
        push_incident_event(
            commit,
            &namespace,
            &partition,
            &incident_id,
            EventBody::MutualAidReleased(body),
            now_unix_ms,
        )
        .map_err(StageError::Invalid)?;
        touched.push(request_id);
    }
    Ok(touched)
}
