//! Mutual aid in dispatch against a real sled store (no NATS): a county-led incident whose county
//! has no hazmat gets one from its sibling county (request and commitment as separate events,
//! `via_mutual_aid` on the booking), a neighbour keeping its reserve declines, closing the
//! incident releases the aid units, a province-led incident asks nobody, and concurrent
//! incidents never double-book.

use std::collections::HashSet;
use std::sync::Arc;

use bus::{Delivery, Handler};
use dispatch::mutual_aid::{load_requests, mutual_aid_key};
use dispatch::registry::{self, UnitRecord};
use dispatch::{Assigner, AssignmentRecord};
use domain::class::IncidentClass;
use domain::event::{EventBody, Graded, IncidentClosed, IncidentEvent, IncidentReport, MutualAid};
use domain::grade::{Facts, Grade};
use domain::jurisdiction::Level;
use domain::mutual_aid::{DeclineReason, MutualAidRequest, RequestState};
use domain::region::Region;
use domain::unit::{UnitEvent, UnitStatus};
use store::{Commit, Committed, Store};

const NS: &str = "live";
const QINGXI_TOWN: &str = "390121100";
const QINGXI_COUNTY: &str = "390121";
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

fn graded(
    region: &Region,
    incident_id: &str,
    township: &str,
    lead: &str,
    lead_level: Level,
    grade: Grade,
) -> Delivery {
    let event = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.into(),
        namespace: NS.into(),
        at_unix_ms: 1,
        source_service: "escalation".into(),
        body: EventBody::Graded(Graded {
            grade: Some(grade),
            response_level: Some(4),
            lead_code: lead.into(),
            lead_name: region.tree.get(lead).unwrap().name.clone(),
            lead_level,
            rule_id: "test".into(),
            rule_version: 1,
            reason: "test".into(),
            initial_judgement: false,
            facts: Facts::default(),
            report: IncidentReport {
                kind: "accident.hazardous_chemicals".into(),
                class: IncidentClass::Accident,
                township_code: township.into(),
                other_township_codes: vec![],
                location: region.township_centroid(township).unwrap(),
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
        msg_id: format!("graded-{incident_id}-{grade:?}"),
        payload: muster_proto::convert::encode_event(&event).into(),
        delivered: 1,
    }
}

fn closed(incident_id: &str) -> Delivery {
    let event = IncidentEvent {
        event_id: String::new(),
        incident_id: incident_id.into(),
        namespace: NS.into(),
        at_unix_ms: 1,
        source_service: "intake".into(),
        body: EventBody::Closed(IncidentClosed {
            by: "officer".into(),
            reason: "leak sealed".into(),
        }),
    };
    Delivery {
        subject: format!("muster.{NS}.incident.390000.{incident_id}.closed"),
        msg_id: format!("closed-{incident_id}"),
        payload: muster_proto::convert::encode_event(&event).into(),
        delivered: 1,
    }
}

fn handle(f: &Fixture, delivery: &Delivery) {
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    let mut commit = assigner.handle(delivery).unwrap();
    commit.processed(delivery.msg_id.clone());
    assert!(matches!(
        f.store.commit(&commit).unwrap(),
        Committed::Applied { .. }
    ));
}

fn unit(store: &Store, unit_id: &str) -> UnitRecord {
    registry::load(store, NS, unit_id).unwrap().unwrap().1
}

fn set_status(f: &Fixture, unit_id: &str, event: UnitEvent) {
    let mut record = unit(&f.store, unit_id);
    record.apply(&event, f.now).unwrap();
    let mut commit = Commit::new();
    commit
        .put(registry::unit_key(NS, unit_id), &record)
        .unwrap();
    f.store.commit(&commit).unwrap();
}

fn record(store: &Store, incident_id: &str) -> AssignmentRecord {
    store
        .get(&dispatch::assignment_key(NS, incident_id))
        .unwrap()
        .unwrap()
}

/// The incident's events in the outbox, oldest first.
fn events(store: &Store, incident_id: &str) -> Vec<IncidentEvent> {
    store
        .outbox_pending(10_000)
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.subject
                .starts_with(&format!("muster.{NS}.incident.390000.{incident_id}."))
        })
        .map(|e| muster_proto::convert::decode_event(&e.payload, "x").unwrap())
        .collect()
}

fn aid_of(event: &IncidentEvent) -> Option<&MutualAid> {
    match &event.body {
        EventBody::MutualAidRequested(aid)
        | EventBody::MutualAidCommitted(aid)
        | EventBody::MutualAidDeclined(aid)
        | EventBody::MutualAidReleased(aid) => Some(aid),
        _ => None,
    }
}

#[test]
fn a_county_without_hazmat_gets_one_from_its_sibling_county_by_mutual_aid() {
    let f = fixture();
    handle(
        &f,
        &graded(
            &f.region,
            "INC-1",
            QINGXI_TOWN,
            QINGXI_COUNTY,
            Level::County,
            Grade::IV,
        ),
    );
    let booked = record(&f.store, "INC-1");
    // hazchem-IV: 1 hazmat, 2 fire engines, 1 ambulance. Qingxi's own engines and ambulance.
    let own: Vec<&str> = booked
        .assignments
        .iter()
        .filter(|a| a.unit_type != "hazmat")
        .map(|a| a.unit_id.as_str())
        .collect();
    assert_eq!(own.len(), 3);
    for assignment in booked
        .assignments
        .iter()
        .filter(|a| a.unit_type != "hazmat")
    {
        assert!(
            assignment.unit_id.starts_with("QX-"),
            "{}",
            assignment.unit_id
        );
        assert!(
            assignment
                .reason_codes
                .contains(&"in_jurisdiction".to_string())
        );
        assert!(
            !assignment
                .reason_codes
                .contains(&"via_mutual_aid".to_string())
        );
        assert_eq!(assignment.cascade_depth, 0);
    }
    // The hazmat came from Donghu, the sibling county, the nearest of its two.
    let hazmat = booked
        .assignments
        .iter()
        .find(|a| a.unit_type == "hazmat")
        .expect("a hazmat unit by mutual aid");
    assert!(hazmat.unit_id.starts_with("DH-HAZ-"), "{}", hazmat.unit_id);
    for code in ["via_mutual_aid", "cascade_depth", "outside_jurisdiction"] {
        assert!(
            hazmat.reason_codes.contains(&code.to_string()),
            "{code} missing from {:?}",
            hazmat.reason_codes
        );
    }
    assert_eq!(hazmat.cascade_depth, 1);
    assert!(hazmat.reason.contains("INC-1-MA001"), "{}", hazmat.reason);
    assert!(booked.shortfalls.is_empty(), "{:?}", booked.shortfalls);
    // Booked like any unit: Dispatched to the incident.
    let state = unit(&f.store, &hazmat.unit_id).state;
    assert_eq!(state.status, UnitStatus::Dispatched);
    assert_eq!(state.incident_id.as_deref(), Some("INC-1"));

    // Events: requested, then committed, then units_assigned announcing the unit.
    let kinds: Vec<&str> = events(&f.store, "INC-1")
        .iter()
        .map(|e| e.body.event_type())
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        kinds,
        vec![
            "mutual_aid_requested",
            "mutual_aid_committed",
            "units_assigned"
        ]
    );
    let all = events(&f.store, "INC-1");
    let requested = aid_of(&all[0]).unwrap();
    assert_eq!(requested.request_id, "INC-1-MA001");
    assert_eq!(requested.from.code, QINGXI_COUNTY);
    assert_eq!(requested.to.code, "390102");
    assert_eq!(requested.resource_type, "hazmat");
    assert_eq!(requested.quantity, 1);
    assert!(requested.unit_ids.is_empty());
    let committed = aid_of(&all[1]).unwrap();
    assert_eq!(committed.unit_ids, vec![hazmat.unit_id.clone()]);
    assert_eq!(committed.quantity, 1);
    match &all[2].body {
        EventBody::UnitsAssigned(units) => {
            assert!(
                units
                    .assignments
                    .iter()
                    .any(|a| a.unit_id == hazmat.unit_id)
            );
        }
        other => panic!("expected units_assigned, got {other:?}"),
    }

    // The stored request.
    let stored: MutualAidRequest = f
        .store
        .get(&mutual_aid_key(NS, "INC-1", "INC-1-MA001"))
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, RequestState::Committed);
    assert_eq!(stored.committed_unit_ids, vec![hazmat.unit_id.clone()]);
    assert_eq!(load_requests(&f.store, NS, "INC-1").unwrap(), vec![stored]);
}

#[test]
fn a_neighbour_keeping_its_reserve_declines_and_the_next_ring_is_asked() {
    let f = fixture();
    // Donghu has one hazmat left (its reserve) and Gangbei's three are out of service.
    set_status(
        &f,
        "DH-HAZ-2",
        UnitEvent::Assign {
            incident_id: "INC-0".into(),
        },
    );
    for id in ["GB-HAZ-1", "GB-HAZ-2", "GB-HAZ-3"] {
        set_status(
            &f,
            id,
            UnitEvent::GoOutOfService {
                reason: "decontamination".into(),
            },
        );
    }
    handle(
        &f,
        &graded(
            &f.region,
            "INC-1",
            QINGXI_TOWN,
            QINGXI_COUNTY,
            Level::County,
            Grade::IV,
        ),
    );
    let aid: Vec<IncidentEvent> = events(&f.store, "INC-1")
        .into_iter()
        .filter(|e| aid_of(e).is_some())
        .collect();
    let summary: Vec<(&str, &str, &str)> = aid
        .iter()
        .map(|e| {
            let a = aid_of(e).unwrap();
            (
                e.body.event_type(),
                a.to.code.as_str(),
                a.reason_code.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("mutual_aid_requested", "390102", ""),
            ("mutual_aid_declined", "390102", "reserve"),
            ("mutual_aid_requested", "390200", ""),
            ("mutual_aid_declined", "390200", "none_available"),
        ]
    );
    let requests = load_requests(&f.store, NS, "INC-1").unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].decline,
        Some(DeclineReason::Reserve {
            available: 1,
            keep: 1
        })
    );
    assert_eq!(requests[1].cascade_depth, 2);
    assert_eq!(requests[1].state, RequestState::Declined);
    // The reserve stays home and the shortfall says why.
    assert!(
        unit(&f.store, "DH-HAZ-1").state.status == UnitStatus::Available
            || unit(&f.store, "DH-HAZ-2").state.status == UnitStatus::Available,
        "Donghu kept no hazmat in reserve"
    );
    let shortfall = record(&f.store, "INC-1")
        .shortfalls
        .into_iter()
        .find(|s| s.unit_type == "hazmat")
        .expect("a hazmat shortfall");
    assert!(
        shortfall
            .reason_codes
            .contains(&"held_in_reserve".to_string())
    );
    assert!(
        shortfall.reason.contains("390102 declined (reserve)"),
        "{}",
        shortfall.reason
    );
}

#[test]
fn closing_the_incident_releases_mutual_aid_units_back_to_their_jurisdiction() {
    let f = fixture();
    handle(
        &f,
        &graded(
            &f.region,
            "INC-1",
            QINGXI_TOWN,
            QINGXI_COUNTY,
            Level::County,
            Grade::IV,
        ),
    );
    let hazmat = record(&f.store, "INC-1")
        .assignments
        .into_iter()
        .find(|a| a.unit_type == "hazmat")
        .unwrap();
    handle(&f, &closed("INC-1"));
    assert_eq!(
        unit(&f.store, &hazmat.unit_id).state.status,
        UnitStatus::Available
    );
    let all = events(&f.store, "INC-1");
    let released: Vec<&MutualAid> = all
        .iter()
        .filter(|e| matches!(e.body, EventBody::MutualAidReleased(_)))
        .filter_map(aid_of)
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].request_id, "INC-1-MA001");
    assert_eq!(released[0].unit_ids, vec![hazmat.unit_id.clone()]);
    assert_eq!(released[0].reason_code, "released");
    let request = &load_requests(&f.store, NS, "INC-1").unwrap()[0];
    assert_eq!(request.state, RequestState::Released);
    assert!(request.released_at_unix_ms.is_some());
    assert!(record(&f.store, "INC-1").aid_request_by_unit.is_empty());
    // A redelivered close changes nothing, and releases nothing twice.
    let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
    assert!(assigner.handle(&closed("INC-1")).unwrap().is_empty());
}

#[test]
fn a_province_led_incident_draws_on_the_whole_province_without_requests() {
    let f = fixture();
    // Grade II at Qingxi, led by the province: hazchem-II asks for 4 hazmat; Qingxi has none,
    // but the whole province is the lead's own: no request at all, no reserve kept.
    handle(
        &f,
        &graded(
            &f.region,
            "INC-1",
            QINGXI_TOWN,
            "390000",
            Level::Province,
            Grade::II,
        ),
    );
    let booked = record(&f.store, "INC-1");
    let hazmat: Vec<_> = booked
        .assignments
        .iter()
        .filter(|a| a.unit_type == "hazmat")
        .collect();
    assert_eq!(hazmat.len(), 4);
    for assignment in &booked.assignments {
        assert!(
            assignment
                .reason_codes
                .contains(&"in_jurisdiction".to_string())
        );
        assert!(
            !assignment
                .reason_codes
                .contains(&"via_mutual_aid".to_string())
        );
    }
    assert!(load_requests(&f.store, NS, "INC-1").unwrap().is_empty());
    assert!(
        events(&f.store, "INC-1")
            .iter()
            .all(|e| aid_of(e).is_none())
    );

    // The same kind of incident county-led at grade IV at the chemical park: Gangbei county's
    // own hazmat, no request.
    handle(
        &f,
        &graded(
            &f.region,
            "INC-2",
            CHEMICAL_PARK,
            "390202",
            Level::County,
            Grade::IV,
        ),
    );
    assert!(load_requests(&f.store, NS, "INC-2").unwrap().is_empty());
}

#[test]
fn concurrent_incidents_never_double_book_mutual_aid_units() {
    let f = fixture();
    // Eight county-led incidents at Qingxi at once, each staged on the same state before any
    // commits: the compare-and-swap lets one booking of each unit win, the rest stage again.
    let deliveries: Vec<Delivery> = (0..8)
        .map(|i| {
            graded(
                &f.region,
                &format!("INC-{i}"),
                QINGXI_TOWN,
                QINGXI_COUNTY,
                Level::County,
                Grade::IV,
            )
        })
        .collect();
    std::thread::scope(|scope| {
        for delivery in &deliveries {
            let f = &f;
            scope.spawn(move || {
                let mut assigner = Assigner::new(f.store.clone(), f.region.clone());
                for _attempt in 0..64 {
                    // A unit taken between the scan and the re-read is a retry, as in the consumer.
                    let mut commit = match assigner.handle(delivery) {
                        Ok(commit) => commit,
                        Err(bus::HandlerError::Retry(_)) => continue,
                        Err(other) => panic!("{other:?}"),
                    };
                    commit.processed(delivery.msg_id.clone());
                    match f.store.commit(&commit) {
                        Ok(_) => return,
                        Err(store::Error::Conflict { .. }) => continue,
                        Err(error) => panic!("{error}"),
                    }
                }
                panic!("{} never committed", delivery.msg_id);
            });
        }
    });
    let mut seen: HashSet<String> = HashSet::new();
    let mut aid_hazmat = 0;
    for i in 0..8 {
        let booked = record(&f.store, &format!("INC-{i}"));
        for assignment in &booked.assignments {
            assert!(
                seen.insert(assignment.unit_id.clone()),
                "{} booked twice",
                assignment.unit_id
            );
            let state = unit(&f.store, &assignment.unit_id).state;
            assert_eq!(state.incident_id, Some(format!("INC-{i}")));
            if assignment.unit_type == "hazmat" {
                // Qingxi has no hazmat: every one came by mutual aid.
                assert!(
                    assignment
                        .reason_codes
                        .contains(&"via_mutual_aid".to_string())
                );
                aid_hazmat += 1;
            }
        }
        // Every committed unit of every request is booked to that incident.
        for request in load_requests(&f.store, NS, &format!("INC-{i}")).unwrap() {
            for unit_id in &request.committed_unit_ids {
                assert_eq!(
                    unit(&f.store, unit_id).state.incident_id,
                    Some(format!("INC-{i}"))
                );
            }
        }
    }
    // Donghu keeps one of its two hazmat (grade IV) and sends one; the other city keeps one of
    // Gangbei's three and sends two: three hazmat by mutual aid, whatever the interleaving.
    assert_eq!(aid_hazmat, 3);
    assert!(
        unit(&f.store, "DH-HAZ-1").state.status == UnitStatus::Available
            || unit(&f.store, "DH-HAZ-2").state.status == UnitStatus::Available,
        "Donghu kept no hazmat in reserve"
    );
}
