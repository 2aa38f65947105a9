//! A seeded random checkpoint lifecycle, checked against a model.
//!
//! One backend, one [`CompletedCheckpointStore`] and a queue of notices on
//! their way to the backend. Each step is one of
//!
//! * a state change;
//! * a checkpoint (now and then a full one) that the store commits; a
//!   commit with unknown outcome is resolved before the next checkpoint,
//!   as a coordinator must;
//! * a checkpoint the coordinator aborts (another task failed);
//! * a backend-specific action ([`Actions::act`]: a materialization, a
//!   compaction);
//! * the delivery of a queued notice, in any order, sometimes twice;
//! * the loss of a queued notice.
//!
//! Every [`Schedule::verify_every`] steps, and at the end, every retained
//! checkpoint is restored into a fresh backend and compared with the state
//! at its synchronous phase. At the end the backend is dropped, garbage is
//! collected, and storage must hold exactly the files the retained
//! checkpoints reference. Storage faults ([`Schedule::fault_rate`]) apply
//! during the run, not during the checks.
//!
//! A failure names the seed; running the schedule with it again replays
//! the same steps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use state_api::conformance::Dump;
use state_api::lifecycle::wait_for_detached_deletions;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateHandle,
    SnapshotOptions, SnapshotType, StateError,
};
use state_storage::fault::{FaultConfig, FaultInjectingStore};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    Resolution,
};

use crate::rng::Rng;
use crate::workload::{change, contents, populate};

/// Max parallelism of the schedules' backends.
pub const MAX_PARALLELISM: u32 = 128;

/// The operator id checkpoints store the backend's handle under.
const OPERATOR: &str = "op";

/// What a schedule does.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Seed of every random choice (and of the storage faults).
    pub seed: u64,
    /// Steps to run.
    pub steps: usize,
    /// Checkpoints the store retains.
    pub num_retained: usize,
    /// Keys the workload writes.
    pub keys: u64,
    /// Restore and compare every retained checkpoint every this many steps.
    pub verify_every: usize,
    /// Storage calls that fail (half of the writes applied nevertheless).
    pub fault_rate: f64,
    /// Whether some checkpoints are full ones.
    pub full_checkpoints: bool,
}

impl Schedule {
    /// 40 steps, three retained checkpoints, no storage faults.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            steps: 40,
            num_retained: 3,
            keys: 60,
            verify_every: 10,
            fault_rate: 0.0,
            full_checkpoints: true,
        }
    }
}

/// What a schedule saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Checkpoints the store committed.
    pub completed: u64,
    /// Checkpoints aborted (failed asynchronous phase, refused commit, or
    /// aborted on purpose).
    pub aborted: u64,
    /// Commits whose outcome was unknown at first.
    pub unknown: u64,
    /// Notices lost on purpose.
    pub lost: u64,
    /// Restores compared with their model.
    pub restores_checked: u64,
    /// Files the final garbage collection deleted (what the backend left).
    pub collected: usize,
}

/// Backend-specific parts of a schedule.
pub trait Actions<B> {
    /// A step of the backend's own (a materialization, a compaction).
    fn act(&mut self, _backend: &mut B, _rng: &mut Rng) {}

    /// Waits for the backend's background work (a running
    /// materialization), before checks and before the backend is dropped.
    fn quiesce(&mut self, _backend: &mut B) {}
}

/// No backend-specific actions.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoActions;

impl<B> Actions<B> for NoActions {}

/// A notice on its way to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Complete(u64),
    Aborted(u64),
    Subsumed(u64),
}

/// Runs `schedule` on backends `create` builds, with `actions`.
///
/// # Errors
/// A message naming the seed, the step and what went wrong: a checkpoint
/// that does not restore or restores other state, a file missing or left
/// over, a backend error.
pub fn run<B, C>(
    schedule: &Schedule,
    create: C,
    actions: &mut dyn Actions<B>,
) -> Result<Outcome, String>
where
    B: KeyedStateBackend,
    C: Fn(BackendContext) -> state_api::Result<B>,
{
    let fail = |step: usize, what: String| format!("seed {}: step {step}: {what}", schedule.seed);
    let (faults, storage) = crate::storage::faulty(
        FaultConfig::failing(schedule.seed, schedule.fault_rate),
        "job",
    )
    .map_err(|e| fail(0, e.to_string()))?;
    faults.set_enabled(false);
    let access = crate::storage::access(&storage);
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), schedule.num_retained)
        .map_err(|e| fail(0, e.to_string()))?;
    let mut backend = create(context(&access, Vec::new())).map_err(|e| fail(0, e.to_string()))?;
    let mut states = populate(&mut backend, schedule.keys);
    faults.set_enabled(schedule.fault_rate > 0.0);

    let mut rng = Rng::new(schedule.seed);
    let mut run = Run {
        store: &mut store,
        faults: &faults,
        faults_on: schedule.fault_rate > 0.0,
        models: BTreeMap::new(),
        pending_model: None,
        notices: Vec::new(),
        next_id: 1,
        outcome: Outcome::default(),
    };
    for step in 0..schedule.steps {
        match rng.below(10) {
            0..=2 => change(
                &mut backend,
                &mut states,
                rng.below(schedule.keys * 2),
                step as u64,
            )
            .map_err(|e| fail(step, format!("change: {e}")))?,
            3 | 4 => {
                let full = schedule.full_checkpoints && rng.chance(1, 5);
                run.checkpoint(&mut backend, &access, full)
                    .map_err(|e| fail(step, e))?;
            }
            5 => run.aborted_checkpoint(&mut backend, &access),
            6 => actions.act(&mut backend, &mut rng),
            7 | 8 if !run.notices.is_empty() => {
                let index = rng.index(run.notices.len());
                let notice = run.notices[index];
                if !rng.chance(1, 4) {
                    run.notices.remove(index);
                }
                deliver(&mut backend, notice).map_err(|e| fail(step, e))?;
            }
            9 if !run.notices.is_empty() => {
                let index = rng.index(run.notices.len());
                run.notices.remove(index);
                run.outcome.lost += 1;
            }
            _ => {}
        }
        if step % schedule.verify_every == schedule.verify_every - 1 {
            actions.quiesce(&mut backend);
            run.verify(&create, &access).map_err(|e| fail(step, e))?;
        }
    }
    // Late notices arrive; then the backend goes away.
    let step = schedule.steps;
    for notice in std::mem::take(&mut run.notices) {
        deliver(&mut backend, notice).map_err(|e| fail(step, e))?;
    }
    actions.quiesce(&mut backend);
    drop(backend);
    wait_for_detached_deletions(Duration::from_secs(30));
    faults.set_enabled(false);
    run.faults_on = false;
    run.resolve().map_err(|e| fail(step, e))?;
    let collected = run
        .store
        .collect_garbage()
        .map_err(|e| fail(step, format!("garbage collection: {e}")))?;
    run.outcome.collected = collected.deleted.len();
    run.verify(&create, &access).map_err(|e| fail(step, e))?;
    check_only_referenced(run.store, &storage).map_err(|e| fail(step, e))?;
    Ok(run.outcome)
}

/// The mutable state of one schedule.
struct Run<'a> {
    store: &'a mut CompletedCheckpointStore,
    faults: &'a FaultInjectingStore,
    /// Whether storage faults apply outside the checks.
    faults_on: bool,
    /// The state each retained (or once retained) checkpoint holds.
    models: BTreeMap<u64, Dump>,
    /// The model of the commit whose outcome is unknown.
    pending_model: Option<(u64, Dump)>,
    notices: Vec<Notice>,
    next_id: u64,
    outcome: Outcome,
}

impl Run<'_> {
    /// Takes, uploads and commits a checkpoint.
    fn checkpoint<B: KeyedStateBackend>(
        &mut self,
        backend: &mut B,
        storage: &Arc<dyn CheckpointStorageAccess>,
        full: bool,
    ) -> Result<(), String> {
        if !self.resolve()? {
            return Ok(()); // a coordinator does not trigger while unresolved
        }
        let id = self.next_id;
        self.next_id += 1;
        let snapshot_type = if full {
            SnapshotType::FullCheckpoint
        } else {
            SnapshotType::Checkpoint
        };
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms: id,
        };
        let task = match backend.snapshot(id, &options, Arc::clone(storage)) {
            Ok(task) => task,
            Err(e) => return self.abort_failed(id, &e),
        };
        let model = contents(backend);
        let handle = match task.run() {
            Ok(result) => result.handle,
            Err(e) => return self.abort_failed(id, &e),
        };
        let checkpoint = CompletedCheckpoint::new("job", id, id, CheckpointKind::Checkpoint)
            .with_operator(OPERATOR, vec![handle]);
        match self.store.add(checkpoint) {
            Ok(subsumed) => {
                self.committed(id, model, subsumed);
                Ok(())
            }
            Err(StateError::CommitOutcomeUnknown { .. }) => {
                self.outcome.unknown += 1;
                self.pending_model = Some((id, model));
                Ok(())
            }
            Err(e) => self.abort_failed(id, &e),
        }
    }

    /// A checkpoint that failed: an error without storage faults (a
    /// backend that refers to deleted files, say), else aborted.
    fn abort_failed(&mut self, id: u64, cause: &StateError) -> Result<(), String> {
        if !self.faults_on {
            return Err(format!(
                "checkpoint {id} failed without storage faults: {cause}"
            ));
        }
        self.abort(id)
    }

    /// A checkpoint whose snapshot runs but which the coordinator aborts.
    fn aborted_checkpoint<B: KeyedStateBackend>(
        &mut self,
        backend: &mut B,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let options = SnapshotOptions::checkpoint(id);
        if let Ok(task) = backend.snapshot(id, &options, Arc::clone(storage)) {
            let _ = task.run();
        }
        let _ = self.abort(id);
    }

    fn abort(&mut self, id: u64) -> Result<(), String> {
        self.outcome.aborted += 1;
        // Leftovers of a failed discard are garbage for the collection.
        let _ = self.store.discard_pending(id);
        self.notices.push(Notice::Aborted(id));
        Ok(())
    }

    fn committed(&mut self, id: u64, model: Dump, subsumed: Vec<u64>) {
        self.outcome.completed += 1;
        self.models.insert(id, model);
        self.notices.push(Notice::Complete(id));
        self.notices
            .extend(subsumed.into_iter().map(Notice::Subsumed));
    }

    /// Resolves a commit with unknown outcome; returns whether none is
    /// left.
    fn resolve(&mut self) -> Result<bool, String> {
        match self.store.resolve_pending_commit() {
            Ok(Resolution::NothingPending) => Ok(true),
            Ok(Resolution::Committed {
                checkpoint_id,
                subsumed,
            }) => {
                let (id, model) = self
                    .pending_model
                    .take()
                    .ok_or("a commit resolved that was never pending")?;
                if id != checkpoint_id {
                    return Err(format!("resolved {checkpoint_id}, pending was {id}"));
                }
                self.committed(id, model, subsumed);
                Ok(true)
            }
            Ok(Resolution::NotCommitted { checkpoint_id }) => {
                Err(format!("checkpoint {checkpoint_id} lost to another writer"))
            }
            Err(StateError::CommitOutcomeUnknown { .. }) => Ok(false),
            Err(e) => Err(format!("resolving a commit: {e}")),
        }
    }

    /// Restores every retained checkpoint and compares it with its model,
    /// without storage faults.
    fn verify<B, C>(
        &mut self,
        create: &C,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        self.faults.set_enabled(false);
        let mut result = Ok(());
        for checkpoint in self.store.checkpoints() {
            let id = checkpoint.checkpoint_id;
            let handles = checkpoint.operators[OPERATOR].clone();
            let check = match create(context(storage, handles)) {
                Ok(mut restored) => {
                    if self.models.get(&id) == Some(&contents(&mut restored)) {
                        Ok(())
                    } else {
                        Err(format!("checkpoint {id} restores to other state"))
                    }
                }
                Err(e) => Err(format!("checkpoint {id} does not restore: {e}")),
            };
            self.outcome.restores_checked += 1;
            if let Err(e) = check {
                result = Err(e);
                break;
            }
        }
        self.faults.set_enabled(self.faults_on);
        result
    }
}

fn deliver<B: KeyedStateBackend>(backend: &mut B, notice: Notice) -> Result<(), String> {
    match notice {
        Notice::Complete(id) => backend.notify_checkpoint_complete(id),
        Notice::Aborted(id) => backend.notify_checkpoint_aborted(id),
        Notice::Subsumed(id) => backend.notify_checkpoint_subsumed(id),
    }
    .map_err(|e| format!("{notice:?}: {e}"))
}

/// A backend context of the whole key-group range.
fn context(
    storage: &Arc<dyn CheckpointStorageAccess>,
    restore: Vec<KeyedStateHandle>,
) -> BackendContext {
    BackendContext {
        operator: "op".into(),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: KeyGroupRange::all(MAX_PARALLELISM).unwrap_or_else(|_| unreachable!()),
        restore,
        storage: Arc::clone(storage),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    }
}

/// Storage holds exactly the retained checkpoints' files and `_metadata`.
fn check_only_referenced(
    store: &CompletedCheckpointStore,
    storage: &ObjectStoreCheckpointStorage,
) -> Result<(), String> {
    let mut referenced: Vec<String> = store
        .checkpoints()
        .flat_map(|c| {
            c.operators
                .values()
                .flatten()
                .flat_map(KeyedStateHandle::files)
                .map(|f| f.path.clone())
                .chain([format!("chk-{}/_metadata", c.checkpoint_id)])
                .collect::<Vec<_>>()
        })
        .collect();
    referenced.sort();
    referenced.dedup();
    let stored = storage.list_files(None).map_err(|e| e.to_string())?;
    if stored == referenced {
        return Ok(());
    }
    let extra: Vec<&String> = stored.iter().filter(|p| !referenced.contains(p)).collect();
    let missing: Vec<&String> = referenced.iter().filter(|p| !stored.contains(p)).collect();
    Err(format!(
        "storage differs from the retained checkpoints' files: unreferenced {extra:?}, missing {missing:?}"
    ))
}
