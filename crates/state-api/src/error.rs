//! The one error type of the state layer.
//!
//! Every backend and every storage implementation maps its own failures into
//! [`StateError`], so a runtime handles errors the same way whatever backend the
//! configuration chose. Each variant names what failed: the state, the file, the
//! checkpoint id.

use crate::descriptor::StateKind;
use crate::key_group::KeyGroupRange;

/// Result alias used throughout the state layer.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Boxed source error carried by I/O-like variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a keyed state backend, its snapshots or its
/// checkpoint storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A state id that this backend never handed out.
    #[error("unknown state id {state_id}")]
    UnknownState {
        /// The id that was passed.
        state_id: u32,
    },

    /// A state name registered again with another kind, or an operation of one
    /// kind applied to a state of another kind.
    #[error("state '{state}' is a {registered:?} state, not a {requested:?} state")]
    StateKindMismatch {
        /// The state's name.
        state: String,
        /// The kind it was registered (or restored) with.
        registered: StateKind,
        /// The kind that was asked for.
        requested: StateKind,
    },

    /// A state name registered again (or restored) with other types.
    #[error(
        "state '{state}': {what} type mismatch: registered as '{registered}', requested as '{requested}'"
    )]
    StateTypeMismatch {
        /// The state's name.
        state: String,
        /// Which type differs: "value", "namespace" or "user key".
        what: &'static str,
        /// The type it was registered (or restored) with.
        registered: String,
        /// The type that was asked for.
        requested: String,
    },

    /// A state registered with a time to live that is on where its stored
    /// values have none, or off where they have one.
    #[error(
        "state '{state}': time to live {}, but the state is registered with it {}: values are stored differently with and without a time to live, so turning it on or off needs a new state (or a migration that rewrites every value)",
        describe_ttl(*.registered, "restored"),
        describe_ttl(*.requested, "requested")
    )]
    StateTtlMismatch {
        /// The state's name.
        state: String,
        /// The time to live (ms) it was stored with, if any.
        registered: Option<u64>,
        /// The time to live (ms) asked for, if any.
        requested: Option<u64>,
    },

    /// A state operation ran before any key was set with `set_current_key`.
    #[error("no current key is set: call set_current_key before accessing keyed state")]
    NoCurrentKey,

    /// A key whose key group is not in the backend's key-group range.
    #[error("key group {key_group} is outside this backend's key-group range {range}")]
    KeyGroupOutOfRange {
        /// The key's key group.
        key_group: u32,
        /// The backend's range.
        range: KeyGroupRange,
    },

    /// Parallelism, max parallelism or key-group range values that break the
    /// key-group rules.
    #[error("invalid key-group configuration: {0}")]
    InvalidKeyGroups(String),

    /// Restore handles that do not fit the backend being built.
    #[error("cannot restore: {0}")]
    Restore(String),

    /// A value, key or namespace could not be encoded or decoded.
    #[error("codec error ({context}): {source}")]
    Codec {
        /// What was being encoded or decoded.
        context: String,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },

    /// A snapshot file whose bytes are not what was written: checksum mismatch,
    /// truncation, bad magic or version, malformed records.
    #[error("corrupt checkpoint file '{path}': {reason}")]
    Corrupt {
        /// The file's path relative to its storage root.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A stored file of a format version newer than this build reads (a
    /// checkpoint written by a later release, read after a downgrade).
    /// Never skipped silently: restoring an older checkpoint instead would
    /// rewind the job.
    #[error(
        "'{path}' is {format} version {found}, this build reads up to version {supported}: \
         use a later release"
    )]
    UnsupportedVersion {
        /// The file.
        path: String,
        /// The format: "checkpoint metadata", "key-group snapshot", ...
        format: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// A file that a handle or checkpoint refers to does not exist.
    #[error("checkpoint file not found: '{path}'")]
    FileNotFound {
        /// The missing file's path.
        path: String,
    },

    /// No completed checkpoint with this id exists.
    #[error("checkpoint {checkpoint_id} not found{}", location.as_deref().map(|l| format!(" in '{l}'")).unwrap_or_default())]
    CheckpointNotFound {
        /// The id asked for.
        checkpoint_id: u64,
        /// Where it was looked for.
        location: Option<String>,
    },

    /// A completed checkpoint with this id exists already: `_metadata` is written
    /// once and never replaced.
    #[error("checkpoint {checkpoint_id} already exists at '{path}'")]
    CheckpointAlreadyExists {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// The existing metadata path.
        path: String,
    },

    /// The commit of a checkpoint failed in a way that leaves its outcome
    /// open: its `_metadata` may or may not have been stored (a request
    /// applied by the server whose answer was lost). The checkpoint is
    /// neither completed nor aborted until the checkpoint store resolves it;
    /// until then nothing it references may be deleted and no backend may
    /// be told either outcome.
    #[error(
        "the outcome of committing checkpoint {checkpoint_id} is unknown (its _metadata may have been stored): {source}"
    )]
    CommitOutcomeUnknown {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// The failure that left the outcome open.
        #[source]
        source: BoxError,
    },

    /// Checkpoint storage failed (network, permissions, disk full, timeouts).
    #[error("storage error during {operation} of '{path}': {source}")]
    Storage {
        /// What was being done: "put", "get", "delete", "list", ...
        operation: &'static str,
        /// The object or file path.
        path: String,
        /// The storage's error.
        #[source]
        source: BoxError,
    },

    /// A configuration value that is missing, of the wrong type or invalid.
    #[error("invalid configuration '{key}': {message}")]
    Config {
        /// The configuration key.
        key: String,
        /// What is wrong and which values are accepted.
        message: String,
    },

    /// An operation this backend does not offer.
    #[error("{operation} is not supported by the {backend} backend")]
    NotSupported {
        /// The operation.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },

    /// A backend-internal failure, tagged with the backend's name.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// A snapshot task was cancelled or its owner went away.
    #[error("snapshot for checkpoint {checkpoint_id} was cancelled: {reason}")]
    SnapshotCancelled {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
}

impl StateError {
    /// Builds a [`StateError::Corrupt`].
    pub fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StateError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Builds a [`StateError::Codec`].
    pub fn codec(context: impl Into<String>, source: postcard::Error) -> Self {
        StateError::Codec {
            context: context.into(),
            source,
        }
    }

    /// Builds a [`StateError::Storage`].
    pub fn storage(
        operation: &'static str,
        path: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        StateError::Storage {
            operation,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// "on (… ms)" or "off", for [`StateError::StateTtlMismatch`].
fn describe_ttl(ttl_ms: Option<u64>, what: &str) -> String {
    match ttl_ms {
        Some(ms) => format!("{what} on ({ms} ms)"),
        None => format!("{what} off"),
    }
}
