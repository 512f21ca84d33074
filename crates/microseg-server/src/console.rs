//! The web console: its embedded files at `/` and `/console/*` (no data in them, so
//! open), and one admin endpoint per page under `/v1/console/` answering that page's
//! data in one request ([`microseg_console::views`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use microseg_console::views;
use microseg_console::ConsoleError;
use serde::Deserialize;
use serde_json::json;

use crate::admin::{admin, blocking, Answer};
use crate::error::{ApiError, Body, Path, Query};
use crate::App;

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> ApiError {
        match e {
            ConsoleError::Store(e) => e.into(),
            ConsoleError::Run(e) => e.into(),
            ConsoleError::NotFound(m) => ApiError::not_found(m),
            other => ApiError::bad(other.to_string()),
        }
    }
}

/// Messages ingested per second between two looks at the counter (at least a second
/// apart), for the overview's "ingest rate now".
#[derive(Debug)]
pub(crate) struct IngestRate(Mutex<(Instant, u64, f64)>);

impl Default for IngestRate {
    fn default() -> Self {
        IngestRate(Mutex::new((Instant::now(), 0, 0.0)))
    }
}

impl IngestRate {
    /// The rate since the previous look, or the previous rate when that was under a
    /// second ago.
    pub(crate) fn now(&self, ingested: u64) -> f64 {
        let mut s = self.0.lock().expect("rate lock");
        let elapsed = s.0.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            s.2 = ingested.saturating_sub(s.1) as f64 / elapsed;
            *s = (Instant::now(), ingested, s.2);
        }
        s.2
    }
}

/// Pages computed at once: each loads the workspace's tables (hundreds of MB on a
/// million customers), so more at a time would only share the two cores and add memory.
pub(crate) const PAGES_AT_ONCE: usize = 2;

/// Answers one console page: the admin check, then `f` on the blocking pool with a store
/// connection once one of [`PAGES_AT_ONCE`] slots is free (others wait their turn).
async fn page(
    app: Arc<App>,
    headers: &HeaderMap,
    f: impl FnOnce(&App, &mut microseg_store::Store) -> Answer + Send + 'static,
) -> Answer {
    admin(&app, headers)?;
    let _slot = app
        .console_pages
        .acquire()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    blocking(&app, f).await
}

/// One of the console's files.
pub(crate) async fn file(uri: axum::http::Uri) -> Response {
    match microseg_console::asset(uri.path()) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                // The console loads only its own files and talks only to this server.
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    page(app, &headers, |app, store| {
        let mut doc = views::overview(&app.workspace, store, crate::now())?;
        let ingested = app.counters.ingested.load(Ordering::Relaxed);
        doc["ingest"] = json!({
            "per_second": app.ingest_rate.now(ingested),
            "since_start": ingested,
        });
        Ok(axum::Json(doc).into_response())
    })
    .await
}

pub(crate) async fn segments(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    page(app, &headers, |app, store| {
        let mut doc = views::segments(&app.workspace, store, crate::now(), 8)?;
        // Sizes now from the streaming state where the segment streams.
        let e = app.live.lock().expect("live state lock");
        for s in doc["segments"].as_array_mut().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            s["streaming"] = json!(e.streaming.members(&name).is_some());
            if let Some(m) = e.streaming.members(&name) {
                s["live_size"] = json!(m.len());
            }
        }
        Ok(axum::Json(doc).into_response())
    })
    .await
}

/// The body of `POST /v1/console/size`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SizeRequest {
    /// The condition being typed.
    condition: String,
}

pub(crate) async fn size(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    let q: SizeRequest = parse_body(&raw)?;
    if q.condition.len() > 64 * 1024 {
        return Err(ApiError::bad("condition: longer than 64 KiB"));
    }
    page(app, &headers, move |app, store| {
        let doc = views::size(&app.workspace, store, crate::now(), &q.condition)?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}

/// The query of `GET /v1/console/explore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExploreQuery {
    segments: Option<String>,
    by: Option<String>,
    within: Option<String>,
    metrics: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::bad(format!("body: {e}")))
}

fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) async fn explore(
    State(app): State<Arc<App>>,
    Query(q): Query<ExploreQuery>,
    headers: HeaderMap,
) -> Answer {
    let request = views::Explore {
        segments: list(q.segments.as_deref()),
        by: list(q.by.as_deref()),
        within: q.within.filter(|w| !w.is_empty()),
        metrics: list(q.metrics.as_deref()),
    };
    if request.by.len() > 4 || request.segments.len() > 20 || request.metrics.len() > 20 {
        return Err(ApiError::bad(
            "at most 4 dimensions, 20 segments and 20 metrics",
        ));
    }
    page(app, &headers, move |app, store| {
        let doc = views::explore(&app.workspace, store, crate::now(), &request)?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}

pub(crate) async fn profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    page(app, &headers, move |app, store| {
        let doc = views::profile(&app.workspace, store, crate::now(), &id)?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}

/// The body of `POST /v1/console/discover` (docs/api.md).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverRequest {
    /// A condition or saved segment (its rate), or a numeric trait or metric (its mean).
    #[serde(default)]
    target: String,
    /// Search within this saved segment or condition only.
    within: Option<String>,
    /// Dimensions (default every trait but timestamps).
    #[serde(default)]
    dims: Vec<String>,
    /// Fewest members a candidate needs (default 100).
    min_support: Option<u64>,
    /// Most conditions in one segment (1 to 3, default 2).
    max_depth: Option<usize>,
    /// An uplift discovery over this stored experiment instead.
    experiment: Option<String>,
    /// The uplift discovery's treatment arm.
    arm: Option<String>,
    /// The uplift discovery's outcome.
    outcome: Option<String>,
}

pub(crate) async fn discover(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    let q: DiscoverRequest = parse_body(&raw)?;
    let request = views::Discover {
        target: q.target,
        within: q.within.filter(|w| !w.is_empty()),
        dims: q.dims,
        min_support: q.min_support,
        max_depth: q.max_depth,
        uplift: q
            .experiment
            .filter(|e| !e.is_empty())
            .map(|experiment| views::Uplift {
                experiment,
                arm: q.arm.filter(|a| !a.is_empty()),
                outcome: q.outcome.filter(|o| !o.is_empty()),
            }),
    };
    page(app, &headers, move |app, store| {
        let doc = views::discover_view(&app.workspace, store, crate::now(), &request)?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}

/// The query of `GET /v1/console/personas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonasQuery {
    k: Option<usize>,
    features: Option<String>,
}

pub(crate) async fn personas(
    State(app): State<Arc<App>>,
    Query(q): Query<PersonasQuery>,
    headers: HeaderMap,
) -> Answer {
    let features = list(q.features.as_deref());
    page(app, &headers, move |app, store| {
        let doc = views::personas(
            &app.workspace,
            store,
            crate::now(),
            q.k.unwrap_or(4),
            &features,
        )?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}

pub(crate) async fn campaigns(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    page(app, &headers, |_, store| {
        Ok(axum::Json(views::campaigns(store)?).into_response())
    })
    .await
}

/// The query of `GET /v1/console/campaigns/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignQuery {
    /// The attribution window in days (default 7).
    window: Option<f64>,
}

pub(crate) async fn campaign(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<CampaignQuery>,
    headers: HeaderMap,
) -> Answer {
    let window = q.window.unwrap_or(7.0);
    if !(window > 0.0 && window <= 365.0) {
        return Err(ApiError::bad("window: give 0 to 365 days"));
    }
    page(app, &headers, move |app, store| {
        let doc = views::campaign(&app.workspace, store, crate::now(), &name, window, true)?;
        Ok(axum::Json(doc).into_response())
    })
    .await
}
