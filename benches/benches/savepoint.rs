//! Savepoint cost: native RocksDB savepoints (RocksDB's own files) against
//! canonical ones (the key-group format every backend reads), each beside a
//! raw baseline measured in the same run. A bench binary printing a table,
//! not criterion: `cargo bench -p state-benches --bench savepoint`.
//!
//! For each state size (1M and 5M keys with `--bench`) one RocksDB backend
//! and one heap backend (void namespace, max parallelism 128, the full
//! range, one instance each) hold a `ValueState<u64>` and a `ListState<u64>`
//! with one element per key (keys `0..n`, value and element `k`). Beside
//! them, filled alike and outside the backends:
//!
//! * a raw RocksDB opened with the backend's options
//!   (`RocksDbConfig::rocksdb_options`, 256 MiB like the backend) with one
//!   column family per state, written with the backend's key bytes and
//!   values (`put` and list `merge`, WAL off);
//! * plain `std` hash maps, one per state and key group.
//!
//! After populating, both RocksDB instances are compacted completely, so
//! they start from the same file layout. Then `rounds` rounds (5 with
//! `--bench`) each time six operations, in this order in even rounds and
//! reversed in odd ones. Before each, untimed: before the three RocksDB
//! ones both RocksDB instances are flushed; then the benchmark waits until
//! neither runs or owes a flush or compaction (RocksDB properties), so no
//! background work of an earlier operation overlaps a timed one; then 1% of
//! the keys (random, fixed seed, the same in every store) get a new value
//! and one more list element. So each RocksDB snapshot flushes exactly that
//! 1%, as a running job's savepoint flushes its recent writes. L0 files
//! build up over the rounds (and get compacted between operations), as in
//! a job.
//!
//! * `raw rocksdb checkpoint+copy`, baseline of the native savepoint (what
//!   it must at least do): `rocksdb::checkpoint::Checkpoint::create_checkpoint`
//!   of the raw DB into a local directory (flush and hard links: the sync
//!   column), `std::fs::copy` of every file into a new directory beside the
//!   savepoints, removal of the checkpoint directory;
//! * `rocksdb native`, `rocksdb canonical`: a savepoint of the RocksDB
//!   backend in that format;
//! * `raw serialize flat (BufWriter)`, baseline of the canonical savepoints
//!   (what a canonical write must at least do): the same entries, laid out
//!   flat in memory beforehand (untimed), key group by key group and state
//!   by state, written as the key-group format's records (`varint(state) |
//!   lp(key) | lp(namespace) | lp(value)`; no block checksums, no sorting)
//!   through a 1 MiB `BufWriter` into one file beside the savepoints;
//! * `raw serialize std maps`: the same records straight from the hash maps
//!   (list elements behind a `Vec` per key, encoded with the codec): what a
//!   naive dump of plain collections costs, for reference;
//! * `heap canonical`: a savepoint of the heap backend.
//!
//! A savepoint's time runs from `SavepointWriter::create` to the return of
//! `commit` (the `_metadata` written): the synchronous phase
//! (`KeyedStateBackend::snapshot` returning; for RocksDB a flush and a
//! hard-linked checkpoint, for the heap a copy-on-write freeze), the
//! asynchronous phase run on the calling thread, and the commit. Savepoint
//! storage is a local directory and, as `ObjectStoreCheckpointStorage::local`
//! does, it fsyncs every file and directory entry; the raw baselines do not
//! fsync, so `fsync ms` shows what fsyncing their files afterwards takes
//! (timed apart) and `ratio+fs` compares against baseline plus that fsync.
//! `MiB` is every byte in the savepoint's directory (state files with their
//! checksum footers, `_metadata`), or the baseline's files.
//!
//! Then every savepoint of the round is restored into a fresh backend (same
//! parallelism, one instance): `Savepoint::open` plus the backend's
//! construction with the savepoint's handles and storage
//! (`BackendContext::restore_storage`); dropping it is not timed. The
//! canonical ones are restored into both backends (the RocksDB one into
//! the heap and the heap one into RocksDB are the backend switch); a native
//! savepoint restores into RocksDB only. Each restored backend is checked
//! (untimed) on 1000 keys against the hash maps as they were when the
//! savepoint was taken. Savepoints and baseline files are deleted after
//! each round (untimed). The savepoints' files were just written, so
//! restores read them from the page cache.
//!
//! The table shows medians over the rounds; `ratio` is the median of the
//! rounds' (total / baseline total), both from the same round.
//!
//! Sizes: `--keys 1m,5m` or `SAVEPOINT_BENCH_KEYS=100k` (`k` and `m`
//! suffixes allowed); rounds: `--rounds 3` or `SAVEPOINT_BENCH_ROUNDS`; the
//! command line wins. Without `--bench` (as `cargo test --benches` runs it)
//! the defaults are 10k keys and one round; with `--list` nothing runs.

use state_benches::backends::rocksdb_config;
use state_benches::dir_bytes;
use state_benches::shuffled_keys;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::codec::{encode_inline, write_len_prefixed, write_varint};
use state_api::key_group::assign_to_key_group;
use state_api::snapshot::SavepointFormat;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    KeyedStateBackendExt, ListState, ListStateDescriptor, SnapshotOptions, SnapshotType,
    ValueState, ValueStateDescriptor,
};
use state_heap::HeapKeyedStateBackend;
use state_rocksdb::rocksdb::checkpoint::Checkpoint;
use state_rocksdb::rocksdb::{DBWithThreadMode, SingleThreaded, WriteOptions};
use state_rocksdb::{RocksDbBackendFactory, RocksDbKeyedStateBackend};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, ObjectStoreCheckpointStorage, Savepoint, SavepointWriter,
};

type RawDb = DBWithThreadMode<SingleThreaded>;

const MAX_PARALLELISM: u32 = 128;
const JOB: &str = "savepoint-bench";
const OPERATOR: &str = "op";
const BENCH_KEYS: [usize; 2] = [1_000_000, 5_000_000];
const SMOKE_KEYS: [usize; 1] = [10_000];
const BENCH_ROUNDS: usize = 5;
/// Keys of each restored backend compared with the hash maps.
const CHECKED_KEYS: usize = 1000;

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid max parallelism")
}

fn context(
    storage: &Arc<dyn CheckpointStorageAccess>,
    operator: &str,
    restore: Option<&Savepoint>,
) -> BackendContext {
    BackendContext {
        operator: operator.into(),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: all(),
        restore: restore.map_or_else(Vec::new, |s| s.handles(OPERATOR).to_vec()),
        storage: Arc::clone(storage),
        restore_storage: restore.map(Savepoint::storage),
        skip_restored_states: Vec::new(),
    }
}

/// Column families of the raw DB, named as the backend names its states'.
fn raw_column_families() -> [String; 2] {
    ["value", "list"].map(state_rocksdb::column_family_name)
}

fn encoded(value: u64) -> state_api::codec::InlineBytes {
    encode_inline(&value).expect("u64 encodes")
}

fn key_group(key: u64) -> usize {
    assign_to_key_group(&encoded(key), MAX_PARALLELISM).expect("valid") as usize
}

/// The backend's key bytes for `key` in the void namespace.
fn composite(key: u64, out: &mut Vec<u8>) {
    out.clear();
    state_rocksdb::write_storage_key(out, MAX_PARALLELISM, &encoded(key), &[], None);
}

/// One list element in the list encoding (what a merge operand holds).
fn list_element(element: u64, out: &mut Vec<u8>) {
    out.clear();
    write_len_prefixed(out, &encoded(element));
}

/// fsyncs every file in `dir` and the directory itself.
fn fsync_dir(dir: &Path) -> Duration {
    let start = Instant::now();
    for entry in std::fs::read_dir(dir).expect("list dir") {
        File::open(entry.expect("dir entry").path())
            .and_then(|f| f.sync_all())
            .expect("fsync file");
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
    start.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------
// The stores.

/// The same state outside the backends: per key group, a hash map per
/// state (list elements as numbers).
struct RawHeap {
    values: Vec<HashMap<u64, u64>>,
    lists: Vec<HashMap<u64, Vec<u64>>>,
}

/// [`RawHeap`] laid out flat for the serialization floor: per key group
/// `(key, value)` pairs and `(key, start, end)` ranges of one element
/// arena.
struct Flat {
    values: Vec<Vec<(u64, u64)>>,
    lists: Vec<Vec<(u64, usize, usize)>>,
    elements: Vec<u64>,
}

impl RawHeap {
    fn flatten(&self) -> Flat {
        let mut elements = Vec::new();
        let lists = self
            .lists
            .iter()
            .map(|lists| {
                lists
                    .iter()
                    .map(|(&key, list)| {
                        let start = elements.len();
                        elements.extend_from_slice(list);
                        (key, start, elements.len())
                    })
                    .collect()
            })
            .collect();
        Flat {
            values: self
                .values
                .iter()
                .map(|values| values.iter().map(|(&k, &v)| (k, v)).collect())
                .collect(),
            lists,
            elements,
        }
    }

    /// The value and list of `key`.
    fn get(&self, key: u64) -> (Option<u64>, Vec<u64>) {
        let kg = key_group(key);
        (
            self.values[kg].get(&key).copied(),
            self.lists[kg].get(&key).cloned().unwrap_or_default(),
        )
    }
}

struct States {
    value: ValueState<u64>,
    list: ListState<u64>,
}

fn register<B: KeyedStateBackend + ?Sized>(backend: &mut B) -> States {
    States {
        value: backend
            .value_state(ValueStateDescriptor::<u64>::new("value"))
            .expect("register value state"),
        list: backend
            .list_state(ListStateDescriptor::<u64>::new("list"))
            .expect("register list state"),
    }
}

/// Every store, holding the same state.
struct Stores {
    rocksdb: RocksDbKeyedStateBackend,
    rocksdb_states: States,
    heap: HeapKeyedStateBackend,
    heap_states: States,
    raw_db: RawDb,
    raw_heap: RawHeap,
    wal_off: WriteOptions,
    scratch_key: Vec<u8>,
    scratch_element: Vec<u8>,
}

impl Stores {
    fn new(root: &Path, storage: &Arc<dyn CheckpointStorageAccess>) -> Self {
        let mut rocksdb = RocksDbBackendFactory::new(rocksdb_config(&root.join("rocksdb")))
            .create_backend(context(storage, OPERATOR, None))
            .expect("rocksdb backend");
        let rocksdb_states = register(&mut rocksdb);
        let mut heap = HeapKeyedStateBackend::from_context(context(storage, OPERATOR, None))
            .expect("heap backend");
        let heap_states = register(&mut heap);
        let options = rocksdb_config(&root.join("unused")).rocksdb_options();
        let mut raw_db = RawDb::open(&options, root.join("raw-rocksdb")).expect("raw db");
        for cf in raw_column_families() {
            raw_db
                .create_cf(cf, &options)
                .expect("create column family");
        }
        let mut wal_off = WriteOptions::default();
        wal_off.disable_wal(true);
        Self {
            rocksdb,
            rocksdb_states,
            heap,
            heap_states,
            raw_db,
            raw_heap: RawHeap {
                values: (0..MAX_PARALLELISM).map(|_| HashMap::new()).collect(),
                lists: (0..MAX_PARALLELISM).map(|_| HashMap::new()).collect(),
            },
            wal_off,
            scratch_key: Vec::new(),
            scratch_element: Vec::new(),
        }
    }

    /// Sets `key`'s value to `value` and appends `element` to its list in
    /// every store.
    fn write(&mut self, key: u64, value: u64, element: u64) {
        let backends: [(&mut dyn KeyedStateBackend, &States); 2] = [
            (&mut self.rocksdb, &self.rocksdb_states),
            (&mut self.heap, &self.heap_states),
        ];
        for (backend, states) in backends {
            backend.set_key(&key).expect("key in range");
            states.value.update(backend, &value).expect("update");
            states.list.add(backend, &element).expect("add");
        }
        composite(key, &mut self.scratch_key);
        list_element(element, &mut self.scratch_element);
        let value_cf = self
            .raw_db
            .cf_handle(&state_rocksdb::column_family_name("value"))
            .expect("value cf");
        let list_cf = self
            .raw_db
            .cf_handle(&state_rocksdb::column_family_name("list"))
            .expect("list cf");
        self.raw_db
            .put_cf_opt(value_cf, &self.scratch_key, encoded(value), &self.wal_off)
            .expect("raw put");
        self.raw_db
            .merge_cf_opt(
                list_cf,
                &self.scratch_key,
                &self.scratch_element,
                &self.wal_off,
            )
            .expect("raw merge");
        let kg = key_group(key);
        self.raw_heap.values[kg].insert(key, value);
        self.raw_heap.lists[kg]
            .entry(key)
            .or_default()
            .push(element);
    }

    /// Update batch `batch`: the `step` keys of `shuffled` after
    /// `(batch - 1) * step` (cycling) get a new value and one more list
    /// element.
    fn update(&mut self, shuffled: &[u64], batch: u64, step: usize) {
        let n = shuffled.len();
        let from = (batch as usize - 1) * step;
        for i in 0..step {
            let key = shuffled[(from + i) % n];
            self.write(key, key * 7 + batch, key + batch);
        }
    }

    /// Flushes the memtables of both RocksDB instances: the raw DB's
    /// directly, the backend's by the synchronous phase of a checkpoint
    /// whose task is dropped unrun (which removes its directory).
    fn flush_rocksdb(&mut self, id: u64, storage: &Arc<dyn CheckpointStorageAccess>) {
        for cf in raw_column_families() {
            let cf = self.raw_db.cf_handle(&cf).expect("cf");
            self.raw_db.flush_cf(cf).expect("flush raw db");
        }
        drop(
            self.rocksdb
                .snapshot(id, &SnapshotOptions::checkpoint(0), Arc::clone(storage))
                .expect("flush backend"),
        );
    }

    /// Waits (up to 30 s) until neither RocksDB instance runs or owes a
    /// flush or compaction, so that no background work of an earlier
    /// operation runs during the next timed one.
    fn quiesce(&self) {
        const PROPERTIES: [&str; 3] = [
            "rocksdb.num-running-flushes",
            "rocksdb.num-running-compactions",
            "rocksdb.compaction-pending",
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut busy = 0;
            for property in PROPERTIES {
                busy += self.rocksdb.property_sum(property).expect("property");
                for cf in raw_column_families() {
                    let cf = self.raw_db.cf_handle(&cf).expect("cf");
                    busy += self
                        .raw_db
                        .property_int_value_cf(cf, property)
                        .expect("property")
                        .unwrap_or(0);
                }
            }
            if busy == 0 || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn compact(&self) {
        self.rocksdb.compact().expect("compact backend");
        for cf in raw_column_families() {
            let cf = self.raw_db.cf_handle(&cf).expect("cf");
            self.raw_db
                .compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
    }
}

// ---------------------------------------------------------------------------
// What is timed.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    RawCheckpointCopy,
    RocksDbNative,
    RocksDbCanonical,
    RawSerialize,
    RawSerializeMaps,
    HeapCanonical,
}

impl Config {
    /// In the order of even rounds.
    const ALL: [Config; 6] = [
        Config::RawCheckpointCopy,
        Config::RocksDbNative,
        Config::RocksDbCanonical,
        Config::RawSerialize,
        Config::RawSerializeMaps,
        Config::HeapCanonical,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::RawCheckpointCopy => "raw rocksdb checkpoint+copy",
            Config::RocksDbNative => "rocksdb native",
            Config::RocksDbCanonical => "rocksdb canonical",
            Config::RawSerialize => "raw serialize flat (BufWriter)",
            Config::RawSerializeMaps => "raw serialize std maps",
            Config::HeapCanonical => "heap canonical",
        }
    }

    fn baseline(self) -> Option<Config> {
        match self {
            Config::RocksDbNative => Some(Config::RawCheckpointCopy),
            Config::RocksDbCanonical | Config::HeapCanonical | Config::RawSerializeMaps => {
                Some(Config::RawSerialize)
            }
            Config::RawCheckpointCopy | Config::RawSerialize => None,
        }
    }

    fn uses_rocksdb(self) -> bool {
        matches!(
            self,
            Config::RawCheckpointCopy | Config::RocksDbNative | Config::RocksDbCanonical
        )
    }
}

/// What a savepoint must restore: the checked keys' values and lists when
/// it was taken.
type Expected = Vec<(u64, (Option<u64>, Vec<u64>))>;

/// One timed write.
struct Written {
    sync: Duration,
    total: Duration,
    bytes: u64,
    /// fsync of the baseline's files afterwards (baselines only).
    fsync: Option<Duration>,
    /// The committed savepoint and its expected contents (savepoints only).
    savepoint: Option<(Savepoint, Expected)>,
    /// The baseline's output, deleted after the round.
    leftover: Option<PathBuf>,
}

/// A savepoint of `backend` in `format` under `savepoint_dir`.
fn savepoint(
    backend: &mut dyn KeyedStateBackend,
    id: u64,
    format: SavepointFormat,
    savepoint_dir: &str,
    expected: Expected,
) -> Written {
    let start = Instant::now();
    let writer = SavepointWriter::create(savepoint_dir, JOB).expect("savepoint writer");
    let options = SnapshotOptions {
        snapshot_type: SnapshotType::Savepoint(format),
        timestamp_ms: id,
    };
    let sync_start = Instant::now();
    let task = backend
        .snapshot(id, &options, writer.storage())
        .expect("synchronous phase");
    let sync = sync_start.elapsed();
    let handle = task.run().expect("asynchronous phase").handle;
    let savepoint = writer
        .commit(
            CompletedCheckpoint::new(JOB, id, id, CheckpointKind::Savepoint)
                .with_operator(OPERATOR, vec![handle]),
        )
        .expect("commit");
    let total = start.elapsed();
    let bytes = dir_bytes(&savepoint.local_dir().expect("local savepoint"));
    Written {
        sync,
        total,
        bytes,
        fsync: None,
        savepoint: Some((savepoint, expected)),
        leftover: None,
    }
}

/// RocksDB's own checkpoint of the raw DB, copied into `target`.
fn raw_checkpoint_copy(db: &RawDb, checkpoint_dir: &Path, target: &Path) -> Written {
    let start = Instant::now();
    Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint(checkpoint_dir))
        .expect("raw checkpoint");
    let sync = start.elapsed();
    std::fs::create_dir(target).expect("create copy dir");
    let mut bytes = 0;
    for entry in std::fs::read_dir(checkpoint_dir).expect("list checkpoint") {
        let entry = entry.expect("dir entry");
        bytes += std::fs::copy(entry.path(), target.join(entry.file_name())).expect("copy");
    }
    std::fs::remove_dir_all(checkpoint_dir).expect("remove checkpoint");
    let total = start.elapsed();
    Written {
        sync,
        total,
        bytes,
        fsync: Some(fsync_dir(target)),
        savepoint: None,
        leftover: Some(target.to_path_buf()),
    }
}

/// Bytes of `value` as a varint (its postcard encoding).
fn varint_len(value: u64) -> u64 {
    u64::from(64 - (value | 1).leading_zeros()).div_ceil(7)
}

/// Writes one file with `records` through a 1 MiB `BufWriter`; the
/// timing ends when the buffer is flushed, fsync is timed apart.
fn serialize_into(path: &Path, records: impl FnOnce(&mut BufWriter<File>)) -> Written {
    let start = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create file"));
    records(&mut out);
    let file = out.into_inner().expect("flush");
    let total = start.elapsed();
    let bytes = file.metadata().expect("stat").len();
    let fsync_start = Instant::now();
    file.sync_all().expect("fsync file");
    drop(file);
    File::open(path.parent().expect("parent dir"))
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
    Written {
        sync: Duration::ZERO,
        total,
        bytes,
        fsync: Some(fsync_start.elapsed()),
        savepoint: None,
        leftover: Some(path.to_path_buf()),
    }
}

/// The serialization floor: every entry of `flat`, key group by key group
/// and state by state, as key-group records (`varint(state) | lp(key) |
/// lp(namespace) | lp(value)`, varints written directly).
fn raw_serialize_flat(flat: &Flat, path: &Path) -> Written {
    serialize_into(path, |out| {
        let mut record = Vec::with_capacity(128);
        for (values, lists) in flat.values.iter().zip(&flat.lists) {
            for &(key, value) in values {
                record.clear();
                record.push(0);
                write_varint(&mut record, varint_len(key));
                write_varint(&mut record, key);
                record.push(0);
                write_varint(&mut record, varint_len(value));
                write_varint(&mut record, value);
                out.write_all(&record).expect("write");
            }
            for &(key, start, end) in lists {
                let elements = &flat.elements[start..end];
                let len: u64 = elements.iter().map(|&e| 1 + varint_len(e)).sum();
                record.clear();
                record.push(1);
                write_varint(&mut record, varint_len(key));
                write_varint(&mut record, key);
                record.push(0);
                write_varint(&mut record, len);
                for &element in elements {
                    write_varint(&mut record, varint_len(element));
                    write_varint(&mut record, element);
                }
                out.write_all(&record).expect("write");
            }
        }
    })
}

/// The same records straight from the hash maps, encoded with the codec.
fn raw_serialize_maps(raw: &RawHeap, path: &Path) -> Written {
    serialize_into(path, |out| {
        let mut record = Vec::with_capacity(128);
        let mut list = Vec::with_capacity(64);
        for (values, lists) in raw.values.iter().zip(&raw.lists) {
            for (&key, &value) in values {
                record.clear();
                write_varint(&mut record, 0);
                write_len_prefixed(&mut record, &encoded(key));
                write_len_prefixed(&mut record, &[]);
                write_len_prefixed(&mut record, &encoded(value));
                out.write_all(&record).expect("write");
            }
            for (&key, elements) in lists {
                list.clear();
                for &element in elements {
                    write_len_prefixed(&mut list, &encoded(element));
                }
                record.clear();
                write_varint(&mut record, 1);
                write_len_prefixed(&mut record, &encoded(key));
                write_len_prefixed(&mut record, &[]);
                write_len_prefixed(&mut record, &list);
                out.write_all(&record).expect("write");
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    RocksDb,
    Heap,
}

/// Restores of one round, in the order of even rounds: (savepoint, target).
const RESTORES: [(Config, Target); 5] = [
    (Config::RocksDbNative, Target::RocksDb),
    (Config::RocksDbCanonical, Target::RocksDb),
    (Config::RocksDbCanonical, Target::Heap),
    (Config::HeapCanonical, Target::Heap),
    (Config::HeapCanonical, Target::RocksDb),
];

fn restore_name(from: Config, target: Target) -> String {
    let target = match target {
        Target::RocksDb => "rocksdb",
        Target::Heap => "heap",
    };
    format!("{} -> {target}", from.name())
}

/// Opens the savepoint at `location` and restores it into a fresh backend
/// of `target`; returns the time, checks the contents untimed.
fn restore(
    location: &str,
    target: Target,
    rocksdb: &RocksDbBackendFactory,
    storage: &Arc<dyn CheckpointStorageAccess>,
    expected: &Expected,
) -> Duration {
    let start = Instant::now();
    let savepoint = Savepoint::open(location).expect("open savepoint");
    let context = context(storage, "restored", Some(&savepoint));
    let mut backend: Box<dyn KeyedStateBackend> = match target {
        Target::RocksDb => Box::new(rocksdb.create_backend(context).expect("restore")),
        Target::Heap => Box::new(HeapKeyedStateBackend::from_context(context).expect("restore")),
    };
    let took = start.elapsed();
    let states = register(&mut *backend);
    for (key, (value, list)) in expected {
        backend.set_key(key).expect("key in range");
        assert_eq!(
            states.value.value(&mut *backend).expect("get"),
            *value,
            "restored value of key {key}"
        );
        assert_eq!(
            states.list.get(&mut *backend).expect("get"),
            *list,
            "restored list of key {key}"
        );
    }
    took
}

// ---------------------------------------------------------------------------
// One state size.

/// The figures of one configuration over the rounds.
#[derive(Default)]
struct Series {
    sync: Vec<f64>,
    total: Vec<f64>,
    bytes: Vec<f64>,
    fsync: Vec<f64>,
    ratio: Vec<f64>,
    ratio_fsync: Vec<f64>,
    restore: Vec<f64>,
}

struct SizeResult {
    keys: usize,
    series: Vec<(Config, Series)>,
    cross: Vec<(String, Vec<f64>)>,
    canonical_over_native: Vec<f64>,
    canonical_over_native_restore: Vec<f64>,
}

fn run_size(n: usize, rounds: usize) -> SizeResult {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(
        ObjectStoreCheckpointStorage::local(root.join("checkpoints"), JOB)
            .expect("local checkpoint storage"),
    );
    let savepoints = root.join("savepoints");
    std::fs::create_dir_all(&savepoints).expect("savepoint dir");
    let savepoint_dir = savepoints.to_str().expect("utf-8 temp dir").to_string();
    let restore_factory = RocksDbBackendFactory::new(rocksdb_config(&root.join("restored")));

    let mut stores = Stores::new(root, &storage);
    let start = Instant::now();
    for k in 0..n as u64 {
        stores.write(k, k, k);
    }
    let populate = start.elapsed();
    let start = Instant::now();
    stores.compact();
    println!(
        "{n} keys: populated every store in {:.1} s, compacted both RocksDB instances in {:.1} s",
        populate.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );

    let shuffled = shuffled_keys(n);
    let step = (n / 100).max(1);
    let checked: Vec<u64> = shuffled
        .iter()
        .step_by((n / CHECKED_KEYS).max(1))
        .copied()
        .collect();
    let mut series: Vec<(Config, Series)> = Config::ALL
        .iter()
        .map(|&c| (c, Series::default()))
        .collect();
    let mut cross: Vec<(String, Vec<f64>)> = Vec::new();
    let mut canonical_over_native = Vec::new();
    let mut canonical_over_native_restore = Vec::new();
    let mut next_id = 0;
    for round in 0..rounds {
        let mut order = Config::ALL.to_vec();
        let mut restores = RESTORES.to_vec();
        if round % 2 == 1 {
            order.reverse();
            restores.reverse();
        }
        let mut written: Vec<(Config, Written)> = Vec::new();
        for config in order {
            next_id += 1;
            // Untimed: every RocksDB snapshot flushes exactly one batch.
            if config.uses_rocksdb() {
                stores.flush_rocksdb(next_id, &storage);
            }
            stores.quiesce();
            stores.update(&shuffled, next_id, step);
            let expected = || -> Expected {
                checked
                    .iter()
                    .map(|&k| (k, stores.raw_heap.get(k)))
                    .collect()
            };
            let w = match config {
                Config::RawCheckpointCopy => raw_checkpoint_copy(
                    &stores.raw_db,
                    &root.join(format!("raw-checkpoint-{next_id}")),
                    &savepoints.join(format!("raw-copy-{next_id}")),
                ),
                Config::RawSerialize => {
                    let flat = stores.raw_heap.flatten();
                    raw_serialize_flat(&flat, &savepoints.join(format!("raw-flat-{next_id}")))
                }
                Config::RawSerializeMaps => raw_serialize_maps(
                    &stores.raw_heap,
                    &savepoints.join(format!("raw-maps-{next_id}")),
                ),
                Config::RocksDbNative => {
                    let expected = expected();
                    savepoint(
                        &mut stores.rocksdb,
                        next_id,
                        SavepointFormat::Native,
                        &savepoint_dir,
                        expected,
                    )
                }
                Config::RocksDbCanonical => {
                    let expected = expected();
                    savepoint(
                        &mut stores.rocksdb,
                        next_id,
                        SavepointFormat::Canonical,
                        &savepoint_dir,
                        expected,
                    )
                }
                Config::HeapCanonical => {
                    let expected = expected();
                    savepoint(
                        &mut stores.heap,
                        next_id,
                        SavepointFormat::Canonical,
                        &savepoint_dir,
                        expected,
                    )
                }
            };
            written.push((config, w));
        }
        let find = |c: Config| {
            written
                .iter()
                .find(|(w, _)| *w == c)
                .map(|(_, w)| w)
                .expect("every configuration ran")
        };
        // Both raw serializations write the same records; one update batch
        // apart (1% of the lists one element longer), their sizes differ
        // by well under 2%.
        let flat_bytes = find(Config::RawSerialize).bytes as f64;
        let maps_bytes = find(Config::RawSerializeMaps).bytes as f64;
        assert!(
            (flat_bytes / maps_bytes - 1.0).abs() < 0.02,
            "raw serializations differ: {flat_bytes} vs {maps_bytes} bytes"
        );
        let mut restored: Vec<(Config, Target, Duration)> = Vec::new();
        for (from, target) in restores {
            let (savepoint, expected) = find(from).savepoint.as_ref().expect("a savepoint");
            let took = restore(
                &savepoint.location(),
                target,
                &restore_factory,
                &storage,
                expected,
            );
            restored.push((from, target, took));
        }

        for (config, s) in &mut series {
            let w = find(*config);
            s.sync.push(ms(w.sync));
            s.total.push(ms(w.total));
            s.bytes.push(w.bytes as f64);
            if let Some(fsync) = w.fsync {
                s.fsync.push(ms(fsync));
            }
            if let Some(base) = config.baseline().map(find) {
                let fsync = base.fsync.unwrap_or_default();
                s.ratio
                    .push(w.total.as_secs_f64() / base.total.as_secs_f64());
                s.ratio_fsync
                    .push(w.total.as_secs_f64() / (base.total + fsync).as_secs_f64());
            }
            let own = match config {
                Config::RocksDbNative | Config::RocksDbCanonical => Some(Target::RocksDb),
                Config::HeapCanonical => Some(Target::Heap),
                _ => None,
            };
            if let Some(&(_, _, took)) = restored
                .iter()
                .find(|(from, target, _)| from == config && Some(*target) == own)
            {
                s.restore.push(ms(took));
            }
        }
        for &(from, target, took) in &restored {
            let same = matches!(
                (from, target),
                (
                    Config::RocksDbNative | Config::RocksDbCanonical,
                    Target::RocksDb
                ) | (Config::HeapCanonical, Target::Heap)
            );
            if !same {
                let name = restore_name(from, target);
                match cross.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push(ms(took)),
                    None => cross.push((name, vec![ms(took)])),
                }
            }
        }
        canonical_over_native.push(
            find(Config::RocksDbCanonical).total.as_secs_f64()
                / find(Config::RocksDbNative).total.as_secs_f64(),
        );
        let restore_time = |from: Config| {
            restored
                .iter()
                .find(|(f, t, _)| *f == from && *t == Target::RocksDb)
                .map(|(_, _, took)| took.as_secs_f64())
                .expect("restored into rocksdb")
        };
        canonical_over_native_restore
            .push(restore_time(Config::RocksDbCanonical) / restore_time(Config::RocksDbNative));

        print!("  round {}:", round + 1);
        for (config, w) in &written {
            print!(" {} {:.1} ms;", config.name(), ms(w.total));
        }
        println!();
        print!("  round {} restores:", round + 1);
        for (from, target, took) in &restored {
            print!(" {} {:.1} ms;", restore_name(*from, *target), ms(*took));
        }
        println!();

        for (_, w) in written {
            if let Some((savepoint, _)) = w.savepoint {
                savepoint.dispose().expect("dispose savepoint");
            }
            if let Some(path) = w.leftover {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).expect("remove copy");
                } else {
                    std::fs::remove_file(&path).expect("remove file");
                }
            }
        }
    }
    SizeResult {
        keys: n,
        series,
        cross,
        canonical_over_native,
        canonical_over_native_restore,
    }
}

// ---------------------------------------------------------------------------
// Output.

fn print_table(results: &[SizeResult], rounds: usize) {
    println!(
        "savepoints, medians of {rounds} round(s); local-disk savepoint storage (fsynced); \
         ratio = total / baseline total in the same round, ratio+fs = total / (baseline total \
         + baseline fsync):"
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>10} {:>10} {:>11} {:>9} {:>7} {:>8}  baseline",
        "config",
        "keys",
        "sync ms",
        "total ms",
        "MiB",
        "restore ms",
        "fsync ms",
        "ratio",
        "ratio+fs"
    );
    let opt = |v: &[f64], precision: usize| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.*}", precision, median(v.to_vec()))
        }
    };
    for result in results {
        for (config, s) in &result.series {
            println!(
                "  {:<34} {:>9} {:>9.1} {:>10.1} {:>10.1} {:>11} {:>9} {:>7} {:>8}  {}",
                config.name(),
                result.keys,
                median(s.sync.clone()),
                median(s.total.clone()),
                mib(median(s.bytes.clone()) as u64),
                opt(&s.restore, 1),
                opt(&s.fsync, 1),
                opt(&s.ratio, 2),
                opt(&s.ratio_fsync, 2),
                config.baseline().map_or("(baseline)", Config::name),
            );
        }
        for (name, times) in &result.cross {
            println!(
                "  {:<34} {:>9} {:>9} {:>10} {:>10} {:>11.1}",
                format!("restore {name}"),
                result.keys,
                "",
                "",
                "",
                median(times.clone())
            );
        }
        println!(
            "  {} keys: rocksdb canonical / rocksdb native: savepoint total time {:.2}, restore \
             into rocksdb {:.2} (medians of the rounds' ratios)",
            result.keys,
            median(result.canonical_over_native.clone()),
            median(result.canonical_over_native_restore.clone())
        );
    }
}

/// `1000`, `500k`, `5m`.
fn parse_count(text: &str) -> usize {
    let text = text.trim().to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = text.strip_suffix('k') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 1_000_000)
    } else {
        (text.as_str(), 1)
    };
    digits
        .parse::<usize>()
        .ok()
        .filter(|&c| c > 0)
        .map(|c| c * factor)
        .unwrap_or_else(|| panic!("not a positive count: '{text}'"))
}

/// The value of `--name value` or `--name=value`.
fn arg(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let prefix = format!("--{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let bench_mode = args.iter().any(|a| a == "--bench");
    let keys: Vec<usize> = match arg(&args, "keys").or_else(|| {
        std::env::var("SAVEPOINT_BENCH_KEYS")
            .ok()
            .filter(|v| !v.is_empty())
    }) {
        Some(list) => list.split(',').map(parse_count).collect(),
        None if bench_mode => BENCH_KEYS.to_vec(),
        None => SMOKE_KEYS.to_vec(),
    };
    let rounds = match arg(&args, "rounds").or_else(|| {
        std::env::var("SAVEPOINT_BENCH_ROUNDS")
            .ok()
            .filter(|v| !v.is_empty())
    }) {
        Some(r) => parse_count(&r),
        None if bench_mode => BENCH_ROUNDS,
        None => 1,
    };
    let started = Instant::now();
    let mut results = Vec::new();
    for &n in &keys {
        results.push(run_size(n, rounds));
    }
    println!("all sizes in {:.1} s", started.elapsed().as_secs_f64());
    print_table(&results, rounds);
}
