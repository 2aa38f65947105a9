//! Eager upload: SST files go to checkpoint storage as soon as a flush or
//! compaction creates them, so a checkpoint's asynchronous phase finds them
//! uploaded already and its time follows the changes, not the compactions.
//!
//! A background thread looks at the DB's live SST files every
//! [`POLL_INTERVAL`] (the `rocksdb` crate has no event listener). A file it
//! has not seen, that no confirmed checkpoint uploaded and that no checkpoint
//! claimed, is opened (the open descriptor keeps its content readable even
//! if a compaction deletes it meanwhile) and uploaded to shared scope.
//!
//! # Who owns an eager upload
//! * **The uploader**, from the upload until a checkpoint adopts it. No
//!   checkpoint refers to it, so the uploader deletes it when no checkpoint
//!   can need it any more: its SST left the DB (compacted away before any
//!   checkpoint took it), a confirmed checkpoint holds the SST under another
//!   upload, the storage changed, or the backend closes.
//! * **The adopting checkpoint**, from the moment its asynchronous phase
//!   [`take`](EagerUploader::take)s it: the upload becomes one of the
//!   snapshot's own uploads (`SnapshotUploads`), exactly as if the snapshot
//!   had uploaded it, so the lifecycle contract of `state_api::lifecycle`
//!   applies unchanged (deleted on abort, the store's from the commit on).
//!   An upload is adopted at most once; a second checkpoint before the
//!   first is confirmed uploads the file itself, as without eager upload.
//! * **Nobody**, after a crash: the store's garbage collection deletes it
//!   (it is in `shared/` and no checkpoint refers to it).
//!
//! A checkpoint that needs a file the uploader is uploading waits for it
//! (it would upload the same bytes itself); one that needs a file the
//! uploader has not started claims it, and the uploader leaves it alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use state_api::{CheckpointStorageAccess, FileHandle, StateScope};

use super::UploadTracker;
use crate::backend::Db;
use crate::transfer;

/// How often the uploader looks for new SST files.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What an eager uploader did so far: the benefit (bytes checkpoints found
/// uploaded) and the cost (bytes uploaded for files compacted away before
/// any checkpoint needed them).
///
/// ```
/// let stats = state_rocksdb::EagerUploadStats::default();
/// assert_eq!(stats.bytes_uploaded, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EagerUploadStats {
    /// SST files uploaded ahead of a checkpoint.
    pub files_uploaded: u64,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Uploads a checkpoint's asynchronous phase adopted instead of
    /// uploading the file itself.
    pub files_adopted: u64,
    /// Their bytes.
    pub bytes_adopted: u64,
    /// Uploads deleted again because no checkpoint could need them.
    pub files_discarded: u64,
    /// Their bytes.
    pub bytes_discarded: u64,
    /// Eager uploads that failed (the checkpoint then uploads the file).
    pub failures: u64,
}

/// One SST file the uploader handles.
enum Entry {
    /// Being uploaded; a checkpoint that needs it waits.
    Uploading,
    /// Uploaded and owned by the uploader until a checkpoint adopts it.
    Ready(Upload),
}

/// A finished eager upload.
struct Upload {
    handle: FileHandle,
    storage: Arc<dyn CheckpointStorageAccess>,
}

#[derive(Default)]
struct State {
    /// Where uploads go: the storage of the latest incremental checkpoint.
    storage: Option<Arc<dyn CheckpointStorageAccess>>,
    /// The checkpoint id uploads are made under (the latest one).
    checkpoint_id: u64,
    entries: BTreeMap<String, Entry>,
    /// Files the uploader must leave alone: claimed or adopted by a
    /// checkpoint, or failed once. Pruned to the live files (RocksDB never
    /// reuses a file number, so a name that left never comes back).
    skip: BTreeSet<String>,
    stats: EagerUploadStats,
    /// Scans requested and scans finished, for [`EagerUploader::settle`].
    scans_requested: u64,
    scans_done: u64,
    stop: bool,
}

impl State {
    /// Removes the finished uploads whose SST `name` matches `discard`:
    /// no checkpoint will adopt them, the caller deletes them.
    fn discard_where(&mut self, discard: impl Fn(&str) -> bool) -> Vec<Upload> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(name, entry)| matches!(entry, Entry::Ready(_)) && discard(name))
            .map(|(name, _)| name.clone())
            .collect();
        let mut discarded = Vec::new();
        for name in names {
            if let Some(Entry::Ready(upload)) = self.entries.remove(&name) {
                self.count_discarded(&upload);
                discarded.push(upload);
            }
        }
        discarded
    }

    fn count_discarded(&mut self, upload: &Upload) {
        self.stats.files_discarded += 1;
        self.stats.bytes_discarded += upload.handle.size;
    }
}

struct Shared {
    /// The DB whose live files are scanned. Never cloned out: the backend
    /// takes it back (`detach_db`) when it needs the DB to itself.
    db: Mutex<Option<Arc<Db>>>,
    state: Mutex<State>,
    /// Signalled when an entry changes or a scan finishes.
    changed: Condvar,
    /// Signalled to wake the thread early (a scan request, the stop).
    wake: Condvar,
}

/// The background uploader of one backend instance.
pub(crate) struct EagerUploader {
    shared: Arc<Shared>,
    /// Taken by [`stop`](Self::stop).
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EagerUploader {
    /// Starts the uploader of `db`; it uploads nothing until
    /// [`use_storage`](Self::use_storage) names a storage.
    pub(crate) fn start(
        db: Arc<Db>,
        tracker: Arc<Mutex<UploadTracker>>,
        threads: usize,
    ) -> std::io::Result<Self> {
        let dir = db.path().to_path_buf();
        let shared = Arc::new(Shared {
            db: Mutex::new(Some(db)),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rocksdb-eager-upload".into())
            .spawn(move || run(&for_thread, &dir, &tracker, threads.max(1)))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Gives the DB back: when this returns, the uploader holds no
    /// reference to it (creating a column family needs the DB to itself).
    /// Scans find nothing until [`attach_db`](Self::attach_db).
    pub(crate) fn detach_db(&self) {
        self.shared.db.lock().take();
    }

    /// Lets scans use `db` again.
    pub(crate) fn attach_db(&self, db: &Arc<Db>) {
        *self.shared.db.lock() = Some(Arc::clone(db));
    }

    /// Uploads go to `storage` from now on, under `checkpoint_id`. Uploads
    /// made to another storage before are deleted: no checkpoint of this
    /// one can adopt them.
    pub(crate) fn use_storage(
        &self,
        storage: &Arc<dyn CheckpointStorageAccess>,
        checkpoint_id: u64,
    ) {
        let stale;
        {
            let mut state = self.shared.state.lock();
            state.checkpoint_id = checkpoint_id;
            if state
                .storage
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, storage))
            {
                return;
            }
            state.storage = Some(Arc::clone(storage));
            stale = state.discard_where(|_| true);
        }
        delete(stale);
    }

    /// The eager upload of SST `name` with `size` bytes to `storage`, for a
    /// checkpoint's asynchronous phase: the caller adopts it (it becomes
    /// the snapshot's own upload). Waits while the file is being uploaded.
    /// `None` when there is none: the caller uploads the file itself, and
    /// the uploader leaves that file alone from now on.
    pub(crate) fn take(
        &self,
        name: &str,
        size: u64,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Option<FileHandle> {
        let mut state = self.shared.state.lock();
        while matches!(state.entries.get(name), Some(Entry::Uploading)) {
            self.shared.changed.wait(&mut state);
        }
        state.skip.insert(name.to_string());
        let Some(Entry::Ready(upload)) = state.entries.remove(name) else {
            return None;
        };
        if upload.handle.size == size && Arc::ptr_eq(&upload.storage, storage) {
            state.stats.files_adopted += 1;
            state.stats.bytes_adopted += size;
            return Some(upload.handle);
        }
        // Not the file or not the storage the checkpoint writes to.
        state.count_discarded(&upload);
        drop(state);
        delete(vec![upload]);
        None
    }

    /// Looks for new files now and waits until that scan's uploads are done
    /// (or the uploader stopped). For tests and benchmarks that need a
    /// known state.
    pub(crate) fn settle(&self) {
        let mut state = self.shared.state.lock();
        state.scans_requested += 1;
        let wanted = state.scans_requested;
        self.shared.wake.notify_all();
        while state.scans_done < wanted && !state.stop {
            self.shared.changed.wait(&mut state);
        }
    }

    /// What the uploader did so far.
    pub(crate) fn stats(&self) -> EagerUploadStats {
        self.shared.state.lock().stats
    }

    /// Stops the thread (after its uploads in flight) and deletes every
    /// upload no checkpoint adopted. The backend calls it before its DB
    /// closes (the thread holds the DB); later calls do nothing more.
    pub(crate) fn stop(&self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        self.shared.changed.notify_all();
        self.detach_db();
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        // The thread is gone, so nothing is `Uploading` any more.
        let leftovers = self.shared.state.lock().discard_where(|_| true);
        delete(leftovers);
        self.shared.changed.notify_all();
    }
}

impl Drop for EagerUploader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deletes uploads nobody refers to, best effort (a failure leaves garbage
/// for the store's collection, never a broken checkpoint).
fn delete(uploads: Vec<Upload>) {
    // One deleting thread per storage, not per file (a closing backend may
    // hold many).
    let mut batches: Vec<(Arc<dyn CheckpointStorageAccess>, Vec<FileHandle>)> = Vec::new();
    for upload in uploads {
        match batches
            .iter_mut()
            .find(|(storage, _)| Arc::ptr_eq(storage, &upload.storage))
        {
            Some((_, files)) => files.push(upload.handle),
            None => batches.push((upload.storage, vec![upload.handle])),
        }
    }
    for (storage, files) in batches {
        state_api::lifecycle::delete_detached(storage, files);
    }
}

/// The thread: scan, upload, repeat until stopped.
fn run(shared: &Shared, dir: &Path, tracker: &Mutex<UploadTracker>, threads: usize) {
    loop {
        let wanted = {
            let mut state = shared.state.lock();
            if state.scans_done == state.scans_requested && !state.stop {
                shared.wake.wait_for(&mut state, POLL_INTERVAL);
            }
            if state.stop {
                return;
            }
            state.scans_requested
        };
        scan(shared, dir, tracker, threads);
        let mut state = shared.state.lock();
        state.scans_done = state.scans_done.max(wanted);
        shared.changed.notify_all();
    }
}

/// One look at the live files: discards uploads no checkpoint can need,
/// uploads the new files.
fn scan(shared: &Shared, dir: &Path, tracker: &Mutex<UploadTracker>, threads: usize) {
    // Live files can be listed on any thread; a failure or a detached DB
    // means "try later".
    let listed = shared.db.lock().as_ref().map(|db| db.live_files());
    let Some(Ok(files)) = listed else { return };
    let live: BTreeMap<String, u64> = files
        .into_iter()
        .map(|f| (f.name.trim_start_matches('/').to_string(), f.size as u64))
        .collect();
    let confirmed = tracker.lock().confirmed_names();
    let (storage, checkpoint_id, todo, discarded) = {
        let mut state = shared.state.lock();
        let Some(storage) = state.storage.clone() else {
            return;
        };
        state.skip.retain(|name| live.contains_key(name));
        let discarded =
            state.discard_where(|name| !live.contains_key(name) || confirmed.contains(name));
        let todo: Vec<String> = live
            .keys()
            .filter(|name| {
                !state.entries.contains_key(*name)
                    && !state.skip.contains(*name)
                    && !confirmed.contains(*name)
            })
            .cloned()
            .collect();
        (storage, state.checkpoint_id, todo, discarded)
    };
    delete(discarded);
    let _ = transfer::run_parallel(&todo, threads, |name| {
        upload_one(shared, &storage, checkpoint_id, dir, name);
        Ok(())
    });
}

/// An `Uploading` entry whose upload failed or unwound: released on drop,
/// and the file skipped (a checkpoint that needs it uploads it).
struct Claim<'a> {
    shared: &'a Shared,
    name: &'a str,
    /// Cleared once the upload succeeded or found its file gone.
    armed: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.shared.state.lock();
        state.entries.remove(self.name);
        state.skip.insert(self.name.to_string());
        state.stats.failures += 1;
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// Uploads one file unless a checkpoint claimed it first or the uploader
/// is stopping.
fn upload_one(
    shared: &Shared,
    storage: &Arc<dyn CheckpointStorageAccess>,
    checkpoint_id: u64,
    dir: &Path,
    name: &str,
) {
    {
        let mut state = shared.state.lock();
        if state.stop || state.skip.contains(name) || state.entries.contains_key(name) {
            return;
        }
        state.entries.insert(name.to_string(), Entry::Uploading);
    }
    // Should the upload fail or panic, the entry must not stay `Uploading`:
    // a checkpoint waiting for it would wait forever.
    let mut claim = Claim {
        shared,
        name,
        armed: true,
    };
    // Opened before anything else: a compaction may delete the file any
    // moment, and the descriptor keeps its content. A failure returns with
    // the claim armed.
    let uploaded = match File::open(dir.join(name)) {
        Ok(file) => {
            let Ok(handle) =
                transfer::upload_file(&**storage, checkpoint_id, StateScope::Shared, name, &file)
            else {
                return;
            };
            Some(handle)
        }
        // Compacted away since the scan: no checkpoint can need it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return,
    };
    claim.armed = false;
    let mut state = shared.state.lock();
    match uploaded {
        None => {
            state.entries.remove(name);
        }
        Some(handle) => {
            state.stats.files_uploaded += 1;
            state.stats.bytes_uploaded += handle.size;
            state.entries.insert(
                name.to_string(),
                Entry::Ready(Upload {
                    handle,
                    storage: Arc::clone(storage),
                }),
            );
        }
    }
    drop(state);
    shared.changed.notify_all();
}
