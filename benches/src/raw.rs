//! Raw baselines: the storage work of each workload done directly, so a
//! backend's ratio to them is its own cost.
//!
//! * [`RawHashMaps`]: `std::collections::HashMap`s (default hasher) holding
//!   `u64` values, and for lists and maps the same encoded bytes the
//!   backends hold (state-api's list and value encodings), decoded as the
//!   typed API decodes them.
//! * [`RawRocksDb`]: one RocksDB instance with the backend's options
//!   ([`RocksDbConfig::rocksdb_options`](state_rocksdb::RocksDbConfig::rocksdb_options),
//!   WAL off), its column-family names and its key bytes
//!   ([`state_rocksdb::write_storage_key`]), so each operation is the
//!   backend's RocksDB call with nothing around it.

use std::collections::HashMap;
use std::hint::black_box;

use state_api::codec::{ListElements, decode, encode_inline, with_encoded, write_len_prefixed};
use state_rocksdb::rocksdb::{
    ColumnFamily, DBWithThreadMode, Direction, IteratorMode, ReadOptions, SingleThreaded,
    WriteOptions,
};

use crate::backends::{MAX_PARALLELISM, rocksdb_config};
use crate::workloads::{Contestant, KeySet, LIST_ELEMENTS, MAP_ENTRIES, Workload};

/// Appends `element` in the list encoding (one length-prefixed element),
/// encoded as the typed API encodes list elements.
fn framed(out: &mut Vec<u8>, element: u64) {
    with_encoded(&element, |encoded| {
        write_len_prefixed(out, encoded);
        Ok(())
    })
    .expect("u64 encodes");
}

/// The elements of an encoded list, decoded.
fn decode_list(bytes: &[u8]) -> Vec<u64> {
    ListElements::new(bytes)
        .map(|element| decode(element.expect("list element")).expect("u64"))
        .collect()
}

fn enc(value: u64) -> state_api::codec::InlineBytes {
    encode_inline(&value).expect("u64 encodes")
}

/// Hash maps doing each workload's storage work.
#[derive(Default)]
pub struct RawHashMaps {
    value: HashMap<u64, u64>,
    list: HashMap<u64, Vec<u8>>,
    long_list: HashMap<u64, Vec<u8>>,
    map: HashMap<u64, HashMap<Vec<u8>, Vec<u8>>>,
}

impl Contestant for RawHashMaps {
    fn name(&self) -> String {
        "raw HashMap".into()
    }

    fn populate(&mut self, keys: &KeySet) {
        for &key in &keys.setup {
            self.value.insert(key, key);
            let mut list = Vec::new();
            framed(&mut list, key);
            self.list.insert(key, list);
            let entries = (0..MAP_ENTRIES)
                .map(|uk| (enc(uk).to_vec(), enc(key).to_vec()))
                .collect();
            self.map.insert(key, entries);
        }
        for &key in &keys.long_lists {
            let mut list = Vec::new();
            (0..LIST_ELEMENTS).for_each(|e| framed(&mut list, e));
            self.long_list.insert(key, list);
        }
    }

    fn run(&mut self, workload: Workload, keys: &[u64], first: usize) {
        for (i, &key) in keys.iter().enumerate() {
            let i = first + i;
            match workload {
                Workload::ValueGet => _ = black_box(self.value.get(&key)),
                Workload::ValueUpdate | Workload::ValueAdd => {
                    _ = black_box(self.value.insert(key, key ^ 1));
                }
                Workload::ListGet => _ = black_box(self.list.get(&key).map(|l| decode_list(l))),
                Workload::ListGetLong => {
                    _ = black_box(self.long_list.get(&key).map(|l| decode_list(l)));
                }
                Workload::ListUpdate | Workload::ListAdd => {
                    let mut list = Vec::new();
                    framed(&mut list, key);
                    self.list.insert(key, list);
                }
                Workload::ListAppend => framed(self.list.entry(key).or_default(), key),
                Workload::ListAddAll => {
                    let list = self.list.entry(key).or_default();
                    (0..LIST_ELEMENTS).for_each(|e| framed(list, e));
                }
                Workload::MapGet => {
                    let found = self
                        .map
                        .get(&key)
                        .and_then(|m| m.get(&enc(Workload::user_key(i))[..]));
                    _ = black_box(found.map(|v| decode::<u64>(v).expect("u64")));
                }
                Workload::MapContains => {
                    let uk = enc(Workload::absent_user_key(i));
                    _ = black_box(self.map.get(&key).is_some_and(|m| m.contains_key(&uk[..])));
                }
                Workload::MapIsEmpty => {
                    _ = black_box(self.map.get(&key).is_none_or(HashMap::is_empty));
                }
                Workload::MapIterator | Workload::MapKeys | Workload::MapValues => {
                    let entries: Vec<(u64, u64)> = (self.map.get(&key).into_iter().flatten())
                        .map(|(uk, uv)| decode_entry(workload, uk, uv))
                        .collect();
                    _ = black_box(entries);
                }
                Workload::MapUpdate | Workload::MapAdd => {
                    let map = self.map.entry(key).or_default();
                    map.insert(enc(Workload::user_key(i)).to_vec(), enc(key).to_vec());
                }
                Workload::MapPutAll => {
                    let map = self.map.entry(key).or_default();
                    for uk in 0..MAP_ENTRIES {
                        map.insert(enc(uk).to_vec(), enc(key).to_vec());
                    }
                }
                Workload::MapRemove => {
                    if let Some(map) = self.map.get_mut(&key) {
                        map.remove(&enc(Workload::user_key(i))[..]);
                    }
                }
            }
        }
    }
}

/// What `workload` (an iteration) decodes of one entry.
fn decode_entry(workload: Workload, uk: &[u8], uv: &[u8]) -> (u64, u64) {
    match workload {
        Workload::MapKeys => (decode(uk).expect("u64"), 0),
        Workload::MapValues => (0, decode(uv).expect("u64")),
        _ => (decode(uk).expect("u64"), decode(uv).expect("u64")),
    }
}

type Db = DBWithThreadMode<SingleThreaded>;

/// A RocksDB instance with the backend's options, column families and key
/// bytes.
pub struct RawRocksDb {
    db: Db,
    write: WriteOptions,
    read: ReadOptions,
    _dir: tempfile::TempDir,
}

/// One `run` of [`RawRocksDb`]: the column families, looked up once, and
/// reused buffers.
struct RawCall<'a> {
    db: &'a Db,
    write: &'a WriteOptions,
    read: &'a ReadOptions,
    value: &'a ColumnFamily,
    list: &'a ColumnFamily,
    long_list: &'a ColumnFamily,
    map: &'a ColumnFamily,
    key: Vec<u8>,
    bytes: Vec<u8>,
}

impl RawRocksDb {
    /// Opens a fresh database with the suite's column families.
    ///
    /// # Panics
    /// When RocksDB cannot open it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = rocksdb_config(dir.path()).rocksdb_options();
        let mut db = Db::open(&options, dir.path().join("raw")).expect("raw db");
        for state in ["value", "list", "long_list", "map"] {
            db.create_cf(state_rocksdb::column_family_name(state), &options)
                .expect("column family");
        }
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Self {
            db,
            write,
            read: ReadOptions::default(),
            _dir: dir,
        }
    }

    fn call(&self) -> RawCall<'_> {
        let cf = |state: &str| {
            self.db
                .cf_handle(&state_rocksdb::column_family_name(state))
                .expect("column family")
        };
        RawCall {
            db: &self.db,
            write: &self.write,
            read: &self.read,
            value: cf("value"),
            list: cf("list"),
            long_list: cf("long_list"),
            map: cf("map"),
            key: Vec::with_capacity(32),
            bytes: Vec::with_capacity(1024),
        }
    }
}

impl Default for RawRocksDb {
    fn default() -> Self {
        Self::new()
    }
}

impl RawCall<'_> {
    /// Sets `self.key` to the storage key of `key` (and `user_key`).
    fn key(&mut self, key: u64, user_key: Option<u64>) {
        self.key.clear();
        let user_key = user_key.map(enc);
        state_rocksdb::write_storage_key(
            &mut self.key,
            MAX_PARALLELISM,
            &enc(key),
            &[],
            user_key.as_deref(),
        );
    }

    fn put(&self, cf: &ColumnFamily, value: &[u8]) {
        self.db
            .put_cf_opt(cf, &self.key, value, self.write)
            .expect("put");
    }

    fn get(&self, cf: &ColumnFamily) -> Option<state_rocksdb::rocksdb::DBPinnableSlice<'_>> {
        self.db
            .get_pinned_cf_opt(cf, &self.key, self.read)
            .expect("get")
    }

    /// Visits the entries of the current key's map (prefix `self.key`),
    /// stopping when `visit` says so.
    fn scan(&self, mut visit: impl FnMut(&[u8], &[u8]) -> bool) {
        let mut upper = self.key.clone();
        increment(&mut upper);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(upper);
        let iter = self.db.iterator_cf_opt(
            self.map,
            read,
            IteratorMode::From(&self.key, Direction::Forward),
        );
        let prefix = self.key.len();
        for item in iter {
            let (stored, value) = item.expect("iterate");
            if !visit(&stored[prefix..], &value) {
                break;
            }
        }
    }

    fn populate(&mut self, keys: &KeySet) {
        for &key in &keys.setup {
            self.key(key, None);
            self.put(self.value, &enc(key));
            self.bytes.clear();
            framed(&mut self.bytes, key);
            // As the backend's `add` writes it: a merge operand.
            self.db
                .merge_cf_opt(self.list, &self.key, &self.bytes, self.write)
                .expect("merge");
            for uk in 0..MAP_ENTRIES {
                self.key(key, Some(uk));
                self.put(self.map, &enc(key));
            }
        }
        self.bytes.clear();
        (0..LIST_ELEMENTS).for_each(|e| framed(&mut self.bytes, e));
        for &key in &keys.long_lists {
            self.key(key, None);
            self.put(self.long_list, &self.bytes);
        }
    }

    fn one(&mut self, workload: Workload, key: u64, i: usize) {
        match workload {
            Workload::ValueGet => {
                self.key(key, None);
                let found = self.get(self.value);
                _ = black_box(found.map(|v| decode::<u64>(&v).expect("u64")));
            }
            Workload::ValueUpdate | Workload::ValueAdd => {
                self.key(key, None);
                self.put(self.value, &enc(key ^ 1));
            }
            Workload::ListGet | Workload::ListGetLong => {
                self.key(key, None);
                let cf = if workload == Workload::ListGet {
                    self.list
                } else {
                    self.long_list
                };
                let found = self.get(cf);
                _ = black_box(found.map(|l| decode_list(&l)));
            }
            Workload::ListUpdate | Workload::ListAdd => {
                self.key(key, None);
                self.bytes.clear();
                framed(&mut self.bytes, key);
                self.put(self.list, &self.bytes);
            }
            Workload::ListAppend | Workload::ListAddAll => {
                self.key(key, None);
                self.bytes.clear();
                if workload == Workload::ListAppend {
                    framed(&mut self.bytes, key);
                } else {
                    (0..LIST_ELEMENTS).for_each(|e| framed(&mut self.bytes, e));
                }
                self.db
                    .merge_cf_opt(self.list, &self.key, &self.bytes, self.write)
                    .expect("merge");
            }
            Workload::MapGet | Workload::MapContains => {
                let uk = if workload == Workload::MapGet {
                    Workload::user_key(i)
                } else {
                    Workload::absent_user_key(i)
                };
                self.key(key, Some(uk));
                let found = self.get(self.map);
                _ = black_box(found.map(|v| decode::<u64>(&v).expect("u64")));
            }
            Workload::MapIsEmpty => {
                self.key(key, None);
                let mut empty = true;
                self.scan(|_, _| {
                    empty = false;
                    false
                });
                _ = black_box(empty);
            }
            Workload::MapIterator | Workload::MapKeys | Workload::MapValues => {
                self.key(key, None);
                let mut entries: Vec<(u64, u64)> = Vec::new();
                self.scan(|uk, uv| {
                    entries.push(decode_entry(workload, uk, uv));
                    true
                });
                _ = black_box(entries);
            }
            Workload::MapUpdate | Workload::MapAdd => {
                self.key(key, Some(Workload::user_key(i)));
                self.put(self.map, &enc(key));
            }
            Workload::MapPutAll => {
                for uk in 0..MAP_ENTRIES {
                    self.key(key, Some(uk));
                    self.put(self.map, &enc(key));
                }
            }
            Workload::MapRemove => {
                self.key(key, Some(Workload::user_key(i)));
                self.db
                    .delete_cf_opt(self.map, &self.key, self.write)
                    .expect("delete");
            }
        }
    }
}

/// The smallest byte string above every string starting with `bytes`.
fn increment(bytes: &mut Vec<u8>) {
    while let Some(last) = bytes.pop() {
        if last < u8::MAX {
            bytes.push(last + 1);
            return;
        }
    }
}

impl Contestant for RawRocksDb {
    fn name(&self) -> String {
        "raw RocksDB".into()
    }

    fn populate(&mut self, keys: &KeySet) {
        self.call().populate(keys);
    }

    fn run(&mut self, workload: Workload, keys: &[u64], first: usize) {
        let mut call = self.call();
        for (i, &key) in keys.iter().enumerate() {
            call.one(workload, key, first + i);
        }
    }
}
