//! The projection's history on real sled directories: an open incident's events one key each, a
//! closed incident's folded into one record, both read back the same way, paged, after a restart
//! and from a store written before the folding.

use bus::{Delivery, Handler};
use domain::event::{EventBody, IncidentClosed, IncidentEvent, IncidentUpdated};
use domain::grade::Facts;
use store::{Commit, Store};
use tokio::sync::broadcast;

use super::Projection;
use crate::record::test_fixtures::report;
use crate::record::{
    FOLDED_HISTORY_MAX, FoldedHistory, IncidentRecord, IncidentStatus, history_page,
    incident_event_key, incident_events_prefix, incident_history_key, incident_key,
};

const NS: &str = "live";
const ID: &str = "INC-20261129-000001";

fn event(n: usize, body: EventBody) -> IncidentEvent {
    IncidentEvent {
        event_id: format!("ev-{n}"),
        incident_id: ID.into(),
        namespace: NS.into(),
        at_unix_ms: 1_795_900_000_000 + n as i64,
        source_service: "test".into(),
        body,
    }
}

fn updated(n: usize) -> IncidentEvent {
    event(
        n,
        EventBody::Updated(IncidentUpdated {
            facts: Facts {
                people_evacuated: Some(n as u32),
                ..Facts::default()
            },
            updated_by: "scene".into(),
            summary: format!("update {n}"),
            warning: None,
        }),
    )
}

fn closed(n: usize) -> IncidentEvent {
    event(
        n,
        EventBody::Closed(IncidentClosed {
            by: "duty officer".into(),
            reason: "fire out".into(),
        }),
    )
}

/// Hands `event` to the projection and commits what it returns, as the consumer does.
fn deliver(store: &Store, projection: &mut Projection, event: &IncidentEvent) {
    let delivery = Delivery {
        subject: format!("muster.{NS}.incident.{}", event.body.event_type()),
        msg_id: event.event_id.clone(),
        payload: muster_proto::convert::encode_event(event).into(),
        delivered: 1,
    };
    let mut commit = projection.handle(&delivery).unwrap();
    commit.processed(delivery.msg_id.clone());
    store.commit(&commit).unwrap();
}

fn projection(store: &Store) -> Projection {
    Projection::new(store.clone(), broadcast::channel(16).0)
}

/// A fresh store with the incident reported (event 0) through its projection.
fn reported() -> (tempfile::TempDir, Store, Projection) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut projection = projection(&store);
    deliver(
        &store,
        &mut projection,
        &event(0, EventBody::Reported(report())),
    );
    (dir, store, projection)
}

/// The event ids of the incident's history, all of it, `page` at a time, as ListIncidentEvents
/// pages it (the next page starts after the last arrival number).
fn history_ids(store: &Store, page: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut first = 0;
    loop {
        let events = history_page(store, NS, ID, first, page).unwrap();
        assert!(events.len() <= page);
        ids.extend(events.iter().map(|(_, event)| event.event_id.clone()));
        match events.last() {
            Some((arrival, _)) if events.len() == page => first = arrival + 1,
            _ => return ids,
        }
    }
}

fn loose_keys(store: &Store) -> usize {
    store
        .scan_prefix::<IncidentEvent>(&incident_events_prefix(NS, ID))
        .unwrap()
        .len()
}

fn folded(store: &Store) -> Option<FoldedHistory> {
    store.get(&incident_history_key(NS, ID)).unwrap()
}

fn ids(range: impl IntoIterator<Item = usize>) -> Vec<String> {
    range.into_iter().map(|n| format!("ev-{n}")).collect()
}

#[test]
fn a_closed_incidents_history_is_one_record_read_back_like_the_loose_keys() {
    // Open: one key per event.
    let (dir, store, mut projection) = reported();
    deliver(&store, &mut projection, &updated(1));
    deliver(&store, &mut projection, &updated(2));
    assert_eq!(loose_keys(&store), 3);
    assert_eq!(folded(&store), None);
    assert_eq!(history_ids(&store, 100), ids(0..3));

    // The closing event folds them all into one record and deletes their keys.
    deliver(&store, &mut projection, &closed(3));
    assert_eq!(loose_keys(&store), 0);
    let history = folded(&store).expect("the closed incident's history is one record");
    let in_record: Vec<String> = history
        .events
        .iter()
        .map(|entry| entry.event.event_id.clone())
        .collect();
    assert_eq!(in_record, ids(0..4));
    assert!(
        history
            .events
            .windows(2)
            .all(|w| w[0].arrival < w[1].arrival),
        "{history:?}"
    );
    let record: IncidentRecord = store.get(&incident_key(NS, ID)).unwrap().unwrap();
    assert_eq!(record.status, IncidentStatus::Closed);
    // Without the reporter, as the loose keys were.
    match &history.events[0].event.body {
        EventBody::Reported(report) => assert_eq!(report.reported_by, ""),
        other => panic!("first event {other:?}"),
    }

    // A late event (after the close) joins the record.
    deliver(&store, &mut projection, &updated(4));
    assert_eq!(loose_keys(&store), 0);
    assert_eq!(folded(&store).unwrap().events.len(), 5);

    // Read whole, and in pages of 1, 2 and 3, before and after a restart.
    for page in [100, 1, 2, 3] {
        assert_eq!(history_ids(&store, page), ids(0..5), "pages of {page}");
    }
    drop(projection);
    drop(store);
    let store = Store::open_after_close(dir.path()).unwrap();
    assert_eq!(history_ids(&store, 2), ids(0..5));
}

#[test]
fn a_store_written_before_the_folding_keeps_its_keys_until_the_next_event() {
    let (_dir, store, mut projection) = reported();
    // A closed incident as earlier versions left it: the record closed, every event its own key.
    let mut commit = Commit::new();
    for late in [closed(1), updated(2)] {
        let arrival = store.generate_id().unwrap();
        commit
            .put(incident_event_key(NS, ID, arrival), &late)
            .unwrap();
    }
    let mut record: IncidentRecord = store.get(&incident_key(NS, ID)).unwrap().unwrap();
    record.status = IncidentStatus::Closed;
    commit.put(incident_key(NS, ID), &record).unwrap();
    store.commit(&commit).unwrap();
    assert_eq!(history_ids(&store, 2), ids(0..3));
    assert_eq!(folded(&store), None);

    // Its next event folds them.
    deliver(&store, &mut projection, &updated(3));
    assert_eq!(loose_keys(&store), 0);
    assert_eq!(folded(&store).unwrap().events.len(), 4);
    assert_eq!(history_ids(&store, 3), ids(0..4));
}

#[test]
fn an_incident_with_more_events_than_a_record_takes_keeps_them_as_keys() {
    let (_dir, store, mut projection) = reported();
    for n in 1..FOLDED_HISTORY_MAX {
        deliver(&store, &mut projection, &updated(n));
    }
    // FOLDED_HISTORY_MAX events so far; with the close one more than a record takes.
    deliver(&store, &mut projection, &closed(FOLDED_HISTORY_MAX));
    assert_eq!(folded(&store), None);
    assert_eq!(loose_keys(&store), FOLDED_HISTORY_MAX + 1);
    assert_eq!(
        history_ids(&store, 100),
        ids(0..=FOLDED_HISTORY_MAX),
        "every event, in order"
    );
}

#[test]
fn a_history_event_that_does_not_decode_stops_the_folding_not_the_projection() {
    let (_dir, store, mut projection) = reported();
    let mut commit = Commit::new();
    let bad = incident_event_key(NS, ID, store.generate_id().unwrap());
    commit.put_encoded(bad.clone(), b"not an event".to_vec());
    store.commit(&commit).unwrap();

    // The close and a late event are recorded, each under its own key, and the bad one stays.
    deliver(&store, &mut projection, &closed(1));
    deliver(&store, &mut projection, &updated(2));
    let record: IncidentRecord = store.get(&incident_key(NS, ID)).unwrap().unwrap();
    assert_eq!(record.status, IncidentStatus::Closed);
    assert_eq!(folded(&store), None);
    assert!(store.get_raw(&bad).unwrap().is_some());
    let mut keys = 0;
    store
        .visit_prefix_stored(&incident_events_prefix(NS, ID), |_, _| {
            keys += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(keys, 4, "reported, the bad one, closed, updated");
    // ListIncidentEvents names the key it cannot read.
    let error = history_page(&store, NS, ID, 0, 100).unwrap_err();
    assert!(error.to_string().contains(&bad), "{error}");
}

/// Hands `events` to the projection in one run (`Handler::begin_run`) and applies the run's commits
/// as one, as the consumer does; returns how many it took before one needed the run applied.
fn run_of(store: &Store, projection: &mut Projection, events: &[IncidentEvent]) -> usize {
    assert!(projection.begin_run());
    let mut run = Commit::new();
    let mut taken = 0;
    for event in events {
        let delivery = Delivery {
            subject: format!("muster.{NS}.incident.{}", event.body.event_type()),
            msg_id: event.event_id.clone(),
            payload: muster_proto::convert::encode_event(event).into(),
            delivered: 1,
        };
        let Some(mut commit) = projection.handle_in_run(&delivery).unwrap() else {
            break;
        };
        commit.processed(delivery.msg_id.clone());
        run.absorb(commit);
        taken += 1;
    }
    store.commit(&run).unwrap();
    projection.end_run();
    taken
}

#[test]
fn events_projected_in_runs_leave_what_they_leave_one_by_one() {
    let (_dir, store, mut projection) = reported();
    // The run reads its own record: each update sees the one before (no conflict, none lost);
    // the close needs the loose keys the run adds, so it waits for the run to be applied.
    assert_eq!(
        run_of(
            &store,
            &mut projection,
            &[updated(1), updated(2), closed(3)]
        ),
        2
    );
    let record: IncidentRecord = store.get(&incident_key(NS, ID)).unwrap().unwrap();
    assert_eq!(record.status, IncidentStatus::Reported);
    assert_eq!(record.timeline.len(), 3, "{:?}", record.timeline);
    assert_eq!(loose_keys(&store), 3);
    // The next run closes it (folding every key), and a late event after the close in the same
    // run waits again: the folded record is the run's.
    assert_eq!(run_of(&store, &mut projection, &[closed(3), updated(4)]), 1);
    assert_eq!(run_of(&store, &mut projection, &[updated(4)]), 1);

    // The same events one by one, in another store.
    let (_other_dir, other, mut alone) = reported();
    for event in [updated(1), updated(2), closed(3), updated(4)] {
        deliver(&other, &mut alone, &event);
    }
    let record: IncidentRecord = store.get(&incident_key(NS, ID)).unwrap().unwrap();
    let alone_record: IncidentRecord = other.get(&incident_key(NS, ID)).unwrap().unwrap();
    assert_eq!(record.status, IncidentStatus::Closed);
    assert_eq!(
        serde_json::to_value(&record).unwrap(),
        serde_json::to_value(&alone_record).unwrap()
    );
    assert_eq!(loose_keys(&store), 0);
    assert_eq!(history_ids(&store, 100), ids(0..5));
    assert_eq!(history_ids(&store, 100), history_ids(&other, 100));
}
