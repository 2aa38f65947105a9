//! Incremental checkpoints: what is uploaded, what is reused, what the
//! checkpoint store deletes, and restores at other parallelisms.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use state_api::conformance::StandardStates;
use state_api::key_group::key_group_range_for_operator;
use state_api::snapshot::SavepointFormat;
use state_api::{KeyedStateBackend, KeyedStateHandle, SnapshotType, StateError, StateScope};
use state_rocksdb::RocksDbKeyedStateBackend;
use state_storage::{CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore};

fn paths(handle: &KeyedStateHandle) -> BTreeSet<String> {
    handle.files().iter().map(|f| f.path.clone()).collect()
}

fn shared_paths(handle: &KeyedStateHandle) -> BTreeSet<String> {
    incremental(handle)
        .shared_files
        .iter()
        .map(|f| f.file.path.clone())
        .collect()
}

#[test]
fn second_checkpoint_uploads_only_new_ssts_and_refers_to_the_rest() {
    let storage = storage();
    let (_dir, factory) = factory(true);
    let (mut backend, mut states) = populated(&factory, &storage, 0..5_000);
    let first = checkpoint(&mut *backend, &storage, 1);
    let h1 = incremental(&first.handle).clone();
    assert_eq!(
        first.uploaded_bytes,
        first.handle.state_size(),
        "first uploads everything"
    );
    assert!(!h1.shared_files.is_empty());
    assert!(
        h1.shared_files
            .iter()
            .all(|f| f.file.scope == StateScope::Shared)
    );
    assert!(
        h1.private_files
            .iter()
            .all(|f| f.file.scope == StateScope::Exclusive)
    );
    let private: BTreeSet<&str> = h1.private_files.iter().map(|f| f.name.as_str()).collect();
    assert!(private.contains("CURRENT") && private.iter().any(|n| n.starts_with("MANIFEST-")));
    assert!(h1.shared_files.iter().all(|f| f.name.ends_with(".sst")));

    // 1% of the keys change.
    for k in (0..5_000).step_by(100) {
        states.populate(&mut *backend, k);
    }
    let second = checkpoint(&mut *backend, &storage, 2);
    let h2 = incremental(&second.handle);
    let old: BTreeMap<&str, _> = h1
        .shared_files
        .iter()
        .map(|f| (f.name.as_str(), &f.file))
        .collect();
    let mut new_bytes = 0;
    for file in &h2.shared_files {
        match old.get(file.name.as_str()) {
            Some(previous) => assert_eq!(
                *previous, &file.file,
                "{} is referenced, not re-uploaded",
                file.name
            ),
            None => new_bytes += file.file.size,
        }
    }
    let private_bytes: u64 = h2.private_files.iter().map(|f| f.file.size).sum();
    assert!(new_bytes > 0, "the changes are in a new SST");
    assert_eq!(second.uploaded_bytes, new_bytes + private_bytes);
    assert!(
        second.uploaded_bytes * 5 < first.uploaded_bytes,
        "second upload {} vs first {}",
        second.uploaded_bytes,
        first.uploaded_bytes
    );
    assert_eq!(h2.backend_id, h1.backend_id);

    // A restore from the second checkpoint sees the latest state.
    let expected = contents(&mut *backend);
    let mut restored = create(&factory, &storage, all(), vec![second.handle.clone()]).unwrap();
    assert!(contents(&mut *restored) == expected);
}

#[test]
fn unconfirmed_and_aborted_uploads_are_never_reused() {
    let storage = storage();
    let (_dir, factory) = factory(true);
    let (mut backend, mut states) = populated(&factory, &storage, 0..1_000);
    let first = checkpoint(&mut *backend, &storage, 1);

    states.populate(&mut *backend, 10_001);
    // Checkpoint 2 uploads, but is never confirmed; 3 is aborted.
    let second = snapshot(&mut *backend, &storage, 2, SnapshotType::Checkpoint);
    let only_in_2: BTreeSet<String> = shared_paths(&second.handle)
        .difference(&shared_paths(&first.handle))
        .cloned()
        .collect();
    assert!(!only_in_2.is_empty());
    let third = snapshot(&mut *backend, &storage, 3, SnapshotType::Checkpoint);
    assert!(
        shared_paths(&third.handle).is_disjoint(&only_in_2),
        "checkpoint 3 must not rely on the unconfirmed checkpoint 2"
    );
    backend.notify_checkpoint_aborted(3).unwrap();
    backend.notify_checkpoint_aborted(2).unwrap();
    let fourth = checkpoint(&mut *backend, &storage, 4);
    let only_in_3: BTreeSet<String> = shared_paths(&third.handle)
        .difference(&shared_paths(&first.handle))
        .cloned()
        .collect();
    assert!(shared_paths(&fourth.handle).is_disjoint(&only_in_2));
    assert!(shared_paths(&fourth.handle).is_disjoint(&only_in_3));
    assert!(
        shared_paths(&first.handle).is_subset(&shared_paths(&fourth.handle)),
        "the confirmed checkpoint's files are still referred to"
    );
    // A late completion notice of an aborted checkpoint changes nothing.
    backend.notify_checkpoint_complete(3).unwrap();
    let fifth = snapshot(&mut *backend, &storage, 5, SnapshotType::Checkpoint);
    assert!(shared_paths(&fifth.handle).is_disjoint(&only_in_3));
}

#[test]
fn savepoints_and_full_checkpoints_share_nothing() {
    let storage = storage();
    let (_dir, factory) = factory(true);
    let (mut backend, _) = populated(&factory, &storage, 0..500);
    let expected = contents(&mut *backend);
    checkpoint(&mut *backend, &storage, 1);
    let canonical = snapshot(
        &mut *backend,
        &storage,
        2,
        SnapshotType::Savepoint(SavepointFormat::Canonical),
    );
    assert!(matches!(canonical.handle, KeyedStateHandle::KeyGroups(_)));
    let full = snapshot(&mut *backend, &storage, 3, SnapshotType::FullCheckpoint);
    assert!(matches!(full.handle, KeyedStateHandle::KeyGroups(_)));
    let native = snapshot(
        &mut *backend,
        &storage,
        4,
        SnapshotType::Savepoint(SavepointFormat::Native),
    );
    assert!(
        native
            .handle
            .files()
            .iter()
            .all(|f| f.scope == StateScope::Exclusive)
    );
    assert_eq!(native.uploaded_bytes, native.handle.state_size());
    backend.notify_checkpoint_complete(4).unwrap();
    for handle in [canonical.handle, full.handle, native.handle] {
        let mut restored = create(&factory, &storage, all(), vec![handle]).unwrap();
        assert!(contents(&mut *restored) == expected);
    }
}

fn store_run(num_retained: usize) {
    let storage = storage();
    // Storage is compared with the retained checkpoints while the backend
    // runs, so no upload of its own may be in flight: eager upload off
    // (tests/eager_upload.rs checks it, after the backend closed).
    let (_dir, factory) = factory(true);
    let factory = state_rocksdb::RocksDbBackendFactory::new(
        factory.config().clone().with_eager_upload(false),
    );
    let mut backend = factory
        .create_backend(state_api::BackendContext {
            operator: "op".into(),
            max_parallelism: MAX_P,
            key_group_range: all(),
            restore: Vec::new(),
            storage: storage.clone(),
            restore_storage: None,
            skip_restored_states: Vec::new(),
        })
        .unwrap();
    let mut states = StandardStates::register(&mut backend);
    let mut store = CompletedCheckpointStore::open(storage.clone(), num_retained).unwrap();
    let mut retained: Vec<KeyedStateHandle> = Vec::new();
    let mut obsolete_seen = false;
    for id in 1..=6u64 {
        for k in (id * 300)..(id * 300 + 400) {
            states.populate(&mut backend, k);
        }
        if id % 2 == 0 {
            // Compaction replaces SST files: the old ones become obsolete.
            backend.compact().unwrap();
        }
        let result = checkpoint_typed(&mut backend, &storage, id);
        store
            .add(
                CompletedCheckpoint::new("rocksdb-tests", id, id, CheckpointKind::Checkpoint)
                    .with_operator("op", vec![result.handle.clone()]),
            )
            .unwrap();
        backend.notify_checkpoint_complete(id).unwrap();
        retained.push(result.handle);
        if retained.len() > num_retained {
            let gone = retained.remove(0);
            obsolete_seen |=
                !shared_paths(&gone).is_subset(&retained.iter().flat_map(shared_paths).collect());
        }
        // Exactly the shared files of the retained checkpoints are left.
        let expected: BTreeSet<String> = retained.iter().flat_map(shared_paths).collect();
        let stored: BTreeSet<String> = storage
            .list_files(Some("shared"))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(stored, expected, "checkpoint {id}, {num_retained} retained");
        for handle in &retained {
            for path in paths(handle) {
                assert!(stored.contains(&path) || !path.starts_with("shared/"));
            }
        }
    }
    assert!(obsolete_seen, "compaction made some SST files obsolete");
    let expected = contents(&mut backend);
    let latest = store.latest().unwrap().operators["op"].clone();
    let mut restored = create(&factory, &storage, all(), latest).unwrap();
    assert!(contents(&mut *restored) == expected);
}

fn checkpoint_typed(
    backend: &mut RocksDbKeyedStateBackend,
    storage: &std::sync::Arc<state_storage::ObjectStoreCheckpointStorage>,
    id: u64,
) -> state_api::SnapshotResult {
    snapshot(backend, storage, id, SnapshotType::Checkpoint)
}

#[test]
fn subsumption_deletes_exactly_unused_ssts_with_one_retained() {
    store_run(1);
}

#[test]
fn subsumption_deletes_exactly_unused_ssts_with_two_retained() {
    store_run(2);
}

#[test]
fn rescaling_restores_from_incremental_handles() {
    let storage = storage();
    let (_dir, factory) = factory(true);
    let (mut backend, _) = populated(&factory, &storage, 0..2_000);
    let original = contents(&mut *backend);
    let mut handles = vec![checkpoint(&mut *backend, &storage, 1).handle];
    let mut id = 10;
    for parallelism in [2u32, 3, 1] {
        let mut next = Vec::new();
        let mut union = state_api::conformance::Dump::new();
        for index in 0..parallelism {
            let range = key_group_range_for_operator(MAX_P, parallelism, index).unwrap();
            let mine: Vec<_> = handles
                .iter()
                .filter(|h| !h.key_group_range().intersection(&range).is_empty())
                .cloned()
                .collect();
            let single_covering = mine.len() == 1;
            let mut restored = factory
                .create_backend(state_api::BackendContext {
                    operator: format!("op-{index}"),
                    max_parallelism: MAX_P,
                    key_group_range: range,
                    restore: mine,
                    storage: storage.clone(),
                    restore_storage: None,
                    skip_restored_states: Vec::new(),
                })
                .unwrap();
            // Opened from one handle: its files count as uploaded already.
            assert_eq!(restored.confirmed_checkpoint().is_some(), single_covering);
            let part = contents(&mut restored);
            union.extend(part);
            id += 1;
            let result = checkpoint_typed(&mut restored, &storage, id);
            restored.notify_checkpoint_complete(id).unwrap();
            if single_covering {
                assert!(
                    result.uploaded_bytes < result.handle.state_size(),
                    "after a restore from one handle, its SSTs are referred to"
                );
            }
            next.push(result.handle);
        }
        assert!(union == original, "contents at parallelism {parallelism}");
        handles = next;
    }
}

#[test]
fn damaged_handles_are_errors() {
    let storage = storage();
    let (_dir, factory) = factory(true);
    let (mut backend, _) = populated(&factory, &storage, 0..200);
    let handle = checkpoint(&mut *backend, &storage, 1).handle;
    let KeyedStateHandle::Incremental(good) = handle else {
        panic!("incremental")
    };

    let mut no_current = good.clone();
    no_current.private_files.retain(|f| f.name != "CURRENT");
    let mut escaping = good.clone();
    escaping.shared_files[0].name = "../escape.sst".into();
    let mut twice = good.clone();
    let copy = twice.shared_files[0].clone();
    twice.shared_files.push(copy);
    let mut foreign = good.clone();
    foreign.backend = "heap".into();
    for (what, damaged) in [
        ("no CURRENT", no_current),
        ("escaping name", escaping),
        ("name twice", twice),
    ] {
        let err = create(
            &factory,
            &storage,
            all(),
            vec![KeyedStateHandle::Incremental(damaged)],
        )
        .err();
        assert!(
            matches!(err, Some(StateError::Corrupt { .. })),
            "{what}: {err:?}"
        );
    }
    let err = create(
        &factory,
        &storage,
        all(),
        vec![KeyedStateHandle::Incremental(foreign)],
    )
    .err();
    assert!(matches!(err, Some(StateError::Restore(_))), "{err:?}");
    // The heap backend refuses RocksDB files instead of misreading them.
    let err = create(
        &state_heap::HeapBackendFactory::new(),
        &storage,
        all(),
        vec![KeyedStateHandle::Incremental(good)],
    )
    .err();
    assert!(matches!(err, Some(StateError::Restore(_))), "{err:?}");
}

#[test]
fn each_instance_gets_its_own_directory_removed_on_drop() {
    let storage = storage();
    let (dir, factory) = factory(true);
    let ctx = || state_api::BackendContext {
        operator: "same/operator".into(),
        max_parallelism: MAX_P,
        key_group_range: all(),
        restore: Vec::new(),
        storage: storage.clone(),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    };
    let a = factory.create_backend(ctx()).unwrap();
    let b = factory.create_backend(ctx()).unwrap();
    assert_ne!(a.local_dir(), b.local_dir());
    assert!(a.local_dir().starts_with(dir.path()) && a.local_dir().exists());
    drop(a);
    drop(b);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
