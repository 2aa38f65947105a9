//! A seeded random checkpoint lifecycle, checked against a model: the
//! deterministic simulation every backend's tests run.
//!
//! A job of one to three backends (one per key-group range), one
//! [`CompletedCheckpointStore`] and a queue of notices on their way to the
//! backends. Each step is one of
//!
//! * a state change, routed to the backend owning the key;
//! * a checkpoint (now and then a full one) that the store commits; a
//!   commit with unknown outcome is resolved before the next checkpoint,
//!   as a coordinator must;
//! * a checkpoint the coordinator aborts (another task failed);
//! * a canonical savepoint into its own directory, restored at once and
//!   disposed later;
//! * a backend-specific action ([`Actions::act`]: a materialization, a
//!   compaction);
//! * the delivery of a queued notice, in any order, sometimes twice;
//! * the loss of a queued notice;
//! * a crash: the job and the store are dropped without a word, queued
//!   notices are lost, a new store opens and collects garbage, and a new
//!   job restores the latest checkpoint at a random parallelism.
//!
//! After every step, every file a retained checkpoint references must
//! exist (a deleted one is the usual way a committed checkpoint is lost).
//! Every [`Schedule::verify_every`] steps, and at the end, every retained
//! checkpoint is restored (at parallelism 1: all key groups in one backend)
//! and compared with the state at its synchronous phase. At the end the job
//! is dropped, garbage is collected, and storage must hold exactly the
//! files the retained checkpoints reference. Storage faults
//! ([`Schedule::fault_rate`]) apply during the run, not during the checks;
//! without them, every checkpoint must complete.
//!
//! A failure names the seed; running the schedule with it again replays
//! the same steps (up to the timing of background threads).

mod job;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use state_api::conformance::Dump;
use state_api::lifecycle::wait_for_detached_deletions;
use state_api::snapshot::SavepointFormat;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, SnapshotOptions,
    SnapshotType, StateError,
};
use state_storage::fault::{FaultConfig, FaultInjectingStore};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    Resolution, Savepoint, SavepointWriter,
};

pub use job::MAX_PARALLELISM;
use job::{Job, context, run_tasks};

use crate::rng::Rng;
use crate::workload::contents_with_timers;

/// The operator id checkpoints store the job's handles under.
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
    /// Whether the job crashes and restarts now and then, at another
    /// parallelism.
    pub crashes: bool,
    /// Whether savepoints are taken, restored and disposed.
    pub savepoints: bool,
}

impl Schedule {
    /// 40 steps, three retained checkpoints, crashes and savepoints, no
    /// storage faults.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            steps: 40,
            num_retained: 3,
            keys: 60,
            verify_every: 10,
            fault_rate: 0.0,
            full_checkpoints: true,
            crashes: true,
            savepoints: true,
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
    /// Notices lost on purpose (crashes lose the queued ones too).
    pub lost: u64,
    /// Crashes and restarts.
    pub crashes: u64,
    /// Savepoints taken and checked.
    pub savepoints: u64,
    /// Restores compared with their model.
    pub restores_checked: u64,
    /// Files the final garbage collection deleted (what the job left).
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

/// A notice on its way to the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Complete(u64),
    Aborted(u64),
    Subsumed(u64),
}

/// The seeds a test runs: `default` seeds starting at `first`, or as many
/// as the environment variable `STATE_SCHEDULE_SEEDS` says (long runs),
/// starting at `STATE_SCHEDULE_FIRST_SEED` plus `first` when that is set
/// (fresh seeds), or the one seed `STATE_SCHEDULE_SEED` names (to replay a
/// failure).
///
/// ```
/// let seeds = state_testkit::schedule::seeds(100, 20);
/// assert!(!seeds.is_empty());
/// ```
pub fn seeds(first: u64, default: u64) -> std::ops::Range<u64> {
    let read = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(seed) = read("STATE_SCHEDULE_SEED") {
        return seed..seed + 1;
    }
    let first = first.saturating_add(read("STATE_SCHEDULE_FIRST_SEED").unwrap_or(0));
    first..first.saturating_add(read("STATE_SCHEDULE_SEEDS").unwrap_or(default))
}

/// Runs `schedule` on backends `create` builds, with `actions`.
///
/// # Errors
/// A message naming the seed, the step and what went wrong: a checkpoint
/// that does not restore or restores other state, a file missing or left
/// over, a checkpoint refused without storage faults, a backend error.
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
    let store = CompletedCheckpointStore::open(Arc::clone(&storage), schedule.num_retained)
        .map_err(|e| fail(0, e.to_string()))?;
    let mut rng = Rng::new(schedule.seed);
    let parallelism = 1 + rng.below(3) as u32;
    let mut job = Job::start(&create, &access, None, parallelism, &[], schedule.keys)
        .map_err(|e| fail(0, e.to_string()))?;
    faults.set_enabled(schedule.fault_rate > 0.0);
    let mut run = Run {
        schedule,
        store,
        storage: Arc::clone(&storage),
        access,
        faults: &faults,
        faults_on: schedule.fault_rate > 0.0,
        models: BTreeMap::new(),
        pending_model: None,
        notices: Vec::new(),
        savepoints: Vec::new(),
        next_id: 1,
        outcome: Outcome::default(),
    };
    for step in 0..schedule.steps {
        run.step(&mut job, &create, actions, &mut rng, step)
            .map_err(|e| fail(step, e))?;
        run.check_referenced_files_exist()
            .map_err(|e| fail(step, e))?;
        if step % schedule.verify_every == schedule.verify_every - 1 {
            for backend in &mut job.backends {
                actions.quiesce(backend);
            }
            run.verify(&create).map_err(|e| fail(step, e))?;
        }
    }
    // Late notices arrive; then the job goes away.
    let step = schedule.steps;
    for notice in std::mem::take(&mut run.notices) {
        deliver(&mut job, notice).map_err(|e| fail(step, e))?;
    }
    for backend in &mut job.backends {
        actions.quiesce(backend);
    }
    drop(job);
    wait_for_detached_deletions(Duration::from_secs(30));
    faults.set_enabled(false);
    run.faults_on = false;
    run.resolve().map_err(|e| fail(step, e))?;
    let collected = run
        .store
        .collect_garbage()
        .map_err(|e| fail(step, format!("garbage collection: {e}")))?;
    run.outcome.collected = collected.deleted.len();
    run.verify(&create).map_err(|e| fail(step, e))?;
    run.check_only_referenced().map_err(|e| fail(step, e))?;
    for savepoint in std::mem::take(&mut run.savepoints) {
        savepoint.dispose().map_err(|e| fail(step, e.to_string()))?;
    }
    Ok(run.outcome)
}

/// The state of one schedule.
struct Run<'a> {
    schedule: &'a Schedule,
    store: CompletedCheckpointStore,
    storage: Arc<ObjectStoreCheckpointStorage>,
    access: Arc<dyn CheckpointStorageAccess>,
    faults: &'a FaultInjectingStore,
    /// Whether storage faults apply outside the checks.
    faults_on: bool,
    /// The state each retained (or once retained) checkpoint holds.
    models: BTreeMap<u64, Dump>,
    /// The model of the commit whose outcome is unknown.
    pending_model: Option<(u64, Dump)>,
    notices: Vec<Notice>,
    /// Savepoints not disposed yet.
    savepoints: Vec<Savepoint>,
    next_id: u64,
    outcome: Outcome,
}

impl Run<'_> {
    fn step<B, C>(
        &mut self,
        job: &mut Job<B>,
        create: &C,
        actions: &mut dyn Actions<B>,
        rng: &mut Rng,
        step: usize,
    ) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        match rng.below(12) {
            0..=2 => job
                .change(rng.below(self.schedule.keys * 2), step as u64)
                .map_err(|e| format!("change: {e}")),
            3 | 4 => {
                let full = self.schedule.full_checkpoints && rng.chance(1, 5);
                self.checkpoint(job, full)
            }
            5 => {
                self.aborted_checkpoint(job);
                Ok(())
            }
            6 => {
                let index = rng.index(job.backends.len());
                actions.act(&mut job.backends[index], rng);
                Ok(())
            }
            7 | 8 if !self.notices.is_empty() => {
                let index = rng.index(self.notices.len());
                let notice = self.notices[index];
                if !rng.chance(1, 4) {
                    self.notices.remove(index);
                }
                deliver(job, notice)
            }
            9 if !self.notices.is_empty() => {
                let index = rng.index(self.notices.len());
                self.notices.remove(index);
                self.outcome.lost += 1;
                Ok(())
            }
            10 if self.schedule.crashes => {
                for backend in &mut job.backends {
                    actions.quiesce(backend);
                }
                self.crash(job, create, rng)
            }
            11 if self.schedule.savepoints => {
                if !self.savepoints.is_empty() && rng.chance(1, 2) {
                    let savepoint = self.savepoints.remove(0);
                    savepoint.dispose().map_err(|e| format!("dispose: {e}"))?;
                    return Ok(());
                }
                self.savepoint(job, create)
            }
            _ => Ok(()),
        }
    }

    /// Takes, uploads and commits a checkpoint.
    fn checkpoint<B: KeyedStateBackend>(
        &mut self,
        job: &mut Job<B>,
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
        let tasks = match job.snapshot(id, &options, &self.access) {
            Ok(tasks) => tasks,
            Err(e) => return self.abort_failed(id, &e),
        };
        let model = job
            .contents()
            .map_err(|e| format!("reading the job's state: {e}"))?;
        let handles = match run_tasks(tasks) {
            Ok(handles) => handles,
            Err(e) => return self.abort_failed(id, &e),
        };
        let checkpoint = CompletedCheckpoint::new("job", id, id, CheckpointKind::Checkpoint)
            .with_operator(OPERATOR, handles);
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

    /// A checkpoint whose snapshots run but which the coordinator aborts.
    fn aborted_checkpoint<B: KeyedStateBackend>(&mut self, job: &mut Job<B>) {
        let id = self.next_id;
        self.next_id += 1;
        if let Ok(tasks) = job.snapshot(id, &SnapshotOptions::checkpoint(id), &self.access) {
            let _ = run_tasks(tasks);
        }
        self.abort(id);
    }

    /// A checkpoint that failed: an error without storage faults (a
    /// backend that refers to deleted files, say), else aborted.
    fn abort_failed(&mut self, id: u64, cause: &StateError) -> Result<(), String> {
        if !self.faults_on {
            return Err(format!(
                "checkpoint {id} failed without storage faults: {cause}"
            ));
        }
        self.abort(id);
        Ok(())
    }

    fn abort(&mut self, id: u64) {
        self.outcome.aborted += 1;
        // Leftovers of a failed discard are garbage for the collection.
        let _ = self.store.discard_pending(id);
        self.notices.push(Notice::Aborted(id));
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

    /// The process dies: nothing is said to anyone. A new store opens (a
    /// commit left pending is committed exactly when its `_metadata` is
    /// there), collects garbage, and a new job restores the latest
    /// checkpoint at a random parallelism.
    fn crash<B, C>(&mut self, job: &mut Job<B>, create: &C, rng: &mut Rng) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        self.outcome.crashes += 1;
        self.outcome.lost += self.notices.len() as u64;
        self.notices.clear();
        let parallelism = 1 + rng.below(3) as u32;
        // Restarts read storage without faults (a runtime retries them).
        self.faults.set_enabled(false);
        // The old job goes before the new one starts, as with a process.
        job.close();
        self.store =
            CompletedCheckpointStore::open(Arc::clone(&self.storage), self.schedule.num_retained)
                .map_err(|e| format!("reopening the store: {e}"))?;
        if let Some((id, model)) = self.pending_model.take()
            && self.store.get(id).is_some()
        {
            self.models.insert(id, model);
            self.outcome.completed += 1;
        }
        // Wait for the dead job's background deletions, then collect.
        wait_for_detached_deletions(Duration::from_secs(30));
        self.store
            .collect_garbage()
            .map_err(|e| format!("collection after the crash: {e}"))?;
        let restore = self
            .store
            .latest()
            .map(|c| c.operators[OPERATOR].clone())
            .unwrap_or_default();
        *job = Job::start(
            create,
            &self.access,
            None,
            parallelism,
            &restore,
            self.schedule.keys,
        )
        .map_err(|e| format!("restart at parallelism {parallelism}: {e}"))?;
        if let Some(latest) = self.store.latest()
            && self.models.get(&latest.checkpoint_id)
                != Some(&job.contents().map_err(|e| e.to_string())?)
        {
            return Err(format!(
                "after the crash, checkpoint {} restored at parallelism {parallelism} holds other state",
                latest.checkpoint_id
            ));
        }
        self.faults.set_enabled(self.faults_on);
        Ok(())
    }

    /// A canonical savepoint into its own directory; it must restore to
    /// the job's state at once (it is disposed later).
    fn savepoint<B, C>(&mut self, job: &mut Job<B>, create: &C) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        let id = self.next_id;
        self.next_id += 1;
        let directory = ObjectStoreCheckpointStorage::in_memory(&format!("savepoint-{id}"))
            .map_err(|e| e.to_string())?;
        let writer = SavepointWriter::in_storage(directory);
        let options = SnapshotOptions {
            snapshot_type: SnapshotType::Savepoint(SavepointFormat::Canonical),
            timestamp_ms: id,
        };
        let tasks = job
            .snapshot(id, &options, &writer.storage())
            .map_err(|e| format!("savepoint {id}: {e}"))?;
        let model = job
            .contents()
            .map_err(|e| format!("reading the job's state: {e}"))?;
        let written = run_tasks(tasks).and_then(|handles| {
            writer.commit(
                CompletedCheckpoint::new("job", id, id, CheckpointKind::Savepoint)
                    .with_operator(OPERATOR, handles),
            )
        });
        // Savepoints go to their own storage, without faults: any error is
        // a backend's.
        let savepoint = written.map_err(|e| format!("savepoint {id}: {e}"))?;
        let handles = savepoint.handles(OPERATOR).to_vec();
        let mut restored = create(context(
            &self.access,
            Some(savepoint.storage()),
            KeyGroupRange::all(MAX_PARALLELISM).map_err(|e| e.to_string())?,
            handles,
        ))
        .map_err(|e| format!("savepoint {id} does not restore: {e}"))?;
        if contents_with_timers(&mut restored).map_err(|e| e.to_string())? != model {
            return Err(format!("savepoint {id} restores to other state"));
        }
        self.outcome.savepoints += 1;
        self.savepoints.push(savepoint);
        Ok(())
    }

    /// Restores every retained checkpoint and compares it with its model,
    /// without storage faults.
    fn verify<B, C>(&mut self, create: &C) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        self.faults.set_enabled(false);
        let result = self.verify_all(create);
        self.faults.set_enabled(self.faults_on);
        result
    }

    fn verify_all<B, C>(&mut self, create: &C) -> Result<(), String>
    where
        B: KeyedStateBackend,
        C: Fn(BackendContext) -> state_api::Result<B>,
    {
        let all = KeyGroupRange::all(MAX_PARALLELISM).map_err(|e| e.to_string())?;
        for checkpoint in self.store.checkpoints() {
            let id = checkpoint.checkpoint_id;
            let handles = checkpoint.operators[OPERATOR].clone();
            let mut restored = create(context(&self.access, None, all, handles))
                .map_err(|e| format!("checkpoint {id} does not restore: {e}"))?;
            self.outcome.restores_checked += 1;
            let restored_contents =
                contents_with_timers(&mut restored).map_err(|e| e.to_string())?;
            if self.models.get(&id) != Some(&restored_contents) {
                return Err(format!("checkpoint {id} restores to other state"));
            }
        }
        Ok(())
    }

    /// Every file the retained checkpoints reference, and their
    /// `_metadata`, is in storage (listed without storage faults). A
    /// pending commit's are not checked: its `_metadata` may never have
    /// been written.
    fn check_referenced_files_exist(&self) -> Result<(), String> {
        self.faults.set_enabled(false);
        let stored = self.storage.list_files(None);
        self.faults.set_enabled(self.faults_on);
        let stored: std::collections::BTreeSet<String> =
            stored.map_err(|e| e.to_string())?.into_iter().collect();
        let mut missing = Vec::new();
        for checkpoint in self.store.checkpoints() {
            let metadata = checkpoint.metadata_path();
            let files = checkpoint.files().into_iter().map(|file| &file.path);
            for path in files.chain(std::iter::once(&metadata)) {
                if !stored.contains(path) {
                    missing.push(path.clone());
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "files of retained checkpoints are gone: {missing:?}"
        ))
    }

    /// Storage holds exactly the retained checkpoints' files and `_metadata`.
    fn check_only_referenced(&self) -> Result<(), String> {
        let referenced = self.store.referenced_files();
        let stored = self.storage.list_files(None).map_err(|e| e.to_string())?;
        let extra: Vec<&String> = stored.iter().filter(|p| !referenced.contains(*p)).collect();
        let missing: Vec<&String> = referenced.iter().filter(|p| !stored.contains(p)).collect();
        if extra.is_empty() && missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "storage differs from the retained checkpoints' files: unreferenced {extra:?}, missing {missing:?}"
        ))
    }
}

fn deliver<B: KeyedStateBackend>(job: &mut Job<B>, notice: Notice) -> Result<(), String> {
    job.notify(|backend| match notice {
        Notice::Complete(id) => backend.notify_checkpoint_complete(id),
        Notice::Aborted(id) => backend.notify_checkpoint_aborted(id),
        Notice::Subsumed(id) => backend.notify_checkpoint_subsumed(id),
    })
    .map_err(|e| format!("{notice:?}: {e}"))
}
