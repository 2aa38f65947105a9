//! [`UserMap`]: the value of one (key, namespace) of a map state.
//!
//! Two representations, both ordered by user-key bytes (so iteration is in
//! the ascending order the contract requires) and both cheap to clone when a
//! copy-on-write node copy clones the entry:
//!
//! * `Small`: a sorted `Vec` behind an `Arc`, for up to [`SMALL_MAX`] entries.
//!   Most map states hold a few entries per key; this costs one allocation
//!   sized to the entries. The first write after a snapshot copies at most
//!   [`SMALL_MAX`] entries.
//! * `Large`: a persistent `im::OrdMap`, whose writes after a snapshot copy
//!   one B-tree path instead of the whole map. It is not the only
//!   representation because every `OrdMap`, even with one entry, allocates a
//!   full 64-slot node (about 3.6 KiB with our entry size).

use std::sync::Arc;

use crate::bytes::ValueBytes;

/// Entries a `Small` map holds before it becomes `Large`.
pub(crate) const SMALL_MAX: usize = 32;

/// A `Large` map that shrinks below this becomes `Small` again (half of
/// [`SMALL_MAX`], so a map at the boundary does not flip on every write).
const SHRINK_BELOW: usize = SMALL_MAX / 2;

/// The map of one (key, namespace): user key → user value, ordered by bytes.
#[derive(Clone, Debug)]
pub(crate) enum UserMap {
    /// Sorted by user key, no duplicates, at most [`SMALL_MAX`] entries.
    Small(Arc<Vec<(ValueBytes, ValueBytes)>>),
    /// Persistent B-tree for larger maps.
    Large(im::OrdMap<ValueBytes, ValueBytes>),
}

impl UserMap {
    /// A map with one entry.
    pub(crate) fn single(user_key: &[u8], value: &[u8]) -> Self {
        UserMap::Small(Arc::new(vec![(
            ValueBytes::from_slice(user_key),
            ValueBytes::from_slice(value),
        )]))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            UserMap::Small(entries) => entries.len(),
            UserMap::Large(map) => map.len(),
        }
    }

    /// Whether the map has no entry (the table then drops it).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `user_key`.
    pub(crate) fn get(&self, user_key: &[u8]) -> Option<&[u8]> {
        match self {
            UserMap::Small(entries) => entries
                .binary_search_by(|(k, _)| k.as_slice().cmp(user_key))
                .ok()
                .and_then(|i| entries.get(i))
                .map(|(_, v)| v.as_slice()),
            UserMap::Large(map) => map.get(user_key).map(ValueBytes::as_slice),
        }
    }

    /// Inserts or replaces; returns whether the key was present before.
    pub(crate) fn insert(&mut self, user_key: &[u8], value: &[u8]) -> bool {
        match self {
            UserMap::Small(shared) => {
                match shared.binary_search_by(|(k, _)| k.as_slice().cmp(user_key)) {
                    Ok(i) => {
                        // Copies the (small) vector only if a snapshot shares it.
                        if let Some((_, v)) = Arc::make_mut(shared).get_mut(i) {
                            v.set(value);
                        }
                        true
                    }
                    Err(i) if shared.len() < SMALL_MAX => {
                        let entry = (
                            ValueBytes::from_slice(user_key),
                            ValueBytes::from_slice(value),
                        );
                        Arc::make_mut(shared).insert(i, entry);
                        false
                    }
                    Err(_) => {
                        let mut map: im::OrdMap<ValueBytes, ValueBytes> =
                            shared.iter().cloned().collect();
                        map.insert(
                            ValueBytes::from_slice(user_key),
                            ValueBytes::from_slice(value),
                        );
                        *self = UserMap::Large(map);
                        false
                    }
                }
            }
            UserMap::Large(map) => {
                if let Some(v) = map.get_mut(user_key) {
                    v.set(value);
                    return true;
                }
                map.insert(
                    ValueBytes::from_slice(user_key),
                    ValueBytes::from_slice(value),
                );
                false
            }
        }
    }

    /// Removes `user_key`; returns whether it was present.
    pub(crate) fn remove(&mut self, user_key: &[u8]) -> bool {
        match self {
            UserMap::Small(shared) => {
                match shared.binary_search_by(|(k, _)| k.as_slice().cmp(user_key)) {
                    Ok(i) => {
                        Arc::make_mut(shared).remove(i);
                        true
                    }
                    Err(_) => false,
                }
            }
            UserMap::Large(map) => {
                // Check first: `OrdMap::remove` copies the path even for an
                // absent key when a snapshot shares it.
                if !map.contains_key(user_key) {
                    return false;
                }
                map.remove(user_key);
                if map.len() < SHRINK_BELOW {
                    let entries: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    *self = UserMap::Small(Arc::new(entries));
                }
                true
            }
        }
    }

    /// The entries in ascending user-key order.
    pub(crate) fn iter(&self) -> UserMapIter<'_> {
        match self {
            UserMap::Small(entries) => UserMapIter::Small(entries.iter()),
            UserMap::Large(map) => UserMapIter::Large(map.iter()),
        }
    }
}

/// Iterator over a [`UserMap`]'s entries in ascending user-key order.
pub(crate) enum UserMapIter<'a> {
    Small(std::slice::Iter<'a, (ValueBytes, ValueBytes)>),
    Large(im::ordmap::Iter<'a, ValueBytes, ValueBytes>),
}

impl<'a> Iterator for UserMapIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            UserMapIter::Small(iter) => iter.next().map(|(k, v)| (k.as_slice(), v.as_slice())),
            UserMapIter::Large(iter) => iter.next().map(|(k, v)| (k.as_slice(), v.as_slice())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn entries(map: &UserMap) -> Vec<(Vec<u8>, Vec<u8>)> {
        map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn behaves_like_a_btree_map_across_representations() {
        let mut map = UserMap::single(b"seed", b"0");
        let mut model = BTreeMap::from([(b"seed".to_vec(), b"0".to_vec())]);
        // Grow past SMALL_MAX, overwrite, then shrink back below SHRINK_BELOW.
        for i in 0..100u32 {
            let key = (i * 7919 % 101).to_be_bytes().to_vec();
            let value = vec![i as u8; (i % 40) as usize];
            assert_eq!(map.insert(&key, &value), model.insert(key, value).is_some());
            if i == SMALL_MAX as u32 {
                assert!(matches!(map, UserMap::Large(_)), "grows into an OrdMap");
            }
        }
        assert_eq!(entries(&map), model.clone().into_iter().collect::<Vec<_>>());
        for i in 0..95u32 {
            let key = (i * 7919 % 101).to_be_bytes().to_vec();
            assert_eq!(map.remove(&key), model.remove(&key).is_some());
            assert!(!map.remove(&key), "second remove finds nothing");
        }
        assert!(matches!(map, UserMap::Small(_)), "shrinks back");
        assert_eq!(map.len(), model.len());
        assert_eq!(entries(&map), model.clone().into_iter().collect::<Vec<_>>());
        for (k, v) in &model {
            assert_eq!(map.get(k), Some(&v[..]));
        }
        assert_eq!(map.get(b"absent"), None);
    }

    #[test]
    fn writes_do_not_change_a_clone() {
        for size in [3usize, 50] {
            let mut map = UserMap::single(b"k", b"v");
            for i in 0..size {
                map.insert(&[i as u8], b"x");
            }
            let frozen = map.clone();
            let before = entries(&frozen);
            map.insert(b"k", b"changed");
            map.insert(b"new", b"y");
            map.remove(&[0]);
            assert_eq!(entries(&frozen), before, "size {size}");
            assert_ne!(entries(&map), before);
        }
    }
}
