//! [`HeapKeyedStateBackend`]: the [`KeyedStateBackend`] on copy-on-write
//! hash tables.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use state_api::backend::EntryVisitor;
use state_api::codec::check_list;
use state_api::descriptor::merge_namespace_values;
use state_api::key_group::{KeyGroup, check_max_parallelism};
use state_api::lifecycle::SnapshotUploads;
use state_api::registry::StateRegistry;
use state_api::timers::{Timer, encode_timestamp};
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    Result, SnapshotOptions, StateError, StateId, StateKind, StateMeta, StateRegistration,
};

use crate::bytes::ValueBytes;
use crate::key::{CurrentKey, KeyGroupAssigner, split_composite_key};
use crate::table::{HeapState, StateTable, Table};
use crate::timers::TimerTable;
use crate::ttl::{ACCESSES_PER_SWEEP, TtlSweeps};
use crate::user_map::UserMap;
use crate::{restore, snapshot};

/// Name of this backend, as [`KeyedStateBackend::backend_name`] and the
/// factory report it.
pub const BACKEND_NAME: &str = "heap";

/// A keyed state backend that keeps all state on the heap in hash tables,
/// paged per key group and state, shared with snapshots and copied on write
/// a page at a time.
///
/// Snapshots are full snapshots in the key-group format
/// ([`state_api::format::key_groups`]): the synchronous phase shares every
/// page with the snapshot (one reference count each, about one per
/// thousand entries; no entry is read); the asynchronous phase writes the
/// frozen pages while this backend keeps serving reads and writes, and the
/// first write to a page after the synchronous phase copies that page (at
/// most 1792 entries, whatever the size of the key group).
///
/// ```
/// use state_api::{KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
/// use state_heap::HeapKeyedStateBackend;
///
/// let mut backend = HeapKeyedStateBackend::new("op", 128, KeyGroupRange::all(128)?)?;
/// let count = backend.value_state(ValueStateDescriptor::<u64>::new("count").with_default(0))?;
/// backend.set_key(&42u64)?;
/// let n = count.value(&mut backend)?.unwrap_or_default();
/// count.update(&mut backend, &(n + 1))?;
/// assert_eq!(count.value(&mut backend)?, Some(1));
/// # Ok::<(), state_api::StateError>(())
/// ```
pub struct HeapKeyedStateBackend {
    operator: String,
    max_parallelism: u32,
    range: KeyGroupRange,
    assigner: KeyGroupAssigner,
    /// Registered and restored states; a `StateId` is an index.
    pub(crate) states: StateRegistry<Table>,
    /// Where the incremental time-to-live clean-up of each state goes on.
    pub(crate) ttl_sweeps: TtlSweeps,
    current: CurrentKey,
    /// Output buffer of fold functions, reused so folds do not allocate.
    scratch: Vec<u8>,
    /// The files of snapshots whose outcome is not known yet.
    uploads: SnapshotUploads,
}

impl fmt::Debug for HeapKeyedStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapKeyedStateBackend")
            .field("operator", &self.operator)
            .field("max_parallelism", &self.max_parallelism)
            .field("key_group_range", &self.range)
            .field(
                "states",
                &self.states.iter().map(|s| &s.meta.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HeapKeyedStateBackend {
    /// An empty backend for `key_group_range` of a job with
    /// `max_parallelism` key groups.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`] for an invalid max parallelism or a
    /// range beyond it.
    pub fn new(
        operator: impl Into<String>,
        max_parallelism: u32,
        key_group_range: KeyGroupRange,
    ) -> Result<Self> {
        check_max_parallelism(max_parallelism)?;
        if key_group_range.end_exclusive() > max_parallelism {
            return Err(StateError::InvalidKeyGroups(format!(
                "{key_group_range} exceeds max parallelism {max_parallelism}"
            )));
        }
        Ok(Self {
            operator: operator.into(),
            max_parallelism,
            range: key_group_range,
            assigner: KeyGroupAssigner::new(max_parallelism),
            states: StateRegistry::default(),
            current: CurrentKey::new(),
            scratch: Vec::new(),
            uploads: SnapshotUploads::default(),
            ttl_sweeps: TtlSweeps::default(),
        })
    }

    /// Builds a backend from `context`, restoring its handles: what
    /// [`HeapBackendFactory`](crate::HeapBackendFactory) does, with the
    /// concrete type.
    ///
    /// # Errors
    /// Invalid contexts ([`BackendContext::validate`]); restore failures:
    /// [`StateError::Corrupt`], [`StateError::FileNotFound`],
    /// [`StateError::Restore`] for handles of other formats or states
    /// restored with conflicting types, storage errors.
    pub fn from_context(context: BackendContext) -> Result<Self> {
        context.validate()?;
        let mut backend = Self::new(
            context.operator.clone(),
            context.max_parallelism,
            context.key_group_range,
        )?;
        restore::restore(
            &mut backend,
            &context.restore,
            &**context.restore_source(),
            &context.skip_restored_states,
        )?;
        Ok(backend)
    }

    /// Number of (key, namespace) entries across all states (a map state's
    /// map counts once), as Flink's `numKeyValueStateEntries`.
    pub fn num_entries(&self) -> usize {
        self.states.iter().map(|s| s.data.len()).sum()
    }

    /// The operator name given at construction.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    pub(crate) fn states(&self) -> &StateRegistry<Table> {
        &self.states
    }

    pub(crate) fn assigner(&self) -> &KeyGroupAssigner {
        &self.assigner
    }

    /// Finds or adds the state `meta` for restore; returns its index.
    ///
    /// # Errors
    /// [`StateError::StateKindMismatch`] / [`StateError::StateTypeMismatch`]
    /// when a state of that name exists with another kind or types.
    pub(crate) fn restored_state(&mut self, meta: &StateMeta) -> Result<usize> {
        let key_groups = self.range.len();
        self.states
            .restore(meta, |meta| Ok(Table::new(meta.kind, key_groups)))
    }

    /// Mutable access to a state's table for restore.
    pub(crate) fn table_mut(&mut self, index: usize) -> Option<&mut Table> {
        self.states.by_index_mut(index).map(|s| &mut s.data)
    }
}

impl HeapKeyedStateBackend {
    /// Every access to a state with a time to live cleans up a few of its
    /// entries (one branch when no state has one).
    #[inline]
    fn on_access(&mut self, state: StateId) {
        if self.ttl_sweeps.any && self.ttl_sweeps.incremental.get(state.0 as usize) == Some(&true) {
            self.ttl_sweeps.countdown = self.ttl_sweeps.countdown.saturating_sub(1);
            if self.ttl_sweeps.countdown == 0 {
                self.ttl_sweeps.countdown = ACCESSES_PER_SWEEP;
                self.sweep_state(state.0 as usize, ACCESSES_PER_SWEEP as usize);
            }
        }
    }
}

/// The bytes table of a value, list, reducing or aggregating state.
#[inline]
fn bytes_table(state: &HeapState, requested: StateKind) -> Result<&StateTable<ValueBytes>> {
    match &state.data {
        Table::Bytes(table) => Ok(table),
        Table::Map(_) | Table::Timers(_) => Err(state.meta.kind_mismatch(requested)),
    }
}

/// The table of a map state.
#[inline]
fn map_table(state: &HeapState) -> Result<&StateTable<UserMap>> {
    match &state.data {
        Table::Map(table) => Ok(table),
        Table::Bytes(_) | Table::Timers(_) => Err(state.meta.kind_mismatch(StateKind::Map)),
    }
}

/// The table of a map state, for writing.
#[inline]
fn map_table_mut(state: &mut HeapState) -> Result<&mut StateTable<UserMap>> {
    match &mut state.data {
        Table::Map(table) => Ok(table),
        Table::Bytes(_) | Table::Timers(_) => Err(state.meta.kind_mismatch(StateKind::Map)),
    }
}

/// The table of a timer state, for writing.
#[inline]
fn timer_table_mut(state: &mut HeapState) -> Result<&mut TimerTable> {
    match &mut state.data {
        Table::Timers(table) => Ok(table),
        _ => Err(state.meta.kind_mismatch(StateKind::Timers)),
    }
}

/// Visits the (key, namespace) of every composite key of `keys`.
fn visit_keys<'a>(
    keys: impl Iterator<Item = &'a [u8]>,
    visitor: &mut EntryVisitor<'_>,
) -> Result<()> {
    for composite in keys {
        let (key, namespace) = split_composite_key(composite).ok_or_else(|| {
            StateError::corrupt("<heap memory>", "malformed composite key in a state table")
        })?;
        if visitor(key, namespace)?.is_break() {
            return Ok(());
        }
    }
    Ok(())
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn register_state(&mut self, registration: StateRegistration) -> Result<StateId> {
        let key_groups = self.range.len();
        let id = self
            .states
            .register(registration, |meta| Ok(Table::new(meta.kind, key_groups)))?;
        self.update_ttl_sweeps();
        Ok(id)
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.states.metas()
    }

    #[inline]
    fn set_current_key(&mut self, encoded_key: &[u8]) -> Result<()> {
        if !self.ttl_sweeps.per_record.is_empty() {
            self.sweep_per_record();
        }
        self.current.set(encoded_key, &self.assigner, self.range)
    }

    fn current_key(&self) -> Option<&[u8]> {
        self.current.key()
    }

    fn current_key_group(&self) -> Option<KeyGroup> {
        self.current.key_group()
    }

    #[inline]
    fn get(&mut self, state: StateId, namespace: &[u8]) -> Result<Option<&[u8]>> {
        self.on_access(state);
        let table = bytes_table(self.states.get(state)?, StateKind::Value)?;
        let (key, index) = self.current.lookup(namespace)?;
        Ok(table.get(index, key).map(ValueBytes::as_slice))
    }

    #[inline]
    fn put(&mut self, state: StateId, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.on_access(state);
        let state = self.states.get_mut(state)?;
        let is_list = state.meta.kind == StateKind::List;
        let Table::Bytes(table) = &mut state.data else {
            return Err(state.meta.kind_mismatch(StateKind::Value));
        };
        let (key, index) = self.current.lookup(namespace)?;
        if is_list {
            if value.is_empty() {
                // The contract: writing an empty list clears.
                table.remove(index, key);
                return Ok(());
            }
            check_list(value)?;
        }
        table.put(index, key, value);
        Ok(())
    }

    fn clear(&mut self, state: StateId, namespace: &[u8]) -> Result<()> {
        self.on_access(state);
        let state = self.states.get_mut(state)?;
        let (key, index) = self.current.lookup(namespace)?;
        match &mut state.data {
            Table::Bytes(table) => {
                table.remove(index, key);
            }
            Table::Map(table) => {
                table.remove(index, key);
            }
            Table::Timers(_) => return Err(state.meta.kind_mismatch(StateKind::Value)),
        }
        Ok(())
    }

    fn list_append(
        &mut self,
        state: StateId,
        namespace: &[u8],
        encoded_elements: &[u8],
    ) -> Result<()> {
        self.on_access(state);
        let state = self.states.get_mut(state)?;
        if state.meta.kind != StateKind::List {
            return Err(state.meta.kind_mismatch(StateKind::List));
        }
        let Table::Bytes(table) = &mut state.data else {
            return Err(state.meta.kind_mismatch(StateKind::List));
        };
        let (key, index) = self.current.lookup(namespace)?;
        check_list(encoded_elements)?;
        if encoded_elements.is_empty() {
            // Nothing to append; an empty entry would break "empty = absent".
            return Ok(());
        }
        table.append(index, key, encoded_elements);
        Ok(())
    }

    fn accumulate(&mut self, state: StateId, namespace: &[u8], input: &[u8]) -> Result<()> {
        self.on_access(state);
        let state = self.states.get_mut(state)?;
        if !state.meta.kind.needs_function() {
            return Err(state.meta.kind_mismatch(StateKind::Reducing));
        }
        let (Table::Bytes(table), Some(function)) = (&mut state.data, &state.function) else {
            return Err(state.meta.kind_mismatch(StateKind::Reducing));
        };
        let (key, index) = self.current.lookup(namespace)?;
        let scratch = &mut self.scratch;
        scratch.clear();
        match table.get_mut(index, key) {
            Some(accumulator) => {
                function.add(Some(accumulator.as_slice()), input, scratch)?;
                accumulator.set(scratch);
            }
            None => {
                function.add(None, input, scratch)?;
                table.insert_new(index, key, ValueBytes::from_slice(scratch));
            }
        }
        Ok(())
    }

    fn merge_namespaces(&mut self, state: StateId, target: &[u8], sources: &[&[u8]]) -> Result<()> {
        self.on_access(state);
        let state = self.states.get_mut(state)?;
        let kind = state.meta.kind;
        if !matches!(
            kind,
            StateKind::List | StateKind::Reducing | StateKind::Aggregating
        ) {
            return Err(state.meta.kind_mismatch(StateKind::List));
        }
        let Table::Bytes(table) = &mut state.data else {
            return Err(state.meta.kind_mismatch(StateKind::List));
        };
        // The current key is needed even when there are no sources.
        let (_, index) = self.current.lookup(target)?;
        let current = &mut self.current;
        let merged =
            merge_namespace_values(kind, state.function.as_deref(), target, sources, |ns| {
                let (key, _) = current.lookup(ns)?;
                Ok(table.get(index, key).map(|v| v.as_slice().to_vec()))
            })?;
        let Some(merged) = merged else {
            return Ok(()); // no source has a value: the target is unchanged
        };
        let (key, _) = self.current.lookup(target)?;
        table.put(index, key, &merged);
        for source in sources {
            if *source != target {
                let (key, _) = self.current.lookup(source)?;
                table.remove(index, key);
            }
        }
        Ok(())
    }

    fn map_get(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<&[u8]>> {
        self.on_access(state);
        let table = map_table(self.states.get(state)?)?;
        let (key, index) = self.current.lookup(namespace)?;
        Ok(table.get(index, key).and_then(|map| map.get(user_key)))
    }

    fn map_put(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.on_access(state);
        let table = map_table_mut(self.states.get_mut(state)?)?;
        let (key, index) = self.current.lookup(namespace)?;
        table.upsert(
            index,
            key,
            |user_map| _ = user_map.insert(user_key, value),
            || UserMap::single(user_key, value),
        );
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        self.on_access(state);
        let table = map_table_mut(self.states.get_mut(state)?)?;
        let (key, index) = self.current.lookup(namespace)?;
        // Look before writing: a write copies the key's page while a
        // snapshot shares it, even when there is nothing to remove.
        if table
            .get(index, key)
            .is_none_or(|m| m.get(user_key).is_none())
        {
            return Ok(());
        }
        let now_empty = table.get_mut(index, key).is_some_and(|m| {
            m.remove(user_key);
            m.is_empty()
        });
        if now_empty {
            // An empty map is an absent entry, as in Flink's heap MapState.
            table.remove(index, key);
        }
        Ok(())
    }

    fn map_for_each(
        &mut self,
        state: StateId,
        namespace: &[u8],
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        self.on_access(state);
        let state = self.states.get(state)?;
        if let Table::Timers(timers) = &state.data {
            // Timers in their canonical form: timestamps as user keys.
            let (key, index) = self.current.key_and_index()?;
            for timestamp in timers.timestamps_of(index, key, namespace) {
                if visitor(&encode_timestamp(timestamp), &[])?.is_break() {
                    break;
                }
            }
            return Ok(());
        }
        let table = map_table(state)?;
        let (key, index) = self.current.lookup(namespace)?;
        if let Some(map) = table.get(index, key) {
            for (user_key, value) in map.iter() {
                if let ControlFlow::Break(()) = visitor(user_key, value)? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn for_each_key_and_namespace(
        &mut self,
        state: StateId,
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        match &self.states.get(state)?.data {
            Table::Bytes(table) => visit_keys(table.keys(), visitor),
            Table::Map(table) => visit_keys(table.keys(), visitor),
            Table::Timers(table) => {
                for (key, namespace) in table.keys_and_namespaces() {
                    if visitor(key, namespace)?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    fn timer_add(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        let table = timer_table_mut(self.states.get_mut(state)?)?;
        let (key, index) = self.current.key_and_index()?;
        Ok(table.add(index, key, namespace, timestamp))
    }

    fn timer_remove(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        let table = timer_table_mut(self.states.get_mut(state)?)?;
        let (key, index) = self.current.key_and_index()?;
        Ok(table.remove(index, key, namespace, timestamp))
    }

    fn timer_peek(&mut self, state: StateId) -> Result<Option<i64>> {
        Ok(timer_table_mut(self.states.get_mut(state)?)?.peek())
    }

    fn timer_poll(&mut self, state: StateId, up_to: i64) -> Result<Option<Timer>> {
        Ok(timer_table_mut(self.states.get_mut(state)?)?.poll(up_to))
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        _options: &SnapshotOptions,
        storage: Arc<dyn CheckpointStorageAccess>,
    ) -> Result<AsyncSnapshot> {
        // Every snapshot type is a full key-group snapshot for this backend
        // (it is also the canonical savepoint format).
        let frozen = snapshot::freeze(self);
        Ok(frozen.into_task(checkpoint_id, storage, self.uploads.clone()))
    }

    // Heap snapshots are full, self-contained files that no later
    // checkpoint shares. A committed one's file belongs to the checkpoint
    // store; an aborted one's is deleted here (in the job's storage it
    // lies in `chk-<n>/`, which the store also removes, but a changelog
    // materialization puts it in `shared/`, where only this finds it).
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.uploads.complete(checkpoint_id);
        // Older snapshots' outcomes are unknown: never deleted here.
        self.uploads.forget_up_to(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.uploads.abort(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_subsumed(&mut self, checkpoint_id: u64) -> Result<()> {
        // Subsumed implies committed.
        self.uploads.forget_up_to(checkpoint_id);
        Ok(())
    }
}

/// Merges `value` into `acc` for a list (concatenation) or with the fold
/// function's `merge`.
#[cfg(test)]
mod tests;
