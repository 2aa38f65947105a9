//! [`CompletedCheckpointStore`]: the retained completed checkpoints of a
//! job, their commit and their subsumption.
//!
//! # Commit
//! A checkpoint's state files are written first; [`add`] then writes
//! `chk-<n>/_metadata` last, with a create-only put. Object stores have no
//! atomic rename of directories, so the metadata object itself is the commit
//! marker: a `chk-<n>/` without `_metadata` is an unfinished or failed
//! checkpoint, and the create-only put makes the commit happen at most once
//! even with two writers.
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
//! and by [`retry_pending_discards`]. [`add`] succeeds once the checkpoint is
//! committed, whatever the cleanup did; [`dispose`] and [`discard_pending`]
//! return the first deletion error after finishing their bookkeeping.
//! Whatever is still pending when the process dies is found again on
//! [`open`]: completed checkpoints beyond the retention are subsumed again,
//! and `chk-<n>/` directories without `_metadata` older than the latest
//! completed checkpoint are swept as orphans.
//!
//! [`add`]: CompletedCheckpointStore::add
//! [`open`]: CompletedCheckpointStore::open
//! [`dispose`]: CompletedCheckpointStore::dispose
//! [`discard_pending`]: CompletedCheckpointStore::discard_pending
//! [`retry_pending_discards`]: CompletedCheckpointStore::retry_pending_discards

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use state_api::{CheckpointStorageAccess, Result, StateError};

use crate::access::ObjectStoreCheckpointStorage;
use crate::layout;
use crate::metadata::CompletedCheckpoint;
use crate::registry::SharedStateRegistry;

/// Configuration key named when `num_retained` is invalid.
const NUM_RETAINED_KEY: &str = "execution.checkpointing.num-retained";

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

/// The retained completed checkpoints of one job, newest last, with the
/// reference tracking of their shared files.
///
/// See the [module docs](self) for the commit and deletion protocol.
#[derive(Debug)]
pub struct CompletedCheckpointStore {
    storage: Arc<ObjectStoreCheckpointStorage>,
    num_retained: usize,
    checkpoints: BTreeMap<u64, CompletedCheckpoint>,
    registry: SharedStateRegistry,
    pending: Vec<Discard>,
}

impl CompletedCheckpointStore {
    /// Opens the store of the job in `storage`, retaining the newest
    /// `num_retained` (at least 1; Flink's default is
    /// [`DEFAULT_NUM_RETAINED`]) completed checkpoints.
    ///
    /// Loads every `chk-<n>/_metadata` (a directory without one is not a
    /// completed checkpoint), rebuilds the [`SharedStateRegistry`] from
    /// them, subsumes completed checkpoints beyond the retention, and
    /// deletes `chk-<n>/` directories without `_metadata` whose `n` is below
    /// the latest completed id (orphans of failed checkpoints). Directories
    /// above it may belong to checkpoints in progress and are left alone.
    /// Failed deletions stay pending (see [`pending_discards`](Self::pending_discards)).
    ///
    /// # Errors
    /// [`StateError::Config`] for `num_retained == 0`;
    /// [`StateError::Corrupt`] naming the path of a `_metadata` that does not
    /// decode or belongs to another checkpoint id (nothing is deleted then);
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
        for id in checkpoint_dir_ids(&storage)? {
            match read_metadata(&storage, id)? {
                Some(checkpoint) => {
                    checkpoints.insert(id, checkpoint);
                }
                None => unfinished.push(id),
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

    /// Commits `checkpoint`: writes its `_metadata` (create-only), registers
    /// its shared files and subsumes the checkpoints beyond the retention,
    /// deleting their `chk-<n>/` directories and the shared files no
    /// retained checkpoint references. Returns the ids of the subsumed
    /// checkpoints, ascending.
    ///
    /// The checkpoint's state files must already be written, its exclusive
    /// files in its own `chk-<n>/`. Deletion failures do not fail the call
    /// (the checkpoint is committed); they stay pending, see
    /// [`pending_discards`](Self::pending_discards).
    ///
    /// # Errors
    /// [`StateError::CheckpointAlreadyExists`] when a `_metadata` exists for
    /// the id already (nothing changes then); [`StateError::Codec`] or
    /// [`StateError::Storage`] when the metadata cannot be written (the
    /// checkpoint is then not committed).
    pub fn add(&mut self, checkpoint: CompletedCheckpoint) -> Result<Vec<u64>> {
        let id = checkpoint.checkpoint_id;
        let path = layout::metadata_path(id);
        let exists = || StateError::CheckpointAlreadyExists {
            checkpoint_id: id,
            path: path.clone(),
        };
        if self.checkpoints.contains_key(&id) {
            return Err(exists());
        }
        let bytes = Bytes::from(checkpoint.encode()?);
        if !self.storage.put_object(&path, bytes, true)? {
            return Err(exists());
        }
        self.registry.register(&checkpoint);
        self.checkpoints.insert(id, checkpoint);
        // Earlier failed deletions first (best effort; whatever fails again
        // stays pending), then this checkpoint's subsumption.
        let _ = self.retry_pending_discards();
        Ok(self.subsume())
    }

    /// The newest retained checkpoint.
    pub fn latest(&self) -> Option<&CompletedCheckpoint> {
        self.checkpoints.values().next_back()
    }

    /// The retained checkpoint `checkpoint_id`.
    pub fn get(&self, checkpoint_id: u64) -> Option<&CompletedCheckpoint> {
        self.checkpoints.get(&checkpoint_id)
    }

    /// The retained checkpoints, ascending by id.
    pub fn checkpoints(
        &self,
    ) -> impl DoubleEndedIterator<Item = &CompletedCheckpoint> + ExactSizeIterator {
        self.checkpoints.values()
    }

    /// How many checkpoints are retained at most.
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
        let path = layout::metadata_path(checkpoint_id);
        if self.checkpoints.contains_key(&checkpoint_id) || self.storage.exists(&path)? {
            return Err(StateError::CheckpointAlreadyExists {
                checkpoint_id,
                path,
            });
        }
        self.storage
            .delete_prefix(&layout::checkpoint_dir(checkpoint_id))
    }

    /// Removes the retained checkpoint `checkpoint_id`: deletes its
    /// `_metadata`, its `chk-<n>/` directory and the shared files only it
    /// references.
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

    /// Removes checkpoints beyond the retention, oldest first, and returns
    /// their ids.
    fn subsume(&mut self) -> Vec<u64> {
        let mut subsumed = Vec::new();
        while self.checkpoints.len() > self.num_retained {
            let Some((id, checkpoint)) = self.checkpoints.pop_first() else {
                break;
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
        // Un-commit first: if this fails, the checkpoint stays intact.
        let result = self
            .storage
            .delete_object(&layout::metadata_path(id))
            .and_then(|()| {
                let mut first_error = self
                    .storage
                    .delete_prefix(&layout::checkpoint_dir(id))
                    .err();
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

/// The newest completed checkpoint of the job in `storage`, if any, without
/// opening a store (nothing is deleted).
///
/// # Errors
/// [`StateError::Corrupt`] when the newest `_metadata` does not decode;
/// [`StateError::Storage`].
pub fn find_latest_completed(
    storage: &ObjectStoreCheckpointStorage,
) -> Result<Option<CompletedCheckpoint>> {
    for id in checkpoint_dir_ids(storage)?.into_iter().rev() {
        if let Some(checkpoint) = read_metadata(storage, id)? {
            return Ok(Some(checkpoint));
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
    let bytes = match storage.get_object(&path) {
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
