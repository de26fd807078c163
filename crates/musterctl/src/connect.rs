//! Connecting to a Muster service: the one place that applies TLS and the bearer token to every
//! channel, and bounds each call by `--timeout-ms`, with errors that name the service and endpoint.

use std::future::Future;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;
use crate::settings::Settings;

/// Adds `authorization: Bearer <token>` to every request, when there is a token. Without one the
/// request goes out bare and the server's UNAUTHENTICATED comes back with a hint.
#[derive(Clone, Default)]
pub struct BearerToken {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let header = match token {
            None => None,
            Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(
                |_| Error::Setting {
                    origin: "token".to_owned(),
                    problem: "the token cannot be sent in a header".to_owned(),
                },
            )?),
        };
        Ok(Self { header })
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A channel that carries the token on every call; every client is built on one.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// How every channel of a run is made: TLS (or not) and the token. Built once from [`Settings`].
#[derive(Clone, Default)]
pub struct Transport {
    token: BearerToken,
    tls: Option<ClientTlsConfig>,
    timeout_ms: u64,
}

impl Transport {
    /// Reads the certificate files now, so a bad path fails before any call is made.
    pub fn from_settings(settings: &Settings) -> Result<Self, Error> {
        let token = BearerToken::new(settings.token.as_ref().map(|t| t.token.as_str()))?;
        let tls = if settings.tls_enabled() {
            let mut config = ClientTlsConfig::new();
            if let Some(ca_cert) = &settings.ca_cert {
                let pem = read_pem(&ca_cert.value, "CA certificate (--ca-cert)")?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
                let cert = read_pem(&cert.value, "client certificate (--tls-cert)")?;
                let key = read_pem(&key.value, "client key (--tls-key)")?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &settings.tls_domain {
                config = config.domain_name(domain.value.clone());
            }
            Some(config)
        } else {
            None
        };
        Ok(Self {
            token,
            tls,
            timeout_ms: settings.timeout_ms.value,
        })
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }
}

/// Reads a PEM file and checks it looks like one, so a wrong path gives a clear line instead of a
/// handshake failure.
fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path)
        .map_err(|error| Error::Tls(format!("cannot read {what} {}: {error}", path.display())))?;
    if !pem.windows(11).any(|window| window == b"-----BEGIN ") {
        return Err(Error::Tls(format!(
            "{what} {} is not PEM (no \"-----BEGIN\" line)",
            path.display()
        )));
    }
    Ok(pem)
}

/// One service as the command line names it.
#[derive(Clone)]
pub struct Target {
    /// `intake`, `escalation` or `dispatch`.
    pub service: &'static str,
    /// The URL as it will be dialled, with `http://` (or `https://` under TLS) added when the
    /// user gave no scheme.
    pub endpoint: String,
    pub timeout_ms: u64,
    transport: Transport,
}

impl Target {
    pub fn new(service: &'static str, url: &str, transport: &Transport) -> Self {
        let url = url.trim();
        let scheme = if transport.tls_enabled() {
            "https"
        } else {
            "http"
        };
        let endpoint = match url.split_once("://") {
            None => format!("{scheme}://{url}"),
            // A CA certificate means TLS even for an endpoint written `http://`.
            Some(("http", rest)) if transport.tls_enabled() => format!("https://{rest}"),
            Some(_) => url.to_owned(),
        };
        Self {
            service,
            endpoint,
            timeout_ms: transport.timeout_ms,
            transport: transport.clone(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Opens a channel now, so that an unreachable service is reported as such and not as the
    /// first call's `UNAVAILABLE`.
    pub async fn connect(&self) -> Result<AuthChannel, Error> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|error| Error::InvalidEndpoint {
                service: self.service,
                url: self.endpoint.clone(),
                reason: error.to_string(),
            })?
            .connect_timeout(self.timeout());
        if let Some(tls) = &self.transport.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|error| {
                Error::Tls(format!(
                    "{} at {}: {}",
                    self.service,
                    self.endpoint,
                    describe_connect_error(&error)
                ))
            })?;
        }
        match tokio::time::timeout(self.timeout(), endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(InterceptedService::new(
                channel,
                self.transport.token.clone(),
            )),
            Ok(Err(error)) => Err(Error::Unreachable {
                service: self.service,
                endpoint: self.endpoint.clone(),
                reason: describe_connect_error(&error),
            }),
            Err(_elapsed) => Err(Error::Unreachable {
                service: self.service,
                endpoint: self.endpoint.clone(),
                reason: format!("no connection within {} ms", self.timeout_ms),
            }),
        }
    }

    /// Awaits one unary call within the timeout, mapping a failure status with `verb`.
    pub async fn call<T>(
        &self,
        verb: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(self.service, verb, &status)),
            Err(_elapsed) => Err(self.timed_out()),
        }
    }

    pub fn timed_out(&self) -> Error {
        Error::Timeout {
            service: self.service,
            endpoint: self.endpoint.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// The most specific cause of a connect failure, in lower case: "connection refused".
///
/// tonic wraps the operating system's error several layers deep ("transport error" → "tcp
/// connect error" → io error); the innermost I/O error is the one an officer can act on.
pub fn describe_connect_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost_io = None;
    let mut innermost = error;
    let mut current = Some(error);
    while let Some(cause) = current {
        if let Some(io_error) = cause.downcast_ref::<std::io::Error>() {
            innermost_io = Some(io_error);
        }
        innermost = cause;
        current = cause.source();
    }
    match innermost_io {
        Some(io_error) => match io_error.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
            _ => io_error.to_string(),
        },
        None => innermost.to_string(),
    }
}
