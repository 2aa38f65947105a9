//! The decoders reachable from stored bytes, as fuzz entry points: each
//! takes arbitrary bytes and must return (an error is fine) without
//! panicking, hanging or allocating without bound.
//!
//! The `cargo fuzz` targets in `fuzz/` call these; the corpora in
//! `fuzz/corpus/<target>/` are replayed through them by a plain test on
//! stable Rust (`tests/fuzz_corpora.rs`), so CI runs every input ever found.

use std::ops::Range;

use bytes::Bytes;
use state_api::channel_state::{InFlightRun, read_run};
use state_api::codec::{self, ListElements};
use state_api::format::evolving;
use state_api::format::key_groups::KeyGroupsReader;
use state_api::format::v1::{self, Upgrade as _};
use state_api::operator_state::{OperatorStateMode, OperatorStateSection, read_section};
use state_api::{
    ChangelogSegment, CheckpointOutputStream, CheckpointStorageAccess, FileHandle, KeyGroupRange,
    KeyGroupsStateHandle, KeyedStateHandle, Result, StateError, StateScope,
};
use state_config::StateConfig;
use state_storage::CompletedCheckpoint;
use state_storage::framing;

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the directory names of the corpora).
pub const TARGETS: [(&str, Target); 8] = [
    ("metadata", metadata),
    ("footer", footer),
    ("key_groups", key_groups),
    ("segment", segment),
    ("records", records),
    ("codec", codec),
    ("config", config),
    ("state_files", state_files),
];

/// `_metadata`: decode, then every view of the handles.
pub fn metadata(data: &[u8]) {
    if let Ok(checkpoint) = CompletedCheckpoint::decode("chk-1/_metadata", data) {
        let _ = checkpoint.state_size();
        let _ = checkpoint.files();
        for handle in checkpoint.operators.values().flatten() {
            let _ = (
                handle.state_size(),
                handle.files(),
                handle.key_group_range(),
            );
        }
        for handle in checkpoint.operator_states.values().flatten() {
            let _ = handle.state_size();
        }
        for handle in checkpoint.channel_states.values().flatten() {
            let _ = handle.records();
        }
    }
}

/// The file framing: the footer alone and a whole stored file against a
/// handle that claims its length.
pub fn footer(data: &[u8]) {
    let _ = framing::Footer::decode(data);
    let size = data.len().saturating_sub(framing::FOOTER_LEN) as u64;
    let handle = FileHandle {
        path: "f".into(),
        scope: StateScope::Shared,
        size,
        crc32c: 0,
    };
    let _ = framing::verify(&handle, data);
}

/// A key-group file: the input is an encoded handle (the first two bytes,
/// little-endian, say how long) followed by the file's bytes; the reader
/// opens it and visits every entry.
pub fn key_groups(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len));
    let (handle_bytes, file) = rest.split_at(len.min(rest.len()));
    let Ok(mut handle) = codec::decode::<KeyGroupsStateHandle>(handle_bytes) else {
        return;
    };
    handle.file.size = file.len() as u64;
    let storage = OneFile(Bytes::copy_from_slice(file));
    let Ok(reader) = KeyGroupsReader::open(&storage, &handle) else {
        return;
    };
    let Ok(all) = KeyGroupRange::all(handle.max_parallelism.clamp(1, 32_768)) else {
        return;
    };
    let _ = reader.for_each_entry(&storage, all, |_, entry| {
        let _ = codec::check_list(entry.value);
        Ok(())
    });
}

/// A change log segment, checked against a handle that claims its length
/// and the sequence numbers in its header.
pub fn segment(data: &[u8]) {
    let expected = |first_sqn, end_sqn| ChangelogSegment {
        file: FileHandle {
            path: "shared/log".into(),
            scope: StateScope::Shared,
            size: data.len() as u64,
            crc32c: 0,
        },
        offset: 0,
        length: data.len() as u64,
        first_sqn,
        end_sqn,
    };
    if let Ok((header, reader)) = state_changelog::segment::decode(data, &expected(0, 0)) {
        let end = header.first_sqn.saturating_add(header.record_count);
        let _ = state_changelog::segment::decode(data, &expected(header.first_sqn, end));
        read_records(reader);
    }
}

/// The records of a segment, as every segment version encodes them.
pub fn records(data: &[u8]) {
    for version in 1..=2 {
        read_records(state_changelog::record::RecordReader::of_version(
            data, version,
        ));
    }
}

fn read_records(mut reader: state_changelog::record::RecordReader<'_>) {
    for _ in 0..100_000 {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// The codecs: lists, keys, and handles in every structure encoding
/// (CBOR since version 2, frozen postcard of version 1, today's postcard).
pub fn codec(data: &[u8]) {
    for element in ListElements::new(data) {
        if element.is_err() {
            break;
        }
    }
    let _ = evolving::decode::<KeyedStateHandle>(data);
    if let Ok(old) = v1::decode::<v1::KeyedStateHandleV1>(data) {
        let _ = old.upgrade();
    }
    let _ = codec::decode::<KeyedStateHandle>(data);
    let _ = codec::decode::<(u64, String, Vec<u8>)>(data);
}

/// Configuration: the bytes as YAML, TOML and JSON, and their lines as
/// `key=value` pairs and as environment variables; then every view and an
/// override of what parsed.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .collect();
    let parsed = [
        StateConfig::from_yaml_str(text),
        StateConfig::from_toml_str(text),
        StateConfig::from_json_str(text),
        StateConfig::from_pairs(pairs.iter().copied()),
        StateConfig::from_env_vars(pairs.iter().copied()),
    ];
    for config in parsed.into_iter().flatten() {
        let _ = (
            config.backend_type(),
            config.checkpoint_dir(),
            config.num_retained(),
            config.materialization_config(),
            config.dstl_config(),
            config.deprecated_keys(),
        );
        let _ = config.with_overrides(pairs.iter().copied());
    }
}

/// Storage holding one file, for the key-group reader.
struct OneFile(Bytes);

impl CheckpointStorageAccess for OneFile {
    fn create_output(
        &self,
        _checkpoint_id: u64,
        _scope: StateScope,
        _name_hint: &str,
    ) -> Result<Box<dyn CheckpointOutputStream>> {
        Err(StateError::storage("create", "fuzz", "read-only"))
    }

    fn read(&self, _file: &FileHandle) -> Result<Bytes> {
        Ok(self.0.clone())
    }

    fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes> {
        let (start, end) = (range.start as usize, range.end as usize);
        if start > end || end > self.0.len() {
            return Err(StateError::corrupt(
                file.path.clone(),
                "range beyond the file",
            ));
        }
        Ok(self.0.slice(start..end))
    }

    fn delete(&self, _file: &FileHandle) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        "fuzz://".into()
    }
}

/// Operator state and channel state files: the first 17 bytes choose a run
/// (offset u64 LE, count u64 LE, a mode byte), the rest is the file.
pub fn state_files(data: &[u8]) {
    let Some((head, file)) = data.split_first_chunk::<17>() else {
        return;
    };
    let word = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let (offset, count) = (word(0), word(8));
    let mode = [
        OperatorStateMode::SplitDistribute,
        OperatorStateMode::Union,
        OperatorStateMode::Broadcast,
    ][usize::from(head[16] % 3)];
    let section = OperatorStateSection {
        name: "fuzz".into(),
        mode,
        offset,
        elements: count,
    };
    let _ = read_section("fuzz", file, &section);
    let run = InFlightRun {
        channel: 0,
        key_group: None,
        offset,
        records: count,
    };
    let _ = read_run("fuzz", file, &run);
}

/// The input [`state_files`] reads for a run at `offset` of `count`
/// elements with `mode` (0 split, 1 union, 2 broadcast) in `file`.
pub fn state_files_input(offset: u64, count: u64, mode: u8, file: &[u8]) -> Vec<u8> {
    let mut input = offset.to_le_bytes().to_vec();
    input.extend_from_slice(&count.to_le_bytes());
    input.push(mode);
    input.extend_from_slice(file);
    input
}
