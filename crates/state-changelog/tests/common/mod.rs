//! Factories and storage shared by the changelog tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use state_api::StateBackendFactory;
use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
use state_heap::HeapBackendFactory;
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};

/// DSTL settings for tests: short batching delay, fast retries.
pub fn test_dstl() -> DstlConfig {
    DstlConfig {
        persist_delay: Duration::from_millis(1),
        retry_delay: Duration::from_millis(10),
        ..DstlConfig::default()
    }
}

/// Materialization only when a checkpoint needs one or a test asks.
pub fn manual_materialization() -> MaterializationConfig {
    MaterializationConfig {
        interval: None,
        ..MaterializationConfig::default()
    }
}

/// Changelog over heap.
pub fn changelog_heap(dstl: DstlConfig, materialization: MaterializationConfig) -> ChangelogBackendFactory {
    ChangelogBackendFactory::new(Arc::new(HeapBackendFactory::new()), dstl, materialization).unwrap()
}

/// A RocksDB factory working in `local`.
pub fn rocksdb(local: &std::path::Path, incremental: bool) -> Arc<dyn StateBackendFactory> {
    let config = RocksDbConfig::new(local)
        .with_memory(RocksDbMemory::new(64 << 20).unwrap())
        .with_incremental(incremental);
    Arc::new(RocksDbBackendFactory::new(config))
}

/// Changelog over RocksDB working in `local`.
pub fn changelog_rocksdb(
    local: &std::path::Path,
    dstl: DstlConfig,
    materialization: MaterializationConfig,
) -> ChangelogBackendFactory {
    ChangelogBackendFactory::new(rocksdb(local, true), dstl, materialization).unwrap()
}
