//! Dispatch's consumers and registry against a real sled store (no NATS): seeding, the assigner
//! with stored statuses and position ages, regrade differences and the position tracker.

use std::collections::HashSet;
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError};
use dispatch::registry::{self, UnitRecord};
use dispatch::{Assigner, AssignmentRecord, PositionTracker};
use domain::class::IncidentClass;
use domain::event::{EventBody, Graded, IncidentEvent, IncidentReport};
use domain::geo::GeoPoint;
use domain::grade::{Facts, Grade};
use domain::jurisdiction::Level;
use domain::region::Region;
use domain::unit::{UnitEvent, UnitStatus};
use muster_proto::convert_unit::{self, PositionReport, UnitChange};
use store::{Commit, Committed, Store};

const NS: &str = "live";
const CHEMICAL_PARK: &str = "390202400";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    region: Arc<Region>,
    now: i64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let region = Arc::new(Region::embedded_default());
    let now = lifecycle::unix_ms_now();
    registry::seed(&store, &region, NS, now).unwrap();
    Fixture {
        _dir: dir,
        store,
        region,
        now,
    }
}

fn graded_delivery(region: &Region, incident_id: &str, grade: Grade, msg_id: &str) -> Delivery {
    let township = region.tree.get(CHEMICAL_PARK).unwrap();
    let event = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.into(),
        namespace: NS.into(),
        at_unix_ms: 1,
        source_service: "escalation".into(),
        body: EventBody::Graded(Graded {
            grade: Some(grade),
            response_level: Some(3),
            lead_code: "3902".into(),
            lead_name: "test".into(),
            lead_level: Level::City,
            rule_id: "test".into(),
            rule_version: 1,
            reason: "test".into(),
            initial_judgement: false,
            facts: Facts::default(),
            report: IncidentReport {
                kind: "accident.hazardous_chemicals".into(),
                class: IncidentClass::Accident,
                township_code: CHEMICAL_PARK.into(),
                other_township_codes: vec![],
                location: township.centroid.unwrap(),
                location_reported: false,
                facts: Facts::default(),
                summary: "test".into(),
                reported_by: "test".into(),
            },
        }),
    };
    Delivery {
        subject: format!("muster.{NS}.incident.{incident_id}.graded"),
        msg_id: msg_id.into(),
        payload: muster_proto::convert::encode_event(&event).into(),
        delivered: 1,
    }
}

fn commit(store: &Store, commit: Commit, msg_id: &str) {
    let mut commit = commit;
    commit.processed(msg_id.to_string());
    assert!(matches!(
        store.commit(&commit).unwrap(),
        Committed::Applied { .. }
    ));
}

fn unit(store: &Store, unit_id: &str) -> UnitRecord {
    registry::load(store, NS, unit_id).unwrap().unwrap().1
}

fn put(store: &Store, record: &UnitRecord) {
    let mut commit = Commit::new();
    commit
        .put(registry::unit_key(NS, &record.unit.id), record)
        .unwrap();
    store.commit(&commit).unwrap();
}

fn hazmat_ids(region: &Region) -> Vec<String> {
    region
        .units
        .iter()
        .filter(|u| u.unit_type == "hazmat")
        .map(|u| u.id.clone())
        .collect()
}

#[test]
fn seeding_stores_every_region_unit_once_available() {
    let f = fixture();
    let records = registry::load_all(&f.store, NS).unwrap();
    assert_eq!(records.len(), f.region.units.len());
    assert!(
        records
            .iter()
            .all(|r| r.state.status == UnitStatus::Available)
    );
    assert!(records.iter().all(|r| r.position_at_unix_ms == f.now));
    // A unit changed since seeding keeps its state on the next start.
    let mut changed = records[0].clone();
    changed
        .apply(
            &UnitEvent::GoOutOfService {
                reason: "pump".into(),
            },
            f.now,
        )
        .unwrap();
    put(&f.store, &changed);
    assert_eq!(
        registry::seed(&f.store, &f.region, NS, f.now + 1).unwrap(),
        0
    );
    assert_eq!(
        unit(&f.store, &changed.unit.id).state.status,
        UnitStatus::OutOfService
    );
}

#[test]
fn the_assigner_dispatches_booked_units_and_skips_out_of_service_and_stale_ones() {
    let f = fixture();
    let hazmat = hazmat_ids(&f.region);
    // Of 5 hazmat units: one out of service, one with a stale position, one retired.
    let mut out = unit(&f.store, &hazmat[0]);
    out.apply(
        &UnitEvent::GoOutOfService {
            reason: "crew shortage".into(),
        },
        f.now,
    )
    .unwrap();
    put(&f.store, &out);
    let mut stale = unit(&f.store, &hazmat[1]);
    stale.position_at_unix_ms = f.now - registry::STALE_POSITION_AFTER_MS_DEFAULT - 60_000;
    // A live report that went quiet: only reported positions age.
    stale.position_reported = true;
    put(&f.store, &stale);
    let mut retired = unit(&f.store, &hazmat[2]);
    retired.retired = Some(registry::Retirement {
        reason: "sold".into(),
        at_unix_ms: f.now,
    });
    put(&f.store, &retired);

    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let delivery = graded_delivery(&f.region, "INC-1", Grade::III, "m1");
    let result = assigner.handle(&delivery).unwrap();
    commit(&f.store, result, "m1");

    let record: AssignmentRecord = f.store.get("assignment/live/INC-1").unwrap().unwrap();
    let picked: HashSet<&str> = record
        .assignments
        .iter()
        .map(|a| a.unit_id.as_str())
        .collect();
    for excluded in [&hazmat[0], &hazmat[1], &hazmat[2]] {
        assert!(!picked.contains(excluded.as_str()), "{excluded} picked");
    }
    assert_eq!(
        record
            .assignments
            .iter()
            .filter(|a| a.unit_type == "hazmat")
            .count(),
        2
    );
    for assignment in &record.assignments {
        let state = unit(&f.store, &assignment.unit_id).state;
        assert_eq!(state.status, UnitStatus::Dispatched);
        assert_eq!(state.incident_id.as_deref(), Some("INC-1"));
    }
    // One status_changed unit event per booked unit, plus units_assigned.
    let outbox = f.store.outbox_pending(1000).unwrap();
    let unit_events: Vec<_> = outbox
        .iter()
        .filter(|e| e.subject.ends_with(".status"))
        .filter_map(|e| convert_unit::decode_unit_event(&e.payload).ok())
        .filter(|e| matches!(e.change, UnitChange::StatusChanged { .. }))
        .collect();
    assert_eq!(unit_events.len(), record.assignments.len());
    assert!(
        outbox
            .iter()
            .any(|e| e.subject == "muster.live.incident.INC-1.units_assigned")
    );

    // A second incident cannot take a dispatched unit.
    let delivery = graded_delivery(&f.region, "INC-2", Grade::III, "m2");
    let result = assigner.handle(&delivery).unwrap();
    commit(&f.store, result, "m2");
    let second: AssignmentRecord = f.store.get("assignment/live/INC-2").unwrap().unwrap();
    for assignment in &second.assignments {
        assert!(!picked.contains(assignment.unit_id.as_str()));
    }
    // Only hazmat[3] and [4] were usable and INC-1 took both.
    assert!(
        second
            .shortfalls
            .iter()
            .any(|s| s.unit_type == "hazmat" && s.assigned == 0),
        "{:?}",
        second.shortfalls
    );
}

#[test]
fn an_upgrade_sends_only_the_plan_difference() {
    let f = fixture();
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let first = assigner
        .handle(&graded_delivery(&f.region, "INC-1", Grade::IV, "m1"))
        .unwrap();
    commit(&f.store, first, "m1");
    let before: AssignmentRecord = f.store.get("assignment/live/INC-1").unwrap().unwrap();
    // hazchem-IV: 1 hazmat, 2 fire engines, 1 ambulance.
    assert_eq!(before.assignments.len(), 4);
    let second = assigner
        .handle(&graded_delivery(&f.region, "INC-1", Grade::III, "m2"))
        .unwrap();
    commit(&f.store, second, "m2");
    let after: AssignmentRecord = f.store.get("assignment/live/INC-1").unwrap().unwrap();
    // hazchem-III: 2 hazmat, 4 fire engines, 2 ambulances, 1 police: 5 more.
    assert_eq!(after.plan_id, "hazchem-III");
    assert_eq!(after.assignments.len(), 9);
    let ids: HashSet<&str> = after
        .assignments
        .iter()
        .map(|a| a.unit_id.as_str())
        .collect();
    assert_eq!(ids.len(), 9, "a unit was assigned twice");
}

fn position_delivery(unit_id: &str, subject_unit_id: &str, lat: f64, at_unix_ms: i64) -> Delivery {
    let payload = convert_unit::encode_unit_position(&PositionReport {
        unit_id: unit_id.into(),
        position: GeoPoint::new(lat, 120.0),
        at_unix_ms,
    });
    Delivery {
        subject: format!("muster.{NS}.unit.{subject_unit_id}.position"),
        msg_id: format!("p-{unit_id}-{at_unix_ms}"),
        payload: payload.into(),
        delivered: 1,
    }
}

#[test]
fn the_position_tracker_keeps_the_newest_position_and_terminates_bad_messages() {
    let f = fixture();
    let id = f.region.units[0].id.clone();
    let mut tracker = PositionTracker::new(f.store.clone(), NS.into());

    let newer = position_delivery(&id, &id, 30.5, f.now + 1_000);
    let result = tracker.handle(&newer).unwrap();
    commit(&f.store, result, &newer.msg_id);
    let stored = unit(&f.store, &id);
    assert_eq!(stored.unit.position, GeoPoint::new(30.5, 120.0));
    assert_eq!(stored.position_at_unix_ms, f.now + 1_000);

    let older = position_delivery(&id, &id, 10.0, f.now);
    let result = tracker.handle(&older).unwrap();
    assert!(result.is_empty(), "an older position changes nothing");
    assert_eq!(
        unit(&f.store, &id).unit.position,
        GeoPoint::new(30.5, 120.0)
    );

    let mut poison = |delivery: Delivery| match tracker.handle(&delivery) {
        Err(HandlerError::Poison(reason)) => reason,
        other => panic!("expected poison, got {other:?}"),
    };
    let mut garbage = position_delivery(&id, &id, 30.0, f.now);
    garbage.payload = bytes::Bytes::from_static(&[0xff, 0xff, 0xff]);
    assert!(poison(garbage).contains("UnitPosition"));
    assert!(poison(position_delivery(&id, "OTHER", 30.0, f.now + 2_000)).contains("published for"));
    assert!(poison(position_delivery(&id, &id, 95.0, f.now + 2_000)).contains("latitude"));
    assert!(
        poison(position_delivery("NOPE", "NOPE", 30.0, f.now + 2_000)).contains("not registered")
    );
}

/// A unit parked at its station without a tracker keeps its registry position: it must still be
/// recommended hours after seeding, or `muster up` would stop dispatching after 30 minutes.
#[test]
fn a_station_position_never_goes_stale_but_a_quiet_tracker_does() {
    let f = fixture();
    let hazmat = hazmat_ids(&f.region);
    // Seeded two hours ago, never reported a live position.
    for id in &hazmat {
        let mut parked = unit(&f.store, id);
        parked.position_at_unix_ms = f.now - 2 * 60 * 60 * 1000;
        put(&f.store, &parked);
    }
    let record = unit(&f.store, &hazmat[0]);
    assert!(!record.position_reported);
    assert_eq!(record.position_age_basis_unix_ms(f.now), f.now);

    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let delivery = graded_delivery(&f.region, "INC-9", Grade::III, "m9");
    let result = assigner.handle(&delivery).unwrap();
    commit(&f.store, result, "m9");
    let assigned: AssignmentRecord = f.store.get("assignment/live/INC-9").unwrap().unwrap();
    assert!(
        assigned.assignments.iter().any(|a| a.unit_type == "hazmat"),
        "parked hazmat units were treated as stale: {:?}",
        assigned.shortfalls
    );

    // Once a tracker has reported, its silence does age the position.
    let mut tracked = unit(&f.store, &hazmat[0]);
    assert!(tracked.report_position(tracked.unit.position, f.now - 2 * 60 * 60 * 1000 + 1));
    assert_eq!(
        tracked.position_age_basis_unix_ms(f.now),
        f.now - 2 * 60 * 60 * 1000 + 1
    );
}
