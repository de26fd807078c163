//! TLS and mutual TLS on the gRPC servers, with certificates generated for the test (rcgen): a
//! CA, a server certificate for localhost, and a client certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use test_support::TestNats;
use test_support::auth::{Bearer, TestAuth};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    /// A client certificate from a CA the server does not trust.
    rogue_client: (String, String),
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = new_ca("Muster test CA");
    let rogue = new_ca("Somebody else's CA");
    Pki {
        ca_pem: ca.pem(),
        server: leaf(&ca, &["localhost"]),
        client: leaf(&ca, &["duty-officer"]),
        rogue_client: leaf(&rogue, &["intruder"]),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts escalation with `tls`; returns its port and the token that stops it.
async fn escalation_with(
    nats: &TestNats,
    dir: &Path,
    auth: &TestAuth,
    tls: lifecycle::grpc::TlsFiles,
) -> (u16, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let config = escalation::Config {
        nats_url: nats.url().to_string(),
        data_dir: dir.join("escalation"),
        namespace: "live".into(),
        region: Arc::new(domain::region::Region::embedded_default()),
        partitions: Vec::new(),
        policy: None,
        notify_webhook_url: None,
        notify_drill_webhook_url: None,
        metrics: None,
        security: lifecycle::grpc::ServerSecurity {
            verifier: auth.verifier(),
            tls: Some(tls),
        },
    };
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        escalation::run(config, listener, stop).await.unwrap();
    });
    (port, shutdown, task)
}

async fn connect(port: u16, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://localhost:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// One authenticated call; Ok when the server answered it.
async fn list(channel: Channel, token: &str) -> Result<usize, tonic::Status> {
    let mut client = pb::escalation_service_client::EscalationServiceClient::with_interceptor(
        channel,
        Bearer::new(token),
    );
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_jurisdictions(pb::ListJurisdictionsRequest::default()),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("no answer in 10 s"))??;
    Ok(answer.into_inner().jurisdictions.len())
}

/// Retries `list` until the server is up (it binds before it serves).
async fn eventually_lists(port: u16, tls: ClientTlsConfig, token: &str) -> usize {
    test_support::eventually("TLS server answering", crate::system::WAIT, || {
        let tls = tls.clone();
        async move {
            let channel = connect(port, Some(tls)).await.ok()?;
            list(channel, token).await.ok()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_and_mutual_tls_with_generated_certificates() {
    let dir = test_support::temp_dir("muster-tls-");
    let pki = pki();
    let auth = TestAuth::new(dir.path());
    let nats = TestNats::start().await;
    let files = lifecycle::grpc::TlsFiles {
        cert: write(dir.path(), "server.pem", &pki.server.0),
        key: write(dir.path(), "server.key", &pki.server.1),
        client_ca: None,
    };
    let ca = Certificate::from_pem(&pki.ca_pem);

    // TLS: a client that trusts the CA is served; a plaintext client is not.
    let (port, stop, task) = escalation_with(&nats, dir.path(), &auth, files.clone()).await;
    let trusting = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("localhost");
    assert!(eventually_lists(port, trusting.clone(), &auth.admin_token).await > 10);
    let plaintext = match connect(port, None).await {
        Ok(channel) => list(channel, &auth.admin_token).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plaintext, "a plaintext client must not be served over TLS");
    // A client that does not trust the server's CA refuses it.
    let other_ca = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem_of_another()))
        .domain_name("localhost");
    let mistrusting = match connect(port, Some(other_ca)).await {
        Ok(channel) => list(channel, &auth.admin_token).await.is_ok(),
        Err(_) => false,
    };
    assert!(!mistrusting, "the server's certificate must be checked");
    // The token is still required over TLS.
    let channel = connect(port, Some(trusting.clone())).await.unwrap();
    let mut client = pb::escalation_service_client::EscalationServiceClient::with_interceptor(
        channel,
        Bearer::none(),
    );
    let status = client
        .list_jurisdictions(pb::ListJurisdictionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    stop.cancel();
    task.await.unwrap();

    // Mutual TLS: only clients with a certificate from the configured CA.
    let mutual = lifecycle::grpc::TlsFiles {
        client_ca: Some(write(dir.path(), "client-ca.pem", &pki.ca_pem)),
        ..files
    };
    let (port, stop, task) = escalation_with(&nats, dir.path(), &auth, mutual).await;
    let with_cert = trusting
        .clone()
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    assert!(eventually_lists(port, with_cert, &auth.admin_token).await > 10);
    for (what, tls) in [
        ("no client certificate", trusting.clone()),
        (
            "a certificate from another CA",
            trusting
                .clone()
                .identity(Identity::from_pem(&pki.rogue_client.0, &pki.rogue_client.1)),
        ),
    ] {
        let served = match connect(port, Some(tls)).await {
            Ok(channel) => list(channel, &auth.admin_token).await.is_ok(),
            Err(_) => false,
        };
        assert!(!served, "{what}: must not be served under mutual TLS");
    }
    stop.cancel();
    task.await.unwrap();
}

fn ca_pem_of_another() -> String {
    new_ca("Unrelated CA").pem()
}

#[tokio::test]
async fn bad_tls_files_are_refused_with_the_file_named() {
    let dir = test_support::temp_dir("muster-tls-bad-");
    let not_pem = write(dir.path(), "server.pem", "this is not a certificate");
    let error = lifecycle::grpc::server_tls(&lifecycle::grpc::TlsFiles {
        cert: not_pem.clone(),
        key: not_pem.clone(),
        client_ca: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("server.pem") && error.contains("not PEM"),
        "{error}"
    );
    let error = lifecycle::grpc::server_tls(&lifecycle::grpc::TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: not_pem,
        client_ca: None,
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("missing.pem"), "{error}");
}
