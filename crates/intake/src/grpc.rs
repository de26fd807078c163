//! The gRPC face of intake: `muster.v1.IntakeService`. Wire types stop here.

use std::pin::Pin;

use bus::subjects;
use domain::event::{EventBody, IncidentEvent};
use lifecycle::access::Caller;
use muster_proto::convert;
use muster_proto::v1 as pb;
use store::{Commit, Store};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Config;
use crate::driver::Change;
use crate::record::{
    IncidentRecord, IncidentStatus, Numbering, TimelineEntry, history_page, incident_key,
    request_key, sequence_key, update_request_key,
};
use crate::validate::{ValidReport, ValidUpdate, merge_facts, validate_report, validate_update};

/// Default and largest page of `ListIncidents`.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;
/// How far back a scoped `ListIncidents` looks, in multiples of its limit.
const SCOPED_SCAN_FACTOR: usize = 20;
/// Default and largest page of `ListIncidentEvents`.
const EVENTS_PAGE_MAX: usize = 1000;

pub struct IntakeGrpc {
    config: Config,
    store: Store,
    changes: broadcast::Sender<Change>,
    shutdown: CancellationToken,
    /// Serialises incident numbering with the feed writer (held for an in-memory commit, never
    /// across an await).
    numbering: Numbering,
    metrics: Option<crate::metrics::IntakeMetrics>,
}

impl IntakeGrpc {
    /// The incident `incident_id`, if the caller may see it: INVALID_ARGUMENT when the id is
    /// empty, NOT_FOUND when there is none, PERMISSION_DENIED when it is out of scope.
    fn readable_record(
        &self,
        caller: &Caller,
        namespace: &str,
        incident_id: &str,
    ) -> Result<IncidentRecord, Status> {
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let record: IncidentRecord = self
            .store
            .get(&incident_key(namespace, incident_id))
            .map_err(storage)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {incident_id:?} in namespace {namespace}"
                ))
            })?;
        caller.require_incident(
            &self.config.region.tree,
            &record.id,
            lead_of(&record),
            &record.report.township_codes(),
        )?;
        Ok(record)
    }

    pub fn new(
        config: Config,
        store: Store,
        changes: broadcast::Sender<Change>,
        shutdown: CancellationToken,
        numbering: Numbering,
    ) -> IntakeGrpc {
        IntakeGrpc {
            config,
            store,
            changes,
            shutdown,
            numbering,
            metrics: None,
        }
    }

    /// Counts reports in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::IntakeMetrics>) -> IntakeGrpc {
        self.metrics = metrics;
        self
    }

    /// Counts a report's outcome (see [`crate::metrics::IntakeMetrics::report`]).
    fn count_report(&self, answer: &Result<Response<pb::ReportIncidentResponse>, Status>) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let outcome = match answer {
            Ok(response) if response.get_ref().duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                "rejected"
            }
            Err(_) => "unavailable",
        };
        metrics.report(outcome);
    }

    /// The namespace a request names; empty means `live`. A malformed one is an invalid
    /// argument; only the configured one is served here.
    fn namespace<'a>(&'a self, requested: &str) -> Result<&'a str, Status> {
        if !requested.is_empty() {
            subjects::validate_namespace(requested)
                .map_err(|e| Status::invalid_argument(format!("namespace: {e}")))?;
        }
        lifecycle::grpc::served_namespace(crate::SERVICE_NAME, &self.config.namespace, requested)
    }

    fn existing_for_request(
        &self,
        namespace: &str,
        request_id: &str,
    ) -> Result<Option<String>, Status> {
        if request_id.is_empty() {
            return Ok(None);
        }
        self.store
            .get::<String>(&request_key(namespace, request_id))
            .map_err(storage)
    }

    /// Numbers the incident and commits it with its `reported` event. The number comes from a
    /// counter in the same commit, so ids stay dense across restarts (sled's own id generator
    /// jumps by a million after a restart); the lock keeps concurrent reports from colliding.
    fn record_report(&self, namespace: &str, valid: ValidReport) -> Result<Recorded, Status> {
        let _numbering = self
            .numbering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = lifecycle::unix_ms_now();
        let sequence_key = sequence_key(namespace);
        let current_raw = self.store.get_raw(&sequence_key).map_err(storage)?;
        let current: u64 = match &current_raw {
            Some(raw) => store::decode_value(&sequence_key, raw).map_err(storage)?,
            None => 0,
        };
        let sequence = current + 1;
        let incident_id = crate::record::incident_id_for(now, sequence);
        let event = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.clone(),
            namespace: namespace.to_string(),
            at_unix_ms: now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::Reported(valid.report.clone()),
        };
        let record = IncidentRecord {
            id: incident_id.clone(),
            namespace: namespace.to_string(),
            report: valid.report,
            status: IncidentStatus::Reported,
            grading: None,
            units: None,
            timeline: vec![TimelineEntry {
                at_unix_ms: now,
                event_type: "reported".into(),
                source_service: crate::SERVICE_NAME.into(),
                description: event.describe(),
                event_id: String::new(),
            }],
            reported_at_unix_ms: now,
            updated_at_unix_ms: now,
            request_id: valid.request_id.clone(),
            alert_count: 0,
            open_alert_count: 0,
            recent_alerts: Vec::new(),
            legal_hold: None,
            personal_data_erased_at_unix_ms: None,
        };
        let partition = self
            .config
            .region
            .tree
            .partition_of(&record.report.township_code);
        let subject =
            subjects::incident_event(namespace, partition, &incident_id, subjects::REPORTED)
                .map_err(internal)?;
        let mut commit = Commit::new();
        commit.expect_raw(sequence_key.clone(), current_raw);
        commit.put(sequence_key, &sequence).map_err(storage)?;
        commit
            .put(incident_key(namespace, &incident_id), &record)
            .map_err(storage)?;
        if !valid.request_id.is_empty() {
            let key = request_key(namespace, &valid.request_id);
            commit.expect_raw(key.clone(), None);
            commit.put(key, &incident_id).map_err(storage)?;
        }
        commit.event(subject, convert::encode_event(&event));
        match self.store.commit(&commit) {
            Ok(_) => Ok(Recorded::New(incident_id, Box::new(record))),
            // The same request id raced us; answer with the incident that won.
            Err(store::Error::Conflict { .. }) => self
                .existing_for_request(namespace, &valid.request_id)?
                .map(Recorded::Duplicate)
                .ok_or_else(|| {
                    Status::aborted("concurrent report with the same request_id; retry")
                }),
            Err(error) => Err(storage(error)),
        }
    }
}

/// How many times an update is retried after losing a compare-and-swap race with the projection.
const UPDATE_ATTEMPTS_MAX: usize = 8;

impl IntakeGrpc {
    /// Merges the update into the stored incident and commits it with its `updated` event and
    /// its request id, with a compare-and-swap on the record (the projection writes it too).
    fn record_update(&self, namespace: &str, valid: &ValidUpdate) -> Result<Updated, Status> {
        let key = incident_key(namespace, &valid.incident_id);
        for _attempt in 0..UPDATE_ATTEMPTS_MAX {
            let raw = self.store.get_raw(&key).map_err(storage)?.ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {:?} in namespace {namespace}",
                    valid.incident_id
                ))
            })?;
            let mut record: IncidentRecord = store::decode_value(&key, &raw).map_err(storage)?;
            let now = lifecycle::unix_ms_now();
            let facts = merge_facts(&record.report.facts, &valid.facts);
            let event = IncidentEvent {
                event_id: String::new(),
                incident_id: valid.incident_id.clone(),
                namespace: namespace.to_string(),
                at_unix_ms: now,
                source_service: crate::SERVICE_NAME.into(),
                body: EventBody::Updated(domain::event::IncidentUpdated {
                    facts: facts.clone(),
                    updated_by: valid.updated_by.clone(),
                    summary: valid.summary.clone(),
                    warning: record.report.warning,
                }),
            };
            record.report.facts = facts;
            record.updated_at_unix_ms = record.updated_at_unix_ms.max(now);
            record.timeline.push(TimelineEntry {
                at_unix_ms: now,
                event_type: subjects::UPDATED.into(),
                source_service: crate::SERVICE_NAME.into(),
                description: event.describe(),
                event_id: String::new(),
            });
            let partition = self
                .config
                .region
                .tree
                .partition_of(&record.report.township_code);
            let subject = subjects::incident_event(
                namespace,
                partition,
                &valid.incident_id,
                subjects::UPDATED,
            )
            .map_err(|e| Status::invalid_argument(format!("incident_id: {e}")))?;
            let mut commit = Commit::new();
            commit.expect_raw(key.clone(), Some(raw));
            commit.put(key.clone(), &record).map_err(storage)?;
            if !valid.request_id.is_empty() {
                let request_key = update_request_key(namespace, &valid.request_id);
                commit.expect_raw(request_key.clone(), None);
                commit
                    .put(request_key, &valid.incident_id)
                    .map_err(storage)?;
            }
            commit.event(subject, convert::encode_event(&event));
            match self.store.commit(&commit) {
                Ok(_) => return Ok(Updated::New(Box::new(record))),
                Err(store::Error::Conflict { .. }) => {
                    // The same request id raced us, or the projection wrote the record.
                    if let Some(existing) = self.existing_update(namespace, &valid.request_id)? {
                        return Ok(Updated::Duplicate(existing));
                    }
                }
                Err(error) => return Err(storage(error)),
            }
        }
        Err(Status::aborted(format!(
            "incident {:?} kept changing while it was updated; retry",
            valid.incident_id
        )))
    }

    /// Changes the stored incident with `change` (which may name an event to publish with it),
    /// committed with a compare-and-swap on the record (the projection writes it too) and
    /// flushed before it returns.
    async fn change_incident(
        &self,
        namespace: &str,
        incident_id: &str,
        mut change: impl FnMut(&mut IncidentRecord, i64) -> Result<Option<IncidentEvent>, Status>,
    ) -> Result<IncidentRecord, Status> {
        let key = incident_key(namespace, incident_id);
        for _attempt in 0..UPDATE_ATTEMPTS_MAX {
            let raw = self.store.get_raw(&key).map_err(storage)?.ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {incident_id:?} in namespace {namespace}"
                ))
            })?;
            let mut record: IncidentRecord = store::decode_value(&key, &raw).map_err(storage)?;
            let now = lifecycle::unix_ms_now();
            let event = change(&mut record, now)?;
            record.updated_at_unix_ms = record.updated_at_unix_ms.max(now);
            let mut commit = Commit::new();
            commit.expect_raw(key.clone(), Some(raw));
            if let Some(event) = &event {
                record.timeline.push(TimelineEntry {
                    at_unix_ms: now,
                    event_type: event.body.event_type().into(),
                    source_service: crate::SERVICE_NAME.into(),
                    description: event.describe(),
                    event_id: String::new(),
                });
                let partition = self
                    .config
                    .region
                    .tree
                    .partition_of(&record.report.township_code);
                let subject = subjects::incident_event(
                    namespace,
                    partition,
                    incident_id,
                    event.body.event_type(),
                )
                .map_err(|e| Status::invalid_argument(format!("incident_id: {e}")))?;
                commit.event(subject, convert::encode_event(event));
            }
            if record.personal_data_due_for_erasure() {
                record.erase_personal_data(now);
            }
            commit.put(key.clone(), &record).map_err(storage)?;
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
            "incident {incident_id:?} kept changing meanwhile; retry"
        )))
    }

    /// The incident an update with this request id already changed, if any.
    fn existing_update(&self, namespace: &str, request_id: &str) -> Result<Option<String>, Status> {
        if request_id.is_empty() {
            return Ok(None);
        }
        self.store
            .get::<String>(&update_request_key(namespace, request_id))
            .map_err(storage)
    }

    /// The stored incident, if the caller's scope covers it (naming it on the audit note);
    /// NOT_FOUND or PERMISSION_DENIED otherwise.
    fn incident_in_scope(
        &self,
        caller: &Caller,
        namespace: &str,
        incident_id: &str,
    ) -> Result<IncidentRecord, Status> {
        let record = self.load_incident(namespace, incident_id)?;
        caller.require_incident(
            &self.config.region.tree,
            incident_id,
            lead_of(&record),
            &record.report.township_codes(),
        )?;
        Ok(record)
    }

    fn load_incident(&self, namespace: &str, incident_id: &str) -> Result<IncidentRecord, Status> {
        self.store
            .get(&incident_key(namespace, incident_id))
            .map_err(storage)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {incident_id:?} in namespace {namespace}"
                ))
            })
    }
}

enum Updated {
    New(Box<IncidentRecord>),
    Duplicate(String),
}

enum Recorded {
    New(String, Box<IncidentRecord>),
    Duplicate(String),
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchIncidentsResponse, Status>> + Send>>;

impl IntakeGrpc {
    async fn report_incident_uncounted(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?.to_string();
        let valid = validate_report(&request, &self.config.region).map_err(|problems| {
            let prefix = if problems.len() == 1 {
                String::new()
            } else {
                format!("{} problems: ", problems.len())
            };
            Status::invalid_argument(format!("{prefix}{}", problems.join("; ")))
        })?;
        caller.note.namespace(&namespace);
        // An officer reports only where their token reaches: every township the report names.
        for township in valid.report.township_codes() {
            caller.require_code(
                &self.config.region.tree,
                township,
                &format!("township {township}"),
            )?;
        }
        caller.note.detail(format!(
            "{} in {}",
            valid.report.kind, valid.report.township_code
        ));
        if let Some(incident_id) = self.existing_for_request(&namespace, &valid.request_id)? {
            caller.note.incident(&incident_id);
            // The first request's commit may not be on disk: its flush may still run, or have
            // failed (a full disk), leaving the commit only in memory until a restart drops it.
            // A duplicate is answered only once what it names is durable.
            self.store.flush().await.map_err(storage)?;
            return Ok(Response::new(pb::ReportIncidentResponse {
                incident_id,
                duplicate: true,
            }));
        }
        backpressure(&self.store)?;
        let (incident_id, record) = match self.record_report(&namespace, valid)? {
            Recorded::New(incident_id, record) => (incident_id, record),
            Recorded::Duplicate(incident_id) => {
                caller.note.incident(&incident_id);
                self.store.flush().await.map_err(storage)?;
                return Ok(Response::new(pb::ReportIncidentResponse {
                    incident_id,
                    duplicate: true,
                }));
            }
        };
        caller.note.incident(&incident_id);
        // Answer only when the report is on disk: an accepted report is never lost.
        self.store.flush().await.map_err(storage)?;
        let _ = self.changes.send((*record, "reported".into()));
        tracing::info!(%incident_id, namespace, "incident reported");
        Ok(Response::new(pb::ReportIncidentResponse {
            incident_id,
            duplicate: false,
        }))
    }
}

#[tonic::async_trait]
impl pb::intake_service_server::IntakeService for IntakeGrpc {
    async fn report_incident(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        let answer = self.report_incident_uncounted(request).await;
        self.count_report(&answer);
        answer
    }

    async fn update_incident(
        &self,
        request: Request<pb::UpdateIncidentRequest>,
    ) -> Result<Response<pb::UpdateIncidentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?.to_string();
        caller.note.namespace(&namespace);
        caller.note.incident(&request.incident_id);
        let valid = validate_update(&request).map_err(|problems| {
            let prefix = if problems.len() == 1 {
                String::new()
            } else {
                format!("{} problems: ", problems.len())
            };
            Status::invalid_argument(format!("{prefix}{}", problems.join("; ")))
        })?;
        self.incident_in_scope(&caller, &namespace, &valid.incident_id)?;
        let duplicate =
            |incident_id: String| -> Result<Response<pb::UpdateIncidentResponse>, Status> {
                let record = self.load_incident(&namespace, &incident_id)?;
                Ok(Response::new(pb::UpdateIncidentResponse {
                    incident_id,
                    duplicate: true,
                    facts: Some(convert::facts_to_wire(&record.report.facts)),
                }))
            };
        let record = match self.existing_update(&namespace, &valid.request_id)? {
            Some(incident_id) => Updated::Duplicate(incident_id),
            None => self.record_update(&namespace, &valid)?,
        };
        let record = match record {
            Updated::New(record) => record,
            Updated::Duplicate(incident_id) => {
                // As for reports: the first update's commit must be durable before a duplicate
                // is answered.
                self.store.flush().await.map_err(storage)?;
                return duplicate(incident_id);
            }
        };
        // Answer only when the update is on disk.
        self.store.flush().await.map_err(storage)?;
        let facts = convert::facts_to_wire(&record.report.facts);
        let _ = self.changes.send((*record, subjects::UPDATED.into()));
        tracing::info!(incident_id = %valid.incident_id, namespace, "incident updated");
        Ok(Response::new(pb::UpdateIncidentResponse {
            incident_id: valid.incident_id,
            duplicate: false,
            facts: Some(facts),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::GetIncidentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        let record = self.readable_record(&caller, namespace, &request.incident_id)?;
        Ok(Response::new(pb::GetIncidentResponse {
            incident: Some(incident_to_wire(&record)),
        }))
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        let limit = match request.limit as usize {
            0 => LIST_LIMIT_DEFAULT,
            n => n.min(LIST_LIMIT_MAX),
        };
        let tree = &self.config.region.tree;
        // A scoped token gets the newest incidents in its scope among the newest
        // SCOPED_SCAN_FACTOR × limit; a national one gets exactly the newest `limit`.
        let window = if caller.principal.jurisdiction() == tree.root().code {
            limit
        } else {
            limit.saturating_mul(SCOPED_SCAN_FACTOR)
        };
        let records: Vec<(String, IncidentRecord)> = self
            .store
            .scan_prefix_rev(&incident_key(namespace, ""), window)
            .map_err(storage)?;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: records
                .iter()
                .filter(|(_, record)| {
                    caller.sees_incident(tree, lead_of(record), &record.report.township_codes())
                })
                .take(limit)
                .map(|(_, record)| incident_to_wire(record))
                .collect(),
        }))
    }

    async fn list_incident_events(
        &self,
        request: Request<pb::ListIncidentEventsRequest>,
    ) -> Result<Response<pb::ListIncidentEventsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        let record = self.readable_record(&caller, namespace, &request.incident_id)?;
        let page_size = match request.page_size as usize {
            0 => EVENTS_PAGE_MAX,
            n => n.min(EVENTS_PAGE_MAX),
        };
        let first = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse::<u64>()
                .ok()
                .and_then(|last| last.checked_add(1))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "page_token {:?} is not one ListIncidentEvents returned; start again \
                         with an empty page_token",
                        request.page_token
                    ))
                })?
        };
        let mut page = history_page(&self.store, namespace, &record.id, first, page_size + 1)
            .map_err(storage)?;
        let more = page.len() > page_size;
        page.truncate(page_size);
        let next_page_token = match page.last() {
            Some((arrival, _)) if more => arrival.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListIncidentEventsResponse {
            events: page
                .iter()
                .map(|(_, event)| convert::event_to_wire(event))
                .collect(),
            next_page_token,
        }))
    }

    type WatchIncidentsStream = WatchStream;

    async fn watch_incidents(
        &self,
        request: Request<pb::WatchIncidentsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = Caller::of(&request)?;
        let namespace = self.namespace(&request.into_inner().namespace)?.to_string();
        let changes = tokio_stream::wrappers::BroadcastStream::new(self.changes.subscribe());
        let region = self.config.region.clone();
        let stream = changes
            .filter_map(move |change| match change {
                Ok((record, event_type))
                    if record.namespace == namespace
                        && caller.sees_incident(
                            &region.tree,
                            lead_of(&record),
                            &record.report.township_codes(),
                        ) =>
                {
                    Some(Ok(pb::WatchIncidentsResponse { incident: Some(incident_to_wire(&record)), event_type }))
                }
                Ok(_) => None,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Status::data_loss(format!(
                    "this watcher fell {missed} changes behind; list incidents again and restart the watch"
                )))),
            })
            // A watcher that lagged has lost changes: end its stream after telling it.
            .map_while({
                let mut ended = false;
                move |item| {
                    if ended {
                        return None;
                    }
                    ended = item.is_err();
                    Some(item)
                }
            });
        // The server waits for open streams on shutdown, so end them then.
        let stream =
            futures_util::StreamExt::take_until(stream, self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn close_incident(
        &self,
        request: Request<pb::CloseIncidentRequest>,
    ) -> Result<Response<pb::CloseIncidentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?.to_string();
        caller.note.namespace(&namespace);
        let (incident_id, reason) = closing_fields(&request.incident_id, &request.reason)?;
        self.incident_in_scope(&caller, &namespace, &incident_id)?;
        caller.note.detail(format!("closed: {reason}"));
        let by = caller.principal.officer().to_string();
        let record = self
            .change_incident(&namespace, &incident_id, |record, now| {
                if record.status == IncidentStatus::Closed {
                    return Err(Status::failed_precondition(format!(
                        "incident {incident_id} is already closed"
                    )));
                }
                record.status = IncidentStatus::Closed;
                Ok(Some(IncidentEvent {
                    event_id: String::new(),
                    incident_id: incident_id.clone(),
                    namespace: namespace.clone(),
                    at_unix_ms: now,
                    source_service: crate::SERVICE_NAME.into(),
                    body: EventBody::Closed(domain::event::IncidentClosed {
                        by: by.clone(),
                        reason: reason.clone(),
                    }),
                }))
            })
            .await?;
        let _ = self.changes.send((record.clone(), subjects::CLOSED.into()));
        tracing::info!(%incident_id, namespace, erased = record.personal_data_erased_at_unix_ms.is_some(), "incident closed");
        Ok(Response::new(pb::CloseIncidentResponse {
            incident: Some(incident_to_wire(&record)),
        }))
    }

    async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> Result<Response<pb::SetLegalHoldResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?.to_string();
        caller.note.namespace(&namespace);
        let (incident_id, reason) = closing_fields(&request.incident_id, &request.reason)?;
        self.incident_in_scope(&caller, &namespace, &incident_id)?;
        let verb = if request.hold { "held" } else { "released" };
        caller.note.detail(format!("legal hold {verb}: {reason}"));
        let by = caller.principal.officer().to_string();
        let record = self
            .change_incident(&namespace, &incident_id, |record, now| {
                if request.hold {
                    if let Some(erased) = record.personal_data_erased_at_unix_ms {
                        return Err(Status::failed_precondition(format!(
                            "the personal data of {incident_id} was erased at {erased} (Unix ms) \
                             when its response ended; a hold cannot bring it back"
                        )));
                    }
                    record.legal_hold = Some(crate::record::LegalHold {
                        by: by.clone(),
                        reason: reason.clone(),
                        since_unix_ms: now,
                    });
                } else {
                    record.legal_hold = None;
                }
                record.timeline.push(TimelineEntry {
                    at_unix_ms: now,
                    event_type: "legal_hold".into(),
                    source_service: crate::SERVICE_NAME.into(),
                    description: format!("legal hold {verb} by {by}: {reason}"),
                    event_id: String::new(),
                });
                Ok(None)
            })
            .await?;
        let _ = self.changes.send((record.clone(), "legal_hold".into()));
        Ok(Response::new(pb::SetLegalHoldResponse {
            incident: Some(incident_to_wire(&record)),
        }))
    }
}

/// The incident id and a reason of 1 to 500 characters, or INVALID_ARGUMENT naming the field.
fn closing_fields(incident_id: &str, reason: &str) -> Result<(String, String), Status> {
    let incident_id = incident_id.trim();
    if incident_id.is_empty() {
        return Err(Status::invalid_argument("incident_id is required"));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Status::invalid_argument(
            "reason: say why, in 1 to 500 characters",
        ));
    }
    Ok((incident_id.to_string(), reason.to_string()))
}

/// Refuses new work with `UNAVAILABLE` (and a `retry-after` of 1 s) while the outbox holds more
/// than [`crate::feed::OUTBOX_LEN_MAX`] events: the bus is behind, and accepting more would only
/// grow the backlog without bound. Nothing is stored for a refused request.
fn backpressure(store: &Store) -> Result<(), Status> {
    let waiting = store.outbox_len();
    if waiting <= crate::feed::OUTBOX_LEN_MAX {
        return Ok(());
    }
    let mut status = Status::unavailable(format!(
        "the bus is behind: {waiting} events are waiting to be published; retry in {} s",
        crate::feed::RETRY_AFTER_SECONDS
    ));
    status.metadata_mut().insert(
        "retry-after",
        tonic::metadata::MetadataValue::from(crate::feed::RETRY_AFTER_SECONDS),
    );
    Err(status)
}

/// The lead jurisdiction's code once graded; empty before.
fn lead_of(record: &IncidentRecord) -> &str {
    record
        .grading
        .as_ref()
        .map_or("", |graded| graded.lead_code.as_str())
}

/// A failed commit or flush. A full disk is `UNAVAILABLE` with `retry-after` (nothing of the
/// request was kept; retry with the same request id once space is freed), like the feed
/// endpoints' 503; anything else is `INTERNAL`.
fn storage(error: store::Error) -> Status {
    lifecycle::grpc::storage_status(crate::SERVICE_NAME, error)
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal(format!("intake storage error: {error}"))
}

fn incident_to_wire(record: &IncidentRecord) -> pb::Incident {
    pb::Incident {
        id: record.id.clone(),
        namespace: record.namespace.clone(),
        report: Some(convert::report_to_wire(&record.report)),
        status: match record.status {
            IncidentStatus::Reported => pb::IncidentStatus::Reported,
            IncidentStatus::Graded => pb::IncidentStatus::Graded,
            IncidentStatus::Responding => pb::IncidentStatus::Responding,
            IncidentStatus::Closed => pb::IncidentStatus::Closed,
        } as i32,
        grading: record.grading.as_ref().map(convert::graded_to_wire),
        units: record.units.as_ref().map(convert::units_to_wire),
        timeline: record
            .timeline
            .iter()
            .map(|entry| pb::TimelineEntry {
                at_unix_ms: entry.at_unix_ms,
                event_type: entry.event_type.clone(),
                source_service: entry.source_service.clone(),
                description: entry.description.clone(),
                event_id: entry.event_id.clone(),
            })
            .collect(),
        reported_at_unix_ms: record.reported_at_unix_ms,
        updated_at_unix_ms: record.updated_at_unix_ms,
        alert_count: record.alert_count,
        open_alert_count: record.open_alert_count,
        legal_hold: record.legal_hold.as_ref().map(|hold| pb::LegalHold {
            by: hold.by.clone(),
            reason: hold.reason.clone(),
            since_unix_ms: hold.since_unix_ms,
        }),
        personal_data_erased_at_unix_ms: record.personal_data_erased_at_unix_ms.unwrap_or(0),
        recent_alerts: record
            .recent_alerts
            .iter()
            .map(|link| pb::LinkedAlert {
                alert_id: link.alert_id.clone(),
                format: link.format.clone(),
                identity: link.identity.clone(),
                headline: link.headline.clone(),
                state: link.state.clone(),
                received_at_unix_ms: link.received_at_unix_ms,
            })
            .collect(),
    }
}
