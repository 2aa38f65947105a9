//! The storage and the store on a store that fails, delays and lies
//! ([`FaultInjectingStore`]): retries, commits with an unknown outcome and
//! their resolution, garbage collection.

// Test support code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros, unused_imports)]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use state_api::{CheckpointStorageAccess, StateError, StateScope};
use state_storage::fault::{Fault, FaultConfig, FaultInjectingStore, Operation};
use state_storage::retry::RetryPolicy;
use state_storage::{
    CompletedCheckpointStore, ObjectStoreCheckpointStorage, Resolution, load_checkpoint,
};

use common::{checkpoint, write_file};

/// Retries fast enough for tests.
const FAST: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_backoff: Duration::from_millis(1),
    max_backoff: Duration::from_millis(4),
};

fn faulty(config: FaultConfig) -> (Arc<FaultInjectingStore>, Arc<ObjectStoreCheckpointStorage>) {
    let store = Arc::new(FaultInjectingStore::new(Arc::new(InMemory::new()), config));
    let storage = ObjectStoreCheckpointStorage::new(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        Path::default(),
        "job",
    )
    .unwrap()
    .with_retry(FAST);
    (store, Arc::new(storage))
}

fn listed(storage: &ObjectStoreCheckpointStorage) -> BTreeSet<String> {
    storage.list_files(None).unwrap().into_iter().collect()
}

/// At 20% failing calls (half of the writes applied but reported failed),
/// every write, read and listing still succeeds, and nothing is stored
/// twice.
#[test]
fn transient_faults_are_retried() {
    let (store, storage) = faulty(FaultConfig::failing(11, 0.2));
    let mut written = Vec::new();
    for i in 0..200u32 {
        let bytes = i.to_le_bytes().repeat(10);
        let file = write_file(&storage, 1, StateScope::Shared, "f", &bytes);
        written.push((file, bytes));
    }
    for (file, bytes) in &written {
        assert_eq!(&storage.read(file).unwrap()[..], &bytes[..]);
    }
    assert_eq!(listed(&storage).len(), 200);
    let stats = store.stats();
    assert!(stats.failed > 20 && stats.unclear > 10, "{stats:?}");
}

/// A `_metadata` put that the store applies but reports as failed is
/// resolved by the retry itself: the next attempt finds the same bytes.
#[test]
fn an_unclear_metadata_put_is_absorbed_by_the_retry() {
    let (store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let file = write_file(&storage, 1, StateScope::Exclusive, "heap", b"state");
    store.inject(Operation::Put, "_metadata", Fault::Unclear);
    assert_eq!(
        checkpoints.add(checkpoint(1, &[&file])).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(store.stats().unclear, 1);
    assert_eq!(load_checkpoint(&storage, 1).unwrap().checkpoint_id, 1);
}

/// Defect 1 at the store: a `_metadata` put applied on the server while
/// every answer fails is neither committed nor aborted. The store keeps it
/// as the pending commit: its files are protected, it cannot be discarded,
/// no other checkpoint is added before it, and resolving it once storage
/// answers adopts it (subsuming the older one).
#[test]
fn a_commit_with_unknown_outcome_is_resolved_never_guessed() {
    let (store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let shared = write_file(&storage, 1, StateScope::Shared, "sst", b"shared");
    let first = write_file(&storage, 1, StateScope::Exclusive, "heap", b"one");
    checkpoints.add(checkpoint(1, &[&first, &shared])).unwrap();

    let second = write_file(&storage, 2, StateScope::Exclusive, "heap", b"two");
    store.inject(Operation::Put, "chk-2/_metadata", Fault::Unclear);
    store.inject_times(
        Operation::Put,
        "chk-2/_metadata",
        Fault::Fail,
        FAST.max_attempts - 1,
    );
    let err = checkpoints
        .add(checkpoint(2, &[&second, &shared]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::CommitOutcomeUnknown {
                checkpoint_id: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(checkpoints.pending_commit(), Some(2));
    // What the job used to do: discard it. Refused.
    assert!(matches!(
        checkpoints.discard_pending(2),
        Err(StateError::CommitOutcomeUnknown {
            checkpoint_id: 2,
            ..
        })
    ));
    // Nothing else is added before it is resolved.
    let third = write_file(&storage, 3, StateScope::Exclusive, "heap", b"three");
    assert!(matches!(
        checkpoints.add(checkpoint(3, &[&third])),
        Err(StateError::Config { .. })
    ));
    // Storage still fails: still unknown.
    store.inject(Operation::Get, "chk-2/_metadata", Fault::Fail);
    store.inject_times(
        Operation::Get,
        "chk-2/_metadata",
        Fault::Fail,
        FAST.max_attempts - 1,
    );
    assert!(matches!(
        checkpoints.resolve_pending_commit(),
        Err(StateError::CommitOutcomeUnknown {
            checkpoint_id: 2,
            ..
        })
    ));
    assert_eq!(
        checkpoints.resolve_pending_commit().unwrap(),
        Resolution::Committed {
            checkpoint_id: 2,
            subsumed: vec![1],
        }
    );
    assert_eq!(checkpoints.latest().unwrap().checkpoint_id, 2);
    assert_eq!(
        checkpoints.resolve_pending_commit().unwrap(),
        Resolution::NothingPending
    );
    // Checkpoint 2 restores: its files and the shared one are there.
    for file in [&second, &shared] {
        storage.read(file).unwrap();
    }
    assert!(matches!(
        storage.read(&first),
        Err(StateError::FileNotFound { .. })
    ));
    // A new process sees the same.
    let reopened = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert_eq!(reopened.latest().unwrap().checkpoint_id, 2);
}

/// A pending commit whose put never reached the store is committed by the
/// resolution (the put is made again), so a request still under way cannot
/// store it later behind the store's back.
#[test]
fn a_pending_commit_that_never_landed_is_put_again() {
    let (store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let file = write_file(&storage, 1, StateScope::Exclusive, "heap", b"one");
    store.inject_times(
        Operation::Put,
        "chk-1/_metadata",
        Fault::Fail,
        FAST.max_attempts,
    );
    assert!(matches!(
        checkpoints.add(checkpoint(1, &[&file])),
        Err(StateError::CommitOutcomeUnknown { .. })
    ));
    assert!(storage.get_object("chk-1/_metadata").is_err());
    assert_eq!(
        checkpoints.resolve_pending_commit().unwrap(),
        Resolution::Committed {
            checkpoint_id: 1,
            subsumed: vec![],
        }
    );
    assert_eq!(load_checkpoint(&storage, 1).unwrap().checkpoint_id, 1);
}

/// Another writer's `_metadata` under the pending id: this checkpoint was
/// never committed, and the store says so.
#[test]
fn a_pending_commit_lost_to_another_writer_is_not_committed() {
    let (store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let file = write_file(&storage, 1, StateScope::Exclusive, "heap", b"one");
    store.inject_times(
        Operation::Put,
        "chk-1/_metadata",
        Fault::Fail,
        FAST.max_attempts,
    );
    assert!(checkpoints.add(checkpoint(1, &[&file])).is_err());
    let other = write_file(&storage, 1, StateScope::Exclusive, "other", b"other");
    let mut rival = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    rival.add(checkpoint(1, &[&other])).unwrap();
    assert_eq!(
        checkpoints.resolve_pending_commit().unwrap(),
        Resolution::NotCommitted { checkpoint_id: 1 }
    );
    assert!(checkpoints.latest().is_none());
}

/// Collection keeps exactly what retained checkpoints reference (and
/// task-owned files) and deletes the rest: aborted checkpoints' shared
/// files, directories of crashed checkpoints above and below the latest.
#[test]
fn collection_deletes_exactly_the_unreferenced_files() {
    let (_store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    let shared = write_file(&storage, 1, StateScope::Shared, "sst", b"s");
    let one = write_file(&storage, 1, StateScope::Exclusive, "heap", b"1");
    checkpoints.add(checkpoint(1, &[&one, &shared])).unwrap();
    let two = write_file(&storage, 3, StateScope::Exclusive, "heap", b"3");
    checkpoints.add(checkpoint(3, &[&two, &shared])).unwrap();
    let owned = write_file(&storage, 1, StateScope::TaskOwned, "owned", b"t");
    let expected = listed(&storage);

    let orphans = [
        write_file(&storage, 2, StateScope::Shared, "aborted-sst", b"x"),
        write_file(&storage, 2, StateScope::Exclusive, "crashed", b"x"),
        write_file(
            &storage,
            9,
            StateScope::Exclusive,
            "in-flight-at-crash",
            b"x",
        ),
    ];
    let report = checkpoints.collect_garbage().unwrap();
    assert_eq!(listed(&storage), expected);
    let deleted: BTreeSet<String> = report.deleted.into_iter().collect();
    let orphan_paths: BTreeSet<String> = orphans.iter().map(|f| f.path.clone()).collect();
    assert_eq!(deleted, orphan_paths);
    storage.read(&owned).unwrap();
    // Nothing left to collect.
    assert!(checkpoints.collect_garbage().unwrap().deleted.is_empty());
}

/// Failed deletions during collection are reported and retried by the next
/// collection.
#[test]
fn collection_survives_failing_deletes() {
    let (store, storage) = faulty(FaultConfig::default());
    let mut checkpoints = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let orphan = write_file(&storage, 1, StateScope::Shared, "orphan", b"x");
    store.inject_times(Operation::Delete, "orphan", Fault::Fail, FAST.max_attempts);
    assert!(matches!(
        checkpoints.collect_garbage(),
        Err(StateError::Storage { .. })
    ));
    assert_eq!(
        checkpoints.collect_garbage().unwrap().deleted,
        [orphan.path]
    );
    assert!(listed(&storage).is_empty());
}

/// A `_metadata` (or any object read whole with a limit) larger than the
/// limit is refused before a byte of it is loaded.
#[test]
fn oversized_objects_are_refused_before_loading() {
    let (_store, storage) = faulty(FaultConfig::default());
    let file = write_file(&storage, 1, StateScope::Exclusive, "big", &[7u8; 100]);
    let err = storage.get_object_at_most(&file.path, 50).unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path, reason } if *path == file.path && reason.contains("more than the limit")),
        "{err}"
    );
    assert_eq!(
        storage.get_object_at_most(&file.path, 200).unwrap().len(),
        116
    );
}
