//! The job driver: the reference run, the run with checkpoints and an
//! injected failure, the recovery at another parallelism, and the comparison.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use state_api::backend::check_restore_handles;
use state_api::{CheckpointStorageAccess, KeyGroupRange, Result, StateError};
use state_config::StateConfig;
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
};

use crate::events::EventStream;
use crate::operator::{KeySummary, WINDOW_MS};
use crate::pipeline::{FinishedCheckpoint, PendingCheckpoint, Pipeline};

/// The operator id under which the job's keyed state is stored.
const OPERATOR_ID: &str = "keyed-aggregator";
/// Master-state key of the source offset in checkpoint metadata.
const SOURCE_OFFSET: &str = "source-offset";

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
}

/// The state configuration of a run: the `--config` file, or the flags.
///
/// # Errors
/// [`StateError::Config`] for an unreadable or invalid file or invalid flag
/// values.
pub fn state_config(o: &Options) -> Result<StateConfig> {
    match &o.config {
        Some(path) => StateConfig::from_file(path),
        None => flags_config(o),
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
    for (old, new) in config.deprecated_keys() {
        println!("warning: configuration key '{old}' is deprecated, use '{new}'");
    }
    let stream = EventStream::new(o.seed, o.keys, o.events);
    let fail_at = o.fail_at.unwrap_or(o.events * 65 / 100).min(o.events);
    let job_id = format!("job-{}", uuid::Uuid::new_v4().simple());
    let factory = config.backend_factory()?;
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
        &[],
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
    let storage: Arc<ObjectStoreCheckpointStorage> = Arc::new(config.checkpoint_storage(&job_id)?);
    println!("checkpoints go to {}", storage.location());
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    let mut coordinator = Coordinator {
        job_id: job_id.clone(),
        next_id: 1,
        pending: None,
        completed: Vec::new(),
        aborted: Vec::new(),
    };
    let mut pipeline = Pipeline::start(
        &*factory,
        Arc::clone(&access),
        o.max_parallelism,
        o.parallelism,
        &[],
        None,
    )?;
    let started = Instant::now();
    coordinator.run(&mut pipeline, &mut store, &access, &stream, 0, fail_at, o)?;
    println!(
        "FAILURE injected at offset {fail_at} after {:.2?}: the job's tasks are gone",
        started.elapsed()
    );
    coordinator.abandon_pending(&mut store)?;
    drop(pipeline);
    drop(store);

    // 3. Recovery: a new process finds the latest completed checkpoint and
    //    restores it at another parallelism.
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    let (handles, resume_at, restored_id) = match store.latest() {
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
            (handles, source_offset(latest)?, Some(latest.checkpoint_id))
        }
        None => (Vec::new(), 0, None),
    };
    let restore_started = Instant::now();
    let resume_window = resume_at
        .checked_sub(1)
        .map(|o| stream.event(o).timestamp_ms / WINDOW_MS);
    let mut pipeline = Pipeline::start(
        &*factory,
        Arc::clone(&access),
        o.max_parallelism,
        o.restore_parallelism,
        &handles,
        resume_window,
    )?;
    let restore_time = restore_started.elapsed();
    match restored_id {
        Some(id) => println!(
            "restored checkpoint {id} ({} handles) at parallelism {} in {restore_time:.2?}; replaying from offset {resume_at}",
            handles.len(),
            o.restore_parallelism
        ),
        None => println!("no completed checkpoint: starting over from offset 0"),
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
    Ok(JobReport {
        job_id,
        equal,
        restored_checkpoint: restored_id,
        completed_checkpoints: coordinator.completed.len(),
    })
}

fn source_offset(checkpoint: &CompletedCheckpoint) -> Result<u64> {
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

/// A minimal checkpoint coordinator: triggers, completes and aborts
/// checkpoints of the pipeline and records them.
struct Coordinator {
    job_id: String,
    next_id: u64,
    pending: Option<PendingCheckpoint>,
    completed: Vec<FinishedCheckpoint>,
    aborted: Vec<u64>,
}

impl Coordinator {
    /// Processes events `from..to`, triggering a checkpoint every
    /// `checkpoint_interval` events and completing finished ones.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
        storage: &Arc<dyn CheckpointStorageAccess>,
        stream: &EventStream,
        from: u64,
        to: u64,
        o: &Options,
    ) -> Result<()> {
        let progress_every = (stream.event_count() / 10).max(1);
        for offset in from..to {
            if offset > from && offset % o.checkpoint_interval.max(1) == 0 && self.pending.is_none()
            {
                let id = self.next_id;
                self.next_id += 1;
                self.pending = Some(pipeline.trigger_checkpoint(id, offset, now_ms(), storage)?);
            }
            if offset % 1_000 == 0
                && self
                    .pending
                    .as_ref()
                    .is_some_and(PendingCheckpoint::is_done)
            {
                self.complete_pending(pipeline, store)?;
            }
            pipeline.process(&stream.event(offset))?;
            if offset % progress_every == 0 && offset > 0 {
                println!("  processed {offset} / {} events", stream.event_count());
            }
        }
        Ok(())
    }

    fn complete_pending(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
    ) -> Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let id = pending.checkpoint_id;
        match pending.finish() {
            Ok(finished) => {
                let checkpoint = CompletedCheckpoint {
                    job_id: self.job_id.clone(),
                    checkpoint_id: id,
                    timestamp_ms: now_ms(),
                    kind: CheckpointKind::Checkpoint,
                    operators: BTreeMap::from([(
                        OPERATOR_ID.to_string(),
                        finished.handles.clone(),
                    )]),
                    master_states: BTreeMap::from([(
                        SOURCE_OFFSET.to_string(),
                        state_api::codec::encode(&finished.source_offset)?,
                    )]),
                };
                let subsumed = match store.add(checkpoint) {
                    Ok(subsumed) => subsumed,
                    Err(e) => return self.abort(pipeline, store, id, &e),
                };
                pipeline.notify_complete(id, &subsumed)?;
                println!(
                    "  checkpoint {id} complete at offset {}: state {}, uploaded {}, sync phase {:.2?}, total {:.2?}",
                    finished.source_offset,
                    human_bytes(finished.state_size),
                    human_bytes(finished.uploaded_bytes),
                    finished.sync_duration,
                    finished.total_duration
                );
                self.completed.push(finished);
                Ok(())
            }
            Err(e) => self.abort(pipeline, store, id, &e),
        }
    }

    /// A checkpoint that cannot complete: the backends forget it and its
    /// files are removed; the job goes on.
    fn abort(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
        id: u64,
        cause: &StateError,
    ) -> Result<()> {
        println!("  checkpoint {id} failed and is aborted: {cause}");
        pipeline.notify_aborted(id)?;
        store.discard_pending(id)?;
        self.aborted.push(id);
        Ok(())
    }

    /// Waits for a pending checkpoint at the end of the stream and completes it.
    fn drain(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
    ) -> Result<()> {
        self.complete_pending(pipeline, store)
    }

    /// The failure: a checkpoint in flight never completes. Its upload
    /// threads are joined first (a real crash kills them with the process),
    /// so no file appears after its directory is removed.
    fn abandon_pending(&mut self, store: &mut CompletedCheckpointStore) -> Result<()> {
        if let Some(pending) = self.pending.take() {
            let id = pending.checkpoint_id;
            let _ = pending.finish();
            store.discard_pending(id)?;
            println!("  checkpoint {id} was in flight at the failure and is discarded");
            self.aborted.push(id);
        }
        Ok(())
    }

    fn print_summary(&self, restore_time: Duration, equal: bool) {
        println!("\nsummary");
        println!(
            "  {:>4}  {:>10}  {:>12}  {:>12}  {:>10}  {:>10}",
            "id", "offset", "state", "uploaded", "sync", "total"
        );
        for c in &self.completed {
            println!(
                "  {:>4}  {:>10}  {:>12}  {:>12}  {:>10.2?}  {:>10.2?}",
                c.checkpoint_id,
                c.source_offset,
                human_bytes(c.state_size),
                human_bytes(c.uploaded_bytes),
                c.sync_duration,
                c.total_duration
            );
        }
        if !self.aborted.is_empty() {
            println!("  aborted checkpoints: {:?}", self.aborted);
        }
        println!("  restore time: {restore_time:.2?}");
        println!(
            "  result: {}",
            if equal {
                "OK: final state equals the run without failure"
            } else {
                "FAILED: final state differs"
            }
        );
    }
}

/// `1234567` → `"1.18 MiB"`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(dir: &std::path::Path, args: &[&str]) -> JobReport {
        let dir_arg = dir.to_str().expect("utf-8 temp path").to_string();
        let mut argv = vec!["state-job", "--checkpoint-dir", &dir_arg];
        argv.extend_from_slice(args);
        run(&Options::parse_from(argv)).expect("job runs")
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
