//! The feed listener: `POST /v1/feeds/{cap,alertmanager,pagerduty,geojson}`.
//!
//! One alert message per request (a GeoJSON FeatureCollection or an Alertmanager group may carry
//! many alerts). `?feed=<name>` (or the `Muster-Feed` header) names the configured feed it comes
//! from, for heartbeats. Answers are JSON: 200 accepted, 400 rejected, 413 too large, 503 with
//! `Retry-After` when intake cannot take it now, 404 for an unknown path.

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

/// Serves the feed endpoints on `listener` until `shutdown`, letting requests in flight finish.
pub async fn serve(
    intake: FeedIntake,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/feeds/{format}", post(post_feed))
        .route("/v1/feeds", get(list_feeds))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(intake);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "feed listener serving");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn post_feed(
    State(intake): State<FeedIntake>,
    Path(format_name): Path<String>,
    request: Request,
) -> Response {
    let Some(format) = Format::parse(&format_name) else {
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

async fn list_feeds(State(intake): State<FeedIntake>) -> Response {
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
