//! Deterministic replay of one incident: its recorded inputs (the report, fact updates, officers'
//! acknowledgements, escalations, take-overs, confirmed downgrades, skip-level reports, reports
//! filed, the closure) run again through the same pure code escalation and dispatch use
//! ([`grade_incident`], [`apply_regrade`], the [`EscalationMachine`] with its timers fired at
//! their due times, the plan book), and the outcomes compared with the recorded ones.
//!
//! The outcomes compared are what officers see: gradings (grade and lead), proposed downgrades,
//! acknowledgements, escalations, lead changes, the plans dispatch worked to, and the reporting
//! deadlines. With another region (rulebook, tree, plans) or escalation policy, the first
//! divergence shows what a rule change would have done to this incident.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::escalation::{
    EscalationEvent, EscalationMachine, EscalationPolicy, GradedInput, Handled, LeadChangeReason,
    ObligationId, Rung,
};
use crate::event::{EventBody, Graded, IncidentEvent, IncidentReport, describe_facts};
use crate::grade::Grade;
use crate::grading::{Regrade, apply_regrade, casualties_changed, grade_incident, ladder_for};
use crate::region::Region;

/// One outcome officers see, without its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Graded {
        /// `I` … `IV`, or `-` (below every threshold, or not graded by law).
        grade: String,
        lead: String,
    },
    DowngradeProposed {
        from: String,
        to: String,
    },
    Acknowledged {
        /// The level that acknowledged.
        at: String,
    },
    Escalated {
        from: String,
        to: String,
        reason: String,
        manual: bool,
    },
    LeadChanged {
        from: String,
        to: String,
        reason: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Graded { grade, lead } => write!(f, "graded {grade}, lead {lead}"),
            Outcome::DowngradeProposed { from, to } => {
                write!(f, "downgrade proposed {from} → {to}")
            }
            Outcome::Acknowledged { at } => write!(f, "acknowledged by {at}"),
            Outcome::Escalated {
                from,
                to,
                reason,
                manual,
            } => write!(
                f,
                "escalated {from} → {to} ({}{reason})",
                if *manual { "by hand: " } else { "" }
            ),
            Outcome::LeadChanged { from, to, reason } => {
                write!(f, "lead {from} → {to} ({reason})")
            }
        }
    }
}

/// An outcome and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timed {
    pub at_unix_ms: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A reporting deadline: which report, to whom, due when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deadline {
    pub obligation_id: u32,
    pub kind: String,
    pub to_tier: String,
    pub due_at_unix_ms: i64,
}

/// A report filed for an obligation (`ListDeadlines`' `sent_at`): an officer's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filed {
    pub obligation_id: u32,
    pub at_unix_ms: i64,
}

/// One input the replay applied, and what it produced.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_unix_ms: i64,
    pub input: String,
    pub produced: Vec<String>,
}

/// The replay's result.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub steps: Vec<Step>,
    pub outcomes: Vec<Timed>,
    /// The plans dispatch would work to, in order of first use.
    pub plans: Vec<String>,
    pub deadlines: Vec<Deadline>,
}

/// What the services recorded, in the replay's terms.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub outcomes: Vec<Timed>,
    pub plans: Vec<String>,
}

fn grade_text(grade: Option<Grade>) -> String {
    grade.map_or("-".to_string(), |g| g.roman().to_string())
}

/// 1 for grade I … 4 for IV, 5 for none: lower is more severe.
fn severity_rank(grade: Option<Grade>) -> u8 {
    match grade {
        Some(Grade::I) => 1,
        Some(Grade::II) => 2,
        Some(Grade::III) => 3,
        Some(Grade::IV) => 4,
        None => 5,
    }
}

/// The outcomes the services recorded: every escalation-produced event, and the plans of
/// dispatch's `units_assigned` events.
pub fn recorded(events: &[IncidentEvent]) -> Recorded {
    let mut outcomes = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    for event in events {
        let outcome = match &event.body {
            EventBody::Graded(graded) => Some(Outcome::Graded {
                grade: grade_text(graded.grade),
                lead: graded.lead_code.clone(),
            }),
            EventBody::DowngradeProposed(proposal) => Some(Outcome::DowngradeProposed {
                from: grade_text(proposal.from),
                to: grade_text(proposal.to),
            }),
            EventBody::Acknowledged(ack) => Some(Outcome::Acknowledged {
                at: ack.jurisdiction.code.clone(),
            }),
            EventBody::Escalated(escalated) => Some(Outcome::Escalated {
                from: escalated.from.code.clone(),
                to: escalated.to.code.clone(),
                reason: escalated.reason.clone(),
                manual: escalated.manual,
            }),
            EventBody::LeadChanged(change) => Some(Outcome::LeadChanged {
                from: change.from.code.clone(),
                to: change.to.code.clone(),
                reason: change.reason.clone(),
            }),
            EventBody::UnitsAssigned(units) => {
                if !units.plan_id.is_empty() && !plans.contains(&units.plan_id) {
                    plans.push(units.plan_id.clone());
                }
                None
            }
            _ => None,
        };
        if let Some(outcome) = outcome {
            outcomes.push(Timed {
                at_unix_ms: event.at_unix_ms,
                outcome,
            });
        }
    }
    Recorded { outcomes, plans }
}

/// An input of the replay, at its recorded time.
enum Input<'a> {
    Report(&'a IncidentReport),
    Update(&'a crate::event::IncidentUpdated),
    Acknowledge(String),
    Escalate(String),
    TakeCommand(String),
    ConfirmDowngrade(Option<Grade>),
    SkipLevel(&'a crate::event::SkipLevelReported),
    Filed(u32),
    Close(String),
}

impl Input<'_> {
    fn describe(&self) -> String {
        match self {
            Input::Report(report) => {
                format!("report {} ({})", report.kind, describe_facts(&report.facts))
            }
            Input::Update(update) => format!("facts updated: {}", describe_facts(&update.facts)),
            Input::Acknowledge(by) => format!("acknowledged by {by}"),
            Input::Escalate(reason) => format!("escalated by hand: {reason}"),
            Input::TakeCommand(code) => format!("{code} takes command"),
            Input::ConfirmDowngrade(grade) => {
                format!("downgrade to {} confirmed", grade_text(*grade))
            }
            Input::SkipLevel(skip) => format!(
                "skip-level report {} → {} by {}",
                skip.from.code, skip.to.code, skip.officer
            ),
            Input::Filed(id) => format!("report for obligation {id} filed"),
            Input::Close(reason) => format!("closed: {reason}"),
        }
    }
}

/// The inputs in the recorded events, at their times. The report is applied when escalation
/// graded it (its first `graded` event), since the clocks started then.
fn inputs<'a>(events: &'a [IncidentEvent], filed: &[Filed]) -> Vec<(i64, Input<'a>)> {
    let mut out: Vec<(i64, Input<'a>)> = Vec::new();
    let first_graded_at = events.iter().find_map(|e| match e.body {
        EventBody::Graded(_) => Some(e.at_unix_ms),
        _ => None,
    });
    let mut recorded_grade: Option<Option<Grade>> = None;
    for event in events {
        let at = event.at_unix_ms;
        match &event.body {
            EventBody::Reported(report) if out.is_empty() => {
                out.push((first_graded_at.unwrap_or(at), Input::Report(report)));
            }
            EventBody::Updated(update) => out.push((at, Input::Update(update))),
            EventBody::Acknowledged(ack) => out.push((at, Input::Acknowledge(ack.by.clone()))),
            EventBody::Escalated(escalated) if escalated.manual => {
                out.push((at, Input::Escalate(escalated.reason.clone())));
            }
            EventBody::LeadChanged(change) if change.reason == "take_command" => {
                out.push((at, Input::TakeCommand(change.to.code.clone())));
            }
            EventBody::Graded(graded) => {
                // Facts only ever raise a grade by themselves; a lower grading is an officer's
                // confirmation of a proposed downgrade.
                if let Some(before) = recorded_grade
                    && severity_rank(graded.grade) > severity_rank(before)
                {
                    out.push((at, Input::ConfirmDowngrade(graded.grade)));
                }
                recorded_grade = Some(graded.grade);
            }
            EventBody::SkipLevelReported(skip) => out.push((at, Input::SkipLevel(skip))),
            EventBody::Closed(closed) => out.push((at, Input::Close(closed.reason.clone()))),
            _ => {}
        }
    }
    for report in filed {
        out.push((report.at_unix_ms, Input::Filed(report.obligation_id)));
    }
    // Stable: inputs recorded at the same millisecond keep the order the bus delivered them.
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The machine's events officers see, as outcomes (what escalation's `officer_event` emits).
fn machine_outcomes(machine: &mut EscalationMachine) -> Vec<Timed> {
    machine.poll_timers();
    machine.poll_cancelled_timers();
    machine
        .poll_events()
        .into_iter()
        .filter_map(|event| match event {
            EscalationEvent::Acknowledged {
                rung, at_unix_ms, ..
            } => Some(Timed {
                at_unix_ms,
                outcome: Outcome::Acknowledged { at: rung.code },
            }),
            EscalationEvent::Escalated {
                from,
                to,
                reason,
                at_unix_ms,
                ..
            } => Some(Timed {
                at_unix_ms,
                outcome: Outcome::Escalated {
                    from: from.code,
                    to: to.code,
                    manual: matches!(reason, crate::escalation::EscalationReason::Manual(_)),
                    reason: reason.describe(),
                },
            }),
            EscalationEvent::LeadChanged {
                from,
                to,
                reason,
                at_unix_ms,
            } => Some(Timed {
                at_unix_ms,
                outcome: Outcome::LeadChanged {
                    from: from.code,
                    to: to.code,
                    reason: match reason {
                        LeadChangeReason::Regrade => "regrade",
                        LeadChangeReason::TakeCommand => "take_command",
                    }
                    .to_string(),
                },
            }),
            _ => None,
        })
        .collect()
}

/// Fires every pending timer due at or before `until`, earliest first, at its due time.
fn fire_timers(machine: &mut EscalationMachine, until: i64, out: &mut Vec<Timed>) {
    loop {
        let next = machine
            .pending_timers()
            .min_by_key(|arm| (arm.due_at_unix_ms, arm.id))
            .copied();
        let Some(arm) = next.filter(|arm| arm.due_at_unix_ms <= until) else {
            return;
        };
        machine.handle_timer(arm.id, arm.due_at_unix_ms);
        out.extend(machine_outcomes(machine));
    }
}

/// Re-runs the incident's `events` (oldest first, as `ListIncidentEvents` returns them) and the
/// reports officers `filed` through `region` and `policy`, firing timers up to `horizon_unix_ms`
/// (the time the record was read, less a grace for timers still being delivered).
pub fn replay(
    region: &Region,
    policy: &EscalationPolicy,
    events: &[IncidentEvent],
    filed: &[Filed],
    horizon_unix_ms: i64,
) -> Result<Replayed, String> {
    let mut machine = EscalationMachine::new(policy.clone());
    // What escalation keeps: the grading in force (its report's facts are what the next update
    // is compared with) and a proposed lower grading.
    let mut in_force: Option<Graded> = None;
    let mut proposed: Option<Graded> = None;
    let mut outcomes: Vec<Timed> = Vec::new();
    let mut steps = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    let note_plan = |graded: &Graded, plans: &mut Vec<String>| {
        if let Some(plan) = region.plans.plan_for(&graded.report.kind, graded.grade)
            && !plans.contains(&plan.id)
        {
            plans.push(plan.id.clone());
        }
    };
    for (at, input) in inputs(events, filed) {
        let before = outcomes.len();
        fire_timers(&mut machine, at, &mut outcomes);
        let timers_fired = outcomes.len() - before;
        let produced_from = outcomes.len();
        match &input {
            Input::Report(report) => {
                let graded = grade_incident(region, report)?;
                let sub_type = crate::class::sub_type(&report.kind)
                    .ok_or_else(|| format!("unknown kind {:?}", report.kind))?
                    .clone();
                machine
                    .handle_graded(
                        GradedInput {
                            grade: graded.grade,
                            sub_type,
                            lead: Rung::new(graded.lead_code.clone(), graded.lead_level),
                            ladder: ladder_for(region, &graded),
                        },
                        at,
                    )
                    .map_err(|e| e.to_string())?;
                outcomes.push(Timed {
                    at_unix_ms: at,
                    outcome: Outcome::Graded {
                        grade: grade_text(graded.grade),
                        lead: graded.lead_code.clone(),
                    },
                });
                note_plan(&graded, &mut plans);
                outcomes.extend(machine_outcomes(&mut machine));
                in_force = Some(graded);
            }
            Input::Update(update) => {
                let Some(current) = &in_force else {
                    continue;
                };
                let changed = casualties_changed(&current.report.facts, &update.facts);
                let mut report = current.report.clone();
                report.facts = update.facts.clone();
                let regraded = grade_incident(region, &report)?;
                let outcome = apply_regrade(&mut machine, regraded.grade, changed, at);
                let lead = machine.lead().map(|rung| rung.code.clone());
                let mut mine = machine_outcomes(&mut machine);
                match outcome {
                    Regrade::Upgraded => {
                        // Escalation commits the machine's events (the lead change) before the
                        // `graded` event of an upgrade.
                        outcomes.extend(std::mem::take(&mut mine));
                        outcomes.push(Timed {
                            at_unix_ms: at,
                            outcome: Outcome::Graded {
                                grade: grade_text(regraded.grade),
                                lead: lead.unwrap_or_default(),
                            },
                        });
                        note_plan(&regraded, &mut plans);
                        in_force = Some(regraded);
                        proposed = None;
                    }
                    Regrade::DowngradeProposed => {
                        outcomes.push(Timed {
                            at_unix_ms: at,
                            outcome: Outcome::DowngradeProposed {
                                from: grade_text(current.grade),
                                to: grade_text(regraded.grade),
                            },
                        });
                        proposed = Some(regraded);
                    }
                    Regrade::Unchanged => {
                        if machine.pending_downgrade().is_none() {
                            proposed = None;
                        }
                    }
                }
                outcomes.extend(mine);
            }
            Input::Acknowledge(by) => {
                machine.handle_acknowledge(by, at);
                outcomes.extend(machine_outcomes(&mut machine));
            }
            Input::Escalate(reason) => {
                machine.handle_escalate(reason, at);
                outcomes.extend(machine_outcomes(&mut machine));
            }
            Input::TakeCommand(code) => {
                // A take-over the new region does not allow changes nothing; the comparison
                // shows the missing lead change.
                let _ = machine.handle_take_command(code, at);
                outcomes.extend(machine_outcomes(&mut machine));
            }
            Input::ConfirmDowngrade(_) => {
                if machine.handle_confirm_downgrade("officer", at) == Handled::Applied {
                    let mut graded = proposed
                        .take()
                        .or_else(|| in_force.clone())
                        .ok_or("a downgrade confirmed before any grading")?;
                    graded.grade = machine.grade();
                    let lead = machine.lead().map(|rung| rung.code.clone());
                    // As for an upgrade: the machine's events, then `graded`.
                    outcomes.extend(machine_outcomes(&mut machine));
                    outcomes.push(Timed {
                        at_unix_ms: at,
                        outcome: Outcome::Graded {
                            grade: grade_text(graded.grade),
                            lead: lead.unwrap_or_default(),
                        },
                    });
                    note_plan(&graded, &mut plans);
                    in_force = Some(graded);
                }
            }
            Input::SkipLevel(skip) => {
                let _ = machine.handle_skip_level_report(
                    &skip.from.code,
                    &skip.to.code,
                    &skip.officer,
                    &skip.reason,
                    at,
                );
                outcomes.extend(machine_outcomes(&mut machine));
            }
            Input::Filed(id) => {
                machine.handle_report_submitted(ObligationId(*id), at);
                outcomes.extend(machine_outcomes(&mut machine));
            }
            Input::Close(reason) => {
                machine.handle_close(reason, at);
                outcomes.extend(machine_outcomes(&mut machine));
            }
        }
        let mut produced: Vec<String> = outcomes[before..before + timers_fired]
            .iter()
            .map(|t| format!("(timer) {}", t.outcome))
            .collect();
        produced.extend(
            outcomes[produced_from..]
                .iter()
                .map(|t| t.outcome.to_string()),
        );
        steps.push(Step {
            at_unix_ms: at,
            input: input.describe(),
            produced,
        });
    }
    let before = outcomes.len();
    fire_timers(&mut machine, horizon_unix_ms, &mut outcomes);
    if outcomes.len() > before {
        steps.push(Step {
            at_unix_ms: horizon_unix_ms,
            input: "timers due since the last input".into(),
            produced: outcomes[before..]
                .iter()
                .map(|t| format!("(timer) {}", t.outcome))
                .collect(),
        });
    }
    let deadlines = machine
        .obligations()
        .map(|o| Deadline {
            obligation_id: o.id.0,
            kind: o.kind.as_str().to_string(),
            to_tier: o.to.as_str().to_string(),
            due_at_unix_ms: o.due_at_unix_ms,
        })
        .collect();
    Ok(Replayed {
        steps,
        outcomes,
        plans,
        deadlines,
    })
}

/// Where the record and the replay first part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// What diverged: `outcome <n>`, `plans` or `deadline <id>`.
    pub at: String,
    pub recorded: String,
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: recorded {}, replayed {}",
            self.at, self.recorded, self.replayed
        )
    }
}

fn describe_timed(timed: Option<&Timed>) -> String {
    timed.map_or("nothing".to_string(), |t| {
        format!("{} at {}", t.outcome, t.at_unix_ms)
    })
}

/// Compares outcome by outcome (the same outcome, at most `tolerance_ms` apart), then the plans,
/// then the deadlines (`recorded_deadlines`, by obligation id) when there are any.
pub fn first_divergence(
    recorded: &Recorded,
    replayed: &Replayed,
    recorded_deadlines: &[Deadline],
    horizon_unix_ms: i64,
    tolerance_ms: i64,
) -> Option<Divergence> {
    // Recorded outcomes after the horizon were not replayed (their timers are not yet due there).
    let kept: Vec<&Timed> = recorded
        .outcomes
        .iter()
        .filter(|t| t.at_unix_ms <= horizon_unix_ms)
        .collect();
    let count = kept.len().max(replayed.outcomes.len());
    for i in 0..count {
        let (left, right) = (kept.get(i).copied(), replayed.outcomes.get(i));
        let same = match (left, right) {
            (Some(l), Some(r)) => {
                l.outcome == r.outcome && (l.at_unix_ms - r.at_unix_ms).abs() <= tolerance_ms
            }
            // A timer due in the last moments before the horizon may not have fired yet in
            // the services: what the replay adds there is still on its way, not a divergence.
            (None, Some(r)) => r.at_unix_ms > horizon_unix_ms - tolerance_ms,
            _ => false,
        };
        if !same {
            return Some(Divergence {
                at: format!("outcome {}", i + 1),
                recorded: describe_timed(left),
                replayed: describe_timed(right),
            });
        }
    }
    if !recorded.plans.is_empty() && recorded.plans != replayed.plans {
        return Some(Divergence {
            at: "plans".into(),
            recorded: recorded.plans.join(" → "),
            replayed: replayed.plans.join(" → "),
        });
    }
    if !recorded_deadlines.is_empty() {
        let mine: BTreeMap<u32, &Deadline> = replayed
            .deadlines
            .iter()
            .map(|d| (d.obligation_id, d))
            .collect();
        for theirs in recorded_deadlines {
            let same = mine.get(&theirs.obligation_id).is_some_and(|d| {
                d.kind == theirs.kind
                    && d.to_tier == theirs.to_tier
                    && (d.due_at_unix_ms - theirs.due_at_unix_ms).abs() <= tolerance_ms
            });
            if !same {
                let show = |d: Option<&Deadline>| {
                    d.map_or("nothing".to_string(), |d| {
                        format!(
                            "{} report to {} due at {}",
                            d.kind, d.to_tier, d.due_at_unix_ms
                        )
                    })
                };
                return Some(Divergence {
                    at: format!("deadline {}", theirs.obligation_id),
                    recorded: show(Some(theirs)),
                    replayed: show(mine.get(&theirs.obligation_id).copied()),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::IncidentClass;
    use crate::event::{Acknowledged, IncidentUpdated, JurisdictionRef};
    use crate::geo::GeoPoint;
    use crate::grade::Facts;
    use crate::jurisdiction::Level;

    const MINUTE: i64 = 60_000;
    const T0: i64 = 1_800_000_000_000;

    fn report(deaths: u32) -> IncidentReport {
        IncidentReport {
            kind: "accident.hazardous_chemicals".into(),
            class: IncidentClass::Accident,
            township_code: "390202400".into(),
            other_township_codes: vec![],
            location: GeoPoint { lat: 0.0, lon: 0.0 },
            location_reported: false,
            facts: Facts {
                deaths: Some(deaths),
                ..Default::default()
            },
            summary: String::new(),
            reported_by: String::new(),
            warning: None,
        }
    }

    fn event(at: i64, body: EventBody) -> IncidentEvent {
        IncidentEvent {
            event_id: format!("e{at}"),
            incident_id: "INC-1".into(),
            namespace: "live".into(),
            at_unix_ms: at,
            source_service: "test".into(),
            body,
        }
    }

    fn graded(region: &Region, deaths: u32) -> EventBody {
        EventBody::Graded(grade_incident(region, &report(deaths)).unwrap())
    }

    fn ack(by: &str, code: &str) -> EventBody {
        EventBody::Acknowledged(Acknowledged {
            by: by.into(),
            jurisdiction: JurisdictionRef {
                code: code.into(),
                name: String::new(),
                level: Level::City,
            },
        })
    }

    fn outcomes(replayed: &Replayed) -> Vec<String> {
        replayed
            .outcomes
            .iter()
            .map(|t| t.outcome.to_string())
            .collect()
    }

    #[test]
    fn a_late_acknowledgement_comes_after_the_escalation_its_deadline_caused() {
        let region = Region::embedded_default();
        let policy = EscalationPolicy::embedded_default();
        // Grade III: the city has 15 minutes; it acknowledges after 20.
        let events = [
            event(T0, EventBody::Reported(report(3))),
            event(T0 + 5, graded(&region, 3)),
            event(T0 + 20 * MINUTE, ack("Liu", "390000")),
        ];
        let replayed = replay(&region, &policy, &events, &[], T0 + 21 * MINUTE).unwrap();
        assert_eq!(
            outcomes(&replayed),
            [
                "graded III, lead 390200",
                "escalated 390200 → 390000 (acknowledgement deadline passed)",
                "acknowledged by 390000",
            ]
        );
        // The escalation fired at its due time: grading + 15 minutes.
        assert_eq!(replayed.outcomes[1].at_unix_ms, T0 + 5 + 15 * MINUTE);
        // An acknowledgement in time: no escalation.
        let events = [
            event(T0, EventBody::Reported(report(3))),
            event(T0 + 5, graded(&region, 3)),
            event(T0 + 2 * MINUTE, ack("Liu", "390200")),
        ];
        let replayed = replay(&region, &policy, &events, &[], T0 + 21 * MINUTE).unwrap();
        assert_eq!(
            outcomes(&replayed),
            ["graded III, lead 390200", "acknowledged by 390200"]
        );
        assert_eq!(replayed.plans, ["hazchem-III"]);
    }

    #[test]
    fn a_lower_grading_after_a_proposal_is_a_confirmed_downgrade() {
        let region = Region::embedded_default();
        let policy = EscalationPolicy::embedded_default();
        let update = |deaths| {
            EventBody::Updated(IncidentUpdated {
                facts: Facts {
                    deaths: Some(deaths),
                    ..Default::default()
                },
                updated_by: "scene".into(),
                summary: String::new(),
                warning: None,
            })
        };
        let events = [
            event(T0, EventBody::Reported(report(12))),
            event(T0 + 5, graded(&region, 12)),
            event(T0 + MINUTE, ack("Sun", "390000")),
            event(T0 + 2 * MINUTE, update(3)),
            // The officer's confirmation, as escalation records it: a grading one grade lower.
            event(T0 + 3 * MINUTE, graded(&region, 3)),
        ];
        let replayed = replay(&region, &policy, &events, &[], T0 + 4 * MINUTE).unwrap();
        let got = outcomes(&replayed);
        assert_eq!(got[0], "graded II, lead 390000");
        assert_eq!(got[1], "acknowledged by 390000");
        assert_eq!(got[2], "downgrade proposed II → III");
        assert_eq!(got.last().unwrap(), "graded III, lead 390000");
        assert_eq!(replayed.plans, ["hazchem-II", "hazchem-III"]);
        let steps: Vec<&str> = replayed.steps.iter().map(|s| s.input.as_str()).collect();
        assert!(steps.contains(&"downgrade to III confirmed"), "{steps:?}");
    }

    #[test]
    fn the_tail_before_the_horizon_is_in_flight_and_anything_else_diverges() {
        let timed = |at, lead: &str| Timed {
            at_unix_ms: at,
            outcome: Outcome::Graded {
                grade: "III".into(),
                lead: lead.into(),
            },
        };
        let recorded = Recorded {
            outcomes: vec![timed(1_000, "390200")],
            plans: vec![],
        };
        let mut replayed = Replayed {
            steps: vec![],
            outcomes: vec![timed(1_200, "390200"), timed(9_500, "390000")],
            plans: vec![],
            deadlines: vec![],
        };
        // The second replayed outcome is due 500 ms before the horizon: maybe not fired yet.
        assert_eq!(
            first_divergence(&recorded, &replayed, &[], 10_000, 1_000),
            None
        );
        // 2 s before the horizon it should have fired.
        replayed.outcomes[1].at_unix_ms = 8_000;
        let divergence = first_divergence(&recorded, &replayed, &[], 10_000, 1_000).unwrap();
        assert_eq!(divergence.at, "outcome 2");
        assert_eq!(divergence.recorded, "nothing");
        // Same outcome, too far apart in time.
        replayed.outcomes.truncate(1);
        replayed.outcomes[0].at_unix_ms = 3_000;
        let divergence = first_divergence(&recorded, &replayed, &[], 10_000, 1_000).unwrap();
        assert_eq!(divergence.at, "outcome 1");
        // A deadline the replay does not owe.
        replayed.outcomes[0].at_unix_ms = 1_000;
        let deadline = Deadline {
            obligation_id: 1,
            kind: "first".into(),
            to_tier: "county".into(),
            due_at_unix_ms: 5_000,
        };
        let divergence = first_divergence(
            &recorded,
            &replayed,
            std::slice::from_ref(&deadline),
            10_000,
            1_000,
        )
        .unwrap();
        assert_eq!(divergence.at, "deadline 1");
        replayed.deadlines.push(deadline.clone());
        assert_eq!(
            first_divergence(&recorded, &replayed, &[deadline], 10_000, 1_000),
            None
        );
    }
}
