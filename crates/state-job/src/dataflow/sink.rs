//! The sink: one instance that adds up the window totals of every keyed
//! instance and keeps the sums in operator state, so that the job can check
//! end to end that each event was counted in exactly one closed window.

use std::sync::Arc;
use std::time::Instant;

use state_api::operator_state::OperatorStateHandle;
use state_api::{CheckpointStorageAccess, Result};
use state_runtime::coordinator::TaskSnapshot;
use state_runtime::input::{CheckpointedInput, Trigger};
use state_runtime::operator_state::OperatorStateBackend;

use super::acks::PendingAcks;
use super::control::TaskContext;
use super::task_loop::{self, InputTask};
use crate::operator::WindowTotals;

/// The sink's operator id.
pub const SINK_ID: &str = "sink";
/// The operator state list of its sums.
const SUMS: &str = "window-sums";

/// What the sink received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Window results (one per keyed instance and window with events).
    pub results: u64,
    /// Keys over all results.
    pub keys: u64,
    /// Events over all results.
    pub events: u64,
}

impl SinkTotals {
    /// The sums restored from `state` (every old instance's, added up).
    ///
    /// # Errors
    /// Corrupt entries.
    pub fn restore(state: &OperatorStateBackend) -> Result<Self> {
        let mut totals = Self::default();
        for entry in state.list(SUMS) {
            let (results, keys, events): (u64, u64, u64) = state_api::codec::decode(entry)?;
            totals.results += results;
            totals.keys += keys;
            totals.events += events;
        }
        Ok(totals)
    }

    /// Writes the sums as operator state of checkpoint `id` (the sink runs
    /// as one instance).
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot(
        &self,
        id: u64,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<Option<OperatorStateHandle>> {
        let mut state = OperatorStateBackend::new(0, 1);
        let entry = state_api::codec::encode(&(self.results, self.keys, self.events))?;
        state.list_state(SUMS).push(entry);
        state.snapshot(id, storage)
    }

    fn add(&mut self, window: &WindowTotals) {
        self.results += 1;
        self.keys += window.keys;
        self.events += window.events;
    }
}

/// The sink task. See the [module docs](self).
pub struct SinkTask {
    /// Mailbox, reports, cancellation.
    pub ctx: TaskContext,
    /// One channel per keyed instance.
    pub input: CheckpointedInput<WindowTotals>,
    /// Restored (or zero) sums.
    pub totals: SinkTotals,
    /// Where snapshots go.
    pub storage: Arc<dyn CheckpointStorageAccess>,
}

impl SinkTask {
    /// Runs until the input ended and the driver says finish, or the job
    /// is cancelled; returns the sums.
    ///
    /// # Errors
    /// Storage errors of channel state.
    pub fn run(mut self) -> Result<SinkTotals> {
        let mut acks = PendingAcks::new(SINK_ID);
        task_loop::run(&mut self, &mut acks)?;
        Ok(self.totals)
    }
}

impl InputTask for SinkTask {
    type Record = WindowTotals;

    fn ctx(&self) -> &TaskContext {
        &self.ctx
    }

    fn input(&mut self) -> &mut CheckpointedInput<WindowTotals> {
        &mut self.input
    }

    fn record(&mut self, _channel: usize, record: WindowTotals) -> Result<()> {
        self.totals.add(&record);
        Ok(())
    }

    /// Writes the sums (a few bytes, synchronously) and acknowledges once
    /// the channel state is written too.
    fn snapshot(&mut self, trigger: &Trigger, acks: &mut PendingAcks) {
        let id = trigger.barrier.id;
        let _span = tracing::info_span!("checkpoint_sync", task = %self.ctx.id, checkpoint_id = id)
            .entered();
        let started = Instant::now();
        match self.totals.snapshot(id, &*self.storage) {
            Ok(handle) => {
                let snapshot = match handle {
                    Some(handle) => TaskSnapshot::default().with_operator_state(SINK_ID, handle),
                    None => TaskSnapshot::default(),
                };
                acks.started(trigger, snapshot, false, started.elapsed(), &self.ctx);
            }
            Err(error) => self.ctx.decline(id, format!("sums not written: {error}")),
        }
    }
}
