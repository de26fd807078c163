//! Access control and auditing for every gRPC server, as one tower layer in front of all routes.
//!
//! For each call the layer
//! 1. lets health and reflection through without a token;
//! 2. verifies the `authorization: Bearer <token>` metadata ([`auth::token`]): none or a bad one
//!    is `UNAUTHENTICATED`;
//! 3. looks the method up in [`auth::policy`] and refuses a role without the permission with
//!    `PERMISSION_DENIED`;
//! 4. hands the handler the [`Principal`] and an [`AuditNote`] in the request's extensions; the
//!    handler takes them as a [`Caller`], checks the jurisdiction scope of what it touches
//!    ([`Caller::require_incident`] and friends), which also names the incident or unit on the
//!    note;
//! 5. when the answer is ready, appends an entry to the service's audit trail for every command
//!    and for every refused call (reads that succeed are not audited).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use auth::{Principal, VerifyingKey};
use domain::jurisdiction::JurisdictionTree;
use store::Store;
use store::audit::AuditFields;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What one server needs to authenticate, authorize and audit calls.
#[derive(Clone)]
pub struct Access {
    pub service: &'static str,
    /// The namespace this instance serves, recorded on entries that name none.
    pub namespace: String,
    pub verifier: VerifyingKey,
    /// The tokens `verifier` has passed (every call of a client carries the same token).
    pub verified: Arc<auth::VerifiedTokens>,
    /// The service's store; its `audit` tree holds the trail.
    pub store: Store,
    pub tree: Arc<JurisdictionTree>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("service", &self.service)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// What the handler tells the audit trail about a call: the incident or unit it concerns.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<NoteFields>>);

#[derive(Debug, Clone, Default)]
struct NoteFields {
    incident_id: String,
    unit_id: String,
    namespace: String,
    detail: String,
}

impl AuditNote {
    fn with<R>(&self, f: impl FnOnce(&mut NoteFields) -> R) -> R {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn incident(&self, incident_id: &str) {
        self.with(|note| note.incident_id = incident_id.to_string());
    }

    pub fn unit(&self, unit_id: &str) {
        self.with(|note| note.unit_id = unit_id.to_string());
    }

    pub fn namespace(&self, namespace: &str) {
        self.with(|note| note.namespace = namespace.to_string());
    }

    /// A short summary of an accepted command (never personal data).
    pub fn detail(&self, detail: impl Into<String>) {
        let detail = detail.into();
        self.with(|note| note.detail = detail);
    }
}

/// The verified caller of a request and its audit note, taken from the request's extensions
/// before the handler consumes the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub note: AuditNote,
}

impl Caller {
    /// `UNAUTHENTICATED` if the access layer did not run (a server built without it must not
    /// serve anything but health and reflection).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified caller on this request"))?;
        let note = request
            .extensions()
            .get::<AuditNote>()
            .cloned()
            .unwrap_or_default();
        Ok(Caller { principal, note })
    }

    /// Whether an incident led by `lead` and touching the townships `locations` is in scope.
    pub fn sees_incident(&self, tree: &JurisdictionTree, lead: &str, locations: &[&str]) -> bool {
        self.principal.covers(tree, lead)
            || locations
                .iter()
                .any(|location| self.principal.covers(tree, location))
    }

    /// Names `incident_id` on the audit note and requires it in scope; `PERMISSION_DENIED`
    /// otherwise.
    pub fn require_incident(
        &self,
        tree: &JurisdictionTree,
        incident_id: &str,
        lead: &str,
        locations: &[&str],
    ) -> Result<(), Status> {
        self.note.incident(incident_id);
        if self.sees_incident(tree, lead, locations) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                self.principal
                    .out_of_scope(&format!("incident {incident_id}")),
            ))
        }
    }

    /// Requires jurisdiction or township `code` in scope (`what` names it in the refusal).
    pub fn require_code(
        &self,
        tree: &JurisdictionTree,
        code: &str,
        what: &str,
    ) -> Result<(), Status> {
        if self.principal.covers(tree, code) {
            Ok(())
        } else {
            Err(Status::permission_denied(self.principal.out_of_scope(what)))
        }
    }
}

/// The caller of a request that passed the layer (see [`Caller::of`]).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no verified caller on this request"))
}

/// The tower layer; add it with `Server::builder().layer(AccessLayer::new(access))`.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    access: Arc<Access>,
}

impl AccessLayer {
    pub fn new(access: Access) -> AccessLayer {
        AccessLayer {
            access: Arc::new(access),
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            access: self.access.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    access: Arc<Access>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        if auth::policy::is_public(&path) {
            let future = self.inner.call(request);
            return Box::pin(future);
        }
        // The clone that was made ready must serve this call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = self.access.clone();
        let peer = peer_of(&request);
        let now = now_ms();
        let decision = authenticate(&access, &request, &path, peer.clone(), now);
        Box::pin(async move {
            let (principal, rule) = match decision {
                Ok(allowed) => allowed,
                Err((status, principal)) => {
                    audit(
                        &access,
                        &path,
                        &peer,
                        principal.as_ref(),
                        &AuditNote::default(),
                        code_name(status.code()),
                        status.message(),
                        now,
                    );
                    return Ok(status.into_http());
                }
            };
            let note = AuditNote::default();
            request.extensions_mut().insert(principal.clone());
            request.extensions_mut().insert(note.clone());
            // Continue the caller's W3C trace (or start one): the events this call commits carry
            // it to the next services (store::trace), and the answer names it.
            let context = store::trace::TraceContext::continue_or_new(
                request
                    .headers()
                    .get("traceparent")
                    .and_then(|value| value.to_str().ok()),
            );
            let traceparent = context.traceparent();
            let span = tracing::info_span!(
                "grpc",
                service = access.service,
                method = %path,
                officer = %principal.officer(),
                trace_id = %context.trace_id,
                span_id = %context.span_id,
                parent_span_id = context.parent_span_id.as_deref().unwrap_or(""),
            );
            let mut response = tracing::Instrument::instrument(
                store::trace::scope(context, inner.call(request)),
                span,
            )
            .await?;
            if let Ok(value) = http::HeaderValue::from_str(&traceparent) {
                response.headers_mut().insert("traceparent", value);
            }
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok);
            if rule.command || status != tonic::Code::Ok {
                let message = response
                    .headers()
                    .get("grpc-message")
                    .map(|value| percent_decode(value.as_bytes()))
                    .unwrap_or_default();
                audit(
                    &access,
                    &path,
                    &peer,
                    Some(&principal),
                    &note,
                    code_name(status),
                    &message,
                    now,
                );
            }
            Ok(response)
        })
    }
}

/// The caller and the method's rule, or the refusal (with the caller when it was known).
#[allow(clippy::result_large_err)]
fn authenticate<B>(
    access: &Access,
    request: &http::Request<B>,
    path: &str,
    peer: String,
    now: i64,
) -> Result<(Principal, auth::Rule), (Status, Option<Principal>)> {
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(header) = header else {
        return Err((
            Status::unauthenticated(
                "no token: send metadata `authorization: Bearer <token>` (musterctl: --token, \
                 MUSTER_TOKEN or the config file; `muster up` writes an admin token to \
                 <data-dir>/admin.token, `muster token issue` makes others)",
            ),
            None,
        ));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    let claims = access
        .verified
        .verify(&access.verifier, token, now)
        .map_err(|error| (Status::unauthenticated(error.to_string()), None))?;
    let principal = Principal { claims, peer };
    let Some(rule) = auth::rule_for(path) else {
        return Err((
            Status::permission_denied(format!("{path} has no access rule: refused for everyone")),
            Some(principal),
        ));
    };
    if !principal.role().allows(rule.permission) {
        let status = Status::permission_denied(format!(
            "{} ({}) may not call {}: it needs the {} permission, which the {} role does not have",
            principal.officer(),
            principal.role(),
            path.rsplit('/').next().unwrap_or(path),
            rule.permission.as_str(),
            principal.role(),
        ));
        return Err((status, Some(principal)));
    }
    Ok((principal, rule))
}

#[allow(clippy::too_many_arguments)]
fn audit(
    access: &Access,
    path: &str,
    peer: &str,
    principal: Option<&Principal>,
    note: &AuditNote,
    result: &str,
    message: &str,
    now: i64,
) {
    let noted = note.with(|fields| fields.clone());
    let detail = if result == "ok" {
        noted.detail
    } else {
        message.chars().take(300).collect()
    };
    let fields = AuditFields {
        at_unix_ms: now,
        service: access.service.to_string(),
        officer: principal
            .map(|p| p.officer().to_string())
            .unwrap_or_default(),
        role: principal
            .map(|p| p.role().as_str().to_string())
            .unwrap_or_default(),
        jurisdiction_code: principal
            .map(|p| p.jurisdiction().to_string())
            .unwrap_or_default(),
        token_id: principal
            .map(|p| p.claims.token_id.clone())
            .unwrap_or_default(),
        peer: peer.to_string(),
        action: path.to_string(),
        incident_id: noted.incident_id,
        unit_id: noted.unit_id,
        result: result.to_string(),
        detail,
        namespace: if noted.namespace.is_empty() {
            access.namespace.clone()
        } else {
            noted.namespace
        },
    };
    if let Err(error) = access.store.append_audit(fields) {
        tracing::error!(%error, action = path, "cannot append to the audit trail");
    }
}

fn peer_of<B>(request: &http::Request<B>) -> String {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
        .map(|addr| addr.to_string())
        .unwrap_or_default()
}

/// `PERMISSION_DENIED` → `permission_denied`; `ok` for success.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"incident%20INC-1%25"), "incident INC-1%");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%E4%B8%AD"), "中");
    }
}
