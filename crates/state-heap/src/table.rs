//! State tables: per state and key group, a power-of-two number of
//! copy-on-write hash-table pages.
//!
//! This is the Rust counterpart of Flink's `StateTable` with one
//! `CopyOnWriteStateMap` per key group. A key group's entries are spread
//! over `2^k` pages (`k` starts at 0) by hash bits that hashbrown leaves
//! unused ([`page_of`]); each page is a `hashbrown::HashTable` of at most
//! [`PAGE_LIMIT`] entries behind an `Arc`. A lookup costs one indexed load
//! more than a single table per key group (the page's slot), then probes
//! its page as it would have probed the key group's table.
//!
//! Copy-on-write is per page, so what a snapshot costs is, precisely:
//!
//! * Synchronous phase: per state, a clone of the key-group vector, whose
//!   elements are `Arc`s of the key groups' page vectors: one allocation
//!   per state and one reference-count increment per key group. No page or
//!   entry is touched, so it is O(key groups), independent of the number of
//!   entries (see `snapshot_sync` in `state-benches`).
//! * Writes while the snapshot is alive: the first write to a key group
//!   clones its page vector (one pointer per page: `entries / PAGE_LIMIT /
//!   key groups` of them, a few dozen at 10M entries), and the first write
//!   to a page copies that page (`Arc::make_mut`): at most [`PAGE_LIMIT`] entries in 2048
//!   buckets (~80 KiB for small entries; 4096 at most after many removals),
//!   a median of ~8-10 µs whatever the size of the key group (copying a
//!   whole key group took a median of ~80 µs at 1M entries and ~700 µs at
//!   10M, up to 8 ms, growing with it). Later writes to that page copy
//!   nothing. A checkpoint thus copies the pages written while its
//!   snapshot is alive (at most the whole state), in bounded steps.
//! * Never copying: reads; writes and removes of absent keys; the values in
//!   a copied page (a shared value is copied only when it is itself
//!   written, see [`HeapBytes`](crate::bytes::HeapBytes)).
//!
//! Growth: when an insert finds its page full, the key group doubles its
//! pages, moving (or, where a snapshot shares them, cloning) its entries
//! into fresh tables, one more hash bit choosing between page `p` and
//! `p + n`. Pages a snapshot shares are never changed, so a split under a
//! snapshot leaves it intact. Like a hash table's resize, this is linear in
//! the key group's entries and happens once per doubling of the key group
//! (one table per key group rehashed all of it on each resize too). A key
//! group splits only while its pages are half full on average, so keys
//! whose hashes collide on the page bits make their page outgrow the limit
//! instead of multiplying pages. Pages never merge: like hashbrown tables,
//! key groups keep their capacity when entries are removed.
//!
//! Why not a persistent map (`im::HashMap`) per key group, which would copy
//! only the path to the written entry: its nodes are full 32-slot arrays, so
//! with our entries it took ~620 bytes per entry (against ~90 here) and 3-4
//! dependent cache misses per lookup. The first version of this backend was
//! built that way; at 500k keys it measured 265 ns per get and 416 ns per
//! update against 126 ns and 124 ns for flat tables in the same benchmark.
//! Pages bound the copy as a persistent map would (a page instead of a path)
//! and keep flat, cache-friendly tables. `im` is still used for large map
//! state values (see [`UserMap`]), where structural sharing pays.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use state_api::StateKind;
// `triomphe`'s `Arc` has no weak count, so `make_mut` on an unshared page is
// one load where `std`'s does an atomic compare-and-swap (two per write:
// the page vector and the page).
use triomphe::Arc;

use crate::bytes::{KeyBytes, ValueBytes};
use crate::timers::TimerTable;
use crate::user_map::UserMap;

/// Entries a page holds at most (while hashes spread evenly over pages, see
/// `KeyGroupPages::split_spreads`); inserting into a full page splits its
/// key group first.
///
/// 1792 is 7/8 of 2048, hashbrown's capacity of a 2048-bucket table, so a
/// page that fills up splits instead of resizing to 4096 buckets: its
/// bucket array stays at ~82 KiB for 40-byte entries (hashbrown can still
/// resize a page whose free slots went to removed entries' tombstones, to
/// 4096 buckets at most, as it holds at most half of their capacity). Measured at 1M keys over 128
/// key groups (`state-benches`), limits 896 / 1792 / 3584 / 7168 gave a
/// median first write after a snapshot of 3.9 / 8.2 / 17.6 / 48.8 µs and a
/// synchronous phase of 10.3 / 5.5 / 3.3 / 2.0 µs, with lookups unchanged
/// within noise. 1792 keeps the stall under ~10 µs (a few dozen ordinary
/// updates) with a synchronous phase of a few µs per million entries;
/// larger pages cost more than proportionally in stall.
pub(crate) const PAGE_LIMIT: usize = 1792;

/// Hash bits below the page bits (see [`page_of`]).
const PAGE_SHIFT: u32 = 32;

/// Most pages per key group: page bits are hash bits 32..57, below the 7
/// bits hashbrown takes for its control bytes.
const MAX_PAGES: usize = 1 << 25;

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

/// The page of `hash` among `pages` (a power of two) pages.
///
/// hashbrown indexes buckets with the low bits of the hash (bucket count −
/// 1 as a mask: at most 12 bits for a page of [`PAGE_LIMIT`] entries, and
/// it drops bits 32.. on 32-bit targets) and stores the top 7 bits (57..64,
/// or 25..32 on 32-bit targets) in its control bytes. Bits from 32 up are
/// in neither, so choosing the page by them leaves every page with the full
/// entropy for its own bucket index and tags; choosing by low bits would
/// put into each page only keys that agree on their low bucket bits,
/// clustering them. FxHash's final rotation makes bits 32.. the product
/// bits 6.. of a multiply of a well-mixed value, uniform enough here.
#[inline]
fn page_of(hash: u64, pages: usize) -> usize {
    ((hash >> PAGE_SHIFT) as usize) & (pages - 1)
}

/// One entry: composite key `varint(len(key)) ++ key ++ namespace` → value.
#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    key: KeyBytes,
    value: V,
}

/// A page: the entries of one state in one key group whose hash has given
/// page bits. The copy-on-write unit.
type Page<V> = HashTable<Entry<V>>;

/// The pages of one state in one key group.
///
/// Two levels of sharing: a snapshot clones only the outer `Arc` (so the
/// synchronous phase is one reference count per key group, whatever the
/// number of pages), and the first write after it clones the page vector
/// (a few dozen pointers) and then the one page it writes.
#[derive(Clone, Debug)]
struct KeyGroupPages<V> {
    /// A power of two many pages. The page of an entry is [`page_of`] its
    /// hash.
    pages: Arc<Vec<Arc<Page<V>>>>,
}

impl<V: Clone> KeyGroupPages<V> {
    /// One empty page.
    fn new() -> Self {
        Self {
            pages: Arc::new(vec![Arc::default()]),
        }
    }

    /// The page of `hash`, for reading.
    #[inline]
    fn page(&self, hash: u64) -> &Page<V> {
        &self.pages[page_of(hash, self.pages.len())]
    }

    /// The slot of the page of `hash`; writers copy the page through it
    /// (`Arc::make_mut`) if a snapshot shares it.
    #[inline]
    fn slot(&mut self, hash: u64) -> &mut Arc<Page<V>> {
        // A snapshot holding the page vector gets its own copy of it here;
        // the page itself is then shared by both vectors until written.
        let pages = Arc::make_mut(&mut self.pages);
        let count = pages.len();
        &mut pages[page_of(hash, count)]
    }

    /// Whether writing the page of `hash` would copy it and `key` is
    /// absent: then a write that only changes an existing entry can stop
    /// without copying.
    ///
    /// The reference count is only a hint (it can drop concurrently when a
    /// snapshot task finishes); `Arc::make_mut` decides.
    #[inline]
    fn shared_and_absent(&self, hash: u64, key: &[u8]) -> bool {
        let page = &self.pages[page_of(hash, self.pages.len())];
        let shared = Arc::strong_count(&self.pages) != 1 || Arc::strong_count(page) != 1;
        shared && page.find(hash, |e| e.key.eq_slice(key)).is_none()
    }

    /// Adds `entry`, whose key hashes to `hash` and is absent, splitting the
    /// key group first if its page is full.
    #[inline]
    fn insert_unique(&mut self, hash: u64, entry: Entry<V>) {
        if self.page(hash).len() >= PAGE_LIMIT && self.split_spreads() {
            self.split();
        }
        Arc::make_mut(self.slot(hash)).insert_unique(hash, entry, |e| hash_key(&e.key));
    }

    /// Whether doubling the pages is worth it: they are at least half full
    /// on average (with evenly spread hashes they are ~90% full when the
    /// first one fills). Keys whose hashes agree on the page bits (a hash
    /// flood, or a 32-bit target, whose `FxHasher` leaves bits 32.. zero)
    /// would otherwise double the pages on every insert into their full
    /// page; this way that page grows past the limit as a plain table, and
    /// the page count stays below `2 × entries / (PAGE_LIMIT / 2)`.
    #[cold]
    fn split_spreads(&self) -> bool {
        self.pages.len() < MAX_PAGES && self.len() >= self.pages.len() * (PAGE_LIMIT / 2)
    }

    /// Doubles the pages: page `p`'s entries go to new pages `p` and
    /// `p + n` by one more hash bit. Builds fresh tables, so pages a
    /// snapshot shares stay as they are (their entries are cloned; unshared
    /// pages are moved from and freed).
    #[cold]
    #[inline(never)]
    fn split(&mut self) {
        let n = self.pages.len();
        let mut low = Vec::with_capacity(2 * n);
        let mut high = Vec::with_capacity(n);
        // If a snapshot shares the page vector, this clones it, and every
        // page is then shared: its entries are cloned below, not moved.
        let old = Arc::unwrap_or_clone(std::mem::take(&mut self.pages));
        for page in old {
            // Sized for a full page so neither half resizes before it splits
            // again: the same 7/16 to 7/8 load a growing hashbrown table has.
            let mut halves = [
                HashTable::with_capacity(PAGE_LIMIT),
                HashTable::with_capacity(PAGE_LIMIT),
            ];
            let mut place = |entry: Entry<V>| {
                let hash = hash_key(&entry.key);
                let half = usize::from(page_of(hash, 2 * n) >= n);
                halves[half].insert_unique(hash, entry, |e| hash_key(&e.key));
            };
            match Arc::try_unwrap(page) {
                Ok(table) => table.into_iter().for_each(&mut place),
                Err(shared) => shared.iter().cloned().for_each(&mut place),
            }
            let [lo, hi] = halves;
            low.push(Arc::new(lo));
            high.push(Arc::new(hi));
        }
        low.append(&mut high);
        self.pages = Arc::new(low);
    }

    /// The entries, page by page.
    fn iter(&self) -> impl Iterator<Item = &Entry<V>> {
        self.pages.iter().flat_map(|page| page.iter())
    }

    /// Number of entries.
    fn len(&self) -> usize {
        self.pages.iter().map(|page| page.len()).sum()
    }
}

/// Where an incremental clean-up ([`StateTable::sweep`]) goes on: key group,
/// page and bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepCursor {
    key_group: usize,
    page: usize,
    bucket: usize,
}

/// What [`StateTable::sweep`] does with an entry.
pub(crate) enum Sweep<V> {
    /// Leave it.
    Keep,
    /// Remove it.
    Remove,
    /// Replace its value.
    Replace(V),
}

/// One state's entries, pages per key group of the backend's range.
#[derive(Clone, Debug)]
pub(crate) struct StateTable<V> {
    /// Index `kg - range.start()`. Cloning this is the synchronous
    /// snapshot phase: one allocation and one reference count per key
    /// group.
    key_groups: Vec<KeyGroupPages<V>>,
}

impl<V: Clone> StateTable<V> {
    /// An empty table for `key_groups` key groups.
    pub(crate) fn new(key_groups: usize) -> Self {
        Self {
            key_groups: (0..key_groups).map(|_| KeyGroupPages::new()).collect(),
        }
    }

    /// The pages of the key group at `index` within the range.
    ///
    /// `index` comes from `KeyGroupRange::index_of` on the backend's range,
    /// which has exactly as many key groups as `key_groups` has elements.
    #[inline]
    fn key_group(&self, index: usize) -> &KeyGroupPages<V> {
        &self.key_groups[index]
    }

    /// The pages of the key group at `index`, for writing.
    #[inline]
    fn key_group_mut(&mut self, index: usize) -> &mut KeyGroupPages<V> {
        &mut self.key_groups[index]
    }

    /// The value under `key` in the key group at `index`.
    #[inline]
    pub(crate) fn get(&self, index: usize, key: &[u8]) -> Option<&V> {
        let hash = hash_key(key);
        self.key_group(index)
            .page(hash)
            .find(hash, |e| e.key.eq_slice(key))
            .map(|e| &e.value)
    }

    /// The value under `key`, for writing (copies its page if a snapshot
    /// shares it; an absent key never copies).
    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize, key: &[u8]) -> Option<&mut V> {
        self.get_mut_hashed(index, key, hash_key(key))
    }

    /// [`get_mut`](Self::get_mut) of a key whose hash the caller has, so a
    /// write that then inserts hashes the key once.
    #[inline]
    fn get_mut_hashed(&mut self, index: usize, key: &[u8], hash: u64) -> Option<&mut V> {
        let key_group = self.key_group_mut(index);
        if key_group.shared_and_absent(hash, key) {
            return None;
        }
        Arc::make_mut(key_group.slot(hash))
            .find_mut(hash, |e| e.key.eq_slice(key))
            .map(|e| &mut e.value)
    }

    /// Adds `key` → `value`; the caller knows `key` is absent (it just
    /// looked it up).
    #[inline]
    pub(crate) fn insert_new(&mut self, index: usize, key: &[u8], value: V) {
        self.insert_new_hashed(index, key, hash_key(key), value);
    }

    /// [`insert_new`](Self::insert_new) with the key's hash.
    #[inline]
    fn insert_new_hashed(&mut self, index: usize, key: &[u8], hash: u64, value: V) {
        let entry = Entry {
            key: KeyBytes::from_slice(key),
            value,
        };
        self.key_group_mut(index).insert_unique(hash, entry);
    }

    /// Updates the value under `key` in place with `update`, or adds
    /// `create()` when `key` is absent: one probe for either, where a
    /// lookup and then an insert probe twice.
    #[inline]
    pub(crate) fn upsert(
        &mut self,
        index: usize,
        key: &[u8],
        update: impl FnOnce(&mut V),
        create: impl FnOnce() -> V,
    ) {
        let hash = hash_key(key);
        let key_group = self.key_group_mut(index);
        if key_group.page(hash).len() >= PAGE_LIMIT {
            // A full page splits before it takes a new key (`entry` would
            // grow it instead): look up, then add through the split.
            match self.get_mut_hashed(index, key, hash) {
                Some(existing) => update(existing),
                None => self.insert_new_hashed(index, key, hash, create()),
            }
            return;
        }
        // Writing copies a page a snapshot shares; so does adding, so unlike
        // `get_mut` there is nothing to save by looking first. The page has
        // room (or hashbrown makes it, as an insert would).
        let page = Arc::make_mut(key_group.slot(hash));
        match page.entry(hash, |e| e.key.eq_slice(key), |e| hash_key(&e.key)) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                update(&mut occupied.get_mut().value);
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(Entry {
                    key: KeyBytes::from_slice(key),
                    value: create(),
                });
            }
        }
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, index: usize, key: &[u8], value: V) -> Option<V> {
        let hash = hash_key(key);
        match self.get_mut_hashed(index, key, hash) {
            Some(existing) => Some(std::mem::replace(existing, value)),
            None => {
                self.insert_new_hashed(index, key, hash, value);
                None
            }
        }
    }

    /// Removes `key`; returns its value. An absent key never copies.
    pub(crate) fn remove(&mut self, index: usize, key: &[u8]) -> Option<V> {
        let hash = hash_key(key);
        let key_group = self.key_group_mut(index);
        if key_group.shared_and_absent(hash, key) {
            return None;
        }
        match Arc::make_mut(key_group.slot(hash)).find_entry(hash, |e| e.key.eq_slice(key)) {
            Ok(occupied) => Some(occupied.remove().0.value),
            Err(_) => None,
        }
    }

    /// The (composite key, value) entries of the key group at `index`, in
    /// no particular order (snapshots sort them).
    pub(crate) fn entries(&self, index: usize) -> impl Iterator<Item = (&[u8], &V)> {
        self.key_groups
            .get(index)
            .into_iter()
            .flat_map(KeyGroupPages::iter)
            .map(|e| (e.key.as_slice(), &e.value))
    }

    /// The composite keys of all key groups.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.key_groups
            .iter()
            .flat_map(KeyGroupPages::iter)
            .map(|e| e.key.as_slice())
    }

    /// Number of (key, namespace) entries.
    pub(crate) fn len(&self) -> usize {
        self.key_groups.iter().map(KeyGroupPages::len).sum()
    }

    /// Looks at up to `budget` buckets from `cursor` on (wrapping around
    /// at the end), letting `decide` keep, remove or replace each entry:
    /// the incremental clean-up of expired entries. Only a page with an
    /// entry to change is written (and copied if a snapshot shares it).
    /// Returns how many entries it removed.
    pub(crate) fn sweep(
        &mut self,
        cursor: &mut SweepCursor,
        budget: usize,
        mut decide: impl FnMut(&V) -> Sweep<V>,
    ) -> usize {
        let mut removed = 0;
        if self.key_groups.is_empty() {
            return 0;
        }
        let mut steps = 0;
        while steps < budget {
            if cursor.key_group >= self.key_groups.len() {
                *cursor = SweepCursor::default();
            }
            let key_group = &mut self.key_groups[cursor.key_group];
            let Some(page) = key_group.pages.get(cursor.page) else {
                cursor.key_group += 1;
                cursor.page = 0;
                cursor.bucket = 0;
                steps += 1; // an empty range of the table costs a step too
                continue;
            };
            if cursor.bucket >= page.num_buckets() {
                cursor.page += 1;
                cursor.bucket = 0;
                continue;
            }
            let bucket = cursor.bucket;
            cursor.bucket += 1;
            steps += 1;
            let Some(entry) = page.get_bucket(bucket) else {
                continue;
            };
            let action = decide(&entry.value);
            if matches!(action, Sweep::Keep) {
                continue;
            }
            // Copying a shared page keeps its layout: the bucket index
            // still names the entry.
            let pages = Arc::make_mut(&mut key_group.pages);
            let page = Arc::make_mut(&mut pages[cursor.page]);
            match action {
                Sweep::Remove => {
                    if let Ok(occupied) = page.get_bucket_entry(bucket) {
                        occupied.remove();
                        removed += 1;
                    }
                }
                Sweep::Replace(value) => {
                    if let Some(entry) = page.get_bucket_mut(bucket) {
                        entry.value = value;
                    }
                }
                Sweep::Keep => {}
            }
        }
        removed
    }

    /// The address of every page of the key group at `index`, to tell which
    /// pages a write copied (a page a snapshot holds cannot be freed, so
    /// its address cannot be reused meanwhile).
    #[cfg(test)]
    pub(crate) fn page_ids(&self, index: usize) -> Vec<usize> {
        self.key_group(index)
            .pages
            .iter()
            .map(|page| std::ptr::from_ref::<Page<V>>(page) as usize)
            .collect()
    }
}

impl StateTable<ValueBytes> {
    /// Sets the value under `key` in the key group at `index`. Overwriting an
    /// existing entry with a small value does not allocate.
    #[inline]
    pub(crate) fn put(&mut self, index: usize, key: &[u8], value: &[u8]) {
        self.upsert(
            index,
            key,
            |existing| existing.set(value),
            || ValueBytes::from_slice(value),
        );
    }

    /// Appends `more` to the value under `key` (creating it).
    pub(crate) fn append(&mut self, index: usize, key: &[u8], more: &[u8]) {
        self.upsert(
            index,
            key,
            |existing| existing.append(more),
            || ValueBytes::from_slice(more),
        );
    }
}

/// The entries of one state: bytes for value, list, reducing and
/// aggregating state, a [`UserMap`] per entry for map state, a
/// [`TimerTable`] for timers.
#[derive(Clone, Debug)]
pub(crate) enum Table {
    /// Value, list (list encoding), reducing and aggregating state.
    Bytes(StateTable<ValueBytes>),
    /// Map state.
    Map(StateTable<UserMap>),
    /// Timers.
    Timers(TimerTable),
}

impl Table {
    /// An empty table for a state of `kind`.
    pub(crate) fn new(kind: StateKind, key_groups: usize) -> Self {
        match kind {
            StateKind::Map => Table::Map(StateTable::new(key_groups)),
            StateKind::Timers => Table::Timers(TimerTable::new(key_groups)),
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
            Table::Timers(table) => table.len(),
        }
    }
}

/// A state the backend holds (registered, or restored and not registered
/// yet), with its entries.
pub(crate) type HeapState = state_api::registry::RegisteredState<Table>;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn value(table: &StateTable<ValueBytes>, index: usize, key: &[u8]) -> Option<Vec<u8>> {
        table.get(index, key).map(|v| v.to_vec())
    }

    /// A composite-key-like key: a length byte and a little-endian integer.
    fn key(i: usize) -> Vec<u8> {
        let mut key = vec![8];
        key.extend_from_slice(&(i as u64).to_le_bytes());
        key
    }

    /// Each entry of the key group at `index`, sorted.
    fn dump(table: &StateTable<ValueBytes>, index: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = table
            .entries(index)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        entries.sort();
        entries
    }

    /// The layout invariants: a power of two many pages, none above the
    /// limit, every entry in the page its hash selects.
    fn check_pages<V: Clone>(table: &StateTable<V>) {
        for key_group in &table.key_groups {
            let n = key_group.pages.len();
            assert!(n.is_power_of_two(), "{n} pages");
            for (p, page) in key_group.pages.iter().enumerate() {
                assert!(page.len() <= PAGE_LIMIT, "page of {} entries", page.len());
                for entry in page.iter() {
                    assert_eq!(page_of(hash_key(&entry.key), n), p, "entry in its page");
                }
            }
        }
    }

    /// Which `(key group, page)` slots hold other pages than at `before`.
    fn copied_pages(table: &StateTable<ValueBytes>, before: &[Vec<usize>]) -> Vec<(usize, usize)> {
        let mut copied = Vec::new();
        for (kg, ids) in before.iter().enumerate() {
            let now = table.page_ids(kg);
            assert_eq!(now.len(), ids.len(), "no split");
            for (page, (a, b)) in ids.iter().zip(&now).enumerate() {
                if a != b {
                    copied.push((kg, page));
                }
            }
        }
        copied
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
        let frozen_entries = dump(&frozen, 2);
        let shared = |table: &StateTable<ValueBytes>, kg: usize| {
            Arc::ptr_eq(
                &table.key_groups[kg].pages[0],
                &frozen.key_groups[kg].pages[0],
            )
        };

        // Reads and misses never copy a shared page.
        assert!(table.get_mut(0, b"absent").is_none());
        assert!(table.remove(0, b"absent").is_none());
        assert!(shared(&table, 0));
        assert_eq!(value(&table, 0, &[1, 0]), Some(vec![0]));
        assert!(shared(&table, 0));

        table.put(2, &[1, 2], b"changed");
        table.append(2, b"\x01list", b"more");
        table.remove(2, &[1, 6]);
        table.put(2, b"\x01fresh", b"x");
        assert!(!shared(&table, 2), "written page copied");
        assert!(shared(&table, 3), "others still shared");
        assert_eq!(dump(&frozen, 2), frozen_entries, "the clone is unchanged");
        assert_eq!(value(&table, 2, &[1, 2]), Some(b"changed".to_vec()));
        assert_eq!(table.len(), frozen.len());
    }

    #[test]
    fn a_write_after_a_snapshot_copies_exactly_one_page_of_one_key_group() {
        let mut table = StateTable::<ValueBytes>::new(4);
        let n = 4 * PAGE_LIMIT;
        for i in 0..n {
            table.put(1, &key(i), b"v");
        }
        for i in 0..100 {
            table.put(i % 4, &key(n + i), b"w");
        }
        check_pages(&table);
        let before: Vec<Vec<usize>> = (0..4).map(|kg| table.page_ids(kg)).collect();
        assert!(before[1].len() >= 4, "{} pages", before[1].len());
        let frozen = table.clone();

        // Reads, misses and removes of absent keys copy nothing.
        assert_eq!(value(&table, 1, &key(7)), Some(b"v".to_vec()));
        assert!(table.get_mut(1, &key(n + 1000)).is_none());
        assert!(table.remove(1, &key(n + 1000)).is_none());
        assert!(copied_pages(&table, &before).is_empty());

        table.put(1, &key(7), b"changed");
        let pages = before[1].len();
        let written = page_of(hash_key(&key(7)), pages);
        assert_eq!(copied_pages(&table, &before), vec![(1, written)]);
        for (p, page) in table.key_groups[1].pages.iter().enumerate() {
            assert_eq!(
                Arc::ptr_eq(page, &frozen.key_groups[1].pages[p]),
                p != written
            );
        }

        // Further writes to that page do not copy again; a write to another
        // page of the key group copies that page.
        let same = (0..n)
            .find(|&i| i != 7 && page_of(hash_key(&key(i)), pages) == written)
            .expect("a page holds many keys");
        table.put(1, &key(same), b"again");
        table.remove(1, &key(same));
        assert_eq!(copied_pages(&table, &before), vec![(1, written)]);
        let other = (0..n)
            .find(|&i| page_of(hash_key(&key(i)), pages) != written)
            .expect("keys spread over pages");
        table.put(1, &key(other), b"other");
        let mut expected = vec![(1, written), (1, page_of(hash_key(&key(other)), pages))];
        expected.sort_unstable();
        assert_eq!(copied_pages(&table, &before), expected);

        assert_eq!(value(&frozen, 1, &key(7)), Some(b"v".to_vec()));
        assert_eq!(value(&frozen, 1, &key(same)), Some(b"v".to_vec()));
        assert_eq!(frozen.len(), n + 100);
        assert_eq!(value(&table, 1, &key(7)), Some(b"changed".to_vec()));
        assert_eq!(table.len(), n + 99);
    }

    #[test]
    fn a_split_under_a_snapshot_leaves_it_intact() {
        let mut table = StateTable::<ValueBytes>::new(2);
        for i in 0..PAGE_LIMIT {
            table.put(0, &key(i), &[1; 20]); // shared (non-inline) values too
        }
        assert_eq!(table.page_ids(0).len(), 1, "full, not split yet");
        let frozen = table.clone();
        let frozen_ids = frozen.page_ids(0);
        let frozen_entries = dump(&frozen, 0);

        table.put(0, &key(PAGE_LIMIT), b"new"); // splits
        table.put(0, &key(0), b"changed");
        table.append(0, &key(1), b"more");
        table.remove(0, &key(2));
        assert_eq!(table.page_ids(0).len(), 2);
        check_pages(&table);
        check_pages(&frozen);
        assert_eq!(frozen.page_ids(0), frozen_ids, "the snapshot's pages");
        assert_eq!(dump(&frozen, 0), frozen_entries, "and their entries");
        assert_eq!(table.len(), PAGE_LIMIT);
        assert_eq!(value(&table, 0, &key(0)), Some(b"changed".to_vec()));
        let mut appended = vec![1; 20];
        appended.extend_from_slice(b"more");
        assert_eq!(value(&table, 0, &key(1)), Some(appended));
    }

    #[test]
    fn pages_split_evenly() {
        let mut table = StateTable::<ValueBytes>::new(1);
        let n = 20 * PAGE_LIMIT;
        for i in 0..n {
            table.put(0, &key(i), b"v");
        }
        check_pages(&table);
        let pages = &table.key_groups[0].pages;
        assert!(pages.len() >= 16, "{} pages", pages.len());
        let average = n / pages.len();
        for page in pages.iter() {
            assert!(page.len() > average * 3 / 4, "{} vs {average}", page.len());
        }
    }

    #[test]
    fn keys_on_one_page_do_not_multiply_pages() {
        // Keys whose page bits agree (as a hash flood would make them).
        let colliding: Vec<Vec<u8>> = (0..)
            .map(key)
            .filter(|k| (hash_key(k) >> PAGE_SHIFT) & 0xFF == 0)
            .take(4 * PAGE_LIMIT)
            .collect();
        let mut table = StateTable::<ValueBytes>::new(1);
        for k in &colliding {
            table.put(0, k, b"v");
        }
        let pages = &table.key_groups[0].pages;
        assert!(pages.len() <= 16, "{} pages", pages.len());
        assert_eq!(pages[0].len(), colliding.len(), "one overfull page");
        assert_eq!(table.len(), colliding.len());
        for k in &colliding {
            assert_eq!(value(&table, 0, k), Some(b"v".to_vec()));
        }
    }

    /// xorshift64*: deterministic operations without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    type Model = HashMap<(usize, Vec<u8>), Vec<u8>>;

    /// `table` holds exactly the entries of `model`, in the right pages.
    fn check_against(table: &StateTable<ValueBytes>, model: &Model, key_groups: usize) {
        check_pages(table);
        assert_eq!(table.len(), model.len());
        for kg in 0..key_groups {
            let mut expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|((k, _), _)| *k == kg)
                .map(|((_, key), value)| (key.clone(), value.clone()))
                .collect();
            expected.sort();
            assert_eq!(dump(table, kg), expected, "key group {kg}");
        }
        for ((kg, key), value) in model {
            assert_eq!(table.get(*kg, key).map(|v| v.as_slice()), Some(&value[..]));
        }
    }

    #[test]
    fn random_operations_match_a_hash_map_across_splits_and_snapshots() {
        const KEY_GROUPS: usize = 3;
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let mut table = StateTable::<ValueBytes>::new(KEY_GROUPS);
        let mut model = Model::new();
        // Live snapshots with their model and page count when taken.
        let mut snapshots: Vec<(StateTable<ValueBytes>, Model, usize)> = Vec::new();
        let mut splits_under_a_snapshot = 0;
        for step in 0..60_000 {
            // Key group 0 grows through several splits; the others stay small.
            let kg = [0, 0, 0, 1, 2][rng.below(5)];
            let span = if kg == 0 { 6 * PAGE_LIMIT } else { 300 };
            let k = key(rng.below(span));
            let v: Vec<u8> = vec![step as u8; [1, 5, 14, 15, 40][rng.below(5)]];
            let model_key = (kg, k.clone());
            match rng.below(10) {
                0..=4 => {
                    table.put(kg, &k, &v);
                    model.insert(model_key, v);
                }
                5 => {
                    table.append(kg, &k, &v);
                    model.entry(model_key).or_default().extend_from_slice(&v);
                }
                6 => {
                    let previous = table.insert(kg, &k, ValueBytes::from_slice(&v));
                    assert_eq!(previous.map(|p| p.to_vec()), model.insert(model_key, v));
                }
                7 => {
                    let mutated = table.get_mut(kg, &k).map(|value| value.set(&v));
                    let expected = model.get_mut(&model_key).map(|value| *value = v);
                    assert_eq!(mutated.is_some(), expected.is_some());
                }
                _ => {
                    let removed = table.remove(kg, &k).map(|r| r.to_vec());
                    assert_eq!(removed, model.remove(&model_key));
                }
            }
            if step % 2_500 == 0 {
                check_against(&table, &model, KEY_GROUPS);
                if snapshots.len() == 3 {
                    // The oldest snapshot is released (as a finished task).
                    let (frozen, frozen_model, pages) = snapshots.remove(0);
                    if table.page_ids(0).len() > pages {
                        splits_under_a_snapshot += 1;
                    }
                    check_against(&frozen, &frozen_model, KEY_GROUPS);
                }
                snapshots.push((table.clone(), model.clone(), table.page_ids(0).len()));
            }
        }
        check_against(&table, &model, KEY_GROUPS);
        for (frozen, frozen_model, pages) in &snapshots {
            assert_eq!(frozen.page_ids(0).len(), *pages);
            check_against(frozen, frozen_model, KEY_GROUPS);
        }
        assert!(table.page_ids(0).len() >= 4, "key group 0 split");
        assert!(
            splits_under_a_snapshot > 0,
            "splits happened under snapshots"
        );
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
