//! The host of each incident's escalation machine: its stored record, its durable timers and the
//! one-commit transitions that move it (grading, acknowledgement, escalation, timers, reports).
//!
//! Keys:
//! - `command/<ns>/<incident>`: the [`CommandRecord`] (the machine, serde JSON, plus who leads
//!   since when);
//! - `timer/<ns>/<due_at_unix_ms, 20 digits>/<incident>/<timer id, 20 digits>`: one
//!   [`TimerRecord`] per armed timer, so that a prefix scan meets them in due order.
//!
//! A `closed` event stops the machine for good ([`prepare_close`]): its timer records go in the
//! same commit.
//!
//! Every transition loads the record, lets the machine handle the input, and commits the new
//! record, the timer records that appeared or went away and the outbox events together, with a
//! compare-and-swap on the record: a timer and an acknowledgement racing for one incident are
//! serialised, and the loser runs again on fresh state.

use std::collections::BTreeMap;

use bus::subjects;
use domain::escalation::{
    EscalationEvent, EscalationMachine, EscalationReason, GradedInput, Handled, LeadChangeReason,
    Rung, TimerArm, TimerId, TimerPurpose,
};
use domain::event::{
    Acknowledged, Escalated, EventBody, Graded, IncidentEvent, JurisdictionRef, LeadChanged,
    SkipLevelReported,
};
use domain::region::Region;
use serde::{Deserialize, Serialize};
use store::{Commit, Store};

/// How many times a transition is retried after losing a compare-and-swap race.
const TRANSITION_ATTEMPTS_MAX: usize = 8;

/// Escalation's durable state of one incident's command and chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub incident_id: String,
    pub namespace: String,
    pub machine: EscalationMachine,
    pub lead_since_unix_ms: i64,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at_unix_ms: Option<i64>,
    pub escalation_count: u32,
    /// The commander named by `TakeCommand`; cleared when a regrade moves the lead.
    #[serde(default)]
    pub commander_name: Option<String>,
    /// Who closed the incident (`closed` event); the machine holds why and when.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// The incident's partition (the province where it happened), the one its events are
    /// published in. Empty in records stored before partitions existed: see [`Self::partition`].
    #[serde(default)]
    pub partition: String,
}

impl CommandRecord {
    /// The incident's partition: the stored one, or for an older record the province on its
    /// escalation ladder (the ladder starts at the county of the primary township), or the
    /// region root's when the ladder has no province.
    pub fn partition<'a>(&'a self, region: &'a Region) -> &'a str {
        if !self.partition.is_empty() {
            return &self.partition;
        }
        self.machine
            .ladder()
            .iter()
            .find(|rung| rung.level == domain::jurisdiction::Level::Province)
            .map_or(region.tree.root().code.as_str(), |rung| rung.code.as_str())
    }

    /// When the level asked must acknowledge by: the pending chain timer, if any.
    pub fn ack_due_at_unix_ms(&self) -> Option<i64> {
        self.machine
            .pending_timers()
            .filter(|arm| matches!(arm.purpose, TimerPurpose::ChainStep { .. }))
            .map(|arm| arm.due_at_unix_ms)
            .min()
    }
}

/// One armed timer, stored under [`timer_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub incident_id: String,
    pub timer_id: u64,
    pub due_at_unix_ms: i64,
}

/// `command/<ns>/<incident>`.
pub fn command_key(namespace: &str, incident_id: &str) -> String {
    format!("command/{namespace}/{incident_id}")
}

/// `command/<ns>/`: every incident's record.
pub fn command_prefix(namespace: &str) -> String {
    format!("command/{namespace}/")
}

/// `timer/<ns>/`: every armed timer, earliest due first.
pub fn timer_prefix(namespace: &str) -> String {
    format!("timer/{namespace}/")
}

/// `timer/<ns>/<due_at_unix_ms:020>/<incident>/<timer_id:020>`.
pub fn timer_key(namespace: &str, incident_id: &str, arm: &TimerArm) -> String {
    format!(
        "timer/{namespace}/{:020}/{incident_id}/{:020}",
        arm.due_at_unix_ms.max(0),
        arm.id.0
    )
}

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error(
        "incident {incident_id:?} has no escalation record in namespace {namespace} (not graded yet?)"
    )]
    NotFound {
        incident_id: String,
        namespace: String,
    },
    /// The input is not allowed in the incident's current state; the text says why.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("incident {incident_id:?}: still conflicting after {TRANSITION_ATTEMPTS_MAX} attempts")]
    Contended { incident_id: String },
}

/// The escalation ladder of a graded incident (shared with `musterctl replay`).
pub use domain::grading::ladder_for;

/// A new record for a freshly graded incident, its machine started at `now`.
pub fn new_record(
    region: &Region,
    policy: &domain::escalation::EscalationPolicy,
    namespace: &str,
    incident_id: &str,
    graded: &Graded,
    now_unix_ms: i64,
) -> Result<CommandRecord, String> {
    let sub_type = domain::class::sub_type(&graded.report.kind)
        .ok_or_else(|| format!("unknown kind {:?}", graded.report.kind))?
        .clone();
    let mut machine = EscalationMachine::new(policy.clone());
    machine
        .handle_graded(
            GradedInput {
                grade: graded.grade,
                sub_type,
                lead: Rung::new(graded.lead_code.clone(), graded.lead_level),
                ladder: ladder_for(region, graded),
            },
            now_unix_ms,
        )
        .map_err(|e| e.to_string())?;
    Ok(CommandRecord {
        incident_id: incident_id.to_string(),
        namespace: namespace.to_string(),
        machine,
        lead_since_unix_ms: now_unix_ms,
        acknowledged_by: None,
        acknowledged_at_unix_ms: None,
        escalation_count: 0,
        commander_name: None,
        closed_by: None,
        partition: region
            .tree
            .partition_of(&graded.report.township_code)
            .to_string(),
    })
}

/// Adds to `commit` what the machine produced since its last poll: the record itself, the timer
/// records armed (`timers_before` are the pending timers before the input) and removed, and the
/// events officers see, in the outbox. Updates the record's host fields from the events.
pub fn stage(
    commit: &mut Commit,
    region: &Region,
    timers_before: &BTreeMap<TimerId, TimerArm>,
    record: &mut CommandRecord,
    now_unix_ms: i64,
) -> Result<(), store::Error> {
    // Drain the machine's outboxes; the diff of pending timers is what the store must mirror.
    record.machine.poll_timers();
    record.machine.poll_cancelled_timers();
    let events = record.machine.poll_events();
    let namespace = record.namespace.clone();
    let incident_id = record.incident_id.clone();
    let partition = record.partition(region).to_string();
    let timers_after: BTreeMap<TimerId, TimerArm> = record
        .machine
        .pending_timers()
        .map(|arm| (arm.id, *arm))
        .collect();
    for (id, arm) in timers_before {
        if !timers_after.contains_key(id) {
            commit.delete(timer_key(&namespace, &incident_id, arm));
        }
    }
    for (id, arm) in &timers_after {
        if !timers_before.contains_key(id) {
            commit.put(
                timer_key(&namespace, &incident_id, arm),
                &TimerRecord {
                    incident_id: incident_id.clone(),
                    timer_id: id.0,
                    due_at_unix_ms: arm.due_at_unix_ms,
                },
            )?;
        }
    }
    for event in &events {
        match event {
            EscalationEvent::Acknowledged { by, at_unix_ms, .. } => {
                record.acknowledged_by = Some(by.clone());
                record.acknowledged_at_unix_ms = Some(*at_unix_ms);
            }
            EscalationEvent::Escalated { .. } => record.escalation_count += 1,
            EscalationEvent::LeadChanged {
                at_unix_ms, reason, ..
            } => {
                record.lead_since_unix_ms = *at_unix_ms;
                if *reason == LeadChangeReason::Regrade {
                    // The new lead names its own commander.
                    record.commander_name = None;
                }
            }
            _ => {}
        }
        if let Some(body) = officer_event(region, event) {
            let out = IncidentEvent {
                event_id: String::new(),
                incident_id: incident_id.clone(),
                namespace: namespace.clone(),
                at_unix_ms: now_unix_ms,
                source_service: crate::SERVICE_NAME.into(),
                body,
            };
            let subject = subjects::incident_event(
                &namespace,
                &partition,
                &incident_id,
                out.body.event_type(),
            )
            .map_err(|e| store::Error::Corrupt {
                key: command_key(&namespace, &incident_id),
                problem: e.to_string(),
            })?;
            commit.event(subject, muster_proto::convert::encode_event(&out));
        }
    }
    commit.put(command_key(&namespace, &incident_id), record)?;
    Ok(())
}

/// The bus event officers see for a machine event, if any. Obligations, notifications and
/// regrades stay inside escalation for now (`ListDeadlines` shows obligations).
fn officer_event(region: &Region, event: &EscalationEvent) -> Option<EventBody> {
    match event {
        EscalationEvent::Acknowledged { by, rung, .. } => {
            Some(EventBody::Acknowledged(Acknowledged {
                by: by.clone(),
                jurisdiction: jurisdiction_ref(region, rung),
            }))
        }
        EscalationEvent::Escalated {
            from, to, reason, ..
        } => {
            let manual = matches!(reason, EscalationReason::Manual(_));
            let reason = reason.describe();
            Some(EventBody::Escalated(Escalated {
                from: jurisdiction_ref(region, from),
                to: jurisdiction_ref(region, to),
                reason,
                manual,
            }))
        }
        EscalationEvent::LeadChanged {
            from, to, reason, ..
        } => Some(EventBody::LeadChanged(LeadChanged {
            from: jurisdiction_ref(region, from),
            to: jurisdiction_ref(region, to),
            reason: match reason {
                LeadChangeReason::Regrade => "regrade",
                LeadChangeReason::TakeCommand => "take_command",
            }
            .to_string(),
        })),
        EscalationEvent::SkipLevelReported {
            obligation_id,
            officer,
            from,
            to,
            skipped,
            reason,
            ..
        } => Some(EventBody::SkipLevelReported(SkipLevelReported {
            officer: officer.clone(),
            from: jurisdiction_ref(region, from),
            to: jurisdiction_ref(region, to),
            skipped: skipped
                .iter()
                .map(|rung| jurisdiction_ref(region, rung))
                .collect(),
            reason: reason.clone(),
            obligation_id: obligation_id.0,
        })),
        _ => None,
    }
}

/// A rung with its name from the region (the code when the region does not know it).
pub fn jurisdiction_ref(region: &Region, rung: &Rung) -> JurisdictionRef {
    JurisdictionRef {
        code: rung.code.clone(),
        name: region
            .tree
            .get(&rung.code)
            .map_or_else(|| rung.code.clone(), |j| j.name.clone()),
        level: rung.level,
    }
}

/// One input run against one incident's machine, not yet committed: the commit holds the
/// compare-and-swap on the record, the record, its timers and its events.
pub struct Prepared<T> {
    pub value: T,
    pub record: CommandRecord,
    pub commit: Commit,
}

/// Runs one input against the stored machine and stages its effect in a commit the caller makes
/// (a bus handler returns it, so that the processed message id joins the same transaction).
/// A compare-and-swap conflict on commit means: prepare again on fresh state.
pub fn prepare_transition<T>(
    store: &Store,
    region: &Region,
    namespace: &str,
    incident_id: &str,
    now_unix_ms: i64,
    input: impl FnOnce(&mut CommandRecord, i64) -> Result<T, String>,
) -> Result<Prepared<T>, TransitionError> {
    let key = command_key(namespace, incident_id);
    let Some(raw) = store.get_raw(&key)? else {
        return Err(TransitionError::NotFound {
            incident_id: incident_id.to_string(),
            namespace: namespace.to_string(),
        });
    };
    let mut record: CommandRecord = store::decode_value(&key, &raw)?;
    let timers_before: BTreeMap<TimerId, TimerArm> = record
        .machine
        .pending_timers()
        .map(|arm| (arm.id, *arm))
        .collect();
    let value = input(&mut record, now_unix_ms).map_err(TransitionError::Refused)?;
    let mut commit = Commit::new();
    commit.expect_raw(key, Some(raw));
    stage(
        &mut commit,
        region,
        &timers_before,
        &mut record,
        now_unix_ms,
    )?;
    Ok(Prepared {
        value,
        record,
        commit,
    })
}

/// The incident is closed (`closed` by `by`, for `reason`): its machine cancels every pending
/// timer and waives the reports not yet made, staged like [`prepare_transition`] (the timer
/// records are deleted in the same commit). `Ok(None)` when there is nothing to do: escalation
/// never graded the incident, or its machine is already closed (a redelivered or re-published
/// `closed`).
pub fn prepare_close(
    store: &Store,
    region: &Region,
    namespace: &str,
    incident_id: &str,
    by: &str,
    reason: &str,
    now_unix_ms: i64,
) -> Result<Option<Prepared<()>>, TransitionError> {
    let prepared = prepare_transition(
        store,
        region,
        namespace,
        incident_id,
        now_unix_ms,
        |record, now| match record.machine.handle_close(reason, now) {
            Handled::Applied => {
                record.closed_by = Some(by.to_string());
                Ok(true)
            }
            Handled::Ignored(_) => Ok(false),
        },
    );
    match prepared {
        Ok(Prepared {
            value: true,
            record,
            commit,
        }) => Ok(Some(Prepared {
            value: (),
            record,
            commit,
        })),
        Ok(_) | Err(TransitionError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Runs one input against one incident's machine and commits its effect atomically.
///
/// `input` gets the record and `now`; it returns `Err(text)` to refuse (nothing is written) or a
/// value to hand back. `also` adds writes to the same commit (the fired timer's removal).
pub fn transition<T>(
    store: &Store,
    region: &Region,
    namespace: &str,
    incident_id: &str,
    also: impl Fn(&mut Commit),
    mut input: impl FnMut(&mut CommandRecord, i64) -> Result<T, String>,
) -> Result<(T, CommandRecord), TransitionError> {
    for _attempt in 0..TRANSITION_ATTEMPTS_MAX {
        let now = lifecycle::unix_ms_now();
        let Prepared {
            value,
            record,
            mut commit,
        } = prepare_transition(store, region, namespace, incident_id, now, &mut input)?;
        also(&mut commit);
        match store.commit(&commit) {
            Ok(_) => return Ok((value, record)),
            Err(store::Error::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(TransitionError::Contended {
        incident_id: incident_id.to_string(),
    })
}
