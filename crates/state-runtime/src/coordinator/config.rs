//! The coordinator's settings, with Flink's defaults
//! (`execution.checkpointing.*`).

use std::time::Duration;

use state_api::{Result, StateError};

use crate::barrier::{CheckpointOptions, CheckpointingMode};
use state_api::SnapshotType;

/// Flink's `execution.checkpointing.*` settings the coordinator follows.
///
/// ```
/// use std::time::Duration;
/// use state_runtime::coordinator::CheckpointConfig;
///
/// let config = CheckpointConfig::every(Duration::from_secs(10));
/// assert_eq!(config.max_concurrent, 1);
/// assert_eq!(config.timeout, Duration::from_secs(600));
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// `interval`: time between periodic triggers; `None` turns periodic
    /// checkpoints off (savepoints still work). At least 10 ms.
    pub interval: Option<Duration>,
    /// `min-pause`: least time from one completion to the next trigger.
    pub min_pause: Duration,
    /// `max-concurrent-checkpoints`: most checkpoints pending at once.
    pub max_concurrent: usize,
    /// `timeout`: a pending checkpoint expires this long after its trigger.
    pub timeout: Duration,
    /// `tolerable-failed-checkpoints`: consecutive counted failures
    /// tolerated; one more fails the job.
    pub tolerable_failed: u32,
    /// `mode`: exactly once or at least once.
    pub mode: CheckpointingMode,
    /// `unaligned.enabled`.
    pub unaligned: bool,
    /// `aligned-checkpoint-timeout`: with unaligned checkpoints enabled,
    /// zero starts unaligned, more starts aligned and switches when it
    /// passes.
    pub aligned_checkpoint_timeout: Duration,
}

/// The shortest periodic interval Flink accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: None,
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            timeout: Duration::from_secs(600),
            tolerable_failed: 0,
            mode: CheckpointingMode::ExactlyOnce,
            unaligned: false,
            aligned_checkpoint_timeout: Duration::ZERO,
        }
    }
}

impl CheckpointConfig {
    /// Flink's defaults with periodic checkpoints every `interval`.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval: Some(interval),
            ..Self::default()
        }
    }

    /// Checks the settings as Flink does.
    ///
    /// # Errors
    /// [`StateError::Config`] naming the key of a value out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: String| {
            Err(StateError::Config {
                key: format!("execution.checkpointing.{key}"),
                message,
            })
        };
        if let Some(interval) = self.interval
            && interval < MIN_INTERVAL
        {
            return bad(
                "interval",
                format!("{interval:?} is below the minimum of {MIN_INTERVAL:?}"),
            );
        }
        if self.max_concurrent == 0 {
            return bad(
                "max-concurrent-checkpoints",
                "must be at least 1".to_string(),
            );
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be above zero".to_string());
        }
        Ok(())
    }

    /// The barrier options of a snapshot of `snapshot_type` under these
    /// settings.
    pub fn options(&self, snapshot_type: SnapshotType) -> CheckpointOptions {
        CheckpointOptions::for_config(
            snapshot_type,
            self.mode,
            self.unaligned,
            self.aligned_checkpoint_timeout,
        )
    }

    /// The effective time between triggers: `max(interval, min-pause)`.
    pub fn effective_interval(&self) -> Option<Duration> {
        self.interval.map(|interval| interval.max(self.min_pause))
    }
}
