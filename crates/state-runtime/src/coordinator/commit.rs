//! Committing a fully acknowledged checkpoint through the store, and
//! resolving a commit whose outcome is unknown (see the
//! [module docs](super) on outcomes and who owns the files).

use std::time::Duration;

use state_api::StateError;
use state_storage::{CheckpointKind, CompletedCheckpoint, Resolution};

use super::{
    CheckpointCoordinator, CheckpointEvent, CompletedCheckpointStats, FailureReason, Notification,
    PendingCheckpoint, RESOLVE_RETRY, Unresolved,
};

impl CheckpointCoordinator {
    pub(super) fn commit(
        &mut self,
        pending: PendingCheckpoint,
        now: Duration,
        events: &mut Vec<CheckpointEvent>,
    ) {
        let id = pending.id();
        if self.store.next_checkpoint_id() > id {
            // A newer checkpoint or savepoint committed first; ids only
            // increase in the store.
            self.pending.insert(id, pending);
            self.abort(id, FailureReason::Subsumed, now, events);
            return;
        }
        let _span = tracing::info_span!("checkpoint_commit", checkpoint_id = id).entered();
        let kind = if pending.is_savepoint() {
            CheckpointKind::Savepoint
        } else {
            CheckpointKind::Checkpoint
        };
        let mut checkpoint =
            CompletedCheckpoint::new(self.job_id.clone(), id, pending.barrier.timestamp_ms, kind);
        for (snapshot, _) in pending.acknowledged.values() {
            for (operator, handles) in &snapshot.keyed {
                checkpoint = checkpoint.with_operator(operator.clone(), handles.clone());
            }
            for (operator, handle) in &snapshot.channel {
                checkpoint = checkpoint.with_channel_state(operator.clone(), vec![handle.clone()]);
            }
            for (operator, handle) in &snapshot.operator {
                checkpoint = checkpoint.with_operator_state(operator.clone(), vec![handle.clone()]);
            }
        }
        let already_referenced = self.store.referenced_files();
        let persisted: u64 = checkpoint
            .files()
            .into_iter()
            .filter(|file| !already_referenced.contains(&file.path))
            .map(|file| file.size)
            .sum();
        let full_size = checkpoint.state_size();
        match self.store.add(checkpoint) {
            Ok(subsumed) => {
                self.completed(pending, subsumed, persisted, full_size, now, events);
            }
            Err(StateError::CommitOutcomeUnknown { source, .. }) => {
                tracing::warn!(checkpoint_id = id, error = %source, "commit outcome unknown");
                events.push(CheckpointEvent::CommitOutcomeUnknown {
                    id,
                    error: source.to_string(),
                });
                self.unresolved = Some(Unresolved {
                    pending,
                    persisted,
                    full_size,
                    retry_at: now.saturating_add(RESOLVE_RETRY),
                    reported_stuck: false,
                });
            }
            Err(error) => {
                self.pending.insert(id, pending);
                self.abort(
                    id,
                    FailureReason::FinalizeFailed(error.to_string()),
                    now,
                    events,
                );
            }
        }
    }

    pub(super) fn resolve_unclear_commit(
        &mut self,
        now: Duration,
        events: &mut Vec<CheckpointEvent>,
    ) {
        let Some(unresolved) = self.unresolved.take() else {
            return;
        };
        let id = unresolved.pending.id();
        match self.store.resolve_pending_commit() {
            Ok(Resolution::Committed { subsumed, .. }) => {
                let Unresolved {
                    pending,
                    persisted,
                    full_size,
                    ..
                } = unresolved;
                self.completed(pending, subsumed, persisted, full_size, now, events);
            }
            Ok(Resolution::NotCommitted { .. } | Resolution::NothingPending) => {
                self.pending.insert(id, unresolved.pending);
                self.abort(id, FailureReason::NotCommitted, now, events);
            }
            Err(error) => {
                tracing::debug!(checkpoint_id = id, %error, "commit still unresolved");
                let expired = now
                    >= unresolved
                        .pending
                        .triggered_at
                        .saturating_add(self.config.timeout);
                let report = expired && !unresolved.reported_stuck;
                if report {
                    tracing::warn!(checkpoint_id = id, %error, "commit unresolved past the checkpoint timeout");
                    events.push(CheckpointEvent::CommitUnresolved { id });
                }
                self.unresolved = Some(Unresolved {
                    retry_at: now.saturating_add(RESOLVE_RETRY),
                    reported_stuck: unresolved.reported_stuck || report,
                    ..unresolved
                });
                return;
            }
        }
        // Checkpoints fully acknowledged meanwhile commit now, in order.
        while self.unresolved.is_none() {
            let Some(ready) = self.ready.pop_front() else {
                break;
            };
            self.commit(ready, now, events);
        }
    }

    fn completed(
        &mut self,
        pending: PendingCheckpoint,
        subsumed: Vec<u64>,
        persisted: u64,
        full_size: u64,
        now: Duration,
        events: &mut Vec<CheckpointEvent>,
    ) {
        let id = pending.id();
        let is_savepoint = pending.is_savepoint();
        self.failures.succeeded(id);
        self.last_completion_at = Some(now);
        self.remember(id, true);
        // A savepoint that is not a stop-with-savepoint sends no notices
        // and subsumes nothing (Flink, FLIP-193): sinks do not commit on it.
        if !is_savepoint || pending.stops_job {
            let older: Vec<u64> = self.pending.range(..id).map(|(id, _)| *id).collect();
            for older in older {
                self.abort(older, FailureReason::Subsumed, now, events);
            }
            for task in &self.tasks {
                self.gateway.notify(task, Notification::Complete(id));
                for subsumed in &subsumed {
                    self.gateway.notify(task, Notification::Subsumed(*subsumed));
                }
            }
        }
        let completed = CompletedCheckpointStats {
            id,
            snapshot_type: pending.barrier.options.snapshot_type,
            triggered_at_ms: pending.barrier.timestamp_ms,
            duration: now.saturating_sub(pending.triggered_at),
            persisted_size: persisted,
            full_size,
            subsumed,
            stops_job: pending.stops_job,
            tasks: pending
                .acknowledged
                .into_iter()
                .map(|(task, (_, metrics))| (task, metrics))
                .collect(),
        };
        self.stats.completed(&completed);
        events.push(CheckpointEvent::Completed(completed));
    }
}
