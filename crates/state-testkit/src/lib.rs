//! # state-testkit: the checkpoint lifecycle's ugly cases, as a test
//!
//! Every backend's test suite runs the same seeded random lifecycle
//! ([`schedule`]): state changes, checkpoints that commit or abort, notices
//! delivered late, reordered, twice or never, storage that fails or lies
//! ([`state_storage::fault`]), and backend-specific actions (a changelog
//! materialization). After every few steps every retained checkpoint is
//! restored into a fresh backend and compared with the state it was taken
//! of; at the end, after the backend is gone and garbage is collected,
//! storage must hold exactly what the retained checkpoints reference.
//!
//! * [`rng`]: a small seeded generator; a failing seed replays exactly.
//! * [`workload`]: the state the schedules write and how it is compared.
//! * [`storage`]: checkpoint storage on a fault-injecting in-memory store.
//! * [`schedule`]: the lifecycle itself.
//! * [`fuzz`]: the decoders reachable from stored bytes, as fuzz entry
//!   points (the `cargo fuzz` targets and the corpus replay test use them).

pub mod fuzz;
pub mod rng;
pub mod schedule;
pub mod storage;
pub mod workload;
