//! The asynchronous part of a changelog checkpoint: the handle, from the
//! base materialization and the persisted log segments.

use state_api::{
    ChangelogPart, ChangelogStateHandle, KeyGroupRange, KeyedStateHandle, Result, SnapshotResult,
    StateMeta,
};

use super::BaseSource;
use crate::log::PersistedSegment;

/// What the asynchronous phase needs to build the handle.
pub(super) struct HandleFrame {
    pub(super) backend: String,
    pub(super) checkpoint_id: u64,
    pub(super) max_parallelism: u32,
    pub(super) key_group_range: KeyGroupRange,
    pub(super) states: Vec<StateMeta>,
    pub(super) from_sqn: u64,
    pub(super) to_sqn: u64,
}

impl HandleFrame {
    pub(super) fn finish(
        self,
        base: BaseSource,
        persisted: Vec<PersistedSegment>,
    ) -> Result<SnapshotResult> {
        let (materialization_id, materialized, mut log, mut uploaded_bytes) = match base {
            BaseSource::Ready(base) => (base.id, base.handles, base.restored_log, 0),
            BaseSource::InFlight(in_flight) => {
                let result = in_flight.wait(self.checkpoint_id)?;
                (
                    in_flight.id,
                    vec![result.handle],
                    Vec::new(),
                    result.uploaded_bytes,
                )
            }
        };
        let mut segments = Vec::with_capacity(persisted.len());
        for segment in persisted {
            segments.push(segment.slot.wait()?);
            uploaded_bytes += segment.new_bytes;
        }
        if self.to_sqn > self.from_sqn {
            log.push(ChangelogPart {
                key_group_range: self.key_group_range,
                from_sqn: self.from_sqn,
                to_sqn: self.to_sqn,
                segments,
            });
        }
        Ok(SnapshotResult {
            handle: KeyedStateHandle::Changelog(ChangelogStateHandle {
                backend: self.backend,
                checkpoint_id: self.checkpoint_id,
                max_parallelism: self.max_parallelism,
                key_group_range: self.key_group_range,
                states: self.states,
                materialization_id,
                materialized,
                log,
            }),
            uploaded_bytes,
        })
    }
}
