//! `GET /v1/decide`: what a person gets now on a channel or a website placement, for web
//! pages and apps (write key; CORS for the origins of `[server] cors_origins`).
//!
//! Membership comes from the streaming evaluator, so a decision reflects the event that
//! just arrived: campaigns' target and exclusion segments are kept live (a saved segment
//! under its name, a condition written in the campaign file under
//! `campaign:NAME:segment` / `campaign:NAME:exclude.I`, never published); a campaign
//! whose audience cannot stream (batch-only, or still being taken in after a change)
//! loses as `not live`. Templates see the person's traits and their own metrics as the
//! streaming evaluator keeps them (`visits` only when a segment uses it; the RFM scores,
//! relative to everyone, not at all). Caps come from the outbox. Each decision with a winner is recorded as a `decision_served` event (campaign,
//! variant, channel, placement) for results to count; recording goes through the writer
//! without waiting for the commit, and a full queue drops it (counted in `/metrics`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use microseg_activate::decide::Sent;
use microseg_activate::decide::LIVE_PREFIX;
use microseg_activate::{Channel, Decider, Decision, Person, Slot};
use microseg_core::condition::Condition;
use microseg_core::ProfileId;
use microseg_engine::metrics::{metric_type, OWN_METRIC_NAMES};
use microseg_store::tracking::{Action, Message};
use microseg_store::{Store, StoreError, Workspace};
use serde::Deserialize;
use serde_json::{json, Map};

use crate::error::{ApiError, Query};
use crate::pipeline::{Job, WriteJob};
use crate::{now, App};

/// The campaigns as last read, and store connections for the outbox and the events.
pub(crate) struct Decisions {
    decider: RwLock<Arc<Decider>>,
    /// The store's activation fingerprint `decider` was read at.
    fingerprint: Mutex<String>,
    /// Idle store connections (one is taken per decision that reads the store).
    stores: Mutex<Vec<Store>>,
}

impl Decisions {
    /// Reads the campaigns of `store`; with refused `[activation]` settings, none (and
    /// the reason is logged).
    pub(crate) fn load(workspace: &Workspace, store: &Store) -> Result<Decisions, StoreError> {
        let fingerprint = store.activation_fingerprint()?;
        Ok(Decisions {
            decider: RwLock::new(Arc::new(read_decider(workspace, store)?)),
            fingerprint: Mutex::new(fingerprint),
            stores: Mutex::default(),
        })
    }

    /// The campaigns now.
    pub(crate) fn decider(&self) -> Arc<Decider> {
        self.decider.read().expect("decider lock").clone()
    }

    /// Reads the campaigns again if they (or a suppression list) changed; true when they
    /// did.
    pub(crate) fn refresh(&self, workspace: &Workspace, store: &Store) -> Result<bool, StoreError> {
        let fingerprint = store.activation_fingerprint()?;
        if *self.fingerprint.lock().expect("fingerprint lock") == fingerprint {
            return Ok(false);
        }
        let fresh = read_decider(workspace, store)?;
        *self.decider.write().expect("decider lock") = Arc::new(fresh);
        *self.fingerprint.lock().expect("fingerprint lock") = fingerprint;
        Ok(true)
    }

    fn take_store(&self, workspace: &Workspace) -> Result<Store, StoreError> {
        match self.stores.lock().expect("stores lock").pop() {
            Some(s) => Ok(s),
            None => Store::open(workspace),
        }
    }

    fn give_back(&self, store: Store) {
        let mut idle = self.stores.lock().expect("stores lock");
        if idle.len() < 16 {
            idle.push(store);
        }
    }
}

fn read_decider(workspace: &Workspace, store: &Store) -> Result<Decider, StoreError> {
    match Decider::load(workspace, store) {
        Ok(d) => Ok(d),
        Err(microseg_activate::run::RunError::Store(e)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "campaigns not loaded: no campaign wins a decision");
            Ok(Decider::empty())
        }
    }
}

/// The segments the streaming evaluator keeps: the saved ones, then the campaigns' own
/// audiences.
pub(crate) fn live_definitions(
    workspace: &Workspace,
    store: &Store,
) -> Result<Vec<(String, Condition)>, StoreError> {
    let mut out: Vec<(String, Condition)> = store
        .segments()?
        .into_iter()
        .map(|s| (s.name, s.condition))
        .collect();
    out.extend(read_decider(workspace, store)?.live_audiences());
    Ok(out)
}

/// Whether a segment name is a campaign's own audience (kept live, never published).
pub(crate) fn is_campaign_audience(name: &str) -> bool {
    name.starts_with(LIVE_PREFIX)
}

/// The query of `GET /v1/decide`.
#[derive(Debug, Deserialize)]
pub(crate) struct DecideQuery {
    /// The person's external id.
    profile: String,
    /// A channel: email, sms, push, web, webhook.
    channel: Option<String>,
    /// A website placement.
    placement: Option<String>,
}

/// The CORS headers for a request from `origin`, when `[server] cors_origins` allows it.
fn cors(app: &App, headers: &HeaderMap) -> Vec<(header::HeaderName, HeaderValue)> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Vec::new();
    };
    let allowed = &app.workspace.config.server.cors_origins;
    let ok = allowed
        .iter()
        .any(|a| a == "*" || origin.to_str().is_ok_and(|o| o == a));
    if !ok {
        return Vec::new();
    }
    vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization"),
        ),
        (
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        ),
    ]
}

fn with_headers(mut r: Response, extra: Vec<(header::HeaderName, HeaderValue)>) -> Response {
    r.headers_mut().extend(extra);
    r
}

/// `OPTIONS /v1/decide`: a browser's preflight, answered 204 with the CORS headers for
/// an allowed origin and without them (so the browser stops) for another.
pub(crate) async fn preflight(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    with_headers(StatusCode::NO_CONTENT.into_response(), cors(&app, &headers))
}

/// `GET /v1/decide`.
pub(crate) async fn decide(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<DecideQuery>, ApiError>,
) -> Response {
    let extra = cors(&app, &headers);
    let answer = async {
        crate::http::write_key(&app, &headers, None)?;
        let Query(q) = query?;
        let slot = slot(&q)?;
        let app2 = app.clone();
        let decision = tokio::task::spawn_blocking(move || decide_now(&app2, &q.profile, &slot))
            .await
            .map_err(ApiError::internal)??;
        Ok::<_, ApiError>(decision)
    }
    .await;
    let response = match answer {
        Ok(decision) => {
            app.counters.decisions.fetch_add(1, Ordering::Relaxed);
            axum::Json(decision).into_response()
        }
        Err(e) => {
            app.counters.count_rejection(e.kind.status().as_u16());
            e.into_response()
        }
    };
    with_headers(response, extra)
}

fn slot(q: &DecideQuery) -> Result<Slot, ApiError> {
    match (&q.channel, &q.placement) {
        (Some(c), None) => Channel::from_name(c).map(Slot::Channel).ok_or_else(|| {
            ApiError::bad(format!(
                "channel: '{c}' is not a channel (use email, sms, push, web or webhook)"
            ))
        }),
        (None, Some(p)) if !p.is_empty() && p.len() <= 100 => Ok(Slot::Placement(p.clone())),
        (None, Some(_)) => Err(ApiError::bad("placement: 1 to 100 characters")),
        _ => Err(ApiError::bad("give channel or placement (one of them)")),
    }
}

/// A person as the server knows them now: their dense id, their row (every trait, and
/// their own metrics as columns) alone in a table, and their membership of the live
/// audiences asked about (one not live is absent).
pub(crate) struct LivePerson {
    pub(crate) p: ProfileId,
    pub(crate) one: microseg_engine::ProfileTable,
    pub(crate) live: HashMap<String, bool>,
}

/// [`LivePerson`] of external id `id`, read under the live-state lock.
pub(crate) fn live_person(
    app: &App,
    id: &str,
    audiences: &[(&str, &Condition)],
) -> Result<LivePerson, ApiError> {
    let live = app.live.lock().expect("live state lock");
    let p = live
        .ids
        .get(id)
        .copied()
        .filter(|&p| !live.retired.contains(p))
        .ok_or_else(|| ApiError::not_found(format!("no profile '{id}'")))?;
    let known: HashMap<String, bool> = audiences
        .iter()
        .filter_map(|(name, _)| Some((name.to_string(), live.streaming.members(name)?.contains(p))))
        .collect();
    let mut one = live.profiles.person(p);
    for name in OWN_METRIC_NAMES {
        if one.columns.contains_key(*name) {
            continue;
        }
        if let (Some(value), Some(ty)) = (live.streaming.own_metric(p, name), metric_type(name)) {
            one.set_trait(0, name, ty, value.as_ref());
        }
    }
    Ok(LivePerson {
        p,
        one,
        live: known,
    })
}

/// Decides for `id` now, and records the exposure.
fn decide_now(app: &App, id: &str, slot: &Slot) -> Result<Decision, ApiError> {
    let decider = app.decisions.decider();
    let at = now();
    let LivePerson { p, one, live } = live_person(app, id, &decider.audiences(slot))?;
    let external = one.external_ids.get(0).to_string();
    let person = Person {
        profiles: &one,
        metrics: None,
        p: 0,
        id: &external,
        as_of: at,
    };
    let store = app.decisions.take_store(&app.workspace)?;
    let decision = decider.decide(
        person,
        slot,
        &mut |name, _| Ok(live.get(name).copied()),
        &mut Sent::new(store.outbox(), p),
    );
    app.decisions.give_back(store);
    let decision = decision?;
    if let Some(w) = &decision.winner {
        record_exposure(app, &external, w, slot, at);
    }
    Ok(decision)
}

/// Queues a `decision_served` event for the person, without waiting for its commit.
fn record_exposure(
    app: &App,
    external: &str,
    w: &microseg_activate::decide::Winner,
    slot: &Slot,
    at: microseg_core::Timestamp,
) {
    let mut props = Map::new();
    props.insert("campaign".into(), json!(w.campaign));
    props.insert("variant".into(), json!(w.variant));
    props.insert("channel".into(), json!(w.channel));
    if let Slot::Placement(name) = slot {
        props.insert("placement".into(), json!(name));
    }
    let message = Message::about(external, Some(at), Action::event("decision_served", props));
    let (reply, _) = tokio::sync::oneshot::channel();
    let job = Job::Write(WriteJob {
        messages: vec![message],
        received: at,
        reply,
    });
    app.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
    if app.jobs.try_send(job).is_err() {
        app.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
        app.counters
            .exposures_dropped
            .fetch_add(1, Ordering::Relaxed);
    }
}
