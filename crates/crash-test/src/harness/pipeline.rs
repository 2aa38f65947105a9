//! The crash test's job, single-threaded: one subtask (backend + operator) per parallel instance,
//! records routed by key group as `keyBy` does, and the two-phase checkpoint
//! of all subtasks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state_api::backend::handles_for_range;
use state_api::key_group::{
    assign_to_key_group, key_group_range_for_operator, operator_index_for_key_group,
};
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyedStateBackend, KeyedStateHandle, Result,
    SnapshotOptions, SnapshotResult, SnapshotType, StateBackendFactory, StateError,
};

use state_job::events::Event;
use state_job::operator::{KeySummary, KeyedAggregator, WINDOW_MS};

/// One parallel instance of the keyed operator.
struct Subtask {
    backend: Box<dyn KeyedStateBackend>,
    operator: KeyedAggregator,
}

/// What a pipeline restores its state from.
#[derive(Clone, Default)]
pub(crate) struct Restore {
    /// The handles of the job's operator (taken at any parallelism).
    pub handles: Vec<KeyedStateHandle>,
    /// Where the handles are when not in the job's own checkpoint storage
    /// (a savepoint, another job's checkpoint).
    pub storage: Option<Arc<dyn CheckpointStorageAccess>>,
    /// Restored states the operator no longer registers, to leave out.
    pub skip: Vec<String>,
}

/// All subtasks of the job at one parallelism.
pub(crate) struct Pipeline {
    max_parallelism: u32,
    subtasks: Vec<Subtask>,
    /// The window of the last event processed; a later window closes it.
    current_window: Option<u64>,
    key_buffer: Vec<u8>,
}

/// A checkpoint whose synchronous phases ran and whose uploads are running.
pub(crate) struct PendingCheckpoint {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Source offset the checkpoint covers: events before it are in the state.
    pub source_offset: u64,
    /// Time spent in the synchronous phases (the pause the job saw).
    pub sync_duration: Duration,
    started: Instant,
    uploads: Vec<JoinHandle<Result<SnapshotResult>>>,
}

/// A checkpoint whose uploads all finished.
pub(crate) struct FinishedCheckpoint {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Source offset it covers.
    pub source_offset: u64,
    /// One handle per subtask.
    pub handles: Vec<KeyedStateHandle>,
    /// Bytes uploaded by this checkpoint.
    pub uploaded_bytes: u64,
    /// Total state size it references.
    pub state_size: u64,
    /// Time of the synchronous phases.
    pub sync_duration: Duration,
    /// Time from trigger to the last upload finishing.
    pub total_duration: Duration,
}

impl PendingCheckpoint {
    /// Whether every upload has finished.
    pub(crate) fn is_done(&self) -> bool {
        self.uploads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every upload and collects the handles.
    ///
    /// # Errors
    /// The first upload error; the checkpoint must then be aborted.
    pub(crate) fn finish(self) -> Result<FinishedCheckpoint> {
        let mut handles = Vec::with_capacity(self.uploads.len());
        let mut uploaded_bytes = 0;
        let mut first_error = None;
        for upload in self.uploads {
            match upload.join() {
                Ok(Ok(result)) => {
                    uploaded_bytes += result.uploaded_bytes;
                    handles.push(result.handle);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(StateError::SnapshotCancelled {
                        checkpoint_id: self.checkpoint_id,
                        reason: "upload thread panicked".into(),
                    });
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let state_size = handles.iter().map(KeyedStateHandle::state_size).sum();
        Ok(FinishedCheckpoint {
            checkpoint_id: self.checkpoint_id,
            source_offset: self.source_offset,
            handles,
            uploaded_bytes,
            state_size,
            sync_duration: self.sync_duration,
            total_duration: self.started.elapsed(),
        })
    }
}

impl Pipeline {
    /// Builds `parallelism` subtasks, each restoring the key groups it owns
    /// from the `restore` handles that overlap its range; new snapshots go
    /// to `storage`.
    ///
    /// # Errors
    /// Invalid parallelism, restore failures.
    pub(crate) fn start(
        factory: &dyn StateBackendFactory,
        storage: Arc<dyn CheckpointStorageAccess>,
        max_parallelism: u32,
        parallelism: u32,
        restore: &Restore,
        resume_offset_window: Option<u64>,
    ) -> Result<Self> {
        let mut subtasks = Vec::with_capacity(parallelism as usize);
        for index in 0..parallelism {
            let range = key_group_range_for_operator(max_parallelism, parallelism, index)?;
            let mut backend = factory.create(BackendContext {
                operator: format!("keyed-aggregator-{index}"),
                max_parallelism,
                key_group_range: range,
                restore: handles_for_range(&restore.handles, range),
                storage: Arc::clone(&storage),
                restore_storage: restore.storage.clone(),
                skip_restored_states: restore.skip.clone(),
            })?;
            let operator = KeyedAggregator::register(&mut *backend)?;
            subtasks.push(Subtask { backend, operator });
        }
        Ok(Self {
            max_parallelism,
            subtasks,
            current_window: resume_offset_window,
            key_buffer: Vec::new(),
        })
    }

    /// Processes one event: advances the event-time clock (closing finished
    /// windows on every subtask, as a watermark would) and routes the event to
    /// the subtask owning its key group.
    ///
    /// # Errors
    /// State errors.
    pub(crate) fn process(&mut self, event: &Event) -> Result<()> {
        let window = event.timestamp_ms / WINDOW_MS;
        if self.current_window.is_some_and(|w| w < window) {
            // The watermark reaches the new window's first ms - 1: the
            // timers of every earlier window fire.
            let watermark = window * WINDOW_MS - 1;
            for subtask in &mut self.subtasks {
                subtask
                    .operator
                    .advance_watermark(&mut *subtask.backend, watermark)?;
            }
        }
        self.current_window = Some(window);
        self.key_buffer.clear();
        state_api::codec::encode_into(&event.key, &mut self.key_buffer)?;
        let key_group = assign_to_key_group(&self.key_buffer, self.max_parallelism)?;
        let parallelism = self.subtasks.len() as u32;
        let index = operator_index_for_key_group(self.max_parallelism, parallelism, key_group)?;
        let subtask = &mut self.subtasks[index as usize];
        subtask.operator.process(&mut *subtask.backend, event)
    }

    /// Runs the synchronous phase of a checkpoint on every subtask and
    /// starts their uploads on background threads; processing may continue
    /// meanwhile.
    ///
    /// # Errors
    /// A failed synchronous phase.
    pub(crate) fn trigger_checkpoint(
        &mut self,
        checkpoint_id: u64,
        source_offset: u64,
        timestamp_ms: u64,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Result<PendingCheckpoint> {
        self.trigger_snapshot(
            checkpoint_id,
            source_offset,
            timestamp_ms,
            SnapshotType::Checkpoint,
            storage,
        )
    }

    /// [`trigger_checkpoint`](Self::trigger_checkpoint) for any snapshot
    /// type (a savepoint goes to the savepoint's own storage).
    ///
    /// # Errors
    /// A failed synchronous phase.
    pub(crate) fn trigger_snapshot(
        &mut self,
        checkpoint_id: u64,
        source_offset: u64,
        timestamp_ms: u64,
        snapshot_type: SnapshotType,
        storage: &Arc<dyn CheckpointStorageAccess>,
    ) -> Result<PendingCheckpoint> {
        let started = Instant::now();
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms,
        };
        let mut tasks = Vec::with_capacity(self.subtasks.len());
        let mut failure = None;
        for subtask in &mut self.subtasks {
            match subtask
                .backend
                .snapshot(checkpoint_id, &options, Arc::clone(storage))
            {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            // The subtasks that did snapshot must forget this checkpoint.
            drop(tasks);
            self.notify_aborted(checkpoint_id)?;
            return Err(e);
        }
        let sync_duration = started.elapsed();
        let uploads = tasks
            .into_iter()
            .map(|task| std::thread::spawn(move || task.run()))
            .collect();
        Ok(PendingCheckpoint {
            checkpoint_id,
            source_offset,
            sync_duration,
            started,
            uploads,
        })
    }

    /// Tells every subtask that the checkpoint completed.
    ///
    /// # Errors
    /// Backend errors.
    pub(crate) fn notify_complete(&mut self, checkpoint_id: u64, subsumed: &[u64]) -> Result<()> {
        for subtask in &mut self.subtasks {
            subtask.backend.notify_checkpoint_complete(checkpoint_id)?;
            for id in subsumed {
                subtask.backend.notify_checkpoint_subsumed(*id)?;
            }
        }
        Ok(())
    }

    /// Tells every subtask that the checkpoint was aborted.
    ///
    /// # Errors
    /// Backend errors.
    pub(crate) fn notify_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        for subtask in &mut self.subtasks {
            subtask.backend.notify_checkpoint_aborted(checkpoint_id)?;
        }
        Ok(())
    }

    /// Reads back every key's state from every subtask.
    ///
    /// # Errors
    /// State errors.
    pub(crate) fn summarize(&mut self) -> Result<BTreeMap<u64, KeySummary>> {
        let mut all = BTreeMap::new();
        for subtask in &mut self.subtasks {
            all.extend(subtask.operator.summarize(&mut *subtask.backend)?);
        }
        Ok(all)
    }
}
