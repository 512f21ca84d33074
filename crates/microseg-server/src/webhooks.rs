//! Webhook deliveries: one task per subscription follows the membership changes, keeps
//! the ones for its segments in a bounded buffer and POSTs them in batches
//! (`{"webhook": ID, "changes": [...]}`, the change objects of `/v1/changes`), signed with
//! `X-Microseg-Signature: t=UNIX_SECONDS,sha256=HEX`: HMAC-SHA256 with the subscription's
//! secret of the timestamp, a `.` and the body, so a receiver can refuse an old delivery
//! replayed. Calls go through [`crate::outbound`] (strict URLs, a network policy, bounded
//! time and answers). A failed delivery (no connection, timeout, non-2xx) is retried with
//! exponential back-off from [`FIRST_RETRY`] up to [`MAX_RETRY`] while new changes keep
//! queueing; past [`MAX_PENDING`] the oldest are dropped and counted. Delivery is
//! at-least-once while the server runs; undelivered changes do not survive a restart.
//!
//! Only `http://` URLs: HTTPS receivers sit behind a TLS-terminating relay for now.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use microseg_core::sign::{hmac_sha256, signature};
use microseg_store::webhooks::Webhook;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::counters::Counters;
use crate::outbound::{self, NetworkPolicy};
use crate::pipeline::PublishedChange;

/// Most changes in one delivery.
pub const BATCH: usize = 500;
/// Most changes waiting for one subscription.
pub const MAX_PENDING: usize = 100_000;
/// The first retry's delay; each failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest delay between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// The current Unix time in seconds.
fn now_s() -> i64 {
    crate::now().0.div_euclid(1000)
}

/// Delivers `hook`'s changes from `changes` until the stream closes or `stop` flips.
pub async fn deliver(
    hook: Webhook,
    policy: Arc<NetworkPolicy>,
    mut changes: broadcast::Receiver<PublishedChange>,
    mut purge: broadcast::Receiver<Arc<Vec<String>>>,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let target = match outbound::parse_url(&hook.url) {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(webhook = hook.id, %why, "webhook URL unusable; not delivering");
            return;
        }
    };
    let wanted = |c: &PublishedChange| {
        hook.segments
            .as_ref()
            .is_none_or(|s| s.contains(&c.segment))
    };
    let mut pending: VecDeque<PublishedChange> = VecDeque::new();
    let mut failures = 0u32;
    let push = |pending: &mut VecDeque<PublishedChange>, c: PublishedChange| {
        if wanted(&c) {
            if pending.len() == MAX_PENDING {
                pending.pop_front();
                counters.webhook_dropped.fetch_add(1, Ordering::Relaxed);
            }
            pending.push_back(c);
        }
    };
    loop {
        // Wait: for a change when there is nothing to send, else for the back-off.
        let delay = if pending.is_empty() {
            None
        } else if failures == 0 {
            Some(Duration::ZERO)
        } else {
            Some((FIRST_RETRY * 2u32.saturating_pow(failures - 1)).min(MAX_RETRY))
        };
        let sleep = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            received = changes.recv() => match received {
                Ok(c) => {
                    push(&mut pending, c);
                    continue;
                }
                Err(RecvError::Lagged(n)) => {
                    counters.webhook_dropped.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            erased = purge.recv() => match erased {
                // People erased: what is still waiting for them is never sent. Their
                // changes were all published before the erasure: take in what the
                // stream still holds first.
                Ok(ids) => {
                    while let Ok(c) = changes.try_recv() {
                        push(&mut pending, c);
                    }
                    pending.retain(|c| !ids.contains(&c.profile));
                    continue;
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            _ = sleep, if delay.is_some() => {}
        }
        // Take whatever else arrived, then send one batch.
        while let Ok(c) = changes.try_recv() {
            push(&mut pending, c);
        }
        let n = pending.len().min(BATCH);
        let batch: Vec<&PublishedChange> = pending.iter().take(n).collect();
        let body = serde_json::json!({"webhook": hook.id, "changes": batch}).to_string();
        let headers = [(
            "X-Microseg-Signature",
            signature(&hook.secret, now_s(), &body),
        )];
        let sent = match policy.resolve(&target).await {
            Ok(address) => outbound::post(&target, address, &headers, body.as_bytes()).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(status) if (200..300).contains(&status) => {
                pending.drain(..n);
                failures = 0;
                counters.webhook_delivered.fetch_add(1, Ordering::Relaxed);
            }
            outcome => {
                failures = failures.saturating_add(1);
                counters.webhook_failed.fetch_add(1, Ordering::Relaxed);
                let why = match outcome {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e,
                };
                tracing::warn!(webhook = hook.id, %why, failures, pending = pending.len(), "webhook delivery failed; retrying");
            }
        }
    }
}
