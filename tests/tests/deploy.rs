//! `deploy/`: every nats-server config is valid (`nats-server -t -c`), the single-node config's
//! accounts let each service do its work over a real nats-server and refuse what a user may not
//! publish, and the three cluster configs form a JetStream cluster that replicates a stream.

use futures_util::TryStreamExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use muster_proto::v1 as pb;
use test_support::eventually;

const WAIT: Duration = Duration::from_secs(30);

/// The password variables deploy/nats/accounts.conf reads, with test values.
const PASSWORDS: [(&str, &str); 5] = [
    ("INTAKE_NATS_PASSWORD", "intake-secret"),
    ("ESCALATION_NATS_PASSWORD", "escalation-secret"),
    ("DISPATCH_NATS_PASSWORD", "dispatch-secret"),
    ("FEEDS_NATS_PASSWORD", "feeds-secret"),
    ("UNITS_NATS_PASSWORD", "units-secret"),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// nats-server as `lifecycle::nats_server::find_binary` finds it: `$MUSTER_NATS_SERVER` or PATH.
fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MUSTER_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .expect("nats-server is not installed: run scripts/install-nats-server.sh")
}

fn nats_command() -> Command {
    let mut command = Command::new(nats_server());
    command.envs(PASSWORDS);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn url(user: &str, password: &str, port: u16) -> String {
    format!("nats://{user}:{password}@127.0.0.1:{port}")
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_logged(mut command: Command, log: &Path) -> Killed {
    let log = std::fs::File::create(log).unwrap();
    Killed(
        command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// deploy/nats/*.conf, deploy/nats-server.conf and deploy/k8s/nats/*.conf.
fn nats_configs() -> Vec<PathBuf> {
    let mut configs = vec![deploy_dir().join("nats-server.conf")];
    for dir in [deploy_dir().join("nats"), deploy_dir().join("k8s/nats")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "conf") {
                configs.push(path);
            }
        }
    }
    configs.sort();
    configs
}

#[test]
fn every_nats_config_in_deploy_is_valid_and_durable() {
    let configs = nats_configs();
    let names: Vec<String> = configs
        .iter()
        .map(|path| {
            path.strip_prefix(deploy_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for expected in [
        "nats/single.conf",
        "nats/cluster-1.conf",
        "nats/cluster-2.conf",
        "nats/cluster-3.conf",
        "nats/accounts.conf",
        "k8s/nats/nats.conf",
        "k8s/nats/accounts.conf",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    for path in &configs {
        let output = nats_command()
            // deploy/k8s/nats/nats.conf takes the pod's name from the environment.
            .env("POD_NAME", "muster-nats-0")
            .args(["-t", "-c"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "nats-server -t -c {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name != "accounts.conf" && name != "nats-server.conf" {
            for setting in ["sync_interval: always", "max_payload: 1MB", "store_dir:"] {
                assert!(text.contains(setting), "{}: no {setting}", path.display());
            }
            assert!(
                text.contains("include \"accounts.conf\""),
                "{}: no accounts",
                path.display()
            );
        }
    }
    // The Kubernetes ConfigMap carries its own copy of the accounts; it must not drift.
    assert_eq!(
        std::fs::read_to_string(deploy_dir().join("nats/accounts.conf")).unwrap(),
        std::fs::read_to_string(deploy_dir().join("k8s/nats/accounts.conf")).unwrap(),
        "deploy/k8s/nats/accounts.conf differs from deploy/nats/accounts.conf"
    );
    // Without the passwords the server refuses the config: no user ever has a default password.
    let output = Command::new(nats_server())
        .env_remove("INTAKE_NATS_PASSWORD")
        .args(["-t", "-c"])
        .arg(deploy_dir().join("nats/single.conf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("INTAKE_NATS_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A connection that records the server's `-ERR`s (permission violations).
async fn connect_recording(
    user: &str,
    password: &str,
    port: u16,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .user_and_password(user.into(), password.into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|error| panic!("connect as {user}: {error}"));
    (client, errors)
}

async fn next_violation(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("the server reports a permissions violation")
        .unwrap()
}

/// The `muster` binary, built by `cargo test --workspace` next to this test binary.
fn muster_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(Path::parent).unwrap().join("muster");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build -p muster` (or `cargo test --workspace`) first",
        binary.display()
    );
    binary
}

async fn wait_serving(addr: SocketAddr) {
    eventually(&format!("{addr} serving"), WAIT, || async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let response = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        (response.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_accounts_let_each_service_work_and_refuse_what_it_may_not_publish() {
    let dir = test_support::temp_dir("muster-deploy-");
    let port = free_port();
    // The file as shipped, but for the store (nats-server refuses `-sd` next to a `store_dir`);
    // the ports move with `-p` and `-m`.
    let single = std::fs::read_to_string(deploy_dir().join("nats/single.conf"))
        .unwrap()
        .replace(
            "\"/var/lib/muster/nats\"",
            &format!("{:?}", dir.path().join("jetstream")),
        );
    std::fs::write(dir.path().join("single.conf"), single).unwrap();
    std::fs::copy(
        deploy_dir().join("nats/accounts.conf"),
        dir.path().join("accounts.conf"),
    )
    .unwrap();
    let mut server = nats_command();
    server.arg("-c").arg(dir.path().join("single.conf")).args([
        "-p",
        &port.to_string(),
        "-m",
        &free_port().to_string(),
    ]);
    let server_log = dir.path().join("nats-server.log");
    let _server = spawn_logged(server, &server_log);
    let intake_url = url("intake", "intake-secret", port);
    let intake_bus = bus::Bus::connect(&intake_url, "deploy-test", WAIT)
        .await
        .expect("intake connects with the credentials in its URL");

    // No anonymous access, no wrong passwords.
    let anonymous = async_nats::connect(format!("nats://127.0.0.1:{port}")).await;
    assert!(anonymous.is_err(), "an anonymous client was let in");
    let wrong = async_nats::connect(url("intake", "guess", port)).await;
    assert!(wrong.is_err(), "a wrong password was accepted");

    // The three services as separate processes, each with its own user, and a report through
    // them: intake → escalation grades → dispatch assigns → intake's read model.
    // Tokens as a deployment makes them: one signing key (kept by whoever issues tokens), its
    // public half given to every service.
    let auth = test_support::auth::TestAuth::new(dir.path());
    let mut services = Vec::new();
    let mut intake_addr = None;
    for (service, password) in [
        ("intake", "intake-secret"),
        ("escalation", "escalation-secret"),
        ("dispatch", "dispatch-secret"),
    ] {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(muster_binary());
        command
            .args([
                "serve",
                service,
                "--nats-url",
                &url(service, password, port),
            ])
            .args(["--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.path().join(service))
            .arg("--verify-key")
            .arg(auth.verify_key_path())
            .stdin(Stdio::null());
        if service == "intake" {
            command.args(["--feeds-listen", "127.0.0.1:0"]);
            intake_addr = Some(addr);
        }
        services.push(spawn_logged(
            command,
            &dir.path().join(format!("{service}.log")),
        ));
        wait_serving(addr).await;
    }
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", intake_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut intake = pb::intake_service_client::IntakeServiceClient::with_interceptor(
        channel,
        test_support::auth::Bearer::new(&auth.token(
            "duty officer Li",
            "390000",
            auth::Role::Officer,
        )),
    );
    let incident_id = intake
        .report_incident(pb::ReportIncidentRequest {
            kind: "accident.hazardous_chemicals".into(),
            township_code: "390202400".into(),
            facts: Some(pb::Facts {
                deaths: Some(12),
                ..Default::default()
            }),
            summary: "deploy test: explosion at a chemical plant".into(),
            reported_by: "duty officer Li".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let incident = eventually("the incident graded and responding", WAIT, || {
        let mut intake = intake.clone();
        let incident_id = incident_id.clone();
        async move {
            let incident = intake
                .get_incident(pb::GetIncidentRequest {
                    namespace: String::new(),
                    incident_id,
                })
                .await
                .ok()?
                .into_inner()
                .incident?;
            (incident.status() == pb::IncidentStatus::Responding).then_some(incident)
        }
    })
    .await;
    assert_eq!(incident.grading.unwrap().grade(), pb::Grade::Ii);

    // A monitoring feed publishes as `feeds` and gets intake's answer on its inbox.
    let (feeds, _) = connect_recording("feeds", "feeds-secret", port).await;
    let inbox = feeds.new_inbox();
    let mut answers = feeds.subscribe(inbox.clone()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(bus::feed::REPLY_HEADER, inbox.as_str());
    let cap = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/feeds/tests/fixtures/cap/zh-cn-earthquake.xml"),
    )
    .unwrap();
    async_nats::jetstream::new(feeds.clone())
        .publish_with_headers("muster.feed.cap", headers, cap.into())
        .await
        .unwrap()
        .await
        .expect("the feeds stream acknowledges a feed message");
    let answer = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut answers))
        .await
        .expect("intake answers the feed message")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer.payload).to_string();
    assert!(!answer.contains("\"Error\""), "{answer}");

    // None of that needed anything the accounts refuse.
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        !log.contains("Violation"),
        "a service hit a permission it lacks:\n{log}"
    );
    drop(services);

    // What a user may not publish is refused, and never reaches the stream.
    let (intake_client, mut intake_errors) =
        connect_recording("intake", "intake-secret", port).await;
    // Checked by subject, not by the stream's length: the services' last events may still be
    // landing. `INC-X` and `U1` are this test's own ids, so nothing else publishes them.
    let stored = |subject: &'static str| {
        let intake_bus = intake_bus.clone();
        async move {
            intake_bus
                .jetstream()
                .get_stream(bus::EVENTS_STREAM)
                .await
                .unwrap()
                .info_with_subjects(subject)
                .await
                .unwrap()
                .try_next()
                .await
                .unwrap()
                .is_some()
        }
    };
    intake_client
        .publish("muster.live.incident.390000.INC-X.graded", "forged".into())
        .await
        .unwrap();
    intake_client.flush().await.unwrap();
    let violation = next_violation(&mut intake_errors).await;
    assert!(
        violation.contains(
            "Permissions Violation for Publish to \"muster.live.incident.390000.INC-X.graded\""
        ),
        "{violation}"
    );
    // Intake may not read the stream's subjects directly either.
    let _subscriber = intake_client.subscribe("muster.live.>").await.unwrap();
    intake_client.flush().await.unwrap();
    let violation = next_violation(&mut intake_errors).await;
    assert!(
        violation.contains("Permissions Violation for Subscription to \"muster.live.>\""),
        "{violation}"
    );
    // What it may publish is stored.
    intake_bus
        .publish_dedup(
            "muster.drill.x1.incident.390000.INC-X.reported".into(),
            "deploy-test-1",
            "allowed".into(),
            None,
        )
        .await
        .unwrap()
        .await
        .expect("intake may publish a report");
    assert!(stored("muster.drill.x1.incident.390000.INC-X.reported").await);

    // A feed may publish feeds, and nothing else.
    let (feeds, mut feed_errors) = connect_recording("feeds", "feeds-secret", port).await;
    feeds
        .publish(
            "muster.live.incident.390000.INC-X.reported",
            "forged".into(),
        )
        .await
        .unwrap();
    feeds.flush().await.unwrap();
    let violation = next_violation(&mut feed_errors).await;
    assert!(
        violation.contains("Permissions Violation for Publish"),
        "{violation}"
    );
    // Dispatch may not grade; escalation may not assign units.
    for (user, password, subject) in [
        (
            "dispatch",
            "dispatch-secret",
            "muster.live.incident.390000.INC-X.graded",
        ),
        (
            "escalation",
            "escalation-secret",
            "muster.live.incident.390000.INC-X.units_assigned",
        ),
        ("units", "units-secret", "muster.live.unit.U1.status"),
    ] {
        let (client, mut errors) = connect_recording(user, password, port).await;
        client.publish(subject, "forged".into()).await.unwrap();
        client.flush().await.unwrap();
        let violation = next_violation(&mut errors).await;
        assert!(violation.contains(subject), "{user}: {violation}");
    }
    for forged in [
        "muster.live.incident.390000.INC-X.graded",
        "muster.live.incident.390000.INC-X.reported",
        "muster.live.incident.390000.INC-X.units_assigned",
        "muster.live.unit.U1.status",
    ] {
        assert!(!stored(forged).await, "{forged} reached the stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_cluster_configs_form_a_jetstream_cluster_that_replicates_the_event_stream() {
    let dir = test_support::temp_dir("muster-deploy-cluster-");
    std::fs::copy(
        deploy_dir().join("nats/accounts.conf"),
        dir.path().join("accounts.conf"),
    )
    .unwrap();
    // Fresh ports for every client, monitoring and route port the files name.
    let mut replacements = Vec::new();
    for base in [4222, 8222, 6222] {
        for node in 0..3 {
            replacements.push((
                format!("127.0.0.1:{}", base + node),
                format!("127.0.0.1:{}", free_port()),
            ));
        }
    }
    let mut client_ports = Vec::new();
    let mut servers = Vec::new();
    for node in 1..=3 {
        let mut text =
            std::fs::read_to_string(deploy_dir().join(format!("nats/cluster-{node}.conf")))
                .unwrap();
        // `port: 4222` stands alone; make it an address so the table below covers it.
        let client_port = 4221 + node;
        text = text.replace(
            &format!("host: \"127.0.0.1\"\nport: {client_port}"),
            &format!("listen: \"127.0.0.1:{client_port}\""),
        );
        for (from, to) in &replacements {
            text = text.replace(from, to);
        }
        text = text.replace(
            &format!("/var/lib/muster/nats-{node}"),
            &dir.path()
                .join(format!("store-{node}"))
                .display()
                .to_string(),
        );
        let (_, listen) = &replacements[node - 1];
        client_ports.push(listen.rsplit(':').next().unwrap().parse::<u16>().unwrap());
        let path = dir.path().join(format!("cluster-{node}.conf"));
        std::fs::write(&path, text).unwrap();
        let mut command = nats_command();
        command.arg("-c").arg(&path);
        servers.push(spawn_logged(
            command,
            &dir.path().join(format!("nats-{node}.log")),
        ));
    }
    // One URL (Muster takes one); the server tells the client about the other two.
    let bus = bus::Bus::connect(
        &url("escalation", "escalation-secret", client_ports[0]),
        "deploy-cluster-test",
        WAIT,
    )
    .await
    .expect("escalation connects to the cluster");
    // Creating a 3-replica stream needs a JetStream meta leader and all three peers.
    let config = async_nats::jetstream::stream::Config {
        name: bus::EVENTS_STREAM.into(),
        subjects: vec!["muster.live.>".into(), "muster.drill.>".into()],
        num_replicas: 3,
        ..Default::default()
    };
    let mut stream = eventually("a 3-replica MUSTER_EVENTS", WAIT, || {
        let (bus, config) = (bus.clone(), config.clone());
        async move { bus.jetstream().get_or_create_stream(config).await.ok() }
    })
    .await;
    bus.publish_dedup(
        "muster.live.incident.390000.INC-1.graded".into(),
        "cluster-test-1",
        "graded".into(),
        None,
    )
    .await
    .unwrap()
    .await
    .expect("a replicated publish is acknowledged");
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let cluster = info.cluster.as_ref().expect("cluster info");
    assert_eq!(cluster.name.as_deref(), Some("muster"));
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");
    drop(servers);
}

/// deploy/nats/accounts.conf with its partitioned escalation template switched on: the lines
/// between `# BEGIN partitioned escalation` and `# END partitioned escalation` lose their `#`.
fn accounts_with_partition_template() -> String {
    let text = std::fs::read_to_string(deploy_dir().join("nats/accounts.conf")).unwrap();
    let mut inside = false;
    let mut found = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("# BEGIN partitioned escalation") {
            inside = true;
            found = true;
        } else if line.starts_with("# END partitioned escalation") {
            inside = false;
        } else if inside {
            lines.push(
                line.strip_prefix('#')
                    .expect("template lines are commented"),
            );
        } else {
            lines.push(line);
        }
    }
    assert!(
        found,
        "accounts.conf has no partitioned escalation template"
    );
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_escalation_user_works_its_own_partition_and_nothing_else() {
    let dir = test_support::temp_dir("muster-deploy-partition-");
    let port = free_port();
    let single = std::fs::read_to_string(deploy_dir().join("nats/single.conf"))
        .unwrap()
        .replace(
            "\"/var/lib/muster/nats\"",
            &format!("{:?}", dir.path().join("jetstream")),
        );
    std::fs::write(dir.path().join("single.conf"), single).unwrap();
    std::fs::write(
        dir.path().join("accounts.conf"),
        accounts_with_partition_template(),
    )
    .unwrap();
    let mut server = nats_command();
    server
        .env("ESCALATION_390000_NATS_PASSWORD", "p390000-secret")
        .arg("-c")
        .arg(dir.path().join("single.conf"))
        .args(["-p", &port.to_string(), "-m", &free_port().to_string()]);
    let server_log = dir.path().join("nats-server.log");
    let _server = spawn_logged(server, &server_log);
    let intake_bus = bus::Bus::connect(&url("intake", "intake-secret", port), "deploy-test", WAIT)
        .await
        .expect("intake connects");
    intake_bus.ensure_streams().await.unwrap();

    // The instance runs as the partition's user, with its partition.
    let auth = test_support::auth::TestAuth::new(dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(muster_binary());
    command
        .args([
            "serve",
            "escalation",
            "--partition",
            "390000",
            "--nats-url",
            &url("escalation-390000", "p390000-secret", port),
        ])
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path().join("escalation"))
        .arg("--verify-key")
        .arg(auth.verify_key_path())
        .stdin(Stdio::null());
    let _escalation = spawn_logged(command, &dir.path().join("escalation.log"));
    wait_serving(addr).await;

    // A report of its partition is graded and published in its partition.
    let report = domain::event::IncidentEvent {
        event_id: String::new(),
        incident_id: "INC-P1".into(),
        namespace: "live".into(),
        at_unix_ms: lifecycle::unix_ms_now(),
        source_service: "intake".into(),
        body: domain::event::EventBody::Reported(domain::event::IncidentReport {
            kind: "accident.hazardous_chemicals".into(),
            class: domain::class::sub_type("accident.hazardous_chemicals")
                .unwrap()
                .class,
            township_code: "390202400".into(),
            other_township_codes: Vec::new(),
            location: domain::geo::GeoPoint::new(29.9, 121.5),
            location_reported: false,
            facts: domain::grade::Facts {
                deaths: Some(4),
                ..Default::default()
            },
            summary: "deploy test: partitioned grading".into(),
            reported_by: "deploy test".into(),
            warning: None,
        }),
    };
    intake_bus
        .publish_dedup(
            "muster.live.incident.390000.INC-P1.reported".into(),
            "deploy-partition-1",
            muster_proto::convert::encode_event(&report).into(),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = intake_bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    eventually("the partition's incident graded", WAIT, || {
        let stream = stream.clone();
        async move {
            let mut subjects = stream
                .info_with_subjects("muster.live.incident.390000.INC-P1.graded")
                .await
                .ok()?;
            subjects.try_next().await.ok()?.map(|_| ())
        }
    })
    .await;
    // Its consumers are its own, filtered to its partition.
    for name in [
        "escalation-grader-p390000-live",
        "escalation-notify-p390000-live",
        "escalation-notifier-p390000-live",
    ] {
        let info = stream.clone().consumer_info(name).await.unwrap();
        assert!(!info.config.filter_subjects.is_empty(), "{name}");
        for filter in &info.config.filter_subjects {
            assert!(
                filter.contains(".incident.390000.") || filter.contains(".notification.390000."),
                "{name} filters {filter}"
            );
        }
    }
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        !log.contains("Violation"),
        "the partitioned instance hit a permission it lacks:\n{log}"
    );

    // What the partition's user may not do is refused.
    let (client, mut errors) = connect_recording("escalation-390000", "p390000-secret", port).await;
    for (subject, what) in [
        // Another partition's grading, and another service's event in its own partition.
        ("muster.live.incident.410000.INC-X.graded", "Publish"),
        (
            "muster.live.incident.390000.INC-X.units_assigned",
            "Publish",
        ),
        ("muster.live.notification.410000.N-1.requested", "Publish"),
        // The consumers of every partition, or of another partition's instance.
        (
            "$JS.API.CONSUMER.CREATE.MUSTER_EVENTS.escalation-grader-live",
            "Publish",
        ),
        (
            "$JS.API.CONSUMER.MSG.NEXT.MUSTER_EVENTS.escalation-grader-p410000-live",
            "Publish",
        ),
        // Reading a message by sequence or subject, past any consumer.
        ("$JS.API.STREAM.MSG.GET.MUSTER_EVENTS", "Publish"),
    ] {
        client.publish(subject, "{}".into()).await.unwrap();
        client.flush().await.unwrap();
        let violation = next_violation(&mut errors).await;
        assert!(
            violation.contains(&format!(
                "Permissions Violation for {what} to \"{subject}\""
            )),
            "{subject}: {violation}"
        );
    }
    let _subscriber = client.subscribe("muster.live.>").await.unwrap();
    client.flush().await.unwrap();
    let violation = next_violation(&mut errors).await;
    assert!(
        violation.contains("Permissions Violation for Subscription to \"muster.live.>\""),
        "{violation}"
    );
    for forged in [
        "muster.live.incident.410000.INC-X.graded",
        "muster.live.incident.390000.INC-X.units_assigned",
    ] {
        let mut found = stream.info_with_subjects(forged).await.unwrap();
        assert!(
            found.try_next().await.unwrap().is_none(),
            "{forged} reached the stream"
        );
    }
}
