//! Differential test: random operation sequences applied to the heap and
//! the RocksDB backends side by side, every read compared, with checkpoint
//! and restore steps (incremental or full, at another parallelism) in the
//! sequence. Max parallelism 128 and 300 cover both key-group prefix widths.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use state_api::key_group::{assign_to_key_group, key_group_range_for_operator};
use state_api::{
    BackendContext, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    SnapshotOptions, SnapshotType, StateBackendFactory, ValueState, ValueStateDescriptor,
};
use state_storage::ObjectStoreCheckpointStorage;

#[derive(Clone, Debug)]
enum Op {
    Value(u8, Option<u64>),
    Append(u8, Vec<u32>),
    ReplaceList(u8, Vec<u32>),
    MapPut(u8, u16, u32),
    MapRemove(u8, u16),
    Reduce(u8, u64),
    Clear(u8, u8),
    Merge(u8, Vec<u8>),
    Checkpoint { full: bool, parallelism: u32 },
}

fn op() -> impl Strategy<Value = (u64, Op)> {
    let ns = 0u8..3;
    let op = prop_oneof![
        4 => (ns.clone(), proptest::option::of(any::<u64>())).prop_map(|(n, v)| Op::Value(n, v)),
        4 => (ns.clone(), proptest::collection::vec(any::<u32>(), 0..3)).prop_map(|(n, v)| Op::Append(n, v)),
        4 => (ns.clone(), proptest::collection::vec(any::<u32>(), 0..3)).prop_map(|(n, v)| Op::ReplaceList(n, v)),
        4 => (ns.clone(), any::<u16>(), any::<u32>()).prop_map(|(n, k, v)| Op::MapPut(n, k % 8, v)),
        4 => (ns.clone(), any::<u16>()).prop_map(|(n, k)| Op::MapRemove(n, k % 8)),
        4 => (ns.clone(), 0u64..1000).prop_map(|(n, v)| Op::Reduce(n, v)),
        4 => (ns.clone(), 0u8..4).prop_map(|(n, s)| Op::Clear(n, s)),
        4 => (ns.clone(), proptest::collection::vec(0u8..3, 0..3)).prop_map(|(n, s)| Op::Merge(n, s)),
        1 => (any::<bool>(), 1u32..4).prop_map(|(full, parallelism)| Op::Checkpoint { full, parallelism }),
    ];
    (0u64..24, op)
}

struct States {
    value: ValueState<u64, u8>,
    list: ListState<u32, u8>,
    map: MapState<u16, u32, u8>,
    sum: ReducingState<u64, u8>,
}

impl States {
    fn register(b: &mut dyn KeyedStateBackend) -> Self {
        Self {
            value: b.value_state(ValueStateDescriptor::new("value")).unwrap(),
            list: b.list_state(ListStateDescriptor::new("list")).unwrap(),
            map: b.map_state(MapStateDescriptor::new("map")).unwrap(),
            sum: b
                .reducing_state(ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| {
                    a + b
                }))
                .unwrap(),
        }
    }
}

/// One side: the instances of one backend kind at the current parallelism.
struct Side {
    factory: Box<dyn StateBackendFactory>,
    max_parallelism: u32,
    instances: Vec<(Box<dyn KeyedStateBackend>, States)>,
}

impl Side {
    fn new(
        factory: Box<dyn StateBackendFactory>,
        max_parallelism: u32,
        storage: &Arc<ObjectStoreCheckpointStorage>,
    ) -> Self {
        let mut side = Self {
            factory,
            max_parallelism,
            instances: Vec::new(),
        };
        side.restore(1, Vec::new(), storage);
        side
    }

    fn restore(
        &mut self,
        parallelism: u32,
        handles: Vec<KeyedStateHandle>,
        storage: &Arc<ObjectStoreCheckpointStorage>,
    ) {
        self.instances.clear();
        for index in 0..parallelism {
            let range =
                key_group_range_for_operator(self.max_parallelism, parallelism, index).unwrap();
            let mine = handles
                .iter()
                .filter(|h| !h.key_group_range().intersection(&range).is_empty())
                .cloned()
                .collect();
            let mut backend = self
                .factory
                .create(BackendContext {
                    operator: format!("op-{index}"),
                    max_parallelism: self.max_parallelism,
                    key_group_range: range,
                    restore: mine,
                    storage: storage.clone(),
                    restore_storage: None,
                    skip_restored_states: Vec::new(),
                })
                .unwrap();
            let states = States::register(&mut *backend);
            self.instances.push((backend, states));
        }
    }

    fn checkpoint(
        &mut self,
        id: u64,
        full: bool,
        storage: &Arc<ObjectStoreCheckpointStorage>,
    ) -> Vec<KeyedStateHandle> {
        let options = SnapshotOptions {
            snapshot_type: if full {
                SnapshotType::FullCheckpoint
            } else {
                SnapshotType::Checkpoint
            },
            timestamp_ms: id,
        };
        self.instances
            .iter_mut()
            .map(|(b, _)| {
                let handle = b
                    .snapshot(id, &options, storage.clone())
                    .unwrap()
                    .run()
                    .unwrap()
                    .handle;
                b.notify_checkpoint_complete(id).unwrap();
                handle
            })
            .collect()
    }

    /// Applies `op` to `key` and returns every read it makes, as text.
    fn apply(&mut self, key: u64, op: &Op) -> String {
        let encoded = state_api::codec::encode(&key).unwrap();
        let kg = assign_to_key_group(&encoded, self.max_parallelism).unwrap();
        let (b, s) = self
            .instances
            .iter_mut()
            .find(|(b, _)| b.key_group_range().contains(kg))
            .unwrap();
        let b = &mut **b;
        b.set_key(&key).unwrap();
        let out = (|| -> state_api::Result<String> {
            Ok(match op {
                Op::Value(ns, v) => {
                    s.value.set_namespace(ns)?;
                    let before = s.value.value(b)?;
                    match v {
                        Some(v) => s.value.update(b, v)?,
                        None => s.value.clear(b)?,
                    }
                    format!("{before:?}")
                }
                Op::Append(ns, items) => {
                    s.list.set_namespace(ns)?;
                    s.list.add_all(b, items)?;
                    format!("{:?}", s.list.get(b)?)
                }
                Op::ReplaceList(ns, items) => {
                    s.list.set_namespace(ns)?;
                    s.list.update(b, items)?;
                    format!("{:?}", s.list.get(b)?)
                }
                Op::MapPut(ns, k, v) => {
                    s.map.set_namespace(ns)?;
                    let before = s.map.get(b, k)?;
                    s.map.put(b, k, v)?;
                    format!("{before:?} {:?}", s.map.entries(b)?)
                }
                Op::MapRemove(ns, k) => {
                    s.map.set_namespace(ns)?;
                    s.map.remove(b, k)?;
                    format!("{:?} {}", s.map.entries(b)?, s.map.is_empty(b)?)
                }
                Op::Reduce(ns, v) => {
                    s.sum.set_namespace(ns)?;
                    s.sum.add(b, v)?;
                    format!("{:?}", s.sum.get(b)?)
                }
                Op::Clear(ns, which) => {
                    match which {
                        0 => {
                            s.value.set_namespace(ns)?;
                            s.value.clear(b)?
                        }
                        1 => {
                            s.list.set_namespace(ns)?;
                            s.list.clear(b)?
                        }
                        2 => {
                            s.map.set_namespace(ns)?;
                            s.map.clear(b)?
                        }
                        _ => {
                            s.sum.set_namespace(ns)?;
                            s.sum.clear(b)?
                        }
                    }
                    String::new()
                }
                Op::Merge(target, sources) => {
                    s.list.set_namespace(target)?;
                    s.list.merge_namespaces(b, target, sources)?;
                    s.sum.set_namespace(target)?;
                    s.sum.merge_namespaces(b, target, sources)?;
                    format!("{:?} {:?}", s.list.get(b)?, s.sum.get(b)?)
                }
                Op::Checkpoint { .. } => String::new(),
            })
        })();
        match out {
            Ok(text) => text,
            Err(e) => format!("error: {e}"),
        }
    }

    /// Every (key, namespace) of every state, sorted, with its reads.
    fn contents(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (b, s) in &mut self.instances {
            for id in [s.value.id(), s.list.id(), s.map.id(), s.sum.id()] {
                let mut pairs = Vec::new();
                b.for_each_key_and_namespace(id, &mut |k, ns| {
                    pairs.push((k.to_vec(), ns.to_vec()));
                    Ok(std::ops::ControlFlow::Continue(()))
                })
                .unwrap();
                for (k, ns) in pairs {
                    b.set_current_key(&k).unwrap();
                    let value = if id == s.map.id() {
                        let mut entries = Vec::new();
                        b.map_for_each(id, &ns, &mut |uk, uv| {
                            entries.push((uk.to_vec(), uv.to_vec()));
                            Ok(std::ops::ControlFlow::Continue(()))
                        })
                        .unwrap();
                        format!("{entries:?}")
                    } else {
                        format!("{:?}", b.get(id, &ns).unwrap())
                    };
                    out.push(format!("{id:?} {k:?} {ns:?} {value}"));
                }
            }
        }
        out.sort();
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn heap_and_rocksdb_agree(
        max_parallelism in prop_oneof![Just(128u32), Just(300u32)],
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("differential").unwrap());
        let (_dir, rocks) = common::factory(true);
        let mut heap = Side::new(Box::new(state_heap::HeapBackendFactory::new()), max_parallelism, &storage);
        let mut rocks = Side::new(Box::new(rocks), max_parallelism, &storage);
        let mut checkpoint_id = 0;
        for (step, (key, op)) in ops.iter().enumerate() {
            if let Op::Checkpoint { full, parallelism } = op {
                checkpoint_id += 1;
                let heap_handles = heap.checkpoint(checkpoint_id, *full, &storage);
                let rocks_handles = rocks.checkpoint(checkpoint_id, *full, &storage);
                heap.restore(*parallelism, heap_handles, &storage);
                rocks.restore(*parallelism, rocks_handles, &storage);
                prop_assert_eq!(heap.contents(), rocks.contents(), "after restore at step {}", step);
                continue;
            }
            let expected = heap.apply(*key, op);
            let actual = rocks.apply(*key, op);
            prop_assert_eq!(expected, actual, "step {}: key {} {:?}", step, key, op);
        }
        prop_assert_eq!(heap.contents(), rocks.contents());
    }
}
