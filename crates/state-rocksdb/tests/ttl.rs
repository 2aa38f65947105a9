//! Time-to-live clean-up on RocksDB: the compaction filter drops expired
//! values, the periodic compaction reaches files no other compaction
//! touches, and full snapshots leave expired entries out.

#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::ttl::{ManualClock, StateTtlConfig, TtlCleanup};
use state_api::{
    BackendContext, KeyedStateBackend, KeyedStateBackendExt, ListStateDescriptor,
    MapStateDescriptor, SnapshotType, StateId, ValueStateDescriptor,
};
use state_rocksdb::RocksDbKeyedStateBackend;

use common::{MAX_P, all, create, factory, snapshot, storage};

const KEYS: u64 = 2_000;

fn entries(backend: &mut dyn KeyedStateBackend, id: StateId) -> usize {
    let mut count = 0;
    backend
        .for_each_key_and_namespace(id, &mut |_, _| {
            count += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    count
}

/// Registers a value, a list and a map state with `ttl` and writes every
/// key: half at `clock`'s now, half 5 s later.
fn half_and_half(
    backend: &mut dyn KeyedStateBackend,
    clock: &dyn Fn(i64),
    ttl: &StateTtlConfig,
) -> [StateId; 3] {
    let value = backend
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .unwrap();
    let list = backend
        .list_state(ListStateDescriptor::<u64>::new("l").with_ttl(ttl.clone()))
        .unwrap();
    let map = backend
        .map_state(MapStateDescriptor::<u8, u64>::new("m").with_ttl(ttl.clone()))
        .unwrap();
    for (from, at) in [(0, 0), (KEYS / 2, 5_000)] {
        clock(at);
        for key in from..from + KEYS / 2 {
            backend.set_key(&key).unwrap();
            value.update(backend, &key).unwrap();
            list.update(backend, &[key, key]).unwrap();
            map.put(backend, &1, &key).unwrap();
        }
    }
    [value.id(), list.id(), map.id()]
}

#[test]
fn compactions_drop_expired_values_and_full_snapshots_leave_them_out() {
    let storage = storage();
    let dir = tempfile::tempdir().unwrap();
    let config = state_rocksdb::RocksDbConfig::new(dir.path());
    let clock = Arc::new(ManualClock::new(0));
    let ttl = StateTtlConfig::new(Duration::from_secs(10)).with_clock(Arc::clone(&clock) as _);
    let mut backend = RocksDbKeyedStateBackend::from_context(
        BackendContext {
            operator: "ttl".into(),
            max_parallelism: MAX_P,
            key_group_range: all(),
            restore: Vec::new(),
            storage: storage.clone(),
            restore_storage: None,
            skip_restored_states: Vec::new(),
        },
        &config,
    )
    .unwrap();
    let ids = half_and_half(&mut backend, &|at| clock.set(at), &ttl);
    clock.set(12_000);

    // A canonical savepoint (a full snapshot) leaves the expired half out.
    let savepoint = SnapshotType::Savepoint(state_api::snapshot::SavepointFormat::Canonical);
    let handle = snapshot(&mut backend, &storage, 1, savepoint).handle;
    let mut restored = create(&common::factory(true).1, &storage, all(), vec![handle]).unwrap();
    let restored_ids = half_and_half_ids(&mut *restored, &ttl);
    for id in restored_ids {
        assert_eq!(entries(&mut *restored, id), KEYS as usize / 2);
    }

    // Compaction: the filter drops what expired (the checkpoint flushed
    // the memtables into files).
    for id in ids {
        assert_eq!(
            entries(&mut backend, id),
            KEYS as usize,
            "nothing read, nothing gone"
        );
    }
    backend.compact().unwrap();
    for id in ids {
        assert_eq!(
            entries(&mut backend, id),
            KEYS as usize / 2,
            "the compaction filter dropped the expired half"
        );
    }
}

fn half_and_half_ids(backend: &mut dyn KeyedStateBackend, ttl: &StateTtlConfig) -> [StateId; 3] {
    [
        backend
            .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
            .unwrap()
            .id(),
        backend
            .list_state(ListStateDescriptor::<u64>::new("l").with_ttl(ttl.clone()))
            .unwrap()
            .id(),
        backend
            .map_state(MapStateDescriptor::<u8, u64>::new("m").with_ttl(ttl.clone()))
            .unwrap()
            .id(),
    ]
}

/// No compaction would touch the files of the untouched keys: the periodic
/// TTL compaction does, once they are older than the time to live.
#[test]
fn files_older_than_the_ttl_are_compacted_without_other_compactions() {
    let storage = storage();
    let (_dir, rocksdb) = factory(true);
    let ttl = StateTtlConfig::new(Duration::from_millis(600)).with_cleanup(TtlCleanup {
        periodic_compaction: Some(Duration::from_millis(600)),
        ..TtlCleanup::default()
    });
    let mut backend = create(&rocksdb, &storage, all(), Vec::new()).unwrap();
    let value = backend
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .unwrap();
    for key in 0..KEYS {
        backend.set_key(&key).unwrap();
        value.update(&mut *backend, &key).unwrap();
    }
    // The checkpoint flushes them into a file.
    common::checkpoint(&mut *backend, &storage, 1);
    assert_eq!(entries(&mut *backend, value.id()), KEYS as usize);
    let started = Instant::now();
    // Records of other keys (no state written): the backend looks at the
    // files every few thousand records.
    let mut record = 0u64;
    while entries(&mut *backend, value.id()) > 0 && started.elapsed() < Duration::from_secs(20) {
        for _ in 0..5_000 {
            backend.set_key(&(1_000_000 + record)).unwrap();
            record += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        entries(&mut *backend, value.id()),
        0,
        "the expired values were compacted away"
    );
    println!(
        "expired values of a 600 ms time to live gone after {:?}",
        started.elapsed()
    );
}
