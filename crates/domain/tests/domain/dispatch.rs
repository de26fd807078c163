//! Integration tests for dispatch: the unit status state machine (every pair, every event), the
//! ETA recommendation and its reasons, plan differences on a regrade, and seeded random checks
//! that print their seed on failure.

use std::collections::{HashMap, HashSet};

use domain::dispatch::{
    Gap, Pick, PickReason, RecommendOptions, ShortfallReason, UnitView, plan_difference, recommend,
    recommend_by_eta,
};
use domain::geo::{GeoPoint, great_circle_km};
use domain::grade::Grade;
use domain::region::{Region, ResourceRequirement, SourceFile, Unit};
use domain::unit::{UnitEvent, UnitState, UnitStatus, transition};

// ---- helpers ---------------------------------------------------------------------------------

const NOW_UNIX_MS: i64 = 1_750_000_000_000;
const MINUTE_MS: i64 = 60_000;

fn unit(id: &str, unit_type: &str, lat: f64, lon: f64) -> Unit {
    unit_in(id, unit_type, lat, lon, "100101")
}

fn unit_in(id: &str, unit_type: &str, lat: f64, lon: f64, county: &str) -> Unit {
    Unit {
        id: id.into(),
        call_sign: format!("{id} call sign"),
        unit_type: unit_type.into(),
        home_township: format!("{county}001"),
        jurisdiction: county.into(),
        position: GeoPoint { lat, lon },
        capabilities: vec![],
        crew_size: 4,
    }
}

/// Every unit available with a position reported one minute ago.
fn fresh(units: &[Unit]) -> Vec<UnitView<'_>> {
    units
        .iter()
        .map(|u| UnitView::new(u, UnitStatus::Available, NOW_UNIX_MS - MINUTE_MS))
        .collect()
}

fn need(unit_type: &str, count: u32) -> ResourceRequirement {
    ResourceRequirement {
        unit_type: unit_type.into(),
        count,
    }
}

fn ids(picks: &[Pick]) -> Vec<&str> {
    picks.iter().map(|p| p.unit_id.as_str()).collect()
}

const AT: GeoPoint = GeoPoint {
    lat: 30.0,
    lon: 120.0,
};

/// A tiny xorshift64* generator, so the seeded checks need no dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seeds to run: `MUSTER_SEED=<n>` replays one, otherwise a fixed range.
fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("MUSTER_SEED") {
        Ok(seed) => vec![seed.parse().expect("MUSTER_SEED must be a u64")],
        Err(_) => (1..=count).collect(),
    }
}

// ---- the status state machine ----------------------------------------------------------------

/// The legal moves, written out independently of the implementation.
fn legal(from: UnitStatus, to: UnitStatus) -> bool {
    use UnitStatus::*;
    matches!(
        (from, to),
        (Available, Dispatched)
            | (Available, OutOfService)
            | (Dispatched, Enroute)
            | (Dispatched, Available)
            | (Dispatched, OutOfService)
            | (Enroute, OnScene)
            | (Enroute, Staging)
            | (Enroute, Returning)
            | (Enroute, OutOfService)
            | (Staging, OnScene)
            | (Staging, Returning)
            | (Staging, OutOfService)
            | (OnScene, Returning)
            | (OnScene, OutOfService)
            | (Returning, Available)
            | (Returning, OutOfService)
            | (OutOfService, Available)
    )
}

#[test]
fn transition_table_covers_all_pairs() {
    let mut legal_count = 0;
    for from in UnitStatus::ALL {
        for to in UnitStatus::ALL {
            let result = transition(from, to);
            assert_eq!(result.is_ok(), legal(from, to), "{from} → {to}: {result:?}");
            if let Err(error) = result {
                assert_eq!((error.from, error.to), (from, to));
                let text = error.to_string();
                assert!(text.starts_with(&format!("{from} → {to}: ")), "{text}");
                assert!(
                    error.reason.len() > 20,
                    "{from} → {to}: reason too thin: {text}"
                );
                assert!(
                    !error.reason.contains("not part of the unit lifecycle"),
                    "{from} → {to} fell through to the catch-all: {text}"
                );
            } else {
                legal_count += 1;
            }
        }
    }
    assert_eq!(legal_count, 17);
    assert_eq!(
        transition(UnitStatus::OutOfService, UnitStatus::Dispatched)
            .unwrap_err()
            .to_string(),
        "OutOfService → Dispatched: an out-of-service unit cannot be dispatched; return it to service first"
    );
}

#[test]
fn unit_status_serialises_snake_case() {
    for status in UnitStatus::ALL {
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, format!("\"{}\"", status.as_str()));
        assert_eq!(serde_json::from_str::<UnitStatus>(&json).unwrap(), status);
    }
    assert_eq!(
        serde_json::to_string(&UnitStatus::OutOfService).unwrap(),
        "\"out_of_service\""
    );
}

fn all_events(incident_id: &str) -> Vec<UnitEvent> {
    let incident_id = incident_id.to_string();
    vec![
        UnitEvent::Assign {
            incident_id: incident_id.clone(),
        },
        UnitEvent::Acknowledge {
            incident_id: incident_id.clone(),
        },
        UnitEvent::Decline {
            incident_id: incident_id.clone(),
            reason: "crew at training".into(),
        },
        UnitEvent::AcknowledgementTimedOut {
            incident_id: incident_id.clone(),
        },
        UnitEvent::Stage {
            incident_id: incident_id.clone(),
        },
        UnitEvent::Arrive {
            incident_id: incident_id.clone(),
        },
        UnitEvent::Release { incident_id },
        UnitEvent::Clear,
        UnitEvent::GoOutOfService {
            reason: "pump failure".into(),
        },
        UnitEvent::ReturnToService,
    ]
}

/// A state in `status`, on incident INC-1 when the status is committed.
fn state_in(status: UnitStatus) -> UnitState {
    UnitState {
        unit_id: "U-1".into(),
        status,
        incident_id: status.is_committed().then(|| "INC-1".to_string()),
        out_of_service_reason: (status == UnitStatus::OutOfService).then(|| "crew".to_string()),
        since_unix_ms: 0,
    }
}

/// What each event does from each status: `Some(target)` or refused.
fn expected_event_result(from: UnitStatus, event: &UnitEvent) -> Option<UnitStatus> {
    use UnitStatus::*;
    match (event, from) {
        (UnitEvent::Assign { .. }, Available) => Some(Dispatched),
        (UnitEvent::Acknowledge { .. }, Dispatched) => Some(Enroute),
        (UnitEvent::Decline { .. }, Dispatched) => Some(Available),
        (UnitEvent::AcknowledgementTimedOut { .. }, Dispatched) => Some(Available),
        (UnitEvent::Stage { .. }, Enroute) => Some(Staging),
        (UnitEvent::Arrive { .. }, Enroute | Staging) => Some(OnScene),
        (UnitEvent::Release { .. }, Dispatched) => Some(Available),
        (UnitEvent::Release { .. }, Enroute | Staging | OnScene) => Some(Returning),
        (UnitEvent::Clear, Returning) => Some(Available),
        (UnitEvent::GoOutOfService { .. }, from) if from != OutOfService => Some(OutOfService),
        (UnitEvent::ReturnToService, OutOfService) => Some(Available),
        _ => None,
    }
}

#[test]
fn every_event_from_every_status() {
    for from in UnitStatus::ALL {
        for event in all_events("INC-1") {
            let mut state = state_in(from);
            let before = state.clone();
            let result = state.apply(&event, 42);
            match expected_event_result(from, &event) {
                Some(to) => {
                    let change =
                        result.unwrap_or_else(|e| panic!("{} from {from}: {e}", event.name()));
                    assert_eq!((change.from, change.to), (from, to), "{}", event.name());
                    assert!(transition(from, to).is_ok());
                    assert_eq!(state.status, to);
                    assert_eq!(state.since_unix_ms, 42);
                    assert_eq!(change.at_unix_ms, 42);
                    assert_eq!(state.incident_id.is_some(), to.is_committed());
                    assert_eq!(
                        state.out_of_service_reason.is_some(),
                        to == UnitStatus::OutOfService
                    );
                }
                None => {
                    let error =
                        result.expect_err(&format!("{} from {from} must be refused", event.name()));
                    assert_eq!(error.from, from);
                    assert!(!error.reason.is_empty());
                    assert_eq!(state, before, "a refused event must not change the state");
                }
            }
        }
    }
}

#[test]
fn events_for_another_incident_and_missing_reasons_are_refused() {
    let mut state = UnitState::new("U-1", 0);
    state
        .apply(
            &UnitEvent::Assign {
                incident_id: "INC-2".into(),
            },
            1,
        )
        .unwrap();
    // A late acknowledgement of an earlier assignment must not acknowledge this one.
    let error = state
        .apply(
            &UnitEvent::Acknowledge {
                incident_id: "INC-1".into(),
            },
            2,
        )
        .unwrap_err();
    assert!(error.reason.contains("\"INC-2\""), "{error}");
    let error = state
        .apply(
            &UnitEvent::Decline {
                incident_id: "INC-2".into(),
                reason: "  ".into(),
            },
            3,
        )
        .unwrap_err();
    assert!(error.reason.contains("reason is required"), "{error}");
    let change = state
        .apply(
            &UnitEvent::Decline {
                incident_id: "INC-2".into(),
                reason: "crew short".into(),
            },
            4,
        )
        .unwrap();
    assert_eq!(change.reason.as_deref(), Some("crew short"));
    assert_eq!(change.incident_id.as_deref(), Some("INC-2"));
    assert_eq!(state.status, UnitStatus::Available);
    assert_eq!(state.incident_id, None);

    // Breaking down en route vacates the assignment, and the change says which incident lost it.
    state
        .apply(
            &UnitEvent::Assign {
                incident_id: "INC-3".into(),
            },
            5,
        )
        .unwrap();
    let change = state
        .apply(
            &UnitEvent::GoOutOfService {
                reason: "flat tyre".into(),
            },
            6,
        )
        .unwrap();
    assert_eq!(change.incident_id.as_deref(), Some("INC-3"));
    assert_eq!(state.incident_id, None);
    let error = state
        .apply(
            &UnitEvent::Assign {
                incident_id: "INC-4".into(),
            },
            7,
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("return it to service first"),
        "{error}"
    );
}

#[test]
fn seeded_event_walk_keeps_the_invariants() {
    for seed in seeds(300) {
        let mut rng = XorShift::new(seed);
        let mut state = UnitState::new("U-1", 0);
        let mut now = 0;
        for step in 0..200 {
            let incident = format!("INC-{}", rng.below(3));
            let events = all_events(&incident);
            let event = &events[rng.below(events.len() as u64) as usize];
            now += rng.below(1000) as i64;
            let before = state.clone();
            match state.apply(event, now) {
                Ok(change) => {
                    assert!(
                        transition(change.from, change.to).is_ok(),
                        "seed {seed} step {step}: {change:?}"
                    );
                    // Replaying an accepted event (a duplicate message) is always refused, so
                    // duplicates cannot move a unit twice.
                    let mut replay = state.clone();
                    assert!(
                        replay.apply(event, now).is_err(),
                        "seed {seed} step {step}: duplicate {} accepted",
                        event.name()
                    );
                }
                Err(_) => assert_eq!(state, before, "seed {seed} step {step}"),
            }
            assert_eq!(
                state.incident_id.is_some(),
                state.status.is_committed(),
                "seed {seed} step {step}: {state:?}"
            );
        }
    }
}

// ---- recommendation --------------------------------------------------------------------------

#[test]
fn ties_are_broken_by_unit_id() {
    let units = vec![
        unit("b", "ambulance", 30.1, 120.0),
        unit("a", "ambulance", 30.1, 120.0),
        unit("c", "ambulance", 30.1, 120.0),
    ];
    let views = fresh(&units);
    let options = RecommendOptions::default();
    let first = recommend_by_eta(&[need("ambulance", 2)], AT, &views, &options, NOW_UNIX_MS);
    assert_eq!(ids(&first.picks), ["a", "b"]);
    // Input order does not matter.
    let mut reversed = views.clone();
    reversed.reverse();
    let second = recommend_by_eta(
        &[need("ambulance", 2)],
        AT,
        &reversed,
        &options,
        NOW_UNIX_MS,
    );
    assert_eq!(first, second);
    assert!(first.is_complete());
    assert_eq!(
        first.picks[1].reasons[0],
        PickReason::ClosestByEta {
            eta_min: first.picks[1].eta_min.unwrap(),
            rank: 2
        }
    );
}

#[test]
fn stale_positions_are_skipped_and_reported() {
    let units = vec![
        unit("near-stale", "hazmat", 30.01, 120.0),
        unit("far-fresh", "hazmat", 30.3, 120.0),
        unit("edge", "hazmat", 30.02, 120.0),
    ];
    let mut views = fresh(&units);
    views[0].position_at_unix_ms = NOW_UNIX_MS - 31 * MINUTE_MS;
    views[2].position_at_unix_ms = NOW_UNIX_MS - 30 * MINUTE_MS; // exactly 30 min: still fresh
    let recommendation = recommend_by_eta(
        &[need("hazmat", 3)],
        AT,
        &views,
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    assert_eq!(ids(&recommendation.picks), ["edge", "far-fresh"]);
    let gap = &recommendation.gaps[0];
    assert_eq!((gap.required, gap.assigned), (3, 2));
    assert_eq!(gap.reasons, [ShortfallReason::StalePosition { count: 1 }]);
    assert!(
        gap.reason.contains("1 with a position older than 30 min"),
        "{}",
        gap.reason
    );
}

#[test]
fn units_outside_the_radius_are_skipped_and_reported() {
    let units = vec![
        unit("in", "police", 30.1, 120.0),   // ~11 km
        unit("out1", "police", 30.5, 120.0), // ~56 km
        unit("out2", "police", 31.0, 120.0), // ~111 km
    ];
    let options = RecommendOptions {
        max_radius_km: Some(50.0),
        ..RecommendOptions::default()
    };
    let recommendation = recommend_by_eta(
        &[need("police", 2)],
        AT,
        &fresh(&units),
        &options,
        NOW_UNIX_MS,
    );
    assert_eq!(ids(&recommendation.picks), ["in"]);
    assert_eq!(
        recommendation.gaps[0].reasons,
        [ShortfallReason::OutsideRadius { count: 2 }]
    );
    assert!(
        recommendation.gaps[0]
            .reason
            .contains("2 beyond the 50 km radius"),
        "{}",
        recommendation.gaps[0].reason
    );
}

#[test]
fn out_of_service_and_busy_units_are_skipped() {
    let units = vec![
        unit("oos", "fire_engine", 30.001, 120.0),
        unit("busy", "fire_engine", 30.002, 120.0),
        unit("back", "fire_engine", 30.003, 120.0),
        unit("free", "fire_engine", 30.2, 120.0),
    ];
    let mut views = fresh(&units);
    views[0].status = UnitStatus::OutOfService;
    views[1].status = UnitStatus::OnScene;
    views[2].status = UnitStatus::Returning;
    let recommendation = recommend_by_eta(
        &[need("fire_engine", 2), need("rescue", 1)],
        AT,
        &views,
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    assert_eq!(ids(&recommendation.picks), ["free"]);
    assert_eq!(
        recommendation.gaps[0].reasons,
        [
            ShortfallReason::Busy { count: 2 },
            ShortfallReason::OutOfService { count: 1 }
        ]
    );
    assert_eq!(recommendation.gaps[1].unit_type, "rescue");
    assert_eq!(
        recommendation.gaps[1].reasons,
        [ShortfallReason::NoneInRegion]
    );

    // With every unit unusable, the gap says none was available.
    views[3].status = UnitStatus::Dispatched;
    let none = recommend_by_eta(
        &[need("fire_engine", 5)],
        AT,
        &views,
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    assert!(none.picks.is_empty());
    assert_eq!(
        none.gaps[0].reasons,
        [
            ShortfallReason::NoneAvailable,
            ShortfallReason::FewerInRegionThanRequired { in_region: 4 },
            ShortfallReason::Busy { count: 3 },
            ShortfallReason::OutOfService { count: 1 }
        ]
    );
}

#[test]
fn eta_order_differs_from_distance_order_when_speeds_differ() {
    // Police (70 km/h) 10 km away arrive before hazmat (45 km/h) 8 km away.
    let units = vec![
        unit("haz", "hazmat", 30.0 + 8.0 / 111.195, 120.0),
        unit("pol", "police", 30.0 + 10.0 / 111.195, 120.0),
    ];
    let recommendation = recommend_by_eta(
        &[need("hazmat", 1), need("police", 1)],
        AT,
        &fresh(&units),
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    let (haz, pol) = (&recommendation.picks[0], &recommendation.picks[1]);
    assert!(haz.distance_km < pol.distance_km);
    assert!(pol.eta_min.unwrap() < haz.eta_min.unwrap());
    // ETA = km × road factor / speed.
    let expected_min = haz.distance_km * 1.3 / 45.0 * 60.0;
    assert!((haz.eta_min.unwrap() - expected_min).abs() < 1e-9);
    assert!(haz.reason.contains("ETA 13.9 min"), "{}", haz.reason);

    // Within one type, a different speed table changes ETAs but not the ranking; a type with
    // no configured speed uses the fallback and says so.
    let mut options = RecommendOptions::default();
    options.speed_kmh_by_type.remove("hazmat");
    let fallback = recommend_by_eta(
        &[need("hazmat", 1)],
        AT,
        &fresh(&units),
        &options,
        NOW_UNIX_MS,
    );
    assert!(
        fallback.picks[0]
            .reasons
            .contains(&PickReason::AssumedSpeed { speed_kmh: 40.0 })
    );
    assert!(fallback.picks[0].reason.contains("assumed 40 km/h"));
}

#[test]
fn home_jurisdiction_units_come_first_and_others_are_mutual_aid() {
    let units = vec![
        unit_in("neighbour-near", "hazmat", 30.01, 120.0, "200201"),
        unit_in("home-far", "hazmat", 30.2, 120.0, "100101"),
        unit_in("neighbour-far", "hazmat", 30.3, 120.0, "200201"),
    ];
    let options = RecommendOptions {
        home_jurisdiction: Some("100101".into()),
        ..RecommendOptions::default()
    };
    let recommendation = recommend_by_eta(
        &[need("hazmat", 2)],
        AT,
        &fresh(&units),
        &options,
        NOW_UNIX_MS,
    );
    assert_eq!(ids(&recommendation.picks), ["home-far", "neighbour-near"]);
    assert!(
        recommendation.picks[0]
            .reasons
            .contains(&PickReason::InJurisdiction {
                jurisdiction: "100101".into()
            })
    );
    let aid = &recommendation.picks[1];
    assert!(aid.reasons.contains(&PickReason::OutsideJurisdiction {
        jurisdiction: "200201".into(),
        home_jurisdiction: "100101".into()
    }));
    assert!(aid.reasons.contains(&PickReason::CascadeDepth { depth: 1 }));
    assert!(
        aid.reason.contains("mutual-aid candidate"),
        "{}",
        aid.reason
    );
}

#[test]
fn picked_for_another_requirement_is_reported() {
    let units = vec![
        unit("a", "ambulance", 30.1, 120.0),
        unit("b", "ambulance", 30.2, 120.0),
    ];
    let recommendation = recommend_by_eta(
        &[need("ambulance", 1), need("ambulance", 2)],
        AT,
        &fresh(&units),
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    assert_eq!(ids(&recommendation.picks), ["a", "b"]);
    assert_eq!(
        recommendation.gaps[0].reasons,
        [ShortfallReason::PickedForAnotherRequirement { count: 1 }]
    );
}

#[test]
fn the_old_recommend_is_the_eta_recommendation_with_defaults() {
    let units = vec![
        unit("far", "hazmat", 30.5, 120.0),
        unit("near", "hazmat", 30.01, 120.0),
        unit("busy", "hazmat", 30.001, 120.0),
    ];
    let old = recommend(&[need("hazmat", 3)], AT, &units, |id| id != "busy");
    assert_eq!(ids(&old.picks), ["near", "far"]);
    assert!((old.picks[0].distance_km - great_circle_km(AT, units[1].position)).abs() < 1e-9);
    assert_eq!(old.gaps[0].reasons, [ShortfallReason::Busy { count: 1 }]);
}

#[test]
fn pick_and_gap_json_without_structured_reasons_still_reads() {
    let pick: Pick = serde_json::from_str(
        r#"{"unit_id":"u","call_sign":"U","unit_type":"hazmat","distance_km":1.5,"reason":"r"}"#,
    )
    .unwrap();
    assert_eq!((pick.eta_min, pick.reasons.len()), (None, 0));
    let gap: Gap =
        serde_json::from_str(r#"{"unit_type":"hazmat","required":2,"assigned":1,"reason":"r"}"#)
            .unwrap();
    assert!(gap.reasons.is_empty());
    // And the new fields round-trip, tagged by kind.
    let json = serde_json::to_string(&ShortfallReason::StalePosition { count: 2 }).unwrap();
    assert_eq!(json, r#"{"kind":"stale_position","count":2}"#);
}

// ---- plans and region data -------------------------------------------------------------------

#[test]
fn an_upgrade_from_iii_to_ii_sends_the_difference() {
    let region = Region::embedded_default();
    let plan = |grade| {
        region
            .plans
            .plan_for("accident.hazardous_chemicals", Some(grade))
            .unwrap()
            .resources
            .clone()
    };
    let already: HashMap<String, u32> = plan(Grade::III)
        .into_iter()
        .map(|r| (r.unit_type, r.count))
        .collect();
    let difference = plan_difference(&plan(Grade::II), &already);
    assert_eq!(
        difference,
        [
            need("hazmat", 2),
            need("fire_engine", 2),
            need("ambulance", 2),
            need("police", 1),
            need("medical_team", 1)
        ]
    );
    // More than the plan asks for already on scene: nothing more of that type.
    let plenty = HashMap::from([("hazmat".to_string(), 9), ("rescue".to_string(), 3)]);
    let difference = plan_difference(&plan(Grade::IV), &plenty);
    assert_eq!(difference, [need("fire_engine", 2), need("ambulance", 1)]);
    assert!(plan_difference(&plan(Grade::III), &already).is_empty());
}

#[test]
fn region_speeds_come_from_the_units_file() {
    let region = Region::embedded_default();
    assert_eq!(region.speed_kmh_by_type.get("police"), Some(&70.0));
    let options = RecommendOptions::for_region(&region);
    assert_eq!(options.speed_kmh_by_type.get("engineering"), Some(&35.0));

    let [jurisdictions, units, plans, rulebook] = Region::embedded_default_sources();
    let bad_text = units.text.replace("police = 70", "police = -5");
    let error = Region::from_sources(
        jurisdictions,
        SourceFile {
            name: units.name,
            text: &bad_text,
        },
        plans,
        rulebook,
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("units.toml:"), "{error}");
    assert!(
        error.contains("must be a positive number of km/h"),
        "{error}"
    );
}

// ---- seeded random check ---------------------------------------------------------------------

#[test]
fn seeded_recommendations_never_pick_a_unit_twice() {
    const TYPES: [&str; 4] = ["hazmat", "fire_engine", "ambulance", "unlisted_type"];
    for seed in seeds(500) {
        let mut rng = XorShift::new(seed);
        let unit_count = rng.below(40) as usize;
        let units: Vec<Unit> = (0..unit_count)
            .map(|i| {
                // Some ids repeat on purpose.
                let id = format!("U{}", rng.below(unit_count as u64 + 5).min(i as u64 + 3));
                let county = if rng.below(2) == 0 {
                    "100101"
                } else {
                    "200201"
                };
                let unit_type = TYPES[rng.below(TYPES.len() as u64) as usize];
                // Coarse positions make exact ties likely.
                let lat = 30.0 + (rng.below(20) as f64 - 10.0) * 0.05;
                let lon = 120.0 + (rng.below(20) as f64 - 10.0) * 0.05;
                unit_in(&id, unit_type, lat, lon, county)
            })
            .collect();
        let views: Vec<UnitView> = units
            .iter()
            .map(|u| {
                let status = UnitStatus::ALL[rng.below(UnitStatus::ALL.len() as u64) as usize];
                let age_ms = (rng.unit_f64() * 40.0 * MINUTE_MS as f64) as i64;
                UnitView::new(u, status, NOW_UNIX_MS - age_ms)
            })
            .collect();
        let requirements: Vec<ResourceRequirement> = (0..rng.below(6))
            .map(|_| {
                need(
                    TYPES[rng.below(TYPES.len() as u64) as usize],
                    rng.below(5) as u32 + 1,
                )
            })
            .collect();
        let options = RecommendOptions {
            max_radius_km: (rng.below(2) == 0).then(|| 20.0 + rng.unit_f64() * 60.0),
            home_jurisdiction: (rng.below(2) == 0).then(|| "100101".to_string()),
            ..RecommendOptions::default()
        };
        let recommendation = recommend_by_eta(&requirements, AT, &views, &options, NOW_UNIX_MS);

        let mut seen = HashSet::new();
        for pick in &recommendation.picks {
            assert!(
                seen.insert(&pick.unit_id),
                "seed {seed}: {} picked twice",
                pick.unit_id
            );
            let usable = views.iter().any(|v| {
                v.unit.id == pick.unit_id
                    && v.status == UnitStatus::Available
                    && NOW_UNIX_MS - v.position_at_unix_ms <= options.stale_after_ms
                    && options
                        .max_radius_km
                        .is_none_or(|r| great_circle_km(AT, v.position) <= r)
            });
            assert!(usable, "seed {seed}: {} is not usable", pick.unit_id);
        }
        // Picks come in requirement order, each requirement's picks ranked 1.., then its gap.
        let mut picks = recommendation.picks.iter().peekable();
        let mut gaps = recommendation.gaps.iter();
        for requirement in &requirements {
            let mut mine = Vec::new();
            while let Some(pick) = picks.next_if(|p| {
                p.unit_type == requirement.unit_type
                    && matches!(p.reasons[0], PickReason::ClosestByEta { rank, .. } if rank as usize == mine.len() + 1)
                    && mine.len() < requirement.count as usize
            }) {
                mine.push(pick);
            }
            for pair in mine.windows(2) {
                let depth = |p: &Pick| {
                    u32::from(
                        p.reasons
                            .iter()
                            .any(|r| matches!(r, PickReason::OutsideJurisdiction { .. })),
                    )
                };
                let key = |p: &Pick| (depth(p), p.eta_min.unwrap());
                assert!(
                    key(pair[0]) < key(pair[1])
                        || (key(pair[0]) == key(pair[1]) && pair[0].unit_id <= pair[1].unit_id),
                    "seed {seed}: {} before {}",
                    pair[0].unit_id,
                    pair[1].unit_id
                );
            }
            if (mine.len() as u32) < requirement.count {
                let gap = gaps
                    .next()
                    .unwrap_or_else(|| panic!("seed {seed}: missing gap"));
                assert_eq!(gap.unit_type, requirement.unit_type, "seed {seed}");
                assert_eq!(gap.assigned as usize, mine.len(), "seed {seed}");
                assert!(!gap.reasons.is_empty(), "seed {seed}: {gap:?}");
            }
        }
        assert!(picks.next().is_none(), "seed {seed}: unexplained picks");
        assert!(gaps.next().is_none(), "seed {seed}: unexplained gaps");
    }
}

// ---- reason codes (issue 5: structured reasons) ----------------------------------------------

#[test]
fn assignments_carry_reason_codes_eta_and_cascade_depth() {
    use domain::dispatch::{jurisdiction_standing, reason_code};
    let region = Region::embedded_default();
    let tree = &region.tree;
    // The chemical park township 390202400 lies in county 390202 of city 390200.
    let same_county = jurisdiction_standing(tree, "390202", "390202400", "390202");
    assert!(same_county.in_jurisdiction);
    assert_eq!(same_county.cascade_depth, 0);
    let sibling = tree
        .children("390200")
        .into_iter()
        .find(|county| county.code != "390202")
        .expect("a second county in city 390200")
        .code
        .clone();
    let same_city = jurisdiction_standing(tree, "390202", "390202400", &sibling);
    assert!(!same_city.in_jurisdiction);
    assert_eq!(same_city.cascade_depth, 1);
    // Led by the city, its other county is inside the lead's subtree.
    assert!(jurisdiction_standing(tree, "390200", "390202400", &sibling).in_jurisdiction);
    let other_city = jurisdiction_standing(tree, "390202", "390202400", "390102");
    assert!(!other_city.in_jurisdiction);
    assert_eq!(other_city.cascade_depth, 2);
    // An unknown lead falls back to the incident's county.
    assert!(jurisdiction_standing(tree, "", "390202400", "390202").in_jurisdiction);

    let units = vec![
        unit_in("b", "hazmat", 30.1, 120.0, "390202"),
        unit_in("a", "hazmat", 30.1, 120.0, "390102"),
    ];
    let recommendation = recommend_by_eta(
        &[need("hazmat", 2)],
        AT,
        &fresh(&units),
        &RecommendOptions::default(),
        NOW_UNIX_MS,
    );
    // Tied on ETA: unit id decides, deterministically.
    assert_eq!(ids(&recommendation.picks), ["a", "b"]);
    let first = recommendation.picks[0].to_assignment(jurisdiction_standing(
        tree,
        "390202",
        "390202400",
        "390102",
    ));
    assert_eq!(
        first.reason_codes,
        [
            reason_code::CLOSEST_BY_ETA,
            reason_code::OUTSIDE_JURISDICTION
        ]
    );
    assert_eq!(first.cascade_depth, 2);
    assert_eq!(Some(first.eta_minutes), recommendation.picks[0].eta_min);
    assert!(first.eta_minutes > 0.0);
    assert_eq!(first.distance_km, recommendation.picks[0].distance_km);
    assert!(
        first.reason.contains("outside the lead jurisdiction"),
        "{}",
        first.reason
    );
    let second = recommendation.picks[1].to_assignment(jurisdiction_standing(
        tree,
        "390202",
        "390202400",
        "390202",
    ));
    assert_eq!(
        second.reason_codes,
        [reason_code::CLOSEST_BY_ETA, reason_code::IN_JURISDICTION]
    );
    assert_eq!(second.cascade_depth, 0);
}

#[test]
fn shortfalls_name_none_available_and_count_each_exclusion() {
    use domain::dispatch::reason_code;
    use domain::event::ShortfallCause;
    let units = vec![
        unit("stale", "hazmat", 30.01, 120.0),
        unit("oos", "hazmat", 30.01, 120.0),
        unit("far", "hazmat", 31.5, 120.0),
        unit("busy", "hazmat", 30.01, 120.0),
        unit("ok", "hazmat", 30.05, 120.0),
    ];
    let mut views = fresh(&units);
    views[0].position_at_unix_ms = NOW_UNIX_MS - 45 * MINUTE_MS;
    views[1].status = UnitStatus::OutOfService;
    views[3].status = UnitStatus::Enroute;
    let options = RecommendOptions {
        max_radius_km: Some(50.0),
        ..RecommendOptions::default()
    };
    let recommendation = recommend_by_eta(&[need("hazmat", 3)], AT, &views, &options, NOW_UNIX_MS);
    assert_eq!(ids(&recommendation.picks), ["ok"]);
    let shortfall = recommendation.gaps[0].to_shortfall();
    assert_eq!((shortfall.required, shortfall.assigned), (3, 1));
    assert_eq!(
        shortfall.reason_codes,
        [
            reason_code::NONE_AVAILABLE,
            reason_code::BUSY,
            reason_code::OUT_OF_SERVICE,
            reason_code::STALE_POSITION,
            reason_code::OUTSIDE_RADIUS
        ]
    );
    let cause = |code: &str, count: u32| ShortfallCause {
        code: code.into(),
        count,
    };
    assert_eq!(
        shortfall.causes,
        [
            cause(reason_code::BUSY, 1),
            cause(reason_code::OUT_OF_SERVICE, 1),
            cause(reason_code::STALE_POSITION, 1),
            cause(reason_code::OUTSIDE_RADIUS, 1)
        ]
    );

    // A stale limit of 60 minutes makes the stale unit a candidate again.
    let lenient = RecommendOptions {
        stale_after_ms: 60 * MINUTE_MS,
        ..options
    };
    let again = recommend_by_eta(&[need("hazmat", 3)], AT, &views, &lenient, NOW_UNIX_MS);
    assert_eq!(ids(&again.picks), ["stale", "ok"]);
    assert!(
        !again.gaps[0]
            .to_shortfall()
            .reason_codes
            .iter()
            .any(|code| code == reason_code::STALE_POSITION)
    );

    // Stored records without codes still load.
    let old =
        r#"{"unit_id":"U","call_sign":"C","unit_type":"hazmat","distance_km":1.0,"reason":"r"}"#;
    let assignment: domain::event::Assignment = serde_json::from_str(old).unwrap();
    assert!(assignment.reason_codes.is_empty());
    let old = r#"{"unit_type":"hazmat","required":2,"assigned":0,"reason":"r"}"#;
    let shortfall: domain::event::Shortfall = serde_json::from_str(old).unwrap();
    assert!(shortfall.causes.is_empty());
}
