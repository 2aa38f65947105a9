//! The RocksDB key layout.
//!
//! ```text
//! [key group: 1 byte if max parallelism <= 128, else 2 bytes big-endian]
//! [varint len(key)][key][varint len(namespace)][namespace][user key: map state only]
//! ```
//!
//! The key group comes first and is big-endian, so one key group (and a
//! range of them) is one contiguous byte range: restore clips foreign key
//! groups with one `delete_range` and snapshots read key group after key
//! group. Key and namespace are length-prefixed (unlike Flink, which omits the
//! lengths for fixed-size types) so the encoding is prefix-free: the bytes up
//! to the namespace identify exactly one (key, namespace), and every map entry
//! of it, and nothing else, starts with them.

use state_api::codec::{read_len_prefixed, write_len_prefixed, write_varint};
use state_api::key_group::{KeyGroup, key_group_for_hash, key_hash};
use state_api::{KeyGroupRange, Result, StateError};

/// An upper bound above every key of the layout: key-group prefixes start
/// with a byte of at most `0x7f` (1 byte, key group < 128) or `0x80`
/// (2 bytes, key group < 32768).
pub(crate) const ABOVE_ALL_KEYS: [u8; 1] = [0xff];

/// The key-group prefix width of a max parallelism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyLayout {
    max_parallelism: u32,
    prefix_len: usize,
}

impl KeyLayout {
    /// The layout of a job with `max_parallelism` key groups.
    pub(crate) fn new(max_parallelism: u32) -> Self {
        Self {
            max_parallelism,
            prefix_len: if max_parallelism <= 128 { 1 } else { 2 },
        }
    }

    /// The key group of a serialized key.
    #[inline]
    pub(crate) fn key_group_of_key(&self, key: &[u8]) -> KeyGroup {
        key_group_for_hash(key_hash(key), self.max_parallelism)
    }

    /// Appends the key-group prefix of `key_group`.
    #[inline]
    pub(crate) fn write_key_group(&self, out: &mut Vec<u8>, key_group: KeyGroup) {
        if self.prefix_len == 1 {
            out.push(key_group as u8);
        } else {
            out.extend_from_slice(&(key_group as u16).to_be_bytes());
        }
    }

    /// The prefix bytes of `key_group`; also the first key of key group
    /// `key_group` (and, for `key_group == max_parallelism`, above them all).
    pub(crate) fn key_group_bound(&self, key_group: KeyGroup) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix_len);
        self.write_key_group(&mut out, key_group);
        out
    }

    /// `[first key, end key)` of the key groups in `range`.
    pub(crate) fn range_bounds(&self, range: KeyGroupRange) -> (Vec<u8>, Vec<u8>) {
        (
            self.key_group_bound(range.start()),
            self.key_group_bound(range.end_exclusive()),
        )
    }

    /// Appends a whole composite key.
    pub(crate) fn write_composite(
        &self,
        out: &mut Vec<u8>,
        key_group: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        user_key: Option<&[u8]>,
    ) {
        self.write_key_group(out, key_group);
        write_len_prefixed(out, key);
        write_len_prefixed(out, namespace);
        if let Some(user_key) = user_key {
            out.extend_from_slice(user_key);
        }
    }

    /// Splits the key-group prefix off a stored key.
    pub(crate) fn split_key_group<'a>(&self, stored: &'a [u8]) -> Option<(KeyGroup, &'a [u8])> {
        let (group, rest) = stored.split_at_checked(self.prefix_len)?;
        let key_group = match *group {
            [b] => KeyGroup::from(b),
            [hi, lo] => KeyGroup::from(u16::from_be_bytes([hi, lo])),
            _ => return None,
        };
        Some((key_group, rest))
    }

    /// Splits a composite key; `None` when it is malformed.
    pub(crate) fn parse<'a>(&self, composite: &'a [u8]) -> Option<ParsedKey<'a>> {
        let (key_group, rest) = self.split_key_group(composite)?;
        let (key, rest) = read_len_prefixed(rest)?;
        let (namespace, user_key) = read_len_prefixed(rest)?;
        Some(ParsedKey {
            key_group,
            key,
            namespace,
            user_key,
            key_and_namespace_len: composite.len() - user_key.len(),
        })
    }
}

/// A composite key, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ParsedKey<'a> {
    pub(crate) key_group: KeyGroup,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    /// Empty for states other than map state.
    pub(crate) user_key: &'a [u8],
    /// Length of the `[kg][key][namespace]` part.
    pub(crate) key_and_namespace_len: usize,
}

/// The smallest key above every key that starts with `prefix` (RocksDB's
/// iterate upper bound for a prefix scan); `None` if there is none.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The current key, encoded once per `set_current_key` as the
/// `[kg][varint len][key]` prefix every access starts with. Accesses append
/// the namespace (and user key) to the same buffer, so the hot path never
/// allocates once the buffer has grown to the largest key.
#[derive(Debug, Default)]
pub(crate) struct CurrentKey {
    buf: Vec<u8>,
    /// End of `[kg][len][key]` in `buf`.
    prefix_len: usize,
    /// Start of the key bytes in `buf`.
    key_start: usize,
    key_group: Option<KeyGroup>,
}

impl CurrentKey {
    /// Sets the key, checking its key group; on error the previous key stays.
    #[inline]
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        layout: &KeyLayout,
        range: KeyGroupRange,
    ) -> Result<()> {
        let key_group = layout.key_group_of_key(key);
        if !range.contains(key_group) {
            return Err(StateError::KeyGroupOutOfRange { key_group, range });
        }
        self.buf.clear();
        layout.write_key_group(&mut self.buf, key_group);
        write_varint(&mut self.buf, key.len() as u64);
        self.key_start = self.buf.len();
        self.buf.extend_from_slice(key);
        self.prefix_len = self.buf.len();
        self.key_group = Some(key_group);
        Ok(())
    }

    /// The key's bytes.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.key_group?;
        self.buf.get(self.key_start..self.prefix_len)
    }

    /// The key's key group.
    pub(crate) fn key_group(&self) -> Option<KeyGroup> {
        self.key_group
    }

    /// `[kg][key][namespace]` of the current key.
    #[inline]
    pub(crate) fn composite(&mut self, namespace: &[u8]) -> Result<&[u8]> {
        self.key_group.ok_or_else(|| StateError::NoCurrentKey)?;
        self.buf.truncate(self.prefix_len);
        write_len_prefixed(&mut self.buf, namespace);
        Ok(&self.buf)
    }

    /// `[kg][key][namespace][user key]` of the current key.
    #[inline]
    pub(crate) fn composite_with_user_key(
        &mut self,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<&[u8]> {
        self.composite(namespace)?;
        self.buf.extend_from_slice(user_key);
        Ok(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_orders_by_key_group() {
        for max_p in [128, 129, 32_768] {
            let layout = KeyLayout::new(max_p);
            let mut a = Vec::new();
            layout.write_composite(&mut a, 5, b"key", b"ns", Some(b"uk"));
            let parsed = layout.parse(&a).expect("parses");
            assert_eq!(
                (
                    parsed.key_group,
                    parsed.key,
                    parsed.namespace,
                    parsed.user_key
                ),
                (5, &b"key"[..], &b"ns"[..], &b"uk"[..])
            );
            assert_eq!(parsed.key_and_namespace_len, a.len() - 2);
            let mut b = Vec::new();
            layout.write_composite(&mut b, max_p - 1, b"", b"", None);
            assert!(a < b && b < ABOVE_ALL_KEYS.to_vec());
            assert!(layout.key_group_bound(max_p) <= ABOVE_ALL_KEYS.to_vec());
        }
        assert_eq!(KeyLayout::new(128).key_group_bound(3), vec![3]);
        assert_eq!(KeyLayout::new(256).key_group_bound(258), vec![1, 2]);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let layout = KeyLayout::new(256);
        assert!(layout.parse(&[]).is_none());
        assert!(layout.parse(&[0]).is_none());
        assert!(
            layout.parse(&[0, 1, 5, b'a']).is_none(),
            "key shorter than its length"
        );
    }

    #[test]
    fn key_and_namespace_prefixes_do_not_collide() {
        // (a, b) and (ab, "") must be different, non-prefix-related keys.
        let layout = KeyLayout::new(128);
        let mut x = Vec::new();
        layout.write_composite(&mut x, 0, b"a", b"b", None);
        let mut y = Vec::new();
        layout.write_composite(&mut y, 0, b"ab", b"", None);
        assert!(!x.starts_with(&y) && !y.starts_with(&x));
    }

    #[test]
    fn successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
