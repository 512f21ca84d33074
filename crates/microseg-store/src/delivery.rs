//! Delivery bookkeeping of the outbox: which messages are due, and what each attempt
//! did. A message is `queued` until handed over: `sent` once a channel took it, `retry`
//! (with `next_at`) after a failed attempt, `dead` after the last allowed one, `cancelled`
//! when the person can no longer be reached (consent withdrawn, suppressed, erased, no
//! address). Every attempt is a row of `deliveries` (the log). Outcomes are recorded
//! after the hand-over, so a process killed in between hands those messages over again
//! on the next pass: at most the in-flight ones twice, each with its idempotency key.

use rusqlite::params;

use crate::error::StoreError;
use crate::store::Store;

/// A message due for delivery, with what the channel needs of its person.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The outbox row.
    pub id: i64,
    /// The message's idempotency key.
    pub idempotency_key: String,
    /// The campaign.
    pub campaign: String,
    /// The person's dense id.
    pub profile_id: u32,
    /// Their external id.
    pub external_id: String,
    /// Their traits (JSON object as stored).
    pub traits: String,
    /// The channel.
    pub channel: String,
    /// The variant.
    pub variant: String,
    /// The rendered fields (JSON object).
    pub content: String,
    /// The offer (JSON), if any.
    pub offer: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A channel took it.
    Sent,
    /// It failed; try again at `next_at` (UTC ms).
    Retry {
        /// Why (no personal data: the channel's reply is trimmed of addresses by the caller).
        error: String,
        /// When to try again.
        next_at: i64,
    },
    /// It failed for the last allowed time.
    Dead {
        /// Why.
        error: String,
    },
    /// Not sent, and never will be.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Cancelled { .. } => "cancelled",
        }
    }
}

/// How many messages are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// Queued or waiting for a retry (due now or later).
    pub pending: u64,
    /// Given up.
    pub dead: u64,
    /// Handed over.
    pub sent: u64,
}

/// One delivery attempt of a campaign's message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryAttempt {
    /// When (ms since the epoch).
    pub at: i64,
    /// The message's idempotency key.
    pub key: String,
    /// Its channel.
    pub channel: String,
    /// Its variant.
    pub variant: String,
    /// `sent`, `retry` or `dead`.
    pub outcome: String,
    /// The channel's error, if any.
    pub error: Option<String>,
}

impl Store {
    /// Up to `limit` messages due at `now` (queued or to retry, their time come) with an
    /// outbox id above `after`, in id order (a pass walks the outbox once).
    pub fn due_messages(&self, now: i64, after: i64, limit: usize) -> Result<Vec<Due>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.idempotency_key, o.campaign, o.profile_id, p.external_id, p.traits,
                    o.channel, o.variant, o.content, o.offer, o.attempts
             FROM outbox o JOIN profiles p ON p.id = o.profile_id
             WHERE o.status IN ('queued', 'retry') AND o.due_at <= ?1
               AND (o.next_at IS NULL OR o.next_at <= ?1) AND o.id > ?3
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64, after], |r| {
            Ok(Due {
                id: r.get(0)?,
                idempotency_key: r.get(1)?,
                campaign: r.get(2)?,
                profile_id: r.get(3)?,
                external_id: r.get(4)?,
                traits: r.get(5)?,
                channel: r.get(6)?,
                variant: r.get(7)?,
                content: r.get(8)?,
                offer: r.get(9)?,
                attempts: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records attempts made at `at` (UTC ms), in one transaction.
    pub fn record_deliveries(
        &mut self,
        at: i64,
        outcomes: &[(i64, Outcome)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, last_error = ?3,
                        next_at = ?4, sent_at = CASE WHEN ?2 = 'sent' THEN ?5 ELSE sent_at END
                 WHERE id = ?1",
            )?;
            let mut log = tx.prepare_cached(
                "INSERT INTO deliveries(outbox_id, at, outcome, error)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (id, outcome) in outcomes {
                let (error, next_at) = match outcome {
                    Outcome::Sent => (None, None),
                    Outcome::Retry { error, next_at } => (Some(error.as_str()), Some(*next_at)),
                    Outcome::Dead { error } => (Some(error.as_str()), None),
                    Outcome::Cancelled { reason } => (Some(reason.as_str()), None),
                };
                update.execute(params![id, outcome.status(), error, next_at, at])?;
                log.execute(params![id, at, outcome.status(), error])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// How many messages are pending, dead and sent.
    pub fn outbox_state(&self) -> Result<OutboxState, StoreError> {
        let mut s = OutboxState::default();
        let mut stmt = self
            .conn
            .prepare("SELECT status, count(*) FROM outbox GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            let n = n as u64;
            match status.as_str() {
                "queued" | "retry" => s.pending += n,
                "dead" => s.dead += n,
                "sent" => s.sent += n,
                _ => {}
            }
        }
        Ok(s)
    }

    /// Campaign `campaign`'s messages by status (queued, retry, sent, dead, cancelled).
    pub fn campaign_outbox(&self, campaign: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT status, count(*) FROM outbox WHERE campaign = ?1 GROUP BY status ORDER BY status",
        )?;
        let rows = stmt.query_map([campaign], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last `limit` delivery attempts of campaign `campaign`'s messages, newest first.
    /// No content and no address: what the console shows of the delivery log.
    pub fn campaign_deliveries(
        &self,
        campaign: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.at, o.idempotency_key, o.channel, o.variant, d.outcome, d.error
             FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE o.campaign = ?1 ORDER BY d.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![campaign, limit as i64], |r| {
            Ok(DeliveryAttempt {
                at: r.get(0)?,
                key: r.get(1)?,
                channel: r.get(2)?,
                variant: r.get(3)?,
                outcome: r.get(4)?,
                error: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The delivery log of the message with `idempotency_key`: (at, outcome, error).
    pub fn delivery_log(
        &self,
        idempotency_key: &str,
    ) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.at, d.outcome, d.error FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE o.idempotency_key = ?1 ORDER BY d.id",
        )?;
        let rows = stmt.query_map([idempotency_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
