//! The backends under test, built through their factories, and the
//! [`Contestant`] that runs every workload on any of them through the typed
//! state API.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    KeyedStateBackendExt, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    StateBackendFactory, ValueState, ValueStateDescriptor,
};
use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
use state_heap::HeapBackendFactory;
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};
use state_storage::ObjectStoreCheckpointStorage;

use crate::workloads::{Contestant, KeySet, LIST_ELEMENTS, MAP_ENTRIES, Workload};

/// Max parallelism of every benchmark backend (one key-group byte).
pub const MAX_PARALLELISM: u32 = 128;

/// Managed memory of the RocksDB backends and raw databases (Flink's
/// default of 256 MiB per slot).
pub const ROCKSDB_MEMORY: usize = 256 << 20;

/// The RocksDB settings of the benchmarks, backend and raw baseline alike.
///
/// # Panics
/// Never: the budget is above the documented minimum.
pub fn rocksdb_config(dir: &Path) -> RocksDbConfig {
    RocksDbConfig::new(dir)
        .with_memory(RocksDbMemory::new(ROCKSDB_MEMORY).expect("valid memory budget"))
}

/// A changelog factory over `delegate` with Flink's DSTL defaults and no
/// periodic materialization (nothing runs in the background).
///
/// # Panics
/// Never: the settings are valid.
pub fn changelog_factory(delegate: Arc<dyn StateBackendFactory>) -> ChangelogBackendFactory {
    ChangelogBackendFactory::new(
        delegate,
        DstlConfig::default(),
        MaterializationConfig {
            interval: None,
            ..Default::default()
        },
    )
    .expect("valid changelog settings")
}

/// The four backends the suite compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// `state-heap`.
    Heap,
    /// `state-rocksdb` (incremental checkpoints).
    RocksDb,
    /// `state-changelog` over the heap backend.
    ChangelogHeap,
    /// `state-changelog` over the RocksDB backend.
    ChangelogRocksDb,
}

impl BackendKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::RocksDb => "rocksdb",
            BackendKind::ChangelogHeap => "changelog(heap)",
            BackendKind::ChangelogRocksDb => "changelog(rocksdb)",
        }
    }

    /// Its factory; RocksDB keeps its files under `dir`.
    pub fn factory(self, dir: &Path) -> Arc<dyn StateBackendFactory> {
        let rocksdb = || Arc::new(RocksDbBackendFactory::new(rocksdb_config(dir)));
        match self {
            BackendKind::Heap => Arc::new(HeapBackendFactory::new()),
            BackendKind::RocksDb => rocksdb(),
            BackendKind::ChangelogHeap => {
                Arc::new(changelog_factory(Arc::new(HeapBackendFactory::new())))
            }
            BackendKind::ChangelogRocksDb => Arc::new(changelog_factory(rocksdb())),
        }
    }
}

/// A context for a fresh backend over the full key-group range.
///
/// # Panics
/// Never: the max parallelism is valid.
pub fn fresh_context(operator: &str, storage: Arc<dyn CheckpointStorageAccess>) -> BackendContext {
    BackendContext {
        operator: operator.into(),
        max_parallelism: MAX_PARALLELISM,
        key_group_range: KeyGroupRange::all(MAX_PARALLELISM).expect("valid max parallelism"),
        restore: Vec::new(),
        storage,
        restore_storage: None,
        skip_restored_states: Vec::new(),
    }
}

/// A fresh backend from `factory` over the full range with one registered
/// `ValueState<u64>` named `value`: the set-up of the scale and checkpoint
/// benches.
///
/// # Panics
/// When the backend cannot be built or the state registered.
pub fn value_backend(
    factory: &dyn StateBackendFactory,
    storage: Arc<dyn CheckpointStorageAccess>,
) -> (Box<dyn KeyedStateBackend>, ValueState<u64>) {
    let mut backend = factory
        .create(fresh_context("bench", storage))
        .expect("backend");
    let state = backend
        .value_state(ValueStateDescriptor::new("value"))
        .expect("register");
    (backend, state)
}

/// A backend with the suite's states: a value, a list, a list of long
/// lists and a map, all `u64`.
pub struct BackendUnderTest {
    name: String,
    backend: Box<dyn KeyedStateBackend>,
    value: ValueState<u64>,
    list: ListState<u64>,
    long_list: ListState<u64>,
    map: MapState<u64, u64>,
    /// What `listAddAll` appends.
    elements: Vec<u64>,
    // Dropped after the backend: RocksDB's files live here.
    _dir: tempfile::TempDir,
}

impl BackendUnderTest {
    /// A fresh backend of `kind` on in-memory checkpoint storage.
    ///
    /// # Panics
    /// When the backend cannot be built (the benchmark cannot go on).
    pub fn new(kind: BackendKind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage: Arc<dyn CheckpointStorageAccess> =
            Arc::new(ObjectStoreCheckpointStorage::in_memory("bench").expect("storage"));
        let factory = kind.factory(dir.path());
        let mut backend = factory
            .create(fresh_context(kind.name(), storage))
            .expect("backend");
        let b = &mut *backend;
        Self {
            name: kind.name().to_string(),
            value: b
                .value_state(ValueStateDescriptor::new("value"))
                .expect("register"),
            list: b
                .list_state(ListStateDescriptor::new("list"))
                .expect("register"),
            long_list: b
                .list_state(ListStateDescriptor::new("long_list"))
                .expect("register"),
            map: b
                .map_state(MapStateDescriptor::new("map"))
                .expect("register"),
            elements: (0..LIST_ELEMENTS).collect(),
            backend,
            _dir: dir,
        }
    }

    /// The backend, for measurements beyond the workloads.
    pub fn backend(&mut self) -> &mut dyn KeyedStateBackend {
        &mut *self.backend
    }

    fn one(&mut self, workload: Workload, key: u64, i: usize) -> state_api::Result<()> {
        let b = &mut *self.backend;
        b.set_key(&key)?;
        match workload {
            Workload::ValueGet => _ = black_box(self.value.value(b)?),
            Workload::ValueUpdate | Workload::ValueAdd => self.value.update(b, &(key ^ 1))?,
            Workload::ListGet => _ = black_box(self.list.get(b)?),
            Workload::ListGetLong => _ = black_box(self.long_list.get(b)?),
            Workload::ListUpdate | Workload::ListAdd => self.list.update(b, &[key])?,
            Workload::ListAppend => self.list.add(b, &key)?,
            Workload::ListAddAll => self.list.add_all(b, &self.elements)?,
            Workload::MapGet => _ = black_box(self.map.get(b, &Workload::user_key(i))?),
            Workload::MapContains => {
                _ = black_box(self.map.contains(b, &Workload::absent_user_key(i))?);
            }
            Workload::MapIsEmpty => _ = black_box(self.map.is_empty(b)?),
            Workload::MapIterator => _ = black_box(self.map.entries(b)?),
            Workload::MapKeys => _ = black_box(self.map.keys(b)?),
            Workload::MapValues => _ = black_box(self.map.values(b)?),
            Workload::MapUpdate | Workload::MapAdd => {
                self.map.put(b, &Workload::user_key(i), &key)?;
            }
            Workload::MapPutAll => {
                for user_key in 0..MAP_ENTRIES {
                    self.map.put(b, &user_key, &key)?;
                }
            }
            Workload::MapRemove => self.map.remove(b, &Workload::user_key(i))?,
        }
        Ok(())
    }
}

impl Contestant for BackendUnderTest {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn populate(&mut self, keys: &KeySet) {
        let b = &mut *self.backend;
        for &key in &keys.setup {
            b.set_key(&key).expect("key");
            self.value.update(b, &key).expect("value");
            self.list.add(b, &key).expect("list");
            for user_key in 0..MAP_ENTRIES {
                self.map.put(b, &user_key, &key).expect("map");
            }
        }
        for &key in &keys.long_lists {
            b.set_key(&key).expect("key");
            self.long_list.update(b, &self.elements).expect("list");
        }
    }

    fn run(&mut self, workload: Workload, keys: &[u64], first: usize) {
        for (i, &key) in keys.iter().enumerate() {
            self.one(workload, key, first + i).expect("state operation");
        }
    }
}
