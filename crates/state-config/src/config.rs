//! [`StateConfig`]: the checked configuration and what it builds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use state_api::{Result, StateBackendFactory, StateError};
use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
use state_heap::HeapBackendFactory;
#[cfg(feature = "rocksdb")]
use state_rocksdb::{
    CompactionStyle, PredefinedOptions, RocksDbBackendFactory, RocksDbConfig, RocksDbMemory,
};
use state_runtime::CheckpointingMode;
use state_runtime::coordinator::CheckpointConfig;
use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};

use crate::options::{self as keys, OPTIONS};
use crate::parse::{self, Raw, Typed};
use crate::resolve::{self, Entry, Origin, Resolved};

/// The keyed state backend a configuration selects
/// (`state.backend.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendType {
    /// `hashmap`: the copy-on-write heap backend (`state-heap`).
    HashMap,
    /// `rocksdb`: the RocksDB backend (`state-rocksdb`).
    RocksDb,
}

impl BackendType {
    /// The configuration value: `"hashmap"` or `"rocksdb"`.
    ///
    /// ```
    /// assert_eq!(state_config::BackendType::RocksDb.as_str(), "rocksdb");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendType::HashMap => "hashmap",
            BackendType::RocksDb => "rocksdb",
        }
    }
}

impl fmt::Display for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed settings (what equality compares).
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    backend: BackendType,
    incremental: bool,
    checkpoint_dir: Option<String>,
    savepoint_dir: Option<String>,
    num_retained: usize,
    recovery_path: Option<String>,
    ignore_unclaimed_state: bool,
    changelog_enabled: bool,
    materialization: MaterializationConfig,
    dstl: DstlConfig,
    rocksdb_local_dir: Option<PathBuf>,
    rocksdb_memory_bytes: usize,
    rocksdb_write_buffer_ratio: f64,
    rocksdb_profile: RocksDbProfile,
    rocksdb_transfer_threads: usize,
    rocksdb_eager_upload: bool,
    /// `state.backend.rocksdb.compaction.style` is `UNIVERSAL` (else `LEVEL`).
    rocksdb_universal_compaction: bool,
    checkpointing: CheckpointConfig,
}

/// `state.backend.rocksdb.predefined-options`, kept apart from RocksDB's
/// own type so that configuration parses in builds without RocksDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RocksDbProfile {
    Default,
    SpinningDisk,
    Flash,
}

#[cfg(feature = "rocksdb")]
impl From<RocksDbProfile> for PredefinedOptions {
    fn from(profile: RocksDbProfile) -> Self {
        match profile {
            RocksDbProfile::Default => PredefinedOptions::Default,
            RocksDbProfile::SpinningDisk => PredefinedOptions::SpinningDisk,
            RocksDbProfile::Flash => PredefinedOptions::Flash,
        }
    }
}

/// The configuration of the state layer: which keyed state backend, its
/// settings, and the checkpoint storage, read from one configuration with
/// Flink's key names (see the [option table](crate#options)).
///
/// Every source is checked completely before a `StateConfig` exists: unknown
/// keys, wrong types and invalid values are
/// [`StateError::Config`] errors naming the key and the accepted values, so
/// nothing is ever built from a half-read configuration.
///
/// ```
/// use state_config::{BackendType, StateConfig};
///
/// // Flink's flat keys, as in its config.yaml ...
/// let flat = StateConfig::from_yaml_str(
///     "state.backend.type: rocksdb\nexecution.checkpointing.incremental: true\n",
/// )?;
/// // ... or nested maps: the same configuration.
/// let nested = StateConfig::from_yaml_str(
///     "state:\n  backend:\n    type: rocksdb\nexecution:\n  checkpointing:\n    incremental: true\n",
/// )?;
/// assert_eq!(flat, nested);
/// assert_eq!(flat.backend_type(), BackendType::RocksDb);
/// assert!(flat.incremental());
///
/// let err = StateConfig::from_yaml_str("state.backend.type: rocks").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration 'state.backend.type': 'rocks' is not one of hashmap, rocksdb"
/// );
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Clone)]
pub struct StateConfig {
    settings: Settings,
    /// What the sources set, by option key; overrides replace entries here.
    resolved: BTreeMap<&'static str, Resolved>,
}

impl PartialEq for StateConfig {
    /// Configurations are equal when their settings are, however they were
    /// written (format, flat or nested keys, aliases).
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.settings, f)
    }
}

impl Default for StateConfig {
    /// Every option at its default (hashmap backend, no checkpoint
    /// directory).
    ///
    /// ```
    /// let config = state_config::StateConfig::default();
    /// assert_eq!(config.backend_type(), state_config::BackendType::HashMap);
    /// assert_eq!(config.num_retained(), 1);
    /// ```
    #[allow(clippy::expect_used)] // the built-in defaults are valid (tested)
    fn default() -> Self {
        Self::from_entries(Vec::new()).expect("the built-in defaults are valid")
    }
}

impl<'de> serde::Deserialize<'de> for StateConfig {
    /// Reads a map of keys (flat, dotted or nested) to values from any serde
    /// format, with the checks of [`StateConfig::from_yaml_str`], so a
    /// `StateConfig` can be a field of an application's own configuration
    /// type. (Use it as a field, not with `#[serde(flatten)]`, which would
    /// hand it the application's other keys too.)
    ///
    /// ```
    /// #[derive(Debug, serde::Deserialize)]
    /// struct AppConfig {
    ///     name: String,
    ///     state: state_config::StateConfig,
    /// }
    /// let app: AppConfig = serde_json::from_str(
    ///     r#"{"name": "clicks", "state": {"state.backend.type": "rocksdb"}}"#,
    /// )?;
    /// assert_eq!(app.state.backend_type(), state_config::BackendType::RocksDb);
    ///
    /// let bad = serde_json::from_str::<AppConfig>(
    ///     r#"{"name": "clicks", "state": {"state.backend.typ": "rocksdb"}}"#,
    /// );
    /// assert!(bad.unwrap_err().to_string().contains("did you mean 'state.backend.type'"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(deserializer)?;
        Self::from_raw(raw, "configuration").map_err(serde::de::Error::custom)
    }
}

/// Configuration file formats, by file extension.
const FORMATS: &str = ".toml, .yaml, .yml or .json";

impl StateConfig {
    /// Reads a TOML document: dotted keys quoted (`"state.backend.type" =
    /// "rocksdb"`) or as tables (`[state.backend]` / `type = "rocksdb"`).
    ///
    /// ```
    /// let config = state_config::StateConfig::from_toml_str(
    ///     "[state.backend]\ntype = \"rocksdb\"\n[execution.checkpointing]\nnum-retained = 3\n",
    /// )?;
    /// assert_eq!(config.num_retained(), 3);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for invalid TOML (key `TOML`) and for any
    /// unknown key, wrong type or invalid value.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let raw = toml::from_str::<Raw>(text).map_err(|e| syntax("TOML", &e))?;
        Self::from_raw(raw, "TOML")
    }

    /// Reads a YAML document such as Flink's `config.yaml`, with flat dotted
    /// keys, nested maps or both.
    ///
    /// ```
    /// let config = state_config::StateConfig::from_yaml_str(
    ///     "state.changelog.enabled: true\nstate.changelog.periodic-materialize.interval: 2 min\n",
    /// )?;
    /// assert!(config.changelog_enabled());
    /// assert_eq!(
    ///     config.materialization_config().interval,
    ///     Some(std::time::Duration::from_secs(120))
    /// );
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for invalid YAML (key `YAML`) and for any
    /// unknown key, wrong type or invalid value.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let raw = serde_norway::from_str::<Raw>(text).map_err(|e| syntax("YAML", &e))?;
        Self::from_raw(raw, "YAML")
    }

    /// Reads a JSON object, with flat dotted keys, nested objects or both.
    ///
    /// ```
    /// let config = state_config::StateConfig::from_json_str(
    ///     r#"{"execution": {"checkpointing": {"dir": "memory://"}}}"#,
    /// )?;
    /// assert_eq!(config.checkpoint_dir(), Some("memory://"));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for invalid JSON (key `JSON`) and for any
    /// unknown key, wrong type or invalid value.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw = serde_json::from_str::<Raw>(text).map_err(|e| syntax("JSON", &e))?;
        Self::from_raw(raw, "JSON")
    }

    /// Reads a file, choosing the format by its extension: `.toml`, `.yaml`
    /// or `.yml`, `.json`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("state.yaml");
    /// std::fs::write(&path, "state.backend.type: rocksdb\n")?;
    /// let config = state_config::StateConfig::from_file(&path)?;
    /// assert_eq!(config.backend_type(), state_config::BackendType::RocksDb);
    ///
    /// let err = state_config::StateConfig::from_file("state.ini").unwrap_err();
    /// assert!(err.to_string().contains(".toml, .yaml, .yml or .json"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] keyed by the path for an unknown extension, an
    /// unreadable file or invalid syntax; keyed by the option for unknown
    /// keys, wrong types and invalid values.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let parse: fn(&str) -> Result<Self> = match extension.as_deref() {
            Some("toml") => Self::from_toml_str,
            Some("yaml" | "yml") => Self::from_yaml_str,
            Some("json") => Self::from_json_str,
            other => {
                return Err(StateError::Config {
                    key: shown,
                    message: format!(
                        "unsupported configuration file extension {}: use {FORMATS}",
                        other.map_or_else(|| "(none)".to_string(), |e| format!("'.{e}'"))
                    ),
                });
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| StateError::Config {
            key: shown.clone(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        parse(&text).map_err(|e| match e {
            // Syntax errors name the format; name the file instead.
            StateError::Config { key, message } if ["TOML", "YAML", "JSON"].contains(&&*key) => {
                StateError::Config {
                    key: shown,
                    message,
                }
            }
            other => other,
        })
    }

    /// Reads the process environment: every variable starting with
    /// [`ENV_PREFIX`](crate::ENV_PREFIX) (`KSTATE_`) sets the option its name
    /// maps to (see [`env_var_name`](crate::env_var_name)); others are
    /// ignored.
    ///
    /// # Errors
    /// As [`from_env_vars`](Self::from_env_vars); also a `KSTATE_` variable
    /// whose value is not valid UTF-8.
    pub fn from_env() -> Result<Self> {
        Self::from_entries(process_env()?)
    }

    /// Reads the given environment variables (for tests and for
    /// environments held elsewhere): `KSTATE_` and the key upper-cased with
    /// `.` → `_` and `-` → `__`. Variables without the prefix are ignored;
    /// an empty value leaves the option unset.
    ///
    /// ```
    /// use state_config::StateConfig;
    /// let config = StateConfig::from_env_vars([
    ///     ("KSTATE_STATE_BACKEND_TYPE", "rocksdb"),
    ///     ("KSTATE_EXECUTION_CHECKPOINTING_NUM__RETAINED", "3"),
    ///     ("PATH", "/usr/bin"),
    /// ])?;
    /// assert_eq!(config.num_retained(), 3);
    ///
    /// let err = StateConfig::from_env_vars([("KSTATE_STATE_BACKEND_TYP", "rocksdb")]).unwrap_err();
    /// assert!(err.to_string().contains("did you mean KSTATE_STATE_BACKEND_TYPE"));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for an unknown `KSTATE_` variable (keyed by its
    /// name) and for invalid values (keyed by the option).
    pub fn from_env_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::from_entries(crate::env::entries(vars)?)
    }

    /// Reads flat key/value pairs with string values, e.g. from
    /// command-line flags (`-D key=value`).
    ///
    /// ```
    /// let config = state_config::StateConfig::from_pairs([
    ///     ("state.backend.type", "rocksdb"),
    ///     ("state.backend.rocksdb.memory.fixed-per-tm", "64 mb"),
    /// ])?;
    /// assert_eq!(config.rocksdb_memory_bytes(), 64 << 20);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for unknown keys and invalid values.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::from_entries(pairs_to_entries(pairs))
    }

    /// This configuration with `pairs` (flat keys, string values) set on
    /// top: an override replaces the option whether it was set by its key
    /// or an alias. The result is checked as a whole again.
    ///
    /// ```
    /// let base = state_config::StateConfig::from_yaml_str("state.checkpoints.dir: /data/ckpt")?;
    /// let local = base.with_overrides([("execution.checkpointing.dir", "memory://")])?;
    /// assert_eq!(local.checkpoint_dir(), Some("memory://"));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for unknown keys and invalid values.
    pub fn with_overrides<I, K, V>(&self, pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.layered(&pairs_to_entries(pairs))
    }

    /// This configuration with the `KSTATE_` variables among `vars` set on
    /// top (a file for defaults, the environment for the deployment).
    ///
    /// ```
    /// let file = state_config::StateConfig::from_yaml_str("state.backend.type: rocksdb")?;
    /// let config = file.with_env_vars([("KSTATE_STATE_BACKEND_TYPE", "hashmap")])?;
    /// assert_eq!(config.backend_type(), state_config::BackendType::HashMap);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// As [`from_env_vars`](Self::from_env_vars).
    pub fn with_env_vars<I, K, V>(&self, vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.layered(&crate::env::entries(vars)?)
    }

    /// This configuration with the process environment's `KSTATE_`
    /// variables set on top.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn with_env(&self) -> Result<Self> {
        self.layered(&process_env()?)
    }

    /// The deprecated keys this configuration used, each with the key that
    /// replaces it (for warnings).
    ///
    /// ```
    /// let config = state_config::StateConfig::from_yaml_str("state.backend: rocksdb")?;
    /// assert_eq!(config.deprecated_keys(), vec![("state.backend", "state.backend.type")]);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn deprecated_keys(&self) -> Vec<(&str, &'static str)> {
        self.resolved
            .iter()
            .filter(|(key, r)| r.written_as != **key)
            .map(|(key, r)| (r.written_as.as_str(), *key))
            .collect()
    }

    /// `state.backend.type`.
    pub fn backend_type(&self) -> BackendType {
        self.settings.backend
    }

    /// `execution.checkpointing.incremental` (only RocksDB honours it).
    pub fn incremental(&self) -> bool {
        self.settings.incremental
    }

    /// `execution.checkpointing.dir`, if set.
    pub fn checkpoint_dir(&self) -> Option<&str> {
        self.settings.checkpoint_dir.as_deref()
    }

    /// `execution.checkpointing.savepoint-dir`, if set.
    ///
    /// ```
    /// let config = state_config::StateConfig::from_pairs([
    ///     ("execution.checkpointing.savepoint-dir", "s3://bucket/savepoints"),
    /// ])?;
    /// assert_eq!(config.savepoint_dir(), Some("s3://bucket/savepoints"));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn savepoint_dir(&self) -> Option<&str> {
        self.settings.savepoint_dir.as_deref()
    }

    /// `execution.checkpointing.num-retained` (at least 1).
    pub fn num_retained(&self) -> usize {
        self.settings.num_retained
    }

    /// `execution.state-recovery.path`: the savepoint or checkpoint to
    /// restore from, if set.
    ///
    /// ```
    /// let config = state_config::StateConfig::from_yaml_str(
    ///     "execution.state-recovery.path: /savepoints/savepoint-1a2b-7\nexecution.state-recovery.ignore-unclaimed-state: true\n",
    /// )?;
    /// assert_eq!(config.recovery_path(), Some("/savepoints/savepoint-1a2b-7"));
    /// assert!(config.ignore_unclaimed_state());
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn recovery_path(&self) -> Option<&str> {
        self.settings.recovery_path.as_deref()
    }

    /// `execution.state-recovery.ignore-unclaimed-state`: whether a restore
    /// may skip state the job no longer registers (operators or states).
    pub fn ignore_unclaimed_state(&self) -> bool {
        self.settings.ignore_unclaimed_state
    }

    /// The checkpoint coordinator's settings
    /// (`execution.checkpointing.interval`, `min-pause`,
    /// `max-concurrent-checkpoints`, `timeout`,
    /// `tolerable-failed-checkpoints`, `mode`, `unaligned.enabled`,
    /// `aligned-checkpoint-timeout`), checked as Flink checks them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use state_runtime::CheckpointingMode;
    ///
    /// let config = state_config::StateConfig::from_pairs([
    ///     ("execution.checkpointing.interval", "30 s"),
    ///     ("execution.checkpointing.unaligned.enabled", "true"),
    ///     ("execution.checkpointing.aligned-checkpoint-timeout", "5 s"),
    /// ])?;
    /// let checkpointing = config.checkpoint_config();
    /// assert_eq!(checkpointing.interval, Some(Duration::from_secs(30)));
    /// assert_eq!(checkpointing.mode, CheckpointingMode::ExactlyOnce);
    /// assert_eq!(checkpointing.timeout, Duration::from_secs(600));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn checkpoint_config(&self) -> &CheckpointConfig {
        &self.settings.checkpointing
    }

    /// `state.changelog.enabled`.
    pub fn changelog_enabled(&self) -> bool {
        self.settings.changelog_enabled
    }

    /// The changelog's materialization settings
    /// (`state.changelog.periodic-materialize.*`,
    /// `state.changelog.max-failures-allowed`); `interval` is `None` when
    /// periodic materialization is disabled.
    pub fn materialization_config(&self) -> &MaterializationConfig {
        &self.settings.materialization
    }

    /// The changelog's upload settings (`state.changelog.dstl.dfs.*`).
    pub fn dstl_config(&self) -> &DstlConfig {
        &self.settings.dstl
    }

    /// `state.backend.rocksdb.localdir`, if set.
    pub fn rocksdb_local_dir(&self) -> Option<&Path> {
        self.settings.rocksdb_local_dir.as_deref()
    }

    /// `state.backend.rocksdb.memory.fixed-per-tm` in bytes.
    pub fn rocksdb_memory_bytes(&self) -> usize {
        self.settings.rocksdb_memory_bytes
    }

    /// `state.backend.rocksdb.memory.write-buffer-ratio`.
    pub fn rocksdb_write_buffer_ratio(&self) -> f64 {
        self.settings.rocksdb_write_buffer_ratio
    }

    /// `state.backend.rocksdb.predefined-options`.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb_predefined_options(&self) -> PredefinedOptions {
        self.settings.rocksdb_profile.into()
    }

    /// `state.backend.rocksdb.checkpoint.transfer.thread.num`.
    pub fn rocksdb_transfer_threads(&self) -> usize {
        self.settings.rocksdb_transfer_threads
    }

    /// `state.backend.rocksdb.compaction.style`.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb_compaction_style(&self) -> CompactionStyle {
        if self.settings.rocksdb_universal_compaction {
            CompactionStyle::Universal
        } else {
            CompactionStyle::Level
        }
    }

    /// `state.backend.rocksdb.checkpoint.eager-upload`.
    pub fn rocksdb_eager_upload(&self) -> bool {
        self.settings.rocksdb_eager_upload
    }

    /// The RocksDB backend configuration these settings describe, with a
    /// new memory budget (shared by every backend of a factory built from
    /// it).
    ///
    /// ```
    /// let config = state_config::StateConfig::from_pairs([
    ///     ("state.backend.rocksdb.memory.fixed-per-tm", "64mb"),
    ///     ("execution.checkpointing.incremental", "true"),
    /// ])?;
    /// let rocksdb = config.rocksdb_config()?;
    /// assert_eq!(rocksdb.memory.managed_memory_bytes(), 64 << 20);
    /// assert!(rocksdb.incremental);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] if RocksDB rejects the memory settings.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb_config(&self) -> Result<RocksDbConfig> {
        let s = &self.settings;
        let memory = RocksDbMemory::with_write_buffer_ratio(
            s.rocksdb_memory_bytes,
            s.rocksdb_write_buffer_ratio,
        )
        .map_err(|e| StateError::Config {
            key: keys::ROCKSDB_MEMORY.into(),
            message: e.to_string(),
        })?;
        let config = match &s.rocksdb_local_dir {
            Some(dir) => RocksDbConfig::new(dir),
            None => RocksDbConfig::default(),
        };
        Ok(config
            .with_memory(memory)
            .with_profile(s.rocksdb_profile.into())
            .with_incremental(s.incremental)
            .with_transfer_threads(s.rocksdb_transfer_threads)
            .with_eager_upload(s.rocksdb_eager_upload)
            .with_compaction_style(self.rocksdb_compaction_style()))
    }

    /// The keyed state backend factory: heap or RocksDB, wrapped in the
    /// changelog backend when `state.changelog.enabled` is true. Backends
    /// come from its [`create`](StateBackendFactory::create). Call it once
    /// per process: the RocksDB memory bound and the changelog uploader are
    /// per factory.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use state_api::{BackendContext, KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
    /// use state_storage::ObjectStoreCheckpointStorage;
    ///
    /// let config = state_config::StateConfig::from_yaml_str("state.changelog.enabled: true")?;
    /// let factory = config.backend_factory()?;
    /// assert_eq!(factory.name(), "changelog-heap");
    /// let mut backend = factory.create(BackendContext {
    ///     operator: "counter-0".into(),
    ///     max_parallelism: 128,
    ///     key_group_range: KeyGroupRange::all(128)?,
    ///     restore: Vec::new(),
    ///     storage: Arc::new(ObjectStoreCheckpointStorage::in_memory("job")?),
    ///     restore_storage: None,
    ///     skip_restored_states: Vec::new(),
    /// })?;
    /// let count = backend.value_state(ValueStateDescriptor::<u64>::new("count"))?;
    /// backend.set_key(&"alice")?;
    /// count.update(&mut *backend, &1)?;
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] if RocksDB or the changelog reject their
    /// settings, or for RocksDB in a build without the `rocksdb` feature.
    pub fn backend_factory(&self) -> Result<Arc<dyn StateBackendFactory>> {
        let plain: Arc<dyn StateBackendFactory> = match self.settings.backend {
            BackendType::HashMap => Arc::new(HeapBackendFactory::new()),
            #[cfg(feature = "rocksdb")]
            BackendType::RocksDb => Arc::new(RocksDbBackendFactory::new(self.rocksdb_config()?)),
            #[cfg(not(feature = "rocksdb"))]
            BackendType::RocksDb => {
                return Err(StateError::Config {
                    key: keys::BACKEND_TYPE.into(),
                    message: "this build has no RocksDB (state-config without its `rocksdb` \
                              feature)"
                        .into(),
                });
            }
        };
        if !self.settings.changelog_enabled {
            return Ok(plain);
        }
        Ok(Arc::new(ChangelogBackendFactory::new(
            plain,
            self.settings.dstl.clone(),
            self.settings.materialization.clone(),
        )?))
    }

    /// The checkpoint storage of job `job_id` under
    /// `execution.checkpointing.dir` (a local path, `file://`, `memory://`,
    /// or a cloud URL with its cargo feature). A `memory://` directory is a
    /// new, empty store on each call: call it once per job and share the
    /// result.
    ///
    /// ```
    /// use state_api::CheckpointStorageAccess;
    /// let config = state_config::StateConfig::from_pairs([("execution.checkpointing.dir", "memory:///ckpt")])?;
    /// assert_eq!(config.checkpoint_storage("job-1")?.location(), "memory:///ckpt/job-1");
    ///
    /// let err = state_config::StateConfig::default().checkpoint_storage("job-1").unwrap_err();
    /// assert!(err.to_string().contains("execution.checkpointing.dir"));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] naming `execution.checkpointing.dir` when it is
    /// unset, or when its scheme needs a cargo feature this build lacks;
    /// [`StateError::Storage`] when a local directory cannot be created.
    pub fn checkpoint_storage(&self, job_id: &str) -> Result<ObjectStoreCheckpointStorage> {
        let dir = self.checkpoint_dir().ok_or_else(|| StateError::Config {
            key: keys::CHECKPOINT_DIR.into(),
            message: format!(
                "not set: the checkpoint storage needs {}",
                crate::OptionType::Location.accepted()
            ),
        })?;
        ObjectStoreCheckpointStorage::from_url(dir, job_id, std::iter::empty::<(&str, &str)>())
    }

    /// The completed-checkpoint store of `storage` (usually from
    /// [`checkpoint_storage`](Self::checkpoint_storage)), retaining
    /// `execution.checkpointing.num-retained` checkpoints.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let config = state_config::StateConfig::from_pairs([
    ///     ("execution.checkpointing.dir", "memory://"),
    ///     ("execution.checkpointing.num-retained", "3"),
    /// ])?;
    /// let storage = Arc::new(config.checkpoint_storage("job-1")?);
    /// let store = config.checkpoint_store(storage)?;
    /// assert_eq!(store.num_retained(), 3);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// As [`CompletedCheckpointStore::open`].
    pub fn checkpoint_store(
        &self,
        storage: Arc<ObjectStoreCheckpointStorage>,
    ) -> Result<CompletedCheckpointStore> {
        CompletedCheckpointStore::open(storage, self.settings.num_retained)
    }

    /// A document's root value → configuration.
    fn from_raw(raw: Raw, format: &str) -> Result<Self> {
        let entries = match raw {
            Raw::Null => Vec::new(),
            Raw::Map(entries) => parse::flatten(entries),
            other => {
                return Err(StateError::Config {
                    key: format.into(),
                    message: format!(
                        "the document must be a map of keys to values, not {}",
                        other.describe()
                    ),
                });
            }
        };
        Self::from_entries(
            entries
                .into_iter()
                .map(|(key, value)| Entry {
                    key,
                    value,
                    origin: Origin::Document,
                })
                .collect(),
        )
    }

    fn from_entries(entries: Vec<Entry>) -> Result<Self> {
        let resolved = resolve::resolve(&entries)?;
        Self::assemble(resolved)
    }

    fn layered(&self, entries: &[Entry]) -> Result<Self> {
        let mut resolved = self.resolved.clone();
        resolved.extend(resolve::resolve(entries)?);
        Self::assemble(resolved)
    }

    /// Typed settings from the options set and the table's defaults.
    fn assemble(resolved: BTreeMap<&'static str, Resolved>) -> Result<Self> {
        let mut values: BTreeMap<&'static str, Typed> = BTreeMap::new();
        for option in OPTIONS {
            if let Some(default) = option.default {
                let typed =
                    parse::convert(&option.kind, &Raw::Str(default.into())).map_err(|message| {
                        StateError::Config {
                            key: option.key.into(),
                            message: format!("invalid built-in default: {message}"),
                        }
                    })?;
                values.insert(option.key, typed);
            }
        }
        for (key, r) in &resolved {
            values.insert(key, r.typed.clone());
        }
        let v = Values(&values);
        let materialization = MaterializationConfig {
            interval: if v.bool(keys::MATERIALIZE_ENABLED)? {
                Some(v.duration(keys::MATERIALIZE_INTERVAL)?)
            } else {
                None
            },
            max_failures_allowed: v.int(keys::MAX_FAILURES_ALLOWED)?,
        };
        let dstl = DstlConfig {
            preemptive_persist_threshold: v.int(keys::DSTL_PREEMPTIVE_PERSIST_THRESHOLD)?,
            persist_delay: v.duration(keys::DSTL_PERSIST_DELAY)?,
            persist_size_threshold: v.int(keys::DSTL_PERSIST_SIZE_THRESHOLD)?,
            upload_threads: v.int(keys::DSTL_UPLOAD_THREADS)?,
            max_in_flight: v.int(keys::DSTL_MAX_IN_FLIGHT)?,
            upload_timeout: v.duration(keys::DSTL_UPLOAD_TIMEOUT)?,
            max_attempts: v.int(keys::DSTL_MAX_ATTEMPTS)?,
            retry_delay: v.duration(keys::DSTL_RETRY_DELAY)?,
        };
        dstl.validate()?;
        let settings = Settings {
            backend: match v.string(keys::BACKEND_TYPE)? {
                "rocksdb" => BackendType::RocksDb,
                "hashmap" => BackendType::HashMap,
                // The option table accepts only the names above.
                _ => return Err(internal(keys::BACKEND_TYPE)),
            },
            incremental: v.bool(keys::INCREMENTAL)?,
            checkpoint_dir: v.optional_string(keys::CHECKPOINT_DIR)?,
            savepoint_dir: v.optional_string(keys::SAVEPOINT_DIR)?,
            num_retained: v.int(keys::NUM_RETAINED)?,
            recovery_path: v.optional_string(keys::RECOVERY_PATH)?,
            ignore_unclaimed_state: v.bool(keys::IGNORE_UNCLAIMED_STATE)?,
            changelog_enabled: v.bool(keys::CHANGELOG_ENABLED)?,
            materialization,
            dstl,
            rocksdb_local_dir: v
                .optional_string(keys::ROCKSDB_LOCAL_DIR)?
                .map(PathBuf::from),
            rocksdb_memory_bytes: v.int(keys::ROCKSDB_MEMORY)?,
            rocksdb_write_buffer_ratio: v.float(keys::ROCKSDB_WRITE_BUFFER_RATIO)?,
            rocksdb_profile: match v.string(keys::ROCKSDB_PREDEFINED_OPTIONS)? {
                "SPINNING_DISK_OPTIMIZED" => RocksDbProfile::SpinningDisk,
                "FLASH_SSD_OPTIMIZED" => RocksDbProfile::Flash,
                _ => RocksDbProfile::Default,
            },
            rocksdb_transfer_threads: v.int(keys::ROCKSDB_TRANSFER_THREADS)?,
            rocksdb_eager_upload: v.bool(keys::ROCKSDB_EAGER_UPLOAD)?,
            rocksdb_universal_compaction: v.string(keys::ROCKSDB_COMPACTION_STYLE)? == "UNIVERSAL",
            checkpointing: CheckpointConfig {
                interval: v.optional_duration(keys::CHECKPOINT_INTERVAL)?,
                min_pause: v.duration(keys::CHECKPOINT_MIN_PAUSE)?,
                max_concurrent: v.int(keys::CHECKPOINT_MAX_CONCURRENT)?,
                timeout: v.duration(keys::CHECKPOINT_TIMEOUT)?,
                tolerable_failed: v.int(keys::CHECKPOINT_TOLERABLE_FAILED)?,
                mode: match v.string(keys::CHECKPOINT_MODE)? {
                    "AT_LEAST_ONCE" => CheckpointingMode::AtLeastOnce,
                    _ => CheckpointingMode::ExactlyOnce,
                },
                unaligned: v.bool(keys::CHECKPOINT_UNALIGNED)?,
                aligned_checkpoint_timeout: v.duration(keys::CHECKPOINT_ALIGNED_TIMEOUT)?,
            },
        };
        settings.checkpointing.validate()?;
        Ok(Self { settings, resolved })
    }
}

/// Typed access to the checked values; a missing or mistyped value is an
/// internal inconsistency of the option table, reported as an error.
struct Values<'a>(&'a BTreeMap<&'static str, Typed>);

impl Values<'_> {
    fn get(&self, key: &'static str) -> Result<&Typed> {
        self.0.get(key).ok_or_else(|| internal(key))
    }

    fn bool(&self, key: &'static str) -> Result<bool> {
        match self.get(key)? {
            Typed::Bool(b) => Ok(*b),
            _ => Err(internal(key)),
        }
    }

    /// Integers and memory sizes, converted to the field's type.
    fn int<T: TryFrom<u64>>(&self, key: &'static str) -> Result<T> {
        match self.get(key)? {
            Typed::Int(n) | Typed::Bytes(n) => T::try_from(*n).map_err(|_| StateError::Config {
                key: key.into(),
                message: format!("{n} is too large for this platform"),
            }),
            _ => Err(internal(key)),
        }
    }

    fn float(&self, key: &'static str) -> Result<f64> {
        match self.get(key)? {
            Typed::Float(f) => Ok(*f),
            _ => Err(internal(key)),
        }
    }

    fn duration(&self, key: &'static str) -> Result<Duration> {
        match self.get(key)? {
            Typed::Duration(d) => Ok(*d),
            _ => Err(internal(key)),
        }
    }

    fn optional_duration(&self, key: &'static str) -> Result<Option<Duration>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Typed::Duration(d)) => Ok(Some(*d)),
            Some(_) => Err(internal(key)),
        }
    }

    fn string(&self, key: &'static str) -> Result<&str> {
        match self.get(key)? {
            Typed::Str(s) => Ok(s),
            _ => Err(internal(key)),
        }
    }

    fn optional_string(&self, key: &'static str) -> Result<Option<String>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Typed::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(internal(key)),
        }
    }
}

fn internal(key: &str) -> StateError {
    StateError::Config {
        key: key.into(),
        message: "internal error: the option table and the settings disagree".into(),
    }
}

fn syntax(format: &str, error: &dyn fmt::Display) -> StateError {
    // Parsers draw the offending line and a caret over several lines; an
    // error message is one line.
    let text = error.to_string();
    let one_line = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.chars().all(|c| matches!(c, '|' | '^' | ' ')))
        .collect::<Vec<_>>()
        .join(" ");
    StateError::Config {
        key: format.into(),
        message: format!("not valid {format}: {one_line}"),
    }
}

fn pairs_to_entries<I, K, V>(pairs: I) -> Vec<Entry>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    pairs
        .into_iter()
        .map(|(k, v)| Entry {
            key: k.as_ref().trim().to_string(),
            value: Raw::Str(v.as_ref().to_string()),
            origin: Origin::Document,
        })
        .collect()
}

/// The process's `KSTATE_` variables.
fn process_env() -> Result<Vec<Entry>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(crate::ENV_PREFIX) {
            continue;
        }
        let value = value.into_string().map_err(|_| StateError::Config {
            key: name.to_string(),
            message: "the value is not valid UTF-8".into(),
        })?;
        vars.push((name.to_string(), value));
    }
    crate::env::entries(vars)
}
