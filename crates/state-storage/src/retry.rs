//! Retries of transient storage errors, with exponential backoff.
//!
//! Object stores fail now and then (throttling, dropped connections,
//! timeouts), and a checkpoint that fails for one such error costs a whole
//! checkpoint interval. Every request of
//! [`ObjectStoreCheckpointStorage`](crate::ObjectStoreCheckpointStorage) is
//! therefore retried on transient errors. Retrying is safe for each of them:
//!
//! * state files have unique names, so putting one again writes the same
//!   bytes to the same place;
//! * deleting a missing object is not an error;
//! * reads and listings change nothing;
//! * the create-only put of `_metadata` reads the object back when it finds
//!   one already there: if it holds the same bytes, an earlier attempt whose
//!   answer was lost stored it, and the put succeeded.
//!
//! Multipart uploads are not retried part by part (a part's number is fixed
//! when it is started); a failed one fails its stream, and writers retry the
//! whole file ([`state_api::storage::write_with_retries`]).

use std::future::Future;
use std::time::Duration;

/// How often and how patiently a storage request is retried.
///
/// ```
/// use std::time::Duration;
/// use state_storage::retry::RetryPolicy;
/// let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
/// assert_eq!(policy.backoff(1), Duration::from_millis(10));
/// assert_eq!(policy.backoff(2), Duration::from_millis(20));
/// assert_eq!(RetryPolicy::none().max_attempts, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retries).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, waiting 10 ms, 20 ms, ... up to 1 s in between (plus up
    /// to 50% jitter): about 0.3 s before a request is given up.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries: every error is final.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// Whether a store error may go away when the request is repeated.
///
/// Errors that describe the request or the object (not found, exists
/// already, precondition failed, not supported, bad path, no permission)
/// are final; everything else (network, server, timeouts, generic store
/// errors) is transient.
pub fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        error,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// Runs `request` until it succeeds, fails with a final error, or
/// `policy.max_attempts` attempts failed; returns the last outcome.
pub(crate) async fn retry<T, F, Fut>(policy: RetryPolicy, mut request: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(e) if attempt < policy.max_attempts && is_transient(&e) => {
                tokio::time::sleep(jittered(policy.backoff(attempt))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// `wait` plus up to half of it, so writers that failed together do not
/// retry together.
fn jittered(wait: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let extra = wait.as_nanos() as u64 / 2;
    wait + Duration::from_nanos(if extra == 0 { 0 } else { random % extra })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn transient() -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: "flaky".into(),
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    const FAST: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };

    #[test]
    fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = run(retry(FAST, || async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                Err(transient())
            } else {
                Ok(7)
            }
        }));
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn attempts_are_bounded_and_final_errors_not_retried() {
        let calls = AtomicU32::new(0);
        let result: object_store::Result<()> = run(retry(FAST, || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(transient())
        }));
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 4);

        let calls = AtomicU32::new(0);
        let result: object_store::Result<()> = run(retry(FAST, || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            })
        }));
        assert!(matches!(result, Err(object_store::Error::NotFound { .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_millis(10));
        assert_eq!(policy.backoff(3), Duration::from_millis(40));
        assert_eq!(policy.backoff(30), Duration::from_secs(1));
    }
}
