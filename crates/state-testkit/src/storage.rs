//! Checkpoint storage on a fault-injecting in-memory store.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use state_api::{CheckpointStorageAccess, Result};
use state_storage::ObjectStoreCheckpointStorage;
use state_storage::fault::{FaultConfig, FaultInjectingStore};
use state_storage::retry::RetryPolicy;

/// Retries with waits of a millisecond or two: tests inject many faults.
pub const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_backoff: Duration::from_millis(1),
    max_backoff: Duration::from_millis(4),
};

/// A job's checkpoint storage on an in-memory store that injects `config`'s
/// faults, with [`FAST_RETRY`]; also returns the store, to script faults
/// and to turn them off.
///
/// # Errors
/// When the storage cannot start.
pub fn faulty(
    config: FaultConfig,
    job_id: &str,
) -> Result<(Arc<FaultInjectingStore>, Arc<ObjectStoreCheckpointStorage>)> {
    let store = Arc::new(FaultInjectingStore::new(Arc::new(InMemory::new()), config));
    let storage = ObjectStoreCheckpointStorage::new(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        Path::default(),
        job_id,
    )?
    .with_retry(FAST_RETRY);
    Ok((store, Arc::new(storage)))
}

/// The storage as backends see it.
pub fn access(storage: &Arc<ObjectStoreCheckpointStorage>) -> Arc<dyn CheckpointStorageAccess> {
    Arc::clone(storage) as Arc<dyn CheckpointStorageAccess>
}
