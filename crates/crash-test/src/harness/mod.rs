//! The crash test's job: the keyed operator of the main job in one thread
//! ([`pipeline`]) with a small coordinator that checkpoints every so many
//! events ([`coordinator`]). A single thread makes every life's state a
//! pure function of the source offset, so a restore is compared with a
//! model key by key; the main job's multi-task dataflow is tested by its
//! own exactly-once check.

pub(crate) mod coordinator;
pub(crate) mod pipeline;

use state_api::{Result, StateError};
use state_job::events::EventStream;
use state_job::operator::WINDOW_MS;
use state_storage::CompletedCheckpoint;

/// The operator id under which the keyed state is stored.
pub(crate) const OPERATOR_ID: &str = "keyed-aggregator";
/// Master-state key of the source offset in checkpoint metadata.
pub(crate) const SOURCE_OFFSET: &str = "source-offset";

/// The event-time window of the last event before `offset`, which a
/// pipeline resuming at `offset` continues (`None` at the start).
pub(crate) fn resume_window(stream: &EventStream, offset: u64) -> Option<u64> {
    offset
        .checked_sub(1)
        .map(|o| stream.event(o).timestamp_ms / WINDOW_MS)
}

/// The source offset a checkpoint covers: events before it are in its
/// state.
///
/// # Errors
/// [`StateError::Restore`] when the checkpoint has none; codec errors.
pub(crate) fn source_offset(checkpoint: &CompletedCheckpoint) -> Result<u64> {
    let bytes = checkpoint.master_states.get(SOURCE_OFFSET).ok_or_else(|| {
        StateError::Restore(format!(
            "checkpoint {} has no '{SOURCE_OFFSET}' master state",
            checkpoint.checkpoint_id
        ))
    })?;
    state_api::codec::decode(bytes)
}
