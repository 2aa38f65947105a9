//! [`HeapBytes`]: the byte strings the tables store (composite keys, values,
//! map keys and values).
//!
//! Small strings live inline, so a table entry of a small key and value is
//! one contiguous 40-byte slot with no pointer to chase. Larger ones live in
//! an `Arc<Vec<u8>>`, which matters for copy-on-write: when the first write
//! after a snapshot copies a table page, every entry in it is cloned, and an
//! inline or `Arc` clone is a memcpy or a reference count, never a copy of a
//! long list. The one value actually written is then copied by
//! [`append`](HeapBytes::append) / [`set`](HeapBytes::set) only if the
//! snapshot still shares it, as Flink's `CopyOnWriteStateMap` copies a value
//! on its first write after a snapshot.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use state_api::short_bytes::{bytes_eq, copy_bytes};
// No weak count: `get_mut` on an unshared value is a load, not an atomic
// compare-and-swap.
use triomphe::Arc;

/// A byte string, inline up to `N` bytes (`N` < 256), else shared.
///
/// `Hash`, `Eq` and `Ord` are those of `[u8]`, so maps keyed by it can be
/// queried with a plain `&[u8]` (the `Borrow` contract).
#[derive(Clone)]
pub(crate) enum HeapBytes<const N: usize> {
    /// `data[..len]` holds the bytes.
    Inline { len: u8, data: [u8; N] },
    /// More than `N` bytes (or bytes that grew past `N`).
    Shared(Arc<Vec<u8>>),
}

/// Composite keys: 22 inline bytes (24 in all) hold a length byte, a
/// postcard `u64` key (at most 10 bytes) and a namespace of up to 11 bytes,
/// e.g. a time window of two millisecond timestamps (two 6-byte varints) for
/// keys below 2^28. Windowed state is the main user of namespaces.
pub(crate) type KeyBytes = HeapBytes<22>;

/// Values, list encodings, map keys and map values: 14 inline bytes (16 in
/// all) hold any postcard integer, a one-element list of one, or a short
/// string; larger values spill.
pub(crate) type ValueBytes = HeapBytes<14>;

impl<const N: usize> HeapBytes<N> {
    /// Evaluated at compile time for every `N` used: the length must fit `u8`.
    const INLINE_FITS_U8: () = assert!(N <= u8::MAX as usize, "inline capacity must fit a u8");

    /// A copy of `bytes`.
    #[inline]
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        let () = Self::INLINE_FITS_U8;
        let mut data = [0u8; N];
        match data.get_mut(..bytes.len()) {
            Some(prefix) => {
                copy_bytes(prefix, bytes);
                HeapBytes::Inline {
                    len: bytes.len() as u8,
                    data,
                }
            }
            None => HeapBytes::Shared(Arc::new(bytes.to_vec())),
        }
    }

    /// The bytes.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            HeapBytes::Inline { len, data } => data.get(..usize::from(*len)).unwrap_or_default(),
            HeapBytes::Shared(bytes) => bytes,
        }
    }

    /// Whether the bytes equal `other` (inline, without a `memcmp` call).
    #[inline]
    pub(crate) fn eq_slice(&self, other: &[u8]) -> bool {
        bytes_eq(self.as_slice(), other)
    }

    /// Replaces the bytes, reusing the current storage where it is not
    /// shared with a snapshot.
    #[inline]
    pub(crate) fn set(&mut self, bytes: &[u8]) {
        if let HeapBytes::Inline { len, data } = self
            && let Some(prefix) = data.get_mut(..bytes.len())
        {
            copy_bytes(prefix, bytes);
            *len = bytes.len() as u8;
            return;
        }
        // Reuse an unshared buffer for large values only: a value that
        // shrank to inline size goes back inline below.
        if bytes.len() > N
            && let HeapBytes::Shared(shared) = self
            && let Some(vec) = Arc::get_mut(shared)
        {
            vec.clear();
            vec.extend_from_slice(bytes);
            return;
        }
        *self = Self::from_slice(bytes);
    }

    /// Appends `more`. Copies the existing bytes once if a snapshot shares
    /// them; otherwise appends in place (amortized O(len(more))).
    pub(crate) fn append(&mut self, more: &[u8]) {
        match self {
            HeapBytes::Inline { len, data } => {
                let start = usize::from(*len);
                let end = start + more.len();
                if let Some(tail) = data.get_mut(start..end) {
                    copy_bytes(tail, more);
                    *len = end as u8;
                    return;
                }
                let mut vec = Vec::with_capacity((end).max(2 * N));
                vec.extend_from_slice(data.get(..start).unwrap_or_default());
                vec.extend_from_slice(more);
                *self = HeapBytes::Shared(Arc::new(vec));
            }
            HeapBytes::Shared(shared) => match Arc::get_mut(shared) {
                Some(vec) => vec.extend_from_slice(more),
                None => {
                    // Shared with a snapshot: one copy, sized for the result
                    // (Arc::make_mut would copy, then grow again).
                    let mut vec = Vec::with_capacity(shared.len() + more.len());
                    vec.extend_from_slice(shared);
                    vec.extend_from_slice(more);
                    *shared = Arc::new(vec);
                }
            },
        }
    }

    /// Whether the bytes are stored inline (no heap allocation of their own).
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self, HeapBytes::Inline { .. })
    }
}

impl<const N: usize> Deref for HeapBytes<N> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> Borrow<[u8]> for HeapBytes<N> {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> PartialEq for HeapBytes<N> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        bytes_eq(self.as_slice(), other.as_slice())
    }
}

impl<const N: usize> Eq for HeapBytes<N> {}

impl<const N: usize> Hash for HeapBytes<N> {
    /// Exactly `<[u8] as Hash>::hash`, as `Borrow<[u8]>` requires.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<const N: usize> Ord for HeapBytes<N> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl<const N: usize> PartialOrd for HeapBytes<N> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> fmt::Debug for HeapBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn sizes_stay_compact() {
        assert_eq!(size_of::<KeyBytes>(), 24);
        assert_eq!(size_of::<ValueBytes>(), 16);
    }

    #[test]
    fn inline_and_shared_round_trip() {
        for len in [0, 1, 14, 15, 100] {
            let bytes: Vec<u8> = (0..len as u8).collect();
            let value = ValueBytes::from_slice(&bytes);
            assert_eq!(value.as_slice(), &bytes[..]);
            assert_eq!(value.is_inline(), len <= 14);
        }
    }

    #[test]
    fn set_reuses_and_switches_storage() {
        let mut value = ValueBytes::from_slice(b"abc");
        value.set(&[1; 40]);
        assert_eq!(value.as_slice(), &[1; 40]);
        assert!(!value.is_inline());
        value.set(&[2; 50]);
        assert_eq!(value.as_slice(), &[2; 50]);
        value.set(b"x");
        assert_eq!(value.as_slice(), b"x");
        assert!(value.is_inline(), "a value that shrank goes back inline");
    }

    #[test]
    fn append_grows_and_copies_shared_bytes_once() {
        let mut value = ValueBytes::from_slice(b"0123456");
        value.append(b"0123456");
        assert!(value.is_inline());
        value.append(b"abcdef");
        assert!(!value.is_inline());
        assert_eq!(value.as_slice(), b"01234560123456abcdef");

        let frozen = value.clone(); // what a snapshot holds
        value.append(b"!");
        assert_eq!(frozen.as_slice(), b"01234560123456abcdef");
        assert_eq!(value.as_slice(), b"01234560123456abcdef!");
        let mut again = frozen.clone();
        again.set(&[9; 30]);
        assert_eq!(frozen.as_slice(), b"01234560123456abcdef");
    }

    #[test]
    fn hash_eq_ord_match_slices() {
        let hasher = std::hash::BuildHasherDefault::<rustc_hash::FxHasher>::default();
        for bytes in [&b""[..], b"a", &[7; 22], &[9; 23], &[1; 200]] {
            let key = KeyBytes::from_slice(bytes);
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(bytes));
            assert_eq!(Borrow::<[u8]>::borrow(&key), bytes);
        }
        let (a, b) = (
            ValueBytes::from_slice(b"ab"),
            ValueBytes::from_slice(&[b'a'; 30]),
        );
        assert_eq!(a.cmp(&b), b"ab"[..].cmp(&[b'a'; 30][..]));
        assert_ne!(a, b);
    }
}
