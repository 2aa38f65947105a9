//! The input side of a task: barrier handling over its input channels.

mod handler;

pub use handler::{AbortReason, BarrierHandler, HandlerAction, MAX_TRACKED_CHECKPOINTS, Trigger};

#[cfg(test)]
mod tests;
