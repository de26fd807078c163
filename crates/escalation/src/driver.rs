//! The grader: turns a `reported` event into a grading decision, a lead jurisdiction and a
//! `graded` event, committed together.

use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError, subjects};
use domain::escalation::EscalationPolicy;
use domain::event::{EventBody, Graded, IncidentEvent, IncidentReport};
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
    pub graded: Graded,
    pub graded_at_unix_ms: i64,
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
    let province_gdp_cny = region
        .tree
        .province_of(&report.township_code)
        .and_then(|p| p.gdp_cny);
    let decision = region
        .rulebook
        .grade(sub_type, &report.facts, density, province_gdp_cny);
    let lead = region
        .tree
        .lead_for(decision.grade, &report.township_codes())
        .map_err(|e| e.to_string())?;
    Ok(Graded {
        grade: decision.grade,
        response_level: decision.response_level,
        lead_code: lead.code.clone(),
        lead_name: lead.name.clone(),
        lead_level: lead.level,
        rule_id: decision.rule_id,
        rule_version: decision.rule_version,
        reason: decision.reason,
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

impl Handler for Grader {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = muster_proto::convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        let EventBody::Reported(report) = &event.body else {
            return Err(HandlerError::Poison(format!(
                "expected a reported event, got {}",
                event.body.event_type()
            )));
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
        let subject =
            subjects::incident_event(&event.namespace, &event.incident_id, subjects::GRADED)
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
