//! Savepoints move state between backends: a canonical savepoint taken on
//! any backend restores into any other (heap, RocksDB, changelog over
//! either), at another parallelism, after its directory was moved; a native
//! RocksDB savepoint restores into RocksDB only. Restored jobs never depend
//! on the savepoint's files, disposing a savepoint removes exactly its files,
//! and state the new program does not register is an error unless allowed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::conformance::{Dump, StandardStates, dump};
use state_api::key_group::key_group_range_for_operator;
use state_api::snapshot::SavepointFormat;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyedStateBackend, Result, SnapshotOptions,
    SnapshotType, StateBackendFactory, StateError,
};
use state_heap::HeapBackendFactory;
use state_storage::restore::{ProgramStates, RestorePlan, UnclaimedState};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    Savepoint, SavepointWriter,
};

use common::{changelog_heap, changelog_rocksdb, manual_materialization, rocksdb, test_dstl};

const MAX_PARALLELISM: u32 = 128;
const OPERATOR: &str = "aggregator";
const JOB: &str = "job";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Heap,
    RocksDb,
    ChangelogHeap,
    ChangelogRocksDb,
}

const ALL: [Kind; 4] = [
    Kind::Heap,
    Kind::RocksDb,
    Kind::ChangelogHeap,
    Kind::ChangelogRocksDb,
];

fn factory(kind: Kind, local: &Path) -> Arc<dyn StateBackendFactory> {
    match kind {
        Kind::Heap => Arc::new(HeapBackendFactory::new()),
        Kind::RocksDb => rocksdb(local, true),
        Kind::ChangelogHeap => Arc::new(changelog_heap(test_dstl(), manual_materialization())),
        Kind::ChangelogRocksDb => Arc::new(changelog_rocksdb(
            local,
            test_dstl(),
            manual_materialization(),
        )),
    }
}

/// One test's directories: RocksDB working dirs, the job's checkpoints and
/// the savepoints.
struct Dirs {
    root: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn local(&self) -> PathBuf {
        self.root.path().join("local")
    }

    fn savepoints(&self) -> String {
        self.root
            .path()
            .join("savepoints")
            .to_str()
            .unwrap()
            .to_string()
    }

    fn job_storage(&self, job: &str) -> Arc<ObjectStoreCheckpointStorage> {
        Arc::new(
            ObjectStoreCheckpointStorage::local(self.root.path().join("checkpoints"), job).unwrap(),
        )
    }
}

/// A running job: one backend per instance.
struct Job {
    instances: Vec<(Box<dyn KeyedStateBackend>, StandardStates)>,
}

impl Job {
    /// Instances at `parallelism` restored through `plan` (or empty).
    fn start(
        factory: &dyn StateBackendFactory,
        parallelism: u32,
        storage: &Arc<ObjectStoreCheckpointStorage>,
        restore: Option<(&RestorePlan, Arc<dyn CheckpointStorageAccess>)>,
    ) -> Result<Self> {
        let mut instances = Vec::new();
        for index in 0..parallelism {
            let range = key_group_range_for_operator(MAX_PARALLELISM, parallelism, index)?;
            let (handles, skip, restore_storage) = match &restore {
                Some((plan, from)) => (
                    plan.handles_for(OPERATOR, range),
                    plan.skip_states(OPERATOR),
                    Some(Arc::clone(from)),
                ),
                None => (Vec::new(), Vec::new(), None),
            };
            let mut backend = factory.create(BackendContext {
                operator: format!("{OPERATOR}-{index}"),
                max_parallelism: MAX_PARALLELISM,
                key_group_range: range,
                restore: handles,
                storage: Arc::clone(storage) as Arc<dyn CheckpointStorageAccess>,
                restore_storage,
                skip_restored_states: skip,
            })?;
            let states = StandardStates::register(&mut *backend);
            instances.push((backend, states));
        }
        Ok(Self { instances })
    }

    /// Writes the standard states of `keys`, each on its instance.
    fn populate(&mut self, keys: impl IntoIterator<Item = u64>) {
        for key in keys {
            let encoded = state_api::codec::encode(&key).unwrap();
            let key_group =
                state_api::key_group::assign_to_key_group(&encoded, MAX_PARALLELISM).unwrap();
            let (backend, states) = self
                .instances
                .iter_mut()
                .find(|(b, _)| b.key_group_range().contains(key_group))
                .unwrap();
            states.populate(&mut **backend, key);
        }
    }

    fn dump(&mut self) -> Dump {
        let mut all = Dump::new();
        for (backend, states) in &mut self.instances {
            all.extend(dump(&mut **backend, &states.ids()));
        }
        all
    }

    /// Both phases of snapshot `id` of every instance into `storage`.
    fn snapshot(
        &mut self,
        id: u64,
        snapshot_type: SnapshotType,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Result<Vec<state_api::KeyedStateHandle>> {
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms: id,
        };
        let mut handles = Vec::new();
        for (backend, _) in &mut self.instances {
            let task = backend.snapshot(id, &options, Arc::clone(storage))?;
            handles.push(task.run()?.handle);
        }
        Ok(handles)
    }

    fn savepoint(&mut self, id: u64, format: SavepointFormat, dir: &str) -> Savepoint {
        let writer = SavepointWriter::create(dir, JOB).unwrap();
        let handles = self
            .snapshot(id, SnapshotType::Savepoint(format), &writer.storage())
            .unwrap();
        let metadata = CompletedCheckpoint::new(JOB, id, id, CheckpointKind::Savepoint)
            .with_operator(OPERATOR, handles);
        writer.commit(metadata).unwrap()
    }

    /// A checkpoint committed to `store`, with completion notified.
    fn checkpoint(
        &mut self,
        id: u64,
        store: &mut CompletedCheckpointStore,
        storage: &Arc<ObjectStoreCheckpointStorage>,
    ) -> CompletedCheckpoint {
        let storage = Arc::clone(storage) as Arc<dyn CheckpointStorageAccess>;
        let handles = self
            .snapshot(id, SnapshotType::Checkpoint, &storage)
            .unwrap();
        let checkpoint = CompletedCheckpoint::new(JOB, id, id, CheckpointKind::Checkpoint)
            .with_operator(OPERATOR, handles);
        store.add(checkpoint.clone()).unwrap();
        for (backend, _) in &mut self.instances {
            backend.notify_checkpoint_complete(id).unwrap();
        }
        checkpoint
    }
}

fn program() -> ProgramStates {
    ProgramStates::new().with_operator(
        OPERATOR,
        ["value", "list", "map", "sum", "average", "windowed"],
    )
}

fn plan(savepoint: &Savepoint) -> RestorePlan {
    RestorePlan::new(
        savepoint.metadata(),
        &*savepoint.storage(),
        &program(),
        false,
    )
    .unwrap()
}

/// Moves the savepoint's directory under `to` and opens it there through
/// its `_metadata` file.
fn relocate(savepoint: Savepoint, to: &Path) -> Savepoint {
    let from = savepoint.local_dir().unwrap();
    std::fs::create_dir_all(to).unwrap();
    let target = to.join(from.file_name().unwrap());
    std::fs::rename(&from, &target).unwrap();
    Savepoint::open(target.join("_metadata").to_str().unwrap()).unwrap()
}

#[test]
fn canonical_savepoints_move_state_between_every_pair_of_backends() {
    for source in ALL {
        for target in ALL {
            let dirs = Dirs::new();
            let source_factory = factory(source, &dirs.local());
            let first_job = dirs.job_storage("first");
            let mut job = Job::start(&*source_factory, 2, &first_job, None).unwrap();
            job.populate(0..300);
            let before = job.dump();
            let savepoint = job.savepoint(5, SavepointFormat::Canonical, &dirs.savepoints());
            drop(job);

            // The directory moves; its handles are relative to it.
            let savepoint = relocate(savepoint, &dirs.root.path().join("moved"));
            let target_factory = factory(target, &dirs.local());
            let second_job = dirs.job_storage("second");
            let plan = plan(&savepoint);
            let mut restored = Job::start(
                &*target_factory,
                3,
                &second_job,
                Some((&plan, savepoint.storage())),
            )
            .unwrap_or_else(|e| panic!("{source:?} -> {target:?}: restore failed: {e}"));
            assert!(
                restored.dump() == before,
                "{source:?} -> {target:?}: restored contents differ"
            );

            // The first checkpoint after the restore stands on its own.
            restored.populate(300..350);
            let after = restored.dump();
            let mut store = CompletedCheckpointStore::open(Arc::clone(&second_job), 1).unwrap();
            let checkpoint = restored.checkpoint(6, &mut store, &second_job);
            drop(restored);
            let report = savepoint.dispose().unwrap();
            assert!(
                report.foreign_files.is_empty(),
                "{:?}",
                report.foreign_files
            );
            let from_checkpoint =
                RestorePlan::new(&checkpoint, &*second_job, &program(), false).unwrap();
            let mut again = Job::start(
                &*target_factory,
                1,
                &second_job,
                Some((&from_checkpoint, Arc::clone(&second_job) as Arc<dyn CheckpointStorageAccess>)),
            )
            .unwrap_or_else(|e| {
                panic!("{source:?} -> {target:?}: restore from the checkpoint after disposing the savepoint failed: {e}")
            });
            assert!(
                again.dump() == after,
                "{source:?} -> {target:?}: checkpoint after the savepoint restore differs"
            );
        }
    }
}

#[test]
fn native_rocksdb_savepoints_restore_into_rocksdb_only() {
    let dirs = Dirs::new();
    let rocks = factory(Kind::RocksDb, &dirs.local());
    let mut job = Job::start(&*rocks, 2, &dirs.job_storage("first"), None).unwrap();
    job.populate(0..300);
    let before = job.dump();
    let savepoint = job.savepoint(3, SavepointFormat::Native, &dirs.savepoints());
    drop(job);
    assert!(
        savepoint
            .metadata()
            .operators
            .values()
            .flatten()
            .all(|h| h.format_name() == "incremental"),
        "a native savepoint holds RocksDB's own files"
    );
    let savepoint = relocate(savepoint, &dirs.root.path().join("moved"));
    let plan = plan(&savepoint);

    for (kind, parallelism) in [
        (Kind::RocksDb, 2), // one handle per instance: opened in place
        (Kind::RocksDb, 3), // several handles: copied
        (Kind::ChangelogRocksDb, 1),
    ] {
        let target = factory(kind, &dirs.local());
        let storage = dirs.job_storage(&format!("{kind:?}-{parallelism}"));
        let mut restored = Job::start(
            &*target,
            parallelism,
            &storage,
            Some((&plan, savepoint.storage())),
        )
        .unwrap();
        assert!(restored.dump() == before, "{kind:?} at {parallelism}");
        // Nothing of the savepoint becomes part of the job's checkpoints.
        let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
        let checkpoint = restored.checkpoint(4, &mut store, &storage);
        let stored = storage.list_files(None).unwrap();
        for file in checkpoint.files() {
            assert!(
                stored.contains(&file.path),
                "{kind:?}: {} is not in the job's storage",
                file.path
            );
        }
        // RocksDB uploads its SSTs, the changelog materializes: both into
        // the job's shared/, none of them the savepoint's.
        let savepoint_files: Vec<&str> = savepoint
            .metadata()
            .files()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert!(
            !checkpoint.shared_files().is_empty(),
            "{kind:?}: the first checkpoint uploads its own files"
        );
        for file in checkpoint.files() {
            assert!(
                !savepoint_files.contains(&file.path.as_str()),
                "{kind:?}: {} is the savepoint's",
                file.path
            );
        }
    }

    for kind in [Kind::Heap, Kind::ChangelogHeap] {
        let target = factory(kind, &dirs.local());
        let err = Job::start(
            &*target,
            1,
            &dirs.job_storage("heap"),
            Some((&plan, savepoint.storage())),
        )
        .err()
        .unwrap_or_else(|| panic!("{kind:?} restored a native RocksDB savepoint"));
        assert!(
            matches!(err, StateError::Restore(_)) && err.to_string().contains("incremental"),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn unclaimed_state_is_an_error_unless_allowed() {
    let dirs = Dirs::new();
    let heap = factory(Kind::Heap, &dirs.local());
    let storage = dirs.job_storage("first");
    let mut job = Job::start(&*heap, 1, &storage, None).unwrap();
    job.populate(0..100);
    let before = job.dump();
    let writer = SavepointWriter::create(&dirs.savepoints(), JOB).unwrap();
    let handles = job
        .snapshot(
            2,
            SnapshotType::Savepoint(SavepointFormat::Canonical),
            &writer.storage(),
        )
        .unwrap();
    // A second operator that the new program no longer has.
    let mut other = Job::start(&*heap, 1, &storage, None).unwrap();
    other.populate(0..10);
    let other_handles = other
        .snapshot(
            2,
            SnapshotType::Savepoint(SavepointFormat::Canonical),
            &writer.storage(),
        )
        .unwrap();
    let savepoint = writer
        .commit(
            CompletedCheckpoint::new(JOB, 2, 2, CheckpointKind::Savepoint)
                .with_operator(OPERATOR, handles)
                .with_operator("removed-operator", other_handles),
        )
        .unwrap();
    let new_program = ProgramStates::new()
        .with_operator(OPERATOR, ["value", "list", "sum", "average", "windowed"]);

    let err = RestorePlan::new(
        savepoint.metadata(),
        &*savepoint.storage(),
        &new_program,
        false,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("operator 'removed-operator'"), "{message}");
    assert!(
        message.contains("state 'map' of operator 'aggregator'"),
        "{message}"
    );
    assert!(
        message.contains("execution.state-recovery.ignore-unclaimed-state"),
        "{message}"
    );

    let plan = RestorePlan::new(
        savepoint.metadata(),
        &*savepoint.storage(),
        &new_program,
        true,
    )
    .unwrap();
    assert_eq!(plan.skip_states(OPERATOR), ["map"]);
    assert!(plan.handles("removed-operator").is_empty());
    assert!(plan.skipped().contains(&UnclaimedState::State {
        operator: OPERATOR.into(),
        state: "map".into()
    }));
    assert!(plan.skipped().iter().any(
        |s| matches!(s, UnclaimedState::Operator { operator, .. } if operator == "removed-operator")
    ));

    for kind in ALL {
        let target = factory(kind, &dirs.local());
        let restore_storage = savepoint.storage();
        let range = state_api::KeyGroupRange::all(MAX_PARALLELISM).unwrap();
        let mut backend = target
            .create(BackendContext {
                operator: "restored".into(),
                max_parallelism: MAX_PARALLELISM,
                key_group_range: range,
                restore: plan.handles_for(OPERATOR, range),
                storage: dirs.job_storage(&format!("{kind:?}")) as Arc<dyn CheckpointStorageAccess>,
                restore_storage: Some(restore_storage),
                skip_restored_states: plan.skip_states(OPERATOR),
            })
            .unwrap();
        assert!(
            !backend.state_metas().iter().any(|m| m.name == "map"),
            "{kind:?}: the skipped state is gone"
        );
        let states = StandardStates::register(&mut *backend);
        let expected: Dump = before
            .iter()
            .filter(|(k, _)| k.0 != "map")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(dump(&mut *backend, &states.ids()) == expected, "{kind:?}");
    }
}

#[test]
fn disposing_a_savepoint_removes_exactly_its_files() {
    let dirs = Dirs::new();
    let rocks = factory(Kind::RocksDb, &dirs.local());
    let mut job = Job::start(&*rocks, 2, &dirs.job_storage("first"), None).unwrap();
    job.populate(0..200);
    let before = job.dump();
    let first = job.savepoint(1, SavepointFormat::Native, &dirs.savepoints());
    let second = job.savepoint(2, SavepointFormat::Canonical, &dirs.savepoints());
    let first_dir = first.local_dir().unwrap();
    let second_dir = second.local_dir().unwrap();
    assert_ne!(first_dir, second_dir);
    assert!(first_dir.starts_with(Path::new(&dirs.savepoints())));
    std::fs::write(first_dir.join("notes.txt"), b"kept").unwrap();
    let referenced = first.metadata().files().len();
    let bytes: u64 = first.metadata().files().iter().map(|f| f.size).sum();

    let report = first.dispose().unwrap();
    assert_eq!(
        report.deleted_files,
        referenced + 1,
        "every file and _metadata"
    );
    assert_eq!(report.deleted_bytes, bytes);
    assert_eq!(report.foreign_files, ["notes.txt"]);
    let left: Vec<_> = std::fs::read_dir(&first_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    let err = Savepoint::open(first_dir.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, StateError::FileNotFound { .. }), "{err}");

    // The other savepoint is untouched and restores.
    let reopened = Savepoint::open(second_dir.to_str().unwrap()).unwrap();
    let mut restored = Job::start(
        &*rocks,
        1,
        &dirs.job_storage("second"),
        Some((&plan(&reopened), reopened.storage())),
    )
    .unwrap();
    assert!(restored.dump() == before);
}

#[test]
fn a_savepoint_copied_elsewhere_restores_after_the_original_is_gone() {
    let dirs = Dirs::new();
    let heap = factory(Kind::Heap, &dirs.local());
    let mut job = Job::start(&*heap, 2, &dirs.job_storage("first"), None).unwrap();
    job.populate(0..100);
    let before = job.dump();
    let savepoint = job.savepoint(9, SavepointFormat::Canonical, &dirs.savepoints());
    let original = savepoint.local_dir().unwrap();
    let copy = dirs.root.path().join("elsewhere").join("my-savepoint");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&original).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    savepoint.dispose().unwrap();
    let copied = Savepoint::open(&format!("file://{}", copy.display())).unwrap();
    assert_eq!(copied.metadata().checkpoint_id, 9);
    let mut restored = Job::start(
        &*factory(Kind::RocksDb, &dirs.local()),
        3,
        &dirs.job_storage("second"),
        Some((&plan(&copied), copied.storage())),
    )
    .unwrap();
    assert!(restored.dump() == before);
}

#[test]
fn a_retained_checkpoint_restored_into_another_job_shares_no_files_with_it() {
    // Restoring from another job's retained incremental checkpoint (Flink's
    // NO_CLAIM): its shared SST files belong to that job, so the new job's
    // first checkpoint must upload its own.
    for kind in [Kind::RocksDb, Kind::ChangelogHeap, Kind::ChangelogRocksDb] {
        retained_checkpoint_into_another_job(kind);
    }
}

fn retained_checkpoint_into_another_job(kind: Kind) {
    let dirs = Dirs::new();
    let rocks = factory(kind, &dirs.local());
    let first = dirs.job_storage("first");
    let mut job = Job::start(&*rocks, 1, &first, None).unwrap();
    job.populate(0..200);
    let before = job.dump();
    let mut first_store = CompletedCheckpointStore::open(Arc::clone(&first), 1).unwrap();
    let retained = job.checkpoint(1, &mut first_store, &first);
    assert!(!retained.shared_files().is_empty(), "{kind:?}");
    drop(job);

    let second = dirs.job_storage("second");
    let plan = RestorePlan::new(&retained, &*first, &program(), false).unwrap();
    let mut restored = Job::start(
        &*rocks,
        1,
        &second,
        Some((
            &plan,
            Arc::clone(&first) as Arc<dyn CheckpointStorageAccess>,
        )),
    )
    .unwrap();
    assert!(restored.dump() == before, "{kind:?}");
    let mut second_store = CompletedCheckpointStore::open(Arc::clone(&second), 1).unwrap();
    let own = restored.checkpoint(2, &mut second_store, &second);
    drop(restored);

    // The first job's files go away; the second job's checkpoint restores.
    std::fs::remove_dir_all(dirs.root.path().join("checkpoints").join("first")).unwrap();
    let plan = RestorePlan::new(&own, &*second, &program(), false).unwrap();
    let mut again = Job::start(
        &*rocks,
        2,
        &second,
        Some((
            &plan,
            Arc::clone(&second) as Arc<dyn CheckpointStorageAccess>,
        )),
    )
    .unwrap_or_else(|e| panic!("{kind:?}: restore after the first job's files are gone: {e}"));
    assert!(again.dump() == before, "{kind:?}");
}
