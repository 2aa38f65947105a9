//! Builds one attempt's tasks from its [`DataflowPlan`]: each task's
//! context and mailbox, its restored state (keyed state by key group,
//! split offsets redistributed, in-flight records re-routed into its input
//! gate) and its channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{self, Receiver, Sender};

use state_api::backend::handles_for_range;
use state_api::key_group::key_group_range_for_operator;
use state_api::{BackendContext, CheckpointStorageAccess, KeyGroupRange, Result};
use state_runtime::channel::{ChannelSender, InputGate};
use state_runtime::channel_state;
use state_runtime::coordinator::TaskId;
use state_runtime::input::{CheckpointedInput, RecordEncoder};
use state_runtime::operator_state::OperatorStateBackend;

use super::DataflowPlan;
use super::control::{MailboxAddress, MailboxGateway, TaskContext, TaskReport, Waker};
use super::elements::{KeyedInput, StreamKind, decode_totals, encode_totals};
use super::keyed::{KeyedTask, TaskFailureSwitch};
use super::sink::{SINK_ID, SinkTask, SinkTotals};
use super::source::SourceTask;
use crate::OPERATOR_ID;
use crate::operator::{KeyedAggregator, WindowTotals};

/// What the tasks of one attempt share, and the plan they are built from.
pub(super) struct TaskBuilder<'p, 'a> {
    plan: &'p DataflowPlan<'a>,
    /// Where restored state is read.
    restore_storage: Arc<dyn CheckpointStorageAccess>,
    pub(super) reports: Sender<TaskReport>,
    pub(super) gateway: MailboxGateway,
    pub(super) cancelled: Arc<AtomicBool>,
    pub(super) progress: Arc<AtomicU64>,
    pub(super) task_failure: TaskFailureSwitch,
}

impl<'p, 'a> TaskBuilder<'p, 'a> {
    /// A builder for `plan`, and the receiver of its tasks' reports.
    pub(super) fn new(plan: &'p DataflowPlan<'a>) -> (Self, Receiver<TaskReport>) {
        let (reports, receiver) = mpsc::channel();
        let restore_storage = plan
            .restore
            .storage
            .clone()
            .unwrap_or_else(|| Arc::clone(&plan.storage));
        let builder = Self {
            plan,
            restore_storage,
            reports,
            gateway: MailboxGateway::default(),
            cancelled: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(AtomicU64::new(0)),
            task_failure: Arc::new(AtomicU64::new(u64::MAX)),
        };
        (builder, receiver)
    }

    /// A task's context, its mailbox registered with the gateway.
    fn context(&self, id: TaskId, waker: Option<Waker>) -> TaskContext {
        let (sender, mailbox) = mpsc::channel();
        self.gateway.register(
            id.clone(),
            MailboxAddress {
                sender: sender.clone(),
                waker,
            },
        );
        TaskContext {
            id,
            mailbox,
            mailbox_sender: sender,
            reports: self.reports.clone(),
            cancelled: Arc::clone(&self.cancelled),
        }
    }

    /// The sink (one instance) with its restored sums and in-flight
    /// records, and the senders of its gate (one per keyed instance).
    pub(super) fn sink(&self) -> Result<(SinkTask, Vec<ChannelSender<WindowTotals>>)> {
        let plan = self.plan;
        let p = plan.parallelism as usize;
        let (gate, senders) = InputGate::new(p, plan.channel_capacity);
        let storage = &*self.restore_storage;
        for recovered in channel_state::recover(&plan.restore.sink_channels, 0, 1, None, storage)? {
            let records = recovered
                .records
                .iter()
                .map(|bytes| decode_totals(bytes))
                .collect::<Result<Vec<_>>>()?;
            gate.recover(recovered.channel as usize % p, records);
        }
        let state = OperatorStateBackend::restore(&plan.restore.sink, 0, 1, storage)?;
        let waker = gate.waker();
        let ctx = self.context(
            TaskId::new(SINK_ID, 0),
            Some(Box::new(move || waker.wake())),
        );
        let encoder: RecordEncoder<WindowTotals> =
            Box::new(|totals| Ok(Some((None, encode_totals(totals)))));
        let sink = SinkTask {
            ctx,
            input: CheckpointedInput::new(
                gate,
                plan.restore.checkpoint_id,
                0,
                1,
                Arc::clone(&plan.storage),
                encoder,
            ),
            totals: SinkTotals::restore(&state)?,
            storage: Arc::clone(&plan.storage),
        };
        Ok((sink, senders))
    }

    /// Keyed instance `subtask` with its restored backend and in-flight
    /// records, writing to `sink`, and the senders of its gate: channel
    /// `k * p + s` is source instance `s` of stream `k`.
    pub(super) fn keyed(
        &self,
        subtask: u32,
        sink: ChannelSender<WindowTotals>,
    ) -> Result<(KeyedTask, Vec<ChannelSender<KeyedInput>>)> {
        let plan = self.plan;
        let p = plan.parallelism;
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
        self.recover_keyed_channels(subtask, range, &gate)?;
        let waker = gate.waker();
        let ctx = self.context(
            TaskId::new(OPERATOR_ID, subtask),
            Some(Box::new(move || waker.wake())),
        );
        let max_parallelism = plan.max_parallelism;
        let encoder: RecordEncoder<KeyedInput> =
            Box::new(move |element| element.encode(max_parallelism));
        let task = KeyedTask {
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
            output: Some(sink),
            storage: Arc::clone(&plan.storage),
            failure: Arc::clone(&self.task_failure),
            progress: Arc::clone(&self.progress),
        };
        Ok((task, senders))
    }

    /// Source `index` (events sources first, then adjustments sources)
    /// with its restored split offsets, writing to `outputs` (one channel
    /// per keyed instance).
    pub(super) fn source(
        &self,
        index: u32,
        outputs: Vec<ChannelSender<KeyedInput>>,
    ) -> Result<SourceTask> {
        let plan = self.plan;
        let p = plan.parallelism;
        let (kind, stream, handles, share) = if index < p {
            let handles = &plan.restore.event_sources;
            (StreamKind::Events, plan.events.clone(), handles, 0.8)
        } else {
            let handles = &plan.restore.adjustment_sources;
            let stream = plan.adjustments.clone();
            (StreamKind::Adjustments, stream, handles, 0.2)
        };
        let subtask = index % p;
        let state = if handles.is_empty() {
            None
        } else {
            let storage = &*self.restore_storage;
            Some(OperatorStateBackend::restore(handles, subtask, p, storage)?)
        };
        let positions = SourceTask::positions(state.as_ref(), plan.splits, subtask, p)?;
        Ok(SourceTask {
            ctx: self.context(TaskId::new(kind.source_vertex(), subtask), None),
            kind,
            stream,
            positions,
            splits: plan.splits,
            outputs,
            max_parallelism: plan.max_parallelism,
            subtask,
            parallelism: p,
            storage: Arc::clone(&plan.storage),
            rate: (plan.source_rate > 0).then(|| plan.source_rate as f64 * share / f64::from(p)),
        })
    }

    /// Puts the in-flight records keyed instance `subtask` owns (by key
    /// group, from every old instance) at the head of its input channels:
    /// each old channel's records stay in order, on a channel of the same
    /// stream.
    fn recover_keyed_channels(
        &self,
        subtask: u32,
        range: KeyGroupRange,
        gate: &InputGate<KeyedInput>,
    ) -> Result<()> {
        let plan = self.plan;
        let p = plan.parallelism as usize;
        let recovered = channel_state::recover(
            &plan.restore.keyed_channels,
            subtask,
            plan.parallelism,
            Some(range),
            &*self.restore_storage,
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
}
