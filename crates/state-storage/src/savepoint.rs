//! Savepoints: self-contained, relocatable snapshots, each in a directory of
//! its own under `execution.checkpointing.savepoint-dir`.
//!
//! ```text
//! <savepoint-dir>/savepoint-<short job id>-<random>/_metadata
//!                                                  /<hint>-<uuid>  every state file
//! ```
//!
//! Backends write a savepoint through [`SavepointWriter::storage`] (a
//! storage rooted at the savepoint's directory, in
//! [`DirectoryLayout::Savepoint`]): every file lands at the top of the
//! directory, exclusive to the savepoint, and every handle path is relative
//! to the directory. [`SavepointWriter::commit`] then writes `_metadata`
//! last, create-only, as checkpoints commit. So the directory can be moved,
//! copied or served from another store and still restores
//! ([`Savepoint::open`] takes the directory or its `_metadata`).
//!
//! A savepoint belongs to the user: no checkpoint store subsumes it, and a
//! job restored from it reads it through
//! [`BackendContext::restore_storage`](state_api::BackendContext::restore_storage),
//! so its files never become part of the job's later checkpoints.
//! [`Savepoint::dispose`] deletes exactly the files its `_metadata` names,
//! then `_metadata`.
//!
//! ```
//! use std::io::Write;
//! use state_api::StateScope;
//! use state_storage::{CheckpointKind, CompletedCheckpoint, Savepoint, SavepointWriter};
//!
//! let dir = tempfile::tempdir().expect("tempdir");
//! let savepoints = dir.path().join("savepoints");
//! let writer = SavepointWriter::create(savepoints.to_str().expect("utf-8"), "job-1")?;
//! let mut out = writer.storage().create_output(7, StateScope::Shared, "heap-0")?;
//! out.write_all(b"state").expect("write");
//! let file = out.close()?;
//! assert_eq!(file.scope, StateScope::Exclusive); // a savepoint owns its files
//! # let handle = state_api::KeyedStateHandle::KeyGroups(state_api::KeyGroupsStateHandle {
//! #     backend: "heap".into(), checkpoint_id: 7, max_parallelism: 128,
//! #     key_group_range: state_api::KeyGroupRange::new(0, 1)?, file,
//! #     key_group_offsets: vec![0] });
//! let metadata = CompletedCheckpoint::new("job-1", 7, 0, CheckpointKind::Savepoint)
//!     .with_operator("op", vec![handle]);
//! let savepoint = writer.commit(metadata)?;
//!
//! // Move the directory: it still opens, from the directory or its _metadata.
//! let moved = dir.path().join("moved");
//! std::fs::rename(savepoint.local_dir().expect("local"), &moved).expect("rename");
//! let reopened = Savepoint::open(moved.join("_metadata").to_str().expect("utf-8"))?;
//! assert_eq!(reopened.metadata().checkpoint_id, 7);
//! let report = reopened.dispose()?;
//! assert_eq!(report.deleted_files, 2); // the state file and _metadata
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::sync::Arc;

use state_api::{CheckpointStorageAccess, KeyedStateHandle, Result, StateError};

use crate::access::ObjectStoreCheckpointStorage;
use crate::layout::{self, DirectoryLayout, METADATA_FILE_NAME};
use crate::metadata::{CheckpointKind, CompletedCheckpoint, MAX_METADATA_BYTES};

/// The configuration key errors about savepoint locations name.
const SAVEPOINT_DIR_KEY: &str = "execution.checkpointing.savepoint-dir";

/// A savepoint being written: a new, empty directory to give backends as
/// their snapshot storage, committed by [`commit`](Self::commit).
#[derive(Debug)]
pub struct SavepointWriter {
    storage: Arc<ObjectStoreCheckpointStorage>,
}

impl SavepointWriter {
    /// Starts a savepoint of job `job_id` in a new directory
    /// `savepoint-<short job id>-<random>` under `savepoint_dir` (a local
    /// path or a URL, as [`ObjectStoreCheckpointStorage::from_url`] takes;
    /// cloud stores are configured from the environment).
    ///
    /// # Errors
    /// [`StateError::Config`] for an unusable location;
    /// [`StateError::Storage`] when a local directory cannot be created.
    pub fn create(savepoint_dir: &str, job_id: &str) -> Result<Self> {
        let no_options: [(&str, &str); 0] = [];
        let name = layout::new_savepoint_dir_name(job_id);
        let storage = ObjectStoreCheckpointStorage::from_url(savepoint_dir, &name, no_options)
            .map_err(|e| rename_key(e, SAVEPOINT_DIR_KEY))?;
        Ok(Self::in_storage(storage))
    }

    /// Starts a savepoint in the directory `storage` is rooted at (for
    /// stores built by hand, see [`ObjectStoreCheckpointStorage::new`]);
    /// the directory should be new and empty.
    pub fn in_storage(storage: ObjectStoreCheckpointStorage) -> Self {
        Self {
            storage: Arc::new(storage.with_layout(DirectoryLayout::Savepoint)),
        }
    }

    /// The storage backends write the savepoint to (pass it to
    /// [`KeyedStateBackend::snapshot`](state_api::KeyedStateBackend::snapshot)).
    pub fn storage(&self) -> Arc<dyn CheckpointStorageAccess> {
        Arc::clone(&self.storage) as Arc<dyn CheckpointStorageAccess>
    }

    /// Where the savepoint is being written.
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// Commits the savepoint: checks `metadata` and writes `_metadata`
    /// (create-only) once every state file is in place.
    ///
    /// # Errors
    /// * [`StateError::Config`] when `metadata` is not of kind
    ///   [`CheckpointKind::Savepoint`];
    /// * [`StateError::Corrupt`] naming a file that is not at the top of the
    ///   savepoint directory (a handle written to another storage would make
    ///   the savepoint depend on files it does not own);
    /// * [`StateError::FileNotFound`] naming a referenced file that does not
    ///   exist;
    /// * [`StateError::CheckpointAlreadyExists`] when the directory holds a
    ///   `_metadata` already; [`StateError::Storage`], [`StateError::Codec`].
    pub fn commit(self, metadata: CompletedCheckpoint) -> Result<Savepoint> {
        if metadata.kind != CheckpointKind::Savepoint {
            return Err(StateError::Config {
                key: "kind".into(),
                message: format!(
                    "checkpoint {} is a {:?}, not a savepoint",
                    metadata.checkpoint_id, metadata.kind
                ),
            });
        }
        let files = metadata.files();
        if let Some(file) = files.iter().find(|f| f.path.contains('/')) {
            return Err(StateError::corrupt(
                file.path.clone(),
                format!(
                    "not a file of savepoint {}: it lies outside the savepoint directory",
                    self.location()
                ),
            ));
        }
        let paths = files.iter().map(|f| f.path.clone()).collect();
        if let Some(missing) = self.storage.missing_objects(paths)?.into_iter().next() {
            return Err(StateError::FileNotFound { path: missing });
        }
        let bytes = metadata.encode()?;
        if !self
            .storage
            .put_object(METADATA_FILE_NAME, bytes.into(), true)?
        {
            return Err(StateError::CheckpointAlreadyExists {
                checkpoint_id: metadata.checkpoint_id,
                path: format!("{}/{METADATA_FILE_NAME}", self.location()),
            });
        }
        Ok(Savepoint {
            storage: self.storage,
            metadata,
        })
    }

    /// Abandons the savepoint: deletes whatever was written to its
    /// directory.
    ///
    /// # Errors
    /// [`StateError::Storage`] for the first failed listing or deletion.
    pub fn abort(self) -> Result<()> {
        self.storage.delete_prefix(None)
    }
}

/// A committed savepoint: its metadata and the storage rooted at its
/// directory.
#[derive(Debug)]
pub struct Savepoint {
    storage: Arc<ObjectStoreCheckpointStorage>,
    metadata: CompletedCheckpoint,
}

/// What [`Savepoint::dispose`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisposeReport {
    /// Files deleted, `_metadata` included.
    pub deleted_files: usize,
    /// Payload bytes of the deleted state files.
    pub deleted_bytes: u64,
    /// Files in the directory that the savepoint does not reference; left
    /// in place.
    pub foreign_files: Vec<String>,
}

impl Savepoint {
    /// Opens the savepoint at `location`: its directory or its `_metadata`
    /// file, as a local path or a URL (see
    /// [`ObjectStoreCheckpointStorage::from_url`]).
    ///
    /// # Errors
    /// [`StateError::FileNotFound`] naming `_metadata` when there is no
    /// savepoint there; [`StateError::Corrupt`] when it does not decode or
    /// is not a savepoint's; [`StateError::Config`] for an unusable
    /// location; [`StateError::Storage`].
    pub fn open(location: &str) -> Result<Self> {
        let dir = strip_metadata(location);
        let storage = ObjectStoreCheckpointStorage::open_dir(dir).map_err(|e| match e {
            StateError::FileNotFound { path } => StateError::FileNotFound {
                path: format!("{path}/{METADATA_FILE_NAME}"),
            },
            other => other,
        })?;
        Self::open_in(storage)
    }

    /// Opens the savepoint in the directory `storage` is rooted at.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_in(storage: ObjectStoreCheckpointStorage) -> Result<Self> {
        let storage = storage.with_layout(DirectoryLayout::Savepoint);
        let shown = format!("{}/{METADATA_FILE_NAME}", storage.location());
        let bytes = storage
            .get_object_at_most(METADATA_FILE_NAME, MAX_METADATA_BYTES)
            .map_err(|e| match e {
                StateError::FileNotFound { .. } => StateError::FileNotFound {
                    path: shown.clone(),
                },
                other => other,
            })?;
        let metadata = CompletedCheckpoint::decode(&shown, &bytes)?;
        if metadata.kind != CheckpointKind::Savepoint {
            return Err(StateError::corrupt(
                shown,
                format!(
                    "holds checkpoint {}, not a savepoint",
                    metadata.checkpoint_id
                ),
            ));
        }
        Ok(Self {
            storage: Arc::new(storage),
            metadata,
        })
    }

    /// The savepoint's metadata.
    pub fn metadata(&self) -> &CompletedCheckpoint {
        &self.metadata
    }

    /// The storage rooted at the savepoint's directory: what a restoring
    /// job passes as
    /// [`BackendContext::restore_storage`](state_api::BackendContext::restore_storage).
    pub fn storage(&self) -> Arc<dyn CheckpointStorageAccess> {
        Arc::clone(&self.storage) as Arc<dyn CheckpointStorageAccess>
    }

    /// The storage as its concrete type (listing, verification).
    pub fn object_storage(&self) -> &Arc<ObjectStoreCheckpointStorage> {
        &self.storage
    }

    /// Where the savepoint is (its directory).
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// The savepoint's directory on local disk, when it is on local disk.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        self.location()
            .strip_prefix("file://")
            .map(std::path::PathBuf::from)
    }

    /// The handles of operator `operator_id` (empty when it has none).
    pub fn handles(&self, operator_id: &str) -> &[KeyedStateHandle] {
        self.metadata
            .operators
            .get(operator_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Deletes the savepoint: exactly the files it references, then
    /// `_metadata` last, so a dispose that a storage failure interrupts can
    /// simply run again (missing files are not an error). Other files in
    /// the directory are left and reported.
    ///
    /// # Errors
    /// [`StateError::Storage`] for the first failed deletion, after trying
    /// every file; `_metadata` is kept then.
    pub fn dispose(self) -> Result<DisposeReport> {
        self.dispose_with_progress(&mut |_, _| {})
    }

    /// [`dispose`](Self::dispose), calling `progress(done, total)` after
    /// each referenced file.
    ///
    /// # Errors
    /// As [`dispose`](Self::dispose).
    pub fn dispose_with_progress(
        self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<DisposeReport> {
        let mut report = DisposeReport::default();
        let mut first_error = None;
        let files = self.metadata.files();
        for (done, file) in files.iter().enumerate() {
            progress(done + 1, files.len());
            match self.storage.delete(file) {
                Ok(()) => {
                    report.deleted_files += 1;
                    report.deleted_bytes += file.size;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.storage.delete_object(METADATA_FILE_NAME)?;
        report.deleted_files += 1;
        report.foreign_files = self.storage.list_files(None)?;
        Ok(report)
    }
}

/// `location` without a trailing `/_metadata` (and trailing slashes).
pub fn strip_metadata(location: &str) -> &str {
    let trimmed = location.trim_end_matches('/');
    trimmed
        .strip_suffix(METADATA_FILE_NAME)
        .filter(|dir| dir.is_empty() || dir.ends_with('/'))
        .map_or(trimmed, |dir| dir.trim_end_matches('/'))
}

/// The same error with `key` named instead of the checkpoint directory key.
fn rename_key(error: StateError, key: &str) -> StateError {
    match error {
        StateError::Config { message, .. } => StateError::Config {
            key: key.into(),
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aborted_savepoint_leaves_nothing() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let writer =
            SavepointWriter::create(dir.path().to_str().expect("utf-8"), "job").expect("writer");
        let location = writer.location();
        for name in ["a", "b"] {
            let mut out = writer
                .storage()
                .create_output(1, state_api::StateScope::Exclusive, name)
                .expect("output");
            out.write_all(b"partial").expect("write");
            out.close().expect("close");
        }
        let savepoint_dir = std::path::PathBuf::from(location.trim_start_matches("file://"));
        assert_eq!(std::fs::read_dir(&savepoint_dir).expect("dir").count(), 2);
        writer.abort().expect("abort");
        let left = std::fs::read_dir(&savepoint_dir).map_or(0, Iterator::count);
        assert_eq!(left, 0);
    }

    #[test]
    fn metadata_suffixes_are_stripped() {
        assert_eq!(strip_metadata("/a/sp/_metadata"), "/a/sp");
        assert_eq!(strip_metadata("/a/sp/_metadata/"), "/a/sp");
        assert_eq!(strip_metadata("/a/sp/"), "/a/sp");
        assert_eq!(strip_metadata("/a/x_metadata"), "/a/x_metadata");
        assert_eq!(strip_metadata("s3://b/sp/_metadata"), "s3://b/sp");
    }
}
