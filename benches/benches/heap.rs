//! The heap backend's hot path beside plain hash maps, and its synchronous
//! snapshot phase.
//!
//! * `value_state_500k`: 500k `u64` keys with `u64` values (void namespace,
//!   max parallelism 128, the full key-group range; `BENCH_KEYS=<n>` changes
//!   the count). Each iteration takes the next key of one pre-shuffled key
//!   array (a random access pattern, the same for every contestant) and does
//!   one operation:
//!   - `heap/get`: `set_key` + `ValueState::value`,
//!   - `heap/update`: `set_key` + `ValueState::update`,
//!   - `heap_raw/get`, `heap_raw/put`: the same through the raw contract
//!     (`set_current_key` + `get` / `put`) with keys varint-encoded into a
//!     reused buffer: the backend's own share of the typed operations,
//!   - `std/get`, `std/insert`: `std::collections::HashMap<u64, u64>` with
//!     its default (SipHash) hasher, `im/get`, `im/insert`:
//!     `im::HashMap<u64, u64>` (default hasher), and `std_fx/*`: the std map
//!     with FxHash, the hash the heap backend's tables use.
//! * `snapshot_sync`: `backend.snapshot(..)` returning (the task is not run)
//!   at 100k and 1M keys, back to back (the tables' headers stay cached);
//!   the median of 20 phases with the CPU caches flushed first is printed
//!   after each size.
//! * `first_write_after_snapshot_1000k`: the copy-on-write stall. With 1M
//!   keys, `after_snapshot` times one update in every key group (128
//!   updates, each the first write to its key group) right after
//!   `snapshot(..)` while the snapshot task is still alive, so every update
//!   copies whatever unit of the table a snapshot shares; `no_snapshot` times
//!   the same 128 updates with no snapshot alive (the plain update cost).
//!   The snapshot is taken and dropped outside the timing. Afterwards the
//!   median and maximum of single first writes are printed.

use state_benches::shuffled_keys;
use std::collections::HashMap;
use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use state_api::codec::write_varint;
use state_api::{
    CheckpointOutputStream, CheckpointStorageAccess, FileHandle, KeyGroupRange, KeyedStateBackend,
    KeyedStateBackendExt, SnapshotOptions, StateError, StateScope, ValueState,
    ValueStateDescriptor,
};
use state_heap::HeapKeyedStateBackend;

const MAX_PARALLELISM: u32 = 128;
const OPS_KEYS: usize = 500_000;
const SNAPSHOT_KEYS: [usize; 2] = [100_000, 1_000_000];

/// Times `iters` operations, each on the next key of `keys` (cycling).
fn timed(keys: &[u64], iters: u64, mut op: impl FnMut(u64)) -> Duration {
    let mut next = 0;
    let start = Instant::now();
    for _ in 0..iters {
        op(keys[next]);
        next += 1;
        if next == keys.len() {
            next = 0;
        }
    }
    start.elapsed()
}

fn heap_backend(keys: &[u64]) -> (HeapKeyedStateBackend, ValueState<u64>) {
    let range = KeyGroupRange::all(MAX_PARALLELISM).expect("valid max parallelism");
    let mut backend =
        HeapKeyedStateBackend::new("bench", MAX_PARALLELISM, range).expect("valid backend");
    let state = backend
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .expect("registers");
    for &key in keys {
        backend.set_key(&key).expect("key in range");
        state.update(&mut backend, &key).expect("update");
    }
    (backend, state)
}

/// Resident memory of this process in bytes (Linux), for bytes-per-entry
/// figures; `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn value_state_ops(c: &mut Criterion) {
    let n = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(OPS_KEYS);
    let keys = shuffled_keys(n);
    let mut group = c.benchmark_group(format!("value_state_{}k", n / 1000));

    let before = resident_bytes();
    let (mut backend, state) = heap_backend(&keys);
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        println!(
            "heap backend: ~{} bytes resident per entry ({} entries)",
            after.saturating_sub(before) / n as u64,
            backend.num_entries()
        );
    }
    group.bench_function("heap/get", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                backend.set_key(&key).expect("key in range");
                black_box(state.value(&mut backend).expect("get"));
            })
        })
    });
    // The backend alone: keys varint-encoded into a reused buffer (what
    // postcard writes for a u64), bypassing the typed layer's encoding.
    let id = state.id();
    let mut buf: Vec<u8> = Vec::with_capacity(16);
    group.bench_function("heap_raw/get", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                buf.clear();
                write_varint(&mut buf, key);
                backend.set_current_key(&buf).expect("key in range");
                black_box(backend.get(id, &[]).expect("get"));
            })
        })
    });
    group.bench_function("heap_raw/put", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                buf.clear();
                write_varint(&mut buf, key);
                backend.set_current_key(&buf).expect("key in range");
                backend.put(id, &[], &buf).expect("put");
            })
        })
    });
    group.bench_function("heap/update", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                backend.set_key(&key).expect("key in range");
                state.update(&mut backend, &(key ^ 1)).expect("update");
            })
        })
    });
    drop(backend);

    let mut std_map: HashMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    group.bench_function("std/get", |b| {
        b.iter_custom(|iters| timed(&keys, iters, |key| _ = black_box(std_map.get(&key))))
    });
    group.bench_function("std/insert", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                _ = black_box(std_map.insert(key, key ^ 1))
            })
        })
    });
    drop(std_map);

    let mut im_map: im::HashMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    group.bench_function("im/get", |b| {
        b.iter_custom(|iters| timed(&keys, iters, |key| _ = black_box(im_map.get(&key))))
    });
    group.bench_function("im/insert", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                _ = black_box(im_map.insert(key, key ^ 1))
            })
        })
    });
    drop(im_map);

    let mut fx_map: rustc_hash::FxHashMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    group.bench_function("std_fx/get", |b| {
        b.iter_custom(|iters| timed(&keys, iters, |key| _ = black_box(fx_map.get(&key))))
    });
    group.bench_function("std_fx/insert", |b| {
        b.iter_custom(|iters| {
            timed(&keys, iters, |key| {
                _ = black_box(fx_map.insert(key, key ^ 1))
            })
        })
    });
    group.finish();
}

/// Storage the synchronous phase must never touch: every call fails. The
/// benchmark drops the snapshot tasks without running them.
struct UnusedStorage;

fn unused<T>() -> state_api::Result<T> {
    Err(StateError::NotSupported {
        operation: "storage access in the synchronous snapshot phase",
        backend: "heap",
    })
}

impl CheckpointStorageAccess for UnusedStorage {
    fn create_output(
        &self,
        _: u64,
        _: StateScope,
        _: &str,
    ) -> state_api::Result<Box<dyn CheckpointOutputStream>> {
        unused()
    }

    fn read(&self, _: &FileHandle) -> state_api::Result<bytes::Bytes> {
        unused()
    }

    fn read_range(&self, _: &FileHandle, _: Range<u64>) -> state_api::Result<bytes::Bytes> {
        unused()
    }

    fn delete(&self, _: &FileHandle) -> state_api::Result<()> {
        unused()
    }

    fn location(&self) -> String {
        "unused://".into()
    }
}

fn snapshot_sync_phase(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_sync");
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(UnusedStorage);
    let options = SnapshotOptions::checkpoint(0);
    for n in SNAPSHOT_KEYS {
        let keys = shuffled_keys(n);
        let (mut backend, _) = heap_backend(&keys);
        let mut checkpoint_id = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // The task is dropped outside the timing: only the phase that
            // blocks the task thread is measured.
            b.iter_with_large_drop(|| {
                checkpoint_id += 1;
                backend
                    .snapshot(checkpoint_id, &options, Arc::clone(&storage))
                    .expect("synchronous phase")
            })
        });
        cold_snapshot_sync(&mut backend, &storage, &options, n);
    }
    group.finish();
}

/// Prints the synchronous phase with the backend's tables out of the CPU
/// caches (as after a stretch of record processing), which the criterion
/// loop above, snapshotting back to back, never sees.
fn cold_snapshot_sync(
    backend: &mut HeapKeyedStateBackend,
    storage: &Arc<dyn CheckpointStorageAccess>,
    options: &SnapshotOptions,
    n: usize,
) {
    let mut evict = vec![0u8; 64 << 20];
    let mut times = Vec::new();
    for round in 0..20 {
        for byte in evict.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        black_box(&evict);
        let start = Instant::now();
        let snapshot = backend
            .snapshot(1_000_000 + round, options, Arc::clone(storage))
            .expect("synchronous phase");
        times.push(start.elapsed());
        drop(snapshot);
    }
    times.sort_unstable();
    println!(
        "snapshot_sync cold caches ({n} keys): median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// One key of every key group (the first of `keys` to land in it).
fn one_key_per_key_group(backend: &mut HeapKeyedStateBackend, keys: &[u64]) -> Vec<u64> {
    let mut found: Vec<Option<u64>> = vec![None; MAX_PARALLELISM as usize];
    for &key in keys {
        backend.set_key(&key).expect("key in range");
        let key_group = backend.current_key_group().expect("current key") as usize;
        if let Some(slot @ None) = found.get_mut(key_group) {
            *slot = Some(key);
        }
    }
    found.into_iter().flatten().collect()
}

fn first_write_after_snapshot(c: &mut Criterion) {
    let n = 1_000_000;
    let keys = shuffled_keys(n);
    let (mut backend, state) = heap_backend(&keys);
    let per_key_group = one_key_per_key_group(&mut backend, &keys);
    assert_eq!(per_key_group.len(), MAX_PARALLELISM as usize);
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(UnusedStorage);
    let options = SnapshotOptions::checkpoint(0);
    let mut checkpoint_id = 0;
    let mut value = 0u64;

    let mut group = c.benchmark_group(format!("first_write_after_snapshot_{}k", n / 1000));
    group.throughput(criterion::Throughput::Elements(per_key_group.len() as u64));
    group.bench_function("after_snapshot", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                checkpoint_id += 1;
                let snapshot = backend
                    .snapshot(checkpoint_id, &options, Arc::clone(&storage))
                    .expect("synchronous phase");
                value += 1;
                let start = Instant::now();
                for &key in &per_key_group {
                    backend.set_key(&key).expect("key in range");
                    state.update(&mut backend, &value).expect("update");
                }
                total += start.elapsed();
                // Releases what the writes copied, outside the timing.
                drop(snapshot);
            }
            total
        })
    });
    group.bench_function("no_snapshot", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                value += 1;
                let start = Instant::now();
                for &key in &per_key_group {
                    backend.set_key(&key).expect("key in range");
                    state.update(&mut backend, &value).expect("update");
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();

    // Criterion reports means; the stall is about single writes.
    let mut stalls = Vec::new();
    for _ in 0..20 {
        checkpoint_id += 1;
        let snapshot = backend
            .snapshot(checkpoint_id, &options, Arc::clone(&storage))
            .expect("synchronous phase");
        value += 1;
        for &key in &per_key_group {
            let start = Instant::now();
            backend.set_key(&key).expect("key in range");
            state.update(&mut backend, &value).expect("update");
            stalls.push(start.elapsed());
        }
        drop(snapshot);
    }
    stalls.sort_unstable();
    println!(
        "first write to a key group after a snapshot ({} keys, {} writes): median {:?}, p99 {:?}, max {:?}",
        n,
        stalls.len(),
        stalls[stalls.len() / 2],
        stalls[stalls.len() * 99 / 100],
        stalls[stalls.len() - 1]
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = value_state_ops, snapshot_sync_phase, first_write_after_snapshot
}
criterion_main!(benches);
