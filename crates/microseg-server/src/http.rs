//! Routes and handlers. Errors are JSON `{"code", "message"}` (the shape Segment's
//! libraries read): 400 for a malformed call (naming the field), 401 for a bad key, 413
//! over the size limits, 503 with `Retry-After` when the write queue is full.

use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::Stream;
use microseg_store::keys::KeyKind;
use microseg_store::segment_spec::{parse_request, Call, RequestError, MAX_BATCH_BYTES};
use serde_json::json;
use tokio::sync::oneshot;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt as _;

use crate::pipeline::WriteJob;
use crate::{now, App};

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/track", post(track))
        .route("/v1/identify", post(identify))
        .route("/v1/page", post(page))
        .route("/v1/screen", post(screen))
        .route("/v1/group", post(group))
        .route("/v1/alias", post(alias))
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/segments", get(segments))
        .route("/v1/segments/{name}/members", get(members))
        .route("/v1/profiles/{id}", get(profile))
        .route("/v1/changes", get(changes))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// A JSON error response.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = Json(json!({"code": code, "message": message.into()}));
    (status, body).into_response()
}

impl App {
    fn reject(&self, status: StatusCode, code: &str, message: impl Into<String>) -> Response {
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
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn track(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Track), h, b).await
}
async fn identify(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Identify), h, b).await
}
async fn page(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Page), h, b).await
}
async fn screen(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Screen), h, b).await
}
async fn group(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Group), h, b).await
}
async fn alias(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, Some(Call::Alias), h, b).await
}
async fn batch(s: State<Arc<App>>, h: HeaderMap, b: Body) -> Response {
    ingest(s, None, h, b).await
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
    let job = WriteJob {
        messages: request.messages,
        received,
        reply,
    };
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

/// Refuses a management call without a valid admin token.
fn admin(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let reason = match bearer(headers) {
        Some(t) if app.accepts(KeyKind::Admin, t) => return Ok(()),
        Some(_) => "unknown admin token",
        None => "missing admin token: send Authorization: Bearer TOKEN (microseg key create admin)",
    };
    Err(Box::new(app.reject(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        reason,
    )))
}

async fn segments(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return *r;
    }
    let e = app.engine.lock().expect("engine lock");
    let mut list: Vec<serde_json::Value> = e
        .streaming
        .segment_names()
        .map(|name| {
            let size = e.streaming.members(name).map_or(0, |m| m.len());
            json!({"name": name, "size": size, "streaming": true})
        })
        .collect();
    for (name, reason) in &e.batch_only {
        list.push(json!({"name": name, "streaming": false, "reason": reason}));
    }
    Json(json!({"as_of": e.streaming.clock().to_string(), "segments": list})).into_response()
}

async fn members(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return *r;
    }
    let e = app.engine.lock().expect("engine lock");
    match e.streaming.members(&name) {
        Some(m) => {
            let ids: Vec<&str> = m
                .iter()
                .map(|p| e.profiles.external_ids[p as usize].as_str())
                .collect();
            Json(json!({"segment": name, "as_of": e.streaming.clock().to_string(), "size": ids.len(), "members": ids}))
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no streaming segment '{name}'"),
        ),
    }
}

async fn profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return *r;
    }
    let e = app.engine.lock().expect("engine lock");
    let Some(p) = e.profiles.external_ids.iter().position(|x| *x == id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no profile '{id}'"),
        );
    };
    let p = p as u32;
    if e.retired.contains(p) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("profile '{id}' was merged into another by alias"),
        );
    }
    let traits: serde_json::Map<String, serde_json::Value> = e
        .profiles
        .columns
        .iter()
        .filter_map(|(k, c)| Some((k.clone(), c.get(p)?.to_json())))
        .collect();
    Json(json!({
        "id": id,
        "traits": traits,
        "segments": e.streaming.segments_of(p),
    }))
    .into_response()
}

async fn changes(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return *r;
    }
    let mut stopping = app.stopping.clone();
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let changes =
        futures_util::StreamExt::take_until(BroadcastStream::new(app.changes.subscribe()), stop);
    let stream = changes.filter_map(|c| {
        let c = c.ok()?;
        Some(Ok::<Event, Infallible>(
            Event::default()
                .event(c.kind)
                .json_data(&c)
                .unwrap_or_default(),
        ))
    });
    sse(stream).into_response()
}

fn sse(
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
