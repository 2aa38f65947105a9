//! Full snapshots in the key-group format move between the heap and the
//! RocksDB backends, at any parallelism.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use state_api::key_group::key_group_range_for_operator;
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
