//! The feed listener: `POST /v1/feeds/{cap,alertmanager,pagerduty,geojson}`.
//!
//! One alert message per request (a GeoJSON FeatureCollection or an Alertmanager group may carry
//! many alerts). `?feed=<name>` (or the `Muster-Feed` header) names the configured feed it comes
//! from, for heartbeats. Answers are JSON: 200 accepted, 400 rejected, 413 too large, 503 with
//! `Retry-After` when intake cannot take it now, 404 for an unknown path.
//!
//! Every POST must authenticate with `Authorization: Bearer <credential>`: a Muster token with
//! the `feed` (or `admin`) role, or the shared secret configured for the named feed
//! (`--feed-secrets`, see `auth::feed_secrets`). Without one the answer is 401, with a token of
//! another role 403; nothing is read or stored. Every POST, accepted or refused, is written to
//! intake's audit trail.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use feeds::{Format, RejectCode, Rejection};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Answer, FeedIntake, RETRY_AFTER_SECONDS};

/// Who may post to the feed endpoints, and where their posts are audited.
#[derive(Clone)]
pub struct FeedAccess {
    pub verifier: auth::VerifyingKey,
    pub secrets: Arc<auth::feed_secrets::FeedSecrets>,
    /// Intake's store: its audit trail.
    pub store: store::Store,
    pub namespace: String,
}

#[derive(Clone)]
struct Feeds {
    intake: FeedIntake,
    access: FeedAccess,
    verified: Arc<auth::VerifiedTokens>,
}

/// Serves the feed endpoints on `listener` until `shutdown`, letting requests in flight finish.
pub async fn serve(
    intake: FeedIntake,
    access: FeedAccess,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/feeds/{format}", post(post_feed))
        .route("/v1/feeds", get(list_feeds))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(Feeds {
            intake,
            access,
            verified: Arc::default(),
        });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "feed listener serving");
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Who is posting: the verified token's claims, or the feed whose secret matched.
enum Poster {
    Token(auth::Claims),
    Secret(String),
}

/// Checks the request's credential; the refusal is the response to send.
fn authenticate(
    access: &FeedAccess,
    verified: &auth::VerifiedTokens,
    request: &Request,
) -> Result<Poster, (StatusCode, String)> {
    let unauthenticated = |reason: String| (StatusCode::UNAUTHORIZED, reason);
    let Some(header) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return Err(unauthenticated(
            "no credential: send `Authorization: Bearer <token>` with a token of role feed \
             (muster token issue --role feed ...) or the feed's shared secret with ?feed=<name>"
                .into(),
        ));
    };
    let credential = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    if credential.starts_with(auth::token::PREFIX) {
        let claims = verified
            .verify(&access.verifier, credential, lifecycle::unix_ms_now())
            .map_err(|error| unauthenticated(error.to_string()))?;
        if !claims.role.allows(auth::Permission::Feed) {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "{} ({}) may not post feed alerts: that needs a token with the feed role",
                    claims.officer, claims.role
                ),
            ));
        }
        return Ok(Poster::Token(claims));
    }
    let Some(feed) = feed_name(request) else {
        return Err(unauthenticated(
            "a shared secret needs the feed's name: add ?feed=<name> or the Muster-Feed header"
                .into(),
        ));
    };
    if access.secrets.accepts(&feed, credential) {
        Ok(Poster::Secret(feed))
    } else {
        Err(unauthenticated(format!(
            "the credential is neither a Muster token nor the secret configured for feed {feed:?}"
        )))
    }
}

fn audit_post(
    access: &FeedAccess,
    poster: Option<&Poster>,
    peer: &str,
    path: &str,
    result: &str,
    detail: String,
) {
    let (officer, role, jurisdiction, token_id) = match poster {
        Some(Poster::Token(claims)) => (
            claims.officer.clone(),
            claims.role.as_str().to_string(),
            claims.jurisdiction.clone(),
            claims.token_id.clone(),
        ),
        Some(Poster::Secret(feed)) => (
            format!("feed:{feed}"),
            "feed".to_string(),
            String::new(),
            String::new(),
        ),
        None => Default::default(),
    };
    let fields = store::audit::AuditFields {
        at_unix_ms: lifecycle::unix_ms_now(),
        service: crate::SERVICE_NAME.to_string(),
        officer,
        role,
        jurisdiction_code: jurisdiction,
        token_id,
        peer: peer.to_string(),
        action: format!("POST {path}"),
        incident_id: String::new(),
        unit_id: String::new(),
        result: result.to_string(),
        detail,
        namespace: access.namespace.clone(),
    };
    if let Err(error) = access.store.append_audit(fields) {
        tracing::error!(%error, "cannot append a feed post to the audit trail");
    }
}

async fn post_feed(
    State(feeds): State<Feeds>,
    Path(format_name): Path<String>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let peer = peer.to_string();
    let poster = match authenticate(&feeds.access, &feeds.verified, &request) {
        Ok(poster) => poster,
        Err((status, reason)) => {
            let code = if status == StatusCode::FORBIDDEN {
                "permission_denied"
            } else {
                "unauthenticated"
            };
            audit_post(&feeds.access, None, &peer, &path, code, reason.clone());
            let body = json!({"status": "rejected", "cap_msg_type": "Error", "code": code, "reason": reason});
            let mut response = (
                status,
                json_body(serde_json::to_vec(&body).unwrap_or_default()),
            )
                .into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"muster-feeds\""),
                );
            }
            return response;
        }
    };
    let response = post_authenticated(&feeds.intake, &format_name, request).await;
    let status = response.status();
    let result = if status.is_success() {
        "ok".to_string()
    } else {
        format!("http_{}", status.as_u16())
    };
    audit_post(
        &feeds.access,
        Some(&poster),
        &peer,
        &path,
        &result,
        format!("HTTP {}", status.as_u16()),
    );
    response
}

async fn post_authenticated(intake: &FeedIntake, format_name: &str, request: Request) -> Response {
    let Some(format) = Format::parse(format_name) else {
        return not_found_text(&format!(
            "no feed format {format_name:?}: POST to /v1/feeds/cap, /v1/feeds/alertmanager, /v1/feeds/pagerduty or /v1/feeds/geojson"
        ));
    };
    let limit = intake.limits().body_bytes_max;
    let too_large = |size: String| {
        answer_response(&Answer::Rejected(Rejection::new(
            RejectCode::TooLarge,
            format!("body is {size} bytes; the limit is {limit} bytes"),
        )))
    };
    // Refuse an announced oversize body before reading a byte of it.
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return too_large(length.to_string());
    }
    let feed = feed_name(&request);
    let body = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(body) => body,
        Err(_) => return too_large(format!("more than {limit}")),
    };
    let answer = intake.submit(format, feed.as_deref(), &body).await;
    answer_response(&answer)
}

/// `?feed=NAME` or the `Muster-Feed` header.
fn feed_name(request: &Request) -> Option<String> {
    let from_query = request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == "feed").then(|| value.to_string())
        })
    });
    from_query
        .or_else(|| {
            request
                .headers()
                .get(bus::feed::FEED_NAME_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

fn answer_response(answer: &Answer) -> Response {
    let status = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::OK);
    let mut response = (status, json_body(answer.to_json())).into_response();
    if matches!(answer, Answer::Unavailable(_)) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&RETRY_AFTER_SECONDS.to_string()).expect("digits"),
        );
    }
    response
}

fn json_body(bytes: Vec<u8>) -> ([(header::HeaderName, &'static str); 1], Body) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
}

async fn list_feeds(State(Feeds { intake, .. }): State<Feeds>) -> Response {
    let formats: Vec<&str> = Format::ALL.iter().map(Format::as_str).collect();
    let body = json!({
        "formats": formats,
        "body_bytes_max": intake.limits().body_bytes_max,
    });
    (
        StatusCode::OK,
        json_body(serde_json::to_vec(&body).unwrap_or_default()),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    not_found_text(&format!(
        "no route {} {}: feeds are POSTed to /v1/feeds/<format>",
        request.method(),
        request.uri().path()
    ))
}

fn not_found_text(reason: &str) -> Response {
    let body = json!({"status": "rejected", "cap_msg_type": "Error", "code": "not_found", "reason": reason});
    (
        StatusCode::NOT_FOUND,
        json_body(serde_json::to_vec(&body).unwrap_or_default()),
    )
        .into_response()
}
