//! The checkpoint coordinator: triggers checkpoints, collects the tasks'
//! acknowledgements, commits completed checkpoints through the
//! [`CompletedCheckpointStore`] and tells every task the outcome, with
//! Flink's rules (`CheckpointCoordinator`, `CheckpointRequestDecider`,
//! `CheckpointFailureManager`).
//!
//! # Driving it
//! The coordinator does no I/O towards tasks and keeps no clock: the
//! runtime calls [`tick`](CheckpointCoordinator::tick) at
//! [`next_wakeup`](CheckpointCoordinator::next_wakeup) (and whenever it
//! likes), passes acknowledgements and declines in as they arrive, and
//! reads the returned [`CheckpointEvent`]s. Tasks are reached through a
//! [`TaskGateway`]. Times are durations since the Unix epoch, the clock the
//! barriers' timestamps use.
//!
//! # Outcomes and who owns the files
//! * Until every task acknowledged, a checkpoint's files belong to the
//!   tasks' backends. A decline, a timeout or a failed task **aborts** it:
//!   its `chk-<n>/` directory is discarded and every task is told
//!   [`Notification::Aborted`], on which the backends drop what they wrote.
//! * Fully acknowledged, it is committed by
//!   [`CompletedCheckpointStore::add`]. Committed, it belongs to the store;
//!   the tasks are told [`Notification::Complete`], then
//!   [`Notification::Subsumed`] for the checkpoints retention removed; older
//!   pending checkpoints are aborted.
//! * If the put of `_metadata` has an **unknown outcome**, nothing is said
//!   and nothing deleted: no checkpoint is triggered or committed until the
//!   store resolved it by reading back (each tick tries), and the tasks are
//!   then told what it found. Never guessed. If storage stays unreachable
//!   past the checkpoint's `timeout`, [`CheckpointEvent::CommitUnresolved`]
//!   tells the runtime to fail over (Flink fails over at once on a possibly
//!   inconsistent commit): a new attempt opens the store, which settles the
//!   outcome from what storage holds.
//! * A late acknowledgement of an aborted or unknown checkpoint is answered
//!   with [`Notification::Aborted`], so its state is dropped; notices may be
//!   repeated and tasks handle them idempotently.
//!
//! # Scheduling
//! Periodic triggers follow a fixed plan (`start + k * interval`, no drift;
//! missed slots are skipped), wait while `max-concurrent-checkpoints` are
//! pending, and never come sooner than `min-pause` after the last
//! completion. Savepoints are forced (ignore both limits) unless unaligned
//! checkpoints are enabled, as in Flink. Counted failures (declines,
//! expiries, failed commits) beyond `tolerable-failed-checkpoints` produce
//! [`CheckpointEvent::TolerableFailuresExceeded`]: the runtime fails over.

mod commit;
mod config;
mod failure;
mod gateway;
mod stats;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use state_api::snapshot::SavepointFormat;
use state_api::{Result, SnapshotType, StateError};
use state_storage::CompletedCheckpointStore;

use crate::barrier::CheckpointBarrier;

pub use config::{CheckpointConfig, MIN_INTERVAL};
pub use failure::FailureReason;
pub use gateway::{Notification, TaskCheckpointMetrics, TaskGateway, TaskId, TaskSnapshot};
pub use stats::{CheckpointStats, CompletedCheckpointStats};

use failure::FailureCounter;

/// Finished ids remembered to recognise late messages (Flink keeps 16).
const REMEMBERED_FINISHED: usize = 16;

/// Something the coordinator did, for the runtime to log, measure or act on.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckpointEvent {
    /// Checkpoint or savepoint `id` was triggered at the sources.
    Triggered {
        /// Its id.
        id: u64,
        /// Checkpoint, full checkpoint or savepoint.
        snapshot_type: SnapshotType,
    },
    /// It completed and is committed.
    Completed(CompletedCheckpointStats),
    /// It was aborted.
    Aborted {
        /// Its id.
        id: u64,
        /// Why.
        reason: FailureReason,
    },
    /// The put of its `_metadata` has an unknown outcome; nothing more is
    /// triggered or committed until the store resolves it.
    CommitOutcomeUnknown {
        /// Its id.
        id: u64,
        /// The storage error.
        error: String,
    },
    /// A commit with an unknown outcome could not be resolved within the
    /// checkpoint's timeout (storage stays unreachable): checkpointing is
    /// stalled, so fail the job over. The new attempt's store settles the
    /// outcome when it opens; the coordinator keeps trying meanwhile.
    CommitUnresolved {
        /// The checkpoint.
        id: u64,
    },
    /// More consecutive counted failures than tolerated: fail the job over.
    TolerableFailuresExceeded {
        /// The checkpoint whose failure crossed the limit.
        id: u64,
        /// Counted failures.
        failures: usize,
    },
}

/// A checkpoint between its trigger and its outcome.
#[derive(Debug)]
struct PendingCheckpoint {
    barrier: CheckpointBarrier,
    triggered_at: Duration,
    waiting_for: BTreeSet<TaskId>,
    acknowledged: BTreeMap<TaskId, (TaskSnapshot, TaskCheckpointMetrics)>,
    /// A stop-with-savepoint: the job stops once it completes.
    stops_job: bool,
}

impl PendingCheckpoint {
    fn id(&self) -> u64 {
        self.barrier.id
    }

    fn is_savepoint(&self) -> bool {
        matches!(
            self.barrier.options.snapshot_type,
            SnapshotType::Savepoint(_)
        )
    }
}

/// How long after a failed attempt an unclear commit is read back again.
const RESOLVE_RETRY: Duration = Duration::from_millis(100);

/// A fully acknowledged checkpoint whose `_metadata` put has an unknown
/// outcome, with what its completion will report.
#[derive(Debug)]
struct Unresolved {
    pending: PendingCheckpoint,
    persisted: u64,
    full_size: u64,
    /// When the next read-back is due (for [`CheckpointCoordinator::next_wakeup`]).
    retry_at: Duration,
    /// Whether [`CheckpointEvent::CommitUnresolved`] was reported.
    reported_stuck: bool,
}

/// A savepoint asked for and not started yet.
#[derive(Clone, Copy, Debug)]
struct SavepointRequest {
    format: SavepointFormat,
    stops_job: bool,
}

/// The checkpoint coordinator of one job. See the [module docs](self).
pub struct CheckpointCoordinator {
    config: CheckpointConfig,
    job_id: String,
    sources: Vec<TaskId>,
    tasks: BTreeSet<TaskId>,
    store: CompletedCheckpointStore,
    gateway: Box<dyn TaskGateway>,
    next_id: u64,
    pending: BTreeMap<u64, PendingCheckpoint>,
    /// Fully acknowledged, waiting for an unclear commit to be resolved.
    ready: VecDeque<PendingCheckpoint>,
    /// The checkpoint whose commit has an unknown outcome.
    unresolved: Option<Unresolved>,
    periodic: bool,
    next_trigger_at: Option<Duration>,
    last_completion_at: Option<Duration>,
    savepoint_requests: VecDeque<SavepointRequest>,
    failures: FailureCounter,
    /// Recently finished ids, with whether they completed.
    finished: VecDeque<(u64, bool)>,
    stats: CheckpointStats,
}

impl CheckpointCoordinator {
    /// A coordinator for a job whose tasks are `tasks`, of which `sources`
    /// are triggered directly (the others receive barriers in band). Ids
    /// continue after everything `store` knows.
    ///
    /// # Errors
    /// [`StateError::Config`] for invalid settings or sources that are not
    /// tasks.
    pub fn new(
        config: CheckpointConfig,
        job_id: impl Into<String>,
        tasks: impl IntoIterator<Item = TaskId>,
        sources: impl IntoIterator<Item = TaskId>,
        store: CompletedCheckpointStore,
        gateway: Box<dyn TaskGateway>,
    ) -> Result<Self> {
        config.validate()?;
        let tasks: BTreeSet<TaskId> = tasks.into_iter().collect();
        let sources: Vec<TaskId> = sources.into_iter().collect();
        if let Some(stray) = sources.iter().find(|source| !tasks.contains(*source)) {
            return Err(StateError::Config {
                key: "sources".into(),
                message: format!("source {stray} is not one of the job's tasks"),
            });
        }
        let next_id = store.next_checkpoint_id();
        Ok(Self {
            failures: FailureCounter::new(config.tolerable_failed),
            config,
            job_id: job_id.into(),
            sources,
            tasks,
            store,
            gateway,
            next_id,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            unresolved: None,
            periodic: false,
            next_trigger_at: None,
            last_completion_at: None,
            savepoint_requests: VecDeque::new(),
            finished: VecDeque::new(),
            stats: CheckpointStats::default(),
        })
    }

    /// Starts periodic checkpoints (if an interval is set): the first one
    /// `initial_delay` after `now` (Flink draws it from
    /// `[min-pause, interval]`; pass `interval` for no randomness).
    pub fn start(&mut self, now: Duration, initial_delay: Duration) {
        if self.config.interval.is_some() {
            self.periodic = true;
            self.next_trigger_at = Some(now.saturating_add(initial_delay));
        }
    }

    /// Stops periodic checkpoints and aborts the pending ones (shutdown or
    /// failover); savepoints asked for are dropped.
    pub fn stop(&mut self, now: Duration, reason: FailureReason) -> Vec<CheckpointEvent> {
        self.periodic = false;
        self.next_trigger_at = None;
        self.savepoint_requests.clear();
        let mut events = Vec::new();
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            self.abort(id, reason.clone(), now, &mut events);
        }
        events
    }

    /// The settings.
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// The completed-checkpoint store (for restores and listings).
    pub fn store(&self) -> &CompletedCheckpointStore {
        &self.store
    }

    /// The store, back from the coordinator.
    pub fn into_store(self) -> CompletedCheckpointStore {
        self.store
    }

    /// Counters and the last completed checkpoint's figures.
    pub fn stats(&self) -> &CheckpointStats {
        &self.stats
    }

    /// Ids of the pending checkpoints, ascending.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// The checkpoint whose commit has an unknown outcome, if any.
    pub fn unresolved_commit(&self) -> Option<u64> {
        self.unresolved.as_ref().map(|u| u.pending.id())
    }

    /// The id the next trigger will use.
    pub fn next_checkpoint_id(&self) -> u64 {
        self.next_id
    }

    /// Continues ids after `id` (builder style): a runtime restarting after
    /// a failover passes the highest id the failed attempt triggered, so
    /// that no id is used twice (Flink keeps its id counter in the HA
    /// services for the same reason). The store's ids are respected too.
    pub fn continuing_after(mut self, id: u64) -> Self {
        self.next_id = self.next_id.max(id.saturating_add(1));
        self
    }

    /// When [`tick`](Self::tick) has something to do next: a periodic
    /// trigger, a pending checkpoint's timeout, or (soon) a retry of an
    /// unresolved commit.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let expiries = self
            .pending
            .values()
            .map(|p| p.triggered_at.saturating_add(self.config.timeout));
        // A trigger that has to wait (an unclear commit, the concurrency
        // limit) is no reason to wake: a completion re-examines it.
        let can_trigger = self.periodic
            && self.unresolved.is_none()
            && self.ready.is_empty()
            && self.pending.len() < self.config.max_concurrent;
        let trigger = self.next_trigger_at.filter(|_| can_trigger);
        let retry = self.unresolved.as_ref().map(|u| u.retry_at);
        expiries.chain(trigger).chain(retry).min()
    }

    /// Does what is due at `now`: resolves an unclear commit, expires
    /// checkpoints past their timeout, starts queued savepoints and the
    /// periodic trigger.
    pub fn tick(&mut self, now: Duration) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        self.resolve_unclear_commit(now, &mut events);
        let expired: Vec<u64> = self
            .pending
            .values()
            .filter(|p| p.triggered_at.saturating_add(self.config.timeout) <= now)
            .map(PendingCheckpoint::id)
            .collect();
        for id in expired {
            self.abort(id, FailureReason::Expired, now, &mut events);
        }
        self.start_requested_savepoints(now, &mut events);
        self.trigger_periodic(now, &mut events);
        events
    }

    /// Asks for a savepoint; `stops_job` makes it a stop-with-savepoint
    /// (periodic checkpoints stop and pending ones abort first; if it
    /// fails, they resume). Forced savepoints start at once, others wait for
    /// a free slot.
    pub fn request_savepoint(
        &mut self,
        now: Duration,
        format: SavepointFormat,
        stops_job: bool,
    ) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        if stops_job {
            self.periodic = false;
            for id in self.pending.keys().copied().collect::<Vec<_>>() {
                self.abort(id, FailureReason::CoordinatorSuspended, now, &mut events);
            }
        }
        self.savepoint_requests
            .push_back(SavepointRequest { format, stops_job });
        self.start_requested_savepoints(now, &mut events);
        events
    }

    /// Triggers a checkpoint of `snapshot_type` now if the limits allow
    /// (`force` ignores `max-concurrent-checkpoints` and `min-pause`); the
    /// events hold its id, and are empty when it has to wait.
    pub fn trigger(
        &mut self,
        now: Duration,
        snapshot_type: SnapshotType,
        force: bool,
    ) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        if self.may_trigger(now, force) {
            self.trigger_now(now, snapshot_type, false, &mut events);
        }
        events
    }

    /// A task acknowledged checkpoint `id` with its snapshot.
    pub fn acknowledge(
        &mut self,
        task: &TaskId,
        id: u64,
        snapshot: TaskSnapshot,
        metrics: TaskCheckpointMetrics,
        now: Duration,
    ) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        let Some(pending) = self.pending.get_mut(&id) else {
            // Late or unknown: its state must not stay behind, unless the
            // checkpoint completed (a repeated acknowledgement).
            if !self
                .finished
                .iter()
                .any(|(f, completed)| *f == id && *completed)
            {
                self.drop_late_snapshot(task, id);
            }
            return events;
        };
        if !pending.waiting_for.remove(task) {
            return events;
        }
        pending
            .acknowledged
            .insert(task.clone(), (snapshot, metrics));
        if pending.waiting_for.is_empty() {
            self.complete(id, now, &mut events);
        }
        events
    }

    /// A task declined checkpoint `id`.
    pub fn decline(
        &mut self,
        id: u64,
        reason: FailureReason,
        now: Duration,
    ) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        if self.pending.contains_key(&id) {
            self.abort(id, reason, now, &mut events);
        }
        events
    }

    /// A task failed: every pending checkpoint aborts (not counted); the
    /// runtime restores the latest completed checkpoint.
    pub fn task_failed(&mut self, now: Duration) -> Vec<CheckpointEvent> {
        let mut events = Vec::new();
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            self.abort(id, FailureReason::TaskFailure, now, &mut events);
        }
        events
    }

    /// A task acknowledged `id` after it was aborted: the files it wrote
    /// into `chk-<id>/` after the abort discarded that directory have no
    /// owner but this call. The directory is discarded again (the store
    /// refuses if `id` completed after all), and the task is told, so its
    /// backends drop their shared files.
    fn drop_late_snapshot(&mut self, task: &TaskId, id: u64) {
        match self.store.discard_pending(id) {
            Ok(()) | Err(StateError::CheckpointAlreadyExists { .. }) => {}
            Err(error) => {
                // What stays is collected when the store is opened again.
                tracing::warn!(checkpoint_id = id, %error, "could not discard a late snapshot");
            }
        }
        self.gateway.notify(task, Notification::Aborted(id));
    }

    fn may_trigger(&self, now: Duration, force: bool) -> bool {
        if self.unresolved.is_some() || !self.ready.is_empty() {
            return false;
        }
        if force {
            return true;
        }
        let paused = self
            .last_completion_at
            .is_some_and(|at| now < at.saturating_add(self.config.min_pause));
        self.pending.len() < self.config.max_concurrent && !paused
    }

    fn trigger_periodic(&mut self, now: Duration, events: &mut Vec<CheckpointEvent>) {
        let (true, Some(planned), Some(interval)) =
            (self.periodic, self.next_trigger_at, self.config.interval)
        else {
            return;
        };
        if planned > now {
            return;
        }
        if let Some(pause_end) = self
            .last_completion_at
            .map(|at| at.saturating_add(self.config.min_pause))
            .filter(|end| *end > now)
        {
            // Inside min-pause: re-armed for the pause's end (Flink's
            // MINIMUM_TIME_BETWEEN_CHECKPOINTS).
            self.next_trigger_at = Some(pause_end);
            return;
        }
        if !self.may_trigger(now, false) {
            return;
        }
        self.trigger_now(now, SnapshotType::Checkpoint, false, events);
        // The plan, not the trigger, sets the next slot; slots missed while
        // waiting are skipped rather than fired back to back.
        let mut next = planned.saturating_add(interval);
        while next <= now {
            next = next.saturating_add(interval);
        }
        if let Some(last) = self.last_completion_at {
            next = next.max(last.saturating_add(self.config.min_pause));
        }
        self.next_trigger_at = Some(next);
    }

    fn start_requested_savepoints(&mut self, now: Duration, events: &mut Vec<CheckpointEvent>) {
        while let Some(request) = self.savepoint_requests.front().copied() {
            // Savepoints are always aligned; they are forced unless
            // unaligned checkpoints are on (Flink).
            let forced = !self.config.unaligned || request.stops_job;
            if !self.may_trigger(now, forced) {
                return;
            }
            self.savepoint_requests.pop_front();
            self.trigger_now(
                now,
                SnapshotType::Savepoint(request.format),
                request.stops_job,
                events,
            );
        }
    }

    fn trigger_now(
        &mut self,
        now: Duration,
        snapshot_type: SnapshotType,
        stops_job: bool,
        events: &mut Vec<CheckpointEvent>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let barrier = CheckpointBarrier {
            id,
            timestamp_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            options: self.config.options(snapshot_type),
        };
        let _span = tracing::info_span!("checkpoint_trigger", checkpoint_id = id).entered();
        self.pending.insert(
            id,
            PendingCheckpoint {
                barrier,
                triggered_at: now,
                waiting_for: self.tasks.clone(),
                acknowledged: BTreeMap::new(),
                stops_job,
            },
        );
        self.stats.triggered(id);
        events.push(CheckpointEvent::Triggered { id, snapshot_type });
        for source in &self.sources {
            self.gateway.trigger(source, barrier);
        }
        if self.tasks.is_empty() {
            self.complete(id, now, events);
        }
        id
    }

    fn complete(&mut self, id: u64, now: Duration, events: &mut Vec<CheckpointEvent>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if self.unresolved.is_some() {
            self.ready.push_back(pending);
            return;
        }
        self.commit(pending, now, events);
    }

    fn abort(
        &mut self,
        id: u64,
        reason: FailureReason,
        now: Duration,
        events: &mut Vec<CheckpointEvent>,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let _ = now;
        tracing::info!(checkpoint_id = id, %reason, "checkpoint aborted");
        if let Err(error) = self.store.discard_pending(id) {
            // What stays is collected when the store is opened again.
            tracing::warn!(checkpoint_id = id, %error, "could not discard the aborted checkpoint's directory");
        }
        for task in &self.tasks {
            self.gateway.notify(task, Notification::Aborted(id));
        }
        self.remember(id, false);
        if pending.stops_job && !self.savepoint_requests.iter().any(|r| r.stops_job) {
            // The stop failed: the job keeps running.
            self.periodic = self.config.interval.is_some();
        }
        let exceeded = self.failures.failed(id, &reason);
        self.stats.failed();
        events.push(CheckpointEvent::Aborted { id, reason });
        if exceeded {
            events.push(CheckpointEvent::TolerableFailuresExceeded {
                id,
                failures: self.failures.count(),
            });
        }
    }

    fn remember(&mut self, id: u64, completed: bool) {
        self.finished.push_back((id, completed));
        while self.finished.len() > REMEMBERED_FINISHED {
            self.finished.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
