//! One life of the job: restore from the latest completed checkpoint,
//! check the restored state against the model, then process and checkpoint
//! until the driver kills the process (or a crash point does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;
use state_api::{CheckpointStorageAccess, Result, StateError};
use state_heap::HeapBackendFactory;
use state_job::events::EventStream;
use state_job::operator::KeySummary;
use state_job::options::{Options, state_config};

use crate::harness::coordinator::Coordinator;
use crate::harness::pipeline::{Pipeline, Restore};
use crate::harness::{OPERATOR_ID, resume_window, source_offset};
use state_storage::ObjectStoreCheckpointStorage;
use state_storage::fault::{FaultConfig, FaultInjectingStore, Operation};

/// The job id of every crash-test job (one job directory per generation).
pub(crate) const JOB_ID: &str = "crash-job";

/// Exit code of a worker whose restored state differs from the model.
pub(crate) const EXIT_CORRUPT: u8 = 3;
/// Exit code of a worker whose latest checkpoint does not restore.
pub(crate) const EXIT_LOST: u8 = 4;
/// Exit code of a final worker that found unreferenced files.
pub(crate) const EXIT_LEAKED: u8 = 5;
/// Exit code of any other error.
pub(crate) const EXIT_ERROR: u8 = 2;

/// Checkpoints the final life tries before it reports an error.
const FINAL_CHECKPOINT_ATTEMPTS: u32 = 5;

/// Where the worker kills itself: at the `nth` storage operation `operation`
/// on a path containing `pattern`.
#[derive(Clone, Debug)]
pub(crate) struct CrashPoint {
    /// The operation.
    pub(crate) operation: Operation,
    /// Part of the path.
    pub(crate) pattern: String,
    /// Which occurrence (1-based).
    pub(crate) nth: u64,
}

impl CrashPoint {
    /// Parses `put:_metadata:3` (operation `put`, `delete`, `get`, `list`,
    /// `part`, `complete`).
    ///
    /// # Errors
    /// A message for a malformed point.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(op), Some(pattern), Some(nth)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("crash point '{text}' is not OP:PATTERN:N"));
        };
        let operation = match op {
            "put" => Operation::Put,
            "delete" => Operation::Delete,
            "get" => Operation::Get,
            "list" => Operation::List,
            "part" => Operation::PutPart,
            "complete" => Operation::CompleteMultipart,
            other => return Err(format!("unknown operation '{other}'")),
        };
        let nth = nth.parse().map_err(|_| format!("'{nth}' is not a count"))?;
        Ok(Self {
            operation,
            pattern: pattern.to_string(),
            nth,
        })
    }
}

/// What one worker does.
#[derive(Debug)]
pub(crate) struct WorkerPlan {
    /// The job's options (backend, checkpoint directory, workload).
    pub(crate) options: Options,
    /// Parallelism of this life.
    pub(crate) parallelism: u32,
    /// Kill the process at this point of the protocol.
    pub(crate) crash_at: Option<CrashPoint>,
    /// The final life: process this many events, take one more checkpoint,
    /// stop, and count unreferenced files instead of running until killed.
    pub(crate) final_events: Option<u64>,
    /// Events between checkpoint triggers.
    pub(crate) checkpoint_events: u64,
}

/// Runs one life; returns the exit code.
pub(crate) fn run(plan: &WorkerPlan) -> u8 {
    match life(plan) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

fn life(plan: &WorkerPlan) -> Result<u8> {
    let o = &plan.options;
    let config = state_config(o)?;
    let stream = EventStream::new(o.seed, o.keys, o.events);
    let factory = config.backend_factory()?;
    let storage = Arc::new(crashing_storage(
        &config.checkpoint_storage(JOB_ID)?,
        plan.crash_at.clone(),
    )?);
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = config.checkpoint_store(Arc::clone(&storage))?;
    // No task of an earlier life runs any more.
    let collected = store.collect_garbage()?.deleted.len();
    let latest = store.latest().cloned();
    let (restore, offset, restored) = match &latest {
        Some(checkpoint) => {
            let handles = checkpoint
                .operators
                .get(OPERATOR_ID)
                .cloned()
                .ok_or_else(|| {
                    StateError::Restore(format!(
                        "checkpoint {} has no state",
                        checkpoint.checkpoint_id
                    ))
                })?;
            let restore = Restore {
                handles,
                ..Restore::default()
            };
            (
                restore,
                source_offset(checkpoint)?,
                Some(checkpoint.checkpoint_id),
            )
        }
        None => (Restore::default(), 0, None),
    };
    let mut pipeline = match Pipeline::start(
        &*factory,
        Arc::clone(&access),
        o.max_parallelism,
        plan.parallelism,
        &restore,
        resume_window(&stream, offset),
    ) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            eprintln!("LOST: checkpoint {restored:?} does not restore: {e}");
            return Ok(EXIT_LOST);
        }
    };
    let expected = model(&stream, o.max_parallelism, offset)?;
    let actual = pipeline.summarize()?;
    if let Some(difference) = first_difference(&expected, &actual) {
        eprintln!("CORRUPT: checkpoint {restored:?} at offset {offset}: {difference}");
        return Ok(EXIT_CORRUPT);
    }
    println!(
        "restored checkpoint {restored:?} at offset {offset} on {} subtasks ({collected} files collected)",
        plan.parallelism
    );

    let first_id = store
        .checkpoints()
        .map(|c| c.checkpoint_id)
        .chain(store.damaged_checkpoints().map(|(id, _)| id))
        .max()
        .map_or(1, |id| id + 1);
    let mut coordinator = Coordinator::new(JOB_ID.to_string(), first_id);
    let end = match plan.final_events {
        Some(events) => offset.saturating_add(events).min(o.events),
        None => o.events,
    };
    coordinator.run(
        &mut pipeline,
        &mut store,
        &access,
        &stream,
        offset,
        end,
        plan.checkpoint_events,
    )?;
    coordinator.drain(&mut pipeline, &mut store)?;
    if plan.final_events.is_none() {
        println!("finished the stream at offset {end}");
        return Ok(0);
    }
    // A checkpoint may abort for a passing cause (an upload that timed out
    // on a loaded machine fails it, as in Flink); the final life needs one
    // that completes, so it tries a few times before it calls it an error.
    let mut attempts = 0;
    while !coordinator.checkpoint_now(&mut pipeline, &mut store, &access, end)? {
        attempts += 1;
        if attempts == FINAL_CHECKPOINT_ATTEMPTS {
            eprintln!("the final checkpoint did not complete in {attempts} attempts");
            return Ok(EXIT_ERROR);
        }
        println!("  the final checkpoint did not complete; trying again");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(pipeline);
    state_api::lifecycle::wait_for_detached_deletions(Duration::from_secs(60));
    let leaked = store.unreferenced_files()?;
    println!(
        "final: {} checkpoints retained\nUNREFERENCED {}",
        store.checkpoints().len(),
        leaked.len()
    );
    if leaked.is_empty() {
        Ok(0)
    } else {
        for path in leaked.iter().take(20) {
            eprintln!("LEAKED: {path}");
        }
        Ok(EXIT_LEAKED)
    }
}

/// The configured storage behind a fault-injecting store whose hook kills
/// the process at `crash_at`.
fn crashing_storage(
    configured: &ObjectStoreCheckpointStorage,
    crash_at: Option<CrashPoint>,
) -> Result<ObjectStoreCheckpointStorage> {
    let faults = Arc::new(FaultInjectingStore::new(
        Arc::clone(configured.object_store()),
        FaultConfig::default(),
    ));
    if let Some(point) = crash_at {
        let seen = AtomicU64::new(0);
        faults.set_hook(Some(Arc::new(move |operation, path: &str| {
            if operation == point.operation
                && path.contains(&point.pattern)
                && seen.fetch_add(1, Ordering::Relaxed) + 1 == point.nth
            {
                // SIGKILL: no destructor, no flush, no unlock; as a crash.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        })));
    }
    let parts: Vec<_> = configured.root().parts().collect();
    let prefix: Path = parts[..parts.len().saturating_sub(1)]
        .iter()
        .cloned()
        .collect();
    Ok(
        ObjectStoreCheckpointStorage::new(faults as Arc<dyn ObjectStore>, prefix, JOB_ID)?
            .with_retry(configured.retry_policy()),
    )
}

/// The state after events `0..offset`: the same job on the heap backend,
/// without checkpoints.
fn model(
    stream: &EventStream,
    max_parallelism: u32,
    offset: u64,
) -> Result<BTreeMap<u64, KeySummary>> {
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::in_memory("model")?);
    let mut pipeline = Pipeline::start(
        &HeapBackendFactory::new(),
        storage,
        max_parallelism,
        1,
        &Restore::default(),
        None,
    )?;
    for event in stream
        .from_offset(0)
        .take(usize::try_from(offset).unwrap_or(usize::MAX))
    {
        pipeline.process(&event)?;
    }
    pipeline.summarize()
}

fn first_difference(
    expected: &BTreeMap<u64, KeySummary>,
    actual: &BTreeMap<u64, KeySummary>,
) -> Option<String> {
    for (key, want) in expected {
        match actual.get(key) {
            Some(got) if got == want => {}
            got => return Some(format!("key {key}: expected {want:?}, got {got:?}")),
        }
    }
    actual
        .keys()
        .find(|key| !expected.contains_key(key))
        .map(|key| format!("key {key} exists only after the restore"))
}
