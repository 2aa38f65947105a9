//! Snapshots: a native RocksDB checkpoint in the synchronous phase, then a
//! full ([`full`]) or incremental ([`incremental`]) upload.
//!
//! The synchronous phase is the same for every snapshot type: flush the
//! memtables and hard-link the live files into a local directory
//! (`rocksdb::checkpoint::Checkpoint`), which freezes the state at that
//! instant whatever the backend writes afterwards. The asynchronous phase
//! then reads only that directory, on any thread, and removes it when done
//! (or when the task is dropped unrun).

pub(crate) mod full;
pub(crate) mod incremental;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rocksdb::checkpoint::Checkpoint;
use state_api::snapshot::SavepointFormat;
use state_api::{FileHandle, KeyGroupRange, Result, SnapshotType, StateMeta};

use crate::backend::{Db, LocalDir, db_error};
use crate::keys::KeyLayout;

/// What a snapshot type turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotKind {
    /// The key-group format every backend restores.
    Full,
    /// RocksDB's files; `share` reuses confirmed SSTs and uploads new ones
    /// to shared scope, otherwise every file is this snapshot's own.
    Incremental { share: bool },
}

impl SnapshotKind {
    /// Regular checkpoints are incremental when enabled; native savepoints
    /// are self-contained RocksDB files; everything else is full.
    pub(crate) fn of(snapshot_type: SnapshotType, incremental: bool) -> Self {
        match snapshot_type {
            SnapshotType::Checkpoint if incremental => SnapshotKind::Incremental { share: true },
            SnapshotType::Savepoint(SavepointFormat::Native) => {
                SnapshotKind::Incremental { share: false }
            }
            _ => SnapshotKind::Full,
        }
    }
}

/// The frozen state of a backend: a checkpoint directory plus metadata.
pub(crate) struct Frozen {
    pub(crate) dir: LocalDir,
    pub(crate) checkpoint_id: u64,
    /// Every state, registered or restored, in the backend's order.
    pub(crate) metas: Vec<StateMeta>,
    pub(crate) max_parallelism: u32,
    pub(crate) range: KeyGroupRange,
    pub(crate) layout: KeyLayout,
    pub(crate) operator: String,
}

/// The synchronous phase: flush and hard-link the DB's live files into
/// `dir` (which must not exist).
pub(crate) fn create_checkpoint(db: &Db, dir: PathBuf) -> Result<LocalDir> {
    // Removes a leftover of an earlier process; RocksDB refuses to write
    // into an existing directory.
    let _ = std::fs::remove_dir_all(&dir);
    let guard = LocalDir::adopt(dir);
    Checkpoint::new(db)
        .and_then(|checkpoint| checkpoint.create_checkpoint(guard.path()))
        .map_err(db_error)?;
    Ok(guard)
}

/// Which uploaded SST files later checkpoints may refer to.
///
/// Only files of a *confirmed* checkpoint are reused (FLINK-25395): the
/// files of an aborted or still pending checkpoint may be deleted by the
/// coordinator at any time.
#[derive(Debug, Default)]
pub(crate) struct UploadTracker {
    /// The last confirmed checkpoint and its SST files by RocksDB name.
    confirmed: Option<(u64, BTreeMap<String, FileHandle>)>,
    /// SST files of checkpoints not confirmed yet, by checkpoint id.
    pending: BTreeMap<u64, BTreeMap<String, FileHandle>>,
}

impl UploadTracker {
    /// Starts from the shared files of a restored checkpoint.
    pub(crate) fn seed(&mut self, checkpoint_id: u64, files: BTreeMap<String, FileHandle>) {
        self.confirmed = Some((checkpoint_id, files));
    }

    /// The SST files a new checkpoint may refer to instead of uploading.
    pub(crate) fn confirmed_files(&self) -> BTreeMap<String, FileHandle> {
        self.confirmed
            .as_ref()
            .map(|(_, files)| files.clone())
            .unwrap_or_default()
    }

    /// The id of the last confirmed checkpoint (restored or completed).
    pub(crate) fn confirmed_checkpoint(&self) -> Option<u64> {
        self.confirmed.as_ref().map(|(id, _)| *id)
    }

    /// Records the SST set of a checkpoint whose upload finished.
    pub(crate) fn record(&mut self, checkpoint_id: u64, files: BTreeMap<String, FileHandle>) {
        self.pending.insert(checkpoint_id, files);
    }

    /// Checkpoint `checkpoint_id` completed: its SST set becomes the
    /// confirmed one and older pending ones can never complete any more.
    /// Ids of other snapshots (savepoints, full checkpoints) change nothing.
    pub(crate) fn complete(&mut self, checkpoint_id: u64) {
        if let Some(files) = self.pending.remove(&checkpoint_id) {
            if self
                .confirmed
                .as_ref()
                .is_none_or(|(confirmed, _)| *confirmed < checkpoint_id)
            {
                self.confirmed = Some((checkpoint_id, files));
            }
            self.pending.retain(|id, _| *id > checkpoint_id);
        }
    }

    /// Checkpoint `checkpoint_id` was aborted: never rely on its files.
    pub(crate) fn abort(&mut self, checkpoint_id: u64) {
        self.pending.remove(&checkpoint_id);
    }

    /// Ids of checkpoints whose uploads await confirmation.
    #[cfg(test)]
    pub(crate) fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use state_api::StateScope;

    use super::*;

    fn files(names: &[&str]) -> BTreeMap<String, FileHandle> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    FileHandle {
                        path: format!("shared/{n}"),
                        scope: StateScope::Shared,
                        size: 1,
                        crc32c: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_confirmed_uploads_are_reused() {
        let mut tracker = UploadTracker::default();
        tracker.record(1, files(&["1.sst"]));
        assert!(
            tracker.confirmed_files().is_empty(),
            "pending is not confirmed"
        );
        tracker.complete(1);
        assert_eq!(tracker.confirmed_checkpoint(), Some(1));
        tracker.record(2, files(&["1.sst", "2.sst"]));
        tracker.abort(2);
        tracker.complete(2);
        assert_eq!(
            tracker.confirmed_checkpoint(),
            Some(1),
            "aborted never confirms"
        );
        tracker.record(3, files(&["3.sst"]));
        tracker.record(4, files(&["4.sst"]));
        tracker.complete(4);
        assert_eq!(tracker.confirmed_files(), files(&["4.sst"]));
        assert!(tracker.pending_ids().is_empty(), "older pending dropped");
        tracker.complete(3);
        assert_eq!(tracker.confirmed_checkpoint(), Some(4));
        tracker.complete(99);
        assert_eq!(
            tracker.confirmed_checkpoint(),
            Some(4),
            "unknown ids change nothing"
        );
    }

    #[test]
    fn snapshot_types_map_to_kinds() {
        assert_eq!(
            SnapshotKind::of(SnapshotType::Checkpoint, true),
            SnapshotKind::Incremental { share: true }
        );
        assert_eq!(
            SnapshotKind::of(SnapshotType::Checkpoint, false),
            SnapshotKind::Full
        );
        assert_eq!(
            SnapshotKind::of(SnapshotType::FullCheckpoint, true),
            SnapshotKind::Full
        );
        assert_eq!(
            SnapshotKind::of(SnapshotType::Savepoint(SavepointFormat::Canonical), true),
            SnapshotKind::Full
        );
        assert_eq!(
            SnapshotKind::of(SnapshotType::Savepoint(SavepointFormat::Native), false),
            SnapshotKind::Incremental { share: false }
        );
    }
}
