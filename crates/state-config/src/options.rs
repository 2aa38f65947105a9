//! The option table: every key the configuration accepts, with its type,
//! default, accepted values and description. The parser, the defaults, the
//! environment-variable names and the documentation tables all come from
//! [`OPTIONS`].

use std::fmt::Write as _;

/// `state.backend.type`.
pub const BACKEND_TYPE: &str = "state.backend.type";
/// `execution.checkpointing.incremental`.
pub const INCREMENTAL: &str = "execution.checkpointing.incremental";
/// `execution.checkpointing.dir`.
pub const CHECKPOINT_DIR: &str = "execution.checkpointing.dir";
/// `execution.checkpointing.savepoint-dir`.
pub const SAVEPOINT_DIR: &str = "execution.checkpointing.savepoint-dir";
/// `execution.checkpointing.num-retained`.
pub const NUM_RETAINED: &str = "execution.checkpointing.num-retained";
/// `execution.checkpointing.interval`.
pub const CHECKPOINT_INTERVAL: &str = "execution.checkpointing.interval";
/// `execution.checkpointing.min-pause`.
pub const CHECKPOINT_MIN_PAUSE: &str = "execution.checkpointing.min-pause";
/// `execution.checkpointing.max-concurrent-checkpoints`.
pub const CHECKPOINT_MAX_CONCURRENT: &str = "execution.checkpointing.max-concurrent-checkpoints";
/// `execution.checkpointing.timeout`.
pub const CHECKPOINT_TIMEOUT: &str = "execution.checkpointing.timeout";
/// `execution.checkpointing.tolerable-failed-checkpoints`.
pub const CHECKPOINT_TOLERABLE_FAILED: &str =
    "execution.checkpointing.tolerable-failed-checkpoints";
/// `execution.checkpointing.mode`.
pub const CHECKPOINT_MODE: &str = "execution.checkpointing.mode";
/// `execution.checkpointing.unaligned.enabled`.
pub const CHECKPOINT_UNALIGNED: &str = "execution.checkpointing.unaligned.enabled";
/// `execution.checkpointing.aligned-checkpoint-timeout`.
pub const CHECKPOINT_ALIGNED_TIMEOUT: &str = "execution.checkpointing.aligned-checkpoint-timeout";
/// `execution.state-recovery.path`.
pub const RECOVERY_PATH: &str = "execution.state-recovery.path";
/// `execution.state-recovery.ignore-unclaimed-state`.
pub const IGNORE_UNCLAIMED_STATE: &str = "execution.state-recovery.ignore-unclaimed-state";
/// `state.changelog.enabled`.
pub const CHANGELOG_ENABLED: &str = "state.changelog.enabled";
/// `state.changelog.periodic-materialize.enabled`.
pub const MATERIALIZE_ENABLED: &str = "state.changelog.periodic-materialize.enabled";
/// `state.changelog.periodic-materialize.interval`.
pub const MATERIALIZE_INTERVAL: &str = "state.changelog.periodic-materialize.interval";
/// `state.changelog.max-failures-allowed`.
pub const MAX_FAILURES_ALLOWED: &str = "state.changelog.max-failures-allowed";
/// `state.changelog.dstl.dfs.preemptive-persist-threshold`.
pub const DSTL_PREEMPTIVE_PERSIST_THRESHOLD: &str =
    "state.changelog.dstl.dfs.preemptive-persist-threshold";
/// `state.changelog.dstl.dfs.batch.persist-delay`.
pub const DSTL_PERSIST_DELAY: &str = "state.changelog.dstl.dfs.batch.persist-delay";
/// `state.changelog.dstl.dfs.batch.persist-size-threshold`.
pub const DSTL_PERSIST_SIZE_THRESHOLD: &str =
    "state.changelog.dstl.dfs.batch.persist-size-threshold";
/// `state.changelog.dstl.dfs.upload.num-threads`.
pub const DSTL_UPLOAD_THREADS: &str = "state.changelog.dstl.dfs.upload.num-threads";
/// `state.changelog.dstl.dfs.upload.max-in-flight`.
pub const DSTL_MAX_IN_FLIGHT: &str = "state.changelog.dstl.dfs.upload.max-in-flight";
/// `state.changelog.dstl.dfs.upload.timeout`.
pub const DSTL_UPLOAD_TIMEOUT: &str = "state.changelog.dstl.dfs.upload.timeout";
/// `state.changelog.dstl.dfs.upload.max-attempts`.
pub const DSTL_MAX_ATTEMPTS: &str = "state.changelog.dstl.dfs.upload.max-attempts";
/// `state.changelog.dstl.dfs.upload.next-attempt-delay`.
pub const DSTL_RETRY_DELAY: &str = "state.changelog.dstl.dfs.upload.next-attempt-delay";
/// `state.backend.rocksdb.localdir`.
pub const ROCKSDB_LOCAL_DIR: &str = "state.backend.rocksdb.localdir";
/// `state.backend.rocksdb.memory.fixed-per-tm`.
pub const ROCKSDB_MEMORY: &str = "state.backend.rocksdb.memory.fixed-per-tm";
/// `state.backend.rocksdb.memory.write-buffer-ratio`.
pub const ROCKSDB_WRITE_BUFFER_RATIO: &str = "state.backend.rocksdb.memory.write-buffer-ratio";
/// `state.backend.rocksdb.predefined-options`.
pub const ROCKSDB_PREDEFINED_OPTIONS: &str = "state.backend.rocksdb.predefined-options";
/// `state.backend.rocksdb.checkpoint.transfer.thread.num`.
pub const ROCKSDB_TRANSFER_THREADS: &str = "state.backend.rocksdb.checkpoint.transfer.thread.num";
/// `state.backend.rocksdb.compaction.style`.
pub const ROCKSDB_COMPACTION_STYLE: &str = "state.backend.rocksdb.compaction.style";
/// `state.backend.rocksdb.checkpoint.eager-upload` (not in Flink).
pub const ROCKSDB_EAGER_UPLOAD: &str = "state.backend.rocksdb.checkpoint.eager-upload";

/// The type of an option's value, with the values it accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum OptionType {
    /// One of a fixed set of names, matched case-insensitively.
    Enum(&'static [&'static str]),
    /// `true` or `false` (a YAML/TOML/JSON boolean or the string).
    Bool,
    /// An integer in `min..=max` (a number or a string of digits).
    Integer {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A fraction strictly between 0 and 1.
    Ratio,
    /// A duration in Flink's syntax: `"10 min"`, `"10min"`, `"600s"`,
    /// `"500 ms"`, `"1h"`, `"2d"`; a plain number is milliseconds.
    Duration {
        /// Whether zero is accepted.
        allow_zero: bool,
    },
    /// A memory size in Flink's syntax: `"64mb"`, `"64 mb"`, `"1gb"`,
    /// `"512kb"` (units are powers of 1024); a plain number is bytes.
    MemorySize {
        /// Smallest accepted number of bytes.
        min: u64,
    },
    /// A directory or file: a local path, or a URL with a scheme that
    /// `state_storage::ObjectStoreCheckpointStorage::from_url` knows.
    Location,
    /// A local path.
    Path,
}

impl OptionType {
    /// Short name of the type, as the documentation table shows it.
    pub fn name(&self) -> &'static str {
        match self {
            OptionType::Enum(_) => "enum",
            OptionType::Bool => "boolean",
            OptionType::Integer { .. } => "integer",
            OptionType::Ratio => "float",
            OptionType::Duration { .. } => "duration",
            OptionType::MemorySize { .. } => "memory size",
            OptionType::Location => "path or URL",
            OptionType::Path => "path",
        }
    }

    /// The values it accepts, in words (used in error messages and in the
    /// documentation table).
    pub fn accepted(&self) -> String {
        match self {
            OptionType::Enum(names) => names.join(", "),
            OptionType::Bool => "true, false".into(),
            OptionType::Integer { min, max } if *max == u64::MAX => {
                format!("an integer ≥ {min}")
            }
            OptionType::Integer { min, max } => format!("an integer from {min} to {max}"),
            OptionType::Ratio => "a number strictly between 0 and 1".into(),
            OptionType::Duration { allow_zero } => format!(
                "a duration{} (e.g. 500 ms, 10 s, 10 min, 1 h; units ms, s, min, h, d; a plain number is ms)",
                if *allow_zero { "" } else { " above zero" }
            ),
            OptionType::MemorySize { min } => format!(
                "a memory size{} (e.g. 64 mb, 1 gb; units b, kb, mb, gb, tb, powers of 1024; a plain number is bytes)",
                match *min {
                    0 => String::new(),
                    1 => " above zero".into(),
                    n => format!(" of at least {}", crate::parse::format_memory_size(n)),
                }
            ),
            OptionType::Location => {
                "a local path, or a URL: file:///…, memory://…, s3://bucket/prefix (feature s3), gs://… (feature gcs), az://… (feature azure)".into()
            }
            OptionType::Path => "a local directory path".into(),
        }
    }
}

/// One configuration option.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct OptionDef {
    /// The key, as in Flink 1.20 / 2.x.
    pub key: &'static str,
    /// Older key names also accepted (Flink's deprecated keys); a
    /// configuration may not set both a key and one of its aliases.
    pub aliases: &'static [&'static str],
    /// The value's type and accepted values.
    pub kind: OptionType,
    /// The default, in the same syntax a configuration uses, or `None` when
    /// the option is unset by default.
    pub default: Option<&'static str>,
    /// What the option does.
    pub description: &'static str,
}

impl OptionDef {
    /// The environment variable that sets this option (see
    /// [`env_var_name`](crate::env_var_name)).
    pub fn env_var(&self) -> String {
        crate::env::env_var_name(self.key)
    }
}

const fn opt(
    key: &'static str,
    aliases: &'static [&'static str],
    kind: OptionType,
    default: Option<&'static str>,
    description: &'static str,
) -> OptionDef {
    OptionDef {
        key,
        aliases,
        kind,
        default,
        description,
    }
}

/// Largest number of threads an option accepts.
const MAX_THREADS: u64 = 1024;

/// Every option, in documentation order. This is the one place where keys,
/// types, defaults and accepted values are defined.
pub static OPTIONS: &[OptionDef] = &[
    opt(
        BACKEND_TYPE,
        &["state.backend"],
        OptionType::Enum(&["hashmap", "rocksdb"]),
        Some("hashmap"),
        "The keyed state backend: `hashmap` keeps state on the heap (copy-on-write, full checkpoints), `rocksdb` in RocksDB on local disk.",
    ),
    opt(
        INCREMENTAL,
        &["state.backend.incremental"],
        OptionType::Bool,
        Some("false"),
        "Incremental checkpoints: RocksDB uploads only new SST files. Ignored by `hashmap`, which always takes full checkpoints (as in Flink).",
    ),
    opt(
        CHECKPOINT_DIR,
        &["state.checkpoints.dir"],
        OptionType::Location,
        None,
        "Where checkpoints go: `<dir>/<job id>/chk-<n>`, `shared/`, `taskowned/`. Required to build the checkpoint storage.",
    ),
    opt(
        SAVEPOINT_DIR,
        &["state.savepoints.dir"],
        OptionType::Location,
        None,
        "Default directory of savepoints.",
    ),
    opt(
        NUM_RETAINED,
        &["state.checkpoints.num-retained"],
        OptionType::Integer {
            min: 1,
            max: u64::MAX,
        },
        Some("1"),
        "Completed checkpoints kept; older ones are subsumed and their unused files deleted.",
    ),
    opt(
        CHECKPOINT_INTERVAL,
        &[],
        OptionType::Duration { allow_zero: false },
        None,
        "Time between periodic checkpoints (at least 10 ms); unset, periodic checkpoints are off. Triggers follow a fixed plan without drift.",
    ),
    opt(
        CHECKPOINT_MIN_PAUSE,
        &[],
        OptionType::Duration { allow_zero: true },
        Some("0 ms"),
        "Least time from a checkpoint's completion to the next trigger.",
    ),
    opt(
        CHECKPOINT_MAX_CONCURRENT,
        &[],
        OptionType::Integer {
            min: 1,
            max: u64::MAX,
        },
        Some("1"),
        "Checkpoints pending at once; periodic triggers wait while this many are pending.",
    ),
    opt(
        CHECKPOINT_TIMEOUT,
        &[],
        OptionType::Duration { allow_zero: false },
        Some("10 min"),
        "A checkpoint not completed this long after its trigger expires (aborted, counted as a failure).",
    ),
    opt(
        CHECKPOINT_TOLERABLE_FAILED,
        &[],
        OptionType::Integer {
            min: 0,
            max: u64::MAX,
        },
        Some("0"),
        "Consecutive counted checkpoint failures (declines, expiries, failed commits) tolerated; one more fails the job over.",
    ),
    opt(
        CHECKPOINT_MODE,
        &[],
        OptionType::Enum(&["EXACTLY_ONCE", "AT_LEAST_ONCE"]),
        Some("EXACTLY_ONCE"),
        "`EXACTLY_ONCE` aligns barriers (or persists in-flight records when unaligned); `AT_LEAST_ONCE` never blocks an input, so records may be replayed after a restore.",
    ),
    opt(
        CHECKPOINT_UNALIGNED,
        &["execution.checkpointing.unaligned"],
        OptionType::Bool,
        Some("false"),
        "Unaligned checkpoints: barriers overtake queued records, which are persisted as channel state (exactly-once mode only; savepoints stay aligned).",
    ),
    opt(
        CHECKPOINT_ALIGNED_TIMEOUT,
        &["execution.checkpointing.alignment-timeout"],
        OptionType::Duration { allow_zero: true },
        Some("0 ms"),
        "With unaligned checkpoints: 0 starts every checkpoint unaligned; more starts aligned and switches to unaligned when the alignment lasts longer than this since the trigger.",
    ),
    opt(
        RECOVERY_PATH,
        &["execution.savepoint.path"],
        OptionType::Location,
        None,
        "A savepoint or retained checkpoint to restore the job from.",
    ),
    opt(
        IGNORE_UNCLAIMED_STATE,
        &["execution.savepoint.ignore-unclaimed-state"],
        OptionType::Bool,
        Some("false"),
        "Restore even when the snapshot holds state the job no longer registers (operators it no longer has, or states they no longer register): that state is skipped and listed instead of failing the restore (Flink's allowNonRestoredState).",
    ),
    opt(
        CHANGELOG_ENABLED,
        &["state.backend.changelog.enabled"],
        OptionType::Bool,
        Some("false"),
        "Wrap the backend in the changelog backend: every change is also written to a log uploaded continuously, so checkpoints upload only the changes since the last materialization.",
    ),
    opt(
        MATERIALIZE_ENABLED,
        &[],
        OptionType::Bool,
        Some("true"),
        "Materialize the wrapped backend periodically; without it the log is never truncated.",
    ),
    opt(
        MATERIALIZE_INTERVAL,
        &[],
        OptionType::Duration { allow_zero: false },
        Some("10 min"),
        "How often the wrapped backend is materialized (snapshotted in the background).",
    ),
    opt(
        MAX_FAILURES_ALLOWED,
        &[],
        OptionType::Integer {
            min: 0,
            max: u32::MAX as u64,
        },
        Some("3"),
        "Consecutive failed materializations tolerated before the backend fails.",
    ),
    opt(
        DSTL_PREEMPTIVE_PERSIST_THRESHOLD,
        &["dstl.dfs.preemptive-persist-threshold"],
        OptionType::MemorySize { min: 1 },
        Some("5 mb"),
        "A backend uploads its buffered changes once they exceed this size, without waiting for a checkpoint.",
    ),
    opt(
        DSTL_PERSIST_DELAY,
        &["dstl.dfs.batch.persist-delay"],
        OptionType::Duration { allow_zero: true },
        Some("10 ms"),
        "How long the uploader collects the changes of all backends into one file.",
    ),
    opt(
        DSTL_PERSIST_SIZE_THRESHOLD,
        &["dstl.dfs.batch.persist-size-threshold"],
        OptionType::MemorySize { min: 1 },
        Some("10 mb"),
        "A batch is uploaded at once when it reaches this size.",
    ),
    opt(
        DSTL_UPLOAD_THREADS,
        &["dstl.dfs.upload.num-threads"],
        OptionType::Integer {
            min: 1,
            max: MAX_THREADS,
        },
        Some("5"),
        "Upload threads of the changelog.",
    ),
    opt(
        DSTL_MAX_IN_FLIGHT,
        &["dstl.dfs.upload.max-in-flight"],
        OptionType::MemorySize { min: 1 },
        Some("100 mb"),
        "Writers block (back-pressure) once this much waits for upload.",
    ),
    opt(
        DSTL_UPLOAD_TIMEOUT,
        &["dstl.dfs.upload.timeout"],
        OptionType::Duration { allow_zero: false },
        Some("1 s"),
        "Time one upload attempt may take before another one starts.",
    ),
    opt(
        DSTL_MAX_ATTEMPTS,
        &["dstl.dfs.upload.max-attempts"],
        OptionType::Integer {
            min: 1,
            max: u32::MAX as u64,
        },
        Some("3"),
        "Upload attempts per changelog file.",
    ),
    opt(
        DSTL_RETRY_DELAY,
        &["dstl.dfs.upload.next-attempt-delay"],
        OptionType::Duration { allow_zero: true },
        Some("500 ms"),
        "Pause after a failed upload attempt.",
    ),
    opt(
        ROCKSDB_LOCAL_DIR,
        &[],
        OptionType::Path,
        None,
        "Working directory of RocksDB; each backend instance uses a fresh subdirectory, removed when it closes. Unset: `state-rocksdb` in the system temporary directory.",
    ),
    opt(
        ROCKSDB_MEMORY,
        &[],
        OptionType::MemorySize { min: 1 << 20 },
        Some("256 mb"),
        "Memory bound of all RocksDB instances built by one factory (one shared block cache and write buffer manager). Flink has no default here (it uses managed memory).",
    ),
    opt(
        ROCKSDB_WRITE_BUFFER_RATIO,
        &[],
        OptionType::Ratio,
        Some("0.5"),
        "Share of the memory bound for memtables.",
    ),
    opt(
        ROCKSDB_PREDEFINED_OPTIONS,
        &[],
        OptionType::Enum(&["DEFAULT", "SPINNING_DISK_OPTIMIZED", "FLASH_SSD_OPTIMIZED"]),
        Some("DEFAULT"),
        "Flink's predefined RocksDB option profile.",
    ),
    opt(
        ROCKSDB_TRANSFER_THREADS,
        &[],
        OptionType::Integer {
            min: 1,
            max: MAX_THREADS,
        },
        Some("4"),
        "Files uploaded or downloaded in parallel per snapshot and restore.",
    ),
    opt(
        ROCKSDB_COMPACTION_STYLE,
        &[],
        OptionType::Enum(&["LEVEL", "UNIVERSAL"]),
        Some("LEVEL"),
        "RocksDB's compaction style. UNIVERSAL rewrites each byte fewer times, so incremental checkpoints upload far less after compactions, at the cost of up to twice the space. Flink's FIFO is not offered: it drops old files, and with them state.",
    ),
    opt(
        ROCKSDB_EAGER_UPLOAD,
        &[],
        OptionType::Bool,
        Some("true"),
        "Upload SST files in the background as soon as a flush or compaction writes them, so an incremental checkpoint after a compaction does not upload its output (not in Flink). Costs the uploads of files compacted away before any checkpoint needed them.",
    ),
];

/// The option with this key or alias, and whether `key` is an alias.
pub(crate) fn lookup(key: &str) -> Option<(&'static OptionDef, bool)> {
    OPTIONS.iter().find_map(|o| {
        if o.key == key {
            Some((o, false))
        } else if o.aliases.contains(&key) {
            Some((o, true))
        } else {
            None
        }
    })
}

/// The option table as Markdown, as the crate documentation and the
/// repository README show it (a test keeps them equal).
///
/// ```
/// let table = state_config::markdown_table();
/// assert!(table.contains("| `state.backend.type`"));
/// ```
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Key (deprecated aliases) | Type | Default | Accepted values | Description |\n|---|---|---|---|---|\n",
    );
    for o in OPTIONS {
        let mut key = format!("`{}`", o.key);
        if !o.aliases.is_empty() {
            let aliases: Vec<String> = o.aliases.iter().map(|a| format!("`{a}`")).collect();
            let _ = write!(key, " ({})", aliases.join(", "));
        }
        let default = o
            .default
            .map_or_else(|| "none".to_string(), |d| format!("`{d}`"));
        let _ = writeln!(
            out,
            "| {key} | {} | {default} | {} | {} |",
            o.kind.name(),
            o.kind.accepted(),
            o.description
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn keys_and_aliases_are_unique() {
        let mut seen = BTreeSet::new();
        for o in OPTIONS {
            assert!(seen.insert(o.key), "{} twice", o.key);
            for a in o.aliases {
                assert!(seen.insert(*a), "{a} twice");
            }
        }
    }

    #[test]
    fn no_cell_breaks_the_markdown_table() {
        for o in OPTIONS {
            assert!(!o.description.contains('|'), "{}", o.key);
            assert!(!o.kind.accepted().contains('|'), "{}", o.key);
        }
    }
}
