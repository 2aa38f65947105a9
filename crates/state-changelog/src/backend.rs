//! The changelog wrapper: every mutation goes to the wrapped backend and to
//! the log; checkpoints are the last materialization plus the log after it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use state_api::backend::EntryVisitor;
use state_api::registry::StateRegistry;
use state_api::{
    AsyncSnapshot, ChangelogPart, ChangelogStateHandle, CheckpointStorageAccess, KeyGroup,
    KeyGroupRange, KeyedStateBackend, KeyedStateHandle, Result, SnapshotOptions, SnapshotResult,
    SnapshotType, StateError, StateId, StateKind, StateMeta, StateRegistration,
};

use crate::config::MaterializationConfig;
use crate::log::{LogWriter, PersistedSegment};
use crate::materialize::{Base, BaseEvents, Bases, InFlight, SharedScope};
use crate::metrics::BackendMetrics;
use crate::record::{Op, Target};
use crate::upload::{ChangelogUploader, SegmentSlot};

/// Name of this backend in errors and [`KeyedStateBackend::backend_name`].
pub const BACKEND_NAME: &str = "changelog";

/// State operations between two checks of the materialization timer.
const OPS_PER_TIMER_CHECK: u32 = 1024;

/// The wrapper's part of a state: the wrapped backend's id for it, once
/// registered there.
pub(crate) struct WrappedState {
    pub(crate) delegate: Option<StateId>,
}

/// A checkpoint whose outcome is not known yet.
struct PendingCheckpoint {
    base_id: u64,
    from_sqn: u64,
    slots: Vec<Arc<SegmentSlot>>,
}

/// Counters of one changelog backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangelogStats {
    /// Records logged.
    pub records: u64,
    /// Materializations that succeeded.
    pub materializations: u64,
    /// Bytes the successful materializations uploaded.
    pub materialized_bytes: u64,
    /// Materializations that failed.
    pub failed_materializations: u64,
    /// Segments of the log not truncated yet.
    pub live_segments: usize,
    /// Log bytes buffered and not handed to the uploader yet.
    pub buffered_bytes: usize,
    /// Bytes of handed-over segments still held in memory (not uploaded
    /// yet, or failed and waiting for the next checkpoint).
    pub retained_bytes: usize,
}

/// A [`KeyedStateBackend`] that wraps another and logs every change; see the
/// [crate docs](crate).
pub struct ChangelogKeyedStateBackend {
    delegate: Box<dyn KeyedStateBackend>,
    states: StateRegistry<WrappedState>,
    log: LogWriter,
    storage: Arc<dyn CheckpointStorageAccess>,
    config: MaterializationConfig,
    bases: Bases,
    in_flight: Option<Arc<InFlight>>,
    next_materialization_id: u64,
    next_due: Option<Instant>,
    ops_until_check: u32,
    consecutive_failures: u32,
    failure: Option<String>,
    pending: BTreeMap<u64, PendingCheckpoint>,
    scratch: Vec<u8>,
    stats: ChangelogStats,
    metrics: BackendMetrics,
}

/// What restore hands to [`ChangelogKeyedStateBackend::new`].
pub(crate) struct Restored {
    pub(crate) delegate: Box<dyn KeyedStateBackend>,
    /// Wrapped-backend ids of states the replay registered there.
    pub(crate) replay_ids: Vec<(String, StateId)>,
    /// The base to continue from, if the restore allows one.
    pub(crate) base: Option<Base>,
    /// Next materialization id (above every restored one).
    pub(crate) next_materialization_id: u64,
}

impl ChangelogKeyedStateBackend {
    pub(crate) fn new(
        restored: Restored,
        uploader: Arc<ChangelogUploader>,
        storage: Arc<dyn CheckpointStorageAccess>,
        config: MaterializationConfig,
        operator: &str,
    ) -> Result<Self> {
        let Restored {
            delegate,
            replay_ids,
            base,
            next_materialization_id,
        } = restored;
        let mut states = StateRegistry::default();
        let key_groups = delegate.key_group_range();
        let mut log = LogWriter::new(
            Arc::clone(&uploader),
            Arc::clone(&storage),
            delegate.key_group_range(),
        );
        for meta in delegate.state_metas() {
            let id = replay_ids
                .iter()
                .find(|(name, _)| *name == meta.name)
                .map(|(_, id)| *id);
            states.restore(&meta, |_| Ok(WrappedState { delegate: id }))?;
            log.set_state_table_entry(meta);
        }
        let next_due = config
            .interval
            .map(|interval| Instant::now() + first_delay(operator, interval));
        Ok(Self {
            delegate,
            states,
            log,
            storage,
            config,
            bases: base.map(Bases::restored).unwrap_or_default(),
            in_flight: None,
            next_materialization_id,
            next_due,
            ops_until_check: OPS_PER_TIMER_CHECK,
            consecutive_failures: 0,
            failure: None,
            pending: BTreeMap::new(),
            scratch: Vec::new(),
            stats: ChangelogStats::default(),
            metrics: BackendMetrics::new(operator, key_groups),
        })
    }

    /// The wrapped backend (read-only: writes must go through the wrapper).
    pub fn delegate(&self) -> &dyn KeyedStateBackend {
        &*self.delegate
    }

    /// Counters of this backend.
    pub fn stats(&self) -> ChangelogStats {
        ChangelogStats {
            live_segments: self.log.segment_count(),
            buffered_bytes: self.log.buffered_bytes(),
            retained_bytes: self.log.retained_bytes(),
            ..self.stats
        }
    }

    /// Starts a materialization now (if none runs and something changed
    /// since the last one) and returns its id.
    ///
    /// # Errors
    /// Failures of the wrapped backend's synchronous snapshot phase.
    pub fn trigger_materialization(&mut self) -> Result<Option<u64>> {
        self.poll_materialization();
        if self.in_flight.is_some() || !self.changed_since_base() {
            return Ok(None);
        }
        self.start_materialization(SnapshotType::Checkpoint)
            .map(|m| Some(m.id))
    }

    /// Waits for the running materialization, if any, and installs it as the
    /// base of later checkpoints. Returns whether one succeeded.
    pub fn wait_for_materialization(&mut self) -> bool {
        let Some(in_flight) = self.in_flight.clone() else {
            return false;
        };
        let ok = in_flight.wait(0).is_ok();
        self.poll_materialization();
        ok
    }

    /// Id of the materialization later checkpoints build on.
    pub fn materialization_id(&self) -> Option<u64> {
        self.bases.current().map(|b| b.id)
    }

    fn changed_since_base(&self) -> bool {
        match self.bases.current() {
            Some(base) => self.log.next_sqn() > base.sqn,
            None => true,
        }
    }

    fn check_failure(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(message) => Err(StateError::Backend {
                backend: BACKEND_NAME,
                source: message.clone().into(),
            }),
        }
    }

    /// The periodic part, run every few thousand operations and after each
    /// completed checkpoint: install finished materializations, start due
    /// ones.
    #[cold]
    fn timer_check(&mut self) -> Result<()> {
        self.ops_until_check = OPS_PER_TIMER_CHECK;
        self.poll_materialization();
        self.check_failed_uploads();
        self.check_failure()?;
        if let (Some(due), Some(interval)) = (self.next_due, self.config.interval)
            && Instant::now() >= due
        {
            self.next_due = Some(Instant::now() + interval);
            if self.in_flight.is_none()
                && self.changed_since_base()
                && let Err(e) = self.start_materialization(SnapshotType::Checkpoint)
            {
                self.materialization_failed(&e.to_string());
                self.check_failure()?;
            }
        }
        Ok(())
    }

    fn start_materialization(&mut self, snapshot_type: SnapshotType) -> Result<Arc<InFlight>> {
        let id = self.next_materialization_id;
        self.next_materialization_id += 1;
        let sqn = self.log.next_sqn();
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms: now_ms(),
        };
        let storage: Arc<dyn CheckpointStorageAccess> =
            Arc::new(SharedScope(Arc::clone(&self.storage)));
        let task = self.delegate.snapshot(id, &options, storage)?;
        let in_flight = Arc::new(InFlight::new(id, sqn));
        let worker = Arc::clone(&in_flight);
        std::thread::Builder::new()
            .name(format!("materialize-{id}"))
            .spawn(move || {
                // A panicking snapshot must still wake every waiter.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run()))
                    .unwrap_or_else(|_| {
                        Err(StateError::SnapshotCancelled {
                            checkpoint_id: id,
                            reason: "the wrapped backend's snapshot panicked".into(),
                        })
                    });
                worker.complete(outcome);
            })
            .map_err(|e| StateError::Backend {
                backend: BACKEND_NAME,
                source: Box::new(e),
            })?;
        self.in_flight = Some(Arc::clone(&in_flight));
        self.metrics.materialization_started();
        Ok(in_flight)
    }

    /// Installs a finished materialization (or counts its failure).
    fn poll_materialization(&mut self) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.is_finished()) else {
            return;
        };
        match in_flight.wait(in_flight.id) {
            Ok(result) => {
                self.consecutive_failures = 0;
                self.stats.materializations += 1;
                self.stats.materialized_bytes += result.uploaded_bytes;
                self.metrics.materialization_completed(
                    in_flight.took(),
                    result.handle.state_size(),
                    result.uploaded_bytes,
                );
                let mut events = BaseEvents::default();
                self.bases.install(
                    Base {
                        id: in_flight.id,
                        sqn: in_flight.sqn,
                        handles: vec![result.handle],
                        restored_log: Vec::new(),
                        confirmed: false,
                        kept: false,
                    },
                    &mut events,
                );
                self.apply(events);
                self.truncate();
            }
            Err(e) => {
                // The wrapped backend forgets the snapshot; its partial
                // files were never referenced.
                let _ = self.delegate.notify_checkpoint_aborted(in_flight.id);
                self.materialization_failed(&e.to_string());
            }
        }
    }

    /// During a long storage outage the log's failed segments pile up in
    /// memory, waiting to be submitted again. Past the uploader's in-flight
    /// limit the backend fails instead, so the job restarts from its last
    /// checkpoint rather than running out of memory.
    fn check_failed_uploads(&mut self) {
        let failed = self.log.failed_bytes();
        let limit = self.log.max_failed_bytes();
        if failed > limit && self.failure.is_none() {
            self.failure = Some(format!(
                "{failed} bytes of the change log failed to upload and are held in memory, \
                 more than state.changelog.dstl.dfs.upload.max-in-flight ({limit} bytes): \
                 checkpoint storage is unavailable"
            ));
        }
    }

    fn materialization_failed(&mut self, message: &str) {
        self.stats.failed_materializations += 1;
        self.metrics.materialization_failed();
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.config.max_failures_allowed {
            self.failure = Some(format!(
                "{} consecutive materializations failed (state.changelog.max-failures-allowed \
                 is {}); the last: {message}",
                self.consecutive_failures, self.config.max_failures_allowed
            ));
        }
    }

    fn apply(&mut self, events: BaseEvents) {
        for id in events.confirmed {
            // Clean-up only: a failure leaves the wrapped backend re-uploading.
            let _ = self.delegate.notify_checkpoint_complete(id);
        }
        for id in events.abandoned {
            // The wrapped backend deletes what the snapshot uploaded itself.
            let _ = self.delegate.notify_checkpoint_aborted(id);
        }
    }

    /// Drops the log segments neither the base nor a pending checkpoint needs.
    fn truncate(&mut self) {
        let base_sqn = self.bases.current().map_or(0, |b| b.sqn);
        let pending_sqn = self.pending.values().map(|p| p.from_sqn).min();
        let upto = pending_sqn.map_or(base_sqn, |p| p.min(base_sqn));
        self.log.truncate(upto);
    }

    #[inline]
    fn delegate_id(&self, state: StateId) -> Result<StateId> {
        self.states
            .get(state)?
            .data
            .delegate
            .ok_or(StateError::UnknownState { state_id: state.0 })
    }

    /// Logs a keyed record for the current key.
    #[inline]
    fn log_keyed(
        &mut self,
        op: Op,
        state: StateId,
        namespace: &[u8],
        payload: &[&[u8]],
    ) -> Result<()> {
        let (key, key_group) = current_key(&*self.delegate)?;
        let target = Target {
            state: state.0,
            key_group,
            key,
            namespace,
        };
        self.log.keyed(op, &target, payload);
        self.stats.records += 1;
        Ok(())
    }

    /// The materialization a checkpoint builds on: the current base, or a
    /// running (or new) materialization when there is none or the
    /// checkpoint must be full.
    fn checkpoint_base(&mut self, checkpoint_id: u64, full: bool) -> Result<BaseSource> {
        if full {
            if let Some(in_flight) = self.in_flight.clone() {
                // One materialization at a time: let the running one finish.
                let _ = in_flight.wait(checkpoint_id);
                self.poll_materialization();
            }
            let in_flight = self.start_materialization(SnapshotType::FullCheckpoint)?;
            return Ok(BaseSource::InFlight(in_flight));
        }
        if let Some(base) = self.bases.current() {
            return Ok(BaseSource::Ready(base.clone()));
        }
        // No base yet (new backend, or restored from another format or at
        // another parallelism): this checkpoint materializes.
        Ok(BaseSource::InFlight(match self.in_flight.clone() {
            Some(in_flight) => in_flight,
            None => self.start_materialization(SnapshotType::Checkpoint)?,
        }))
    }

    fn finish_checkpoint(&mut self, checkpoint_id: u64, completed: bool) {
        let mut events = BaseEvents::default();
        if let Some(pending) = self.pending.remove(&checkpoint_id) {
            if completed {
                self.log.confirm(&pending.slots);
                self.bases
                    .checkpoint_completed(pending.base_id, &mut events);
            } else {
                self.bases.checkpoint_aborted(pending.base_id, &mut events);
            }
        }
        if completed {
            // Older pending checkpoints may be committed too (retained, their
            // notices late or lost): their outcome is unknown, so their log
            // segments and materializations are never deleted here (the
            // checkpoint store owns or collects them). They stop holding
            // back the log's truncation.
            let older: Vec<u64> = self
                .pending
                .range(..checkpoint_id)
                .map(|(id, _)| *id)
                .collect();
            for id in older {
                if let Some(pending) = self.pending.remove(&id) {
                    self.log.confirm(&pending.slots);
                    self.bases.checkpoint_outcome_unknown(pending.base_id);
                }
            }
        }
        self.apply(events);
        self.truncate();
    }
}

impl Drop for ChangelogKeyedStateBackend {
    /// Gives up the materializations no checkpoint that may be committed
    /// references (the wrapped backend deletes their uploads; a running one
    /// is waited for first). Pending checkpoints may still be committed by the
    /// coordinator (a failure between commit and notice): what they
    /// reference stays, for the checkpoint store to own or collect.
    fn drop(&mut self) {
        // A running materialization is waited for, so that its uploads are
        // known (and deleted) before the backend is gone, not left behind
        // by a thread that finishes later.
        if let Some(in_flight) = self.in_flight.clone() {
            let _ = in_flight.wait(0);
            self.poll_materialization();
        }
        let mut used = Vec::new();
        let mut unknown_slots = Vec::new();
        for pending in std::mem::take(&mut self.pending).into_values() {
            self.bases.checkpoint_outcome_unknown(pending.base_id);
            used.push(pending.base_id);
            unknown_slots.extend(pending.slots);
        }
        // The log's segments: those a checkpoint of unknown outcome includes
        // stay (the checkpoint store owns or collects them), so do those a
        // completed checkpoint confirmed; the rest, seen by no checkpoint
        // or only by aborted ones, are deleted.
        self.log.close(&unknown_slots);
        let mut events = BaseEvents::default();
        self.bases.close(&mut events);
        // A checkpoint may be built on a materialization still running.
        if let Some(in_flight) = self.in_flight.take()
            && !used.contains(&in_flight.id)
        {
            events.abandoned.push(in_flight.id);
        }
        self.apply(events);
    }
}

/// The wrapped backend's current key and its key group.
#[inline]
fn current_key(delegate: &dyn KeyedStateBackend) -> Result<(&[u8], KeyGroup)> {
    match (delegate.current_key(), delegate.current_key_group()) {
        (Some(key), Some(key_group)) => Ok((key, key_group)),
        _ => Err(StateError::NoCurrentKey),
    }
}

/// Where a checkpoint's materialized part comes from.
enum BaseSource {
    Ready(Base),
    InFlight(Arc<InFlight>),
}

impl BaseSource {
    /// Materialization id, and the log position its changes end at.
    fn id_and_sqn(&self) -> (u64, u64) {
        match self {
            BaseSource::Ready(base) => (base.id, base.sqn),
            BaseSource::InFlight(in_flight) => (in_flight.id, in_flight.sqn),
        }
    }
}

/// Delay of the first periodic materialization: a stable fraction of the
/// interval per operator, so instances of a job do not all materialize at
/// once (Flink's randomized offset).
fn first_delay(operator: &str, interval: Duration) -> Duration {
    let mut hasher = std::hash::DefaultHasher::new();
    operator.hash(&mut hasher);
    let nanos = interval.as_nanos().max(1);
    let offset = u128::from(hasher.finish()) % nanos;
    Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl KeyedStateBackend for ChangelogKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.delegate.key_group_range()
    }

    fn max_parallelism(&self) -> u32 {
        self.delegate.max_parallelism()
    }

    fn register_state(&mut self, registration: StateRegistration) -> Result<StateId> {
        registration.validate()?;
        let known = self.states.len();
        // The wrapped backend checks kinds and types against what it holds.
        let delegate_id = self.delegate.register_state(registration.clone())?;
        let meta = registration.meta.clone();
        let id = self.states.register(registration, |_| {
            Ok(WrappedState {
                delegate: Some(delegate_id),
            })
        })?;
        self.states.get_mut(id)?.data.delegate = Some(delegate_id);
        if self.states.len() > known {
            self.log.add_state(meta);
            self.stats.records += 1;
        }
        Ok(id)
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.states.metas()
    }

    #[inline]
    fn set_current_key(&mut self, encoded_key: &[u8]) -> Result<()> {
        self.ops_until_check -= 1;
        if self.ops_until_check == 0 {
            self.timer_check()?;
        }
        self.delegate.set_current_key(encoded_key)
    }

    fn current_key(&self) -> Option<&[u8]> {
        self.delegate.current_key()
    }

    fn current_key_group(&self) -> Option<KeyGroup> {
        self.delegate.current_key_group()
    }

    #[inline]
    fn get(&mut self, state: StateId, namespace: &[u8]) -> Result<Option<&[u8]>> {
        let id = self.delegate_id(state)?;
        self.delegate.get(id, namespace)
    }

    fn put(&mut self, state: StateId, namespace: &[u8], value: &[u8]) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.put(id, namespace, value)?;
        self.log_keyed(Op::Set, state, namespace, &[value])
    }

    fn clear(&mut self, state: StateId, namespace: &[u8]) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.clear(id, namespace)?;
        self.log_keyed(Op::Clear, state, namespace, &[])
    }

    fn list_append(
        &mut self,
        state: StateId,
        namespace: &[u8],
        encoded_elements: &[u8],
    ) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.list_append(id, namespace, encoded_elements)?;
        self.log_keyed(Op::Add, state, namespace, &[encoded_elements])
    }

    fn accumulate(&mut self, state: StateId, namespace: &[u8], input: &[u8]) -> Result<()> {
        let registered = self.states.get(state)?;
        let (true, Some(function), Some(id)) = (
            registered.meta.kind.needs_function(),
            registered.function.as_ref(),
            registered.data.delegate,
        ) else {
            return Err(registered.meta.kind_mismatch(StateKind::Reducing));
        };
        // Fold here and log the result, so replay needs no user function.
        self.scratch.clear();
        let accumulator = self.delegate.get(id, namespace)?;
        function.add(accumulator, input, &mut self.scratch)?;
        self.delegate.put(id, namespace, &self.scratch)?;
        let folded = std::mem::take(&mut self.scratch);
        let logged = self.log_keyed(Op::Set, state, namespace, &[&folded]);
        self.scratch = folded;
        logged
    }

    fn merge_namespaces(&mut self, state: StateId, target: &[u8], sources: &[&[u8]]) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.merge_namespaces(id, target, sources)?;
        let merged = match self.delegate.get(id, target)? {
            Some(value) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(value);
                true
            }
            None => false,
        };
        let (key, key_group) = current_key(&*self.delegate)?;
        let record_target = Target {
            state: state.0,
            key_group,
            key,
            namespace: target,
        };
        let merged = merged.then_some(self.scratch.as_slice());
        self.log.merge(&record_target, merged, sources);
        self.stats.records += 1;
        Ok(())
    }

    #[inline]
    fn map_get(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<&[u8]>> {
        let id = self.delegate_id(state)?;
        self.delegate.map_get(id, namespace, user_key)
    }

    fn map_put(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.map_put(id, namespace, user_key, value)?;
        self.log_keyed(Op::AddOrUpdateElement, state, namespace, &[user_key, value])
    }

    fn map_remove(&mut self, state: StateId, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.map_remove(id, namespace, user_key)?;
        self.log_keyed(Op::RemoveElement, state, namespace, &[user_key])
    }

    fn map_for_each(
        &mut self,
        state: StateId,
        namespace: &[u8],
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.map_for_each(id, namespace, visitor)
    }

    fn for_each_key_and_namespace(
        &mut self,
        state: StateId,
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let id = self.delegate_id(state)?;
        self.delegate.for_each_key_and_namespace(id, visitor)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        options: &SnapshotOptions,
        storage: Arc<dyn CheckpointStorageAccess>,
    ) -> Result<AsyncSnapshot> {
        self.poll_materialization();
        self.check_failure()?;
        let full = match options.snapshot_type {
            // Savepoints are the wrapped backend's own, self-contained.
            SnapshotType::Savepoint(_) => {
                return self.delegate.snapshot(checkpoint_id, options, storage);
            }
            SnapshotType::FullCheckpoint => true,
            _ => false,
        };
        let base = self.checkpoint_base(checkpoint_id, full)?;
        let (base_id, from_sqn) = base.id_and_sqn();
        let to_sqn = self.log.next_sqn();
        let persisted = self.log.persist(from_sqn);
        self.metrics.checkpointed(
            persisted.iter().map(|p| p.bytes).sum(),
            persisted.iter().map(|p| p.new_bytes).sum(),
        );
        self.bases.add_user(base_id);
        self.pending.insert(
            checkpoint_id,
            PendingCheckpoint {
                base_id,
                from_sqn,
                slots: persisted.iter().map(|p| Arc::clone(&p.slot)).collect(),
            },
        );
        let frame = HandleFrame {
            backend: format!("{BACKEND_NAME}-{}", self.delegate.backend_name()),
            checkpoint_id,
            max_parallelism: self.delegate.max_parallelism(),
            key_group_range: self.delegate.key_group_range(),
            states: self.states.metas(),
            from_sqn,
            to_sqn,
        };
        Ok(AsyncSnapshot::new(checkpoint_id, move || {
            frame.finish(base, persisted)
        }))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.poll_materialization();
        self.finish_checkpoint(checkpoint_id, true);
        // After a checkpoint is a good moment for a due materialization:
        // it never lengthens a synchronous phase.
        self.timer_check()
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.poll_materialization();
        self.finish_checkpoint(checkpoint_id, false);
        Ok(())
    }

    fn notify_checkpoint_subsumed(&mut self, _checkpoint_id: u64) -> Result<()> {
        // Subsumed checkpoints' files are the checkpoint store's to delete;
        // the log is truncated by materialization and completion.
        self.poll_materialization();
        Ok(())
    }
}

/// What the asynchronous phase needs to build the handle.
struct HandleFrame {
    backend: String,
    checkpoint_id: u64,
    max_parallelism: u32,
    key_group_range: KeyGroupRange,
    states: Vec<StateMeta>,
    from_sqn: u64,
    to_sqn: u64,
}

impl HandleFrame {
    fn finish(self, base: BaseSource, persisted: Vec<PersistedSegment>) -> Result<SnapshotResult> {
        let (materialization_id, materialized, mut log, mut uploaded_bytes) = match base {
            BaseSource::Ready(base) => (base.id, base.handles, base.restored_log, 0),
            BaseSource::InFlight(in_flight) => {
                let result = in_flight.wait(self.checkpoint_id)?;
                (
                    in_flight.id,
                    vec![result.handle],
                    Vec::new(),
                    result.uploaded_bytes,
                )
            }
        };
        let mut segments = Vec::with_capacity(persisted.len());
        for segment in persisted {
            segments.push(segment.slot.wait()?);
            uploaded_bytes += segment.new_bytes;
        }
        if self.to_sqn > self.from_sqn {
            log.push(ChangelogPart {
                key_group_range: self.key_group_range,
                from_sqn: self.from_sqn,
                to_sqn: self.to_sqn,
                segments,
            });
        }
        Ok(SnapshotResult {
            handle: KeyedStateHandle::Changelog(ChangelogStateHandle {
                backend: self.backend,
                checkpoint_id: self.checkpoint_id,
                max_parallelism: self.max_parallelism,
                key_group_range: self.key_group_range,
                states: self.states,
                materialization_id,
                materialized,
                log,
            }),
            uploaded_bytes,
        })
    }
}
