//! `muster rebuild <service>` end to end (issue 9): the three services run on a real nats-server
//! with real sled directories; a scenario leaves incidents graded, acknowledged, updated, with
//! units declined and released; then one service is stopped, its data directory deleted, the
//! real `muster rebuild` binary rebuilds it from MUSTER_EVENTS, its durable consumers are deleted
//! (so JetStream redelivers every message: only the processed ids keep that harmless), and the
//! restarted service must answer exactly as before, field by field. A new report afterwards must
//! get a new incident id and produce each event once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use muster_proto::v1 as pb;
use test_support::eventually;

use crate::system::{CHEMICAL_PARK, DENSE_TOWNSHIP, Service, System, WAIT, muster_binary, report};

/// Dispatch's acknowledgement timeout in these tests: long enough that no timer fires while
/// the test compares (and given to the rebuild, which re-creates the deadlines).
const ACK_TIMEOUT_MS: i64 = 600_000;

/// Runs `muster rebuild <service>` for the system's data directory of `service`.
fn rebuild(system: &System, service: Service, extra: &[&str]) -> Output {
    rebuild_into(system.nats.url(), service, &system.data_dir(service), extra)
}

fn rebuild_into(nats_url: &str, service: Service, data_dir: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(muster_binary())
        .args([
            "rebuild",
            service.name(),
            "--nats-url",
            nats_url,
            "--data-dir",
        ])
        .arg(data_dir)
        .args(["--dispatch-ack-timeout-ms", &ACK_TIMEOUT_MS.to_string()])
        .args(extra)
        .env_remove("MUSTER_NATS_URL")
        .env_remove("MUSTER_NAMESPACE")
        .output()
        .expect("the muster binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn bus_of(system: &System) -> bus::Bus {
    bus::Bus::connect(system.nats.url(), "rebuild-test", Duration::from_secs(5))
        .await
        .unwrap()
}

/// Messages per subject in MUSTER_EVENTS.
async fn subject_counts(system: &System) -> BTreeMap<String, usize> {
    use futures_util::TryStreamExt;
    let bus = bus_of(system).await;
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let mut info = stream.info_with_subjects("muster.live.>").await.unwrap();
    let mut counts = BTreeMap::new();
    while let Some((subject, count)) = info.try_next().await.unwrap() {
        counts.insert(subject, count);
    }
    counts
}

/// Waits until every consumer of the event stream has taken and acknowledged everything and the
/// stream stopped growing: the services are quiet and their read models final. The webhook
/// notifier is left out: with no webhook configured it retries with backoff, and nothing here
/// compares its records.
async fn settled(system: &System) {
    let bus = bus_of(system).await;
    let last_seen = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    eventually("the event stream and every consumer settled", WAIT, || {
        let (bus, last_seen) = (bus.clone(), last_seen.clone());
        async move {
            use futures_util::TryStreamExt;
            let mut stream = bus.jetstream().get_stream(bus::EVENTS_STREAM).await.ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let names: Vec<String> = stream.consumer_names().try_collect().await.ok()?;
            for name in names
                .into_iter()
                .filter(|n| !n.starts_with("escalation-notifier-"))
            {
                let info = stream.consumer_info(&name).await.ok()?;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    eprintln!(
                        "settling: {name} pending {} ack pending {}",
                        info.num_pending, info.num_ack_pending
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return None;
                }
            }
            let same = {
                let mut seen = last_seen.lock().unwrap();
                std::mem::replace(&mut *seen, last) == last
            };
            if same {
                Some(())
            } else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                None
            }
        }
    })
    .await;
}

/// Deletes the service's durable consumers: they come back on start with DeliverPolicy::All and
/// redeliver the whole stream, which the rebuilt processed ids must make harmless.
async fn delete_consumers(system: &System, service: Service) {
    use futures_util::TryStreamExt;
    let bus = bus_of(system).await;
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    let prefix = format!("{}-", service.name());
    let mut deleted = 0;
    for name in names.into_iter().filter(|name| name.starts_with(&prefix)) {
        stream.delete_consumer(&name).await.unwrap();
        deleted += 1;
    }
    assert!(deleted > 0, "{} had no durable consumer", service.name());
}

async fn report_one(system: &System, kind: &str, township: &str, facts: pb::Facts) -> String {
    system
        .intake()
        .await
        .report_incident(report(kind, township, facts))
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

/// Incidents graded, acknowledged, updated (a regrade), with a unit declined (and replaced) and
/// one released; returns their ids once everything settled.
async fn scenario(system: &System) -> Vec<String> {
    let grade_iii = pb::Facts {
        deaths: Some(5),
        ..Default::default()
    };
    let first = report_one(system, "accident.construction", CHEMICAL_PARK, grade_iii).await;
    let second = report_one(
        system,
        "accident.construction",
        DENSE_TOWNSHIP,
        pb::Facts {
            deaths: Some(1),
            ..Default::default()
        },
    )
    .await;
    let third = report_one(
        system,
        "accident.hazardous_chemicals",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(2),
            ..Default::default()
        },
    )
    .await;
    for id in [&first, &second, &third] {
        system.responding(id).await;
    }
    // An officer acknowledges the first.
    system
        .escalation()
        .await
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: first.clone(),
            officer: "duty officer Wang".into(),
        })
        .await
        .expect("Acknowledge answers");
    // The second gets worse: an update, a regrade, more units.
    system
        .intake()
        .await
        .update_incident(pb::UpdateIncidentRequest {
            namespace: String::new(),
            incident_id: second.clone(),
            facts: Some(pb::Facts {
                deaths: Some(4),
                ..Default::default()
            }),
            summary: Some("two more found".into()),
            updated_by: "duty officer Li".into(),
            request_id: "update-second-1".into(),
        })
        .await
        .expect("UpdateIncident answers");
    // The third: one unit declines (and is replaced), another is released.
    let held = system
        .dispatch()
        .await
        .get_assignments(pb::GetAssignmentsRequest {
            namespace: String::new(),
            incident_id: third.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .units
        .expect("the third incident has units")
        .assignments;
    assert!(
        held.len() >= 2,
        "the plan books at least two units: {held:#?}"
    );
    system
        .dispatch()
        .await
        .decline_assignment(pb::DeclineAssignmentRequest {
            namespace: String::new(),
            unit_id: held[0].unit_id.clone(),
            incident_id: third.clone(),
            reason: "crew at another call".into(),
        })
        .await
        .expect("DeclineAssignment answers");
    system
        .dispatch()
        .await
        .release_unit(pb::ReleaseUnitRequest {
            namespace: String::new(),
            unit_id: held[1].unit_id.clone(),
            incident_id: third.clone(),
        })
        .await
        .expect("ReleaseUnit answers");
    // The third is escalated by hand.
    system
        .escalation()
        .await
        .escalate(pb::EscalateRequest {
            namespace: String::new(),
            incident_id: third.clone(),
            reason: "fumes spreading toward the school".into(),
        })
        .await
        .expect("Escalate answers");
    let (acked, updated, escalated) = (first.clone(), second.clone(), third.clone());
    system
        .incident_when("acknowledged in the timeline", &acked, |incident| {
            incident
                .timeline
                .iter()
                .any(|e| e.event_type == "acknowledged")
        })
        .await;
    system
        .incident_when("the update regraded", &updated, |incident| {
            incident
                .timeline
                .iter()
                .filter(|e| e.event_type == "graded")
                .count()
                >= 2
        })
        .await;
    system
        .incident_when("escalated by hand", &escalated, |incident| {
            incident
                .timeline
                .iter()
                .any(|e| e.event_type == "escalated")
        })
        .await;
    settled(system).await;
    vec![first, second, third]
}

/// Intake's answers: the list and every incident.
async fn intake_answers(system: &System, ids: &[String]) -> (Vec<pb::Incident>, Vec<pb::Incident>) {
    let mut intake = system.intake().await;
    let mut each = Vec::new();
    for id in ids {
        each.push(
            intake
                .get_incident(pb::GetIncidentRequest {
                    namespace: String::new(),
                    incident_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .incident
                .unwrap(),
        );
    }
    (system.incidents().await, each)
}

/// Dispatch's answers: every unit and every incident's assignments. Times that come from the
/// seeding of the region (not from any event) and the position age (from the clock) are zeroed:
/// units no event touched read the seeding time, which a rebuild cannot know.
async fn dispatch_answers(
    system: &System,
    ids: &[String],
) -> (Vec<pb::Unit>, Vec<pb::GetAssignmentsResponse>) {
    let mut dispatch = system.dispatch().await;
    let mut units = dispatch
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units;
    // The seeding time is the one most units share.
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for unit in &units {
        *times.entry(unit.status_since_unix_ms).or_default() += 1;
    }
    let seeded = times
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(time, _)| *time)
        .unwrap_or_default();
    for unit in &mut units {
        if unit.status_since_unix_ms == seeded {
            unit.status_since_unix_ms = 0;
        }
        if unit.position_at_unix_ms == seeded {
            unit.position_at_unix_ms = 0;
        }
        unit.position_age_ms = 0;
    }
    let mut assignments = Vec::new();
    for id in ids {
        assignments.push(
            dispatch
                .get_assignments(pb::GetAssignmentsRequest {
                    namespace: String::new(),
                    incident_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    (units, assignments)
}

/// Escalation's answers per incident: grading, command, deadlines.
async fn escalation_answers(
    system: &System,
    ids: &[String],
) -> Vec<(
    pb::GetGradingResponse,
    pb::GetCommandResponse,
    pb::ListDeadlinesResponse,
)> {
    let mut escalation = system.escalation().await;
    let mut answers = Vec::new();
    for id in ids {
        let grading = escalation
            .get_grading(pb::GetGradingRequest {
                namespace: String::new(),
                incident_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let command = escalation
            .get_command(pb::GetCommandRequest {
                namespace: String::new(),
                incident_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let deadlines = escalation
            .list_deadlines(pb::ListDeadlinesRequest {
                namespace: String::new(),
                incident_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        answers.push((grading, command, deadlines));
    }
    answers
}

/// Stops `service`, deletes its data directory, rebuilds it with the binary, deletes its durable
/// consumers and starts it again; returns the command's output.
async fn lose_and_rebuild(system: &mut System, service: Service) -> String {
    system.stop_service(service).await;
    let dir = system.data_dir(service);
    std::fs::remove_dir_all(&dir).unwrap();
    let output = rebuild(system, service, &[]);
    let printed = text(&output);
    assert!(output.status.success(), "rebuild failed: {printed}");
    eprintln!("{printed}");
    delete_consumers(system, service).await;
    system.start_service(service).await;
    settled(system).await;
    printed
}

/// After the rebuild: a new report gets a new id, and each of its events is on the stream once;
/// nothing of the old incidents was published again.
async fn new_report_once(system: &System, before: &BTreeMap<String, usize>, old_ids: &[String]) {
    let new_id = report_one(
        system,
        "accident.construction",
        DENSE_TOWNSHIP,
        pb::Facts {
            deaths: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert!(
        !old_ids.contains(&new_id),
        "the new incident reuses an old id: {new_id}"
    );
    let incident = system.responding(&new_id).await;
    settled(system).await;
    let after = subject_counts(system).await;
    for (subject, count) in before {
        assert_eq!(
            after.get(subject),
            Some(count),
            "{subject}: published again after the rebuild"
        );
    }
    for event in ["reported", "graded", "units_assigned"] {
        let subject = format!("muster.live.incident.390000.{new_id}.{event}");
        assert_eq!(after.get(&subject), Some(&1), "{subject}");
        assert_eq!(
            incident
                .timeline
                .iter()
                .filter(|e| e.event_type == event)
                .count(),
            1,
            "{event} in the new incident's timeline: {:#?}",
            incident.timeline
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_rebuilt_from_the_stream_answers_as_before() {
    let mut system = System::empty().await;
    system.dispatch_ack_timeout_ms = Some(ACK_TIMEOUT_MS);
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let ids = scenario(&system).await;
    let before = intake_answers(&system, &ids).await;
    let counts = subject_counts(&system).await;

    let printed = lose_and_rebuild(&mut system, Service::Intake).await;
    for expected in [
        "rebuilt intake",
        "incidents",
        "last incident number",
        "audit chain",
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} missing: {printed}"
        );
    }
    let after = intake_answers(&system, &ids).await;
    assert_eq!(before.0.len(), after.0.len(), "ListIncidents length");
    for (was, is) in before.0.iter().zip(&after.0) {
        assert_eq!(was, is, "ListIncidents entry {}", was.id);
    }
    assert_eq!(before.1, after.1, "GetIncident answers");
    new_report_once(&system, &counts, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispatch_rebuilt_from_the_stream_answers_as_before() {
    let mut system = System::empty().await;
    system.dispatch_ack_timeout_ms = Some(ACK_TIMEOUT_MS);
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let ids = scenario(&system).await;
    let before = dispatch_answers(&system, &ids).await;
    let counts = subject_counts(&system).await;

    let printed = lose_and_rebuild(&mut system, Service::Dispatch).await;
    for expected in [
        "rebuilt dispatch",
        "units",
        "assignment records",
        "mutual-aid",
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} missing: {printed}"
        );
    }
    let after = dispatch_answers(&system, &ids).await;
    assert_eq!(before.0.len(), after.0.len(), "ListUnits length");
    for (was, is) in before.0.iter().zip(&after.0) {
        assert_eq!(was, is, "unit {}", was.id);
    }
    for (id, (was, is)) in ids.iter().zip(before.1.iter().zip(&after.1)) {
        assert_eq!(was, is, "GetAssignments of {id}");
    }
    new_report_once(&system, &counts, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escalation_rebuilt_from_the_stream_answers_as_before() {
    let mut system = System::empty().await;
    system.dispatch_ack_timeout_ms = Some(ACK_TIMEOUT_MS);
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let ids = scenario(&system).await;
    let before = escalation_answers(&system, &ids).await;
    // The comparison below covers what the scenario did.
    let command = |i: usize| before[i].1.command.clone().expect("a command");
    assert!(command(0).acknowledged, "{:#?}", command(0));
    assert!(command(0).acknowledged_at_unix_ms > 0);
    assert!(command(2).escalation_count >= 1, "{:#?}", command(2));
    assert!(command(0).ack_due_at_unix_ms == 0 && command(1).ack_due_at_unix_ms > 0);
    assert!(before.iter().any(|answer| !answer.2.deadlines.is_empty()));
    let counts = subject_counts(&system).await;

    let printed = lose_and_rebuild(&mut system, Service::Escalation).await;
    for expected in [
        "rebuilt escalation",
        "gradings",
        "command machines",
        "SubmitReport",
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} missing: {printed}"
        );
    }
    let after = escalation_answers(&system, &ids).await;
    for (id, (was, is)) in ids.iter().zip(before.iter().zip(&after)) {
        assert_eq!(was.0, is.0, "GetGrading of {id}");
        assert_eq!(was.1, is.1, "GetCommand of {id}");
        assert_eq!(was.2, is.2, "ListDeadlines of {id}");
    }
    new_report_once(&system, &counts, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_refuses_a_store_in_place_and_an_unreachable_nats() {
    let mut system = System::empty().await;
    system.start_service(Service::Intake).await;
    let id = report_one(
        &system,
        "accident.construction",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(1),
            ..Default::default()
        },
    )
    .await;
    let dir = system.data_dir(Service::Intake);

    // Running: refused even with --force, because sled's lock says the service holds it.
    let output = rebuild(&system, Service::Intake, &["--force"]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("stop the service first"),
        "{}",
        text(&output)
    );
    system.stop_service(Service::Intake).await;

    // A store in place, no --force: refused, nothing written or moved.
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let files = listing(&dir);
    let output = rebuild(&system, Service::Intake, &[]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("--force"), "{}", text(&output));
    assert_eq!(
        listing(&dir),
        files,
        "the refused rebuild changed the directory"
    );

    // NATS unreachable: refused with a sentence naming it; the directory is untouched.
    let output = rebuild_into("nats://127.0.0.1:1", Service::Intake, &dir, &["--force"]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("unreachable"), "{}", text(&output));
    assert_eq!(
        listing(&dir),
        files,
        "the failed rebuild changed the directory"
    );
    let parent = dir.parent().unwrap();
    let strays: Vec<String> = listing(parent)
        .into_iter()
        .filter(|name| name.contains("rebuild"))
        .collect();
    assert!(strays.is_empty(), "left behind: {strays:?}");

    // With --force: rebuilt, the old directory moved aside and kept.
    let output = rebuild(&system, Service::Intake, &["--force"]);
    assert!(output.status.success(), "{}", text(&output));
    let aside: Vec<String> = listing(parent)
        .into_iter()
        .filter(|name| name.starts_with("intake.before-rebuild-"))
        .collect();
    assert_eq!(aside.len(), 1, "{}", text(&output));
    assert_eq!(
        listing(&parent.join(&aside[0])),
        files,
        "the old store was changed"
    );
    system.start_service(Service::Intake).await;
    let incident = system.incident_when("rebuilt", &id, |_| true).await;
    assert_eq!(incident.id, id);
}

/// One policy minute lasts this long in the timer test.
const MINUTE_MS: i64 = 100;

/// notify → wait for the acknowledgement deadline (2 s on the compressed clock) → escalate,
/// once: the machine falls quiet after one timer fired.
const QUICK_POLICY: &str = r#"version = 1

[ack_deadline_minutes]
default = { I = 20, II = 20, III = 20, IV = 20, ungraded = 20 }

[escalation]
num_loops = 0

[[escalation.step]]
action = "notify"

[[escalation.step]]
action = "wait_ack_deadline"

[[escalation.step]]
action = "escalate"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escalation_rebuilt_after_a_deadline_fired_answers_as_before() {
    let mut system = System::empty().await;
    system.dispatch_ack_timeout_ms = Some(ACK_TIMEOUT_MS);
    let policy_file = system.dir.path().join("quick-policy.toml");
    std::fs::write(&policy_file, QUICK_POLICY).unwrap();
    let policy = domain::escalation::EscalationPolicy::from_toml("quick-policy.toml", QUICK_POLICY)
        .expect("the test policy is valid")
        .with_minute_ms(MINUTE_MS);
    system.escalation_policy = Some(std::sync::Arc::new(policy));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let id = report_one(
        &system,
        "accident.construction",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(5),
            ..Default::default()
        },
    )
    .await;
    system
        .incident_when("escalated by the deadline", &id, |incident| {
            incident
                .timeline
                .iter()
                .any(|e| e.event_type == "escalated")
        })
        .await;
    settled(&system).await;
    let ids = vec![id];
    let before = escalation_answers(&system, &ids).await;
    let command = before[0].1.command.clone().expect("a command");
    assert_eq!(command.escalation_count, 1, "{command:#?}");
    let counts = subject_counts(&system).await;

    system.stop_service(Service::Escalation).await;
    std::fs::remove_dir_all(system.data_dir(Service::Escalation)).unwrap();
    let policy_arg = policy_file.to_str().unwrap().to_string();
    let output = rebuild(
        &system,
        Service::Escalation,
        &[
            "--escalation-policy",
            &policy_arg,
            "--escalation-minute-ms",
            &MINUTE_MS.to_string(),
        ],
    );
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    // The deadline's timer was fired by the rebuild, at the time of the `escalated` it caused.
    let fired = printed
        .lines()
        .find(|line| line.trim_start().starts_with("timers fired"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|count| count.parse::<u64>().ok());
    assert_eq!(fired, Some(1), "{printed}");
    delete_consumers(&system, Service::Escalation).await;
    system.start_service(Service::Escalation).await;
    settled(&system).await;
    let after = escalation_answers(&system, &ids).await;
    assert_eq!(before[0].0, after[0].0, "GetGrading");
    assert_eq!(before[0].1, after[0].1, "GetCommand");
    assert_eq!(before[0].2, after[0].2, "ListDeadlines");
    // The deadline that fired does not fire again.
    let now = subject_counts(&system).await;
    let subject = format!("muster.live.incident.390000.{}.escalated", ids[0]);
    assert_eq!(now.get(&subject), Some(&1), "{subject}");
    assert_eq!(counts.get(&subject), Some(&1), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_names_a_bad_event_by_sequence_and_a_missing_stream() {
    let mut system = System::empty().await;
    system.start_service(Service::Intake).await;
    let id = report_one(
        &system,
        "accident.construction",
        CHEMICAL_PARK,
        pb::Facts {
            deaths: Some(1),
            ..Default::default()
        },
    )
    .await;
    // Something that is not an incident event, on an incident subject.
    let bus = bus_of(&system).await;
    let subject =
        bus::subjects::incident_event("live", "390000", "INC-20261128-999999", "updated").unwrap();
    let ack = bus
        .publish_dedup(subject, "garbage-1", "not protobuf".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    settled(&system).await;
    system.stop_service(Service::Intake).await;
    let dir = system.data_dir(Service::Intake);
    std::fs::remove_dir_all(&dir).unwrap();

    let output = rebuild(&system, Service::Intake, &[]);
    let printed = text(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("stream sequence {}", ack.sequence)),
        "{printed}"
    );
    assert!(printed.contains("--skip-bad-events"), "{printed}");
    assert!(!dir.exists(), "a failed rebuild left {}", dir.display());

    let output = rebuild(&system, Service::Intake, &["--skip-bad-events"]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("bad events skipped: 1"), "{printed}");
    system.start_service(Service::Intake).await;
    system.incident_when("rebuilt", &id, |_| true).await;

    // A server without the stream: the wrong --nats-url.
    let empty = test_support::TestNats::start().await;
    let elsewhere = system.dir.path().join("elsewhere");
    let output = rebuild_into(empty.url(), Service::Intake, &elsewhere, &[]);
    let printed = text(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains("cannot read the stream MUSTER_EVENTS"),
        "{printed}"
    );
    assert!(!elsewhere.exists(), "{printed}");
}
