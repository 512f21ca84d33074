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

use microseg_core::hex;
use microseg_store::webhooks::Webhook;
use sha2::{Digest, Sha256};
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
/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| -> Vec<u8> { k.iter().map(|b| b ^ byte).collect() };
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The current Unix time in seconds.
fn now_s() -> i64 {
    crate::now().0.div_euclid(1000)
}

/// The `X-Microseg-Signature` value of `body` sent at `unix_seconds`:
/// `t=SECONDS,sha256=HEX`, HEX the HMAC-SHA256 of `SECONDS.BODY` keyed by the secret.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    let signed = format!("{unix_seconds}.{body}");
    let mac = hmac_sha256(secret.as_bytes(), signed.as_bytes());
    format!("t={unix_seconds},sha256={}", hex(&mac))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// The signed text is `1733140800.{}`: the signature is the HMAC of exactly that
    /// (checked against RFC 4231 above), and a different time signs differently.
    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        assert_eq!(
            signature("k", 1733140800, "{}"),
            format!(
                "t=1733140800,sha256={}",
                hex(&hmac_sha256(b"k", b"1733140800.{}"))
            )
        );
        assert_ne!(signature("k", 1, "{}"), signature("k", 2, "{}"));
    }
}
