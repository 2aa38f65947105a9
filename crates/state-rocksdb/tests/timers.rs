//! Timers on RocksDB against the heap backend, with hundreds of timers per
//! key group so that the in-memory head cache (128 timers per key group)
//! overflows, empties and refills from the column family: both backends
//! must fire the same timers in the same order, also across checkpoints
//! (incremental and full) and restores.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use state_api::key_group::assign_to_key_group;
use state_api::timers::{TimeDomain, TimerService};
use state_api::{KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt, SnapshotType};
use state_heap::HeapBackendFactory;

use common::{MAX_P, create, snapshot, storage};

/// The key group all timers live in, and its keys.
const KEY_GROUP: u32 = 7;

fn keys() -> Vec<u64> {
    (0..)
        .filter(|k: &u64| {
            let encoded = state_api::codec::encode(k).unwrap();
            assign_to_key_group(&encoded, MAX_P).unwrap() == KEY_GROUP
        })
        .take(40)
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    /// Register this many timers from a seed.
    Register(u16, u64),
    /// Delete timers from a seed (most of them absent).
    Delete(u16, u64),
    /// Fire up to this watermark.
    Advance(i64),
    Checkpoint {
        full: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u16..200, any::<u64>()).prop_map(|(n, s)| Op::Register(n, s)),
        2 => (1u16..100, any::<u64>()).prop_map(|(n, s)| Op::Delete(n, s)),
        3 => (0i64..3_000).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(|full| Op::Checkpoint { full }),
    ]
}

/// A cheap deterministic sequence of (key index, namespace, timestamp).
fn timers_from(seed: u64, count: u16) -> impl Iterator<Item = (usize, u32, i64)> {
    let mut x = seed | 1;
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (
            (x % 40) as usize,
            ((x >> 8) % 3) as u32,
            ((x >> 16) % 3_000) as i64,
        )
    })
}

struct Side {
    backend: Box<dyn KeyedStateBackend>,
    timers: TimerService<u32>,
}

fn run(ops: &[Op]) -> Result<(), String> {
    let keys = keys();
    let storage = storage();
    let (_dir, rocksdb) = common::factory(true);
    let heap = HeapBackendFactory::new();
    let range = KeyGroupRange::new(KEY_GROUP, KEY_GROUP + 1).unwrap();
    let mut sides: Vec<Side> = [&rocksdb as &dyn state_api::StateBackendFactory, &heap]
        .into_iter()
        .map(|factory| {
            let mut backend = create(factory, &storage, range, Vec::new()).unwrap();
            let timers = TimerService::register(&mut *backend, "t").unwrap();
            Side { backend, timers }
        })
        .collect();
    let factories: [&dyn state_api::StateBackendFactory; 2] = [&rocksdb, &heap];
    let mut checkpoint = 0;
    for op in ops {
        let mut outcomes = Vec::new();
        for (side, factory) in sides.iter_mut().zip(factories) {
            let b = &mut *side.backend;
            let outcome: Vec<(i64, u64, u32)> = match *op {
                Op::Register(n, seed) | Op::Delete(n, seed) => {
                    let mut changed = Vec::new();
                    for (k, ns, ts) in timers_from(seed, n) {
                        b.set_key(&keys[k]).unwrap();
                        let did = if matches!(op, Op::Register(..)) {
                            side.timers.register_event_time_timer(b, &ns, ts).unwrap()
                        } else {
                            side.timers.delete_event_time_timer(b, &ns, ts).unwrap()
                        };
                        if did {
                            changed.push((ts, keys[k], ns));
                        }
                    }
                    changed
                }
                Op::Advance(watermark) => {
                    let mut fired = Vec::new();
                    side.timers
                        .advance_watermark(b, watermark, |b, t| {
                            fired.push((t.timestamp, b.current_key_as::<u64>()?, t.namespace));
                            Ok(())
                        })
                        .unwrap();
                    let next = side.timers.next_timer(b, TimeDomain::EventTime).unwrap();
                    fired.push((next.unwrap_or(-1), 0, 0));
                    fired
                }
                Op::Checkpoint { full } => {
                    checkpoint += 1;
                    let kind = if full {
                        SnapshotType::FullCheckpoint
                    } else {
                        SnapshotType::Checkpoint
                    };
                    let handle = snapshot(b, &storage, checkpoint, kind).handle;
                    b.notify_checkpoint_complete(checkpoint).unwrap();
                    let watermark = side.timers.current_watermark();
                    side.backend = create(factory, &storage, range, vec![handle]).unwrap();
                    side.timers = TimerService::register(&mut *side.backend, "t").unwrap();
                    // Timers at or before the watermark fired already.
                    let mut late = Vec::new();
                    side.timers
                        .advance_watermark(&mut *side.backend, watermark, |_, t| {
                            late.push(t.timestamp);
                            Ok(())
                        })
                        .unwrap();
                    late.into_iter().map(|ts| (ts, 0, 0)).collect()
                }
            };
            outcomes.push(outcome);
        }
        if outcomes[0] != outcomes[1] {
            return Err(format!(
                "{op:?}: rocksdb {:?}, heap {:?}",
                outcomes[0], outcomes[1]
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rocksdb_fires_timers_as_heap_does_through_cache_refills(
        ops in proptest::collection::vec(op(), 5..60)
    ) {
        run(&ops).map_err(TestCaseError::fail)?;
    }
}

/// Far more timers than the cache holds, in one key group: they come out
/// in order, each once, and an emptied cache refills from RocksDB.
#[test]
fn thousands_of_timers_in_one_key_group_fire_in_order() {
    let keys = keys();
    let storage = storage();
    let (_dir, rocksdb) = common::factory(true);
    let range = KeyGroupRange::new(KEY_GROUP, KEY_GROUP + 1).unwrap();
    let mut backend = create(&rocksdb, &storage, range, Vec::new()).unwrap();
    let b = &mut *backend;
    let mut timers = TimerService::<u32>::register(b, "t").unwrap();
    let mut expected = Vec::new();
    // Descending timestamps: every add lands before the cached ones.
    for ts in (0..5_000i64).rev() {
        let key = keys[(ts % 40) as usize];
        b.set_key(&key).unwrap();
        assert!(timers.register_event_time_timer(b, &0, ts).unwrap());
        expected.push(ts);
    }
    expected.sort_unstable();
    let mut fired = Vec::new();
    timers
        .advance_watermark(b, i64::MAX, |_, t| {
            fired.push(t.timestamp);
            Ok(())
        })
        .unwrap();
    assert_eq!(fired, expected);
    assert_eq!(timers.next_timer(b, TimeDomain::EventTime).unwrap(), None);
}
