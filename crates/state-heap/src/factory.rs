//! [`HeapBackendFactory`]: builds heap backends, restoring snapshots.

use state_api::{BackendContext, KeyedStateBackend, Result, StateBackendFactory};

use crate::backend::{BACKEND_NAME, HeapKeyedStateBackend};

/// Builds [`HeapKeyedStateBackend`]s (name `"heap"`), restoring key-group
/// snapshots taken at any parallelism.
///
/// ```
/// use std::sync::Arc;
/// # fn demo(storage: Arc<dyn state_api::CheckpointStorageAccess>) -> state_api::Result<()> {
/// use state_api::{BackendContext, KeyGroupRange, StateBackendFactory};
/// use state_heap::HeapBackendFactory;
///
/// let backend = HeapBackendFactory::new().create(BackendContext {
///     operator: "window-1".into(),
///     max_parallelism: 128,
///     key_group_range: KeyGroupRange::new(0, 64)?,
///     restore: Vec::new(),
///     storage,
///     restore_storage: None,
///     skip_restored_states: Vec::new(),
/// })?;
/// assert_eq!(backend.backend_name(), "heap");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapBackendFactory;

impl HeapBackendFactory {
    /// The factory.
    pub fn new() -> Self {
        Self
    }
}

impl StateBackendFactory for HeapBackendFactory {
    fn name(&self) -> &str {
        BACKEND_NAME
    }

    /// Validates `context` ([`BackendContext::validate`]) and builds a
    /// backend holding the restored state of `context.restore`.
    fn create(&self, context: BackendContext) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(HeapKeyedStateBackend::from_context(context)?))
    }
}
