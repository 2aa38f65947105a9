//! The RocksDB backend's hot path beside raw `rocksdb` crate calls, its
//! checkpoint upload volume and its restore time.
//!
//! * `rocksdb_value_500k`, `rocksdb_list_500k`, `rocksdb_map_500k`: 500k
//!   `u64` keys (void namespace, max parallelism 128, the full range). Each
//!   iteration takes the next key of one pre-shuffled key array and does one
//!   operation through the typed API (`backend/*`), or the same operation on
//!   a plain RocksDB column family opened with the backend's options
//!   (`RocksDbConfig::rocksdb_options`, WAL off) and the same key bytes
//!   (`raw/*`): the difference is the backend's own cost. Map state holds 4
//!   entries per key; `iterate` visits them all.
//! * Upload volume (printed): the bytes the first incremental checkpoint of
//!   the 500k-key value state uploads, and the second one after 1% of the
//!   keys were updated, beside a full (key-group) checkpoint.
//! * `rocksdb_restore_1000k`: restore of 1M value-state keys from an
//!   incremental checkpoint at the same parallelism, at parallelism 2 (both
//!   instances, each opening the one handle and clipping), from parallelism 2
//!   into 1 (copying key groups from two handles), and from a full
//!   key-group snapshot. Dropping the restored backends is not timed.
//!
//! Settings are modest (10 samples, short measurement) so the whole file
//! runs in a few minutes.

use state_benches::shuffled_keys;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use state_api::codec::encode_inline;
use state_api::key_group::key_group_range_for_operator;
use state_api::{
    BackendContext, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle,
    ListStateDescriptor, MapStateDescriptor, SnapshotOptions, SnapshotType, ValueStateDescriptor,
};
use state_rocksdb::rocksdb::{DBWithThreadMode, ReadOptions, SingleThreaded, WriteOptions};
use state_rocksdb::{RocksDbBackendFactory, RocksDbKeyedStateBackend};
use state_storage::ObjectStoreCheckpointStorage;

type RawDb = DBWithThreadMode<SingleThreaded>;

const MAX_PARALLELISM: u32 = 128;
const OPS_KEYS: usize = 500_000;
const RESTORE_KEYS: u64 = 1_000_000;
const MAP_ENTRIES: u32 = 4;

/// The backend's key bytes for `key` in the void namespace.
fn composite(key: u64, out: &mut Vec<u8>) {
    out.clear();
    let encoded = encode_inline(&key).expect("u64 encodes");
    state_rocksdb::write_storage_key(out, MAX_PARALLELISM, &encoded, &[], None);
}

use state_benches::backends::rocksdb_config as config;

fn context(
    storage: &Arc<ObjectStoreCheckpointStorage>,
    range: KeyGroupRange,
    restore: Vec<KeyedStateHandle>,
) -> BackendContext {
    BackendContext {
        operator: format!("bench-{}", range.start()),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: range,
        restore,
        storage: storage.clone(),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    }
}

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid")
}

struct Fixture {
    _dir: tempfile::TempDir,
    storage: Arc<ObjectStoreCheckpointStorage>,
    backend: RocksDbKeyedStateBackend,
    raw: RawDb,
    keys: Vec<u64>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("bench").expect("storage"));
    let config = config(&dir.path().join("backend"));
    let backend = RocksDbBackendFactory::new(config.clone())
        .create_backend(context(&storage, all(), Vec::new()))
        .expect("backend");
    let options = config.rocksdb_options();
    let mut raw = RawDb::open(&options, dir.path().join("raw")).expect("raw db");
    for cf in ["value", "list", "map"] {
        raw.create_cf(cf, &options).expect("cf");
    }
    Fixture {
        _dir: dir,
        storage,
        backend,
        raw,
        keys: shuffled_keys(OPS_KEYS),
    }
}

fn wal_off() -> WriteOptions {
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    write
}

fn bench_ops(c: &mut Criterion) {
    let Fixture {
        _dir,
        storage,
        mut backend,
        raw,
        keys,
    } = fixture();
    let b = &mut backend;
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .expect("register");
    let list = b
        .list_state(ListStateDescriptor::<u64>::new("list"))
        .expect("register");
    let map = b
        .map_state(MapStateDescriptor::<u32, u64>::new("map"))
        .expect("register");
    let write = wal_off();
    let read = ReadOptions::default();
    let (raw_value, raw_list, raw_map) = (
        raw.cf_handle("value").expect("cf"),
        raw.cf_handle("list").expect("cf"),
        raw.cf_handle("map").expect("cf"),
    );
    let mut key_bytes = Vec::with_capacity(32);
    let mut element = Vec::new();
    for &k in &keys {
        b.set_key(&k).expect("key");
        value.update(b, &k).expect("write");
        list.add(b, &k).expect("write");
        composite(k, &mut key_bytes);
        raw.put_cf_opt(
            raw_value,
            &key_bytes,
            encode_inline(&k).expect("enc"),
            &write,
        )
        .expect("raw");
        element.clear();
        state_api::codec::write_len_prefixed(&mut element, &encode_inline(&k).expect("enc"));
        raw.merge_cf_opt(raw_list, &key_bytes, &element, &write)
            .expect("raw");
        for uk in 0..MAP_ENTRIES {
            map.put(b, &uk, &k).expect("write");
            let mut entry = key_bytes.clone();
            entry.extend_from_slice(&encode_inline(&uk).expect("enc"));
            raw.put_cf_opt(raw_map, &entry, encode_inline(&k).expect("enc"), &write)
                .expect("raw");
        }
    }
    print_upload_volume(b, &storage, &keys);

    let mut next = {
        let mut i = 0usize;
        move || {
            i = (i + 1) % OPS_KEYS;
            i
        }
    };
    let mut group = c.benchmark_group("rocksdb_value_500k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("backend/get", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            black_box(value.value(b).expect("read"))
        })
    });
    group.bench_function("backend/update", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            value.update(b, &(k + 1)).expect("write")
        })
    });
    group.bench_function("raw/get", |bench| {
        bench.iter(|| {
            composite(keys[next()], &mut key_bytes);
            black_box(
                raw.get_pinned_cf_opt(raw_value, &key_bytes, &read)
                    .expect("raw")
                    .map(|v| v.len()),
            )
        })
    });
    group.bench_function("raw/put", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            composite(k, &mut key_bytes);
            raw.put_cf_opt(
                raw_value,
                &key_bytes,
                encode_inline(&(k + 1)).expect("enc"),
                &write,
            )
            .expect("raw")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("rocksdb_list_500k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("backend/add", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            list.add(b, &k).expect("write")
        })
    });
    group.bench_function("backend/get", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            black_box(list.get(b).expect("read"))
        })
    });
    group.bench_function("raw/merge", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            composite(k, &mut key_bytes);
            element.clear();
            state_api::codec::write_len_prefixed(&mut element, &encode_inline(&k).expect("enc"));
            raw.merge_cf_opt(raw_list, &key_bytes, &element, &write)
                .expect("raw")
        })
    });
    group.bench_function("raw/get", |bench| {
        bench.iter(|| {
            composite(keys[next()], &mut key_bytes);
            black_box(
                raw.get_pinned_cf_opt(raw_list, &key_bytes, &read)
                    .expect("raw")
                    .map(|v| v.len()),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("rocksdb_map_500k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("backend/put", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            map.put(b, &((k % 4) as u32), &(k + 1)).expect("write")
        })
    });
    group.bench_function("backend/get", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            black_box(map.get(b, &((k % 4) as u32)).expect("read"))
        })
    });
    group.bench_function("backend/iterate", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            b.set_key(&k).expect("key");
            let mut n = 0usize;
            b.map_for_each(map.id(), &[], &mut |uk, uv| {
                n += uk.len() + uv.len();
                Ok(ControlFlow::Continue(()))
            })
            .expect("iterate");
            black_box(n)
        })
    });
    group.bench_function("raw/put", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            composite(k, &mut key_bytes);
            key_bytes.extend_from_slice(&encode_inline(&((k % 4) as u32)).expect("enc"));
            raw.put_cf_opt(
                raw_map,
                &key_bytes,
                encode_inline(&(k + 1)).expect("enc"),
                &write,
            )
            .expect("raw")
        })
    });
    group.bench_function("raw/get", |bench| {
        bench.iter(|| {
            let k = keys[next()];
            composite(k, &mut key_bytes);
            key_bytes.extend_from_slice(&encode_inline(&((k % 4) as u32)).expect("enc"));
            black_box(
                raw.get_pinned_cf_opt(raw_map, &key_bytes, &read)
                    .expect("raw")
                    .map(|v| v.len()),
            )
        })
    });
    group.bench_function("raw/iterate", |bench| {
        bench.iter(|| {
            composite(keys[next()], &mut key_bytes);
            let mut upper = key_bytes.clone();
            if let Some(last) = upper.last_mut() {
                *last += 1; // the namespace length byte (0) never overflows
            }
            let mut read = ReadOptions::default();
            read.set_iterate_lower_bound(key_bytes.clone());
            read.set_iterate_upper_bound(upper);
            let mut iter = raw.raw_iterator_cf_opt(raw_map, read);
            iter.seek_to_first();
            let mut n = 0usize;
            while let Some((k, v)) = iter.item() {
                n += k.len() - key_bytes.len() + v.len();
                iter.next();
            }
            black_box(n)
        })
    });
    group.finish();
}

/// Prints what the first and a second incremental checkpoint upload after
/// 1% of the keys were updated, beside a full checkpoint.
fn print_upload_volume(
    b: &mut RocksDbKeyedStateBackend,
    storage: &Arc<ObjectStoreCheckpointStorage>,
    keys: &[u64],
) {
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .expect("register");
    let run = |b: &mut RocksDbKeyedStateBackend, id: u64, snapshot_type: SnapshotType| {
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms: 0,
        };
        let result = b
            .snapshot(id, &options, storage.clone())
            .expect("sync phase")
            .run()
            .expect("async phase");
        b.notify_checkpoint_complete(id).expect("notify");
        result
    };
    let first = run(b, 1, SnapshotType::Checkpoint);
    for &k in keys.iter().take(keys.len() / 100) {
        b.set_key(&k).expect("key");
        value.update(b, &(k * 7)).expect("write");
    }
    let second = run(b, 2, SnapshotType::Checkpoint);
    let full = run(b, 3, SnapshotType::FullCheckpoint);
    let mb = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "checkpoint upload, {} keys in value, list and map state ({} map entries per key):",
        keys.len(),
        MAP_ENTRIES
    );
    println!(
        "  first incremental: {:.2} MiB uploaded (state {:.2} MiB)",
        mb(first.uploaded_bytes),
        mb(first.handle.state_size())
    );
    println!(
        "  second incremental after 1% of keys updated: {:.2} MiB uploaded (state {:.2} MiB), {:.2}% of the first",
        mb(second.uploaded_bytes),
        mb(second.handle.state_size()),
        100.0 * second.uploaded_bytes as f64 / first.uploaded_bytes.max(1) as f64
    );
    println!(
        "  full (key-group format): {:.2} MiB uploaded; second incremental is {:.2}% of it",
        mb(full.uploaded_bytes),
        100.0 * second.uploaded_bytes as f64 / full.uploaded_bytes.max(1) as f64
    );
}

fn bench_restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("restore").expect("storage"));
    let factory = RocksDbBackendFactory::new(config(dir.path()));
    let checkpoint = |b: &mut dyn KeyedStateBackend, id: u64, snapshot_type: SnapshotType| {
        let options = SnapshotOptions {
            snapshot_type,
            timestamp_ms: 0,
        };
        let handle = b
            .snapshot(id, &options, storage.clone())
            .expect("sync")
            .run()
            .expect("async")
            .handle;
        b.notify_checkpoint_complete(id).expect("notify");
        handle
    };
    let (incremental, full) = {
        let mut b = factory
            .create_backend(context(&storage, all(), Vec::new()))
            .expect("backend");
        let value = b
            .value_state(ValueStateDescriptor::<u64>::new("value"))
            .expect("register");
        for k in 0..RESTORE_KEYS {
            b.set_key(&k).expect("key");
            value.update(&mut b, &k).expect("write");
        }
        (
            checkpoint(&mut b, 1, SnapshotType::Checkpoint),
            checkpoint(&mut b, 2, SnapshotType::FullCheckpoint),
        )
    };
    let halves: Vec<KeyGroupRange> = (0..2)
        .map(|i| key_group_range_for_operator(MAX_PARALLELISM, 2, i).expect("valid"))
        .collect();
    let split: Vec<KeyedStateHandle> = halves
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let mut b = factory
                .create_backend(context(&storage, *range, vec![incremental.clone()]))
                .expect("restore");
            checkpoint(&mut b, 10 + i as u64, SnapshotType::Checkpoint)
        })
        .collect();
    println!(
        "restore input: incremental {:.2} MiB, full {:.2} MiB",
        incremental.state_size() as f64 / (1 << 20) as f64,
        full.state_size() as f64 / (1 << 20) as f64
    );

    let mut group = c.benchmark_group("rocksdb_restore_1000k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("incremental/same_parallelism", |bench| {
        bench.iter_with_large_drop(|| {
            factory
                .create_backend(context(&storage, all(), vec![incremental.clone()]))
                .expect("restore")
        })
    });
    group.bench_function("incremental/1_to_2", |bench| {
        bench.iter_with_large_drop(|| {
            halves
                .iter()
                .map(|range| {
                    factory
                        .create_backend(context(&storage, *range, vec![incremental.clone()]))
                        .expect("restore")
                })
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("incremental/2_to_1", |bench| {
        bench.iter_with_large_drop(|| {
            factory
                .create_backend(context(&storage, all(), split.clone()))
                .expect("restore")
        })
    });
    group.bench_function("full/same_parallelism", |bench| {
        bench.iter_with_large_drop(|| {
            factory
                .create_backend(context(&storage, all(), vec![full.clone()]))
                .expect("restore")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_ops, bench_restore);
criterion_main!(benches);
