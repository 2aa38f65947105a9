//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz
//! entry points on stable Rust: every input a fuzzer ever kept, crashes
//! found and fixed included, runs in CI.
//!
//! `STATE_WRITE_CORPORA=1 cargo test -p state-testkit --test fuzz_corpora`
//! (re)writes the seed inputs, taken from the golden fixtures.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use state_api::KeyedStateHandle;
use state_api::operator_state::OperatorStateMode;
use state_storage::CompletedCheckpoint;
use state_testkit::fuzz::{TARGETS, state_files_input};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn fixture(version: u8, path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/v{version}"))
        .join(path)
}

#[test]
fn corpora_replay_without_panics() {
    if std::env::var_os("STATE_WRITE_CORPORA").is_some() {
        write_seeds();
    }
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = corpus(name);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "{replayed} inputs");
}

/// Seeds from the fixtures of every format version: real `_metadata`,
/// stored files, key-group files with their handles, log segments and
/// their records, handles, lists.
fn write_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for version in [1, 2, 3] {
        for backend in [
            "heap",
            "rocksdb-full",
            "changelog-heap",
            "changelog-rocksdb",
        ] {
            let root = fixture(version, &format!("{backend}/checkpoints"));
            // Version 1's seeds keep their first names.
            let name = match version {
                1 => backend.to_string(),
                _ => format!("v{version}-{backend}"),
            };
            let metadata = std::fs::read(root.join("chk-2/_metadata")).unwrap();
            write("metadata", &name, &metadata);
            let checkpoint = CompletedCheckpoint::decode("chk-2/_metadata", &metadata).unwrap();
            for handle in checkpoint.operators.values().flatten() {
                if version > 1 {
                    write("codec", &name, &state_api::format::evolving::encode(handle));
                }
                seeds_of(handle, &root, &write, &name);
            }
            for handle in checkpoint.operator_states.values().flatten() {
                let stored = std::fs::read(root.join(&handle.file.path)).unwrap();
                let file = &stored[..handle.file.size as usize];
                for (index, section) in handle.sections.iter().enumerate() {
                    let mode = match section.mode {
                        OperatorStateMode::SplitDistribute => 0,
                        OperatorStateMode::Union => 1,
                        OperatorStateMode::Broadcast => 2,
                    };
                    let input = state_files_input(section.offset, section.elements, mode, file);
                    write("state_files", &format!("{name}-operator-{index}"), &input);
                }
            }
            for handle in checkpoint.channel_states.values().flatten() {
                let stored = std::fs::read(root.join(&handle.file.path)).unwrap();
                let file = &stored[..handle.file.size as usize];
                for (index, run) in handle.runs.iter().enumerate() {
                    let input = state_files_input(run.offset, run.records, 0, file);
                    write("state_files", &format!("{name}-channel-{index}"), &input);
                }
            }
        }
    }
    let mut list = Vec::new();
    for element in [&b"a"[..], b"", b"longer element"] {
        state_api::codec::write_len_prefixed(&mut list, element);
    }
    write("codec", "list", &list);
}

fn seeds_of(handle: &KeyedStateHandle, root: &Path, write: &dyn Fn(&str, &str, &[u8]), name: &str) {
    match handle {
        KeyedStateHandle::KeyGroups(h) => {
            let stored = std::fs::read(root.join(&h.file.path)).unwrap();
            write("footer", name, &stored);
            let encoded = state_api::codec::encode(h).unwrap();
            let mut input = u16::try_from(encoded.len()).unwrap().to_le_bytes().to_vec();
            input.extend_from_slice(&encoded);
            input.extend_from_slice(&stored[..h.file.size as usize]);
            write("key_groups", name, &input);
        }
        KeyedStateHandle::Changelog(h) => {
            for inner in &h.materialized {
                seeds_of(inner, root, write, &format!("{name}-materialized"));
            }
            for (index, segment) in h.log.iter().flat_map(|p| &p.segments).enumerate() {
                let stored = std::fs::read(root.join(&segment.file.path)).unwrap();
                let bytes =
                    &stored[segment.offset as usize..(segment.offset + segment.length) as usize];
                write("segment", &format!("{name}-{index}"), bytes);
                if let Ok((_, records)) = state_changelog::segment::decode(bytes, segment) {
                    write("records", &format!("{name}-{index}"), records.remaining());
                }
            }
        }
        _ => {}
    }
}
