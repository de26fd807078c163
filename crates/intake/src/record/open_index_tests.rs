//! The open-incident index on real sled directories: kept by the commits that write incident
//! records, read back after a restart, and built once for a store written without it.

use std::collections::HashMap;
use std::path::Path;

use domain::event::Graded;
use domain::grade::{Facts, Grade};
use domain::jurisdiction::Level;
use store::{Commit, IndexOpened, Store};

use super::test_fixtures::report;
use super::{
    IncidentRecord, IncidentStatus, OPEN_INCIDENTS, incident_key, open_incident_key,
    open_incidents, register_open_incidents,
};

const NS: &str = "live";

/// An incident record; `grading`: `None` not graded, `Some(None)` below every threshold.
fn record(id: &str, status: IncidentStatus, grading: Option<Option<Grade>>) -> IncidentRecord {
    IncidentRecord {
        id: id.into(),
        namespace: NS.into(),
        report: report(),
        status,
        grading: grading.map(|grade| Graded {
            grade,
            response_level: None,
            lead_code: "110101".into(),
            lead_name: "county".into(),
            lead_level: Level::County,
            rule_id: "rule".into(),
            rule_version: 1,
            reason: "test".into(),
            initial_judgement: false,
            facts: Facts::default(),
            report: report(),
        }),
        units: None,
        timeline: Vec::new(),
        reported_at_unix_ms: 1,
        updated_at_unix_ms: 1,
        request_id: String::new(),
        alert_count: 0,
        open_alert_count: 0,
        recent_alerts: Vec::new(),
        legal_hold: None,
        personal_data_erased_at_unix_ms: None,
    }
}

fn write(store: &Store, records: &[IncidentRecord]) {
    let mut commit = Commit::new();
    for record in records {
        commit
            .put(incident_key(&record.namespace, &record.id), record)
            .unwrap();
    }
    store.commit(&commit).unwrap();
}

/// What the gauge would read: open incidents per grade label.
fn by_grade(store: &Store) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for label in open_incidents(store, NS).unwrap().into_values() {
        *counts.entry(label).or_insert(0) += 1;
    }
    counts
}

/// The open incidents counted the old way: a pass over every record.
fn counted_from_records(store: &Store) -> HashMap<String, &'static str> {
    store
        .iter_prefix::<IncidentRecord>(&incident_key(NS, ""))
        .map(|item| item.unwrap().1)
        .filter(|record| record.status != IncidentStatus::Closed)
        .map(|record| (record.id.clone(), crate::metrics::grade_label(&record)))
        .collect()
}

fn reopen(dir: &Path) -> Store {
    Store::open_after_close(dir).unwrap()
}

#[tokio::test]
async fn the_index_follows_creation_grading_and_closing_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.add_index(OPEN_INCIDENTS).unwrap(),
        IndexOpened::Built {
            records: 0,
            entries: 0
        }
    );

    // Created: pending until graded.
    write(
        &store,
        &[
            record("INC-1", IncidentStatus::Reported, None),
            record("INC-2", IncidentStatus::Reported, None),
            record("INC-3", IncidentStatus::Reported, None),
        ],
    );
    assert_eq!(by_grade(&store), HashMap::from([("pending", 3)]));

    // Graded, regraded, graded below every threshold.
    write(
        &store,
        &[
            record("INC-1", IncidentStatus::Graded, Some(Some(Grade::III))),
            record("INC-2", IncidentStatus::Graded, Some(None)),
        ],
    );
    write(
        &store,
        &[record(
            "INC-1",
            IncidentStatus::Responding,
            Some(Some(Grade::II)),
        )],
    );
    assert_eq!(
        by_grade(&store),
        HashMap::from([("II", 1), ("none", 1), ("pending", 1)])
    );

    // Closed: gone from the index; the record stays.
    write(
        &store,
        &[record("INC-2", IncidentStatus::Closed, Some(None))],
    );
    assert_eq!(by_grade(&store), HashMap::from([("II", 1), ("pending", 1)]));
    assert!(store.get_raw(&incident_key(NS, "INC-2")).unwrap().is_some());
    assert!(
        store
            .get_raw(&open_incident_key(NS, "INC-2"))
            .unwrap()
            .is_none()
    );

    // Another namespace is counted apart.
    let mut drill = record("INC-9", IncidentStatus::Reported, None);
    drill.namespace = "drill.x".into();
    write(&store, &[drill]);
    assert_eq!(open_incidents(&store, "drill.x").unwrap().len(), 1);
    assert_eq!(
        open_incidents(&store, NS).unwrap(),
        counted_from_records(&store)
    );

    store.flush().await.unwrap();
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(
        store.add_index(OPEN_INCIDENTS).unwrap(),
        IndexOpened::Present
    );
    assert_eq!(
        open_incidents(&store, NS).unwrap(),
        HashMap::from([
            ("INC-1".to_string(), "II"),
            ("INC-3".to_string(), "pending")
        ])
    );
    // And it goes on being kept after the restart.
    write(&store, &[record("INC-3", IncidentStatus::Closed, None)]);
    assert_eq!(by_grade(&store), HashMap::from([("II", 1)]));
}

#[tokio::test]
async fn a_store_written_without_the_index_gets_it_built_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Written by something that does not keep the index (as intake before it existed).
    let mut records = Vec::new();
    for i in 0..2_500 {
        let id = format!("INC-{i:05}");
        records.push(match i % 5 {
            0 => record(&id, IncidentStatus::Reported, None),
            1 => record(&id, IncidentStatus::Graded, Some(Some(Grade::IV))),
            2 => record(&id, IncidentStatus::Responding, Some(Some(Grade::I))),
            _ => record(&id, IncidentStatus::Closed, Some(Some(Grade::III))),
        });
    }
    for chunk in records.chunks(500) {
        write(&store, chunk);
    }
    // Something that is not an incident record under a neighbouring prefix.
    let mut other = Commit::new();
    other
        .put("incident-event/live/INC-00000/1", &"history")
        .unwrap();
    store.commit(&other).unwrap();
    store.flush().await.unwrap();
    drop(store);

    let store = reopen(dir.path());
    register_open_incidents(&store).unwrap();
    assert!(store.has_index(OPEN_INCIDENTS.name).unwrap());
    assert_eq!(
        by_grade(&store),
        HashMap::from([("pending", 500), ("IV", 500), ("I", 500)])
    );
    assert_eq!(
        open_incidents(&store, NS).unwrap(),
        counted_from_records(&store)
    );
    store.flush().await.unwrap();
    drop(store);

    // Built once: the next start finds it.
    let store = reopen(dir.path());
    assert_eq!(
        store.add_index(OPEN_INCIDENTS).unwrap(),
        IndexOpened::Present
    );
    assert_eq!(by_grade(&store).values().sum::<usize>(), 1_500);
}

#[tokio::test]
async fn writes_without_the_index_make_the_next_start_rebuild_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    register_open_incidents(&store).unwrap();
    write(&store, &[record("INC-1", IncidentStatus::Reported, None)]);
    store.flush().await.unwrap();
    drop(store);

    // A process that does not register the index closes the incident and opens another.
    let store = reopen(dir.path());
    write(
        &store,
        &[
            record("INC-1", IncidentStatus::Closed, None),
            record("INC-2", IncidentStatus::Graded, Some(Some(Grade::II))),
        ],
    );
    assert!(!store.has_index(OPEN_INCIDENTS.name).unwrap());
    store.flush().await.unwrap();
    drop(store);

    let store = reopen(dir.path());
    assert_eq!(
        store.add_index(OPEN_INCIDENTS).unwrap(),
        IndexOpened::Built {
            records: 2,
            entries: 1
        }
    );
    assert_eq!(
        open_incidents(&store, NS).unwrap(),
        HashMap::from([("INC-2".to_string(), "II")])
    );
}
