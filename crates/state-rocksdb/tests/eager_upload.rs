//! Eager upload of SST files: a checkpoint after a compaction adopts the
//! compaction's uploads instead of uploading them; uploads no checkpoint can
//! need are deleted; failures fall back to the checkpoint's own upload.
//! Every test ends with the invariants: the last checkpoint restores to the
//! backend's contents, and storage holds exactly the checkpoints' files.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{MAX_P, all, contents, incremental};
use state_api::conformance::StandardStates;
use state_api::lifecycle::wait_for_detached_deletions;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyedStateBackend, KeyedStateHandle, SnapshotOptions,
    SnapshotResult,
};
use state_rocksdb::{
    RocksDbBackendFactory, RocksDbConfig, RocksDbKeyedStateBackend, RocksDbMemory,
};
use state_storage::ObjectStoreCheckpointStorage;
use state_storage::fault::{FaultConfig, FaultInjectingStore};
use state_testkit::storage::{access, faulty};

struct Setup {
    _dir: tempfile::TempDir,
    factory: RocksDbBackendFactory,
    faults: Arc<FaultInjectingStore>,
    storage: Arc<ObjectStoreCheckpointStorage>,
    access: Arc<dyn CheckpointStorageAccess>,
}

fn setup(eager: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksDbConfig::new(dir.path())
        .with_memory(RocksDbMemory::new(64 << 20).unwrap())
        .with_eager_upload(eager);
    let (faults, storage) = faulty(FaultConfig::default(), "job").unwrap();
    faults.set_enabled(false);
    Setup {
        _dir: dir,
        factory: RocksDbBackendFactory::new(config),
        faults,
        access: access(&storage),
        storage,
    }
}

impl Setup {
    fn backend(&self, restore: Vec<KeyedStateHandle>) -> RocksDbKeyedStateBackend {
        self.factory
            .create_backend(BackendContext {
                operator: "op".into(),
                max_parallelism: MAX_P,
                key_group_range: all(),
                restore,
                storage: Arc::clone(&self.access),
                restore_storage: None,
                skip_restored_states: Vec::new(),
            })
            .unwrap()
    }

    fn snapshot(&self, backend: &mut RocksDbKeyedStateBackend, id: u64) -> SnapshotResult {
        backend
            .snapshot(
                id,
                &SnapshotOptions::checkpoint(id),
                Arc::clone(&self.access),
            )
            .unwrap()
            .run()
            .unwrap()
    }

    fn checkpoint(&self, backend: &mut RocksDbKeyedStateBackend, id: u64) -> SnapshotResult {
        let result = self.snapshot(backend, id);
        backend.notify_checkpoint_complete(id).unwrap();
        result
    }

    fn stored(&self) -> BTreeSet<String> {
        self.storage.list_files(None).unwrap().into_iter().collect()
    }

    /// The invariants after the backend is gone: `last` restores to
    /// `model`, and storage holds exactly the files of `kept`.
    fn check(
        &self,
        last: &SnapshotResult,
        model: &state_api::conformance::Dump,
        kept: &[&SnapshotResult],
    ) {
        assert!(wait_for_detached_deletions(Duration::from_secs(30)));
        let mut restored = self.backend(vec![last.handle.clone()]);
        assert!(contents(&mut restored) == *model, "restored state differs");
        drop(restored);
        let referenced: BTreeSet<String> = kept
            .iter()
            .flat_map(|r| r.handle.files())
            .map(|f| f.path.clone())
            .collect();
        assert_eq!(
            self.stored(),
            referenced,
            "storage holds exactly the checkpoints' files"
        );
    }
}

fn populate(backend: &mut RocksDbKeyedStateBackend, keys: std::ops::Range<u64>) -> StandardStates {
    let mut states = StandardStates::register(backend);
    for k in keys {
        states.populate(backend, k);
    }
    states
}

fn new_shared_bytes(result: &SnapshotResult, earlier: &SnapshotResult) -> u64 {
    let old: BTreeSet<&str> = incremental(&earlier.handle)
        .shared_files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    incremental(&result.handle)
        .shared_files
        .iter()
        .filter(|f| !old.contains(f.name.as_str()))
        .map(|f| f.file.size)
        .sum()
}

/// A backend holding `keys` keys and their completed checkpoint 1.
struct Started {
    backend: RocksDbKeyedStateBackend,
    states: StandardStates,
    keys: u64,
    first: SnapshotResult,
}

impl Setup {
    fn start(&self, keys: u64) -> Started {
        let mut backend = self.backend(Vec::new());
        let states = populate(&mut backend, 0..keys);
        let first = self.checkpoint(&mut backend, 1);
        Started {
            backend,
            states,
            keys,
            first,
        }
    }

    /// Closes the backend and checks the invariants with its contents as
    /// the model.
    fn finish(
        &self,
        mut backend: RocksDbKeyedStateBackend,
        last: &SnapshotResult,
        kept: &[&SnapshotResult],
    ) {
        let model = contents(&mut backend);
        drop(backend);
        self.check(last, &model, kept);
    }
}

impl Started {
    /// Rewrites every key (`shift` changes the values), compacts, and lets
    /// the eager uploader catch up.
    fn rewrite_and_compact(&mut self, shift: u64) {
        for k in 0..self.keys {
            self.states.populate(&mut self.backend, k + shift);
        }
        self.backend.compact().unwrap();
        self.backend.settle_eager_uploads();
    }
}

#[test]
fn a_checkpoint_after_a_compaction_adopts_its_uploads() {
    let setup = setup(true);
    let mut run = setup.start(4_000);
    run.rewrite_and_compact(7);
    let before = run.backend.eager_upload_stats().unwrap();
    assert!(before.files_uploaded > 0, "{before:?}");

    let second = setup.checkpoint(&mut run.backend, 2);
    let stats = run.backend.eager_upload_stats().unwrap();
    let adopted = stats.bytes_adopted - before.bytes_adopted;
    // The compaction's output is every new SST of checkpoint 2 (its own
    // flush found an empty memtable): the asynchronous phase uploaded none.
    assert_eq!(adopted, new_shared_bytes(&second, &run.first), "{stats:?}");
    assert!(adopted > 0);
    setup.finish(run.backend, &second, &[&run.first, &second]);
}

#[test]
fn uploads_compacted_away_before_any_checkpoint_are_deleted() {
    let setup = setup(true);
    let mut run = setup.start(2_000);
    for round in 0..3 {
        run.rewrite_and_compact(round * 2_000);
    }
    let stats = run.backend.eager_upload_stats().unwrap();
    assert!(stats.files_discarded > 0, "{stats:?}");
    let second = setup.checkpoint(&mut run.backend, 2);
    setup.finish(run.backend, &second, &[&run.first, &second]);
}

#[test]
fn an_aborted_checkpoint_deletes_what_it_adopted_and_the_next_uploads_again() {
    let setup = setup(true);
    let mut run = setup.start(2_000);
    run.rewrite_and_compact(11);
    let second = setup.snapshot(&mut run.backend, 2);
    assert!(run.backend.eager_upload_stats().unwrap().files_adopted > 0);
    run.backend.notify_checkpoint_aborted(2).unwrap();
    assert!(wait_for_detached_deletions(Duration::from_secs(30)));
    let stored = setup.stored();
    for file in second.handle.files() {
        if !run.first.handle.files().contains(&file) {
            assert!(
                !stored.contains(&file.path),
                "{} survived the abort",
                file.path
            );
        }
    }
    // Checkpoint 3 needs the same SSTs: it must not refer to the deleted
    // uploads (the restore in `finish` would not find them).
    let third = setup.checkpoint(&mut run.backend, 3);
    setup.finish(run.backend, &third, &[&run.first, &third]);
}

#[test]
fn uploads_no_checkpoint_adopted_are_deleted_when_the_backend_closes() {
    let setup = setup(true);
    let mut run = setup.start(2_000);
    let model = contents(&mut run.backend);
    run.rewrite_and_compact(5);
    assert!(run.backend.eager_upload_stats().unwrap().files_uploaded > 0);
    drop(run.backend);
    setup.check(&run.first, &model, &[&run.first]);
}

#[test]
fn failed_eager_uploads_fall_back_to_the_checkpoint() {
    let setup = setup(true);
    let mut run = setup.start(2_000);
    setup.faults.set_config(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    setup.faults.set_enabled(true);
    run.rewrite_and_compact(3);
    setup.faults.set_enabled(false);
    let stats = run.backend.eager_upload_stats().unwrap();
    assert!(stats.failures > 0 && stats.files_uploaded == 0, "{stats:?}");
    let second = setup.checkpoint(&mut run.backend, 2);
    assert!(new_shared_bytes(&second, &run.first) > 0);
    assert_eq!(run.backend.eager_upload_stats().unwrap().files_adopted, 0);
    setup.finish(run.backend, &second, &[&run.first, &second]);
}

#[test]
fn eager_upload_can_be_turned_off() {
    let setup = setup(false);
    let mut backend = setup.backend(Vec::new());
    populate(&mut backend, 0..100);
    let first = setup.checkpoint(&mut backend, 1);
    assert_eq!(backend.eager_upload_stats(), None);
    setup.finish(backend, &first, &[&first]);
}
