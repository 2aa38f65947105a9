//! Timer states on the heap: per key group an ordered set of timers, and an
//! index of each key group's earliest timer.
//!
//! The sets are `im::OrdSet`s (persistent B-trees): a snapshot shares them
//! in O(1) per key group, and a write after it copies only the path to the
//! timer it changes, so timers never make the synchronous phase longer than
//! the key-value tables do. The order within a set is (timestamp, key,
//! namespace) as [`same_time_order`] defines it, so a set's first timer is
//! its key group's next one and the set doubles as the index for deletion
//! (one timer per (key, namespace, timestamp)). `heads` holds (earliest
//! timestamp, key group) of every key group with timers: the backend's next
//! timer is its first element, found without looking at any key group.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use im::OrdSet;
use state_api::timers::{Timer, same_time_order};

/// One timer of one key group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeapTimer {
    pub(crate) timestamp: i64,
    pub(crate) key: Arc<[u8]>,
    pub(crate) namespace: Arc<[u8]>,
}

impl HeapTimer {
    fn new(timestamp: i64, key: &[u8], namespace: &[u8]) -> Self {
        Self {
            timestamp,
            key: Arc::from(key),
            namespace: Arc::from(namespace),
        }
    }

    fn to_timer(&self) -> Timer {
        Timer {
            timestamp: self.timestamp,
            key: self.key.to_vec(),
            namespace: self.namespace.to_vec(),
        }
    }
}

impl Ord for HeapTimer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.timestamp.cmp(&other.timestamp).then_with(|| {
            same_time_order((&self.key, &self.namespace), (&other.key, &other.namespace))
        })
    }
}

impl PartialOrd for HeapTimer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The timers of one timer state, per key group (by index in the backend's
/// range). See the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct TimerTable {
    key_groups: Vec<OrdSet<HeapTimer>>,
    heads: BTreeSet<(i64, usize)>,
    len: usize,
}

impl TimerTable {
    pub(crate) fn new(key_groups: usize) -> Self {
        Self {
            key_groups: vec![OrdSet::new(); key_groups],
            heads: BTreeSet::new(),
            len: 0,
        }
    }

    /// Number of timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds a timer to key group `index`; `false` if it was there.
    pub(crate) fn add(
        &mut self,
        index: usize,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
    ) -> bool {
        let Some(set) = self.key_groups.get_mut(index) else {
            return false;
        };
        let timer = HeapTimer::new(timestamp, key, namespace);
        if set.contains(&timer) {
            return false;
        }
        let old_head = set.get_min().map(|t| t.timestamp);
        set.insert(timer);
        self.len += 1;
        self.update_head(index, old_head);
        true
    }

    /// Removes a timer of key group `index`; `false` if it was not there.
    pub(crate) fn remove(
        &mut self,
        index: usize,
        key: &[u8],
        namespace: &[u8],
        timestamp: i64,
    ) -> bool {
        let Some(set) = self.key_groups.get_mut(index) else {
            return false;
        };
        let timer = HeapTimer::new(timestamp, key, namespace);
        if !set.contains(&timer) {
            // Looking first: a removal copies the path even when the timer
            // is absent, which a snapshot sharing the set would pay for.
            return false;
        }
        let old_head = set.get_min().map(|t| t.timestamp);
        set.remove(&timer);
        self.len -= 1;
        self.update_head(index, old_head);
        true
    }

    /// The earliest timestamp over all key groups.
    pub(crate) fn peek(&self) -> Option<i64> {
        self.heads.first().map(|&(timestamp, _)| timestamp)
    }

    /// Removes and returns the earliest timer if it is due at `up_to`.
    pub(crate) fn poll(&mut self, up_to: i64) -> Option<Timer> {
        let &(timestamp, index) = self.heads.first()?;
        if timestamp > up_to {
            return None;
        }
        let set = self.key_groups.get_mut(index)?;
        let timer = set.remove_min()?;
        self.len -= 1;
        self.update_head(index, Some(timestamp));
        Some(timer.to_timer())
    }

    /// Keeps `heads` right after key group `index`, whose earliest timestamp
    /// was `old_head`, changed.
    fn update_head(&mut self, index: usize, old_head: Option<i64>) {
        let new_head = self
            .key_groups
            .get(index)
            .and_then(|set| set.get_min())
            .map(|t| t.timestamp);
        if new_head == old_head {
            return;
        }
        if let Some(old) = old_head {
            self.heads.remove(&(old, index));
        }
        if let Some(new) = new_head {
            self.heads.insert((new, index));
        }
    }

    /// The timers of key group `index`, in order.
    pub(crate) fn timers(&self, index: usize) -> impl Iterator<Item = &HeapTimer> {
        self.key_groups
            .get(index)
            .into_iter()
            .flat_map(|set| set.iter())
    }

    /// The timestamps of `key`'s timers in `namespace` in key group
    /// `index`, in order (a scan of the key group: for dumps, not for
    /// processing).
    pub(crate) fn timestamps_of<'a>(
        &'a self,
        index: usize,
        key: &'a [u8],
        namespace: &'a [u8],
    ) -> impl Iterator<Item = i64> + 'a {
        self.timers(index)
            .filter(move |t| &*t.key == key && &*t.namespace == namespace)
            .map(|t| t.timestamp)
    }

    /// Every (key, namespace) with a timer, once each.
    pub(crate) fn keys_and_namespaces(&self) -> Vec<(&[u8], &[u8])> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for set in &self.key_groups {
            for timer in set {
                let pair = (&*timer.key, &*timer.namespace);
                if seen.insert(pair) {
                    out.push(pair);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_in_time_order_over_key_groups_once_each() {
        let mut table = TimerTable::new(3);
        assert!(table.add(2, b"k2", b"", 30));
        assert!(table.add(0, b"k0", b"", 20));
        assert!(table.add(1, b"k1", b"", 20));
        assert!(!table.add(1, b"k1", b"", 20), "a duplicate is one timer");
        assert!(table.add(0, b"k0", b"n", 10));
        assert_eq!(table.len(), 4);
        assert_eq!(table.peek(), Some(10));
        assert!(table.remove(0, b"k0", b"n", 10));
        assert!(!table.remove(0, b"k0", b"n", 10));
        let mut fired = Vec::new();
        while let Some(timer) = table.poll(25) {
            fired.push((timer.timestamp, timer.key));
        }
        // Equal timestamps: the lower key group first.
        assert_eq!(fired, vec![(20, b"k0".to_vec()), (20, b"k1".to_vec())]);
        assert_eq!(table.peek(), Some(30));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_snapshot_copy_keeps_its_timers() {
        let mut table = TimerTable::new(1);
        table.add(0, b"k", b"", 1);
        let frozen = table.clone();
        table.poll(i64::MAX);
        table.add(0, b"k", b"", 2);
        let frozen: Vec<i64> = frozen.timers(0).map(|t| t.timestamp).collect();
        assert_eq!(frozen, vec![1]);
    }
}
