//! Snapshots and restores of the heap backend through real checkpoint
//! storage: isolation from later writes, rescaling, restored states that
//! are not registered yet, determinism and the file layout.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{MAX_P, all, checkpoint, dump, populate, register, restore, storage};
use state_api::format::key_groups::KeyGroupsReader;
use state_api::key_group::{assign_to_key_group, key_group_range_for_operator};
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, MapStateDescriptor, SnapshotOptions, StateError, StateId,
    ValueStateDescriptor,
};

/// Updates, clears, list appends (to lists the snapshot shares), map
/// changes (small and large maps) and new keys.
fn churn(backend: &mut dyn KeyedStateBackend, round: u64, keys: std::ops::Range<u64>) {
    let states = register(backend);
    let mut list = backend
        .list_state(state_api::ListStateDescriptor::<String, u64>::new("list"))
        .unwrap();
    let map = backend
        .map_state(MapStateDescriptor::<u32, String>::new("map"))
        .unwrap();
    for key in keys {
        backend.set_key(&key).unwrap();
        match (key + round) % 5 {
            0 => states
                .value
                .update(backend, &(round * 1_000_000 + key))
                .unwrap(),
            1 => states.value.clear(backend).unwrap(),
            2 => {
                list.set_namespace(&(key % 5)).unwrap();
                list.add(backend, &format!("late {round}")).unwrap();
            }
            3 => {
                map.put(backend, &0, &format!("late {round}")).unwrap();
                map.remove(backend, &31).unwrap();
            }
            _ => map.clear(backend).unwrap(),
        }
    }
    for key in 0..50 {
        populate(backend, 1_000_000 + round * 100 + key);
    }
}

#[test]
fn a_snapshot_holds_exactly_the_state_of_its_synchronous_phase() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    for key in 0..2_000 {
        populate(&mut *backend, key);
    }
    let states = register(&mut *backend);
    let frozen = dump(&mut *backend, &states);

    let task = backend
        .snapshot(1, &SnapshotOptions::checkpoint(1), storage.clone())
        .unwrap();
    // Writes between the phases, then while the task runs on another thread.
    churn(&mut *backend, 0, 0..2_000);
    let writer = std::thread::spawn(move || task.run());
    for round in 1..4 {
        churn(&mut *backend, round, 0..2_000);
    }
    let result = writer.join().unwrap().unwrap();

    let live = dump(&mut *backend, &states);
    assert_ne!(live, frozen, "the churn changed the live state");
    let mut restored = restore(&storage, all(), vec![result.handle]).unwrap();
    let restored_states = register(&mut *restored);
    let restored_dump = dump(&mut *restored, &restored_states);
    assert_eq!(restored_dump.len(), frozen.len());
    assert!(
        restored_dump == frozen,
        "restored state differs from the state at the snapshot"
    );
}

#[test]
fn several_outstanding_snapshots_each_keep_their_own_state() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    let states = register(&mut *backend);
    let mut expected = Vec::new();
    let mut tasks = Vec::new();
    for id in 1..=3u64 {
        churn(&mut *backend, id, 0..500);
        expected.push(dump(&mut *backend, &states));
        tasks.push(
            backend
                .snapshot(id, &SnapshotOptions::checkpoint(id), storage.clone())
                .unwrap(),
        );
    }
    churn(&mut *backend, 9, 0..500);
    // Run in reverse order: each is independent of the others.
    for (task, expected) in tasks.into_iter().rev().zip(expected.into_iter().rev()) {
        let id = task.checkpoint_id();
        let handle = task.run().unwrap().handle;
        assert_eq!(handle.checkpoint_id(), id);
        let mut restored = restore(&storage, all(), vec![handle]).unwrap();
        let restored_states = register(&mut *restored);
        assert!(
            dump(&mut *restored, &restored_states) == expected,
            "checkpoint {id}"
        );
    }
}

/// Restores each instance of `parallelism` from the handles overlapping it,
/// checks it holds only its key groups, and checkpoints it again.
fn rescale(
    storage: &Arc<state_storage::ObjectStoreCheckpointStorage>,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> (Vec<KeyedStateHandle>, common::Dump) {
    let mut union = common::Dump::new();
    let mut next = Vec::new();
    for index in 0..parallelism {
        let range = key_group_range_for_operator(MAX_P, parallelism, index).unwrap();
        let mine = handles
            .iter()
            .filter(|h| !h.key_group_range().intersection(&range).is_empty())
            .cloned()
            .collect();
        let mut backend = restore(storage, range, mine).unwrap();
        let states = register(&mut *backend);
        let part = dump(&mut *backend, &states);
        for (_, key, _, _) in part.keys() {
            let kg = assign_to_key_group(key, MAX_P).unwrap();
            assert!(
                range.contains(kg),
                "{range} restored a key of key group {kg}"
            );
        }
        let before = union.len();
        union.extend(part.clone());
        assert_eq!(
            union.len(),
            before + part.len(),
            "instances never share an entry"
        );
        let handle = checkpoint(
            &mut *backend,
            storage,
            100 + u64::from(parallelism * 10 + index),
        );
        assert_eq!(handle.key_group_range(), range);
        next.push(handle);
    }
    (next, union)
}

#[test]
fn rescaling_one_two_three_one_keeps_every_entry() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    for key in 0..3_000 {
        populate(&mut *backend, key);
    }
    let states = register(&mut *backend);
    let original = dump(&mut *backend, &states);
    let mut handles = vec![checkpoint(&mut *backend, &storage, 1)];
    for parallelism in [2, 3, 1] {
        let (next, contents) = rescale(&storage, &handles, parallelism);
        assert_eq!(contents.len(), original.len(), "parallelism {parallelism}");
        assert!(
            contents == original,
            "contents differ at parallelism {parallelism}"
        );
        handles = next;
    }
}

#[test]
fn restored_states_are_kept_and_snapshotted_until_registered() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    for key in 0..300 {
        populate(&mut *backend, key);
    }
    let states = register(&mut *backend);
    let original = dump(&mut *backend, &states);
    let handle = checkpoint(&mut *backend, &storage, 1);

    // Restore, register only "value", snapshot again.
    let mut partial = restore(&storage, all(), vec![handle]).unwrap();
    let mut names: Vec<String> = partial.state_metas().into_iter().map(|m| m.name).collect();
    names.sort();
    assert_eq!(
        names,
        ["blob", "list", "map", "sum", "value"],
        "restored metas are listed"
    );
    partial.set_key(&1u64).unwrap();
    for guess in 0..5 {
        let outcome = partial.get(StateId(guess), b"");
        assert!(
            matches!(outcome, Err(StateError::UnknownState { .. })),
            "an unregistered restored state is not accessible: {outcome:?}"
        );
    }
    let value = partial
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    assert_eq!(value.value(&mut *partial).unwrap(), Some(3));
    let err = partial
        .map_state(MapStateDescriptor::<u64, String>::new("map"))
        .err();
    assert!(
        matches!(
            err,
            Some(StateError::StateTypeMismatch {
                what: "user key",
                ..
            })
        ),
        "{err:?}"
    );
    let second = checkpoint(&mut *partial, &storage, 2);

    let mut full = restore(&storage, all(), vec![second]).unwrap();
    let states = register(&mut *full);
    assert!(
        dump(&mut *full, &states) == original,
        "unregistered states survive a checkpoint"
    );
}

#[test]
fn snapshots_of_equal_state_are_byte_identical() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    for key in (0..1_000).rev() {
        populate(&mut *backend, key);
    }
    let first = checkpoint(&mut *backend, &storage, 1);
    let second = checkpoint(&mut *backend, &storage, 2);
    let mut restored = restore(&storage, all(), vec![first.clone()]).unwrap();
    register(&mut *restored);
    let third = checkpoint(&mut *restored, &storage, 3);
    let bytes = |h: &KeyedStateHandle| storage.read(h.files()[0]).unwrap();
    assert_eq!(bytes(&first), bytes(&second));
    assert_eq!(
        bytes(&first),
        bytes(&third),
        "a restored backend writes the same file"
    );
    let KeyedStateHandle::KeyGroups(h) = &first else {
        unreachable!()
    };
    assert_eq!(h.backend, "heap");
    assert!(h.file.path.contains("heap-op-0"), "{}", h.file.path);
}

#[test]
fn the_file_lists_entries_by_key_group_one_record_per_map_entry() {
    let storage = storage();
    let mut backend = restore(&storage, all(), Vec::new()).unwrap();
    for key in 0..500 {
        populate(&mut *backend, key);
    }
    let states = register(&mut *backend);
    let expected = dump(&mut *backend, &states);
    let KeyedStateHandle::KeyGroups(handle) = checkpoint(&mut *backend, &storage, 1) else {
        unreachable!()
    };
    let reader = KeyGroupsReader::open(&*storage, &handle).unwrap();
    let metas = reader.meta().states.clone();
    let mut records = common::Dump::new();
    // (key group, state, composite key, user key) of the previous record.
    type Position = (u32, u32, Vec<u8>, Option<Vec<u8>>);
    let mut last: Option<Position> = None;
    reader
        .for_each_entry(&*storage, all(), |kg, e| {
            assert_eq!(assign_to_key_group(e.key, MAX_P).unwrap(), kg);
            let mut composite = vec![e.key.len() as u8];
            composite.extend_from_slice(e.key);
            composite.extend_from_slice(e.namespace);
            let position = (kg, e.state, composite, e.user_key.map(<[u8]>::to_vec));
            if let Some(previous) = &last {
                assert!(
                    *previous < position,
                    "records ascend by key group, state, key, user key"
                );
            }
            last = Some(position);
            let name = metas[e.state as usize].name.clone();
            let key = (
                name,
                e.key.to_vec(),
                e.namespace.to_vec(),
                e.user_key.map(<[u8]>::to_vec),
            );
            assert!(
                records.insert(key, e.value.to_vec()).is_none(),
                "no duplicate records"
            );
            Ok(())
        })
        .unwrap();
    assert!(records == expected);
}

#[test]
fn empty_backends_snapshot_and_restore() {
    let storage = storage();
    let mut empty = restore(&storage, all(), Vec::new()).unwrap();
    let handle = checkpoint(&mut *empty, &storage, 1);
    let mut restored = restore(&storage, all(), vec![handle]).unwrap();
    assert!(restored.state_metas().is_empty());
    let states = register(&mut *restored);
    assert!(dump(&mut *restored, &states).is_empty());

    let mut no_groups = restore(&storage, KeyGroupRange::EMPTY, Vec::new()).unwrap();
    register(&mut *no_groups);
    let KeyedStateHandle::KeyGroups(h) = checkpoint(&mut *no_groups, &storage, 2) else {
        unreachable!()
    };
    assert!(h.key_group_offsets.is_empty());
}
