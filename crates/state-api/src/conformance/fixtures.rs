//! Shared fixtures: a standard set of states, key selection, and a canonical
//! dump of a backend's contents for comparisons.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::encode;
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
use crate::key_group::{KeyGroupRange, assign_to_key_group};
use crate::state::{
    AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState,
};

/// Average of `u64` inputs: accumulator (sum, count), result `f64`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Average;

impl AggregateFunction for Average {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    fn add(&self, value: &u64, (sum, count): (u64, u64)) -> (u64, u64) {
        (sum + value, count + 1)
    }

    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }

    fn get_result(&self, (sum, count): &(u64, u64)) -> f64 {
        if *count == 0 {
            0.0
        } else {
            *sum as f64 / *count as f64
        }
    }
}

/// One state of every kind, plus a windowed (namespaced) value state.
pub struct StandardStates {
    /// `"value"`: u64, no default.
    pub value: ValueState<u64>,
    /// `"list"`: strings.
    pub list: ListState<String>,
    /// `"map"`: u32 → string.
    pub map: MapState<u32, String>,
    /// `"sum"`: reducing u64 by addition.
    pub sum: ReducingState<u64>,
    /// `"average"`: aggregating with [`Average`].
    pub average: AggregatingState<Average>,
    /// `"windowed"`: value state in a u64 namespace (e.g. window end).
    pub windowed: ValueState<u64, u64>,
}

impl StandardStates {
    /// Registers (or re-opens) the standard states on `backend`.
    ///
    /// # Panics
    /// When a registration fails.
    pub fn register(backend: &mut dyn KeyedStateBackend) -> Self {
        let name = backend.backend_name();
        let fail = |what: &str, e: crate::StateError| -> ! {
            panic!("{name}: registering {what} failed: {e}")
        };
        Self {
            value: backend
                .value_state(ValueStateDescriptor::<u64>::new("value"))
                .unwrap_or_else(|e| fail("value", e)),
            list: backend
                .list_state(ListStateDescriptor::<String>::new("list"))
                .unwrap_or_else(|e| fail("list", e)),
            map: backend
                .map_state(MapStateDescriptor::<u32, String>::new("map"))
                .unwrap_or_else(|e| fail("map", e)),
            sum: backend
                .reducing_state(ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
                .unwrap_or_else(|e| fail("sum", e)),
            average: backend
                .aggregating_state(AggregatingStateDescriptor::new("average", Average))
                .unwrap_or_else(|e| fail("average", e)),
            windowed: backend
                .value_state(ValueStateDescriptor::<u64, u64>::new("windowed"))
                .unwrap_or_else(|e| fail("windowed", e)),
        }
    }

    /// (name, id, kind) of every standard state, for [`dump`].
    pub fn ids(&self) -> Vec<(&'static str, StateId, StateKind)> {
        vec![
            ("value", self.value.id(), StateKind::Value),
            ("list", self.list.id(), StateKind::List),
            ("map", self.map.id(), StateKind::Map),
            ("sum", self.sum.id(), StateKind::Reducing),
            ("average", self.average.id(), StateKind::Aggregating),
            ("windowed", self.windowed.id(), StateKind::Value),
        ]
    }

    /// Writes a deterministic mix of entries for `key` into every state.
    ///
    /// # Panics
    /// When a write fails.
    pub fn populate(&mut self, backend: &mut dyn KeyedStateBackend, key: u64) {
        let outcome = (|| {
            backend.set_key(&key)?;
            self.value.update(backend, &(key * 10))?;
            self.list.add(backend, &format!("a{key}"))?;
            self.list.add(backend, &format!("b,{key}"))?;
            for uk in 0..(key % 4) as u32 {
                self.map.put(backend, &uk, &format!("v{key}-{uk}"))?;
            }
            self.sum.add(backend, &key)?;
            self.sum.add(backend, &1)?;
            self.average.add(backend, &key)?;
            for window in [key % 3, key % 3 + 10] {
                self.windowed.set_namespace(&window)?;
                self.windowed.update(backend, &(key + window))?;
            }
            Ok::<_, crate::StateError>(())
        })();
        if let Err(e) = outcome {
            panic!(
                "{}: populating key {key} failed: {e}",
                backend.backend_name()
            );
        }
    }
}

/// Canonical contents of a backend: (state name, key, namespace, user key) →
/// value bytes; map state has one entry per map entry.
pub type Dump = BTreeMap<(String, Vec<u8>, Vec<u8>, Option<Vec<u8>>), Vec<u8>>;

/// Reads every entry of `states` through the public contract.
///
/// # Panics
/// When a read fails.
pub fn dump(backend: &mut dyn KeyedStateBackend, states: &[(&str, StateId, StateKind)]) -> Dump {
    let name = backend.backend_name();
    let mut out = Dump::new();
    for &(state_name, id, kind) in states {
        let state_name = state_name.to_string();
        let mut pairs = Vec::new();
        backend
            .for_each_key_and_namespace(id, &mut |k, ns| {
                pairs.push((k.to_vec(), ns.to_vec()));
                Ok(ControlFlow::Continue(()))
            })
            .unwrap_or_else(|e| panic!("{name}: iterating state {id:?} failed: {e}"));
        for (key, ns) in pairs {
            backend
                .set_current_key(&key)
                .unwrap_or_else(|e| panic!("{name}: set_current_key during dump failed: {e}"));
            if kind.has_user_key() {
                backend
                    .map_for_each(id, &ns, &mut |uk, uv| {
                        out.insert(
                            (
                                state_name.clone(),
                                key.clone(),
                                ns.clone(),
                                Some(uk.to_vec()),
                            ),
                            uv.to_vec(),
                        );
                        Ok(ControlFlow::Continue(()))
                    })
                    .unwrap_or_else(|e| panic!("{name}: map iteration during dump failed: {e}"));
            } else {
                let value = backend
                    .get(id, &ns)
                    .unwrap_or_else(|e| panic!("{name}: get during dump failed: {e}"))
                    .unwrap_or_else(|| panic!("{name}: key listed by iteration has no value"))
                    .to_vec();
                out.insert((state_name.clone(), key, ns, None), value);
            }
        }
    }
    out
}

/// The first `count` u64 keys (from `from` upwards) whose key group lies in
/// `range`.
///
/// # Panics
/// For an invalid max parallelism.
pub fn keys_in_range(
    range: KeyGroupRange,
    max_parallelism: u32,
    from: u64,
    count: usize,
) -> Vec<u64> {
    (from..)
        .filter(|k| {
            let encoded = encode(k).expect("u64 encodes");
            range.contains(
                assign_to_key_group(&encoded, max_parallelism).expect("valid max parallelism"),
            )
        })
        .take(count)
        .collect()
}
