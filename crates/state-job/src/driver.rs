//! One attempt of the job: the checkpoint coordinator on the driver
//! thread, fed by the tasks' reports, with the attempt's failure injected
//! when the job has come far enough.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use state_api::{Result, StateError};
use state_runtime::coordinator::{
    CheckpointCoordinator, CheckpointEvent, CompletedCheckpointStats, FailureReason,
};
use state_storage::fault::FaultInjectingStore;

use crate::dataflow::control::{Control, TaskReport};
use crate::dataflow::{Dataflow, FinalState};
use crate::options::FailureKind;

/// Longest wait for a report before the coordinator is ticked.
const POLL: Duration = Duration::from_millis(20);
/// How long the injected storage outage lasts unless the job fails over
/// first (a commit caught in it is then resolved in place).
const STORAGE_OUTAGE: Duration = Duration::from_millis(500);

/// The failure an attempt injects.
#[derive(Clone, Copy, Debug)]
pub struct Injection {
    /// What fails.
    pub kind: FailureKind,
    /// Once the keyed operator processed this events offset.
    pub at: u64,
}

/// How an attempt ended.
pub enum AttemptEnd {
    /// The streams ended; the final state.
    Finished(FinalState),
    /// The job failed over (its tasks are stopped).
    FailedOver {
        /// What happened.
        cause: String,
    },
}

/// What the coordinator did over all attempts.
#[derive(Debug, Default)]
pub struct CheckpointLog {
    /// Completed checkpoints.
    pub completed: Vec<CompletedCheckpointStats>,
    /// Aborted checkpoints.
    pub aborted: usize,
    /// The highest id triggered (ids are never used twice, over failovers
    /// too).
    pub last_triggered: u64,
    /// Print each completed checkpoint.
    pub verbose: bool,
}

/// The coordinator's clock: time since the Unix epoch.
pub fn clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Runs `dataflow` under `coordinator` until it finishes or fails over,
/// injecting the failures at the front of `injections` one after another
/// (a failure the attempt survives, such as a short storage outage, is
/// followed by the next in the same attempt).
///
/// # Errors
/// Errors collecting the final state; every task ending without a report.
pub fn drive(
    dataflow: Dataflow,
    mut coordinator: CheckpointCoordinator,
    injections: &mut VecDeque<Injection>,
    faults: Option<&FaultInjectingStore>,
    log: &mut CheckpointLog,
) -> Result<AttemptEnd> {
    let interval = coordinator.config().interval.unwrap_or(POLL);
    coordinator.start(clock(), interval);
    let mut sources_left = dataflow.sources.len();
    let mut tasks_left = dataflow.tasks.len();
    // A task failure armed in the tasks and not fired yet.
    let mut armed_task_failure: Option<Injection> = None;
    let mut armed_crash: Option<Injection> = None;
    let mut outage_ends: Option<Instant> = None;
    loop {
        let now = clock();
        let wait = coordinator
            .next_wakeup()
            .map_or(POLL, |at| at.saturating_sub(now))
            .clamp(Duration::from_millis(1), POLL);
        let mut events = Vec::new();
        match dataflow.reports.recv_timeout(wait) {
            Ok(TaskReport::Ack {
                task,
                id,
                snapshot,
                metrics,
            }) => {
                events = coordinator.acknowledge(&task, id, snapshot, metrics, clock());
                if armed_crash.is_some() && coordinator.pending_ids().contains(&id) {
                    println!(
                        "FAILURE injected: the job stops dead while checkpoint {id} is acknowledged by some tasks (no notices, no clean-up)"
                    );
                    // No `stop`: a dead process tells nobody anything.
                    drop(coordinator);
                    give_back(injections, &mut armed_task_failure);
                    return Ok(fail_over(dataflow, "crash during a checkpoint"));
                }
            }
            Ok(TaskReport::Decline { id, reason }) => {
                events = coordinator.decline(id, reason, clock());
            }
            Ok(TaskReport::SourceFinished(_)) => {
                sources_left -= 1;
                if sources_left == 0 {
                    // Nothing left to checkpoint: the streams are read.
                    events = coordinator.stop(clock(), FailureReason::CoordinatorSuspended);
                    dataflow.gateway.broadcast(|| Control::Finish);
                }
            }
            Ok(TaskReport::Finished(_)) => {
                tasks_left -= 1;
                if tasks_left == 0 {
                    return dataflow.finish().map(AttemptEnd::Finished);
                }
            }
            Ok(TaskReport::Failed(task, error)) => {
                println!("FAILURE: task {task} failed: {error}");
                give_back(injections, &mut armed_crash);
                record(&coordinator.task_failed(clock()), log);
                return Ok(fail_over(dataflow, &format!("task {task} failed")));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StateError::Restore("every task went away".into()));
            }
        }
        events.extend(coordinator.tick(clock()));
        record(&events, log);
        if let Some(cause) = events.iter().find_map(failover_cause) {
            println!("FAILOVER: {cause}");
            // Failures armed and not fired yet come in the next attempt.
            give_back(injections, &mut armed_crash);
            give_back(injections, &mut armed_task_failure);
            record(
                &coordinator.stop(clock(), FailureReason::CoordinatorSuspended),
                log,
            );
            return Ok(fail_over(dataflow, &cause));
        }
        if let (Some(ends), Some(faults)) = (outage_ends, faults)
            && Instant::now() >= ends
        {
            println!("the checkpoint storage answers again");
            faults.set_enabled(false);
            outage_ends = None;
        }
        if armed_task_failure.is_none() && armed_crash.is_none() {
            inject_next(
                injections,
                &dataflow,
                faults,
                &mut armed_task_failure,
                &mut armed_crash,
                &mut outage_ends,
            );
        }
    }
}

/// Puts an armed failure that did not fire back in front of the others.
fn give_back(injections: &mut VecDeque<Injection>, armed: &mut Option<Injection>) {
    if let Some(injection) = armed.take() {
        injections.push_front(injection);
    }
}

/// Injects the failure at the front of `injections` if the job came far
/// enough (a task failure is armed in the tasks at once: they fire it).
fn inject_next(
    injections: &mut VecDeque<Injection>,
    dataflow: &Dataflow,
    faults: Option<&FaultInjectingStore>,
    armed_task_failure: &mut Option<Injection>,
    armed_crash: &mut Option<Injection>,
    outage_ends: &mut Option<Instant>,
) {
    let progress = dataflow.progress.load(Ordering::Relaxed);
    let due = injections
        .front()
        .is_some_and(|i| i.kind == FailureKind::Task || progress >= i.at);
    if !due {
        return;
    }
    let Some(injection) = injections.pop_front() else {
        return;
    };
    match injection.kind {
        FailureKind::Task => {
            dataflow.arm_task_failure(injection.at);
            *armed_task_failure = Some(injection);
        }
        FailureKind::Storage => {
            println!(
                "FAILURE injected at offset {}: the checkpoint storage refuses every write for {STORAGE_OUTAGE:?}",
                injection.at
            );
            if let Some(faults) = faults {
                faults.set_enabled(true);
                *outage_ends = Some(Instant::now() + STORAGE_OUTAGE);
            }
        }
        FailureKind::CheckpointCrash => *armed_crash = Some(injection),
        FailureKind::None => {}
    }
}

/// Why `event` makes the job fail over, if it does.
fn failover_cause(event: &CheckpointEvent) -> Option<String> {
    match event {
        CheckpointEvent::TolerableFailuresExceeded { id, failures } => Some(format!(
            "checkpoint {id} was failure {failures} in a row, more than execution.checkpointing.tolerable-failed-checkpoints allows"
        )),
        CheckpointEvent::CommitUnresolved { id } => Some(format!(
            "the commit of checkpoint {id} is still unresolved after the checkpoint timeout"
        )),
        _ => None,
    }
}

/// Stops every task of the attempt: it failed over because of `cause`.
fn fail_over(dataflow: Dataflow, cause: &str) -> AttemptEnd {
    dataflow.cancel();
    AttemptEnd::FailedOver {
        cause: cause.to_string(),
    }
}

fn record(events: &[CheckpointEvent], log: &mut CheckpointLog) {
    for event in events {
        match event {
            CheckpointEvent::Completed(stats) => {
                if log.verbose {
                    println!(
                        "checkpoint {} completed in {:.1?}{}: alignment up to {:.1?}, {} new of {} bytes, {} bytes in flight",
                        stats.id,
                        stats.duration,
                        if stats.is_unaligned() {
                            " (unaligned)"
                        } else {
                            ""
                        },
                        stats.max_alignment(),
                        stats.persisted_size,
                        stats.full_size,
                        stats.persisted_in_flight_bytes()
                    );
                }
                log.completed.push(stats.clone());
            }
            CheckpointEvent::Aborted { id, reason } => {
                log.aborted += 1;
                if !matches!(reason, FailureReason::CoordinatorSuspended) {
                    println!("checkpoint {id} aborted: {reason}");
                }
            }
            CheckpointEvent::CommitOutcomeUnknown { id, error } => {
                println!(
                    "checkpoint {id}: commit outcome unknown ({error}); resolving by reading back"
                );
            }
            CheckpointEvent::Triggered { id, .. } => {
                log.last_triggered = log.last_triggered.max(*id);
            }
            CheckpointEvent::TolerableFailuresExceeded { .. }
            | CheckpointEvent::CommitUnresolved { .. } => {}
        }
    }
}
