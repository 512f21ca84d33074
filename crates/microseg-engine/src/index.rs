//! Bitmap indexes of low-cardinality trait columns, and fast column scans.
//!
//! A [`ValueIndex`] holds, for each distinct value of a column, the bitmap of the profiles
//! that have it (for string sets: that have it as an item). A comparison leaf then becomes
//! the union of the bitmaps of the values that satisfy it, without touching the column.
//! Indexes are built on first use and kept by the [`ProfileTable`](crate::ProfileTable)
//! (see [`IndexCache`]); columns with more than [`MAX_KEYS`] distinct values are scanned.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use microseg_core::condition::CompareOp;
use roaring::{MultiOps, RoaringBitmap};

use crate::columnar::{Column, NO_CODE};

/// Columns with more distinct values than this get no index.
pub const MAX_KEYS: usize = 4096;

/// The distinct values of an indexed column, in the order of its bitmaps.
#[derive(Debug)]
pub enum Keys {
    /// Dictionary codes 0.. (strings and string-set items).
    Codes,
    /// Sorted integers (integers, timestamps in ms, booleans as 0 and 1).
    Ints(Vec<i64>),
    /// Sorted floats.
    Floats(Vec<f64>),
}

/// Per distinct value, the profiles holding it.
#[derive(Debug)]
pub struct ValueIndex {
    /// The values.
    pub keys: Keys,
    /// One bitmap per value.
    pub bitmaps: Vec<RoaringBitmap>,
    /// Profiles that have a value at all.
    pub present: RoaringBitmap,
    /// For numeric columns with at most [`MAX_CUMULATIVE`] values: `cumulative[i]` holds
    /// the profiles whose value is at most the `i`-th key, so a range of keys is one
    /// difference of two bitmaps.
    pub cumulative: Option<Vec<RoaringBitmap>>,
}

/// Numeric columns with at most this many values also get cumulative bitmaps.
pub const MAX_CUMULATIVE: usize = 256;

impl ValueIndex {
    /// Builds the index of `column`, or `None` when it has too many distinct values.
    pub fn build(column: &Column) -> Option<ValueIndex> {
        let len = column.len();
        let (keys, lists) = match column {
            // Few values: a scan of them is as fast as an index.
            Column::Sparse(_) => return None,
            Column::Str { dict, codes } => {
                if dict.len() > MAX_KEYS {
                    return None;
                }
                let mut lists = vec![Vec::new(); dict.len()];
                for (p, &c) in codes.iter().enumerate() {
                    if c != NO_CODE {
                        lists[c as usize].push(p as u32);
                    }
                }
                (Keys::Codes, lists)
            }
            Column::Set {
                dict,
                offsets,
                items,
                ..
            } => {
                if dict.len() > MAX_KEYS {
                    return None;
                }
                let mut lists = vec![Vec::new(); dict.len()];
                for p in 0..len {
                    for &c in &items[offsets[p] as usize..offsets[p + 1] as usize] {
                        lists[c as usize].push(p as u32);
                    }
                }
                (Keys::Codes, lists)
            }
            Column::Bool(v) => {
                let (keys, lists) = by_key(v.iter().map(|b| b.map(i64::from)), |a, b| a.cmp(b))?;
                (Keys::Ints(keys), lists)
            }
            Column::Int(v) | Column::Time(v) => {
                let (keys, lists) = by_key(v.iter().copied(), |a, b| a.cmp(b))?;
                (Keys::Ints(keys), lists)
            }
            Column::Float(v) => {
                let (keys, lists) = by_key(v.iter().map(|x| x.map(f64::to_bits)), |a, b| {
                    f64::from_bits(*a).total_cmp(&f64::from_bits(*b))
                })?;
                (
                    Keys::Floats(keys.into_iter().map(f64::from_bits).collect()),
                    lists,
                )
            }
        };
        let bitmaps: Vec<RoaringBitmap> = lists
            .into_iter()
            .map(|ids| RoaringBitmap::from_sorted_iter(ids).expect("ids ascend"))
            .collect();
        let present = scan(len, |p| column.has_value(p as u32));
        let cumulative =
            (!matches!(keys, Keys::Codes) && bitmaps.len() <= MAX_CUMULATIVE).then(|| {
                let mut acc = RoaringBitmap::new();
                bitmaps
                    .iter()
                    .map(|b| {
                        acc |= b;
                        acc.clone()
                    })
                    .collect()
            });
        Some(ValueIndex {
            keys,
            bitmaps,
            present,
            cumulative,
        })
    }

    /// The profiles whose key index is in `first..=last`.
    fn key_range(&self, first: usize, last: usize) -> RoaringBitmap {
        match &self.cumulative {
            Some(cum) if first == 0 => cum[last].clone(),
            Some(cum) => &cum[last] - &cum[first - 1],
            None => self.bitmaps[first..=last].iter().union(),
        }
    }

    /// The union of the bitmaps of the keys for which `keep(key index)` holds; a run of
    /// consecutive keys (any comparison but `!=`) is one range.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> RoaringBitmap {
        let kept: Vec<usize> = (0..self.bitmaps.len()).filter(|&i| keep(i)).collect();
        match (kept.first(), kept.last()) {
            (None, _) | (_, None) => RoaringBitmap::new(),
            (Some(&a), Some(&b)) if a == b => self.bitmaps[a].clone(),
            (Some(&a), Some(&b)) if b - a + 1 == kept.len() => self.key_range(a, b),
            _ if kept.len() * 2 > self.bitmaps.len() => {
                // Mostly kept (`!=`): everyone with a value but the few left out.
                let dropped = (0..self.bitmaps.len())
                    .filter(|i| kept.binary_search(i).is_err())
                    .map(|i| &self.bitmaps[i])
                    .union();
                &self.present - &dropped
            }
            _ => kept.iter().map(|&i| &self.bitmaps[i]).union(),
        }
    }

    /// The profiles whose numeric key `k` satisfies `k OP target` (empty for string keys).
    pub fn select_numeric(&self, target: f64, op: CompareOp) -> RoaringBitmap {
        match &self.keys {
            Keys::Ints(keys) => self.select(|i| op.holds((keys[i] as f64).partial_cmp(&target))),
            Keys::Floats(keys) => self.select(|i| op.holds(keys[i].partial_cmp(&target))),
            Keys::Codes => RoaringBitmap::new(),
        }
    }
}

/// Groups profiles by key, keys sorted; `None` with more than [`MAX_KEYS`] distinct keys.
#[allow(clippy::type_complexity)]
fn by_key<K: Copy + Eq + std::hash::Hash>(
    values: impl Iterator<Item = Option<K>>,
    cmp: impl Fn(&K, &K) -> Ordering,
) -> Option<(Vec<K>, Vec<Vec<u32>>)> {
    let mut slot: HashMap<K, usize> = HashMap::new();
    let mut keys: Vec<K> = Vec::new();
    let mut lists: Vec<Vec<u32>> = Vec::new();
    for (p, v) in values.enumerate() {
        let Some(k) = v else { continue };
        let i = match slot.get(&k) {
            Some(&i) => i,
            None => {
                if keys.len() == MAX_KEYS {
                    return None;
                }
                slot.insert(k, keys.len());
                keys.push(k);
                lists.push(Vec::new());
                keys.len() - 1
            }
        };
        lists[i].push(p as u32);
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| cmp(&keys[a], &keys[b]));
    let keys = order.iter().map(|&i| keys[i]).collect();
    let lists = order
        .iter()
        .map(|&i| std::mem::take(&mut lists[i]))
        .collect();
    Some((keys, lists))
}

/// The profiles `0..len` for which `hit` holds, built 64 at a time.
pub fn scan(len: usize, hit: impl Fn(usize) -> bool) -> RoaringBitmap {
    let mut bytes = vec![0u8; len.div_ceil(64) * 8];
    for (w, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        let start = w * 64;
        let end = (start + 64).min(len);
        let mut word = 0u64;
        for p in start..end {
            word |= u64::from(hit(p)) << (p - start);
        }
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    RoaringBitmap::from_lsb0_bytes(0, &bytes)
}

/// Indexes of a table's columns, built on first use. Cloning gives an empty cache.
#[derive(Default)]
pub struct IndexCache {
    built: Mutex<HashMap<String, Arc<Option<ValueIndex>>>>,
    disabled: bool,
}

impl IndexCache {
    /// A cache that never builds an index: every leaf scans its column (for tests that
    /// check both paths agree, and for measuring scans).
    pub fn disabled() -> IndexCache {
        IndexCache {
            built: Mutex::default(),
            disabled: true,
        }
    }

    /// The index of column `name` (built now if needed), `None` when not indexable.
    pub fn get(&self, name: &str, column: &Column) -> Arc<Option<ValueIndex>> {
        if self.disabled {
            return Arc::new(None);
        }
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ValueIndex::build(column)))
            .clone()
    }

    /// Forgets every index (after the columns change).
    pub fn clear(&mut self) {
        self.built
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Clone for IndexCache {
    fn clone(&self) -> Self {
        IndexCache::default()
    }
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexCache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_matches_a_plain_filter() {
        for len in [0, 1, 63, 64, 65, 200_000] {
            let fast = scan(len, |p| p % 7 == 3 || p == len.saturating_sub(1));
            let slow: RoaringBitmap = (0..len as u32)
                .filter(|&p| p % 7 == 3 || p == len.saturating_sub(1) as u32)
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn numeric_index_keys_are_sorted_and_too_many_keys_give_none() {
        let column = Column::Int(vec![Some(5), None, Some(-2), Some(5), Some(9)]);
        let index = ValueIndex::build(&column).unwrap();
        let Keys::Ints(keys) = &index.keys else {
            panic!("integer keys expected")
        };
        assert_eq!(keys, &[-2, 5, 9]);
        assert_eq!(index.bitmaps[1].iter().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(index.present.len(), 4);
        let ge5 = index.select_numeric(5.0, CompareOp::Ge);
        assert_eq!(ge5.iter().collect::<Vec<_>>(), [0, 3, 4]);
        let many = Column::Int((0..MAX_KEYS as i64 + 1).map(Some).collect());
        assert!(ValueIndex::build(&many).is_none());
    }
}
