//! The changelog wrapper: every mutation goes to the wrapped backend and to
//! the log; checkpoints are the last materialization plus the log after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use state_api::backend::EntryVisitor;
use state_api::key_group::{key_group_for_hash, key_hash};
use state_api::registry::StateRegistry;
use state_api::timers::{Timer, encode_timestamp};
use state_api::{
    AsyncSnapshot, CheckpointStorageAccess, KeyGroup, KeyGroupRange, KeyedStateBackend, Result,
    SnapshotOptions, SnapshotType, StateError, StateId, StateKind, StateMeta, StateRegistration,
};

use crate::config::MaterializationConfig;
use crate::log::LogWriter;
use crate::materialize::{Base, BaseEvents, Bases, InFlight};
use crate::metrics::BackendMetrics;
use crate::record::{Op, Target};
use crate::upload::{ChangelogUploader, SegmentSlot};
use handle::HandleFrame;
use materialization::first_delay;

mod handle;
mod materialization;

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

    #[inline]
    fn delegate_id(&self, state: StateId) -> Result<StateId> {
        self.states
            .get(state)?
            .data
            .delegate
            .ok_or_else(|| StateError::UnknownState { state_id: state.0 })
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

    // Timers are logged in their canonical map form (timestamp as user key),
    // and only when they change: a duplicate add or an absent remove logs
    // nothing.
    fn timer_add(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        let id = self.delegate_id(state)?;
        let added = self.delegate.timer_add(id, namespace, timestamp)?;
        if added {
            let ts = encode_timestamp(timestamp);
            self.log_keyed(Op::AddOrUpdateElement, state, namespace, &[&ts, &[]])?;
        }
        Ok(added)
    }

    fn timer_remove(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        let id = self.delegate_id(state)?;
        let removed = self.delegate.timer_remove(id, namespace, timestamp)?;
        if removed {
            let ts = encode_timestamp(timestamp);
            self.log_keyed(Op::RemoveElement, state, namespace, &[&ts])?;
        }
        Ok(removed)
    }

    fn timer_peek(&mut self, state: StateId) -> Result<Option<i64>> {
        let id = self.delegate_id(state)?;
        self.delegate.timer_peek(id)
    }

    fn timer_poll(&mut self, state: StateId, up_to: i64) -> Result<Option<Timer>> {
        let id = self.delegate_id(state)?;
        let Some(timer) = self.delegate.timer_poll(id, up_to)? else {
            return Ok(None);
        };
        // The polled timer's key need not be the current one.
        let key_group = key_group_for_hash(key_hash(&timer.key), self.delegate.max_parallelism());
        let target = Target {
            state: state.0,
            key_group,
            key: &timer.key,
            namespace: &timer.namespace,
        };
        self.log.keyed(
            Op::RemoveElement,
            &target,
            &[&encode_timestamp(timer.timestamp)],
        );
        self.stats.records += 1;
        Ok(Some(timer))
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
