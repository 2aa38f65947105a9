//! The state-api conformance suite, run against the heap backend on
//! in-memory object storage.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use state_api::conformance::{Harness, run_all};
use state_heap::HeapBackendFactory;
use state_storage::ObjectStoreCheckpointStorage;

#[test]
fn heap_backend_passes_the_conformance_suite() {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("heap-conformance").unwrap());
    let factory = HeapBackendFactory::new();
    run_all(&Harness::new(&factory, storage.clone(), &*storage));
}
