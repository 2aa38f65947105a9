//! The checkpoint protocol around the keyed state backends, as a library a
//! stream runtime embeds: numbered barriers that travel with the records,
//! the barrier handler that aligns a task's inputs (exactly once, at least
//! once, unaligned, aligned with a timeout), and in-process channels whose
//! barriers can overtake queued records, which then become channel state.
//!
//! Transport-agnostic where it matters: [`input::BarrierHandler`] is a state
//! machine that sees events and returns actions, so a runtime with network
//! channels uses it as the in-process [`channel`] does.

pub mod barrier;
pub mod channel;
pub mod coordinator;
pub mod input;

pub use barrier::{AlignmentType, CheckpointBarrier, CheckpointOptions, CheckpointingMode};
