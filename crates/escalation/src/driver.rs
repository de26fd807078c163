//! The grader: turns a `reported` event into a grading decision, a lead jurisdiction and a
//! `graded` event, committed together.

use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError, subjects};
use domain::escalation::EscalationPolicy;
use domain::event::{
    DowngradeProposed, EventBody, Graded, IncidentClosed, IncidentEvent, IncidentReport,
    IncidentUpdated,
};
use domain::grade::DensityClass;
use domain::region::Region;
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

use crate::command;

/// Escalation's record of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradingRecord {
    pub incident_id: String,
    pub namespace: String,
    /// The grading in force (its lead follows regrades and take-overs).
    pub graded: Graded,
    pub graded_at_unix_ms: i64,
    /// The lower grading new facts proposed, until an officer confirms it.
    #[serde(default)]
    pub proposed: Option<Graded>,
}

/// `graded` with its lead set to the machine's lead `rung`.
pub fn with_lead(region: &Region, mut graded: Graded, rung: &domain::escalation::Rung) -> Graded {
    let lead = command::jurisdiction_ref(region, rung);
    graded.lead_code = lead.code;
    graded.lead_name = lead.name;
    graded.lead_level = lead.level;
    graded
}

/// An escalation event for the outbox: its subject (in the incident's `partition`) and bytes.
pub fn outgoing(
    namespace: &str,
    partition: &str,
    incident_id: &str,
    now_unix_ms: i64,
    body: EventBody,
) -> Result<(String, Vec<u8>), String> {
    let out = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.to_string(),
        namespace: namespace.to_string(),
        at_unix_ms: now_unix_ms,
        source_service: crate::SERVICE_NAME.into(),
        body,
    };
    let subject =
        subjects::incident_event(namespace, partition, incident_id, out.body.event_type())
            .map_err(|e| e.to_string())?;
    Ok((subject, muster_proto::convert::encode_event(&out)))
}

/// What new facts did to an incident's grade.
enum Regrade {
    /// A more severe grade applied at once.
    Upgraded,
    /// A lower grade was proposed (newly: a repeat proposal changes nothing).
    DowngradeProposed,
    /// The grade stands (perhaps a pending downgrade was withdrawn).
    Unchanged,
}

/// `grading/<ns>/<id>`.
pub fn grading_key(namespace: &str, incident_id: &str) -> String {
    format!("grading/{namespace}/{incident_id}")
}

/// Grades a report and names its lead: the pure decision, with no I/O.
pub fn grade_incident(region: &Region, report: &IncidentReport) -> Result<Graded, String> {
    let sub_type = domain::class::sub_type(&report.kind)
        .ok_or_else(|| format!("unknown kind {:?}", report.kind))?;
    let township = region
        .tree
        .get(&report.township_code)
        .ok_or_else(|| format!("unknown township {:?}", report.township_code))?;
    // A township without a density class is graded as fairly dense, the base column of the table.
    let density = township.density.unwrap_or(DensityClass::FairlyDense);
    let province = region.tree.province_of(&report.township_code);
    let decision = region.rulebook.grade(
        sub_type,
        &report.facts,
        density,
        province.map(|p| p.code.as_str()),
        province.and_then(|p| p.gdp_cny),
    );
    let lead = region
        .tree
        .lead_for(decision.grade, &report.township_codes())
        .map_err(|e| e.to_string())?;
    // A forecast warning may call for a higher response than the facts so far (the grade, and
    // with it the lead, still follow the facts).
    let mut response_level = decision.response_level;
    let mut reason = decision.reason;
    if let Some(warning) = report.warning
        && let Some((level, why)) = region.rulebook.warning_response(sub_type, warning)
        && response_level.is_none_or(|current| level < current)
    {
        response_level = Some(level);
        reason.push_str(&format!("; {why}"));
    }
    Ok(Graded {
        grade: decision.grade,
        response_level,
        lead_code: lead.code.clone(),
        lead_name: lead.name.clone(),
        lead_level: lead.level,
        rule_id: decision.rule_id,
        rule_version: decision.rule_version,
        reason,
        initial_judgement: decision.initial_judgement,
        facts: report.facts.clone(),
        report: report.clone(),
    })
}

pub struct Grader {
    store: Store,
    region: Arc<Region>,
    policy: Arc<EscalationPolicy>,
}

impl Grader {
    pub fn new(store: Store, region: Arc<Region>, policy: Arc<EscalationPolicy>) -> Grader {
        Grader {
            store,
            region,
            policy,
        }
    }
}

impl Grader {
    /// New facts: re-grade with the rulebook and hand the grade to the incident's machine. An
    /// upgrade applies at once (`graded`, and `lead_changed` when the lead moves); a downgrade
    /// is only proposed (`downgrade_proposed`). One commit with the machine's compare-and-swap.
    fn handle_updated(
        &self,
        event: &IncidentEvent,
        update: &IncidentUpdated,
    ) -> Result<Commit, HandlerError> {
        let (namespace, incident_id) = (&event.namespace, &event.incident_id);
        let key = grading_key(namespace, incident_id);
        let Some(mut grading) = self
            .store
            .get::<GradingRecord>(&key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?
        else {
            // `reported` comes first on this consumer: an ungraded incident had a refused report.
            return Err(HandlerError::Poison(format!(
                "update for incident {incident_id}, which escalation never graded"
            )));
        };
        let old = &grading.graded.report.facts;
        let casualties_changed = old.deaths != update.facts.deaths
            || old.missing != update.facts.missing
            || old.serious_injuries != update.facts.serious_injuries;
        let mut report = grading.graded.report.clone();
        report.facts = update.facts.clone();
        let regraded = grade_incident(&self.region, &report)
            .map_err(|reason| HandlerError::Poison(format!("incident {incident_id}: {reason}")))?;
        let now = lifecycle::unix_ms_now();
        let prepared = command::prepare_transition(
            &self.store,
            &self.region,
            namespace,
            incident_id,
            now,
            |record, now| {
                let machine = &mut record.machine;
                let before = machine.grade();
                let pending_before = machine.pending_downgrade();
                let outcome = match regraded.grade {
                    Some(new) if before != Some(new) && pending_before != Some(new) => {
                        machine.handle_regrade(new, now);
                        if machine.grade() != before {
                            Regrade::Upgraded
                        } else if machine.pending_downgrade() == Some(new) {
                            Regrade::DowngradeProposed
                        } else {
                            Regrade::Unchanged
                        }
                    }
                    // The grade in force again: a pending downgrade is withdrawn.
                    Some(new) if before == Some(new) && pending_before.is_some() => {
                        machine.handle_regrade(new, now);
                        Regrade::Unchanged
                    }
                    _ => Regrade::Unchanged,
                };
                if casualties_changed && !matches!(outcome, Regrade::Upgraded) {
                    // Inside the re-report window new casualty figures owe a follow-up report.
                    machine.handle_casualties_changed(now);
                }
                Ok((outcome, machine.lead().cloned()))
            },
        )
        .map_err(|error| match error {
            command::TransitionError::Store(e) => HandlerError::Retry(e.to_string()),
            other => HandlerError::Poison(format!("incident {incident_id}: {other}")),
        })?;
        let mut commit = prepared.commit;
        let (outcome, lead) = prepared.value;
        let lead = lead.ok_or_else(|| {
            HandlerError::Poison(format!("incident {incident_id}: machine has no lead"))
        })?;
        let body = match outcome {
            Regrade::Upgraded => {
                let graded = with_lead(&self.region, regraded, &lead);
                tracing::info!(%incident_id, grade = ?graded.grade, lead = %graded.lead_code, "incident upgraded on new facts");
                grading.graded = graded.clone();
                grading.graded_at_unix_ms = now;
                grading.proposed = None;
                Some(EventBody::Graded(graded))
            }
            Regrade::DowngradeProposed => {
                tracing::info!(%incident_id, proposed = ?regraded.grade, "downgrade proposed on new facts");
                let body = EventBody::DowngradeProposed(DowngradeProposed {
                    from: grading.graded.grade,
                    to: regraded.grade,
                    reason: regraded.reason.clone(),
                });
                grading.proposed = Some(regraded);
                Some(body)
            }
            Regrade::Unchanged => {
                if prepared.record.machine.pending_downgrade().is_none() {
                    grading.proposed = None;
                }
                None
            }
        };
        if let Some(body) = body {
            let partition = prepared.record.partition(&self.region);
            let (subject, bytes) = outgoing(namespace, partition, incident_id, now, body)
                .map_err(|e| HandlerError::Poison(format!("incident {incident_id}: {e}")))?;
            commit.event(subject, bytes);
        }
        commit
            .put(key, &grading)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(commit)
    }
}

impl Grader {
    /// The incident is over: its machine stops (every timer cancelled, open reports waived) in
    /// the consumer's commit. An incident escalation never graded, or one already closed, has
    /// nothing to do.
    fn handle_closed(
        &self,
        event: &IncidentEvent,
        closed: &IncidentClosed,
    ) -> Result<Commit, HandlerError> {
        let (namespace, incident_id) = (&event.namespace, &event.incident_id);
        let now = lifecycle::unix_ms_now();
        let prepared = command::prepare_close(
            &self.store,
            &self.region,
            namespace,
            incident_id,
            &closed.by,
            &closed.reason,
            now,
        )
        .map_err(|error| match error {
            command::TransitionError::Store(e) => HandlerError::Retry(e.to_string()),
            other => HandlerError::Poison(format!("incident {incident_id}: {other}")),
        })?;
        let Some(prepared) = prepared else {
            tracing::debug!(%incident_id, "closed: no open escalation record; nothing to stop");
            return Ok(Commit::new());
        };
        tracing::info!(
            %incident_id,
            by = %closed.by,
            reason = %closed.reason,
            "incident closed; escalation timers cancelled and open reports waived"
        );
        Ok(prepared.commit)
    }
}

impl Handler for Grader {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let report = match &event.body {
            EventBody::Reported(report) => report,
            EventBody::Updated(update) => return self.handle_updated(&event, update),
            EventBody::Closed(closed) => return self.handle_closed(&event, closed),
            other => {
                return Err(HandlerError::Poison(format!(
                    "expected a reported, updated or closed event, got {}",
                    other.event_type()
                )));
            }
        };
        let key = grading_key(&event.namespace, &event.incident_id);
        if self
            .store
            .get::<GradingRecord>(&key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .is_some()
        {
            // Already graded under another message id (a re-published report): nothing new.
            return Ok(Commit::new());
        }
        let graded = grade_incident(&self.region, report).map_err(|reason| {
            HandlerError::Poison(format!("incident {}: {reason}", event.incident_id))
        })?;
        let now = lifecycle::unix_ms_now();
        tracing::info!(
            incident_id = %event.incident_id,
            grade = ?graded.grade,
            lead = %graded.lead_code,
            rule = %graded.rule_id,
            "incident graded"
        );
        let out = IncidentEvent {
            event_id: String::new(),
            incident_id: event.incident_id.clone(),
            namespace: event.namespace.clone(),
            at_unix_ms: now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::Graded(graded.clone()),
        };
        let partition = self.region.tree.partition_of(&report.township_code);
        let subject = subjects::incident_event(
            &event.namespace,
            partition,
            &event.incident_id,
            subjects::GRADED,
        )
        .map_err(|e| HandlerError::Poison(e.to_string()))?;
        // The incident's escalation machine starts with the grading: chain, obligations, timers.
        let mut command = command::new_record(
            &self.region,
            &self.policy,
            &event.namespace,
            &event.incident_id,
            &graded,
            now,
        )
        .map_err(|reason| {
            HandlerError::Poison(format!("incident {}: {reason}", event.incident_id))
        })?;
        let record = GradingRecord {
            incident_id: event.incident_id.clone(),
            namespace: event.namespace.clone(),
            graded,
            graded_at_unix_ms: now,
            proposed: None,
        };
        let mut commit = Commit::new();
        commit
            .put(key, &record)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        commit.event(subject, muster_proto::convert::encode_event(&out));
        commit.expect_raw(
            command::command_key(&event.namespace, &event.incident_id),
            None,
        );
        command::stage(
            &mut commit,
            &self.region,
            &Default::default(),
            &mut command,
            now,
        )
        .map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(commit)
    }
}
