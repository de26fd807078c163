//! The harness: a real nats-server, the three services in-process on real sockets with their own
//! sled directories, gRPC clients, and a way to run one service as a separate `muster` process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use domain::region::Region;
use muster_proto::v1 as pb;
use pb::dispatch_service_client::DispatchServiceClient;
use pb::escalation_service_client::EscalationServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use test_support::auth::{Bearer, TestAuth};
use test_support::{TestNats, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A generated client whose calls carry a bearer token.
pub type Authed = InterceptedService<Channel, Bearer>;

pub const WAIT: Duration = Duration::from_secs(30);
pub const CHEMICAL_PARK: &str = "390202400";
pub const DENSE_TOWNSHIP: &str = "390102001";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Service {
    Intake,
    Escalation,
    Dispatch,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Intake => "intake",
            Service::Escalation => "escalation",
            Service::Dispatch => "dispatch",
        }
    }
}

/// One service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    /// Intake's feed listener.
    pub feeds_addr: Option<SocketAddr>,
    /// The service's Prometheus endpoint (`GET /metrics`), one registry per service.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Cancels and waits for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("service did not drain within the bound")
            .expect("service task panicked")
            .expect("service failed");
    }
}

pub struct System {
    pub nats: TestNats,
    pub dir: tempfile::TempDir,
    /// The signing key in `<dir>/auth` and an admin token: every client below uses it.
    pub auth: TestAuth,
    pub region: Arc<Region>,
    pub intake: Option<Running>,
    pub escalation: Option<Running>,
    pub dispatch: Option<Running>,
    /// The escalation policy the in-process escalation runs with (`None`: the shipped default).
    pub escalation_policy: Option<Arc<domain::escalation::EscalationPolicy>>,
    /// The acknowledgement timeout the in-process dispatch runs with (`None`: the default).
    pub dispatch_ack_timeout_ms: Option<i64>,
    /// Feed mapping for the in-process intake (`None`: the shipped default).
    pub feed_mapping: Option<Arc<feeds::mapping::Mapping>>,
    /// How long intake parks an update for an unknown alert (`None`: the default).
    pub park_timeout_ms: Option<i64>,
    /// Shared secrets intake's feed endpoints accept (`None`: tokens only).
    pub feed_secrets: Option<Arc<auth::feed_secrets::FeedSecrets>>,
}

impl System {
    /// nats-server plus all three services.
    pub async fn start() -> System {
        let mut system = System::empty().await;
        for service in [Service::Intake, Service::Escalation, Service::Dispatch] {
            system.start_service(service).await;
        }
        system
    }

    /// Only nats-server; start services with [`System::start_service`].
    pub async fn empty() -> System {
        let dir = test_support::temp_dir("muster-e2e-");
        System {
            nats: TestNats::start().await,
            auth: TestAuth::new(dir.path()),
            dir,
            region: Arc::new(Region::embedded_default()),
            intake: None,
            escalation: None,
            dispatch: None,
            escalation_policy: None,
            dispatch_ack_timeout_ms: None,
            feed_mapping: None,
            park_timeout_ms: None,
            feed_secrets: None,
        }
    }

    pub fn data_dir(&self, service: Service) -> PathBuf {
        self.dir.path().join(service.name())
    }

    pub async fn start_service(&mut self, service: Service) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (nats_url, data_dir, region, namespace) = (
            self.nats.url().to_string(),
            self.data_dir(service),
            self.region.clone(),
            "live".to_string(),
        );
        let token = shutdown.clone();
        let escalation_policy = self.escalation_policy.clone();
        let dispatch_ack_timeout_ms = self.dispatch_ack_timeout_ms;
        let (mapping, park_timeout_ms) = (self.feed_mapping.clone(), self.park_timeout_ms);
        let feed_secrets = self.feed_secrets.clone();
        let feeds_listener = match service {
            Service::Intake => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            _ => None,
        };
        let feeds_addr = feeds_listener.as_ref().map(|l| l.local_addr().unwrap());
        let metrics = lifecycle::metrics::Registry::new();
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = Some(metrics_listener.local_addr().unwrap());
        tokio::spawn(lifecycle::metrics::serve(
            metrics.clone(),
            metrics_listener,
            shutdown.clone(),
        ));
        let metrics = Some(metrics);
        let security = lifecycle::grpc::ServerSecurity {
            verifier: self.auth.verifier(),
            tls: None,
        };
        let task = match service {
            Service::Intake => tokio::spawn(async move {
                intake::run_with_feeds(
                    intake::Config {
                        nats_url,
                        data_dir,
                        namespace,
                        region,
                        mapping,
                        feed_tick: Some(Duration::from_millis(200)),
                        park_timeout_ms,
                        metrics,
                        security,
                        feed_secrets,
                    },
                    listener,
                    feeds_listener,
                    token,
                )
                .await
                .map_err(|e| e.to_string())
            }),
            Service::Escalation => tokio::spawn(async move {
                escalation::run(
                    escalation::Config {
                        nats_url,
                        data_dir,
                        namespace,
                        region,
                        partitions: Vec::new(),
                        policy: escalation_policy,
                        notify_webhook_url: None,
                        notify_drill_webhook_url: None,
                        metrics,
                        security,
                    },
                    listener,
                    token,
                )
                .await
                .map_err(|e| e.to_string())
            }),
            Service::Dispatch => tokio::spawn(async move {
                dispatch::run(
                    dispatch::Config {
                        nats_url,
                        data_dir,
                        namespace,
                        region,
                        assignment_ack_timeout_ms: dispatch_ack_timeout_ms,
                        stale_position_ms: None,
                        metrics,
                        security,
                    },
                    listener,
                    token,
                )
                .await
                .map_err(|e| e.to_string())
            }),
        };
        let running = Running {
            addr,
            feeds_addr,
            metrics_addr,
            shutdown,
            task,
        };
        wait_serving(addr).await;
        *self.slot(service) = Some(running);
    }

    /// An escalation instance of its own beside [`System::escalation`], serving `partitions`:
    /// its own data directory (`escalation-<label>`) and gRPC port, this system's NATS, region
    /// and policy (what `muster serve escalation --partition ...` runs).
    pub async fn start_escalation_instance(&self, label: &str, partitions: &[&str]) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let config = escalation::Config {
            nats_url: self.nats.url().to_string(),
            data_dir: self.dir.path().join(format!("escalation-{label}")),
            namespace: "live".into(),
            region: self.region.clone(),
            partitions: partitions.iter().map(ToString::to_string).collect(),
            policy: self.escalation_policy.clone(),
            notify_webhook_url: None,
            notify_drill_webhook_url: None,
            metrics: None,
            security: lifecycle::grpc::ServerSecurity {
                verifier: self.auth.verifier(),
                tls: None,
            },
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            escalation::run(config, listener, token)
                .await
                .map_err(|e| e.to_string())
        });
        wait_serving(addr).await;
        Running {
            addr,
            feeds_addr: None,
            metrics_addr: None,
            shutdown,
            task,
        }
    }

    /// Escalation at `addr` (an instance from [`System::start_escalation_instance`]) as admin.
    pub async fn escalation_at(&self, addr: SocketAddr) -> EscalationServiceClient<Authed> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        EscalationServiceClient::with_interceptor(channel, Bearer::new(&self.auth.admin_token))
    }

    pub async fn stop_service(&mut self, service: Service) {
        if let Some(running) = self.slot(service).take() {
            running.stop().await;
        }
    }

    fn slot(&mut self, service: Service) -> &mut Option<Running> {
        match service {
            Service::Intake => &mut self.intake,
            Service::Escalation => &mut self.escalation,
            Service::Dispatch => &mut self.dispatch,
        }
    }

    pub fn url(&self, service: Service) -> String {
        let running = match service {
            Service::Intake => &self.intake,
            Service::Escalation => &self.escalation,
            Service::Dispatch => &self.dispatch,
        };
        format!(
            "http://{}",
            running.as_ref().expect("service not running").addr
        )
    }

    /// POSTs a feed body to intake's feed listener; returns the status and the JSON answer.
    pub async fn post_feed(
        &self,
        format: &str,
        body: &[u8],
        feed: Option<&str>,
    ) -> (u16, serde_json::Value, test_support::HttpResponse) {
        let addr = self
            .intake
            .as_ref()
            .and_then(|r| r.feeds_addr)
            .expect("intake running with a feed listener");
        let path = match feed {
            Some(feed) => format!("/v1/feeds/{format}?feed={feed}"),
            None => format!("/v1/feeds/{format}"),
        };
        let authorization = format!(
            "Bearer {}",
            self.auth
                .token("test-feed", test_support::auth::NATIONAL, auth::Role::Feed)
        );
        let response =
            test_support::http_post(addr, &path, &[("authorization", &authorization)], body)
                .await
                .expect("feed listener answers");
        let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
        (response.status, json, response)
    }

    /// A plain NATS client and its JetStream context, connected the way a monitoring feed
    /// publishing to `muster.feed.<format>` would be.
    pub async fn feed_nats(&self) -> (async_nats::Client, async_nats::jetstream::Context) {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("nats-server accepts a feed publisher");
        let jetstream = async_nats::jetstream::new(client.clone());
        (client, jetstream)
    }

    /// Every incident intake lists in the live namespace (up to 1000).
    pub async fn incidents(&self) -> Vec<pb::Incident> {
        self.intake()
            .await
            .list_incidents(pb::ListIncidentsRequest {
                namespace: String::new(),
                limit: 1000,
            })
            .await
            .expect("ListIncidents answers")
            .into_inner()
            .incidents
    }

    /// A channel to `service` (no token: wrap it in a client with [`Bearer`]).
    pub async fn channel(&self, service: Service) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url(service))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn intake(&self) -> IntakeServiceClient<Authed> {
        self.intake_as(&self.auth.admin_token).await
    }

    pub async fn escalation(&self) -> EscalationServiceClient<Authed> {
        self.escalation_as(&self.auth.admin_token).await
    }

    pub async fn dispatch(&self) -> DispatchServiceClient<Authed> {
        self.dispatch_as(&self.auth.admin_token).await
    }

    /// Intake as the holder of `token`.
    pub async fn intake_as(&self, token: &str) -> IntakeServiceClient<Authed> {
        IntakeServiceClient::with_interceptor(
            self.channel(Service::Intake).await,
            Bearer::new(token),
        )
    }

    pub async fn escalation_as(&self, token: &str) -> EscalationServiceClient<Authed> {
        EscalationServiceClient::with_interceptor(
            self.channel(Service::Escalation).await,
            Bearer::new(token),
        )
    }

    pub async fn dispatch_as(&self, token: &str) -> DispatchServiceClient<Authed> {
        DispatchServiceClient::with_interceptor(
            self.channel(Service::Dispatch).await,
            Bearer::new(token),
        )
    }

    /// Runs musterctl in-process against this system; returns (exit code or error line, output).
    pub async fn musterctl(&self, args: &[&str]) -> (Result<i32, String>, String) {
        let url = |s: &Option<Running>| {
            s.as_ref().map_or("http://127.0.0.1:1".to_string(), |r| {
                format!("http://{}", r.addr)
            })
        };
        let mut argv = vec![
            "musterctl".to_string(),
            "--token".into(),
            self.auth.admin_token.clone(),
            "--intake".into(),
            url(&self.intake),
            "--escalation".into(),
            url(&self.escalation),
            "--dispatch".into(),
            url(&self.dispatch),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let cli =
            <musterctl::Cli as clap::Parser>::try_parse_from(&argv).expect("musterctl arguments");
        let mut out = Vec::new();
        let result = musterctl::run(cli, &mut out)
            .await
            .map_err(|e| e.to_string());
        (result, String::from_utf8(out).unwrap())
    }

    /// Waits until the incident has units assigned (or any shortfall answer) and returns it.
    pub async fn responding(&self, incident_id: &str) -> pb::Incident {
        self.incident_when(
            &format!("{incident_id} responding"),
            incident_id,
            |incident| incident.status() == pb::IncidentStatus::Responding,
        )
        .await
    }

    /// Waits until intake's read model of the incident satisfies `done` and returns it.
    pub async fn incident_when(
        &self,
        what: &str,
        incident_id: &str,
        done: impl Fn(&pb::Incident) -> bool,
    ) -> pb::Incident {
        let intake = self.intake().await;
        let done = &done;
        eventually(what, WAIT, || {
            let mut intake = intake.clone();
            let id = incident_id.to_string();
            async move {
                let incident = intake
                    .get_incident(pb::GetIncidentRequest {
                        namespace: String::new(),
                        incident_id: id,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .incident?;
                done(&incident).then_some(incident)
            }
        })
        .await
    }
}

/// A report request with the usual defaults.
pub fn report(kind: &str, township: &str, facts: pb::Facts) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        namespace: String::new(),
        kind: kind.into(),
        township_code: township.into(),
        other_township_codes: vec![],
        lat: None,
        lon: None,
        facts: Some(facts),
        summary: "end-to-end test".into(),
        reported_by: "duty officer Li".into(),
        request_id: String::new(),
    }
}

/// Waits until a gRPC server answers health checks with SERVING.
pub async fn wait_serving(addr: SocketAddr) {
    eventually(&format!("{addr} serving"), WAIT, || async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = client
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

/// The `muster` binary, built by `cargo test --workspace` next to this test binary.
pub fn muster_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = target_dir.join("muster");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test.sh), which builds it",
        binary.display()
    );
    binary
}

/// A service running as its own `muster serve` process, for crash tests (SIGKILL).
pub struct ServiceProcess {
    child: std::process::Child,
}

impl ServiceProcess {
    pub fn spawn(service: Service, nats_url: &str, data_dir: &Path, log: &Path) -> ServiceProcess {
        ServiceProcess::spawn_with(service, nats_url, data_dir, log, &[])
    }

    /// [`ServiceProcess::spawn`] with more `muster serve` arguments (e.g. `--escalation-policy`).
    /// The token verification key is the system's: `<data_dir>/../auth/verify.pub`.
    pub fn spawn_with(
        service: Service,
        nats_url: &str,
        data_dir: &Path,
        log: &Path,
        extra_args: &[&str],
    ) -> ServiceProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(muster_binary())
            .args([
                "serve",
                service.name(),
                "--nats-url",
                nats_url,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .arg("--verify-key")
            .arg(
                data_dir
                    .parent()
                    .expect("a service's data dir sits in the system's dir")
                    .join("auth")
                    .join(auth::token::VERIFY_KEY_FILE),
            )
            .args(if service == Service::Intake {
                &["--feeds-listen", "127.0.0.1:0"][..]
            } else {
                &[][..]
            })
            .args(extra_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ServiceProcess { child }
    }

    /// SIGKILL: no drain, no flush, no ack.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
