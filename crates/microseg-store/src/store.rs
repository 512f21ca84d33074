//! The durable store: SQLite in WAL mode with `synchronous = FULL`, so a committed
//! transaction (a finished import, an acknowledged write) survives `kill -9` and power loss.
//!
//! Layout (schema version 1):
//!
//! ```sql
//! profiles(id INTEGER PRIMARY KEY,        -- dense id, 0.., first-seen order
//!          external_id TEXT UNIQUE,       -- the id people see
//!          traits TEXT,                   -- JSON object, typed by trait_types
//!          created_at, updated_at)        -- UTC ms
//! identities(kind, value, profile_id)     -- other ids: email, phone, anonymous_id
//! trait_types(name, type, separators)     -- a trait keeps the type it was first given
//! event_names(id, name)                  -- event names, interned
//! events(id INTEGER PRIMARY KEY, profile_id, time, name_id, revenue, properties)
//!                                         -- time in UTC ms, properties a JSON object
//! events_named                            -- view: events with their name
//! imports(id, kind, file, started_at, finished_at, rows, rejected)
//! meta(key, value)                        -- events_version: bumped by every import and
//!                                         -- every ingested commit (keys the columnar cache)
//! segments, segment_versions              -- (version 2) segment definitions, versioned
//! models(name, body, created_at)          -- (version 3) fitted models as JSON (`clv`)
//! experiments(name, control, arms, outcomes, file, created_at)
//! experiment_members(experiment, profile_id, arm, outcomes)
//!                                         -- arm: index into arms; outcomes: JSON array
//! (version 4) events.message_id           -- the sender's id of an ingested call (dedup)
//! profiles.merged_into                    -- set when an alias merged the profile into another
//! api_keys(id, kind, name, hash, created_at, valid_until, replaced_by)
//!                                         -- write/admin keys, SHA-256 of the secret;
//!                                            (version 7) valid_until: revoked, or the end
//!                                            of a rotation's grace; replaced_by: the new key
//! (version 5) webhooks(id, url, segments, secret, created_at)
//!                                         -- change subscriptions; segments: JSON list or NULL
//! (version 8) profiles.erased_at          -- set when the person was erased: the row stays
//!                                            (ids are dense) with a random external id,
//!                                            no traits, identities or events
//! imports.sha256                          -- the file's content hash (re-imports refused)
//! (version 9) campaigns(name, version, body, status, created_at, updated_at)
//!                                         -- campaign files (JSON), status active/paused/archived
//! campaign_versions(name, version, body, created_at)
//! outbox(id, idempotency_key UNIQUE, campaign, version, profile_id, channel, variant,
//!        content, offer, created_at, due_at, status)
//!                                         -- rendered messages waiting for delivery
//! (version 10) suppressions(channel, address_sha256, reason, created_at)
//!                                         -- never contact: addresses kept as SHA-256 only
//! (version 11) offer_codes(campaign, code, profile_id, assigned_at)
//!                                         -- a campaign's pool of codes; assigned_at set
//!                                            once given (profile_id cleared on erasure)
//! (version 12) audience_exports(id, segment, format, created_at, size, members)
//!                                         -- numbered exports; members: a roaring bitmap
//!                                            of dense ids (for `--diff-since`)
//! (version 13) outbox.attempts, last_error, next_at, sent_at
//!                                         -- delivery state (status queued, retry, sent,
//!                                            dead, cancelled)
//! deliveries(id, outbox_id, at, outcome, error)
//!                                         -- one row per delivery attempt
//! (version 14) campaign_members(campaign, profile_id, arm, at)
//!                                         -- who a campaign treated or held out, and when
//!                                            (first assignment), for its report
//! (version 15) secrets(name, value)       -- the workspace's own signing keys (hex), made
//!                                            on first use (unsubscribe links)
//! (version 16) warehouse_members(segment, version, engine, as_of, imported_at, size, members)
//!                                         -- the member list `warehouse run` brought back
//!                                            for a segment's version (roaring bitmap)
//! ```

use std::collections::HashMap;

use microseg_core::{ProfileId, Schema, Timestamp, TraitSpec, TraitType, Value};
use microseg_engine::ProfileTable;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::StoreError;
use crate::workspace::Workspace;

const SCHEMA_VERSION: i64 = 16;

const MIGRATION_1: &str = r#"
CREATE TABLE profiles(
    id INTEGER PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    traits TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE identities(
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    PRIMARY KEY(kind, value)
) WITHOUT ROWID;
CREATE TABLE trait_types(
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    separators TEXT
);
CREATE TABLE event_names(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE events(
    id INTEGER PRIMARY KEY,
    profile_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    name_id INTEGER NOT NULL,
    revenue REAL,
    properties TEXT
);
CREATE VIEW events_named AS
    SELECT e.id, e.profile_id, e.time, n.name, e.revenue, e.properties
    FROM events e JOIN event_names n ON n.id = e.name_id;
CREATE TABLE meta(
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta(key, value) VALUES ('events_version', 0);
CREATE TABLE imports(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    file TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    rejected INTEGER NOT NULL
);
"#;

const MIGRATION_2: &str = r#"
CREATE TABLE segments(
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    condition TEXT NOT NULL,
    definition TEXT NOT NULL,
    description TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE segment_versions(
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    condition TEXT NOT NULL,
    definition TEXT NOT NULL,
    description TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY(name, version)
);
"#;

const MIGRATION_3: &str = r#"
CREATE TABLE models(
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE experiments(
    name TEXT PRIMARY KEY,
    control TEXT NOT NULL,
    arms TEXT NOT NULL,
    outcomes TEXT NOT NULL,
    file TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE experiment_members(
    experiment TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    arm INTEGER NOT NULL,
    outcomes TEXT NOT NULL,
    PRIMARY KEY(experiment, profile_id)
) WITHOUT ROWID;
"#;

const MIGRATION_4: &str = r#"
ALTER TABLE events ADD COLUMN message_id TEXT;
ALTER TABLE profiles ADD COLUMN merged_into INTEGER;
CREATE INDEX identities_profile ON identities(profile_id);
CREATE TABLE api_keys(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#;

const MIGRATION_5: &str = r#"
CREATE TABLE webhooks(
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    segments TEXT,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#;

const MIGRATION_6: &str = r#"
ALTER TABLE profiles ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX profiles_version ON profiles(version);
CREATE INDEX profiles_merged ON profiles(merged_into) WHERE merged_into IS NOT NULL;
INSERT INTO meta(key, value) VALUES ('profiles_version', 0), ('merges_version', 0),
    ('rewrites', 0), ('store_id', abs(random()));
"#;

const MIGRATION_7: &str = r#"
ALTER TABLE api_keys ADD COLUMN valid_until INTEGER;
ALTER TABLE api_keys ADD COLUMN replaced_by INTEGER;
"#;

const MIGRATION_8: &str = r#"
ALTER TABLE profiles ADD COLUMN erased_at INTEGER;
ALTER TABLE imports ADD COLUMN sha256 TEXT;
CREATE INDEX imports_sha256 ON imports(sha256);
"#;

const MIGRATION_9: &str = r#"
CREATE TABLE campaigns(
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE campaign_versions(
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY(name, version)
);
CREATE TABLE outbox(
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    campaign TEXT NOT NULL,
    version INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    variant TEXT NOT NULL,
    content TEXT NOT NULL,
    offer TEXT,
    created_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
);
CREATE INDEX outbox_caps ON outbox(profile_id, channel, created_at);
"#;

const MIGRATION_10: &str = r#"
CREATE TABLE suppressions(
    channel TEXT NOT NULL,
    address_sha256 TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY(channel, address_sha256)
) WITHOUT ROWID;
"#;

const MIGRATION_11: &str = r#"
CREATE TABLE offer_codes(
    campaign TEXT NOT NULL,
    code TEXT NOT NULL,
    profile_id INTEGER,
    assigned_at INTEGER,
    PRIMARY KEY(campaign, code)
);
CREATE UNIQUE INDEX offer_codes_person ON offer_codes(campaign, profile_id)
    WHERE profile_id IS NOT NULL;
CREATE INDEX offer_codes_free ON offer_codes(campaign) WHERE assigned_at IS NULL;
"#;

const MIGRATION_12: &str = r#"
CREATE TABLE audience_exports(
    id INTEGER PRIMARY KEY,
    segment TEXT NOT NULL,
    format TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    members BLOB NOT NULL
);
"#;

const MIGRATION_13: &str = r#"
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN next_at INTEGER;
ALTER TABLE outbox ADD COLUMN sent_at INTEGER;
CREATE INDEX outbox_due ON outbox(status, id);
CREATE TABLE deliveries(
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX deliveries_message ON deliveries(outbox_id);
"#;

const MIGRATION_14: &str = r#"
CREATE TABLE campaign_members(
    campaign TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    arm TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY(campaign, profile_id)
) WITHOUT ROWID;
"#;

const MIGRATION_15: &str = r#"
CREATE TABLE secrets(
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#;

const MIGRATION_16: &str = r#"
CREATE TABLE warehouse_members(
    segment TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    engine TEXT NOT NULL,
    as_of INTEGER NOT NULL,
    imported_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    members BLOB NOT NULL
) WITHOUT ROWID;
"#;

/// The clock in UTC milliseconds, for `created_at` / `updated_at` columns.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Marks the events as changed (keys the columnar cache); every transaction that writes
/// events calls it.
pub(crate) fn bump_events_version(conn: &Connection) -> Result<u64, StoreError> {
    bump(conn, Counter::Events)
}

/// The counters in `meta` that tell snapshots (docs/store.md) what changed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    /// Moved by every transaction that writes events.
    Events,
    /// Moved by every transaction that changes profiles (new ones, traits, merges); the
    /// rows it changed get the new value in `profiles.version`.
    Profiles,
    /// Moved by every transaction that merges profiles.
    Merges,
    /// Moved by anything that changes or removes stored events (an erasure, retention):
    /// snapshots built before are rebuilt, not caught up.
    Rewrites,
}

impl Counter {
    fn key(self) -> &'static str {
        match self {
            Counter::Events => "events_version",
            Counter::Profiles => "profiles_version",
            Counter::Merges => "merges_version",
            Counter::Rewrites => "rewrites",
        }
    }
}

/// Moves `counter` by one inside the caller's transaction; returns the new value.
pub(crate) fn bump(conn: &Connection, counter: Counter) -> Result<u64, StoreError> {
    let v: i64 = conn.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = ?1 RETURNING value",
        [counter.key()],
        |r| r.get(0),
    )?;
    Ok(v as u64)
}

/// What the store holds, as far as snapshots care: read in one transaction, so the
/// values belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreState {
    /// A random number given to the store when it was made (a snapshot of another store
    /// with the same counters is not this one's).
    pub store_id: i64,
    /// Profiles (dense ids are `0..profiles`).
    pub profiles: u32,
    /// `meta.profiles_version`.
    pub profiles_version: u64,
    /// The largest event id (0 without events).
    pub max_event_id: u64,
    /// `meta.merges_version`.
    pub merges_version: u64,
    /// `meta.rewrites`: moved by anything that changes or removes stored events.
    pub rewrites: u64,
}

/// A stored segment definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSegment {
    /// Its name.
    pub name: String,
    /// Its version, from 1, bumped by every change.
    pub version: i64,
    /// The condition.
    pub condition: microseg_core::condition::Condition,
    /// What it is for.
    pub description: Option<String>,
    /// When the current version was saved (UTC ms).
    pub updated_at: Timestamp,
}

/// A stored segment whose definition does not read back.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableSegment {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// Why it does not read back.
    pub reason: String,
}

/// Most characters in a segment's description.
pub const MAX_DESCRIPTION: usize = 2_000;

/// The text and JSON forms a segment is saved in, checked first: a valid name, a condition
/// within the size limits, a description of at most [`MAX_DESCRIPTION`] characters, and
/// JSON that reads back to the same condition (so what is saved can always be read).
fn segment_forms(
    name: &str,
    condition: &microseg_core::condition::Condition,
    description: Option<&str>,
) -> Result<(String, String), StoreError> {
    microseg_core::condition::check_segment_name(name).map_err(StoreError::Refused)?;
    condition
        .check_size()
        .map_err(|e| StoreError::Refused(format!("segment '{name}': {e}")))?;
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(StoreError::Refused(format!(
            "segment '{name}': a description has at most {MAX_DESCRIPTION} characters"
        )));
    }
    let json = serde_json::to_string(condition)
        .map_err(|e| StoreError::Refused(format!("segment '{name}': {e}")))?;
    if read_condition(&json).as_ref() != Ok(condition) {
        return Err(StoreError::Refused(format!(
            "segment '{name}': its definition would not read back the same"
        )));
    }
    Ok((condition.to_string(), json))
}

/// A saved definition, read and checked against the size limits.
fn read_condition(json: &str) -> Result<microseg_core::condition::Condition, String> {
    let condition: microseg_core::condition::Condition =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    condition.check_size().map_err(|e| e.to_string())?;
    Ok(condition)
}

/// An open connection to a workspace's durable store.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) declared: Schema,
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// When it happened.
    pub time: Timestamp,
    /// Its name.
    pub name: String,
    /// Its revenue.
    pub revenue: Option<f64>,
    /// Its properties (a JSON object).
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// One profile as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    /// Dense id.
    pub id: ProfileId,
    /// External id.
    pub external_id: String,
    /// Identities as (kind, value).
    pub identities: Vec<(String, String)>,
    /// Typed traits by name.
    pub traits: Vec<(String, Value)>,
}

impl Store {
    /// Opens (and if needed creates or migrates) the store of `workspace`.
    pub fn open(workspace: &Workspace) -> Result<Store, StoreError> {
        let conn = Connection::open(workspace.store_path())?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -262_144)?;
        // What is deleted or overwritten (an erased person, a trait's old value) is
        // zeroed in the file, not left in free space.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let migrations = [
            MIGRATION_1,
            MIGRATION_2,
            MIGRATION_3,
            MIGRATION_4,
            MIGRATION_5,
            MIGRATION_6,
            MIGRATION_7,
            MIGRATION_8,
            MIGRATION_9,
            MIGRATION_10,
            MIGRATION_11,
            MIGRATION_12,
            MIGRATION_13,
            MIGRATION_14,
            MIGRATION_15,
            MIGRATION_16,
        ];
        let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (to, sql) in (1..).zip(migrations) {
            if version >= to {
                continue;
            }
            // Another process may be migrating the same store: take the write lock, then
            // look again.
            conn.execute_batch("BEGIN IMMEDIATE")?;
            version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version < to {
                if let Err(e) = conn.execute_batch(&format!("{sql} PRAGMA user_version = {to};")) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                version = to;
            }
            conn.execute_batch("COMMIT")?;
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Invalid(format!(
                "{}: store schema version {version} is newer than this microseg ({SCHEMA_VERSION})",
                workspace.store_path().display()
            )));
        }
        Ok(Store {
            conn,
            declared: workspace.config.declared_schema(),
        })
    }

    /// Copies what the write-ahead log holds into the database file without waiting for
    /// readers or writers (`PRAGMA wal_checkpoint(PASSIVE)`); returns the log's frames and
    /// how many of them are in the file now. The writer reuses the log from its start once
    /// everything in it was copied, which keeps the log's size bounded.
    pub fn checkpoint(&self) -> Result<(i64, i64), StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }

    /// Runs a bulk write (an import: one large transaction) with a rollback journal instead
    /// of the write-ahead log when no other connection has the store open, then returns to
    /// WAL. Both are atomic and durable (`synchronous = FULL`), but in WAL mode every new
    /// page is written twice, to the log and again by the checkpoint, while a rollback
    /// journal writes pages appended to the file once (25% faster imports). While another
    /// connection is open SQLite refuses to leave WAL, and the import simply runs in WAL.
    /// After a crash in between, the next [`Store::open`] rolls the journal back and turns
    /// WAL on again.
    pub(crate) fn bulk_write<T>(
        &mut self,
        write: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mode: Result<String, _> =
            self.conn
                .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0));
        let switched = matches!(mode.as_deref(), Ok("delete"));
        let result = write(self);
        if switched {
            let back: Result<String, _> =
                self.conn
                    .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0));
            if let Err(e) = back {
                return result.and(Err(e.into()));
            }
        }
        result
    }

    /// The trait schema: types stored by earlier imports, with the config's declarations
    /// taking precedence for traits not yet stored.
    pub fn schema(&self) -> Result<Schema, StoreError> {
        let mut schema = self.declared.clone();
        schema.extend(self.stored_schema()?);
        Ok(schema)
    }

    /// The trait types stored by earlier imports.
    pub(crate) fn stored_schema(&self) -> Result<Schema, StoreError> {
        let mut schema = Schema::new();
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, separators FROM trait_types")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (name, ty, separators) = row?;
            let ty = TraitType::from_name(&ty).ok_or_else(|| {
                StoreError::Invalid(format!("store: trait '{name}' has unknown type '{ty}'"))
            })?;
            schema.insert(name, TraitSpec { ty, separators });
        }
        Ok(schema)
    }

    /// Number of profiles and of events.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            let n: i64 =
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(n as u64)
        };
        Ok((count("profiles")?, count("events")?))
    }

    /// External id of every profile, indexed by dense id.
    pub fn external_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, external_id FROM profiles ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            check_dense(row.get(0)?, ids.len())?;
            ids.push(row.get(1)?);
        }
        Ok(ids)
    }

    /// Every profile's traits, by column.
    pub fn load_profiles(&self) -> Result<ProfileTable, StoreError> {
        let schema = self.schema()?;
        let mut table = ProfileTable::with_schema(&schema);
        let mut stmt = self
            .conn
            .prepare("SELECT id, external_id, traits FROM profiles ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            check_dense(row.get(0)?, table.len())?;
            let traits_json: String = row.get(2)?;
            let parsed: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&traits_json).unwrap_or_default();
            let traits: HashMap<&str, Value> = parsed
                .iter()
                .filter_map(|(k, v)| {
                    let spec = schema.get(k)?;
                    Some((k.as_str(), Value::from_json(spec.ty, v)?))
                })
                .collect();
            table.push(&row.get::<_, String>(1)?, &traits);
        }
        for (from, _) in self.merges()? {
            table.retired.insert(from);
        }
        for p in self.erased()? {
            table.retired.insert(p);
        }
        Ok(table)
    }

    /// The profile each profile's events belong to: itself, or for a profile merged by
    /// `alias`, the one it was merged into (following chains of merges).
    pub fn survivors(&self, profiles: usize) -> Result<Vec<ProfileId>, StoreError> {
        let mut into: Vec<ProfileId> = (0..profiles as ProfileId).collect();
        for (from, to) in self.merges()? {
            if let Some(slot) = into.get_mut(from as usize) {
                *slot = to;
            }
        }
        let mut out = into.clone();
        for (p, slot) in out.iter_mut().enumerate() {
            let (mut q, mut steps) = (p as ProfileId, 0);
            while into.get(q as usize).is_some_and(|&n| n != q) && steps < profiles {
                q = into[q as usize];
                steps += 1;
            }
            *slot = q;
        }
        Ok(out)
    }

    /// Profiles merged into others by `alias` (merged, survivor), in merge order.
    pub fn merges(&self) -> Result<Vec<(u32, u32)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, merged_into FROM profiles WHERE merged_into IS NOT NULL ORDER BY updated_at, id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Saves `condition` as segment `name`: version 1 when new; with `replace`, the next
    /// version of an existing segment. Returns the version saved.
    pub fn save_segment(
        &mut self,
        name: &str,
        condition: &microseg_core::condition::Condition,
        description: Option<&str>,
        replace: bool,
    ) -> Result<i64, StoreError> {
        // Immediate: take the write lock first (waiting for it), so a commit by another
        // connection between a read and the first write cannot fail the transaction.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM segments WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let version = match (current, replace) {
            (Some(_), false) => {
                return Err(StoreError::Refused(format!(
                    "segment '{name}' already exists (use --replace to save a new version)"
                )))
            }
            (Some(v), true) => v + 1,
            // After a delete, the history goes on where it stopped.
            (None, _) => {
                tx.query_row(
                    "SELECT coalesce(max(version), 0) FROM segment_versions WHERE name = ?1",
                    [name],
                    |r| r.get::<_, i64>(0),
                )? + 1
            }
        };
        let (text, json) = segment_forms(name, condition, description)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO segments(name, version, condition, definition, description, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(name) DO UPDATE SET version = ?2, condition = ?3, definition = ?4,
                 description = coalesce(?5, description), updated_at = ?6",
            params![name, version, text, json, description, now],
        )?;
        tx.execute(
            "INSERT INTO segment_versions(name, version, condition, definition, description, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, version, text, json, description, now],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Deletes a segment (its history of versions stays); false when there is none.
    /// Refused while another segment refers to it with `in_segment`. Works on a segment
    /// that does not read back, which is how one is repaired.
    pub fn delete_segment(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let users: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name, definition FROM segments WHERE name != ?1")?;
            let rows = stmt.query_map([name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut users = Vec::new();
            for row in rows {
                let (other, json) = row?;
                if read_condition(&json).is_ok_and(|c| c.segment_refs().contains(&name)) {
                    users.push(other);
                }
            }
            users
        };
        if !users.is_empty() {
            return Err(StoreError::Refused(format!(
                "segment '{name}' is used by {} (in_segment); change or delete {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        let deleted = tx.execute("DELETE FROM segments WHERE name = ?1", [name])? > 0;
        tx.commit()?;
        Ok(deleted)
    }

    /// The current version of a segment, readable or not; `None` when there is none.
    pub fn segment_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version FROM segments WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every stored segment that reads back, by name. One that does not (saved by an
    /// older version without today's checks, or changed by hand) is skipped with a
    /// warning, never fatal: [`Store::unreadable_segments`] lists them for repair.
    pub fn segments(&self) -> Result<Vec<StoredSegment>, StoreError> {
        let (readable, unreadable) = self.read_segments()?;
        for u in &unreadable {
            tracing::warn!(segment = %u.name, reason = %u.reason, "segment skipped: unreadable");
        }
        Ok(readable)
    }

    /// The stored segments that do not read back, with the reason (delete them, or save
    /// them again with `--replace`).
    pub fn unreadable_segments(&self) -> Result<Vec<UnreadableSegment>, StoreError> {
        Ok(self.read_segments()?.1)
    }

    fn read_segments(&self) -> Result<(Vec<StoredSegment>, Vec<UnreadableSegment>), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, version, definition, description, updated_at FROM segments ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
        for row in rows {
            let (name, version, json, description, updated_at) = row?;
            match read_condition(&json) {
                Ok(condition) => readable.push(StoredSegment {
                    name,
                    version,
                    condition,
                    description,
                    updated_at: Timestamp(updated_at),
                }),
                Err(reason) => unreadable.push(UnreadableSegment {
                    name,
                    version,
                    reason,
                }),
            }
        }
        Ok((readable, unreadable))
    }

    /// The latest condition of every segment, by name (what `in_segment` refers to).
    pub fn segment_conditions(
        &self,
    ) -> Result<std::collections::BTreeMap<String, microseg_core::condition::Condition>, StoreError>
    {
        Ok(self
            .segments()?
            .into_iter()
            .map(|s| (s.name, s.condition))
            .collect())
    }

    /// Opens a read transaction that pins the store as it is now: every read through
    /// this connection sees this state until the connection is dropped (the server's
    /// backfill reads the store as it was between two commits).
    pub fn begin_read(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        // The snapshot is taken by the first read.
        self.conn
            .query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// What the store holds, as far as snapshots care, read in one transaction (the
    /// caller's, when one is open).
    pub fn state(&self) -> Result<StoreState, StoreError> {
        let own = self.conn.is_autocommit();
        if own {
            self.conn.execute_batch("BEGIN")?;
        }
        let state = self.read_state();
        if own {
            // Ends the read, also after a failed one.
            self.conn.execute_batch("COMMIT")?;
        }
        state
    }

    fn read_state(&self) -> Result<StoreState, StoreError> {
        let tx = &self.conn;
        let meta = |key: &str| -> Result<i64, StoreError> {
            Ok(tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
        };
        let state = StoreState {
            store_id: meta("store_id")?,
            profiles_version: meta("profiles_version")? as u64,
            merges_version: meta("merges_version")? as u64,
            rewrites: meta("rewrites")? as u64,
            profiles: tx.query_row("SELECT coalesce(max(id) + 1, 0) FROM profiles", [], |r| {
                r.get(0)
            })?,
            max_event_id: tx.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        };
        Ok(state)
    }

    /// The `events_version` counter: moved by every import and every ingested commit.
    pub fn events_version(&self) -> Result<u64, StoreError> {
        let v: i64 = self.conn.query_row(
            "SELECT value FROM meta WHERE key = 'events_version'",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    /// Event names by id (ids are dense from 0).
    pub fn event_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM event_names ORDER BY id")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// One profile with its identities and typed traits.
    pub fn profile(&self, external_id: &str) -> Result<StoredProfile, StoreError> {
        let found: Option<(u32, String)> = self
            .conn
            .query_row(
                "SELECT id, traits FROM profiles WHERE external_id = ?1",
                [external_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (id, traits_json) =
            found.ok_or_else(|| StoreError::UnknownProfile(external_id.to_string()))?;
        let schema = self.schema()?;
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&traits_json).unwrap_or_default();
        let traits = parsed
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), Value::from_json(schema.get(k)?.ty, v)?)))
            .collect();
        let mut stmt = self.conn.prepare(
            "SELECT kind, value FROM identities WHERE profile_id = ?1 ORDER BY kind, value",
        )?;
        let identities = stmt
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(StoredProfile {
            id,
            external_id: external_id.to_string(),
            identities,
            traits,
        })
    }

    /// The last `limit` events of profile `id` (and of the profiles merged into it) at or
    /// before `as_of`, newest first.
    pub fn recent_events(
        &self,
        id: ProfileId,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "WITH RECURSIVE family(id) AS (
                 SELECT ?1 UNION SELECT p.id FROM profiles p JOIN family f ON p.merged_into = f.id)
             SELECT time, name, revenue, properties FROM events_named
             WHERE profile_id IN family AND time <= ?2 ORDER BY time DESC, id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, as_of.0, limit as i64], |r| {
            let props: Option<String> = r.get(3)?;
            Ok(StoredEvent {
                time: Timestamp(r.get(0)?),
                name: r.get(1)?,
                revenue: r.get(2)?,
                properties: props
                    .and_then(|p| serde_json::from_str(&p).ok())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Profiles are read in id order; each id must be the next dense one.
fn check_dense(id: u32, expected: usize) -> Result<(), StoreError> {
    if id as usize != expected {
        return Err(StoreError::Invalid(format!(
            "store: profile ids are not dense (expected {expected}, found {id})"
        )));
    }
    Ok(())
}
