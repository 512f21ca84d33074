//! Campaign files (stored as their JSON, versioned, with a status) and the outbox of
//! rendered messages. What a campaign means is `microseg-activate`'s; the store keeps the
//! text and the rows.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension as _};

use crate::error::StoreError;
use crate::store::{now_ms, Store};

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCampaign {
    /// Its name.
    pub name: String,
    /// Its version, from 1.
    pub version: i64,
    /// The campaign file, as JSON.
    pub body: String,
    /// `active`, `paused` or `archived`.
    pub status: String,
    /// When the current version was saved (UTC ms).
    pub updated_at: i64,
}

/// A message for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Unique per campaign, person and send slot: queueing it again does nothing.
    pub idempotency_key: String,
    /// The campaign.
    pub campaign: String,
    /// Its version.
    pub version: i64,
    /// The person (dense id).
    pub profile_id: u32,
    /// The channel's name.
    pub channel: String,
    /// The variant's name (`exploration` for the general message).
    pub variant: String,
    /// The rendered fields, as a JSON object.
    pub content: String,
    /// The offer, as JSON.
    pub offer: Option<String>,
    /// When it may be sent (UTC ms): now, or the end of the person's quiet hours.
    pub due_at: i64,
}

impl Store {
    /// Saves a campaign: version 1 when new; with `replace`, the next version of an
    /// existing one (its status kept). Returns the version.
    pub fn save_campaign(
        &mut self,
        name: &str,
        body: &str,
        replace: bool,
    ) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM campaigns WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let version = match (current, replace) {
            (Some(_), false) => {
                return Err(StoreError::Refused(format!(
                    "campaign '{name}' already exists (edit it to save a new version)"
                )))
            }
            (None, true) => return Err(StoreError::NotFound(format!("no campaign '{name}'"))),
            (Some(v), true) => v + 1,
            (None, false) => 1,
        };
        let now = now_ms();
        tx.execute(
            "INSERT INTO campaigns(name, version, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(name) DO UPDATE SET version = ?2, body = ?3, updated_at = ?4",
            params![name, version, body, now],
        )?;
        tx.execute(
            "INSERT INTO campaign_versions(name, version, body, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, version, body, now],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Every campaign, by name.
    pub fn campaigns(&self) -> Result<Vec<StoredCampaign>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, version, body, status, updated_at FROM campaigns ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredCampaign {
                name: r.get(0)?,
                version: r.get(1)?,
                body: r.get(2)?,
                status: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One campaign.
    pub fn campaign(&self, name: &str) -> Result<StoredCampaign, StoreError> {
        self.campaigns()?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no campaign '{name}' (see `microseg campaign list`)"
                ))
            })
    }

    /// Sets a campaign's status (`active`, `paused`, `archived`).
    pub fn set_campaign_status(&mut self, name: &str, status: &str) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE campaigns SET status = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, status, now_ms()],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no campaign '{name}'")));
        }
        Ok(())
    }

    /// Queues `messages` in one transaction, skipping any whose idempotency key is
    /// already there; `admit` is called with each message's index inside it, before its
    /// insert, and the message is queued only when it says so (the caller counts caps
    /// against what the outbox holds at that moment: two runs at once are serialised by
    /// the transaction). Returns how many were queued.
    pub fn queue_messages(
        &mut self,
        messages: &[OutboxMessage],
        mut admit: impl FnMut(&OutboxQuery<'_>, usize) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut queued = 0;
        {
            let query = OutboxQuery { conn: &tx };
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO outbox(idempotency_key, campaign, version, profile_id,
                     channel, variant, content, offer, created_at, due_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (i, m) in messages.iter().enumerate() {
                if !admit(&query, i)? {
                    continue;
                }
                queued += insert.execute(params![
                    m.idempotency_key,
                    m.campaign,
                    m.version,
                    m.profile_id,
                    m.channel,
                    m.variant,
                    m.content,
                    m.offer,
                    now,
                    m.due_at
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Adds an address (already normalised, see `microseg_activate::suppress`) to the
    /// suppression list of `channel`, kept as its SHA-256; false when it was there.
    pub fn suppress(
        &mut self,
        channel: &str,
        address_sha256: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO suppressions(channel, address_sha256, reason, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![channel, address_sha256, reason, now_ms()],
        )? > 0)
    }

    /// Removes an address from the suppression list; false when it was not there.
    pub fn unsuppress(&mut self, channel: &str, address_sha256: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM suppressions WHERE channel = ?1 AND address_sha256 = ?2",
            params![channel, address_sha256],
        )? > 0)
    }

    /// The suppressed addresses' hashes of `channel`.
    pub fn suppressed(
        &self,
        channel: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT address_sha256 FROM suppressions WHERE channel = ?1")?;
        let rows = stmt.query_map([channel], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many addresses each channel's suppression list holds.
    pub fn suppression_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT channel, count(*) FROM suppressions GROUP BY channel ORDER BY channel",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds `codes` to the pool of `campaign` (codes already there are kept as they are);
    /// returns how many were new.
    pub fn add_offer_codes(&mut self, campaign: &str, codes: &[String]) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO offer_codes(campaign, code) VALUES (?1, ?2)")?;
            for code in codes {
                added += insert.execute(params![campaign, code])? as u64;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// The pool of `campaign`: the codes given, by profile, and the free ones in the order
    /// they were added.
    pub fn offer_codes(&self, campaign: &str) -> Result<OfferCodes, StoreError> {
        let mut given = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT profile_id, code FROM offer_codes WHERE campaign = ?1 AND profile_id IS NOT NULL",
        )?;
        for row in stmt.query_map([campaign], |r| Ok((r.get::<_, u32>(0)?, r.get(1)?)))? {
            let (p, code) = row?;
            given.insert(p, code);
        }
        let mut stmt = self.conn.prepare(
            "SELECT code FROM offer_codes WHERE campaign = ?1 AND assigned_at IS NULL ORDER BY rowid",
        )?;
        let free = stmt
            .query_map([campaign], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(OfferCodes { given, free })
    }

    /// Remembers an audience export (its members' dense ids); returns its number.
    pub fn save_audience_export(
        &mut self,
        segment: &str,
        format: &str,
        members: &roaring::RoaringBitmap,
    ) -> Result<i64, StoreError> {
        let mut blob = Vec::with_capacity(members.serialized_size());
        members
            .serialize_into(&mut blob)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO audience_exports(segment, format, created_at, size, members) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![segment, format, now_ms(), members.len() as i64, blob],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The members of audience export `number`.
    pub fn audience_export(&self, number: i64) -> Result<roaring::RoaringBitmap, StoreError> {
        let blob: Vec<u8> = self
            .conn
            .query_row(
                "SELECT members FROM audience_exports WHERE id = ?1",
                [number],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("no audience export number {number}")))?;
        roaring::RoaringBitmap::deserialize_from(&blob[..])
            .map_err(|e| StoreError::Invalid(format!("audience export {number}: {e}")))
    }

    /// Records who `campaign` treated or held out (`arm`) and when; a person keeps their
    /// first assignment.
    pub fn record_campaign_members(
        &mut self,
        campaign: &str,
        members: &[(u32, &str, i64)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO campaign_members(campaign, profile_id, arm, at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (p, arm, at) in members {
                insert.execute(params![campaign, p, arm, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Who `campaign` treated or held out: (profile, arm, at).
    pub fn campaign_members(&self, campaign: &str) -> Result<Vec<(u32, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT profile_id, arm, at FROM campaign_members WHERE campaign = ?1 ORDER BY profile_id",
        )?;
        let rows = stmt.query_map([campaign], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many `event` events (e.g. `message_delivered`) name `campaign` in their
    /// properties; `None` when no event of that name was ever recorded (the channels do
    /// not report it).
    pub fn campaign_event_count(
        &self,
        campaign: &str,
        event: &str,
    ) -> Result<Option<u64>, StoreError> {
        let any: Option<i64> = self
            .conn
            .query_row("SELECT id FROM event_names WHERE name = ?1", [event], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(name_id) = any else { return Ok(None) };
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM events WHERE name_id = ?1 AND json_extract(properties, '$.campaign') = ?2",
            params![name_id, campaign],
            |r| r.get(0),
        )?;
        Ok(Some(n as u64))
    }

    /// The variant each person got from `campaign` (their first message), with the time
    /// they were treated: (profile, variant, at).
    pub fn campaign_variants(&self, campaign: &str) -> Result<Vec<(u32, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT m.profile_id, (SELECT o.variant FROM outbox o WHERE o.campaign = m.campaign
                                     AND o.profile_id = m.profile_id ORDER BY o.id LIMIT 1), m.at
             FROM campaign_members m WHERE m.campaign = ?1 AND m.arm = 'treated'",
        )?;
        let rows = stmt.query_map([campaign], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages of `campaign` handed over to their channel.
    pub fn campaign_sent(&self, campaign: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE campaign = ?1 AND status = 'sent'",
            [campaign],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// A text that changes whenever a campaign is saved or changes status, or a
    /// suppression list changes (cheap; a running server polls it to reload).
    pub fn activation_fingerprint(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row(
            "SELECT coalesce((SELECT group_concat(name || ':' || version || ':' || status || ':' || updated_at, ',')
                              FROM campaigns), '')
                    || '|' || (SELECT count(*) || ':' || coalesce(max(created_at), 0) FROM suppressions)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Reads of the outbox outside a queueing transaction (dry runs, decisions).
    pub fn outbox(&self) -> OutboxQuery<'_> {
        OutboxQuery { conn: &self.conn }
    }
}

/// Reads of the outbox (inside a queueing transaction, or not).
pub struct OutboxQuery<'c> {
    conn: &'c rusqlite::Connection,
}

/// An outbox message found by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedMessage {
    /// The person.
    pub profile_id: u32,
    /// The campaign.
    pub campaign: String,
    /// The variant.
    pub variant: String,
    /// The channel.
    pub channel: String,
}

/// A campaign's pool of offer codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferCodes {
    /// The code each person was given.
    pub given: HashMap<u32, String>,
    /// The codes not given yet, in the order they were added.
    pub free: Vec<String>,
}

impl OutboxQuery<'_> {
    /// The code of `campaign`'s pool given to `profile_id`, if any.
    pub fn code_of(&self, campaign: &str, profile_id: u32) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT code FROM offer_codes WHERE campaign = ?1 AND profile_id = ?2")?
            .query_row(params![campaign, profile_id], |r| r.get(0))
            .optional()?)
    }

    /// Gives `code` of `campaign`'s pool to `profile_id`, unless it was given meanwhile
    /// (false) or the person already has one (false).
    pub fn give_code(
        &self,
        campaign: &str,
        code: &str,
        profile_id: u32,
    ) -> Result<bool, StoreError> {
        if self.code_of(campaign, profile_id)?.is_some() {
            return Ok(false);
        }
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE offer_codes SET profile_id = ?3, assigned_at = ?4
                 WHERE campaign = ?1 AND code = ?2 AND assigned_at IS NULL",
            )?
            .execute(params![campaign, code, profile_id, now_ms()])?
            == 1)
    }

    /// Messages for `profile_id` created at or after `since` (UTC ms), on `channel` or
    /// (`None`) on every channel.
    pub fn count_since(
        &self,
        profile_id: u32,
        channel: Option<&str>,
        since: i64,
    ) -> Result<u64, StoreError> {
        // Prepared once per connection: a running server asks this on every decision.
        let n: i64 = match channel {
            Some(c) => self
                .conn
                .prepare_cached(
                    "SELECT count(*) FROM outbox WHERE profile_id = ?1 AND channel = ?2 AND created_at >= ?3",
                )?
                .query_row(params![profile_id, c, since], |r| r.get(0))?,
            None => self
                .conn
                .prepare_cached(
                    "SELECT count(*) FROM outbox WHERE profile_id = ?1 AND created_at >= ?2",
                )?
                .query_row(params![profile_id, since], |r| r.get(0))?,
        };
        Ok(n as u64)
    }

    /// The message with this key, if it is in the outbox.
    pub fn message_by_key(&self, key: &str) -> Result<Option<KeyedMessage>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT profile_id, campaign, variant, channel FROM outbox WHERE idempotency_key = ?1",
                [key],
                |r| {
                    Ok(KeyedMessage {
                        profile_id: r.get(0)?,
                        campaign: r.get(1)?,
                        variant: r.get(2)?,
                        channel: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether a message with this key is in the outbox.
    pub fn has_key(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM outbox WHERE idempotency_key = ?1",
                [key],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}
