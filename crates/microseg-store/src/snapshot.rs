//! Snapshot files: the durable columnar copies of what evaluation reads (`cache/`), opened
//! by memory-mapping, so a command uses them in place instead of parsing them.
//!
//! A snapshot is a cache, never trusted over the store: its header names the store state
//! it was made from, and the caller compares that with the store before using it (see
//! `tables`). Every file is written whole to a temporary name, synced and renamed over
//! the old one, so a reader sees the old file or the new one, never part of one; a mapped
//! file is never written again (a new snapshot is a new file), so a reader's map stays
//! valid while another process replaces it.
//!
//! Layout, little-endian:
//!
//! ```text
//! 0   magic "MSEGSNP1"
//! 8   header length H (u64)
//! 16  checksum of the header (u64)
//! 24  header: JSON {"kind", "key", "meta", "sections": [{"name", "offset", "len", "sum"}]}
//!     then zero bytes to a multiple of 8
//!     sections: raw arrays, each starting at a multiple of 8 bytes
//! ```
//!
//! Each section has its own checksum, verified the first time the section is read in a
//! process: a damaged or truncated file is refused (and rebuilt by the caller), and only
//! the sections a command reads are ever checked.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use microseg_engine::array::{as_le_bytes, Array, Bytes, Plain};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"MSEGSNP1";

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a snapshot, or is damaged.
    #[error("{path}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One section's place in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Section {
    name: String,
    offset: u64,
    len: u64,
    sum: u64,
}

/// What the header holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    kind: String,
    key: serde_json::Value,
    meta: serde_json::Value,
    sections: Vec<Section>,
}

/// A fast 64-bit checksum (not cryptographic: it catches torn, truncated and bit-flipped
/// files). Four independent lanes over 32-byte blocks, so it runs at memory speed.
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: [u64; 4] = [
        0x9E37_79B9_7F4A_7C15,
        0xBF58_476D_1CE4_E5B9,
        0x94D0_49BB_1331_11EB,
        0xD6E8_FEB8_6659_FD93,
    ];
    let mut lanes = [K[0] ^ bytes.len() as u64, K[1], K[2], K[3]];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let x = u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = (*lane ^ x).wrapping_mul(K[i]).rotate_left(29);
        }
    }
    let mut h = lanes
        .iter()
        .fold(0u64, |h, &l| (h ^ l).wrapping_mul(K[0]).rotate_left(31));
    for &b in blocks.remainder() {
        h = (h ^ b as u64).wrapping_mul(K[2]);
    }
    h ^ (h >> 29)
}

/// A snapshot being written: named sections, then [`Writer::write`].
pub struct Writer<'a> {
    kind: &'a str,
    key: serde_json::Value,
    meta: serde_json::Value,
    sections: Vec<(String, std::borrow::Cow<'a, [u8]>)>,
}

impl<'a> Writer<'a> {
    /// A snapshot of `kind` describing the store state `key`, with `meta` (small values).
    pub fn new(kind: &'a str, key: &impl Serialize, meta: serde_json::Value) -> Writer<'a> {
        Writer {
            kind,
            key: serde_json::to_value(key).expect("a key serialises"),
            meta,
            sections: Vec::new(),
        }
    }

    /// Adds section `name` holding `values` (borrowed, not copied, on a little-endian
    /// machine).
    pub fn array<T: Plain>(&mut self, name: &str, values: &'a [T]) {
        self.sections.push((name.to_string(), as_le_bytes(values)));
    }

    /// Adds section `name` holding `bytes`.
    pub fn bytes(&mut self, name: &str, bytes: Vec<u8>) {
        self.sections.push((name.to_string(), bytes.into()));
    }

    /// Writes the file at `path`: to a temporary file beside it, synced, then renamed over
    /// `path`.
    pub fn write(self, path: &Path) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut sections = Vec::with_capacity(self.sections.len());
        let mut offset = 0u64;
        for (name, bytes) in &self.sections {
            sections.push(Section {
                name: name.clone(),
                offset,
                len: bytes.len() as u64,
                sum: checksum(bytes),
            });
            offset += pad8(bytes.len() as u64);
        }
        let header = Header {
            kind: self.kind.to_string(),
            key: self.key,
            meta: self.meta,
            sections,
        };
        let mut head = serde_json::to_vec(&header).expect("a header serialises");
        // Section offsets are relative to the end of the padded header.
        let start = 24 + pad8(head.len() as u64);
        head.resize((start - 24) as usize, b' ');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            file.write_all(MAGIC)?;
            file.write_all(&(head.len() as u64).to_le_bytes())?;
            file.write_all(&checksum(&head).to_le_bytes())?;
            file.write_all(&head)?;
            for (_, bytes) in &self.sections {
                file.write_all(bytes)?;
                let pad = pad8(bytes.len() as u64) as usize - bytes.len();
                file.write_all(&[0u8; 8][..pad])?;
            }
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

fn pad8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// A memory-mapped file.
struct Mapped(memmap2::Mmap);

impl Bytes for Mapped {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An open snapshot: its header read, its sections mapped and checked on first use.
pub struct Snapshot {
    path: PathBuf,
    bytes: Arc<dyn Bytes>,
    header: Header,
    /// Sections whose checksum was verified.
    verified: Mutex<HashSet<String>>,
    start: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .finish()
    }
}

impl Snapshot {
    /// Opens the snapshot at `path`: `Ok(None)` when there is none, an error when the file
    /// is not an intact snapshot of `kind`.
    pub fn open(path: &Path, kind: &str) -> Result<Option<Snapshot>, SnapshotError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        // SAFETY: snapshot files are never written after they are renamed into place (a
        // new snapshot is a new file renamed over the old name), so the mapped bytes do
        // not change while mapped; a file truncated by hand would fault, as with any
        // mapped file, which is why the directory is documented as microseg's own.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let damaged = |reason: &str| SnapshotError::Damaged {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if map.len() < 24 || &map[..8] != MAGIC {
            return Err(damaged("not a microseg snapshot"));
        }
        let len = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
        let sum = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let head = usize::try_from(len)
            .ok()
            .and_then(|len| map.get(24..24 + len))
            .ok_or_else(|| damaged("truncated header"))?;
        if checksum(head) != sum {
            return Err(damaged("header checksum mismatch"));
        }
        let header: Header =
            serde_json::from_slice(head).map_err(|e| damaged(&format!("header: {e}")))?;
        if header.kind != kind {
            return Err(damaged(&format!("a {} snapshot, not {kind}", header.kind)));
        }
        let start = 24 + len;
        for s in &header.sections {
            let end = start
                .checked_add(s.offset)
                .and_then(|o| o.checked_add(s.len));
            if end.is_none_or(|e| e > map.len() as u64) || s.offset % 8 != 0 {
                return Err(damaged(&format!("section {} outside the file", s.name)));
            }
        }
        Ok(Some(Snapshot {
            path: path.to_path_buf(),
            bytes: Arc::new(Mapped(map)),
            header,
            verified: Mutex::new(HashSet::new()),
            start,
        }))
    }

    /// The store state this snapshot describes.
    pub fn key<K: serde::de::DeserializeOwned>(&self) -> Option<K> {
        serde_json::from_value(self.header.key.clone()).ok()
    }

    /// The small values written with it.
    pub fn meta(&self) -> &serde_json::Value {
        &self.header.meta
    }

    /// Whether it has section `name`.
    pub fn has(&self, name: &str) -> bool {
        self.header.sections.iter().any(|s| s.name == name)
    }

    /// Section `name` as a byte range of the map, checked against its checksum the first
    /// time.
    fn section(&self, name: &str) -> Result<(usize, usize), SnapshotError> {
        let s = self
            .header
            .sections
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SnapshotError::Damaged {
                path: self.path.clone(),
                reason: format!("no section {name}"),
            })?;
        let (offset, len) = ((self.start + s.offset) as usize, s.len as usize);
        let mut verified = self.verified.lock().expect("verified lock");
        if !verified.contains(name) {
            if checksum(&self.bytes.bytes()[offset..offset + len]) != s.sum {
                return Err(SnapshotError::Damaged {
                    path: self.path.clone(),
                    reason: format!("section {name}: checksum mismatch"),
                });
            }
            verified.insert(name.to_string());
        }
        Ok((offset, len))
    }

    /// Section `name` as an array of `T`, in place.
    pub fn array<T: Plain>(&self, name: &str) -> Result<Array<T>, SnapshotError> {
        let (offset, len) = self.section(name)?;
        let item = std::mem::size_of::<T>();
        if len % item != 0 {
            return Err(SnapshotError::Damaged {
                path: self.path.clone(),
                reason: format!("section {name}: {len} bytes is not a whole number of items"),
            });
        }
        Array::from_bytes(self.bytes.clone(), offset, len / item).map_err(|e| {
            SnapshotError::Damaged {
                path: self.path.clone(),
                reason: format!("section {name}: {e}"),
            }
        })
    }

    /// Section `name`'s bytes.
    pub fn bytes(&self, name: &str) -> Result<&[u8], SnapshotError> {
        let (offset, len) = self.section(name)?;
        Ok(&self.bytes.bytes()[offset..offset + len])
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Key {
        version: u64,
    }

    #[test]
    fn sections_round_trip_in_place_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/t.snap");
        let times = vec![3i64, -1, 7];
        let codes = vec![1u32, 2, 3, 4, 5];
        let mut w = Writer::new("test", &Key { version: 4 }, serde_json::json!({"n": 3}));
        w.array("times", &times);
        w.array("codes", &codes);
        w.bytes("names", b"abc".to_vec());
        w.write(&path).unwrap();
        let s = Snapshot::open(&path, "test").unwrap().unwrap();
        assert_eq!(s.key::<Key>(), Some(Key { version: 4 }));
        assert_eq!(s.meta()["n"], 3);
        let t = s.array::<i64>("times").unwrap();
        assert_eq!(&*t, &times[..]);
        assert!(t.is_shared(), "read in place from the map");
        assert_eq!(&*s.array::<u32>("codes").unwrap(), &codes[..]);
        assert_eq!(s.bytes("names").unwrap(), b"abc");
        assert!(s.array::<u64>("codes").is_err(), "20 bytes are not u64s");
        assert!(Snapshot::open(&path, "other").is_err());
        assert!(Snapshot::open(&dir.path().join("none"), "test")
            .unwrap()
            .is_none());
        // A flipped bit in a section is caught when that section is read.
        let mut raw = std::fs::read(&path).unwrap();
        let at = raw.len() - 8;
        raw[at] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        let s = Snapshot::open(&path, "test").unwrap().unwrap();
        assert!(
            s.array::<i64>("times").is_ok(),
            "other sections stay readable"
        );
        assert!(s.bytes("names").is_err());
        // A truncated file is refused at open.
        std::fs::write(&path, &raw[..40]).unwrap();
        assert!(Snapshot::open(&path, "test").is_err());
        // No temporary files are left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn checksum_sees_every_byte() {
        let base = vec![0u8; 1000];
        let sum = checksum(&base);
        for i in [0, 7, 31, 32, 500, 999] {
            let mut b = base.clone();
            b[i] = 1;
            assert_ne!(checksum(&b), sum, "byte {i}");
        }
        assert_ne!(checksum(&base[..999]), sum, "length counts");
    }
}
