//! The main job end to end: the multi-task dataflow in each checkpointing
//! mode, with a task failure, a storage outage and a crash during a
//! checkpoint, restored at alternating parallelism; savepoints between
//! backends; an unclear commit; retention.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use state_job::job::{JobReport, run, run_on_storage};
use state_job::options::{Options, state_config};
use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};

/// A small workload at a steady rate, so that checkpoints complete between
/// the failures even on a loaded machine.
const WORKLOAD: &str = "--keys 300 --events 40000 --source-rate 40000 --checkpoint-interval 20";

fn options(dir: &Path, args: &str) -> Options {
    let dir = dir.to_str().unwrap().to_string();
    let mut argv = vec!["state-job".to_string(), "--checkpoint-dir".into(), dir];
    // The workload's flags, unless `args` sets them.
    let workload: Vec<&str> = WORKLOAD.split_whitespace().collect();
    for pair in workload.chunks(2) {
        if !args.split_whitespace().any(|a| a == pair[0]) {
            argv.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    argv.extend(args.split_whitespace().map(String::from));
    Options::parse_from(argv)
}

fn run_with(dir: &Path, args: &str) -> JobReport {
    run(&options(dir, args)).expect("the job runs")
}

#[test]
fn aligned_exactly_once_survives_all_three_failures_while_rescaling() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_with(dir.path(), "--parallelism 2 --restore-parallelism 3");
    assert!(report.passed && report.verdict.equal, "{report:?}");
    assert_eq!(report.failures_injected, 3);
    assert!(report.restored_checkpoint.is_some(), "{report:?}");
    assert!(report.completed_checkpoints >= 3);
    assert_eq!(
        report.sink.events, 40_000,
        "each event in one closed window"
    );
    assert_eq!(report.collected_at_end, 0, "nothing left unreferenced");
}

#[test]
fn unaligned_checkpoints_restore_in_flight_records_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    // Unthrottled sources fill the small channels: the barriers overtake
    // records, which the checkpoints persist and the restores re-route.
    let args = "--checkpointing unaligned --source-rate 0 --events 120000 \
                --channel-capacity 500 --parallelism 3 --restore-parallelism 2";
    let report = run_with(dir.path(), args);
    assert!(report.passed && report.verdict.equal, "{report:?}");
    assert!(report.unaligned_checkpoints > 0, "{report:?}");
    assert!(
        report.restored_in_flight_files > 0,
        "a restore brought back in-flight records: {report:?}"
    );
}

#[test]
fn aligned_with_timeout_switches_to_unaligned_and_stays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = "--checkpointing unaligned --aligned-checkpoint-timeout 1 --source-rate 0 \
                --events 80000 --channel-capacity 500";
    let report = run_with(dir.path(), args);
    assert!(report.passed && report.verdict.equal, "{report:?}");
}

#[test]
fn at_least_once_loses_nothing_and_reports_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_with(dir.path(), "--checkpointing at-least-once --source-rate 0");
    assert!(report.passed, "{report:?}");
    assert_eq!(report.verdict.keys_with_losses, 0);
    // Duplicates are possible, not certain; the count is reported either way.
    println!("duplicates: {}", report.verdict.duplicates);
}

#[test]
fn failure_before_any_checkpoint_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let args = "--checkpoint-interval 60000 --inject-failures task --fail-at 100";
    let report = run_with(dir.path(), args);
    assert!(report.passed, "{report:?}");
    assert_eq!(report.restored_checkpoint, None);
}

#[test]
fn lower_parallelism_retains_two_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let args = "--parallelism 3 --restore-parallelism 1 --num-retained 2 --max-parallelism 32";
    let report = run_with(dir.path(), args);
    assert!(report.passed, "{report:?}");
    let storage =
        Arc::new(ObjectStoreCheckpointStorage::local(dir.path(), &report.job_id).unwrap());
    let store = CompletedCheckpointStore::open(storage, 2).unwrap();
    assert_eq!(store.checkpoints().count(), 2);
    let on_disk = std::fs::read_dir(dir.path().join(&report.job_id))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        .count();
    assert_eq!(on_disk, 2, "subsumed checkpoint directories are deleted");
}

#[test]
fn rocksdb_and_changelog_recover_with_equal_state() {
    for backend in [
        "--backend rocksdb --managed-memory-mb 32",
        "--backend rocksdb --changelog --materialization-interval-ms 50",
        "--changelog --materialization-interval-ms 50",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let args = format!("{backend} --local-dir {}", local.path().display());
        let report = run_with(dir.path(), &args);
        assert!(report.passed, "{backend}: {report:?}");
        assert!(report.restored_checkpoint.is_some(), "{backend}");
        assert_eq!(report.collected_at_end, 0, "{backend}");
        assert_eq!(
            std::fs::read_dir(local.path()).unwrap().count(),
            0,
            "{backend}: every RocksDB instance removed its working directory"
        );
    }
}

#[test]
fn a_savepoint_moves_the_job_from_heap_to_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let savepoints = dir.path().join("savepoints");
    let local = dir.path().join("rocksdb");
    let first = run_with(
        dir.path(),
        &format!(
            "--events 12000 --inject-failures none --stop-with-savepoint --savepoint-dir {}",
            savepoints.display()
        ),
    );
    assert!(first.passed);
    let savepoint = first.savepoint.expect("a savepoint was taken");
    assert!(
        savepoint.contains("/savepoints/savepoint-job-"),
        "{savepoint}"
    );

    // A longer stream on RocksDB continues where the savepoint's sources
    // stopped, and ends equal to a run from the same savepoint without
    // failures.
    let second = run_with(
        dir.path(),
        &format!(
            "--backend rocksdb --local-dir {} --events 30000 --parallelism 3 \
             --restore-parallelism 2 --from-savepoint {savepoint}",
            local.display()
        ),
    );
    assert!(second.passed, "{second:?}");
    assert_eq!(second.sink.events, 30_000, "the sink's sums came along");

    // A savepoint of another program is refused with a clear error.
    let err = run(&options(
        dir.path(),
        &format!("--from-savepoint {}/nothing-here", savepoints.display()),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("nothing-here"), "{err}");
}

/// The `_metadata` put of checkpoint 2 is applied on the server, but the
/// job gets an error every time it asks: the outcome stays open until the
/// store resolves it by reading back, and the job ends exactly once.
#[test]
fn a_commit_with_unknown_outcome_is_resolved_not_aborted() {
    use object_store::ObjectStore;
    use state_storage::fault::{Fault, FaultConfig, FaultInjectingStore, Operation};
    use state_storage::retry::RetryPolicy;

    let dir = tempfile::tempdir().unwrap();
    let o = options(dir.path(), "--changelog --materialization-interval-ms 20");
    let config = state_config(&o).unwrap();
    let faults = Arc::new(FaultInjectingStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        FaultConfig::default(),
    ));
    faults.inject(Operation::Put, "chk-2/_metadata", Fault::Unclear);
    faults.inject_times(
        Operation::Put,
        "chk-2/_metadata",
        Fault::Fail,
        RetryPolicy::default().max_attempts - 1,
    );
    let store: Arc<dyn ObjectStore> = faults.clone();
    let report = run_on_storage(&o, &config, &|job_id| {
        ObjectStoreCheckpointStorage::new(Arc::clone(&store), Default::default(), job_id)
    })
    .unwrap();
    assert_eq!(faults.pending_injections(), 0, "the faults applied");
    assert!(report.passed, "{report:?}");
    assert!(report.restored_checkpoint.is_some_and(|id| id >= 2));
}
