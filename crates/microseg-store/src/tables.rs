//! [`Tables`]: a workspace loaded for evaluation as of one instant, the one way the CLI,
//! the server and every model read profiles, events, metrics and predictions.
//!
//! Loading is lazy: opening reads the segment definitions and maps the profile snapshot;
//! a trait column is decoded when a condition or command names it, events are mapped when
//! a behavioural condition or a metric needs them, an event property when a `where` filter
//! or an aggregate reads it, metrics are computed when one is named, CLV predictions when
//! one is used. So `segment size 'gender = "f"'` on a million customers reads two small
//! columns, not the store.
//!
//! The durable columnar snapshot behind it (`cache/`, [`crate::snapshot`]):
//!
//! | file | holds | kept current by |
//! |---|---|---|
//! | `profiles.snap` | external ids, retired profiles, every trait column | the rows whose `profiles.version` is newer |
//! | `events.snap` | events sorted by profile and time: offsets, time, name, revenue, arrival order | the events with a larger id |
//! | `property-HEX.snap` | one event property, in the events' row order | the same new events |
//!
//! Each names the store state it describes ([`StoreState`]); when the store moved on,
//! the reader catches up from the store with only what changed (new events by id, profiles
//! by version, merges by re-assigning events to survivors), and writes a new snapshot when
//! the catch-up was large enough to be worth keeping. Imports call [`refresh`] when they
//! commit, so the next command starts from a current snapshot. Anything that does not
//! match (another store, events rewritten, a damaged file) is rebuilt from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use microseg_core::condition::Condition;
use microseg_core::{ProfileId, Schema, Timestamp, TraitType, Value};
use microseg_engine::array::Array;
use microseg_engine::columnar::{
    Column, Dictionary, ExternalIds, PropertyColumn, PropertyValue, NO_CODE,
};
use microseg_engine::metrics::metric_type;
use microseg_engine::models::clv::{summarise, ClvModel, Predictions, Summary, PREDICTION_NAMES};
use microseg_engine::{
    compute_metrics, Dataset, EventTable, EventTableBuilder, Metrics, MetricsConfig, ProfileTable,
};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::snapshot::{Snapshot, SnapshotError, Writer};
use crate::store::{Store, StoreState};
use crate::workspace::Workspace;

/// The snapshot layout's version: a snapshot of another layout is rebuilt.
const FORMAT: u32 = 1;

/// A catch-up this small is applied in memory and not written back (the next command
/// repeats it cheaply); a larger one writes a new snapshot.
const WRITE_EVENTS_AFTER: usize = 100_000;
/// Changed profiles above which the profile snapshot is written again.
const WRITE_PROFILES_AFTER: usize = 10_000;

impl From<SnapshotError> for StoreError {
    fn from(e: SnapshotError) -> StoreError {
        StoreError::Invalid(format!("snapshot: {e}"))
    }
}

/// What a profile snapshot describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProfilesKey {
    format: u32,
    store_id: i64,
    profiles_version: u64,
}

/// What an events snapshot (and its property files) describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct EventsKey {
    format: u32,
    store_id: i64,
    max_event_id: u64,
    merges_version: u64,
    rewrites: u64,
}

/// What a property snapshot describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PropertyKey {
    events: EventsKey,
    name: String,
}

fn profiles_key(s: &StoreState) -> ProfilesKey {
    ProfilesKey {
        format: FORMAT,
        store_id: s.store_id,
        profiles_version: s.profiles_version,
    }
}

fn events_key(s: &StoreState) -> EventsKey {
    EventsKey {
        format: FORMAT,
        store_id: s.store_id,
        max_event_id: s.max_event_id,
        merges_version: s.merges_version,
        rewrites: s.rewrites,
    }
}

/// The snapshot files of a workspace.
fn cache_dir(ws: &Workspace) -> PathBuf {
    ws.dir.join("cache")
}

/// Removes every snapshot file (after an erasure: they hold copies of the person's data);
/// the next command rebuilds what it needs.
pub(crate) fn remove_snapshots(ws: &Workspace) {
    if let Ok(entries) = std::fs::read_dir(cache_dir(ws)) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "snap") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn property_path(cache: &Path, name: &str) -> PathBuf {
    cache.join(format!(
        "property-{}.snap",
        microseg_core::hex(name.as_bytes())
    ))
}

/// Brings the workspace's snapshots up to date with the store (profiles, events and the
/// event properties already kept), writing them when they moved; imports call it after
/// they commit so the next command opens current files.
pub fn refresh(ws: &Workspace, store: &Store) -> Result<(), StoreError> {
    let mut tables = Tables::open(ws, store, Timestamp(0))?;
    tables
        .profiles_source
        .write_if_changed(&tables.cache, &tables.state, &tables.schema, 0)?;
    tables.load_events(&[], 0)?;
    Ok(())
}

/// The stored CLV model and every profile's order history in its unit (`None`: no order).
pub type ClvHistory = (ClvModel, Vec<Option<Summary>>);

/// A workspace loaded for evaluation as of one instant; see the module documentation.
pub struct Tables<'s> {
    store: &'s Store,
    cache: PathBuf,
    config: MetricsConfig,
    as_of: Timestamp,
    state: StoreState,
    schema: Schema,
    segments: BTreeMap<String, Condition>,
    profiles: ProfileTable,
    profiles_source: ProfileSource,
    events: Option<Loaded>,
    metrics: Option<Metrics>,
    predictions: bool,
}

/// The events loaded, with what a later catch-up or property needs.
struct Loaded {
    table: EventTable,
    /// Each row's rank among all events in id order (how properties read in id order find
    /// their row).
    seq: Array<u32>,
    key: EventsKey,
}

impl<'s> Tables<'s> {
    /// Opens the workspace's tables as of `as_of`: segment definitions, and the profiles'
    /// ids (caught up with the store). Nothing else is read until asked for.
    pub fn open(
        ws: &Workspace,
        store: &'s Store,
        as_of: Timestamp,
    ) -> Result<Tables<'s>, StoreError> {
        let cache = cache_dir(ws);
        // The event cache of earlier versions (replaced by `events.snap`).
        let _ = std::fs::remove_file(cache.join("events.bin"));
        let state = store.state()?;
        let schema = store.schema()?;
        let profiles_source = ProfileSource::open(&cache, store, &state, &schema)?;
        let profiles = profiles_source.table();
        Ok(Tables {
            store,
            cache,
            config: ws.config.metrics_config(),
            as_of,
            state,
            schema,
            segments: store.segment_conditions()?,
            profiles,
            profiles_source,
            events: None,
            metrics: None,
            predictions: false,
        })
    }

    /// The instant everything is evaluated at.
    pub fn as_of(&self) -> Timestamp {
        self.as_of
    }

    /// Number of profiles (retired ones included: dense ids are `0..len`).
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// True without profiles.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The external id of profile `p`.
    pub fn external_id(&self, p: ProfileId) -> &str {
        self.profiles.external_ids.get(p)
    }

    /// The stored segments by name.
    pub fn segments(&self) -> &BTreeMap<String, Condition> {
        &self.segments
    }

    /// The traits' schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// What a discovery combines when the user names nothing: every trait but timestamps
    /// and those in `exclude`.
    pub fn search_dimensions(&self, exclude: &[String]) -> Vec<String> {
        self.schema
            .iter()
            .filter(|(name, spec)| spec.ty != TraitType::Timestamp && !exclude.contains(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The profile table with the columns loaded so far.
    pub fn profiles(&self) -> &ProfileTable {
        &self.profiles
    }

    /// The profile table, to edit in place (the server keeps it current).
    pub fn into_profiles(self) -> ProfileTable {
        self.profiles
    }

    /// Every live profile (retired ones are in no segment).
    pub fn everyone(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.len() as u32);
        all - &self.profiles.retired
    }

    /// The workspace's metric settings.
    pub fn metrics_config(&self) -> &MetricsConfig {
        &self.config
    }

    /// Loads what `conditions` read (following `in_segment` to the stored segments) and
    /// the traits or metrics `names`: trait columns, events with the properties their
    /// filters use, metrics, CLV predictions.
    pub fn need(&mut self, conditions: &[&Condition], names: &[&str]) -> Result<(), StoreError> {
        let mut todo: Vec<Condition> = conditions.iter().map(|c| (*c).clone()).collect();
        let mut seen = BTreeSet::new();
        let mut names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let mut properties = BTreeSet::new();
        let mut events = false;
        while let Some(c) = todo.pop() {
            names.extend(c.profile_names());
            properties.extend(c.event_properties());
            events |= c.reads_events();
            for r in c.segment_refs() {
                if seen.insert(r.to_string()) {
                    if let Some(s) = self.segments.get(r) {
                        todo.push(s.clone());
                    }
                }
            }
        }
        let mut metrics = false;
        let mut predictions = false;
        for name in &names {
            if self.schema.contains_key(name) {
                self.load_trait(name)?;
            } else if metric_type(name).is_some() {
                metrics = true;
                predictions |= PREDICTION_NAMES.contains(&name.as_str());
            }
        }
        if events || metrics || !properties.is_empty() {
            let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
            self.load_events(&properties, WRITE_EVENTS_AFTER)?;
        }
        if metrics {
            self.load_metrics(predictions)?;
        }
        Ok(())
    }

    /// Loads every trait column (for commands that look at all traits).
    pub fn need_all_traits(&mut self) -> Result<(), StoreError> {
        let names: Vec<String> = self.schema.keys().cloned().collect();
        for name in names {
            self.load_trait(&name)?;
        }
        Ok(())
    }

    fn load_trait(&mut self, name: &str) -> Result<(), StoreError> {
        if self.profiles.columns.contains_key(name) {
            return Ok(());
        }
        // A large catch-up is written back when traits are first read, so the next
        // command starts from it (commands that read no traits do not pay for it).
        self.profiles_source.write_if_changed(
            &self.cache,
            &self.state,
            &self.schema,
            WRITE_PROFILES_AFTER,
        )?;
        let Some(spec) = self.schema.get(name) else {
            return Ok(());
        };
        let column = self.profiles_source.column(name, spec.ty, self.len())?;
        self.profiles
            .columns
            .insert(name.to_string(), column.compacted());
        self.profiles.indexes.clear();
        Ok(())
    }

    /// The events (every one; those after as-of are there too, and the evaluators ignore
    /// them), with the properties `properties` as columns.
    pub fn events(&mut self, properties: &[&str]) -> Result<&EventTable, StoreError> {
        self.load_events(properties, WRITE_EVENTS_AFTER)?;
        Ok(&self.events.as_ref().expect("loaded").table)
    }

    fn load_events(&mut self, properties: &[&str], write_after: usize) -> Result<(), StoreError> {
        if self.events.is_none() {
            let loaded = load_events(&self.cache, self.store, &self.state, write_after)?;
            self.events = Some(loaded);
        }
        let loaded = self.events.as_mut().expect("loaded");
        for &name in properties {
            if !loaded.table.properties.contains_key(name) {
                let column = load_property(&self.cache, self.store, loaded, name)?;
                loaded
                    .table
                    .set_property_column(name, column)
                    .map_err(StoreError::Invalid)?;
            }
        }
        Ok(())
    }

    /// Only the events named `names`, and every event dated after `after`, with the
    /// properties `properties`, sorted by profile and time: what replaying history into
    /// a few new leaves needs, read without catching the whole snapshot up (its events of
    /// those names, and the store's events since it of those names). The table is not
    /// kept: it is for the caller alone.
    pub fn events_named(
        &mut self,
        names: &[&str],
        properties: &[&str],
        after: Timestamp,
    ) -> Result<EventTable, StoreError> {
        let path = self.cache.join("events.snap");
        let key = events_key(&self.state);
        let base = Snapshot::open(&path, "events")
            .ok()
            .flatten()
            .and_then(|snap| {
                let old = snap.key::<EventsKey>()?;
                let usable = old.format == FORMAT
                    && old.store_id == key.store_id
                    && old.rewrites == key.rewrites
                    && old.max_event_id <= key.max_event_id
                    && old.merges_version <= key.merges_version;
                usable.then_some(())?;
                read_events_snapshot(&snap, old, self.state.profiles as usize).ok()
            });
        let Some(base) = base else {
            // No snapshot to start from: the whole table, filtered.
            self.load_events(properties, WRITE_EVENTS_AFTER)?;
            let loaded = self.events.as_ref().expect("loaded");
            return Ok(filter_events(&loaded.table, names, properties, after));
        };
        let event_names = self.store.event_names()?;
        let wanted: Vec<bool> = event_names
            .iter()
            .map(|n| names.contains(&n.as_str()))
            .collect();
        let codes: Vec<u32> = (0..event_names.len() as u32)
            .filter(|&c| wanted[c as usize])
            .collect();
        // The snapshot's events of those names (or later than `after`), in arrival order.
        let b = &base.table;
        let mut rows: Vec<(u32, u32)> = Vec::new(); // (seq, row)
        for p in 0..b.profiles() as ProfileId {
            for r in b.events_of(p) {
                let code = b.name[r] as usize;
                if wanted.get(code).copied().unwrap_or(false) || b.time[r] > after.0 {
                    rows.push((base.seq[r], r as u32));
                }
            }
        }
        rows.sort_unstable();
        let old_owner: Vec<u32> = {
            let mut owner = vec![0u32; b.len()];
            for p in 0..b.profiles() as ProfileId {
                for r in b.events_of(p) {
                    owner[r] = p;
                }
            }
            owner
        };
        let survivors = self.store.survivors(self.state.profiles as usize)?;
        // Their properties: from the snapshot's property files, else from the store.
        let mut columns: Vec<Option<PropertyColumn>> = Vec::with_capacity(properties.len());
        let mut missing = Vec::new();
        for &name in properties {
            let column = Snapshot::open(&property_path(&self.cache, name), "property")
                .ok()
                .flatten()
                .filter(|snap| {
                    snap.key::<PropertyKey>()
                        .is_some_and(|k| k.events == base.key && k.name == name)
                })
                .and_then(|snap| read_property(&snap).ok());
            if column.is_none() {
                missing.push(name);
            }
            columns.push(column);
        }
        let stored = if missing.is_empty() {
            NewEvents::default()
        } else {
            self.store
                .events_matching(0, base.key.max_event_id, &codes, after, &missing)?
        };
        if !missing.is_empty() && stored.time.len() != rows.len() {
            return Err(StoreError::Invalid(format!(
                "snapshot: {} events of {names:?} in the snapshot, {} in the store",
                rows.len(),
                stored.time.len()
            )));
        }
        let new = self.store.events_matching(
            base.key.max_event_id,
            key.max_event_id,
            &codes,
            after,
            properties,
        )?;
        let mut builder = EventTableBuilder::with_capacity(rows.len() + new.time.len());
        builder.define_names(&event_names);
        let set = |builder: &mut EventTableBuilder,
                   at: usize,
                   name: &str,
                   number: f64,
                   text: Option<&str>| {
            if !number.is_nan() {
                builder.set_property(at, name, PropertyValue::Number(number));
            } else if let Some(t) = text {
                builder.set_property(at, name, PropertyValue::Text(t));
            }
        };
        for (i, &(_, r)) in rows.iter().enumerate() {
            let r = r as usize;
            let owner = survivors[old_owner[r] as usize];
            let revenue = Some(b.revenue[r]).filter(|x| !x.is_nan());
            builder.push_code(owner, b.time[r], b.name[r], revenue);
            let at = builder.len() - 1;
            let mut m = 0;
            for (j, &name) in properties.iter().enumerate() {
                match &columns[j] {
                    Some(c) => {
                        let code = c.text(r);
                        let text = (code != NO_CODE).then(|| c.dict.value(code));
                        set(&mut builder, at, name, c.number(r), text);
                    }
                    None => {
                        let (numbers, texts, dict) = &stored.properties[m];
                        let text = (texts[i] != NO_CODE).then(|| dict.value(texts[i]));
                        set(&mut builder, at, name, numbers[i], text);
                        m += 1;
                    }
                }
            }
        }
        for i in 0..new.time.len() {
            let owner = *survivors.get(new.profile[i] as usize).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "store: event of unknown profile {}",
                    new.profile[i]
                ))
            })?;
            let revenue = Some(new.revenue[i]).filter(|x| !x.is_nan());
            builder.push_code(owner, new.time[i], new.name[i], revenue);
            let at = builder.len() - 1;
            for (j, &name) in properties.iter().enumerate() {
                let (numbers, texts, dict) = &new.properties[j];
                let text = (texts[i] != NO_CODE).then(|| dict.value(texts[i]));
                set(&mut builder, at, name, numbers[i], text);
            }
        }
        Ok(builder.finish(self.state.profiles as usize))
    }

    fn load_metrics(&mut self, predictions: bool) -> Result<(), StoreError> {
        self.load_events(&[], WRITE_EVENTS_AFTER)?;
        let events = &self.events.as_ref().expect("loaded").table;
        if self.metrics.is_none() {
            self.metrics = Some(compute_metrics(
                events,
                &self.profiles.external_ids,
                self.as_of,
                &self.config,
            ));
        }
        if predictions && !self.predictions {
            self.predictions = true;
            let clv = match self.clv_summaries()? {
                Some((model, summaries)) => {
                    // The metric is named for its 90-day horizon.
                    let horizon = model.unit.of_ms(90 * 86_400_000);
                    Some(Predictions::compute(&model, &summaries, horizon))
                }
                None => None,
            };
            self.metrics.as_mut().expect("computed").clv = clv;
        }
        Ok(())
    }

    /// The stored CLV model and every profile's order history as of as-of in its unit;
    /// `None` without a model.
    pub fn clv_summaries(&mut self) -> Result<Option<ClvHistory>, StoreError> {
        let Some(model) = self.store.model::<ClvModel>("clv")? else {
            return Ok(None);
        };
        self.load_events(&[], WRITE_EVENTS_AFTER)?;
        let events = &self.events.as_ref().expect("loaded").table;
        let orders = self.config.order_codes(&events.names);
        let summaries = summarise(events, &orders, self.as_of, model.unit);
        Ok(Some((model, summaries)))
    }

    /// The metrics at as-of (computed on first use).
    pub fn metrics(&mut self) -> Result<&Metrics, StoreError> {
        self.load_metrics(false)?;
        Ok(self.metrics.as_ref().expect("computed"))
    }

    /// The evaluator's view of what is loaded.
    pub fn dataset(&self) -> Dataset<'_> {
        Dataset {
            profiles: &self.profiles,
            metrics: self.metrics.as_ref(),
            events: self.events.as_ref().map(|l| &l.table),
            as_of: self.as_of,
            segments: Some(&self.segments),
        }
    }

    /// The members of `condition`, after loading what it reads.
    pub fn evaluate(&mut self, condition: &Condition) -> Result<RoaringBitmap, StoreError> {
        self.need(&[condition], &[])?;
        Ok(self.dataset().evaluate(condition)?)
    }
}

/// One profile alone, for explaining it without loading the others: its traits (as the
/// caller has them), its events and those of the profiles merged into it, up to as-of,
/// read from the store, and its metrics. It is profile 0 of [`OneProfile::dataset`].
pub struct OneProfile {
    profiles: ProfileTable,
    events: EventTable,
    metrics: Metrics,
    segments: BTreeMap<String, Condition>,
    as_of: Timestamp,
}

impl OneProfile {
    /// Profile `id` (external id `external_id`) with `traits`, as of `as_of`.
    pub fn load(
        store: &Store,
        config: &MetricsConfig,
        id: ProfileId,
        external_id: &str,
        traits: &[(String, Value)],
        as_of: Timestamp,
    ) -> Result<OneProfile, StoreError> {
        let mut profiles = ProfileTable::with_schema(&store.schema()?);
        let map: HashMap<&str, Value> = traits
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        profiles.push(external_id, &map);
        let mut builder = EventTableBuilder::with_capacity(64);
        for ev in store.recent_events(id, as_of, usize::MAX)? {
            let row = builder.push(0, ev.time.0, &ev.name, ev.revenue);
            for (key, value) in ev.properties {
                match PropertyJson::from(value) {
                    PropertyJson::Number(x) => {
                        builder.set_property(row, &key, PropertyValue::Number(x))
                    }
                    PropertyJson::Text(t) => {
                        builder.set_property(row, &key, PropertyValue::Text(&t))
                    }
                    PropertyJson::Absent => {}
                }
            }
        }
        let events = builder.finish(1);
        let metrics = compute_metrics(&events, &profiles.external_ids, as_of, config);
        Ok(OneProfile {
            profiles,
            events,
            metrics,
            segments: store.segment_conditions()?,
            as_of,
        })
    }

    /// The evaluator's view of the profile.
    pub fn dataset(&self) -> Dataset<'_> {
        Dataset {
            profiles: &self.profiles,
            metrics: Some(&self.metrics),
            events: Some(&self.events),
            as_of: self.as_of,
            segments: Some(&self.segments),
        }
    }
}

/// Where trait columns come from: the profile snapshot, plus the profiles that changed
/// since it was written (applied to each column as it is decoded).
struct ProfileSource {
    snapshot: Option<Snapshot>,
    /// Profiles changed since the snapshot: their traits (JSON, parsed when a column is
    /// first decoded) and whether retired.
    changed: BTreeMap<ProfileId, (String, bool)>,
    /// The changed profiles' traits, parsed.
    parsed: std::cell::OnceCell<BTreeMap<ProfileId, serde_json::Map<String, serde_json::Value>>>,
    external_ids: ExternalIds,
    retired: RoaringBitmap,
    /// The snapshot's own schema (trait name → index of its sections).
    columns: HashMap<String, (usize, TraitType)>,
    /// Whether `snapshot` already describes the store.
    current: bool,
}

impl ProfileSource {
    fn open(
        cache: &Path,
        store: &Store,
        state: &StoreState,
        schema: &Schema,
    ) -> Result<ProfileSource, StoreError> {
        let path = cache.join("profiles.snap");
        let key = profiles_key(state);
        // A damaged snapshot is rebuilt like a missing one.
        let snapshot = Snapshot::open(&path, "profiles").unwrap_or_default();
        if let Some(snap) = snapshot {
            if let Some(source) = Self::from_snapshot(snap, store, state, key)? {
                return Ok(source);
            }
        }
        // No usable snapshot: read every profile from the store and write one.
        let table = store.load_profiles()?;
        let snapshot = write_profiles(&path, key, schema, &table)?;
        Self::from_snapshot(snapshot, store, state, key)?
            .ok_or_else(|| StoreError::Invalid("snapshot: profiles written unreadable".into()))
    }

    /// The source over `snap` when it is this store's and not newer than it, with the
    /// profiles changed since read from the store.
    fn from_snapshot(
        snap: Snapshot,
        store: &Store,
        state: &StoreState,
        key: ProfilesKey,
    ) -> Result<Option<ProfileSource>, StoreError> {
        let Some(old) = snap.key::<ProfilesKey>() else {
            return Ok(None);
        };
        if old.format != FORMAT
            || old.store_id != key.store_id
            || old.profiles_version > key.profiles_version
        {
            return Ok(None);
        }
        let meta: ProfilesMeta = match serde_json::from_value(snap.meta().clone()) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        let parts = (|| -> Result<_, SnapshotError> {
            Ok((
                snap.array::<u64>("ids.o")?,
                snap.array::<u8>("ids.b")?,
                snap.array::<u32>("retired")?,
            ))
        })();
        let Ok((offsets, bytes, retired)) = parts else {
            return Ok(None);
        };
        let Ok(mut external_ids) = ExternalIds::from_parts(offsets, bytes) else {
            return Ok(None);
        };
        if external_ids.len() != meta.profiles as usize {
            return Ok(None);
        }
        let mut retired: RoaringBitmap = retired.iter().copied().collect();
        let mut changed = BTreeMap::new();
        if old.profiles_version < key.profiles_version {
            for p in store.profiles_changed_since(old.profiles_version)? {
                if p.id as usize == external_ids.len() {
                    external_ids.push(&p.external_id);
                } else if p.id as usize > external_ids.len() {
                    // Ids are dense and come in order: a gap means the store is not the
                    // one the snapshot was made from.
                    return Ok(None);
                }
                if p.retired {
                    retired.insert(p.id);
                } else {
                    retired.remove(p.id);
                }
                changed.insert(p.id, (p.traits, p.retired));
            }
        }
        if external_ids.len() != state.profiles as usize {
            return Ok(None);
        }
        let columns = meta
            .traits
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| (name.clone(), (i, *ty)))
            .collect();
        Ok(Some(ProfileSource {
            current: changed.is_empty(),
            snapshot: Some(snap),
            changed,
            parsed: std::cell::OnceCell::new(),
            external_ids,
            retired,
            columns,
        }))
    }

    /// A table with the ids and retired profiles, and no columns yet.
    fn table(&self) -> ProfileTable {
        ProfileTable {
            external_ids: self.external_ids.clone(),
            columns: BTreeMap::new(),
            indexes: Default::default(),
            retired: self.retired.clone(),
        }
    }

    /// Trait `name` of type `ty` for `len` profiles: decoded from the snapshot, with the
    /// changed profiles' values applied (profiles added since have it only from there).
    fn column(&self, name: &str, ty: TraitType, len: usize) -> Result<Column, StoreError> {
        let mut column = match (self.columns.get(name), &self.snapshot) {
            (Some(&(i, t)), Some(snap)) if t == ty => decode_column(snap, i, ty)?,
            _ => Column::of_type(ty),
        };
        let parsed = self.parsed.get_or_init(|| {
            self.changed
                .iter()
                .map(|(&p, (json, _))| (p, serde_json::from_str(json).unwrap_or_default()))
                .collect()
        });
        let values: Vec<(ProfileId, Option<Value>)> = parsed
            .iter()
            .map(|(&p, traits)| (p, traits.get(name).and_then(|v| Value::from_json(ty, v))))
            .collect();
        column.apply(len, values.iter().map(|(p, v)| (*p, v.as_ref())));
        Ok(column)
    }

    /// Writes a new snapshot when profiles changed since the old one (or always when
    /// `threshold` is 0 and anything changed).
    fn write_if_changed(
        &mut self,
        cache: &Path,
        state: &StoreState,
        schema: &Schema,
        threshold: usize,
    ) -> Result<(), StoreError> {
        if self.current || self.changed.len() < threshold {
            return Ok(());
        }
        let mut table = self.table();
        for (name, spec) in schema {
            // Compacted one by one: a workspace with hundreds of rarely-set traits holds
            // one dense column at a time here, not all of them.
            let column = self.column(name, spec.ty, table.len())?.compacted();
            table.columns.insert(name.clone(), column);
        }
        let path = cache.join("profiles.snap");
        let snapshot = write_profiles(&path, profiles_key(state), schema, &table)?;
        *self = Self::from_snapshot_current(snapshot, &table);
        Ok(())
    }

    fn from_snapshot_current(snapshot: Snapshot, table: &ProfileTable) -> ProfileSource {
        let meta: ProfilesMeta =
            serde_json::from_value(snapshot.meta().clone()).expect("written just now");
        ProfileSource {
            columns: meta
                .traits
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| (name.clone(), (i, *ty)))
                .collect(),
            snapshot: Some(snapshot),
            changed: BTreeMap::new(),
            parsed: std::cell::OnceCell::new(),
            external_ids: table.external_ids.clone(),
            retired: table.retired.clone(),
            current: true,
        }
    }
}

/// A profile snapshot's small values.
#[derive(Debug, Serialize, Deserialize)]
struct ProfilesMeta {
    profiles: u64,
    /// Traits in section order: `t{i}...` holds trait `i`.
    traits: Vec<(String, TraitType)>,
}

/// One profile as changed in the store since some version.
pub struct ChangedProfile {
    /// Dense id.
    pub id: ProfileId,
    /// External id.
    pub external_id: String,
    /// Every trait it has: a JSON object.
    pub traits: String,
    /// Whether it was merged into another.
    pub retired: bool,
}

fn write_profiles(
    path: &Path,
    key: ProfilesKey,
    schema: &Schema,
    table: &ProfileTable,
) -> Result<Snapshot, StoreError> {
    let traits: Vec<(String, TraitType)> = schema
        .iter()
        .filter(|(name, _)| table.columns.contains_key(*name))
        .map(|(name, spec)| (name.clone(), spec.ty))
        .collect();
    let meta = ProfilesMeta {
        profiles: table.len() as u64,
        traits: traits.clone(),
    };
    let retired: Vec<u32> = table.retired.iter().collect();
    let (offsets, bytes) = table.external_ids.parts();
    let mut w = Writer::new("profiles", &key, serde_json::to_value(&meta).expect("meta"));
    w.array("ids.o", offsets);
    w.array("ids.b", bytes);
    w.bytes("retired", le(&retired));
    for (i, (name, _)) in traits.iter().enumerate() {
        encode_column(&mut w, i, &table.columns[name]);
    }
    w.write(path)?;
    Snapshot::open(path, "profiles")?
        .ok_or_else(|| StoreError::Invalid(format!("{}: written, then gone", path.display())))
}

/// Values as little-endian bytes (owned).
fn le<T: microseg_engine::array::Plain>(values: &[T]) -> Vec<u8> {
    microseg_engine::array::as_le_bytes(values).into_owned()
}

fn encode_dictionary(w: &mut Writer<'_>, prefix: &str, dict: &Dictionary) {
    let ids: ExternalIds = (0..dict.len() as u32).map(|c| dict.value(c)).collect();
    let (offsets, bytes) = ids.parts();
    w.bytes(&format!("{prefix}.do"), le(offsets));
    w.bytes(&format!("{prefix}.db"), bytes.to_vec());
}

fn decode_dictionary(snap: &Snapshot, prefix: &str) -> Result<Dictionary, StoreError> {
    let strings = ExternalIds::from_parts(
        snap.array(&format!("{prefix}.do"))?,
        snap.array(&format!("{prefix}.db"))?,
    )
    .map_err(|e| StoreError::Invalid(format!("snapshot {prefix}: {e}")))?;
    let mut dict = Dictionary::default();
    for s in strings.iter() {
        dict.intern(s);
    }
    if dict.len() != strings.len() {
        return Err(StoreError::Invalid(format!(
            "snapshot {prefix}: repeated dictionary entries"
        )));
    }
    Ok(dict)
}

fn encode_column(w: &mut Writer<'_>, i: usize, column: &Column) {
    let t = format!("t{i}");
    match column {
        // Written dense (one column at a time); reading compacts it again.
        Column::Sparse(s) => encode_column(w, i, &s.to_dense()),
        Column::Bool(v) => w.bytes(&t, v.iter().map(|b| b.map_or(2, u8::from)).collect()),
        Column::Int(v) | Column::Time(v) => {
            w.bytes(
                &t,
                le(&v.iter().map(|x| x.unwrap_or(0)).collect::<Vec<i64>>()),
            );
            w.bytes(
                &format!("{t}.p"),
                v.iter().map(|x| u8::from(x.is_some())).collect(),
            );
        }
        Column::Float(v) => w.bytes(
            &t,
            le(&v
                .iter()
                .map(|x| x.unwrap_or(f64::NAN))
                .collect::<Vec<f64>>()),
        ),
        Column::Str { dict, codes } => {
            w.bytes(&t, le(codes));
            encode_dictionary(w, &t, dict);
        }
        Column::Set {
            dict,
            offsets,
            items,
            present,
        } => {
            w.bytes(&format!("{t}.o"), le(offsets));
            w.bytes(&format!("{t}.i"), le(items));
            w.bytes(
                &format!("{t}.p"),
                present.iter().map(|&b| u8::from(b)).collect(),
            );
            encode_dictionary(w, &t, dict);
        }
    }
}

fn decode_column(snap: &Snapshot, i: usize, ty: TraitType) -> Result<Column, StoreError> {
    let t = format!("t{i}");
    let bad = |what: &str| StoreError::Invalid(format!("snapshot {t}: {what}"));
    Ok(match ty {
        TraitType::Bool => Column::Bool(
            snap.bytes(&t)?
                .iter()
                .map(|&b| match b {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                })
                .collect(),
        ),
        TraitType::Integer | TraitType::Timestamp => {
            let values = snap.array::<i64>(&t)?;
            let present = snap.bytes(&format!("{t}.p"))?;
            if present.len() != values.len() {
                return Err(bad("presence length"));
            }
            let v = values
                .iter()
                .zip(present)
                .map(|(&x, &p)| (p != 0).then_some(x))
                .collect();
            if ty == TraitType::Integer {
                Column::Int(v)
            } else {
                Column::Time(v)
            }
        }
        TraitType::Float => Column::Float(
            snap.array::<f64>(&t)?
                .iter()
                .map(|&x| (!x.is_nan()).then_some(x))
                .collect(),
        ),
        TraitType::String => {
            let dict = decode_dictionary(snap, &t)?;
            let codes = snap.array::<u32>(&t)?.to_vec();
            if codes
                .iter()
                .any(|&c| c != NO_CODE && c as usize >= dict.len())
            {
                return Err(bad("codes outside the dictionary"));
            }
            Column::Str { dict, codes }
        }
        TraitType::StringSet => {
            let dict = decode_dictionary(snap, &t)?;
            let offsets = snap.array::<u32>(&format!("{t}.o"))?.to_vec();
            let items = snap.array::<u32>(&format!("{t}.i"))?.to_vec();
            let present: Vec<bool> = snap
                .bytes(&format!("{t}.p"))?
                .iter()
                .map(|&b| b != 0)
                .collect();
            if offsets.len() != present.len() + 1
                || offsets.first() != Some(&0)
                || offsets.last() != Some(&(items.len() as u32))
                || offsets.windows(2).any(|w| w[0] > w[1])
                || items.iter().any(|&c| c as usize >= dict.len())
            {
                return Err(bad("set offsets or items"));
            }
            Column::Set {
                dict,
                offsets,
                items,
                present,
            }
        }
    })
}

/// An events snapshot's small values.
#[derive(Debug, Serialize, Deserialize)]
struct EventsMeta {
    profiles: u64,
    events: u64,
    names: Vec<String>,
}

/// Events read from the store in id order (a catch-up's new events, or all of them).
#[derive(Default)]
struct NewEvents {
    profile: Vec<u32>,
    time: Vec<i64>,
    name: Vec<u32>,
    revenue: Vec<f64>,
    /// Per property kept: numbers and text codes per event, and the texts.
    properties: Vec<(Vec<f64>, Vec<u32>, Dictionary)>,
}

/// The events as of the store's state: the snapshot, caught up or rebuilt as needed.
fn load_events(
    cache: &Path,
    store: &Store,
    state: &StoreState,
    write_after: usize,
) -> Result<Loaded, StoreError> {
    let path = cache.join("events.snap");
    let key = events_key(state);
    let snapshot = Snapshot::open(&path, "events").ok().flatten();
    let old = snapshot.and_then(|snap| {
        let old_key = snap.key::<EventsKey>()?;
        let usable = old_key.format == FORMAT
            && old_key.store_id == key.store_id
            && old_key.rewrites == key.rewrites
            && old_key.max_event_id <= key.max_event_id
            && old_key.merges_version <= key.merges_version;
        if !usable {
            return None;
        }
        let loaded = read_events_snapshot(&snap, old_key, state.profiles as usize).ok()?;
        Some((snap, loaded))
    });
    if let Some((_, loaded)) = &old {
        if loaded.key == key {
            return Ok(old.expect("some").1);
        }
    }
    // Catch up from the store: the events after the snapshot (all without one), and the
    // properties kept beside the old snapshot.
    let (old_loaded, properties) = match old {
        Some((_, loaded)) => {
            let kept = kept_properties(cache, &loaded.key);
            (Some(loaded), kept)
        }
        None => (None, Vec::new()),
    };
    let after = old_loaded.as_ref().map_or(0, |l| l.key.max_event_id);
    let names: Vec<&str> = properties.iter().map(|(n, _)| n.as_str()).collect();
    let new = store.events_after(after, key.max_event_id, &names)?;
    let survivors = store.survivors(state.profiles as usize)?;
    let merged = merge_events(
        old_loaded.as_ref(),
        &new,
        &survivors,
        state.profiles as usize,
    )?;
    let event_names = store.event_names()?;
    let mut dict = Dictionary::default();
    for n in &event_names {
        dict.intern(n);
    }
    let table = EventTable::from_parts(
        merged.offsets.into(),
        merged.time.into(),
        merged.name.into(),
        dict,
        merged.revenue.into(),
    )
    .map_err(|e| StoreError::Invalid(format!("events: {e}")))?;
    let mut loaded = Loaded {
        table,
        seq: merged.seq.into(),
        key,
    };
    // The kept properties, in the new order.
    let mut columns = Vec::new();
    for (i, (name, old_column)) in properties.into_iter().enumerate() {
        let (numbers, texts, dict) = &new.properties[i];
        let column = gather_property(&merged.perm, old_column.as_ref(), numbers, texts, dict);
        columns.push((name, column));
    }
    let worth_writing = old_loaded.is_none()
        || new.time.len() >= write_after
        || old_loaded
            .as_ref()
            .is_some_and(|l| l.key.merges_version != key.merges_version);
    if worth_writing {
        write_events(&path, &loaded, state)?;
        for (name, column) in &columns {
            write_property(cache, &loaded.key, name, column)?;
        }
        // Map the files just written instead of keeping the heap copies.
        if let Some(snap) = Snapshot::open(&path, "events")? {
            if let Ok(mapped) = read_events_snapshot(&snap, key, state.profiles as usize) {
                loaded = mapped;
            }
        }
        remove_stale_properties(cache, &key);
    }
    for (name, column) in columns {
        loaded
            .table
            .set_property_column(&name, column)
            .map_err(StoreError::Invalid)?;
    }
    Ok(loaded)
}

/// The events of an events snapshot, for `profiles` profiles (profiles added since have
/// no events in it).
fn read_events_snapshot(
    snap: &Snapshot,
    key: EventsKey,
    profiles: usize,
) -> Result<Loaded, StoreError> {
    let meta: EventsMeta = serde_json::from_value(snap.meta().clone())
        .map_err(|e| StoreError::Invalid(format!("snapshot events meta: {e}")))?;
    let mut offsets = snap.array::<u64>("offsets")?;
    if offsets.len() != meta.profiles as usize + 1 || (profiles as u64) < meta.profiles {
        return Err(StoreError::Invalid("snapshot events: profile count".into()));
    }
    if offsets.len() < profiles + 1 {
        let mut v = offsets.into_vec();
        let end = *v.last().unwrap_or(&0);
        v.resize(profiles + 1, end);
        offsets = v.into();
    }
    let mut dict = Dictionary::default();
    for n in &meta.names {
        dict.intern(n);
    }
    let table = EventTable::from_parts(
        offsets,
        snap.array("time")?,
        snap.array("name")?,
        dict,
        snap.array("revenue")?,
    )
    .map_err(|e| StoreError::Invalid(format!("snapshot events: {e}")))?;
    let seq = snap.array::<u32>("seq")?;
    if seq.len() != table.len() || table.len() as u64 != meta.events {
        return Err(StoreError::Invalid("snapshot events: lengths".into()));
    }
    Ok(Loaded { table, seq, key })
}

fn write_events(path: &Path, loaded: &Loaded, state: &StoreState) -> Result<(), StoreError> {
    let t = &loaded.table;
    let meta = EventsMeta {
        profiles: state.profiles as u64,
        events: t.len() as u64,
        names: (0..t.names.len() as u32)
            .map(|c| t.names.value(c).to_string())
            .collect(),
    };
    let mut w = Writer::new(
        "events",
        &loaded.key,
        serde_json::to_value(&meta).expect("meta"),
    );
    w.array("offsets", t.offsets());
    w.array("time", &t.time);
    w.array("name", &t.name);
    w.array("revenue", &t.revenue);
    w.array("seq", &loaded.seq);
    w.write(path)?;
    Ok(())
}

/// The properties kept beside an events snapshot of `key`: their names and columns.
fn kept_properties(cache: &Path, key: &EventsKey) -> Vec<(String, Option<PropertyColumn>)> {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let is_property = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("property-") && n.ends_with(".snap"));
        if !is_property {
            continue;
        }
        let Ok(Some(snap)) = Snapshot::open(&path, "property") else {
            continue;
        };
        let Some(k) = snap.key::<PropertyKey>() else {
            continue;
        };
        if k.events != *key {
            continue;
        }
        if let Ok(column) = read_property(&snap) {
            out.push((k.name, Some(column)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn remove_stale_properties(cache: &Path, key: &EventsKey) {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("property-") && name.ends_with(".snap")) {
            continue;
        }
        let current = Snapshot::open(&path, "property")
            .ok()
            .flatten()
            .and_then(|s| s.key::<PropertyKey>())
            .is_some_and(|k| k.events == *key);
        if !current {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn read_property(snap: &Snapshot) -> Result<PropertyColumn, StoreError> {
    Ok(PropertyColumn {
        numbers: if snap.has("numbers") {
            snap.array("numbers")?
        } else {
            Array::new()
        },
        texts: if snap.has("texts") {
            snap.array("texts")?
        } else {
            Array::new()
        },
        dict: decode_dictionary(snap, "d")?,
    })
}

fn write_property(
    cache: &Path,
    events: &EventsKey,
    name: &str,
    column: &PropertyColumn,
) -> Result<(), StoreError> {
    let key = PropertyKey {
        events: *events,
        name: name.to_string(),
    };
    let mut w = Writer::new("property", &key, serde_json::Value::Null);
    if !column.numbers.is_empty() {
        w.array("numbers", &column.numbers);
    }
    if !column.texts.is_empty() {
        w.array("texts", &column.texts);
    }
    encode_dictionary(&mut w, "d", &column.dict);
    w.write(&property_path(cache, name))?;
    Ok(())
}

/// Property `name` for the loaded events: its snapshot when it describes them, otherwise
/// read from the store (every event's value, in id order, placed by arrival rank) and
/// written for next time.
fn load_property(
    cache: &Path,
    store: &Store,
    loaded: &Loaded,
    name: &str,
) -> Result<PropertyColumn, StoreError> {
    let path = property_path(cache, name);
    if let Ok(Some(snap)) = Snapshot::open(&path, "property") {
        if snap
            .key::<PropertyKey>()
            .is_some_and(|k| k.events == loaded.key && k.name == name)
        {
            if let Ok(column) = read_property(&snap) {
                return Ok(column);
            }
        }
    }
    let (numbers, texts, dict) = store.property_by_arrival(name, loaded.key.max_event_id)?;
    if numbers.len() != loaded.table.len() {
        return Err(StoreError::Invalid(format!(
            "property {name}: {} events in the store, {} loaded",
            numbers.len(),
            loaded.table.len()
        )));
    }
    let mut column = PropertyColumn {
        numbers: loaded
            .seq
            .iter()
            .map(|&s| numbers.get(s as usize).copied().unwrap_or(f64::NAN))
            .collect(),
        texts: loaded
            .seq
            .iter()
            .map(|&s| texts.get(s as usize).copied().unwrap_or(NO_CODE))
            .collect(),
        dict,
    };
    column.compact();
    write_property(cache, &loaded.key, name, &column)?;
    Ok(column)
}

/// The events of `table` named by one of `names` or dated after `after`, with
/// `properties`.
fn filter_events(
    table: &EventTable,
    names: &[&str],
    properties: &[&str],
    after: Timestamp,
) -> EventTable {
    let mut builder = EventTableBuilder::default();
    let names_all: Vec<String> = (0..table.names.len() as u32)
        .map(|c| table.names.value(c).to_string())
        .collect();
    builder.define_names(&names_all);
    for p in 0..table.profiles() as ProfileId {
        for r in table.events_of(p) {
            let name = table.names.value(table.name[r]);
            if !names.contains(&name) && table.time[r] <= after.0 {
                continue;
            }
            let revenue = Some(table.revenue[r]).filter(|x| !x.is_nan());
            builder.push_code(p, table.time[r], table.name[r], revenue);
            let at = builder.len() - 1;
            for &key in properties {
                if let Some(c) = table.properties.get(key) {
                    if !c.number(r).is_nan() {
                        builder.set_property(at, key, PropertyValue::Number(c.number(r)));
                    } else if c.text(r) != NO_CODE {
                        builder.set_property(at, key, PropertyValue::Text(c.dict.value(c.text(r))));
                    }
                }
            }
        }
    }
    builder.finish(table.profiles())
}

/// Old and new events merged: per profile (its survivor), by time, then arrival.
struct Merged {
    offsets: Vec<u64>,
    time: Vec<i64>,
    name: Vec<u32>,
    revenue: Vec<f64>,
    seq: Vec<u32>,
    /// For each row, where it came from: `< old` an old row, else `old + i` new event `i`.
    perm: Perm,
}

struct Perm {
    rows: Vec<u32>,
    old: usize,
}

fn merge_events(
    old: Option<&Loaded>,
    new: &NewEvents,
    survivors: &[ProfileId],
    profiles: usize,
) -> Result<Merged, StoreError> {
    let n_old = old.map_or(0, |l| l.table.len());
    let n = n_old + new.time.len();
    if n > u32::MAX as usize {
        return Err(StoreError::Invalid(format!(
            "{n} events: more than this version holds"
        )));
    }
    let owner = |p: u32| -> Result<u32, StoreError> {
        survivors
            .get(p as usize)
            .copied()
            .ok_or_else(|| StoreError::Invalid(format!("store: event of unknown profile {p}")))
    };
    // Counting sort by owner: old rows in their order, then new ones in id order.
    let mut offsets = vec![0u64; profiles + 1];
    let old_profiles = old.map_or(0, |l| l.table.profiles());
    if let Some(l) = old {
        for p in 0..old_profiles as u32 {
            offsets[owner(p)? as usize + 1] += l.table.events_of(p).len() as u64;
        }
    }
    for &p in &new.profile {
        offsets[owner(p)? as usize + 1] += 1;
    }
    for i in 0..profiles {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut rows = vec![0u32; n];
    if let Some(l) = old {
        for p in 0..old_profiles as u32 {
            let slot = &mut next[owner(p)? as usize];
            for r in l.table.events_of(p) {
                rows[*slot as usize] = r as u32;
                *slot += 1;
            }
        }
    }
    for (i, &p) in new.profile.iter().enumerate() {
        let slot = &mut next[owner(p)? as usize];
        rows[*slot as usize] = (n_old + i) as u32;
        *slot += 1;
    }
    let time_of = |s: u32| {
        let s = s as usize;
        match old {
            Some(l) if s < n_old => l.table.time[s],
            _ => new.time[s - n_old],
        }
    };
    let seq_of = |s: u32| {
        let s = s as usize;
        match old {
            Some(l) if s < n_old => l.seq[s],
            _ => s as u32,
        }
    };
    for w in offsets.windows(2) {
        let slice = &mut rows[w[0] as usize..w[1] as usize];
        let key = |&s: &u32| (time_of(s), seq_of(s));
        if slice.windows(2).any(|p| key(&p[0]) > key(&p[1])) {
            slice.sort_unstable_by_key(key);
        }
    }
    let pick = |s: u32| -> (i64, u32, f64, u32) {
        let s = s as usize;
        match old {
            Some(l) if s < n_old => (
                l.table.time[s],
                l.table.name[s],
                l.table.revenue[s],
                l.seq[s],
            ),
            _ => {
                let i = s - n_old;
                (new.time[i], new.name[i], new.revenue[i], s as u32)
            }
        }
    };
    let mut time = Vec::with_capacity(n);
    let mut name = Vec::with_capacity(n);
    let mut revenue = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    for &s in &rows {
        let (t, nm, r, q) = pick(s);
        time.push(t);
        name.push(nm);
        revenue.push(r);
        seq.push(q);
    }
    Ok(Merged {
        offsets,
        time,
        name,
        revenue,
        seq,
        perm: Perm { rows, old: n_old },
    })
}

/// A kept property's column in the merged order: old values, then the new events'.
fn gather_property(
    perm: &Perm,
    old: Option<&PropertyColumn>,
    numbers: &[f64],
    texts: &[u32],
    new_dict: &Dictionary,
) -> PropertyColumn {
    let mut dict = old.map(|c| c.dict.clone()).unwrap_or_default();
    // New texts get codes after the old ones.
    let recode: Vec<u32> = (0..new_dict.len() as u32)
        .map(|c| dict.intern(new_dict.value(c)))
        .collect();
    let (mut nums, mut codes) = (
        Vec::with_capacity(perm.rows.len()),
        Vec::with_capacity(perm.rows.len()),
    );
    for &s in &perm.rows {
        let s = s as usize;
        if s < perm.old {
            let c = old.expect("old rows have an old column");
            nums.push(c.number(s));
            codes.push(c.text(s));
        } else {
            let i = s - perm.old;
            nums.push(numbers[i]);
            codes.push(match texts[i] {
                NO_CODE => NO_CODE,
                c => recode[c as usize],
            });
        }
    }
    let mut column = PropertyColumn {
        numbers: nums.into(),
        texts: codes.into(),
        dict,
    };
    column.compact();
    column
}

impl Store {
    /// The events with an id in `(after, up_to]`, in id order, with properties `names`.
    fn events_after(
        &self,
        after: u64,
        up_to: u64,
        names: &[&str],
    ) -> Result<NewEvents, StoreError> {
        self.new_events("", rusqlite::params![after as i64, up_to as i64], names)
    }

    /// The events with an id in `(after, up_to]` named by one of `codes` or dated after
    /// `later`, in id order, with properties `names`.
    fn events_matching(
        &self,
        after: u64,
        up_to: u64,
        codes: &[u32],
        later: Timestamp,
        names: &[&str],
    ) -> Result<NewEvents, StoreError> {
        // `IN (-1)` when no name is wanted (an empty list is not SQL).
        let mut list: Vec<String> = codes.iter().map(u32::to_string).collect();
        if list.is_empty() {
            list.push("-1".into());
        }
        self.new_events(
            &format!("AND (name_id IN ({}) OR time > ?3)", list.join(", ")),
            rusqlite::params![after as i64, up_to as i64, later.0],
            names,
        )
    }

    /// The events with an id in `(?1, ?2]` and `filter` (more SQL, its parameters from
    /// ?3 on), in id order, with properties `names`.
    fn new_events(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
        names: &[&str],
    ) -> Result<NewEvents, StoreError> {
        let properties = if names.is_empty() {
            "NULL"
        } else {
            "properties"
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT profile_id, time, name_id, revenue, {properties} FROM events
             WHERE id > ?1 AND id <= ?2 {filter} ORDER BY id"
        ))?;
        let mut out = NewEvents {
            properties: names.iter().map(|_| Default::default()).collect(),
            ..NewEvents::default()
        };
        let mut found = vec![PropertyJson::Absent; names.len()];
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            out.profile.push(row.get(0)?);
            out.time.push(row.get(1)?);
            out.name.push(row.get(2)?);
            out.revenue
                .push(row.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN));
            read_properties(row.get_ref(4)?, names, &mut found);
            for (column, value) in out.properties.iter_mut().zip(&found) {
                push_property(column, value);
            }
        }
        Ok(out)
    }

    /// Property `name` of every event up to id `up_to`, in id order.
    fn property_by_arrival(
        &self,
        name: &str,
        up_to: u64,
    ) -> Result<(Vec<f64>, Vec<u32>, Dictionary), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT properties FROM events WHERE id <= ?1 ORDER BY id")?;
        let mut column = Default::default();
        let mut found = [PropertyJson::Absent];
        let mut rows = stmt.query([up_to as i64])?;
        while let Some(row) = rows.next()? {
            read_properties(row.get_ref(0)?, &[name], &mut found);
            push_property(&mut column, &found[0]);
        }
        Ok(column)
    }

    /// The profiles whose version is above `version`, in id order, with their traits.
    pub fn profiles_changed_since(&self, version: u64) -> Result<Vec<ChangedProfile>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, external_id, traits, merged_into IS NOT NULL OR erased_at IS NOT NULL
             FROM profiles WHERE version > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([version as i64], |row| {
            Ok(ChangedProfile {
                id: row.get(0)?,
                external_id: row.get(1)?,
                traits: row.get(2)?,
                retired: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// One event property as read from its JSON, typed as the evaluators read properties
/// (and as the SQL backend's `json_extract` gives them): numbers as numbers; strings,
/// `true` and `false`, lists and objects (their compact JSON) as text; `null` as absent.
#[derive(Debug, Clone, PartialEq)]
enum PropertyJson {
    Absent,
    Number(f64),
    Text(String),
}

impl From<serde_json::Value> for PropertyJson {
    fn from(v: serde_json::Value) -> PropertyJson {
        match v {
            serde_json::Value::Null => PropertyJson::Absent,
            serde_json::Value::Number(n) => n
                .as_f64()
                .map_or(PropertyJson::Absent, PropertyJson::Number),
            serde_json::Value::String(s) => PropertyJson::Text(s),
            serde_json::Value::Bool(b) => PropertyJson::Text(b.to_string()),
            other => PropertyJson::Text(other.to_string()),
        }
    }
}

/// The values of properties `names` in the JSON object `properties` (a `properties`
/// column value), parsed once, skipping every other key without building it.
fn read_properties(
    properties: rusqlite::types::ValueRef<'_>,
    names: &[&str],
    found: &mut [PropertyJson],
) {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    found.iter_mut().for_each(|f| *f = PropertyJson::Absent);
    let rusqlite::types::ValueRef::Text(text) = properties else {
        return;
    };
    struct Wanted<'a, 'b> {
        names: &'a [&'a str],
        found: &'b mut [PropertyJson],
    }
    impl<'de> Visitor<'de> for Wanted<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match self.names.iter().position(|n| *n == key) {
                    Some(i) => {
                        self.found[i] = PropertyJson::from(map.next_value::<serde_json::Value>()?)
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    // Stored properties are JSON objects; anything else has no properties.
    if de
        .deserialize_map(Wanted {
            names,
            found: &mut *found,
        })
        .is_err()
    {
        found.iter_mut().for_each(|f| *f = PropertyJson::Absent);
    }
}

fn push_property(column: &mut (Vec<f64>, Vec<u32>, Dictionary), value: &PropertyJson) {
    let (numbers, texts, dict) = column;
    match value {
        PropertyJson::Number(x) => {
            numbers.push(*x);
            texts.push(NO_CODE);
        }
        PropertyJson::Text(t) => {
            numbers.push(f64::NAN);
            texts.push(dict.intern(t));
        }
        PropertyJson::Absent => {
            numbers.push(f64::NAN);
            texts.push(NO_CODE);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The snapshot is a shortcut, so it gets an agreement test: after every step of a
    //! random history (events with properties, identify calls, alias merges, event and
    //! profile imports), the tables caught up from the workspace's snapshots must equal
    //! the tables read whole from the store into an empty cache, column by column.

    use super::*;
    use crate::ingest::Ingestor;
    use crate::tracking::parse_request;
    use crate::{EventImport, EventName, FileOptions, NoProgress, ProfileImport};
    use microseg_core::time::TimeFormat;
    use microseg_synth::Rng;
    use serde_json::json;

    const PROPERTIES: [&str; 2] = ["path", "n"];

    fn batch(rng: &mut Rng, step: usize) -> Vec<u8> {
        let mut calls = Vec::new();
        for i in 0..1 + rng.below(12) {
            let user = format!("u{}", rng.below(25));
            let anon = format!("a{}", rng.below(25));
            // Times move forward with some late arrivals and many ties.
            let day = (step as i64 * 3 + rng.below(10) as i64 - 5).max(0);
            let time = format!("2024-02-{:02}T{:02}:00:00Z", 1 + day % 28, rng.below(3));
            let call = match rng.below(10) {
                0..=4 => {
                    let mut properties = serde_json::Map::new();
                    if rng.below(3) > 0 {
                        properties.insert(
                            "path".into(),
                            json!(["/a", "/b", "/winter"][rng.below(3) as usize]),
                        );
                    }
                    if rng.below(2) == 0 {
                        properties.insert("n".into(), json!(rng.below(5)));
                    }
                    if rng.below(4) == 0 {
                        properties.insert("revenue".into(), json!(rng.below(90)));
                    }
                    let who = if rng.below(4) == 0 {
                        json!({"anonymousId": anon})
                    } else {
                        json!({"userId": user})
                    };
                    let event = ["view", "order_completed"][rng.below(2) as usize];
                    let mut c = json!({"type": "track", "event": event,
                        "timestamp": time, "properties": properties, "messageId": format!("m{step}-{i}")});
                    c.as_object_mut()
                        .unwrap()
                        .extend(who.as_object().unwrap().clone());
                    c
                }
                5..=7 => {
                    let plan = ["free", "pro"][rng.below(2) as usize];
                    json!({"type": "identify", "userId": user, "timestamp": time,
                    "traits": {"plan": plan, "age": 20 + rng.below(40),
                               "tags": if rng.below(2) == 0 { json!(["x", "y"]) } else { json!(null) }}})
                }
                8 => {
                    json!({"type": "identify", "userId": user, "anonymousId": anon, "timestamp": time})
                }
                _ => {
                    json!({"type": "alias", "userId": user, "previousId": format!("u{}", rng.below(25))})
                }
            };
            calls.push(call);
        }
        serde_json::to_vec(&json!({ "batch": calls })).unwrap()
    }

    /// Everything the tables hold, in comparable form: ids, retired, events, traits.
    type Contents = (
        Vec<String>,
        Vec<u32>,
        Vec<(u32, i64, String, u64)>,
        Vec<String>,
    );

    fn contents(events: &EventTable, profiles: &ProfileTable) -> Contents {
        let mut rows = Vec::new();
        for p in 0..events.profiles() as u32 {
            for r in events.events_of(p) {
                let props: Vec<String> = PROPERTIES
                    .iter()
                    .map(|k| match events.properties.get(*k) {
                        Some(c) if !c.number(r).is_nan() => format!("{}", c.number(r)),
                        Some(c) if c.text(r) != NO_CODE => c.dict.value(c.text(r)).to_string(),
                        _ => "-".into(),
                    })
                    .collect();
                rows.push((
                    p,
                    events.time[r],
                    format!("{} {}", events.names.value(events.name[r]), props.join(" ")),
                    events.revenue[r].to_bits(),
                ));
            }
        }
        let traits = profiles
            .columns
            .iter()
            .flat_map(|(name, c)| {
                (0..profiles.len() as u32).map(move |p| format!("{name} {p} {:?}", c.get(p)))
            })
            .collect();
        (
            profiles.external_ids.iter().map(String::from).collect(),
            profiles.retired.iter().collect(),
            rows,
            traits,
        )
    }

    fn loaded(ws: &Workspace, cache: &Path, write_after: usize) -> (EventTable, ProfileTable) {
        let store = Store::open(ws).unwrap();
        let state = store.state().unwrap();
        let schema = store.schema().unwrap();
        let mut source = ProfileSource::open(cache, &store, &state, &schema).unwrap();
        if write_after == 0 {
            source.write_if_changed(cache, &state, &schema, 0).unwrap();
        }
        let mut profiles = source.table();
        for (name, spec) in &schema {
            let column = source.column(name, spec.ty, profiles.len()).unwrap();
            profiles.columns.insert(name.clone(), column);
        }
        let mut events = load_events(cache, &store, &state, write_after).unwrap();
        for name in PROPERTIES {
            if !events.table.properties.contains_key(name) {
                let column = load_property(cache, &store, &events, name).unwrap();
                events.table.set_property_column(name, column).unwrap();
            }
        }
        (events.table, profiles)
    }

    #[test]
    fn caught_up_snapshots_equal_the_store_read_whole() {
        for seed in 0..4u64 {
            let dir = tempfile::tempdir().unwrap();
            let (ws, _) = Workspace::init(&dir.path().join("ws")).unwrap();
            let mut rng = Rng::new(seed);
            // Merges between customers too, to exercise every kind of merge.
            let open = || {
                let mut i = Ingestor::open(Store::open(&ws).unwrap()).unwrap();
                i.allow_customer_merges(true);
                i
            };
            let mut ingestor = open();
            let mut merges = 0;
            for step in 0..40 {
                match rng.below(10) {
                    0 => {
                        // An event import beside the ingestor (new profiles among them).
                        drop(ingestor);
                        let file = dir.path().join(format!("e{step}.csv"));
                        let mut text = String::from("user,time,event,path,n\n");
                        for _ in 0..rng.below(30) {
                            text.push_str(&format!(
                                "u{},2024-01-{:02},view,/imported,{}\n",
                                rng.below(40),
                                1 + rng.below(28),
                                rng.below(9)
                            ));
                        }
                        std::fs::write(&file, text).unwrap();
                        Store::open(&ws)
                            .unwrap()
                            .import_events(
                                &ws,
                                &EventImport {
                                    file: FileOptions::new(&file),
                                    profile_column: "user".into(),
                                    time_column: "time".into(),
                                    time_format: TimeFormat::Auto,
                                    name: EventName::Column("event".into()),
                                    revenue_column: None,
                                },
                                &NoProgress,
                            )
                            .unwrap();
                        ingestor = open();
                    }
                    1 => {
                        drop(ingestor);
                        let file = dir.path().join(format!("p{step}.csv"));
                        let mut text = String::from("id,city\n");
                        for _ in 0..rng.below(10) {
                            text.push_str(&format!("u{},c{}\n", rng.below(45), rng.below(3)));
                        }
                        std::fs::write(&file, text).unwrap();
                        Store::open(&ws)
                            .unwrap()
                            .import_profiles(
                                &ws,
                                &ProfileImport {
                                    file: FileOptions::new(&file),
                                    id_column: "id".into(),
                                    types: Default::default(),
                                    skip_columns: Vec::new(),
                                },
                                &NoProgress,
                            )
                            .unwrap();
                        ingestor = open();
                    }
                    _ => {
                        let request = parse_request(None, &batch(&mut rng, step)).unwrap();
                        let written = ingestor
                            .write(vec![request.messages], Timestamp(1_706_745_600_000))
                            .unwrap();
                        merges += written
                            .applied
                            .iter()
                            .filter(|a| matches!(a, crate::ingest::Applied::Merge { .. }))
                            .count();
                    }
                }
                // Only some events, read from the (older) snapshot and the store's newer
                // events, equal the same events picked out of the whole table (below).
                let store = Store::open(&ws).unwrap();
                let mut tables = Tables::open(&ws, &store, Timestamp(0)).unwrap();
                let after = Timestamp(1_706_745_600_000 + rng.below(30) as i64 * 86_400_000);
                let names: &[&str] =
                    [&["view"][..], &["order_completed"], &[]][rng.below(3) as usize];
                let picked = tables.events_named(names, &PROPERTIES, after).unwrap();
                drop(tables);
                let write_after = if rng.below(2) == 0 { 0 } else { 1_000_000 };
                let (events, profiles) = loaded(&ws, &cache_dir(&ws), write_after);
                let fresh = tempfile::tempdir().unwrap();
                let (events2, profiles2) = loaded(&ws, fresh.path(), 1_000_000);
                assert_eq!(
                    contents(&events, &profiles),
                    contents(&events2, &profiles2),
                    "seed {seed}, step {step}"
                );
                let expected = filter_events(&events2, names, &PROPERTIES, after);
                assert_eq!(
                    contents(&picked, &profiles2).2,
                    contents(&expected, &profiles2).2,
                    "seed {seed}, step {step}: events named {names:?} or after {after}"
                );
            }
            assert!(merges > 0, "seed {seed}: the history should merge profiles");
        }
    }
}
