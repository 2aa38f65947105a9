//! A source instance: reads its splits of one stream in offset order,
//! routes each record to the keyed instance that owns its key group, emits
//! watermarks, and keeps the next offset of each split in operator state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use state_api::key_group::operator_index_for_key_group;
use state_api::operator_state::OperatorStateHandle;
use state_api::{CheckpointStorageAccess, Result};
use state_runtime::CheckpointBarrier;
use state_runtime::channel::ChannelSender;
use state_runtime::coordinator::{TaskCheckpointMetrics, TaskSnapshot};
use state_runtime::operator_state::OperatorStateBackend;

use super::control::{Control, TaskContext, TaskReport};
use super::elements::{KeyedInput, StreamKind, key_group_of};
use crate::events::EventStream;

/// The operator state list of `(split, next offset)` pairs.
pub const SPLIT_OFFSETS: &str = "split-offsets";
/// Records between two watermarks.
const WATERMARK_EVERY: u64 = 32;
/// How often a finished source looks at its cancellation flag.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// One parallel instance of a source. See the [module docs](self).
pub struct SourceTask {
    /// Mailbox, reports, cancellation.
    pub ctx: TaskContext,
    /// Which stream it reads.
    pub kind: StreamKind,
    /// The stream.
    pub stream: EventStream,
    /// Its splits and the next offset of each.
    pub positions: BTreeMap<u32, u64>,
    /// Number of splits of the stream.
    pub splits: u32,
    /// One channel to each keyed instance.
    pub outputs: Vec<ChannelSender<KeyedInput>>,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// This instance.
    pub subtask: u32,
    /// Instances of the source.
    pub parallelism: u32,
    /// Where its operator state goes.
    pub storage: Arc<dyn CheckpointStorageAccess>,
    /// Records per second of this instance (`None`: unthrottled).
    pub rate: Option<f64>,
}

impl SourceTask {
    /// The split positions of instance `subtask` of `parallelism`: restored
    /// from `state` (already redistributed), or at the start every split
    /// `s` with `s % parallelism == subtask`.
    ///
    /// # Errors
    /// Corrupt restored entries.
    pub fn positions(
        state: Option<&OperatorStateBackend>,
        splits: u32,
        subtask: u32,
        parallelism: u32,
    ) -> Result<BTreeMap<u32, u64>> {
        match state {
            Some(state) => state
                .list(SPLIT_OFFSETS)
                .iter()
                .map(|entry| state_api::codec::decode::<(u32, u64)>(entry))
                .collect(),
            None => Ok((0..splits)
                .filter(|split| split % parallelism == subtask)
                .map(|split| (split, EventStream::first_offset_of_split(split, splits, 0)))
                .collect()),
        }
    }

    /// Runs until the splits are read and the driver says finish, or the
    /// job is cancelled.
    ///
    /// # Errors
    /// A keyed instance went away while the job was not cancelled.
    pub fn run(mut self) -> Result<()> {
        let started = Instant::now();
        let mut emitted = 0u64;
        let mut key_bytes = Vec::new();
        let len = self.stream.event_count();
        loop {
            if self.ctx.is_cancelled() {
                return Ok(());
            }
            while let Ok(control) = self.ctx.mailbox.try_recv() {
                if let Control::Trigger(barrier) = control {
                    self.checkpoint(barrier);
                }
            }
            let next = self
                .positions
                .iter()
                .filter(|(_, offset)| **offset < len)
                .min_by_key(|(_, offset)| **offset)
                .map(|(split, offset)| (*split, *offset));
            let Some((split, offset)) = next else {
                return self.finished();
            };
            let event = self.stream.event(offset);
            let key_group = key_group_of(event.key, self.max_parallelism, &mut key_bytes)?;
            let target = operator_index_for_key_group(
                self.max_parallelism,
                self.outputs.len() as u32,
                key_group,
            )?;
            self.emit(target as usize, KeyedInput::Record(self.kind, event));
            self.positions
                .insert(split, offset + u64::from(self.splits.max(1)));
            emitted += 1;
            if emitted.is_multiple_of(WATERMARK_EVERY) {
                for target in 0..self.outputs.len() {
                    self.emit(target, KeyedInput::Watermark(event.timestamp_ms));
                }
            }
            if let Some(rate) = self.rate {
                let due = Duration::from_secs_f64(emitted as f64 / rate);
                if let Some(ahead) = due.checked_sub(started.elapsed())
                    && ahead > Duration::from_millis(1)
                {
                    std::thread::sleep(ahead);
                }
            }
        }
    }

    /// Sends `element` to keyed instance `target`. If that instance went
    /// away, it failed and reports so itself: wait for the failover.
    fn emit(&self, target: usize, element: KeyedInput) {
        if self.outputs[target].send(element).is_err() {
            self.ctx.wait_for_cancellation();
        }
    }

    /// All splits read: ends the channels, then answers triggers (with the
    /// final offsets; there is no channel left for a barrier) until the
    /// driver says finish.
    fn finished(mut self) -> Result<()> {
        for output in std::mem::take(&mut self.outputs) {
            output.end();
        }
        self.ctx
            .report(TaskReport::SourceFinished(self.ctx.id.clone()));
        loop {
            match self.ctx.mailbox.recv_timeout(IDLE_POLL) {
                Ok(Control::Trigger(barrier)) => self.checkpoint(barrier),
                Ok(Control::Finish) => return Ok(()),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if self.ctx.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Snapshots the split offsets, acknowledges, and sends the barrier
    /// downstream (a cancellation marker if the snapshot failed).
    fn checkpoint(&mut self, barrier: CheckpointBarrier) {
        let _span =
            tracing::info_span!("checkpoint_sync", task = %self.ctx.id, checkpoint_id = barrier.id)
                .entered();
        let started = Instant::now();
        let written = self.snapshot(barrier.id);
        match written {
            Ok(snapshot) => {
                self.ctx.report(TaskReport::Ack {
                    task: self.ctx.id.clone(),
                    id: barrier.id,
                    snapshot,
                    metrics: TaskCheckpointMetrics {
                        sync_duration: started.elapsed(),
                        ..TaskCheckpointMetrics::default()
                    },
                });
                for output in &self.outputs {
                    let _ = output.send_barrier(barrier);
                }
            }
            Err(error) => {
                self.ctx
                    .decline(barrier.id, format!("split offsets not written: {error}"));
                for output in &self.outputs {
                    let _ = output.send_cancel(barrier.id);
                }
            }
        }
    }

    fn snapshot(&self, id: u64) -> Result<TaskSnapshot> {
        let handle = Self::snapshot_positions(
            &self.positions,
            self.subtask,
            self.parallelism,
            id,
            &*self.storage,
        )?;
        let snapshot = TaskSnapshot::default();
        Ok(match handle {
            Some(handle) => snapshot.with_operator_state(self.kind.source_vertex(), handle),
            None => snapshot,
        })
    }

    /// Writes the split positions of instance `subtask` of `parallelism`
    /// as operator state of checkpoint `id`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot_positions(
        positions: &BTreeMap<u32, u64>,
        subtask: u32,
        parallelism: u32,
        id: u64,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<Option<OperatorStateHandle>> {
        let mut state = OperatorStateBackend::new(subtask, parallelism);
        let list = state.list_state(SPLIT_OFFSETS);
        for entry in positions {
            list.push(state_api::codec::encode(&entry)?);
        }
        state.snapshot(id, storage)
    }
}
