//! Checkpoint metadata: what `chk-<n>/_metadata` holds.
//!
//! ```text
//! _metadata = b"KSMD" | version u8 | CompletedCheckpoint | crc32c u32 LE
//! ```
//! The CRC-32C covers everything before it (magic, version and payload).
//! Version 2 encodes the checkpoint in CBOR with fields by name
//! ([`state_api::format::evolving`], which also states the evolution
//! policy); version 1 in postcard, read through frozen copies of its
//! structures ([`state_api::format::v1`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use state_api::channel_state::ChannelStateHandle;
use state_api::format::{evolving, v1::Upgrade as _};
use state_api::operator_state::OperatorStateHandle;
use state_api::{FileHandle, KeyedStateHandle, Result, StateError, StateScope};

/// First bytes of every metadata file.
pub const METADATA_MAGIC: [u8; 4] = *b"KSMD";

/// Version of the metadata layout this build writes; it reads every
/// version from 1 on. Version 3 added operator and channel state, version 4
/// timer states and the time to live in the state metadata; versions 2 to 4
/// share the CBOR structures (fields and variants added with defaults).
pub const METADATA_VERSION: u8 = 4;

/// The largest `_metadata` a reader loads (64 MiB: far more than the
/// handles of thousands of operators); a larger one is corrupt.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

const HEADER_LEN: usize = METADATA_MAGIC.len() + 1;
const CRC_LEN: usize = 4;

/// Whether a completed snapshot is a checkpoint or a savepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A regular (possibly incremental) checkpoint.
    Checkpoint,
    /// A user-triggered savepoint.
    Savepoint,
}

impl CheckpointKind {
    /// `"checkpoint"` or `"savepoint"`, for messages and listings.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointKind::Checkpoint => "checkpoint",
            CheckpointKind::Savepoint => "savepoint",
        }
    }
}

/// A completed checkpoint: the content of its `_metadata` file.
///
/// Built with [`new`](Self::new) and the `with_*` methods: fields are
/// added as the format grows (`#[non_exhaustive]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CompletedCheckpoint {
    /// The job it belongs to.
    pub job_id: String,
    /// Its id; its directory is `chk-<checkpoint_id>`.
    pub checkpoint_id: u64,
    /// When it was triggered, in ms since the epoch.
    pub timestamp_ms: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Keyed state handles per operator (by operator id), one per subtask
    /// that reported state.
    pub operators: BTreeMap<String, Vec<KeyedStateHandle>>,
    /// State of the job itself rather than of keyed operators, by name: for
    /// example source offsets (Flink's "master states"). Opaque bytes.
    pub master_states: BTreeMap<String, Vec<u8>>,
    /// Operator (non-keyed) state handles per operator id, one per
    /// instance that had any (since version 3; empty in older files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operator_states: BTreeMap<String, Vec<OperatorStateHandle>>,
    /// In-flight records persisted by unaligned checkpoints, per operator
    /// id (of the task's first operator), one per instance that had any
    /// (since version 3; empty in older files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_states: BTreeMap<String, Vec<ChannelStateHandle>>,
}

impl CompletedCheckpoint {
    /// A completed checkpoint without operator state yet.
    pub fn new(
        job_id: impl Into<String>,
        checkpoint_id: u64,
        timestamp_ms: u64,
        kind: CheckpointKind,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            checkpoint_id,
            timestamp_ms,
            kind,
            operators: BTreeMap::new(),
            master_states: BTreeMap::new(),
            operator_states: BTreeMap::new(),
            channel_states: BTreeMap::new(),
        }
    }

    /// Adds the handles of operator `operator_id` (builder style).
    pub fn with_operator(
        mut self,
        operator_id: impl Into<String>,
        handles: Vec<KeyedStateHandle>,
    ) -> Self {
        self.operators
            .entry(operator_id.into())
            .or_default()
            .extend(handles);
        self
    }

    /// Adds operator state handles of operator `operator_id` (builder
    /// style).
    pub fn with_operator_state(
        mut self,
        operator_id: impl Into<String>,
        handles: Vec<OperatorStateHandle>,
    ) -> Self {
        self.operator_states
            .entry(operator_id.into())
            .or_default()
            .extend(handles);
        self
    }

    /// Adds channel state handles of operator `operator_id` (builder
    /// style).
    pub fn with_channel_state(
        mut self,
        operator_id: impl Into<String>,
        handles: Vec<ChannelStateHandle>,
    ) -> Self {
        self.channel_states
            .entry(operator_id.into())
            .or_default()
            .extend(handles);
        self
    }

    /// Every file every handle references (keyed, operator and channel
    /// state), with
    /// repeats (a shared file may be in several handles).
    pub fn handle_files(&self) -> impl Iterator<Item = &FileHandle> {
        self.operators
            .values()
            .flatten()
            .flat_map(KeyedStateHandle::files)
            .chain(
                self.operator_states
                    .values()
                    .flatten()
                    .map(|handle| &handle.file),
            )
            .chain(
                self.channel_states
                    .values()
                    .flatten()
                    .map(|handle| &handle.file),
            )
    }

    /// Adds a master state (builder style).
    pub fn with_master_state(mut self, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.master_states.insert(name.into(), bytes);
        self
    }

    /// Every file the checkpoint references, each once, in path order.
    pub fn files(&self) -> Vec<&FileHandle> {
        let mut files: BTreeMap<&str, &FileHandle> = BTreeMap::new();
        for file in self.handle_files() {
            files.insert(&file.path, file);
        }
        files.into_values().collect()
    }

    /// The referenced files in `shared/` (scope [`StateScope::Shared`]).
    pub fn shared_files(&self) -> Vec<&FileHandle> {
        self.files_in(StateScope::Shared)
    }

    /// The referenced files exclusive to this checkpoint (scope
    /// [`StateScope::Exclusive`]).
    pub fn exclusive_files(&self) -> Vec<&FileHandle> {
        self.files_in(StateScope::Exclusive)
    }

    /// Total payload bytes of all referenced files (the full state size).
    pub fn state_size(&self) -> u64 {
        // Saturating: sizes come from stored (possibly hostile) metadata.
        self.files()
            .iter()
            .fold(0u64, |total, f| total.saturating_add(f.size))
    }

    /// Where its metadata lives, relative to the job directory:
    /// `chk-<n>/_metadata`.
    pub fn metadata_path(&self) -> String {
        crate::layout::metadata_path(self.checkpoint_id)
    }

    fn files_in(&self, scope: StateScope) -> Vec<&FileHandle> {
        self.files()
            .into_iter()
            .filter(|f| f.scope == scope)
            .collect()
    }

    /// The bytes of its `_metadata` file.
    ///
    /// # Errors
    /// None today (kept for encodings that may fail).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&METADATA_MAGIC);
        out.push(METADATA_VERSION);
        evolving::encode_into(self, &mut out);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses a `_metadata` file read from `path` (named in errors).
    ///
    /// # Errors
    /// [`StateError::UnsupportedVersion`] for a version newer than this
    /// build reads; [`StateError::Corrupt`] naming `path` for bad magic, a
    /// checksum mismatch, truncation or an undecodable payload.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| StateError::corrupt(path, reason);
        let Some(body_len) = bytes.len().checked_sub(CRC_LEN) else {
            return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
        };
        let (body, crc) = bytes.split_at(body_len);
        if body.len() < HEADER_LEN {
            return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
        }
        let (header, payload) = body.split_at(HEADER_LEN);
        if header.get(..METADATA_MAGIC.len()) != Some(&METADATA_MAGIC[..]) {
            return Err(corrupt("not a checkpoint metadata file (bad magic)".into()));
        }
        let version = header.get(METADATA_MAGIC.len()).copied().unwrap_or(0);
        let stored_crc = crc
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt("checksum truncated".into()))?;
        if version > METADATA_VERSION {
            // The checksum covers the version byte: a file of a known
            // version with a damaged version byte checks out with the byte
            // set back.
            if crc32c::crc32c(body) != stored_crc {
                for known in 1..=METADATA_VERSION {
                    let mut as_known = body.to_vec();
                    as_known[METADATA_MAGIC.len()] = known;
                    if crc32c::crc32c(&as_known) == stored_crc {
                        return Err(corrupt(format!(
                            "damaged version byte ({version}) in a version-{known} file"
                        )));
                    }
                }
            }
            return Err(StateError::UnsupportedVersion {
                path: path.to_string(),
                format: "checkpoint metadata",
                found: u32::from(version),
                supported: u32::from(METADATA_VERSION),
            });
        }
        if version == 0 {
            return Err(corrupt(format!(
                "metadata version {version} does not exist (this build reads 1 to {METADATA_VERSION})"
            )));
        }
        let actual_crc = crc32c::crc32c(body);
        if actual_crc != stored_crc {
            return Err(corrupt(format!(
                "checksum mismatch: crc32c {actual_crc:08x}, stored {stored_crc:08x}"
            )));
        }
        let checkpoint = match version {
            1 => state_api::format::v1::decode::<v1::CompletedCheckpointV1>(payload)
                .and_then(|old| old.upgrade().map_err(|e| e.to_string())),
            _ => evolving::decode(payload),
        };
        checkpoint.map_err(|e| corrupt(format!("metadata does not decode: {e}")))
    }
}

/// Version 1 of `_metadata`, frozen (see [`state_api::format::v1`]).
mod v1 {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use state_api::Result;
    use state_api::format::v1::{KeyedStateHandleV1, Upgrade};

    use super::{CheckpointKind, CompletedCheckpoint};

    #[derive(Deserialize)]
    pub(super) enum CheckpointKindV1 {
        Checkpoint,
        Savepoint,
    }

    #[derive(Deserialize)]
    pub(super) struct CompletedCheckpointV1 {
        job_id: String,
        checkpoint_id: u64,
        timestamp_ms: u64,
        kind: CheckpointKindV1,
        operators: BTreeMap<String, Vec<KeyedStateHandleV1>>,
        master_states: BTreeMap<String, Vec<u8>>,
    }

    impl Upgrade for CompletedCheckpointV1 {
        type Current = CompletedCheckpoint;

        fn upgrade(self) -> Result<CompletedCheckpoint> {
            let mut operators = BTreeMap::new();
            for (operator, handles) in self.operators {
                let handles = handles
                    .into_iter()
                    .map(Upgrade::upgrade)
                    .collect::<Result<Vec<_>>>()?;
                operators.insert(operator, handles);
            }
            Ok(CompletedCheckpoint {
                job_id: self.job_id,
                checkpoint_id: self.checkpoint_id,
                timestamp_ms: self.timestamp_ms,
                kind: match self.kind {
                    CheckpointKindV1::Checkpoint => CheckpointKind::Checkpoint,
                    CheckpointKindV1::Savepoint => CheckpointKind::Savepoint,
                },
                operators,
                master_states: self.master_states,
                operator_states: BTreeMap::new(),
                channel_states: BTreeMap::new(),
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use state_api::channel_state::InFlightRun;
    use state_api::operator_state::{OperatorStateMode, OperatorStateSection};
    use state_api::{KeyGroupRange, KeyGroupsStateHandle};

    use super::*;

    pub(crate) fn file(path: &str, scope: StateScope, size: u64) -> FileHandle {
        FileHandle {
            path: path.into(),
            scope,
            size,
            crc32c: 7,
        }
    }

    pub(crate) fn handle(checkpoint_id: u64, file: FileHandle) -> KeyedStateHandle {
        KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
            backend: "test".into(),
            checkpoint_id,
            max_parallelism: 128,
            key_group_range: KeyGroupRange::new(0, 1).unwrap(),
            file,
            key_group_offsets: vec![0],
        })
    }

    fn sample() -> CompletedCheckpoint {
        keyed_sample()
            .with_operator_state(
                "op-a",
                vec![OperatorStateHandle {
                    subtask: 0,
                    parallelism: 1,
                    file: file("chk-3/o-1", StateScope::Exclusive, 4),
                    sections: vec![OperatorStateSection {
                        name: "offsets".into(),
                        mode: OperatorStateMode::SplitDistribute,
                        offset: 5,
                        elements: 0,
                    }],
                }],
            )
            .with_channel_state(
                "op-b",
                vec![ChannelStateHandle {
                    subtask: 1,
                    parallelism: 2,
                    channels: 2,
                    file: file("chk-3/c-1", StateScope::Exclusive, 6),
                    runs: vec![InFlightRun {
                        channel: 1,
                        key_group: Some(7),
                        offset: 5,
                        records: 1,
                    }],
                }],
            )
    }

    /// Keyed state only, as versions 1 and 2 hold.
    fn keyed_sample() -> CompletedCheckpoint {
        CompletedCheckpoint::new("job", 3, 1_700_000_000_000, CheckpointKind::Checkpoint)
            .with_operator(
                "op-a",
                vec![
                    handle(3, file("chk-3/a-1", StateScope::Exclusive, 10)),
                    handle(3, file("shared/s-1", StateScope::Shared, 20)),
                ],
            )
            .with_operator(
                "op-b",
                vec![
                    handle(3, file("shared/s-1", StateScope::Shared, 20)),
                    handle(3, file("taskowned/t-1", StateScope::TaskOwned, 5)),
                ],
            )
    }

    const METADATA_VERSION_U32: u32 = METADATA_VERSION as u32;

    #[test]
    fn round_trip() {
        let cp = sample();
        let bytes = cp.encode().unwrap();
        assert_eq!(&bytes[..4], b"KSMD");
        assert_eq!(bytes[4], METADATA_VERSION);
        assert_eq!(
            CompletedCheckpoint::decode("chk-3/_metadata", &bytes).unwrap(),
            cp
        );
    }

    #[test]
    fn file_views() {
        let cp = sample();
        let paths =
            |files: Vec<&FileHandle>| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(cp.files()),
            [
                "chk-3/a-1",
                "chk-3/c-1",
                "chk-3/o-1",
                "shared/s-1",
                "taskowned/t-1"
            ]
        );
        assert_eq!(paths(cp.shared_files()), ["shared/s-1"]);
        assert_eq!(
            paths(cp.exclusive_files()),
            ["chk-3/a-1", "chk-3/c-1", "chk-3/o-1"]
        );
        assert_eq!(cp.state_size(), 45);
        assert_eq!(cp.metadata_path(), "chk-3/_metadata");
    }

    #[test]
    fn every_corruption_is_named() {
        let bytes = sample().encode().unwrap();
        let reason = |bytes: &[u8]| match CompletedCheckpoint::decode("chk-3/_metadata", bytes) {
            Err(StateError::Corrupt { path, reason }) => {
                assert_eq!(path, "chk-3/_metadata");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        };
        for keep in 0..bytes.len() {
            reason(&bytes[..keep]);
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            reason(&bad);
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(reason(&bad).contains("magic"));
        // A damaged version byte: the checksum says it was 1.
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert!(reason(&bad).contains("damaged version byte (9)"));
        // A file of a later release: its checksum covers its version.
        let crc_at = bad.len() - CRC_LEN;
        let crc = crc32c::crc32c(&bad[..crc_at]);
        bad[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            CompletedCheckpoint::decode("chk-3/_metadata", &bad),
            Err(StateError::UnsupportedVersion {
                found: 9,
                supported: METADATA_VERSION_U32,
                ..
            })
        ));
        let mut bad = bytes;
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(reason(&bad).contains("checksum"));
    }

    /// A `_metadata` file: magic, `version`, `payload`, checksum.
    fn sealed(version: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&METADATA_MAGIC);
        body.push(version);
        body.extend_from_slice(payload);
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        for (version, mut payload) in [
            (1, postcard::to_allocvec(&keyed_sample()).unwrap()),
            (2, evolving::encode(&sample())),
        ] {
            payload.push(0);
            let err = CompletedCheckpoint::decode("m", &sealed(version, &payload)).unwrap_err();
            assert!(err.to_string().contains("after the end"), "{err}");
        }
    }

    /// Version 1 stays readable. Today's types still encode in postcard as
    /// version 1 did; the checked-in version-1 fixtures pin it for good.
    #[test]
    fn version_1_is_read() {
        let v1 = sealed(1, &postcard::to_allocvec(&keyed_sample()).unwrap());
        assert_eq!(
            CompletedCheckpoint::decode("m", &v1).unwrap(),
            keyed_sample()
        );
    }

    /// Version 2 (no operator state field) reads with its default.
    #[test]
    fn version_2_is_read() {
        let v2 = sealed(2, &evolving::encode(&keyed_sample()));
        assert_eq!(
            CompletedCheckpoint::decode("m", &v2).unwrap(),
            keyed_sample()
        );
    }
}
