//! The [`KeyedStateBackend`] contract.
//!
//! The trait is object-safe and works on encoded bytes, so a runtime can hold a
//! `Box<dyn KeyedStateBackend>` chosen by configuration; the typed handles in
//! [`crate::state`] sit on top of it and are all users normally touch.
//!
//! # Contract
//!
//! * One backend serves one operator instance and its key-group range. It is
//!   used from one thread at a time (`&mut self`), as Flink's task thread
//!   does; only the [`AsyncSnapshot`] it returns runs elsewhere.
//! * The caller sets the current key once per record with
//!   [`set_current_key`](KeyedStateBackend::set_current_key); every state
//!   access then addresses (current key, namespace). The backend MUST reject a
//!   key outside its key-group range.
//! * Keys, namespaces, values and map keys are opaque encoded bytes; backends
//!   compare them byte-wise. Lists use the [list encoding](crate::codec).
//! * A state is addressed by the [`StateId`] that registration returned. An
//!   operation of the wrong kind MUST fail with
//!   [`StateError::StateKindMismatch`].
//! * Reads of an absent (key, namespace) return `None`; clearing an absent one
//!   is not an error. Writing an empty list clears it.
//! * [`snapshot`](KeyedStateBackend::snapshot) is the synchronous phase: it
//!   MUST return quickly, independent of the amount of state where the backend
//!   allows, and freeze what the snapshot holds. Writes after it returns MUST
//!   NOT change what the [`AsyncSnapshot`] writes.
//! * The checkpoint notices may be lost, repeated, late or reordered; every
//!   notice that arrives is true. A backend deletes a file only when it
//!   knows no committed checkpoint references it, and never one a committed
//!   checkpoint may reference: the [lifecycle contract](crate::lifecycle).
//!
//! Wrappers (such as the changelog backend) SHOULD implement every method,
//! since the trait has no default methods to silently bypass the inner backend.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::descriptor::{StateMeta, StateRegistration};
use crate::error::{Result, StateError};
use crate::key_group::{KeyGroup, KeyGroupRange, check_max_parallelism};
use crate::snapshot::{AsyncSnapshot, KeyedStateHandle, SnapshotOptions};
use crate::storage::CheckpointStorageAccess;
use crate::timers::Timer;

/// Identifies a registered state within one backend (an index, cheap to copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// Visitor over entries; return `ControlFlow::Break(())` to stop early.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// A keyed state backend for one key-group range.
pub trait KeyedStateBackend: Send {
    /// Short name of the implementation, e.g. `"heap"`.
    fn backend_name(&self) -> &'static str;

    /// The key groups this backend serves.
    fn key_group_range(&self) -> KeyGroupRange;

    /// The job's max parallelism (number of key groups).
    fn max_parallelism(&self) -> u32;

    /// Registers a state, or returns the id of the state registered (or
    /// restored) under the same name.
    ///
    /// # Errors
    /// [`StateError::StateKindMismatch`] / [`StateError::StateTypeMismatch`]
    /// when the name exists with another kind or other types.
    fn register_state(&mut self, registration: StateRegistration) -> Result<StateId>;

    /// Metadata of every state this backend holds: registered ones and ones
    /// restored from snapshots but not registered yet.
    fn state_metas(&self) -> Vec<StateMeta>;

    /// Sets the key that following state accesses address, given as encoded
    /// bytes. Computes its key group once.
    ///
    /// # Errors
    /// [`StateError::KeyGroupOutOfRange`] if the key does not belong here.
    fn set_current_key(&mut self, encoded_key: &[u8]) -> Result<()>;

    /// The current key's encoded bytes, if one is set.
    fn current_key(&self) -> Option<&[u8]>;

    /// The current key's key group, if a key is set.
    fn current_key_group(&self) -> Option<KeyGroup>;

    /// Reads the value of a value, reducing or aggregating state, or the
    /// encoded elements of a list state.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], [`StateError::UnknownState`],
    /// [`StateError::StateKindMismatch`] for map state.
    fn get(&mut self, state: StateId, namespace: &[u8]) -> Result<Option<&[u8]>>;

    /// Replaces the value (value, reducing, aggregating state) or the whole
    /// encoded list (list state; an empty list clears).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    fn put(&mut self, state: StateId, namespace: &[u8], value: &[u8]) -> Result<()>;

    /// Removes the (current key, namespace) entry of any kind of state but
    /// timers (whose timers go one by one, with
    /// [`timer_remove`](Self::timer_remove)).
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], [`StateError::UnknownState`].
    fn clear(&mut self, state: StateId, namespace: &[u8]) -> Result<()>;

    /// Appends encoded list elements (one or more, in the list encoding).
    ///
    /// # Errors
    /// As [`get`](Self::get), for states other than list state.
    fn list_append(
        &mut self,
        state: StateId,
        namespace: &[u8],
        encoded_elements: &[u8],
    ) -> Result<()>;

    /// Folds an encoded input into a reducing or aggregating state with its
    /// registered [`StateFunction`](crate::descriptor::StateFunction).
    ///
    /// # Errors
    /// As [`get`](Self::get), for other kinds; codec errors of the function.
    fn accumulate(&mut self, state: StateId, namespace: &[u8], input: &[u8]) -> Result<()>;

    /// Merges the entries of `sources` into `target` and clears the sources
    /// (merging windows): lists concatenate (the target's elements first, then
    /// each source's in order), reducing and aggregating states merge with
    /// their function. A source equal to the target is ignored; a source
    /// listed twice is merged once. Absent sources contribute nothing.
    ///
    /// # Errors
    /// As [`get`](Self::get), for value and map state.
    fn merge_namespaces(&mut self, state: StateId, target: &[u8], sources: &[&[u8]]) -> Result<()>;

    /// Reads one map entry.
    ///
    /// # Errors
    /// As [`get`](Self::get), for states other than map state.
    fn map_get(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<&[u8]>>;

    /// Inserts or replaces one map entry.
    ///
    /// # Errors
    /// As [`map_get`](Self::map_get).
    fn map_put(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()>;

    /// Removes one map entry (absent is not an error).
    ///
    /// # Errors
    /// As [`map_get`](Self::map_get).
    fn map_remove(&mut self, state: StateId, namespace: &[u8], user_key: &[u8]) -> Result<()>;

    /// Visits the (user key, value) entries of the current key's map in
    /// namespace `namespace`, in ascending byte order of the user keys.
    ///
    /// # Errors
    /// As [`map_get`](Self::map_get), or the visitor's error.
    fn map_for_each(
        &mut self,
        state: StateId,
        namespace: &[u8],
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()>;

    /// Visits every (key, namespace) that has an entry in `state`, across all
    /// key groups of this backend. The order is unspecified.
    ///
    /// # Errors
    /// [`StateError::UnknownState`], or the visitor's error.
    fn for_each_key_and_namespace(
        &mut self,
        state: StateId,
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()>;

    /// Adds a timer at `timestamp` for the current key in `namespace` to the
    /// timer state `state`; returns whether it is new (one that exists stays
    /// one timer). See [`crate::timers`].
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], [`StateError::UnknownState`],
    /// [`StateError::StateKindMismatch`] for states other than timers.
    fn timer_add(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool>;

    /// Removes the current key's timer at `timestamp` in `namespace`;
    /// returns whether there was one.
    ///
    /// # Errors
    /// As [`timer_add`](Self::timer_add).
    fn timer_remove(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool>;

    /// The timestamp of the earliest timer of `state` over all key groups.
    ///
    /// # Errors
    /// [`StateError::UnknownState`], [`StateError::StateKindMismatch`].
    fn timer_peek(&mut self, state: StateId) -> Result<Option<i64>>;

    /// Removes and returns the earliest timer of `state` if its timestamp is
    /// at most `up_to` (ties in [`crate::timers::same_time_order`] within
    /// the lowest key group). Leaves the current key as it was.
    ///
    /// # Errors
    /// As [`timer_peek`](Self::timer_peek).
    fn timer_poll(&mut self, state: StateId, up_to: i64) -> Result<Option<Timer>>;

    /// The synchronous phase of a snapshot: freeze the state and return the
    /// task that writes it to `storage`.
    ///
    /// # Errors
    /// Backend-specific failures to freeze (e.g. a failed flush).
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        options: &SnapshotOptions,
        storage: Arc<dyn CheckpointStorageAccess>,
    ) -> Result<AsyncSnapshot>;

    /// The checkpoint completed: it is committed, and the checkpoint store
    /// owns every file it references. Its files may be reused by later
    /// checkpoints.
    ///
    /// May arrive late (after newer checkpoints' notices), twice, or never
    /// (see the [lifecycle contract](crate::lifecycle)); says nothing about
    /// older checkpoints.
    ///
    /// # Errors
    /// Backend-specific clean-up failures.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()>;

    /// The checkpoint was aborted: it will never be committed, and nothing
    /// it wrote may be relied on. The backend deletes the files it uploaded
    /// for it alone.
    ///
    /// Sent only when that is certain (never for a commit whose outcome is
    /// unknown); may arrive late, twice, or never, also while the
    /// asynchronous phase still runs.
    ///
    /// # Errors
    /// Backend-specific clean-up failures.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()>;

    /// The checkpoint was committed and has now left the retention: the
    /// store deletes what no retained checkpoint references. Implies that it
    /// completed. May arrive late, twice, or never.
    ///
    /// # Errors
    /// Backend-specific clean-up failures.
    fn notify_checkpoint_subsumed(&mut self, checkpoint_id: u64) -> Result<()>;
}

/// Everything needed to build one backend instance.
#[derive(Clone)]
pub struct BackendContext {
    /// Name of the operator instance, for logs and local directory names.
    pub operator: String,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The key groups this instance serves.
    pub key_group_range: KeyGroupRange,
    /// Snapshots to restore from (taken at any parallelism); empty to start
    /// fresh.
    pub restore: Vec<KeyedStateHandle>,
    /// The job's checkpoint storage: where the backend writes what it
    /// uploads outside [`snapshot`](KeyedStateBackend::snapshot) (the
    /// changelog wrapper's log and materializations), and where `restore`
    /// is read from unless `restore_storage` is set.
    pub storage: Arc<dyn CheckpointStorageAccess>,
    /// Where `restore` is read from when it is not `storage`: a savepoint's
    /// own directory. Files restored from another storage are never reused
    /// by later checkpoints (a savepoint never becomes part of the job's
    /// incremental checkpoints).
    pub restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
    /// Names of states in `restore` that are not restored: the program no
    /// longer registers them and the runtime was told to skip them (Flink's
    /// `allowNonRestoredState`). They are neither readable nor part of later
    /// snapshots.
    pub skip_restored_states: Vec<String>,
}

impl fmt::Debug for BackendContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendContext")
            .field("operator", &self.operator)
            .field("max_parallelism", &self.max_parallelism)
            .field("key_group_range", &self.key_group_range)
            .field("restore", &self.restore.len())
            .field("storage", &self.storage.location())
            .field(
                "restore_storage",
                &self.restore_storage.as_ref().map(|s| s.location()),
            )
            .field("skip_restored_states", &self.skip_restored_states)
            .finish()
    }
}

impl BackendContext {
    /// Where the restore handles are read from: `restore_storage` when set,
    /// else `storage`.
    pub fn restore_source(&self) -> &Arc<dyn CheckpointStorageAccess> {
        self.restore_storage.as_ref().unwrap_or(&self.storage)
    }

    /// Whether the restored state `name` is to be skipped (see
    /// [`skip_restored_states`](Self::skip_restored_states)).
    pub fn skips_state(&self, name: &str) -> bool {
        self.skip_restored_states.iter().any(|s| s == name)
    }

    /// Whether the restore handles live in the job's own checkpoint
    /// storage, so their shared files may be referenced by later
    /// checkpoints.
    pub fn restores_from_own_storage(&self) -> bool {
        self.restore_storage.is_none()
    }

    /// Checks the context before a backend is built: valid key groups, and
    /// restore handles with the same max parallelism that intersect the range,
    /// do not overlap each other and together cover the whole range. A gap
    /// means a handle is missing, which would silently lose state.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`] or [`StateError::Restore`] naming the
    /// handle and the key groups.
    pub fn validate(&self) -> Result<()> {
        check_max_parallelism(self.max_parallelism)?;
        let range = self.key_group_range;
        if range.end_exclusive() > self.max_parallelism {
            return Err(StateError::InvalidKeyGroups(format!(
                "{range} exceeds max parallelism {}",
                self.max_parallelism
            )));
        }
        if self.restore.is_empty() {
            return Ok(());
        }
        check_restore_handles(&self.restore, range, self.max_parallelism)
    }
}

/// The handles an instance serving `range` restores from: those whose key
/// groups intersect it (as a job manager hands them out, at any
/// parallelism).
///
/// ```
/// use state_api::backend::handles_for_range;
/// use state_api::KeyGroupRange;
///
/// let range = KeyGroupRange::new(0, 63)?;
/// assert!(handles_for_range(&[], range).is_empty());
/// # Ok::<(), state_api::StateError>(())
/// ```
pub fn handles_for_range(
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
) -> Vec<KeyedStateHandle> {
    handles
        .iter()
        .filter(|h| !h.key_group_range().intersection(&range).is_empty())
        .cloned()
        .collect()
}

/// Checks that `handles` can restore a backend of `range`: the same max
/// parallelism, each handle intersecting the range, no two overlapping inside
/// it, and together covering all of it. A gap means a handle is missing,
/// which would silently lose state; runtimes also call this for a whole
/// checkpoint (range `[0, max_parallelism)`) before handing handles out.
///
/// # Errors
/// [`StateError::Restore`] naming the handle and the key groups.
pub fn check_restore_handles(
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
    max_parallelism: u32,
) -> Result<()> {
    let mut covered: Vec<KeyGroupRange> = Vec::with_capacity(handles.len());
    for handle in handles {
        if handle.max_parallelism() != max_parallelism {
            return Err(StateError::Restore(format!(
                "snapshot of checkpoint {} was taken with max parallelism {}, this backend has {}; \
                 max parallelism cannot change across restores",
                handle.checkpoint_id(),
                handle.max_parallelism(),
                max_parallelism
            )));
        }
        let part = handle.key_group_range().intersection(&range);
        if part.is_empty() {
            return Err(StateError::Restore(format!(
                "handle for {} of checkpoint {} does not intersect {range}",
                handle.key_group_range(),
                handle.checkpoint_id()
            )));
        }
        if let Some(other) = covered.iter().find(|c| !c.intersection(&part).is_empty()) {
            return Err(StateError::Restore(format!(
                "restore handles overlap in {}",
                other.intersection(&part)
            )));
        }
        covered.push(part);
    }
    covered.sort_by_key(KeyGroupRange::start);
    let mut next = range.start();
    for part in covered {
        if part.start() != next {
            break;
        }
        next = part.end_exclusive();
    }
    if next != range.end_exclusive() {
        return Err(StateError::Restore(format!(
            "restore handles do not cover key group {next} of {range}: a handle is missing"
        )));
    }
    Ok(())
}

/// Builds backends of one kind; what runtimes and the conformance suite use.
pub trait StateBackendFactory: Send + Sync {
    /// Name of the backends this factory builds.
    fn name(&self) -> &str;

    /// Builds a backend, restoring `context.restore` if it is not empty.
    ///
    /// # Errors
    /// Invalid context (see [`BackendContext::validate`]); restore failures
    /// such as [`StateError::Corrupt`] or [`StateError::FileNotFound`].
    fn create(&self, context: BackendContext) -> Result<Box<dyn KeyedStateBackend>>;
}
