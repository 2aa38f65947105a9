//! State time-to-live: what it costs and whether expired data really goes.
//!
//! * Overhead: `ValueState` get and update of 200k `u64` keys (random
//!   order) with a time to live of one hour beside the same state without
//!   one, on the heap and on RocksDB, in the same run: 15 alternating rounds
//!   of 200k operations each; medians in ns/op and the ratio TTL / plain.
//! * Clean-up: a value state with a time to live of `BENCH_TTL_SECS`
//!   (default 10) and 100k keys; from then on only half of the keys are
//!   updated (as fast as they go, a checkpoint every second as a job takes
//!   them). Every second it prints how much of the untouched half is still
//!   physically there: entries and bytes in the heap's tables (a few buckets
//!   are swept per access), entries and SST bytes in RocksDB (compaction
//!   filter, periodic compaction of old files). Target: gone within twice
//!   the time to live.
//!
//! `cargo bench -p state-benches --bench ttl` (about a minute at the
//! default time to live).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::ttl::StateTtlConfig;
use state_api::{
    BackendContext, KeyedStateBackend, KeyedStateBackendExt, SnapshotOptions, StateBackendFactory,
    StateId, ValueState, ValueStateDescriptor,
};
use state_benches::backends::fresh_context;
use state_benches::shuffled_keys;
use state_heap::{HeapBackendFactory, HeapKeyedStateBackend};
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbKeyedStateBackend};
use state_storage::ObjectStoreCheckpointStorage;

const OVERHEAD_KEYS: usize = 200_000;
const ROUNDS: usize = 15;
const CLEANUP_KEYS: u64 = 100_000;

fn context(storage: &Arc<ObjectStoreCheckpointStorage>) -> BackendContext {
    fresh_context("ttl-bench", storage.clone())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// ns per operation of `op` over every key.
fn round(keys: &[u64], mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for &key in keys {
        op(key);
    }
    start.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn overhead(name: &str, backend: &mut dyn KeyedStateBackend) {
    let keys = shuffled_keys(OVERHEAD_KEYS);
    let plain = backend
        .value_state(ValueStateDescriptor::<u64>::new("plain"))
        .expect("registers");
    let mut config = StateTtlConfig::new(Duration::from_secs(3600));
    // Experiments: BENCH_TTL_SWEEP=<entries per access>, BENCH_TTL_CLOCK=manual.
    if let Some(entries) = std::env::var("BENCH_TTL_SWEEP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.cleanup.incremental_entries = entries;
    }
    if std::env::var("BENCH_TTL_CLOCK").as_deref() == Ok("manual") {
        config = config.with_clock(Arc::new(state_api::ttl::ManualClock::new(0)));
    }
    let ttl = backend
        .value_state(ValueStateDescriptor::<u64>::new("ttl").with_ttl(config))
        .expect("registers");
    for &key in &keys {
        backend.set_key(&key).expect("key");
        plain.update(backend, &key).expect("writes");
        ttl.update(backend, &key).expect("writes");
    }
    let states: [(&str, &ValueState<u64>); 2] = [("plain", &plain), ("ttl", &ttl)];
    let mut get = [Vec::new(), Vec::new()];
    let mut update = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, (_, state)) in states.iter().enumerate() {
            get[i].push(round(&keys, |key| {
                backend.set_key(&key).expect("key");
                std::hint::black_box(state.value(backend).expect("reads"));
            }));
            update[i].push(round(&keys, |key| {
                backend.set_key(&key).expect("key");
                state.update(backend, &(key + 1)).expect("writes");
            }));
        }
    }
    for (what, times) in [("get", get), ("update", update)] {
        let [plain, ttl] = times.map(median);
        println!(
            "{name:8} value {what:6}: plain {plain:7.1} ns/op, with TTL {ttl:7.1} ns/op, ratio {:.2}",
            ttl / plain
        );
    }
}

fn entries(backend: &mut dyn KeyedStateBackend, id: StateId, below: u64) -> u64 {
    let mut count = 0;
    backend
        .for_each_key_and_namespace(id, &mut |key, _| {
            let key: u64 = state_api::codec::decode(key)?;
            if key < below {
                count += 1;
            }
            Ok(ControlFlow::Continue(()))
        })
        .expect("iterates");
    count
}

/// Writes `CLEANUP_KEYS` keys, then updates only the upper half for twice
/// the time to live, printing what is left of the lower half each second.
fn cleanup<B: KeyedStateBackend>(
    name: &str,
    backend: &mut B,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    ttl: Duration,
    bytes: impl Fn(&B) -> u64,
) {
    let state = backend
        .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(StateTtlConfig::new(ttl)))
        .expect("registers");
    for key in 0..CLEANUP_KEYS {
        backend.set_key(&key).expect("key");
        state.update(backend, &key).expect("writes");
    }
    let half = CLEANUP_KEYS / 2;
    let started = Instant::now();
    let mut checkpoint = 0;
    let mut next_report = Duration::ZERO;
    let mut key = half;
    let mut gone_at = None;
    println!("{name}: time to live {ttl:?}, {half} of {CLEANUP_KEYS} keys untouched from 0 s");
    while started.elapsed() <= 2 * ttl + Duration::from_secs(1) {
        for _ in 0..2_000 {
            backend.set_key(&key).expect("key");
            state.update(backend, &key).expect("writes");
            key = if key + 1 == CLEANUP_KEYS {
                half
            } else {
                key + 1
            };
        }
        if started.elapsed() >= next_report {
            checkpoint += 1;
            let task = backend
                .snapshot(
                    checkpoint,
                    &SnapshotOptions::checkpoint(checkpoint),
                    storage.clone(),
                )
                .expect("snapshot");
            task.run().expect("upload");
            backend
                .notify_checkpoint_complete(checkpoint)
                .expect("notice");
            let left = entries(&mut *backend, state.id(), half);
            println!(
                "{name}: {:5.1} s: {left:6} untouched entries left, {:9} bytes of state",
                started.elapsed().as_secs_f64(),
                bytes(backend)
            );
            if left == 0 && gone_at.is_none() {
                gone_at = Some(started.elapsed());
            }
            next_report += Duration::from_secs(1);
        }
    }
    match gone_at {
        Some(at) => println!(
            "{name}: untouched entries physically gone after {:.1} s = {:.2} x the time to live",
            at.as_secs_f64(),
            at.as_secs_f64() / ttl.as_secs_f64()
        ),
        None => println!("{name}: untouched entries NOT gone within 2 x the time to live"),
    }
}

fn main() {
    // Criterion-style arguments (`--bench`) are ignored.
    let overhead_only = std::env::var_os("BENCH_TTL_OVERHEAD_ONLY").is_some();
    let ttl = Duration::from_secs(
        std::env::var("BENCH_TTL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("ttl-bench").expect("storage"));
    let dir = tempfile::tempdir().expect("temp dir");
    let rocksdb = RocksDbBackendFactory::new(RocksDbConfig::new(dir.path()));

    let mut heap = HeapBackendFactory::new()
        .create(context(&storage))
        .expect("heap");
    overhead("heap", &mut *heap);
    let mut rocks = rocksdb.create(context(&storage)).expect("rocksdb");
    overhead("rocksdb", &mut *rocks);
    drop((heap, rocks));
    if overhead_only {
        return;
    }

    let mut heap = HeapKeyedStateBackend::from_context(context(&storage)).expect("heap");
    cleanup("heap", &mut heap, &storage, ttl, |b| b.state_bytes() as u64);
    let mut rocks =
        RocksDbKeyedStateBackend::from_context(context(&storage), &RocksDbConfig::new(dir.path()))
            .expect("rocksdb");
    cleanup("rocksdb", &mut rocks, &storage, ttl, |b| {
        b.property_sum("rocksdb.total-sst-files-size").unwrap_or(0)
    });
}
