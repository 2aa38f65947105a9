//! Which failed checkpoints count towards failing the job (Flink's
//! `CheckpointFailureManager`).

use std::collections::BTreeSet;
use std::fmt;

/// Why a checkpoint did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// A task declined it (its snapshot failed); counted.
    Declined {
        /// The declining task.
        task: String,
        /// What it said.
        message: String,
    },
    /// A task declined it because a newer barrier overtook it, or an
    /// upstream task cancelled it; not counted.
    DeclinedSubsumed,
    /// It did not complete within the timeout; counted.
    Expired,
    /// Its `_metadata` could not be written, or the store refused it;
    /// counted.
    FinalizeFailed(String),
    /// A newer checkpoint completed first; not counted.
    Subsumed,
    /// A task failed (the job restarts); not counted.
    TaskFailure,
    /// The coordinator stopped (stop with savepoint, shutdown); not counted.
    CoordinatorSuspended,
    /// Another writer committed the same id, or the store discarded it
    /// when resolving an unclear commit; not counted.
    NotCommitted,
}

impl FailureReason {
    /// Whether Flink counts it against `tolerable-failed-checkpoints`.
    pub fn is_counted(&self) -> bool {
        matches!(
            self,
            FailureReason::Declined { .. }
                | FailureReason::Expired
                | FailureReason::FinalizeFailed(_)
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Declined { task, message } => {
                write!(f, "declined by task {task}: {message}")
            }
            FailureReason::DeclinedSubsumed => {
                f.write_str("declined: a newer barrier or a cancellation overtook it")
            }
            FailureReason::Expired => f.write_str("expired before it completed"),
            FailureReason::FinalizeFailed(message) => {
                write!(f, "could not be committed: {message}")
            }
            FailureReason::Subsumed => f.write_str("subsumed by a newer completed checkpoint"),
            FailureReason::TaskFailure => f.write_str("a task failed"),
            FailureReason::CoordinatorSuspended => f.write_str("the coordinator stopped"),
            FailureReason::NotCommitted => {
                f.write_str("not committed: the store holds another checkpoint under its id")
            }
        }
    }
}

/// Counts consecutive counted failures: each id once, only above the last
/// completed id; a newer completion resets the count.
#[derive(Debug, Default)]
pub(crate) struct FailureCounter {
    tolerable: u32,
    last_succeeded: u64,
    counted: BTreeSet<u64>,
}

impl FailureCounter {
    pub(crate) fn new(tolerable: u32) -> Self {
        Self {
            tolerable,
            ..Self::default()
        }
    }

    /// Records a failure; returns whether the job must fail now.
    pub(crate) fn failed(&mut self, id: u64, reason: &FailureReason) -> bool {
        if reason.is_counted() && id > self.last_succeeded {
            self.counted.insert(id);
        }
        self.counted.len() > self.tolerable as usize
    }

    pub(crate) fn succeeded(&mut self, id: u64) {
        if id > self.last_succeeded {
            self.last_succeeded = id;
            self.counted.retain(|counted| *counted > id);
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.counted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_id_once_and_resets_on_a_newer_success() {
        let mut counter = FailureCounter::new(1);
        assert!(!counter.failed(3, &FailureReason::Expired));
        assert!(!counter.failed(3, &FailureReason::Expired));
        assert!(!counter.failed(4, &FailureReason::Subsumed));
        assert_eq!(counter.count(), 1);
        counter.succeeded(5);
        assert_eq!(counter.count(), 0);
        // Below the last success: not counted.
        assert!(!counter.failed(4, &FailureReason::Expired));
        assert!(!counter.failed(6, &FailureReason::FinalizeFailed("put".into())));
        assert!(counter.failed(7, &FailureReason::Expired));
    }
}
