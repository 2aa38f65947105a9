//! Snapshots: freeze (synchronous phase) and write (asynchronous phase).
//!
//! [`freeze`] shares every page of every key group of every state (and
//! copies the states' metadata): one reference-count increment per page and
//! one small allocation per key group and state, no entry read (see the
//! `table` module for the numbers). Later writes copy a shared page before
//! changing it (`Arc::make_mut`), so the frozen pages never change.
//! [`FrozenSnapshot::into_task`] then writes them in the key-group format on
//! whatever thread runs the task, and dropping the task releases them.

use std::borrow::Cow;
use std::sync::Arc;

use state_api::format::key_groups::{Entry, KeyGroupsWriter};
use state_api::lifecycle::SnapshotUploads;
use state_api::storage::{file_name_safe, write_with_retries};
use state_api::timers::encode_timestamp;
use state_api::ttl::StateTtlConfig;
use state_api::{
    AsyncSnapshot, CheckpointStorageAccess, KeyGroupRange, KeyedStateHandle, Result,
    SnapshotResult, StateError, StateMeta, StateScope,
};

use crate::backend::{BACKEND_NAME, HeapKeyedStateBackend};
use crate::key::split_composite_key;
use crate::table::Table;
use crate::ttl::Expiry;

/// The state of a backend at one point in time, ready to be written.
pub(crate) struct FrozenSnapshot {
    operator: String,
    max_parallelism: u32,
    range: KeyGroupRange,
    /// Metadata of every state, registered or restored; records refer to a
    /// state by its index here.
    metas: Vec<StateMeta>,
    /// The tables, in the order of `metas`.
    tables: Vec<Table>,
    /// Per state with a time to live and full-snapshot clean-up: its
    /// configuration and "now" at the synchronous phase; expired entries
    /// are left out.
    expiries: Vec<Option<(StateTtlConfig, i64)>>,
}

/// The synchronous phase: shares the tables' pages, copies the metadata.
pub(crate) fn freeze(backend: &HeapKeyedStateBackend) -> FrozenSnapshot {
    let states = backend.states();
    FrozenSnapshot {
        operator: backend.operator().to_string(),
        max_parallelism: state_api::KeyedStateBackend::max_parallelism(backend),
        range: state_api::KeyedStateBackend::key_group_range(backend),
        metas: states.metas(),
        tables: states.iter().map(|s| s.data.clone()).collect(),
        expiries: states
            .iter()
            .map(|s| {
                let ttl = s.ttl.as_ref().filter(|t| t.cleanup.full_snapshot)?;
                s.meta.ttl.as_ref()?;
                Some((ttl.clone(), ttl.now_ms()))
            })
            .collect(),
    }
}

impl FrozenSnapshot {
    /// The asynchronous phase as a task writing checkpoint `checkpoint_id`;
    /// the file it writes is recorded in `uploads` (deleted if the
    /// checkpoint is aborted). A failed upload starts over.
    pub(crate) fn into_task(
        self,
        checkpoint_id: u64,
        storage: Arc<dyn CheckpointStorageAccess>,
        uploads: SnapshotUploads,
    ) -> AsyncSnapshot {
        AsyncSnapshot::new(checkpoint_id, move || {
            let result = write_with_retries(|| self.write(checkpoint_id, &*storage))?;
            if let KeyedStateHandle::KeyGroups(handle) = &result.handle {
                uploads.record(checkpoint_id, &storage, vec![handle.file.clone()]);
            }
            Ok(result)
        })
    }

    /// Writes one key-group file: per key group in order, per state in
    /// order, the entries sorted by composite key (so equal state gives
    /// equal files, whatever the pages and their order), one record per map
    /// entry for map state and per timer (in time order) for timers.
    fn write(
        &self,
        checkpoint_id: u64,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<SnapshotResult> {
        let out = storage.create_output(
            checkpoint_id,
            StateScope::Exclusive,
            &format!("heap-{}", file_name_safe(&self.operator)),
        )?;
        let mut writer =
            KeyGroupsWriter::new(out, self.max_parallelism, self.range, self.metas.clone())?;
        for (index, key_group) in self.range.iter().enumerate() {
            writer.start_key_group(key_group)?;
            for (position, table) in self.tables.iter().enumerate() {
                let state = u32::try_from(position).map_err(|_| too_many_states())?;
                let expiry = self.expiries[position]
                    .as_ref()
                    .map(|(ttl, now)| Expiry { ttl, now: *now });
                let kind = self.metas[position].kind;
                match table {
                    Table::Bytes(table) => {
                        for (composite, value) in sorted(table.entries(index)) {
                            let (key, namespace) = split(composite)?;
                            let value = value.as_slice();
                            let alive = match &expiry {
                                Some(expiry) => expiry.alive(kind, value),
                                None => Some(Cow::Borrowed(value)),
                            };
                            let Some(value) = alive else { continue };
                            writer.add(Entry {
                                state,
                                key,
                                namespace,
                                user_key: None,
                                value: &value,
                            })?;
                        }
                    }
                    Table::Map(table) => {
                        for (composite, map) in sorted(table.entries(index)) {
                            let (key, namespace) = split(composite)?;
                            let alive = expiry.as_ref().and_then(|e| e.alive_map(map));
                            for (user_key, value) in alive.as_ref().unwrap_or(map).iter() {
                                writer.add(Entry {
                                    state,
                                    key,
                                    namespace,
                                    user_key: Some(user_key),
                                    value,
                                })?;
                            }
                        }
                    }
                    Table::Timers(timers) => {
                        // Time order, the same whatever happened before.
                        for timer in timers.timers(index) {
                            writer.add(Entry {
                                state,
                                key: &timer.key,
                                namespace: &timer.namespace,
                                user_key: Some(&encode_timestamp(timer.timestamp)),
                                value: &[],
                            })?;
                        }
                    }
                }
            }
        }
        let handle = writer.finish(BACKEND_NAME, checkpoint_id)?;
        let uploaded_bytes = handle.file.size;
        Ok(SnapshotResult {
            handle: KeyedStateHandle::KeyGroups(handle),
            uploaded_bytes,
        })
    }
}

/// The entries of one key group (all its pages), sorted by composite key.
fn sorted<'a, V>(entries: impl Iterator<Item = (&'a [u8], &'a V)>) -> Vec<(&'a [u8], &'a V)> {
    let mut entries: Vec<(&[u8], &V)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

fn split(composite: &[u8]) -> Result<(&[u8], &[u8])> {
    split_composite_key(composite).ok_or_else(|| {
        StateError::corrupt("<heap memory>", "malformed composite key in a state table")
    })
}

fn too_many_states() -> StateError {
    StateError::Config {
        key: "states".into(),
        message: "more than u32::MAX states".into(),
    }
}
