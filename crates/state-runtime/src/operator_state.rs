//! The operator state backend: named lists and broadcast maps of opaque
//! bytes per parallel instance (a source's offsets), snapshotted into one
//! file per instance and checkpoint, and redistributed on restore as
//! Flink's `DefaultOperatorStateBackend` and
//! `RoundRobinOperatorStateRepartitioner` do.
//!
//! # Redistribution
//! * **Even split** ([`OperatorStateMode::SplitDistribute`]): at the same
//!   parallelism each instance gets its own elements back. Otherwise the
//!   elements of all old instances are concatenated in instance order and
//!   cut into contiguous ranges: `total / p` each, one more for the first
//!   `total mod p`; the instance that gets the first range rotates from one
//!   state name to the next, so many small states spread out.
//! * **Union** ([`OperatorStateMode::Union`]): every instance gets every
//!   element.
//! * **Broadcast** ([`OperatorStateMode::Broadcast`]): new instance `i`
//!   reads old instance `i mod old parallelism`'s copy.
//!
//! ```
//! use std::sync::Arc;
//! use state_api::CheckpointStorageAccess;
//! use state_runtime::operator_state::OperatorStateBackend;
//! use state_storage::ObjectStoreCheckpointStorage;
//!
//! let storage: Arc<dyn CheckpointStorageAccess> =
//!     Arc::new(ObjectStoreCheckpointStorage::in_memory("job")?);
//! // Two source instances keep their split offsets.
//! let mut handles = Vec::new();
//! for subtask in 0..2u32 {
//!     let mut state = OperatorStateBackend::new(subtask, 2);
//!     state.list_state("offsets").push(format!("split-{subtask}").into_bytes());
//!     handles.extend(state.snapshot(1, &*storage)?);
//! }
//! // Rescaled to one instance, it gets both.
//! let restored = OperatorStateBackend::restore(&handles, 0, 1, &*storage)?;
//! assert_eq!(restored.list("offsets").len(), 2);
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::BTreeMap;

use state_api::operator_state::{
    OperatorStateHandle, OperatorStateMode, OperatorStateWriter, SectionContent, read_section,
};
use state_api::{CheckpointStorageAccess, Result, StateError};

/// The operator state of one parallel instance. See the
/// [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorStateBackend {
    subtask: u32,
    parallelism: u32,
    lists: BTreeMap<String, (OperatorStateMode, Vec<Vec<u8>>)>,
    maps: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl OperatorStateBackend {
    /// Empty state of instance `subtask` of `parallelism`.
    pub fn new(subtask: u32, parallelism: u32) -> Self {
        Self {
            subtask,
            parallelism,
            ..Self::default()
        }
    }

    /// List state `name`, split evenly on rescaling (registers it). A name
    /// registered as union state keeps that mode; see
    /// [`register_list`](Self::register_list) for the checked form.
    pub fn list_state(&mut self, name: &str) -> &mut Vec<Vec<u8>> {
        &mut self
            .lists
            .entry(name.to_string())
            .or_insert_with(|| (OperatorStateMode::SplitDistribute, Vec::new()))
            .1
    }

    /// List state `name` with `mode` (even split or union).
    ///
    /// # Errors
    /// [`StateError::Config`] if `name` is registered with another mode, or
    /// `mode` is broadcast (use [`broadcast_state`](Self::broadcast_state)).
    pub fn register_list(
        &mut self,
        name: &str,
        mode: OperatorStateMode,
    ) -> Result<&mut Vec<Vec<u8>>> {
        if mode == OperatorStateMode::Broadcast {
            return Err(StateError::Config {
                key: name.to_string(),
                message: "broadcast state is a map: use broadcast_state".into(),
            });
        }
        let entry = self
            .lists
            .entry(name.to_string())
            .or_insert_with(|| (mode, Vec::new()));
        if entry.0 != mode {
            return Err(StateError::Config {
                key: name.to_string(),
                message: format!(
                    "operator state '{name}' is registered as {:?}, asked for as {mode:?}",
                    entry.0
                ),
            });
        }
        Ok(&mut entry.1)
    }

    /// Broadcast state `name` (registers it).
    pub fn broadcast_state(&mut self, name: &str) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        self.maps.entry(name.to_string()).or_default()
    }

    /// The elements of list state `name` (empty if it is not registered).
    pub fn list(&self, name: &str) -> &[Vec<u8>] {
        self.lists.get(name).map_or(&[], |(_, elements)| elements)
    }

    /// The entries of broadcast state `name`, if registered.
    pub fn map(&self, name: &str) -> Option<&BTreeMap<Vec<u8>, Vec<u8>>> {
        self.maps.get(name)
    }

    /// Names of the registered states.
    pub fn names(&self) -> Vec<&str> {
        self.lists
            .keys()
            .chain(self.maps.keys())
            .map(String::as_str)
            .collect()
    }

    /// Writes the state as one exclusive file of checkpoint `checkpoint_id`;
    /// `None` when no state is registered. The state is copied before the
    /// write, so a caller that needs an asynchronous phase clones the
    /// backend (cheap next to keyed state) and snapshots the clone on
    /// another thread.
    ///
    /// # Errors
    /// Storage errors of the write.
    pub fn snapshot(
        &self,
        checkpoint_id: u64,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<Option<OperatorStateHandle>> {
        if self.lists.is_empty() && self.maps.is_empty() {
            return Ok(None);
        }
        let mut writer = OperatorStateWriter::new();
        for (name, (mode, elements)) in &self.lists {
            writer.list(name, *mode, elements.iter().map(Vec::as_slice))?;
        }
        for (name, entries) in &self.maps {
            writer.map(
                name,
                entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            )?;
        }
        let (bytes, sections) = writer.finish();
        let file = crate::write_exclusive(
            storage,
            checkpoint_id,
            &format!("operator-{}", self.subtask),
            &bytes,
        )?;
        Ok(Some(OperatorStateHandle {
            subtask: self.subtask,
            parallelism: self.parallelism,
            file,
            sections,
        }))
    }

    /// The state of instance `subtask` of `parallelism`, redistributed from
    /// `handles` (the handles of every old instance, in any order).
    ///
    /// # Errors
    /// Storage and corruption errors reading the files;
    /// [`StateError::Restore`] when handles disagree on a state's mode or
    /// the old parallelism, or two handles claim the same instance.
    pub fn restore(
        handles: &[OperatorStateHandle],
        subtask: u32,
        parallelism: u32,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<Self> {
        let mut restored = Self::new(subtask, parallelism);
        if handles.is_empty() {
            return Ok(restored);
        }
        let mut ordered: Vec<&OperatorStateHandle> = handles.iter().collect();
        ordered.sort_by_key(|h| h.subtask);
        if let Some(pair) = ordered.windows(2).find(|w| w[0].subtask == w[1].subtask) {
            return Err(StateError::Restore(format!(
                "two operator state handles of instance {}",
                pair[0].subtask
            )));
        }
        let old_parallelism = ordered[0].parallelism;
        if let Some(odd) = ordered.iter().find(|h| h.parallelism != old_parallelism) {
            return Err(StateError::Restore(format!(
                "operator state handles disagree on the old parallelism ({} and {})",
                old_parallelism, odd.parallelism
            )));
        }
        // Every state, per old instance, in instance order.
        let mut lists: BTreeMap<String, (OperatorStateMode, Vec<InstanceList>)> = BTreeMap::new();
        let mut maps: BTreeMap<String, Vec<InstanceMap>> = BTreeMap::new();
        for handle in &ordered {
            let bytes = storage.read(&handle.file)?;
            for section in &handle.sections {
                match read_section(&handle.file.path, &bytes, section)? {
                    SectionContent::List(elements) => {
                        let entry = lists
                            .entry(section.name.clone())
                            .or_insert_with(|| (section.mode, Vec::new()));
                        if entry.0 != section.mode {
                            return Err(StateError::Restore(format!(
                                "operator state '{}' is {:?} in one handle, {:?} in another",
                                section.name, entry.0, section.mode
                            )));
                        }
                        entry.1.push((handle.subtask, elements));
                    }
                    SectionContent::Map(entries) => {
                        maps.entry(section.name.clone())
                            .or_default()
                            .push((handle.subtask, entries));
                    }
                }
            }
        }
        for (rotation, (name, (mode, per_instance))) in lists.into_iter().enumerate() {
            let elements = redistribute(
                mode,
                per_instance,
                old_parallelism,
                subtask,
                parallelism,
                rotation as u32,
            );
            restored.lists.insert(name, (mode, elements));
        }
        for (name, copies) in maps {
            let source = subtask % old_parallelism.max(1);
            let copy = copies
                .into_iter()
                .find(|(instance, _)| *instance == source)
                .map(|(_, entries)| entries)
                .unwrap_or_default();
            restored.maps.insert(name, copy.into_iter().collect());
        }
        Ok(restored)
    }
}

/// One old instance's elements of a list state.
type InstanceList = (u32, Vec<Vec<u8>>);

/// One old instance's copy of a broadcast state.
type InstanceMap = (u32, Vec<(Vec<u8>, Vec<u8>)>);

/// The elements instance `subtask` of `parallelism` gets of one list state.
fn redistribute(
    mode: OperatorStateMode,
    per_instance: Vec<InstanceList>,
    old_parallelism: u32,
    subtask: u32,
    parallelism: u32,
    rotation: u32,
) -> Vec<Vec<u8>> {
    if mode == OperatorStateMode::Union {
        return per_instance.into_iter().flat_map(|(_, e)| e).collect();
    }
    if parallelism == old_parallelism {
        return per_instance
            .into_iter()
            .find(|(instance, _)| *instance == subtask)
            .map(|(_, elements)| elements)
            .unwrap_or_default();
    }
    let all: Vec<Vec<u8>> = per_instance.into_iter().flat_map(|(_, e)| e).collect();
    let parallelism = parallelism.max(1) as usize;
    let base = all.len() / parallelism;
    let extra = all.len() % parallelism;
    // Which contiguous range this instance gets: ranges are handed out
    // starting at instance `rotation`.
    let position = (subtask as usize + parallelism - rotation as usize % parallelism) % parallelism;
    let start = position * base + position.min(extra);
    let len = base + usize::from(position < extra);
    all.into_iter().skip(start).take(len).collect()
}

#[cfg(test)]
mod tests;
