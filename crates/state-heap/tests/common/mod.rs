//! Shared fixtures of the heap backend's integration tests: a set of states
//! that exercises inline and large values, small and large user maps, long
//! keys and namespaces, and a canonical dump to compare contents.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test fixtures: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use state_api::{
    BackendContext, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle,
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, Result, SnapshotOptions,
    StateId, StateKind, ValueStateDescriptor,
};
use state_api::{StateBackendFactory, ValueState};
use state_heap::HeapBackendFactory;
use state_storage::ObjectStoreCheckpointStorage;

pub(crate) const MAX_P: u32 = 128;

pub(crate) fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_P).unwrap()
}

pub(crate) fn storage() -> Arc<ObjectStoreCheckpointStorage> {
    Arc::new(ObjectStoreCheckpointStorage::in_memory("heap-tests").unwrap())
}

pub(crate) fn restore(
    storage: &Arc<ObjectStoreCheckpointStorage>,
    range: KeyGroupRange,
    handles: Vec<KeyedStateHandle>,
) -> Result<Box<dyn KeyedStateBackend>> {
    HeapBackendFactory::new().create(BackendContext {
        operator: format!("op-{}", range.start()),
        max_parallelism: MAX_P,
        key_group_range: range,
        restore: handles,
        storage: storage.clone(),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    })
}

/// Both snapshot phases on this thread.
pub(crate) fn checkpoint(
    backend: &mut dyn KeyedStateBackend,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    id: u64,
) -> KeyedStateHandle {
    let task = backend
        .snapshot(id, &SnapshotOptions::checkpoint(id), storage.clone())
        .unwrap();
    let result = task.run().unwrap();
    assert_eq!(result.uploaded_bytes, result.handle.state_size());
    backend.notify_checkpoint_complete(id).unwrap();
    result.handle
}

/// The test states, by (name, id, kind).
pub(crate) struct States {
    pub(crate) value: ValueState<u64>,
    pub(crate) ids: Vec<(&'static str, StateId, StateKind)>,
}

/// Registers the test states (or re-opens restored ones).
pub(crate) fn register(backend: &mut dyn KeyedStateBackend) -> States {
    let value = backend
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let list = backend
        .list_state(ListStateDescriptor::<String, u64>::new("list"))
        .unwrap();
    let map = backend
        .map_state(MapStateDescriptor::<u32, String>::new("map"))
        .unwrap();
    let sum = backend
        .reducing_state(ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    let blob = backend
        .value_state(ValueStateDescriptor::<Vec<u8>, String>::new("blob"))
        .unwrap();
    let ids = vec![
        ("value", value.id(), StateKind::Value),
        ("list", list.id(), StateKind::List),
        ("map", map.id(), StateKind::Map),
        ("sum", sum.id(), StateKind::Reducing),
        ("blob", blob.id(), StateKind::Value),
    ];
    States { value, ids }
}

/// Writes entries for `key` into every test state: some keys get large
/// maps, long lists, long namespaces and large values.
pub(crate) fn populate(backend: &mut dyn KeyedStateBackend, key: u64) {
    let mut list = backend
        .list_state(ListStateDescriptor::<String, u64>::new("list"))
        .unwrap();
    let map = backend
        .map_state(MapStateDescriptor::<u32, String>::new("map"))
        .unwrap();
    let sum = backend
        .reducing_state(ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    let mut blob = backend
        .value_state(ValueStateDescriptor::<Vec<u8>, String>::new("blob"))
        .unwrap();
    let value = backend
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    backend.set_key(&key).unwrap();
    value.update(backend, &(key * 3)).unwrap();
    for window in [key % 5, 100 + key % 7] {
        list.set_namespace(&window).unwrap();
        for i in 0..(key % 4) {
            list.add(
                backend,
                &format!("{key}-{i}-{}", "x".repeat((key % 30) as usize)),
            )
            .unwrap();
        }
    }
    let entries = if key.is_multiple_of(10) {
        70
    } else {
        (key % 5) as u32
    };
    for uk in 0..entries {
        map.put(backend, &(uk * 31), &format!("v{key}.{uk}"))
            .unwrap();
    }
    sum.add(backend, &key).unwrap();
    blob.set_namespace(&"n".repeat((key % 40) as usize))
        .unwrap();
    blob.update(backend, &vec![key as u8; (key % 64) as usize])
        .unwrap();
}

/// Canonical contents: (state, key, namespace, user key) → value.
pub(crate) type Dump = BTreeMap<(String, Vec<u8>, Vec<u8>, Option<Vec<u8>>), Vec<u8>>;

/// Reads every entry of `states` through the raw contract.
pub(crate) fn dump(backend: &mut dyn KeyedStateBackend, states: &States) -> Dump {
    let mut out = Dump::new();
    for &(name, id, kind) in &states.ids {
        let mut pairs = Vec::new();
        backend
            .for_each_key_and_namespace(id, &mut |k, ns| {
                pairs.push((k.to_vec(), ns.to_vec()));
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        for (key, ns) in pairs {
            backend.set_current_key(&key).unwrap();
            if kind == StateKind::Map {
                backend
                    .map_for_each(id, &ns, &mut |uk, uv| {
                        out.insert(
                            (name.into(), key.clone(), ns.clone(), Some(uk.to_vec())),
                            uv.to_vec(),
                        );
                        Ok(ControlFlow::Continue(()))
                    })
                    .unwrap();
            } else {
                let value = backend.get(id, &ns).unwrap().unwrap().to_vec();
                out.insert((name.into(), key, ns, None), value);
            }
        }
    }
    out
}
