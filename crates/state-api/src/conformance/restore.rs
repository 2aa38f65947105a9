//! Snapshots, restores, rescaling and damaged snapshots.

use std::sync::Arc;

use super::Harness;
use super::fixtures::{Dump, StandardStates, dump, keys_in_range};
use crate::backend::KeyedStateBackend;
use crate::descriptor::ValueStateDescriptor;
use crate::error::StateError;
use crate::key_group::{KeyGroupRange, key_group_range_for_operator};
use crate::snapshot::{FileHandle, KeyedStateHandle, SnapshotOptions};
use crate::state::KeyedStateBackendExt;

const MAX_PARALLELISM: u32 = 128;

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid")
}

fn populated(
    h: &Harness<'_>,
    range: KeyGroupRange,
    keys: &[u64],
) -> (Box<dyn KeyedStateBackend>, StandardStates) {
    let mut backend = h.backend(MAX_PARALLELISM, range);
    let mut states = StandardStates::register(&mut *backend);
    for &k in keys {
        states.populate(&mut *backend, k);
    }
    (backend, states)
}

fn restored_dump(h: &Harness<'_>, range: KeyGroupRange, handles: Vec<KeyedStateHandle>) -> Dump {
    let name = h.factory.name();
    let mut backend = h
        .restore(MAX_PARALLELISM, range, handles)
        .unwrap_or_else(|e| panic!("{name}: restore of {range} failed: {e}"));
    let states = StandardStates::register(&mut *backend);
    dump(&mut *backend, &states.ids())
}

/// Writes after the synchronous phase (updates, clears, new keys), made while
/// the asynchronous phase runs on another thread, never reach the snapshot.
pub fn snapshot_isolation_under_concurrent_writes(h: &Harness<'_>) {
    let name = h.factory.name();
    let keys: Vec<u64> = (0..400).collect();
    let (mut backend, mut states) = populated(h, all(), &keys);
    let ids = states.ids();
    let frozen = dump(&mut *backend, &ids);

    let task = backend
        .snapshot(1, &SnapshotOptions::checkpoint(1), Arc::clone(&h.storage))
        .unwrap_or_else(|e| panic!("{name}: synchronous phase failed: {e}"));
    let mut write_round = |backend: &mut dyn KeyedStateBackend, round: u64| {
        for &k in &keys {
            let outcome = (|| {
                backend.set_key(&k)?;
                match (k + round) % 4 {
                    0 => states.value.update(backend, &(k + 1_000 * (round + 1))),
                    1 => states.list.clear(backend),
                    2 => states.map.put(backend, &99, &"late".to_string()),
                    _ => states.sum.add(backend, &5),
                }
            })();
            outcome.unwrap_or_else(|e| panic!("{name}: write during snapshot failed: {e}"));
        }
        states.populate(backend, 10_000 + round);
    };
    // Writes between the two phases: deterministic, whatever the thread timing.
    write_round(&mut *backend, 0);
    // And writes while the asynchronous phase runs on another thread.
    let writer = std::thread::spawn(move || task.run());
    for round in 1..3u64 {
        write_round(&mut *backend, round);
    }
    let result = writer
        .join()
        .unwrap_or_else(|_| panic!("{name}: snapshot thread panicked"))
        .unwrap_or_else(|e| panic!("{name}: asynchronous phase failed: {e}"));
    backend
        .notify_checkpoint_complete(1)
        .unwrap_or_else(|e| panic!("{name}: notify_checkpoint_complete failed: {e}"));
    let live = dump(&mut *backend, &ids);
    assert_ne!(
        live, frozen,
        "{name}: the writes must have changed the live state"
    );
    let restored = restored_dump(h, all(), vec![result.handle]);
    assert!(
        restored == frozen,
        "{name}: the snapshot must hold exactly the state at the synchronous phase ({} entries restored, {} expected)",
        restored.len(),
        frozen.len()
    );
}

/// A checkpoint restores every state kind; restored states are listed before
/// they are registered, and registering them with other types fails.
pub fn restore_round_trip(h: &Harness<'_>) {
    let name = h.factory.name();
    let keys: Vec<u64> = (0..200).collect();
    let (mut backend, states) = populated(h, all(), &keys);
    let before = dump(&mut *backend, &states.ids());
    let handle = h.checkpoint(&mut *backend, 2);
    assert_eq!(
        handle.key_group_range(),
        all(),
        "{name}: handle covers the backend's range"
    );
    assert_eq!(handle.max_parallelism(), MAX_PARALLELISM);

    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle.clone()])
        .unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
    let metas = restored.state_metas();
    for (state, _, kind) in states.ids() {
        assert!(
            metas.iter().any(|m| m.name == state && m.kind == kind),
            "{name}: restored state '{state}' ({kind:?}) must be listed before registration"
        );
    }
    let err = restored
        .value_state(ValueStateDescriptor::<String>::new("value"))
        .err();
    assert!(
        matches!(err, Some(StateError::StateTypeMismatch { .. })),
        "{name}: registering a restored state with another type must fail, got {err:?}"
    );
    let restored_states = StandardStates::register(&mut *restored);
    assert!(
        dump(&mut *restored, &restored_states.ids()) == before,
        "{name}: restored contents differ from the checkpointed ones"
    );
    // A restored backend keeps working and checkpoints again.
    let mut restored_states = restored_states;
    restored_states.populate(&mut *restored, 5_000);
    let again = h.checkpoint(&mut *restored, 3);
    let expected = dump(&mut *restored, &restored_states.ids());
    assert!(
        restored_dump(h, all(), vec![again]) == expected,
        "{name}: second-generation checkpoint differs"
    );
}

fn rescale(
    h: &Harness<'_>,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> (Vec<KeyedStateHandle>, Dump) {
    let name = h.factory.name();
    let mut all_entries = Dump::new();
    let mut next_handles = Vec::new();
    for index in 0..parallelism {
        let range =
            key_group_range_for_operator(MAX_PARALLELISM, parallelism, index).expect("valid");
        // As a job manager does: hand each instance the handles overlapping its range.
        let mine = crate::backend::handles_for_range(handles, range);
        let mut backend = h.restore(MAX_PARALLELISM, range, mine).unwrap_or_else(|e| {
            panic!("{name}: restore of {range} at parallelism {parallelism} failed: {e}")
        });
        let states = StandardStates::register(&mut *backend);
        let part = dump(&mut *backend, &states.ids());
        for key in part.keys() {
            let encoded = &key.1;
            let kg =
                crate::key_group::assign_to_key_group(encoded, MAX_PARALLELISM).expect("valid");
            assert!(
                range.contains(kg),
                "{name}: instance {range} restored a key of key group {kg}"
            );
        }
        all_entries.extend(part);
        next_handles.push(h.checkpoint(&mut *backend, 100 + u64::from(parallelism)));
    }
    (next_handles, all_entries)
}

/// Rescaling 1 → 2 → 3 → 1: each instance restores only its key groups from
/// the overlapping handles, and the union of contents never changes.
pub fn rescaling_round_trip(h: &Harness<'_>) {
    let name = h.factory.name();
    let keys: Vec<u64> = (0..500).collect();
    let (mut backend, states) = populated(h, all(), &keys);
    let original = dump(&mut *backend, &states.ids());
    let mut handles = vec![h.checkpoint(&mut *backend, 10)];
    for parallelism in [2, 3, 1] {
        let (next, contents) = rescale(h, &handles, parallelism);
        assert!(
            contents == original,
            "{name}: contents after rescaling to parallelism {parallelism} differ ({} vs {} entries)",
            contents.len(),
            original.len()
        );
        handles = next;
    }
}

/// States a restore is told to skip (the program no longer registers them)
/// are neither listed, readable, nor part of later checkpoints; the other
/// states restore intact. Checked from one handle and from two (the merge
/// path of backends that restore one handle differently).
pub fn skipped_states_are_not_restored(h: &Harness<'_>) {
    let name = h.factory.name();
    let skip = ["map", "sum"];
    let keys: Vec<u64> = (0..300).collect();
    let (mut backend, states) = populated(h, all(), &keys);
    let full = dump(&mut *backend, &states.ids());
    let kept: Dump = full
        .iter()
        .filter(|(k, _)| !skip.contains(&k.0.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(kept.len() < full.len(), "{name}: skipped states hold data");
    let single = vec![h.checkpoint(&mut *backend, 20)];
    let (halves, _) = rescale(h, &single, 2);
    for (what, handles) in [("one handle", single), ("two handles", halves)] {
        let skipped: Vec<String> = skip.iter().map(|s| (*s).to_string()).collect();
        let mut restored = h
            .restore_skipping(MAX_PARALLELISM, all(), handles, skipped)
            .unwrap_or_else(|e| panic!("{name}: restore skipping states ({what}) failed: {e}"));
        let listed: Vec<String> = restored.state_metas().into_iter().map(|m| m.name).collect();
        for state in skip {
            assert!(
                !listed.iter().any(|n| n == state),
                "{name}: skipped state '{state}' is listed after a restore from {what}: {listed:?}"
            );
        }
        let again = StandardStates::register(&mut *restored);
        assert!(
            dump(&mut *restored, &again.ids()) == kept,
            "{name}: after skipping states ({what}) the others must restore intact and the \
             skipped ones be empty"
        );
        // The skipped states do not come back from later checkpoints.
        let next = h.checkpoint(&mut *restored, 30);
        assert!(
            restored_dump(h, all(), vec![next]) == kept,
            "{name}: a checkpoint after skipping states ({what}) brought them back"
        );
    }
}

/// Damaged snapshots and wrong handles make restore fail with a clear error:
/// a flipped byte, a truncated or missing file, a handle for other key
/// groups, another max parallelism, overlapping handles, a missing handle.
pub fn restore_failures_are_errors(h: &Harness<'_>) {
    let name = h.factory.name();
    let keys: Vec<u64> = (0..100).collect();

    let expect_error = |what: &str,
                        handles: Vec<KeyedStateHandle>,
                        range: KeyGroupRange,
                        max_p: u32| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.restore(max_p, range, handles).map(|mut b| {
                // Some backends read lazily: touching the state must fail then.
                let states = StandardStates::register(&mut *b);
                dump(&mut *b, &states.ids()).len()
            })
        }));
        match outcome {
            Err(_) => panic!("{name}: restore from {what} panicked instead of returning an error"),
            Ok(Ok(entries)) => {
                panic!("{name}: restore from {what} succeeded with {entries} entries")
            }
            Ok(Err(e)) => e,
        }
    };

    // Every damage gets a checkpoint of a new backend instance, whose files
    // are all its own: a checkpoint of the same instance would reuse files
    // an earlier case damaged already (incremental SSTs, log files), and its
    // check would pass whatever this damage does.
    let mut next_id = 20;
    let mut damaged_paths: Vec<String> = Vec::new();
    let mut fresh_handle = || {
        next_id += 1;
        let (mut fresh, _) = populated(h, all(), &keys);
        let handle = h.checkpoint(&mut *fresh, next_id);
        for file in handle.files() {
            assert!(
                !damaged_paths.contains(&file.path),
                "{name}: a new instance's checkpoint refers to '{}', damaged by an earlier case",
                file.path
            );
        }
        damaged_paths.extend(handle.files().into_iter().map(|f| f.path.clone()));
        handle
    };

    // Flipped bytes at the start, middle and end of every file's payload,
    // and in its footer (checksum, length, magic).
    let intact = {
        let (mut fresh, _) = populated(h, all(), &keys);
        let states = StandardStates::register(&mut *fresh);
        dump(&mut *fresh, &states.ids())
    };
    let file_count = fresh_handle().files().len();
    for index in 0..file_count {
        for place in 0..6 {
            let damaged = fresh_handle();
            let Some(file) = damaged.files().get(index).map(|f| (*f).clone()) else {
                panic!("{name}: checkpoints of the same state have different file counts");
            };
            if file.size == 0 && place < 3 {
                continue;
            }
            let offset = [
                0,
                file.size / 2,
                file.size.saturating_sub(1),
                file.size,
                file.size + 4,
                file.size + 12,
            ][place];
            h.faults
                .corrupt_byte(&file, offset)
                .unwrap_or_else(|e| panic!("{name}: fault injection failed: {e}"));
            let what = format!(
                "a flipped byte at {offset} of {} ({} bytes)",
                file.path, file.size
            );
            if offset >= file.size {
                // A damaged footer leaves the payload intact: a reader of
                // byte ranges (whose blocks carry their own checksums) need
                // not notice, but it must never restore other state.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    h.restore(MAX_PARALLELISM, all(), vec![damaged])
                        .map(|mut b| {
                            let states = StandardStates::register(&mut *b);
                            dump(&mut *b, &states.ids())
                        })
                }));
                match outcome {
                    Err(_) => panic!("{name}: restore from {what} panicked"),
                    Ok(Ok(restored)) => assert!(
                        restored == intact,
                        "{name}: restore from {what} gave other state"
                    ),
                    Ok(Err(err)) => assert!(
                        matches!(err, StateError::Corrupt { .. }),
                        "{name}: {what} must be reported as corruption, got: {err}"
                    ),
                }
                continue;
            }
            let err = expect_error(&what, vec![damaged], all(), MAX_PARALLELISM);
            assert!(
                matches!(err, StateError::Corrupt { .. } | StateError::Codec { .. }),
                "{name}: {what} must be reported as corruption, got: {err}"
            );
        }
    }

    // Truncated files.
    let damaged = fresh_handle();
    for file in damaged.files() {
        h.faults
            .truncate(file, file.size / 2)
            .unwrap_or_else(|e| panic!("{name}: fault injection failed: {e}"));
    }
    let err = expect_error("a truncated file", vec![damaged], all(), MAX_PARALLELISM);
    assert!(
        matches!(err, StateError::Corrupt { .. }),
        "{name}: truncation must be corruption, got: {err}"
    );

    // Missing files.
    let damaged = fresh_handle();
    for file in damaged.files() {
        h.faults
            .remove(file)
            .unwrap_or_else(|e| panic!("{name}: fault injection failed: {e}"));
    }
    let err = expect_error("a missing file", vec![damaged], all(), MAX_PARALLELISM);
    assert!(
        matches!(err, StateError::FileNotFound { .. }),
        "{name}: a missing file must be FileNotFound, got: {err}"
    );

    // Damaged metadata: a handle that names a file with the wrong size, or
    // a file that is not there.
    for index in 0..file_count {
        let mut damaged = fresh_handle();
        map_file(&mut damaged, index, |file| file.size += 1);
        let what = format!("a handle with a wrong size for file {index}");
        let err = expect_error(&what, vec![damaged], all(), MAX_PARALLELISM);
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "{name}: {what} must be corruption, got: {err}"
        );
        let mut damaged = fresh_handle();
        map_file(&mut damaged, index, |file| file.path.push_str("-gone"));
        let what = format!("a handle naming a missing file {index}");
        let err = expect_error(&what, vec![damaged], all(), MAX_PARALLELISM);
        assert!(
            matches!(err, StateError::FileNotFound { .. }),
            "{name}: {what} must be FileNotFound, got: {err}"
        );
    }

    // A handle of the wrong key groups, another max parallelism, overlaps, gaps.
    let half = KeyGroupRange::new(0, 64).expect("valid");
    let (mut upper_backend, _) = populated(
        h,
        KeyGroupRange::new(64, 128).expect("valid"),
        &keys_in_range(
            KeyGroupRange::new(64, 128).expect("valid"),
            MAX_PARALLELISM,
            0,
            20,
        ),
    );
    let upper = h.checkpoint(&mut *upper_backend, 40);
    let err = expect_error(
        "a handle of other key groups",
        vec![upper.clone()],
        half,
        MAX_PARALLELISM,
    );
    assert!(matches!(err, StateError::Restore(_)), "{name}: got {err}");
    let good = fresh_handle();
    let err = expect_error(
        "another max parallelism",
        vec![good.clone()],
        KeyGroupRange::new(0, 100).expect("valid"),
        256,
    );
    assert!(matches!(err, StateError::Restore(_)), "{name}: got {err}");
    let err = expect_error(
        "overlapping handles",
        vec![good.clone(), upper.clone()],
        all(),
        MAX_PARALLELISM,
    );
    assert!(matches!(err, StateError::Restore(_)), "{name}: got {err}");
    let err = expect_error(
        "handles that leave a gap",
        vec![upper],
        all(),
        MAX_PARALLELISM,
    );
    assert!(matches!(err, StateError::Restore(_)), "{name}: got {err}");
}

/// Changes the `index`th file (in [`KeyedStateHandle::files`] order) of
/// `handle` everywhere the handle names it.
fn map_file(handle: &mut KeyedStateHandle, index: usize, change: impl Fn(&mut FileHandle)) {
    let Some(target) = handle.files().get(index).map(|f| f.path.clone()) else {
        return;
    };
    visit_files(handle, &mut |file| {
        if file.path == target {
            change(file);
        }
    });
}

fn visit_files(handle: &mut KeyedStateHandle, visit: &mut dyn FnMut(&mut FileHandle)) {
    match handle {
        KeyedStateHandle::KeyGroups(h) => visit(&mut h.file),
        KeyedStateHandle::Incremental(h) => {
            for named in h.shared_files.iter_mut().chain(&mut h.private_files) {
                visit(&mut named.file);
            }
        }
        KeyedStateHandle::Changelog(h) => {
            for inner in &mut h.materialized {
                visit_files(inner, visit);
            }
            for segment in h.log.iter_mut().flat_map(|part| &mut part.segments) {
                visit(&mut segment.file);
            }
        }
    }
}
