//! The two threads behind the HTTP handlers.
//!
//! - The **writer** owns the store's write connection. It takes every request waiting in
//!   its queue (up to [`MAX_GROUP`] messages), writes them in one transaction (one fsync),
//!   then answers each request: a 200 is only sent once its messages are committed.
//! - The **evaluator** owns the streaming evaluator and the in-memory traits ([`Live`]). It applies what
//!   each commit did, moves the clock every [`TICK`], and publishes membership changes.
//!
//! - The **checkpointer** copies the write-ahead log into the database file on its own
//!   connection. SQLite reuses the log from its start only when a write begins with every
//!   frame copied, which never happens while commits follow each other during a copy: the
//!   log then grows without end (1.9 GB in 45 s under load, every frame appended to new
//!   file blocks the kernel zeroes first). So the checkpointer copies the bulk, pass after
//!   pass, until a pass finds only a small tail; then it asks the writer, which copies the
//!   tail itself right after a commit, when nothing can be added meanwhile, and the next
//!   commit starts the log over.
//!
//! The queue in front of the writer is bounded: when it is full the handler answers 503
//! with `Retry-After` instead of buffering without limit.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use microseg_core::condition::Condition;
use microseg_core::{ProfileId, Timestamp};
use microseg_engine::streaming::{
    Backfill, Cause, Change, Redefinition, Replay, StreamError, Streaming,
};
use microseg_engine::ProfileTable;
use microseg_store::erase::Erased;
use microseg_store::ingest::{Applied, Ingestor, LimitError, NameLimits, Written};
use microseg_store::tracking::Message;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::counters::Counters;
use crate::error::{ApiError, ErrorKind};

/// The most messages one transaction takes.
pub const MAX_GROUP: usize = 50_000;
/// Commits that may wait for the evaluator (it waits while a segment change is backfilled)
/// before the writer waits too.
pub const ENGINE_QUEUE: usize = 1024;
/// How often the evaluator moves the clock when no commit arrives.
pub const TICK: Duration = Duration::from_millis(50);
/// How long the checkpointer rests after a pass that found little to copy.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A pass that copied at most this many log frames (4 KiB pages) leaves a tail small
/// enough for the writer to copy between two commits.
pub const TAIL_FRAMES: i64 = 2_048;

/// What the writer is asked to do, in order.
pub enum Job {
    /// Commit a request's messages.
    Write(WriteJob),
    /// Take in the stored segment definitions (after one was created or edited): the
    /// writer pins the store between two commits and passes it on in commit order; the
    /// evaluator plans there, a backfill thread replays history from the pinned store, and
    /// the evaluator installs it with what it took in meanwhile ([`Pending`]), so no commit
    /// is missed or applied twice and nothing waits for the backfill.
    Redefine(oneshot::Sender<Result<(), String>>),
    /// Erase a person (by external id) between two commits; the in-memory state follows
    /// as for any commit (`Applied::Erase`).
    Erase(String, oneshot::Sender<Result<Erased, ApiError>>),
    /// Delete the events dated before this instant (`[limits] retention_days`).
    Prune(Timestamp),
}

/// One request waiting for the writer.
pub struct WriteJob {
    /// Its messages.
    pub messages: Vec<Message>,
    /// When it was received.
    pub received: Timestamp,
    /// Answered once committed, or with why not (a workspace limit, the store's error).
    pub reply: oneshot::Sender<Result<(), ApiError>>,
}

/// A membership change as published (the SSE payload and the webhook batches' items).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct PublishedChange {
    /// `entered` or `exited`.
    pub kind: &'static str,
    /// The segment.
    pub segment: String,
    /// The profile's external id.
    pub profile: String,
    /// When it was seen (RFC 3339).
    pub at: String,
    /// Why: `event`, `time`, `traits` or `merge`.
    pub cause: &'static str,
    /// The event's name when the cause is an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Milliseconds from the event's arrival to this change (event causes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// What the writer hands the evaluator thread, in commit order.
pub enum Step {
    /// A commit, and when it finished.
    Commit(Written, Instant),
    /// Take in the stored segment definitions: the store pinned at this point between
    /// two commits (every commit before this step, none after), for the backfill; the
    /// reply says they are in place.
    Redefine(
        Box<microseg_store::Store>,
        oneshot::Sender<Result<(), String>>,
    ),
}

/// The events that trigger campaigns (name → campaigns, kept current from the campaigns),
/// and where the evaluator sends each such arrival: (external id, campaigns).
#[derive(Clone)]
pub struct EventTaps {
    /// Event name → the campaigns it triggers.
    pub names: Arc<std::sync::RwLock<std::collections::HashMap<String, Vec<String>>>>,
    /// The trigger worker's queue.
    pub fire: std::sync::mpsc::Sender<(String, Vec<String>)>,
}

/// What the evaluator thread keeps, shared with the query handlers.
pub struct Live {
    /// Traits of every profile (dense ids as in the store).
    pub profiles: ProfileTable,
    /// Retired (merged) profiles.
    pub retired: roaring::RoaringBitmap,
    /// Dense id by external id (a merged profile's id leads to the survivor).
    pub ids: std::collections::HashMap<String, ProfileId>,
    /// The streaming evaluator.
    pub streaming: Streaming,
    /// Segments left to batch evaluation, with the reason.
    pub batch_only: Vec<(String, String)>,
}

/// The stored segments that stream, compiled by `compile`: each segment is kept when it
/// compiles with those kept before it; the others are left to batch evaluation, with the
/// reason.
pub struct Streamable<T> {
    /// What `compile` made of the kept segments.
    pub compiled: T,
    /// The kept segments.
    pub kept: Vec<(String, Condition)>,
    /// The others, with the reason.
    pub batch_only: Vec<(String, String)>,
}

impl<T> Streamable<T> {
    /// Tries `stored` in order with `compile` (which must accept no segments at all).
    pub fn new(
        stored: &[(String, Condition)],
        compile: impl Fn(&[(String, Condition)]) -> Result<T, StreamError>,
    ) -> Result<Streamable<T>, StreamError> {
        let mut kept: Vec<(String, Condition)> = Vec::new();
        let mut batch_only = Vec::new();
        let mut compiled = compile(&[])?;
        for (name, condition) in stored {
            let mut trial = kept.clone();
            trial.push((name.clone(), condition.clone()));
            match compile(&trial) {
                Ok(c) => {
                    kept = trial;
                    compiled = c;
                }
                Err(e) => {
                    let reason = match &e {
                        StreamError::Eval {
                            source: microseg_engine::EvalError::UnknownSegment(_),
                            ..
                        } => "it refers to a batch-only segment".to_string(),
                        _ => e.to_string(),
                    };
                    tracing::warn!(segment = %name, %reason, "segment evaluated in batch only");
                    batch_only.push((name.clone(), reason));
                }
            }
        }
        Ok(Streamable {
            compiled,
            kept,
            batch_only,
        })
    }

    /// The event properties the kept segments read.
    pub fn properties(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<String> = self
            .kept
            .iter()
            .flat_map(|(_, c)| c.event_properties())
            .collect();
        names.into_iter().collect()
    }
}

/// Lowers the calling thread's CPU priority (nice 10), so background work (a backfill,
/// the snapshot) gives way to the writer and the request handlers when they are busy.
fn background() {
    #[cfg(target_os = "linux")]
    // SAFETY: on Linux, setpriority with PRIO_PROCESS and who = 0 changes the nice value
    // of the calling thread only; it has no other effect.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// A redefinition being backfilled while the evaluator goes on with the old definitions,
/// keeping what the new leaves will need.
struct Pending {
    backfilled: std::sync::mpsc::Receiver<Result<(Redefinition, Backfill), String>>,
    reply: oneshot::Sender<Result<(), String>>,
    /// The names of the events the new leaves listen to (every event with `None`).
    listens: Option<std::collections::HashSet<String>>,
    batch_only: Vec<(String, String)>,
    /// What was taken in since the plan and not yet fed to the backfill (the backfill
    /// thread drains it, the install takes the rest).
    replay: Arc<Mutex<Vec<Replay>>>,
}

impl Pending {
    /// Keeps what `applied` means for the new leaves (call before applying it).
    fn record(&mut self, applied: &Applied) {
        match applied {
            Applied::Event { profile, event }
                if self
                    .listens
                    .as_ref()
                    .is_none_or(|l| l.contains(&event.name)) =>
            {
                let step = Replay::Event(*profile, event.clone());
                self.replay.lock().expect("replay lock").push(step);
            }
            Applied::Merge { from, into } => {
                let step = Replay::Merge {
                    from: *from,
                    into: *into,
                };
                self.replay.lock().expect("replay lock").push(step);
            }
            Applied::Erase { profiles } => {
                let mut replay = self.replay.lock().expect("replay lock");
                replay.extend(profiles.iter().map(|&p| Replay::Erase(p)));
            }
            _ => {}
        }
    }
}

/// Plans taking in the segments stored in `store` (pinned at this point between two
/// commits) on the evaluator, and starts their backfill on a thread of its own.
fn redefine(
    workspace: &microseg_store::Workspace,
    store: microseg_store::Store,
    live: &Live,
    clock: &Arc<AtomicI64>,
    reply: oneshot::Sender<Result<(), String>>,
) -> Option<Pending> {
    let planned = (|| {
        let stored =
            crate::decide::live_definitions(workspace, &store).map_err(|e| e.to_string())?;
        Streamable::new(&stored, |segments| {
            live.streaming.redefine(segments, &live.profiles)
        })
        .map_err(|e| e.to_string())
    })();
    let streamable = match planned {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Err(e));
            return None;
        }
    };
    let properties = streamable.properties();
    let Streamable {
        compiled: plan,
        batch_only,
        ..
    } = streamable;
    let read = plan.events_read();
    let listens = read.as_ref().map(|names| names.iter().cloned().collect());
    let (result, backfilled) = std::sync::mpsc::sync_channel(1);
    let (workspace, as_of) = (workspace.clone(), crate::now());
    let replay = Arc::new(Mutex::new(Vec::new()));
    let (log, clock) = (replay.clone(), clock.clone());
    let spawned = std::thread::Builder::new()
        .name("backfill".into())
        .spawn(move || {
            background();
            let done = backfill(&workspace, &store, plan, read, &properties, as_of)
                .map(|(plan, backfill)| catch_up(plan, backfill, &log, &clock));
            let _ = result.send(done);
        });
    if let Err(e) = spawned {
        let _ = reply.send(Err(e.to_string()));
        return None;
    }
    Some(Pending {
        backfilled,
        reply,
        listens,
        batch_only,
        replay,
    })
}

/// Below this many steps left, the install takes the rest of a replay itself.
const REPLAY_REST: usize = 10_000;

/// Rounds of catching up before the install takes the rest anyway (when events keep
/// coming in faster than this thread feeds them).
const REPLAY_ROUNDS: usize = 8;

/// Feeds the backfill what the evaluator took in since the plan, batch after batch, until
/// little is left (or an event the evaluator's clock has not reached blocks the way): the
/// evaluator's install then replays only the rest.
fn catch_up(
    plan: Redefinition,
    mut backfill: Backfill,
    log: &Mutex<Vec<Replay>>,
    clock: &AtomicI64,
) -> (Redefinition, Backfill) {
    for _ in 0..REPLAY_ROUNDS {
        let batch = std::mem::take(&mut *log.lock().expect("replay lock"));
        let now = Timestamp(clock.load(Ordering::Relaxed));
        let taken = plan.catch_up(&mut backfill, &batch, now);
        let size = batch.len();
        if taken < size {
            // Put the rest back in front of what came meanwhile, in order.
            let mut log = log.lock().expect("replay lock");
            let newer = std::mem::take(&mut *log);
            log.extend(batch.into_iter().skip(taken));
            log.extend(newer);
            return (plan, backfill);
        }
        if size < REPLAY_REST {
            break;
        }
    }
    (plan, backfill)
}

/// Replays history from `store` (pinned where the plan was made) into the plan's new
/// leaves: only the events `read` names (every event with `None`), with `properties`.
fn backfill(
    workspace: &microseg_store::Workspace,
    store: &microseg_store::Store,
    plan: Redefinition,
    read: Option<Vec<String>>,
    properties: &[String],
    as_of: Timestamp,
) -> Result<(Redefinition, Backfill), String> {
    let started = Instant::now();
    let mut tables =
        microseg_store::Tables::open(workspace, store, as_of).map_err(|e| e.to_string())?;
    let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
    let profiles = tables.len() as u32;
    // Only the events the new leaves listen to (and those still ahead of the clock).
    let named;
    let events = match read {
        Some(read) => {
            let read: Vec<&str> = read.iter().map(String::as_str).collect();
            named = tables
                .events_named(&read, &properties, as_of)
                .map_err(|e| e.to_string())?;
            &named
        }
        None => tables.events(&properties).map_err(|e| e.to_string())?,
    };
    let loaded = started.elapsed().as_secs_f64();
    let backfill = plan.backfill(events, profiles, as_of);
    tracing::info!(
        segments = ?plan.changed_segments(),
        events = events.len(),
        load_seconds = loaded,
        seconds = started.elapsed().as_secs_f64(),
        "segments backfilled from history"
    );
    Ok((plan, backfill))
}

/// Runs the writer until every sender of `jobs` is gone; committed work goes to `done`.
pub fn writer(
    workspace: microseg_store::Workspace,
    mut ingestor: Ingestor,
    mut jobs: mpsc::Receiver<Job>,
    done: std::sync::mpsc::SyncSender<Step>,
    counters: Arc<Counters>,
    tail_ready: Arc<AtomicBool>,
) {
    let limits = NameLimits::from(&workspace.config.limits);
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        let first = match first {
            Job::Write(w) => w,
            Job::Redefine(reply) => {
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                // Pin the store as it is now, between two commits, for the backfill.
                let pinned = microseg_store::Store::open(&workspace)
                    .and_then(|store| store.begin_read().map(|()| store));
                match pinned {
                    Ok(store) => {
                        if done.send(Step::Redefine(Box::new(store), reply)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
                continue;
            }
            Job::Prune(before) => {
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match ingestor.delete_events_before(&workspace, before) {
                    Ok(deleted) => {
                        tracing::info!(deleted, %before, "events past the retention deleted")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; the next one retries")
                    }
                }
                continue;
            }
            Job::Erase(external_id, reply) => {
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match ingestor.erase(&external_id) {
                    Ok((written, erased)) => {
                        // Counts and the dense id only: never who.
                        tracing::info!(
                            profile = erased.profiles[0],
                            profiles = erased.profiles.len(),
                            events = erased.events,
                            identities = erased.identities,
                            "person erased"
                        );
                        let _ = reply.send(Ok(erased));
                        if done.send(Step::Commit(written, Instant::now())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
                continue;
            }
        };
        let mut group = Vec::new();
        let mut count = 0;
        let mut admit = |job: WriteJob, group: &mut Vec<WriteJob>, count: &mut usize| match ingestor
            .admit(&job.messages, limits)
        {
            Ok(()) => {
                *count += job.messages.len();
                group.push(job);
            }
            Err(e) => {
                let counter = match e {
                    LimitError::Traits { .. } => &counters.limit_traits,
                    LimitError::EventNames { .. } => &counters.limit_event_names,
                    LimitError::CustomerMerge { .. } => &counters.limit_alias_merges,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let _ = job
                    .reply
                    .send(Err(ApiError::new(ErrorKind::LimitReached, e.to_string())));
            }
        };
        admit(first, &mut group, &mut count);
        while count < MAX_GROUP {
            match jobs.try_recv() {
                Ok(Job::Write(job)) => admit(job, &mut group, &mut count),
                Ok(reload) => {
                    // Commit what came before it first.
                    next = Some(reload);
                    break;
                }
                Err(_) => break,
            }
        }
        counters
            .queue_depth
            .fetch_sub(group.len() as i64, Ordering::Relaxed);
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        let received = group
            .iter()
            .map(|j| j.received)
            .max()
            .unwrap_or(Timestamp(0));
        let batches: Vec<Vec<Message>> = group
            .iter_mut()
            .map(|j| std::mem::take(&mut j.messages))
            .collect();
        let result = ingestor.write(batches, received);
        counters.observe_commit(started.elapsed());
        match result {
            Ok(written) => {
                counters
                    .ingested
                    .fetch_add(count as u64 - written.duplicates, Ordering::Relaxed);
                counters
                    .duplicates
                    .fetch_add(written.duplicates, Ordering::Relaxed);
                counters
                    .limit_alias_merges
                    .fetch_add(written.refused_merges, Ordering::Relaxed);
                for d in &written.dropped {
                    tracing::warn!(trait_value = %d, "trait value dropped");
                }
                let committed = Instant::now();
                for job in group {
                    let _ = job.reply.send(Ok(()));
                }
                if done.send(Step::Commit(written, committed)).is_err() {
                    return;
                }
                if tail_ready.swap(false, Ordering::Relaxed) {
                    // No commit can come in between: the log is copied whole and the next
                    // commit starts it over.
                    if let Err(e) = ingestor.store().checkpoint() {
                        tracing::warn!(error = %e, "checkpoint of the log's tail failed");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write failed; nothing of this group was stored");
                let message = e.to_string();
                for job in group {
                    let _ = job.reply.send(Err(ApiError::internal(&message)));
                }
            }
        }
    }
}

/// Copies the write-ahead log into the database file on its own connection (so commits
/// never wait for the bulk of it), pass after pass while there is much to copy, resting
/// [`CHECKPOINT_EVERY`] otherwise; when [`Passes`] finds only a small tail left, sets
/// `tail_ready` for the writer. Runs until `stop` says so or closes, then once more.
pub fn checkpointer(
    store: microseg_store::Store,
    stop: std::sync::mpsc::Receiver<()>,
    tail_ready: Arc<AtomicBool>,
) {
    let mut rest = CHECKPOINT_EVERY;
    let mut passes = Passes::default();
    loop {
        let last = !matches!(
            stop.recv_timeout(rest),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        match store.checkpoint() {
            Ok((log, copied)) => {
                let taken = passes.asked && !tail_ready.load(Ordering::Relaxed);
                let (small, ask) = passes.after(log, copied, taken);
                if ask {
                    tail_ready.store(true, Ordering::Relaxed);
                }
                rest = if small {
                    CHECKPOINT_EVERY
                } else {
                    Duration::ZERO
                };
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; the next one retries"),
        }
        if last {
            return;
        }
    }
}

/// How often the snapshotter looks at how far the store moved.
pub const SNAPSHOT_CHECK: Duration = Duration::from_secs(60);
/// New events after which the snapshotter writes the columnar snapshot again (or a
/// quarter of the events it holds, when that is more).
pub const SNAPSHOT_EVENTS: u64 = 1_000_000;
/// The longest the snapshot lags behind ingested events.
pub const SNAPSHOT_AGE: Duration = Duration::from_secs(600);

/// Keeps the workspace's columnar snapshot (docs/store.md) current while the server
/// ingests, so commands in other processes open it without catching up much: every
/// [`SNAPSHOT_CHECK`], when [`SNAPSHOT_EVENTS`] (or a quarter of the stored events) came
/// in, or events came in and the snapshot is [`SNAPSHOT_AGE`] old. Runs until `stop`
/// says so or closes.
pub fn snapshotter(workspace: microseg_store::Workspace, stop: std::sync::mpsc::Receiver<()>) {
    background();
    let state = |store: &microseg_store::Store| store.state().map(|s| s.max_event_id).ok();
    let Ok(store) = microseg_store::Store::open(&workspace) else {
        return;
    };
    let mut written = state(&store).unwrap_or(0);
    let mut at = Instant::now();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(SNAPSHOT_CHECK) {
        let Some(now) = state(&store) else { continue };
        let new = now.saturating_sub(written);
        let due =
            new >= SNAPSHOT_EVENTS.max(written / 4) || (new > 0 && at.elapsed() >= SNAPSHOT_AGE);
        if !due {
            continue;
        }
        let started = Instant::now();
        match microseg_store::tables::refresh(&workspace, &store) {
            Ok(()) => {
                tracing::info!(
                    events = new,
                    seconds = started.elapsed().as_secs_f64(),
                    "columnar snapshot caught up"
                );
                (written, at) = (now, Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "columnar snapshot not written; commands catch up themselves")
            }
        }
    }
}

/// What the checkpointer remembers between passes to tell how much the last one copied
/// (SQLite reports only the log's frames and how many of them are copied in all).
#[derive(Debug, Default)]
struct Passes {
    /// The log's frames after the last pass.
    log: i64,
    /// How many of them were copied.
    copied: i64,
    /// Whether the writer was asked to copy the tail.
    asked: bool,
}

impl Passes {
    /// Records a pass that left the log at `log` frames, `copied` of them in the database;
    /// `taken`: the writer took the tail since the last pass. Returns whether the pass
    /// copied at most [`TAIL_FRAMES`] (rest before the next), and whether to ask the writer
    /// for the tail (also when everything was copied). When the log may have started over
    /// (taken, or it shrank) the pass counts from the log's start: an overestimate, which
    /// only costs one more pass.
    fn after(&mut self, log: i64, copied: i64, taken: bool) -> (bool, bool) {
        let started_over = taken || log < self.log || copied < self.copied;
        let this_pass = if started_over {
            copied
        } else {
            copied - self.copied
        };
        (self.log, self.copied) = (log, copied);
        let small = this_pass <= TAIL_FRAMES;
        self.asked = small && copied == log;
        (small, self.asked)
    }
}

/// Runs the evaluator until `commits` closes.
pub fn evaluator(
    workspace: microseg_store::Workspace,
    shared: Arc<Mutex<Live>>,
    commits: std::sync::mpsc::Receiver<Step>,
    changes: broadcast::Sender<PublishedChange>,
    purge: broadcast::Sender<Arc<Vec<String>>>,
    counters: Arc<Counters>,
    taps: EventTaps,
) {
    let mut pending: Option<Pending> = None;
    // The evaluator's clock, for the backfill thread's catch-up.
    let clock = Arc::new(AtomicI64::new(0));
    loop {
        let next = commits.recv_timeout(TICK);
        let mut e = shared.lock().expect("live state lock");
        let committed = match next {
            Ok(Step::Commit(written, committed)) => Some((written, committed)),
            Ok(Step::Redefine(store, reply)) => {
                // Every commit before this step is in the pinned store and was applied.
                match pending {
                    Some(_) => {
                        let _ = reply.send(Err("a segment change is being taken in".into()));
                    }
                    None => pending = redefine(&workspace, *store, &e, &clock, reply),
                }
                None
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Live {
            profiles,
            retired,
            ids,
            streaming,
            batch_only,
        } = &mut *e;
        let mut out: Vec<(Change, Option<Instant>)> = streaming
            .advance(profiles, crate::now())
            .into_iter()
            .map(|c| (c, None))
            .collect();
        clock.store(streaming.clock().0, Ordering::Relaxed);
        if let Some((written, committed)) = committed {
            for applied in written.applied {
                if let Some(p) = &mut pending {
                    p.record(&applied);
                }
                if let Applied::Erase { profiles: erased } = &applied {
                    // What the webhooks still hold for these people goes too.
                    let ids = erased
                        .iter()
                        .map(|&p| profiles.external_ids.get(p).to_string())
                        .collect();
                    let _ = purge.send(Arc::new(ids));
                }
                if let Applied::Event { profile, event } = &applied {
                    // An event that triggers campaigns goes to the trigger worker.
                    let campaigns = taps
                        .names
                        .read()
                        .expect("taps lock")
                        .get(&event.name)
                        .cloned();
                    if let Some(campaigns) = campaigns {
                        let id = profiles.external_ids.get(*profile).to_string();
                        let _ = taps.fire.send((id, campaigns));
                    }
                }
                let found = apply(profiles, retired, ids, streaming, applied);
                out.extend(found.into_iter().map(|c| (c, Some(committed))));
            }
        }
        // A finished backfill is installed between two commits, with what came since.
        let done = pending.as_ref().and_then(|p| p.backfilled.try_recv().ok());
        if let Some(result) = done {
            let p = pending.take().expect("pending");
            match result {
                Ok((plan, backfill)) => {
                    let started = Instant::now();
                    let rest = std::mem::take(&mut *p.replay.lock().expect("replay lock"));
                    let replayed = rest.len();
                    let installed = streaming.install(profiles, plan, backfill, rest);
                    out.extend(installed.into_iter().map(|c| (c, None)));
                    *batch_only = p.batch_only;
                    tracing::info!(
                        replayed,
                        seconds = started.elapsed().as_secs_f64(),
                        "segment definitions installed"
                    );
                    let _ = p.reply.send(Ok(()));
                }
                Err(message) => {
                    tracing::error!(error = %message, "segment definitions not taken in");
                    let _ = p.reply.send(Err(message));
                }
            }
        }
        publish(out, profiles, &changes, &counters);
    }
}

/// Counts and sends membership changes (event-caused ones with their latency since the
/// commit that made them).
fn publish(
    out: Vec<(Change, Option<Instant>)>,
    profiles: &ProfileTable,
    changes: &broadcast::Sender<PublishedChange>,
    counters: &Counters,
) {
    for (c, arrived) in out {
        if crate::decide::is_campaign_audience(&c.segment) {
            continue;
        }
        counters.changes.fetch_add(1, Ordering::Relaxed);
        let latency_ms = arrived.map(|t| t.elapsed().as_secs_f64() * 1000.0);
        if let Some(ms) = latency_ms {
            counters.observe_change_latency(ms);
        }
        let (cause, event) = match &c.cause {
            Cause::Event { name, .. } => ("event", Some(name.clone())),
            Cause::Time => ("time", None),
            Cause::Traits => ("traits", None),
            Cause::Merge => ("merge", None),
        };
        let _ = changes.send(PublishedChange {
            kind: if c.entered { "entered" } else { "exited" },
            segment: c.segment,
            profile: profiles.external_ids.get(c.profile).to_string(),
            at: c.at.to_string(),
            cause,
            event,
            latency_ms,
        });
    }
}

/// Applies one committed step to the in-memory state; returns the changes it caused.
fn apply(
    profiles: &mut ProfileTable,
    retired: &mut roaring::RoaringBitmap,
    ids: &mut std::collections::HashMap<String, ProfileId>,
    streaming: &mut Streaming,
    applied: Applied,
) -> Vec<Change> {
    match applied {
        Applied::Profile { id, external_id } => {
            debug_assert_eq!(id as usize, profiles.len());
            profiles.push(&external_id, &Default::default());
            ids.insert(external_id, id);
            streaming.traits_changed(profiles, id)
        }
        Applied::Traits { profile, traits } => {
            for (name, ty, value) in traits {
                profiles.set_trait(profile, &name, ty, value.as_ref());
            }
            streaming.traits_changed(profiles, profile)
        }
        Applied::Event { profile, event } => streaming.observe(profiles, profile, event),
        Applied::Merge { from, into } => {
            // The traits the survivor gained came just before, as `Applied::Traits`.
            retired.insert(from);
            ids.insert(profiles.external_ids.get(from).to_string(), into);
            streaming.merge(profiles, from, into)
        }
        Applied::Erase { profiles: erased } => {
            for p in erased {
                ids.remove(profiles.external_ids.get(p));
                streaming.retire(p);
                profiles.erase(p, "erased");
                retired.insert(p);
            }
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Passes, TAIL_FRAMES};

    #[test]
    fn passes_ask_for_the_tail_only_after_a_small_complete_pass() {
        let mut p = Passes::default();
        // A first pass that copied a large backlog: go on at once, do not ask.
        assert_eq!(p.after(50_000, 50_000, false), (false, false));
        // The next copied what came during the first: small and complete, ask.
        assert_eq!(p.after(50_500, 50_500, false), (true, true));
        // Small but blocked by a reader (not all copied): rest, do not ask.
        let mut q = Passes::default();
        assert_eq!(q.after(1_000, 600, false), (true, false));
        // The log grew by more than a tail while the writer kept the request: not small.
        assert_eq!(p.after(60_000, 60_000, false), (false, false));
    }

    #[test]
    fn passes_count_from_the_start_when_the_log_may_have_started_over() {
        let mut p = Passes::default();
        p.after(50_000, 50_000, false);
        // The writer took the tail and the log started over, then grew past its old size
        // within the rest: the pass counts all it copied, so it is not mistaken for small.
        assert!(!p.after(50_000 + TAIL_FRAMES, 50_000 + TAIL_FRAMES, true).0);
        // A log that shrank started over: 300 frames copied is a small pass.
        assert_eq!(p.after(300, 300, false), (true, true));
    }
}
