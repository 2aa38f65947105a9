//! RocksDB options: bounded shared memory, option profiles, the user hook.
//!
//! Memory: see [`RocksDbMemory`].
//!
//! # Profiles and the hook
//!
//! [`PredefinedOptions`] are Flink's predefined option sets, applied on top
//! of Flink's configurable defaults. An [`OptionsHook`] then sees the
//! [`rocksdb::Options`] and [`rocksdb::BlockBasedOptions`] and may change
//! anything; afterwards the memory settings and the hard-coded options are
//! applied again, so neither a profile nor the hook can unbound memory or
//! turn on the WAL, as in Flink (managed memory overrides options factories).

use std::fmt;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager};
use state_api::{Result, StateError};

use crate::factory::RocksDbConfig;
use crate::merge;

/// Default managed memory of a [`RocksDbMemory`]: 256 MiB.
pub const DEFAULT_MANAGED_MEMORY_BYTES: usize = 256 << 20;

/// Default share of managed memory for memtables (Flink's
/// `state.backend.rocksdb.memory.write-buffer-ratio`).
pub const DEFAULT_WRITE_BUFFER_RATIO: f64 = 0.5;

/// A user function adjusting RocksDB's DB and column-family options (one
/// `Options` serves both) and the block-based table options. It runs after
/// the [`PredefinedOptions`] profile; the memory settings (shared block
/// cache, write buffer manager, cached and pinned index/filter blocks), the
/// hard-coded settings (no fsync, no stats dumps) and the list merge
/// operator are applied after it, so it cannot unbound memory, as in Flink,
/// where managed memory overrides options factories.
pub type OptionsHook = Arc<dyn Fn(&mut Options, &mut BlockBasedOptions) + Send + Sync>;

/// The shared block cache and write buffer manager: the memory budget of
/// every backend (and every column family) built with it. Clone it to share
/// it across factories, like Flink shares managed memory within a slot.
///
/// # What a backend can use
///
/// The model is Flink's managed-memory mode
/// (`state.backend.rocksdb.memory.managed`): one budget, `M` bytes, split
/// between one LRU block cache and one `WriteBufferManager` that every
/// column family of every backend using the same `RocksDbMemory` shares.
/// With the write-buffer ratio `r` (default 0.5), as Flink computes it:
///
/// * block cache capacity `M * (3 - r) / 3`;
/// * write-buffer-manager capacity `M * 2r / 3`; the memtables are charged
///   to the block cache, so they count against the cache's capacity;
/// * RocksDB's write buffer manager lets memtables overshoot its capacity by
///   up to half before it stalls, which is why it gets only `2/3` of its
///   share: `M * 2r / 3 * 1.5 = M * r`, so cache plus memtables stay within
///   about `M`;
/// * index and filter blocks live in the cache with high priority (so they
///   count too); those of L0 files are pinned.
///
/// What a backend can use beyond `M`: RocksDB's per-DB fixed overhead (table
/// reader objects, a few hundred KB per open DB), blocks pinned by open
/// iterators, and the read buffers of restores and full snapshots (one SST
/// file per transfer thread while it is downloaded or uploaded, plus one
/// key-group block of a full snapshot). The block cache is not strict
/// (`strict_capacity_limit = false`), as in Flink.
///
/// The ratio of the high-priority pool cannot be set through RocksDB's C API
/// (which the `rocksdb` crate wraps): RocksDB's default of 0.5 applies, not
/// Flink's 0.1. Index and filter blocks are still inserted with high
/// priority, so they are evicted last.
#[derive(Clone)]
pub struct RocksDbMemory {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    managed_bytes: usize,
    cache_capacity: usize,
    write_buffer_capacity: usize,
    cache: Cache,
    write_buffer_manager: WriteBufferManager,
}

impl fmt::Debug for RocksDbMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbMemory")
            .field("managed_bytes", &self.inner.managed_bytes)
            .field("block_cache_capacity", &self.inner.cache_capacity)
            .field("write_buffer_capacity", &self.inner.write_buffer_capacity)
            .finish()
    }
}

impl RocksDbMemory {
    /// A budget of `managed_memory_bytes` with the default write-buffer
    /// ratio (0.5).
    ///
    /// # Errors
    /// [`StateError::Config`] for a budget below 1 MiB.
    pub fn new(managed_memory_bytes: usize) -> Result<Self> {
        Self::with_write_buffer_ratio(managed_memory_bytes, DEFAULT_WRITE_BUFFER_RATIO)
    }

    /// A budget of `managed_memory_bytes`, of which about
    /// `write_buffer_ratio` goes to memtables (see the type docs).
    ///
    /// # Errors
    /// [`StateError::Config`] for a budget below 1 MiB or a ratio outside
    /// `(0, 1)`.
    pub fn with_write_buffer_ratio(
        managed_memory_bytes: usize,
        write_buffer_ratio: f64,
    ) -> Result<Self> {
        if managed_memory_bytes < (1 << 20) {
            return Err(StateError::Config {
                key: "rocksdb.memory.managed-bytes".into(),
                message: format!("{managed_memory_bytes} bytes is below the minimum of 1 MiB"),
            });
        }
        if !(write_buffer_ratio > 0.0 && write_buffer_ratio < 1.0) {
            return Err(StateError::Config {
                key: "rocksdb.memory.write-buffer-ratio".into(),
                message: format!("{write_buffer_ratio} is not strictly between 0 and 1"),
            });
        }
        let total = managed_memory_bytes as f64;
        let cache_capacity = (total * (3.0 - write_buffer_ratio) / 3.0) as usize;
        let write_buffer_capacity = (total * 2.0 * write_buffer_ratio / 3.0) as usize;
        let cache = Cache::new_lru_cache(cache_capacity);
        // Memtables are charged to the cache: one budget for both.
        let write_buffer_manager = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_capacity,
            false,
            cache.clone(),
        );
        Ok(Self {
            inner: Arc::new(MemoryInner {
                managed_bytes: managed_memory_bytes,
                cache_capacity,
                write_buffer_capacity,
                cache,
                write_buffer_manager,
            }),
        })
    }

    /// The budget this was built with.
    pub fn managed_memory_bytes(&self) -> usize {
        self.inner.managed_bytes
    }

    /// Capacity of the shared block cache.
    pub fn block_cache_capacity(&self) -> usize {
        self.inner.cache_capacity
    }

    /// Capacity of the shared write buffer manager.
    pub fn write_buffer_capacity(&self) -> usize {
        self.inner.write_buffer_capacity
    }

    /// Bytes the block cache holds now (memtable reservations included).
    pub fn block_cache_usage(&self) -> usize {
        self.inner.cache.get_usage()
    }

    /// Bytes of memtables now.
    pub fn write_buffer_usage(&self) -> usize {
        self.inner.write_buffer_manager.get_usage()
    }
}

/// Flink's predefined option profiles (`PredefinedOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PredefinedOptions {
    /// Flink's configurable defaults only (`DEFAULT`).
    #[default]
    Default,
    /// For spinning disks (`SPINNING_DISK_OPTIMIZED`): more background
    /// threads, all files kept open, dynamic level sizes.
    SpinningDisk,
    /// For flash (`FLASH_SSD_OPTIMIZED`): more background threads, all files
    /// kept open.
    Flash,
}

/// RocksDB's compaction style (Flink's
/// `state.backend.rocksdb.compaction.style`; FIFO, which drops old files and
/// with them state, is not offered).
///
/// ```
/// use state_rocksdb::{CompactionStyle, RocksDbConfig};
/// let config = RocksDbConfig::default().with_compaction_style(CompactionStyle::Universal);
/// assert_eq!(config.compaction_style, CompactionStyle::Universal);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompactionStyle {
    /// Leveled compaction (`LEVEL`, Flink's default). While the state fits
    /// in level 1 (256 MiB), every compaction out of level 0 rewrites all
    /// of it, and the next incremental checkpoint uploads all of it.
    #[default]
    Level,
    /// Universal compaction (`UNIVERSAL`): sorted runs merged by size, each
    /// byte rewritten fewer times, so incremental checkpoints upload far
    /// less after compactions (see `benches/checkpoint_series.rs`), at the
    /// cost of more space (up to twice the state before a full merge) and
    /// more sorted runs per read.
    Universal,
}

/// Block size of Flink's defaults (`state.backend.rocksdb.block.blocksize`).
const BLOCK_SIZE: usize = 4 << 10;

/// Builds the options every DB and column family of a backend uses.
pub(crate) fn build(config: &RocksDbConfig) -> Options {
    let memory = &config.memory;
    let mut options = Options::default();
    let mut table = BlockBasedOptions::default();
    // Flink's configurable defaults (RocksDBConfigurableOptions).
    options.set_max_background_jobs(2);
    options.set_compaction_style(rocksdb::DBCompactionStyle::Level);
    options.set_level_compaction_dynamic_level_bytes(false);
    options.set_compression_type(DBCompressionType::Snappy);
    options.set_target_file_size_base(64 << 20);
    options.set_max_bytes_for_level_base(256 << 20);
    options.set_write_buffer_size(64 << 20);
    options.set_max_write_buffer_number(2);
    options.set_min_write_buffer_number_to_merge(1);
    options.set_max_log_file_size(25 << 20);
    options.set_keep_log_file_num(4);
    table.set_block_size(BLOCK_SIZE);
    match config.profile {
        PredefinedOptions::Default => {}
        PredefinedOptions::SpinningDisk => {
            options.increase_parallelism(4);
            options.set_max_open_files(-1);
            options.set_level_compaction_dynamic_level_bytes(true);
        }
        PredefinedOptions::Flash => {
            options.increase_parallelism(4);
            options.set_max_open_files(-1);
        }
    }
    if config.compaction_style == CompactionStyle::Universal {
        options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
    }
    if let Some(hook) = &config.options_hook {
        hook(&mut options, &mut table);
    }
    // Managed memory wins over profiles and the hook.
    table.set_block_cache(&memory.inner.cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_manager(&memory.inner.write_buffer_manager);
    // Hard-coded as in Flink: durability comes from checkpoints, not from
    // RocksDB (the WAL is off per write, see `write_options`).
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_use_fsync(false);
    options.set_stats_dump_period_sec(0);
    // Flink also sets `avoid_flush_during_shutdown`, which the `rocksdb`
    // crate does not expose (and which is not a mutable option): dropping a
    // backend flushes its memtables once before the directory is removed.
    options.set_merge_operator_associative(merge::NAME, merge::concat);
    options
}

/// Write options of every write: no WAL (checkpoints are the durability).
pub(crate) fn write_options() -> rocksdb::WriteOptions {
    let mut write = rocksdb::WriteOptions::default();
    write.disable_wal(true);
    write.set_sync(false);
    write
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_split_follows_flink() {
        let memory = RocksDbMemory::new(300 << 20).expect("valid");
        assert_eq!(memory.block_cache_capacity(), 250 << 20);
        assert_eq!(memory.write_buffer_capacity(), 100 << 20);
        assert!(RocksDbMemory::new(1000).is_err());
        assert!(RocksDbMemory::with_write_buffer_ratio(1 << 30, 1.5).is_err());
    }
}
