//! Key groups: the unit of state redistribution.
//!
//! Keyed state is split into `max_parallelism` key groups. A key belongs to
//! key group `key_hash(serialized key) % max_parallelism`; operator instance
//! `i` of `parallelism` owns one contiguous [`KeyGroupRange`]. Rescaling moves
//! whole key groups, never single keys, so a snapshot taken at one parallelism
//! restores at any other as long as `max_parallelism` stays the same.
//!
//! The range and index formulas are exactly Flink's
//! (`KeyGroupRangeAssignment`). The key hash differs on purpose: Flink hashes
//! the Java `hashCode()` of the key object, which a Rust crate cannot
//! reproduce, so this crate hashes the *serialized key bytes* with
//! [XXH32](https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md)
//! (seed 0). XXH32 is specified byte for byte, independent of platform and
//! endianness; the test vectors in this module pin it, so key placement never
//! changes between releases.
//!
//! ```
//! use state_api::key_group::{assign_to_key_group, key_group_range_for_operator, operator_index_for_key_group};
//!
//! let max_parallelism = 128;
//! let kg = assign_to_key_group(b"user-42", max_parallelism).unwrap();
//! let owner = operator_index_for_key_group(max_parallelism, 3, kg).unwrap();
//! let range = key_group_range_for_operator(max_parallelism, 3, owner).unwrap();
//! assert!(range.contains(kg));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};

/// The largest max parallelism (and so the largest number of key groups): 2^15,
/// as in Flink.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The smallest max parallelism that [`default_max_parallelism`] picks.
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;

/// Index of a key group, `0..max_parallelism`.
pub type KeyGroup = u32;

/// The stable 32-bit hash of a serialized key: XXH32 with seed 0.
///
/// This is part of the on-disk contract: changing it would move keys to other
/// key groups and break every existing snapshot.
///
/// ```
/// assert_eq!(state_api::key_group::key_hash(b"abc"), 0x32D1_53FF);
/// ```
#[inline]
pub fn key_hash(serialized_key: &[u8]) -> u32 {
    match short_key_hash(serialized_key) {
        Some(hash) => hash,
        None => xxhash_rust::xxh32::xxh32(serialized_key, 0),
    }
}

/// XXH32's primes.
const PRIME32_1: u32 = 0x9E37_79B1;
const PRIME32_2: u32 = 0x85EB_CA77;
const PRIME32_3: u32 = 0xC2B2_AE3D;
const PRIME32_4: u32 = 0x27D4_EB2F;
const PRIME32_5: u32 = 0x1656_67B1;

/// XXH32 with seed 0 of a key under 16 bytes (no 16-byte stripes), `None`
/// for longer keys.
///
/// Every state access of every backend hashes its key; keys are mostly a
/// few bytes (a postcard `u64` is 1 to 10), where the general
/// implementation's set-up and slice iteration cost about twice the
/// arithmetic. Pinned to `xxhash_rust` for every length in the tests.
#[inline]
fn short_key_hash(key: &[u8]) -> Option<u32> {
    if key.len() >= 16 {
        return None;
    }
    let mut hash = PRIME32_5.wrapping_add(key.len() as u32);
    let mut words = key.chunks_exact(4);
    for word in &mut words {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        hash = hash.wrapping_add(word.wrapping_mul(PRIME32_3));
        hash = hash.rotate_left(17).wrapping_mul(PRIME32_4);
    }
    for &byte in words.remainder() {
        hash = hash.wrapping_add(u32::from(byte).wrapping_mul(PRIME32_5));
        hash = hash.rotate_left(11).wrapping_mul(PRIME32_1);
    }
    hash ^= hash >> 15;
    hash = hash.wrapping_mul(PRIME32_2);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(PRIME32_3);
    hash ^= hash >> 16;
    Some(hash)
}

/// Checks that `max_parallelism` is within `1..=32768`.
///
/// # Errors
/// [`StateError::InvalidKeyGroups`] when it is not.
pub fn check_max_parallelism(max_parallelism: u32) -> Result<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(StateError::InvalidKeyGroups(format!(
            "max parallelism {max_parallelism} is outside 1..={UPPER_BOUND_MAX_PARALLELISM}"
        )));
    }
    Ok(())
}

/// Checks `1 <= parallelism <= max_parallelism <= 32768`.
///
/// # Errors
/// [`StateError::InvalidKeyGroups`] naming the offending value.
pub fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<()> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(StateError::InvalidKeyGroups(format!(
            "parallelism {parallelism} is outside 1..={max_parallelism} (the max parallelism)"
        )));
    }
    Ok(())
}

/// The key group of a key hash: `hash % max_parallelism`.
///
/// The caller guarantees that `max_parallelism` is valid (see
/// [`check_max_parallelism`]); backends validate it once at construction.
#[inline]
pub fn key_group_for_hash(hash: u32, max_parallelism: u32) -> KeyGroup {
    hash % max_parallelism
}

/// The key group of a serialized key.
///
/// # Errors
/// [`StateError::InvalidKeyGroups`] for an invalid `max_parallelism`.
pub fn assign_to_key_group(serialized_key: &[u8], max_parallelism: u32) -> Result<KeyGroup> {
    check_max_parallelism(max_parallelism)?;
    Ok(key_group_for_hash(
        key_hash(serialized_key),
        max_parallelism,
    ))
}

/// The operator index that owns `key_group`:
/// `key_group * parallelism / max_parallelism`.
///
/// # Errors
/// [`StateError::InvalidKeyGroups`] for invalid parallelism values or a key
/// group `>= max_parallelism`.
pub fn operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: KeyGroup,
) -> Result<u32> {
    check_parallelism(max_parallelism, parallelism)?;
    if key_group >= max_parallelism {
        return Err(StateError::InvalidKeyGroups(format!(
            "key group {key_group} is not below max parallelism {max_parallelism}"
        )));
    }
    // u64: key_group * parallelism may exceed u32 for large values.
    Ok((u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32)
}

/// The contiguous key-group range that operator `operator_index` of
/// `parallelism` owns:
/// `[(i * maxP + p - 1) / p, ((i + 1) * maxP - 1) / p]`.
///
/// # Errors
/// [`StateError::InvalidKeyGroups`] for invalid parallelism values or an
/// index `>= parallelism`.
pub fn key_group_range_for_operator(
    max_parallelism: u32,
    parallelism: u32,
    operator_index: u32,
) -> Result<KeyGroupRange> {
    check_parallelism(max_parallelism, parallelism)?;
    if operator_index >= parallelism {
        return Err(StateError::InvalidKeyGroups(format!(
            "operator index {operator_index} is not below parallelism {parallelism}"
        )));
    }
    let (i, p, m) = (
        u64::from(operator_index),
        u64::from(parallelism),
        u64::from(max_parallelism),
    );
    let start = (i * m).div_ceil(p); // = (i * m + p - 1) / p
    let end_inclusive = ((i + 1) * m - 1) / p;
    KeyGroupRange::new(start as u32, end_inclusive as u32 + 1)
}

/// Flink's default max parallelism for an operator of `parallelism`:
/// `min(max(next_power_of_two(p + p / 2), 128), 32768)`.
///
/// ```
/// use state_api::key_group::default_max_parallelism;
/// assert_eq!(default_max_parallelism(1), 128);
/// assert_eq!(default_max_parallelism(100), 256);
/// assert_eq!(default_max_parallelism(30_000), 32_768);
/// ```
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let wanted = parallelism.saturating_add(parallelism / 2);
    wanted
        .checked_next_power_of_two()
        .unwrap_or(UPPER_BOUND_MAX_PARALLELISM)
        .clamp(
            DEFAULT_LOWER_BOUND_MAX_PARALLELISM,
            UPPER_BOUND_MAX_PARALLELISM,
        )
}

/// A contiguous, possibly empty, range of key groups `[start, end)`.
///
/// Displayed as Flink does, with an inclusive end: `KeyGroupRange{0..=63}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyGroupRange")]
pub struct KeyGroupRange {
    start: u32,
    end: u32,
}

/// The serialized form, checked by [`KeyGroupRange::new`] on the way in so a
/// damaged handle can never produce a range with `start > end`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyGroupRange {
    start: u32,
    end: u32,
}

impl TryFrom<RawKeyGroupRange> for KeyGroupRange {
    type Error = StateError;

    fn try_from(raw: RawKeyGroupRange) -> Result<Self> {
        KeyGroupRange::new(raw.start, raw.end)
    }
}

impl KeyGroupRange {
    /// The range `[start, end)`.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`] when `start > end` or `end > 32768`.
    pub fn new(start: KeyGroup, end_exclusive: KeyGroup) -> Result<Self> {
        if start > end_exclusive || end_exclusive > UPPER_BOUND_MAX_PARALLELISM {
            return Err(StateError::InvalidKeyGroups(format!(
                "key-group range [{start}, {end_exclusive}) is not within [0, {UPPER_BOUND_MAX_PARALLELISM})"
            )));
        }
        Ok(Self {
            start,
            end: end_exclusive,
        })
    }

    /// All key groups of `max_parallelism`: `[0, max_parallelism)`.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`] for an invalid `max_parallelism`.
    pub fn all(max_parallelism: u32) -> Result<Self> {
        check_max_parallelism(max_parallelism)?;
        Self::new(0, max_parallelism)
    }

    /// The empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange { start: 0, end: 0 };

    /// First key group in the range.
    pub fn start(&self) -> KeyGroup {
        self.start
    }

    /// One past the last key group.
    pub fn end_exclusive(&self) -> KeyGroup {
        self.end
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether `key_group` is in the range.
    #[inline]
    pub fn contains(&self, key_group: KeyGroup) -> bool {
        key_group >= self.start && key_group < self.end
    }

    /// Whether every key group of `other` is in this range.
    pub fn contains_range(&self, other: &KeyGroupRange) -> bool {
        other.is_empty() || (other.start >= self.start && other.end <= self.end)
    }

    /// The key groups both ranges hold (possibly empty).
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        if start < end {
            KeyGroupRange { start, end }
        } else {
            KeyGroupRange::EMPTY
        }
    }

    /// Position of `key_group` within the range (0 for `start`), if it is in it.
    #[inline]
    pub fn index_of(&self, key_group: KeyGroup) -> Option<usize> {
        self.contains(key_group)
            .then(|| (key_group - self.start) as usize)
    }

    /// The key groups in order.
    pub fn iter(&self) -> std::ops::Range<KeyGroup> {
        self.start..self.end
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "KeyGroupRange{{empty}}")
        } else {
            write!(f, "KeyGroupRange{{{}..={}}}", self.start, self.end - 1)
        }
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = KeyGroup;
    type IntoIter = std::ops::Range<KeyGroup>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the key hash to the XXH32 specification (vectors from the
    /// reference implementation), so placement never changes.
    #[test]
    fn key_hash_test_vectors() {
        assert_eq!(key_hash(b""), 0x02CC_5D05);
        assert_eq!(key_hash(b"a"), 0x550D_7456);
        assert_eq!(key_hash(b"abc"), 0x32D1_53FF);
        assert_eq!(
            key_hash(b"Nobody inspects the spammish repetition"),
            0xE229_3B2F
        );
    }

    /// The short-key path equals the general implementation for every
    /// length below 16 (and 16.. goes to it), over varied contents.
    #[test]
    fn short_key_hash_equals_xxh32() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..=40usize {
            for _ in 0..200 {
                let key: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                assert_eq!(
                    key_hash(&key),
                    xxhash_rust::xxh32::xxh32(&key, 0),
                    "length {len}, key {key:?}"
                );
            }
        }
    }

    /// Pins key-group assignment of concrete keys, in the encoding the
    /// typed API uses (postcard: a u64 is a LEB128 varint).
    #[test]
    fn key_group_assignment_is_pinned() {
        assert_eq!(assign_to_key_group(b"abc", 128).unwrap(), 0x32D1_53FF % 128);
        // postcard encodes the u64 key 42 as the single byte 42; XXH32 = 0xE0FE705F.
        assert_eq!(assign_to_key_group(&[42], 128).unwrap(), 0x5F);
        assert!(assign_to_key_group(b"abc", 0).is_err());
        assert!(assign_to_key_group(b"abc", 32_769).is_err());
        assert!(assign_to_key_group(b"abc", 32_768).is_ok());
    }

    #[test]
    fn ranges_match_flink_formulas() {
        // Flink: maxP 128, p 3 -> [0,42], [43,85], [86,127]
        let r: Vec<_> = (0..3)
            .map(|i| key_group_range_for_operator(128, 3, i).unwrap())
            .collect();
        assert_eq!((r[0].start(), r[0].end_exclusive()), (0, 43));
        assert_eq!((r[1].start(), r[1].end_exclusive()), (43, 86));
        assert_eq!((r[2].start(), r[2].end_exclusive()), (86, 128));
    }

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_operator_index() {
        for max_p in [1, 2, 7, 128, 1000, 32_768] {
            for p in [1, 2, 3, 5, 64, 127, 128]
                .into_iter()
                .filter(|p| *p <= max_p)
            {
                let mut next = 0;
                for i in 0..p {
                    let range = key_group_range_for_operator(max_p, p, i).unwrap();
                    assert_eq!(range.start(), next, "maxP {max_p} p {p} i {i}");
                    next = range.end_exclusive();
                    for kg in [range.start(), range.end_exclusive().saturating_sub(1)] {
                        if range.contains(kg) {
                            assert_eq!(operator_index_for_key_group(max_p, p, kg).unwrap(), i);
                        }
                    }
                }
                assert_eq!(next, max_p);
            }
        }
    }

    #[test]
    fn invalid_parallelism_is_rejected() {
        assert!(key_group_range_for_operator(128, 0, 0).is_err());
        assert!(key_group_range_for_operator(128, 129, 0).is_err());
        assert!(key_group_range_for_operator(128, 4, 4).is_err());
        assert!(operator_index_for_key_group(128, 4, 128).is_err());
        assert!(KeyGroupRange::new(5, 4).is_err());
        assert!(KeyGroupRange::new(0, 32_769).is_err());
    }

    #[test]
    fn default_max_parallelism_formula() {
        assert_eq!(default_max_parallelism(0), 128);
        assert_eq!(default_max_parallelism(86), 256); // 86 + 43 = 129 -> 256
        assert_eq!(default_max_parallelism(85), 128); // 85 + 42 = 127 -> 128
        assert_eq!(default_max_parallelism(1000), 2048);
        assert_eq!(default_max_parallelism(u32::MAX), 32_768);
    }

    #[test]
    fn invalid_ranges_do_not_deserialize() {
        let good = crate::codec::encode(&KeyGroupRange::new(3, 9).unwrap()).unwrap();
        assert_eq!(
            crate::codec::decode::<KeyGroupRange>(&good).unwrap(),
            KeyGroupRange::new(3, 9).unwrap()
        );
        let reversed = crate::codec::encode(&(9u32, 3u32)).unwrap();
        assert!(crate::codec::decode::<KeyGroupRange>(&reversed).is_err());
        let too_large = crate::codec::encode(&(0u32, 40_000u32)).unwrap();
        assert!(crate::codec::decode::<KeyGroupRange>(&too_large).is_err());
    }

    #[test]
    fn range_set_operations() {
        let a = KeyGroupRange::new(0, 10).unwrap();
        let b = KeyGroupRange::new(5, 20).unwrap();
        assert_eq!(a.intersection(&b), KeyGroupRange::new(5, 10).unwrap());
        assert!(
            a.intersection(&KeyGroupRange::new(10, 12).unwrap())
                .is_empty()
        );
        assert!(b.contains_range(&KeyGroupRange::new(6, 9).unwrap()));
        assert_eq!(a.index_of(3), Some(3));
        assert_eq!(b.index_of(3), None);
        assert_eq!(format!("{a}"), "KeyGroupRange{0..=9}");
    }
}
