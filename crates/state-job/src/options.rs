//! The job's command line and the state configuration it makes.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use state_api::snapshot::SavepointFormat;
use state_api::{Result, StateError};
use state_config::StateConfig;

/// The flags whose settings a `--config` file gives instead.
const CONFIG_FILE_REPLACES: [&str; 8] = [
    "backend",
    "checkpoint_dir",
    "num_retained",
    "local_dir",
    "managed_memory_mb",
    "full_checkpoints",
    "changelog",
    "materialization_interval_ms",
];

/// Which keyed state backend the job runs on.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendKind {
    /// Copy-on-write heap backend.
    Heap,
    /// RocksDB backend with incremental checkpoints.
    Rocksdb,
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Multi-task keyed dataflow with in-band checkpoint barriers, injected failures and rescaling restores"
)]
pub struct Options {
    /// Read the backend and checkpoint settings from this file (.yaml, .yml,
    /// .toml or .json, with Flink's keys; examples in config/). It replaces
    /// --backend, --checkpoint-dir, --num-retained, --local-dir,
    /// --managed-memory-mb, --full-checkpoints, --changelog and
    /// --materialization-interval-ms, which cannot be given with it.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = CONFIG_FILE_REPLACES
    )]
    pub config: Option<std::path::PathBuf>,
    /// Keyed state backend.
    #[arg(long, value_enum, default_value = "heap")]
    pub backend: BackendKind,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Number of events in the main stream (the adjustments stream has a
    /// quarter as many).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Parallelism of the sources and the keyed operator before the first
    /// failure (and after every second one).
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// Parallelism after the first failure (and every second one).
    #[arg(long, default_value_t = 3)]
    pub restore_parallelism: u32,
    /// Max parallelism (number of key groups); fixed for the job's lifetime.
    #[arg(long, default_value_t = 128)]
    pub max_parallelism: u32,
    /// Time between checkpoints in ms (execution.checkpointing.interval;
    /// 100 ms when neither this nor the configuration sets it).
    #[arg(long, value_name = "MS")]
    pub checkpoint_interval: Option<u64>,
    /// How checkpoints treat in-flight records
    /// (execution.checkpointing.mode and unaligned.enabled; default: the
    /// configuration's, exactly once aligned when it says nothing).
    #[arg(long, value_enum)]
    pub checkpointing: Option<CheckpointingArg>,
    /// Unaligned only: start aligned and switch to unaligned when the
    /// alignment takes longer than this, in ms
    /// (execution.checkpointing.aligned-checkpoint-timeout).
    #[arg(long, value_name = "MS")]
    pub aligned_checkpoint_timeout: Option<u64>,
    /// The failures to inject, one per attempt, in order: `task` (a task
    /// thread dies mid-stream), `storage` (every write to the checkpoint
    /// storage fails for 0.5 s or until the job fails over, whichever comes
    /// first), `checkpoint-crash` (the
    /// whole job stops dead while a checkpoint is half acknowledged), or
    /// `none`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "task,storage,checkpoint-crash"
    )]
    pub inject_failures: Vec<FailureKind>,
    /// Events-stream offset of the first failure (default: spread evenly,
    /// the first at 1/(n+1) of the stream for n failures); later ones
    /// follow at the same spacing.
    #[arg(long)]
    pub fail_at: Option<u64>,
    /// Splits (partitions) of each input stream, spread over the source
    /// instances; a restore at another parallelism redistributes them.
    #[arg(long, default_value_t = 8)]
    pub splits: u32,
    /// Events per second of all sources together (0: as fast as the job
    /// goes).
    #[arg(long, default_value_t = 0)]
    pub source_rate: u64,
    /// Records a channel between two tasks holds before its producer
    /// blocks (back-pressure).
    #[arg(long, default_value_t = 1_000)]
    pub channel_capacity: usize,
    /// Checkpoint directory: a local path, or a URL such as file:///..., s3://bucket/prefix.
    #[arg(long, default_value = "target/state-job/checkpoints")]
    pub checkpoint_dir: String,
    /// Completed checkpoints to retain.
    #[arg(long, default_value_t = 1)]
    pub num_retained: usize,
    /// Seed of the event stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Local working directory of the RocksDB backend (each instance uses a
    /// fresh subdirectory, removed when it closes).
    #[arg(long, default_value = "target/state-job/rocksdb")]
    pub local_dir: std::path::PathBuf,
    /// Managed memory of all RocksDB instances of the job, in MiB (one
    /// shared block cache and write buffer manager).
    #[arg(long, default_value_t = 256)]
    pub managed_memory_mb: usize,
    /// Take full instead of incremental RocksDB checkpoints.
    #[arg(long)]
    pub full_checkpoints: bool,
    /// Wrap the backend in the changelog backend: checkpoints upload only
    /// the changes since the last materialization.
    #[arg(long)]
    pub changelog: bool,
    /// Changelog only: how often the wrapped backend is materialized, in
    /// milliseconds (Flink's default: 10 minutes).
    #[arg(long, default_value_t = 600_000)]
    pub materialization_interval_ms: u64,
    /// Start from this savepoint or retained checkpoint (a savepoint
    /// directory, `<job dir>/chk-<n>`, or its `_metadata`) at its source
    /// offset, instead of from the start of the stream; the backend may
    /// differ from the one that took it. Overrides
    /// execution.state-recovery.path.
    #[arg(long, value_name = "PATH")]
    pub from_savepoint: Option<String>,
    /// Skip state of the savepoint that the job does not register instead
    /// of failing (execution.state-recovery.ignore-unclaimed-state).
    #[arg(long)]
    pub allow_non_restored_state: bool,
    /// Take a savepoint of the final state when the stream ends, into the
    /// savepoint directory.
    #[arg(long)]
    pub stop_with_savepoint: bool,
    /// Savepoint directory: a local path or a URL. Overrides
    /// execution.checkpointing.savepoint-dir.
    #[arg(long, value_name = "DIR")]
    pub savepoint_dir: Option<String>,
    /// Format of the final savepoint: canonical (any backend restores it) or
    /// native (the backend's own files; RocksDB restores only).
    #[arg(long, value_enum, default_value = "canonical")]
    pub savepoint_format: SavepointFormatArg,
}

/// Checkpointing modes on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckpointingArg {
    /// Aligned barriers: each record in the state exactly once.
    ExactlyOnce,
    /// Barriers never block an input: records may be counted twice after a
    /// restore.
    AtLeastOnce,
    /// Barriers overtake in-flight records, which are stored with the
    /// checkpoint: exactly once without waiting for alignment.
    Unaligned,
}

/// Failures the job injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailureKind {
    /// A keyed task thread fails while processing a record.
    Task,
    /// The checkpoint storage refuses every write for 0.5 s, or until the
    /// job fails over.
    Storage,
    /// The job stops dead (no clean-up, no notices) while a checkpoint is
    /// acknowledged by some tasks and not others.
    CheckpointCrash,
    /// No failure (ignored in a list with others).
    None,
}

impl FailureKind {
    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Task => "task",
            FailureKind::Storage => "storage",
            FailureKind::CheckpointCrash => "checkpoint-crash",
            FailureKind::None => "none",
        }
    }
}

/// The job's checkpoint interval when nothing sets one.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Savepoint formats on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SavepointFormatArg {
    /// The key-group format every backend reads.
    Canonical,
    /// The backend's own files (RocksDB's SST files).
    Native,
}

impl From<SavepointFormatArg> for SavepointFormat {
    fn from(format: SavepointFormatArg) -> Self {
        match format {
            SavepointFormatArg::Canonical => SavepointFormat::Canonical,
            SavepointFormatArg::Native => SavepointFormat::Native,
        }
    }
}

/// The state configuration of a run: the `--config` file, or the flags.
///
/// # Errors
/// [`StateError::Config`] for an unreadable or invalid file or invalid flag
/// values.
pub fn state_config(o: &Options) -> Result<StateConfig> {
    let config = match &o.config {
        Some(path) => StateConfig::from_file(path)?,
        None => flags_config(o)?,
    };
    // The savepoint flags go on top of the file or the other flags.
    let mut overrides: Vec<(&str, &str)> = Vec::new();
    if let Some(path) = &o.from_savepoint {
        overrides.push(("execution.state-recovery.path", path));
    }
    if o.allow_non_restored_state {
        overrides.push(("execution.state-recovery.ignore-unclaimed-state", "true"));
    }
    if let Some(dir) = &o.savepoint_dir {
        overrides.push(("execution.checkpointing.savepoint-dir", dir));
    }
    let interval = o.checkpoint_interval.map(|ms| format!("{ms}ms"));
    if let Some(interval) = &interval {
        overrides.push(("execution.checkpointing.interval", interval));
    }
    match o.checkpointing {
        Some(CheckpointingArg::ExactlyOnce) => overrides.extend([
            ("execution.checkpointing.mode", "EXACTLY_ONCE"),
            ("execution.checkpointing.unaligned.enabled", "false"),
        ]),
        Some(CheckpointingArg::AtLeastOnce) => overrides.extend([
            ("execution.checkpointing.mode", "AT_LEAST_ONCE"),
            ("execution.checkpointing.unaligned.enabled", "false"),
        ]),
        Some(CheckpointingArg::Unaligned) => overrides.extend([
            ("execution.checkpointing.mode", "EXACTLY_ONCE"),
            ("execution.checkpointing.unaligned.enabled", "true"),
        ]),
        None => {}
    }
    let timeout = o.aligned_checkpoint_timeout.map(|ms| format!("{ms}ms"));
    if let Some(timeout) = &timeout {
        overrides.push((
            "execution.checkpointing.aligned-checkpoint-timeout",
            timeout,
        ));
    }
    if overrides.is_empty() {
        Ok(config)
    } else {
        config.with_overrides(overrides)
    }
}

/// The flags as configuration keys. RocksDB and changelog settings are set
/// only when they apply, as the flags were ignored otherwise.
fn flags_config(o: &Options) -> Result<StateConfig> {
    let mut pairs: Vec<(&str, String)> = vec![
        ("execution.checkpointing.dir", o.checkpoint_dir.clone()),
        (
            "execution.checkpointing.num-retained",
            o.num_retained.to_string(),
        ),
    ];
    match o.backend {
        BackendKind::Heap => pairs.push(("state.backend.type", "hashmap".into())),
        BackendKind::Rocksdb => {
            let local_dir = o.local_dir.to_str().ok_or_else(|| StateError::Config {
                key: "--local-dir".into(),
                message: format!("{} is not valid UTF-8", o.local_dir.display()),
            })?;
            pairs.extend([
                ("state.backend.type", "rocksdb".into()),
                (
                    "execution.checkpointing.incremental",
                    (!o.full_checkpoints).to_string(),
                ),
                ("state.backend.rocksdb.localdir", local_dir.into()),
                (
                    "state.backend.rocksdb.memory.fixed-per-tm",
                    format!("{}mb", o.managed_memory_mb),
                ),
            ]);
        }
    }
    if o.changelog {
        pairs.extend([
            ("state.changelog.enabled", "true".into()),
            (
                "state.changelog.periodic-materialize.interval",
                format!("{}ms", o.materialization_interval_ms.max(1)),
            ),
        ]);
    }
    StateConfig::from_pairs(pairs)
}
