//! TLS and mutual TLS against a fake AuditService served over TLS, with the certificates in
//! `tests/tls/` (a test CA valid until 2126, a server certificate for muster.test, localhost
//! and 127.0.0.1, a client certificate, and an unrelated CA).

use std::path::PathBuf;

use muster_proto::v1::audit_service_server::AuditServiceServer;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::audit::{FakeAudit, three_fakes};
use crate::{clean_environment, parse, run_in_environment, spawn_server};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn fixture_path(name: &str) -> String {
    fixture(name).to_str().unwrap().to_owned()
}

/// A fake audit service on TLS; with `require_client_certificate`, mutual TLS.
async fn spawn_tls(fake: FakeAudit, require_client_certificate: bool) -> String {
    let read = |name: &str| std::fs::read(fixture(name)).unwrap();
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read("server.pem"), read("server.key")));
    if require_client_certificate {
        tls = tls.client_ca_root(Certificate::from_pem(read("ca.pem")));
    }
    let address = spawn_server(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AuditServiceServer::new(fake)),
    )
    .await;
    // The helper names the address as http://; the scheme is musterctl's business here.
    address.trim_start_matches("http://").to_owned()
}

/// `audit verify` against one TLS service (the other two point at it as well).
async fn verify(address: &str, extra: &[&str]) -> (Result<i32, musterctl::Error>, String) {
    let mut args = vec![
        "audit",
        "verify",
        "--intake",
        address,
        "--escalation",
        address,
        "--dispatch",
        address,
    ];
    args.extend_from_slice(extra);
    run_in_environment(parse(&args), &clean_environment()).await
}

#[tokio::test]
async fn mutual_tls_with_the_ca_and_a_client_certificate_works_and_carries_the_token() {
    let [fake, _, _] = three_fakes();
    let seen = fake.authorizations.clone();
    let address = spawn_tls(
        FakeAudit {
            required_token: Some("mst1.tls"),
            ..fake
        },
        true,
    )
    .await;
    let (ca, cert, key) = (
        fixture_path("ca.pem"),
        fixture_path("client.pem"),
        fixture_path("client.key"),
    );
    let (result, output) = verify(
        &address,
        &[
            "--ca-cert",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--token",
            "mst1.tls",
        ],
    )
    .await;
    assert_eq!(result.unwrap(), 0, "{output}");
    assert_eq!(
        output.lines().filter(|l| l.contains(" ok ")).count(),
        3,
        "{output}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(seen.lock().unwrap().iter().all(|h| h == "Bearer mst1.tls"));

    // Without the client certificate the server refuses the handshake.
    let (result, output) = verify(&address, &["--ca-cert", &ca, "--token", "mst1.tls"]).await;
    assert_eq!(result.unwrap(), 1, "{output}");
    assert_eq!(output.matches("UNREACHABLE").count(), 3, "{output}");
    assert!(
        output.contains("CertificateRequired"),
        "the server's reason: {output}"
    );
    assert!(
        output.contains("--tls-cert/--tls-key"),
        "what to do: {output}"
    );
}

#[tokio::test]
async fn the_server_must_chain_to_the_given_ca_and_match_the_checked_name() {
    let [fake, _, _] = three_fakes();
    let address = spawn_tls(fake, false).await;
    let ca = fixture_path("ca.pem");
    // Server TLS only; the certificate names 127.0.0.1.
    let (result, output) = verify(&address, &["--ca-cert", &ca]).await;
    assert_eq!(result.unwrap(), 0, "{output}");

    // Another CA does not vouch for the server.
    let other = fixture_path("other-ca.pem");
    let (result, output) = verify(&address, &["--ca-cert", &other]).await;
    assert_eq!(result.unwrap(), 1, "{output}");
    assert!(output.contains("https://127.0.0.1:"), "{output}");
    assert!(
        output.to_lowercase().contains("certificate"),
        "says why: {output}"
    );

    // --tls-domain changes the name checked: muster.test is in the certificate, x.example not.
    let (result, output) =
        verify(&address, &["--ca-cert", &ca, "--tls-domain", "muster.test"]).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    let (result, output) = verify(&address, &["--ca-cert", &ca, "--tls-domain", "x.example"]).await;
    assert_eq!(result.unwrap(), 1, "{output}");

    // Plain http to a TLS server fails rather than hanging.
    let (result, output) = verify(&address, &["--timeout-ms", "2000"]).await;
    assert_eq!(result.unwrap(), 1, "{output}");
}
