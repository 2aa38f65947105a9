//! The changelog backend's metrics under Flink's names, through the
//! `metrics` facade so a runtime exports them to its own system.
//!
//! Per backend (Flink's Task/Operator scope, labelled `operator` and
//! `key_groups`, a half-open range like `0..64`): `startedMaterialization`, `completedMaterialization`,
//! `failedMaterialization` (counters), `lastDurationOfMaterialization` (ms),
//! `lastFullSizeOfMaterialization` / `lastIncSizeOfMaterialization` (bytes
//! of the newest materialization, all and uploaded by it) and
//! `lastFullSizeOfNonMaterialization` / `lastIncSizeOfNonMaterialization`
//! (log bytes the newest checkpoint needs beyond its materialization, all
//! and new since the previous checkpoint). The full non-materialized size
//! is the materialization lag: what a restore replays.
//!
//! Per uploader (Flink's DSTL metrics): `numberOfUploadRequests`,
//! `numberOfUploadFailures` (counters), `uploadSizes`,
//! `uploadLatenciesNanos`, `attemptsPerUpload` (histograms) and
//! `uploadQueueSize` (gauge).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use state_api::KeyGroupRange;

/// One backend's handles, registered once so the hot path does no lookup.
pub(crate) struct BackendMetrics {
    started: Counter,
    completed: Counter,
    failed: Counter,
    last_duration: Gauge,
    last_full_materialized: Gauge,
    last_inc_materialized: Gauge,
    last_full_non_materialized: Gauge,
    last_inc_non_materialized: Gauge,
}

impl BackendMetrics {
    pub(crate) fn new(operator: &str, key_groups: KeyGroupRange) -> Self {
        let labels = [
            ("operator", operator.to_string()),
            (
                "key_groups",
                format!("{}..{}", key_groups.start(), key_groups.end_exclusive()),
            ),
        ];
        Self {
            started: metrics::counter!("startedMaterialization", &labels),
            completed: metrics::counter!("completedMaterialization", &labels),
            failed: metrics::counter!("failedMaterialization", &labels),
            last_duration: metrics::gauge!("lastDurationOfMaterialization", &labels),
            last_full_materialized: metrics::gauge!("lastFullSizeOfMaterialization", &labels),
            last_inc_materialized: metrics::gauge!("lastIncSizeOfMaterialization", &labels),
            last_full_non_materialized: metrics::gauge!(
                "lastFullSizeOfNonMaterialization",
                &labels
            ),
            last_inc_non_materialized: metrics::gauge!("lastIncSizeOfNonMaterialization", &labels),
        }
    }

    pub(crate) fn materialization_started(&self) {
        self.started.increment(1);
    }

    pub(crate) fn materialization_completed(&self, took: Duration, full: u64, uploaded: u64) {
        self.completed.increment(1);
        self.last_duration.set(took.as_millis() as f64);
        self.last_full_materialized.set(full as f64);
        self.last_inc_materialized.set(uploaded as f64);
    }

    pub(crate) fn materialization_failed(&self) {
        self.failed.increment(1);
    }

    pub(crate) fn checkpointed(&self, full_non_materialized: u64, new_non_materialized: u64) {
        self.last_full_non_materialized
            .set(full_non_materialized as f64);
        self.last_inc_non_materialized
            .set(new_non_materialized as f64);
    }
}

/// An uploader's handles.
pub(crate) struct UploaderMetrics {
    pub(crate) requests: Counter,
    pub(crate) failures: Counter,
    pub(crate) sizes: Histogram,
    pub(crate) latencies_nanos: Histogram,
    pub(crate) attempts: Histogram,
    pub(crate) queue_size: Gauge,
}

impl UploaderMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: metrics::counter!("numberOfUploadRequests"),
            failures: metrics::counter!("numberOfUploadFailures"),
            sizes: metrics::histogram!("uploadSizes"),
            latencies_nanos: metrics::histogram!("uploadLatenciesNanos"),
            attempts: metrics::histogram!("attemptsPerUpload"),
            queue_size: metrics::gauge!("uploadQueueSize"),
        }
    }
}
