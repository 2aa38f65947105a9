//! The barrier handler of a task with several input channels: decides, from
//! the barriers, cancellation markers and ends of input it sees, when the
//! task snapshots, which channels it must not read, and which channels'
//! records it must persist as channel state.
//!
//! It is a state machine without I/O or clocks: the task passes the time in,
//! reads the channels it is allowed to, and carries out the returned
//! [`HandlerAction`]s. That keeps it usable by any runtime (in-process
//! queues, network channels) and testable transition by transition.
//!
//! # Semantics (Flink's `SingleCheckpointBarrierHandler` and
//! `CheckpointBarrierTracker`)
//! * **Aligned** (exactly once): a channel whose barrier arrived is blocked;
//!   when every open channel delivered it, the task snapshots, forwards the
//!   barrier and all channels unblock.
//! * **Aligned with a timeout**: as aligned until `timestamp + timeout`;
//!   then the checkpoint switches to unaligned (the task snapshots at once,
//!   the barriers still queued are moved ahead of the records they overtake,
//!   and those records become channel state).
//! * **Unaligned**: the first barrier triggers the snapshot; every record
//!   read afterwards from a channel whose barrier has not arrived is
//!   persisted as channel state, until that barrier arrives.
//! * **At least once**: nothing blocks; the snapshot is taken when every
//!   open channel delivered the barrier. Several checkpoints may be tracked
//!   at once; completing one aborts the older ones.
//! * A barrier of a newer checkpoint aborts the unfinished one; a barrier of
//!   an older, completed, cancelled or aborted checkpoint is ignored; a
//!   cancellation marker aborts its checkpoint; the end of a channel counts
//!   as that channel's barrier for the pending checkpoint and every later
//!   one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::barrier::{AlignmentType, CheckpointBarrier};

/// At-least-once checkpoints tracked at once before the oldest are dropped
/// (Flink's `CheckpointBarrierTracker` keeps 50).
pub const MAX_TRACKED_CHECKPOINTS: usize = 50;

/// Why the handler aborted a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// A barrier of a newer checkpoint arrived first
    /// (`CHECKPOINT_DECLINED_SUBSUMED`).
    Subsumed,
    /// An upstream task cancelled it with a cancellation marker.
    CancelledUpstream,
    /// More at-least-once checkpoints were pending than the handler tracks.
    TooManyPending,
}

/// The task's side of a snapshot the handler decided to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The barrier to snapshot for and forward; switched to unaligned if
    /// the alignment timed out.
    pub barrier: CheckpointBarrier,
    /// From the coordinator's trigger to the first barrier's arrival
    /// (Flink's `checkpointStartDelayNanos`).
    pub start_delay: Duration,
    /// From the first to the last barrier, for aligned and at-least-once
    /// snapshots; for unaligned ones the alignment still runs and ends with
    /// [`HandlerAction::ChannelStateComplete`].
    pub alignment: Duration,
    /// Channels whose records are persisted as channel state until their
    /// barrier arrives (empty unless unaligned).
    pub capturing: Vec<usize>,
}

impl Trigger {
    /// Whether the snapshot is unaligned: the barrier is forwarded ahead of
    /// queued output and in-flight records are persisted.
    pub fn is_unaligned(&self) -> bool {
        self.barrier.options.alignment == AlignmentType::Unaligned
    }
}

/// What the task must do after the handler saw an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerAction {
    /// Snapshot now, then forward the barrier (as a priority event ahead of
    /// queued output when unaligned).
    Trigger(Trigger),
    /// Checkpoint `id` is abandoned: drop its snapshot or channel state if
    /// any, decline it to the coordinator and forward a cancellation marker.
    Abort {
        /// The abandoned checkpoint.
        id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// The alignment of checkpoint `id` timed out: move its barrier on
    /// `channel` ahead of the queued records; the records it overtakes are
    /// channel state of `id`.
    Prioritize {
        /// The channel whose barrier moves.
        channel: usize,
        /// The checkpoint.
        id: u64,
    },
    /// Every barrier of the unaligned checkpoint `id` arrived: its channel
    /// state is complete and the task may acknowledge.
    ChannelStateComplete {
        /// The checkpoint.
        id: u64,
        /// From the first to the last barrier (`checkpointAlignmentTime`).
        alignment: Duration,
    },
}

/// A checkpoint between its first and last barrier.
#[derive(Debug)]
struct Alignment {
    barrier: CheckpointBarrier,
    first_at: Duration,
    arrived: Vec<bool>,
    /// Triggered already: the snapshot was taken, the channels that have
    /// not delivered the barrier are being captured.
    unaligned: bool,
    /// The `checkpoint_alignment` span, open from the first to the last
    /// barrier (closed early when the checkpoint is aborted).
    span: tracing::Span,
}

impl Alignment {
    fn new(barrier: CheckpointBarrier, now: Duration, open: &[bool], unaligned: bool) -> Self {
        Self {
            barrier,
            first_at: now,
            arrived: open.iter().map(|open| !open).collect(),
            unaligned,
            span: tracing::debug_span!(
                "checkpoint_alignment",
                checkpoint_id = barrier.id,
                alignment_ns = tracing::field::Empty,
                unaligned = tracing::field::Empty,
            ),
        }
    }

    /// Records the alignment's outcome on its span, which closes when the
    /// alignment is dropped.
    fn finished(&self, duration: Duration) {
        self.span.record("alignment_ns", duration.as_nanos() as u64);
        self.span.record("unaligned", self.unaligned);
    }
}

/// The barrier handler of one task. See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use state_runtime::input::{BarrierHandler, HandlerAction};
/// use state_runtime::{CheckpointBarrier, CheckpointOptions};
///
/// let mut handler = BarrierHandler::new(2);
/// let barrier = CheckpointBarrier { id: 1, timestamp_ms: 0, options: CheckpointOptions::aligned() };
/// let now = Duration::from_millis(5);
/// assert!(handler.on_barrier(0, &barrier, now).is_empty());
/// assert!(handler.is_blocked(0));
/// let actions = handler.on_barrier(1, &barrier, now);
/// assert!(matches!(&actions[..], [HandlerAction::Trigger(t)] if t.barrier.id == 1));
/// assert!(!handler.is_blocked(0));
/// ```
#[derive(Debug)]
pub struct BarrierHandler {
    open: Vec<bool>,
    /// The exactly-once checkpoint being aligned or captured.
    current: Option<Alignment>,
    /// At-least-once checkpoints whose barriers are still arriving.
    tracked: BTreeMap<u64, Alignment>,
    /// Highest id started, cancelled, aborted or completed; barriers at or
    /// below it start nothing.
    latest_id: u64,
}

impl BarrierHandler {
    /// A handler for a task with `channels` input channels, all open.
    pub fn new(channels: usize) -> Self {
        Self {
            open: vec![true; channels],
            current: None,
            tracked: BTreeMap::new(),
            latest_id: 0,
        }
    }

    /// A handler whose checkpoints up to `id` are over (after a restore from
    /// checkpoint `id`, stale barriers are ignored).
    pub fn starting_after(channels: usize, id: u64) -> Self {
        Self {
            latest_id: id,
            ..Self::new(channels)
        }
    }

    /// Number of input channels.
    pub fn channels(&self) -> usize {
        self.open.len()
    }

    /// Whether the task must not read `channel` now (its barrier arrived
    /// and the alignment is not over).
    pub fn is_blocked(&self, channel: usize) -> bool {
        self.current
            .as_ref()
            .is_some_and(|a| !a.unaligned && a.arrived[channel])
    }

    /// The unaligned checkpoint whose channel state takes every record the
    /// task reads from `channel` now, if any.
    pub fn capturing(&self, channel: usize) -> Option<u64> {
        self.current
            .as_ref()
            .filter(|a| a.unaligned && !a.arrived[channel] && self.open[channel])
            .map(|a| a.barrier.id)
    }

    /// The checkpoint being aligned or captured, if any.
    pub fn pending_checkpoint(&self) -> Option<u64> {
        self.current.as_ref().map(|a| a.barrier.id)
    }

    /// Whether every channel has ended.
    pub fn all_ended(&self) -> bool {
        self.open.iter().all(|open| !open)
    }

    /// Whether `channel` delivered its end (its watermark is then
    /// infinite).
    pub fn has_ended(&self, channel: usize) -> bool {
        !self.open[channel]
    }

    /// When the running alignment switches to unaligned, if it can; the
    /// task calls [`on_timer`](Self::on_timer) then.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.current
            .as_ref()
            .filter(|a| !a.unaligned)
            .and_then(|a| a.barrier.alignment_deadline())
    }

    /// The task read `barrier` from `channel` at `now` (since the Unix
    /// epoch).
    pub fn on_barrier(
        &mut self,
        channel: usize,
        barrier: &CheckpointBarrier,
        now: Duration,
    ) -> Vec<HandlerAction> {
        let mut actions = self.on_timer(now);
        if barrier.options.alignment == AlignmentType::AtLeastOnce {
            self.track(channel, barrier, now, &mut actions);
            return actions;
        }
        match self.current.as_ref().map(|a| a.barrier.id) {
            Some(id) if id == barrier.id => self.arrive(channel, now, &mut actions),
            Some(id) if id > barrier.id => {}
            Some(id) => {
                self.current = None;
                actions.push(abort(id, AbortReason::Subsumed));
                self.start(channel, barrier, now, &mut actions);
            }
            None if barrier.id > self.latest_id => self.start(channel, barrier, now, &mut actions),
            None => {}
        }
        actions
    }

    /// The task read a cancellation marker of checkpoint `id` from a
    /// channel.
    pub fn on_cancel(&mut self, id: u64) -> Vec<HandlerAction> {
        let mut actions = Vec::new();
        if self.tracked.remove(&id).is_some() {
            actions.push(abort(id, AbortReason::CancelledUpstream));
            return actions;
        }
        match self.current.as_ref().map(|a| a.barrier.id) {
            Some(current) if current == id => {
                self.current = None;
                actions.push(abort(id, AbortReason::CancelledUpstream));
            }
            Some(current) if current < id => {
                self.current = None;
                actions.push(abort(current, AbortReason::Subsumed));
                actions.push(abort(id, AbortReason::CancelledUpstream));
            }
            Some(_) => {}
            None if id > self.latest_id => actions.push(abort(id, AbortReason::CancelledUpstream)),
            None => {}
        }
        self.latest_id = self.latest_id.max(id);
        actions
    }

    /// `channel` delivered its last record: it counts as having delivered
    /// the barrier of the pending checkpoint and of every later one.
    pub fn on_end_of_input(&mut self, channel: usize, now: Duration) -> Vec<HandlerAction> {
        let mut actions = self.on_timer(now);
        self.open[channel] = false;
        if self.current.is_some() {
            self.arrive(channel, now, &mut actions);
        }
        let complete: Vec<u64> = self
            .tracked
            .iter()
            .filter(|(_, a)| self.all_arrived(a))
            .map(|(id, _)| *id)
            .collect();
        if let Some(newest) = complete.last() {
            self.complete_tracked(*newest, now, &mut actions);
        }
        actions
    }

    /// Checks the alignment timeout at `now`: switches a timed-out
    /// alignment to unaligned.
    pub fn on_timer(&mut self, now: Duration) -> Vec<HandlerAction> {
        let mut actions = Vec::new();
        let Some(alignment) = self.current.as_mut() else {
            return actions;
        };
        if alignment.unaligned
            || alignment
                .barrier
                .alignment_deadline()
                .is_none_or(|d| d > now)
        {
            return actions;
        }
        alignment.unaligned = true;
        alignment.barrier = alignment.barrier.to_unaligned();
        let capturing = pending_channels(alignment, &self.open);
        actions.push(HandlerAction::Trigger(Trigger {
            barrier: alignment.barrier,
            start_delay: start_delay(&alignment.barrier, alignment.first_at),
            alignment: Duration::ZERO,
            capturing: capturing.clone(),
        }));
        let id = alignment.barrier.id;
        actions.extend(
            capturing
                .into_iter()
                .map(|channel| HandlerAction::Prioritize { channel, id }),
        );
        actions
    }

    /// The task or the coordinator abandoned checkpoint `id` (a failed
    /// snapshot, an abort notice): stop aligning for it and ignore its
    /// later barriers. Returns nothing to do: the caller knows.
    pub fn abort(&mut self, id: u64) {
        if self.current.as_ref().is_some_and(|a| a.barrier.id <= id) {
            self.current = None;
        }
        self.tracked.retain(|tracked, _| *tracked > id);
        self.latest_id = self.latest_id.max(id);
    }

    fn start(
        &mut self,
        channel: usize,
        barrier: &CheckpointBarrier,
        now: Duration,
        actions: &mut Vec<HandlerAction>,
    ) {
        self.latest_id = barrier.id;
        let timed_out = barrier.alignment_deadline().is_some_and(|d| d <= now);
        let unaligned = barrier.options.alignment == AlignmentType::Unaligned || timed_out;
        let barrier = if unaligned {
            barrier.to_unaligned()
        } else {
            *barrier
        };
        let mut alignment = Alignment::new(barrier, now, &self.open, unaligned);
        alignment.arrived[channel] = true;
        if unaligned {
            actions.push(HandlerAction::Trigger(Trigger {
                barrier,
                start_delay: start_delay(&barrier, now),
                alignment: Duration::ZERO,
                capturing: pending_channels(&alignment, &self.open),
            }));
        }
        self.current = Some(alignment);
        self.finish_if_complete(now, actions);
    }

    fn arrive(&mut self, channel: usize, now: Duration, actions: &mut Vec<HandlerAction>) {
        if let Some(alignment) = self.current.as_mut() {
            alignment.arrived[channel] = true;
        }
        self.finish_if_complete(now, actions);
    }

    fn finish_if_complete(&mut self, now: Duration, actions: &mut Vec<HandlerAction>) {
        let Some(alignment) = self.current.as_ref() else {
            return;
        };
        if !alignment.arrived.iter().all(|arrived| *arrived) {
            return;
        }
        let duration = now.saturating_sub(alignment.first_at);
        alignment.finished(duration);
        let id = alignment.barrier.id;
        actions.push(if alignment.unaligned {
            HandlerAction::ChannelStateComplete {
                id,
                alignment: duration,
            }
        } else {
            HandlerAction::Trigger(Trigger {
                barrier: alignment.barrier,
                start_delay: start_delay(&alignment.barrier, alignment.first_at),
                alignment: duration,
                capturing: Vec::new(),
            })
        });
        self.current = None;
    }

    fn track(
        &mut self,
        channel: usize,
        barrier: &CheckpointBarrier,
        now: Duration,
        actions: &mut Vec<HandlerAction>,
    ) {
        if barrier.id <= self.latest_id && !self.tracked.contains_key(&barrier.id) {
            return;
        }
        self.latest_id = self.latest_id.max(barrier.id);
        let open = &self.open;
        let alignment = self
            .tracked
            .entry(barrier.id)
            .or_insert_with(|| Alignment::new(*barrier, now, open, false));
        alignment.arrived[channel] = true;
        if self.all_arrived(&self.tracked[&barrier.id]) {
            self.complete_tracked(barrier.id, now, actions);
        }
        while self.tracked.len() > MAX_TRACKED_CHECKPOINTS {
            if let Some((id, _)) = self.tracked.pop_first() {
                actions.push(abort(id, AbortReason::TooManyPending));
            }
        }
    }

    fn complete_tracked(&mut self, id: u64, now: Duration, actions: &mut Vec<HandlerAction>) {
        let newer = self.tracked.split_off(&(id + 1));
        let older = std::mem::replace(&mut self.tracked, newer);
        for (older_id, alignment) in older {
            if older_id == id {
                let duration = now.saturating_sub(alignment.first_at);
                alignment.finished(duration);
                actions.push(HandlerAction::Trigger(Trigger {
                    barrier: alignment.barrier,
                    start_delay: start_delay(&alignment.barrier, alignment.first_at),
                    alignment: duration,
                    capturing: Vec::new(),
                }));
            } else {
                actions.push(abort(older_id, AbortReason::Subsumed));
            }
        }
    }

    fn all_arrived(&self, alignment: &Alignment) -> bool {
        alignment
            .arrived
            .iter()
            .zip(&self.open)
            .all(|(arrived, open)| *arrived || !open)
    }
}

fn abort(id: u64, reason: AbortReason) -> HandlerAction {
    HandlerAction::Abort { id, reason }
}

fn pending_channels(alignment: &Alignment, open: &[bool]) -> Vec<usize> {
    (0..open.len())
        .filter(|&channel| open[channel] && !alignment.arrived[channel])
        .collect()
}

fn start_delay(barrier: &CheckpointBarrier, first_at: Duration) -> Duration {
    first_at.saturating_sub(Duration::from_millis(barrier.timestamp_ms))
}
