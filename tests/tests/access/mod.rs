//! Access control end to end: bearer tokens on every call, jurisdiction scope (own jurisdiction
//! and below, nothing sideways or up), role permissions, feed credentials, and the hash-chained
//! audit trail, over real sockets against the real services.

mod tls;

use auth::Role;
use muster_proto::v1 as pb;
use pb::audit_service_client::AuditServiceClient;
use test_support::auth::{Bearer, NATIONAL};
use tonic::Code;

use crate::system::{Authed, CHEMICAL_PARK, DENSE_TOWNSHIP, Service, System, report};

/// The county of the chemical park (390202400) and of the dense township (390102001).
const PARK_COUNTY: &str = "390202";
const DENSE_COUNTY: &str = "390102";
const DENSE_CITY: &str = "390100";
const PROVINCE: &str = "390000";

fn deaths(n: i64) -> pb::Facts {
    pb::Facts {
        deaths: Some(n),
        ..Default::default()
    }
}

async fn audit_client(
    system: &System,
    service: Service,
    token: &str,
) -> AuditServiceClient<Authed> {
    AuditServiceClient::with_interceptor(system.channel(service).await, Bearer::new(token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_and_store_nothing() {
    let system = System::start().await;
    let channel = system.channel(Service::Intake).await;
    let no_token = pb::intake_service_client::IntakeServiceClient::with_interceptor(
        channel.clone(),
        Bearer::none(),
    );
    let expired = system.auth.expired_token("Li Wei");
    // Signed by another key: a token from another Muster installation.
    let other = test_support::auth::TestAuth::new(test_support::temp_dir("muster-other-").path());
    for (what, mut client) in [
        ("no token", no_token),
        (
            "expired",
            pb::intake_service_client::IntakeServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new(&expired),
            ),
        ),
        (
            "foreign key",
            pb::intake_service_client::IntakeServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new(&other.admin_token),
            ),
        ),
        (
            "garbage",
            pb::intake_service_client::IntakeServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new("not-a-token"),
            ),
        ),
    ] {
        let status = client
            .report_incident(report("accident.fire", CHEMICAL_PARK, deaths(1)))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        let status = client
            .list_incidents(pb::ListIncidentsRequest::default())
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let status = pb::intake_service_client::IntakeServiceClient::with_interceptor(
        channel.clone(),
        Bearer::none(),
    )
    .get_incident(pb::GetIncidentRequest::default())
    .await
    .unwrap_err();
    assert!(
        status.message().contains("authorization: Bearer"),
        "the message says what to send: {status:?}"
    );
    let status = pb::intake_service_client::IntakeServiceClient::with_interceptor(
        channel,
        Bearer::new(&expired),
    )
    .get_incident(pb::GetIncidentRequest::default())
    .await
    .unwrap_err();
    assert!(status.message().contains("expired"), "{status:?}");
    assert!(system.incidents().await.is_empty(), "nothing was stored");

    // Every refusal is on the audit trail, without an officer.
    let entries = audit_client(&system, Service::Intake, &system.auth.admin_token)
        .await
        .list_audit(pb::ListAuditRequest {
            refused_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 10, "{entries:#?}");
    assert!(entries.iter().all(|e| e.result == "unauthenticated"
        && e.officer.is_empty()
        && !e.peer.is_empty()
        && e.action.starts_with("/muster.v1.IntakeService/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_token_sees_and_acts_on_its_own_county_only_and_upper_levels_see_below() {
    let system = System::start().await;
    let park_officer = system.auth.token("Zhao", PARK_COUNTY, Role::Officer);
    let dense_officer = system.auth.token("Qian", DENSE_COUNTY, Role::Officer);
    let dense_city = system.auth.token("Sun", DENSE_CITY, Role::Commander);
    let province = system.auth.token("Li", PROVINCE, Role::Commander);

    // A county officer reports in their own county, not in another one.
    let mut park = system.intake_as(&park_officer).await;
    let park_incident = park
        .report_incident(report(
            "accident.hazardous_chemicals",
            CHEMICAL_PARK,
            deaths(12),
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let status = park
        .report_incident(report("accident.fire", DENSE_TOWNSHIP, deaths(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("390102001"), "{status:?}");
    let dense_incident = system
        .intake_as(&dense_officer)
        .await
        .report_incident(report("accident.fire", DENSE_TOWNSHIP, deaths(1)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;

    // Grade II: the province leads, but the park's county still sees it (located there).
    let graded = system.responding(&park_incident).await;
    assert_eq!(
        graded.grading.as_ref().unwrap().lead_jurisdiction_code,
        PROVINCE
    );
    let seen = park
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: park_incident.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.incident.unwrap().id, park_incident);

    // Sideways: nothing of the other county.
    let status = park
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: dense_incident.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let listed = |incidents: Vec<pb::Incident>| {
        let mut ids: Vec<String> = incidents.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    };
    let list = pb::ListIncidentsRequest::default();
    assert_eq!(
        listed(
            park.list_incidents(list.clone())
                .await
                .unwrap()
                .into_inner()
                .incidents
        ),
        vec![park_incident.clone()]
    );
    // The dense township's city sees its county's incident, not the other city's.
    assert_eq!(
        listed(
            system
                .intake_as(&dense_city)
                .await
                .list_incidents(list.clone())
                .await
                .unwrap()
                .into_inner()
                .incidents
        ),
        vec![dense_incident.clone()]
    );
    // The province sees both.
    let mut both = vec![park_incident.clone(), dense_incident.clone()];
    both.sort();
    assert_eq!(
        listed(
            system
                .intake_as(&province)
                .await
                .list_incidents(list)
                .await
                .unwrap()
                .into_inner()
                .incidents
        ),
        both
    );

    // Escalation and dispatch apply the same scope.
    let status = system
        .escalation_as(&park_officer)
        .await
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: dense_incident.clone(),
            officer: "Zhao".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    system
        .escalation_as(&park_officer)
        .await
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: park_incident.clone(),
            officer: "Zhao".into(),
        })
        .await
        .expect("the park's county acknowledges its incident");
    let deadlines = system
        .escalation_as(&dense_officer)
        .await
        .list_deadlines(pb::ListDeadlinesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deadlines;
    assert!(
        deadlines.iter().all(|d| d.incident_id == dense_incident),
        "only its own incident's deadlines: {deadlines:#?}"
    );
    let dispatcher = system.auth.token("Wu", DENSE_COUNTY, Role::Dispatcher);
    let status = system
        .dispatch_as(&dispatcher)
        .await
        .get_assignments(pb::GetAssignmentsRequest {
            namespace: String::new(),
            incident_id: park_incident.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let units = system
        .dispatch_as(&dispatcher)
        .await
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units;
    let all_units = system
        .dispatch()
        .await
        .list_units(pb::ListUnitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .units;
    assert!(!units.is_empty() && units.len() < all_units.len());

    // The refusals are audited with who, from where, what and the incident.
    let refused = audit_client(&system, Service::Escalation, &province)
        .await
        .list_audit(pb::ListAuditRequest {
            incident_id: dense_incident.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        refused.iter().any(|e| e.officer == "Zhao"
            && e.result == "permission_denied"
            && e.action == "/muster.v1.EscalationService/Acknowledge"
            && e.jurisdiction_code == PARK_COUNTY
            && !e.peer.is_empty()),
        "{refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_watcher_sees_only_its_own_incidents() {
    let system = System::start().await;
    let park_officer = system.auth.token("Zhao", PARK_COUNTY, Role::Officer);
    let mut watch = system
        .intake_as(&park_officer)
        .await
        .watch_incidents(pb::WatchIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut admin = system.intake().await;
    let other = admin
        .report_incident(report("accident.fire", DENSE_TOWNSHIP, deaths(1)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.responding(&other).await;
    let own = admin
        .report_incident(report("accident.fire", CHEMICAL_PARK, deaths(1)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    // The first change the watcher sees is its own incident's: the other one's never came.
    let first = tokio::time::timeout(crate::system::WAIT, watch.message())
        .await
        .expect("a change within the bound")
        .unwrap()
        .unwrap();
    assert_eq!(first.incident.unwrap().id, own);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_hold_only_their_permissions() {
    let system = System::start().await;
    let incident = system
        .intake()
        .await
        .report_incident(report(
            "accident.hazardous_chemicals",
            CHEMICAL_PARK,
            deaths(12),
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.responding(&incident).await;
    let token = |role| system.auth.token("someone", PROVINCE, role);

    // An officer acknowledges, but does not escalate.
    let status = system
        .escalation_as(&token(Role::Officer))
        .await
        .escalate(pb::EscalateRequest {
            namespace: String::new(),
            incident_id: incident.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("command permission"),
        "{status:?}"
    );
    // An auditor reads, and changes nothing.
    let auditor = token(Role::Auditor);
    system
        .intake_as(&auditor)
        .await
        .get_incident(pb::GetIncidentRequest {
            namespace: String::new(),
            incident_id: incident.clone(),
        })
        .await
        .expect("an auditor reads incidents");
    let status = system
        .escalation_as(&auditor)
        .await
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: incident.clone(),
            officer: "auditor".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A dispatcher does not report; a feed token does not even read.
    let status = system
        .intake_as(&token(Role::Dispatcher))
        .await
        .report_incident(report("accident.fire", CHEMICAL_PARK, deaths(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = system
        .intake_as(&token(Role::Feed))
        .await
        .list_incidents(pb::ListIncidentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // An officer may not read the audit trail; an auditor may.
    let status = audit_client(&system, Service::Escalation, &token(Role::Officer))
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    audit_client(&system, Service::Escalation, &auditor)
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .expect("an auditor reads the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_need_a_feed_token_or_their_shared_secret() {
    let mut system = System::empty().await;
    // sha256("cea-shared-secret"), as `--feed-secrets` holds it.
    let secrets = "[[feed]]\nname = \"chem-park-gas\"\nsecret_sha256 = \"b786081144ddc7531209ca936a1e273b6c0f6a63954e72b4697deed7390e6880\"\n";
    system.feed_secrets = Some(std::sync::Arc::new(
        auth::feed_secrets::FeedSecrets::parse("secrets.toml", secrets).unwrap(),
    ));
    for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
        system.start_service(service).await;
    }
    let addr = system.intake.as_ref().unwrap().feeds_addr.unwrap();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/feeds/tests/fixtures/cap/zh-cn-earthquake.xml"
    ))
    .expect("the CAP fixture");
    let post = |authorization: Option<String>, path: &'static str| {
        let body = body.clone();
        async move {
            let headers: Vec<(&str, String)> = authorization
                .map(|value| vec![("authorization", value)])
                .unwrap_or_default();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            test_support::http_post(addr, path, &headers, &body)
                .await
                .unwrap()
        }
    };
    let none = post(None, "/v1/feeds/cap").await;
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(none.header("www-authenticate").is_some());
    let officer = system.auth.token("Li", NATIONAL, Role::Officer);
    let forbidden = post(Some(format!("Bearer {officer}")), "/v1/feeds/cap").await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    assert!(
        forbidden.text().contains("feed role"),
        "{}",
        forbidden.text()
    );
    let wrong = post(
        Some("Bearer hunter2".into()),
        "/v1/feeds/cap?feed=chem-park-gas",
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let nameless = post(Some("Bearer cea-shared-secret".into()), "/v1/feeds/cap").await;
    assert_eq!(nameless.status, 401, "a secret without the feed's name");
    assert!(nameless.text().contains("?feed="), "{}", nameless.text());
    let other_feed = post(
        Some("Bearer cea-shared-secret".into()),
        "/v1/feeds/cap?feed=usgs-quakes",
    )
    .await;
    assert_eq!(other_feed.status, 401, "the secret belongs to another feed");
    assert!(system.incidents().await.is_empty(), "nothing was stored");
    let feed = system.auth.token("cea-quake", NATIONAL, Role::Feed);
    let accepted = post(Some(format!("Bearer {feed}")), "/v1/feeds/cap").await;
    assert!(
        accepted.status == 200 || accepted.status == 400,
        "authenticated: the body is judged now ({}): {}",
        accepted.status,
        accepted.text()
    );
    let by_secret = post(
        Some("Bearer cea-shared-secret".into()),
        "/v1/feeds/cap?feed=chem-park-gas",
    )
    .await;
    assert_eq!(by_secret.status, accepted.status, "{}", by_secret.text());
    let trail = audit_client(&system, Service::Intake, &system.auth.admin_token)
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let feed_entries: Vec<_> = trail
        .iter()
        .filter(|e| e.action == "POST /v1/feeds/cap")
        .collect();
    assert_eq!(feed_entries.len(), 7, "{trail:#?}");
    assert_eq!(feed_entries[5].officer, "cea-quake");
    assert_eq!(feed_entries[6].officer, "feed:chem-park-gas");
    assert!(feed_entries[..5].iter().all(|e| e.result != "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_commands_verifies_and_shows_tampering() {
    let mut system = System::start().await;
    let officer = system.auth.token("Zhao", PARK_COUNTY, Role::Officer);
    let incident = system
        .intake_as(&officer)
        .await
        .report_incident(report(
            "accident.hazardous_chemicals",
            CHEMICAL_PARK,
            deaths(12),
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    system.responding(&incident).await;
    system
        .escalation_as(&officer)
        .await
        .acknowledge(pb::AcknowledgeRequest {
            namespace: String::new(),
            incident_id: incident.clone(),
            officer: "Zhao".into(),
        })
        .await
        .unwrap();
    let admin = system.auth.admin_token.clone();
    let by_incident = |service| {
        let (system, admin, incident) = (&system, &admin, &incident);
        async move {
            audit_client(system, service, admin)
                .await
                .list_audit(pb::ListAuditRequest {
                    incident_id: incident.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    let intake_trail = by_incident(Service::Intake).await;
    assert_eq!(intake_trail.len(), 1, "{intake_trail:#?}");
    assert_eq!(
        intake_trail[0].action,
        "/muster.v1.IntakeService/ReportIncident"
    );
    assert_eq!(
        (
            intake_trail[0].officer.as_str(),
            intake_trail[0].result.as_str()
        ),
        ("Zhao", "ok")
    );
    let escalation_trail = by_incident(Service::Escalation).await;
    assert_eq!(escalation_trail.len(), 1, "{escalation_trail:#?}");
    assert_eq!(escalation_trail[0].role, "officer");
    // Reads are not commands: a read does not add entries.
    system.incidents().await;
    assert_eq!(by_incident(Service::Intake).await.len(), 1);
    // Per officer.
    let by_officer = audit_client(&system, Service::Intake, &admin)
        .await
        .list_audit(pb::ListAuditRequest {
            officer: "Zhao".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(by_officer.len(), 1);

    let check = verify(&system, Service::Escalation).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.head_seq, escalation_trail[0].seq);

    // The duty officer's view: musterctl merges the three trails by time and verifies them.
    let (result, out) = system.musterctl(&["audit", "--incident", &incident]).await;
    assert_eq!(result, Ok(0), "{out}");
    let report_at = out.find("ReportIncident").expect(&out);
    let ack_at = out.find("Acknowledge").expect(&out);
    assert!(report_at < ack_at, "merged oldest first:\n{out}");
    assert!(out.contains("Zhao"), "{out}");
    let (result, out) = system.musterctl(&["audit", "verify"]).await;
    assert_eq!(result, Ok(0), "{out}");
    for service in ["intake", "escalation", "dispatch"] {
        assert!(out.contains(service), "{out}");
    }

    // Someone with access to the disk rewrites who acknowledged; the chain shows it.
    system.stop_service(Service::Escalation).await;
    {
        let store = store::Store::open(system.data_dir(Service::Escalation)).unwrap();
        let tree = store.audit_tree_for_tests();
        let key = escalation_trail[0].seq.to_be_bytes();
        let mut entry: serde_json::Value =
            serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        entry["officer"] = "Somebody Else".into();
        tree.insert(key, serde_json::to_vec(&entry).unwrap())
            .unwrap();
        tree.flush().unwrap();
    }
    system.start_service(Service::Escalation).await;
    let check = verify(&system, Service::Escalation).await;
    assert!(!check.ok, "{check:?}");
    assert_eq!(check.first_bad_seq, escalation_trail[0].seq);
    assert!(check.problem.contains("hash mismatch"), "{check:?}");
    let (result, out) = system.musterctl(&["audit", "verify"]).await;
    assert_ne!(result, Ok(0), "a broken chain fails the command:\n{out}");
    assert!(verify(&system, Service::Intake).await.ok);
}

async fn verify(system: &System, service: Service) -> pb::VerifyAuditResponse {
    audit_client(system, service, &system.auth.admin_token)
        .await
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}
