//! Checked-in golden fixtures: a small checkpoint and a canonical
//! savepoint of every backend, for every format version (`fixtures/v1/`:
//! postcard structures; `fixtures/v2/`: CBOR structures, see
//! `state_api::format::evolving`; `fixtures/v3/`: the checkpoints also hold
//! operator state and in-flight records; `fixtures/v4/`: the state metadata
//! may record timer states and a time to live, see also the
//! `timer_fixtures` test), and damaged copies. Later versions of the
//! code must read them all: restore gives exactly the state they were taken
//! of, and each damaged one the exact error.
//!
//! The fixtures of the version this build writes are written once
//! (`STATE_WRITE_FIXTURES=1 cargo test -p state-testkit --test fixtures --
//! --test-threads=1`: the other test reads them)
//! when the version is introduced, and never rewritten: a change that
//! cannot read them is a breaking change of a stored format.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::conformance::Dump;
use state_api::key_group::key_group_range_for_operator;
use state_api::operator_state::OperatorStateMode;
use state_api::snapshot::SavepointFormat;
use state_api::{
    CheckpointStorageAccess, KeyedStateHandle, SnapshotOptions, SnapshotType, StateBackendFactory,
    StateError,
};
use state_heap::HeapBackendFactory;
use state_runtime::channel_state::{InFlightWriter, recover};
use state_runtime::operator_state::OperatorStateBackend;
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    Savepoint, SavepointWriter, load_checkpoint,
};
use state_testkit::workload::{change, contents, populate};

use common::{MAX_PARALLELISM, all, context, factories, fixtures_root};

const OPERATOR: &str = "op";
/// Keys the fixtures hold.
const KEYS: u64 = 16;
/// The checkpoint each fixture keeps (the second: incremental ones refer to
/// files of the first).
const CHECKPOINT: u64 = 2;

/// Format versions with fixtures, oldest first; the last one is what this
/// build writes.
const VERSIONS: [u8; 4] = [1, 2, 3, 4];
/// The first version whose checkpoints hold operator state.
const OPERATOR_STATE_SINCE: u8 = 3;
/// The operator state the checkpoint fixtures hold (since version 3).
const SOURCE: &str = "source";
const WRITTEN: u8 = VERSIONS[VERSIONS.len() - 1];

fn fixtures(version: u8) -> PathBuf {
    fixtures_root().join(format!("v{version}"))
}

/// The state every fixture holds: keys `0..KEYS` populated, then changed
/// once each, on the heap backend.
fn expected() -> Dump {
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::in_memory("expected").unwrap());
    let mut backend = HeapBackendFactory::new()
        .create(context(storage, None, all(), Vec::new()))
        .unwrap();
    let mut states = populate(&mut *backend, KEYS);
    for key in 0..KEYS {
        change(&mut *backend, &mut states, key, 1).unwrap();
    }
    contents(&mut *backend)
}

/// Writes the fixtures of `name`: checkpoint 1, the changes, checkpoint 2
/// (retaining one), and a canonical savepoint of the same state.
fn write_fixture(name: &str, factory: &dyn StateBackendFactory) {
    let dir = fixtures(WRITTEN).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Arc::new(ObjectStoreCheckpointStorage::local(&dir, "checkpoints").unwrap());
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let mut backend = factory
        .create(context(Arc::clone(&access), None, all(), Vec::new()))
        .unwrap();
    let mut states = populate(&mut *backend, KEYS);
    for id in 1..=CHECKPOINT {
        if id == CHECKPOINT {
            for key in 0..KEYS {
                change(&mut *backend, &mut states, key, 1).unwrap();
            }
        }
        let handle = backend
            .snapshot(id, &SnapshotOptions::checkpoint(id), Arc::clone(&access))
            .unwrap()
            .run()
            .unwrap()
            .handle;
        let operator_state = source_offsets(id).snapshot(id, &*access).unwrap().unwrap();
        let mut in_flight = InFlightWriter::new(id, 0, 1, 2);
        for (channel, key_group, record) in in_flight_records(id) {
            in_flight.add(channel, Some(key_group), &record).unwrap();
        }
        let channel_state = in_flight.finish(&*access).unwrap().unwrap();
        let subsumed = store
            .add(
                CompletedCheckpoint::new("fixture", id, id, CheckpointKind::Checkpoint)
                    .with_operator(OPERATOR, vec![handle])
                    .with_operator_state(SOURCE, vec![operator_state])
                    .with_channel_state(OPERATOR, vec![channel_state]),
            )
            .unwrap();
        backend.notify_checkpoint_complete(id).unwrap();
        for old in subsumed {
            backend.notify_checkpoint_subsumed(old).unwrap();
        }
    }
    let savepoint_dir = ObjectStoreCheckpointStorage::local_dir({
        let path = dir.join("savepoint");
        std::fs::create_dir_all(&path).unwrap();
        path
    })
    .unwrap();
    let writer = SavepointWriter::in_storage(savepoint_dir);
    let options = SnapshotOptions {
        snapshot_type: SnapshotType::Savepoint(SavepointFormat::Canonical),
        timestamp_ms: 3,
    };
    let handle = backend
        .snapshot(3, &options, writer.storage())
        .unwrap()
        .run()
        .unwrap()
        .handle;
    let operator_state = source_offsets(3)
        .snapshot(3, &*writer.storage())
        .unwrap()
        .unwrap();
    writer
        .commit(
            CompletedCheckpoint::new("fixture", 3, 3, CheckpointKind::Savepoint)
                .with_operator(OPERATOR, vec![handle])
                .with_operator_state(SOURCE, vec![operator_state]),
        )
        .unwrap();
    drop(backend);
    state_api::lifecycle::wait_for_detached_deletions(std::time::Duration::from_secs(10));
    store.collect_garbage().unwrap();
}

/// The operator state of the fixtures' source at checkpoint `id`: a list
/// split on rescaling, a union list and a broadcast map.
fn source_offsets(id: u64) -> OperatorStateBackend {
    let mut state = OperatorStateBackend::new(0, 1);
    state.list_state("offsets").extend([
        format!("split-a@{id}").into_bytes(),
        format!("split-b@{id}").into_bytes(),
    ]);
    state
        .register_list("watermarks", OperatorStateMode::Union)
        .unwrap()
        .push(id.to_le_bytes().to_vec());
    state
        .broadcast_state("rules")
        .insert(b"threshold".to_vec(), b"10".to_vec());
    state
}

/// The in-flight records the fixtures' checkpoint `id` persisted:
/// (channel, key group, record).
fn in_flight_records(id: u64) -> Vec<(u32, u32, Vec<u8>)> {
    vec![
        (0, 3, format!("first@{id}").into_bytes()),
        (1, 100, format!("second@{id}").into_bytes()),
        (0, 3, format!("third@{id}").into_bytes()),
    ]
}

/// Restores `handles` at `parallelism` and returns the union of contents.
fn restore(
    factory: &dyn StateBackendFactory,
    storage: Arc<dyn CheckpointStorageAccess>,
    restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> state_api::Result<Dump> {
    let mut all_contents = Dump::new();
    for index in 0..parallelism {
        let range = key_group_range_for_operator(MAX_PARALLELISM, parallelism, index)?;
        let mut backend = factory.create(context(
            Arc::clone(&storage),
            restore_storage.clone(),
            range,
            handles.to_vec(),
        ))?;
        all_contents.extend(contents(&mut *backend));
    }
    Ok(all_contents)
}

fn checkpoint_storage(version: u8, name: &str) -> Arc<ObjectStoreCheckpointStorage> {
    Arc::new(
        ObjectStoreCheckpointStorage::local_dir(fixtures(version).join(name).join("checkpoints"))
            .unwrap(),
    )
}

#[test]
fn fixtures_of_every_backend_restore_exactly() {
    let write = std::env::var_os("STATE_WRITE_FIXTURES").is_some();
    if write {
        let local = tempfile::tempdir().unwrap();
        for (name, factory) in factories(local.path()) {
            write_fixture(name, &*factory);
        }
    }
    for version in VERSIONS {
        fixtures_restore_exactly(version);
    }
}

fn fixtures_restore_exactly(version: u8) {
    let local = tempfile::tempdir().unwrap();
    let expected = expected();
    for (name, factory) in factories(local.path()) {
        let storage = checkpoint_storage(version, name);
        let metadata = std::fs::read(storage_path(version, name, CHECKPOINT)).unwrap();
        assert_eq!(metadata[4], version, "v{version}/{name}: _metadata version");
        let name = format!("v{version}/{name}");
        let checkpoint = load_checkpoint(&storage, CHECKPOINT)
            .unwrap_or_else(|e| panic!("{name}: the checkpoint fixture does not load: {e}"));
        let handles = &checkpoint.operators[OPERATOR];
        if version >= OPERATOR_STATE_SINCE {
            let handles = &checkpoint.operator_states[SOURCE];
            let restored = OperatorStateBackend::restore(handles, 0, 1, &*storage)
                .unwrap_or_else(|e| panic!("{name}: operator state: {e}"));
            assert_eq!(
                restored,
                source_offsets(CHECKPOINT),
                "{name}: operator state"
            );
            // Rescaled to two instances: the split list is cut in two, the
            // union list and the broadcast map go to both.
            for subtask in 0..2 {
                let rescaled =
                    OperatorStateBackend::restore(handles, subtask, 2, &*storage).unwrap();
                assert_eq!(rescaled.list("offsets").len(), 1, "{name}");
                assert_eq!(rescaled.list("watermarks").len(), 1, "{name}");
                assert_eq!(rescaled.map("rules"), restored.map("rules"), "{name}");
            }
            // The in-flight records: all of them at the same parallelism,
            // by key group at another.
            let handles = &checkpoint.channel_states[OPERATOR];
            let recovered = recover(handles, 0, 1, Some(all()), &*storage)
                .unwrap_or_else(|e| panic!("{name}: channel state: {e}"));
            let flat: Vec<(u32, Vec<u8>)> = recovered
                .iter()
                .flat_map(|r| {
                    r.records
                        .iter()
                        .map(move |record| (r.channel, record.clone()))
                })
                .collect();
            let expected: Vec<(u32, Vec<u8>)> = in_flight_records(CHECKPOINT)
                .into_iter()
                .map(|(channel, _, record)| (channel, record))
                .collect();
            assert_eq!(flat, expected, "{name}: channel state");
            let low = key_group_range_for_operator(MAX_PARALLELISM, 2, 0).unwrap();
            let rescaled = recover(handles, 0, 2, Some(low), &*storage).unwrap();
            assert_eq!(
                rescaled.iter().map(|r| r.records.len()).sum::<usize>(),
                2,
                "{name}"
            );
        } else {
            assert!(checkpoint.operator_states.is_empty(), "{name}");
            assert!(checkpoint.channel_states.is_empty(), "{name}");
        }
        for parallelism in [1, 2] {
            let restored = restore(&*factory, storage.clone(), None, handles, parallelism)
                .unwrap_or_else(|e| panic!("{name}: checkpoint fixture at {parallelism}: {e}"));
            assert!(
                restored == expected,
                "{name}: the checkpoint fixture restores to other state at {parallelism}"
            );
        }
        // The canonical savepoint restores into every backend.
        let savepoint = Savepoint::open(
            &fixtures(version)
                .join(name.trim_start_matches(&format!("v{version}/")))
                .join("savepoint")
                .display()
                .to_string(),
        )
        .unwrap_or_else(|e| panic!("{name}: the savepoint fixture does not open: {e}"));
        if version >= OPERATOR_STATE_SINCE {
            let restored = OperatorStateBackend::restore(
                &savepoint.metadata().operator_states[SOURCE],
                0,
                1,
                &*savepoint.storage(),
            )
            .unwrap_or_else(|e| panic!("{name}: savepoint operator state: {e}"));
            assert_eq!(
                restored,
                source_offsets(3),
                "{name}: savepoint operator state"
            );
        }
        for (target, target_factory) in factories(local.path()) {
            let restored = restore(
                &*target_factory,
                storage.clone(),
                Some(savepoint.storage()),
                savepoint.handles(OPERATOR),
                1,
            )
            .unwrap_or_else(|e| panic!("{name} savepoint into {target}: {e}"));
            assert!(restored == expected, "{name} savepoint into {target}");
        }
    }
}

/// The `_metadata` file of checkpoint `id` of fixture `name`.
fn storage_path(version: u8, name: &str, id: u64) -> PathBuf {
    fixtures(version)
        .join(name)
        .join(format!("checkpoints/chk-{id}/_metadata"))
}

/// A copy of the heap checkpoint fixture of `version` in a temporary
/// directory, to damage.
fn damaged_copy(version: u8) -> (tempfile::TempDir, Arc<ObjectStoreCheckpointStorage>) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures(version).join("heap/checkpoints"), dir.path());
    let storage = Arc::new(ObjectStoreCheckpointStorage::local_dir(dir.path()).unwrap());
    (dir, storage)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Damaged fixtures give exact errors: a flipped byte in the state file,
/// a `_metadata` of a later release, a damaged `_metadata`, a missing file.
#[test]
fn damaged_fixtures_give_exact_errors() {
    for version in VERSIONS {
        damaged_fixtures_of_version_give_exact_errors(version);
    }
}

fn damaged_fixtures_of_version_give_exact_errors(version: u8) {
    let heap = HeapBackendFactory::new();
    let metadata = format!("chk-{CHECKPOINT}/_metadata");

    // A flipped byte in the middle of the key-group file.
    let (dir, storage) = damaged_copy(version);
    let checkpoint = load_checkpoint(&storage, CHECKPOINT).unwrap();
    let file = checkpoint.operators[OPERATOR][0].files()[0].clone();
    flip(&dir.path().join(&file.path), (file.size / 2) as usize);
    let err = restore(
        &heap,
        storage.clone(),
        None,
        &checkpoint.operators[OPERATOR],
        1,
    )
    .unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path, .. } if *path == file.path),
        "{err}"
    );

    // A `_metadata` of a later release (a newer version, its checksum over
    // it).
    let (dir, storage) = damaged_copy(version);
    let path = dir.path().join(&metadata);
    let mut newer = std::fs::read(&path).unwrap();
    newer[4] = WRITTEN + 1;
    let crc_at = newer.len() - 4;
    let crc = crc32c::crc32c(&newer[..crc_at]);
    newer[crc_at..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, newer).unwrap();
    let err = load_checkpoint(&storage, CHECKPOINT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "'{metadata}' is checkpoint metadata version {}, this build reads up to version \
             {WRITTEN}: use a later release",
            WRITTEN + 1
        )
    );

    // A damaged `_metadata` (its checksum).
    let (dir, storage) = damaged_copy(version);
    let length = std::fs::metadata(dir.path().join(&metadata)).unwrap().len() as usize;
    flip(&dir.path().join(&metadata), length - 1);
    let err = load_checkpoint(&storage, CHECKPOINT).unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path, reason } if *path == metadata && reason.contains("checksum")),
        "{err}"
    );

    // A missing state file.
    let (dir, storage) = damaged_copy(version);
    std::fs::remove_file(dir.path().join(&file.path)).unwrap();
    let err = restore(&heap, storage, None, &checkpoint.operators[OPERATOR], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("checkpoint file not found: '{}'", file.path)
    );
}
