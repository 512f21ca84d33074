//! The ingestion handlers (the Segment tracking API) and the operations endpoints. Errors
//! are [`ApiError`]s: 400 for a malformed call (naming the field), 401 for a bad key, 413
//! over the size limits, 503 with `Retry-After` when the write queue is full; each is
//! counted in `/metrics` by status.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Json;
use base64::Engine as _;
use microseg_store::keys::KeyKind;
use microseg_store::tracking::{parse_request, Call, RequestError, MAX_BATCH_BYTES};
use serde_json::json;
use tokio::sync::oneshot;

use crate::error::{ApiError, ErrorKind};
use crate::pipeline::{Job, WriteJob};
use crate::{now, App};

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
        move |State(app): State<Arc<App>>, headers: HeaderMap, body: Body| async move {
            match ingest(&app, call, &headers, body).await {
                Ok(r) => r,
                Err(e) => {
                    app.counters.count_rejection(e.kind.status().as_u16());
                    e.into_response()
                }
            }
        },
    )
}

/// Reads the body (at most `MAX_BATCH_BYTES`, after gzip when sent gzipped).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body over the {MAX_BATCH_BYTES}-byte limit"),
        )
    };
    let raw = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|e| {
            // Over the limit, or a body that could not be read at all (a broken chunk).
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                ApiError::bad(format!("body: could not be read: {e}"))
            }
        })?;
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
        .map_err(|e| ApiError::bad(format!("body: bad gzip: {e}")))?;
    if out.len() > MAX_BATCH_BYTES {
        return Err(too_large());
    }
    Ok(out.into())
}

/// Checks the write key (HTTP Basic username, else `from_body`) and takes one request
/// from its rate.
pub(crate) fn write_key(
    app: &App,
    headers: &HeaderMap,
    from_body: Option<String>,
) -> Result<(), ApiError> {
    let key = basic_key(headers).or(from_body);
    match key {
        Some(k) if app.accepts(KeyKind::Write, &k) => {
            if let Err(wait) = app.rate.take(&k, std::time::Instant::now()) {
                let (rate, burst) = app.rate.describe();
                return Err(ApiError {
                    retry_after: Some(wait),
                    ..ApiError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "this write key sent more than {rate} requests per second \
                             (burst {burst}); retry after {wait} s"
                        ),
                    )
                });
            }
        }
        Some(_) => return Err(ApiError::new(ErrorKind::Unauthorized, "unknown write key")),
        None => {
            return Err(ApiError::new(
                ErrorKind::Unauthorized,
                "missing write key: send it as the HTTP Basic username or the writeKey field",
            ))
        }
    }
    Ok(())
}

async fn ingest(
    app: &App,
    call: Option<Call>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let received = now();
    let body = read_body(headers, body).await?;
    let request = parse_request(call, &body).map_err(|e| match e {
        RequestError::MessageTooLarge { .. } => {
            ApiError::new(ErrorKind::PayloadTooLarge, e.to_string())
        }
        e => ApiError::bad(e.to_string()),
    })?;
    write_key(app, headers, request.write_key)?;
    // Events from the future would sit in the streaming state until their time comes.
    let horizon = app.workspace.config.limits.future_minutes;
    let latest = received
        .0
        .saturating_add((horizon as i64).saturating_mul(60_000));
    if let Some((i, m)) = request
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.time.is_some_and(|t| t.0 > latest))
    {
        app.counters.limit_future.fetch_add(1, Ordering::Relaxed);
        let at = if call.is_some() {
            "timestamp".to_string()
        } else {
            format!("batch[{i}].timestamp")
        };
        let when = m.time.map(|t| t.to_string()).unwrap_or_default();
        return Err(ApiError::new(
            ErrorKind::LimitReached,
            format!(
                "{at}: {when} is more than {horizon} minutes after the server's clock \
                 ([limits] future_minutes in microseg.toml)"
            ),
        ));
    }
    if request.messages.is_empty() {
        return Ok(Json(json!({"success": true})).into_response());
    }
    let (reply, done) = oneshot::channel();
    let job = Job::Write(WriteJob {
        messages: request.messages,
        received,
        reply,
    });
    app.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
    if app.jobs.try_send(job).is_err() {
        app.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(
            ErrorKind::Overloaded,
            "the write queue is full; retry after the indicated seconds",
        ));
    }
    match done.await {
        Ok(Ok(())) => Ok(Json(json!({"success": true})).into_response()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::shutting_down()),
    }
}

/// `/metrics` and `/openapi.json` answer anyone only with `[server] public_metrics = true`;
/// otherwise they need the admin token.
pub(crate) fn open_or_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.workspace.config.server.public_metrics {
        Ok(())
    } else {
        crate::admin::admin(app, headers)
    }
}

/// `/openapi.json`.
pub(crate) async fn openapi(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match open_or_admin(&app, &headers) {
        Ok(()) => Json(crate::api::openapi()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `/healthz`.
pub(crate) async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `/metrics`.
pub(crate) async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = open_or_admin(&app, &headers) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.counters.render(),
    )
        .into_response()
}
