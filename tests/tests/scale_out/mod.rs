//! Scale-out by partition: one nats-server, one intake, one dispatch and TWO escalation
//! instances, one per province of a two-province region. Each grades only its own province's
//! incidents, answers only for them (the other refuses with FAILED_PRECONDITION naming the
//! owner), its consumers see only its own subjects, and one keeps working while the other is
//! stopped; the stopped one catches up when it comes back.

use std::sync::Arc;

use domain::region::{Region, SourceFile};
use futures_util::TryStreamExt;
use muster_proto::v1 as pb;
use test_support::eventually;

use crate::system::{CHEMICAL_PARK, Running, System, WAIT, report};

/// The sample region's province.
const WEST: &str = "390000";
/// The province this test adds.
const EAST: &str = "410000";
/// A township of the added province.
const EAST_TOWNSHIP: &str = "410102001";

/// The sample region plus a small second province (one city, one county, one township) with
/// enough units for a grade III chemical accident.
fn two_province_region(write_to: Option<&std::path::Path>) -> Region {
    let [jurisdictions, units, plans, rulebook] = Region::embedded_default_sources();
    let jurisdictions_text = format!(
        "{}\n{}",
        jurisdictions.text,
        r#"
[[jurisdiction]]
code = "410000"
name = "东屿省"  # Dongyu Province (test only)
level = "province"
parent = "000000"
centroid = { lat = 31.50, lon = 118.50 }
gdp_cny = 1_000_000_000_000

[[jurisdiction]]
code = "410100"
name = "屿州市"
level = "city"
parent = "410000"
centroid = { lat = 31.50, lon = 118.50 }

[[jurisdiction]]
code = "410102"
name = "屿中区"
level = "county"
parent = "410100"
centroid = { lat = 31.50, lon = 118.50 }

[[jurisdiction]]
code = "410102001"
name = "屿中街道"
level = "township"
parent = "410102"
centroid = { lat = 31.501, lon = 118.502 }
density = "dense"
"#
    );
    let mut east_units = String::new();
    for (unit_type, count) in [
        ("hazmat", 2),
        ("fire_engine", 4),
        ("ambulance", 2),
        ("police", 1),
    ] {
        for n in 1..=count {
            east_units.push_str(&format!(
                "\n[[unit]]\nid = \"YZ-{unit_type}-{n}\"\ncall_sign = \"Yuzhong {unit_type} {n}\"\n\
                 unit_type = \"{unit_type}\"\nhome_township = \"{EAST_TOWNSHIP}\"\ncrew_size = 4\n"
            ));
        }
    }
    let units_text = format!("{}\n{east_units}", units.text);
    // The same files on disk, for the `muster rebuild --region-dir` a stopped instance gets.
    if let Some(dir) = write_to {
        std::fs::create_dir_all(dir).unwrap();
        for (file, text) in [
            (jurisdictions.name, jurisdictions_text.as_str()),
            (units.name, units_text.as_str()),
            (plans.name, plans.text),
            (rulebook.name, rulebook.text),
        ] {
            let name = std::path::Path::new(file).file_name().unwrap();
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    Region::from_sources(
        SourceFile {
            name: jurisdictions.name,
            text: &jurisdictions_text,
        },
        SourceFile {
            name: units.name,
            text: &units_text,
        },
        plans,
        rulebook,
    )
    .expect("the two-province test region loads")
}

/// `graded` events on the stream for `incident_id`, as (subject, count).
async fn graded_on_the_stream(system: &System, incident_id: &str) -> Vec<(String, usize)> {
    let bus = bus::Bus::connect(system.nats.url(), "scale-out-check", WAIT)
        .await
        .unwrap();
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let mut info = stream
        .info_with_subjects(format!("muster.live.incident.*.{incident_id}.graded"))
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some((subject, count)) = info.try_next().await.unwrap() {
        found.push((subject, count));
    }
    found
}

async fn report_in(system: &System, township: &str, summary: &str) -> String {
    let mut request = report(
        "accident.hazardous_chemicals",
        township,
        pb::Facts {
            deaths: Some(4),
            ..Default::default()
        },
    );
    request.summary = summary.into();
    system
        .intake()
        .await
        .report_incident(request)
        .await
        .expect("intake takes the report")
        .into_inner()
        .incident_id
}

/// The owner answers GetGrading; the other instance refuses with FAILED_PRECONDITION naming
/// the owner (message and `muster-partition` metadata).
async fn only_the_owner_answers(
    system: &System,
    owner: &Running,
    other: &Running,
    owner_partition: &str,
    incident_id: &str,
) -> pb::Graded {
    let grading = system
        .escalation_at(owner.addr)
        .await
        .get_grading(pb::GetGradingRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("the owner answers for {incident_id}: {status:?}"))
        .into_inner()
        .grading
        .unwrap();
    let refused = system
        .escalation_at(other.addr)
        .await
        .get_grading(pb::GetGradingRequest {
            namespace: String::new(),
            incident_id: incident_id.into(),
        })
        .await
        .expect_err("the other instance refuses");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains(&format!("belongs to partition {owner_partition}")),
        "{}",
        refused.message()
    );
    assert_eq!(
        refused
            .metadata()
            .get("muster-partition")
            .and_then(|value| value.to_str().ok()),
        Some(owner_partition)
    );
    grading
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_escalation_instances_each_grade_and_answer_for_their_own_province_only() {
    let mut system = System::empty().await;
    system.region = Arc::new(two_province_region(None));
    system.start_service(crate::system::Service::Intake).await;
    system.start_service(crate::system::Service::Dispatch).await;
    let west = system.start_escalation_instance("west", &[WEST]).await;
    let east = system.start_escalation_instance("east", &[EAST]).await;

    // One incident in each province: graded once each, by its own province's instance, and
    // units booked.
    let west_incident = report_in(&system, CHEMICAL_PARK, "west: chemical plant fire").await;
    let east_incident = report_in(&system, EAST_TOWNSHIP, "east: chemical plant fire").await;
    for (incident_id, owner, other, partition) in [
        (&west_incident, &west, &east, WEST),
        (&east_incident, &east, &west, EAST),
    ] {
        let incident = system.responding(incident_id).await;
        let units = incident.units.expect("units assigned");
        assert!(
            !units.assignments.is_empty(),
            "{incident_id}: no unit booked: {units:?}"
        );
        let grading = only_the_owner_answers(&system, owner, other, partition, incident_id).await;
        assert_eq!(grading.grade(), pb::Grade::Iii, "{incident_id}");
        assert_eq!(
            graded_on_the_stream(&system, incident_id).await,
            [(
                format!("muster.live.incident.{partition}.{incident_id}.graded"),
                1
            )],
            "{incident_id} is graded exactly once, in its partition"
        );
    }

    // An acknowledgement through the owner stops its clock; through the other it is refused.
    for (incident_id, owner, other, partition) in [
        (&west_incident, &west, &east, WEST),
        (&east_incident, &east, &west, EAST),
    ] {
        let refused = system
            .escalation_at(other.addr)
            .await
            .acknowledge(pb::AcknowledgeRequest {
                namespace: String::new(),
                incident_id: incident_id.clone(),
                officer: "duty officer on the wrong line".into(),
            })
            .await
            .expect_err("the other instance refuses the acknowledgement");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains(partition),
            "{}",
            refused.message()
        );
        let command = system
            .escalation_at(owner.addr)
            .await
            .acknowledge(pb::AcknowledgeRequest {
                namespace: String::new(),
                incident_id: incident_id.clone(),
                officer: format!("duty officer of {partition}"),
            })
            .await
            .expect("the owner takes the acknowledgement")
            .into_inner()
            .command
            .unwrap();
        assert!(command.acknowledged, "{incident_id}: {command:?}");
        assert_eq!(
            command.ack_due_at_unix_ms, 0,
            "{incident_id}: clock still running"
        );
        system
            .incident_when(&format!("{incident_id} acknowledged"), incident_id, |i| {
                i.timeline.iter().any(|e| e.event_type == "acknowledged")
            })
            .await;
    }

    // Nothing crossed: each instance's consumers filter only its partition, and each grader was
    // delivered exactly its own partition's one report.
    let bus = bus::Bus::connect(system.nats.url(), "scale-out-check", WAIT)
        .await
        .unwrap();
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    for partition in [WEST, EAST] {
        for purpose in ["grader", "notify", "notifier"] {
            let name = format!("escalation-{purpose}-p{partition}-live");
            let info = stream.consumer_info(&name).await.unwrap();
            assert!(!info.config.filter_subjects.is_empty(), "{name}");
            for filter in &info.config.filter_subjects {
                assert!(
                    filter.contains(&format!(".{partition}.")),
                    "{name} filters {filter}"
                );
            }
        }
        let grader = stream
            .consumer_info(format!("escalation-grader-p{partition}-live"))
            .await
            .unwrap();
        assert_eq!(
            grader.delivered.consumer_sequence, 1,
            "the {partition} grader saw only its own report: {grader:?}"
        );
    }
    assert!(
        stream
            .consumer_info("escalation-grader-live")
            .await
            .is_err(),
        "no instance consumes every partition"
    );

    // The west instance stops; the east one keeps working, and a west report waits for its
    // instance, which grades it when it is back (same data directory, same consumers).
    west.stop().await;
    let east_second = report_in(&system, EAST_TOWNSHIP, "east: a second fire").await;
    let west_second = report_in(&system, CHEMICAL_PARK, "west: a fire while west is down").await;
    system.responding(&east_second).await;
    let grading = system
        .escalation_at(east.addr)
        .await
        .get_grading(pb::GetGradingRequest {
            namespace: String::new(),
            incident_id: east_second.clone(),
        })
        .await
        .expect("east grades while west is down")
        .into_inner();
    assert!(grading.grading.is_some());
    // Refused as soon as the report is on the stream (intake's relay publishes it).
    let east_client = system.escalation_at(east.addr).await;
    eventually("east refuses the west report", WAIT, || {
        let mut east_client = east_client.clone();
        let incident_id = west_second.clone();
        async move {
            let refused = east_client
                .get_grading(pb::GetGradingRequest {
                    namespace: String::new(),
                    incident_id,
                })
                .await
                .expect_err("east does not grade the west report");
            (refused.code() == tonic::Code::FailedPrecondition).then_some(())
        }
    })
    .await;
    assert!(graded_on_the_stream(&system, &west_second).await.is_empty());

    let west = system.start_escalation_instance("west", &[WEST]).await;
    system.responding(&west_second).await;
    only_the_owner_answers(&system, &west, &east, WEST, &west_second).await;
    // The first west incident is still the west instance's, acknowledged, after the restart.
    let command = system
        .escalation_at(west.addr)
        .await
        .get_command(pb::GetCommandRequest {
            namespace: String::new(),
            incident_id: west_incident.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert!(command.acknowledged);
    for incident_id in [&west_second, &east_second] {
        assert_eq!(graded_on_the_stream(&system, incident_id).await.len(), 1);
    }

    // The west instance loses its disk: `muster rebuild escalation --partition` gives it back
    // its own partition's machines from the stream, and nothing of the east's.
    west.stop().await;
    let west_dir = system.dir.path().join("escalation-west");
    std::fs::remove_dir_all(&west_dir).unwrap();
    let region_dir = system.dir.path().join("two-province-region");
    two_province_region(Some(&region_dir));
    let output = std::process::Command::new(crate::system::muster_binary())
        .args(["rebuild", "escalation", "--nats-url", system.nats.url()])
        .arg("--data-dir")
        .arg(&west_dir)
        .arg("--region-dir")
        .arg(&region_dir)
        .args(["--partition", WEST])
        .env_remove("MUSTER_NATS_URL")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    let west = system.start_escalation_instance("west", &[WEST]).await;
    let command = system
        .escalation_at(west.addr)
        .await
        .get_command(pb::GetCommandRequest {
            namespace: String::new(),
            incident_id: west_incident.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert!(command.acknowledged, "rebuilt: {said}");
    only_the_owner_answers(&system, &west, &east, WEST, &west_second).await;
    only_the_owner_answers(&system, &east, &west, EAST, &east_second).await;
    for incident_id in [&west_incident, &west_second, &east_second] {
        assert_eq!(graded_on_the_stream(&system, incident_id).await.len(), 1);
    }
    west.stop().await;
    east.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_instance_refuses_a_partition_that_is_not_a_province() {
    let system = System::empty().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = escalation::Config {
        nats_url: system.nats.url().to_string(),
        data_dir: system.dir.path().join("escalation-bad"),
        namespace: "live".into(),
        region: system.region.clone(),
        // A county, not a province.
        partitions: vec!["390202".into()],
        policy: None,
        notify_webhook_url: None,
        notify_drill_webhook_url: None,
        metrics: None,
        security: lifecycle::grpc::ServerSecurity {
            verifier: system.auth.verifier(),
            tls: None,
        },
    };
    let error = escalation::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a county is not a partition");
    let text = error.to_string();
    assert!(text.contains("partition \"390202\""), "{text}");
    assert!(text.contains("is a county"), "{text}");
    assert!(text.contains("000000, 390000"), "{text}");
}
