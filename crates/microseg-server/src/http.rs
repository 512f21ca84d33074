//! Routes and handlers. Errors are JSON `{"code", "message"}` (the shape Segment's
//! libraries read): 400 for a malformed call (naming the field), 401 for a bad key, 413
//! over the size limits, 503 with `Retry-After` when the write queue is full.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Json;
use base64::Engine as _;
use microseg_store::keys::KeyKind;
use microseg_store::segment_spec::{parse_request, Call, RequestError, MAX_BATCH_BYTES};
use serde_json::json;
use tokio::sync::oneshot;

use crate::pipeline::{Job, WriteJob};
use crate::{now, App};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    /// `invalid_request`, `unauthorized`, `not_found`, `conflict`, `payload_too_large`,
    /// `overloaded`, `shutting_down`, `store_error` or `internal`.
    code: String,
    /// What is wrong, naming the field when there is one.
    message: String,
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        code: code.to_string(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// What an error status means here (for the API document).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        400 => "Malformed: the message names the field and what is wrong.",
        401 => "Missing or unknown key.",
        404 => "No such segment, profile or webhook.",
        409 => "It already exists.",
        413 => "Over Segment's limits: 32 KB per call, 500 KB per request.",
        503 => "The write queue is full: retry after `Retry-After` seconds.",
        _ => "Error.",
    }
}

impl App {
    pub(crate) fn reject(
        &self,
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
    ) -> Response {
        let counter = match status.as_u16() {
            400 => &self.metrics.rejected_400,
            401 => &self.metrics.rejected_401,
            413 => &self.metrics.rejected_413,
            _ => &self.metrics.rejected_503,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        error(status, code, message)
    }
}

/// The key in `Authorization: Basic base64(key:)`.
fn basic_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split(':').next()?;
    (!key.is_empty()).then(|| key.to_string())
}

/// The token in `Authorization: Bearer TOKEN`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The route of one ingestion endpoint (`None`: `/v1/batch`).
pub(crate) fn calls(call: Option<Call>) -> MethodRouter<Arc<App>> {
    post(
        move |app: State<Arc<App>>, headers: HeaderMap, body: Body| {
            ingest(app, call, headers, body)
        },
    )
}

/// Reads the body (at most `MAX_BATCH_BYTES`, after gzip when sent gzipped).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the {MAX_BATCH_BYTES}-byte limit"),
        )
    };
    let raw = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|_| too_large())?;
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzipped {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_BATCH_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("body: bad gzip: {e}")))?;
    if out.len() > MAX_BATCH_BYTES {
        return Err(too_large());
    }
    Ok(out.into())
}

async fn ingest(
    State(app): State<Arc<App>>,
    call: Option<Call>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = now();
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err((status, message)) => {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_request"
            };
            return app.reject(status, code, message);
        }
    };
    let request = match parse_request(call, &body) {
        Ok(r) => r,
        Err(e @ RequestError::MessageTooLarge { .. }) => {
            return app.reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            )
        }
        Err(e) => return app.reject(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let key = basic_key(&headers).or(request.write_key);
    match key {
        Some(k) if app.accepts(KeyKind::Write, &k) => {}
        Some(_) => {
            return app.reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown write key",
            )
        }
        None => {
            return app.reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing write key: send it as the HTTP Basic username or the writeKey field",
            )
        }
    }
    if request.messages.is_empty() {
        return Json(json!({"success": true})).into_response();
    }
    let (reply, done) = oneshot::channel();
    let job = Job::Write(WriteJob {
        messages: request.messages,
        received,
        reply,
    });
    app.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    if app.jobs.try_send(job).is_err() {
        app.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let mut r = app.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the write queue is full; retry after the indicated seconds",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    match done.await {
        Ok(Ok(())) => Json(json!({"success": true})).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping",
        ),
    }
}

/// `/healthz`.
pub(crate) async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `/metrics`.
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
