//! microseg's HTTP server: tracking ingestion (the Segment tracking API) into the durable store, the streaming
//! evaluator kept current per event, membership changes as server-sent events, and the
//! management and operations endpoints. See `docs/api.md`.

mod activation;
mod admin;
mod api;
mod campaigns;
mod console;
pub mod counters;
mod decide;
pub mod error;
mod http;
mod listen;
mod outbound;
pub mod pipeline;
mod rate;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use microseg_core::Timestamp;
use microseg_engine::streaming::{StreamConfig, Streaming};
use microseg_store::ingest::Ingestor;
use microseg_store::keys::KeyKind;
use microseg_store::{Store, StoreError, Workspace};
use tokio::sync::{broadcast, mpsc};

use crate::counters::Counters;
use crate::pipeline::Live;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket or the runtime.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Requests that may wait for the writer before new ones get 503.
    pub queue: usize,
    /// The streaming evaluator's settings.
    pub stream: StreamConfig,
    /// How often the events past `[limits] retention_days` are deleted while running.
    pub retention_every: std::time::Duration,
}

/// The current time.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// The keys the server knows, by the SHA-256 of their secret, as last read from the store.
#[derive(Default)]
pub(crate) struct Keys {
    by_hash: HashMap<String, microseg_store::keys::ApiKey>,
}

/// How often the keys are read again: a key created, revoked or rotated in the store
/// takes effect in a running server within this.
const KEYS_REFRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// What every handler shares.
pub(crate) struct App {
    pub(crate) workspace: Workspace,
    pub(crate) jobs: mpsc::Sender<pipeline::Job>,
    /// The streaming settings (for checking a new segment before saving it).
    pub(crate) stream: StreamConfig,
    pub(crate) live: Arc<Mutex<Live>>,
    pub(crate) changes: broadcast::Sender<pipeline::PublishedChange>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) keys: Mutex<Keys>,
    /// The write keys' token buckets.
    pub(crate) rate: rate::RateLimiter,
    /// Where webhooks may go (`[webhooks]`).
    pub(crate) outbound: Arc<outbound::NetworkPolicy>,
    /// The external ids of people erased, for the webhooks to drop what they hold.
    pub(crate) purge: broadcast::Sender<Arc<Vec<String>>>,
    /// Flips to true on shutdown (ends the open change streams).
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// The running webhook deliveries, by subscription id.
    pub(crate) hooks: Mutex<std::collections::HashMap<i64, tokio::task::AbortHandle>>,
    /// Held while a segment change is taken in (they go one at a time).
    pub(crate) redefining: tokio::sync::Mutex<()>,
    /// The campaigns as last read, for `GET /v1/decide`.
    pub(crate) decisions: decide::Decisions,
    /// Signs and checks unsubscribe links.
    pub(crate) unsubscribe_secret: String,
    /// Event name → the campaigns it triggers (the evaluator reads it).
    pub(crate) event_triggers:
        Arc<std::sync::RwLock<std::collections::HashMap<String, Vec<String>>>>,
    /// The overview's ingest rate.
    pub(crate) ingest_rate: console::IngestRate,
    /// Console pages being computed ([`console::PAGES_AT_ONCE`] at a time).
    pub(crate) console_pages: tokio::sync::Semaphore,
}

impl App {
    /// Whether `secret` is a valid key of `kind` now (in memory; [`refresh_keys`] keeps
    /// the keys current).
    pub(crate) fn accepts(&self, kind: KeyKind, secret: &str) -> bool {
        let hash = microseg_store::keys::hash_secret(secret);
        let keys = self.keys.lock().expect("keys lock");
        keys.by_hash
            .get(&hash)
            .is_some_and(|k| k.kind == kind && k.valid_at(now().0))
    }
}

/// Reads the keys again every [`KEYS_REFRESH`] until the server stops.
fn refresh_keys(app: Arc<App>) {
    let mut store = None;
    while !*app.stopping.borrow() {
        std::thread::sleep(KEYS_REFRESH);
        if store.is_none() {
            store = Store::open(&app.workspace).ok();
        }
        match store.as_ref().map(load_keys) {
            Some(Ok(fresh)) => *app.keys.lock().expect("keys lock") = fresh,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "keys not read; the last ones stay in force");
                store = None;
            }
            None => {}
        }
    }
}

/// Reads the campaigns again every [`KEYS_REFRESH`] when they changed (through the admin
/// API or the command line), and when their own audiences changed, has the streaming
/// evaluator take them in (as a segment change is).
fn refresh_campaigns(app: Arc<App>) {
    let mut store = None;
    let mut installed = app.decisions.decider().live_audiences();
    while !*app.stopping.borrow() {
        std::thread::sleep(KEYS_REFRESH);
        if store.is_none() {
            store = Store::open(&app.workspace).ok();
        }
        let Some(s) = store.as_ref() else { continue };
        if let Err(e) = app.decisions.refresh(&app.workspace, s) {
            tracing::warn!(error = %e, "campaigns not read; the last ones stay in force");
            store = None;
            continue;
        }
        *app.event_triggers.write().expect("taps lock") = app.decisions.decider().event_triggers();
        let wanted = app.decisions.decider().live_audiences();
        if wanted == installed {
            continue;
        }
        let one_at_a_time = app.redefining.blocking_lock();
        let (reply, done) = tokio::sync::oneshot::channel();
        app.counters
            .queue_depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if app
            .jobs
            .blocking_send(pipeline::Job::Redefine(reply))
            .is_err()
        {
            return;
        }
        match done.blocking_recv() {
            Ok(Ok(())) => installed = wanted,
            Ok(Err(message)) => {
                tracing::warn!(error = %message, "campaign audiences not taken in; retrying")
            }
            Err(_) => return,
        }
        drop(one_at_a_time);
    }
}

impl App {
    /// Starts delivering changes to `hook` (inside the runtime).
    pub(crate) fn start_webhook(&self, hook: microseg_store::webhooks::Webhook) {
        let id = hook.id;
        let task = tokio::spawn(webhooks::deliver(
            hook,
            self.outbound.clone(),
            self.changes.subscribe(),
            self.purge.subscribe(),
            self.counters.clone(),
            self.stopping.clone(),
        ));
        self.hooks
            .lock()
            .expect("hooks lock")
            .insert(id, task.abort_handle());
    }
}

fn load_keys(store: &Store) -> Result<Keys, StoreError> {
    Ok(Keys {
        by_hash: store
            .keys()?
            .into_iter()
            .map(|k| (k.hash.clone(), k))
            .collect(),
    })
}

/// Builds the in-memory state: traits, and the streaming evaluator backfilled from every
/// stored event. Segments it cannot stream are listed as batch-only.
pub(crate) fn load_live(
    workspace: &Workspace,
    store: &Store,
    config: StreamConfig,
    now: Timestamp,
) -> Result<Live, StoreError> {
    let mut tables = microseg_store::Tables::open(workspace, store, now)?;
    tables.need_all_traits()?;
    let stored = decide::live_definitions(workspace, store)?;
    let streamable = pipeline::Streamable::new(&stored, |segments| {
        Streaming::new(segments, tables.profiles(), config.clone(), now)
    })
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let names = streamable.properties();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pipeline::Streamable {
        compiled: mut streaming,
        batch_only,
        ..
    } = streamable;
    tables.events(&names)?;
    let data = tables.dataset();
    let events = data.events.expect("loaded");
    streaming.backfill(data.profiles, data.profiles.len() as u32, events, now);
    let mut retired = roaring::RoaringBitmap::new();
    for (from, into) in store.merges()? {
        // Their events were loaded as the survivor's already: this retires them.
        streaming.merge(data.profiles, from, into);
        retired.insert(from);
    }
    for p in store.erased()? {
        streaming.retire(p);
        retired.insert(p);
    }
    let profiles = tables.into_profiles();
    let mut ids: std::collections::HashMap<String, microseg_core::ProfileId> = profiles
        .external_ids
        .iter()
        .enumerate()
        .filter(|&(p, _)| !retired.contains(p as u32))
        .map(|(p, id)| (id.to_string(), p as u32))
        .collect();
    for (from, into) in store.merges()? {
        ids.insert(profiles.external_ids.get(from).to_string(), into);
    }
    Ok(Live {
        profiles,
        ids,
        retired,
        streaming,
        batch_only,
    })
}

/// Runs the server until SIGTERM or Ctrl-C; prints `listening on ADDR` once ready.
pub fn serve(workspace: Workspace, options: ServeOptions) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Held while serving: imports and erasures from the command line wait for the server
    // to stop (they would collide with the profile ids it keeps in memory).
    let _lock = workspace.lock_writer("microseg serve")?;
    let mut store = Store::open(&workspace)?;
    let retention = workspace.config.limits.retention_days;
    if retention > 0 {
        let before = Timestamp(now().0 - i64::from(retention) * microseg_core::DAY_MS);
        let deleted = store.delete_events_before(&workspace, before)?;
        tracing::info!(deleted, %before, "events past the retention deleted");
    }
    let started = std::time::Instant::now();
    let live = load_live(&workspace, &store, options.stream.clone(), now())?;
    tracing::info!(
        profiles = live.profiles.len(),
        segments = live.streaming.segment_names().count(),
        batch_only = live.batch_only.len(),
        seconds = started.elapsed().as_secs_f64(),
        "streaming state rebuilt from the store"
    );
    let mut ingestor = Ingestor::open(store)?;
    ingestor.allow_customer_merges(workspace.config.limits.alias_merges_customers);
    let counters = Arc::new(Counters::default());
    let live = Arc::new(Mutex::new(live));
    let (jobs, job_queue) = mpsc::channel(options.queue);
    // Room for the commits made while a segment change is backfilled (the evaluator waits
    // for it at the point it was asked; the writer goes on).
    let (commits, committed) = std::sync::mpsc::sync_channel(pipeline::ENGINE_QUEUE);
    let (changes, _) = broadcast::channel(65_536);
    let (purge, _) = broadcast::channel(1024);
    let tail_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let counters = counters.clone();
        let (tail_ready, workspace) = (tail_ready.clone(), workspace.clone());
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                pipeline::writer(
                    workspace, ingestor, job_queue, commits, counters, tail_ready,
                )
            })?
    };
    // Entries and events that trigger campaigns, for the trigger worker.
    let (entries, entered) = std::sync::mpsc::channel();
    let taps = pipeline::EventTaps {
        names: Arc::default(),
        fire: entries.clone(),
    };
    let evaluator = {
        let (live, changes, counters) = (live.clone(), changes.clone(), counters.clone());
        let (workspace, purge, taps) = (workspace.clone(), purge.clone(), taps.clone());
        std::thread::Builder::new()
            .name("evaluator".into())
            .spawn(move || {
                pipeline::evaluator(workspace, live, committed, changes, purge, counters, taps)
            })?
    };
    let (stop_snapshots, snapshot_stop) = std::sync::mpsc::channel();
    let snapshotter = {
        let workspace = workspace.clone();
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || pipeline::snapshotter(workspace, snapshot_stop))?
    };
    let (stop_checkpoints, checkpoints) = std::sync::mpsc::channel();
    let checkpointer = {
        let store = Store::open(&workspace)?;
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || pipeline::checkpointer(store, checkpoints, tail_ready))?
    };
    let keys = load_keys(&Store::open(&workspace)?)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let settings = &workspace.config.server;
    let header_timeout = std::time::Duration::from_secs(settings.header_timeout_seconds.max(1));
    let rate = rate::RateLimiter::new(settings.key_requests_per_second, settings.key_burst);
    let hooks_config = &workspace.config.webhooks;
    let outbound =
        outbound::NetworkPolicy::new(&hooks_config.allow_networks, &hooks_config.deny_networks)
            .map(Arc::new)
            .map_err(|e| StoreError::Config {
                path: workspace.dir.join(microseg_store::workspace::CONFIG_FILE),
                reason: format!("[webhooks]: {e}"),
            })?;
    let hooks = Store::open(&workspace)?.webhooks()?;
    let decisions = decide::Decisions::load(&workspace, &Store::open(&workspace)?)?;
    let unsubscribe_secret =
        Store::open(&workspace)?.secret(microseg_activate::unsubscribe::SECRET)?;
    *taps.names.write().expect("taps lock") = decisions.decider().event_triggers();
    drop(taps.fire);
    let app = Arc::new(App {
        event_triggers: taps.names.clone(),
        ingest_rate: console::IngestRate::default(),
        console_pages: tokio::sync::Semaphore::new(console::PAGES_AT_ONCE),
        decisions,
        unsubscribe_secret,
        hooks: Mutex::default(),
        redefining: tokio::sync::Mutex::new(()),
        stream: options.stream.clone(),
        stopping: stopping.clone(),
        workspace,
        jobs,
        live,
        changes,
        counters,
        keys: Mutex::new(keys),
        rate,
        outbound,
        purge,
    });
    let keys_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || refresh_keys(app))?
    };
    let campaigns_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("campaigns".into())
            .spawn(move || refresh_campaigns(app))?
    };
    let trigger_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("triggers".into())
            .spawn(move || activation::fire(app, entered))?
    };
    let schedule_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("schedules".into())
            .spawn(move || activation::schedules(app))?
    };
    let delivery_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || activation::deliver_loop(app))?
    };
    runtime.spawn(activation::follow(
        app.clone(),
        app.changes.subscribe(),
        entries,
    ));
    if retention > 0 {
        let app = app.clone();
        let retention_every = options
            .retention_every
            .max(std::time::Duration::from_millis(100));
        runtime.spawn(async move {
            // Through the writer, between two commits.
            let mut every = tokio::time::interval(retention_every);
            every.tick().await;
            let mut stop = app.stopping.clone();
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let before = Timestamp(now().0 - i64::from(retention) * microseg_core::DAY_MS);
                app.counters
                    .queue_depth
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if app.jobs.send(pipeline::Job::Prune(before)).await.is_err() {
                    return;
                }
            }
        });
    }
    runtime.block_on(async {
        for hook in hooks {
            app.start_webhook(hook);
        }
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!("listening on {addr}");
        println!("listening on {addr}");
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        listen::serve(listener, api::router(app), header_timeout, stopping).await
    })?;
    // The router and its handlers are gone: the writer drains what was accepted, commits
    // it, and stops; then the evaluator stops.
    let _ = writer.join();
    let _ = stop_checkpoints.send(());
    let _ = checkpointer.join();
    let _ = stop_snapshots.send(());
    let _ = snapshotter.join();
    let _ = evaluator.join();
    let _ = keys_thread.join();
    let _ = campaigns_thread.join();
    let _ = delivery_thread.join();
    let _ = schedule_thread.join();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let _ = trigger_thread.join();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing accepted requests");
}
