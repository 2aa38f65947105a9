//! The shared storage and store tests on an in-memory object store.

// Test support code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use state_storage::ObjectStoreCheckpointStorage;

/// One in-memory store per test, shared by every storage instance the test
/// opens (restarts see the same data), with a base prefix to exercise it.
fn env() -> Option<common::Env> {
    let store = Arc::new(InMemory::new());
    Some(common::Env::new(
        move || {
            ObjectStoreCheckpointStorage::new(store.clone(), Path::from("checkpoints"), "job")
                .unwrap()
        },
        None,
    ))
}

common::backend_tests!(env);
