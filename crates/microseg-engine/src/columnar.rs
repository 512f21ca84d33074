//! Columnar in-memory tables: profile traits by column, events by column sorted by
//! profile and time. They are a cache of the durable store, rebuilt from it, and the input
//! of every evaluator.
//!
//! Profile ids are dense (`0..len`), so column `i` of every table belongs to profile `i`.
//! Strings are dictionary-encoded (`u32` codes). Event revenue uses `NaN` for "no revenue"
//! (imports reject non-finite revenue, so `NaN` never means anything else).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use microseg_core::{ProfileId, Schema, TraitType, Value};

use crate::array::{Array, Plain};

/// Code meaning "no value" in a dictionary-encoded column.
pub const NO_CODE: u32 = u32::MAX;

/// Interned strings: each distinct string gets a `u32` code in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Dictionary {
    /// The code of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&code) = self.index.get(s) {
            return code;
        }
        let code = self.values.len() as u32;
        self.values.push(s.to_string());
        self.index.insert(s.to_string(), code);
        code
    }

    /// The code of `s`, if present.
    pub fn code(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }

    /// The string of `code`.
    pub fn value(&self, code: u32) -> &str {
        &self.values[code as usize]
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no string was interned.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A column for a trait few profiles have (a new trait, or one set on a few people):
/// its values by profile, so memory grows with the values, not with the profiles. A
/// write key can create hundreds of such traits; as dense columns each would take a slot
/// per profile.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseColumn {
    ty: TraitType,
    len: usize,
    values: BTreeMap<ProfileId, Value>,
}

/// A sparse column turns dense once more than one profile in this many has a value (and
/// a dense one is kept sparse below it).
pub const SPARSE_SHARE: usize = 16;

impl SparseColumn {
    /// The type of the values.
    pub fn trait_type(&self) -> TraitType {
        self.ty
    }

    /// The profiles with a value, and the values, by profile.
    pub fn values(&self) -> impl Iterator<Item = (ProfileId, &Value)> + '_ {
        self.values.iter().map(|(&p, v)| (p, v))
    }

    /// The same column, dense.
    pub fn to_dense(&self) -> Column {
        let mut dense = Column::new(self.ty);
        dense.apply(self.len, self.values.iter().map(|(&p, v)| (p, Some(v))));
        dense
    }

    /// Whether it has grown past [`SPARSE_SHARE`] and should be dense.
    fn crowded(&self) -> bool {
        self.values.len() > 64 && self.values.len() * SPARSE_SHARE > self.len
    }
}

/// `value` as a column of type `ty` keeps it (an integer in a float column becomes a
/// float; a set's items sorted); `None` for a value of another type.
fn typed(ty: TraitType, value: Option<&Value>) -> Option<Value> {
    Some(match (ty, value?) {
        (TraitType::Bool, Value::Bool(b)) => Value::Bool(*b),
        (TraitType::Integer, Value::Int(i)) => Value::Int(*i),
        (TraitType::Float, Value::Float(x)) => Value::Float(*x),
        (TraitType::Float, Value::Int(i)) => Value::Float(*i as f64),
        (TraitType::Timestamp, Value::Time(t)) => Value::Time(*t),
        (TraitType::String, Value::Str(s)) => Value::Str(s.clone()),
        (TraitType::StringSet, Value::Set(items)) => {
            let mut items = items.clone();
            items.sort_unstable();
            Value::Set(items)
        }
        _ => return None,
    })
}

/// One trait column, one slot per profile.
#[derive(Debug, Clone)]
pub enum Column {
    /// Booleans.
    Bool(Vec<Option<bool>>),
    /// Integers.
    Int(Vec<Option<i64>>),
    /// Floats.
    Float(Vec<Option<f64>>),
    /// Timestamps in UTC milliseconds.
    Time(Vec<Option<i64>>),
    /// Dictionary-encoded strings; [`NO_CODE`] when missing.
    Str {
        /// The distinct strings.
        dict: Dictionary,
        /// One code per profile.
        codes: Vec<u32>,
    },
    /// String sets: profile `i` holds `items[offsets[i]..offsets[i + 1]]`.
    Set {
        /// The distinct strings.
        dict: Dictionary,
        /// Start of each profile's items; one more entry than profiles.
        offsets: Vec<u32>,
        /// Item codes, sorted within each profile.
        items: Vec<u32>,
        /// Whether the profile has the trait at all (an empty set is not a missing one).
        present: Vec<bool>,
    },
    /// Any type, few values: see [`SparseColumn`].
    Sparse(SparseColumn),
}

impl Column {
    fn new(ty: TraitType) -> Column {
        match ty {
            TraitType::Bool => Column::Bool(Vec::new()),
            TraitType::Integer => Column::Int(Vec::new()),
            TraitType::Float => Column::Float(Vec::new()),
            TraitType::Timestamp => Column::Time(Vec::new()),
            TraitType::String => Column::Str {
                dict: Dictionary::default(),
                codes: Vec::new(),
            },
            TraitType::StringSet => Column::Set {
                dict: Dictionary::default(),
                offsets: vec![0],
                items: Vec::new(),
                present: Vec::new(),
            },
        }
    }

    /// The type of the values.
    pub fn trait_type(&self) -> TraitType {
        match self {
            Column::Bool(_) => TraitType::Bool,
            Column::Int(_) => TraitType::Integer,
            Column::Float(_) => TraitType::Float,
            Column::Time(_) => TraitType::Timestamp,
            Column::Str { .. } => TraitType::String,
            Column::Set { .. } => TraitType::StringSet,
            Column::Sparse(s) => s.ty,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        match self {
            Column::Bool(v) => v.len(),
            Column::Int(v) | Column::Time(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Str { codes, .. } => codes.len(),
            Column::Set { present, .. } => present.len(),
            Column::Sparse(s) => s.len,
        }
    }

    /// True when the column has no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether profile `id` has a value (without building it).
    pub fn has_value(&self, id: ProfileId) -> bool {
        let i = id as usize;
        match self {
            Column::Bool(v) => v.get(i).is_some_and(Option::is_some),
            Column::Int(v) | Column::Time(v) => v.get(i).is_some_and(Option::is_some),
            Column::Float(v) => v.get(i).is_some_and(Option::is_some),
            Column::Str { codes, .. } => codes.get(i).is_some_and(|&c| c != NO_CODE),
            Column::Set { present, .. } => present.get(i).copied().unwrap_or(false),
            Column::Sparse(s) => s.values.contains_key(&id),
        }
    }

    /// The value of profile `id`, if it has one.
    pub fn get(&self, id: ProfileId) -> Option<Value> {
        let i = id as usize;
        match self {
            Column::Bool(v) => v.get(i).copied().flatten().map(Value::Bool),
            Column::Int(v) => v.get(i).copied().flatten().map(Value::Int),
            Column::Float(v) => v.get(i).copied().flatten().map(Value::Float),
            Column::Time(v) => v
                .get(i)
                .copied()
                .flatten()
                .map(|ms| Value::Time(microseg_core::Timestamp(ms))),
            Column::Str { dict, codes } => codes
                .get(i)
                .filter(|&&c| c != NO_CODE)
                .map(|&c| Value::Str(dict.value(c).to_string())),
            Column::Set {
                dict,
                offsets,
                items,
                present,
            } => present.get(i).copied().unwrap_or(false).then(|| {
                let range = offsets[i] as usize..offsets[i + 1] as usize;
                Value::Set(
                    items[range]
                        .iter()
                        .map(|&c| dict.value(c).to_string())
                        .collect(),
                )
            }),
            Column::Sparse(s) => s.values.get(&id).cloned(),
        }
    }

    /// An empty sparse column of type `ty` with `len` slots.
    pub fn sparse(ty: TraitType, len: usize) -> Column {
        Column::Sparse(SparseColumn {
            ty,
            len,
            values: BTreeMap::new(),
        })
    }

    /// The same values in a sparse column, whatever their share (tests compare the two
    /// forms with it; [`Column::compacted`] chooses by share).
    pub fn into_sparse(self) -> Column {
        match self {
            sparse @ Column::Sparse(_) => sparse,
            dense => {
                let len = dense.len();
                let values = (0..len as ProfileId)
                    .filter_map(|p| Some((p, dense.get(p)?)))
                    .collect();
                Column::Sparse(SparseColumn {
                    ty: dense.trait_type(),
                    len,
                    values,
                })
            }
        }
    }

    /// The column, sparse when at most one profile in [`SPARSE_SHARE`] has a value (and
    /// not a handful of profiles in all), dense otherwise.
    pub fn compacted(self) -> Column {
        let len = self.len();
        match self {
            Column::Sparse(s) if s.crowded() => s.to_dense(),
            dense @ Column::Sparse(_) => dense,
            dense => {
                let count = (0..len as ProfileId)
                    .filter(|&p| dense.has_value(p))
                    .count();
                if len >= 1024 && count * SPARSE_SHARE <= len {
                    dense.into_sparse()
                } else {
                    dense
                }
            }
        }
    }

    /// An empty column of type `ty`.
    pub fn of_type(ty: TraitType) -> Column {
        Column::new(ty)
    }

    /// Grows the column to `len` slots (the new ones missing) and replaces the slots of
    /// `changes` (by increasing id), in one pass over the column: O(len + changes) for
    /// every type, string sets included.
    pub fn apply<'a>(
        &mut self,
        len: usize,
        changes: impl IntoIterator<Item = (ProfileId, Option<&'a Value>)>,
    ) {
        if let Column::Sparse(s) = self {
            s.len = s.len.max(len);
        }
        while self.len() < len {
            self.push(None);
        }
        if let Column::Set {
            dict,
            offsets,
            items,
            present,
        } = self
        {
            // Rebuilt in one pass: unchanged profiles copy their codes.
            let (mut new_offsets, mut new_items) = (vec![0u32], Vec::with_capacity(items.len()));
            let mut changes = changes.into_iter().peekable();
            for p in 0..len {
                match changes.next_if(|(q, _)| *q as usize == p) {
                    Some((_, v)) => {
                        let start = new_items.len();
                        if let Some(Value::Set(set)) = v {
                            new_items.extend(set.iter().map(|s| dict.intern(s)));
                        }
                        new_items[start..].sort_unstable();
                        present[p] = matches!(v, Some(Value::Set(_)));
                    }
                    None => new_items
                        .extend_from_slice(&items[offsets[p] as usize..offsets[p + 1] as usize]),
                }
                new_offsets.push(new_items.len() as u32);
            }
            (*offsets, *items) = (new_offsets, new_items);
            return;
        }
        for (p, v) in changes {
            if (p as usize) < len {
                self.set(p, v);
            }
        }
    }

    /// Replaces slot `id` (which must exist); a value of another type counts as missing.
    /// A string set is spliced in place: O(items after it).
    fn set(&mut self, id: ProfileId, value: Option<&Value>) {
        let i = id as usize;
        if let Column::Sparse(s) = self {
            match typed(s.ty, value) {
                Some(v) => s.values.insert(id, v),
                None => s.values.remove(&id),
            };
            if s.crowded() {
                *self = s.to_dense();
            }
            return;
        }
        if let Column::Set {
            dict,
            offsets,
            items,
            present,
        } = self
        {
            let mut codes: Vec<u32> = match value {
                Some(Value::Set(set)) => set.iter().map(|s| dict.intern(s)).collect(),
                _ => Vec::new(),
            };
            codes.sort_unstable();
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let delta = codes.len() as i64 - (end - start) as i64;
            present[i] = matches!(value, Some(Value::Set(_)));
            items.splice(start..end, codes);
            for o in &mut offsets[i + 1..] {
                *o = (*o as i64 + delta) as u32;
            }
            return;
        }
        let mut one = Column::new(self.trait_type());
        one.push(value);
        match (self, one) {
            (Column::Bool(v), Column::Bool(x)) => v[i] = x[0],
            (Column::Int(v), Column::Int(x)) | (Column::Time(v), Column::Time(x)) => v[i] = x[0],
            (Column::Float(v), Column::Float(x)) => v[i] = x[0],
            (Column::Str { dict, codes }, Column::Str { dict: d, codes: c }) => {
                codes[i] = match c[0] {
                    NO_CODE => NO_CODE,
                    code => dict.intern(d.value(code)),
                }
            }
            _ => unreachable!("same type"),
        }
    }

    /// Appends one slot; a value of another type than the column's counts as missing.
    fn push(&mut self, value: Option<&Value>) {
        match (self, value) {
            (Column::Sparse(s), x) => {
                if let Some(v) = typed(s.ty, x) {
                    s.values.insert(s.len as ProfileId, v);
                }
                s.len += 1;
            }
            (Column::Bool(v), x) => v.push(match x {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            }),
            (Column::Int(v), x) => v.push(match x {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            }),
            (Column::Float(v), x) => v.push(match x {
                Some(Value::Float(f)) => Some(*f),
                Some(Value::Int(i)) => Some(*i as f64),
                _ => None,
            }),
            (Column::Time(v), x) => v.push(match x {
                Some(Value::Time(t)) => Some(t.0),
                _ => None,
            }),
            (Column::Str { dict, codes }, x) => codes.push(match x {
                Some(Value::Str(s)) => dict.intern(s),
                _ => NO_CODE,
            }),
            (
                Column::Set {
                    dict,
                    offsets,
                    items,
                    present,
                },
                x,
            ) => {
                if let Some(Value::Set(set)) = x {
                    let start = items.len();
                    items.extend(set.iter().map(|s| dict.intern(s)));
                    items[start..].sort_unstable();
                    present.push(true);
                } else {
                    present.push(false);
                }
                offsets.push(items.len() as u32);
            }
        }
    }
}

/// The external id of every dense profile id, stored end to end (so a snapshot maps them
/// in place).
#[derive(Debug, Clone)]
pub struct ExternalIds {
    /// Start of each id in `bytes`; one more entry than ids.
    offsets: Array<u64>,
    bytes: Array<u8>,
}

impl Default for ExternalIds {
    fn default() -> Self {
        ExternalIds {
            offsets: Array::from(vec![0]),
            bytes: Array::new(),
        }
    }
}

impl ExternalIds {
    /// Ids from their arrays (as a snapshot stores them), checked: offsets start at 0,
    /// never decrease and end at the end of `bytes`, which is UTF-8.
    pub fn from_parts(offsets: Array<u64>, bytes: Array<u8>) -> Result<ExternalIds, String> {
        if offsets.first() != Some(&0) || offsets.last() != Some(&(bytes.len() as u64)) {
            return Err("external id offsets do not span the bytes".into());
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err("external id offsets decrease".into());
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Err("external ids are not UTF-8".into());
        }
        Ok(ExternalIds { offsets, bytes })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True without ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The external id of profile `p` (empty for an unknown id).
    pub fn get(&self, p: ProfileId) -> &str {
        let i = p as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => {
                std::str::from_utf8(&self.bytes[a as usize..b as usize]).unwrap_or_default()
            }
            _ => "",
        }
    }

    /// Appends the next profile's id.
    pub fn push(&mut self, id: &str) {
        let mut bytes = std::mem::take(&mut self.bytes).into_vec();
        bytes.extend_from_slice(id.as_bytes());
        let mut offsets = std::mem::take(&mut self.offsets).into_vec();
        offsets.push(bytes.len() as u64);
        (self.offsets, self.bytes) = (offsets.into(), bytes.into());
    }

    /// Every id, by dense id.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len() as ProfileId).map(|p| self.get(p))
    }

    /// The dense id of `id` (a linear scan; for one-off lookups).
    pub fn position(&self, id: &str) -> Option<ProfileId> {
        self.iter().position(|e| e == id).map(|p| p as ProfileId)
    }

    /// The arrays, for writing a snapshot: offsets and bytes.
    pub fn parts(&self) -> (&[u64], &[u8]) {
        (&self.offsets, &self.bytes)
    }
}

impl<S: AsRef<str>> FromIterator<S> for ExternalIds {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut offsets = vec![0u64];
        let mut bytes = Vec::new();
        for id in iter {
            bytes.extend_from_slice(id.as_ref().as_bytes());
            offsets.push(bytes.len() as u64);
        }
        ExternalIds {
            offsets: offsets.into(),
            bytes: bytes.into(),
        }
    }
}

/// Every profile's external id and traits, by column.
#[derive(Debug, Clone, Default)]
pub struct ProfileTable {
    /// External id of each dense profile id.
    pub external_ids: ExternalIds,
    /// Trait columns by name.
    pub columns: BTreeMap<String, Column>,
    /// Bitmap indexes of the columns, built on first use; [`ProfileTable::push`] clears
    /// them (code that edits `columns` directly must call `indexes.clear()`).
    pub indexes: crate::index::IndexCache,
    /// Profiles merged into another (by `alias`): kept for their ids, never a member.
    pub retired: roaring::RoaringBitmap,
}

impl ProfileTable {
    /// Starts a table with one empty column per trait of `schema`.
    pub fn with_schema(schema: &Schema) -> ProfileTable {
        ProfileTable {
            external_ids: ExternalIds::default(),
            indexes: Default::default(),
            retired: Default::default(),
            columns: schema
                .iter()
                .map(|(name, spec)| (name.clone(), Column::new(spec.ty)))
                .collect(),
        }
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.external_ids.len()
    }

    /// True when there are no profiles.
    pub fn is_empty(&self) -> bool {
        self.external_ids.is_empty()
    }

    /// Appends the next profile (its dense id is the current length). `traits` maps trait
    /// names to values; traits not in the schema are ignored.
    pub fn push(&mut self, external_id: &str, traits: &HashMap<&str, Value>) -> ProfileId {
        let id = self.external_ids.len() as ProfileId;
        self.indexes.clear();
        self.external_ids.push(external_id);
        for (name, column) in &mut self.columns {
            column.push(traits.get(name.as_str()));
        }
        id
    }

    /// Sets (or with `None` removes) trait `name` of profile `id`, adding the column with
    /// `ty` when it is new. A value of another type than the column's counts as missing.
    pub fn set_trait(&mut self, id: ProfileId, name: &str, ty: TraitType, value: Option<&Value>) {
        self.indexes.clear();
        let n = self.len();
        // A new trait starts sparse (it turns dense once common), so traits set on a
        // few profiles cost memory by value, not by profile.
        let column = self
            .columns
            .entry(name.to_string())
            .or_insert_with(|| Column::sparse(ty, n));
        column.set(id, value);
    }

    /// Erases profile `id` in place: every trait missing, its external id replaced by
    /// `tombstone`, retired. (Strings it held may stay in a column's dictionary, with no
    /// profile pointing at them, until the table is loaded again.)
    pub fn erase(&mut self, id: ProfileId, tombstone: &str) {
        if id as usize >= self.len() {
            return;
        }
        self.indexes.clear();
        for column in self.columns.values_mut() {
            column.set(id, None);
        }
        self.external_ids = self
            .external_ids
            .iter()
            .enumerate()
            .map(|(p, e)| if p == id as usize { tombstone } else { e })
            .collect();
        self.retired.insert(id);
    }

    /// A table of profile `p` alone (its row 0), with every column of this one.
    pub fn person(&self, p: ProfileId) -> ProfileTable {
        let mut one = ProfileTable {
            external_ids: ExternalIds::default(),
            indexes: Default::default(),
            retired: Default::default(),
            columns: BTreeMap::new(),
        };
        one.external_ids.push(self.external_ids.get(p));
        for (name, column) in &self.columns {
            let mut c = Column::new(column.trait_type());
            c.push(column.get(p).as_ref());
            one.columns.insert(name.clone(), c);
        }
        one
    }

    /// The dense id of an external id (a linear scan; for one-off lookups).
    pub fn find(&self, external_id: &str) -> Option<ProfileId> {
        self.external_ids.position(external_id)
    }
}

/// One event property across all events: numbers and texts side by side, because a
/// property may hold a number in one event and text in another. A property that never
/// holds a number has no number array (and one that never holds text no text array).
#[derive(Debug, Clone, Default)]
pub struct PropertyColumn {
    /// Numeric value per event, `NaN` when not a number or absent; empty when no event
    /// has a number.
    pub numbers: Array<f64>,
    /// Text value per event (booleans as `true`/`false`), [`NO_CODE`] when absent; empty
    /// when no event has text.
    pub texts: Array<u32>,
    /// The distinct texts.
    pub dict: Dictionary,
}

impl PropertyColumn {
    /// The number of event `row`, `NaN` when it has none.
    #[inline]
    pub fn number(&self, row: usize) -> f64 {
        self.numbers.get(row).copied().unwrap_or(f64::NAN)
    }

    /// The text code of event `row`, [`NO_CODE`] when it has none.
    #[inline]
    pub fn text(&self, row: usize) -> u32 {
        self.texts.get(row).copied().unwrap_or(NO_CODE)
    }

    /// Drops an array that holds no value at all (a property only ever text or only ever
    /// a number keeps one array).
    pub fn compact(&mut self) {
        if self.numbers.iter().all(|x| x.is_nan()) {
            self.numbers = Array::new();
        }
        if self.texts.iter().all(|&c| c == NO_CODE) {
            self.texts = Array::new();
        }
    }
}

/// `s` as a JSON string, as an item appears in the JSON text of a list property (lists
/// are kept as their JSON text; `has` looks for the quoted item in it).
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An event property value while building.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue<'a> {
    /// A number.
    Number(f64),
    /// Text.
    Text(&'a str),
    /// A boolean.
    Bool(bool),
}

/// All events by column, sorted by profile, then time, then arrival order. The arrays
/// may be borrowed from a memory-mapped snapshot ([`Array`]).
#[derive(Debug, Clone, Default)]
pub struct EventTable {
    offsets: Array<u64>,
    /// Event time, UTC milliseconds.
    pub time: Array<i64>,
    /// Event name code into [`EventTable::names`].
    pub name: Array<u32>,
    /// Event names.
    pub names: Dictionary,
    /// Revenue, `NaN` when the event has none.
    pub revenue: Array<f64>,
    /// Property columns by property name (only those that were loaded).
    pub properties: BTreeMap<String, PropertyColumn>,
}

impl EventTable {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// Number of profiles the table was built for.
    pub fn profiles(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Start of each profile's rows; one more entry than profiles.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Reassembles a table from its arrays (as a snapshot stores them), checking what
    /// indexing relies on: offsets start at 0, never decrease and end at the number of
    /// events, and every name code has a name. (Time order within a profile is the
    /// writer's promise, guarded by the snapshot's checksums.)
    pub fn from_parts(
        offsets: Array<u64>,
        time: Array<i64>,
        name: Array<u32>,
        names: Dictionary,
        revenue: Array<f64>,
    ) -> Result<EventTable, String> {
        let n = time.len();
        if name.len() != n || revenue.len() != n {
            return Err("columns differ in length".into());
        }
        if offsets.first() != Some(&0) || offsets.last() != Some(&(n as u64)) {
            return Err("offsets do not span the events".into());
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err("offsets decrease".into());
        }
        let bad_name = names.len() as u32;
        if name.iter().fold(0u32, |m, &c| m.max(c)) >= bad_name && n > 0 {
            return Err("bad event name codes".into());
        }
        Ok(EventTable {
            offsets,
            time,
            name,
            names,
            revenue,
            properties: BTreeMap::new(),
        })
    }

    /// Adds (or replaces) property column `key`, which must have a slot per event (or be
    /// empty: no event has a value of that kind).
    pub fn set_property_column(&mut self, key: &str, column: PropertyColumn) -> Result<(), String> {
        let n = self.len();
        for (kind, len) in [
            ("numbers", column.numbers.len()),
            ("texts", column.texts.len()),
        ] {
            if len != 0 && len != n {
                return Err(format!("property {key}: {len} {kind} for {n} events"));
            }
        }
        let bad = column.dict.len() as u32;
        if column.texts.iter().any(|&c| c != NO_CODE && c >= bad) {
            return Err(format!("property {key}: bad text codes"));
        }
        self.properties.insert(key.to_string(), column);
        Ok(())
    }

    /// The rows of profile `id`'s events, in time order (empty for an unknown id).
    #[inline]
    pub fn events_of(&self, id: ProfileId) -> Range<usize> {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        }
    }
}

/// Collects events in any order and sorts them into an [`EventTable`].
#[derive(Debug, Default)]
pub struct EventTableBuilder {
    profile: Vec<ProfileId>,
    time: Vec<i64>,
    name: Vec<u32>,
    revenue: Vec<f64>,
    names: Dictionary,
    properties: BTreeMap<String, (Vec<f64>, Vec<u32>, Dictionary)>,
}

impl EventTableBuilder {
    /// An empty builder with room for `capacity` events.
    pub fn with_capacity(capacity: usize) -> EventTableBuilder {
        let mut b = EventTableBuilder::default();
        b.profile.reserve(capacity);
        b.time.reserve(capacity);
        b.name.reserve(capacity);
        b.revenue.reserve(capacity);
        b
    }

    /// Adds one event; returns its row for [`EventTableBuilder::set_property`].
    pub fn push(
        &mut self,
        profile: ProfileId,
        time: i64,
        name: &str,
        revenue: Option<f64>,
    ) -> usize {
        let code = self.names.intern(name);
        self.push_code(profile, time, code, revenue);
        self.time.len() - 1
    }

    /// Number of events pushed so far.
    pub fn len(&self) -> usize {
        self.profile.len()
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.profile.is_empty()
    }

    /// Registers event names so that name `i` of `names` gets code `i`, for
    /// [`EventTableBuilder::push_code`]. Call before any push.
    pub fn define_names(&mut self, names: &[String]) {
        for name in names {
            self.names.intern(name);
        }
    }

    /// Adds one event whose name is already a code (see
    /// [`EventTableBuilder::define_names`]).
    pub fn push_code(&mut self, profile: ProfileId, time: i64, name: u32, revenue: Option<f64>) {
        self.profile.push(profile);
        self.time.push(time);
        self.name.push(name);
        self.revenue.push(revenue.unwrap_or(f64::NAN));
    }

    /// Sets property `key` of event `row`.
    pub fn set_property(&mut self, row: usize, key: &str, value: PropertyValue<'_>) {
        let len = self.time.len();
        let (numbers, texts, dict) = self.properties.entry(key.to_string()).or_default();
        if numbers.len() < len {
            numbers.resize(len, f64::NAN);
            texts.resize(len, NO_CODE);
        }
        // A row holds a number or a text, never both.
        match value {
            PropertyValue::Number(x) => {
                numbers[row] = x;
                texts[row] = NO_CODE;
            }
            PropertyValue::Text(s) => {
                texts[row] = dict.intern(s);
                numbers[row] = f64::NAN;
            }
            PropertyValue::Bool(b) => {
                texts[row] = dict.intern(if b { "true" } else { "false" });
                numbers[row] = f64::NAN;
            }
        }
    }

    /// Sorts by profile, then time (stable), for `profiles` profiles. Events of profile ids
    /// at or above `profiles` are an error of the caller and panic.
    pub fn finish(self, profiles: usize) -> EventTable {
        let EventTableBuilder {
            profile,
            time,
            name,
            revenue,
            names,
            properties,
        } = self;
        let n = profile.len();
        // Counting sort by profile (stable), then a stable sort by time within each profile.
        let mut offsets = vec![0u64; profiles + 1];
        for &p in &profile {
            offsets[p as usize + 1] += 1;
        }
        for i in 0..profiles {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut order = vec![0u32; n];
        for (row, &p) in profile.iter().enumerate() {
            let slot = &mut next[p as usize];
            order[*slot as usize] = row as u32;
            *slot += 1;
        }
        for w in offsets.windows(2) {
            let slice = &mut order[w[0] as usize..w[1] as usize];
            if slice
                .windows(2)
                .any(|s| time[s[0] as usize] > time[s[1] as usize])
            {
                slice.sort_by_key(|&r| time[r as usize]);
            }
        }
        fn gather<T: Plain>(v: &[T], order: &[u32]) -> Array<T> {
            order.iter().map(|&r| v[r as usize]).collect()
        }
        let properties = properties
            .into_iter()
            .map(|(key, (mut numbers, mut texts, dict))| {
                numbers.resize(n, f64::NAN);
                texts.resize(n, NO_CODE);
                let mut column = PropertyColumn {
                    numbers: gather(&numbers, &order),
                    texts: gather(&texts, &order),
                    dict,
                };
                column.compact();
                (key, column)
            })
            .collect();
        EventTable {
            offsets: Array::from(offsets),
            time: gather(&time, &order),
            name: gather(&name, &order),
            names,
            revenue: gather(&revenue, &order),
            properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microseg_core::TraitSpec;

    /// The write key's probe: hundreds of new trait names, each set on one profile. They
    /// stay sparse (memory by value), read back like dense ones, and a trait that
    /// becomes common turns dense.
    #[test]
    fn new_traits_start_sparse_and_turn_dense_when_common() {
        let mut table = ProfileTable::default();
        let n = 20_000u32;
        for p in 0..n {
            table.push(&format!("u{p}"), &Default::default());
        }
        for t in 0..500u32 {
            let v = Value::Int(i64::from(t));
            table.set_trait(t * 7, &format!("t{t}"), TraitType::Integer, Some(&v));
        }
        assert!(table
            .columns
            .values()
            .all(|c| matches!(c, Column::Sparse(_))));
        assert_eq!(table.columns["t3"].get(21), Some(Value::Int(3)));
        assert_eq!(table.columns["t3"].get(22), None);
        assert!(table.columns["t3"].has_value(21) && !table.columns["t3"].has_value(22));
        // A profile added later has a slot in every column.
        table.push("late", &Default::default());
        assert_eq!(table.columns["t0"].len(), n as usize + 1);
        // Set on one profile in ten: past one in SPARSE_SHARE, the column is dense.
        for p in (0..n).step_by(10) {
            let v = Value::Float(f64::from(p) / 2.0);
            table.set_trait(p, "score", TraitType::Float, Some(&v));
        }
        assert!(matches!(table.columns["score"], Column::Float(_)));
        assert_eq!(table.columns["score"].get(30), Some(Value::Float(15.0)));
        assert_eq!(table.columns["score"].get(31), None);
        // Removing a value, and an integer in a float column, as dense columns do.
        table.set_trait(21, "t3", TraitType::Integer, None);
        assert!(!table.columns["t3"].has_value(21));
        let mut sparse = Column::sparse(TraitType::Float, 3);
        sparse.set(1, Some(&Value::Int(2)));
        assert_eq!(sparse.get(1), Some(Value::Float(2.0)));
        sparse.set(2, Some(&Value::Str("x".into())));
        assert_eq!(
            sparse.get(2),
            None,
            "a value of another type counts as missing"
        );
        // compacted: dense columns with few values become sparse, others stay.
        let mut few = Column::new(TraitType::String);
        few.apply(5000, [(3, Some(&Value::Str("a".into())))]);
        let few = few.compacted();
        assert!(matches!(few, Column::Sparse(_)));
        assert_eq!(few.get(3), Some(Value::Str("a".into())));
        let back = match &few {
            Column::Sparse(s) => s.to_dense(),
            _ => unreachable!(),
        };
        assert!(matches!(back, Column::Str { .. }));
        assert_eq!(back.get(3), Some(Value::Str("a".into())));
    }

    #[test]
    fn events_sort_by_profile_then_time_keeping_arrival_order() {
        let mut b = EventTableBuilder::default();
        b.push(1, 30, "c", None);
        b.push(0, 20, "b", Some(5.0));
        let row = b.push(1, 10, "a", None);
        b.set_property(row, "path", PropertyValue::Text("/winter"));
        b.push(0, 20, "b2", None);
        let t = b.finish(3);
        let names: Vec<&str> = (0..t.len()).map(|i| t.names.value(t.name[i])).collect();
        assert_eq!(names, ["b", "b2", "a", "c"]);
        assert_eq!(t.events_of(0), 0..2);
        assert_eq!(t.events_of(1), 2..4);
        assert_eq!(t.events_of(2), 4..4);
        assert_eq!(t.events_of(9), 0..0);
        assert_eq!(t.revenue[0], 5.0);
        assert!(t.revenue[1].is_nan());
        let path = &t.properties["path"];
        assert_eq!(path.dict.value(path.text(2)), "/winter");
        assert_eq!(path.text(3), NO_CODE);
        assert!(
            path.numbers.is_empty(),
            "a text-only property keeps no numbers"
        );
        assert!(path.number(2).is_nan());
    }

    #[test]
    fn profile_columns_keep_missing_apart_from_empty() {
        let mut schema = Schema::new();
        schema.insert("city".into(), TraitSpec::new(TraitType::String));
        schema.insert("tags".into(), TraitSpec::new(TraitType::StringSet));
        let mut t = ProfileTable::with_schema(&schema);
        let mut traits = HashMap::new();
        traits.insert("city", Value::Str("Budapest".into()));
        traits.insert("tags", Value::Set(vec!["road".into(), "mtb".into()]));
        t.push("a", &traits);
        t.push("b", &HashMap::new());
        let mut empty = HashMap::new();
        empty.insert("tags", Value::Set(vec![]));
        t.push("c", &empty);
        let tags = &t.columns["tags"];
        assert_eq!(
            tags.get(0),
            Some(Value::Set(vec!["road".into(), "mtb".into()]))
        );
        assert_eq!(tags.get(1), None);
        assert_eq!(tags.get(2), Some(Value::Set(vec![])));
        assert_eq!(
            t.columns["city"].get(0),
            Some(Value::Str("Budapest".into()))
        );
        assert_eq!(t.columns["city"].get(2), None);
        assert_eq!(t.find("c"), Some(2));
    }
}
