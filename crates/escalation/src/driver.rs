//! The grader: turns a `reported` event into a grading decision, a lead jurisdiction and a
//! `graded` event, committed together.

use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError, subjects};
use domain::escalation::EscalationPolicy;
use domain::event::{
    DowngradeProposed, EventBody, Graded, IncidentClosed, IncidentEvent, IncidentUpdated,
};
use domain::grading::{Regrade, apply_regrade, casualties_changed};
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

/// `grading/<ns>/<id>`.
pub fn grading_key(namespace: &str, incident_id: &str) -> String {
    format!("grading/{namespace}/{incident_id}")
}

/// Grades a report and names its lead: the pure decision, shared with `musterctl replay`.
pub use domain::grading::grade_incident;

pub struct Grader {
    store: Store,
    region: Arc<Region>,
    policy: Arc<EscalationPolicy>,
    /// `None`: the system clock. `muster rebuild` sets the time each replayed input was handled.
    clock: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// In a run (`Handler::begin_run`): the incidents (namespace, id) it has handled.
    run: Option<std::collections::HashSet<(String, String)>>,
}

impl Grader {
    pub fn new(store: Store, region: Arc<Region>, policy: Arc<EscalationPolicy>) -> Grader {
        Grader {
            store,
            region,
            policy,
            clock: None,
            run: None,
        }
    }

    /// Reads `now` from `clock` (Unix milliseconds) instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<std::sync::atomic::AtomicI64>) -> Grader {
        self.clock = Some(clock);
        self
    }

    fn now(&self) -> i64 {
        match &self.clock {
            Some(clock) => clock.load(std::sync::atomic::Ordering::SeqCst),
            None => lifecycle::unix_ms_now(),
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
        let casualties_changed = casualties_changed(&grading.graded.report.facts, &update.facts);
        let mut report = grading.graded.report.clone();
        report.facts = update.facts.clone();
        let regraded = grade_incident(&self.region, &report)
            .map_err(|reason| HandlerError::Poison(format!("incident {incident_id}: {reason}")))?;
        let now = self.now();
        let prepared = command::prepare_transition(
            &self.store,
            &self.region,
            namespace,
            incident_id,
            now,
            |record, now| {
                let outcome =
                    apply_regrade(&mut record.machine, regraded.grade, casualties_changed, now);
                Ok((outcome, record.machine.lead().cloned()))
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
        let now = self.now();
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
        self.handle_event(&event)
    }

    /// Everything the grader reads and writes for an event is its incident's (grading, command
    /// record, timers), so a run keeps only the incidents it touched: a second event of one of
    /// them waits for the run to be applied, and every other reads the store as it is.
    fn begin_run(&mut self) -> bool {
        self.run = Some(std::collections::HashSet::new());
        true
    }

    fn handle_in_run(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        if let Some(run) = &mut self.run
            && !run.insert((event.namespace.clone(), event.incident_id.clone()))
        {
            return Ok(None);
        }
        self.handle_event(&event).map(Some)
    }

    fn end_run(&mut self) {
        self.run = None;
    }
}

impl Grader {
    fn handle_event(&self, event: &IncidentEvent) -> Result<Commit, HandlerError> {
        let report = match &event.body {
            EventBody::Reported(report) => report,
            EventBody::Updated(update) => return self.handle_updated(event, update),
            EventBody::Closed(closed) => return self.handle_closed(event, closed),
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
        let now = self.now();
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
