//! [`RocksDbBackendFactory`] and its [`RocksDbConfig`].

use std::fmt;
use std::path::PathBuf;

use state_api::{BackendContext, KeyedStateBackend, Result, StateBackendFactory};

use crate::backend::{BACKEND_NAME, RocksDbKeyedStateBackend};
use crate::options::{
    CompactionStyle, DEFAULT_MANAGED_MEMORY_BYTES, OptionsHook, PredefinedOptions, RocksDbMemory,
};

/// Default number of parallel uploads and downloads per snapshot or restore
/// (Flink's `state.backend.rocksdb.checkpoint.transfer.thread.num`).
pub const DEFAULT_TRANSFER_THREADS: usize = 4;

/// Configuration of RocksDB backends.
///
/// ```
/// use state_rocksdb::{PredefinedOptions, RocksDbConfig, RocksDbMemory};
/// let config = RocksDbConfig::new(std::env::temp_dir().join("my-job-state"))
///     .with_memory(RocksDbMemory::new(64 << 20)?)
///     .with_profile(PredefinedOptions::Flash)
///     .with_incremental(false)
///     .with_options_hook(|options, _table| options.set_max_background_jobs(4));
/// assert!(!config.incremental);
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Clone)]
pub struct RocksDbConfig {
    /// Directory under which each backend instance creates its own fresh
    /// subdirectory (`<operator>-<uuid>`), removed when the backend drops.
    pub local_dir: PathBuf,
    /// Whether regular checkpoints are incremental (default `true`).
    pub incremental: bool,
    /// Memory shared by every backend built with this configuration (and
    /// by other configurations holding a clone of it).
    pub memory: RocksDbMemory,
    /// Predefined option profile.
    pub profile: PredefinedOptions,
    /// Compaction style (default leveled, as in Flink).
    pub compaction_style: CompactionStyle,
    /// User adjustments of RocksDB options, applied after the profile and
    /// before the memory settings.
    pub options_hook: Option<OptionsHook>,
    /// Parallel file transfers per snapshot and restore.
    pub transfer_threads: usize,
    /// Whether incremental checkpoints upload SST files in the background
    /// as soon as a flush or compaction creates them (default `true`), so
    /// a checkpoint after a compaction does not upload its output. Costs
    /// the uploads of files compacted away before any checkpoint needed
    /// them. No effect without `incremental`.
    pub eager_upload: bool,
}

impl fmt::Debug for RocksDbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbConfig")
            .field("local_dir", &self.local_dir)
            .field("incremental", &self.incremental)
            .field("memory", &self.memory)
            .field("profile", &self.profile)
            .field("compaction_style", &self.compaction_style)
            .field("options_hook", &self.options_hook.as_ref().map(|_| "<fn>"))
            .field("transfer_threads", &self.transfer_threads)
            .field("eager_upload", &self.eager_upload)
            .finish()
    }
}

impl RocksDbConfig {
    /// Defaults with working directories under `local_dir`: incremental
    /// checkpoints, 256 MiB of managed memory, the default profile, 4
    /// transfer threads.
    ///
    /// # Panics
    /// Never: the default memory budget is valid.
    pub fn new(local_dir: impl Into<PathBuf>) -> Self {
        Self {
            local_dir: local_dir.into(),
            incremental: true,
            memory: default_memory(),
            profile: PredefinedOptions::Default,
            compaction_style: CompactionStyle::Level,
            options_hook: None,
            transfer_threads: DEFAULT_TRANSFER_THREADS,
            eager_upload: true,
        }
    }

    /// Enables or disables incremental checkpoints.
    pub fn with_incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental;
        self
    }

    /// Uses `memory` (share one across factories to share the budget).
    pub fn with_memory(mut self, memory: RocksDbMemory) -> Self {
        self.memory = memory;
        self
    }

    /// Uses the predefined option profile `profile`.
    pub fn with_profile(mut self, profile: PredefinedOptions) -> Self {
        self.profile = profile;
        self
    }

    /// Adjusts RocksDB options with `hook` (see [`OptionsHook`]).
    pub fn with_options_hook(
        mut self,
        hook: impl Fn(&mut rocksdb::Options, &mut rocksdb::BlockBasedOptions) + Send + Sync + 'static,
    ) -> Self {
        self.options_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// The RocksDB options every DB and column family of a backend built
    /// with this configuration uses: profile, hook, shared memory,
    /// hard-coded settings and the list merge operator. For tools and
    /// benchmarks that open RocksDB directly with the same settings (writes
    /// must also disable the WAL, as the backend does).
    pub fn rocksdb_options(&self) -> rocksdb::Options {
        crate::options::build(self)
    }

    /// Uses compaction style `style`.
    pub fn with_compaction_style(mut self, style: CompactionStyle) -> Self {
        self.compaction_style = style;
        self
    }

    /// Turns the eager upload of SST files on or off (see
    /// [`eager_upload`](Self::eager_upload)).
    pub fn with_eager_upload(mut self, eager: bool) -> Self {
        self.eager_upload = eager;
        self
    }

    /// Transfers up to `threads` files at a time (at least 1).
    pub fn with_transfer_threads(mut self, threads: usize) -> Self {
        self.transfer_threads = threads.max(1);
        self
    }
}

impl Default for RocksDbConfig {
    /// [`RocksDbConfig::new`] under `<temp dir>/state-rocksdb`.
    fn default() -> Self {
        Self::new(std::env::temp_dir().join("state-rocksdb"))
    }
}

#[allow(clippy::expect_used)] // the constant is above the documented minimum
fn default_memory() -> RocksDbMemory {
    RocksDbMemory::new(DEFAULT_MANAGED_MEMORY_BYTES).expect("256 MiB is a valid budget")
}

/// Builds [`RocksDbKeyedStateBackend`]s (name `"rocksdb"`), restoring
/// incremental and key-group snapshots taken at any parallelism.
///
/// ```no_run
/// use std::sync::Arc;
/// # fn demo(storage: Arc<dyn state_api::CheckpointStorageAccess>) -> state_api::Result<()> {
/// use state_api::{BackendContext, KeyGroupRange, StateBackendFactory};
/// use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig};
///
/// let factory = RocksDbBackendFactory::new(RocksDbConfig::new("/var/lib/my-job"));
/// let backend = factory.create(BackendContext {
///     operator: "window-1".into(),
///     max_parallelism: 128,
///     key_group_range: KeyGroupRange::new(0, 64)?,
///     restore: Vec::new(),
///     storage,
///     restore_storage: None,
///     skip_restored_states: Vec::new(),
/// })?;
/// assert_eq!(backend.backend_name(), "rocksdb");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RocksDbBackendFactory {
    config: RocksDbConfig,
}

impl RocksDbBackendFactory {
    /// A factory building backends with `config`.
    pub fn new(config: RocksDbConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    /// Builds a backend with its concrete type.
    ///
    /// # Errors
    /// As [`RocksDbKeyedStateBackend::from_context`].
    pub fn create_backend(&self, context: BackendContext) -> Result<RocksDbKeyedStateBackend> {
        RocksDbKeyedStateBackend::from_context(context, &self.config)
    }
}

impl StateBackendFactory for RocksDbBackendFactory {
    fn name(&self) -> &str {
        BACKEND_NAME
    }

    /// Validates `context` ([`BackendContext::validate`]) and builds a
    /// backend holding the restored state of `context.restore`.
    fn create(&self, context: BackendContext) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.create_backend(context)?))
    }
}
