//! Delivery: hands the outbox's due messages to their channels' adapters, with bounded
//! concurrency, a send rate per channel, retries with exponential back-off and dead
//! letters after the last allowed attempt. One pass (`microseg deliver`, or one turn of
//! `serve`'s loop) takes every message due when it starts.
//!
//! Exactly-once as far as a process can: each outcome is recorded after the hand-over
//! (a file sink is synced first), in batches; a process killed between a hand-over and its
//! record hands that message over again next time, with the same idempotency key
//! (e-mail Message-ID, webhook header) so a receiver can drop the duplicate. At most the
//! in-flight messages (`concurrency` × the batch) are sent twice.
//!
//! Before sending, the person is checked again: erased, consent for the channel withdrawn,
//! address suppressed, or no address: the message is cancelled, never sent.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use microseg_core::{Timestamp, Value};
use microseg_store::delivery::{Due, Outcome};
use microseg_store::{Store, Workspace};
use serde::Serialize;
use serde_json::Value as Json;

use crate::channels::{Adapter, Outgoing, SendError};
use crate::run::RunError;
use crate::{suppress, unsubscribe, Channel, Kind};

/// How a pass delivers.
#[derive(Debug, Clone, Copy)]
pub struct DeliverOptions {
    /// Messages handed over at once.
    pub concurrency: usize,
    /// Attempts before a message goes to the dead letters.
    pub max_attempts: i64,
    /// The first retry's delay; each failure doubles it, up to [`MAX_RETRY_MS`].
    pub retry_ms: i64,
    /// Messages fetched (and recorded) per batch: the most a killed process can have
    /// handed over without recording it. 0: four per concurrent hand-over.
    pub batch: usize,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            concurrency: 4,
            max_attempts: 8,
            retry_ms: 30_000,
            batch: 0,
        }
    }
}

/// The longest delay between two attempts: 6 hours.
pub const MAX_RETRY_MS: i64 = 6 * 3_600_000;

/// What a pass did (`deliver --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliverCounts {
    /// Handed over in this pass.
    pub sent: u64,
    /// Failed in this pass, to be retried.
    pub failed: u64,
    /// Left in the outbox after the pass (not due yet, or to retry).
    pub pending: u64,
    /// Moved to the dead letters in this pass.
    pub dead: u64,
    /// Cancelled in this pass (erased, no consent, suppressed, no address).
    pub cancelled: u64,
}

/// A channel's send rate: at most `count` per `per_ms`, across the pass's workers.
#[derive(Debug)]
struct Rate {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Rate {
    fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("rate '{text}': write N/s or N/min");
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "min" | "minute" => 60.0,
            _ => return Err(bad()),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        Ok(Rate {
            interval: Duration::from_secs_f64(per / n),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for this worker's turn.
    fn wait(&self) {
        let at = {
            let mut next = self.next.lock().expect("rate lock");
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
}

/// One message to hand over: its index in the batch, channel, address, content and
/// unsubscribe link.
type Handover = (
    usize,
    Channel,
    Option<String>,
    BTreeMap<String, String>,
    Option<String>,
);

/// A channel ready to send: its adapter and rate.
struct Sender {
    adapter: Adapter,
    rate: Option<Rate>,
}

/// The address of a person on `channel` from their stored traits.
fn address(
    channel: Channel,
    traits: &serde_json::Map<String, Json>,
    external_id: &str,
) -> Option<String> {
    match channel {
        Channel::Email => traits.get("email")?.as_str().map(str::to_string),
        Channel::Sms => traits.get("phone")?.as_str().map(str::to_string),
        Channel::Push => traits
            .get("push_token")
            .and_then(Json::as_str)
            .map(str::to_string),
        Channel::Webhook | Channel::Web => Some(external_id.to_string()),
    }
}

/// Why a message must not go out now, if so.
fn cancelled(
    channel: Channel,
    due: &Due,
    traits: &serde_json::Map<String, Json>,
    to: Option<&str>,
    suppressed: &std::collections::HashSet<String>,
) -> Option<&'static str> {
    if due.external_id.is_empty() || traits.is_empty() && channel != Channel::Webhook {
        return Some("the person was erased or has no data");
    }
    if traits.get(&format!("consent_{}", channel.name())) != Some(&Json::Bool(true)) {
        return Some("no consent");
    }
    let value = to.map(|t| Value::Str(t.into()));
    if let Some(h) = suppress::person_hash(channel, value.as_ref(), &due.external_id) {
        if suppressed.contains(&h) {
            return Some("suppressed");
        }
    }
    if to.is_none() && channel != Channel::Webhook {
        return Some("no address");
    }
    None
}

/// Delivers every message due at the start, once.
///
/// # Errors
///
/// A store failure, or a channel's settings refused (messages of other channels still
/// go; the first such error is returned after the pass).
pub fn deliver(
    ws: &Workspace,
    store: &mut Store,
    options: DeliverOptions,
) -> Result<Delivered, RunError> {
    let start = now_ms();
    let mut counts = DeliverCounts::default();
    let mut senders: BTreeMap<Channel, Result<Sender, String>> = BTreeMap::new();
    let mut suppressed: BTreeMap<Channel, std::collections::HashSet<String>> = BTreeMap::new();
    let mut config_error: Option<SendError> = None;
    let mut after = 0;
    let mut secret: Option<String> = None;
    let mut events = Vec::new();
    let kinds: BTreeMap<String, Kind> = store
        .campaigns()?
        .iter()
        .filter_map(|c| {
            Some((
                c.name.clone(),
                crate::Campaign::from_json(&c.body).ok()?.kind,
            ))
        })
        .collect();
    let marketing = |name: &str| kinds.get(name) != Some(&Kind::Transactional);
    let size = if options.batch == 0 {
        options.concurrency.max(1) * 4
    } else {
        options.batch
    };
    loop {
        let batch = store.due_messages(start, after, size)?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        // Work out, for each message, what to send or why not.
        let mut work: Vec<Handover> = Vec::new();
        let mut outcomes: Vec<(i64, Outcome)> = Vec::new();
        for (i, due) in batch.iter().enumerate() {
            let Some(channel) = Channel::from_name(&due.channel) else {
                outcomes.push((
                    due.id,
                    Outcome::Cancelled {
                        reason: format!("unknown channel {}", due.channel),
                    },
                ));
                continue;
            };
            let sender = senders.entry(channel).or_insert_with(|| {
                let adapter = Adapter::from_config(channel, &ws.config.channels, &ws.dir)
                    .map_err(|e| e.to_string())?;
                let rate = match ws
                    .config
                    .channels
                    .get(channel.name())
                    .and_then(|t| t.get("rate"))
                {
                    Some(toml::Value::String(r)) => Some(Rate::parse(r)?),
                    Some(_) => {
                        return Err(format!(
                            "[channels.{}] rate: a string such as \"10/s\"",
                            channel.name()
                        ))
                    }
                    None => None,
                };
                Ok(Sender { adapter, rate })
            });
            if let Err(e) = sender {
                // Settings to fix: the message waits for the next pass (not an attempt).
                if config_error.is_none() {
                    config_error = Some(SendError::Address(e.clone()));
                }
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = suppressed.entry(channel) {
                e.insert(store.suppressed(channel.name())?);
            }
            let traits: serde_json::Map<String, Json> =
                serde_json::from_str(&due.traits).unwrap_or_default();
            let to = address(channel, &traits, &due.external_id);
            if let Some(reason) =
                cancelled(channel, due, &traits, to.as_deref(), &suppressed[&channel])
            {
                outcomes.push((
                    due.id,
                    Outcome::Cancelled {
                        reason: reason.into(),
                    },
                ));
                continue;
            }
            let content: BTreeMap<String, String> =
                serde_json::from_str(&due.content).unwrap_or_default();
            // A marketing e-mail carries its one-click unsubscribe link.
            let unsubscribe = if channel == Channel::Email && marketing(&due.campaign) {
                let base = ws
                    .config
                    .channels
                    .get("email")
                    .and_then(|t| t.get("unsubscribe_url"))
                    .and_then(toml::Value::as_str);
                match (base, senders.get(&channel)) {
                    (Some(base), _) => {
                        let secret = secret.get_or_insert(store.secret(unsubscribe::SECRET)?);
                        let token = unsubscribe::token(secret, due.profile_id, channel);
                        Some(unsubscribe::link(base, &token))
                    }
                    (
                        None,
                        Some(Ok(Sender {
                            adapter: Adapter::Email(_),
                            ..
                        })),
                    ) => {
                        if config_error.is_none() {
                            config_error = Some(SendError::Address(
                                "[channels.email] unsubscribe_url is needed for marketing e-mail \
                                 (the public https:// URL of the server's /v1/unsubscribe)"
                                    .into(),
                            ));
                        }
                        continue;
                    }
                    (None, _) => None,
                }
            } else {
                None
            };
            work.push((i, channel, to, content, unsubscribe));
        }
        // Hand over with bounded concurrency.
        let results: Mutex<Vec<(usize, Result<(), String>)>> = Mutex::new(Vec::new());
        let queue = Mutex::new(work.iter());
        std::thread::scope(|scope| {
            for _ in 0..options.concurrency.max(1) {
                scope.spawn(|| loop {
                    let Some((i, channel, to, content, unsubscribe)) =
                        queue.lock().expect("queue lock").next()
                    else {
                        return;
                    };
                    let due = &batch[*i];
                    let Some(Ok(sender)) = senders.get(channel) else {
                        return;
                    };
                    if let Some(rate) = &sender.rate {
                        rate.wait();
                    }
                    let offer: Option<Json> = due
                        .offer
                        .as_deref()
                        .and_then(|o| serde_json::from_str(o).ok());
                    let m = Outgoing {
                        to: if *channel == Channel::Webhook {
                            None
                        } else {
                            to.as_deref()
                        },
                        content,
                        idempotency_key: &due.idempotency_key,
                        meta: serde_json::json!({
                            "campaign": due.campaign, "variant": due.variant,
                            "channel": due.channel, "profile": due.external_id, "offer": offer,
                        }),
                        at: Timestamp(now_ms()),
                        unsubscribe: unsubscribe.clone(),
                    };
                    let r = sender.adapter.send(&m).map_err(|e| e.to_string());
                    results.lock().expect("results lock").push((*i, r));
                });
            }
        });
        // What was appended to files is made durable before it is recorded as sent.
        for s in senders.values().flatten() {
            s.adapter.sync()?;
        }
        let at = now_ms();
        for (i, r) in results.into_inner().expect("results lock") {
            let due = &batch[i];
            let outcome = match r {
                Ok(()) => {
                    events.push(sent_event(due, at));
                    Outcome::Sent
                }
                Err(error) if due.attempts + 1 >= options.max_attempts => Outcome::Dead { error },
                Err(error) => {
                    let delay = options
                        .retry_ms
                        .saturating_mul(1 << due.attempts.clamp(0, 20))
                        .min(MAX_RETRY_MS);
                    Outcome::Retry {
                        error,
                        next_at: at + delay,
                    }
                }
            };
            outcomes.push((due.id, outcome));
        }
        for (_, o) in &outcomes {
            match o {
                Outcome::Sent => counts.sent += 1,
                Outcome::Retry { .. } => counts.failed += 1,
                Outcome::Dead { .. } => counts.dead += 1,
                Outcome::Cancelled { .. } => counts.cancelled += 1,
            }
        }
        store.record_deliveries(at, &outcomes)?;
    }
    counts.pending = store.outbox_state()?.pending;
    match config_error {
        Some(e) if counts.sent == 0 && counts.failed == 0 => Err(e.into()),
        _ => Ok(Delivered { counts, events }),
    }
}

/// A pass's counts, and a `message_sent` event per message handed over (for the caller
/// to record through its writer: the events of the people, usable in segments and
/// reports).
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// The counts.
    pub counts: DeliverCounts,
    /// `message_sent` events (properties `campaign`, `variant`, `channel`).
    pub events: Vec<microseg_store::tracking::Message>,
}

/// The `message_sent` event of a message handed over at `at`.
fn sent_event(due: &Due, at: i64) -> microseg_store::tracking::Message {
    use microseg_store::tracking::{Action, Message};
    let mut props = serde_json::Map::new();
    props.insert("campaign".into(), Json::from(due.campaign.clone()));
    props.insert("variant".into(), Json::from(due.variant.clone()));
    props.insert("channel".into(), Json::from(due.channel.clone()));
    Message {
        // The message's key makes an event recorded twice a duplicate the store drops.
        message_id: Some(format!("microseg-sent-{}", due.idempotency_key)),
        ..Message::about(
            &due.external_id,
            Some(Timestamp(at)),
            Action::event("message_sent", props),
        )
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
