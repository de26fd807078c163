//! The gRPC face of escalation: `muster.v1.EscalationService`. Wire types stop here.

use domain::escalation::{
    Handled, Ignored, Obligation, ObligationId, ObligationStatus, ReportKind,
};
use lifecycle::access::Caller;
use muster_proto::convert;
use muster_proto::v1 as pb;
use store::Store;
use tonic::{Request, Response, Status};

use crate::Config;
use domain::event::EventBody;

use crate::command::{
    CommandRecord, Prepared, TransitionError, command_key, command_prefix, jurisdiction_ref,
    prepare_transition, transition,
};
use crate::driver::{GradingRecord, grading_key, outgoing, with_lead};

/// How many times a transition that also rewrites the grading is retried after a conflict.
const GRADED_TRANSITION_ATTEMPTS_MAX: usize = 8;
/// Longest officer or commander name accepted, in bytes.
const NAME_BYTES_MAX: usize = 128;
/// Longest skip-level report reason accepted, in characters.
const SKIP_REASON_CHARS_MAX: usize = 500;

/// The gRPC metadata key naming the partition that owns an incident another instance refused.
pub const PARTITION_METADATA: &str = "muster-partition";

pub struct EscalationGrpc {
    config: Config,
    store: Store,
    /// Asked which partition owns an incident this instance has not graded.
    bus: bus::Bus,
}

impl EscalationGrpc {
    pub fn new(config: Config, store: Store, bus: bus::Bus) -> EscalationGrpc {
        EscalationGrpc { config, store, bus }
    }

    /// Refuses an incident of a partition this instance does not serve, naming the partition
    /// that owns it (the message, and the `muster-partition` metadata) so the client can ask
    /// the right instance. Asked only for incidents this instance has not graded: the stream
    /// says where the incident's report was published. When the stream cannot tell (not yet
    /// published, NATS unreachable), the handler goes on and answers as before (NOT_FOUND).
    async fn refuse_other_partition(
        &self,
        namespace: &str,
        incident_id: &str,
    ) -> Result<(), Status> {
        if self.config.partitions.is_empty() || incident_id.is_empty() {
            return Ok(());
        }
        let owner = match self.bus.incident_partition(namespace, incident_id).await {
            Ok(Some(owner)) => owner,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::warn!(%error, incident_id, "cannot ask the stream which partition owns the incident");
                return Ok(());
            }
        };
        if self.config.partitions.contains(&owner) {
            return Ok(());
        }
        let name = self
            .config
            .region
            .tree
            .get(&owner)
            .map_or(String::new(), |j| format!(" ({})", j.name));
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Ok(value) = owner.parse() {
            metadata.insert(PARTITION_METADATA, value);
        }
        Err(Status::with_metadata(
            tonic::Code::FailedPrecondition,
            format!(
                "incident {incident_id:?} belongs to partition {owner}{name}; this escalation \
                 instance serves partition {}: ask the escalation instance serving {owner}",
                self.config.partitions.join(", ")
            ),
            metadata,
        ))
    }

    /// The request's namespace (`live` when empty), if this instance serves it.
    fn served_namespace<'a>(&'a self, requested: &str) -> Result<&'a str, Status> {
        lifecycle::grpc::served_namespace(crate::SERVICE_NAME, &self.config.namespace, requested)
    }

    /// The lead and townships of a graded incident, for scope checks; `None` when escalation has
    /// not graded it (the handler answers NOT_FOUND).
    fn incident_scope(
        &self,
        namespace: &str,
        incident_id: &str,
    ) -> Result<Option<(String, Vec<String>)>, Status> {
        if incident_id.is_empty() {
            return Ok(None);
        }
        let grading: Option<GradingRecord> = self
            .store
            .get(&grading_key(namespace, incident_id))
            .map_err(storage_error)?;
        Ok(grading.map(|record| {
            let townships = record
                .graded
                .report
                .township_codes()
                .into_iter()
                .map(str::to_string)
                .collect();
            (record.graded.lead_code, townships)
        }))
    }

    /// Names the incident on the audit note and refuses it outside the caller's scope, or
    /// outside this instance's partitions.
    async fn require_incident(
        &self,
        caller: &Caller,
        namespace: &str,
        incident_id: &str,
    ) -> Result<(), Status> {
        caller.note.namespace(namespace);
        caller.note.incident(incident_id);
        match self.incident_scope(namespace, incident_id)? {
            Some((lead, townships)) => {
                let townships: Vec<&str> = townships.iter().map(String::as_str).collect();
                caller.require_incident(&self.config.region.tree, incident_id, &lead, &townships)
            }
            None => self.refuse_other_partition(namespace, incident_id).await,
        }
    }

    /// Whether the caller may see the incident (for lists).
    fn in_scope(
        &self,
        caller: &Caller,
        namespace: &str,
        incident_id: &str,
    ) -> Result<bool, Status> {
        Ok(match self.incident_scope(namespace, incident_id)? {
            Some((lead, townships)) => {
                let townships: Vec<&str> = townships.iter().map(String::as_str).collect();
                caller.sees_incident(&self.config.region.tree, &lead, &townships)
            }
            None => caller.principal.jurisdiction() == self.config.region.tree.root().code,
        })
    }

    fn load_command(&self, namespace: &str, incident_id: &str) -> Result<CommandRecord, Status> {
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        self.store
            .get::<CommandRecord>(&command_key(namespace, incident_id))
            .map_err(storage_error)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "incident {incident_id:?} has not been graded in namespace {namespace}"
                ))
            })
    }

    /// Runs a transition, makes it durable, and answers with the record after it.
    async fn transition<T>(
        &self,
        namespace: &str,
        incident_id: &str,
        mut input: impl FnMut(&mut CommandRecord, i64) -> Result<T, String>,
    ) -> Result<(T, CommandRecord), Status> {
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let outcome = transition(
            &self.store,
            &self.config.region,
            namespace,
            incident_id,
            |_| {},
            |record, now| {
                refuse_if_closed(record)?;
                input(record, now)
            },
        )
        .map_err(|error| transition_status(namespace, incident_id, error));
        let outcome = self.durable_refusal(outcome).await?;
        // Answer only once the change is durable.
        self.store.flush().await.map_err(storage_error)?;
        Ok(outcome)
    }

    /// A refusal read from the record ("already acknowledged", "already at the top") is given
    /// only once the store is durable (`lifecycle::grpc::durable_refusal`).
    async fn durable_refusal<T>(&self, result: Result<T, Status>) -> Result<T, Status> {
        lifecycle::grpc::durable_refusal(crate::SERVICE_NAME, &self.store, result).await
    }

    /// Like [`Self::transition`], and in the same commit rewrites the incident's grading record
    /// with `finish`, which may also return one more event for the outbox.
    async fn transition_graded<T>(
        &self,
        namespace: &str,
        incident_id: &str,
        mut input: impl FnMut(&mut CommandRecord, i64) -> Result<T, String>,
        finish: impl Fn(&T, &CommandRecord, &mut GradingRecord) -> Option<EventBody>,
    ) -> Result<(T, CommandRecord), Status> {
        if incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let region = &self.config.region;
        let key = grading_key(namespace, incident_id);
        for _attempt in 0..GRADED_TRANSITION_ATTEMPTS_MAX {
            let now = lifecycle::unix_ms_now();
            let prepared = prepare_transition(
                &self.store,
                region,
                namespace,
                incident_id,
                now,
                |record, now| {
                    refuse_if_closed(record)?;
                    input(record, now)
                },
            )
            .map_err(|error| transition_status(namespace, incident_id, error));
            let Prepared {
                value,
                record,
                mut commit,
            } = self.durable_refusal(prepared).await?;
            let mut grading: GradingRecord = self
                .store
                .get(&key)
                .map_err(storage_error)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "incident {incident_id:?} has not been graded in namespace {namespace}"
                    ))
                })?;
            if let Some(body) = finish(&value, &record, &mut grading) {
                let partition = record.partition(region);
                let (subject, bytes) = outgoing(namespace, partition, incident_id, now, body)
                    .map_err(|e| Status::invalid_argument(format!("incident_id: {e}")))?;
                commit.event(subject, bytes);
            }
            commit.put(key.clone(), &grading).map_err(storage_error)?;
            match self.store.commit(&commit) {
                Ok(_) => {
                    self.store.flush().await.map_err(storage_error)?;
                    return Ok((value, record));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(storage_error(error)),
            }
        }
        Err(Status::aborted(format!(
            "incident {incident_id:?} kept changing; retry"
        )))
    }

    fn command_to_wire(&self, record: &CommandRecord) -> pb::Command {
        let region = &self.config.region;
        let lead = record
            .machine
            .lead()
            .map(|rung| jurisdiction_ref(region, rung));
        let asked = record
            .machine
            .escalation_rung()
            .map(|rung| jurisdiction_ref(region, rung));
        pb::Command {
            incident_id: record.incident_id.clone(),
            grade: convert::grade_to_wire(record.machine.grade()) as i32,
            lead_jurisdiction_code: lead.as_ref().map(|j| j.code.clone()).unwrap_or_default(),
            lead_jurisdiction_name: lead.as_ref().map(|j| j.name.clone()).unwrap_or_default(),
            lead_level: lead
                .as_ref()
                .map_or(pb::JurisdictionLevel::Unspecified, |j| {
                    convert::level_to_wire(j.level)
                }) as i32,
            lead_since_unix_ms: record.lead_since_unix_ms,
            escalation_jurisdiction_code: asked
                .as_ref()
                .map(|j| j.code.clone())
                .unwrap_or_default(),
            escalation_jurisdiction_name: asked
                .as_ref()
                .map(|j| j.name.clone())
                .unwrap_or_default(),
            escalation_level: asked
                .as_ref()
                .map_or(pb::JurisdictionLevel::Unspecified, |j| {
                    convert::level_to_wire(j.level)
                }) as i32,
            acknowledged: record.machine.is_acknowledged(),
            acknowledged_by: record.acknowledged_by.clone().unwrap_or_default(),
            acknowledged_at_unix_ms: record.acknowledged_at_unix_ms.unwrap_or_default(),
            ack_due_at_unix_ms: record.ack_due_at_unix_ms().unwrap_or_default(),
            escalation_count: record.escalation_count,
            pending_downgrade: convert::grade_to_wire(record.machine.pending_downgrade()) as i32,
            commander_name: record.commander_name.clone().unwrap_or_default(),
        }
    }
}

/// Officers' inputs on a closed incident are refused with who closed it and why.
fn refuse_if_closed(record: &CommandRecord) -> Result<(), String> {
    match record.machine.closure() {
        None => Ok(()),
        Some(closure) => Err(format!(
            "incident {:?} was closed by {} ({}); its escalation has stopped",
            record.incident_id,
            record.closed_by.as_deref().unwrap_or("its source"),
            closure.reason
        )),
    }
}

fn transition_status(namespace: &str, incident_id: &str, error: TransitionError) -> Status {
    match error {
        TransitionError::NotFound { .. } => Status::not_found(format!(
            "incident {incident_id:?} has not been graded in namespace {namespace}"
        )),
        TransitionError::Refused(text) => Status::failed_precondition(text),
        TransitionError::Store(error) => storage_error(error),
        TransitionError::Contended { .. } => Status::aborted(error.to_string()),
    }
}

/// `Langang County (390202, county)`.
fn describe_jurisdiction(j: &domain::event::JurisdictionRef) -> String {
    format!("{} ({}, {})", j.name, j.code, j.level.as_str())
}

fn storage_error(error: store::Error) -> Status {
    lifecycle::grpc::storage_status(crate::SERVICE_NAME, error)
}

fn deadline_to_wire(incident_id: &str, obligation: &Obligation, now_unix_ms: i64) -> pb::Deadline {
    let (status, sent_at_unix_ms, late_by_ms) = match obligation.status {
        ObligationStatus::Open if obligation.due_at_unix_ms <= now_unix_ms => (
            pb::DeadlineStatus::Late,
            0,
            now_unix_ms - obligation.due_at_unix_ms,
        ),
        ObligationStatus::Open => (pb::DeadlineStatus::Open, 0, 0),
        ObligationStatus::Late => (
            pb::DeadlineStatus::Late,
            0,
            (now_unix_ms - obligation.due_at_unix_ms).max(0),
        ),
        ObligationStatus::Met {
            submitted_at_unix_ms,
            late_by_ms,
        } => (pb::DeadlineStatus::Met, submitted_at_unix_ms, late_by_ms),
        ObligationStatus::Waived { .. } => (pb::DeadlineStatus::Waived, 0, 0),
    };
    pb::Deadline {
        incident_id: incident_id.to_string(),
        obligation_id: obligation.id.0,
        rule_id: obligation.rule_id.clone(),
        kind: obligation.kind.as_str().to_string(),
        from_tier: obligation.from.as_str().to_string(),
        to_tier: obligation.to.as_str().to_string(),
        to_jurisdiction_code: obligation.to_code.clone().unwrap_or_default(),
        created_at_unix_ms: obligation.created_at_unix_ms,
        due_at_unix_ms: obligation.due_at_unix_ms,
        sent_at_unix_ms,
        late_by_ms,
        status: status as i32,
    }
}

#[tonic::async_trait]
impl pb::escalation_service_server::EscalationService for EscalationGrpc {
    async fn list_jurisdictions(
        &self,
        request: Request<pb::ListJurisdictionsRequest>,
    ) -> Result<Response<pb::ListJurisdictionsResponse>, Status> {
        let level = convert::level_from_wire(request.into_inner().level());
        let jurisdictions = self
            .config
            .region
            .tree
            .all()
            .filter(|j| level.is_none_or(|level| j.level == level))
            .map(convert::jurisdiction_to_wire)
            .collect();
        Ok(Response::new(pb::ListJurisdictionsResponse {
            jurisdictions,
        }))
    }

    async fn get_grading(
        &self,
        request: Request<pb::GetGradingRequest>,
    ) -> Result<Response<pb::GetGradingResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let record: GradingRecord = self
            .store
            .get(&grading_key(namespace, &request.incident_id))
            .map_err(|e| Status::internal(format!("escalation storage error: {e}")))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "incident {:?} has not been graded in namespace {namespace}",
                    request.incident_id
                ))
            })?;
        Ok(Response::new(pb::GetGradingResponse {
            grading: Some(convert::graded_to_wire(&record.graded)),
        }))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let officer = request.officer.trim().to_string();
        if officer.is_empty() {
            return Err(Status::invalid_argument(
                "officer is required: who acknowledges?",
            ));
        }
        let (_, record) = self
            .transition(namespace, &request.incident_id, |record, now| match record
                .machine
                .handle_acknowledge(&officer, now)
            {
                Handled::Applied => Ok(()),
                Handled::Ignored(Ignored::AlreadyAcknowledged) => Err(format!(
                    "incident {:?} is already acknowledged by {}",
                    record.incident_id,
                    record.acknowledged_by.as_deref().unwrap_or("someone")
                )),
                Handled::Ignored(other) => Err(format!(
                    "incident {:?} cannot be acknowledged now ({other:?})",
                    record.incident_id
                )),
            })
            .await?;
        Ok(Response::new(pb::AcknowledgeResponse {
            command: Some(self.command_to_wire(&record)),
        }))
    }

    async fn escalate(
        &self,
        request: Request<pb::EscalateRequest>,
    ) -> Result<Response<pb::EscalateResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let reason = request.reason.trim().to_string();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "reason is required: say why the incident is escalated",
            ));
        }
        let (_, record) = self
            .transition(namespace, &request.incident_id, |record, now| match record
                .machine
                .handle_escalate(&reason, now)
            {
                Handled::Applied => Ok(()),
                Handled::Ignored(Ignored::AlreadyAtTop) => Err(format!(
                    "incident {:?} is already escalated to the top of its ladder",
                    record.incident_id
                )),
                Handled::Ignored(other) => Err(format!(
                    "incident {:?} cannot be escalated now ({other:?})",
                    record.incident_id
                )),
            })
            .await?;
        Ok(Response::new(pb::EscalateResponse {
            command: Some(self.command_to_wire(&record)),
        }))
    }

    async fn list_deadlines(
        &self,
        request: Request<pb::ListDeadlinesRequest>,
    ) -> Result<Response<pb::ListDeadlinesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        let records = if request.incident_id.is_empty() {
            let mut visible = Vec::new();
            // One record at a time; only those in scope are kept.
            for item in self
                .store
                .iter_prefix::<CommandRecord>(&command_prefix(namespace))
            {
                let (_, record) = item.map_err(storage_error)?;
                if self.in_scope(&caller, namespace, &record.incident_id)? {
                    visible.push(record);
                }
            }
            visible
        } else {
            self.require_incident(&caller, namespace, &request.incident_id)
                .await?;
            vec![self.load_command(namespace, &request.incident_id)?]
        };
        let now = lifecycle::unix_ms_now();
        let deadlines = records
            .iter()
            .flat_map(|record| {
                record
                    .machine
                    .obligations()
                    .map(|obligation| deadline_to_wire(&record.incident_id, obligation, now))
            })
            .collect();
        Ok(Response::new(pb::ListDeadlinesResponse { deadlines }))
    }

    async fn submit_report(
        &self,
        request: Request<pb::SubmitReportRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let id = ObligationId(request.obligation_id);
        // Unknown obligations are NOT_FOUND, not a refused transition.
        let current = self.load_command(namespace, &request.incident_id)?;
        if !current.machine.obligations().any(|o| o.id == id) {
            return Err(Status::not_found(format!(
                "incident {:?} has no reporting obligation {}",
                request.incident_id, id.0
            )));
        }
        let (now, record) = self
            .transition(namespace, &request.incident_id, |record, now| match record
                .machine
                .handle_report_submitted(id, now)
            {
                Handled::Applied => Ok(now),
                Handled::Ignored(Ignored::AlreadySubmitted) => Err(format!(
                    "obligation {} of incident {:?} was already reported",
                    id.0, record.incident_id
                )),
                Handled::Ignored(other) => Err(format!(
                    "obligation {} of incident {:?} cannot be reported ({other:?})",
                    id.0, record.incident_id
                )),
            })
            .await?;
        let deadline = record
            .machine
            .obligations()
            .find(|o| o.id == id)
            .map(|obligation| deadline_to_wire(&record.incident_id, obligation, now));
        Ok(Response::new(pb::SubmitReportResponse { deadline }))
    }

    async fn confirm_downgrade(
        &self,
        request: Request<pb::ConfirmDowngradeRequest>,
    ) -> Result<Response<pb::ConfirmDowngradeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let officer = request.officer.trim().to_string();
        if officer.is_empty() {
            return Err(Status::invalid_argument(
                "officer is required: who confirms the downgrade?",
            ));
        }
        if officer.len() > NAME_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "officer is {} bytes; at most {NAME_BYTES_MAX}",
                officer.len()
            )));
        }
        let region = self.config.region.clone();
        let (_, record) = self
            .transition_graded(
                namespace,
                &request.incident_id,
                |record, now| match record.machine.handle_confirm_downgrade(&officer, now) {
                    Handled::Applied => Ok(()),
                    Handled::Ignored(Ignored::NoPendingDowngrade) => Err(format!(
                        "incident {:?} has no pending downgrade to confirm (a downgrade is proposed only when new facts call for a lower grade)",
                        record.incident_id
                    )),
                    Handled::Ignored(other) => Err(format!(
                        "incident {:?} cannot be downgraded now ({other:?})",
                        record.incident_id
                    )),
                },
                |_, record, grading| {
                    let lead = record.machine.lead()?;
                    let mut graded = grading.proposed.take().unwrap_or_else(|| {
                        let mut graded = grading.graded.clone();
                        graded.grade = record.machine.grade();
                        graded
                    });
                    graded.grade = record.machine.grade();
                    graded.reason = format!("{}; downgrade confirmed by {officer}", graded.reason);
                    let graded = with_lead(&region, graded, lead);
                    grading.graded = graded.clone();
                    grading.graded_at_unix_ms = record.lead_since_unix_ms.max(grading.graded_at_unix_ms);
                    Some(EventBody::Graded(graded))
                },
            )
            .await?;
        Ok(Response::new(pb::ConfirmDowngradeResponse {
            command: Some(self.command_to_wire(&record)),
        }))
    }

    async fn take_command(
        &self,
        request: Request<pb::TakeCommandRequest>,
    ) -> Result<Response<pb::TakeCommandResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let code = request.jurisdiction_code.trim().to_string();
        if code.is_empty() {
            return Err(Status::invalid_argument(
                "jurisdiction_code is required: the jurisdiction taking command (musterctl jurisdictions)",
            ));
        }
        let region = self.config.region.clone();
        let Some(taker) = region.tree.get(&code) else {
            return Err(Status::invalid_argument(format!(
                "jurisdiction_code {code:?} is not a jurisdiction of this region (list them with: musterctl jurisdictions)"
            )));
        };
        // Command passes to a jurisdiction the caller speaks for: its own or one below it.
        caller.require_code(
            &region.tree,
            &taker.code,
            &format!("taking command for {} ({})", taker.name, taker.code),
        )?;
        let taker = jurisdiction_ref(
            &region,
            &domain::escalation::Rung::new(taker.code.clone(), taker.level),
        );
        let commander = request.commander_name.trim().to_string();
        if commander.len() > NAME_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "commander_name is {} bytes; at most {NAME_BYTES_MAX}",
                commander.len()
            )));
        }
        let (_, record) = self
            .transition_graded(
                namespace,
                &request.incident_id,
                |record, now| {
                    let lead = record
                        .machine
                        .lead()
                        .map(|rung| describe_jurisdiction(&jurisdiction_ref(&region, rung)))
                        .unwrap_or_else(|| "none".into());
                    if record.machine.lead().is_some_and(|rung| rung.code == code) {
                        return Err(format!(
                            "{} already leads incident {:?}",
                            describe_jurisdiction(&taker),
                            record.incident_id
                        ));
                    }
                    match record.machine.handle_take_command(&code, now) {
                        Ok(Handled::Applied) => {
                            record.commander_name =
                                (!commander.is_empty()).then(|| commander.clone());
                            Ok(())
                        }
                        Ok(Handled::Ignored(other)) => Err(format!(
                            "incident {:?} cannot change command now ({other:?})",
                            record.incident_id
                        )),
                        Err(_) => Err(format!(
                            "{} cannot take command of incident {:?}: only an ancestor of the current lead {lead} can take over (a sideways or lower level cannot)",
                            describe_jurisdiction(&taker),
                            record.incident_id
                        )),
                    }
                },
                |_, record, grading| {
                    if let Some(lead) = record.machine.lead() {
                        grading.graded = with_lead(&region, grading.graded.clone(), lead);
                    }
                    None
                },
            )
            .await?;
        Ok(Response::new(pb::TakeCommandResponse {
            command: Some(self.command_to_wire(&record)),
        }))
    }

    async fn skip_level_report(
        &self,
        request: Request<pb::SkipLevelReportRequest>,
    ) -> Result<Response<pb::SkipLevelReportResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let officer = request.officer.trim().to_string();
        if officer.is_empty() {
            return Err(Status::invalid_argument(
                "officer is required: who made the skip-level report?",
            ));
        }
        if officer.len() > NAME_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "officer is {} bytes; at most {NAME_BYTES_MAX}",
                officer.len()
            )));
        }
        let reason = request.reason.trim().to_string();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "reason is required: say why the parent level was skipped",
            ));
        }
        let reason_chars = reason.chars().count();
        if reason_chars > SKIP_REASON_CHARS_MAX {
            return Err(Status::invalid_argument(format!(
                "reason is {reason_chars} characters; at most {SKIP_REASON_CHARS_MAX}"
            )));
        }
        let region = self.config.region.clone();
        let mut refs = Vec::new();
        for (field, code) in [
            ("from_jurisdiction", request.from_jurisdiction.trim()),
            ("to_jurisdiction", request.to_jurisdiction.trim()),
        ] {
            if code.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "{field} is required: a jurisdiction code (musterctl jurisdictions)"
                )));
            }
            let Some(j) = region.tree.get(code) else {
                return Err(Status::invalid_argument(format!(
                    "{field} {code:?} is not a jurisdiction of this region (list them with: musterctl jurisdictions)"
                )));
            };
            refs.push(jurisdiction_ref(
                &region,
                &domain::escalation::Rung::new(j.code.clone(), j.level),
            ));
        }
        let (from, to) = (refs[0].clone(), refs[1].clone());
        let (value, record) = self
            .transition(namespace, &request.incident_id, |record, now| {
                match record
                    .machine
                    .handle_skip_level_report(&from.code, &to.code, &officer, &reason, now)
                {
                    Ok(Handled::Applied) => {}
                    Ok(Handled::Ignored(other)) => {
                        return Err(format!(
                            "incident {:?} cannot take a skip-level report now ({other:?})",
                            record.incident_id
                        ));
                    }
                    Err(error) => {
                        let problem = match error {
                            domain::Error::InvalidJurisdiction { problem, .. } => problem,
                            other => other.to_string(),
                        };
                        return Err(format!(
                            "skip-level report from {} to {} refused for incident {:?}: {problem}",
                            describe_jurisdiction(&from),
                            describe_jurisdiction(&to),
                            record.incident_id
                        ));
                    }
                }
                let id = record
                    .machine
                    .obligations()
                    .filter(|o| o.kind == ReportKind::SkipLevel)
                    .map(|o| o.id)
                    .max()
                    .ok_or("the skip-level report left no record")?;
                Ok((id, now))
            })
            .await?;
        let (id, now) = value;
        let deadline = record
            .machine
            .obligations()
            .find(|o| o.id == id)
            .map(|obligation| deadline_to_wire(&record.incident_id, obligation, now));
        // The machine checked that `to` is an ancestor above the parent of `from`.
        let skipped_jurisdiction_codes = region
            .tree
            .ancestors(&from.code)
            .into_iter()
            .skip(1)
            .take_while(|j| j.code != to.code)
            .map(|j| j.code.clone())
            .collect();
        Ok(Response::new(pb::SkipLevelReportResponse {
            deadline,
            skipped_jurisdiction_codes,
        }))
    }

    async fn get_command(
        &self,
        request: Request<pb::GetCommandRequest>,
    ) -> Result<Response<pb::GetCommandResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        let record = self.load_command(namespace, &request.incident_id)?;
        Ok(Response::new(pb::GetCommandResponse {
            command: Some(self.command_to_wire(&record)),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let namespace = self.served_namespace(&request.namespace)?;
        self.require_incident(&caller, namespace, &request.incident_id)
            .await?;
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let statuses =
            crate::notify::list_notifications(&self.store, namespace, &request.incident_id)
                .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: statuses
                .iter()
                .map(muster_proto::convert_notify::status_to_wire)
                .collect(),
        }))
    }
}
