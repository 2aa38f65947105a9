//! Full snapshots in the key-group format move between the heap and the
//! RocksDB backends, at any parallelism.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use state_api::key_group::key_group_range_for_operator;
use state_api::timers::TimerService;
use state_api::{KeyedStateHandle, SnapshotType};
use state_heap::HeapBackendFactory;

#[test]
fn heap_restores_rocksdb_full_snapshots_and_vice_versa() {
    let storage = storage();
    let (_dir, rocks) = factory(true);
    let heap = HeapBackendFactory::new();

    // RocksDB → heap, at parallelism 1 and 2.
    let (mut backend, _) = populated(&rocks, &storage, 0..1_000);
    let expected = contents(&mut *backend);
    let full = snapshot(&mut *backend, &storage, 1, SnapshotType::FullCheckpoint).handle;
    assert!(matches!(full, KeyedStateHandle::KeyGroups(_)));
    let mut from_rocks = create(&heap, &storage, all(), vec![full.clone()]).unwrap();
    assert!(
        contents(&mut *from_rocks) == expected,
        "heap restores a RocksDB snapshot"
    );
    let mut union = state_api::conformance::Dump::new();
    for index in 0..2 {
        let range = key_group_range_for_operator(MAX_P, 2, index).unwrap();
        let mut part = create(&heap, &storage, range, vec![full.clone()]).unwrap();
        union.extend(contents(&mut *part));
    }
    assert!(union == expected);

    // heap → RocksDB, at parallelism 3 (two heap handles).
    let mut handles = Vec::new();
    for index in 0..2 {
        let range = key_group_range_for_operator(MAX_P, 2, index).unwrap();
        let mut part = create(&heap, &storage, range, vec![full.clone()]).unwrap();
        let task = part
            .snapshot(
                2 + u64::from(index),
                &state_api::SnapshotOptions::checkpoint(0),
                storage.clone(),
            )
            .unwrap();
        handles.push(task.run().unwrap().handle);
    }
    let mut union = state_api::conformance::Dump::new();
    for index in 0..3 {
        let range = key_group_range_for_operator(MAX_P, 3, index).unwrap();
        let mine: Vec<_> = handles
            .iter()
            .filter(|h| !h.key_group_range().intersection(&range).is_empty())
            .cloned()
            .collect();
        let mut part = create(&rocks, &storage, range, mine).unwrap();
        union.extend(contents(&mut *part));
        // And the restored RocksDB backend checkpoints incrementally again.
        let again = checkpoint(&mut *part, &storage, 10 + u64::from(index)).handle;
        let mut back = create(&rocks, &storage, range, vec![again]).unwrap();
        assert!(contents(&mut *back) == contents(&mut *part));
    }
    assert!(union == expected, "RocksDB restores heap snapshots");
}

/// Sets two timers per key; returns them as (timestamp, key, namespace).
fn set_timers(
    backend: &mut dyn state_api::KeyedStateBackend,
    keys: std::ops::Range<u64>,
) -> std::collections::BTreeSet<(i64, u64, u32)> {
    use state_api::KeyedStateBackendExt;
    let timers = TimerService::<u32>::register(backend, "windows").unwrap();
    let mut set = std::collections::BTreeSet::new();
    for key in keys {
        backend.set_key(&key).unwrap();
        for (ts, ns) in [((key % 97) as i64, 0), (1_000 + (key % 5) as i64, 1)] {
            timers.register_event_time_timer(backend, &ns, ts).unwrap();
            set.insert((ts, key, ns));
        }
    }
    set
}

/// Fires every timer of `backend`.
fn fire(backend: &mut dyn state_api::KeyedStateBackend) -> Vec<(i64, u64, u32)> {
    use state_api::KeyedStateBackendExt;
    let mut timers = TimerService::<u32>::register(backend, "windows").unwrap();
    let mut fired = Vec::new();
    timers
        .advance_watermark(backend, i64::MAX, |b, t| {
            fired.push((t.timestamp, b.current_key_as::<u64>()?, t.namespace));
            Ok(())
        })
        .unwrap();
    fired
}

/// Canonical savepoints carry timers between the backends: heap → RocksDB
/// at parallelism 2, RocksDB → heap at parallelism 1; every timer fires
/// once, in the instance that owns its key group.
#[test]
fn canonical_savepoints_carry_timers_between_backends() {
    use state_api::snapshot::SavepointFormat;

    let storage = storage();
    let (_dir, rocks) = factory(true);
    let heap = HeapBackendFactory::new();
    let savepoint = SnapshotType::Savepoint(SavepointFormat::Canonical);

    let mut backend = create(&heap, &storage, all(), Vec::new()).unwrap();
    let expected = set_timers(&mut *backend, 0..500);
    let from_heap = snapshot(&mut *backend, &storage, 1, savepoint).handle;

    let mut handles = Vec::new();
    let mut union = std::collections::BTreeSet::new();
    for index in 0..2 {
        let range = key_group_range_for_operator(MAX_P, 2, index).unwrap();
        let mut part = create(&rocks, &storage, range, vec![from_heap.clone()]).unwrap();
        TimerService::<u32>::register(&mut *part, "windows").unwrap();
        handles.push(snapshot(&mut *part, &storage, 2 + u64::from(index), savepoint).handle);
        union.extend(fire(&mut *part));
    }
    assert!(union == expected, "RocksDB fires the heap's timers");

    let mut back = create(&heap, &storage, all(), handles).unwrap();
    let fired = fire(&mut *back);
    assert_eq!(fired.len(), expected.len());
    assert!(
        fired
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            == expected,
        "the heap fires the timers of RocksDB's savepoints"
    );
    assert!(fired.is_sorted_by_key(|t| t.0), "in time order");
}
