//! Restoring a program from a savepoint or checkpoint: which handles each
//! operator gets, and what to do with state the program no longer claims.
//!
//! A program may drop an operator or a state between runs. Restoring then
//! would silently lose that state, so, as in Flink, it is an error unless
//! the user allows it (`allowNonRestoredState`, the configuration key
//! `execution.state-recovery.ignore-unclaimed-state`); when allowed, the
//! unclaimed state is skipped and listed. Whole operators are left out of
//! the plan; unclaimed states of a kept operator are passed to its backends
//! as [`BackendContext::skip_restored_states`], so they are neither
//! restored nor part of later snapshots.
//!
//! ```
//! use std::collections::BTreeMap;
//! use state_storage::restore::{ProgramStates, RestorePlan};
//! use state_storage::{CheckpointKind, CompletedCheckpoint, ObjectStoreCheckpointStorage};
//!
//! let storage = ObjectStoreCheckpointStorage::in_memory("job")?;
//! let snapshot = CompletedCheckpoint::new("job", 1, 0, CheckpointKind::Savepoint);
//! let program = ProgramStates::new().with_operator("counter", ["count"]);
//! let plan = RestorePlan::new(&snapshot, &storage, &program, false)?;
//! assert!(plan.handles("counter").is_empty()); // nothing saved for it yet
//! assert!(plan.skipped().is_empty());
//! # Ok::<(), state_api::StateError>(())
//! ```
//!
//! [`BackendContext::skip_restored_states`]: state_api::BackendContext::skip_restored_states

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use state_api::format::key_groups::KeyGroupsReader;
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateHandle, Result, StateError, StateMeta,
};

use crate::access::ObjectStoreCheckpointStorage;
use crate::layout;
use crate::metadata::CompletedCheckpoint;
use crate::savepoint::{Savepoint, strip_metadata};
use crate::store::load_checkpoint;

/// A checkpoint or savepoint to restore from (or to look into), opened:
/// its metadata and the storage its handle paths are relative to.
#[derive(Debug)]
pub struct RestoreSource {
    /// The `_metadata` content.
    pub metadata: CompletedCheckpoint,
    /// Where the handles' files are: the job directory of a checkpoint, the
    /// directory of a savepoint. A restoring job passes it as
    /// [`BackendContext::restore_storage`](state_api::BackendContext::restore_storage).
    pub storage: Arc<ObjectStoreCheckpointStorage>,
    /// The checkpoint's or savepoint's own directory, for messages.
    pub location: String,
    /// Set for savepoints.
    pub savepoint: Option<Savepoint>,
}

impl RestoreSource {
    /// Opens the checkpoint or savepoint at `location` (Flink's
    /// `execution.state-recovery.path`): `<job dir>/chk-<n>`, a savepoint
    /// directory, or the `_metadata` file of either; a local path or a URL.
    ///
    /// # Errors
    /// [`StateError::FileNotFound`] or [`StateError::CheckpointNotFound`]
    /// when nothing is there; [`StateError::Corrupt`] for metadata that does
    /// not decode; [`StateError::Config`] for an unusable location; storage
    /// errors.
    pub fn open(location: &str) -> Result<Self> {
        let dir = strip_metadata(location);
        // A checkpoint is read through its job directory, the parent.
        let (parent, name) = match crate::url::local_path(dir)? {
            Some(path) => {
                let path = std::fs::canonicalize(&path).map_err(|_| StateError::FileNotFound {
                    path: format!("{dir}/{}", layout::METADATA_FILE_NAME),
                })?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parent = path.parent().map(|p| p.display().to_string());
                (parent, name)
            }
            None => {
                let (parent, name) = layout::split_dir_location(dir)?;
                (Some(parent), name)
            }
        };
        if let (Some(parent), Some(checkpoint_id)) = (parent, layout::parse_checkpoint_dir(&name)) {
            let storage = Arc::new(ObjectStoreCheckpointStorage::open_dir(&parent)?);
            let metadata = load_checkpoint(&storage, checkpoint_id)?;
            return Ok(Self {
                location: format!("{}/{name}", storage.location()),
                metadata,
                storage,
                savepoint: None,
            });
        }
        let savepoint = Savepoint::open(dir)?;
        Ok(Self {
            metadata: savepoint.metadata().clone(),
            storage: Arc::clone(savepoint.object_storage()),
            location: savepoint.location(),
            savepoint: Some(savepoint),
        })
    }

    /// `"checkpoint"` or `"savepoint"`.
    pub fn kind_name(&self) -> &'static str {
        self.metadata.kind.name()
    }

    /// The storage as the backends' restore storage.
    pub fn restore_storage(&self) -> Arc<dyn CheckpointStorageAccess> {
        Arc::clone(&self.storage) as Arc<dyn CheckpointStorageAccess>
    }
}

/// The configuration key that allows skipping unclaimed state.
pub const ALLOW_NON_RESTORED_STATE_KEY: &str = "execution.state-recovery.ignore-unclaimed-state";

/// The operators of a program and the states each registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStates {
    operators: BTreeMap<String, BTreeSet<String>>,
}

impl ProgramStates {
    /// A program without operators.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds operator `operator_id` registering `states` (builder style).
    pub fn with_operator<I, S>(mut self, operator_id: impl Into<String>, states: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.operators
            .entry(operator_id.into())
            .or_default()
            .extend(states.into_iter().map(Into::into));
        self
    }

    /// Whether the program has operator `operator_id`.
    pub fn has_operator(&self, operator_id: &str) -> bool {
        self.operators.contains_key(operator_id)
    }

    /// Whether operator `operator_id` registers state `state`.
    pub fn registers(&self, operator_id: &str, state: &str) -> bool {
        self.operators
            .get(operator_id)
            .is_some_and(|states| states.contains(state))
    }
}

/// State of the snapshot that the program does not claim.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UnclaimedState {
    /// An operator the program no longer has, with all its states.
    Operator {
        /// The operator id.
        operator: String,
        /// Its states in the snapshot.
        states: Vec<String>,
    },
    /// A state an operator of the program no longer registers.
    State {
        /// The operator id.
        operator: String,
        /// The state's name.
        state: String,
    },
}

impl std::fmt::Display for UnclaimedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnclaimedState::Operator { operator, states } => {
                write!(f, "operator '{operator}' (states {})", states.join(", "))
            }
            UnclaimedState::State { operator, state } => {
                write!(f, "state '{state}' of operator '{operator}'")
            }
        }
    }
}

/// Which handles each operator of a program restores from one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
    operators: BTreeMap<String, Vec<KeyedStateHandle>>,
    skip: BTreeMap<String, Vec<String>>,
    skipped: Vec<UnclaimedState>,
}

impl RestorePlan {
    /// Plans the restore of `program` from `snapshot`, whose files are in
    /// `storage` (read for the state lists of key-group files).
    ///
    /// # Errors
    /// [`StateError::Restore`] listing the unclaimed state when there is
    /// some and `allow_non_restored_state` is false; errors reading the
    /// state lists ([`StateError::Corrupt`], [`StateError::FileNotFound`],
    /// storage errors).
    pub fn new(
        snapshot: &CompletedCheckpoint,
        storage: &dyn CheckpointStorageAccess,
        program: &ProgramStates,
        allow_non_restored_state: bool,
    ) -> Result<Self> {
        let mut operators = BTreeMap::new();
        let mut skip: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (operator, handles) in &snapshot.operators {
            let states = operator_states(handles, storage)?;
            if !program.has_operator(operator) {
                skipped.push(UnclaimedState::Operator {
                    operator: operator.clone(),
                    states: states.into_iter().collect(),
                });
                continue;
            }
            for state in states {
                if !program.registers(operator, &state) {
                    skipped.push(UnclaimedState::State {
                        operator: operator.clone(),
                        state: state.clone(),
                    });
                    skip.entry(operator.clone()).or_default().push(state);
                }
            }
            operators.insert(operator.clone(), handles.clone());
        }
        if !skipped.is_empty() && !allow_non_restored_state {
            let listed: Vec<String> = skipped.iter().map(ToString::to_string).collect();
            return Err(StateError::Restore(format!(
                "snapshot {} holds state the program does not register: {}; to skip it, allow \
                 non-restored state ({ALLOW_NON_RESTORED_STATE_KEY}: true)",
                snapshot.checkpoint_id,
                listed.join("; ")
            )));
        }
        Ok(Self {
            operators,
            skip,
            skipped,
        })
    }

    /// Every handle of operator `operator_id` (empty when the snapshot has
    /// none for it: the operator starts empty).
    pub fn handles(&self, operator_id: &str) -> &[KeyedStateHandle] {
        self.operators.get(operator_id).map_or(&[], Vec::as_slice)
    }

    /// The handles of operator `operator_id` that an instance of
    /// `key_group_range` restores: those intersecting it.
    pub fn handles_for(
        &self,
        operator_id: &str,
        key_group_range: KeyGroupRange,
    ) -> Vec<KeyedStateHandle> {
        state_api::backend::handles_for_range(self.handles(operator_id), key_group_range)
    }

    /// The states operator `operator_id`'s backends must skip
    /// ([`BackendContext::skip_restored_states`](state_api::BackendContext::skip_restored_states)).
    pub fn skip_states(&self, operator_id: &str) -> Vec<String> {
        self.skip.get(operator_id).cloned().unwrap_or_default()
    }

    /// The unclaimed state that is skipped (empty unless allowed).
    pub fn skipped(&self) -> &[UnclaimedState] {
        &self.skipped
    }
}

/// The states a handle holds; key-group files are asked for their header
/// (one small read).
///
/// # Errors
/// As [`KeyGroupsReader::open`].
pub fn handle_states(
    handle: &KeyedStateHandle,
    storage: &dyn CheckpointStorageAccess,
) -> Result<Vec<StateMeta>> {
    Ok(match handle {
        KeyedStateHandle::KeyGroups(h) => KeyGroupsReader::open(storage, h)?.meta().states.clone(),
        KeyedStateHandle::Incremental(h) => h.states.clone(),
        KeyedStateHandle::Changelog(h) => h.states.clone(),
        #[allow(unreachable_patterns)] // the enum is non_exhaustive
        other => {
            return Err(StateError::Restore(format!(
                "cannot list the states of a {} handle",
                other.format_name()
            )));
        }
    })
}

/// The names of the states in any of `handles`.
fn operator_states(
    handles: &[KeyedStateHandle],
    storage: &dyn CheckpointStorageAccess,
) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for handle in handles {
        names.extend(handle_states(handle, storage)?.into_iter().map(|m| m.name));
    }
    Ok(names)
}
