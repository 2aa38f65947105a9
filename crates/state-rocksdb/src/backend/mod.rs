//! [`RocksDbKeyedStateBackend`]: the [`KeyedStateBackend`] on RocksDB.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rocksdb::{
    ColumnFamily, DBWithThreadMode, ReadOptions, SingleThreaded, WriteBatch, WriteOptions,
};
use state_api::backend::EntryVisitor;
use state_api::codec::check_list;
use state_api::descriptor::merge_namespace_values;
use state_api::key_group::KeyGroup;
use state_api::lifecycle::SnapshotUploads;
use state_api::registry::StateRegistry;
use state_api::storage::file_name_safe;
use state_api::timers::Timer;
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    Result, SnapshotOptions, SnapshotType, StateError, StateId, StateKind, StateMeta,
    StateRegistration,
};

use crate::factory::RocksDbConfig;
use crate::keys::{CurrentKey, KeyLayout, prefix_successor};
pub(crate) use crate::local_dir::LocalDir;
use crate::local_dir::sweep_abandoned;
use crate::snapshot::UploadTracker;
use crate::snapshot::eager::{EagerUploadStats, EagerUploader};
use crate::timers::{TimerChange, TimerQueue};
use crate::ttl::{DbOptions, TtlCompactor};
use crate::{options, restore, snapshot};
use families::ColumnFamilies;

mod families;
mod timer_access;

/// Records between two looks at the TTL compaction.
const OPS_PER_TTL_CHECK: u32 = 4096;

/// Name of this backend, as [`KeyedStateBackend::backend_name`], the
/// factory and snapshot handles report it.
pub const BACKEND_NAME: &str = "rocksdb";

/// The RocksDB handle type this crate uses (column families owned by the
/// DB; the backend is used from one thread at a time).
pub(crate) type Db = DBWithThreadMode<SingleThreaded>;

/// A [`StateError::Backend`] for a RocksDB failure.
pub(crate) fn db_error(e: rocksdb::Error) -> StateError {
    StateError::Backend {
        backend: BACKEND_NAME,
        source: Box::new(e),
    }
}

/// A [`StateError::Backend`] for a failure on local disk.
pub(crate) fn local_error(operation: &str, path: &Path, e: io::Error) -> StateError {
    StateError::Backend {
        backend: BACKEND_NAME,
        source: format!("{operation} '{}': {e}", path.display()).into(),
    }
}

/// The column family of state `name`: `s.<name>` for plain names, `x.<hex>`
/// otherwise, so any state name works and none collides with `default`.
pub(crate) fn column_family_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        format!("s.{name}")
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x.{hex}")
    }
}

/// Opens the DB in `path` with every column family it has, each with its
/// options (the `rocksdb` crate's `open_cf` would give column families
/// default options, without the list merge operator and the TTL filter).
pub(crate) fn open_db(options: &DbOptions, path: &Path, read_only: bool) -> Result<Db> {
    let base = &options.base;
    let names = if path.join("CURRENT").exists() {
        Db::list_cf(base, path).map_err(db_error)?
    } else {
        Vec::new()
    };
    let descriptors = names.into_iter().map(|name| {
        let cf_options = options.for_cf(&name);
        rocksdb::ColumnFamilyDescriptor::new(name, cf_options)
    });
    if read_only {
        Db::open_cf_descriptors_read_only(base, path, descriptors, false)
    } else {
        Db::open_cf_descriptors(base, path, descriptors)
    }
    .map_err(db_error)
}

/// Snapshot settings copied from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) incremental: bool,
    pub(crate) transfer_threads: usize,
}

/// A keyed state backend on an embedded RocksDB instance: one column family
/// per state, keys laid out as described in the crate docs, the WAL off.
///
/// Snapshots: regular checkpoints are incremental (only SST files that no
/// confirmed checkpoint uploaded go up) unless disabled in
/// [`RocksDbConfig`]; full checkpoints and canonical savepoints are written
/// in the key-group format every backend restores; native savepoints are
/// self-contained copies of the RocksDB files.
///
/// The synchronous phase of every snapshot flushes the memtables and
/// hard-links the live files into a local directory (a native RocksDB
/// checkpoint), so its cost is one flush of at most the write buffers,
/// independent of the amount of state; the asynchronous phase reads only
/// that directory and removes it.
///
/// Build it with [`RocksDbBackendFactory`](crate::RocksDbBackendFactory) or
/// [`from_context`](Self::from_context). Its files live in a fresh
/// subdirectory of the configured local directory, removed on drop (after
/// the DB closes; closing a WAL-less DB flushes its memtables once, since
/// the `rocksdb` crate does not expose `avoid_flush_during_shutdown`).
pub struct RocksDbKeyedStateBackend {
    // Field order is drop order: the DB closes before its directory goes.
    // Shared only with the TTL compaction thread, which `Drop` joins first.
    db: Arc<Db>,
    /// Each state's column family handle, by state id.
    families: ColumnFamilies,
    options: DbOptions,
    /// Compacts the old files of states with a time to live.
    ttl_compactor: TtlCompactor,
    /// Operations until the next look at the TTL compaction.
    ops_until_ttl_check: u32,
    write_options: WriteOptions,
    read_options: ReadOptions,
    /// Each state's part is its column family name (derived from the state
    /// name once, not per access).
    states: StateRegistry<String>,
    current: CurrentKey,
    layout: KeyLayout,
    operator: String,
    max_parallelism: u32,
    range: KeyGroupRange,
    /// Holds the bytes `get` and `map_get` return.
    value: Vec<u8>,
    /// Output buffer of fold functions.
    scratch: Vec<u8>,
    settings: Settings,
    /// Which uploaded SSTs later checkpoints may reuse.
    tracker: Arc<Mutex<UploadTracker>>,
    /// The files each snapshot uploaded itself, until its outcome is known.
    own_uploads: SnapshotUploads,
    /// Uploads new SST files in the background (incremental checkpoints
    /// with eager upload on); stopped before the DB closes.
    eager: Option<Arc<EagerUploader>>,
    /// The in-memory heads of the registered timer states.
    timers: HashMap<StateId, TimerQueue>,
    backend_id: String,
    snapshot_sequence: u64,
    dir: LocalDir,
}

impl Drop for RocksDbKeyedStateBackend {
    /// The TTL compaction thread holds the DB: it must end before the DB
    /// closes and its directory goes.
    fn drop(&mut self) {
        self.ttl_compactor.join();
        if let Some(eager) = &self.eager {
            eager.stop();
        }
    }
}

impl fmt::Debug for RocksDbKeyedStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbKeyedStateBackend")
            .field("operator", &self.operator)
            .field("backend_id", &self.backend_id)
            .field("max_parallelism", &self.max_parallelism)
            .field("key_group_range", &self.range)
            .field("dir", &self.dir.path())
            .field(
                "states",
                &self.states.iter().map(|s| &s.meta.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RocksDbKeyedStateBackend {
    /// Builds a backend from `context` with `config`, restoring its handles:
    /// what [`RocksDbBackendFactory`](crate::RocksDbBackendFactory) does,
    /// with the concrete type.
    ///
    /// # Errors
    /// Invalid contexts ([`BackendContext::validate`]); restore failures:
    /// [`StateError::Corrupt`], [`StateError::FileNotFound`],
    /// [`StateError::Restore`] for foreign handles or states restored with
    /// conflicting types; RocksDB and local disk failures
    /// ([`StateError::Backend`]).
    pub fn from_context(context: BackendContext, config: &RocksDbConfig) -> Result<Self> {
        context.validate()?;
        let backend_id = uuid::Uuid::new_v4().to_string();
        // A fresh directory per instance: two backends never share one.
        // Working directories of killed processes would fill the disk.
        sweep_abandoned(&config.local_dir);
        let dir = LocalDir::create(config.local_dir.join(format!(
            "{}-{backend_id}",
            file_name_safe(&context.operator)
        )))?;
        let options = DbOptions::new(options::build(config));
        let settings = Settings {
            incremental: config.incremental,
            transfer_threads: config.transfer_threads.max(1),
        };
        let restored = restore::restore(&context, dir.path(), &options, settings.transfer_threads)?;
        let mut tracker = UploadTracker::default();
        if let Some((checkpoint_id, files)) = restored.confirmed {
            tracker.seed(checkpoint_id, files);
        }
        let mut states = StateRegistry::default();
        for meta in &restored.metas {
            states.restore(meta, |meta| Ok(column_family_name(&meta.name)))?;
        }
        let db = Arc::new(restored.db);
        let families = ColumnFamilies::resolve(&db, states.iter().map(|s| s.data.as_str()))?;
        let tracker = Arc::new(Mutex::new(tracker));
        let eager = if settings.incremental && config.eager_upload {
            let uploader = EagerUploader::start(
                Arc::clone(&db),
                Arc::clone(&tracker),
                settings.transfer_threads,
            )
            .map_err(|e| local_error("start the eager uploader for", dir.path(), e))?;
            Some(Arc::new(uploader))
        } else {
            None
        };
        Ok(Self {
            db,
            families,
            options,
            ttl_compactor: TtlCompactor::default(),
            ops_until_ttl_check: OPS_PER_TTL_CHECK,
            write_options: options::write_options(),
            read_options: ReadOptions::default(),
            states,
            current: CurrentKey::default(),
            layout: KeyLayout::new(context.max_parallelism),
            operator: context.operator,
            max_parallelism: context.max_parallelism,
            range: context.key_group_range,
            value: Vec::new(),
            scratch: Vec::new(),
            settings,
            tracker,
            own_uploads: SnapshotUploads::default(),
            eager,
            timers: HashMap::new(),
            backend_id,
            snapshot_sequence: 0,
            dir,
        })
    }

    /// The unique id of this instance (recorded in incremental handles).
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The instance's local working directory (removed on drop).
    pub fn local_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The operator name given at construction.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// The checkpoint whose uploaded SST files the next incremental
    /// checkpoint may refer to: the last confirmed one, or the restored one.
    pub fn confirmed_checkpoint(&self) -> Option<u64> {
        self.tracker.lock().confirmed_checkpoint()
    }

    /// What the eager uploader did so far (`None` when it is off: full
    /// checkpoints, or [`RocksDbConfig::eager_upload`](crate::RocksDbConfig::eager_upload)
    /// false).
    pub fn eager_upload_stats(&self) -> Option<EagerUploadStats> {
        self.eager.as_ref().map(|eager| eager.stats())
    }

    /// Makes the eager uploader look for new SST files now and waits until
    /// it uploaded them (for tests and benchmarks that need a settled
    /// state; it starts uploading after the first incremental checkpoint
    /// named the storage). Returns at once when it is off.
    pub fn settle_eager_uploads(&self) {
        if let Some(eager) = &self.eager {
            eager.settle();
        }
    }

    /// Compacts every state's column family completely (maintenance, e.g.
    /// after a rescaling restore left clipped key groups behind; also what
    /// tests use to make SST files obsolete).
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn compact(&self) -> Result<()> {
        for index in 0..self.states.len() {
            let cf = self.families.by_index(index)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// A RocksDB property of the DB (e.g. `rocksdb.estimate-num-keys`)
    /// summed over the states' column families.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn property_sum(&self, name: &str) -> Result<u64> {
        let mut sum = 0;
        for index in 0..self.states.len() {
            let cf = self.families.by_index(index)?;
            sum += self
                .db
                .property_int_value_cf(cf, name)
                .map_err(db_error)?
                .unwrap_or(0);
        }
        Ok(sum)
    }

    /// Reads `key` of column family `cf_name` into `self.value`.
    fn read_into_value(&mut self, id: StateId, key: &[u8]) -> Result<bool> {
        let cf = self.families.get(id)?;
        read_value(&self.db, cf, key, &self.read_options, &mut self.value)
    }
}

/// Reads `key` of `cf` into `out` (the buffer `get` and `map_get` lend
/// out); `false` when absent.
#[inline]
fn read_value(
    db: &Db,
    cf: &ColumnFamily,
    key: &[u8],
    read: &ReadOptions,
    out: &mut Vec<u8>,
) -> Result<bool> {
    match db.get_pinned_cf_opt(cf, key, read).map_err(db_error)? {
        Some(bytes) => {
            out.clear();
            out.extend_from_slice(&bytes);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Read options bounded to keys starting with `prefix`.
fn prefix_read_options(prefix: &[u8]) -> ReadOptions {
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(prefix.to_vec());
    if let Some(upper) = prefix_successor(prefix) {
        read.set_iterate_upper_bound(upper);
    }
    read
}

/// Merges `value` into `acc`: lists concatenate, folds use the function.
impl KeyedStateBackend for RocksDbKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn register_state(&mut self, registration: StateRegistration) -> Result<StateId> {
        // Creating a column family needs the DB to itself.
        self.ttl_compactor.join();
        if let Some(eager) = &self.eager {
            eager.detach_db();
        }
        self.families.release();
        let registered = Arc::get_mut(&mut self.db)
            .ok_or_else(|| StateError::Backend {
                backend: BACKEND_NAME,
                source: "the DB is shared while a state is registered".into(),
            })
            .and_then(|db| {
                let options = &self.options;
                self.states.register(registration, |meta| {
                    let cf_name = column_family_name(&meta.name);
                    if db.cf_handle(&cf_name).is_none() {
                        db.create_cf(&cf_name, &options.for_new_cf(&cf_name))
                            .map_err(db_error)?;
                    }
                    Ok(cf_name)
                })
            });
        if let Some(eager) = &self.eager {
            eager.attach_db(&self.db);
        }
        self.families =
            ColumnFamilies::resolve(&self.db, self.states.iter().map(|s| s.data.as_str()))?;
        let id = registered?;
        let state = self.states.get(id)?;
        self.options
            .ttl
            .set(&state.data, state.meta.kind, state.ttl.as_ref());
        self.load_timer_queue(id)?;
        Ok(id)
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.states.metas()
    }

    #[inline]
    fn set_current_key(&mut self, encoded_key: &[u8]) -> Result<()> {
        self.ops_until_ttl_check -= 1;
        if self.ops_until_ttl_check == 0 {
            self.ops_until_ttl_check = OPS_PER_TTL_CHECK;
            self.ttl_compactor.maybe_start(&self.db, &self.options.ttl);
        }
        self.current.set(encoded_key, &self.layout, self.range)
    }

    fn current_key(&self) -> Option<&[u8]> {
        self.current.key()
    }

    fn current_key_group(&self) -> Option<KeyGroup> {
        self.current.key_group()
    }

    #[inline]
    fn get(&mut self, state: StateId, namespace: &[u8]) -> Result<Option<&[u8]>> {
        let st = self.states.get(state)?;
        if st.meta.kind.has_user_key() {
            return Err(st.meta.kind_mismatch(StateKind::Value));
        }
        let cf = self.families.get(state)?;
        let key = self.current.composite(namespace)?;
        let found = read_value(&self.db, cf, key, &self.read_options, &mut self.value)?;
        Ok(found.then_some(self.value.as_slice()))
    }

    #[inline]
    fn put(&mut self, state: StateId, namespace: &[u8], value: &[u8]) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind.has_user_key() {
            return Err(st.meta.kind_mismatch(StateKind::Value));
        }
        let is_list = st.meta.kind == StateKind::List;
        let cf = self.families.get(state)?;
        let key = self.current.composite(namespace)?;
        if is_list {
            if value.is_empty() {
                // The contract: writing an empty list clears.
                return self
                    .db
                    .delete_cf_opt(cf, key, &self.write_options)
                    .map_err(db_error);
            }
            check_list(value)?;
        }
        self.db
            .put_cf_opt(cf, key, value, &self.write_options)
            .map_err(db_error)
    }

    fn clear(&mut self, state: StateId, namespace: &[u8]) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind == StateKind::Timers {
            return Err(st.meta.kind_mismatch(StateKind::Value));
        }
        let cf = self.families.get(state)?;
        let is_map = st.meta.kind == StateKind::Map;
        let key = self.current.composite(namespace)?;
        if !is_map {
            return self
                .db
                .delete_cf_opt(cf, key, &self.write_options)
                .map_err(db_error);
        }
        // Point deletes of the entries, as Flink does: many range tombstones
        // would slow every later read.
        let mut batch = WriteBatch::default();
        let mut iter = self.db.raw_iterator_cf_opt(cf, prefix_read_options(key));
        iter.seek_to_first();
        while let Some(entry_key) = iter.key() {
            batch.delete_cf(cf, entry_key);
            iter.next();
        }
        iter.status().map_err(db_error)?;
        drop(iter);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(db_error)
    }

    fn list_append(
        &mut self,
        state: StateId,
        namespace: &[u8],
        encoded_elements: &[u8],
    ) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind != StateKind::List {
            return Err(st.meta.kind_mismatch(StateKind::List));
        }
        let cf = self.families.get(state)?;
        let key = self.current.composite(namespace)?;
        check_list(encoded_elements)?;
        if encoded_elements.is_empty() {
            // Nothing to append; an empty value would break "empty = absent".
            return Ok(());
        }
        // The merge operator concatenates: no read on the append path.
        self.db
            .merge_cf_opt(cf, key, encoded_elements, &self.write_options)
            .map_err(db_error)
    }

    fn accumulate(&mut self, state: StateId, namespace: &[u8], input: &[u8]) -> Result<()> {
        let st = self.states.get(state)?;
        let (true, Some(function)) = (st.meta.kind.needs_function(), st.function.as_ref()) else {
            return Err(st.meta.kind_mismatch(StateKind::Reducing));
        };
        let cf = self.families.get(state)?;
        let key = self.current.composite(namespace)?;
        let scratch = &mut self.scratch;
        scratch.clear();
        // Read-modify-write with the registered fold.
        match self
            .db
            .get_pinned_cf_opt(cf, key, &self.read_options)
            .map_err(db_error)?
        {
            Some(accumulator) => function.add(Some(&accumulator), input, scratch)?,
            None => function.add(None, input, scratch)?,
        }
        self.db
            .put_cf_opt(cf, key, &*scratch, &self.write_options)
            .map_err(db_error)
    }

    fn merge_namespaces(&mut self, state: StateId, target: &[u8], sources: &[&[u8]]) -> Result<()> {
        let st = self.states.get(state)?;
        let kind = st.meta.kind;
        if !matches!(
            kind,
            StateKind::List | StateKind::Reducing | StateKind::Aggregating
        ) {
            return Err(st.meta.kind_mismatch(StateKind::List));
        }
        let function = st.function.clone();
        let target_key = self.current.composite(target)?.to_vec();
        let merged = merge_namespace_values(kind, function.as_deref(), target, sources, |ns| {
            let key = self.current.composite(ns)?.to_vec();
            Ok(self
                .read_into_value(state, &key)?
                .then(|| self.value.clone()))
        })?;
        let Some(merged) = merged else {
            return Ok(()); // no source has a value: the target is unchanged
        };
        let mut source_keys = Vec::with_capacity(sources.len());
        for source in sources.iter().filter(|s| **s != target) {
            source_keys.push(self.current.composite(source)?.to_vec());
        }
        self.states.get(state)?;
        let cf = self.families.get(state)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, &target_key, &merged);
        for key in &source_keys {
            batch.delete_cf(cf, key);
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(db_error)
    }

    fn map_get(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<&[u8]>> {
        let st = self.states.get(state)?;
        if st.meta.kind != StateKind::Map {
            return Err(st.meta.kind_mismatch(StateKind::Map));
        }
        let cf = self.families.get(state)?;
        let key = self.current.composite_with_user_key(namespace, user_key)?;
        let found = read_value(&self.db, cf, key, &self.read_options, &mut self.value)?;
        Ok(found.then_some(self.value.as_slice()))
    }

    fn map_put(
        &mut self,
        state: StateId,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind != StateKind::Map {
            return Err(st.meta.kind_mismatch(StateKind::Map));
        }
        let cf = self.families.get(state)?;
        let key = self.current.composite_with_user_key(namespace, user_key)?;
        self.db
            .put_cf_opt(cf, key, value, &self.write_options)
            .map_err(db_error)
    }

    fn map_remove(&mut self, state: StateId, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind != StateKind::Map {
            return Err(st.meta.kind_mismatch(StateKind::Map));
        }
        let cf = self.families.get(state)?;
        let key = self.current.composite_with_user_key(namespace, user_key)?;
        self.db
            .delete_cf_opt(cf, key, &self.write_options)
            .map_err(db_error)
    }

    fn map_for_each(
        &mut self,
        state: StateId,
        namespace: &[u8],
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind == StateKind::Timers {
            return self.visit_timers_of_current_key(state, namespace, visitor);
        }
        if st.meta.kind != StateKind::Map {
            return Err(st.meta.kind_mismatch(StateKind::Map));
        }
        let cf = self.families.get(state)?;
        let prefix = self.current.composite(namespace)?;
        let prefix_len = prefix.len();
        // Bounded to the (key, namespace) prefix; RocksDB's byte order is
        // the contract's ascending user-key order.
        let mut iter = self.db.raw_iterator_cf_opt(cf, prefix_read_options(prefix));
        iter.seek_to_first();
        while let Some((key, value)) = iter.item() {
            let user_key = key.get(prefix_len..).unwrap_or_default();
            if visitor(user_key, value)?.is_break() {
                return Ok(());
            }
            iter.next();
        }
        iter.status().map_err(db_error)
    }

    fn for_each_key_and_namespace(
        &mut self,
        state: StateId,
        visitor: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let st = self.states.get(state)?;
        if st.meta.kind == StateKind::Timers {
            return self.visit_timer_keys(state, visitor);
        }
        let cf = self.families.get(state)?;
        let (lower, upper) = self.layout.range_bounds(self.range);
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(lower);
        read.set_iterate_upper_bound(upper);
        let mut iter = self.db.raw_iterator_cf_opt(cf, read);
        iter.seek_to_first();
        // Map entries of one (key, namespace) are adjacent: visit it once.
        let mut last: Vec<u8> = Vec::new();
        let mut first = true;
        while let Some(composite) = iter.key() {
            let parsed = self.layout.parse(composite).ok_or_else(|| {
                StateError::corrupt(
                    self.dir.path().display().to_string(),
                    format!("malformed key in the column family of '{}'", st.meta.name),
                )
            })?;
            let head = composite
                .get(..parsed.key_and_namespace_len)
                .unwrap_or(composite);
            if first || head != last.as_slice() {
                first = false;
                last.clear();
                last.extend_from_slice(head);
                if visitor(parsed.key, parsed.namespace)?.is_break() {
                    return Ok(());
                }
            }
            iter.next();
        }
        iter.status().map_err(db_error)
    }

    fn timer_add(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        self.change_timer(state, TimerChange::Add, namespace, timestamp)
    }

    fn timer_remove(&mut self, state: StateId, namespace: &[u8], timestamp: i64) -> Result<bool> {
        self.change_timer(state, TimerChange::Remove, namespace, timestamp)
    }

    fn timer_peek(&mut self, state: StateId) -> Result<Option<i64>> {
        self.peek_timer(state)
    }

    fn timer_poll(&mut self, state: StateId, up_to: i64) -> Result<Option<Timer>> {
        self.poll_timer(state, up_to)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        options: &SnapshotOptions,
        storage: Arc<dyn CheckpointStorageAccess>,
    ) -> Result<AsyncSnapshot> {
        self.snapshot_sequence += 1;
        let dir = self.dir.path().join(format!(
            "snapshot-{checkpoint_id}-{}",
            self.snapshot_sequence
        ));
        let kind = snapshot::SnapshotKind::of(options.snapshot_type, self.settings.incremental);
        if !matches!(options.snapshot_type, SnapshotType::Savepoint(_)) {
            let full = kind == snapshot::SnapshotKind::Full;
            self.tracker.lock().taken(checkpoint_id, full);
        }
        let frozen = snapshot::Frozen {
            dir: snapshot::create_checkpoint(&self.db, dir)?,
            checkpoint_id,
            metas: self.state_metas(),
            max_parallelism: self.max_parallelism,
            range: self.range,
            layout: self.layout,
            operator: self.operator.clone(),
            expiries: self
                .states
                .iter()
                .map(|state| {
                    let ttl = state.ttl.as_ref().filter(|t| t.cleanup.full_snapshot)?;
                    state.meta.ttl.as_ref()?;
                    Some((ttl.clone(), ttl.now_ms()))
                })
                .collect(),
        };
        Ok(match kind {
            snapshot::SnapshotKind::Full => snapshot::full::task(
                frozen,
                self.options.clone(),
                storage,
                self.own_uploads.clone(),
            ),
            snapshot::SnapshotKind::Incremental { share } => {
                let eager = self.eager.as_ref().filter(|_| share);
                if let Some(eager) = eager {
                    eager.use_storage(&storage, checkpoint_id);
                }
                snapshot::incremental::task(
                    frozen,
                    snapshot::incremental::Sharing {
                        share,
                        confirmed: if share {
                            self.tracker.lock().confirmed_files()
                        } else {
                            Default::default()
                        },
                        tracker: Arc::clone(&self.tracker),
                        own_uploads: self.own_uploads.clone(),
                        eager: eager.cloned(),
                        backend_id: self.backend_id.clone(),
                        threads: self.settings.transfer_threads,
                    },
                    storage,
                )
            }
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.tracker.lock().complete(checkpoint_id);
        // The store owns the files now; older snapshots' outcomes are
        // unknown, so their files are never deleted here.
        self.own_uploads.complete(checkpoint_id);
        self.own_uploads.forget_up_to(checkpoint_id);
        self.ttl_compactor.maybe_start(&self.db, &self.options.ttl);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.tracker.lock().abort(checkpoint_id);
        // Deletes what the snapshot uploaded itself (never a reused file).
        self.own_uploads.abort(checkpoint_id);
        Ok(())
    }

    // Shared files are deleted by the checkpoint store's registry; the
    // backend only stops relying on them through `complete`.
    fn notify_checkpoint_subsumed(&mut self, checkpoint_id: u64) -> Result<()> {
        self.own_uploads.forget_up_to(checkpoint_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_family_names_are_safe_and_distinct() {
        assert_eq!(column_family_name("count"), "s.count");
        assert_eq!(column_family_name("a/b"), "x.612f62");
        assert_eq!(column_family_name(""), "x.");
        assert_ne!(column_family_name("default"), "default");
    }
}
