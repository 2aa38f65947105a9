//! A task's checkpoints between its synchronous phase and its
//! acknowledgement: the acknowledgement goes out once the upload of the
//! keyed state (if any) and the channel state (if unaligned) are both
//! written.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use state_api::channel_state::ChannelStateHandle;
use state_api::{Result, SnapshotResult};
use state_runtime::coordinator::{TaskCheckpointMetrics, TaskSnapshot};
use state_runtime::input::Trigger;

use super::control::{TaskContext, TaskReport};

/// One checkpoint the task started and has not acknowledged.
struct Pending {
    snapshot: TaskSnapshot,
    waiting_for_upload: bool,
    waiting_for_channel_state: bool,
    metrics: TaskCheckpointMetrics,
    started: Instant,
}

/// The task's unacknowledged checkpoints.
pub struct PendingAcks {
    /// The operator id the task's keyed and channel state go under.
    operator_id: &'static str,
    pending: BTreeMap<u64, Pending>,
}

impl PendingAcks {
    /// Checkpoints of a task whose state goes under `operator_id`.
    pub fn new(operator_id: &'static str) -> Self {
        Self {
            operator_id,
            pending: BTreeMap::new(),
        }
    }

    /// The synchronous phase of `trigger` ran in `sync_duration` and
    /// produced `snapshot`; `upload` says whether an asynchronous upload
    /// follows.
    pub fn started(
        &mut self,
        trigger: &Trigger,
        snapshot: TaskSnapshot,
        upload: bool,
        sync_duration: Duration,
        ctx: &TaskContext,
    ) {
        let id = trigger.barrier.id;
        self.pending.insert(
            id,
            Pending {
                snapshot,
                waiting_for_upload: upload,
                waiting_for_channel_state: trigger.is_unaligned(),
                metrics: TaskCheckpointMetrics {
                    start_delay: trigger.start_delay,
                    alignment: trigger.alignment,
                    sync_duration,
                    unaligned: trigger.is_unaligned(),
                    ..TaskCheckpointMetrics::default()
                },
                started: Instant::now(),
            },
        );
        self.try_ack(id, ctx);
    }

    /// The keyed state upload of `id` ended.
    pub fn upload_done(&mut self, id: u64, result: Result<SnapshotResult>, ctx: &TaskContext) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return; // aborted meanwhile: the backend was told
        };
        match result {
            Ok(result) => {
                pending.snapshot = std::mem::take(&mut pending.snapshot)
                    .with_keyed(self.operator_id, [result.handle]);
                pending.waiting_for_upload = false;
                self.try_ack(id, ctx);
            }
            Err(error) => {
                self.pending.remove(&id);
                ctx.decline(id, format!("keyed state upload failed: {error}"));
            }
        }
    }

    /// The in-flight records of unaligned checkpoint `id` are written.
    pub fn channel_state_written(
        &mut self,
        id: u64,
        handle: Option<ChannelStateHandle>,
        alignment: Duration,
        persisted_bytes: u64,
        ctx: &TaskContext,
    ) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        if let Some(handle) = handle {
            pending.snapshot =
                std::mem::take(&mut pending.snapshot).with_channel_state(self.operator_id, handle);
        }
        pending.metrics.alignment = alignment;
        pending.metrics.persisted_in_flight_bytes = persisted_bytes;
        pending.waiting_for_channel_state = false;
        self.try_ack(id, ctx);
    }

    /// Checkpoint `id` will not complete: forget it.
    pub fn forget(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    fn try_ack(&mut self, id: u64, ctx: &TaskContext) {
        let ready = self
            .pending
            .get(&id)
            .is_some_and(|p| !p.waiting_for_upload && !p.waiting_for_channel_state);
        if !ready {
            return;
        }
        let Some(mut pending) = self.pending.remove(&id) else {
            return;
        };
        pending.metrics.async_duration = pending.started.elapsed();
        ctx.report(TaskReport::Ack {
            task: ctx.id.clone(),
            id,
            snapshot: pending.snapshot,
            metrics: pending.metrics,
        });
    }
}
