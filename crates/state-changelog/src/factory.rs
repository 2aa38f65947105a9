//! Building changelog backends around any other backend.

use std::sync::Arc;

use state_api::{BackendContext, KeyedStateBackend, Result, StateBackendFactory};

use crate::backend::{BACKEND_NAME, ChangelogKeyedStateBackend};
use crate::config::{DstlConfig, MaterializationConfig};
use crate::restore;
use crate::upload::ChangelogUploader;

/// Builds [`ChangelogKeyedStateBackend`]s around the backends of another
/// factory. Backends of one factory share its [`ChangelogUploader`], so
/// their changes are batched into common log files.
///
/// ```
/// use std::sync::Arc;
/// use state_api::{BackendContext, KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
/// use state_api::StateBackendFactory;
/// use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
/// use state_heap::HeapBackendFactory;
/// use state_storage::ObjectStoreCheckpointStorage;
///
/// let factory = ChangelogBackendFactory::new(
///     Arc::new(HeapBackendFactory::new()),
///     DstlConfig::default(),
///     MaterializationConfig::default(),
/// )
/// .unwrap();
/// let mut backend = factory
///     .create(BackendContext {
///         operator: "counts".into(),
///         max_parallelism: 128,
///         key_group_range: KeyGroupRange::all(128).unwrap(),
///         restore: Vec::new(),
///         storage: Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap()),
///         restore_storage: None,
///         skip_restored_states: Vec::new(),
///     })
///     .unwrap();
/// let count = backend.value_state(ValueStateDescriptor::<u64>::new("count")).unwrap();
/// backend.set_key(&"user-1").unwrap();
/// count.update(&mut *backend, &1).unwrap();
/// assert_eq!(count.value(&mut *backend).unwrap(), Some(1));
/// ```
pub struct ChangelogBackendFactory {
    delegate: Arc<dyn StateBackendFactory>,
    uploader: Arc<ChangelogUploader>,
    materialization: MaterializationConfig,
    name: String,
}

impl std::fmt::Debug for ChangelogBackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogBackendFactory")
            .field("name", &self.name)
            .field("materialization", &self.materialization)
            .finish_non_exhaustive()
    }
}

impl ChangelogBackendFactory {
    /// Wraps the backends of `delegate`, with a new uploader.
    ///
    /// # Errors
    /// [`StateError::Config`](state_api::StateError::Config) for invalid
    /// settings.
    pub fn new(
        delegate: Arc<dyn StateBackendFactory>,
        dstl: DstlConfig,
        materialization: MaterializationConfig,
    ) -> Result<Self> {
        Ok(Self::with_uploader(
            delegate,
            Arc::new(ChangelogUploader::new(dstl)?),
            materialization,
        ))
    }

    /// Wraps the backends of `delegate`, sharing `uploader` (for example
    /// with the factories of other operators of the same process).
    pub fn with_uploader(
        delegate: Arc<dyn StateBackendFactory>,
        uploader: Arc<ChangelogUploader>,
        materialization: MaterializationConfig,
    ) -> Self {
        let name = format!("{BACKEND_NAME}-{}", delegate.name());
        Self {
            delegate,
            uploader,
            materialization,
            name,
        }
    }

    /// The uploader the backends share.
    pub fn uploader(&self) -> &Arc<ChangelogUploader> {
        &self.uploader
    }

    /// Builds a backend as [`create`](StateBackendFactory::create) does,
    /// returning the concrete type (for its materialization controls and
    /// counters).
    ///
    /// # Errors
    /// As [`create`](StateBackendFactory::create).
    pub fn create_changelog(&self, context: BackendContext) -> Result<ChangelogKeyedStateBackend> {
        let restored = restore::restore(&*self.delegate, &context)?;
        ChangelogKeyedStateBackend::new(
            restored,
            Arc::clone(&self.uploader),
            Arc::clone(&context.storage),
            self.materialization.clone(),
            &context.operator,
        )
    }
}

impl StateBackendFactory for ChangelogBackendFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, context: BackendContext) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.create_changelog(context)?))
    }
}
