//! Materialization: snapshots of the wrapped backend that later checkpoints
//! build on, and the bookkeeping of which of them checkpoints still use.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use state_api::{
    ChangelogPart, CheckpointOutputStream, CheckpointStorageAccess, FileHandle, KeyedStateHandle,
    Result, SnapshotResult, StateError, StateScope,
};

/// Checkpoint storage that writes exclusive files to shared scope.
///
/// A materialization outlives the checkpoint that triggered it: later
/// checkpoints reference its files until the next one, so they must live in
/// `shared/`, where the checkpoint store's registry deletes them once no
/// retained checkpoint uses them.
pub(crate) struct SharedScope(pub(crate) Arc<dyn CheckpointStorageAccess>);

impl CheckpointStorageAccess for SharedScope {
    fn create_output(
        &self,
        checkpoint_id: u64,
        scope: StateScope,
        name_hint: &str,
    ) -> Result<Box<dyn CheckpointOutputStream>> {
        let scope = match scope {
            StateScope::Exclusive => StateScope::Shared,
            other => other,
        };
        self.0.create_output(checkpoint_id, scope, name_hint)
    }

    fn read(&self, file: &FileHandle) -> Result<Bytes> {
        self.0.read(file)
    }

    fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes> {
        self.0.read_range(file, range)
    }

    fn delete(&self, file: &FileHandle) -> Result<()> {
        self.0.delete(file)
    }

    fn location(&self) -> String {
        self.0.location()
    }
}

/// A materialization whose asynchronous phase runs on its own thread.
pub(crate) struct InFlight {
    pub(crate) id: u64,
    /// Log position the materialization covers: records before it are in it.
    pub(crate) sqn: u64,
    finished: AtomicBool,
    outcome: Mutex<Option<std::result::Result<SnapshotResult, String>>>,
    done: Condvar,
}

impl InFlight {
    pub(crate) fn new(id: u64, sqn: u64) -> Self {
        Self {
            id,
            sqn,
            finished: AtomicBool::new(false),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        }
    }

    pub(crate) fn complete(&self, outcome: Result<SnapshotResult>) {
        *self.outcome.lock() = Some(outcome.map_err(|e| e.to_string()));
        self.finished.store(true, Ordering::Release);
        self.done.notify_all();
    }

    /// Cheap check, for the task thread's hot path.
    #[inline]
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Waits for the outcome.
    ///
    /// # Errors
    /// [`StateError::SnapshotCancelled`] naming the materialization when its
    /// snapshot failed.
    pub(crate) fn wait(&self, checkpoint_id: u64) -> Result<SnapshotResult> {
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            self.done.wait(&mut outcome);
        }
        match outcome.as_ref() {
            Some(Ok(result)) => Ok(result.clone()),
            Some(Err(message)) => Err(StateError::SnapshotCancelled {
                checkpoint_id,
                reason: format!("materialization {} failed: {message}", self.id),
            }),
            None => unreachable!("waited for an outcome"),
        }
    }
}

/// A materialized snapshot that checkpoints build on.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    /// Materialization id (the wrapped backend's checkpoint id).
    pub(crate) id: u64,
    /// Position in this backend's log from which changes are not in it.
    pub(crate) sqn: u64,
    /// The wrapped backend's snapshot.
    pub(crate) handles: Vec<KeyedStateHandle>,
    /// Changes logged by earlier backend instances after `handles` (when
    /// restored from a checkpoint and not materialized since).
    pub(crate) restored_log: Vec<ChangelogPart>,
    /// A completed checkpoint references it: the checkpoint store owns its
    /// files.
    pub(crate) confirmed: bool,
}

impl Base {
    fn files(&self) -> impl Iterator<Item = &FileHandle> {
        self.handles.iter().flat_map(KeyedStateHandle::files)
    }
}

/// What to do with the wrapped backend and storage after the bases
/// changed.
#[derive(Debug, Default)]
pub(crate) struct BaseEvents {
    /// Materializations now confirmed (notify the wrapped backend).
    pub(crate) confirmed: Vec<u64>,
    /// Materializations given up (notify the wrapped backend).
    pub(crate) abandoned: Vec<u64>,
    /// Files of abandoned materializations to delete.
    pub(crate) delete: Vec<FileHandle>,
}

/// The current base, replaced ones still used by pending checkpoints, and
/// the files no checkpoint of this backend can need any more.
#[derive(Default)]
pub(crate) struct Bases {
    current: Option<Base>,
    retired: Vec<Base>,
    /// Pending checkpoints per materialization id.
    users: BTreeMap<u64, usize>,
    /// Files of the newest confirmed base: the wrapped backend may reuse them.
    confirmed_files: HashSet<String>,
    newest_confirmed: Option<u64>,
}

impl Bases {
    pub(crate) fn restored(base: Base) -> Self {
        let confirmed_files = base.files().map(|f| f.path.clone()).collect();
        let newest_confirmed = Some(base.id);
        Self {
            current: Some(base),
            confirmed_files,
            newest_confirmed,
            ..Self::default()
        }
    }

    pub(crate) fn current(&self) -> Option<&Base> {
        self.current.as_ref()
    }

    pub(crate) fn add_user(&mut self, id: u64) {
        *self.users.entry(id).or_default() += 1;
    }

    /// A new materialization succeeded.
    pub(crate) fn install(&mut self, base: Base, events: &mut BaseEvents) {
        if let Some(old) = self.current.replace(base) {
            self.retire(old, events);
        }
    }

    fn retire(&mut self, old: Base, events: &mut BaseEvents) {
        if old.confirmed {
            return; // the checkpoint store owns its files
        }
        if self.users.get(&old.id).copied().unwrap_or(0) > 0 {
            self.retired.push(old);
            return;
        }
        self.dispose(old, events);
    }

    fn dispose(&mut self, old: Base, events: &mut BaseEvents) {
        let current: HashSet<&str> = self
            .current
            .iter()
            .flat_map(Base::files)
            .map(|f| f.path.as_str())
            .collect();
        // Only files this unconfirmed materialization uploaded itself: the
        // wrapped backend reuses only confirmed files.
        for file in old.files() {
            if !self.confirmed_files.contains(&file.path) && !current.contains(file.path.as_str()) {
                events.delete.push(file.clone());
            }
        }
        events.abandoned.push(old.id);
    }

    /// A checkpoint built on materialization `id` completed.
    pub(crate) fn checkpoint_completed(&mut self, id: u64, events: &mut BaseEvents) {
        self.release_user(id);
        let newer_confirmed = self.newest_confirmed.is_some_and(|newest| newest >= id);
        if let Some(base) = self.current.as_mut().filter(|b| b.id == id) {
            if !base.confirmed {
                base.confirmed = true;
                if !newer_confirmed {
                    self.confirmed_files = base.files().map(|f| f.path.clone()).collect();
                    self.newest_confirmed = Some(id);
                    events.confirmed.push(id);
                }
            }
        } else if let Some(index) = self.retired.iter().position(|b| b.id == id) {
            let base = self.retired.swap_remove(index);
            if !newer_confirmed {
                self.confirmed_files = base.files().map(|f| f.path.clone()).collect();
                self.newest_confirmed = Some(id);
                events.confirmed.push(id);
            }
        }
    }

    /// A checkpoint built on materialization `id` was aborted (or will
    /// never complete).
    pub(crate) fn checkpoint_aborted(&mut self, id: u64, events: &mut BaseEvents) {
        self.release_user(id);
        if self.users.contains_key(&id) {
            return;
        }
        if let Some(index) = self.retired.iter().position(|b| b.id == id) {
            let base = self.retired.swap_remove(index);
            self.dispose(base, events);
        }
    }

    fn release_user(&mut self, id: u64) {
        if let Some(count) = self.users.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.users.remove(&id);
            }
        }
    }

    /// Materializations still listed (current and retired), for tests.
    #[cfg(test)]
    pub(crate) fn listed(&self) -> Vec<u64> {
        self.current
            .iter()
            .chain(&self.retired)
            .map(|b| b.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::{KeyGroupRange, KeyGroupsStateHandle};

    fn base(id: u64, files: &[&str]) -> Base {
        let handles = files
            .iter()
            .map(|path| {
                KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
                    backend: "heap".into(),
                    checkpoint_id: id,
                    max_parallelism: 128,
                    key_group_range: KeyGroupRange::new(0, 1).unwrap(),
                    file: FileHandle {
                        path: (*path).into(),
                        scope: StateScope::Shared,
                        size: 1,
                        crc32c: 0,
                    },
                    key_group_offsets: vec![0],
                })
            })
            .collect();
        Base {
            id,
            sqn: id * 10,
            handles,
            restored_log: Vec::new(),
            confirmed: false,
        }
    }

    fn deleted(events: &BaseEvents) -> Vec<&str> {
        events.delete.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn unused_materializations_are_disposed_and_used_ones_kept() {
        let mut bases = Bases::default();
        let mut events = BaseEvents::default();
        bases.install(base(1, &["a"]), &mut events);
        bases.add_user(1);
        bases.checkpoint_completed(1, &mut events);
        assert_eq!(events.confirmed, [1]);

        // 2 is replaced before any checkpoint used it: its own file goes.
        bases.install(base(2, &["a", "b"]), &mut events);
        bases.install(base(3, &["a", "c"]), &mut events);
        assert_eq!(deleted(&events), ["b"], "'a' is confirmed and stays");
        assert_eq!(events.abandoned, [2]);

        // 3 is used by a pending checkpoint when 4 replaces it.
        bases.add_user(3);
        let mut events = BaseEvents::default();
        bases.install(base(4, &["a", "d"]), &mut events);
        assert!(events.delete.is_empty());
        assert_eq!(bases.listed(), [4, 3]);
        bases.checkpoint_aborted(3, &mut events);
        assert_eq!(deleted(&events), ["c"]);
        assert_eq!(bases.listed(), [4]);

        // A confirmed base is never deleted by the backend.
        bases.add_user(4);
        let mut events = BaseEvents::default();
        bases.checkpoint_completed(4, &mut events);
        bases.install(base(5, &["e"]), &mut events);
        assert!(events.delete.is_empty());
        assert_eq!(events.confirmed, [4]);
    }
}
