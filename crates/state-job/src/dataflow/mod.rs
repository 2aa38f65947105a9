//! The job as a multi-task dataflow on `state-runtime`, one thread per
//! parallel instance:
//!
//! ```text
//! source-events      #0..p ─┐  key-by over bounded channels
//!                           ├──────────────────────────────► keyed-aggregator #0..p ──► sink #0
//! source-adjustments #0..p ─┘  (barriers in band)             (two inputs, windows)
//! ```
//!
//! Sources keep their split offsets in operator state; the keyed operator
//! keeps its state in the configured keyed backend; the sink keeps its sums
//! in operator state. Checkpoint barriers start at the sources (triggered
//! by the coordinator through their mailboxes) and flow with the records;
//! the keyed operator and the sink read through a
//! [`CheckpointedInput`], which aligns them (exactly once), does not (at
//! least once) or lets them overtake and persists the in-flight records
//! (unaligned). [`Dataflow::start`] builds every task from a
//! [`RestoreState`] at any parallelism: keyed state by key group, split
//! offsets redistributed, in-flight records re-routed into the new input
//! gates before any new input.

pub mod acks;
mod build;
pub mod control;
pub mod elements;
pub mod keyed;
pub mod restore;
pub mod sink;
pub mod source;
pub mod task_loop;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use state_api::{CheckpointStorageAccess, Result, StateBackendFactory, StateError};
use state_runtime::channel::ChannelSender;
use state_runtime::coordinator::TaskId;

use crate::events::EventStream;
use build::TaskBuilder;
use control::{Control, MailboxGateway, TaskReport};
use elements::KeyedInput;
use keyed::{KeyedOutput, TaskFailureSwitch};
pub use restore::RestoreState;
use sink::SinkTotals;

/// How one attempt of the job runs.
pub struct DataflowPlan<'a> {
    /// Builds the keyed backends.
    pub factory: &'a dyn StateBackendFactory,
    /// Where new snapshots go.
    pub storage: Arc<dyn CheckpointStorageAccess>,
    /// What the tasks start from.
    pub restore: &'a RestoreState,
    /// Instances of the sources and of the keyed operator.
    pub parallelism: u32,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// Splits of each stream.
    pub splits: u32,
    /// Records a channel holds before its producer blocks.
    pub channel_capacity: usize,
    /// Events per second of all sources (0: unthrottled).
    pub source_rate: u64,
    /// The main stream.
    pub events: EventStream,
    /// The second input.
    pub adjustments: EventStream,
}

/// What a task thread hands back.
enum TaskOutput {
    Source,
    Keyed(Box<KeyedOutput>),
    Sink(SinkTotals),
}

/// A running attempt of the job.
pub struct Dataflow {
    /// The tasks' mailboxes (the coordinator's gateway).
    pub gateway: MailboxGateway,
    /// Reports of every task.
    pub reports: Receiver<TaskReport>,
    /// Every task.
    pub tasks: Vec<TaskId>,
    /// The source tasks (triggered by the coordinator).
    pub sources: Vec<TaskId>,
    /// Highest events offset processed.
    pub progress: Arc<AtomicU64>,
    task_failure: TaskFailureSwitch,
    cancelled: Arc<AtomicBool>,
    threads: Vec<(TaskId, JoinHandle<Option<TaskOutput>>)>,
}

/// The final state of a finished attempt.
pub struct FinalState {
    /// The keyed instances' backends and operators.
    pub keyed: Vec<KeyedOutput>,
    /// The sink's sums.
    pub sink: SinkTotals,
}

impl Dataflow {
    /// Builds every task of `plan` (restoring its state) and starts their
    /// threads.
    ///
    /// # Errors
    /// Invalid parallelism, restore failures (a checkpoint that does not
    /// restore fails here, before any thread runs).
    pub fn start(plan: &DataflowPlan<'_>) -> Result<Self> {
        let p = plan.parallelism;
        if p == 0 || plan.splits == 0 {
            return Err(StateError::Config {
                key: "--parallelism".into(),
                message: "the parallelism and the number of splits must be at least 1".into(),
            });
        }
        let (builder, reports) = TaskBuilder::new(plan);
        let (sink, sink_senders) = builder.sink()?;
        // The keyed instances' gates: channels [0, p) from the events
        // sources, [p, 2p) from the adjustments sources.
        let mut keyed_tasks = Vec::new();
        let mut source_outputs: Vec<Vec<ChannelSender<KeyedInput>>> =
            (0..2 * p).map(|_| Vec::new()).collect();
        for (subtask, sink_sender) in (0..p).zip(sink_senders) {
            let (task, senders) = builder.keyed(subtask, sink_sender)?;
            for (channel, sender) in senders.into_iter().enumerate() {
                source_outputs[channel].push(sender);
            }
            keyed_tasks.push(task);
        }
        let source_tasks = source_outputs
            .into_iter()
            .enumerate()
            .map(|(index, outputs)| builder.source(index as u32, outputs))
            .collect::<Result<Vec<_>>>()?;

        let sources: Vec<TaskId> = source_tasks.iter().map(|t| t.ctx.id.clone()).collect();
        let mut tasks = sources.clone();
        tasks.extend(keyed_tasks.iter().map(|t| t.ctx.id.clone()));
        tasks.push(sink.ctx.id.clone());
        let TaskBuilder {
            reports: reports_tx,
            gateway,
            cancelled,
            progress,
            task_failure,
            ..
        } = builder;
        let mut threads = Vec::new();
        for task in source_tasks {
            let reports = reports_tx.clone();
            threads.push(spawn(task.ctx.id.clone(), reports, move || {
                task.run().map(|()| TaskOutput::Source)
            })?);
        }
        for task in keyed_tasks {
            let reports = reports_tx.clone();
            threads.push(spawn(task.ctx.id.clone(), reports, move || {
                task.run().map(|output| TaskOutput::Keyed(Box::new(output)))
            })?);
        }
        threads.push(spawn(sink.ctx.id.clone(), reports_tx, move || {
            sink.run().map(TaskOutput::Sink)
        })?);
        Ok(Self {
            gateway,
            reports,
            tasks,
            sources,
            progress,
            task_failure,
            cancelled,
            threads,
        })
    }

    /// Makes the first keyed instance that processes an events record at
    /// or past offset `at` fail.
    pub fn arm_task_failure(&self, at: u64) {
        self.task_failure.store(at, Ordering::SeqCst);
    }

    /// Stops every task at once (failover, or the job stopping dead) and
    /// waits for their threads, and for their uploads: nothing of this
    /// attempt writes to storage after it returns.
    pub fn cancel(self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.gateway.wake_all();
        for (_, thread) in self.threads {
            let _ = thread.join();
        }
    }

    /// Tells every task the job is done and collects their final state
    /// (once every task reported [`TaskReport::Finished`]).
    ///
    /// # Errors
    /// A task that ended without its output.
    pub fn finish(self) -> Result<FinalState> {
        self.gateway.broadcast(|| Control::Finish);
        let mut keyed = Vec::new();
        let mut sink = None;
        for (id, thread) in self.threads {
            match thread.join() {
                Ok(Some(TaskOutput::Keyed(output))) => keyed.push(*output),
                Ok(Some(TaskOutput::Sink(totals))) => sink = Some(totals),
                Ok(Some(TaskOutput::Source)) => {}
                Ok(None) | Err(_) => {
                    return Err(StateError::Restore(format!(
                        "task {id} ended without output"
                    )));
                }
            }
        }
        let sink =
            sink.ok_or_else(|| StateError::Restore("the sink ended without output".into()))?;
        Ok(FinalState { keyed, sink })
    }
}

/// Starts a task thread that reports how it ended (an error or a panic is
/// a task failure).
fn spawn(
    id: TaskId,
    reports: Sender<TaskReport>,
    body: impl FnOnce() -> Result<TaskOutput> + Send + 'static,
) -> Result<(TaskId, JoinHandle<Option<TaskOutput>>)> {
    let name = id.to_string();
    let task = id.clone();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(
            move || match std::panic::catch_unwind(AssertUnwindSafe(body)) {
                Ok(Ok(output)) => {
                    let _ = reports.send(TaskReport::Finished(task));
                    Some(output)
                }
                Ok(Err(error)) => {
                    let _ = reports.send(TaskReport::Failed(task, error.to_string()));
                    None
                }
                Err(_) => {
                    let _ = reports.send(TaskReport::Failed(task, "panicked".into()));
                    None
                }
            },
        )
        .map_err(|e| StateError::storage("spawn task thread", name, e))?;
    Ok((id, thread))
}
