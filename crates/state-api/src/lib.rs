//! # state-api: the contracts of pluggable keyed state backends
//!
//! This crate is the design of the state layer, on the model of Apache Flink's
//! keyed state backends. It holds contracts only; no backend lives here, and it
//! depends on neither RocksDB nor `im`.
//!
//! * [`key_group`]: keys map to one of `max_parallelism` key groups with a
//!   stable hash; each operator instance owns a contiguous [`KeyGroupRange`].
//!   Key groups are what snapshots are organised by and what rescaling moves.
//! * [`descriptor`] and [`state`]: Value, List, Map, Reducing and Aggregating
//!   state, registered by name with fixed types, used through typed handles.
//!   Every state lives in a namespace ([`VoidNamespace`] when not windowed).
//! * [`backend`]: the object-safe [`KeyedStateBackend`] trait on encoded
//!   bytes, what every backend implements, and [`StateBackendFactory`], how
//!   runtimes build one for a key-group range, restoring from snapshots taken
//!   at any parallelism.
//! * [`snapshot`]: two-phase snapshots. The synchronous phase freezes state and
//!   returns an [`AsyncSnapshot`] that writes it on any thread and yields a
//!   serializable [`KeyedStateHandle`].
//! * [`lifecycle`]: the checkpoint lifecycle contract (notices may be
//!   lost, repeated or reordered; who owns and deletes which file when).
//! * [`storage`]: the blocking file access backends need from checkpoint
//!   storage ([`CheckpointStorageAccess`]), with checksums on every file.
//! * [`format`](mod@format): the key-group snapshot format every backend can read: one
//!   block per key group, each with its own checksum and offset.
//! * [`channel_state`]: handles and file format of the in-flight records
//!   unaligned checkpoints persist.
//! * [`operator_state`]: handles and file format of operator (non-keyed)
//!   state, which the runtime crate's operator state backend writes.
//! * [`timers`]: event-time and processing-time timers, kept by the keyed
//!   backend with its state ([`timers::TimerService`]).
//! * [`ttl`]: state time-to-live ([`ttl::StateTtlConfig`] on any
//!   descriptor).
//! * [`registry`]: the registration rules every backend applies.
//! * [`codec`]: the one binary encoding (postcard 1.x) and the list encoding.
//! * [`error`]: the one error type, [`StateError`].
//! * `conformance` (feature `conformance`): the test suite every backend and
//!   wrapper runs.
//!
//! ```
//! use state_api::key_group::{key_group_range_for_operator, default_max_parallelism};
//! let max_parallelism = default_max_parallelism(4);
//! let range = key_group_range_for_operator(max_parallelism, 4, 1).unwrap();
//! assert_eq!((range.start(), range.end_exclusive()), (32, 64));
//! ```

pub mod backend;
pub mod channel_state;
pub mod codec;
pub mod descriptor;
pub mod error;
pub mod format;
pub mod key_group;
pub mod lifecycle;
pub mod operator_state;
pub mod registry;
pub mod short_bytes;
pub mod snapshot;
mod stack_encoder;
pub mod state;
pub mod storage;
pub mod timers;
pub mod ttl;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{BackendContext, KeyedStateBackend, StateBackendFactory, StateId};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateKind, StateMeta, StateRegistration, ValueStateDescriptor,
    VoidNamespace,
};
pub use error::{Result, StateError};
pub use key_group::{KeyGroup, KeyGroupRange};
pub use snapshot::{
    AsyncSnapshot, ChangelogPart, ChangelogSegment, ChangelogStateHandle, FileHandle,
    IncrementalStateHandle, KeyGroupsStateHandle, KeyedStateHandle, NamedFile, SnapshotOptions,
    SnapshotResult, SnapshotType, StateScope,
};
pub use state::{
    AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState,
};
pub use storage::{CheckpointOutputStream, CheckpointStorageAccess};
