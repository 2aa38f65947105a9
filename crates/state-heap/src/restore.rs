//! Restore: reads key-group snapshots (taken at any parallelism, by any
//! backend that writes the key-group format) into the tables.
//!
//! Only the backend's own key groups are read from each handle. Everything
//! restored bytes could get wrong is an error, never a panic: a key stored
//! under a key group it does not hash to, duplicate entries, malformed list
//! values, states restored with conflicting types.

use state_api::codec::ListElements;
use state_api::format::key_groups::{Entry, KeyGroupsReader};
use state_api::timers::decode_timestamp;
use state_api::{
    CheckpointStorageAccess, KeyGroupsStateHandle, KeyedStateBackend, KeyedStateHandle, Result,
    StateError, StateKind,
};

use crate::backend::HeapKeyedStateBackend;
use crate::bytes::ValueBytes;
use crate::key::write_composite_key;
use crate::table::Table;
use crate::user_map::UserMap;

/// Restores `handles` into `backend` (which must be empty), leaving out the
/// states named in `skip`.
///
/// # Errors
/// [`StateError::Restore`] for handles this backend cannot read or states
/// whose types conflict across handles; [`StateError::Corrupt`] for damaged
/// or inconsistent files; storage errors.
pub(crate) fn restore(
    backend: &mut HeapKeyedStateBackend,
    handles: &[KeyedStateHandle],
    storage: &dyn CheckpointStorageAccess,
    skip: &[String],
) -> Result<()> {
    for handle in handles {
        match handle {
            KeyedStateHandle::KeyGroups(handle) => {
                restore_key_groups(backend, handle, storage, skip)?;
            }
            KeyedStateHandle::Incremental(h) => {
                return Err(StateError::Restore(format!(
                    "heap backend cannot restore an incremental handle of checkpoint {}: it holds \
                     the '{}' backend's own files (an incremental checkpoint or a native \
                     savepoint), which only that backend restores; take a canonical savepoint to \
                     switch backends",
                    h.checkpoint_id, h.backend
                )));
            }
            other => {
                return Err(StateError::Restore(format!(
                    "heap backend cannot restore a {} handle (checkpoint {})",
                    other.format_name(),
                    other.checkpoint_id()
                )));
            }
        }
    }
    Ok(())
}

fn restore_key_groups(
    backend: &mut HeapKeyedStateBackend,
    handle: &KeyGroupsStateHandle,
    storage: &dyn CheckpointStorageAccess,
    skip: &[String],
) -> Result<()> {
    let path = handle.file.path.as_str();
    let reader = KeyGroupsReader::open(storage, handle)?;

    // File state index → backend state index; `None` for skipped states.
    let mut slots = Vec::with_capacity(reader.meta().states.len());
    for (i, meta) in reader.meta().states.iter().enumerate() {
        if reader
            .meta()
            .states
            .iter()
            .take(i)
            .any(|m| m.name == meta.name)
        {
            return Err(StateError::corrupt(
                path,
                format!(
                    "state '{}' is listed twice in the file's metadata",
                    meta.name
                ),
            ));
        }
        if skip.contains(&meta.name) {
            slots.push(None);
            continue;
        }
        let slot = backend.restored_state(meta).map_err(|e| {
            StateError::Restore(format!(
                "state '{}' in '{path}' (checkpoint {}) conflicts with the same state in another handle: {e}",
                meta.name, handle.checkpoint_id
            ))
        })?;
        slots.push(Some((slot, meta.kind)));
    }

    let range = backend.key_group_range();
    let assigner = *backend.assigner();
    let mut composite = Vec::with_capacity(64);
    reader.for_each_entry(storage, range, |key_group, entry| {
        let corrupt =
            |reason: String| StateError::corrupt(path, format!("key group {key_group}: {reason}"));
        let actual = assigner.key_group(entry.key);
        if actual != key_group {
            return Err(corrupt(format!(
                "a key stored under key group {key_group} belongs to key group {actual}"
            )));
        }
        let index = range
            .index_of(key_group)
            .ok_or_else(|| corrupt(format!("key group {key_group} is outside {range}")))?;
        let &Some((slot, kind)) = slots
            .get(entry.state as usize)
            .ok_or_else(|| corrupt(format!("record of unknown state index {}", entry.state)))?
        else {
            return Ok(()); // a skipped state
        };
        let table = backend
            .table_mut(slot)
            .ok_or_else(|| corrupt(format!("state index {} has no table", entry.state)))?;
        write_composite_key(&mut composite, entry.key, entry.namespace);
        insert(table, kind, index, &composite, &entry).map_err(corrupt)
    })
}

/// Inserts one restored record; `Err` describes why the record is corrupt.
fn insert(
    table: &mut Table,
    kind: StateKind,
    index: usize,
    composite: &[u8],
    entry: &Entry<'_>,
) -> std::result::Result<(), String> {
    match table {
        Table::Bytes(table) => {
            if kind == StateKind::List {
                if entry.value.is_empty() {
                    return Ok(()); // an empty list is an absent list
                }
                if ListElements::new(entry.value).any(|e| e.is_err()) {
                    return Err(format!(
                        "malformed list value of state index {}",
                        entry.state
                    ));
                }
            }
            let previous = table.insert(index, composite, ValueBytes::from_slice(entry.value));
            if previous.is_some() {
                return Err(duplicate(entry));
            }
        }
        Table::Map(table) => {
            let user_key = entry.user_key.ok_or_else(|| {
                format!("map record of state index {} without user key", entry.state)
            })?;
            match table.get_mut(index, composite) {
                Some(user_map) => {
                    if user_map.insert(user_key, entry.value) {
                        return Err(duplicate(entry));
                    }
                }
                None => table.insert_new(index, composite, UserMap::single(user_key, entry.value)),
            }
        }
        Table::Timers(table) => {
            let timestamp = entry.user_key.and_then(decode_timestamp).ok_or_else(|| {
                format!(
                    "timer record of state index {} without an 8-byte timestamp",
                    entry.state
                )
            })?;
            if !table.add(index, entry.key, entry.namespace, timestamp) {
                return Err(duplicate(entry));
            }
        }
    }
    Ok(())
}

fn duplicate(entry: &Entry<'_>) -> String {
    format!("duplicate entry of state index {}", entry.state)
}
