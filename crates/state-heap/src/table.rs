//! State tables: per state, one copy-on-write hash table per key group.
//!
//! This is the Rust counterpart of Flink's `StateTable` with one
//! `CopyOnWriteStateMap` per key group. Each key group's table sits behind an
//! `Arc`: the synchronous snapshot phase clones the `Arc`s (O(key groups ×
//! states), whatever the number of entries), and the first write to a key
//! group while a snapshot still holds it copies that key group's table
//! (`Arc::make_mut`), so what the snapshot holds never changes.
//!
//! Why not a persistent map (`im::HashMap`) per key group, which would copy
//! only the path to the written entry: its nodes are full 32-slot arrays, so
//! with our entries it took ~620 bytes per entry (against ~90 here) and 3-4
//! dependent cache misses per lookup; side by side at 500k keys it was about
//! twice as slow for reads and writes (see the `state-benches` benchmark).
//! Even fully duplicated while a snapshot is written, flat tables stay far
//! below the persistent maps' steady state. The copy is bounded by one key
//! group (a `1 / max_parallelism` share of the backend's state) and happens
//! at most once per key group per snapshot, after its synchronous phase;
//! reads and writes that miss never copy.

use std::hash::Hasher;
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;
use rustc_hash::FxHasher;
use state_api::descriptor::StateFunction;
use state_api::{StateKind, StateMeta};

use crate::bytes::{KeyBytes, ValueBytes};
use crate::user_map::UserMap;

/// The hash of a composite key in a key group's table.
///
/// The keys are in this process's memory only and were routed to their key
/// group by XXH32 already, so a fast non-keyed hash is enough.
#[inline]
fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    hasher.finish()
}

/// One entry: composite key `varint(len(key)) ++ key ++ namespace` → value.
#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    key: KeyBytes,
    value: V,
}

/// The entries of one state in one key group.
type KeyGroupTable<V> = HashTable<Entry<V>>;

/// One state's entries, one table per key group of the backend's range.
#[derive(Clone, Debug)]
pub(crate) struct StateTable<V> {
    /// Index `kg - range.start()`; shared with snapshots after a clone.
    tables: Vec<Arc<KeyGroupTable<V>>>,
}

impl<V: Clone> StateTable<V> {
    /// An empty table for `key_groups` key groups.
    pub(crate) fn new(key_groups: usize) -> Self {
        Self {
            tables: (0..key_groups).map(|_| Arc::default()).collect(),
        }
    }

    /// The table of the key group at `index` within the range, for reading.
    ///
    /// `index` comes from `KeyGroupRange::index_of` on the backend's range,
    /// which has exactly as many key groups as there are tables.
    #[inline]
    fn table(&self, index: usize) -> &KeyGroupTable<V> {
        &self.tables[index]
    }

    /// The table at `index`, for writing: copies it first if a snapshot
    /// still shares it.
    #[inline]
    fn table_mut(&mut self, index: usize) -> &mut KeyGroupTable<V> {
        Arc::make_mut(&mut self.tables[index])
    }

    /// Whether writing the table at `index` would copy it and `key` is
    /// absent: then a write that only changes an existing entry can stop
    /// without copying.
    #[inline]
    fn shared_and_absent(&mut self, index: usize, hash: u64, key: &[u8]) -> bool {
        let table = &mut self.tables[index];
        Arc::get_mut(table).is_none() && table.find(hash, |e| e.key.eq_slice(key)).is_none()
    }

    /// The value under `key` in the key group at `index`.
    #[inline]
    pub(crate) fn get(&self, index: usize, key: &[u8]) -> Option<&V> {
        self.table(index)
            .find(hash_key(key), |e| e.key.eq_slice(key))
            .map(|e| &e.value)
    }

    /// The value under `key`, for writing (copy-on-write; an absent key
    /// never copies).
    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize, key: &[u8]) -> Option<&mut V> {
        let hash = hash_key(key);
        if self.shared_and_absent(index, hash, key) {
            return None;
        }
        self.table_mut(index)
            .find_mut(hash, |e| e.key.eq_slice(key))
            .map(|e| &mut e.value)
    }

    /// Adds `key` → `value`; the caller knows `key` is absent (it just
    /// looked it up).
    #[inline]
    pub(crate) fn insert_new(&mut self, index: usize, key: &[u8], value: V) {
        let entry = Entry {
            key: KeyBytes::from_slice(key),
            value,
        };
        self.table_mut(index)
            .insert_unique(hash_key(key), entry, |e| hash_key(&e.key));
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, index: usize, key: &[u8], value: V) -> Option<V> {
        let table = self.table_mut(index);
        match table.entry(hash_key(key), |e| e.key.eq_slice(key), |e| hash_key(&e.key)) {
            TableEntry::Occupied(mut occupied) => {
                Some(std::mem::replace(&mut occupied.get_mut().value, value))
            }
            TableEntry::Vacant(vacant) => {
                vacant.insert(Entry {
                    key: KeyBytes::from_slice(key),
                    value,
                });
                None
            }
        }
    }

    /// Removes `key`; returns its value. An absent key never copies.
    pub(crate) fn remove(&mut self, index: usize, key: &[u8]) -> Option<V> {
        let hash = hash_key(key);
        if self.shared_and_absent(index, hash, key) {
            return None;
        }
        match self
            .table_mut(index)
            .find_entry(hash, |e| e.key.eq_slice(key))
        {
            Ok(occupied) => Some(occupied.remove().0.value),
            Err(_) => None,
        }
    }

    /// The (composite key, value) entries of the key group at `index`, in
    /// no particular order.
    pub(crate) fn entries(&self, index: usize) -> impl Iterator<Item = (&[u8], &V)> {
        self.tables
            .get(index)
            .into_iter()
            .flat_map(|t| t.iter())
            .map(|e| (e.key.as_slice(), &e.value))
    }

    /// The composite keys of all key groups.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.tables
            .iter()
            .flat_map(|t| t.iter())
            .map(|e| e.key.as_slice())
    }

    /// Number of (key, namespace) entries.
    pub(crate) fn len(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}

impl StateTable<ValueBytes> {
    /// Sets the value under `key` in the key group at `index`. Overwriting an
    /// existing entry with a small value does not allocate.
    #[inline]
    pub(crate) fn put(&mut self, index: usize, key: &[u8], value: &[u8]) {
        match self.get_mut(index, key) {
            Some(existing) => existing.set(value),
            None => self.insert_new(index, key, ValueBytes::from_slice(value)),
        }
    }

    /// Appends `more` to the value under `key` (creating it).
    pub(crate) fn append(&mut self, index: usize, key: &[u8], more: &[u8]) {
        match self.get_mut(index, key) {
            Some(existing) => existing.append(more),
            None => self.insert_new(index, key, ValueBytes::from_slice(more)),
        }
    }
}

/// The entries of one state: bytes for value, list, reducing and
/// aggregating state, a [`UserMap`] per entry for map state.
#[derive(Clone, Debug)]
pub(crate) enum Table {
    /// Value, list (list encoding), reducing and aggregating state.
    Bytes(StateTable<ValueBytes>),
    /// Map state.
    Map(StateTable<UserMap>),
}

impl Table {
    /// An empty table for a state of `kind`.
    pub(crate) fn new(kind: StateKind, key_groups: usize) -> Self {
        match kind {
            StateKind::Map => Table::Map(StateTable::new(key_groups)),
            StateKind::Value | StateKind::List | StateKind::Reducing | StateKind::Aggregating => {
                Table::Bytes(StateTable::new(key_groups))
            }
        }
    }

    /// Number of (key, namespace) entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Table::Bytes(table) => table.len(),
            Table::Map(table) => table.len(),
        }
    }
}

/// A state the backend holds: registered, or restored and not registered yet.
pub(crate) struct HeapState {
    /// Name, kind and types, as registered or restored.
    pub(crate) meta: StateMeta,
    /// The fold of reducing and aggregating state; set on registration.
    pub(crate) function: Option<Arc<dyn StateFunction>>,
    /// Whether `register_state` handed out its id. Restored states stay
    /// inaccessible (and keep their data for the next snapshot) until then.
    pub(crate) registered: bool,
    /// The entries.
    pub(crate) table: Table,
}

impl HeapState {
    /// An empty state.
    pub(crate) fn new(
        meta: StateMeta,
        function: Option<Arc<dyn StateFunction>>,
        registered: bool,
        key_groups: usize,
    ) -> Self {
        let table = Table::new(meta.kind, key_groups);
        Self {
            meta,
            function,
            registered,
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(table: &StateTable<ValueBytes>, index: usize, key: &[u8]) -> Option<Vec<u8>> {
        table.get(index, key).map(|v| v.to_vec())
    }

    #[test]
    fn put_append_insert_remove() {
        let mut table = StateTable::<ValueBytes>::new(4);
        table.put(1, b"\x01k", b"v1");
        table.put(1, b"\x01k", b"v2");
        table.append(2, b"\x01k", b"a");
        table.append(2, b"\x01k", b"b");
        assert_eq!(table.len(), 2);
        assert_eq!(value(&table, 1, b"\x01k"), Some(b"v2".to_vec()));
        assert_eq!(value(&table, 2, b"\x01k"), Some(b"ab".to_vec()));
        assert_eq!(value(&table, 0, b"\x01k"), None);
        let previous = table.insert(1, b"\x01k", ValueBytes::from_slice(b"v3"));
        assert_eq!(previous.map(|v| v.to_vec()), Some(b"v2".to_vec()));
        assert!(
            table
                .insert(3, b"\x01new", ValueBytes::from_slice(b"n"))
                .is_none()
        );
        assert_eq!(
            table.remove(3, b"\x01new").map(|v| v.to_vec()),
            Some(b"n".to_vec())
        );
        assert!(table.remove(3, b"\x01new").is_none());
        assert_eq!(table.entries(2).count(), 1);
        assert_eq!(table.keys().count(), 2);
    }

    #[test]
    fn writes_after_a_clone_copy_and_leave_the_clone_unchanged() {
        let mut table = StateTable::<ValueBytes>::new(4);
        for i in 0..100u8 {
            table.put(usize::from(i % 4), &[1, i], &[i]);
        }
        table.append(2, b"\x01list", &[7; 40]);
        let frozen = table.clone();
        let frozen_entries: Vec<(Vec<u8>, Vec<u8>)> = frozen
            .entries(2)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();

        // Reads and misses never copy a shared key group.
        assert!(table.get_mut(0, b"absent").is_none());
        assert!(table.remove(0, b"absent").is_none());
        assert!(Arc::ptr_eq(&table.tables[0], &frozen.tables[0]));
        assert_eq!(value(&table, 0, &[1, 0]), Some(vec![0]));
        assert!(Arc::ptr_eq(&table.tables[0], &frozen.tables[0]));

        table.put(2, &[1, 2], b"changed");
        table.append(2, b"\x01list", b"more");
        table.remove(2, &[1, 6]);
        table.put(2, b"\x01fresh", b"x");
        assert!(
            !Arc::ptr_eq(&table.tables[2], &frozen.tables[2]),
            "written key group copied"
        );
        assert!(
            Arc::ptr_eq(&table.tables[3], &frozen.tables[3]),
            "others still shared"
        );
        let after: Vec<(Vec<u8>, Vec<u8>)> = frozen
            .entries(2)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(after, frozen_entries, "the clone is unchanged");
        assert_eq!(value(&table, 2, &[1, 2]), Some(b"changed".to_vec()));
        assert_eq!(table.len(), frozen.len());
    }

    #[test]
    fn table_kind_follows_state_kind() {
        assert!(matches!(Table::new(StateKind::Map, 1), Table::Map(_)));
        for kind in [
            StateKind::Value,
            StateKind::List,
            StateKind::Reducing,
            StateKind::Aggregating,
        ] {
            assert!(matches!(Table::new(kind, 1), Table::Bytes(_)));
        }
    }
}
