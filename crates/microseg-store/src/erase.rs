//! Erasure of a person (the right to be forgotten) and retention of events
//! ([`Store::delete_events_before`], `[limits] retention_days`).
//!
//! Erasing a profile erases it and every profile merged into it (the same person): their
//! events, identities and experiment records are deleted, and their rows stay only as
//! tombstones (dense ids cannot have holes): a random external id, no traits, `erased_at`
//! set, in no segment. Lines of the import logs (`logs/`, rejected rows) that hold one of
//! their ids are removed. The store zeroes what it deletes (`secure_delete`), the columnar
//! snapshots, which hold copies, are removed (commands rebuild them), and the write-ahead
//! log, which may hold old page versions, is truncated by [`Store::truncate_log`] (the
//! command does it; a server's log is removed when it stops). What is logged is the dense id and counts, never an id or a
//! value of the person.

use rusqlite::params;

use crate::error::StoreError;
use crate::keys::random_hex;
use crate::store::{bump, now_ms, Counter, Store};
use crate::Workspace;

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// The dense ids of the profiles erased: the one named first, then the profiles merged
    /// into it.
    pub profiles: Vec<u32>,
    /// Events deleted.
    pub events: u64,
    /// Identities (anonymous ids, aliases) deleted.
    pub identities: u64,
    /// Every id the person went by (never shown; for [`Erased::forget_copies`]).
    #[serde(skip)]
    ids: Vec<String>,
}

impl Erased {
    /// Removes the copies outside the store: the columnar snapshots, and the lines of
    /// the import logs that hold one of the person's ids. File work, kept out of the
    /// store's transaction (and off a server's writer thread).
    pub fn forget_copies(&self, workspace: &Workspace) {
        crate::tables::remove_snapshots(workspace);
        scrub_logs(workspace, &self.ids);
    }
}

/// Removes the lines that hold one of `names` (ids without the `anonymous:` prefix too)
/// from the files in the workspace's `logs/` (rejected import rows keep the raw line).
fn scrub_logs(workspace: &Workspace, names: &[String]) {
    let needles: Vec<&[u8]> = names
        .iter()
        .map(|n| n.strip_prefix("anonymous:").unwrap_or(n).as_bytes())
        .filter(|n| !n.is_empty())
        .collect();
    let Ok(entries) = std::fs::read_dir(workspace.dir.join("logs")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let holds = |line: &[u8]| {
            needles
                .iter()
                .any(|n| line.windows(n.len()).any(|w| w == *n))
        };
        if !holds(&bytes) {
            continue;
        }
        let kept: Vec<u8> = bytes
            .split_inclusive(|&b| b == b'\n')
            .filter(|line| !holds(line))
            .flatten()
            .copied()
            .collect();
        let _ = std::fs::write(&path, kept);
    }
}

impl Store {
    /// Erases the person with external id `external_id` (and the profiles merged into
    /// it) in the store; see the module's documentation, and [`Erased::forget_copies`]
    /// for the copies outside it. Fails with [`StoreError::UnknownProfile`]
    /// for an id no live profile has.
    pub fn erase_profile(&mut self, external_id: &str) -> Result<Erased, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let root: u32 = tx
            .query_row(
                "SELECT id FROM profiles WHERE external_id = ?1 AND erased_at IS NULL
                 AND merged_into IS NULL",
                [external_id],
                |r| r.get(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => {
                    StoreError::UnknownProfile(external_id.to_string())
                }
                e => e.into(),
            })?;
        let profiles: Vec<u32> = tx
            .prepare(
                "WITH RECURSIVE family(id) AS (
                     SELECT ?1 UNION SELECT p.id FROM profiles p JOIN family f ON p.merged_into = f.id)
                 SELECT id FROM family ORDER BY id = ?1 DESC, id",
            )?
            .query_map([root], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS erasing(id INTEGER PRIMARY KEY)")?;
        tx.execute("DELETE FROM erasing", [])?;
        for p in &profiles {
            tx.execute("INSERT INTO erasing(id) VALUES (?1)", [p])?;
        }
        // Every id the person went by, to scrub from the import logs below.
        let names: Vec<String> = tx
            .prepare(
                "SELECT external_id FROM profiles WHERE id IN (SELECT id FROM erasing)
                 UNION SELECT value FROM identities WHERE profile_id IN (SELECT id FROM erasing)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let events = tx.execute(
            "DELETE FROM events WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )? as u64;
        let identities = tx.execute(
            "DELETE FROM identities WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )? as u64;
        tx.execute(
            "DELETE FROM experiment_members WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )?;
        tx.execute(
            "DELETE FROM deliveries WHERE outbox_id IN
                 (SELECT id FROM outbox WHERE profile_id IN (SELECT id FROM erasing))",
            [],
        )?;
        tx.execute(
            "DELETE FROM outbox WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )?;
        tx.execute(
            "DELETE FROM campaign_members WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )?;
        // A code given stays given (it may be in use), no longer tied to the person.
        tx.execute(
            "UPDATE offer_codes SET profile_id = NULL WHERE profile_id IN (SELECT id FROM erasing)",
            [],
        )?;
        let now = now_ms();
        let version = bump(&tx, Counter::Profiles)?;
        for p in &profiles {
            // Random, so no sender can name (and so revive) the tombstone.
            let tombstone = format!("erased:{}", random_hex(16)?);
            tx.execute(
                "UPDATE profiles SET external_id = ?2, traits = '{}', erased_at = ?3,
                     updated_at = ?3, version = ?4 WHERE id = ?1",
                params![p, tombstone, now, version as i64],
            )?;
        }
        tx.execute("DELETE FROM erasing", [])?;
        bump(&tx, Counter::Events)?;
        bump(&tx, Counter::Rewrites)?;
        bump(&tx, Counter::Merges)?;
        tx.commit()?;
        Ok(Erased {
            profiles,
            events,
            identities,
            ids: names,
        })
    }

    /// Moves everything the write-ahead log holds into the database file and truncates
    /// the log to nothing, so the old page versions it held (an erased person's data) are
    /// gone from the disk. It waits for readers and blocks writers meanwhile: commands
    /// call it after an erasure; the server does not (its log is removed when it stops).
    pub fn truncate_log(&self) -> Result<(), StoreError> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Refused(
                "the write-ahead log could not be truncated: another connection reads the \
                 store; run the command again when it is done"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Deletes the events dated before `before` (UTC ms); returns how many. Snapshots
    /// built before are removed (they hold copies).
    pub fn delete_events_before(
        &mut self,
        workspace: &Workspace,
        before: microseg_core::Timestamp,
    ) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM events WHERE time < ?1", [before.0])? as u64;
        if deleted > 0 {
            bump(&tx, Counter::Events)?;
            bump(&tx, Counter::Rewrites)?;
        }
        tx.commit()?;
        if deleted > 0 {
            crate::tables::remove_snapshots(workspace);
        }
        Ok(deleted)
    }

    /// The dense ids of erased profiles.
    pub fn erased(&self) -> Result<Vec<u32>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM profiles WHERE erased_at IS NOT NULL ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
