//! How the coordinator reaches tasks, and what tasks report back.
//!
//! The coordinator never calls a task directly: it goes through a
//! [`TaskGateway`], which a runtime implements over its own RPC, and the
//! runtime passes acknowledgements and declines back in with
//! [`CheckpointCoordinator::acknowledge`](super::CheckpointCoordinator::acknowledge)
//! and [`decline`](super::CheckpointCoordinator::decline).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use state_api::KeyedStateHandle;
use state_api::channel_state::ChannelStateHandle;
use state_api::operator_state::OperatorStateHandle;

use crate::barrier::CheckpointBarrier;

/// One parallel instance of a job vertex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// The vertex (operator chain) name.
    pub vertex: String,
    /// The subtask index, from 0.
    pub subtask: u32,
}

impl TaskId {
    /// Subtask `subtask` of `vertex`.
    pub fn new(vertex: impl Into<String>, subtask: u32) -> Self {
        Self {
            vertex: vertex.into(),
            subtask,
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.vertex, self.subtask)
    }
}

/// A notice from the coordinator to a task about a checkpoint's outcome.
///
/// Notices may be lost, repeated or arrive late, as in Flink's
/// `CheckpointListener` contract; completion of `n` implies that every
/// lower id is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The checkpoint is committed.
    Complete(u64),
    /// The checkpoint left the retained set (after a newer one completed).
    Subsumed(u64),
    /// The checkpoint will never complete; drop what it holds.
    Aborted(u64),
}

/// The coordinator's way to tasks. Calls must not block for long: an RPC
/// implementation sends and returns.
pub trait TaskGateway: Send {
    /// Starts checkpoint `barrier.id` at a task without inputs (a source):
    /// it snapshots and emits the barrier downstream.
    fn trigger(&mut self, task: &TaskId, barrier: CheckpointBarrier);

    /// Tells a task the outcome of a checkpoint.
    fn notify(&mut self, task: &TaskId, notification: Notification);
}

/// What a task's snapshot produced, by operator id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSnapshot {
    /// Keyed state handles, by operator id.
    pub keyed: BTreeMap<String, Vec<KeyedStateHandle>>,
    /// Operator (non-keyed) state handles, by operator id (see
    /// [`OperatorStateBackend`](crate::operator_state::OperatorStateBackend)).
    pub operator: BTreeMap<String, OperatorStateHandle>,
    /// In-flight records persisted by an unaligned checkpoint, by the
    /// operator id of the task's first operator.
    pub channel: BTreeMap<String, ChannelStateHandle>,
}

impl TaskSnapshot {
    /// A snapshot with the keyed handles of `operator_id` (builder style).
    pub fn with_keyed(
        mut self,
        operator_id: impl Into<String>,
        handles: impl IntoIterator<Item = KeyedStateHandle>,
    ) -> Self {
        self.keyed
            .entry(operator_id.into())
            .or_default()
            .extend(handles);
        self
    }

    /// A snapshot with the operator state handle of `operator_id`
    /// (builder style).
    pub fn with_operator_state(
        mut self,
        operator_id: impl Into<String>,
        handle: OperatorStateHandle,
    ) -> Self {
        self.operator.insert(operator_id.into(), handle);
        self
    }

    /// A snapshot with the channel state handle of `operator_id` (builder
    /// style).
    pub fn with_channel_state(
        mut self,
        operator_id: impl Into<String>,
        handle: ChannelStateHandle,
    ) -> Self {
        self.channel.insert(operator_id.into(), handle);
        self
    }

    /// Bytes of state the snapshot references.
    pub fn state_size(&self) -> u64 {
        let keyed: u64 = self
            .keyed
            .values()
            .flatten()
            .map(KeyedStateHandle::state_size)
            .sum();
        let operator: u64 = self
            .operator
            .values()
            .map(OperatorStateHandle::state_size)
            .sum();
        let channel: u64 = self.channel.values().map(|h| h.file.size).sum();
        keyed + operator + channel
    }
}

/// A task's measurements of one checkpoint (Flink's per-subtask
/// `CheckpointMetrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCheckpointMetrics {
    /// From the trigger to the first barrier at the task.
    pub start_delay: Duration,
    /// From the first to the last barrier.
    pub alignment: Duration,
    /// The synchronous snapshot phase.
    pub sync_duration: Duration,
    /// The asynchronous phase (for unaligned checkpoints including the
    /// wait for the last barrier and the channel state writes).
    pub async_duration: Duration,
    /// Bytes of in-flight records persisted as channel state.
    pub persisted_in_flight_bytes: u64,
    /// Whether the snapshot ended up unaligned.
    pub unaligned: bool,
}
