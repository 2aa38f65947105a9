//! The main job with `--config`: every example file in `config/` runs the
//! job to an equal result, and the flags a file replaces are rejected with it.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clap::Parser;
use state_config::{BackendType, StateConfig};
use state_job::job::run_with_config;
use state_job::options::{Options, state_config};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The example files, each run by one test below (so they run in
/// parallel).
const EXAMPLES: [&str; 4] = [
    "changelog-rocksdb.yaml",
    "hashmap.yaml",
    "rocksdb.toml",
    "rocksdb.yaml",
];

#[test]
fn every_example_file_has_a_job_test() {
    let mut files: Vec<String> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, EXAMPLES, "add a test below for each new file");
}

/// Runs the job with `config/<name>` on a small workload, its directories
/// moved into temporary ones, and checks the result.
fn run_example(name: &str) {
    let file = config_dir().join(name);
    let checkpoints = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let options = Options::parse_from([
        "state-job",
        "--config",
        file.to_str().unwrap(),
        "--keys",
        "2000",
        "--events",
        "30000",
        "--source-rate",
        "30000",
        "--checkpoint-interval",
        "20",
    ]);
    // The file as `--config` reads it, with the directories overridden.
    let config = state_config(&options)
        .unwrap()
        .with_overrides([
            (
                "execution.checkpointing.dir",
                checkpoints.path().to_str().unwrap(),
            ),
            (
                "state.backend.rocksdb.localdir",
                local.path().to_str().unwrap(),
            ),
        ])
        .unwrap();
    let report = run_with_config(&options, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed, "{name}: the result differs");
    assert!(
        report.restored_checkpoint.is_some(),
        "{name}: a checkpoint completed before the failure"
    );
    assert!(
        checkpoints.path().join(&report.job_id).is_dir(),
        "{name}: checkpoints went to the configured directory"
    );
    assert_eq!(
        std::fs::read_dir(local.path()).unwrap().count(),
        0,
        "{name}: RocksDB working directories are removed"
    );
}

#[test]
fn hashmap_yaml_runs_the_job_to_an_equal_result() {
    run_example("hashmap.yaml");
}

#[test]
fn rocksdb_yaml_runs_the_job_to_an_equal_result() {
    run_example("rocksdb.yaml");
}

#[test]
fn rocksdb_toml_runs_the_job_to_an_equal_result() {
    run_example("rocksdb.toml");
}

#[test]
fn changelog_rocksdb_yaml_runs_the_job_to_an_equal_result() {
    run_example("changelog-rocksdb.yaml");
}

#[test]
fn flags_replaced_by_a_config_file_are_rejected_with_it() {
    for flag in [
        vec!["--backend", "rocksdb"],
        vec!["--checkpoint-dir", "/tmp/x"],
        vec!["--num-retained", "2"],
        vec!["--local-dir", "/tmp/x"],
        vec!["--managed-memory-mb", "64"],
        vec!["--full-checkpoints"],
        vec!["--changelog"],
        vec!["--materialization-interval-ms", "100"],
    ] {
        let mut argv = vec!["state-job", "--config", "config/rocksdb.yaml"];
        argv.extend(&flag);
        let err = Options::try_parse_from(&argv).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{flag:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("'--config <FILE>' cannot be used with") && message.contains(flag[0]),
            "{message}"
        );
    }
    // Workload flags go with a file.
    let options = Options::try_parse_from([
        "state-job",
        "--config",
        "config/rocksdb.yaml",
        "--keys",
        "10",
        "--parallelism",
        "4",
        "--seed",
        "1",
    ])
    .unwrap();
    assert_eq!(options.keys, 10);
}

#[test]
fn without_a_file_the_flags_make_the_configuration() {
    let defaults = state_config(&Options::parse_from(["state-job"])).unwrap();
    assert_eq!(defaults.backend_type(), BackendType::HashMap);
    assert_eq!(
        defaults.checkpoint_dir(),
        Some("target/state-job/checkpoints")
    );
    assert_eq!(defaults.num_retained(), 1);
    assert!(!defaults.changelog_enabled());

    let flags = state_config(&Options::parse_from([
        "state-job",
        "--backend",
        "rocksdb",
        "--local-dir",
        "target/state-job/rocksdb",
        "--managed-memory-mb",
        "256",
        "--num-retained",
        "2",
        "--savepoint-dir",
        "target/state-job/savepoints",
    ]))
    .unwrap();
    // The same settings as config/rocksdb.yaml.
    assert_eq!(
        flags,
        StateConfig::from_file(config_dir().join("rocksdb.yaml")).unwrap()
    );

    let changelog = state_config(&Options::parse_from([
        "state-job",
        "--changelog",
        "--materialization-interval-ms",
        "2000",
    ]))
    .unwrap();
    assert!(changelog.changelog_enabled());
    assert_eq!(
        changelog.materialization_config().interval,
        Some(std::time::Duration::from_secs(2))
    );
}

#[test]
fn an_invalid_config_file_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "state.backend.type: rocks\n").unwrap();
    let options = Options::parse_from(["state-job", "--config", path.to_str().unwrap()]);
    let err = state_job::job::run(&options).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration 'state.backend.type': 'rocks' is not one of hashmap, rocksdb"
    );
}
