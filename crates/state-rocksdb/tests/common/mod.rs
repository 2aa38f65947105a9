//! Shared fixtures of the RocksDB backend's integration tests.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test fixtures: a failed unwrap is a failed test

use std::sync::Arc;

use state_api::conformance::{Dump, StandardStates, dump};
use state_api::{
    BackendContext, KeyGroupRange, KeyedStateBackend, KeyedStateHandle, Result, SnapshotOptions,
    SnapshotResult, SnapshotType, StateBackendFactory,
};
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};
use state_storage::ObjectStoreCheckpointStorage;

pub(crate) const MAX_P: u32 = 128;

pub(crate) fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_P).unwrap()
}

pub(crate) fn storage() -> Arc<ObjectStoreCheckpointStorage> {
    Arc::new(ObjectStoreCheckpointStorage::in_memory("rocksdb-tests").unwrap())
}

/// A factory with its working directory (kept alive by the caller).
pub(crate) fn factory(incremental: bool) -> (tempfile::TempDir, RocksDbBackendFactory) {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksDbConfig::new(dir.path())
        .with_memory(RocksDbMemory::new(64 << 20).unwrap())
        .with_incremental(incremental);
    (dir, RocksDbBackendFactory::new(config))
}

pub(crate) fn create(
    factory: &dyn StateBackendFactory,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    range: KeyGroupRange,
    handles: Vec<KeyedStateHandle>,
) -> Result<Box<dyn KeyedStateBackend>> {
    factory.create(BackendContext {
        operator: format!("op-{}", range.start()),
        max_parallelism: MAX_P,
        key_group_range: range,
        restore: handles,
        storage: storage.clone(),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    })
}

/// Both snapshot phases of `snapshot_type`, without any notification.
pub(crate) fn snapshot(
    backend: &mut dyn KeyedStateBackend,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    id: u64,
    snapshot_type: SnapshotType,
) -> SnapshotResult {
    let options = SnapshotOptions {
        snapshot_type,
        timestamp_ms: id,
    };
    backend
        .snapshot(id, &options, storage.clone())
        .unwrap()
        .run()
        .unwrap()
}

/// A completed regular checkpoint.
pub(crate) fn checkpoint(
    backend: &mut dyn KeyedStateBackend,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    id: u64,
) -> SnapshotResult {
    let result = snapshot(backend, storage, id, SnapshotType::Checkpoint);
    backend.notify_checkpoint_complete(id).unwrap();
    result
}

/// A backend with the standard states for `keys`.
pub(crate) fn populated(
    factory: &dyn StateBackendFactory,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    keys: impl IntoIterator<Item = u64>,
) -> (Box<dyn KeyedStateBackend>, StandardStates) {
    let mut backend = create(factory, storage, all(), Vec::new()).unwrap();
    let mut states = StandardStates::register(&mut *backend);
    for k in keys {
        states.populate(&mut *backend, k);
    }
    (backend, states)
}

/// The standard states' contents.
pub(crate) fn contents(backend: &mut dyn KeyedStateBackend) -> Dump {
    let states = StandardStates::register(backend);
    dump(backend, &states.ids())
}

/// The incremental handle inside `handle`.
pub(crate) fn incremental(handle: &KeyedStateHandle) -> &state_api::IncrementalStateHandle {
    match handle {
        KeyedStateHandle::Incremental(h) => h,
        other => panic!(
            "expected an incremental handle, got {}",
            other.format_name()
        ),
    }
}
