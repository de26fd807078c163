//! Dispatch's consumers and registry against a real sled store (no NATS): seeding, the assigner
//! with stored statuses and position ages, regrade differences and the position tracker; the
//! acknowledgement flow: timeouts, declines and releases with their replacements.

use std::collections::HashSet;
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError};
use dispatch::assignment::{self, AckTimerRecord};
use dispatch::registry::{self, UnitRecord};
use dispatch::{Assigner, AssignmentDesk, AssignmentOutcome, AssignmentRecord, PositionTracker};
use domain::class::IncidentClass;
use domain::event::{EventBody, Graded, IncidentClosed, IncidentEvent, IncidentReport};
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
                warning: None,
            },
        }),
    };
    Delivery {
        subject: format!("muster.{NS}.incident.390000.{incident_id}.graded"),
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
            .any(|e| e.subject == "muster.live.incident.390000.INC-1.units_assigned")
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

// Acknowledged assignments: timers, declines, replacements and releases.

const ACK_TIMEOUT_MS: i64 = 1_000;

fn desk(f: &Fixture) -> AssignmentDesk {
    AssignmentDesk::new(f.region.clone(), ACK_TIMEOUT_MS)
}

fn assignments(store: &Store, incident_id: &str) -> AssignmentRecord {
    store
        .get(&dispatch::assignment_key(NS, incident_id))
        .unwrap()
        .unwrap()
}

fn ack_timers(store: &Store) -> Vec<AckTimerRecord> {
    store
        .scan_prefix::<AckTimerRecord>(&assignment::ack_timer_prefix(NS))
        .unwrap()
        .into_iter()
        .map(|(_, timer)| timer)
        .collect()
}

/// Books INC-1 at grade III (2 hazmat among 9 units) with a short acknowledgement timeout.
fn book_grade_iii(f: &Fixture, incident_id: &str) -> AssignmentRecord {
    let mut assigner =
        Assigner::new(f.store.clone(), f.region.clone()).with_ack_timeout_ms(ACK_TIMEOUT_MS);
    let msg_id = format!("graded-{incident_id}");
    let result = assigner
        .handle(&graded_delivery(
            &f.region,
            incident_id,
            Grade::III,
            &msg_id,
        ))
        .unwrap();
    commit(&f.store, result, &msg_id);
    assignments(&f.store, incident_id)
}

fn acknowledge(f: &Fixture, unit_id: &str, incident_id: &str) {
    desk(f)
        .change_status(
            &f.store,
            NS,
            unit_id,
            &UnitEvent::Acknowledge {
                incident_id: incident_id.into(),
            },
            lifecycle::unix_ms_now(),
        )
        .unwrap();
}

fn units_assigned_events(store: &Store, incident_id: &str) -> Vec<IncidentEvent> {
    let subject = format!("muster.{NS}.incident.390000.{incident_id}.units_assigned");
    store
        .outbox_pending(10_000)
        .unwrap()
        .into_iter()
        .filter(|event| event.subject == subject)
        .map(|event| muster_proto::convert::decode_event(&event.payload, "test").unwrap())
        .collect()
}

fn first_hazmat(record: &AssignmentRecord) -> String {
    record
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat")
        .unwrap()
        .unit_id
        .clone()
}

#[test]
fn an_unacknowledged_unit_times_out_once_and_the_next_nearest_replaces_it() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    assert_eq!(ack_timers(&f.store).len(), booked.assignments.len());
    let silent = first_hazmat(&booked);
    for assignment in &booked.assignments {
        assert!(
            unit(&f.store, &assignment.unit_id)
                .ack_due_at_unix_ms
                .is_some()
        );
        if assignment.unit_id != silent {
            acknowledge(&f, &assignment.unit_id, "INC-1");
        }
    }
    // Only the silent unit still waits; nothing is due before its deadline.
    let timers = ack_timers(&f.store);
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].unit_id, silent);
    let due = timers[0].due_at_unix_ms;
    assert_eq!(desk(&f).fire_due(&f.store, NS, due - 1).unwrap(), 0);

    assert_eq!(desk(&f).fire_due(&f.store, NS, due).unwrap(), 1);
    let after = assignments(&f.store, "INC-1");
    let timed_out = unit(&f.store, &silent);
    assert_eq!(timed_out.state.status, UnitStatus::Available);
    assert_eq!(timed_out.ack_due_at_unix_ms, None);
    assert!(after.assignments.iter().all(|a| a.unit_id != silent));
    assert_eq!(after.assignments.len(), booked.assignments.len());
    assert_eq!(after.ended.len(), 1);
    assert_eq!(after.ended[0].unit_id, silent);
    assert_eq!(
        after.ended[0].outcome,
        AssignmentOutcome::AcknowledgementTimedOut
    );
    let replacement = after.assignments.last().unwrap();
    assert_eq!(replacement.unit_type, "hazmat");
    assert!(
        booked
            .assignments
            .iter()
            .all(|a| a.unit_id != replacement.unit_id)
    );
    assert!(
        replacement.reason.contains("replaces"),
        "{}",
        replacement.reason
    );
    let replaced_by = unit(&f.store, &replacement.unit_id);
    assert_eq!(replaced_by.state.status, UnitStatus::Dispatched);
    assert_eq!(replaced_by.state.incident_id.as_deref(), Some("INC-1"));
    assert_eq!(replaced_by.ack_due_at_unix_ms, Some(due + ACK_TIMEOUT_MS));
    // The replacement's timer is the only one left, and intake hears of it.
    let timers = ack_timers(&f.store);
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].unit_id, replacement.unit_id);
    let events = units_assigned_events(&f.store, "INC-1");
    assert_eq!(events.len(), 2);
    let EventBody::UnitsAssigned(units) = &events[1].body else {
        panic!("expected units_assigned");
    };
    assert_eq!(units.assignments, vec![replacement.clone()]);
}

#[test]
fn an_acknowledgement_cancels_the_timer_so_nothing_fires() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    for assignment in &booked.assignments {
        acknowledge(&f, &assignment.unit_id, "INC-1");
    }
    assert!(ack_timers(&f.store).is_empty());
    let far_future = f.now + 24 * 60 * 60 * 1000;
    assert_eq!(desk(&f).fire_due(&f.store, NS, far_future).unwrap(), 0);
    for assignment in &booked.assignments {
        let record = unit(&f.store, &assignment.unit_id);
        assert_eq!(record.state.status, UnitStatus::Enroute);
        assert_eq!(record.ack_due_at_unix_ms, None);
    }
    assert_eq!(assignments(&f.store, "INC-1"), booked);
}

#[test]
fn a_timer_that_fires_twice_has_one_effect() {
    let f = fixture();
    book_grade_iii(&f, "INC-1");
    let timers: Vec<(String, AckTimerRecord)> = f
        .store
        .scan_prefix(&assignment::ack_timer_prefix(NS))
        .unwrap();
    let (key, timer) = timers[0].clone();
    let at = timer.due_at_unix_ms;
    // Only this timer is due at its own due time... plus any due at the same millisecond.
    let fired = desk(&f).fire_due(&f.store, NS, at).unwrap();
    assert!(fired >= 1);
    let once = assignments(&f.store, "INC-1");
    let outbox_once = f.store.outbox_len();
    // A second pass at the same time finds nothing; a resurrected copy of the timer (a crash
    // replaying an old write, say) is only removed.
    assert_eq!(desk(&f).fire_due(&f.store, NS, at).unwrap(), 0);
    let mut again = Commit::new();
    again.put(key.clone(), &timer).unwrap();
    f.store.commit(&again).unwrap();
    assert_eq!(desk(&f).fire_due(&f.store, NS, at).unwrap(), 0);
    assert_eq!(f.store.get::<AckTimerRecord>(&key).unwrap(), None);
    assert_eq!(assignments(&f.store, "INC-1"), once);
    assert_eq!(f.store.outbox_len(), outbox_once);
    assert_eq!(
        unit(&f.store, &timer.unit_id).state.status,
        UnitStatus::Available
    );
}

#[test]
fn a_decline_frees_the_unit_and_the_replacement_never_is_a_unit_that_declined() {
    let f = fixture();
    let hazmat = hazmat_ids(&f.region);
    let booked = book_grade_iii(&f, "INC-1");
    let desk = desk(&f);
    let mut decliners: Vec<String> = Vec::new();
    let mut declining = first_hazmat(&booked);
    // Without a reason the decline is refused and nothing changes.
    let refused = desk
        .change_status(
            &f.store,
            NS,
            &declining,
            &UnitEvent::Decline {
                incident_id: "INC-1".into(),
                reason: "  ".into(),
            },
            f.now,
        )
        .unwrap_err();
    assert!(refused.to_string().contains("reason"), "{refused}");
    // Five hazmat units, two booked from the lead county (Gangbei, three hazmat); the
    // third replaces the first decliner; then mutual aid from the other city, whose Donghu
    // keeps one hazmat in reserve: it sends one, then (once that one declined and is home
    // again) the other; then nobody is left to send and the shortfall stays. A unit that came
    // by mutual aid and declines is released back to its jurisdiction in the same commit.
    let expected_events: [&[&str]; 4] = [
        &["status", "status", "units_assigned"],
        &[
            "status",
            "mutual_aid_requested",
            "mutual_aid_committed",
            "status",
            "units_assigned",
        ],
        &[
            "status",
            "mutual_aid_released",
            "mutual_aid_requested",
            "mutual_aid_committed",
            "status",
            "units_assigned",
        ],
        &[
            "status",
            "mutual_aid_released",
            "mutual_aid_requested",
            "mutual_aid_declined",
            "units_assigned",
        ],
    ];
    for (round, expected) in expected_events.iter().enumerate() {
        let outbox_before = f.store.outbox_len();
        let staged = desk
            .change_status(
                &f.store,
                NS,
                &declining,
                &UnitEvent::Decline {
                    incident_id: "INC-1".into(),
                    reason: "pump failure".into(),
                },
                lifecycle::unix_ms_now(),
            )
            .unwrap();
        decliners.push(declining.clone());
        let declined = unit(&f.store, &declining);
        assert_eq!(declined.state.status, UnitStatus::Available);
        assert_eq!(declined.ack_due_at_unix_ms, None);
        let record = assignments(&f.store, "INC-1");
        assert!(record.assignments.iter().all(|a| a.unit_id != declining));
        let ended = record.ended.last().unwrap();
        assert_eq!(ended.outcome, AssignmentOutcome::Declined);
        assert_eq!(ended.reason, "pump failure");
        // One commit: the decliner's unit event, mutual aid, the replacement, units_assigned.
        let outbox = f.store.outbox_pending(1000).unwrap();
        let kinds: Vec<&str> = outbox[outbox_before..]
            .iter()
            .map(|e| e.subject.rsplit('.').next().unwrap())
            .collect();
        assert_eq!(kinds, *expected, "round {round}");
        if round < 3 {
            let replacement = staged.replacement.expect("a replacement");
            assert!(!decliners.contains(&replacement.unit_id), "round {round}");
            assert!(hazmat.contains(&replacement.unit_id));
            assert_eq!(
                replacement
                    .reason_codes
                    .iter()
                    .any(|c| c == "via_mutual_aid"),
                round > 0,
                "round {round}: {:?}",
                replacement.reason_codes
            );
            declining = replacement.unit_id;
        } else {
            assert!(staged.replacement.is_none());
            let shortfall = record
                .shortfalls
                .iter()
                .find(|s| s.unit_type == "hazmat")
                .expect("a hazmat shortfall");
            assert!(
                shortfall.reason.contains("no replacement"),
                "{}",
                shortfall.reason
            );
            assert_eq!(shortfall.assigned, 1);
        }
    }
    // A regrade does not send a unit that declined back to the incident either.
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let result = assigner
        .handle(&graded_delivery(&f.region, "INC-1", Grade::II, "regrade"))
        .unwrap();
    commit(&f.store, result, "regrade");
    for assignment in &assignments(&f.store, "INC-1").assignments {
        assert!(!decliners.contains(&assignment.unit_id));
    }
}

#[test]
fn a_released_unit_leaves_the_active_assignments() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    let desk = desk(&f);
    let (on_the_way, never_left) = (&booked.assignments[0], &booked.assignments[1]);
    acknowledge(&f, &on_the_way.unit_id, "INC-1");
    for unit_id in [&on_the_way.unit_id, &never_left.unit_id] {
        desk.change_status(
            &f.store,
            NS,
            unit_id,
            &UnitEvent::Release {
                incident_id: "INC-1".into(),
            },
            lifecycle::unix_ms_now(),
        )
        .unwrap();
    }
    assert_eq!(
        unit(&f.store, &on_the_way.unit_id).state.status,
        UnitStatus::Returning
    );
    let released = unit(&f.store, &never_left.unit_id);
    assert_eq!(released.state.status, UnitStatus::Available);
    assert_eq!(released.ack_due_at_unix_ms, None);
    let record = assignments(&f.store, "INC-1");
    assert_eq!(record.assignments.len(), booked.assignments.len() - 2);
    assert_eq!(record.ended.len(), 2);
    assert!(
        record
            .ended
            .iter()
            .all(|e| e.outcome == AssignmentOutcome::Released)
    );
    // No replacement for a release, and the released unit's timer is gone.
    assert!(
        ack_timers(&f.store)
            .iter()
            .all(|t| t.unit_id != never_left.unit_id)
    );
    // Each release is announced (so intake drops the unit) with no replacement.
    let events = units_assigned_events(&f.store, "INC-1");
    assert_eq!(events.len(), 3);
    let released_ids: Vec<String> = events[1..]
        .iter()
        .map(|event| match &event.body {
            EventBody::UnitsAssigned(units) => {
                assert!(
                    units.assignments.is_empty(),
                    "a release brought a replacement"
                );
                units.released_unit_ids.join(",")
            }
            other => panic!("expected units_assigned, got {other:?}"),
        })
        .collect();
    assert!(
        released_ids.contains(&never_left.unit_id),
        "{released_ids:?}"
    );
}

fn closed_delivery(incident_id: &str, msg_id: &str) -> Delivery {
    let event = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.into(),
        namespace: NS.into(),
        at_unix_ms: 1,
        source_service: "intake".into(),
        body: EventBody::Closed(IncidentClosed {
            by: "feed:cap-quake".into(),
            reason: "every alert was cancelled".into(),
        }),
    };
    Delivery {
        subject: format!("muster.{NS}.incident.390000.{incident_id}.closed"),
        msg_id: msg_id.into(),
        payload: muster_proto::convert::encode_event(&event).into(),
        delivered: 1,
    }
}

#[test]
fn a_closed_incident_releases_every_unit_once_and_books_nothing_after() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    let other = book_grade_iii(&f, "INC-2");
    assert!(booked.assignments.len() >= 2);
    let on_the_way = booked.assignments[0].unit_id.clone();
    acknowledge(&f, &on_the_way, "INC-1");
    let booked_ids: HashSet<String> = booked
        .assignments
        .iter()
        .map(|a| a.unit_id.clone())
        .collect();
    assert!(
        ack_timers(&f.store)
            .iter()
            .any(|t| t.incident_id == "INC-1")
    );

    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let result = assigner
        .handle(&closed_delivery("INC-1", "closed-1"))
        .unwrap();
    commit(&f.store, result, "closed-1");

    // Units that had not acknowledged are free again, their timers gone; the one on its way
    // turns back (Returning, per the lifecycle).
    for id in &booked_ids {
        let record = unit(&f.store, id);
        assert_eq!(record.state.incident_id, None, "{id}");
        assert_eq!(record.ack_due_at_unix_ms, None, "{id}");
        let expected = if *id == on_the_way {
            UnitStatus::Returning
        } else {
            UnitStatus::Available
        };
        assert_eq!(record.state.status, expected, "{id}");
    }
    assert!(
        ack_timers(&f.store)
            .iter()
            .all(|t| t.incident_id != "INC-1")
    );
    let record = assignments(&f.store, "INC-1");
    assert!(record.assignments.is_empty());
    assert!(record.shortfalls.is_empty());
    assert!(record.closed_at_unix_ms.is_some());
    assert_eq!(record.ended.len(), booked_ids.len());
    assert!(
        record
            .ended
            .iter()
            .all(|e| e.outcome == AssignmentOutcome::Released
                && e.reason == "incident closed: every alert was cancelled")
    );

    // One announcement lists every unit that left, with nothing new.
    let events = units_assigned_events(&f.store, "INC-1");
    assert_eq!(events.len(), 2, "the booking and the release");
    match &events[1].body {
        EventBody::UnitsAssigned(units) => {
            assert!(units.assignments.is_empty());
            assert!(units.shortfalls.is_empty());
            let released: HashSet<String> = units.released_unit_ids.iter().cloned().collect();
            assert_eq!(released, booked_ids);
            assert_eq!(units.released_unit_ids.len(), booked_ids.len());
            assert_eq!(units.plan_id, booked.plan_id);
        }
        other => panic!("expected units_assigned, got {other:?}"),
    }
    // The other incident keeps its units.
    assert_eq!(assignments(&f.store, "INC-2"), other);

    // A redelivered (or re-published) close changes nothing.
    let outbox = f.store.outbox_len();
    let result = assigner
        .handle(&closed_delivery("INC-1", "closed-2"))
        .unwrap();
    assert!(result.is_empty());
    commit(&f.store, result, "closed-2");
    assert_eq!(f.store.outbox_len(), outbox);
    assert_eq!(assignments(&f.store, "INC-1"), record);

    // A grading that crossed the close on the bus books nothing.
    let result = assigner
        .handle(&graded_delivery(
            &f.region,
            "INC-1",
            Grade::II,
            "late-graded",
        ))
        .unwrap();
    commit(&f.store, result, "late-graded");
    assert_eq!(f.store.outbox_len(), outbox);
    assert!(assignments(&f.store, "INC-1").assignments.is_empty());

    // A close for an incident dispatch never booked only marks it closed.
    let result = assigner
        .handle(&closed_delivery("INC-9", "closed-9"))
        .unwrap();
    commit(&f.store, result, "closed-9");
    assert_eq!(f.store.outbox_len(), outbox);
    let never = assignments(&f.store, "INC-9");
    assert!(never.assignments.is_empty() && never.closed_at_unix_ms.is_some());
    let result = assigner
        .handle(&graded_delivery(&f.region, "INC-9", Grade::III, "graded-9"))
        .unwrap();
    commit(&f.store, result, "graded-9");
    assert!(assignments(&f.store, "INC-9").assignments.is_empty());
    assert_eq!(f.store.outbox_len(), outbox);
}

// ---- issue 5: reasons, booking by hand, unit commands over NATS, out of service ----------------

#[test]
fn bookings_carry_reason_codes_and_shortfalls_name_their_causes() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    for assignment in &booked.assignments {
        assert_eq!(
            assignment.reason_codes[0], "closest_by_eta",
            "{assignment:?}"
        );
        assert!(
            assignment
                .reason_codes
                .iter()
                .any(|c| c == "in_jurisdiction")
                ^ assignment
                    .reason_codes
                    .iter()
                    .any(|c| c == "outside_jurisdiction"),
            "{assignment:?}"
        );
        assert!(assignment.eta_minutes >= 0.0);
    }
    let hazmat = booked
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat")
        .unwrap();
    // The chemical park's own hazmat units are in its county.
    assert!(hazmat.reason_codes.iter().any(|c| c == "in_jurisdiction"));
    assert_eq!(hazmat.cascade_depth, 0);
    // The stored record and the announced event agree.
    let event = units_assigned_events(&f.store, "INC-1").pop().unwrap();
    let EventBody::UnitsAssigned(units) = event.body else {
        panic!("not units_assigned")
    };
    let summary = |list: &[domain::event::Assignment]| -> Vec<(String, Vec<String>, u32)> {
        list.iter()
            .map(|a| (a.unit_id.clone(), a.reason_codes.clone(), a.cascade_depth))
            .collect()
    };
    assert_eq!(summary(&units.assignments), summary(&booked.assignments));

    // A second incident at grade II wants 4 hazmat; 3 are left in the region.
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let result = assigner
        .handle(&graded_delivery(&f.region, "INC-2", Grade::II, "g2"))
        .unwrap();
    commit(&f.store, result, "g2");
    let second = assignments(&f.store, "INC-2");
    let short = second
        .shortfalls
        .iter()
        .find(|s| s.unit_type == "hazmat")
        .expect("a hazmat shortfall");
    assert_eq!(short.reason_codes[0], "none_available");
    let busy = short.causes.iter().find(|c| c.code == "busy").unwrap();
    assert_eq!(busy.count, 2, "{short:?}");
}

#[test]
fn a_dispatcher_books_an_available_unit_and_a_busy_one_is_refused_naming_its_state() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let result = assigner
        .handle(&graded_delivery(&f.region, "INC-2", Grade::IV, "g2"))
        .unwrap();
    commit(&f.store, result, "g2");
    let desk = desk(&f);
    let now = lifecycle::unix_ms_now();

    // A unit on INC-1 cannot be booked to INC-2.
    let taken = first_hazmat(&booked);
    let error = desk
        .assign(&f.store, NS, "INC-2", &taken, "dispatcher Li", now)
        .unwrap_err();
    assert!(
        matches!(
            error,
            assignment::StatusChangeError::NotAvailable {
                status: UnitStatus::Dispatched,
                ..
            }
        ),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("Dispatched") && text.contains("INC-1"),
        "{text}"
    );
    assert_eq!(
        unit(&f.store, &taken).state.incident_id.as_deref(),
        Some("INC-1")
    );

    // A free hazmat unit is booked, its timer armed, the booking announced.
    let free = hazmat_ids(&f.region)
        .into_iter()
        .find(|id| unit(&f.store, id).state.status == UnitStatus::Available)
        .unwrap();
    let timers_before = ack_timers(&f.store).len();
    let staged = desk
        .assign(&f.store, NS, "INC-2", &free, "dispatcher Li", now)
        .unwrap();
    assert_eq!(staged.unit.state.status, UnitStatus::Dispatched);
    assert_eq!(ack_timers(&f.store).len(), timers_before + 1);
    let record = assignments(&f.store, "INC-2");
    let booked_by_hand = record
        .assignments
        .iter()
        .find(|a| a.unit_id == free)
        .unwrap();
    assert_eq!(booked_by_hand.reason_codes[0], "dispatcher_assigned");
    assert!(booked_by_hand.reason.contains("dispatcher Li"));
    assert!(booked_by_hand.eta_minutes > 0.0);
    let announced = units_assigned_events(&f.store, "INC-2");
    assert!(announced.iter().any(|event| matches!(&event.body,
        EventBody::UnitsAssigned(units) if units.assignments.iter().any(|a| a.unit_id == free))));
    // Twice is refused: it is dispatched now.
    assert!(matches!(
        desk.assign(&f.store, NS, "INC-2", &free, "dispatcher Li", now),
        Err(assignment::StatusChangeError::NotAvailable { .. })
    ));
    // Unknown incidents are refused.
    assert!(matches!(
        desk.assign(&f.store, NS, "INC-404", &free, "x", now),
        Err(assignment::StatusChangeError::UnknownIncident { .. })
    ));

    // The compare-and-swap: a booking staged on a unit that changes before the commit fails.
    let other = hazmat_ids(&f.region)
        .into_iter()
        .find(|id| unit(&f.store, id).state.status == UnitStatus::Available)
        .unwrap();
    let staged = desk
        .stage_assignment(&f.store, NS, "INC-2", &other, "dispatcher Li", now)
        .unwrap();
    let mut changed = unit(&f.store, &other);
    changed
        .apply(
            &UnitEvent::GoOutOfService {
                reason: "pump failure".into(),
            },
            now,
        )
        .unwrap();
    put(&f.store, &changed);
    assert!(matches!(
        f.store.commit(&staged.commit),
        Err(store::Error::Conflict { .. })
    ));
    assert_eq!(
        unit(&f.store, &other).state.status,
        UnitStatus::OutOfService
    );
}

fn command_delivery(
    unit_id: &str,
    event: muster_proto::v1::UnitStatusEvent,
    incident_id: &str,
    reason: &str,
    msg_id: &str,
) -> Delivery {
    Delivery {
        subject: format!("muster.{NS}.unit.{unit_id}.command"),
        msg_id: msg_id.into(),
        payload: convert_unit::encode_unit_command(event, incident_id, reason, 1).into(),
        delivered: 1,
    }
}

#[test]
fn unit_commands_acknowledge_and_decline_through_the_desk_and_bad_ones_are_terminated() {
    use muster_proto::v1::UnitStatusEvent as Ev;
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    let hazmat: Vec<String> = booked
        .assignments
        .iter()
        .filter(|a| a.unit_type == "hazmat")
        .map(|a| a.unit_id.clone())
        .collect();
    let mut handler = dispatch::UnitCommandHandler::new(f.store.clone(), desk(&f), NS.into());

    let ack = handler
        .handle(&command_delivery(
            &hazmat[0],
            Ev::Acknowledge,
            "INC-1",
            "",
            "c1",
        ))
        .unwrap();
    commit(&f.store, ack, "c1");
    assert_eq!(unit(&f.store, &hazmat[0]).state.status, UnitStatus::Enroute);
    // Redelivered with the same id: the store says already processed, nothing changes twice.
    let again = handler.handle(&command_delivery(
        &hazmat[0],
        Ev::Acknowledge,
        "INC-1",
        "",
        "c1",
    ));
    assert!(
        matches!(again, Err(HandlerError::Poison(_))),
        "a duplicate acknowledgement is refused by the state machine"
    );

    let decline = handler
        .handle(&command_delivery(
            &hazmat[1],
            Ev::Decline,
            "INC-1",
            "crew short",
            "c2",
        ))
        .unwrap();
    commit(&f.store, decline, "c2");
    assert_eq!(
        unit(&f.store, &hazmat[1]).state.status,
        UnitStatus::Available
    );
    let record = assignments(&f.store, "INC-1");
    assert!(record.ended.iter().any(|e| e.unit_id == hazmat[1]
        && e.outcome == AssignmentOutcome::Declined
        && e.reason == "crew short"));
    let replacement = record
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat" && a.reason_codes.iter().any(|c| c == "replacement"))
        .expect("a replacement");
    assert_ne!(replacement.unit_id, hazmat[1]);

    // Invalid commands are terminated with a reason.
    for delivery in [
        command_delivery(&hazmat[0], Ev::Decline, "INC-1", "", "c3"), // no reason
        command_delivery(&hazmat[0], Ev::Unspecified, "INC-1", "", "c4"),
        command_delivery("NOPE", Ev::Acknowledge, "INC-1", "", "c5"),
        Delivery {
            subject: format!("muster.{NS}.unit.{}.command", hazmat[0]),
            msg_id: "c6".into(),
            payload: bytes::Bytes::from_static(b"\xff\xff\xff"),
            delivered: 1,
        },
    ] {
        match handler.handle(&delivery) {
            Err(HandlerError::Poison(reason)) => assert!(!reason.is_empty()),
            other => panic!("{} should be terminated, got {other:?}", delivery.msg_id),
        }
    }
}

#[test]
fn a_committed_unit_that_goes_out_of_service_is_replaced_in_the_same_commit() {
    let f = fixture();
    let booked = book_grade_iii(&f, "INC-1");
    let broken = first_hazmat(&booked);
    acknowledge(&f, &broken, "INC-1");
    let staged = desk(&f)
        .change_status(
            &f.store,
            NS,
            &broken,
            &UnitEvent::GoOutOfService {
                reason: "pump failure".into(),
            },
            lifecycle::unix_ms_now(),
        )
        .unwrap();
    assert_eq!(staged.unit.state.status, UnitStatus::OutOfService);
    let replacement = staged.replacement.expect("a replacement is booked");
    assert_eq!(replacement.unit_type, "hazmat");
    assert!(replacement.reason_codes.iter().any(|c| c == "replacement"));
    assert_eq!(
        unit(&f.store, &replacement.unit_id).state.status,
        UnitStatus::Dispatched
    );
    let record = assignments(&f.store, "INC-1");
    assert!(record.assignments.iter().all(|a| a.unit_id != broken));
    assert!(
        record
            .assignments
            .iter()
            .any(|a| a.unit_id == replacement.unit_id)
    );
    assert!(
        record
            .ended
            .iter()
            .any(|e| e.unit_id == broken && e.outcome == AssignmentOutcome::OutOfService)
    );
    let announced = units_assigned_events(&f.store, "INC-1");
    assert!(announced.iter().any(|event| matches!(&event.body,
        EventBody::UnitsAssigned(units) if units.released_unit_ids == [broken.clone()]
            && units.assignments.iter().any(|a| a.unit_id == replacement.unit_id))));
}
