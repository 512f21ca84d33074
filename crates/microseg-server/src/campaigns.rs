//! The management API of campaigns: the same operations as `microseg campaign ...`
//! (docs/campaigns.md), behind the admin token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use microseg_activate::run::RunError;
use microseg_activate::Campaign;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::admin::{with_store, Answer};
use crate::error::{ApiError, Body, Path, Query};
use crate::App;

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::Store(e) => e.into(),
            RunError::Send(e @ microseg_activate::channels::SendError::Failed { .. }) => {
                ApiError::new(crate::error::ErrorKind::BadGateway, e.to_string())
            }
            other => ApiError::bad(other.to_string()),
        }
    }
}

fn describe(c: &microseg_store::campaigns::StoredCampaign) -> Json {
    json!({
        "name": c.name,
        "version": c.version,
        "status": c.status,
        "campaign": serde_json::from_str::<Json>(&c.body).unwrap_or(Json::Null),
    })
}

pub(crate) async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    with_store(app, &headers, |_, store| {
        let list: Vec<Json> = store.campaigns()?.iter().map(describe).collect();
        Ok(axum::Json(json!({ "campaigns": list })).into_response())
    })
    .await
}

pub(crate) async fn show(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |_, store| {
        Ok(axum::Json(describe(&store.campaign(&name)?)).into_response())
    })
    .await
}

/// Checks a campaign file (JSON) and saves it; `edit`: the name in the path.
fn save(store: &mut microseg_store::Store, raw: &[u8], edit: Option<&str>) -> Answer {
    let text = std::str::from_utf8(raw).map_err(|_| ApiError::bad("body: not UTF-8"))?;
    let saved = store.segment_conditions()?;
    let checked = Campaign::from_json(text)
        .and_then(|c| c.check(&saved))
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let name = checked.campaign.name.clone();
    if let Some(path) = edit {
        if path != name {
            return Err(ApiError::bad(format!(
                "name: '{name}' differs from the path's '{path}' (renaming is not supported)"
            )));
        }
    }
    // The server reads no file: a pool's codes are loaded by `microseg campaign create`.
    if checked.campaign.offer.as_ref().is_some_and(|o| o.pooled()) {
        let pool = store.offer_codes(&name)?;
        if pool.given.is_empty() && pool.free.is_empty() {
            return Err(ApiError::bad(
                "offer.pool: the server reads no files; load the pool with \
                 `microseg campaign create --file` (or edit) on the workspace's machine",
            ));
        }
    }
    let body = serde_json::to_string(&checked.campaign).map_err(ApiError::internal)?;
    store.save_campaign(&name, &body, edit.is_some())?;
    let status = if edit.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(describe(&store.campaign(&name)?))).into_response())
}

pub(crate) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    with_store(app, &headers, move |_, store| save(store, &raw, None)).await
}

pub(crate) async fn edit(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(raw): Body,
) -> Answer {
    with_store(app, &headers, move |_, store| {
        save(store, &raw, Some(&name))
    })
    .await
}

/// `POST /v1/campaigns/{name}/{action}`: pause, resume or archive.
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let to = match action.as_str() {
        "pause" => "paused",
        "resume" => "active",
        "archive" => "archived",
        other => {
            return Err(ApiError::not_found(format!(
                "no action '{other}' (pause, resume, archive, run, preview)"
            )))
        }
    };
    with_store(app, &headers, move |_, store| {
        store.set_campaign_status(&name, to)?;
        Ok(axum::Json(describe(&store.campaign(&name)?)).into_response())
    })
    .await
}

/// The query of `POST /v1/campaigns/{name}/run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// Count and render only.
    #[serde(default)]
    dry_run: bool,
}

pub(crate) async fn run(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let stored = store.campaign(&name)?;
        let outcome =
            microseg_activate::run(&app.workspace, store, &stored, crate::now(), q.dry_run)?;
        Ok(axum::Json(json!(outcome.counts)).into_response())
    })
    .await
}

/// The query of `GET /v1/campaigns/{name}/preview`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    /// The person's external id.
    profile: String,
}

/// The query of `POST /v1/campaigns/{name}/test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestQuery {
    /// The person's external id.
    profile: String,
    /// Where to: an e-mail address, or a webhook URL.
    to: Option<String>,
}

pub(crate) async fn test_send(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<TestQuery>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let sent = microseg_activate::test_send(
            &app.workspace,
            store,
            &name,
            &q.profile,
            q.to.as_deref(),
            crate::now(),
        )?;
        Ok(axum::Json(json!(sent)).into_response())
    })
    .await
}

pub(crate) async fn preview(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<PreviewQuery>,
    headers: HeaderMap,
) -> Answer {
    with_store(app, &headers, move |app, store| {
        let preview =
            microseg_activate::preview(&app.workspace, store, &name, &q.profile, crate::now())?;
        Ok(axum::Json(json!(preview)).into_response())
    })
    .await
}
