//! The checkpoint lifecycle contract: who owns a file when, what the
//! notices mean, and what a backend may delete.
//!
//! # Notices
//! After the asynchronous phase of checkpoint `n`, the coordinator commits
//! it (writes `_metadata`) or gives it up, and tells the backend with
//! [`notify_checkpoint_complete`](crate::KeyedStateBackend::notify_checkpoint_complete),
//! [`notify_checkpoint_aborted`](crate::KeyedStateBackend::notify_checkpoint_aborted)
//! and, when retention drops it later,
//! [`notify_checkpoint_subsumed`](crate::KeyedStateBackend::notify_checkpoint_subsumed).
//! Notices travel over unreliable paths (RPCs, restarts), so a backend MUST
//! work when any notice is
//!
//! * **lost**: it never arrives;
//! * **repeated**: it arrives twice or more;
//! * **late or reordered**: the notice of `n` arrives after that of a newer
//!   checkpoint, or after `n` was subsumed.
//!
//! Every notice that does arrive is **true**: *complete* only after the
//! commit, *aborted* only when the checkpoint can never be committed (never
//! for a commit whose outcome is unknown: see
//! [`StateError::CommitOutcomeUnknown`](crate::StateError::CommitOutcomeUnknown)).
//! The completion of a newer checkpoint says **nothing** about an older one:
//! with several checkpoints retained, the older one may be committed and
//! retained, its notice still on the way.
//!
//! # Ownership of files
//! * **The backend** owns a file it uploaded until a checkpoint that
//!   references it is committed. It may delete such a file only when it
//!   *knows* no checkpoint referencing it will ever be committed: every
//!   checkpoint it handed the file to was aborted (a notice), or it never
//!   handed the file to any checkpoint (a failed asynchronous phase, a
//!   materialization replaced before use). [`SnapshotUploads`] keeps this
//!   bookkeeping for the files a snapshot uploaded itself. A file uploaded
//!   ahead of any snapshot (RocksDB's eager SST upload) is the backend's
//!   until a snapshot adopts it as one of its own uploads; until then no
//!   checkpoint refers to it, so the backend deletes it when no snapshot
//!   can adopt it any more.
//! * **The checkpoint store** owns every file a committed checkpoint
//!   references, from the commit on: its shared-state registry deletes a
//!   file once no retained checkpoint references it. No backend ever
//!   deletes a file a committed checkpoint may reference.
//! * **Nobody** owns the files whose checkpoints' outcomes the backend
//!   never learned (lost notices), nor those of a process that crashed.
//!   The store's garbage collection deletes them when no writer of the job
//!   is running (`CompletedCheckpointStore::collect_garbage` in
//!   `state-storage`).
//!
//! Reusing a file (an incremental checkpoint referring to a file an earlier
//! one uploaded) is allowed only for files of a checkpoint the backend knows
//! committed; the store refuses a checkpoint that refers to a file that is
//! gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::snapshot::FileHandle;
use crate::storage::CheckpointStorageAccess;

/// Aborted snapshots remembered before their upload finished; older ones
/// are forgotten (their files become garbage for the store to collect).
const MAX_EARLY_ABORTS: usize = 1024;

/// The files each snapshot of one backend uploaded itself, until the
/// snapshot's outcome is known: deleted when it is aborted, handed to the
/// checkpoint store when it completes.
///
/// Shared between a backend and its asynchronous snapshot tasks (clone
/// it: clones share the bookkeeping). A task
/// [`record`](Self::record)s its uploads when it finishes or fails; the
/// backend reports the notices. Order does not matter: an abort that
/// arrives while the task is still uploading deletes the files when the
/// task records them.
///
/// ```
/// use state_api::lifecycle::SnapshotUploads;
/// let uploads = SnapshotUploads::default();
/// // An abort before the task recorded anything is remembered ...
/// uploads.abort(1);
/// // ... and a completion hands the files to the store: nothing to track.
/// uploads.complete(2);
/// assert!(uploads.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct SnapshotUploads {
    inner: Arc<Mutex<Ledger>>,
}

#[derive(Default)]
struct Ledger {
    /// Files of snapshots whose outcome is not known, by snapshot id.
    pending: BTreeMap<u64, Recorded>,
    /// Snapshots aborted before they recorded their files.
    early_aborts: BTreeSet<u64>,
    /// Snapshots up to this id are forgotten: not tracked any more.
    forgotten_up_to: Option<u64>,
}

struct Recorded {
    storage: Arc<dyn CheckpointStorageAccess>,
    files: Vec<FileHandle>,
}

impl SnapshotUploads {
    /// Snapshot `id` uploaded `files` to `storage` (the files it wrote
    /// itself, not the ones it reuses). When `id` was aborted already, the
    /// files are deleted now.
    pub fn record(
        &self,
        id: u64,
        storage: &Arc<dyn CheckpointStorageAccess>,
        files: Vec<FileHandle>,
    ) {
        if files.is_empty() {
            return;
        }
        let mut ledger = self.lock();
        if ledger.forgotten_up_to.is_some_and(|floor| id <= floor) {
            return;
        }
        if ledger.early_aborts.remove(&id) {
            drop(ledger);
            delete_detached(Arc::clone(storage), files);
            return;
        }
        let entry = ledger.pending.entry(id).or_insert_with(|| Recorded {
            storage: Arc::clone(storage),
            files: Vec::new(),
        });
        entry.files.extend(files);
    }

    /// Checkpoint `id` was committed: the store owns its files.
    pub fn complete(&self, id: u64) {
        let mut ledger = self.lock();
        ledger.pending.remove(&id);
        ledger.early_aborts.remove(&id);
    }

    /// Checkpoint `id` will never be committed: its own uploads are deleted
    /// (in the background), now or when the snapshot records them.
    pub fn abort(&self, id: u64) {
        let mut ledger = self.lock();
        match ledger.pending.remove(&id) {
            Some(recorded) => {
                drop(ledger);
                delete_detached(recorded.storage, recorded.files);
            }
            None => {
                ledger.early_aborts.insert(id);
                while ledger.early_aborts.len() > MAX_EARLY_ABORTS {
                    ledger.early_aborts.pop_first();
                }
            }
        }
    }

    /// Forgets snapshots up to and including `id` without deleting their
    /// files: their outcome is not known and will not be learned (their
    /// notices are lost or will come too late to matter). Whatever of them
    /// was not committed is garbage for the store's collection.
    pub fn forget_up_to(&self, id: u64) {
        let mut ledger = self.lock();
        ledger.pending.retain(|pending, _| *pending > id);
        ledger.early_aborts.retain(|aborted| *aborted > id);
        ledger.forgotten_up_to = Some(ledger.forgotten_up_to.map_or(id, |floor| floor.max(id)));
    }

    /// Whether no snapshot's files are waiting for an outcome.
    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    /// Ids of snapshots whose files wait for an outcome, ascending.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.lock().pending.keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger stays consistent whatever a panicking holder did.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SnapshotUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotUploads")
            .field("pending", &self.pending_ids())
            .finish()
    }
}

/// Detached deletions running in this process.
static DETACHED_DELETIONS: AtomicUsize = AtomicUsize::new(0);

/// Deletes `files` from `storage` on a thread of its own, best effort: a
/// deletion that fails leaves garbage for the store's collection, never a
/// broken checkpoint. Keeps notice handlers (on the task thread) short.
pub fn delete_detached(storage: Arc<dyn CheckpointStorageAccess>, files: Vec<FileHandle>) {
    if files.is_empty() {
        return;
    }
    type Work = Mutex<Option<(Arc<dyn CheckpointStorageAccess>, Vec<FileHandle>)>>;
    fn run(work: &Work) {
        let taken = work.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((storage, files)) = taken {
            for file in &files {
                let _ = storage.delete(file);
            }
            DETACHED_DELETIONS.fetch_sub(1, Ordering::AcqRel);
        }
    }
    DETACHED_DELETIONS.fetch_add(1, Ordering::AcqRel);
    let work: Arc<Work> = Arc::new(Mutex::new(Some((storage, files))));
    let for_thread = Arc::clone(&work);
    let spawned = std::thread::Builder::new()
        .name("state-delete".into())
        .spawn(move || run(&for_thread));
    if spawned.is_err() {
        // No thread to be had: delete here.
        run(&work);
    }
}

/// Waits until every detached deletion of this process finished, at most
/// `timeout`; returns whether they did. For tests and orderly shutdowns
/// that check storage afterwards.
pub fn wait_for_detached_deletions(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while DETACHED_DELETIONS.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
