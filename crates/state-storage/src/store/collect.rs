//! Garbage collection: deleting every file of the job directory that no
//! checkpoint needs.
//!
//! Normal operation deletes what it can prove unused: subsumption deletes a
//! checkpoint's directory and the shared files no retained checkpoint
//! references, backends delete the files of checkpoints they learn were
//! aborted. What that leaves behind has no owner any more: files of a
//! process that crashed mid-checkpoint, of checkpoints whose notices were
//! lost, deletions that were pending at a crash. [`collect_garbage`]
//! finds them by listing the job directory and keeps exactly
//!
//! * every file a retained checkpoint (or savepoint) references, and its
//!   `_metadata`;
//! * every file the pending commit references (it may be committed);
//! * everything in `taskowned/` (never deleted by the store);
//! * the directories of checkpoints whose `_metadata` is damaged, and, while
//!   there is one, all of `shared/`: the damaged metadata might reference any
//!   shared file, and guessing wrong would destroy what a repair could
//!   restore.
//!
//! [`collect_garbage`]: CompletedCheckpointStore::collect_garbage

use std::collections::BTreeSet;

use state_api::{Result, StateError};

use super::CompletedCheckpointStore;
use crate::layout;
use crate::metadata::CompletedCheckpoint;

/// What [`CompletedCheckpointStore::collect_garbage`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GarbageReport {
    /// Files in the job directory when it was listed.
    pub listed: usize,
    /// Files deleted, as paths relative to the job directory.
    pub deleted: Vec<String>,
    /// Unreferenced shared files kept because a damaged checkpoint might
    /// reference them.
    pub kept_for_damaged: usize,
}

impl CompletedCheckpointStore {
    /// Deletes every file of the job directory that no retained checkpoint,
    /// savepoint or pending commit needs (see the
    /// [module docs](self) for exactly what stays).
    ///
    /// **Call it only while no backend of the job writes to the job
    /// directory**: when the job starts or restarts, after the tasks of the
    /// previous attempt are gone and before the new ones start, or after
    /// all tasks stopped. Files a running backend uploaded for a checkpoint
    /// not committed yet, or a changelog backend's log and materialization,
    /// are referenced by no checkpoint until that checkpoint commits, and
    /// would be deleted from under it. Fencing a zombie task of an earlier
    /// attempt is the runtime's job, as for the store itself.
    ///
    /// Pending discards are retried first; afterwards none is left unless a
    /// deletion failed.
    ///
    /// # Errors
    /// [`StateError::Storage`] when listing fails, or for the first failed
    /// deletion after all others were tried (the rest of the work is done;
    /// calling again retries).
    pub fn collect_garbage(&mut self) -> Result<GarbageReport> {
        let _ = self.retry_pending_discards();
        let (listed, unreferenced, kept_for_damaged) = self.classify()?;
        let mut report = GarbageReport {
            listed,
            kept_for_damaged,
            ..GarbageReport::default()
        };
        let mut first_error: Option<StateError> = None;
        for path in unreferenced {
            match self.storage.delete_object(&path) {
                Ok(()) => report.deleted.push(path),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                // Whatever the pending discards still listed is gone now.
                self.pending.clear();
                Ok(report)
            }
        }
    }

    /// The files [`collect_garbage`](Self::collect_garbage) would delete
    /// now, in path order, without deleting anything: what tests and tools
    /// count as leaked.
    ///
    /// # Errors
    /// [`StateError::Storage`] when listing fails.
    pub fn unreferenced_files(&self) -> Result<Vec<String>> {
        self.classify().map(|(_, unreferenced, _)| unreferenced)
    }

    /// Every file retained checkpoints and the pending commit reference,
    /// with their `_metadata`, in path order.
    pub fn referenced_files(&self) -> BTreeSet<String> {
        let checkpoints = self
            .checkpoints
            .values()
            .chain(self.pending_commit_checkpoint());
        let mut keep = BTreeSet::new();
        for checkpoint in checkpoints {
            keep.insert(layout::metadata_path(checkpoint.checkpoint_id));
            keep.extend(handle_files(checkpoint));
        }
        keep
    }

    /// Lists the job directory: how many files, which are unreferenced,
    /// and how many unreferenced shared files a damaged checkpoint keeps.
    fn classify(&self) -> Result<(usize, Vec<String>, usize)> {
        let files = self.storage.list_files(None)?;
        let keep = self.referenced_files();
        let listed = files.len();
        let mut kept_for_damaged = 0;
        let mut unreferenced = Vec::new();
        for path in files {
            if keep.contains(&path) || self.kept_by_layout(&path) {
                continue;
            }
            if !self.damaged.is_empty() && super::is_in_dir(&path, layout::SHARED_DIR) {
                kept_for_damaged += 1;
                continue;
            }
            unreferenced.push(path);
        }
        Ok((listed, unreferenced, kept_for_damaged))
    }

    /// Whether the layout alone keeps `path`: task-owned files, and the
    /// directories of damaged checkpoints.
    fn kept_by_layout(&self, path: &str) -> bool {
        if super::is_in_dir(path, layout::TASK_OWNED_DIR) {
            return true;
        }
        layout::parse_checkpoint_file(path).is_some_and(|(id, _)| self.damaged.contains_key(&id))
    }
}

/// Every file path a checkpoint's handles reference.
fn handle_files(checkpoint: &CompletedCheckpoint) -> impl Iterator<Item = String> + '_ {
    checkpoint.handle_files().map(|file| file.path.clone())
}
