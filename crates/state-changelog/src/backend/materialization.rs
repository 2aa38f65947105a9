//! Materialization: the periodic snapshots of the wrapped backend that
//! later checkpoints build on, started, installed and counted here.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use state_api::{CheckpointStorageAccess, Result, SnapshotOptions, SnapshotType, StateError};

use super::{BACKEND_NAME, ChangelogKeyedStateBackend, OPS_PER_TIMER_CHECK};
use crate::materialize::{Base, BaseEvents, InFlight, SharedScope};

impl ChangelogKeyedStateBackend {
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

    pub(super) fn changed_since_base(&self) -> bool {
        match self.bases.current() {
            Some(base) => self.log.next_sqn() > base.sqn,
            None => true,
        }
    }

    pub(super) fn check_failure(&self) -> Result<()> {
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
    pub(super) fn timer_check(&mut self) -> Result<()> {
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

    pub(super) fn start_materialization(
        &mut self,
        snapshot_type: SnapshotType,
    ) -> Result<Arc<InFlight>> {
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
    pub(super) fn poll_materialization(&mut self) {
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
    pub(super) fn check_failed_uploads(&mut self) {
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

    pub(super) fn materialization_failed(&mut self, message: &str) {
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

    pub(super) fn apply(&mut self, events: BaseEvents) {
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
    pub(super) fn truncate(&mut self) {
        let base_sqn = self.bases.current().map_or(0, |b| b.sqn);
        let pending_sqn = self.pending.values().map(|p| p.from_sqn).min();
        let upto = pending_sqn.map_or(base_sqn, |p| p.min(base_sqn));
        self.log.truncate(upto);
    }
}

/// Delay of the first periodic materialization: a stable fraction of the
/// interval per operator, so instances of a job do not all materialize at
/// once (Flink's randomized offset).
pub(super) fn first_delay(operator: &str, interval: Duration) -> Duration {
    let mut hasher = std::hash::DefaultHasher::new();
    operator.hash(&mut hasher);
    let nanos = interval.as_nanos().max(1);
    let offset = u128::from(hasher.finish()) % nanos;
    Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
