//! The main job of the workspace, as a library so that its pieces are tested
//! and reusable: a multi-task keyed dataflow on `state-runtime`
//! ([`dataflow`]: sources with split offsets in operator state, a key-by
//! shuffle over bounded channels, a two-input keyed operator, a sink; one
//! thread per instance; barriers in band), driven by the checkpoint
//! coordinator ([`driver`]), failed on purpose and restored at alternating
//! parallelism ([`job`]), and checked against a run without failure
//! ([`verify`]).
//!
//! ```text
//! cargo run --release -p state-job -- --backend heap --keys 10000 --parallelism 2 --restore-parallelism 3
//! cargo run --release -p state-job -- --checkpointing unaligned --source-rate 200000
//! cargo run --release -p state-job -- --config config/changelog-rocksdb.yaml
//! ```

pub mod dataflow;
pub mod driver;
pub mod events;
pub mod job;
pub mod operator;
pub mod options;
pub mod savepoint;
pub mod verify;

/// The operator id under which the keyed operator's state is stored.
pub const OPERATOR_ID: &str = "keyed-aggregator";

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
