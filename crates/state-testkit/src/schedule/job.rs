//! The schedule's job: one backend per key-group range at some
//! parallelism, the workload routed by key group as `keyBy` does, and
//! snapshots and notices for all backends at once.

use std::sync::Arc;

use state_api::conformance::{Dump, StandardStates};
use state_api::key_group::{
    assign_to_key_group, key_group_range_for_operator, operator_index_for_key_group,
};
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    KeyedStateHandle, Result, SnapshotOptions, StateError,
};

use crate::workload::{change, change_timers, contents_with_timers};

/// Max parallelism of the schedules' jobs.
pub const MAX_PARALLELISM: u32 = 128;

/// The backends of one job at one parallelism.
pub(crate) struct Job<B> {
    pub(crate) backends: Vec<B>,
    states: Vec<StandardStates>,
}

impl<B: KeyedStateBackend> Job<B> {
    /// Starts `parallelism` backends, each restoring the handles of
    /// `restore` that overlap its key groups (from `restore_storage` when
    /// given); a fresh job writes the initial entries of keys `0..keys`.
    pub(crate) fn start<C>(
        create: &C,
        storage: &Arc<dyn CheckpointStorageAccess>,
        restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
        parallelism: u32,
        restore: &[KeyedStateHandle],
        keys: u64,
    ) -> Result<Self>
    where
        C: Fn(BackendContext) -> Result<B>,
    {
        let mut job = Self {
            backends: Vec::new(),
            states: Vec::new(),
        };
        for index in 0..parallelism {
            let range = key_group_range_for_operator(MAX_PARALLELISM, parallelism, index)?;
            let handles = state_api::backend::handles_for_range(restore, range);
            let mut backend = create(context(storage, restore_storage.clone(), range, handles))?;
            job.states.push(StandardStates::register(&mut backend));
            job.backends.push(backend);
        }
        if restore.is_empty() {
            for key in 0..keys {
                let index = job.owner(key)?;
                job.states[index].populate(&mut job.backends[index], key);
            }
        }
        Ok(job)
    }

    /// The index of the backend that owns `key`.
    fn owner(&self, key: u64) -> Result<usize> {
        let encoded = state_api::codec::encode(&key)?;
        let key_group = assign_to_key_group(&encoded, MAX_PARALLELISM)?;
        let parallelism = u32::try_from(self.backends.len())
            .map_err(|_| StateError::InvalidKeyGroups("too many backends".into()))?;
        Ok(operator_index_for_key_group(MAX_PARALLELISM, parallelism, key_group)? as usize)
    }

    /// One change to `key` on the backend owning it.
    pub(crate) fn change(&mut self, key: u64, round: u64) -> Result<()> {
        let index = self.owner(key)?;
        change(
            &mut self.backends[index],
            &mut self.states[index],
            key,
            round,
        )?;
        change_timers(&mut self.backends[index], key, round)
    }

    /// The contents of all backends (disjoint by key), timers included.
    pub(crate) fn contents(&mut self) -> Result<Dump> {
        let mut all = Dump::new();
        for backend in &mut self.backends {
            all.extend(contents_with_timers(backend)?);
        }
        Ok(all)
    }

    /// The synchronous phase on every backend; on a failure the backends
    /// that did snapshot are told the snapshot was aborted.
    pub(crate) fn snapshot(
        &mut self,
        id: u64,
        options: &SnapshotOptions,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Result<Vec<AsyncSnapshot>> {
        let mut tasks = Vec::with_capacity(self.backends.len());
        for backend in &mut self.backends {
            match backend.snapshot(id, options, Arc::clone(storage)) {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    drop(tasks);
                    for backend in &mut self.backends {
                        let _ = backend.notify_checkpoint_aborted(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(tasks)
    }

    /// Drops every backend, as a dying process does.
    pub(crate) fn close(&mut self) {
        self.backends.clear();
        self.states.clear();
    }

    /// Runs a notice on every backend.
    pub(crate) fn notify(&mut self, mut notice: impl FnMut(&mut B) -> Result<()>) -> Result<()> {
        for backend in &mut self.backends {
            notice(backend)?;
        }
        Ok(())
    }
}

/// A backend context of `range`.
pub(crate) fn context(
    storage: &Arc<dyn CheckpointStorageAccess>,
    restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
    range: KeyGroupRange,
    restore: Vec<KeyedStateHandle>,
) -> BackendContext {
    BackendContext {
        operator: format!("op-{}", range.start()),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: range,
        restore,
        storage: Arc::clone(storage),
        restore_storage,
        skip_restored_states: Vec::new(),
    }
}

/// Runs every task of a snapshot and collects the handles.
pub(crate) fn run_tasks(tasks: Vec<AsyncSnapshot>) -> Result<Vec<KeyedStateHandle>> {
    let mut handles = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.run() {
            Ok(result) => handles.push(result.handle),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(handles),
    }
}
