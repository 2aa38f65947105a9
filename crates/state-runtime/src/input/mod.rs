//! The input side of a task: barrier handling over its input channels
//! ([`BarrierHandler`]), and an input gate read under it with channel state
//! written as it passes ([`CheckpointedInput`]).

mod checkpointed;
mod handler;

pub use checkpointed::{CheckpointedInput, InputEvent, RecordEncoder};
pub use handler::{AbortReason, BarrierHandler, HandlerAction, MAX_TRACKED_CHECKPOINTS, Trigger};

#[cfg(test)]
mod tests;
