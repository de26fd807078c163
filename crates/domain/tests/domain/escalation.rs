//! Integration tests for the escalation machine: the policy file, the acknowledgement chain and
//! its races, reporting obligations, regrading and command, and a seeded simulation.

use std::collections::{BTreeMap, BTreeSet};

use domain::class::{SubType, sub_type};
use domain::escalation::{
    EscalationEvent, EscalationMachine, EscalationPolicy, EscalationReason, GradedInput, Handled,
    Ignored, LeadChangeReason, ObligationStatus, ReportKind, ReportTier, Rung, Step, TimerArm,
    TimerId, TimerPurpose,
};
use domain::grade::Grade;
use domain::jurisdiction::Level;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
const T0: i64 = 1_700_000_000_000;

// ---- helpers ---------------------------------------------------------------------------------

fn st(code: &str) -> SubType {
    sub_type(code)
        .unwrap_or_else(|| panic!("unknown sub-type {code}"))
        .clone()
}

fn county() -> Rung {
    Rung::new("420102", Level::County)
}
fn city() -> Rung {
    Rung::new("420100", Level::City)
}
fn province() -> Rung {
    Rung::new("420000", Level::Province)
}
fn national() -> Rung {
    Rung::new("000000", Level::National)
}
fn ladder() -> Vec<Rung> {
    vec![county(), city(), province(), national()]
}

fn graded(grade: Option<Grade>, code: &str, lead: Rung) -> GradedInput {
    GradedInput {
        grade,
        sub_type: st(code),
        lead,
        ladder: ladder(),
    }
}

fn machine_graded(grade: Grade, code: &str, lead: Rung) -> EscalationMachine {
    let mut machine = EscalationMachine::new(EscalationPolicy::embedded_default());
    let handled = machine
        .handle_graded(graded(Some(grade), code, lead), T0)
        .unwrap();
    assert_eq!(handled, Handled::Applied);
    machine
}

fn chain_timers(timers: &[TimerArm]) -> Vec<TimerArm> {
    timers
        .iter()
        .filter(|arm| matches!(arm.purpose, TimerPurpose::ChainStep { .. }))
        .copied()
        .collect()
}

fn is_chain_event(event: &EscalationEvent) -> bool {
    matches!(
        event,
        EscalationEvent::Notified { .. }
            | EscalationEvent::Escalated { .. }
            | EscalationEvent::EscalationAtTop { .. }
            | EscalationEvent::ChainExhausted { .. }
    )
}

fn notified_codes(events: &[EscalationEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            EscalationEvent::Notified { rung, .. } => Some(rung.code.clone()),
            _ => None,
        })
        .collect()
}

// ---- policy ----------------------------------------------------------------------------------

#[test]
fn embedded_default_policy_parses_with_the_documented_numbers() {
    let policy = EscalationPolicy::embedded_default();
    for level in [Level::County, Level::City, Level::Province, Level::National] {
        assert_eq!(policy.ack_deadline_ms(level, Some(Grade::I)), 5 * MINUTE_MS);
        assert_eq!(
            policy.ack_deadline_ms(level, Some(Grade::II)),
            5 * MINUTE_MS
        );
        assert_eq!(
            policy.ack_deadline_ms(level, Some(Grade::III)),
            15 * MINUTE_MS
        );
        assert_eq!(
            policy.ack_deadline_ms(level, Some(Grade::IV)),
            30 * MINUTE_MS
        );
    }
    assert_eq!(
        policy.steps(),
        &[
            Step::Notify,
            Step::WaitAckDeadline,
            Step::Escalate,
            Step::Repeat { from_step: 0 }
        ]
    );
    let safety = policy.obligation_rule_for(&st("accident.mine")).unwrap();
    assert_eq!(safety.id, "production_safety");
    assert_eq!(safety.hops_for(Some(Grade::IV)).len(), 2);
    assert_eq!(safety.hops_for(Some(Grade::III)).len(), 3);
    assert_eq!(safety.hops_for(Some(Grade::I)).len(), 4);
    assert_eq!(
        safety.casualty_rereport_window_ms("accident.mine"),
        Some(30 * DAY_MS)
    );
    assert_eq!(
        safety.casualty_rereport_window_ms("accident.road_traffic"),
        Some(7 * DAY_MS)
    );
    assert_eq!(
        safety.casualty_rereport_window_ms("accident.fire"),
        Some(7 * DAY_MS)
    );
    let health = policy
        .obligation_rule_for(&st("public_health.epidemic"))
        .unwrap();
    let last = health.hops_for(Some(Grade::III)).last().unwrap();
    assert_eq!(
        (last.from, last.to, last.minutes),
        (ReportTier::Province, ReportTier::National, 60)
    );
    assert!(
        policy
            .obligation_rule_for(&st("natural.earthquake"))
            .is_none()
    );
}

#[test]
fn per_level_ack_override_applies_to_its_grades_only() {
    let text = domain::escalation::EMBEDDED_DEFAULT_TOML
        .replace("# province = { III = 10 }", "province = { III = 10 }");
    let policy = EscalationPolicy::from_toml("escalation.toml", &text).unwrap();
    assert_eq!(
        policy.ack_deadline_ms(Level::Province, Some(Grade::III)),
        10 * MINUTE_MS
    );
    assert_eq!(
        policy.ack_deadline_ms(Level::Province, Some(Grade::IV)),
        30 * MINUTE_MS
    );
    assert_eq!(
        policy.ack_deadline_ms(Level::City, Some(Grade::III)),
        15 * MINUTE_MS
    );
}

fn policy_error(text: &str) -> String {
    EscalationPolicy::from_toml("bad.toml", text)
        .unwrap_err()
        .to_string()
}

const MINIMAL: &str = "version = 1\n\
[ack_deadline_minutes]\n\
default = { I = 5, II = 5, III = 15, IV = 30, ungraded = 30 }\n\
[escalation]\n\
num_loops = 1\n\
[[escalation.step]]\n\
action = \"notify\"\n";

#[test]
fn policy_errors_name_file_line_and_column() {
    assert!(EscalationPolicy::from_toml("ok.toml", MINIMAL).is_ok());

    let unknown_action = format!("{MINIMAL}[[escalation.step]]\naction = \"shout\"\n");
    let message = policy_error(&unknown_action);
    assert!(
        message.starts_with("bad.toml:9:10: unknown action \"shout\""),
        "{message}"
    );

    let bad_repeat = format!("{MINIMAL}[[escalation.step]]\naction = \"repeat\"\nfrom_step = 7\n");
    let message = policy_error(&bad_repeat);
    assert!(
        message.starts_with("bad.toml:10:13: from_step 7"),
        "{message}"
    );

    let syntax = MINIMAL.replace("num_loops = 1", "num_loops = ");
    let message = policy_error(&syntax);
    assert!(message.starts_with("bad.toml:5:"), "{message}");

    let missing_grade = MINIMAL.replace(", ungraded = 30", "");
    let message = policy_error(&missing_grade);
    assert!(message.starts_with("bad.toml:3:11:"), "{message}");
    assert!(message.contains("ungraded"), "{message}");

    let gap = format!(
        "{MINIMAL}[[obligation]]\nid = \"x\"\nversion = 1\nsource = \"s\"\nclass = \"accident\"\n\
         reach = {{ I = \"city\" }}\n\
         [[obligation.hop]]\nfrom = \"unit\"\nto = \"county\"\nminutes = 60\n\
         [[obligation.hop]]\nfrom = \"city\"\nto = \"province\"\nminutes = 120\n"
    );
    let message = policy_error(&gap);
    assert!(message.starts_with("bad.toml:"), "{message}");
    assert!(message.contains("contiguous"), "{message}");

    let bad_tier = MINIMAL.to_string()
        + "[[obligation]]\nid = \"x\"\nversion = 1\nsource = \"s\"\nclass = \"accident\"\n\
           reach = { I = \"galaxy\" }\n";
    let message = policy_error(&bad_tier);
    assert!(message.starts_with("bad.toml:13:"), "{message}");
}

// ---- the acknowledgement chain ---------------------------------------------------------------

#[test]
fn unacknowledged_grade_iii_led_by_a_county_escalates_to_the_city_at_its_deadline() {
    let mut machine = machine_graded(Grade::III, "accident.mine", county());
    let events = machine.poll_events();
    assert_eq!(notified_codes(&events), vec![county().code]);
    let timers = chain_timers(&machine.poll_timers());
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at_unix_ms, T0 + 15 * MINUTE_MS);

    let due = timers[0].due_at_unix_ms;
    assert_eq!(machine.handle_timer(timers[0].id, due), Handled::Applied);
    let events = machine.poll_events();
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::Escalated { from, to, .. } if *from == county() && *to == city()
    )));
    assert_eq!(notified_codes(&events), vec![city().code]);
    assert_eq!(machine.escalation_rung(), Some(&city()));
    // Escalation asks the city to acknowledge; it does not move command.
    assert_eq!(machine.lead(), Some(&county()));
    let next = chain_timers(&machine.poll_timers());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].due_at_unix_ms, due + 15 * MINUTE_MS);
}

#[test]
fn a_compressed_clock_scales_deadlines_waits_and_hops_and_survives_serde() {
    let policy = EscalationPolicy::embedded_default().with_minute_ms(100);
    assert_eq!(policy.minute_ms(), 100);
    assert_eq!(EscalationPolicy::embedded_default().minute_ms(), MINUTE_MS);
    assert_eq!(
        policy.ack_deadline_ms(Level::County, Some(Grade::III)),
        1_500
    );
    assert_eq!(
        EscalationPolicy::embedded_default()
            .with_minute_ms(0)
            .minute_ms(),
        1
    );

    let mut machine = EscalationMachine::new(policy);
    machine
        .handle_graded(graded(Some(Grade::II), "accident.mine", province()), T0)
        .unwrap();
    let timers = machine.poll_timers();
    assert_eq!(chain_timers(&timers)[0].due_at_unix_ms, T0 + 5 * 100);
    // Decree 493: unit → county within 60 minutes, here 60 × 100 ms.
    let first_hop = machine
        .obligations()
        .find(|o| o.from == ReportTier::Unit)
        .expect("unit → county obligation");
    assert_eq!(first_hop.due_at_unix_ms, T0 + 60 * 100);

    let json = serde_json::to_string(&machine).unwrap();
    let back: EscalationMachine = serde_json::from_str(&json).unwrap();
    assert_eq!(back, machine);
    assert_eq!(back.policy().minute_ms(), 100);
}

#[test]
fn a_timer_firing_after_the_ack_produces_nothing() {
    let mut machine = machine_graded(Grade::III, "accident.mine", county());
    machine.poll_events();
    let timer = chain_timers(&machine.poll_timers())[0];

    // The ack lands a moment before the deadline; the timer is delivered after it anyway.
    let ack_at = timer.due_at_unix_ms - 1;
    assert_eq!(
        machine.handle_acknowledge("duty officer Li", ack_at),
        Handled::Applied
    );
    assert!(machine.poll_cancelled_timers().contains(&timer.id));
    let events = machine.poll_events();
    assert!(matches!(
        events.as_slice(),
        [EscalationEvent::Acknowledged { by, rung, .. }] if by == "duty officer Li" && *rung == county()
    ));

    let outcome = machine.handle_timer(timer.id, timer.due_at_unix_ms);
    assert_eq!(outcome, Handled::Ignored(Ignored::StaleTimer));
    assert!(machine.poll_events().is_empty());
    assert!(chain_timers(&machine.poll_timers()).is_empty());
    assert_eq!(
        machine.handle_acknowledge("again", ack_at + 1),
        Handled::Ignored(Ignored::AlreadyAcknowledged)
    );
}

#[test]
fn the_same_timer_firing_twice_has_one_effect() {
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    machine.poll_events();
    let timer = chain_timers(&machine.poll_timers())[0];
    assert_eq!(timer.due_at_unix_ms, T0 + 30 * MINUTE_MS);
    machine.handle_timer(timer.id, timer.due_at_unix_ms);
    let first = machine.poll_events();
    assert_eq!(
        first
            .iter()
            .filter(|e| matches!(e, EscalationEvent::Escalated { .. }))
            .count(),
        1
    );
    assert_eq!(
        machine.handle_timer(timer.id, timer.due_at_unix_ms + 5),
        Handled::Ignored(Ignored::StaleTimer)
    );
    assert!(machine.poll_events().is_empty());
    assert_eq!(machine.escalation_rung(), Some(&city()));
}

#[test]
fn manual_escalation_and_take_command() {
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    machine.poll_events();
    machine.handle_escalate("beyond county capacity", T0 + MINUTE_MS);
    let events = machine.poll_events();
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::Escalated { from, to, .. } if *from == county() && *to == city()
    )));
    assert_eq!(notified_codes(&events), vec![city().code]);

    assert!(
        machine
            .handle_take_command("999999", T0 + 2 * MINUTE_MS)
            .is_err()
    );
    assert!(
        machine
            .handle_take_command(&county().code, T0 + 2 * MINUTE_MS)
            .is_err()
    );
    machine
        .handle_take_command(&city().code, T0 + 2 * MINUTE_MS)
        .unwrap();
    let events = machine.poll_events();
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::LeadChanged { from, to, reason: LeadChangeReason::TakeCommand, .. }
            if *from == county() && *to == city()
    )));
    assert!(machine.is_acknowledged());
    assert_eq!(machine.lead(), Some(&city()));
}

// ---- reporting obligations -------------------------------------------------------------------

#[test]
fn grade_ii_production_safety_reports_climb_to_national_and_late_ones_are_marked() {
    let mut machine = machine_graded(Grade::II, "accident.hazardous_chemicals", county());
    let created: Vec<_> = machine
        .poll_events()
        .into_iter()
        .filter_map(|event| match event {
            EscalationEvent::ObligationCreated {
                id,
                kind,
                from,
                to,
                to_code,
                due_at_unix_ms,
                ..
            } => Some((id, kind, from, to, to_code, due_at_unix_ms)),
            _ => None,
        })
        .collect();
    let summary: Vec<_> = created
        .iter()
        .map(|(_, kind, from, to, to_code, due)| {
            (*kind, *from, *to, to_code.clone(), (due - T0) / MINUTE_MS)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                ReportKind::First,
                ReportTier::Unit,
                ReportTier::County,
                Some(county().code),
                60
            ),
            (
                ReportKind::First,
                ReportTier::County,
                ReportTier::City,
                Some(city().code),
                180
            ),
            (
                ReportKind::First,
                ReportTier::City,
                ReportTier::Province,
                Some(province().code),
                300
            ),
            (
                ReportKind::First,
                ReportTier::Province,
                ReportTier::National,
                Some(national().code),
                420
            ),
            // The final report (终报), 30 days on, per hop.
            (
                ReportKind::Final,
                ReportTier::Unit,
                ReportTier::County,
                Some(county().code),
                30 * 24 * 60
            ),
            (
                ReportKind::Final,
                ReportTier::County,
                ReportTier::City,
                Some(city().code),
                30 * 24 * 60
            ),
            (
                ReportKind::Final,
                ReportTier::City,
                ReportTier::Province,
                Some(province().code),
                30 * 24 * 60
            ),
            (
                ReportKind::Final,
                ReportTier::Province,
                ReportTier::National,
                Some(national().code),
                30 * 24 * 60
            ),
            // The first follow-ups (续报): T0 is 06:13:20 China time, the last first report is
            // due at 13:13:20, so the first fixed hour after it is 17:00 (646 2/3 minutes on).
            (
                ReportKind::FollowUp,
                ReportTier::Unit,
                ReportTier::County,
                Some(county().code),
                646
            ),
            (
                ReportKind::FollowUp,
                ReportTier::County,
                ReportTier::City,
                Some(city().code),
                646
            ),
            (
                ReportKind::FollowUp,
                ReportTier::City,
                ReportTier::Province,
                Some(province().code),
                646
            ),
            (
                ReportKind::FollowUp,
                ReportTier::Province,
                ReportTier::National,
                Some(national().code),
                646
            ),
        ]
    );
    let obligation_timers: BTreeMap<_, _> = machine
        .poll_timers()
        .into_iter()
        .filter_map(|arm| match arm.purpose {
            TimerPurpose::ObligationDue { obligation_id } => Some((obligation_id, arm)),
            _ => None,
        })
        .collect();
    assert_eq!(obligation_timers.len(), 12);

    // The unit reports on time.
    let (first_id, ..) = created[0].clone();
    machine.handle_report_submitted(first_id, T0 + 45 * MINUTE_MS);
    assert!(
        machine
            .poll_events()
            .contains(&EscalationEvent::ObligationMet {
                id: first_id,
                submitted_at_unix_ms: T0 + 45 * MINUTE_MS,
                late_by_ms: 0,
            })
    );
    assert!(
        machine
            .poll_cancelled_timers()
            .contains(&obligation_timers[&first_id].id)
    );

    // The county misses its 2 hours: the timer marks it late and escalates the incident once,
    // from the county to the city, naming the overdue report; then a late report is recorded.
    let (second_id, ..) = created[1].clone();
    let timer = obligation_timers[&second_id];
    machine.handle_timer(timer.id, timer.due_at_unix_ms);
    let events = machine.poll_events();
    assert!(
        matches!(
            events.as_slice(),
            [
                EscalationEvent::ObligationLate { id, to: ReportTier::City, .. },
                EscalationEvent::Escalated { from, to, reason: EscalationReason::ReportOverdue { obligation_id, .. }, .. },
                EscalationEvent::Notified { rung, .. },
            ] if *id == second_id && *obligation_id == second_id && *from == county() && *to == city() && *rung == city()
        ),
        "{events:?}"
    );
    let EscalationEvent::Escalated { reason, .. } = &events[1] else {
        unreachable!()
    };
    assert_eq!(
        reason.describe(),
        format!(
            "report first (obligation {}) from county to city 420100 overdue",
            second_id.0
        )
    );
    // Once per obligation: firing the timer again, or any later input, escalates no more.
    machine.handle_timer(timer.id, timer.due_at_unix_ms + MINUTE_MS);
    assert!(machine.poll_events().is_empty());
    machine.handle_report_submitted(second_id, timer.due_at_unix_ms + 20 * MINUTE_MS);
    assert!(
        machine
            .poll_events()
            .contains(&EscalationEvent::ObligationMet {
                id: second_id,
                submitted_at_unix_ms: timer.due_at_unix_ms + 20 * MINUTE_MS,
                late_by_ms: 20 * MINUTE_MS,
            })
    );
    assert_eq!(
        machine.handle_report_submitted(second_id, timer.due_at_unix_ms + 21 * MINUTE_MS),
        Handled::Ignored(Ignored::AlreadySubmitted)
    );

    // Much later every obligation due by then has ended met or late.
    machine.handle_acknowledge("x", T0 + DAY_MS);
    for obligation in machine.obligations() {
        if obligation.due_at_unix_ms <= T0 + DAY_MS {
            assert_ne!(obligation.status, ObligationStatus::Open, "{obligation:?}");
        }
    }
}

#[test]
fn casualty_changes_are_re_reported_only_inside_the_window() {
    let mut machine = machine_graded(Grade::IV, "accident.road_traffic", county());
    machine.poll_events();
    assert_eq!(
        machine.handle_casualties_changed(T0 + 8 * DAY_MS),
        Handled::Ignored(Ignored::OutsideRereportWindow)
    );
    let mut mine = machine_graded(Grade::IV, "accident.mine", county());
    // Any input rolls the follow-up schedule (a stale timer is one): that round is not a re-report.
    mine.handle_timer(TimerId(u64::MAX), T0 + 8 * DAY_MS);
    mine.poll_events();
    assert_eq!(
        mine.handle_casualties_changed(T0 + 8 * DAY_MS),
        Handled::Applied
    );
    let follow_ups = mine
        .poll_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                EscalationEvent::ObligationCreated {
                    kind: ReportKind::FollowUp,
                    ..
                }
            )
        })
        .count();
    assert_eq!(follow_ups, 2);
}

// ---- regrading -------------------------------------------------------------------------------

#[test]
fn upgrade_applies_at_once_and_downgrade_waits_for_confirmation() {
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    machine.poll_events();
    machine.poll_timers();

    machine.handle_regrade(Grade::II, T0 + 10 * MINUTE_MS);
    let events = machine.poll_events();
    assert_eq!(machine.grade(), Some(Grade::II));
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::LeadChanged { from, to, reason: LeadChangeReason::Regrade, .. }
            if *from == county() && *to == province()
    )));
    // The new lead is asked to acknowledge, and the reports now reach national.
    assert_eq!(notified_codes(&events), vec![province().code]);
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::ObligationCreated {
            to: ReportTier::National,
            kind: ReportKind::First,
            ..
        }
    )));
    assert!(!machine.poll_cancelled_timers().is_empty());

    machine.handle_regrade(Grade::III, T0 + 20 * MINUTE_MS);
    let events = machine.poll_events();
    assert!(matches!(
        events.as_slice(),
        [EscalationEvent::DowngradeProposed { to: Grade::III, .. }]
    ));
    assert_eq!(machine.grade(), Some(Grade::II));
    assert_eq!(machine.lead(), Some(&province()));
    assert_eq!(machine.pending_downgrade(), Some(Grade::III));

    machine.handle_confirm_downgrade("commander Wang", T0 + 30 * MINUTE_MS);
    let events = machine.poll_events();
    assert_eq!(machine.grade(), Some(Grade::III));
    assert!(events.iter().any(|event| matches!(
        event,
        EscalationEvent::LeadChanged { from, to, .. } if *from == province() && *to == city()
    )));
    assert_eq!(
        machine.handle_confirm_downgrade("again", T0 + 31 * MINUTE_MS),
        Handled::Ignored(Ignored::NoPendingDowngrade)
    );
}

// ---- closing ---------------------------------------------------------------------------------

#[test]
fn closing_cancels_every_timer_waives_unmet_reports_and_refuses_later_inputs() {
    let mut machine = machine_graded(Grade::II, "accident.hazardous_chemicals", county());
    machine.poll_events();
    let armed = machine.poll_timers();
    assert!(!chain_timers(&armed).is_empty());
    assert!(
        armed
            .iter()
            .any(|arm| matches!(arm.purpose, TimerPurpose::ObligationDue { .. }))
    );
    // The unit's first report to the county (due at 60 minutes) is made in time.
    let first = machine
        .obligations()
        .find(|o| o.kind == ReportKind::First && o.to == ReportTier::County)
        .unwrap()
        .id;
    assert_eq!(
        machine.handle_report_submitted(first, T0 + 30 * MINUTE_MS),
        Handled::Applied
    );
    machine.poll_events();
    machine.poll_cancelled_timers();
    let pending_before: BTreeSet<TimerId> = machine.pending_timers().map(|arm| arm.id).collect();
    assert!(!pending_before.is_empty());

    // Closed at 200 minutes: the county's report to the city (due at 180) is overdue by then.
    let closed_at = T0 + 200 * MINUTE_MS;
    assert_eq!(
        machine.handle_close("feed resumed", closed_at),
        Handled::Applied
    );
    assert_eq!(machine.pending_timers().count(), 0, "every timer cancelled");
    let cancelled: BTreeSet<TimerId> = machine.poll_cancelled_timers().into_iter().collect();
    assert_eq!(cancelled, pending_before);
    assert!(machine.poll_timers().is_empty());
    let events = machine.poll_events();
    assert!(matches!(
        events.last(),
        Some(EscalationEvent::Closed { reason, at_unix_ms }) if reason == "feed resumed" && *at_unix_ms == closed_at
    ));
    let late: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            EscalationEvent::ObligationLate { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let waived: BTreeSet<_> = events
        .iter()
        .filter_map(|event| match event {
            EscalationEvent::ObligationWaived { id, at_unix_ms } => {
                assert_eq!(*at_unix_ms, closed_at);
                Some(*id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1, "{events:?}");
    assert!(waived.contains(&late[0]), "a late report is waived too");
    assert!(!events.iter().any(is_chain_event), "{events:?}");
    for obligation in machine.obligations() {
        if obligation.id == first {
            assert!(matches!(obligation.status, ObligationStatus::Met { .. }));
            assert!(!waived.contains(&obligation.id));
        } else {
            assert_eq!(
                obligation.status,
                ObligationStatus::Waived {
                    waived_at_unix_ms: closed_at
                },
                "{obligation:?}"
            );
            assert!(waived.contains(&obligation.id));
            assert_eq!(obligation.was_late, obligation.id == late[0]);
        }
    }
    let closure = machine.closure().unwrap();
    assert_eq!(
        (closure.reason.as_str(), closure.at_unix_ms),
        ("feed resumed", closed_at)
    );
    assert!(machine.is_closed());
    assert_eq!(machine.lead(), Some(&county()), "the lead stays on record");

    // Nothing moves a closed machine: every input is refused, with no output.
    let later = closed_at + MINUTE_MS;
    let closed = Handled::Ignored(Ignored::Closed);
    for id in &pending_before {
        assert_eq!(machine.handle_timer(*id, later), closed);
    }
    assert_eq!(machine.handle_acknowledge("officer", later), closed);
    assert_eq!(machine.handle_escalate("by hand", later), closed);
    assert_eq!(machine.handle_report_submitted(first, later), closed);
    let open_one = machine.obligations().find(|o| o.id != first).unwrap().id;
    assert_eq!(machine.handle_report_submitted(open_one, later), closed);
    assert_eq!(machine.handle_regrade(Grade::I, later), closed);
    assert_eq!(machine.handle_confirm_downgrade("officer", later), closed);
    assert_eq!(machine.handle_casualties_changed(later), closed);
    assert_eq!(machine.handle_take_command(&city().code, later), Ok(closed));
    assert_eq!(
        machine.handle_graded(graded(Some(Grade::I), "accident.mine", county()), later),
        Ok(closed)
    );
    assert_eq!(machine.handle_close("again", later), closed);
    assert!(machine.poll_events().is_empty());
    assert!(machine.poll_timers().is_empty());
    assert!(machine.poll_cancelled_timers().is_empty());
    assert_eq!(machine.grade(), Some(Grade::II));
    assert_eq!(machine.closure().unwrap().reason, "feed resumed");

    // The closure survives serde; a machine stored before closing existed reads as open.
    let json = serde_json::to_string(&machine).unwrap();
    let back: EscalationMachine = serde_json::from_str(&json).unwrap();
    assert_eq!(back, machine);
    let mut old: serde_json::Value =
        serde_json::to_value(machine_graded(Grade::IV, "accident.mine", county())).unwrap();
    old.as_object_mut().unwrap().remove("closed");
    let old: EscalationMachine = serde_json::from_value(old).unwrap();
    assert!(!old.is_closed());
}

#[test]
fn an_acknowledged_incident_closes_too_and_an_ungraded_machine_can_never_be_graded_after() {
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    machine.handle_acknowledge("officer", T0 + MINUTE_MS);
    machine.poll_events();
    machine.poll_timers();
    machine.poll_cancelled_timers();
    // Only report timers are left after the ack.
    assert!(
        machine
            .pending_timers()
            .all(|arm| matches!(arm.purpose, TimerPurpose::ObligationDue { .. }))
    );
    assert_eq!(
        machine.handle_close("alert cancelled", T0 + 2 * MINUTE_MS),
        Handled::Applied
    );
    assert_eq!(machine.pending_timers().count(), 0);
    assert!(machine.is_acknowledged());
    assert!(
        machine
            .obligations()
            .all(|o| matches!(o.status, ObligationStatus::Waived { .. }) && !o.was_late)
    );

    let mut ungraded = EscalationMachine::new(EscalationPolicy::embedded_default());
    assert_eq!(ungraded.handle_close("withdrawn", T0), Handled::Applied);
    assert!(matches!(
        ungraded.poll_events().as_slice(),
        [EscalationEvent::Closed { .. }]
    ));
    assert_eq!(
        ungraded.handle_graded(graded(Some(Grade::IV), "accident.mine", county()), T0),
        Ok(Handled::Ignored(Ignored::Closed))
    );
    assert!(ungraded.poll_timers().is_empty());
    assert_eq!(ungraded.obligations().count(), 0);
    assert_eq!(
        ungraded.handle_acknowledge("officer", T0),
        Handled::Ignored(Ignored::Closed)
    );
}

// ---- seeded simulation -----------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the simulated host knows, and the invariants it checks after every input.
struct Host {
    machine: EscalationMachine,
    now: i64,
    armed: BTreeMap<TimerId, TimerArm>,
    fired_or_cancelled: BTreeSet<TimerId>,
    lead: Rung,
    acked_generations: BTreeSet<u64>,
    met: BTreeSet<u32>,
    late: BTreeSet<u32>,
    overdue_escalated: BTreeSet<u32>,
}

impl Host {
    fn drain(&mut self, context: &str) -> Vec<EscalationEvent> {
        for arm in self.machine.poll_timers() {
            assert!(
                self.armed.insert(arm.id, arm).is_none(),
                "{context}: timer id reused"
            );
        }
        for id in self.machine.poll_cancelled_timers() {
            assert!(
                self.armed.contains_key(&id),
                "{context}: cancelled an unknown timer"
            );
            self.fired_or_cancelled.insert(id);
        }
        let events = self.machine.poll_events();
        for event in &events {
            match event {
                EscalationEvent::LeadChanged { from, to, .. } => {
                    assert_eq!(*from, self.lead, "{context}: handover from a non-lead");
                    assert_ne!(from, to, "{context}: handover to itself");
                    self.lead = to.clone();
                }
                EscalationEvent::Acknowledged {
                    chain_generation, ..
                } => {
                    self.acked_generations.insert(*chain_generation);
                }
                EscalationEvent::Notified {
                    chain_generation, ..
                }
                | EscalationEvent::Escalated {
                    chain_generation, ..
                } => {
                    if let EscalationEvent::Escalated {
                        reason: EscalationReason::ReportOverdue { obligation_id, .. },
                        ..
                    } = event
                    {
                        assert!(
                            self.overdue_escalated.insert(obligation_id.0),
                            "{context}: obligation escalated twice"
                        );
                        assert!(
                            self.late.contains(&obligation_id.0),
                            "{context}: escalated for an obligation not late"
                        );
                    }
                    assert!(
                        !self.acked_generations.contains(chain_generation),
                        "{context}: notification or escalation after the ack of its step: {event:?}"
                    );
                }
                EscalationEvent::ObligationMet { id, .. } => {
                    assert!(self.met.insert(id.0), "{context}: obligation met twice");
                }
                EscalationEvent::ObligationLate { id, .. } => {
                    assert!(self.late.insert(id.0), "{context}: obligation late twice");
                }
                _ => {}
            }
        }
        assert_eq!(
            self.machine.lead(),
            Some(&self.lead),
            "{context}: lead mismatch"
        );
        for obligation in self.machine.obligations() {
            if obligation.due_at_unix_ms <= self.now {
                assert_ne!(
                    obligation.status,
                    ObligationStatus::Open,
                    "{context}: overdue obligation still open: {obligation:?}"
                );
            }
            if let ObligationStatus::Met {
                submitted_at_unix_ms,
                late_by_ms,
            } = obligation.status
            {
                assert_eq!(
                    late_by_ms,
                    (submitted_at_unix_ms - obligation.due_at_unix_ms).max(0),
                    "{context}"
                );
            }
        }
        events
    }
}

fn is_overdue_escalation(event: &EscalationEvent) -> bool {
    matches!(
        event,
        EscalationEvent::Escalated {
            reason: EscalationReason::ReportOverdue { .. },
            ..
        }
    )
}

fn simulate(seed: u64) {
    let mut rng = XorShift::new(seed);
    let codes = [
        "accident.mine",
        "accident.road_traffic",
        "public_health.epidemic",
        "natural.flood",
        "social_safety.mass_incident",
    ];
    let code = codes[rng.below(codes.len() as u64) as usize];
    let grade = if code.starts_with("social_safety") {
        None
    } else {
        Grade::from_number(1 + rng.below(4) as u8)
    };
    let lead = ladder()[rng.below(2) as usize].clone();
    let mut host = Host {
        machine: EscalationMachine::new(EscalationPolicy::embedded_default()),
        now: T0,
        armed: BTreeMap::new(),
        fired_or_cancelled: BTreeSet::new(),
        lead: lead.clone(),
        acked_generations: BTreeSet::new(),
        met: BTreeSet::new(),
        late: BTreeSet::new(),
        overdue_escalated: BTreeSet::new(),
    };
    host.machine
        .handle_graded(graded(grade, code, lead), T0)
        .unwrap();
    host.drain("graded");

    for round in 0..200 {
        let context = format!("round {round}");
        host.now += rng.below(20) as i64 * MINUTE_MS / 2;
        match rng.below(10) {
            // Fire a timer: usually a pending one, sometimes a stale or duplicate one.
            0..=3 => {
                let ids: Vec<TimerId> = host.armed.keys().copied().collect();
                if ids.is_empty() {
                    continue;
                }
                let id = ids[rng.below(ids.len() as u64) as usize];
                let arm = host.armed[&id];
                host.now = host.now.max(arm.due_at_unix_ms);
                let stale = host.fired_or_cancelled.contains(&id);
                let acked_before = host.machine.is_acknowledged();
                let outcome = host.machine.handle_timer(id, host.now);
                host.fired_or_cancelled.insert(id);
                let events = host.drain(&context);
                // Any input sweeps the reports: overdue ones are marked late and each escalates
                // once (restarting the chain one level up, even after an ack), and the follow-up
                // schedule rolls on. Nothing else may move.
                let overdue = events.iter().any(is_overdue_escalation);
                if stale {
                    assert_eq!(outcome, Handled::Ignored(Ignored::StaleTimer), "{context}");
                    assert!(
                        events.iter().all(|e| matches!(
                            e,
                            EscalationEvent::ObligationLate { .. }
                                | EscalationEvent::ObligationCreated {
                                    kind: ReportKind::FollowUp,
                                    ..
                                }
                        ) || is_overdue_escalation(e)
                            || (overdue && is_chain_event(e))),
                        "{context}: a stale or duplicate timer had an effect: {events:?}"
                    );
                }
                if acked_before && !overdue {
                    assert!(
                        !events.iter().any(is_chain_event),
                        "{context}: chain moved after an ack: {events:?}"
                    );
                }
            }
            4 => {
                host.machine.handle_acknowledge("officer", host.now);
                let events = host.drain(&context);
                // Reports that fell overdue before the ack escalate first; after it, nothing.
                let acked_at = events
                    .iter()
                    .position(|e| matches!(e, EscalationEvent::Acknowledged { .. }))
                    .unwrap_or(0);
                assert!(
                    !events[acked_at..].iter().any(is_chain_event),
                    "{context}: {events:?}"
                );
                if !events.iter().any(is_overdue_escalation) {
                    assert!(!events.iter().any(is_chain_event), "{context}");
                }
                assert!(host.machine.is_acknowledged(), "{context}");
                assert!(
                    !host
                        .machine
                        .pending_timers()
                        .any(|arm| matches!(arm.purpose, TimerPurpose::ChainStep { .. })),
                    "{context}: a chain timer survived the ack"
                );
            }
            5 => {
                host.machine.handle_escalate("sim", host.now);
                host.drain(&context);
            }
            6 => {
                let new_grade = Grade::from_number(1 + rng.below(4) as u8).unwrap();
                host.machine.handle_regrade(new_grade, host.now);
                host.drain(&context);
                if rng.below(2) == 0 {
                    host.machine.handle_confirm_downgrade("sim", host.now);
                    host.drain(&context);
                }
            }
            7 => {
                let ids: Vec<_> = host.machine.obligations().map(|o| o.id).collect();
                if !ids.is_empty() {
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    host.machine.handle_report_submitted(id, host.now);
                    host.drain(&context);
                }
            }
            8 => {
                let rung = &ladder()[rng.below(4) as usize];
                let _ = host.machine.handle_take_command(&rung.code, host.now);
                host.drain(&context);
            }
            _ => {
                host.machine.handle_casualties_changed(host.now);
                host.drain(&context);
            }
        }
    }

    // Deliver every remaining timer in due order: afterwards every obligation is met or late.
    let mut pending: Vec<TimerArm> = host.machine.pending_timers().copied().collect();
    let mut guard = 0;
    while let Some(arm) = pending.iter().min_by_key(|arm| arm.due_at_unix_ms).copied() {
        guard += 1;
        assert!(guard < 10_000, "timers never run out");
        host.now = host.now.max(arm.due_at_unix_ms);
        host.machine.handle_timer(arm.id, host.now);
        host.drain("final delivery");
        pending = host.machine.pending_timers().copied().collect();
    }
    for obligation in host.machine.obligations() {
        assert!(
            matches!(
                obligation.status,
                ObligationStatus::Met { .. } | ObligationStatus::Late
            ) || (obligation.kind == ReportKind::FollowUp
                && matches!(obligation.status, ObligationStatus::Waived { .. })),
            "obligation never ended (only follow-ups are waived, by the final report): {obligation:?}"
        );
    }
}

#[test]
fn seeded_simulation_keeps_the_invariants() {
    let seeds: Vec<u64> = match std::env::var("MUSTER_SEED") {
        Ok(seed) => vec![seed.parse().expect("MUSTER_SEED must be an integer")],
        Err(_) => (1..=64).collect(),
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| simulate(seed));
        if let Err(panic) = result {
            eprintln!(
                "escalation simulation failed with seed {seed}; rerun with MUSTER_SEED={seed}"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

// ---- report schedules, overdue escalation, skip-level reports --------------------------------

/// 2023-11-15 00:00 China time (UTC+8), in Unix ms; T0 is 06:13:20 that morning.
const CHINA_MIDNIGHT: i64 = 1_699_977_600_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

#[test]
fn follow_up_hours_are_the_next_fixed_local_hours_at_every_boundary() {
    let schedule = domain::escalation::FollowUpSchedule {
        local_hours: vec![8, 17],
        utc_offset_minutes: 480,
    };
    for (after, expected) in [
        // Just after midnight: 08:00 the same day.
        (CHINA_MIDNIGHT, CHINA_MIDNIGHT + 8 * HOUR_MS),
        // One ms before 08:00: 08:00; exactly 08:00: strictly after, so 17:00.
        (
            CHINA_MIDNIGHT + 8 * HOUR_MS - 1,
            CHINA_MIDNIGHT + 8 * HOUR_MS,
        ),
        (CHINA_MIDNIGHT + 8 * HOUR_MS, CHINA_MIDNIGHT + 17 * HOUR_MS),
        (
            CHINA_MIDNIGHT + 17 * HOUR_MS - 1,
            CHINA_MIDNIGHT + 17 * HOUR_MS,
        ),
        // 17:00 and later: 08:00 the next day.
        (CHINA_MIDNIGHT + 17 * HOUR_MS, CHINA_MIDNIGHT + 32 * HOUR_MS),
        (
            CHINA_MIDNIGHT + 24 * HOUR_MS - 1,
            CHINA_MIDNIGHT + 32 * HOUR_MS,
        ),
        // 23:59 UTC is 07:59 China time the next day: the offset matters.
        (
            CHINA_MIDNIGHT + 8 * HOUR_MS - MINUTE_MS,
            CHINA_MIDNIGHT + 8 * HOUR_MS,
        ),
    ] {
        assert_eq!(schedule.next_after(after), expected, "after {after}");
    }
    // Before 1970 too (euclidean division).
    let utc = domain::escalation::FollowUpSchedule {
        local_hours: vec![0],
        utc_offset_minutes: 0,
    };
    assert_eq!(utc.next_after(-1), 0);
    assert_eq!(
        utc.next_after(CHINA_MIDNIGHT + 8 * HOUR_MS - MINUTE_MS),
        CHINA_MIDNIGHT + 8 * HOUR_MS
    );
}

#[test]
fn follow_ups_roll_at_fixed_hours_until_the_final_report_which_ends_them() {
    // Graded at 06:13:20 China time; grade IV production safety reports to the county and city.
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    machine.poll_events();
    let follow_ups = |machine: &EscalationMachine| -> Vec<(u32, i64, ObligationStatus)> {
        machine
            .obligations()
            .filter(|o| o.kind == ReportKind::FollowUp)
            .map(|o| (o.id.0, o.due_at_unix_ms, o.status))
            .collect()
    };
    let seventeen = CHINA_MIDNIGHT + 17 * HOUR_MS;
    let first = follow_ups(&machine);
    assert_eq!(first.len(), 2, "one per hop: {first:?}");
    assert!(first.iter().all(|(_, due, _)| *due == seventeen));

    // Both first reports and both 17:00 follow-ups are made on time.
    let ids: Vec<_> = machine
        .obligations()
        .filter(|o| matches!(o.kind, ReportKind::First | ReportKind::FollowUp))
        .map(|o| o.id)
        .collect();
    for id in ids {
        assert_eq!(
            machine.handle_report_submitted(id, T0 + 30 * MINUTE_MS),
            Handled::Applied
        );
    }
    // At 17:00 the next round is created for 08:00 the next day (the timer of a met report is
    // gone, so any input at or after the slot rolls the schedule).
    machine.handle_timer(TimerId(u64::MAX), seventeen);
    let next: Vec<_> = follow_ups(&machine)
        .into_iter()
        .filter(|(_, _, status)| *status == ObligationStatus::Open)
        .collect();
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(
        next.iter()
            .all(|(_, due, _)| *due == CHINA_MIDNIGHT + 32 * HOUR_MS)
    );
    assert!(
        !machine
            .poll_events()
            .iter()
            .any(|e| matches!(e, EscalationEvent::Escalated { .. })),
        "nothing overdue, nothing escalated"
    );

    // The final report is made: open follow-ups are waived and none is scheduled again.
    let finals: Vec<_> = machine
        .obligations()
        .filter(|o| o.kind == ReportKind::Final)
        .map(|o| o.id)
        .collect();
    assert_eq!(finals.len(), 2);
    for id in finals {
        machine.handle_report_submitted(id, seventeen + HOUR_MS);
    }
    let events = machine.poll_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, EscalationEvent::ObligationWaived { .. }))
            .count(),
        2,
        "{events:?}"
    );
    machine.handle_timer(TimerId(u64::MAX), seventeen + 5 * DAY_MS);
    assert!(
        follow_ups(&machine)
            .iter()
            .all(|(_, _, status)| *status != ObligationStatus::Open),
        "no follow-ups after the final report"
    );
}

#[test]
fn follow_ups_stop_before_the_final_report_is_due() {
    let mut machine = machine_graded(Grade::IV, "accident.mine", county());
    let final_due = T0 + 30 * DAY_MS;
    // Deliver every timer in due order, reporting nothing: the rounds run out before the final
    // report's due time, and each overdue report escalated once, until the top.
    let mut guard = 0;
    while let Some(arm) = machine
        .pending_timers()
        .min_by_key(|arm| arm.due_at_unix_ms)
        .copied()
    {
        guard += 1;
        assert!(guard < 1_000);
        machine.handle_timer(arm.id, arm.due_at_unix_ms);
    }
    let rounds: BTreeSet<i64> = machine
        .obligations()
        .filter(|o| o.kind == ReportKind::FollowUp)
        .map(|o| o.due_at_unix_ms)
        .collect();
    // 17:00 on day one, then 08:00 and 17:00 each day until before day 30's 06:13:20.
    assert_eq!(rounds.len(), 59, "{rounds:?}");
    assert!(rounds.iter().all(|due| *due < final_due));
    let events = machine.poll_events();
    let overdue: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EscalationEvent::Escalated {
                reason: EscalationReason::ReportOverdue { obligation_id, .. },
                to,
                ..
            } => Some((obligation_id.0, to.clone())),
            _ => None,
        })
        .collect();
    // Overdue reports escalate (beside the acknowledgement chain) until the top, each once.
    assert!(!overdue.is_empty());
    let distinct: BTreeSet<u32> = overdue.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), overdue.len(), "{overdue:?}");
    assert_eq!(machine.escalation_rung(), Some(&national()));
    for obligation in machine.obligations() {
        assert_eq!(obligation.status, ObligationStatus::Late, "{obligation:?}");
    }
}

#[test]
fn casualty_re_report_window_is_30_days_and_7_for_road_traffic_and_fire_at_the_boundary() {
    for (code, days) in [
        ("accident.road_traffic", 7),
        ("accident.fire", 7),
        ("accident.mine", 30),
        ("accident.hazardous_chemicals", 30),
    ] {
        for (offset, inside) in [(-1, true), (0, false)] {
            let mut machine = machine_graded(Grade::IV, code, county());
            let at = T0 + days * DAY_MS + offset;
            // Roll the schedule first so only the re-reports count.
            machine.handle_timer(TimerId(u64::MAX), at);
            machine.poll_events();
            let handled = machine.handle_casualties_changed(at);
            if inside {
                assert_eq!(handled, Handled::Applied, "{code} {offset}");
                let created = machine
                    .poll_events()
                    .iter()
                    .filter(|e| {
                        matches!(
                            e,
                            EscalationEvent::ObligationCreated {
                                kind: ReportKind::FollowUp,
                                ..
                            }
                        )
                    })
                    .count();
                assert_eq!(created, 2, "{code}: one re-report per hop");
            } else {
                assert_eq!(
                    handled,
                    Handled::Ignored(Ignored::OutsideRereportWindow),
                    "{code} {offset}"
                );
            }
        }
    }
}

#[test]
fn an_overdue_report_escalates_an_acknowledged_incident_once() {
    let mut machine = machine_graded(Grade::III, "accident.mine", county());
    machine.handle_acknowledge("duty officer", T0 + MINUTE_MS);
    machine.poll_events();
    // The unit → county first report (60 min) passes unreported.
    machine.handle_report_submitted(domain::escalation::ObligationId(999), T0 + 61 * MINUTE_MS);
    let events = machine.poll_events();
    let escalated: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, EscalationEvent::Escalated { .. }))
        .collect();
    assert_eq!(escalated.len(), 1, "{events:?}");
    assert!(matches!(
        escalated[0],
        EscalationEvent::Escalated { from, to, reason: EscalationReason::ReportOverdue { to: ReportTier::County, .. }, .. }
            if *from == county() && *to == city()
    ));
    // The city is asked to acknowledge now; the chain runs again.
    assert!(!machine.is_acknowledged());
    assert_eq!(machine.escalation_rung(), Some(&city()));
    // The same obligation never escalates again.
    machine.handle_acknowledge("city officer", T0 + 62 * MINUTE_MS);
    machine.handle_report_submitted(domain::escalation::ObligationId(999), T0 + 63 * MINUTE_MS);
    assert!(
        !machine
            .poll_events()
            .iter()
            .any(|e| matches!(e, EscalationEvent::Escalated { .. }))
    );
}

#[test]
fn closing_marks_overdue_reports_late_without_escalating() {
    let mut machine = machine_graded(Grade::III, "accident.mine", county());
    machine.poll_events();
    machine.handle_close("over", T0 + 61 * MINUTE_MS);
    let events = machine.poll_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EscalationEvent::ObligationLate { .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, EscalationEvent::Escalated { .. })),
        "{events:?}"
    );
}

#[test]
fn a_skip_level_report_is_a_met_obligation_and_an_audited_event() {
    let mut machine = machine_graded(Grade::III, "accident.mine", county());
    machine.poll_events();
    machine.poll_timers();
    let handled = machine
        .handle_skip_level_report(
            &county().code,
            &province().code,
            "王芳",
            "city line down",
            T0 + 10 * MINUTE_MS,
        )
        .unwrap();
    assert_eq!(handled, Handled::Applied);
    let events = machine.poll_events();
    let Some(EscalationEvent::SkipLevelReported {
        obligation_id,
        officer,
        from,
        to,
        skipped,
        reason,
        ..
    }) = events
        .iter()
        .find(|e| matches!(e, EscalationEvent::SkipLevelReported { .. }))
    else {
        panic!("no skip_level_reported: {events:?}");
    };
    assert_eq!(
        (officer.as_str(), from, to, skipped, reason.as_str()),
        (
            "王芳",
            &county(),
            &province(),
            &vec![city()],
            "city line down"
        )
    );
    let obligation = machine
        .obligations()
        .find(|o| o.id == *obligation_id)
        .unwrap();
    assert_eq!(obligation.kind, ReportKind::SkipLevel);
    assert_eq!(
        (
            obligation.from,
            obligation.to,
            obligation.to_code.as_deref()
        ),
        (ReportTier::County, ReportTier::Province, Some("420000"))
    );
    assert_eq!(
        obligation.status,
        ObligationStatus::Met {
            submitted_at_unix_ms: T0 + 10 * MINUTE_MS,
            late_by_ms: 0
        }
    );
    // No timer for a report already made, and the chain did not move.
    assert!(machine.poll_timers().is_empty());
    assert_eq!(machine.escalation_rung(), Some(&county()));

    // To the parent is not a skip; below, sideways or off the chain is refused; at the top
    // nothing can be skipped.
    for (from, to, needle) in [
        ("420102", "420100", "above the parent 420100"),
        ("420100", "420102", "above the parent 420000"),
        ("420102", "430000", "not an ancestor"),
        ("999999", "000000", "neither the lead"),
        ("420000", "000000", "above the parent 000000"),
        ("000000", "000000", "top of the chain"),
    ] {
        let error = machine
            .handle_skip_level_report(from, to, "x", "y", T0 + 11 * MINUTE_MS)
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{from} → {to}: {error}");
    }
    // A closed incident takes none.
    machine.handle_close("over", T0 + 12 * MINUTE_MS);
    assert_eq!(
        machine.handle_skip_level_report("420102", "420000", "x", "y", T0 + 13 * MINUTE_MS),
        Ok(Handled::Ignored(Ignored::Closed))
    );
}

#[test]
fn follow_up_schedule_errors_name_file_line_and_column() {
    let rule = |follow_up: &str, final_days: &str| {
        format!(
            "{MINIMAL}[[obligation]]\nid = \"x\"\nversion = 1\nsource = \"s\"\nclass = \"accident\"\n\
             reach = {{ I = \"county\" }}\n{final_days}follow_up = {follow_up}\n\
             [[obligation.hop]]\nfrom = \"unit\"\nto = \"county\"\nminutes = 60\n"
        )
    };
    let ok = rule(
        "{ local_hours = [8, 17], utc_offset_minutes = 480 }",
        "final_report_within_days = 30\n",
    );
    assert!(EscalationPolicy::from_toml("ok.toml", &ok).is_ok());
    for (follow_up, final_days, needle) in [
        (
            "{ local_hours = [8, 24], utc_offset_minutes = 480 }",
            "final_report_within_days = 30\n",
            "bad.toml:15:33: obligation \"x\": hour 24",
        ),
        (
            "{ local_hours = [17, 8], utc_offset_minutes = 480 }",
            "final_report_within_days = 30\n",
            "bad.toml:15:34: obligation \"x\": follow_up.local_hours must ascend",
        ),
        (
            "{ local_hours = [], utc_offset_minutes = 480 }",
            "final_report_within_days = 30\n",
            "bad.toml:15:29: obligation \"x\": follow_up.local_hours needs at least one hour",
        ),
        (
            "{ local_hours = [8], utc_offset_minutes = 900 }",
            "final_report_within_days = 30\n",
            "bad.toml:15:55: obligation \"x\": utc_offset_minutes 900",
        ),
        (
            "{ local_hours = [8], utc_offset_minutes = 480 }",
            "",
            "bad.toml:14:13: obligation \"x\": follow-ups run until the final report",
        ),
    ] {
        let message = policy_error(&rule(follow_up, final_days));
        assert!(message.starts_with(needle), "{message}");
    }
}
