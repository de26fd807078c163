//! The workload and the client-side ledger: officer reports over gRPC (each with a request id)
//! and GeoJSON quake alerts over HTTP (some correlated into one incident, some resent as
//! duplicates), sent by clients that retry an input until the system acknowledges it, like real
//! ones. The ledger keeps every acknowledgement: input key → incident id.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::chaos::client;
use crate::chaos::rng::Rng;

/// Uncorrelated alert groups sit this far apart in source time: wider than the earthquake
/// correlation window (180 min in data/feeds/mapping.toml), as in crates/bench.
const GROUP_SPREAD_MS: i64 = 4 * 60 * 60 * 1000;

#[derive(Debug, Clone)]
pub enum Input {
    /// An officer's report; `key` is its request id.
    Report {
        key: String,
        request: Box<pb::ReportIncidentRequest>,
    },
    /// One GeoJSON feature; `key` is its feature id (intake's dedup key). Alerts of one `group`
    /// are close in space and time and must correlate into one incident.
    Alert {
        key: String,
        group: usize,
        body: Vec<u8>,
    },
}

impl Input {
    pub fn key(&self) -> &str {
        match self {
            Input::Report { key, .. } | Input::Alert { key, .. } => key,
        }
    }

    pub fn is_report(&self) -> bool {
        matches!(self, Input::Report { .. })
    }
}

/// The sample region's townships with a centroid: where reports and quakes happen.
pub fn townships() -> Vec<(String, f64, f64)> {
    let region = domain::region::Region::embedded_default();
    region
        .tree
        .all()
        .filter(|j| j.level == domain::jurisdiction::Level::Township)
        .filter_map(|j| j.centroid.map(|c| (j.code.clone(), c.lat, c.lon)))
        .collect()
}

pub fn report_request(i: usize, key: &str, town: &str) -> pb::ReportIncidentRequest {
    let mut facts = pb::Facts::default();
    // Kinds and facts every rule grades (at least grade IV), so every report reaches dispatch.
    let kind = match i % 4 {
        0 => {
            facts.deaths = Some(1 + (i % 3) as i64);
            "accident.fire"
        }
        1 => {
            facts.deaths = Some(1 + (i % 2) as i64);
            "accident.hazardous_chemicals"
        }
        2 => {
            facts.deaths = Some(3);
            "accident.road_traffic"
        }
        _ => {
            facts.magnitude = Some(5.0 + (i % 5) as f64 * 0.1);
            "natural.earthquake"
        }
    };
    pb::ReportIncidentRequest {
        namespace: String::new(),
        kind: kind.into(),
        township_code: town.into(),
        other_township_codes: vec![],
        lat: None,
        lon: None,
        facts: Some(facts),
        // The request id in the summary lets the checker find the incident(s) of each request on
        // the stream, including any second incident a broken dedup would create.
        summary: format!("chaos {key}"),
        reported_by: "chaos suite".into(),
        request_id: key.into(),
    }
}

fn alert_body(key: &str, lat: f64, lon: f64, time_ms: i64) -> Vec<u8> {
    // One magnitude for every alert, so a correlated alert never raises the facts (no `updated`,
    // no regrade): each escalation chain then runs once and its escalations are countable.
    let feature = serde_json::json!({
        "type": "Feature",
        "id": key,
        "properties": {"mag": 5.2, "place": "chaos suite", "time": time_ms, "updated": time_ms,
            "type": "earthquake", "status": "reviewed", "title": format!("M 5.2 - chaos {key}")},
        "geometry": {"type": "Point", "coordinates": [lon, lat, 10.0]},
    });
    serde_json::to_vec(&serde_json::json!({"type": "FeatureCollection", "features": [feature]}))
        .expect("json")
}

/// `count` inputs from the seed: about 45 % reports, 45 % alerts in groups of 1–4, 10 % resends
/// of an earlier input (same key, same body).
pub fn generate(rng: &mut Rng, run: &str, count: usize) -> Vec<Input> {
    let towns = townships();
    assert!(!towns.is_empty(), "the sample region has townships");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut inputs: Vec<Input> = Vec::with_capacity(count);
    let (mut reports, mut groups, mut alerts) = (0usize, 0usize, 0usize);
    // Alerts of the current group still to send: (group, town, left).
    let mut open_group: Option<(usize, usize, usize)> = None;
    while inputs.len() < count {
        let roll = rng.below(100);
        if roll < 10 && !inputs.is_empty() {
            let earlier = inputs[rng.below(inputs.len() as u64) as usize].clone();
            inputs.push(earlier);
        } else if roll < 55 {
            let key = format!("chaos-{run}-r{reports}");
            let town = &towns[rng.below(towns.len() as u64) as usize].0;
            inputs.push(Input::Report {
                request: Box::new(report_request(reports, &key, town)),
                key,
            });
            reports += 1;
        } else {
            let (group, town, left) = match open_group {
                Some(open) => open,
                None => {
                    groups += 1;
                    (
                        groups - 1,
                        rng.below(towns.len() as u64) as usize,
                        1 + rng.below(4) as usize,
                    )
                }
            };
            let (_, lat, lon) = towns[town];
            let key = format!("chaos{run}a{alerts}");
            // Within a few hundred metres and a few minutes of the group's first alert.
            let jitter = |rng: &mut Rng| (rng.below(200) as f64 - 100.0) * 0.00002;
            let time_ms =
                now_ms - group as i64 * GROUP_SPREAD_MS - (left as i64) * 60_000 - 3_600_000;
            inputs.push(Input::Alert {
                body: alert_body(&key, lat + jitter(rng), lon + jitter(rng), time_ms),
                key,
                group,
            });
            alerts += 1;
            open_group = (left > 1).then_some((group, town, left - 1));
        }
    }
    inputs
}

/// One acknowledgement the system gave.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub report: bool,
    pub incident_id: String,
    /// `accepted`/`duplicate` for reports; the feed outcome (`created`, `correlated`,
    /// `duplicate`) for alerts.
    pub outcome: String,
}

/// What the clients saw.
#[derive(Default)]
pub struct Ledger {
    pub acks: Vec<Ack>,
    /// Inputs (by index) that were sent and never acknowledged.
    pub unacknowledged: BTreeSet<usize>,
    pub attempts: u64,
    /// Failed attempts by a short description of the error, with a count.
    pub errors: BTreeMap<String, u64>,
    /// Inputs that needed more than one attempt.
    pub retried_inputs: u64,
}

impl Ledger {
    fn error(&mut self, what: String) {
        let short: String = what.chars().take(160).collect();
        *self.errors.entry(short).or_default() += 1;
    }
}

/// Where the clients send: fixed ports of the service processes.
#[derive(Clone, Copy)]
pub struct Targets {
    pub intake: SocketAddr,
    pub feeds: SocketAddr,
    pub escalation: SocketAddr,
    pub dispatch: SocketAddr,
}

/// Sends one input once: `Ok(ack)`, or `Err(why)` when the system did not acknowledge it.
async fn send_once(targets: Targets, input: &Input) -> Result<Ack, String> {
    match input {
        Input::Report { key, request } => {
            let answer = client::intake(targets.intake)
                .report_incident(request.as_ref().clone())
                .await
                .map_err(|status| {
                    format!("ReportIncident {:?}: {}", status.code(), status.message())
                })?
                .into_inner();
            Ok(Ack {
                key: key.clone(),
                report: true,
                incident_id: answer.incident_id,
                outcome: if answer.duplicate {
                    "duplicate"
                } else {
                    "accepted"
                }
                .into(),
            })
        }
        Input::Alert { key, body, .. } => {
            let (status, answer) =
                client::post_feed(targets.feeds, "geojson", "application/geo+json", body)
                    .await
                    .map_err(|error| format!("POST /v1/feeds/geojson: {error}"))?;
            if status != 200 || answer["status"] != "accepted" {
                return Err(format!(
                    "POST /v1/feeds/geojson: HTTP {status} {}",
                    answer["reason"].as_str().unwrap_or_default()
                ));
            }
            let result = &answer["results"][0];
            let incident_id = result["incident_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let outcome = result["outcome"].as_str().unwrap_or_default().to_string();
            if incident_id.is_empty() {
                // Accepted without an incident (ignored, parked): not what this workload sends.
                return Ok(Ack {
                    key: key.clone(),
                    report: false,
                    incident_id,
                    outcome: format!("{outcome} (no incident: {result})"),
                });
            }
            Ok(Ack {
                key: key.clone(),
                report: false,
                incident_id,
                outcome,
            })
        }
    }
}

/// Sends `input` until it is acknowledged or `give_up` is cancelled; records everything.
pub async fn send_until_acknowledged(
    targets: Targets,
    ledger: &Mutex<Ledger>,
    index: usize,
    input: &Input,
    give_up: &CancellationToken,
) -> bool {
    let mut pause = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = send_once(targets, input).await;
        {
            let mut ledger = ledger.lock().unwrap();
            ledger.attempts += 1;
            match result {
                Ok(ack) => {
                    ledger.acks.push(ack);
                    ledger.unacknowledged.remove(&index);
                    if attempt > 1 {
                        ledger.retried_inputs += 1;
                    }
                    return true;
                }
                Err(error) => {
                    ledger.error(error);
                    ledger.unacknowledged.insert(index);
                }
            }
        }
        if give_up.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = give_up.cancelled() => return false,
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Runs the inputs at `rate_per_s` with `concurrency` clients until done or `stop`; returns when
/// every started input was acknowledged or given up (at `give_up`).
pub async fn run(
    targets: Targets,
    inputs: Arc<Vec<Input>>,
    ledger: Arc<Mutex<Ledger>>,
    rate_per_s: f64,
    concurrency: usize,
    give_up: CancellationToken,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<usize>(concurrency);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (receiver, inputs, ledger, give_up) = (
            receiver.clone(),
            inputs.clone(),
            ledger.clone(),
            give_up.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let next = receiver.lock().await.recv().await;
                let Some(index) = next else { break };
                send_until_acknowledged(targets, &ledger, index, &inputs[index], &give_up).await;
            }
        }));
    }
    let started = Instant::now();
    for index in 0..inputs.len() {
        let due = started + Duration::from_secs_f64(index as f64 / rate_per_s);
        tokio::time::sleep_until(due.into()).await;
        if give_up.is_cancelled() || sender.send(index).await.is_err() {
            break;
        }
    }
    drop(sender);
    for worker in workers {
        let _ = worker.await;
    }
}

/// Frees booked units while the workload runs, so units move between incidents and "a unit is
/// never assigned twice at once" is tested on real churn: releases some dispatched units, and
/// takes others through acknowledge → release → clear. Refusals are expected (the unit moved
/// meanwhile, dispatch is down) and only counted.
pub async fn churn_units(targets: Targets, seed: u64, stop: CancellationToken) -> (u64, u64) {
    let mut rng = Rng::new(seed ^ 0x756e_6974);
    let (mut done, mut refused) = (0u64, 0u64);
    while !stop.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = stop.cancelled() => break,
        }
        let mut dispatch = client::dispatch(targets.dispatch);
        let Ok(units) = dispatch
            .list_units(pb::ListUnitsRequest::default())
            .await
            .map(|r| r.into_inner().units)
        else {
            continue;
        };
        for unit in units
            .iter()
            .filter(|u| u.status() == pb::UnitStatus::Dispatched)
        {
            if rng.below(100) >= 40 {
                continue;
            }
            let call = |event: pb::UnitStatusEvent| pb::UpdateUnitStatusRequest {
                namespace: String::new(),
                unit_id: unit.id.clone(),
                event: event as i32,
                incident_id: if event == pb::UnitStatusEvent::Clear {
                    String::new()
                } else {
                    unit.incident_id.clone()
                },
                reason: String::new(),
            };
            let events: &[pb::UnitStatusEvent] = if rng.below(2) == 0 {
                &[pb::UnitStatusEvent::Release]
            } else {
                &[
                    pb::UnitStatusEvent::Acknowledge,
                    pb::UnitStatusEvent::Release,
                    pb::UnitStatusEvent::Clear,
                ]
            };
            for event in events {
                match dispatch.update_unit_status(call(*event)).await {
                    Ok(_) => done += 1,
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
        }
    }
    (done, refused)
}

/// Acknowledges every dispatched unit (Dispatched → Enroute), so no acknowledgement timer is
/// left to fire while the checker compares dispatch's records with each other. Returns how many.
pub async fn acknowledge_all_dispatched(targets: Targets) -> usize {
    let mut acknowledged = 0;
    for _ in 0..5 {
        let mut dispatch = client::dispatch(targets.dispatch);
        let Ok(units) = dispatch
            .list_units(pb::ListUnitsRequest::default())
            .await
            .map(|r| r.into_inner().units)
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let dispatched: Vec<&pb::Unit> = units
            .iter()
            .filter(|u| u.status() == pb::UnitStatus::Dispatched)
            .collect();
        if dispatched.is_empty() {
            break;
        }
        for unit in dispatched {
            let request = pb::AcknowledgeAssignmentRequest {
                namespace: String::new(),
                unit_id: unit.id.clone(),
                incident_id: unit.incident_id.clone(),
            };
            if dispatch.acknowledge_assignment(request).await.is_ok() {
                acknowledged += 1;
            }
        }
    }
    acknowledged
}

/// Officers acknowledging incidents at random moments, racing the escalation timers: a timer
/// that loses the race must change nothing. Returns (acknowledged, refused).
pub async fn acknowledge_incidents(
    targets: Targets,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
    stop: CancellationToken,
) -> (u64, u64) {
    let mut rng = Rng::new(seed ^ 0x61636b);
    let (mut acknowledged, mut refused) = (0u64, 0u64);
    while !stop.is_cancelled() {
        let pause = Duration::from_millis(200 + rng.below(600));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => break,
        }
        let incident_id = {
            let ledger = ledger.lock().unwrap();
            if ledger.acks.is_empty() {
                continue;
            }
            ledger.acks[rng.below(ledger.acks.len() as u64) as usize]
                .incident_id
                .clone()
        };
        let request = pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id,
            officer: "chaos duty officer".into(),
        };
        match client::escalation(targets.escalation)
            .acknowledge(request)
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(_) => refused += 1,
        }
    }
    (acknowledged, refused)
}
