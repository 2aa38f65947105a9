//! Incremental snapshots: upload only SST files that no confirmed checkpoint
//! uploaded already.
//!
//! SST files are immutable and RocksDB never reuses a file number within a
//! DB, so a file name identifies its content for the life of the DB (a
//! restored DB continues the numbering of the checkpoint it came from). The
//! asynchronous phase therefore:
//!
//! * refers to the `*.sst` files the last confirmed checkpoint uploaded,
//!   reusing their [`FileHandle`]s (shared scope);
//! * adopts the [eager](super::eager) upload of an `*.sst` file when there
//!   is one (it becomes this snapshot's own upload);
//! * uploads the other `*.sst` files to shared scope;
//! * uploads MANIFEST, CURRENT, OPTIONS (and any other file) as this
//!   checkpoint's own (exclusive scope);
//! * records the checkpoint's SST set as pending, to become the confirmed set
//!   when the checkpoint completes.
//!
//! Native savepoints (`share == false`) upload everything as exclusive files
//! and neither reuse nor record anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use state_api::lifecycle::{SnapshotUploads, delete_detached};
use state_api::{
    AsyncSnapshot, CheckpointStorageAccess, FileHandle, IncrementalStateHandle, KeyedStateHandle,
    NamedFile, Result, SnapshotResult, StateScope,
};

use super::eager::EagerUploader;
use super::{Frozen, UploadTracker};
use crate::backend::{BACKEND_NAME, local_error};
use crate::transfer::{self, Upload};

/// How a snapshot shares files with earlier ones.
pub(crate) struct Sharing {
    /// Whether SSTs are shared (incremental checkpoint) or exclusive
    /// (native savepoint).
    pub(crate) share: bool,
    /// The confirmed SST files at the synchronous phase.
    pub(crate) confirmed: BTreeMap<String, FileHandle>,
    /// Where the uploaded SST set is recorded.
    pub(crate) tracker: Arc<Mutex<UploadTracker>>,
    /// Where the files this snapshot uploads itself are recorded.
    pub(crate) own_uploads: SnapshotUploads,
    /// The background uploader whose uploads this snapshot may adopt.
    pub(crate) eager: Option<Arc<EagerUploader>>,
    /// This backend instance's id.
    pub(crate) backend_id: String,
    /// Parallel uploads.
    pub(crate) threads: usize,
}

/// The asynchronous phase of an incremental snapshot of `frozen`.
pub(crate) fn task(
    frozen: Frozen,
    sharing: Sharing,
    storage: Arc<dyn CheckpointStorageAccess>,
) -> AsyncSnapshot {
    let checkpoint_id = frozen.checkpoint_id;
    AsyncSnapshot::new(checkpoint_id, move || run(frozen, sharing, &storage))
}

fn run(
    frozen: Frozen,
    sharing: Sharing,
    storage: &Arc<dyn CheckpointStorageAccess>,
) -> Result<SnapshotResult> {
    let dir = frozen.dir.path();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| local_error("list", dir, e))? {
        let entry = entry.map_err(|e| local_error("list", dir, e))?;
        let name = entry.file_name().into_string().map_err(|name| {
            local_error(
                "name",
                &entry.path(),
                std::io::Error::other(format!("file name {name:?} is not UTF-8")),
            )
        })?;
        let size = entry
            .metadata()
            .map_err(|e| local_error("stat", &entry.path(), e))?
            .len();
        names.push((name, size));
    }
    names.sort();

    let mut shared_files = Vec::new();
    let mut adopted = Vec::new();
    let mut uploads = Vec::new();
    for (name, size) in names {
        let is_sst = name.ends_with(".sst");
        if is_sst && sharing.share {
            // Same name and size as a confirmed upload: the same file.
            if let Some(file) = sharing.confirmed.get(&name).filter(|f| f.size == size) {
                shared_files.push(NamedFile {
                    name,
                    file: file.clone(),
                });
                continue;
            }
            if let Some(file) = sharing
                .eager
                .as_ref()
                .and_then(|eager| eager.take(&name, size, storage))
            {
                adopted.push(NamedFile { name, file });
                continue;
            }
        }
        let scope = if is_sst && sharing.share {
            StateScope::Shared
        } else {
            StateScope::Exclusive
        };
        uploads.push(Upload {
            path: dir.join(&name),
            name,
            scope,
        });
    }

    let uploaded =
        match transfer::upload(&**storage, frozen.checkpoint_id, &uploads, sharing.threads) {
            Ok(uploaded) => uploaded,
            Err(e) => {
                // No checkpoint will refer to the adopted uploads either.
                delete_detached(
                    Arc::clone(storage),
                    adopted.into_iter().map(|f| f.file).collect(),
                );
                return Err(e);
            }
        };
    let uploaded: Vec<NamedFile> = adopted.into_iter().chain(uploaded).collect();
    let uploaded_bytes = uploaded.iter().map(|f| f.file.size).sum();
    sharing.own_uploads.record(
        frozen.checkpoint_id,
        storage,
        uploaded.iter().map(|f| f.file.clone()).collect(),
    );
    let mut private_files = Vec::new();
    for file in uploaded {
        // By what was asked, not by the returned scope: a storage may place
        // every file in shared scope (the changelog's materializations do).
        if file.name.ends_with(".sst") && sharing.share {
            shared_files.push(file);
        } else {
            private_files.push(file);
        }
    }
    shared_files.sort_by(|a, b| a.name.cmp(&b.name));
    if sharing.share {
        let set = shared_files
            .iter()
            .map(|f| (f.name.clone(), f.file.clone()))
            .collect();
        sharing.tracker.lock().record(frozen.checkpoint_id, set);
    }
    let handle = IncrementalStateHandle {
        backend: BACKEND_NAME.to_string(),
        backend_id: sharing.backend_id,
        checkpoint_id: frozen.checkpoint_id,
        max_parallelism: frozen.max_parallelism,
        key_group_range: frozen.range,
        states: frozen.metas,
        shared_files,
        private_files,
    };
    // `frozen.dir` (the hard links) is removed when `frozen` drops here.
    Ok(SnapshotResult {
        handle: KeyedStateHandle::Incremental(handle),
        uploaded_bytes,
    })
}
