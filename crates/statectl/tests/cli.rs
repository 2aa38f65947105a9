//! `statectl` as a user runs it: against real checkpoints (heap and
//! incremental RocksDB) and savepoints on local disk.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use state_api::snapshot::SavepointFormat;
use state_api::timers::TimerService;
use state_api::ttl::StateTtlConfig;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend,
    KeyedStateBackendExt, ListStateDescriptor, MapStateDescriptor, SnapshotOptions, SnapshotType,
    StateBackendFactory, ValueStateDescriptor,
};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, CompletedCheckpointStore, ObjectStoreCheckpointStorage,
    SavepointWriter,
};

const KEYS: u64 = 50;

fn statectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_statectl"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A backend with value, list and map state for `KEYS` u64 keys.
fn populated(
    factory: &dyn StateBackendFactory,
    storage: &Arc<ObjectStoreCheckpointStorage>,
) -> Box<dyn KeyedStateBackend> {
    let mut backend = factory
        .create(BackendContext {
            operator: "op".into(),
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128).unwrap(),
            restore: Vec::new(),
            storage: Arc::clone(storage) as Arc<dyn CheckpointStorageAccess>,
            restore_storage: None,
            skip_restored_states: Vec::new(),
        })
        .unwrap();
    let count = backend
        .value_state(ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let names = backend
        .list_state(ListStateDescriptor::<String>::new("names"))
        .unwrap();
    let tags = backend
        .map_state(MapStateDescriptor::<u32, String>::new("tags"))
        .unwrap();
    let timers = TimerService::<u32>::register(&mut *backend, "windows").unwrap();
    let seen = backend
        .value_state(
            ValueStateDescriptor::<u64>::new("seen")
                .with_ttl(StateTtlConfig::new(std::time::Duration::from_secs(3600))),
        )
        .unwrap();
    for key in 0..KEYS {
        backend.set_key(&key).unwrap();
        timers
            .register_event_time_timer(&mut *backend, &((key % 2) as u32), (key * 100) as i64)
            .unwrap();
        count.update(&mut *backend, &(key * 10)).unwrap();
        seen.update(&mut *backend, &key).unwrap();
        names.add(&mut *backend, &format!("n{key}")).unwrap();
        names.add(&mut *backend, &format!("m{key}")).unwrap();
        tags.put(&mut *backend, &1, &"one".to_string()).unwrap();
        tags.put(&mut *backend, &2, &"two".to_string()).unwrap();
    }
    backend
}

fn snapshot(
    backend: &mut dyn KeyedStateBackend,
    id: u64,
    snapshot_type: SnapshotType,
    storage: Arc<dyn CheckpointStorageAccess>,
) -> state_api::KeyedStateHandle {
    let options = SnapshotOptions {
        snapshot_type,
        timestamp_ms: 1_700_000_000_000,
    };
    backend
        .snapshot(id, &options, storage)
        .unwrap()
        .run()
        .unwrap()
        .handle
}

/// A checkpoint base dir with job `job-1`'s checkpoint 1 (a heap operator
/// and an incremental RocksDB operator) and a savepoints dir with one
/// canonical savepoint.
struct Fixture {
    root: tempfile::TempDir,
    savepoint: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let storage = Arc::new(
            ObjectStoreCheckpointStorage::local(root.path().join("checkpoints"), "job-1").unwrap(),
        );
        let heap = state_heap::HeapBackendFactory::new();
        let rocksdb = state_rocksdb::RocksDbBackendFactory::new(
            state_rocksdb::RocksDbConfig::new(root.path().join("local"))
                .with_memory(state_rocksdb::RocksDbMemory::new(32 << 20).unwrap())
                .with_incremental(true),
        );
        let mut on_heap = populated(&heap, &storage);
        let mut on_rocksdb = populated(&rocksdb, &storage);
        let dyn_storage = Arc::clone(&storage) as Arc<dyn CheckpointStorageAccess>;
        let heap_handle = snapshot(
            &mut *on_heap,
            1,
            SnapshotType::Checkpoint,
            Arc::clone(&dyn_storage),
        );
        let rocksdb_handle = snapshot(&mut *on_rocksdb, 1, SnapshotType::Checkpoint, dyn_storage);
        let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).unwrap();
        store
            .add(
                CompletedCheckpoint::new("job-1", 1, 1_700_000_000_000, CheckpointKind::Checkpoint)
                    .with_operator("heap-op", vec![heap_handle])
                    .with_operator("rocksdb-op", vec![rocksdb_handle]),
            )
            .unwrap();

        let writer =
            SavepointWriter::create(root.path().join("savepoints").to_str().unwrap(), "job-1")
                .unwrap();
        let handle = snapshot(
            &mut *on_rocksdb,
            2,
            SnapshotType::Savepoint(SavepointFormat::Canonical),
            writer.storage(),
        );
        let savepoint = writer
            .commit(
                CompletedCheckpoint::new("job-1", 2, 1_700_000_000_000, CheckpointKind::Savepoint)
                    .with_operator("rocksdb-op", vec![handle]),
            )
            .unwrap();
        Self {
            savepoint: savepoint.local_dir().unwrap(),
            root,
        }
    }

    fn path(&self, relative: &str) -> String {
        self.root
            .path()
            .join(relative)
            .to_str()
            .unwrap()
            .to_string()
    }

    fn checkpoint(&self) -> String {
        self.path("checkpoints/job-1/chk-1")
    }

    fn savepoint(&self) -> String {
        self.savepoint.to_str().unwrap().to_string()
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("_metadata"))
        .collect();
    files.sort();
    files
}

#[test]
fn list_finds_checkpoints_and_savepoints_at_every_level() {
    let f = Fixture::new();
    for dir in [f.path("checkpoints"), f.path("checkpoints/job-1")] {
        let out = statectl(&["list", &dir]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let row = text.lines().find(|l| l.starts_with("checkpoint")).unwrap();
        assert!(row.contains("job-1") && row.contains("chk-1"), "{text}");
        assert!(row.contains("2023-11-14T22:13:20.000Z"), "{text}");
    }
    let out = statectl(&["list", &f.path("savepoints")]);
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("savepoint")).unwrap();
    assert!(row.contains("savepoint-job-1-"), "{text}");
    // A savepoint directory lists itself.
    let out = statectl(&["list", &f.savepoint()]);
    assert!(stdout(&out).lines().any(|l| l.starts_with("savepoint")));
}

#[test]
fn inspect_shows_states_ranges_and_files() {
    let f = Fixture::new();
    let out = statectl(&["inspect", &f.checkpoint()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "checkpoint 1 of job 'job-1'",
        "operator 'heap-op'",
        "operator 'rocksdb-op'",
        "key-groups handle by heap: key groups 0..128 of 128",
        "incremental handle by rocksdb",
        "state 'tags': Map, value alloc::string::String",
        "(shared,",
        "(own,",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let out = statectl(&["inspect", "--json", &format!("{}/_metadata", f.savepoint())]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kind"], "Savepoint");
    assert_eq!(json["checkpoint_id"], 2);
}

#[test]
fn verify_exit_codes_say_what_is_wrong() {
    let f = Fixture::new();
    let ok = statectl(&["verify", &f.checkpoint()]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert!(
        stdout(&ok).starts_with("OK: checkpoint 1"),
        "{}",
        stdout(&ok)
    );

    let files = files_in(&f.savepoint);
    assert!(!files.is_empty());
    assert_eq!(statectl(&["verify", &f.savepoint()]).status.code(), Some(0));

    // A flipped byte: damaged.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let corrupt = statectl(&["verify", &f.savepoint()]);
    assert_eq!(corrupt.status.code(), Some(4), "{}", stdout(&corrupt));
    assert!(stdout(&corrupt).contains("CORRUPT"), "{}", stdout(&corrupt));

    // A missing file in the checkpoint's shared directory: missing.
    let shared = files_in(&f.root.path().join("checkpoints/job-1/shared"));
    std::fs::remove_file(&shared[0]).unwrap();
    let missing = statectl(&["verify", &f.checkpoint()]);
    assert_eq!(missing.status.code(), Some(3), "{}", stdout(&missing));
    assert!(
        stdout(&missing).contains("MISSING shared/"),
        "{}",
        stdout(&missing)
    );

    // Both at once.
    let exclusive = files_in(&f.root.path().join("checkpoints/job-1/chk-1"));
    let mut bytes = std::fs::read(&exclusive[0]).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&exclusive[0], &bytes).unwrap();
    assert_eq!(
        statectl(&["verify", &f.checkpoint()]).status.code(),
        Some(5)
    );

    // No metadata at all.
    let gone = statectl(&["verify", &f.path("checkpoints/job-1/chk-9")]);
    assert_eq!(gone.status.code(), Some(3), "{}", stdout(&gone));
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dump_prints_every_entry_as_json_lines() {
    let f = Fixture::new();
    for (location, operator) in [
        (f.checkpoint(), "heap-op"),
        (f.checkpoint(), "rocksdb-op"),
        (f.savepoint(), "rocksdb-op"),
    ] {
        let out = statectl(&[
            "dump",
            &location,
            "--operator",
            operator,
            "--state",
            "count",
            "--key-type",
            "u64",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let entries = lines(&out);
        assert_eq!(entries.len() as u64, KEYS, "{operator}");
        for entry in &entries {
            let key = entry["key"].as_u64().unwrap();
            assert_eq!(entry["value"].as_u64().unwrap(), key * 10);
            assert!(entry["key_group"].as_u64().unwrap() < 128);
            assert!(entry["namespace"].is_null());
        }
    }
    let out = statectl(&[
        "dump",
        &f.savepoint(),
        "--state",
        "names",
        "--key-type",
        "u64",
    ]);
    let entries = lines(&out);
    assert_eq!(entries.len() as u64, KEYS);
    let first = entries.iter().find(|e| e["key"] == 3).unwrap();
    assert_eq!(first["value"], serde_json::json!(["n3", "m3"]));

    let out = statectl(&["dump", &f.savepoint(), "--state", "tags", "--limit", "5"]);
    let entries = lines(&out);
    assert_eq!(entries.len(), 5);
    assert!(
        entries
            .iter()
            .all(|e| e["user_key"] == 1 || e["user_key"] == 2)
    );

    // Timers: one line per timer, with its timestamp.
    let out = statectl(&[
        "dump",
        &f.savepoint(),
        "--state",
        "_timer_state/event_windows",
        "--key-type",
        "u64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = lines(&out);
    assert_eq!(entries.len() as u64, KEYS);
    for entry in &entries {
        let key = entry["key"].as_u64().unwrap();
        assert_eq!(entry["timestamp"].as_u64().unwrap(), key * 100);
    }

    // A state with a time to live: the value and its last access.
    let out = statectl(&[
        "dump",
        &f.savepoint(),
        "--state",
        "seen",
        "--key-type",
        "u64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for entry in lines(&out) {
        assert_eq!(entry["value"], entry["key"]);
        assert!(entry["last_access_ms"].as_i64().unwrap() > 1_600_000_000_000);
    }

    let unknown = statectl(&["dump", &f.checkpoint(), "--state", "count"]);
    assert_eq!(unknown.status.code(), Some(1));
    let message = stderr(&unknown);
    assert!(message.contains("heap-op, rocksdb-op"), "{message}");
    let unknown = statectl(&["dump", &f.savepoint(), "--state", "nope"]);
    assert!(
        stderr(&unknown).contains("count, names, seen, tags"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn dispose_removes_a_savepoint_and_refuses_checkpoints() {
    let f = Fixture::new();
    let refused = statectl(&["dispose", &f.checkpoint()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("disposes savepoints only"));
    assert!(Path::new(&f.checkpoint()).join("_metadata").exists());

    let out = statectl(&["dispose", &f.savepoint()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("disposed savepoint 2"),
        "{}",
        stdout(&out)
    );
    assert!(!f.savepoint.exists() || files_in(&f.savepoint).is_empty());
    assert_eq!(
        statectl(&["verify", &f.checkpoint()]).status.code(),
        Some(0)
    );
}

#[test]
fn errors_are_one_line_without_backtraces() {
    let f = Fixture::new();
    std::fs::write(f.savepoint.join("_metadata"), b"garbage").unwrap();
    for args in [
        vec!["inspect", "/nonexistent/savepoint-x"],
        vec!["inspect", f.savepoint.to_str().unwrap()],
        vec!["dump", "/nonexistent/chk-1", "--state", "x"],
        vec!["list", "/nonexistent/dir"],
        vec!["inspect"],
        vec!["verify", "--bogus", "x"],
    ] {
        let out = statectl(&args);
        let message = stderr(&out);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {:?}",
            out.status
        );
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
}

#[test]
fn list_descends_and_reports_unfinished_and_damaged_entries() {
    let f = Fixture::new();
    // Unrelated, unfinished and damaged directories beside the real ones.
    std::fs::create_dir_all(f.root.path().join("checkpoints/lost+found")).unwrap();
    let unfinished = f.root.path().join("savepoints/savepoint-job-1-unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("state-file"), b"partial").unwrap();
    let damaged = f.root.path().join("savepoints/savepoint-job-1-damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("_metadata"), b"not metadata").unwrap();

    // From the directory above checkpoints/ and savepoints/.
    let out = statectl(&["list", f.root.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = |kind: &str, path: &str| {
        text.lines()
            .any(|l| l.starts_with(kind) && l.contains(path))
    };
    assert!(row("checkpoint", "checkpoints/job-1/chk-1"), "{text}");
    assert!(row("savepoint", "savepoints/savepoint-job-1-"), "{text}");
    assert!(row("incomplete", "savepoint-job-1-unfinished"), "{text}");
    assert!(row("unreadable", "savepoint-job-1-damaged"), "{text}");
    assert!(!text.contains("lost+found"), "{text}");
}

#[test]
fn relative_locations_work_from_inside_a_job_directory() {
    let f = Fixture::new();
    let job_dir = f.root.path().join("checkpoints/job-1");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_statectl"))
            .args(args)
            .current_dir(&job_dir)
            .output()
            .unwrap()
    };
    let out = run(&["inspect", "chk-1"]);
    assert!(
        stdout(&out).starts_with("checkpoint 1 of job 'job-1'"),
        "{}",
        stderr(&out)
    );
    let out = run(&["list", "."]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("checkpoint")),
        "{}",
        stderr(&out)
    );
    let out = run(&["verify", "chk-1/_metadata"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn dump_reads_changelog_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        ObjectStoreCheckpointStorage::local(root.path().join("checkpoints"), "job-2").unwrap(),
    );
    let no_timer = state_changelog::MaterializationConfig {
        interval: None,
        ..state_changelog::MaterializationConfig::default()
    };
    let changelog = state_changelog::ChangelogBackendFactory::new(
        Arc::new(state_heap::HeapBackendFactory::new()),
        state_changelog::DstlConfig::default(),
        no_timer,
    )
    .unwrap();
    let mut backend = populated(&changelog, &storage);
    let dyn_storage = Arc::clone(&storage) as Arc<dyn CheckpointStorageAccess>;
    // The first checkpoint materializes; the second is materialization + log.
    let first = snapshot(
        &mut *backend,
        1,
        SnapshotType::Checkpoint,
        Arc::clone(&dyn_storage),
    );
    backend.notify_checkpoint_complete(1).unwrap();
    let count = backend
        .value_state(ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    for key in 0..KEYS {
        backend.set_key(&key).unwrap();
        count.update(&mut *backend, &(key * 10 + 1)).unwrap();
    }
    let second = snapshot(&mut *backend, 2, SnapshotType::Checkpoint, dyn_storage);
    assert_eq!(first.format_name(), "changelog");
    let mut store = CompletedCheckpointStore::open(Arc::clone(&storage), 2).unwrap();
    store
        .add(
            CompletedCheckpoint::new("job-2", 2, 0, CheckpointKind::Checkpoint)
                .with_operator("op", vec![second]),
        )
        .unwrap();
    let location = root.path().join("checkpoints/job-2/chk-2");
    let out = statectl(&[
        "dump",
        location.to_str().unwrap(),
        "--state",
        "count",
        "--key-type",
        "u64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = lines(&out);
    assert_eq!(entries.len() as u64, KEYS);
    for entry in entries {
        assert_eq!(
            entry["value"].as_u64().unwrap(),
            entry["key"].as_u64().unwrap() * 10 + 1
        );
    }
    let out = statectl(&["inspect", location.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("changelog handle by changelog-heap"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        statectl(&["verify", location.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

/// A version-3 checkpoint (the checked-in fixture) lists its operator state
/// and in-flight records, and verify checks their files too.
#[test]
fn inspect_and_verify_show_operator_and_channel_state() {
    let checkpoint = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../state-testkit/fixtures/v3/heap/checkpoints/chk-2"
    );
    let out = statectl(&["inspect", checkpoint]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "operator state of 'source': 1 instance(s)",
        "offsets (SplitDistribute, 2 elements), watermarks (Union, 1 elements), rules (Broadcast, 1 elements)",
        "in-flight records of 'op': 1 instance(s)",
        "3 records in 3 runs from 2 channels",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let verified = statectl(&["verify", checkpoint]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains("3 files"),
        "{}",
        stdout(&verified)
    );
}
