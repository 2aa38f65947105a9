//! Restore: the wrapped backend restores the materialized part, then the
//! log is replayed into it, dropping records of key groups outside the new
//! range.

use std::sync::Arc;

use bytes::Bytes;
use state_api::descriptor::StateFunction;
use state_api::timers::{decode_timestamp, malformed_timestamp};
use state_api::{
    BackendContext, ChangelogPart, ChangelogSegment, ChangelogStateHandle, CheckpointStorageAccess,
    KeyGroupRange, KeyedStateBackend, KeyedStateHandle, Result, StateBackendFactory, StateError,
    StateId, StateKind, StateMeta, StateRegistration,
};

use crate::backend::Restored;
use crate::materialize::Base;
use crate::record::{KeyedOp, Record, Target};
use crate::segment;

/// Builds the wrapped backend from `context` and replays the logs of its
/// changelog handles.
///
/// Only a restore from exactly one changelog handle of the same key groups
/// continues from its materialization; any other restore (other formats,
/// rescaling) makes the first checkpoint materialize, so every changelog
/// handle's materialized part covers exactly its key groups.
pub(crate) fn restore(
    delegate_factory: &dyn StateBackendFactory,
    context: &BackendContext,
) -> Result<Restored> {
    context.validate()?;
    let range = context.key_group_range;
    let mut delegate_handles = Vec::new();
    let mut logged = Vec::new();
    let mut next_materialization_id = 1;
    for handle in &context.restore {
        match handle {
            KeyedStateHandle::Changelog(changelog) => {
                check_materialized(changelog)?;
                // Saturating: a hostile id must not overflow.
                next_materialization_id =
                    next_materialization_id.max(changelog.materialization_id.saturating_add(1));
                delegate_handles.extend(
                    changelog
                        .materialized
                        .iter()
                        .filter(|m| !m.key_group_range().intersection(&range).is_empty())
                        .cloned(),
                );
                logged.push(changelog);
            }
            other => delegate_handles.push(other.clone()),
        }
    }
    let mut delegate = delegate_factory.create(BackendContext {
        restore: delegate_handles,
        ..context.clone()
    })?;
    let mut replay = Replay {
        delegate: &mut *delegate,
        storage: &**context.restore_source(),
        range,
        skip: &context.skip_restored_states,
        ids: Vec::new(),
        cached_file: None,
    };
    for changelog in &logged {
        replay.handle(changelog)?;
    }
    let replay_ids = replay.ids;
    // Continue from the restored materialization only when its files are
    // the job's own (not a savepoint's or another job's, which later
    // checkpoints must not reference) and nothing is skipped (skipped states
    // live on in the materialized part and would come back).
    let base = match context.restore.as_slice() {
        [KeyedStateHandle::Changelog(h)]
            if h.key_group_range == range
                && context.skip_restored_states.is_empty()
                && context.restores_from_own_storage() =>
        {
            Some(Base {
                id: h.materialization_id,
                sqn: 0,
                handles: h.materialized.clone(),
                restored_log: h.log.clone(),
                confirmed: true,
                kept: false,
            })
        }
        _ => None,
    };
    Ok(Restored {
        delegate,
        replay_ids,
        base,
        next_materialization_id,
    })
}

fn check_materialized(handle: &ChangelogStateHandle) -> Result<()> {
    for materialized in &handle.materialized {
        let problem = if matches!(materialized, KeyedStateHandle::Changelog(_)) {
            Some("is itself a changelog handle".to_string())
        } else if materialized.max_parallelism() != handle.max_parallelism {
            Some(format!(
                "has max parallelism {}, the handle {}",
                materialized.max_parallelism(),
                handle.max_parallelism
            ))
        } else if !handle
            .key_group_range
            .contains_range(&materialized.key_group_range())
        {
            Some(format!(
                "covers {}, outside the handle's {}",
                materialized.key_group_range(),
                handle.key_group_range
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(StateError::Restore(format!(
                "the materialized part of changelog checkpoint {} {problem}",
                handle.checkpoint_id
            )));
        }
    }
    Ok(())
}

/// A fold placeholder for reducing and aggregating states that the replay
/// registers before the program does. Replay never folds (the log holds
/// folded values), and the program's registration replaces it.
struct ReplayOnly(String);

impl StateFunction for ReplayOnly {
    fn add(&self, _: Option<&[u8]>, _: &[u8], _: &mut Vec<u8>) -> Result<()> {
        Err(self.unregistered())
    }

    fn merge(&self, _: &[u8], _: &[u8], _: &mut Vec<u8>) -> Result<()> {
        Err(self.unregistered())
    }
}

impl ReplayOnly {
    fn unregistered(&self) -> StateError {
        StateError::Config {
            key: self.0.clone(),
            message: "the state's fold function is not registered yet".into(),
        }
    }
}

struct Replay<'a> {
    delegate: &'a mut dyn KeyedStateBackend,
    storage: &'a dyn CheckpointStorageAccess,
    range: KeyGroupRange,
    /// States not to restore.
    skip: &'a [String],
    /// States registered in the wrapped backend by the replay.
    ids: Vec<(String, StateId)>,
    /// The last log file read (consecutive segments often share one).
    cached_file: Option<(String, Bytes)>,
}

impl Replay<'_> {
    fn handle(&mut self, handle: &ChangelogStateHandle) -> Result<()> {
        let scope = handle.key_group_range.intersection(&self.range);
        for part in &handle.log {
            let part_range = part.key_group_range.intersection(&scope);
            if part_range.is_empty() {
                continue;
            }
            check_coverage(handle.checkpoint_id, part)?;
            for segment in &part.segments {
                if segment.end_sqn <= part.from_sqn || segment.first_sqn >= part.to_sqn {
                    continue;
                }
                self.segment(segment, part, part_range)?;
            }
        }
        Ok(())
    }

    fn read(&mut self, segment: &ChangelogSegment) -> Result<Bytes> {
        let path = &segment.file.path;
        let file = match &self.cached_file {
            Some((cached, bytes)) if cached == path => bytes.clone(),
            _ => {
                let bytes = self.storage.read(&segment.file)?;
                self.cached_file = Some((path.clone(), bytes.clone()));
                bytes
            }
        };
        let end = segment.offset.checked_add(segment.length);
        match end {
            Some(end) if end <= file.len() as u64 => {
                Ok(file.slice(segment.offset as usize..end as usize))
            }
            _ => Err(StateError::corrupt(
                path.clone(),
                format!(
                    "log segment at {}+{} lies beyond the file's {} bytes",
                    segment.offset,
                    segment.length,
                    file.len()
                ),
            )),
        }
    }

    fn segment(
        &mut self,
        segment: &ChangelogSegment,
        part: &ChangelogPart,
        range: KeyGroupRange,
    ) -> Result<()> {
        let bytes = self.read(segment)?;
        let (header, mut reader) = segment::decode(&bytes, segment)?;
        let path = segment.file.path.as_str();
        let corrupt = |reason: String| {
            StateError::corrupt(path, format!("log segment at {}: {reason}", segment.offset))
        };
        let mut states: Vec<Option<StateId>> = vec![None; header.states.len()];
        // Decided once per segment, not per record.
        let skipped: Vec<bool> = header
            .states
            .iter()
            .map(|meta| self.skip.contains(&meta.name))
            .collect();
        // Checked: a hostile header may put the numbers near u64::MAX.
        let end = header
            .first_sqn
            .checked_add(header.record_count)
            .ok_or_else(|| corrupt("its sequence numbers overflow".into()))?;
        let mut sqn = header.first_sqn;
        while let Some(record) = reader.next_record().map_err(&corrupt)? {
            if sqn == end {
                return Err(corrupt(format!(
                    "holds more records than its header says ({})",
                    header.record_count
                )));
            }
            let wanted = (part.from_sqn..part.to_sqn).contains(&sqn);
            sqn += 1;
            if !wanted {
                continue;
            }
            match record {
                Record::Metadata { meta, .. } => {
                    if !self.skip.contains(&meta.name) {
                        self.state(&meta)?;
                    }
                }
                Record::Keyed { op, target } => {
                    if !range.contains(target.key_group) {
                        continue;
                    }
                    let index = target.state as usize;
                    let meta = header
                        .states
                        .get(index)
                        .ok_or_else(|| corrupt(format!("record of unknown state index {index}")))?;
                    if skipped[index] {
                        continue;
                    }
                    let id = match states[index] {
                        Some(id) => id,
                        None => {
                            let id = self.state(meta)?;
                            states[index] = Some(id);
                            id
                        }
                    };
                    self.apply(id, meta.kind, op, &target).map_err(|e| {
                        corrupt(format!("record {} on '{}': {e}", sqn - 1, meta.name))
                    })?;
                }
            }
        }
        if sqn != end {
            return Err(corrupt(format!(
                "holds {} records, its header says {}",
                sqn - header.first_sqn,
                header.record_count
            )));
        }
        Ok(())
    }

    /// The wrapped backend's id of `meta`, registering it there first.
    fn state(&mut self, meta: &StateMeta) -> Result<StateId> {
        if let Some((_, id)) = self.ids.iter().find(|(name, _)| *name == meta.name) {
            return Ok(*id);
        }
        let function = meta
            .kind
            .needs_function()
            .then(|| Arc::new(ReplayOnly(meta.name.clone())) as Arc<dyn StateFunction>);
        let id = self
            .delegate
            .register_state(StateRegistration {
                meta: meta.clone(),
                function,
                ttl: None,
            })
            .map_err(|e| {
                StateError::Restore(format!(
                    "state '{}' of the change log conflicts with the materialized state: {e}",
                    meta.name
                ))
            })?;
        self.ids.push((meta.name.clone(), id));
        Ok(id)
    }

    fn apply(
        &mut self,
        id: StateId,
        kind: StateKind,
        op: KeyedOp<'_>,
        target: &Target<'_>,
    ) -> Result<()> {
        let backend = &mut *self.delegate;
        // Setting the key computes its key group once; check it against the log.
        backend.set_current_key(target.key)?;
        let actual = backend.current_key_group();
        if actual != Some(target.key_group) {
            return Err(StateError::Restore(format!(
                "the key is logged under key group {} but belongs to {actual:?}",
                target.key_group
            )));
        }
        let namespace = target.namespace;
        if kind == StateKind::Timers {
            // Timers are logged in their map form: the timestamp as user key.
            let timestamp = |user_key: &[u8]| {
                decode_timestamp(user_key).ok_or_else(|| malformed_timestamp("<change log>"))
            };
            return match op {
                KeyedOp::PutElement(user_key, _) => backend
                    .timer_add(id, namespace, timestamp(user_key)?)
                    .map(drop),
                KeyedOp::RemoveElement(user_key) => backend
                    .timer_remove(id, namespace, timestamp(user_key)?)
                    .map(drop),
                _ => Err(StateError::Restore(
                    "a timer state's record is neither an added nor a removed timer".into(),
                )),
            };
        }
        match op {
            KeyedOp::Set(value) => backend.put(id, namespace, value),
            KeyedOp::Clear => backend.clear(id, namespace),
            KeyedOp::Add(elements) => backend.list_append(id, namespace, elements),
            KeyedOp::PutElement(user_key, value) => backend.map_put(id, namespace, user_key, value),
            KeyedOp::RemoveElement(user_key) => backend.map_remove(id, namespace, user_key),
            KeyedOp::Merge(merged, sources) => {
                for source in sources.iter().filter(|s| **s != namespace) {
                    backend.clear(id, source)?;
                }
                match merged {
                    Some(value) => backend.put(id, namespace, value),
                    None => backend.clear(id, namespace),
                }
            }
        }
    }
}

/// The segments of `part` must hold every record of its sequence range: a
/// missing segment would silently lose changes.
fn check_coverage(checkpoint_id: u64, part: &ChangelogPart) -> Result<()> {
    let mut next = part.from_sqn;
    for segment in &part.segments {
        if segment.end_sqn <= next || segment.first_sqn >= part.to_sqn {
            continue;
        }
        if segment.first_sqn > next {
            break;
        }
        next = segment.end_sqn;
    }
    if next < part.to_sqn {
        return Err(StateError::Restore(format!(
            "the change log of checkpoint {checkpoint_id} misses records {next}..{} of {}",
            part.to_sqn, part.key_group_range
        )));
    }
    Ok(())
}
