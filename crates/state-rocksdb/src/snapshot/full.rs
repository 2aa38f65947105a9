//! Full snapshots in the key-group format
//! ([`state_api::format::key_groups`]), restorable by any backend at any
//! parallelism.
//!
//! The asynchronous phase opens the frozen checkpoint directory read-only
//! and walks one bounded iterator per column family in step, key group by
//! key group: the key-group prefix makes each key group a contiguous range,
//! so every iterator only moves forward and the file comes out in one pass.

use std::borrow::Cow;
use std::sync::Arc;

use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions};
use state_api::format::key_groups::{Entry, KeyGroupsWriter};
use state_api::{
    AsyncSnapshot, CheckpointStorageAccess, KeyedStateHandle, Result, SnapshotResult, StateError,
    StateKind, StateScope,
};

use state_api::key_group::KeyGroup;
use state_api::lifecycle::SnapshotUploads;
use state_api::storage::{file_name_safe, write_with_retries};
use state_api::timers::encode_timestamp;
use state_api::ttl::alive_part;

use super::Frozen;
use crate::backend::{BACKEND_NAME, Db, column_family_name, db_error, open_db};
use crate::keys::KeyLayout;
use crate::ttl::DbOptions;

/// The asynchronous phase of a full snapshot of `frozen`.
/// The file it writes is recorded in `own_uploads`; a failed upload starts
/// over.
pub(crate) fn task(
    frozen: Frozen,
    options: DbOptions,
    storage: Arc<dyn CheckpointStorageAccess>,
    own_uploads: SnapshotUploads,
) -> AsyncSnapshot {
    let checkpoint_id = frozen.checkpoint_id;
    AsyncSnapshot::new(checkpoint_id, move || {
        let result = write_with_retries(|| run(&frozen, &options, &*storage))?;
        own_uploads.record(
            checkpoint_id,
            &storage,
            result.handle.files().into_iter().cloned().collect(),
        );
        Ok(result)
    })
}

fn run(
    frozen: &Frozen,
    options: &DbOptions,
    storage: &dyn CheckpointStorageAccess,
) -> Result<SnapshotResult> {
    let dir = frozen.dir.path();
    let db = open_db(options, dir, true)?;
    let (lower, upper) = frozen.layout.range_bounds(frozen.range);
    let mut cursors: Vec<Option<DBRawIteratorWithThreadMode<'_, Db>>> = Vec::new();
    for meta in &frozen.metas {
        let cursor = db.cf_handle(&column_family_name(&meta.name)).map(|cf| {
            let mut read = ReadOptions::default();
            read.set_iterate_lower_bound(lower.clone());
            read.set_iterate_upper_bound(upper.clone());
            // A one-off scan must not evict the working set.
            read.fill_cache(false);
            let mut iter = db.raw_iterator_cf_opt(cf, read);
            iter.seek_to_first();
            iter
        });
        cursors.push(cursor);
    }

    let out = storage.create_output(
        frozen.checkpoint_id,
        StateScope::Exclusive,
        &format!("{BACKEND_NAME}-{}", file_name_safe(&frozen.operator)),
    )?;
    let mut writer = KeyGroupsWriter::new(
        out,
        frozen.max_parallelism,
        frozen.range,
        frozen.metas.clone(),
    )?;
    let corrupt = |reason: String| StateError::corrupt(dir.display().to_string(), reason);
    for key_group in frozen.range.iter() {
        writer.start_key_group(key_group)?;
        for (index, (meta, cursor)) in frozen.metas.iter().zip(&mut cursors).enumerate() {
            let Some(iter) = cursor else { continue };
            let state = u32::try_from(index).map_err(|_| corrupt("too many states".into()))?;
            if meta.kind == StateKind::Timers {
                let corrupt =
                    |reason: String| corrupt(format!("{reason} in state '{}'", meta.name));
                write_timers(
                    &mut writer,
                    iter,
                    &frozen.layout,
                    state,
                    key_group,
                    &corrupt,
                )?;
                continue;
            }
            while let Some((composite, value)) = iter.item() {
                let parsed = frozen
                    .layout
                    .parse(composite)
                    .ok_or_else(|| corrupt(format!("malformed key in state '{}'", meta.name)))?;
                if parsed.key_group > key_group {
                    break;
                }
                if parsed.key_group < key_group {
                    return Err(corrupt(format!(
                        "key of key group {} after key group {key_group} in state '{}'",
                        parsed.key_group, meta.name
                    )));
                }
                let user_key = if meta.kind == StateKind::Map {
                    Some(parsed.user_key)
                } else if parsed.user_key.is_empty() {
                    None
                } else {
                    return Err(corrupt(format!(
                        "trailing bytes after the namespace in state '{}'",
                        meta.name
                    )));
                };
                // A map entry's value is stamped like a single value.
                let alive = match &frozen.expiries[index] {
                    Some((ttl, now)) if meta.kind == StateKind::List => {
                        alive_part(StateKind::List, ttl, *now, value)
                    }
                    Some((ttl, now)) => alive_part(StateKind::Value, ttl, *now, value),
                    None => Some(Cow::Borrowed(value)),
                };
                if let Some(value) = alive {
                    writer.add(Entry {
                        state,
                        key: parsed.key,
                        namespace: parsed.namespace,
                        user_key,
                        value: &value,
                    })?;
                }
                iter.next();
            }
            iter.status().map_err(db_error)?;
        }
    }
    let handle = writer.finish(BACKEND_NAME, frozen.checkpoint_id)?;
    let uploaded_bytes = handle.file.size;
    Ok(SnapshotResult {
        handle: KeyedStateHandle::KeyGroups(handle),
        uploaded_bytes,
    })
}

/// Writes the timers of `key_group` from `iter` (a timer column family
/// positioned at them) in their canonical form; leaves `iter` at the next
/// key group.
fn write_timers(
    writer: &mut KeyGroupsWriter,
    iter: &mut DBRawIteratorWithThreadMode<'_, Db>,
    layout: &KeyLayout,
    state: u32,
    key_group: KeyGroup,
    corrupt: &dyn Fn(String) -> StateError,
) -> Result<()> {
    while let Some(stored) = iter.key() {
        let timer = layout
            .parse_timer(stored)
            .ok_or_else(|| corrupt("malformed timer key".into()))?;
        if timer.key_group > key_group {
            break;
        }
        if timer.key_group < key_group {
            return Err(corrupt(format!(
                "timer of key group {} after key group {key_group}",
                timer.key_group
            )));
        }
        writer.add(Entry {
            state,
            key: timer.key,
            namespace: timer.namespace,
            user_key: Some(&encode_timestamp(timer.timestamp)),
            value: &[],
        })?;
        iter.next();
    }
    iter.status().map_err(db_error)
}
