//! What `serve` does for campaigns besides deciding: fires triggered campaigns from the
//! membership changes as the evaluator publishes them (an event that makes a person enter
//! a segment, or a deadline that passes: "no order within 3 days" fires at the deadline),
//! and delivers the outbox continuously, as `microseg deliver` does once.
//!
//! Triggers follow the live stream: a change the trigger worker could not keep up with
//! (the stream overran it) or one published just before a crash is not fired again
//! (counted in `/metrics`, `microseg_triggers_dropped_total`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use microseg_activate::decide::{Sent, Trigger};
use microseg_activate::deliver::{deliver, DeliverOptions};
use microseg_activate::run::{HOLDOUT, TREATED};
use microseg_activate::Person;
use microseg_store::tracking::{Action, Message};
use microseg_store::Store;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::decide::{live_person, LivePerson};
use crate::pipeline::PublishedChange;
use crate::{now, App};

/// How often the outbox is looked at for due messages.
const DELIVERY_EVERY: Duration = Duration::from_secs(1);

/// Follows the published changes until the server stops; hands each entry into a
/// segment that triggers campaigns to the worker thread.
pub(crate) async fn follow(
    app: Arc<App>,
    mut changes: broadcast::Receiver<PublishedChange>,
    fire: std::sync::mpsc::Sender<(String, Vec<String>)>,
) {
    let mut stop = app.stopping.clone();
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        match change {
            Ok(c) if c.kind == "entered" => {
                let decider = app.decisions.decider();
                let campaigns: Vec<String> = decider
                    .triggered_by(&c.segment)
                    .map(str::to_string)
                    .collect();
                if !campaigns.is_empty() && fire.send((c.profile, campaigns)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                app.counters
                    .triggers_dropped
                    .fetch_add(n, Ordering::Relaxed);
                tracing::warn!(missed = n, "trigger worker fell behind the change stream");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Fires the campaigns each entry triggers (the run's rules for one person) and queues
/// their messages, until the server stops.
pub(crate) fn fire(app: Arc<App>, entries: std::sync::mpsc::Receiver<(String, Vec<String>)>) {
    let mut store: Option<Store> = None;
    loop {
        // Stops with the server (it holds the app, which holds the writer's queue: the
        // writer only finishes once every holder lets go).
        let (id, campaigns) = match entries.recv_timeout(Duration::from_millis(100)) {
            Ok(entry) => entry,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if *app.stopping.borrow() {
                    return;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if store.is_none() {
            store = Store::open(&app.workspace)
                .map_err(|e| tracing::error!(error = %e, "triggers: store not opened"))
                .ok();
        }
        let Some(s) = store.as_mut() else { continue };
        let decider = app.decisions.decider();
        for name in &campaigns {
            let at = now();
            let audiences = decider.campaign_audiences(name);
            let LivePerson { p, one, live } = match live_person(&app, &id, &audiences) {
                Ok(person) => person,
                Err(_) => continue, // erased or merged meanwhile
            };
            let external = one.external_ids.get(0).to_string();
            let person = Person {
                profiles: &one,
                metrics: None,
                p: 0,
                id: &external,
                as_of: at,
            };
            let fired = decider.fire(
                name,
                person,
                p,
                &mut |audience, _| Ok(live.get(audience).copied()),
                &mut Sent::new(s.outbox(), p),
            );
            let result = fired.and_then(|f| match f {
                Trigger::Send(f) => {
                    let queued = decider.queue(s, &f, at)?;
                    if queued {
                        s.record_campaign_members(name, &[(p, TREATED, at.0)])?;
                    }
                    Ok(Some(queued))
                }
                Trigger::Holdout => {
                    s.record_campaign_members(name, &[(p, HOLDOUT, at.0)])?;
                    Ok(None)
                }
                Trigger::Skip(reason) => {
                    tracing::debug!(campaign = %name, profile = p, %reason, "trigger not sent");
                    Ok(None)
                }
            });
            match result {
                Ok(Some(true)) => {
                    app.counters.triggered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(campaign = %name, error = %e, "trigger not queued"),
            }
        }
    }
}

/// Delivers the outbox every [`DELIVERY_EVERY`] until the server stops, holding the
/// delivery lock (while `microseg deliver` holds it, this waits).
pub(crate) fn deliver_loop(app: Arc<App>) {
    let mut lock = None;
    let mut store: Option<Store> = None;
    let mut last_error = String::new();
    while !*app.stopping.borrow() {
        std::thread::sleep(DELIVERY_EVERY);
        if lock.is_none() {
            match app.workspace.lock_delivery("microseg serve") {
                Ok(l) => lock = Some(l),
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::warn!(error = %text, "not delivering while another process does");
                        last_error = text;
                    }
                    continue;
                }
            }
        }
        if store.is_none() {
            store = Store::open(&app.workspace).ok();
        }
        let Some(s) = store.as_mut() else { continue };
        match deliver(&app.workspace, s, DeliverOptions::default()) {
            Ok(delivered) => {
                let c = delivered.counts;
                if !delivered.events.is_empty() {
                    // message_sent events, through the writer like any tracked event.
                    let (reply, _) = tokio::sync::oneshot::channel();
                    let job = crate::pipeline::Job::Write(crate::pipeline::WriteJob {
                        messages: delivered.events,
                        received: now(),
                        reply,
                    });
                    app.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
                    if app.jobs.blocking_send(job).is_err() {
                        return;
                    }
                }
                if c.sent + c.failed + c.dead + c.cancelled > 0 {
                    tracing::info!(
                        sent = c.sent,
                        failed = c.failed,
                        dead = c.dead,
                        cancelled = c.cancelled,
                        pending = c.pending,
                        "delivered"
                    );
                }
                app.counters.delivered.fetch_add(c.sent, Ordering::Relaxed);
                last_error.clear();
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, "delivery");
                    last_error = text;
                }
            }
        }
    }
}

/// How often the schedules are looked at.
const SCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// Runs each active scheduled campaign when its slot comes (`{"at": T}` once,
/// `{"every": P}` once per period), until the server stops. A slot already run (by this
/// process or, through the idempotency keys, by an earlier one) queues nothing twice.
pub(crate) fn schedules(app: Arc<App>) {
    let mut done = std::collections::HashSet::new();
    let mut store: Option<Store> = None;
    while !*app.stopping.borrow() {
        std::thread::sleep(SCHEDULE_EVERY);
        if store.is_none() {
            store = Store::open(&app.workspace).ok();
        }
        let Some(s) = store.as_mut() else { continue };
        let campaigns = match s.campaigns() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "schedules: campaigns not read");
                continue;
            }
        };
        for stored in campaigns {
            if stored.status != "active" {
                continue;
            }
            let Some(schedule) = microseg_activate::Campaign::from_json(&stored.body)
                .ok()
                .and_then(|c| c.schedule)
                .and_then(|v| microseg_activate::campaign::Schedule::read(&v).ok())
            else {
                continue;
            };
            let at = now();
            let Some(slot) = schedule.due(stored.version, at) else {
                continue;
            };
            if !done.insert(format!("{}/{slot}", stored.name)) {
                continue;
            }
            match microseg_activate::run::run_in_slot(&app.workspace, s, &stored, at, false, &slot)
            {
                Ok(outcome) => tracing::info!(
                    campaign = %stored.name,
                    %slot,
                    targeted = outcome.counts.targeted,
                    queued = outcome.counts.queued,
                    "scheduled run"
                ),
                Err(e) => {
                    tracing::warn!(campaign = %stored.name, %slot, error = %e, "scheduled run failed")
                }
            }
        }
    }
}

/// The query of `/v1/unsubscribe`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct UnsubscribeQuery {
    /// The signed token of the link.
    t: String,
}

/// `GET /v1/unsubscribe?t=TOKEN`: a page with one button that POSTs (a GET changes
/// nothing: mail scanners follow links).
pub(crate) async fn unsubscribe_page(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    crate::error::Query(q): crate::error::Query<UnsubscribeQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if microseg_activate::unsubscribe::verify(&app.unsubscribe_secret, &q.t).is_none() {
        return crate::error::ApiError::bad("t: not a valid unsubscribe link").into_response();
    }
    // The token is [0-9a-z.] only (checked above), safe in the page.
    axum::response::Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post action=\"?t={}\"><p>Stop these messages?</p>\
         <button type=submit>Unsubscribe</button></form>",
        q.t
    ))
    .into_response()
}

/// `POST /v1/unsubscribe?t=TOKEN` (RFC 8058 one-click; no login, no redirect): sets the
/// person's `consent_<channel>` to false through the writer, answered once committed.
pub(crate) async fn unsubscribe(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    crate::error::Query(q): crate::error::Query<UnsubscribeQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some((p, channel)) = microseg_activate::unsubscribe::verify(&app.unsubscribe_secret, &q.t)
    else {
        return crate::error::ApiError::bad("t: not a valid unsubscribe link").into_response();
    };
    let external = {
        let live = app.live.lock().expect("live state lock");
        ((p as usize) < live.profiles.len() && !live.retired.contains(p))
            .then(|| live.profiles.external_ids.get(p).to_string())
    };
    let Some(external) = external else {
        // Erased or merged: nothing left to change.
        return "unsubscribed\n".into_response();
    };
    let mut traits = serde_json::Map::new();
    traits.insert(
        format!("consent_{}", channel.name()),
        serde_json::Value::Bool(false),
    );
    let change = Message::about(&external, None, Action::Traits(traits));
    match write_committed(&app, change).await {
        Ok(()) => {
            tracing::info!(profile = p, channel = channel.name(), "unsubscribed");
            format!("unsubscribed from {}\n", channel.name()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Writes `message` through the writer and waits for its commit.
async fn write_committed(app: &App, message: Message) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    let (reply, done) = tokio::sync::oneshot::channel();
    let job = crate::pipeline::Job::Write(crate::pipeline::WriteJob {
        messages: vec![message],
        received: now(),
        reply,
    });
    app.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
    if app.jobs.send(job).await.is_err() {
        return Err(ApiError::shutting_down());
    }
    done.await
        .unwrap_or_else(|_| Err(ApiError::shutting_down()))
}

/// A channel's report about a message (`POST /v1/message-events`): what happened, and
/// which message (its idempotency key, as the provider echoes it) or which address.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageReport {
    /// `delivered`, `opened`, `clicked`, `soft_bounce`, `hard_bounce` or `complaint`.
    #[serde(rename = "type")]
    kind: String,
    /// The message's idempotency key.
    idempotency_key: Option<String>,
    /// Without a key: `email` or `sms`.
    channel: Option<String>,
    /// Without a key: the address.
    address: Option<String>,
}

/// `POST /v1/message-events` (admin token, for the provider's webhook or a bounce-mailbox
/// reader). With the message's key, the person gets the event `message_delivered`,
/// `message_opened`, `message_clicked`, `message_bounced` (property `bounce`: `hard` or
/// `soft`) or `message_complained` (with `campaign`, `variant`, `channel`), committed
/// before the answer. A hard bounce or a complaint also puts the address on the channel's
/// suppression list at once (with a key: the person's current address); a soft bounce
/// changes nothing else (the provider retries).
pub(crate) async fn message_event(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    headers: axum::http::HeaderMap,
    crate::error::Body(raw): crate::error::Body,
) -> crate::admin::Answer {
    use crate::error::ApiError;
    use axum::response::IntoResponse;
    crate::admin::admin(&app, &headers)?;
    let report: MessageReport =
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    let (event, bounce, suppress) = match report.kind.as_str() {
        "delivered" => ("message_delivered", None, false),
        "opened" => ("message_opened", None, false),
        "clicked" => ("message_clicked", None, false),
        "soft_bounce" => ("message_bounced", Some("soft"), false),
        "hard_bounce" => ("message_bounced", Some("hard"), true),
        "complaint" => ("message_complained", None, true),
        other => {
            return Err(ApiError::bad(format!(
                "type: '{other}' (use delivered, opened, clicked, soft_bounce, hard_bounce or complaint)"
            )))
        }
    };
    // The message and its person, or the address alone.
    let key = report.idempotency_key.clone();
    let found = crate::admin::blocking(&app, move |_, store| match &key {
        Some(k) => store
            .outbox()
            .message_by_key(k)?
            .map(Some)
            .ok_or_else(|| ApiError::not_found(format!("idempotency_key: no message '{k}'"))),
        None => Ok(None),
    })
    .await?;
    let (channel, address) = match (&found, &report.channel, &report.address) {
        (Some(m), _, _) => {
            let channel = microseg_activate::Channel::from_name(&m.channel)
                .ok_or_else(|| ApiError::internal("a message of an unknown channel"))?;
            let trait_name = microseg_activate::suppress::address_trait(channel);
            let live = app.live.lock().expect("live state lock");
            let address = trait_name.and_then(|t| {
                live.profiles
                    .columns
                    .get(t)
                    .and_then(|c| c.get(m.profile_id))
                    .and_then(|v| match v {
                        microseg_core::Value::Str(s) => Some(s.to_string()),
                        _ => None,
                    })
            });
            (channel, address)
        }
        (None, Some(c), Some(a)) => (
            microseg_activate::Channel::from_name(c)
                .filter(|c| {
                    matches!(
                        c,
                        microseg_activate::Channel::Email | microseg_activate::Channel::Sms
                    )
                })
                .ok_or_else(|| ApiError::bad(format!("channel: '{c}' (use email or sms)")))?,
            Some(a.clone()),
        ),
        (None, ..) => {
            return Err(ApiError::bad(
                "give idempotency_key, or channel and address",
            ))
        }
    };
    let mut suppressed = false;
    if suppress {
        if let Some(address) = address {
            let kind = report.kind.clone();
            suppressed = crate::admin::blocking(&app, move |_, store| {
                store.suppress(
                    channel.name(),
                    &microseg_activate::suppress::hash(channel, &address),
                    Some(&kind),
                )?;
                Ok(true)
            })
            .await?;
        }
    }
    let mut recorded = false;
    if let Some(m) = found {
        let external = {
            let live = app.live.lock().expect("live state lock");
            (!live.retired.contains(m.profile_id) && (m.profile_id as usize) < live.profiles.len())
                .then(|| live.profiles.external_ids.get(m.profile_id).to_string())
        };
        if let Some(external) = external {
            let mut props = serde_json::Map::new();
            props.insert("campaign".into(), m.campaign.into());
            props.insert("variant".into(), m.variant.into());
            props.insert("channel".into(), m.channel.into());
            if let Some(b) = bounce {
                props.insert("bounce".into(), b.into());
            }
            let report = Message::about(&external, None, Action::event(event, props));
            write_committed(&app, report).await?;
            recorded = true;
        }
    }
    Ok(axum::Json(
        serde_json::json!({"event": recorded.then_some(event), "suppressed": suppressed}),
    )
    .into_response())
}
