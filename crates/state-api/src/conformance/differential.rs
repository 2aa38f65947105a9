//! Randomized differential test: random operation sequences run against the
//! backend and against a plain in-memory model; every read must agree.
//! Sequences include checkpoint-and-restore steps, so snapshots are covered
//! too. Failing sequences are shrunk by proptest to a minimal one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::collection::vec;
use proptest::prelude::*;

use super::Harness;
use super::fixtures::Average;
use crate::backend::KeyedStateBackend;
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::{
    AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState,
};

const MAX_PARALLELISM: u32 = 128;

/// One step of a random sequence. Keys are u8 (16 of them), namespaces u8 (4).
#[derive(Clone, Debug)]
enum Op {
    SetKey(u8),
    ValuePut(u8, u64),
    ValueClear(u8),
    ValueGet(u8),
    ListAdd(u8, u16),
    ListAddAll(u8, Vec<u16>),
    ListUpdate(u8, Vec<u16>),
    ListGet(u8),
    ListClear(u8),
    MapPut(u8, u8, u16),
    MapRemove(u8, u8),
    MapGet(u8, u8),
    MapEntries(u8),
    MapClear(u8),
    SumAdd(u8, u32),
    SumGet(u8),
    AverageAdd(u8, u32),
    AverageGet(u8),
    MergeLists(u8, Vec<u8>),
    MergeSums(u8, Vec<u8>),
    MergeAverages(u8, Vec<u8>),
    ValueKeys(u8),
    CheckpointAndRestore,
}

fn op() -> impl Strategy<Value = Op> {
    let ns = 0u8..4;
    let key = 0u8..16;
    prop_oneof![
        3 => key.prop_map(Op::SetKey),
        3 => (ns.clone(), any::<u64>()).prop_map(|(n, v)| Op::ValuePut(n, v)),
        1 => ns.clone().prop_map(Op::ValueClear),
        2 => ns.clone().prop_map(Op::ValueGet),
        2 => (ns.clone(), any::<u16>()).prop_map(|(n, v)| Op::ListAdd(n, v)),
        1 => (ns.clone(), vec(any::<u16>(), 0..4)).prop_map(|(n, v)| Op::ListAddAll(n, v)),
        1 => (ns.clone(), vec(any::<u16>(), 0..4)).prop_map(|(n, v)| Op::ListUpdate(n, v)),
        2 => ns.clone().prop_map(Op::ListGet),
        1 => ns.clone().prop_map(Op::ListClear),
        3 => (ns.clone(), 0u8..6, any::<u16>()).prop_map(|(n, k, v)| Op::MapPut(n, k, v)),
        1 => (ns.clone(), 0u8..6).prop_map(|(n, k)| Op::MapRemove(n, k)),
        2 => (ns.clone(), 0u8..6).prop_map(|(n, k)| Op::MapGet(n, k)),
        1 => ns.clone().prop_map(Op::MapEntries),
        1 => ns.clone().prop_map(Op::MapClear),
        2 => (ns.clone(), any::<u32>()).prop_map(|(n, v)| Op::SumAdd(n, v)),
        1 => ns.clone().prop_map(Op::SumGet),
        2 => (ns.clone(), any::<u32>()).prop_map(|(n, v)| Op::AverageAdd(n, v)),
        1 => ns.clone().prop_map(Op::AverageGet),
        1 => (ns.clone(), vec(ns.clone(), 0..3)).prop_map(|(t, s)| Op::MergeLists(t, s)),
        1 => (ns.clone(), vec(ns.clone(), 0..3)).prop_map(|(t, s)| Op::MergeSums(t, s)),
        1 => (ns.clone(), vec(ns.clone(), 0..3)).prop_map(|(t, s)| Op::MergeAverages(t, s)),
        1 => ns.prop_map(Op::ValueKeys),
        1 => Just(Op::CheckpointAndRestore),
    ]
}

struct States {
    value: ValueState<u64, u8>,
    list: ListState<u16, u8>,
    map: MapState<u8, u16, u8>,
    sum: ReducingState<u64, u8>,
    average: AggregatingState<Average, u8>,
}

impl States {
    fn register(b: &mut dyn KeyedStateBackend) -> Result<Self> {
        Ok(Self {
            value: b.value_state(ValueStateDescriptor::new("d-value"))?,
            list: b.list_state(ListStateDescriptor::new("d-list"))?,
            map: b.map_state(MapStateDescriptor::new("d-map"))?,
            sum: b.reducing_state(ReducingStateDescriptor::new("d-sum", |a: &u64, b: &u64| {
                a.wrapping_add(*b)
            }))?,
            average: b.aggregating_state(AggregatingStateDescriptor::new("d-average", Average))?,
        })
    }
}

/// The plain model: one ordered map per state, keyed by (key, namespace).
#[derive(Default)]
struct Model {
    key: Option<u8>,
    values: BTreeMap<(u8, u8), u64>,
    lists: BTreeMap<(u8, u8), Vec<u16>>,
    maps: BTreeMap<(u8, u8), BTreeMap<u8, u16>>,
    sums: BTreeMap<(u8, u8), u64>,
    averages: BTreeMap<(u8, u8), (u64, u64)>,
}

static CHECKPOINT_IDS: AtomicU64 = AtomicU64::new(1_000_000);

fn check<T: PartialEq + std::fmt::Debug>(
    what: &str,
    backend: T,
    model: T,
) -> std::result::Result<(), String> {
    if backend == model {
        Ok(())
    } else {
        Err(format!(
            "{what}: backend read {backend:?}, model says {model:?}"
        ))
    }
}

fn run_ops(h: &Harness<'_>, ops: &[Op]) -> std::result::Result<(), String> {
    let all = KeyGroupRange::all(MAX_PARALLELISM).map_err(|e| e.to_string())?;
    let mut backend = h
        .restore(MAX_PARALLELISM, all, Vec::new())
        .map_err(|e| e.to_string())?;
    let mut states = States::register(&mut *backend).map_err(|e| e.to_string())?;
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let outcome = apply(h, &mut backend, &mut states, &mut model, op);
        outcome.map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}

fn apply(
    h: &Harness<'_>,
    backend: &mut Box<dyn KeyedStateBackend>,
    s: &mut States,
    m: &mut Model,
    op: &Op,
) -> std::result::Result<(), String> {
    let err = |e: crate::StateError| e.to_string();
    if let Op::SetKey(k) = op {
        m.key = Some(*k);
        return backend.set_key(k).map_err(err);
    }
    if let Op::CheckpointAndRestore = op {
        let id = CHECKPOINT_IDS.fetch_add(1, Ordering::Relaxed);
        let handle = h.checkpoint(&mut **backend, id);
        let all = KeyGroupRange::all(MAX_PARALLELISM).map_err(err)?;
        *backend = h.restore(MAX_PARALLELISM, all, vec![handle]).map_err(err)?;
        *s = States::register(&mut **backend).map_err(err)?;
        if let Some(k) = m.key {
            backend.set_key(&k).map_err(err)?;
        }
        return Ok(());
    }
    let Some(key) = m.key else {
        // Without a current key every access must fail with NoCurrentKey.
        return match s.value.value(&mut **backend) {
            Err(crate::StateError::NoCurrentKey) => Ok(()),
            other => Err(format!(
                "access without a key must be NoCurrentKey, got {other:?}"
            )),
        };
    };
    let b = &mut **backend;
    match op {
        Op::ValuePut(ns, v) => {
            s.value.set_namespace(ns).map_err(err)?;
            s.value.update(b, v).map_err(err)?;
            m.values.insert((key, *ns), *v);
        }
        Op::ValueClear(ns) => {
            s.value.set_namespace(ns).map_err(err)?;
            s.value.clear(b).map_err(err)?;
            m.values.remove(&(key, *ns));
        }
        Op::ValueGet(ns) => {
            s.value.set_namespace(ns).map_err(err)?;
            check(
                "value",
                s.value.value(b).map_err(err)?,
                m.values.get(&(key, *ns)).copied(),
            )?;
        }
        Op::ListAdd(ns, v) => {
            s.list.set_namespace(ns).map_err(err)?;
            s.list.add(b, v).map_err(err)?;
            m.lists.entry((key, *ns)).or_default().push(*v);
        }
        Op::ListAddAll(ns, vs) => {
            s.list.set_namespace(ns).map_err(err)?;
            s.list.add_all(b, vs).map_err(err)?;
            if !vs.is_empty() {
                m.lists.entry((key, *ns)).or_default().extend(vs);
            }
        }
        Op::ListUpdate(ns, vs) => {
            s.list.set_namespace(ns).map_err(err)?;
            s.list.update(b, vs).map_err(err)?;
            if vs.is_empty() {
                m.lists.remove(&(key, *ns));
            } else {
                m.lists.insert((key, *ns), vs.clone());
            }
        }
        Op::ListGet(ns) => {
            s.list.set_namespace(ns).map_err(err)?;
            let expected = m.lists.get(&(key, *ns)).cloned().unwrap_or_default();
            check("list", s.list.get(b).map_err(err)?, expected)?;
        }
        Op::ListClear(ns) => {
            s.list.set_namespace(ns).map_err(err)?;
            s.list.clear(b).map_err(err)?;
            m.lists.remove(&(key, *ns));
        }
        Op::MapPut(ns, uk, uv) => {
            s.map.set_namespace(ns).map_err(err)?;
            s.map.put(b, uk, uv).map_err(err)?;
            m.maps.entry((key, *ns)).or_default().insert(*uk, *uv);
        }
        Op::MapRemove(ns, uk) => {
            s.map.set_namespace(ns).map_err(err)?;
            s.map.remove(b, uk).map_err(err)?;
            if let Some(map) = m.maps.get_mut(&(key, *ns)) {
                map.remove(uk);
                if map.is_empty() {
                    m.maps.remove(&(key, *ns));
                }
            }
        }
        Op::MapGet(ns, uk) => {
            s.map.set_namespace(ns).map_err(err)?;
            let expected = m.maps.get(&(key, *ns)).and_then(|map| map.get(uk)).copied();
            check("map get", s.map.get(b, uk).map_err(err)?, expected)?;
        }
        Op::MapEntries(ns) => {
            s.map.set_namespace(ns).map_err(err)?;
            // u8 user keys encode as one byte, so byte order is numeric order.
            let expected: Vec<(u8, u16)> = m
                .maps
                .get(&(key, *ns))
                .map(|map| map.iter().map(|(k, v)| (*k, *v)).collect())
                .unwrap_or_default();
            check("map entries", s.map.entries(b).map_err(err)?, expected)?;
        }
        Op::MapClear(ns) => {
            s.map.set_namespace(ns).map_err(err)?;
            s.map.clear(b).map_err(err)?;
            m.maps.remove(&(key, *ns));
        }
        Op::SumAdd(ns, v) => {
            s.sum.set_namespace(ns).map_err(err)?;
            s.sum.add(b, &u64::from(*v)).map_err(err)?;
            let entry = m.sums.entry((key, *ns)).or_default();
            *entry = entry.wrapping_add(u64::from(*v));
        }
        Op::SumGet(ns) => {
            s.sum.set_namespace(ns).map_err(err)?;
            check(
                "sum",
                s.sum.get(b).map_err(err)?,
                m.sums.get(&(key, *ns)).copied(),
            )?;
        }
        Op::AverageAdd(ns, v) => {
            s.average.set_namespace(ns).map_err(err)?;
            s.average.add(b, &u64::from(*v)).map_err(err)?;
            let entry = m.averages.entry((key, *ns)).or_default();
            *entry = (entry.0 + u64::from(*v), entry.1 + 1);
        }
        Op::AverageGet(ns) => {
            s.average.set_namespace(ns).map_err(err)?;
            let expected = m
                .averages
                .get(&(key, *ns))
                .map(|acc| Average.get_result_of(acc));
            check("average", s.average.get(b).map_err(err)?, expected)?;
        }
        Op::MergeLists(target, sources) => {
            s.list.merge_namespaces(b, target, sources).map_err(err)?;
            let mut merged = m.lists.remove(&(key, *target)).unwrap_or_default();
            for source in sources.iter().filter(|n| *n != target) {
                merged.extend(m.lists.remove(&(key, *source)).unwrap_or_default());
            }
            if !merged.is_empty() {
                m.lists.insert((key, *target), merged);
            }
        }
        Op::MergeSums(target, sources) => {
            s.sum.merge_namespaces(b, target, sources).map_err(err)?;
            merge_model(&mut m.sums, key, *target, sources, |a, b| a.wrapping_add(b));
        }
        Op::MergeAverages(target, sources) => {
            s.average
                .merge_namespaces(b, target, sources)
                .map_err(err)?;
            merge_model(&mut m.averages, key, *target, sources, |a, b| {
                (a.0 + b.0, a.1 + b.1)
            });
        }
        Op::ValueKeys(ns) => {
            let mut keys: Vec<u8> = b.keys(s.value.id(), ns).map_err(err)?;
            keys.sort_unstable();
            let expected: Vec<u8> = m
                .values
                .keys()
                .filter(|(_, n)| n == ns)
                .map(|(k, _)| *k)
                .collect();
            check("keys", keys, expected)?;
        }
        Op::SetKey(_) | Op::CheckpointAndRestore => {}
    }
    Ok(())
}

/// Model of merging namespaces: fold every source present into the target
/// (a target merged with itself is left as it is) and remove the sources.
fn merge_model<V: Copy>(
    map: &mut BTreeMap<(u8, u8), V>,
    key: u8,
    target: u8,
    sources: &[u8],
    fold: impl Fn(V, V) -> V,
) {
    let mut acc = map.remove(&(key, target));
    for source in sources.iter().filter(|n| **n != target) {
        if let Some(v) = map.remove(&(key, *source)) {
            acc = Some(match acc {
                Some(a) => fold(a, v),
                None => v,
            });
        }
    }
    if let Some(acc) = acc {
        map.insert((key, target), acc);
    }
}

impl Average {
    fn get_result_of(&self, acc: &(u64, u64)) -> f64 {
        crate::descriptor::AggregateFunction::get_result(self, acc)
    }
}

/// Runs `harness.differential_cases` random sequences of up to 80 operations
/// (with checkpoint-and-restore steps) against the backend and the model.
/// The seed is fixed so failures reproduce; proptest shrinks a failing
/// sequence before reporting it.
pub fn differential_against_model(h: &Harness<'_>) {
    super::run_property(
        h,
        "differential test against the model",
        vec(op(), 1..80),
        |ops| run_ops(h, &ops),
    );
}
