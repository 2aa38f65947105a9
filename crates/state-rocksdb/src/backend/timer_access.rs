//! The backend's side of timer states: the in-memory queue of each
//! registered timer state (see [`crate::timers`]) and the dump views.

use std::collections::{HashMap, HashSet};

use rocksdb::{ColumnFamily, ReadOptions};
use state_api::backend::EntryVisitor;
use state_api::registry::StateRegistry;
use state_api::timers::{Timer, encode_timestamp};
use state_api::{Result, StateError, StateId, StateKind};

use super::families::ColumnFamilies;
use super::{RocksDbKeyedStateBackend, db_error, prefix_read_options};
use crate::timers::{TimerChange, TimerQueue, TimerStore};

impl RocksDbKeyedStateBackend {
    /// Loads the queue of timer state `id` when it is registered (after a
    /// restore: from the restored column family).
    pub(super) fn load_timer_queue(&mut self, id: StateId) -> Result<()> {
        let state = self.states.get(id)?;
        if state.meta.kind == StateKind::Timers && !self.timers.contains_key(&id) {
            let store = TimerStore {
                db: &self.db,
                cf: self.families.get(id)?,
                write: &self.write_options,
            };
            let queue = TimerQueue::load(&store, self.layout, self.range)?;
            self.timers.insert(id, queue);
        }
        Ok(())
    }

    /// Adds or removes a timer of the current key.
    pub(super) fn change_timer(
        &mut self,
        state: StateId,
        change: TimerChange,
        namespace: &[u8],
        timestamp: i64,
    ) -> Result<bool> {
        let (cf, queue) = timer_queue(&self.families, &self.states, &mut self.timers, state)?;
        let key = self.current.key().ok_or_else(|| StateError::NoCurrentKey)?;
        let key_group = self
            .current
            .key_group()
            .ok_or_else(|| StateError::NoCurrentKey)?;
        let store = TimerStore {
            db: &self.db,
            cf,
            write: &self.write_options,
        };
        queue.change(&store, change, key_group, key, namespace, timestamp)
    }

    pub(super) fn peek_timer(&mut self, state: StateId) -> Result<Option<i64>> {
        let (_, queue) = timer_queue(&self.families, &self.states, &mut self.timers, state)?;
        Ok(queue.peek())
    }

    pub(super) fn poll_timer(&mut self, state: StateId, up_to: i64) -> Result<Option<Timer>> {
        let (cf, queue) = timer_queue(&self.families, &self.states, &mut self.timers, state)?;
        let store = TimerStore {
            db: &self.db,
            cf,
            write: &self.write_options,
        };
        queue.poll(&store, up_to)
    }

    /// `map_for_each` of a timer state: the current key's timers in
    /// `namespace` as (encoded timestamp, empty) entries, in time order. A
    /// scan of the key group: for dumps, not for processing.
    pub(super) fn visit_timers_of_current_key(
        &mut self,
        state: StateId,
        namespace: &[u8],
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let key = self.current.key().ok_or_else(|| StateError::NoCurrentKey)?;
        let key_group = self
            .current
            .key_group()
            .ok_or_else(|| StateError::NoCurrentKey)?;
        let st = self.states.get(state)?;
        let cf = self.families.get(state)?;
        let prefix = self.layout.key_group_bound(key_group);
        let mut iter = self
            .db
            .raw_iterator_cf_opt(cf, prefix_read_options(&prefix));
        iter.seek_to_first();
        while let Some(stored) = iter.key() {
            let timer = self
                .layout
                .parse_timer(stored)
                .ok_or_else(|| self.malformed_timer(&st.meta.name))?;
            if timer.key == key
                && timer.namespace == namespace
                && visitor(&encode_timestamp(timer.timestamp), &[])?.is_break()
            {
                return Ok(());
            }
            iter.next();
        }
        iter.status().map_err(db_error)
    }

    /// `for_each_key_and_namespace` of a timer state: each (key, namespace)
    /// with a timer, once.
    pub(super) fn visit_timer_keys(
        &mut self,
        state: StateId,
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let st = self.states.get(state)?;
        let cf = self.families.get(state)?;
        let (lower, upper) = self.layout.range_bounds(self.range);
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(lower);
        read.set_iterate_upper_bound(upper);
        let mut iter = self.db.raw_iterator_cf_opt(cf, read);
        iter.seek_to_first();
        let mut seen: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
        while let Some(stored) = iter.key() {
            let timer = self
                .layout
                .parse_timer(stored)
                .ok_or_else(|| self.malformed_timer(&st.meta.name))?;
            if seen.insert((timer.key.to_vec(), timer.namespace.to_vec()))
                && visitor(timer.key, timer.namespace)?.is_break()
            {
                return Ok(());
            }
            iter.next();
        }
        iter.status().map_err(db_error)
    }

    fn malformed_timer(&self, state: &str) -> StateError {
        StateError::corrupt(
            self.dir.path().display().to_string(),
            format!("malformed timer key in the column family of '{state}'"),
        )
    }
}

/// The column family and in-memory queue of timer state `state` (a free
/// function: it borrows only these fields of the backend).
fn timer_queue<'a>(
    families: &'a ColumnFamilies,
    states: &StateRegistry<String>,
    timers: &'a mut HashMap<StateId, TimerQueue>,
    state: StateId,
) -> Result<(&'a ColumnFamily, &'a mut TimerQueue)> {
    let st = states.get(state)?;
    match timers.get_mut(&state) {
        Some(queue) => Ok((families.get(state)?, queue)),
        None => Err(st.meta.kind_mismatch(StateKind::Timers)),
    }
}
