//! The changelog wrapper's cost: its overhead on state operations, and what
//! checkpoints cost with and without it as the state grows.
//!
//! * `changelog_heap_500k`, `changelog_rocksdb_500k` (criterion): 500k `u64`
//!   keys (void namespace, max parallelism 128, the full range) in a plain
//!   backend (`heap/*`, `rocksdb/*`) and in a changelog backend wrapping the
//!   same kind of backend (`changelog-heap/*`, `changelog-rocksdb/*`), both
//!   populated alike: a `ValueState<u64>`, a `ListState<u64>` with one
//!   element and a `MapState<u32, u64>` with 4 entries per key. Each
//!   iteration takes the next key of one pre-shuffled key array (both
//!   contestants of an operation walk it from the start) and does one
//!   operation through the typed API: `value/get` (`set_key` +
//!   `ValueState::value`), `value/update` (`set_key` + `ValueState::update`),
//!   `list/add` (`set_key` + `ListState::add`), `map/put` (`set_key` +
//!   `MapState::put` overwriting one of the 4 entries). The changelog
//!   backends use in-memory checkpoint storage, the default DSTL settings
//!   (the log buffer is handed to the uploader every 5 MiB, whose threads
//!   checksum and upload it during the measurement, on the same 2 cores:
//!   part of the real cost) and no periodic materialization. Between write
//!   benchmarks, outside the timing, the plain backend takes a checkpoint
//!   and the changelog backend materializes, which truncates its log (it
//!   would otherwise keep every segment in memory), then both rest for a
//!   second (with `--bench`) so background flushes, compactions and file
//!   deletions settle before the next measurement. Criterion measures the
//!   two contestants one after the other, which on a noisy 2-core machine
//!   lets background work (compactions, uploads, other processes) favour
//!   one of them; so after each criterion pair, `alternating` times 8
//!   rounds of 100k operations on the two backends in turn (the first one
//!   alternating) and takes medians. After each group a table prints ns/op
//!   of both contestants, from criterion (total time over iterations of the
//!   10 measured samples) and from the alternating rounds, and the ratios
//!   wrapper / plain.
//! * Checkpoint cost (printed, not criterion): for 100k, 1M and 5M keys and
//!   four configurations (heap, RocksDB incremental, changelog over heap,
//!   changelog over RocksDB) a fresh backend with one `ValueState<u64>` is
//!   populated (keys `0..n`, timed), then takes checkpoint 1 (both phases,
//!   then `notify_checkpoint_complete`); then 1% of the keys (random, fixed
//!   seed) are updated and checkpoint 2 is taken, then another 1% and
//!   checkpoint 3. Checkpoint storage is a local directory (real file writes,
//!   fsynced as `ObjectStoreCheckpointStorage::local` does); RocksDB works in
//!   a temporary directory with 256 MiB of managed memory. Per checkpoint the
//!   table shows the handle's `state_size()`, the synchronous phase
//!   (`snapshot(..)` returning), the asynchronous phase (`run()` on the
//!   calling thread), their total and `SnapshotResult::uploaded_bytes`.
//!   Checkpoints 2 and 3 are the steady state; checkpoint 1 of a changelog
//!   backend materializes the whole state. For the changelog
//!   configurations, after checkpoint 3 a materialization is triggered and
//!   waited for (`trigger_materialization` + `wait_for_materialization`):
//!   its bytes (`stats().materialized_bytes`) and duration are the
//!   background cost the log-based checkpoints defer.
//!   Without `--bench` (as `cargo test --benches` runs it) the table uses
//!   10k keys only; with `--list` it is skipped.
//!
//! Settings are modest (10 samples, short measurement) so the whole file
//! runs in a few minutes.

use state_benches::backends::{changelog_factory, rocksdb_config};
use state_benches::shuffled_keys;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group};
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    KeyedStateBackendExt, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    SnapshotOptions, SnapshotResult, ValueState, ValueStateDescriptor,
};
use state_changelog::{ChangelogBackendFactory, ChangelogKeyedStateBackend};
use state_heap::{HeapBackendFactory, HeapKeyedStateBackend};
use state_rocksdb::RocksDbBackendFactory;
use state_storage::ObjectStoreCheckpointStorage;

const MAX_PARALLELISM: u32 = 128;
const OPS_KEYS: usize = 500_000;
const MAP_ENTRIES: u32 = 4;
/// Criterion samples per benchmark; the last this many calls of a routine
/// are the measured ones.
const SAMPLES: usize = 10;
const CHECKPOINT_KEYS: [usize; 3] = [100_000, 1_000_000, 5_000_000];
/// Key count of the checkpoint table when not run with `--bench`.
const SMOKE_KEYS: [usize; 1] = [10_000];
/// Rest after settling, for background work to finish (with `--bench`).
const QUIESCE: Duration = Duration::from_secs(1);

/// Rounds, and operations per backend and round (with `--bench`), of the
/// alternating measurement.
const ALTERNATING_ROUNDS: usize = 8;
const ALTERNATING_OPS: u64 = 100_000;

/// Run with `--bench` (not as a test).
static BENCH_MODE: AtomicBool = AtomicBool::new(false);

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid max parallelism")
}

fn context(storage: &Arc<dyn CheckpointStorageAccess>, operator: &str) -> BackendContext {
    BackendContext {
        operator: operator.into(),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: all(),
        restore: Vec::new(),
        storage: Arc::clone(storage),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    }
}

/// Both phases of checkpoint `id`, then the completion notification.
/// Returns the result and the durations of the synchronous phase and of
/// both phases together.
fn checkpoint<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    id: u64,
    storage: &Arc<dyn CheckpointStorageAccess>,
) -> (SnapshotResult, Duration, Duration) {
    let start = Instant::now();
    let task = backend
        .snapshot(id, &SnapshotOptions::checkpoint(0), Arc::clone(storage))
        .expect("synchronous phase");
    let sync = start.elapsed();
    let result = task.run().expect("asynchronous phase");
    let total = start.elapsed();
    backend
        .notify_checkpoint_complete(id)
        .expect("notify complete");
    (result, sync, total)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

// ---------------------------------------------------------------------------
// Wrapper overhead on state operations.

struct States {
    value: ValueState<u64>,
    list: ListState<u64>,
    map: MapState<u32, u64>,
}

fn register<B: KeyedStateBackend + ?Sized>(backend: &mut B) -> States {
    States {
        value: backend
            .value_state(ValueStateDescriptor::<u64>::new("value"))
            .expect("register value state"),
        list: backend
            .list_state(ListStateDescriptor::<u64>::new("list"))
            .expect("register list state"),
        map: backend
            .map_state(MapStateDescriptor::<u32, u64>::new("map"))
            .expect("register map state"),
    }
}

fn populate<B: KeyedStateBackend + ?Sized>(backend: &mut B, states: &States, keys: &[u64]) {
    for &k in keys {
        backend.set_key(&k).expect("key in range");
        states.value.update(backend, &k).expect("update");
        states.list.add(backend, &k).expect("add");
        for user_key in 0..MAP_ENTRIES {
            states.map.put(backend, &user_key, &k).expect("put");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    ValueGet,
    ValueUpdate,
    ListAdd,
    MapPut,
}

impl Op {
    const ALL: [Op; 4] = [Op::ValueGet, Op::ValueUpdate, Op::ListAdd, Op::MapPut];

    fn name(self) -> &'static str {
        match self {
            Op::ValueGet => "value/get",
            Op::ValueUpdate => "value/update",
            Op::ListAdd => "list/add",
            Op::MapPut => "map/put",
        }
    }

    fn writes(self) -> bool {
        self != Op::ValueGet
    }
}

/// Times `iters` operations, each on the next key of `keys` after `cursor`
/// (cycling; `cursor` carries over to the next call).
fn timed(keys: &[u64], cursor: &mut usize, iters: u64, mut op: impl FnMut(u64)) -> Duration {
    let mut next = *cursor;
    let start = Instant::now();
    for _ in 0..iters {
        op(keys[next]);
        next += 1;
        if next == keys.len() {
            next = 0;
        }
    }
    let elapsed = start.elapsed();
    *cursor = next;
    elapsed
}

/// Runs `iters` of `op` (the dispatch is outside the timed loop).
fn run_op<B: KeyedStateBackend + ?Sized>(
    op: Op,
    b: &mut B,
    s: &States,
    keys: &[u64],
    cursor: &mut usize,
    iters: u64,
) -> Duration {
    match op {
        Op::ValueGet => timed(keys, cursor, iters, |k| {
            b.set_key(&k).expect("key in range");
            black_box(s.value.value(b).expect("get"));
        }),
        Op::ValueUpdate => timed(keys, cursor, iters, |k| {
            b.set_key(&k).expect("key in range");
            s.value.update(b, &(k ^ 1)).expect("update");
        }),
        Op::ListAdd => timed(keys, cursor, iters, |k| {
            b.set_key(&k).expect("key in range");
            s.list.add(b, &k).expect("add");
        }),
        Op::MapPut => timed(keys, cursor, iters, |k| {
            b.set_key(&k).expect("key in range");
            s.map
                .put(b, &((k % u64::from(MAP_ENTRIES)) as u32), &(k + 1))
                .expect("put");
        }),
    }
}

/// Benchmarks `op` on `backend` as `name` and returns ns/op over the
/// measured samples (`None` when the benchmark was filtered out).
fn measure<B: KeyedStateBackend + ?Sized>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    op: Op,
    backend: &mut B,
    states: &States,
    keys: &[u64],
) -> Option<f64> {
    let mut calls: Vec<(u64, Duration)> = Vec::new();
    let mut cursor = 0;
    group.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            let elapsed = run_op(op, backend, states, keys, &mut cursor, iters);
            calls.push((iters, elapsed));
            elapsed
        })
    });
    // Criterion warms up first, then takes the samples: the last calls.
    let measured = &calls[calls.len().saturating_sub(SAMPLES)..];
    let iters: u64 = measured.iter().map(|(iters, _)| iters).sum();
    let nanos: f64 = measured.iter().map(|(_, t)| t.as_nanos() as f64).sum();
    (iters > 0).then(|| nanos / iters as f64)
}

/// Operations per backend and round of the alternating measurement (a few
/// when run as a test).
fn alternating_ops() -> u64 {
    if BENCH_MODE.load(Ordering::Relaxed) {
        ALTERNATING_OPS
    } else {
        1_000
    }
}

/// Medians of the alternating measurement.
struct Alternating {
    plain_ns: f64,
    changelog_ns: f64,
    ratio: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `op` in rounds on both backends in turn (which one goes first
/// alternates), so drift from background work and other load hits both
/// alike.
fn alternate<P: KeyedStateBackend>(
    op: Op,
    plain: &mut P,
    plain_states: &States,
    changelog: &mut ChangelogKeyedStateBackend,
    changelog_states: &States,
    keys: &[u64],
) -> Alternating {
    let ops = alternating_ops();
    let (mut plain_cursor, mut changelog_cursor) = (0, 0);
    let (mut plain_ns, mut changelog_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ALTERNATING_ROUNDS {
        let mut run_plain = || run_op(op, plain, plain_states, keys, &mut plain_cursor, ops);
        let mut run_changelog = || {
            run_op(
                op,
                changelog,
                changelog_states,
                keys,
                &mut changelog_cursor,
                ops,
            )
        };
        let (p, w) = if round % 2 == 0 {
            let p = run_plain();
            (p, run_changelog())
        } else {
            let w = run_changelog();
            (run_plain(), w)
        };
        let (p, w) = (
            p.as_nanos() as f64 / ops as f64,
            w.as_nanos() as f64 / ops as f64,
        );
        plain_ns.push(p);
        changelog_ns.push(w);
        ratios.push(w / p);
    }
    Alternating {
        plain_ns: median(plain_ns),
        changelog_ns: median(changelog_ns),
        ratio: median(ratios),
    }
}

/// Outside the timing: the plain backend takes a checkpoint and the
/// changelog backend materializes, truncating its log.
struct Settle {
    storage: Arc<dyn CheckpointStorageAccess>,
    next_checkpoint: u64,
}

impl Settle {
    fn run<P: KeyedStateBackend>(
        &mut self,
        plain: &mut P,
        changelog: &mut ChangelogKeyedStateBackend,
        label: &str,
        after: &str,
    ) {
        self.next_checkpoint += 1;
        checkpoint(plain, self.next_checkpoint, &self.storage);
        let stats = changelog.stats();
        let start = Instant::now();
        changelog
            .trigger_materialization()
            .expect("materialization starts");
        let materialized = changelog.wait_for_materialization();
        let took = start.elapsed();
        if BENCH_MODE.load(Ordering::Relaxed) {
            std::thread::sleep(QUIESCE);
        }
        println!(
            "  changelog-{label} after {after}: {} records logged so far, {} live log segments \
             (their bytes stay in memory until a checkpoint or truncation); materialized in {:.0} ms (ok: {materialized}), \
             {} segments left",
            stats.records,
            stats.live_segments,
            took.as_secs_f64() * 1e3,
            changelog.stats().live_segments
        );
    }
}

fn compare<P: KeyedStateBackend>(
    c: &mut Criterion,
    label: &str,
    plain: &mut P,
    factory: &ChangelogBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
) {
    let keys = shuffled_keys(OPS_KEYS);
    let mut changelog = factory
        .create_changelog(context(storage, &format!("changelog-{label}")))
        .expect("changelog backend");
    let plain_states = register(plain);
    let changelog_states = register(&mut changelog);

    let start = Instant::now();
    populate(plain, &plain_states, &keys);
    let plain_populate = start.elapsed();
    let start = Instant::now();
    populate(&mut changelog, &changelog_states, &keys);
    let changelog_populate = start.elapsed();
    println!(
        "populate {} keys (value, list, {MAP_ENTRIES} map entries each): {label} {:.2} s, \
         changelog-{label} {:.2} s",
        keys.len(),
        plain_populate.as_secs_f64(),
        changelog_populate.as_secs_f64()
    );
    let mut settle = Settle {
        storage: Arc::clone(storage),
        next_checkpoint: 0,
    };
    settle.run(plain, &mut changelog, label, "populate");

    let uploaded_before = factory.uploader().stats();
    let mut rows = Vec::new();
    let mut group = c.benchmark_group(format!("changelog_{label}_{}k", OPS_KEYS / 1000));
    group
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for op in Op::ALL {
        let plain_ns = measure(
            &mut group,
            &format!("{label}/{}", op.name()),
            op,
            plain,
            &plain_states,
            &keys,
        );
        let changelog_ns = measure(
            &mut group,
            &format!("changelog-{label}/{}", op.name()),
            op,
            &mut changelog,
            &changelog_states,
            &keys,
        );
        let alternating = alternate(
            op,
            plain,
            &plain_states,
            &mut changelog,
            &changelog_states,
            &keys,
        );
        rows.push((op, plain_ns, changelog_ns, alternating));
        if op.writes() {
            settle.run(plain, &mut changelog, label, op.name());
        }
    }
    group.finish();
    let uploaded = factory.uploader().stats();

    println!(
        "changelog wrapper overhead over {label}, {} keys, ns/op. criterion: time / iterations \
         of the {SAMPLES} measured samples; alternating: medians of {ALTERNATING_ROUNDS} rounds \
         of {} operations on each backend in turn, and the median of the rounds' ratios:",
        keys.len(),
        alternating_ops()
    );
    println!(
        "  {:<14} {:>10} {:>18} {:>7} | {:>10} {:>18} {:>7}",
        "op",
        label,
        format!("changelog-{label}"),
        "ratio",
        label,
        format!("changelog-{label}"),
        "ratio"
    );
    for (op, plain_ns, changelog_ns, alternating) in rows {
        let criterion = match (plain_ns, changelog_ns) {
            (Some(p), Some(w)) => format!("{p:>10.1} {w:>18.1} {:>7.2}", w / p),
            _ => format!("{:>37}", "(filtered out)"),
        };
        println!(
            "  {:<14} {criterion} | {:>10.1} {:>18.1} {:>7.2}",
            op.name(),
            alternating.plain_ns,
            alternating.changelog_ns,
            alternating.ratio
        );
    }
    println!(
        "  uploader during the benchmarks: {} files, {:.1} MiB uploaded, writers blocked \
         {} us by back-pressure, {} failed attempts",
        uploaded.files_uploaded - uploaded_before.files_uploaded,
        mib(uploaded.bytes_uploaded - uploaded_before.bytes_uploaded),
        uploaded.backpressure_micros - uploaded_before.backpressure_micros,
        uploaded.failed_attempts - uploaded_before.failed_attempts
    );
}

fn heap_ops(c: &mut Criterion) {
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::in_memory("changelog-heap-ops").expect("storage"));
    let mut plain =
        HeapKeyedStateBackend::from_context(context(&storage, "heap")).expect("heap backend");
    let factory = changelog_factory(Arc::new(HeapBackendFactory::new()));
    compare(c, "heap", &mut plain, &factory, &storage);
}

fn rocksdb_ops(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(
        ObjectStoreCheckpointStorage::in_memory("changelog-rocksdb-ops").expect("storage"),
    );
    // Each backend has its own memory budget.
    let mut plain = RocksDbBackendFactory::new(rocksdb_config(&dir.path().join("plain")))
        .create_backend(context(&storage, "rocksdb"))
        .expect("rocksdb backend");
    let factory = changelog_factory(Arc::new(RocksDbBackendFactory::new(rocksdb_config(
        &dir.path().join("wrapped"),
    ))));
    compare(c, "rocksdb", &mut plain, &factory, &storage);
}

// ---------------------------------------------------------------------------
// Checkpoint cost against state size.

#[derive(Clone, Copy)]
enum Setup {
    Heap,
    RocksDb,
    ChangelogHeap,
    ChangelogRocksDb,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::Heap,
        Setup::RocksDb,
        Setup::ChangelogHeap,
        Setup::ChangelogRocksDb,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Heap => "heap",
            Setup::RocksDb => "rocksdb-incremental",
            Setup::ChangelogHeap => "changelog-heap",
            Setup::ChangelogRocksDb => "changelog-rocksdb",
        }
    }
}

/// One checkpoint's figures.
struct Row {
    setup: &'static str,
    keys: usize,
    checkpoint: u64,
    populate: Option<Duration>,
    state_size: u64,
    sync: Duration,
    total: Duration,
    uploaded: u64,
}

/// A changelog backend's materialization after checkpoint 3.
struct Materialized {
    setup: &'static str,
    keys: usize,
    first_bytes: u64,
    bytes: u64,
    sync: Duration,
    total: Duration,
    log_uploaded: u64,
    log_files: u64,
}

fn print_header() {
    println!(
        "  {:<20} {:>9} {:>4} {:>10} {:>12} {:>10} {:>10} {:>10} {:>14}",
        "config",
        "keys",
        "chk",
        "populate s",
        "state bytes",
        "sync us",
        "async ms",
        "total ms",
        "uploaded bytes"
    );
}

fn print_row(row: &Row) {
    let populate = row
        .populate
        .map_or_else(String::new, |d| format!("{:.2}", d.as_secs_f64()));
    println!(
        "  {:<20} {:>9} {:>4} {:>10} {:>12} {:>10} {:>10.1} {:>10.1} {:>14}",
        row.setup,
        row.keys,
        row.checkpoint,
        populate,
        row.state_size,
        row.sync.as_micros(),
        (row.total - row.sync).as_secs_f64() * 1e3,
        row.total.as_secs_f64() * 1e3,
        row.uploaded
    );
}

fn print_materialized(m: &Materialized) {
    println!(
        "  {:<18} {:>9} keys: materialization at checkpoint 1 {} bytes; after checkpoint 3 \
         {} bytes in {:.1} ms (sync phase {} us); log uploaded in total {} bytes in {} files",
        m.setup,
        m.keys,
        m.first_bytes,
        m.bytes,
        m.total.as_secs_f64() * 1e3,
        m.sync.as_micros(),
        m.log_uploaded,
        m.log_files
    );
}

/// Populates `0..n`, takes checkpoint 1, then checkpoints 2 and 3 each
/// after updating the next 1% of `shuffled`.
fn checkpoint_series<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    setup: Setup,
    storage: &Arc<dyn CheckpointStorageAccess>,
    shuffled: &[u64],
) -> Vec<Row> {
    let n = shuffled.len();
    let value = backend
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .expect("register value state");
    let start = Instant::now();
    for k in 0..n as u64 {
        backend.set_key(&k).expect("key in range");
        value.update(backend, &k).expect("update");
    }
    let populate = start.elapsed();
    let mut rows = Vec::new();
    let step = (n / 100).max(1);
    for id in 1..=3u64 {
        if id > 1 {
            let from = (id as usize - 2) * step;
            for &k in &shuffled[from..from + step] {
                backend.set_key(&k).expect("key in range");
                value.update(backend, &(k * 7 + id)).expect("update");
            }
        }
        let (result, sync, total) = checkpoint(backend, id, storage);
        let row = Row {
            setup: setup.name(),
            keys: n,
            checkpoint: id,
            populate: (id == 1).then_some(populate),
            state_size: result.handle.state_size(),
            sync,
            total,
            uploaded: result.uploaded_bytes,
        };
        print_row(&row);
        rows.push(row);
    }
    rows
}

fn run_setup(setup: Setup, shuffled: &[u64]) -> (Vec<Row>, Option<Materialized>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(
        ObjectStoreCheckpointStorage::local(dir.path().join("checkpoints"), "job")
            .expect("local checkpoint storage"),
    );
    let rocksdb = || RocksDbBackendFactory::new(rocksdb_config(&dir.path().join("rocksdb")));
    let changelog = |factory: &ChangelogBackendFactory| {
        let mut backend = factory
            .create_changelog(context(&storage, setup.name()))
            .expect("changelog backend");
        let rows = checkpoint_series(&mut backend, setup, &storage, shuffled);
        let first_bytes = backend.stats().materialized_bytes;
        let start = Instant::now();
        backend
            .trigger_materialization()
            .expect("materialization starts");
        let sync = start.elapsed();
        assert!(backend.wait_for_materialization(), "materialization failed");
        let total = start.elapsed();
        let stats = factory.uploader().stats();
        let materialized = Materialized {
            setup: setup.name(),
            keys: shuffled.len(),
            first_bytes,
            bytes: backend.stats().materialized_bytes - first_bytes,
            sync,
            total,
            log_uploaded: stats.bytes_uploaded,
            log_files: stats.files_uploaded,
        };
        (rows, Some(materialized))
    };
    match setup {
        Setup::Heap => {
            let mut backend = HeapKeyedStateBackend::from_context(context(&storage, "heap"))
                .expect("heap backend");
            (
                checkpoint_series(&mut backend, setup, &storage, shuffled),
                None,
            )
        }
        Setup::RocksDb => {
            let mut backend = rocksdb()
                .create_backend(context(&storage, "rocksdb"))
                .expect("rocksdb backend");
            (
                checkpoint_series(&mut backend, setup, &storage, shuffled),
                None,
            )
        }
        Setup::ChangelogHeap => changelog(&changelog_factory(Arc::new(HeapBackendFactory::new()))),
        Setup::ChangelogRocksDb => changelog(&changelog_factory(Arc::new(rocksdb()))),
    }
}

fn checkpoint_cost(sizes: &[usize]) {
    println!(
        "checkpoint cost: one ValueState<u64>, checkpoints 2 and 3 each after updating 1% of the \
         keys; local-disk checkpoint storage"
    );
    print_header();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut materializations = Vec::new();
    for &n in sizes {
        let shuffled = shuffled_keys(n);
        for setup in Setup::ALL {
            let (mut setup_rows, materialized) = run_setup(setup, &shuffled);
            rows.append(&mut setup_rows);
            materializations.extend(materialized);
        }
    }
    println!(
        "checkpoint cost, all runs ({:.1} s), steady state (checkpoints 2 and 3):",
        started.elapsed().as_secs_f64()
    );
    print_header();
    for row in rows.iter().filter(|r| r.checkpoint > 1) {
        print_row(row);
    }
    println!("materialization of the changelog backends (the deferred background cost):");
    for m in &materializations {
        print_materialized(m);
    }
}

criterion_group!(ops, heap_ops, rocksdb_ops);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    BENCH_MODE.store(bench_mode, Ordering::Relaxed);
    ops();
    Criterion::default().configure_from_args().final_summary();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if bench_mode {
        checkpoint_cost(&CHECKPOINT_KEYS);
    } else {
        checkpoint_cost(&SMOKE_KEYS);
    }
}
