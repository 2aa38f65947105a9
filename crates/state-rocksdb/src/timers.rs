//! Timer states on RocksDB: a column family ordered by key group and
//! timestamp, and a small in-memory cache of each key group's earliest
//! timers.
//!
//! ```text
//! [key group prefix][timestamp: 8 bytes, big-endian, sign bit flipped][len(key): u32 BE][key][namespace]
//! ```
//!
//! Within a key group, byte order is firing order: timestamp, then key
//! (length, then bytes), then namespace, as
//! [`same_time_order`](state_api::timers::same_time_order) defines it. The
//! value is empty. Snapshots (incremental, native and full) carry the
//! column family like any other, and a rescaling restore clips it by key
//! group like any other.
//!
//! Finding the next timer must not cost a seek per record: per key group
//! the queue keeps up to [`CACHE_SIZE`] of its earliest timers in memory
//! (write-through, as Flink's `RocksDBCachingPriorityQueueSet`), and whether
//! that cache holds all of the key group's timers. A key group whose cache
//! runs empty while timers remain in the column family is refilled with one
//! seek. `heads` orders the key groups by their earliest timer, so the
//! backend's next timer is its first element.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::{ColumnFamily, ReadOptions, WriteOptions};
use state_api::key_group::KeyGroup;
use state_api::timers::Timer;
use state_api::{KeyGroupRange, Result, StateError};

use crate::backend::{Db, db_error};
use crate::keys::KeyLayout;

/// Timers a key group's cache holds at most (Flink's
/// `state.backend.rocksdb.timer-service.cache-size` default).
pub(crate) const CACHE_SIZE: usize = 128;

/// A timer's stored key, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ParsedTimer<'a> {
    pub(crate) key_group: KeyGroup,
    pub(crate) timestamp: i64,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
}

impl KeyLayout {
    /// Appends the stored key of a timer.
    pub(crate) fn write_timer(
        &self,
        out: &mut Vec<u8>,
        key_group: KeyGroup,
        timestamp: i64,
        key: &[u8],
        namespace: &[u8],
    ) {
        self.write_key_group(out, key_group);
        out.extend_from_slice(&state_api::timers::encode_timestamp(timestamp));
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(namespace);
    }

    /// Splits a timer's stored key; `None` when it is malformed.
    pub(crate) fn parse_timer<'a>(&self, stored: &'a [u8]) -> Option<ParsedTimer<'a>> {
        let (key_group, rest) = self.split_key_group(stored)?;
        let (timestamp, rest) = rest.split_at_checked(8)?;
        let timestamp = state_api::timers::decode_timestamp(timestamp)?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (key, namespace) = rest.split_at_checked(len)?;
        Some(ParsedTimer {
            key_group,
            timestamp,
            key,
            namespace,
        })
    }
}

/// Where a queue's timers are stored.
pub(crate) struct TimerStore<'a> {
    pub(crate) db: &'a Db,
    pub(crate) cf: &'a ColumnFamily,
    pub(crate) write: &'a WriteOptions,
}

/// What [`TimerQueue::change`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerChange {
    Add,
    Remove,
}

/// The cached head of one key group.
#[derive(Debug, Default)]
struct KeyGroupCache {
    /// Stored keys of its earliest timers, in firing order.
    timers: BTreeSet<Vec<u8>>,
    /// Whether `timers` holds every timer of the key group.
    complete: bool,
}

impl KeyGroupCache {
    /// Whether `stored` is a timer of the key group: the cache knows when
    /// it is within the cached part, RocksDB otherwise.
    fn holds(&self, store: &TimerStore<'_>, stored: &[u8]) -> Result<bool> {
        if self.covers(stored) {
            return Ok(self.timers.contains(stored));
        }
        let found = store.db.get_pinned_cf(store.cf, stored).map_err(db_error)?;
        Ok(found.is_some())
    }

    /// Whether the cache knows if `stored` is a timer (it is within the
    /// cached part of the key group).
    fn covers(&self, stored: &[u8]) -> bool {
        self.complete
            || self
                .timers
                .last()
                .is_some_and(|last| stored <= last.as_slice())
    }
}

/// One timer state's in-memory part. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct TimerQueue {
    layout: KeyLayout,
    range: KeyGroupRange,
    /// Per key group with timers (absent: none, and known to have none).
    caches: BTreeMap<KeyGroup, KeyGroupCache>,
    /// (earliest timestamp, key group) of every key group with timers.
    heads: BTreeSet<(i64, KeyGroup)>,
    /// Buffer for stored keys.
    scratch: Vec<u8>,
}

impl TimerQueue {
    /// Loads the head of every key group of `range` from `cf`: one seek per
    /// key group with timers.
    pub(crate) fn load(
        store: &TimerStore<'_>,
        layout: KeyLayout,
        range: KeyGroupRange,
    ) -> Result<Self> {
        let mut queue = Self {
            layout,
            range,
            caches: BTreeMap::new(),
            heads: BTreeSet::new(),
            scratch: Vec::new(),
        };
        let (lower, upper) = layout.range_bounds(range);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(upper);
        let mut iter = store.db.raw_iterator_cf_opt(store.cf, read);
        iter.seek(&lower);
        while let Some(stored) = iter.key() {
            let key_group = queue.parse(stored)?.key_group;
            queue.refill(store, key_group, None)?;
            iter.seek(layout.key_group_bound(key_group + 1));
        }
        iter.status().map_err(db_error)?;
        Ok(queue)
    }

    fn parse<'a>(&self, stored: &'a [u8]) -> Result<ParsedTimer<'a>> {
        self.layout
            .parse_timer(stored)
            .filter(|t| self.range.contains(t.key_group))
            .ok_or_else(|| StateError::Backend {
                backend: crate::backend::BACKEND_NAME,
                source: "malformed timer key in a timer column family".into(),
            })
    }

    /// Reads up to [`CACHE_SIZE`] earliest timers of `key_group` from the
    /// column family into its cache; `old_head` was its head in `heads`.
    fn refill(
        &mut self,
        store: &TimerStore<'_>,
        key_group: KeyGroup,
        old_head: Option<i64>,
    ) -> Result<()> {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(self.layout.key_group_bound(key_group));
        read.set_iterate_upper_bound(self.layout.key_group_bound(key_group + 1));
        let mut iter = store.db.raw_iterator_cf_opt(store.cf, read);
        iter.seek_to_first();
        let mut timers = BTreeSet::new();
        while let Some(stored) = iter.key()
            && timers.len() < CACHE_SIZE
        {
            timers.insert(stored.to_vec());
            iter.next();
        }
        let complete = iter.key().is_none();
        iter.status().map_err(db_error)?;
        drop(iter);
        if timers.is_empty() {
            self.caches.remove(&key_group);
        } else {
            self.caches
                .insert(key_group, KeyGroupCache { timers, complete });
        }
        self.update_head(key_group, old_head)
    }

    fn head_of(&self, key_group: KeyGroup) -> Option<i64> {
        let first = self.caches.get(&key_group)?.timers.first()?;
        self.layout.parse_timer(first).map(|t| t.timestamp)
    }

    fn update_head(&mut self, key_group: KeyGroup, old_head: Option<i64>) -> Result<()> {
        let new_head = match self.caches.get(&key_group).and_then(|c| c.timers.first()) {
            Some(first) => Some(self.parse(first)?.timestamp),
            None => None,
        };
        if new_head != old_head {
            if let Some(old) = old_head {
                self.heads.remove(&(old, key_group));
            }
            if let Some(new) = new_head {
                self.heads.insert((new, key_group));
            }
        }
        Ok(())
    }

    /// Adds or removes a timer; returns whether the set changed (`false`:
    /// the timer was there already, or was not there to remove).
    pub(crate) fn change(
        &mut self,
        store: &TimerStore<'_>,
        change: TimerChange,
        key_group: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
    ) -> Result<bool> {
        let mut stored = std::mem::take(&mut self.scratch);
        stored.clear();
        self.layout
            .write_timer(&mut stored, key_group, timestamp, key, namespace);
        let result = match change {
            TimerChange::Add => self.add_stored(store, key_group, &stored),
            TimerChange::Remove => self.remove_stored(store, key_group, &stored),
        };
        self.scratch = stored;
        result
    }

    fn add_stored(
        &mut self,
        store: &TimerStore<'_>,
        key_group: KeyGroup,
        stored: &[u8],
    ) -> Result<bool> {
        let old_head = self.head_of(key_group);
        let cache = self
            .caches
            .entry(key_group)
            .or_insert_with(|| KeyGroupCache {
                timers: BTreeSet::new(),
                // A key group without a cache has no timers.
                complete: true,
            });
        if cache.holds(store, stored)? {
            return Ok(false);
        }
        store
            .db
            .put_cf_opt(store.cf, stored, [], store.write)
            .map_err(db_error)?;
        if cache.covers(stored) {
            cache.timers.insert(stored.to_vec());
            if cache.timers.len() > CACHE_SIZE {
                cache.timers.pop_last();
                cache.complete = false;
            }
        }
        self.update_head(key_group, old_head)?;
        Ok(true)
    }

    fn remove_stored(
        &mut self,
        store: &TimerStore<'_>,
        key_group: KeyGroup,
        stored: &[u8],
    ) -> Result<bool> {
        let old_head = self.head_of(key_group);
        let Some(cache) = self.caches.get_mut(&key_group) else {
            return Ok(false); // no timers in this key group
        };
        if !cache.holds(store, stored)? {
            return Ok(false);
        }
        store
            .db
            .delete_cf_opt(store.cf, stored, store.write)
            .map_err(db_error)?;
        cache.timers.remove(stored);
        self.after_removal(store, key_group, old_head)?;
        Ok(true)
    }

    /// After a cached timer of `key_group` went: refill an emptied cache
    /// that is not complete, drop a complete empty one, move the head.
    fn after_removal(
        &mut self,
        store: &TimerStore<'_>,
        key_group: KeyGroup,
        old_head: Option<i64>,
    ) -> Result<()> {
        match self.caches.get(&key_group) {
            Some(cache) if cache.timers.is_empty() && !cache.complete => {
                self.refill(store, key_group, old_head)
            }
            Some(cache) if cache.timers.is_empty() => {
                self.caches.remove(&key_group);
                self.update_head(key_group, old_head)
            }
            _ => self.update_head(key_group, old_head),
        }
    }

    /// The earliest timestamp over all key groups.
    pub(crate) fn peek(&self) -> Option<i64> {
        self.heads.first().map(|&(timestamp, _)| timestamp)
    }

    /// Removes and returns the earliest timer if it is due at `up_to`.
    pub(crate) fn poll(&mut self, store: &TimerStore<'_>, up_to: i64) -> Result<Option<Timer>> {
        let Some(&(timestamp, key_group)) = self.heads.first() else {
            return Ok(None);
        };
        if timestamp > up_to {
            return Ok(None);
        }
        let Some(stored) = self
            .caches
            .get_mut(&key_group)
            .and_then(|cache| cache.timers.pop_first())
        else {
            return Err(StateError::Backend {
                backend: crate::backend::BACKEND_NAME,
                source: format!("the timer cache of key group {key_group} lost its head").into(),
            });
        };
        store
            .db
            .delete_cf_opt(store.cf, &stored, store.write)
            .map_err(db_error)?;
        let parsed = self.parse(&stored)?;
        let timer = Timer {
            timestamp: parsed.timestamp,
            key: parsed.key.to_vec(),
            namespace: parsed.namespace.to_vec(),
        };
        self.after_removal(store, key_group, Some(timestamp))?;
        Ok(Some(timer))
    }
}
