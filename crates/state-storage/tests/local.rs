//! The shared storage and store tests on the local file system.

// Test support code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used)]

mod common;

use state_storage::ObjectStoreCheckpointStorage;

/// A fresh temporary directory per test.
fn env() -> Option<common::Env> {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("checkpoints");
    Some(common::Env::new(
        move || ObjectStoreCheckpointStorage::local(&base, "job").unwrap(),
        Some(dir),
    ))
}

common::backend_tests!(env);

/// Files end up where Flink puts them, under `<dir>/<job-id>/`.
#[test]
fn files_are_plain_files_in_the_job_directory() {
    use std::io::Write;

    use state_api::{CheckpointStorageAccess, StateScope};

    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectStoreCheckpointStorage::local(dir.path(), "job-7").unwrap();
    let mut out = storage
        .create_output(3, StateScope::Exclusive, "heap-0")
        .unwrap();
    out.write_all(b"payload").unwrap();
    let file = out.close().unwrap();
    let on_disk = std::fs::read(dir.path().join("job-7").join(&file.path)).unwrap();
    assert_eq!(on_disk.len(), 7 + state_storage::framing::FOOTER_LEN);
    assert_eq!(&on_disk[..7], b"payload");
    assert_eq!(&on_disk[on_disk.len() - 4..], b"KSF1");
}

/// A deletion that fails leaves the store's view intact, stays pending and
/// succeeds on retry. (A directory where a file was makes `remove_file`
/// fail even for root.)
#[test]
fn failed_deletions_stay_pending_and_are_retried() {
    use std::sync::Arc;

    use state_api::{StateError, StateScope};
    use state_storage::CompletedCheckpointStore;

    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(ObjectStoreCheckpointStorage::local(dir.path(), "job").unwrap());
    let write = |id: u64, scope: StateScope| common::write_file(&storage, id, scope, "f", b"data");
    let checkpoint = common::checkpoint;
    let blocked = write(1, StateScope::Shared);
    let blocked_path = dir.path().join("job").join(&blocked.path);
    let block = || {
        std::fs::remove_file(&blocked_path).unwrap();
        std::fs::create_dir(&blocked_path).unwrap();
    };

    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    store.add(checkpoint(1, &[&blocked])).unwrap();
    block();
    // The commit of 2 succeeds and 1 is subsumed, though its shared file
    // cannot be deleted.
    let exclusive2 = write(2, StateScope::Exclusive);
    assert_eq!(store.add(checkpoint(2, &[&exclusive2])).unwrap(), [1]);
    assert_eq!(
        store
            .checkpoints()
            .map(|c| c.checkpoint_id)
            .collect::<Vec<_>>(),
        [2]
    );
    assert!(store.registry().is_empty());
    assert_eq!(store.pending_discards(), [1]);
    assert!(store.retry_pending_discards().is_err());
    assert_eq!(store.pending_discards(), [1]);

    std::fs::remove_dir(&blocked_path).unwrap();
    store.retry_pending_discards().unwrap();
    assert!(store.pending_discards().is_empty());

    // dispose reports the failure, after removing the checkpoint.
    let shared3 = write(3, StateScope::Shared);
    store.add(checkpoint(3, &[&shared3])).unwrap();
    let shared3_path = dir.path().join("job").join(&shared3.path);
    std::fs::remove_file(&shared3_path).unwrap();
    std::fs::create_dir(&shared3_path).unwrap();
    assert!(matches!(store.dispose(3), Err(StateError::Storage { .. })));
    assert!(store.get(3).is_none());
    assert!(store.latest().is_none());
    assert_eq!(store.pending_discards(), [3]);
    std::fs::remove_dir(&shared3_path).unwrap();
    // The next add retries it.
    let exclusive4 = write(4, StateScope::Exclusive);
    store.add(checkpoint(4, &[&exclusive4])).unwrap();
    assert!(store.pending_discards().is_empty());
}

/// An id whose discard is still pending cannot be committed again: the
/// retry of the discard would delete the new `chk-<n>/`.
#[test]
fn id_of_a_pending_discard_is_not_reused() {
    use std::sync::Arc;

    use state_api::{StateError, StateScope};
    use state_storage::{CompletedCheckpointStore, load_checkpoint};

    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(ObjectStoreCheckpointStorage::local(dir.path(), "job").unwrap());
    let write = |id: u64, scope: StateScope| common::write_file(&storage, id, scope, "f", b"data");
    let checkpoint = common::checkpoint;

    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let shared = write(5, StateScope::Shared);
    store.add(checkpoint(5, &[&shared])).unwrap();
    // dispose(5) fails on the shared file (a directory where it was).
    let shared_path = dir.path().join("job").join(&shared.path);
    std::fs::remove_file(&shared_path).unwrap();
    std::fs::create_dir(&shared_path).unwrap();
    assert!(matches!(store.dispose(5), Err(StateError::Storage { .. })));
    assert_eq!(store.pending_discards(), [5]);
    std::fs::remove_dir(&shared_path).unwrap();

    // A new checkpoint 5 is refused instead of being deleted by the retry.
    let again = write(5, StateScope::Exclusive);
    match store.add(checkpoint(5, &[&again])) {
        Err(StateError::Config { key, message }) => {
            assert_eq!(key, "checkpoint-id");
            assert!(message.contains("discard"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
    assert!(matches!(
        load_checkpoint(&storage, 5),
        Err(StateError::CheckpointNotFound { .. })
    ));
    assert_eq!(store.pending_discards(), [5]);

    // The next id commits, and its add retries the pending discard.
    let exclusive6 = write(6, StateScope::Exclusive);
    store.add(checkpoint(6, &[&exclusive6])).unwrap();
    assert!(store.pending_discards().is_empty());
    assert_eq!(load_checkpoint(&storage, 6).unwrap().checkpoint_id, 6);
}
