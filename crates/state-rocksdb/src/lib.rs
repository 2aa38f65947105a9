//! # state-rocksdb: the RocksDB keyed state backend
//!
//! Keyed state in an embedded RocksDB instance per backend, organised as
//! Flink's `EmbeddedRocksDBStateBackend` organises it, with incremental
//! checkpoints and rescaling restore.
//!
//! * `keys`: the key layout. One column family per state; keys are
//!   `[key group (1 byte up to max parallelism 128, else 2 bytes BE)]
//!   [varint len][key][varint len][namespace][map user key]`, so one key
//!   group and one (key, namespace) are each one contiguous byte range. The
//!   current key's prefix is encoded once per `set_current_key` into a
//!   reused buffer.
//! * `backend`: [`RocksDbKeyedStateBackend`]. List state appends with a
//!   merge operator (`merge`) concatenating the state-api list encoding;
//!   map state is one RocksDB entry per map entry, iterated by prefix with
//!   iterate bounds (ascending user-key byte order); reducing and
//!   aggregating state read, fold and write. The WAL is off and nothing is
//!   fsynced: durability comes from checkpoints. Each state's column-family
//!   handle is resolved once per registration (`backend::families`), not
//!   looked up by name per operation.
//! * `options`: bounded memory ([`RocksDbMemory`]: one LRU block cache and
//!   one write buffer manager shared by every column family and backend that
//!   uses it), Flink's [`PredefinedOptions`], the [`CompactionStyle`] and a
//!   user [`OptionsHook`].
//! * `snapshot`: the synchronous phase flushes and hard-links a native
//!   RocksDB checkpoint; the asynchronous phase writes either the key-group
//!   format (full checkpoints, canonical savepoints: restorable by any
//!   backend) or uploads the RocksDB files, only the SST files no confirmed
//!   checkpoint uploaded already (incremental checkpoints). With eager upload
//!   (`snapshot::eager`, [`RocksDbConfig::eager_upload`]) a background thread
//!   uploads new SST files as flushes and compactions write them, and the
//!   asynchronous phase adopts those uploads ([`EagerUploadStats`]).
//! * `restore`: opens one covering incremental handle as the DB and clips
//!   foreign key groups with `delete_range`, or copies the backend's key
//!   groups from several handles (incremental or key-group) into a new DB.
//! * `transfer`: parallel uploads and downloads.
//! * `factory`: [`RocksDbBackendFactory`] and [`RocksDbConfig`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use state_api::{BackendContext, KeyGroupRange, KeyedStateBackendExt, StateBackendFactory,
//!     ValueStateDescriptor};
//! use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig};
//! # fn demo(storage: Arc<dyn state_api::CheckpointStorageAccess>) -> state_api::Result<()> {
//! let factory = RocksDbBackendFactory::new(RocksDbConfig::new("/tmp/my-job"));
//! let mut backend = factory.create(BackendContext {
//!     operator: "counter".into(),
//!     max_parallelism: 128,
//!     key_group_range: KeyGroupRange::all(128)?,
//!     restore: Vec::new(),
//!     storage,
//!     restore_storage: None,
//!     skip_restored_states: Vec::new(),
//! })?;
//! let count = backend.value_state(ValueStateDescriptor::<u64>::new("count"))?;
//! backend.set_key(&42u64)?;
//! count.update(&mut *backend, &1)?;
//! assert_eq!(count.value(&mut *backend)?, Some(1));
//! # Ok(()) }
//! ```

mod backend;
mod factory;
mod keys;
mod local_dir;
mod merge;
mod options;
mod restore;
mod snapshot;
mod timers;
mod transfer;
mod ttl;

pub use backend::{BACKEND_NAME, RocksDbKeyedStateBackend};
pub use factory::{DEFAULT_TRANSFER_THREADS, RocksDbBackendFactory, RocksDbConfig};
pub use options::{
    CompactionStyle, DEFAULT_MANAGED_MEMORY_BYTES, DEFAULT_WRITE_BUFFER_RATIO, OptionsHook,
    PredefinedOptions, RocksDbMemory,
};
/// The `rocksdb` crate this backend is built on, for [`OptionsHook`]s.
pub use rocksdb;
pub use snapshot::eager::EagerUploadStats;

/// Appends the RocksDB key under which the backend stores an entry: key
/// group, length-prefixed key and namespace, then the map state's user key
/// (see the crate docs). The layout is part of the stored format (native
/// savepoints and incremental checkpoints hold it); this is for tools and
/// benchmarks that read or write the same keys with raw `rocksdb` calls,
/// so none of them re-implements the layout.
///
/// `key` and `namespace` are the serialized forms (as
/// [`KeyedStateBackend::set_current_key`](state_api::KeyedStateBackend::set_current_key)
/// takes them); the key group is computed from `key`.
///
/// ```
/// let key = state_api::codec::encode(&7u64).unwrap();
/// let mut stored = Vec::new();
/// state_rocksdb::write_storage_key(&mut stored, 128, &key, &[], None);
/// assert_eq!(&stored[1..], &[1, 7, 0]); // [kg][len 1][7][namespace len 0]
/// ```
pub fn write_storage_key(
    out: &mut Vec<u8>,
    max_parallelism: u32,
    key: &[u8],
    namespace: &[u8],
    user_key: Option<&[u8]>,
) {
    let layout = keys::KeyLayout::new(max_parallelism);
    layout.write_composite(out, layout.key_group_of_key(key), key, namespace, user_key);
}

/// The name of the column family holding state `state_name` (one per
/// state), for the same tools as [`write_storage_key`].
pub fn column_family_name(state_name: &str) -> String {
    backend::column_family_name(state_name)
}
