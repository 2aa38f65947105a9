//! Composite keys and the current-key cursor.
//!
//! Every state table is keyed by a *composite key*
//! `varint(len(key)) ++ key ++ namespace`. The length prefix makes the split
//! unambiguous, so `("ab", "")` and `("a", "b")` are different entries even
//! though their concatenations are equal.
//!
//! [`CurrentKey`] keeps the current key's prefix `varint(len) ++ key` in one
//! reusable buffer; every state access appends the namespace to that same
//! buffer and looks up by `&[u8]`, so reads and in-place updates never
//! allocate.

use state_api::codec::{read_len_prefixed, write_varint};
use state_api::key_group::{KeyGroup, key_group_for_hash, key_hash};
use state_api::{KeyGroupRange, Result, StateError};

use state_api::short_bytes::copy_bytes;

/// Writes the composite key of `key` and `namespace` into `out` (used by
/// restore; the hot path builds it in [`CurrentKey`]'s buffer instead).
pub(crate) fn write_composite_key(out: &mut Vec<u8>, key: &[u8], namespace: &[u8]) {
    out.clear();
    write_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(namespace);
}

/// Splits a composite key back into `(key, namespace)`; `None` if it is
/// malformed (never for keys this crate built).
pub(crate) fn split_composite_key(composite: &[u8]) -> Option<(&[u8], &[u8])> {
    read_len_prefixed(composite)
}

/// Maps keys to key groups for one backend, with the divisor fixed at
/// construction so the common power-of-two case is a mask.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyGroupAssigner {
    max_parallelism: u32,
    /// `max_parallelism - 1` when it is a power of two.
    mask: Option<u32>,
}

impl KeyGroupAssigner {
    /// An assigner for a valid `max_parallelism` (checked by the caller).
    pub(crate) fn new(max_parallelism: u32) -> Self {
        Self {
            max_parallelism,
            mask: max_parallelism
                .is_power_of_two()
                .then(|| max_parallelism - 1),
        }
    }

    /// The key group of an encoded key; equal to
    /// [`state_api::key_group::assign_to_key_group`].
    #[inline]
    pub(crate) fn key_group(&self, encoded_key: &[u8]) -> KeyGroup {
        let hash = key_hash(encoded_key);
        match self.mask {
            // `hash % 2^n == hash & (2^n - 1)`: skips a 32-bit division.
            Some(mask) => hash & mask,
            None => key_group_for_hash(hash, self.max_parallelism),
        }
    }
}

/// Composite keys up to this length are built in an inline buffer.
const INLINE_COMPOSITE: usize = 64;

/// A varint, written by [`write_varint`] without a heap buffer.
#[derive(Default)]
struct VarintBytes {
    bytes: [u8; 10],
    len: usize,
}

impl Extend<u8> for VarintBytes {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for byte in iter {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
    }
}

/// The current key, its key group, and the buffer state accesses build
/// composite keys in.
#[derive(Debug)]
pub(crate) struct CurrentKey {
    /// `varint(len) ++ key`, then the namespace of the last access, when the
    /// prefix fits; a fixed array, so building a lookup key never touches
    /// `Vec` bookkeeping or `memcpy`.
    inline: [u8; INLINE_COMPOSITE],
    /// The composite key when it does not fit `inline` (long keys or
    /// namespaces); holds the prefix itself when that does not fit.
    spilled: Vec<u8>,
    /// Whether the prefix lives in `spilled` rather than `inline`.
    prefix_spilled: bool,
    /// Where the key starts (after its length prefix).
    key_start: usize,
    /// Where the key ends (and the namespace starts).
    prefix_len: usize,
    /// Key group of the current key and its index in the backend's range;
    /// `None` until a key is set.
    key_group: Option<(KeyGroup, usize)>,
}

impl CurrentKey {
    pub(crate) fn new() -> Self {
        Self {
            inline: [0; INLINE_COMPOSITE],
            spilled: Vec::new(),
            prefix_spilled: false,
            key_start: 0,
            prefix_len: 0,
            key_group: None,
        }
    }

    /// Makes `encoded_key` current. On error the previous key stays current.
    ///
    /// # Errors
    /// [`StateError::KeyGroupOutOfRange`] if its key group is not in `range`.
    #[inline]
    pub(crate) fn set(
        &mut self,
        encoded_key: &[u8],
        assigner: &KeyGroupAssigner,
        range: KeyGroupRange,
    ) -> Result<()> {
        let key_group = assigner.key_group(encoded_key);
        let Some(index) = range.index_of(key_group) else {
            return Err(StateError::KeyGroupOutOfRange { key_group, range });
        };
        let len = encoded_key.len();
        // The common case, a key under 128 bytes: its varint length is one
        // byte and the prefix fits the inline buffer (a few stores; the
        // general path costs several times as many instructions).
        if len < 0x80
            && let Some((length_slot, key_slots)) = self.inline.split_first_mut()
            && let Some(key_slot) = key_slots.get_mut(..len)
        {
            *length_slot = len as u8;
            copy_bytes(key_slot, encoded_key);
            self.prefix_spilled = false;
            self.key_start = 1;
            self.prefix_len = 1 + len;
        } else {
            self.set_long(encoded_key);
        }
        self.key_group = Some((key_group, index));
        Ok(())
    }

    /// [`set`](Self::set)'s prefix for keys whose length takes more than one
    /// varint byte or whose prefix spills.
    #[cold]
    fn set_long(&mut self, encoded_key: &[u8]) {
        let mut varint = VarintBytes::default();
        write_varint(&mut varint, encoded_key.len() as u64);
        let length = varint.bytes.get(..varint.len).unwrap_or_default();
        let key_start = length.len();
        let prefix_len = key_start + encoded_key.len();
        if let Some(prefix) = self.inline.get_mut(..prefix_len) {
            let (length_slot, key_slot) = prefix.split_at_mut(key_start);
            copy_bytes(length_slot, length);
            copy_bytes(key_slot, encoded_key);
            self.prefix_spilled = false;
        } else {
            self.spilled.clear();
            self.spilled.extend_from_slice(length);
            self.spilled.extend_from_slice(encoded_key);
            self.prefix_spilled = true;
        }
        self.key_start = key_start;
        self.prefix_len = prefix_len;
    }

    /// `varint(len) ++ key` of the current key.
    fn prefix(&self) -> &[u8] {
        let buffer: &[u8] = if self.prefix_spilled {
            &self.spilled
        } else {
            &self.inline
        };
        buffer.get(..self.prefix_len).unwrap_or_default()
    }

    /// The current key's encoded bytes.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.key_group?;
        self.prefix().get(self.key_start..)
    }

    /// The current key's encoded bytes and the index of its key group
    /// within the range.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`].
    pub(crate) fn key_and_index(&self) -> Result<(&[u8], usize)> {
        let (_, index) = self.key_group.ok_or_else(|| StateError::NoCurrentKey)?;
        Ok((
            self.prefix().get(self.key_start..).unwrap_or_default(),
            index,
        ))
    }

    /// The current key's key group.
    pub(crate) fn key_group(&self) -> Option<KeyGroup> {
        self.key_group.map(|(kg, _)| kg)
    }

    /// The composite key of the current key and `namespace`, and the index
    /// of the current key group within the range.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`].
    #[inline]
    pub(crate) fn lookup(&mut self, namespace: &[u8]) -> Result<(&[u8], usize)> {
        let (_, index) = self.key_group.ok_or_else(|| StateError::NoCurrentKey)?;
        if self.prefix_spilled {
            return Ok((self.spilled_lookup(namespace), index));
        }
        if namespace.is_empty() {
            // State without namespaces (`VoidNamespace`): the prefix is the
            // composite key, nothing to copy.
            return Ok((
                self.inline.get(..self.prefix_len).unwrap_or_default(),
                index,
            ));
        }
        let end = self.prefix_len + namespace.len();
        if let Some(slot) = self.inline.get_mut(self.prefix_len..end) {
            copy_bytes(slot, namespace);
            return Ok((self.inline.get(..end).unwrap_or_default(), index));
        }
        Ok((self.spilled_lookup(namespace), index))
    }

    /// The composite key of the current key and `namespace` built on the
    /// heap (long keys or namespaces; the buffer keeps its capacity, so this
    /// allocates only while it grows).
    #[cold]
    fn spilled_lookup(&mut self, namespace: &[u8]) -> &[u8] {
        if !self.prefix_spilled {
            self.spilled.clear();
            self.spilled
                .extend_from_slice(self.inline.get(..self.prefix_len).unwrap_or_default());
        }
        self.spilled.truncate(self.prefix_len);
        self.spilled.extend_from_slice(namespace);
        &self.spilled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::key_group::assign_to_key_group;

    fn composite_key(key: &[u8], namespace: &[u8]) -> Vec<u8> {
        let mut out = vec![0xee; 3]; // stale content must be replaced
        write_composite_key(&mut out, key, namespace);
        out
    }

    #[test]
    fn composite_keys_keep_key_and_namespace_apart() {
        let a = composite_key(b"ab", b"");
        let b = composite_key(b"a", b"b");
        assert_ne!(a, b, "length prefix separates (ab, '') from (a, b)");
        assert_eq!(split_composite_key(&a), Some((&b"ab"[..], &b""[..])));
        assert_eq!(split_composite_key(&b), Some((&b"a"[..], &b"b"[..])));
        let long_key = vec![7u8; 300];
        let c = composite_key(&long_key, b"ns");
        assert_eq!(c[..2], [0xac, 0x02], "varint length of 300");
        assert_eq!(split_composite_key(&c), Some((&long_key[..], &b"ns"[..])));
    }

    #[test]
    fn malformed_composite_keys_do_not_panic() {
        assert_eq!(split_composite_key(&[]), None);
        assert_eq!(split_composite_key(&[5, 1, 2]), None);
        assert_eq!(split_composite_key(&[0xff]), None);
    }

    #[test]
    fn assigner_matches_state_api() {
        for max_p in [1, 7, 128, 1000, 32_768] {
            let assigner = KeyGroupAssigner::new(max_p);
            for key in [&b""[..], b"a", b"user-42", &[42], &[0xff; 40]] {
                assert_eq!(
                    assigner.key_group(key),
                    assign_to_key_group(key, max_p).unwrap()
                );
            }
        }
    }

    #[test]
    fn current_key_lookup_appends_namespace() {
        let range = KeyGroupRange::all(128).unwrap();
        let assigner = KeyGroupAssigner::new(128);
        let mut current = CurrentKey::new();
        assert!(matches!(current.lookup(b""), Err(StateError::NoCurrentKey)));
        assert_eq!(current.key(), None);
        current.set(b"key", &assigner, range).unwrap();
        assert_eq!(current.key(), Some(&b"key"[..]));
        let kg = assign_to_key_group(b"key", 128).unwrap();
        assert_eq!(current.key_group(), Some(kg));
        let (lookup, index) = current.lookup(b"ns1").unwrap();
        assert_eq!(lookup, &composite_key(b"key", b"ns1")[..]);
        assert_eq!(index, kg as usize);
        let (lookup, _) = current.lookup(b"").unwrap();
        assert_eq!(lookup, &composite_key(b"key", b"")[..]);
        assert_eq!(current.key(), Some(&b"key"[..]));
    }

    #[test]
    fn long_keys_and_namespaces_spill() {
        let range = KeyGroupRange::all(128).unwrap();
        let assigner = KeyGroupAssigner::new(128);
        let mut current = CurrentKey::new();
        for (key, ns) in [
            (vec![1u8; 10], vec![2u8; 60]),
            (vec![3u8; 200], vec![]),
            (vec![3u8; 200], vec![4u8; 5]),
            (vec![5u8; 3], vec![6u8; 2]),
            (vec![5u8; 3], vec![7u8; 100]),
            (vec![5u8; 3], vec![]),
            (vec![8u8; 3], vec![9u8; 12]),
            (vec![8u8; 3], vec![10u8; 2]),
            (vec![8u8; 3], vec![]),
            (vec![13u8; 15], vec![14u8; 1]),
            (vec![15u8; 70], vec![16u8; 1]),
        ] {
            current.set(&key, &assigner, range).unwrap();
            assert_eq!(current.key(), Some(&key[..]));
            let (lookup, _) = current.lookup(&ns).unwrap();
            assert_eq!(lookup, &composite_key(&key, &ns)[..]);
            assert_eq!(current.key(), Some(&key[..]));
        }
    }

    #[test]
    fn out_of_range_key_keeps_previous_key() {
        let assigner = KeyGroupAssigner::new(128);
        let kg = assign_to_key_group(b"inside", 128).unwrap();
        let range = KeyGroupRange::new(kg, kg + 1).unwrap();
        let mut current = CurrentKey::new();
        current.set(b"inside", &assigner, range).unwrap();
        let outside = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|k| assign_to_key_group(k, 128).unwrap() != kg)
            .unwrap();
        let err = current.set(&outside, &assigner, range).unwrap_err();
        assert!(
            matches!(err, StateError::KeyGroupOutOfRange { .. }),
            "{err}"
        );
        assert_eq!(current.key(), Some(&b"inside"[..]));
        assert_eq!(current.lookup(b"").unwrap().1, 0);
    }
}
