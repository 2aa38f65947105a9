//! The crash test's checkpoint coordinator (the main job's before it became
//! a multi-task dataflow on `state-runtime`): triggers checkpoints of the
//! single-threaded pipeline every so many events,
//! commits them to the checkpoint store, and tells the backends the outcome
//! only once it is certain.
//!
//! # Outcomes
//! * The asynchronous phase failed, or the store refused the checkpoint
//!   before writing `_metadata`: it is **aborted** (the backends are told,
//!   its directory is discarded).
//! * The store committed it: it **completed** (the backends are told, then
//!   of the checkpoints retention subsumed).
//! * The put of `_metadata` failed in a way that may have stored it: the
//!   outcome is **unknown**. Nothing is told and nothing deleted; the
//!   coordinator resolves it through the store before it triggers or adds
//!   another checkpoint, and tells the backends whatever that finds.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use state_api::{CheckpointStorageAccess, Result, StateError};
use state_storage::{CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, Resolution};

use state_job::events::EventStream;

use super::pipeline::{FinishedCheckpoint, PendingCheckpoint, Pipeline};
use super::{OPERATOR_ID, SOURCE_OFFSET};

/// A minimal checkpoint coordinator: triggers, completes and aborts
/// checkpoints of the pipeline and records them.
pub(crate) struct Coordinator {
    pub(crate) job_id: String,
    /// Id of the next checkpoint.
    pub next_id: u64,
    pending: Option<PendingCheckpoint>,
    /// A checkpoint whose commit has an unknown outcome, waiting for the
    /// store to resolve it.
    unresolved: Option<FinishedCheckpoint>,
    /// The checkpoints completed so far.
    pub completed: Vec<FinishedCheckpoint>,
    aborted: Vec<u64>,
}

impl Coordinator {
    /// A coordinator whose first checkpoint gets id `next_id`.
    pub(crate) fn new(job_id: String, next_id: u64) -> Self {
        Self {
            job_id,
            next_id,
            pending: None,
            unresolved: None,
            completed: Vec::new(),
            aborted: Vec::new(),
        }
    }

    /// Processes events `from..to`, triggering a checkpoint every
    /// `checkpoint_interval` events and completing finished ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
        storage: &Arc<dyn CheckpointStorageAccess>,
        stream: &EventStream,
        from: u64,
        to: u64,
        checkpoint_every: u64,
    ) -> Result<()> {
        let progress_every = (stream.event_count() / 10).max(1);
        for offset in from..to {
            if offset > from
                && offset % checkpoint_every.max(1) == 0
                && self.pending.is_none()
                && self.resolve(pipeline, store)?
            {
                let id = self.next_id;
                self.next_id += 1;
                self.pending = Some(pipeline.trigger_checkpoint(id, offset, now_ms(), storage)?);
            }
            if offset % 1_000 == 0
                && self
                    .pending
                    .as_ref()
                    .is_some_and(PendingCheckpoint::is_done)
            {
                self.complete_pending(pipeline, store)?;
            }
            pipeline.process(&stream.event(offset))?;
            if offset % progress_every == 0 && offset > 0 {
                println!("  processed {offset} / {} events", stream.event_count());
            }
        }
        Ok(())
    }

    /// Resolves a commit with unknown outcome, if there is one, and tells
    /// the backends the result. Returns whether the way is clear for the
    /// next checkpoint (nothing left unresolved).
    fn resolve(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
    ) -> Result<bool> {
        match store.resolve_pending_commit() {
            Ok(Resolution::NothingPending) => Ok(true),
            Ok(Resolution::Committed {
                checkpoint_id,
                subsumed,
            }) => {
                pipeline.notify_complete(checkpoint_id, &subsumed)?;
                println!(
                    "  checkpoint {checkpoint_id}: the commit with unknown outcome is committed"
                );
                if let Some(finished) = self.unresolved.take() {
                    self.completed.push(finished);
                }
                Ok(true)
            }
            Ok(Resolution::NotCommitted { checkpoint_id }) => {
                self.unresolved = None;
                let cause = StateError::CheckpointAlreadyExists {
                    checkpoint_id,
                    path: format!("chk-{checkpoint_id}/_metadata"),
                };
                self.abort(pipeline, store, checkpoint_id, &cause)?;
                Ok(true)
            }
            Err(StateError::CommitOutcomeUnknown { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn complete_pending(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
    ) -> Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let id = pending.checkpoint_id;
        let finished = match pending.finish() {
            Ok(finished) => finished,
            Err(e) => return self.abort(pipeline, store, id, &e),
        };
        if !self.resolve(pipeline, store)? {
            // An earlier commit is still open: this one is not attempted.
            let cause = StateError::SnapshotCancelled {
                checkpoint_id: id,
                reason: "the commit of an earlier checkpoint is still unresolved".into(),
            };
            return self.abort(pipeline, store, id, &cause);
        }
        let checkpoint = CompletedCheckpoint::new(
            self.job_id.clone(),
            id,
            now_ms(),
            CheckpointKind::Checkpoint,
        )
        .with_operator(OPERATOR_ID, finished.handles.clone())
        .with_master_state(
            SOURCE_OFFSET,
            state_api::codec::encode(&finished.source_offset)?,
        );
        match store.add(checkpoint) {
            Ok(subsumed) => {
                pipeline.notify_complete(id, &subsumed)?;
                println!(
                    "  checkpoint {id} complete at offset {}: state {}, uploaded {}, sync phase {:.2?}, total {:.2?}",
                    finished.source_offset,
                    human_bytes(finished.state_size),
                    human_bytes(finished.uploaded_bytes),
                    finished.sync_duration,
                    finished.total_duration
                );
                self.completed.push(finished);
                Ok(())
            }
            Err(e @ StateError::CommitOutcomeUnknown { .. }) => {
                // Neither completed nor aborted: the backends keep every
                // file, and the store resolves it before the next one.
                println!("  checkpoint {id}: {e}");
                self.unresolved = Some(finished);
                Ok(())
            }
            Err(e) => self.abort(pipeline, store, id, &e),
        }
    }

    /// A checkpoint that can never complete: the backends delete what they
    /// wrote for it and its directory is removed; the job goes on.
    fn abort(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
        id: u64,
        cause: &StateError,
    ) -> Result<()> {
        println!("  checkpoint {id} failed and is aborted: {cause}");
        pipeline.notify_aborted(id)?;
        if let Err(e) = store.discard_pending(id) {
            // Left over files are garbage for the store's collection.
            println!("  checkpoint {id}: its directory could not be removed: {e}");
        }
        self.aborted.push(id);
        Ok(())
    }

    /// Takes a checkpoint of everything before `offset` now and completes
    /// it (after the one in flight, if any); returns whether it completed.
    ///
    /// # Errors
    /// A failed synchronous phase, backend errors on notification.
    pub(crate) fn checkpoint_now(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
        storage: &Arc<dyn CheckpointStorageAccess>,
        offset: u64,
    ) -> Result<bool> {
        self.complete_pending(pipeline, store)?;
        if !self.resolve(pipeline, store)? {
            return Ok(false);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending = Some(pipeline.trigger_checkpoint(id, offset, now_ms(), storage)?);
        self.complete_pending(pipeline, store)?;
        Ok(self.completed.last().is_some_and(|c| c.checkpoint_id == id))
    }

    /// At the end of the stream: waits for a pending checkpoint, completes
    /// it, and resolves what is unresolved.
    pub(crate) fn drain(
        &mut self,
        pipeline: &mut Pipeline,
        store: &mut CompletedCheckpointStore,
    ) -> Result<()> {
        self.complete_pending(pipeline, store)?;
        self.resolve(pipeline, store).map(|_| ())
    }
}

/// `1234567` → `"1.18 MiB"`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
