//! The job driver: the reference run, the run with checkpoints and an
//! injected failure, the recovery at another parallelism, and the comparison.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use state_api::backend::check_restore_handles;
use state_api::snapshot::SavepointFormat;
use state_api::{CheckpointStorageAccess, KeyGroupRange, Result, SnapshotType, StateError};
use state_config::StateConfig;
use state_storage::restore::{ProgramStates, RestorePlan, RestoreSource};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, ObjectStoreCheckpointStorage, SavepointWriter,
};

use crate::coordinator::{Coordinator, human_bytes, now_ms};
use crate::events::EventStream;
use crate::operator::{KeySummary, KeyedAggregator, WINDOW_MS};
use crate::pipeline::{PendingCheckpoint, Pipeline, Restore};

/// The operator id under which the job's keyed state is stored.
pub const OPERATOR_ID: &str = "keyed-aggregator";
/// Master-state key of the source offset in checkpoint metadata.
pub(crate) const SOURCE_OFFSET: &str = "source-offset";

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
    about = "Keyed stateful job with checkpoints, an injected failure and a rescaling restore"
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
    /// Number of events in the stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Parallelism before the failure.
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// Parallelism after the restore.
    #[arg(long, default_value_t = 3)]
    pub restore_parallelism: u32,
    /// Max parallelism (number of key groups); fixed for the job's lifetime.
    #[arg(long, default_value_t = 128)]
    pub max_parallelism: u32,
    /// Events between checkpoint triggers.
    #[arg(long, default_value_t = 100_000)]
    pub checkpoint_interval: u64,
    /// Offset at which the job fails on purpose (default: 65% of the stream).
    #[arg(long)]
    pub fail_at: Option<u64>,
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

/// What a run of the job showed.
#[derive(Debug)]
pub struct JobReport {
    /// The job id, the job's directory under the checkpoint directory.
    pub job_id: String,
    /// Whether the final state equals the run without failure.
    pub equal: bool,
    /// The checkpoint recovery restored, if one had completed.
    pub restored_checkpoint: Option<u64>,
    /// Checkpoints completed before and after the failure.
    pub completed_checkpoints: usize,
    /// Where the final savepoint went (`--stop-with-savepoint`).
    pub savepoint: Option<String>,
    /// Files of the failed attempt that no retained checkpoint referenced,
    /// deleted by the garbage collection at recovery.
    pub collected_at_recovery: usize,
    /// Files no retained checkpoint referenced after the job stopped and
    /// its backends cleaned up, deleted by the final garbage collection
    /// (0 when every backend deletes what it owns).
    pub collected_at_end: usize,
}

/// Runs the reference and the failing job and compares their final states.
///
/// # Errors
/// Storage, restore and state errors; a differing final state is not an
/// error but `JobReport::equal == false`.
pub fn run(o: &Options) -> Result<JobReport> {
    let config = state_config(o)?;
    if let Some(path) = &o.config {
        println!("configuration from {}", path.display());
    }
    run_with_config(o, &config)
}

/// Runs the job as [`run`] does, with the backend and checkpoint settings
/// of `config` instead of those of `o` (whose workload options apply).
///
/// # Errors
/// As [`run`].
pub fn run_with_config(o: &Options, config: &StateConfig) -> Result<JobReport> {
    run_on_storage(o, config, &|job_id| config.checkpoint_storage(job_id))
}

/// Runs the job as [`run_with_config`] does, with the job's checkpoint
/// storage built by `storage_for` from the job id instead of from the
/// configuration (tests run it on a store that injects faults).
///
/// # Errors
/// As [`run`].
pub fn run_on_storage(
    o: &Options,
    config: &StateConfig,
    storage_for: &dyn Fn(&str) -> Result<ObjectStoreCheckpointStorage>,
) -> Result<JobReport> {
    for (old, new) in config.deprecated_keys() {
        println!("warning: configuration key '{old}' is deprecated, use '{new}'");
    }
    let stream = EventStream::new(o.seed, o.keys, o.events);
    let job_id = format!("job-{}", uuid::Uuid::new_v4().simple());
    let factory = config.backend_factory()?;

    // 0. Where the job starts: a savepoint (or retained checkpoint), or the
    //    start of the stream.
    let initial = match config.recovery_path() {
        Some(path) => Some(initial_state(path, config, o)?),
        None => None,
    };
    if o.stop_with_savepoint && config.savepoint_dir().is_none() {
        // Found out now, not after the whole run.
        return Err(no_savepoint_dir());
    }
    let start_at = initial.as_ref().map_or(0, |i| i.offset);
    let fail_at = o
        .fail_at
        .unwrap_or(start_at + (o.events - start_at) * 65 / 100)
        .clamp(start_at, o.events);
    println!(
        "state-job: backend {}, {} keys, {} events, parallelism {} -> {}, max parallelism {}, checkpoint every {} events, failure at offset {}",
        factory.name(),
        o.keys,
        o.events,
        o.parallelism,
        o.restore_parallelism,
        o.max_parallelism,
        o.checkpoint_interval,
        fail_at
    );

    // 1. The reference: the same job without failure and without checkpoints.
    let started = Instant::now();
    let reference_storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::in_memory("reference")?);
    let mut reference = Pipeline::start(
        &*factory,
        reference_storage,
        o.max_parallelism,
        o.parallelism,
        &Restore::default(),
        None,
    )?;
    for event in stream.from_offset(0) {
        reference.process(&event)?;
    }
    let expected = reference.summarize()?;
    drop(reference);
    println!(
        "reference run: {} keys in {:.2?}",
        expected.len(),
        started.elapsed()
    );

    // 2. The job with checkpoints, failing on purpose at `fail_at`.
    let storage: Arc<ObjectStoreCheckpointStorage> = Arc::new(storage_for(&job_id)?);
    println!("checkpoints go to {}", storage.location());
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    let first_id = match &initial {
        Some(i) => i.checkpoint_id.checked_add(1).ok_or_else(|| {
            StateError::Restore(format!(
                "checkpoint id {} cannot be followed",
                i.checkpoint_id
            ))
        })?,
        None => 1,
    };
    let mut coordinator = Coordinator::new(job_id.clone(), first_id);
    let no_restore = Restore::default();
    let initial_restore = initial.as_ref().map_or(&no_restore, |i| &i.restore);
    let mut pipeline = Pipeline::start(
        &*factory,
        Arc::clone(&access),
        o.max_parallelism,
        o.parallelism,
        initial_restore,
        resume_window(&stream, start_at),
    )?;
    let started = Instant::now();
    coordinator.run(
        &mut pipeline,
        &mut store,
        &access,
        &stream,
        start_at,
        fail_at,
        o,
    )?;
    println!(
        "FAILURE injected at offset {fail_at} after {:.2?}: the job's tasks are gone",
        started.elapsed()
    );
    coordinator.abandon_pending(&mut store)?;
    drop(pipeline);
    drop(store);

    // 3. Recovery: a new process finds the latest completed checkpoint and
    //    restores it at another parallelism (or the initial savepoint again
    //    when no checkpoint completed).
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    // No task of the failed attempt runs any more: what no retained
    // checkpoint references is garbage (uploads of the checkpoint in flight,
    // a changelog's log and materializations after its last checkpoint).
    let collected_at_recovery = store.collect_garbage()?.deleted.len();
    println!(
        "recovery: {collected_at_recovery} files no retained checkpoint references were deleted"
    );
    let (restore, resume_at, restored_id) = match store.latest() {
        Some(latest) => {
            // Resuming the source without all of the operator's state would
            // silently lose it: the checkpoint must cover every key group.
            let handles = latest.operators.get(OPERATOR_ID).cloned().ok_or_else(|| {
                StateError::Restore(format!(
                    "checkpoint {} has no state for operator '{OPERATOR_ID}'",
                    latest.checkpoint_id
                ))
            })?;
            check_restore_handles(
                &handles,
                KeyGroupRange::all(o.max_parallelism)?,
                o.max_parallelism,
            )?;
            let restore = Restore {
                handles,
                ..Restore::default()
            };
            (restore, source_offset(latest)?, Some(latest.checkpoint_id))
        }
        None => match &initial {
            Some(initial) => (initial.restore.clone(), initial.offset, None),
            None => (Restore::default(), 0, None),
        },
    };
    let restore_started = Instant::now();
    let mut pipeline = Pipeline::start(
        &*factory,
        Arc::clone(&access),
        o.max_parallelism,
        o.restore_parallelism,
        &restore,
        resume_window(&stream, resume_at),
    )?;
    let restore_time = restore_started.elapsed();
    match restored_id {
        Some(id) => println!(
            "restored checkpoint {id} ({} handles) at parallelism {} in {restore_time:.2?}; replaying from offset {resume_at}",
            restore.handles.len(),
            o.restore_parallelism
        ),
        None => println!("no completed checkpoint: starting over from offset {resume_at}"),
    }
    coordinator.next_id = coordinator.next_id.max(restored_id.unwrap_or(0) + 1);
    let started = Instant::now();
    coordinator.run(
        &mut pipeline,
        &mut store,
        &access,
        &stream,
        resume_at,
        o.events,
        o,
    )?;
    coordinator.drain(&mut pipeline, &mut store)?;
    println!(
        "finished the stream after recovery in {:.2?}",
        started.elapsed()
    );

    // 4. Compare.
    let actual = pipeline.summarize()?;
    let equal = compare(&expected, &actual);
    coordinator.print_summary(restore_time, equal);

    // 5. Stop with a savepoint: the final state, for another run (on any
    //    backend, with a canonical savepoint) to start from.
    let savepoint = if o.stop_with_savepoint {
        let id = coordinator.next_id;
        Some(take_savepoint(
            &mut pipeline,
            config,
            &job_id,
            id,
            o.events,
            o.savepoint_format.into(),
        )?)
    } else {
        None
    };

    // 6. Stop: the backends delete what they own; then nothing but the
    //    retained checkpoints' files should be left.
    drop(pipeline);
    state_api::lifecycle::wait_for_detached_deletions(Duration::from_secs(60));
    let collected_at_end = store.collect_garbage()?.deleted.len();
    println!(
        "stopped: {} checkpoints retained, {collected_at_end} files nothing referenced",
        store.checkpoints().len()
    );
    Ok(JobReport {
        job_id,
        equal,
        restored_checkpoint: restored_id,
        completed_checkpoints: coordinator.completed.len(),
        savepoint,
        collected_at_recovery,
        collected_at_end,
    })
}

/// The state a run starts from: a savepoint's or retained checkpoint's
/// handles for the job's operator, and the source offset they cover.
struct InitialState {
    restore: Restore,
    offset: u64,
    checkpoint_id: u64,
}

/// Opens `path` (execution.state-recovery.path) and plans the restore of
/// the job's operator from it.
fn initial_state(path: &str, config: &StateConfig, o: &Options) -> Result<InitialState> {
    let source = RestoreSource::open(path)?;
    let program = ProgramStates::new().with_operator(OPERATOR_ID, KeyedAggregator::STATE_NAMES);
    let plan = RestorePlan::new(
        &source.metadata,
        &*source.storage,
        &program,
        config.ignore_unclaimed_state(),
    )?;
    for skipped in plan.skipped() {
        println!("warning: not restored (allowed): {skipped}");
    }
    let handles = plan.handles(OPERATOR_ID).to_vec();
    check_restore_handles(
        &handles,
        KeyGroupRange::all(o.max_parallelism)?,
        o.max_parallelism,
    )?;
    let offset = source_offset(&source.metadata)?;
    if offset > o.events {
        return Err(StateError::Config {
            key: "--events".into(),
            message: format!(
                "the {} at {} covers the stream up to offset {offset}, beyond the {} events of this run",
                source.kind_name(),
                source.location,
                o.events
            ),
        });
    }
    println!(
        "starting from {} {} at {} ({} handles, source offset {offset})",
        source.kind_name(),
        source.metadata.checkpoint_id,
        source.location,
        handles.len()
    );
    Ok(InitialState {
        restore: Restore {
            handles,
            storage: Some(source.restore_storage()),
            skip: plan.skip_states(OPERATOR_ID),
        },
        offset,
        checkpoint_id: source.metadata.checkpoint_id,
    })
}

fn no_savepoint_dir() -> StateError {
    StateError::Config {
        key: "execution.checkpointing.savepoint-dir".into(),
        message: "a savepoint needs a savepoint directory (or --savepoint-dir)".into(),
    }
}

/// The event-time window open before the event at `offset`.
/// The event-time window of the last event before `offset`, which a
/// pipeline resuming at `offset` continues (`None` at the start).
pub fn resume_window(stream: &EventStream, offset: u64) -> Option<u64> {
    offset
        .checked_sub(1)
        .map(|o| stream.event(o).timestamp_ms / WINDOW_MS)
}

/// Takes savepoint `id` of the pipeline (all events before `offset`
/// processed) into the configured savepoint directory; returns its location.
fn take_savepoint(
    pipeline: &mut Pipeline,
    config: &StateConfig,
    job_id: &str,
    id: u64,
    offset: u64,
    format: SavepointFormat,
) -> Result<String> {
    let dir = config.savepoint_dir().ok_or_else(no_savepoint_dir)?;
    let started = Instant::now();
    let writer = SavepointWriter::create(dir, job_id)?;
    let storage = writer.storage();
    let written = pipeline
        .trigger_snapshot(
            id,
            offset,
            now_ms(),
            SnapshotType::Savepoint(format),
            &storage,
        )
        .and_then(PendingCheckpoint::finish)
        .and_then(|finished| {
            let metadata =
                CompletedCheckpoint::new(job_id, id, now_ms(), CheckpointKind::Savepoint)
                    .with_operator(OPERATOR_ID, finished.handles)
                    .with_master_state(SOURCE_OFFSET, state_api::codec::encode(&offset)?);
            Ok((metadata, finished.state_size))
        });
    let (metadata, state_size) = match written {
        Ok(written) => written,
        Err(e) => {
            // Nothing half-written stays behind.
            let _ = writer.abort();
            return Err(e);
        }
    };
    let savepoint = writer.commit(metadata)?;
    let location = savepoint.location();
    println!(
        "savepoint {id} ({format:?}, {}) written in {:.2?} to {location}",
        human_bytes(state_size),
        started.elapsed()
    );
    Ok(location)
}

/// The source offset a checkpoint of the job covers: events before it are
/// in its state.
///
/// # Errors
/// [`StateError::Restore`] when the checkpoint has none; codec errors.
pub fn source_offset(checkpoint: &CompletedCheckpoint) -> Result<u64> {
    let bytes = checkpoint.master_states.get(SOURCE_OFFSET).ok_or_else(|| {
        StateError::Restore(format!(
            "checkpoint {} has no '{SOURCE_OFFSET}' master state",
            checkpoint.checkpoint_id
        ))
    })?;
    state_api::codec::decode(bytes)
}

fn compare(expected: &BTreeMap<u64, KeySummary>, actual: &BTreeMap<u64, KeySummary>) -> bool {
    let mut differences = 0;
    for (key, want) in expected {
        match actual.get(key) {
            Some(got) if got == want => {}
            got => {
                differences += 1;
                if differences <= 5 {
                    println!("MISMATCH key {key}: expected {want:?}, got {got:?}");
                }
            }
        }
    }
    let extra = actual.keys().filter(|k| !expected.contains_key(k)).count();
    if extra > 0 {
        println!("MISMATCH: {extra} keys exist only after recovery");
    }
    differences == 0 && extra == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_storage::CompletedCheckpointStore;

    fn run_with(dir: &std::path::Path, args: &[&str]) -> JobReport {
        let dir_arg = dir.to_str().expect("utf-8 temp path").to_string();
        let mut argv = vec!["state-job", "--checkpoint-dir", &dir_arg];
        argv.extend_from_slice(args);
        run(&Options::parse_from(argv)).expect("job runs")
    }

    #[test]
    fn a_savepoint_moves_the_job_from_heap_to_rocksdb_and_changelog() {
        let dir = tempfile::tempdir().expect("temp dir");
        let savepoints = dir.path().join("savepoints");
        let savepoints = savepoints.to_str().expect("utf-8");
        let local = dir.path().join("rocksdb");
        let local = local.to_str().expect("utf-8");
        let args = format!(
            "--keys 300 --events 12000 --checkpoint-interval 3000 --stop-with-savepoint \
             --savepoint-dir {savepoints}"
        );
        let first = run_with(dir.path(), &args.split_whitespace().collect::<Vec<_>>());
        assert!(first.equal);
        let savepoint = first.savepoint.expect("a savepoint was taken");
        assert!(
            savepoint.contains("/savepoints/savepoint-job-"),
            "{savepoint}"
        );

        // A longer run of the same stream on RocksDB starts at the
        // savepoint's offset and ends equal to a run over the whole stream.
        let args = format!(
            "--backend rocksdb --local-dir {local} --keys 300 --events 20000 \
             --checkpoint-interval 3000 --parallelism 3 --restore-parallelism 2 \
             --from-savepoint {savepoint} --stop-with-savepoint --savepoint-dir {savepoints} \
             --savepoint-format native"
        );
        let second = run_with(dir.path(), &args.split_whitespace().collect::<Vec<_>>());
        assert!(second.equal, "heap savepoint restored into RocksDB");
        assert!(
            second.restored_checkpoint.is_some(),
            "a checkpoint completed after the start from the savepoint"
        );
        let native = second.savepoint.expect("a native savepoint");

        // RocksDB's native savepoint goes to changelog over RocksDB, not to heap.
        let args = format!(
            "--backend rocksdb --changelog --local-dir {local} --keys 300 --events 26000 \
             --checkpoint-interval 3000 --from-savepoint {native}/_metadata"
        );
        assert!(run_with(dir.path(), &args.split_whitespace().collect::<Vec<_>>()).equal);
        let dir_arg = dir.path().to_str().expect("utf-8").to_string();
        let argv = [
            "state-job",
            "--checkpoint-dir",
            &dir_arg,
            "--keys",
            "300",
            "--events",
            "26000",
            "--from-savepoint",
            &native,
        ];
        let err = run(&Options::parse_from(argv)).expect_err("heap cannot read RocksDB files");
        assert!(err.to_string().contains("incremental"), "{err}");
    }

    #[test]
    fn recovers_at_higher_parallelism_with_equal_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = "--keys 300 --events 20000 --checkpoint-interval 3000 --parallelism 2 --restore-parallelism 3";
        let report = run_with(dir.path(), &args.split(' ').collect::<Vec<_>>());
        assert!(report.equal);
        assert!(
            report.restored_checkpoint.is_some(),
            "a checkpoint completed before the failure"
        );
        assert!(report.completed_checkpoints >= 3);
    }

    #[test]
    fn recovers_at_lower_parallelism_and_retains_two_checkpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = "--keys 200 --events 15000 --checkpoint-interval 2000 --parallelism 3 \
                    --restore-parallelism 1 --num-retained 2 --max-parallelism 32";
        let report = run_with(dir.path(), &args.split_whitespace().collect::<Vec<_>>());
        assert!(report.equal);
        assert!(report.restored_checkpoint.is_some());
        // Only the two newest checkpoints are left, in the store and on disk.
        let storage = Arc::new(
            ObjectStoreCheckpointStorage::local(dir.path(), &report.job_id).expect("storage"),
        );
        let store = CompletedCheckpointStore::open(storage, 2).expect("store");
        assert_eq!(store.checkpoints().count(), 2);
        let on_disk = std::fs::read_dir(dir.path().join(&report.job_id))
            .expect("job dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
            .count();
        assert_eq!(on_disk, 2, "subsumed checkpoint directories are deleted");
    }

    /// Defect 1: the `_metadata` put of checkpoint 2 is applied on the
    /// server, but the job gets an error every time it asks. The job used
    /// to abort the checkpoint (its backends deleted what it references)
    /// and then failed on `discard_pending`. Now the outcome stays open
    /// until the store resolves it, the job goes on, and recovery restores
    /// a checkpoint with the right state.
    #[test]
    fn a_commit_with_unknown_outcome_is_resolved_not_aborted() {
        use object_store::ObjectStore;
        use state_storage::fault::{Fault, FaultConfig, FaultInjectingStore, Operation};
        use state_storage::retry::RetryPolicy;

        for backend in [
            &["--changelog"][..],
            &["--changelog", "--backend", "rocksdb"],
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let dir_arg = dir.path().to_str().expect("utf-8").to_string();
            let mut argv = vec![
                "state-job",
                "--checkpoint-dir",
                &dir_arg,
                "--materialization-interval-ms",
                "20",
                "--keys",
                "300",
                "--events",
                "30000",
                "--checkpoint-interval",
                "2000",
                "--num-retained",
                "1",
            ];
            argv.extend_from_slice(backend);
            let o = Options::parse_from(argv);
            let config = state_config(&o).expect("config");
            let faults = Arc::new(FaultInjectingStore::new(
                Arc::new(object_store::memory::InMemory::new()),
                FaultConfig::default(),
            ));
            let policy = RetryPolicy::default();
            faults.inject(Operation::Put, "chk-2/_metadata", Fault::Unclear);
            faults.inject_times(
                Operation::Put,
                "chk-2/_metadata",
                Fault::Fail,
                policy.max_attempts - 1,
            );
            let store: Arc<dyn ObjectStore> = faults.clone();
            let report = run_on_storage(&o, &config, &|job_id| {
                ObjectStoreCheckpointStorage::new(Arc::clone(&store), Default::default(), job_id)
            })
            .expect("the job runs");
            assert_eq!(faults.pending_injections(), 0, "the faults applied");
            assert!(report.equal, "{backend:?}");
            assert!(report.restored_checkpoint.is_some_and(|id| id >= 2));
        }
    }

    #[test]
    fn changelog_recovers_with_equal_state_from_log_based_checkpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = "--changelog --materialization-interval-ms 50 --keys 300 --events 30000 \
                    --checkpoint-interval 3000 --parallelism 2 --restore-parallelism 3";
        let report = run_with(dir.path(), &args.split_whitespace().collect::<Vec<_>>());
        assert!(report.equal);
        assert!(report.restored_checkpoint.is_some());
        assert!(report.completed_checkpoints >= 3);
    }

    #[test]
    fn rocksdb_recovers_with_equal_state_from_incremental_checkpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = tempfile::tempdir().expect("temp dir");
        let local_arg = local.path().to_str().expect("utf-8 temp path").to_string();
        let args = [
            "--backend",
            "rocksdb",
            "--local-dir",
            &local_arg,
            "--managed-memory-mb",
            "32",
            "--keys",
            "300",
            "--events",
            "20000",
            "--checkpoint-interval",
            "3000",
            "--parallelism",
            "2",
            "--restore-parallelism",
            "3",
            "--num-retained",
            "2",
        ];
        let report = run_with(dir.path(), &args);
        assert!(report.equal);
        assert!(report.restored_checkpoint.is_some());
        assert!(report.completed_checkpoints >= 3);
        let left = std::fs::read_dir(local.path()).expect("local dir").count();
        assert_eq!(
            left, 0,
            "every RocksDB instance removed its working directory"
        );
    }

    #[test]
    fn failure_before_any_checkpoint_starts_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = "--keys 50 --events 5000 --checkpoint-interval 4000 --fail-at 1000";
        let report = run_with(dir.path(), &args.split(' ').collect::<Vec<_>>());
        assert!(report.equal);
        assert_eq!(report.restored_checkpoint, None);
    }
}
