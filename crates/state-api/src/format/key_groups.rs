//! The key-group snapshot format: full snapshots every backend can read.
//!
//! A file holds the entries of one key-group range, grouped by key group in
//! ascending order. The handle ([`KeyGroupsStateHandle`]) records where each
//! key group's block starts, so restoring any subset of key groups (after
//! rescaling) reads one contiguous byte range and nothing else. Every block
//! carries its own CRC-32C, so partial reads are verified too.
//!
//! ```text
//! header      "KSKG" | format version u8 | codec version u8
//! meta block  len u32 LE | crc32c u32 LE | FileMeta (CBOR, see evolving; postcard in version 1)
//! per key group, in order of the range:
//!   block     len u64 LE | crc32c u32 LE | records
//! record      varint(state index) | lp(key) | lp(namespace) | [lp(user key), map state only] | lp(value)
//! ```
//! `lp(x)` is `varint(len) ++ x`. The state index points into
//! `FileMeta::states`. List values are in the list encoding of
//! [`crate::codec`]; map state has one record per map entry, so the format is
//! the same whatever backend wrote it. Timer states have one record per
//! timer, shaped as a map entry: the user key is the timestamp
//! ([`encode_timestamp`](crate::timers::encode_timestamp)), the value empty.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::v1::Upgrade as _;
use crate::codec::{
    CODEC_VERSION, read_len_prefixed, read_varint, write_len_prefixed, write_varint,
};
use crate::descriptor::StateMeta;
use crate::error::{Result, StateError};
use crate::key_group::{KeyGroup, KeyGroupRange};
use crate::snapshot::KeyGroupsStateHandle;
use crate::storage::{CheckpointOutputStream, CheckpointStorageAccess};

/// First bytes of every key-group file.
pub const MAGIC: [u8; 4] = *b"KSKG";

/// Version of this layout this build writes; it reads every version from 1
/// on. Version 2 encodes the metadata block in [`super::evolving`]'s CBOR,
/// version 1 in postcard; version 3 added timer states
/// ([`StateKind::Timers`](crate::StateKind::Timers)) and the time to live
/// in the state metadata.
pub const FORMAT_VERSION: u8 = 3;

const HEADER_LEN: usize = MAGIC.len() + 2;
const BLOCK_HEADER_LEN: usize = 8 + 4;

/// Metadata stored at the start of a key-group file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMeta {
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Key groups in the file.
    pub key_group_range: KeyGroupRange,
    /// The states, indexed by the records' state index.
    pub states: Vec<StateMeta>,
}

/// One record: an entry of one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Index into [`FileMeta::states`].
    pub state: u32,
    /// Encoded key.
    pub key: &'a [u8],
    /// Encoded namespace.
    pub namespace: &'a [u8],
    /// Encoded user key (map state only).
    pub user_key: Option<&'a [u8]>,
    /// Encoded value (list state: the list encoding).
    pub value: &'a [u8],
}

/// Streams a snapshot into a key-group file.
///
/// Call [`start_key_group`](Self::start_key_group) for key groups in ascending
/// order (skipped ones are written as empty), [`add`](Self::add) entries of the
/// current key group, then [`finish`](Self::finish).
pub struct KeyGroupsWriter {
    out: Box<dyn CheckpointOutputStream>,
    meta: FileMeta,
    offsets: Vec<u64>,
    block: Vec<u8>,
    current: Option<KeyGroup>,
}

impl KeyGroupsWriter {
    /// Starts a file for `states` over `key_group_range`, writing the header.
    ///
    /// # Errors
    /// Storage errors.
    pub fn new(
        mut out: Box<dyn CheckpointOutputStream>,
        max_parallelism: u32,
        key_group_range: KeyGroupRange,
        states: Vec<StateMeta>,
    ) -> Result<Self> {
        let meta = FileMeta {
            max_parallelism,
            key_group_range,
            states,
        };
        let meta_bytes = super::evolving::encode(&meta);
        let mut header = Vec::with_capacity(HEADER_LEN + 8 + meta_bytes.len());
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&[FORMAT_VERSION, CODEC_VERSION]);
        header.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc32c::crc32c(&meta_bytes).to_le_bytes());
        header.extend_from_slice(&meta_bytes);
        write_all(&mut *out, &header)?;
        Ok(Self {
            out,
            offsets: Vec::with_capacity(key_group_range.len()),
            meta,
            block: Vec::new(),
            current: None,
        })
    }

    /// Begins the block of `key_group`; key groups must ascend.
    ///
    /// # Errors
    /// [`StateError::KeyGroupOutOfRange`] or an out-of-order key group
    /// ([`StateError::InvalidKeyGroups`]); storage errors.
    pub fn start_key_group(&mut self, key_group: KeyGroup) -> Result<()> {
        let range = self.meta.key_group_range;
        if !range.contains(key_group) {
            return Err(StateError::KeyGroupOutOfRange { key_group, range });
        }
        if self.current.is_some_and(|c| c >= key_group) {
            return Err(StateError::InvalidKeyGroups(format!(
                "key group {key_group} written after key group {:?}",
                self.current
            )));
        }
        self.flush_block()?;
        // Key groups skipped since the last one get empty blocks.
        let next = range.start() + self.offsets.len() as u32;
        for _ in next..key_group {
            self.offsets.push(self.out.position());
            write_block(&mut *self.out, &[])?;
        }
        self.current = Some(key_group);
        Ok(())
    }

    /// Adds an entry to the current key group's block.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`] before any `start_key_group`, or for
    /// a state index / user key that does not fit the state's kind.
    pub fn add(&mut self, entry: Entry<'_>) -> Result<()> {
        if self.current.is_none() {
            return Err(StateError::InvalidKeyGroups(
                "entry written before start_key_group".into(),
            ));
        }
        let is_map = self
            .meta
            .states
            .get(entry.state as usize)
            .map(|s| s.kind.has_user_key())
            .ok_or_else(|| StateError::UnknownState {
                state_id: entry.state,
            })?;
        if is_map != entry.user_key.is_some() {
            return Err(StateError::InvalidKeyGroups(format!(
                "entry of state {} must {}have a user key",
                entry.state,
                if is_map { "" } else { "not " }
            )));
        }
        write_varint(&mut self.block, u64::from(entry.state));
        write_len_prefixed(&mut self.block, entry.key);
        write_len_prefixed(&mut self.block, entry.namespace);
        if let Some(user_key) = entry.user_key {
            write_len_prefixed(&mut self.block, user_key);
        }
        write_len_prefixed(&mut self.block, entry.value);
        Ok(())
    }

    /// Writes the remaining (empty) blocks, closes the file and returns its
    /// handle.
    ///
    /// # Errors
    /// Storage errors.
    pub fn finish(mut self, backend: &str, checkpoint_id: u64) -> Result<KeyGroupsStateHandle> {
        self.flush_block()?;
        while self.offsets.len() < self.meta.key_group_range.len() {
            self.offsets.push(self.out.position());
            write_block(&mut *self.out, &[])?;
        }
        let file = self.out.close()?;
        Ok(KeyGroupsStateHandle {
            backend: backend.to_string(),
            checkpoint_id,
            max_parallelism: self.meta.max_parallelism,
            key_group_range: self.meta.key_group_range,
            file,
            key_group_offsets: self.offsets,
        })
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.current.is_some() && self.offsets.len() < self.current_index() + 1 {
            self.offsets.push(self.out.position());
            write_block(&mut *self.out, &self.block)?;
            self.block.clear();
        }
        Ok(())
    }

    fn current_index(&self) -> usize {
        self.current
            .map_or(0, |kg| (kg - self.meta.key_group_range.start()) as usize)
    }
}

fn write_block(out: &mut dyn CheckpointOutputStream, records: &[u8]) -> Result<()> {
    let mut header = [0u8; BLOCK_HEADER_LEN];
    header[..8].copy_from_slice(&(records.len() as u64).to_le_bytes());
    header[8..].copy_from_slice(&crc32c::crc32c(records).to_le_bytes());
    write_all(out, &header)?;
    write_all(out, records)
}

fn write_all(out: &mut dyn CheckpointOutputStream, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .map_err(|e| StateError::storage("write", "checkpoint output stream", e))
}

/// Reads a key-group file.
pub struct KeyGroupsReader<'a> {
    handle: &'a KeyGroupsStateHandle,
    meta: FileMeta,
}

impl<'a> KeyGroupsReader<'a> {
    /// Opens the file of `handle`: checks the handle's offsets, reads and
    /// verifies the header and metadata.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] naming the file, [`StateError::FileNotFound`],
    /// storage errors.
    pub fn open(
        storage: &dyn CheckpointStorageAccess,
        handle: &'a KeyGroupsStateHandle,
    ) -> Result<Self> {
        let path = &handle.file.path;
        let corrupt = |reason: String| StateError::corrupt(path.clone(), reason);
        if handle.key_group_offsets.len() != handle.key_group_range.len() {
            return Err(corrupt(format!(
                "handle has {} key-group offsets for {}",
                handle.key_group_offsets.len(),
                handle.key_group_range
            )));
        }
        let offsets_ascend = handle.key_group_offsets.windows(2).all(|w| w[0] <= w[1]);
        let last_fits = handle
            .key_group_offsets
            .last()
            .is_none_or(|o| *o <= handle.file.size);
        if !offsets_ascend || !last_fits {
            return Err(corrupt(
                "key-group offsets are not ascending within the file".into(),
            ));
        }
        let meta_end = handle
            .key_group_offsets
            .first()
            .copied()
            .unwrap_or(handle.file.size);
        if meta_end < (HEADER_LEN + 8) as u64 {
            return Err(corrupt(format!(
                "metadata ends at {meta_end}, before the header does"
            )));
        }
        let head = storage.read_range(&handle.file, 0..meta_end)?;
        check_versions(&handle.file.path, &head)?;
        let meta = parse_header(&head).map_err(corrupt)?;
        if meta.key_group_range != handle.key_group_range
            || meta.max_parallelism != handle.max_parallelism
        {
            return Err(corrupt(format!(
                "file holds {} of max parallelism {}, handle says {} of {}",
                meta.key_group_range,
                meta.max_parallelism,
                handle.key_group_range,
                handle.max_parallelism
            )));
        }
        Ok(Self { handle, meta })
    }

    /// The file's metadata (its states).
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// Visits every entry of the key groups in `wanted` that the file holds,
    /// in key-group order, reading only their blocks.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] naming the file and key group; storage errors;
    /// the visitor's errors.
    pub fn for_each_entry(
        &self,
        storage: &dyn CheckpointStorageAccess,
        wanted: KeyGroupRange,
        mut visitor: impl FnMut(KeyGroup, Entry<'_>) -> Result<()>,
    ) -> Result<()> {
        let range = self.handle.key_group_range.intersection(&wanted);
        if range.is_empty() {
            return Ok(());
        }
        let offsets = &self.handle.key_group_offsets;
        let first = (range.start() - self.handle.key_group_range.start()) as usize;
        let last = first + range.len();
        let start = offsets[first];
        let end = offsets.get(last).copied().unwrap_or(self.handle.file.size);
        let bytes: Bytes = storage.read_range(&self.handle.file, start..end)?;
        let mut rest: &[u8] = &bytes;
        for (index, key_group) in range.iter().enumerate() {
            let corrupt = |reason: &str| {
                StateError::corrupt(
                    self.handle.file.path.clone(),
                    format!("key group {key_group}: {reason}"),
                )
            };
            // A tampered offset in the handle must not go unnoticed just
            // because this restore started before it.
            let position = start + (bytes.len() - rest.len()) as u64;
            if offsets.get(first + index) != Some(&position) {
                return Err(corrupt(
                    "block does not start at the offset the handle records",
                ));
            }
            if rest.len() < BLOCK_HEADER_LEN {
                return Err(corrupt("block header truncated"));
            }
            let (header, body) = rest.split_at(BLOCK_HEADER_LEN);
            let len =
                u64::from_le_bytes(header[..8].try_into().map_err(|_| corrupt("bad header"))?);
            let crc =
                u32::from_le_bytes(header[8..].try_into().map_err(|_| corrupt("bad header"))?);
            let len = usize::try_from(len).map_err(|_| corrupt("block too large"))?;
            if body.len() < len {
                return Err(corrupt("block truncated"));
            }
            let (records, next) = body.split_at(len);
            if crc32c::crc32c(records) != crc {
                return Err(corrupt("block checksum mismatch"));
            }
            self.parse_records(records, key_group, &mut visitor)
                .map_err(|e| match e {
                    StateError::Corrupt { reason, .. } => corrupt(&reason),
                    other => other,
                })?;
            rest = next;
        }
        Ok(())
    }

    fn parse_records(
        &self,
        mut records: &[u8],
        key_group: KeyGroup,
        visitor: &mut impl FnMut(KeyGroup, Entry<'_>) -> Result<()>,
    ) -> Result<()> {
        let malformed = || StateError::corrupt("", "malformed record");
        while !records.is_empty() {
            let (state, rest) = read_varint(records).ok_or_else(malformed)?;
            let kind = u32::try_from(state)
                .ok()
                .and_then(|s| self.meta.states.get(s as usize))
                .map(|s| s.kind)
                .ok_or_else(|| {
                    StateError::corrupt("", format!("record of unknown state index {state}"))
                })?;
            let (key, rest) = read_len_prefixed(rest).ok_or_else(malformed)?;
            let (namespace, rest) = read_len_prefixed(rest).ok_or_else(malformed)?;
            let (user_key, rest) = if kind.has_user_key() {
                let (uk, rest) = read_len_prefixed(rest).ok_or_else(malformed)?;
                (Some(uk), rest)
            } else {
                (None, rest)
            };
            let (value, rest) = read_len_prefixed(rest).ok_or_else(malformed)?;
            visitor(
                key_group,
                Entry {
                    state: state as u32,
                    key,
                    namespace,
                    user_key,
                    value,
                },
            )?;
            records = rest;
        }
        Ok(())
    }
}

/// A file of a later release: a clear error naming the version, never
/// "corrupt".
fn check_versions(path: &str, head: &[u8]) -> Result<()> {
    if head.len() < HEADER_LEN || head[..4] != MAGIC {
        return Ok(()); // parse_header reports it
    }
    let newer = |format, found: u8, supported: u8| StateError::UnsupportedVersion {
        path: path.to_string(),
        format,
        found: u32::from(found),
        supported: u32::from(supported),
    };
    if head[4] <= FORMAT_VERSION && head[5] <= CODEC_VERSION {
        return Ok(());
    }
    // The version bytes have no checksum of their own: a file of a known
    // version with a damaged version byte still parses as that version, a
    // file of a later release does not (later versions must keep it so).
    for version in 1..=FORMAT_VERSION {
        let mut as_known = head.to_vec();
        as_known[4] = version;
        as_known[5] = CODEC_VERSION;
        if parse_header(&as_known).is_ok() {
            return Err(StateError::corrupt(
                path,
                format!(
                    "damaged version bytes ({}, {}) in an otherwise valid version-{version} header",
                    head[4], head[5]
                ),
            ));
        }
    }
    if head[4] > FORMAT_VERSION {
        return Err(newer("key-group snapshot", head[4], FORMAT_VERSION));
    }
    Err(newer("key-group snapshot codec", head[5], CODEC_VERSION))
}

fn parse_header(head: &[u8]) -> std::result::Result<FileMeta, String> {
    if head.len() < HEADER_LEN + 8 || head[..4] != MAGIC {
        return Err("not a key-group snapshot file (bad magic)".into());
    }
    let version = head[4];
    if version == 0 || version > FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads 1 to {FORMAT_VERSION})"
        ));
    }
    if head[5] != CODEC_VERSION {
        return Err(format!(
            "unsupported codec version {} (this build reads {CODEC_VERSION})",
            head[5]
        ));
    }
    let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    let crc = u32::from_le_bytes([head[10], head[11], head[12], head[13]]);
    let meta_bytes = head
        .get(HEADER_LEN + 8..HEADER_LEN + 8 + len)
        .ok_or("metadata truncated")?;
    if crc32c::crc32c(meta_bytes) != crc {
        return Err("metadata checksum mismatch".into());
    }
    let meta = match version {
        1 => super::v1::decode::<super::v1::FileMetaV1>(meta_bytes)
            .and_then(|old| old.upgrade().map_err(|e| e.to_string())),
        _ => super::evolving::decode(meta_bytes),
    };
    meta.map_err(|e| format!("metadata does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::ops::Range;
    use std::sync::Mutex;

    use super::*;
    use crate::descriptor::{ListStateDescriptor, MapStateDescriptor};
    use crate::snapshot::{FileHandle, StateScope};

    /// A plain in-memory file store, enough to exercise the format.
    #[derive(Default)]
    struct Files(Mutex<HashMap<String, Vec<u8>>>);

    struct Output<'a> {
        files: &'a Files,
        bytes: Vec<u8>,
    }

    impl Write for Output<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl CheckpointOutputStream for Output<'static> {
        fn position(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn close(self: Box<Self>) -> Result<FileHandle> {
            let handle = FileHandle {
                path: "f".into(),
                scope: StateScope::Exclusive,
                size: self.bytes.len() as u64,
                crc32c: crc32c::crc32c(&self.bytes),
            };
            self.files.0.lock().unwrap().insert("f".into(), self.bytes);
            Ok(handle)
        }
    }

    impl CheckpointStorageAccess for &'static Files {
        fn create_output(
            &self,
            _: u64,
            _: StateScope,
            _: &str,
        ) -> Result<Box<dyn CheckpointOutputStream>> {
            Ok(Box::new(Output {
                files: self,
                bytes: Vec::new(),
            }))
        }
        fn read(&self, file: &FileHandle) -> Result<Bytes> {
            self.read_range(file, 0..file.size)
        }
        fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes> {
            let files = self.0.lock().unwrap();
            let bytes = files
                .get(&file.path)
                .ok_or_else(|| StateError::FileNotFound {
                    path: file.path.clone(),
                })?;
            Ok(Bytes::copy_from_slice(
                &bytes[range.start as usize..range.end as usize],
            ))
        }
        fn delete(&self, _: &FileHandle) -> Result<()> {
            Ok(())
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }

    fn states() -> Vec<StateMeta> {
        vec![
            ListStateDescriptor::<u8>::new("list").meta().clone(),
            MapStateDescriptor::<u8, u8>::new("map").meta().clone(),
        ]
    }

    fn write_sample(files: &'static Files) -> KeyGroupsStateHandle {
        let range = KeyGroupRange::new(10, 20).unwrap();
        let out = files.create_output(1, StateScope::Exclusive, "t").unwrap();
        let mut writer = KeyGroupsWriter::new(out, 128, range, states()).unwrap();
        for kg in [11, 15, 19] {
            writer.start_key_group(kg).unwrap();
            let key = [kg as u8];
            writer
                .add(Entry {
                    state: 0,
                    key: &key,
                    namespace: b"",
                    user_key: None,
                    value: b"\x01a",
                })
                .unwrap();
            writer
                .add(Entry {
                    state: 1,
                    key: &key,
                    namespace: b"n",
                    user_key: Some(b"u"),
                    value: b"v",
                })
                .unwrap();
        }
        writer.finish("test", 1).unwrap()
    }

    fn read(
        files: &'static Files,
        handle: &KeyGroupsStateHandle,
        wanted: KeyGroupRange,
    ) -> Result<Vec<(KeyGroup, u32, Vec<u8>)>> {
        let reader = KeyGroupsReader::open(&files, handle)?;
        let mut seen = Vec::new();
        reader.for_each_entry(&files, wanted, |kg, e| {
            seen.push((kg, e.state, e.key.to_vec()));
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn round_trip_with_skipped_key_groups_and_partial_reads() {
        let files: &'static Files = Box::leak(Box::default());
        let handle = write_sample(files);
        assert_eq!(
            handle.key_group_offsets.len(),
            10,
            "one offset per key group, empty ones too"
        );
        let all = read(files, &handle, KeyGroupRange::all(128).unwrap()).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(
            KeyGroupsReader::open(&files, &handle)
                .unwrap()
                .meta()
                .states,
            states()
        );
        let part = read(files, &handle, KeyGroupRange::new(12, 16).unwrap()).unwrap();
        assert_eq!(part, vec![(15, 0, vec![15]), (15, 1, vec![15])]);
        assert!(
            read(files, &handle, KeyGroupRange::new(0, 5).unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tampered_handles_and_bytes_are_corrupt() {
        let files: &'static Files = Box::leak(Box::default());
        let handle = write_sample(files);
        let mut moved = handle.clone();
        moved.key_group_offsets[7] += 1;
        let err = read(files, &moved, KeyGroupRange::new(10, 20).unwrap()).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let mut short = handle.clone();
        short.key_group_offsets.pop();
        assert!(matches!(
            KeyGroupsReader::open(&files, &short),
            Err(StateError::Corrupt { .. })
        ));
        let size = handle.file.size as usize;
        for offset in [0, 4, 10, size / 2, size - 1] {
            let original = files.0.lock().unwrap()["f"].clone();
            files.0.lock().unwrap().get_mut("f").unwrap()[offset] ^= 0xff;
            let err = read(files, &handle, KeyGroupRange::new(10, 20).unwrap()).unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "offset {offset}: {err}"
            );
            files.0.lock().unwrap().insert("f".into(), original);
        }
    }

    /// A file of a later release (a higher version, a header this build
    /// cannot parse) is a clear error naming the version; a damaged version
    /// byte of a valid header is corruption.
    #[test]
    fn newer_versions_are_named() {
        let files: &'static Files = Box::leak(Box::default());
        let handle = write_sample(files);
        let original = files.0.lock().unwrap()["f"].clone();
        let newer_version = FORMAT_VERSION + 1;
        let mut newer = original.clone();
        newer[4] = newer_version;
        newer[10] ^= 0xff; // a newer header differs from the known ones
        files.0.lock().unwrap().insert("f".into(), newer);
        let err = read(files, &handle, KeyGroupRange::new(10, 20).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::UnsupportedVersion {
                    found,
                    supported,
                    ..
                } if found == u32::from(newer_version) && supported == u32::from(FORMAT_VERSION)
            ),
            "{err}"
        );
        let mut damaged = original;
        damaged[4] = newer_version;
        files.0.lock().unwrap().insert("f".into(), damaged);
        let err = read(files, &handle, KeyGroupRange::new(10, 20).unwrap()).unwrap_err();
        assert!(err.to_string().contains("damaged version bytes"), "{err}");
    }

    #[test]
    fn writer_rejects_misuse() {
        let files: &'static Files = Box::leak(Box::default());
        let out = files.create_output(1, StateScope::Exclusive, "t").unwrap();
        let mut writer =
            KeyGroupsWriter::new(out, 128, KeyGroupRange::new(0, 4).unwrap(), states()).unwrap();
        let entry = Entry {
            state: 0,
            key: b"k",
            namespace: b"",
            user_key: None,
            value: b"",
        };
        assert!(writer.add(entry).is_err(), "entry before start_key_group");
        writer.start_key_group(2).unwrap();
        assert!(writer.start_key_group(1).is_err(), "key groups must ascend");
        assert!(
            writer.start_key_group(9).is_err(),
            "key group outside the range"
        );
        assert!(
            writer
                .add(Entry {
                    user_key: Some(b"u"),
                    ..entry
                })
                .is_err(),
            "user key on a list state"
        );
        assert!(
            writer.add(Entry { state: 1, ..entry }).is_err(),
            "map entry without user key"
        );
        assert!(
            writer.add(Entry { state: 7, ..entry }).is_err(),
            "unknown state index"
        );
    }
}
