//! Starting the job from a savepoint (or retained checkpoint) and taking
//! a savepoint of its final state.

use std::sync::Arc;
use std::time::Instant;

use state_api::snapshot::SavepointFormat;
use state_api::{Result, SnapshotOptions, SnapshotType, StateError};
use state_config::StateConfig;
use state_storage::restore::{ProgramStates, RestorePlan, RestoreSource};
use state_storage::{CheckpointKind, CompletedCheckpoint, SavepointWriter};

use crate::OPERATOR_ID;
use crate::dataflow::elements::StreamKind;
use crate::dataflow::sink::SINK_ID;
use crate::dataflow::source::SourceTask;
use crate::dataflow::{FinalState, RestoreState};
use crate::driver::clock;
use crate::events::EventStream;
use crate::operator::KeyedAggregator;
use crate::options::Options;

/// Opens `path` (execution.state-recovery.path) and plans the restore of
/// every operator of the job from it.
///
/// # Errors
/// Missing or unreadable savepoints, states the job does not register
/// (unless allowed), a savepoint without the sources' split offsets.
pub fn initial_state(path: &str, config: &StateConfig, o: &Options) -> Result<RestoreState> {
    let source = RestoreSource::open(path)?;
    let program = ProgramStates::new().with_operator(OPERATOR_ID, KeyedAggregator::STATE_NAMES);
    let plan = RestorePlan::new(
        &source.metadata,
        &*source.storage,
        &program,
        config.ignore_unclaimed_state(),
    )?;
    for skipped in plan.skipped() {
        println!("warning: not restored (allowed): {skipped}");
    }
    let mut restore = RestoreState::from_checkpoint(&source.metadata, o.max_parallelism)
        .map_err(|e| match e {
            StateError::Restore(message) => StateError::Restore(format!(
                "{message} (a savepoint of state-job before it became a dataflow keeps one source offset instead; take a new one)"
            )),
            other => other,
        })?;
    restore.keyed = plan.handles(OPERATOR_ID).to_vec();
    restore.skip = plan.skip_states(OPERATOR_ID);
    restore.storage = Some(source.restore_storage());
    // Savepoint ids belong to the job that took them: this job's
    // checkpoints count from its own store.
    restore.checkpoint_id = 0;
    println!(
        "starting from {} {} at {} ({} keyed handles, {} in-flight record files)",
        source.kind_name(),
        source.metadata.checkpoint_id,
        source.location,
        restore.keyed.len(),
        restore.in_flight_files()
    );
    Ok(restore)
}

/// A savepoint request: where, which id, which format.
pub struct SavepointRequest<'a> {
    /// The job's configuration (savepoint directory).
    pub config: &'a StateConfig,
    /// The job.
    pub job_id: &'a str,
    /// The savepoint's id.
    pub id: u64,
    /// Canonical or native.
    pub format: SavepointFormat,
    /// Splits of each stream.
    pub splits: u32,
    /// The streams (their ends are the sources' final offsets).
    pub streams: [(StreamKind, &'a EventStream); 2],
}

/// Takes a savepoint of the job's final state (every stream read): the
/// keyed backends, the sources at the streams' ends and the sink's sums;
/// returns its location.
///
/// # Errors
/// No savepoint directory; storage and snapshot errors (nothing
/// half-written stays behind).
pub fn take_savepoint(state: &mut FinalState, request: &SavepointRequest<'_>) -> Result<String> {
    let dir = request
        .config
        .savepoint_dir()
        .ok_or_else(no_savepoint_dir)?;
    let started = Instant::now();
    let writer = SavepointWriter::create(dir, request.job_id)?;
    let storage = writer.storage();
    let id = request.id;
    let timestamp_ms = u64::try_from(clock().as_millis()).unwrap_or(u64::MAX);
    let written = (|| -> Result<(CompletedCheckpoint, u64)> {
        let options = SnapshotOptions {
            snapshot_type: SnapshotType::Savepoint(request.format),
            timestamp_ms,
        };
        let mut metadata =
            CompletedCheckpoint::new(request.job_id, id, timestamp_ms, CheckpointKind::Savepoint);
        let parallelism = u32::try_from(state.keyed.len()).unwrap_or(u32::MAX);
        for keyed in &mut state.keyed {
            let result = keyed
                .backend
                .snapshot(id, &options, Arc::clone(&storage))?
                .run()?;
            metadata = metadata.with_operator(OPERATOR_ID, vec![result.handle]);
        }
        for (kind, stream) in request.streams {
            for subtask in 0..parallelism {
                let positions = (0..request.splits)
                    .filter(|split| split % parallelism == subtask)
                    .map(|split| {
                        let end = stream.event_count();
                        (
                            split,
                            EventStream::first_offset_of_split(split, request.splits, end),
                        )
                    })
                    .collect();
                let handle = SourceTask::snapshot_positions(
                    &positions,
                    subtask,
                    parallelism,
                    id,
                    &*storage,
                )?;
                metadata = metadata
                    .with_operator_state(kind.source_vertex(), handle.into_iter().collect());
            }
        }
        let sink = state.sink.snapshot(id, &*storage)?;
        metadata = metadata.with_operator_state(SINK_ID, sink.into_iter().collect());
        let size = metadata.state_size();
        Ok((metadata, size))
    })();
    let (metadata, size) = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = writer.abort();
            return Err(e);
        }
    };
    let savepoint = writer.commit(metadata)?;
    let location = savepoint.location();
    println!(
        "savepoint {id} ({:?}, {size} bytes) written in {:.2?} to {location}",
        request.format,
        started.elapsed()
    );
    Ok(location)
}

/// The error of a savepoint without a directory.
pub fn no_savepoint_dir() -> StateError {
    StateError::Config {
        key: "execution.checkpointing.savepoint-dir".into(),
        message: "a savepoint needs a savepoint directory (or --savepoint-dir)".into(),
    }
}
