//! The one error type of musterctl, worded so that `main` can print it as a single readable line.

use tonic::Code;

/// Everything that can make a command fail. `Display` is the whole line after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--intake`/`--escalation`/`--dispatch` value that is not a usable URL.
    #[error("invalid {service} endpoint {url:?}: {reason}")]
    InvalidEndpoint {
        service: &'static str,
        url: String,
        reason: String,
    },

    /// No connection could be made to a service.
    #[error(
        "cannot reach {service} at {endpoint}: {reason} — {}",
        connection_hint(reason)
    )]
    Unreachable {
        service: &'static str,
        endpoint: String,
        reason: String,
    },

    /// A call got no answer within `--timeout-ms`.
    #[error("{service} at {endpoint} did not answer within {timeout_ms} ms (DEADLINE_EXCEEDED)")]
    Timeout {
        service: &'static str,
        endpoint: String,
        timeout_ms: u64,
    },

    /// The service answered with a gRPC error status. For UNAUTHENTICATED and PERMISSION_DENIED
    /// the line ends with what to do about it.
    #[error("{service} {verb}: {message} ({}){}", code_name(*code), hint(*code, message))]
    Rpc {
        service: &'static str,
        /// What the service did, phrased to follow its name: "rejected the report".
        verb: &'static str,
        code: Code,
        message: String,
    },

    /// The config file does not parse, or has an unknown key or a value of the wrong type.
    #[error("{}:{line}:{column}: {problem}", path.display())]
    Config {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },

    /// The config file named by `--config` or `MUSTER_CONFIG` cannot be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    ConfigUnreadable {
        path: std::path::PathBuf,
        reason: String,
    },

    /// A setting that is present but unusable: a token file that cannot be read, a client
    /// certificate without its key. `origin` says where the setting came from.
    #[error("{origin}: {problem}")]
    Setting { origin: String, problem: String },

    /// A TLS file that cannot be read, or a TLS configuration tonic refuses.
    #[error("TLS: {0}")]
    Tls(String),

    /// A terminal that cannot be set up for `top`.
    #[error("terminal: {0}")]
    Terminal(String),

    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),

    #[error("cannot encode JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Builds the error for a failed call, keeping the server's message as the explanation.
    pub fn from_status(service: &'static str, verb: &'static str, status: &tonic::Status) -> Self {
        let mut message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        // A status made on this side from a transport failure ("transport error") carries the
        // real cause, e.g. the server's TLS alert, in its source chain.
        if let Some(source) = std::error::Error::source(status) {
            let cause = crate::connect::describe_connect_error(source);
            if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        Error::Rpc {
            service,
            verb,
            code: status.code(),
            message,
        }
    }

    /// The gRPC code this error stands for, if any; unreachable services count as `Unavailable`.
    pub fn grpc_code(&self) -> Option<Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            Error::Unreachable { .. } => Some(Code::Unavailable),
            Error::Timeout { .. } => Some(Code::DeadlineExceeded),
            Error::InvalidEndpoint { .. }
            | Error::Config { .. }
            | Error::ConfigUnreadable { .. }
            | Error::Setting { .. }
            | Error::Tls(_)
            | Error::Terminal(_)
            | Error::Output(_)
            | Error::Json(_) => None,
        }
    }
}

/// What to check when a connection fails: TLS settings when the failure is about certificates
/// or the handshake, else whether the services run at all.
pub fn connection_hint(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if [
        "certificate",
        "tls",
        "alert",
        "handshake",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|word| reason.contains(word))
    {
        "check --ca-cert (the CA that signed the services' certificates), --tls-cert/--tls-key for mutual TLS, and --tls-domain"
    } else {
        "is \"muster up\" running?"
    }
}

/// What an officer can do about a failed call, appended to the error line; empty when there is
/// nothing better to say than the message.
pub fn hint(code: Code, message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    match code {
        Code::Unknown | Code::Internal | Code::Unavailable
            if lower.contains("h2 protocol error") || lower.contains("http2 error") =>
        {
            " — the service may expect TLS: give --ca-cert or an https:// endpoint"
        }
        Code::Unknown | Code::Internal | Code::Unavailable
            if ["certificate", "tls", "alert", "handshake"]
                .iter()
                .any(|word| lower.contains(word)) =>
        {
            " — check --ca-cert, --tls-cert/--tls-key for mutual TLS, and --tls-domain"
        }
        Code::Unauthenticated => {
            " — no valid token: pass --token, set MUSTER_TOKEN, or put token/token_file in the config file; `muster up` writes one to .muster/admin.token"
        }
        Code::PermissionDenied => {
            " — the token's role or jurisdiction scope does not cover this: use a token issued for it (`musterctl config show` names the token in use)"
        }
        _ => "",
    }
}

/// The canonical upper-snake-case name of a gRPC status code, as grpcurl and the spec print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
