//! Snapshots: options, the asynchronous part, and the handles they produce.
//!
//! A snapshot has two phases, as in Flink.
//! [`KeyedStateBackend::snapshot`](crate::KeyedStateBackend::snapshot) is the
//! synchronous phase on the task
//! thread; it returns an [`AsyncSnapshot`], a task that may run on any thread
//! while the owner keeps reading and writing, and that yields a serializable
//! [`KeyedStateHandle`] describing where the state went.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::descriptor::StateMeta;
use crate::error::Result;
use crate::key_group::KeyGroupRange;

/// Which kind of snapshot to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SnapshotType {
    /// A regular checkpoint; incremental where the backend supports and
    /// enables it.
    Checkpoint,
    /// A checkpoint that shares no files with earlier ones (breaks an
    /// incremental chain).
    FullCheckpoint,
    /// A user-triggered savepoint: self-contained and relocatable.
    Savepoint(SavepointFormat),
}

/// Format of a savepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavepointFormat {
    /// The key-group-ordered format every backend reads and writes.
    Canonical,
    /// The backend's own files; restores only into the same backend.
    Native,
}

/// Options of one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Checkpoint, full checkpoint or savepoint.
    pub snapshot_type: SnapshotType,
    /// Wall-clock time the checkpoint was triggered, in ms since the epoch.
    pub timestamp_ms: u64,
}

impl SnapshotOptions {
    /// Options of a regular checkpoint triggered at `timestamp_ms`.
    pub fn checkpoint(timestamp_ms: u64) -> Self {
        Self {
            snapshot_type: SnapshotType::Checkpoint,
            timestamp_ms,
        }
    }
}

/// Where a file of checkpoint state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateScope {
    /// Belongs to exactly one checkpoint: `chk-<n>/`.
    Exclusive,
    /// May be referenced by several checkpoints: `shared/`.
    Shared,
    /// Owned by the task, never deleted by checkpoint subsumption: `taskowned/`.
    TaskOwned,
}

/// One file in checkpoint storage, as written by a
/// [`CheckpointOutputStream`](crate::storage::CheckpointOutputStream).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHandle {
    /// Path relative to the storage root (the job directory), `/`-separated.
    pub path: String,
    /// Scope the file was written in.
    pub scope: StateScope,
    /// Length of the payload in bytes (without the storage's checksum footer).
    pub size: u64,
    /// CRC-32C of the payload.
    pub crc32c: u32,
}

impl fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({} B, crc {:08x})", self.path, self.size, self.crc32c)
    }
}

/// A full snapshot of a key-group range in the key-group format
/// ([`crate::format`]): one file plus the offset of every key group's block,
/// so a restore of any key-group subset reads only what it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyGroupsStateHandle {
    /// Backend that wrote it (informational; every backend reads the format).
    pub backend: String,
    /// Checkpoint (or savepoint) id.
    pub checkpoint_id: u64,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Key groups in the file.
    pub key_group_range: KeyGroupRange,
    /// The file.
    pub file: FileHandle,
    /// Offset of each key group's block, one per key group of the range.
    pub key_group_offsets: Vec<u64>,
}

/// A file of a snapshot under the name the backend gave it locally (for
/// RocksDB: `000042.sst`, `MANIFEST-000005`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFile {
    /// The backend's local file name.
    pub name: String,
    /// Where it is in checkpoint storage.
    pub file: FileHandle,
}

/// A snapshot made of a backend's own files, some shared with earlier
/// checkpoints (RocksDB's incremental checkpoints and native savepoints).
///
/// Shared files (scope [`StateScope::Shared`]) may be referenced by several
/// checkpoints; the checkpoint store's shared-state registry deletes them once
/// no retained checkpoint references them. Private files belong to this
/// checkpoint alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalStateHandle {
    /// Backend that wrote it; only that kind of backend restores it.
    pub backend: String,
    /// Unique id of the backend instance whose files these are.
    pub backend_id: String,
    /// Checkpoint (or savepoint) id.
    pub checkpoint_id: u64,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Key groups the files hold (they may also hold others: restore clips).
    pub key_group_range: KeyGroupRange,
    /// The states, in the backend's order.
    pub states: Vec<StateMeta>,
    /// Files shared with other checkpoints (immutable data files).
    pub shared_files: Vec<NamedFile>,
    /// Files of this checkpoint only (metadata files of the backend).
    pub private_files: Vec<NamedFile>,
}

/// One segment of a change log: a byte range of a log file that holds the
/// records `first_sqn..end_sqn` of one writer (see the changelog backend).
///
/// A log file may hold segments of several backends of one process; the
/// segment carries its own checksum, and the file the storage's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogSegment {
    /// The log file (shared scope: several checkpoints may reference it).
    pub file: FileHandle,
    /// Offset of the segment in the file's payload.
    pub offset: u64,
    /// Length of the segment in bytes.
    pub length: u64,
    /// Sequence number of the segment's first record.
    pub first_sqn: u64,
    /// Sequence number after its last record.
    pub end_sqn: u64,
}

/// The changes one log writer made to a key-group range between two
/// sequence numbers, as a list of segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogPart {
    /// Key groups of the writer; records of other key groups are skipped.
    pub key_group_range: KeyGroupRange,
    /// First sequence number to replay (records before it are materialized).
    pub from_sqn: u64,
    /// Sequence number after the last record to replay.
    pub to_sqn: u64,
    /// Segments holding the records, in sequence order.
    pub segments: Vec<ChangelogSegment>,
}

/// A checkpoint of the changelog wrapper: the last materialized snapshot of
/// the wrapped backend plus the changes logged after it.
///
/// Restore restores the wrapped backend from `materialized`, then replays
/// `log` in order. The materialized handles cover exactly
/// `key_group_range`; their files and the log files are in shared scope,
/// since later checkpoints reference them until the next materialization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogStateHandle {
    /// `"changelog"` plus the wrapped backend's name, e.g. `"changelog-heap"`.
    pub backend: String,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Key groups of the backend that took it.
    pub key_group_range: KeyGroupRange,
    /// The states at the checkpoint, in the wrapper's order.
    pub states: Vec<StateMeta>,
    /// Id of the materialization the handle builds on.
    pub materialization_id: u64,
    /// The wrapped backend's snapshot at that materialization.
    #[serde(deserialize_with = "nesting::deserialize_nested")]
    pub materialized: Vec<KeyedStateHandle>,
    /// The changes after it, oldest part first.
    pub log: Vec<ChangelogPart>,
}

impl ChangelogStateHandle {
    /// Bytes of log segments the handle references (not whole log files,
    /// which may hold other backends' segments).
    pub fn log_size(&self) -> u64 {
        self.log
            .iter()
            .flat_map(|part| &part.segments)
            .map(|segment| segment.length)
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes of the materialized part.
    pub fn materialized_size(&self) -> u64 {
        self.materialized
            .iter()
            .map(KeyedStateHandle::state_size)
            .fold(0u64, u64::saturating_add)
    }
}

/// What a snapshot of one backend produced; stored in checkpoint metadata and
/// handed back to restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyedStateHandle {
    /// Full snapshot in the key-group format.
    KeyGroups(KeyGroupsStateHandle),
    /// A backend's own files, partly shared with earlier checkpoints.
    Incremental(IncrementalStateHandle),
    /// A materialized snapshot plus a change log (the changelog wrapper).
    Changelog(ChangelogStateHandle),
}

impl KeyedStateHandle {
    /// Name of the handle's format, for messages: `"key-groups"`,
    /// `"incremental"` or `"changelog"`.
    pub fn format_name(&self) -> &'static str {
        match self {
            KeyedStateHandle::KeyGroups(_) => "key-groups",
            KeyedStateHandle::Incremental(_) => "incremental",
            KeyedStateHandle::Changelog(_) => "changelog",
        }
    }

    /// Key groups the snapshot holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.key_group_range,
            KeyedStateHandle::Incremental(h) => h.key_group_range,
            KeyedStateHandle::Changelog(h) => h.key_group_range,
        }
    }

    /// Max parallelism it was taken with.
    pub fn max_parallelism(&self) -> u32 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.max_parallelism,
            KeyedStateHandle::Incremental(h) => h.max_parallelism,
            KeyedStateHandle::Changelog(h) => h.max_parallelism,
        }
    }

    /// Checkpoint id it was taken for.
    pub fn checkpoint_id(&self) -> u64 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.checkpoint_id,
            KeyedStateHandle::Incremental(h) => h.checkpoint_id,
            KeyedStateHandle::Changelog(h) => h.checkpoint_id,
        }
    }

    /// Every file the handle references, each once (several log segments
    /// may lie in one file).
    pub fn files(&self) -> Vec<&FileHandle> {
        match self {
            KeyedStateHandle::KeyGroups(h) => vec![&h.file],
            KeyedStateHandle::Incremental(h) => h
                .shared_files
                .iter()
                .chain(&h.private_files)
                .map(|f| &f.file)
                .collect(),
            KeyedStateHandle::Changelog(h) => {
                let mut files: Vec<&FileHandle> =
                    h.materialized.iter().flat_map(Self::files).collect();
                for segment in h.log.iter().flat_map(|part| &part.segments) {
                    if !files.iter().any(|f| f.path == segment.file.path) {
                        files.push(&segment.file);
                    }
                }
                files
            }
        }
    }

    /// Total bytes of the state the handle holds: all referenced files, and
    /// for a changelog handle the materialized part plus its log segments.
    pub fn state_size(&self) -> u64 {
        match self {
            // Saturating: sizes come from stored (possibly hostile) metadata.
            KeyedStateHandle::Changelog(h) => h.materialized_size().saturating_add(h.log_size()),
            _ => self
                .files()
                .iter()
                .fold(0u64, |total, f| total.saturating_add(f.size)),
        }
    }
}

/// What the asynchronous phase produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotResult {
    /// The handle to store in the checkpoint's metadata.
    pub handle: KeyedStateHandle,
    /// Bytes this snapshot uploaded (less than the state size for incremental
    /// snapshots).
    pub uploaded_bytes: u64,
}

/// The asynchronous phase of a snapshot: a task to run on any thread.
///
/// Dropping it without running abandons the snapshot; the caller then
/// notifies the backend with `notify_checkpoint_aborted`.
///
/// ```
/// use state_api::snapshot::AsyncSnapshot;
/// let task = AsyncSnapshot::new(7, || Err(state_api::StateError::SnapshotCancelled {
///     checkpoint_id: 7,
///     reason: "example".into(),
/// }));
/// assert_eq!(task.checkpoint_id(), 7);
/// let handle = std::thread::spawn(move || task.run());
/// assert!(handle.join().unwrap().is_err());
/// ```
pub struct AsyncSnapshot {
    checkpoint_id: u64,
    task: Box<dyn FnOnce() -> Result<SnapshotResult> + Send>,
}

impl AsyncSnapshot {
    /// Wraps the writing task of checkpoint `checkpoint_id`.
    pub fn new(
        checkpoint_id: u64,
        task: impl FnOnce() -> Result<SnapshotResult> + Send + 'static,
    ) -> Self {
        Self {
            checkpoint_id,
            task: Box::new(task),
        }
    }

    /// The checkpoint this snapshot belongs to.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// Writes the snapshot and returns its handle.
    ///
    /// # Errors
    /// Storage failures; the snapshot is then unusable and the checkpoint
    /// must be aborted.
    pub fn run(self) -> Result<SnapshotResult> {
        (self.task)()
    }
}

impl fmt::Debug for AsyncSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .finish_non_exhaustive()
    }
}

/// A bound on how deeply handles nest when decoded: a changelog handle's
/// materialized part may itself be a changelog handle (a changelog backend
/// wrapping another), but decoding hostile metadata must not recurse until
/// the stack overflows.
pub(crate) mod nesting {
    use std::cell::Cell;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    /// Nesting levels of handles inside handles that decode.
    pub(super) const MAX_HANDLE_NESTING: u32 = 8;

    thread_local! {
        static DEPTH: Cell<u32> = const { Cell::new(0) };
    }

    /// Leaves one level when dropped, also on errors.
    struct Level;

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }

    /// Decodes the handles inside a handle (a changelog handle's
    /// materialized part), refusing more than [`MAX_HANDLE_NESTING`] levels.
    pub(crate) fn deserialize_nested<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        let depth = DEPTH.with(|depth| {
            depth.set(depth.get() + 1);
            depth.get()
        });
        let _level = Level;
        if depth > MAX_HANDLE_NESTING {
            return Err(D::Error::custom(format!(
                "state handles nested more than {MAX_HANDLE_NESTING} levels deep"
            )));
        }
        Vec::<T>::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::KeyGroupRange;

    fn nested(levels: u32) -> KeyedStateHandle {
        let mut handle = KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
            backend: "heap".into(),
            checkpoint_id: 1,
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128).expect("range"),
            file: FileHandle {
                path: "shared/x".into(),
                scope: StateScope::Shared,
                size: 1,
                crc32c: 0,
            },
            key_group_offsets: vec![0; 128],
        });
        for _ in 0..levels {
            handle = KeyedStateHandle::Changelog(ChangelogStateHandle {
                backend: "changelog-heap".into(),
                checkpoint_id: 1,
                max_parallelism: 128,
                key_group_range: KeyGroupRange::all(128).expect("range"),
                states: Vec::new(),
                materialization_id: 1,
                materialized: vec![handle],
                log: Vec::new(),
            });
        }
        handle
    }

    #[test]
    fn nesting_is_bounded_when_decoding() {
        let ok = nested(nesting::MAX_HANDLE_NESTING);
        let bytes = crate::codec::encode(&ok).expect("encode");
        let back: KeyedStateHandle = crate::codec::decode(&bytes).expect("decode");
        assert_eq!(back, ok);

        // Deeper than allowed: an error, and the depth count is reset.
        let deep = crate::codec::encode(&nested(100)).expect("encode");
        // (postcard reports every custom error as a plain deserialization
        // error; what matters is an error instead of a stack overflow.)
        assert!(crate::codec::decode::<KeyedStateHandle>(&deep).is_err());
        let again: KeyedStateHandle = crate::codec::decode(&bytes).expect("decode");
        assert_eq!(again, ok);
    }
}
