//! The state-api conformance suite, run against the RocksDB backend on
//! in-memory object storage, with incremental and with full checkpoints.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use state_api::conformance::{Harness, run_all};
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};
use state_storage::ObjectStoreCheckpointStorage;

fn run(incremental: bool) {
    let local = tempfile::tempdir().unwrap();
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("rocksdb-conformance").unwrap());
    let config = RocksDbConfig::new(local.path())
        .with_memory(RocksDbMemory::new(64 << 20).unwrap())
        .with_incremental(incremental);
    let factory = RocksDbBackendFactory::new(config);
    run_all(&Harness::new(&factory, storage.clone(), &*storage));
    // Every backend instance removed its working directory on drop.
    let left: Vec<_> = std::fs::read_dir(local.path()).unwrap().collect();
    assert!(left.is_empty(), "leftover working directories: {left:?}");
}

#[test]
fn rocksdb_incremental_passes_the_conformance_suite() {
    run(true);
}

#[test]
fn rocksdb_full_passes_the_conformance_suite() {
    run(false);
}
