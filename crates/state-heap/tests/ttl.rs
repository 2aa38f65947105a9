//! Time-to-live clean-up on the heap: expired entries nobody reads go, a
//! few buckets per access to their state (or per record), and snapshots
//! leave them out.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use state_api::ttl::{ManualClock, StateTtlConfig, TtlCleanup};
use state_api::{
    BackendContext, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt, ListStateDescriptor,
    MapStateDescriptor, SnapshotOptions, StateBackendFactory, ValueStateDescriptor,
};
use state_heap::{HeapBackendFactory, HeapKeyedStateBackend};
use state_storage::ObjectStoreCheckpointStorage;

const KEYS: u64 = 5_000;

fn backend() -> HeapKeyedStateBackend {
    HeapKeyedStateBackend::new("ttl", 128, KeyGroupRange::all(128).unwrap()).unwrap()
}

fn ttl(clock: &Arc<ManualClock>, cleanup: TtlCleanup) -> StateTtlConfig {
    StateTtlConfig::new(Duration::from_secs(10))
        .with_clock(Arc::clone(clock) as _)
        .with_cleanup(cleanup)
}

/// Half the keys are written at 0 s and never touched again, the other
/// half at 8 s; at 12 s the first half is expired.
fn half_expired(b: &mut HeapKeyedStateBackend, clock: &Arc<ManualClock>, cleanup: TtlCleanup) {
    let config = ttl(clock, cleanup);
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(config.clone()))
        .unwrap();
    let list = b
        .list_state(ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))
        .unwrap();
    let map = b
        .map_state(MapStateDescriptor::<u8, u64>::new("m").with_ttl(config))
        .unwrap();
    for (from, at) in [(0, 0), (KEYS / 2, 8_000)] {
        clock.set(at);
        for key in from..from + KEYS / 2 {
            b.set_key(&key).unwrap();
            value.update(b, &key).unwrap();
            list.add(b, &key).unwrap();
            map.put(b, &1, &key).unwrap();
        }
    }
    clock.set(12_000);
}

#[test]
fn accesses_to_a_state_clean_up_its_expired_entries() {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend();
    half_expired(&mut b, &clock, TtlCleanup::default());
    let before = b.state_bytes();
    assert_eq!(b.num_entries(), 3 * KEYS as usize);
    // Reads of one live key: every read sweeps a few buckets of its state.
    let value = b
        .value_state(
            ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(&clock, TtlCleanup::default())),
        )
        .unwrap();
    b.set_key(&(KEYS - 1)).unwrap();
    let mut reads = 0;
    while b.num_entries() > 2 * KEYS as usize + KEYS as usize / 2 && reads < 100_000 {
        assert_eq!(value.value(&mut b).unwrap(), Some(KEYS - 1));
        reads += 1;
    }
    assert_eq!(
        b.num_entries(),
        2 * KEYS as usize + KEYS as usize / 2,
        "the expired values of the read state are gone after {reads} reads"
    );
    assert!(b.state_bytes() < before);
    println!("{reads} reads cleaned up {} expired values", KEYS / 2);
}

#[test]
fn per_record_clean_up_frees_every_state_without_reads() {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend();
    let cleanup = TtlCleanup {
        incremental_on_every_record: true,
        ..TtlCleanup::default()
    };
    half_expired(&mut b, &clock, cleanup);
    let before = b.state_bytes();
    // Records of keys without any state: only the per-record clean-up runs.
    let mut records = 0u64;
    while b.num_entries() > 3 * KEYS as usize / 2 && records < 200_000 {
        b.set_key(&(1_000_000 + records)).unwrap();
        records += 1;
    }
    assert_eq!(b.num_entries(), 3 * KEYS as usize / 2);
    let after = b.state_bytes();
    assert!(
        after * 2 <= before + before / 20,
        "about half the bytes are gone: {before} -> {after}"
    );
    println!(
        "{records} records freed {} of {before} bytes",
        before - after
    );
}

#[test]
fn snapshots_leave_expired_entries_out() {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend();
    let cleanup = TtlCleanup {
        incremental_entries: 0,
        ..TtlCleanup::default()
    };
    half_expired(&mut b, &clock, cleanup);
    assert_eq!(
        b.num_entries(),
        3 * KEYS as usize,
        "no clean-up without access"
    );
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("ttl").unwrap());
    let handle = b
        .snapshot(1, &SnapshotOptions::checkpoint(1), storage.clone())
        .unwrap()
        .run()
        .unwrap()
        .handle;
    let restored = HeapBackendFactory::new()
        .create(BackendContext {
            operator: "ttl".into(),
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128).unwrap(),
            restore: vec![handle],
            storage,
            restore_storage: None,
            skip_restored_states: Vec::new(),
        })
        .unwrap();
    let mut keys = 0;
    let mut restored = restored;
    let value = restored
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(&clock, cleanup)))
        .unwrap();
    restored
        .for_each_key_and_namespace(value.id(), &mut |_, _| {
            keys += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(keys, KEYS / 2, "only the live values were written");
}

#[test]
fn accesses_to_other_states_do_not_take_the_clean_up_away() {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend();
    half_expired(&mut b, &clock, TtlCleanup::default());
    let plain: Vec<_> = (0..7)
        .map(|i| {
            b.value_state(ValueStateDescriptor::<u64>::new(format!("plain-{i}")))
                .unwrap()
        })
        .collect();
    let value = b
        .value_state(
            ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(&clock, TtlCleanup::default())),
        )
        .unwrap();
    b.set_key(&(KEYS - 1)).unwrap();
    // Each read of the TTL state comes with seven reads of plain states.
    let mut reads = 0;
    while b.num_entries() > 2 * KEYS as usize + KEYS as usize / 2 && reads < 20_000 {
        for state in &plain {
            state.value(&mut b).unwrap();
        }
        value.value(&mut b).unwrap();
        reads += 1;
    }
    assert_eq!(
        b.num_entries(),
        2 * KEYS as usize + KEYS as usize / 2,
        "the TTL state is swept at its own rate ({reads} reads)"
    );
}
