//! The escalation machine of one incident: acknowledgement chain, lead, grade and obligations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::class::SubType;
use crate::escalation::policy::{EscalationPolicy, Hop, ReportTier, Step};
use crate::grade::Grade;
use crate::jurisdiction::{Level, lead_level_for};

const MINUTES_PER_DAY: i64 = 24 * 60;

/// One jurisdiction on the ladder of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub code: String,
    pub level: Level,
}

impl Rung {
    pub fn new(code: impl Into<String>, level: Level) -> Rung {
        Rung {
            code: code.into(),
            level,
        }
    }
}

/// What `handle_graded` needs to know about an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradedInput {
    /// `None` for social-safety events, which the law does not grade.
    pub grade: Option<Grade>,
    pub sub_type: SubType,
    /// The lead jurisdiction; must be on `ladder`.
    pub lead: Rung,
    /// The incident's jurisdictions, lowest first (normally the county where it happened, then
    /// its ancestors up to national). Levels must strictly rise. Reports are addressed to these.
    pub ladder: Vec<Rung>,
}

/// A timer handle. Unique within one machine and never reused, so a stale or duplicate firing
/// can always be recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerId(pub u64);

/// What a timer is for. A chain timer carries the chain generation it was armed in: an ack,
/// escalation, regrade or takeover starts a new generation, so older chain timers are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerPurpose {
    ChainStep {
        chain_generation: u64,
        /// The step the chain resumes at when the timer fires.
        resume_at_step: usize,
    },
    ObligationDue {
        obligation_id: ObligationId,
    },
}

/// A timer the host must arm: call `handle_timer(id, now)` at or after `due_at_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerArm {
    pub id: TimerId,
    pub due_at_unix_ms: i64,
    pub purpose: TimerPurpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObligationId(pub u32);

/// 初报 / 续报 / 终报.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    First,
    FollowUp,
    Final,
    /// 越级上报: a lower level reported past its parent; recorded met when it is made.
    SkipLevel,
}

impl ReportKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportKind::First => "first",
            ReportKind::FollowUp => "follow_up",
            ReportKind::Final => "final",
            ReportKind::SkipLevel => "skip_level",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObligationStatus {
    Open,
    /// Due time passed without a report; may still be submitted (then `Met` with late_by > 0).
    Late,
    Met {
        submitted_at_unix_ms: i64,
        late_by_ms: i64,
    },
    /// Not required any more: the incident was closed before the report was made (an obligation
    /// that was overdue by then keeps `was_late`).
    Waived {
        waived_at_unix_ms: i64,
    },
}

/// One report that must be made: due at, sent at, late by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligation {
    pub id: ObligationId,
    pub rule_id: String,
    pub kind: ReportKind,
    pub from: ReportTier,
    pub to: ReportTier,
    /// The receiving jurisdiction, when the ladder names one at that level.
    pub to_code: Option<String>,
    pub created_at_unix_ms: i64,
    pub due_at_unix_ms: i64,
    pub status: ObligationStatus,
    /// Whether the obligation was ever overdue (stays true after a late submission).
    pub was_late: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EscalationReason {
    /// The level asked to acknowledge let its deadline pass.
    AckTimeout,
    /// An officer escalated by hand, with their reason.
    Manual(String),
    /// A report obligation passed its due time unreported (once per obligation).
    ReportOverdue {
        obligation_id: ObligationId,
        kind: ReportKind,
        from: ReportTier,
        to: ReportTier,
        to_code: Option<String>,
    },
}

impl EscalationReason {
    /// The reason in words, for the `escalated` event.
    pub fn describe(&self) -> String {
        match self {
            EscalationReason::AckTimeout => "acknowledgement deadline passed".to_string(),
            EscalationReason::Manual(text) => text.clone(),
            EscalationReason::ReportOverdue {
                obligation_id,
                kind,
                from,
                to,
                to_code,
            } => format!(
                "report {} (obligation {}) from {} to {}{} overdue",
                kind.as_str(),
                obligation_id.0,
                from.as_str(),
                to.as_str(),
                to_code
                    .as_ref()
                    .map_or(String::new(), |code| format!(" {code}"))
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadChangeReason {
    Regrade,
    TakeCommand,
}

/// Why and when an incident's machine stopped for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    pub reason: String,
    pub at_unix_ms: i64,
}

/// Domain events, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EscalationEvent {
    Graded {
        grade: Option<Grade>,
        lead: Rung,
        at_unix_ms: i64,
    },
    /// Notify the duty roster of `rung` (the host turns this into `notification.requested`).
    Notified {
        rung: Rung,
        step_index: usize,
        chain_generation: u64,
        at_unix_ms: i64,
    },
    Escalated {
        from: Rung,
        to: Rung,
        reason: EscalationReason,
        chain_generation: u64,
        at_unix_ms: i64,
    },
    /// An `escalate` step found no higher rung; the chain goes on at the top.
    EscalationAtTop {
        rung: Rung,
        chain_generation: u64,
        at_unix_ms: i64,
    },
    /// The chain ran out of steps without an acknowledgement.
    ChainExhausted {
        chain_generation: u64,
        at_unix_ms: i64,
    },
    Acknowledged {
        by: String,
        rung: Rung,
        chain_generation: u64,
        at_unix_ms: i64,
    },
    LeadChanged {
        from: Rung,
        to: Rung,
        reason: LeadChangeReason,
        at_unix_ms: i64,
    },
    Regraded {
        from: Option<Grade>,
        to: Option<Grade>,
        at_unix_ms: i64,
    },
    DowngradeProposed {
        from: Option<Grade>,
        to: Grade,
        at_unix_ms: i64,
    },
    /// A pending downgrade proposal was dropped because an upgrade arrived.
    DowngradeWithdrawn { proposed: Grade, at_unix_ms: i64 },
    ObligationCreated {
        id: ObligationId,
        rule_id: String,
        kind: ReportKind,
        from: ReportTier,
        to: ReportTier,
        to_code: Option<String>,
        due_at_unix_ms: i64,
    },
    ObligationMet {
        id: ObligationId,
        submitted_at_unix_ms: i64,
        late_by_ms: i64,
    },
    /// The report was not made by its due time; the receiving tier should be told.
    ObligationLate {
        id: ObligationId,
        to: ReportTier,
        to_code: Option<String>,
        due_at_unix_ms: i64,
        noticed_at_unix_ms: i64,
    },
    /// The incident was closed before this report was made, or (a follow-up) the final report
    /// was made: it is not owed any more.
    ObligationWaived { id: ObligationId, at_unix_ms: i64 },
    /// 越级上报: `from` reported straight to `to`, past the levels in `skipped` (lowest first);
    /// recorded as the met obligation `obligation_id`.
    SkipLevelReported {
        obligation_id: ObligationId,
        officer: String,
        from: Rung,
        to: Rung,
        skipped: Vec<Rung>,
        reason: String,
        at_unix_ms: i64,
    },
    /// The incident is over: every timer is cancelled and nothing moves the machine again.
    Closed { reason: String, at_unix_ms: i64 },
}

/// Why an input changed nothing. Inputs are never errors: duplicates and races are normal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ignored {
    NotGraded,
    AlreadyGraded,
    AlreadyAcknowledged,
    /// Unknown, cancelled or already fired timer: stale or duplicate.
    StaleTimer,
    UnknownObligation,
    AlreadySubmitted,
    SameGrade,
    NoPendingDowngrade,
    AlreadyAtTop,
    OutsideRereportWindow,
    /// The incident is closed ([`EscalationMachine::handle_close`]): nothing moves it any more.
    Closed,
}

/// The outcome of one `handle_*` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handled {
    Applied,
    Ignored(Ignored),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Chain {
    generation: u64,
    /// Index into the ladder of the level currently asked to acknowledge.
    rung_index: usize,
    loops_done: u32,
    acknowledged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Incident {
    grade: Option<Grade>,
    sub_type: SubType,
    ladder: Vec<Rung>,
    /// Index into the ladder; there is always exactly one lead.
    lead_index: usize,
    /// The lead named at grading: a downgrade never moves the lead below it.
    floor_index: usize,
    graded_at_unix_ms: i64,
    pending_downgrade: Option<Grade>,
    chain: Chain,
    /// When the current round of scheduled follow-up reports (续报 at fixed local hours) is due;
    /// `None` when the rule schedules none or the schedule ended (final report made or due).
    #[serde(default)]
    follow_up_due: Option<i64>,
}

/// The escalation machine of ONE incident (the host keeps one per incident id and persists it;
/// it is `Serialize`/`Deserialize`, timers included, so it survives restarts).
///
/// Sans-IO: inputs through `handle_*`, each with `now_unix_ms`; outputs through
/// [`poll_timers`](Self::poll_timers), [`poll_cancelled_timers`](Self::poll_cancelled_timers) and
/// [`poll_events`](Self::poll_events). No clock is read.
///
/// Semantics, in short:
/// - The chain runs the policy's steps for the level currently asked to acknowledge (at first
///   the lead). `escalate` moves that level up; it does not move the lead. The lead changes only
///   by regrade (to the level the grade requires, [`lead_level_for`]) or by `TakeCommand`.
/// - An acknowledgement is one transition: it stops the chain, starts a new chain generation and
///   cancels every pending chain timer. Timers armed in an older generation, cancelled timers and
///   timers that already fired produce nothing.
/// - Obligations are created at grading from the policy's hops; each is met (with late_by) or
///   marked late. Any input whose `now` is past a due time marks the open obligation late, so
///   lateness does not depend on a timer being delivered.
/// - Closing is final: it cancels every pending timer, waives the obligations not yet met, and
///   every later input is `Ignored(Closed)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationMachine {
    policy: EscalationPolicy,
    incident: Option<Incident>,
    obligations: BTreeMap<ObligationId, Obligation>,
    next_obligation_id: u32,
    next_timer_id: u64,
    pending_timers: BTreeMap<TimerId, TimerArm>,
    out_timers: Vec<TimerArm>,
    out_cancelled: Vec<TimerId>,
    out_events: Vec<EscalationEvent>,
    /// Set once by [`handle_close`](Self::handle_close); machines stored before closing existed
    /// read as open.
    #[serde(default)]
    closed: Option<Closure>,
}

impl EscalationMachine {
    pub fn new(policy: EscalationPolicy) -> EscalationMachine {
        EscalationMachine {
            policy,
            incident: None,
            obligations: BTreeMap::new(),
            next_obligation_id: 1,
            next_timer_id: 1,
            pending_timers: BTreeMap::new(),
            out_timers: Vec::new(),
            out_cancelled: Vec::new(),
            out_events: Vec::new(),
            closed: None,
        }
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// The incident was graded for the first time: start the chain and create obligations.
    pub fn handle_graded(
        &mut self,
        input: GradedInput,
        now_unix_ms: i64,
    ) -> Result<Handled, Error> {
        if self.closed.is_some() {
            return Ok(Handled::Ignored(Ignored::Closed));
        }
        if self.incident.is_some() {
            return Ok(Handled::Ignored(Ignored::AlreadyGraded));
        }
        if input.ladder.is_empty() {
            return Err(Error::InvalidJurisdiction {
                code: input.lead.code,
                problem: "the escalation ladder is empty".into(),
            });
        }
        for pair in input.ladder.windows(2) {
            // Level compares National smallest: going up, levels must strictly decrease.
            if pair[1].level >= pair[0].level {
                return Err(Error::InvalidJurisdiction {
                    code: pair[1].code.clone(),
                    problem: format!(
                        "the escalation ladder must rise: {} ({}) follows {} ({})",
                        pair[1].code,
                        pair[1].level.as_str(),
                        pair[0].code,
                        pair[0].level.as_str()
                    ),
                });
            }
        }
        let Some(lead_index) = input.ladder.iter().position(|rung| *rung == input.lead) else {
            return Err(Error::UnknownJurisdiction {
                code: input.lead.code,
            });
        };
        self.incident = Some(Incident {
            grade: input.grade,
            sub_type: input.sub_type,
            ladder: input.ladder,
            lead_index,
            floor_index: lead_index,
            graded_at_unix_ms: now_unix_ms,
            pending_downgrade: None,
            chain: Chain {
                generation: 1,
                rung_index: lead_index,
                loops_done: 0,
                acknowledged: false,
            },
            follow_up_due: None,
        });
        self.out_events.push(EscalationEvent::Graded {
            grade: input.grade,
            lead: input.lead,
            at_unix_ms: now_unix_ms,
        });
        self.create_reports(ReportKind::First, now_unix_ms, false);
        if let Some(days) = self.rule().and_then(|rule| rule.final_report_within_days) {
            let due = now_unix_ms + i64::from(days) * MINUTES_PER_DAY * self.policy.minute_ms();
            for hop in self.hops() {
                self.create_obligation(ReportKind::Final, hop, now_unix_ms, due);
            }
        }
        // The first round of scheduled follow-ups: the first fixed hour after every first report
        // is due.
        let after = self
            .obligations
            .values()
            .filter(|o| o.kind == ReportKind::First)
            .map(|o| o.due_at_unix_ms)
            .max()
            .unwrap_or(now_unix_ms);
        self.schedule_follow_ups(after, now_unix_ms);
        self.run_chain(0, now_unix_ms);
        Ok(Handled::Applied)
    }

    /// Someone acknowledged: stop the chain and cancel its timers, in one transition.
    pub fn handle_acknowledge(&mut self, by: &str, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_mut() else {
            return Handled::Ignored(Ignored::NotGraded);
        };
        if incident.chain.acknowledged {
            return Handled::Ignored(Ignored::AlreadyAcknowledged);
        }
        let generation = incident.chain.generation;
        let rung = incident.ladder[incident.chain.rung_index].clone();
        self.stop_chain(true);
        self.out_events.push(EscalationEvent::Acknowledged {
            by: by.to_string(),
            rung,
            chain_generation: generation,
            at_unix_ms: now_unix_ms,
        });
        Handled::Applied
    }

    /// An officer escalates by hand: the next level up is asked to acknowledge, chain restarts.
    pub fn handle_escalate(&mut self, reason: &str, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_ref() else {
            return Handled::Ignored(Ignored::NotGraded);
        };
        let from_index = incident.chain.rung_index;
        if from_index + 1 >= incident.ladder.len() {
            return Handled::Ignored(Ignored::AlreadyAtTop);
        }
        self.stop_chain(false);
        let incident = self.incident.as_mut().expect("graded");
        incident.chain.rung_index = from_index + 1;
        incident.chain.loops_done = 0;
        self.out_events.push(EscalationEvent::Escalated {
            from: incident.ladder[from_index].clone(),
            to: incident.ladder[from_index + 1].clone(),
            reason: EscalationReason::Manual(reason.to_string()),
            chain_generation: incident.chain.generation,
            at_unix_ms: now_unix_ms,
        });
        self.run_chain(0, now_unix_ms);
        Handled::Applied
    }

    /// A timer the host armed has fired (or fired again, or fired after being cancelled).
    pub fn handle_timer(&mut self, timer_id: TimerId, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        // Remove first: a second firing of the same id finds nothing.
        let Some(arm) = self.pending_timers.remove(&timer_id) else {
            self.sweep_obligations(now_unix_ms);
            return Handled::Ignored(Ignored::StaleTimer);
        };
        match arm.purpose {
            TimerPurpose::ChainStep {
                chain_generation,
                resume_at_step,
            } => {
                self.sweep_obligations(now_unix_ms);
                let Some(incident) = self.incident.as_ref() else {
                    return Handled::Ignored(Ignored::NotGraded);
                };
                // Belt and braces: cancelling removes chain timers, but a generation check keeps
                // a timer from an older chain harmless even if one slipped through.
                if incident.chain.acknowledged || incident.chain.generation != chain_generation {
                    return Handled::Ignored(Ignored::StaleTimer);
                }
                self.run_chain(resume_at_step, now_unix_ms);
                Handled::Applied
            }
            TimerPurpose::ObligationDue { .. } => {
                // The sweep marks this obligation late, since its due time has passed (the host
                // fires at or after due_at); an early firing is treated as due.
                let now = now_unix_ms.max(arm.due_at_unix_ms);
                self.sweep_obligations(now);
                Handled::Applied
            }
        }
    }

    /// A report was filed for `obligation_id`.
    pub fn handle_report_submitted(
        &mut self,
        obligation_id: ObligationId,
        now_unix_ms: i64,
    ) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        let Some(obligation) = self.obligations.get_mut(&obligation_id) else {
            return Handled::Ignored(Ignored::UnknownObligation);
        };
        if matches!(obligation.status, ObligationStatus::Met { .. }) {
            return Handled::Ignored(Ignored::AlreadySubmitted);
        }
        let late_by_ms = (now_unix_ms - obligation.due_at_unix_ms).max(0);
        obligation.status = ObligationStatus::Met {
            submitted_at_unix_ms: now_unix_ms,
            late_by_ms,
        };
        self.out_events.push(EscalationEvent::ObligationMet {
            id: obligation_id,
            submitted_at_unix_ms: now_unix_ms,
            late_by_ms,
        });
        self.cancel_timers(|purpose| {
            matches!(purpose, TimerPurpose::ObligationDue { obligation_id: id } if *id == obligation_id)
        });
        self.end_follow_ups_if_final_met(now_unix_ms);
        Handled::Applied
    }

    /// 越级上报: `from_code` (the lead, or a level on the incident's ladder) reported straight to
    /// `to_code`, an ancestor above its parent. One transition: a met obligation of kind
    /// [`ReportKind::SkipLevel`] to the skipped-to level and a
    /// [`EscalationEvent::SkipLevelReported`] naming the officer, both levels, the levels skipped
    /// and the reason, for the audit trail. The chain and the other obligations are unchanged.
    pub fn handle_skip_level_report(
        &mut self,
        from_code: &str,
        to_code: &str,
        officer: &str,
        reason: &str,
        now_unix_ms: i64,
    ) -> Result<Handled, Error> {
        if self.closed.is_some() {
            return Ok(Handled::Ignored(Ignored::Closed));
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_ref() else {
            return Ok(Handled::Ignored(Ignored::NotGraded));
        };
        let Some(from_index) = incident.ladder.iter().position(|r| r.code == from_code) else {
            return Err(Error::InvalidJurisdiction {
                code: from_code.to_string(),
                problem: format!(
                    "{from_code} is neither the lead {} nor on the incident's chain ({})",
                    incident.ladder[incident.lead_index].code,
                    ladder_codes(&incident.ladder)
                ),
            });
        };
        let Some(to_index) = incident.ladder.iter().position(|r| r.code == to_code) else {
            return Err(Error::InvalidJurisdiction {
                code: to_code.to_string(),
                problem: format!(
                    "{to_code} is not an ancestor of {from_code} on the incident's chain ({})",
                    ladder_codes(&incident.ladder)
                ),
            });
        };
        if to_index < from_index + 2 {
            let problem = match incident.ladder.get(from_index + 1) {
                Some(parent) => format!(
                    "a skip-level report goes above the parent {} of {from_code}; {to_code} is not above it (report to the parent with SubmitReport)",
                    parent.code
                ),
                None => {
                    format!("{from_code} is at the top of the chain: there is no level to skip")
                }
            };
            return Err(Error::InvalidJurisdiction {
                code: to_code.to_string(),
                problem,
            });
        }
        let from = incident.ladder[from_index].clone();
        let to = incident.ladder[to_index].clone();
        let skipped = incident.ladder[from_index + 1..to_index].to_vec();
        let rule_id = self
            .rule()
            .map_or_else(|| "skip_level".to_string(), |rule| rule.id.clone());
        let id = ObligationId(self.next_obligation_id);
        self.next_obligation_id += 1;
        let from_tier = ReportTier::from_level(from.level);
        let to_tier = ReportTier::from_level(to.level);
        self.obligations.insert(
            id,
            Obligation {
                id,
                rule_id: rule_id.clone(),
                kind: ReportKind::SkipLevel,
                from: from_tier,
                to: to_tier,
                to_code: Some(to.code.clone()),
                created_at_unix_ms: now_unix_ms,
                due_at_unix_ms: now_unix_ms,
                status: ObligationStatus::Met {
                    submitted_at_unix_ms: now_unix_ms,
                    late_by_ms: 0,
                },
                was_late: false,
            },
        );
        self.out_events.push(EscalationEvent::ObligationCreated {
            id,
            rule_id,
            kind: ReportKind::SkipLevel,
            from: from_tier,
            to: to_tier,
            to_code: Some(to.code.clone()),
            due_at_unix_ms: now_unix_ms,
        });
        self.out_events.push(EscalationEvent::ObligationMet {
            id,
            submitted_at_unix_ms: now_unix_ms,
            late_by_ms: 0,
        });
        self.out_events.push(EscalationEvent::SkipLevelReported {
            obligation_id: id,
            officer: officer.to_string(),
            from,
            to,
            skipped,
            reason: reason.to_string(),
            at_unix_ms: now_unix_ms,
        });
        Ok(Handled::Applied)
    }

    /// New facts changed the grade. An upgrade applies at once (lead moves up if the grade
    /// requires, the chain restarts, new report hops are owed); a downgrade is only proposed.
    pub fn handle_regrade(&mut self, new_grade: Grade, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_mut() else {
            return Handled::Ignored(Ignored::NotGraded);
        };
        let old = incident.grade;
        // Ungraded → graded counts as an upgrade: the law now sets a reporting reach.
        let is_upgrade = old.is_none_or(|old| new_grade < old);
        if old == Some(new_grade) {
            if let Some(proposed) = incident.pending_downgrade.take() {
                self.out_events.push(EscalationEvent::DowngradeWithdrawn {
                    proposed,
                    at_unix_ms: now_unix_ms,
                });
                return Handled::Applied;
            }
            return Handled::Ignored(Ignored::SameGrade);
        }
        if !is_upgrade {
            incident.pending_downgrade = Some(new_grade);
            self.out_events.push(EscalationEvent::DowngradeProposed {
                from: old,
                to: new_grade,
                at_unix_ms: now_unix_ms,
            });
            return Handled::Applied;
        }
        if let Some(proposed) = incident.pending_downgrade.take() {
            self.out_events.push(EscalationEvent::DowngradeWithdrawn {
                proposed,
                at_unix_ms: now_unix_ms,
            });
        }
        self.apply_grade(Some(new_grade), now_unix_ms);
        // Inside the casualty re-report window the hops already told get a follow-up.
        let in_window = self.in_rereport_window(now_unix_ms);
        self.create_reports(ReportKind::FollowUp, now_unix_ms, !in_window);
        // The more severe incident needs a fresh acknowledgement, at its (new) lead.
        self.stop_chain(false);
        let incident = self.incident.as_mut().expect("graded");
        incident.chain.rung_index = incident.lead_index;
        incident.chain.loops_done = 0;
        self.run_chain(0, now_unix_ms);
        Handled::Applied
    }

    /// An officer confirmed the pending downgrade.
    pub fn handle_confirm_downgrade(&mut self, _by: &str, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_mut() else {
            return Handled::Ignored(Ignored::NotGraded);
        };
        let Some(proposed) = incident.pending_downgrade.take() else {
            return Handled::Ignored(Ignored::NoPendingDowngrade);
        };
        let lead_before = incident.lead_index;
        self.apply_grade(Some(proposed), now_unix_ms);
        let incident = self.incident.as_mut().expect("graded");
        if incident.lead_index != lead_before && !incident.chain.acknowledged {
            // The new lead must acknowledge; the old one's timers are moot.
            self.stop_chain(false);
            let incident = self.incident.as_mut().expect("graded");
            incident.chain.rung_index = incident.lead_index;
            incident.chain.loops_done = 0;
            self.run_chain(0, now_unix_ms);
        }
        Handled::Applied
    }

    /// An upper level takes over command. Taking command acknowledges the incident.
    pub fn handle_take_command(
        &mut self,
        jurisdiction_code: &str,
        now_unix_ms: i64,
    ) -> Result<Handled, Error> {
        if self.closed.is_some() {
            return Ok(Handled::Ignored(Ignored::Closed));
        }
        self.sweep_obligations(now_unix_ms);
        let Some(incident) = self.incident.as_mut() else {
            return Ok(Handled::Ignored(Ignored::NotGraded));
        };
        let Some(index) = incident
            .ladder
            .iter()
            .position(|rung| rung.code == jurisdiction_code)
        else {
            return Err(Error::UnknownJurisdiction {
                code: jurisdiction_code.to_string(),
            });
        };
        if index <= incident.lead_index {
            return Err(Error::InvalidJurisdiction {
                code: jurisdiction_code.to_string(),
                problem: format!(
                    "only a level above the lead {} can take command",
                    incident.ladder[incident.lead_index].code
                ),
            });
        }
        let from = incident.ladder[incident.lead_index].clone();
        let to = incident.ladder[index].clone();
        incident.lead_index = index;
        self.out_events.push(EscalationEvent::LeadChanged {
            from,
            to: to.clone(),
            reason: LeadChangeReason::TakeCommand,
            at_unix_ms: now_unix_ms,
        });
        let incident = self.incident.as_mut().expect("graded");
        if !incident.chain.acknowledged {
            let generation = incident.chain.generation;
            incident.chain.rung_index = index;
            self.stop_chain(true);
            self.out_events.push(EscalationEvent::Acknowledged {
                by: to.code.clone(),
                rung: to,
                chain_generation: generation,
                at_unix_ms: now_unix_ms,
            });
        }
        Ok(Handled::Applied)
    }

    /// Casualty figures changed: inside the re-report window every hop owes a follow-up (续报).
    pub fn handle_casualties_changed(&mut self, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        self.sweep_obligations(now_unix_ms);
        if self.incident.is_none() {
            return Handled::Ignored(Ignored::NotGraded);
        }
        if !self.in_rereport_window(now_unix_ms) {
            return Handled::Ignored(Ignored::OutsideRereportWindow);
        }
        self.create_reports(ReportKind::FollowUp, now_unix_ms, false);
        Handled::Applied
    }

    /// The incident is over (its source withdrew or cleared it): cancel every pending timer
    /// (acknowledgement deadlines, escalation waits, report reminders), waive every obligation not
    /// yet met (overdue ones are first marked late, as any input does), and refuse every later
    /// input with `Ignored(Closed)`. Works on an ungraded machine too (it can then never be
    /// graded); a second close is `Ignored(Closed)`.
    pub fn handle_close(&mut self, reason: &str, now_unix_ms: i64) -> Handled {
        if self.closed.is_some() {
            return Handled::Ignored(Ignored::Closed);
        }
        // Overdue reports are recorded late, but a closing incident escalates no more.
        self.mark_late(now_unix_ms);
        self.cancel_timers(|_| true);
        let mut waived = Vec::new();
        for obligation in self.obligations.values_mut() {
            if matches!(
                obligation.status,
                ObligationStatus::Open | ObligationStatus::Late
            ) {
                obligation.status = ObligationStatus::Waived {
                    waived_at_unix_ms: now_unix_ms,
                };
                waived.push(EscalationEvent::ObligationWaived {
                    id: obligation.id,
                    at_unix_ms: now_unix_ms,
                });
            }
        }
        self.out_events.extend(waived);
        self.closed = Some(Closure {
            reason: reason.to_string(),
            at_unix_ms: now_unix_ms,
        });
        self.out_events.push(EscalationEvent::Closed {
            reason: reason.to_string(),
            at_unix_ms: now_unix_ms,
        });
        Handled::Applied
    }

    // ---- outputs -----------------------------------------------------------------------------

    /// Timers to arm since the last call.
    pub fn poll_timers(&mut self) -> Vec<TimerArm> {
        std::mem::take(&mut self.out_timers)
    }

    /// Timers to disarm since the last call (firing them anyway is harmless).
    pub fn poll_cancelled_timers(&mut self) -> Vec<TimerId> {
        std::mem::take(&mut self.out_cancelled)
    }

    /// Domain events since the last call, in order.
    pub fn poll_events(&mut self) -> Vec<EscalationEvent> {
        std::mem::take(&mut self.out_events)
    }

    // ---- queries -----------------------------------------------------------------------------

    /// The lead jurisdiction; `None` only before grading.
    pub fn lead(&self) -> Option<&Rung> {
        self.incident
            .as_ref()
            .map(|incident| &incident.ladder[incident.lead_index])
    }

    /// The incident's ladder, lowest level first; empty before grading.
    pub fn ladder(&self) -> &[Rung] {
        self.incident
            .as_ref()
            .map_or(&[], |incident| incident.ladder.as_slice())
    }

    /// The level currently asked to acknowledge.
    pub fn escalation_rung(&self) -> Option<&Rung> {
        self.incident
            .as_ref()
            .map(|incident| &incident.ladder[incident.chain.rung_index])
    }

    pub fn grade(&self) -> Option<Grade> {
        self.incident.as_ref().and_then(|incident| incident.grade)
    }

    pub fn pending_downgrade(&self) -> Option<Grade> {
        self.incident
            .as_ref()
            .and_then(|incident| incident.pending_downgrade)
    }

    pub fn is_acknowledged(&self) -> bool {
        self.incident
            .as_ref()
            .is_some_and(|incident| incident.chain.acknowledged)
    }

    /// Why and when the incident was closed; `None` while it is open.
    pub fn closure(&self) -> Option<&Closure> {
        self.closed.as_ref()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    pub fn chain_generation(&self) -> u64 {
        self.incident
            .as_ref()
            .map_or(0, |incident| incident.chain.generation)
    }

    /// Every obligation, by id (the `ListDeadlines` view: due at / sent at / late by).
    pub fn obligations(&self) -> impl Iterator<Item = &Obligation> {
        self.obligations.values()
    }

    /// Timers armed and neither fired nor cancelled (what the host should hold after a restart).
    pub fn pending_timers(&self) -> impl Iterator<Item = &TimerArm> {
        self.pending_timers.values()
    }

    pub fn policy(&self) -> &EscalationPolicy {
        &self.policy
    }

    // ---- mechanics ---------------------------------------------------------------------------

    /// Runs steps from `step_index` until a wait arms a timer or the steps run out.
    fn run_chain(&mut self, mut step_index: usize, now_unix_ms: i64) {
        let steps = self.policy.steps().to_vec();
        let num_loops = self.policy.num_loops();
        let incident = self
            .incident
            .as_mut()
            .expect("run_chain needs a graded incident");
        let generation = incident.chain.generation;
        // Bounded: each pass either advances or spends a loop, and loops are finite.
        while let Some(step) = steps.get(step_index) {
            let rung = incident.ladder[incident.chain.rung_index].clone();
            match *step {
                Step::Notify => {
                    self.out_events.push(EscalationEvent::Notified {
                        rung,
                        step_index,
                        chain_generation: generation,
                        at_unix_ms: now_unix_ms,
                    });
                    step_index += 1;
                }
                Step::Escalate => {
                    let from = incident.chain.rung_index;
                    if from + 1 < incident.ladder.len() {
                        incident.chain.rung_index = from + 1;
                        self.out_events.push(EscalationEvent::Escalated {
                            from: rung,
                            to: incident.ladder[from + 1].clone(),
                            reason: EscalationReason::AckTimeout,
                            chain_generation: generation,
                            at_unix_ms: now_unix_ms,
                        });
                    } else {
                        self.out_events.push(EscalationEvent::EscalationAtTop {
                            rung,
                            chain_generation: generation,
                            at_unix_ms: now_unix_ms,
                        });
                    }
                    step_index += 1;
                }
                Step::Repeat { from_step } => {
                    if incident.chain.loops_done < num_loops {
                        incident.chain.loops_done += 1;
                        step_index = from_step;
                    } else {
                        step_index += 1;
                    }
                }
                Step::Wait { .. } | Step::WaitAckDeadline => {
                    let wait_ms = match *step {
                        Step::Wait { minutes } => i64::from(minutes) * self.policy.minute_ms(),
                        _ => self.policy.ack_deadline_ms(rung.level, incident.grade),
                    };
                    let id = TimerId(self.next_timer_id);
                    self.next_timer_id += 1;
                    let arm = TimerArm {
                        id,
                        due_at_unix_ms: now_unix_ms + wait_ms,
                        purpose: TimerPurpose::ChainStep {
                            chain_generation: generation,
                            resume_at_step: step_index + 1,
                        },
                    };
                    self.pending_timers.insert(id, arm);
                    self.out_timers.push(arm);
                    return;
                }
            }
        }
        self.out_events.push(EscalationEvent::ChainExhausted {
            chain_generation: generation,
            at_unix_ms: now_unix_ms,
        });
    }

    /// Ends the current chain generation and cancels its timers; `acknowledged` says whether the
    /// chain stays stopped.
    fn stop_chain(&mut self, acknowledged: bool) {
        let incident = self
            .incident
            .as_mut()
            .expect("stop_chain needs a graded incident");
        incident.chain.generation += 1;
        incident.chain.acknowledged = acknowledged;
        self.cancel_timers(|purpose| matches!(purpose, TimerPurpose::ChainStep { .. }));
    }

    fn cancel_timers(&mut self, which: impl Fn(&TimerPurpose) -> bool) {
        let ids: Vec<TimerId> = self
            .pending_timers
            .values()
            .filter(|arm| which(&arm.purpose))
            .map(|arm| arm.id)
            .collect();
        for id in ids {
            self.pending_timers.remove(&id);
            // A timer armed and cancelled before the host polled need not reach the host at all.
            if let Some(position) = self.out_timers.iter().position(|arm| arm.id == id) {
                self.out_timers.remove(position);
            } else {
                self.out_cancelled.push(id);
            }
        }
    }

    /// Sets the grade and moves the lead to the level the grade requires: up on an upgrade,
    /// down (never below the lead named at grading) on a confirmed downgrade.
    fn apply_grade(&mut self, grade: Option<Grade>, now_unix_ms: i64) {
        let incident = self.incident.as_mut().expect("graded");
        let from_grade = incident.grade;
        incident.grade = grade;
        self.out_events.push(EscalationEvent::Regraded {
            from: from_grade,
            to: grade,
            at_unix_ms: now_unix_ms,
        });
        let required = lead_level_for(grade);
        // The lowest rung at or above the required level; the top if none is that high.
        let target = incident
            .ladder
            .iter()
            .position(|rung| rung.level <= required)
            .unwrap_or(incident.ladder.len() - 1)
            .max(incident.floor_index);
        let upgrade = grade < from_grade || from_grade.is_none();
        let moves = if upgrade {
            target > incident.lead_index
        } else {
            target < incident.lead_index
        };
        if moves {
            let from = incident.ladder[incident.lead_index].clone();
            incident.lead_index = target;
            self.out_events.push(EscalationEvent::LeadChanged {
                from,
                to: incident.ladder[target].clone(),
                reason: LeadChangeReason::Regrade,
                at_unix_ms: now_unix_ms,
            });
        }
    }

    fn rule(&self) -> Option<&crate::escalation::policy::ObligationRule> {
        let incident = self.incident.as_ref()?;
        self.policy.obligation_rule_for(&incident.sub_type)
    }

    fn hops(&self) -> Vec<Hop> {
        let grade = self.incident.as_ref().and_then(|incident| incident.grade);
        self.rule()
            .map(|rule| rule.hops_for(grade).to_vec())
            .unwrap_or_default()
    }

    fn in_rereport_window(&self, now_unix_ms: i64) -> bool {
        let Some(incident) = self.incident.as_ref() else {
            return false;
        };
        self.rule()
            .and_then(|rule| rule.casualty_rereport_window_ms(incident.sub_type.code))
            .is_some_and(|window_ms| now_unix_ms < incident.graded_at_unix_ms + window_ms)
    }

    /// Creates reports of `kind` along the current hops, each due its hop's minutes after the
    /// one below. A hop without a first report always gets one (an upgrade raises the reach);
    /// with `only_new_hops`, hops already told get nothing.
    fn create_reports(&mut self, kind: ReportKind, now_unix_ms: i64, only_new_hops: bool) {
        // The clock of the hop being created: each hop is due its minutes after the hop below.
        let mut clock = now_unix_ms;
        let minute_ms = self.policy.minute_ms();
        for hop in self.hops() {
            let first_due = self
                .obligations
                .values()
                .find(|o| o.kind == ReportKind::First && o.from == hop.from && o.to == hop.to)
                .map(|o| o.due_at_unix_ms);
            match first_due {
                None => {
                    clock += i64::from(hop.minutes) * minute_ms;
                    self.create_obligation(ReportKind::First, hop, now_unix_ms, clock);
                }
                Some(_) if kind != ReportKind::First && !only_new_hops => {
                    clock += i64::from(hop.minutes) * minute_ms;
                    self.create_obligation(kind, hop, now_unix_ms, clock);
                }
                // A hop already told: the next new hop's clock starts when this one was due,
                // or now if that has passed.
                Some(first_due) => clock = first_due.max(now_unix_ms),
            }
        }
    }

    fn create_obligation(&mut self, kind: ReportKind, hop: Hop, now_unix_ms: i64, due: i64) {
        let Some(rule_id) = self.rule().map(|rule| rule.id.clone()) else {
            return;
        };
        let to_code = self.incident.as_ref().and_then(|incident| {
            let level = hop.to.level()?;
            incident
                .ladder
                .iter()
                .find(|rung| rung.level == level)
                .map(|rung| rung.code.clone())
        });
        let id = ObligationId(self.next_obligation_id);
        self.next_obligation_id += 1;
        self.obligations.insert(
            id,
            Obligation {
                id,
                rule_id: rule_id.clone(),
                kind,
                from: hop.from,
                to: hop.to,
                to_code: to_code.clone(),
                created_at_unix_ms: now_unix_ms,
                due_at_unix_ms: due,
                status: ObligationStatus::Open,
                was_late: false,
            },
        );
        self.out_events.push(EscalationEvent::ObligationCreated {
            id,
            rule_id,
            kind,
            from: hop.from,
            to: hop.to,
            to_code,
            due_at_unix_ms: due,
        });
        let timer = TimerId(self.next_timer_id);
        self.next_timer_id += 1;
        let arm = TimerArm {
            id: timer,
            due_at_unix_ms: due,
            purpose: TimerPurpose::ObligationDue { obligation_id: id },
        };
        self.pending_timers.insert(timer, arm);
        self.out_timers.push(arm);
    }

    /// Rolls the follow-up schedule, marks every open obligation whose due time is not after
    /// `now` as late, and escalates once for each obligation that just became late.
    fn sweep_obligations(&mut self, now_unix_ms: i64) {
        self.roll_follow_ups(now_unix_ms);
        for id in self.mark_late(now_unix_ms) {
            self.escalate_for_overdue(id, now_unix_ms);
        }
    }

    /// An overdue report escalates the incident one level up, like an officer's `Escalate`: the
    /// next level is asked to acknowledge and its chain starts (an acknowledged chain too: the
    /// level above must now answer). At the top of the ladder the lateness is only recorded.
    fn escalate_for_overdue(&mut self, id: ObligationId, now_unix_ms: i64) {
        let Some(obligation) = self.obligations.get(&id) else {
            return;
        };
        let reason = EscalationReason::ReportOverdue {
            obligation_id: id,
            kind: obligation.kind,
            from: obligation.from,
            to: obligation.to,
            to_code: obligation.to_code.clone(),
        };
        let Some(incident) = self.incident.as_ref() else {
            return;
        };
        let from_index = incident.chain.rung_index;
        if from_index + 1 >= incident.ladder.len() {
            return;
        }
        self.stop_chain(false);
        let incident = self.incident.as_mut().expect("graded");
        incident.chain.rung_index = from_index + 1;
        incident.chain.loops_done = 0;
        self.out_events.push(EscalationEvent::Escalated {
            from: incident.ladder[from_index].clone(),
            to: incident.ladder[from_index + 1].clone(),
            reason,
            chain_generation: incident.chain.generation,
            at_unix_ms: now_unix_ms,
        });
        self.run_chain(0, now_unix_ms);
    }

    /// The final reports' due time, if the rule asks for them.
    fn final_due(&self) -> Option<i64> {
        self.obligations
            .values()
            .filter(|o| o.kind == ReportKind::Final)
            .map(|o| o.due_at_unix_ms)
            .max()
    }

    /// Creates the round of follow-ups due at the first fixed local hour strictly after `after`,
    /// one per hop, if that is before the final report is due; else the schedule ends.
    fn schedule_follow_ups(&mut self, after: i64, now_unix_ms: i64) {
        let Some(schedule) = self.rule().and_then(|rule| rule.follow_up.clone()) else {
            return;
        };
        let slot = schedule.next_after(after);
        let ends = self.final_due().is_none_or(|final_due| slot >= final_due);
        let final_met = self.final_met();
        let incident = self.incident.as_mut().expect("graded");
        if ends || final_met {
            incident.follow_up_due = None;
            return;
        }
        incident.follow_up_due = Some(slot);
        for hop in self.hops() {
            self.create_obligation(ReportKind::FollowUp, hop, now_unix_ms, slot);
        }
    }

    /// Once the current round of follow-ups is due, the next round is scheduled (from `now`, so
    /// a host that was down for days does not create a burst of rounds already overdue).
    fn roll_follow_ups(&mut self, now_unix_ms: i64) {
        let Some(due) = self.incident.as_ref().and_then(|i| i.follow_up_due) else {
            return;
        };
        if due <= now_unix_ms {
            self.schedule_follow_ups(now_unix_ms.max(due), now_unix_ms);
        }
    }

    fn final_met(&self) -> bool {
        let mut finals = self
            .obligations
            .values()
            .filter(|o| o.kind == ReportKind::Final)
            .peekable();
        finals.peek().is_some() && finals.all(|o| matches!(o.status, ObligationStatus::Met { .. }))
    }

    /// The final report (终报) ends the follow-ups: open ones are waived and none is scheduled.
    fn end_follow_ups_if_final_met(&mut self, now_unix_ms: i64) {
        if !self.final_met() {
            return;
        }
        if let Some(incident) = self.incident.as_mut() {
            incident.follow_up_due = None;
        }
        let mut waived = Vec::new();
        for obligation in self.obligations.values_mut() {
            if obligation.kind == ReportKind::FollowUp
                && obligation.status == ObligationStatus::Open
            {
                obligation.status = ObligationStatus::Waived {
                    waived_at_unix_ms: now_unix_ms,
                };
                waived.push(obligation.id);
            }
        }
        for id in waived {
            self.cancel_timers(|purpose| {
                matches!(purpose, TimerPurpose::ObligationDue { obligation_id } if *obligation_id == id)
            });
            self.out_events.push(EscalationEvent::ObligationWaived {
                id,
                at_unix_ms: now_unix_ms,
            });
        }
    }

    /// Marks every open obligation whose due time is not after `now` as late; returns their ids.
    fn mark_late(&mut self, now_unix_ms: i64) -> Vec<ObligationId> {
        let mut late = Vec::new();
        for obligation in self.obligations.values_mut() {
            if obligation.status == ObligationStatus::Open
                && obligation.due_at_unix_ms <= now_unix_ms
            {
                obligation.status = ObligationStatus::Late;
                obligation.was_late = true;
                late.push(EscalationEvent::ObligationLate {
                    id: obligation.id,
                    to: obligation.to,
                    to_code: obligation.to_code.clone(),
                    due_at_unix_ms: obligation.due_at_unix_ms,
                    noticed_at_unix_ms: now_unix_ms,
                });
            }
        }
        for event in &late {
            if let EscalationEvent::ObligationLate { id, .. } = event {
                let id = *id;
                self.cancel_timers(|purpose| {
                    matches!(purpose, TimerPurpose::ObligationDue { obligation_id } if *obligation_id == id)
                });
            }
        }
        let ids = late
            .iter()
            .filter_map(|event| match event {
                EscalationEvent::ObligationLate { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        self.out_events.extend(late);
        ids
    }
}

fn ladder_codes(ladder: &[Rung]) -> String {
    ladder
        .iter()
        .map(|rung| rung.code.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}
