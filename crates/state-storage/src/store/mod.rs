//! [`CompletedCheckpointStore`]: the retained completed checkpoints of a
//! job, their commit and their subsumption.
//!
//! # Commit
//! A checkpoint's state files are written first; [`add`] then writes
//! `chk-<n>/_metadata` last, with a create-only put. Object stores have no
//! atomic rename of directories, so the metadata object itself is the commit
//! marker: a `chk-<n>/` without `_metadata` is an unfinished or failed
//! checkpoint. The create-only put commits each *id* at most once, even with
//! two writers; it does not fence a stale writer that commits another id
//! (see the [crate docs](crate#commit-protocol)).
//!
//! Before the put, [`add`] checks what deletion relies on, and refuses the
//! checkpoint (nothing is written or deleted then; the caller aborts it) when
//! * its id is not above every id the store knows: the newest retained
//!   checkpoint, the discards still pending and every id this store instance
//!   committed. An older id would be subsumed at once, and a reused one could
//!   be deleted by the retry of an earlier discard of the same id;
//! * a file lies outside the directory of its scope: exclusive files in
//!   `chk-<n>/` of this very checkpoint, shared files in `shared/`, task-owned
//!   files in `taskowned/`. Subsumption deletes whole `chk-<n>/` directories
//!   and protects only the files the registry knows as shared, so for example
//!   an exclusive file of checkpoint `n - 1` re-reported by checkpoint `n`
//!   would be deleted while `n` needs it;
//! * a shared file that no retained checkpoint references does not exist
//!   (one HEAD per such file). It is either new, uploaded by this checkpoint,
//!   or was reused from a checkpoint that was subsumed, and deleted, while
//!   this one was being written.
//!
//! # Retention
//! The store retains the newest `num_retained` checkpoints of kind
//! [`CheckpointKind::Checkpoint`]. Savepoints ([`CheckpointKind::Savepoint`])
//! belong to the user, as in Flink: retention neither counts nor subsumes
//! them, and they stay (their files included) until [`dispose`]d.
//!
//! # Deletion
//! Discarding a checkpoint deletes its `_metadata` first (so an interrupted
//! discard never leaves a "completed" checkpoint with missing files), then
//! the rest of `chk-<n>/`, then the shared files no retained checkpoint
//! references. Task-owned files are never deleted.
//!
//! Deletion failures never corrupt the in-memory view: the bookkeeping
//! (retained set, [`SharedStateRegistry`]) is updated first, and failed
//! deletions are kept as *pending discards*, retried on every later [`add`]
//! and by [`retry_pending_discards`]. A pending discard never touches the
//! `chk-<n>/` of a retained checkpoint. [`add`] succeeds once the checkpoint
//! is committed, whatever the cleanup did; [`dispose`] and
//! [`discard_pending`] return the first deletion error after finishing their
//! bookkeeping. Whatever is still pending when the process dies is found
//! again on [`open`]: completed checkpoints beyond the retention are subsumed
//! again, and `chk-<n>/` directories without `_metadata` older than the
//! latest completed checkpoint are swept as orphans.
//!
//! # Ownership
//! The store owns every file a committed checkpoint references, from the
//! commit on; backends own what they uploaded until then (see
//! [`state_api::lifecycle`]). A commit whose outcome is unknown (the put of
//! `_metadata` failed after its retries, and may have been applied) is the
//! *pending commit*: its files are protected like a retained checkpoint's,
//! it cannot be discarded, and no other checkpoint is added until
//! [`resolve_pending_commit`] settles it. What nobody owns any more (files of
//! crashed processes, of checkpoints whose notices were lost, deletions
//! pending at a crash) is deleted by [`collect_garbage`] while no writer of
//! the job runs.
//!
//! [`add`]: CompletedCheckpointStore::add
//! [`resolve_pending_commit`]: CompletedCheckpointStore::resolve_pending_commit
//! [`collect_garbage`]: CompletedCheckpointStore::collect_garbage
//! [`open`]: CompletedCheckpointStore::open
//! [`dispose`]: CompletedCheckpointStore::dispose
//! [`discard_pending`]: CompletedCheckpointStore::discard_pending
//! [`retry_pending_discards`]: CompletedCheckpointStore::retry_pending_discards

mod collect;
mod commit;

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::{CheckpointStorageAccess, Result, StateError};

pub use collect::GarbageReport;
pub use commit::Resolution;

use crate::access::ObjectStoreCheckpointStorage;
use crate::layout;
use crate::metadata::{CheckpointKind, CompletedCheckpoint, MAX_METADATA_BYTES};
use crate::registry::SharedStateRegistry;

/// Configuration key named when `num_retained` is invalid.
const NUM_RETAINED_KEY: &str = "execution.checkpointing.num-retained";

/// Name of the argument in the error for a checkpoint id that does not
/// increase.
const CHECKPOINT_ID_KEY: &str = "checkpoint-id";

/// Number of checkpoints retained when not configured (Flink's default).
pub const DEFAULT_NUM_RETAINED: usize = 1;

/// The deletions of one discarded checkpoint; repeatable, so a failed
/// discard can simply run again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Discard {
    checkpoint_id: u64,
    /// Shared files that were unused when the checkpoint was discarded.
    shared_files: Vec<String>,
}

/// The retained completed checkpoints (and savepoints) of one job, newest
/// last, with the reference tracking of their shared files.
///
/// See the [module docs](self) for the commit and deletion protocol.
#[derive(Debug)]
pub struct CompletedCheckpointStore {
    storage: Arc<ObjectStoreCheckpointStorage>,
    num_retained: usize,
    checkpoints: BTreeMap<u64, CompletedCheckpoint>,
    registry: SharedStateRegistry,
    pending: Vec<Discard>,
    /// The highest id this instance committed or tried to, retained or not.
    highest_added: Option<u64>,
    /// A checkpoint whose `_metadata` put has an unknown outcome.
    pending_commit: Option<commit::PendingCommit>,
    /// Checkpoints whose `_metadata` does not decode: kept as they are,
    /// never restored, never deleted by the store.
    damaged: BTreeMap<u64, String>,
}

impl CompletedCheckpointStore {
    /// Opens the store of the job in `storage`, retaining the newest
    /// `num_retained` (at least 1; Flink's default is
    /// [`DEFAULT_NUM_RETAINED`]) completed checkpoints, plus every savepoint.
    ///
    /// Loads every `chk-<n>/_metadata` (a directory without one is not a
    /// completed checkpoint), rebuilds the [`SharedStateRegistry`] from
    /// them, subsumes completed checkpoints beyond the retention, and
    /// deletes `chk-<n>/` directories without `_metadata` whose `n` is below
    /// the latest completed id (orphans of failed checkpoints). Directories
    /// above it may belong to checkpoints in progress and are left alone.
    /// Failed deletions stay pending (see [`pending_discards`](Self::pending_discards)).
    ///
    /// A `_metadata` that does not decode (or names another checkpoint id)
    /// does not stop the job: that checkpoint is left out, reported by
    /// [`damaged_checkpoints`](Self::damaged_checkpoints) and on standard
    /// error, and the newest intact checkpoint is the latest. Its directory
    /// is never deleted by the store (someone may want to look at it), and
    /// its id is never used again.
    ///
    /// # Errors
    /// [`StateError::Config`] for `num_retained == 0`;
    /// [`StateError::Storage`] when listing or reading fails.
    pub fn open(storage: Arc<ObjectStoreCheckpointStorage>, num_retained: usize) -> Result<Self> {
        if num_retained == 0 {
            return Err(StateError::Config {
                key: NUM_RETAINED_KEY.into(),
                message: "must be at least 1".into(),
            });
        }
        let mut checkpoints = BTreeMap::new();
        let mut unfinished = Vec::new();
        let mut damaged = BTreeMap::new();
        for id in checkpoint_dir_ids(&storage)? {
            match read_metadata(&storage, id) {
                Ok(Some(checkpoint)) => {
                    checkpoints.insert(id, checkpoint);
                }
                Ok(None) => unfinished.push(id),
                Err(e @ (StateError::Corrupt { .. } | StateError::Codec { .. })) => {
                    eprintln!(
                        "warning: checkpoint {id} in {} is damaged and left out: {e}",
                        storage.location()
                    );
                    damaged.insert(id, e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let mut registry = SharedStateRegistry::new();
        for checkpoint in checkpoints.values() {
            registry.register(checkpoint);
        }
        let latest = checkpoints.keys().next_back().copied();
        let mut store = Self {
            storage,
            num_retained,
            checkpoints,
            registry,
            pending: Vec::new(),
            highest_added: None,
            pending_commit: None,
            damaged,
        };
        store.subsume();
        if let Some(latest) = latest {
            for id in unfinished.into_iter().filter(|id| *id < latest) {
                // Failures stay pending; open succeeds either way.
                let _ = store.run_discard(Discard {
                    checkpoint_id: id,
                    shared_files: Vec::new(),
                });
            }
        }
        Ok(store)
    }

    /// Checkpoints whose `_metadata` did not decode when the store was
    /// opened, with the reason, ascending by id. They are not restored,
    /// not deleted, and their ids are not used again.
    pub fn damaged_checkpoints(&self) -> impl Iterator<Item = (u64, &str)> {
        self.damaged
            .iter()
            .map(|(id, reason)| (*id, reason.as_str()))
    }

    /// The newest retained checkpoint or savepoint.
    pub fn latest(&self) -> Option<&CompletedCheckpoint> {
        self.checkpoints.values().next_back()
    }

    /// The retained checkpoint `checkpoint_id`.
    pub fn get(&self, checkpoint_id: u64) -> Option<&CompletedCheckpoint> {
        self.checkpoints.get(&checkpoint_id)
    }

    /// The retained checkpoints and savepoints, ascending by id.
    pub fn checkpoints(
        &self,
    ) -> impl DoubleEndedIterator<Item = &CompletedCheckpoint> + ExactSizeIterator {
        self.checkpoints.values()
    }

    /// How many checkpoints are retained at most; savepoints come on top
    /// and are not counted.
    pub fn num_retained(&self) -> usize {
        self.num_retained
    }

    /// Reference tracking of the retained checkpoints' shared files.
    pub fn registry(&self) -> &SharedStateRegistry {
        &self.registry
    }

    /// The storage the store works on.
    pub fn storage(&self) -> &Arc<ObjectStoreCheckpointStorage> {
        &self.storage
    }

    /// Deletes the directory `chk-<n>/` of checkpoint `checkpoint_id`,
    /// which was aborted before completing (it has no `_metadata`).
    ///
    /// Shared files the aborted checkpoint uploaded are not known here and
    /// stay; the backend that wrote them forgets them on
    /// `notify_checkpoint_aborted`.
    ///
    /// # Errors
    /// [`StateError::CheckpointAlreadyExists`] when the checkpoint completed
    /// (retained, or a `_metadata` exists): use [`dispose`](Self::dispose);
    /// [`StateError::Storage`] when listing or deleting fails.
    pub fn discard_pending(&mut self, checkpoint_id: u64) -> Result<()> {
        if self.pending_commit() == Some(checkpoint_id) {
            return Err(StateError::CommitOutcomeUnknown {
                checkpoint_id,
                source:
                    "it may be committed: resolve it (resolve_pending_commit), never discard it"
                        .into(),
            });
        }
        let path = layout::metadata_path(checkpoint_id);
        if self.checkpoints.contains_key(&checkpoint_id) || self.storage.exists(&path)? {
            return Err(StateError::CheckpointAlreadyExists {
                checkpoint_id,
                path,
            });
        }
        self.storage
            .delete_prefix(Some(&layout::checkpoint_dir(checkpoint_id)))
    }

    /// Removes the retained checkpoint or savepoint `checkpoint_id` (the only
    /// way a savepoint goes): deletes its `_metadata`, its `chk-<n>/`
    /// directory and the shared files only it references.
    ///
    /// # Errors
    /// [`StateError::CheckpointNotFound`] when it is not retained;
    /// [`StateError::Storage`] for the first failed deletion, after the
    /// checkpoint was removed from the store (the rest stays pending).
    pub fn dispose(&mut self, checkpoint_id: u64) -> Result<()> {
        let Some(checkpoint) = self.checkpoints.remove(&checkpoint_id) else {
            return Err(StateError::CheckpointNotFound {
                checkpoint_id,
                location: Some(self.storage.location()),
            });
        };
        let shared_files = self.registry.unregister(&checkpoint);
        self.run_discard(Discard {
            checkpoint_id,
            shared_files,
        })
    }

    /// Ids of discarded checkpoints whose files could not all be deleted
    /// yet, ascending.
    pub fn pending_discards(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.pending.iter().map(|d| d.checkpoint_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Retries the pending discards.
    ///
    /// # Errors
    /// The first deletion that failed again; it stays pending.
    pub fn retry_pending_discards(&mut self) -> Result<()> {
        let mut first_error = None;
        for discard in std::mem::take(&mut self.pending) {
            if let Err(e) = self.run_discard(discard) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes checkpoints (not savepoints) beyond the retention, oldest
    /// first, and returns their ids.
    fn subsume(&mut self) -> Vec<u64> {
        let checkpoint_ids: Vec<u64> = self
            .checkpoints
            .iter()
            .filter(|(_, c)| c.kind == CheckpointKind::Checkpoint)
            .map(|(id, _)| *id)
            .collect();
        let excess = checkpoint_ids.len().saturating_sub(self.num_retained);
        let mut subsumed = Vec::with_capacity(excess);
        for id in checkpoint_ids.into_iter().take(excess) {
            let Some(checkpoint) = self.checkpoints.remove(&id) else {
                continue;
            };
            let shared_files = self.registry.unregister(&checkpoint);
            // Failures stay pending; the checkpoint is subsumed either way.
            let _ = self.run_discard(Discard {
                checkpoint_id: id,
                shared_files,
            });
            subsumed.push(id);
        }
        subsumed
    }

    /// Runs the deletions of `discard`; on failure keeps what is left of it
    /// pending and returns the first error.
    fn run_discard(&mut self, mut discard: Discard) -> Result<()> {
        let id = discard.checkpoint_id;
        // A shared file a newer checkpoint registered since is in use again.
        discard
            .shared_files
            .retain(|path| !self.registry.is_referenced(path));
        // Never delete the directory of a retained checkpoint. `add` refuses
        // ids of pending discards, so this is a safety net: only the unused
        // shared files of such a discard go.
        let retained = self.checkpoints.contains_key(&id);
        // Un-commit first: if this fails, the checkpoint stays intact.
        let uncommit = if retained {
            Ok(())
        } else {
            self.storage.delete_object(&layout::metadata_path(id))
        };
        let result = uncommit.and_then(|()| {
            let mut first_error = if retained {
                None
            } else {
                self.storage
                    .delete_prefix(Some(&layout::checkpoint_dir(id)))
                    .err()
            };
            discard
                .shared_files
                .retain(|path| match self.storage.delete_object(path) {
                    Ok(()) => false,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        true
                    }
                });
            first_error.map_or(Ok(()), Err)
        });
        if result.is_err() {
            self.pending.push(discard);
        }
        result
    }
}

/// Whether the relative path `path` lies below the directory `dir`.
fn is_in_dir(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty())
}

/// Loads the completed checkpoint `checkpoint_id` of the job in `storage`
/// without opening a store (nothing is deleted).
///
/// # Errors
/// [`StateError::CheckpointNotFound`] when it has no `_metadata`;
/// [`StateError::Corrupt`] naming the path when the metadata does not
/// decode or names another checkpoint; [`StateError::Storage`].
pub fn load_checkpoint(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_id: u64,
) -> Result<CompletedCheckpoint> {
    read_metadata(storage, checkpoint_id)?.ok_or_else(|| StateError::CheckpointNotFound {
        checkpoint_id,
        location: Some(storage.location()),
    })
}

/// The newest intact completed checkpoint of the job in `storage`, if any,
/// without opening a store (nothing is deleted). Checkpoints whose
/// `_metadata` does not decode are skipped, with a warning on standard
/// error.
///
/// # Errors
/// [`StateError::Storage`].
pub fn find_latest_completed(
    storage: &ObjectStoreCheckpointStorage,
) -> Result<Option<CompletedCheckpoint>> {
    for id in checkpoint_dir_ids(storage)?.into_iter().rev() {
        match read_metadata(storage, id) {
            Ok(Some(checkpoint)) => return Ok(Some(checkpoint)),
            Ok(None) => {}
            Err(e @ (StateError::Corrupt { .. } | StateError::Codec { .. })) => {
                eprintln!(
                    "warning: checkpoint {id} in {} is damaged and skipped: {e}",
                    storage.location()
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Ids of the `chk-<n>` directories in the job directory, ascending.
fn checkpoint_dir_ids(storage: &ObjectStoreCheckpointStorage) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = storage
        .list_dirs()?
        .iter()
        .filter_map(|dir| layout::parse_checkpoint_dir(dir))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The metadata of checkpoint `checkpoint_id`, `None` when it has none.
fn read_metadata(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_id: u64,
) -> Result<Option<CompletedCheckpoint>> {
    let path = layout::metadata_path(checkpoint_id);
    let bytes = match storage.get_object_at_most(&path, MAX_METADATA_BYTES) {
        Ok(bytes) => bytes,
        Err(StateError::FileNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let checkpoint = CompletedCheckpoint::decode(&path, &bytes)?;
    if checkpoint.checkpoint_id != checkpoint_id {
        return Err(StateError::corrupt(
            path,
            format!(
                "metadata of checkpoint {} in the directory of checkpoint {checkpoint_id}",
                checkpoint.checkpoint_id
            ),
        ));
    }
    Ok(Some(checkpoint))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use state_api::{FileHandle, StateScope};

    use super::*;
    use crate::metadata::tests::handle;

    fn write(storage: &ObjectStoreCheckpointStorage, id: u64, scope: StateScope) -> FileHandle {
        let mut out = storage.create_output(id, scope, "f").unwrap();
        out.write_all(b"data").unwrap();
        out.close().unwrap()
    }

    /// A discard left pending for an id that is retained again (which `add`
    /// now refuses) deletes only its unused shared files, never the
    /// retained checkpoint's `_metadata` or `chk-<n>/`.
    #[test]
    fn a_pending_discard_never_deletes_a_retained_checkpoint() {
        let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap());
        let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
        let exclusive = write(&storage, 5, StateScope::Exclusive);
        let checkpoint = CompletedCheckpoint::new("job", 5, 0, CheckpointKind::Checkpoint)
            .with_operator("op", vec![handle(5, exclusive.clone())]);
        store.add(checkpoint.clone()).unwrap();
        let unused = write(&storage, 4, StateScope::Shared);

        store.pending.push(Discard {
            checkpoint_id: 5,
            shared_files: vec![unused.path.clone()],
        });
        store.retry_pending_discards().unwrap();
        assert!(store.pending_discards().is_empty());
        assert_eq!(load_checkpoint(&storage, 5).unwrap(), checkpoint);
        assert!(storage.read(&exclusive).is_ok());
        assert!(matches!(
            storage.read(&unused),
            Err(StateError::FileNotFound { .. })
        ));
    }
}
