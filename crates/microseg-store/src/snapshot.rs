//! A snapshot of the columnar event table on disk (`cache/events.bin`), so commands start
//! without re-reading every event from SQLite. It is a cache, never trusted over the store:
//! it names the store state it was built from (the `events_version` counter that every
//! transaction writing events bumps, the largest event id and the number of profiles) and
//! carries a checksum; anything that does not match is ignored and rebuilt.
//!
//! Layout, little-endian: magic `MSEGEV01`, the key (3 × u64), the number of profiles `p`
//! and events `n` (u64), the event names (u32 count, then u32 length + UTF-8 bytes each),
//! offsets (`p + 1` × u64), times (`n` × i64), name ids (`n` × u32), revenues (`n` × f64),
//! then a u64 checksum of everything before it.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use microseg_engine::EventTable;

const MAGIC: &[u8; 8] = b"MSEGEV01";

/// The store state a snapshot describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotKey {
    /// The store's `events_version` counter.
    pub events_version: u64,
    /// The largest event id (0 without events).
    pub max_event_id: u64,
    /// The number of profiles.
    pub profiles: u64,
}

/// A fast 64-bit checksum over 8-byte words (not cryptographic; catches torn and
/// truncated files).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ x).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
    }
    h
}

/// Writes `table` as the snapshot of `key` to `path` (through a temporary file and a
/// rename, so readers never see half a file).
pub fn write(path: &Path, key: SnapshotKey, table: &EventTable) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 + table.len() * 20);
    buf.extend_from_slice(MAGIC);
    for x in [
        key.events_version,
        key.max_event_id,
        key.profiles,
        table.profiles() as u64,
        table.len() as u64,
    ] {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.extend_from_slice(&(table.names.len() as u32).to_le_bytes());
    for code in 0..table.names.len() as u32 {
        let name = table.names.value(code).as_bytes();
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name);
    }
    for &o in table.offsets() {
        buf.extend_from_slice(&(o as u64).to_le_bytes());
    }
    for &t in &table.time {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    for &n in &table.name {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    for &r in &table.revenue {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    let sum = checksum(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = BufWriter::new(std::fs::File::create(&tmp)?);
    file.write_all(&buf)?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the snapshot at `path` if it exists, is intact and describes `key`.
pub fn read(path: &Path, key: SnapshotKey) -> Option<EventTable> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() < MAGIC.len() + 48 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let mut r = Cursor { bytes: body, at: 8 };
    let stored = SnapshotKey {
        events_version: r.u64()?,
        max_event_id: r.u64()?,
        profiles: r.u64()?,
    };
    if stored != key {
        return None;
    }
    let profiles = r.u64()? as usize;
    let events = r.u64()? as usize;
    let names: Vec<String> = (0..r.u32()?)
        .map(|_| {
            let len = r.u32()? as usize;
            String::from_utf8(r.take(len)?.to_vec()).ok()
        })
        .collect::<Option<_>>()?;
    let offsets = r.array(profiles + 1, |b| u64::from_le_bytes(b) as usize)?;
    let time = r.array(events, i64::from_le_bytes)?;
    let name = r.array(events, |b: [u8; 4]| u32::from_le_bytes(b))?;
    let revenue = r.array(events, f64::from_le_bytes)?;
    EventTable::from_parts(offsets, time, name, names, revenue).ok()
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn array<const N: usize, T>(&mut self, n: usize, f: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
        let raw = self.take(n.checked_mul(N)?)?;
        Some(
            raw.chunks_exact(N)
                .map(|c| f(c.try_into().expect("N bytes")))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microseg_engine::EventTableBuilder;

    fn table() -> EventTable {
        let mut b = EventTableBuilder::default();
        b.push(1, 30, "order_completed", Some(9.5));
        b.push(0, 20, "page_viewed", None);
        b.push(1, 10, "page_viewed", None);
        b.finish(3)
    }

    const KEY: SnapshotKey = SnapshotKey {
        events_version: 4,
        max_event_id: 3,
        profiles: 3,
    };

    #[test]
    fn round_trips_and_refuses_other_states_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/events.bin");
        let t = table();
        write(&path, KEY, &t).unwrap();
        let back = read(&path, KEY).expect("snapshot");
        assert_eq!(back.time, t.time);
        assert_eq!(back.name, t.name);
        assert_eq!(back.offsets(), t.offsets());
        assert_eq!(back.names.value(back.name[2]), "order_completed");
        assert_eq!(back.revenue[2], 9.5);
        assert!(back.revenue[0].is_nan());
        let newer = SnapshotKey {
            events_version: 5,
            ..KEY
        };
        assert!(read(&path, newer).is_none());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[60] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path, KEY).is_none(), "a flipped bit is caught");
        std::fs::write(&path, &bytes[..40]).unwrap();
        assert!(read(&path, KEY).is_none(), "a truncated file is ignored");
    }
}
