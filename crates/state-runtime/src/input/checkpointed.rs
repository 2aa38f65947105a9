//! A task's input with checkpointing built in: an [`InputGate`] read under
//! a [`BarrierHandler`], with the in-flight records of unaligned
//! checkpoints persisted as they pass.
//!
//! The task loop calls [`CheckpointedInput::next`] and gets records to
//! process and checkpoint events to act on; blocking of aligned channels,
//! alignment timeouts, prioritizing timed-out barriers and writing channel
//! state happen inside.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use state_api::channel_state::ChannelStateHandle;
use state_api::{CheckpointStorageAccess, Result};

use super::handler::{AbortReason, BarrierHandler, HandlerAction, Trigger};
use crate::channel::{InputGate, Received};
use crate::channel_state::InFlightWriter;

/// Encodes a record for channel state: its key group on keyed edges, and
/// its bytes; `None` for a control element that is not channel state (a
/// watermark: its producer emits a newer one after recovery, and a
/// watermark cannot be re-routed by key group).
pub type RecordEncoder<R> = Box<dyn Fn(&R) -> Result<Option<(Option<u32>, Vec<u8>)>> + Send>;

/// What the task does next.
#[derive(Debug)]
pub enum InputEvent<R> {
    /// Process this record.
    Record {
        /// The channel it came in on.
        channel: usize,
        /// The record.
        record: R,
    },
    /// Take the synchronous snapshot now, then forward the barrier (ahead
    /// of queued output when [`Trigger::is_unaligned`]).
    Snapshot(Trigger),
    /// The unaligned checkpoint's in-flight records are written (`None`:
    /// there were none); acknowledge once the snapshot's asynchronous part
    /// is done too.
    ChannelStateWritten {
        /// The checkpoint.
        id: u64,
        /// The file, if any record was persisted.
        handle: Option<ChannelStateHandle>,
        /// From the first to the last barrier.
        alignment: Duration,
        /// Bytes persisted.
        persisted_bytes: u64,
    },
    /// Checkpoint `id` is abandoned: decline it and forward a cancellation
    /// marker.
    Abort {
        /// The checkpoint.
        id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// Every channel ended.
    Finished,
    /// An upstream producer went away without finishing (it failed).
    UpstreamFailed {
        /// Its channel.
        channel: usize,
    },
    /// Nothing arrived before the deadline or the gate was woken: look at
    /// the mailbox and call again.
    Idle,
}

/// A task's input gate under its barrier handler. See the
/// [module docs](self).
pub struct CheckpointedInput<R> {
    gate: InputGate<R>,
    handler: BarrierHandler,
    encoder: RecordEncoder<R>,
    storage: Arc<dyn CheckpointStorageAccess>,
    subtask: u32,
    parallelism: u32,
    writer: Option<InFlightWriter>,
    pending: std::collections::VecDeque<InputEvent<R>>,
}

impl<R: Clone> CheckpointedInput<R> {
    /// The input of instance `subtask` of `parallelism`, reading `gate`;
    /// checkpoints up to `restored_id` are over (the one it restored
    /// from). Channel state goes to `storage`, records encoded by
    /// `encoder`.
    pub fn new(
        gate: InputGate<R>,
        restored_id: u64,
        subtask: u32,
        parallelism: u32,
        storage: Arc<dyn CheckpointStorageAccess>,
        encoder: RecordEncoder<R>,
    ) -> Self {
        let channels = gate.channels();
        Self {
            gate,
            handler: BarrierHandler::starting_after(channels, restored_id),
            encoder,
            storage,
            subtask,
            parallelism,
            writer: None,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The gate (for its waker, or to recover channel state into it before
    /// the first read).
    pub fn gate(&self) -> &InputGate<R> {
        &self.gate
    }

    /// The barrier handler.
    pub fn handler(&self) -> &BarrierHandler {
        &self.handler
    }

    /// Checkpoint `id` was abandoned by the task or the coordinator: stop
    /// aligning or capturing for it.
    pub fn abort(&mut self, id: u64) {
        self.handler.abort(id);
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.checkpoint_id() <= id)
        {
            self.writer = None;
        }
    }

    /// The next event, waiting at most until `wait_until` (and never past
    /// an alignment deadline).
    ///
    /// # Errors
    /// Encoding a captured record, or writing channel state, failed; the
    /// checkpoint should be declined (the task may go on).
    pub fn next(&mut self, wait_until: Option<Instant>) -> Result<InputEvent<R>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let now = wall_clock();
            let actions = self.handler.on_timer(now);
            self.apply(actions, None)?;
            if !self.pending.is_empty() {
                continue;
            }
            if self.handler.all_ended() {
                return Ok(InputEvent::Finished);
            }
            let deadline = self
                .handler
                .next_deadline()
                .map(|d| Instant::now() + d.saturating_sub(now))
                .into_iter()
                .chain(wait_until)
                .min();
            let handler = &self.handler;
            let Some((channel, item)) = self.gate.recv(|c| !handler.is_blocked(c), deadline) else {
                if self.handler.all_ended() {
                    return Ok(InputEvent::Finished);
                }
                if self
                    .handler
                    .next_deadline()
                    .is_some_and(|d| d <= wall_clock())
                {
                    continue;
                }
                return Ok(InputEvent::Idle);
            };
            match item {
                Received::Record(record) => {
                    if self.handler.capturing(channel).is_some() {
                        self.capture(channel, &record)?;
                    }
                    return Ok(InputEvent::Record { channel, record });
                }
                Received::Barrier { barrier, overtaken } => {
                    let actions = self.handler.on_barrier(channel, &barrier, wall_clock());
                    self.apply(actions, Some((channel, barrier.id, overtaken)))?;
                }
                Received::Cancel(id) => {
                    let actions = self.handler.on_cancel(id);
                    self.apply(actions, None)?;
                }
                Received::EndOfInput => {
                    let actions = self.handler.on_end_of_input(channel, wall_clock());
                    self.apply(actions, None)?;
                }
                Received::Disconnected => return Ok(InputEvent::UpstreamFailed { channel }),
            }
        }
    }

    /// Carries out the handler's actions. `arrived` is the barrier just
    /// read, if any: its channel, checkpoint and the records it overtook,
    /// which are channel state of that checkpoint if it is the one being
    /// captured (a stale barrier's are not: they are read again later).
    fn apply(
        &mut self,
        actions: Vec<HandlerAction>,
        mut arrived: Option<(usize, u64, Vec<R>)>,
    ) -> Result<()> {
        for action in actions {
            match action {
                HandlerAction::Trigger(trigger) => {
                    if trigger.is_unaligned() {
                        self.writer = Some(InFlightWriter::new(
                            trigger.barrier.id,
                            self.subtask,
                            self.parallelism,
                            self.gate.channels() as u32,
                        ));
                    }
                    self.pending.push_back(InputEvent::Snapshot(trigger));
                }
                HandlerAction::Prioritize { channel, id } => {
                    self.gate.prioritize(channel, id);
                }
                HandlerAction::Abort { id, reason } => {
                    if self
                        .writer
                        .as_ref()
                        .is_some_and(|w| w.checkpoint_id() == id)
                    {
                        self.writer = None;
                    }
                    self.pending.push_back(InputEvent::Abort { id, reason });
                }
                HandlerAction::ChannelStateComplete { id, alignment } => {
                    // The records the last barrier overtook go in first.
                    self.capture_overtaken(&mut arrived)?;
                    let writer = self.writer.take().filter(|w| w.checkpoint_id() == id);
                    let persisted_bytes =
                        writer.as_ref().map_or(0, InFlightWriter::persisted_bytes);
                    let handle = match writer {
                        Some(writer) => writer.finish(&*self.storage)?,
                        None => None,
                    };
                    self.pending.push_back(InputEvent::ChannelStateWritten {
                        id,
                        handle,
                        alignment,
                        persisted_bytes,
                    });
                }
            }
        }
        self.capture_overtaken(&mut arrived)
    }

    /// Persists the records the arrived barrier overtook if its checkpoint
    /// is the one being captured.
    fn capture_overtaken(&mut self, arrived: &mut Option<(usize, u64, Vec<R>)>) -> Result<()> {
        let capturing = self.writer.as_ref().map(InFlightWriter::checkpoint_id);
        if let Some((channel, _, records)) = arrived.take_if(|(_, id, _)| Some(*id) == capturing) {
            self.capture_all(channel, &records)?;
        }
        Ok(())
    }

    fn capture_all(&mut self, channel: usize, records: &[R]) -> Result<()> {
        for record in records {
            self.capture(channel, record)?;
        }
        Ok(())
    }

    fn capture(&mut self, channel: usize, record: &R) -> Result<()> {
        if let Some(writer) = self.writer.as_mut()
            && let Some((key_group, bytes)) = (self.encoder)(record)?
        {
            writer.add(channel as u32, key_group, &bytes)?;
        }
        Ok(())
    }
}

fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
