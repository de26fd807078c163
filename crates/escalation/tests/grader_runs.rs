//! The grader in runs (`bus::Handler::begin_run`): events of different incidents share a run,
//! a second event of an incident waits for the run to be applied, and the store ends as it does
//! with one commit per event.

mod common;

use std::sync::Arc;

use bus::{Delivery, Handler};
use domain::escalation::EscalationPolicy;
use domain::event::{EventBody, IncidentEvent, IncidentReport, IncidentUpdated};
use domain::grade::{Facts, Grade};
use domain::region::Region;
use escalation::command::{CommandRecord, command_key, timer_prefix};
use escalation::{Grader, GradingRecord};
use store::{Commit, Store};

const NS: &str = "live";

fn report(deaths: u32) -> IncidentReport {
    common::chemical_leak(deaths, "test")
}

fn delivery(n: usize, incident: &str, body: EventBody) -> Delivery {
    let event = IncidentEvent {
        event_id: format!("ev-{n}"),
        incident_id: incident.into(),
        namespace: NS.into(),
        at_unix_ms: 1_795_900_000_000 + n as i64,
        source_service: "test".into(),
        body,
    };
    Delivery {
        subject: format!(
            "muster.{NS}.incident.390000.{incident}.{}",
            event.body.event_type()
        ),
        msg_id: event.event_id.clone(),
        payload: muster_proto::convert::encode_event(&event).into(),
        delivered: 1,
    }
}

fn events() -> Vec<Delivery> {
    let upgrade = EventBody::Updated(IncidentUpdated {
        facts: Facts {
            deaths: Some(12),
            ..Facts::default()
        },
        updated_by: "scene".into(),
        summary: "more casualties".into(),
        warning: None,
    });
    vec![
        delivery(0, "INC-1", EventBody::Reported(report(1))),
        delivery(1, "INC-2", EventBody::Reported(report(1))),
        delivery(2, "INC-1", upgrade),
        delivery(3, "INC-3", EventBody::Reported(report(1))),
    ]
}

/// A grader on a fixed clock, so two stores' timers can be compared.
fn new_grader(store: &Store) -> Grader {
    Grader::new(
        store.clone(),
        Arc::new(Region::embedded_default()),
        Arc::new(EscalationPolicy::embedded_default()),
    )
    .with_clock(Arc::new(std::sync::atomic::AtomicI64::new(
        1_795_900_000_000,
    )))
}

fn grade_of(store: &Store, incident: &str) -> Option<Grade> {
    let record: GradingRecord = store
        .get(&escalation::grading_key(NS, incident))
        .unwrap()
        .unwrap();
    record.graded.grade
}

#[test]
fn a_run_takes_one_event_per_incident_and_ends_as_single_commits_do() {
    let dir = test_support::temp_dir("grader-runs-");
    let store = Store::open(dir.path()).unwrap();
    let mut grader = new_grader(&store);
    let events = events();
    let mut handled = 0;
    let mut runs = Vec::new();
    while handled < events.len() {
        assert!(grader.begin_run());
        let mut run = Commit::new();
        let mut taken = 0;
        for delivery in &events[handled..] {
            let Some(mut commit) = grader.handle_in_run(delivery).unwrap() else {
                break;
            };
            commit.processed(delivery.msg_id.clone());
            run.absorb(commit);
            taken += 1;
        }
        store.commit(&run).unwrap();
        grader.end_run();
        handled += taken;
        runs.push(taken);
    }
    // INC-1's update waits for the run that graded INC-1; INC-3 joins the update's run.
    assert_eq!(runs, vec![2, 2]);

    let other_dir = test_support::temp_dir("grader-single-");
    let other = Store::open(other_dir.path()).unwrap();
    let mut alone = new_grader(&other);
    for delivery in &events {
        let mut commit = alone.handle(delivery).unwrap();
        commit.processed(delivery.msg_id.clone());
        other.commit(&commit).unwrap();
    }
    for incident in ["INC-1", "INC-2", "INC-3"] {
        assert_eq!(
            grade_of(&store, incident),
            grade_of(&other, incident),
            "{incident}"
        );
        let record: CommandRecord = store.get(&command_key(NS, incident)).unwrap().unwrap();
        let alone_record: CommandRecord = other.get(&command_key(NS, incident)).unwrap().unwrap();
        assert_eq!(
            record.machine.escalation_rung().map(|rung| rung.level),
            alone_record
                .machine
                .escalation_rung()
                .map(|rung| rung.level),
            "{incident}"
        );
    }
    assert_ne!(
        grade_of(&store, "INC-1"),
        grade_of(&store, "INC-2"),
        "INC-1 was upgraded"
    );
    let timers = |store: &Store| {
        store
            .scan_prefix::<serde_json::Value>(&timer_prefix(NS))
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect::<Vec<_>>()
    };
    assert_eq!(timers(&store), timers(&other));
    let outbox = |store: &Store| {
        store
            .outbox_pending(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|event| event.subject)
            .collect::<Vec<_>>()
    };
    assert_eq!(outbox(&store), outbox(&other));
    for n in 0..4 {
        assert!(store.is_processed(&format!("ev-{n}")).unwrap());
    }
}
