//! Materialization: snapshots of the wrapped backend that later checkpoints
//! build on, and the bookkeeping of which of them checkpoints still use.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    started: Instant,
    finished: AtomicBool,
    /// The outcome and how long the materialization took.
    outcome: Mutex<Option<(std::result::Result<SnapshotResult, String>, Duration)>>,
    done: Condvar,
}

impl InFlight {
    pub(crate) fn new(id: u64, sqn: u64) -> Self {
        Self {
            id,
            sqn,
            started: Instant::now(),
            finished: AtomicBool::new(false),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        }
    }

    pub(crate) fn complete(&self, outcome: Result<SnapshotResult>) {
        let took = self.started.elapsed();
        *self.outcome.lock() = Some((outcome.map_err(|e| e.to_string()), took));
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
            Some((Ok(result), _)) => Ok(result.clone()),
            Some((Err(message), _)) => Err(StateError::SnapshotCancelled {
                checkpoint_id,
                reason: format!("materialization {} failed: {message}", self.id),
            }),
            None => unreachable!("waited for an outcome"),
        }
    }

    /// How long the finished materialization took (zero while it runs).
    pub(crate) fn took(&self) -> Duration {
        self.outcome
            .lock()
            .as_ref()
            .map_or(Duration::ZERO, |(_, took)| *took)
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
    /// A checkpoint whose outcome will not be learned references it: it
    /// may be committed, so its files are never deleted here.
    pub(crate) kept: bool,
}

/// What to tell the wrapped backend after the bases changed. The wrapper
/// never deletes a materialization's files itself: only the wrapped backend
/// knows which of them its snapshot uploaded and which it reused from an
/// earlier one (RocksDB's incremental snapshots), and it deletes its own
/// uploads when told a snapshot was aborted.
#[derive(Debug, Default)]
pub(crate) struct BaseEvents {
    /// Materializations now confirmed (notify the wrapped backend).
    pub(crate) confirmed: Vec<u64>,
    /// Materializations no checkpoint that may be committed references
    /// (notify the wrapped backend: aborted).
    pub(crate) abandoned: Vec<u64>,
}

/// The current base, replaced ones still used by pending checkpoints, and
/// the bookkeeping that decides when a materialization is given up.
///
/// A materialization is given up (its snapshot aborted in the wrapped
/// backend, which deletes its uploads) only when no checkpoint that may be
/// committed references it: it was replaced and every checkpoint built on
/// it was aborted, or none was ever built on it. One built on by a
/// completed checkpoint belongs to the checkpoint store; one built on by a
/// checkpoint whose outcome is unknown is kept for the store's garbage
/// collection.
#[derive(Default)]
pub(crate) struct Bases {
    current: Option<Base>,
    retired: Vec<Base>,
    /// Pending checkpoints per materialization id.
    users: BTreeMap<u64, usize>,
    newest_confirmed: Option<u64>,
}

impl Bases {
    pub(crate) fn restored(base: Base) -> Self {
        let newest_confirmed = Some(base.id);
        Self {
            current: Some(base),
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
        if old.confirmed || old.kept {
            return; // the checkpoint store owns its files, or will collect them
        }
        if self.users.get(&old.id).copied().unwrap_or(0) > 0 {
            self.retired.push(old);
            return;
        }
        events.abandoned.push(old.id);
    }

    /// A checkpoint built on materialization `id` completed.
    pub(crate) fn checkpoint_completed(&mut self, id: u64, events: &mut BaseEvents) {
        self.release_user(id);
        let base = match self.current.as_mut().filter(|b| b.id == id) {
            Some(base) => Some(base),
            None => self.retired.iter_mut().find(|b| b.id == id),
        };
        let Some(base) = base else { return };
        if base.confirmed {
            return;
        }
        base.confirmed = true;
        if self.newest_confirmed.is_none_or(|newest| newest < id) {
            self.newest_confirmed = Some(id);
            events.confirmed.push(id);
        }
        self.retired.retain(|b| !(b.id == id && b.confirmed));
    }

    /// A checkpoint built on materialization `id` was aborted.
    pub(crate) fn checkpoint_aborted(&mut self, id: u64, events: &mut BaseEvents) {
        self.release_user(id);
        if self.users.contains_key(&id) {
            return;
        }
        if let Some(index) = self.retired.iter().position(|b| b.id == id) {
            let base = self.retired.swap_remove(index);
            self.retire(base, events);
        }
    }

    /// A checkpoint built on materialization `id` will never be heard of
    /// again, and may be committed: the materialization is kept.
    pub(crate) fn checkpoint_outcome_unknown(&mut self, id: u64) {
        self.release_user(id);
        if let Some(base) = self.current.as_mut().filter(|b| b.id == id) {
            base.kept = true;
        }
        if let Some(index) = self.retired.iter().position(|b| b.id == id) {
            self.retired[index].kept = true;
            if !self.users.contains_key(&id) {
                self.retired.swap_remove(index);
            }
        }
    }

    /// The backend goes away: gives up every materialization no checkpoint
    /// that may be committed references.
    pub(crate) fn close(&mut self, events: &mut BaseEvents) {
        if let Some(current) = self.current.take() {
            self.retire(current, events);
        }
        // Retired ones have users: pending checkpoints whose outcome this
        // backend will not learn any more. Kept.
        self.retired.clear();
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
            kept: false,
        }
    }

    #[test]
    fn unused_materializations_are_abandoned_and_used_ones_kept() {
        let mut bases = Bases::default();
        let mut events = BaseEvents::default();
        bases.install(base(1, &["a"]), &mut events);
        bases.add_user(1);
        bases.checkpoint_completed(1, &mut events);
        assert_eq!(events.confirmed, [1]);

        // 2 is replaced before any checkpoint used it: given up.
        bases.install(base(2, &["a", "b"]), &mut events);
        bases.install(base(3, &["a", "c"]), &mut events);
        assert_eq!(events.abandoned, [2]);

        // 3 is used by a pending checkpoint when 4 replaces it.
        bases.add_user(3);
        let mut events = BaseEvents::default();
        bases.install(base(4, &["a", "d"]), &mut events);
        assert!(events.abandoned.is_empty());
        assert_eq!(bases.listed(), [4, 3]);
        bases.checkpoint_aborted(3, &mut events);
        assert_eq!(events.abandoned, [3]);
        assert_eq!(bases.listed(), [4]);

        // A confirmed base is never given up.
        bases.add_user(4);
        let mut events = BaseEvents::default();
        bases.checkpoint_completed(4, &mut events);
        bases.install(base(5, &["e"]), &mut events);
        assert!(events.abandoned.is_empty());
        assert_eq!(events.confirmed, [4]);
    }

    /// Defect 5: a base used by a checkpoint whose outcome is unknown (a
    /// newer one completed first) is never given up, also not when the
    /// backend closes.
    #[test]
    fn bases_of_checkpoints_with_unknown_outcome_are_kept() {
        let mut bases = Bases::default();
        let mut events = BaseEvents::default();
        bases.install(base(1, &["a"]), &mut events);
        bases.add_user(1);
        bases.install(base(2, &["b"]), &mut events);
        bases.add_user(2);
        bases.checkpoint_completed(2, &mut events);
        bases.checkpoint_outcome_unknown(1);
        assert!(events.abandoned.is_empty());
        assert_eq!(bases.listed(), [2]);

        // The current base, used by an unknown checkpoint, survives close.
        bases.install(base(3, &["c"]), &mut events);
        bases.add_user(3);
        bases.checkpoint_outcome_unknown(3);
        bases.close(&mut events);
        assert!(events.abandoned.is_empty());

        // An unused current base is given up on close.
        let mut bases = Bases::default();
        bases.install(base(7, &["x"]), &mut events);
        bases.close(&mut events);
        assert_eq!(events.abandoned, [7]);
    }
}
