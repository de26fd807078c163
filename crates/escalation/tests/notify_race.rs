//! No notification follows an acknowledgement, even when the ack and the escalation timer race:
//! notifications derive only from the events the machine committed, and a timer that loses to an
//! ack commits no `escalated` event, so nobody at the next level is ever notified for that step.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use domain::escalation::EscalationPolicy;
use domain::event::IncidentReport;
use domain::notification::NotificationReason;
use domain::region::Region;
use domain::roster::{Channel, Role, RosterEntry, Rosters};
use escalation::command::{CommandRecord, command_key, new_record, stage, transition};
use escalation::notify::stage_notifications;
use escalation::timers::fire_due;
use store::{Commit, Store};

const NS: &str = "live";
const INCIDENT: &str = "INC-20260101-1";
const MINUTE_MS: i64 = 10;

fn report() -> IncidentReport {
    common::chemical_leak(1, "test")
}

/// Everyone on duty around the clock, one officer per jurisdiction.
fn rosters(region: &Region) -> Rosters {
    Rosters::from_entries(
        region
            .tree
            .all()
            .map(|j| {
                let entry = RosterEntry {
                    name: format!("officer of {}", j.code),
                    role: Role::DutyOfficer,
                    channel: Channel::Webhook,
                    address: format!("duty-{}", j.code),
                    shift: None,
                };
                (j.code.clone(), vec![entry])
            })
            .collect::<BTreeMap<_, _>>(),
    )
}

fn graded_store(dir: &std::path::Path, region: &Region) -> Store {
    let store = Store::open(dir).unwrap();
    let graded = escalation::grade_incident(region, &report()).unwrap();
    let policy = EscalationPolicy::embedded_default().with_minute_ms(MINUTE_MS);
    let now = lifecycle::unix_ms_now();
    let mut record = new_record(region, &policy, NS, INCIDENT, &graded, now).unwrap();
    let mut commit = Commit::new();
    commit.expect_raw(command_key(NS, INCIDENT), None);
    stage(&mut commit, region, &BTreeMap::new(), &mut record, now).unwrap();
    store.commit(&commit).unwrap();
    store
}

/// Every committed event in commit order, each with the notifications the requester would stage.
fn events_and_notifications(
    store: &Store,
    rosters: &Rosters,
) -> Vec<(String, Vec<domain::notification::NotificationRequest>)> {
    store
        .outbox_pending(10_000)
        .unwrap()
        .into_iter()
        .filter(|event| event.subject.contains(".incident."))
        .map(|event| {
            let decoded =
                muster_proto::convert::decode_event(&event.payload, &event.msg_id).unwrap();
            let mut commit = Commit::new();
            let requests = stage_notifications(
                &mut commit,
                &decoded,
                "390000",
                rosters,
                lifecycle::unix_ms_now(),
            )
            .unwrap();
            (decoded.body.event_type().to_string(), requests)
        })
        .collect()
}

/// The invariant: nothing after the `acknowledged` event calls for a notification.
fn assert_no_notification_after_the_ack(
    events: &[(String, Vec<domain::notification::NotificationRequest>)],
) {
    let ack = events
        .iter()
        .position(|(event_type, _)| event_type == "acknowledged")
        .expect("the ack committed");
    for (event_type, requests) in &events[ack + 1..] {
        assert!(
            requests.is_empty(),
            "{event_type} after the ack notifies {requests:?}"
        );
    }
}

#[test]
fn an_ack_that_wins_the_race_leaves_no_escalation_and_no_notification() {
    let region = Region::embedded_default();
    let rosters = rosters(&region);
    let dir = test_support::temp_dir("escalation-notify-race-");
    let store = graded_store(dir.path(), &region);
    let record: CommandRecord = store.get(&command_key(NS, INCIDENT)).unwrap().unwrap();
    let ack_due = record.ack_due_at_unix_ms().unwrap();

    // The ack commits first; the timer task then fires the chain timer it had already scanned.
    transition(
        &store,
        &region,
        NS,
        INCIDENT,
        |_| {},
        |record, now| Ok(record.machine.handle_acknowledge("officer Wang", now)),
    )
    .unwrap();
    fire_due(&store, &region, NS, ack_due).unwrap();

    let events = events_and_notifications(&store, &rosters);
    assert!(!events.iter().any(|(t, _)| t == "escalated"), "{events:?}");
    assert!(
        events
            .iter()
            .flat_map(|(_, requests)| requests)
            .all(|r| r.reason != NotificationReason::Escalated),
        "nobody at the next level is told"
    );
    assert_no_notification_after_the_ack(&events);
}

#[test]
fn ack_and_timer_racing_on_threads_never_notify_after_the_ack() {
    let region = Arc::new(Region::embedded_default());
    let rosters = rosters(&region);
    let (mut ack_won, mut timer_won) = (0, 0);
    for round in 0..24 {
        let dir = test_support::temp_dir("escalation-notify-race-");
        let store = graded_store(dir.path(), &region);
        let record: CommandRecord = store.get(&command_key(NS, INCIDENT)).unwrap().unwrap();
        let ack_due = record.ack_due_at_unix_ms().unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let acker = {
            let (store, region, barrier) = (store.clone(), region.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                transition(
                    &store,
                    &region,
                    NS,
                    INCIDENT,
                    |_| {},
                    |record, now| Ok(record.machine.handle_acknowledge("officer Wang", now)),
                )
                .unwrap();
            })
        };
        let timer = {
            let (store, region, barrier) = (store.clone(), region.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Alternate which side gets a head start, so both orders happen.
                if round % 2 == 0 {
                    std::thread::yield_now();
                }
                fire_due(&store, &region, NS, ack_due).unwrap();
            })
        };
        acker.join().unwrap();
        timer.join().unwrap();

        let events = events_and_notifications(&store, &rosters);
        assert_no_notification_after_the_ack(&events);
        let ack = events
            .iter()
            .position(|(t, _)| t == "acknowledged")
            .unwrap();
        match events.iter().position(|(t, _)| t == "escalated") {
            // The timer won: the escalation (and its notifications) came before the ack.
            Some(escalated) => {
                assert!(escalated < ack);
                assert!(!events[escalated].1.is_empty(), "the level above is told");
                timer_won += 1;
            }
            // The ack won: no escalation, so no notification for that step.
            None => {
                let record: CommandRecord = store.get(&command_key(NS, INCIDENT)).unwrap().unwrap();
                assert_eq!(record.escalation_count, 0);
                ack_won += 1;
            }
        }
        // The graded event is not in this store's outbox (the grader commits it), but an
        // escalation's notifications name the level above the lead.
        for (event_type, requests) in &events {
            if event_type == "escalated" {
                assert!(requests.iter().all(|r| r.jurisdiction_code != "390202"));
            }
        }
    }
    eprintln!("ack won {ack_won}, timer won {timer_won}");
    assert_eq!(ack_won + timer_won, 24);
}
