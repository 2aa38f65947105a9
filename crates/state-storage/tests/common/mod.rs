//! Test bodies shared by every backend (memory, local disk, S3).
//!
//! Each backend's test file builds an [`Env`] and expands
//! [`backend_tests!`], which turns every body below into a `#[test]`.

// Test support code: panicking on unexpected errors is the point.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use object_store::ObjectStoreExt;
use state_api::conformance::FaultInjector;
use state_api::{
    CheckpointStorageAccess, FileHandle, KeyGroupRange, KeyGroupsStateHandle, KeyedStateHandle,
    StateError, StateScope,
};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, MULTIPART_PART_SIZE,
    ObjectStoreCheckpointStorage, find_latest_completed, load_checkpoint,
};

/// Expands one `#[test]` per shared body, each running it on the `Env`
/// returned by `$env()` (or skipping when that is `None`).
macro_rules! backend_tests {
    ($env:path) => {
        common::backend_tests!(
            $env;
            round_trip,
            scopes_go_to_their_directories,
            flipped_byte_is_corrupt,
            truncated_file_is_corrupt,
            missing_file_is_not_found,
            wrong_handle_is_corrupt,
            escaping_handle_path_is_rejected,
            read_range_checks_bounds,
            large_file_uses_multipart,
            dropped_stream_leaves_nothing,
            delete_is_idempotent,
            works_inside_a_tokio_runtime,
            retains_one,
            retains_two,
            shared_files_follow_flink_example,
            reopen_rebuilds_registry,
            orphans_below_latest_are_swept,
            metadata_is_written_once,
            discard_pending_deletes_aborted_checkpoint,
            dispose_removes_only_unshared_files,
            load_and_find_latest,
            corrupt_metadata_falls_back_to_the_newest_intact,
            newer_metadata_version_fails_open,
            reopen_subsumes_beyond_retention,
            zero_retained_is_rejected,
            files_outside_their_scope_directory_are_rejected,
            operator_state_files_are_checked_and_collected,
            checkpoint_ids_must_increase,
            savepoints_are_never_subsumed,
            shared_file_deleted_before_commit_fails_the_add,
        );
    };
    ($env:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(env) = $env() {
                    common::$name(&env);
                }
            }
        )*
    };
}
pub(crate) use backend_tests;

/// A job directory on one backend; every [`storage`](Env::storage) call
/// opens a new storage instance on the same directory (a "restart").
pub(crate) struct Env {
    make: Box<dyn Fn() -> ObjectStoreCheckpointStorage>,
    // Keeps a local directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// An environment whose storages `make` builds.
    pub(crate) fn new(
        make: impl Fn() -> ObjectStoreCheckpointStorage + 'static,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self {
            make: Box::new(make),
            _dir: dir,
        }
    }

    /// A new storage instance on the environment's job directory.
    pub(crate) fn storage(&self) -> Arc<ObjectStoreCheckpointStorage> {
        Arc::new((self.make)())
    }
}

// ---------------------------------------------------------------- helpers

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) fn write_file(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_id: u64,
    scope: StateScope,
    hint: &str,
    bytes: &[u8],
) -> FileHandle {
    let mut out = storage.create_output(checkpoint_id, scope, hint).unwrap();
    out.write_all(bytes).unwrap();
    assert_eq!(out.position(), bytes.len() as u64);
    out.close().unwrap()
}

fn state_handle(checkpoint_id: u64, file: &FileHandle) -> KeyedStateHandle {
    KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
        backend: "test".into(),
        checkpoint_id,
        max_parallelism: 128,
        key_group_range: KeyGroupRange::new(0, 1).unwrap(),
        file: file.clone(),
        key_group_offsets: vec![0],
    })
}

pub(crate) fn checkpoint(checkpoint_id: u64, files: &[&FileHandle]) -> CompletedCheckpoint {
    CompletedCheckpoint::new(
        "job",
        checkpoint_id,
        1_000 + checkpoint_id,
        CheckpointKind::Checkpoint,
    )
    .with_operator(
        "op",
        files
            .iter()
            .map(|f| state_handle(checkpoint_id, f))
            .collect(),
    )
}

/// A checkpoint with one exclusive file plus the given shared files.
fn checkpoint_with_exclusive(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_id: u64,
    shared: &[&FileHandle],
) -> CompletedCheckpoint {
    let exclusive = write_file(
        storage,
        checkpoint_id,
        StateScope::Exclusive,
        "heap",
        &payload(64, checkpoint_id as u8),
    );
    let mut files: Vec<&FileHandle> = shared.to_vec();
    files.push(&exclusive);
    checkpoint(checkpoint_id, &files)
}

fn files(storage: &ObjectStoreCheckpointStorage) -> BTreeSet<String> {
    storage.list_files(None).unwrap().into_iter().collect()
}

fn exists(storage: &ObjectStoreCheckpointStorage, file: &FileHandle) -> bool {
    match storage.read(file) {
        Ok(_) => true,
        Err(StateError::FileNotFound { .. }) => false,
        Err(e) => panic!("reading {file:?}: {e}"),
    }
}

fn ids(store: &CompletedCheckpointStore) -> Vec<u64> {
    store.checkpoints().map(|c| c.checkpoint_id).collect()
}

fn has_dir(storage: &ObjectStoreCheckpointStorage, dir: &str) -> bool {
    !storage.list_files(Some(dir)).unwrap().is_empty()
}

#[track_caller]
fn assert_corrupt(result: state_api::Result<bytes::Bytes>, path: &str, reason_contains: &str) {
    match result {
        Err(StateError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(
                reason.contains(reason_contains),
                "reason '{reason}' lacks '{reason_contains}'"
            );
        }
        other => panic!("expected Corrupt({reason_contains}), got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found(result: state_api::Result<bytes::Bytes>, path: &str) {
    match result {
        Err(StateError::FileNotFound { path: p }) => assert_eq!(p, path),
        other => panic!("expected FileNotFound, got {other:?}"),
    }
}

/// `verify_file` as a read result, for the assertions above.
fn verified(
    storage: &ObjectStoreCheckpointStorage,
    file: &FileHandle,
) -> state_api::Result<bytes::Bytes> {
    storage.verify_file(file).map(|()| bytes::Bytes::new())
}

// ------------------------------------------------------ storage access

pub(crate) fn round_trip(env: &Env) {
    let storage = env.storage();
    for len in [0, 1, 17, 4096, 100_000] {
        let bytes = payload(len, 3);
        let file = write_file(&storage, 1, StateScope::Exclusive, "heap-0", &bytes);
        assert_eq!(file.size, len as u64);
        assert_eq!(file.crc32c, crc32c::crc32c(&bytes));
        assert_eq!(file.scope, StateScope::Exclusive);
        assert_eq!(&storage.read(&file).unwrap()[..], &bytes[..]);
        storage.verify_file(&file).unwrap();
    }
    // Written in many small pieces, the checksum is the same.
    let bytes = payload(10_000, 9);
    let mut out = storage
        .create_output(1, StateScope::Exclusive, "pieces")
        .unwrap();
    for chunk in bytes.chunks(7) {
        out.write_all(chunk).unwrap();
    }
    let file = out.close().unwrap();
    assert_eq!(file.crc32c, crc32c::crc32c(&bytes));
    assert_eq!(&storage.read(&file).unwrap()[..], &bytes[..]);
    // Another instance on the same job directory reads it too.
    assert_eq!(&env.storage().read(&file).unwrap()[..], &bytes[..]);
    assert!(
        storage.location().ends_with("job"),
        "{}",
        storage.location()
    );
}

pub(crate) fn scopes_go_to_their_directories(env: &Env) {
    let storage = env.storage();
    let exclusive = write_file(&storage, 3, StateScope::Exclusive, "heap-0", b"e");
    let shared = write_file(&storage, 3, StateScope::Shared, "sst", b"s");
    let owned = write_file(&storage, 3, StateScope::TaskOwned, "log", b"t");
    assert!(exclusive.path.starts_with("chk-3/heap-0-"), "{exclusive:?}");
    assert!(shared.path.starts_with("shared/sst-"), "{shared:?}");
    assert!(owned.path.starts_with("taskowned/log-"), "{owned:?}");
    let expected: BTreeSet<String> = [&exclusive, &shared, &owned]
        .iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(files(&storage), expected);
}

pub(crate) fn flipped_byte_is_corrupt(env: &Env) {
    let storage = env.storage();
    let bytes = payload(1000, 1);
    // Payload start, middle, last byte, and inside the footer.
    for offset in [0, 500, 999, 1003, 1008, 1015] {
        let file = write_file(&storage, 1, StateScope::Exclusive, "f", &bytes);
        storage.corrupt_byte(&file, offset).unwrap();
        let err = storage.read(&file).unwrap_err();
        assert!(
            matches!(&err, StateError::Corrupt { path, .. } if *path == file.path),
            "offset {offset}: {err:?}"
        );
        let err = storage.verify_file(&file).unwrap_err();
        assert!(
            matches!(&err, StateError::Corrupt { path, .. } if *path == file.path),
            "verify, offset {offset}: {err:?}"
        );
    }
}

pub(crate) fn truncated_file_is_corrupt(env: &Env) {
    let storage = env.storage();
    let bytes = payload(1000, 2);
    for keep in [0, 10, 999, 1000, 1015] {
        let file = write_file(&storage, 1, StateScope::Exclusive, "f", &bytes);
        storage.truncate(&file, keep).unwrap();
        assert_corrupt(storage.read(&file), &file.path, "truncated");
        assert_corrupt(verified(&storage, &file), &file.path, "truncated");
        assert_corrupt(storage.read_range(&file, 0..10), &file.path, "truncated");
        assert_corrupt(
            storage.read_range(&file, 990..1000),
            &file.path,
            "truncated",
        );
    }
}

pub(crate) fn missing_file_is_not_found(env: &Env) {
    let storage = env.storage();
    let file = write_file(&storage, 1, StateScope::Shared, "f", b"abc");
    storage.remove(&file).unwrap();
    assert_not_found(storage.read(&file), &file.path);
    assert_not_found(verified(&storage, &file), &file.path);
    assert_not_found(storage.read_range(&file, 0..2), &file.path);
}

pub(crate) fn wrong_handle_is_corrupt(env: &Env) {
    let storage = env.storage();
    let file = write_file(&storage, 1, StateScope::Exclusive, "f", b"hello world");
    let mut wrong_crc = file.clone();
    wrong_crc.crc32c ^= 0x8000_0000;
    assert_corrupt(storage.read(&wrong_crc), &file.path, "handle says");
    assert_corrupt(verified(&storage, &wrong_crc), &file.path, "handle says");
    let mut shorter = file.clone();
    shorter.size -= 1;
    assert_corrupt(storage.read(&shorter), &file.path, "size mismatch");
    assert!(matches!(
        verified(&storage, &shorter),
        Err(StateError::Corrupt { .. })
    ));
    assert_corrupt(
        storage.read_range(&shorter, 0..1),
        &file.path,
        "size mismatch",
    );
    let mut longer = file.clone();
    longer.size += 1;
    assert_corrupt(storage.read(&longer), &file.path, "truncated");
    assert_corrupt(verified(&storage, &longer), &file.path, "truncated");
    assert_corrupt(storage.read_range(&longer, 0..1), &file.path, "truncated");
}

pub(crate) fn escaping_handle_path_is_rejected(env: &Env) {
    let storage = env.storage();
    let mut file = write_file(&storage, 1, StateScope::Exclusive, "f", b"x");
    for bad in ["../other-job/chk-1/x", "/abs", "chk-1//x", ""] {
        file.path = bad.into();
        assert!(
            matches!(storage.read(&file), Err(StateError::Corrupt { .. })),
            "{bad}"
        );
    }
}

pub(crate) fn read_range_checks_bounds(env: &Env) {
    let storage = env.storage();
    let bytes = payload(5000, 4);
    let file = write_file(&storage, 1, StateScope::Exclusive, "f", &bytes);
    for range in [0..1, 0..5000, 1234..4321, 4999..5000] {
        let got = storage.read_range(&file, range.clone()).unwrap();
        assert_eq!(
            &got[..],
            &bytes[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert!(storage.read_range(&file, 10..10).unwrap().is_empty());
    // Past the end, into the footer, and reversed.
    let reversed = std::ops::Range { start: 10, end: 9 };
    for bad in [0..5001, 4999..5017, 5000..5001, reversed] {
        assert_corrupt(
            storage.read_range(&file, bad.clone()),
            &file.path,
            "outside",
        );
    }
}

pub(crate) fn large_file_uses_multipart(env: &Env) {
    let storage = env.storage();
    // Over two parts, written in odd-sized chunks that straddle part ends.
    let len = 2 * MULTIPART_PART_SIZE + 12_345;
    let bytes = payload(len, 5);
    let mut out = storage.create_output(2, StateScope::Shared, "big").unwrap();
    for chunk in bytes.chunks(1_000_003) {
        out.write_all(chunk).unwrap();
    }
    let file = out.close().unwrap();
    assert_eq!(file.size, len as u64);
    assert_eq!(file.crc32c, crc32c::crc32c(&bytes));
    assert!(storage.read(&file).unwrap()[..] == bytes[..]);
    storage.verify_file(&file).unwrap();
    let boundary = MULTIPART_PART_SIZE as u64;
    let got = storage
        .read_range(&file, boundary - 10..boundary + 10)
        .unwrap();
    assert_eq!(
        &got[..],
        &bytes[MULTIPART_PART_SIZE - 10..MULTIPART_PART_SIZE + 10]
    );
    // Exactly one part's worth goes up in a single put and reads back.
    let exact = payload(MULTIPART_PART_SIZE, 6);
    let file = write_file(&storage, 2, StateScope::Exclusive, "exact", &exact);
    assert!(storage.read(&file).unwrap()[..] == exact[..]);
    // Corruption deep inside a multipart file is caught too.
    let big = write_file(&storage, 2, StateScope::Exclusive, "big2", &bytes);
    storage.corrupt_byte(&big, boundary + 1).unwrap();
    assert_corrupt(storage.read(&big), &big.path, "checksum");
    assert_corrupt(verified(&storage, &big), &big.path, "checksum");
}

pub(crate) fn dropped_stream_leaves_nothing(env: &Env) {
    let storage = env.storage();
    let mut small = storage
        .create_output(1, StateScope::Exclusive, "small")
        .unwrap();
    small.write_all(b"never closed").unwrap();
    drop(small);
    // Large enough to have started a multipart upload.
    let mut large = storage
        .create_output(1, StateScope::Shared, "large")
        .unwrap();
    large
        .write_all(&payload(MULTIPART_PART_SIZE + 1000, 7))
        .unwrap();
    drop(large);
    assert_eq!(files(&storage), BTreeSet::new());
}

pub(crate) fn delete_is_idempotent(env: &Env) {
    let storage = env.storage();
    let file = write_file(&storage, 1, StateScope::Exclusive, "f", b"bye");
    storage.delete(&file).unwrap();
    assert!(!exists(&storage, &file));
    storage.delete(&file).unwrap();
}

pub(crate) fn works_inside_a_tokio_runtime(env: &Env) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let storage = env.storage();
    runtime.block_on(async {
        let file = write_file(&storage, 1, StateScope::Exclusive, "f", b"async");
        assert_eq!(&storage.read(&file).unwrap()[..], b"async");
        let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
        store.add(checkpoint(1, &[&file])).unwrap();
        // Dropping the storage (and its runtime) here must not panic.
        drop(store);
        drop(storage);
    });
}

// ------------------------------------------------------------ the store

pub(crate) fn retains_one(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert!(store.latest().is_none());
    let cp1 = checkpoint_with_exclusive(&storage, 1, &[]);
    assert_eq!(store.add(cp1.clone()).unwrap(), Vec::<u64>::new());
    assert_eq!(store.latest(), Some(&cp1));
    let cp2 = checkpoint_with_exclusive(&storage, 2, &[]);
    assert_eq!(store.add(cp2.clone()).unwrap(), [1]);
    assert_eq!(ids(&store), [2]);
    assert!(!has_dir(&storage, "chk-1"));
    assert!(!exists(&storage, cp1.exclusive_files()[0]));
    assert!(exists(&storage, cp2.exclusive_files()[0]));
    assert!(store.get(1).is_none());
    assert_eq!(store.get(2), Some(&cp2));
    assert!(store.pending_discards().is_empty());
}

pub(crate) fn retains_two(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    let mut subsumed = Vec::new();
    for id in 1..=5 {
        subsumed.extend(
            store
                .add(checkpoint_with_exclusive(&storage, id, &[]))
                .unwrap(),
        );
    }
    assert_eq!(subsumed, [1, 2, 3]);
    assert_eq!(ids(&store), [4, 5]);
    for id in 1..=5 {
        assert_eq!(has_dir(&storage, &format!("chk-{id}")), id >= 4, "chk-{id}");
    }
    assert_eq!(store.latest().map(|c| c.checkpoint_id), Some(5));
}

/// The four checkpoints of the Flink incremental checkpointing blog post
/// (2018), with two retained. Returns the store, the shared files by name
/// and the checkpoints.
fn flink_example(
    storage: &Arc<ObjectStoreCheckpointStorage>,
) -> (
    CompletedCheckpointStore,
    std::collections::BTreeMap<&'static str, FileHandle>,
) {
    let mut store = CompletedCheckpointStore::open(Arc::clone(storage), 2).unwrap();
    let mut sst = std::collections::BTreeMap::new();
    let mut shared = |id: u64, name: &'static str| {
        let file = write_file(storage, id, StateScope::Shared, name, name.as_bytes());
        sst.insert(name, file.clone());
        file
    };
    // CP1 uploads sstable-1 and -2.
    let (s1, s2) = (shared(1, "s1"), shared(1, "s2"));
    // CP2 adds -3 and -4 and still uses -1 and -2.
    let (s3, s4) = (shared(2, "s3"), shared(2, "s4"));
    // CP3: compaction merged 1, 2, 3 into -123; -4 lives on.
    let s123 = shared(3, "s123");
    // CP4: compaction merged 123, 4 and a new 5 into -12345.
    let s12345 = shared(4, "s12345");

    let cp1 = checkpoint_with_exclusive(storage, 1, &[&s1, &s2]);
    let cp2 = checkpoint_with_exclusive(storage, 2, &[&s1, &s2, &s3, &s4]);
    let cp3 = checkpoint_with_exclusive(storage, 3, &[&s123, &s4]);
    let cp4 = checkpoint_with_exclusive(storage, 4, &[&s12345]);

    assert!(store.add(cp1).unwrap().is_empty());
    assert!(store.add(cp2).unwrap().is_empty());
    assert_eq!(store.registry().references(&s1.path), [1, 2]);
    assert_eq!(store.registry().references(&s4.path), [2]);

    // CP3 subsumes CP1: s1 and s2 are still used by CP2, nothing shared goes.
    assert_eq!(store.add(cp3).unwrap(), [1]);
    assert_eq!(store.registry().references(&s1.path), [2]);
    assert_eq!(store.registry().references(&s4.path), [2, 3]);
    assert!(sst.values().all(|f| exists(storage, f)));

    // CP4 subsumes CP2: exactly s1, s2 and s3 lose their last user.
    assert_eq!(store.add(cp4).unwrap(), [2]);
    (store, sst)
}

pub(crate) fn shared_files_follow_flink_example(env: &Env) {
    let storage = env.storage();
    let (store, sst) = flink_example(&storage);
    let deleted: Vec<&str> = sst
        .iter()
        .filter(|(_, f)| !exists(&storage, f))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(deleted, ["s1", "s2", "s3"]);
    assert_eq!(ids(&store), [3, 4]);
    assert_eq!(store.registry().references(&sst["s4"].path), [3]);
    assert_eq!(store.registry().references(&sst["s123"].path), [3]);
    assert_eq!(store.registry().references(&sst["s12345"].path), [4]);
    assert_eq!(store.registry().len(), 3);
    assert!(!has_dir(&storage, "chk-1") && !has_dir(&storage, "chk-2"));
    assert!(has_dir(&storage, "chk-3") && has_dir(&storage, "chk-4"));
}

pub(crate) fn reopen_rebuilds_registry(env: &Env) {
    let storage = env.storage();
    let (store, sst) = flink_example(&storage);
    let before = files(&storage);
    let registry = store.registry().clone();
    drop(store);

    // A restart: new storage instance, new store.
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    assert_eq!(ids(&store), [3, 4]);
    assert_eq!(store.registry(), &registry);
    assert_eq!(files(&storage), before, "open deleted referenced files");

    // CP5 uses only s12345: subsuming CP3 frees s4 and s123.
    let cp5 = checkpoint_with_exclusive(&storage, 5, &[&sst["s12345"]]);
    assert_eq!(store.add(cp5).unwrap(), [3]);
    assert!(!exists(&storage, &sst["s4"]));
    assert!(!exists(&storage, &sst["s123"]));
    assert!(exists(&storage, &sst["s12345"]));
}

pub(crate) fn orphans_below_latest_are_swept(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 4, &[]))
        .unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 5, &[]))
        .unwrap();
    // Failed checkpoint 3 and in-progress checkpoint 7 left files behind.
    let orphan = write_file(&storage, 3, StateScope::Exclusive, "heap", b"orphan");
    let in_progress = write_file(&storage, 7, StateScope::Exclusive, "heap", b"running");
    let task_owned = write_file(&storage, 3, StateScope::TaskOwned, "log", b"mine");
    drop(store);

    let store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    assert_eq!(ids(&store), [4, 5]);
    assert!(!exists(&storage, &orphan));
    assert!(!has_dir(&storage, "chk-3"));
    assert!(exists(&storage, &in_progress));
    assert!(exists(&storage, &task_owned));
    assert!(has_dir(&storage, "chk-4") && has_dir(&storage, "chk-5"));
}

pub(crate) fn metadata_is_written_once(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    // A second coordinator that opened the store before the commit.
    let mut zombie = CompletedCheckpointStore::open(env.storage(), 1).unwrap();
    let first = checkpoint_with_exclusive(&storage, 1, &[]);
    store.add(first.clone()).unwrap();

    let mut second = checkpoint_with_exclusive(&storage, 1, &[]);
    second.timestamp_ms = 99;
    for err in [
        store.add(second.clone()).unwrap_err(),
        zombie.add(second.clone()).unwrap_err(),
    ] {
        match err {
            StateError::CheckpointAlreadyExists {
                checkpoint_id,
                path,
            } => {
                assert_eq!(checkpoint_id, 1);
                assert_eq!(path, "chk-1/_metadata");
            }
            other => panic!("expected CheckpointAlreadyExists, got {other:?}"),
        }
    }
    assert!(zombie.latest().is_none());
    assert_eq!(load_checkpoint(&storage, 1).unwrap(), first);
}

pub(crate) fn discard_pending_deletes_aborted_checkpoint(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let done = checkpoint_with_exclusive(&storage, 1, &[]);
    store.add(done.clone()).unwrap();
    let aborted = write_file(&storage, 2, StateScope::Exclusive, "heap", b"aborted");
    let aborted2 = write_file(&storage, 2, StateScope::Exclusive, "heap", b"aborted 2");
    store.discard_pending(2).unwrap();
    assert!(!exists(&storage, &aborted) && !exists(&storage, &aborted2));
    // Nothing to discard is fine too.
    store.discard_pending(3).unwrap();

    // A completed checkpoint is refused, retained or not.
    assert!(matches!(
        store.discard_pending(1),
        Err(StateError::CheckpointAlreadyExists {
            checkpoint_id: 1,
            ..
        })
    ));
    let mut other = CompletedCheckpointStore::open(env.storage(), 1).unwrap();
    drop(store);
    other.dispose(1).unwrap();
    let committed = checkpoint_with_exclusive(&storage, 6, &[]);
    CompletedCheckpointStore::open(env.storage(), 1)
        .unwrap()
        .add(committed.clone())
        .unwrap();
    assert!(matches!(
        other.discard_pending(6),
        Err(StateError::CheckpointAlreadyExists {
            checkpoint_id: 6,
            ..
        })
    ));
    assert!(exists(&storage, committed.exclusive_files()[0]));
}

pub(crate) fn dispose_removes_only_unshared_files(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 3).unwrap();
    let common = write_file(&storage, 1, StateScope::Shared, "common", b"c");
    let only2 = write_file(&storage, 2, StateScope::Shared, "only2", b"o");
    let owned = write_file(&storage, 2, StateScope::TaskOwned, "owned", b"t");
    store
        .add(checkpoint_with_exclusive(&storage, 1, &[&common]))
        .unwrap();
    let cp2 = checkpoint_with_exclusive(&storage, 2, &[&common, &only2, &owned]);
    store.add(cp2.clone()).unwrap();

    store.dispose(2).unwrap();
    assert_eq!(ids(&store), [1]);
    assert!(!exists(&storage, &only2));
    assert!(!exists(&storage, cp2.exclusive_files()[0]));
    assert!(exists(&storage, &common));
    assert!(
        exists(&storage, &owned),
        "task-owned files are never deleted"
    );
    assert!(load_checkpoint(&storage, 2).is_err());
    assert!(matches!(
        store.dispose(2),
        Err(StateError::CheckpointNotFound {
            checkpoint_id: 2,
            ..
        })
    ));
}

pub(crate) fn load_and_find_latest(env: &Env) {
    let storage = env.storage();
    assert_eq!(find_latest_completed(&storage).unwrap(), None);
    assert!(matches!(
        load_checkpoint(&storage, 1),
        Err(StateError::CheckpointNotFound {
            checkpoint_id: 1,
            location: Some(_)
        })
    ));
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    let cp1 = checkpoint_with_exclusive(&storage, 1, &[]);
    let cp2 = checkpoint_with_exclusive(&storage, 2, &[]);
    store.add(cp1.clone()).unwrap();
    store.add(cp2.clone()).unwrap();
    // An in-progress checkpoint 3 has files but no metadata.
    write_file(&storage, 3, StateScope::Exclusive, "heap", b"wip");
    assert_eq!(find_latest_completed(&storage).unwrap(), Some(cp2));
    assert_eq!(load_checkpoint(&storage, 1).unwrap(), cp1);
}

pub(crate) fn corrupt_metadata_falls_back_to_the_newest_intact(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    let one = checkpoint_with_exclusive(&storage, 1, &[]);
    let two = checkpoint_with_exclusive(&storage, 2, &[]);
    store.add(one.clone()).unwrap();
    store.add(two.clone()).unwrap();
    let metadata = FileHandle {
        path: "chk-2/_metadata".into(),
        scope: StateScope::Exclusive,
        size: 0,
        crc32c: 0,
    };
    storage.corrupt_byte(&metadata, 10).unwrap();
    let err = load_checkpoint(&storage, 2).unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path, .. } if path == "chk-2/_metadata"),
        "{err:?}"
    );
    assert_eq!(find_latest_completed(&storage).unwrap(), Some(one.clone()));

    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    assert_eq!(ids(&store), [1]);
    let damaged: Vec<u64> = store.damaged_checkpoints().map(|(id, _)| id).collect();
    assert_eq!(damaged, [2]);
    // Nothing of the damaged checkpoint is deleted, not even by collection,
    // and its id is not used again.
    store.collect_garbage().unwrap();
    assert!(exists(&storage, two.exclusive_files()[0]));
    assert!(storage.get_object("chk-2/_metadata").is_ok());
    assert!(matches!(
        store.add(checkpoint_with_exclusive(&storage, 2, &[])),
        Err(StateError::Config { .. })
    ));
    store
        .add(checkpoint_with_exclusive(&storage, 3, &[]))
        .unwrap();
    assert_eq!(ids(&store), [1, 3]);
}

/// A `_metadata` of a later release (a downgrade) stops the store from
/// opening with a clear error, instead of an older checkpoint being
/// restored in its place.
pub(crate) fn newer_metadata_version_fails_open(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 1, &[]))
        .unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 2, &[]))
        .unwrap();
    // What a later release writes: a newer version, its checksum over it.
    let mut newer = storage.get_object("chk-2/_metadata").unwrap().to_vec();
    newer[4] = state_storage::metadata::METADATA_VERSION + 1;
    let crc_at = newer.len() - 4;
    let crc = crc32c::crc32c(&newer[..crc_at]);
    newer[crc_at..].copy_from_slice(&crc.to_le_bytes());
    put_raw(&storage, "chk-2/_metadata", newer);
    for err in [
        CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap_err(),
        find_latest_completed(&storage).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                StateError::UnsupportedVersion { found, supported, .. }
                    if found == u32::from(state_storage::metadata::METADATA_VERSION) + 1
                        && supported == u32::from(state_storage::metadata::METADATA_VERSION)
            ),
            "{err}"
        );
    }
}

/// Stores `bytes` at `relative` as they are (no framing).
fn put_raw(storage: &ObjectStoreCheckpointStorage, relative: &str, bytes: Vec<u8>) {
    let location = relative
        .split('/')
        .fold(storage.root().clone(), |path, part| path.clone().join(part));
    let store = Arc::clone(storage.object_store());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move { store.put(&location, bytes.into()).await })
        .unwrap();
}

pub(crate) fn reopen_subsumes_beyond_retention(env: &Env) {
    let storage = env.storage();
    let shared = write_file(&storage, 1, StateScope::Shared, "s", b"s");
    let only1 = write_file(&storage, 1, StateScope::Shared, "only1", b"o");
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 3).unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 1, &[&shared, &only1]))
        .unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 2, &[&shared]))
        .unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 3, &[]))
        .unwrap();
    drop(store);
    // Reopened with a smaller retention: 1 is subsumed, 2 and 3 stay.
    let store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    assert_eq!(ids(&store), [2, 3]);
    assert!(!has_dir(&storage, "chk-1"));
    assert!(!exists(&storage, &only1));
    assert!(exists(&storage, &shared));
    assert_eq!(store.registry().references(&shared.path), [2]);
}

pub(crate) fn zero_retained_is_rejected(env: &Env) {
    assert!(matches!(
        CompletedCheckpointStore::open(env.storage(), 0),
        Err(StateError::Config { .. })
    ));
}

// ------------------------------------------------- commit-time checks

/// A checkpoint of `kind` with one exclusive file.
fn checkpoint_of_kind(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_id: u64,
    kind: CheckpointKind,
) -> CompletedCheckpoint {
    let mut checkpoint = checkpoint_with_exclusive(storage, checkpoint_id, &[]);
    checkpoint.kind = kind;
    checkpoint
}

#[track_caller]
fn assert_rejected_file(result: state_api::Result<Vec<u64>>, path: &str, rule: &str) {
    match result {
        Err(StateError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains(rule), "reason '{reason}' lacks '{rule}'");
        }
        other => panic!("expected Corrupt naming {path}, got {other:?}"),
    }
}

/// Subsumption deletes whole `chk-<n>/` directories, so a checkpoint may
/// only reference files where their scope says: a backend re-reporting
/// checkpoint 4's exclusive file in checkpoint 5 must not get 5 committed
/// (adding 5 would subsume 4 and delete the file 5 needs).
pub(crate) fn files_outside_their_scope_directory_are_rejected(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let cp4 = checkpoint_with_exclusive(&storage, 4, &[]);
    store.add(cp4.clone()).unwrap();
    let old = cp4.exclusive_files()[0].clone();

    let reused = checkpoint_with_exclusive(&storage, 5, &[&old]);
    assert_rejected_file(store.add(reused), &old.path, "chk-5/");
    // Nothing changed: 4 is retained with its file, 5 is not committed.
    assert_eq!(ids(&store), [4]);
    assert!(exists(&storage, &old));
    assert!(matches!(
        load_checkpoint(&storage, 5),
        Err(StateError::CheckpointNotFound { .. })
    ));

    // Every scope has its directory.
    let mut claims_shared = old.clone();
    claims_shared.scope = StateScope::Shared;
    assert_rejected_file(
        store.add(checkpoint_with_exclusive(&storage, 5, &[&claims_shared])),
        &old.path,
        "shared/",
    );
    let shared = write_file(&storage, 5, StateScope::Shared, "sst", b"s");
    let mut claims_owned = shared.clone();
    claims_owned.scope = StateScope::TaskOwned;
    assert_rejected_file(
        store.add(checkpoint_with_exclusive(&storage, 5, &[&claims_owned])),
        &shared.path,
        "taskowned/",
    );
    let mut claims_exclusive = shared.clone();
    claims_exclusive.scope = StateScope::Exclusive;
    assert_rejected_file(
        store.add(checkpoint_with_exclusive(&storage, 5, &[&claims_exclusive])),
        &shared.path,
        "chk-5/",
    );
    // The commit marker is not a state file.
    let marker = FileHandle {
        path: "chk-5/_metadata".into(),
        scope: StateScope::Exclusive,
        size: 0,
        crc32c: 0,
    };
    assert_rejected_file(
        store.add(checkpoint_with_exclusive(&storage, 5, &[&marker])),
        "chk-5/_metadata",
        "_metadata",
    );
    assert_eq!(ids(&store), [4]);
    assert!(exists(&storage, &old));

    // Files where their scope says are fine.
    let owned = write_file(&storage, 5, StateScope::TaskOwned, "log", b"t");
    let cp5 = checkpoint_with_exclusive(&storage, 5, &[&shared, &owned]);
    assert_eq!(store.add(cp5).unwrap(), [4]);
    assert!(exists(&storage, &shared) && exists(&storage, &owned));
}

/// Ids at or below one the store has seen are refused: committing one
/// would subsume it at once (or collide with a pending discard of the id).
pub(crate) fn checkpoint_ids_must_increase(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    store
        .add(checkpoint_with_exclusive(&storage, 5, &[]))
        .unwrap();
    let older = checkpoint_with_exclusive(&storage, 4, &[]);
    match store.add(older.clone()) {
        Err(StateError::Config { key, message }) => {
            assert_eq!(key, "checkpoint-id");
            assert!(
                message.contains("checkpoint 4") && message.contains('5'),
                "{message}"
            );
        }
        other => panic!("expected Config, got {other:?}"),
    }
    assert_eq!(ids(&store), [5]);
    assert!(matches!(
        load_checkpoint(&storage, 4),
        Err(StateError::CheckpointNotFound { .. })
    ));
    // The refused checkpoint's files are left for the caller to abort.
    assert!(exists(&storage, older.exclusive_files()[0]));
    store.discard_pending(4).unwrap();

    // The retained id itself is still "already exists".
    assert!(matches!(
        store.add(checkpoint_with_exclusive(&storage, 5, &[])),
        Err(StateError::CheckpointAlreadyExists {
            checkpoint_id: 5,
            ..
        })
    ));
    // A subsumed id is not reusable either.
    assert_eq!(
        store
            .add(checkpoint_with_exclusive(&storage, 6, &[]))
            .unwrap(),
        [5]
    );
    assert!(matches!(
        store.add(checkpoint_with_exclusive(&storage, 5, &[])),
        Err(StateError::Config { .. })
    ));
    assert_eq!(ids(&store), [6]);

    // A reopened store starts above its newest retained checkpoint.
    drop(store);
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert!(matches!(
        store.add(checkpoint_with_exclusive(&storage, 3, &[])),
        Err(StateError::Config { .. })
    ));
    assert_eq!(
        store
            .add(checkpoint_with_exclusive(&storage, 7, &[]))
            .unwrap(),
        [6]
    );
}

/// Savepoints belong to the user: retention neither counts nor removes
/// them; only `dispose` does.
pub(crate) fn savepoints_are_never_subsumed(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    store
        .add(checkpoint_of_kind(&storage, 1, CheckpointKind::Checkpoint))
        .unwrap();
    let savepoint = checkpoint_of_kind(&storage, 2, CheckpointKind::Savepoint);
    // The savepoint does not count: checkpoint 1 stays retained.
    assert!(store.add(savepoint.clone()).unwrap().is_empty());
    assert_eq!(ids(&store), [1, 2]);
    assert_eq!(
        store
            .add(checkpoint_of_kind(&storage, 3, CheckpointKind::Checkpoint))
            .unwrap(),
        [1]
    );
    assert_eq!(
        store
            .add(checkpoint_of_kind(&storage, 4, CheckpointKind::Checkpoint))
            .unwrap(),
        [3]
    );
    assert_eq!(ids(&store), [2, 4]);
    assert_eq!(store.latest().map(|c| c.checkpoint_id), Some(4));
    assert!(exists(&storage, savepoint.exclusive_files()[0]));
    assert_eq!(load_checkpoint(&storage, 2).unwrap(), savepoint);

    // Nor does reopening with retention subsume it.
    drop(store);
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert_eq!(ids(&store), [2, 4]);
    assert!(exists(&storage, savepoint.exclusive_files()[0]));

    store.dispose(2).unwrap();
    assert_eq!(ids(&store), [4]);
    assert!(!exists(&storage, savepoint.exclusive_files()[0]));
    assert!(!has_dir(&storage, "chk-2"));
}

/// A checkpoint still being written (N+2) reuses shared file S of N; full
/// checkpoint N+1 completes and subsumes N, deleting S. N+2 must not commit
/// a reference to the deleted file.
pub(crate) fn shared_file_deleted_before_commit_fails_the_add(env: &Env) {
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let s = write_file(&storage, 1, StateScope::Shared, "sst", b"s");
    store
        .add(checkpoint_with_exclusive(&storage, 1, &[&s]))
        .unwrap();
    // Checkpoint 3 starts and reuses S; it also uploads a new shared file.
    let new = write_file(&storage, 3, StateScope::Shared, "sst", b"new");
    let cp3 = checkpoint_with_exclusive(&storage, 3, &[&s, &new]);
    // Full checkpoint 2 completes first: S loses its last user.
    assert_eq!(
        store
            .add(checkpoint_with_exclusive(&storage, 2, &[]))
            .unwrap(),
        [1]
    );
    assert!(!exists(&storage, &s));

    match store.add(cp3) {
        Err(StateError::FileNotFound { path }) => assert_eq!(path, s.path),
        other => panic!("expected FileNotFound for {}, got {other:?}", s.path),
    }
    assert_eq!(ids(&store), [2]);
    assert!(matches!(
        load_checkpoint(&storage, 3),
        Err(StateError::CheckpointNotFound { .. })
    ));
    // Without the lost file it commits; its new shared file was uploaded by
    // itself (unknown to the registry) and is found in storage.
    let cp3 = checkpoint_with_exclusive(&storage, 3, &[&new]);
    assert_eq!(store.add(cp3).unwrap(), [2]);
    assert_eq!(store.registry().references(&new.path), [3]);
}

/// Operator state handles (metadata version 3) are committed, checked and
/// collected like keyed ones: a file outside its checkpoint's directory is
/// refused, and a subsumed checkpoint's operator state goes with it.
pub(crate) fn operator_state_files_are_checked_and_collected(env: &Env) {
    use state_api::operator_state::{OperatorStateHandle, OperatorStateMode, OperatorStateSection};
    let storage = env.storage();
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    let operator_state = |id: u64, file: FileHandle| {
        CompletedCheckpoint::new("job", id, id, CheckpointKind::Checkpoint).with_operator_state(
            "source",
            vec![OperatorStateHandle {
                subtask: 0,
                parallelism: 1,
                file,
                sections: vec![OperatorStateSection {
                    name: "offsets".into(),
                    mode: OperatorStateMode::SplitDistribute,
                    offset: 5,
                    elements: 0,
                }],
            }],
        )
    };
    let first = write_file(&storage, 1, StateScope::Exclusive, "operator", b"KSOS\x01");
    store.add(operator_state(1, first.clone())).unwrap();
    assert_rejected_file(
        store.add(operator_state(2, first.clone())),
        &first.path,
        "chk-2/",
    );
    let second = write_file(&storage, 2, StateScope::Exclusive, "operator", b"KSOS\x01");
    assert_eq!(store.add(operator_state(2, second.clone())).unwrap(), [1]);
    assert!(!exists(&storage, &first));
    assert!(exists(&storage, &second));
    assert!(store.unreferenced_files().unwrap().is_empty());
    let reopened = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
    assert_eq!(
        reopened.latest().unwrap().operator_states["source"][0].file,
        second
    );
}
