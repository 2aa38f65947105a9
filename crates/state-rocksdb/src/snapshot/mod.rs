//! Snapshots: a native RocksDB checkpoint in the synchronous phase, then a
//! full ([`full`]) or incremental ([`incremental`]) upload.
//!
//! The synchronous phase is the same for every snapshot type: flush the
//! memtables and hard-link the live files into a local directory
//! (`rocksdb::checkpoint::Checkpoint`), which freezes the state at that
//! instant whatever the backend writes afterwards. The asynchronous phase
//! then reads only that directory, on any thread, and removes it when done
//! (or when the task is dropped unrun).

pub(crate) mod eager;
pub(crate) mod full;
pub(crate) mod incremental;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use state_api::ttl::StateTtlConfig;

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
    /// Per state with a time to live and full-snapshot clean-up, in the
    /// order of `metas`: its configuration and "now" at the synchronous
    /// phase. Full snapshots leave expired entries out.
    pub(crate) expiries: Vec<Option<(StateTtlConfig, i64)>>,
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
/// files of an aborted or still pending checkpoint may be deleted at any
/// time. And a completed checkpoint `c` becomes the base only while no
/// checkpoint taken after it is outstanding: such a checkpoint did not
/// reuse `c`'s uploads (it uploaded the same SSTs again, or none for a
/// full checkpoint), so once it commits and subsumes `c`, the store
/// deletes `c`'s uploads. Every checkpoint taken after the base was
/// adopted refers to the base's files that are still live in the DB (an
/// SST never comes back once compacted away), so whichever of them commits
/// keeps the files the next one reuses: a late or lost notice only delays
/// reuse, never breaks it.
#[derive(Debug, Default)]
pub(crate) struct UploadTracker {
    /// The last confirmed checkpoint and its SST files by RocksDB name.
    confirmed: Option<(u64, BTreeMap<String, FileHandle>)>,
    /// SST sets of checkpoints not confirmed yet, by checkpoint id.
    pending: BTreeMap<u64, BTreeMap<String, FileHandle>>,
    /// Checkpoints taken (synchronous phase) whose outcome is not known.
    outstanding: BTreeSet<u64>,
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

    /// The names of the confirmed SST files (those the eager uploader
    /// leaves alone).
    pub(crate) fn confirmed_names(&self) -> BTreeSet<String> {
        self.confirmed
            .as_ref()
            .map(|(_, files)| files.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The id of the last confirmed checkpoint (restored or completed).
    pub(crate) fn confirmed_checkpoint(&self) -> Option<u64> {
        self.confirmed.as_ref().map(|(id, _)| *id)
    }

    /// A checkpoint's synchronous phase ran. A full checkpoint refers to
    /// no shared file: once it commits, the store may delete every SST the
    /// base holds, so reuse stops now (and resumes with the next confirmed
    /// incremental checkpoint).
    pub(crate) fn taken(&mut self, checkpoint_id: u64, full: bool) {
        self.outstanding.insert(checkpoint_id);
        if full {
            self.confirmed = None;
        }
    }

    /// Records the SST set of a checkpoint whose upload finished.
    pub(crate) fn record(&mut self, checkpoint_id: u64, files: BTreeMap<String, FileHandle>) {
        if self.outstanding.contains(&checkpoint_id) {
            self.pending.insert(checkpoint_id, files);
        }
    }

    /// Checkpoint `checkpoint_id` completed: its SST set becomes the
    /// confirmed one, unless a newer checkpoint is confirmed already or
    /// one taken after it is still outstanding (see the type's docs).
    /// Older pending sets are dropped: a newer base is better, and their
    /// late notices change nothing. Ids of other snapshots (savepoints)
    /// change nothing.
    pub(crate) fn complete(&mut self, checkpoint_id: u64) {
        let newer_outstanding = self
            .outstanding
            .range(checkpoint_id.saturating_add(1)..)
            .next()
            .is_some();
        self.outstanding.retain(|id| *id > checkpoint_id);
        if let Some(files) = self.pending.remove(&checkpoint_id)
            && !newer_outstanding
            && self
                .confirmed
                .as_ref()
                .is_none_or(|(confirmed, _)| *confirmed < checkpoint_id)
        {
            self.confirmed = Some((checkpoint_id, files));
        }
        self.pending.retain(|id, _| *id > checkpoint_id);
    }

    /// Checkpoint `checkpoint_id` was aborted: never rely on its files.
    pub(crate) fn abort(&mut self, checkpoint_id: u64) {
        self.outstanding.remove(&checkpoint_id);
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
        tracker.taken(1, false);
        tracker.record(1, files(&["1.sst"]));
        assert!(
            tracker.confirmed_files().is_empty(),
            "pending is not confirmed"
        );
        tracker.complete(1);
        assert_eq!(tracker.confirmed_checkpoint(), Some(1));
        tracker.taken(2, false);
        tracker.record(2, files(&["1.sst", "2.sst"]));
        tracker.abort(2);
        tracker.complete(2);
        assert_eq!(
            tracker.confirmed_checkpoint(),
            Some(1),
            "aborted never confirms"
        );
        tracker.taken(3, false);
        tracker.record(3, files(&["3.sst"]));
        tracker.taken(4, false);
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

    /// Defect 2 (RocksDB): a completed full checkpoint refers to no SST;
    /// once retention drops the incremental one before it, its SSTs are
    /// deleted, so they must not be reused after the full one was taken.
    #[test]
    fn a_full_checkpoint_ends_reuse() {
        let mut tracker = UploadTracker::default();
        tracker.taken(1, false);
        tracker.record(1, files(&["1.sst"]));
        tracker.complete(1);
        tracker.taken(2, true);
        assert!(tracker.confirmed_files().is_empty());
        tracker.record(2, BTreeMap::new());
        tracker.complete(2);
        assert_eq!(tracker.confirmed_checkpoint(), Some(2));
        assert!(tracker.confirmed_files().is_empty());
    }

    /// A completion that arrives after a newer checkpoint was taken does
    /// not become the base: the newer one uploaded the SSTs anew and, once
    /// committed, subsumes it and its uploads.
    #[test]
    fn a_late_completion_does_not_become_the_base() {
        let mut tracker = UploadTracker::default();
        tracker.taken(1, false);
        tracker.record(1, files(&["1.sst"]));
        tracker.taken(2, false);
        tracker.record(2, files(&["1.sst", "2.sst"]));
        tracker.complete(1);
        assert_eq!(tracker.confirmed_checkpoint(), None);
        tracker.complete(2);
        assert_eq!(tracker.confirmed_checkpoint(), Some(2));
        // A lost notice of 3 delays reuse until a later one arrives.
        tracker.taken(3, false);
        tracker.record(3, files(&["3.sst"]));
        tracker.taken(4, false);
        tracker.record(4, files(&["4.sst"]));
        tracker.complete(4);
        assert_eq!(tracker.confirmed_checkpoint(), Some(4));
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
