//! The write path of the HTTP server: tracking messages (Segment tracking API) into the durable store, many
//! requests per transaction (group commit: one fsync acknowledges them all).
//!
//! Identity: `userId` is the profile's external id; an `anonymousId` alone gets a profile
//! of its own (external id `anonymous:<id>`), and the first call that carries both links
//! them, merging that anonymous profile into the user's. `alias` merges the profile of
//! `previousId` into the user's. A merged profile keeps its rows (`merged_into` points to
//! the survivor); its identities and missing traits move to the survivor, and loaders
//! give its events to the survivor.
//!
//! De-duplication: a message whose `messageId` was seen among the last
//! [`Ingestor::DEDUP_WINDOW`] events is skipped (retries resend whole batches); the ids
//! are reloaded from the events table at start, so it holds across restarts.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use microseg_core::time::parse_timestamp;
use microseg_core::{ProfileId, Timestamp, TraitType, Value};
use microseg_engine::streaming::StreamEvent;
use rusqlite::params;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value as Json};

use crate::error::StoreError;
use crate::event_rows::{EventInserter, EventRow, EventRows};
use crate::store::{bump, bump_events_version, now_ms, Counter, Store};
use crate::tracking::{Action, Message};

/// What a committed write did, in order, for the in-memory state to follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A new profile.
    Profile {
        /// Its dense id.
        id: ProfileId,
        /// Its external id.
        external_id: String,
    },
    /// Traits set (`None`: removed) on a profile.
    Traits {
        /// The profile.
        profile: ProfileId,
        /// Name, type and value.
        traits: Vec<(String, TraitType, Option<Value>)>,
    },
    /// An event.
    Event {
        /// The profile.
        profile: ProfileId,
        /// The event, with all its properties.
        event: StreamEvent,
    },
    /// Profile `from` was merged into `into`.
    Merge {
        /// The merged profile (retired).
        from: ProfileId,
        /// The survivor.
        into: ProfileId,
    },
    /// These profiles (a person and those merged into it) were erased.
    Erase {
        /// Their dense ids.
        profiles: Vec<ProfileId>,
    },
}

/// The result of one group commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    /// What changed, in order.
    pub applied: Vec<Applied>,
    /// Messages skipped as already seen.
    pub duplicates: u64,
    /// Trait values dropped because their type differs from the trait's: the name and
    /// why, never the value (these are logged).
    pub dropped: Vec<String>,
    /// `alias` calls not carried out because they would merge two known customers.
    pub refused_merges: u64,
    /// The store's `events_version` after this commit.
    pub version: u64,
}

/// How many distinct names a workspace may hold (`[limits]` in `microseg.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLimits {
    /// Distinct trait names.
    pub traits: usize,
    /// Distinct event names.
    pub event_names: usize,
    /// Whether an `alias` may merge two known customers.
    pub alias_merges_customers: bool,
}

impl From<&crate::workspace::LimitsSection> for NameLimits {
    fn from(l: &crate::workspace::LimitsSection) -> NameLimits {
        NameLimits {
            traits: l.traits,
            event_names: l.event_names,
            alias_merges_customers: l.alias_merges_customers,
        }
    }
}

/// A request refused because it would add names past a [`NameLimits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many trait names.
    #[error(
        "the workspace holds {held} trait names and this request adds {adding}: at most \
         {limit} ([limits] traits in microseg.toml)"
    )]
    Traits {
        /// Names held (with those admitted before in the same commit).
        held: usize,
        /// New names in the request.
        adding: usize,
        /// The limit.
        limit: usize,
    },
    /// An `alias` that would merge two known customers (both with a `userId`): a write key
    /// could otherwise fuse any two people for good.
    #[error(
        "alias: '{previous_id}' and the userId are two known customers; merging them is \
         refused ([limits] alias_merges_customers in microseg.toml)"
    )]
    CustomerMerge {
        /// The alias's previous id.
        previous_id: String,
    },
    /// Too many event names.
    #[error(
        "the workspace holds {held} event names and this request adds {adding}: at most \
         {limit} ([limits] event_names in microseg.toml)"
    )]
    EventNames {
        /// Names held (with those admitted before in the same commit).
        held: usize,
        /// New names in the request.
        adding: usize,
        /// The limit.
        limit: usize,
    },
}

/// Recently seen message ids, as 128-bit keyed hashes (SipHash with two random keys).
struct Dedup {
    hashers: (RandomState, RandomState),
    set: FxHashSet<u128>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize) -> Dedup {
        Dedup {
            hashers: (RandomState::new(), RandomState::new()),
            set: FxHashSet::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn key(&self, id: &str) -> u128 {
        (u128::from(self.hashers.0.hash_one(id)) << 64) | u128::from(self.hashers.1.hash_one(id))
    }

    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        let k = self.key(id);
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Writes tracking messages (Segment tracking API) to a store, keeping the id maps in memory.
pub struct Ingestor {
    store: Store,
    ids: Ids,
    /// The events of the transaction being written (kept to reuse the allocations).
    rows: EventRows,
    /// New trait and event names admitted for the next write, not yet stored.
    admitted: (FxHashSet<String>, FxHashSet<String>),
}

/// The in-memory maps of an [`Ingestor`].
struct Ids {
    /// External id → profile (every live profile).
    users: FxHashMap<String, ProfileId>,
    /// Anonymous and alias ids → profile.
    anonymous: FxHashMap<String, ProfileId>,
    /// Profiles known only by an anonymous id (merged into a user on first link).
    anonymous_only: FxHashSet<ProfileId>,
    /// Merged profiles and the profile each was merged into: ids in `users` and
    /// `anonymous` may name a merged profile, and [`Ids::live`] follows this to the
    /// survivor.
    merged: FxHashMap<ProfileId, ProfileId>,
    next_id: ProfileId,
    names: FxHashMap<String, u32>,
    types: FxHashMap<String, TraitType>,
    seen: Dedup,
    /// The profiles version of the commit being written, once it changed a profile.
    version: Option<u64>,
    /// Whether an `alias` may merge two known customers.
    merge_customers: bool,
}

impl Ingestor {
    /// How many recent message ids are remembered for de-duplication.
    pub const DEDUP_WINDOW: usize = 1_000_000;

    /// The page cache of an ingestor's connection, in KiB. Small: the ids live in memory,
    /// so its writes touch only the right-hand edge of each table, and SQLite scans the
    /// whole cache's hash table at the end of some commits (a fifth of the writer's time
    /// with the store's 256 MiB).
    const CACHE_KIB: i64 = 16 * 1024;

    /// Loads the id maps of `store`. The writes of an ingestor do not checkpoint the
    /// write-ahead log themselves (SQLite's automatic checkpoint would run inside a commit,
    /// on the writer's time): its owner calls [`Store::checkpoint`], as the server does,
    /// mostly from another connection.
    pub fn open(store: Store) -> Result<Ingestor, StoreError> {
        store.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        store
            .conn
            .pragma_update(None, "cache_size", -Self::CACHE_KIB)?;
        let mut ingestor = Ingestor {
            store,
            ids: Ids {
                users: FxHashMap::default(),
                anonymous: FxHashMap::default(),
                anonymous_only: FxHashSet::default(),
                merged: FxHashMap::default(),
                next_id: 0,
                names: FxHashMap::default(),
                types: FxHashMap::default(),
                seen: Dedup::new(Self::DEDUP_WINDOW),
                version: None,
                merge_customers: false,
            },
            rows: EventRows::default(),
            admitted: Default::default(),
        };
        ingestor.reload()?;
        Ok(ingestor)
    }

    /// Lets `alias` merge two known customers (`[limits] alias_merges_customers`); by
    /// default only an anonymous visitor is merged, and an alias between two customers
    /// is skipped and counted in [`Written::refused_merges`].
    pub fn allow_customer_merges(&mut self, yes: bool) {
        self.ids.merge_customers = yes;
    }

    /// The store (for reads between writes).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Rebuilds every in-memory map from the store (at open, and after a failed write).
    fn reload(&mut self) -> Result<(), StoreError> {
        let conn = &self.store.conn;
        self.ids.users.clear();
        self.ids.anonymous_only.clear();
        let mut stmt =
            conn.prepare("SELECT id, external_id, merged_into IS NULL FROM profiles ORDER BY id")?;
        let mut rows = stmt.query([])?;
        self.ids.next_id = 0;
        let mut merged = Vec::new();
        while let Some(r) = rows.next()? {
            let (id, external, live): (u32, String, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
            self.ids.next_id = id + 1;
            if live {
                if external.starts_with("anonymous:") {
                    self.ids.anonymous_only.insert(id);
                }
                self.ids.users.insert(external, id);
            } else {
                merged.push((id, external));
            }
        }
        drop(rows);
        drop(stmt);
        // A merged profile's id names its survivor from now on, so a later call with
        // that id neither creates a second profile of the same external id nor writes to
        // a retired one.
        self.ids.merged = self.store.merges()?.into_iter().collect();
        for (id, external) in merged {
            self.ids.users.insert(external, id);
        }
        self.ids.anonymous = conn
            .prepare(
                "SELECT value, profile_id FROM identities WHERE kind IN ('anonymous_id', 'alias')",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        self.ids.names = conn
            .prepare("SELECT name, id FROM event_names")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        self.ids.types = self
            .store
            .schema()?
            .iter()
            .map(|(k, spec)| (k.clone(), spec.ty))
            .collect();
        let mut seen = Dedup::new(Self::DEDUP_WINDOW);
        let mut ids: Vec<String> = conn
            .prepare("SELECT message_id FROM events WHERE message_id IS NOT NULL ORDER BY id DESC LIMIT ?1")?
            .query_map([Self::DEDUP_WINDOW as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.reverse();
        for id in &ids {
            seen.insert(id);
        }
        self.ids.seen = seen;
        Ok(())
    }

    /// Admits one request for the next [`Ingestor::write`]: refused when the trait or
    /// event names it would add, with those already held and admitted, pass `limits`.
    /// Checked before the write, so a refused request is not stored at all and the others
    /// of its commit are.
    pub fn admit(&mut self, messages: &[Message], limits: NameLimits) -> Result<(), LimitError> {
        let mut traits: FxHashSet<String> = FxHashSet::default();
        let mut events: FxHashSet<&str> = FxHashSet::default();
        for m in messages {
            match &m.action {
                Action::Event { name, .. } => {
                    if !self.ids.names.contains_key(name) && !self.admitted.1.contains(name) {
                        events.insert(name);
                    }
                }
                Action::Traits(map) => {
                    let mut flat = Vec::new();
                    flatten("", map, &mut flat);
                    for (name, json) in flat {
                        // A null removes a trait: it never creates one.
                        if !json.is_null()
                            && !self.ids.types.contains_key(&name)
                            && !self.admitted.0.contains(&name)
                        {
                            traits.insert(name);
                        }
                    }
                }
                Action::Alias { previous_id } if !limits.alias_merges_customers => {
                    let ids = &self.ids;
                    let customer = |p: Option<&ProfileId>| {
                        p.map(|&p| ids.live(p))
                            .filter(|p| !ids.anonymous_only.contains(p))
                    };
                    let previous = customer(
                        ids.users
                            .get(previous_id)
                            .or_else(|| ids.anonymous.get(previous_id)),
                    );
                    let user = customer(m.user_id.as_ref().and_then(|u| ids.users.get(u)));
                    if let (Some(a), Some(b)) = (previous, user) {
                        if a != b {
                            return Err(LimitError::CustomerMerge {
                                previous_id: previous_id.clone(),
                            });
                        }
                    }
                }
                Action::Alias { .. } => {}
            }
        }
        let held = self.ids.types.len() + self.admitted.0.len();
        if !traits.is_empty() && held + traits.len() > limits.traits {
            return Err(LimitError::Traits {
                held,
                adding: traits.len(),
                limit: limits.traits,
            });
        }
        let held = self.ids.names.len() + self.admitted.1.len();
        if !events.is_empty() && held + events.len() > limits.event_names {
            return Err(LimitError::EventNames {
                held,
                adding: events.len(),
                limit: limits.event_names,
            });
        }
        self.admitted.0.extend(traits);
        self.admitted
            .1
            .extend(events.into_iter().map(str::to_string));
        Ok(())
    }

    /// Erases the person with external id `external_id` (see
    /// [`Store::erase_profile`](crate::erase)) and forgets their ids, so a later call
    /// with one of them starts a new profile. The [`Written`] carries
    /// [`Applied::Erase`] for the in-memory state to follow.
    pub fn erase(
        &mut self,
        external_id: &str,
    ) -> Result<(Written, crate::erase::Erased), StoreError> {
        let erased = self.store.erase_profile(external_id)?;
        let family: FxHashSet<ProfileId> = erased.profiles.iter().copied().collect();
        let ids = &mut self.ids;
        ids.users.retain(|_, p| !family.contains(p));
        ids.anonymous.retain(|_, p| !family.contains(p));
        ids.anonymous_only.retain(|p| !family.contains(p));
        ids.merged.retain(|from, _| !family.contains(from));
        let version = self.store.events_version()?;
        let written = Written {
            applied: vec![Applied::Erase {
                profiles: erased.profiles.clone(),
            }],
            version,
            ..Written::default()
        };
        Ok((written, erased))
    }

    /// Deletes the events dated before `before` (retention); see
    /// [`Store::delete_events_before`](crate::erase).
    pub fn delete_events_before(
        &mut self,
        workspace: &crate::Workspace,
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        self.store.delete_events_before(workspace, before)
    }

    /// Writes every message of `requests` in one transaction (`received`: the time of
    /// messages without one). On error nothing is written and the maps are reloaded.
    pub fn write(
        &mut self,
        requests: Vec<Vec<Message>>,
        received: Timestamp,
    ) -> Result<Written, StoreError> {
        self.admitted.0.clear();
        self.admitted.1.clear();
        match self.write_all(requests, received) {
            Ok(w) => Ok(w),
            Err(e) => {
                // The transaction rolled back; the maps may hold ids it created.
                self.reload()?;
                Err(e)
            }
        }
    }

    fn write_all(
        &mut self,
        requests: Vec<Vec<Message>>,
        received: Timestamp,
    ) -> Result<Written, StoreError> {
        let now = now_ms();
        // Immediate: the write lock first, so another connection's commit (a command
        // run beside the server) cannot fail this transaction between a read and a write.
        let tx = rusqlite::Transaction::new_unchecked(
            &self.store.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let ids = &mut self.ids;
        ids.version = None;
        let mut out = Written::default();
        let mut wrote_events = false;
        let rows = &mut self.rows;
        rows.clear();
        for message in requests.into_iter().flatten() {
            if let (Some(id), Action::Event { .. }) = (&message.message_id, &message.action) {
                if !ids.seen.insert(id) {
                    out.duplicates += 1;
                    continue;
                }
            }
            let profile = ids.resolve(&tx, &message, now, &mut out)?;
            match message.action {
                Action::Event {
                    name,
                    revenue,
                    properties,
                } => {
                    let name_id = match ids.names.get(&name) {
                        Some(&id) => id,
                        None => {
                            let id = ids.names.len() as u32;
                            tx.prepare_cached("INSERT INTO event_names(id, name) VALUES (?1, ?2)")?
                                .execute(params![id, name])?;
                            ids.names.insert(name.clone(), id);
                            id
                        }
                    };
                    let time = message.time.unwrap_or(received);
                    let props = match &properties.json {
                        Some(json) => rows.push_text(json),
                        None => (0, 0),
                    };
                    let message_id = match &message.message_id {
                        Some(m) => rows.push_text(m),
                        None => (0, 0),
                    };
                    rows.rows.push(EventRow {
                        profile,
                        time: time.0,
                        name: name_id,
                        revenue,
                        properties: props,
                        message_id,
                    });
                    wrote_events = true;
                    out.applied.push(Applied::Event {
                        profile,
                        event: StreamEvent {
                            time: time.0,
                            name,
                            revenue,
                            properties: properties.values,
                        },
                    });
                }
                Action::Traits(traits) => ids.set_traits(&tx, profile, &traits, now, &mut out)?,
                Action::Alias { previous_id } => {
                    let previous = ids
                        .users
                        .get(&previous_id)
                        .or_else(|| ids.anonymous.get(&previous_id))
                        .map(|&p| ids.live(p));
                    match previous {
                        // Two known customers (the call's user and a userId or alias of
                        // another): not by a write key, unless the workspace allows it.
                        Some(p)
                            if p != profile
                                && !ids.merge_customers
                                && !ids.anonymous_only.contains(&p)
                                && !ids.anonymous_only.contains(&profile) =>
                        {
                            out.refused_merges += 1;
                        }
                        Some(p) if p != profile => ids.merge(&tx, p, profile, now, &mut out)?,
                        Some(_) => {}
                        None => {
                            tx.prepare_cached(
                                "INSERT OR REPLACE INTO identities(kind, value, profile_id) VALUES ('alias', ?1, ?2)",
                            )?
                            .execute(params![previous_id, profile])?;
                            ids.anonymous.insert(previous_id, profile);
                        }
                    }
                }
            }
        }
        if wrote_events {
            EventInserter::new(&tx)?.insert(rows)?;
        }
        // Every commit moves the version (not only those with events): a reader that
        // loaded the store at version V knows exactly which commits it has seen.
        out.version = bump_events_version(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Ids {
    /// The live profile `p` stands for: itself, or the end of its chain of merges.
    fn live(&self, mut p: ProfileId) -> ProfileId {
        // A chain is at most as long as there are merges (and never a cycle: only live
        // profiles are merged, into live ones).
        for _ in 0..=self.merged.len() {
            match self.merged.get(&p) {
                Some(&into) => p = into,
                None => break,
            }
        }
        p
    }

    /// The profiles version this commit gives the profiles it changes (moved once per
    /// commit, on the first change).
    fn version(&mut self, tx: &rusqlite::Transaction<'_>) -> Result<u64, StoreError> {
        if let Some(v) = self.version {
            return Ok(v);
        }
        let v = bump(tx, Counter::Profiles)?;
        self.version = Some(v);
        Ok(v)
    }

    /// The profile a message is about, created (and linked) as needed.
    fn resolve(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        m: &Message,
        now: i64,
        out: &mut Written,
    ) -> Result<ProfileId, StoreError> {
        let Some(user) = &m.user_id else {
            let anonymous = m.anonymous_id.as_ref().expect("validated: one id is given");
            if let Some(&p) = self.anonymous.get(anonymous) {
                return Ok(self.live(p));
            }
            let p = self.create(tx, &format!("anonymous:{anonymous}"), now, out)?;
            self.link(tx, anonymous, p)?;
            self.anonymous_only.insert(p);
            return Ok(p);
        };
        let p = match self.users.get(user) {
            Some(&p) => self.live(p),
            None => self.create(tx, user, now, out)?,
        };
        if let Some(anonymous) = &m.anonymous_id {
            match self.anonymous.get(anonymous).map(|&q| self.live(q)) {
                None => self.link(tx, anonymous, p)?,
                Some(q) if q != p && self.anonymous_only.contains(&q) => {
                    self.merge(tx, q, p, now, out)?
                }
                Some(_) => {}
            }
        }
        Ok(p)
    }

    fn create(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        external: &str,
        now: i64,
        out: &mut Written,
    ) -> Result<ProfileId, StoreError> {
        let id = self.next_id;
        let version = self.version(tx)?;
        tx.prepare_cached(
            "INSERT INTO profiles(id, external_id, traits, created_at, updated_at, version) VALUES (?1, ?2, '{}', ?3, ?3, ?4)",
        )?
        .execute(params![id, external, now, version as i64])?;
        self.next_id += 1;
        self.users.insert(external.to_string(), id);
        out.applied.push(Applied::Profile {
            id,
            external_id: external.to_string(),
        });
        Ok(id)
    }

    fn link(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        anonymous: &str,
        p: ProfileId,
    ) -> Result<(), StoreError> {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO identities(kind, value, profile_id) VALUES ('anonymous_id', ?1, ?2)",
        )?
        .execute(params![anonymous, p])?;
        self.anonymous.insert(anonymous.to_string(), p);
        Ok(())
    }

    /// Merges profile `from` into `into`: identities move, `into` keeps its traits and
    /// gains the ones it lacks, `from` is marked merged.
    fn merge(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        from: ProfileId,
        into: ProfileId,
        now: i64,
        out: &mut Written,
    ) -> Result<(), StoreError> {
        let moved: Vec<String> = tx
            .prepare_cached("SELECT value FROM identities WHERE profile_id = ?1")?
            .query_map([from], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for v in moved {
            self.anonymous.insert(v, into);
        }
        tx.prepare_cached("UPDATE identities SET profile_id = ?2 WHERE profile_id = ?1")?
            .execute(params![from, into])?;
        // The survivor gains the traits it lacks, through the one trait-setting path.
        let traits = |p: ProfileId| -> Result<Map<String, Json>, StoreError> {
            let text: String = tx
                .prepare_cached("SELECT traits FROM profiles WHERE id = ?1")?
                .query_row([p], |r| r.get(0))?;
            Ok(serde_json::from_str(&text).unwrap_or_default())
        };
        let kept = traits(into)?;
        let gained: Map<String, Json> = traits(from)?
            .into_iter()
            .filter(|(k, _)| !kept.contains_key(k))
            .collect();
        self.set_traits(tx, into, &gained, now, out)?;
        let version = self.version(tx)?;
        bump(tx, Counter::Merges)?;
        tx.prepare_cached(
            "UPDATE profiles SET merged_into = ?2, updated_at = ?3, version = ?4 WHERE id = ?1",
        )?
        .execute(params![from, into, now, version as i64])?;
        self.anonymous_only.remove(&from);
        self.anonymous_only.remove(&into);
        self.merged.insert(from, into);
        out.applied.push(Applied::Merge { from, into });
        Ok(())
    }

    fn set_traits(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        profile: ProfileId,
        traits: &Map<String, Json>,
        now: i64,
        out: &mut Written,
    ) -> Result<(), StoreError> {
        let mut flat = Vec::new();
        flatten("", traits, &mut flat);
        let mut patch = Map::new();
        let mut typed = Vec::new();
        for (name, json) in flat {
            if json.is_null() {
                patch.insert(name.clone(), Json::Null);
                if let Some(&ty) = self.types.get(&name) {
                    typed.push((name, ty, None));
                }
                continue;
            }
            let ty = match self.types.get(&name) {
                Some(&ty) => ty,
                None => {
                    let Some(ty) = guess_type(json) else {
                        out.dropped
                            .push(format!("{name}: a list of non-strings is not a trait"));
                        continue;
                    };
                    tx.prepare_cached("INSERT OR IGNORE INTO trait_types(name, type, separators) VALUES (?1, ?2, NULL)")?
                        .execute(params![name, ty.name()])?;
                    self.types.insert(name.clone(), ty);
                    ty
                }
            };
            match Value::from_json(ty, json) {
                Some(v) => {
                    patch.insert(name.clone(), v.to_json());
                    typed.push((name, ty, Some(v)));
                }
                // The value itself is personal data (an e-mail in a mistyped trait): only
                // its kind is said, so the reason can be logged.
                None => out.dropped.push(format!(
                    "{name}: a {} is not {}",
                    json_kind(json),
                    ty.name()
                )),
            }
        }
        if patch.is_empty() {
            return Ok(());
        }
        let version = self.version(tx)?;
        tx.prepare_cached(
            "UPDATE profiles SET traits = json_patch(traits, ?2), updated_at = ?3, version = ?4 WHERE id = ?1",
        )?
        .execute(params![profile, Json::Object(patch).to_string(), now, version as i64])?;
        out.applied.push(Applied::Traits {
            profile,
            traits: typed,
        });
        Ok(())
    }
}

/// Nested objects become dotted names (`address.city`).
fn flatten<'a>(prefix: &str, m: &'a Map<String, Json>, out: &mut Vec<(String, &'a Json)>) {
    for (k, v) in m {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Json::Object(inner) => flatten(&name, inner, out),
            v => out.push((name, v)),
        }
    }
}

/// What kind of JSON value `json` is, without its content.
fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "object",
    }
}

/// The type a new trait takes from its first value.
fn guess_type(json: &Json) -> Option<TraitType> {
    Some(match json {
        Json::Bool(_) => TraitType::Bool,
        Json::Number(n) if n.is_i64() => TraitType::Integer,
        Json::Number(_) => TraitType::Float,
        Json::String(s)
            if s.len() >= 19 && s.as_bytes()[10] == b'T' && parse_timestamp(s).is_ok() =>
        {
            TraitType::Timestamp
        }
        Json::String(_) => TraitType::String,
        Json::Array(items) if items.iter().all(Json::is_string) => TraitType::StringSet,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::parse_request;

    fn send(ingestor: &mut Ingestor, calls: &str) -> Written {
        let request = parse_request(None, format!(r#"{{"batch": [{calls}]}}"#).as_bytes()).unwrap();
        ingestor
            .write(vec![request.messages], Timestamp(0))
            .unwrap()
    }

    /// Regression: an id of a profile merged away stood for that retired profile, so a
    /// later alias merged the retired profile again (re-pointing `merged_into` and moving
    /// history), and after a restart a call with that id tried to create a second profile
    /// of the same external id.
    #[test]
    fn an_id_of_a_merged_profile_stands_for_its_survivor() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, _) = crate::Workspace::init(dir.path()).unwrap();
        let mut ingestor = Ingestor::open(Store::open(&ws).unwrap()).unwrap();
        ingestor.allow_customer_merges(true);
        send(
            &mut ingestor,
            r#"{"type": "track", "userId": "a", "event": "x"},
               {"type": "track", "userId": "b", "event": "x"},
               {"type": "track", "userId": "c", "event": "x"},
               {"type": "alias", "previousId": "a", "userId": "b"},
               {"type": "alias", "previousId": "b", "userId": "c"}"#,
        );
        // "a" names c now: aliasing it into a new user merges c, not the retired a.
        let w = send(
            &mut ingestor,
            r#"{"type": "alias", "previousId": "a", "userId": "d"}"#,
        );
        let merges: Vec<(u32, u32)> = w
            .applied
            .iter()
            .filter_map(|a| match a {
                Applied::Merge { from, into } => Some((*from, *into)),
                _ => None,
            })
            .collect();
        assert_eq!(merges, [(2, 3)], "c (2) into d (3)");
        let store = Store::open(&ws).unwrap();
        assert_eq!(store.merges().unwrap(), [(0, 1), (1, 2), (2, 3)]);
        drop(ingestor);
        // After a restart, a call with a merged id goes to the survivor.
        let mut ingestor = Ingestor::open(Store::open(&ws).unwrap()).unwrap();
        ingestor.allow_customer_merges(true);
        let w = send(
            &mut ingestor,
            r#"{"type": "track", "userId": "b", "event": "y"}"#,
        );
        assert!(matches!(w.applied[..], [Applied::Event { profile: 3, .. }]));
        assert_eq!(store.counts().unwrap().0, 4, "no second profile for b");
    }
}
