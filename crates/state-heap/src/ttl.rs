//! Time-to-live clean-up on the heap: what an expired entry is, for the
//! incremental clean-up (a few buckets of the state's table on every access
//! to it, and optionally on every record, as Flink's
//! `cleanupIncrementally`) and for snapshots (expired entries are not
//! written, Flink's `cleanupFullSnapshot`).
//!
//! Values of states with a time to live carry an 8-byte stamp
//! ([`state_api::ttl`]): value, reducing and aggregating states one per
//! entry, list states one per element, map states one per map entry.

use std::borrow::Cow;

use state_api::ttl::{StateTtlConfig, alive_part, split_stamp};
use state_api::{KeyedStateBackend, StateKind};

use crate::backend::HeapKeyedStateBackend;
use crate::bytes::ValueBytes;
use crate::table::{Sweep, SweepCursor, Table};
use crate::user_map::UserMap;

/// A state's time to live and "now" for one clean-up pass.
#[derive(Clone, Copy)]
pub(crate) struct Expiry<'a> {
    pub(crate) ttl: &'a StateTtlConfig,
    pub(crate) now: i64,
}

impl Expiry<'_> {
    /// Whether stamped `stored` bytes are expired; malformed ones are kept
    /// (reads report them).
    fn expired(&self, stored: &[u8]) -> bool {
        split_stamp(stored).is_some_and(|(stamp, _)| self.ttl.is_expired(stamp, self.now))
    }

    /// What of a stored value of a state of `kind` is still alive.
    pub(crate) fn alive<'v>(&self, kind: StateKind, stored: &'v [u8]) -> Option<Cow<'v, [u8]>> {
        alive_part(kind, self.ttl, self.now, stored)
    }

    /// A map without its expired entries: `None` when none expired, an
    /// empty map when all did.
    pub(crate) fn alive_map(&self, map: &UserMap) -> Option<UserMap> {
        let expired: Vec<&[u8]> = map
            .iter()
            .filter(|(_, value)| self.expired(value))
            .map(|(user_key, _)| user_key)
            .collect();
        if expired.is_empty() {
            return None;
        }
        let mut alive = map.clone();
        for user_key in expired {
            alive.remove(user_key);
        }
        Some(alive)
    }

    fn sweep_bytes(&self, kind: StateKind, value: &ValueBytes) -> Sweep<ValueBytes> {
        match self.alive(kind, value.as_slice()) {
            None => Sweep::Remove,
            Some(Cow::Borrowed(_)) => Sweep::Keep,
            Some(Cow::Owned(alive)) => Sweep::Replace(ValueBytes::from_slice(&alive)),
        }
    }

    fn sweep_map(&self, map: &UserMap) -> Sweep<UserMap> {
        match self.alive_map(map) {
            None => Sweep::Keep,
            Some(alive) if alive.is_empty() => Sweep::Remove,
            Some(alive) => Sweep::Replace(alive),
        }
    }
}

/// Accesses between two sweeps: each sweep does the work of this many
/// accesses at once (the same number of buckets looked at per access as
/// configured, with a fraction of the per-sweep cost).
pub(crate) const ACCESSES_PER_SWEEP: u32 = 8;

/// The incremental clean-up of one backend: a cursor per state.
#[derive(Debug, Default)]
pub(crate) struct TtlSweeps {
    cursors: Vec<SweepCursor>,
    /// Accesses until the next sweep.
    pub(crate) countdown: u32,
    /// Whether any registered state has incremental clean-up on.
    pub(crate) any: bool,
    /// Per state index: whether it has incremental clean-up on. Only
    /// accesses to such states count down to a sweep, so a state with a
    /// time to live is swept at its configured rate whatever other states
    /// are accessed in between.
    pub(crate) incremental: Vec<bool>,
    /// States whose clean-up also runs on every record.
    pub(crate) per_record: Vec<usize>,
}

impl HeapKeyedStateBackend {
    /// Notes which states clean up incrementally (after a registration).
    pub(crate) fn update_ttl_sweeps(&mut self) {
        let mut any = false;
        let mut per_record = Vec::new();
        let mut incremental = vec![false; self.states.len()];
        for (index, state) in self.states.iter().enumerate() {
            let Some(ttl) = state.ttl.as_ref().filter(|_| state.registered) else {
                continue;
            };
            if ttl.cleanup.incremental_entries > 0 {
                any = true;
                incremental[index] = true;
                if ttl.cleanup.incremental_on_every_record {
                    per_record.push(index);
                }
            }
        }
        self.ttl_sweeps.any = any;
        self.ttl_sweeps.incremental = incremental;
        self.ttl_sweeps.per_record = per_record;
    }

    /// Cleans up a few entries of the state at `index`, if it has a time to
    /// live with incremental clean-up: the share of `accesses` accesses.
    pub(crate) fn sweep_state(&mut self, index: usize, accesses: usize) {
        let (states, sweeps) = (&mut self.states, &mut self.ttl_sweeps);
        let Some(state) = states.by_index_mut(index) else {
            return;
        };
        let Some(ttl) = state.ttl.as_ref() else {
            return;
        };
        let budget = ttl.cleanup.incremental_entries * accesses;
        if budget == 0 || state.meta.ttl.is_none() {
            return;
        }
        let expiry = Expiry {
            ttl,
            now: ttl.now_ms(),
        };
        if sweeps.cursors.len() <= index {
            sweeps.cursors.resize(index + 1, SweepCursor::default());
        }
        let cursor = &mut sweeps.cursors[index];
        let kind = state.meta.kind;
        match &mut state.data {
            Table::Bytes(table) => {
                table.sweep(cursor, budget, |value| expiry.sweep_bytes(kind, value));
            }
            Table::Map(table) => {
                table.sweep(cursor, budget, |map| expiry.sweep_map(map));
            }
            Table::Timers(_) => {}
        }
    }

    /// The clean-up that runs on every record.
    #[cold]
    pub(crate) fn sweep_per_record(&mut self) {
        let per_record = std::mem::take(&mut self.ttl_sweeps.per_record);
        for &index in &per_record {
            self.sweep_state(index, 1);
        }
        self.ttl_sweeps.per_record = per_record;
    }
}

impl HeapKeyedStateBackend {
    /// Bytes of the keys and values in the state tables (without the
    /// tables' own overhead): what the entries physically take, e.g. to
    /// see expired entries go.
    pub fn state_bytes(&self) -> usize {
        let key_groups = self.key_group_range().len();
        let mut total = 0;
        for state in self.states.iter() {
            for index in 0..key_groups {
                total += match &state.data {
                    Table::Bytes(table) => table
                        .entries(index)
                        .map(|(key, value)| key.len() + value.as_slice().len())
                        .sum::<usize>(),
                    Table::Map(table) => table
                        .entries(index)
                        .map(|(key, map)| {
                            let entries: usize =
                                map.iter().map(|(uk, uv)| uk.len() + uv.len()).sum();
                            key.len() + entries
                        })
                        .sum(),
                    Table::Timers(_) => 0,
                };
            }
        }
        total
    }
}
