//! The escalation host over a real sled store: grading stores the machine and its timers in one
//! commit, due timers fire once with their effect, an acknowledgement cancels the chain's timers,
//! and a timer that lost the race to an acknowledgement does nothing; a close deletes every timer
//! record with the machine's stop.

mod common;

use std::collections::BTreeMap;

use domain::escalation::EscalationPolicy;
use domain::event::IncidentReport;
use domain::grade::{Facts, Grade};
use domain::jurisdiction::Level;
use domain::region::Region;
use escalation::command::{
    CommandRecord, TimerRecord, command_key, new_record, prepare_close, stage, timer_prefix,
    transition,
};
use escalation::timers::fire_due;
use store::{Commit, Store};

const NS: &str = "live";
const INCIDENT: &str = "INC-20260101-1";
/// A policy minute lasts 10 ms: grade IV's 30-minute ack deadline is 300 ms.
const MINUTE_MS: i64 = 10;

fn report(deaths: u32) -> IncidentReport {
    common::chemical_leak(deaths, "test")
}

/// A store holding a freshly graded grade IV incident, as the grader commits it.
fn graded_store(dir: &std::path::Path, region: &Region) -> Store {
    let store = Store::open(dir).unwrap();
    let graded = escalation::grade_incident(region, &report(1)).unwrap();
    assert_eq!(graded.grade, Some(Grade::IV));
    assert_eq!(graded.lead_level, Level::County);
    let policy = EscalationPolicy::embedded_default().with_minute_ms(MINUTE_MS);
    let now = lifecycle::unix_ms_now();
    let mut record = new_record(region, &policy, NS, INCIDENT, &graded, now).unwrap();
    let mut commit = Commit::new();
    commit.expect_raw(command_key(NS, INCIDENT), None);
    stage(&mut commit, region, &BTreeMap::new(), &mut record, now).unwrap();
    store.commit(&commit).unwrap();
    store
}

fn load(store: &Store) -> CommandRecord {
    store.get(&command_key(NS, INCIDENT)).unwrap().unwrap()
}

fn timers(store: &Store) -> Vec<(String, TimerRecord)> {
    store.scan_prefix(&timer_prefix(NS)).unwrap()
}

fn outbox_types(store: &Store) -> Vec<String> {
    store
        .outbox_pending(1000)
        .unwrap()
        .into_iter()
        .map(|event| event.subject.rsplit('.').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_due_ack_timer_escalates_once_and_its_record_goes_in_the_same_commit() {
    let dir = test_support::temp_dir("escalation-timers-");
    let region = Region::embedded_default();
    let store = graded_store(dir.path(), &region);
    let record = load(&store);
    let stored = timers(&store);
    // One chain timer plus one per reporting obligation, all mirrored in the store.
    assert_eq!(stored.len(), record.machine.pending_timers().count());
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "due order");
    let ack_due = record.ack_due_at_unix_ms().expect("chain timer armed");
    assert_eq!(
        record.machine.escalation_rung().unwrap().level,
        Level::County
    );

    // Nothing is due before the deadline.
    assert_eq!(fire_due(&store, &region, NS, ack_due - 1).unwrap(), 0);
    assert_eq!(fire_due(&store, &region, NS, ack_due).unwrap(), 1);
    let record = load(&store);
    assert_eq!(record.machine.escalation_rung().unwrap().level, Level::City);
    assert_eq!(record.escalation_count, 1);
    assert!(outbox_types(&store).contains(&"escalated".to_string()));
    // The fired record is gone; the next chain timer is stored; firing again does nothing.
    assert_eq!(
        timers(&store).len(),
        record.machine.pending_timers().count()
    );
    assert_eq!(fire_due(&store, &region, NS, ack_due).unwrap(), 0);
    assert_eq!(load(&store).escalation_count, 1);
}

#[test]
fn an_ack_cancels_the_chain_timers_and_a_timer_that_lost_the_race_does_nothing() {
    let dir = test_support::temp_dir("escalation-timers-");
    let region = Region::embedded_default();
    let store = graded_store(dir.path(), &region);
    let record = load(&store);
    let ack_due = record.ack_due_at_unix_ms().unwrap();
    // The timer task scanned before the ack committed: it holds the chain timer's record.
    let raced = timers(&store)
        .into_iter()
        .find(|(_, timer)| timer.due_at_unix_ms == ack_due)
        .unwrap();

    let (_, acked) = transition(
        &store,
        &region,
        NS,
        INCIDENT,
        |_| {},
        |record, now| Ok(record.machine.handle_acknowledge("officer Wang", now)),
    )
    .unwrap();
    assert!(acked.machine.is_acknowledged());
    assert_eq!(acked.acknowledged_by.as_deref(), Some("officer Wang"));
    assert_eq!(acked.ack_due_at_unix_ms(), None);
    assert!(!timers(&store).iter().any(|(key, _)| *key == raced.0));
    assert!(outbox_types(&store).contains(&"acknowledged".to_string()));

    // Put the raced record back, as if its deletion had not been seen, and fire everything.
    let mut commit = Commit::new();
    commit.put(raced.0.clone(), &raced.1).unwrap();
    store.commit(&commit).unwrap();
    // Up to the raced timer's due time (before any report is due), nothing escalates.
    fire_due(&store, &region, NS, ack_due).unwrap();
    let record = load(&store);
    assert_eq!(record.escalation_count, 0, "no escalation after an ack");
    assert!(!outbox_types(&store).contains(&"escalated".to_string()));
    assert!(!timers(&store).iter().any(|(key, _)| *key == raced.0));
    // Much later the reports nobody made are overdue: each escalates once (a reporting failure,
    // not the acknowledgement chain), and every fired record is removed.
    let far = lifecycle::unix_ms_now() + 365 * 24 * 3_600_000;
    // Each pass may arm new chain timers (an overdue report restarts the chain one level up).
    for _pass in 0..1_000 {
        if fire_due(&store, &region, NS, far).unwrap() == 0 {
            break;
        }
    }
    let record = load(&store);
    assert!(
        timers(&store).iter().all(|(_, t)| t.due_at_unix_ms > far),
        "every fired record is removed"
    );
    assert_eq!(
        timers(&store).len(),
        record.machine.pending_timers().count()
    );
    // Obligations whose timers fired are late; none is left open.
    assert!(
        record
            .machine
            .obligations()
            .all(|o| o.status != domain::escalation::ObligationStatus::Open)
    );
}

#[test]
fn a_close_deletes_every_timer_record_and_a_timer_that_lost_the_race_does_nothing() {
    let dir = test_support::temp_dir("escalation-timers-");
    let region = Region::embedded_default();
    let store = graded_store(dir.path(), &region);
    let before = load(&store);
    let stored = timers(&store);
    assert!(stored.len() > 1, "a chain timer and report timers");
    let outbox_before = outbox_types(&store);

    let now = lifecycle::unix_ms_now();
    let prepared = prepare_close(
        &store,
        &region,
        NS,
        INCIDENT,
        "feed:cap-quake",
        "every alert was cancelled",
        now,
    )
    .unwrap()
    .expect("an open machine has something to stop");
    let mut commit = prepared.commit;
    commit.processed("closed-1".to_string());
    store.commit(&commit).unwrap();

    assert!(timers(&store).is_empty(), "every timer record deleted");
    let record = load(&store);
    assert!(record.machine.is_closed());
    assert_eq!(record.machine.pending_timers().count(), 0);
    assert_eq!(record.ack_due_at_unix_ms(), None);
    assert_eq!(record.closed_by.as_deref(), Some("feed:cap-quake"));
    assert_eq!(
        record.machine.closure().unwrap().reason,
        "every alert was cancelled"
    );
    assert!(record.machine.obligations().all(|o| matches!(
        o.status,
        domain::escalation::ObligationStatus::Waived { .. }
    )));
    assert_eq!(record.lead_since_unix_ms, before.lead_since_unix_ms);
    // Intake announced the close; escalation adds no event of its own.
    assert_eq!(outbox_types(&store), outbox_before);

    // A redelivered close, and a close of an incident escalation never graded: nothing to do.
    assert!(
        prepare_close(&store, &region, NS, INCIDENT, "feed", "again", now + 1)
            .unwrap()
            .is_none()
    );
    assert!(
        prepare_close(&store, &region, NS, "INC-20260101-99", "feed", "gone", now)
            .unwrap()
            .is_none()
    );

    // The timer task scanned before the close committed: every raced record fires into nothing.
    let mut commit = Commit::new();
    for (key, timer) in &stored {
        commit.put(key.clone(), timer).unwrap();
    }
    store.commit(&commit).unwrap();
    let far = now + 365 * 24 * 3_600_000;
    fire_due(&store, &region, NS, far).unwrap();
    assert!(timers(&store).is_empty(), "every raced record is removed");
    let after = load(&store);
    assert_eq!(after.escalation_count, 0);
    assert_eq!(after.machine, record.machine);
    assert_eq!(outbox_types(&store), outbox_before);

    // An acknowledgement after the close changes nothing.
    let (handled, _) = transition(
        &store,
        &region,
        NS,
        INCIDENT,
        |_| {},
        |record, now| Ok(record.machine.handle_acknowledge("officer Wang", now)),
    )
    .unwrap();
    assert_eq!(
        handled,
        domain::escalation::Handled::Ignored(domain::escalation::Ignored::Closed)
    );
    assert_eq!(load(&store).acknowledged_by, None);
}

/// kill -9 mid-way: the service is dropped without any shutdown while timers are pending, and a
/// new instance opens the same sled directory. Every timer is still there and fires once: a due
/// chain timer escalates exactly once, however often the timer task runs after the restart.
#[test]
fn timers_survive_a_restart_and_fire_once_after_it() {
    let dir = test_support::temp_dir("escalation-timers-restart-");
    let region = Region::embedded_default();
    let (before, ack_due) = {
        let store = graded_store(dir.path(), &region);
        let record = load(&store);
        let before: Vec<String> = timers(&store).into_iter().map(|(key, _)| key).collect();
        // Dropped here with no flush and no drain: what the commit made durable is all there is.
        (before, record.ack_due_at_unix_ms().unwrap())
    };
    let store = Store::open(dir.path()).unwrap();
    let after: Vec<String> = timers(&store).into_iter().map(|(key, _)| key).collect();
    assert_eq!(after, before, "every timer record survives the restart");
    assert!(!after.is_empty());

    // The first pass after the restart fires the due chain timer; later passes (and a second
    // restart in between) fire nothing more for it.
    assert_eq!(fire_due(&store, &region, NS, ack_due).unwrap(), 1);
    drop(store);
    let store = Store::open_after_close(dir.path()).unwrap();
    assert_eq!(fire_due(&store, &region, NS, ack_due).unwrap(), 0);
    assert_eq!(fire_due(&store, &region, NS, ack_due).unwrap(), 0);
    let record = load(&store);
    assert_eq!(record.escalation_count, 1, "escalated exactly once");
    assert_eq!(
        outbox_types(&store)
            .iter()
            .filter(|t| *t == "escalated")
            .count(),
        1
    );
    assert_eq!(
        timers(&store).len(),
        record.machine.pending_timers().count(),
        "the store mirrors the machine's pending timers"
    );
}

#[test]
fn a_red_flood_warning_raises_the_response_level_but_not_the_grade_or_the_lead() {
    let region = Region::embedded_default();
    let mut flood = report(0);
    flood.kind = "natural.flood".into();
    flood.class = domain::class::IncidentClass::NaturalDisaster;
    flood.facts = Facts::default();
    let quiet = escalation::grade_incident(&region, &flood).unwrap();
    assert_eq!(quiet.grade, Some(Grade::IV));
    assert_eq!(quiet.response_level, Some(4));

    flood.warning = Some(domain::grade::WarningLevel::Red);
    let warned = escalation::grade_incident(&region, &flood).unwrap();
    assert_eq!(warned.grade, Some(Grade::IV), "the grade follows the facts");
    assert_eq!(warned.lead_code, quiet.lead_code, "and so does the lead");
    assert_eq!(warned.response_level, Some(1));
    assert!(warned.reason.contains("red warning"), "{}", warned.reason);
}
