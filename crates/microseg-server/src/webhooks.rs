//! Webhook deliveries: one task per subscription follows the membership changes, keeps
//! the ones for its segments in a bounded buffer and POSTs them in batches
//! (`{"webhook": ID, "changes": [...]}`, the change objects of `/v1/changes`), signed with
//! `X-Microseg-Signature: sha256=HEX` (HMAC-SHA256 of the body with the subscription's
//! secret). A failed delivery (no connection, timeout, non-2xx) is retried with
//! exponential back-off from [`FIRST_RETRY`] up to [`MAX_RETRY`] while new changes keep
//! queueing; past [`MAX_PENDING`] the oldest are dropped and counted. Delivery is
//! at-least-once while the server runs; undelivered changes do not survive a restart.
//!
//! Only `http://` URLs: HTTPS receivers sit behind a TLS-terminating relay for now.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use microseg_store::webhooks::Webhook;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::counters::Counters;
use crate::pipeline::PublishedChange;

/// Most changes in one delivery.
pub const BATCH: usize = 500;
/// Most changes waiting for one subscription.
pub const MAX_PENDING: usize = 100_000;
/// The first retry's delay; each failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest delay between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where an `http://host[:port]/path` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The path, from `/`.
    pub path: String,
}

/// Reads a webhook URL; the error says what is wrong with it.
pub fn target(url: &str) -> Result<Target, String> {
    if url.starts_with("https://") {
        return Err("https:// is not supported yet: point the webhook at an http:// relay that terminates TLS".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(format!("'{host}' is not a host[:port]"));
    }
    let authority = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok(Target {
        authority,
        path: path.to_string(),
    })
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One POST; the response's status.
async fn post(target: &Target, body: &[u8], signature: &str) -> Result<u16, String> {
    let send = async {
        let mut stream = tokio::net::TcpStream::connect(&target.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", target.authority))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Microseg-Signature: sha256={signature}\r\nUser-Agent: microseg\r\nConnection: close\r\n\r\n",
            target.path,
            target.authority,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no HTTP status in the reply".to_string())
    };
    tokio::time::timeout(TIMEOUT, send)
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
}

/// Delivers `hook`'s changes from `changes` until the stream closes or `stop` flips.
pub async fn deliver(
    hook: Webhook,
    mut changes: broadcast::Receiver<PublishedChange>,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(target) = target(&hook.url) else {
        tracing::warn!(webhook = hook.id, url = %hook.url, "webhook URL unusable; not delivering");
        return;
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
            _ = sleep, if delay.is_some() => {}
        }
        // Take whatever else arrived, then send one batch.
        while let Ok(c) = changes.try_recv() {
            push(&mut pending, c);
        }
        let n = pending.len().min(BATCH);
        let batch: Vec<&PublishedChange> = pending.iter().take(n).collect();
        let body = serde_json::json!({"webhook": hook.id, "changes": batch}).to_string();
        let signature = hex(&hmac_sha256(hook.secret.as_bytes(), body.as_bytes()));
        match post(&target, body.as_bytes(), &signature).await {
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

    #[test]
    fn urls_are_read_or_refused_with_the_reason() {
        assert_eq!(
            target("http://127.0.0.1:9000/hooks/a").unwrap(),
            Target {
                authority: "127.0.0.1:9000".into(),
                path: "/hooks/a".into()
            }
        );
        assert_eq!(
            target("http://example.com").unwrap().authority,
            "example.com:80"
        );
        assert!(target("https://x").unwrap_err().contains("relay"));
        assert!(target("ftp://x").unwrap_err().contains("http://"));
        assert!(target("http:///x").is_err());
    }
}
