//! `muster rebuild escalation`: gradings and command machines re-run from the stream.
//!
//! The inputs of the grader consumer (`reported`, `updated`, `closed`) go through the grader's
//! own code with its clock set to when they were handled: the time of the `graded` (or
//! `downgrade_proposed`) they produced, found further down the stream, else the input's own time.
//! A `reported` whose `graded` is not on the stream is left to the service (refused, or not
//! handled yet). Officers' inputs are re-run on the machine at their events' times:
//! `acknowledged` (handle_acknowledge), a manual `escalated` (handle_escalate), `lead_changed`
//! by take-over (handle_take_command), `skip_level_reported`, and the `graded` a confirmed
//! downgrade published (handle_confirm_downgrade). Before each, the incident's timers due by then
//! fire, at their due time, except the one whose firing is the `escalated` being folded, which
//! fires at that event's time. Timers still pending at the end keep their records, so the timer
//! task fires them after the restart.
//!
//! The stream is held in memory (the grader's inputs need the time of their outputs further on).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bus::replay::{
    ConsumerFloors, Rebuild, RebuildReport, ReplayError, StreamEvent, replay_handler,
};
use bus::subjects;
use domain::escalation::{EscalationEvent, EscalationPolicy, Handled};
use domain::event::{EventBody, IncidentEvent};
use domain::region::Region;
use store::Store;

use crate::command::{self, CommandRecord, command_key};
use crate::driver::{Grader, GradingRecord, grading_key, with_lead};

/// Escalation's durable consumers, by purpose: the inputs they took before the loss are re-run
/// or marked processed, the rest are left to them.
pub const CONSUMERS: &[&str] = &["grader", "notify", "notifier"];

/// What the stream cannot give back to escalation; printed by `muster rebuild escalation`.
pub const NOT_REBUILT: &[&str] = &[
    "reports submitted against obligations (SubmitReport publishes no event): the rebuilt \
     obligations are open or late; submit them again, or an obligation whose deadline passes \
     after the rebuild escalates as overdue",
    "the commander named by TakeCommand (the take-over itself is rebuilt)",
    "notification delivery records (ListNotifications shows deliveries after the rebuild; a \
     requested notification without a delivery on the stream is delivered after the restart)",
    "timers that fired without publishing anything (a chain's notify step) are re-fired at their \
     due time: times that follow from them may differ by the timer task's poll delay",
    "the audit chain: a new chain starts with the rebuilt store",
];

pub struct EscalationRebuild {
    store: Store,
    region: Arc<Region>,
    policy: Arc<EscalationPolicy>,
    namespace: String,
    /// The partitions the instance serves; empty: every partition.
    partitions: Vec<String>,
    floors: ConsumerFloors,
    events: Vec<StreamEvent>,
}

impl EscalationRebuild {
    pub fn new(
        store: Store,
        region: Arc<Region>,
        policy: Arc<EscalationPolicy>,
        namespace: &str,
        floors: ConsumerFloors,
    ) -> EscalationRebuild {
        EscalationRebuild {
            store,
            region,
            policy,
            namespace: namespace.to_string(),
            partitions: Vec::new(),
            floors,
            events: Vec::new(),
        }
    }

    /// Rebuilds the store of an instance serving only `partitions` (`--partition`): the events
    /// of other partitions' subjects are left out, as its consumers never saw them. Subjects
    /// from before partitions existed name none and are left out too.
    pub fn for_partitions(mut self, partitions: Vec<String>) -> EscalationRebuild {
        self.partitions = partitions;
        self
    }

    fn serves(&self, partition: Option<&str>) -> bool {
        self.partitions.is_empty()
            || partition.is_some_and(|p| self.partitions.iter().any(|mine| mine == p))
    }
}

impl Rebuild for EscalationRebuild {
    fn apply(&mut self, event: &StreamEvent) -> Result<(), ReplayError> {
        let subject = &event.delivery.subject;
        let ours = subjects::parse_incident_event(subject)
            .map(|parsed| parsed.namespace == self.namespace && self.serves(parsed.partition))
            .or_else(|| {
                subjects::parse_notification_event(subject).map(|(namespace, partition, _, _)| {
                    namespace == self.namespace && self.serves(partition)
                })
            })
            .unwrap_or(false);
        if ours {
            self.events.push(event.clone());
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RebuildReport, ReplayError> {
        let mut replay = Replay {
            store: self.store.clone(),
            region: self.region.clone(),
            namespace: self.namespace.clone(),
            clock: Arc::new(AtomicI64::new(0)),
            floors: self.floors.clone(),
            grader: None,
            processed: Vec::new(),
            timers_fired: 0,
            officer_inputs: 0,
            grader_inputs: 0,
            left_to_service: 0,
        };
        replay.grader = Some(
            Grader::new(self.store.clone(), self.region.clone(), self.policy.clone())
                .with_clock(replay.clock.clone()),
        );
        let decoded: Vec<Option<IncidentEvent>> = self
            .events
            .iter()
            .map(|event| {
                subjects::parse_incident_event(&event.delivery.subject).and_then(|_| {
                    muster_proto::convert::decode_event(
                        &event.delivery.payload,
                        &event.delivery.msg_id,
                    )
                    .ok()
                })
            })
            .collect();
        // Notifications delivered (their `requested` is done) by id.
        let delivered: HashSet<&str> = self
            .events
            .iter()
            .filter_map(|e| subjects::parse_notification_event(&e.delivery.subject))
            .filter(|(_, _, _, kind)| *kind == subjects::NOTIFICATION_DELIVERED)
            .map(|(_, _, id, _)| id)
            .collect();
        for (index, event) in self.events.iter().enumerate() {
            if let Some((_, _, id, kind)) =
                subjects::parse_notification_event(&event.delivery.subject)
            {
                if kind == subjects::NOTIFICATION_REQUESTED && delivered.contains(id) {
                    replay.processed.push(event.delivery.msg_id.clone());
                }
                continue;
            }
            let Some(incident) = &decoded[index] else {
                return Err(ReplayError::bad(event, "not a decodable incident event"));
            };
            replay.fold(
                event,
                incident,
                &self.events[index + 1..],
                &decoded[index + 1..],
            )?;
        }
        let processed = self
            .store
            .mark_processed(replay.processed.iter().map(String::as_str))?;
        let gradings = self
            .store
            .scan_prefix::<GradingRecord>(&grading_key(&self.namespace, ""))?
            .len();
        let commands: Vec<(String, CommandRecord)> = self
            .store
            .scan_prefix(&command::command_prefix(&self.namespace))?;
        let acknowledged = commands
            .iter()
            .filter(|(_, r)| r.machine.is_acknowledged())
            .count();
        let closed = commands
            .iter()
            .filter(|(_, r)| r.machine.is_closed())
            .count();
        let timers: usize = commands
            .iter()
            .map(|(_, r)| r.machine.pending_timers().count())
            .sum();
        Ok(RebuildReport {
            counts: vec![
                ("gradings".into(), gradings as u64),
                ("command machines".into(), commands.len() as u64),
                ("of them acknowledged".into(), acknowledged as u64),
                ("of them closed".into(), closed as u64),
                ("timers pending".into(), timers as u64),
                ("grader inputs re-run".into(), replay.grader_inputs),
                ("officer inputs re-run".into(), replay.officer_inputs),
                ("timers fired".into(), replay.timers_fired),
                ("reports left to the service".into(), replay.left_to_service),
            ],
            processed_ids: processed as u64 + replay.grader_inputs,
            skipped: Vec::new(),
            not_rebuilt: NOT_REBUILT.iter().map(|s| s.to_string()).collect(),
        })
    }
}

struct Replay {
    store: Store,
    region: Arc<Region>,
    namespace: String,
    clock: Arc<AtomicI64>,
    floors: ConsumerFloors,
    grader: Option<Grader>,
    processed: Vec<String>,
    timers_fired: u64,
    officer_inputs: u64,
    grader_inputs: u64,
    left_to_service: u64,
}

/// Whether `event` is escalation's own output.
fn from_escalation(event: &IncidentEvent) -> bool {
    event.source_service == crate::SERVICE_NAME
}

impl Replay {
    fn fold(
        &mut self,
        event: &StreamEvent,
        incident: &IncidentEvent,
        later: &[StreamEvent],
        later_decoded: &[Option<IncidentEvent>],
    ) -> Result<(), ReplayError> {
        let id = incident.incident_id.as_str();
        // When escalation handled a grader input: the time of the first output of the incident
        // that follows it, before the incident's next grader input.
        let handled_at = |kinds: &[&str]| -> Option<i64> {
            for next in later_decoded.iter().flatten() {
                if next.incident_id != id {
                    continue;
                }
                if matches!(
                    next.body,
                    EventBody::Reported(_) | EventBody::Updated(_) | EventBody::Closed(_)
                ) {
                    return None;
                }
                if from_escalation(next) && kinds.contains(&next.body.event_type()) {
                    return Some(next.at_unix_ms);
                }
            }
            None
        };
        let _ = later;
        let grader_input = matches!(
            incident.body,
            EventBody::Reported(_) | EventBody::Updated(_) | EventBody::Closed(_)
        );
        if grader_input && !self.floors.handled("grader", event.stream_sequence) {
            // Not handled before the loss: the grader takes it after the restart.
            self.left_to_service += 1;
            return Ok(());
        }
        let notify_input = from_escalation(incident)
            && matches!(
                incident.body,
                EventBody::Graded(_) | EventBody::Escalated(_) | EventBody::LeadChanged(_)
            );
        if notify_input && self.floors.handled("notify", event.stream_sequence) {
            // The notify consumer turned it into notifications already.
            self.processed.push(event.delivery.msg_id.clone());
        }
        match &incident.body {
            EventBody::Reported(_) => {
                let Some(at) = handled_at(&[subjects::GRADED]) else {
                    // Refused, or not handled yet: the service takes it after the restart.
                    self.left_to_service += 1;
                    return Ok(());
                };
                self.run_grader(event, at)?;
            }
            EventBody::Updated(_) => {
                let at = handled_at(&[subjects::GRADED, "downgrade_proposed"])
                    .unwrap_or(incident.at_unix_ms);
                self.fire_due(id, at, false)?;
                self.run_grader(event, at)?;
            }
            EventBody::Closed(_) => {
                self.fire_due(id, incident.at_unix_ms, false)?;
                self.run_grader(event, incident.at_unix_ms)?;
            }
            _ if !from_escalation(incident) => {}
            EventBody::Graded(graded) => {
                let at = incident.at_unix_ms;
                let key = grading_key(&self.namespace, id);
                let Some(mut grading) = self.store.get::<GradingRecord>(&key)? else {
                    return Err(ReplayError::bad(
                        event,
                        "graded for an incident never graded",
                    ));
                };
                if grading.graded_at_unix_ms == at && grading.graded == *graded {
                    // Published by the grader input re-run above.
                    return Ok(());
                }
                // A downgrade an officer confirmed; or, with none pending, the regrade of an
                // `updated` left to the service (handled, not acknowledged before the loss).
                self.fire_due(id, at, false)?;
                self.officer_inputs += 1;
                let grade = graded.grade;
                let record = self.step(event, id, at, |record, now| {
                    let machine = &mut record.machine;
                    if machine.pending_downgrade().is_some() {
                        match machine.handle_confirm_downgrade("", now) {
                            Handled::Applied => return Ok(()),
                            Handled::Ignored(why) => {
                                return Err(format!("no downgrade to confirm: {why:?}"));
                            }
                        }
                    }
                    if let Some(grade) = grade {
                        machine.handle_regrade(grade, now);
                    }
                    Ok(())
                })?;
                grading.graded = graded.clone();
                grading.graded_at_unix_ms =
                    record.lead_since_unix_ms.max(grading.graded_at_unix_ms);
                grading.proposed = None;
                let mut commit = store::Commit::new();
                commit.put(key, &grading)?;
                self.store.commit(&commit)?;
            }
            EventBody::Acknowledged(acknowledged) => {
                let at = incident.at_unix_ms;
                self.fire_due(id, at, false)?;
                self.officer_inputs += 1;
                self.step(event, id, at, |record, now| {
                    match record.machine.handle_acknowledge(&acknowledged.by, now) {
                        Handled::Applied => Ok(()),
                        Handled::Ignored(why) => Err(format!("acknowledgement refused: {why:?}")),
                    }
                })?;
            }
            EventBody::Escalated(escalated) => {
                let at = incident.at_unix_ms;
                if escalated.manual {
                    self.fire_due(id, at, false)?;
                    self.officer_inputs += 1;
                    self.step(event, id, at, |record, now| {
                        match record.machine.handle_escalate(&escalated.reason, now) {
                            Handled::Applied => Ok(()),
                            Handled::Ignored(why) => Err(format!("escalation refused: {why:?}")),
                        }
                    })?;
                } else if !self.fire_due(id, at, true)? {
                    return Err(ReplayError::bad(
                        event,
                        "an escalation by deadline, but no timer of the rebuilt machine was due",
                    ));
                }
            }
            EventBody::LeadChanged(change) => {
                if change.reason != "take_command" {
                    // A regrade's: re-run with the `updated` or confirmation that caused it.
                    return Ok(());
                }
                let at = incident.at_unix_ms;
                self.fire_due(id, at, false)?;
                self.officer_inputs += 1;
                let record = self.step(event, id, at, |record, now| {
                    match record.machine.handle_take_command(&change.to.code, now) {
                        Ok(Handled::Applied) => Ok(()),
                        Ok(Handled::Ignored(why)) => Err(format!("take-over refused: {why:?}")),
                        Err(error) => Err(error.to_string()),
                    }
                })?;
                // The grading's lead follows a take-over.
                let key = grading_key(&self.namespace, id);
                if let (Some(mut grading), Some(lead)) = (
                    self.store.get::<GradingRecord>(&key)?,
                    record.machine.lead(),
                ) {
                    grading.graded = with_lead(&self.region, grading.graded.clone(), lead);
                    let mut commit = store::Commit::new();
                    commit.put(key, &grading)?;
                    self.store.commit(&commit)?;
                }
            }
            EventBody::SkipLevelReported(skip) => {
                let at = incident.at_unix_ms;
                self.fire_due(id, at, false)?;
                self.officer_inputs += 1;
                self.step(event, id, at, |record, now| {
                    match record.machine.handle_skip_level_report(
                        &skip.from.code,
                        &skip.to.code,
                        &skip.officer,
                        &skip.reason,
                        now,
                    ) {
                        Ok(Handled::Applied) => Ok(()),
                        Ok(Handled::Ignored(why)) => {
                            Err(format!("skip-level report refused: {why:?}"))
                        }
                        Err(error) => Err(error.to_string()),
                    }
                })?;
            }
            // `downgrade_proposed` comes from the `updated` re-run above.
            _ => {}
        }
        Ok(())
    }

    /// The grader's own handler on a grader input, its clock at `at`.
    fn run_grader(&mut self, event: &StreamEvent, at: i64) -> Result<(), ReplayError> {
        self.clock.store(at, Ordering::SeqCst);
        let grader = self.grader.as_mut().expect("set in finish");
        replay_handler(&self.store, grader, event)?;
        self.grader_inputs += 1;
        Ok(())
    }

    /// One machine input at `at`, committed with its timer records (its events dropped).
    fn step(
        &mut self,
        event: &StreamEvent,
        incident_id: &str,
        at: i64,
        input: impl FnOnce(&mut CommandRecord, i64) -> Result<(), String>,
    ) -> Result<CommandRecord, ReplayError> {
        let prepared = command::prepare_transition(
            &self.store,
            &self.region,
            &self.namespace,
            incident_id,
            at,
            input,
        )
        .map_err(|error| match error {
            command::TransitionError::Store(error) => ReplayError::Store(error),
            other => ReplayError::bad(event, other.to_string()),
        })?;
        let mut commit = prepared.commit;
        commit.drop_events();
        self.store.commit(&commit)?;
        Ok(prepared.record)
    }

    /// Fires the incident's timers due by `at`, earliest first, each at its due time. With
    /// `until_escalated`, stops after the one whose firing escalates, fired at `at` (that
    /// escalation is the event being folded); returns whether there was one.
    fn fire_due(
        &mut self,
        incident_id: &str,
        at: i64,
        until_escalated: bool,
    ) -> Result<bool, ReplayError> {
        let key = command_key(&self.namespace, incident_id);
        loop {
            let Some(record) = self.store.get::<CommandRecord>(&key)? else {
                return Ok(false);
            };
            let Some(arm) = record
                .machine
                .pending_timers()
                .filter(|arm| arm.due_at_unix_ms <= at)
                .min_by_key(|arm| (arm.due_at_unix_ms, arm.id))
                .copied()
            else {
                return Ok(false);
            };
            let mut trial = record.machine.clone();
            trial.handle_timer(arm.id, arm.due_at_unix_ms);
            let escalates = trial
                .poll_events()
                .iter()
                .any(|e| matches!(e, EscalationEvent::Escalated { .. }));
            let fire_at = if until_escalated && escalates {
                at
            } else {
                arm.due_at_unix_ms
            };
            let prepared = command::prepare_transition(
                &self.store,
                &self.region,
                &self.namespace,
                incident_id,
                fire_at,
                |record, now| {
                    record.machine.handle_timer(arm.id, now);
                    Ok(())
                },
            )
            .map_err(|error| match error {
                command::TransitionError::Store(error) => ReplayError::Store(error),
                other => ReplayError::BadEvent {
                    stream_sequence: 0,
                    subject: key.clone(),
                    problem: other.to_string(),
                },
            })?;
            let mut commit = prepared.commit;
            commit.drop_events();
            self.store.commit(&commit)?;
            self.timers_fired += 1;
            if until_escalated && escalates {
                return Ok(true);
            }
        }
    }
}
