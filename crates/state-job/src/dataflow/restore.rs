//! What an attempt of the job starts from: the handles of a completed
//! checkpoint or savepoint, by operator.

use std::sync::Arc;

use state_api::backend::check_restore_handles;
use state_api::channel_state::ChannelStateHandle;
use state_api::operator_state::OperatorStateHandle;
use state_api::{CheckpointStorageAccess, KeyGroupRange, KeyedStateHandle, Result, StateError};
use state_storage::CompletedCheckpoint;

use super::elements::StreamKind;
use super::sink::SINK_ID;
use crate::OPERATOR_ID;

/// The state every task of an attempt restores. See the
/// [module docs](self).
#[derive(Clone, Default)]
pub struct RestoreState {
    /// The checkpoint it comes from (0: none); barriers up to it are over.
    pub checkpoint_id: u64,
    /// Keyed state of the keyed operator (any parallelism).
    pub keyed: Vec<KeyedStateHandle>,
    /// Split offsets of the events sources.
    pub event_sources: Vec<OperatorStateHandle>,
    /// Split offsets of the adjustments sources.
    pub adjustment_sources: Vec<OperatorStateHandle>,
    /// The sink's sums.
    pub sink: Vec<OperatorStateHandle>,
    /// In-flight records into the keyed operator (unaligned checkpoints).
    pub keyed_channels: Vec<ChannelStateHandle>,
    /// In-flight records into the sink.
    pub sink_channels: Vec<ChannelStateHandle>,
    /// Where the files are when not in the job's checkpoint storage (a
    /// savepoint).
    pub storage: Option<Arc<dyn CheckpointStorageAccess>>,
    /// Restored keyed states the operator no longer registers, left out.
    pub skip: Vec<String>,
}

impl RestoreState {
    /// The state of `checkpoint`, checked to cover every key group and
    /// both sources (resuming without them would silently lose state or
    /// replay the streams from the start).
    ///
    /// # Errors
    /// [`StateError::Restore`] when an operator's state is missing;
    /// key-group coverage errors.
    pub fn from_checkpoint(checkpoint: &CompletedCheckpoint, max_parallelism: u32) -> Result<Self> {
        let missing = |what: &str| {
            StateError::Restore(format!(
                "{} {} has no state for {what}",
                checkpoint.kind.name(),
                checkpoint.checkpoint_id
            ))
        };
        let keyed = checkpoint
            .operators
            .get(OPERATOR_ID)
            .cloned()
            .ok_or_else(|| missing(&format!("operator '{OPERATOR_ID}'")))?;
        check_restore_handles(
            &keyed,
            KeyGroupRange::all(max_parallelism)?,
            max_parallelism,
        )?;
        let operator_state = |id: &str| checkpoint.operator_states.get(id).cloned();
        let sources = |kind: StreamKind| {
            operator_state(kind.source_vertex())
                .ok_or_else(|| missing(&format!("the split offsets of '{}'", kind.source_vertex())))
        };
        let channels = |id: &str| {
            checkpoint
                .channel_states
                .get(id)
                .cloned()
                .unwrap_or_default()
        };
        Ok(Self {
            checkpoint_id: checkpoint.checkpoint_id,
            keyed,
            event_sources: sources(StreamKind::Events)?,
            adjustment_sources: sources(StreamKind::Adjustments)?,
            sink: operator_state(SINK_ID).unwrap_or_default(),
            keyed_channels: channels(OPERATOR_ID),
            sink_channels: channels(SINK_ID),
            storage: None,
            skip: Vec::new(),
        })
    }

    /// In-flight records persisted in the checkpoint.
    pub fn in_flight_files(&self) -> usize {
        self.keyed_channels.len() + self.sink_channels.len()
    }
}
