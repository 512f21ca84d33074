//! The management and query API behind the admin token: segments (list, create, show,
//! edit, members, overlap, explain), profiles (traits, metrics, segments, recent events)
//! and the stream of membership changes.
//!
//! Reads of membership come from the streaming state; definitions and events come from
//! the store (one connection per call, on the blocking pool). Creating or editing a
//! segment saves it, then asks the writer to pin the store between two commits
//! ([`crate::pipeline::Job::Redefine`]): the changed segment's leaves are backfilled from
//! history off the writer and installed by the evaluator, with no commit applied twice or
//! missed and ingestion going on meanwhile.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use microseg_core::condition::{check_segment_name, parse, Condition};
use microseg_core::{Timestamp, Value};
use microseg_engine::check_references;
use microseg_engine::metrics::OWN_METRIC_NAMES;
use microseg_engine::streaming::{StreamError, Streaming};
use microseg_store::keys::KeyKind;
use microseg_store::tables::OneProfile;
use microseg_store::Store;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::sync::oneshot;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt as _;

use crate::error::{ApiError, Body, ErrorKind, Path, Query};
use crate::http::bearer;
use crate::pipeline::Job;
use crate::App;

pub(crate) type Answer = Result<Response, ApiError>;

/// Refuses a management call without a valid admin token.
pub(crate) fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let reason = match bearer(headers) {
        Some(t) if app.accepts(KeyKind::Admin, t) => return Ok(()),
        Some(_) => "unknown admin token",
        None => "missing admin token: send Authorization: Bearer TOKEN (microseg key create admin)",
    };
    Err(ApiError::new(ErrorKind::Unauthorized, reason))
}

/// Runs `f` on the blocking pool with a store connection.
pub(crate) async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App, &mut Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&app.workspace)?;
        f(&app, &mut store)
    })
    .await
    .map_err(ApiError::internal)?
}

/// [`blocking`] after the admin check, answering with what `f` returns.
pub(crate) async fn with_store(
    app: Arc<App>,
    headers: &HeaderMap,
    f: impl FnOnce(&App, &mut Store) -> Answer + Send + 'static,
) -> Answer {
    admin(&app, headers)?;
    blocking(&app, f).await
}

/// The streaming clock, as the `as_of` of an answer.
fn as_of(app: &App) -> Json {
    let clock = app.live.lock().expect("live state lock").streaming.clock();
    json!(clock.to_string())
}

/// One segment as listed and shown, its size as of the streaming clock (`as_of`, read
/// under the same lock).
fn describe(app: &App, s: &microseg_store::StoredSegment) -> Json {
    let e = app.live.lock().expect("live state lock");
    let mut out = json!({
        "name": s.name,
        "version": s.version,
        "condition": s.condition.to_string(),
        "description": s.description,
        "as_of": e.streaming.clock().to_string(),
    });
    match e.streaming.members(&s.name) {
        Some(m) => {
            out["streaming"] = json!(true);
            out["size"] = json!(m.len());
        }
        None => {
            out["streaming"] = json!(false);
            out["size"] = Json::Null;
            let reason = e.batch_only.iter().find(|(n, _)| *n == s.name);
            out["reason"] = json!(reason.map_or("not loaded yet", |(_, r)| r.as_str()));
        }
    }
    out
}

pub(crate) async fn list_segments(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    with_store(app, &headers, |app, store| {
        let mut list: Vec<Json> = store.segments()?.iter().map(|s| describe(app, s)).collect();
        for u in store.unreadable_segments()? {
            list.push(json!({
                "name": u.name,
                "version": u.version,
                "error": format!("unreadable: {} (delete it or save it again)", u.reason),
            }));
        }
        Ok(axum::Json(json!({"as_of": as_of(app), "segments": list})).into_response())
    })
    .await
}

pub(crate) async fn show_segment(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let s = find(store, &name)?;
        Ok(axum::Json(describe(app, &s)).into_response())
    })
    .await
}

fn find(store: &Store, name: &str) -> Result<microseg_store::StoredSegment, ApiError> {
    store
        .segments()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no segment '{name}'")))
}

/// The body of a segment create or edit.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentDefinition {
    /// The name (create only; an edit takes it from the path).
    name: Option<String>,
    /// The condition, in the condition language.
    condition: String,
    /// What it is for.
    description: Option<String>,
}

fn body(raw: &[u8]) -> Result<SegmentDefinition, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::bad(format!("body: {e}")))
}

pub(crate) async fn create_segment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    save(app, headers, raw, None).await
}

pub(crate) async fn edit_segment(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    save(app, headers, raw, Some(name)).await
}

/// Checks, saves and loads a segment; `edit`: the name of the segment being replaced.
async fn save(
    app: Arc<App>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
    edit: Option<String>,
) -> Answer {
    admin(&app, &headers)?;
    let editing = edit.is_some();
    let name = blocking(&app, move |app, store| {
        let b = body(&raw)?;
        let name = match (edit, b.name) {
            (Some(path), Some(n)) if path != n => {
                return Err(ApiError::bad(format!(
                    "name: '{n}' differs from the path's '{path}' (renaming is not supported)"
                )))
            }
            (Some(path), _) => path,
            (None, Some(n)) => n,
            (None, None) => return Err(ApiError::bad("name: missing")),
        };
        check_segment_name(&name).map_err(ApiError::bad)?;
        let condition =
            parse(&b.condition).map_err(|e| ApiError::bad(format!("condition: {e}")))?;
        let saved = store.segment_conditions()?;
        match (editing, store.segment_version(&name)?.is_some()) {
            (false, true) => {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!("segment '{name}' already exists (PUT /v1/segments/{name} edits it)"),
                ))
            }
            (true, false) => return Err(ApiError::not_found(format!("no segment '{name}'"))),
            _ => {}
        }
        check_references(&name, &condition, &saved)
            .map_err(|e| ApiError::bad(format!("condition: {e}")))?;
        check_types(app, &name, &condition, &saved)?;
        store.save_segment(&name, &condition, b.description.as_deref(), editing)?;
        Ok(name)
    })
    .await?;
    take_in(&app).await?;
    let status = if editing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    with_store(app, &headers, move |app, store| {
        let out = describe(app, &find(store, &name)?);
        Ok((status, axum::Json(out)).into_response())
    })
    .await
}

pub(crate) async fn delete_segment(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &headers)?;
    blocking(&app, move |_, store| {
        if store.delete_segment(&name)? {
            tracing::info!(segment = %name, "segment deleted");
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no segment '{name}'")))
        }
    })
    .await?;
    take_in(&app).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Takes the stored segments in between two commits, backfilled off the writer, and
/// waits until they are installed. One change at a time: each is planned against the
/// definitions the last installed.
async fn take_in(app: &Arc<App>) -> Result<(), ApiError> {
    let one_at_a_time = app.redefining.lock().await;
    let (reply, done) = oneshot::channel();
    app.counters
        .queue_depth
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if app.jobs.send(Job::Redefine(reply)).await.is_err() {
        return Err(ApiError::shutting_down());
    }
    let installed = done.await;
    drop(one_at_a_time);
    match installed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(ApiError::internal(message)),
        Err(_) => Err(ApiError::shutting_down()),
    }
}

/// Refuses a condition with a type error (a number compared with a text, an unknown
/// metric, ...) by compiling it for streaming with the segments it refers to. A condition
/// that only cannot stream (RFM, CLV) is accepted and evaluated in batch.
fn check_types(
    app: &App,
    name: &str,
    condition: &Condition,
    saved: &BTreeMap<String, Condition>,
) -> Result<(), ApiError> {
    let mut needed: Vec<(String, Condition)> = Vec::new();
    let mut todo = vec![condition.clone()];
    while let Some(c) = todo.pop() {
        for r in c.segment_refs() {
            if let Some(s) = saved.get(r) {
                if !needed.iter().any(|(n, _)| n == r) {
                    needed.push((r.to_string(), s.clone()));
                    todo.push(s.clone());
                }
            }
        }
    }
    // Referenced segments first.
    needed.reverse();
    needed.push((name.to_string(), condition.clone()));
    let e = app.live.lock().expect("live state lock");
    match Streaming::new(&needed, &e.profiles, app.stream.clone(), Timestamp(0)) {
        Ok(_) | Err(StreamError::NotStreamable { .. }) => Ok(()),
        Err(StreamError::Eval {
            source: microseg_engine::EvalError::UnknownSegment(_),
            ..
        }) => Ok(()),
        Err(e) => Err(ApiError::bad(format!("condition: {e}"))),
    }
}

pub(crate) async fn members(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &headers)?;
    let e = app.live.lock().expect("live state lock");
    match e.streaming.members(&name) {
        Some(m) => {
            let ids: Vec<&str> = m.iter().map(|p| e.profiles.external_ids.get(p)).collect();
            Ok(axum::Json(json!({"segment": name, "as_of": e.streaming.clock().to_string(), "size": ids.len(), "members": ids}))
                .into_response())
        }
        None => Err(ApiError::not_found(format!(
            "no streaming segment '{name}'"
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct OverlapQuery {
    /// Comma-separated segment names.
    segments: String,
}

pub(crate) async fn overlap(
    State(app): State<Arc<App>>,
    Query(q): Query<OverlapQuery>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &headers)?;
    let names: Vec<&str> = q.segments.split(',').map(str::trim).collect();
    if names.len() < 2 {
        return Err(ApiError::bad(
            "segments: give at least two names, comma separated",
        ));
    }
    let e = app.live.lock().expect("live state lock");
    let mut sets = Vec::new();
    for n in &names {
        match e.streaming.members(n) {
            Some(m) => sets.push(m.clone()),
            None => return Err(ApiError::not_found(format!("no streaming segment '{n}'"))),
        }
    }
    let matrix = microseg_engine::analytics::overlaps(&sets);
    let mut pairs = Vec::new();
    for (i, row) in matrix.iter().enumerate() {
        for (j, o) in row.iter().enumerate().skip(i + 1) {
            pairs.push(json!({"a": names[i], "b": names[j], "intersection": o.intersection, "jaccard": o.jaccard}));
        }
    }
    let segments: Vec<Json> = names
        .iter()
        .zip(&sets)
        .map(|(n, s)| json!({"name": n, "size": s.len()}))
        .collect();
    Ok(axum::Json(
        json!({"as_of": e.streaming.clock().to_string(), "segments": segments, "pairs": pairs}),
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExplainQuery {
    /// The profile's external id.
    profile: String,
}

/// Why a profile is or is not in a streaming segment, node by node, evaluated by the
/// batch evaluator on that profile alone (its traits, its events and those of profiles
/// merged into it) at the streaming clock.
pub(crate) async fn explain(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<ExplainQuery>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let s = find(store, &name)?;
        let (p, traits, member, as_of) = {
            let e = app.live.lock().expect("live state lock");
            let Some(members) = e.streaming.members(&name) else {
                return Err(ApiError::bad(format!(
                    "segment '{name}' is evaluated in batch only: use `microseg segment explain`"
                )));
            };
            let p = live_profile(&e, &q.profile)?;
            let traits: Vec<(String, Value)> = e
                .profiles
                .columns
                .iter()
                .filter_map(|(k, c)| Some((k.clone(), c.get(p)?)))
                .collect();
            (p, traits, members.contains(p), e.streaming.clock())
        };
        let config = app.workspace.config.metrics_config();
        let one = OneProfile::load(store, &config, p, &q.profile, &traits, as_of)?;
        let dataset = one.dataset();
        let e = dataset
            .explain(&s.condition, 0)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(axum::Json(json!({
            "segment": name,
            "profile": q.profile,
            "as_of": as_of.to_string(),
            "member": member,
            "explanation": explanation_json(&e),
        }))
        .into_response())
    })
    .await
}

fn explanation_json(e: &microseg_engine::Explanation) -> Json {
    json!({
        "condition": e.condition,
        "matched": e.matched,
        "saw": if e.saw.is_empty() { None } else { Some(&e.saw) },
        "children": e.children.iter().map(explanation_json).collect::<Vec<_>>(),
    })
}

/// The dense id of a live profile, or why there is none.
fn live_profile(e: &crate::pipeline::Live, id: &str) -> Result<u32, ApiError> {
    let p = e
        .profiles
        .find(id)
        .ok_or_else(|| ApiError::not_found(format!("no profile '{id}'")))?;
    if e.retired.contains(p) {
        return Err(ApiError::not_found(format!(
            "profile '{id}' was merged into another by alias"
        )));
    }
    Ok(p)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProfileQuery {
    /// How many recent events to include (default 20, at most 1000).
    events: Option<usize>,
}

/// `DELETE /v1/profiles/{id}`: erases the person (see `microseg_store::erase`) between
/// two commits; answers once the store and the in-memory state have forgotten them.
pub(crate) async fn erase_profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &headers)?;
    let (reply, done) = oneshot::channel();
    app.counters
        .queue_depth
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if app.jobs.send(Job::Erase(id, reply)).await.is_err() {
        return Err(ApiError::shutting_down());
    }
    let erased = done.await.map_err(|_| ApiError::shutting_down())??;
    // The copies outside the store (snapshots, import logs): file work, off the writer.
    let workspace = app.workspace.clone();
    let erased = tokio::task::spawn_blocking(move || {
        erased.forget_copies(&workspace);
        erased
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(axum::Json(json!({
        "erased": true,
        "profiles": erased.profiles.len(),
        "events": erased.events,
        "identities": erased.identities,
    }))
    .into_response())
}

pub(crate) async fn profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let (p, mut out, as_of) = {
            let e = app.live.lock().expect("live state lock");
            let p = live_profile(&e, &id)?;
            let traits: serde_json::Map<String, Json> = e
                .profiles
                .columns
                .iter()
                .filter_map(|(k, c)| Some((k.clone(), c.get(p)?.to_json())))
                .collect();
            let metrics: serde_json::Map<String, Json> = OWN_METRIC_NAMES
                .iter()
                .filter_map(|&m| {
                    let v = e.streaming.own_metric(p, m)?;
                    Some((m.to_string(), v.map_or(Json::Null, |v| v.to_json())))
                })
                .collect();
            let out = json!({
                "id": id,
                "as_of": e.streaming.clock().to_string(),
                "traits": traits,
                "metrics": metrics,
                "segments": e
                    .streaming
                    .segments_of(p)
                    .into_iter()
                    .filter(|s| !crate::decide::is_campaign_audience(s))
                    .collect::<Vec<_>>(),
            });
            (p, out, e.streaming.clock())
        };
        let limit = q.events.unwrap_or(20).min(1000);
        let events: Vec<Json> = store
            .recent_events(p, as_of, limit)?
            .into_iter()
            .map(|e| {
                json!({"time": e.time.to_string(), "event": e.name, "revenue": e.revenue, "properties": e.properties})
            })
            .collect();
        out["recent_events"] = json!(events);
        Ok(axum::Json(out).into_response())
    })
    .await
}

/// The body of a webhook subscription.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    /// Where to POST (`http://host:port/path`).
    url: String,
    /// Only these segments' changes (default: every segment).
    segments: Option<Vec<String>>,
}

pub(crate) async fn create_webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    admin(&app, &headers)?;
    let b: WebhookBody =
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    let target =
        crate::outbound::parse_url(&b.url).map_err(|e| ApiError::bad(format!("url: {e}")))?;
    // Checked now (the answer says why) and again before every delivery.
    app.outbound
        .resolve(&target)
        .await
        .map_err(|e| ApiError::bad(format!("url: {e}")))?;
    let created = blocking(&app, move |_, store| {
        if let Some(names) = &b.segments {
            let saved = store.segment_conditions()?;
            if let Some(n) = names.iter().find(|n| !saved.contains_key(*n)) {
                return Err(ApiError::bad(format!("segments: no segment '{n}'")));
            }
        }
        Ok(store.create_webhook(&b.url, b.segments.as_deref())?)
    })
    .await?;
    let hook = created;
    let out =
        json!({"id": hook.id, "url": hook.url, "segments": hook.segments, "secret": hook.secret});
    app.start_webhook(hook);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

pub(crate) async fn list_webhooks(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    with_store(app, &headers, |_, store| {
        let list: Vec<Json> = store
            .webhooks()?
            .into_iter()
            .map(|h| json!({"id": h.id, "url": h.url, "segments": h.segments}))
            .collect();
        Ok(axum::Json(json!({"webhooks": list})).into_response())
    })
    .await
}

pub(crate) async fn delete_webhook(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        if !store.delete_webhook(id)? {
            return Err(ApiError::not_found(format!("no webhook {id}")));
        }
        if let Some(task) = app.hooks.lock().expect("hooks lock").remove(&id) {
            task.abort();
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

pub(crate) async fn changes(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    admin(&app, &headers)?;
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
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
