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
pub mod control;
pub mod elements;
pub mod keyed;
pub mod restore;
pub mod sink;
pub mod source;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use state_api::backend::handles_for_range;
use state_api::key_group::key_group_range_for_operator;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, Result, StateBackendFactory, StateError,
};
use state_runtime::channel::{ChannelSender, InputGate};
use state_runtime::channel_state;
use state_runtime::coordinator::TaskId;
use state_runtime::input::{CheckpointedInput, RecordEncoder};
use state_runtime::operator_state::OperatorStateBackend;

use crate::OPERATOR_ID;
use crate::events::EventStream;
use crate::operator::{KeyedAggregator, WindowTotals};
use control::{Control, MailboxAddress, MailboxGateway, TaskContext, TaskReport};
use elements::{KeyedInput, StreamKind, decode_totals, encode_totals};
use keyed::{KeyedOutput, KeyedTask, TaskFailureSwitch};
pub use restore::RestoreState;
use sink::{SINK_ID, SinkTask, SinkTotals};
use source::SourceTask;

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
        let (reports_tx, reports) = mpsc::channel();
        let gateway = MailboxGateway::default();
        let cancelled = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let restore_storage = plan
            .restore
            .storage
            .clone()
            .unwrap_or_else(|| Arc::clone(&plan.storage));
        let context = |id: TaskId| -> (TaskContext, Sender<Control>) {
            let (sender, mailbox) = mpsc::channel();
            let ctx = TaskContext {
                id,
                mailbox,
                mailbox_sender: sender.clone(),
                reports: reports_tx.clone(),
                cancelled: Arc::clone(&cancelled),
            };
            (ctx, sender)
        };

        // The sink's gate (one channel per keyed instance).
        let (sink_gate, sink_senders) = InputGate::new(p as usize, plan.channel_capacity);
        for recovered in
            channel_state::recover(&plan.restore.sink_channels, 0, 1, None, &*restore_storage)?
        {
            let records = recovered
                .records
                .iter()
                .map(|bytes| decode_totals(bytes))
                .collect::<Result<Vec<_>>>()?;
            sink_gate.recover(recovered.channel as usize % p as usize, records);
        }
        let sink_state =
            OperatorStateBackend::restore(&plan.restore.sink, 0, 1, &*restore_storage)?;
        let sink_id = TaskId::new(SINK_ID, 0);
        let (ctx, sender) = context(sink_id.clone());
        let waker = sink_gate.waker();
        gateway.register(
            sink_id.clone(),
            MailboxAddress {
                sender,
                waker: Some(Box::new(move || waker.wake())),
            },
        );
        let totals_encoder: RecordEncoder<WindowTotals> =
            Box::new(|totals| Ok(Some((None, encode_totals(totals)))));
        let sink = SinkTask {
            ctx,
            input: CheckpointedInput::new(
                sink_gate,
                plan.restore.checkpoint_id,
                0,
                1,
                Arc::clone(&plan.storage),
                totals_encoder,
            ),
            totals: SinkTotals::restore(&sink_state)?,
            storage: Arc::clone(&plan.storage),
        };

        // The keyed instances' gates: channels [0, p) from the events
        // sources, [p, 2p) from the adjustments sources.
        let task_failure: TaskFailureSwitch = Arc::new(AtomicU64::new(u64::MAX));
        let mut keyed_tasks = Vec::new();
        let mut source_outputs: Vec<Vec<ChannelSender<KeyedInput>>> =
            (0..2 * p).map(|_| Vec::new()).collect();
        for (subtask, sink_sender) in (0..p).zip(sink_senders) {
            let range = key_group_range_for_operator(plan.max_parallelism, p, subtask)?;
            let mut backend = plan.factory.create(BackendContext {
                operator: format!("{OPERATOR_ID}-{subtask}"),
                max_parallelism: plan.max_parallelism,
                key_group_range: range,
                restore: handles_for_range(&plan.restore.keyed, range),
                storage: Arc::clone(&plan.storage),
                restore_storage: plan.restore.storage.clone(),
                skip_restored_states: plan.restore.skip.clone(),
            })?;
            let operator = KeyedAggregator::register(&mut *backend)?;
            let (gate, senders) = InputGate::new(2 * p as usize, plan.channel_capacity);
            recover_keyed_channels(plan, subtask, range, &gate, &*restore_storage)?;
            for (channel, sender) in senders.into_iter().enumerate() {
                source_outputs[channel].push(sender);
            }
            let id = TaskId::new(OPERATOR_ID, subtask);
            let (ctx, sender) = context(id.clone());
            let waker = gate.waker();
            gateway.register(
                id,
                MailboxAddress {
                    sender,
                    waker: Some(Box::new(move || waker.wake())),
                },
            );
            let max_parallelism = plan.max_parallelism;
            let encoder: RecordEncoder<KeyedInput> =
                Box::new(move |element| element.encode(max_parallelism));
            keyed_tasks.push(KeyedTask {
                ctx,
                backend,
                operator,
                input: CheckpointedInput::new(
                    gate,
                    plan.restore.checkpoint_id,
                    subtask,
                    p,
                    Arc::clone(&plan.storage),
                    encoder,
                ),
                output: Some(sink_sender),
                storage: Arc::clone(&plan.storage),
                failure: Arc::clone(&task_failure),
                progress: Arc::clone(&progress),
            });
        }

        // The sources: output channel c of source instance s of stream k
        // is input channel k * p + s of every keyed instance.
        let mut source_tasks = Vec::new();
        for (index, outputs) in source_outputs.into_iter().enumerate() {
            let (kind, stream, handles, share) = if (index as u32) < p {
                let handles = &plan.restore.event_sources;
                (StreamKind::Events, plan.events.clone(), handles, 0.8)
            } else {
                let handles = &plan.restore.adjustment_sources;
                (
                    StreamKind::Adjustments,
                    plan.adjustments.clone(),
                    handles,
                    0.2,
                )
            };
            let subtask = index as u32 % p;
            let state = if handles.is_empty() {
                None
            } else {
                Some(OperatorStateBackend::restore(
                    handles,
                    subtask,
                    p,
                    &*restore_storage,
                )?)
            };
            let positions = SourceTask::positions(state.as_ref(), plan.splits, subtask, p)?;
            let id = TaskId::new(kind.source_vertex(), subtask);
            let (ctx, sender) = context(id.clone());
            gateway.register(
                id,
                MailboxAddress {
                    sender,
                    waker: None,
                },
            );
            source_tasks.push(SourceTask {
                ctx,
                kind,
                stream,
                positions,
                splits: plan.splits,
                outputs,
                max_parallelism: plan.max_parallelism,
                subtask,
                parallelism: p,
                storage: Arc::clone(&plan.storage),
                rate: (plan.source_rate > 0)
                    .then(|| plan.source_rate as f64 * share / f64::from(p)),
            });
        }

        let sources: Vec<TaskId> = source_tasks.iter().map(|t| t.ctx.id.clone()).collect();
        let mut tasks = sources.clone();
        tasks.extend(keyed_tasks.iter().map(|t| t.ctx.id.clone()));
        tasks.push(sink_id);
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

/// Puts the in-flight records keyed instance `subtask` owns (by key
/// group, from every old instance) at the head of its input channels: each
/// old channel's records stay in order, on a channel of the same stream.
fn recover_keyed_channels(
    plan: &DataflowPlan<'_>,
    subtask: u32,
    range: KeyGroupRange,
    gate: &InputGate<KeyedInput>,
    storage: &dyn CheckpointStorageAccess,
) -> Result<()> {
    let p = plan.parallelism as usize;
    let recovered = channel_state::recover(
        &plan.restore.keyed_channels,
        subtask,
        plan.parallelism,
        Some(range),
        storage,
    )?;
    for channel in recovered {
        let records = channel
            .records
            .iter()
            .map(|bytes| KeyedInput::decode(bytes))
            .collect::<Result<Vec<_>>>()?;
        let Some(KeyedInput::Record(kind, _)) = records.first() else {
            continue;
        };
        let base = match kind {
            StreamKind::Events => 0,
            StreamKind::Adjustments => p,
        };
        gate.recover(base + channel.channel as usize % p, records);
    }
    Ok(())
}
