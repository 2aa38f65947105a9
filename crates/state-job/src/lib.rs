//! The main job of the workspace, as a library so that its pieces are tested
//! and reusable: a generated event stream ([`events`]), a keyed operator using
//! every kind of state ([`operator`]), parallel subtasks with two-phase
//! checkpoints ([`pipeline`]) and the driver that fails and recovers the job
//! ([`job`]).
//!
//! ```text
//! cargo run --release -p state-job -- --backend heap --keys 10000 --parallelism 2 --restore-parallelism 3
//! cargo run --release -p state-job -- --backend rocksdb --local-dir /tmp/state-job-rocksdb
//! cargo run --release -p state-job -- --config config/changelog-rocksdb.yaml
//! ```

pub mod coordinator;
pub mod events;
pub mod job;
pub mod operator;
pub mod pipeline;

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
