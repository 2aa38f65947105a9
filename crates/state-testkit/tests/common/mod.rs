//! What the fixture tests share: the backends they cover and how a
//! backend is built for a key-group range.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateHandle, StateBackendFactory,
};
use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
use state_heap::HeapBackendFactory;
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};

pub(crate) const MAX_PARALLELISM: u32 = 128;

/// The directory of the checked-in fixtures.
pub(crate) fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub(crate) fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).unwrap()
}

/// The backends the fixtures cover, by fixture name.
pub(crate) fn factories(local: &Path) -> Vec<(&'static str, Arc<dyn StateBackendFactory>)> {
    let rocksdb = |incremental: bool| -> Arc<dyn StateBackendFactory> {
        Arc::new(RocksDbBackendFactory::new(
            RocksDbConfig::new(local)
                .with_memory(RocksDbMemory::new(64 << 20).unwrap())
                .with_incremental(incremental),
        ))
    };
    let changelog = |delegate: Arc<dyn StateBackendFactory>| -> Arc<dyn StateBackendFactory> {
        Arc::new(
            ChangelogBackendFactory::new(
                delegate,
                DstlConfig::default(),
                MaterializationConfig {
                    interval: None,
                    ..MaterializationConfig::default()
                },
            )
            .unwrap(),
        )
    };
    vec![
        ("heap", Arc::new(HeapBackendFactory::new())),
        ("rocksdb-incremental", rocksdb(true)),
        ("rocksdb-full", rocksdb(false)),
        (
            "changelog-heap",
            changelog(Arc::new(HeapBackendFactory::new())),
        ),
        ("changelog-rocksdb", changelog(rocksdb(true))),
    ]
}

pub(crate) fn context(
    storage: Arc<dyn CheckpointStorageAccess>,
    restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
    range: KeyGroupRange,
    restore: Vec<KeyedStateHandle>,
) -> BackendContext {
    BackendContext {
        operator: format!("fixture-{}", range.start()),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: range,
        restore: restore
            .into_iter()
            .filter(|h| !h.key_group_range().intersection(&range).is_empty())
            .collect(),
        storage,
        restore_storage,
        skip_restored_states: Vec::new(),
    }
}
