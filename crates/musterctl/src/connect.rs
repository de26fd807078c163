//! Connecting to a Muster service and bounding each call by `--timeout-ms`, with errors that name
//! the service and endpoint.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// One service as the command line names it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `intake`, `escalation` or `dispatch`.
    pub service: &'static str,
    /// The URL as it will be dialled, with `http://` added when the user gave none.
    pub endpoint: String,
    pub timeout_ms: u64,
}

impl Target {
    pub fn new(service: &'static str, url: &str, timeout_ms: u64) -> Self {
        let url = url.trim();
        let endpoint = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Self {
            service,
            endpoint,
            timeout_ms,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Opens a channel now, so that an unreachable service is reported as such and not as the
    /// first call's `UNAVAILABLE`.
    pub async fn connect(&self) -> Result<Channel, Error> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|error| Error::InvalidEndpoint {
                service: self.service,
                url: self.endpoint.clone(),
                reason: error.to_string(),
            })?
            .connect_timeout(self.timeout());
        match tokio::time::timeout(self.timeout(), endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
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
