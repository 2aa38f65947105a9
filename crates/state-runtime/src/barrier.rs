//! The events that travel in band with the records: checkpoint barriers and
//! cancellation markers, and the options a barrier carries.
//!
//! A barrier's options are fixed by the coordinator when it triggers
//! ([`CheckpointOptions::for_config`], Flink's `CheckpointOptions.forConfig`)
//! and tell every task how to align its inputs for that checkpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use state_api::SnapshotType;

/// Whether a job's checkpoints must see every record exactly once.
///
/// Flink's `execution.checkpointing.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointingMode {
    /// Align the inputs (or persist the in-flight records, when unaligned)
    /// so that a restore replays every record once.
    #[default]
    ExactlyOnce,
    /// Never block an input: records that passed a barrier on a fast input
    /// may be in the snapshot and be replayed after a restore.
    AtLeastOnce,
}

/// How a task handles the barriers of one checkpoint on its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlignmentType {
    /// No blocking; the snapshot is taken once every input delivered the
    /// barrier.
    AtLeastOnce,
    /// Block each input at its barrier; snapshot when all arrived. With an
    /// alignment timeout, switches to unaligned when the timeout passes.
    Aligned,
    /// Snapshot on the first barrier; the barrier overtakes queued records,
    /// which are persisted as channel state.
    Unaligned,
    /// Aligned, and never switched to unaligned (savepoints; edges whose
    /// in-flight records cannot be persisted).
    ForcedAligned,
}

/// What a barrier asks of the tasks it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointOptions {
    /// Checkpoint, full checkpoint or savepoint.
    pub snapshot_type: SnapshotType,
    /// How inputs are aligned.
    pub alignment: AlignmentType,
    /// For [`AlignmentType::Aligned`]: how long after the trigger an
    /// unfinished alignment switches to unaligned. `None`: never.
    pub aligned_checkpoint_timeout: Option<Duration>,
}

impl CheckpointOptions {
    /// The options of a checkpoint under a job's configuration, as Flink
    /// chooses them: at-least-once mode never aligns; savepoints and jobs
    /// without unaligned checkpoints align without a timeout; a zero
    /// alignment timeout starts unaligned; any other timeout starts aligned
    /// and switches when it passes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use state_api::SnapshotType;
    /// use state_runtime::{AlignmentType, CheckpointOptions, CheckpointingMode};
    ///
    /// let options = CheckpointOptions::for_config(
    ///     SnapshotType::Checkpoint,
    ///     CheckpointingMode::ExactlyOnce,
    ///     true,
    ///     Duration::from_secs(5),
    /// );
    /// assert_eq!(options.alignment, AlignmentType::Aligned);
    /// assert!(options.is_timeoutable());
    /// ```
    pub fn for_config(
        snapshot_type: SnapshotType,
        mode: CheckpointingMode,
        unaligned_enabled: bool,
        aligned_checkpoint_timeout: Duration,
    ) -> Self {
        let (alignment, timeout) = match mode {
            CheckpointingMode::AtLeastOnce => (AlignmentType::AtLeastOnce, None),
            CheckpointingMode::ExactlyOnce => {
                if matches!(snapshot_type, SnapshotType::Savepoint(_)) || !unaligned_enabled {
                    (AlignmentType::Aligned, None)
                } else if aligned_checkpoint_timeout.is_zero() {
                    (AlignmentType::Unaligned, None)
                } else {
                    (AlignmentType::Aligned, Some(aligned_checkpoint_timeout))
                }
            }
        };
        Self {
            snapshot_type,
            alignment,
            aligned_checkpoint_timeout: timeout,
        }
    }

    /// Options of an aligned checkpoint without timeout.
    pub fn aligned() -> Self {
        Self {
            snapshot_type: SnapshotType::Checkpoint,
            alignment: AlignmentType::Aligned,
            aligned_checkpoint_timeout: None,
        }
    }

    /// Options of an unaligned checkpoint.
    pub fn unaligned() -> Self {
        Self {
            alignment: AlignmentType::Unaligned,
            ..Self::aligned()
        }
    }

    /// Options of an at-least-once checkpoint.
    pub fn at_least_once() -> Self {
        Self {
            alignment: AlignmentType::AtLeastOnce,
            ..Self::aligned()
        }
    }

    /// Options of an aligned checkpoint that switches to unaligned after
    /// `timeout`.
    pub fn aligned_with_timeout(timeout: Duration) -> Self {
        Self {
            aligned_checkpoint_timeout: Some(timeout),
            ..Self::aligned()
        }
    }

    /// Aligned with a finite, non-zero timeout: may switch to unaligned.
    pub fn is_timeoutable(&self) -> bool {
        self.alignment == AlignmentType::Aligned
            && self
                .aligned_checkpoint_timeout
                .is_some_and(|t| !t.is_zero())
    }

    /// Whether the checkpoint may persist in-flight records.
    pub fn needs_channel_state(&self) -> bool {
        self.alignment == AlignmentType::Unaligned || self.is_timeoutable()
    }

    /// Whether inputs block at the barrier (at first).
    pub fn blocks_inputs(&self) -> bool {
        matches!(
            self.alignment,
            AlignmentType::Aligned | AlignmentType::ForcedAligned
        )
    }

    /// The same checkpoint, switched to unaligned.
    pub fn to_unaligned(self) -> Self {
        Self {
            alignment: AlignmentType::Unaligned,
            aligned_checkpoint_timeout: None,
            ..self
        }
    }
}

/// The barrier of checkpoint `id`, injected by the sources and forwarded by
/// every task once it took its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBarrier {
    /// The checkpoint's id (one increasing sequence with savepoints).
    pub id: u64,
    /// When the coordinator triggered it, in ms since the Unix epoch; the
    /// alignment timeout and the start delay count from here.
    pub timestamp_ms: u64,
    /// How tasks align for it.
    pub options: CheckpointOptions,
}

impl CheckpointBarrier {
    /// When an aligned barrier of this checkpoint switches to unaligned, as a
    /// time since the Unix epoch; `None` if it never does.
    pub fn alignment_deadline(&self) -> Option<Duration> {
        if !self.options.is_timeoutable() {
            return None;
        }
        let timeout = self.options.aligned_checkpoint_timeout?;
        Some(Duration::from_millis(self.timestamp_ms).saturating_add(timeout))
    }

    /// The same barrier, switched to unaligned.
    pub fn to_unaligned(self) -> Self {
        Self {
            options: self.options.to_unaligned(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::snapshot::SavepointFormat;

    #[test]
    fn options_follow_flinks_choice() {
        let five = Duration::from_secs(5);
        let checkpoint = SnapshotType::Checkpoint;
        let at_least_once =
            CheckpointOptions::for_config(checkpoint, CheckpointingMode::AtLeastOnce, true, five);
        assert_eq!(at_least_once.alignment, AlignmentType::AtLeastOnce);
        assert!(!at_least_once.needs_channel_state());

        let aligned =
            CheckpointOptions::for_config(checkpoint, CheckpointingMode::ExactlyOnce, false, five);
        assert_eq!(aligned, CheckpointOptions::aligned());

        let unaligned = CheckpointOptions::for_config(
            checkpoint,
            CheckpointingMode::ExactlyOnce,
            true,
            Duration::ZERO,
        );
        assert_eq!(unaligned, CheckpointOptions::unaligned());
        assert!(unaligned.needs_channel_state());

        let savepoint = CheckpointOptions::for_config(
            SnapshotType::Savepoint(SavepointFormat::Canonical),
            CheckpointingMode::ExactlyOnce,
            true,
            Duration::ZERO,
        );
        assert_eq!(savepoint.alignment, AlignmentType::Aligned);
        assert!(!savepoint.is_timeoutable());
    }

    #[test]
    fn deadline_counts_from_the_trigger() {
        let barrier = CheckpointBarrier {
            id: 1,
            timestamp_ms: 1_000,
            options: CheckpointOptions::aligned_with_timeout(Duration::from_millis(250)),
        };
        assert_eq!(
            barrier.alignment_deadline(),
            Some(Duration::from_millis(1_250))
        );
        assert_eq!(barrier.to_unaligned().alignment_deadline(), None);
        let zero = CheckpointBarrier {
            options: CheckpointOptions::aligned_with_timeout(Duration::ZERO),
            ..barrier
        };
        assert_eq!(zero.alignment_deadline(), None);
    }
}
