//! # state-storage: checkpoint storage on `object_store`
//!
//! Where keyed state backends put their snapshots, and how completed
//! checkpoints are committed, retained and cleaned up, on the model of
//! Apache Flink's file-system checkpoint storage. It runs on any
//! [`object_store`] backend: local disk, memory, S3 and S3-compatible stores
//! (feature `s3`), Google Cloud Storage (`gcs`) and Azure Blob Storage
//! (`azure`).
//!
//! * [`ObjectStoreCheckpointStorage`] implements
//!   [`state_api::CheckpointStorageAccess`]: the blocking file access
//!   backends write snapshots through and restore from. Build it with
//!   [`in_memory`](ObjectStoreCheckpointStorage::in_memory),
//!   [`local`](ObjectStoreCheckpointStorage::local),
//!   [`new`](ObjectStoreCheckpointStorage::new) or from a checkpoint
//!   directory URL with [`from_url`](ObjectStoreCheckpointStorage::from_url).
//! * [`CompletedCheckpoint`] is a checkpoint's metadata: its operators'
//!   [`KeyedStateHandle`](state_api::KeyedStateHandle)s.
//! * [`CompletedCheckpointStore`] commits completed checkpoints, retains
//!   the newest `num_retained` (savepoints on top, until disposed) and
//!   deletes what subsumed checkpoints leave unused, tracking shared files in
//!   a [`SharedStateRegistry`].
//! * [`SavepointWriter`] and [`Savepoint`]: self-contained, relocatable
//!   savepoints, each in a directory of its own ([`savepoint`]).
//! * [`RestorePlan`](restore::RestorePlan): which handles each operator of a
//!   program restores, and the unclaimed state it skips when allowed
//!   ([`restore`]).
//!
//! ## Layout
//!
//! Flink's directory layout ([`layout`]), one directory per job:
//!
//! ```text
//! <base>/<job-id>/chk-<n>/<hint>-<uuid>   exclusive state of checkpoint n
//!                /chk-<n>/_metadata       commit marker and metadata of checkpoint n
//!                /shared/<hint>-<uuid>    state several checkpoints may reference
//!                /taskowned/<hint>-<uuid> state subsumption never deletes
//! ```
//!
//! File names end in a random UUID, so concurrent writers never collide.
//! [`FileHandle`](state_api::FileHandle) paths are relative to the job
//! directory (`chk-3/heap-0-<uuid>`), so a job directory can be moved or
//! read from another root.
//!
//! ## Framing
//!
//! Every state file (every file a [`FileHandle`](state_api::FileHandle)
//! names) is stored as `payload ++ footer`, the 16-byte footer being
//! `crc32c u32 LE | payload length u64 LE | "KSF1"` ([`framing`]). Output
//! streams checksum while writing; files up to [`MULTIPART_PART_SIZE`]
//! (8 MiB) go up in one put on close, larger ones as multipart uploads
//! streamed while writing. A stream dropped before `close` leaves nothing
//! visible. Whole-file reads check the footer against the bytes and the
//! handle's size and CRC-32C; range reads check the range and the stored
//! length, and rely on the format's own block checksums for the bytes.
//!
//! `_metadata` is not a state file and has no footer: it has its own format
//! (`"KSMD" | version | payload | crc32c`) whose CRC-32C covers the magic,
//! version and payload ([`metadata`]).
//!
//! ## Commit protocol
//!
//! Backends write a checkpoint's files first; the coordinator then
//! [`add`](CompletedCheckpointStore::add)s the checkpoint, which checks it
//! (ids increase, every file lies in its scope's directory, reused shared
//! files still exist) and writes `chk-<n>/_metadata` **last**, with a
//! **create-only** put (`PutMode::Create`). A checkpoint exists exactly when
//! its `_metadata` does:
//!
//! * object stores have no rename of directories (and S3 no rename at all),
//!   so a checkpoint cannot be written to a temporary place and moved into
//!   view; a single object put is the only atomic step available, and the
//!   metadata object is that step;
//! * a crash before the put leaves a `chk-<n>/` without `_metadata`, which is
//!   not a checkpoint and is swept later;
//! * the create-only put commits each checkpoint **id** at most once: of two
//!   coordinators committing the same id (a zombie leader finishing
//!   checkpoint `n` that the new leader also commits), exactly one succeeds;
//!   the other gets
//!   [`StateError::CheckpointAlreadyExists`](state_api::StateError::CheckpointAlreadyExists)
//!   instead of silently replacing metadata that may already be restored
//!   from.
//!
//! That is all the put guarantees. It does **not** fence a stale
//! coordinator: one committing an id nobody else used succeeds, and its
//! store then subsumes and deletes by its own outdated view (a registry
//! without the shared files the new leader's checkpoints registered, a
//! retention that does not know the new leader's checkpoints), which can
//! delete files those checkpoints need. The id checks of `add` know only
//! what one store instance has seen. Fencing (leader election with epochs, as
//! Flink's high-availability services provide) is the caller's job: only the
//! current leader may open a store and add or dispose checkpoints.
//!
//! ## Retention
//!
//! The store keeps the newest `num_retained` checkpoints (default 1);
//! savepoints are not counted and never subsumed, they stay until
//! [`dispose`](CompletedCheckpointStore::dispose)d. Adding a checkpoint
//! subsumes the oldest beyond the retention: its `_metadata` is deleted first
//! (it stops being a checkpoint), then the rest of `chk-<n>/`, then exactly
//! the shared files no retained checkpoint references
//! ([`SharedStateRegistry`]). The registry is rebuilt from the retained
//! metadata on [`open`](CompletedCheckpointStore::open), which also sweeps
//! `chk-<n>/` directories without `_metadata` below the latest completed
//! id. Failed deletions never corrupt the in-memory view; they stay pending
//! and are retried (see [`store`]).
//!
//! ## Threads and runtimes
//!
//! `object_store` is async, the state API blocking. Each storage owns a
//! small tokio runtime (two I/O threads) shared by its clones; every call
//! spawns its future there and blocks the calling thread until it is done.
//! So the storage works from any thread, including from inside another tokio
//! runtime (also a current-thread one), and dropping it never panics, **as
//! long as the [`ObjectStore`](object_store::ObjectStore) does its I/O on
//! the runtime that polls its futures** (the storage's own), which every
//! `object_store` backend does by default. A store given to
//! [`new`](ObjectStoreCheckpointStorage::new) that sends its I/O to another
//! runtime (for example through a `SpawnedReqwestConnector` on a handle
//! captured when the store was built) must not be called from inside that
//! runtime when it is a current-thread runtime: the call blocks the
//! runtime's only thread, the one that would have to run the I/O, and never
//! returns. See [`ObjectStoreCheckpointStorage::new`].
//!
//! ```
//! use std::sync::Arc;
//! use std::io::Write;
//! use state_api::{CheckpointStorageAccess, StateScope};
//! use state_storage::{CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore,
//!     ObjectStoreCheckpointStorage};
//!
//! let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("job-1")?);
//! let mut out = storage.create_output(1, StateScope::Exclusive, "heap-0")?;
//! out.write_all(b"state bytes").expect("write");
//! let file = out.close()?;
//! assert!(file.path.starts_with("chk-1/heap-0-"));
//! assert_eq!(&storage.read(&file)?[..], b"state bytes");
//!
//! let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1)?;
//! store.add(CompletedCheckpoint::new("job-1", 1, 0, CheckpointKind::Checkpoint))?;
//! assert_eq!(store.latest().map(|c| c.checkpoint_id), Some(1));
//! # Ok::<(), state_api::StateError>(())
//! ```

pub mod access;
mod errors;
pub mod fault;
pub mod framing;
pub mod layout;
pub mod metadata;
pub mod registry;
pub mod restore;
pub mod retry;
mod runtime;
pub mod savepoint;
pub mod store;
pub mod url;

pub use access::{MULTIPART_PART_SIZE, ObjectStoreCheckpointStorage};
pub use metadata::{CheckpointKind, CompletedCheckpoint};
pub use registry::SharedStateRegistry;
pub use savepoint::{DisposeReport, Savepoint, SavepointWriter};
pub use store::{
    CompletedCheckpointStore, DEFAULT_NUM_RETAINED, GarbageReport, Resolution,
    find_latest_completed, load_checkpoint,
};
