//! Settings of the changelog backend, with Flink's defaults.

use std::time::Duration;

use state_api::{Result, StateError};

/// Settings of the durable short-term log (DSTL) uploader, shared by every
/// backend that uses one [`ChangelogUploader`](crate::ChangelogUploader).
///
/// The defaults are Flink's (`state.changelog.dstl.dfs.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstlConfig {
    /// A backend uploads its buffered changes once they exceed this many
    /// bytes, without waiting for a checkpoint (`preemptive-persist-threshold`,
    /// 5 MiB).
    pub preemptive_persist_threshold: usize,
    /// How long the uploader collects segments into one file
    /// (`batch.persist-delay`, 10 ms).
    pub persist_delay: Duration,
    /// A batch is uploaded at once when it reaches this size
    /// (`batch.persist-size-threshold`, 10 MiB).
    pub persist_size_threshold: usize,
    /// Upload threads (`upload.num-threads`, 5).
    pub upload_threads: usize,
    /// Writers block once this many bytes wait for upload
    /// (`upload.max-in-flight`, 100 MiB): back-pressure.
    pub max_in_flight: usize,
    /// Time one upload attempt may take before another one starts
    /// (`upload.timeout`, 1 s).
    pub upload_timeout: Duration,
    /// Attempts per file (`upload.max-attempts`, 3).
    pub max_attempts: u32,
    /// Pause after a failed attempt (`upload.next-attempt-delay`, 500 ms).
    pub retry_delay: Duration,
}

impl Default for DstlConfig {
    fn default() -> Self {
        Self {
            preemptive_persist_threshold: 5 << 20,
            persist_delay: Duration::from_millis(10),
            persist_size_threshold: 10 << 20,
            upload_threads: 5,
            max_in_flight: 100 << 20,
            upload_timeout: Duration::from_secs(1),
            max_attempts: 3,
            retry_delay: Duration::from_millis(500),
        }
    }
}

impl DstlConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`StateError::Config`] naming the Flink key of a value that is zero.
    pub fn validate(&self) -> Result<()> {
        let checks: [(&str, bool); 6] = [
            (
                "preemptive-persist-threshold",
                self.preemptive_persist_threshold > 0,
            ),
            (
                "batch.persist-size-threshold",
                self.persist_size_threshold > 0,
            ),
            ("upload.num-threads", self.upload_threads > 0),
            ("upload.max-in-flight", self.max_in_flight > 0),
            ("upload.timeout", !self.upload_timeout.is_zero()),
            ("upload.max-attempts", self.max_attempts > 0),
        ];
        for (key, ok) in checks {
            if !ok {
                return Err(StateError::Config {
                    key: format!("state.changelog.dstl.dfs.{key}"),
                    message: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// Settings of one changelog backend's materialization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaterializationConfig {
    /// How often the wrapped backend is snapshotted in the background
    /// (`state.changelog.periodic-materialize.interval`, 10 min); `None`
    /// disables periodic materialization (the log then grows until a full
    /// checkpoint).
    pub interval: Option<Duration>,
    /// Consecutive failed materializations tolerated before the backend
    /// fails its operations (`state.changelog.max-failures-allowed`, 3).
    pub max_failures_allowed: u32,
}

impl Default for MaterializationConfig {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(600)),
            max_failures_allowed: 3,
        }
    }
}
