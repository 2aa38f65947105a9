//! The changelog wrapper's own behaviour: log-only checkpoints, replay,
//! rescaling from logs, materialization and truncation, upload failures,
//! back-pressure, shared log files and clean-up with the checkpoint store.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::conformance::{Dump, FaultInjector, StandardStates, dump};
use state_api::key_group::key_group_range_for_operator;
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, StateBackendFactory, StateError,
};
use state_changelog::{
    ChangelogBackendFactory, ChangelogKeyedStateBackend, DstlConfig, MaterializationConfig,
};
use state_storage::ObjectStoreCheckpointStorage;
use state_storage::{CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore};

use common::{
    Fault, FlakyAccess, FlakyStorage, changelog_heap, changelog_rocksdb, context,
    manual_materialization, snapshot, test_dstl,
};

fn all() -> KeyGroupRange {
    KeyGroupRange::all(128).unwrap()
}

fn memory() -> Arc<ObjectStoreCheckpointStorage> {
    Arc::new(ObjectStoreCheckpointStorage::in_memory("changelog-test").unwrap())
}

fn populated(
    factory: &ChangelogBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
    range: KeyGroupRange,
    keys: impl IntoIterator<Item = u64>,
) -> (ChangelogKeyedStateBackend, StandardStates) {
    let mut backend = factory
        .create_changelog(context(Arc::clone(storage), range, Vec::new()))
        .unwrap();
    let mut states = StandardStates::register(&mut backend);
    for key in keys {
        states.populate(&mut backend, key);
    }
    (backend, states)
}

/// Updates, clears and map changes on the keys `keys` of `backend` that
/// belong to it.
fn change(backend: &mut ChangelogKeyedStateBackend, states: &mut StandardStates, keys: &[u64]) {
    let range = backend.key_group_range();
    for &key in keys {
        let encoded = state_api::codec::encode(&key).unwrap();
        let kg = state_api::key_group::assign_to_key_group(&encoded, 128).unwrap();
        if !range.contains(kg) {
            continue;
        }
        backend.set_key(&key).unwrap();
        match key % 4 {
            0 => states.value.update(backend, &(key * 7)).unwrap(),
            1 => states.list.clear(backend).unwrap(),
            2 => states.map.put(backend, &42, &format!("new-{key}")).unwrap(),
            _ => states.sum.add(backend, &3).unwrap(),
        }
        states.windowed.set_namespace(&(key + 1)).unwrap();
        states.windowed.update(backend, &key).unwrap();
    }
}

fn contents(backend: &mut dyn KeyedStateBackend) -> Dump {
    let states = StandardStates::register(backend);
    dump(backend, &states.ids())
}

fn restored(
    factory: &ChangelogBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
    range: KeyGroupRange,
    handles: Vec<KeyedStateHandle>,
) -> ChangelogKeyedStateBackend {
    factory
        .create_changelog(context(Arc::clone(storage), range, handles))
        .unwrap()
}

fn changelog(handle: &KeyedStateHandle) -> &state_api::ChangelogStateHandle {
    match handle {
        KeyedStateHandle::Changelog(h) => h,
        other => panic!("expected a changelog handle, got {}", other.format_name()),
    }
}

#[test]
fn checkpoints_carry_only_the_changes_and_restore_replays_them() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let factory = changelog_heap(test_dstl(), manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..2_000);

    // The first checkpoint has no base yet: it materializes.
    let first = snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    let first_handle = changelog(&first.handle);
    assert!(!first_handle.materialized.is_empty());
    assert_eq!(first_handle.log_size(), 0, "nothing changed after it");

    // 1% of the keys change: the next checkpoint uploads only their records.
    let changed: Vec<u64> = (0..2_000).step_by(100).collect();
    change(&mut backend, &mut states, &changed);
    let second = snapshot(&mut backend, &storage, 2).unwrap();
    backend.notify_checkpoint_complete(2).unwrap();
    let second_handle = changelog(&second.handle);
    assert_eq!(
        second_handle.materialization_id,
        first_handle.materialization_id
    );
    assert_eq!(second_handle.materialized, first_handle.materialized);
    assert!(second_handle.log_size() > 0);
    assert!(
        second.uploaded_bytes * 20 < first.uploaded_bytes,
        "log-only checkpoint uploaded {} bytes, the materializing one {}",
        second.uploaded_bytes,
        first.uploaded_bytes
    );
    let live = contents(&mut backend);
    let mut back = restored(&factory, &storage, all(), vec![second.handle.clone()]);
    assert!(contents(&mut back) == live, "replayed state differs");

    // A materialization becomes the base; the log before it is truncated.
    assert!(backend.trigger_materialization().unwrap().is_some());
    assert!(backend.wait_for_materialization());
    assert_eq!(backend.stats().live_segments, 0);
    let third = snapshot(&mut backend, &storage, 3).unwrap();
    backend.notify_checkpoint_complete(3).unwrap();
    let third_handle = changelog(&third.handle);
    assert!(third_handle.materialization_id > second_handle.materialization_id);
    assert!(third_handle.log.is_empty());
    assert_eq!(third.uploaded_bytes, 0, "the materialization ran before");
    let mut back = restored(&factory, &storage, all(), vec![third.handle]);
    assert!(contents(&mut back) == live);

    // Nothing changed: nothing to materialize.
    assert_eq!(backend.trigger_materialization().unwrap(), None);
}

#[test]
fn periodic_materialization_runs_in_the_background_and_becomes_the_base() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let factory = changelog_heap(
        test_dstl(),
        MaterializationConfig {
            interval: Some(Duration::from_millis(1)),
            ..MaterializationConfig::default()
        },
    );
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..200);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    let first = backend.materialization_id();
    let mut id = 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Writes and completed checkpoints drive the timer; no explicit trigger.
    while backend.materialization_id() == first && Instant::now() < deadline {
        change(&mut backend, &mut states, &[id, id + 1]);
        std::thread::sleep(Duration::from_millis(2));
        id += 1;
        snapshot(&mut backend, &storage, id).unwrap();
        backend.notify_checkpoint_complete(id).unwrap();
    }
    assert_ne!(
        backend.materialization_id(),
        first,
        "no periodic materialization ran"
    );
    assert!(backend.stats().materializations >= 1);
    let handle = snapshot(&mut backend, &storage, id + 1).unwrap().handle;
    assert_eq!(
        Some(changelog(&handle).materialization_id),
        backend.materialization_id()
    );
    let live = contents(&mut backend);
    let mut back = restored(&factory, &storage, all(), vec![handle]);
    assert!(contents(&mut back) == live);
}

/// A restored backend continues the chain: its checkpoints reference the
/// restored materialization and log and add its own changes.
#[test]
fn restored_backends_extend_the_restored_log() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let factory = changelog_heap(test_dstl(), manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..300);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    change(&mut backend, &mut states, &[1, 2, 3, 4, 5]);
    let second = snapshot(&mut backend, &storage, 2).unwrap().handle;

    let mut next = restored(&factory, &storage, all(), vec![second.clone()]);
    let mut next_states = StandardStates::register(&mut next);
    change(&mut next, &mut next_states, &[6, 7, 8, 200, 301]);
    let third = snapshot(&mut next, &storage, 3).unwrap().handle;
    let (old, new) = (changelog(&second), changelog(&third));
    assert_eq!(new.materialized, old.materialized);
    assert_eq!(new.log.len(), old.log.len() + 1);
    assert_eq!(new.log[..old.log.len()], old.log[..]);
    let live = contents(&mut next);
    let mut back = restored(&factory, &storage, all(), vec![third]);
    assert!(contents(&mut back) == live);
}

fn rescale_through_logs(factory: &ChangelogBackendFactory) {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let keys: Vec<u64> = (0..600).collect();
    let (mut backend, mut states) = populated(factory, &storage, all(), keys.iter().copied());
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    change(&mut backend, &mut states, &keys[..200]);
    let handle = snapshot(&mut backend, &storage, 2).unwrap().handle;
    assert!(changelog(&handle).log_size() > 0);
    let expected = contents(&mut backend);

    // 1 → 2: each instance replays only its key groups of the log.
    let mut union = Dump::new();
    let mut after = Dump::new();
    let mut handles = Vec::new();
    for index in 0..2 {
        let range = key_group_range_for_operator(128, 2, index).unwrap();
        let mut part = restored(factory, &storage, range, vec![handle.clone()]);
        let mut part_states = StandardStates::register(&mut part);
        union.extend(contents(&mut part));
        // A checkpoint (materializing: the range changed), then changes
        // that only the log holds.
        snapshot(&mut part, &storage, 3).unwrap();
        part.notify_checkpoint_complete(3).unwrap();
        change(&mut part, &mut part_states, &keys[200..400]);
        handles.push(snapshot(&mut part, &storage, 4).unwrap().handle);
        assert!(changelog(handles.last().unwrap()).log_size() > 0);
        after.extend(contents(&mut part));
    }
    assert!(union == expected, "1 → 2 changed the contents");

    // 2 → 1: both logs replay into one backend.
    let mut merged = restored(factory, &storage, all(), handles);
    assert!(contents(&mut merged) == after, "2 → 1 changed the contents");
}

#[test]
fn rescaling_replays_logs_of_own_key_groups_over_heap() {
    rescale_through_logs(&changelog_heap(test_dstl(), manual_materialization()));
}

#[test]
fn rescaling_replays_logs_of_own_key_groups_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    rescale_through_logs(&changelog_rocksdb(
        local.path(),
        test_dstl(),
        manual_materialization(),
    ));
}

#[test]
fn upload_failures_fail_the_checkpoint_cleanly_and_lose_nothing() {
    let flaky = FlakyStorage::new(memory());
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(FlakyAccess(Arc::clone(&flaky)));
    let dstl = DstlConfig {
        upload_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..500);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();

    // Storage errors: every attempt fails, so does the checkpoint.
    flaky.set(Fault::FailWrites);
    change(&mut backend, &mut states, &[1, 2, 3]);
    let err = snapshot(&mut backend, &storage, 2).unwrap_err();
    assert!(matches!(err, StateError::Storage { .. }), "{err}");
    assert!(err.to_string().contains("injected"), "{err}");
    backend.notify_checkpoint_aborted(2).unwrap();

    // Timeouts: attempts that hang beyond the timeout fail the checkpoint.
    flaky.set(Fault::Slow(Duration::from_millis(600)));
    change(&mut backend, &mut states, &[4, 5, 6]);
    let started = Instant::now();
    let err = snapshot(&mut backend, &storage, 3).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the attempts"
    );
    backend.notify_checkpoint_aborted(3).unwrap();

    // Healthy again: the next checkpoint re-uploads everything that failed.
    flaky.set(Fault::None);
    change(&mut backend, &mut states, &[7, 8, 9]);
    let good = snapshot(&mut backend, &storage, 4).unwrap();
    backend.notify_checkpoint_complete(4).unwrap();
    let live = contents(&mut backend);
    let mut back = restored(&factory, &storage, all(), vec![good.handle]);
    assert!(
        contents(&mut back) == live,
        "changes made during the failures were lost"
    );
    let stats = factory.uploader().stats();
    assert!(stats.failed_attempts >= 4, "{stats:?}");
}

/// A store slower than the upload timeout but working: the timed-out first
/// attempt races the ones started after it and its upload is used (Flink's
/// `upload.timeout`), instead of every attempt being abandoned and the
/// checkpoint failing. The attempts that finish later delete their files.
#[test]
fn a_slow_store_is_not_turned_into_failures_by_the_upload_timeout() {
    let inner = memory();
    let flaky = FlakyStorage::new(Arc::clone(&inner));
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(FlakyAccess(Arc::clone(&flaky)));
    let dstl = DstlConfig {
        upload_timeout: Duration::from_millis(100),
        max_attempts: 3,
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..200);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();

    // Each attempt takes 250 ms: the first ends after the second (100 ms)
    // and third (200 ms) started, before the third times out (300 ms).
    flaky.set(Fault::Slow(Duration::from_millis(250)));
    change(&mut backend, &mut states, &[1, 2, 3]);
    let result = snapshot(&mut backend, &storage, 2).expect("the first attempt's upload is used");
    backend.notify_checkpoint_complete(2).unwrap();
    flaky.set(Fault::None);
    let live = contents(&mut backend);
    let mut back = restored(&factory, &storage, all(), vec![result.handle.clone()]);
    assert!(contents(&mut back) == live);
    assert!(factory.uploader().stats().failed_attempts >= 2);

    // The losing attempts finish by ~450 ms and delete what they wrote:
    // storage holds what checkpoint 2 references and nothing else.
    let referenced: BTreeSet<String> = result
        .handle
        .files()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    let shared: BTreeSet<String> = referenced
        .into_iter()
        .filter(|path| path.starts_with("shared/") || path.contains("/shared/"))
        .collect();
    assert!(!shared.is_empty(), "checkpoint 2 refers to log files");
    assert_eq!(shared_files_once_settled(&inner, &shared), shared);
}

/// The files under `shared/` once they equal `expected`, or after 10 s
/// (deletions run on the upload threads).
fn shared_files_once_settled(
    storage: &ObjectStoreCheckpointStorage,
    expected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored: BTreeSet<String> = storage
            .list_files(Some("shared"))
            .unwrap()
            .into_iter()
            .collect();
        if &stored == expected || Instant::now() > deadline {
            return stored;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long outage: the log's failed segments would pile up in memory
/// without bound. Past the in-flight limit the backend fails instead (the
/// job restarts from its last checkpoint), with memory bounded.
#[test]
fn a_long_outage_fails_the_backend_instead_of_growing_memory() {
    let flaky = FlakyStorage::new(memory());
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(FlakyAccess(Arc::clone(&flaky)));
    let limit = 256 * 1024;
    let dstl = DstlConfig {
        preemptive_persist_threshold: 8 * 1024,
        max_in_flight: limit,
        max_attempts: 1,
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let (mut backend, states) = populated(&factory, &storage, all(), 0..100);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    flaky.set(Fault::FailWrites);
    let mut failure = None;
    for round in 0..200_000u64 {
        let key = round % 1000;
        let outcome = backend
            .set_key(&key)
            .and_then(|()| states.value.update(&mut backend, &round));
        if let Err(e) = outcome {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("the backend fails during the outage");
    assert!(
        failure.to_string().contains("failed to upload"),
        "{failure}"
    );
    let held = backend.stats().retained_bytes;
    assert!(held < limit * 2, "{held} bytes held, limit {limit}");
}

#[test]
fn repeated_materialization_failures_fail_the_backend() {
    let flaky = FlakyStorage::new(memory());
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(FlakyAccess(Arc::clone(&flaky)));
    let factory = changelog_heap(
        test_dstl(),
        MaterializationConfig {
            interval: None,
            max_failures_allowed: 2,
        },
    );
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..50);
    flaky.set(Fault::FailWrites);
    for round in 0..3u64 {
        change(&mut backend, &mut states, &[round]);
        assert!(backend.trigger_materialization().unwrap().is_some());
        assert!(!backend.wait_for_materialization());
        assert_eq!(backend.stats().failed_materializations, round + 1);
    }
    flaky.set(Fault::None);
    let err = snapshot(&mut backend, &storage, 1).unwrap_err();
    assert!(
        err.to_string().contains("max-failures-allowed"),
        "after 3 failures with 2 allowed: {err}"
    );
}

#[test]
fn writers_are_slowed_down_when_too_much_is_in_flight() {
    let flaky = FlakyStorage::new(memory());
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(FlakyAccess(Arc::clone(&flaky)));
    let dstl = DstlConfig {
        preemptive_persist_threshold: 8 << 10,
        max_in_flight: 32 << 10,
        upload_threads: 2,
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..10);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();

    flaky.set(Fault::Slow(Duration::from_millis(30)));
    for key in 10..3_000 {
        states.populate(&mut backend, key);
    }
    let stats = factory.uploader().stats();
    assert!(stats.backpressure_micros > 0, "{stats:?}");
    assert!(factory.uploader().in_flight_bytes() <= 32 << 10);
    // Pre-emptive uploads happened before the checkpoint.
    assert!(stats.files_uploaded > 0, "{stats:?}");
    flaky.set(Fault::None);
    change(&mut backend, &mut states, &[10, 11]);
    let result = snapshot(&mut backend, &storage, 2).unwrap();
    let handle = result.handle;
    // Pre-emptively uploaded segments count in the first checkpoint using them.
    let logged = changelog(&handle);
    assert!(logged.log[0].segments.len() > 1);
    assert_eq!(result.uploaded_bytes, logged.log_size());
    let live = contents(&mut backend);
    let mut back = restored(&factory, &storage, all(), vec![handle]);
    assert!(contents(&mut back) == live);
}

#[test]
fn uploaded_segments_are_not_kept_in_memory() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let dstl = DstlConfig {
        preemptive_persist_threshold: 16 << 10,
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..10);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    for round in 0..20u64 {
        for key in 0..500 {
            states.populate(&mut backend, round * 1_000 + key);
        }
        // Let the uploads finish before the next hand-over.
        let deadline = Instant::now() + Duration::from_secs(5);
        while factory.uploader().in_flight_bytes() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // One more hand-over, after every upload finished, frees what was
    // uploaded: only the new segment stays (however slow the uploads were
    // while the rounds ran).
    let before = backend.stats().live_segments;
    let mut key = 100_000;
    while backend.stats().live_segments == before {
        states.populate(&mut backend, key);
        key += 1;
    }
    let stats = backend.stats();
    assert!(stats.live_segments > 20, "{stats:?}");
    // Without a checkpoint, memory holds at most the last hand-over.
    assert!(stats.retained_bytes <= 32 << 10, "{stats:?}");
}

#[test]
fn backends_sharing_an_uploader_share_log_files() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let dstl = DstlConfig {
        persist_delay: Duration::from_millis(200),
        ..test_dstl()
    };
    let factory = changelog_heap(dstl, manual_materialization());
    let lower = KeyGroupRange::new(0, 64).unwrap();
    let upper = KeyGroupRange::new(64, 128).unwrap();
    let keys: Vec<u64> = (0..400).collect();
    let (mut a, mut a_states) = populated(&factory, &storage, lower, []);
    let (mut b, mut b_states) = populated(&factory, &storage, upper, []);
    // Base checkpoints first, so the next ones are log-only.
    for backend in [&mut a, &mut b] {
        snapshot(backend, &storage, 1).unwrap();
        backend.notify_checkpoint_complete(1).unwrap();
    }
    change(&mut a, &mut a_states, &keys);
    change(&mut b, &mut b_states, &keys);
    let task_a = a
        .snapshot(
            2,
            &state_api::SnapshotOptions::checkpoint(2),
            Arc::clone(&storage),
        )
        .unwrap();
    let task_b = b
        .snapshot(
            2,
            &state_api::SnapshotOptions::checkpoint(2),
            Arc::clone(&storage),
        )
        .unwrap();
    let (ha, hb) = (task_a.run().unwrap().handle, task_b.run().unwrap().handle);
    let file_of = |h: &KeyedStateHandle| changelog(h).log[0].segments[0].file.path.clone();
    assert_eq!(file_of(&ha), file_of(&hb), "one batch, one file");
    // Each restores only its own records from the common file.
    for (backend, handle, range) in [(&mut a, ha, lower), (&mut b, hb, upper)] {
        let live = contents(backend);
        let mut back = restored(&factory, &storage, range, vec![handle]);
        assert!(contents(&mut back) == live);
    }
}

#[test]
fn damaged_or_incomplete_logs_fail_restore() {
    let memory = memory();
    let storage: Arc<dyn CheckpointStorageAccess> = memory.clone();
    let factory = changelog_heap(test_dstl(), manual_materialization());
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..100);
    snapshot(&mut backend, &storage, 1).unwrap();
    backend.notify_checkpoint_complete(1).unwrap();
    let mut round = 0;
    let mut logged = |backend: &mut ChangelogKeyedStateBackend, states: &mut StandardStates| {
        round += 1;
        change(backend, states, &[round, round + 10]);
        snapshot(backend, &storage, 1 + round).unwrap().handle
    };
    let restore = |handle: KeyedStateHandle| {
        factory
            .create_changelog(context(Arc::clone(&storage), all(), vec![handle]))
            .map(|_| ())
    };

    // A segment missing from the handle.
    let mut missing = logged(&mut backend, &mut states);
    if let KeyedStateHandle::Changelog(h) = &mut missing {
        h.log[0].segments.clear();
    }
    let err = restore(missing).unwrap_err();
    assert!(err.to_string().contains("misses records"), "{err}");

    // A flipped byte in the log file.
    let damaged = logged(&mut backend, &mut states);
    let segment = changelog(&damaged).log.last().unwrap().segments[0].clone();
    memory
        .corrupt_byte(&segment.file, segment.offset + segment.length / 2)
        .unwrap();
    let err = restore(damaged).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");

    // A deleted log file.
    let removed = logged(&mut backend, &mut states);
    let segment = changelog(&removed).log.last().unwrap().segments[0].clone();
    memory.remove(&segment.file).unwrap();
    let err = restore(removed).unwrap_err();
    assert!(matches!(err, StateError::FileNotFound { .. }), "{err}");
}

/// With the checkpoint store, shared/ holds exactly the files the retained
/// checkpoint references once clean-up ran: log files and materializations
/// of subsumed checkpoints, log files no checkpoint used and abandoned
/// materializations are gone, and nothing referenced is missing.
fn storage_holds_exactly_what_is_retained(factory_for: impl Fn() -> ChangelogBackendFactory) {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(ObjectStoreCheckpointStorage::local(dir.path(), "job").unwrap());
    let storage: Arc<dyn CheckpointStorageAccess> = local.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&local), 1).unwrap();
    let factory = factory_for();
    let (mut backend, mut states) = populated(&factory, &storage, all(), 0..500);
    for id in 1..=8u64 {
        change(&mut backend, &mut states, &[id, id * 3, id * 7]);
        if id % 3 == 0 {
            // A materialization no checkpoint will use: replaced before one.
            backend.trigger_materialization().unwrap();
            backend.wait_for_materialization();
            change(&mut backend, &mut states, &[id + 100]);
            backend.trigger_materialization().unwrap();
            backend.wait_for_materialization();
        }
        let handle = snapshot(&mut backend, &storage, id).unwrap().handle;
        let subsumed = store
            .add(
                CompletedCheckpoint::new("job", id, 0, CheckpointKind::Checkpoint)
                    .with_operator("op", vec![handle]),
            )
            .unwrap();
        backend.notify_checkpoint_complete(id).unwrap();
        for old in subsumed {
            backend.notify_checkpoint_subsumed(old).unwrap();
        }
    }
    let referenced: BTreeSet<String> = store
        .latest()
        .unwrap()
        .shared_files()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(shared_files_once_settled(&local, &referenced), referenced);
    let live = contents(&mut backend);
    let handles = store.latest().unwrap().operators["op"].clone();
    drop(backend);
    let mut back = restored(&factory, &storage, all(), handles);
    assert!(contents(&mut back) == live);
}

#[test]
fn storage_holds_exactly_what_is_retained_over_heap() {
    storage_holds_exactly_what_is_retained(|| {
        changelog_heap(test_dstl(), manual_materialization())
    });
}

#[test]
fn storage_holds_exactly_what_is_retained_over_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    storage_holds_exactly_what_is_retained(|| {
        changelog_rocksdb(local.path(), test_dstl(), manual_materialization())
    });
}

#[test]
fn savepoints_are_the_wrapped_backends_own() {
    let storage: Arc<dyn CheckpointStorageAccess> = memory();
    let factory = changelog_heap(test_dstl(), manual_materialization());
    let (mut backend, _states) = populated(&factory, &storage, all(), 0..100);
    let options = state_api::SnapshotOptions {
        snapshot_type: state_api::SnapshotType::Savepoint(
            state_api::snapshot::SavepointFormat::Canonical,
        ),
        timestamp_ms: 0,
    };
    let savepoint = backend
        .snapshot(9, &options, Arc::clone(&storage))
        .unwrap()
        .run()
        .unwrap()
        .handle;
    assert!(matches!(savepoint, KeyedStateHandle::KeyGroups(_)));
    let live = contents(&mut backend);
    // It restores into the wrapper and into the plain heap backend.
    let mut back = restored(&factory, &storage, all(), vec![savepoint.clone()]);
    assert!(contents(&mut back) == live);
    let mut heap = state_heap::HeapBackendFactory::new()
        .create(context(Arc::clone(&storage), all(), vec![savepoint]))
        .unwrap();
    assert!(contents(&mut *heap) == live);
}
