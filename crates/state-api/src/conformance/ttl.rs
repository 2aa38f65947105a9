//! State time-to-live: expiry per value, list element and map entry, the
//! update types and visibilities, folds, and what snapshots and restores
//! do with stamps (a restore never refreshes them; another time to live
//! applies; TTL turned on or off is an error naming the state).

use std::sync::Arc;
use std::time::Duration;

use super::Harness;
use super::fixtures::Average;
use crate::backend::KeyedStateBackend;
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::error::{Result, StateError};
use crate::key_group::KeyGroupRange;
use crate::state::KeyedStateBackendExt;
use crate::ttl::{ManualClock, StateTtlConfig, TtlUpdateType, TtlVisibility};

const MAX_PARALLELISM: u32 = 128;

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A TTL of 10 s on `clock`.
fn ten_seconds(clock: &Arc<ManualClock>) -> StateTtlConfig {
    StateTtlConfig::new(secs(10)).with_clock(Arc::clone(clock) as _)
}

fn run(h: &Harness<'_>, check: &str, body: impl FnOnce(&mut dyn KeyedStateBackend) -> Result<()>) {
    let mut backend = h.backend(MAX_PARALLELISM, all());
    if let Err(e) = body(&mut *backend) {
        panic!("{}: {check}: unexpected error: {e}", h.factory.name());
    }
}

/// Values, list elements and map entries expire `ttl` after their last
/// write; defaults come back; folds start over after expiry.
pub fn ttl_expiry_per_value_element_and_entry(h: &Harness<'_>) {
    let name = h.factory.name();
    run(h, "ttl_expiry_per_value_element_and_entry", |b| {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let ttl = ten_seconds(&clock);
        let value = b.value_state(
            ValueStateDescriptor::<u64>::new("v")
                .with_default(42)
                .with_ttl(ttl.clone()),
        )?;
        let list = b.list_state(ListStateDescriptor::<u32>::new("l").with_ttl(ttl.clone()))?;
        let map = b.map_state(MapStateDescriptor::<u8, String>::new("m").with_ttl(ttl.clone()))?;
        let sum = b.reducing_state(
            ReducingStateDescriptor::<u64>::new("s", |a, c| a + c).with_ttl(ttl.clone()),
        )?;
        let average = b.aggregating_state(
            AggregatingStateDescriptor::<Average>::new("a", Average).with_ttl(ttl.clone()),
        )?;
        b.set_key(&1u64)?;
        value.update(b, &7)?;
        list.add(b, &1)?;
        map.put(b, &1, &"one".into())?;
        sum.add(b, &5)?;
        average.add(b, &4)?;
        clock.advance(secs(5));
        list.add_all(b, &[2, 3])?;
        map.put(b, &2, &"two".into())?;
        sum.add(b, &1)?;
        clock.advance(Duration::from_millis(4_999));
        assert_eq!(
            value.value(b)?,
            Some(7),
            "{name}: alive just before the ttl"
        );
        assert_eq!(list.get(b)?, vec![1, 2, 3]);
        clock.advance(Duration::from_millis(1));
        assert_eq!(value.value(b)?, Some(42), "{name}: expired: the default");
        assert_eq!(list.get(b)?, vec![2, 3], "{name}: per element");
        assert_eq!(map.get(b, &1)?, None, "{name}: per entry");
        assert!(!map.contains(b, &1)?);
        assert_eq!(map.entries(b)?, vec![(2, "two".to_string())]);
        assert_eq!(
            sum.get(b)?,
            Some(6),
            "{name}: the fold's stamp is its last add"
        );
        assert_eq!(average.get(b)?, None, "{name}: expired accumulator");
        average.add(b, &10)?;
        assert_eq!(average.get(b)?, Some(10.0), "{name}: a fold starts over");
        clock.advance(secs(5));
        assert!(list.get(b)?.is_empty());
        assert!(map.is_empty(b)?);
        assert_eq!(sum.get(b)?, None);
        // Expired entries were removed by the reads: nothing is listed.
        for id in [value.id(), list.id(), map.id(), sum.id()] {
            assert!(
                b.keys::<u64, _>(id, &crate::VoidNamespace)?.is_empty(),
                "{name}: a read expired entry is removed"
            );
        }
        // Merged windows keep each element's stamp.
        let windows = b.list_state(ListStateDescriptor::<u32, u8>::new("w").with_ttl(ttl))?;
        let mut windows = windows;
        windows.set_namespace(&1)?;
        windows.add(b, &1)?;
        clock.advance(secs(6));
        windows.set_namespace(&2)?;
        windows.add(b, &2)?;
        windows.merge_namespaces(b, &3, &[1, 2])?;
        windows.set_namespace(&3)?;
        clock.advance(secs(5));
        assert_eq!(
            windows.get(b)?,
            vec![2],
            "{name}: merged elements keep stamps"
        );
        Ok(())
    });
}

/// `OnReadAndWrite` refreshes on reads; `ReturnExpiredIfNotCleanedUp`
/// returns an expired value once.
pub fn ttl_update_types_and_visibility(h: &Harness<'_>) {
    let name = h.factory.name();
    run(h, "ttl_update_types_and_visibility", |b| {
        let clock = Arc::new(ManualClock::new(0));
        let on_read = ten_seconds(&clock).with_update_type(TtlUpdateType::OnReadAndWrite);
        let visible =
            ten_seconds(&clock).with_visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
        let touched =
            b.value_state(ValueStateDescriptor::<u64>::new("r").with_ttl(on_read.clone()))?;
        let entries =
            b.map_state(MapStateDescriptor::<u8, u8>::new("rm").with_ttl(on_read.clone()))?;
        let elements = b.list_state(ListStateDescriptor::<u8>::new("rl").with_ttl(on_read))?;
        let shown = b.value_state(ValueStateDescriptor::<u64>::new("x").with_ttl(visible))?;
        b.set_key(&"k")?;
        touched.update(b, &1)?;
        entries.put(b, &1, &1)?;
        elements.add(b, &1)?;
        shown.update(b, &2)?;
        for _ in 0..3 {
            clock.advance(secs(8));
            assert_eq!(touched.value(b)?, Some(1), "{name}: each read refreshes");
            assert_eq!(entries.get(b, &1)?, Some(1));
            assert_eq!(elements.get(b)?, vec![1]);
        }
        clock.advance(secs(10));
        assert_eq!(touched.value(b)?, None);
        assert_eq!(
            shown.value(b)?,
            Some(2),
            "{name}: expired but not cleaned up: shown"
        );
        assert_eq!(shown.value(b)?, None, "{name}: and then gone");
        Ok(())
    });
}

/// Stamps are part of snapshots: a restore does not refresh them; another
/// time to live applies after a restore; turning TTL on or off is an error
/// that names the state.
pub fn ttl_survives_restore(h: &Harness<'_>) {
    let name = h.factory.name();
    let clock = Arc::new(ManualClock::new(0));
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let b = &mut *backend;
    let state = b
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ten_seconds(&clock)))
        .expect("registers");
    for key in 0..100u64 {
        b.set_key(&key).expect("key");
        state.update(b, &key).expect("writes");
    }
    let handle = h.checkpoint(b, 1);

    clock.advance(secs(9));
    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle.clone()])
        .unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
    let r = &mut *restored;
    let state = r
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ten_seconds(&clock)))
        .expect("registers");
    r.set_key(&3u64).expect("key");
    assert_eq!(state.value(r).expect("reads"), Some(3));
    clock.advance(secs(1));
    r.set_key(&4u64).expect("key");
    assert_eq!(
        state.value(r).expect("reads"),
        None,
        "{name}: the restore must not refresh the stamp"
    );

    // A longer time to live applies to the restored values.
    let longer = StateTtlConfig::new(secs(60)).with_clock(Arc::clone(&clock) as _);
    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle.clone()])
        .expect("restores");
    let r = &mut *restored;
    let state = r
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(longer))
        .unwrap_or_else(|e| panic!("{name}: another time to live must work: {e}"));
    r.set_key(&5u64).expect("key");
    assert_eq!(state.value(r).expect("reads"), Some(5));

    // Off where it was on: an error naming the state.
    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle])
        .expect("restores");
    let err = restored
        .value_state(ValueStateDescriptor::<u64>::new("v"))
        .err();
    assert!(
        matches!(&err, Some(StateError::StateTtlMismatch { state, .. }) if state == "v"),
        "{name}: turning TTL off must fail naming the state, got {err:?}"
    );

    // On where it was off.
    let mut plain = h.backend(MAX_PARALLELISM, all());
    let p = &mut *plain;
    let state = p
        .value_state(ValueStateDescriptor::<u64>::new("p"))
        .expect("registers");
    p.set_key(&1u64).expect("key");
    state.update(p, &1).expect("writes");
    let handle = h.checkpoint(p, 2);
    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle])
        .expect("restores");
    let err = restored
        .value_state(ValueStateDescriptor::<u64>::new("p").with_ttl(ten_seconds(&clock)))
        .err();
    assert!(
        matches!(&err, Some(StateError::StateTtlMismatch { state, .. }) if state == "p"),
        "{name}: turning TTL on must fail naming the state, got {err:?}"
    );
}

/// Savepoints (full snapshots on every backend) leave expired entries out:
/// restored, the expired half of the keys is not even listed.
pub fn ttl_savepoints_leave_expired_entries_out(h: &Harness<'_>) {
    let name = h.factory.name();
    let clock = Arc::new(ManualClock::new(0));
    let ttl = ten_seconds(&clock).with_cleanup(crate::ttl::TtlCleanup {
        incremental_entries: 0,
        ..crate::ttl::TtlCleanup::default()
    });
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let b = &mut *backend;
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .expect("registers");
    let map = b
        .map_state(MapStateDescriptor::<u8, u64>::new("m").with_ttl(ttl.clone()))
        .expect("registers");
    for key in 0..200u64 {
        clock.set(if key < 100 { 0 } else { 5_000 });
        b.set_key(&key).expect("key");
        value.update(b, &key).expect("writes");
        map.put(b, &1, &key).expect("writes");
    }
    clock.set(12_000);
    let options = crate::snapshot::SnapshotOptions {
        snapshot_type: crate::snapshot::SnapshotType::Savepoint(
            crate::snapshot::SavepointFormat::Canonical,
        ),
        timestamp_ms: 1,
    };
    let handle = b
        .snapshot(1, &options, Arc::clone(&h.storage))
        .and_then(|task| task.run())
        .unwrap_or_else(|e| panic!("{name}: savepoint failed: {e}"))
        .handle;
    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle])
        .unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
    let r = &mut *restored;
    let value = r
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .expect("registers");
    let map = r
        .map_state(MapStateDescriptor::<u8, u64>::new("m").with_ttl(ttl))
        .expect("registers");
    for id in [value.id(), map.id()] {
        let listed = r
            .keys::<u64, _>(id, &crate::VoidNamespace)
            .expect("iterates");
        assert!(
            listed.len() == 100 && listed.iter().all(|k| *k >= 100),
            "{name}: the savepoint holds expired entries ({} keys listed)",
            listed.len()
        );
    }
}
