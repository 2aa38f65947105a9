//! The changelog wrapper under the checkpoint lifecycle's ugly cases:
//! commits with unknown outcome, notices that come late, twice or never,
//! materializations replaced while checkpoints that may be committed use
//! them. After each case every retained checkpoint must restore to exactly
//! the state it was taken of.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

#[allow(unused_imports)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use state_api::conformance::{Dump, StandardStates};
use state_api::lifecycle::wait_for_detached_deletions;
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt, StateError,
};
use state_changelog::{ChangelogBackendFactory, ChangelogKeyedStateBackend};
use state_storage::fault::{Fault, FaultConfig, Operation};
use state_storage::{CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, Resolution};
use state_testkit::rng::Rng;
use state_testkit::schedule::{self, Actions, Schedule};
use state_testkit::storage::{FAST_RETRY, faulty};
use state_testkit::workload::contents;

use common::{changelog_heap, changelog_rocksdb, context, manual_materialization, test_dstl};

fn all() -> KeyGroupRange {
    KeyGroupRange::all(128).unwrap()
}

/// A backend with `StandardStates` on keys `0..keys`.
fn populated(
    factory: &ChangelogBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
    keys: u64,
) -> (ChangelogKeyedStateBackend, StandardStates) {
    let mut backend = factory
        .create_changelog(context(Arc::clone(storage), all(), Vec::new()))
        .unwrap();
    let mut states = StandardStates::register(&mut backend);
    for key in 0..keys {
        states.populate(&mut backend, key);
    }
    (backend, states)
}

fn change(backend: &mut ChangelogKeyedStateBackend, states: &mut StandardStates, key: u64) {
    backend.set_key(&key).unwrap();
    match key % 3 {
        0 => states.value.update(backend, &(key * 7 + 1)).unwrap(),
        1 => states.map.put(backend, &42, &format!("v{key}")).unwrap(),
        _ => states.sum.add(backend, &3).unwrap(),
    }
}

/// Both phases of checkpoint `id`, and the state it holds.
fn checkpoint(
    backend: &mut ChangelogKeyedStateBackend,
    storage: &Arc<dyn CheckpointStorageAccess>,
    id: u64,
) -> (CompletedCheckpoint, Dump) {
    let task = backend
        .snapshot(
            id,
            &state_api::SnapshotOptions::checkpoint(id),
            Arc::clone(storage),
        )
        .unwrap();
    let model = contents(backend);
    let handle = task.run().unwrap().handle;
    let checkpoint = CompletedCheckpoint::new("job", id, 0, CheckpointKind::Checkpoint)
        .with_operator("op", vec![handle]);
    (checkpoint, model)
}

/// Restores checkpoint `id` of `store` into a new backend and compares it
/// with `model`.
fn assert_restores(
    factory: &ChangelogBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
    store: &CompletedCheckpointStore,
    id: u64,
    model: &Dump,
    what: &str,
) {
    let handles = store.get(id).unwrap().operators["op"].clone();
    let mut restored = factory
        .create_changelog(context(Arc::clone(storage), all(), handles))
        .unwrap_or_else(|e| panic!("{what}: checkpoint {id} does not restore: {e}"));
    assert!(
        contents(&mut restored) == *model,
        "{what}: checkpoint {id} restores to other state"
    );
}

/// Defect 1: the `_metadata` put of checkpoint 2 is applied, but every
/// answer is an error. The outcome is unknown, so nothing is aborted or
/// deleted; materializations replaced meanwhile keep what checkpoint 2
/// uses; the store resolves it as committed, and after a restart
/// checkpoint 2 restores.
fn unknown_commit_outcome_loses_nothing(factory: &ChangelogBackendFactory) {
    let (faults, storage) = faulty(FaultConfig::default(), "job").unwrap();
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let (mut backend, mut states) = populated(factory, &access, 100);

    let (first, _) = checkpoint(&mut backend, &access, 1);
    assert!(store.add(first).unwrap().is_empty());
    backend.notify_checkpoint_complete(1).unwrap();

    for key in 0..30 {
        change(&mut backend, &mut states, key);
    }
    backend.trigger_materialization().unwrap();
    backend.wait_for_materialization();
    change(&mut backend, &mut states, 5);
    let (second, model) = checkpoint(&mut backend, &access, 2);
    faults.inject(Operation::Put, "chk-2/_metadata", Fault::Unclear);
    faults.inject_times(
        Operation::Put,
        "chk-2/_metadata",
        Fault::Fail,
        FAST_RETRY.max_attempts - 1,
    );
    let err = store.add(second).unwrap_err();
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
    // The old job's reaction is refused by the store ...
    assert!(store.discard_pending(2).is_err());
    // ... and the backend, told nothing, goes on: materializations replace
    // the one checkpoint 2 is built on, twice.
    for round in 0..2 {
        change(&mut backend, &mut states, 60 + round);
        backend.trigger_materialization().unwrap();
        backend.wait_for_materialization();
    }
    wait_for_detached_deletions(Duration::from_secs(10));
    assert_eq!(
        store.resolve_pending_commit().unwrap(),
        Resolution::Committed {
            checkpoint_id: 2,
            subsumed: vec![1],
        }
    );
    backend.notify_checkpoint_complete(2).unwrap();
    backend.notify_checkpoint_subsumed(1).unwrap();
    drop(backend);
    wait_for_detached_deletions(Duration::from_secs(10));

    // A restart: the store keeps checkpoint 2, and it restores.
    let store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert_eq!(store.latest().unwrap().checkpoint_id, 2);
    assert_restores(factory, &access, &store, 2, &model, "after restart");
}

#[test]
fn unknown_commit_outcome_loses_nothing_over_heap() {
    unknown_commit_outcome_loses_nothing(&changelog_heap(test_dstl(), manual_materialization()));
}

#[test]
fn unknown_commit_outcome_loses_nothing_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    unknown_commit_outcome_loses_nothing(&changelog_rocksdb(
        local.path(),
        test_dstl(),
        manual_materialization(),
    ));
}

/// A backend dropped after its last checkpoint was aborted leaves nothing
/// behind (the log segment only that checkpoint included goes), while one
/// dropped with a checkpoint of unknown outcome keeps that checkpoint's
/// files, which then restore.
fn drop_after_abort_leaves_nothing(factory: &ChangelogBackendFactory) {
    let (_faults, storage) = faulty(FaultConfig::default(), "job").unwrap();
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let (mut backend, mut states) = populated(factory, &access, 50);
    let (first, _) = checkpoint(&mut backend, &access, 1);
    store.add(first).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    change(&mut backend, &mut states, 3);
    let (_aborted, _) = checkpoint(&mut backend, &access, 2);
    store.discard_pending(2).unwrap();
    backend.notify_checkpoint_aborted(2).unwrap();
    drop(backend);
    wait_for_detached_deletions(Duration::from_secs(10));
    // The shared uploader deletes on its own thread (an upload still in
    // flight at the drop is deleted when it finishes): wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = store.unreferenced_files().unwrap();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = store.unreferenced_files().unwrap();
    }
    assert_eq!(left, Vec::<String>::new());

    // Checkpoint 3 is acknowledged, its notice never comes.
    let (mut backend, mut states) = populated(factory, &access, 50);
    let (third, _) = checkpoint(&mut backend, &access, 3);
    store.add(third).unwrap();
    backend.notify_checkpoint_complete(3).unwrap();
    change(&mut backend, &mut states, 4);
    let (fourth, model) = checkpoint(&mut backend, &access, 4);
    drop(backend);
    wait_for_detached_deletions(Duration::from_secs(10));
    store.add(fourth).unwrap();
    assert_restores(factory, &access, &store, 4, &model, "notice never came");
}

#[test]
fn drop_after_abort_leaves_nothing_over_heap() {
    drop_after_abort_leaves_nothing(&changelog_heap(test_dstl(), manual_materialization()));
}

#[test]
fn drop_after_abort_leaves_nothing_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    drop_after_abort_leaves_nothing(&changelog_rocksdb(
        local.path(),
        test_dstl(),
        manual_materialization(),
    ));
}

/// Defect 5: with three checkpoints retained, the completion of checkpoint
/// 2 arrives before that of checkpoint 1, which is committed and retained.
/// Checkpoint 1's materialization and log must survive.
fn late_notice_keeps_the_older_checkpoint(factory: &ChangelogBackendFactory) {
    let (_faults, storage) = faulty(FaultConfig::default(), "job").unwrap();
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 3).unwrap();
    let (mut backend, mut states) = populated(factory, &access, 100);
    let (first, first_model) = checkpoint(&mut backend, &access, 1);
    store.add(first).unwrap();
    // A new materialization replaces checkpoint 1's before its notice.
    change(&mut backend, &mut states, 7);
    backend.trigger_materialization().unwrap();
    backend.wait_for_materialization();
    change(&mut backend, &mut states, 8);
    let (second, second_model) = checkpoint(&mut backend, &access, 2);
    store.add(second).unwrap();
    backend.notify_checkpoint_complete(2).unwrap();
    // More materializations, then the late notice, twice.
    change(&mut backend, &mut states, 9);
    backend.trigger_materialization().unwrap();
    backend.wait_for_materialization();
    backend.notify_checkpoint_complete(1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    wait_for_detached_deletions(Duration::from_secs(10));
    assert_restores(factory, &access, &store, 1, &first_model, "late notice");
    assert_restores(factory, &access, &store, 2, &second_model, "late notice");
}

#[test]
fn late_notice_keeps_the_older_checkpoint_over_heap() {
    late_notice_keeps_the_older_checkpoint(&changelog_heap(test_dstl(), manual_materialization()));
}

#[test]
fn late_notice_keeps_the_older_checkpoint_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    late_notice_keeps_the_older_checkpoint(&changelog_rocksdb(
        local.path(),
        test_dstl(),
        manual_materialization(),
    ));
}

/// Materializations now and then, sometimes waited for.
struct Materialize;

impl Actions<ChangelogKeyedStateBackend> for Materialize {
    fn act(&mut self, backend: &mut ChangelogKeyedStateBackend, rng: &mut Rng) {
        backend.trigger_materialization().unwrap();
        if rng.chance(1, 2) {
            backend.wait_for_materialization();
        }
    }

    fn quiesce(&mut self, backend: &mut ChangelogKeyedStateBackend) {
        backend.wait_for_materialization();
    }
}

/// Seeded random schedules (see `state_testkit::schedule`): changes,
/// checkpoints (some full), aborts, materializations, notices delivered
/// late, reordered, twice or never, three checkpoints retained. Every
/// retained checkpoint restores to its model during the run and after
/// collection, which leaves exactly the referenced files. Defects 2 and 5
/// broke a few seeds in 50.
fn random_schedules(factory: &ChangelogBackendFactory, seeds: std::ops::Range<u64>, faults: f64) {
    for seed in seeds {
        let schedule = Schedule {
            fault_rate: faults,
            ..Schedule::new(seed)
        };
        let create = |context| factory.create_changelog(context);
        if let Err(e) = schedule::run(&schedule, create, &mut Materialize) {
            panic!("{e}");
        }
    }
}

#[test]
fn random_schedules_over_heap() {
    random_schedules(
        &changelog_heap(test_dstl(), manual_materialization()),
        schedule::seeds(0, 300),
        0.0,
    );
}

#[test]
fn random_schedules_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    random_schedules(
        &changelog_rocksdb(local.path(), test_dstl(), manual_materialization()),
        schedule::seeds(0, 30),
        0.0,
    );
}

#[test]
fn random_schedules_with_storage_faults_over_heap() {
    random_schedules(
        &changelog_heap(test_dstl(), manual_materialization()),
        schedule::seeds(1000, 100),
        0.1,
    );
}

#[test]
fn random_schedules_with_storage_faults_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    random_schedules(
        &changelog_rocksdb(local.path(), test_dstl(), manual_materialization()),
        schedule::seeds(1000, 20),
        0.1,
    );
}

/// Checkpoint storage that panics when a file is created while `panic` is
/// set (a bug in a storage or backend, as a panic in an asynchronous
/// snapshot would be).
struct PanickingStorage {
    inner: Arc<dyn CheckpointStorageAccess>,
    panic: std::sync::atomic::AtomicBool,
}

impl CheckpointStorageAccess for PanickingStorage {
    fn create_output(
        &self,
        checkpoint_id: u64,
        scope: state_api::StateScope,
        name_hint: &str,
    ) -> state_api::Result<Box<dyn state_api::CheckpointOutputStream>> {
        if self.panic.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("injected panic creating {name_hint}");
        }
        self.inner.create_output(checkpoint_id, scope, name_hint)
    }
    fn read(&self, file: &state_api::FileHandle) -> state_api::Result<bytes::Bytes> {
        self.inner.read(file)
    }
    fn read_range(
        &self,
        file: &state_api::FileHandle,
        range: std::ops::Range<u64>,
    ) -> state_api::Result<bytes::Bytes> {
        self.inner.read_range(file, range)
    }
    fn delete(&self, file: &state_api::FileHandle) -> state_api::Result<()> {
        self.inner.delete(file)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// A panic in the wrapped backend's asynchronous snapshot used to leave
/// everyone waiting for the materialization blocked forever; now they get
/// an error, and the next materialization works.
#[test]
fn a_panicking_materialization_wakes_its_waiters() {
    let (_faults, storage) = faulty(FaultConfig::default(), "job").unwrap();
    let panicking = Arc::new(PanickingStorage {
        inner: storage,
        panic: std::sync::atomic::AtomicBool::new(false),
    });
    let access: Arc<dyn CheckpointStorageAccess> = panicking.clone();
    let factory = changelog_heap(test_dstl(), manual_materialization());
    let (mut backend, mut states) = populated(&factory, &access, 50);
    let (first, _) = checkpoint(&mut backend, &access, 1);
    drop(first);
    backend.notify_checkpoint_complete(1).unwrap();
    change(&mut backend, &mut states, 3);

    panicking
        .panic
        .store(true, std::sync::atomic::Ordering::Relaxed);
    backend.trigger_materialization().unwrap();
    let (done, waited) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let succeeded = backend.wait_for_materialization();
        let _ = done.send(succeeded);
        backend
    });
    let succeeded = waited
        .recv_timeout(Duration::from_secs(30))
        .expect("the waiter is woken, not blocked forever");
    assert!(!succeeded, "a panicked materialization does not succeed");
    let mut backend = waiter.join().unwrap();
    assert_eq!(backend.stats().failed_materializations, 1);

    panicking
        .panic
        .store(false, std::sync::atomic::Ordering::Relaxed);
    change(&mut backend, &mut states, 4);
    backend.trigger_materialization().unwrap();
    assert!(backend.wait_for_materialization());
}
