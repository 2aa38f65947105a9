//! The state-api conformance suite, run against the changelog wrapper over
//! the heap and the RocksDB backends, with manual and with very frequent
//! background materialization.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use state_api::conformance::{Harness, run_all};
use state_changelog::MaterializationConfig;
use state_storage::ObjectStoreCheckpointStorage;

use common::{changelog_heap, changelog_rocksdb, manual_materialization, test_dstl};

/// Materializes in the background every few milliseconds, so the suite's
/// checkpoints mix log-only handles with fresh materializations.
fn frequent() -> MaterializationConfig {
    MaterializationConfig {
        interval: Some(Duration::from_millis(5)),
        ..MaterializationConfig::default()
    }
}

#[test]
fn changelog_over_heap_passes_the_conformance_suite() {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("changelog-heap").unwrap());
    let factory = changelog_heap(test_dstl(), manual_materialization());
    run_all(&Harness::new(&factory, storage.clone(), &*storage));
}

#[test]
fn changelog_over_heap_with_frequent_materialization_passes_the_conformance_suite() {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("changelog-heap-m").unwrap());
    let factory = changelog_heap(test_dstl(), frequent());
    run_all(&Harness::new(&factory, storage.clone(), &*storage));
}

#[test]
fn changelog_over_rocksdb_passes_the_conformance_suite() {
    let local = tempfile::tempdir().unwrap();
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("changelog-rocksdb").unwrap());
    let factory = changelog_rocksdb(local.path(), test_dstl(), frequent());
    run_all(&Harness::new(&factory, storage.clone(), &*storage));
}
