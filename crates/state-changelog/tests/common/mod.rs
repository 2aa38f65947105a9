//! Factories and storage shared by the changelog tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use state_api::StateBackendFactory;
use state_changelog::{ChangelogBackendFactory, DstlConfig, MaterializationConfig};
use state_heap::HeapBackendFactory;
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};

/// DSTL settings for tests: short batching delay, fast retries.
pub(crate) fn test_dstl() -> DstlConfig {
    DstlConfig {
        persist_delay: Duration::from_millis(1),
        retry_delay: Duration::from_millis(10),
        ..DstlConfig::default()
    }
}

/// Materialization only when a checkpoint needs one or a test asks.
pub(crate) fn manual_materialization() -> MaterializationConfig {
    MaterializationConfig {
        interval: None,
        ..MaterializationConfig::default()
    }
}

/// Changelog over heap.
pub(crate) fn changelog_heap(
    dstl: DstlConfig,
    materialization: MaterializationConfig,
) -> ChangelogBackendFactory {
    ChangelogBackendFactory::new(Arc::new(HeapBackendFactory::new()), dstl, materialization)
        .unwrap()
}

/// A RocksDB factory working in `local`.
pub(crate) fn rocksdb(local: &std::path::Path, incremental: bool) -> Arc<dyn StateBackendFactory> {
    let config = RocksDbConfig::new(local)
        .with_memory(RocksDbMemory::new(64 << 20).unwrap())
        .with_incremental(incremental);
    Arc::new(RocksDbBackendFactory::new(config))
}

/// Changelog over RocksDB working in `local`.
pub(crate) fn changelog_rocksdb(
    local: &std::path::Path,
    dstl: DstlConfig,
    materialization: MaterializationConfig,
) -> ChangelogBackendFactory {
    ChangelogBackendFactory::new(rocksdb(local, true), dstl, materialization).unwrap()
}

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use state_api::{
    BackendContext, CheckpointOutputStream, CheckpointStorageAccess, FileHandle, KeyGroupRange,
    KeyedStateHandle, Result, SnapshotOptions, SnapshotResult, StateError, StateScope,
};
use state_changelog::ChangelogKeyedStateBackend;

/// How [`FlakyStorage`] treats new files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Writes succeed.
    None,
    /// Closing a file fails (nothing is stored).
    FailWrites,
    /// Closing a file takes this long, then succeeds.
    Slow(Duration),
}

/// Checkpoint storage whose writes can be made to fail or stall.
pub(crate) struct FlakyStorage {
    pub(crate) inner: Arc<state_storage::ObjectStoreCheckpointStorage>,
    fault: Mutex<Fault>,
    /// Closes attempted while a fault was active.
    pub(crate) faulted_closes: AtomicU32,
}

impl FlakyStorage {
    pub(crate) fn new(inner: Arc<state_storage::ObjectStoreCheckpointStorage>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fault: Mutex::new(Fault::None),
            faulted_closes: AtomicU32::new(0),
        })
    }

    pub(crate) fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }
}

struct FlakyOutput {
    inner: Box<dyn CheckpointOutputStream>,
    storage: Arc<FlakyStorage>,
}

impl Write for FlakyOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointOutputStream for FlakyOutput {
    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn close(self: Box<Self>) -> Result<FileHandle> {
        let fault = *self.storage.fault.lock();
        if fault != Fault::None {
            self.storage.faulted_closes.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Fault::None => self.inner.close(),
            Fault::FailWrites => Err(StateError::storage(
                "put",
                "flaky",
                "injected storage failure",
            )),
            Fault::Slow(delay) => {
                std::thread::sleep(delay);
                self.inner.close()
            }
        }
    }
}

/// A handle to a [`FlakyStorage`] usable as `Arc<dyn CheckpointStorageAccess>`.
pub(crate) struct FlakyAccess(pub(crate) Arc<FlakyStorage>);

impl CheckpointStorageAccess for FlakyAccess {
    fn create_output(
        &self,
        checkpoint_id: u64,
        scope: StateScope,
        name_hint: &str,
    ) -> Result<Box<dyn CheckpointOutputStream>> {
        Ok(Box::new(FlakyOutput {
            inner: self
                .0
                .inner
                .create_output(checkpoint_id, scope, name_hint)?,
            storage: Arc::clone(&self.0),
        }))
    }
    fn read(&self, file: &FileHandle) -> Result<Bytes> {
        self.0.inner.read(file)
    }
    fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes> {
        self.0.inner.read_range(file, range)
    }
    fn delete(&self, file: &FileHandle) -> Result<()> {
        self.0.inner.delete(file)
    }
    fn location(&self) -> String {
        self.0.inner.location()
    }
}

/// A context for a fresh or restored backend.
pub(crate) fn context(
    storage: Arc<dyn CheckpointStorageAccess>,
    range: KeyGroupRange,
    restore: Vec<KeyedStateHandle>,
) -> BackendContext {
    BackendContext {
        operator: format!("test-{}", range.start()),
        max_parallelism: 128,
        key_group_range: range,
        restore,
        storage,
        restore_storage: None,
        skip_restored_states: Vec::new(),
    }
}

/// Both phases of checkpoint `id`, without notifications.
pub(crate) fn snapshot(
    backend: &mut ChangelogKeyedStateBackend,
    storage: &Arc<dyn CheckpointStorageAccess>,
    id: u64,
) -> Result<SnapshotResult> {
    use state_api::KeyedStateBackend;
    backend
        .snapshot(id, &SnapshotOptions::checkpoint(id), Arc::clone(storage))?
        .run()
}
