//! [`Array`]: an immutable array of plain values that either owns a `Vec` or borrows a
//! byte range of shared memory (a memory-mapped snapshot file, see `microseg-store`), so a
//! table opened from disk is used in place, without copying or parsing.
//!
//! The engine does no I/O: whoever maps a file hands it over as [`Bytes`], and the array
//! keeps it alive for as long as any array points into it.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// Bytes shared by arrays (a memory-mapped file, or a buffer).
pub trait Bytes: Send + Sync + 'static {
    /// The bytes; they never change while the value lives.
    fn bytes(&self) -> &[u8];
}

impl Bytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Value types every bit pattern of which is valid, stored little-endian: an array of them
/// can be read straight from bytes.
pub trait Plain: Copy + Send + Sync + sealed::Sealed + 'static {}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}
plain!(u8, u32, u64, i64, f64);

/// Why bytes cannot be read as an array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    /// The range is outside the bytes.
    #[error("array of {len} items at byte {offset} is outside the {size} bytes")]
    OutOfBounds {
        /// Start, in bytes.
        offset: usize,
        /// Items.
        len: usize,
        /// Bytes there are.
        size: usize,
    },
    /// The range does not start on a multiple of the item's size.
    #[error("array at byte {0} is not aligned")]
    Misaligned(usize),
}

enum Owner<T> {
    Vec(#[allow(dead_code)] Vec<T>),
    Shared(#[allow(dead_code)] Arc<dyn Bytes>),
}

/// An immutable array of `T`: owned, or borrowed from [`Bytes`]. Dereferences to `&[T]`.
pub struct Array<T: Plain> {
    ptr: *const T,
    len: usize,
    owner: Owner<T>,
    _marker: PhantomData<T>,
}

// SAFETY: the array never mutates what `ptr` points to, and `owner` (which is Send + Sync:
// a Vec of Send + Sync values, or an `Arc<dyn Bytes>` whose target is Send + Sync) keeps it
// alive and unmoved (a Vec's heap buffer does not move when the Vec does).
unsafe impl<T: Plain> Send for Array<T> {}
// SAFETY: as above; shared access is read-only.
unsafe impl<T: Plain> Sync for Array<T> {}

impl<T: Plain> Array<T> {
    /// `len` values of `T` starting at byte `offset` of `bytes`, without copying on a
    /// little-endian machine (copied and converted on a big-endian one).
    pub fn from_bytes(
        bytes: Arc<dyn Bytes>,
        offset: usize,
        len: usize,
    ) -> Result<Self, ArrayError> {
        let size = bytes.bytes().len();
        let item = std::mem::size_of::<T>();
        let end = len
            .checked_mul(item)
            .and_then(|n| n.checked_add(offset))
            .filter(|&end| end <= size)
            .ok_or(ArrayError::OutOfBounds { offset, len, size })?;
        let slice = &bytes.bytes()[offset..end];
        if cfg!(target_endian = "big") {
            return Ok(Array::from(decode_le::<T>(slice)));
        }
        let ptr = slice.as_ptr();
        if ptr as usize % std::mem::align_of::<T>() != 0 {
            return Err(ArrayError::Misaligned(offset));
        }
        Ok(Array {
            ptr: ptr.cast::<T>(),
            len,
            owner: Owner::Shared(bytes),
            _marker: PhantomData,
        })
    }

    /// An empty array.
    pub fn new() -> Self {
        Array::from(Vec::new())
    }

    /// The values as an owned vector (a copy when borrowed).
    pub fn into_vec(self) -> Vec<T> {
        match self.owner {
            Owner::Vec(v) => v,
            Owner::Shared(_) => self.to_vec(),
        }
    }

    /// Whether the values live in shared bytes (a mapped file) rather than the heap.
    pub fn is_shared(&self) -> bool {
        matches!(self.owner, Owner::Shared(_))
    }
}

/// Little-endian bytes to values (the big-endian path of [`Array::from_bytes`]).
fn decode_le<T: Plain>(bytes: &[u8]) -> Vec<T> {
    let item = std::mem::size_of::<T>();
    bytes
        .chunks_exact(item)
        .map(|chunk| {
            let mut raw = chunk.to_vec();
            raw.reverse();
            // SAFETY: `raw` holds exactly size_of::<T>() bytes and every bit pattern is a
            // valid T (the `Plain` contract); read_unaligned has no alignment needs.
            unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<T>()) }
        })
        .collect()
}

impl<T: Plain> From<Vec<T>> for Array<T> {
    fn from(v: Vec<T>) -> Self {
        Array {
            ptr: v.as_ptr(),
            len: v.len(),
            owner: Owner::Vec(v),
            _marker: PhantomData,
        }
    }
}

impl<T: Plain> Default for Array<T> {
    fn default() -> Self {
        Array::new()
    }
}

impl<T: Plain> Deref for Array<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised values of T kept alive by `owner`
        // (checked in bounds and aligned when borrowed from bytes).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Plain> Clone for Array<T> {
    fn clone(&self) -> Self {
        match &self.owner {
            Owner::Vec(v) => Array::from(v.clone()),
            Owner::Shared(bytes) => Array {
                ptr: self.ptr,
                len: self.len,
                owner: Owner::Shared(bytes.clone()),
                _marker: PhantomData,
            },
        }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Plain + PartialEq> PartialEq for Array<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Plain> FromIterator<T> for Array<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Array::from(iter.into_iter().collect::<Vec<T>>())
    }
}

/// The bytes of `values`, little-endian, for writing a snapshot: borrowed on a
/// little-endian machine, converted on a big-endian one.
pub fn as_le_bytes<T: Plain>(values: &[T]) -> std::borrow::Cow<'_, [u8]> {
    let item = std::mem::size_of::<T>();
    // SAFETY: T is plain data without padding (integers and floats), so its memory is
    // `len * size_of::<T>()` initialised bytes.
    let raw = unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    };
    if cfg!(target_endian = "big") {
        raw.chunks_exact(item)
            .flat_map(|chunk| chunk.iter().rev().copied())
            .collect::<Vec<u8>>()
            .into()
    } else {
        raw.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_arrays_read_in_place_and_refuse_bad_ranges() {
        let mut raw = as_le_bytes(&[1u64, 2, 3]).into_owned();
        raw.extend_from_slice(&as_le_bytes(&[-7i64]));
        let bytes: Arc<dyn Bytes> = Arc::new(raw);
        let a = Array::<u64>::from_bytes(bytes.clone(), 0, 3).unwrap();
        assert_eq!(&*a, &[1, 2, 3]);
        assert!(a.is_shared());
        let b = Array::<i64>::from_bytes(bytes.clone(), 24, 1).unwrap();
        assert_eq!(&*b, &[-7]);
        assert_eq!(
            Array::<u64>::from_bytes(bytes.clone(), 8, 4).unwrap_err(),
            ArrayError::OutOfBounds {
                offset: 8,
                len: 4,
                size: 32
            }
        );
        assert!(Array::<u64>::from_bytes(bytes.clone(), usize::MAX - 2, 1).is_err());
        assert_eq!(
            Array::<u64>::from_bytes(bytes, 4, 1).unwrap_err(),
            ArrayError::Misaligned(4)
        );
        // The bytes outlive the arrays' owner handle being dropped elsewhere.
        let c = a.clone();
        drop(a);
        assert_eq!(c.into_vec(), vec![1, 2, 3]);
    }
}
