//! Persisting and recovering in-flight records (channel state) of
//! unaligned checkpoints.
//!
//! While a task's unaligned checkpoint runs, it adds to an
//! [`InFlightWriter`] every record a barrier overtook
//! ([`Received::Barrier::overtaken`](crate::channel::Received::Barrier)) and
//! every record it reads from a channel the handler is
//! [capturing](crate::input::BarrierHandler::capturing), encoded, with its
//! channel and (on keyed edges) key group. When the last barrier arrived it
//! writes them as one file and acknowledges with the handle.
//!
//! On restore, [`recover`] gives each new instance the records it must
//! process before any new input: at the same parallelism its own; at
//! another, every record whose key group it owns, from every old instance,
//! each channel's records in their original order. Records of non-keyed
//! edges cannot be re-routed by key and are refused at another
//! parallelism with an error that says so.
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{CheckpointStorageAccess, KeyGroupRange};
//! use state_runtime::channel_state::{InFlightWriter, recover};
//! use state_storage::ObjectStoreCheckpointStorage;
//!
//! let storage: Arc<dyn CheckpointStorageAccess> =
//!     Arc::new(ObjectStoreCheckpointStorage::in_memory("job")?);
//! let mut writer = InFlightWriter::new(7, 0, 1, 2);
//! writer.add(1, Some(5), b"late record")?;
//! let handle = writer.finish(&*storage)?.expect("one record");
//! // Rescaled to two instances of 128 key groups: key group 5 is instance 0's.
//! let range = KeyGroupRange::new(0, 63)?;
//! let recovered = recover(&[handle], 0, 2, Some(range), &*storage)?;
//! assert_eq!(recovered[0].records, vec![b"late record".to_vec()]);
//! # Ok::<(), state_api::StateError>(())
//! ```

use state_api::channel_state::{ChannelStateHandle, ChannelStateWriter, read_run};
use state_api::{CheckpointStorageAccess, KeyGroupRange, Result, StateError};

/// Collects the in-flight records of one task's unaligned checkpoint.
#[derive(Debug)]
pub struct InFlightWriter {
    checkpoint_id: u64,
    subtask: u32,
    parallelism: u32,
    channels: u32,
    writer: ChannelStateWriter,
}

impl InFlightWriter {
    /// Records of checkpoint `checkpoint_id` of instance `subtask` of
    /// `parallelism`, whose input has `channels` channels.
    pub fn new(checkpoint_id: u64, subtask: u32, parallelism: u32, channels: u32) -> Self {
        Self {
            checkpoint_id,
            subtask,
            parallelism,
            channels,
            writer: ChannelStateWriter::new(),
        }
    }

    /// The checkpoint.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// Adds a record of `channel` (with its key group on keyed edges).
    ///
    /// # Errors
    /// [`StateError::NotSupported`] for a record of 4 GiB or more.
    pub fn add(&mut self, channel: u32, key_group: Option<u32>, record: &[u8]) -> Result<()> {
        self.writer.add(channel, key_group, record)
    }

    /// Bytes persisted so far (`lastCheckpointPersistedData`).
    pub fn persisted_bytes(&self) -> u64 {
        self.writer.len()
    }

    /// Writes the records as one exclusive file of the checkpoint; `None`
    /// when there were none.
    ///
    /// # Errors
    /// Storage errors of the write.
    pub fn finish(
        self,
        storage: &dyn CheckpointStorageAccess,
    ) -> Result<Option<ChannelStateHandle>> {
        if self.writer.is_empty() {
            return Ok(None);
        }
        let (bytes, runs) = self.writer.finish();
        let file = crate::write_exclusive(
            storage,
            self.checkpoint_id,
            &format!("channel-{}", self.subtask),
            &bytes,
        )?;
        Ok(Some(ChannelStateHandle {
            subtask: self.subtask,
            parallelism: self.parallelism,
            channels: self.channels,
            file,
            runs,
        }))
    }
}

/// Records recovered for one old input channel, in their original order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredChannel {
    /// The old instance that persisted them.
    pub old_subtask: u32,
    /// The input channel they came in on then (the upstream instance).
    pub channel: u32,
    /// The encoded records.
    pub records: Vec<Vec<u8>>,
}

/// The in-flight records instance `subtask` of `parallelism` processes
/// before new input, from `handles` (every old instance's): its own at the
/// same parallelism; at another, the records whose key group lies in
/// `key_groups`.
///
/// # Errors
/// [`StateError::Restore`] when the parallelism changed and a handle holds
/// records of a non-keyed edge (or `key_groups` is `None`), or two handles
/// claim one instance; storage and corruption errors reading the files.
pub fn recover(
    handles: &[ChannelStateHandle],
    subtask: u32,
    parallelism: u32,
    key_groups: Option<KeyGroupRange>,
    storage: &dyn CheckpointStorageAccess,
) -> Result<Vec<RecoveredChannel>> {
    let mut ordered: Vec<&ChannelStateHandle> = handles.iter().collect();
    ordered.sort_by_key(|h| h.subtask);
    if let Some(pair) = ordered.windows(2).find(|w| w[0].subtask == w[1].subtask) {
        return Err(StateError::Restore(format!(
            "two channel state handles of instance {}",
            pair[0].subtask
        )));
    }
    let mut recovered: Vec<RecoveredChannel> = Vec::new();
    for handle in ordered {
        let same_layout = handle.parallelism == parallelism;
        if same_layout && handle.subtask != subtask {
            continue;
        }
        let bytes = storage.read(&handle.file)?;
        for run in &handle.runs {
            let wanted = if same_layout {
                true
            } else {
                match (run.key_group, key_groups) {
                    (Some(group), Some(range)) => range.contains(group),
                    _ => {
                        return Err(StateError::Restore(format!(
                            "in-flight records of instance {} (channel {}) were on a non-keyed \
                             edge and cannot be re-routed from parallelism {} to {parallelism}; \
                             restore at the same parallelism, or from a checkpoint without \
                             in-flight records (an aligned one)",
                            handle.subtask, run.channel, handle.parallelism
                        )));
                    }
                }
            };
            if !wanted {
                continue;
            }
            let records = read_run(&handle.file.path, &bytes, run)?;
            match recovered.last_mut() {
                Some(last) if last.old_subtask == handle.subtask && last.channel == run.channel => {
                    last.records.extend(records);
                }
                _ => recovered.push(RecoveredChannel {
                    old_subtask: handle.subtask,
                    channel: run.channel,
                    records,
                }),
            }
        }
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use state_storage::ObjectStoreCheckpointStorage;

    use super::*;

    fn storage() -> Arc<dyn CheckpointStorageAccess> {
        Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap())
    }

    /// Two old instances; instance `i` persisted records `(channel, key
    /// group, text)`.
    fn handles(storage: &dyn CheckpointStorageAccess, keyed: bool) -> Vec<ChannelStateHandle> {
        let records: [&[(u32, u32, &str)]; 2] = [
            &[(0, 1, "a0"), (1, 100, "b0"), (0, 1, "a1"), (0, 100, "c0")],
            &[(1, 2, "d0"), (1, 90, "e0")],
        ];
        records
            .iter()
            .enumerate()
            .filter_map(|(subtask, records)| {
                let mut writer = InFlightWriter::new(1, subtask as u32, 2, 2);
                for (channel, group, text) in *records {
                    let group = keyed.then_some(*group);
                    writer.add(*channel, group, text.as_bytes()).unwrap();
                }
                writer.finish(storage).unwrap()
            })
            .collect()
    }

    fn texts(recovered: &[RecoveredChannel]) -> Vec<(u32, u32, Vec<String>)> {
        recovered
            .iter()
            .map(|r| {
                (
                    r.old_subtask,
                    r.channel,
                    r.records
                        .iter()
                        .map(|b| String::from_utf8(b.clone()).unwrap())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn the_same_parallelism_gets_its_own_records_in_order() {
        let storage = storage();
        let handles = handles(&*storage, false);
        let recovered = recover(&handles, 0, 2, None, &*storage).unwrap();
        assert_eq!(
            texts(&recovered),
            vec![
                (0, 0, vec!["a0".to_string()]),
                (0, 1, vec!["b0".to_string()]),
                (0, 0, vec!["a1".to_string(), "c0".to_string()]),
            ]
        );
    }

    #[test]
    fn rescaling_routes_records_by_key_group() {
        let storage = storage();
        let handles = handles(&*storage, true);
        let low = KeyGroupRange::new(0, 63).unwrap();
        let high = KeyGroupRange::new(64, 127).unwrap();
        let first = recover(&handles, 0, 2 + 1, Some(low), &*storage).unwrap();
        assert_eq!(
            texts(&first),
            vec![
                (0, 0, vec!["a0".to_string(), "a1".to_string()]),
                (1, 1, vec!["d0".to_string()]),
            ]
        );
        let second = recover(&handles, 1, 3, Some(high), &*storage).unwrap();
        assert_eq!(
            texts(&second),
            vec![
                (0, 1, vec!["b0".to_string()]),
                (0, 0, vec!["c0".to_string()]),
                (1, 1, vec!["e0".to_string()]),
            ]
        );
    }

    #[test]
    fn non_keyed_records_cannot_be_rescaled() {
        let storage = storage();
        let handles = handles(&*storage, false);
        let error = recover(
            &handles,
            0,
            3,
            Some(KeyGroupRange::new(0, 63).unwrap()),
            &*storage,
        )
        .unwrap_err();
        assert!(error.to_string().contains("non-keyed edge"), "{error}");
        let twice = vec![handles[0].clone(), handles[0].clone()];
        assert!(recover(&twice, 0, 2, None, &*storage).is_err());
    }

    #[test]
    fn nothing_persisted_writes_no_file() {
        let storage = storage();
        assert_eq!(
            InFlightWriter::new(1, 0, 1, 1).finish(&*storage).unwrap(),
            None
        );
    }
}
