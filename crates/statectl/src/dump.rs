//! `statectl dump`: the entries of one state as JSON lines.
//!
//! Every handle is restored into the backend that reads its format (a
//! key-group file into a heap backend, RocksDB files into RocksDB, a
//! changelog handle into the changelog wrapper over the right one), with
//! every other state skipped, and its entries are read through the state
//! API: the same path a job's restore takes, so what the dump shows is what
//! a job would see.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{Map, Value};
use state_api::descriptor::StateFunction;
use state_api::key_group::assign_to_key_group;
use state_api::timers::{decode_timestamp, malformed_timestamp};
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyedStateBackend, KeyedStateHandle, Result,
    StateBackendFactory, StateError, StateKind, StateMeta, StateRegistration,
};
use state_storage::ObjectStoreCheckpointStorage;
use state_storage::restore::{RestoreSource, handle_states};

use crate::commands::io_error;
use crate::decode::Decoding;

/// What to dump.
pub struct DumpRequest<'a> {
    /// The operator; may be left out when the snapshot has one.
    pub operator: Option<&'a str>,
    /// The state's name.
    pub state: &'a str,
    /// How to show keys.
    pub key_decoding: Decoding,
    /// Stop after this many entries.
    pub limit: Option<u64>,
}

/// Writes the entries of the requested state as JSON lines to `out`;
/// returns how many. `progress(done, total)` is called per handle.
///
/// # Errors
/// [`StateError::Config`] naming the available operators or states when
/// the request does not match; restore errors of damaged snapshots; I/O
/// errors of `out` as [`StateError::Backend`].
pub fn dump(
    snapshot: &RestoreSource,
    request: &DumpRequest<'_>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<u64> {
    let operators = &snapshot.metadata.operators;
    let operator = match request.operator {
        Some(name) => name.to_string(),
        None if operators.len() == 1 => operators.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(StateError::Config {
                key: "--operator".into(),
                message: format!(
                    "the {} has several operators, name one of: {}",
                    snapshot.kind_name(),
                    operators.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    };
    let Some(handles) = operators.get(&operator) else {
        return Err(StateError::Config {
            key: "--operator".into(),
            message: format!(
                "no operator '{operator}' in the {}; it has: {}",
                snapshot.kind_name(),
                operators.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    };
    let storage = Arc::clone(&snapshot.storage) as Arc<dyn CheckpointStorageAccess>;
    // Each handle's states, read once (a key-group file's header is a read).
    let handle_states: Vec<Vec<StateMeta>> = handles
        .iter()
        .map(|handle| handle_states(handle, &*storage))
        .collect::<Result<_>>()?;
    let mut known = Vec::new();
    let mut meta = None;
    for state in handle_states.iter().flatten() {
        if state.name == request.state {
            meta = Some(state.clone());
        } else if !known.contains(&state.name) {
            known.push(state.name.clone());
        }
    }
    let Some(meta) = meta else {
        known.sort();
        return Err(StateError::Config {
            key: "--state".into(),
            message: format!(
                "operator '{operator}' has no state '{}'; it has: {}",
                request.state,
                known.join(", ")
            ),
        });
    };

    let work = tempfile::tempdir().map_err(io_error)?;
    let scratch = Arc::new(ObjectStoreCheckpointStorage::in_memory("statectl")?)
        as Arc<dyn CheckpointStorageAccess>;
    let mut written = 0u64;
    for (index, (handle, states)) in handles.iter().zip(handle_states).enumerate() {
        progress(index + 1, handles.len());
        if !states.iter().any(|s| s.name == meta.name) {
            continue;
        }
        let factory = factory_for(handle, work.path())?;
        let mut backend = factory.create(BackendContext {
            operator: format!("statectl-{index}"),
            max_parallelism: handle.max_parallelism(),
            key_group_range: handle.key_group_range(),
            restore: vec![handle.clone()],
            storage: Arc::clone(&scratch),
            restore_storage: Some(Arc::clone(&storage)),
            skip_restored_states: states
                .into_iter()
                .map(|s| s.name)
                .filter(|name| *name != meta.name)
                .collect(),
        })?;
        let remaining = request.limit.map(|limit| limit.saturating_sub(written));
        written += write_entries(&mut *backend, &meta, request.key_decoding, remaining, out)?;
        if request.limit.is_some_and(|limit| written >= limit) {
            break;
        }
    }
    Ok(written)
}

/// The factory of the backend that reads `handle`'s format.
fn factory_for(
    handle: &KeyedStateHandle,
    work: &std::path::Path,
) -> Result<Arc<dyn StateBackendFactory>> {
    let heap = || Arc::new(state_heap::HeapBackendFactory::new()) as Arc<dyn StateBackendFactory>;
    let rocksdb = || -> Result<Arc<dyn StateBackendFactory>> {
        let config = state_rocksdb::RocksDbConfig::new(work.join("rocksdb"))
            .with_memory(state_rocksdb::RocksDbMemory::new(64 << 20)?)
            .with_incremental(false);
        Ok(Arc::new(state_rocksdb::RocksDbBackendFactory::new(config)))
    };
    Ok(match handle {
        KeyedStateHandle::Incremental(_) => rocksdb()?,
        KeyedStateHandle::Changelog(h) => {
            let over_rocksdb = h
                .materialized
                .iter()
                .any(|m| matches!(m, KeyedStateHandle::Incremental(_)));
            let delegate = if over_rocksdb { rocksdb()? } else { heap() };
            let materialization = state_changelog::MaterializationConfig {
                interval: None,
                ..state_changelog::MaterializationConfig::default()
            };
            Arc::new(state_changelog::ChangelogBackendFactory::new(
                delegate,
                state_changelog::DstlConfig::default(),
                materialization,
            )?)
        }
        _ => heap(),
    })
}

/// A fold for reading only: the dump never adds to or merges state.
struct ReadOnly;

impl StateFunction for ReadOnly {
    fn add(&self, _: Option<&[u8]>, _: &[u8], _: &mut Vec<u8>) -> Result<()> {
        Err(read_only())
    }

    fn merge(&self, _: &[u8], _: &[u8], _: &mut Vec<u8>) -> Result<()> {
        Err(read_only())
    }
}

fn read_only() -> StateError {
    StateError::NotSupported {
        operation: "folding state",
        backend: "statectl",
    }
}

fn write_entries(
    backend: &mut dyn KeyedStateBackend,
    meta: &StateMeta,
    key_decoding: Decoding,
    limit: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64> {
    let function = meta
        .kind
        .needs_function()
        .then(|| Arc::new(ReadOnly) as Arc<dyn StateFunction>);
    let id = backend.register_state(StateRegistration {
        meta: meta.clone(),
        function,
        ttl: None,
    })?;
    let mut pairs = Vec::new();
    backend.for_each_key_and_namespace(id, &mut |key, namespace| {
        pairs.push((key.to_vec(), namespace.to_vec()));
        Ok(ControlFlow::Continue(()))
    })?;
    pairs.sort();
    let namespace_decoding = Decoding::of_type_name(&meta.namespace_type);
    let value_decoding = Decoding::of_type_name(&meta.value_type);
    let user_key_decoding = meta
        .user_key_type
        .as_deref()
        .map_or(Decoding::Hex, Decoding::of_type_name);
    let max_parallelism = backend.max_parallelism();
    let mut written = 0u64;
    for (key, namespace) in pairs {
        if limit.is_some_and(|limit| written >= limit) {
            break;
        }
        let mut line = Map::new();
        line.insert(
            "key_group".into(),
            Value::from(assign_to_key_group(&key, max_parallelism)?),
        );
        line.insert("key".into(), key_decoding.to_json(&key));
        line.insert("namespace".into(), namespace_decoding.to_json(&namespace));
        backend.set_current_key(&key)?;
        if meta.kind == StateKind::Timers {
            // One line per timer, with its timestamp (ms).
            let mut timestamps = Vec::new();
            backend.map_for_each(id, &namespace, &mut |timestamp, _| {
                timestamps.push(
                    decode_timestamp(timestamp).ok_or_else(|| malformed_timestamp("<dump>"))?,
                );
                Ok(ControlFlow::Continue(()))
            })?;
            for timestamp in timestamps {
                if limit.is_some_and(|limit| written >= limit) {
                    break;
                }
                let mut entry = line.clone();
                entry.insert("timestamp".into(), Value::from(timestamp));
                write_line(out, entry)?;
                written += 1;
            }
            continue;
        }
        if meta.kind == StateKind::Map {
            let mut entries = Vec::new();
            backend.map_for_each(id, &namespace, &mut |user_key, value| {
                entries.push((user_key.to_vec(), value.to_vec()));
                Ok(ControlFlow::Continue(()))
            })?;
            for (user_key, value) in entries {
                if limit.is_some_and(|limit| written >= limit) {
                    break;
                }
                let mut entry = line.clone();
                entry.insert("user_key".into(), user_key_decoding.to_json(&user_key));
                if meta.ttl.is_some() {
                    let (value, stamp) = value_decoding.stamped_to_json(&value);
                    entry.insert("value".into(), value);
                    entry.insert(
                        "last_access_ms".into(),
                        stamp.map_or(Value::Null, Value::from),
                    );
                } else {
                    entry.insert("value".into(), value_decoding.to_json(&value));
                }
                write_line(out, entry)?;
                written += 1;
            }
            continue;
        }
        let Some(value) = backend.get(id, &namespace)? else {
            continue;
        };
        // Values of a state with a time to live carry their last access.
        let (value, stamp) = match (meta.kind == StateKind::List, meta.ttl.is_some()) {
            (true, false) => (value_decoding.list_to_json(value), None),
            (false, false) => (value_decoding.to_json(value), None),
            (true, true) => {
                let (values, stamps) = value_decoding.stamped_list_to_json(value);
                (values, Some(stamps))
            }
            (false, true) => {
                let (value, stamp) = value_decoding.stamped_to_json(value);
                (value, Some(stamp.map_or(Value::Null, Value::from)))
            }
        };
        line.insert("value".into(), value);
        if let Some(stamp) = stamp {
            line.insert("last_access_ms".into(), stamp);
        }
        write_line(out, line)?;
        written += 1;
    }
    Ok(written)
}

fn write_line(out: &mut dyn Write, line: Map<String, Value>) -> Result<()> {
    // The conversion keeps the kind of I/O errors (a closed pipe).
    serde_json::to_writer(&mut *out, &Value::Object(line))
        .map_err(|e| io_error(std::io::Error::from(e)))?;
    out.write_all(b"\n").map_err(io_error)
}
