//! Channel state: the in-flight records an unaligned checkpoint persisted
//! for one task, the handle that describes them and their file format.
//!
//! Records are opaque bytes, each tagged with the input channel it came in
//! on and, on keyed edges, its key group, so that a restore at another
//! parallelism can route each record to the instance that owns its key
//! group. Records of non-keyed edges (`key_group: None`) can only be
//! restored at the parallelism they were written at.
//!
//! # File format (version 1)
//! ```text
//! file   = b"KSCH" | version u8 | record*
//! record = len u32 LE | bytes
//! ```
//! Consecutive records of one channel and key group form a run; the handle
//! lists the runs in file order with their offset and record count, so the
//! order of each channel's records is the file order of its runs.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::elements::{self, ElementsWriter};
use crate::snapshot::FileHandle;

/// First bytes of every channel state file.
pub const CHANNEL_STATE_MAGIC: [u8; 4] = *b"KSCH";

/// Version of the channel state file format this build writes and reads.
pub const CHANNEL_STATE_VERSION: u8 = 1;

/// Consecutive records of one channel (and key group) in a channel state
/// file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlightRun {
    /// The input channel the records came in on (the upstream instance).
    pub channel: u32,
    /// The records' key group on keyed edges; `None` on other edges.
    pub key_group: Option<u32>,
    /// Where the run starts in the file.
    pub offset: u64,
    /// How many records it holds.
    pub records: u64,
}

/// The in-flight records one task persisted for one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelStateHandle {
    /// The consuming instance that wrote it.
    pub subtask: u32,
    /// Its operator's parallelism then.
    pub parallelism: u32,
    /// Input channels the task had then (the upstream parallelism).
    pub channels: u32,
    /// The file.
    pub file: FileHandle,
    /// The runs, in file order.
    pub runs: Vec<InFlightRun>,
}

impl ChannelStateHandle {
    /// Records it holds.
    pub fn records(&self) -> u64 {
        self.runs
            .iter()
            .fold(0u64, |total, run| total.saturating_add(run.records))
    }
}

/// Builds a channel state file from records in the order the task
/// persisted them.
#[derive(Debug)]
pub struct ChannelStateWriter {
    file: ElementsWriter,
    runs: Vec<InFlightRun>,
}

impl Default for ChannelStateWriter {
    fn default() -> Self {
        Self {
            file: ElementsWriter::new(CHANNEL_STATE_MAGIC, CHANNEL_STATE_VERSION),
            runs: Vec::new(),
        }
    }
}

impl ChannelStateWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record of `channel` (with its key group on keyed edges).
    ///
    /// # Errors
    /// [`StateError::NotSupported`](crate::StateError::NotSupported) for a
    /// record of 4 GiB or more.
    pub fn add(&mut self, channel: u32, key_group: Option<u32>, record: &[u8]) -> Result<()> {
        let offset = self.file.offset();
        self.file.put(record)?;
        match self.runs.last_mut() {
            Some(run) if run.channel == channel && run.key_group == key_group => run.records += 1,
            _ => self.runs.push(InFlightRun {
                channel,
                key_group,
                offset,
                records: 1,
            }),
        }
        Ok(())
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes so far (for the persisted in-flight data metric).
    pub fn len(&self) -> u64 {
        self.file.offset()
    }

    /// The file's bytes and the runs for its handle.
    pub fn finish(self) -> (Vec<u8>, Vec<InFlightRun>) {
        (self.file.finish(), self.runs)
    }
}

/// Reads the records of `run` from the channel state file `bytes` (read
/// from `path`).
///
/// # Errors
/// [`StateError::UnsupportedVersion`](crate::StateError::UnsupportedVersion)
/// for a newer file; [`StateError::Corrupt`](crate::StateError::Corrupt)
/// for a bad magic, a run outside the file or a record past its end.
pub fn read_run(path: &str, bytes: &[u8], run: &InFlightRun) -> Result<Vec<Vec<u8>>> {
    elements::check_header(
        path,
        bytes,
        CHANNEL_STATE_MAGIC,
        CHANNEL_STATE_VERSION,
        "channel state",
    )?;
    elements::read_elements(
        path,
        bytes,
        run.offset,
        run.records,
        &format!("run of channel {}", run.channel),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateError;

    #[test]
    fn runs_follow_channel_and_key_group_changes() {
        let mut writer = ChannelStateWriter::new();
        for (channel, key_group, record) in [
            (0, Some(3), &b"a"[..]),
            (0, Some(3), b"b"),
            (1, Some(3), b"c"),
            (0, Some(4), b"d"),
            (2, None, b""),
        ] {
            writer.add(channel, key_group, record).unwrap();
        }
        let (bytes, runs) = writer.finish();
        let shapes: Vec<(u32, Option<u32>, u64)> = runs
            .iter()
            .map(|r| (r.channel, r.key_group, r.records))
            .collect();
        assert_eq!(
            shapes,
            vec![
                (0, Some(3), 2),
                (1, Some(3), 1),
                (0, Some(4), 1),
                (2, None, 1)
            ]
        );
        assert_eq!(
            read_run("f", &bytes, &runs[0]).unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            read_run("f", &bytes, &runs[3]).unwrap(),
            vec![Vec::<u8>::new()]
        );
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let mut writer = ChannelStateWriter::new();
        writer.add(0, None, b"abc").unwrap();
        let (bytes, runs) = writer.finish();
        let mut newer = bytes.clone();
        newer[4] = 2;
        assert!(matches!(
            read_run("f", &newer, &runs[0]),
            Err(StateError::UnsupportedVersion { found: 2, .. })
        ));
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(
            read_run("f", &foreign, &runs[0])
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let long = InFlightRun {
            records: 9,
            ..runs[0].clone()
        };
        assert!(
            read_run("f", &bytes, &long)
                .unwrap_err()
                .to_string()
                .contains("claims 9")
        );
        let early = InFlightRun {
            offset: 2,
            ..runs[0].clone()
        };
        assert!(
            read_run("f", &bytes, &early)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
    }
}
