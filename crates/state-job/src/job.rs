//! The job driver: the reference run, the attempts with checkpoints and
//! injected failures, the restores at alternating parallelism, and the
//! final check.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::{CheckpointStorageAccess, Result, StateBackendFactory, StateError};
use state_config::StateConfig;
use state_runtime::CheckpointingMode;
use state_runtime::coordinator::{CheckpointConfig, CheckpointCoordinator};
use state_storage::fault::{FaultConfig, FaultInjectingStore, Operation};
use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};

use crate::dataflow::elements::StreamKind;
use crate::dataflow::sink::SinkTotals;
use crate::dataflow::{Dataflow, DataflowPlan, FinalState, RestoreState};
use crate::driver::{AttemptEnd, CheckpointLog, Injection, drive};
use crate::events::EventStream;
use crate::operator::KeySummary;
use crate::options::{DEFAULT_CHECKPOINT_INTERVAL, FailureKind, Options, state_config};
use crate::savepoint::{SavepointRequest, initial_state, no_savepoint_dir, take_savepoint};
use crate::verify::{Verdict, compare};

/// Seed offset of the adjustments stream.
const ADJUSTMENTS_SEED: u64 = 0xAD_7051;

/// What a run of the job showed.
#[derive(Debug)]
pub struct JobReport {
    /// The job id, the job's directory under the checkpoint directory.
    pub job_id: String,
    /// Exactly once or at least once.
    pub mode: CheckpointingMode,
    /// The final state against the run without failure.
    pub verdict: Verdict,
    /// Whether the run passed its check: equal state (exactly once), or no
    /// lost record (at least once, where duplicates are expected).
    pub passed: bool,
    /// Failures injected (some may not fire if the stream ends first).
    pub failures_injected: usize,
    /// The checkpoint the last recovery restored, if one had completed.
    pub restored_checkpoint: Option<u64>,
    /// Channel state files (in-flight records) the recoveries restored.
    pub restored_in_flight_files: usize,
    /// Checkpoints completed over all attempts.
    pub completed_checkpoints: usize,
    /// Completed checkpoints that persisted in-flight records.
    pub unaligned_checkpoints: usize,
    /// The sink's sums at the end.
    pub sink: SinkTotals,
    /// Where the final savepoint went (`--stop-with-savepoint`).
    pub savepoint: Option<String>,
    /// Files of failed attempts that no retained checkpoint referenced,
    /// deleted by the garbage collection at recovery.
    pub collected_at_recovery: usize,
    /// Files no retained checkpoint referenced after the job stopped and
    /// its backends cleaned up (0 when every backend deletes what it owns).
    pub collected_at_end: usize,
}

/// Runs the reference and the failing job and compares their final states.
///
/// # Errors
/// Storage, restore and state errors; a differing final state is not an
/// error but `JobReport::passed == false`.
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

/// The workload of a run.
struct Workload {
    events: EventStream,
    adjustments: EventStream,
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
    let workload = Workload {
        events: EventStream::new(o.seed, o.keys, o.events),
        adjustments: EventStream::new(o.seed ^ ADJUSTMENTS_SEED, o.keys, o.events / 4)
            .with_time_step(40),
    };
    let job_id = format!("job-{}", uuid::Uuid::new_v4().simple());
    let factory = config.backend_factory()?;
    let mut checkpointing = config.checkpoint_config().clone();
    checkpointing.interval = checkpointing.interval.or(Some(DEFAULT_CHECKPOINT_INTERVAL));
    checkpointing.validate()?;
    let initial = match config.recovery_path() {
        Some(path) => Some(initial_state(path, config, o)?),
        None => None,
    };
    if o.stop_with_savepoint && config.savepoint_dir().is_none() {
        return Err(no_savepoint_dir()); // found out now, not after the run
    }
    let injections = plan_injections(o);
    println!(
        "state-job: backend {}, {} keys, {} events + {} adjustments in {} splits each, parallelism {} -> {}, max parallelism {}, {}, checkpoint every {:?}, failures: {}",
        factory.name(),
        o.keys,
        workload.events.event_count(),
        workload.adjustments.event_count(),
        o.splits,
        o.parallelism,
        o.restore_parallelism,
        o.max_parallelism,
        mode_name(&checkpointing),
        checkpointing.interval.unwrap_or_default(),
        if injections.is_empty() {
            "none".to_string()
        } else {
            injections
                .iter()
                .map(|i| format!("{} at offset {}", i.kind.name(), i.at))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );

    // 1. The reference: the same dataflow from the same start, without
    //    failures and without checkpoints.
    let started = Instant::now();
    let no_restore = RestoreState::default();
    let reference = run_reference(
        o,
        &*factory,
        &workload,
        initial.as_ref().unwrap_or(&no_restore),
    )?;
    println!(
        "reference run: {} keys in {:.2?}",
        reference.0.len(),
        started.elapsed()
    );

    // 2. The attempts: each restores the latest completed checkpoint (a
    //    new process would find it the same way) and runs until it fails
    //    over or the streams end.
    let configured = storage_for(&job_id)?;
    println!("checkpoints go to {}", configured.location());
    let (storage, faults) = with_faults(&configured, &job_id)?;
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut log = CheckpointLog {
        verbose: true,
        ..CheckpointLog::default()
    };
    let mut restore = initial.unwrap_or_default();
    let mut restored_checkpoint = None;
    let mut restored_in_flight_files = 0;
    let mut collected_at_recovery = 0;
    let mut attempt = 0usize;
    let mut to_inject: VecDeque<Injection> = injections.iter().copied().collect();
    let mut final_state = loop {
        let mut store = config.checkpoint_store(Arc::clone(&storage))?;
        if attempt > 0 {
            // No task of the failed attempt runs any more: what no
            // retained checkpoint references is garbage.
            let collected = store.collect_garbage()?.deleted.len();
            collected_at_recovery += collected;
            if let Some(latest) = store.latest() {
                restore = RestoreState::from_checkpoint(latest, o.max_parallelism)?;
                restored_checkpoint = Some(latest.checkpoint_id);
                restored_in_flight_files += restore.in_flight_files();
            }
        }
        let parallelism = if attempt.is_multiple_of(2) {
            o.parallelism
        } else {
            o.restore_parallelism
        };
        let restore_started = Instant::now();
        let dataflow = Dataflow::start(&DataflowPlan {
            factory: &*factory,
            storage: Arc::clone(&access),
            restore: &restore,
            parallelism,
            max_parallelism: o.max_parallelism,
            splits: o.splits,
            channel_capacity: o.channel_capacity,
            source_rate: o.source_rate,
            events: workload.events.clone(),
            adjustments: workload.adjustments.clone(),
        })?;
        if attempt > 0 {
            match restored_checkpoint {
                Some(id) => println!(
                    "recovery {attempt}: restored checkpoint {id} ({} keyed handles, {} in-flight record files) at parallelism {parallelism} in {:.2?}",
                    restore.keyed.len(),
                    restore.in_flight_files(),
                    restore_started.elapsed()
                ),
                None => println!(
                    "recovery {attempt}: no completed checkpoint, starting over at parallelism {parallelism}"
                ),
            }
        }
        let coordinator = CheckpointCoordinator::new(
            checkpointing.clone(),
            job_id.clone(),
            dataflow.tasks.clone(),
            dataflow.sources.clone(),
            store,
            Box::new(dataflow.gateway.clone()),
        )?
        .continuing_after(log.last_triggered);
        match drive(
            dataflow,
            coordinator,
            &mut to_inject,
            Some(&faults),
            &mut log,
        )? {
            AttemptEnd::Finished(state) => break state,
            AttemptEnd::FailedOver { cause } => {
                println!("failover ({cause}): every task stopped");
                // An outage still going on ends with the failover.
                faults.set_enabled(false);
                attempt += 1;
            }
        }
    };

    // 3. Compare.
    let actual = summarize(&mut final_state)?;
    let verdict = compare(
        &reference.0,
        reference.1,
        &actual,
        final_state.sink,
        checkpointing.mode == CheckpointingMode::ExactlyOnce,
    );
    let passed = match checkpointing.mode {
        CheckpointingMode::ExactlyOnce => verdict.equal,
        CheckpointingMode::AtLeastOnce => verdict.keys_with_losses == 0,
    };
    print_summary(&log, &verdict, checkpointing.mode, attempt, passed);

    // 4. Stop with a savepoint of the final state.
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    let savepoint = if o.stop_with_savepoint {
        Some(take_savepoint(
            &mut final_state,
            &SavepointRequest {
                config,
                job_id: &job_id,
                // After every id the backends have seen: a backend told
                // that checkpoint n aborted drops whatever n writes.
                id: store.next_checkpoint_id().max(log.last_triggered + 1),
                format: o.savepoint_format.into(),
                splits: o.splits,
                streams: [
                    (StreamKind::Events, &workload.events),
                    (StreamKind::Adjustments, &workload.adjustments),
                ],
            },
        )?)
    } else {
        None
    };

    // 5. Stop: the backends delete what they own; then nothing but the
    //    retained checkpoints' files should be left.
    let sink = final_state.sink;
    drop(final_state);
    state_api::lifecycle::wait_for_detached_deletions(Duration::from_secs(60));
    let deleted = store.collect_garbage()?.deleted;
    for path in deleted.iter().take(10) {
        println!("unreferenced at the end: {path}");
    }
    let collected_at_end = deleted.len();
    println!(
        "stopped: {} checkpoints retained, {collected_at_end} files nothing referenced",
        store.checkpoints().len()
    );
    Ok(JobReport {
        job_id,
        mode: checkpointing.mode,
        verdict,
        passed,
        failures_injected: injections.len(),
        restored_checkpoint,
        restored_in_flight_files,
        completed_checkpoints: log.completed.len(),
        unaligned_checkpoints: log.completed.iter().filter(|c| c.is_unaligned()).count(),
        sink,
        savepoint,
        collected_at_recovery,
        collected_at_end,
    })
}

/// The failures to inject, one per attempt, evenly spread over the events
/// stream (the first at `--fail-at` if given).
fn plan_injections(o: &Options) -> Vec<Injection> {
    let kinds: Vec<FailureKind> = o
        .inject_failures
        .iter()
        .copied()
        .filter(|k| *k != FailureKind::None)
        .collect();
    let spacing = o.events / (kinds.len() as u64 + 1);
    let first = o.fail_at.unwrap_or(spacing);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Injection {
            kind,
            at: first.saturating_add(spacing.saturating_mul(i as u64)),
        })
        .collect()
}

fn mode_name(config: &CheckpointConfig) -> String {
    match (config.mode, config.unaligned) {
        (CheckpointingMode::AtLeastOnce, _) => "at-least-once checkpoints".into(),
        (CheckpointingMode::ExactlyOnce, false) => "aligned exactly-once checkpoints".into(),
        (CheckpointingMode::ExactlyOnce, true) if config.aligned_checkpoint_timeout.is_zero() => {
            "unaligned exactly-once checkpoints".into()
        }
        (CheckpointingMode::ExactlyOnce, true) => format!(
            "exactly-once checkpoints, unaligned after {:?} of alignment",
            config.aligned_checkpoint_timeout
        ),
    }
}

/// The run without failure and without checkpoints, from the same start.
fn run_reference(
    o: &Options,
    factory: &dyn StateBackendFactory,
    workload: &Workload,
    restore: &RestoreState,
) -> Result<(BTreeMap<u64, KeySummary>, SinkTotals)> {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("reference")?);
    let dataflow = Dataflow::start(&DataflowPlan {
        factory,
        storage: storage.clone(),
        restore,
        parallelism: o.parallelism,
        max_parallelism: o.max_parallelism,
        splits: o.splits,
        channel_capacity: o.channel_capacity,
        source_rate: 0,
        events: workload.events.clone(),
        adjustments: workload.adjustments.clone(),
    })?;
    let coordinator = CheckpointCoordinator::new(
        CheckpointConfig::default(),
        "reference",
        dataflow.tasks.clone(),
        dataflow.sources.clone(),
        CompletedCheckpointStore::open(storage, 1)?,
        Box::new(dataflow.gateway.clone()),
    )?;
    let mut no_failures = VecDeque::new();
    match drive(
        dataflow,
        coordinator,
        &mut no_failures,
        None,
        &mut CheckpointLog::default(),
    )? {
        AttemptEnd::Finished(mut state) => Ok((summarize(&mut state)?, state.sink)),
        AttemptEnd::FailedOver { cause } => Err(StateError::Restore(format!(
            "the reference run failed: {cause}"
        ))),
    }
}

/// The job's storage over a store that can refuse every write (the
/// `storage` failure), off until that failure fires.
fn with_faults(
    storage: &ObjectStoreCheckpointStorage,
    job_id: &str,
) -> Result<(Arc<ObjectStoreCheckpointStorage>, FaultInjectingStore)> {
    let faults = FaultInjectingStore::new(
        Arc::clone(storage.object_store()),
        FaultConfig {
            error_rate: 1.0,
            operations: vec![
                Operation::Put,
                Operation::StartMultipart,
                Operation::PutPart,
                Operation::CompleteMultipart,
            ],
            ..FaultConfig::default()
        },
    );
    faults.set_enabled(false);
    // The job directory is the last segment of the storage's root.
    let parts: Vec<_> = storage.root().parts().collect();
    let base: object_store::path::Path = parts[..parts.len().saturating_sub(1)]
        .iter()
        .cloned()
        .collect();
    let wrapped = ObjectStoreCheckpointStorage::new(Arc::new(faults.clone()), base, job_id)?;
    Ok((Arc::new(wrapped), faults))
}

/// Every key's state from every keyed instance.
fn summarize(state: &mut FinalState) -> Result<BTreeMap<u64, KeySummary>> {
    let mut all = BTreeMap::new();
    for keyed in &mut state.keyed {
        all.extend(keyed.operator.summarize(&mut *keyed.backend)?);
    }
    Ok(all)
}

fn print_summary(
    log: &CheckpointLog,
    verdict: &Verdict,
    mode: CheckpointingMode,
    failovers: usize,
    passed: bool,
) {
    let mut durations: Vec<Duration> = log.completed.iter().map(|c| c.duration).collect();
    durations.sort_unstable();
    let median = durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or_default();
    let max_alignment = log
        .completed
        .iter()
        .map(|c| c.max_alignment())
        .max()
        .unwrap_or_default();
    let in_flight = log
        .completed
        .iter()
        .map(|c| c.persisted_in_flight_bytes())
        .max()
        .unwrap_or(0);
    println!(
        "checkpoints: {} completed (median {median:.1?}, longest alignment {max_alignment:.1?}, up to {in_flight} bytes in flight), {} aborted; {failovers} failovers",
        log.completed.len(),
        log.aborted
    );
    match mode {
        CheckpointingMode::ExactlyOnce => println!(
            "exactly-once check: {} ({} keys differ)",
            if passed {
                "PASSED, the state equals the run without failure"
            } else {
                "FAILED"
            },
            verdict.differing_keys
        ),
        CheckpointingMode::AtLeastOnce => println!(
            "at-least-once check: {} ({} duplicate records counted, {} keys with lost records)",
            if passed {
                "PASSED, nothing lost"
            } else {
                "FAILED"
            },
            verdict.duplicates,
            verdict.keys_with_losses
        ),
    }
}
