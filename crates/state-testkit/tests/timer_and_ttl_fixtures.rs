//! Checked-in golden fixtures of timers and time-to-live, format version 4
//! (`fixtures/v4-timers-ttl/`): a checkpoint and a canonical savepoint of
//! every backend, holding timers (`StateKind::Timers`, in the key-group
//! format as a map of timestamps, in change logs as added and removed
//! timers) and a value state with a time to live (stamped values). Later
//! versions of the code must restore them: at parallelism 1 and 2, and the
//! savepoints into every backend, every timer fires once, and exactly the
//! values whose stamps have not expired are read.
//!
//! Written once (`STATE_WRITE_TIMER_FIXTURES=1 cargo test -p state-testkit
//! --test timer_and_ttl_fixtures`) when format version 4 was introduced,
//! never rewritten.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use state_api::key_group::key_group_range_for_operator;
use state_api::snapshot::SavepointFormat;
use state_api::timers::TimerService;
use state_api::ttl::{ManualClock, StateTtlConfig};
use state_api::{
    CheckpointStorageAccess, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle,
    SnapshotOptions, SnapshotType, StateBackendFactory, ValueStateDescriptor,
};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    Savepoint, SavepointWriter, load_checkpoint,
};

use common::{MAX_PARALLELISM, all, context, factories, fixtures_root};

const OPERATOR: &str = "op";
const KEYS: u64 = 24;
const CHECKPOINT: u64 = 2;

fn dir() -> PathBuf {
    fixtures_root().join("v4-timers-ttl")
}

/// When the fixtures' values were stamped: even keys at `WRITTEN_AT`, odd
/// keys 5 s later; their time to live is 10 s.
const WRITTEN_AT: i64 = 1_700_000_000_000;

fn last_seen(clock: &Arc<ManualClock>) -> ValueStateDescriptor<u64> {
    let ttl = StateTtlConfig::new(Duration::from_secs(10)).with_clock(Arc::clone(clock) as _);
    ValueStateDescriptor::<u64>::new("last-seen").with_ttl(ttl)
}

/// A fired timer: (timestamp, key, namespace).
type Fired = (i64, u64, u32);

/// The timers every fixture holds after checkpoint 1's timers were
/// changed: two per key, one deleted every third key, one added every
/// fourth, the earliest fired.
fn expected() -> BTreeSet<Fired> {
    let mut timers = BTreeSet::new();
    for key in 0..KEYS {
        timers.insert((key as i64 * 10, key, 0));
        if key % 3 != 0 {
            timers.insert((-(key as i64), key, 1));
        }
        if key % 4 == 0 {
            timers.insert((i64::MAX - key as i64, key, 2));
        }
    }
    timers.remove(&(-23, 23, 1)); // fired before checkpoint 2
    timers
}

/// Builds the expected timers in `backend` the way a job would: timers set,
/// a checkpoint, then deletions, additions and one firing.
fn write_timers(
    backend: &mut dyn KeyedStateBackend,
    checkpoint: &mut dyn FnMut(&mut dyn KeyedStateBackend, u64),
) {
    let mut timers = TimerService::<u32>::register(backend, "windows").unwrap();
    let clock = Arc::new(ManualClock::new(WRITTEN_AT));
    let seen = backend.value_state(last_seen(&clock)).unwrap();
    for key in 0..KEYS {
        backend.set_key(&key).unwrap();
        clock.set(WRITTEN_AT + if key % 2 == 0 { 0 } else { 5_000 });
        seen.update(backend, &key).unwrap();
        timers
            .register_event_time_timer(backend, &0, key as i64 * 10)
            .unwrap();
        timers
            .register_event_time_timer(backend, &1, -(key as i64))
            .unwrap();
    }
    checkpoint(backend, 1);
    for key in 0..KEYS {
        backend.set_key(&key).unwrap();
        if key % 3 == 0 {
            timers
                .delete_event_time_timer(backend, &1, -(key as i64))
                .unwrap();
        }
        if key % 4 == 0 {
            let ts = i64::MAX - key as i64;
            timers.register_event_time_timer(backend, &2, ts).unwrap();
        }
    }
    let fired = timers
        .advance_watermark(backend, -23, |_, _| Ok(()))
        .unwrap();
    assert_eq!(fired, 1);
    checkpoint(backend, CHECKPOINT);
}

fn write_fixture(name: &str, factory: &dyn StateBackendFactory) {
    let dir = dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Arc::new(ObjectStoreCheckpointStorage::local(&dir, "checkpoints").unwrap());
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let mut backend = factory
        .create(context(Arc::clone(&access), None, all(), Vec::new()))
        .unwrap();
    write_timers(&mut *backend, &mut |backend, id| {
        let handle = backend
            .snapshot(id, &SnapshotOptions::checkpoint(id), Arc::clone(&access))
            .unwrap()
            .run()
            .unwrap()
            .handle;
        let subsumed = store
            .add(
                CompletedCheckpoint::new("timers", id, id, CheckpointKind::Checkpoint)
                    .with_operator(OPERATOR, vec![handle]),
            )
            .unwrap();
        backend.notify_checkpoint_complete(id).unwrap();
        for old in subsumed {
            backend.notify_checkpoint_subsumed(old).unwrap();
        }
    });
    let savepoint_dir = dir.join("savepoint");
    std::fs::create_dir_all(&savepoint_dir).unwrap();
    let writer = SavepointWriter::in_storage(
        ObjectStoreCheckpointStorage::local_dir(savepoint_dir).unwrap(),
    );
    let options = SnapshotOptions {
        snapshot_type: SnapshotType::Savepoint(SavepointFormat::Canonical),
        timestamp_ms: 3,
    };
    let handle = backend
        .snapshot(3, &options, writer.storage())
        .unwrap()
        .run()
        .unwrap()
        .handle;
    writer
        .commit(
            CompletedCheckpoint::new("timers", 3, 3, CheckpointKind::Savepoint)
                .with_operator(OPERATOR, vec![handle]),
        )
        .unwrap();
    drop(backend);
    state_api::lifecycle::wait_for_detached_deletions(std::time::Duration::from_secs(10));
    store.collect_garbage().unwrap();
}

/// Restores `handles` at `parallelism` and fires every timer of every
/// instance; also checks that each instance fires only its key groups.
fn fire_restored(
    factory: &dyn StateBackendFactory,
    storage: Arc<dyn CheckpointStorageAccess>,
    restore_storage: Option<Arc<dyn CheckpointStorageAccess>>,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> state_api::Result<Vec<Fired>> {
    let mut all_fired = Vec::new();
    for index in 0..parallelism {
        let range = key_group_range_for_operator(MAX_PARALLELISM, parallelism, index)?;
        let mut backend = factory.create(context(
            Arc::clone(&storage),
            restore_storage.clone(),
            range,
            handles.to_vec(),
        ))?;
        // 12 s after the even keys were stamped, 7 s after the odd ones.
        let clock = Arc::new(ManualClock::new(WRITTEN_AT + 12_000));
        let seen = backend.value_state(last_seen(&clock))?;
        let mut timers = TimerService::<u32>::register(&mut *backend, "windows")?;
        timers.advance_watermark(&mut *backend, i64::MAX, |backend, timer| {
            let key = backend.current_key_as::<u64>()?;
            let expected = (key % 2 == 1).then_some(key);
            assert_eq!(seen.value(backend)?, expected, "key {key}: time to live");
            assert!(range.contains(backend.current_key_group().unwrap()));
            all_fired.push((timer.timestamp, key, timer.namespace));
            Ok(())
        })?;
    }
    Ok(all_fired)
}

fn assert_fires_expected(fired: Vec<Fired>, what: &str) {
    let set: BTreeSet<Fired> = fired.iter().copied().collect();
    assert_eq!(set.len(), fired.len(), "{what}: a timer fired twice");
    assert!(set == expected(), "{what}: fired other timers: {fired:?}");
}

#[test]
fn timer_fixtures_of_every_backend_restore_exactly() {
    let local = tempfile::tempdir().unwrap();
    if std::env::var_os("STATE_WRITE_TIMER_FIXTURES").is_some() {
        for (name, factory) in factories(local.path()) {
            write_fixture(name, &*factory);
        }
    }
    for (name, factory) in factories(local.path()) {
        let storage = Arc::new(
            ObjectStoreCheckpointStorage::local_dir(dir().join(name).join("checkpoints")).unwrap(),
        );
        let checkpoint = load_checkpoint(&storage, CHECKPOINT)
            .unwrap_or_else(|e| panic!("{name}: the checkpoint fixture does not load: {e}"));
        let handles = &checkpoint.operators[OPERATOR];
        for parallelism in [1, 2] {
            let fired = fire_restored(&*factory, storage.clone(), None, handles, parallelism)
                .unwrap_or_else(|e| panic!("{name} at {parallelism}: {e}"));
            assert_fires_expected(fired, &format!("{name} checkpoint at {parallelism}"));
        }
        let savepoint = Savepoint::open(&dir().join(name).join("savepoint").display().to_string())
            .unwrap_or_else(|e| panic!("{name}: the savepoint fixture does not open: {e}"));
        for (target, target_factory) in factories(local.path()) {
            let fired = fire_restored(
                &*target_factory,
                storage.clone(),
                Some(savepoint.storage()),
                savepoint.handles(OPERATOR),
                2,
            )
            .unwrap_or_else(|e| panic!("{name} savepoint into {target}: {e}"));
            assert_fires_expected(fired, &format!("{name} savepoint into {target}"));
        }
    }
}
