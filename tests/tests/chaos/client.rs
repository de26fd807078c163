//! Every gRPC client and every feed POST of the fault suite is made here, so that credentials
//! (the bearer token of the suite's signing key) are added in one place: [`auth_headers`].

use std::net::SocketAddr;
use std::time::Duration;

use muster_proto::v1 as pb;
use pb::dispatch_service_client::DispatchServiceClient;
use pb::escalation_service_client::EscalationServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// One attempt of a client call may take this long before the client gives up and retries.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The suite's signing key (in a directory that lives as long as the process) and its admin
/// token; the services verify with its `verify.pub` ([`verify_key_path`]).
fn suite_auth() -> &'static test_support::auth::TestAuth {
    static AUTH: std::sync::OnceLock<(tempfile::TempDir, test_support::auth::TestAuth)> =
        std::sync::OnceLock::new();
    let (_dir, auth) = AUTH.get_or_init(|| {
        let dir = test_support::temp_dir("muster-chaos-auth-");
        let auth = test_support::auth::TestAuth::new(dir.path());
        (dir, auth)
    });
    auth
}

/// `verify.pub` for `muster serve --verify-key`.
pub fn verify_key_path() -> std::path::PathBuf {
    suite_auth().verify_key_path()
}

/// The headers every request carries: the admin token (it may report, act and post feeds).
pub fn auth_headers() -> Vec<(&'static str, String)> {
    vec![(
        "authorization",
        format!("Bearer {}", suite_auth().admin_token),
    )]
}

/// Adds [`auth_headers`] to a gRPC request.
#[derive(Clone, Copy)]
pub struct Auth;

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in auth_headers() {
            let value = value
                .parse()
                .map_err(|_| tonic::Status::internal(format!("header {name} is not ASCII")))?;
            request.metadata_mut().insert(name, value);
        }
        Ok(request)
    }
}

pub type Intake = IntakeServiceClient<InterceptedService<Channel, Auth>>;
pub type Dispatch = DispatchServiceClient<InterceptedService<Channel, Auth>>;
pub type Escalation = EscalationServiceClient<InterceptedService<Channel, Auth>>;

/// A lazily connecting channel with short timeouts: a killed service is noticed at once and a
/// restarted one is found again on the next call.
fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

pub fn intake(addr: SocketAddr) -> Intake {
    IntakeServiceClient::with_interceptor(channel(addr), Auth)
}

pub fn dispatch(addr: SocketAddr) -> Dispatch {
    DispatchServiceClient::with_interceptor(channel(addr), Auth)
}

pub fn escalation(addr: SocketAddr) -> Escalation {
    EscalationServiceClient::with_interceptor(channel(addr), Auth)
}

/// POSTs a feed body to intake's feed listener: the HTTP status and the JSON answer, or the
/// transport error in words.
pub async fn post_feed(
    addr: SocketAddr,
    format: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, serde_json::Value), String> {
    let auth = auth_headers();
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", content_type)];
    headers.extend(auth.iter().map(|(name, value)| (*name, value.as_str())));
    let path = format!("/v1/feeds/{format}");
    let response = tokio::time::timeout(
        CALL_TIMEOUT,
        test_support::http_post(addr, &path, &headers, body),
    )
    .await
    .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
    .map_err(|error| error.to_string())?;
    let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    Ok((response.status, json))
}

/// True when the gRPC health check answers SERVING.
pub async fn serving(addr: SocketAddr) -> bool {
    let mut client =
        tonic_health::pb::health_client::HealthClient::with_interceptor(channel(addr), Auth);
    matches!(
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await,
        Ok(response) if response.get_ref().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}
