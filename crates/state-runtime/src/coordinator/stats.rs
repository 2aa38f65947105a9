//! Checkpoint statistics, exported through the `metrics` facade under
//! Flink's metric names so a runtime reports them to its own system.

use std::collections::BTreeMap;
use std::time::Duration;

use state_api::SnapshotType;

use super::gateway::{TaskCheckpointMetrics, TaskId};

/// The figures of one completed checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletedCheckpointStats {
    /// Its id.
    pub id: u64,
    /// Checkpoint, full checkpoint or savepoint.
    pub snapshot_type: SnapshotType,
    /// When it was triggered, in ms since the Unix epoch.
    pub triggered_at_ms: u64,
    /// From trigger to commit (`lastCheckpointDuration`).
    pub duration: Duration,
    /// Bytes of files no earlier retained checkpoint references
    /// (`lastCheckpointSize`).
    pub persisted_size: u64,
    /// Bytes of all the state it references (`lastCheckpointFullSize`).
    pub full_size: u64,
    /// Checkpoints the retention removed when it was committed.
    pub subsumed: Vec<u64>,
    /// Whether it was a stop-with-savepoint: the job stops now.
    pub stops_job: bool,
    /// Each task's measurements.
    pub tasks: BTreeMap<TaskId, TaskCheckpointMetrics>,
}

impl CompletedCheckpointStats {
    /// The longest alignment over the tasks.
    pub fn max_alignment(&self) -> Duration {
        self.tasks
            .values()
            .map(|m| m.alignment)
            .max()
            .unwrap_or_default()
    }

    /// Whether some task took its snapshot unaligned.
    pub fn is_unaligned(&self) -> bool {
        self.tasks.values().any(|m| m.unaligned)
    }

    /// In-flight bytes persisted as channel state, over all tasks
    /// (`lastCheckpointPersistedData`).
    pub fn persisted_in_flight_bytes(&self) -> u64 {
        self.tasks
            .values()
            .map(|m| m.persisted_in_flight_bytes)
            .sum()
    }
}

/// Counters over the coordinator's life.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointStats {
    /// `totalNumberOfCheckpoints`.
    pub total: u64,
    /// `numberOfCompletedCheckpoints`.
    pub completed: u64,
    /// `numberOfFailedCheckpoints`.
    pub failed: u64,
    /// The newest completed checkpoint's figures.
    pub last_completed: Option<CompletedCheckpointStats>,
}

impl CheckpointStats {
    /// `numberOfInProgressCheckpoints`.
    pub fn in_progress(&self) -> u64 {
        self.total.saturating_sub(self.completed + self.failed)
    }

    pub(super) fn triggered(&mut self, id: u64) {
        self.total += 1;
        metrics::counter!("totalNumberOfCheckpoints").increment(1);
        metrics::gauge!("numberOfInProgressCheckpoints").set(self.in_progress() as f64);
        tracing::debug!(checkpoint_id = id, "checkpoint triggered");
    }

    pub(super) fn failed(&mut self) {
        self.failed += 1;
        metrics::counter!("numberOfFailedCheckpoints").increment(1);
        metrics::gauge!("numberOfInProgressCheckpoints").set(self.in_progress() as f64);
    }

    pub(super) fn completed(&mut self, stats: &CompletedCheckpointStats) {
        self.completed += 1;
        metrics::counter!("numberOfCompletedCheckpoints").increment(1);
        metrics::gauge!("numberOfInProgressCheckpoints").set(self.in_progress() as f64);
        metrics::gauge!("lastCompletedCheckpointId").set(stats.id as f64);
        metrics::gauge!("lastCheckpointDuration").set(stats.duration.as_millis() as f64);
        metrics::gauge!("lastCheckpointSize").set(stats.persisted_size as f64);
        metrics::gauge!("lastCheckpointFullSize").set(stats.full_size as f64);
        metrics::gauge!("lastCheckpointPersistedData")
            .set(stats.persisted_in_flight_bytes() as f64);
        metrics::gauge!("lastCheckpointCompletedTimestamp")
            .set((stats.triggered_at_ms as f64) + stats.duration.as_millis() as f64);
        for (task, metrics) in &stats.tasks {
            let labels = [
                ("vertex", task.vertex.clone()),
                ("subtask", task.subtask.to_string()),
            ];
            metrics::gauge!("checkpointAlignmentTime", &labels)
                .set(metrics.alignment.as_nanos() as f64);
            metrics::gauge!("checkpointStartDelayNanos", &labels)
                .set(metrics.start_delay.as_nanos() as f64);
            // Flink reports these two per subtask through its REST API only.
            metrics::gauge!("checkpointSyncDurationNanos", &labels)
                .set(metrics.sync_duration.as_nanos() as f64);
            metrics::gauge!("checkpointAsyncDurationNanos", &labels)
                .set(metrics.async_duration.as_nanos() as f64);
            metrics::gauge!("checkpointPersistedInFlightBytes", &labels)
                .set(metrics.persisted_in_flight_bytes as f64);
        }
        tracing::info!(
            checkpoint_id = stats.id,
            duration_ms = stats.duration.as_millis() as u64,
            persisted_size = stats.persisted_size,
            full_size = stats.full_size,
            "checkpoint completed"
        );
        self.last_completed = Some(stats.clone());
    }
}
