//! One attempt of the job: the checkpoint coordinator on the driver
//! thread, fed by the tasks' reports, with the attempt's failure injected
//! when the job has come far enough.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Runs `dataflow` under `coordinator` until it finishes or fails over.
///
/// # Errors
/// Errors collecting the final state; every task ending without a report.
pub fn drive(
    dataflow: Dataflow,
    mut coordinator: CheckpointCoordinator,
    injection: Option<Injection>,
    faults: Option<&FaultInjectingStore>,
    log: &mut CheckpointLog,
) -> Result<AttemptEnd> {
    let interval = coordinator.config().interval.unwrap_or(POLL);
    coordinator.start(clock(), interval);
    let mut sources_left = dataflow.sources.len();
    let mut tasks_left = dataflow.tasks.len();
    let mut pending_injection = injection.filter(|i| i.kind != FailureKind::Task);
    let mut crash_armed = false;
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
                if crash_armed && coordinator.pending_ids().contains(&id) {
                    println!(
                        "FAILURE injected: the job stops dead while checkpoint {id} is acknowledged by some tasks (no notices, no clean-up)"
                    );
                    drop(coordinator);
                    dataflow.cancel();
                    return Ok(AttemptEnd::FailedOver {
                        cause: "crash during a checkpoint".into(),
                    });
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
                    record(&events, log);
                    return dataflow.finish().map(AttemptEnd::Finished);
                }
            }
            Ok(TaskReport::Failed(task, error)) => {
                println!("FAILURE: task {task} failed: {error}");
                let events = coordinator.task_failed(clock());
                record(&events, log);
                dataflow.cancel();
                return Ok(AttemptEnd::FailedOver {
                    cause: format!("task {task} failed"),
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StateError::Restore("every task went away".into()));
            }
        }
        events.extend(coordinator.tick(clock()));
        record(&events, log);
        if let Some(CheckpointEvent::TolerableFailuresExceeded { id, failures }) = events
            .iter()
            .find(|e| matches!(e, CheckpointEvent::TolerableFailuresExceeded { .. }))
        {
            println!(
                "FAILOVER: checkpoint {id} was the {failures}. failed checkpoint in a row, more than execution.checkpointing.tolerable-failed-checkpoints allows"
            );
            let events = coordinator.stop(clock(), FailureReason::CoordinatorSuspended);
            record(&events, log);
            dataflow.cancel();
            return Ok(AttemptEnd::FailedOver {
                cause: "too many failed checkpoints".into(),
            });
        }
        if let Some(injection) =
            pending_injection.take_if(|i| dataflow.progress.load(Ordering::Relaxed) >= i.at)
        {
            match injection.kind {
                FailureKind::Storage => {
                    println!(
                        "FAILURE injected at offset {}: the checkpoint storage refuses every write",
                        injection.at
                    );
                    if let Some(faults) = faults {
                        faults.set_enabled(true);
                    }
                }
                FailureKind::CheckpointCrash => crash_armed = true,
                FailureKind::Task | FailureKind::None => {}
            }
        }
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
                        if stats.tasks.values().any(|m| m.unaligned) {
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
            CheckpointEvent::TolerableFailuresExceeded { .. } => {}
        }
    }
}
