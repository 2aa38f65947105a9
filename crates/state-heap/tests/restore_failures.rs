//! Damaged snapshots, wrong handles and inconsistent files make restore
//! fail with an error naming the problem, never a panic or silent loss.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{MAX_P, all, checkpoint, dump, populate, register, restore, storage};
use state_api::codec::{encode, write_len_prefixed};
use state_api::conformance::FaultInjector;
use state_api::format::key_groups::{Entry, KeyGroupsWriter};
use state_api::key_group::assign_to_key_group;
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, ListStateDescriptor, MapStateDescriptor, Result, StateError, StateMeta,
    StateScope, ValueStateDescriptor,
};
use state_storage::ObjectStoreCheckpointStorage;

type Storage = Arc<ObjectStoreCheckpointStorage>;

fn small_checkpoint(storage: &Storage, id: u64) -> KeyedStateHandle {
    let mut backend = restore(storage, all(), Vec::new()).unwrap();
    for key in 0..12 {
        populate(&mut *backend, key);
    }
    checkpoint(&mut *backend, storage, id)
}

/// Restores (and reads everything back); the outcome must be an error.
fn restore_error(
    storage: &Storage,
    range: KeyGroupRange,
    handles: Vec<KeyedStateHandle>,
) -> StateError {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        restore(storage, range, handles).map(|mut b| {
            let states = register(&mut *b);
            dump(&mut *b, &states).len()
        })
    }));
    match outcome {
        Err(_) => panic!("restore panicked"),
        Ok(Ok(entries)) => panic!("restore succeeded with {entries} entries"),
        Ok(Err(e)) => e,
    }
}

fn key_groups(handle: &KeyedStateHandle) -> &state_api::KeyGroupsStateHandle {
    match handle {
        KeyedStateHandle::KeyGroups(h) => h,
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    let storage = storage();
    let handle = small_checkpoint(&storage, 1);
    let file = handle.files()[0].clone();
    assert!(file.size > 200, "a file with records: {} bytes", file.size);
    for offset in 0..file.size {
        storage.corrupt_byte(&file, offset).unwrap();
        let err = restore_error(&storage, all(), vec![handle.clone()]);
        assert!(
            matches!(err, StateError::Corrupt { .. } | StateError::Codec { .. }),
            "flipped byte at {offset}: {err}"
        );
        storage.corrupt_byte(&file, offset).unwrap(); // flip back
    }
    assert!(
        restore(&storage, all(), vec![handle]).is_ok(),
        "undamaged again"
    );
}

#[test]
fn truncated_and_missing_files_are_errors() {
    let storage = storage();
    for (i, keep) in [0u64, 1, 7, 40, 120].into_iter().enumerate() {
        let handle = small_checkpoint(&storage, 10 + i as u64);
        let file = handle.files()[0].clone();
        storage.truncate(&file, keep).unwrap();
        let err = restore_error(&storage, all(), vec![handle]);
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "kept {keep} bytes: {err}"
        );
    }
    let handle = small_checkpoint(&storage, 20);
    let file = handle.files()[0].clone();
    storage.truncate(&file, file.size / 2).unwrap();
    let err = restore_error(&storage, all(), vec![handle]);
    assert!(
        matches!(err, StateError::Corrupt { .. }),
        "half the file: {err}"
    );

    let handle = small_checkpoint(&storage, 21);
    storage.remove(handle.files()[0]).unwrap();
    let err = restore_error(&storage, all(), vec![handle]);
    assert!(matches!(err, StateError::FileNotFound { .. }), "{err}");
}

#[test]
fn handles_that_do_not_fit_the_range_are_rejected() {
    let storage = storage();
    let lower = KeyGroupRange::new(0, 64).unwrap();
    let upper = KeyGroupRange::new(64, 128).unwrap();
    let mut upper_backend = restore(&storage, upper, Vec::new()).unwrap();
    register(&mut *upper_backend);
    let upper_handle = checkpoint(&mut *upper_backend, &storage, 1);
    let whole = small_checkpoint(&storage, 2);

    let cases = [
        ("other key groups", lower, vec![upper_handle.clone()]),
        ("a gap", all(), vec![upper_handle.clone()]),
        (
            "overlapping handles",
            all(),
            vec![whole.clone(), upper_handle.clone()],
        ),
    ];
    for (what, range, handles) in cases {
        let err = restore_error(&storage, range, handles);
        assert!(matches!(err, StateError::Restore(_)), "{what}: {err}");
    }
    let err = common_restore_with_max_p(&storage, 256, whole.clone())
        .err()
        .unwrap();
    assert!(
        matches!(err, StateError::Restore(_)),
        "another max parallelism: {err}"
    );
}

fn common_restore_with_max_p(
    storage: &Storage,
    max_parallelism: u32,
    handle: KeyedStateHandle,
) -> Result<Box<dyn KeyedStateBackend>> {
    use state_api::StateBackendFactory;
    state_heap::HeapBackendFactory::new().create(state_api::BackendContext {
        operator: "op".into(),
        max_parallelism,
        key_group_range: KeyGroupRange::new(0, 128).unwrap(),
        restore: vec![handle],
        storage: storage.clone(),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    })
}

#[test]
fn tampered_handles_are_corrupt() {
    let storage = storage();
    let good = small_checkpoint(&storage, 1);
    let tamper = |change: &dyn Fn(&mut state_api::KeyGroupsStateHandle)| {
        let mut handle = key_groups(&good).clone();
        change(&mut handle);
        KeyedStateHandle::KeyGroups(handle)
    };
    let from_5 = KeyGroupRange::new(5, 64).unwrap();
    let cases: Vec<(&str, KeyGroupRange, KeyedStateHandle)> = vec![
        (
            "an offset missing",
            all(),
            tamper(&|h| {
                h.key_group_offsets.pop();
            }),
        ),
        (
            "offsets out of order",
            all(),
            tamper(&|h| h.key_group_offsets.swap(3, 90)),
        ),
        (
            "an offset beyond the file",
            all(),
            tamper(&|h| {
                if let Some(last) = h.key_group_offsets.last_mut() {
                    *last = h.file.size + 100;
                }
            }),
        ),
        // The reader walks the blocks of a range from its first offset, so a
        // wrong offset shows when a restore starts at it (after rescaling).
        (
            "an offset inside a block",
            from_5,
            tamper(&|h| h.key_group_offsets[5] += 1),
        ),
        ("a wrong size", all(), tamper(&|h| h.file.size += 3)),
    ];
    for (what, range, handle) in cases {
        let err = restore_error(&storage, range, vec![handle]);
        assert!(matches!(err, StateError::Corrupt { .. }), "{what}: {err}");
    }
}

fn value_meta(name: &str, value_type: &str) -> StateMeta {
    let mut meta = ValueStateDescriptor::<u64>::new(name).meta().clone();
    meta.value_type = value_type.into();
    meta
}

/// Writes a key-group file the way another backend might, with `write`
/// adding the records.
fn craft(
    storage: &Storage,
    range: KeyGroupRange,
    states: Vec<StateMeta>,
    write: impl FnOnce(&mut KeyGroupsWriter) -> Result<()>,
) -> KeyedStateHandle {
    let out = storage
        .create_output(7, StateScope::Exclusive, "crafted")
        .unwrap();
    let mut writer = KeyGroupsWriter::new(out, MAX_P, range, states).unwrap();
    write(&mut writer).unwrap();
    KeyedStateHandle::KeyGroups(writer.finish("crafted", 7).unwrap())
}

fn key_of_group(range: KeyGroupRange, skip: usize) -> (Vec<u8>, u32) {
    (0u64..)
        .map(|k| encode(&k).unwrap())
        .map(|k| {
            let kg = assign_to_key_group(&k, MAX_P).unwrap();
            (k, kg)
        })
        .filter(|(_, kg)| range.contains(*kg))
        .nth(skip)
        .unwrap()
}

fn value_entry<'a>(key: &'a [u8], value: &'a [u8]) -> Entry<'a> {
    Entry {
        state: 0,
        key,
        namespace: b"",
        user_key: None,
        value,
    }
}

#[test]
fn a_key_under_the_wrong_key_group_is_corrupt() {
    let storage = storage();
    let (key, kg) = key_of_group(all(), 0);
    let wrong = (kg + 1) % MAX_P;
    let handle = craft(&storage, all(), vec![value_meta("v", "u64")], |w| {
        w.start_key_group(wrong)?;
        w.add(value_entry(&key, &[1]))
    });
    let err = restore(&storage, all(), vec![handle]).err().unwrap();
    assert!(
        matches!(&err, StateError::Corrupt { reason, .. } if reason.contains(&format!("belongs to key group {kg}"))),
        "{err}"
    );
}

#[test]
fn duplicate_records_and_malformed_lists_are_corrupt() {
    let storage = storage();
    let (key, kg) = key_of_group(all(), 3);
    let duplicate_value = craft(&storage, all(), vec![value_meta("v", "u64")], |w| {
        w.start_key_group(kg)?;
        w.add(value_entry(&key, &[1]))?;
        w.add(value_entry(&key, &[2]))
    });
    let map_meta = MapStateDescriptor::<u8, u8>::new("m").meta().clone();
    let duplicate_map_entry = craft(&storage, all(), vec![map_meta], |w| {
        w.start_key_group(kg)?;
        for _ in 0..2 {
            w.add(Entry {
                user_key: Some(b"uk"),
                ..value_entry(&key, &[1])
            })?;
        }
        Ok(())
    });
    let list_meta = ListStateDescriptor::<u8>::new("l").meta().clone();
    let malformed_list = craft(&storage, all(), vec![list_meta], |w| {
        w.start_key_group(kg)?;
        w.add(value_entry(&key, &[9, 1, 2]))
    });
    for (what, handle) in [
        ("duplicate value", duplicate_value),
        ("duplicate map entry", duplicate_map_entry),
        ("malformed list", malformed_list),
    ] {
        let err = restore(&storage, all(), vec![handle]).err().unwrap();
        assert!(matches!(err, StateError::Corrupt { .. }), "{what}: {err}");
    }
}

#[test]
fn conflicting_or_repeated_state_metadata_is_an_error() {
    let storage = storage();
    let lower = KeyGroupRange::new(0, 64).unwrap();
    let upper = KeyGroupRange::new(64, 128).unwrap();
    let a = craft(&storage, lower, vec![value_meta("v", "u64")], |_| Ok(()));
    let b = craft(&storage, upper, vec![value_meta("v", "String")], |_| Ok(()));
    let err = restore(&storage, all(), vec![a.clone(), b]).err().unwrap();
    assert!(
        matches!(&err, StateError::Restore(message) if message.contains("'v'") && message.contains("String")),
        "{err}"
    );
    let repeated = craft(
        &storage,
        all(),
        vec![value_meta("v", "u64"), value_meta("v", "u64")],
        |_| Ok(()),
    );
    let err = restore(&storage, all(), vec![repeated]).err().unwrap();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");

    // Compatible metadata across handles merges into one state.
    let c = craft(&storage, upper, vec![value_meta("v", "u64")], |_| Ok(()));
    let backend = restore(&storage, all(), vec![a, c]).unwrap();
    assert_eq!(backend.state_metas(), vec![value_meta("v", "u64")]);
}

#[test]
fn files_of_other_writers_restore_in_any_record_order() {
    // Records unsorted, a map's entries spread over the block, empty lists.
    let storage = storage();
    let (k1, kg1) = key_of_group(all(), 0);
    let (k2, _) = key_of_group(KeyGroupRange::new(kg1, kg1 + 1).unwrap(), 1);
    let map_meta = MapStateDescriptor::<u8, u8>::new("m").meta().clone();
    let list_meta = ListStateDescriptor::<u8>::new("l").meta().clone();
    let mut list = Vec::new();
    write_len_prefixed(&mut list, &[5]);
    let handle = craft(&storage, all(), vec![map_meta, list_meta], |w| {
        w.start_key_group(kg1)?;
        w.add(Entry {
            user_key: Some(&[3]),
            ..value_entry(&k2, &[30])
        })?;
        w.add(Entry {
            user_key: Some(&[9]),
            ..value_entry(&k1, &[90])
        })?;
        w.add(Entry {
            state: 1,
            ..value_entry(&k1, &list)
        })?;
        w.add(Entry {
            state: 1,
            ..value_entry(&k2, &[])
        })?;
        w.add(Entry {
            user_key: Some(&[1]),
            ..value_entry(&k1, &[10])
        })
    });
    let mut backend = restore(&storage, all(), vec![handle]).unwrap();
    let map = backend
        .map_state(MapStateDescriptor::<u8, u8>::new("m"))
        .unwrap();
    let list_state = backend
        .list_state(ListStateDescriptor::<u8>::new("l"))
        .unwrap();
    backend.set_current_key(&k1).unwrap();
    assert_eq!(map.entries(&mut *backend).unwrap(), vec![(1, 10), (9, 90)]);
    assert_eq!(list_state.get(&mut *backend).unwrap(), vec![5]);
    backend.set_current_key(&k2).unwrap();
    assert_eq!(map.entries(&mut *backend).unwrap(), vec![(3, 30)]);
    assert!(
        list_state.get(&mut *backend).unwrap().is_empty(),
        "an empty list is absent"
    );
}
