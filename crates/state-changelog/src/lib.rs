//! # state-changelog: log-based incremental checkpoints for any backend
//!
//! [`ChangelogKeyedStateBackend`] wraps any [`KeyedStateBackend`](state_api::KeyedStateBackend) (heap,
//! RocksDB) as Flink's changelog state backend does (FLIP-158, "generic
//! log-based incremental checkpoints"):
//!
//! * **Write path.** Every mutation goes to the wrapped backend and is
//!   appended to a log ([`record`]): key group, state, operation, key,
//!   namespace and payload, with an implicit sequence number. Reads go
//!   straight to the wrapped backend.
//! * **DSTL.** The [`ChangelogUploader`] uploads the log continuously to
//!   checkpoint storage (`shared/`): pre-emptively once a backend buffered
//!   more than [`DstlConfig::preemptive_persist_threshold`], in batches that
//!   group the segments of every backend sharing the uploader into one file
//!   ([`segment`] format, checksummed), on several threads, with retries,
//!   timeouts and back-pressure.
//! * **Checkpoints.** The synchronous phase notes the log position and asks
//!   for the tail to be persisted; the handle
//!   ([`ChangelogStateHandle`](state_api::ChangelogStateHandle)) is the last
//!   materialized snapshot plus the log segments after it. Its cost follows
//!   the changes since the last checkpoint, not the state size.
//! * **Materialization.** Periodically (default every 10 minutes) the
//!   wrapped backend is snapshotted in the background into `shared/`; once
//!   that succeeds it is the base of later checkpoints and older log
//!   segments are truncated. Unchanged state is not materialized again;
//!   after [`MaterializationConfig::max_failures_allowed`] consecutive
//!   failures the backend fails its operations, so the job fails over.
//! * **Clean-up.** Log files and materializations that no checkpoint
//!   referenced are deleted by the backend; once a completed checkpoint
//!   references them, the checkpoint store's shared-state registry deletes
//!   them when no retained checkpoint does.
//! * **Restore.** The wrapped backend restores the materialized part, then
//!   the log is replayed from the materialization's position to the
//!   checkpoint's, dropping records of key groups outside the new range.
//!
//! # Costs and limits (as in Flink)
//! * Every change is written twice (backend and log) and uploaded; the log
//!   plus the materialization take more storage than either alone.
//! * Recovery replays the log: the longer the materialization interval, the
//!   longer recovery takes.
//! * The first checkpoint of a new backend, and of one restored from another
//!   format or at another parallelism, materializes (uploads the full state).
//! * Reducing and aggregating updates are logged as the folded value, and
//!   merges as their result, so replay needs no user function.
//! * Savepoints are the wrapped backend's own (canonical or native).

pub mod backend;
pub mod config;
pub mod factory;
mod log;
mod materialize;
mod metrics;
pub mod record;
mod restore;
pub mod segment;
pub mod upload;

pub use backend::{BACKEND_NAME, ChangelogKeyedStateBackend, ChangelogStats};
pub use config::{DstlConfig, MaterializationConfig};
pub use factory::ChangelogBackendFactory;
pub use upload::{ChangelogUploader, UploaderStats};
