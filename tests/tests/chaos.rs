//! The fault suite (issue 8 part 3): nats-server and the three services run as separate
//! processes while a workload of officer reports and feed alerts runs; the suite kills each
//! service with SIGKILL at seeded random moments, kills and restarts nats-server, SIGSTOPs a
//! consumer, fills a service's disk, and (cluster run) kills one node of a 3-node R3 cluster.
//! A checker then compares the clients' ledger of acknowledged inputs with the final state.
//!
//! - `cargo test -p muster-e2e --test chaos`: every run at CI size (the single node with kills,
//!   SIGSTOP and nats-server kills; the full disk; the R3 cluster with a node killed), one after
//!   the other.
//! - `MUSTER_CHAOS_SCALE=full cargo test -p muster-e2e --test chaos -- --nocapture`: the same
//!   tests at full size, for minutes (docs/RELIABILITY.md has the commands and the figures).
//!   `MUSTER_CHAOS_SEED` replays a run.
//!
//! The `muster` binary must be built first (`cargo build -p muster`, or `cargo test --workspace`).

mod chaos {
    pub mod checker;
    pub mod client;
    pub mod harness;
    pub mod rng;
    pub mod run;
    pub mod workload;
}

use chaos::client;
use chaos::harness::Service;
use chaos::run::{Mode, run};
use muster_proto::v1 as pb;

/// One fault run at a time: three at once on two cores would starve the services the checker
/// waits for.
static ONE_RUN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_each_service_and_nats_server_and_sigstop_a_consumer_without_losing_an_acknowledged_input()
 {
    let _one = ONE_RUN.lock().await;
    run(Mode::scaled(Mode::smoke(), Mode::full())).await;
}

/// Needs root for the tmpfs (CI runs as root); without it the run fails and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fills_intake_refuses_is_killed_while_full_and_serves_again_when_space_is_freed() {
    let _one = ONE_RUN.lock().await;
    run(Mode::disk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_r3_with_one_node_killed_mid_run() {
    let _one = ONE_RUN.lock().await;
    run(Mode::scaled(Mode::cluster_smoke(), Mode::cluster())).await;
}

/// A report whose commit reached intake's memory but whose flush failed (a full disk) is not
/// acknowledged, and neither is a retry of it: the retry used to be answered "duplicate" from
/// memory without a flush, and after a kill -9 that incident number went to another report (the
/// disk-full run, seed 874481898). Intake then stops by itself (its store cannot write again in
/// this process) and serves again once restarted on a disk with room. Every answer that names
/// an incident must name one that is still there, with this report, after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_never_answered_from_a_report_or_update_that_is_not_on_disk() {
    let rig = SmallDiskRig::new("muster-chaos-retry-").await;
    let disk = &rig.disk;
    let mut intake = rig.start(Service::Intake, true).await;
    let town = chaos::workload::townships()[0].0.clone();
    let report = |key: &str| chaos::workload::report_request(1, key, &town);
    let mut officer = client::intake(intake.grpc_addr());
    let before = officer
        .report_incident(report("retry-before"))
        .await
        .expect("a report on a disk with room")
        .into_inner();

    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let (refused, _) = refused_while_full(disk, "report", 500, async |i| {
        let key = format!("retry-full-{i}");
        let answer = officer.report_incident(report(&key)).await?.into_inner();
        acknowledged.push((key, answer.incident_id.clone()));
        Ok(answer)
    })
    .await;
    let refused = format!("retry-full-{refused}");

    restart_through_a_full_disk(&mut intake, disk).await;
    // Every report acknowledged before the kill is where its answer said, and the refused one
    // is accepted now; each retry names its own incident.
    let mut officer = client::intake(intake.grpc_addr());
    acknowledged.push(("retry-before".into(), before.incident_id.clone()));
    let mut expected = acknowledged.clone();
    expected.push((refused.clone(), String::new()));
    for (key, incident_id) in expected {
        let retry = officer
            .report_incident(report(&key))
            .await
            .unwrap_or_else(|status| panic!("{key} after the restart: {status:?}"))
            .into_inner();
        if !incident_id.is_empty() {
            assert_eq!(retry.incident_id, incident_id, "{key}");
            assert!(retry.duplicate, "{key} was acknowledged before the kill");
        }
        let stored = officer
            .get_incident(pb::GetIncidentRequest {
                namespace: String::new(),
                incident_id: retry.incident_id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{key}'s incident {}: {status:?}", retry.incident_id))
            .into_inner()
            .incident
            .and_then(|incident| incident.report)
            .expect("an incident with its report");
        assert_eq!(
            stored.summary,
            format!("chaos {key}"),
            "{}",
            retry.incident_id
        );
    }

    // The same for updates: a retry of an update refused on a full disk is refused too.
    let update = |request_id: &str, deaths: i64| pb::UpdateIncidentRequest {
        namespace: String::new(),
        incident_id: before.incident_id.clone(),
        facts: Some(pb::Facts {
            deaths: Some(deaths),
            ..Default::default()
        }),
        summary: None,
        updated_by: "chaos suite".into(),
        request_id: request_id.into(),
    };
    let (i, _) = refused_while_full(disk, "update", 500, async |i| {
        let request_id = format!("update-full-{i}");
        Ok(officer
            .update_incident(update(&request_id, 10 + i as i64))
            .await?
            .into_inner())
    })
    .await;
    let (refused, deaths) = (format!("update-full-{i}"), 10 + i as i64);
    restart_through_a_full_disk(&mut intake, disk).await;
    let mut officer = client::intake(intake.grpc_addr());
    let retry = officer
        .update_incident(update(&refused, deaths))
        .await
        .expect("the update after the restart")
        .into_inner();
    assert_eq!(retry.facts.and_then(|facts| facts.deaths), Some(deaths));
}

/// nats-server and a 64 MiB tmpfs in a fresh run directory, for one service's store to fill.
/// Fields drop in order: the tmpfs is unmounted before the directory is removed.
struct SmallDiskRig {
    disk: chaos::harness::SmallDisk,
    nats: chaos::harness::NatsNode,
    dir: tempfile::TempDir,
    /// This rig's turn among the fault runs ([`ONE_RUN`]), held until it is dropped.
    _one: tokio::sync::MutexGuard<'static, ()>,
}

impl SmallDiskRig {
    async fn new(prefix: &str) -> SmallDiskRig {
        let one = ONE_RUN.lock().await;
        let dir = test_support::temp_dir(prefix);
        let mut nats = chaos::harness::NatsNode::new(dir.path(), "n1", None);
        nats.spawn();
        nats.wait_ready().await;
        let disk = chaos::harness::SmallDisk::mount(&dir.path().join("small-disk"), 64)
            .unwrap_or_else(|error| panic!("this test needs a tmpfs (run as root): {error}"));
        SmallDiskRig {
            disk,
            nats,
            dir,
            _one: one,
        }
    }

    /// `service`, serving, with its store on the small disk or beside it.
    async fn start(
        &self,
        service: chaos::harness::Service,
        on_the_small_disk: bool,
    ) -> chaos::harness::ServiceProcess {
        let data_dir = if on_the_small_disk {
            self.disk.mount_point.join("db")
        } else {
            self.dir.path().join(service.name())
        };
        let mut process = chaos::harness::ServiceProcess::new(
            service,
            self.dir.path(),
            data_dir,
            self.nats.url(),
            vec![],
            vec![],
        );
        process.spawn();
        chaos::run::wait_serving(service, process.grpc_addr(), &process.log).await;
        process
    }
}

/// Fills the disk, then makes `call(i)` for i = 0, 1, … (at most `attempts`) until one is refused:
/// sled may still have room in the files it has. The refusal must be the full disk's. Its change
/// may have reached memory only, so four retries of the same call must be refused too, never
/// answered from memory. Returns the refused call's `i` and the retries' refusals.
async fn refused_while_full<T: std::fmt::Debug>(
    disk: &chaos::harness::SmallDisk,
    what: &str,
    attempts: usize,
    mut call: impl AsyncFnMut(usize) -> Result<T, tonic::Status>,
) -> (usize, Vec<tonic::Status>) {
    disk.fill();
    let mut refused = None;
    for i in 0..attempts {
        if let Err(status) = call(i).await {
            assert_refused_for_the_full_disk(&status);
            refused = Some(i);
            break;
        }
    }
    let i =
        refused.unwrap_or_else(|| panic!("the disk is full, yet {attempts} {what}s were taken"));
    let mut retries = Vec::new();
    for _ in 0..4 {
        match call(i).await {
            Ok(answer) => panic!(
                "a retry of a {what} refused on a full disk was answered while the disk was \
                 still full: {answer:?}"
            ),
            Err(status) => retries.push(status),
        }
    }
    (i, retries)
}

/// A refusal while the disk is full: intake's own answer is UNAVAILABLE (never INTERNAL); once its
/// store has failed it stops, and a call may meet the stop instead (GOAWAY, connection refused).
fn assert_refused_for_the_full_disk(status: &tonic::Status) {
    let stopping = ["h2 protocol error", "transport error", "tcp connect error"]
        .iter()
        .any(|text| status.message().contains(text));
    assert!(
        status.code() == tonic::Code::Unavailable || stopping,
        "a full disk is UNAVAILABLE: {status:?}"
    );
}

/// No retry of a call refused on the full disk was refused as already made (FAILED_PRECONDITION):
/// that answer would come from the state the refused call left in memory.
fn assert_not_refused_from_memory(retries: Vec<tonic::Status>, what: &str) {
    for status in retries {
        assert_ne!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "a retry of the refused {what} was refused from the state it left in memory: {status:?}"
        );
    }
}

/// The retry, after the restart, of a call refused on the full disk: taken now (the refused call
/// was lost), or refused from the disk as already made (it reached the disk before the write
/// failed: kept after all), whose refusal is returned.
fn taken_now_or_kept<T>(
    answer: Result<tonic::Response<T>, tonic::Status>,
) -> Option<tonic::Status> {
    let status = answer.err()?;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    Some(status)
}

/// The sample region's first unit, for the dispatch tests on a full disk.
fn a_sample_unit() -> domain::region::Unit {
    domain::region::Region::embedded_default()
        .units
        .into_iter()
        .next()
        .expect("the sample region has units")
}

/// A store that failed to write stops the service: sled refuses every later write until the
/// database is reopened, so the process exits non-zero by itself, saying why, for its supervisor
/// to start it again.
async fn stops_by_itself(process: &mut chaos::harness::ServiceProcess) {
    let name = process.service.name();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = process.exited() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} kept running after its store failed to write; log:\n{}",
            process.log_tail(20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let log = process.log_tail(40);
    assert!(!status.success(), "{name}: {status:?}; log:\n{log}");
    assert!(
        log.contains("the store could not write"),
        "{name}'s exit does not say why; log:\n{log}"
    );
}

/// The service stopping by itself on its failed store ([`stops_by_itself`]), kill -9 (should it
/// still run), a start while the disk is still full (the service cannot open its store and
/// exits, as under the fault run's supervisor), then the space freed and a start that serves.
async fn restart_through_a_full_disk(
    process: &mut chaos::harness::ServiceProcess,
    disk: &chaos::harness::SmallDisk,
) {
    stops_by_itself(process).await;
    process.kill9();
    process.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while process.exited().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} kept running on a full disk",
            process.service.name()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    disk.free();
    process.spawn();
    chaos::run::wait_serving(process.service, process.grpc_addr(), &process.log).await;
}

/// The same for escalation's acknowledgements, on escalation's own full disk: an acknowledgement
/// refused because its store could not write is never later refused as "already acknowledged"
/// (read from memory), and after the restart the officer can acknowledge, or finds it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_not_on_disk_is_never_refused_as_already_made() {
    let rig = SmallDiskRig::new("muster-chaos-ack-").await;
    let disk = &rig.disk;
    let intake = rig.start(Service::Intake, false).await;
    let mut escalation = rig.start(Service::Escalation, true).await;
    let town = chaos::workload::townships()[0].0.clone();
    let mut officer = client::intake(intake.grpc_addr());
    let mut incidents = Vec::new();
    for i in 0..40 {
        let key = format!("ack-{i}");
        let answer = officer
            .report_incident(chaos::workload::report_request(i, &key, &town))
            .await
            .expect("a report")
            .into_inner();
        incidents.push(answer.incident_id);
    }
    let mut commander = client::escalation(escalation.grpc_addr());
    let command = |incident_id: &str| pb::GetCommandRequest {
        namespace: String::new(),
        incident_id: incident_id.to_string(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for incident_id in &incidents {
        while commander.get_command(command(incident_id)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "escalation did not grade {incident_id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let acknowledge = |incident_id: &str| pb::AcknowledgeRequest {
        namespace: String::new(),
        incident_id: incident_id.to_string(),
        officer: "Officer on the full disk".into(),
    };

    let (i, retries) = refused_while_full(disk, "acknowledgement", incidents.len(), async |i| {
        Ok(commander
            .acknowledge(acknowledge(&incidents[i]))
            .await?
            .into_inner())
    })
    .await;
    let refused = incidents[i].clone();
    assert_not_refused_from_memory(retries, "acknowledgement");
    restart_through_a_full_disk(&mut escalation, disk).await;
    let mut commander = client::escalation(escalation.grpc_addr());
    // Kept after all (it reached the disk before the write failed) or lost: either way the
    // officer learns the truth now, and the command says acknowledged.
    match commander.acknowledge(acknowledge(&refused)).await {
        Ok(_) => {}
        Err(status) => assert!(
            status.code() == tonic::Code::FailedPrecondition
                && status
                    .message()
                    .contains("already acknowledged by Officer on the full disk"),
            "{status:?}"
        ),
    }
    let now = commander
        .get_command(command(&refused))
        .await
        .expect("the command after the restart")
        .into_inner();
    assert!(
        now.command.is_some_and(|command| command.acknowledged),
        "{refused} is not acknowledged after the restart"
    );
}

/// The same for dispatch, on dispatch's own full disk: a unit's position report refused because
/// the store could not write is never answered from memory by a retry ("not newer than the
/// position held", `OK` with `applied: false`), and after the restart the retry is taken or
/// found kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_report_not_on_disk_is_never_answered_as_held() {
    let rig = SmallDiskRig::new("muster-chaos-position-").await;
    let disk = &rig.disk;
    let mut dispatch = rig.start(Service::Dispatch, true).await;
    let unit = a_sample_unit();
    let (unit_id, home) = (unit.id, unit.position);
    let base = lifecycle::unix_ms_now();
    let report = |i: i64| pb::ReportPositionRequest {
        namespace: String::new(),
        unit_id: unit_id.clone(),
        lat: home.lat + 0.0001 * (i % 50) as f64,
        lon: home.lon,
        at_unix_ms: base + i,
    };
    let mut radio = client::dispatch(dispatch.grpc_addr());

    let (i, _) = refused_while_full(disk, "position report", 500, async |i| {
        Ok(radio.report_position(report(i as i64)).await?.into_inner())
    })
    .await;
    let refused = i as i64;
    restart_through_a_full_disk(&mut dispatch, disk).await;
    let mut radio = client::dispatch(dispatch.grpc_addr());
    let after = radio
        .report_position(report(refused))
        .await
        .expect("the retry after the restart")
        .into_inner();
    let held = after.unit.as_ref().expect("the unit in the answer");
    assert!(
        held.position_at_unix_ms >= base + refused,
        "the unit's position is from {} after the retry of {} ({after:?})",
        held.position_at_unix_ms,
        base + refused
    );
}

/// The same for dispatch's unit status changes, on dispatch's own full disk: a change refused
/// because the store could not write is never refused on a retry as illegal from the state it
/// left in memory ("the unit is out of service"), and after the restart the change is taken or
/// found kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_not_on_disk_is_never_refused_as_already_made() {
    let rig = SmallDiskRig::new("muster-chaos-status-").await;
    let disk = &rig.disk;
    let mut dispatch = rig.start(Service::Dispatch, true).await;
    let unit_id = a_sample_unit().id;
    // Out of service and back, turn about: each change is legal only from the state the one
    // before it left.
    let takes_out = |i: usize| i.is_multiple_of(2);
    let change = |i: usize| pb::UpdateUnitStatusRequest {
        namespace: String::new(),
        unit_id: unit_id.clone(),
        event: if takes_out(i) {
            pb::UnitStatusEvent::GoOutOfService
        } else {
            pb::UnitStatusEvent::ReturnToService
        } as i32,
        incident_id: String::new(),
        reason: if takes_out(i) {
            "pump overhaul".into()
        } else {
            String::new()
        },
    };
    let mut desk = client::dispatch(dispatch.grpc_addr());

    let (i, retries) = refused_while_full(disk, "status change", 500, async |i| {
        Ok(desk.update_unit_status(change(i)).await?.into_inner())
    })
    .await;
    assert_not_refused_from_memory(retries, "status change");
    restart_through_a_full_disk(&mut dispatch, disk).await;
    let mut desk = client::dispatch(dispatch.grpc_addr());
    // Taken now or kept after all, the answer comes from the disk, and the unit is where the
    // change puts it.
    taken_now_or_kept(desk.update_unit_status(change(i)).await);
    let expected = if takes_out(i) {
        pb::UnitStatus::OutOfService
    } else {
        pb::UnitStatus::Available
    };
    let units = desk
        .list_units(pb::ListUnitsRequest::default())
        .await
        .expect("the unit board after the restart")
        .into_inner()
        .units;
    let unit = units
        .iter()
        .find(|unit| unit.id == unit_id)
        .expect("the unit is on the board");
    assert_eq!(
        unit.status, expected as i32,
        "{unit_id} after the retry of change {i}: {unit:?}"
    );
}

/// The same for retiring units, on dispatch's own full disk: a retirement refused because the
/// store could not write is never refused on a retry as "already retired" from the state it left
/// in memory, and after the restart the unit is retired, by the retry or by the refused call
/// after all, and off the unit board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retirement_not_on_disk_is_never_refused_as_already_made() {
    let rig = SmallDiskRig::new("muster-chaos-retire-").await;
    let disk = &rig.disk;
    let mut dispatch = rig.start(Service::Dispatch, true).await;
    let home = a_sample_unit().home_township;
    let mut desk = client::dispatch(dispatch.grpc_addr());
    // A retirement is one-way, so each attempt retires a unit of its own, all registered while
    // the disk has room (sled takes a few hundred small writes into the files it has).
    const UNITS: usize = 400;
    for i in 0..UNITS {
        desk.register_unit(pb::RegisterUnitRequest {
            namespace: String::new(),
            id: format!("RET-{i}"),
            call_sign: format!("Retiree {i}"),
            unit_type: "fire_engine".into(),
            capabilities: Vec::new(),
            crew_size: 4,
            home_township_code: home.clone(),
            position: None,
        })
        .await
        .expect("registered while the disk has room");
    }
    let retire = |i: usize| pb::RetireUnitRequest {
        namespace: String::new(),
        unit_id: format!("RET-{i}"),
        reason: "decommissioned".into(),
    };

    let (i, retries) = refused_while_full(disk, "retirement", UNITS, async |i| {
        Ok(desk.retire_unit(retire(i)).await?.into_inner())
    })
    .await;
    assert_not_refused_from_memory(retries, "retirement");
    restart_through_a_full_disk(&mut dispatch, disk).await;
    let mut desk = client::dispatch(dispatch.grpc_addr());
    if let Some(status) = taken_now_or_kept(desk.retire_unit(retire(i)).await) {
        assert!(status.message().contains("is retired"), "{status:?}");
    }
    let units = desk
        .list_units(pb::ListUnitsRequest::default())
        .await
        .expect("the unit board after the restart")
        .into_inner()
        .units;
    let retired = format!("RET-{i}");
    assert!(
        units.iter().all(|unit| unit.id != retired),
        "{retired} is still on the board after the retry of its retirement"
    );
    // The units before it were retired for good, the ones after it never were.
    assert!(units.iter().all(|unit| {
        !unit.id.starts_with("RET-")
            || unit.id["RET-".len()..]
                .parse::<usize>()
                .is_ok_and(|n| n > i)
    }));
    assert_eq!(
        units
            .iter()
            .filter(|unit| unit.id.starts_with("RET-"))
            .count(),
        UNITS - i - 1
    );
}

/// The same for a dispatcher's booking by hand, on dispatch's own full disk: a booking refused
/// because the store could not write is never refused on a retry as "not available" from the
/// unit it left dispatched in memory, and after the restart the unit is on the incident, by the
/// retry or by the refused booking after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_by_hand_not_on_disk_is_never_refused_as_already_made() {
    let rig = SmallDiskRig::new("muster-chaos-assign-").await;
    let disk = &rig.disk;
    let intake = rig.start(Service::Intake, false).await;
    let _escalation = rig.start(Service::Escalation, false).await;
    let mut dispatch = rig.start(Service::Dispatch, true).await;
    let town = chaos::workload::townships()[0].0.clone();
    let incident_id = client::intake(intake.grpc_addr())
        .report_incident(chaos::workload::report_request(0, "by-hand-0", &town))
        .await
        .expect("a report")
        .into_inner()
        .incident_id;
    let mut desk = client::dispatch(dispatch.grpc_addr());
    let assignments = |incident_id: &str| pb::GetAssignmentsRequest {
        namespace: String::new(),
        incident_id: incident_id.to_string(),
    };
    // Graded and booked by the plan first: a booking by hand needs an incident dispatch knows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while desk
        .get_assignments(assignments(&incident_id))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "dispatch did not book {incident_id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Each attempt books a unit of its own, available before the disk fills.
    let available: Vec<String> = desk
        .list_units(pb::ListUnitsRequest::default())
        .await
        .expect("the unit board")
        .into_inner()
        .units
        .into_iter()
        .filter(|unit| unit.status == pb::UnitStatus::Available as i32)
        .map(|unit| unit.id)
        .collect();
    let assign = |i: usize| pb::AssignRequest {
        namespace: String::new(),
        incident_id: incident_id.clone(),
        unit_id: available[i].clone(),
        by: "Dispatcher on the full disk".into(),
    };

    let (i, retries) = refused_while_full(disk, "booking by hand", available.len(), async |i| {
        Ok(desk.assign(assign(i)).await?.into_inner())
    })
    .await;
    assert_not_refused_from_memory(retries, "booking by hand");
    restart_through_a_full_disk(&mut dispatch, disk).await;
    let mut desk = client::dispatch(dispatch.grpc_addr());
    taken_now_or_kept(desk.assign(assign(i)).await);
    let on_the_incident: Vec<String> = desk
        .get_assignments(assignments(&incident_id))
        .await
        .expect("the incident's assignments after the restart")
        .into_inner()
        .units
        .map(|units| units.assignments)
        .unwrap_or_default()
        .into_iter()
        .map(|assignment| assignment.unit_id)
        .collect();
    for booked in &available[..=i] {
        assert!(
            on_the_incident.contains(booked),
            "{booked} is not on {incident_id} after the retry of booking {i}: {on_the_incident:?}"
        );
    }
}
